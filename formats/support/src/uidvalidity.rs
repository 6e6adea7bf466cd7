//! New UIDVALIDITY values, allocated exactly as Dovecot's mailbox_uidvalidity_next
//! (src/lib-storage/mailbox-uidvalidity.c, 2.3.19.1) so the two never hand out the same one:
//!
//! - `<dir>/dovecot-uidvalidity` holds the **last allocated** value as 8 lowercase hex digits;
//! - an empty marker file `dovecot-uidvalidity.<8 hex>` carries the same value; allocating
//!   means renaming the marker from `.<v>` to `.<v+1>` (atomic: only one process wins a
//!   given rename), then writing `v+1` into the main file;
//! - if the main file is missing or broken, the directory is rescanned for markers and the
//!   highest one is used (a lower duplicate marker is deleted);
//! - with no marker at all, the value is the current UNIX time (or last fallback + 1) and a
//!   new marker is created.
//!
//! Shared by every format keeping `dovecot-uidvalidity` in its root (Maildir, sdbox, mdbox).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub const FILE_NAME: &str = "dovecot-uidvalidity";
const RETRY_COUNT: usize = 10;

static FALLBACK: Mutex<u32> = Mutex::new(0);

/// mailbox_uidvalidity_next_fallback: the current time, or one more than the last fallback.
fn fallback() -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1);
    let mut last = FALLBACK.lock().unwrap_or_else(|e| e.into_inner());
    *last = if *last < now {
        now
    } else {
        last.wrapping_add(1)
    };
    if *last == 0 {
        *last = 1;
    }
    *last
}

fn marker(dir: &Path, v: u32) -> std::path::PathBuf {
    dir.join(format!("{FILE_NAME}.{v:08x}"))
}

fn parse_hex(s: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(s).ok()?;
    let s = s.trim_end_matches(['\n', '\0']);
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    u32::from_str_radix(s, 16).ok().filter(|&v| v != 0)
}

/// Renames the marker `.<cur>` to `.<cur+1>`, trying the next values on ENOENT (another
/// process got there first). Returns the value now owned.
fn bump_marker(dir: &Path, mut cur: u32) -> io::Result<u32> {
    let mut last_err = None;
    for _ in 0..RETRY_COUNT {
        let src = marker(dir, cur);
        cur = cur.wrapping_add(1);
        if cur == 0 {
            cur = 1;
        }
        match fs::rename(&src, marker(dir, cur)) {
            Ok(()) => return Ok(cur),
            Err(e) if e.kind() == io::ErrorKind::NotFound => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("uidvalidity marker not found")))
}

fn write_value(path: &Path, v: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // pwrite at offset 0 of exactly 8 bytes, as Dovecot does (the file is always 8 bytes).
    f.write_all(format!("{v:08x}").as_bytes())
}

fn rescan(dir: &Path, path: &Path) -> io::Result<u32> {
    if !dir.exists() {
        fs::create_dir_all(dir)?;
    }
    let prefix = format!("{FILE_NAME}.");
    let (mut min, mut max) = (u32::MAX, 0u32);
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        if let Some(hex) = name.strip_prefix(prefix.as_bytes()) {
            if let Some(v) = parse_hex(hex) {
                min = min.min(v);
                max = max.max(v);
            }
        }
    }
    if max == 0 {
        let mut v = fallback();
        for _ in 0..RETRY_COUNT {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(marker(dir, v))
            {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => v = fallback(),
                Err(e) => return Err(e),
            }
        }
        write_value(path, v)?;
        return Ok(v);
    }
    if min != max {
        let _ = fs::remove_file(marker(dir, min));
    }
    let v = bump_marker(dir, max)?;
    write_value(path, v)?;
    Ok(v)
}

/// Allocates the next UIDVALIDITY from `<dir>/dovecot-uidvalidity` (the CONTROL root, or the
/// mail root). Errors only when the directory can't be used at all.
pub fn next(dir: &Path) -> io::Result<u32> {
    let path = dir.join(FILE_NAME);
    let mut buf = Vec::new();
    let current = match fs::File::open(&path) {
        Ok(mut f) => {
            Read::by_ref(&mut f).take(8).read_to_end(&mut buf)?;
            parse_hex(&buf)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some(cur) = current else {
        return rescan(dir, &path);
    };
    match bump_marker(dir, cur) {
        Ok(v) => {
            write_value(&path, v)?;
            Ok(v)
        }
        Err(_) => rescan(dir, &path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_from_dovecot_files() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(FILE_NAME), "6b0c7a02").unwrap();
        fs::write(d.path().join("dovecot-uidvalidity.6b0c7a02"), "").unwrap();
        assert_eq!(next(d.path()).unwrap(), 0x6b0c7a03);
        assert_eq!(fs::read(d.path().join(FILE_NAME)).unwrap(), b"6b0c7a03");
        assert!(d.path().join("dovecot-uidvalidity.6b0c7a03").exists());
        assert!(!d.path().join("dovecot-uidvalidity.6b0c7a02").exists());
        assert_eq!(next(d.path()).unwrap(), 0x6b0c7a04);
    }

    #[test]
    fn starts_from_time_and_never_repeats() {
        let d = tempfile::tempdir().unwrap();
        let a = next(d.path()).unwrap();
        let b = next(d.path()).unwrap();
        let c = next(d.path()).unwrap();
        assert!(a > 1_600_000_000);
        assert_eq!((b, c), (a + 1, a + 2));
    }

    #[test]
    fn rescans_when_main_file_is_lost_or_broken() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("dovecot-uidvalidity.00000010"), "").unwrap();
        fs::write(d.path().join("dovecot-uidvalidity.00000020"), "").unwrap();
        assert_eq!(next(d.path()).unwrap(), 0x21);
        assert!(!d.path().join("dovecot-uidvalidity.00000010").exists());
        fs::write(d.path().join(FILE_NAME), "garbage!").unwrap();
        assert_eq!(next(d.path()).unwrap(), 0x22);
    }
}
