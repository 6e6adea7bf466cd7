//! `-l SECS`: dsync's per-user sync lock (dsync-brain.c dsync_brain_lock): an fcntl write
//! lock of `~/.dovecot-sync.lock`, held for the whole run and unlinked at its end, so two
//! runs for one user — mailsync's or Dovecot's — serialise on the same file.
//!
//! The file is made as lib/file-create-locked.c does, by the index crate's
//! [`create_locked`] (the same fcntl record lock Dovecot takes, polled against the timeout).

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailsync_index::lock::{create_locked, CreatedLock};

/// DSYNC_LOCK_FILENAME.
pub const LOCK_FILENAME: &str = ".dovecot-sync.lock";

/// Why the lock wasn't taken.
#[derive(Debug)]
pub enum LockError {
    Timeout { path: PathBuf, secs: u64 },
    Io { path: PathBuf, source: io::Error },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Timeout { path, secs } => write!(
                f,
                "Couldn't lock {}: Timed out after {secs} seconds",
                path.display()
            ),
            LockError::Io { path, source } => {
                write!(f, "Couldn't lock {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for LockError {}

/// The held lock; dropping it unlinks the file, then unlocks (dsync_brain_deinit).
pub type SyncLock = CreatedLock;

/// Takes the sync lock in `home`, waiting up to `timeout`; creates `home` if missing
/// (mail_user_home_mkdir).
pub fn acquire(home: &Path, timeout: Duration) -> Result<SyncLock, LockError> {
    let path = home.join(LOCK_FILENAME);
    if !home.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(home)
            .map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
    }
    match create_locked(&path, 0o600, timeout) {
        Ok(lock) => Ok(lock),
        Err(mailsync_index::error::Error::LockTimeout { .. }) => Err(LockError::Timeout {
            path,
            secs: timeout.as_secs(),
        }),
        Err(e) => Err(LockError::Io {
            path,
            source: io::Error::other(e.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn creates_holds_and_unlinks_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let lock = acquire(&home, Duration::from_secs(1)).unwrap();
        assert!(home.join(LOCK_FILENAME).exists());
        // Only the lock file is left: the temporary name is gone.
        assert_eq!(std::fs::read_dir(&home).unwrap().count(), 1);
        drop(lock);
        assert!(!home.join(LOCK_FILENAME).exists());
    }

    #[test]
    fn a_second_taker_in_this_process_times_out_then_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), Duration::from_secs(1)).unwrap();
        let start = Instant::now();
        let err = acquire(dir.path(), Duration::from_millis(300))
            .err()
            .unwrap();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(300));
        drop(first);
        acquire(dir.path(), Duration::from_secs(1)).unwrap();
    }
}
