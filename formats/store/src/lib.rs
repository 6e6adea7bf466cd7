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

/// Counts the virtual size of a message: bytes with every LF not preceded by CR counted as
/// CRLF (Dovecot's `size.virtual`, RFC822.SIZE).
pub fn virtual_size_of(reader: &mut dyn std::io::Read) -> std::io::Result<u64> {
    let mut buf = [0u8; 64 * 1024];
    let mut size = 0u64;
    let mut prev_cr = false;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for &b in &buf[..n] {
            if b == b'\n' && !prev_cr {
                size += 1;
            }
            size += 1;
            prev_cr = b == b'\r';
        }
    }
    Ok(size)
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
}
