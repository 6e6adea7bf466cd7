//! On-disk behaviour that must match Dovecot 2.3.19.1 byte for byte: where files go, what the
//! uidlist and keywords files contain, how others' changes are merged.

mod common;

use std::fs;

use common::{listed, names_in, open_store, tree};
use mailstore::{FlagOp, FlagUpdate, Flags, Guid, Keyword, MailboxGuid, NewMail, Store, Uid};

fn save(mb: &mut dyn mailstore::Mailbox, mail: NewMail, body: &[u8]) -> Uid {
    let mut tx = mb.begin().unwrap();
    tx.save(mail, &mut &body[..]).unwrap();
    tx.commit().unwrap().saved[0]
}

fn with_guid(guid: &Guid) -> NewMail {
    NewMail {
        guid: Some(guid.clone()),
        ..NewMail::default()
    }
}

#[test]
fn saves_go_to_new_without_flags_and_cur_with_flags() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    save(&mut *inbox, NewMail::default(), b"a\nb\n");
    save(
        &mut *inbox,
        NewMail {
            flags: Flags::SEEN | Flags::FLAGGED | Flags::RECENT,
            keywords: vec![Keyword::from("Junk")],
            received_date: Some(1_234_567_890),
            ..NewMail::default()
        },
        b"x\r\n",
    );
    let root = home.path().join("Maildir");
    let new = names_in(&root.join("new"));
    let cur = names_in(&root.join("cur"));
    assert_eq!(new.len(), 1);
    assert!(new[0].ends_with(",S=4,W=6"), "{new:?}");
    assert!(!new[0].contains(':'));
    assert_eq!(cur.len(), 1);
    // "x\r\n" is stored as "x\n" (mail_save_crlf = no, as doveadm save does).
    assert!(cur[0].ends_with(",S=2,W=3:2,FSa"), "{cur:?}");
    // Dovecot's name shape: <secs>.M<usecs>P<pid>.<host>
    let pid = format!("P{}.", std::process::id());
    assert!(new[0].contains(".M") && new[0].contains(&pid), "{new:?}");
    assert!(names_in(&root.join("tmp")).is_empty());
    let mtime = fs::metadata(root.join("cur").join(&cur[0]))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        mtime
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        1_234_567_890,
        "received date is the mtime"
    );
    assert_eq!(
        fs::read_to_string(root.join("dovecot-keywords")).unwrap(),
        "0 Junk\n"
    );
    let uidlist = fs::read_to_string(root.join("dovecot-uidlist")).unwrap();
    let lines: Vec<&str> = uidlist.lines().collect();
    assert!(
        lines[0].starts_with("3 V") && lines[0].contains(" N1 G"),
        "{uidlist}"
    );
    assert!(lines[1].starts_with("1 X") && lines[1].ends_with(&format!(" :{}", new[0])));
    assert!(lines[2].starts_with("2 X") && lines[2].contains(" :") && !lines[2].contains(":2,"));
}

#[test]
fn given_guids_become_g_fields_or_the_filename() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let hex = Guid::from_bytes("0123456789abcdef0123456789abcdef");
    let u1 = save(&mut *inbox, with_guid(&hex), b"one\n");
    // A Maildir base with the right sizes is kept as the filename (dsync between Maildirs).
    let base = Guid::from_bytes("1700000000.M5P6.otherhost,S=4,W=5");
    let u2 = save(&mut *inbox, with_guid(&base), b"two\n");
    // Wrong sizes: a new name, the GUID goes to G.
    let wrong = Guid::from_bytes("1700000000.M7P8.otherhost,S=99,W=99");
    let u3 = save(&mut *inbox, with_guid(&wrong), b"three\n");
    let root = home.path().join("Maildir");
    let uidlist = fs::read_to_string(root.join("dovecot-uidlist")).unwrap();
    assert!(
        uidlist.contains(" G0123456789abcdef0123456789abcdef "),
        "{uidlist}"
    );
    assert!(
        uidlist.contains(" :1700000000.M5P6.otherhost,S=4,W=5\n"),
        "{uidlist}"
    );
    assert!(
        uidlist.contains(" G1700000000.M7P8.otherhost,S=99,W=99 "),
        "{uidlist}"
    );
    assert!(root.join("new/1700000000.M5P6.otherhost,S=4,W=5").exists());
    let mails = inbox.mails().unwrap();
    let guid_of = |u: Uid| mails.iter().find(|m| m.uid == u).unwrap().guid.clone();
    assert_eq!(guid_of(u1), hex);
    assert_eq!(guid_of(u2), base);
    assert_eq!(guid_of(u3), wrong);
}

#[test]
fn records_appended_by_dovecot_are_kept_and_new_files_get_uids_in_time_order() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let u1 = save(&mut *inbox, NewMail::default(), b"ours\n");
    let root = home.path().join("Maildir");
    // "Dovecot" delivers one message and appends its record with UID 7 (header untouched).
    fs::write(root.join("new/1600000000.M1P1.dove,S=5,W=6"), b"dove\n").unwrap();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(root.join("dovecot-uidlist"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"7 :1600000000.M1P1.dove,S=5,W=6\n").unwrap();
    // And two more files nobody has given a UID yet, older ones first by name time.
    fs::write(root.join("new/1500000002.M9P1.x"), b"b\n").unwrap();
    fs::write(root.join("cur/1500000001.M99P1.x:2,S"), b"a\n").unwrap();
    let u = save(&mut *inbox, NewMail::default(), b"after\n");
    let mails = inbox.mails().unwrap();
    let uids: Vec<u32> = mails.iter().map(|m| m.uid.0).collect();
    assert_eq!(u1, Uid(1));
    assert_eq!(uids, [1, 7, 8, 9, 10]);
    assert_eq!(u, Uid(10), "others' files are numbered before our save");
    assert_eq!(mails[2].guid.as_bytes(), b"1500000001.M99P1.x");
    assert_eq!(mails[3].guid.as_bytes(), b"1500000002.M9P1.x");
    let text = fs::read_to_string(root.join("dovecot-uidlist")).unwrap();
    assert!(
        text.contains("\n7 :1600000000.M1P1.dove,S=5,W=6\n"),
        "{text}"
    );
}

#[test]
fn uidlist_v1_is_read_and_upgraded_keeping_uids() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("Maildir");
    for d in ["cur", "new", "tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("cur/100.M1P1.h:2,S"), b"a\n").unwrap();
    fs::write(root.join("cur/200.M1P1.h:2,"), b"b\n").unwrap();
    fs::write(
        root.join("dovecot-uidlist"),
        b"1 4242 10\n3 100.M1P1.h:2,S\n9 200.M1P1.h\n",
    )
    .unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let s = inbox.status().unwrap();
    assert_eq!((s.uid_validity, s.uid_next, s.messages), (4242, 10, 2));
    let uids: Vec<u32> = inbox.mails().unwrap().iter().map(|m| m.uid.0).collect();
    assert_eq!(uids, [3, 9]);
    // Dovecot rewrites old versions (and adds a mailbox GUID) as soon as it can lock.
    let text = fs::read_to_string(root.join("dovecot-uidlist")).unwrap();
    let guid = s.guid.to_string();
    assert_eq!(
        text,
        format!("3 V4242 N10 G{guid}\n3 :100.M1P1.h\n9 :200.M1P1.h\n")
    );
}

#[test]
fn control_and_index_options_keep_files_where_dovecot_puts_them() {
    let home = tempfile::tempdir().unwrap();
    let spec = "maildir:~/Maildir:INBOX=~/inbox:CONTROL=~/control:INDEX=~/index";
    let store = open_store(spec, home.path(), Some('/'));
    let guid = MailboxGuid([7; 16]);
    store.create_mailbox("A/B", Some(guid)).unwrap();
    store.set_subscribed("A/B", true).unwrap();
    let mut ab = store.open_mailbox("A/B").unwrap();
    save(
        &mut *ab,
        NewMail {
            keywords: vec![Keyword::from("K")],
            ..NewMail::default()
        },
        b"x\n",
    );
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    save(&mut *inbox, NewMail::default(), b"y\n");
    let h = home.path();
    assert!(h.join("control/.A.B/dovecot-uidlist").exists());
    assert!(h.join("control/.A.B/dovecot-keywords").exists());
    assert!(h.join("control/.INBOX/dovecot-uidlist").exists());
    assert!(h.join("control/dovecot-uidvalidity").exists());
    assert!(h.join("control/subscriptions").exists());
    assert!(h.join("Maildir/.A.B/maildirfolder").exists());
    assert!(!h.join("Maildir/.A.B/dovecot-uidlist").exists());
    assert!(!h.join("inbox/dovecot-uidlist").exists());
    // INDEX=: the index and its log go to <INDEX>/<storage name>, INBOX's to .INBOX.
    assert!(h.join("index/.A.B/dovecot.index.log").exists());
    assert!(h.join("index/.INBOX/dovecot.index.log").exists());
    assert!(!h.join("Maildir/.A.B/dovecot.index.log").exists());
    assert!(!h.join("control/.A.B/dovecot.index.log").exists());
    assert!(!h.join("inbox/dovecot.index.log").exists());
    let text = fs::read_to_string(h.join("control/.A.B/dovecot-uidlist")).unwrap();
    assert!(text.starts_with("3 V"));
    assert!(text.contains(&format!(" G{guid}\n")));
    assert_eq!(
        fs::read(h.join("control/subscriptions")).unwrap(),
        b"V\t2\n\nA\tB\n"
    );
    // Rename and delete move/remove the control directories too.
    store.rename_mailbox("A/B", "C").unwrap();
    assert!(h.join("control/.C/dovecot-uidlist").exists());
    assert!(!h.join("control/.A.B").exists());
    assert!(h.join("index/.C/dovecot.index.log").exists());
    assert!(!h.join("index/.A.B").exists());
    assert_eq!(
        store.open_mailbox("C").unwrap().status().unwrap().guid,
        guid
    );
    store.delete_mailbox("C").unwrap();
    assert!(!h.join("control/.C").exists());
    assert!(!h.join("Maildir/.C").exists());
    assert!(!h.join("index/.C").exists());
}

#[test]
fn new_uidvalidities_continue_dovecots_counter() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("Maildir");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("dovecot-uidvalidity"), "6b0c7a02").unwrap();
    fs::write(root.join("dovecot-uidvalidity.6b0c7a02"), "").unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    store.create_mailbox("One", None).unwrap();
    store.create_mailbox("Two", None).unwrap();
    let v1 = store
        .open_mailbox("One")
        .unwrap()
        .status()
        .unwrap()
        .uid_validity;
    let v2 = store
        .open_mailbox("Two")
        .unwrap()
        .status()
        .unwrap()
        .uid_validity;
    assert_eq!((v1, v2), (0x6b0c7a03, 0x6b0c7a04));
    assert_eq!(
        fs::read(root.join("dovecot-uidvalidity")).unwrap(),
        b"6b0c7a04"
    );
}

#[test]
fn maildirpp_delete_keeps_children_and_leaves_no_trash() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    store.create_mailbox("P", None).unwrap();
    store.create_mailbox("P.C", None).unwrap();
    store.delete_mailbox("P").unwrap();
    let root = home.path().join("Maildir");
    assert!(!root.join(".P").exists());
    assert!(root.join(".P.C/cur").is_dir());
    assert!(!root.join("..DOVECOT-TRASHED").exists());
    let p = listed(&store, "P");
    assert!(p.attrs.nonexistent && p.attrs.children);
}

#[test]
fn layout_fs_delete_keeps_child_directories_inside() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir:LAYOUT=fs", home.path(), None);
    store.create_mailbox("P", None).unwrap();
    store.create_mailbox("P/C", None).unwrap();
    let mut p = store.open_mailbox("P").unwrap();
    save(&mut *p, NewMail::default(), b"gone\n");
    drop(p);
    store.delete_mailbox("P").unwrap();
    let root = home.path().join("Maildir");
    assert_eq!(names_in(&root.join("P")), ["C"]);
    assert!(root.join("P/C/cur").is_dir());
    let p = listed(&store, "P");
    assert!(p.attrs.noselect && p.attrs.children && !p.attrs.nonexistent);
    // No maildirfolder in LAYOUT=fs (maildir_create_maildirfolder_file: Maildir++ only).
    assert!(!tree(&root).iter().any(|p| p.ends_with("maildirfolder")));
}

#[test]
fn flag_changes_rename_within_the_same_directory() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let uid = save(&mut *inbox, NewMail::default(), b"m\n");
    let mut tx = inbox.begin().unwrap();
    tx.update_flags(
        uid,
        &FlagUpdate {
            op: FlagOp::Add,
            flags: Flags::DELETED | Flags::DRAFT,
            keywords: vec![],
        },
    )
    .unwrap();
    tx.commit().unwrap();
    let root = home.path().join("Maildir");
    // As doveadm does: a file in new/ gets its info there (only an IMAP SELECT moves it).
    let new = names_in(&root.join("new"));
    assert!(new[0].ends_with(",S=2,W=3:2,DT"), "{new:?}");
    assert!(names_in(&root.join("cur")).is_empty());
    let mut tx = inbox.begin().unwrap();
    tx.expunge(uid).unwrap();
    tx.commit().unwrap();
    assert!(names_in(&root.join("new")).is_empty());
}

/// A sync's view of a Maildir stats no file: the dates are left out (a `stat` each), and
/// `mails_of` reads one message's when it is sent. A file's mtime is its received date.
#[test]
fn the_view_without_dates_stats_no_file_and_mails_of_reads_one() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut mb = store.open_mailbox("INBOX").unwrap();
    let mail = NewMail {
        received_date: Some(1_600_000_000),
        ..Default::default()
    };
    let uid = save(&mut *mb, mail, b"Subject: d\n\nbody\n");
    let mut fresh = open_store("maildir:~/Maildir", home.path(), None)
        .open_mailbox("INBOX")
        .unwrap();
    let (records, left_out) = fresh.mails_without_dates().unwrap();
    assert!(left_out);
    assert_eq!((records[0].uid, records[0].received_date), (uid, 0));
    let one = fresh.mails_of(&[uid]).unwrap();
    assert_eq!(one[0].received_date, 1_600_000_000);
}
