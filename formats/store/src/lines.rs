//! Line-ending conversion of saved messages, exactly as Dovecot's storage does it.
//!
//! Dovecot converts every message it saves (maildir-save.c, dbox-save.c, mbox-save.c) through
//! `i_stream_create_lf()` or, with `mail_save_crlf = yes`, `i_stream_create_crlf()`
//! (src/lib/istream-crlf.c). Backends that write Dovecot's formats do the same, so a store
//! mailsync writes holds the bytes Dovecot would have written.

use std::io::{self, Read};

/// How a store writes the line endings of the messages it saves.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum SaveLineEndings {
    /// Bytes are stored exactly as given.
    #[default]
    AsIs,
    /// `CRLF` becomes `LF` (Dovecot's default, `mail_save_crlf = no`). A CR not followed by
    /// LF is kept, except a CR that is the very last byte, which Dovecot's stream drops.
    Lf,
    /// Every LF not preceded by CR becomes `CRLF` (`mail_save_crlf = yes`).
    Crlf,
}

impl SaveLineEndings {
    /// The bytes a store with this policy will hold for `input`.
    pub fn convert(self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        LineEndingReader::new(input, self)
            .read_to_end(&mut out)
            .expect("reading from a slice cannot fail");
        out
    }
}

/// The chunk a [`LineEndingReader`] reads into: from this size, doubled whenever a read
/// fills it, up to [`MAX_CHUNK`].
const MIN_CHUNK: usize = 8 * 1024;
const MAX_CHUNK: usize = 64 * 1024;

/// A streaming reader applying a [`SaveLineEndings`] policy; holds at most one chunk.
pub struct LineEndingReader<R> {
    inner: R,
    mode: SaveLineEndings,
    /// Lf mode: a CR was read and its successor not yet seen.
    pending_cr: bool,
    /// Crlf mode: the last byte passed on was a CR.
    last_cr: bool,
    chunk: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
}

impl<R: Read> LineEndingReader<R> {
    pub fn new(inner: R, mode: SaveLineEndings) -> LineEndingReader<R> {
        LineEndingReader {
            inner,
            mode,
            pending_cr: false,
            last_cr: false,
            // grown to MAX_CHUNK as reads fill it: a small message costs no 64 KiB of zeroing
            // AsIs reads straight through (no chunk, no copy)
            chunk: if mode == SaveLineEndings::AsIs {
                Vec::new()
            } else {
                vec![0u8; MIN_CHUNK]
            },
            out: Vec::new(),
            out_pos: 0,
        }
    }

    /// Converts the next chunk of input into `self.out`. Returns false at end of input.
    fn fill(&mut self) -> io::Result<bool> {
        self.out.clear();
        self.out_pos = 0;
        loop {
            let n = match self.inner.read(&mut self.chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let filled = n == self.chunk.len();
            let data = &self.chunk[..n];
            // Runs without the byte a mode cares about are copied whole.
            match self.mode {
                SaveLineEndings::AsIs => self.out.extend_from_slice(data),
                SaveLineEndings::Lf => {
                    // i_stream_crlf_read_lf: \r\n -> \n, \r<x> -> \r<x>, \r\r\n -> \r\n.
                    let mut i = 0;
                    while i < n {
                        if self.pending_cr {
                            let b = data[i];
                            if b == b'\r' {
                                // the earlier CR is not before an LF; this one waits
                                self.out.push(b'\r');
                                i += 1;
                                continue;
                            }
                            if b != b'\n' {
                                self.out.push(b'\r');
                            }
                            self.pending_cr = false;
                        }
                        match memchr::memchr(b'\r', &data[i..]) {
                            Some(p) => {
                                self.out.extend_from_slice(&data[i..i + p]);
                                self.pending_cr = true;
                                i += p + 1;
                            }
                            None => {
                                self.out.extend_from_slice(&data[i..]);
                                i = n;
                            }
                        }
                    }
                }
                SaveLineEndings::Crlf => {
                    // i_stream_crlf_read_crlf: add the CR missing before an LF.
                    let mut i = 0;
                    while i < n {
                        match memchr::memchr(b'\n', &data[i..]) {
                            Some(p) => {
                                let before_cr = if p > 0 {
                                    data[i + p - 1] == b'\r'
                                } else {
                                    self.last_cr
                                };
                                self.out.extend_from_slice(&data[i..i + p]);
                                if !before_cr {
                                    self.out.push(b'\r');
                                }
                                self.out.push(b'\n');
                                self.last_cr = false;
                                i += p + 1;
                            }
                            None => {
                                self.out.extend_from_slice(&data[i..]);
                                self.last_cr = data[n - 1] == b'\r';
                                i = n;
                            }
                        }
                    }
                }
            }
            if filled && self.chunk.len() < MAX_CHUNK {
                self.chunk.resize(self.chunk.len() * 2, 0);
            }
            if !self.out.is_empty() {
                return Ok(true);
            }
        }
    }
}

impl<R: Read> Read for LineEndingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.mode == SaveLineEndings::AsIs {
            return self.inner.read(buf);
        }
        if self.out_pos == self.out.len() && !self.fill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::SaveLineEndings::{self, *};

    fn conv(mode: SaveLineEndings, s: &[u8]) -> Vec<u8> {
        mode.convert(s)
    }

    #[test]
    fn lf_mode_follows_dovecot() {
        assert_eq!(conv(Lf, b"a\r\nb\r\n"), b"a\nb\n");
        assert_eq!(conv(Lf, b"a\rb"), b"a\rb");
        assert_eq!(conv(Lf, b"a\r\r\nb"), b"a\r\nb");
        assert_eq!(conv(Lf, b"a\nb\n"), b"a\nb\n");
        // A CR as the very last byte is dropped, as Dovecot's stream does at EOF.
        assert_eq!(conv(Lf, b"end\r"), b"end");
        assert_eq!(conv(Lf, b"\r"), b"");
        assert_eq!(conv(Lf, b""), b"");
    }

    #[test]
    fn crlf_mode_follows_dovecot() {
        assert_eq!(conv(Crlf, b"a\nb\n"), b"a\r\nb\r\n");
        assert_eq!(conv(Crlf, b"a\r\nb"), b"a\r\nb");
        assert_eq!(conv(Crlf, b"\n"), b"\r\n");
        assert_eq!(conv(Crlf, b"a\rb"), b"a\rb");
    }

    #[test]
    fn conversion_is_the_same_across_chunk_boundaries() {
        // A CR at the end of one read and its LF at the start of the next.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let input = b"x\r\ny\r\r\nz\rw\n\r\n\r";
        for mode in [AsIs, Lf, Crlf] {
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut super::LineEndingReader::new(Trickle(input), mode),
                &mut out,
            )
            .unwrap();
            assert_eq!(out, mode.convert(input), "{mode:?}");
        }
    }

    #[test]
    fn the_chunk_grows_with_full_reads_and_converts_the_same() {
        // CR, LF and CRLF at every position relative to 8, 16, 32 and 64 KiB
        let input: Vec<u8> = (0..300_000u32)
            .map(|i| match i % 7919 {
                0 => b'\r',
                1 | 5 => b'\n',
                4 => b'\r',
                _ => b'a' + (i % 26) as u8,
            })
            .collect();
        // AsIs reads straight through: no chunk at all
        let mut reader = super::LineEndingReader::new(&input[..], AsIs);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut out).unwrap();
        assert!(out == input);
        assert_eq!(reader.chunk.capacity(), 0);
        for mode in [Lf, Crlf] {
            let mut reader = super::LineEndingReader::new(&input[..], mode);
            assert_eq!(reader.chunk.len(), super::MIN_CHUNK);
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut out).unwrap();
            assert!(out == mode.convert(&input), "{mode:?}");
            assert_eq!(reader.chunk.len(), super::MAX_CHUNK, "{mode:?}");
        }
        // a small message never grows it
        let mut reader = super::LineEndingReader::new(&b"Subject: x\r\n\r\nbody\r\n"[..], Lf);
        std::io::Read::read_to_end(&mut reader, &mut Vec::new()).unwrap();
        assert_eq!(reader.chunk.len(), super::MIN_CHUNK);
    }
}
