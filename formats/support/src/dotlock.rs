//! Dotlocks exactly as Dovecot takes them (src/lib/file-dotlock.c), so mailsync and a running
//! Dovecot can lock the same file: `<target>.lock` created exclusively, holding
//! `<pid>:<hostname>`, stale after `stale_timeout` of no change or when its pid is dead on
//! this host.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to take a dotlock.
#[derive(Clone, Debug)]
pub struct DotLockOptions {
    /// Give up (io::ErrorKind::TimedOut) after this long.
    pub timeout: Duration,
    /// An existing lock not modified for this long is stale and overridden.
    pub stale_timeout: Duration,
}

/// A held dotlock. Dropping it removes the lock file.
#[derive(Debug)]
pub struct DotLock {
    target: PathBuf,
    lock_path: PathBuf,
    file: Option<File>,
}

impl DotLock {
    /// Takes the dotlock of `target` (creating `<target>.lock`), waiting up to `opts.timeout`.
    pub fn acquire(target: &Path, opts: &DotLockOptions) -> io::Result<DotLock> {
        let _ = (target, opts);
        todo!()
    }

    /// The locked file.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The lock file (`<target>.lock`).
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// The open lock file, for writing the target's new contents into it (Dovecot writes the
    /// new uidlist into `dovecot-uidlist.lock`, then renames it over `dovecot-uidlist`).
    pub fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("lock file is open until replace/release")
    }

    /// fsyncs the lock file and renames it over the target, releasing the lock.
    pub fn replace(self) -> io::Result<()> {
        todo!()
    }

    /// Releases the lock without changing the target.
    pub fn release(self) -> io::Result<()> {
        todo!()
    }

    /// Touches the lock so others don't take it as stale during long work.
    pub fn touch(&self) -> io::Result<()> {
        todo!()
    }
}
