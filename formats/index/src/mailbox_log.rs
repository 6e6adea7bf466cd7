//! The `dovecot.mailbox.log` files of a mailbox list (the index root): appending a record
//! and reading back both files, as src/lib-index/mailbox-log.c does, plus the name hash
//! Dovecot logs for directories, renames and subscriptions (mailbox_name_get_sha128,
//! src/lib-storage/mailbox-list.c). Record encoding: [`crate::format::mailbox_log`].
//!
//! Added for the storage backends (delete/rename/subscribe records, `Store::deleted_mailboxes`),
//! purely additively.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::format::mailbox_log::{MailboxLogRecord, MailboxLogType, RECORD_SIZE};

/// MAILBOX_LOG_FILE_NAME (mailbox-log.h).
pub const FILE_NAME: &str = "dovecot.mailbox.log";
/// MAILBOX_LOG_ROTATE_SIZE: after an append leaves the log at this size or more it is
/// renamed to `.2` (replacing an older `.2`).
pub const ROTATE_SIZE: u64 = 4096;

/// `<index root>/dovecot.mailbox.log`.
pub fn path_in(index_root: &Path) -> PathBuf {
    index_root.join(FILE_NAME)
}

/// mailbox_name_get_sha128: the first 16 bytes of the SHA-1 of a virtual mailbox name (as
/// the namespace shows it, UTF-8 with the namespace separator). Logged for DELETE_DIR,
/// RENAME (the new name), SUBSCRIBE and UNSUBSCRIBE.
pub fn name_guid(vname: &str) -> [u8; 16] {
    let digest = mailsupport::sha1::sha1(vname.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// The time a store stamps its mailbox log records with: now, or a time set for the
/// changes being applied (Dovecot's mailbox_list_set_changelog_timestamp: dsync stamps a
/// change it copies from the peer with the peer's time, so the two logs stay comparable).
/// Shared by a store's clones.
#[derive(Clone, Debug, Default)]
pub struct ChangeClock(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl ChangeClock {
    /// `Some(t)`: stamp records with `t` (clamped to the record's 32 bits); `None`: now.
    pub fn set(&self, at: Option<i64>) {
        let v = at.map_or(0, |t| t.clamp(1, i64::from(u32::MAX)));
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    /// The timestamp for the next record.
    pub fn time(&self) -> u32 {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            0 => now(),
            t => t as u32,
        }
    }
}

/// The current UNIX time as a record timestamp (Dovecot's ioloop_time).
pub fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// mailbox_log_append: appends one record to `<index_root>/dovecot.mailbox.log` with one
/// O_APPEND write (Dovecot takes no lock: every record is 24 bytes and appends are atomic),
/// creating the file with the index root's file mode (its directory mode without x bits,
/// as mailbox_list_get_root_permissions gives it), then rotates it to `.2` once it has
/// reached [`ROTATE_SIZE`] (mailbox_log_rotate_if_needed). Dovecot skips an all-zero GUID
/// (mailbox_list_add_change); so does this.
pub fn append(
    index_root: &Path,
    kind: MailboxLogType,
    guid: [u8; 16],
    timestamp: u32,
) -> io::Result<()> {
    if guid == [0; 16] {
        return Ok(());
    }
    let path = path_in(index_root);
    let mode = fs::metadata(index_root)
        .map(|m| m.permissions().mode() & 0o666)
        .unwrap_or(0o600)
        | 0o600;
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .open(&path)?;
    let rec = MailboxLogRecord {
        offset: 0,
        kind,
        mailbox_guid: guid,
        timestamp,
    };
    f.write_all(&rec.encode())?;
    if f.metadata()?.len() >= ROTATE_SIZE {
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(".2");
        match fs::rename(&path, PathBuf::from(rotated)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Every record of `<index_root>/dovecot.mailbox.log.2` then `dovecot.mailbox.log`, the
/// order mailbox_log_iter_next reads them. Missing files are empty. Dovecot's iterator
/// stops a file at a record of unknown type (and unlinks it); here the records before it
/// are kept, the rest of that file is skipped and reported in the returned warnings, and
/// nothing is deleted. A trailing partial record is ignored, as Dovecot reads whole
/// records only.
pub fn read(index_root: &Path) -> io::Result<(Vec<MailboxLogRecord>, Vec<String>)> {
    let main = path_in(index_root);
    let mut rotated = main.as_os_str().to_owned();
    rotated.push(".2");
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for path in [PathBuf::from(rotated), main] {
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for (i, c) in data.chunks_exact(RECORD_SIZE).enumerate() {
            let offset = (i * RECORD_SIZE) as u64;
            // mailbox_log_iter_next accepts DELETE_MAILBOX..UNSUBSCRIBE (1..=5) only.
            let kind = match MailboxLogType::from_u8(c[0]) {
                Some(k) if (1..=5).contains(&c[0]) => k,
                _ => {
                    warnings.push(format!(
                        "{}: Corrupted mailbox log at offset {offset}: type={}",
                        path.display(),
                        c[0]
                    ));
                    break;
                }
            };
            let mut guid = [0u8; 16];
            guid.copy_from_slice(&c[4..20]);
            out.push(MailboxLogRecord {
                offset,
                kind,
                mailbox_guid: guid,
                timestamp: u32::from_be_bytes([c[20], c[21], c[22], c[23]]),
            });
        }
    }
    Ok((out, warnings))
}

/// (GUID, UNIX time) pairs, and warnings about records that couldn't be read.
pub type Deleted = (Vec<([u8; 16], i64)>, Vec<String>);

/// The DELETE_MAILBOX records of [`read`] as (mailbox GUID, UNIX time), oldest file first;
/// a GUID deleted more than once is listed once, with its latest time.
pub fn deleted_mailboxes(index_root: &Path) -> io::Result<Deleted> {
    let (records, warnings) = read(index_root)?;
    let mut out: Vec<([u8; 16], i64)> = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.kind == MailboxLogType::DeleteMailbox)
    {
        let t = i64::from(r.timestamp);
        match out.iter_mut().find(|(g, _)| *g == r.mailbox_guid) {
            Some(e) => e.1 = e.1.max(t),
            None => out.push((r.mailbox_guid, t)),
        }
    }
    Ok((out, warnings))
}

/// The last RENAME to the name and SUBSCRIBE or UNSUBSCRIBE of it for each of `vnames`,
/// matched by [`name_guid`] as dsync_mailbox_tree_find_sha does; and warnings about
/// records that couldn't be read.
pub type NameTimes = (Vec<mailstore::NameChangeTimes>, Vec<String>);

/// The RENAME and SUBSCRIBE/UNSUBSCRIBE times of these virtual names (see [`NameTimes`]).
pub fn name_change_times(index_root: &Path, vnames: &[String]) -> io::Result<NameTimes> {
    let (records, warnings) = read(index_root)?;
    let mut times = vec![mailstore::NameChangeTimes::default(); vnames.len()];
    if records.is_empty() {
        return Ok((times, warnings));
    }
    let hashes: Vec<[u8; 16]> = vnames.iter().map(|n| name_guid(n)).collect();
    for r in &records {
        let t = i64::from(r.timestamp);
        for (i, h) in hashes.iter().enumerate() {
            if *h != r.mailbox_guid {
                continue;
            }
            let entry = &mut times[i];
            match r.kind {
                MailboxLogType::Rename => entry.renamed = entry.renamed.max(t),
                MailboxLogType::Subscribe | MailboxLogType::Unsubscribe => {
                    entry.subscription_changed = entry.subscription_changed.max(t)
                }
                _ => {}
            }
        }
    }
    Ok((times, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_guid_is_sha1_prefix_as_dovecot_logs_it() {
        // From a dovecot.mailbox.log Dovecot 2.3.19.1 wrote: `rename Baz`, `delete-dir Foo`.
        assert_eq!(
            name_guid("Baz"),
            [
                0xe4, 0xf0, 0xf7, 0x89, 0x7e, 0x4c, 0x87, 0xc2, 0x01, 0xd1, 0xe2, 0x72, 0x27, 0x66,
                0x10, 0xc5
            ]
        );
        assert_eq!(name_guid("Foo")[..4], [0x20, 0x1a, 0x6b, 0x30]);
    }

    #[test]
    fn append_read_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let g = |i: u8| [i; 16];
        append(dir.path(), MailboxLogType::DeleteMailbox, g(1), 100).unwrap();
        append(dir.path(), MailboxLogType::Rename, g(2), 101).unwrap();
        append(dir.path(), MailboxLogType::DeleteMailbox, [0; 16], 102).unwrap();
        let (recs, warns) = read(dir.path()).unwrap();
        assert!(warns.is_empty());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].kind, MailboxLogType::Rename);
        assert_eq!(recs[1].timestamp, 101);
        // 4096 / 24 = 170.67: the 171st record rotates the log to .2
        for i in 0..168u32 {
            append(dir.path(), MailboxLogType::Subscribe, g(3), i).unwrap();
        }
        assert!(!dir.path().join("dovecot.mailbox.log.2").exists());
        append(dir.path(), MailboxLogType::DeleteMailbox, g(4), 500).unwrap();
        assert!(dir.path().join("dovecot.mailbox.log.2").exists());
        assert!(!dir.path().join(FILE_NAME).exists());
        append(dir.path(), MailboxLogType::DeleteMailbox, g(1), 600).unwrap();
        let (deleted, _) = deleted_mailboxes(dir.path()).unwrap();
        assert_eq!(deleted, vec![(g(1), 600), (g(4), 500)]);
    }

    #[test]
    fn unknown_type_stops_that_file_only() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), MailboxLogType::DeleteMailbox, [1; 16], 1).unwrap();
        let mut data = fs::read(path_in(dir.path())).unwrap();
        data.extend_from_slice(&[6; 24]);
        let first = data[..24].to_vec();
        data.extend_from_slice(&first);
        data.extend_from_slice(&[1; 5]);
        fs::write(path_in(dir.path()), &data).unwrap();
        let (recs, warns) = read(dir.path()).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(warns.len(), 1);
        assert!(path_in(dir.path()).exists());
    }

    #[test]
    fn name_change_times_take_the_latest_rename_and_subscription_change_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["Foo".to_string(), "Bar/Baz".to_string(), "Quux".to_string()];
        append(dir.path(), MailboxLogType::Rename, name_guid("Foo"), 100).unwrap();
        append(dir.path(), MailboxLogType::Rename, name_guid("Foo"), 90).unwrap();
        append(dir.path(), MailboxLogType::Subscribe, name_guid("Foo"), 120).unwrap();
        append(
            dir.path(),
            MailboxLogType::Unsubscribe,
            name_guid("Bar/Baz"),
            130,
        )
        .unwrap();
        append(
            dir.path(),
            MailboxLogType::DeleteMailbox,
            name_guid("Quux"),
            140,
        )
        .unwrap();
        let (times, warnings) = name_change_times(dir.path(), &names).unwrap();
        assert!(warnings.is_empty());
        let pairs: Vec<(i64, i64)> = times
            .iter()
            .map(|t| (t.renamed, t.subscription_changed))
            .collect();
        assert_eq!(pairs, vec![(100, 120), (0, 130), (0, 0)]);
    }
}
