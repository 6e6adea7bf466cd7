//! A `dovecot.mailbox.log` written by the real Dovecot (mailbox rename, delete, subscribe,
//! unsubscribe) decodes record by record, and our dump prints what `doveadm dump` prints.

mod common;

use common::dovecot::{doveadm_dump, ok, Env};
use mailsync_index::dump::{dump_with_tz, DumpKind};
use mailsync_index::format::mailbox_log::{decode, MailboxLogType};

#[test]
fn dovecot_written_mailbox_log_decodes_and_dumps_the_same() {
    let env = Env::new();
    let loc = "maildir:~/Maildir";
    for args in [
        &["mailbox", "create", "A", "B", "C"][..],
        &["mailbox", "rename", "A", "A2"][..],
        &["mailbox", "delete", "B"][..],
        &["mailbox", "subscribe", "C"][..],
        &["mailbox", "unsubscribe", "C"][..],
    ] {
        ok(&format!("doveadm {args:?}"), env.doveadm(loc, args));
    }
    let path = env.home.join("Maildir/dovecot.mailbox.log");
    let data = std::fs::read(&path).expect("Dovecot wrote dovecot.mailbox.log");
    let records = decode(&data, &path).unwrap();
    let kinds: Vec<MailboxLogType> = records.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            MailboxLogType::Rename,
            MailboxLogType::DeleteMailbox,
            MailboxLogType::DeleteDir,
            MailboxLogType::Subscribe,
            MailboxLogType::Unsubscribe,
        ]
    );
    // Records round-trip to the same bytes.
    let encoded: Vec<u8> = records.iter().flat_map(|r| r.encode()).collect();
    assert_eq!(encoded, data);
    // Timestamps are now-ish (big-endian on disk: a little-endian misread would be far off).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for r in &records {
        assert!((now - r.timestamp as i64).abs() < 3600, "{r:?}");
    }
    let utc = jiff::tz::TimeZone::UTC;
    let want = ok("doveadm dump", doveadm_dump(&path, Some("mailboxlog")));
    let got = dump_with_tz(&path, Some(DumpKind::MailboxLog), &utc).unwrap();
    assert_eq!(got, want);
    let auto = ok("doveadm dump", doveadm_dump(&path, None));
    assert_eq!(dump_with_tz(&path, None, &utc).unwrap(), auto);
}
