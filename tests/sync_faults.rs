//! The engine when a store fails part-way: a backend that leaves dates out of its view (as
//! the Maildir does) and then can't read a message's record must not make the sync send
//! that message with dates 0.

use std::io::Read;

use mailstore::memory::MemoryStore;
use mailstore::{
    Changes, FlagChange, Guid, MailRecord, Mailbox, MailboxGuid, MailboxInfo, MailboxStatus,
    MailboxUpdate, ModSeq, NameChangeTimes, NewMail, Pop3Info, Result, Store, SyncGuard,
    Transaction, Uid,
};
use mailsync::sync::{self, MergeKind, SyncOptions};

/// A memory store whose mailboxes list their messages without dates (`dates_left_out`)
/// and fail every later read of a message's record, while the message itself still opens.
#[derive(Clone)]
struct RecordsFail(MemoryStore);

struct RecordsFailMailbox(Box<dyn Mailbox>);

fn unreadable() -> mailstore::Error {
    mailstore::Error::io(
        "read",
        "/injected/record",
        std::io::Error::other("injected record read failure"),
    )
}

impl Mailbox for RecordsFailMailbox {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn sync(&mut self) -> Result<()> {
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
        let mut records = self.0.mails()?;
        for r in &mut records {
            r.received_date = 0;
            r.saved_date = 0;
        }
        Ok((records, true))
    }
    fn mails_of(&mut self, _uids: &[Uid]) -> Result<Vec<MailRecord>> {
        Err(unreadable())
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

impl Store for RecordsFail {
    fn hierarchy_separator(&self) -> char {
        self.0.hierarchy_separator()
    }
    fn list_mailboxes(&self) -> Result<Vec<MailboxInfo>> {
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
        Ok(Box::new(RecordsFailMailbox(self.0.open_mailbox(name)?)))
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
        Box::new(RecordsFail(source.clone())),
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
        Box::new(RecordsFail(destination.clone())),
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
