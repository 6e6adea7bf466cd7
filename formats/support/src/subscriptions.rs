//! The `subscriptions` file (src/lib-storage/list/subscription-file.c): `V\t2\n\n`, then one
//! name per line with the hierarchy separator written as TAB. Version 1 files (no header) use
//! the separator character itself.

use std::io;
use std::path::Path;

/// Reads subscribed names (virtual names joined with `separator`). A missing file is empty.
pub fn read(path: &Path, separator: char) -> io::Result<Vec<String>> {
    let _ = (path, separator);
    todo!()
}

/// Writes `names` (joined with `separator`) as a version 2 file, under the file's dotlock,
/// by temp + rename.
pub fn write(path: &Path, separator: char, names: &[String]) -> io::Result<()> {
    let _ = (path, separator, names);
    todo!()
}
