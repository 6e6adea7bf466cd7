//! The engine when a store fails part-way, or is slow: a backend that leaves dates out of
//! its view (as the Maildir does) and then can't read a message's record must not make the
//! sync send that message with dates 0; a side that waits for a slow peer reads ahead
//! (`Mailbox::prefetch_mails`), and a read-ahead that fails changes nothing.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailstore::memory::MemoryStore;
use mailstore::{
    Changes, FlagChange, Guid, MailRecord, Mailbox, MailboxGuid, MailboxInfo, MailboxStatus,
    MailboxUpdate, ModSeq, NameChangeTimes, NewMail, Pop3Info, Result, Store, SyncGuard,
    Transaction, Uid,
};
use mailsync::sync::{self, MergeKind, SyncOptions};

/// What a wrapped memory store does besides passing every call on.
#[derive(Clone, Default)]
struct Faults {
    /// Its mailboxes list their messages without dates (`dates_left_out`) and fail every
    /// later read of a message's record, while the message itself still opens.
    records_fail: bool,
    /// Each mailbox `sync()` takes this long first: a side still reading its mailbox.
    slow_sync: Duration,
    /// Each `open_mailbox` takes this long first: a side reading a changed mailbox as it
    /// opens it for the tree (a Maildir reads its directories then).
    slow_open: Duration,
    /// Each `prefetch_mails` call is counted here, the most messages one asked for in
    /// `read_ahead_most`; each fails when `read_ahead_fails`.
    read_ahead_calls: Arc<AtomicUsize>,
    read_ahead_most: Arc<AtomicUsize>,
    read_ahead_fails: bool,
    /// Each `prefetch_index` call is counted here.
    index_loads: Arc<AtomicUsize>,
    /// Each `list_mailboxes` call is counted here.
    listings: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Wrapped(MemoryStore, Faults);

struct WrappedMailbox(Box<dyn Mailbox>, Faults);

fn records_fail(store: &MemoryStore) -> Wrapped {
    let faults = Faults {
        records_fail: true,
        ..Default::default()
    };
    Wrapped(store.clone(), faults)
}

fn unreadable() -> mailstore::Error {
    mailstore::Error::io(
        "read",
        "/injected/record",
        std::io::Error::other("injected record read failure"),
    )
}

impl Mailbox for WrappedMailbox {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn sync(&mut self) -> Result<()> {
        std::thread::sleep(self.1.slow_sync);
        self.0.sync()
    }
    fn status(&mut self) -> Result<MailboxStatus> {
        self.0.status()
    }
    fn counters(&mut self) -> Result<MailboxStatus> {
        self.0.counters()
    }
    fn mails(&mut self) -> Result<Vec<MailRecord>> {
        self.0.mails()
    }
    fn mails_without_dates(&mut self) -> Result<(Vec<MailRecord>, bool)> {
        if !self.1.records_fail {
            return self.0.mails_without_dates();
        }
        let mut records = self.0.mails()?;
        for r in &mut records {
            r.received_date = 0;
            r.saved_date = 0;
        }
        Ok((records, true))
    }
    fn mails_of(&mut self, uids: &[Uid]) -> Result<Vec<MailRecord>> {
        if self.1.records_fail {
            return Err(unreadable());
        }
        self.0.mails_of(uids)
    }
    fn prefetch_mails(&mut self, max: usize) -> Result<bool> {
        self.1.read_ahead_calls.fetch_add(1, Ordering::SeqCst);
        self.1.read_ahead_most.fetch_max(max, Ordering::SeqCst);
        if self.1.read_ahead_fails {
            return Err(unreadable());
        }
        // never done: the engine's own bound ends it
        Ok(false)
    }
    fn prefetch_index(&mut self) -> Result<()> {
        self.1.index_loads.fetch_add(1, Ordering::SeqCst);
        self.0.prefetch_index()
    }
    fn pop3_info(&mut self, uid: Uid) -> Result<Pop3Info> {
        self.0.pop3_info(uid)
    }
    fn open_mail(&mut self, uid: Uid) -> Result<Box<dyn Read + Send>> {
        self.0.open_mail(uid)
    }
    fn enable_modseqs(&mut self) -> Result<()> {
        self.0.enable_modseqs()
    }
    fn virtual_size(&mut self, uid: Uid) -> Result<u64> {
        self.0.virtual_size(uid)
    }
    fn begin(&mut self) -> Result<Box<dyn Transaction + '_>> {
        self.0.begin()
    }
    fn changes_since(&mut self, since: ModSeq) -> Result<Changes> {
        self.0.changes_since(since)
    }
    fn flag_changes_since(
        &mut self,
        since: ModSeq,
        uids: &[Uid],
    ) -> Result<Vec<(Uid, FlagChange)>> {
        self.0.flag_changes_since(since, uids)
    }
    fn lock_for_sync(&mut self, timeout: std::time::Duration) -> Result<Option<SyncGuard>> {
        self.0.lock_for_sync(timeout)
    }
    fn update_mailbox(&mut self, update: &MailboxUpdate) -> Result<()> {
        self.0.update_mailbox(update)
    }
    fn set_mailbox_guid(&mut self, guid: MailboxGuid) -> Result<()> {
        self.0.set_mailbox_guid(guid)
    }
}

impl Store for Wrapped {
    fn hierarchy_separator(&self) -> char {
        self.0.hierarchy_separator()
    }
    fn list_mailboxes(&self) -> Result<Vec<MailboxInfo>> {
        self.1.listings.fetch_add(1, Ordering::SeqCst);
        self.0.list_mailboxes()
    }
    fn subscriptions(&self) -> Result<Vec<String>> {
        self.0.subscriptions()
    }
    fn create_mailbox(&self, name: &str, guid: Option<MailboxGuid>) -> Result<()> {
        self.0.create_mailbox(name, guid)
    }
    fn delete_mailbox(&self, name: &str) -> Result<()> {
        self.0.delete_mailbox(name)
    }
    fn rename_mailbox(&self, old: &str, new: &str) -> Result<()> {
        self.0.rename_mailbox(old, new)
    }
    fn set_subscribed(&self, name: &str, subscribed: bool) -> Result<()> {
        self.0.set_subscribed(name, subscribed)
    }
    fn open_mailbox(&self, name: &str) -> Result<Box<dyn Mailbox>> {
        std::thread::sleep(self.1.slow_open);
        Ok(Box::new(WrappedMailbox(
            self.0.open_mailbox(name)?,
            self.1.clone(),
        )))
    }
    fn set_change_time(&self, at: Option<i64>) {
        self.0.set_change_time(at)
    }
    fn name_change_times(&self, names: &[String]) -> Result<Vec<NameChangeTimes>> {
        self.0.name_change_times(names)
    }
    fn deleted_mailboxes(&self) -> Result<Vec<(MailboxGuid, i64)>> {
        self.0.deleted_mailboxes()
    }
    fn selectable_parents(&self) -> bool {
        self.0.selectable_parents()
    }
    fn save_line_endings(&self) -> mailstore::SaveLineEndings {
        self.0.save_line_endings()
    }
}

/// Saves one message into `store`'s INBOX, received at `received`, saved 100 s later.
fn save_dated(store: &MemoryStore, guid: &[u8], received: i64) {
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let mut tx = inbox.begin().unwrap();
    tx.save(
        NewMail {
            guid: Some(Guid::from_bytes(guid)),
            received_date: Some(received),
            saved_date: Some(received + 100),
            ..Default::default()
        },
        &mut &b"Subject: x\n\nbody\n"[..],
    )
    .unwrap();
    tx.commit().unwrap();
}

/// The run failed with doveadm's exit 75 (try again), reporting the injected read error.
fn assert_fails_with_the_injected_error(report: &sync::SyncReport) {
    assert_eq!(report.exit_code, 75, "{:?}", report.errors);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("injected record read failure")),
        "{:?}",
        report.errors
    );
}

#[test]
fn a_message_whose_dates_cannot_be_read_is_not_sent_with_dates_zero() {
    let source = MemoryStore::new();
    save_dated(&source, b"dated-message", 1_700_000_000);
    let destination = MemoryStore::new();
    let opts = SyncOptions {
        kind: MergeKind::Backup,
        ..Default::default()
    };
    let report = sync::run(
        Box::new(records_fail(&source)),
        Box::new(destination.clone()),
        &opts,
    );

    // the failure is reported, as any read error is (doveadm's exit 75: try again) ...
    assert_fails_with_the_injected_error(&report);
    // ... and nothing arrived dated 1970
    let arrived = match destination.open_mailbox("INBOX") {
        Ok(mut inbox) => inbox.mails().unwrap(),
        Err(_) => Vec::new(),
    };
    assert!(
        arrived.iter().all(|m| m.received_date != 0),
        "sent with dates 0: {arrived:?}"
    );
}

/// The import side of the same rule: `sync -1` renumbers a UID conflict in the secondary
/// by saving its own message again under a new UID (brain.rs `import`, `SaveSource::Own`),
/// with the dates of its record (the primary is never written, so the message is not sent
/// anywhere). When the secondary lists without dates and its record can't be read, the
/// transaction fails; the message is never saved again dated 1970.
#[test]
fn a_renumbered_message_whose_dates_cannot_be_read_is_not_saved_with_dates_zero() {
    let source = MemoryStore::new();
    save_dated(&source, b"common", 1_700_000_000);
    let destination = MemoryStore::new();
    let backup = SyncOptions {
        kind: MergeKind::Backup,
        ..Default::default()
    };
    let report = sync::run(
        Box::new(source.clone()),
        Box::new(destination.clone()),
        &backup,
    );
    assert_eq!(report.exit_code, 0, "{:?}", report.errors);
    // each side's own new message at UID 2: both are renumbered
    save_dated(&source, b"source-new", 1_700_001_000);
    save_dated(&destination, b"destination-new", 1_700_002_000);

    let one_way = SyncOptions {
        kind: MergeKind::OneWay,
        ..Default::default()
    };
    let report = sync::run(
        Box::new(source.clone()),
        Box::new(records_fail(&destination)),
        &one_way,
    );
    assert_fails_with_the_injected_error(&report);
    let mails = destination.open_mailbox("INBOX").unwrap().mails().unwrap();
    assert!(
        mails
            .iter()
            .all(|m| m.received_date != 0 && m.saved_date != 0),
        "saved with dates 0: {mails:?}"
    );
    assert!(
        mails
            .iter()
            .any(|m| m.guid == Guid::from_bytes(b"destination-new")),
        "the secondary's own new message is gone: {mails:?}"
    );
    assert_eq!(
        source.open_mailbox("INBOX").unwrap().mails().unwrap().len(),
        2,
        "the primary is never written"
    );
}

/// Three messages in `store`'s INBOX.
fn save_three(store: &MemoryStore) {
    for (i, guid) in [b"first", b"other", b"third"].iter().enumerate() {
        save_dated(store, *guid, 1_700_000_000 + i as i64);
    }
}

fn guids_of(store: &MemoryStore) -> Vec<Guid> {
    let mut guids: Vec<Guid> = store
        .open_mailbox("INBOX")
        .unwrap()
        .mails()
        .unwrap()
        .into_iter()
        .map(|m| m.guid)
        .collect();
    guids.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    guids
}

/// A side whose peer is slow to answer (still reading a changed mailbox) reads ahead what
/// its full view will need, master or slave; a read-ahead that fails only ends the
/// read-ahead, and the sync comes out the same.
#[test]
fn a_side_waiting_for_a_slow_peer_reads_ahead_and_a_failed_read_ahead_changes_nothing() {
    for (slow_is_master, read_ahead_fails) in
        [(true, false), (false, false), (true, true), (false, true)]
    {
        let what = format!("slow side is master: {slow_is_master}, fails: {read_ahead_fails}");
        let slow = MemoryStore::new();
        save_three(&slow);
        let waiting = MemoryStore::new();
        save_dated(&waiting, b"waiting-side's own", 1_600_000_000);
        let slow_faults = Faults {
            slow_sync: Duration::from_millis(100),
            ..Default::default()
        };
        let waiting_faults = Faults {
            read_ahead_fails,
            ..Default::default()
        };
        let calls = Arc::clone(&waiting_faults.read_ahead_calls);
        let most = Arc::clone(&waiting_faults.read_ahead_most);
        let slow_side = Box::new(Wrapped(slow.clone(), slow_faults));
        let waiting_side = Box::new(Wrapped(waiting.clone(), waiting_faults));
        let opts = SyncOptions::default();
        let report = if slow_is_master {
            sync::run(slow_side, waiting_side, &opts)
        } else {
            sync::run(waiting_side, slow_side, &opts)
        };
        assert_eq!(report.exit_code, 0, "{what}: {:?}", report.errors);
        assert!(calls.load(Ordering::SeqCst) > 0, "{what}: no read-ahead");
        let most = most.load(Ordering::SeqCst);
        assert!(most > 0, "{what}: no message read ahead");
        assert_eq!(guids_of(&slow).len(), 4, "{what}");
        assert_eq!(guids_of(&slow), guids_of(&waiting), "{what}");
    }
}

/// Two stores after a first stateful run (its report, with the state), then one message
/// saved on the first (the side that will be slow) since.
fn synced_then_changed() -> (MemoryStore, MemoryStore, sync::SyncReport) {
    let slow = MemoryStore::new();
    save_three(&slow);
    let waiting = MemoryStore::new();
    let first = sync::run(
        Box::new(slow.clone()),
        Box::new(waiting.clone()),
        &SyncOptions {
            state: Some(Vec::new()),
            ..Default::default()
        },
    );
    assert_eq!(first.exit_code, 0, "{:?}", first.errors);
    assert!(!first.state.is_empty());
    save_dated(&slow, b"new since the state", 1_700_000_100);
    (slow, waiting, first)
}

/// A stateful run compares only what changed since its state: no message is read ahead
/// for a mailbox the state knows, however slow the peer; its index is, while a slow peer
/// reads its changed side, and not when the peer answers at once.
#[test]
fn a_stateful_run_reads_nothing_ahead_for_a_mailbox_its_state_knows() {
    let (slow, waiting, first) = synced_then_changed();

    let waiting_faults = Faults::default();
    let calls = Arc::clone(&waiting_faults.read_ahead_calls);
    let loads = Arc::clone(&waiting_faults.index_loads);
    let slow_faults = Faults {
        slow_sync: Duration::from_millis(100),
        ..Default::default()
    };
    let report = sync::run(
        Box::new(Wrapped(slow.clone(), slow_faults)),
        Box::new(Wrapped(waiting.clone(), waiting_faults)),
        &SyncOptions {
            state: Some(first.state.clone()),
            ..Default::default()
        },
    );
    assert_eq!(report.exit_code, 0, "{:?}", report.errors);
    assert_eq!(guids_of(&waiting).len(), 4);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "read ahead in a stateful run"
    );
    assert!(loads.load(Ordering::SeqCst) > 0, "no index read ahead");

    // a peer that answers at once: nothing read ahead
    let waiting_faults = Faults::default();
    let loads = Arc::clone(&waiting_faults.index_loads);
    let again = sync::run(
        Box::new(slow.clone()),
        Box::new(Wrapped(waiting.clone(), waiting_faults)),
        &SyncOptions {
            state: Some(report.state.clone()),
            ..Default::default()
        },
    );
    assert_eq!(again.exit_code, 0, "{:?}", again.errors);
    assert_eq!(loads.load(Ordering::SeqCst), 0, "index read ahead");
}

/// A stateful run whose peer is slow to open its mailboxes (it is reading a changed one
/// for the tree) reads this side's indexes meanwhile, not only once the mailbox's round
/// has begun (where this peer, its mailbox open, answers at once); no message is read
/// ahead.
#[test]
fn a_stateful_run_reads_its_indexes_while_the_peer_opens_its_mailboxes() {
    let (slow, waiting, first) = synced_then_changed();
    for slow_is_master in [true, false] {
        let waiting = waiting.clone();
        let waiting_faults = Faults::default();
        let calls = Arc::clone(&waiting_faults.read_ahead_calls);
        let loads = Arc::clone(&waiting_faults.index_loads);
        let slow_faults = Faults {
            slow_open: Duration::from_millis(100),
            ..Default::default()
        };
        let slow_side = Box::new(Wrapped(slow.clone(), slow_faults));
        let waiting_side = Box::new(Wrapped(waiting.clone(), waiting_faults));
        let opts = SyncOptions {
            state: Some(first.state.clone()),
            ..Default::default()
        };
        let report = if slow_is_master {
            sync::run(slow_side, waiting_side, &opts)
        } else {
            sync::run(waiting_side, slow_side, &opts)
        };
        assert_eq!(report.exit_code, 0, "{:?}", report.errors);
        assert_eq!(guids_of(&waiting).len(), 4);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "messages read ahead");
        assert!(
            loads.load(Ordering::SeqCst) > 0,
            "no index read while the peer opened (slow is master: {slow_is_master})"
        );
    }
}

/// Each side lists its mailboxes once a run when the tree doesn't change: the names the
/// mail sync looks mailboxes up by are the tree's.
#[test]
fn each_side_lists_its_mailboxes_once_when_the_tree_is_unchanged() {
    let source = MemoryStore::new();
    save_three(&source);
    let destination = MemoryStore::new();
    let first = sync::run(
        Box::new(source.clone()),
        Box::new(destination.clone()),
        &SyncOptions::default(),
    );
    assert_eq!(first.exit_code, 0, "{:?}", first.errors);
    save_dated(&source, b"new", 1_700_000_100);

    let (source_faults, destination_faults) = (Faults::default(), Faults::default());
    let (source_listings, destination_listings) = (
        Arc::clone(&source_faults.listings),
        Arc::clone(&destination_faults.listings),
    );
    let report = sync::run(
        Box::new(Wrapped(source.clone(), source_faults)),
        Box::new(Wrapped(destination.clone(), destination_faults)),
        &SyncOptions::default(),
    );
    assert_eq!(report.exit_code, 0, "{:?}", report.errors);
    assert_eq!(guids_of(&destination).len(), 4);
    assert_eq!(source_listings.load(Ordering::SeqCst), 1, "source");
    assert_eq!(
        destination_listings.load(Ordering::SeqCst),
        1,
        "destination"
    );
}
