//! The byte-level format layer: decode and encode of every file, no state.

pub mod codec;
pub mod ext;
pub mod index;
pub mod log;
pub mod mailbox_log;
