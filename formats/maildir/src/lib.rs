//! Dovecot-compatible Maildir backend (Maildir++ and LAYOUT=fs). See FORMAT.md for the
//! byte-level description of everything read and written and the Dovecot source each rule
//! comes from.

pub mod filename;
#[doc(hidden)]
pub mod fuzzing;
mod index_file;
mod index_sync;
pub mod keywords;
pub mod layout;
mod mailbox;
pub mod resync;
mod store;
pub mod uidlist;
/// New UIDVALIDITY values from the root's `dovecot-uidvalidity` (shared with every format).
pub use mailsupport::uidvalidity;

pub use layout::{Layout, LayoutKind};
pub use mailbox::MaildirMailbox;
pub use store::MaildirStore;

/// Reports a problem that doesn't stop the operation (Dovecot logs these as warnings).
pub(crate) fn warn(message: &str) {
    eprintln!("Warning: maildir: {message}");
}
