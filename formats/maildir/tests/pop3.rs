//! POP3 UIDL and order kept in `dovecot-uidlist` record fields `P` and `O`
//! (maildir-uidlist.h, maildir-save.c maildir_save_sync_uidlist, maildir-mail.c
//! MAIL_FETCH_UIDL_BACKEND / MAIL_FETCH_POP3_ORDER).

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use common::open_store;
use mailstore::{Error, Guid, Mailbox, NewMail, Pop3Info, Store, Uid};

const BASE1: &str = "1700000000.M100P42.dovecothost";
const BASE2: &str = "1700000001.M200P42.dovecothost";
const MSG_GUID: &str = "84edc1f91e8dc99649d2d27167a582c6";
/// The two records as Dovecot writes them: an empty `P` (the UIDL is the base filename),
/// then `O`, then `G` (maildir_save_sync_uidlist writes G, P, O; a POP3 server's
/// maildir_update_pop3_uidl writes the empty P later, so fields come in any order).
fn dovecot_records() -> String {
    format!("1 P O2 G{MSG_GUID} :{BASE1}\n2 PUID-7 O1 :{BASE2}\n")
}

/// INBOX of `maildir:~/Maildir` with two messages and the uidlist Dovecot would have
/// (`header` is the uidlist's first line).
fn dovecot_inbox(header: &str) -> (tempfile::TempDir, PathBuf) {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    fs::write(
        root.join("cur").join(format!("{BASE1}:2,S")),
        "Subject: one\n\n1\n",
    )
    .unwrap();
    fs::write(root.join("new").join(BASE2), "Subject: two\n\n2\n").unwrap();
    fs::write(
        root.join("dovecot-uidlist"),
        format!("{header}\n{}", dovecot_records()),
    )
    .unwrap();
    (home, root)
}

fn uidlist_text(root: &Path) -> String {
    fs::read_to_string(root.join("dovecot-uidlist")).unwrap()
}

fn pop3(uidl: &str, order: u32) -> Pop3Info {
    Pop3Info {
        uidl: uidl.as_bytes().to_vec(),
        order,
    }
}

fn save_one(mb: &mut dyn Mailbox, mail: NewMail, body: &[u8]) -> Uid {
    let mut tx = mb.begin().unwrap();
    tx.save(mail, &mut &body[..]).unwrap();
    let r = tx.commit().unwrap();
    assert_eq!(r.saved.len(), 1);
    r.saved[0]
}

#[test]
fn reads_p_and_o_as_dovecot_writes_them() {
    let (home, root) = dovecot_inbox("3 V1700000000 N3 G95dba02cff790c6b533c000083ecc375");
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut mb = store.open_mailbox("INBOX").unwrap();
    assert_eq!(
        mb.pop3_info(Uid(1)).unwrap(),
        pop3(BASE1, 2),
        "empty P = the base filename (without :2,S)"
    );
    assert_eq!(mb.pop3_info(Uid(2)).unwrap(), pop3("UID-7", 1));
    let mails = mb.mails().unwrap();
    assert_eq!(mails.len(), 2);
    assert_eq!(
        mails[0].guid,
        Guid::from_bytes(MSG_GUID),
        "G after P and O is read"
    );
    assert_eq!(mails[1].guid, Guid::from_bytes(BASE2));
    let err = mb.pop3_info(Uid(3)).unwrap_err();
    assert!(matches!(err, Error::MailNotFound(Uid(3))), "{err}");

    // A save appends its record; Dovecot's records stay as they were, byte for byte.
    let uid = save_one(&mut *mb, NewMail::default(), b"Subject: three\n\n3\n");
    assert_eq!(uid, Uid(3));
    assert_eq!(mb.pop3_info(uid).unwrap(), Pop3Info::default());
    let text = uidlist_text(&root);
    assert!(text.contains(&dovecot_records()), "{text}");
    let own = text.lines().last().unwrap();
    assert!(
        own.starts_with("3 ") && !own.contains(" P") && !own.contains(" O"),
        "no P or O without POP3 data: {own}"
    );
    drop(mb);
    let mut mb = open_store("maildir:~/Maildir", home.path(), None)
        .open_mailbox("INBOX")
        .unwrap();
    assert_eq!(mb.pop3_info(Uid(1)).unwrap(), pop3(BASE1, 2));
    assert_eq!(mb.pop3_info(Uid(2)).unwrap(), pop3("UID-7", 1));
}

#[test]
fn a_rewritten_uidlist_keeps_p_and_o() {
    // No mailbox GUID in the header: the uidlist is rewritten when the mailbox is opened.
    let (home, root) = dovecot_inbox("3 V1700000000 N3");
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut mb = store.open_mailbox("INBOX").unwrap();
    let text = uidlist_text(&root);
    assert!(text.lines().next().unwrap().contains(" G"), "{text}");
    assert!(text.ends_with(&dovecot_records()), "{text}");
    assert_eq!(mb.pop3_info(Uid(1)).unwrap(), pop3(BASE1, 2));
    assert_eq!(mb.pop3_info(Uid(2)).unwrap(), pop3("UID-7", 1));
}

#[test]
fn renumbering_keeps_the_record_and_takes_the_saves_pop3_state() {
    let (home, root) = dovecot_inbox("3 V1700000000 N3 G95dba02cff790c6b533c000083ecc375");
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut mb = store.open_mailbox("INBOX").unwrap();
    // What the sync engine does to move a message to a higher UID: save its bytes under its
    // GUID (with its POP3 state) at the new UID and expunge the old one, in one transaction.
    let move_to = |mb: &mut dyn Mailbox, old: Uid, new: Uid, state: Pop3Info| {
        let guid = mb.mails_of(&[old]).unwrap()[0].guid.clone();
        let mut body = Vec::new();
        mb.open_mail(old).unwrap().read_to_end(&mut body).unwrap();
        let mut tx = mb.begin().unwrap();
        tx.save(
            NewMail {
                guid: Some(guid),
                uid: Some(new),
                pop3: state,
                ..Default::default()
            },
            &mut &body[..],
        )
        .unwrap();
        tx.expunge(old).unwrap();
        assert_eq!(tx.commit().unwrap().saved, vec![new]);
    };
    // Same state: the record moves unchanged (the empty P stays empty).
    let same = mb.pop3_info(Uid(1)).unwrap();
    move_to(&mut *mb, Uid(1), Uid(10), same.clone());
    assert_eq!(mb.pop3_info(Uid(10)).unwrap(), same);
    let text = uidlist_text(&root);
    assert!(
        text.contains(&format!("\n10 P O2 G{MSG_GUID} :{BASE1}\n")),
        "{text}"
    );
    // Another state: the record says what the save says.
    move_to(&mut *mb, Uid(2), Uid(11), pop3("", 9));
    assert_eq!(mb.pop3_info(Uid(11)).unwrap(), pop3("", 9));
    let text = uidlist_text(&root);
    assert!(text.contains(&format!("\n11 O9 :{BASE2}\n")), "{text}");
    assert_eq!(mb.mails().unwrap().len(), 2);
}

#[test]
fn saved_uidl_and_order_are_p_and_o_fields() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    store.create_mailbox("Box", None).unwrap();
    let mut mb = store.open_mailbox("Box").unwrap();
    let uid = save_one(
        &mut *mb,
        NewMail {
            pop3: pop3("UID17-1300000000", 3),
            ..Default::default()
        },
        b"Subject: x\n\nx\n",
    );
    let text = uidlist_text(&home.path().join("Maildir/.Box"));
    let line = text.lines().last().unwrap();
    assert!(
        line.starts_with(&format!("{} PUID17-1300000000 O3 ", uid.0)),
        "{line}"
    );
    assert_eq!(mb.pop3_info(uid).unwrap(), pop3("UID17-1300000000", 3));
}

#[test]
fn a_uidl_that_cant_be_a_uidlist_field_is_dropped_and_the_message_kept() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    store.create_mailbox("Box", None).unwrap();
    let dir = home.path().join("Maildir/.Box");
    let mut mb = store.open_mailbox("Box").unwrap();
    let bad: [&[u8]; 4] = [b"has space", b"line\nbreak", b"tab\there", b"caf\xc3\xa9"];
    let mut uids = Vec::new();
    for (i, uidl) in bad.iter().enumerate() {
        let uid = save_one(
            &mut *mb,
            NewMail {
                pop3: Pop3Info {
                    uidl: uidl.to_vec(),
                    order: i as u32,
                },
                ..Default::default()
            },
            format!("Subject: {i}\n\n{i}\n").as_bytes(),
        );
        uids.push(uid);
    }
    for store in [store, open_store("maildir:~/Maildir", home.path(), None)] {
        let mut mb = store.open_mailbox("Box").unwrap();
        assert_eq!(mb.mails().unwrap().len(), bad.len(), "every message saved");
        for (i, uid) in uids.iter().enumerate() {
            // The order is kept, the UIDL is not.
            assert_eq!(mb.pop3_info(*uid).unwrap(), pop3("", i as u32));
            let mut body = String::new();
            mb.open_mail(*uid)
                .unwrap()
                .read_to_string(&mut body)
                .unwrap();
            assert_eq!(body, format!("Subject: {i}\n\n{i}\n"));
        }
    }
    let text = uidlist_text(&dir);
    assert!(!text.lines().any(|l| l.contains(" P")), "{text}");
    assert_eq!(text.lines().count(), 1 + bad.len(), "{text}");
}
