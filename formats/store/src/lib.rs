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
        for &b in bytes {
            if b == b'\n' && !self.prev_cr {
                self.total += 1;
            }
            self.total += 1;
            self.prev_cr = b == b'\r';
        }
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

/// This host's name, for unique filenames, dotlocks and GUIDs.
pub fn hostname() -> String {
    for path in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = std::fs::read_to_string(path) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    "localhost".to_string()
}

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
