//! sdbox and mdbox end a commit the way Dovecot's index sync ends (mail_index_sync_commit):
//! a mailbox index whose log has grown big is rotated and `dovecot.index` is written, so a
//! store only mailsync writes doesn't replay an ever-growing log at every open. Dovecot reads
//! the result with nothing to fix.

mod harness;

use harness::{clean, ok, Env};
use mailsync_index::format::index::rec_flag;
use mailsync_index::locked_commit::commit_locked;
use mailsync_index::IndexWriter;

fn msg(subject: &str) -> Vec<u8> {
    format!("Subject: {subject}\nMessage-ID: <{subject}@x>\n\nbody of {subject}\n").into_bytes()
}

fn long_history_then_save(driver: &str) {
    let env = Env::new();
    let loc = format!("{driver}:~/{driver}");
    clean(
        "mailsync save",
        env.mailsync_stdin(&loc, &["save"], Some(&msg("first"))),
    );
    let dir = env.home.join(driver).join("mailboxes/INBOX/dbox-Mails");
    // History: 150,000 messages appended and expunged again, logged as a backend does
    // (several MiB of log; no records left).
    let writer = IndexWriter::open(&dir, "dovecot.index");
    commit_locked(
        &writer,
        true,
        |view, t| -> Result<(), mailsync_index::Error> {
            let first = view.next_uid();
            for uid in first..first + 150_000 {
                t.append(uid, rec_flag::SEEN);
            }
            for uid in first..first + 150_000 {
                t.expunge_guid(uid, [0; 16]);
            }
            Ok(())
        },
    )
    .unwrap();
    env.chown_tree(&env.home.clone());
    assert!(
        std::fs::metadata(dir.join("dovecot.index.log"))
            .unwrap()
            .len()
            > 1024 * 1024
    );
    assert!(!dir.join("dovecot.index.log.2").exists());

    clean(
        "mailsync save",
        env.mailsync_stdin(&loc, &["save"], Some(&msg("second"))),
    );
    assert!(
        dir.join("dovecot.index.log.2").exists(),
        "{driver}: the big log was rotated"
    );
    assert!(
        dir.join("dovecot.index").exists(),
        "{driver}: dovecot.index written"
    );
    assert!(
        std::fs::metadata(dir.join("dovecot.index.log"))
            .unwrap()
            .len()
            < 4096
    );

    let fields = [
        "-f",
        "tab",
        "fetch",
        "uid guid flags hdr.subject",
        "mailbox",
        "INBOX",
        "all",
    ];
    let d = String::from_utf8(clean("doveadm fetch", env.doveadm(&loc, &fields))).unwrap();
    let m = String::from_utf8(ok("mailsync fetch", env.mailsync(&loc, &fields))).unwrap();
    assert_eq!(d, m);
    assert!(d.contains("\tfirst\n") && d.contains("\tsecond\n"), "{d}");
    assert!(
        d.contains("\n150002\t"),
        "second got a UID above the history: {d}"
    );
    clean(
        "doveadm save",
        env.doveadm_stdin(&loc, &["save"], Some(&msg("third"))),
    );
    let d = String::from_utf8(clean("doveadm fetch", env.doveadm(&loc, &fields))).unwrap();
    let m = String::from_utf8(ok("mailsync fetch", env.mailsync(&loc, &fields))).unwrap();
    assert_eq!(d, m);
    assert_eq!(d.lines().count(), 4, "{d}");
    let log = env.dovecot_log();
    assert!(
        !log.contains("rror") && !log.contains("arning") && !log.contains("orrupt"),
        "Dovecot logged: {log}"
    );
}

#[test]
fn sdbox_rotates_a_long_mailbox_log_and_dovecot_agrees() {
    long_history_then_save("sdbox");
}

#[test]
fn mdbox_rotates_a_long_mailbox_log_and_dovecot_agrees() {
    long_history_then_save("mdbox");
}
