//! Dotlocks exactly as Dovecot takes them (src/lib/file-dotlock.c, 2.3.19.1), so mailsync and
//! a running Dovecot exclude each other on the same file.
//!
//! Protocol (all rules from file-dotlock.c unless marked otherwise):
//! - The lock of `<target>` is the file `<target>.lock`. It is created either with
//!   `open(O_CREAT|O_EXCL)` (`use_excl_lock`, Dovecot's default `dotlock_use_excl = yes`) or by
//!   writing a temp file `.temp.<hostname>.<pid>.<16 hex>` beside it and `link()`ing it to the
//!   lock name. (mailsync deviation: a `write_pid` lock always takes the link way, so the
//!   lock appears with its pid already in it; a process killed right after an O_EXCL create
//!   would leave an empty lock that blocks everyone for the whole stale timeout.)
//! - With `write_pid` (Dovecot's `file_dotlock_create`, used by the Maildir uidlist lock) the
//!   lock holds `<pid>:<hostname>` (no newline). Without it (`file_dotlock_open`, used by the
//!   subscriptions file) the lock starts empty and receives the target's new contents, then is
//!   renamed over the target by [`DotLock::replace`].
//! - An existing lock is overridden (unlinked, then retried) when
//!   * it names a pid on this host (host = `$DOVECOT_HOSTNAME` or the kernel hostname), its
//!     mtime is at least 2 s old (STALE_PID_CHECK_SECS), and that process does not exist
//!     (checked through `/proc/<pid>`, Dovecot uses `kill(pid, 0)`), or the pid is our own
//!     pid but the lock is not held by this process (a leftover from a previous process with
//!     the same pid);
//!   * or it has no usable pid and neither it nor the target changed (inode, size, mtime,
//!     ctime) for `stale_timeout` (0 = never stale). The first time a file is seen its change
//!     time is its mtime if that is newer than its ctime and not in the future, else its ctime;
//!     later changes count from the moment we notice them.
//!
//!   A lock naming a live process is never overridden, whatever its age.
//! - Waiting polls with a random 100–200 ms interval, growing by half each second up to 3 s,
//!   reset whenever the lock changes (Dovecot additionally wakes early through inotify).
//! - Extension (not in Dovecot, which is single-threaded): a lock currently held by this process
//!   (same inode) is never taken as stale by another thread of this process.
//!
//! Releasing only unlinks the lock while it is still our inode (Dovecot's file_dotlock_delete
//! checks dev/ino; a changed mtime with the same inode is only a warning there, so it is ignored
//! here too). Replacing checks ownership the same way first (DOTLOCK_REPLACE_FLAG_VERIFY_OWNER).

use std::collections::hash_map::RandomState;
use std::fs::{File, Metadata, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::atomic::{fsync_dir, parent_dir, with_path};

/// file-dotlock.c STALE_PID_CHECK_SECS: a lock younger than this (by mtime) is not pid-checked.
const STALE_PID_CHECK: Duration = Duration::from_secs(2);
/// file-dotlock.c LOCK_MAX_WAIT_USECS.
const MAX_WAIT: Duration = Duration::from_secs(3);
/// maildir-uidlist.h MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT.
const MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT: Duration = Duration::from_secs(120);
/// subscription-file.c SUBSCRIPTION_FILE_LOCK_TIMEOUT.
const SUBSCRIPTION_FILE_LOCK_TIMEOUT: Duration = Duration::from_secs(120);
/// subscription-file.c SUBSCRIPTION_FILE_CHANGE_TIMEOUT.
const SUBSCRIPTION_FILE_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How to take a dotlock.
#[derive(Clone, Debug)]
pub struct DotLockOptions {
    /// Give up (io::ErrorKind::TimedOut) after this long. Zero = try once.
    pub timeout: Duration,
    /// An existing lock not modified for this long is stale and overridden (unless it names a
    /// live process on this host). Zero = never stale.
    pub stale_timeout: Duration,
    /// Create the lock with O_EXCL (Dovecot `dotlock_use_excl = yes`, its default) instead of
    /// temp file + link().
    pub use_excl_lock: bool,
    /// Write `<pid>:<hostname>` into the lock (Dovecot's file_dotlock_create). Leave false when
    /// the lock file receives the target's new contents for [`DotLock::replace`]
    /// (file_dotlock_open).
    pub write_pid: bool,
    /// Permission bits of the created lock file (and so of the target after `replace`); the
    /// process umask still applies. Dovecot uses the mailbox list's file_create_mode.
    pub mode: u32,
    /// Appended to the target's path to name the lock (`dotlock_settings.lock_suffix`):
    /// `.lock` unless Dovecot uses another one (`.newlock` for creating an index log).
    pub lock_suffix: &'static str,
}

impl DotLockOptions {
    /// The lock Dovecot takes on `dovecot-uidlist` (maildir-uidlist.c maildir_uidlist_init):
    /// timeout 122 s (stale timeout + 2, capped by `mail_max_lock_timeout`, unset by default),
    /// stale after 120 s, O_EXCL, pid written. Dovecot does not write the new uidlist through
    /// the lock file: it writes `dovecot-uidlist.tmp`, renames it over `dovecot-uidlist` while
    /// holding the lock, then deletes the lock ([`DotLock::release`]).
    pub fn maildir_uidlist() -> DotLockOptions {
        DotLockOptions {
            timeout: MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT + Duration::from_secs(2),
            stale_timeout: MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT,
            use_excl_lock: true,
            write_pid: true,
            mode: 0o600,
            lock_suffix: ".lock",
        }
    }

    /// The lock Dovecot takes on the `subscriptions` file (subscription-file.c
    /// subsfile_set_subscribed): timeout 120 s, stale after 30 s, O_EXCL, no pid (the lock file
    /// receives the new contents and is renamed over the file).
    pub fn subscriptions() -> DotLockOptions {
        DotLockOptions {
            timeout: SUBSCRIPTION_FILE_LOCK_TIMEOUT,
            stale_timeout: SUBSCRIPTION_FILE_CHANGE_TIMEOUT,
            use_excl_lock: true,
            write_pid: false,
            mode: 0o600,
            lock_suffix: ".lock",
        }
    }

    /// The lock Dovecot takes to create (or rotate to) a new transaction log
    /// (mail-transaction-log-file.c mail_transaction_log_file_create with
    /// mail_transaction_log_get_dotlock_set): `<P.log>.newlock`, timeout
    /// MAIL_TRANSACTION_LOG_LOCK_TIMEOUT (180 s), stale after
    /// MAIL_TRANSACTION_LOG_DOTLOCK_CHANGE_TIMEOUT (180 s), O_EXCL (dotlock_use_excl default),
    /// no pid: the lock file receives the new log and is renamed over `P.log`.
    pub fn index_log_create() -> DotLockOptions {
        DotLockOptions {
            timeout: Duration::from_secs(180),
            stale_timeout: Duration::from_secs(180),
            use_excl_lock: true,
            write_pid: false,
            mode: 0o600,
            lock_suffix: ".newlock",
        }
    }
}

impl Default for DotLockOptions {
    /// Same as [`DotLockOptions::maildir_uidlist`].
    fn default() -> DotLockOptions {
        DotLockOptions::maildir_uidlist()
    }
}

/// A held dotlock. Dropping it removes the lock file.
#[derive(Debug)]
pub struct DotLock {
    target: PathBuf,
    lock_path: PathBuf,
    file: Option<File>,
    /// Identity of the lock file we created.
    dev: u64,
    ino: u64,
    /// Set once replace/release ran (or the lock was found not ours): Drop does nothing.
    finished: bool,
}

/// (dev, ino) of the lock files currently held by this process.
static HELD_BY_THIS_PROCESS: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

fn held_list() -> std::sync::MutexGuard<'static, Vec<(u64, u64)>> {
    HELD_BY_THIS_PROCESS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn is_held_by_this_process(dev: u64, ino: u64) -> bool {
    held_list().contains(&(dev, ino))
}

/// Dovecot's my_hostname (src/lib/hostpid.c): `$DOVECOT_HOSTNAME`, else gethostname().
pub fn hostname() -> &'static str {
    static HOSTNAME: OnceLock<String> = OnceLock::new();
    HOSTNAME.get_or_init(|| {
        if let Ok(name) = std::env::var("DOVECOT_HOSTNAME") {
            if !name.is_empty() {
                return name;
            }
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim_end_matches('\n').to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    })
}

/// The contents Dovecot writes into a pid lock: `<pid>:<hostname>`, no newline.
pub fn pid_lock_contents() -> String {
    format!("{}:{}", std::process::id(), hostname())
}

/// A random duration in [100 ms, 200 ms) (file-dotlock.c LOCK_RANDOM_USLEEP_TIME).
fn random_short_wait() -> Duration {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    Duration::from_micros(100_000 + hasher.finish() % 100_000)
}

fn random_hex16() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// file-dotlock.c read_local_pid: the pid in a `<pid>:<host>` lock when host is ours.
fn read_local_pid(lock_path: &Path) -> Option<u32> {
    let mut buf = Vec::with_capacity(512);
    File::open(lock_path)
        .ok()?
        .take(511)
        .read_to_end(&mut buf)
        .ok()?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    let colon = buf.iter().position(|&b| b == b':')?;
    if &buf[colon + 1..] != hostname().as_bytes() {
        return None;
    }
    let pid: i64 = std::str::from_utf8(&buf[..colon]).ok()?.parse().ok()?;
    u32::try_from(pid).ok().filter(|&pid| pid > 0)
}

/// Whether process `pid` exists on this host. Without /proc we cannot tell: assume it does
/// (like kill() failing with something other than ESRCH).
fn process_exists(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new("/proc").join(pid.to_string()).exists()
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nsecs.clamp(0, 999_999_999) as u64);
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

/// file-dotlock.c struct file_change_info.
#[derive(Default)]
struct ChangeInfo {
    seen: bool,
    dev: u64,
    ino: u64,
    size: u64,
    ctime: Option<SystemTime>,
    mtime: Option<SystemTime>,
}

impl ChangeInfo {
    /// file-dotlock.c update_change_info: records `meta`, moving `last_change` forward when the
    /// file changed. Returns true if it changed (or was seen for the first time).
    fn update(&mut self, meta: &Metadata, last_change: &mut SystemTime, now: SystemTime) -> bool {
        let ctime = system_time(meta.ctime(), meta.ctime_nsec());
        let mtime = system_time(meta.mtime(), meta.mtime_nsec());
        if self.seen
            && self.dev == meta.dev()
            && self.ino == meta.ino()
            && self.size == meta.size()
            && self.ctime == Some(ctime)
            && self.mtime == Some(mtime)
        {
            return false;
        }
        let change_time = if self.seen {
            now
        } else if mtime <= now && mtime > ctime {
            mtime
        } else {
            ctime
        };
        if *last_change < change_time {
            *last_change = change_time;
        }
        *self = ChangeInfo {
            seen: true,
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            ctime: Some(ctime),
            mtime: Some(mtime),
        };
        true
    }
}

/// What check_lock decided.
enum LockState {
    /// No lock file (or it just changed after a dead-pid check): try to create ours.
    TryCreate,
    /// Someone holds it: wait.
    Held,
    /// We unlinked a stale lock: wait a short random time, then retry.
    Overridden,
}

/// The waiting state of one acquire (file-dotlock.c struct lock_info).
struct Waiter<'a> {
    target: &'a Path,
    lock_path: &'a Path,
    opts: &'a DotLockOptions,
    lock_info: ChangeInfo,
    target_info: ChangeInfo,
    last_change: SystemTime,
    pid_read: bool,
    pid: Option<u32>,
    /// Hard-link method: our temp file, kept across retries.
    temp: Option<(PathBuf, File)>,
}

impl Waiter<'_> {
    fn lstat_lock(&self) -> io::Result<Option<Metadata>> {
        match std::fs::symlink_metadata(self.lock_path) {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(with_path(e, self.lock_path)),
        }
    }

    /// file-dotlock.c dotlock_override.
    fn override_lock(&self) -> io::Result<LockState> {
        match std::fs::remove_file(self.lock_path) {
            Ok(()) => Ok(LockState::Overridden),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LockState::Overridden),
            Err(e) => Err(with_path(e, self.lock_path)),
        }
    }

    /// file-dotlock.c check_lock.
    fn check_lock(&mut self, now: SystemTime) -> io::Result<LockState> {
        let Some(meta) = self.lstat_lock()? else {
            return Ok(LockState::TryCreate);
        };
        let changed = self.lock_info.update(&meta, &mut self.last_change, now);
        if is_held_by_this_process(meta.dev(), meta.ino()) {
            return Ok(LockState::Held);
        }
        if changed || !self.pid_read {
            // First look or someone else got the lock: a lock younger than 2 s most likely
            // has a valid pid, don't bother reading it.
            let mtime = system_time(meta.mtime(), meta.mtime_nsec());
            if mtime + STALE_PID_CHECK >= now {
                self.pid_read = false;
                self.pid = None;
            } else {
                self.pid = read_local_pid(self.lock_path);
                self.pid_read = true;
            }
        } else if self.pid.is_some() {
            // The pid may have changed even with identical times if locks were recreated
            // rapidly.
            self.pid = read_local_pid(self.lock_path);
        }

        if let Some(pid) = self.pid {
            if process_exists(pid) && pid != std::process::id() {
                return Ok(LockState::Held);
            }
            // Dead holder, or our own pid but not held by us (a leftover from an earlier
            // process with the same pid): override unless it was just deleted or replaced.
            let Some(meta) = self.lstat_lock()? else {
                return Ok(LockState::TryCreate);
            };
            if self.lock_info.update(&meta, &mut self.last_change, now) {
                return Ok(LockState::TryCreate);
            }
            return self.override_lock();
        }

        if self.opts.stale_timeout.is_zero() {
            return Ok(LockState::Held);
        }
        if now > self.last_change + self.opts.stale_timeout {
            // Possibly stale: a change of the protected file also counts as activity.
            match std::fs::metadata(self.target) {
                Ok(meta) => {
                    self.target_info.update(&meta, &mut self.last_change, now);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(with_path(e, self.target)),
            }
        }
        if now > self.last_change + self.opts.stale_timeout {
            return self.override_lock();
        }
        Ok(LockState::Held)
    }

    /// file-dotlock.c file_write_pid: on a write failure the lock is left empty.
    fn write_pid(&self, file: &mut File, path: &Path) -> io::Result<()> {
        if self.opts.write_pid && file.write_all(pid_lock_contents().as_bytes()).is_err() {
            file.set_len(0).map_err(|e| with_path(e, path))?;
        }
        Ok(())
    }

    /// file-dotlock.c try_create_lock_excl.
    fn try_create_excl(&self) -> io::Result<Option<File>> {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(self.opts.mode)
            .open(self.lock_path)
        {
            Ok(mut file) => {
                if let Err(e) = self.write_pid(&mut file, self.lock_path) {
                    let _ = std::fs::remove_file(self.lock_path);
                    return Err(e);
                }
                Ok(Some(file))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(with_path(e, self.lock_path)),
        }
    }

    /// file-dotlock.c try_create_lock_hardlink: temp file `.temp.<host>.<pid>.<random>` in
    /// the lock's directory, link()ed to the lock name.
    fn try_create_hardlink(&mut self) -> io::Result<Option<File>> {
        match &self.temp {
            None => {
                let dir = parent_dir(self.lock_path);
                let prefix = format!(".temp.{}.{}.", hostname(), std::process::id());
                let (path, mut file) = loop {
                    let path = dir.join(format!("{prefix}{}", random_hex16()));
                    match OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .mode(self.opts.mode)
                        .open(&path)
                    {
                        Ok(file) => break (path, file),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(with_path(e, &path)),
                    }
                };
                if let Err(e) = self.write_pid(&mut file, &path) {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                self.temp = Some((path, file));
            }
            Some((path, file)) => {
                // We've been waiting: refresh the temp file's timestamp so the lock doesn't
                // look old when the link finally succeeds.
                file.set_modified(SystemTime::now())
                    .map_err(|e| with_path(e, path))?;
            }
        }
        let Some((temp_path, _)) = &self.temp else {
            return Ok(None);
        };
        match std::fs::hard_link(temp_path, self.lock_path) {
            Ok(()) => {
                let (temp_path, file) = self.temp.take().expect("temp file exists");
                let _ = std::fs::remove_file(&temp_path);
                Ok(Some(file))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!(
                    "link({}, {}): {e}",
                    temp_path.display(),
                    self.lock_path.display()
                ),
            )),
        }
    }

    fn describe_holder(&self) -> String {
        match std::fs::read(self.lock_path) {
            Ok(contents) if self.opts.write_pid || contents.len() < 300 => {
                let text = String::from_utf8_lossy(&contents);
                match text.split_once(':') {
                    Some((pid, host))
                        if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        format!(" (held by pid {pid} on {host})")
                    }
                    _ => String::new(),
                }
            }
            _ => String::new(),
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some((path, _)) = self.temp.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl DotLock {
    /// Takes the dotlock of `target` (creating `<target><lock_suffix>`, normally
    /// `<target>.lock`), waiting up to `opts.timeout`.
    pub fn acquire(target: &Path, opts: &DotLockOptions) -> io::Result<DotLock> {
        let mut lock_name = target.as_os_str().to_owned();
        lock_name.push(opts.lock_suffix);
        let lock_path = PathBuf::from(lock_name);
        let deadline = Instant::now() + opts.timeout;
        let mut waiter = Waiter {
            target,
            lock_path: &lock_path,
            opts,
            lock_info: ChangeInfo::default(),
            target_info: ChangeInfo::default(),
            last_change: SystemTime::UNIX_EPOCH,
            pid_read: false,
            pid: None,
            temp: None,
        };
        let mut wait = random_short_wait();
        let mut seen_last_change = waiter.last_change;
        let mut last_wait_increase = Instant::now();
        loop {
            let state = waiter.check_lock(SystemTime::now())?;
            let file = match state {
                LockState::TryCreate => {
                    // A pid lock is always created through a temp file holding the pid and
                    // link() (as exclusive as O_EXCL): with O_EXCL, a process killed between
                    // the create and the write leaves an empty lock that nobody can prove
                    // stale for the whole stale timeout (Dovecot has that window too).
                    if opts.use_excl_lock && !opts.write_pid {
                        waiter.try_create_excl()?
                    } else {
                        waiter.try_create_hardlink()?
                    }
                }
                LockState::Held | LockState::Overridden => None,
            };
            if let Some(file) = file {
                return DotLock::created(target, lock_path.clone(), file);
            }

            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "timed out after {:?} waiting for dotlock {}{}",
                        opts.timeout,
                        lock_path.display(),
                        waiter.describe_holder()
                    ),
                ));
            }
            // file-dotlock.c dotlock_create: reset the interval when the lock changed, else
            // grow it by half once a second, up to 3 s.
            let sleep = if matches!(state, LockState::Overridden) {
                random_short_wait()
            } else {
                if seen_last_change != waiter.last_change {
                    seen_last_change = waiter.last_change;
                    wait = random_short_wait();
                    last_wait_increase = now;
                } else if now.duration_since(last_wait_increase) >= Duration::from_secs(1)
                    && wait < MAX_WAIT
                {
                    last_wait_increase = now;
                    wait += wait / 2;
                }
                wait
            };
            std::thread::sleep(sleep.min(deadline - now));
        }
    }

    /// Records a freshly created lock file, checking it is still ours at the lock path
    /// (file_dotlock_create_real: "dotlock was immediately recreated/deleted under us").
    fn created(target: &Path, lock_path: PathBuf, file: File) -> io::Result<DotLock> {
        let meta = file.metadata().map_err(|e| with_path(e, &lock_path))?;
        let mut lock = DotLock {
            target: target.to_path_buf(),
            lock_path,
            file: Some(file),
            dev: meta.dev(),
            ino: meta.ino(),
            finished: false,
        };
        held_list().push((lock.dev, lock.ino));
        match std::fs::symlink_metadata(&lock.lock_path) {
            Ok(now) if now.dev() == lock.dev && now.ino() == lock.ino => Ok(lock),
            Ok(_) => {
                lock.finish();
                Err(io::Error::other(format!(
                    "dotlock {} was immediately recreated under us",
                    lock.lock_path.display()
                )))
            }
            Err(e) => {
                lock.finish();
                Err(with_path(e, &lock.lock_path))
            }
        }
    }

    /// The locked file.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The lock file (`<target>.lock`).
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// The open lock file, for writing the target's new contents into it before
    /// [`replace`](DotLock::replace) (Dovecot's file_dotlock_open, used for `subscriptions`).
    /// Use this only with `write_pid: false`; otherwise the file already holds the pid.
    pub fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("lock file is open until replace/release")
    }

    /// True while `<target>.lock` is still the file we created (file_dotlock_is_locked).
    pub fn is_still_ours(&self) -> io::Result<bool> {
        match std::fs::symlink_metadata(&self.lock_path) {
            Ok(meta) => Ok(meta.dev() == self.dev && meta.ino() == self.ino),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(with_path(e, &self.lock_path)),
        }
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.file = None;
            let mut held = held_list();
            if let Some(index) = held.iter().position(|&id| id == (self.dev, self.ino)) {
                held.swap_remove(index);
            }
        }
    }

    /// fsyncs the lock file and renames it over the target, releasing the lock. Fails without
    /// touching the target if the lock was overridden meanwhile.
    pub fn replace(mut self) -> io::Result<()> {
        let result = self.replace_inner();
        self.finish();
        result
    }

    fn replace_inner(&mut self) -> io::Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.flush().map_err(|e| with_path(e, &self.lock_path))?;
            file.sync_all().map_err(|e| with_path(e, &self.lock_path))?;
        }
        if !self.is_still_ours()? {
            return Err(io::Error::other(format!(
                "dotlock {} was overridden or deleted by someone else; {} not replaced",
                self.lock_path.display(),
                self.target.display()
            )));
        }
        std::fs::rename(&self.lock_path, &self.target).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "rename({}, {}): {e}",
                    self.lock_path.display(),
                    self.target.display()
                ),
            )
        })?;
        fsync_dir(parent_dir(&self.target))
    }

    /// Releases the lock without changing the target. Errs (leaving the file alone) if the
    /// lock file was deleted or replaced by someone else meanwhile: the caller's exclusive
    /// section may have overlapped another writer.
    pub fn release(mut self) -> io::Result<()> {
        let result = self.delete_if_ours();
        self.finish();
        result
    }

    /// file-dotlock.c file_dotlock_delete.
    fn delete_if_ours(&mut self) -> io::Result<()> {
        self.file = None;
        let deleted = || {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "our dotlock {} was deleted by someone else",
                    self.lock_path.display()
                ),
            )
        };
        match std::fs::symlink_metadata(&self.lock_path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                match std::fs::remove_file(&self.lock_path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Err(deleted()),
                    Err(e) => Err(with_path(e, &self.lock_path)),
                }
            }
            Ok(_) => Err(io::Error::other(format!(
                "our dotlock {} was overridden by someone else",
                self.lock_path.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(deleted()),
            Err(e) => Err(with_path(e, &self.lock_path)),
        }
    }

    /// Touches the lock so others don't take it as stale during long work.
    pub fn touch(&self) -> io::Result<()> {
        let now = SystemTime::now();
        match &self.file {
            Some(file) => file
                .set_times(
                    std::fs::FileTimes::new()
                        .set_accessed(now)
                        .set_modified(now),
                )
                .map_err(|e| with_path(e, &self.lock_path)),
            None => Ok(()),
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.delete_if_ours();
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::dir_entries;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn opts(timeout_ms: u64, stale_ms: u64) -> DotLockOptions {
        DotLockOptions {
            timeout: Duration::from_millis(timeout_ms),
            stale_timeout: Duration::from_millis(stale_ms),
            ..DotLockOptions::maildir_uidlist()
        }
    }

    fn lock_path_of(target: &Path) -> PathBuf {
        let mut name = target.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// The pid of a process that has exited, for locks left behind by a dead process.
    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    /// Writes the lock of process `pid` on this host, with an mtime `age` in the past.
    fn plant_local_pid_lock(target: &Path, pid: u32, age: Duration) {
        plant_lock(target, &format!("{pid}:{}", hostname()), age);
    }

    /// Asserts that taking the lock of `target` times out; returns the error.
    fn acquire_times_out(target: &Path, opts: &DotLockOptions) -> io::Error {
        let err = DotLock::acquire(target, opts).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        err
    }

    /// Asserts the lock file now holds our `<pid>:<host>` (we took the lock over).
    fn assert_holds_our_pid(lock: &DotLock) {
        assert_eq!(
            std::fs::read_to_string(lock.lock_path()).unwrap(),
            pid_lock_contents()
        );
    }

    /// Writes a foreign lock file with `contents` and an mtime `age` in the past.
    fn plant_lock(target: &Path, contents: &str, age: Duration) {
        let path = lock_path_of(target);
        std::fs::write(&path, contents).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
    }

    #[test]
    fn lock_file_holds_pid_and_host_and_release_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("dovecot-uidlist");
        let lock = DotLock::acquire(&target, &DotLockOptions::maildir_uidlist()).unwrap();
        assert_eq!(lock.lock_path(), dir.path().join("dovecot-uidlist.lock"));
        assert_eq!(lock.target(), target);
        let contents = std::fs::read_to_string(lock.lock_path()).unwrap();
        assert_eq!(contents, format!("{}:{}", std::process::id(), hostname()));
        assert!(lock.is_still_ours().unwrap());
        lock.release().unwrap();
        assert!(dir_entries(dir.path()).is_empty());
    }

    #[test]
    fn index_log_create_uses_the_newlock_suffix_and_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("dovecot.index.log");
        std::fs::write(&target, b"old").unwrap();
        let mut lock = DotLock::acquire(&target, &DotLockOptions::index_log_create()).unwrap();
        assert_eq!(
            lock.lock_path(),
            dir.path().join("dovecot.index.log.newlock")
        );
        // No pid: the lock file becomes the new log.
        assert_eq!(std::fs::read(lock.lock_path()).unwrap(), b"");
        lock.file().write_all(b"new log").unwrap();
        lock.replace().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new log");
        assert_eq!(dir_entries(dir.path()), ["dovecot.index.log"]);
    }

    #[test]
    fn drop_removes_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        {
            let _lock = DotLock::acquire(&target, &DotLockOptions::subscriptions()).unwrap();
            assert!(lock_path_of(&target).exists());
        }
        assert!(!lock_path_of(&target).exists());
    }

    #[test]
    fn second_thread_waits_then_gets_the_lock() {
        for use_excl_lock in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("file");
            let options = DotLockOptions {
                use_excl_lock,
                ..opts(10_000, 120_000)
            };
            let first = DotLock::acquire(&target, &options).unwrap();
            let released = Arc::new(AtomicBool::new(false));
            let waiter = {
                let (target, options, released) =
                    (target.clone(), options.clone(), released.clone());
                std::thread::spawn(move || {
                    let lock = DotLock::acquire(&target, &options).unwrap();
                    // Only possible once the first holder let go.
                    assert!(released.load(Ordering::SeqCst));
                    lock.release().unwrap();
                })
            };
            std::thread::sleep(Duration::from_millis(2500));
            // Older than STALE_PID_CHECK and holding our own pid: the other thread must still
            // respect it because this process holds it.
            assert!(!waiter.is_finished());
            released.store(true, Ordering::SeqCst);
            first.release().unwrap();
            waiter.join().unwrap();
            // The hard-link method leaves no temp file behind.
            assert!(
                dir_entries(dir.path()).is_empty(),
                "{:?}",
                dir_entries(dir.path())
            );
        }
    }

    #[test]
    fn timeout_error_names_the_lock_path() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        let _held = DotLock::acquire(&target, &opts(1000, 120_000)).unwrap();
        let err = acquire_times_out(&target, &opts(300, 120_000));
        assert!(
            err.to_string()
                .contains(&lock_path_of(&target).display().to_string()),
            "{err}"
        );
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
    }

    #[test]
    fn lock_without_pid_is_overridden_only_after_stale_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        plant_lock(&target, "", Duration::from_secs(3600));
        // Planting changed the ctime to now: the lock counts as changed just now, so a
        // 5 s stale timeout keeps it for the 500 ms we wait.
        acquire_times_out(&target, &opts(500, 5_000));
        assert_eq!(std::fs::read(lock_path_of(&target)).unwrap(), b"");
        // With a 1 s stale timeout it gets overridden.
        let lock = DotLock::acquire(&target, &opts(5_000, 1_000)).unwrap();
        assert_holds_our_pid(&lock);
    }

    #[test]
    fn changes_to_the_target_keep_a_lock_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        std::fs::write(&target, b"0").unwrap();
        plant_lock(&target, "", Duration::from_secs(3600));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (target, stop) = (target.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    std::fs::write(&target, n.to_string()).unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        // The lock itself is unchanged for longer than the stale timeout, but the protected
        // file keeps changing, so the lock is not stale.
        acquire_times_out(&target, &opts(2_500, 1_000));
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        DotLock::acquire(&target, &opts(5_000, 1_000)).unwrap();
    }

    #[test]
    fn lock_of_dead_local_pid_is_overridden_immediately() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        plant_local_pid_lock(&target, dead_pid(), Duration::from_secs(10));
        // Stale timeout of an hour: only the dead pid makes it overridable.
        let lock = DotLock::acquire(&target, &opts(3_000, 3_600_000)).unwrap();
        assert_holds_our_pid(&lock);
    }

    #[test]
    fn leftover_lock_with_our_pid_not_held_by_us_is_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        plant_lock(&target, &pid_lock_contents(), Duration::from_secs(10));
        DotLock::acquire(&target, &opts(3_000, 3_600_000)).unwrap();
    }

    #[test]
    fn fresh_dead_pid_lock_waits_for_pid_check_age() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        // mtime now: the pid is not checked within 2 s (STALE_PID_CHECK_SECS).
        plant_local_pid_lock(&target, dead_pid(), Duration::ZERO);
        acquire_times_out(&target, &opts(800, 3_600_000));
        DotLock::acquire(&target, &opts(5_000, 3_600_000)).unwrap();
    }

    #[test]
    fn lock_of_live_foreign_pid_is_respected_even_when_stale() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
        plant_local_pid_lock(&target, sleeper.id(), Duration::from_secs(3600));
        let err = acquire_times_out(&target, &opts(2_000, 500));
        assert!(
            err.to_string().contains(&format!("pid {}", sleeper.id())),
            "{err}"
        );
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        // Now the pid is dead: overridden.
        DotLock::acquire(&target, &opts(3_000, 3_600_000)).unwrap();
    }

    #[test]
    fn foreign_host_pid_falls_back_to_stale_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        plant_lock(
            &target,
            &format!("{}:some-other-host", std::process::id()),
            Duration::from_secs(3600),
        );
        acquire_times_out(&target, &opts(400, 60_000));
        DotLock::acquire(&target, &opts(5_000, 1_000)).unwrap();
    }

    #[test]
    fn waits_for_a_lock_held_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        let lock = lock_path_of(&target);
        let done = dir.path().join("done");
        // A shell takes the lock the way Dovecot does with dotlock_use_excl (noclobber = O_EXCL),
        // writes "<pid>:<host>", backdates it so the pid gets checked, holds it 3 s.
        let script = format!(
            "set -C; printf '%s:%s' $$ '{host}' > '{lock}' || exit 1; \
             touch -m -d '@1000000000' '{lock}'; echo ready; sleep 3; : > '{done}'; rm '{lock}'",
            host = hostname(),
            lock = lock.display(),
            done = done.display()
        );
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(shell.stdout.as_mut().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready, "ready\n");
        // Stale timeout far below the hold time: only the live pid keeps us out.
        let ours = DotLock::acquire(&target, &opts(10_000, 500)).unwrap();
        assert!(
            done.exists(),
            "got the lock before the other process released it"
        );
        assert!(shell.wait().unwrap().success());
        ours.release().unwrap();
    }

    #[test]
    fn other_process_cannot_take_our_lock() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        let lock = DotLock::acquire(&target, &DotLockOptions::maildir_uidlist()).unwrap();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("set -C; : > '{}'", lock.lock_path().display()))
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success());
        lock.release().unwrap();
    }

    #[test]
    fn replace_renames_new_contents_over_target() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("subscriptions");
        std::fs::write(&target, b"old\n").unwrap();
        let reader = File::open(&target).unwrap();
        let mut lock = DotLock::acquire(&target, &DotLockOptions::subscriptions()).unwrap();
        // No pid in a content lock.
        assert_eq!(std::fs::read(lock.lock_path()).unwrap(), b"");
        lock.file().write_all(b"new contents\n").unwrap();
        let lock_ino = std::fs::metadata(lock.lock_path()).unwrap().ino();
        // The target is untouched until replace.
        assert_eq!(std::fs::read(&target).unwrap(), b"old\n");
        lock.replace().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new contents\n");
        assert_eq!(std::fs::metadata(&target).unwrap().ino(), lock_ino);
        assert_eq!(std::io::read_to_string(reader).unwrap(), "old\n");
        assert_eq!(dir_entries(dir.path()), vec!["subscriptions".to_string()]);
    }

    #[test]
    fn replace_refuses_when_lock_was_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        std::fs::write(&target, b"old").unwrap();
        let mut lock = DotLock::acquire(&target, &DotLockOptions::subscriptions()).unwrap();
        lock.file().write_all(b"mine").unwrap();
        std::fs::remove_file(lock.lock_path()).unwrap();
        std::fs::write(lock.lock_path(), b"theirs").unwrap();
        let lock_path = lock.lock_path().to_path_buf();
        assert!(!lock.is_still_ours().unwrap());
        let err = lock.replace().unwrap_err();
        assert!(err.to_string().contains("overridden"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read(&lock_path).unwrap(), b"theirs");
    }

    #[test]
    fn release_and_drop_leave_a_foreign_lock_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        let lock = DotLock::acquire(&target, &DotLockOptions::maildir_uidlist()).unwrap();
        std::fs::remove_file(lock.lock_path()).unwrap();
        std::fs::write(lock.lock_path(), b"theirs").unwrap();
        let lock_path = lock.lock_path().to_path_buf();
        assert!(lock
            .release()
            .unwrap_err()
            .to_string()
            .contains("overridden"));
        assert_eq!(std::fs::read(&lock_path).unwrap(), b"theirs");

        std::fs::remove_file(&lock_path).unwrap();
        let lock = DotLock::acquire(&target, &DotLockOptions::maildir_uidlist()).unwrap();
        std::fs::remove_file(&lock_path).unwrap();
        std::fs::write(&lock_path, b"theirs").unwrap();
        drop(lock);
        assert_eq!(std::fs::read(&lock_path).unwrap(), b"theirs");

        std::fs::remove_file(&lock_path).unwrap();
        let lock = DotLock::acquire(&target, &DotLockOptions::maildir_uidlist()).unwrap();
        std::fs::remove_file(&lock_path).unwrap();
        assert_eq!(lock.release().unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn touch_refreshes_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        let lock = DotLock::acquire(&target, &DotLockOptions::maildir_uidlist()).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(lock.lock_path())
            .unwrap()
            .set_modified(old)
            .unwrap();
        lock.touch().unwrap();
        let mtime = std::fs::metadata(lock.lock_path())
            .unwrap()
            .modified()
            .unwrap();
        assert!(mtime > old + Duration::from_secs(3000));
    }

    #[test]
    fn missing_directory_is_an_error_not_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("nodir").join("file");
        let err = DotLock::acquire(&target, &opts(5_000, 1_000)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nodir"), "{err}");
        let err = DotLock::acquire(
            &target,
            &DotLockOptions {
                use_excl_lock: false,
                ..opts(5_000, 1_000)
            },
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
