//! In-memory reference backend: the simplest complete implementation of the API.
//!
//! Every other backend is compared with this one (through [`crate::conformance`]), and the
//! sync engine's tests use it as a store. All state lives behind one `Arc<Mutex<..>>`:
//! cloning a [`MemoryStore`] gives another handle on the same mailboxes, and mailbox
//! handles opened from it stay valid (they refer to a mailbox by an internal id, so they
//! survive a rename, and answer `MailboxNotFound` after a delete).
//!
//! Semantics are Dovecot's (guids-uids-modseq.md, src/lib-storage/mail-storage.h):
//! - INBOX always exists (created on first use), is matched case-insensitively and can be
//!   neither deleted nor renamed.
//! - Each created mailbox gets a fresh UIDVALIDITY (max(time, last + 1)) and a GUID.
//!   NEXTUID starts at 1 and never decreases; UIDs are never reused.
//! - HIGHESTMODSEQ of a new mailbox is 1; every committed save, effective flag change and
//!   expunge takes `++highest` as its modseq.
//! - The whole change history is kept (an expunge log with GUIDs), so `changes_since`
//!   answers `Known` for every modseq up to the current highest; a modseq above it (from
//!   some other mailbox incarnation) answers `Unknown`.
//! - Newly saved messages carry `\Recent` for as long as they exist: there are no IMAP
//!   sessions here to take it away. Flag updates never change it.
//! - Message bodies are held in memory: that is this backend's nature. Everything else
//!   in the project streams.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::conformance::ConformanceTarget;
use crate::error::{Error, Result};
use crate::lines::{LineEndingReader, SaveLineEndings};
use crate::names;
use crate::traits::{Mailbox, Store, Transaction};
use crate::types::{
    Changes, CommitResult, FlagChange, FlagOp, FlagUpdate, Flags, Guid, Keyword, MailRecord,
    MailboxAttrs, MailboxGuid, MailboxInfo, MailboxStatus, MailboxUpdate, ModSeq, NameChangeTimes,
    NewMail, Pop3Info, StoreOptions, Uid,
};

/// A store held entirely in memory. Clones share the same state.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Mutex<StoreState>>,
    separator: char,
    line_endings: SaveLineEndings,
}

#[derive(Default)]
struct StoreState {
    /// Normalised virtual name → mailbox id.
    names: BTreeMap<String, u64>,
    mailboxes: HashMap<u64, MailboxState>,
    /// Subscribed names in subscription order.
    subscriptions: Vec<String>,
    next_mailbox_id: u64,
    last_uid_validity: u32,
    /// Deleted mailboxes (GUID, UNIX time), as Dovecot's mailbox log remembers them.
    deleted: Vec<(MailboxGuid, i64)>,
    /// Name → (last rename to it, last subscription change), as the mailbox log has them.
    name_changes: BTreeMap<String, NameChangeTimes>,
    /// A fixed clock for the log's times (tests), instead of the system's.
    clock: Option<i64>,
    /// `Store::set_change_time`: the time of the changes being applied, before `clock`.
    change_time: Option<i64>,
}

impl StoreState {
    fn now(&self) -> i64 {
        self.change_time.or(self.clock).unwrap_or_else(now)
    }
}

struct MailboxState {
    guid: MailboxGuid,
    uid_validity: u32,
    uid_next: u32,
    highest_modseq: u64,
    /// UID → message, ascending.
    messages: BTreeMap<u32, StoredMail>,
    /// Every expunge ever committed, in modseq order.
    expunge_log: Vec<ExpungeRecord>,
    /// Every flag/keyword change not made by a sync, in modseq order (what
    /// `flag_changes_since` reads, like Dovecot's log scan).
    flag_log: Vec<FlagLogRecord>,
}

struct FlagLogRecord {
    modseq: u64,
    uid: Uid,
    change: FlagChange,
}

struct StoredMail {
    record: MailRecord,
    body: Arc<[u8]>,
    pop3: Pop3Info,
}

struct ExpungeRecord {
    modseq: u64,
    uid: Uid,
    guid: Guid,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// Makes the mailbox log's times (deletes, renames, subscription changes) `t` instead
    /// of the system clock's (`None`: the system clock again), for tests of what happened
    /// first.
    pub fn set_clock(&self, t: Option<i64>) {
        self.lock().clock = t;
    }

    /// An empty store (only INBOX) with `/` as hierarchy separator.
    pub fn new() -> MemoryStore {
        MemoryStore::with_options(&StoreOptions::default())
    }

    /// An empty store with the separator from `options` (`/` when unset).
    pub fn with_options(options: &StoreOptions) -> MemoryStore {
        MemoryStore {
            shared: Arc::new(Mutex::new(StoreState::default())),
            separator: options.separator.unwrap_or('/'),
            line_endings: options.save_line_endings.unwrap_or_default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        lock_state(&self.shared)
    }

    /// Validates and normalises a name used to refer to an existing mailbox.
    fn existing_name(&self, name: &str) -> Result<String> {
        names::validate_existing_mailbox_name(name, self.separator)?;
        Ok(names::normalize_inbox(name, self.separator))
    }

    /// Validates and normalises a name for a mailbox about to be created.
    fn new_name(&self, name: &str) -> Result<String> {
        names::validate_mailbox_name(name, self.separator)?;
        Ok(names::normalize_inbox(name, self.separator))
    }
}

/// Locks the state; a poisoned lock (a panic in another thread while holding it) is taken
/// over, since every mutation below completes before the guard is dropped.
fn lock_state(shared: &Mutex<StoreState>) -> MutexGuard<'_, StoreState> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl StoreState {
    /// Creates INBOX on first use: it always exists.
    fn ensure_inbox(&mut self) {
        if !self.names.contains_key("INBOX") {
            self.insert_mailbox("INBOX".to_string(), None);
        }
    }

    fn insert_mailbox(&mut self, name: String, guid: Option<MailboxGuid>) {
        // A new UIDVALIDITY must differ from every earlier one (Dovecot: time-based, but
        // at least the last one + 1, src/lib-storage/mailbox-uidvalidity.c).
        let uid_validity = (now() as u32)
            .max(self.last_uid_validity.wrapping_add(1))
            .max(1);
        self.last_uid_validity = uid_validity;
        let guid = match guid {
            Some(g) if !g.is_zero() => g,
            _ => MailboxGuid::generate(),
        };
        let id = self.next_mailbox_id;
        self.next_mailbox_id += 1;
        self.mailboxes.insert(
            id,
            MailboxState {
                guid,
                uid_validity,
                uid_next: 1,
                highest_modseq: 1,
                messages: BTreeMap::new(),
                expunge_log: Vec::new(),
                flag_log: Vec::new(),
            },
        );
        self.names.insert(name, id);
    }
}

impl Store for MemoryStore {
    fn hierarchy_separator(&self) -> char {
        self.separator
    }

    fn save_line_endings(&self) -> SaveLineEndings {
        self.line_endings
    }

    /// Every handle shares one state behind a mutex.
    fn second_handle(&self, _writes: bool) -> Option<Box<dyn Store>> {
        Some(Box::new(self.clone()))
    }

    fn list_mailboxes(&self) -> Result<Vec<MailboxInfo>> {
        let mut state = self.lock();
        state.ensure_inbox();
        let sep = self.separator;
        // Existing mailboxes plus ghost parents of every one of them.
        let mut listed: BTreeMap<String, Option<MailboxGuid>> = BTreeMap::new();
        for (name, id) in &state.names {
            listed.insert(name.clone(), Some(state.mailboxes[id].guid));
        }
        for name in state.names.keys() {
            for parent in names::parent_names(name, sep) {
                listed.entry(parent.to_string()).or_insert(None);
            }
        }
        let mut out: Vec<MailboxInfo> = listed
            .iter()
            .map(|(name, guid)| {
                let children = listed
                    .range::<str, _>((
                        std::ops::Bound::Excluded(name.as_str()),
                        std::ops::Bound::Unbounded,
                    ))
                    .any(|(other, _)| names::is_below(other, name, sep));
                MailboxInfo {
                    name: name.clone(),
                    guid: *guid,
                    subscribed: state.subscriptions.contains(name),
                    attrs: MailboxAttrs {
                        nonexistent: guid.is_none(),
                        noselect: false,
                        children,
                    },
                }
            })
            .collect();
        // INBOX first, as Dovecot lists it.
        out.sort_by_key(|info| info.name != "INBOX");
        Ok(out)
    }

    fn subscriptions(&self) -> Result<Vec<String>> {
        Ok(self.lock().subscriptions.clone())
    }

    fn create_mailbox(&self, name: &str, guid: Option<MailboxGuid>) -> Result<()> {
        let name = self.new_name(name)?;
        let mut state = self.lock();
        state.ensure_inbox();
        if state.names.contains_key(&name) {
            return Err(Error::MailboxExists(name));
        }
        state.insert_mailbox(name, guid);
        Ok(())
    }

    fn delete_mailbox(&self, name: &str) -> Result<()> {
        let name = self.existing_name(name)?;
        if name == "INBOX" {
            return Err(Error::NotPossible("INBOX can't be deleted.".to_string()));
        }
        let mut state = self.lock();
        let id = state
            .names
            .remove(&name)
            .ok_or_else(|| Error::MailboxNotFound(name.clone()))?;
        if let Some(mailbox) = state.mailboxes.remove(&id) {
            let t = state.now();
            state.deleted.push((mailbox.guid, t));
        }
        Ok(())
    }

    fn deleted_mailboxes(&self) -> Result<Vec<(MailboxGuid, i64)>> {
        Ok(self.lock().deleted.clone())
    }

    fn rename_mailbox(&self, old: &str, new: &str) -> Result<()> {
        let sep = self.separator;
        let old = self.existing_name(old)?;
        let new = self.new_name(new)?;
        if old == "INBOX" {
            return Err(Error::NotPossible(
                "Renaming INBOX isn't supported.".to_string(),
            ));
        }
        let mut state = self.lock();
        state.ensure_inbox();
        if !state.names.contains_key(&old) {
            return Err(Error::MailboxNotFound(old));
        }
        if state.names.contains_key(&new) {
            return Err(Error::MailboxExists(new));
        }
        if names::is_below(&new, &old, sep) {
            return Err(Error::NotPossible(format!(
                "Can't rename mailbox {old} under itself ({new})"
            )));
        }
        // The mailbox and its children, each with its new name.
        let moves: Vec<(String, String)> = state
            .names
            .keys()
            .filter(|n| **n == old || names::is_below(n, &old, sep))
            .map(|n| (n.clone(), format!("{new}{}", &n[old.len()..])))
            .collect();
        // Children's new names must be valid too (length limits; mail-storage.c
        // mailbox_rename_check_children).
        for (_, to) in &moves {
            names::validate_mailbox_name(to, sep)?;
        }
        if let Some((_, taken)) = moves.iter().find(|(_, to)| state.names.contains_key(to)) {
            return Err(Error::MailboxExists(taken.clone()));
        }
        let ids: Vec<(u64, String)> = moves
            .into_iter()
            .map(|(from, to)| (state.names.remove(&from).expect("listed above"), to))
            .collect();
        for (id, to) in ids {
            state.names.insert(to, id);
        }
        // index_storage_mailbox_rename logs one RENAME record, for the new name.
        let t = state.now();
        state.name_changes.entry(new).or_default().renamed = t;
        Ok(())
    }

    fn set_change_time(&self, at: Option<i64>) {
        self.lock().change_time = at;
    }

    fn name_change_times(&self, names: &[String]) -> Result<Vec<NameChangeTimes>> {
        let state = self.lock();
        Ok(names
            .iter()
            .map(|n| state.name_changes.get(n).copied().unwrap_or_default())
            .collect())
    }

    fn set_subscribed(&self, name: &str, subscribed: bool) -> Result<()> {
        let name = self.existing_name(name)?;
        let mut state = self.lock();
        let t = state.now();
        state
            .name_changes
            .entry(name.clone())
            .or_default()
            .subscription_changed = t;
        let pos = state.subscriptions.iter().position(|s| *s == name);
        match (subscribed, pos) {
            (true, None) => state.subscriptions.push(name),
            (false, Some(i)) => {
                state.subscriptions.remove(i);
            }
            _ => {}
        }
        Ok(())
    }

    fn open_mailbox(&self, name: &str) -> Result<Box<dyn Mailbox>> {
        let normalized = self.existing_name(name)?;
        let id = {
            let mut state = self.lock();
            state.ensure_inbox();
            *state
                .names
                .get(&normalized)
                .ok_or_else(|| Error::MailboxNotFound(normalized.clone()))?
        };
        let mut mailbox = MemoryMailbox {
            shared: Arc::clone(&self.shared),
            id,
            name: normalized,
            view: View::default(),
            line_endings: self.line_endings,
        };
        mailbox.sync()?;
        Ok(Box::new(mailbox))
    }
}

impl ConformanceTarget for MemoryStore {
    /// Another handle on the same in-memory state.
    fn open(&self) -> Box<dyn Store> {
        Box::new(self.clone())
    }
}

/// An open mailbox of a [`MemoryStore`].
pub struct MemoryMailbox {
    shared: Arc<Mutex<StoreState>>,
    id: u64,
    name: String,
    view: View,
    line_endings: SaveLineEndings,
}

/// What the handle saw at its last sync.
#[derive(Default)]
struct View {
    status: MailboxStatus,
    records: Vec<MailRecord>,
}

impl MemoryMailbox {
    /// Runs `f` on this mailbox's live state; `MailboxNotFound` once it was deleted.
    fn with_state<T>(&self, f: impl FnOnce(&mut MailboxState) -> Result<T>) -> Result<T> {
        let mut state = lock_state(&self.shared);
        match state.mailboxes.get_mut(&self.id) {
            Some(mailbox) => f(mailbox),
            None => Err(Error::MailboxNotFound(self.name.clone())),
        }
    }
}

fn status_of(mailbox: &MailboxState) -> MailboxStatus {
    let records = mailbox.messages.values().map(|m| &m.record);
    MailboxStatus {
        uid_validity: mailbox.uid_validity,
        uid_next: mailbox.uid_next,
        highest_modseq: mailbox.highest_modseq,
        messages: mailbox.messages.len() as u32,
        recent: records
            .clone()
            .filter(|r| r.flags.contains(Flags::RECENT))
            .count() as u32,
        unseen: records
            .clone()
            .filter(|r| !r.flags.contains(Flags::SEEN))
            .count() as u32,
        vsize: records.clone().map(|r| r.virtual_size.unwrap_or(0)).sum(),
        guid: mailbox.guid,
        first_saved: mailbox
            .messages
            .values()
            .next()
            .map(|m| m.record.saved_date),
        last_guid: mailbox
            .messages
            .values()
            .next_back()
            .map(|m| m.record.guid.clone()),
    }
}

impl Mailbox for MemoryMailbox {
    fn name(&self) -> &str {
        &self.name
    }

    fn sync(&mut self) -> Result<()> {
        let view = self.with_state(|mailbox| {
            Ok(View {
                status: status_of(mailbox),
                records: mailbox
                    .messages
                    .values()
                    .map(|m| m.record.clone())
                    .collect(),
            })
        })?;
        self.view = view;
        Ok(())
    }

    fn status(&mut self) -> Result<MailboxStatus> {
        Ok(self.view.status.clone())
    }

    fn mails(&mut self) -> Result<Vec<MailRecord>> {
        Ok(self.view.records.clone())
    }

    fn pop3_info(&mut self, uid: Uid) -> Result<Pop3Info> {
        self.with_state(|mailbox| {
            mailbox
                .messages
                .get(&uid.0)
                .map(|m| m.pop3.clone())
                .ok_or(Error::MailNotFound(uid))
        })
    }

    fn open_mail(&mut self, uid: Uid) -> Result<Box<dyn Read + Send>> {
        let body = self.with_state(|mailbox| {
            mailbox
                .messages
                .get(&uid.0)
                .map(|m| Arc::clone(&m.body))
                .ok_or(Error::MailNotFound(uid))
        })?;
        Ok(Box::new(Cursor::new(body)))
    }

    fn virtual_size(&mut self, uid: Uid) -> Result<u64> {
        self.with_state(|mailbox| {
            mailbox
                .messages
                .get(&uid.0)
                .and_then(|m| m.record.virtual_size)
                .ok_or(Error::MailNotFound(uid))
        })
    }

    fn begin(&mut self) -> Result<Box<dyn Transaction + '_>> {
        // Fails early when the mailbox is gone.
        self.with_state(|_| Ok(()))?;
        Ok(Box::new(MemoryTransaction {
            mailbox: self,
            ops: Vec::new(),
            by_sync: false,
        }))
    }

    fn changes_since(&mut self, since: ModSeq) -> Result<Changes> {
        self.with_state(|mailbox| {
            if since.0 > mailbox.highest_modseq {
                // Not from this mailbox's history (e.g. an older incarnation).
                return Ok(Changes::Unknown);
            }
            Ok(Changes::Known {
                changed: mailbox
                    .messages
                    .values()
                    .filter(|m| m.record.modseq > since)
                    .map(|m| m.record.uid)
                    .collect(),
                expunged: mailbox
                    .expunge_log
                    .iter()
                    .filter(|e| e.modseq > since.0)
                    .map(|e| (e.uid, Some(e.guid.clone())))
                    .collect(),
                highest_modseq: ModSeq(mailbox.highest_modseq),
            })
        })
    }

    fn flag_changes_since(
        &mut self,
        since: ModSeq,
        uids: &[Uid],
    ) -> Result<Vec<(Uid, FlagChange)>> {
        let wanted: BTreeSet<Uid> = uids.iter().copied().collect();
        self.with_state(|mailbox| {
            let mut out: BTreeMap<Uid, FlagChange> = BTreeMap::new();
            for r in mailbox
                .flag_log
                .iter()
                .filter(|r| r.modseq > since.0 && wanted.contains(&r.uid))
            {
                if !mailbox.messages.contains_key(&r.uid.0) {
                    continue;
                }
                let c = out.entry(r.uid).or_default();
                c.record_flags(r.change.add, r.change.remove);
                for k in &r.change.keywords_added {
                    c.record_keyword(k, true);
                }
                for k in &r.change.keywords_removed {
                    c.record_keyword(k, false);
                }
            }
            Ok(out.into_iter().filter(|(_, c)| !c.is_empty()).collect())
        })
    }

    fn set_mailbox_guid(&mut self, guid: MailboxGuid) -> Result<()> {
        if guid.is_zero() {
            return Err(Error::Params("mailbox GUID can't be all zero".into()));
        }
        self.with_state(|mailbox| {
            mailbox.guid = guid;
            Ok(())
        })?;
        self.sync()
    }

    fn update_mailbox(&mut self, update: &MailboxUpdate) -> Result<()> {
        self.with_state(|mailbox| {
            if let Some(uid_validity) = update.uid_validity {
                if uid_validity != mailbox.uid_validity {
                    if !mailbox.messages.is_empty() {
                        return Err(Error::NotPossible(
                            "UIDVALIDITY can be changed only in an empty mailbox".into(),
                        ));
                    }
                    // The old UIDs mean nothing under the new UIDVALIDITY.
                    mailbox.uid_validity = uid_validity;
                    mailbox.uid_next = 1;
                    mailbox.expunge_log.clear();
                    mailbox.flag_log.clear();
                }
            }
            if let Some(min) = update.min_uid_next {
                mailbox.uid_next = mailbox.uid_next.max(min);
            }
            if let Some(min) = update.min_highest_modseq {
                mailbox.highest_modseq = mailbox.highest_modseq.max(min);
            }
            Ok(())
        })?;
        self.sync()
    }
}

/// One buffered change, applied in order at commit.
enum Op {
    Save { mail: NewMail, body: Vec<u8> },
    UpdateFlags { uid: Uid, update: FlagUpdate },
    Expunge { uid: Uid },
}

struct MemoryTransaction<'a> {
    mailbox: &'a mut MemoryMailbox,
    ops: Vec<Op>,
    /// `mark_as_sync`: flag changes are not logged as this side's own.
    by_sync: bool,
}

impl MemoryTransaction<'_> {
    /// `MailNotFound` unless `uid` is in the mailbox now.
    fn check_uid(&self, uid: Uid) -> Result<()> {
        self.mailbox.with_state(|mailbox| {
            if mailbox.messages.contains_key(&uid.0) {
                Ok(())
            } else {
                Err(Error::MailNotFound(uid))
            }
        })
    }
}

impl Transaction for MemoryTransaction<'_> {
    fn save(&mut self, mail: NewMail, body: &mut dyn Read) -> Result<()> {
        let mut bytes = Vec::new();
        LineEndingReader::new(body, self.mailbox.line_endings)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", format!("message for {}", self.mailbox.name), e))?;
        self.ops.push(Op::Save { mail, body: bytes });
        Ok(())
    }

    fn update_flags(&mut self, uid: Uid, update: &FlagUpdate) -> Result<()> {
        self.check_uid(uid)?;
        self.ops.push(Op::UpdateFlags {
            uid,
            update: update.clone(),
        });
        Ok(())
    }

    fn expunge(&mut self, uid: Uid) -> Result<()> {
        self.check_uid(uid)?;
        self.ops.push(Op::Expunge { uid });
        Ok(())
    }

    fn mark_as_sync(&mut self) {
        self.by_sync = true;
    }

    fn commit(self: Box<Self>) -> Result<CommitResult> {
        let MemoryTransaction {
            mailbox,
            ops,
            by_sync,
        } = *self;
        // Nothing below can fail once the mailbox is found, so the commit is all or
        // nothing. Updates and expunges of messages expunged meanwhile by another handle
        // are skipped, as Dovecot does.
        let result = mailbox.with_state(|state| {
            let uids = assign_uids(state, &ops)?;
            let mut uids = uids.into_iter();
            let mut saved = Vec::new();
            for op in ops {
                match op {
                    Op::Save { mail, body } => {
                        let uid = uids.next().expect("one UID per save");
                        apply_save(state, uid, mail, body);
                        saved.push(uid);
                    }
                    Op::UpdateFlags { uid, update } => {
                        if let Some(m) = state.messages.get_mut(&uid.0) {
                            let before = (m.record.flags, m.record.keywords.clone());
                            update.apply(&mut m.record.flags, &mut m.record.keywords);
                            if m.record.flags != before.0 || m.record.keywords != before.1 {
                                state.highest_modseq += 1;
                                m.record.modseq = ModSeq(state.highest_modseq);
                                if !by_sync {
                                    let change = flag_change(
                                        (before.0, &before.1),
                                        (m.record.flags, &m.record.keywords),
                                    );
                                    state.flag_log.push(FlagLogRecord {
                                        modseq: state.highest_modseq,
                                        uid,
                                        change,
                                    });
                                }
                            }
                        }
                    }
                    Op::Expunge { uid } => {
                        if let Some(m) = state.messages.remove(&uid.0) {
                            state.highest_modseq += 1;
                            state.expunge_log.push(ExpungeRecord {
                                modseq: state.highest_modseq,
                                uid,
                                guid: m.record.guid,
                            });
                        }
                    }
                }
            }
            Ok(CommitResult {
                saved,
                uid_validity: state.uid_validity,
            })
        })?;
        mailbox.sync()?;
        Ok(result)
    }

    fn rollback(self: Box<Self>) {
        // The buffered ops are simply dropped.
    }
}

/// The change from `before` to `after`, as a backend logs it: the flags and keywords
/// that differ.
fn flag_change(before: (Flags, &[Keyword]), after: (Flags, &[Keyword])) -> FlagChange {
    let mut c = FlagChange::default();
    c.record_flags(
        Flags(after.0 .0 & !before.0 .0),
        Flags(before.0 .0 & !after.0 .0),
    );
    for k in after.1.iter().filter(|k| !before.1.contains(k)) {
        c.record_keyword(k, true);
    }
    for k in before.1.iter().filter(|k| !after.1.contains(k)) {
        c.record_keyword(k, false);
    }
    c
}

/// The UIDs the saves of `ops` get, in order: a requested UID is granted when it is at
/// least NEXTUID (and so above every UID given earlier in this commit), otherwise the next
/// free one is used (src/lib-storage/mail-storage.h `mailbox_save_set_uid`). UID 2^32-1 is
/// never given: NEXTUID must stay representable. Nothing is changed here, so a failure
/// leaves the mailbox untouched.
fn assign_uids(state: &MailboxState, ops: &[Op]) -> Result<Vec<Uid>> {
    let mut next = state.uid_next;
    let mut uids = Vec::new();
    for op in ops {
        if let Op::Save { mail, .. } = op {
            let uid = match mail.uid {
                Some(Uid(requested)) if requested >= next && requested < u32::MAX => requested,
                _ => next,
            };
            if uid == u32::MAX {
                return Err(Error::NotPossible(
                    "No UIDs left in this mailbox (UIDVALIDITY must change)".to_string(),
                ));
            }
            next = uid + 1;
            uids.push(Uid(uid));
        }
    }
    Ok(uids)
}

/// Adds one saved message to the mailbox under `uid` (from [`assign_uids`]).
fn apply_save(state: &mut MailboxState, uid: Uid, mail: NewMail, body: Vec<u8>) {
    state.uid_next = uid.0 + 1;
    state.highest_modseq += 1;
    let guid = match mail.guid {
        Some(g) if !g.is_empty() => g,
        _ => Guid::generate(),
    };
    let mut flags = Flags::EMPTY;
    let mut keywords: Vec<Keyword> = Vec::new();
    FlagUpdate {
        op: FlagOp::Replace,
        flags: mail.flags,
        keywords: mail.keywords,
    }
    .apply(&mut flags, &mut keywords);
    flags.insert(Flags::RECENT);
    let time = now();
    let virtual_size = crate::virtual_size_of(&mut body.as_slice()).unwrap_or(0);
    let record = MailRecord {
        uid,
        guid,
        flags,
        keywords,
        modseq: ModSeq(state.highest_modseq),
        received_date: mail.received_date.unwrap_or(time),
        saved_date: mail.saved_date.unwrap_or(time),
        physical_size: body.len() as u64,
        virtual_size: Some(virtual_size),
    };
    state.messages.insert(
        uid.0,
        StoredMail {
            record,
            body: Arc::from(body.into_boxed_slice()),
            pop3: mail.pop3,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(mailbox: &mut dyn Mailbox, mail: NewMail, body: &[u8]) -> Uid {
        let mut tx = mailbox.begin().unwrap();
        tx.save(mail, &mut &body[..]).unwrap();
        tx.commit().unwrap().saved[0]
    }

    fn set(op: FlagOp, flags: Flags) -> FlagUpdate {
        FlagUpdate {
            op,
            flags,
            keywords: Vec::new(),
        }
    }

    #[test]
    fn new_messages_are_recent_and_updates_keep_it() {
        let store = MemoryStore::new();
        let mut inbox = store.open_mailbox("INBOX").unwrap();
        let uid = save(&mut *inbox, NewMail::default(), b"x");
        assert!(inbox.mails().unwrap()[0].flags.contains(Flags::RECENT));
        assert_eq!(inbox.status().unwrap().recent, 1);
        let mut tx = inbox.begin().unwrap();
        tx.update_flags(uid, &set(FlagOp::Replace, Flags::SEEN))
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(inbox.mails().unwrap()[0].flags, Flags::SEEN | Flags::RECENT);
    }

    #[test]
    fn modseq_steps_by_one_per_change() {
        let store = MemoryStore::new();
        let mut inbox = store.open_mailbox("inbox").unwrap();
        assert_eq!(inbox.name(), "INBOX");
        assert_eq!(inbox.status().unwrap().highest_modseq, 1);
        let uid = save(&mut *inbox, NewMail::default(), b"x");
        assert_eq!(inbox.status().unwrap().highest_modseq, 2);
        let record = inbox.mails().unwrap()[0].clone();
        assert_eq!(record.modseq, ModSeq(2));
        // A flag change that changes nothing takes no modseq.
        let mut tx = inbox.begin().unwrap();
        tx.update_flags(uid, &set(FlagOp::Remove, Flags::SEEN))
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(inbox.status().unwrap().highest_modseq, 2);
        let mut tx = inbox.begin().unwrap();
        tx.expunge(uid).unwrap();
        tx.commit().unwrap();
        assert_eq!(inbox.status().unwrap().highest_modseq, 3);
        assert_eq!(
            inbox.changes_since(ModSeq(0)).unwrap(),
            Changes::Known {
                changed: Vec::new(),
                expunged: vec![(uid, Some(record.guid))],
                highest_modseq: ModSeq(3),
            }
        );
        assert_eq!(inbox.changes_since(ModSeq(4)).unwrap(), Changes::Unknown);
    }

    #[test]
    fn handles_survive_rename_and_fail_after_delete() {
        let store = MemoryStore::new();
        store.create_mailbox("a", None).unwrap();
        let mut a = store.open_mailbox("a").unwrap();
        save(&mut *a, NewMail::default(), b"x");
        store.rename_mailbox("a", "b").unwrap();
        a.sync().unwrap();
        assert_eq!(a.mails().unwrap().len(), 1);
        store.delete_mailbox("b").unwrap();
        assert!(matches!(a.sync(), Err(Error::MailboxNotFound(_))));
        assert!(a.begin().is_err());
    }

    #[test]
    fn uid_space_exhaustion_is_refused_without_changes() {
        let store = MemoryStore::new();
        let mut inbox = store.open_mailbox("INBOX").unwrap();
        let top = NewMail {
            uid: Some(Uid(u32::MAX - 1)),
            ..NewMail::default()
        };
        assert_eq!(save(&mut *inbox, top, b"x"), Uid(u32::MAX - 1));
        assert_eq!(inbox.status().unwrap().uid_next, u32::MAX);
        let mut tx = inbox.begin().unwrap();
        tx.save(NewMail::default(), &mut &b"y"[..]).unwrap();
        let err = tx.commit().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotPossible);
        assert_eq!(inbox.mails().unwrap().len(), 1);
        // A requested UID of 2^32-1 is never granted either.
        let mut tx = inbox.begin().unwrap();
        tx.save(
            NewMail {
                uid: Some(Uid(u32::MAX)),
                ..NewMail::default()
            },
            &mut &b"z"[..],
        )
        .unwrap();
        assert!(tx.commit().is_err());
    }

    #[test]
    fn rename_checks_new_child_names() {
        let store = MemoryStore::new();
        store.create_mailbox("p", None).unwrap();
        let child = format!("p/{}", "c".repeat(255));
        store.create_mailbox(&child, None).unwrap();
        // The parent's new name is fine, but the child's would be over 4096 bytes.
        let long_parent = vec!["x".repeat(250); 16].join("/");
        let err = store.rename_mailbox("p", &long_parent).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Params);
        store.open_mailbox(&child).unwrap();
    }

    #[test]
    fn given_guids_and_empty_guid() {
        let store = MemoryStore::with_options(&StoreOptions {
            separator: Some('.'),
            ..StoreOptions::default()
        });
        assert_eq!(store.hierarchy_separator(), '.');
        store
            .create_mailbox("z", Some(MailboxGuid::default()))
            .unwrap();
        let mut z = store.open_mailbox("z").unwrap();
        assert!(!z.status().unwrap().guid.is_zero(), "zero GUID replaced");
        let empty = NewMail {
            guid: Some(Guid::from_bytes(Vec::new())),
            ..NewMail::default()
        };
        save(&mut *z, empty, b"x");
        assert!(!z.mails().unwrap()[0].guid.is_empty());
    }
}
