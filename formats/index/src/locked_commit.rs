//! Building a transaction *while* holding the log lock: for backends that must choose
//! what to write from the locked state, as Dovecot's mailbox sync does (sdbox assigns the
//! UIDs of saved messages and renames their files to `u.<uid>` under the index lock,
//! src/lib-storage/index/dbox-single/sdbox-save.c sdbox_transaction_save_commit_pre).
//!
//! Added by the dbox backend, purely additively: [`commit_locked`] uses the same lock
//! ([`LogLock`]), the same view building and the same encoder as
//! [`Transaction::commit`](crate::Transaction::commit). It does not create a missing log
//! and does not rotate (the next ordinary commit, or Dovecot, rotates).

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Result};
use crate::format::index::hdr_off;
use crate::format::log::{LogFile, LogStop};
use crate::lock::{LogLock, LOG_LOCK_TIMEOUT};
use crate::view::View;
use crate::writer::{CommitInfo, IndexWriter, Transaction};

/// Locks `writer`'s head log, builds the view through the locked descriptor, calls
/// `build(view, transaction)` and appends what it put into the transaction (nothing is
/// written when `build` fails or leaves it empty). `external` marks the transaction
/// EXTERNAL. Everything `build` does happens under the lock.
pub fn commit_locked<'w, T, E>(
    writer: &'w IndexWriter,
    external: bool,
    build: impl FnOnce(&View, &mut Transaction<'w>) -> std::result::Result<T, E>,
) -> std::result::Result<(T, CommitInfo), E>
where
    E: From<Error>,
{
    commit_locked_inner(writer, external, false, LOG_LOCK_TIMEOUT, build)
}

/// Like [`commit_locked`], waiting at most `timeout` for the lock
/// ([`Error::LockTimeout`] then, with nothing done). For a caller that already holds
/// another index's lock and must not wait long for this one: a process taking the two in
/// the other order would otherwise deadlock with it until both time out.
pub fn commit_locked_timeout<'w, T, E>(
    writer: &'w IndexWriter,
    timeout: std::time::Duration,
    external: bool,
    build: impl FnOnce(&View, &mut Transaction<'w>) -> std::result::Result<T, E>,
) -> std::result::Result<(T, CommitInfo), E>
where
    E: From<Error>,
{
    commit_locked_inner(writer, external, false, timeout, build)
}

/// Like [`commit_locked`], then (in the same lock) an EXTERNAL header update moving
/// `log_file_tail_offset` to the end of the log, as mail_index_sync_commit leaves a log
/// whose every change the backend has applied. The mdbox map needs this: Dovecot treats
/// a map log whose tail lags its head as a crash and rebuilds (mdbox-map.c
/// mdbox_map_sync_handle, "Inconsistency in map index"). Written even when `build`
/// adds nothing, if the tail lags.
pub fn commit_locked_synced<'w, T, E>(
    writer: &'w IndexWriter,
    external: bool,
    build: impl FnOnce(&View, &mut Transaction<'w>) -> std::result::Result<T, E>,
) -> std::result::Result<(T, CommitInfo), E>
where
    E: From<Error>,
{
    commit_locked_inner(writer, external, true, LOG_LOCK_TIMEOUT, build)
}

/// Raises HIGHESTMODSEQ to at least `min`, as index_storage_mailbox_update
/// (src/lib-storage/index/index-storage.c) does for `min_highest_modseq`:
/// mail_index_modseq_enable (the `modseq` extension intro with its header, highest 1, when
/// the index has none yet) plus mail_index_update_highest_modseq (a modseq update of uid 0)
/// in one non-EXTERNAL transaction under the log lock. Nothing is written when the index is
/// already there. Returns whether it wrote. [dump: `doveadm mailbox update
/// --min-highest-modseq`; without the extension header Dovecot 2.3.19.1 crashes on the next
/// mdbox save.] Added for the Maildir and dbox backends (`Mailbox::update_mailbox`).
pub fn raise_highest_modseq(writer: &IndexWriter, min: u64) -> Result<bool> {
    let (wrote, _) = commit_locked(writer, false, |view, t| -> Result<bool> {
        if view.highest_modseq() >= min {
            return Ok(false);
        }
        modseq_enable(view, t);
        t.modseq_update(0, min);
        Ok(true)
    })?;
    Ok(wrote)
}

/// mail_index_modseq_enable (src/lib-index/mail-index-modseq.c), as dsync's
/// mailbox_enable(CONDSTORE) does for every mailbox it syncs: the `modseq` extension intro
/// with its header (highest 1, from the log's start) in one non-EXTERNAL transaction under
/// the log lock, when the index has none. From then on every message has its own MODSEQ
/// (the replay gives existing messages theirs from the log history); without it each
/// reports HIGHESTMODSEQ. Returns whether it wrote.
pub fn enable_modseqs(writer: &IndexWriter) -> Result<bool> {
    let (wrote, _) = commit_locked(writer, false, |view, t| -> Result<bool> {
        Ok(modseq_enable(view, t))
    })?;
    Ok(wrote)
}

/// Adds the `modseq` extension intro and header to `t` when `view` has no such extension.
fn modseq_enable(view: &View, t: &mut Transaction<'_>) -> bool {
    use crate::format::ext::{ModseqHeader, MODSEQ};
    if view.extension(MODSEQ).is_some() {
        return false;
    }
    t.ext_intro(MODSEQ, ModseqHeader::SIZE as u32, 8, 8);
    let hdr = ModseqHeader {
        highest_modseq: 1,
        log_seq: 0,
        log_offset: 0,
    };
    t.ext_hdr_update(MODSEQ, 0, &hdr.encode());
    true
}

fn commit_locked_inner<'w, T, E>(
    writer: &'w IndexWriter,
    external: bool,
    sync_tail: bool,
    timeout: std::time::Duration,
    build: impl FnOnce(&View, &mut Transaction<'w>) -> std::result::Result<T, E>,
) -> std::result::Result<(T, CommitInfo), E>
where
    E: From<Error>,
{
    let log_path = writer.paths().log();
    let lock = loop {
        let lock = LogLock::acquire(&log_path, timeout)?.ok_or_else(|| Error::NotFound {
            path: log_path.clone(),
        })?;
        // rotated while we waited: lock the new head log
        let same = std::fs::metadata(&log_path)
            .ok()
            .zip(lock.file.metadata().ok())
            .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
        if same {
            break lock;
        }
    };
    let view = locked_view(writer, &lock)?;
    let head = writer.head_log(&view)?;
    if let LogStop::Corrupt { offset, reason } = &head.stop {
        return Err(Error::corrupt(&log_path, *offset, reason.clone()).into());
    }
    let mut t = writer.begin().external(external);
    let value = build(&view, &mut t)?;
    let (seq, sync_offset) = (head.header.file_seq, head.sync_offset);
    let tail_lags = view.header().log_file_tail_offset as u64 != sync_offset;
    if t.is_empty() && !(sync_tail && tail_lags) {
        return Ok((
            value,
            CommitInfo {
                log_seq: seq,
                log_offset: sync_offset,
                highest_modseq: view.highest_modseq(),
                rotated: false,
            },
        ));
    }
    if head.file_size > sync_offset {
        // an unfinished or torn tail: drop it so readers don't stop there
        lock.file
            .set_len(sync_offset)
            .map_err(|e| Error::io("ftruncate", &log_path, e))?;
    }
    let version = head.header.version();
    let (mut bytes, new_modseq) = if t.is_empty() {
        (Vec::new(), head.end_modseq)
    } else {
        t.encode(&view, head.end_modseq, version)?
    };
    if sync_tail {
        // one HEADER_UPDATE record of 4 bytes: its size doesn't depend on the value
        let mut tail = writer.begin().external(true);
        tail.header_update(hdr_off::LOG_FILE_TAIL_OFFSET as u16, &[0; 4]);
        let (probe, _) = tail.encode(&view, new_modseq, version)?;
        let end = sync_offset + bytes.len() as u64 + probe.len() as u64;
        let end = u32::try_from(end).map_err(|_| Error::Invalid("log too large".into()))?;
        let mut tail = writer.begin().external(true);
        tail.header_update(hdr_off::LOG_FILE_TAIL_OFFSET as u16, &end.to_le_bytes());
        bytes.extend_from_slice(&tail.encode(&view, new_modseq, version)?.0);
    }
    (&lock.file)
        .write_all(&bytes)
        .map_err(|e| Error::io("write", &log_path, e))?;
    lock.file
        .sync_data()
        .map_err(|e| Error::io("fdatasync", &log_path, e))?;
    let info = CommitInfo {
        log_seq: seq,
        log_offset: sync_offset + bytes.len() as u64,
        highest_modseq: new_modseq.max(view.highest_modseq()),
        rotated: false,
    };
    drop(lock);
    Ok((value, info))
}

/// The view through the locked descriptor ([`LogLock::read_all`]).
fn locked_view(writer: &IndexWriter, lock: &LogLock) -> Result<View> {
    let view = View::for_writer(writer.paths(), lock)?;
    if view.logs().is_empty() {
        // the log is unusable for this index (e.g. another indexid): say why. Read again
        // rather than kept: a second copy of the log would be held through every build.
        LogFile::decode(&lock.read_all()?, &lock.path)?;
        return Err(Error::Invalid(format!(
            "{}: log not usable",
            lock.path.display()
        )));
    }
    Ok(view)
}
