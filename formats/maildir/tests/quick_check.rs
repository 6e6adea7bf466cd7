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

/// Removes one message file from cur/ and puts cur/'s mtime back: only a full read of the
/// directory can notice.
fn remove_behind_the_stamps_back(dir: &Path) {
    let cur = dir.join("cur");
    let before = fs::metadata(&cur).unwrap().modified().unwrap();
    fs::remove_file(&cur_files(dir)[0]).unwrap();
    fs::File::open(&cur)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(before))
        .unwrap();
}

#[test]
fn an_unchanged_mailbox_is_not_scanned_again() {
    let (_home, store, dir) = setup();
    let mut mb = store.open_mailbox("Box").unwrap();
    mb.sync().unwrap(); // settled directories: this scan is trusted
    assert_eq!(mb.counters().unwrap().messages, 3);
    // Remove a file behind the stamp's back: restore cur/'s mtime exactly.
    let cur = dir.join("cur");
    remove_behind_the_stamps_back(&dir);
    mb.sync().unwrap();
    assert_eq!(
        mb.counters().unwrap().messages,
        3,
        "no rescan: the quick check trusted the unchanged directories"
    );
    // A fresh handle trusts the index's `maildir` header the same way (Dovecot's quick
    // check across processes)...
    let mut fresh = store.open_mailbox("Box").unwrap();
    assert_eq!(fresh.counters().unwrap().messages, 3);
    // ...until cur/ changes.
    backdate(&cur, 30);
    let mut fresh = store.open_mailbox("Box").unwrap();
    assert_eq!(fresh.counters().unwrap().messages, 2);
}

/// The index's `maildir` extension header: nine u32 (new check time, new mtime + nsecs, cur
/// check time, cur mtime + nsecs, uidlist mtime + nsecs, uidlist size).
fn maildir_header(dir: &Path) -> Vec<u32> {
    let view = mailsync_index::View::open(dir, "dovecot.index").unwrap();
    let e = view.extension("maildir").expect("a maildir extension");
    e.data
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn mtime_of(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let md = fs::metadata(path).unwrap();
    (md.mtime() as u32, md.mtime_nsec() as u32)
}

#[test]
fn a_scan_records_the_directories_in_the_index_header() {
    let (_home, store, dir) = setup();
    let mut mb = store.open_mailbox("Box").unwrap();
    let modseq = mb.counters().unwrap().highest_modseq;
    let h = maildir_header(&dir);
    assert_eq!(h.len(), 9);
    assert_eq!((h[1], h[2]), mtime_of(&dir.join("new")));
    assert_eq!((h[4], h[5]), mtime_of(&dir.join("cur")));
    assert_eq!((h[6], h[7]), mtime_of(&dir.join("dovecot-uidlist")));
    assert_eq!(
        h[8] as u64,
        fs::metadata(dir.join("dovecot-uidlist")).unwrap().len()
    );
    // read after the directories settled: not dirty (check time > mtime + 1)
    assert!(h[0] > h[1] + 1 && h[3] > h[4] + 1, "{h:?}");
    // the header is no mail change: HIGHESTMODSEQ stays
    let mut again = store.open_mailbox("Box").unwrap();
    assert_eq!(again.counters().unwrap().highest_modseq, modseq);
    mb.sync().unwrap();
    assert_eq!(mb.counters().unwrap().highest_modseq, modseq);
}

#[test]
fn a_fresh_handle_opened_by_the_quick_check_answers_as_a_full_scan() {
    let (_home, store, dir) = setup();
    drop(store.open_mailbox("Box").unwrap()); // the scan that writes the header
                                              // 4 messages, the last one unseen and \Recent
    fs::write(dir.join("new/1700000000.M9P9.host"), "Subject: n\n\nx\n").unwrap();
    backdate(&dir.join("new"), 20);
    drop(store.open_mailbox("Box").unwrap());
    let mut quick = store.open_mailbox("Box").unwrap();
    let q = quick.counters().unwrap();
    // the same handle, read in full (mails() loads the view)
    let mails = quick.mails().unwrap();
    let full = quick.counters().unwrap();
    assert_eq!(mails.len(), 4);
    assert_eq!(q.messages, 4);
    assert_eq!(
        (
            q.uid_validity,
            q.uid_next,
            q.highest_modseq,
            q.messages,
            q.recent,
            q.unseen,
            q.guid,
            q.last_guid.clone()
        ),
        (
            full.uid_validity,
            full.uid_next,
            full.highest_modseq,
            full.messages,
            full.recent,
            full.unseen,
            full.guid,
            full.last_guid.clone()
        )
    );
    assert_eq!(q.last_guid.unwrap().as_bytes(), b"1700000000.M9P9.host");
    assert_eq!(q.unseen, 1);
}

#[test]
fn a_fresh_handle_sees_every_change_made_between_runs() {
    let (_home, store, dir) = setup();
    drop(store.open_mailbox("Box").unwrap());
    // a delivery, backdated so that new/ isn't "dirty"
    fs::write(dir.join("new/1700000001.M1P1.host"), "Subject: n\n\nx\n").unwrap();
    backdate(&dir.join("new"), 20);
    let mut mb = store.open_mailbox("Box").unwrap();
    assert_eq!(mb.counters().unwrap().messages, 4);
    drop(mb);
    // a flag change by an MUA (a rename in cur/)
    let f = cur_files(&dir)[0].clone();
    fs::rename(&f, f.to_string_lossy().replace(":2,S", ":2,")).unwrap();
    backdate(&dir.join("cur"), 10);
    let mut mb = store.open_mailbox("Box").unwrap();
    assert_eq!(mb.counters().unwrap().unseen, 2);
    drop(mb);
    // the uidlist rewritten by someone (its size and mtime change) makes the next open read
    // everything: shown by a removal hidden from cur/'s mtime, found by that full read
    remove_behind_the_stamps_back(&dir);
    let mut mb = store.open_mailbox("Box").unwrap();
    assert_eq!(
        mb.counters().unwrap().messages,
        4,
        "quick: the removal is hidden"
    );
    drop(mb);
    let uidlist = dir.join("dovecot-uidlist");
    let text = fs::read_to_string(&uidlist).unwrap();
    let first = text.lines().next().unwrap().to_string();
    let changed = text.replacen(&first, &format!("{first} Xextra"), 1);
    fs::write(&uidlist, changed).unwrap();
    let mut mb = store.open_mailbox("Box").unwrap();
    assert_eq!(mb.counters().unwrap().messages, 3);
}

#[test]
fn a_directory_read_right_after_a_change_is_not_recorded() {
    let (_home, store, dir) = setup();
    let cur = dir.join("cur");
    // an mtime the file system's clock hasn't passed yet: changed in its present tick
    let in_this_tick = SystemTime::now() + std::time::Duration::from_millis(50);
    fs::File::open(&cur)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(in_this_tick))
        .unwrap();
    drop(store.open_mailbox("Box").unwrap());
    // cur/ changed within the clock tick of the scan: its mtime is recorded as 0 ("not
    // read"), so a removal that keeps its mtime is still found by the next open
    let h = maildir_header(&dir);
    assert_eq!((h[4], h[5]), (0, 0), "{h:?}");
    remove_behind_the_stamps_back(&dir);
    let mut mb = store.open_mailbox("Box").unwrap();
    assert_eq!(mb.counters().unwrap().messages, 2);
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

/// cur/ modified within the file system clock's present tick (here: an mtime the clock
/// hasn't reached yet): a scan then isn't trusted to show a later change that keeps cur/'s
/// mtime (a removal in the same tick). The handle keeps that reading only for the delayed
/// refresh (a second); the next sync after it reads again. Its own write (the index's new
/// `maildir` header) doesn't make the reading trusted for longer.
#[test]
fn recently_modified_directories_are_scanned_again_after_the_delayed_refresh() {
    let (_home, store, dir) = setup();
    let cur = dir.join("cur");
    let mut mb = store.open_mailbox("Box").unwrap();
    let in_this_tick = SystemTime::now() + std::time::Duration::from_millis(50);
    fs::File::open(&cur)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(in_this_tick))
        .unwrap();
    mb.sync().unwrap();
    remove_behind_the_stamps_back(&dir);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    mb.sync().unwrap();
    assert_eq!(mb.counters().unwrap().messages, 2);
}

/// The counters of a handle (the quick check's answer, or a full read's).
fn counters_of(mb: &mut Box<dyn mailstore::Mailbox>) -> mailstore::MailboxStatus {
    mb.counters().unwrap()
}

/// A handle that changed the index leaves `dovecot.index` current when dropped; a mailbox
/// with a `dovecot.index` and only header changes logged past it: the quick
/// check answers from the index's header and last record alone, exactly as a full read;
/// and `changes_since` on such a handle reads the index then.
#[test]
fn a_big_mailbox_is_answered_from_the_index_header_as_by_a_full_read() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    store.create_mailbox("Big", None).unwrap();
    let mut mb = store.open_mailbox("Big").unwrap();
    let mut tx = mb.begin().unwrap();
    for i in 0..1200 {
        let flags = if i % 4 == 0 {
            Flags::default()
        } else {
            Flags::SEEN
        };
        tx.save(
            NewMail {
                flags,
                ..Default::default()
            },
            &mut format!("Subject: {i}\n\nbody {i}\n").as_bytes(),
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(mb);
    let dir = home.path().join("Maildir/.Big");
    let settle = || {
        for sub in ["new", "cur"] {
            backdate(&dir.join(sub), 60);
        }
    };
    settle();
    // the handle that changed the index brought dovecot.index up to date when dropped
    assert!(dir.join("dovecot.index").exists());
    drop(store.open_mailbox("Big").unwrap()); // the scan that writes the header
    let mut quick = store.open_mailbox("Big").unwrap();
    let q = counters_of(&mut quick);
    let changes = quick.changes_since(mailstore::ModSeq(1)).unwrap();
    quick.mails().unwrap(); // read in full
    assert_eq!(q, counters_of(&mut quick));
    assert_eq!((q.messages, q.unseen), (1200, 300));
    assert_eq!(
        format!("{changes:?}"),
        format!("{:?}", quick.changes_since(mailstore::ModSeq(1)).unwrap()),
        "changes_since of a handle the header answered"
    );
    let last = quick.counters().unwrap().last_guid;
    drop(quick);
    let mut again = store.open_mailbox("Big").unwrap();
    assert_eq!(again.counters().unwrap().last_guid, last);

    // a change through another handle after the quick answer: the quick handle's history
    // can't answer for the counters it gave
    let since = mailstore::ModSeq(again.counters().unwrap().highest_modseq);
    let mut other = store.open_mailbox("Big").unwrap();
    let mut tx = other.begin().unwrap();
    tx.expunge(mailstore::Uid(5)).unwrap();
    tx.commit().unwrap();
    drop(other);
    assert_eq!(
        again.changes_since(since).unwrap(),
        mailstore::Changes::Unknown
    );
    drop(again);
    settle();

    // a delivery: recent and not, the last message in new/
    fs::write(dir.join("new/1700000000.M9P9.host"), "Subject: n\n\nx\n").unwrap();
    settle();
    drop(store.open_mailbox("Big").unwrap());
    let mut quick = store.open_mailbox("Big").unwrap();
    let q = counters_of(&mut quick);
    quick.mails().unwrap();
    assert_eq!(q, counters_of(&mut quick));
    assert_eq!((q.messages, q.unseen), (1200, 300));
    assert_eq!(
        quick.counters().unwrap().last_guid.unwrap().as_bytes(),
        b"1700000000.M9P9.host"
    );
}
