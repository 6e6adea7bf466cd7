//! Sharing a Maildir with a running Dovecot: changes made by others between our view and our
//! commit are merged, never lost; the uidlist lock is honoured.

mod common;

use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{names_in, open_store};
use mailstore::{FlagOp, FlagUpdate, Flags, NewMail, Store};
use mailsupport::dotlock::{DotLock, DotLockOptions};

#[test]
fn flag_change_applies_to_a_file_renamed_by_someone_else() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let mut tx = inbox.begin().unwrap();
    tx.save(
        NewMail {
            flags: Flags::ANSWERED,
            ..NewMail::default()
        },
        &mut &b"m\n"[..],
    )
    .unwrap();
    tx.save(NewMail::default(), &mut &b"n\n"[..]).unwrap();
    let uids = tx.commit().unwrap().saved;
    let cur = home.path().join("Maildir/cur");
    let new = home.path().join("Maildir/new");
    // After our view was taken, "Dovecot" sets \Seen on the first (rename) and expunges the
    // second.
    let old = names_in(&cur).remove(0);
    fs::rename(cur.join(&old), cur.join(old.replace(":2,R", ":2,RS"))).unwrap();
    fs::remove_file(new.join(names_in(&new).remove(0))).unwrap();
    let mut tx = inbox.begin().unwrap();
    let flag = |f| FlagUpdate {
        op: FlagOp::Add,
        flags: f,
        keywords: vec![],
    };
    tx.update_flags(uids[0], &flag(Flags::FLAGGED)).unwrap();
    tx.update_flags(uids[1], &flag(Flags::FLAGGED)).unwrap();
    tx.commit().unwrap();
    let names = names_in(&cur);
    assert_eq!(names.len(), 1);
    assert!(names[0].ends_with(":2,FRS"), "both changes kept: {names:?}");
    let mails = inbox.mails().unwrap();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0].flags,
        Flags::ANSWERED | Flags::SEEN | Flags::FLAGGED | Flags::RECENT
    );
}

#[test]
fn commit_waits_for_the_lock_and_keeps_records_added_meanwhile() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let root = home.path().join("Maildir");
    let uidlist = root.join("dovecot-uidlist");
    // "Dovecot" holds the lock while it delivers a message and appends its record.
    let lock = DotLock::acquire(&uidlist, &DotLockOptions::maildir_uidlist()).unwrap();
    let started = Instant::now();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1200));
        fs::write(root.join("new/1600000000.M1P1.dove,S=2,W=3"), b"d\n").unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(&uidlist).unwrap();
        f.write_all(b"1 :1600000000.M1P1.dove,S=2,W=3\n").unwrap();
        drop(f);
        lock.release().unwrap();
    });
    let mut tx = inbox.begin().unwrap();
    tx.save(NewMail::default(), &mut &b"ours\n"[..]).unwrap();
    let saved = tx.commit().unwrap().saved;
    holder.join().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "commit waited"
    );
    assert_eq!(saved[0].0, 2, "UID 1 was taken by the other writer");
    let mails = inbox.mails().unwrap();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[0].guid.as_bytes(), b"1600000000.M1P1.dove,S=2,W=3");
    let text = fs::read_to_string(home.path().join("Maildir/dovecot-uidlist")).unwrap();
    assert!(
        text.contains("\n1 :1600000000.M1P1.dove,S=2,W=3\n"),
        "{text}"
    );
    assert!(!home.path().join("Maildir/dovecot-uidlist.lock").exists());
}
