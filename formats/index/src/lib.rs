//! Dovecot 2.3-compatible mail index (`dovecot.index`), transaction log
//! (`dovecot.index.log`, `.log.2`) and mailbox log, knowing nothing of mail formats. The
//! same code serves per-mailbox indexes, the mdbox map index (`dovecot.map.index`) and the
//! mailbox list index (`dovecot.list.index`). Byte tables: FORMAT.md.
//!
//! Layers:
//! - [`format`]: decode/encode of every structure, no state ([`format::index::IndexFile`],
//!   [`format::log::LogFile`], [`format::log::RecordBody`], [`format::ext`] decoders of
//!   well-known extensions, [`format::mailbox_log`]).
//! - [`View`]: the state Dovecot sees — `P` plus the logs replayed as
//!   mail_index_sync_map does, with modseqs ([`View::open`], [`View::messages`],
//!   [`Message::modseq`], [`View::highest_modseq`], [`View::changes_since`] →
//!   `mailstore::Changes`). Recovery rules: [`view`] module docs.
//! - [`HeaderView`]: the header alone (counters, extension headers, the last message), read
//!   without the records when nothing but header changes were logged past `P`.
//! - [`IndexWriter`]/[`Transaction`]: appends under Dovecot's fcntl lock, in Dovecot's record
//!   order; creates, rotates and snapshots ([`writer`] module docs).
//! - [`dump`]: `doveadm dump`-style text for index, log and mailbox log files.
//!
//! ```no_run
//! use mailsync_index::{IndexWriter, View};
//! use mailsync_index::format::index::rec_flag;
//! let dir = std::path::Path::new("/home/u/sdbox/mailboxes/INBOX/dbox-Mails");
//! let view = View::open(dir, "dovecot.index")?;
//! for m in view.messages() {
//!     println!("{} {:?} {:?} {}", m.uid(), m.system_flags(), m.keywords(), m.modseq());
//! }
//! let w = IndexWriter::open(dir, "dovecot.index");
//! let mut t = w.begin();                       // .external(true) for backend-done changes
//! t.flags(3, 3, rec_flag::SEEN, 0);
//! t.keywords(true, b"$Label1", &[3, 4]);
//! let info = t.commit()?;                      // log_seq, log_offset, highest_modseq
//! # Ok::<(), mailsync_index::Error>(())
//! ```

mod changes;
pub mod dump;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod header_view;
pub mod lock;
pub mod locked_commit;
pub mod mailbox_log;
pub mod paths;
mod sync;
pub mod view;
pub mod writer;

pub use error::{Error, Result};
pub use header_view::{HeaderView, HEADER_REPLAY_MAX_RECORDS};
pub use paths::IndexPaths;
pub use view::{LogHistory, Message, Sources, View};
pub use writer::{CommitInfo, Housekeeping, IndexWriter, Transaction};
