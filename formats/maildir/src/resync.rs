//! `force-resync` for Maildir: rebuilds `dovecot-uidlist` from the message files, keeping
//! every UID a readable uidlist record still gives, then lets the ordinary maildir sync
//! bring `dovecot.index.log` in line (flags come from the filenames, which are
//! authoritative in Maildir). Message files are never renamed, moved or deleted here.
//!
//! Dovecot 2.3 (maildir-uidlist.c maildir_uidlist_update_read) rejects a whole uidlist on
//! the first broken line and then recreates it, giving every file a new UID. This repair is
//! gentler: each line is judged alone, and only the broken ones are dropped:
//! - the header's `V`, `N` and `G` are kept when each is valid; a missing or invalid
//!   UIDVALIDITY is taken from the index (whose UIDs then stay valid), else a new one is
//!   allocated from `dovecot-uidvalidity` as for a new mailbox;
//! - a record is kept when it parses as maildir_uidlist_next would accept it, its UID is
//!   above the previous kept UID, its file is not already listed (the first record for a
//!   file wins) and its file still exists;
//! - files without a kept record get new UIDs at or above max(`N`, the index's next UID,
//!   last kept UID + 1), in maildir_filename_sort_cmp order (maildir_uidlist_assign_uids).

use foldhash::{HashSet, HashSetExt};
use std::fs;
use std::io;

use mailstore::{names::mask_matches, Error, MailboxGuid, Result, Store};

use crate::filename;
use crate::index_file;
use crate::mailbox::{self, Paths};
use crate::uidlist::{self, UidList, UidRecord};
use crate::uidvalidity;
use crate::MaildirStore;

/// What force-resync did to one mailbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxResync {
    pub name: String,
    /// UIDs kept from the old uidlist.
    pub kept: usize,
    /// Files given new UIDs.
    pub renumbered: usize,
    /// Problems found and fixed, in Dovecot's warning wording where it has one.
    pub fixes: Vec<String>,
}

/// The header fields that survived the lenient read.
#[derive(Debug, Default)]
struct LenientHeader {
    version: u8,
    uid_validity: Option<u32>,
    next_uid: Option<u32>,
    guid: Option<MailboxGuid>,
    ext: Vec<(u8, Vec<u8>)>,
}

fn parse_u32_nonzero(v: &[u8]) -> Option<u32> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u32 = std::str::from_utf8(v).ok()?.parse().ok()?;
    (n != 0).then_some(n)
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads the header line field by field (maildir_uidlist_read_header), keeping what is valid.
fn lenient_header(line: &[u8], fixes: &mut Vec<String>) -> LenientHeader {
    let mut h = LenientHeader {
        version: 3,
        ..LenientHeader::default()
    };
    if line.len() < 2 || !matches!(line[0], b'1' | b'2' | b'3') || line[1] != b' ' {
        fixes.push(format!("Corrupted header, ignored: {}", show(line)));
        return h;
    }
    h.version = line[0] - b'0';
    let fields = line[2..].split(|&b| b == b' ').filter(|f| !f.is_empty());
    if h.version == 3 {
        for field in fields {
            let (key, value) = (field[0], &field[1..]);
            match key {
                b'V' => h.uid_validity = parse_u32_nonzero(value),
                b'N' => h.next_uid = parse_u32_nonzero(value),
                b'G' => h.guid = MailboxGuid::parse_hex(value),
                _ => {
                    h.ext.push((key, value.to_vec()));
                    continue;
                }
            }
            let valid = match key {
                b'V' => h.uid_validity.is_some(),
                b'N' => h.next_uid.is_some(),
                _ => h.guid.is_some(),
            };
            if !valid {
                fixes.push(format!("Invalid header field, ignored: {}", show(field)));
            }
        }
    } else {
        let mut fields = fields;
        h.uid_validity = fields.next().and_then(parse_u32_nonzero);
        h.next_uid = fields.next().and_then(parse_u32_nonzero);
    }
    h
}

/// One record line judged alone, with exactly the rules of [`uidlist::parse`]: the line is
/// parsed under a minimal header of the same version.
fn lenient_record(version: u8, line: &[u8]) -> std::result::Result<UidRecord, String> {
    let header: &[u8] = match version {
        1 => b"1 1 4294967295\n",
        2 => b"2 1 4294967295\n",
        _ => b"3 V1 N1\n",
    };
    let mut text = header.to_vec();
    text.extend_from_slice(line);
    text.push(b'\n');
    match uidlist::parse(&text) {
        Ok(Some((mut list, _))) if list.records.len() == 1 => Ok(list.records.remove(0)),
        Ok(_) => Err("no record".into()),
        Err(e) => Err(e.reason),
    }
}

/// Complete lines (a last line without `\n` is being written by someone else: ignored, as
/// in [`uidlist::parse`]); a `\r` before `\n` is dropped.
fn complete_lines(data: &[u8]) -> Vec<&[u8]> {
    let Some(end) = data.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    data[..end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect()
}

/// Rebuilds the uidlist of every mailbox matching `mask` (mailbox names as listed, matched
/// with the store's hierarchy separator), then syncs its index. Mailboxes that can't be
/// opened as Maildirs (\NoSelect parents) are skipped. What was fixed is returned, for the
/// caller to report.
pub fn force_resync(store: &MaildirStore, mask: &str) -> Result<Vec<MailboxResync>> {
    let sep = store.hierarchy_separator();
    let mut done = Vec::new();
    for info in store.list_mailboxes()? {
        if !mask_matches(mask, &info.name, sep) {
            continue;
        }
        let layout = store.layout();
        let paths = Paths {
            dir: layout.mailbox_dir(&info.name),
            control: layout.control_dir(&info.name),
        };
        if !paths.dir.join("cur").is_dir() && !paths.dir.join("new").is_dir() {
            continue;
        }
        let index_dir = layout.index_dir(&info.name);
        let lock = mailbox::lock_uidlist(&paths)?;
        let result = resync_locked(store, &paths, index_dir.as_deref(), &info.name);
        let released = lock.release();
        let report = result?;
        released.map_err(|e| Error::io("unlink", paths.uidlist(), e))?;
        // The ordinary sync (under its own lock) writes the index to match the files and
        // the new uidlist; an index with another UIDVALIDITY is reset there.
        store.open_mailbox(&info.name)?.sync()?;
        done.push(report);
    }
    Ok(done)
}

/// Under the uidlist lock: reads the uidlist leniently, lists the files and writes the
/// repaired uidlist.
fn resync_locked(
    store: &MaildirStore,
    paths: &Paths,
    index_dir: Option<&std::path::Path>,
    name: &str,
) -> Result<MailboxResync> {
    let mut report = MailboxResync {
        name: name.to_string(),
        ..MailboxResync::default()
    };
    let path = paths.uidlist();
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let lines = complete_lines(&data);
    let header = match lines.first() {
        Some(line) => lenient_header(line, &mut report.fixes),
        None => {
            report.fixes.push("uidlist missing or empty".into());
            LenientHeader {
                version: 3,
                ..LenientHeader::default()
            }
        }
    };
    let present: HashSet<Vec<u8>> = mailbox::scanned_bases(paths)?.into_iter().collect();

    let mut records: Vec<UidRecord> = Vec::new();
    let mut listed: HashSet<Vec<u8>> = HashSet::new();
    for (i, line) in lines.iter().enumerate().skip(1) {
        let lineno = i + 1;
        let rec = match lenient_record(header.version, line) {
            Ok(r) => r,
            Err(reason) => {
                report
                    .fixes
                    .push(format!("line {lineno}: {reason}: dropped"));
                continue;
            }
        };
        if let Some(last) = records.last() {
            if rec.uid <= last.uid {
                report.fixes.push(format!(
                    "line {lineno}: UIDs not ordered ({} >= {}): dropped",
                    rec.uid, last.uid
                ));
                continue;
            }
        }
        if listed.contains(rec.base()) {
            report.fixes.push(format!(
                "line {lineno}: Duplicate file entry: {} (uid {}): dropped",
                show(rec.base()),
                rec.uid
            ));
            continue;
        }
        if !present.contains(rec.base()) {
            // The file is gone (expunged): the record is dropped as Dovecot's recreate does.
            continue;
        }
        listed.insert(rec.base().to_vec());
        records.push(rec);
    }

    let index = match index_dir {
        Some(dir) => match index_file::read_view(dir) {
            Ok(v) => v,
            Err(e) => {
                report.fixes.push(format!("index not usable: {e}"));
                None
            }
        },
        None => None,
    };
    let index_ids = index
        .as_ref()
        .map(|v| (v.uid_validity(), v.next_uid()))
        .filter(|(v, _)| *v != 0);
    let uid_validity = match (header.uid_validity, index_ids) {
        (Some(v), _) => v,
        (None, Some((v, _))) => {
            report
                .fixes
                .push(format!("UIDVALIDITY {v} taken from the index"));
            v
        }
        (None, None) => {
            if !records.is_empty() {
                report
                    .fixes
                    .push("no valid UIDVALIDITY: a new one is allocated".into());
            }
            let root = store.layout().control_root();
            uidvalidity::next(root)
                .map_err(|e| Error::io("open", root.join(uidvalidity::FILE_NAME), e))?
        }
    };
    let guid = match header.guid {
        Some(g) => g,
        None => {
            if !lines.is_empty() {
                report
                    .fixes
                    .push("no valid mailbox GUID: a new one is generated".into());
            }
            MailboxGuid::generate()
        }
    };
    let mut list = UidList::new(uid_validity, guid);
    list.header_ext = header.ext;
    // Never give a UID at or below one the index or the old uidlist may have handed out.
    let mut next_uid = header.next_uid.unwrap_or(1);
    if let Some((v, n)) = index_ids {
        if v == uid_validity {
            next_uid = next_uid.max(n);
        }
    }
    if let Some(last) = records.last() {
        next_uid = next_uid.max(last.uid.saturating_add(1));
    }
    report.kept = records.len();
    list.records = records;

    let mut unlisted: Vec<&Vec<u8>> = present.iter().filter(|b| !listed.contains(*b)).collect();
    unlisted.sort_by(|a, b| filename::sort_cmp(a, b));
    for base in unlisted {
        if next_uid == u32::MAX {
            return Err(Error::NotPossible(format!(
                "{}: UID space exhausted",
                path.display()
            )));
        }
        list.records.push(UidRecord::new(next_uid, base.clone()));
        next_uid += 1;
        report.renumbered += 1;
    }
    if report.renumbered > 0 && !lines.is_empty() {
        report.fixes.push(format!(
            "{} files without a valid record given new UIDs",
            report.renumbered
        ));
    }
    list.next_uid = next_uid;
    list.header_next_uid = next_uid;
    list.lines_read = list.records.len();
    mailbox::replace_uidlist(paths, &list, mailbox::file_mode(&paths.dir))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_are_judged_one_by_one() {
        let mut fixes = Vec::new();
        let h = lenient_header(b"3 V12 Nx G00112233445566778899aabbccddeeff Zq", &mut fixes);
        assert_eq!(h.uid_validity, Some(12));
        assert_eq!(h.next_uid, None);
        assert!(h.guid.is_some());
        assert_eq!(h.ext, vec![(b'Z', b"q".to_vec())]);
        assert_eq!(fixes.len(), 1);
        let h = lenient_header(b"garbage", &mut fixes);
        assert_eq!((h.uid_validity, h.version), (None, 3));
    }

    #[test]
    fn records_are_judged_alone() {
        assert_eq!(lenient_record(3, b"7 S5 :a.b").unwrap().uid, 7);
        assert!(lenient_record(3, b"junk :a").is_err());
        assert!(lenient_record(3, b"7 S5").is_err());
        assert_eq!(lenient_record(1, b"4 x.y:2,S").unwrap().base(), b"x.y");
    }
}
