//! `mailsync_maildir::resync::force_resync`: a damaged or missing `dovecot-uidlist` or index
//! is rebuilt from the message files; every message stays, every well-formed record keeps
//! its UID, and files without one get UIDs no client has seen.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use common::open_store;
use mailstore::{Flags, NewMail, Store};
use mailsync_maildir::resync::force_resync;
use mailsync_maildir::MaildirStore;

/// Saves `count` messages `msg N` (message 2 is \Seen) into INBOX.
fn populate(store: &MaildirStore, count: usize) {
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let mut tx = inbox.begin().unwrap();
    for i in 1..=count {
        let mail = NewMail {
            flags: if i == 2 {
                Flags::SEEN
            } else {
                Flags::default()
            },
            ..NewMail::default()
        };
        tx.save(mail, &mut format!("msg {i}\n").as_bytes()).unwrap();
    }
    tx.commit().unwrap();
}

/// body → (uid, flags) of every message in INBOX, read through a freshly opened store.
fn contents(home: &Path) -> (u32, BTreeMap<String, (u32, Flags)>) {
    let store = open_store("maildir:~/Maildir", home, None);
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let validity = inbox.status().unwrap().uid_validity;
    let mut out = BTreeMap::new();
    for m in inbox.mails().unwrap() {
        let mut body = String::new();
        inbox
            .open_mail(m.uid)
            .unwrap()
            .read_to_string(&mut body)
            .unwrap();
        // \Recent is session state (new/ files), not stored: left out of the comparison.
        out.insert(body, (m.uid.0, Flags(m.flags.0 & !Flags::RECENT.0)));
    }
    (validity, out)
}

fn uidlist_path(home: &Path) -> std::path::PathBuf {
    home.join("Maildir/dovecot-uidlist")
}

fn uidlist_lines(home: &Path) -> Vec<String> {
    fs::read_to_string(uidlist_path(home))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(home: &Path, lines: &[String]) {
    fs::write(uidlist_path(home), lines.join("\n") + "\n").unwrap();
}

#[test]
fn malformed_lines_are_dropped_and_the_other_uids_kept() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    populate(&store, 4);
    let (validity, before) = contents(home.path());
    let mut lines = uidlist_lines(home.path());
    // Header, 4 records: a garbage line after record 2, record 3 made unreadable.
    lines[3] = format!("x{}", lines[3]);
    lines.insert(3, "this is not a record".into());
    write_lines(home.path(), &lines);
    // The strict reader refuses the file, as Dovecot does.
    assert!(store.open_mailbox("INBOX").is_err());

    let done = force_resync(&store, "*").unwrap();
    let inbox = done.iter().find(|d| d.name == "INBOX").unwrap();
    assert_eq!((inbox.kept, inbox.renumbered), (3, 1));
    assert!(
        inbox.fixes.iter().any(|f| f.contains("line 4")),
        "{inbox:?}"
    );

    let (validity_after, after) = contents(home.path());
    assert_eq!(validity_after, validity);
    assert_eq!(after.len(), 4, "every message is still there");
    for body in ["msg 1\n", "msg 2\n", "msg 4\n"] {
        assert_eq!(after[body], before[body], "{body} keeps its UID and flags");
    }
    assert!(after["msg 3\n"].0 >= 5, "a new UID above N: {:?}", after);
    assert_eq!(after["msg 2\n"].1, Flags::SEEN);
}

#[test]
fn a_duplicate_uid_or_file_keeps_the_first_record() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    populate(&store, 3);
    let (_, before) = contents(home.path());
    let mut lines = uidlist_lines(home.path());
    // Record 3 claims UID 2 (descending/duplicate), and record 1's file is listed again.
    let rec3_file = lines[3].split_once(' ').unwrap().1.to_string();
    lines[3] = format!("2 {rec3_file}");
    let rec1_file = lines[1].split_once(' ').unwrap().1.to_string();
    lines.push(format!("9 {rec1_file}"));
    write_lines(home.path(), &lines);

    force_resync(&store, "INBOX").unwrap();
    let (_, after) = contents(home.path());
    assert_eq!(after.len(), 3);
    assert_eq!(after["msg 1\n"], before["msg 1\n"], "first record wins");
    assert_eq!(after["msg 2\n"], before["msg 2\n"]);
    assert!(after["msg 3\n"].0 >= 4, "{after:?}");
    assert_ne!(after["msg 3\n"].0, 9, "UID 9 was in the file: never reused");
    let text = fs::read_to_string(uidlist_path(home.path())).unwrap();
    assert!(text.starts_with("3 V"), "rewritten as v3: {text}");
}

#[test]
fn a_deleted_uidlist_takes_uidvalidity_and_next_uid_from_the_index() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    populate(&store, 3);
    let (validity, before) = contents(home.path());
    assert!(home.path().join("Maildir/dovecot.index.log").exists());
    fs::remove_file(uidlist_path(home.path())).unwrap();

    force_resync(&store, "INBOX").unwrap();
    let (validity_after, after) = contents(home.path());
    assert_eq!(validity_after, validity, "UIDVALIDITY from the index");
    assert_eq!(after.len(), 3);
    let mut uids: Vec<u32> = after.values().map(|v| v.0).collect();
    uids.sort();
    assert_eq!(uids, vec![4, 5, 6], "new UIDs at the index's next UID");
    assert_eq!(after["msg 2\n"].1, Flags::SEEN, "flags from the filename");
    assert_eq!(before.len(), 3);
}

#[test]
fn a_deleted_index_is_rebuilt_with_every_uid_kept() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    populate(&store, 3);
    let (validity, before) = contents(home.path());
    for entry in fs::read_dir(home.path().join("Maildir")).unwrap() {
        let entry = entry.unwrap();
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("dovecot.index")
        {
            fs::remove_file(entry.path()).unwrap();
        }
    }
    let done = force_resync(&store, "*").unwrap();
    assert!(done.iter().all(|d| d.renumbered == 0), "{done:?}");
    assert!(home.path().join("Maildir/dovecot.index.log").exists());
    let (validity_after, after) = contents(home.path());
    assert_eq!(validity_after, validity);
    assert_eq!(after, before);
}

#[test]
fn the_mask_selects_mailboxes() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    populate(&store, 1);
    store.create_mailbox("Other", None).unwrap();
    let done = force_resync(&store, "Oth*").unwrap();
    let names: Vec<&str> = done.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["Other"]);
}

#[test]
fn a_garbage_header_takes_uidvalidity_from_the_index_and_keeps_the_records() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    populate(&store, 3);
    let (validity, before) = contents(home.path());
    let mut lines = uidlist_lines(home.path());
    lines[0] = "garbage".into();
    write_lines(home.path(), &lines);

    let done = force_resync(&store, "INBOX").unwrap();
    assert_eq!((done[0].kept, done[0].renumbered), (3, 0), "{done:?}");
    assert!(done[0].fixes.iter().any(|f| f.contains("from the index")));
    let (validity_after, after) = contents(home.path());
    assert_eq!(validity_after, validity);
    assert_eq!(after, before);
}
