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
use std::sync::mpsc::sync_channel;

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
}

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
        }
    }
}

/// Why a run failed.
#[derive(Debug)]
pub enum SyncError {
    Store(mailstore::Error),
    Peer(String),
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Store(e) => write!(f, "{e}"),
            SyncError::Peer(e) => write!(f, "dsync: {e}"),
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
    let mut master = brain::Brain {
        store: local,
        master: true,
        opts: opts.clone(),
        tx: to_slave,
        rx: from_slave,
        out: Default::default(),
        opened: Default::default(),
        names: None,
    };
    let mut slave = brain::Brain {
        store: remote,
        master: false,
        opts: opts.clone(),
        tx: to_master,
        rx: from_master,
        out: Default::default(),
        opened: Default::default(),
        names: None,
    };
    let (master_result, slave_result, slave) = std::thread::scope(|scope| {
        let handle = scope.spawn(move || {
            let r = slave.run();
            // Dropping the slave's channel ends unblocks a master waiting on it.
            (r, slave.out)
        });
        let m = master.run();
        if m.is_err() {
            // Unblock the slave: drop our ends.
            let (dead_tx, _) = sync_channel(1);
            master.tx = dead_tx;
            let (_, dead_rx) = sync_channel(1);
            master.rx = dead_rx;
        }
        let (s, out) = handle.join().unwrap_or_else(|_| {
            (
                Err(SyncError::Peer("the slave brain panicked".into())),
                Default::default(),
            )
        });
        (m, s, out)
    });
    let mut report = SyncReport {
        changes_during_sync: master.out.changes_during_sync || slave.changes_during_sync,
        ..Default::default()
    };
    report.errors.extend(master.out.errors);
    report.errors.extend(slave.errors);
    report.log.extend(master.out.log);
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
        report.state = master.out.states;
    }
    report
}
