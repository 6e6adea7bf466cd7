//! An index's header and the few records a quick check asks for, read without its other
//! records: what Dovecot's mmap of `P` gives a caller that looks at the header (counters,
//! extension headers, the last message), at a cost that doesn't grow with the number of
//! messages.
//!
//! [`HeaderView::open`] reads `P`'s header, its first and last record and the head log
//! `P.log` (from where `P`'s `modseq` header says Dovecot starts reading it, when it says
//! so), never `P.log.2`. The changes logged past `P` are replayed exactly as
//! [`crate::View`] replays them (the same [`Syncer`]) on a map holding only the records
//! they name, read from `P` first (a few small reads, [`HEADER_REPLAY_MAX_RECORDS`] at
//! most); every other record of `P` is current as `P` has it. In every other case (no `P`,
//! the log rotated or replaced since `P` was written, a change of the record layout or of
//! every record, more records than that, anything the full view would have to repair) it
//! returns `None`, and the caller opens the full [`crate::View`], which reports or repairs
//! what it finds.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::codec::u32_at;
use crate::format::index::{hdr_flag, IndexFile, IndexHeader, BASE_HEADER_SIZE};
use crate::format::log::{ext_rec_entries, ext_rec_whole, LogFile, LogRecord, LogStop, RecordBody};
use crate::paths::IndexPaths;
use crate::sync::Syncer;
use crate::view::{read_log_from_head, read_optional};

/// What identifies the state of an index: its indexid and where the replay of its logs
/// ended, (file_seq, offset).
pub type IndexState = (u32, (u32, u64));

/// The most records a [`HeaderView`] holds to replay the record changes logged past `P`
/// (records of `P` they name, appended ones): past it the caller reads the full view, and
/// a writer rewrites `P` rather than leave a replay this long to the next reader.
pub const HEADER_REPLAY_MAX_RECORDS: usize = 1024;

/// The header of an index after replaying the changes logged past `P`, with the records
/// those changes touched.
#[derive(Clone, Debug)]
pub struct HeaderView {
    /// `P`'s header and extension headers after replay, holding in UID order only the
    /// records the replay touched: the records of `P` the changes past it name (those
    /// still there) and the appended ones.
    map: IndexFile,
    /// `P` as opened: [`HeaderView::record_of`] reads its other records, which are
    /// current (the same inode, even if `P` is replaced meanwhile).
    records: PRecords,
    /// The UIDs of `P`'s records that the changes past `P` name, sorted: each is in `map`,
    /// or was expunged.
    touched: Vec<u32>,
    highest_modseq: u64,
    /// Where the replay ended: (head log file_seq, offset), as [`crate::View::log_position`].
    log_position: (u32, u64),
    /// The UID of the first message (`None` when there is none).
    first_uid: Option<u32>,
    /// The last message's record (`None` when there is none).
    last: Option<Vec<u8>>,
    /// How many records the replay held: `P`'s it read and the appended ones.
    replayed: usize,
    /// The log's tail offset (where the backend has carried out every change before) is
    /// at the end of the log read.
    tail_at_log_end: bool,
    /// A client's request past the log's tail offset (a flag, keyword or expunge change
    /// that isn't external): the backend still has to apply it to its files (a flag change
    /// an IMAP client made in a Maildir, say). The rule of `IndexWriter::sync_housekeeping`.
    backend_pending: bool,
}

impl HeaderView {
    /// Reads the header of index `paths` (see the module docs); `Ok(None)` when the header
    /// alone can't tell the current state. An `Err` is an I/O error other than a missing
    /// file.
    pub fn open(paths: &IndexPaths) -> Result<Option<HeaderView>> {
        let _guard = crate::lock::read_guard(paths);
        HeaderView::open_unguarded(paths)
    }

    /// [`HeaderView::open`] for a caller that holds the log lock (no writer can run).
    pub(crate) fn open_unguarded(paths: &IndexPaths) -> Result<Option<HeaderView>> {
        let Some((map, first_uid, file)) = read_header(&paths.index())? else {
            return Ok(None);
        };
        let h = map.header();
        let opened = PRecords {
            file: Arc::new(file),
            path: paths.index(),
            header_size: h.header_size as u64,
            record_size: h.record_size as usize,
            count: h.messages_count as usize,
            first_uid,
            last_uid: (h.messages_count > 0).then(|| map.record_uid(0)),
        };
        // the head log from where `P` says Dovecot starts reading it, when it says so
        let log_path = paths.log();
        let log_file = match File::open(&log_path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &log_path, e)),
        };
        if let Some(log) = read_log_from_head(&log_file, &log_path, &map, None)? {
            match HeaderView::replay(map.clone(), log, opened.clone())? {
                Replayed::Header(v) => return Ok(Some(*v)),
                Replayed::Unanswerable => return Ok(None),
                Replayed::NeedsEarlierRecords => {}
            }
        }
        let Some(data) = read_optional(&paths.log())? else {
            return Ok(None);
        };
        let Ok(log) = LogFile::decode(&data, &paths.log()) else {
            return Ok(None);
        };
        drop(data);
        match HeaderView::replay(map, log, opened)? {
            Replayed::Header(v) => Ok(Some(*v)),
            _ => Ok(None),
        }
    }

    /// `P`'s header `map` (holding `P`'s last record) with the changes of `log` past `P`
    /// applied: the records they name are read from `P` first, the others stay in `P`.
    fn replay(mut map: IndexFile, log: LogFile, p: PRecords) -> Result<Replayed> {
        let logs = [log];
        let log = &logs[0];
        let h = map.header();
        let start = h.log_file_head_offset as u64;
        if log.header.indexid != h.indexid
            || log.header.file_seq != h.log_file_seq
            || matches!(log.stop, LogStop::Corrupt { .. })
            || start < log.header.hdr_size as u64
            || start < log.first_offset
            || start > log.sync_offset
        {
            return Ok(Replayed::Unanswerable);
        }
        let tail: Vec<&LogRecord> = log.records.iter().filter(|r| r.offset >= start).collect();
        let Some(named) = named_uids(&tail) else {
            return Ok(Replayed::Unanswerable);
        };
        let max_tail =
            crate::view::max_tail_offset(log, Some(&h)).max(h.log_file_tail_offset as u64);
        if max_tail < log.first_offset && log.read_from_later_offset() {
            // requests may wait between the tail offset and the records read
            return Ok(Replayed::NeedsEarlierRecords);
        }
        let backend_pending = log
            .records
            .iter()
            .any(|r| r.offset >= max_tail && crate::writer::is_backend_request(r.type_raw));
        let seq = log.header.file_seq;
        if named.records_changed && h.flags & hdr_flag::HAVE_DIRTY != 0 {
            // the full view would tell HAVE_DIRTY from every record after the changes, the
            // ones not read here too
            return Ok(Replayed::Unanswerable);
        }
        // the records of `P` the changes name, with its first and last, and the appended
        // ones: more than the replay holds declines before anything is read or replayed
        let Some(room) = HEADER_REPLAY_MAX_RECORDS.checked_sub(named.appended) else {
            return Ok(Replayed::Unanswerable);
        };
        let mut reader = p.reader();
        let Some(positions) = reader.positions_of(&named.ranges, room)? else {
            return Ok(Replayed::Unanswerable);
        };
        let mut held = Vec::with_capacity(positions.len() * p.record_size);
        let mut touched = Vec::with_capacity(positions.len());
        for &pos in &positions {
            let rec = reader.record(pos)?;
            touched.push(uid_of(rec));
            held.extend_from_slice(rec);
        }
        if !touched.windows(2).all(|w| w[0] < w[1]) {
            // `P`'s records out of order: the full view reports it
            return Ok(Replayed::Unanswerable);
        }
        map.records = held;
        let layout = record_layout(&map);
        let mut syncer = Syncer::for_records_of(
            map,
            p.count - positions.len(),
            &logs,
            (seq, start),
            log.modseq_at(start),
        );
        if named.records_changed {
            // the full view's first step: record modseqs logged before `start`; when it has
            // any to fill in, it touches `P`'s other records too and the replay declines
            syncer.begin_modseqs((seq, start));
        }
        for r in tail {
            syncer.apply(r, (seq, r.offset));
        }
        syncer.finish_modseq((seq, log.sync_offset), log.end_modseq);
        if syncer.errors
            || syncer.index_deleted
            || syncer.touched_every_record
            || record_layout(&syncer.map) != layout
            || syncer.map.records_count() > HEADER_REPLAY_MAX_RECORDS
            || syncer.map.check_header_of_held().is_err()
        {
            return Ok(Replayed::Unanswerable);
        }
        let map = syncer.map;
        // what is left of `P` at each end: the first and last message
        let alive = |uid: u32| map.position_of(uid, map.records_count()).is_some();
        let gone: Vec<usize> = positions
            .iter()
            .zip(&touched)
            .filter(|(_, &uid)| !alive(uid))
            .map(|(&pos, _)| pos)
            .collect();
        let first_in_p = (0..p.count).find(|pos| gone.binary_search(pos).is_err());
        let last_in_p = (0..p.count)
            .rev()
            .find(|pos| gone.binary_search(pos).is_err());
        let appended_last = (map.records_count() > 0)
            .then(|| map.record_uid(map.records_count() - 1))
            .filter(|&uid| p.last_uid.is_none_or(|l| uid > l));
        let first_uid = match first_in_p {
            Some(pos) => Some(reader.uid(pos)?),
            None => (map.records_count() > 0).then(|| map.record_uid(0)),
        };
        let last = match (appended_last, last_in_p) {
            (Some(_), _) => map.record(map.records_count() - 1).map(<[u8]>::to_vec),
            (None, Some(pos)) => {
                let uid = reader.uid(pos)?;
                match map.position_of(uid, map.records_count()) {
                    Some(i) => map.record(i).map(<[u8]>::to_vec),
                    None => Some(reader.record(pos)?.to_vec()),
                }
            }
            (None, None) => None,
        };
        let highest_modseq = crate::view::derived_highest_modseq(&map, log.end_modseq);
        let appended = map.records_count() - (touched.len() - gone.len());
        let replayed = touched.len() + appended;
        Ok(Replayed::Header(Box::new(HeaderView {
            map,
            records: p,
            touched,
            highest_modseq,
            log_position: (seq, log.sync_offset),
            first_uid,
            last,
            replayed,
            tail_at_log_end: max_tail >= log.sync_offset,
            backend_pending,
        })))
    }

    /// How many records the replay held: the records of `P` the changes past it named
    /// (with `P`'s first and last) and the appended ones. What the next reader pays for
    /// leaving `P` behind.
    pub fn replayed_records(&self) -> usize {
        self.replayed
    }

    /// True when the log's tail offset is at the end of the log: every change logged has
    /// reached the backend, and a housekeeping has no tail to move.
    pub fn tail_at_log_end(&self) -> bool {
        self.tail_at_log_end
    }

    /// The base header (as [`crate::View::header`] shows it, but for the log position).
    pub fn header(&self) -> IndexHeader {
        self.map.header()
    }

    pub fn uid_validity(&self) -> u32 {
        self.header().uid_validity
    }

    pub fn next_uid(&self) -> u32 {
        self.header().next_uid
    }

    pub fn messages_count(&self) -> usize {
        self.header().messages_count as usize
    }

    /// As [`crate::View::highest_modseq`].
    pub fn highest_modseq(&self) -> u64 {
        self.highest_modseq
    }

    /// indexid and where the replay ended: the state this header is of, as
    /// ([`crate::View::indexid`], [`crate::View::log_position`]) of a full view of it.
    pub fn state(&self) -> IndexState {
        (self.header().indexid, self.log_position)
    }

    pub fn extension(&self, name: &str) -> Option<&crate::format::index::Extension> {
        self.map.ext(name)
    }

    /// Messages not `\\Seen` (the header's counters, as Dovecot's STATUS UNSEEN).
    pub fn unseen_count(&self) -> u32 {
        let h = self.header();
        h.messages_count.saturating_sub(h.seen_messages_count)
    }

    /// Messages at or above `first_recent_uid` (`\\Recent`), when the first and last UIDs
    /// tell: all of them, or none. `None` when some are and some aren't (the records
    /// between would have to be read).
    pub fn recent_count(&self) -> Option<u32> {
        let h = self.header();
        let first_recent = h.first_recent_uid.max(1);
        match (self.first_uid, self.last_uid()) {
            (None, _) | (_, None) => Some(0),
            (Some(first), Some(_)) if first_recent <= first => Some(h.messages_count),
            (_, Some(last)) if first_recent > last => Some(0),
            _ => None,
        }
    }

    /// The current record of `uid`: the replay's when the changes past `P` touched it,
    /// else `P`'s, found by a few small reads whatever the number of messages. `None` when
    /// there is no such message.
    pub fn record_of(&self, uid: u32) -> Result<Option<Vec<u8>>> {
        if let Some(i) = self.map.position_of(uid, self.map.records_count()) {
            return Ok(self.map.record(i).map(<[u8]>::to_vec));
        }
        if self.touched.binary_search(&uid).is_ok() {
            return Ok(None); // expunged past `P`
        }
        let mut reader = self.records.reader();
        let pos = reader.partition(uid)?;
        if pos >= self.records.count {
            return Ok(None);
        }
        let rec = reader.record(pos)?;
        Ok((uid_of(rec) == uid).then(|| rec.to_vec()))
    }

    /// The bytes of extension `name` in `record` (one [`HeaderView::record_of`] returned).
    pub fn record_ext<'r>(&self, record: &'r [u8], name: &str) -> Option<&'r [u8]> {
        let e = self.map.ext(name)?;
        if e.record_size == 0 {
            return None;
        }
        let at = e.record_offset as usize;
        record.get(at..at + e.record_size as usize)
    }

    /// The UID of the first message, `None` when there is none.
    pub fn first_uid(&self) -> Option<u32> {
        self.first_uid
    }

    /// True when a client's request logged past the tail offset waits for the backend (a
    /// Maildir's files) to apply it (Dovecot's tail offset rule).
    pub fn backend_pending(&self) -> bool {
        self.backend_pending
    }

    /// The UID of the last message, `None` when there is none.
    pub fn last_uid(&self) -> Option<u32> {
        self.last.as_deref().map(uid_of)
    }

    /// The last message's record bytes of extension `name`.
    pub fn last_ext(&self, name: &str) -> Option<&[u8]> {
        self.record_ext(self.last.as_deref()?, name)
    }
}

/// What [`HeaderView::replay`] made of a log.
enum Replayed {
    Header(Box<HeaderView>),
    /// The header alone can't tell the current state (see the module docs).
    Unanswerable,
    /// The log was read from a later offset than the tail offset: the records between
    /// must be read to tell whether a request waits for the backend.
    NeedsEarlierRecords,
}

/// The UID ranges of existing records that `tail`'s records name (sorted, merged), and
/// whether any changes records; `None` when a record is of a kind this replay doesn't
/// take (an unknown type, or an extension record update before any introduction). A
/// record named here is read from `P` before the replay, so that [`Syncer`] finds every
/// record it would change: naming too many costs a read, too few would be wrong.
fn named_uids(tail: &[&LogRecord]) -> Option<Named> {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    let mut records_changed = false;
    let mut appended = 0usize;
    // the record size of the last extension introduced, as Syncer's cur_ext
    let mut ext_record_size: Option<u16> = None;
    for r in tail {
        let before = ranges.len();
        match &r.body {
            RecordBody::HeaderUpdate(_)
            | RecordBody::ExtHdrUpdate(_)
            | RecordBody::ExtHdrUpdate32(_)
            | RecordBody::Boundary(_)
            | RecordBody::AttributeUpdate(_)
            | RecordBody::IndexDeleted
            | RecordBody::IndexUndeleted
            | RecordBody::ExtReset(_) => {}
            RecordBody::ExtIntro(intros) => {
                ext_record_size = intros.last().map(|i| i.record_size);
            }
            RecordBody::ModseqUpdate(v) => {
                ranges.extend(v.iter().filter(|m| m.uid != 0).map(|m| (m.uid, m.uid)))
            }
            RecordBody::Append(v) => {
                records_changed = true;
                appended += v.len();
            }
            RecordBody::Expunge(v) | RecordBody::KeywordReset(v) => {
                ranges.extend(v.iter().map(|u| (u.uid1, u.uid2)))
            }
            RecordBody::ExpungeGuid(v) => ranges.extend(v.iter().map(|e| (e.uid, e.uid))),
            RecordBody::FlagUpdate(v) => ranges.extend(v.iter().map(|u| (u.uid1, u.uid2))),
            RecordBody::KeywordUpdate(k) => ranges.extend(k.uids.iter().map(|u| (u.uid1, u.uid2))),
            RecordBody::ExtAtomicInc(v) => ranges.extend(v.iter().map(|a| (a.uid, a.uid))),
            RecordBody::ExtRecUpdate(raw) => {
                let rsize = ext_record_size?;
                let entries = ext_rec_entries(ext_rec_whole(raw, rsize), rsize)?;
                ranges.extend(entries.iter().map(|(uid, _)| (*uid, *uid)));
            }
            RecordBody::Unknown(_) => return None,
        }
        records_changed |= ranges.len() > before;
    }
    for r in &mut ranges {
        *r = (r.0.min(r.1), r.0.max(r.1));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    Some(Named {
        ranges: merged,
        records_changed,
        appended,
    })
}

/// What [`named_uids`] found in a log's tail.
struct Named {
    ranges: Vec<(u32, u32)>,
    records_changed: bool,
    /// Messages appended (the replay holds their records too).
    appended: usize,
}

/// The UID of a record (its first 4 bytes, as [`IndexFile::record_uid`] reads them).
fn uid_of(record: &[u8]) -> u32 {
    u32_at(record, 0).unwrap_or(0)
}

/// The record layout of `map`: the record size and where each extension with records
/// lies in them. A replay that changes it would have to lay out `P`'s other records anew.
fn record_layout(map: &IndexFile) -> (usize, Vec<(String, u16, u16)>) {
    let exts = map
        .extensions
        .iter()
        .filter(|e| e.record_size > 0)
        .map(|e| (e.name.clone(), e.record_offset, e.record_size))
        .collect();
    (map.record_size(), exts)
}

/// `P`'s records as [`read_header`] opened it.
#[derive(Clone, Debug)]
struct PRecords {
    file: Arc<File>,
    path: PathBuf,
    header_size: u64,
    record_size: usize,
    /// `P`'s `messages_count`.
    count: usize,
    first_uid: Option<u32>,
    last_uid: Option<u32>,
}

/// Records read from `P` a block at a time, each block once.
const BLOCK_BYTES: usize = 4096;

impl PRecords {
    fn reader(&self) -> PReader<'_> {
        let per_block = (BLOCK_BYTES / self.record_size.max(1)).max(1);
        PReader {
            p: self,
            per_block,
            blocks: std::collections::BTreeMap::new(),
        }
    }
}

/// A reader of [`PRecords`] keeping the blocks it read, by block number (as many as it
/// read, whatever the size of `P`).
struct PReader<'p> {
    p: &'p PRecords,
    per_block: usize,
    blocks: std::collections::BTreeMap<usize, Box<[u8]>>,
}

impl PReader<'_> {
    /// The record at position `pos` (< count).
    fn record(&mut self, pos: usize) -> Result<&[u8]> {
        let (block, at) = (pos / self.per_block, pos % self.per_block);
        let rs = self.p.record_size;
        let data = match self.blocks.entry(block) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let first = block * self.per_block;
                let n = self.per_block.min(self.p.count - first);
                let mut buf = vec![0u8; n * rs];
                self.p
                    .file
                    .read_exact_at(&mut buf, self.p.header_size + (first * rs) as u64)
                    .map_err(|e| Error::io("read", &self.p.path, e))?;
                e.insert(buf.into_boxed_slice())
            }
        };
        Ok(&data[at * rs..(at + 1) * rs])
    }

    fn uid(&mut self, pos: usize) -> Result<u32> {
        self.record(pos).map(uid_of)
    }

    /// The first position whose UID is `uid` or more (count when none): a search that
    /// guesses from the UIDs at its bounds (UIDs are usually dense, so the first guess
    /// lands in the right block) and halves the range every other step.
    fn partition(&mut self, uid: u32) -> Result<usize> {
        let n = self.p.count;
        let (mut lo, mut hi) = (0usize, n);
        let (mut uid_lo, mut uid_hi) = (
            self.p.first_uid.unwrap_or(0),
            self.p.last_uid.unwrap_or(0).saturating_add(1),
        );
        let mut guess = true;
        while lo < hi {
            let mid = if guess && uid_hi > uid_lo && uid >= uid_lo {
                let span = u128::from(uid_hi - uid_lo);
                let off = (u128::from(uid - uid_lo) * (hi - lo) as u128 / span) as usize;
                (lo + off).min(hi - 1)
            } else {
                lo + (hi - lo) / 2
            };
            guess = !guess;
            // the block of `mid`, within [lo, hi)
            let block = mid / self.per_block;
            let a = (block * self.per_block).max(lo);
            let b = ((block + 1) * self.per_block).min(hi);
            if self.uid(a)? >= uid {
                hi = a;
                uid_hi = self.uid(a)?;
            } else if self.uid(b - 1)? < uid {
                lo = b;
                uid_lo = self.uid(b - 1)?.saturating_add(1);
            } else {
                // inside this block: uid(a) < uid <= uid(b - 1)
                let (mut l, mut h) = (a + 1, b - 1);
                while l < h {
                    let m = l + (h - l) / 2;
                    if self.uid(m)? < uid {
                        l = m + 1;
                    } else {
                        h = m;
                    }
                }
                return Ok(l);
            }
        }
        Ok(lo)
    }

    /// The positions of `P`'s records in `ranges` (sorted, disjoint), with the first and
    /// last record; `None` when they are more than `max`.
    fn positions_of(&mut self, ranges: &[(u32, u32)], max: usize) -> Result<Option<Vec<usize>>> {
        let n = self.p.count;
        let mut out: Vec<usize> = Vec::new();
        if n > 0 {
            out.push(0);
        }
        for &(a, b) in ranges {
            let from = self.partition(a)?;
            let to = if b == u32::MAX {
                n
            } else {
                self.partition(b + 1)?
            };
            if out.len() + to.saturating_sub(from) > max + 2 {
                return Ok(None);
            }
            out.extend(from..to);
        }
        if n > 0 {
            out.push(n - 1);
        }
        out.sort_unstable();
        out.dedup();
        Ok(Some(out))
    }
}

/// `P`'s header and last record, decoded as [`IndexFile::decode_header_only`], and the
/// first record's UID; `None` when `P` is missing, too short or fails a check.
pub(crate) fn read_header(path: &Path) -> Result<Option<(IndexFile, Option<u32>, File)>> {
    let io = |e| Error::io("read", path, e);
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let file_len = file.metadata().map_err(io)?.len();
    if file_len < BASE_HEADER_SIZE as u64 {
        return Ok(None);
    }
    let mut base = vec![0u8; BASE_HEADER_SIZE];
    file.read_exact_at(&mut base, 0).map_err(io)?;
    let h = IndexHeader::decode(&base);
    let (header_size, record_size) = (h.header_size as u64, h.record_size as u64);
    let records_end = header_size + h.messages_count as u64 * record_size;
    if header_size < BASE_HEADER_SIZE as u64 || records_end > file_len || record_size == 0 {
        return Ok(None);
    }
    let mut data = vec![0u8; header_size as usize];
    file.read_exact_at(&mut data, 0).map_err(io)?;
    let (first_uid, last) = if h.messages_count == 0 {
        (None, None)
    } else {
        let mut uid = [0u8; 4];
        file.read_exact_at(&mut uid, header_size).map_err(io)?;
        let mut rec = vec![0u8; record_size as usize];
        file.read_exact_at(&mut rec, records_end - record_size)
            .map_err(io)?;
        (Some(u32::from_le_bytes(uid)), Some(rec))
    };
    Ok(
        IndexFile::decode_header_only(&data, file_len, last.as_deref(), path)
            .ok()
            .map(|map| (map, first_uid, file)),
    )
}
