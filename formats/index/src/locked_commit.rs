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
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::error::{Error, Result};
use crate::format::log::{LogFile, LogStop};
use crate::lock::{LogLock, LOG_LOCK_TIMEOUT};
use crate::view::{read_optional, Sources, View};
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
    let log_path = writer.paths().log();
    let lock = loop {
        let lock = LogLock::acquire(&log_path, LOG_LOCK_TIMEOUT)?.ok_or_else(|| {
            Error::NotFound {
                path: log_path.clone(),
            }
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
    let head = view
        .logs()
        .last()
        .ok_or_else(|| Error::Invalid(format!("{}: log not usable", log_path.display())))?;
    if let LogStop::Corrupt { offset, reason } = &head.stop {
        return Err(Error::corrupt(&log_path, *offset, reason.clone()).into());
    }
    let mut t = writer.begin().external(external);
    let value = build(&view, &mut t)?;
    let (seq, sync_offset) = (head.header.file_seq, head.sync_offset);
    if t.is_empty() {
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
    let (bytes, new_modseq) = t.encode(&view, head.end_modseq, head.header.version())?;
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

/// The view through the locked descriptor (the log read with it, never reopened: closing
/// another descriptor of the file would drop our fcntl lock).
fn locked_view(writer: &IndexWriter, lock: &LogLock) -> Result<View> {
    let len = lock
        .file
        .metadata()
        .map_err(|e| Error::io("fstat", &lock.path, e))?
        .len();
    let mut data = vec![0u8; len as usize];
    lock.file
        .read_exact_at(&mut data, 0)
        .map_err(|e| Error::io("pread", &lock.path, e))?;
    let paths = writer.paths();
    let src = Sources {
        index: read_optional(&paths.index())?,
        log: Some(data.clone()),
        log2: read_optional(&paths.log2())?,
    };
    let view = View::build(paths, src)?;
    if view.logs().is_empty() {
        // the log is unusable for this index (e.g. another indexid): say why
        LogFile::decode(&data, &lock.path)?;
        return Err(Error::Invalid(format!(
            "{}: log not usable",
            lock.path.display()
        )));
    }
    Ok(view)
}
