//! Mail delivered while a sync runs is never lost (the sync-engine issue, point 6): a
//! two-way `mailsync sync` between a Maildir and an mdbox runs while new mail keeps
//! arriving on both sides — files dropped into the Maildir's `new/` as an MTA does, and
//! Dovecot's own `doveadm save` into the mdbox. The run exits 0 or 2; the next runs bring
//! both sides to the same mail and the last one exits 0. Every message (the store's and
//! every delivery) is then on both sides exactly once, as Dovecot reads them.
//!
//! (This found a real bug: a message renumbered by the importing side whose planned UID a
//! delivery took was then served from the planned UID — another message's bytes under
//! its GUID.)

mod harness;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::{ok, Env};

fn message(subject: &str) -> String {
    format!(
        "From: sender@example.org\nTo: alice@example.org\nSubject: {subject}\n\
         Message-ID: <{subject}@example.org>\n\n{}\n",
        "Body line of a message delivered somewhere.\n".repeat(20)
    )
}

/// Drops a message into `new/` the way an MTA does (write in `tmp/`, rename into `new/`).
fn deliver_to_maildir(env: &Env, maildir: &Path, n: usize, subject: &str) {
    let name = format!("{}.M{n}P77.mta", 1_700_000_000 + n);
    let tmp = maildir.join("tmp").join(&name);
    std::fs::write(&tmp, message(subject)).unwrap();
    if let Some((uid, gid)) = env.run_as {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).unwrap();
    }
    std::fs::rename(&tmp, maildir.join("new").join(&name)).unwrap();
}

/// Subject → how many messages with it Dovecot sees in the INBOX of `loc`.
fn subjects(env: &Env, loc: &str) -> BTreeMap<String, usize> {
    let out = ok(
        "doveadm fetch",
        env.doveadm(
            loc,
            &[
                "-f",
                "flow",
                "fetch",
                "hdr.subject",
                "mailbox",
                "INBOX",
                "all",
            ],
        ),
    );
    let mut counts = BTreeMap::new();
    for line in String::from_utf8(out).unwrap().lines() {
        let subject = line.trim_start_matches("hdr.subject=").trim().to_string();
        *counts.entry(subject).or_insert(0) += 1;
    }
    counts
}

#[test]
fn mail_delivered_to_both_sides_during_a_sync_is_never_lost() {
    let env = Env::new();
    let maildir = env.home.join("A");
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(d)).unwrap();
    }
    let (a, b) = ("maildir:~/A", "mdbox:~/B");
    let mut want: Vec<String> = Vec::new();
    for i in 0..300 {
        let subject = format!("initial-{i}");
        std::fs::write(
            maildir
                .join("cur")
                .join(format!("{}.M{i}P1.host:2,", 1_600_000_000 + i)),
            message(&subject),
        )
        .unwrap();
        want.push(subject);
    }
    env.chown_tree(&env.home);
    ok("first sync", env.mailsync(a, &["sync", b]));
    // Work for the next run: 1500 more messages on A.
    for i in 0..1500 {
        let subject = format!("batch-{i}");
        deliver_to_maildir(&env, &maildir, 100_000 + i, &subject);
        want.push(subject);
    }

    let started = Instant::now();
    let mut child = env
        .mailsync_command(a, &["sync", b])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.root.join("sync.log")).unwrap())
        .spawn()
        .unwrap();
    let mut delivered_while_running = 0;
    let mut n = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the sync hangs"
        );
        n += 1;
        let to_a = format!("during-a-{n}");
        deliver_to_maildir(&env, &maildir, 200_000 + n, &to_a);
        want.push(to_a);
        let to_b = format!("during-b-{n}");
        ok(
            "doveadm save",
            env.doveadm_stdin(b, &["save", "-m", "INBOX"], Some(message(&to_b).as_bytes())),
        );
        want.push(to_b);
        if child.try_wait().unwrap().is_none() {
            delivered_while_running += 2;
        }
    };
    let stderr = std::fs::read(env.root.join("sync.log")).unwrap();
    assert!(
        matches!(status.code(), Some(0 | 2)),
        "the sync during deliveries: {status:?}: {}",
        String::from_utf8_lossy(&stderr)
    );
    assert!(
        delivered_while_running >= 2,
        "no delivery landed while the sync ran ({n} rounds)"
    );
    // The next runs catch up; the last one exits 0.
    let mut code = None;
    for _ in 0..3 {
        let out = env.mailsync(a, &["sync", b]);
        code = out.status.code();
        if code == Some(0) {
            break;
        }
        assert_eq!(code, Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(code, Some(0), "a run after the deliveries exits 0");
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for s in &want {
        *expected.entry(s.clone()).or_insert(0) += 1;
    }
    for side in [a, b] {
        let got = subjects(&env, side);
        let missing: Vec<&String> = expected.keys().filter(|s| !got.contains_key(*s)).collect();
        let doubled: Vec<(&String, &usize)> = got.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            missing.is_empty() && doubled.is_empty() && got.len() == expected.len(),
            "{side}: {} messages, {} expected; missing {missing:?}; more than once {doubled:?}",
            got.len(),
            expected.len()
        );
    }
    assert!(env.dovecot_log().is_empty(), "{}", env.dovecot_log());
}
