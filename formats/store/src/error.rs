//! Typed storage errors, with the doveadm exit code each maps to.

use std::path::PathBuf;

use crate::types::Uid;

/// Storage error categories, mirroring Dovecot's `enum mail_error` (src/lib-storage/mail-error.h).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Temporary failure (I/O, lock timeout): try again. Exit 75.
    Temp,
    /// Invalid parameters (bad mailbox name). Exit 64.
    Params,
    /// Permission denied. Exit 77.
    Perm,
    /// Mailbox or message doesn't exist. Exit 68.
    NotFound,
    /// Already exists. Exit 65.
    Exists,
    /// The operation isn't possible (e.g. deleting INBOX). Exit 65.
    NotPossible,
    /// Corrupted or malformed data on disk. Exit 65.
    InvalidData,
}

impl ErrorKind {
    /// The exit code doveadm uses for this kind (src/doveadm/doveadm-mail.c).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Temp => 75,
            ErrorKind::Params => 64,
            ErrorKind::Perm => 77,
            ErrorKind::NotFound => 68,
            ErrorKind::Exists | ErrorKind::NotPossible | ErrorKind::InvalidData => 65,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Mailbox doesn't exist: {0}")]
    MailboxNotFound(String),
    #[error("Mailbox already exists: {0}")]
    MailboxExists(String),
    #[error("Invalid mailbox name: {name}: {reason}")]
    InvalidMailboxName { name: String, reason: String },
    #[error("Message UID {0} doesn't exist (expunged?)")]
    MailNotFound(Uid),
    #[error("{0}")]
    NotPossible(String),
    #[error("{0}")]
    Params(String),
    #[error("{path}: {reason}", path = path.display())]
    Corrupted { path: PathBuf, reason: String },
    #[error("Timeout waiting for lock {path}", path = path.display())]
    LockTimeout { path: PathBuf },
    #[error("{op}({path}) failed: {source}", path = path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error with the operation and path that failed, as in `open(/x/cur/1.M2) failed: ...`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn corrupted(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Corrupted {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn invalid_name(name: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidMailboxName {
            name: name.into(),
            reason: reason.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::MailboxNotFound(_) | Error::MailNotFound(_) => ErrorKind::NotFound,
            Error::MailboxExists(_) => ErrorKind::Exists,
            Error::InvalidMailboxName { .. } | Error::Params(_) => ErrorKind::Params,
            Error::NotPossible(_) => ErrorKind::NotPossible,
            Error::Corrupted { .. } => ErrorKind::InvalidData,
            Error::LockTimeout { .. } => ErrorKind::Temp,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied => ErrorKind::Perm,
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Temp,
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
