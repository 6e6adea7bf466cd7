//! Dovecot-compatible mbox backend for `mailstore` (FORMAT.md).
//!
//! - [`reader`]: a streaming reader drawing message boundaries exactly as Dovecot does
//!   (mboxo, mboxrd, mboxcl, mboxcl2, CRLF, Content-Length checked against the file) and
//!   reading Dovecot's metadata headers (`X-IMAPbase`, `X-IMAP`, `X-UID`, `Status`,
//!   `X-Status`, `X-Keywords`, `Content-Length`);
//! - [`from_line`]: From_ line parsing and writing (mbox-from.c);
//! - [`header`]: hidden headers, the header MD5 that is Dovecot's mbox message GUID;
//! - [`writer`]: messages written as Dovecot's mbox-save.c writes them;
//! - [`MboxStore`]: the `mbox:~/mail:INBOX=/var/mail/%u` layout with `.imap/` index dirs,
//!   locked (dotlock + fcntl) crash-safe rewrites; modseqs, HIGHESTMODSEQ and
//!   `changes_since` from Dovecot's index of the mailbox, which every change is written to
//!   (FORMAT.md §6).

mod dovecot_index;
pub mod from_line;
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
pub mod lines;
pub mod lock;
mod mailbox;
pub mod md5;
pub mod reader;
mod store;
pub mod writer;

pub use mailbox::MboxMailbox;
pub use reader::{scan, MboxFile, MboxMessage, MessageReader, ScanError};
pub use store::MboxStore;
