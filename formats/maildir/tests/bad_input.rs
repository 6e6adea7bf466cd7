//! Bad and hostile input: every case is handled without a panic, with a typed error naming
//! the file where the data is broken, and without writing anything it shouldn't.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::{listed, names_in, open_store, tree};
use mailstore::{ErrorKind, FlagOp, FlagUpdate, Flags, Keyword, NewMail, Store, Uid};

fn store_with_messages(n: usize) -> (tempfile::TempDir, mailsync_maildir::MaildirStore) {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    store.create_mailbox("Box", None).unwrap();
    let mut mb = store.open_mailbox("Box").unwrap();
    let mut tx = mb.begin().unwrap();
    for i in 0..n {
        tx.save(
            NewMail::default(),
            &mut format!("Subject: {i}\n\nbody {i}\n").as_bytes(),
        )
        .unwrap();
    }
    tx.commit().unwrap();
    (home, store)
}

fn box_dir(home: &Path) -> std::path::PathBuf {
    home.join("Maildir/.Box")
}

fn add(flags: Flags, keywords: &[&str]) -> FlagUpdate {
    FlagUpdate {
        op: FlagOp::Add,
        flags,
        keywords: keywords.iter().map(|k| Keyword::from(*k)).collect(),
    }
}

fn only_file(dir: &Path) -> String {
    let names = names_in(dir);
    assert_eq!(names.len(), 1, "{names:?}");
    names[0].clone()
}

#[test]
fn malformed_uidlist_line_is_an_error_naming_file_and_line() {
    let (home, store) = store_with_messages(2);
    let path = box_dir(home.path()).join("dovecot-uidlist");
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str("garbage line\n");
    fs::write(&path, &text).unwrap();
    let err = store.open_mailbox("Box").err().expect("broken uidlist");
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    let msg = err.to_string();
    assert!(
        msg.contains("dovecot-uidlist") && msg.contains("line 4"),
        "{msg}"
    );
    // Nothing was "repaired": the file is as it was (Dovecot would delete it and renumber).
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn duplicate_or_descending_uids_are_an_error() {
    for (records, line) in [("1 :a\n1 :b\n", 3), ("5 :a\n3 :b\n", 3)] {
        let (home, store) = store_with_messages(0);
        let path = box_dir(home.path()).join("dovecot-uidlist");
        let text = format!("3 V1 N9 G00112233445566778899aabbccddeeff\n{records}");
        fs::write(&path, &text).unwrap();
        let err = store.open_mailbox("Box").err().expect("broken uidlist");
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(
            err.to_string()
                .contains(&format!("line {line}: UIDs not ordered")),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }
}

#[test]
fn unknown_flag_letters_and_extra_fields_survive_a_flag_change() {
    let (home, store) = store_with_messages(0);
    let cur = box_dir(home.path()).join("cur");
    fs::write(
        cur.join("1700000000.M1P1.host,S=3,X=abc:2,1PSX,second"),
        b"x\n\n",
    )
    .unwrap();
    let mut mb = store.open_mailbox("Box").unwrap();
    let r = &mb.mails().unwrap()[0];
    assert_eq!(r.flags, Flags::SEEN | Flags::RECENT);
    assert_eq!(r.physical_size, 3);
    let mut tx = mb.begin().unwrap();
    tx.update_flags(r.uid, &add(Flags::FLAGGED | Flags::ANSWERED, &[]))
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(
        only_file(&cur),
        "1700000000.M1P1.host,S=3,X=abc:2,1FPRSX,second"
    );
    assert_eq!(
        mb.mails().unwrap()[0].guid.as_bytes(),
        b"1700000000.M1P1.host,S=3,X=abc"
    );
}

#[test]
fn a_file_renamed_or_removed_after_the_scan_is_found_again_or_gone() {
    let (home, store) = store_with_messages(2);
    let new = box_dir(home.path()).join("new");
    let mut mb = store.open_mailbox("Box").unwrap();
    let mails = mb.mails().unwrap();
    // Someone else changes the flags of message 1 (rename) and expunges message 2.
    // the files of the two messages, as the uidlist names them (a sort of the names can
    // put the second first: the microseconds in them have no leading zeros)
    let list = fs::read_to_string(box_dir(home.path()).join("dovecot-uidlist")).unwrap();
    let base_of = |uid: Uid| -> String {
        let line = list
            .lines()
            .find(|l| l.split(' ').next() == Some(uid.0.to_string().as_str()))
            .unwrap();
        line.split_once(" :").unwrap().1.to_string()
    };
    let names = [base_of(mails[0].uid), base_of(mails[1].uid)];
    fs::rename(new.join(&names[0]), new.join(format!("{}:2,S", names[0]))).unwrap();
    fs::remove_file(new.join(&names[1])).unwrap();
    let mut body = String::new();
    mb.open_mail(mails[0].uid)
        .unwrap()
        .read_to_string(&mut body)
        .unwrap();
    assert_eq!(body, "Subject: 0\n\nbody 0\n");
    let err = mb.open_mail(mails[1].uid).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // A file that vanishes between readdir and stat (here: a dangling symlink) doesn't stop
    // the listing: it is treated as expunged.
    std::os::unix::fs::symlink("/nonexistent/target", new.join("1700000001.M1P1.h")).unwrap();
    mb.sync().unwrap();
    let uids: Vec<Uid> = mb.mails().unwrap().into_iter().map(|m| m.uid).collect();
    assert_eq!(uids, [mails[0].uid]);
    assert!(mb.mails().unwrap()[0].flags.contains(Flags::SEEN));
}

#[test]
fn missing_cur_is_recreated_as_dovecot_does() {
    let (home, store) = store_with_messages(1);
    let dir = box_dir(home.path());
    fs::remove_dir(dir.join("cur")).unwrap();
    fs::remove_dir(dir.join("tmp")).unwrap();
    let mut mb = store.open_mailbox("Box").unwrap();
    assert_eq!(mb.mails().unwrap().len(), 1);
    assert!(dir.join("cur").is_dir() && dir.join("tmp").is_dir());
    // LAYOUT=fs: a directory without cur/ is a \NoSelect directory, not a mailbox.
    let store = open_store("maildir:~/Fs:LAYOUT=fs", home.path(), None);
    store.create_mailbox("A", None).unwrap();
    fs::remove_dir_all(home.path().join("Fs/A/cur")).unwrap();
    let err = store.open_mailbox("A").err().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let info = listed(&store, "A");
    assert!(info.attrs.noselect);
    // A missing mailbox directory is NotFound, naming the mailbox.
    let err = store.open_mailbox("Nope").err().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("Nope"));
}

#[test]
fn wrong_size_field_is_trusted_but_bytes_are_real() {
    let (home, store) = store_with_messages(0);
    let cur = box_dir(home.path()).join("cur");
    fs::write(cur.join("1700000000.M1P1.host,S=999:2,S"), b"short\n").unwrap();
    let mut mb = store.open_mailbox("Box").unwrap();
    let r = mb.mails().unwrap().remove(0);
    assert_eq!(r.physical_size, 999, "size.physical as Dovecot reports it");
    assert_eq!(r.virtual_size, None);
    let mut body = Vec::new();
    mb.open_mail(r.uid).unwrap().read_to_end(&mut body).unwrap();
    assert_eq!(body, b"short\n");
    assert_eq!(mb.virtual_size(r.uid).unwrap(), 7);
    assert_eq!(mb.status().unwrap().vsize, 7);
}

#[test]
fn hostile_names_are_refused_and_nothing_is_written_outside() {
    for (spec, sep) in [
        ("maildir:~/store/Maildir", None),
        ("maildir:~/store/Maildir:LAYOUT=fs", None),
        ("maildir:~/store/Maildir", Some('/')),
    ] {
        let home = tempfile::tempdir().unwrap();
        let store = open_store(spec, home.path(), sep);
        store.create_mailbox("Seed", None).unwrap();
        let before = tree(home.path());
        for name in [
            "../evil",
            "../../evil",
            "a/../../x",
            "/abs",
            "~evil",
            "~",
            "nul\0x",
            "a\0",
            "tab\tx",
            "..",
            ".",
            "a/",
            "",
        ] {
            let err = store
                .create_mailbox(name, None)
                .err()
                .unwrap_or_else(|| panic!("{spec}: create {name:?} succeeded"));
            assert_eq!(err.kind(), ErrorKind::Params, "{spec}: {name:?}: {err}");
            assert!(store.rename_mailbox("Seed", name).is_err(), "{name:?}");
            assert!(store.open_mailbox(name).is_err(), "{name:?}");
            assert!(store.delete_mailbox(name).is_err(), "{name:?}");
            // Dovecot refuses control characters only when creating: subscribing or
            // opening such a name is allowed (and finds nothing).
            if !name.contains('\t') {
                assert!(store.set_subscribed(name, true).is_err(), "{name:?}");
            }
        }
        assert_eq!(tree(home.path()), before, "{spec}: nothing changed");
        assert!(!home.path().join("evil").exists());
    }
}

#[test]
fn corrupt_keywords_file_keeps_good_lines() {
    let (home, store) = store_with_messages(0);
    let dir = box_dir(home.path());
    fs::write(
        dir.join("dovecot-keywords"),
        b"0 Work\nnot a line\n99 Huge\n1 \nx Bad\n3 work\n2 Later\n\xff\xfe\n",
    )
    .unwrap();
    fs::write(dir.join("cur/1700000000.M1P1.h:2,abcd"), b"x\n").unwrap();
    let mut mb = store.open_mailbox("Box").unwrap();
    let r = mb.mails().unwrap().remove(0);
    let words: Vec<String> = r.keywords.iter().map(|k| k.to_string()).collect();
    // a=Work, c=Later; b and d have no (valid) entry: Dovecot names them unknown-<n>.
    assert_eq!(words, ["Work", "unknown-1", "Later", "unknown-3"]);
    // A new keyword gets a free letter, never one a file already uses.
    let mut tx = mb.begin().unwrap();
    tx.update_flags(r.uid, &add(Flags::EMPTY, &["Fresh"]))
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(only_file(&dir.join("cur")), "1700000000.M1P1.h:2,abcde");
    let kw = fs::read_to_string(dir.join("dovecot-keywords")).unwrap();
    assert_eq!(kw, "0 Work\n1 unknown-1\n2 Later\n3 unknown-3\n4 Fresh\n");
}

#[test]
fn a_27th_keyword_is_refused_without_changing_anything() {
    let (home, store) = store_with_messages(1);
    let mut mb = store.open_mailbox("Box").unwrap();
    let uid = mb.mails().unwrap()[0].uid;
    let words: Vec<String> = (0..26).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut tx = mb.begin().unwrap();
    tx.update_flags(uid, &add(Flags::EMPTY, &refs)).unwrap();
    tx.commit().unwrap();
    let dir = box_dir(home.path());
    let before = tree(&dir);
    let mut tx = mb.begin().unwrap();
    tx.update_flags(uid, &add(Flags::SEEN, &["one-too-many"]))
        .unwrap();
    let err = tx.commit().err().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotPossible);
    assert!(err.to_string().contains("26"), "{err}");
    assert_eq!(tree(&dir), before);
    // the handle still lists the message (its view is read again after the failure)
    let mails = mb.mails().unwrap();
    assert_eq!((mails.len(), mails[0].uid), (1, uid));
    mb.sync().unwrap();
    assert!(!mb.mails().unwrap()[0].flags.contains(Flags::SEEN));
    assert_eq!(tree(&dir), before);
}

#[test]
fn invalid_mutf7_directory_names_are_listed_raw_or_skipped() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    store.create_mailbox("Good", None).unwrap();
    let root = home.path().join("Maildir");
    // Not valid modified UTF-7 but ASCII: listed as it is (mailbox_list_default_get_vname_part).
    fs::create_dir(root.join(".a&b")).unwrap();
    fs::create_dir(root.join(".&AGEAYgBj-")).unwrap();
    // Not UTF-8 at all: skipped with a warning (Dovecot renames it; we don't write on list).
    fs::create_dir(root.join(std::ffi::OsStr::from_bytes(b".bad\xff"))).unwrap();
    let names = common::store_names(&store);
    assert_eq!(names, ["&AGEAYgBj-", "Good", "INBOX", "a&b"]);
    assert!(root.join(std::ffi::OsStr::from_bytes(b".bad\xff")).exists());
}
