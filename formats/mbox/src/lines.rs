//! Line-at-a-time reading of a file region with bounded memory: each line's position and
//! length are exact, but at most `keep` bytes of it are held.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};

/// One physical line (including its `\n`, if it has one).
#[derive(Debug, Default, Clone)]
pub struct Line {
    /// Absolute offset of the first byte.
    pub start: u64,
    /// Length including the newline.
    pub len: u64,
    /// Whether the line ends with `\n` (only the file's last line may not).
    pub newline: bool,
    /// Whether the line ends with `\r\n`.
    pub crlf: bool,
    /// The first `keep` bytes of the line (newline included if it fits).
    pub head: Vec<u8>,
}

impl Line {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
    /// The line without its `\n` or `\r\n`, as far as it was kept.
    pub fn content(&self) -> &[u8] {
        let mut c = &self.head[..];
        if self.newline && self.head.len() as u64 == self.len {
            c = &c[..c.len() - 1];
            if self.crlf {
                c = &c[..c.len() - 1];
            }
        }
        c
    }
    /// True for an empty line (`\n` or `\r\n`).
    pub fn is_empty_line(&self) -> bool {
        self.newline && (self.head == b"\n" || self.head == b"\r\n")
    }
    /// Whether the whole line was kept.
    pub fn complete(&self) -> bool {
        self.head.len() as u64 == self.len
    }
}

/// Reads lines from `file` starting at an offset, never past `limit`.
pub struct LineReader<'a> {
    inner: BufReader<&'a File>,
    pos: u64,
    limit: u64,
}

impl<'a> LineReader<'a> {
    pub fn new(file: &'a File, start: u64, limit: u64) -> io::Result<LineReader<'a>> {
        let mut inner = BufReader::with_capacity(64 * 1024, file);
        inner.seek(SeekFrom::Start(start))?;
        Ok(LineReader {
            inner,
            pos: start,
            limit,
        })
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Moves to `pos` (keeps the buffer when `pos` is inside it).
    pub fn seek_to(&mut self, pos: u64) -> io::Result<()> {
        let delta = pos as i64 - self.pos as i64;
        self.inner.seek_relative(delta)?;
        self.pos = pos;
        Ok(())
    }

    /// The next line, keeping at most `keep` bytes of it; `None` at the limit.
    pub fn next_line(&mut self, keep: usize, line: &mut Line) -> io::Result<bool> {
        line.start = self.pos;
        line.len = 0;
        line.newline = false;
        line.crlf = false;
        line.head.clear();
        let mut last_byte = 0u8;
        loop {
            if self.pos >= self.limit {
                break;
            }
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                break;
            }
            let room = (self.limit - self.pos).min(buf.len() as u64) as usize;
            let buf = &buf[..room];
            let (used, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if line.head.len() < keep {
                let take = (keep - line.head.len()).min(used);
                line.head.extend_from_slice(&buf[..take]);
            }
            let before_newline = if used >= 2 { buf[used - 2] } else { last_byte };
            last_byte = buf[used - 1];
            line.len += used as u64;
            if done {
                line.crlf = before_newline == b'\r';
            }
            self.inner.consume(used);
            self.pos += used as u64;
            if done {
                line.newline = true;
                break;
            }
        }
        Ok(line.len > 0)
    }

    /// Reads up to `n` bytes at the current position without consuming them beyond what
    /// the buffer holds (used to look at the line after a candidate end).
    pub fn peek_at(file: &File, pos: u64, n: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut out = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match file.read_at(&mut out[got..], pos + got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        out.truncate(got);
        Ok(out)
    }
}
