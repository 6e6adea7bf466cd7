//! One brain per side (dsync-brain.c): it reads and writes only its own store and talks to
//! the peer brain only through [`Item`]s. The exchange is half-duplex: in every phase the
//! master sends its list first and the slave answers, so a bounded channel never deadlocks
//! and at most `CHANNEL_BOUND` items (bodies in `CHUNK_SIZE` pieces) are in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use mailstore::{
    Changes, Error, FlagChange, FlagOp, FlagUpdate, MailRecord, Mailbox, MailboxGuid,
    MailboxUpdate, ModSeq, NewMail, Store, Uid,
};

use mailsupport::sha1::Sha1;

use super::items::*;
use super::plan::{self, MailboxPair, MergeKind, SaveSource, SidePlan, SideView, TreeAction};
use super::{SyncError, SyncOptions};

/// The master's state entry from both sides' final `S`: the lower common UID, the
/// master's HIGHESTMODSEQ as `last_common_modseq` and — a mailsync extension of the field
/// Dovecot uses only for shared mailboxes' private flags — the slave's HIGHESTMODSEQ as
/// `last_common_pvt_modseq`, so that a later `-s` run can skip a mailbox only when neither
/// side changed. Disagreeing sides make the entry useless (UIDVALIDITY 0).
fn combine_states(
    mine: MailboxStateItem,
    peer: &MailboxStateItem,
    primary: bool,
) -> MailboxStateItem {
    let mut s = mine;
    // Keyed by the primary's mailbox GUID as it is now (a side may have taken the other's
    // GUID in this run): the next run looks the entry up by the primary's GUID.
    if !primary {
        s.mailbox_guid = peer.mailbox_guid;
    }
    s.last_common_uid = s.last_common_uid.min(peer.last_common_uid);
    s.last_common_pvt_modseq = peer.last_common_modseq;
    if peer.last_uidvalidity != s.last_uidvalidity
        || peer.last_messages_count != s.last_messages_count
    {
        s.last_uidvalidity = 0;
    }
    s
}

/// The side whose view wins ties: the source of one-way runs (the master unless `-R`),
/// else the master.
pub fn is_primary(opts: &SyncOptions, master: bool) -> bool {
    match opts.kind {
        MergeKind::TwoWay => master,
        _ => master != opts.reverse,
    }
}

/// Whether a side is written in a run (or round) of `kind`: both sides of a two-way
/// merge, only the secondary otherwise.
pub fn writable(kind: MergeKind, primary: bool) -> bool {
    kind == MergeKind::TwoWay || !primary
}

/// §4.1: the side with more messages (tie: higher UIDVALIDITY) keeps its UIDVALIDITY.
fn primary_keeps_uid_validity(p: &MailboxItem, s: &MailboxItem) -> bool {
    (p.messages_count, p.uid_validity) > (s.messages_count, s.uid_validity)
}

/// Whether the side that must take the other's UIDVALIDITY can; when it can't, rebuilding
/// it would only churn, so the mailboxes are merged by UID and GUID as they are.
fn loser_settable(p: &MailboxItem, s: &MailboxItem) -> bool {
    if primary_keeps_uid_validity(p, s) {
        s.uid_validity_settable
    } else {
        p.uid_validity_settable
    }
}

/// What a brain reports when it is done.
#[derive(Debug, Default)]
pub struct BrainOutcome {
    pub changes_during_sync: bool,
    pub errors: Vec<String>,
    pub log: Vec<String>,
    /// Per-mailbox state after the run (master only).
    pub states: Vec<MailboxStateItem>,
}

/// An opened mailbox with the name this side knows it by.
type NamedMailbox = (String, Box<dyn Mailbox>);

/// The receiving end of the channel from the peer. An `Item::Batch` comes out as its items,
/// one by one: the sender may pack a list, or several small messages, into one.
pub struct Inbox {
    rx: Receiver<Item>,
    unpacked: std::cell::RefCell<std::vec::IntoIter<Item>>,
}

impl Inbox {
    pub fn new(rx: Receiver<Item>) -> Inbox {
        Inbox {
            rx,
            unpacked: std::cell::RefCell::new(Vec::new().into_iter()),
        }
    }

    /// Waits up to `timeout` for an item from the peer; true when one is there to
    /// [`Inbox::recv`] (or the peer is gone, which `recv` then reports).
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        use std::sync::mpsc::RecvTimeoutError;
        let mut unpacked = self.unpacked.borrow_mut();
        if unpacked.as_slice().is_empty() {
            match self.rx.recv_timeout(timeout) {
                Ok(Item::Batch(items)) => *unpacked = items.into_iter(),
                Ok(item) => *unpacked = vec![item].into_iter(),
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => return true,
            }
        }
        // an empty batch: wait again for what follows it
        !unpacked.as_slice().is_empty() || {
            drop(unpacked);
            self.wait(timeout)
        }
    }

    pub fn recv(&self) -> Result<Item, std::sync::mpsc::RecvError> {
        loop {
            if let Some(item) = self.unpacked.borrow_mut().next() {
                return Ok(item);
            }
            match self.rx.recv()? {
                Item::Batch(items) => *self.unpacked.borrow_mut() = items.into_iter(),
                item => return Ok(item),
            }
        }
    }
}

/// Small messages packed into one `Item::Batch` while sending mails: between brains in one
/// process a message is otherwise two items and a thread wake-up or two on each side.
/// At most [`MAIL_BATCH_BYTES`] of bodies (plus one chunk) and [`BATCH_SIZE`] items.
#[derive(Default)]
struct MailBatch {
    items: Vec<Item>,
    bytes: usize,
}

/// How long a brain waits for the peer before it reads ahead ([`read_ahead_until_peer`]):
/// a side whose mailboxes didn't change answers well within it.
const READ_AHEAD_AFTER: std::time::Duration = std::time::Duration::from_millis(1);

/// Messages read ahead between two looks for the peer's item: about 0.1 ms of reading.
const READ_AHEAD_SLICE: usize = 128;

/// Messages read ahead in one wait at most, metadata and listings together: what is read
/// ahead is held until its mailbox is synced (about 100 bytes a message for an mdbox's
/// metadata, 200 for a listed record), so this bounds that memory.
const READ_AHEAD_MAX: usize = 64 * 1024;

/// While the peer's next item is slow to come — the peer is reading a changed mailbox —
/// reads what full views of `mailboxes` will need ([`Mailbox::prefetch_mails`]), one
/// mailbox after the other, a slice at a time, until the item is there: the two brains
/// run side by side, so this reading then costs no wall time. A peer that answers at once
/// (nothing changed there) costs no read-ahead. A read-ahead error only ends the
/// read-ahead of that mailbox: the view's own read reports it.
///
/// Once the first mailbox (the largest, or the one synced next) has nothing left to read
/// ahead and the peer still isn't there, its listing is made too ([`Mailbox::list_ahead`]),
/// within the same budget (a listing holds a record a message until its mailbox is
/// synced). Only the first: a mailbox unchanged on both sides is never listed, and the
/// largest is the one whose listing costs the most time after the wait.
fn read_ahead_until_peer<'a, I>(rx: &Inbox, mailboxes: impl FnOnce() -> I)
where
    I: Iterator<Item = &'a mut Box<dyn Mailbox>>,
{
    if rx.wait(READ_AHEAD_AFTER) {
        return;
    }
    let mut budget = READ_AHEAD_MAX;
    for (nth, mailbox) in mailboxes().enumerate() {
        let mut all_read = false;
        while budget > 0 {
            let slice = READ_AHEAD_SLICE.min(budget);
            budget -= slice;
            match mailbox.prefetch_mails(slice) {
                Ok(false) => {}
                Ok(true) => {
                    all_read = true;
                    break;
                }
                Err(_) => break,
            }
            if rx.wait(std::time::Duration::ZERO) {
                return;
            }
        }
        if nth > 0 || !all_read || rx.wait(std::time::Duration::ZERO) {
            continue;
        }
        let messages = mailbox
            .counters()
            .map_or(usize::MAX, |st| st.messages as usize);
        if messages <= budget {
            budget -= messages;
            // an error is left to the view's own read to report
            let _ = mailbox.list_ahead();
            if rx.wait(std::time::Duration::ZERO) {
                return;
            }
        }
    }
}

/// How long a brain in a stateful run waits for the peer before it reads its indexes
/// ahead ([`load_indexes_until_peer`]): a peer whose side didn't change answers well
/// within it, and then nothing is read that the run won't need.
const LOAD_INDEX_AFTER: std::time::Duration = std::time::Duration::from_millis(3);

/// A stateful run's [`read_ahead_until_peer`]: while the peer is slow to answer — it is
/// reading a changed mailbox, which this side will then sync — reads what a round reads
/// first of this side, the indexes of `mailboxes` ([`Mailbox::prefetch_index`]), one after
/// the other, until the peer's item is there. The messages are not read ahead: a stateful
/// round asks only for those changed since the state. An error is left to the round's own
/// read to report.
fn load_indexes_until_peer<'a, I>(rx: &Inbox, mailboxes: impl FnOnce() -> I)
where
    I: Iterator<Item = &'a mut Box<dyn Mailbox>>,
{
    if rx.wait(LOAD_INDEX_AFTER) {
        return;
    }
    for mailbox in mailboxes() {
        let _ = mailbox.prefetch_index();
        if rx.wait(std::time::Duration::ZERO) {
            return;
        }
    }
}

/// Body bytes per [`MailBatch`]: with the channel's bound this caps the bytes in flight.
const MAIL_BATCH_BYTES: usize = 2 * CHUNK_SIZE;

pub struct Brain {
    pub store: Box<dyn Store>,
    pub master: bool,
    pub opts: SyncOptions,
    pub tx: SyncSender<Item>,
    pub rx: Inbox,
    pub out: BrainOutcome,
    /// Mailboxes opened while building the tree, kept for the mail sync (a reopen would
    /// read each mailbox again; `sync()` on a kept handle is cheap when nothing changed).
    pub opened: BTreeMap<String, Box<dyn Mailbox>>,
    /// GUID → name of this side's mailboxes, until the tree changes.
    pub names: Option<BTreeMap<MailboxGuid, String>>,
    /// Items sent by either brain (what `-T` watches).
    pub progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// A second lane to the peer, when both stores have a second handle: the mail sync
    /// then runs on two threads per side, each lane syncing its share of the mailboxes
    /// ([`plan::lanes`]).
    pub lane: Option<Lane>,
}

/// The second lane between two brains: its own channel pair, and a second handle on this
/// side's store (`Store::second_handle`) for the thread that syncs the lane's mailboxes.
pub struct Lane {
    pub store: Box<dyn Store>,
    pub tx: SyncSender<Item>,
    pub rx: Inbox,
}

fn peer_gone() -> SyncError {
    SyncError::Peer("the other side disconnected".into())
}

/// Reads a body streamed as `MailChunk`s up to `MailEnd` (or a closing `MailLastChunk`).
struct ChunkReader<'a> {
    rx: &'a Inbox,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Item::MailChunk(c)) => {
                    self.buf = c;
                    self.pos = 0;
                }
                Ok(Item::MailLastChunk(c)) => {
                    self.buf = c;
                    self.pos = 0;
                    self.done = true;
                }
                Ok(Item::MailEnd) => self.done = true,
                _ => {
                    self.done = true;
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "mail stream from the other side ended unexpectedly",
                    ));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ChunkReader<'_> {
    fn drain(&mut self) {
        let mut sink = [0u8; 8192];
        while let Ok(n) = self.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    }
}

/// A name's hierarchy parts as this store's name, each part repaired as dsync's name
/// repair does (dsync_alt_char `_`): this store's separator and control characters, which
/// a part can't hold here (another store may allow them), become `_`.
pub fn join_name(parts: &[String], sep: char) -> String {
    parts
        .iter()
        .map(|p| {
            p.chars()
                .map(|c| {
                    if c == sep || (c as u32) < 0x20 || c == '\x7f' {
                        '_'
                    } else {
                        c
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(&sep.to_string())
}

pub fn split_name(name: &str, sep: char) -> Vec<String> {
    plan::name_key(&name.split(sep).map(str::to_string).collect::<Vec<_>>())
}

/// `read`, retried when interrupted by a signal.
fn read_some(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// SHA-1 of a message's body with CRLF read as LF; `None` when it can't be read.
fn body_digest(mailbox: &mut dyn Mailbox, uid: Uid) -> Option<[u8; 20]> {
    digest_of(mailbox, uid, true)
}

/// SHA-1 of the message's bytes exactly as stored (`lf_only`: CRLF read as LF).
fn digest_of(mailbox: &mut dyn Mailbox, uid: Uid, lf_only: bool) -> Option<[u8; 20]> {
    let mut body = mailbox.open_mail(uid).ok()?;
    let mut hash = Sha1::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    // A CR ending the previous chunk, not yet known to start a CRLF.
    let mut held_cr = false;
    loop {
        let n = match read_some(&mut body, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => return None,
        };
        let mut chunk = &buf[..n];
        if !lf_only {
            hash.update(chunk);
            continue;
        }
        if held_cr {
            if chunk[0] != b'\n' {
                hash.update(b"\r");
            }
            held_cr = false;
        }
        if chunk.last() == Some(&b'\r') {
            held_cr = true;
            chunk = &chunk[..chunk.len() - 1];
        }
        let mut start = 0;
        for i in 1..chunk.len() {
            if chunk[i] == b'\n' && chunk[i - 1] == b'\r' {
                hash.update(&chunk[start..i - 1]);
                start = i;
            }
        }
        hash.update(&chunk[start..]);
    }
    if held_cr {
        hash.update(b"\r");
    }
    Some(hash.finish())
}

fn digests(items: &[Item]) -> BTreeMap<Uid, [u8; 20]> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::MailHash(MailHash {
                uid,
                digest: Some(d),
            }) => Some((*uid, *d)),
            _ => None,
        })
        .collect()
}

/// A message as a `C` item (a save: "this message is here, like this").
fn change_of(r: MailRecord) -> MailChange {
    MailChange {
        change_type: ChangeType::Save,
        uid: r.uid,
        guid: if r.guid.is_empty() {
            None
        } else {
            Some(r.guid)
        },
        modseq: r.modseq.0,
        final_flags: r.flags,
        keywords: r.keywords,
        received_date: r.received_date,
        saved_date: r.saved_date,
        virtual_size: r.virtual_size,
        logged: Default::default(),
    }
}

/// This side's changes since `since` (its HIGHESTMODSEQ in the `-s` state): the messages
/// saved or changed after it and the expunges, reading no other message. `None` when the
/// mailbox's history doesn't reach back that far.
fn export_changes(
    mailbox: &mut dyn Mailbox,
    since: u64,
) -> Result<Option<(SideView, MailboxItem)>, SyncError> {
    let mut item = mailbox_item(mailbox)?;
    let Changes::Known {
        changed, expunged, ..
    } = mailbox.changes_since(ModSeq(since))?
    else {
        return Ok(None);
    };
    let mails = mailbox
        .mails_of(&changed)?
        .into_iter()
        .map(change_of)
        .collect();
    item.changes_only = true;
    Ok(Some((
        SideView {
            uid_validity: item.uid_validity,
            uid_validity_settable: item.uid_validity_settable,
            uid_next: item.uid_next,
            mails: Arc::new(mails),
            expunged: Some(expunged),
            logged: Vec::new(),
            dates_left_out: false,
        },
        item,
    )))
}

/// A debug log line (`-D`), formatted only when debug logging is on: some lines show a
/// whole plan.
macro_rules! debug_log {
    ($brain:expr, $($arg:tt)*) => {
        if $brain.opts.debug {
            $brain.log(format!($($arg)*))
        }
    };
}

/// This side's messages and counters. `need_vsize`: fill in virtual sizes the backend's
/// records leave out (for `-I`, dsync's exporter asks for them the same way). Without
/// `need_dates` (the `-S`/`-E` filters) the backend may leave the dates out: dsync's `C`
/// items carry none either (dsync-mailbox-export.c: received dates only for the filters).
fn export_view(
    mailbox: &mut dyn Mailbox,
    need_vsize: bool,
    need_dates: bool,
) -> Result<(SideView, MailboxItem), SyncError> {
    let item = mailbox_item(mailbox)?;
    let (mut records, dates_left_out) = if need_dates {
        (mailbox.mails()?, false)
    } else {
        mailbox.mails_without_dates()?
    };
    if need_vsize {
        for r in records.iter_mut().filter(|r| r.virtual_size.is_none()) {
            r.virtual_size = Some(mailbox.virtual_size(r.uid)?);
        }
    }
    let mails = Arc::new(records.into_iter().map(change_of).collect());
    // The whole remembered history, asked "since 1": a log that starts at modseq 1
    // (Dovecot's first transaction log) can't answer "since 0", and the answer is the same
    // whenever both are known — nothing is ever expunged at modseq 1, the first change of a
    // mailbox. One question, not two: each reads the mailbox's logs. Only the expunges
    // are wanted: every message of the view is in `mails`.
    let expunged = mailbox.expunged_since(ModSeq(1))?;
    Ok((
        SideView {
            uid_validity: item.uid_validity,
            uid_validity_settable: item.uid_validity_settable,
            uid_next: item.uid_next,
            mails,
            expunged,
            logged: Vec::new(),
            dates_left_out,
        },
        item,
    ))
}

/// This side's `B` item: the mailbox's counters after a sync, read without touching any
/// message (what fast and stateful mode decide on).
fn mailbox_item(mailbox: &mut dyn Mailbox) -> Result<MailboxItem, SyncError> {
    mailbox.sync()?;
    let st = mailbox.counters()?;
    // Capability probe: an empty update changes nothing; the default says NotPossible.
    let uid_validity_settable = mailbox.update_mailbox(&MailboxUpdate::default()).is_ok();
    Ok(MailboxItem {
        mailbox_guid: st.guid,
        uid_validity: st.uid_validity,
        uid_next: st.uid_next,
        messages_count: st.messages,
        highest_modseq: st.highest_modseq,
        mailbox_lost: false,
        uid_validity_settable,
        last_guid: st.last_guid,
        changes_only: false,
    })
}

/// The record of `uid` as `mailbox` holds it now; `None` when the message is gone (its
/// file too: expunged meanwhile). A record that can't be read is an error, never a record
/// without dates: a message sent with dates 0 would arrive received in 1970.
fn record_now(mailbox: &mut dyn Mailbox, uid: Uid) -> Result<Option<MailRecord>, Error> {
    match mailbox.mails_of(&[uid]) {
        Ok(records) => Ok(records.into_iter().next()),
        Err(e) if e.kind() == mailstore::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A `C` list as it crosses between brains: `shared`, a list sent whole (a view's own
/// messages: the receiver keeps the sender's list, no copy), and `others`, the items sent
/// one by one or in a list of their own (the expunges).
#[derive(Debug, Default)]
struct ChangeList {
    shared: Arc<Vec<MailChange>>,
    others: Vec<MailChange>,
}

impl ChangeList {
    fn of(changes: Vec<MailChange>) -> ChangeList {
        ChangeList {
            shared: Arc::new(changes),
            others: Vec::new(),
        }
    }

    /// Every change, `shared` first (copied only when the sender still holds it).
    fn into_vec(self) -> Vec<MailChange> {
        let mut all = Arc::try_unwrap(self.shared).unwrap_or_else(|a| (*a).clone());
        all.extend(self.others);
        all
    }
}

/// This side's `C` list of `view`: every message (the view's own list), then the
/// expunges.
fn view_changes(view: &SideView) -> ChangeList {
    let expunged = view.expunged.as_deref().unwrap_or_default();
    ChangeList {
        shared: Arc::clone(&view.mails),
        others: expunged
            .iter()
            .map(|(uid, guid)| MailChange::bare(ChangeType::Expunge, *uid, guid.clone()))
            .collect(),
    }
}

/// The peer's view from its `B` item and `C` list (its messages are the list it sent).
fn view_from_changes(b: &MailboxItem, changes: ChangeList, expunges_known: bool) -> SideView {
    let ChangeList { mut shared, others } = changes;
    let is_expunge = |c: &MailChange| c.change_type == ChangeType::Expunge;
    let (mut expunges, mails): (Vec<_>, Vec<_>) = others.into_iter().partition(is_expunge);
    if !mails.is_empty() || shared.iter().any(is_expunge) {
        // items not split as `view_changes` splits them (a remote peer's, one by one):
        // the messages in UID order, the expunges apart
        let all = Arc::make_mut(&mut shared);
        all.extend(mails);
        expunges.extend(all.extract_if(.., |c| is_expunge(c)));
        all.sort_by_key(|m| m.uid);
    }
    SideView {
        uid_validity: b.uid_validity,
        uid_validity_settable: b.uid_validity_settable,
        uid_next: b.uid_next,
        mails: shared,
        expunged: expunges_known.then_some(expunges.into_iter().map(|c| (c.uid, c.guid)).collect()),
        logged: Vec::new(),
        dates_left_out: false,
    }
}

impl Brain {
    fn send(&self, item: Item) -> Result<(), SyncError> {
        self.progress
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tx.send(item).map_err(|_| peer_gone())
    }

    fn recv(&self) -> Result<Item, SyncError> {
        self.rx.recv().map_err(|_| peer_gone())
    }

    fn log(&mut self, line: String) {
        if self.opts.debug {
            self.out.log.push(format!(
                "{}: {line}",
                if self.master { "master" } else { "slave" }
            ));
        }
    }

    fn send_list(&self, items: Vec<Item>) -> Result<(), SyncError> {
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let batch: Vec<Item> = items.by_ref().take(BATCH_SIZE).collect();
            self.send(Item::Batch(batch))?;
        }
        self.send(Item::EndOfList)
    }

    fn recv_list(&self) -> Result<Vec<Item>, SyncError> {
        let mut v = Vec::new();
        loop {
            match self.recv()? {
                Item::EndOfList => return Ok(v),
                i => v.push(i),
            }
        }
    }

    /// A `C` list: the shared list in one item (always, even empty: the peer keeps the
    /// first list as it came), the others in a second, then the list's end.
    fn send_changes(&self, changes: ChangeList) -> Result<(), SyncError> {
        self.send(Item::Changes(changes.shared))?;
        if !changes.others.is_empty() {
            self.send(Item::Changes(Arc::new(changes.others)))?;
        }
        self.send(Item::EndOfList)
    }

    /// The peer's `C` list: the list it sent whole first is kept as it came (shared with
    /// the peer), everything after it goes to `others`.
    fn recv_changes(&self) -> Result<ChangeList, SyncError> {
        let mut list = ChangeList::default();
        let mut first = true;
        let not_a_change = || SyncError::Peer("expected a mail change".into());
        loop {
            let item = self.recv()?;
            let was_first = std::mem::replace(&mut first, false);
            match item {
                Item::EndOfList => return Ok(list),
                Item::Changes(c) if was_first => list.shared = c,
                Item::Changes(c) => list
                    .others
                    .extend(Arc::try_unwrap(c).unwrap_or_else(|a| (*a).clone())),
                Item::Change(c) => list.others.push(c),
                _ => return Err(not_a_change()),
            }
        }
    }

    /// Master sends first, slave answers: returns what the peer sent.
    fn exchange<T, U>(
        &self,
        mine: T,
        send: fn(&Self, T) -> Result<(), SyncError>,
        recv: fn(&Self) -> Result<U, SyncError>,
    ) -> Result<U, SyncError> {
        if self.master {
            send(self, mine)?;
            recv(self)
        } else {
            let theirs = recv(self)?;
            send(self, mine)?;
            Ok(theirs)
        }
    }

    /// The peer's `C` list for this side's.
    fn exchange_changes(&self, mine: ChangeList) -> Result<ChangeList, SyncError> {
        self.exchange(mine, Self::send_changes, Self::recv_changes)
    }

    /// [`Brain::exchange_one`], reading ahead in `mailboxes` while the peer's item is
    /// slow to come ([`read_ahead_until_peer`]).
    fn exchange_reading_ahead<'a, I>(
        &self,
        mine: Item,
        mailboxes: impl FnOnce() -> I,
    ) -> Result<Item, SyncError>
    where
        I: Iterator<Item = &'a mut Box<dyn Mailbox>>,
    {
        self.exchange_while(mine, |rx| read_ahead_until_peer(rx, mailboxes))
    }

    /// [`Brain::exchange_one`], doing `work` (given the inbox to look at) before the
    /// peer's item is taken.
    fn exchange_while(&self, mine: Item, work: impl FnOnce(&Inbox)) -> Result<Item, SyncError> {
        if self.master {
            self.send(mine)?;
            work(&self.rx);
            self.recv()
        } else {
            work(&self.rx);
            let theirs = self.recv()?;
            self.send(mine)?;
            Ok(theirs)
        }
    }

    /// The peer's list for this side's.
    fn exchange_list(&self, mine: Vec<Item>) -> Result<Vec<Item>, SyncError> {
        self.exchange(mine, Self::send_list, Self::recv_list)
    }

    fn exchange_one(&self, mine: Item) -> Result<Item, SyncError> {
        self.exchange(mine, Self::send, Self::recv)
    }

    /// The side whose view wins ties: the source of one-way runs, else the master.
    fn is_primary(&self) -> bool {
        is_primary(&self.opts, self.master)
    }

    /// This side's mailbox GUID of a pair.
    fn own_guid(&self, pair: &MailboxPair) -> MailboxGuid {
        if self.is_primary() {
            pair.primary_guid
        } else {
            pair.secondary_guid
        }
    }

    /// The peer's mailbox GUID of a pair.
    fn peer_guid(&self, pair: &MailboxPair) -> MailboxGuid {
        if self.is_primary() {
            pair.secondary_guid
        } else {
            pair.primary_guid
        }
    }

    fn sep(&self) -> char {
        self.store.hierarchy_separator()
    }

    pub fn run(&mut self) -> Result<(), SyncError> {
        let hs = Handshake {
            hostname: mailstore::hostname().to_string(),
            sync_type: if self.opts.full {
                SyncType::Full
            } else if self.opts.state.is_some() {
                SyncType::State
            } else {
                SyncType::Changed
            },
            backup_send: self.opts.kind != MergeKind::TwoWay && self.is_primary(),
            backup_recv: self.opts.kind != MergeKind::TwoWay && !self.is_primary(),
            no_backup_overwrite: self.opts.kind == MergeKind::OneWay,
            sync_box: self.opts.mailbox.clone(),
            exclude_mailboxes: self.opts.exclude.clone(),
        };
        let peer_hs = self.exchange_one(Item::Handshake(hs))?;
        if !matches!(peer_hs, Item::Handshake(_)) {
            return Err(SyncError::Peer("expected a handshake".into()));
        }
        // Saved states (master → slave).
        let states: Vec<Item> = if self.master {
            self.opts
                .state
                .iter()
                .flatten()
                .cloned()
                .map(Item::MailboxState)
                .collect()
        } else {
            Vec::new()
        };
        let peer_states = self.exchange_list(states)?;
        let states: Vec<MailboxStateItem> = if self.master {
            self.opts.state.clone().unwrap_or_default()
        } else {
            peer_states
                .into_iter()
                .filter_map(|i| match i {
                    Item::MailboxState(s) => Some(s),
                    _ => None,
                })
                .collect()
        };
        // Mailbox trees. Deletes are exchanged before the tree nodes (Dovecot sends them
        // after): a node's newest saved date, which only a delete of its GUID needs, then
        // costs a message scan only for the mailboxes the peer logged as deleted.
        let mut nodes = self.build_tree()?;
        // Deletes: from the store's mailbox log, and mailboxes the saved state knew that
        // this side no longer has.
        let my_guids: BTreeSet<MailboxGuid> = nodes.iter().filter_map(|n| n.mailbox_guid).collect();
        let logged: Vec<(MailboxGuid, i64)> = self
            .store
            .deleted_mailboxes()?
            .into_iter()
            .filter(|(g, _)| !my_guids.contains(g))
            .collect();
        let since_state: Vec<(MailboxGuid, u32)> = states
            .iter()
            .filter(|s| !my_guids.contains(&s.mailbox_guid))
            .map(|s| (s.mailbox_guid, s.last_common_uid))
            .collect();
        let mine_item = MailboxDelete {
            hierarchy_sep: self.sep(),
            mailboxes: logged,
            since_state,
        };
        let to_deletes = |d: &MailboxDelete| plan::Deletes {
            logged: d.mailboxes.iter().copied().collect(),
            since_state: d.since_state.iter().copied().collect(),
        };
        let mine_del = to_deletes(&mine_item);
        // The first wait for the peer after it opened its mailboxes, which takes long when
        // one changed (a Maildir's directories are read then): meanwhile this side reads
        // ahead in its own, the largest first — the messages, or only the indexes when a
        // state says which changed (a stateful run compares the changes only).
        let read_ahead = states.is_empty() || self.opts.full;
        let mut opened = std::mem::take(&mut self.opened);
        let opened_ref = &mut opened;
        let largest_first = move || {
            // moved in whole: the closure runs once and hands the handles out
            let opened_ref = opened_ref;
            let mut by_size: Vec<_> = opened_ref
                .values_mut()
                .map(|mb| (mb.counters().map_or(0, |st| st.messages), mb))
                .collect();
            by_size.sort_by_key(|(messages, _)| std::cmp::Reverse(*messages));
            by_size.into_iter().map(|(_, mb)| mb)
        };
        let peer_del = if read_ahead {
            self.exchange_reading_ahead(Item::MailboxDelete(mine_item), largest_first)
        } else {
            self.exchange_while(Item::MailboxDelete(mine_item), |rx| {
                load_indexes_until_peer(rx, largest_first)
            })
        };
        self.opened = opened;
        let peer_del = match peer_del? {
            Item::MailboxDelete(d) => to_deletes(&d),
            _ => return Err(SyncError::Peer("expected mailbox_delete".into())),
        };
        for node in nodes.iter_mut() {
            if node
                .mailbox_guid
                .is_some_and(|g| peer_del.logged.contains_key(&g))
            {
                let name = node.name.join(&self.sep().to_string());
                let mut mb = self.store.open_mailbox(&name)?;
                node.newest_saved_date =
                    mb.mails()?.iter().map(|m| m.saved_date).max().unwrap_or(0);
            }
        }
        let peer_nodes: Vec<TreeNode> = self
            .exchange_list(nodes.iter().cloned().map(Item::MailboxTreeNode).collect())?
            .into_iter()
            .filter_map(|i| match i {
                Item::MailboxTreeNode(n) => Some(n),
                _ => None,
            })
            .collect();
        let filter = |nodes: Vec<TreeNode>| -> Vec<TreeNode> {
            nodes.into_iter().filter(|n| self.wanted(n)).collect()
        };
        let (pn, sn, pd, sd) = if self.is_primary() {
            (filter(nodes), filter(peer_nodes), mine_del, peer_del)
        } else {
            (filter(peer_nodes), filter(nodes), peer_del, mine_del)
        };
        let tree = plan::plan_tree(self.opts.kind, &pn, &sn, &pd, &sd);
        for name in &tree.name_conflicts {
            debug_log!(
                self,
                "{}: the name is another mailbox's on the other side",
                join_name(name, self.sep())
            );
            self.out.changes_during_sync = true;
        }
        let actions = if self.is_primary() {
            tree.primary.clone()
        } else {
            tree.secondary.clone()
        };
        if writable(self.opts.kind, self.is_primary()) {
            self.apply_tree(actions)?;
        }
        // Mailboxes, master-driven, on one lane or two.
        let state_by_guid: BTreeMap<MailboxGuid, MailboxStateItem> =
            states.into_iter().map(|s| (s.mailbox_guid, s)).collect();
        // no_mail_sync (`-m ""`, `-g ""`): the tree only (dsync_brain_next_mailbox).
        let pairs: &[MailboxPair] = if self.opts.no_mail_sync {
            &[]
        } else {
            &tree.pairs
        };
        let lanes = plan::lanes(pairs, &pn, &sn);
        match self.lane.take() {
            // both brains decide alike: both have a lane or neither (sync::run), and the
            // second lane is empty only with fewer than two pairs, which they share
            Some(lane) if !lanes[1].is_empty() => {
                let second_pairs: Vec<&MailboxPair> = lanes[1].iter().map(|&i| &pairs[i]).collect();
                let mut second = self.second_brain(lane, &second_pairs)?;
                let main_pairs: Vec<&MailboxPair> = lanes[0].iter().map(|&i| &pairs[i]).collect();
                let (main, other) = std::thread::scope(|s| {
                    let other =
                        s.spawn(|| second.sync_mailboxes(&second_pairs, pairs, &state_by_guid));
                    let main = self.sync_mailboxes(&main_pairs, pairs, &state_by_guid);
                    let other = other
                        .join()
                        .unwrap_or_else(|_| Err(SyncError::Peer("a sync lane panicked".into())));
                    (main, other)
                });
                let out = std::mem::take(&mut second.out);
                self.out.changes_during_sync |= out.changes_during_sync;
                self.out.errors.extend(out.errors);
                self.out.log.extend(out.log);
                self.out.states.extend(out.states);
                main?;
                other?;
            }
            _ => {
                let all: Vec<&MailboxPair> = pairs.iter().collect();
                self.sync_mailboxes(&all, pairs, &state_by_guid)?;
            }
        }
        if self.master {
            match self.recv()? {
                Item::Finish(f) => {
                    self.out.changes_during_sync |= f.changes_during_sync;
                    if let Some(e) = f.error {
                        self.out.errors.push(e);
                    }
                }
                _ => return Err(SyncError::Peer("expected finish".into())),
            }
        } else {
            let finish = Finish {
                error: if self.out.errors.is_empty() {
                    None
                } else {
                    Some(self.out.errors.join("; "))
                },
                require_full_resync: false,
                changes_during_sync: self.out.changes_during_sync,
            };
            self.send(Item::Finish(finish))?;
        }
        Ok(())
    }

    /// Syncs a lane's mailboxes: the master announces each of `mine` and ends the lane
    /// with `EndOfList`; the slave syncs each mailbox of `pairs` the master announces.
    fn sync_mailboxes(
        &mut self,
        mine: &[&MailboxPair],
        pairs: &[MailboxPair],
        state_by_guid: &BTreeMap<MailboxGuid, MailboxStateItem>,
    ) -> Result<(), SyncError> {
        if self.master {
            for pair in mine {
                self.send(Item::Mailbox(MailboxItem {
                    mailbox_guid: self.own_guid(pair),
                    ..Default::default()
                }))?;
                self.sync_pair(pair, state_by_guid.get(&pair.primary_guid))?;
            }
            return self.send(Item::EndOfList);
        }
        loop {
            match self.recv()? {
                Item::EndOfList => return Ok(()),
                Item::Mailbox(b) => {
                    let pair = pairs
                        .iter()
                        .find(|p| self.peer_guid(p) == b.mailbox_guid)
                        .ok_or_else(|| SyncError::Peer("unknown mailbox announced".into()))?;
                    self.sync_pair(pair, state_by_guid.get(&pair.primary_guid))?;
                }
                _ => return Err(SyncError::Peer("expected mailbox".into())),
            }
        }
    }

    /// The brain of the second lane: the lane's channels and store handle, this brain's
    /// names, and the handles this brain kept of the lane's mailboxes.
    fn second_brain(&mut self, lane: Lane, pairs: &[&MailboxPair]) -> Result<Brain, SyncError> {
        let mut opened = BTreeMap::new();
        for pair in pairs {
            let name = self.pair_name(pair)?;
            if let Some(mb) = self.opened.remove(&name) {
                opened.insert(name, mb);
            }
        }
        Ok(Brain {
            store: lane.store,
            master: self.master,
            opts: self.opts.clone(),
            tx: lane.tx,
            rx: lane.rx,
            out: BrainOutcome::default(),
            opened,
            names: self.names.clone(),
            progress: Arc::clone(&self.progress),
            lane: None,
        })
    }

    /// `-g` (the mailbox GUID; dsync-mailbox-tree-fill.c leaves every other node out, also
    /// \Noselect parents) and `-m` / `-x` (the name written with `/`).
    fn wanted(&self, node: &TreeNode) -> bool {
        if let Some(guid) = self.opts.mailbox_guid {
            if node.mailbox_guid != Some(guid) {
                return false;
            }
        }
        let parts = &node.name;
        let name = parts.join("/");
        if let Some(only) = &self.opts.mailbox {
            if !plan::name_key(&split_name(only, '/')).eq(&plan::name_key(parts)) {
                return false;
            }
        }
        !self
            .opts
            .exclude
            .iter()
            .any(|mask| mailstore::mask_matches(mask, &name, '/'))
    }

    fn build_tree(&mut self) -> Result<Vec<TreeNode>, SyncError> {
        let sep = self.sep();
        let mut nodes = Vec::new();
        // The store's name of each node, for its change times.
        let mut store_names = Vec::new();
        let mut seen = BTreeSet::new();
        // GUID → name, as guid_names finds them: the listing is not read again for that
        let mut names = BTreeMap::new();
        for info in self.store.list_mailboxes()? {
            let parts = split_name(&info.name, sep);
            if info.attrs.nonexistent || info.attrs.noselect {
                continue;
            }
            let Some(mut mb) = self.open_listed(&info.name)? else {
                if let Some(guid) = info.guid {
                    names.insert(guid, info.name.clone());
                }
                continue;
            };
            let st = mb.counters()?;
            self.opened.insert(info.name.clone(), mb);
            let guid = info.guid.unwrap_or(st.guid);
            names.insert(guid, info.name.clone());
            // filled in once the peer's deletes are known, for the GUIDs they name
            let newest_saved_date = 0;
            seen.insert(parts.clone());
            store_names.push(info.name.clone());
            nodes.push(TreeNode {
                name: parts,
                existence: Existence::Exists,
                mailbox_guid: Some(guid),
                uid_validity: st.uid_validity,
                uid_next: st.uid_next,
                subscribed: info.subscribed,
                newest_saved_date,
                last_renamed_or_created: 0,
                last_subscription_change: 0,
            });
        }
        for name in self.store.subscriptions()? {
            let parts = split_name(&name, sep);
            if let Some(n) = nodes.iter_mut().find(|n| n.name == parts) {
                n.subscribed = true;
            } else if seen.insert(parts.clone()) {
                store_names.push(name);
                nodes.push(TreeNode {
                    name: parts,
                    existence: Existence::Nonexistent,
                    mailbox_guid: None,
                    uid_validity: 0,
                    uid_next: 0,
                    subscribed: true,
                    newest_saved_date: 0,
                    last_renamed_or_created: 0,
                    last_subscription_change: 0,
                });
            }
        }
        // dsync-mailbox-tree-fill.c: the mailbox log's RENAME and (UN)SUBSCRIBE times.
        let times = self.store.name_change_times(&store_names)?;
        for (node, t) in nodes.iter_mut().zip(times) {
            node.last_renamed_or_created = t.renamed;
            node.last_subscription_change = t.subscription_changed;
        }
        self.names = Some(names);
        Ok(nodes)
    }

    /// GUID → name of this side's mailboxes (listed and opened as [`Brain::build_tree`]
    /// does, which leaves them here until the tree changes).
    fn guid_names(&mut self) -> Result<BTreeMap<MailboxGuid, String>, SyncError> {
        if let Some(names) = &self.names {
            return Ok(names.clone());
        }
        let mut map = BTreeMap::new();
        for info in self.store.list_mailboxes()? {
            if info.attrs.nonexistent || info.attrs.noselect {
                continue;
            }
            let guid = match info.guid {
                Some(g) => g,
                None => {
                    let Some(mut mb) = self.open_listed(&info.name)? else {
                        continue;
                    };
                    let guid = mb.counters()?.guid;
                    self.opened.insert(info.name.clone(), mb);
                    guid
                }
            };
            map.insert(guid, info.name);
        }
        self.names = Some(map.clone());
        Ok(map)
    }

    /// Opens a listed mailbox; `None` when it can't be selected after all (a directory
    /// whose name doesn't map back to itself, e.g. a Maildir folder holding a raw control
    /// character, which Dovecot lists but can't open either; a mailbox deleted meanwhile):
    /// dsync-brain-mailbox.c skips such a mailbox ("isn't selectable, try the next one").
    fn open_listed(&mut self, name: &str) -> Result<Option<Box<dyn Mailbox>>, SyncError> {
        match self.open_kept(name) {
            Ok(mb) => Ok(Some(mb)),
            Err(e @ (Error::MailboxNotFound(_) | Error::NotPossible(_))) => {
                debug_log!(self, "{name}: not selectable, skipped: {e}");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a mailbox, reusing the handle kept from the tree phase (synced again).
    fn open_kept(&mut self, name: &str) -> Result<Box<dyn Mailbox>, Error> {
        match self.opened.remove(name) {
            Some(mut mb) => {
                mb.sync()?;
                Ok(mb)
            }
            None => self.store.open_mailbox(name),
        }
    }

    /// Drops the kept handles and names: the tree (names or GUIDs) changed.
    fn forget_mailboxes(&mut self) {
        self.opened.clear();
        self.names = None;
    }

    /// Applies this side's tree changes. EXISTS/NOTFOUND conflicts are "changes during
    /// sync" (exit 2), as in dsync-brain-mailbox-tree-sync.c.
    fn apply_tree(&mut self, actions: Vec<TreeAction>) -> Result<(), SyncError> {
        // Nothing to change: the handles opened for the tree stay valid for the mail sync
        // (else every mailbox would be opened, and a Maildir scanned, twice).
        if actions.is_empty() {
            return Ok(());
        }
        let sep = self.sep();
        for action in actions {
            self.forget_mailboxes();
            debug_log!(self, "tree: {action:?}");
            let result = match &action {
                TreeAction::Delete { guid, at, .. } => {
                    let names = self.guid_names()?;
                    match names.get(guid) {
                        Some(n) => {
                            // a delete copied from the peer keeps the peer's time
                            self.store.set_change_time((*at > 0).then_some(*at));
                            let r = self.store.delete_mailbox(n);
                            self.store.set_change_time(None);
                            r
                        }
                        None => Ok(()),
                    }
                }
                TreeAction::Rename { guid, to, at, .. } => {
                    let names = self.guid_names()?;
                    let target = join_name(to, sep);
                    match names.get(guid) {
                        Some(cur) if *cur == target => Ok(()),
                        Some(cur) => {
                            // Move a mailbox occupying the target out of the way first
                            // (dsync's temporary names, `<name>-temp-<hex>`).
                            if let Some((og, oname)) = names.iter().find(|(_, n)| **n == target) {
                                let tmp = format!("{oname}-temp-{}", &og.to_string()[..8]);
                                let _ = self.store.rename_mailbox(oname, &tmp);
                                self.out.changes_during_sync = true;
                            }
                            // stamped with the winning side's rename time, so the two logs
                            // agree on when it happened (mailbox_list_set_changelog_timestamp)
                            self.store.set_change_time((*at > 0).then_some(*at));
                            let r = self.store.rename_mailbox(cur, &target);
                            self.store.set_change_time(None);
                            r
                        }
                        None => Err(Error::MailboxNotFound(target)),
                    }
                }
                TreeAction::Create {
                    name,
                    guid,
                    uid_validity,
                } => {
                    let n = join_name(name, sep);
                    match self.store.create_mailbox(&n, Some(*guid)) {
                        Ok(()) => {
                            let mut mb = self.store.open_mailbox(&n)?;
                            let st = mb.counters()?;
                            if st.uid_validity != *uid_validity && st.messages == 0 {
                                if let Err(e) = mb.update_mailbox(&MailboxUpdate {
                                    uid_validity: Some(*uid_validity),
                                    ..Default::default()
                                }) {
                                    debug_log!(self, "{n}: keeping UIDVALIDITY: {e}");
                                }
                            }
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                TreeAction::Subscribe(name, on, at) => {
                    // stamped with the peer's time (mailbox_list_set_changelog_timestamp)
                    self.store.set_change_time((*at > 0).then_some(*at));
                    let r = self.store.set_subscribed(&join_name(name, sep), *on);
                    self.store.set_change_time(None);
                    r
                }
            };
            match result {
                Ok(()) => {}
                Err(Error::MailboxExists(_)) | Err(Error::MailboxNotFound(_)) => {
                    self.out.changes_during_sync = true;
                }
                Err(e) => self.out.errors.push(format!("{action:?}: {e}")),
            }
        }
        // names looked up while applying describe the tree before the last change
        self.forget_mailboxes();
        Ok(())
    }

    /// This side's name of a pair's mailbox: by its GUID, else the pair's name.
    fn pair_name(&mut self, pair: &MailboxPair) -> Result<String, SyncError> {
        let my_guid = self.own_guid(pair);
        Ok(match self.guid_names()?.get(&my_guid) {
            Some(n) => n.clone(),
            None => join_name(&pair.name, self.sep()),
        })
    }

    fn open_pair(&mut self, pair: &MailboxPair) -> Result<Option<NamedMailbox>, SyncError> {
        let name = self.pair_name(pair)?;
        match self.open_kept(&name) {
            Ok(mb) => Ok(Some((name, mb))),
            Err(Error::MailboxNotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Two mailboxes paired by name but with different GUIDs (typically the INBOX each
    /// side created on its own): one takes the other's GUID, as dsync does in
    /// dsync-brain-mailbox-tree-sync.c sync_create_box — a backup or one-way destination
    /// takes the source's, in a two-way sync the lower GUID takes the higher. Both brains
    /// decide this run on the `B` items as sent (so this run still compares the pair in
    /// full); from the next run on the GUIDs agree and fast mode can skip the pair. A
    /// backend that can't change the GUID just keeps it.
    fn adopt_peer_guid(
        &mut self,
        name: &str,
        mailbox: &mut dyn Mailbox,
        mine: &MailboxItem,
        theirs: &MailboxItem,
    ) {
        if mine.mailbox_guid == theirs.mailbox_guid || theirs.mailbox_guid.is_zero() {
            return;
        }
        let kind = self.opts.kind;
        let take = match kind {
            MergeKind::TwoWay => theirs.mailbox_guid.0 > mine.mailbox_guid.0,
            _ => !self.is_primary(),
        };
        if !take || !writable(kind, self.is_primary()) {
            return;
        }
        self.names = None;
        match mailbox.set_mailbox_guid(theirs.mailbox_guid) {
            Ok(()) => debug_log!(
                self,
                "{name}: mailbox GUID {} -> {}",
                mine.mailbox_guid,
                theirs.mailbox_guid
            ),
            Err(e) => debug_log!(self, "{name}: keeps its mailbox GUID: {e}"),
        }
    }

    /// Syncs one mailbox: `B` exchange, then one or two merge rounds.
    fn sync_pair(
        &mut self,
        pair: &MailboxPair,
        state: Option<&MailboxStateItem>,
    ) -> Result<(), SyncError> {
        let opened = self.open_pair(pair)?;
        let (name, mut mailbox) = match opened {
            Some(x) => x,
            None => {
                let lost = MailboxItem {
                    mailbox_lost: true,
                    ..Default::default()
                };
                let _ = self.exchange_one(Item::Mailbox(lost))?;
                self.out.changes_during_sync = true;
                return Ok(());
            }
        };
        let mine = mailbox_item(mailbox.as_mut())?;
        // Without a state entry a changed mailbox is compared in full: read ahead for that
        // while the peer reads its side.
        let read_ahead = state.is_none() || self.opts.full;
        let theirs = if read_ahead {
            self.exchange_reading_ahead(Item::Mailbox(mine.clone()), || {
                std::iter::once(&mut mailbox)
            })?
        } else {
            // a stateful round reads the index first (its changes): read it while a slow
            // peer reads its changed side
            self.exchange_while(Item::Mailbox(mine.clone()), |rx| {
                load_indexes_until_peer(rx, || std::iter::once(&mut mailbox))
            })?
        };
        let theirs = match theirs {
            Item::Mailbox(b) => b,
            _ => return Err(SyncError::Peer("expected mailbox".into())),
        };
        if theirs.mailbox_lost {
            self.out.changes_during_sync = true;
            return Ok(());
        }
        self.adopt_peer_guid(&name, mailbox.as_mut(), &mine, &theirs);
        let (p_b, s_b) = if self.is_primary() {
            (&mine, &theirs)
        } else {
            (&theirs, &mine)
        };
        // Stateful mode: nothing changed on either side since the state → skip, keeping the
        // entry (dsync-brain-mailbox.c skips on the master's counters alone; mailsync also
        // checks the slave's, so a change made only there is never missed).
        if let Some(st) = state.filter(|_| !self.opts.full) {
            let (m_b, sl_b) = if self.master {
                (&mine, &theirs)
            } else {
                (&theirs, &mine)
            };
            let unchanged = st.last_uidvalidity != 0
                && st.last_uidvalidity == m_b.uid_validity
                && st.last_uidvalidity == sl_b.uid_validity
                && st.last_common_uid.saturating_add(1) == m_b.uid_next
                && m_b.uid_next == sl_b.uid_next
                && st.last_common_modseq == m_b.highest_modseq
                && st.last_common_pvt_modseq == sl_b.highest_modseq
                && st.last_messages_count == m_b.messages_count
                && m_b.messages_count == sl_b.messages_count;
            if unchanged {
                debug_log!(self, "{name}: unchanged since the state, skipped");
                if self.master {
                    self.out.states.push(st.clone());
                }
                return Ok(());
            }
        }
        // Fast mode (sync_type `c`): equal counters on both sides → nothing to do. Unlike
        // dsync_boxes_need_sync (dsync-brain-mailbox.c), the mailbox GUIDs must be equal
        // too: two INBOXes each side created on its own can reach equal counters with
        // different mail (one delivery to each), and skipping them would leave both
        // deliveries unsynced. Nor with a state entry that says the mailbox changed since:
        // counters are per side, so an expunge and a flag change on each side can leave
        // them equal with different contents; the state's changes are compared instead.
        if !self.opts.full
            && state.is_none()
            && p_b.uid_validity == s_b.uid_validity
            && p_b.uid_next == s_b.uid_next
            && p_b.messages_count == s_b.messages_count
            && p_b.highest_modseq == s_b.highest_modseq
            && p_b.mailbox_guid == s_b.mailbox_guid
            && p_b.last_guid == s_b.last_guid
        {
            debug_log!(self, "{name}: unchanged, skipped");
            if self.master {
                let (m_b, sl_b) = (&mine, &theirs);
                self.out.states.push(MailboxStateItem {
                    mailbox_guid: pair.primary_guid,
                    last_uidvalidity: m_b.uid_validity,
                    last_common_uid: m_b.uid_next.saturating_sub(1),
                    last_common_modseq: m_b.highest_modseq,
                    last_common_pvt_modseq: sl_b.highest_modseq,
                    last_messages_count: m_b.messages_count,
                    changes_during_sync: false,
                });
            }
            return Ok(());
        }
        // The mailbox changed: lock it for the compare and merge, as dsync does before its
        // full sync of a changed mailbox (dsync-brain-mailbox.c dsync_mailbox_lock), so a
        // concurrent sync of this mailbox — ours or Dovecot's — waits.
        let _box_lock = mailbox.lock_for_sync(self.opts.mailbox_lock_timeout)?;
        let lcu = state
            .filter(|s| {
                s.last_uidvalidity == p_b.uid_validity && s.last_uidvalidity == s_b.uid_validity
            })
            .map(|s| s.last_common_uid)
            .unwrap_or(0);
        // Rounds: (kind, am I the round's primary).
        let primary = self.is_primary();
        let rounds: Vec<(MergeKind, bool)> = if self.opts.kind == MergeKind::TwoWay
            && p_b.uid_validity != s_b.uid_validity
            && p_b.messages_count > 0
            && s_b.messages_count > 0
            && loser_settable(p_b, s_b)
        {
            // UIDVALIDITY differs (§4.1): the side with more messages (tie: higher
            // UIDVALIDITY) wins. First the winner takes every message of the loser
            // (nothing dropped), then the loser is rebuilt as a copy of the winner.
            let primary_wins =
                (p_b.messages_count, p_b.uid_validity) > (s_b.messages_count, s_b.uid_validity);
            let i_win = primary_wins == primary;
            debug_log!(self, "{name}: UIDVALIDITY differs, winner is me: {i_win}");
            vec![(MergeKind::OneWay, !i_win), (MergeKind::Backup, i_win)]
        } else {
            vec![(self.opts.kind, primary)]
        };
        // Stateful (`-s`): each side lists only its changes since its HIGHESTMODSEQ in the
        // state (the master's is `last_common_modseq`, the slave's `last_common_pvt_modseq`,
        // see combine_states). Not with filters: a message they kept on one side is no
        // change, and an incremental list could take its absence for an expunge.
        let since = state
            .filter(|st| {
                !self.opts.full
                    && self.opts.filter.is_empty()
                    && rounds.len() == 1
                    && st.last_uidvalidity != 0
                    && st.last_uidvalidity == p_b.uid_validity
                    && st.last_uidvalidity == s_b.uid_validity
            })
            .map(|st| {
                if self.master {
                    st.last_common_modseq
                } else {
                    st.last_common_pvt_modseq
                }
            });
        let mut final_next = 0;
        let mut filtered_min_uid: Option<u32> = None;
        for (kind, round_primary) in rounds {
            let (next, filtered) =
                self.round(&name, &mut mailbox, kind, round_primary, lcu, since)?;
            final_next = next;
            filtered_min_uid = match (filtered_min_uid, filtered) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        // A message the filters kept on one side only is not common: the state stops
        // below it (its absence on the other side is no expunge).
        let last_common_uid = match filtered_min_uid {
            Some(uid) => final_next.min(uid).saturating_sub(1),
            None => final_next.saturating_sub(1),
        };
        // State: the master remembers what both sides now hold in common.
        mailbox.sync()?;
        let st = mailbox.counters()?;
        let my_state = MailboxStateItem {
            mailbox_guid: st.guid,
            last_uidvalidity: st.uid_validity,
            last_common_uid,
            last_common_modseq: st.highest_modseq,
            last_common_pvt_modseq: 0,
            last_messages_count: st.messages,
            changes_during_sync: self.out.changes_during_sync,
        };
        let peer = self.exchange_one(Item::MailboxState(my_state.clone()))?;
        if let Item::MailboxState(ps) = &peer {
            if ps.last_uidvalidity != st.uid_validity {
                // A backend that can't take the other side's UIDVALIDITY
                // (Mailbox::update_mailbox): in sync otherwise, but not perfectly.
                debug_log!(self, "{name}: UIDVALIDITY still differs");
                self.out.changes_during_sync = true;
            }
            // Make the two replicas' modseqs comparable (dsync-mailbox-import.c raises
            // HIGHESTMODSEQ to the remote's at the end): every later change on either side
            // then has a higher modseq than any unchanged copy, so "higher modseq wins"
            // picks the side that really changed.
            if ps.last_common_modseq > st.highest_modseq
                && writable(self.opts.kind, self.is_primary())
            {
                if let Err(e) = mailbox.update_mailbox(&MailboxUpdate {
                    min_highest_modseq: Some(ps.last_common_modseq),
                    ..Default::default()
                }) {
                    debug_log!(self, "{name}: can't raise HIGHESTMODSEQ: {e}");
                }
            }
        }
        // The final counters after the HIGHESTMODSEQ raise, for the state.
        mailbox.sync()?;
        let st = mailbox.counters()?;
        let final_state = MailboxStateItem {
            last_common_modseq: st.highest_modseq,
            last_messages_count: st.messages,
            last_uidvalidity: st.uid_validity,
            ..my_state
        };
        let peer = self.exchange_one(Item::MailboxState(final_state.clone()))?;
        if let (Item::MailboxState(ps), true) = (peer, self.master) {
            self.out
                .states
                .push(combine_states(final_state, &ps, self.is_primary()));
        }
        Ok(())
    }

    /// The `C` lists and the `B` items of a round: this side's view and the peer's. With
    /// `since` (a stateful run), first only the changes since the state: when both sides
    /// could list them, each also sends its records of the UIDs only the peer listed, so
    /// both views hold exactly the messages either side changed (the rest are common and
    /// unchanged). When either side couldn't, both send full lists.
    fn exchange_views(
        &mut self,
        name: &str,
        mailbox: &mut dyn Mailbox,
        since: Option<u64>,
    ) -> Result<(SideView, SideView, MailboxItem), SyncError> {
        let mut changes = match since {
            Some(m) => export_changes(mailbox, m)?,
            None => None,
        };
        loop {
            let (mut view, b) = match changes.take() {
                Some(x) => x,
                None => export_view(
                    mailbox,
                    self.opts.filter.max_size.is_some(),
                    self.opts.filter.needs_dates(),
                )?,
            };
            if !b.changes_only {
                debug_log!(self, "{name}: expunge history {:?}", view.expunged);
            }
            let theirs = self.exchange_changes(view_changes(&view))?;
            let peer_b = match self.exchange_one(Item::Mailbox(b.clone()))? {
                Item::Mailbox(pb) => pb,
                _ => return Err(SyncError::Peer("expected mailbox".into())),
            };
            // An unknown expunge history sends no expunges: both mean "no evidence",
            // which only ever keeps a message.
            let mut peer_view = view_from_changes(&peer_b, theirs, true);
            match (b.changes_only, peer_b.changes_only) {
                (false, false) => return Ok((view, peer_view, b)),
                (true, true) => {}
                _ => continue,
            }
            let listed = |v: &SideView| -> BTreeSet<Uid> {
                v.mails
                    .iter()
                    .map(|m| m.uid)
                    .chain(v.expunged.iter().flatten().map(|e| e.0))
                    .collect()
            };
            let mine = listed(&view);
            let asked: Vec<Uid> = listed(&peer_view).difference(&mine).copied().collect();
            let answers = mailbox.mails_of(&asked)?;
            debug_log!(
                self,
                "{name}: changes since the state: {} here, {} there, {} looked up",
                view.mails.len() + view.expunged.as_ref().map_or(0, Vec::len),
                peer_view.mails.len() + peer_view.expunged.as_ref().map_or(0, Vec::len),
                answers.len()
            );
            let answers: Vec<MailChange> = answers.into_iter().map(change_of).collect();
            let answers = ChangeList::of(answers);
            let shared = Arc::clone(&answers.shared);
            let peer_answers = self.exchange_changes(answers)?.into_vec();
            // (the lists of changes are short: a copy of one shared with the peer is cheap)
            let mails = Arc::make_mut(&mut view.mails);
            mails.extend(shared.iter().cloned());
            mails.sort_by_key(|m| m.uid);
            let peer_mails = Arc::make_mut(&mut peer_view.mails);
            peer_mails.extend(peer_answers);
            peer_mails.sort_by_key(|m| m.uid);
            return Ok((view, peer_view, b));
        }
    }

    /// One merge round: `C` lists, plan, `R` lists, `M` streams. Returns the common UIDNEXT
    /// and the lowest UID the filters left on one side only. `since`: this side's
    /// HIGHESTMODSEQ in the state, for a stateful round.
    fn round(
        &mut self,
        name: &str,
        mailbox: &mut Box<dyn Mailbox>,
        kind: MergeKind,
        primary: bool,
        lcu: u32,
        since: Option<u64>,
    ) -> Result<(u32, Option<u32>), SyncError> {
        // dsync-brain-mailbox.c enables CONDSTORE on every mailbox it syncs: per-message
        // modseqs, so "the later change wins" compares the right messages (an index
        // extension, no message changes; a backup's source needs none: nothing is merged).
        if kind != MergeKind::Backup || !primary {
            if let Err(e) = mailbox.enable_modseqs() {
                debug_log!(self, "{name}: no per-message modseqs: {e}");
            }
        }
        let (mut view, mut peer_view, b) = self.exchange_views(name, mailbox.as_mut(), since)?;
        if b.changes_only && kind == MergeKind::Backup {
            // A copy to rebuild needs every message of both sides: plan again from full
            // lists (both sides see the same plan, so both do).
            let (pv, sv) = if primary {
                (&view, &peer_view)
            } else {
                (&peer_view, &view)
            };
            if plan::backup_needs_recreate(pv, sv, &self.opts.filter) {
                debug_log!(self, "{name}: the copy must be rebuilt: full lists");
                return self.round(name, mailbox, kind, primary, lcu, None);
            }
        }
        if kind != MergeKind::Backup {
            self.exchange_flag_changes(name, mailbox.as_mut(), &mut view, &mut peer_view, since)?;
        }
        let uid_validity_settable = b.uid_validity_settable;
        let (pv, sv) = if primary {
            (&view, &peer_view)
        } else {
            (&peer_view, &view)
        };
        let filter = self.opts.filter.clone();
        let links = if kind == MergeKind::Backup {
            Vec::new()
        } else {
            self.verified_links(name, mailbox.as_mut(), pv, sv, primary)?
        };
        let full = plan::plan_mailbox(kind, pv, sv, lcu, &filter, &links);
        let copies = self.verified_copies(name, mailbox.as_mut(), &full, pv, sv, primary)?;
        let common_next = full.primary.min_uid_next.max(full.secondary.min_uid_next);
        // this side's half of the plan is kept; the peer's goes now (per-message data,
        // not held through the transfer)
        let plan::MailboxPlan {
            primary: primary_plan,
            secondary: secondary_plan,
            filtered_min_uid,
        } = full;
        let mut filtered_min_uid = filtered_min_uid;
        let mut mine: SidePlan = if primary {
            drop(secondary_plan);
            primary_plan
        } else {
            drop(primary_plan);
            secondary_plan
        };
        if !writable(kind, primary) {
            mine = SidePlan::default();
        }
        if mine.recreate && mailstore::names::is_inbox(name) && !uid_validity_settable {
            // INBOX is never deleted, and this backend can't restart its UIDs: revert in
            // place; messages that can't get their UID back get new ones and the run
            // reports "not in sync" (exit 2).
            debug_log!(self, "{name}: can't rebuild INBOX, reverting in place");
            let in_place = plan::plan_backup_in_place(pv, sv, &filter);
            filtered_min_uid = in_place.filtered_min_uid;
            mine = in_place.secondary;
            self.out.changes_during_sync = true;
        }
        if mine.recreate {
            debug_log!(self, "{name}: rebuilding the copy");
            self.recreate(name, mailbox, pv.uid_validity)?;
            let (own, _) = export_view(mailbox.as_mut(), false, filter.needs_dates())?;
            let rebuilt = plan::plan_backup(pv, &own, &filter);
            filtered_min_uid = rebuilt.filtered_min_uid;
            mine = rebuilt.secondary;
            if mine.recreate {
                // INBOX that can't be emptied down to the source's UIDs.
                mine.recreate = false;
                self.out.changes_during_sync = true;
            }
        }
        for save in &mut mine.saves {
            if let SaveSource::Peer(peer_uid) = save.source {
                if let Some(local) = copies.get(&peer_uid) {
                    save.source = SaveSource::Copy(*local);
                }
            }
        }
        // planned: the peer's list isn't needed any more (this side's serves the dates of
        // the messages it sends)
        drop(peer_view);
        debug_log!(self, "{name}: {kind:?} plan {mine:?}");
        let requests: Vec<Item> = mine
            .saves
            .iter()
            .filter_map(|s| match s.source {
                SaveSource::Peer(uid) => Some(Item::MailRequest(MailRequest {
                    guid: s.guid.clone(),
                    uid,
                })),
                SaveSource::Own(_) | SaveSource::Copy(_) => None,
            })
            .collect();
        let mut peer_requests: Vec<MailRequest> = self
            .exchange_list(requests)?
            .into_iter()
            .filter_map(|i| match i {
                Item::MailRequest(r) => Some(r),
                _ => None,
            })
            .collect();
        // collected in place, the requests would keep the received items' buffer (one
        // `Item` each, several times a request's size) through the whole transfer
        peer_requests.shrink_to_fit();
        if self.master {
            self.send_mails(mailbox.as_mut(), &view, &peer_requests, &BTreeMap::new())?;
            self.import(name, mailbox, &mine, &view)?;
        } else {
            // The slave imports first: a request for a UID it renumbered is served from
            // the UID the message really got (a delivery during the sync may have taken
            // the planned one).
            let moved = self.import(name, mailbox, &mine, &view)?;
            mailbox.sync()?;
            self.send_mails(mailbox.as_mut(), &view, &peer_requests, &moved)?;
        }
        Ok((common_next, filtered_min_uid))
    }

    /// The logged flag changes (since the state's modseq, or as far back as the history
    /// reaches) of the messages both sides hold with different flags, exchanged so that
    /// the plan merges them flag by flag (dsync sends them in its `C` items). Both sides
    /// compute the same list, so without any (the usual case) nothing is exchanged.
    fn exchange_flag_changes(
        &mut self,
        name: &str,
        mailbox: &mut dyn Mailbox,
        view: &mut SideView,
        peer_view: &mut SideView,
        since: Option<u64>,
    ) -> Result<(), SyncError> {
        let conflicts = plan::flag_conflicts(view, peer_view);
        if conflicts.is_empty() {
            return Ok(());
        }
        let mine = mailbox.flag_changes_since(ModSeq(since.unwrap_or(0)), &conflicts)?;
        debug_log!(
            self,
            "{name}: {} messages with different flags, {} with logged changes here",
            conflicts.len(),
            mine.len()
        );
        let items = mine
            .iter()
            .map(|(uid, logged)| {
                Item::Change(MailChange {
                    logged: Some(Box::new(logged.clone())),
                    ..MailChange::bare(ChangeType::FlagChange, *uid, None)
                })
            })
            .collect();
        let theirs = self.exchange_list(items)?;
        let fill = |v: &mut SideView, mut changes: Vec<(Uid, FlagChange)>| {
            changes.retain(|(uid, _)| v.mail(*uid).is_some());
            changes.sort_by_key(|(uid, _)| *uid);
            v.logged = changes;
        };
        fill(view, mine);
        fill(
            peer_view,
            theirs
                .into_iter()
                .filter_map(|i| match i {
                    // `conflicts` is ascending by UID
                    Item::Change(c) if conflicts.binary_search(&c.uid).is_ok() => {
                        Some((c.uid, *c.logged?))
                    }
                    _ => None,
                })
                .collect(),
        );
        Ok(())
    }

    /// The local copies this side can make instead of receiving a body
    /// (`plan::local_copy_candidates`): the peer's UID → this side's UID of the same bytes.
    /// Each side hashes the candidates' bodies it holds — its local instances, and its
    /// messages the peer would copy — and the two exchange the digests. Both sides compute
    /// the same candidates, so without any (the usual case) nothing is exchanged.
    fn verified_copies(
        &mut self,
        name: &str,
        mailbox: &mut dyn Mailbox,
        full: &plan::MailboxPlan,
        pv: &SideView,
        sv: &SideView,
        primary: bool,
    ) -> Result<BTreeMap<Uid, Uid>, SyncError> {
        let candidates = plan::local_copy_candidates(full, pv, sv);
        if candidates.is_empty() {
            return Ok(BTreeMap::new());
        }
        // For my candidates my local instance; for the peer's, my message it would copy.
        let mut mine = Vec::new();
        let mut hashed = BTreeSet::new();
        for &(secondary, peer_uid, local_uid) in &candidates {
            let uid = if secondary != primary {
                local_uid
            } else {
                peer_uid
            };
            if hashed.insert(uid) {
                // A message with a POP3 UIDL or order goes as a transfer, which carries
                // them; a copy would take the local instance's (another message's).
                let sender = secondary == primary;
                let keeps_pop3 = sender && !mailbox.pop3_info(uid).unwrap_or_default().is_empty();
                mine.push(Item::MailHash(MailHash {
                    uid,
                    digest: if keeps_pop3 {
                        None
                    } else {
                        digest_of(mailbox, uid, false)
                    },
                }));
            }
        }
        let my_digests = digests(&mine);
        let peer_digests = digests(&self.exchange_list(mine)?);
        let copies: BTreeMap<Uid, Uid> = candidates
            .into_iter()
            .filter(|&(secondary, peer_uid, local_uid)| {
                secondary != primary
                    && my_digests
                        .get(&local_uid)
                        .is_some_and(|d| peer_digests.get(&peer_uid) == Some(d))
            })
            .map(|(_, peer_uid, local_uid)| (peer_uid, local_uid))
            .collect();
        debug_log!(
            self,
            "{name}: local copies (peer UID -> own UID): {copies:?}"
        );
        Ok(copies)
    }

    /// The link candidates whose bodies are equal on both sides: each side hashes its own
    /// half and the two exchange the digests. Both sides compute the same candidates, so
    /// without any (the usual case) nothing is exchanged.
    fn verified_links(
        &mut self,
        name: &str,
        mailbox: &mut dyn Mailbox,
        pv: &SideView,
        sv: &SideView,
        primary: bool,
    ) -> Result<Vec<(Uid, Uid)>, SyncError> {
        let candidates = plan::link_candidates(pv, sv);
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let mine: Vec<Item> = candidates
            .iter()
            .map(|&(pu, su)| {
                let uid = if primary { pu } else { su };
                Item::MailHash(MailHash {
                    uid,
                    digest: body_digest(mailbox, uid),
                })
            })
            .collect();
        let my_digests = digests(&mine);
        let peer_digests = digests(&self.exchange_list(mine)?);
        let links: Vec<(Uid, Uid)> = candidates
            .into_iter()
            .filter(|&(pu, su)| {
                let (mu, tu) = if primary { (pu, su) } else { (su, pu) };
                my_digests
                    .get(&mu)
                    .is_some_and(|d| peer_digests.get(&tu) == Some(d))
            })
            .collect();
        debug_log!(self, "{name}: same message at different UIDs: {links:?}");
        Ok(links)
    }

    fn send_mails(
        &mut self,
        mailbox: &mut dyn Mailbox,
        view: &SideView,
        requests: &[MailRequest],
        moved: &BTreeMap<Uid, Uid>,
    ) -> Result<(), SyncError> {
        let mut batch = MailBatch::default();
        for req in requests {
            let at = moved.get(&req.uid).copied().unwrap_or(req.uid);
            // A moved message must still be the one asked for: never stream other bytes
            // under the requested GUID (it is then "expunged meanwhile").
            // its record as of now: for a moved message, and for the dates a view without
            // them lacks
            let now = if at != req.uid || view.dates_left_out {
                record_now(mailbox, at)?
            } else {
                None
            };
            let same = at == req.uid
                || now.as_ref().is_some_and(|m| {
                    m.uid == at && req.guid.as_ref().is_none_or(|g| m.guid.same_as(g))
                });
            let (received_date, saved_date) = match &now {
                Some(r) if view.dates_left_out => (r.received_date, r.saved_date),
                _ => view
                    .mail(req.uid)
                    .map(|m| (m.received_date, m.saved_date))
                    .unwrap_or((0, 0)),
            };
            let mut item = MailItem {
                guid: req.guid.clone(),
                uid: req.uid,
                received_date,
                saved_date,
                pop3: Default::default(),
                stream: false,
            };
            let opened = if same {
                mailbox.open_mail(at)
            } else {
                Err(Error::MailNotFound(at))
            };
            if opened.is_ok() {
                item.pop3 = mailbox.pop3_info(at)?;
            }
            match opened {
                Ok(mut body) => {
                    item.stream = true;
                    batch.items.push(Item::Mail(item));
                    let mut buf = vec![0u8; CHUNK_SIZE];
                    // One chunk read ahead: the last one goes out as `MailLastChunk`, so a
                    // message of up to CHUNK_SIZE bytes is two items, not three.
                    let mut ahead: Option<Vec<u8>> = None;
                    let mut failed = false;
                    loop {
                        let n = match read_some(&mut body, &mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e) => {
                                self.out.errors.push(format!(
                                    "{}: reading UID {}: {e}",
                                    mailbox.name(),
                                    req.uid
                                ));
                                failed = true;
                                break;
                            }
                        };
                        if let Some(chunk) = ahead.replace(buf[..n].to_vec()) {
                            // a message of more than one chunk streams: what waits goes first
                            self.flush_mails(&mut batch)?;
                            self.send(Item::MailChunk(chunk))?;
                        }
                    }
                    if failed {
                        // The receiver sees a broken stream and drops this mail.
                        batch.items.push(Item::EndOfList);
                    } else if let Some(last) = ahead {
                        batch.bytes += last.len();
                        batch.items.push(Item::MailLastChunk(last));
                    } else {
                        batch.items.push(Item::MailEnd);
                    }
                }
                Err(Error::MailNotFound(_)) => {
                    // Expunged meanwhile: "M without a stream".
                    self.out.changes_during_sync = true;
                    batch.items.push(Item::Mail(item));
                }
                Err(e) => {
                    // Unreadable (dsync's "Can't get stream" fails the run): reported, and
                    // the receiver, which gets no stream, saves nothing.
                    self.out.errors.push(format!(
                        "{}: opening UID {}: {e}",
                        mailbox.name(),
                        req.uid
                    ));
                    batch.items.push(Item::Mail(item));
                }
            }
            if batch.bytes >= MAIL_BATCH_BYTES || batch.items.len() >= BATCH_SIZE {
                self.flush_mails(&mut batch)?;
            }
        }
        self.flush_mails(&mut batch)?;
        self.send(Item::EndOfList)
    }

    /// Sends what `batch` holds: one item as itself, more as one `Item::Batch`.
    fn flush_mails(&self, batch: &mut MailBatch) -> Result<(), SyncError> {
        batch.bytes = 0;
        let mut items = std::mem::take(&mut batch.items);
        match items.len() {
            0 => Ok(()),
            1 => self.send(items.remove(0)),
            _ => self.send(Item::Batch(items)),
        }
    }

    /// Empties the copy for a backup rebuild: delete + recreate with the same GUID, or for
    /// INBOX (never deleted) expunge everything; then take the source's UIDVALIDITY.
    fn recreate(
        &mut self,
        name: &str,
        mailbox: &mut Box<dyn Mailbox>,
        uid_validity: u32,
    ) -> Result<(), SyncError> {
        let st = mailbox.counters()?;
        if mailstore::names::is_inbox(name) {
            let uids: Vec<Uid> = mailbox.mails()?.iter().map(|m| m.uid).collect();
            let mut tx = mailbox.begin()?;
            tx.mark_as_sync();
            for uid in uids {
                tx.expunge(uid)?;
            }
            tx.commit()?;
            // UIDs never go down under one UIDVALIDITY: another UIDVALIDITY on the empty
            // INBOX restarts them at 1, then the source's is set back, so the copy can take
            // the source's UIDs (without this, a copy whose UIDs ran ahead — e.g. after a
            // killed run — never converges). It is a backup: its old UIDs were not the
            // source's anyway.
            if mailbox.counters()?.uid_next > 1 {
                let other = if uid_validity == u32::MAX {
                    1
                } else {
                    uid_validity + 1
                };
                for uv in [other, uid_validity] {
                    if let Err(e) = mailbox.update_mailbox(&MailboxUpdate {
                        uid_validity: Some(uv),
                        ..Default::default()
                    }) {
                        debug_log!(self, "{name}: can't restart UIDs: {e}");
                        self.out.changes_during_sync = true;
                        break;
                    }
                }
            }
        } else {
            self.store.delete_mailbox(name)?;
            self.store.create_mailbox(name, Some(st.guid))?;
            *mailbox = self.store.open_mailbox(name)?;
        }
        if mailbox.counters()?.uid_validity != uid_validity {
            if let Err(e) = mailbox.update_mailbox(&MailboxUpdate {
                uid_validity: Some(uid_validity),
                ..Default::default()
            }) {
                debug_log!(self, "{name}: can't set UIDVALIDITY: {e}");
                self.out.changes_during_sync = true;
            }
        }
        Ok(())
    }

    /// Applies this side's plan, receiving the peer's `M` list while saving (in ascending
    /// UID order, so the wanted UIDs are granted).
    /// Returns where the messages this side renumbered (`SaveSource::Own`) went: old UID →
    /// the UID the commit gave the copy.
    /// `own`: this side's view, where a renumbered or locally copied message's dates come
    /// from (as a copy in Dovecot keeps its source's), read from its record when the view
    /// has none (`SideView::dates_left_out`).
    fn import(
        &mut self,
        name: &str,
        mailbox: &mut Box<dyn Mailbox>,
        plan: &SidePlan,
        own: &SideView,
    ) -> Result<BTreeMap<Uid, Uid>, SyncError> {
        if let Some(uv) = plan.set_uid_validity {
            if let Err(e) = mailbox.update_mailbox(&MailboxUpdate {
                uid_validity: Some(uv),
                ..Default::default()
            }) {
                debug_log!(self, "{name}: can't set UIDVALIDITY {uv}: {e}");
                self.out.changes_during_sync = true;
            }
        }
        let needs_own = plan
            .saves
            .iter()
            .any(|s| matches!(s.source, SaveSource::Own(_) | SaveSource::Copy(_)));
        let mut own_reader = if needs_own {
            Some(self.store.open_mailbox(name)?)
        } else {
            None
        };
        let rx = &self.rx;
        let mut wanted = Vec::new();
        // per successful save, in save order: the old UID of a renumbered message
        let mut renumbered: Vec<Option<Uid>> = Vec::new();
        let mut failure: Option<Error> = None;
        let mut changes = false;
        // dsync-mailbox-import.c: MAILBOX_TRANSACTION_FLAG_SYNC — a later merge doesn't take
        // these copied changes for this side's own
        let mut tx = mailbox.begin()?;
        tx.mark_as_sync();
        // dsync_mailbox_import_saved_uid: a commit every `commit_msgs_interval` saves, so a
        // killed run keeps its progress and a transaction stays small — but never more saves
        // committed at once than this run committed before: a commit costs a pass over the
        // mailbox's index (a Maildir commit reads its directories), so the intervals grow
        // geometrically and all commits together cost about one more such pass. Only when
        // every save comes from the peer in ascending UID order: each later save then still
        // gets the UID it asks for, and no message is renumbered (a commit between the copy
        // and the expunge of a moved one would leave it twice after a crash). The saves
        // committed so far, in order:
        let interval = self.opts.commit_msgs_interval;
        let batched = interval > 0
            && plan
                .saves
                .iter()
                .all(|s| matches!(s.source, SaveSource::Peer(_)))
            && plan.saves.windows(2).all(|w| w[0].uid < w[1].uid);
        let mut committed: Vec<Uid> = Vec::new();
        let mut since_commit = 0usize;
        for (uid, flags, keywords) in &plan.flags {
            if let Err(e) = tx.update_flags(
                *uid,
                &FlagUpdate {
                    op: FlagOp::Replace,
                    flags: *flags,
                    keywords: keywords.clone(),
                },
            ) {
                match e {
                    Error::MailNotFound(_) => changes = true,
                    e => failure = failure.or(Some(e)),
                }
            }
        }
        for save in &plan.saves {
            let mut mail = NewMail {
                guid: save.guid.clone(),
                uid: Some(save.uid),
                received_date: Some(save.received_date),
                saved_date: Some(save.saved_date),
                flags: save.flags,
                keywords: save.keywords.clone(),
                pop3: Default::default(),
            };
            match save.source {
                SaveSource::Own(uid) | SaveSource::Copy(uid) => {
                    // a renumbered message keeps its POP3 data; a copy takes none (it is
                    // made only of messages without any: `verified_copies`)
                    if let (SaveSource::Own(_), Some(r)) = (&save.source, own_reader.as_mut()) {
                        match r.pop3_info(uid) {
                            Ok(p) => mail.pop3 = p,
                            Err(Error::MailNotFound(_)) => {}
                            Err(e) => failure = failure.or(Some(e)),
                        }
                    }
                    let dates = if own.dates_left_out {
                        match own_reader.as_mut().map(|r| record_now(r.as_mut(), uid)) {
                            Some(Ok(r)) => r.map(|r| (r.received_date, r.saved_date)),
                            Some(Err(e)) => {
                                failure = failure.or(Some(e));
                                None
                            }
                            None => None,
                        }
                    } else {
                        own.mail(uid).map(|m| (m.received_date, m.saved_date))
                    };
                    if let Some((received, saved)) = dates {
                        mail.received_date = Some(received);
                        mail.saved_date = Some(saved);
                    }
                    let reader = own_reader.as_mut().map(|r| r.open_mail(uid));
                    match reader {
                        Some(Ok(mut body)) if failure.is_none() => match tx.save(mail, &mut body) {
                            Ok(()) => {
                                wanted.push(save.uid);
                                // a renumbered message moved; a local copy's source stays
                                renumbered
                                    .push(matches!(save.source, SaveSource::Own(_)).then_some(uid));
                            }
                            Err(e) => failure = Some(e),
                        },
                        Some(Err(Error::MailNotFound(_))) => changes = true,
                        Some(Err(e)) => failure = failure.or(Some(e)),
                        _ => {}
                    }
                }
                SaveSource::Peer(uid) => {
                    let item = rx.recv().map_err(|_| peer_gone())?;
                    match item {
                        Item::Mail(m) if m.uid == uid => {
                            if !m.stream {
                                changes = true;
                                continue;
                            }
                            // the dates the sender read with the message (its view may
                            // have had none)
                            mail.received_date = Some(m.received_date);
                            mail.saved_date = Some(m.saved_date);
                            mail.pop3 = m.pop3;
                            let mut body = ChunkReader {
                                rx,
                                buf: Vec::new(),
                                pos: 0,
                                done: false,
                            };
                            if failure.is_none() {
                                match tx.save(mail, &mut body) {
                                    Ok(()) => {
                                        wanted.push(save.uid);
                                        renumbered.push(None);
                                        since_commit += 1;
                                    }
                                    Err(e) => failure = Some(e),
                                }
                            }
                            body.drain();
                            if batched
                                && since_commit >= interval.max(committed.len())
                                && failure.is_none()
                            {
                                committed.extend(tx.commit()?.saved);
                                tx = mailbox.begin()?;
                                tx.mark_as_sync();
                                since_commit = 0;
                            }
                        }
                        _ => {
                            return Err(SyncError::Peer("unexpected item in the mail list".into()))
                        }
                    }
                }
            }
        }
        match rx.recv().map_err(|_| peer_gone())? {
            Item::EndOfList => {}
            _ => return Err(SyncError::Peer("mail list not terminated".into())),
        }
        for uid in &plan.expunge {
            if let Err(e) = tx.expunge(*uid) {
                match e {
                    Error::MailNotFound(_) => changes = true,
                    e => failure = failure.or(Some(e)),
                }
            }
        }
        if let Some(e) = failure {
            tx.rollback();
            return Err(e.into());
        }
        let mut result = tx.commit()?;
        if !committed.is_empty() {
            committed.append(&mut result.saved);
            result.saved = committed;
        }
        if result.saved != wanted {
            // Someone else took the UIDs we wanted (a delivery during the sync): the next
            // run reconciles (dsync: "changes during sync").
            debug_log!(
                self,
                "{name}: wanted UIDs {wanted:?}, got {:?}",
                result.saved
            );
            self.out.changes_during_sync = true;
        }
        self.out.changes_during_sync |= changes;
        // Where the renumbered messages went (the commit lists the saved UIDs in save
        // order); none if the commit doesn't say, and their requests then find nothing.
        let moved: BTreeMap<Uid, Uid> = if result.saved.len() == renumbered.len() {
            renumbered
                .iter()
                .zip(&result.saved)
                .filter_map(|(old, new)| old.map(|o| (o, *new)))
                .collect()
        } else {
            self.out.changes_during_sync = true;
            BTreeMap::new()
        };
        if plan.min_uid_next > 0 {
            mailbox.sync()?;
            if mailbox.counters()?.uid_next < plan.min_uid_next {
                if let Err(e) = mailbox.update_mailbox(&MailboxUpdate {
                    min_uid_next: Some(plan.min_uid_next),
                    ..Default::default()
                }) {
                    debug_log!(self, "{name}: can't raise UIDNEXT: {e}");
                }
            }
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::{join_name, ChunkReader, Item};
    use std::io::Read;

    fn read_stream(items: Vec<Item>) -> std::io::Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(items.len() + 1);
        for i in items {
            tx.send(i).unwrap();
        }
        let mut reader = ChunkReader {
            rx: &super::Inbox::new(rx),
            buf: Vec::new(),
            pos: 0,
            done: false,
        };
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_body_ends_with_mail_end_or_a_last_chunk() {
        let chunks = |v: &[&[u8]]| v.iter().map(|c| Item::MailChunk(c.to_vec())).collect();
        let mut items: Vec<Item> = chunks(&[b"Subject: x\n", b"\nbody"]);
        items.push(Item::MailLastChunk(b" end\n".to_vec()));
        assert_eq!(read_stream(items).unwrap(), b"Subject: x\n\nbody end\n");
        let mut items: Vec<Item> = chunks(&[b"all"]);
        items.push(Item::MailEnd);
        assert_eq!(read_stream(items).unwrap(), b"all");
        assert_eq!(read_stream(vec![Item::MailEnd]).unwrap(), b"");
        // a list terminator inside a body: the sender couldn't read it
        let mut items: Vec<Item> = chunks(&[b"half"]);
        items.push(Item::EndOfList);
        assert!(read_stream(items).is_err());
    }

    /// `wait` finds the peer's next item (a batch's items, an empty batch skipped) and
    /// leaves it for `recv`; a gone peer counts as found, for `recv` to report.
    #[test]
    fn wait_leaves_the_item_it_found_for_recv() {
        use super::Inbox;
        use std::time::Duration;
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let inbox = Inbox::new(rx);
        assert!(!inbox.wait(Duration::from_millis(1)), "nothing sent");
        tx.send(Item::Batch(Vec::new())).unwrap();
        tx.send(Item::Batch(vec![Item::EndOfList, Item::MailEnd]))
            .unwrap();
        tx.send(Item::MailEnd).unwrap();
        assert!(inbox.wait(Duration::ZERO));
        assert!(inbox.wait(Duration::ZERO), "found twice, kept once");
        assert!(matches!(inbox.recv(), Ok(Item::EndOfList)));
        assert!(inbox.wait(Duration::ZERO));
        assert!(matches!(inbox.recv(), Ok(Item::MailEnd)));
        assert!(matches!(inbox.recv(), Ok(Item::MailEnd)));
        assert!(!inbox.wait(Duration::ZERO));
        drop(tx);
        assert!(inbox.wait(Duration::from_secs(60)), "the peer is gone");
        assert!(inbox.recv().is_err());
    }

    /// A peer whose item is there at once (nothing changed on its side) costs no
    /// read-ahead: the mailboxes aren't even asked for.
    #[test]
    fn no_read_ahead_when_the_peers_item_is_already_there() {
        use super::{read_ahead_until_peer, Inbox};
        use mailstore::Mailbox;
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let inbox = Inbox::new(rx);
        tx.send(Item::EndOfList).unwrap();
        read_ahead_until_peer(&inbox, || -> std::iter::Empty<&mut Box<dyn Mailbox>> {
            panic!("read ahead although the peer's item was there")
        });
        assert!(matches!(inbox.recv(), Ok(Item::EndOfList)));
    }

    /// Small messages come packed in a batch: the inbox hands out its items one by one,
    /// bodies included, then goes on with the channel.
    #[test]
    fn a_batch_of_small_messages_reads_as_its_items() {
        use super::{Inbox, MailItem};
        use mailstore::Uid;
        let mail = |uid: u32| {
            Item::Mail(MailItem {
                guid: None,
                uid: Uid(uid),
                received_date: 0,
                saved_date: 0,
                pop3: Default::default(),
                stream: true,
            })
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(Item::Batch(vec![
            mail(1),
            Item::MailLastChunk(b"one\n".to_vec()),
            mail(2),
            Item::MailEnd,
        ]))
        .unwrap();
        tx.send(mail(3)).unwrap();
        tx.send(Item::EndOfList).unwrap();
        let inbox = Inbox::new(rx);
        let body = |inbox: &Inbox| {
            let mut out = Vec::new();
            let mut reader = ChunkReader {
                rx: inbox,
                buf: Vec::new(),
                pos: 0,
                done: false,
            };
            reader.read_to_end(&mut out).unwrap();
            out
        };
        for (uid, want) in [(1, &b"one\n"[..]), (2, b"")] {
            assert!(matches!(inbox.recv(), Ok(Item::Mail(m)) if m.uid == Uid(uid)));
            assert_eq!(body(&inbox), want);
        }
        assert!(matches!(inbox.recv(), Ok(Item::Mail(m)) if m.uid == Uid(3)));
        assert!(matches!(inbox.recv(), Ok(Item::EndOfList)));
    }

    /// A view crosses between brains in one process as its own list: the peer's view of
    /// this side is the very list this side plans with (no second copy of the messages),
    /// and the expunges arrive split off; both ways at once, as brains exchange them.
    #[test]
    fn a_view_crosses_as_the_senders_own_list_with_its_expunges_split_off() {
        use super::MailChange;
        use super::{view_changes, view_from_changes, Brain, ChangeList, ChangeType, Inbox};
        use super::{SideView, SyncOptions};
        use crate::sync::items::MailboxItem;
        use mailstore::{memory::MemoryStore, Guid, Uid};
        use std::sync::{mpsc::sync_channel, Arc};
        let save = |uid: u32| MailChange {
            guid: Some(Guid::from_bytes(format!("g{uid}"))),
            ..MailChange::bare(ChangeType::Save, Uid(uid), None)
        };
        let side = |mails: Vec<MailChange>, expunged: Vec<u32>| SideView {
            uid_validity: 7,
            uid_next: 10,
            mails: Arc::new(mails),
            expunged: Some(
                expunged
                    .into_iter()
                    .map(|u| (Uid(u), Some(Guid::from_bytes(format!("g{u}")))))
                    .collect(),
            ),
            ..SideView::default()
        };
        let views = [
            side(vec![save(1), save(3)], vec![2]),
            side(vec![save(5)], vec![4, 6]),
        ];
        let (to_slave, from_master) = sync_channel(8);
        let (to_master, from_slave) = sync_channel(8);
        let brain = |master, tx, rx| Brain {
            store: Box::new(MemoryStore::new()),
            master,
            opts: SyncOptions::default(),
            tx,
            rx: Inbox::new(rx),
            out: Default::default(),
            opened: Default::default(),
            names: None,
            progress: Default::default(),
            lane: None,
        };
        let brains = [
            brain(true, to_slave, from_slave),
            brain(false, to_master, from_master),
        ];
        let b = MailboxItem {
            uid_validity: 7,
            uid_next: 10,
            ..Default::default()
        };
        let peers: Vec<SideView> = std::thread::scope(|s| {
            let runs: Vec<_> = brains
                .into_iter()
                .zip(&views)
                .map(|(brain, view)| s.spawn(move || brain.exchange_changes(view_changes(view))))
                .collect();
            runs.into_iter()
                .map(|r| view_from_changes(&b, r.join().unwrap().unwrap(), true))
                .collect()
        });
        for (peer, sent) in peers.iter().zip(views.iter().rev()) {
            assert!(
                Arc::ptr_eq(&peer.mails, &sent.mails),
                "the peer's view is the sender's list"
            );
            assert_eq!(peer.expunged, sent.expunged);
            assert_eq!(peer.uid_next, 10);
        }
        // messages sent one by one (a remote transport) join the list in UID order
        let mut list = view_changes(&views[1]);
        list.others.push(save(2));
        let peer = view_from_changes(&b, list, false);
        assert_eq!(
            peer.mails.iter().map(|m| m.uid.0).collect::<Vec<_>>(),
            [2, 5]
        );
        assert_eq!(peer.expunged, None);
        assert_eq!(
            views[1].mails.len(),
            1,
            "the sender's own list is left alone"
        );
        // a list that mixes messages and expunges: split
        let mixed = ChangeList::of(vec![
            save(1),
            MailChange::bare(ChangeType::Expunge, Uid(2), None),
        ]);
        let peer = view_from_changes(&b, mixed, true);
        assert_eq!(peer.mails.len(), 1);
        assert_eq!(peer.expunged, Some(vec![(Uid(2), None)]));
    }

    #[test]
    fn join_name_repairs_separators_and_control_characters_in_each_part() {
        let parts = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(join_name(&parts(&["Dir", "v1.2"]), '.'), "Dir.v1_2");
        assert_eq!(join_name(&parts(&["Dir", "v1.2"]), '/'), "Dir/v1.2");
        assert_eq!(join_name(&parts(&["a/b", "c"]), '/'), "a_b/c");
        assert_eq!(join_name(&parts(&["Bad\u{1}Name\u{7f}"]), '/'), "Bad_Name_");
        assert_eq!(join_name(&parts(&["Ünïcode ok"]), '.'), "Ünïcode ok");
    }
}
