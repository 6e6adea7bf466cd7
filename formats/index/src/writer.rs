//! Appending transactions to `P.log` so that Dovecot and mailsync can share one log,
//! creating and rotating logs, and writing `P` snapshots
//! (src/lib-index/mail-index-transaction-export.c, mail-transaction-log-append.c,
//! mail-transaction-log-file.c mail_transaction_log_file_create2, mail-transaction-log.c
//! mail_transaction_log_rotate, mail-index-write.c).
//!
//! Commit protocol (all under Dovecot's fcntl lock of `P.log`, see [`crate::lock`]):
//! 1. lock `P.log`; if it was replaced meanwhile (rotation by someone else), retry on the
//!    new file;
//! 2. read it to EOF through the locked descriptor, build the current view;
//! 3. truncate anything past the last complete transaction (a torn or unfinished write);
//! 4. append the transaction in Dovecot's record order, BOUNDARY first when it has more
//!    than one record, EXTERNAL/SYNC ORed into every record; fdatasync;
//! 5. rotate when Dovecot would (size > 1 MiB, or ≥ 32 KiB and older than 5 min) and every
//!    change in the log has reached the backend (tail offset = head), then write `P`.
//!
//! `P.cache` is never written; it is deleted when a new indexid is created.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailsupport::dotlock::{DotLock, DotLockOptions};

use crate::error::{Error, Result};
use crate::format::ext;
use crate::format::index::{hdr_off, IndexFile, IndexHeader, BASE_HEADER_SIZE};
use crate::format::log::{
    encode_record, rec_type, update_modseq, AppendRecord, AtomicInc, ExpungeGuid, ExtIntro,
    ExtReset, FlagUpdate, HeaderPatch, KeywordUpdate, LogFile, LogHeader, LogStop, ModseqUpdate,
    RecordBody, UidRange, EXT_ID_BY_NAME, EXT_INTRO_FLAG_NO_SHRINK, HEADER_SIZE as LOG_HEADER_SIZE,
};
use crate::lock::{LogLock, LOG_LOCK_TIMEOUT};
use crate::paths::IndexPaths;
use crate::view::{read_optional, Sources, View};

/// mail_index_log_rotate_min_size.
pub const ROTATE_MIN_SIZE: u64 = 32 * 1024;
/// mail_index_log_rotate_max_size.
pub const ROTATE_MAX_SIZE: u64 = 1024 * 1024;
/// mail_index_log_rotate_min_age.
pub const ROTATE_MIN_AGE_SECS: u32 = 5 * 60;
/// mail_index_rewrite_max_log_bytes: past this much log beyond `P`, `P` is rewritten
/// whatever a reader would pay (mail-index-sync.c mail_index_sync_want_index_write).
/// Dovecot rewrites it from 8 KiB on (rewrite_min_log_bytes) only after a reader had to
/// replay that much (index_min_write); mailsync's readers replay only the records the log
/// past `P` names ([`crate::HeaderView`]), so the cost they would pay decides instead.
pub const INDEX_REWRITE_MAX_LOG_BYTES: u64 = 128 * 1024;
/// Below [`INDEX_REWRITE_MAX_LOG_BYTES`], `P` is left behind the log while the next reader
/// can answer from `P`'s header replaying at most this many records
/// ([`crate::HeaderView::replayed_records`]): a few small reads, where writing `P` means
/// reading, encoding and syncing every record.
pub const INDEX_REWRITE_MIN_REPLAYED_RECORDS: usize = crate::HEADER_REPLAY_MAX_RECORDS / 2;

/// What [`IndexWriter::sync_housekeeping`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Housekeeping {
    /// `log_file_tail_offset` was moved to the end of the log.
    pub tail_moved: bool,
    /// The log was rotated (and `P` written).
    pub rotated: bool,
    /// Whether `P` should be written was decided ([`IndexWriter::write_index_if_wanted`]'s
    /// rule): nothing waited for the backend.
    pub index_considered: bool,
    /// `P` was rewritten without a rotation.
    pub index_written: bool,
}

/// A record a client wrote for the backend to carry out (mail-index-sync.c
/// mail_index_sync_have_more / log_get_sync_type): a flag, keyword or expunge change that is
/// not EXTERNAL. Other non-external records (extension and header updates) need nothing from
/// the backend.
pub(crate) fn is_backend_request(type_raw: u32) -> bool {
    type_raw & rec_type::EXTERNAL == 0
        && type_raw
            & (rec_type::FLAG_UPDATE
                | rec_type::KEYWORD_UPDATE
                | rec_type::KEYWORD_RESET
                | rec_type::EXPUNGE
                | rec_type::EXPUNGE_GUID)
            != 0
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Where a committed transaction ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// file_seq of the log the transaction was written to.
    pub log_seq: u32,
    /// Offset just past the transaction in that log.
    pub log_offset: u64,
    /// HIGHESTMODSEQ after the transaction.
    pub highest_modseq: u64,
    /// The log was rotated (and `P` written) afterwards.
    pub rotated: bool,
}

/// Writes to one index (`dir/prefix*`).
#[derive(Clone, Debug)]
pub struct IndexWriter {
    paths: IndexPaths,
    lock_timeout: Duration,
    /// Rotate automatically after commits (default true).
    pub auto_rotate: bool,
}

/// Changes to one extension inside a transaction.
#[derive(Clone, Debug, Default)]
struct ExtChanges {
    /// Explicit intro sizes (hdr_size, record_size, record_align) for a new/resized ext.
    intro: Option<(u32, u16, u16)>,
    reset: Option<(u32, bool)>,
    hdr_updates: Vec<HeaderPatch>,
    /// uid → record data; a later update of a uid replaces the earlier one.
    rec_updates: BTreeMap<u32, Vec<u8>>,
    atomic_incs: Vec<AtomicInc>,
}

/// A transaction being built; nothing is written until [`Transaction::commit`].
#[derive(Debug)]
pub struct Transaction<'w> {
    writer: &'w IndexWriter,
    flags: u32,
    appends: Vec<AppendRecord>,
    flag_updates: Vec<FlagUpdate>,
    /// (add?, name) → uids, in first-use order.
    keyword_updates: Vec<(bool, Vec<u8>, Vec<u32>)>,
    expunges: Vec<ExpungeGuid>,
    exts: Vec<(String, ExtChanges)>,
    header_pre: Vec<HeaderPatch>,
    header_post: Vec<HeaderPatch>,
    modseq_updates: Vec<ModseqUpdate>,
    index_deleted: Option<bool>,
}

fn to_ranges(uids: &[u32]) -> Vec<UidRange> {
    let mut v: Vec<u32> = uids.iter().copied().filter(|&u| u != 0).collect();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<UidRange> = Vec::new();
    for u in v {
        match out.last_mut() {
            Some(r) if r.uid2.checked_add(1) == Some(u) => r.uid2 = u,
            _ => out.push(UidRange { uid1: u, uid2: u }),
        }
    }
    out
}

impl<'w> Transaction<'w> {
    /// Marks the transaction EXTERNAL: its changes already happened in the backend (what a
    /// mailbox sync writes). Without it, expunges are only requests.
    pub fn external(mut self, yes: bool) -> Self {
        if yes {
            self.flags |= rec_type::EXTERNAL;
        } else {
            self.flags &= !rec_type::EXTERNAL;
        }
        self
    }

    /// Marks the transaction SYNC (a change made by dsync).
    pub fn sync(mut self, yes: bool) -> Self {
        if yes {
            self.flags |= rec_type::SYNC;
        } else {
            self.flags &= !rec_type::SYNC;
        }
        self
    }

    /// Marks every record of this transaction SYNC, like [`Transaction::sync`], for a
    /// transaction handed out by reference (the `locked_commit` builders).
    pub fn mark_sync(&mut self) -> &mut Self {
        self.flags |= rec_type::SYNC;
        self
    }

    /// Appends a message record with `uid` (must be ≥ the index's next_uid at commit).
    pub fn append(&mut self, uid: u32, flags: u8) -> &mut Self {
        self.appends.push(AppendRecord {
            uid,
            flags,
            pad: [0; 3],
        });
        self
    }

    /// Adds and removes system flags on uid1..=uid2. `remove = 0xff` replaces the flags
    /// with `add`.
    pub fn flags(&mut self, uid1: u32, uid2: u32, add: u8, remove: u8) -> &mut Self {
        self.flag_updates.push(FlagUpdate {
            uid1,
            uid2,
            add_flags: add,
            remove_flags: remove,
            modseq_inc_flag: 0,
            padding: 0,
        });
        self
    }

    /// Raises the modseq of uid1..=uid2 without changing flags
    /// (MAIL_INDEX_MAIL_FLAG_UPDATE_MODSEQ).
    pub fn touch_modseq(&mut self, uid1: u32, uid2: u32) -> &mut Self {
        self.flag_updates.push(FlagUpdate {
            uid1,
            uid2,
            add_flags: 0,
            remove_flags: 0,
            modseq_inc_flag: 1,
            padding: 0,
        });
        self
    }

    /// Adds (`add`) or removes a keyword on `uids`.
    pub fn keywords(&mut self, add: bool, name: &[u8], uids: &[u32]) -> &mut Self {
        if let Some(k) = self
            .keyword_updates
            .iter_mut()
            .find(|(a, n, _)| *a == add && n.as_slice() == name)
        {
            k.2.extend_from_slice(uids);
        } else {
            self.keyword_updates
                .push((add, name.to_vec(), uids.to_vec()));
        }
        self
    }

    /// Expunges `uid`; `guid` is its 128-bit GUID (all zero = don't check).
    pub fn expunge_guid(&mut self, uid: u32, guid: [u8; 16]) -> &mut Self {
        self.expunges.push(ExpungeGuid { uid, guid });
        self
    }

    fn ext_mut(&mut self, name: &str) -> &mut ExtChanges {
        if let Some(i) = self.exts.iter().position(|(n, _)| n == name) {
            return &mut self.exts[i].1;
        }
        self.exts.push((name.to_string(), ExtChanges::default()));
        &mut self.exts.last_mut().expect("just pushed").1
    }

    /// Introduces (creates or grows) extension `name` with these sizes.
    pub fn ext_intro(
        &mut self,
        name: &str,
        hdr_size: u32,
        record_size: u16,
        record_align: u16,
    ) -> &mut Self {
        self.ext_mut(name).intro = Some((hdr_size, record_size, record_align));
        self
    }

    /// Resets extension `name` to `new_reset_id` (clearing its data unless `preserve`).
    pub fn ext_reset(&mut self, name: &str, new_reset_id: u32, preserve: bool) -> &mut Self {
        self.ext_mut(name).reset = Some((new_reset_id, preserve));
        self
    }

    /// Writes `data` at `offset` of extension `name`'s header.
    pub fn ext_hdr_update(&mut self, name: &str, offset: u32, data: &[u8]) -> &mut Self {
        self.ext_mut(name).hdr_updates.push(HeaderPatch {
            offset,
            data: data.to_vec(),
        });
        self
    }

    /// Sets extension `name`'s record data of `uid`.
    pub fn ext_rec_update(&mut self, name: &str, uid: u32, data: &[u8]) -> &mut Self {
        self.ext_mut(name).rec_updates.insert(uid, data.to_vec());
        self
    }

    /// Adds `diff` to extension `name`'s 1/2/4/8-byte record of `uid` (mdbox refcounts).
    pub fn ext_atomic_inc(&mut self, name: &str, uid: u32, diff: i32) -> &mut Self {
        self.ext_mut(name).atomic_incs.push(AtomicInc { uid, diff });
        self
    }

    /// Patches the base header (e.g. uid_validity at offset 24) after the other changes.
    pub fn header_update(&mut self, offset: u16, data: &[u8]) -> &mut Self {
        self.header_post.push(HeaderPatch {
            offset: offset as u32,
            data: data.to_vec(),
        });
        self
    }

    /// Patches the base header before appends (Dovecot's prepend = TRUE).
    pub fn header_update_pre(&mut self, offset: u16, data: &[u8]) -> &mut Self {
        self.header_pre.push(HeaderPatch {
            offset: offset as u32,
            data: data.to_vec(),
        });
        self
    }

    /// Raises `uid`'s modseq to at least `modseq` (uid 0: the highest modseq).
    pub fn modseq_update(&mut self, uid: u32, modseq: u64) -> &mut Self {
        self.modseq_updates.push(ModseqUpdate { uid, modseq });
        self
    }

    /// Marks the index deleted (`true`) or undeleted.
    pub fn index_deleted(&mut self, deleted: bool) -> &mut Self {
        self.index_deleted = Some(deleted);
        self
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
            && self.flag_updates.is_empty()
            && self.keyword_updates.is_empty()
            && self.expunges.is_empty()
            && self.exts.is_empty()
            && self.header_pre.is_empty()
            && self.header_post.is_empty()
            && self.modseq_updates.is_empty()
            && self.index_deleted.is_none()
    }

    /// The records in mail_index_transaction_export order (without BOUNDARY).
    fn records(&self, view: &View) -> Result<Vec<RecordBody>> {
        let mut out = Vec::new();
        if self.index_deleted == Some(false) {
            out.push(RecordBody::IndexUndeleted);
        }
        let intro_for = |name: &str, c: &ExtChanges, reset_id: Option<u32>| -> Result<RecordBody> {
            if name == ext::KEYWORDS {
                return Err(Error::Invalid(
                    "the keywords extension is only changed through keyword updates".into(),
                ));
            }
            let existing = view.extension(name);
            let need_hdr = c
                .hdr_updates
                .iter()
                .map(|p| p.offset + p.data.len() as u32)
                .max()
                .unwrap_or(0);
            let (mut hdr_size, record_size, record_align) = match (c.intro, existing) {
                (Some(i), _) => i,
                (None, Some(e)) => (e.hdr_size(), e.record_size, e.record_align),
                (None, None) => {
                    let rs = c
                        .rec_updates
                        .values()
                        .next()
                        .map(|d| d.len() as u16)
                        .unwrap_or(0);
                    (need_hdr, rs, if rs == 0 { 0 } else { 1 })
                }
            };
            if let Some(e) = existing {
                hdr_size = hdr_size.max(e.hdr_size());
            }
            hdr_size = hdr_size.max(need_hdr);
            Ok(RecordBody::ExtIntro(vec![ExtIntro {
                ext_id: EXT_ID_BY_NAME,
                reset_id: reset_id.unwrap_or_else(|| existing.map(|e| e.reset_id).unwrap_or(0)),
                hdr_size,
                record_size,
                record_align,
                flags: EXT_INTRO_FLAG_NO_SHRINK,
                name: name.as_bytes().to_vec(),
            }]))
        };
        for (name, c) in &self.exts {
            if c.intro.is_some() || c.reset.is_some() || !c.hdr_updates.is_empty() {
                out.push(intro_for(name, c, None)?);
                if let Some((id, preserve)) = c.reset {
                    out.push(RecordBody::ExtReset(ExtReset {
                        new_reset_id: id,
                        preserve_data: preserve as u8,
                    }));
                }
                for p in &c.hdr_updates {
                    // one item per record: the reader pads after each item
                    out.push(if p.offset + p.data.len() as u32 >= 65536 {
                        RecordBody::ExtHdrUpdate32(vec![p.clone()])
                    } else {
                        RecordBody::ExtHdrUpdate(vec![p.clone()])
                    });
                }
            }
        }
        if !self.header_pre.is_empty() {
            out.push(RecordBody::HeaderUpdate(self.header_pre.clone()));
        }
        if !self.appends.is_empty() {
            let mut a = self.appends.clone();
            a.sort_by_key(|r| r.uid);
            out.push(RecordBody::Append(a));
        }
        if !self.flag_updates.is_empty() {
            // a record's UID ranges must be sorted and disjoint: split where they overlap
            let mut groups: Vec<Vec<FlagUpdate>> = Vec::new();
            for u in self.flag_updates.iter() {
                match groups.last_mut() {
                    Some(g) if g.last().map(|p| p.uid2 < u.uid1).unwrap_or(true) => g.push(*u),
                    _ => groups.push(vec![*u]),
                }
            }
            for g in groups {
                out.push(RecordBody::FlagUpdate(g));
            }
        }
        for (name, c) in &self.exts {
            if !c.rec_updates.is_empty() {
                out.push(intro_for(name, c, None)?);
                let size = match out.last() {
                    Some(RecordBody::ExtIntro(i)) => i[0].record_size as usize,
                    _ => 0,
                };
                let mut raw = Vec::new();
                for (uid, data) in &c.rec_updates {
                    raw.extend_from_slice(&uid.to_le_bytes());
                    let n = data.len().min(size);
                    raw.extend_from_slice(&data[..n]);
                    raw.resize(raw.len() + (size - n), 0);
                    crate::format::codec::pad_to(&mut raw, 4);
                }
                out.push(RecordBody::ExtRecUpdate(raw));
            }
        }
        for (name, c) in &self.exts {
            if !c.atomic_incs.is_empty() {
                out.push(intro_for(name, c, None)?);
                out.push(RecordBody::ExtAtomicInc(c.atomic_incs.clone()));
            }
        }
        for (add, name, uids) in &self.keyword_updates {
            let ranges = to_ranges(uids);
            if name.is_empty() || ranges.is_empty() {
                continue;
            }
            out.push(RecordBody::KeywordUpdate(KeywordUpdate {
                modify_type: if *add { 0 } else { 1 },
                name: name.clone(),
                uids: ranges,
            }));
        }
        if !self.modseq_updates.is_empty() {
            out.push(RecordBody::ModseqUpdate(self.modseq_updates.clone()));
        }
        if !self.expunges.is_empty() {
            let mut e = self.expunges.clone();
            e.sort_by_key(|x| x.uid);
            e.dedup_by_key(|x| x.uid);
            out.push(RecordBody::ExpungeGuid(e));
        }
        if !self.header_post.is_empty() {
            out.push(RecordBody::HeaderUpdate(self.header_post.clone()));
        }
        if self.index_deleted == Some(true) {
            out.push(RecordBody::IndexDeleted);
        }
        Ok(out)
    }

    /// Encodes the transaction as appended to a log whose modseq counter is `modseq`.
    /// Returns the bytes and the modseq after them.
    pub(crate) fn encode(
        &self,
        view: &View,
        mut modseq: u64,
        version: u16,
    ) -> Result<(Vec<u8>, u64)> {
        let bodies = self.records(view)?;
        let mut buf = Vec::new();
        for b in &bodies {
            let enc = encode_record(b, self.flags)?;
            let t = u32::from_le_bytes(enc[4..8].try_into().unwrap_or([0; 4]));
            update_modseq(t, b, &mut modseq, version);
            buf.extend_from_slice(&enc);
        }
        if bodies.len() > 1 {
            let total = buf.len() as u32 + 12;
            let mut out = encode_record(&RecordBody::Boundary(total), self.flags)?;
            out.extend_from_slice(&buf);
            buf = out;
        }
        Ok((buf, modseq))
    }

    /// Writes the transaction to `P.log` (see the module docs).
    pub fn commit(self) -> Result<CommitInfo> {
        if self.is_empty() {
            let v = self.writer.view()?;
            let (seq, off) = v.log_position();
            return Ok(CommitInfo {
                log_seq: seq,
                log_offset: off,
                highest_modseq: v.highest_modseq(),
                rotated: false,
            });
        }
        let w = self.writer;
        let locked = w.lock_head()?;
        let view = &locked.view;
        let head = self.writer.head_log(view)?;
        let version = head.header.version();
        let start_modseq = head.end_modseq;
        let (bytes, new_modseq) = self.encode(view, start_modseq, version)?;
        let end = head.sync_offset + bytes.len() as u64;
        let file = &locked.lock.file;
        file.write_all_at_end(&bytes)
            .map_err(|e| Error::io("write", &locked.lock.path, e))?;
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", &locked.lock.path, e))?;
        let log_seq = head.header.file_seq;
        // fully synced when the tail offset covers everything, including this transaction
        let tail = view.header().log_file_tail_offset as u64;
        let fully_synced = tail == head.sync_offset && self.flags & rec_type::EXTERNAL != 0;
        let mut rotated = false;
        if w.auto_rotate && fully_synced && want_rotate(end, &head.header) {
            let after = w.view_locked(&locked.lock)?;
            w.rotate_locked(&locked.lock, after)?;
            rotated = true;
        }
        let highest_modseq = new_modseq.max(view.highest_modseq());
        drop(locked);
        Ok(CommitInfo {
            log_seq,
            log_offset: end,
            highest_modseq,
            rotated,
        })
    }
}

trait WriteAtEnd {
    fn write_all_at_end(&self, data: &[u8]) -> std::io::Result<()>;
}

impl WriteAtEnd for std::fs::File {
    /// The descriptor is O_APPEND: every write goes to the end.
    fn write_all_at_end(&self, data: &[u8]) -> std::io::Result<()> {
        let mut f: &std::fs::File = self;
        f.write_all(data)
    }
}

/// mail_transaction_log_want_rotate.
pub fn want_rotate(size: u64, hdr: &LogHeader) -> bool {
    if hdr.version() < 0x0103 {
        return true;
    }
    if size > ROTATE_MAX_SIZE {
        return true;
    }
    if size < ROTATE_MIN_SIZE {
        return false;
    }
    hdr.create_stamp < now_secs().saturating_sub(ROTATE_MIN_AGE_SECS)
}

struct Locked {
    lock: LogLock,
    view: View,
}

/// What [`IndexWriter::sync_housekeeping`]'s first look found.
enum FirstLook {
    /// Nothing to do.
    Settled,
    /// Something to do, or the look can't tell; with the write rule's answer for `P` when
    /// the look decided it.
    Unsettled { write_wanted: Option<bool> },
}

/// The write rule below [`INDEX_REWRITE_MAX_LOG_BYTES`]: `P` is wanted when the next quick
/// open (`head`) declines or replays more than [`INDEX_REWRITE_MIN_REPLAYED_RECORDS`].
fn replay_wants_write(head: Option<&crate::HeaderView>) -> bool {
    head.is_none_or(|h| h.replayed_records() > INDEX_REWRITE_MIN_REPLAYED_RECORDS)
}

impl IndexWriter {
    /// A writer for `dir/prefix` (e.g. "dovecot.index").
    pub fn open(dir: &Path, prefix: &str) -> IndexWriter {
        IndexWriter::from_paths(IndexPaths::new(dir, prefix))
    }

    pub fn from_paths(paths: IndexPaths) -> IndexWriter {
        IndexWriter {
            paths,
            lock_timeout: LOG_LOCK_TIMEOUT,
            auto_rotate: true,
        }
    }

    /// Changes how long to wait for the log lock (default 180 s as Dovecot).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> IndexWriter {
        self.lock_timeout = timeout;
        self
    }

    pub fn paths(&self) -> &IndexPaths {
        &self.paths
    }

    /// A new, empty transaction (not EXTERNAL, not SYNC).
    pub fn begin(&self) -> Transaction<'_> {
        Transaction {
            writer: self,
            flags: 0,
            appends: Vec::new(),
            flag_updates: Vec::new(),
            keyword_updates: Vec::new(),
            expunges: Vec::new(),
            exts: Vec::new(),
            header_pre: Vec::new(),
            header_post: Vec::new(),
            modseq_updates: Vec::new(),
            index_deleted: None,
        }
    }

    /// The current view (without taking the lock).
    pub fn view(&self) -> Result<View> {
        View::open_paths(&self.paths)
    }

    /// Creates a brand-new index: `P.log` with a new indexid, file_seq 1, no history
    /// (prev_file_seq 0), then a first transaction setting UIDVALIDITY. Any stale
    /// `P.cache` is deleted. Fails if `P.log` or `P` exists.
    pub fn create(&self, uid_validity: u32) -> Result<u32> {
        self.create_with(uid_validity, |_| {})
    }

    /// [`IndexWriter::create`], and a second transaction filled by `more` (e.g. a
    /// backend's header extension), both written into the new log before it is renamed
    /// into place: a crash leaves either no index or the whole of it, never a log
    /// without its UIDVALIDITY or extension. The bytes are those two separate commits
    /// would write.
    pub fn create_with(
        &self,
        uid_validity: u32,
        more: impl FnOnce(&mut Transaction<'_>),
    ) -> Result<u32> {
        if self.paths.log().exists() || self.paths.index().exists() {
            return Err(Error::Invalid(format!(
                "{}: index already exists",
                self.paths.index().display()
            )));
        }
        let mut indexid = now_secs();
        // a stale cache (or anything else) must never match the new indexid
        if let Ok(Some(c)) = read_optional(&self.paths.cache()) {
            if crate::format::codec::u32_at(&c, 4) == Some(indexid) {
                indexid = indexid.wrapping_add(1);
            }
        }
        let _ = std::fs::remove_file(self.paths.cache());
        let hdr = LogHeader::new(indexid, 1, 1, now_secs());
        let mut content = hdr.encode().to_vec();
        let mut first = self.begin().external(true);
        first.header_update(hdr_off::UID_VALIDITY as u16, &uid_validity.to_le_bytes());
        let mut second = self.begin();
        more(&mut second);
        for t in [first, second] {
            if t.is_empty() {
                continue;
            }
            let view = View::build(
                &self.paths,
                Sources {
                    index: None,
                    log: Some(content.clone()),
                    log2: None,
                },
            )?;
            let modseq = view.logs().last().map_or(0, |head| head.end_modseq);
            let (bytes, _) = t.encode(&view, modseq, hdr.version())?;
            content.extend_from_slice(&bytes);
        }
        self.create_log_file(&content, None)?;
        Ok(indexid)
    }

    /// Writes a new `P.log` atomically through the `.newlock` dotlock
    /// (mail_transaction_log_file_create). With `link_old`, the current `P.log` becomes
    /// `P.log.2` first (rotation).
    fn create_log_file(&self, content: &[u8], link_old: Option<u32>) -> Result<()> {
        let log = self.paths.log();
        let opts = DotLockOptions {
            timeout: self.lock_timeout,
            mode: link_old.unwrap_or(0o600),
            ..DotLockOptions::index_log_create()
        };
        let mut lock = DotLock::acquire(&log, &opts).map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                Error::LockTimeout {
                    path: self.paths.log_newlock(),
                }
            } else {
                Error::io("dotlock", &self.paths.log_newlock(), e)
            }
        })?;
        let lock_path = lock.lock_path().to_path_buf();
        lock.file()
            .write_all(content)
            .map_err(|e| Error::io("write", &lock_path, e))?;
        if link_old.is_some() {
            let log2 = self.paths.log2();
            let _ = std::fs::remove_file(&log2);
            if let Err(e) = std::fs::hard_link(&log, &log2) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(Error::io("link", &log2, e));
                }
            }
        } else if log.exists() {
            return Err(Error::Invalid(format!(
                "{}: created by someone else meanwhile",
                log.display()
            )));
        }
        // fsync the new log, rename it over P.log, fsync the directory; dropping the lock on
        // an error path above removes the .newlock file.
        lock.replace()
            .map_err(|e| Error::io("rename", &lock_path, e))
    }

    /// Locks the head log (creating one from `P` when only `P` exists) and builds the view
    /// through the locked descriptor, truncating an unfinished tail.
    fn lock_head(&self) -> Result<Locked> {
        let lock = self.acquire_head()?;
        self.view_of_head(lock)
    }

    /// The lock on the head log `P.log` (created from `P` when missing), held on the file
    /// that is `P.log` now.
    fn acquire_head(&self) -> Result<LogLock> {
        loop {
            let lock = match LogLock::acquire(&self.paths.log(), self.lock_timeout)? {
                Some(l) => l,
                None => {
                    self.create_log_from_index()?;
                    continue;
                }
            };
            // the log may have been rotated while we waited: lock the new one
            let same = std::fs::metadata(self.paths.log())
                .map(|m| {
                    let f = lock.file.metadata().ok();
                    f.map(|f| f.ino() == m.ino() && f.dev() == m.dev())
                        .unwrap_or(false)
                })
                .unwrap_or(false);
            if same {
                return Ok(lock);
            }
        }
    }

    /// The view through the locked descriptor, the head log's unfinished tail truncated.
    fn view_of_head(&self, lock: LogLock) -> Result<Locked> {
        let view = self.view_locked(&lock)?;
        let head = self.head_log(&view)?;
        if let LogStop::Corrupt { offset, reason } = &head.stop {
            return Err(Error::corrupt(&self.paths.log(), *offset, reason.clone()));
        }
        if head.file_size > head.sync_offset {
            // mail_transaction_log_append_locked: drop garbage past the last complete
            // transaction so readers don't stop at it
            lock.file
                .set_len(head.sync_offset)
                .map_err(|e| Error::io("ftruncate", &self.paths.log(), e))?;
        }
        Ok(Locked { lock, view })
    }

    /// `P` holds everything the locked head log holds: `P` names the log (indexid and
    /// file_seq) and its head offset is the log's length. Read from `P`'s base header, the
    /// log's header and its size, so a writer with nothing to write decodes neither file.
    /// `false` when anything is missing, short or unlike that (the full view decides).
    fn index_is_current(&self, lock: &LogLock) -> Result<bool> {
        Ok(self.current_index_header(lock)?.is_some())
    }

    /// `P`'s base header when `P` is current ([`Self::index_is_current`]).
    fn current_index_header(&self, lock: &LogLock) -> Result<Option<IndexHeader>> {
        Ok(self
            .index_lag(lock)?
            .and_then(|(p, _, lag)| (lag == 0).then_some(p)))
    }

    /// `P`'s base header and how many bytes the locked head log holds past it (0: `P` is
    /// current), from `P`'s base header, the log's header and its size; `None` when `P` is
    /// missing or short or names another log (indexid, file_seq), or its head offset lies
    /// past the log's end.
    fn index_lag(&self, lock: &LogLock) -> Result<Option<(IndexHeader, LogHeader, u64)>> {
        let path = self.paths.index();
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let log_len = lock
            .file
            .metadata()
            .map_err(|e| Error::io("fstat", &lock.path, e))?
            .len();
        let mut base = [0u8; BASE_HEADER_SIZE];
        let mut log_header = [0u8; LOG_HEADER_SIZE];
        if file.read_exact_at(&mut base, 0).is_err()
            || lock.file.read_exact_at(&mut log_header, 0).is_err()
        {
            return Ok(None);
        }
        let p = IndexHeader::decode(&base);
        let log = LogHeader::decode_raw(&log_header);
        let head = u64::from(p.log_file_head_offset);
        let same_log = p.indexid == log.indexid && p.log_file_seq == log.file_seq;
        Ok((same_log && head <= log_len).then(|| (p, log, log_len - head)))
    }

    /// The housekeeping's first look, from `P`'s base header, the log's header and size,
    /// and the next reader's quick open (a short replay of the log past `P`), not from
    /// every record: nothing to do when no rotation is due, the tail offset is at the log's
    /// end and `P` is current or not wanted ([`IndexWriter::index_write_wanted`]'s rule).
    /// Unsettled when in doubt (the housekeeping reads the full view and decides), with the
    /// write rule's answer when the look got that far.
    fn first_look(&self, lock: &LogLock) -> Result<FirstLook> {
        let unsettled = |write_wanted| Ok(FirstLook::Unsettled { write_wanted });
        let Some((p, log, lag)) = self.index_lag(lock)? else {
            return unsettled(None);
        };
        let log_len = u64::from(p.log_file_head_offset) + lag;
        if want_rotate(log_len, &log) || lag > INDEX_REWRITE_MAX_LOG_BYTES {
            return unsettled(None);
        }
        if lag == 0 {
            if p.log_file_tail_offset == p.log_file_head_offset {
                return Ok(FirstLook::Settled);
            }
            return unsettled(None);
        }
        let head = crate::HeaderView::open_unguarded(&self.paths)?;
        let write_wanted = replay_wants_write(head.as_ref());
        match head {
            Some(h) if h.state().1 .1 == log_len && h.tail_at_log_end() && !write_wanted => {
                Ok(FirstLook::Settled)
            }
            _ => unsettled(Some(write_wanted)),
        }
    }

    /// The head log of a view built from the log file: an error naming the log when the
    /// view has none (it was built from `P` alone).
    pub(crate) fn head_log<'v>(&self, view: &'v View) -> Result<&'v LogFile> {
        view.logs().last().ok_or_else(|| {
            Error::Invalid(format!("{}: log not usable", self.paths.log().display()))
        })
    }

    fn view_locked(&self, lock: &LogLock) -> Result<View> {
        #[cfg(test)]
        VIEWS_READ.with(|v| v.set(v.get() + 1));
        let view = View::for_writer(&self.paths, lock)?;
        let head = view.logs().last();
        match (head, view.header_on_disk()) {
            (None, Some(h)) => {
                let log = LogFile::decode(&lock.read_all()?, &lock.path);
                Err(match log {
                    Ok(l) if l.header.indexid != h.indexid => Error::IndexIdMismatch {
                        path: self.paths.index(),
                        index_id: h.indexid,
                        log_id: l.header.indexid,
                    },
                    Ok(_) => Error::Invalid("log not usable".into()),
                    Err(e) => e,
                })
            }
            _ => Ok(view),
        }
    }

    /// Dovecot's answer to a missing `P.log` next to `P`: a new log continuing from the
    /// index's position (file_seq + 1, prev = the index's seq/head offset).
    fn create_log_from_index(&self) -> Result<()> {
        let data = read_optional(&self.paths.index())?.ok_or_else(|| Error::NotFound {
            path: self.paths.index(),
        })?;
        let idx = IndexFile::decode(&data, &self.paths.index())?;
        let h = idx.header();
        let highest = idx
            .ext(ext::MODSEQ)
            .and_then(|e| ext::ModseqHeader::decode(&e.data))
            .map(|m| m.highest_modseq)
            .unwrap_or(1);
        let mut hdr = LogHeader::new(h.indexid, h.log_file_seq + 1, highest, now_secs());
        hdr.prev_file_seq = h.log_file_seq;
        hdr.prev_file_offset = h.log_file_head_offset;
        match self.create_log_file(&hdr.encode(), None) {
            Err(Error::Invalid(_)) => Ok(()), // someone else created it
            r => r,
        }
    }

    /// What a backend does at the end of its sync (mail_index_sync_commit), for a backend
    /// that logs its own changes as EXTERNAL transactions: when no client request waits past
    /// `log_file_tail_offset` (every change in the log has reached the mail files), move the
    /// tail to the end of the log, then rotate the log when it is due (§2.4 of the index
    /// spec: over 1 MiB, or over 32 KiB and older than 5 minutes), or rewrite `P` when it is
    /// wanted ([`IndexWriter::write_index_if_wanted`]'s rule). With a request pending,
    /// nothing is done: the backend (or Dovecot) must carry it out first.
    pub fn sync_housekeeping(&self) -> Result<Housekeeping> {
        let lock = self.acquire_head()?;
        let looked = match self.first_look(&lock)? {
            FirstLook::Settled => {
                return Ok(Housekeeping {
                    index_considered: true,
                    ..Housekeeping::default()
                })
            }
            FirstLook::Unsettled { write_wanted } => write_wanted,
        };
        let Locked { lock, view } = self.view_of_head(lock)?;
        let mut done = Housekeeping::default();
        let head = self.head_log(&view)?;
        // The tail is an offset in the log the header names; in a newer log everything is
        // past it.
        let tail = if view.header().log_file_seq == head.header.file_seq {
            view.header().log_file_tail_offset as u64
        } else {
            0
        };
        if head
            .records
            .iter()
            .any(|r| r.offset >= tail && is_backend_request(r.type_raw))
        {
            return Ok(done);
        }
        let mut end = head.sync_offset;
        if tail != end {
            // one EXTERNAL HEADER_UPDATE of 4 bytes; its size doesn't depend on the value
            let version = head.header.version();
            let mut probe = self.begin().external(true);
            probe.header_update(hdr_off::LOG_FILE_TAIL_OFFSET as u16, &[0; 4]);
            let (probe, _) = probe.encode(&view, head.end_modseq, version)?;
            let new_end = u32::try_from(end + probe.len() as u64)
                .map_err(|_| Error::Invalid("log too large".into()))?;
            let mut t = self.begin().external(true);
            t.header_update(hdr_off::LOG_FILE_TAIL_OFFSET as u16, &new_end.to_le_bytes());
            let (bytes, _) = t.encode(&view, head.end_modseq, version)?;
            lock.file
                .write_all_at_end(&bytes)
                .map_err(|e| Error::io("write", &lock.path, e))?;
            lock.file
                .sync_data()
                .map_err(|e| Error::io("fdatasync", &lock.path, e))?;
            end = new_end as u64;
            done.tail_moved = true;
        }
        let rotate = want_rotate(end, &head.header);
        // `P` as this view read it: only a holder of the log lock rewrites it
        let grown = match view.header_on_disk() {
            Some(h) if h.log_file_seq == head.header.file_seq => {
                Some(end.saturating_sub(h.log_file_head_offset as u64))
            }
            _ => None,
        };
        done.index_considered = true;
        if !rotate {
            // the first look's answer stands: a tail move appends a header change only
            let wanted = match (grown, looked) {
                (Some(g), Some(w)) if g <= INDEX_REWRITE_MAX_LOG_BYTES => w,
                _ => self.index_write_wanted(grown)?,
            };
            if !wanted {
                return Ok(done);
            }
        }
        // The view read under the lock is the log as it is, unless the tail move above
        // appended to it: then it is read again (one view at a time).
        let after = if done.tail_moved {
            drop(view);
            self.view_locked(&lock)?
        } else {
            view
        };
        if rotate {
            self.rotate_locked(&lock, after)?;
            done.rotated = true;
            return Ok(done);
        }
        let (map, _) = after.into_parts();
        self.write_index_file(&map, &lock)?;
        done.index_written = true;
        Ok(done)
    }

    /// Rotates the log now (under the lock) and writes `P`, as Dovecot does when it
    /// decides to rotate. Safe only when the backend has every change of the log.
    pub fn rotate(&self) -> Result<()> {
        let locked = self.lock_head()?;
        let Locked { lock, view } = locked;
        self.rotate_locked(&lock, view)
    }

    fn rotate_locked(&self, lock: &LogLock, view: View) -> Result<()> {
        let head = self.head_log(&view)?;
        let (indexid, file_seq, sync_offset) =
            (head.header.indexid, head.header.file_seq, head.sync_offset);
        let initial_modseq = view.highest_modseq().max(head.end_modseq).max(1);
        let mode = lock
            .file
            .metadata()
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600);
        let now = now_secs();
        let mut hdr = LogHeader::new(indexid, file_seq + 1, initial_modseq, now);
        hdr.prev_file_seq = file_seq;
        hdr.prev_file_offset = sync_offset as u32;
        self.create_log_file(&hdr.encode(), Some(mode))?;
        // mail_index_write(want_rotate): the index points to the start of the new log
        let (mut map, _) = view.into_parts();
        map.set_hdr_u32(hdr_off::LOG_FILE_SEQ, hdr.file_seq);
        map.set_hdr_u32(hdr_off::LOG_FILE_HEAD_OFFSET, hdr.hdr_size as u32);
        map.set_hdr_u32(hdr_off::LOG_FILE_TAIL_OFFSET, hdr.hdr_size as u32);
        map.set_hdr_u32(hdr_off::LOG2_ROTATE_TIME, now);
        self.write_index_file(&map, lock)
    }

    /// Writes `P` from the current state (temp file, fsync, rename). The tail offset written
    /// is the log's actual sync position for the backend, so pending (non-external)
    /// changes stay pending.
    pub fn write_index(&self) -> Result<()> {
        self.write_index_locked(self.lock_head()?)
    }

    /// The close of a backend handle that wrote this index and applies every change to
    /// its mail files as it logs it (Maildir): when `P`'s tail offset lags the log's end,
    /// the housekeeping moves it there first ([`IndexWriter::sync_housekeeping`], as the
    /// end of Dovecot's index sync does), so the next reader of the header needn't read the
    /// records before it (a non-EXTERNAL record such as a modseq raise keeps the tail
    /// where it was); then `P` is written when wanted ([`IndexWriter::write_index_if_wanted`],
    /// decided once, by the housekeeping when it gets that far). Nothing is read but
    /// headers and a short replay when there is nothing to do.
    pub fn close_synced(&self) -> Result<()> {
        if !self.sync_housekeeping()?.index_considered {
            self.write_index_if_wanted()?;
        }
        Ok(())
    }

    /// Writes `P` (as [`IndexWriter::write_index`]) when the log has grown past it and
    /// leaving it behind would cost the next reader more than a short replay
    /// ([`IndexWriter::index_write_wanted`]); true when written. What a handle that changed
    /// the index does when it is done.
    pub fn write_index_if_wanted(&self) -> Result<bool> {
        let lock = self.acquire_head()?;
        let grown = self.index_lag(&lock)?.map(|(_, _, lag)| lag);
        if grown == Some(0) || !self.index_write_wanted(grown)? {
            return Ok(false);
        }
        let locked = self.view_of_head(lock)?;
        self.write_index_locked(locked)?;
        Ok(true)
    }

    /// Dovecot's rule for rewriting `P` (mail-index-sync.c mail_index_sync_want_index_write)
    /// with mailsync's reader in place of its `index_min_write`: `P` is missing or of
    /// another log (`grown` `None`), the log has grown more than
    /// [`INDEX_REWRITE_MAX_LOG_BYTES`] past it, or the next reader's quick open
    /// ([`crate::HeaderView`]) would decline or replay more than
    /// [`INDEX_REWRITE_MIN_REPLAYED_RECORDS`] records. For a holder of the log lock.
    fn index_write_wanted(&self, grown: Option<u64>) -> Result<bool> {
        match grown {
            None => Ok(true),
            Some(0) => Ok(false),
            Some(g) if g > INDEX_REWRITE_MAX_LOG_BYTES => Ok(true),
            Some(_) => Ok(replay_wants_write(
                crate::HeaderView::open_unguarded(&self.paths)?.as_ref(),
            )),
        }
    }

    /// Writes `P` (as [`IndexWriter::write_index`]) when the log holds anything past it;
    /// false when `P` was current. For a caller that wants `P` current whatever the next
    /// reader would pay (a handle's close uses [`IndexWriter::write_index_if_wanted`]).
    pub fn write_index_if_behind(&self) -> Result<bool> {
        let lock = self.acquire_head()?;
        if self.index_is_current(&lock)? {
            return Ok(false);
        }
        let locked = self.view_of_head(lock)?;
        let end = locked.view.log_position();
        let current = locked
            .view
            .header_on_disk()
            .is_some_and(|h| (h.log_file_seq, h.log_file_head_offset as u64) == end);
        if current {
            return Ok(false);
        }
        self.write_index_locked(locked)?;
        Ok(true)
    }

    fn write_index_locked(&self, locked: Locked) -> Result<()> {
        let Locked { lock, view } = locked;
        let (map, _) = view.into_parts();
        self.write_index_file(&map, &lock)
    }

    /// Writes `P` (temp file, fdatasync, rename, directory fsync) with the permissions of
    /// the log `lock` holds, and its owner where this process may give it (root writing
    /// into a user's mailbox): the index is readable by whoever reads the log.
    fn write_index_file(&self, map: &IndexFile, lock: &LogLock) -> Result<()> {
        let path = self.paths.index();
        let tmp = self.paths.dir.join(format!("{}.tmp", self.paths.prefix));
        let like = lock.file.metadata().ok();
        let mode = like
            .as_ref()
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600);
        let data = map.encode();
        let result = (|| {
            let _ = std::fs::remove_file(&tmp);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
                .map_err(|e| Error::io("open", &tmp, e))?;
            if let (Some(like), Ok(mine)) = (&like, f.metadata()) {
                if (like.uid(), like.gid()) != (mine.uid(), mine.gid()) {
                    // only root may; anyone else keeps the file as created
                    let _ = std::os::unix::fs::fchown(&f, Some(like.uid()), Some(like.gid()));
                }
            }
            f.write_all(&data)
                .map_err(|e| Error::io("write", &tmp, e))?;
            f.sync_data().map_err(|e| Error::io("fdatasync", &tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
            sync_dir(&self.paths.dir)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", dir, e))
}

#[cfg(test)]
thread_local! {
    /// How many views this thread's writers read under their lock, for tests.
    static VIEWS_READ: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::rec_flag;
    use crate::locked_commit::commit_locked_synced;

    /// A housekeeping that finds the tail at the log's end (the commit moved it) and `P`
    /// far behind writes `P` from the view it read under its lock: one view, not two.
    #[test]
    fn housekeeping_with_no_tail_to_move_reads_one_view() {
        let dir = tempfile::tempdir().unwrap();
        let w = IndexWriter::open(dir.path(), "dovecot.index");
        w.create(781).unwrap();
        commit_locked_synced(&w, true, |_, t| -> Result<()> {
            for uid in 1..=5_000 {
                t.append(uid, rec_flag::SEEN);
            }
            Ok(())
        })
        .unwrap();
        let start = VIEWS_READ.with(|v| v.get());
        let done = w.sync_housekeeping().unwrap();
        assert!(!done.tail_moved, "{done:?}");
        assert!(done.index_written || done.rotated, "{done:?}");
        assert_eq!(VIEWS_READ.with(|v| v.get()) - start, 1);
        let after = View::open(dir.path(), "dovecot.index").unwrap();
        assert_eq!(after.messages().count(), 5_000);
        assert_eq!(after.uid_validity(), 781);
    }
}
