//! The Maildir backend keeps `dovecot.index` + `dovecot.index.log` as Dovecot's maildir
//! sync does (FORMAT.md §6): every change is an EXTERNAL transaction with a new modseq,
//! modseqs and \Recent come from the replayed index, `changes_since` from the log.

mod common;

use std::fs;
use std::path::Path;

use common::open_store;
use mailstore::{
    Changes, FlagOp, FlagUpdate, Flags, Keyword, Mailbox, ModSeq, NewMail, Store, Uid,
};
use mailsync_index::format::index::hdr_off;
use mailsync_index::format::log::RecordBody;
use mailsync_index::{IndexWriter, View};

fn save(mb: &mut dyn Mailbox, mail: NewMail, body: &[u8]) -> Uid {
    let mut tx = mb.begin().unwrap();
    tx.save(mail, &mut &body[..]).unwrap();
    tx.commit().unwrap().saved[0]
}

fn update(mb: &mut dyn Mailbox, uid: u32, op: FlagOp, flags: Flags, keywords: &[&str]) {
    let mut tx = mb.begin().unwrap();
    tx.update_flags(
        Uid(uid),
        &FlagUpdate {
            op,
            flags,
            keywords: keywords.iter().map(|k| Keyword::from(*k)).collect(),
        },
    )
    .unwrap();
    tx.commit().unwrap();
}

fn expunge(mb: &mut dyn Mailbox, uid: u32) {
    let mut tx = mb.begin().unwrap();
    tx.expunge(Uid(uid)).unwrap();
    tx.commit().unwrap();
}

fn modseqs(mb: &mut dyn Mailbox) -> Vec<(u32, u64)> {
    mb.mails()
        .unwrap()
        .iter()
        .map(|m| (m.uid.0, m.modseq.0))
        .collect()
}

fn highest(mb: &mut dyn Mailbox) -> u64 {
    mb.status().unwrap().highest_modseq
}

fn index_view(dir: &Path) -> View {
    View::open(dir, "dovecot.index").unwrap()
}

/// The records of the head log that change messages (not a `maildir` header update: a
/// reading made once the directories settled records that they were read; nor a base
/// header update: a handle's close moves the log's tail offset to its end).
fn message_changes_logged(dir: &Path) -> usize {
    log_records(dir)
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "boundary" | "ext-intro" | "ext-hdr" | "header-update"
            )
        })
        .count()
}

fn log_records(dir: &Path) -> Vec<(String, bool)> {
    let v = index_view(dir);
    v.logs()
        .last()
        .unwrap()
        .records
        .iter()
        .map(|r| {
            let name = match &r.body {
                RecordBody::Append(_) => "append",
                RecordBody::FlagUpdate(_) => "flag-update",
                RecordBody::KeywordUpdate(_) => "keyword-update",
                RecordBody::ExpungeGuid(_) => "expunge-guid",
                RecordBody::HeaderUpdate(_) => "header-update",
                RecordBody::ExtIntro(_) => "ext-intro",
                RecordBody::ExtHdrUpdate(_) => "ext-hdr",
                RecordBody::Boundary(_) => "boundary",
                _ => "other",
            };
            (name.to_string(), r.is_external())
        })
        .collect()
}

#[test]
fn every_change_is_an_external_transaction_with_a_new_modseq() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let dir = home.path().join("Maildir");
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let h0 = highest(&mut *inbox);
    save(&mut *inbox, NewMail::default(), b"a\n");
    save(
        &mut *inbox,
        NewMail {
            flags: Flags::SEEN,
            keywords: vec![Keyword::from("Work")],
            ..NewMail::default()
        },
        b"b\n",
    );
    let h1 = highest(&mut *inbox);
    assert!(h1 > h0, "{h0} -> {h1}");
    let v = index_view(&dir);
    assert_eq!(v.uid_validity(), inbox.status().unwrap().uid_validity);
    assert_eq!(v.next_uid(), 3);
    let m2 = v.message(2).unwrap();
    assert_eq!(m2.system_flags(), Flags::SEEN);
    assert_eq!(m2.keywords(), vec![&b"Work"[..]]);
    // Both messages carry the modseq of the transaction that saved them.
    let ms = modseqs(&mut *inbox);
    assert!(ms[0].1 < ms[1].1 && ms[1].1 == h1, "{ms:?}");

    update(&mut *inbox, 1, FlagOp::Add, Flags::FLAGGED, &["Work"]);
    let h2 = highest(&mut *inbox);
    assert!(h2 > h1);
    let ms2 = modseqs(&mut *inbox);
    assert_eq!(ms2[0].1, h2, "the changed message gets the new modseq");
    assert_eq!(ms2[1], ms[1], "the other one keeps its modseq");

    expunge(&mut *inbox, 2);
    let h3 = highest(&mut *inbox);
    assert!(h3 > h2);
    let v = index_view(&dir);
    assert_eq!(v.messages().map(|m| m.uid()).collect::<Vec<_>>(), vec![1]);
    assert_eq!(v.highest_modseq(), h3);

    // What was written: only EXTERNAL records (the files already changed), the kinds
    // Dovecot's maildir sync writes.
    let recs = log_records(&dir);
    assert!(recs.iter().all(|(_, ext)| *ext), "{recs:?}");
    for kind in ["append", "flag-update", "keyword-update", "expunge-guid"] {
        assert!(recs.iter().any(|(k, _)| k == kind), "no {kind}: {recs:?}");
    }
}

#[test]
fn changes_since_lists_changed_and_expunged_uids() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    for body in [b"1\n", b"2\n", b"3\n"] {
        save(&mut *inbox, NewMail::default(), body);
    }
    let m0 = ModSeq(highest(&mut *inbox));
    update(&mut *inbox, 2, FlagOp::Add, Flags::SEEN, &[]);
    expunge(&mut *inbox, 3);
    save(&mut *inbox, NewMail::default(), b"4\n");
    let now = ModSeq(highest(&mut *inbox));
    match inbox.changes_since(m0).unwrap() {
        Changes::Known {
            changed,
            expunged,
            highest_modseq,
        } => {
            assert_eq!(changed, vec![Uid(2), Uid(4)]);
            assert_eq!(
                expunged.iter().map(|e| e.0).collect::<Vec<_>>(),
                vec![Uid(3)]
            );
            assert_eq!(highest_modseq, now);
        }
        Changes::Unknown => panic!("the log covers {m0}"),
    }
    match inbox.changes_since(now).unwrap() {
        Changes::Known {
            changed, expunged, ..
        } => assert!(changed.is_empty() && expunged.is_empty()),
        Changes::Unknown => panic!("the log covers {now}"),
    }
    assert_eq!(inbox.changes_since(ModSeq(0)).unwrap(), Changes::Unknown);
}

#[test]
fn a_rename_by_another_mua_is_logged_at_the_next_sync() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let dir = home.path().join("Maildir");
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    save(&mut *inbox, NewMail::default(), b"a\n");
    save(&mut *inbox, NewMail::default(), b"b\n");
    let before = modseqs(&mut *inbox);
    let h = highest(&mut *inbox);
    // An MUA without Dovecot marks message 1 seen (renaming it into cur/) and deletes 2.
    // the files of UIDs 1 and 2, as the uidlist names them (a sort of the names can put
    // 2 first: the microseconds in them have no leading zeros)
    let list = fs::read_to_string(dir.join("dovecot-uidlist")).unwrap();
    let base_of = |uid: &str| -> String {
        let line = list
            .lines()
            .find(|l| l.split(' ').next() == Some(uid))
            .unwrap();
        line.split_once(" :").unwrap().1.to_string()
    };
    let new = [base_of("1"), base_of("2")];
    for name in &new {
        assert!(dir.join("new").join(name).exists(), "{name}");
    }
    fs::rename(
        dir.join("new").join(&new[0]),
        dir.join("cur").join(format!("{}:2,S", new[0])),
    )
    .unwrap();
    fs::remove_file(dir.join("new").join(&new[1])).unwrap();
    inbox.sync().unwrap();
    let mails = inbox.mails().unwrap();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].flags.contains(Flags::SEEN));
    assert!(mails[0].modseq.0 > before[0].1);
    assert!(highest(&mut *inbox) > h);
    let v = index_view(&dir);
    assert_eq!(v.message(1).unwrap().system_flags(), Flags::SEEN);
    assert!(v.message(2).is_none(), "expunged in the index too");
    // Nothing left to write: another sync changes no message.
    let n = message_changes_logged(&dir);
    inbox.sync().unwrap();
    drop(inbox);
    store.open_mailbox("INBOX").unwrap();
    assert_eq!(message_changes_logged(&dir), n);
}

#[test]
fn recent_comes_from_first_recent_uid() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let dir = home.path().join("Maildir");
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    save(&mut *inbox, NewMail::default(), b"a\n");
    save(&mut *inbox, NewMail::default(), b"b\n");
    assert_eq!(inbox.status().unwrap().recent, 2);
    // What an IMAP SELECT leaves behind (mail-index-sync.c, DROP_RECENT).
    let w = IndexWriter::open(&dir, "dovecot.index");
    let mut t = w.begin();
    t.header_update(hdr_off::FIRST_RECENT_UID as u16, &3u32.to_le_bytes());
    t.commit().unwrap();
    inbox.sync().unwrap();
    assert_eq!(inbox.status().unwrap().recent, 0);
    assert!(inbox
        .mails()
        .unwrap()
        .iter()
        .all(|m| !m.flags.contains(Flags::RECENT)));
    save(&mut *inbox, NewMail::default(), b"c\n");
    let recent: Vec<u32> = inbox
        .mails()
        .unwrap()
        .iter()
        .filter(|m| m.flags.contains(Flags::RECENT))
        .map(|m| m.uid.0)
        .collect();
    assert_eq!(recent, vec![3]);
    // A save that asks for its UID without \Recent (dsync) moves first_recent_uid past it.
    save(
        &mut *inbox,
        NewMail {
            uid: Some(Uid(10)),
            ..NewMail::default()
        },
        b"d\n",
    );
    assert_eq!(index_view(&dir).header().first_recent_uid, 11);
    assert_eq!(inbox.status().unwrap().recent, 0);
}

#[test]
fn a_new_index_marks_listed_cur_files_not_recent_as_dovecot_does() {
    // The layout of FORMAT.md §6.3's observation: cur/1 and cur/9 listed, new/10 not.
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("Maildir");
    for d in ["cur", "new", "tmp"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::write(dir.join("cur/100.M1P1.h:2,FRa"), b"one\n").unwrap();
    fs::write(dir.join("cur/200.M1P1.h:2,S"), b"nine\n").unwrap();
    fs::write(dir.join("new/300.M1P1.h"), b"ten\n").unwrap();
    fs::write(dir.join("dovecot-keywords"), b"0 Work\n").unwrap();
    fs::write(
        dir.join("dovecot-uidlist"),
        b"3 V1795984733 N10 G9760a6295d8d0c6b4255000083ecc375\n1 :100.M1P1.h\n9 :200.M1P1.h\n",
    )
    .unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let mails = inbox.mails().unwrap();
    let recent: Vec<u32> = mails
        .iter()
        .filter(|m| m.flags.contains(Flags::RECENT))
        .map(|m| m.uid.0)
        .collect();
    assert_eq!(recent, vec![10]);
    let v = index_view(&dir);
    assert_eq!(v.uid_validity(), 1795984733);
    assert_eq!(v.header().first_recent_uid, 10);
    assert_eq!(v.message(1).unwrap().keywords(), vec![&b"Work"[..]]);
    // doveadm showed highestmodseq 3 here: APPEND (2), KEYWORD_UPDATE Work (3). mailsync
    // also tracks per-message modseqs from the start (the `modseq` extension), so the
    // keyword's message has 3 and the others their APPEND's 2.
    assert_eq!(inbox.status().unwrap().highest_modseq, 3);
    let ms: Vec<(u32, u64)> = mails.iter().map(|m| (m.uid.0, m.modseq.0)).collect();
    assert_eq!(ms, vec![(1, 3), (9, 2), (10, 2)]);
}

#[test]
fn a_lost_uidlist_takes_uidvalidity_and_next_uid_from_the_index() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let dir = home.path().join("Maildir");
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    for body in [b"1\n", b"2\n", b"3\n"] {
        save(&mut *inbox, NewMail::default(), body);
    }
    let validity = inbox.status().unwrap().uid_validity;
    drop(inbox);
    fs::remove_file(dir.join("dovecot-uidlist")).unwrap();
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let st = inbox.status().unwrap();
    assert_eq!(st.uid_validity, validity, "the index's UIDVALIDITY is kept");
    let uids: Vec<u32> = inbox.mails().unwrap().iter().map(|m| m.uid.0).collect();
    assert_eq!(
        uids,
        vec![4, 5, 6],
        "UIDs continue after the index's next_uid"
    );
    let v = index_view(&dir);
    assert_eq!(v.uid_validity(), validity);
    assert_eq!(
        v.messages().map(|m| m.uid()).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
}

#[test]
fn index_memory_writes_no_index_and_answers_as_dovecots_in_memory_index() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir:INDEX=MEMORY", home.path(), None);
    let dir = home.path().join("Maildir");
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    save(&mut *inbox, NewMail::default(), b"1\n");
    save(
        &mut *inbox,
        NewMail {
            keywords: vec![Keyword::from("k")],
            ..NewMail::default()
        },
        b"2\n",
    );
    assert!(!dir.join("dovecot.index.log").exists());
    assert!(!dir.join("dovecot.index").exists());
    drop(inbox);
    // A fresh in-memory index: one APPEND record (2) and one keyword record (3).
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    assert_eq!(inbox.status().unwrap().highest_modseq, 3);
    assert_eq!(inbox.changes_since(ModSeq(1)).unwrap(), Changes::Unknown);
}

#[test]
fn a_change_dovecot_logged_but_did_not_apply_yet_is_neither_reverted_nor_hidden() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let dir = home.path().join("Maildir");
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    save(&mut *inbox, NewMail::default(), b"a\n");
    save(&mut *inbox, NewMail::default(), b"b\n");
    // What `doveadm flags add \Seen` logs before its maildir sync renames the file: a
    // request (not EXTERNAL) after the tail offset.
    let w = IndexWriter::open(&dir, "dovecot.index");
    let mut t = w.begin();
    t.flags(1, 1, Flags::SEEN.0, 0);
    t.keywords(true, b"Later", &[1]);
    t.commit().unwrap();
    let n = message_changes_logged(&dir);
    inbox.sync().unwrap();
    let m = &inbox.mails().unwrap()[0];
    assert!(
        m.flags.contains(Flags::SEEN),
        "reported as the index has it"
    );
    assert_eq!(m.keywords, vec![Keyword::from("Later")]);
    assert_eq!(inbox.status().unwrap().unseen, 1);
    // Not reverted: no EXTERNAL update was written, the index still says \Seen, and the
    // file is left for Dovecot's sync to rename.
    assert_eq!(message_changes_logged(&dir), n);
    assert_eq!(
        index_view(&dir).message(1).unwrap().system_flags(),
        Flags::SEEN
    );
    assert!(fs::read_dir(dir.join("cur")).unwrap().next().is_none());
}

#[test]
fn a_27th_keyword_dovecot_keeps_in_the_index_only_survives() {
    let home = tempfile::tempdir().unwrap();
    let store = open_store("maildir:~/Maildir", home.path(), None);
    let dir = home.path().join("Maildir");
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let all: Vec<String> = (0..26).map(|i| format!("k{i:02}")).collect();
    save(
        &mut *inbox,
        NewMail {
            keywords: all.iter().map(|k| Keyword::from(k.as_str())).collect(),
            ..NewMail::default()
        },
        b"a\n",
    );
    // Dovecot's sync of a 27th keyword: no letter is left, so it lives in the index only.
    let w = IndexWriter::open(&dir, "dovecot.index");
    let mut t = w.begin().external(true);
    t.keywords(true, b"extra", &[1]);
    t.commit().unwrap();
    let n = message_changes_logged(&dir);
    inbox.sync().unwrap();
    assert_eq!(
        message_changes_logged(&dir),
        n,
        "the index-only keyword was removed"
    );
    let m = &inbox.mails().unwrap()[0];
    assert_eq!(m.keywords.len(), 27);
    assert!(m.keywords.contains(&Keyword::from("extra")));
    // A flag change by mailsync keeps it too.
    update(&mut *inbox, 1, FlagOp::Add, Flags::SEEN, &[]);
    let v = index_view(&dir);
    assert!(v.message(1).unwrap().keywords().contains(&&b"extra"[..]));
    assert_eq!(v.message(1).unwrap().system_flags(), Flags::SEEN);
}
