//! A transaction with nothing in it commits nothing: no lock, no index read, and the index
//! files stay as they are — as for a backup's source, which commits its empty side of the
//! plan. Before, an empty mdbox or sdbox commit decoded the whole index log for housekeeping
//! and left the handle marked as a writer, which rewrote `dovecot.index` at close.

use mailstore::{Flags, Guid, Location, NewMail, Store, StoreOptions};
use mailsync_dbox::DboxStore;
use mailsync_index::format::index::rec_flag;
use mailsync_index::IndexWriter;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// (inode, size, mtime ns) of each index file present.
fn index_files(dir: &Path) -> Vec<(PathBuf, u64, u64, i64)> {
    let mut out = Vec::new();
    for name in ["dovecot.index", "dovecot.index.log", "dovecot.index.log.2"] {
        if let Ok(m) = std::fs::metadata(dir.join(name)) {
            out.push((dir.join(name), m.ino(), m.size(), m.mtime_nsec()));
        }
    }
    out
}

fn empty_commit_leaves_the_index_alone(driver: &str, mail_dir: &str) {
    let home = tempfile::tempdir().unwrap();
    let loc = Location::parse(&format!("{driver}:~/box"), Some(home.path())).unwrap();
    let s = DboxStore::open(&loc, &StoreOptions::default()).unwrap();
    let mut mb = s.open_mailbox("INBOX").unwrap();
    let mut t = mb.begin().unwrap();
    for i in 0..5u32 {
        let mail = NewMail {
            guid: Some(Guid::from_bytes(format!("guid-{i}").as_bytes())),
            flags: Flags::default(),
            ..Default::default()
        };
        t.save(mail, &mut format!("Subject: {i}\n\nbody\n").as_bytes())
            .unwrap();
    }
    t.commit().unwrap();
    drop(mb);
    // a change logged by someone else, not yet in dovecot.index (Dovecot leaves up to
    // 8 KiB of log past it)
    let dir = home.path().join("box").join(mail_dir);
    let w = IndexWriter::open(&dir, "dovecot.index");
    let mut t = w.begin().external(true);
    t.flags(2, 2, rec_flag::SEEN, 0);
    t.commit().unwrap();
    let before = index_files(&dir);

    let mut mb = s.open_mailbox("INBOX").unwrap();
    let mut t = mb.begin().unwrap();
    t.mark_as_sync();
    let result = t.commit().unwrap();
    assert!(result.saved.is_empty());
    assert_eq!(result.uid_validity, mb.counters().unwrap().uid_validity);
    drop(mb);
    drop(s);
    assert_eq!(
        index_files(&dir),
        before,
        "{driver}: the index files changed"
    );
    let v = mailsync_index::View::open(&dir, "dovecot.index").unwrap();
    assert!(
        (v.header_on_disk().unwrap().log_file_head_offset as u64) < v.log_position().1,
        "{driver}: dovecot.index is still behind its log, as it was"
    );
}

#[test]
fn an_empty_mdbox_commit_leaves_the_index_alone() {
    empty_commit_leaves_the_index_alone("mdbox", "mailboxes/INBOX/dbox-Mails");
}

#[test]
fn an_empty_sdbox_commit_leaves_the_index_alone() {
    empty_commit_leaves_the_index_alone("sdbox", "mailboxes/INBOX/dbox-Mails");
}
