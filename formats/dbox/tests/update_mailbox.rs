//! Mailbox::update_mailbox on sdbox and mdbox: UIDVALIDITY of a never-used mailbox,
//! NEXTUID and HIGHESTMODSEQ raised (never lowered), kept across reopen.

use mailstore::{ErrorKind, Location, MailboxUpdate, NewMail, Store, StoreOptions, Uid};
use mailsync_dbox::DboxStore;

fn store(dir: &std::path::Path, driver: &str) -> DboxStore {
    let loc = Location::parse(&format!("{driver}:~/{driver}"), Some(dir)).unwrap();
    DboxStore::open(&loc, &StoreOptions::default()).unwrap()
}

#[test]
fn counters_are_set_raised_and_kept() {
    for driver in ["sdbox", "mdbox"] {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), driver);
        s.create_mailbox("Box", None).unwrap();
        let mut mb = s.open_mailbox("Box").unwrap();
        let guid = mb.status().unwrap().guid;
        mb.update_mailbox(&MailboxUpdate {
            uid_validity: Some(4242),
            min_uid_next: Some(10),
            min_highest_modseq: Some(100),
        })
        .unwrap();
        let st = mb.status().unwrap();
        assert_eq!(
            (st.uid_validity, st.uid_next, st.highest_modseq, st.guid),
            (4242, 10, 100, guid),
            "{driver}"
        );
        // lower values change nothing
        mb.update_mailbox(&MailboxUpdate {
            uid_validity: None,
            min_uid_next: Some(3),
            min_highest_modseq: Some(5),
        })
        .unwrap();
        let st = mb.status().unwrap();
        assert_eq!((st.uid_next, st.highest_modseq), (10, 100), "{driver}");
        let mut t = mb.begin().unwrap();
        t.save(NewMail::default(), &mut &b"Subject: a\n\nb\n"[..])
            .unwrap();
        assert_eq!(t.commit().unwrap().saved, [Uid(10)], "{driver}");
        let e = mb
            .update_mailbox(&MailboxUpdate {
                uid_validity: Some(1),
                min_uid_next: None,
                min_highest_modseq: None,
            })
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotPossible, "{driver}");
        drop(mb);
        let mut again = store(dir.path(), driver).open_mailbox("Box").unwrap();
        let st = again.status().unwrap();
        assert_eq!((st.uid_validity, st.uid_next, st.guid), (4242, 11, guid));
        assert!(st.highest_modseq > 100);
        assert_eq!(again.mails().unwrap()[0].uid, Uid(10));
    }
}

/// dsync sets the primary's UIDVALIDITY on a mailbox it just created, after enabling
/// per-message modseqs on it: the new index keeps them (each save gets its own MODSEQ).
/// Without that, the first stateful sync after a conversion enabled them, replaying every
/// logged append.
#[test]
fn a_new_uidvalidity_keeps_per_message_modseqs() {
    for driver in ["sdbox", "mdbox"] {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), driver);
        s.create_mailbox("Box", None).unwrap();
        let mut mb = s.open_mailbox("Box").unwrap();
        mb.enable_modseqs().unwrap();
        mb.update_mailbox(&MailboxUpdate {
            uid_validity: Some(4242),
            ..Default::default()
        })
        .unwrap();
        for body in [&b"Subject: a\n\na\n"[..], &b"Subject: b\n\nb\n"[..]] {
            let mut t = mb.begin().unwrap();
            t.save(NewMail::default(), &mut &body[..]).unwrap();
            t.commit().unwrap();
        }
        drop(mb);
        let mut again = store(dir.path(), driver).open_mailbox("Box").unwrap();
        assert_eq!(again.status().unwrap().uid_validity, 4242, "{driver}");
        let mails = again.mails().unwrap();
        assert!(
            mails[0].modseq < mails[1].modseq,
            "{driver}: {:?} / {:?}",
            mails[0].modseq,
            mails[1].modseq
        );
    }
}
