//! Modseqs, HIGHESTMODSEQ and `changes_since` come from Dovecot's index of the mbox
//! (`.imap/<box>/dovecot.index*`), which every mailsync change is written to; flags Dovecot
//! changed only in its index (DIRTY records, mbox_lazy_writes) are written to the file.

use mailstore::{
    Changes, FlagOp, FlagUpdate, Flags, Location, ModSeq, NewMail, Store, StoreOptions, Uid,
};
use mailsync_index::format::index::rec_flag;
use mailsync_index::{IndexWriter, View};
use mailsync_mbox::MboxStore;

fn store(dir: &std::path::Path) -> MboxStore {
    let loc = Location::parse("mbox:~/mail:INBOX=~/mail/INBOX", Some(dir)).unwrap();
    MboxStore::open(&loc, &StoreOptions::default()).unwrap()
}

fn index_dir(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("mail/.imap/INBOX")
}

fn save3(mb: &mut dyn mailstore::Mailbox) {
    let mut tx = mb.begin().unwrap();
    for i in 0..3 {
        let body = format!("Subject: m{i}\nMessage-ID: <{i}@x>\n\nbody {i}\n");
        tx.save(NewMail::default(), &mut body.as_bytes()).unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn modseqs_and_changes_are_those_of_dovecots_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut mb = s.open_mailbox("INBOX").unwrap();
    save3(&mut *mb);
    let guid1 = mb.mails().unwrap()[0].guid.clone();
    let before = ModSeq(mb.status().unwrap().highest_modseq);
    let mut tx = mb.begin().unwrap();
    tx.update_flags(
        Uid(2),
        &FlagUpdate {
            op: FlagOp::Add,
            flags: Flags::SEEN,
            keywords: vec![],
        },
    )
    .unwrap();
    tx.expunge(Uid(1)).unwrap();
    tx.commit().unwrap();

    let view = View::open(&index_dir(dir.path()), "dovecot.index").unwrap();
    assert!(view.modseq_header().is_some(), "modseq extension enabled");
    let status = mb.status().unwrap();
    assert_eq!(status.highest_modseq, view.highest_modseq());
    assert!(status.highest_modseq > before.0);
    let records = mb.mails().unwrap();
    assert_eq!(records.len(), 2);
    for r in &records {
        let m = view.message(r.uid.0).expect("message in Dovecot's index");
        assert_eq!(r.modseq.0, m.modseq(), "uid {}", r.uid);
        assert_eq!(m.system_flags(), Flags(r.flags.0 & !Flags::RECENT.0));
    }
    assert!(view.message(1).is_none(), "expunged in the index too");
    assert!(records[0].modseq > before && records[1].modseq <= before);
    match mb.changes_since(before).unwrap() {
        Changes::Known {
            changed,
            expunged,
            highest_modseq,
        } => {
            assert_eq!(changed, [Uid(2)]);
            assert_eq!(expunged, [(Uid(1), Some(guid1))]);
            assert_eq!(highest_modseq.0, status.highest_modseq);
        }
        Changes::Unknown => panic!("the index log reaches back to {before}"),
    }
    // a reopened mailbox reads the same modseqs; the sidecar keeps none
    drop(mb);
    let mut again = store(dir.path()).open_mailbox("INBOX").unwrap();
    let pairs = |rs: &[mailstore::MailRecord]| -> Vec<(Uid, ModSeq)> {
        rs.iter().map(|r| (r.uid, r.modseq)).collect()
    };
    assert_eq!(pairs(&again.mails().unwrap()), pairs(&records));
    assert_eq!(
        again.status().unwrap().highest_modseq,
        status.highest_modseq
    );
    let sidecar =
        std::fs::read_to_string(index_dir(dir.path()).join("mailsync-mbox.meta")).unwrap();
    assert!(sidecar.starts_with("mailsync-mbox-meta 2\n"), "{sidecar}");
    assert!(!sidecar.contains("modseq"), "{sidecar}");
}

#[test]
fn flags_dovecot_left_dirty_in_its_index_are_written_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut mb = s.open_mailbox("INBOX").unwrap();
    save3(&mut *mb);
    drop(mb);
    // what an IMAP session with mbox_lazy_writes does: a flag change request, then the
    // sync marks the record DIRTY instead of rewriting the file
    let writer = IndexWriter::open(&index_dir(dir.path()), "dovecot.index");
    let mut t = writer.begin();
    t.flags(2, 2, rec_flag::FLAGGED, 0);
    t.keywords(true, b"$Work", &[2]);
    t.commit().unwrap();
    let mut t = writer.begin().external(true);
    t.flags(2, 2, rec_flag::DIRTY, 0);
    t.commit().unwrap();
    let highest = View::open(&index_dir(dir.path()), "dovecot.index")
        .unwrap()
        .highest_modseq();
    let file = dir.path().join("mail/INBOX");
    assert!(!std::fs::read_to_string(&file).unwrap().contains("$Work"));

    let mut mb = store(dir.path()).open_mailbox("INBOX").unwrap();
    let records = mb.mails().unwrap();
    assert!(records[1].flags.contains(Flags::FLAGGED));
    assert_eq!(records[1].keywords, [mailstore::Keyword::new("$Work")]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("X-Keywords: $Work"), "{text}");
    assert!(text.contains("X-Status: F"), "{text}");
    let view = View::open(&index_dir(dir.path()), "dovecot.index").unwrap();
    assert_eq!(view.message(2).unwrap().flags() & rec_flag::DIRTY, 0);
    // writing what the index already had is no new change
    assert_eq!(view.highest_modseq(), highest);
    assert_eq!(records[1].modseq.0, view.message(2).unwrap().modseq());
    assert_eq!(mb.status().unwrap().highest_modseq, highest);
}

#[test]
fn flag_requests_dovecot_has_not_synced_yet_are_kept_and_written_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut mb = s.open_mailbox("INBOX").unwrap();
    save3(&mut *mb);
    drop(mb);
    // a Dovecot client's request (not EXTERNAL, after the log's tail) that its mbox sync
    // hasn't applied to the file yet, and an expunge request likewise
    let writer = IndexWriter::open(&index_dir(dir.path()), "dovecot.index");
    let mut t = writer.begin();
    t.flags(3, 3, rec_flag::ANSWERED, 0);
    t.commit().unwrap();
    let mut t = writer.begin();
    t.expunge_guid(1, [0; 16]);
    t.commit().unwrap();
    let highest = View::open(&index_dir(dir.path()), "dovecot.index")
        .unwrap()
        .highest_modseq();

    let mut mb = store(dir.path()).open_mailbox("INBOX").unwrap();
    let records = mb.mails().unwrap();
    // the request is not reverted: mailsync wrote it to the file
    let third = records.iter().find(|r| r.uid == Uid(3)).unwrap();
    assert!(third.flags.contains(Flags::ANSWERED), "{third:?}");
    let text = std::fs::read_to_string(dir.path().join("mail/INBOX")).unwrap();
    assert!(text.contains("X-Status: A"), "{text}");
    let view = View::open(&index_dir(dir.path()), "dovecot.index").unwrap();
    assert_eq!(
        view.message(3).unwrap().flags() & rec_flag::SYSTEM_MASK,
        rec_flag::ANSWERED
    );
    assert_eq!(view.highest_modseq(), highest, "no record of mailsync's");
    assert_eq!(third.modseq.0, view.message(3).unwrap().modseq());
}

#[test]
fn an_index_of_another_uidvalidity_is_neither_used_nor_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut mb = s.open_mailbox("INBOX").unwrap();
    save3(&mut *mb);
    let mut tx = mb.begin().unwrap();
    tx.update_flags(
        Uid(1),
        &FlagUpdate {
            op: FlagOp::Add,
            flags: Flags::SEEN,
            keywords: vec![],
        },
    )
    .unwrap();
    tx.commit().unwrap();
    drop(mb);
    // the mbox is replaced by one of another UIDVALIDITY
    let path = dir.path().join("mail/INBOX");
    std::fs::write(
        &path,
        "From a@x Mon Jan  1 00:00:00 2024\nX-IMAPbase: 1234 2\nX-UID: 1\nStatus: O\n\
         Subject: other\n\nother\n\n",
    )
    .unwrap();
    let log = index_dir(dir.path()).join("dovecot.index.log");
    let log_before = std::fs::read(&log).unwrap();
    let mut mb = store(dir.path()).open_mailbox("INBOX").unwrap();
    let records = mb.mails().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(mb.status().unwrap().uid_validity, 1234);
    assert_eq!(records[0].modseq, ModSeq(1), "not the old index's modseq");
    assert_eq!(mb.status().unwrap().highest_modseq, 1);
    assert_eq!(mb.changes_since(ModSeq(1)).unwrap(), Changes::Unknown);
    assert_eq!(
        std::fs::read(&log).unwrap(),
        log_before,
        "index left to Dovecot"
    );
}

#[test]
fn a_long_history_is_housekept_as_dovecot_does_and_modseqs_stay_right() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut mb = s.open_mailbox("INBOX").unwrap();
    let mut tx = mb.begin().unwrap();
    for i in 0..40 {
        let body = format!("Subject: m{i}\nMessage-ID: <{i}@x>\n\nbody {i}\n");
        tx.save(NewMail::default(), &mut body.as_bytes()).unwrap();
    }
    tx.commit().unwrap();
    let idx = index_dir(dir.path());
    assert!(!idx.join("dovecot.index").exists());
    let mut highest = mb.status().unwrap().highest_modseq;
    for round in 0..250 {
        // toggling \Seen on the first message changes its Status line's length: every
        // message after it moves, so each commit logs 40 offset updates
        let op = if round % 2 == 0 {
            FlagOp::Add
        } else {
            FlagOp::Remove
        };
        let mut tx = mb.begin().unwrap();
        tx.update_flags(
            Uid(1),
            &FlagUpdate {
                op,
                flags: Flags::SEEN,
                keywords: vec![],
            },
        )
        .unwrap();
        tx.commit().unwrap();
        let now = mb.status().unwrap().highest_modseq;
        assert_eq!(now, highest + 1, "round {round}: one change, one modseq");
        highest = now;
    }
    // the log outgrew dovecot.index by more than 128 KiB: the index was written
    assert!(idx.join("dovecot.index").exists());
    let view = View::open(&idx, "dovecot.index").unwrap();
    assert_eq!(view.highest_modseq(), highest);
    for r in mb.mails().unwrap() {
        assert_eq!(r.modseq.0, view.message(r.uid.0).unwrap().modseq());
    }
    assert_eq!(
        mb.mails().unwrap()[0].modseq.0,
        highest,
        "the toggled message has the last modseq"
    );
}
