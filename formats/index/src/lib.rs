//! Dovecot 2.3-compatible mail index and transaction log, independent of mail formats.

pub mod error;
pub mod format;
pub mod lock;
pub mod paths;
mod sync;
pub mod view;

pub use error::{Error, Result};
pub use paths::IndexPaths;
pub use view::{Message, Sources, View};
