//! The mailbox's `dovecot.index` + `dovecot.index.log` through the `mailsync-index` crate:
//! reading the replayed view (modseqs, `first_recent_uid`, records to compare with the
//! files) and writing what Dovecot's maildir sync would write as one EXTERNAL transaction
//! under the log lock (FORMAT.md §6; src/lib-storage/index/maildir/maildir-sync-index.c).
//!
//! Callers hold the uidlist lock while writing: Dovecot appends to a maildir index and
//! changes its `uid_validity` only under that lock too, so the set of indexed UIDs and
//! `next_uid` can't change between reading the view and committing (Dovecot takes the
//! uidlist lock before the index lock, maildir-sync.c, and so do we).

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use mailstore::{Changes, Error, Expunges, FlagChange, Flags, Keyword, ModSeq, Result, Uid};
use mailsync_index::format::ext::{self, ModseqHeader};
use mailsync_index::format::index::hdr_off;
use mailsync_index::format::log::RecordBody;
use mailsync_index::header_view::IndexState;
use mailsync_index::{HeaderView, IndexWriter, View as IndexView};

use crate::index_sync::{ExternalChanges, IndexSide, IndexedMail};

/// The prefix of a mailbox index (MAIL_INDEX_PREFIX, index-storage.h).
pub(crate) const INDEX_PREFIX: &str = "dovecot.index";

/// MAILDIR_SYNC_SECS (maildir-sync.h): the clock drift Dovecot allows between the machines
/// sharing a Maildir. A directory modified this close to the time it was read may have
/// changed again unseen, keeping its mtime ("dirty", DIR_DELAYED_REFRESH).
pub(crate) const DOVECOT_MAILDIR_SYNC_SECS: u32 = 1;

/// The `maildir` extension header (struct maildir_index_header, maildir-storage.h; the
/// layout is `mailsync_index::format::ext::MaildirHeader`): when `new/` and `cur/` were last
/// read into the index and which `dovecot-uidlist` the index is up to date with. All 0 (or
/// no extension) means "never read": a full scan follows.
pub(crate) use mailsync_index::format::ext::MaildirHeader;

/// The `maildir` header of the index `view`, when it has the extension.
pub(crate) fn maildir_header(view: &IndexView) -> Option<MaildirHeader> {
    view.extension(ext::MAILDIR)
        .map(|e| MaildirHeader::decode(&e.data))
}

/// [`maildir_header`] from the index's header alone.
pub(crate) fn maildir_header_in(head: &HeaderView) -> Option<MaildirHeader> {
    head.extension(ext::MAILDIR)
        .map(|e| MaildirHeader::decode(&e.data))
}

/// DIR_DELAYED_REFRESH (maildir-sync.c): the directory was read no later than
/// MAILDIR_SYNC_SECS after it was last modified, so a change in the same clock tick may
/// have kept its mtime.
fn read_dirty(check_time: u32, mtime: u32) -> bool {
    check_time <= mtime.saturating_add(DOVECOT_MAILDIR_SYNC_SECS)
}

/// maildir_index_header_has_changed (maildir-sync-index.c): whether writing `new` over
/// `old` changes anything the quick check reads.
pub(crate) fn header_differs(new: &MaildirHeader, old: &MaildirHeader) -> bool {
    let stamps = |h: &MaildirHeader| {
        (
            h.new_mtime,
            h.new_mtime_nsecs,
            h.cur_mtime,
            h.cur_mtime_nsecs,
            h.uidlist_mtime,
            h.uidlist_mtime_nsecs,
            h.uidlist_size,
        )
    };
    stamps(new) != stamps(old)
        || read_dirty(new.new_check_time, new.new_mtime)
            != read_dirty(old.new_check_time, old.new_mtime)
        || read_dirty(new.cur_check_time, new.cur_mtime)
            != read_dirty(old.cur_check_time, old.cur_mtime)
}

/// Whether `stamp` should replace the `maildir` header of `view` (none there yet, or it
/// differs by [`header_differs`]).
pub(crate) fn header_needs_write(stamp: &MaildirHeader, view: &IndexView) -> bool {
    maildir_header(view).is_none_or(|old| header_differs(stamp, &old))
}

/// maildir_sync_quick_check (maildir-sync.c) without `undirty`: true when `new/` and `cur/`
/// (their (mtime, nsecs) now) are as the index last read them, and neither was read dirty
/// more than MAILDIR_SYNC_SECS before `now` (such a read is repeated once, in case a change
/// in the same clock tick kept the mtime). Also the uidlist (mtime, nsecs, size) must be
/// the one the index is up to date with (maildir_uidlist_refresh_fast_init).
pub(crate) fn header_still_valid(
    h: &MaildirHeader,
    now: i64,
    new: (i64, i64),
    cur: (i64, i64),
    uidlist: (i64, i64, u64),
) -> bool {
    let stale_dirty = |check: u32, mtime: u32| {
        read_dirty(check, mtime) && i64::from(check) < now - i64::from(DOVECOT_MAILDIR_SYNC_SECS)
    };
    h.new_mtime != 0
        && h.uidlist_mtime != 0
        && !stale_dirty(h.new_check_time, h.new_mtime)
        && !stale_dirty(h.cur_check_time, h.cur_mtime)
        && (i64::from(h.new_mtime), i64::from(h.new_mtime_nsecs)) == new
        && (i64::from(h.cur_mtime), i64::from(h.cur_mtime_nsecs)) == cur
        && (
            i64::from(h.uidlist_mtime),
            i64::from(h.uidlist_mtime_nsecs),
            u64::from(h.uidlist_size),
        ) == uidlist
}

/// What the mailbox view takes from the index: modseqs and `\Recent`.
#[derive(Clone, Debug)]
pub(crate) struct IndexInfo {
    /// HIGHESTMODSEQ (never below 1, as doveadm shows it).
    pub highest_modseq: u64,
    /// Messages with a UID at or above this are `\Recent`.
    pub first_recent_uid: u32,
    /// The modseqs of a simulated index (with `view` None); empty when `view` has them.
    modseqs: HashMap<u32, u64>,
    /// Flags and keywords the index has for messages with changes Dovecot logged but
    /// hasn't applied to the files yet.
    pending: HashMap<u32, (Flags, Vec<Keyword>)>,
    /// The replayed index, when there is one on disk (for `changes_since`).
    view: Option<IndexView>,
    /// The index directory whose view hasn't been read yet, and the state of the header
    /// the quick check answered from ([`IndexInfo::from_header`]); read on first need.
    unread: Option<(PathBuf, IndexState)>,
    /// The view read for a quick check's info is of a later state than the header it
    /// answered from: the history can't be told for the counters given.
    moved: bool,
}

impl Default for IndexInfo {
    fn default() -> IndexInfo {
        IndexInfo {
            highest_modseq: 1,
            first_recent_uid: 1,
            modseqs: HashMap::new(),
            pending: HashMap::new(),
            view: None,
            unread: None,
            moved: false,
        }
    }
}

impl IndexInfo {
    /// The MODSEQ of `uid` (the highest modseq for messages the index doesn't know yet, as
    /// mail_index_modseq_lookup answers for records without one).
    pub fn modseq(&self, uid: u32) -> u64 {
        if let Some(&m) = self.modseqs.get(&uid) {
            return m;
        }
        self.view
            .as_ref()
            .and_then(|v| v.message(uid))
            .map_or(self.highest_modseq, |m| m.modseq())
    }

    /// The index's flags and keywords of `uid` when Dovecot has changed them in the log
    /// but not yet in the file.
    pub fn pending(&self, uid: u32) -> Option<(Flags, &[Keyword])> {
        self.pending.get(&uid).map(|(f, k)| (*f, k.as_slice()))
    }

    /// The keywords the index has for `uid`.
    pub fn keywords_of(&self, uid: u32) -> Vec<Keyword> {
        self.view
            .as_ref()
            .and_then(|v| v.message(uid))
            .map(|m| m.keywords().into_iter().map(Keyword::new).collect())
            .unwrap_or_default()
    }

    /// The info of an index on disk: modseqs are looked up in `view` (no copy of them).
    pub fn from_view(view: IndexView) -> IndexInfo {
        let pending = pending_uids(&view)
            .into_iter()
            .filter_map(|uid| {
                let m = view.message(uid)?;
                let keywords = m.keywords().into_iter().map(Keyword::new).collect();
                Some((uid, (m.system_flags(), keywords)))
            })
            .collect();
        IndexInfo {
            highest_modseq: view.highest_modseq().max(1),
            first_recent_uid: view.header().first_recent_uid.max(1),
            modseqs: HashMap::new(),
            pending,
            view: Some(view),
            unread: None,
            moved: false,
        }
    }

    /// The info of an index whose header alone answered the quick check (so nothing is
    /// pending): the view of `dir` is read when first needed ([`IndexInfo::read_view`]).
    pub fn from_header(head: &HeaderView, dir: &Path) -> IndexInfo {
        IndexInfo {
            highest_modseq: head.highest_modseq().max(1),
            first_recent_uid: head.header().first_recent_uid.max(1),
            modseqs: HashMap::new(),
            pending: HashMap::new(),
            view: None,
            unread: Some((dir.to_path_buf(), head.state())),
            moved: false,
        }
    }

    /// Reads the view an info built by [`IndexInfo::from_header`] left unread.
    pub fn read_view(&mut self) -> Result<()> {
        if let Some((dir, state)) = self.unread.take() {
            self.view = read_view(&dir).map_err(index_error)?;
            self.moved = self
                .view
                .as_ref()
                .is_none_or(|v| (v.indexid(), v.log_position()) != state);
        }
        Ok(())
    }

    /// What Dovecot would show after writing `changes` into an index it keeps in memory
    /// (INDEX=MEMORY, or a store we can't write to): the records' modseq steps applied to
    /// `base` (or to an empty index, whose log starts at modseq 1).
    pub fn simulated(base: Option<&IndexView>, changes: &ExternalChanges) -> IndexInfo {
        let mut modseq = base.map(|v| v.log_modseq()).unwrap_or(0).max(1);
        let tracked = base.is_some_and(|v| v.modseq_header().is_some());
        let mut modseqs: HashMap<u32, u64> = base
            .map(|v| v.messages().map(|m| (m.uid(), m.modseq())).collect())
            .unwrap_or_default();
        let mut touch = |modseq: u64, uids: &mut dyn Iterator<Item = u32>| {
            for uid in uids {
                modseqs.insert(uid, modseq);
            }
        };
        // mail_transaction_update_modseq: one step per APPEND, FLAG_UPDATE, KEYWORD_UPDATE
        // and EXTERNAL expunge record.
        if !changes.appends.is_empty() {
            modseq += 1;
            touch(modseq, &mut changes.appends.iter().map(|a| a.0));
        }
        if !changes.flag_updates.is_empty() {
            modseq += 1;
            touch(modseq, &mut changes.flag_updates.iter().map(|f| f.0));
        }
        for (_, _, uids) in &changes.keyword_updates {
            modseq += 1;
            touch(modseq, &mut uids.iter().copied());
        }
        if !changes.expunges.is_empty() {
            modseq += 1;
        }
        for (uid, _) in &changes.expunges {
            modseqs.remove(uid);
        }
        let highest = base
            .map(|v| v.highest_modseq())
            .unwrap_or(0)
            .max(modseq)
            .max(1);
        if !tracked {
            // Without the `modseq` extension every message reports the highest modseq.
            modseqs.clear();
        }
        let first_recent_uid = changes
            .first_recent_uid
            .or(base.map(|v| v.header().first_recent_uid))
            .unwrap_or(1)
            .max(1);
        IndexInfo {
            highest_modseq: highest,
            first_recent_uid,
            modseqs,
            pending: HashMap::new(),
            view: None,
            unread: None,
            moved: false,
        }
    }

    /// `Mailbox::changes_since` from the logs of the view this info was built from.
    pub fn changes_since(&self, since: ModSeq) -> Changes {
        match &self.view {
            Some(v) if !self.moved => v.changes_since(since),
            _ => Changes::Unknown,
        }
    }

    /// `Mailbox::expunged_since` from the same logs.
    pub fn expunged_since(&self, since: ModSeq) -> Option<Expunges> {
        match &self.view {
            Some(v) if !self.moved => v.expunged_since(since),
            _ => None,
        }
    }

    /// `Mailbox::flag_changes_since` from the same logs.
    pub fn flag_changes_since(&self, since: ModSeq, uids: &[Uid]) -> Vec<(Uid, FlagChange)> {
        match &self.view {
            Some(v) if !self.moved => v.flag_changes_since(since, uids),
            _ => Vec::new(),
        }
    }
}

/// Reads the replayed index in `dir`; `None` when it has neither `dovecot.index` nor a log.
pub(crate) fn read_view(
    dir: &Path,
) -> std::result::Result<Option<IndexView>, mailsync_index::Error> {
    match IndexView::open(dir, INDEX_PREFIX) {
        Ok(v) => Ok(Some(v)),
        Err(mailsync_index::Error::NotFound { .. }) => Ok(None),
        Err(mailsync_index::Error::Io { source, .. })
            if source.kind() == io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The index side of the comparison (an empty index when there is none).
pub(crate) fn index_side(view: Option<&IndexView>) -> IndexSide {
    let Some(view) = view else {
        return IndexSide::default();
    };
    let hdr = view.header();
    // one Keyword per name, shared by the messages that have it
    let keyword_names: Vec<Keyword> = view.keywords().iter().map(Keyword::new).collect();
    let mails = view
        .messages()
        .map(|m| IndexedMail {
            uid: m.uid(),
            flags: m.flags(),
            keywords: m
                .keyword_indexes()
                .into_iter()
                .filter_map(|i| keyword_names.get(i).cloned())
                .collect(),
        })
        .collect();
    IndexSide {
        uid_validity: hdr.uid_validity,
        next_uid: hdr.next_uid,
        first_recent_uid: hdr.first_recent_uid,
        mails,
        keyword_names,
        pending: pending_uids(view),
    }
}

/// UIDs with flag, keyword or expunge records Dovecot logged as requests (not EXTERNAL)
/// after `log_file_tail_offset`: changes its maildir sync hasn't applied to the files yet
/// (index-sync-changes.c reads exactly these).
/// Whether `view` holds changes Dovecot logged but hasn't applied to the files yet.
pub(crate) fn has_pending(view: &IndexView) -> bool {
    !pending_uids(view).is_empty()
}

fn pending_uids(view: &IndexView) -> HashSet<u32> {
    let mut out = HashSet::new();
    let Some(head) = view.logs().last() else {
        return out;
    };
    let hdr = view.header();
    let tail = if hdr.log_file_seq == head.header.file_seq {
        hdr.log_file_tail_offset as u64
    } else {
        head.header.hdr_size as u64
    };
    let present: BTreeSet<u32> = view.messages().map(|m| m.uid()).collect();
    let mut add = |a: u32, b: u32| {
        if a <= b {
            out.extend(present.range(a..=b).copied());
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
                    add(u.uid1, u.uid2);
                }
            }
            RecordBody::KeywordUpdate(k) => {
                for u in &k.uids {
                    add(u.uid1, u.uid2);
                }
            }
            RecordBody::KeywordReset(v) | RecordBody::Expunge(v) => {
                for u in v {
                    add(u.uid1, u.uid2);
                }
            }
            RecordBody::ExpungeGuid(v) => {
                for e in v {
                    add(e.uid, e.uid);
                }
            }
            _ => {}
        }
    }
    out
}

fn index_error(e: mailsync_index::Error) -> Error {
    e.into()
}

/// Removes every file of the index in `dir` (Dovecot resets an index whose UIDVALIDITY
/// no longer matches the uidlist: maildir_sync_index → mail_index_reset).
pub(crate) fn remove_index(dir: &Path) -> Result<()> {
    for suffix in ["", ".log.2", ".cache", ".log"] {
        let p: PathBuf = dir.join(format!("{INDEX_PREFIX}{suffix}"));
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("unlink", &p, e)),
        }
    }
    Ok(())
}

/// Makes sure the index in `dir` exists (a new one gets `uid_validity`), then, under the log
/// lock, compares with the view read through the locked log (`compute`, given that view) and appends the
/// resulting EXTERNAL transaction. `stamp`: the `maildir` header for the files the changes
/// were computed from, written when it differs from the index's (as
/// maildir_sync_index_update_ext_header does). Returns the view after the write. Must be
/// called with the uidlist locked.
pub(crate) fn write_changes(
    dir: &Path,
    dir_mode: u32,
    uid_validity: u32,
    by_sync: bool,
    stamp: Option<MaildirHeader>,
    compute: impl FnOnce(&IndexView) -> ExternalChanges,
) -> Result<IndexView> {
    if !dir.is_dir() {
        crate::mailbox::mkdir_all(dir, dir_mode).map_err(|e| Error::io("mkdir", dir, e))?;
    }
    let writer = IndexWriter::open(dir, INDEX_PREFIX);
    let paths = writer.paths().clone();
    if !paths.log().exists() {
        if paths.index().exists() {
            // Dovecot's answer to a lost log next to dovecot.index: a new log continuing
            // from the index's position (written while taking the log lock).
            writer.write_index().map_err(index_error)?;
        } else {
            match writer.create(uid_validity) {
                Ok(_) => {}
                // Created by Dovecot at the same moment: use theirs.
                Err(mailsync_index::Error::Invalid(_)) if paths.log().exists() => {}
                Err(e) => return Err(index_error(e)),
            }
        }
    }
    let (_, info) = mailsync_index::locked_commit::commit_locked(
        &writer,
        true,
        |view, t| -> std::result::Result<(), mailsync_index::Error> {
            let changes = compute(view);
            let stamp = stamp.filter(|s| header_needs_write(s, view));
            if changes.is_empty() && stamp.is_none() {
                return Ok(());
            }
            if let Some(stamp) = stamp {
                if view.extension(ext::MAILDIR).is_none() {
                    t.ext_intro(ext::MAILDIR, MaildirHeader::SIZE as u32, 0, 0);
                }
                t.ext_hdr_update(ext::MAILDIR, 0, &stamp.encode());
            }
            if changes.is_empty() {
                return Ok(());
            }
            if by_sync {
                // Transaction::mark_as_sync: a sync copied these changes from a replica
                t.mark_sync();
            }
            if view.modseq_header().is_none() {
                // Track per-message modseqs from now on, as a CONDSTORE/dsync session makes
                // Dovecot do (mail_index_modseq_enable: header = the log's modseq).
                let hdr = ModseqHeader {
                    highest_modseq: view.log_modseq().max(1),
                    log_seq: 0,
                    log_offset: 0,
                };
                t.ext_intro(ext::MODSEQ, ModseqHeader::SIZE as u32, 8, 8);
                t.ext_hdr_update(ext::MODSEQ, 0, &hdr.encode());
            }
            fill(t, &changes);
            Ok(())
        },
    )
    .map_err(index_error)?;
    if info.log_offset >= mailsync_index::writer::ROTATE_MIN_SIZE {
        // The end of Dovecot's maildir sync (mail_index_sync_commit): move the tail, rotate a
        // big log, rewrite dovecot.index when the log outgrew it — unless a client's request
        // still waits for the mail files.
        writer.sync_housekeeping().map_err(index_error)?;
    }
    IndexView::open(dir, INDEX_PREFIX).map_err(index_error)
}

/// The transaction's records, in the order maildir_sync_index makes them.
fn fill(t: &mut mailsync_index::Transaction<'_>, ch: &ExternalChanges) {
    if let Some(v) = ch.uid_validity {
        // mail_index_update_header(..., uid_validity, prepend = TRUE)
        t.header_update_pre(hdr_off::UID_VALIDITY as u16, &v.to_le_bytes());
    }
    for &(uid, flags) in &ch.appends {
        t.append(uid, flags);
    }
    for &(uid, add, remove) in &ch.flag_updates {
        t.flags(uid, uid, add, remove);
    }
    for (name, add, uids) in &ch.keyword_updates {
        t.keywords(*add, name.as_bytes(), uids);
    }
    for &(uid, guid) in &ch.expunges {
        t.expunge_guid(uid, guid);
    }
    if let Some(n) = ch.next_uid {
        t.header_update(hdr_off::NEXT_UID as u16, &n.to_le_bytes());
    }
    if let Some(f) = ch.first_recent_uid {
        t.header_update(hdr_off::FIRST_RECENT_UID as u16, &f.to_le_bytes());
    }
}
