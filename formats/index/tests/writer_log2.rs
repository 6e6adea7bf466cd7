//! A writer's view reads `P.log.2` only when the replay from `P` may need it: an index
//! written in the head log's time needs only `P` and the head log, and a damaged or older
//! `P` still gets every log there is.

use std::path::Path;

use mailsync_index::{IndexPaths, IndexWriter};

fn uids(w: &IndexWriter) -> Vec<u32> {
    w.view().unwrap().messages().map(|m| m.uid()).collect()
}

/// An index with messages 1-3 in `P.log.2`, then `P` written by the rotation, then
/// message 4 in the head log.
fn rotated(dir: &Path) -> IndexWriter {
    let w = IndexWriter::open(dir, "dovecot.index");
    w.create(4242).unwrap();
    let mut t = w.begin().external(true);
    for uid in 1..=3 {
        t.append(uid, 0);
    }
    t.commit().unwrap();
    w.rotate().unwrap();
    let mut t = w.begin().external(true);
    t.append(4, 0);
    t.commit().unwrap();
    w
}

#[test]
fn a_writer_whose_index_is_current_leaves_the_older_log_unread() {
    let dir = tempfile::tempdir().unwrap();
    let w = rotated(dir.path());
    let paths = IndexPaths::new(dir.path(), "dovecot.index");
    // any read of P.log.2 now fails (EISDIR)
    std::fs::remove_file(paths.log2()).unwrap();
    std::fs::create_dir(paths.log2()).unwrap();
    let mut t = w.begin().external(true);
    t.append(5, 0);
    t.commit().unwrap();
    w.write_index().unwrap();
    w.sync_housekeeping().unwrap();
    std::fs::remove_dir(paths.log2()).unwrap();
    assert_eq!(uids(&w), [1, 2, 3, 4, 5]);
}

#[test]
fn an_index_older_than_the_head_log_is_replayed_from_the_older_log() {
    let dir = tempfile::tempdir().unwrap();
    let paths = IndexPaths::new(dir.path(), "dovecot.index");
    let w = IndexWriter::open(dir.path(), "dovecot.index");
    w.create(4242).unwrap();
    let mut t = w.begin().external(true);
    t.append(1, 0);
    t.commit().unwrap();
    w.write_index().unwrap();
    let old_index = std::fs::read(paths.index()).unwrap();
    let mut t = w.begin().external(true);
    t.append(2, 0);
    t.commit().unwrap();
    w.rotate().unwrap();
    // P as it was before message 2: its replay starts in P.log.2
    std::fs::write(paths.index(), &old_index).unwrap();
    let mut t = w.begin().external(true);
    t.append(3, 0);
    t.commit().unwrap();
    w.write_index().unwrap();
    assert_eq!(uids(&w), [1, 2, 3]);
}

#[test]
fn a_damaged_index_is_rebuilt_from_every_log_before_a_writer_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let w = rotated(dir.path());
    let paths = IndexPaths::new(dir.path(), "dovecot.index");
    // P's header still names the head log, but P can't be decoded (major version 99)
    let mut p = std::fs::read(paths.index()).unwrap();
    p[0] = 99;
    std::fs::write(paths.index(), &p).unwrap();
    // the writer's view is the rebuild from P.log.2 and P.log, and it writes that as P
    w.write_index().unwrap();
    assert_eq!(uids(&w), [1, 2, 3, 4]);
    assert!(w.view().unwrap().recoveries().is_empty());
}

#[test]
fn per_message_modseqs_survive_a_rotation_and_an_index_write() {
    let dir = tempfile::tempdir().unwrap();
    let w = IndexWriter::open(dir.path(), "dovecot.index");
    w.create(4242).unwrap();
    mailsync_index::locked_commit::enable_modseqs(&w).unwrap();
    let mut t = w.begin().external(true);
    for uid in 1..=4 {
        t.append(uid, 0);
    }
    t.commit().unwrap();
    let mut t = w.begin();
    t.flags(2, 2, mailsync_index::format::index::rec_flag::SEEN, 0);
    t.commit().unwrap();
    let mut t = w.begin();
    t.flags(4, 4, mailsync_index::format::index::rec_flag::FLAGGED, 0);
    t.commit().unwrap();
    let modseqs = |w: &IndexWriter| -> Vec<(u32, u64)> {
        let v = w.view().unwrap();
        v.messages().map(|m| (m.uid(), m.modseq())).collect()
    };
    let before = modseqs(&w);
    assert_ne!(before[1].1, before[3].1, "distinct modseqs to keep");
    // P written by the rotation, its modseq header still from the log before
    w.rotate().unwrap();
    w.write_index().unwrap();
    assert_eq!(modseqs(&w), before);
    let mut t = w.begin().external(true);
    t.append(5, 0);
    t.commit().unwrap();
    w.write_index().unwrap();
    assert_eq!(modseqs(&w)[..4], before[..]);
}
