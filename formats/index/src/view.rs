//! Building the current state of an index as Dovecot does: read `P`, then replay
//! `P.log.2`/`P.log` from the index's (log_file_seq, log_file_head_offset), or the logs
//! alone when `P` is missing (src/lib-index/mail-index-map-read.c mail_index_map,
//! mail-index-sync-update.c mail_index_sync_map, mail-transaction-log-view.c
//! mail_transaction_log_view_set).
//!
//! Recovery, as Dovecot does it (each one is listed in [`View::recoveries`]):
//! - `P` unreadable or inconsistent (bad version, sizes, extension headers, record order):
//!   Dovecot deletes it and rebuilds from the logs; so does the view, when the oldest log
//!   starts a history (file_seq 1 or prev_file_seq 0). Otherwise the index error is returned.
//! - `P.log` has another indexid than `P`: the index wins, the log is ignored (Dovecot
//!   marks the log corrupted and starts a new one).
//! - `P.log` header unreadable: ignored when `P` exists (Dovecot deletes and recreates it),
//!   else an error.
//! - `P.log.2` unreadable, foreign, or its size disagrees with `P.log`'s prev_file_offset:
//!   ignored.
//! - a record Dovecot rejects (bad size, missing EXPUNGE_PROT, unsorted UID ranges, ...):
//!   replay stops before it (Dovecot marks the log corrupted there).
//! - a record that can't be applied (append below next_uid, update of an unknown
//!   extension, ...): skipped, and the map is fsck'd at the end, as Dovecot does.
//! - an unfinished tail (size field not written, data past EOF, BOUNDARY past EOF):
//!   ignored; it is not written yet.
//! - the index points to log history that no longer exists: [`Error::LogLost`].

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::ext::{self, KeywordsHeader, ModseqHeader};
use crate::format::index::{hdr_flag, hdr_off, rec_flag, Extension, IndexFile, IndexHeader};
use crate::format::log::{LogFile, LogHeader, LogStop, RecordBody};
use crate::lock::LogLock;
use crate::paths::IndexPaths;
use crate::sync::{fsck, LogPos, Syncer};

/// The raw bytes of an index's files, as read from disk (or through a locked fd).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub index: Option<Vec<u8>>,
    pub log: Option<Vec<u8>>,
    pub log2: Option<Vec<u8>>,
}

impl Sources {
    /// Reads `P`, `P.log` and `P.log.2`; missing files are `None`.
    pub fn read(paths: &IndexPaths) -> Result<Sources> {
        Ok(Sources {
            index: read_optional(&paths.index())?,
            log: read_optional(&paths.log())?,
            log2: read_optional(&paths.log2())?,
        })
    }
}

impl View {
    /// The view a writer holding `lock` (on the head log) works on: `P`, the head log read
    /// through the lock, and `P.log.2` only when the replay from `P` may need it.
    ///
    /// A writer's view replays and appends; the history before the head log serves only
    /// [`View::changes_since`], which without it answers "unknown" (`changes_in`), never
    /// something wrong. So when `P` was written in the head log's time (its log_file_seq is
    /// the head's, the usual case after a rotation, which writes `P`; see
    /// [`replay_needs_only_head`]), `P.log.2` is not read: it may be as large as `P`, and
    /// a commit builds a view several times. When the view built so needs any repair, or
    /// can't be built, it is built again with `P.log.2`, as before: a damaged index is
    /// rebuilt from every log there is.
    pub(crate) fn for_writer(paths: &IndexPaths, lock: &LogLock) -> Result<View> {
        let index = read_optional(&paths.index())?;
        if let Some(p) = &index {
            // through the locked descriptor: closing another one would drop the lock
            if let Some(view) = View::from_head_tail(paths, p, &lock.file)? {
                return Ok(view);
            }
        }
        let log = lock.read_all()?;
        View::build_head_first(paths, index, Some(log), || Sources::locked(paths, lock))
    }

    /// The view of `P` (`index`) and the head log (`log`), without `P.log.2` when the
    /// replay from `P` needs only the head log ([`replay_needs_only_head`]); with every log
    /// otherwise, or when the view built so needs a repair or can't be built (`every_log`
    /// reads the files again for that: a damaged index is rebuilt from every log there is).
    fn build_head_first(
        paths: &IndexPaths,
        index: Option<Vec<u8>>,
        log: Option<Vec<u8>>,
        every_log: impl FnOnce() -> Result<Sources>,
    ) -> Result<View> {
        let head_seq = log
            .as_deref()
            .filter(|l| l.len() >= crate::format::log::HEADER_SIZE)
            .map(|l| LogHeader::decode_raw(l).file_seq);
        let head_only = match (&index, head_seq) {
            (Some(p), Some(seq)) => replay_needs_only_head(p, seq, &paths.index()),
            _ => false,
        };
        if !head_only {
            let log2 = read_optional(&paths.log2())?;
            return View::build(paths, Sources { index, log, log2 });
        }
        let src = Sources {
            index,
            log,
            log2: None,
        };
        match View::build(paths, src) {
            Ok(view) if view.recoveries.is_empty() && !view.logs.is_empty() => Ok(view),
            // something to repair, or nothing to build from: with every log
            _ => View::build(paths, every_log()?),
        }
    }
}

impl View {
    /// A writer's view from `P` (`index`, the whole file) and only the head log's records
    /// from where `P` says Dovecot starts reading it ([`skip_to_head`]: where modseq
    /// tracking stopped, or `P`'s head offset in a log without modseqs). Records before it
    /// are neither read nor decoded: after a large append (a conversion) the head log may
    /// be as large as `P`, and a commit builds a view several times. Unlike Dovecot, which
    /// reads earlier records when a view asks for them, this needs the offset to be no
    /// later than the replayed log_file_tail_offset too (the backend's pending requests
    /// start there), and the view answers changes only from there
    /// (`LogFile::starts_history`).
    ///
    /// `None` when `P` doesn't say so, or the view built so needs any repair (a record
    /// that doesn't decode at that offset, say): the caller reads every log.
    fn from_head_tail(
        paths: &IndexPaths,
        index: &[u8],
        log_file: &std::fs::File,
    ) -> Result<Option<View>> {
        let Ok(map) = IndexFile::decode_header_of(index, &paths.index()) else {
            return Ok(None);
        };
        let Some(log) = read_log_from_head(log_file, &paths.log(), &map, None)? else {
            return Ok(None);
        };
        let from = log.first_offset;
        // Writers also look at the records after log_file_tail_offset (changes the mail
        // files may not have yet, `IndexWriter::sync_housekeeping`): those must have been
        // read too. The replay sets the tail offset from records after `P`'s head offset,
        // which were all read, so it is the one a full read gives.
        match View::build_decoded(paths, Some(index), Some(Ok(log)), None) {
            Ok(view)
                if view.recoveries.is_empty()
                    && !view.logs.is_empty()
                    && view.header().log_file_tail_offset as u64 >= from =>
            {
                Ok(Some(view))
            }
            _ => Ok(None),
        }
    }
}

/// Where Dovecot starts reading the head log (header `log`) for `P` (`map`: at least its
/// header and extension headers), and the modseq counter there
/// (mail_transaction_log_file_skip_to_head, mail-transaction-log-file.c), when `P` names
/// this log and a head offset in it: with a `modseq` header of this log, its log_offset
/// (no later than the head offset) and highest_modseq; without a `modseq` extension (a
/// map index), the head offset and, in a log that tracks no modseqs (initial_modseq 0),
/// 0, else a counter to be counted (`None`). `None` overall: the log is read whole.
fn skip_to_head(map: &IndexFile, log: &LogHeader) -> Option<(u64, Option<u64>)> {
    let h = map.header();
    let (head, hdr_size) = (h.log_file_head_offset as u64, log.hdr_size as u64);
    if log.file_seq != h.log_file_seq || log.indexid != h.indexid || head < hdr_size {
        return None;
    }
    match map.ext(ext::MODSEQ) {
        None if log.initial_modseq == 0 => Some((head, Some(0))),
        // Dovecot reads such a log from its start, for the modseq counter; mailsync
        // counts it over the records before the head offset without keeping them
        None => Some((head, None)),
        Some(e) => {
            let m = ModseqHeader::decode(&e.data)?;
            let from = m.log_offset as u64;
            (m.log_seq == log.file_seq && from <= head && from >= hdr_size)
                .then_some((from, Some(m.highest_modseq)))
        }
    }
}

/// The head log's records from where Dovecot starts reading it for `P` (`map`, see
/// [`skip_to_head`]), read from `file` with two `pread`s (its header, its bytes from
/// there; see [`LogFile::decode_tail`]). `None` when `P` doesn't name such a point, the
/// modseq there is above `since` (when given: older changes are asked for), or the log
/// doesn't decode there; the caller then reads it whole.
pub(crate) fn read_log_from_head(
    file: &std::fs::File,
    path: &Path,
    map: &IndexFile,
    since: Option<u64>,
) -> Result<Option<LogFile>> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let md = file.metadata().map_err(|e| Error::io("fstat", path, e))?;
    let len = md.len();
    let read = |start: u64, end: u64| -> Result<Vec<u8>> {
        let mut data = vec![0u8; end.saturating_sub(start) as usize];
        file.read_exact_at(&mut data, start)
            .map_err(|e| Error::io("pread", path, e))?;
        Ok(data)
    };
    let head = read(0, len.min(crate::format::log::HEADER_SIZE as u64))?;
    let Ok(header) = LogHeader::decode(&head, path) else {
        return Ok(None);
    };
    let Some((from, from_modseq)) = skip_to_head(map, &header) else {
        return Ok(None);
    };
    if from > len {
        return Ok(None);
    }
    let from_modseq = match from_modseq {
        Some(m) => m,
        None => {
            use std::io::{Seek, SeekFrom};
            let log_id = LogIdentity {
                dev: md.dev(),
                ino: md.ino(),
                header: head.clone(),
            };
            let (start, start_modseq) = counted::before(&log_id, from)
                .unwrap_or((header.hdr_size as u64, header.initial_modseq));
            let mut records = std::io::BufReader::with_capacity(64 * 1024, file);
            records
                .seek(SeekFrom::Start(start))
                .map_err(|e| Error::io("seek", path, e))?;
            match LogFile::modseq_counter_from(records, &header, start_modseq, from - start) {
                Ok(m) => {
                    counted::note(log_id, from, m);
                    m
                }
                // the full read reports it
                Err(_) => return Ok(None),
            }
        }
    };
    if since.is_some_and(|s| from_modseq > s) {
        return Ok(None);
    }
    let tail = read(from, len)?;
    Ok(LogFile::decode_tail(&head, &tail, from, from_modseq, path).ok())
}

/// A log file as [`counted`] knows it: its inode and its header's bytes (indexid,
/// file_seq, prev_file_seq/offset, create_stamp, initial_modseq).
#[derive(Clone, Debug, PartialEq, Eq)]
struct LogIdentity {
    dev: u64,
    ino: u64,
    header: Vec<u8>,
}

/// The modseq counters this process counted over the records of logs without per-message
/// modseqs (the mdbox map) up to a head offset `P` named ([`read_log_from_head`]), so the
/// next view of the same log counts only the records after it. A log is only appended
/// to (a torn tail past the last complete transaction is cut, never a record before a head
/// offset `P` names, mail-transaction-log-file.c), and a rotation or a reset writes a new
/// file with a new header: the records before a counted offset of the same file and
/// header are the ones counted. A commit builds a view several times, and the map log
/// can be as large as `P` after a conversion.
mod counted {
    use super::LogIdentity;
    use std::sync::Mutex;

    /// The last few counters: (log, offset, modseq counter after the records before it).
    static COUNTERS: Mutex<Vec<(LogIdentity, u64, u64)>> = Mutex::new(Vec::new());
    const KEPT: usize = 8;

    /// The latest counted (offset, counter) of `log` at or before `offset`.
    pub(super) fn before(log: &LogIdentity, offset: u64) -> Option<(u64, u64)> {
        let counters = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
        counters
            .iter()
            .filter(|(id, at, _)| id == log && *at <= offset)
            .map(|&(_, at, modseq)| (at, modseq))
            .max_by_key(|&(at, _)| at)
    }

    pub(super) fn note(log: LogIdentity, offset: u64, modseq: u64) {
        let mut counters = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
        if counters
            .iter()
            .any(|(id, at, _)| *id == log && *at == offset)
        {
            return;
        }
        if counters.len() >= KEPT {
            counters.remove(0);
        }
        counters.push((log, offset, modseq));
    }
}

/// True when replaying `P` (`index`, the whole file) reads no log older than the head log
/// (file_seq `head_seq`): `P` was written in the head log's time, and so was its modseq
/// extension's header, from where a replay brings per-message modseqs up to date
/// (`Syncer::modseq_sync_init`, mail_index_modseq_sync_begin in mail-index-modseq.c).
fn replay_needs_only_head(index: &[u8], head_seq: u32, path: &Path) -> bool {
    let Ok(map) = IndexFile::decode_header_of(index, path) else {
        return false;
    };
    map.header().log_file_seq == head_seq
        && map
            .ext(ext::MODSEQ)
            .and_then(|e| ModseqHeader::decode(&e.data))
            .is_none_or(|m| m.log_seq == head_seq)
}

impl Sources {
    /// `P`, the head log read through `lock`, and `P.log.2`.
    fn locked(paths: &IndexPaths, lock: &LogLock) -> Result<Sources> {
        Ok(Sources {
            index: read_optional(&paths.index())?,
            log: Some(lock.read_all()?),
            log2: read_optional(&paths.log2())?,
        })
    }
}

pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// The logs of an index's history, oldest first: `P.log.2` (decoded from `log2`) when it
/// is the file before `head` and ends where `head` says it does, then `head`. What was
/// left out or is corrupted goes to `notes`.
fn history_logs(
    paths: &IndexPaths,
    head: LogFile,
    log2: Option<&[u8]>,
    notes: &mut Vec<String>,
) -> Vec<LogFile> {
    let mut logs: Vec<LogFile> = Vec::new();
    let corrupt_note = |l: &LogFile, p: &Path| match &l.stop {
        LogStop::Corrupt { offset, reason } => Some(format!(
            "Corrupted transaction log file {} seq {} at offset {offset}: {reason}; \
             later records ignored",
            p.display(),
            l.header.file_seq
        )),
        _ => None,
    };
    if let Some(d) = log2 {
        let p2 = paths.log2();
        match LogFile::decode(d, &p2) {
            Ok(l2) if l2.header.indexid != head.header.indexid => {
                notes.push(format!("{}: foreign indexid; ignored", p2.display()))
            }
            Ok(l2) if l2.header.file_seq >= head.header.file_seq => {}
            Ok(l2)
                if head.header.prev_file_seq == l2.header.file_seq
                    && head.header.prev_file_offset as u64 != l2.sync_offset =>
            {
                notes.push(format!(
                    "{}: Invalid transaction log size ({} vs {}); ignored",
                    p2.display(),
                    l2.sync_offset,
                    head.header.prev_file_offset
                ))
            }
            Ok(l2) => {
                notes.extend(corrupt_note(&l2, &p2));
                logs.push(l2)
            }
            Err(e) => notes.push(format!("{e}; ignored")),
        }
    }
    notes.extend(corrupt_note(&head, &paths.log()));
    logs.push(head);
    logs
}

/// An index's transaction logs without `P`: the history a caller that keeps the index
/// state elsewhere (a dbox mailbox's snapshot) asks "what changed since" — the same logs a
/// [`View`] keeps, without reading and decoding every record of `P`.
#[derive(Clone, Debug)]
pub struct LogHistory {
    logs: Vec<LogFile>,
}

impl LogHistory {
    /// Reads and decodes `P.log` and `P.log.2`; `None` without a usable `P.log`.
    pub fn read(paths: &IndexPaths) -> Result<Option<LogHistory>> {
        let _guard = crate::lock::read_guard(paths);
        LogHistory::read_all(paths)
    }

    /// [`LogHistory::read`] for a caller asking only what changed after `since`: when
    /// `P`'s `modseq` header names a point of the head log whose modseq is `since` or
    /// less (`skip_to_head`), only the head log's records from there are read (every
    /// change after `since` is among them), unless one of them needs an earlier record
    /// to be answered ([`crate::changes::answerable_alone`]); else every log is read.
    pub fn read_since(paths: &IndexPaths, since: u64) -> Result<Option<LogHistory>> {
        let _guard = crate::lock::read_guard(paths);
        if let Some(log) = LogHistory::head_tail_since(paths, since)? {
            return Ok(Some(LogHistory { logs: vec![log] }));
        }
        LogHistory::read_all(paths)
    }

    /// The head log's records from `P`'s modseq header on, when that point is at or
    /// before `since` and they answer alone.
    fn head_tail_since(paths: &IndexPaths, since: u64) -> Result<Option<LogFile>> {
        let Some((map, _, _)) = crate::header_view::read_header(&paths.index())? else {
            return Ok(None);
        };
        let log_path = paths.log();
        let file = match std::fs::File::open(&log_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &log_path, e)),
        };
        let Some(log) = read_log_from_head(&file, &log_path, &map, Some(since))? else {
            return Ok(None);
        };
        let usable =
            !matches!(log.stop, LogStop::Corrupt { .. }) && crate::changes::answerable_alone(&log);
        Ok(usable.then_some(log))
    }

    fn read_all(paths: &IndexPaths) -> Result<Option<LogHistory>> {
        let Some(data) = read_optional(&paths.log())? else {
            return Ok(None);
        };
        // a log a view would ignore: no history (as a view of it has none)
        let Ok(head) = LogFile::decode(&data, &paths.log()) else {
            return Ok(None);
        };
        drop(data);
        let log2 = read_optional(&paths.log2())?;
        let logs = history_logs(paths, head, log2.as_deref(), &mut Vec::new());
        Ok(Some(LogHistory { logs }))
    }

    /// The logs, oldest first (never empty).
    pub fn logs(&self) -> &[LogFile] {
        &self.logs
    }

    /// The indexid of the logs.
    pub fn indexid(&self) -> u32 {
        self.head().header.indexid
    }

    /// Where the logs end: what [`View::log_position`] of a view of them says.
    pub fn log_position(&self) -> (u32, u64) {
        let head = self.head();
        (head.header.file_seq, head.sync_offset)
    }

    fn head(&self) -> &LogFile {
        // never empty: history_logs ends with the head log
        &self.logs[self.logs.len() - 1]
    }
}

/// The state of an index after replaying its logs: what Dovecot's view shows.
#[derive(Clone, Debug)]
pub struct View {
    paths: IndexPaths,
    map: IndexFile,
    /// Header of `P` as found on disk, before replay.
    on_disk: Option<IndexHeader>,
    /// The log files of the history, oldest first (those used for the replay and for
    /// [`View::changes_since`]).
    logs: Vec<LogFile>,
    keywords: Vec<Vec<u8>>,
    /// Where the `keywords` and `modseq` extensions are among the map's, found once:
    /// every message asks for its keywords and modseq.
    keywords_ext: Option<usize>,
    modseq_ext: Option<usize>,
    highest_modseq: u64,
    /// The modseq counter at the end of the head log (sync_highest_modseq), 0 without log.
    log_modseq: u64,
    recoveries: Vec<String>,
    deleted: bool,
}

/// One message of a [`View`].
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    view: &'a View,
    /// 0-based position (IMAP sequence - 1).
    pub index: usize,
}

impl<'a> Message<'a> {
    pub fn uid(&self) -> u32 {
        self.view.map.record_uid(self.index)
    }
    /// The raw flags byte (system flags 0x1f, plus 0x40 BACKEND, 0x80 DIRTY).
    pub fn flags(&self) -> u8 {
        self.view.map.record_flags(self.index)
    }
    /// The IMAP system flags.
    pub fn system_flags(&self) -> mailstore::Flags {
        mailstore::Flags(self.flags() & rec_flag::SYSTEM_MASK)
    }
    /// Keyword names set on this message, in index order.
    pub fn keywords(&self) -> Vec<&'a [u8]> {
        self.keyword_indexes()
            .into_iter()
            .filter_map(|i| self.view.keywords.get(i).map(|k| k.as_slice()))
            .collect()
    }
    /// The positions in [`View::keywords`] of the keywords set on this message, ascending
    /// (a bit may name a position past the list's end; the caller skips it, as
    /// [`Message::keywords`] does).
    pub fn keyword_indexes(&self) -> Vec<usize> {
        self.view
            .keywords_ext
            .and_then(|i| self.view.map.ext_record(self.index, i))
            .map(ext::keyword_bits)
            .unwrap_or_default()
    }
    /// The message's MODSEQ as Dovecot reports it (mail_index_modseq_lookup): the `modseq`
    /// record, or the highest modseq when it is 0 or the extension doesn't exist.
    pub fn modseq(&self) -> u64 {
        let record = self
            .view
            .modseq_ext
            .and_then(|i| self.view.map.ext_record(self.index, i));
        match record {
            Some(d) if d.len() >= 8 => {
                let v = u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]));
                if v == 0 {
                    self.view.highest_modseq()
                } else {
                    v
                }
            }
            _ => self.view.log_modseq.max(1),
        }
    }
    /// The record bytes of extension `name`.
    pub fn ext(&self, name: &str) -> Option<&'a [u8]> {
        let idx = self.view.map.ext_index(name)?;
        self.view.map.ext_record(self.index, idx)
    }
    /// The 128-bit GUID from the `guid` extension (mdbox), if present.
    pub fn guid128(&self) -> Option<[u8; 16]> {
        self.ext(ext::GUID).map(ext::guid_record)
    }
}

impl View {
    /// Opens the index `prefix` in `dir` (e.g. `dovecot.index`, `dovecot.map.index`,
    /// `dovecot.list.index`).
    pub fn open(dir: &Path, prefix: &str) -> Result<View> {
        View::open_paths(&IndexPaths::new(dir, prefix))
    }

    pub fn open_paths(paths: &IndexPaths) -> Result<View> {
        let _guard = crate::lock::read_guard(paths);
        let sources = Sources::read(paths)?;
        View::build(paths, sources)
    }

    /// [`View::open_paths`] for a caller that needs the messages but not the history
    /// before `P`: the head log is read as a writer's view reads it, from where `P`'s
    /// `modseq` header says Dovecot starts (`skip_to_head`), and `P.log.2` not at all. The
    /// view's logs then start there ([`LogFile::starts_history`]): `changes_since` an
    /// older modseq answers "unknown", and a caller wanting it reads [`LogHistory`].
    /// Whenever that doesn't apply, the whole head log is read, and `P.log.2` only when the
    /// replay needs it or the view would need a repair (as a writer's view).
    pub fn open_recent(paths: &IndexPaths) -> Result<View> {
        let _guard = crate::lock::read_guard(paths);
        let Some(index) = read_optional(&paths.index())? else {
            return View::build(paths, Sources::read(paths)?);
        };
        match std::fs::File::open(paths.log()) {
            Ok(f) => {
                if let Some(view) = View::from_head_tail(paths, &index, &f)? {
                    return Ok(view);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("open", &paths.log(), e)),
        }
        let log = read_optional(&paths.log())?;
        View::build_head_first(paths, Some(index), log, || Sources::read(paths))
    }

    /// Builds the view from file contents (see the module docs for the recovery rules).
    pub fn build(paths: &IndexPaths, src: Sources) -> Result<View> {
        let head = src.log.as_deref().map(|d| LogFile::decode(d, &paths.log()));
        View::build_decoded(paths, src.index.as_deref(), head, src.log2.as_deref())
    }

    /// [`View::build`] with the head log decoded (or failing to) already.
    fn build_decoded(
        paths: &IndexPaths,
        index: Option<&[u8]>,
        head: Option<Result<LogFile>>,
        log2: Option<&[u8]>,
    ) -> Result<View> {
        let mut notes: Vec<String> = Vec::new();
        let index_path = paths.index();
        let log_path = paths.log();
        let mut index_err = None;
        let index = match index {
            Some(d) => match IndexFile::decode(d, &index_path) {
                Ok(f) => Some(f),
                Err(e) => {
                    notes.push(format!("{e}; rebuilding from the transaction log"));
                    index_err = Some(e);
                    None
                }
            },
            None => None,
        };
        let mut head = match head {
            Some(Ok(l)) => Some(l),
            Some(Err(e)) if index.is_some() => {
                notes.push(format!("{e}; log ignored"));
                None
            }
            Some(Err(e)) => return Err(e),
            None => None,
        };
        if let (Some(idx), Some(log)) = (&index, &head) {
            let (a, b) = (idx.header().indexid, log.header.indexid);
            if a != b {
                notes.push(format!(
                    "{}: indexid changed: {b} -> {a}; log ignored",
                    log_path.display()
                ));
                head = None;
            }
        }
        let Some(head) = head else {
            return match index {
                Some(map) => Ok(View::finish_index_only(paths, map, notes)),
                None => Err(index_err.unwrap_or(Error::NotFound {
                    path: index_path.clone(),
                })),
            };
        };
        let logs = history_logs(paths, head, log2, &mut notes);

        let indexid = logs.last().map(|l| l.header.indexid).unwrap_or(0);
        let start: LogPos = match &index {
            Some(i) => {
                let h = i.header();
                (h.log_file_seq, h.log_file_head_offset as u64)
            }
            None => (1, 0),
        };
        let plan = match plan_replay(&logs, start) {
            Ok(p) => p,
            Err(reason) => {
                let reason = match &index_err {
                    Some(e) => format!("{reason} (and {e})"),
                    None => reason,
                };
                return Err(Error::LogLost {
                    path: log_path,
                    reason,
                });
            }
        };
        let on_disk = index.as_ref().map(|i| i.header());
        let mut map = match (index, plan.reset) {
            (Some(i), false) => i,
            (old, _) => {
                let mut m = IndexFile::new(indexid);
                let mut h = m.header();
                h.log_file_seq = logs[plan.tail].header.file_seq;
                h.log_file_tail_offset = 0;
                if let Some(o) = old {
                    h.flags |= o.header().flags & hdr_flag::FSCKD;
                }
                m.set_header(&h);
                m
            }
        };
        let had_dirty = map.hdr_u32(hdr_off::FLAGS) & hdr_flag::HAVE_DIRTY != 0;
        if had_dirty {
            let f = map.hdr_u32(hdr_off::FLAGS);
            map.set_hdr_u32(hdr_off::FLAGS, f & !hdr_flag::HAVE_DIRTY);
        }
        let tail_file = &logs[plan.tail];
        let start_pos = (tail_file.header.file_seq, plan.offset);
        let start_modseq = tail_file.modseq_at(plan.offset);
        // the appends to replay, reserved at once: doubling a large record array would
        // hold up to twice its size
        let appended: usize = logs[plan.tail..]
            .iter()
            .flat_map(|f| {
                f.records
                    .iter()
                    .filter(move |r| f.header.file_seq != start_pos.0 || r.offset >= plan.offset)
            })
            .map(|r| match &r.body {
                RecordBody::Append(v) => v.len(),
                _ => 0,
            })
            .sum();
        map.records.reserve_exact(appended * map.record_size());
        let mut syncer = Syncer::new(map, &logs, start_pos, start_modseq);
        for f in &logs[plan.tail..] {
            for r in &f.records {
                if f.header.file_seq == start_pos.0 && r.offset < plan.offset {
                    continue;
                }
                syncer.apply(r, (f.header.file_seq, r.offset));
            }
        }
        let head = logs.last().expect("head log");
        let end: LogPos = (head.header.file_seq, head.sync_offset);
        syncer.recheck_dirty(had_dirty);
        syncer.finish_modseq(end, head.end_modseq);
        let deleted = syncer.index_deleted;
        let errors = syncer.errors;
        notes.append(&mut syncer.notes);
        let mut map = syncer.map;
        // mail_index_sync_update_log_offset + the tail offset kept by the log code
        if map.hdr_u32(hdr_off::LOG_FILE_SEQ) != end.0 {
            map.set_hdr_u32(hdr_off::LOG_FILE_SEQ, end.0);
            map.set_hdr_u32(hdr_off::LOG_FILE_TAIL_OFFSET, 0);
        }
        map.set_hdr_u32(hdr_off::LOG_FILE_HEAD_OFFSET, end.1 as u32);
        let max_tail = max_tail_offset(head, on_disk.as_ref());
        if (map.hdr_u32(hdr_off::LOG_FILE_TAIL_OFFSET) as u64) < max_tail {
            map.set_hdr_u32(hdr_off::LOG_FILE_TAIL_OFFSET, max_tail as u32);
        }
        let hs = map.computed_header_size() as u32;
        map.set_hdr_u32(hdr_off::HEADER_SIZE, hs);
        if errors || map.check_header().is_err() {
            for f in fsck(&mut map) {
                notes.push(format!("fsck: {f}"));
            }
        }
        let log_modseq = head.end_modseq;
        let mut view = View {
            paths: paths.clone(),
            map,
            on_disk,
            logs,
            keywords: Vec::new(),
            keywords_ext: None,
            modseq_ext: None,
            highest_modseq: 0,
            log_modseq,
            recoveries: notes,
            deleted,
        };
        view.refresh_derived();
        Ok(view)
    }

    fn finish_index_only(paths: &IndexPaths, map: IndexFile, notes: Vec<String>) -> View {
        let on_disk = Some(map.header());
        let mut view = View {
            paths: paths.clone(),
            map,
            on_disk,
            logs: Vec::new(),
            keywords: Vec::new(),
            keywords_ext: None,
            modseq_ext: None,
            highest_modseq: 0,
            log_modseq: 0,
            recoveries: notes,
            deleted: false,
        };
        view.refresh_derived();
        view
    }

    fn refresh_derived(&mut self) {
        self.keywords = self
            .map
            .ext(ext::KEYWORDS)
            .and_then(|e| KeywordsHeader::decode(&e.data).ok())
            .map(|k| k.names)
            .unwrap_or_default();
        self.keywords_ext = self.map.ext_index(ext::KEYWORDS);
        self.modseq_ext = self.map.ext_index(ext::MODSEQ);
        self.highest_modseq = derived_highest_modseq(&self.map, self.log_modseq);
    }

    pub fn paths(&self) -> &IndexPaths {
        &self.paths
    }

    /// The header after replay.
    pub fn header(&self) -> IndexHeader {
        self.map.header()
    }

    /// The header of `P` as it was on disk, if it was read.
    pub fn header_on_disk(&self) -> Option<&IndexHeader> {
        self.on_disk.as_ref()
    }

    pub fn indexid(&self) -> u32 {
        self.map.hdr_u32(hdr_off::INDEXID)
    }
    pub fn uid_validity(&self) -> u32 {
        self.map.hdr_u32(hdr_off::UID_VALIDITY)
    }
    pub fn next_uid(&self) -> u32 {
        self.map.hdr_u32(hdr_off::NEXT_UID)
    }
    pub fn messages_count(&self) -> usize {
        self.map.hdr_u32(hdr_off::MESSAGES_COUNT) as usize
    }

    /// HIGHESTMODSEQ (mail_index_modseq_get_highest): the `modseq` header's value, else
    /// the log's modseq counter; 0 when modseqs were never tracked. `doveadm mailbox status
    /// highestmodseq` shows max(this, 1).
    pub fn highest_modseq(&self) -> u64 {
        self.highest_modseq
    }

    /// The modseq counter at the end of the head log (0 without a log).
    pub fn log_modseq(&self) -> u64 {
        self.log_modseq
    }

    /// Where the replay ended: (head log file_seq, offset) — the next transaction goes there.
    pub fn log_position(&self) -> (u32, u64) {
        let h = self.map.header();
        (h.log_file_seq, h.log_file_head_offset as u64)
    }

    /// Every message, ascending by UID.
    pub fn messages(&self) -> impl DoubleEndedIterator<Item = Message<'_>> + ExactSizeIterator {
        self.messages_from(0)
    }

    /// The messages from the `start`-th on (0-based, ascending by UID), without walking
    /// those before it.
    pub fn messages_from(
        &self,
        start: usize,
    ) -> impl DoubleEndedIterator<Item = Message<'_>> + ExactSizeIterator {
        let count = self.messages_count();
        (start.min(count)..count).map(move |index| Message { view: self, index })
    }

    /// The message with `uid`.
    pub fn message(&self, uid: u32) -> Option<Message<'_>> {
        let index = self.map.position_of(uid, self.messages_count())?;
        Some(Message { view: self, index })
    }

    /// Extensions in map order (their position is the ext_id).
    pub fn extensions(&self) -> &[Extension] {
        &self.map.extensions
    }

    pub fn extension(&self, name: &str) -> Option<&Extension> {
        self.map.ext(name)
    }

    /// Keyword names in index order.
    pub fn keywords(&self) -> &[Vec<u8>] {
        &self.keywords
    }

    /// The `modseq` extension header, when the extension exists.
    pub fn modseq_header(&self) -> Option<ModseqHeader> {
        self.map
            .ext(ext::MODSEQ)
            .and_then(|e| ModseqHeader::decode(&e.data))
    }

    /// The log files of the history, oldest first.
    pub fn logs(&self) -> &[LogFile] {
        &self.logs
    }

    /// What was repaired or ignored while building the view (see the module docs).
    pub fn recoveries(&self) -> &[String] {
        &self.recoveries
    }

    /// An external INDEX_DELETED was the last word: the mailbox is being deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// The map itself, laid out as Dovecot would write it (what a `P` snapshot contains).
    pub fn index_file(&self) -> &IndexFile {
        &self.map
    }

    pub(crate) fn into_parts(self) -> (IndexFile, Vec<LogFile>) {
        (self.map, self.logs)
    }
}

/// HIGHESTMODSEQ of a replayed map (mail_index_map_modseq_get_highest): the `modseq`
/// header's value, else the log's modseq counter at the end of the replay.
pub(crate) fn derived_highest_modseq(map: &IndexFile, log_modseq: u64) -> u64 {
    match map
        .ext(ext::MODSEQ)
        .and_then(|e| ModseqHeader::decode(&e.data))
    {
        Some(h) if h.highest_modseq != 0 => h.highest_modseq,
        _ => log_modseq,
    }
}

struct Plan {
    /// Index into the log list of the first file to replay.
    tail: usize,
    offset: u64,
    reset: bool,
}

/// mail_transaction_log_view_set(min = start, max = head).
fn plan_replay(logs: &[LogFile], start: LogPos) -> std::result::Result<Plan, String> {
    let (mut seq, mut offset) = start;
    let head = logs.last().ok_or("no log")?;
    // skip to the next file when starting exactly at its rotation point
    if let Some(f) = logs
        .iter()
        .find(|f| f.header.prev_file_seq == seq && f.header.prev_file_seq != 0)
    {
        if offset == f.header.prev_file_offset as u64 {
            seq = f.header.file_seq;
            offset = f.header.hdr_size as u64;
        }
    }
    if seq > head.header.file_seq {
        return Err(format!(
            "Requested newer log than exists: seq={seq} > {}",
            head.header.file_seq
        ));
    }
    let mut tail = match logs.iter().position(|f| f.header.file_seq == seq) {
        Some(t) => t,
        None => match logs
            .iter()
            .position(|f| f.header.file_seq >= seq && f.header.prev_file_seq == 0)
        {
            Some(t) => {
                offset = 0;
                t
            }
            None => {
                let have: Vec<String> =
                    logs.iter().map(|f| f.header.file_seq.to_string()).collect();
                return Err(format!(
                    "Missing file seq={seq} (we have seqs {})",
                    have.join(",")
                ));
            }
        },
    };
    // every file between tail and head must be there
    for w in logs[tail..].windows(2) {
        if w[1].header.file_seq != w[0].header.file_seq + 1 && w[1].header.prev_file_seq != 0 {
            return Err(format!(
                "Missing middle file seq={}",
                w[0].header.file_seq + 1
            ));
        }
    }
    let hdr_size = logs[tail].header.hdr_size as u64;
    if offset == 0 {
        offset = hdr_size;
    }
    if offset < hdr_size {
        return Err(format!(
            "Invalid min_file_offset: file_seq={seq}, min_file_offset ({offset}) < hdr_size ({hdr_size})"
        ));
    }
    let mut reset = false;
    for i in (tail..logs.len()).rev() {
        let f = &logs[i];
        if f.header.prev_file_seq == 0 && (i != tail || offset == f.header.hdr_size as u64) {
            tail = i;
            offset = f.header.hdr_size as u64;
            reset = true;
            break;
        }
    }
    if offset > logs[tail].sync_offset {
        return Err(format!(
            "Invalid offset: file_seq={}, min_file_offset ({offset}) > sync_offset ({})",
            logs[tail].header.file_seq, logs[tail].sync_offset
        ));
    }
    Ok(Plan {
        tail,
        offset,
        reset,
    })
}

/// The head log's max_tail_offset as the log code tracks it (log_file_track_sync): the
/// index's tail offset, advanced over external transactions and external tail updates.
pub(crate) fn max_tail_offset(head: &LogFile, index: Option<&IndexHeader>) -> u64 {
    use crate::format::log::RecordBody;
    let (mut max_tail, from) = match index {
        Some(h) if h.log_file_seq == head.header.file_seq => {
            (h.log_file_tail_offset as u64, h.log_file_head_offset as u64)
        }
        _ => (0, head.header.hdr_size as u64),
    };
    for r in head.records.iter().filter(|r| r.offset >= from) {
        if !r.is_external() {
            continue;
        }
        if let RecordBody::HeaderUpdate(patches) = &r.body {
            if let Some(p) = patches.first() {
                let (o, n) = (p.offset as usize, p.data.len());
                let pos = hdr_off::LOG_FILE_TAIL_OFFSET;
                if o <= pos && o + n >= pos + 4 {
                    let v = u32::from_le_bytes(
                        p.data[pos - o..pos - o + 4].try_into().unwrap_or([0; 4]),
                    ) as u64;
                    if v >= max_tail && v <= r.end() {
                        max_tail = v;
                    }
                    continue;
                }
            }
        }
        if max_tail == r.offset {
            max_tail += r.size as u64;
        }
    }
    max_tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::IndexWriter;

    fn appended(w: &IndexWriter, uids: std::ops::RangeInclusive<u32>) {
        let mut t = w.begin().external(true);
        for uid in uids {
            t.append(uid, 0);
        }
        t.commit().unwrap();
    }

    /// `P`'s head offset and what [`read_log_from_head`] counts there.
    fn counted_at_head(w: &IndexWriter) -> (u64, u64, LogIdentity) {
        let paths = w.paths();
        let index = std::fs::read(paths.index()).unwrap();
        let map = IndexFile::decode_header_of(&index, &paths.index()).unwrap();
        assert!(
            map.ext(ext::MODSEQ).is_none(),
            "a log counted over, as the map's"
        );
        let file = std::fs::File::open(paths.log()).unwrap();
        let log = read_log_from_head(&file, &paths.log(), &map, None)
            .unwrap()
            .unwrap();
        let head = map.header().log_file_head_offset as u64;
        assert_eq!(log.first_offset, head);
        use std::os::unix::fs::MetadataExt;
        let md = file.metadata().unwrap();
        let bytes = std::fs::read(paths.log()).unwrap();
        let id = LogIdentity {
            dev: md.dev(),
            ino: md.ino(),
            header: bytes[..crate::format::log::HEADER_SIZE].to_vec(),
        };
        // the counter read from the log's start, as Dovecot counts it
        let header = LogHeader::decode(&bytes, &paths.log()).unwrap();
        let hdr = header.hdr_size as usize;
        let full =
            LogFile::modseq_counter_after(&bytes[hdr..], &header, head - hdr as u64).unwrap();
        (head, full, id)
    }

    #[test]
    fn a_log_counted_once_is_counted_on_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let w = IndexWriter::open(dir.path(), "dovecot.map.index");
        w.create(7).unwrap();
        appended(&w, 1..=30);
        appended(&w, 31..=35);
        w.write_index().unwrap();
        let (head, full, id) = counted_at_head(&w);
        assert!(full > 1);
        assert_eq!(
            counted::before(&id, head),
            Some((head, full)),
            "the counter is kept for the next view of this log"
        );
        appended(&w, 36..=50);
        w.write_index().unwrap();
        let (later, full_later, same) = counted_at_head(&w);
        assert_eq!(same, id);
        assert!(later > head && full_later > full);
        // counted on from the first offset, and the same as counted from the start
        assert_eq!(counted::before(&id, later), Some((later, full_later)));
        let view = View::open_paths(w.paths()).unwrap();
        let whole = View::build(w.paths(), Sources::read(w.paths()).unwrap()).unwrap();
        assert_eq!(view.log_modseq(), whole.log_modseq());
        // another log (another header) starts from its own beginning
        let other = LogIdentity {
            header: vec![0; id.header.len()],
            ..id
        };
        assert_eq!(counted::before(&other, later), None);
    }
}
