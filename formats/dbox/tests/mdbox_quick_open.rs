//! A handle that changed an mdbox mailbox leaves its `dovecot.index` (and the map's)
//! current when it is done; a mailbox whose indexes are current opens from their headers
//! alone: the counters and the last message's GUID equal what a full read gives, and
//! everything else reads the mailbox in full when first asked.

use mailstore::{Changes, Flags, Guid, Location, ModSeq, NewMail, Store, StoreOptions};
use mailsync_dbox::DboxStore;
use mailsync_index::{HeaderView, IndexPaths};

fn store(dir: &std::path::Path) -> DboxStore {
    let loc = Location::parse("mdbox:~/mdbox", Some(dir)).unwrap();
    DboxStore::open(&loc, &StoreOptions::default()).unwrap()
}

fn counters(mb: &mut dyn mailstore::Mailbox) -> mailstore::MailboxStatus {
    mb.counters().unwrap()
}

/// True when `dovecot.index` at `dir` is current: its header alone tells the state.
fn current(dir: &std::path::Path, prefix: &str) -> bool {
    HeaderView::open(&IndexPaths::new(dir, prefix))
        .unwrap()
        .is_some()
}

#[test]
fn a_current_index_answers_the_counters_from_its_header_as_a_full_read() {
    let home = tempfile::tempdir().unwrap();
    let s = store(home.path());
    let mut mb = s.open_mailbox("INBOX").unwrap();
    let mut t = mb.begin().unwrap();
    for i in 0..40u32 {
        let flags = if i % 3 == 0 {
            Flags::default()
        } else {
            Flags::SEEN
        };
        let mail = NewMail {
            guid: Some(Guid::from_bytes(format!("guid-{i}").as_bytes())),
            flags,
            ..Default::default()
        };
        t.save(mail, &mut format!("Subject: {i}\n\nbody {i}\n").as_bytes())
            .unwrap();
    }
    t.commit().unwrap();
    let inbox = home.path().join("mdbox/mailboxes/INBOX/dbox-Mails");
    let storage = home.path().join("mdbox/storage");
    assert!(!current(&inbox, "dovecot.index"), "the commit is past P");
    // the handle and the store that changed the indexes bring dovecot.index up to date
    // when they are done
    drop(mb);
    drop(s);
    assert!(current(&inbox, "dovecot.index"));
    assert!(current(&storage, "dovecot.map.index"));

    let s = store(home.path());
    let mut quick = s.open_mailbox("INBOX").unwrap();
    quick.sync().unwrap();
    let q = counters(quick.as_mut());
    assert_eq!((q.messages, q.unseen), (40, 14));
    assert_eq!(q.last_guid, Some(Guid::from_bytes(b"guid-39")));
    // the same handle read in full (mails() reads the snapshot), then its counters again
    assert_eq!(quick.mails().unwrap().len(), 40);
    assert_eq!(counters(quick.as_mut()), q);

    // a second handle answers from the headers, then history questions read the index
    let mut other = store(home.path()).open_mailbox("INBOX").unwrap();
    assert_eq!(counters(other.as_mut()), q);
    match other.changes_since(ModSeq(1)).unwrap() {
        Changes::Known { changed, .. } => assert_eq!(changed.len(), 40),
        Changes::Unknown => panic!("the log reaches back to modseq 1"),
    }

    // a change made through another handle after a quick open: the quick handle's history
    // can't answer for the counters it gave, and its next sync sees the change
    let mut stale = store(home.path()).open_mailbox("INBOX").unwrap();
    let before = counters(stale.as_mut());
    let mut t = other.begin().unwrap();
    t.expunge(mailstore::Uid(2)).unwrap();
    t.commit().unwrap();
    assert_eq!(
        stale.changes_since(ModSeq(before.highest_modseq)).unwrap(),
        Changes::Unknown
    );
    stale.sync().unwrap();
    assert_eq!(counters(stale.as_mut()).messages, 39);
}
