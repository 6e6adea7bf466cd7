//! Dovecot's index of an mbox (`<index dir>/dovecot.index*`) as the home of modseqs,
//! HIGHESTMODSEQ and the change history: mailsync reads them from the replayed view and
//! writes every change it makes (and every change it finds in the file that the index
//! lacks) as one EXTERNAL transaction, the records Dovecot's own mbox sync would write
//! (src/lib-storage/index/mbox/mbox-sync.c, mbox_sync_update_index), plus the `modseq`
//! extension a CONDSTORE/dsync session enables (mail-index-modseq.c
//! mail_index_modseq_enable). Since both tools read the same log, `doveadm fetch modseq`
//! and mailsync agree by construction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use mailsync_index::format::ext::{self, ModseqHeader};
use mailsync_index::format::index::{hdr_off, rec_flag};
use mailsync_index::format::log::RecordBody;
use mailsync_index::{IndexWriter, View};

use mailstore::{Flags, Keyword, MailboxGuid};

use crate::reader::MboxFile;

/// The prefix of a mailbox index (MAIL_INDEX_PREFIX, index-storage.h).
pub(crate) const INDEX_PREFIX: &str = "dovecot.index";
/// The mbox backend's extension (mbox-storage.c: header struct mbox_index_header, 32 bytes
/// — u64 sync_size @0, u32 sync_mtime @8, u8 dirty_flag @12, 3 pad, 16-byte mailbox GUID
/// @16; record: u64 offset of the line ending before the From_ line, align 8).
pub(crate) const MBOX_EXT: &str = "mbox";

/// The replayed index of the mailbox, if there is one that can be read.
pub(crate) fn read_view(index_dir: &Path) -> Option<View> {
    if !index_dir.join("dovecot.index.log").exists() && !index_dir.join("dovecot.index").exists() {
        return None;
    }
    View::open(index_dir, INDEX_PREFIX).ok()
}

/// The replayed index when it belongs to the file's UIDVALIDITY (else its modseqs describe
/// other messages).
pub(crate) fn read_view_for(index_dir: &Path, file: &MboxFile) -> Option<View> {
    read_view(index_dir).filter(|v| !uid_validity_differs(v, file))
}

/// What the index lacks compared with the file.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct IndexChanges {
    /// New messages (UID ≥ the index's next UID): UID and system flags.
    pub appends: Vec<(u32, u8)>,
    /// (UID, flags to add, flags to remove).
    pub flag_updates: Vec<(u32, u8, u8)>,
    /// (keyword, add?) → UIDs, ascending.
    pub keyword_updates: BTreeMap<(Vec<u8>, bool), Vec<u32>>,
    /// Messages gone from the file, with the GUID bytes an EXPUNGE_GUID record can carry.
    pub expunges: Vec<(u32, [u8; 16])>,
    pub next_uid: Option<u32>,
    /// DIRTY records whose flags and keywords the file now has: the flag is dropped.
    pub undirty: Vec<u32>,
    /// DIRTY records whose flags the file doesn't have yet: a rewrite must write them.
    pub dirty_unwritten: bool,
}

impl IndexChanges {
    /// Whether the index's records differ from the file (offsets aside).
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
            && self.flag_updates.is_empty()
            && self.keyword_updates.is_empty()
            && self.expunges.is_empty()
            && self.next_uid.is_none()
            && self.undirty.is_empty()
            && !self.dirty_unwritten
    }
}

/// Removes Dovecot's index files of a mailbox (the index is reset when UIDVALIDITY changes,
/// mail_index_reset; the next write creates it anew).
pub(crate) fn remove(index_dir: &Path) -> mailstore::Result<()> {
    for suffix in ["", ".log", ".log.2", ".cache"] {
        let p = index_dir.join(format!("{INDEX_PREFIX}{suffix}"));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(mailstore::Error::io("unlink", &p, e)),
        }
    }
    Ok(())
}

/// Whether two keyword lists hold the same keywords (order aside).
pub(crate) fn same_keywords(a: &[Keyword], b: &[Keyword]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|k| b.iter().any(|x| x.as_bytes() == k.as_bytes()))
}

/// Changes Dovecot logged as requests (not EXTERNAL) after `log_file_tail_offset`, which
/// its mbox sync hasn't applied to the file yet (index-sync-changes.c reads exactly these):
/// UIDs with flag or keyword requests, and UIDs with expunge requests.
fn pending_requests(view: &View) -> (HashSet<u32>, HashSet<u32>) {
    let mut flags = HashSet::new();
    let mut expunges = HashSet::new();
    let Some(head) = view.logs().last() else {
        return (flags, expunges);
    };
    let hdr = view.header();
    let tail = if hdr.log_file_seq == head.header.file_seq {
        hdr.log_file_tail_offset as u64
    } else {
        head.header.hdr_size as u64
    };
    let present: BTreeSet<u32> = view.messages().map(|m| m.uid()).collect();
    let add = |set: &mut HashSet<u32>, a: u32, b: u32| {
        if a <= b {
            set.extend(present.range(a..=b).copied());
        }
    };
    for r in head
        .records
        .iter()
        .filter(|r| r.offset >= tail && !r.is_external())
    {
        match &r.body {
            RecordBody::FlagUpdate(v) => {
                for u in v.iter().filter(|u| !u.is_internal()) {
                    add(&mut flags, u.uid1, u.uid2);
                }
            }
            RecordBody::KeywordUpdate(k) => {
                for u in &k.uids {
                    add(&mut flags, u.uid1, u.uid2);
                }
            }
            RecordBody::KeywordReset(v) => {
                for u in v {
                    add(&mut flags, u.uid1, u.uid2);
                }
            }
            RecordBody::Expunge(v) => {
                for u in v {
                    add(&mut expunges, u.uid1, u.uid2);
                }
            }
            RecordBody::ExpungeGuid(v) => {
                for e in v {
                    add(&mut expunges, e.uid, e.uid);
                }
            }
            _ => {}
        }
    }
    (flags, expunges)
}

/// Flags and keywords of the index records whose index state is ahead of the file: DIRTY
/// records, and records with flag/keyword requests Dovecot's sync hasn't applied yet
/// (messages with an expunge request are left to Dovecot).
pub(crate) fn dirty_records(view: &View) -> HashMap<u32, (Flags, Vec<Keyword>)> {
    let (requested, expunging) = pending_requests(view);
    view.messages()
        .filter(|m| {
            (m.flags() & rec_flag::DIRTY != 0 || requested.contains(&m.uid()))
                && !expunging.contains(&m.uid())
        })
        .map(|m| {
            let kws = m.keywords().into_iter().map(Keyword::new).collect();
            (m.uid(), (m.system_flags(), kws))
        })
        .collect()
}

/// Compares the index with the file. Records with the DIRTY flag hold flags Dovecot changed
/// in the index but hasn't written to the file yet (mbox_lazy_writes), and records with
/// requests after the log's tail hold changes Dovecot's sync hasn't applied yet: the index
/// is right about both (mbox_sync_get_dirty_flags, index-sync-changes.c); their flags are
/// written to the file by the next rewrite, and DIRTY is then dropped. Messages with an
/// expunge request are left to Dovecot's sync. A message below the
/// index's next UID that the index doesn't know is left to Dovecot's sync too.
pub(crate) fn index_changes(
    view: &View,
    file: &MboxFile,
    guids: &HashMap<u32, Vec<u8>>,
) -> IndexChanges {
    let mut ch = IndexChanges::default();
    if uid_validity_differs(view, file) {
        return ch;
    }
    let (requested, expunging) = pending_requests(view);
    let by_uid: HashMap<u32, usize> = file
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.uid, i))
        .collect();
    for msg in view.messages() {
        let uid = msg.uid();
        let Some(&i) = by_uid.get(&uid) else {
            // index_mail_expunge: the GUID's 128-bit form (mail_generate_guid_128_hash).
            let guid = guids
                .get(&uid)
                .map_or([0; 16], |g| mailsupport::sha1::guid_128(g));
            ch.expunges.push((uid, guid));
            continue;
        };
        let m = &file.messages[i];
        if expunging.contains(&uid) {
            // Dovecot's sync will expunge it from the file
            continue;
        }
        let dirty = msg.flags() & rec_flag::DIRTY != 0;
        if dirty || requested.contains(&uid) {
            let kws: Vec<Keyword> = msg.keywords().into_iter().map(Keyword::new).collect();
            if m.flags.0 & rec_flag::SYSTEM_MASK == msg.flags() & rec_flag::SYSTEM_MASK
                && same_keywords(&m.keywords, &kws)
            {
                if dirty {
                    ch.undirty.push(uid);
                }
            } else {
                ch.dirty_unwritten = true;
            }
            continue;
        }
        let have = msg.flags() & rec_flag::SYSTEM_MASK;
        let want = m.flags.0 & rec_flag::SYSTEM_MASK;
        if have != want {
            ch.flag_updates.push((uid, want & !have, have & !want));
        }
        let have_kws = msg.keywords();
        for k in &m.keywords {
            if !have_kws.contains(&k.as_bytes()) {
                ch.keyword_updates
                    .entry((k.as_bytes().to_vec(), true))
                    .or_default()
                    .push(uid);
            }
        }
        for h in &have_kws {
            if !m.keywords.iter().any(|k| k.as_bytes() == *h) {
                ch.keyword_updates
                    .entry((h.to_vec(), false))
                    .or_default()
                    .push(uid);
            }
        }
    }
    let mut next_uid = view.next_uid().max(1);
    for m in &file.messages {
        if m.uid >= next_uid && view.message(m.uid).is_none() {
            ch.appends.push((m.uid, m.flags.0 & rec_flag::SYSTEM_MASK));
            for k in &m.keywords {
                ch.keyword_updates
                    .entry((k.as_bytes().to_vec(), true))
                    .or_default()
                    .push(m.uid);
            }
            next_uid = m.uid + 1;
        }
    }
    if file.next_uid > next_uid {
        ch.next_uid = Some(file.next_uid);
    }
    ch
}

/// The index belongs to another UIDVALIDITY than the file (the file was replaced): its
/// records say nothing about the file's messages. Dovecot resets such an index at its next
/// sync ("UIDVALIDITY changed", mbox-sync.c); mailsync leaves it alone.
pub(crate) fn uid_validity_differs(view: &View, file: &MboxFile) -> bool {
    view.uid_validity() != 0
        && file.uid_validity() != 0
        && view.uid_validity() != file.uid_validity()
}

/// Writes what the index lacks (see [`index_changes`]) as one EXTERNAL transaction, with
/// every message's `mbox` record (offset of the line ending before its From_ line, 0 for
/// the first) and, when the file changed, the `mbox` header's sync_size = the new size,
/// sync_mtime 0 and dirty_flag 1: Dovecot's next look is then a full sync ("file size hasn't
/// changed but timestamp has", mbox-sync.c mbox_sync_do) unless mail was appended meanwhile,
/// which its partial sync handles with the offsets. The index is created (UIDVALIDITY, the
/// `mbox` extension with the mailbox GUID) when the mailbox has none. Enables the `modseq`
/// extension on the first write. Best effort: a failure is a warning and costs Dovecot a
/// resync and mailsync exact modseqs, never mail.
/// How the mbox file was written, for [`write`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Written {
    /// The file was rewritten (its size/mtime in the `mbox` header must be updated).
    pub file_changed: bool,
    /// By a transaction marked as a sync's (`Transaction::mark_as_sync`): the index
    /// transaction is marked SYNC.
    pub by_sync: bool,
}

pub(crate) fn write(
    index_dir: &Path,
    file: &MboxFile,
    new_size: u64,
    how: Written,
    uid_validity: u32,
    mailbox_guid: MailboxGuid,
    guids: &HashMap<u32, Vec<u8>>,
) {
    if let Err(e) = write_inner(
        index_dir,
        file,
        new_size,
        how,
        uid_validity,
        mailbox_guid,
        guids,
    ) {
        eprintln!("mailsync: warning: {}: {e}", index_dir.display());
    }
}

/// `Mailbox::set_mailbox_guid`: the mailbox GUID in the `mbox` extension header (offset
/// 16), when Dovecot's index has that extension (otherwise the next index write puts the
/// sidecar's GUID there).
pub(crate) fn set_mailbox_guid(
    index_dir: &Path,
    guid: MailboxGuid,
) -> Result<(), mailsync_index::Error> {
    if !index_dir.join(format!("{INDEX_PREFIX}.log")).exists() {
        return Ok(());
    }
    let writer = IndexWriter::open(index_dir, INDEX_PREFIX)
        .with_lock_timeout(std::time::Duration::from_secs(30));
    mailsync_index::locked_commit::commit_locked(
        &writer,
        false,
        |view, t| -> Result<(), mailsync_index::Error> {
            if view.extension(MBOX_EXT).is_some() {
                t.ext_hdr_update(MBOX_EXT, 16, &guid.0);
            }
            Ok(())
        },
    )?;
    Ok(())
}

fn write_inner(
    index_dir: &Path,
    file: &MboxFile,
    new_size: u64,
    how: Written,
    uid_validity: u32,
    mailbox_guid: MailboxGuid,
    guids: &HashMap<u32, Vec<u8>>,
) -> Result<(), mailsync_index::Error> {
    let writer = IndexWriter::open(index_dir, INDEX_PREFIX)
        .with_lock_timeout(std::time::Duration::from_secs(30));
    let paths = writer.paths().clone();
    if !paths.log().exists() {
        if paths.index().exists() {
            // Dovecot's answer to a lost log next to dovecot.index: a new log continuing
            // from the index's position
            writer.write_index()?;
        } else {
            match writer.create(uid_validity) {
                Ok(_) => {}
                // created by Dovecot at the same moment: use theirs
                Err(mailsync_index::Error::Invalid(_)) if paths.log().exists() => {}
                Err(e) => return Err(e),
            }
        }
    }
    let (_, info) = mailsync_index::locked_commit::commit_locked(
        &writer,
        true,
        |view, t| -> Result<(), mailsync_index::Error> {
            if uid_validity_differs(view, file) {
                return Ok(());
            }
            let ch = index_changes(view, file, guids);
            let appended: HashSet<u32> = ch.appends.iter().map(|a| a.0).collect();
            let offsets: Vec<(u32, u64)> = file
                .messages
                .iter()
                .filter(|m| view.message(m.uid).is_some() || appended.contains(&m.uid))
                .map(|m| (m.uid, m.from_start.saturating_sub(1)))
                .filter(|(uid, offset)| {
                    let have = view
                        .message(*uid)
                        .and_then(|msg| msg.ext(MBOX_EXT))
                        .and_then(|d| d.get(..8))
                        .map(|d| u64::from_le_bytes(d.try_into().unwrap_or([0; 8])));
                    have != Some(*offset)
                })
                .collect();
            let has_mbox_ext = view.extension(MBOX_EXT).is_some();
            if ch.is_empty() && offsets.is_empty() && !how.file_changed && has_mbox_ext {
                return Ok(());
            }
            if how.by_sync {
                // Transaction::mark_as_sync: a sync copied these changes from a replica
                t.mark_sync();
            }
            if !has_mbox_ext {
                t.ext_intro(MBOX_EXT, 32, 8, 8);
                t.ext_hdr_update(MBOX_EXT, 16, &mailbox_guid.0);
            }
            if view.modseq_header().is_none() {
                // track per-message modseqs from now on (mail_index_modseq_enable:
                // header = the log's modseq)
                let hdr = ModseqHeader {
                    highest_modseq: view.log_modseq().max(1),
                    log_seq: 0,
                    log_offset: 0,
                };
                t.ext_intro(ext::MODSEQ, ModseqHeader::SIZE as u32, 8, 8);
                t.ext_hdr_update(ext::MODSEQ, 0, &hdr.encode());
            }
            for &(uid, flags) in &ch.appends {
                t.append(uid, flags);
            }
            for &(uid, add, remove) in &ch.flag_updates {
                t.flags(uid, uid, add, remove);
            }
            for ((name, add), uids) in &ch.keyword_updates {
                t.keywords(*add, name, uids);
            }
            for &uid in &ch.undirty {
                // internal flag update: no new modseq (mail-transaction-log-append.c)
                t.flags(uid, uid, 0, rec_flag::DIRTY);
            }
            for &(uid, guid) in &ch.expunges {
                t.expunge_guid(uid, guid);
            }
            for (uid, offset) in &offsets {
                t.ext_rec_update(MBOX_EXT, *uid, &offset.to_le_bytes());
            }
            if let Some(n) = ch.next_uid {
                t.header_update(hdr_off::NEXT_UID as u16, &n.to_le_bytes());
            }
            t.ext_hdr_update(MBOX_EXT, 0, &new_size.to_le_bytes());
            t.ext_hdr_update(MBOX_EXT, 8, &0u32.to_le_bytes());
            t.ext_hdr_update(MBOX_EXT, 12, &[1]);
            Ok(())
        },
    )?;
    if info.log_offset >= mailsync_index::writer::ROTATE_MIN_SIZE {
        // the end of Dovecot's sync (mail_index_sync_commit): move the tail, rotate a big
        // log, rewrite dovecot.index when the log outgrew it — unless a client's request
        // still waits for Dovecot's sync (the index crate checks)
        writer.sync_housekeeping()?;
    }
    Ok(())
}
