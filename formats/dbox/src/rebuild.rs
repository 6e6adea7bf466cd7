//! mdbox offline rebuild (`mailsync force-resync`), after
//! src/lib-storage/index/dbox-multi/mdbox-storage-rebuild.c: the map and every mailbox
//! index are rebuilt from the `storage/m.<id>` files, keeping UIDs, flags and keywords
//! wherever the old indexes still hold them.
//!
//! 1. every `m.<id>` is read from its header to the first damage (a truncated or
//!    corrupt message ends the file's scan; the messages before it survive; the bytes
//!    are never changed);
//! 2. the old map (when readable) gives the map UIDs of messages at a known
//!    {file_id, offset} (kept), and which ones it had at refcount 0 (expunged: not
//!    restored, as `seen_zero_ref_in_map`); other messages get new map UIDs;
//! 3. each mailbox's old index (when readable) gives its records: a record finds its
//!    message through its map UID, else through its 128-bit GUID (`guid` record);
//!    a record whose message is in no file is dropped with a warning (it is lost);
//! 4. messages no record points to and the old map didn't mark expunged are restored
//!    (rebuild_handle_zero_refs / rebuild_restore_msg): into the mailbox of their `B`
//!    metadata (created if missing), else INBOX — the recovery mailbox — with new UIDs.
//!    A message is not restored into a mailbox that already has a record with its GUID
//!    (a copy a crashed purge left);
//! 5. written: the map index anew (same UIDVALIDITY when the old map was readable,
//!    `rebuild_count` + 1, `highest_file_id` ≥ every file on disk, refcounts = number of
//!    records), then each mailbox index anew (same UIDVALIDITY, GUID, UIDs, NEXTUID,
//!    flags, keywords; modseqs restart; the `mdbox-hdr` POP3 flags of the old index,
//!    plus those any storage file's `P` / `O` lines call for, as mdbox_header_update).
//!
//! Offline: no other process may use the store meanwhile. A crash while writing leaves
//! the mail files untouched; running force-resync again rebuilds from them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::path::Path;

use mailstore::{Error, MailboxGuid, Result};
use mailsync_index::format::ext::{self, MapHeader, MapRecord, MdboxRecord};
use mailsync_index::format::index::hdr_off;
use mailsync_index::{IndexWriter, View};

use crate::file::{self, key};
use crate::index::{create_index, dbox_header, index_exists, ix_err};
use crate::layout::{mkdir_all, DboxKind, Layout, INDEX_PREFIX};
use crate::mdbox::{map_file_name, now, MAP_PREFIX};
use crate::pop3;
use mailsupport::sha1::guid_128;

/// What a rebuild found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebuildStats {
    /// Messages found in the storage files.
    pub messages_found: u32,
    /// Messages put back into a mailbox (no record pointed to them).
    pub restored: u32,
    /// Mailbox records dropped because their message is in no file.
    pub records_lost: u32,
    /// Files whose scan stopped at damage.
    pub damaged_files: u32,
}

struct Scanned {
    file_id: u32,
    offset: u32,
    size: u32,
    guid128: Option<[u8; 16]>,
    orig_mailbox: Option<Vec<u8>>,
    /// HAVE_POP3_* for the `P` / `O` lines of its metadata.
    pop3_flags: u8,
    map_uid: u32,
    zero_ref_in_old_map: bool,
    refcount: u32,
}

struct NewRecord {
    uid: u32,
    flags: u8,
    keywords: Vec<Vec<u8>>,
    msg: usize,
    save_date: u32,
    guid128: [u8; 16],
}

struct MailboxPlan {
    dir: std::path::PathBuf,
    uid_validity: u32,
    guid: MailboxGuid,
    /// The old `mdbox-hdr` flags (kept, as mdbox_header_update keeps the old header).
    hdr_flags: u8,
    next_uid: u32,
    records: Vec<NewRecord>,
}

fn storage_file_ids(storage: &Path) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    let rd = match fs::read_dir(storage) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(Error::io("opendir", storage, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("readdir", storage, e))?;
        let name = entry.file_name();
        if let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("m."))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Reads the messages of one file up to its first damage.
fn scan_file(storage: &Path, file_id: u32, out: &mut Vec<Scanned>) -> Result<bool> {
    let path = storage.join(map_file_name(file_id));
    let f = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    let hdr = match file::read_file_header(&f) {
        Ok(h) => h,
        Err(e) => {
            crate::warn(&format!(
                "force-resync: {}: {}",
                path.display(),
                e.into_store_error(&path)
            ));
            return Ok(true);
        }
    };
    let len = f
        .metadata()
        .map_err(|e| Error::io("fstat", &path, e))?
        .len();
    let mut offset = hdr.header_len as u64;
    while offset < len {
        let mut first = [0u8; 1];
        if std::os::unix::fs::FileExt::read_at(&f, &mut first, offset).unwrap_or(0) == 0
            || first[0] == 0
        {
            break;
        }
        let m = match file::read_mail_at(&f, &hdr, offset) {
            Ok(m) => m,
            Err(e) => {
                crate::warn(&format!(
                    "force-resync: {}: damaged at offset {offset}, later bytes ignored: {}",
                    path.display(),
                    e.into_store_error(&path)
                ));
                return Ok(true);
            }
        };
        let (Ok(off), Ok(size)) = (u32::try_from(offset), u32::try_from(m.total_size)) else {
            break;
        };
        out.push(Scanned {
            file_id,
            offset: off,
            size,
            guid128: m.metadata.get(key::GUID).map(guid_128),
            orig_mailbox: m.metadata.get(key::ORIG_MAILBOX).map(<[u8]>::to_vec),
            pop3_flags: metadata_pop3_flags(&m.metadata),
            map_uid: 0,
            zero_ref_in_old_map: false,
            refcount: 0,
        });
        offset += m.total_size;
    }
    Ok(false)
}

/// The header flags a message's metadata calls for: HAVE_POP3_UIDLS for a `P` line,
/// HAVE_POP3_ORDERS for an `O` line, whatever their values (mdbox-storage-rebuild.c
/// rebuild_scan_metadata: dbox_file_metadata_get != NULL).
fn metadata_pop3_flags(m: &file::Metadata) -> u8 {
    let mut flags = 0;
    if m.get(key::POP3_UIDL).is_some() {
        flags |= pop3::HAVE_POP3_UIDLS;
    }
    if m.get(key::POP3_ORDER).is_some() {
        flags |= pop3::HAVE_POP3_ORDERS;
    }
    flags
}

fn remove_index_files(dir: &Path, prefix: &str) -> Result<()> {
    for suffix in ["", ".log", ".log.2", ".cache"] {
        let p = dir.join(format!("{prefix}{suffix}"));
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("unlink", &p, e)),
        }
    }
    Ok(())
}

/// Rebuilds the mdbox map and every mailbox index from the storage files (see the
/// module docs). Nothing for sdbox.
pub fn rebuild_mdbox(layout: &Layout) -> Result<RebuildStats> {
    let mut stats = RebuildStats::default();
    if layout.kind != DboxKind::Multi {
        return Err(Error::NotPossible(
            "rebuild_mdbox on a non-mdbox store".into(),
        ));
    }
    let storage = layout.storage_dir();
    mkdir_all(&storage, 0o700).map_err(|e| Error::io("mkdir", &storage, e))?;
    // 1. scan
    let file_ids = storage_file_ids(&storage)?;
    let mut msgs: Vec<Scanned> = Vec::new();
    for &id in &file_ids {
        if scan_file(&storage, id, &mut msgs)? {
            stats.damaged_files += 1;
        }
    }
    stats.messages_found = msgs.len() as u32;
    // 2. old map
    let old_map = View::open(&storage, MAP_PREFIX).ok();
    let mut by_loc: HashMap<(u32, u32), usize> = HashMap::new();
    for (i, m) in msgs.iter().enumerate() {
        by_loc.insert((m.file_id, m.offset), i);
    }
    let mut old_uid_to_msg: HashMap<u32, usize> = HashMap::new();
    let mut next_map_uid = 1;
    let mut old_rebuild_count = 0;
    if let Some(map) = &old_map {
        old_rebuild_count = map
            .extension(ext::MAP)
            .map(|e| MapHeader::decode(&e.data).rebuild_count)
            .unwrap_or(0);
        for m in map.messages() {
            let Some(rec) = m.ext(ext::MAP).map(MapRecord::decode) else {
                continue;
            };
            if let Some(&i) = by_loc.get(&(rec.file_id, rec.offset)) {
                if msgs[i].map_uid == 0 {
                    msgs[i].map_uid = m.uid();
                    msgs[i].zero_ref_in_old_map =
                        m.ext(ext::REF).map(ext::ref_count).unwrap_or(0) == 0;
                    old_uid_to_msg.insert(m.uid(), i);
                }
            }
        }
        next_map_uid = map.next_uid().max(1);
    }
    for m in msgs.iter_mut().filter(|m| m.map_uid == 0) {
        m.map_uid = next_map_uid;
        next_map_uid += 1;
    }
    let mut by_guid: HashMap<[u8; 16], usize> = HashMap::new();
    for (i, m) in msgs.iter().enumerate() {
        if let Some(g) = m.guid128 {
            by_guid.entry(g).or_insert(i);
        }
    }
    let map_validity = old_map
        .as_ref()
        .map(|m| m.uid_validity())
        .filter(|&v| v != 0)
        .unwrap_or_else(|| now().max(1) as u32);
    // 3. mailboxes
    let mut plans: BTreeMap<String, MailboxPlan> = BTreeMap::new();
    // (mailbox, GUID) pairs with a record: a message isn't restored into a mailbox that
    // already has its GUID (a copy a crashed purge left); copies in other mailboxes
    // share the GUID legitimately
    let mut used_guids: HashSet<(String, [u8; 16])> = HashSet::new();
    for (name, selectable) in layout.scan_mailboxes()? {
        if !selectable {
            continue;
        }
        let dir = layout.mail_dir(&name);
        let view = if index_exists(&dir) {
            View::open(&dir, INDEX_PREFIX).ok()
        } else {
            None
        };
        let plan = plan_from_view(
            view.as_ref(),
            dir,
            &msgs,
            &old_uid_to_msg,
            &by_guid,
            &mut stats,
        );
        for r in &plan.records {
            used_guids.insert((name.clone(), r.guid128));
        }
        plans.insert(name, plan);
    }
    for p in plans.values() {
        for r in &p.records {
            msgs[r.msg].refcount += 1;
        }
    }
    // 4. restore what no record points to
    for (i, m) in msgs.iter_mut().enumerate() {
        if m.refcount > 0 || m.zero_ref_in_old_map {
            continue;
        }
        let guid = m.guid128.unwrap_or([0; 16]);
        let target = m
            .orig_mailbox
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(|b| layout.normalize(b))
            .filter(|b| layout.validate(b, true).is_ok())
            .unwrap_or_else(|| "INBOX".to_string());
        if m.guid128.is_some() && !used_guids.insert((target.clone(), guid)) {
            continue;
        }
        let plan = plans.entry(target.clone()).or_insert_with(|| MailboxPlan {
            dir: layout.mail_dir(&target),
            uid_validity: 0,
            guid: MailboxGuid::generate(),
            hdr_flags: 0,
            next_uid: 1,
            records: Vec::new(),
        });
        plan.records.push(NewRecord {
            uid: plan.next_uid,
            flags: 0,
            keywords: Vec::new(),
            msg: i,
            save_date: now().clamp(0, u32::MAX as i64) as u32,
            guid128: guid,
        });
        plan.next_uid += 1;
        m.refcount += 1;
        stats.restored += 1;
    }
    // 5. write the map, then the mailboxes
    remove_index_files(&storage, MAP_PREFIX)?;
    let mw = IndexWriter::open(&storage, MAP_PREFIX);
    mw.create(map_validity).map_err(ix_err)?;
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by_key(|&i| msgs[i].map_uid);
    let highest = file_ids.iter().copied().max().unwrap_or(0);
    mailsync_index::locked_commit::commit_locked_synced(
        &mw,
        true,
        |_, t| -> std::result::Result<(), mailsync_index::Error> {
            t.ext_intro(ext::MAP, 8, 12, 4);
            t.ext_intro(ext::REF, 0, 2, 2);
            let mut hdr = Vec::with_capacity(8);
            hdr.extend_from_slice(&highest.to_le_bytes());
            hdr.extend_from_slice(&(old_rebuild_count + 1).to_le_bytes());
            t.ext_hdr_update(ext::MAP, 0, &hdr);
            for &i in &order {
                let m = &msgs[i];
                t.append(m.map_uid, 0);
                let mut rec = Vec::with_capacity(12);
                rec.extend_from_slice(&m.file_id.to_le_bytes());
                rec.extend_from_slice(&m.offset.to_le_bytes());
                rec.extend_from_slice(&m.size.to_le_bytes());
                t.ext_rec_update(ext::MAP, m.map_uid, &rec);
                let refs = m.refcount.min(u16::MAX as u32) as u16;
                t.ext_rec_update(ext::REF, m.map_uid, &refs.to_le_bytes());
            }
            if next_map_uid > 1 {
                t.header_update(hdr_off::NEXT_UID as u16, &next_map_uid.to_le_bytes());
            }
            Ok(())
        },
    )
    .map_err(ix_err)?;
    // mdbox-storage-rebuild.c mdbox_header_update: a `P` / `O` line in any storage file
    // sets the flag in every mailbox
    let pop3_flags = msgs.iter().fold(0, |f, m| f | m.pop3_flags);
    for plan in plans.values_mut() {
        write_mailbox(&layout.root, plan, &msgs, map_validity, pop3_flags)?;
    }
    Ok(stats)
}

fn plan_from_view(
    view: Option<&View>,
    dir: std::path::PathBuf,
    msgs: &[Scanned],
    old_uid_to_msg: &HashMap<u32, usize>,
    by_guid: &HashMap<[u8; 16], usize>,
    stats: &mut RebuildStats,
) -> MailboxPlan {
    let Some(view) = view else {
        return MailboxPlan {
            dir,
            uid_validity: 0,
            guid: MailboxGuid::generate(),
            hdr_flags: 0,
            next_uid: 1,
            records: Vec::new(),
        };
    };
    let hdr = dbox_header(view, DboxKind::Multi);
    let guid = hdr
        .map(|h| MailboxGuid(h.mailbox_guid))
        .filter(|g| g.0 != [0; 16])
        .unwrap_or_else(MailboxGuid::generate);
    let mut records = Vec::new();
    let mut taken: HashSet<usize> = HashSet::new();
    for m in view.messages() {
        let rec = m.ext(ext::MDBOX).map(MdboxRecord::decode);
        let guid128 = m.guid128();
        let by_uid = rec
            .and_then(|r| old_uid_to_msg.get(&r.map_uid).copied())
            .filter(|&i| {
                guid128.is_none() || msgs[i].guid128.is_none() || msgs[i].guid128 == guid128
            });
        let found = by_uid.or_else(|| guid128.and_then(|g| by_guid.get(&g).copied()));
        let Some(i) = found.filter(|i| taken.insert(*i)) else {
            crate::warn(&format!(
                "force-resync: {}: uid {} has no message in any storage file: dropped",
                dir.display(),
                m.uid()
            ));
            stats.records_lost += 1;
            continue;
        };
        records.push(NewRecord {
            uid: m.uid(),
            flags: m.flags() & 0x1f,
            keywords: m.keywords().into_iter().map(<[u8]>::to_vec).collect(),
            msg: i,
            save_date: rec.map(|r| r.save_date).unwrap_or(0),
            guid128: msgs[i].guid128.or(guid128).unwrap_or([0; 16]),
        });
    }
    MailboxPlan {
        dir,
        uid_validity: view.uid_validity(),
        guid,
        hdr_flags: pop3::header_flags(view, DboxKind::Multi),
        next_uid: view.next_uid().max(1),
        records,
    }
}

fn write_mailbox(
    root: &Path,
    plan: &MailboxPlan,
    msgs: &[Scanned],
    map_validity: u32,
    pop3_flags: u8,
) -> Result<()> {
    mkdir_all(&plan.dir, 0o700).map_err(|e| Error::io("mkdir", &plan.dir, e))?;
    remove_index_files(&plan.dir, INDEX_PREFIX)?;
    let uid_validity = if plan.uid_validity != 0 {
        plan.uid_validity
    } else {
        mailsupport::uidvalidity::next(root).unwrap_or(now().max(1) as u32)
    };
    create_index(
        &plan.dir,
        DboxKind::Multi,
        uid_validity,
        map_validity,
        plan.guid,
    )?;
    let w = IndexWriter::open(&plan.dir, INDEX_PREFIX);
    let mut t = w.begin().external(true);
    let hdr_flags = plan.hdr_flags | pop3_flags;
    if hdr_flags != 0 {
        t.ext_hdr_update(ext::MDBOX_HDR, pop3::HDR_FLAGS_OFFSET as u32, &[hdr_flags]);
    }
    t.ext_intro(ext::MDBOX, 0, 8, 4);
    t.ext_intro(ext::GUID, 0, 16, 1);
    let mut records: Vec<&NewRecord> = plan.records.iter().collect();
    records.sort_by_key(|r| r.uid);
    for r in &records {
        t.append(r.uid, r.flags);
        let mut rec = Vec::with_capacity(8);
        rec.extend_from_slice(&msgs[r.msg].map_uid.to_le_bytes());
        rec.extend_from_slice(&r.save_date.to_le_bytes());
        t.ext_rec_update(ext::MDBOX, r.uid, &rec);
        t.ext_rec_update(ext::GUID, r.uid, &r.guid128);
        for k in &r.keywords {
            t.keywords(true, k, &[r.uid]);
        }
    }
    let max_uid = records.last().map(|r| r.uid + 1).unwrap_or(1);
    let next = plan.next_uid.max(max_uid);
    if next > 1 {
        t.header_update(hdr_off::NEXT_UID as u16, &next.to_le_bytes());
    }
    t.commit().map_err(ix_err)?;
    Ok(())
}

/// `*` matches anything, `%` anything but `sep` (doveadm mailbox masks).
pub fn mask_matches(mask: &str, name: &str, sep: char) -> bool {
    fn go(m: &[char], n: &[char], sep: char) -> bool {
        match m.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..], sep)),
            Some(('%', rest)) => {
                let stop = n.iter().position(|&c| c == sep).unwrap_or(n.len());
                (0..=stop).any(|i| go(rest, &n[i..], sep))
            }
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..], sep),
        }
    }
    let m: Vec<char> = mask.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&m, &n, sep)
}

/// sdbox rebuild of the mailboxes matching `mask` (sdbox-sync-rebuild.c): each index is
/// written anew from the `u.<uid>` files (UID = the file name); flags and keywords come
/// from the old index where it still has the UID; UIDVALIDITY and the mailbox GUID are
/// kept when the old index is readable (`rebuild_count` + 1), else new; NEXTUID is above
/// every file; the `dbox-hdr` POP3 flags are the old ones plus those the files' `P` / `O`
/// lines call for. A file that can't be read (bad magic, truncated) stays on disk, left out
/// with a warning. Returns the number of messages indexed.
pub fn rebuild_sdbox(layout: &Layout, mask: &str) -> Result<u32> {
    if layout.kind != DboxKind::Single {
        return Err(Error::NotPossible(
            "rebuild_sdbox on a non-sdbox store".into(),
        ));
    }
    let mut total = 0;
    for (name, selectable) in layout.scan_mailboxes()? {
        if !selectable || !mask_matches(mask, &name, layout.ns_sep) {
            continue;
        }
        total += rebuild_sdbox_mailbox(layout, &layout.mail_dir(&name))?;
    }
    Ok(total)
}

fn rebuild_sdbox_mailbox(layout: &Layout, dir: &Path) -> Result<u32> {
    let old = if index_exists(dir) {
        View::open(dir, INDEX_PREFIX).ok()
    } else {
        None
    };
    let mut uids = Vec::new();
    let mut pop3_flags = 0;
    for entry in fs::read_dir(dir).map_err(|e| Error::io("opendir", dir, e))? {
        let entry = entry.map_err(|e| Error::io("readdir", dir, e))?;
        let Some(uid) = crate::sdbox::mail_file_uid(entry.file_name().as_encoded_bytes()) else {
            continue;
        };
        let path = entry.path();
        let readable = File::open(&path).map_err(|e| e.to_string()).and_then(|f| {
            let h =
                file::read_file_header(&f).map_err(|e| e.into_store_error(&path).to_string())?;
            file::read_mail_at(&f, &h, h.header_len as u64)
                .map_err(|e| e.into_store_error(&path).to_string())
        });
        match readable {
            Ok(m) => {
                pop3_flags |= metadata_pop3_flags(&m.metadata);
                uids.push(uid);
            }
            Err(e) => crate::warn(&format!(
                "force-resync: {}: unreadable, left out of the index: {e}",
                path.display()
            )),
        }
    }
    uids.sort_unstable();
    let hdr = old.as_ref().and_then(|v| dbox_header(v, DboxKind::Single));
    let guid = hdr
        .map(|h| MailboxGuid(h.mailbox_guid))
        .filter(|g| g.0 != [0; 16])
        .unwrap_or_else(MailboxGuid::generate);
    let rebuild_count = hdr.map(|h| h.counter).unwrap_or(0).wrapping_add(1);
    // sdbox-sync-rebuild.c keeps the old header with its flags; mailsync also sets them
    // for the `P` / `O` lines it finds (as the mdbox rebuild does), so a lost index
    // doesn't hide the messages' POP3 data
    let hdr_flags = hdr.map(|h| h.flags).unwrap_or(0) | pop3_flags;
    let uid_validity = match old.as_ref().map(|v| v.uid_validity()).filter(|&v| v != 0) {
        Some(v) => v,
        None => mailsupport::uidvalidity::next(&layout.root)
            .map_err(|e| Error::io("open", &layout.root, e))?,
    };
    let old_next = old.as_ref().map(|v| v.next_uid()).unwrap_or(1);
    let next = old_next.max(uids.last().map(|u| u + 1).unwrap_or(1));
    remove_index_files(dir, INDEX_PREFIX)?;
    create_index(dir, DboxKind::Single, uid_validity, rebuild_count, guid)?;
    let w = IndexWriter::open(dir, INDEX_PREFIX);
    let mut t = w.begin().external(true);
    if hdr_flags != 0 {
        t.ext_hdr_update(ext::DBOX_HDR, pop3::HDR_FLAGS_OFFSET as u32, &[hdr_flags]);
    }
    for &uid in &uids {
        let m = old.as_ref().and_then(|v| v.message(uid));
        t.append(uid, m.as_ref().map(|m| m.flags() & 0x1f).unwrap_or(0));
        if let Some(m) = &m {
            for k in m.keywords() {
                t.keywords(true, k, &[uid]);
            }
        }
    }
    if next > 1 {
        t.header_update(hdr_off::NEXT_UID as u16, &next.to_le_bytes());
    }
    t.commit().map_err(ix_err)?;
    Ok(uids.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::mask_matches;

    #[test]
    fn masks_match_like_doveadm() {
        assert!(mask_matches("*", "a/b", '/'));
        assert!(mask_matches("INBOX", "INBOX", '/'));
        assert!(!mask_matches("INBOX", "Other", '/'));
        assert!(mask_matches("a/%", "a/b", '/'));
        assert!(!mask_matches("a/%", "a/b/c", '/'));
        assert!(mask_matches("a/*", "a/b/c", '/'));
        assert!(!mask_matches("%", "a/b", '/'));
    }
}
