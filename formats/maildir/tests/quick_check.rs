//! The quick check (maildir-sync.c maildir_sync_quick_check): a mailbox whose directories,
//! uidlist, keywords and index files look exactly as before the last scan is not scanned
//! again; any change to them — or directories modified too recently to trust — is.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::open_store;
use mailstore::{Flags, NewMail, Store};

fn backdate(path: &Path, secs: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs);
    let f = fs::File::open(path).unwrap();
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

fn setup() -> (
    tempfile::TempDir,
    mailsync_maildir::MaildirStore,
    std::path::PathBuf,
) {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    store.create_mailbox("Box", None).unwrap();
    let mut mb = store.open_mailbox("Box").unwrap();
    let mut tx = mb.begin().unwrap();
    for i in 0..3 {
        tx.save(
            NewMail {
                flags: Flags::SEEN,
                ..Default::default()
            },
            &mut format!("Subject: {i}\n\nbody {i}\n").as_bytes(),
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let dir = home.path().join("Maildir/.Box");
    for sub in ["new", "cur"] {
        backdate(&dir.join(sub), 60);
    }
    (home, store, dir)
}

fn cur_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn an_unchanged_mailbox_is_not_scanned_again() {
    let (_home, store, dir) = setup();
    let mut mb = store.open_mailbox("Box").unwrap();
    mb.sync().unwrap(); // settled directories: this scan is trusted
    assert_eq!(mb.counters().unwrap().messages, 3);
    // Remove a file behind the stamp's back: restore cur/'s mtime exactly.
    let cur = dir.join("cur");
    let before = fs::metadata(&cur).unwrap().modified().unwrap();
    fs::remove_file(&cur_files(&dir)[0]).unwrap();
    fs::File::open(&cur)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(before))
        .unwrap();
    mb.sync().unwrap();
    assert_eq!(
        mb.counters().unwrap().messages,
        3,
        "no rescan: the quick check trusted the unchanged directories"
    );
    // A fresh handle has no stamp and sees the truth.
    let mut fresh = store.open_mailbox("Box").unwrap();
    assert_eq!(fresh.counters().unwrap().messages, 2);
}

#[test]
fn any_change_is_seen() {
    let (_home, store, dir) = setup();
    let mut mb = store.open_mailbox("Box").unwrap();
    mb.sync().unwrap();
    // a flag change by someone else: rename in cur/
    let f = cur_files(&dir)[0].clone();
    let renamed = f.to_string_lossy().replace(":2,S", ":2,FS");
    fs::rename(&f, &renamed).unwrap();
    mb.sync().unwrap();
    let flagged = mb
        .mails()
        .unwrap()
        .iter()
        .filter(|m| m.flags.contains(Flags::FLAGGED))
        .count();
    assert_eq!(flagged, 1);
    // a delivery into new/
    fs::write(dir.join("new/1700000000.M1P1.host"), "Subject: new\n\nx\n").unwrap();
    mb.sync().unwrap();
    assert_eq!(mb.counters().unwrap().messages, 4);
}

#[test]
fn recently_modified_directories_are_scanned_every_time() {
    let (_home, store, dir) = setup();
    let cur = dir.join("cur");
    let mut mb = store.open_mailbox("Box").unwrap();
    // cur/ modified just now: not settled, so the next sync scans even if nothing
    // visible changed — shown by a removal that keeps cur/'s mtime
    fs::File::open(&cur)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(SystemTime::now()))
        .unwrap();
    mb.sync().unwrap();
    let before = fs::metadata(&cur).unwrap().modified().unwrap();
    fs::remove_file(&cur_files(&dir)[0]).unwrap();
    fs::File::open(&cur)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(before))
        .unwrap();
    mb.sync().unwrap();
    assert_eq!(mb.counters().unwrap().messages, 2);
}
