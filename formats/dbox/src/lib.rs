//! Dovecot-compatible dbox backends: sdbox (one `u.<uid>` file per message) and mdbox
//! (`storage/m.<id>` files shared by all mailboxes, with the map index). Every byte read
//! and written is described in FORMAT.md with the Dovecot source of each rule.
//!
//! Both keep flags, keywords, UIDs and modseqs only in the per-mailbox Dovecot index,
//! read and written through `mailsync-index` (View + IndexWriter, under Dovecot's fcntl
//! log lock; UIDs are assigned under that lock with
//! `mailsync_index::locked_commit`), so Dovecot and mailsync can work on the same store
//! at the same time.
//!
//! ```no_run
//! use mailstore::{Location, NewMail, Store, StoreOptions};
//! let loc = Location::parse("mdbox:~/mdbox", Some(std::path::Path::new("/home/u")))?;
//! let store = mailsync_dbox::DboxStore::open(&loc, &StoreOptions::default())?;
//! let mut inbox = store.open_mailbox("INBOX")?;
//! let mut t = inbox.begin()?;
//! t.save(NewMail::default(), &mut &b"Subject: hi\r\n\r\nbody\r\n"[..])?;
//! let saved = t.commit()?.saved;
//! # Ok::<(), mailstore::Error>(())
//! ```
//!
//! Modules: [`file`](mod@file) (the dbox file format, shared), [`layout`] (paths and names),
//! [`sdbox`], [`mdbox`], [`index`] (mailbox index creation and the `dbox-hdr`/`mdbox-hdr`
//! header), [`map_table`] (the mdbox map's locations as readers keep them), [`purge`]
//! (mdbox purge), [`rebuild`] (mdbox and sdbox force-resync), [`pop3`] (a message's POP3
//! UIDL and order: metadata lines, header flags, `hdr-pop3-uidl`); an open mdbox mailbox keeps
//! a compact snapshot of its index view (`snapshot`); `meta_cache` keeps mailsync's own cache
//! of mdbox message metadata (`mailsync.meta-cache`, FORMAT.md §4.8).
//! Not implemented here: alt storage, external attachments, `dovecot.index.cache`.

pub mod file;
#[doc(hidden)]
pub mod fuzzing;
pub mod index;
pub mod layout;
pub mod map_table;
pub mod mdbox;
mod meta_cache;
pub mod pop3;
pub mod purge;
pub mod rebuild;
pub mod sdbox;
mod snapshot;
mod store;

pub use layout::{DboxKind, Layout};
pub use store::DboxStore;

/// Reports a problem that doesn't stop the operation (Dovecot logs these as warnings).
pub(crate) fn warn(message: &str) {
    eprintln!("Warning: dbox: {message}");
}
