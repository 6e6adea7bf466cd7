//! Locking an index exactly as Dovecot does with its default `lock_method = fcntl`: an
//! F_WRLCK over the whole head log `P.log`, waited for up to 180 s
//! (src/lib-index/mail-transaction-log-file.c mail_transaction_log_file_lock,
//! MAIL_TRANSACTION_LOG_LOCK_TIMEOUT).
//!
//! The lock is a classic POSIX record lock (rustix `fcntl_lock` issues F_SETLKW with
//! l_start = l_len = 0), the same kind Dovecot takes, so the two exclude each other. POSIX
//! record locks belong to the process, which has two consequences handled here:
//! - threads of this process don't exclude each other through fcntl: an in-process table
//!   keyed by the file's (dev, ino) serializes our own writers;
//! - closing *any* descriptor of the locked file drops the lock: while a writer holds it,
//!   readers of this process ([`read_guard`], used by `View::open`) wait instead of opening
//!   and closing the file. Code outside this crate must not open and close `P.log` while an
//!   `IndexWriter` transaction commits.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::paths::IndexPaths;

/// MAIL_TRANSACTION_LOG_LOCK_TIMEOUT.
pub const LOG_LOCK_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Default)]
struct Table {
    /// (dev, ino) → readers count (>0) or writer (-1).
    files: HashMap<(u64, u64), i64>,
}

fn table() -> &'static (Mutex<Table>, Condvar) {
    static T: OnceLock<(Mutex<Table>, Condvar)> = OnceLock::new();
    T.get_or_init(|| (Mutex::new(Table::default()), Condvar::new()))
}

fn id_of(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// In-process shared guard of the log files of an index (see the module docs).
pub struct ReadGuard {
    ids: Vec<(u64, u64)>,
}

/// Waits until no writer of this process holds `P.log` or `P.log.2`, then keeps them from
/// starting until the guard is dropped.
pub fn read_guard(paths: &IndexPaths) -> ReadGuard {
    let mut ids: Vec<(u64, u64)> = [paths.log(), paths.log2()]
        .iter()
        .filter_map(|p| id_of(p))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let (m, cv) = table();
    let mut t = m.lock().unwrap_or_else(|p| p.into_inner());
    while ids
        .iter()
        .any(|id| t.files.get(id).copied().unwrap_or(0) < 0)
    {
        t = cv.wait(t).unwrap_or_else(|p| p.into_inner());
    }
    for id in &ids {
        *t.files.entry(*id).or_insert(0) += 1;
    }
    ReadGuard { ids }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let (m, cv) = table();
        let mut t = m.lock().unwrap_or_else(|p| p.into_inner());
        for id in &self.ids {
            if let Some(c) = t.files.get_mut(id) {
                *c -= 1;
                if *c == 0 {
                    t.files.remove(id);
                }
            }
        }
        cv.notify_all();
    }
}

/// An exclusive lock of a log file: in-process slot + fcntl F_WRLCK. The file stays open
/// (O_RDWR|O_APPEND) for reading and appending through the same descriptor.
pub struct LogLock {
    pub file: File,
    pub path: PathBuf,
    id: (u64, u64),
}

impl LogLock {
    /// The whole log, read through the locked descriptor. Never reopen the file to read
    /// it: closing another descriptor of it would drop this process's fcntl lock.
    pub fn read_all(&self) -> Result<Vec<u8>> {
        let len = self
            .file
            .metadata()
            .map_err(|e| Error::io("fstat", &self.path, e))?
            .len();
        let mut data = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut data, 0)
            .map_err(|e| Error::io("pread", &self.path, e))?;
        Ok(data)
    }

    /// Opens `path` and locks it, waiting up to `timeout`. Returns `Ok(None)` if the file
    /// doesn't exist.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<Option<LogLock>> {
        let file = match OpenOptions::new()
            .read(true)
            .append(true)
            .custom_flags(0)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io("fstat", path, e))?;
        let id = (meta.dev(), meta.ino());
        let deadline = Instant::now() + timeout;
        // in-process exclusion first
        {
            let (m, cv) = table();
            let mut t = m.lock().unwrap_or_else(|p| p.into_inner());
            while t.files.get(&id).copied().unwrap_or(0) != 0 {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::LockTimeout {
                        path: path.to_path_buf(),
                    });
                }
                t = cv
                    .wait_timeout(t, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            t.files.insert(id, -1);
        }
        let lock = LogLock {
            file,
            path: path.to_path_buf(),
            id,
        };
        // then the fcntl lock, polled so the timeout can be honoured without signals
        let mut wait = Duration::from_millis(10);
        loop {
            match rustix::fs::fcntl_lock(
                &lock.file,
                rustix::fs::FlockOperation::NonBlockingLockExclusive,
            ) {
                Ok(()) => return Ok(Some(lock)),
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
                    wait = (wait * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(Error::io("fcntl(F_SETLK)", path, e.into())),
            }
        }
    }
}

impl Drop for LogLock {
    fn drop(&mut self) {
        let _ = rustix::fs::fcntl_lock(&self.file, rustix::fs::FlockOperation::NonBlockingUnlock);
        let (m, cv) = table();
        let mut t = m.lock().unwrap_or_else(|p| p.into_inner());
        t.files.remove(&self.id);
        cv.notify_all();
    }
}

/// A lock file made and held as lib/file-create-locked.c does (dsync's
/// `.dovecot-sync.lock` and `.dovecot-box-sync.lock`); dropping it unlinks the file, then
/// unlocks, so a waiter that got the lock on the unlinked file notices and retries.
pub struct CreatedLock {
    lock: Option<LogLock>,
    path: PathBuf,
}

impl CreatedLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CreatedLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.lock.take();
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    let filled =
        File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
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

/// Takes the fcntl lock of `path`, waiting up to `timeout` ([`Error::LockTimeout`]), as
/// file_create_locked does: an existing file is opened and locked (then checked to be still
/// the file at `path`, since a holder unlinks it before unlocking); a missing one is made as
/// `<path><16 hex>` with O_EXCL and `mode`, locked, and linked into place, so nobody ever
/// sees the file unlocked. The parent directory must exist.
pub fn create_locked(path: &Path, mode: u32, timeout: Duration) -> Result<CreatedLock> {
    let deadline = Instant::now() + timeout;
    let timed_out = || Error::LockTimeout {
        path: path.to_path_buf(),
    };
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Some(lock) = LogLock::acquire(path, remaining)? {
            if same_file(path, &lock) {
                return Ok(CreatedLock {
                    lock: Some(lock),
                    path: path.to_path_buf(),
                });
            }
            // The holder unlinked it while we waited: lock the new one.
            continue;
        }
        let mut temp = path.as_os_str().to_os_string();
        temp.push(random_hex());
        let temp = PathBuf::from(temp);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(|e| Error::io("open", &temp, e))?;
        let locked = LogLock::acquire(&temp, Duration::ZERO);
        let linked = std::fs::hard_link(&temp, path);
        let _ = std::fs::remove_file(&temp);
        let lock = match locked {
            Ok(Some(l)) => l,
            Ok(None) => {
                return Err(Error::io(
                    "open",
                    &temp,
                    std::io::ErrorKind::NotFound.into(),
                ))
            }
            Err(e) => return Err(e),
        };
        match linked {
            Ok(()) => {
                return Ok(CreatedLock {
                    lock: Some(lock),
                    path: path.to_path_buf(),
                })
            }
            // Someone else created it first: wait for theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if Instant::now() >= deadline {
                    return Err(timed_out());
                }
            }
            Err(e) => return Err(Error::io("link", path, e)),
        }
    }
}

/// `Mailbox::lock_for_sync` of a mailbox whose index is in `index_dir`: dsync's
/// `.dovecot-box-sync.lock` there (dsync-mailbox.c dsync_mailbox_lock), as a
/// [`create_locked`] file with mode 0600. The directory must exist.
pub fn lock_mailbox_for_sync(
    index_dir: &Path,
    timeout: Duration,
) -> mailstore::Result<Option<mailstore::SyncGuard>> {
    let lock = create_locked(
        &index_dir.join(mailstore::BOX_SYNC_LOCK_FILENAME),
        0o600,
        timeout,
    )?;
    Ok(Some(Box::new(lock)))
}
