//! `mailsync force-resync` on Maildir (issue #4 point 3), against the real Dovecot: a
//! Maildir written by doveadm whose `dovecot-uidlist` got a garbage line in the middle is
//! repaired by mailsync, and Dovecot then sees every message with its old UID, GUID and
//! flags, logging no error. (Without the repair Dovecot rejects the whole uidlist as a
//! "Broken file" and gives every message a new UID.)

mod harness;

use harness::{clean, sorted_pager_records, Env};

const LOC: &str = "maildir:~/Maildir";
const FIELDS: &str = "mailbox uid guid flags";

fn msg(i: usize) -> Vec<u8> {
    format!("From: a@example.com\nSubject: message {i}\nMessage-ID: <{i}@x>\n\nbody {i}\n")
        .into_bytes()
}

fn doveadm_fetch(env: &Env) -> Vec<String> {
    let out = env.doveadm(LOC, &["-f", "pager", "fetch", FIELDS, "all"]);
    sorted_pager_records(&clean("doveadm fetch", out))
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

#[test]
fn force_resync_repairs_a_garbage_uidlist_line_keeping_dovecots_uids() {
    let env = Env::new();
    clean("create", env.doveadm(LOC, &["mailbox", "create", "Other"]));
    for i in 0..6 {
        let mailbox = if i < 5 { "INBOX" } else { "Other" };
        clean(
            "save",
            env.doveadm_stdin(LOC, &["save", "-m", mailbox], Some(&msg(i))),
        );
    }
    clean(
        "flags",
        env.doveadm(
            LOC,
            &[
                "flags",
                "add",
                "\\Seen \\Flagged",
                "mailbox",
                "INBOX",
                "uid",
                "2,4",
            ],
        ),
    );
    // Expunge one, so the kept UIDs are not simply 1..n.
    clean(
        "expunge",
        env.doveadm(LOC, &["expunge", "mailbox", "INBOX", "uid", "3"]),
    );
    let before = doveadm_fetch(&env);
    assert_eq!(before.len(), 5);

    let uidlist = env.home.join("Maildir/dovecot-uidlist");
    let text = std::fs::read_to_string(&uidlist).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    // Dovecot keeps the expunged message's record until it compresses the file.
    assert!(lines.len() > 4, "header + at least 4 records: {text}");
    lines.insert(3, "garbage that is no record");
    // Written in place: the owner stays the mail user.
    std::fs::write(&uidlist, lines.join("\n") + "\n").unwrap();

    let out = env.mailsync(LOC, &["force-resync", "*"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    harness::ok("mailsync force-resync", out);
    assert!(
        stderr.contains("Warning") && stderr.contains("line 4"),
        "the fix is reported: {stderr}"
    );
    let repaired = std::fs::read_to_string(&uidlist).unwrap();
    assert!(!repaired.contains("garbage"), "{repaired}");

    assert_eq!(
        doveadm_fetch(&env),
        before,
        "every message with its old UID"
    );
    let log = env.dovecot_log();
    assert!(
        !log.contains("rror") && !log.contains("arning") && !log.contains("orrupt"),
        "Dovecot log: {log}"
    );
    // A second resync finds nothing to fix.
    let again = clean("second resync", env.mailsync(LOC, &["force-resync", "*"]));
    assert!(again.is_empty());
    assert_eq!(doveadm_fetch(&env), before);
}
