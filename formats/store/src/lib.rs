//! `mailstore`: the backend-neutral mail storage API of mailsync.
//!
//! Mirrors Dovecot's lib-storage split: one API ([`Store`], [`Mailbox`], [`Transaction`])
//! with backends behind it. [`memory::MemoryStore`] is the reference backend, and
//! [`conformance`] holds the test suite every backend runs against itself.

pub mod conformance;
pub mod error;
pub mod lines;
pub mod location;
pub mod memory;
pub mod names;
pub mod traits;
pub mod types;

pub use error::{Error, ErrorKind, Result};
pub use lines::{LineEndingReader, SaveLineEndings};
pub use location::Location;
pub use names::{mask_matches, validate_existing_mailbox_name, validate_mailbox_name};
pub use traits::{Mailbox, Store, Transaction};
pub use types::*;

/// Counts a message's virtual size as its bytes pass by, chunk after chunk: every LF not
/// preceded by CR counts as CRLF (Dovecot's `size.virtual`, RFC822.SIZE). A CR at the end
/// of one chunk pairs with an LF at the start of the next.
#[derive(Clone, Copy, Debug, Default)]
pub struct VsizeCounter {
    total: u64,
    prev_cr: bool,
}

impl VsizeCounter {
    /// Counts the next bytes of the message.
    pub fn update(&mut self, bytes: &[u8]) {
        let Some(&last) = bytes.last() else {
            return;
        };
        // every byte, plus a CR for each LF not preceded by one
        self.total += bytes.len() as u64;
        let mut bare_lf = 0u64;
        for i in memchr::memchr_iter(b'\n', bytes) {
            let cr = if i == 0 {
                self.prev_cr
            } else {
                bytes[i - 1] == b'\r'
            };
            bare_lf += u64::from(!cr);
        }
        self.total += bare_lf;
        self.prev_cr = last == b'\r';
    }

    /// The virtual size of the bytes counted so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Counts the virtual size of a message read to its end (see [`VsizeCounter`]).
pub fn virtual_size_of(reader: &mut dyn std::io::Read) -> std::io::Result<u64> {
    let mut buf = [0u8; 64 * 1024];
    let mut vsize = VsizeCounter::default();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        vsize.update(&buf[..n]);
    }
    Ok(vsize.total())
}

/// This host's name, for unique filenames, dotlocks and GUIDs: Dovecot's my_hostname, read
/// once per process ([`mailsupport::dotlock::hostname`]).
pub use mailsupport::dotlock::hostname;

#[cfg(test)]
mod tests {
    #[test]
    fn virtual_size_counts_bare_lf_twice() {
        assert_eq!(super::virtual_size_of(&mut &b"a\nb\r\nc"[..]).unwrap(), 7);
        assert_eq!(super::virtual_size_of(&mut &b""[..]).unwrap(), 0);
    }

    #[test]
    fn vsize_counter_pairs_cr_and_lf_across_chunks() {
        let mut split = super::VsizeCounter::default();
        split.update(b"a\r");
        split.update(b"\nb\n");
        split.update(b"");
        split.update(b"\r");
        // a CR LF b LF->CRLF CR: 1 + 2 + 1 + 2 + 1
        assert_eq!(split.total(), 7);
        let mut whole = super::VsizeCounter::default();
        whole.update(b"a\r\nb\n\r");
        assert_eq!(whole.total(), split.total());
    }
}

#[cfg(test)]
mod vsize_tests {
    use super::VsizeCounter;

    /// The definition: every byte, plus one for each LF not preceded by a CR.
    fn reference(bytes: &[u8]) -> u64 {
        let mut total = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
                total += 1;
            }
            total += 1;
        }
        total
    }

    #[test]
    fn any_chunking_gives_the_reference_size() {
        let inputs: [&[u8]; 7] = [
            b"",
            b"\n",
            b"a\r\nb\nc\r\r\n\n",
            b"\r\n\r\n",
            b"x\ry\n\rz",
            b"no newline",
            b"\n\n\r\r\n\r",
        ];
        for input in inputs {
            for chunk in 1..=input.len().max(1) {
                let mut c = VsizeCounter::default();
                for part in input.chunks(chunk) {
                    c.update(part);
                }
                assert_eq!(
                    c.total(),
                    reference(input),
                    "{input:?} in chunks of {chunk}"
                );
            }
        }
    }
}
