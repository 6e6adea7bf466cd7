//! Dovecot 2.3-compatible mail index and transaction log, independent of mail formats.
//!
//! Placeholder; documented fully below once the view and writer land.

pub mod error;
pub mod format;

pub use error::{Error, Result};
