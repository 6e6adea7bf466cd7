//! Crash-safe file replacement: write a temp file beside the target, fsync it, rename it
//! over the target, fsync the directory.

use std::io;
use std::path::Path;

/// Atomically replaces `path` with `contents`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let _ = (path, contents);
    todo!()
}

/// fsyncs a directory so a rename or create inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    let _ = dir;
    todo!()
}
