//! The `subscriptions` file (Dovecot 2.3.19.1 src/lib-storage/list/subscription-file.c and
//! mailbox-list-subscriptions.c).
//!
//! # Format
//! - Version 2 (what Dovecot 2.3 writes): the exact header `V\t2\n\n`, then one entry per line
//!   (`\n`; a `\r` before it is dropped, a last line without `\n` still counts). Each entry is a
//!   mailbox name split at the hierarchy separator, every component tab-escaped
//!   (src/lib/strescape.c str_append_tabescaped: `\x01` → `\x01 1`, TAB → `\x01 t`, CR →
//!   `\x01 r`, LF → `\x01 n`; when reading also `\x01 0` → NUL and `\x01 X` → `X`), components
//!   joined with TAB.
//! - Version 1 (no header): one name per line, written with the mailbox list's own hierarchy
//!   separator and no escaping.
//!
//! # Names in the file are storage names
//! Dovecot writes `box->name`, the *storage* name, not the IMAP/UTF-8 virtual name
//! (index-storage.c index_storage_set_subscribed), and reads entries back as storage names
//! (mailbox_list_get_vname in mailbox-list-subscriptions.c). With the 2.3 default
//! (`mailbox_list_utf8 = no`, no escape char) a storage name is modified UTF-7, so `台北/日本語`
//! is stored as `&U,BTFw-\t&ZeVnLIqe-`. Observed with doveadm 2.3.19.1 (fixture
//! `tests/data/dovecot-2.3.19.1-subscriptions`). A subscription need not name an existing
//! mailbox.
//!
//! This module works on storage names (the `read`/`write`/`parse` functions); [`to_vname`] and
//! [`from_vname`] convert whole names with [`crate::mutf7`] (the separator is printable ASCII
//! and passes through unchanged).
//!
//! # Reading like Dovecot
//! Empty entries are skipped and one trailing hierarchy separator is removed (Dovecot's
//! mailbox_list_subscription_fill_one). A NUL (raw or escaped) ends the name, as it does in
//! Dovecot's C strings. Entries that are not UTF-8 are skipped (Dovecot drops entries whose
//! name is not valid UTF-8). The `separator` to pass is the mailbox list's hierarchy separator
//! (`.` for Maildir++, `/` for LAYOUT=fs): version 1 files are written with it, and returned
//! names are joined with it.
//!
//! # Writing like Dovecot
//! Under the `subscriptions.lock` dotlock ([`DotLockOptions::subscriptions`]: O_EXCL, 120 s
//! timeout, stale after 30 s, no pid), the new contents are written into the lock file,
//! fsynced and renamed over `subscriptions` (file_dotlock_replace with VERIFY_OWNER). The file
//! mode is the directory's `& 0666 | 0600` (mailbox-list.c file_create_mode). `INBOX` is
//! written in upper case whatever case it is given in.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::atomic::{parent_dir, with_path};
use crate::dotlock::{DotLock, DotLockOptions};
use crate::mutf7;

/// The version 2 header (subscription-file.c version2_header).
pub const VERSION2_HEADER: &[u8] = b"V\t2\n\n";

const ESCAPE: u8 = 0x01;

/// Splits `bytes` into Dovecot's lines: `\n`-terminated, `\r\n` counts as `\n`, a last line
/// without `\n` is returned too.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut iter = body.split(|&b| b == b'\n');
    if bytes.is_empty() {
        // No lines at all (split would yield one empty slice).
        iter.next();
    }
    iter.map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

/// str_append_tabunescaped (src/lib/strescape.c).
fn tab_unescape(src: &[u8], dest: &mut Vec<u8>) {
    let mut i = 0;
    while i < src.len() {
        if src[i] != ESCAPE {
            dest.push(src[i]);
            i += 1;
            continue;
        }
        i += 1;
        if let Some(&c) = src.get(i) {
            dest.push(match c {
                b'0' => 0,
                b'1' => ESCAPE,
                b't' => b'\t',
                b'r' => b'\r',
                b'n' => b'\n',
                other => other,
            });
            i += 1;
        }
    }
}

/// str_append_tabescaped_n (src/lib/strescape.c). (A NUL cannot occur in a Dovecot name; it
/// is escaped so the file stays line-structured, and ends the name when read back.)
fn tab_escape(src: &[u8], dest: &mut Vec<u8>) {
    for &c in src {
        match c {
            0 => dest.extend_from_slice(b"\x010"),
            ESCAPE => dest.extend_from_slice(b"\x011"),
            b'\t' => dest.extend_from_slice(b"\x01t"),
            b'\r' => dest.extend_from_slice(b"\x01r"),
            b'\n' => dest.extend_from_slice(b"\x01n"),
            _ => dest.push(c),
        }
    }
}

/// True when the file starts with the version 2 header.
pub fn is_version2(bytes: &[u8]) -> bool {
    bytes.starts_with(VERSION2_HEADER)
}

/// The storage name one line stands for, as bytes (before the UTF-8 check), or None for an
/// empty entry.
fn entry_name(line: &[u8], version2: bool, separator: char) -> Option<Vec<u8>> {
    let mut sep_buf = [0u8; 4];
    let sep = separator.encode_utf8(&mut sep_buf).as_bytes();
    let mut name = Vec::with_capacity(line.len());
    if version2 {
        // subsfile_list_unescaped: each TAB becomes the separator.
        for (index, component) in line.split(|&b| b == b'\t').enumerate() {
            if index > 0 {
                name.extend_from_slice(sep);
            }
            tab_unescape(component, &mut name);
        }
    } else {
        name.extend_from_slice(line);
    }
    // A NUL ends the C string Dovecot works with.
    if let Some(nul) = name.iter().position(|&b| b == 0) {
        name.truncate(nul);
    }
    // mailbox_list_subscription_fill_one: drop one trailing separator.
    if name.ends_with(sep) {
        name.truncate(name.len() - sep.len());
    }
    (!name.is_empty()).then_some(name)
}

/// Parses a subscriptions file: the subscribed storage names, joined with `separator`, in
/// file order. Never fails: Dovecot skips entries it cannot use (see the module doc).
pub fn parse(bytes: &[u8], separator: char) -> Vec<String> {
    let version2 = is_version2(bytes);
    let body = if version2 {
        &bytes[VERSION2_HEADER.len()..]
    } else {
        bytes
    };
    lines(body)
        .filter_map(|line| entry_name(line, version2, separator))
        .filter_map(|name| String::from_utf8(name).ok())
        .collect()
}

/// Dovecot writes INBOX in upper case whatever case it was given in (subsfile_set_subscribed).
fn canonical_name(name: &str) -> &str {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        name
    }
}

/// The version 2 line (without `\n`) for storage name `name` (subsfile_set_subscribed).
fn escaped_entry(name: &str, separator: char) -> Vec<u8> {
    let mut line = Vec::with_capacity(name.len());
    for (index, component) in canonical_name(name).split(separator).enumerate() {
        if index > 0 {
            line.push(b'\t');
        }
        tab_escape(component.as_bytes(), &mut line);
    }
    line
}

/// Serializes storage names (joined with `separator`) as a version 2 file. Trailing
/// separators are removed (they name the same mailbox), names left empty are skipped (Dovecot
/// drops them when reading) and duplicates are written once.
pub fn serialize(separator: char, names: &[String]) -> Vec<u8> {
    let mut out = VERSION2_HEADER.to_vec();
    let mut seen: Vec<Vec<u8>> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim_end_matches(separator);
        if name.is_empty() {
            continue;
        }
        let line = escaped_entry(name, separator);
        if seen.contains(&line) {
            continue;
        }
        out.extend_from_slice(&line);
        out.push(b'\n');
        seen.push(line);
    }
    out
}

/// Reads subscribed storage names (joined with `separator`, the mailbox list's hierarchy
/// separator). A missing file is empty.
pub fn read(path: &Path, separator: char) -> io::Result<Vec<String>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(parse(&bytes, separator)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(with_path(e, path)),
    }
}

/// Lock options for `path`'s dotlock with the mode Dovecot gives the new file.
fn lock_options(path: &Path) -> io::Result<DotLockOptions> {
    let dir = parent_dir(path);
    let dir_mode = std::fs::metadata(dir)
        .map_err(|e| with_path(e, dir))?
        .permissions()
        .mode();
    Ok(DotLockOptions {
        mode: (dir_mode & 0o666) | 0o600,
        ..DotLockOptions::subscriptions()
    })
}

/// Writes `contents` through the dotlock of `path` and renames it over `path`.
fn replace_locked(mut lock: DotLock, contents: &[u8]) -> io::Result<()> {
    let lock_path = lock.lock_path().to_path_buf();
    lock.file()
        .write_all(contents)
        .map_err(|e| with_path(e, &lock_path))?;
    lock.replace()
}

/// Writes `names` (storage names joined with `separator`) as a version 2 file, under the
/// file's dotlock, by temp + rename. The directory must exist.
pub fn write(path: &Path, separator: char, names: &[String]) -> io::Result<()> {
    let lock = DotLock::acquire(path, &lock_options(path)?)?;
    replace_locked(lock, &serialize(separator, names))
}

/// Subscribes or unsubscribes one storage name exactly as Dovecot's subsfile_set_subscribed
/// does: under the dotlock, every other line of the existing file is kept byte for byte, the
/// file keeps its version (1 or 2), the entry is appended at the end or all its lines are
/// removed. Returns whether the file changed (when not, it is left untouched).
pub fn set_subscribed(
    path: &Path,
    separator: char,
    name: &str,
    subscribed: bool,
) -> io::Result<bool> {
    let lock = DotLock::acquire(path, &lock_options(path)?)?;
    let existing = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(with_path(e, path)),
    };
    let version2 = existing.as_deref().is_none_or(is_version2);
    let entry = if version2 && !name.is_empty() {
        escaped_entry(name, separator)
    } else {
        canonical_name(name).as_bytes().to_vec()
    };
    let mut out = Vec::new();
    if version2 {
        out.extend_from_slice(VERSION2_HEADER);
    }
    let mut found = false;
    let mut changed = false;
    if let Some(bytes) = &existing {
        let body = if version2 {
            &bytes[VERSION2_HEADER.len()..]
        } else {
            &bytes[..]
        };
        for line in lines(body) {
            if line == entry.as_slice() {
                found = true;
                if !subscribed {
                    changed = true;
                    continue;
                }
            }
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    if subscribed && !found {
        out.extend_from_slice(&entry);
        out.push(b'\n');
        changed = true;
    }
    if !changed {
        lock.release()?;
        return Ok(false);
    }
    replace_locked(lock, &out)?;
    Ok(true)
}

/// The virtual (UTF-8) name of a modified UTF-7 storage name, or None if it is not valid
/// modified UTF-7 (Dovecot then cannot show it either).
pub fn to_vname(storage_name: &str) -> Option<String> {
    mutf7::decode(storage_name.as_bytes()).ok()
}

/// The modified UTF-7 storage name of a virtual name.
pub fn from_vname(vname: &str) -> String {
    mutf7::encode(vname)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_version2_with_tab_separators() {
        let file = b"V\t2\n\nINBOX\nArchive\t2024\n&U,BTFw-\t&ZeVnLIqe-\n";
        assert_eq!(
            parse(file, '.'),
            strings(&["INBOX", "Archive.2024", "&U,BTFw-.&ZeVnLIqe-"])
        );
        assert_eq!(
            parse(file, '/'),
            strings(&["INBOX", "Archive/2024", "&U,BTFw-/&ZeVnLIqe-"])
        );
    }

    #[test]
    fn parses_version1_with_separator_characters() {
        let file = b"INBOX\nArchive.2024\nTrash\n";
        assert_eq!(
            parse(file, '.'),
            strings(&["INBOX", "Archive.2024", "Trash"])
        );
        // No header: tabs are not separators and escapes are not decoded.
        assert_eq!(parse(b"a\tb\n\x01t\n", '.'), strings(&["a\tb", "\x01t"]));
        // An incomplete header is just a v1 line.
        assert_eq!(parse(b"V\t2\n", '.'), strings(&["V\t2"]));
    }

    #[test]
    fn applies_dovecot_line_rules() {
        // CRLF, missing final LF, empty lines, trailing separator, NUL.
        let file = b"V\t2\n\nA\r\n\nB\t\nC\x00D\nE\tF\x010G\nLast";
        assert_eq!(parse(file, '/'), strings(&["A", "B", "C", "E/F", "Last"]));
        // Invalid UTF-8 entries are skipped.
        assert_eq!(parse(b"V\t2\n\n\xff\nok\n", '/'), strings(&["ok"]));
        assert!(parse(b"", '/').is_empty());
        assert!(parse(b"V\t2\n\n", '/').is_empty());
    }

    #[test]
    fn tab_escapes_round_trip() {
        let names = strings(&["a\tb/c\rd", "x\ny\x01z", "plain/name"]);
        let bytes = serialize('/', &names);
        assert_eq!(
            bytes,
            b"V\t2\n\na\x01tb\tc\x01rd\nx\x01ny\x011z\nplain\tname\n".to_vec()
        );
        assert_eq!(parse(&bytes, '/'), names);
        // Unknown escapes decode to the escaped character, a trailing escape is dropped.
        assert_eq!(parse(b"V\t2\n\na\x01xb\x01\n", '/'), strings(&["axb"]));
    }

    #[test]
    fn serialize_normalizes_inbox_and_drops_empty_and_duplicates() {
        let bytes = serialize(
            '.',
            &strings(&["inbox", "", "A.B", "A.B", "InBoX", "A.B..", "."]),
        );
        assert_eq!(bytes, b"V\t2\n\nINBOX\nA\tB\n".to_vec());
        // NUL is escaped and ends the name when read back.
        let bytes = serialize('.', &strings(&["a\0b"]));
        assert_eq!(bytes, b"V\t2\n\na\x010b\n".to_vec());
        assert_eq!(parse(&bytes, '.'), strings(&["a"]));
    }

    #[test]
    fn write_then_read_round_trip_and_lock_is_gone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        let path = dir.path().join("subscriptions");
        assert!(read(&path, '.').unwrap().is_empty());
        let names = strings(&[
            "INBOX",
            "Entw&APw-rfe",
            "Archive.2024",
            "&U,BTFw-.&ZeVnLIqe-",
        ]);
        write(&path, '.', &names).unwrap();
        assert_eq!(read(&path, '.').unwrap(), names);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"V\t2\n\nINBOX\nEntw&APw-rfe\nArchive\t2024\n&U,BTFw-\t&ZeVnLIqe-\n".to_vec()
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // 0750 & 0666 | 0600, minus whatever the umask removes from the group bits.
        assert_eq!(mode & 0o700, 0o600);
        assert_eq!(mode & 0o007, 0);
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn write_waits_for_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subscriptions");
        let held = DotLock::acquire(
            &path,
            &DotLockOptions {
                timeout: std::time::Duration::from_secs(1),
                ..DotLockOptions::subscriptions()
            },
        )
        .unwrap();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || write(&path, '/', &strings(&["A"])))
        };
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(!path.exists(), "wrote while the lock was held");
        held.release().unwrap();
        writer.join().unwrap().unwrap();
        assert_eq!(read(&path, '/').unwrap(), strings(&["A"]));
    }

    #[test]
    fn set_subscribed_keeps_other_lines_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subscriptions");
        // Creates a v2 file.
        assert!(set_subscribed(&path, '.', "A.B", true).unwrap());
        assert!(!set_subscribed(&path, '.', "A.B", true).unwrap());
        assert!(set_subscribed(&path, '.', "inbox", true).unwrap());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"V\t2\n\nA\tB\nINBOX\n".to_vec()
        );
        assert!(set_subscribed(&path, '.', "A.B", false).unwrap());
        assert!(!set_subscribed(&path, '.', "Never", false).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"V\t2\n\nINBOX\n".to_vec());

        // A v1 file stays v1, with lines we can't decode kept byte for byte.
        std::fs::write(&path, b"Old.Name\n\xffodd\n").unwrap();
        assert!(set_subscribed(&path, '.', "New.One", true).unwrap());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"Old.Name\n\xffodd\nNew.One\n".to_vec()
        );
        assert!(set_subscribed(&path, '.', "Old.Name", false).unwrap());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"\xffodd\nNew.One\n".to_vec()
        );
        assert!(!dir.path().join("subscriptions.lock").exists());
    }

    #[test]
    fn vname_conversion() {
        assert_eq!(from_vname("台北/日本語"), "&U,BTFw-/&ZeVnLIqe-");
        assert_eq!(to_vname("&U,BTFw-/&ZeVnLIqe-").unwrap(), "台北/日本語");
        assert_eq!(to_vname("bad&"), None);
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodir").join("subscriptions");
        let err = write(&path, '/', &strings(&["A"])).unwrap_err();
        assert!(err.to_string().contains("nodir"), "{err}");
        assert!(read(&path, '/').unwrap().is_empty());
    }
}
