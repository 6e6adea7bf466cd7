//! Crash-safe file replacement: write a temp file beside the target, fsync it, rename it
//! over the target, fsync the directory.
//!
//! Invariant: at every instant `path` is either its old complete contents or the new complete
//! contents; a crash can at worst leave a `.<name>.tmp.<pid>.<n>` file behind in the same
//! directory (never a half-written target).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates a new, uniquely named temp file beside `path` (`.<name>.tmp.<pid>.<n>`), opened
/// for writing with `create_new`, mode 0600 (before umask).
pub(crate) fn create_temp_beside(path: &Path) -> io::Result<(PathBuf, File)> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let dir = parent_dir(path);
    loop {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(
            ".tmp.{}.{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temp_path = dir.join(temp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path)
        {
            Ok(file) => return Ok((temp_path, file)),
            // A leftover from a crashed process with a recycled pid: try the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(with_path(e, &temp_path)),
        }
    }
}

/// Adds the path to an io::Error's message, keeping its kind.
pub(crate) fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// Atomically replaces `path` with `contents`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let (temp_path, mut file) = create_temp_beside(path)?;
    let result = (|| {
        file.write_all(contents)
            .map_err(|e| with_path(e, &temp_path))?;
        file.sync_all().map_err(|e| with_path(e, &temp_path))?;
        drop(file);
        std::fs::rename(&temp_path, path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("rename {} -> {}: {e}", temp_path.display(), path.display()),
            )
        })
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp_path);
        return Err(e);
    }
    fsync_dir(parent_dir(path))
}

/// fsyncs a directory so a rename or create inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    let handle = File::open(dir).map_err(|e| with_path(e, dir))?;
    handle.sync_all().map_err(|e| with_path(e, dir))
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`, and `from` stays): one
/// `renameat2(RENAME_NOREPLACE)`. On a file system without it, a hard link and an unlink of
/// `from`, which never replace `to` either (a crash in between leaves both names).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::dir_entries;

    #[test]
    fn rename_noreplace_moves_and_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        std::fs::write(&a, b"one").unwrap();
        std::fs::write(&b, b"two").unwrap();
        let e = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&a).unwrap(), b"one");
        assert_eq!(std::fs::read(&b).unwrap(), b"two");
        rename_noreplace(&a, &c).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(&c).unwrap(), b"one");
        let missing = rename_noreplace(&a, &dir.path().join("d")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn creates_and_replaces_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        write_atomic(&target, b"one").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        write_atomic(&target, b"second contents").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"second contents");
        assert_eq!(dir_entries(dir.path()), vec!["file".to_string()]);
    }

    #[test]
    fn replaces_by_rename_not_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        std::fs::write(&target, b"old").unwrap();
        let old_ino = std::fs::metadata(&target).unwrap().ino();
        // A reader holding the old file keeps seeing the complete old contents.
        let reader = File::open(&target).unwrap();
        write_atomic(&target, b"new").unwrap();
        assert_ne!(std::fs::metadata(&target).unwrap().ino(), old_ino);
        assert_eq!(std::io::read_to_string(reader).unwrap(), "old");
    }

    #[test]
    fn error_names_path_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails after the temp was written.
        let target = dir.path().join("sub");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        let err = write_atomic(&target, b"data").unwrap_err();
        assert!(err.to_string().contains("sub"), "{err}");
        assert_eq!(dir_entries(dir.path()), vec!["sub".to_string()]);
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("nodir").join("file");
        let err = write_atomic(&target, b"data").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nodir"), "{err}");
        assert!(fsync_dir(&dir.path().join("nodir")).is_err());
        fsync_dir(dir.path()).unwrap();
    }
}
