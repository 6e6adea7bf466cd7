//! Dovecot's mbox locks (mbox-lock.c) with its default settings: writers take
//! `mbox_write_locks = dotlock fcntl` in that order, readers `mbox_read_locks = fcntl`.
//! The dotlock is `<mbox>.lock` (O_EXCL, `<pid>:<host>` inside, stale after
//! `mbox_dotlock_change_timeout` = 2 min unchanged, given up after `mbox_lock_timeout` =
//! 5 min); the fcntl lock covers the whole file. The dotlock also excludes other handles of
//! this process, which fcntl (per-process) cannot.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use mailstore::{Error, Result};
use mailsupport::dotlock::{DotLock, DotLockOptions};

/// mbox-settings.c mbox_lock_timeout default.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// mbox-settings.c mbox_dotlock_change_timeout default.
pub const DOTLOCK_CHANGE_TIMEOUT: Duration = Duration::from_secs(120);

/// The dotlock options Dovecot uses for an mbox file.
pub fn dotlock_options() -> DotLockOptions {
    DotLockOptions {
        timeout: LOCK_TIMEOUT,
        stale_timeout: DOTLOCK_CHANGE_TIMEOUT,
        use_excl_lock: true,
        write_pid: true,
        mode: 0o600,
        lock_suffix: ".lock",
    }
}

/// Takes the dotlock of `mbox`.
pub fn dotlock(mbox: &Path) -> Result<DotLock> {
    DotLock::acquire(mbox, &dotlock_options()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            Error::LockTimeout {
                path: mbox.with_extension("lock"),
            }
        } else {
            Error::io("file_dotlock_create", mbox, e)
        }
    })
}

/// An fcntl lock on a whole open file, released on drop.
pub struct FcntlLock<'a> {
    file: &'a File,
}

impl<'a> FcntlLock<'a> {
    /// Locks `file` (shared or exclusive), polling until `timeout`.
    pub fn acquire(
        file: &'a File,
        path: &Path,
        exclusive: bool,
        timeout: Duration,
    ) -> Result<FcntlLock<'a>> {
        use rustix::fs::FlockOperation;
        let op = if exclusive {
            FlockOperation::NonBlockingLockExclusive
        } else {
            FlockOperation::NonBlockingLockShared
        };
        let deadline = Instant::now() + timeout;
        let mut wait = Duration::from_millis(5);
        loop {
            match rustix::fs::fcntl_lock(file, op) {
                Ok(()) => return Ok(FcntlLock { file }),
                Err(e)
                    if e == rustix::io::Errno::AGAIN
                        || e == rustix::io::Errno::ACCESS
                        || e == rustix::io::Errno::INTR =>
                {
                    if Instant::now() >= deadline {
                        return Err(Error::LockTimeout {
                            path: path.to_path_buf(),
                        });
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(Error::io("fcntl(F_SETLK)", path, e.into())),
            }
        }
    }
}

impl Drop for FcntlLock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::fcntl_lock(self.file, rustix::fs::FlockOperation::NonBlockingUnlock);
    }
}
