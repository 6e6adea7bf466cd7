//! Value types shared by every backend: UIDs, modseqs, GUIDs, flags, keywords, records.
//!
//! Mail data stays bytes: message GUIDs and keywords are byte strings and round-trip
//! byte-for-byte; they are converted to text only for display.

use std::fmt;
use std::sync::Arc;

/// An IMAP UID. Real messages always have a UID > 0; UIDs ascend and are never reused
/// within one UIDVALIDITY (src/lib-storage/mail-storage.h).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uid(pub u32);

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A CONDSTORE modification sequence. Never decreases for a mailbox.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModSeq(pub u64);

impl fmt::Display for ModSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A message GUID as the backend stores it: an opaque byte string.
///
/// Dovecot's dbox formats store 128-bit GUIDs printed as 32 lowercase hex digits; Maildir
/// uses the uidlist `G` field or, without one, the base filename up to the first `:`
/// (guids-uids-modseq.md). Both are kept exactly as found.
///
/// Shared, not copied, by a clone: a sync holds each side's view and a copy of the peer's,
/// one GUID per message in each.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid(Arc<[u8]>);

impl Guid {
    pub fn from_bytes(bytes: impl AsRef<[u8]>) -> Guid {
        Guid(Arc::from(bytes.as_ref()))
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// A fresh 128-bit GUID printed as 32 lowercase hex digits, as Dovecot generates them.
    pub fn generate() -> Guid {
        Guid::from_bytes(MailboxGuid::generate().to_string().into_bytes())
    }

    /// The 128-bit form (mail_generate_guid_128_hash): what index records and expunge
    /// records hold, printed as 32 lowercase hex digits.
    pub fn to_128_hex(&self) -> String {
        mailsupport::sha1::guid_128(&self.0)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The same message GUID: equal, or one is the other's 128-bit form (a Maildir GUID is
    /// its base name, while an expunge record holds its hash; `Changes::Known::expunged`).
    pub fn same_as(&self, other: &Guid) -> bool {
        self == other
            || self.as_bytes() == other.to_128_hex().as_bytes()
            || other.as_bytes() == self.to_128_hex().as_bytes()
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// A 128-bit mailbox GUID (uidlist header `G`, dbox `dbox-hdr`/`mdbox-hdr`).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MailboxGuid(pub [u8; 16]);

impl MailboxGuid {
    /// Generates a GUID laid out as Dovecot's guid_128_generate (src/lib/guid.c): u32 LE
    /// nanoseconds, u32 LE UNIX seconds, u32 LE pid, 4 bytes of a host hash. The nanosecond
    /// part is bumped per call so GUIDs from one process never repeat.
    pub fn generate() -> MailboxGuid {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::time::{SystemTime, UNIX_EPOCH};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let nsecs = now
            .subsec_nanos()
            .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919));
        let secs = now.as_secs() as u32;
        let pid = std::process::id();
        let host = crate::hostname();
        // FNV-1a over the host name: only needs to differ between hosts.
        let mut h: u32 = 0x811c_9dc5;
        for b in host.as_bytes() {
            h ^= *b as u32;
            h = h.wrapping_mul(0x0100_0193);
        }
        let mut g = [0u8; 16];
        g[0..4].copy_from_slice(&nsecs.to_le_bytes());
        g[4..8].copy_from_slice(&secs.to_le_bytes());
        g[8..12].copy_from_slice(&pid.to_le_bytes());
        g[12..16].copy_from_slice(&h.to_le_bytes());
        MailboxGuid(g)
    }

    /// Parses 32 hex digits (either case).
    pub fn parse_hex(s: &[u8]) -> Option<MailboxGuid> {
        if s.len() != 32 {
            return None;
        }
        let mut g = [0u8; 16];
        for (i, pair) in s.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            g[i] = (hi * 16 + lo) as u8;
        }
        Some(MailboxGuid(g))
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0u8; 16]
    }
}

impl fmt::Display for MailboxGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MailboxGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailboxGuid({self})")
    }
}

/// IMAP system flags, with Dovecot's bit values (enum mail_flags, src/lib-mail/mail-types.h).
#[derive(Copy, Clone, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    pub const ANSWERED: Flags = Flags(0x01);
    pub const FLAGGED: Flags = Flags(0x02);
    pub const DELETED: Flags = Flags(0x04);
    pub const SEEN: Flags = Flags(0x08);
    pub const DRAFT: Flags = Flags(0x10);
    /// \Recent: session state, reported but never stored by a client request.
    pub const RECENT: Flags = Flags(0x20);
    pub const EMPTY: Flags = Flags(0);

    /// Display order used by doveadm (`\Answered \Flagged \Deleted \Seen \Draft \Recent`).
    pub const ALL_IN_ORDER: [(Flags, &'static str); 6] = [
        (Flags::ANSWERED, "\\Answered"),
        (Flags::FLAGGED, "\\Flagged"),
        (Flags::DELETED, "\\Deleted"),
        (Flags::SEEN, "\\Seen"),
        (Flags::DRAFT, "\\Draft"),
        (Flags::RECENT, "\\Recent"),
    ];

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }
    pub fn remove(&mut self, other: Flags) {
        self.0 &= !other.0;
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Parses one system flag name case-insensitively (`\Seen`, `\SEEN`).
    pub fn from_name(name: &str) -> Option<Flags> {
        Flags::ALL_IN_ORDER
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(f, _)| *f)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Flags::ALL_IN_ORDER
            .iter()
            .filter(|(fl, _)| self.contains(*fl))
            .map(|(_, n)| *n)
            .collect();
        write!(f, "Flags({})", names.join(" "))
    }
}

/// An IMAP keyword (user flag), kept as the bytes the store holds (shared by a clone,
/// as [`Guid`]).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Keyword(Arc<[u8]>);

impl Keyword {
    pub fn new(bytes: impl AsRef<[u8]>) -> Keyword {
        Keyword(Arc::from(bytes.as_ref()))
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// True when this is a valid IMAP flag-keyword atom (no space, parens, `{`, `%`, `*`,
    /// `"`, `\`, `]`, controls or 8-bit; not empty).
    pub fn is_valid_atom(bytes: &[u8]) -> bool {
        !bytes.is_empty()
            && bytes.iter().all(|&b| {
                b > 0x20
                    && b < 0x7f
                    && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
            })
    }
}

impl From<&str> for Keyword {
    fn from(s: &str) -> Keyword {
        Keyword::new(s.as_bytes())
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyword({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// Attributes of a listed mailbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxAttrs {
    /// Listed only because a child exists (Maildir++ `Foo.Bar` without `Foo`): `\NonExistent`.
    pub nonexistent: bool,
    /// Cannot hold messages (`\Noselect`).
    pub noselect: bool,
    /// Has at least one child mailbox.
    pub children: bool,
}

/// One entry of `Store::list_mailboxes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxInfo {
    /// Virtual name: UTF-8, hierarchy separated by `Store::hierarchy_separator()`.
    pub name: String,
    /// The mailbox GUID, when the mailbox exists and the backend knows it without creating one.
    pub guid: Option<MailboxGuid>,
    pub subscribed: bool,
    pub attrs: MailboxAttrs,
}

/// `STATUS`-like summary of one mailbox (doveadm `mailbox status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxStatus {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub messages: u32,
    pub recent: u32,
    pub unseen: u32,
    /// Sum of the virtual (CRLF) sizes of all messages.
    pub vsize: u64,
    pub guid: MailboxGuid,
    /// Saved date (UNIX time) of the first message, if there is one.
    pub first_saved: Option<i64>,
    /// GUID of the message with the highest UID, if there is one (a cheap fingerprint the
    /// sync engine's fast mode compares along with the counters).
    pub last_guid: Option<Guid>,
}

/// Compact per-message metadata, as a mailbox's current view holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailRecord {
    pub uid: Uid,
    pub guid: Guid,
    pub flags: Flags,
    pub keywords: Vec<Keyword>,
    pub modseq: ModSeq,
    /// IMAP INTERNALDATE as UNIX time.
    pub received_date: i64,
    /// When the message was saved into this mailbox (UNIX time).
    pub saved_date: i64,
    /// Size in bytes as stored.
    pub physical_size: u64,
    /// Size with every bare LF counted as CRLF, when known without reading the message.
    pub virtual_size: Option<u64>,
}

/// A message to save.
#[derive(Clone, Debug, Default)]
pub struct NewMail {
    /// Keep this GUID (dsync passes the source's); `None` lets the backend choose.
    pub guid: Option<Guid>,
    /// Ask for this UID. Granted when it is ≥ the mailbox's NEXTUID at commit; otherwise the
    /// backend assigns the next free UID (as Dovecot does). `CommitResult::saved` tells which.
    pub uid: Option<Uid>,
    /// INTERNALDATE; `None` = now.
    pub received_date: Option<i64>,
    /// Saved date; `None` = now.
    pub saved_date: Option<i64>,
    pub flags: Flags,
    pub keywords: Vec<Keyword>,
    /// Keep this POP3 UIDL and order (dsync passes the source's).
    pub pop3: Pop3Info,
}

/// A held mailbox lock (`Mailbox::lock_for_sync`); dropping it releases the lock.
pub type SyncGuard = Box<dyn Send>;

/// DSYNC_MAILBOX_LOCK_FILENAME (src/doveadm/dsync/dsync-brain-private.h): the file of
/// `Mailbox::lock_for_sync` in a mailbox's index directory.
pub const BOX_SYNC_LOCK_FILENAME: &str = ".dovecot-box-sync.lock";

/// A message's POP3 state (dsync's `pop3_uidl` and `pop3_order`): kept through a
/// conversion so that POP3 clients don't fetch every message again. Maildir keeps it in
/// `dovecot-uidlist` (`P` and `O` record fields), sdbox and mdbox in the message's
/// metadata (`P` and `O` lines); mbox keeps none (nor does Dovecot's mbox).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pop3Info {
    /// The UIDL a POP3 server shows for the message; empty = none kept (the server derives
    /// one).
    pub uidl: Vec<u8>,
    /// The message's place in the POP3 listing; 0 = none kept.
    pub order: u32,
}

impl Pop3Info {
    pub fn is_empty(&self) -> bool {
        self.uidl.is_empty() && self.order == 0
    }
}

/// How a flag update combines with the current flags.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// A change of system flags and keywords for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagUpdate {
    pub op: FlagOp,
    pub flags: Flags,
    pub keywords: Vec<Keyword>,
}

impl FlagUpdate {
    /// Applies this update to a message's flags and keywords. `\Recent` is never changed by
    /// an update. Keyword order is kept; added keywords go to the end.
    pub fn apply(&self, flags: &mut Flags, keywords: &mut Vec<Keyword>) {
        let recent = flags.contains(Flags::RECENT);
        let wanted = Flags(self.flags.0 & !Flags::RECENT.0);
        match self.op {
            FlagOp::Add => {
                flags.insert(wanted);
                for k in &self.keywords {
                    if !keywords.contains(k) {
                        keywords.push(k.clone());
                    }
                }
            }
            FlagOp::Remove => {
                flags.remove(wanted);
                keywords.retain(|k| !self.keywords.contains(k));
            }
            FlagOp::Replace => {
                *flags = wanted;
                keywords.clear();
                for k in &self.keywords {
                    if !keywords.contains(k) {
                        keywords.push(k.clone());
                    }
                }
            }
        }
        if recent {
            flags.insert(Flags::RECENT);
        } else {
            flags.remove(Flags::RECENT);
        }
    }
}

/// The outcome of a committed transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitResult {
    /// The UIDs given to the saved messages, in save order.
    pub saved: Vec<Uid>,
    /// The mailbox's UIDVALIDITY the UIDs belong to.
    pub uid_validity: u32,
}

/// What changed in a mailbox since a modseq (`Mailbox::changes_since`).
/// UIDs expunged after a modseq with their GUIDs where known (`Changes::Known::expunged`).
pub type Expunges = Vec<(Uid, Option<Guid>)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changes {
    /// The backend can tell exactly.
    Known {
        /// UIDs (still present) whose flags or keywords changed, or that were saved, after the modseq.
        changed: Vec<Uid>,
        /// UIDs expunged after the modseq, with their GUIDs where known: as an expunge
        /// record holds it, the 128-bit form for a GUID that isn't 32 hex digits (compare
        /// with `Guid::same_as`).
        expunged: Vec<(Uid, Option<Guid>)>,
        /// The mailbox's HIGHESTMODSEQ now.
        highest_modseq: ModSeq,
    },
    /// The history does not reach back that far: do a full compare.
    Unknown,
}

/// Mailbox-level changes dsync makes (Dovecot's `struct mailbox_update`,
/// src/lib-storage/mail-storage.h), applied by `Mailbox::update_mailbox`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxUpdate {
    /// Set this UIDVALIDITY. Backends may refuse (`NotPossible`) unless the mailbox holds
    /// no messages; a changed UIDVALIDITY makes every old UID meaningless.
    pub uid_validity: Option<u32>,
    /// Raise NEXTUID to at least this (never lowers it).
    pub min_uid_next: Option<u32>,
    /// Raise HIGHESTMODSEQ to at least this (never lowers it).
    pub min_highest_modseq: Option<u64>,
}

/// Options for opening a store, beyond what the location string says.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// Hierarchy separator for virtual names (doveadm's namespace `separator`); `None` = the
    /// layout's own (`.` for Maildir++, `/` for LAYOUT=fs, mbox and dbox).
    pub separator: Option<char>,
    /// Line endings of saved messages (Dovecot's `mail_save_crlf`); `None` = the backend's
    /// default: `Lf` for Dovecot's formats (mail_save_crlf = no), `AsIs` for the memory store.
    pub save_line_endings: Option<crate::lines::SaveLineEndings>,
}

/// When a mailbox name last changed, from the store's mailbox change log (Dovecot's
/// `dovecot.mailbox.log` RENAME and SUBSCRIBE/UNSUBSCRIBE records, which dsync reads as
/// a node's `last_renamed_or_created` and `last_subscription_change`,
/// dsync-mailbox-tree-fill.c). UNIX times; 0 = nothing logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameChangeTimes {
    /// The last rename *to* this name.
    pub renamed: i64,
    /// The last subscribe or unsubscribe of this name.
    pub subscription_changed: i64,
}

/// How one message's flags and keywords were changed since a modseq, as the change log
/// tells it (dsync's `add_flags`, `remove_flags` and `keyword_changes`,
/// src/doveadm/dsync/dsync-transaction-log-scan.c): a later change of a flag cancels an
/// earlier opposite one. Changes a sync made (`Transaction::mark_as_sync`) aren't
/// counted: they copied the other side's changes and are none of this side's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlagChange {
    pub add: Flags,
    pub remove: Flags,
    pub keywords_added: Vec<Keyword>,
    pub keywords_removed: Vec<Keyword>,
}

impl FlagChange {
    /// Adds one logged change of system flags (log_add_flag_update). `\Recent` is never
    /// a change.
    pub fn record_flags(&mut self, add: Flags, remove: Flags) {
        let add = Flags(add.0 & !Flags::RECENT.0);
        let remove = Flags(remove.0 & !Flags::RECENT.0);
        self.add.insert(add);
        self.remove.remove(add);
        self.remove.insert(remove);
        self.add.remove(remove);
    }

    /// Adds one logged keyword change (log_add_keyword_update: the last change of a name
    /// replaces an earlier one).
    pub fn record_keyword(&mut self, keyword: &Keyword, added: bool) {
        self.keywords_added.retain(|k| k != keyword);
        self.keywords_removed.retain(|k| k != keyword);
        if added {
            self.keywords_added.push(keyword.clone());
        } else {
            self.keywords_removed.push(keyword.clone());
        }
    }

    /// A logged keyword reset forgets the keyword changes before it
    /// (log_add_keyword_reset).
    pub fn reset_keywords(&mut self) {
        self.keywords_added.clear();
        self.keywords_removed.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.remove.is_empty()
            && self.keywords_added.is_empty()
            && self.keywords_removed.is_empty()
    }
}
