//! The shared conformance suite against the mbox store (`mbox:~/mail:INBOX=~/mail/INBOX`).
//!
//! An mbox mailbox is a file, so it can't also have children (`Store::selectable_parents`
//! is false): the suite then checks that such children are refused as doveadm refuses them
//! ("Mailbox doesn't allow inferior mailboxes"). The tests below add what an mbox *can* do
//! with nested names: children in `\Noselect` directories, renaming a directory.

use mailstore::conformance::ConformanceTarget;
use mailstore::{ErrorKind, Location, Store, StoreOptions};
use mailsync_mbox::MboxStore;

struct Target {
    dir: tempfile::TempDir,
}

impl ConformanceTarget for Target {
    fn open(&self) -> Box<dyn Store> {
        let loc = Location::parse("mbox:~/mail:INBOX=~/mail/INBOX", Some(self.dir.path())).unwrap();
        Box::new(MboxStore::open(&loc, &StoreOptions::default()).unwrap())
    }

    /// Dovecot's mbox keeps no POP3 UIDLs (only an `X-UIDL:` header it may reuse).
    fn keeps_pop3(&self) -> bool {
        false
    }
}

fn target() -> Target {
    Target {
        dir: tempfile::tempdir().unwrap(),
    }
}

mailstore::conformance_suite!(target);

fn names(store: &dyn Store) -> Vec<(String, bool, bool, bool)> {
    store
        .list_mailboxes()
        .unwrap()
        .into_iter()
        .map(|i| {
            (
                i.name,
                i.attrs.noselect || i.attrs.nonexistent,
                i.attrs.children,
                i.guid.is_some(),
            )
        })
        .collect()
}

#[test]
fn inferiors_are_refused_as_dovecot_refuses_them() {
    let t = target();
    let store = t.open();
    store.create_mailbox("Parent", None).unwrap();
    let e = store.create_mailbox("Parent/Child", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotPossible, "{e}");
    assert!(
        e.to_string().contains("doesn't allow inferior mailboxes"),
        "{e}"
    );
    store.create_mailbox("A/B/C", None).unwrap();
    let e = store.create_mailbox("A", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    let e = store.rename_mailbox("A/B/C", "Parent/C").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotPossible, "{e}");
}

/// nested_names_and_ghost_parents / children_attribute, as far as mbox goes: parents of a
/// nested mailbox are \NoSelect directories with children and no GUID; deleting the last
/// child leaves the (empty) directory childless.
#[test]
fn nested_mailboxes_live_in_noselect_directories() {
    let t = target();
    let store = t.open();
    store.create_mailbox("Top/Sub", None).unwrap();
    store.create_mailbox("TopX", None).unwrap();
    store.create_mailbox("日本語/子", None).unwrap();
    let listed = names(&*store);
    assert!(
        listed.contains(&("Top".into(), true, true, false)),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("Top/Sub".into(), false, false, true)),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("TopX".into(), false, false, true)),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("日本語/子".into(), false, false, true)),
        "{listed:?}"
    );
    assert!(t.dir.path().join("mail/&ZeVnLIqe-/&W1A-").is_file());
    assert_eq!(
        store.open_mailbox("Top").err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    store.delete_mailbox("Top/Sub").unwrap();
    let listed = names(&*t.open());
    assert!(
        listed.contains(&("Top".into(), true, false, false)),
        "{listed:?}"
    );
    // the empty directory can be deleted and then created as a mailbox
    store.delete_mailbox("Top").unwrap();
    store.create_mailbox("Top", None).unwrap();
    store.open_mailbox("Top").unwrap();
}

/// rename_moves_children: renaming a directory moves the child mailboxes with their
/// messages and index directories.
#[test]
fn renaming_a_directory_moves_children() {
    let t = target();
    let store = t.open();
    store.create_mailbox("Projects/Alpha", None).unwrap();
    let mut mb = store.open_mailbox("Projects/Alpha").unwrap();
    let mut tx = mb.begin().unwrap();
    tx.save(Default::default(), &mut &b"Subject: x\n\nbody\n"[..])
        .unwrap();
    tx.commit().unwrap();
    let guid = mb.status().unwrap().guid;
    drop(mb);
    store.rename_mailbox("Projects", "Done").unwrap();
    let mut mb = t.open().open_mailbox("Done/Alpha").unwrap();
    assert_eq!(mb.status().unwrap().guid, guid);
    assert_eq!(mb.mails().unwrap().len(), 1);
    assert!(t.dir.path().join("mail/Done/.imap/Alpha").is_dir());
}

/// `CONTROL=` holds the subscriptions file and `INDEX=` the `.imap` tree, as in Dovecot.
#[test]
fn control_and_index_options_move_subscriptions_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let loc = Location::parse(
        "mbox:~/mail:INBOX=~/spool/alice:CONTROL=~/control:INDEX=~/index",
        Some(dir.path()),
    )
    .unwrap();
    let store = MboxStore::open(&loc, &StoreOptions::default()).unwrap();
    store.create_mailbox("Work/Reports", None).unwrap();
    store.set_subscribed("Work/Reports", true).unwrap();
    store.open_mailbox("INBOX").unwrap();
    assert!(dir.path().join("control/.subscriptions").is_file());
    assert!(!dir.path().join("mail/.subscriptions").exists());
    assert!(dir
        .path()
        .join("index/Work/.imap/Reports/mailsync-mbox.meta")
        .is_file());
    assert!(dir
        .path()
        .join("index/.imap/INBOX/mailsync-mbox.meta")
        .is_file());
    assert!(dir.path().join("spool/alice").is_file());
    assert_eq!(store.subscriptions().unwrap(), ["Work/Reports"]);
}
