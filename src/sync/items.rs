//! The items two brains exchange, one-to-one with Dovecot's dsync wire items
//! (src/doveadm/dsync/dsync-ibc-stream.c; /work/shared/reference/dsync-protocol.md §4):
//! `H` handshake, `S` mailbox_state, `N` mailbox_tree_node, `D` mailbox_delete, `B` mailbox,
//! `C` mail_change, `R` mail_request, `M` mail (+ its dot-stream body, here `MailChunk`s
//! closed by `MailEnd` or a `MailLastChunk`), `F` finish, and the list terminator `.` (`EndOfList`).
//! A remote transport only has to serialise these.

use mailstore::{FlagChange, Flags, Guid, Keyword, MailboxGuid, Pop3Info, Uid};

/// What kind of run the master asked for (handshake `sync_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncType {
    /// `f`: every mailbox, every message.
    Full,
    /// `c`: skip mailboxes whose counters are equal on both sides.
    Changed,
    /// `s`: stateful, from `-s`.
    State,
}

/// `H`: the master's run parameters (the slave answers with its hostname only; in process
/// both carry the same parameters).
#[derive(Clone, Debug)]
pub struct Handshake {
    pub hostname: String,
    pub sync_type: SyncType,
    /// This side only sends (backup/`-1` source).
    pub backup_send: bool,
    /// This side only receives (backup destination).
    pub backup_recv: bool,
    /// `-1`: the receiver merges two-way but the sender is never written.
    pub no_backup_overwrite: bool,
    /// `-m`: only this mailbox (virtual name with the master's separator).
    pub sync_box: Option<String>,
    /// `-x` masks.
    pub exclude_mailboxes: Vec<String>,
}

/// `S`: per-mailbox state (dsync-mailbox-state.c).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxStateItem {
    pub mailbox_guid: MailboxGuid,
    pub last_uidvalidity: u32,
    pub last_common_uid: u32,
    pub last_common_modseq: u64,
    pub last_common_pvt_modseq: u64,
    pub last_messages_count: u32,
    pub changes_during_sync: bool,
}

/// `N` existence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existence {
    Nonexistent,
    Exists,
    Deleted,
}

/// `N`: one mailbox of a side's tree. Names travel as hierarchy parts, so separators don't
/// matter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeNode {
    pub name: Vec<String>,
    pub existence: Existence,
    pub mailbox_guid: Option<MailboxGuid>,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub subscribed: bool,
    /// mailsync extension: the newest saved date of the mailbox's messages (0 = none), so a
    /// delete on the other side never takes mail saved after it.
    pub newest_saved_date: i64,
    /// When the mailbox was last renamed to this name (0 = not logged): of two names for
    /// one mailbox, the later rename wins.
    pub last_renamed_or_created: i64,
    /// When this name was last subscribed or unsubscribed (0 = not logged).
    pub last_subscription_change: i64,
}

/// `D`: mailboxes this side knows were deleted (GUID, timestamp).
#[derive(Clone, Debug, Default)]
pub struct MailboxDelete {
    pub hierarchy_sep: char,
    /// From the store's mailbox log: (GUID, time of the delete).
    pub mailboxes: Vec<(MailboxGuid, i64)>,
    /// mailsync extension: mailboxes the `-s` state knew that are gone here, with the
    /// state's last common UID (mail above it is new and keeps the mailbox alive).
    pub since_state: Vec<(MailboxGuid, u32)>,
}

/// `B`: a side's status of the mailbox being synced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxItem {
    pub mailbox_guid: MailboxGuid,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub messages_count: u32,
    pub highest_modseq: u64,
    /// The slave has no such mailbox.
    pub mailbox_lost: bool,
    /// mailsync extension (a capability bit like dsync's have_guids): this side's backend
    /// can change the mailbox's UIDVALIDITY (`Mailbox::update_mailbox`).
    pub uid_validity_settable: bool,
    /// mailsync extension: GUID of the message with the highest UID. Fast mode skips a
    /// pair only when these agree too: equal counters alone don't prove equal contents
    /// (one delivery to each side since the last sync leaves UIDNEXT, count and — after
    /// dsync's modseq alignment — HIGHESTMODSEQ equal).
    pub last_guid: Option<Guid>,
    /// mailsync extension: the `C` list this side just sent holds only the changes since
    /// the `-s` state (`Mailbox::changes_since`), not every message. Used only when both
    /// sides' lists are such; otherwise both send full lists again.
    pub changes_only: bool,
}

/// `C` type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Save,
    Expunge,
    FlagChange,
}

/// `C`: one message as the exporter sees it (a full export sends every message as a save).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailChange {
    pub change_type: ChangeType,
    pub uid: Uid,
    /// Absent on an expunge whose GUID is unknown.
    pub guid: Option<Guid>,
    pub modseq: u64,
    pub final_flags: Flags,
    pub keywords: Vec<Keyword>,
    pub received_date: i64,
    pub saved_date: i64,
    pub virtual_size: Option<u64>,
    /// How this side changed the message's flags and keywords since the last sync (dsync's
    /// `add_flags`, `remove_flags` and `+`/`-` `keyword_changes`), for the per-flag merge.
    /// Filled only in the `FlagChange` items of messages whose flags the two sides disagree
    /// on (the views keep them in `SideView::logged`; boxed: per-message metadata stays
    /// compact for the usual message without one).
    pub logged: Option<Box<FlagChange>>,
}

impl MailChange {
    /// A change that names only a message (an expunge, or the logged flag changes of
    /// `Brain::exchange_flag_changes`); every other field empty.
    pub fn bare(change_type: ChangeType, uid: Uid, guid: Option<Guid>) -> MailChange {
        MailChange {
            change_type,
            uid,
            guid,
            modseq: 0,
            final_flags: Flags::EMPTY,
            keywords: Vec::new(),
            received_date: 0,
            saved_date: 0,
            virtual_size: None,
            logged: None,
        }
    }
}

/// `R`: the importer needs this message's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailRequest {
    pub guid: Option<Guid>,
    pub uid: Uid,
}

/// `M`: a requested message; with `stream` its body follows as `MailChunk`s closed by
/// `MailEnd` or `MailLastChunk`.
/// Without `stream` it was expunged meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailItem {
    pub guid: Option<Guid>,
    pub uid: Uid,
    pub received_date: i64,
    pub saved_date: i64,
    /// dsync's `pop3_uidl` and `pop3_order`.
    pub pop3: Pop3Info,
    pub stream: bool,
}

/// mailsync extension (no dsync item): the SHA-1 of one message's body, its line endings
/// read as LF (a copy would be stored with the receiver's line endings anyway). Sent for the
/// link candidates only (`plan::link_candidates`); `digest` is `None` when the message
/// could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailHash {
    pub uid: Uid,
    pub digest: Option<[u8; 20]>,
}

/// `F`: how the slave ended.
#[derive(Clone, Debug, Default)]
pub struct Finish {
    pub error: Option<String>,
    pub require_full_resync: bool,
    pub changes_during_sync: bool,
}

/// Everything that crosses the channel.
#[derive(Debug)]
pub enum Item {
    Handshake(Handshake),
    MailboxState(MailboxStateItem),
    MailboxTreeNode(TreeNode),
    MailboxDelete(MailboxDelete),
    Mailbox(MailboxItem),
    Change(MailChange),
    MailRequest(MailRequest),
    MailHash(MailHash),
    Mail(MailItem),
    /// Part of the body of the preceding `Mail` (at most `CHUNK_SIZE` bytes).
    MailChunk(Vec<u8>),
    /// End of the body of the preceding `Mail`.
    MailEnd,
    /// The last part of the body of the preceding `Mail`: a `MailChunk` and `MailEnd` in
    /// one item (a remote transport writes the chunk, then the dot-stream's end).
    MailLastChunk(Vec<u8>),
    Finish(Finish),
    /// `.`: end of a list.
    EndOfList,
    /// Consecutive items of a list, sent at once: between brains in one process a list
    /// of 28,000 `C` items would otherwise cost a thread wake-up per item. Never holds an
    /// `EndOfList` or another batch; a remote transport writes its items one by one.
    Batch(Vec<Item>),
    /// Consecutive `C` items, sent at once. A mailbox's messages go as one: between brains
    /// in one process the receiver's view of the peer is the sender's own list, shared,
    /// with no copy and no list of items in between (views are the biggest thing a run
    /// holds). A remote transport writes them one by one.
    Changes(std::sync::Arc<Vec<MailChange>>),
}

/// Items per [`Item::Batch`].
pub const BATCH_SIZE: usize = 256;

/// Body chunk size: with the channel's bound this caps the bytes in flight.
pub const CHUNK_SIZE: usize = 16 * 1024;
