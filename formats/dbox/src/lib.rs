//! Dovecot-compatible dbox backends: sdbox (one `u.<uid>` file per message) and mdbox
//! (`storage/m.<id>` files shared by all mailboxes, with the map index). Every byte read
//! and written is described in FORMAT.md with the Dovecot source of each rule.
//!
//! Both keep flags, keywords, UIDs and modseqs only in the per-mailbox Dovecot index,
//! read and written through `mailsync-index` (View + IndexWriter, under Dovecot's fcntl
//! log lock), so Dovecot and mailsync can work on the same store.

pub mod file;
#[doc(hidden)]
pub mod fuzzing;
pub mod index;
pub mod layout;
pub mod mdbox;
pub mod sdbox;
mod sha1;
mod store;

pub use layout::{DboxKind, Layout};
pub use store::DboxStore;

/// Reports a problem that doesn't stop the operation (Dovecot logs these as warnings).
pub(crate) fn warn(message: &str) {
    eprintln!("Warning: dbox: {message}");
}
