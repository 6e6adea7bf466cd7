//! File names of one index: `P`, `P.log`, `P.log.2`, `P.cache` in a directory.

use std::path::{Path, PathBuf};

/// Prefix of a mailbox index.
pub const MAILBOX_INDEX: &str = "dovecot.index";
/// Prefix of the mdbox map index (in `storage/`).
pub const MAP_INDEX: &str = "dovecot.map.index";
/// Prefix of the mailbox list index.
pub const LIST_INDEX: &str = "dovecot.list.index";

/// The files of one index: `dir/prefix` (the snapshot), `.log`, `.log.2`, `.cache`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPaths {
    pub dir: PathBuf,
    pub prefix: String,
}

impl IndexPaths {
    pub fn new(dir: impl Into<PathBuf>, prefix: impl Into<String>) -> IndexPaths {
        IndexPaths {
            dir: dir.into(),
            prefix: prefix.into(),
        }
    }

    /// Splits a path to any of the files (`.../dovecot.index`, `.../dovecot.index.log`,
    /// `.../dovecot.index.log.2`, `.../dovecot.index.cache`) into directory and prefix.
    pub fn from_file(path: &Path) -> IndexPaths {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut prefix = name.as_str();
        for suffix in [".log.2", ".log", ".cache"] {
            if let Some(p) = prefix.strip_suffix(suffix) {
                prefix = p;
                break;
            }
        }
        IndexPaths::new(dir, prefix)
    }

    fn with_suffix(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}{}", self.prefix, suffix))
    }

    /// `P`: the index snapshot.
    pub fn index(&self) -> PathBuf {
        self.with_suffix("")
    }
    /// `P.log`: the head transaction log.
    pub fn log(&self) -> PathBuf {
        self.with_suffix(".log")
    }
    /// `P.log.2`: the previous (rotated) log.
    pub fn log2(&self) -> PathBuf {
        self.with_suffix(".log.2")
    }
    /// `P.cache`: never written by this crate.
    pub fn cache(&self) -> PathBuf {
        self.with_suffix(".cache")
    }
    /// `P.log.newlock`: the dotlock Dovecot takes while creating or rotating a log
    /// (mail-transaction-log-file.c LOG_NEW_DOTLOCK_SUFFIX).
    pub fn log_newlock(&self) -> PathBuf {
        self.with_suffix(".log.newlock")
    }
}
