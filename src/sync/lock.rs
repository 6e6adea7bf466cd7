//! `-l SECS`: dsync's per-user sync lock (dsync-brain.c dsync_brain_lock): an fcntl write
//! lock of `~/.dovecot-sync.lock`, held for the whole run and unlinked at its end, so two
//! runs for one user — mailsync's or Dovecot's — serialise on the same file.
//!
//! The file is made as lib/file-create-locked.c does: an existing file is opened and locked
//! (then re-checked, since a holder unlinks it before unlocking); a missing one is created as
//! `<path><16 hex>` with O_EXCL, locked, and linked into place, so nobody ever sees the
//! file unlocked. The fcntl lock itself is the index crate's [`LogLock`] (the same record
//! lock Dovecot takes, polled against the timeout).

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mailsync_index::lock::LogLock;

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
pub struct SyncLock {
    lock: Option<LogLock>,
    path: PathBuf,
}

impl SyncLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SyncLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.lock.take();
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if filled.is_err() {
        // Uniqueness only matters among concurrent creators: time and pid do.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b = (t ^ ((std::process::id() as u64) << 32)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn same_file(path: &Path, lock: &LogLock) -> bool {
    match (std::fs::metadata(path), lock.file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Takes the sync lock in `home`, waiting up to `timeout`; creates `home` if missing
/// (mail_user_home_mkdir).
pub fn acquire(home: &Path, timeout: Duration) -> Result<SyncLock, LockError> {
    let path = home.join(LOCK_FILENAME);
    let io_err = |source: io::Error| LockError::Io {
        path: path.clone(),
        source,
    };
    let timed_out = || LockError::Timeout {
        path: path.clone(),
        secs: timeout.as_secs(),
    };
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match LogLock::acquire(&path, remaining) {
            Ok(Some(lock)) => {
                if same_file(&path, &lock) {
                    return Ok(SyncLock {
                        lock: Some(lock),
                        path,
                    });
                }
                // The holder unlinked it while we waited: lock the new one.
                continue;
            }
            Ok(None) => {}
            Err(mailsync_index::error::Error::LockTimeout { .. }) => return Err(timed_out()),
            Err(e) => return Err(io_err(io::Error::other(e.to_string()))),
        }
        // Missing: create a locked temporary file and link it into place.
        if !home.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(home)
                .map_err(io_err)?;
        }
        let mut temp = path.clone().into_os_string();
        temp.push(random_hex());
        let temp = PathBuf::from(temp);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io_err)?;
        let locked = LogLock::acquire(&temp, Duration::ZERO);
        let linked = std::fs::hard_link(&temp, &path);
        let _ = std::fs::remove_file(&temp);
        let lock = match locked {
            Ok(Some(l)) => l,
            Ok(None) => return Err(io_err(io::ErrorKind::NotFound.into())),
            Err(e) => return Err(io_err(io::Error::other(e.to_string()))),
        };
        match linked {
            Ok(()) => {
                return Ok(SyncLock {
                    lock: Some(lock),
                    path,
                })
            }
            // Someone else created it first: wait for theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if Instant::now() >= deadline {
                    return Err(timed_out());
                }
            }
            Err(e) => return Err(io_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
