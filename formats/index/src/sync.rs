//! Applying transaction log records to an index map, as Dovecot does when it syncs a map
//! from the log (src/lib-index/mail-index-sync-update.c, mail-index-sync-ext.c,
//! mail-index-sync-keywords.c, mail-index-modseq.c).
//!
//! Invariants kept on the map after every record: records are sorted by UID and unique,
//! `record_size` is a multiple of every extension's alignment, every extension's record
//! data lies inside the record. Problems Dovecot reports with mail_index_sync_set_corrupted
//! skip the rest of the record and are collected in `notes`; the map is fsck'd at the end
//! when any occurred (Dovecot does the same).

use crate::format::codec::{put_bytes, put_u64, u64_at};
use crate::format::ext::{self, KeywordsHeader, ModseqHeader};
use crate::format::index::{
    ext_hdr_check, hdr_flag, hdr_off, partition_point, rec_flag, Extension, IndexFile, IndexHeader,
    RECORD_BASE_SIZE, RECORD_MIN_SIZE,
};
use crate::format::log::{
    ext_rec_entries, ext_rec_whole, rec_type, AtomicInc, ExtIntro, ExtReset, FlagUpdate,
    HeaderPatch, KeywordUpdate, LogFile, LogRecord, RecordBody, UidRange, EXT_ID_BY_NAME,
    EXT_INTRO_FLAG_NO_SHRINK,
};

/// A position in the log history: (file_seq, offset).
pub type LogPos = (u32, u64);

/// The extension the following EXT_* records apply to (ctx->cur_ext_map_idx).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CurExt {
    /// No intro seen yet ((uint32_t)-1).
    None,
    /// The last intro was broken: ignore ((uint32_t)-2 with cur_ext_ignore).
    Broken,
    /// Map index, whether updates are ignored (reset_id mismatch), record size of the intro.
    Ext {
        idx: usize,
        ignore: bool,
        record_size: u16,
    },
}

/// Replays log records into a map.
pub(crate) struct Syncer<'a> {
    pub map: IndexFile,
    logs: &'a [LogFile],
    cur_ext: CurExt,
    /// The `modseq` extension is being maintained (ctx->mmap != NULL).
    modseq_active: bool,
    /// Position and modseq of the record being applied.
    cur_pos: LogPos,
    cur_modseq: u64,
    pub notes: Vec<String>,
    pub errors: bool,
    /// INDEX_DELETED (external) seen last, not undone.
    pub index_deleted: bool,
    /// A step touched every record of the map (a modseq fill, a layout change, an
    /// extension's data reset, the dirty recheck): a sparse replay can't stand for it.
    pub touched_every_record: bool,
    /// Messages of the index whose records the map doesn't hold (a sparse replay,
    /// [`Syncer::for_records_of`]): `messages_count` counts them, positions don't.
    hidden: usize,
}

impl<'a> Syncer<'a> {
    pub fn new(map: IndexFile, logs: &'a [LogFile], start: LogPos, start_modseq: u64) -> Self {
        let mut s = Syncer::unbegun(map, logs, start, start_modseq);
        s.begin_modseqs(start);
        s
    }

    /// A syncer of `map` from `start`, its modseq tracking active when the map has the
    /// `modseq` header, before [`Syncer::begin_modseqs`].
    fn unbegun(map: IndexFile, logs: &'a [LogFile], start: LogPos, start_modseq: u64) -> Self {
        let modseq_active = map
            .ext(ext::MODSEQ)
            .and_then(|e| ModseqHeader::decode(&e.data))
            .is_some();
        Syncer {
            map,
            logs,
            cur_ext: CurExt::None,
            modseq_active,
            cur_pos: start,
            cur_modseq: start_modseq,
            notes: Vec::new(),
            errors: false,
            index_deleted: false,
            touched_every_record: false,
            hidden: 0,
        }
    }

    /// A syncer (without [`Syncer::begin_modseqs`], which its caller decides) whose map
    /// holds, in UID order, only some records of the
    /// index (every record the records to apply name), `hidden` of its messages not: the
    /// counters stay the index's, positions are those of the held records. Correct only
    /// when no record applied touches a record the map doesn't hold and the record layout
    /// doesn't change ([`crate::HeaderView`] checks both).
    pub fn for_records_of(
        map: IndexFile,
        hidden: usize,
        logs: &'a [LogFile],
        start: LogPos,
        start_modseq: u64,
    ) -> Self {
        let mut s = Syncer::unbegun(map, logs, start, start_modseq);
        s.hidden = hidden;
        s
    }

    /// mail_index_modseq_sync_begin: gives the records the modseqs logged between the
    /// `modseq` header's position and `start` ([`Syncer::new`]'s first step). When that
    /// changes record modseqs, `touched_every_record` tells a sparse replay it can't stand
    /// for it.
    pub fn begin_modseqs(&mut self, start: LogPos) {
        if self.modseq_active {
            self.modseq_sync_init(start);
        }
    }

    fn corrupted(&mut self, reason: String) {
        self.errors = true;
        self.notes.push(format!(
            "log seq={} offset={}: {reason}",
            self.cur_pos.0, self.cur_pos.1
        ));
    }

    // ---- map helpers --------------------------------------------------------------

    fn rs(&self) -> usize {
        self.map.record_size()
    }

    /// The number of records the map holds: `messages_count` less the hidden ones.
    fn count(&self) -> usize {
        (self.map.hdr_u32(hdr_off::MESSAGES_COUNT) as usize).saturating_sub(self.hidden)
    }

    fn uid_at(&self, seq0: usize) -> u32 {
        self.map.record_uid(seq0)
    }

    /// mail_index_lookup_seq: 0-based position of `uid`.
    fn lookup_seq(&self, uid: u32) -> Option<usize> {
        self.map.position_of(uid, self.count())
    }

    /// mail_index_lookup_seq_range: 0-based positions covering uid1..=uid2.
    fn lookup_range(&self, uid1: u32, uid2: u32) -> Option<(usize, usize)> {
        let n = self.count();
        let first = partition_point(n, |i| self.uid_at(i) < uid1);
        let last = partition_point(n, |i| self.uid_at(i) <= uid2);
        if first >= last {
            None
        } else {
            Some((first, last - 1))
        }
    }

    fn flags_at(&self, seq0: usize) -> u8 {
        self.map.records[seq0 * self.rs() + 4]
    }

    fn set_flags_at(&mut self, seq0: usize, f: u8) {
        let rs = self.rs();
        self.map.records[seq0 * rs + 4] = f;
    }

    fn hdr(&self, off: usize) -> u32 {
        self.map.hdr_u32(off)
    }

    fn set_hdr(&mut self, off: usize, v: u32) {
        self.map.set_hdr_u32(off, v)
    }

    // ---- modseq (mail-index-modseq.c) ----------------------------------------------

    fn modseq_ext(&self) -> Option<usize> {
        self.map.ext_index(ext::MODSEQ)
    }

    fn modseq_header(&self) -> Option<ModseqHeader> {
        let e = self.map.extensions.get(self.modseq_ext()?)?;
        ModseqHeader::decode(&e.data)
    }

    /// mail_index_modseq_update: sets modseqs of seq1..=seq2 (0-based) that are zero, or
    /// (with `nonzeros`) lower than `modseq`.
    fn modseq_update(&mut self, modseq: u64, nonzeros: bool, seq1: usize, seq2: usize) {
        let Some(ei) = self.modseq_ext() else { return };
        let e = &self.map.extensions[ei];
        if e.record_size < 8 {
            return;
        }
        let off = e.record_offset as usize;
        let rs = self.rs();
        for seq in seq1..=seq2.min(self.count().saturating_sub(1)) {
            if self.count() == 0 {
                break;
            }
            let at = seq * rs + off;
            let cur = u64_at(&self.map.records, at).unwrap_or(0);
            if cur == 0 || (nonzeros && cur < modseq) {
                put_bytes(&mut self.map.records, at, &modseq.to_le_bytes());
            }
        }
    }

    /// mail_index_modseq_update_to_highest with the current record's modseq.
    fn modseq_to_highest(&mut self, seq1: usize, seq2: usize) {
        if self.modseq_active {
            self.modseq_update(self.cur_modseq, true, seq1, seq2);
        }
    }

    /// Records of the log history in [start, end), or `None` when the history doesn't
    /// reach back to `start` (mail_transaction_log_view_set failing).
    fn records_between(&self, start: LogPos, end: LogPos) -> Option<Vec<&'a LogRecord>> {
        let logs = self.logs;
        let mut tail = logs.iter().position(|f| f.header.file_seq == start.0);
        let mut from = start.1;
        if tail.is_none() {
            tail = logs
                .iter()
                .position(|f| f.header.file_seq >= start.0 && f.header.prev_file_seq == 0);
            from = 0;
        }
        let tail = tail?;
        let mut out = Vec::new();
        for f in &logs[tail..] {
            if f.header.file_seq > end.0 {
                break;
            }
            for r in &f.records {
                let pos = (f.header.file_seq, r.offset);
                if (f.header.file_seq == logs[tail].header.file_seq && r.offset < from)
                    || pos >= end
                {
                    continue;
                }
                out.push(r);
            }
        }
        Some(out)
    }

    /// mail_index_modseq_update_old_rec.
    fn modseq_update_old_rec(&mut self, r: &LogRecord) {
        let mut ranges: Vec<UidRange> = Vec::new();
        match &r.body {
            RecordBody::Append(v) => {
                for a in v {
                    if let Some(s) = self.lookup_seq(a.uid) {
                        self.modseq_update(r.modseq, true, s, s);
                    }
                }
                return;
            }
            RecordBody::FlagUpdate(v) => ranges.extend(v.iter().map(|u| UidRange {
                uid1: u.uid1,
                uid2: u.uid2,
            })),
            RecordBody::KeywordUpdate(k) => ranges.extend(k.uids.iter().copied()),
            RecordBody::KeywordReset(v) => ranges.extend(v.iter().copied()),
            _ => return,
        }
        for u in ranges {
            if let Some((a, b)) = self.lookup_range(u.uid1, u.uid2) {
                self.modseq_update(r.modseq, true, a, b);
            }
        }
    }

    /// mail_index_modseq_sync_init: fills modseqs between the position the modseq header
    /// was valid for and `end`.
    fn modseq_sync_init(&mut self, end: LogPos) {
        let Some(hdr) = self.modseq_header() else {
            return;
        };
        if (end.0, end.1) <= (hdr.log_seq, hdr.log_offset as u64) {
            return;
        }
        // records without modseq data (`modseq_update` needs 8 bytes) keep theirs
        self.touched_every_record |= self
            .modseq_ext()
            .is_some_and(|i| self.map.extensions[i].record_size >= 8);
        let start = (hdr.log_seq.max(1), hdr.log_offset as u64);
        let n = self.count();
        if let Some(recs) = self.records_between(start, end) {
            if n > 0 {
                self.modseq_update(hdr.highest_modseq, false, 0, n - 1);
            }
            for r in recs {
                self.modseq_update_old_rec(r);
            }
        } else {
            // missing files: everything gets the modseq at the start of the last file
            let file = self.logs.iter().find(|f| f.header.file_seq == end.0);
            let mut cur = file.map(|f| f.header.initial_modseq).unwrap_or(0);
            if cur < hdr.highest_modseq {
                cur = hdr.highest_modseq;
            }
            if n > 0 {
                self.modseq_update(cur, true, 0, n - 1);
            }
            if let Some(recs) = self.records_between((end.0, 0), end) {
                for r in recs {
                    self.modseq_update_old_rec(r);
                }
            }
        }
    }

    /// mail_index_modseq_sync_end → mail_index_modseq_update_header.
    pub fn finish_modseq(&mut self, end: LogPos, end_modseq: u64) {
        if !self.modseq_active {
            return;
        }
        let Some(ei) = self.modseq_ext() else { return };
        let Some(old) = self.modseq_header() else {
            return;
        };
        if (old.log_seq as u64, old.log_offset as u64) < (end.0 as u64, end.1) {
            let new = ModseqHeader {
                highest_modseq: end_modseq,
                log_seq: end.0,
                log_offset: end.1 as u32,
            };
            self.map.extensions[ei].data = new.encode().to_vec();
        }
    }

    // ---- header counters (mail-index-sync-update.c) --------------------------------

    fn update_counts(&mut self, uid: u32, old: u8, new: u8) {
        let next_uid = self.hdr(hdr_off::NEXT_UID);
        if uid >= next_uid {
            self.corrupted(format!("uid {uid} >= next_uid {next_uid}"));
            return;
        }
        let messages = self.hdr(hdr_off::MESSAGES_COUNT);
        if (old ^ new) & rec_flag::SEEN != 0 {
            let seen = self.hdr(hdr_off::SEEN_MESSAGES_COUNT);
            if old & rec_flag::SEEN != 0 {
                if seen == 0 {
                    return self.corrupted("Seen counter wrong".into());
                }
                self.set_hdr(hdr_off::SEEN_MESSAGES_COUNT, seen - 1);
            } else {
                if seen >= messages {
                    return self.corrupted("Seen counter wrong".into());
                }
                self.set_hdr(hdr_off::SEEN_MESSAGES_COUNT, seen + 1);
                if seen + 1 == messages {
                    self.set_hdr(hdr_off::FIRST_UNSEEN_UID_LOWWATER, next_uid);
                }
            }
        }
        if (old ^ new) & rec_flag::DELETED != 0 {
            let del = self.hdr(hdr_off::DELETED_MESSAGES_COUNT);
            if old & rec_flag::DELETED == 0 {
                self.set_hdr(hdr_off::DELETED_MESSAGES_COUNT, del + 1);
                if del + 1 > messages {
                    self.corrupted("Deleted counter wrong".into())
                }
            } else {
                if del == 0 || del > messages {
                    return self.corrupted("Deleted counter wrong".into());
                }
                self.set_hdr(hdr_off::DELETED_MESSAGES_COUNT, del - 1);
                if del - 1 == 0 {
                    self.set_hdr(hdr_off::FIRST_DELETED_UID_LOWWATER, next_uid);
                }
            }
        }
    }

    fn update_lowwaters(&mut self, uid: u32, flags: u8) {
        if flags & rec_flag::SEEN == 0 && uid < self.hdr(hdr_off::FIRST_UNSEEN_UID_LOWWATER) {
            self.set_hdr(hdr_off::FIRST_UNSEEN_UID_LOWWATER, uid);
        }
        if flags & rec_flag::DELETED != 0 && uid < self.hdr(hdr_off::FIRST_DELETED_UID_LOWWATER) {
            self.set_hdr(hdr_off::FIRST_DELETED_UID_LOWWATER, uid);
        }
    }

    // ---- records ---------------------------------------------------------------------

    /// Applies one log record at `pos`.
    pub fn apply(&mut self, rec: &LogRecord, pos: LogPos) {
        self.cur_pos = pos;
        self.cur_modseq = rec.modseq;
        let external = rec.is_external();
        match &rec.body {
            RecordBody::Append(v) => {
                for a in v {
                    if !self.append(a.uid, a.flags, a.pad) {
                        break;
                    }
                }
            }
            RecordBody::Expunge(ranges) => {
                if external {
                    let mut seqs = Vec::new();
                    for r in ranges {
                        if let Some((a, b)) = self.lookup_range(r.uid1, r.uid2) {
                            seqs.extend(a..=b);
                        }
                    }
                    self.expunge(seqs);
                }
            }
            RecordBody::ExpungeGuid(v) => {
                if external {
                    let seqs = v.iter().filter_map(|e| self.lookup_seq(e.uid)).collect();
                    self.expunge(seqs);
                }
            }
            RecordBody::FlagUpdate(v) => {
                for u in v {
                    self.flag_update(u);
                }
            }
            RecordBody::HeaderUpdate(patches) => {
                for p in patches {
                    if !self.header_update(p) {
                        break;
                    }
                }
            }
            RecordBody::ExtIntro(intros) => {
                for i in intros {
                    if !self.ext_intro(i, false) {
                        break;
                    }
                }
            }
            RecordBody::ExtReset(r) => self.ext_reset(r),
            RecordBody::ExtHdrUpdate(p) | RecordBody::ExtHdrUpdate32(p) => {
                for patch in p {
                    if !self.ext_hdr_update(patch) {
                        break;
                    }
                }
            }
            RecordBody::ExtRecUpdate(raw) => self.ext_rec_update(raw),
            RecordBody::ExtAtomicInc(v) => {
                match self.cur_ext {
                    CurExt::None => {
                        return self
                            .corrupted("Extension record updated without intro prefix".into())
                    }
                    CurExt::Broken | CurExt::Ext { ignore: true, .. } => return,
                    _ => {}
                }
                for a in v {
                    if !self.atomic_inc(a) {
                        break;
                    }
                }
            }
            RecordBody::KeywordUpdate(k) => self.keyword_update(k),
            RecordBody::KeywordReset(ranges) => self.keyword_reset(ranges),
            RecordBody::ModseqUpdate(v) => {
                for m in v {
                    if m.uid == 0 {
                        continue;
                    }
                    let Some(seq) = self.lookup_seq(m.uid) else {
                        continue;
                    };
                    let Some(ei) = self.modseq_ext() else {
                        return self.corrupted("modseqs updated before they were enabled".into());
                    };
                    let e = &self.map.extensions[ei];
                    if e.record_size < 8 {
                        return self.corrupted("modseqs updated before they were enabled".into());
                    }
                    let at = seq * self.rs() + e.record_offset as usize;
                    let cur = u64_at(&self.map.records, at).unwrap_or(0);
                    if cur <= m.modseq {
                        put_u64(&mut self.map.records, at, m.modseq);
                    }
                }
            }
            RecordBody::IndexDeleted => {
                if external {
                    self.index_deleted = true;
                }
            }
            RecordBody::IndexUndeleted => self.index_deleted = false,
            RecordBody::Boundary(_) | RecordBody::AttributeUpdate(_) => {}
            RecordBody::Unknown(_) => self.corrupted(format!(
                "Unknown transaction record type 0x{:x}",
                rec.type_raw & rec_type::TYPE_MASK
            )),
        }
    }

    /// sync_append. Returns false to stop the rest of the record.
    fn append(&mut self, uid: u32, flags: u8, pad: [u8; 3]) -> bool {
        let next_uid = self.hdr(hdr_off::NEXT_UID);
        if uid < next_uid {
            self.corrupted(format!("Append with UID {uid}, but next_uid = {next_uid}"));
            return false;
        }
        let rs = self.rs();
        let n = self.count();
        self.map.records.truncate(n * rs);
        self.map.records.resize((n + 1) * rs, 0);
        let rec = &mut self.map.records[n * rs..];
        rec[0..4].copy_from_slice(&uid.to_le_bytes());
        rec[4] = flags;
        // the whole 8-byte struct is copied, padding included
        rec[5..RECORD_BASE_SIZE].copy_from_slice(&pad);
        self.set_hdr(hdr_off::MESSAGES_COUNT, (n + 1 + self.hidden) as u32);
        self.set_hdr(hdr_off::NEXT_UID, uid.wrapping_add(1).max(1));
        if flags & rec_flag::DIRTY != 0 {
            let f = self.hdr(hdr_off::FLAGS);
            self.set_hdr(hdr_off::FLAGS, f | hdr_flag::HAVE_DIRTY);
        }
        self.update_lowwaters(uid, flags);
        self.update_counts(uid, 0, flags);
        self.modseq_to_highest(n, n);
        true
    }

    /// sync_expunge_range for 0-based positions (any order, duplicates allowed).
    fn expunge(&mut self, mut seqs: Vec<usize>) {
        seqs.sort_unstable();
        seqs.dedup();
        if seqs.is_empty() {
            return;
        }
        for &s in &seqs {
            let (uid, f) = (self.uid_at(s), self.flags_at(s));
            self.update_counts(uid, f, 0);
        }
        let rs = self.rs();
        let n = self.count();
        let mut keep = Vec::with_capacity((n - seqs.len()) * rs);
        let mut it = seqs.iter().peekable();
        for i in 0..n {
            if it.peek() == Some(&&i) {
                it.next();
                continue;
            }
            keep.extend_from_slice(&self.map.records[i * rs..(i + 1) * rs]);
        }
        self.map.records = keep;
        self.set_hdr(
            hdr_off::MESSAGES_COUNT,
            (n - seqs.len() + self.hidden) as u32,
        );
    }

    /// sync_flag_update.
    fn flag_update(&mut self, u: &FlagUpdate) {
        let Some((s1, s2)) = self.lookup_range(u.uid1, u.uid2) else {
            return;
        };
        if !u.is_internal() {
            self.modseq_to_highest(s1, s2);
        }
        if u.add_flags & rec_flag::DIRTY != 0 {
            let f = self.hdr(hdr_off::FLAGS);
            self.set_hdr(hdr_off::FLAGS, f | hdr_flag::HAVE_DIRTY);
        }
        let mask = !u.remove_flags;
        let counted = (u.add_flags | u.remove_flags) & (rec_flag::SEEN | rec_flag::DELETED) != 0;
        for s in s1..=s2 {
            let old = self.flags_at(s);
            let new = (old & mask) | u.add_flags;
            self.set_flags_at(s, new);
            if counted {
                let uid = self.uid_at(s);
                self.update_lowwaters(uid, new);
                self.update_counts(uid, old, new);
            }
        }
    }

    /// sync_header_update. Returns false on an out-of-range update.
    fn header_update(&mut self, p: &HeaderPatch) -> bool {
        let base_size = self.map.base.len();
        let off = p.offset as usize;
        if off >= base_size || off + p.data.len() > base_size {
            self.corrupted(format!(
                "Header update outside range: {} + {} > {}",
                p.offset,
                p.data.len(),
                base_size
            ));
            return false;
        }
        let orig_next_uid = self.hdr(hdr_off::NEXT_UID);
        let orig_tail = self.hdr(hdr_off::LOG_FILE_TAIL_OFFSET);
        // fields that describe the file layout can't be patched without breaking the map;
        // Dovecot would notice at mail_index_map_check_header and fsck
        let keep = |s: &Self| {
            (
                s.map.base[..4].to_vec(),
                s.hdr(hdr_off::HEADER_SIZE),
                s.hdr(hdr_off::RECORD_SIZE),
                s.hdr(hdr_off::MESSAGES_COUNT),
                s.map.base[hdr_off::COMPAT_FLAGS],
            )
        };
        let before = keep(self);
        put_bytes(&mut self.map.base, off, &p.data);
        if keep(self) != before {
            self.corrupted(format!(
                "Header update at offset {} changes the index layout; ignored for those fields",
                p.offset
            ));
            self.map.base[..4].copy_from_slice(&before.0);
            self.set_hdr(hdr_off::HEADER_SIZE, before.1);
            self.set_hdr(hdr_off::RECORD_SIZE, before.2);
            self.set_hdr(hdr_off::MESSAGES_COUNT, before.3);
            self.map.base[hdr_off::COMPAT_FLAGS] = before.4;
        }
        if self.hdr(hdr_off::NEXT_UID) < orig_next_uid {
            // shrinking next_uid is silently ignored (dsync races)
            self.set_hdr(hdr_off::NEXT_UID, orig_next_uid);
        }
        // tail offset updates are for the log code; the map keeps its own value
        self.set_hdr(hdr_off::LOG_FILE_TAIL_OFFSET, orig_tail);
        true
    }

    // ---- extensions (mail-index-sync-ext.c) -------------------------------------------

    /// mail_index_sync_ext_intro. Returns false to stop the rest of the record.
    fn ext_intro(&mut self, u: &ExtIntro, internal: bool) -> bool {
        self.cur_ext = CurExt::Broken;
        let ext_count = self.map.extensions.len();
        if u.ext_id != EXT_ID_BY_NAME && u.ext_id as usize >= ext_count {
            self.corrupted(format!(
                "Extension introduction for unknown id {}",
                u.ext_id
            ));
            return false;
        }
        if u.ext_id == EXT_ID_BY_NAME && u.name.is_empty() {
            self.corrupted("Extension introduction without id or name".into());
            return false;
        }
        let existing = if u.ext_id != EXT_ID_BY_NAME {
            Some(u.ext_id as usize)
        } else {
            let name = String::from_utf8_lossy(&u.name);
            self.map.ext_index(&name)
        };
        let name: Vec<u8> = match existing {
            Some(i) => self.map.extensions[i].name.as_bytes().to_vec(),
            None => u.name.clone(),
        };
        if !internal && name == ext::KEYWORDS.as_bytes() {
            self.corrupted("Extension introduction for keywords".into());
            return false;
        }
        if let Err(e) = ext_hdr_check(
            self.hdr(hdr_off::RECORD_SIZE),
            &name,
            u.hdr_size,
            0,
            u.record_size,
            u.record_align,
        ) {
            self.corrupted(format!("Broken extension introduction: {e}"));
            return false;
        }
        let no_shrink = u.flags & EXT_INTRO_FLAG_NO_SHRINK != 0;
        if let Some(idx) = existing {
            let ignore = u.reset_id != self.map.extensions[idx].reset_id;
            if !ignore {
                self.ext_resize(u, idx, no_shrink);
            }
            self.cur_ext = CurExt::Ext {
                idx,
                ignore,
                record_size: u.record_size,
            };
            return true;
        }
        // a new extension: mail_index_sync_ext_init_new
        let name = String::from_utf8_lossy(&name).into_owned();
        self.map.extensions.push(Extension {
            name,
            reset_id: u.reset_id,
            record_offset: 0,
            record_size: u.record_size,
            record_align: u.record_align,
            data: vec![0; u.hdr_size as usize],
        });
        let idx = self.map.extensions.len() - 1;
        self.reorder(idx, 0);
        self.cur_ext = if internal {
            CurExt::None
        } else {
            CurExt::Ext {
                idx,
                ignore: false,
                record_size: u.record_size,
            }
        };
        true
    }

    /// sync_ext_resize.
    fn ext_resize(&mut self, u: &ExtIntro, idx: usize, no_shrink: bool) {
        use crate::format::codec::align8;
        let e = &self.map.extensions[idx];
        let old_padded = align8(e.data.len());
        let new_padded = align8(u.hdr_size as usize);
        if e.record_align != u.record_align || e.record_size != u.record_size {
            // record changed
        } else if new_padded < old_padded {
            if no_shrink {
                return;
            }
        } else if e.data.len() == u.hdr_size as usize {
            return;
        }
        let e = &mut self.map.extensions[idx];
        if new_padded < old_padded {
            if !no_shrink {
                e.data.truncate(u.hdr_size as usize);
            }
        } else {
            e.data.resize(u.hdr_size as usize, 0);
        }
        let mut reorder = false;
        if e.record_align < u.record_align || (e.record_align > u.record_align && !no_shrink) {
            e.record_align = u.record_align;
            reorder = true;
        }
        let old_record_size = e.record_size;
        if e.record_size < u.record_size || (e.record_size > u.record_size && !no_shrink) {
            e.record_size = u.record_size;
            reorder = true;
        }
        if reorder {
            self.reorder(idx, old_record_size);
        }
    }

    /// sync_ext_reorder: lays out every extension's record data again (largest alignment
    /// first, starting at offset 5) and copies the records.
    ///
    /// Not counted in `touched_every_record`: a reorder that leaves the record layout as it
    /// was (an extension without records introduced) changes no record's bytes but the gaps
    /// between extensions, which every writer leaves zero; a sparse replay compares the
    /// layout itself.
    fn reorder(&mut self, ext_idx: usize, old_ext_size: u16) {
        let exts = &mut self.map.extensions;
        let count = exts.len();
        let old_offsets: Vec<u16> = exts.iter().map(|e| e.record_offset).collect();
        let mut copy_sizes: Vec<u16> = exts.iter().map(|e| e.record_size).collect();
        for e in exts.iter_mut() {
            e.record_offset = 0;
        }
        // stable sort by descending alignment (qsort in Dovecot; ties keep map order here)
        let mut sorted: Vec<usize> = (0..count).collect();
        sorted.sort_by(|&a, &b| exts[b].record_align.cmp(&exts[a].record_align));
        if copy_sizes[ext_idx] > old_ext_size {
            copy_sizes[ext_idx] = old_ext_size;
        }
        let mut offset = RECORD_MIN_SIZE;
        let mut max_align = 4usize;
        loop {
            let mut min_align = usize::MAX;
            let mut chosen = None;
            for &i in &sorted {
                let e = &exts[i];
                max_align = max_align.max(e.record_align as usize);
                if e.record_offset == 0 && e.record_size > 0 {
                    let align = (e.record_align as usize).max(1);
                    if offset.is_multiple_of(align) {
                        chosen = Some(i);
                        break;
                    }
                    min_align = min_align.min(align);
                }
            }
            match chosen {
                Some(i) => {
                    exts[i].record_offset = offset as u16;
                    offset += exts[i].record_size as usize;
                }
                None => {
                    if min_align == usize::MAX {
                        break;
                    }
                    offset += min_align - offset % min_align;
                }
            }
        }
        if !offset.is_multiple_of(max_align) {
            offset += max_align - offset % max_align;
        }
        let new_rs = offset;
        let old_rs = self.rs();
        let n = self.count();
        let mut new_records = vec![0u8; n * new_rs];
        for r in 0..n {
            let src = &self.map.records[r * old_rs..(r + 1) * old_rs];
            let dst = &mut new_records[r * new_rs..(r + 1) * new_rs];
            let base = RECORD_BASE_SIZE.min(old_rs).min(new_rs);
            dst[..base].copy_from_slice(&src[..base]);
            for (i, e) in self.map.extensions.iter().enumerate() {
                let len = copy_sizes[i] as usize;
                if len == 0 {
                    continue;
                }
                let from = old_offsets[i] as usize;
                let to = e.record_offset as usize;
                if from + len <= old_rs && to + len <= new_rs {
                    dst[to..to + len].copy_from_slice(&src[from..from + len]);
                }
            }
        }
        self.map.records = new_records;
        self.set_hdr(hdr_off::RECORD_SIZE, new_rs as u32);
    }

    /// mail_index_sync_ext_reset.
    fn ext_reset(&mut self, r: &ExtReset) {
        let idx = match self.cur_ext {
            CurExt::None => {
                return self.corrupted("Extension reset without intro prefix".into());
            }
            CurExt::Broken => return,
            CurExt::Ext { idx, .. } => idx,
        };
        self.map.extensions[idx].reset_id = r.new_reset_id;
        if r.preserve_data == 0 {
            self.touched_every_record = true;
            let e = &mut self.map.extensions[idx];
            e.data.fill(0);
            let (off, size) = (e.record_offset as usize, e.record_size as usize);
            let rs = self.rs();
            for i in 0..self.count() {
                self.map.records[i * rs + off..i * rs + off + size].fill(0);
            }
        }
    }

    /// mail_index_sync_ext_hdr_update. Returns false to stop the record.
    fn ext_hdr_update(&mut self, p: &HeaderPatch) -> bool {
        let idx = match self.cur_ext {
            CurExt::None => {
                self.corrupted("Extension header update without intro prefix".into());
                return false;
            }
            CurExt::Broken | CurExt::Ext { ignore: true, .. } => return true,
            CurExt::Ext { idx, .. } => idx,
        };
        let e = &mut self.map.extensions[idx];
        if p.offset as u64 + p.data.len() as u64 > e.data.len() as u64 {
            self.corrupted("Extension header update points outside header size".into());
            return false;
        }
        put_bytes(&mut e.data, p.offset as usize, &p.data);
        if e.name == ext::MODSEQ && !self.modseq_active {
            // mail_index_modseq_hdr_update: modseq tracking starts here
            self.modseq_active = true;
            self.modseq_sync_init(self.cur_pos);
        }
        true
    }

    /// EXT_REC_UPDATE record + mail_index_sync_ext_rec_update.
    fn ext_rec_update(&mut self, raw: &[u8]) {
        let (idx, rsize) = match self.cur_ext {
            CurExt::None => {
                return self.corrupted("Extension record updated without intro prefix".into())
            }
            CurExt::Broken | CurExt::Ext { ignore: true, .. } => return,
            CurExt::Ext {
                idx, record_size, ..
            } => (idx, record_size),
        };
        // Dovecot applies the whole entries first, then complains about a partial one
        let whole = ext_rec_whole(raw, rsize);
        self.ext_rec_entries(idx, rsize, whole);
        if whole.len() != raw.len() {
            self.corrupted("ext rec update: invalid record size".into());
        }
    }

    fn ext_rec_entries(&mut self, idx: usize, rsize: u16, raw: &[u8]) {
        let Some(entries) = ext_rec_entries(raw, rsize) else {
            return;
        };
        for (uid, data) in entries {
            let next_uid = self.hdr(hdr_off::NEXT_UID);
            if uid == 0 || uid >= next_uid {
                return self.corrupted(format!("Extension record update for invalid uid={uid}"));
            }
            let Some(seq) = self.lookup_seq(uid) else {
                continue;
            };
            let e = &self.map.extensions[idx];
            let (off, esize) = (e.record_offset as usize, e.record_size as usize);
            let n = data.len().min(esize);
            let at = seq * self.rs() + off;
            self.map.records[at..at + n].copy_from_slice(&data[..n]);
            self.map.records[at + n..at + esize].fill(0);
        }
    }

    /// mail_index_sync_ext_atomic_inc. Returns false to stop the record.
    fn atomic_inc(&mut self, u: &AtomicInc) -> bool {
        let CurExt::Ext {
            idx, record_size, ..
        } = self.cur_ext
        else {
            return false;
        };
        let next_uid = self.hdr(hdr_off::NEXT_UID);
        if u.uid == 0 || u.uid >= next_uid {
            self.corrupted(format!("Extension record inc for invalid uid={}", u.uid));
            return false;
        }
        let Some(seq) = self.lookup_seq(u.uid) else {
            return true;
        };
        let size = record_size as usize;
        let e = &self.map.extensions[idx];
        if size > e.record_size as usize || !matches!(size, 1 | 2 | 4 | 8) {
            self.corrupted(format!("Extension record inc with invalid size={size}"));
            return false;
        }
        let min_value: u64 = if u.diff >= 0 {
            0
        } else {
            (-(u.diff as i64)) as u64
        };
        let mut max_value: u64 = if size == 8 {
            u64::MAX
        } else {
            (1u64 << (size * 8)) - 1
        };
        if u.diff > 0 {
            if max_value >= u.diff as u64 {
                max_value -= u.diff as u64;
            } else {
                self.corrupted(format!(
                    "Extension record inc diff={} larger than max value (uid={})",
                    u.diff, u.uid
                ));
                return false;
            }
        }
        let at = seq * self.rs() + e.record_offset as usize;
        let mut buf = [0u8; 8];
        buf[..size].copy_from_slice(&self.map.records[at..at + size]);
        let orig = u64::from_le_bytes(buf);
        if orig < min_value {
            self.corrupted(format!(
                "Extension record inc drops number below zero (uid={}, diff={}, orig={orig})",
                u.uid, u.diff
            ));
            return false;
        }
        if orig > max_value {
            self.corrupted(format!(
                "Extension record inc overflows number (uid={}, diff={}, orig={orig})",
                u.uid, u.diff
            ));
            return false;
        }
        let new = orig.wrapping_add(u.diff as i64 as u64);
        self.map.records[at..at + size].copy_from_slice(&new.to_le_bytes()[..size]);
        true
    }

    // ---- keywords (mail-index-sync-keywords.c) -------------------------------------------

    fn keyword_names(&self) -> Vec<Vec<u8>> {
        self.map
            .ext(ext::KEYWORDS)
            .and_then(|e| KeywordsHeader::decode(&e.data).ok())
            .map(|k| k.names)
            .unwrap_or_default()
    }

    /// keywords_ext_register: intro of the keywords extension from the keyword code.
    fn keywords_register(&mut self, reset_id: u32, hdr_size: u32, count: usize) {
        let ext_id = self
            .map
            .ext_index(ext::KEYWORDS)
            .map(|i| i as u32)
            .unwrap_or(EXT_ID_BY_NAME);
        let intro = ExtIntro {
            ext_id,
            reset_id,
            hdr_size,
            record_size: KeywordsHeader::record_size_for(count),
            record_align: 1,
            flags: 0,
            name: if ext_id == EXT_ID_BY_NAME {
                ext::KEYWORDS.as_bytes().to_vec()
            } else {
                Vec::new()
            },
        };
        let saved = self.cur_ext;
        self.ext_intro(&intro, true);
        self.cur_ext = saved;
    }

    /// keywords_header_add: appends `name` to the keywords header. Returns its index.
    fn keywords_header_add(&mut self, name: &[u8]) -> usize {
        let existing = self.map.ext_index(ext::KEYWORDS);
        let mut names = match existing {
            Some(i) => KeywordsHeader::decode(&self.map.extensions[i].data)
                .map(|k| k.names)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        names.push(name.to_vec());
        let count = names.len();
        let mut buf = KeywordsHeader { names }.encode();
        let need_grow = match existing {
            None => true,
            Some(i) => {
                let e = &self.map.extensions[i];
                buf.len() > e.data.len() || (e.record_size as usize) * 8 < count
            }
        };
        if need_grow {
            buf.extend_from_slice(&[0u8; 128]);
            let reset_id = existing
                .map(|i| self.map.extensions[i].reset_id)
                .unwrap_or(0);
            self.keywords_register(reset_id, buf.len() as u32, count);
        }
        if let Some(i) = self.map.ext_index(ext::KEYWORDS) {
            // buffer_copy over the start; bytes past the new header keep their old value
            put_bytes(&mut self.map.extensions[i].data, 0, &buf);
        }
        count - 1
    }

    /// mail_index_sync_keywords.
    fn keyword_update(&mut self, k: &KeywordUpdate) {
        let names = self.keyword_names();
        // keyword names are compared case-insensitively (index->keywords_hash uses strcasecmp)
        let idx = match names.iter().position(|n| n.eq_ignore_ascii_case(&k.name)) {
            Some(i) => i,
            None => self.keywords_header_add(&k.name),
        };
        let Some(ei) = self.map.ext_index(ext::KEYWORDS) else {
            return;
        };
        if idx / 8 >= self.map.extensions[ei].record_size as usize {
            if k.modify_type == 1 {
                return;
            }
            let (reset_id, hdr_size) = {
                let e = &self.map.extensions[ei];
                (e.reset_id, e.data.len() as u32)
            };
            let count = self.keyword_names().len();
            self.keywords_register(reset_id, hdr_size, count);
        }
        let Some(ei) = self.map.ext_index(ext::KEYWORDS) else {
            return;
        };
        let e = &self.map.extensions[ei];
        if idx / 8 >= e.record_size as usize {
            return;
        }
        let byte = e.record_offset as usize + idx / 8;
        let mask = 1u8 << (idx % 8);
        for r in &k.uids {
            let Some((s1, s2)) = self.lookup_range(r.uid1, r.uid2) else {
                continue;
            };
            self.modseq_to_highest(s1, s2);
            let rs = self.rs();
            for s in s1..=s2 {
                let b = &mut self.map.records[s * rs + byte];
                if k.modify_type == 1 {
                    *b &= !mask;
                } else {
                    *b |= mask;
                }
            }
        }
    }

    /// mail_index_sync_keywords_reset.
    fn keyword_reset(&mut self, ranges: &[UidRange]) {
        let Some(ei) = self.map.ext_index(ext::KEYWORDS) else {
            return;
        };
        let (off, size) = {
            let e = &self.map.extensions[ei];
            (e.record_offset as usize, e.record_size as usize)
        };
        for r in ranges {
            let Some((s1, s2)) = self.lookup_range(r.uid1, r.uid2) else {
                continue;
            };
            self.modseq_to_highest(s1, s2);
            let rs = self.rs();
            for s in s1..=s2 {
                self.map.records[s * rs + off..s * rs + off + size].fill(0);
            }
        }
    }

    // ---- end of sync ------------------------------------------------------------------

    /// HAVE_DIRTY recomputation (mail_index_sync_update_hdr_dirty_flag) after a sync that
    /// started with it set.
    pub fn recheck_dirty(&mut self, had_dirty: bool) {
        if !had_dirty {
            return;
        }
        self.touched_every_record = true;
        let any = (0..self.count()).any(|i| self.flags_at(i) & rec_flag::DIRTY != 0);
        let f = self.hdr(hdr_off::FLAGS);
        if any {
            self.set_hdr(hdr_off::FLAGS, f | hdr_flag::HAVE_DIRTY);
        } else {
            self.set_hdr(hdr_off::FLAGS, f & !hdr_flag::HAVE_DIRTY);
        }
    }
}

/// A minimal mail_index_fsck: recomputes the counters and lowwaters from the records and
/// makes next_uid/first_recent_uid consistent. Returns what was fixed.
pub(crate) fn fsck(map: &mut IndexFile) -> Vec<String> {
    let mut fixed = Vec::new();
    let n = map
        .records_count()
        .min(map.hdr_u32(hdr_off::MESSAGES_COUNT) as usize);
    let mut h: IndexHeader = map.header();
    let (mut seen, mut deleted) = (0u32, 0u32);
    let mut last_uid = 0u32;
    let mut first_unseen = 0u32;
    let mut first_deleted = 0u32;
    for i in 0..n {
        let uid = map.record_uid(i);
        let f = map.record_flags(i);
        if f & rec_flag::SEEN != 0 {
            seen += 1;
        } else if first_unseen == 0 {
            first_unseen = uid;
        }
        if f & rec_flag::DELETED != 0 {
            deleted += 1;
            if first_deleted == 0 {
                first_deleted = uid;
            }
        }
        last_uid = last_uid.max(uid);
    }
    if h.next_uid <= last_uid {
        fixed.push(format!("next_uid {} <= last uid {last_uid}", h.next_uid));
        h.next_uid = last_uid + 1;
    }
    if h.next_uid == 0 {
        h.next_uid = 1;
    }
    if h.seen_messages_count != seen || h.deleted_messages_count != deleted {
        fixed.push("message counters recomputed".into());
    }
    h.messages_count = n as u32;
    h.seen_messages_count = seen;
    h.deleted_messages_count = deleted;
    h.first_unseen_uid_lowwater = if first_unseen == 0 {
        h.next_uid
    } else {
        first_unseen
    };
    h.first_deleted_uid_lowwater = if first_deleted == 0 {
        h.next_uid
    } else {
        first_deleted
    };
    if h.first_recent_uid == 0 || h.first_recent_uid > h.next_uid {
        fixed.push(format!("first_recent_uid {} fixed", h.first_recent_uid));
        h.first_recent_uid = h.first_recent_uid.clamp(1, h.next_uid);
    }
    h.flags |= hdr_flag::FSCKD;
    map.set_header(&h);
    let rs = map.record_size();
    map.records.truncate(n * rs);
    fixed
}
