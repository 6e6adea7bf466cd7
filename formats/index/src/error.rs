//! Typed errors. Every decoding error names the file, the byte offset and what is wrong.

use std::path::{Path, PathBuf};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{op}({path}) failed: {source}", path = path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file's bytes violate the format at `offset`.
    #[error("Corrupted {path} at offset {offset}: {reason}", path = path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// `dovecot.index` and its `.log` belong to different indexes.
    #[error("{path}: indexid mismatch: index has {index_id}, log has {log_id}", path = path.display())]
    IndexIdMismatch {
        path: PathBuf,
        index_id: u32,
        log_id: u32,
    },
    /// The transaction history needed to build the view is gone (a log file is missing or
    /// the index points outside the logs), the same condition Dovecot reports as
    /// "Lost log for seq=..".
    #[error("{path}: lost transaction log history: {reason}", path = path.display())]
    LogLost { path: PathBuf, reason: String },
    /// Neither the index nor its log exists.
    #[error("{path}: no index and no transaction log", path = path.display())]
    NotFound { path: PathBuf },
    /// Waiting for a lock took too long.
    #[error("Timeout while waiting for lock {path}", path = path.display())]
    LockTimeout { path: PathBuf },
    /// The caller asked for something the format can't express.
    #[error("{0}")]
    Invalid(String),
}

/// Result with this crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}

impl From<Error> for mailstore::Error {
    fn from(e: Error) -> mailstore::Error {
        match e {
            Error::Io { op, path, source } => mailstore::Error::Io { op, path, source },
            Error::LockTimeout { path } => mailstore::Error::LockTimeout { path },
            Error::Corrupt { ref path, .. }
            | Error::IndexIdMismatch { ref path, .. }
            | Error::LogLost { ref path, .. }
            | Error::NotFound { ref path } => {
                mailstore::Error::corrupted(path.clone(), e.to_string())
            }
            Error::Invalid(msg) => mailstore::Error::Params(msg),
        }
    }
}
