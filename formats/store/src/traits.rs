//! The backend-neutral storage API. The sync engine and the CLI talk to stores only
//! through these traits; backends never know about sync (DEVELOPERS.md).

use std::io::Read;

use crate::error::Result;
use crate::types::{
    Changes, CommitResult, Expunges, FlagChange, FlagUpdate, MailRecord, MailboxGuid, MailboxInfo,
    MailboxStatus, MailboxUpdate, ModSeq, NameChangeTimes, NewMail, Pop3Info, SyncGuard, Uid,
};

/// A user's mail store: the mailbox tree of one mail location.
///
/// Mailbox names are virtual names: UTF-8, with `hierarchy_separator()` between levels
/// (the backend maps them to its on-disk names, e.g. modified UTF-7 for Maildir). INBOX is
/// matched case-insensitively and always exists.
pub trait Store: Send {
    /// The separator between hierarchy levels in virtual names.
    fn hierarchy_separator(&self) -> char;

    /// Every mailbox, including INBOX and "ghost" parents that exist only because a child
    /// does (flagged `nonexistent`), with subscription state and GUIDs.
    fn list_mailboxes(&self) -> Result<Vec<MailboxInfo>>;

    /// Subscribed names, including names of mailboxes that don't exist.
    fn subscriptions(&self) -> Result<Vec<String>>;

    /// Creates a mailbox; `guid` keeps a given mailbox GUID (dsync), otherwise one is generated.
    fn create_mailbox(&self, name: &str, guid: Option<MailboxGuid>) -> Result<()>;

    /// Deletes a mailbox with all its messages. Children stay.
    fn delete_mailbox(&self, name: &str) -> Result<()>;

    /// Renames a mailbox and its children. The GUID, UIDVALIDITY and UIDs are kept.
    fn rename_mailbox(&self, old: &str, new: &str) -> Result<()>;

    /// Adds or removes a name in the subscriptions; the mailbox need not exist.
    fn set_subscribed(&self, name: &str, subscribed: bool) -> Result<()>;

    /// Opens an existing mailbox and brings its view up to date with the disk.
    fn open_mailbox(&self, name: &str) -> Result<Box<dyn Mailbox>>;

    /// Stamps the mailbox log records of the following changes (renames, deletes,
    /// subscription changes) with `at` instead of the current time; `None` goes back to
    /// the current time (Dovecot's mailbox_list_set_changelog_timestamp, which dsync uses
    /// for changes it copies from the peer). Default: a store without such a log ignores it.
    fn set_change_time(&self, at: Option<i64>) {
        let _ = at;
    }

    /// The change times of these virtual names, in the same order (renames to the name,
    /// subscription changes of it). Default: nothing logged.
    fn name_change_times(&self, names: &[String]) -> Result<Vec<NameChangeTimes>> {
        Ok(vec![NameChangeTimes::default(); names.len()])
    }

    /// Mailboxes deleted from this store that it still remembers, as (mailbox GUID, UNIX
    /// time of the delete) — Dovecot's `dovecot.mailbox.log` DELETE_MAILBOX records
    /// (src/lib-index/mailbox-log.c). The sync engine sends them so that the other side
    /// deletes its copy instead of recreating the mailbox here. Default: none remembered.
    fn deleted_mailboxes(&self) -> Result<Vec<(MailboxGuid, i64)>> {
        Ok(Vec::new())
    }

    /// Whether a mailbox that holds messages can also have child mailboxes. False for mbox,
    /// where a mailbox is a file and only a (`\Noselect`) directory can have children:
    /// creating `A/B` under the mailbox `A` fails with `NotPossible` ("Mailbox doesn't allow
    /// inferior mailboxes") and creating `A` where the directory `A` exists with `Exists`, as
    /// in Dovecot.
    fn selectable_parents(&self) -> bool {
        true
    }

    /// How this store converts the line endings of the messages it saves.
    fn save_line_endings(&self) -> crate::lines::SaveLineEndings {
        crate::lines::SaveLineEndings::AsIs
    }

    /// A second handle on this store, which another thread may use at the same time as
    /// this one, each on mailboxes the other doesn't touch, where that is worth it for a
    /// store the run writes to (`writes`) or only reads. The sync engine then syncs two
    /// mailboxes at once: where each message is a file of its mailbox's directory, the
    /// directory work of two mailboxes runs on two cores (one directory's creates and
    /// renames are serialized by its inode lock). `None` (the default) where mailboxes
    /// share files that the two would write, as an mdbox's storage and map do, or where
    /// holding two mailboxes' state at once would cost more memory than the store may use.
    fn second_handle(&self, writes: bool) -> Option<Box<dyn Store>> {
        let _ = writes;
        None
    }
}

/// An open mailbox: a view of its messages as of the last `sync()`.
pub trait Mailbox: Send {
    /// The virtual name this mailbox was opened with.
    fn name(&self) -> &str;

    /// Re-reads the mailbox from disk, picking up changes made by others.
    fn sync(&mut self) -> Result<()>;

    /// Status as of the last sync.
    fn status(&mut self) -> Result<MailboxStatus>;

    /// The counters of [`Mailbox::status`] that need no message read (UIDVALIDITY,
    /// UIDNEXT, HIGHESTMODSEQ, GUID, messages, recent, unseen): `vsize` is 0 and
    /// `first_saved` is `None`. What the sync engine's fast path compares, so an unchanged
    /// mailbox costs no I/O per message. The default calls `status`.
    fn counters(&mut self) -> Result<MailboxStatus> {
        Ok(MailboxStatus {
            vsize: 0,
            first_saved: None,
            ..self.status()?
        })
    }

    /// Every message in the view, ascending by UID.
    fn mails(&mut self) -> Result<Vec<MailRecord>>;

    /// As [`Mailbox::mails`], except that a backend which reads the dates with an I/O per
    /// message (a Maildir: a `stat` of each file) may leave `received_date` and
    /// `saved_date` 0: the bool says it did. Such a backend answers
    /// [`Mailbox::mails_of`] for one message without reading the others. What a sync
    /// compares needs no dates; the messages it sends get theirs one by one.
    fn mails_without_dates(&mut self) -> Result<(Vec<MailRecord>, bool)> {
        Ok((self.mails()?, false))
    }

    /// The records of those of `uids` that are in the view, ascending by UID, the same as
    /// `mails()` gives for them. An incremental sync asks only for the messages changed
    /// since its state; a backend answers without reading the others where it can.
    fn mails_of(&mut self, uids: &[Uid]) -> Result<Vec<MailRecord>> {
        let wanted: std::collections::BTreeSet<Uid> = uids.iter().copied().collect();
        let mut records = self.mails()?;
        records.retain(|r| wanted.contains(&r.uid));
        Ok(records)
    }

    /// Does a slice — about `max` messages — of the per-message reading that a later
    /// [`Mailbox::mails`] (or [`Mailbox::mails_without_dates`]) of the whole mailbox will
    /// need, and keeps it for that call; true when nothing is left to read. A sync calls
    /// this while it waits for the other side to read its mailbox (the two sides run side
    /// by side), so that reading is done then instead of after. What is kept must never
    /// change an answer: only what can't change while it is kept (the metadata of a
    /// message at one place in a file), never flags or anything else the view reads.
    /// Default: nothing to read ahead.
    fn prefetch_mails(&mut self, max: usize) -> Result<bool> {
        let _ = max;
        Ok(true)
    }

    /// Makes the listing the next [`Mailbox::mails`] (or [`Mailbox::mails_without_dates`])
    /// of the whole mailbox returns, and keeps it for that call, where the backend can
    /// answer that call from what it keeps: a sync calls this after
    /// [`Mailbox::prefetch_mails`] had nothing left to read, while the other side is still
    /// reading its mailbox, to take the listing itself off the run's critical path. The
    /// listing kept is of the view as it is, flags included: it must be given out only
    /// while the view and every place it was read from are unchanged, and dropped at any
    /// change (a sync that reads a changed index, this handle's own commit). Default:
    /// nothing kept.
    fn list_ahead(&mut self) -> Result<()> {
        Ok(())
    }

    /// Reads what any change of this mailbox will need first (its index, for a backend
    /// whose open answered from headers alone), as [`Mailbox::prefetch_mails`] does for a
    /// full view: a stateful sync calls this while it waits for the other side to read a
    /// changed mailbox. What it reads must be exactly what the next access would read.
    /// Default: nothing to read ahead.
    fn prefetch_index(&mut self) -> Result<()> {
        Ok(())
    }

    /// The message's kept POP3 UIDL and order (`NewMail::pop3`). Default: none kept.
    fn pop3_info(&mut self, uid: Uid) -> Result<Pop3Info> {
        let _ = uid;
        Ok(Pop3Info::default())
    }

    /// Streams the message's bytes as stored. Errors with `MailNotFound` when it was
    /// expunged since the view was taken.
    fn open_mail(&mut self, uid: Uid) -> Result<Box<dyn Read + Send>>;

    /// Tracks a MODSEQ per message from now on, as dsync's mailbox_enable(CONDSTORE) does
    /// for every mailbox it syncs (mail_index_modseq_enable). A backend whose index can
    /// track none (yet) reports HIGHESTMODSEQ as every message's modseq, so a change to
    /// one message would seem newer than every change on a peer. Default: always tracked.
    fn enable_modseqs(&mut self) -> Result<()> {
        Ok(())
    }

    /// The virtual size (every bare LF counted as CRLF) of a message, reading it if needed.
    fn virtual_size(&mut self, uid: Uid) -> Result<u64> {
        if let Some(rec) = self.mails()?.into_iter().find(|r| r.uid == uid) {
            if let Some(v) = rec.virtual_size {
                return Ok(v);
            }
        }
        let mut reader = self.open_mail(uid)?;
        crate::virtual_size_of(&mut reader).map_err(|e| crate::Error::io("read", self.name(), e))
    }

    /// Starts a transaction. Nothing it does is visible until `commit`.
    fn begin(&mut self) -> Result<Box<dyn Transaction + '_>>;

    /// What changed since `since`. Backends without a change history answer `Unknown`.
    fn changes_since(&mut self, since: ModSeq) -> Result<Changes> {
        let _ = since;
        Ok(Changes::Unknown)
    }

    /// The UIDs expunged after `since`, with their GUIDs, as `changes_since` gives them
    /// (`Changes::Known::expunged`); `None` where it answers `Unknown`. A backend answers
    /// without working out which present messages changed: a full sync asks for the
    /// expunges of the whole history, where every message has changed.
    fn expunged_since(&mut self, since: ModSeq) -> Result<Option<Expunges>> {
        Ok(match self.changes_since(since)? {
            Changes::Known { expunged, .. } => Some(expunged),
            _ => None,
        })
    }

    /// How the flags and keywords of those of `uids` that are in the view were changed
    /// after `since`, as far back as the store's history reaches (older changes are
    /// simply missing), leaving out changes made by a sync (`Transaction::mark_as_sync`).
    /// Messages without such changes are left out. The sync engine merges a message's
    /// flags changed on both sides flag by flag with these (dsync's merge_flags).
    /// Default: no history (the merge then takes one side's flags whole).
    fn flag_changes_since(
        &mut self,
        since: ModSeq,
        uids: &[Uid],
    ) -> Result<Vec<(Uid, FlagChange)>> {
        let _ = (since, uids);
        Ok(Vec::new())
    }

    /// Takes the mailbox's sync lock, waiting up to `timeout`, and holds it until the
    /// guard is dropped: dsync's `.dovecot-box-sync.lock` in the mailbox's index directory
    /// (src/doveadm/dsync/dsync-mailbox.c dsync_mailbox_lock), so that two syncs of one
    /// mailbox — mailsync's or Dovecot's — never run at once. A timeout is
    /// `Error::LockTimeout`. `Ok(None)`: no such lock here (no index directory, as Dovecot
    /// takes none without index files). Default: none.
    fn lock_for_sync(&mut self, timeout: std::time::Duration) -> Result<Option<SyncGuard>> {
        let _ = timeout;
        Ok(None)
    }

    /// Changes UIDVALIDITY / raises NEXTUID and HIGHESTMODSEQ (Dovecot's `mailbox_update`,
    /// used by dsync so that a copy reports the same counters as its source). The view is
    /// refreshed afterwards. Backends that can't do it answer `NotPossible` (the default);
    /// the sync engine then reports the mailbox as not perfectly in sync.
    fn update_mailbox(&mut self, update: &MailboxUpdate) -> Result<()> {
        let _ = update;
        Err(crate::Error::NotPossible(format!(
            "{}: this storage can't change UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ",
            self.name()
        )))
    }

    /// Gives the mailbox another GUID, its messages untouched (Dovecot's `mailbox_update`
    /// with `mailbox_guid`, which dsync uses when two mailboxes of one name were created
    /// apart, e.g. each side's INBOX: dsync-brain-mailbox-tree-sync.c sync_create_box).
    /// Backends that can't answer `NotPossible` (the default).
    fn set_mailbox_guid(&mut self, guid: MailboxGuid) -> Result<()> {
        let _ = guid;
        Err(crate::Error::NotPossible(format!(
            "{}: this storage can't change the mailbox GUID",
            self.name()
        )))
    }
}

/// A set of changes to one mailbox, applied by `commit` or dropped by `rollback`.
///
/// Saves become visible all together or not at all. A failed commit leaves the mailbox as
/// it was before the transaction wherever the format allows it.
pub trait Transaction {
    /// Saves a message; its body is streamed from `body`.
    fn save(&mut self, mail: NewMail, body: &mut dyn Read) -> Result<()>;

    /// Changes flags/keywords of a message in the view.
    fn update_flags(&mut self, uid: Uid, update: &FlagUpdate) -> Result<()>;

    /// Removes a message.
    fn expunge(&mut self, uid: Uid) -> Result<()>;

    /// Marks the transaction's changes as made by a sync that copies another replica's
    /// changes (Dovecot's MAILBOX_TRANSACTION_FLAG_SYNC, which the index log records as
    /// MAIL_TRANSACTION_SYNC): `Mailbox::flag_changes_since` leaves them out. Default: the
    /// backend keeps no such mark.
    fn mark_as_sync(&mut self) {}

    /// Applies everything; the mailbox view is refreshed afterwards.
    fn commit(self: Box<Self>) -> Result<CommitResult>;

    /// Drops everything, removing any temporary files.
    fn rollback(self: Box<Self>);
}
