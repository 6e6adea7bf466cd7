//! The engine when a store fails part-way, or is slow: a backend that leaves dates out of
//! its view (as the Maildir does) and then can't read a message's record must not make the
//! sync send that message with dates 0; a side that waits for a slow peer reads ahead
//! (`Mailbox::prefetch_mails`), and a read-ahead that fails changes nothing. Where both
//! stores have a second handle, two mailboxes sync at once, and one that fails fails the
//! run without stopping the other.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
    /// The store has a second handle (`Store::second_handle`), with the same faults.
    second_handle: bool,
    /// Each message read (`open_mail`) passes here.
    reads: Option<Arc<Rendezvous>>,
    /// `open_mail` fails in the mailbox of this name.
    reads_fail_in: Option<String>,
}

/// Where the reads of two mailboxes can meet: the first read of each mailbox waits (up to
/// a second) for a read of another mailbox to be under way, so two mailboxes synced at
/// once always meet and two synced one after the other never do.
#[derive(Default)]
struct Rendezvous {
    state: Mutex<ReadsUnderWay>,
    changed: Condvar,
}

#[derive(Default)]
struct ReadsUnderWay {
    /// The mailbox of each read under way.
    mailboxes: Vec<String>,
    /// Mailboxes whose first read has been.
    first_read: BTreeSet<String>,
    /// Reads of two mailboxes were under way at once.
    met: bool,
}

impl Rendezvous {
    fn read(&self, mailbox: &str) {
        let mut st = self.state.lock().unwrap();
        st.mailboxes.push(mailbox.to_string());
        if st.mailboxes.iter().any(|m| m != mailbox) {
            st.met = true;
            self.changed.notify_all();
        } else if st.first_read.insert(mailbox.to_string()) {
            st = self
                .changed
                .wait_timeout_while(st, Duration::from_secs(1), |st| !st.met)
                .unwrap()
                .0;
        }
        let at = st.mailboxes.iter().position(|m| m == mailbox).unwrap();
        st.mailboxes.remove(at);
    }

    fn met(&self) -> bool {
        self.state.lock().unwrap().met
    }
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
        if let Some(reads) = &self.1.reads {
            reads.read(self.0.name());
        }
        if self.1.reads_fail_in.as_deref() == Some(self.0.name()) {
            return Err(mailstore::Error::io(
                "read",
                "/injected/message",
                std::io::Error::other("injected message read failure"),
            ));
        }
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
    fn second_handle(&self, _writes: bool) -> Option<Box<dyn Store>> {
        self.1
            .second_handle
            .then(|| Box::new(self.clone()) as Box<dyn Store>)
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

/// The GUIDs of INBOX's messages, sorted.
fn guids_of(store: &MemoryStore) -> Vec<Guid> {
    guids_in(store, "INBOX")
}

/// The GUIDs of a mailbox's messages, sorted.
fn guids_in(store: &MemoryStore, mailbox: &str) -> Vec<Guid> {
    let mut guids: Vec<Guid> = store
        .open_mailbox(mailbox)
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

/// Three messages in each of the mailboxes `A` and `B` of a new store (and an empty INBOX).
fn two_mailboxes() -> MemoryStore {
    let store = MemoryStore::new();
    for name in ["A", "B"] {
        store.create_mailbox(name, None).unwrap();
        let mut mailbox = store.open_mailbox(name).unwrap();
        let mut tx = mailbox.begin().unwrap();
        for i in 0..3 {
            let guid = format!("{name}-{i}");
            tx.save(
                NewMail {
                    guid: Some(Guid::from_bytes(guid.as_bytes())),
                    received_date: Some(1_700_000_000),
                    ..Default::default()
                },
                &mut format!("Subject: {guid}\n\nbody\n").as_bytes(),
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    store
}

/// Each mailbox's message GUIDs, by name.
fn contents(store: &MemoryStore) -> Vec<(String, Vec<Guid>)> {
    store
        .list_mailboxes()
        .unwrap()
        .into_iter()
        .map(|info| {
            let guids = guids_in(store, &info.name);
            (info.name, guids)
        })
        .collect()
}

/// `sync::run` on its own thread, failing the test instead of hanging it.
fn run_within_a_minute(
    source: Box<dyn Store>,
    destination: Box<dyn Store>,
    opts: &SyncOptions,
) -> sync::SyncReport {
    let (tx, rx) = std::sync::mpsc::channel();
    let opts = opts.clone();
    std::thread::spawn(move || {
        let _ = tx.send(sync::run(source, destination, &opts));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the run hung")
}

/// A backup reads two mailboxes at once when both stores have a second handle, and one
/// after the other when either hasn't or the engine's second lane is off; the copy is the
/// same every way.
#[test]
fn two_mailboxes_sync_at_once_where_both_stores_have_a_second_handle() {
    let source = two_mailboxes();
    for (source_second, second_lane, at_once) in [
        (true, true, true),
        (false, true, false),
        (true, false, false),
    ] {
        let reads = Arc::new(Rendezvous::default());
        let faults = Faults {
            second_handle: source_second,
            reads: Some(Arc::clone(&reads)),
            ..Default::default()
        };
        let destination = MemoryStore::new();
        let opts = SyncOptions {
            kind: MergeKind::Backup,
            second_lane,
            ..Default::default()
        };
        let report = run_within_a_minute(
            Box::new(Wrapped(source.clone(), faults)),
            Box::new(destination.clone()),
            &opts,
        );
        let case = format!("source second handle {source_second}, second lane {second_lane}");
        assert_eq!(report.exit_code, 0, "{case}: {:?}", report.errors);
        assert_eq!(reads.met(), at_once, "{case}");
        assert_eq!(contents(&destination), contents(&source), "{case}");
        assert_eq!(report.state.len(), 3, "{case}: a state entry per mailbox");
    }
}

/// A message that can't be read (other than expunged) fails the run (doveadm's exit 75,
/// the error reported; dsync's "Can't get stream"), also when it fails in one lane, while
/// the other mailbox is synced in full, and nothing hangs.
#[test]
fn an_unreadable_message_fails_the_run_and_the_other_lane_finishes() {
    let source = two_mailboxes();
    for (failing, second_lane) in [("A", true), ("B", true), ("A", false)] {
        let faults = Faults {
            second_handle: second_lane,
            reads: Some(Arc::default()),
            reads_fail_in: Some(failing.to_string()),
            ..Default::default()
        };
        let destination = MemoryStore::new();
        let opts = SyncOptions {
            kind: MergeKind::Backup,
            ..Default::default()
        };
        let report = run_within_a_minute(
            Box::new(Wrapped(source.clone(), faults)),
            Box::new(destination.clone()),
            &opts,
        );
        assert_eq!(report.exit_code, 75, "{failing}: {:?}", report.errors);
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.contains("injected message read failure")),
            "{failing}: {:?}",
            report.errors
        );
        let other = if failing == "A" { "B" } else { "A" };
        let copied = contents(&destination);
        let want = contents(&source);
        let of = |all: &[(String, Vec<Guid>)], name: &str| {
            all.iter().find(|(n, _)| n == name).map(|(_, g)| g.clone())
        };
        assert_eq!(of(&copied, other), of(&want, other), "{failing}");
        assert_ne!(of(&copied, failing), of(&want, failing), "{failing}");
    }
}
