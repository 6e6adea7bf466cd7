//! A `u.N` left by a save killed between the link and the index commit: the rerun of the
//! same save (same UID asked, same message) takes that file instead of a new UID, which
//! would show the message twice after the next sync; a different message never replaces it.

use mailstore::{Guid, Location, NewMail, Store, StoreOptions, Uid};
use mailsync_dbox::DboxStore;

fn store(dir: &std::path::Path) -> DboxStore {
    let loc = Location::parse("sdbox:~/sdbox", Some(dir)).unwrap();
    DboxStore::open(&loc, &StoreOptions::default()).unwrap()
}

fn mail(guid: &str) -> NewMail {
    NewMail {
        guid: Some(Guid::from_bytes(guid.as_bytes())),
        uid: Some(Uid(1)),
        received_date: Some(1_700_000_000),
        saved_date: Some(1_700_000_100),
        ..Default::default()
    }
}

fn mail_dir(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("sdbox/mailboxes/Box/dbox-Mails")
}

/// A store whose Box holds, outside its index, the `u.1` another store wrote for `guid`.
fn with_orphan(guid: &str, body: &[u8]) -> tempfile::TempDir {
    let first = tempfile::tempdir().unwrap();
    let s = store(first.path());
    s.create_mailbox("Box", None).unwrap();
    let mut mb = s.open_mailbox("Box").unwrap();
    let mut t = mb.begin().unwrap();
    t.save(mail(guid), &mut &body[..]).unwrap();
    t.commit().unwrap();
    let target = tempfile::tempdir().unwrap();
    let s = store(target.path());
    s.create_mailbox("Box", None).unwrap();
    std::fs::copy(
        mail_dir(first.path()).join("u.1"),
        mail_dir(target.path()).join("u.1"),
    )
    .unwrap();
    target
}

#[test]
fn the_same_save_again_takes_the_orphan() {
    let body = b"Subject: once\n\nonly once\n";
    let dir = with_orphan("g-1", body);
    let s = store(dir.path());
    let mut mb = s.open_mailbox("Box").unwrap();
    assert!(
        mb.mails().unwrap().is_empty(),
        "the orphan is not in the index"
    );
    let mut t = mb.begin().unwrap();
    t.save(mail("g-1"), &mut &body[..]).unwrap();
    assert_eq!(t.commit().unwrap().saved, [Uid(1)]);
    let mails = mb.mails().unwrap();
    assert_eq!(mails.len(), 1);
    assert!(!mail_dir(dir.path()).join("u.2").exists());
    let temps = std::fs::read_dir(mail_dir(dir.path()))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".temp")
        })
        .count();
    assert_eq!(temps, 0);
}

#[test]
fn a_different_message_never_takes_the_orphans_place() {
    let dir = with_orphan("g-1", b"Subject: orphan\n\nkept\n");
    let orphan = std::fs::read(mail_dir(dir.path()).join("u.1")).unwrap();
    let s = store(dir.path());
    let mut mb = s.open_mailbox("Box").unwrap();
    let mut t = mb.begin().unwrap();
    t.save(mail("g-2"), &mut &b"Subject: other\n\nnew\n"[..])
        .unwrap();
    assert_eq!(t.commit().unwrap().saved, [Uid(2)]);
    assert_eq!(
        std::fs::read(mail_dir(dir.path()).join("u.1")).unwrap(),
        orphan
    );
}

/// The opposite leftover: an index record whose `u.N` is gone (deleted by hand, or by an
/// earlier mailsync's expunge, which unlinked before its log write, killed in between). The next open expunges the
/// record, as Dovecot's index rebuild does, so the counters stop claiming a message that
/// can't be read; the other messages are untouched.
#[test]
fn a_record_whose_file_a_killed_expunge_unlinked_is_expunged_on_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_mailbox("Box", None).unwrap();
    let mut mb = s.open_mailbox("Box").unwrap();
    let mut t = mb.begin().unwrap();
    for i in 1..=3u32 {
        let mut m = mail(&format!("g-{i}"));
        m.uid = Some(Uid(i));
        t.save(m, &mut format!("Subject: {i}\n\nbody {i}\n").as_bytes())
            .unwrap();
    }
    t.commit().unwrap();
    drop(mb);
    std::fs::remove_file(mail_dir(dir.path()).join("u.2")).unwrap();

    let mut mb = s.open_mailbox("Box").unwrap();
    let st = mb.counters().unwrap();
    assert_eq!(st.messages, 2);
    let uids: Vec<u32> = mb.mails().unwrap().iter().map(|m| m.uid.0).collect();
    assert_eq!(uids, [1, 3]);
    // written to the index: a reader that doesn't look at the files agrees
    let view = mailsync_index::View::open(&mail_dir(dir.path()), "dovecot.index").unwrap();
    let indexed: Vec<u32> = view.messages().map(|m| m.uid()).collect();
    assert_eq!(indexed, [1, 3]);
    assert_eq!(st.uid_next, 4, "the UID is not given again");
}

fn save_numbered(mb: &mut Box<dyn mailstore::Mailbox>, uids: std::ops::RangeInclusive<u32>) {
    let mut t = mb.begin().unwrap();
    for i in uids {
        let mut m = mail(&format!("g-{i}"));
        m.uid = Some(Uid(i));
        t.save(m, &mut format!("Subject: {i}\n\nbody {i}\n").as_bytes())
            .unwrap();
    }
    t.commit().unwrap();
}

/// A handle reads a `u.N` only when its message is asked about: the files a commit has
/// just linked are not read back (a backup's destination reads none of what it wrote),
/// and a broken file is reported when its message is read, naming it.
#[test]
fn saved_files_are_not_read_back_and_a_file_is_read_when_asked_about() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_mailbox("Box", None).unwrap();
    let mut mb = s.open_mailbox("Box").unwrap();
    save_numbered(&mut mb, 1..=3);
    // broken behind the handle's back, after its commit
    std::fs::write(mail_dir(dir.path()).join("u.1"), b"garbage").unwrap();

    let mut body = String::new();
    std::io::Read::read_to_string(&mut mb.open_mail(Uid(3)).unwrap(), &mut body).unwrap();
    assert_eq!(body, "Subject: 3\n\nbody 3\n");
    let e = mb.mails().unwrap_err();
    assert!(e.to_string().contains("u.1"), "{e}");
    // a fresh handle opens all the same: one directory listing, no file read
    let mut again = s.open_mailbox("Box").unwrap();
    assert_eq!(again.counters().unwrap().messages, 3);
    assert!(again.mails().is_err());
}

/// A message another handle added after this one opened, whose file is gone, is found at
/// this handle's next sync by a stat and expunged from the index.
#[test]
fn a_lost_file_of_a_message_added_by_another_handle_is_found_at_sync() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_mailbox("Box", None).unwrap();
    let mut mb = s.open_mailbox("Box").unwrap();
    save_numbered(&mut mb, 1..=2);
    let mut other = s.open_mailbox("Box").unwrap();
    save_numbered(&mut other, 3..=4);
    drop(other);
    std::fs::remove_file(mail_dir(dir.path()).join("u.3")).unwrap();

    mb.sync().unwrap();
    let uids: Vec<u32> = mb.mails().unwrap().iter().map(|m| m.uid.0).collect();
    assert_eq!(uids, [1, 2, 4]);
    let view = mailsync_index::View::open(&mail_dir(dir.path()), "dovecot.index").unwrap();
    let indexed: Vec<u32> = view.messages().map(|m| m.uid()).collect();
    assert_eq!(
        indexed,
        [1, 2, 4],
        "the lost record is expunged from the index"
    );
}
