//! Stateful runs (`sync -s`) through the real binary, from a Maildir into every format: the
//! printed state makes the next run skip what didn't change, and after 30 new messages, 30
//! flag changes on the other side, 2 expunges and a flag change, the run lists exactly
//! those messages (the debug log counts what each side listed from `changes_since` and
//! what it looked up for the peer) instead of every message. Dovecot's `doveadm fetch`
//! then sees both stores alike.

mod harness;

use std::path::Path;

use harness::{ok, Env};

const INBOX_MAILS: usize = 300;
const BOX_MAILS: usize = 20;

fn message(i: usize, folder: &str) -> String {
    format!(
        "From: sender{i}@example.org\nTo: alice@example.org\nSubject: {folder} message {i}\n\
         Message-ID: <{folder}.{i}@example.org>\n\nBody of {folder} message {i}.\n"
    )
}

/// A Maildir written the way an MDA leaves it (no index, no uidlist yet).
fn write_maildir(dir: &Path) {
    for (folder, sub, count) in [("INBOX", "", INBOX_MAILS), ("Box", ".Box", BOX_MAILS)] {
        let base = dir.join(sub);
        for d in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        for i in 0..count {
            let name = format!("{}.M{i}P1.host:2,", 1_600_000_000 + i);
            std::fs::write(base.join("cur").join(name), message(i, folder)).unwrap();
        }
    }
}

fn state_of(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_string()
}

fn debug_lines(out: &std::process::Output, needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// `doveadm fetch` of every message of both mailboxes, sorted.
fn dovecot_view(env: &Env, loc: &str, fields: &str) -> String {
    let mut lines = Vec::new();
    for mailbox in ["INBOX", "Box"] {
        let out = ok(
            "doveadm fetch",
            env.doveadm(loc, &["fetch", fields, "mailbox", mailbox, "all"]),
        );
        // \Recent belongs to whichever session saw the mail first.
        let text: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .map(|l| l.replace("\\Recent", "").trim_end().replace("  ", " "))
            .collect();
        let text = text.join("\n");
        lines.push(format!("{mailbox}:\n{text}"));
    }
    lines.join("\n")
}

fn stateful_run_lists_only_the_changes(format: &str) {
    let env = Env::new();
    let src = "maildir:~/A".to_string();
    let dst = match format {
        "mbox" => "mbox:~/B:INBOX=~/B/inbox".to_string(),
        f => format!("{f}:~/B"),
    };
    write_maildir(&env.home.join("A"));
    env.chown_tree(&env.home);
    let sync = |state: &str| {
        let out = env.mailsync(&src, &["-D", "sync", "-s", state, &dst]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{format}: sync -s {state:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };

    let first = sync("");
    let state = state_of(&first);
    assert!(!state.is_empty(), "{format}: no state printed");

    // Nothing changed: both mailboxes skipped on the state alone.
    let second = sync(&state);
    let skipped = debug_lines(&second, "master:");
    for mailbox in ["INBOX", "Box"] {
        let line = format!("Debug: master: {mailbox}: unchanged since the state, skipped");
        assert!(skipped.contains(&line), "{format}: {skipped:#?}");
    }
    let state = state_of(&second);

    // 30 new messages and a flag change and 2 expunges on A; 30 flag changes on B, and
    // one in Box.
    for i in 0..30 {
        let body = message(1000 + i, "INBOX");
        ok(
            "save",
            env.mailsync_stdin(&src, &["save", "-m", "INBOX"], Some(body.as_bytes())),
        );
    }
    ok(
        "flags A",
        env.mailsync(
            &src,
            &[
                "flags",
                "add",
                "\\Flagged",
                "mailbox",
                "INBOX",
                "uid",
                "200",
            ],
        ),
    );
    ok(
        "expunge A",
        env.mailsync(&src, &["expunge", "mailbox", "INBOX", "uid", "100:101"]),
    );
    ok(
        "flags B",
        env.mailsync(
            &dst,
            &["flags", "add", "\\Seen", "mailbox", "INBOX", "uid", "1:30"],
        ),
    );
    ok(
        "flags B Box",
        env.mailsync(
            &dst,
            &["flags", "add", "$Work", "mailbox", "Box", "uid", "5"],
        ),
    );

    let third = sync(&state);
    let mut listed = debug_lines(&third, "changes since the state");
    listed.sort();
    assert_eq!(
        listed,
        [
            "Debug: master: Box: changes since the state: 0 here, 1 there, 1 looked up",
            "Debug: master: INBOX: changes since the state: 33 here, 30 there, 30 looked up",
            "Debug: slave: Box: changes since the state: 1 here, 0 there, 0 looked up",
            "Debug: slave: INBOX: changes since the state: 30 here, 33 there, 3 looked up",
        ],
        "{format}: {}",
        String::from_utf8_lossy(&third.stderr)
    );
    let state = state_of(&third);

    // Both stores alike as Dovecot sees them (mbox GUIDs are Dovecot's header hashes).
    let fields = if format == "mbox" {
        "uid flags"
    } else {
        "uid guid flags"
    };
    let a = dovecot_view(&env, &src, fields);
    let b = dovecot_view(&env, &dst, fields);
    let differing: Vec<(&str, &str)> = a
        .lines()
        .zip(b.lines())
        .filter(|(x, y)| x != y)
        .take(10)
        .collect();
    assert!(
        a == b,
        "{format}: A and B differ ({} and {} lines), first: {differing:?}",
        a.lines().count(),
        b.lines().count()
    );
    assert!(a.contains("\\Seen"), "{format}: B's flags reached A");
    assert_eq!(
        a.lines().filter(|l| l.starts_with("uid: ")).count(),
        INBOX_MAILS + 30 - 2 + BOX_MAILS,
        "{format}"
    );

    // And the run after it has nothing to do.
    let fourth = sync(&state);
    assert!(
        debug_lines(&fourth, "changes since the state").is_empty(),
        "{format}: {}",
        String::from_utf8_lossy(&fourth.stderr)
    );
}

#[test]
fn stateful_run_into_mdbox_lists_only_the_changes() {
    stateful_run_lists_only_the_changes("mdbox");
}

#[test]
fn stateful_run_into_sdbox_lists_only_the_changes() {
    stateful_run_lists_only_the_changes("sdbox");
}

#[test]
fn stateful_run_into_maildir_lists_only_the_changes() {
    stateful_run_lists_only_the_changes("maildir");
}

#[test]
fn stateful_run_into_mbox_lists_only_the_changes() {
    stateful_run_lists_only_the_changes("mbox");
}
