//! An index's header without its records: what Dovecot's mmap of `P` gives a caller that
//! only looks at the header (counters, extension headers, the last message), at a cost that
//! doesn't grow with the number of messages.
//!
//! [`HeaderView::open`] reads `P`'s header, its first UID and last record and the head log
//! `P.log` (from where `P`'s `modseq` header says Dovecot starts reading it, when it says
//! so), never `P.log.2` nor the other records. It answers only when the log past `P`
//! holds nothing but header changes (HEADER_UPDATE, EXT_HDR_UPDATE, intros of existing
//! extensions that keep their layout, BOUNDARY, a MODSEQ_UPDATE of uid 0): then `P`'s
//! records are the current ones and the header is `P`'s with those changes replayed exactly
//! as [`crate::View`] replays them. In every other case (no `P`, the log rotated or replaced
//! since `P` was written, a record change past `P`, anything the full view would have to
//! repair) it returns `None`, and the caller opens the full [`crate::View`], which reports
//! or repairs what it finds.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::index::{IndexFile, IndexHeader, BASE_HEADER_SIZE};
use crate::format::log::{LogFile, LogRecord, LogStop, RecordBody, EXT_ID_BY_NAME};
use crate::paths::IndexPaths;
use crate::sync::Syncer;
use crate::view::{read_log_from_head, read_optional};

/// What identifies the state of an index: its indexid and where the replay of its logs
/// ended, (file_seq, offset).
pub type IndexState = (u32, (u32, u64));

/// The header of an index after replaying the header changes logged past `P`.
#[derive(Clone, Debug)]
pub struct HeaderView {
    /// `P`'s header and extension headers after replay, holding only the last record.
    map: IndexFile,
    /// `P` as opened: [`HeaderView::record_of`] reads its records (the same inode, even
    /// if `P` is replaced meanwhile).
    file: Arc<File>,
    path: PathBuf,
    highest_modseq: u64,
    /// Where the replay ended: (head log file_seq, offset), as [`crate::View::log_position`].
    log_position: (u32, u64),
    /// The UID of the first message (`None` when there is none).
    first_uid: Option<u32>,
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
        let Some((map, first_uid, file)) = read_header(&paths.index())? else {
            return Ok(None);
        };
        let opened = OpenedIndex {
            file: Arc::new(file),
            path: paths.index(),
            first_uid,
        };
        // the head log from where `P` says Dovecot starts reading it, when it says so
        let log_path = paths.log();
        let log_file = match File::open(&log_path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &log_path, e)),
        };
        if let Some(log) = read_log_from_head(&log_file, &log_path, &map, None)? {
            match HeaderView::replay(map.clone(), log, opened.clone()) {
                Replayed::Header(v) => return Ok(Some(v)),
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
        match HeaderView::replay(map, log, opened) {
            Replayed::Header(v) => Ok(Some(v)),
            _ => Ok(None),
        }
    }

    /// `P`'s header `map` with the header changes of `log` past `P` applied.
    fn replay(map: IndexFile, log: LogFile, opened: OpenedIndex) -> Replayed {
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
            return Replayed::Unanswerable;
        }
        let tail: Vec<&LogRecord> = log.records.iter().filter(|r| r.offset >= start).collect();
        if !tail.iter().all(|r| changes_header_only(r, &map)) {
            return Replayed::Unanswerable;
        }
        let max_tail =
            crate::view::max_tail_offset(log, Some(&h)).max(h.log_file_tail_offset as u64);
        if max_tail < log.first_offset && log.read_from_later_offset() {
            // requests may wait between the tail offset and the records read
            return Replayed::NeedsEarlierRecords;
        }
        let backend_pending = log
            .records
            .iter()
            .any(|r| r.offset >= max_tail && crate::writer::is_backend_request(r.type_raw));
        let seq = log.header.file_seq;
        let mut syncer = Syncer::for_header(map, &logs, (seq, start), log.modseq_at(start));
        for r in tail {
            syncer.apply(r, (seq, r.offset));
        }
        syncer.finish_modseq((seq, log.sync_offset), log.end_modseq);
        if syncer.errors || syncer.index_deleted {
            return Replayed::Unanswerable;
        }
        let map = syncer.map;
        let highest_modseq = crate::view::derived_highest_modseq(&map, log.end_modseq);
        Replayed::Header(HeaderView {
            map,
            file: opened.file,
            path: opened.path,
            highest_modseq,
            log_position: (seq, log.sync_offset),
            first_uid: opened.first_uid,
            backend_pending,
        })
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

    /// The record of `uid`, read from `P` by bisection (a few small reads, whatever the
    /// number of messages): current, since nothing past `P` changed records. `None` when
    /// `P` has no such record.
    pub fn record_of(&self, uid: u32) -> Result<Option<Vec<u8>>> {
        let h = self.header();
        let (header_size, record_size) = (h.header_size as u64, h.record_size as u64);
        let read = |pos: u64, buf: &mut [u8]| {
            self.file
                .read_exact_at(buf, header_size + pos * record_size)
                .map_err(|e| Error::io("read", &self.path, e))
        };
        let (mut lo, mut hi) = (0u64, h.messages_count as u64);
        let mut at = [0u8; 4];
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            read(mid, &mut at)?;
            if u32::from_le_bytes(at) < uid {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo >= h.messages_count as u64 {
            return Ok(None);
        }
        let mut rec = vec![0u8; record_size as usize];
        read(lo, &mut rec)?;
        Ok((rec[..4] == uid.to_le_bytes()).then_some(rec))
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
        (self.map.records_count() == 1).then(|| self.map.record_uid(0))
    }

    /// The last message's record bytes of extension `name`.
    pub fn last_ext(&self, name: &str) -> Option<&[u8]> {
        if self.map.records_count() != 1 {
            return None;
        }
        self.map.ext_record(0, self.map.ext_index(name)?)
    }
}

/// What [`HeaderView::replay`] made of a log.
enum Replayed {
    Header(HeaderView),
    /// The header alone can't tell the current state (see the module docs).
    Unanswerable,
    /// The log was read from a later offset than the tail offset: the records between
    /// must be read to tell whether a request waits for the backend.
    NeedsEarlierRecords,
}

/// `P` as [`read_header`] opened it.
#[derive(Clone)]
struct OpenedIndex {
    file: Arc<File>,
    path: PathBuf,
    first_uid: Option<u32>,
}

/// True when `r` changes only header bytes of `map`, never its records or layout.
fn changes_header_only(r: &LogRecord, map: &IndexFile) -> bool {
    match &r.body {
        RecordBody::HeaderUpdate(_)
        | RecordBody::ExtHdrUpdate(_)
        | RecordBody::ExtHdrUpdate32(_)
        | RecordBody::Boundary(_) => true,
        // uid 0 carries only the highest modseq (written at the start of a rotated log)
        RecordBody::ModseqUpdate(v) => v.iter().all(|m| m.uid == 0),
        // an intro of an extension `P` has, with its layout and reset_id unchanged
        RecordBody::ExtIntro(intros) => intros.iter().all(|i| {
            let existing = if i.ext_id == EXT_ID_BY_NAME {
                map.extensions.iter().find(|e| e.name.as_bytes() == i.name)
            } else {
                map.extensions.get(i.ext_id as usize)
            };
            existing.is_some_and(|e| {
                e.reset_id == i.reset_id
                    && e.record_size == i.record_size
                    && e.record_align == i.record_align
                    && e.data.len() == i.hdr_size as usize
            })
        }),
        _ => false,
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
