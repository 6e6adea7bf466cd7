//! On-disk helpers shared by every mail format: modified UTF-7 mailbox names, Dovecot-style
//! dotlocks, the `subscriptions` file and crash-safe (temp + fsync + rename) writes.

pub mod atomic;
pub mod dotlock;
pub mod durable;
#[doc(hidden)]
pub mod fuzzing;
pub mod mutf7;
pub mod sha1;
pub mod subscriptions;
#[cfg(test)]
mod test_support;
pub mod uidvalidity;
