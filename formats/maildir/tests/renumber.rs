//! A transaction that saves the very bytes of a message it expunges, under that message's
//! GUID (the sync engine moving a message to a new UID), gives the message its new UID in
//! the uidlist: the file stays, nothing is copied, and the move is one atomic uidlist
//! rewrite (a copy + unlink killed in between left the message twice). Different bytes
//! under the same GUID are a real save: a new file, and the old one unlinked.

mod common;

use std::fs;
use std::io::Read;

use common::open_store;
use mailstore::{Flags, Keyword, NewMail, Store, Uid};

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = ["cur", "new"]
        .iter()
        .flat_map(|sub| fs::read_dir(dir.join(sub)).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn body_of(mb: &mut Box<dyn mailstore::Mailbox>, uid: u32) -> Vec<u8> {
    let mut v = Vec::new();
    mb.open_mail(Uid(uid)).unwrap().read_to_end(&mut v).unwrap();
    v
}

#[test]
fn saving_an_expunged_messages_bytes_under_its_guid_moves_it_to_the_new_uid() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let dir = home.path().join("Maildir");
    let mut mb = store.open_mailbox("INBOX").unwrap();
    let mut tx = mb.begin().unwrap();
    for i in 0..3 {
        tx.save(
            NewMail::default(),
            &mut format!("Subject: {i}\n\nbody {i}\n").as_bytes(),
        )
        .unwrap();
    }
    tx.commit().unwrap();
    mb.sync().unwrap();
    let before = mb.mails().unwrap();
    let moving = before[1].clone();
    let files_before = files(&dir);
    let bytes = body_of(&mut mb, moving.uid.0);

    let mut tx = mb.begin().unwrap();
    tx.save(
        NewMail {
            guid: Some(moving.guid.clone()),
            uid: Some(Uid(10)),
            flags: Flags::FLAGGED,
            keywords: vec![Keyword::from("$Moved")],
            ..Default::default()
        },
        &mut &bytes[..],
    )
    .unwrap();
    tx.expunge(moving.uid).unwrap();
    let result = tx.commit().unwrap();
    assert_eq!(result.saved, [Uid(10)]);
    mb.sync().unwrap();
    let after = mb.mails().unwrap();
    let uids: Vec<u32> = after.iter().map(|m| m.uid.0).collect();
    assert_eq!(uids, [1, 3, 10]);
    let moved = after.last().unwrap();
    assert_eq!(
        moved.guid, moving.guid,
        "the GUID stays (the file's base name)"
    );
    assert_eq!(moved.flags.0 & !Flags::RECENT.0, Flags::FLAGGED.0);
    assert_eq!(moved.keywords, [Keyword::from("$Moved")]);
    assert_eq!(body_of(&mut mb, 10), bytes);
    // The same file, renamed only for its flags; no other file appeared or went.
    let files_after = files(&dir);
    assert_eq!(files_after.len(), files_before.len());
    let base = |f: &String| f.split(':').next().unwrap().to_string();
    assert_eq!(
        files_after.iter().map(base).collect::<Vec<_>>(),
        files_before.iter().map(base).collect::<Vec<_>>()
    );
    // A fresh handle (the uidlist and index on disk) agrees.
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut again = store.open_mailbox("INBOX").unwrap();
    assert_eq!(again.mails().unwrap(), after);
}

#[test]
fn different_bytes_under_the_guid_of_an_expunged_message_are_a_real_save() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let dir = home.path().join("Maildir");
    let mut mb = store.open_mailbox("INBOX").unwrap();
    let mut tx = mb.begin().unwrap();
    tx.save(NewMail::default(), &mut &b"Subject: a\n\noriginal\n"[..])
        .unwrap();
    tx.commit().unwrap();
    mb.sync().unwrap();
    let old = mb.mails().unwrap()[0].clone();
    let files_before = files(&dir);
    let mut tx = mb.begin().unwrap();
    tx.save(
        NewMail {
            guid: Some(old.guid.clone()),
            ..Default::default()
        },
        &mut &b"Subject: a\n\nother bytes\n"[..],
    )
    .unwrap();
    tx.expunge(old.uid).unwrap();
    let saved = tx.commit().unwrap().saved;
    mb.sync().unwrap();
    let after = mb.mails().unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].uid, saved[0]);
    assert_eq!(after[0].guid, old.guid, "the GUID given to save is kept");
    assert_eq!(body_of(&mut mb, saved[0].0), b"Subject: a\n\nother bytes\n");
    assert_ne!(
        files(&dir),
        files_before,
        "a new file, the old one unlinked"
    );
}
