//! The conformance suite: the same tests for every backend.
//!
//! A backend crate runs it against itself with
//! `mailstore::conformance_suite!(|| MyTarget::new());` in a test file, where the closure
//! makes a fresh, empty store (e.g. in a new temporary directory) each time.
//!
//! The tests check only what the API promises, so that every backend (Maildir, sdbox,
//! mdbox, mbox, IMAP) can pass them:
//! - flags are compared with `\Recent` masked out (recent handling is backend-defined);
//! - a GUID passed to `save` must come back exactly; a backend-chosen GUID must only be
//!   non-empty and unique within the mailbox;
//! - modseqs: HIGHESTMODSEQ never decreases (also across reopen) and no message's modseq
//!   exceeds it; `changes_since` may always answer `Unknown`, but a `Known` answer must be
//!   exactly right;
//! - nested names are built with the store's own `hierarchy_separator()`;
//! - mailbox names used here avoid `.` and `/` so they are valid with either separator;
//! - message bytes are expected as the store's `save_line_endings()` policy converts them
//!   (Dovecot's formats turn CRLF into LF on save, as Dovecot does).

use std::io::Read;

use crate::error::{ErrorKind, Result};
use crate::lines::SaveLineEndings;
use crate::traits::{Mailbox, Store};
use crate::types::{
    Changes, FlagChange, FlagOp, FlagUpdate, Flags, Guid, Keyword, MailRecord, MailboxGuid,
    MailboxInfo, MailboxUpdate, ModSeq, NewMail, Pop3Info, Uid,
};

/// A store under test. `open` may be called several times: each call opens the *same*
/// store again (a new handle), so tests can check that changes persist.
pub trait ConformanceTarget {
    fn open(&self) -> Box<dyn Store>;

    /// Whether the backend keeps a message's POP3 UIDL and order (`NewMail::pop3`); mbox
    /// doesn't, as Dovecot's mbox doesn't.
    fn keeps_pop3(&self) -> bool {
        true
    }
}

/// Lets the suite's closure return a boxed target.
impl<T: ConformanceTarget + ?Sized> ConformanceTarget for Box<T> {
    fn open(&self) -> Box<dyn Store> {
        (**self).open()
    }
    fn keeps_pop3(&self) -> bool {
        (**self).keeps_pop3()
    }
}

/// Expands to one `#[test]` per conformance test, each with a fresh target from `$make`.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@tests $make;
            inbox_exists_on_empty_store
            inbox_is_case_insensitive
            create_list_and_open_mailbox
            create_existing_is_exists
            create_with_guid_keeps_it
            nested_names_and_ghost_parents
            children_attribute
            delete_mailbox_and_its_messages
            delete_parent_keeps_children
            missing_mailbox_is_not_found
            inbox_cannot_be_deleted
            rename_keeps_guid_uidvalidity_and_messages
            rename_moves_children
            rename_onto_existing_is_exists
            rename_to_nested_name_moves_ghost_parents
            rename_under_itself_is_refused
            invalid_names_are_rejected
            utf8_names_round_trip
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
            new_store_handle_sees_committed_state
            highest_modseq_never_decreases
            changes_since_is_exact_when_known
            flag_changes_since_tells_own_changes_not_a_syncs
            pop3_uidl_and_order_round_trip
            lock_for_sync_excludes_a_second_taker
            deleted_mailboxes_lists_a_deleted_guid
            update_mailbox_raises_uid_next_and_highest_modseq
            update_mailbox_sets_uid_validity_of_an_empty_mailbox
            counters_agree_with_status
            set_mailbox_guid_keeps_the_messages
            mails_of_matches_mails
            mails_without_dates_match_mails
            a_listing_made_ahead_never_outlives_a_change
            fresh_handles_count_as_a_full_read_after_random_changes
        );
    };
    (@tests $make:expr; $($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                let target = ($make)();
                $crate::conformance::run(&target, $crate::conformance::$name);
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------
// Helpers

fn expect_err<T>(result: Result<T>, kind: ErrorKind, what: &str) {
    match result {
        Ok(_) => panic!("{what}: expected an error of kind {kind:?}, got success"),
        Err(e) => assert_eq!(e.kind(), kind, "{what}: wrong error kind for {e}"),
    }
}

/// Joins hierarchy levels with the store's separator.
fn nested(store: &dyn Store, levels: &[&str]) -> String {
    levels.join(&store.hierarchy_separator().to_string())
}

fn list(store: &dyn Store) -> Vec<MailboxInfo> {
    store.list_mailboxes().expect("list_mailboxes")
}

fn find(store: &dyn Store, name: &str) -> Option<MailboxInfo> {
    list(store).into_iter().find(|i| i.name == name)
}

/// A listed name that is not a mailbox: a parent listed only because a child exists
/// (`\NonExistent`, e.g. Maildir++), or a directory that can't hold mail (`\Noselect`, e.g.
/// LAYOUT=fs). Either way it has no GUID.
fn is_ghost(info: &MailboxInfo) -> bool {
    let ghost = info.attrs.nonexistent || info.attrs.noselect;
    if ghost {
        assert!(info.guid.is_none(), "a ghost has no GUID: {info:?}");
    }
    ghost
}

/// Names of mailboxes that exist (ghost parents left out), sorted.
fn existing_names(store: &dyn Store) -> Vec<String> {
    let mut names: Vec<String> = list(store)
        .into_iter()
        .filter(|i| !is_ghost(i))
        .map(|i| i.name)
        .collect();
    names.sort();
    names
}

/// All listed names including ghosts, sorted.
fn all_names(store: &dyn Store) -> Vec<String> {
    let mut names: Vec<String> = list(store).into_iter().map(|i| i.name).collect();
    names.sort();
    names
}

fn open(store: &dyn Store, name: &str) -> Box<dyn Mailbox> {
    match store.open_mailbox(name) {
        Ok(m) => m,
        Err(e) => panic!("open_mailbox({name:?}): {e}"),
    }
}

/// Saves messages in one transaction and returns their UIDs.
fn save_all(mailbox: &mut dyn Mailbox, mails: Vec<(NewMail, &[u8])>) -> Vec<Uid> {
    let count = mails.len();
    let mut tx = mailbox.begin().expect("begin");
    for (mail, mut body) in mails {
        tx.save(mail, &mut body).expect("save");
    }
    let result = tx.commit().expect("commit");
    assert_eq!(
        result.saved.len(),
        count,
        "commit must return one UID per save"
    );
    result.saved
}

fn save_one(mailbox: &mut dyn Mailbox, body: &[u8]) -> Uid {
    save_all(mailbox, vec![(NewMail::default(), body)])[0]
}

fn msg(n: usize) -> Vec<u8> {
    format!("From: a@example.com\r\nSubject: message {n}\r\n\r\nbody {n}\r\n").into_bytes()
}

fn save_n(mailbox: &mut dyn Mailbox, n: usize) -> Vec<Uid> {
    let bodies: Vec<Vec<u8>> = (0..n).map(msg).collect();
    save_all(
        mailbox,
        bodies
            .iter()
            .map(|b| (NewMail::default(), b.as_slice()))
            .collect(),
    )
}

fn read_mail(mailbox: &mut dyn Mailbox, uid: Uid) -> Vec<u8> {
    let mut reader = mailbox
        .open_mail(uid)
        .unwrap_or_else(|e| panic!("open_mail({uid}): {e}"));
    let mut out = Vec::new();
    reader.read_to_end(&mut out).expect("read message");
    out
}

/// For stores without selectable parents (mbox): a child under a mailbox is refused with
/// `NotPossible` and nothing is created; renaming a mailbox under one is refused too.
fn inferiors_are_refused(store: &dyn Store, parent: &str, child: &str) {
    let before = all_names(store);
    expect_err(
        store.create_mailbox(child, None),
        ErrorKind::NotPossible,
        "create a child under a mailbox",
    );
    store.create_mailbox("Elsewhere", None).unwrap();
    expect_err(
        store.rename_mailbox("Elsewhere", child),
        ErrorKind::NotPossible,
        "rename a mailbox to below a mailbox",
    );
    let mut after = all_names(store);
    after.retain(|n| n != "Elsewhere");
    assert_eq!(after, before, "nothing created under {parent}");
    open(store, parent);
}

thread_local! {
    /// The line-ending policy of the store under test in this thread (set by [`run`]).
    static LINE_ENDINGS: std::cell::Cell<SaveLineEndings> =
        const { std::cell::Cell::new(SaveLineEndings::AsIs) };
}

/// Runs one conformance test against `target`, remembering the store's line-ending policy
/// so message bytes are compared as that store stores them.
pub fn run<T: ConformanceTarget>(target: &T, test: fn(&dyn ConformanceTarget)) {
    let policy = target.open().save_line_endings();
    LINE_ENDINGS.with(|c| c.set(policy));
    test(target);
}

/// `body` as the store under test keeps it.
fn stored(body: &[u8]) -> Vec<u8> {
    LINE_ENDINGS.with(|c| c.get()).convert(body)
}

/// Reads a message and compares it byte for byte with `expected` as the store keeps it,
/// showing both sides readably on failure.
fn assert_body(mailbox: &mut dyn Mailbox, uid: Uid, expected: &[u8]) {
    let expected = &stored(expected)[..];
    let got = read_mail(mailbox, uid);
    assert!(
        got == expected,
        "UID {uid}: got {:?} ({} bytes), expected {:?} ({} bytes)",
        got.escape_ascii().to_string(),
        got.len(),
        expected.escape_ascii().to_string(),
        expected.len()
    );
}

fn mails(mailbox: &mut dyn Mailbox) -> Vec<MailRecord> {
    let records = mailbox.mails().expect("mails");
    assert!(
        records.windows(2).all(|w| w[0].uid < w[1].uid),
        "mails() must be ascending by UID"
    );
    records
}

fn uids(mailbox: &mut dyn Mailbox) -> Vec<Uid> {
    mails(mailbox).into_iter().map(|r| r.uid).collect()
}

fn record(mailbox: &mut dyn Mailbox, uid: Uid) -> MailRecord {
    mails(mailbox)
        .into_iter()
        .find(|r| r.uid == uid)
        .unwrap_or_else(|| panic!("UID {uid} not in mails()"))
}

/// Flags without `\Recent`, which is backend-defined.
fn flags_of(r: &MailRecord) -> Flags {
    Flags(r.flags.0 & !Flags::RECENT.0)
}

fn sorted_keywords(keywords: &[Keyword]) -> Vec<Keyword> {
    let mut k = keywords.to_vec();
    k.sort();
    k
}

fn kw(names: &[&str]) -> Vec<Keyword> {
    names.iter().map(|n| Keyword::from(*n)).collect()
}

fn update(mailbox: &mut dyn Mailbox, uid: Uid, op: FlagOp, flags: Flags, keywords: &[&str]) {
    let mut tx = mailbox.begin().expect("begin");
    tx.update_flags(
        uid,
        &FlagUpdate {
            op,
            flags,
            keywords: kw(keywords),
        },
    )
    .expect("update_flags");
    tx.commit().expect("commit");
}

fn expunge(mailbox: &mut dyn Mailbox, uids: &[Uid]) {
    let mut tx = mailbox.begin().expect("begin");
    for &uid in uids {
        tx.expunge(uid).expect("expunge");
    }
    tx.commit().expect("commit");
}

fn highest_modseq(mailbox: &mut dyn Mailbox) -> u64 {
    let status = mailbox.status().expect("status");
    for r in mails(mailbox) {
        assert!(
            r.modseq.0 <= status.highest_modseq,
            "UID {} has modseq {} above HIGHESTMODSEQ {}",
            r.uid,
            r.modseq,
            status.highest_modseq
        );
    }
    status.highest_modseq
}

/// The next value of a xorshift64 generator (`state` never 0): deterministic data for
/// the tests that need many or random-looking inputs.
fn xorshift64(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A deterministic pseudo-random message body generator, so large messages need not be
/// held twice. Lines of printable text with LF or CRLF endings and some 8-bit bytes.
struct GeneratedBody {
    remaining: u64,
    state: u64,
}

impl GeneratedBody {
    fn new(len: u64, seed: u64) -> GeneratedBody {
        GeneratedBody {
            remaining: len,
            state: seed | 1,
        }
    }
    fn next_byte(&mut self) -> u8 {
        match xorshift64(&mut self.state) % 97 {
            0 => b'\n',
            1 => b'\r',
            2 => 0xe9,
            n => b' ' + (n as u8 % 94),
        }
    }
}

impl Read for GeneratedBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        for b in &mut buf[..n] {
            *b = self.next_byte();
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Length, FNV-1a 64 hash and virtual size of a stream.
fn digest(reader: &mut dyn Read) -> (u64, u64, u64) {
    let mut buf = [0u8; 64 * 1024];
    let (mut len, mut hash, mut vsize) = (0u64, 0xcbf2_9ce4_8422_2325u64, 0u64);
    let mut prev_cr = false;
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            hash ^= b as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            vsize += if b == b'\n' && !prev_cr { 2 } else { 1 };
            prev_cr = b == b'\r';
        }
        len += n as u64;
    }
    (len, hash, vsize)
}

// ---------------------------------------------------------------------------------------
// Mailbox tree

pub fn inbox_exists_on_empty_store(target: &dyn ConformanceTarget) {
    let store = target.open();
    let listed = list(&*store);
    let inbox = listed
        .iter()
        .find(|i| i.name == "INBOX")
        .expect("INBOX is listed on an empty store");
    assert!(!is_ghost(inbox), "INBOX exists");
    assert_eq!(
        existing_names(&*store),
        ["INBOX"],
        "only INBOX on an empty store"
    );
    let mut inbox = open(&*store, "INBOX");
    let status = inbox.status().unwrap();
    assert_eq!(status.messages, 0);
    assert_eq!(status.uid_next, 1, "NEXTUID of an empty mailbox is 1");
    assert_ne!(status.uid_validity, 0);
    assert!(mails(&mut *inbox).is_empty());
}

pub fn inbox_is_case_insensitive(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut lower = open(&*store, "inbox");
    save_one(&mut *lower, b"Subject: x\r\n\r\nx\r\n");
    let mut mixed = open(&*store, "InBoX");
    assert_eq!(uids(&mut *mixed), [Uid(1)], "inbox and InBoX are INBOX");
    let names: Vec<String> = list(&*store).into_iter().map(|i| i.name).collect();
    assert!(names.iter().any(|n| n == "INBOX"));
    assert!(
        !names
            .iter()
            .any(|n| n != "INBOX" && n.eq_ignore_ascii_case("inbox")),
        "INBOX is listed once, as INBOX: {names:?}"
    );
    expect_err(
        store.create_mailbox("inbox", None),
        ErrorKind::Exists,
        "create inbox",
    );
}

pub fn create_list_and_open_mailbox(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Work", None).unwrap();
    store.create_mailbox("Archive", None).unwrap();
    assert_eq!(existing_names(&*store), ["Archive", "INBOX", "Work"]);
    let info = find(&*store, "Work").unwrap();
    assert!(!is_ghost(&info) && !info.attrs.children);
    if let Some(guid) = info.guid {
        assert!(!guid.is_zero(), "a listed mailbox GUID is not zero");
    }
    let mut work = open(&*store, "Work");
    assert_eq!(work.name(), "Work");
    let status = work.status().unwrap();
    assert_eq!(status.messages, 0);
    assert_eq!(status.uid_next, 1);
    assert!(!status.guid.is_zero(), "every mailbox has a GUID");
    let archive_guid = open(&*store, "Archive").status().unwrap().guid;
    assert_ne!(status.guid, archive_guid, "mailbox GUIDs differ");
    // Mailboxes are case-sensitive apart from INBOX.
    expect_err(store.open_mailbox("work"), ErrorKind::NotFound, "open work");
}

pub fn create_existing_is_exists(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Work", None).unwrap();
    let mut work = open(&*store, "Work");
    save_one(&mut *work, b"Subject: keep\r\n\r\n");
    expect_err(
        store.create_mailbox("Work", None),
        ErrorKind::Exists,
        "create twice",
    );
    expect_err(
        store.create_mailbox("INBOX", None),
        ErrorKind::Exists,
        "create INBOX",
    );
    let mut work = open(&*store, "Work");
    assert_eq!(
        uids(&mut *work),
        [Uid(1)],
        "the existing mailbox is untouched"
    );
}

pub fn create_with_guid_keeps_it(target: &dyn ConformanceTarget) {
    let store = target.open();
    let guid = MailboxGuid([
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
        0x01,
    ]);
    store.create_mailbox("Synced", Some(guid)).unwrap();
    assert_eq!(open(&*store, "Synced").status().unwrap().guid, guid);
    let info = find(&*store, "Synced").unwrap();
    assert!(
        info.guid.is_none() || info.guid == Some(guid),
        "list reports the given GUID or none: {info:?}"
    );
    let reopened = target.open();
    assert_eq!(open(&*reopened, "Synced").status().unwrap().guid, guid);
}

pub fn nested_names_and_ghost_parents(target: &dyn ConformanceTarget) {
    let store = target.open();
    let child = nested(&*store, &["Parent", "Child"]);
    let grandchild = nested(&*store, &["Parent", "Child", "Leaf"]);
    store.create_mailbox(&grandchild, None).unwrap();
    let listed = list(&*store);
    let info = |name: &str| {
        listed
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name} is listed: {listed:?}"))
            .clone()
    };
    for ghost in ["Parent", child.as_str()] {
        let g = info(ghost);
        assert!(is_ghost(&g), "{ghost} is a ghost parent: {g:?}");
        assert!(g.guid.is_none(), "a ghost parent has no GUID");
        assert!(g.attrs.children, "{ghost} has children");
    }
    let leaf = info(&grandchild);
    assert!(!is_ghost(&leaf) && !leaf.attrs.children);
    expect_err(
        store.open_mailbox("Parent"),
        ErrorKind::NotFound,
        "open a ghost parent",
    );
    if !store.selectable_parents() {
        // Only a directory can hold children: the ghost can't become a mailbox.
        expect_err(
            store.create_mailbox("Parent", None),
            ErrorKind::Exists,
            "create a mailbox where a directory with children is",
        );
        open(&*store, &grandchild);
        return;
    }
    // Creating the ghost makes it real; the child stays.
    store.create_mailbox("Parent", None).unwrap();
    assert!(!is_ghost(&find(&*store, "Parent").unwrap()));
    assert!(find(&*store, "Parent").unwrap().attrs.children);
    open(&*store, &grandchild);
}

pub fn children_attribute(target: &dyn ConformanceTarget) {
    let store = target.open();
    if store.selectable_parents() {
        store.create_mailbox("Top", None).unwrap();
    }
    store.create_mailbox("Lonely", None).unwrap();
    let sub = nested(&*store, &["Top", "Sub"]);
    store.create_mailbox(&sub, None).unwrap();
    assert!(find(&*store, "Top").unwrap().attrs.children);
    assert!(!find(&*store, "Lonely").unwrap().attrs.children);
    assert!(!find(&*store, &sub).unwrap().attrs.children);
    // A name sharing a prefix without the separator is not a child.
    store.create_mailbox("TopX", None).unwrap();
    store.delete_mailbox(&sub).unwrap();
    if let Some(top) = find(&*store, "Top") {
        assert!(!top.attrs.children, "no children left");
    }
}

pub fn delete_mailbox_and_its_messages(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Trash", None).unwrap();
    let mut trash = open(&*store, "Trash");
    save_n(&mut *trash, 2);
    drop(trash);
    store.delete_mailbox("Trash").unwrap();
    assert_eq!(existing_names(&*store), ["INBOX"]);
    assert!(find(&*store, "Trash").is_none(), "nothing left listed");
    expect_err(
        store.open_mailbox("Trash"),
        ErrorKind::NotFound,
        "open deleted",
    );
    let reopened = target.open();
    assert_eq!(existing_names(&*reopened), ["INBOX"], "delete persists");
}

pub fn delete_parent_keeps_children(target: &dyn ConformanceTarget) {
    let store = target.open();
    let child = nested(&*store, &["Parent", "Child"]);
    store.create_mailbox("Parent", None).unwrap();
    if !store.selectable_parents() {
        return inferiors_are_refused(&*store, "Parent", &child);
    }
    store.create_mailbox(&child, None).unwrap();
    let mut c = open(&*store, &child);
    save_n(&mut *c, 1);
    drop(c);
    store.delete_mailbox("Parent").unwrap();
    assert_eq!(
        existing_names(&*store),
        vec!["INBOX".to_string(), child.clone()]
    );
    let mut c = open(&*store, &child);
    assert_eq!(mails(&mut *c).len(), 1, "the child keeps its messages");
    expect_err(
        store.open_mailbox("Parent"),
        ErrorKind::NotFound,
        "open deleted parent",
    );
    if let Some(parent) = find(&*store, "Parent") {
        assert!(is_ghost(&parent), "a deleted parent is only a ghost");
    }
}

pub fn missing_mailbox_is_not_found(target: &dyn ConformanceTarget) {
    let store = target.open();
    expect_err(store.open_mailbox("Missing"), ErrorKind::NotFound, "open");
    expect_err(
        store.delete_mailbox("Missing"),
        ErrorKind::NotFound,
        "delete",
    );
    expect_err(
        store.rename_mailbox("Missing", "Other"),
        ErrorKind::NotFound,
        "rename",
    );
    assert_eq!(all_names(&*store), ["INBOX"], "nothing was created");
}

pub fn inbox_cannot_be_deleted(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    save_n(&mut *inbox, 1);
    drop(inbox);
    expect_err(
        store.delete_mailbox("INBOX"),
        ErrorKind::NotPossible,
        "delete INBOX",
    );
    expect_err(
        store.delete_mailbox("inbox"),
        ErrorKind::NotPossible,
        "delete inbox",
    );
    let mut inbox = open(&*store, "INBOX");
    assert_eq!(mails(&mut *inbox).len(), 1, "INBOX keeps its messages");
}

pub fn rename_keeps_guid_uidvalidity_and_messages(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Old", None).unwrap();
    let mut old = open(&*store, "Old");
    let saved = save_all(
        &mut *old,
        vec![
            (
                NewMail {
                    guid: Some(Guid::from_bytes("rename-guid-1")),
                    flags: Flags::SEEN,
                    ..NewMail::default()
                },
                b"Subject: one\r\n\r\n1\r\n",
            ),
            (NewMail::default(), b"Subject: two\r\n\r\n2\r\n"),
        ],
    );
    let before_status = old.status().unwrap();
    let before_mails = mails(&mut *old);
    drop(old);
    store.rename_mailbox("Old", "New").unwrap();
    assert_eq!(existing_names(&*store), ["INBOX", "New"]);
    expect_err(
        store.open_mailbox("Old"),
        ErrorKind::NotFound,
        "open old name",
    );
    for store in [store, target.open()] {
        let mut new = open(&*store, "New");
        let status = new.status().unwrap();
        assert_eq!(
            status.guid, before_status.guid,
            "rename keeps the mailbox GUID"
        );
        assert_eq!(status.uid_validity, before_status.uid_validity);
        assert_eq!(status.uid_next, before_status.uid_next);
        let after = mails(&mut *new);
        assert_eq!(after.len(), 2);
        for (a, b) in after.iter().zip(&before_mails) {
            assert_eq!((a.uid, &a.guid), (b.uid, &b.guid));
            assert_eq!(flags_of(a), flags_of(b));
        }
        assert_body(&mut *new, saved[1], b"Subject: two\r\n\r\n2\r\n");
    }
}

pub fn rename_moves_children(target: &dyn ConformanceTarget) {
    let store = target.open();
    let old_child = nested(&*store, &["Projects", "Alpha"]);
    let old_grandchild = nested(&*store, &["Projects", "Alpha", "Notes"]);
    // Without selectable parents, Projects and Alpha are directories holding children.
    let parents_hold_mail = store.selectable_parents();
    if parents_hold_mail {
        store.create_mailbox("Projects", None).unwrap();
        store.create_mailbox(&old_child, None).unwrap();
    }
    store.create_mailbox(&old_grandchild, None).unwrap();
    store.create_mailbox("ProjectsX", None).unwrap();
    let mut gc = open(&*store, &old_grandchild);
    save_n(&mut *gc, 1);
    let gc_guid = gc.status().unwrap().guid;
    drop(gc);
    store.rename_mailbox("Projects", "Done").unwrap();
    let new_child = nested(&*store, &["Done", "Alpha"]);
    let new_grandchild = nested(&*store, &["Done", "Alpha", "Notes"]);
    let mut expected = vec![
        "Done".to_string(),
        "INBOX".to_string(),
        "ProjectsX".to_string(),
        new_child,
        new_grandchild.clone(),
    ];
    expected.sort();
    assert_eq!(
        all_names(&*store),
        expected,
        "children moved, ProjectsX not"
    );
    if !parents_hold_mail {
        assert!(is_ghost(&find(&*store, "Done").unwrap()));
    }
    let mut gc = open(&*store, &new_grandchild);
    assert_eq!(gc.status().unwrap().guid, gc_guid);
    assert_eq!(mails(&mut *gc).len(), 1);
    expect_err(
        store.open_mailbox(&old_grandchild),
        ErrorKind::NotFound,
        "old child name",
    );
}

pub fn rename_onto_existing_is_exists(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("A", None).unwrap();
    store.create_mailbox("B", None).unwrap();
    let mut a = open(&*store, "A");
    save_n(&mut *a, 1);
    drop(a);
    expect_err(
        store.rename_mailbox("A", "B"),
        ErrorKind::Exists,
        "rename onto B",
    );
    expect_err(
        store.rename_mailbox("A", "INBOX"),
        ErrorKind::Exists,
        "rename onto INBOX",
    );
    assert_eq!(existing_names(&*store), ["A", "B", "INBOX"]);
    assert_eq!(mails(&mut *open(&*store, "A")).len(), 1);
    assert!(mails(&mut *open(&*store, "B")).is_empty());
}

pub fn rename_to_nested_name_moves_ghost_parents(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Flat", None).unwrap();
    let mut flat = open(&*store, "Flat");
    save_n(&mut *flat, 1);
    let guid = flat.status().unwrap().guid;
    drop(flat);
    let deep = nested(&*store, &["Outer", "Inner", "Flat"]);
    let inner = nested(&*store, &["Outer", "Inner"]);
    store.rename_mailbox("Flat", &deep).unwrap();
    for ghost in ["Outer", inner.as_str()] {
        let info = find(&*store, ghost).unwrap_or_else(|| panic!("{ghost} listed"));
        assert!(is_ghost(&info) && info.attrs.children, "{info:?}");
    }
    let mut moved = open(&*store, &deep);
    assert_eq!(moved.status().unwrap().guid, guid);
    assert_eq!(mails(&mut *moved).len(), 1);
    drop(moved);
    // Moved back out: at most empty ghosts stay behind (LAYOUT=fs may keep directories).
    store.rename_mailbox(&deep, "Back").unwrap();
    assert_eq!(existing_names(&*store), ["Back", "INBOX"]);
    for info in list(&*store) {
        if info.name != "Back" && info.name != "INBOX" {
            assert!(is_ghost(&info), "only ghosts left: {info:?}");
        }
    }
    assert_eq!(open(&*target.open(), "Back").status().unwrap().guid, guid);
}

pub fn rename_under_itself_is_refused(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Self", None).unwrap();
    let below = nested(&*store, &["Self", "Below"]);
    let before = all_names(&*store);
    assert!(
        store.rename_mailbox("Self", &below).is_err(),
        "renaming a mailbox under itself must fail"
    );
    assert_eq!(all_names(&*store), before, "nothing changed");
    expect_err(
        store.rename_mailbox("Self", "Self"),
        ErrorKind::Exists,
        "rename to itself",
    );
    assert_eq!(all_names(&*store), before);
}

pub fn invalid_names_are_rejected(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Valid", None).unwrap();
    let sep = store.hierarchy_separator();
    let before = all_names(&*store);
    let mut bad = vec![
        String::new(),
        "..".to_string(),
        format!("..{sep}x"),
        format!("a{sep}..{sep}b"),
        "a\0b".to_string(),
        "a\x01b".to_string(),
        "line\nbreak".to_string(),
        "~user".to_string(),
        format!("{sep}lead"),
        format!("trail{sep}"),
        format!("dou{sep}{sep}ble"),
    ];
    if sep != '/' {
        bad.push("sl/ash".to_string());
        bad.push("/abs".to_string());
    }
    for name in &bad {
        expect_err(
            store.create_mailbox(name, None),
            ErrorKind::Params,
            &format!("create {name:?}"),
        );
        expect_err(
            store.rename_mailbox("Valid", name),
            ErrorKind::Params,
            &format!("rename to {name:?}"),
        );
        assert_eq!(all_names(&*store), before, "nothing created for {name:?}");
    }
    assert_eq!(all_names(&*target.open()), before);
}

pub fn utf8_names_round_trip(target: &dyn ConformanceTarget) {
    let store = target.open();
    let names = ["Entwürfe", "日本語", "a&b", "Ünïcödé & more"];
    for name in names {
        store.create_mailbox(name, None).unwrap();
    }
    let parent = if store.selectable_parents() {
        "日本語"
    } else {
        "日本語 ordner"
    };
    let sub = nested(&*store, &[parent, "子"]);
    store.create_mailbox(&sub, None).unwrap();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.push(sub.clone());
    expected.push("INBOX".to_string());
    expected.sort();
    assert_eq!(existing_names(&*store), expected);
    let mut m = open(&*store, "Entwürfe");
    assert_eq!(m.name(), "Entwürfe");
    save_n(&mut *m, 1);
    drop(m);
    store
        .rename_mailbox("Entwürfe", "Brouillons & Entwürfe")
        .unwrap();
    store.rename_mailbox("a&b", "c&d").unwrap();
    let reopened = target.open();
    let names = existing_names(&*reopened);
    assert!(
        names.contains(&"Brouillons & Entwürfe".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"c&d".to_string()), "{names:?}");
    assert!(names.contains(&sub), "{names:?}");
    assert!(!names.contains(&"Entwürfe".to_string()));
    let mut m = open(&*reopened, "Brouillons & Entwürfe");
    assert_eq!(mails(&mut *m).len(), 1);
    open(&*reopened, &sub);
}

// ---------------------------------------------------------------------------------------
// Subscriptions

pub fn subscriptions_round_trip(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Sub", None).unwrap();
    store.create_mailbox("Unsub", None).unwrap();
    store.set_subscribed("Sub", true).unwrap();
    store.set_subscribed("Ghost", true).unwrap();
    let mut subs = store.subscriptions().unwrap();
    subs.sort();
    assert_eq!(
        subs,
        ["Ghost", "Sub"],
        "a missing mailbox can be subscribed"
    );
    assert!(find(&*store, "Sub").unwrap().subscribed);
    assert!(!find(&*store, "Unsub").unwrap().subscribed);
    // Subscribing twice keeps one entry.
    store.set_subscribed("Sub", true).unwrap();
    assert_eq!(store.subscriptions().unwrap().len(), 2);
    store.set_subscribed("Sub", false).unwrap();
    store.set_subscribed("Ghost", false).unwrap();
    assert!(store.subscriptions().unwrap().is_empty());
    assert!(!find(&*store, "Sub").unwrap().subscribed);
    // Unsubscribing something not subscribed is fine.
    store.set_subscribed("Never", false).unwrap();
    assert!(store.subscriptions().unwrap().is_empty());
}

pub fn subscriptions_persist_after_reopen(target: &dyn ConformanceTarget) {
    let store = target.open();
    let nested_name = nested(&*store, &["Lists", "Rust"]);
    store.create_mailbox(&nested_name, None).unwrap();
    store.set_subscribed(&nested_name, true).unwrap();
    store.set_subscribed("INBOX", true).unwrap();
    store.set_subscribed("Elsewhere", true).unwrap();
    drop(store);
    let store = target.open();
    let mut subs = store.subscriptions().unwrap();
    subs.sort();
    let mut expected = vec![
        "Elsewhere".to_string(),
        "INBOX".to_string(),
        nested_name.clone(),
    ];
    expected.sort();
    assert_eq!(subs, expected);
    assert!(find(&*store, &nested_name).unwrap().subscribed);
    assert!(find(&*store, "INBOX").unwrap().subscribed);
}

// ---------------------------------------------------------------------------------------
// Saving and reading

pub fn save_keeps_guid_uid_dates_flags_keywords(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Box", None).unwrap();
    let mut mb = open(&*store, "Box");
    let body = b"From: x@example.com\r\nSubject: meta\r\n\r\nhello\r\n";
    let guid = Guid::from_bytes("3c2ae0c4b3d8a85d6d7e0000c0ffee01");
    let saved = save_all(
        &mut *mb,
        vec![(
            NewMail {
                guid: Some(guid.clone()),
                uid: Some(Uid(42)),
                received_date: Some(1_000_000_000),
                saved_date: None,
                flags: Flags::SEEN | Flags::FLAGGED,
                keywords: kw(&["$Forwarded", "Junk"]),
                pop3: Default::default(),
            },
            body,
        )],
    );
    assert_eq!(saved, [Uid(42)]);
    for store in [store, target.open()] {
        let mut mb = open(&*store, "Box");
        let r = record(&mut *mb, Uid(42));
        assert_eq!(r.guid, guid);
        assert_eq!(r.received_date, 1_000_000_000);
        assert_eq!(flags_of(&r), Flags::SEEN | Flags::FLAGGED);
        assert_eq!(sorted_keywords(&r.keywords), kw(&["$Forwarded", "Junk"]));
        assert_eq!(r.physical_size, stored(body).len() as u64);
        if let Some(v) = r.virtual_size {
            assert_eq!(v, crate::virtual_size_of(&mut &stored(body)[..]).unwrap());
        }
        assert_body(&mut *mb, Uid(42), body);
        assert_eq!(mb.status().unwrap().uid_next, 43);
    }
}

pub fn save_keeps_saved_date(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    save_all(
        &mut *inbox,
        vec![
            (
                NewMail {
                    saved_date: Some(1_200_000_000),
                    received_date: Some(1_100_000_000),
                    ..NewMail::default()
                },
                b"Subject: a\r\n\r\n",
            ),
            (NewMail::default(), b"Subject: b\r\n\r\n"),
        ],
    );
    for store in [store, target.open()] {
        let mut inbox = open(&*store, "INBOX");
        let records = mails(&mut *inbox);
        assert_eq!(records[0].saved_date, 1_200_000_000);
        assert_eq!(records[0].received_date, 1_100_000_000);
        assert!(
            (records[1].saved_date - t0).abs() < 3600,
            "saved date defaults to now"
        );
        assert!(
            (records[1].received_date - t0).abs() < 3600,
            "received date defaults to now"
        );
        assert_eq!(inbox.status().unwrap().first_saved, Some(1_200_000_000));
    }
}

pub fn generated_guids_are_unique(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    save_n(&mut *inbox, 5);
    save_n(&mut *inbox, 5);
    let records = mails(&mut *inbox);
    assert_eq!(records.len(), 10);
    let mut guids: Vec<Guid> = records.iter().map(|r| r.guid.clone()).collect();
    assert!(guids.iter().all(|g| !g.is_empty()), "GUIDs are never empty");
    guids.sort();
    guids.dedup();
    assert_eq!(guids.len(), 10, "generated GUIDs are unique in the mailbox");
    let mut again = open(&*target.open(), "INBOX");
    let reopened: Vec<Guid> = mails(&mut *again).into_iter().map(|r| r.guid).collect();
    let original: Vec<Guid> = records.into_iter().map(|r| r.guid).collect();
    assert_eq!(reopened, original, "GUIDs are stable across reopen");
}

pub fn uids_ascend_from_one(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    assert_eq!(save_n(&mut *inbox, 3), [Uid(1), Uid(2), Uid(3)]);
    assert_eq!(save_n(&mut *inbox, 2), [Uid(4), Uid(5)]);
    assert_eq!(uids(&mut *inbox), (1..=5).map(Uid).collect::<Vec<_>>());
    let status = inbox.status().unwrap();
    assert_eq!(status.uid_next, 6);
    assert_eq!(status.messages, 5);
    for (uid, n) in [(1, 0), (2, 1), (3, 2), (4, 0), (5, 1)] {
        assert_body(&mut *inbox, Uid(uid), &msg(n));
    }
}

pub fn requested_uid_at_or_above_next_uid_is_granted(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    let with_uid = |uid| NewMail {
        uid: Some(Uid(uid)),
        ..NewMail::default()
    };
    let saved = save_all(
        &mut *inbox,
        vec![
            (with_uid(1), b"a\r\n"),
            (with_uid(10), b"b\r\n"),
            (NewMail::default(), b"c\r\n"),
            (with_uid(100), b"d\r\n"),
        ],
    );
    assert_eq!(saved, [Uid(1), Uid(10), Uid(11), Uid(100)]);
    assert_eq!(inbox.status().unwrap().uid_next, 101);
    assert_body(&mut *inbox, Uid(100), b"d\r\n");
    // NEXTUID exactly is granted too.
    assert_eq!(
        save_all(&mut *inbox, vec![(with_uid(101), b"e\r\n")]),
        [Uid(101)]
    );
    let mut reopened = open(&*target.open(), "INBOX");
    assert_eq!(
        uids(&mut *reopened),
        [Uid(1), Uid(10), Uid(11), Uid(100), Uid(101)]
    );
}

pub fn requested_uid_below_next_uid_is_reassigned(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    save_n(&mut *inbox, 3);
    let with_uid = |uid| NewMail {
        uid: Some(Uid(uid)),
        ..NewMail::default()
    };
    let saved = save_all(
        &mut *inbox,
        vec![
            (with_uid(2), b"low\r\n"),
            (with_uid(20), b"high\r\n"),
            (with_uid(5), b"below the previous one\r\n"),
        ],
    );
    assert_eq!(
        saved[0],
        Uid(4),
        "UID 2 is taken: the next free UID is used"
    );
    assert_eq!(saved[1], Uid(20));
    assert_eq!(
        saved[2],
        Uid(21),
        "must be above UIDs given earlier in the commit"
    );
    assert_body(&mut *inbox, Uid(2), &msg(1));
    assert_body(&mut *inbox, Uid(4), b"low\r\n");
    assert_body(&mut *inbox, Uid(21), b"below the previous one\r\n");
    assert_eq!(inbox.status().unwrap().uid_next, 22);
}

pub fn uids_not_reused_after_expunging_last(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    save_n(&mut *inbox, 3);
    expunge(&mut *inbox, &[Uid(3)]);
    assert_eq!(inbox.status().unwrap().uid_next, 4);
    assert_eq!(save_one(&mut *inbox, b"next\r\n"), Uid(4));
    expunge(&mut *inbox, &[Uid(1), Uid(2), Uid(4)]);
    drop(inbox);
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    assert!(mails(&mut *inbox).is_empty());
    assert_eq!(
        inbox.status().unwrap().uid_next,
        5,
        "NEXTUID kept when empty"
    );
    assert_eq!(save_one(&mut *inbox, b"after reopen\r\n"), Uid(5));
    assert_eq!(
        save_all(
            &mut *inbox,
            vec![(
                NewMail {
                    uid: Some(Uid(4)),
                    ..NewMail::default()
                },
                b"old uid\r\n"
            )]
        ),
        [Uid(6)],
        "an expunged UID is not given again on request"
    );
}

pub fn uid_next_persists_across_reopen(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Box", None).unwrap();
    let mut mb = open(&*store, "Box");
    save_all(
        &mut *mb,
        vec![(
            NewMail {
                uid: Some(Uid(500)),
                ..NewMail::default()
            },
            b"x\r\n",
        )],
    );
    drop(mb);
    drop(store);
    let store = target.open();
    let mut mb = open(&*store, "Box");
    assert_eq!(mb.status().unwrap().uid_next, 501);
    assert_eq!(save_one(&mut *mb, b"y\r\n"), Uid(501));
    let mut again = open(&*target.open(), "Box");
    assert_eq!(again.status().unwrap().uid_next, 502);
}

pub fn uid_validity_is_nonzero_and_stable(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("One", None).unwrap();
    store.create_mailbox("Two", None).unwrap();
    let mut one = open(&*store, "One");
    let v1 = one.status().unwrap().uid_validity;
    assert_ne!(v1, 0);
    let mut tx = one.begin().unwrap();
    tx.save(NewMail::default(), &mut &b"x\r\n"[..]).unwrap();
    let result = tx.commit().unwrap();
    assert_eq!(
        result.uid_validity, v1,
        "commit reports the mailbox UIDVALIDITY"
    );
    assert_eq!(
        one.status().unwrap().uid_validity,
        v1,
        "saving keeps UIDVALIDITY"
    );
    let v2 = open(&*store, "Two").status().unwrap().uid_validity;
    assert_ne!(v2, 0);
    let inbox_v = open(&*store, "INBOX").status().unwrap().uid_validity;
    assert_ne!(inbox_v, 0);
    let reopened = target.open();
    assert_eq!(open(&*reopened, "One").status().unwrap().uid_validity, v1);
    assert_eq!(open(&*reopened, "Two").status().unwrap().uid_validity, v2);
    assert_eq!(
        open(&*reopened, "INBOX").status().unwrap().uid_validity,
        inbox_v
    );
}

pub fn recreated_mailbox_is_new(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Again", None).unwrap();
    let mut mb = open(&*store, "Again");
    save_n(&mut *mb, 2);
    let old = mb.status().unwrap();
    drop(mb);
    store.delete_mailbox("Again").unwrap();
    store.create_mailbox("Again", None).unwrap();
    let mut mb = open(&*store, "Again");
    let new = mb.status().unwrap();
    assert!(mails(&mut *mb).is_empty(), "no old messages");
    assert_eq!(new.messages, 0);
    assert!(
        new.uid_validity != old.uid_validity || new.guid != old.guid,
        "a re-created mailbox differs in UIDVALIDITY or GUID"
    );
    assert_eq!(save_one(&mut *mb, b"fresh\r\n"), Uid(1));
}

pub fn status_counts(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    let bodies: [&[u8]; 3] = [b"a\nb\n", b"c\r\nd\r\n", b"e\n"];
    save_all(
        &mut *inbox,
        vec![
            (
                NewMail {
                    flags: Flags::SEEN,
                    saved_date: Some(1_300_000_000),
                    ..NewMail::default()
                },
                bodies[0],
            ),
            (NewMail::default(), bodies[1]),
            (
                NewMail {
                    flags: Flags::FLAGGED,
                    ..NewMail::default()
                },
                bodies[2],
            ),
        ],
    );
    for store in [store, target.open()] {
        let mut inbox = open(&*store, "INBOX");
        let status = inbox.status().unwrap();
        assert_eq!(status.messages, 3);
        assert_eq!(status.unseen, 2);
        assert_eq!(status.vsize, 6 + 6 + 3);
        assert_eq!(status.uid_next, 4);
        assert!(status.recent <= 3);
        assert_eq!(status.first_saved, Some(1_300_000_000));
    }
    let mut inbox = open(&*target.open(), "INBOX");
    update(&mut *inbox, Uid(2), FlagOp::Add, Flags::SEEN, &[]);
    expunge(&mut *inbox, &[Uid(1)]);
    let status = inbox.status().unwrap();
    assert_eq!((status.messages, status.unseen, status.vsize), (2, 1, 9));
    assert_eq!(status.uid_next, 4);
}

pub fn message_bytes_round_trip(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    let bodies: Vec<&[u8]> = vec![
        b"",
        b"Subject: lf\n\nline\n",
        b"Subject: crlf\r\n\r\nline\r\n",
        b"Subject: mixed\r\n\nline\r\nline\n\r\n",
        b"Subject: nul\r\n\r\na\0b\0\0c\r\n",
        b"Subject: 8bit\r\n\r\n\xe4\xf6\xfc \xff\xfe\x80 caf\xc3\xa9\r\n",
        b"Subject: no final newline\r\n\r\nend",
        b"From nobody Mon Jan  1 00:00:00 2001\n>From x\nFrom y\n\n",
        b"\r",
        b"\n",
    ];
    let saved = save_all(
        &mut *inbox,
        bodies.iter().map(|b| (NewMail::default(), *b)).collect(),
    );
    for store in [store, target.open()] {
        let mut inbox = open(&*store, "INBOX");
        for (uid, body) in saved.iter().zip(&bodies) {
            assert_body(&mut *inbox, *uid, body);
            assert_eq!(
                record(&mut *inbox, *uid).physical_size,
                stored(body).len() as u64
            );
        }
    }
}

pub fn large_message_round_trip(target: &dyn ConformanceTarget) {
    const LEN: u64 = 5 * 1024 * 1024 + 7;
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    let policy = store.save_line_endings();
    let expected = digest(&mut crate::lines::LineEndingReader::new(
        GeneratedBody::new(LEN, 0x5eed),
        policy,
    ));
    let mut tx = inbox.begin().unwrap();
    tx.save(NewMail::default(), &mut GeneratedBody::new(LEN, 0x5eed))
        .unwrap();
    let uid = tx.commit().unwrap().saved[0];
    for store in [store, target.open()] {
        let mut inbox = open(&*store, "INBOX");
        let mut reader = inbox.open_mail(uid).unwrap();
        assert_eq!(digest(&mut reader), expected, "length, hash and vsize");
        drop(reader);
        assert_eq!(record(&mut *inbox, uid).physical_size, expected.0);
        assert_eq!(inbox.virtual_size(uid).unwrap(), expected.2);
    }
}

pub fn virtual_size_counts_bare_lf_as_crlf(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    let cases: [(&[u8], u64); 5] = [
        (b"a\nb\n", 6),
        (b"a\r\nb\r\n", 6),
        (b"a\r\n\n\r\r\n", 8),
        (b"", 0),
        (b"no newline", 10),
    ];
    let saved = save_all(
        &mut *inbox,
        cases
            .iter()
            .map(|(b, _)| (NewMail::default(), *b))
            .collect(),
    );
    let policy = LINE_ENDINGS.with(|c| c.get());
    let mut total = 0;
    for (uid, (body, vsize)) in saved.iter().zip(cases) {
        // The table is for bytes kept as given; a converting store holds converted bytes.
        let vsize = if policy == SaveLineEndings::AsIs {
            vsize
        } else {
            crate::virtual_size_of(&mut &stored(body)[..]).unwrap()
        };
        total += vsize;
        assert_eq!(inbox.virtual_size(*uid).unwrap(), vsize, "{body:?}");
        if let Some(v) = record(&mut *inbox, *uid).virtual_size {
            assert_eq!(v, vsize, "record vsize of {body:?}");
        }
    }
    assert_eq!(inbox.status().unwrap().vsize, total);
}

// ---------------------------------------------------------------------------------------
// Flags and keywords

pub fn flag_updates_on_system_flags(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    let uid = save_one(&mut *inbox, b"Subject: flags\r\n\r\n");
    assert_eq!(flags_of(&record(&mut *inbox, uid)), Flags::EMPTY);
    update(
        &mut *inbox,
        uid,
        FlagOp::Add,
        Flags::SEEN | Flags::ANSWERED,
        &[],
    );
    assert_eq!(
        flags_of(&record(&mut *inbox, uid)),
        Flags::SEEN | Flags::ANSWERED
    );
    update(&mut *inbox, uid, FlagOp::Add, Flags::FLAGGED, &[]);
    assert_eq!(
        flags_of(&record(&mut *inbox, uid)),
        Flags::SEEN | Flags::ANSWERED | Flags::FLAGGED
    );
    update(&mut *inbox, uid, FlagOp::Remove, Flags::ANSWERED, &[]);
    assert_eq!(
        flags_of(&record(&mut *inbox, uid)),
        Flags::SEEN | Flags::FLAGGED
    );
    update(
        &mut *inbox,
        uid,
        FlagOp::Replace,
        Flags::DRAFT | Flags::DELETED,
        &[],
    );
    assert_eq!(
        flags_of(&record(&mut *inbox, uid)),
        Flags::DRAFT | Flags::DELETED
    );
    let mut reopened = open(&*target.open(), "INBOX");
    assert_eq!(
        flags_of(&record(&mut *reopened, uid)),
        Flags::DRAFT | Flags::DELETED
    );
    update(&mut *inbox, uid, FlagOp::Replace, Flags::EMPTY, &[]);
    assert_eq!(flags_of(&record(&mut *inbox, uid)), Flags::EMPTY);
    assert_body(&mut *inbox, uid, b"Subject: flags\r\n\r\n");
}

pub fn flag_updates_on_keywords(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    let uid = save_one(&mut *inbox, b"Subject: keywords\r\n\r\n");
    let other = save_one(&mut *inbox, b"Subject: other\r\n\r\n");
    update(
        &mut *inbox,
        uid,
        FlagOp::Add,
        Flags::EMPTY,
        &["Work", "Later"],
    );
    assert_eq!(
        sorted_keywords(&record(&mut *inbox, uid).keywords),
        kw(&["Later", "Work"])
    );
    update(
        &mut *inbox,
        uid,
        FlagOp::Add,
        Flags::SEEN,
        &["Work", "Todo"],
    );
    let r = record(&mut *inbox, uid);
    assert_eq!(sorted_keywords(&r.keywords), kw(&["Later", "Todo", "Work"]));
    assert_eq!(flags_of(&r), Flags::SEEN);
    update(&mut *inbox, uid, FlagOp::Remove, Flags::EMPTY, &["Later"]);
    assert_eq!(
        sorted_keywords(&record(&mut *inbox, uid).keywords),
        kw(&["Todo", "Work"])
    );
    update(&mut *inbox, uid, FlagOp::Replace, Flags::FLAGGED, &["Only"]);
    let r = record(&mut *inbox, uid);
    assert_eq!(r.keywords, kw(&["Only"]));
    assert_eq!(flags_of(&r), Flags::FLAGGED);
    assert!(
        record(&mut *inbox, other).keywords.is_empty(),
        "other messages untouched"
    );
    let mut reopened = open(&*target.open(), "INBOX");
    let r = record(&mut *reopened, uid);
    assert_eq!(r.keywords, kw(&["Only"]));
    assert_eq!(flags_of(&r), Flags::FLAGGED);
    update(&mut *inbox, uid, FlagOp::Replace, Flags::EMPTY, &[]);
    assert!(record(&mut *inbox, uid).keywords.is_empty());
}

pub fn keyword_bytes_round_trip(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    let words = [
        "$Forwarded",
        "Junk",
        "NonJunk",
        "$label1",
        "$MDNSent",
        "a.b-c_d",
    ];
    let saved = save_all(
        &mut *inbox,
        vec![(
            NewMail {
                keywords: kw(&words[..3]),
                ..NewMail::default()
            },
            b"Subject: kw\r\n\r\n",
        )],
    );
    update(
        &mut *inbox,
        saved[0],
        FlagOp::Add,
        Flags::EMPTY,
        &words[3..],
    );
    let mut expected = kw(&words);
    expected.sort();
    for store in [store, target.open()] {
        let mut inbox = open(&*store, "INBOX");
        assert_eq!(
            sorted_keywords(&record(&mut *inbox, saved[0]).keywords),
            expected
        );
    }
}

pub fn many_keywords_in_one_mailbox(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    // 26 distinct keywords: the Maildir limit (letters a-z in filenames).
    let words: Vec<String> = (0..26).map(|i| format!("kw{i:02}")).collect();
    let word_refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut mails_to_save = Vec::new();
    for chunk in word_refs.chunks(5) {
        mails_to_save.push(NewMail {
            keywords: kw(chunk),
            ..NewMail::default()
        });
    }
    let saved = save_all(
        &mut *inbox,
        mails_to_save
            .into_iter()
            .map(|m| (m, &b"Subject: many\r\n\r\n"[..]))
            .collect(),
    );
    let all_uid = save_one(&mut *inbox, b"Subject: all\r\n\r\n");
    update(&mut *inbox, all_uid, FlagOp::Add, Flags::EMPTY, &word_refs);
    for store in [store, target.open()] {
        let mut inbox = open(&*store, "INBOX");
        for (uid, chunk) in saved.iter().zip(word_refs.chunks(5)) {
            assert_eq!(
                sorted_keywords(&record(&mut *inbox, *uid).keywords),
                kw(chunk)
            );
        }
        assert_eq!(
            sorted_keywords(&record(&mut *inbox, all_uid).keywords),
            kw(&word_refs)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Expunge and transactions

pub fn expunge_removes_message(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    save_n(&mut *inbox, 3);
    expunge(&mut *inbox, &[Uid(2)]);
    assert_eq!(uids(&mut *inbox), [Uid(1), Uid(3)]);
    expect_err(
        inbox.open_mail(Uid(2)),
        ErrorKind::NotFound,
        "open expunged",
    );
    match inbox.open_mail(Uid(2)) {
        Err(crate::Error::MailNotFound(Uid(2))) => {}
        Err(e) => panic!("expected MailNotFound(2), got {e}"),
        Ok(_) => panic!("expunged message still readable"),
    }
    assert_body(&mut *inbox, Uid(3), &msg(2));
    assert_eq!(inbox.status().unwrap().messages, 2);
    let mut reopened = open(&*target.open(), "INBOX");
    assert_eq!(uids(&mut *reopened), [Uid(1), Uid(3)]);
    expect_err(
        reopened.open_mail(Uid(2)),
        ErrorKind::NotFound,
        "after reopen",
    );
    expect_err(
        reopened.open_mail(Uid(99)),
        ErrorKind::NotFound,
        "never existed",
    );
}

pub fn rollback_changes_nothing(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    let kept = save_one(&mut *inbox, b"Subject: kept\r\n\r\n");
    let before = inbox.status().unwrap();
    let mut tx = inbox.begin().unwrap();
    tx.save(NewMail::default(), &mut &b"Subject: gone\r\n\r\n"[..])
        .unwrap();
    tx.update_flags(
        kept,
        &FlagUpdate {
            op: FlagOp::Add,
            flags: Flags::SEEN,
            keywords: kw(&["Nope"]),
        },
    )
    .unwrap();
    tx.expunge(kept).unwrap();
    tx.rollback();
    inbox.sync().unwrap();
    let after = inbox.status().unwrap();
    assert_eq!(uids(&mut *inbox), [kept]);
    assert_eq!(after.uid_next, before.uid_next, "NEXTUID unchanged");
    assert_eq!(after.messages, 1);
    let r = record(&mut *inbox, kept);
    assert_eq!(flags_of(&r), Flags::EMPTY);
    assert!(r.keywords.is_empty());
    let mut reopened = open(&*target.open(), "INBOX");
    assert_eq!(uids(&mut *reopened), [kept]);
    assert_eq!(reopened.status().unwrap().uid_next, before.uid_next);
    assert_eq!(save_one(&mut *inbox, b"next\r\n"), Uid(2));
}

pub fn dropped_transaction_changes_nothing(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    let kept = save_one(&mut *inbox, b"Subject: kept\r\n\r\n");
    {
        let mut tx = inbox.begin().unwrap();
        tx.save(NewMail::default(), &mut &b"Subject: dropped\r\n\r\n"[..])
            .unwrap();
        tx.update_flags(
            kept,
            &FlagUpdate {
                op: FlagOp::Add,
                flags: Flags::FLAGGED,
                keywords: Vec::new(),
            },
        )
        .unwrap();
        tx.expunge(kept).unwrap();
        drop(tx);
    }
    inbox.sync().unwrap();
    assert_eq!(uids(&mut *inbox), [kept]);
    assert_eq!(flags_of(&record(&mut *inbox, kept)), Flags::EMPTY);
    assert_eq!(inbox.status().unwrap().uid_next, 2);
    let mut reopened = open(&*target.open(), "INBOX");
    assert_eq!(uids(&mut *reopened), [kept]);
    assert_eq!(save_one(&mut *reopened, b"next\r\n"), Uid(2));
}

pub fn mixed_transaction_commits_together(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    save_n(&mut *inbox, 3);
    // Another handle's view before the commit.
    let mut other = open(&*store, "INBOX");
    let mut tx = inbox.begin().unwrap();
    tx.save(NewMail::default(), &mut &b"Subject: new one\r\n\r\n"[..])
        .unwrap();
    tx.update_flags(
        Uid(1),
        &FlagUpdate {
            op: FlagOp::Add,
            flags: Flags::SEEN,
            keywords: kw(&["Done"]),
        },
    )
    .unwrap();
    tx.expunge(Uid(2)).unwrap();
    tx.save(NewMail::default(), &mut &b"Subject: new two\r\n\r\n"[..])
        .unwrap();
    // Nothing visible before commit.
    other.sync().unwrap();
    assert_eq!(uids(&mut *other), [Uid(1), Uid(2), Uid(3)]);
    assert_eq!(flags_of(&record(&mut *other, Uid(1))), Flags::EMPTY);
    let result = tx.commit().unwrap();
    assert_eq!(result.saved, [Uid(4), Uid(5)]);
    for mailbox in [&mut inbox, &mut other] {
        mailbox.sync().unwrap();
        assert_eq!(uids(&mut **mailbox), [Uid(1), Uid(3), Uid(4), Uid(5)]);
        let r = record(&mut **mailbox, Uid(1));
        assert_eq!(flags_of(&r), Flags::SEEN);
        assert_eq!(r.keywords, kw(&["Done"]));
        assert_body(&mut **mailbox, Uid(5), b"Subject: new two\r\n\r\n");
    }
}

pub fn concurrent_transactions_get_distinct_uids(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut first = open(&*store, "INBOX");
    let other_store = target.open();
    let mut second = open(&*other_store, "INBOX");
    save_n(&mut *first, 1);
    // `first` starts a transaction, `second` commits in between: UIDs are assigned at
    // commit, so they don't collide, and a requested UID is judged against NEXTUID then.
    let mut tx = first.begin().unwrap();
    tx.save(NewMail::default(), &mut &b"Subject: first\r\n\r\n"[..])
        .unwrap();
    tx.save(
        NewMail {
            uid: Some(Uid(3)),
            ..NewMail::default()
        },
        &mut &b"Subject: first, wants 3\r\n\r\n"[..],
    )
    .unwrap();
    let second_uids = save_all(
        &mut *second,
        vec![
            (NewMail::default(), b"Subject: second a\r\n\r\n"),
            (NewMail::default(), b"Subject: second b\r\n\r\n"),
        ],
    );
    assert_eq!(second_uids, [Uid(2), Uid(3)]);
    let first_uids = tx.commit().unwrap().saved;
    assert_eq!(
        first_uids,
        [Uid(4), Uid(5)],
        "UIDs come from NEXTUID at commit; UID 3 was taken meanwhile"
    );
    for mailbox in [&mut first, &mut second] {
        mailbox.sync().unwrap();
        assert_eq!(uids(&mut **mailbox), (1..=5).map(Uid).collect::<Vec<_>>());
        assert_body(&mut **mailbox, Uid(3), b"Subject: second b\r\n\r\n");
        assert_body(&mut **mailbox, Uid(5), b"Subject: first, wants 3\r\n\r\n");
        assert_eq!(mailbox.status().unwrap().uid_next, 6);
    }
}

pub fn update_or_expunge_of_missing_uid_is_not_found(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    save_n(&mut *inbox, 2);
    expunge(&mut *inbox, &[Uid(2)]);
    let mut tx = inbox.begin().unwrap();
    let set_seen = FlagUpdate {
        op: FlagOp::Add,
        flags: Flags::SEEN,
        keywords: Vec::new(),
    };
    expect_err(
        tx.update_flags(Uid(2), &set_seen),
        ErrorKind::NotFound,
        "update expunged",
    );
    expect_err(
        tx.update_flags(Uid(77), &set_seen),
        ErrorKind::NotFound,
        "update never existing",
    );
    expect_err(
        tx.expunge(Uid(77)),
        ErrorKind::NotFound,
        "expunge never existing",
    );
    tx.rollback();
    inbox.sync().unwrap();
    assert_eq!(uids(&mut *inbox), [Uid(1)]);
    assert_eq!(flags_of(&record(&mut *inbox, Uid(1))), Flags::EMPTY);
}

// ---------------------------------------------------------------------------------------
// Handles and persistence

pub fn second_handle_sees_changes_after_sync(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Shared", None).unwrap();
    let mut writer = open(&*store, "Shared");
    let other_store = target.open();
    let mut reader = open(&*other_store, "Shared");
    let mut same_store_reader = open(&*store, "Shared");
    save_n(&mut *writer, 2);
    update(
        &mut *writer,
        Uid(1),
        FlagOp::Add,
        Flags::SEEN,
        &["Seen-By-Writer"],
    );
    for r in [&mut reader, &mut same_store_reader] {
        r.sync().unwrap();
        assert_eq!(uids(&mut **r), [Uid(1), Uid(2)]);
        let rec = record(&mut **r, Uid(1));
        assert_eq!(flags_of(&rec), Flags::SEEN);
        assert_eq!(rec.keywords, kw(&["Seen-By-Writer"]));
        assert_eq!(r.status().unwrap().uid_next, 3);
        assert_body(&mut **r, Uid(2), &msg(1));
    }
    // And the other way round, including an expunge.
    expunge(&mut *reader, &[Uid(1)]);
    save_one(&mut *reader, b"from reader\r\n");
    writer.sync().unwrap();
    assert_eq!(uids(&mut *writer), [Uid(2), Uid(3)]);
    assert_body(&mut *writer, Uid(3), b"from reader\r\n");
    expect_err(
        writer.open_mail(Uid(1)),
        ErrorKind::NotFound,
        "expunged elsewhere",
    );
}

pub fn new_store_handle_sees_committed_state(target: &dyn ConformanceTarget) {
    let store = target.open();
    let parent = if store.selectable_parents() {
        "Folder"
    } else {
        "Folders"
    };
    let sub = nested(&*store, &[parent, "Sub"]);
    store.create_mailbox("Folder", None).unwrap();
    store.create_mailbox(&sub, None).unwrap();
    store.set_subscribed("Folder", true).unwrap();
    let mut folder = open(&*store, "Folder");
    save_all(
        &mut *folder,
        vec![
            (
                NewMail {
                    flags: Flags::ANSWERED,
                    keywords: kw(&["Important"]),
                    ..NewMail::default()
                },
                b"Subject: 1\r\n\r\n",
            ),
            (NewMail::default(), b"Subject: 2\r\n\r\n"),
        ],
    );
    expunge(&mut *folder, &[Uid(2)]);
    let status = folder.status().unwrap();
    let records = mails(&mut *folder);
    drop(folder);
    drop(store);

    let store = target.open();
    let mut expected = vec!["Folder".to_string(), "INBOX".to_string(), sub.clone()];
    expected.sort();
    assert_eq!(existing_names(&*store), expected);
    assert!(find(&*store, "Folder").unwrap().subscribed);
    let mut folder = open(&*store, "Folder");
    let now = folder.status().unwrap();
    assert_eq!(now.uid_validity, status.uid_validity);
    assert_eq!(now.uid_next, status.uid_next);
    assert_eq!(now.messages, 1);
    assert_eq!(now.guid, status.guid);
    assert!(now.highest_modseq >= status.highest_modseq);
    let again = mails(&mut *folder);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].uid, records[0].uid);
    assert_eq!(again[0].guid, records[0].guid);
    assert_eq!(flags_of(&again[0]), Flags::ANSWERED);
    assert_eq!(again[0].keywords, kw(&["Important"]));
    assert_body(&mut *folder, Uid(1), b"Subject: 1\r\n\r\n");
}

// ---------------------------------------------------------------------------------------
// Modseqs

pub fn highest_modseq_never_decreases(target: &dyn ConformanceTarget) {
    let store = target.open();
    let mut inbox = open(&*store, "INBOX");
    let mut seen = vec![highest_modseq(&mut *inbox)];
    save_n(&mut *inbox, 3);
    seen.push(highest_modseq(&mut *inbox));
    update(&mut *inbox, Uid(1), FlagOp::Add, Flags::SEEN, &["K"]);
    seen.push(highest_modseq(&mut *inbox));
    expunge(&mut *inbox, &[Uid(3)]);
    seen.push(highest_modseq(&mut *inbox));
    drop(inbox);
    let mut reopened = open(&*target.open(), "INBOX");
    seen.push(highest_modseq(&mut *reopened));
    update(&mut *reopened, Uid(2), FlagOp::Add, Flags::FLAGGED, &[]);
    seen.push(highest_modseq(&mut *reopened));
    expunge(&mut *reopened, &[Uid(1), Uid(2)]);
    seen.push(highest_modseq(&mut *reopened));
    let mut again = open(&*target.open(), "INBOX");
    seen.push(highest_modseq(&mut *again));
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "HIGHESTMODSEQ decreased: {seen:?}"
    );
}

/// Checks a `changes_since` answer against what really happened; `Unknown` is allowed.
fn check_changes(
    mailbox: &mut dyn Mailbox,
    since: u64,
    changed: &[u32],
    expunged: &[(u32, &Guid)],
) {
    let current = mailbox.status().unwrap().highest_modseq;
    let changes = mailbox.changes_since(ModSeq(since)).expect("changes_since");
    // the expunges alone are those of the whole answer
    let alone = mailbox
        .expunged_since(ModSeq(since))
        .expect("expunged_since");
    let sorted = |mut v: Vec<(Uid, Option<Guid>)>| {
        v.sort();
        v
    };
    match &changes {
        Changes::Known { expunged, .. } => assert_eq!(
            alone.map(sorted),
            Some(sorted(expunged.clone())),
            "expunged_since({since}) against changes_since"
        ),
        _ => assert_eq!(
            alone, None,
            "expunged_since({since}) where changes are unknown"
        ),
    }
    match changes {
        Changes::Unknown => {}
        Changes::Known {
            changed: got_changed,
            expunged: got_expunged,
            highest_modseq,
        } => {
            let mut got: Vec<u32> = got_changed.iter().map(|u| u.0).collect();
            got.sort_unstable();
            got.dedup();
            assert_eq!(got, changed, "changed UIDs since modseq {since}");
            let mut got_exp: Vec<(Uid, Option<Guid>)> = got_expunged;
            got_exp.sort();
            got_exp.dedup();
            let got_uids: Vec<u32> = got_exp.iter().map(|(u, _)| u.0).collect();
            let want_uids: Vec<u32> = expunged.iter().map(|(u, _)| *u).collect();
            assert_eq!(got_uids, want_uids, "expunged UIDs since modseq {since}");
            for ((_, got_guid), (_, want_guid)) in got_exp.iter().zip(expunged) {
                if let Some(g) = got_guid {
                    assert!(
                        g.same_as(want_guid),
                        "GUID of an expunged message: {g} for {want_guid}"
                    );
                }
            }
            assert!(
                highest_modseq.0 >= current,
                "changes_since reports HIGHESTMODSEQ {highest_modseq}, below status {current}"
            );
        }
    }
}

pub fn changes_since_is_exact_when_known(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Changes", None).unwrap();
    let mut mb = open(&*store, "Changes");
    let m0 = highest_modseq(&mut *mb);
    save_n(&mut *mb, 4);
    let m1 = highest_modseq(&mut *mb);
    let guids: Vec<Guid> = mails(&mut *mb).into_iter().map(|r| r.guid).collect();
    check_changes(&mut *mb, m1, &[], &[]);
    check_changes(&mut *mb, m0, &[1, 2, 3, 4], &[]);

    update(&mut *mb, Uid(2), FlagOp::Add, Flags::SEEN, &[]);
    let m2 = highest_modseq(&mut *mb);
    check_changes(&mut *mb, m1, &[2], &[]);
    check_changes(&mut *mb, m2, &[], &[]);

    expunge(&mut *mb, &[Uid(3)]);
    let m3 = highest_modseq(&mut *mb);
    check_changes(&mut *mb, m2, &[], &[(3, &guids[2])]);
    check_changes(&mut *mb, m1, &[2], &[(3, &guids[2])]);

    let uid5 = save_one(&mut *mb, b"Subject: five\r\n\r\n");
    assert_eq!(uid5, Uid(5));
    update(&mut *mb, Uid(4), FlagOp::Add, Flags::EMPTY, &["Tag"]);
    let m4 = highest_modseq(&mut *mb);
    check_changes(&mut *mb, m3, &[4, 5], &[]);
    check_changes(&mut *mb, m2, &[4, 5], &[(3, &guids[2])]);
    check_changes(&mut *mb, m0, &[1, 2, 4, 5], &[(3, &guids[2])]);

    for r in mails(&mut *mb) {
        assert!(r.modseq.0 <= m4, "per-message modseq above HIGHESTMODSEQ");
    }
    assert!(m0 <= m1 && m1 <= m2 && m2 <= m3 && m3 <= m4);

    // A new handle (after reopen) agrees.
    let mut reopened = open(&*target.open(), "Changes");
    assert!(highest_modseq(&mut *reopened) >= m4);
    check_changes(&mut *reopened, m3, &[4, 5], &[]);
    check_changes(&mut *reopened, m1, &[2, 4, 5], &[(3, &guids[2])]);
}

/// `flag_changes_since` tells each message's own flag and keyword changes after a modseq,
/// a later change of a flag cancelling an earlier opposite one, and leaves out changes of
/// transactions marked as made by a sync (`Transaction::mark_as_sync`) — also after a
/// reopen. Every backend here keeps that history (the sync engine's per-flag merge).
pub fn flag_changes_since_tells_own_changes_not_a_syncs(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("FlagLog", None).unwrap();
    let mut mb = open(&*store, "FlagLog");
    save_n(&mut *mb, 3);
    let m0 = highest_modseq(&mut *mb);
    update(&mut *mb, Uid(1), FlagOp::Add, Flags::SEEN, &["Todo"]);
    update(&mut *mb, Uid(1), FlagOp::Add, Flags::FLAGGED, &[]);
    update(&mut *mb, Uid(1), FlagOp::Remove, Flags::SEEN, &[]);
    let m1 = highest_modseq(&mut *mb);
    update(&mut *mb, Uid(2), FlagOp::Add, Flags::ANSWERED, &[]);
    // A sync's change of message 3: not this side's own.
    let mut tx = mb.begin().expect("begin");
    tx.mark_as_sync();
    tx.update_flags(
        Uid(3),
        &FlagUpdate {
            op: FlagOp::Add,
            flags: Flags::DRAFT,
            keywords: kw(&["Copied"]),
        },
    )
    .expect("update_flags");
    tx.commit().expect("commit");
    assert!(mails(&mut *mb)[2].flags.contains(Flags::DRAFT));
    let all = [Uid(1), Uid(2), Uid(3)];
    let check = |mb: &mut dyn Mailbox| {
        let mut got = mb
            .flag_changes_since(ModSeq(m0), &all)
            .expect("flag_changes_since");
        got.sort_by_key(|(u, _)| *u);
        assert_eq!(
            got,
            vec![
                (
                    Uid(1),
                    FlagChange {
                        add: Flags::FLAGGED,
                        remove: Flags::SEEN,
                        keywords_added: kw(&["Todo"]),
                        keywords_removed: Vec::new(),
                    }
                ),
                (
                    Uid(2),
                    FlagChange {
                        add: Flags::ANSWERED,
                        ..Default::default()
                    }
                ),
            ],
            "flag changes since modseq {m0}"
        );
        // Only the asked UIDs, only after the modseq.
        assert_eq!(
            mb.flag_changes_since(ModSeq(m1), &[Uid(1), Uid(3)])
                .expect("flag_changes_since"),
            Vec::new(),
            "no change of 1 or 3 since modseq {m1}"
        );
    };
    check(&mut *mb);
    check(&mut *open(&*target.open(), "FlagLog"));
}

/// A saved POP3 UIDL and order come back from `pop3_info`, also after a reopen and for a
/// message saved without them (none); a backend that keeps none saves the message anyway.
pub fn pop3_uidl_and_order_round_trip(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Pop", None).unwrap();
    let mut mb = open(&*store, "Pop");
    let kept = Pop3Info {
        uidl: b"UID17-1300000000".to_vec(),
        order: 3,
    };
    let only_uidl = Pop3Info {
        uidl: b"000001a24f3c".to_vec(),
        order: 0,
    };
    let uids = save_all(
        &mut *mb,
        vec![
            (
                NewMail {
                    pop3: kept.clone(),
                    ..Default::default()
                },
                &b"Subject: one\r\n\r\n1\r\n"[..],
            ),
            (NewMail::default(), &b"Subject: two\r\n\r\n2\r\n"[..]),
            (
                NewMail {
                    pop3: only_uidl.clone(),
                    ..Default::default()
                },
                &b"Subject: three\r\n\r\n3\r\n"[..],
            ),
        ],
    );
    let want = if target.keeps_pop3() {
        vec![kept, Pop3Info::default(), only_uidl]
    } else {
        vec![Pop3Info::default(); 3]
    };
    for store in [store, target.open()] {
        let mut mb = open(&*store, "Pop");
        let got: Vec<Pop3Info> = uids
            .iter()
            .map(|u| mb.pop3_info(*u).expect("pop3_info"))
            .collect();
        assert_eq!(got, want);
    }
}

/// A mailbox's sync lock (`Mailbox::lock_for_sync`), where the backend has one, keeps a
/// second taker — another handle, as another process would be — waiting until its timeout
/// (`LockTimeout`), and is free again once the guard is dropped. Other mailboxes are not
/// affected.
pub fn lock_for_sync_excludes_a_second_taker(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Locked", None).unwrap();
    store.create_mailbox("Other", None).unwrap();
    let wait = std::time::Duration::from_millis(200);
    let mut first = open(&*store, "Locked");
    let Some(guard) = first.lock_for_sync(wait).expect("lock_for_sync") else {
        return;
    };
    let other = target.open();
    let mut second = open(&*other, "Locked");
    let started = std::time::Instant::now();
    expect_err(second.lock_for_sync(wait), ErrorKind::Temp, "a held lock");
    assert!(started.elapsed() >= wait, "waited for the timeout");
    let mut elsewhere = open(&*other, "Other");
    assert!(elsewhere
        .lock_for_sync(wait)
        .expect("another mailbox")
        .is_some());
    drop(guard);
    assert!(second.lock_for_sync(wait).expect("released").is_some());
}

/// `Store::deleted_mailboxes` remembers the GUID of a deleted mailbox (with a plausible
/// time), across a new store handle, and not the GUIDs of mailboxes that still exist.
pub fn deleted_mailboxes_lists_a_deleted_guid(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Gone", None).unwrap();
    store.create_mailbox("Kept", None).unwrap();
    let gone = open(&*store, "Gone").status().unwrap().guid;
    let kept = open(&*store, "Kept").status().unwrap().guid;
    assert!(!gone.is_zero());
    let before = store.deleted_mailboxes().unwrap();
    assert!(!before.iter().any(|(g, _)| *g == gone), "not deleted yet");
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    store.delete_mailbox("Gone").unwrap();
    for handle in [store, target.open()] {
        let deleted = handle.deleted_mailboxes().unwrap();
        let (_, when) = deleted
            .iter()
            .find(|(g, _)| *g == gone)
            .unwrap_or_else(|| panic!("deleted GUID {gone} listed: {deleted:?}"));
        assert!(
            (start - 5..=start + 600).contains(when),
            "delete time {when} is about now ({start})"
        );
        assert!(!deleted.iter().any(|(g, _)| *g == kept));
    }
}

/// `Mailbox::update_mailbox` raises NEXTUID and HIGHESTMODSEQ (never lowers them), the
/// next save gets the raised UID, and the values persist. A backend that can't do it says
/// `NotPossible` for the empty update too (the capability probe the sync engine uses).
pub fn update_mailbox_raises_uid_next_and_highest_modseq(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Counters", None).unwrap();
    let mut mb = open(&*store, "Counters");
    save_n(&mut *mb, 2);
    let probe = mb.update_mailbox(&MailboxUpdate::default());
    let update = MailboxUpdate {
        min_uid_next: Some(10),
        min_highest_modseq: Some(500),
        ..Default::default()
    };
    if let Err(e) = probe {
        assert_eq!(e.kind(), ErrorKind::NotPossible, "probe: {e}");
        expect_err(mb.update_mailbox(&update), ErrorKind::NotPossible, "update");
        return;
    }
    let st = mb.status().unwrap();
    assert_eq!(st.uid_next, 3);
    mb.update_mailbox(&update).unwrap();
    let st = mb.status().unwrap();
    assert_eq!(st.uid_next, 10, "NEXTUID raised");
    assert!(st.highest_modseq >= 500, "HIGHESTMODSEQ raised: {st:?}");
    assert_eq!(st.messages, 2, "messages kept");
    // never lowered
    mb.update_mailbox(&MailboxUpdate {
        min_uid_next: Some(4),
        min_highest_modseq: Some(2),
        ..Default::default()
    })
    .unwrap();
    let st2 = mb.status().unwrap();
    assert_eq!(st2.uid_next, 10);
    assert!(st2.highest_modseq >= st.highest_modseq);
    assert_eq!(save_one(&mut *mb, b"after\r\n"), Uid(10));
    drop(mb);
    let reopened = target.open();
    let st3 = open(&*reopened, "Counters").status().unwrap();
    assert_eq!(st3.uid_next, 11, "persists");
    assert!(st3.highest_modseq > 500, "persists and grows with the save");
}

/// `Mailbox::update_mailbox` sets the UIDVALIDITY of an empty mailbox (dsync gives a new
/// copy its source's); the change persists, the GUID stays, and saving works afterwards.
pub fn update_mailbox_sets_uid_validity_of_an_empty_mailbox(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Fresh", None).unwrap();
    let mut mb = open(&*store, "Fresh");
    let before = mb.status().unwrap();
    let wanted = before.uid_validity.wrapping_add(12345).max(1);
    let update = MailboxUpdate {
        uid_validity: Some(wanted),
        ..Default::default()
    };
    if let Err(e) = mb.update_mailbox(&MailboxUpdate::default()) {
        assert_eq!(e.kind(), ErrorKind::NotPossible, "probe: {e}");
        expect_err(mb.update_mailbox(&update), ErrorKind::NotPossible, "update");
        return;
    }
    mb.update_mailbox(&update).unwrap();
    let st = mb.status().unwrap();
    assert_eq!(st.uid_validity, wanted);
    assert_eq!(st.guid, before.guid, "GUID kept");
    assert_eq!(save_one(&mut *mb, b"first\r\n"), Uid(1));
    drop(mb);
    let reopened = target.open();
    let st = open(&*reopened, "Fresh").status().unwrap();
    assert_eq!(st.uid_validity, wanted, "persists");
    assert_eq!(st.messages, 1);
}

/// `Mailbox::counters` gives the same counters as `status` (without the size sum and the
/// first saved date), before and after saves, flag changes and expunges.
pub fn counters_agree_with_status(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Counted", None).unwrap();
    let mut mb = open(&*store, "Counted");
    let check = |mb: &mut Box<dyn Mailbox>, what: &str| {
        let st = mb.status().unwrap();
        let c = mb.counters().unwrap();
        assert_eq!(
            (
                c.uid_validity,
                c.uid_next,
                c.highest_modseq,
                c.messages,
                c.unseen,
                c.guid
            ),
            (
                st.uid_validity,
                st.uid_next,
                st.highest_modseq,
                st.messages,
                st.unseen,
                st.guid
            ),
            "{what}"
        );
        assert_eq!(c.recent, st.recent, "{what}");
    };
    check(&mut mb, "empty");
    let mut t = mb.begin().unwrap();
    for i in 0..3 {
        let body = format!("Subject: c{i}\n\nbody {i}\n");
        t.save(NewMail::default(), &mut body.as_bytes()).unwrap();
    }
    let uids = t.commit().unwrap().saved;
    check(&mut mb, "after saves");
    assert_eq!(mb.counters().unwrap().messages, 3);
    let mut t = mb.begin().unwrap();
    t.update_flags(
        uids[0],
        &FlagUpdate {
            op: FlagOp::Add,
            flags: Flags::SEEN,
            keywords: Vec::new(),
        },
    )
    .unwrap();
    t.expunge(uids[1]).unwrap();
    t.commit().unwrap();
    mb.sync().unwrap();
    check(&mut mb, "after flag change and expunge");
    let c = mb.counters().unwrap();
    assert_eq!((c.messages, c.unseen), (2, 1));
}

/// `Mailbox::set_mailbox_guid` (where supported) changes the GUID that status, a new store
/// handle and the listing report, and nothing else: same UIDVALIDITY, UIDs, mail GUIDs.
pub fn set_mailbox_guid_keeps_the_messages(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Renamed", None).unwrap();
    let mut mb = open(&*store, "Renamed");
    let mut t = mb.begin().unwrap();
    for i in 0..2 {
        let body = format!("Subject: g{i}\n\nbody {i}\n");
        t.save(NewMail::default(), &mut body.as_bytes()).unwrap();
    }
    t.commit().unwrap();
    let before = mb.status().unwrap();
    let mails_before = mb.mails().unwrap();
    let new = MailboxGuid([0x5a; 16]);
    assert_ne!(before.guid, new);
    match mb.set_mailbox_guid(new) {
        Err(e) if e.kind() == ErrorKind::NotPossible => return,
        other => other.unwrap(),
    }
    let after = mb.status().unwrap();
    assert_eq!(after.guid, new);
    assert_eq!(
        (after.uid_validity, after.uid_next, after.messages),
        (before.uid_validity, before.uid_next, before.messages)
    );
    let fresh = target.open();
    let mut again = open(&*fresh, "Renamed");
    assert_eq!(again.status().unwrap().guid, new);
    assert_eq!(again.mails().unwrap(), mails_before);
    let listed = fresh
        .list_mailboxes()
        .unwrap()
        .into_iter()
        .find(|i| i.name == "Renamed")
        .unwrap();
    assert!(
        listed.guid.is_none() || listed.guid == Some(new),
        "{listed:?}"
    );
    let e = again.set_mailbox_guid(MailboxGuid([0; 16])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Params);
}

/// `Mailbox::mails_of` gives exactly the records `mails()` gives for those UIDs (UIDs not
/// in the mailbox left out, duplicates and order of the request ignored), also for a
/// message whose flags changed and on a fresh handle.
pub fn mails_of_matches_mails(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Some", None).unwrap();
    let mut mb = open(&*store, "Some");
    let mut t = mb.begin().unwrap();
    for i in 0..5 {
        let body = format!("Subject: s{i}\n\nbody {i}\n");
        t.save(NewMail::default(), &mut body.as_bytes()).unwrap();
    }
    let uids = t.commit().unwrap().saved;
    let mut t = mb.begin().unwrap();
    t.update_flags(
        uids[3],
        &FlagUpdate {
            op: FlagOp::Add,
            flags: Flags::FLAGGED,
            keywords: Vec::new(),
        },
    )
    .unwrap();
    t.expunge(uids[1]).unwrap();
    t.commit().unwrap();
    mb.sync().unwrap();
    let ask = [uids[4], uids[1], uids[3], Uid(uids[4].0 + 100), uids[3]];
    for (what, mb) in [
        ("same handle", &mut mb),
        ("fresh handle", &mut open(&*target.open(), "Some")),
    ] {
        let got = mb.mails_of(&ask).unwrap();
        let want: Vec<MailRecord> = mb
            .mails()
            .unwrap()
            .into_iter()
            .filter(|r| r.uid == uids[3] || r.uid == uids[4])
            .collect();
        assert_eq!(want.len(), 2, "{what}");
        assert_eq!(got, want, "{what}");
        assert!(mb.mails_of(&[]).unwrap().is_empty(), "{what}");
    }
}

/// `Mailbox::mails_without_dates` gives the records `mails()` gives, with the dates left
/// out (0) only where it says so; `mails_of` then gives a message's dates, on its own.
pub fn mails_without_dates_match_mails(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Dated", None).unwrap();
    let mut mb = open(&*store, "Dated");
    let mut t = mb.begin().unwrap();
    for i in 0..3 {
        let body = format!("Subject: d{i}\n\nbody {i}\n");
        let mail = NewMail {
            received_date: Some(1_600_000_000 + i),
            saved_date: Some(1_650_000_000 + i),
            ..Default::default()
        };
        t.save(mail, &mut body.as_bytes()).unwrap();
    }
    t.commit().unwrap();
    let mut fresh = open(&*target.open(), "Dated");
    let (undated, left_out) = fresh.mails_without_dates().unwrap();
    let mut fresh = open(&*target.open(), "Dated");
    let dated = fresh.mails().unwrap();
    assert_eq!(undated.len(), 3);
    let without_dates = |r: &MailRecord| MailRecord {
        received_date: 0,
        saved_date: 0,
        ..r.clone()
    };
    for (u, d) in undated.iter().zip(&dated) {
        if left_out {
            assert_eq!(without_dates(u), without_dates(d));
        } else {
            assert_eq!(u, d);
        }
    }
    let mut fresh = open(&*target.open(), "Dated");
    let _ = fresh.mails_without_dates().unwrap();
    let one = fresh.mails_of(&[dated[1].uid]).unwrap();
    assert_eq!(one, vec![dated[1].clone()]);
    assert_eq!(
        (one[0].received_date, one[0].saved_date),
        (1_600_000_001, 1_650_000_001)
    );
}

/// `Mailbox::list_ahead` never changes an answer: the next `mails()` is the listing of the
/// mailbox as it is then, after a change by another handle (and `sync()`) or by this one.
pub fn a_listing_made_ahead_never_outlives_a_change(target: &dyn ConformanceTarget) {
    let store = target.open();
    store.create_mailbox("Ahead", None).unwrap();
    let mut writer = open(&*store, "Ahead");
    save_n(&mut *writer, 3);
    let other_store = target.open();
    let mut reader = open(&*other_store, "Ahead");
    let fresh = |what: &str| {
        let mut m = open(&*target.open(), "Ahead");
        let mut records = m.mails().unwrap();
        for r in &mut records {
            r.flags = Flags(r.flags.0 & !Flags::RECENT.0);
        }
        assert!(!records.is_empty(), "{what}");
        records
    };
    let without_recent = |mut records: Vec<MailRecord>| {
        for r in &mut records {
            r.flags = Flags(r.flags.0 & !Flags::RECENT.0);
        }
        records
    };
    reader.list_ahead().unwrap();
    assert_eq!(without_recent(reader.mails().unwrap()), fresh("unchanged"));

    // another handle's changes, then this handle's sync
    reader.list_ahead().unwrap();
    update(
        &mut *writer,
        Uid(1),
        FlagOp::Add,
        Flags::FLAGGED,
        &["Ahead-Kw"],
    );
    expunge(&mut *writer, &[Uid(2)]);
    save_one(&mut *writer, b"Subject: later\r\n\r\nlater\r\n");
    reader.sync().unwrap();
    let now = without_recent(reader.mails().unwrap());
    assert_eq!(now, fresh("changed elsewhere"));
    assert_eq!(
        now.iter().map(|r| r.uid).collect::<Vec<_>>(),
        [Uid(1), Uid(3), Uid(4)]
    );
    assert_eq!(flags_of(&now[0]), Flags::FLAGGED);
    assert_eq!(now[0].keywords, kw(&["Ahead-Kw"]));

    // this handle's own change
    reader.list_ahead().unwrap();
    update(&mut *reader, Uid(3), FlagOp::Add, Flags::SEEN, &[]);
    let own = without_recent(reader.mails().unwrap());
    assert_eq!(own, fresh("changed here"));
    assert_eq!(flags_of(&own[1]), Flags::SEEN);
}

/// After any mix of saves, flag and keyword changes and expunges, each made by a handle
/// that is then closed, a fresh handle's counters (what a quick open answers, before
/// anything is listed) equal those of a fresh handle that has listed every message, and
/// the model's: UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, messages, unseen, mailbox GUID. The
/// guard for any change to what a backend's quick open trusts (e.g. an index file written
/// less often than every close).
pub fn fresh_handles_count_as_a_full_read_after_random_changes(target: &dyn ConformanceTarget) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| xorshift64(&mut state) % n.max(1);
    target.open().create_mailbox("Quick", None).unwrap();
    // the model: UID -> seen
    let mut model: Vec<(Uid, bool)> = Vec::new();
    let mut saved = 0usize;
    for step in 0..40 {
        {
            let store = target.open();
            let mut mb = open(&*store, "Quick");
            let mut t = mb.begin().unwrap();
            let action = next(5);
            let mut expunged = None;
            match action {
                0 | 1 => {
                    for _ in 0..=next(3) {
                        let seen = next(2) == 0;
                        let mail = NewMail {
                            flags: if seen { Flags::SEEN } else { Flags(0) },
                            ..NewMail::default()
                        };
                        saved += 1;
                        t.save(mail, &mut msg(saved).as_slice()).unwrap();
                    }
                }
                2 | 3 if !model.is_empty() => {
                    let i = next(model.len() as u64) as usize;
                    let flags = [Flags::SEEN, Flags::DELETED, Flags::FLAGGED][next(3) as usize];
                    let op = if next(2) == 0 {
                        FlagOp::Add
                    } else {
                        FlagOp::Remove
                    };
                    let keywords = if action == 3 {
                        vec![Keyword::from("$Quick")]
                    } else {
                        Vec::new()
                    };
                    let update = FlagUpdate {
                        op,
                        flags,
                        keywords,
                    };
                    t.update_flags(model[i].0, &update).unwrap();
                    if flags == Flags::SEEN {
                        model[i].1 = op == FlagOp::Add;
                    }
                }
                4 if model.len() > 1 => {
                    let i = next(model.len() as u64) as usize;
                    t.expunge(model[i].0).unwrap();
                    expunged = Some(i);
                }
                _ => {}
            }
            let result = t.commit().unwrap();
            if let Some(i) = expunged {
                model.remove(i);
            }
            // the saves' flags, in save order (the generator's draws were made above)
            let mut seen_of_saves = Vec::new();
            if !result.saved.is_empty() {
                let mails = mb.mails().unwrap();
                for uid in &result.saved {
                    let m = mails.iter().find(|m| m.uid == *uid).unwrap();
                    seen_of_saves.push((*uid, m.flags.contains(Flags::SEEN)));
                }
            }
            model.extend(seen_of_saves);
        }
        let what = format!("step {step}");
        let quick = {
            let store = target.open();
            let mut mb = open(&*store, "Quick");
            mb.counters().unwrap()
        };
        let full = {
            let store = target.open();
            let mut mb = open(&*store, "Quick");
            let uids: Vec<Uid> = mb.mails().unwrap().iter().map(|m| m.uid).collect();
            assert_eq!(
                uids,
                model.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
                "{what}: messages"
            );
            mb.counters().unwrap()
        };
        let shown = |c: &crate::types::MailboxStatus| {
            (
                c.uid_validity,
                c.uid_next,
                c.highest_modseq,
                c.messages,
                c.unseen,
                c.guid,
            )
        };
        assert_eq!(shown(&quick), shown(&full), "{what}: quick against full");
        assert_eq!(
            quick.messages as usize,
            model.len(),
            "{what}: model messages"
        );
        let unseen = model.iter().filter(|(_, seen)| !seen).count();
        assert_eq!(quick.unseen as usize, unseen, "{what}: model unseen");
    }
}
