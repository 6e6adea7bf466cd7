//! Dovecot 2.3-compatible mail index and transaction log, independent of mail formats.

mod changes;
pub mod dump;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod lock;
pub mod paths;
mod sync;
pub mod view;
pub mod writer;

pub use error::{Error, Result};
pub use paths::IndexPaths;
pub use view::{Message, Sources, View};
pub use writer::{CommitInfo, IndexWriter, Transaction};
