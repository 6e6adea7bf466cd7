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
            let mut lock = mbox.as_os_str().to_owned();
            lock.push(".lock");
            Error::LockTimeout { path: lock.into() }
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
        fcntl_wait(file, path, exclusive, timeout)?;
        Ok(FcntlLock { file })
    }
}

/// Takes an fcntl lock on the whole file, polling until `timeout` (F_SETLK in a loop, so
/// the timeout needs no signals).
pub fn fcntl_wait(file: &File, path: &Path, exclusive: bool, timeout: Duration) -> Result<()> {
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
            Ok(()) => return Ok(()),
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

impl Drop for FcntlLock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::fcntl_lock(self.file, rustix::fs::FlockOperation::NonBlockingUnlock);
    }
}

/// The write locks of an mbox, in Dovecot's order: dotlock, then an exclusive fcntl lock on
/// the file opened after the dotlock (so it is the file the path names now). Released in
/// reverse order on drop.
///
/// Deadlock avoidance: a Dovecot process may hold its fcntl lock while it waits for the
/// dotlock (it drops an exclusive lock to a shared fcntl one and keeps the descriptor). So
/// the fcntl lock is only tried for [`FCNTL_TRY`] while holding the dotlock; when that fails
/// both are released and the pair is tried again after a short pause, up to
/// [`LOCK_TIMEOUT`] in all.
pub struct WriteLock {
    pub file: File,
    dotlock: Option<DotLock>,
}

/// How long the fcntl lock is waited for while the dotlock is held.
pub const FCNTL_TRY: Duration = Duration::from_secs(2);

impl WriteLock {
    pub fn acquire(path: &Path) -> Result<WriteLock> {
        let deadline = Instant::now() + LOCK_TIMEOUT;
        let mut pause = Duration::from_millis(20);
        loop {
            let dotlock = dotlock(path)?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| Error::io("open", path, e))?;
            match fcntl_wait(&file, path, true, FCNTL_TRY) {
                Ok(()) => {
                    let lock = WriteLock {
                        file,
                        dotlock: Some(dotlock),
                    };
                    // an interrupted rewrite of ours is finished before anything else
                    crate::writer::Journal::of(path)
                        .recover(&lock.file)
                        .map_err(|e| Error::io("recover rewrite journal", path, e))?;
                    return Ok(lock);
                }
                Err(Error::LockTimeout { .. }) if Instant::now() < deadline => {
                    drop(file);
                    drop(dotlock);
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Releases the fcntl lock, keeping the dotlock (after the file was replaced).
    pub fn unlock_fcntl(&mut self) {
        let _ = rustix::fs::fcntl_lock(&self.file, rustix::fs::FlockOperation::NonBlockingUnlock);
    }

    /// Releases both locks, reporting a failure to remove the dotlock.
    pub fn release(mut self, path: &Path) -> Result<()> {
        self.unlock_fcntl();
        match self.dotlock.take() {
            Some(d) => d.release().map_err(|e| Error::io("unlink", path, e)),
            None => Ok(()),
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        self.unlock_fcntl();
    }
}
