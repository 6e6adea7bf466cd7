//! The per-mailbox index of a dbox mailbox, through mailsync-index: creation with the
//! `dbox-hdr`/`mdbox-hdr` extension (sdbox-storage.c sdbox_mailbox_create_indexes,
//! mdbox-storage.c mdbox_mailbox_create_indexes), reading the mailbox GUID back.

use std::path::Path;

use mailstore::{Error, MailboxGuid, Result};
use mailsync_index::format::ext::DboxHeader;
use mailsync_index::format::index::hdr_off;
use mailsync_index::locked_commit::commit_locked;
use mailsync_index::{IndexWriter, View};

use crate::layout::{DboxKind, INDEX_PREFIX};

/// The header extension holding the mailbox GUID.
pub fn hdr_ext_name(kind: DboxKind) -> &'static str {
    match kind {
        DboxKind::Single => "dbox-hdr",
        DboxKind::Multi => "mdbox-hdr",
    }
}

/// An index error as a storage error.
pub fn ix_err(e: mailsync_index::Error) -> Error {
    use mailsync_index::Error as E;
    match e {
        E::Io { op, path, source } => Error::io(op, path, source),
        E::LockTimeout { path } => Error::LockTimeout { path },
        E::Corrupt { ref path, .. }
        | E::LogLost { ref path, .. }
        | E::IndexIdMismatch { ref path, .. } => Error::corrupted(path.clone(), e.to_string()),
        E::NotFound { path } => Error::corrupted(path, "no index and no transaction log"),
        E::Invalid(reason) => Error::NotPossible(reason),
    }
}

/// Creates a mailbox index in `dir`: a new log setting UIDVALIDITY, then the header
/// extension with `counter` (sdbox rebuild_count 0 / mdbox map_uid_validity) and the
/// mailbox GUID, as Dovecot's first sync of a new mailbox writes them — both in the new
/// log before it appears (`IndexWriter::create_with`).
pub fn create_index(
    dir: &Path,
    kind: DboxKind,
    uid_validity: u32,
    counter: u32,
    guid: MailboxGuid,
) -> Result<()> {
    let w = IndexWriter::open(dir, INDEX_PREFIX);
    let name = hdr_ext_name(kind);
    let hdr = DboxHeader {
        counter,
        mailbox_guid: guid.0,
        flags: 0,
    };
    // both transactions in the new log before it is renamed into place: a crash never
    // leaves a mailbox index without its header extension
    w.create_with(uid_validity, |t| {
        t.ext_intro(name, DboxHeader::SIZE as u32, 0, 0);
        t.ext_hdr_update(name, 0, &hdr.encode());
    })
    .map_err(ix_err)?;
    Ok(())
}

/// SDBOX_INDEX_HEADER_MIN_SIZE / MDBOX_INDEX_HEADER_MIN_SIZE (sdbox-storage.h,
/// mdbox-storage.h): a header holding at least the u32 counter is read.
pub const HDR_MIN_SIZE: usize = 4;

/// The `dbox-hdr`/`mdbox-hdr` header of a view, when present and at least
/// [`HDR_MIN_SIZE`] bytes; the fields an older, shorter header lacks (the flags byte of a
/// 20-byte one) read as zero (sdbox_read_header / mdbox_read_header: memcpy into a zeroed
/// struct).
pub fn dbox_header(view: &View, kind: DboxKind) -> Option<DboxHeader> {
    dbox_header_of(view.extension(hdr_ext_name(kind))?)
}

/// [`dbox_header`] from an index's header alone.
pub fn dbox_header_in(head: &mailsync_index::HeaderView, kind: DboxKind) -> Option<DboxHeader> {
    dbox_header_of(head.extension(hdr_ext_name(kind))?)
}

fn dbox_header_of(e: &mailsync_index::format::index::Extension) -> Option<DboxHeader> {
    if e.data.len() < HDR_MIN_SIZE {
        return None;
    }
    let mut full = [0u8; DboxHeader::SIZE];
    let n = e.data.len().min(DboxHeader::SIZE);
    full[..n].copy_from_slice(&e.data[..n]);
    Some(DboxHeader::decode(&full))
}

/// True when the index files of `dir` exist (the log or the index).
pub fn index_exists(dir: &Path) -> bool {
    dir.join(INDEX_PREFIX).exists() || dir.join(format!("{INDEX_PREFIX}.log")).exists()
}

/// A storage error that can also come from the index crate (for
/// [`mailsync_index::locked_commit::commit_locked`] closures).
pub(crate) struct CommitError(pub Error);

impl From<mailsync_index::Error> for CommitError {
    fn from(e: mailsync_index::Error) -> CommitError {
        CommitError(ix_err(e))
    }
}

impl From<Error> for CommitError {
    fn from(e: Error) -> CommitError {
        CommitError(e)
    }
}

/// `Mailbox::update_mailbox` for a dbox mailbox index (true when it wrote anything), as index_storage_mailbox_update
/// (index-storage.c) in one EXTERNAL transaction: NEXTUID raised by a header update,
/// HIGHESTMODSEQ by a modseq update of uid 0 (enabling the `modseq` extension first, as
/// mail_index_modseq_enable). A UIDVALIDITY change needs Dovecot's index reset, which
/// mailsync doesn't write; it is done only for an empty mailbox, by creating its index anew
/// with the same GUID (its UIDs restart at 1), and refused otherwise.
pub(crate) fn update_index(
    dir: &Path,
    kind: DboxKind,
    update: &mailstore::MailboxUpdate,
) -> Result<bool> {
    // an empty update (the sync engine's capability probe) touches nothing
    if *update == mailstore::MailboxUpdate::default() {
        return Ok(false);
    }
    let w = IndexWriter::open(dir, INDEX_PREFIX);
    let view = w.view().map_err(ix_err)?;
    if let Some(uid_validity) = update.uid_validity {
        if uid_validity == 0 {
            return Err(Error::Params("UIDVALIDITY can't be 0".into()));
        }
        if uid_validity != view.uid_validity() {
            // an empty mailbox gets a new index (its UIDs restart at 1): no record of the
            // old one points to a message any more (mdbox refcounts dropped at expunge)
            if view.messages_count() > 0 {
                return Err(Error::NotPossible(
                    "UIDVALIDITY can be changed only in an empty mailbox".into(),
                ));
            }
            let hdr = dbox_header(&view, kind).unwrap_or_default();
            // per-message modseqs, once enabled (dsync enables them before it sets the
            // primary's UIDVALIDITY on a mailbox it created), stay enabled in the new index
            let had_modseqs = view.modseq_header().is_some();
            let paths = w.paths();
            for p in [paths.log(), paths.log2(), paths.index(), paths.cache()] {
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("unlink", &p, e)),
                }
            }
            create_index(
                dir,
                kind,
                uid_validity,
                hdr.counter,
                MailboxGuid(hdr.mailbox_guid),
            )?;
            if had_modseqs {
                mailsync_index::locked_commit::enable_modseqs(&w).map_err(ix_err)?;
            }
        }
    }
    let min_next = update.min_uid_next.unwrap_or(0);
    let min_modseq = update.min_highest_modseq.unwrap_or(0);
    commit_locked(
        &w,
        true,
        |view, t| -> std::result::Result<(), CommitError> {
            if view.next_uid() < min_next {
                t.header_update(hdr_off::NEXT_UID as u16, &min_next.to_le_bytes());
            }
            Ok(())
        },
    )
    .map_err(|CommitError(e)| e)?;
    // as index_storage_mailbox_update → mail_index_modseq_enable +
    // mail_index_update_highest_modseq (shared with the Maildir backend)
    if min_modseq > 0 {
        mailsync_index::locked_commit::raise_highest_modseq(&w, min_modseq).map_err(ix_err)?;
    }
    Ok(true)
}

/// `Mailbox::enable_modseqs` for a dbox mailbox index (mail_index_modseq_enable). Returns
/// whether it wrote.
pub(crate) fn enable_modseqs(dir: &Path) -> Result<bool> {
    let w = IndexWriter::open(dir, INDEX_PREFIX);
    mailsync_index::locked_commit::enable_modseqs(&w).map_err(ix_err)
}

/// `Mailbox::set_mailbox_guid` for a dbox mailbox index: the `dbox-hdr`/`mdbox-hdr`
/// header with the new GUID, in one EXTERNAL transaction (sdbox_update_header /
/// mdbox_update_header of sdbox-storage.c / mdbox-storage.c).
pub(crate) fn set_mailbox_guid(dir: &Path, kind: DboxKind, guid: MailboxGuid) -> Result<()> {
    if guid.is_zero() {
        return Err(Error::Params("mailbox GUID can't be all zero".into()));
    }
    let w = IndexWriter::open(dir, INDEX_PREFIX);
    commit_locked(
        &w,
        true,
        |view, t| -> std::result::Result<(), CommitError> {
            let mut hdr = dbox_header(view, kind).ok_or_else(|| {
                Error::corrupted(dir.join(INDEX_PREFIX), "dbox: missing mailbox header")
            })?;
            if hdr.mailbox_guid != guid.0 {
                hdr.mailbox_guid = guid.0;
                t.ext_hdr_update(hdr_ext_name(kind), 0, &hdr.encode());
            }
            Ok(())
        },
    )
    .map_err(|CommitError(e)| e)?;
    Ok(())
}

/// The end of a Dovecot index sync (mail_index_sync_commit) after one of our commits left
/// the log at `log_offset`: once the log has reached 32 KiB, move the tail, rotate a due
/// log and rewrite `dovecot.index` when the log outgrew it
/// (`IndexWriter::sync_housekeeping`; nothing while a client request is pending). Without
/// this a store only mailsync writes would keep one ever-growing log, replayed at every
/// open. The commit itself is done: a failure here is only a warning.
pub(crate) fn housekeeping(writer: &IndexWriter, log_offset: u64) {
    if log_offset < mailsync_index::writer::ROTATE_MIN_SIZE {
        return;
    }
    if let Err(e) = writer.sync_housekeeping() {
        crate::warn(&format!(
            "{}: index housekeeping failed: {e}",
            writer.paths().log().display()
        ));
    }
}

/// The end of a handle that changed an index: `dovecot.index` is written when the next run
/// could not open the mailbox from that file's header and a short replay of the log past it
/// (`IndexWriter::write_index_if_wanted`, `mailsync_index::HeaderView`) but would read
/// every record. Only a warning on failure: the log holds every change.
pub(crate) fn close_index(writer: &IndexWriter) {
    if let Err(e) = writer.write_index_if_wanted() {
        crate::warn(&format!(
            "{}: writing the index at close failed: {e}",
            writer.paths().index().display()
        ));
    }
}

/// What identifies the state of one index file on disk: None when it is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The stamps of an index's `P`, `P.log` and `P.log.2`, taken *before* a view is read from
/// them: while all three are unchanged, a view built after the stamp is still the current
/// state. Dovecot's rules make this sound: a log is only appended to (its size grows) or
/// replaced by a new file at rotation (another inode: mail-transaction-log.c
/// mail_transaction_log_refresh compares the inode the same way), `P` is only rewritten
/// through a temp file and rename (mail-index-write.c mail_index_recreate), and the one
/// write in place, indexid 0 marking a corrupted log (mail-transaction-log-file.c
/// mail_transaction_log_mark_corrupted), changes mtime and ctime, which the stamp holds
/// too. A change made after the stamp changes it, so the next comparison reads again —
/// the stamp is never newer than the view it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexStamp([Option<FileStamp>; 3]);

impl IndexStamp {
    /// Stats the three files of `paths` (a missing file is part of the state).
    pub(crate) fn of(paths: &mailsync_index::IndexPaths) -> Result<IndexStamp> {
        use std::os::unix::fs::MetadataExt;
        let stat = |path: std::path::PathBuf| -> Result<Option<FileStamp>> {
            match std::fs::metadata(&path) {
                Ok(m) => Ok(Some(FileStamp {
                    dev: m.dev(),
                    ino: m.ino(),
                    size: m.size(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    ctime: (m.ctime(), m.ctime_nsec()),
                })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io("stat", &path, e)),
            }
        };
        Ok(IndexStamp([
            stat(paths.index())?,
            stat(paths.log())?,
            stat(paths.log2())?,
        ]))
    }
}
