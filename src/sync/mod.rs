//! The sync engine (issue #6): Dovecot dsync's `sync`, `sync -1` and `backup` over any two
//! `mailstore` stores.
//!
//! Two [`brain::Brain`]s, one per side, each write only to their own store and exchange
//! [`items::Item`]s (one-to-one with dsync's wire items) over a bounded in-process channel;
//! message bodies cross it as a stream of chunks, never whole. Decisions come from the pure
//! functions of [`plan`], which both brains evaluate on the same inputs.
//! Algorithm: /work/shared/reference/dsync-algorithm.md; Dovecot sources
//! src/doveadm/dsync/dsync-brain*.c, dsync-mailbox-import.c, dsync-mailbox-tree-sync.c.

pub mod brain;
pub mod items;
pub mod lock;
pub mod plan;
pub mod state;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use mailstore::{MailboxGuid, Store};

pub use items::MailboxStateItem;
pub use plan::{FlagWanted, MailFilter, MergeKind};

/// Items in flight per direction (bodies travel as `CHUNK_SIZE` chunks).
pub const CHANNEL_BOUND: usize = 32;

/// How to run.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    pub kind: MergeKind,
    /// `-R`: the destination is the source of a one-way run.
    pub reverse: bool,
    /// `-f`: never skip a mailbox because its counters are equal.
    pub full: bool,
    /// `-m`: only this mailbox (name with `/` as separator).
    pub mailbox: Option<String>,
    /// `-x` masks (with `/` as separator).
    pub exclude: Vec<String>,
    /// `-g`: only the mailbox with this GUID.
    pub mailbox_guid: Option<MailboxGuid>,
    /// `-m ""` / `-g ""`: sync the mailbox tree only, no mail (dsync's no_mail_sync).
    pub no_mail_sync: bool,
    /// `-t`, `-e`, `-I`, `-O`: which missing messages are saved.
    pub filter: MailFilter,
    /// `-s`: the previous state (`Some(empty)` for `-s ""`).
    pub state: Option<Vec<MailboxStateItem>>,
    /// Collect a debug log.
    pub debug: bool,
    /// How long to wait for a mailbox's `.dovecot-box-sync.lock`
    /// (`Mailbox::lock_for_sync`): `-l SECS` when given, else dsync's 30 s
    /// (DSYNC_MAILBOX_DEFAULT_LOCK_TIMEOUT_SECS, dsync-brain.c).
    pub mailbox_lock_timeout: std::time::Duration,
    /// `-T SECS`: give up (exit 75) when nothing crosses between the two sides for that
    /// long — a side stuck in I/O on a hung file system. `None`: wait forever.
    pub io_timeout: Option<std::time::Duration>,
    /// Commit a mailbox's saves every this many messages (doveadm's
    /// `dsync_commit_msgs_interval`), or every as many as the run committed before when
    /// that is more; 0: one commit per mailbox.
    pub commit_msgs_interval: usize,
    /// Sync two mailboxes at a time where both stores allow it (`Store::second_handle`).
    pub second_lane: bool,
}

/// mailsync's default for [`SyncOptions::commit_msgs_interval`]. Dovecot's is 100; a
/// mailsync commit costs a few fsyncs, so it takes more per commit while still keeping a
/// transaction's memory small.
pub const COMMIT_MSGS_INTERVAL: usize = 1000;

/// DSYNC_MAILBOX_DEFAULT_LOCK_TIMEOUT_SECS.
pub const MAILBOX_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            kind: MergeKind::TwoWay,
            reverse: false,
            full: false,
            mailbox: None,
            exclude: Vec::new(),
            mailbox_guid: None,
            no_mail_sync: false,
            filter: MailFilter::default(),
            state: None,
            debug: false,
            mailbox_lock_timeout: MAILBOX_LOCK_TIMEOUT,
            io_timeout: None,
            commit_msgs_interval: COMMIT_MSGS_INTERVAL,
            second_lane: true,
        }
    }
}

/// Why a run failed.
#[derive(Debug)]
pub enum SyncError {
    Store(mailstore::Error),
    Peer(String),
    /// `-T`: the run gave up on a brain that moved nothing for that long.
    Stalled(String),
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Store(e) => write!(f, "{e}"),
            SyncError::Peer(e) => write!(f, "dsync: {e}"),
            SyncError::Stalled(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SyncError {}

impl From<mailstore::Error> for SyncError {
    fn from(e: mailstore::Error) -> Self {
        SyncError::Store(e)
    }
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// doveadm's exit code: 0 in sync, 2 run again, 75 temporary failure, 65 data error.
    pub exit_code: i32,
    pub changes_during_sync: bool,
    pub errors: Vec<String>,
    pub log: Vec<String>,
    /// The new state for `-s` (empty when a full resync is needed).
    pub state: Vec<MailboxStateItem>,
}

/// Syncs `local` (the master, SOURCE) with `remote` (the slave, DESTINATION).
pub fn run(local: Box<dyn Store>, remote: Box<dyn Store>, opts: &SyncOptions) -> SyncReport {
    let (to_slave, from_master) = sync_channel(CHANNEL_BOUND);
    let (to_master, from_slave) = sync_channel(CHANNEL_BOUND);
    let progress = Arc::new(AtomicU64::new(0));
    // A second lane when both stores can be used from two threads at once (for what the
    // run does with each: the primary of a one-way run is only read).
    let writes = |master| brain::writable(opts.kind, brain::is_primary(opts, master));
    let (local_writes, remote_writes) = (writes(true), writes(false));
    let (local_lane, remote_lane) = match (
        local.second_handle(local_writes),
        remote.second_handle(remote_writes),
    ) {
        (Some(local_second), Some(remote_second)) if opts.second_lane => {
            let (to_slave, from_master) = sync_channel(CHANNEL_BOUND);
            let (to_master, from_slave) = sync_channel(CHANNEL_BOUND);
            let lane = |store, tx, rx| brain::Lane {
                store,
                tx,
                rx: brain::Inbox::new(rx),
            };
            (
                Some(lane(local_second, to_slave, from_slave)),
                Some(lane(remote_second, to_master, from_master)),
            )
        }
        _ => (None, None),
    };
    let brain = |store, master, tx, rx, lane| brain::Brain {
        store,
        master,
        opts: opts.clone(),
        tx,
        rx: brain::Inbox::new(rx),
        out: Default::default(),
        opened: Default::default(),
        names: None,
        progress: Arc::clone(&progress),
        lane,
    };
    let brains = [
        brain(local, true, to_slave, from_slave, local_lane),
        brain(remote, false, to_master, from_master, remote_lane),
    ];
    // Each brain on its own thread; a brain that ends drops its channel ends, which
    // unblocks a peer waiting on it. The threads are not joined: with `-T` a brain stuck
    // in I/O (a hung file system) is left behind when the run gives up on it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for mut b in brains {
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let is_master = b.master;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.run()))
                .unwrap_or_else(|_| Err(SyncError::Peer("a sync brain panicked".into())));
            let out = std::mem::take(&mut b.out);
            drop(b);
            let _ = done.send((is_master, r, out));
        });
    }
    drop(done_tx);
    let mut results: [Option<(Result<(), SyncError>, brain::BrainOutcome)>; 2] = [None, None];
    let mut seen = progress.load(Ordering::Relaxed);
    let mut quiet_since = std::time::Instant::now();
    while results.iter().any(Option::is_none) {
        let wait = opts
            .io_timeout
            .map_or(std::time::Duration::from_secs(3600), |t| {
                t.min(std::time::Duration::from_secs(1))
            });
        match done_rx.recv_timeout(wait) {
            Ok((is_master, r, out)) => results[usize::from(!is_master)] = Some((r, out)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let now = progress.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    quiet_since = std::time::Instant::now();
                } else if let Some(t) = opts.io_timeout.filter(|t| quiet_since.elapsed() >= *t) {
                    // -T: nothing crossed between the brains for that long.
                    let stalled = format!(
                        "dsync: I/O has stalled for {} seconds (-T), giving up",
                        t.as_secs()
                    );
                    for slot in results.iter_mut().filter(|r| r.is_none()) {
                        *slot =
                            Some((Err(SyncError::Stalled(stalled.clone())), Default::default()));
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let take = |slot: Option<(Result<(), SyncError>, brain::BrainOutcome)>| {
        slot.unwrap_or_else(|| {
            (
                Err(SyncError::Peer("a sync brain vanished".into())),
                Default::default(),
            )
        })
    };
    let [m, s] = results;
    let (master_result, master_out) = take(m);
    let (slave_result, slave) = take(s);
    let mut report = SyncReport {
        changes_during_sync: master_out.changes_during_sync || slave.changes_during_sync,
        ..Default::default()
    };
    report.errors.extend(master_out.errors);
    report.errors.extend(slave.errors);
    report.log.extend(master_out.log);
    report.log.extend(slave.log);
    let mut failed_temp = false;
    for r in [&master_result, &slave_result] {
        if let Err(e) = r {
            if !matches!(e, SyncError::Peer(m) if m.contains("disconnected")) {
                report.errors.push(e.to_string());
            }
            failed_temp = true;
        }
    }
    report.exit_code = if failed_temp || !report.errors.is_empty() {
        75
    } else if report.changes_during_sync {
        2
    } else {
        0
    };
    if report.exit_code == 0 {
        report.state = master_out.states;
    }
    report
}
