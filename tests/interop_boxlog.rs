//! The mailbox log (`dovecot.mailbox.log`) and `Mailbox::update_mailbox` against the real
//! Dovecot, for Maildir, sdbox, mdbox and mbox:
//! - what mailsync logs on delete/rename/subscribe is what Dovecot logs (`doveadm dump`),
//!   in the file Dovecot uses, and Dovecot's own dsync acts on mailsync's delete record;
//! - mailsync's `Store::deleted_mailboxes` sees a delete Dovecot logged;
//! - of two renames of one mailbox, mailsync's sync keeps the later name, also when
//!   Dovecot logged one of them;
//! - after `update_mailbox`, `doveadm mailbox status` shows the new UIDVALIDITY, UIDNEXT
//!   and HIGHESTMODSEQ, and Dovecot's next save takes the raised UID.

mod harness;

use std::path::PathBuf;

use harness::{clean, ok, Env};
use mailstore::{Location, MailboxGuid, MailboxUpdate, Store, StoreOptions};

/// (driver, location under ~, where Dovecot keeps dovecot.mailbox.log under ~)
const FORMATS: [(&str, &str, &str); 4] = [
    ("maildir", "maildir:~/Maildir", "Maildir"),
    ("sdbox", "sdbox:~/sdbox", "sdbox"),
    ("mdbox", "mdbox:~/mdbox", "mdbox"),
    ("mbox", "mbox:~/mail:INBOX=~/mail/inbox", "mail/.imap"),
];

fn log_path(env: &Env, dir: &str) -> PathBuf {
    env.home.join(dir).join("dovecot.mailbox.log")
}

fn store(env: &Env, loc: &str) -> Box<dyn Store> {
    let loc = Location::parse(loc, Some(&env.home)).unwrap();
    mailsync::backends::open_store(&loc, &StoreOptions::default()).unwrap()
}

fn mailbox_guid(env: &Env, loc: &str, name: &str) -> String {
    let out = ok(
        "doveadm mailbox status guid",
        env.doveadm(loc, &["-f", "flow", "mailbox", "status", "guid", name]),
    );
    let text = String::from_utf8(out).unwrap();
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("guid="))
        .unwrap_or_else(|| panic!("guid in {text:?}"))
        .to_string()
}

/// `doveadm dump` of the mailbox log as (type, guid) lines, timestamps dropped.
fn dump_records(env: &Env, loc: &str, path: &std::path::Path) -> Vec<String> {
    let out = ok(
        "doveadm dump",
        env.doveadm(loc, &["dump", path.to_str().unwrap()]),
    );
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(": ")?;
            let mut w = rest.split(' ');
            Some(format!("{} {}", w.next()?, w.next()?))
        })
        .filter(|l| !l.starts_with("file "))
        .collect()
}

fn sha128_hex(name: &str) -> String {
    mailsync_index::mailbox_log::name_guid(name)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn mailsync_logs_delete_rename_subscribe_as_dovecot_does() {
    for (driver, loc, dir) in FORMATS {
        let env = Env::new();
        clean(
            "mailsync mailbox create",
            env.mailsync(loc, &["mailbox", "create", "Foo", "Bar"]),
        );
        let foo_guid = mailbox_guid(&env, loc, "Foo");
        clean(
            "mailsync mailbox subscribe",
            env.mailsync(loc, &["mailbox", "subscribe", "Bar"]),
        );
        clean(
            "mailsync mailbox rename",
            env.mailsync(loc, &["mailbox", "rename", "Bar", "Baz"]),
        );
        clean(
            "mailsync mailbox delete",
            env.mailsync(loc, &["mailbox", "delete", "Foo"]),
        );
        let path = log_path(&env, dir);
        assert!(path.is_file(), "{driver}: {} written", path.display());
        // The same records Dovecot 2.3.19.1 writes for these four commands (checked by
        // hand: doveadm mailbox create/subscribe/rename/delete on each format).
        assert_eq!(
            dump_records(&env, loc, &path),
            [
                format!("subscribe {}", sha128_hex("Bar")),
                format!("rename {}", sha128_hex("Baz")),
                format!("delete-mailbox {foo_guid}"),
                format!("delete-dir {}", sha128_hex("Foo")),
            ],
            "{driver}"
        );
        // ... and mailsync reads its own delete back.
        let deleted = store(&env, loc).deleted_mailboxes().unwrap();
        assert_eq!(deleted.len(), 1, "{driver}: {deleted:?}");
        assert_eq!(deleted[0].0.to_string(), foo_guid, "{driver}");
        assert!(env.dovecot_log().is_empty(), "{}", env.dovecot_log());
    }
}

#[test]
fn dovecot_dsync_follows_a_delete_mailsync_logged() {
    for (driver, _, _) in FORMATS {
        let env = Env::new();
        let (a, b) = if driver == "mbox" {
            (
                "mbox:~/a:INBOX=~/a/inbox".to_string(),
                "mbox:~/b:INBOX=~/b/inbox".to_string(),
            )
        } else {
            (format!("{driver}:~/a"), format!("{driver}:~/b"))
        };
        ok(
            "doveadm mailbox create",
            env.doveadm(&a, &["mailbox", "create", "Gone", "Kept"]),
        );
        ok("doveadm backup", env.doveadm(&a, &["backup", &b]));
        clean(
            "mailsync mailbox delete",
            env.mailsync(&a, &["mailbox", "delete", "Gone"]),
        );
        // Stateless two-way dsync: without the delete record in a's mailbox log it would
        // copy Gone back from b.
        ok("doveadm sync", env.doveadm(&a, &["sync", &b]));
        for side in [&a, &b] {
            let list = ok(
                "doveadm mailbox list",
                env.doveadm(side, &["mailbox", "list"]),
            );
            let mut names: Vec<String> = String::from_utf8(list)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            names.sort();
            assert_eq!(names, ["INBOX", "Kept"], "{driver} {side}");
        }
    }
}

#[test]
fn mailsync_sees_a_delete_dovecot_logged() {
    for (driver, loc, _) in FORMATS {
        let env = Env::new();
        ok(
            "doveadm mailbox create",
            env.doveadm(loc, &["mailbox", "create", "Old", "Other"]),
        );
        let guid = mailbox_guid(&env, loc, "Old");
        ok(
            "doveadm mailbox delete",
            env.doveadm(loc, &["mailbox", "delete", "Old"]),
        );
        let deleted = store(&env, loc).deleted_mailboxes().unwrap();
        let want = MailboxGuid::parse_hex(guid.as_bytes()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        match deleted.as_slice() {
            [(g, t)] => {
                assert_eq!(*g, want, "{driver}");
                assert!((now - 600..=now + 5).contains(t), "{driver}: time {t}");
            }
            other => panic!("{driver}: {other:?}"),
        }
    }
}

fn status(env: &Env, loc: &str, name: &str) -> String {
    let out = ok(
        "doveadm mailbox status",
        env.doveadm(
            loc,
            &[
                "-f",
                "flow",
                "mailbox",
                "status",
                "uidvalidity uidnext highestmodseq messages",
                name,
            ],
        ),
    );
    // flow output: `<name> messages=.. uidnext=.. ...`; fields in our order
    let text = String::from_utf8(out).unwrap();
    let field = |k: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("{k} in {text:?}"))
    };
    ["uidvalidity", "uidnext", "highestmodseq", "messages"]
        .map(|k| format!("{k}={}", field(k)))
        .join(" ")
}

fn save(env: &Env, loc: &str, name: &str) {
    ok(
        "doveadm save",
        env.doveadm_stdin(
            loc,
            &["save", "-m", name],
            Some(b"From: a@example.org\nSubject: s\n\nbody\n"),
        ),
    );
}

fn uids(env: &Env, loc: &str, name: &str) -> Vec<String> {
    let out = ok(
        "doveadm fetch uid",
        env.doveadm(loc, &["-f", "flow", "fetch", "uid", "mailbox", name]),
    );
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn update_mailbox_is_what_dovecot_reports() {
    for (driver, loc, _) in FORMATS {
        let env = Env::new();
        ok(
            "doveadm mailbox create",
            env.doveadm(loc, &["mailbox", "create", "Full", "Empty"]),
        );
        save(&env, loc, "Full");
        save(&env, loc, "Full");
        {
            let s = store(&env, loc);
            let mut full = s.open_mailbox("Full").unwrap();
            let before = full.status().unwrap();
            full.update_mailbox(&MailboxUpdate {
                min_uid_next: Some(40),
                min_highest_modseq: Some(1000),
                ..Default::default()
            })
            .unwrap();
            let mut empty = s.open_mailbox("Empty").unwrap();
            empty
                .update_mailbox(&MailboxUpdate {
                    uid_validity: Some(1_234_567),
                    min_uid_next: Some(7),
                    ..Default::default()
                })
                .unwrap();
            let want = format!(
                "uidvalidity={} uidnext=40 highestmodseq=1000 messages=2",
                before.uid_validity
            );
            env.chown_tree(&env.home);
            assert_eq!(status(&env, loc, "Full"), want, "{driver}");
            assert_eq!(
                status(&env, loc, "Empty"),
                "uidvalidity=1234567 uidnext=7 highestmodseq=1 messages=0",
                "{driver}"
            );
            let mine = full.status().unwrap();
            assert_eq!((mine.uid_next, mine.highest_modseq), (40, 1000), "{driver}");
        }
        // Dovecot's next saves take the raised UIDs.
        save(&env, loc, "Full");
        save(&env, loc, "Empty");
        assert_eq!(
            uids(&env, loc, "Full"),
            ["uid=1", "uid=2", "uid=40"],
            "{driver}"
        );
        assert_eq!(uids(&env, loc, "Empty"), ["uid=7"], "{driver}");
        assert!(
            status(&env, loc, "Empty").starts_with("uidvalidity=1234567 uidnext=8"),
            "{driver}"
        );
        let dovecot_log = env.dovecot_log();
        assert!(
            dovecot_log.is_empty(),
            "{driver}: Dovecot logged: {dovecot_log}"
        );
    }
}

fn names(env: &Env, loc: &str) -> Vec<String> {
    let out = ok(
        "doveadm mailbox list",
        env.doveadm(loc, &["mailbox", "list"]),
    );
    let mut v: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn the_later_of_two_renames_wins_also_one_dovecot_logged() {
    let env = Env::new();
    let (a, b) = ("maildir:~/a", "mdbox:~/b");
    ok(
        "doveadm mailbox create",
        env.doveadm(a, &["mailbox", "create", "Box"]),
    );
    save(&env, a, "Box");
    ok("mailsync sync", env.mailsync(a, &["sync", b]));
    // Dovecot renames on A, mailsync on B a second later: B's name wins, although A is the
    // side whose names win ties.
    ok(
        "doveadm mailbox rename",
        env.doveadm(a, &["mailbox", "rename", "Box", "ByDovecot"]),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    clean(
        "mailsync mailbox rename",
        env.mailsync(b, &["mailbox", "rename", "Box", "ByMailsync"]),
    );
    let out = env.mailsync(a, &["sync", b]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for side in [a, b] {
        assert_eq!(names(&env, side), ["ByMailsync", "INBOX"], "{side}");
    }
    assert_eq!(uids(&env, a, "ByMailsync").len(), 1);
    // And the other way round: Dovecot's later rename on A wins with B as the primary.
    clean(
        "mailsync mailbox rename",
        env.mailsync(b, &["mailbox", "rename", "ByMailsync", "Early"]),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ok(
        "doveadm mailbox rename",
        env.doveadm(a, &["mailbox", "rename", "ByMailsync", "Late"]),
    );
    let out = env.mailsync(b, &["sync", a]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for side in [a, b] {
        assert_eq!(names(&env, side), ["INBOX", "Late"], "{side}");
    }
    assert!(env.dovecot_log().is_empty(), "{}", env.dovecot_log());
}
