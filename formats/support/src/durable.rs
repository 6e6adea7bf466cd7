//! Making a batch of freshly written files durable before they become visible.
//!
//! A save writes its file to a temporary name, makes it durable, then renames or links it
//! into place, so a crash never shows a message whose bytes aren't on disk. Dovecot fsyncs
//! each file as it finishes writing it (maildir-save.c, sdbox-save.c with
//! `mail_fsync=optimized`). A transaction that saves many messages gives the same guarantee
//! when it writes them all first and makes them durable together, before the first one is
//! renamed into place: with a few files, one `fsync` each; with many, one `syncfs` of the
//! file system, which writes back every dirty file at once — one journal commit instead of
//! one per message — and reports a writeback error of any of them (Linux ≥ 5.8).

use std::fs::File;
use std::io;
use std::path::Path;

/// Up to this many files are fsynced one by one; more take one `syncfs`.
pub const SYNCFS_THRESHOLD: usize = 16;

/// Makes the data and metadata of every file in `paths` durable (they must all be on one
/// file system). Errors name the file.
pub fn sync_files<P: AsRef<Path>>(paths: &[P]) -> Result<(), (std::path::PathBuf, io::Error)> {
    fn with_path(p: &Path) -> impl FnOnce(io::Error) -> (std::path::PathBuf, io::Error) + '_ {
        move |e| (p.to_path_buf(), e)
    }
    if paths.len() > SYNCFS_THRESHOLD {
        let first = paths[0].as_ref();
        let f = File::open(first).map_err(with_path(first))?;
        return rustix::fs::syncfs(&f).map_err(|e| (first.to_path_buf(), e.into()));
    }
    for p in paths {
        let p = p.as_ref();
        File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(with_path(p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_and_many_files_sync_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..SYNCFS_THRESHOLD + 3)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, format!("message {i}")).unwrap();
                p
            })
            .collect();
        sync_files(&paths[..2]).unwrap();
        sync_files(&paths).unwrap();
        let missing = dir.path().join("gone");
        let (path, err) = sync_files(&[&missing]).unwrap_err();
        assert_eq!(path, missing);
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
