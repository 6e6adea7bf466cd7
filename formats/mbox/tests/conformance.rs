//! The shared conformance suite against the mbox store (`mbox:~/mail:INBOX=~/mail/INBOX`).
//!
//! Six suite tests need a mailbox that holds messages *and* has child mailboxes. Dovecot's
//! mbox can't have that: a mailbox is a file, children live in a directory of the same name,
//! and doveadm answers "Mailbox doesn't allow inferior mailboxes" (creating `Parent/Child`
//! under the mbox file `Parent`) and "Mailbox already exists" (creating `A` where the
//! directory `A/` holds children). Those six (children_attribute,
//! delete_parent_keeps_children, nested_names_and_ghost_parents, rename_moves_children,
//! new_store_handle_sees_committed_state, utf8_names_round_trip) are replaced here by
//! [`inferiors_are_refused_as_dovecot_refuses_them`] and by mbox versions of what they check
//! that an mbox can do; every other suite test runs unchanged.

use mailstore::conformance::{self as suite, ConformanceTarget};
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
}

fn target() -> Target {
    Target {
        dir: tempfile::tempdir().unwrap(),
    }
}

macro_rules! suite_tests {
    ($($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                suite::run(&target(), suite::$name);
            }
        )*
    };
}

suite_tests!(
    inbox_exists_on_empty_store
    inbox_is_case_insensitive
    create_list_and_open_mailbox
    create_existing_is_exists
    create_with_guid_keeps_it
    delete_mailbox_and_its_messages
    missing_mailbox_is_not_found
    inbox_cannot_be_deleted
    rename_keeps_guid_uidvalidity_and_messages
    rename_onto_existing_is_exists
    rename_to_nested_name_moves_ghost_parents
    rename_under_itself_is_refused
    invalid_names_are_rejected
    subscriptions_round_trip
    subscriptions_persist_after_reopen
    save_keeps_guid_uid_dates_flags_keywords
    save_keeps_saved_date
    generated_guids_are_unique
    uids_ascend_from_one
    requested_uid_at_or_above_next_uid_is_granted
    requested_uid_below_next_uid_is_reassigned
    uids_not_reused_after_expunging_last
    uid_next_persists_across_reopen
    uid_validity_is_nonzero_and_stable
    recreated_mailbox_is_new
    status_counts
    message_bytes_round_trip
    large_message_round_trip
    virtual_size_counts_bare_lf_as_crlf
    flag_updates_on_system_flags
    flag_updates_on_keywords
    keyword_bytes_round_trip
    many_keywords_in_one_mailbox
    expunge_removes_message
    rollback_changes_nothing
    dropped_transaction_changes_nothing
    mixed_transaction_commits_together
    concurrent_transactions_get_distinct_uids
    update_or_expunge_of_missing_uid_is_not_found
    second_handle_sees_changes_after_sync
    highest_modseq_never_decreases
    changes_since_is_exact_when_known
);

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
