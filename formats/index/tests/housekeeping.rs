//! `IndexWriter::sync_housekeeping`: what a backend does at the end of its sync — move the
//! tail, rotate when due, rewrite `P` when the log outgrew it — and never while a client's
//! request still waits for the backend.

mod common;

use common::dovecot::{doveadm_dump, ok};
use mailsync_index::format::index::rec_flag;
use mailsync_index::locked_commit::commit_locked;
use mailsync_index::{Housekeeping, IndexWriter, View};

fn messages(view: &View) -> Vec<(u32, u8, u64)> {
    view.messages()
        .map(|m| (m.uid(), m.flags(), m.modseq()))
        .collect()
}

/// Appends `n` messages as one EXTERNAL transaction the way a backend does it (through the
/// locked commit, which neither moves the tail nor rotates).
fn backend_appends(w: &IndexWriter, first: u32, n: u32) {
    commit_locked(w, true, |_, t| -> Result<(), mailsync_index::Error> {
        for uid in first..first + n {
            t.append(uid, rec_flag::SEEN);
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_big_log_is_rotated_once_everything_reached_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let w = IndexWriter::open(dir.path(), "dovecot.index");
    w.create(777).unwrap();
    // ~1.2 MiB of appends: over mail_index_log_rotate_max_size.
    backend_appends(&w, 1, 150_000);
    let before = View::open(dir.path(), "dovecot.index").unwrap();
    let done = w.sync_housekeeping().unwrap();
    assert_eq!(
        done,
        Housekeeping {
            tail_moved: true,
            rotated: true,
            index_written: false,
            index_considered: true
        }
    );
    assert!(dir.path().join("dovecot.index.log.2").exists());
    let after = View::open(dir.path(), "dovecot.index").unwrap();
    assert_eq!(
        after.log_position().0,
        2,
        "the index points into the new log"
    );
    assert_eq!(messages(&after), messages(&before));
    assert_eq!(after.highest_modseq(), before.highest_modseq());
    assert_eq!(after.uid_validity(), 777);
    // Dovecot reads the rotated log and the snapshot without complaint.
    for (path, kind) in [
        (dir.path().join("dovecot.index"), None),
        (dir.path().join("dovecot.index.log"), Some("log")),
        (dir.path().join("dovecot.index.log.2"), Some("log")),
    ] {
        let out = ok("doveadm dump", doveadm_dump(&path, kind));
        assert!(!out.contains("rror"), "{}: {out}", path.display());
    }
    // Nothing left to do right after.
    assert_eq!(
        w.sync_housekeeping().unwrap(),
        Housekeeping {
            index_considered: true,
            ..Housekeeping::default()
        }
    );
}

#[test]
fn the_index_snapshot_is_rewritten_when_the_log_outgrew_it() {
    let dir = tempfile::tempdir().unwrap();
    let w = IndexWriter::open(dir.path(), "dovecot.index");
    w.create(778).unwrap();
    // ~200 KiB: past mail_index_rewrite_max_log_bytes, below the rotation size.
    backend_appends(&w, 1, 25_000);
    let done = w.sync_housekeeping().unwrap();
    assert!(
        done.tail_moved && done.index_written && !done.rotated,
        "{done:?}"
    );
    let data = std::fs::read(dir.path().join("dovecot.index")).unwrap();
    let index =
        mailsync_index::format::index::IndexFile::decode(&data, &dir.path().join("dovecot.index"))
            .unwrap();
    let log_len = std::fs::metadata(dir.path().join("dovecot.index.log"))
        .unwrap()
        .len();
    assert_eq!(index.header().log_file_head_offset as u64, log_len);
    assert_eq!(index.header().log_file_tail_offset as u64, log_len);
    assert_eq!(index.header().messages_count, 25_000);
}

/// Below mail_index_rewrite_max_log_bytes `P` stays behind the log while the next reader's
/// replay of it is short (`HeaderView`, at most `INDEX_REWRITE_MIN_REPLAYED_RECORDS`
/// records), however far past 8 KiB the log has grown; once the replay would be longer,
/// the housekeeping writes it.
#[test]
fn the_index_snapshot_waits_while_the_replay_past_it_is_short() {
    use mailsync_index::writer::{INDEX_REWRITE_MAX_LOG_BYTES, INDEX_REWRITE_MIN_REPLAYED_RECORDS};
    let dir = tempfile::tempdir().unwrap();
    let paths = mailsync_index::IndexPaths::new(dir.path(), "dovecot.index");
    let w = IndexWriter::open(dir.path(), "dovecot.index");
    w.create(780).unwrap();
    backend_appends(&w, 1, 5_000);
    w.write_index().unwrap();
    let p_at = |dir: &std::path::Path| {
        let data = std::fs::read(dir.join("dovecot.index")).unwrap();
        mailsync_index::format::index::IndexHeader::decode(&data).log_file_head_offset as u64
    };
    let written = p_at(dir.path());
    // small commits: the log grows well past 8 KiB, the replay names few records
    backend_appends(&w, 5_001, 150);
    for i in 0..600u32 {
        let uid = 1 + (i % 10) * 100;
        let (add, remove) = if i % 20 < 10 {
            (rec_flag::FLAGGED, 0)
        } else {
            (0, rec_flag::FLAGGED)
        };
        let mut t = w.begin().external(true);
        t.flags(uid, uid, add, remove);
        t.commit().unwrap();
    }
    let done = w.sync_housekeeping().unwrap();
    assert!(done.index_considered && !done.index_written, "{done:?}");
    let log_len = std::fs::metadata(paths.log()).unwrap().len();
    let grown = log_len - written;
    assert!(
        grown > 8 * 1024 && grown < INDEX_REWRITE_MAX_LOG_BYTES,
        "{grown}"
    );
    assert_eq!(p_at(dir.path()), written, "P left behind");
    let head = mailsync_index::HeaderView::open(&paths).unwrap().unwrap();
    assert!(head.replayed_records() <= INDEX_REWRITE_MIN_REPLAYED_RECORDS);
    assert_eq!(head.messages_count(), 5_150);
    // a change naming more records than that: written
    let mut t = w.begin().external(true);
    for u in (1..=INDEX_REWRITE_MIN_REPLAYED_RECORDS as u32 * 2).step_by(2) {
        t.flags(u, u, rec_flag::ANSWERED, 0);
    }
    t.commit().unwrap();
    let done = w.sync_housekeeping().unwrap();
    assert!(done.index_written, "{done:?}");
    assert_eq!(
        p_at(dir.path()),
        std::fs::metadata(paths.log()).unwrap().len()
    );
}

#[test]
fn a_pending_client_request_blocks_housekeeping() {
    let dir = tempfile::tempdir().unwrap();
    let w = IndexWriter::open(dir.path(), "dovecot.index");
    w.create(779).unwrap();
    backend_appends(&w, 1, 150_000);
    // A client asks for a flag change; the backend hasn't carried it out yet.
    let mut t = w.begin();
    t.flags(1, 1, rec_flag::FLAGGED, 0);
    t.commit().unwrap();
    let log_len = std::fs::metadata(dir.path().join("dovecot.index.log"))
        .unwrap()
        .len();
    assert_eq!(w.sync_housekeeping().unwrap(), Housekeeping::default());
    assert!(!dir.path().join("dovecot.index.log.2").exists());
    assert_eq!(
        std::fs::metadata(dir.path().join("dovecot.index.log"))
            .unwrap()
            .len(),
        log_len,
        "nothing written"
    );
}

/// `P` is rewritten once the log is more than 8 KiB (rewrite_min_log_bytes) past it, and
/// not before: a log just a few records ahead costs a reader little to replay.
#[test]
fn the_index_snapshot_is_rewritten_past_rewrite_min_log_bytes_only() {
    let dir = tempfile::tempdir().unwrap();
    let w = IndexWriter::open(dir.path(), "dovecot.index");
    w.create(780).unwrap();
    // well past 32 KiB (housekeeping's own threshold) of log, then P rewritten
    backend_appends(&w, 1, 5_000);
    assert!(w.sync_housekeeping().unwrap().index_written);
    let log_len = || {
        std::fs::metadata(dir.path().join("dovecot.index.log"))
            .unwrap()
            .len()
    };
    let start = log_len();
    // a few records more: below 8 KiB past P
    backend_appends(&w, 5_001, 20);
    assert!(log_len() - start < 8 * 1024);
    assert!(!w.sync_housekeeping().unwrap().index_written);
    // more than 8 KiB past P
    backend_appends(&w, 5_021, 1_500);
    assert!(log_len() - start > 8 * 1024);
    assert!(w.sync_housekeeping().unwrap().index_written);
}
