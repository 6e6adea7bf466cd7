//! mailsync: doveadm-compatible mail commands (and later dsync) over native storage backends.

pub mod backends;
pub mod cli;
pub mod sync;
