//! mdbox interop with the real Dovecot 2.3 (issue #4, point 4).
//!
//! The same operations are done once with `doveadm` and once with `mailsync` on an mdbox
//! store; then both tools read the result and must report exactly the same mailboxes,
//! statuses, UIDs, GUIDs, flags, sizes, dates and message bytes. Dovecot must log nothing
//! about a store mailsync wrote, and `doveadm force-resync` must change nothing a client
//! sees. (The scenario is `tests/harness/scenario.rs`.)

mod harness;

use harness::scenario::*;

use harness::{clean, ok, sorted_table, Env};

const MDBOX: Scenario = Scenario {
    config: "",
    location: "mdbox:~/mdbox",
    parent: "Archive",
    nested: "Archive/2024",
};
const MDBOX_SLASH: Scenario = Scenario {
    config: NS_SLASH,
    location: "mdbox:~/mdbox",
    parent: "Archive",
    nested: "Archive/2024",
};

fn mailsync_written_reads_the_same(sc: &Scenario) {
    let env = Env::with_config(sc.config);
    populate(&env, sc, mailsync_tool, "mailsync");
    assert_same_views(&env, sc);
    assert_eq!(status_line(&env, sc, "INBOX"), "INBOX messages=6 uidnext=8");
    // Dovecot's own consistency check finds nothing to fix: UIDs and GUIDs stay put.
    // force-resync always rebuilds the map and says so, for Dovecot's own stores too
    // (mdbox-storage-rebuild.c "rebuilding indexes", mail-index-fsck.c "fscking index
    // file"); any other message is a problem.
    let before = views(&env, sc, doveadm_tool, "doveadm");
    // doveadm purge drops the expunged (refcount 0) messages from m.N: silently, and
    // without changing anything a client sees (refcounts and offsets were right)
    clean("doveadm purge", env.doveadm(sc.location, &["purge"]));
    let purged = views(&env, sc, doveadm_tool, "doveadm");
    assert!(before == purged, "doveadm purge changed what Dovecot sees");
    assert!(
        purged == views(&env, sc, mailsync_tool, "mailsync"),
        "mailsync reads the purged store differently"
    );
    let out = env.doveadm(sc.location, &["force-resync", "*"]);
    assert!(out.status.success(), "doveadm force-resync failed");
    assert_only_rebuild_notices(&String::from_utf8_lossy(&out.stderr));
    let after = views(&env, sc, doveadm_tool, "doveadm");
    assert!(
        before == after,
        "doveadm force-resync changed what Dovecot sees"
    );
    assert_only_rebuild_notices(&env.dovecot_log());
}

/// Every line is a notice Dovecot prints for any mdbox force-resync.
fn assert_only_rebuild_notices(text: &str) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            (line.contains("Warning: mdbox ") && line.ends_with("/storage: rebuilding indexes"))
                || (line.contains("Warning: fscking index file ")
                    && line.ends_with("/storage/dovecot.map.index")),
            "Dovecot logged a problem:\n{text}"
        );
    }
}

#[test]
fn dovecot_written_mdbox_reads_the_same_in_mailsync() {
    dovecot_written_reads_the_same(&MDBOX);
}

#[test]
fn dovecot_written_mdbox_with_slash_namespace_reads_the_same() {
    dovecot_written_reads_the_same(&MDBOX_SLASH);
}

#[test]
fn mailsync_written_mdbox_reads_the_same_in_dovecot() {
    mailsync_written_reads_the_same(&MDBOX);
}

#[test]
fn mailsync_written_mdbox_with_slash_namespace_reads_the_same() {
    mailsync_written_reads_the_same(&MDBOX_SLASH);
}

/// Dovecot and mailsync take turns saving into the same mdbox mailbox, then save at the
/// same time (both assign UIDs under the index log lock):
/// nothing is lost, no UID is used twice, and both tools see the same thing.
#[test]
fn dovecot_and_mailsync_saving_into_one_mdbox_lose_nothing() {
    let env = Env::new();
    let loc = "mdbox:~/mdbox";
    let msg = |who: &str, i: usize| {
        format!("Subject: {who} {i}\nMessage-ID: <{who}{i}@x>\n\nfrom {who} {i}\n").into_bytes()
    };
    let mut expected = Vec::new();
    for i in 0..8 {
        clean(
            "doveadm save",
            env.doveadm_stdin(loc, &["save"], Some(&msg("dovecot", i))),
        );
        clean(
            "mailsync save",
            env.mailsync_stdin(loc, &["save"], Some(&msg("mailsync", i))),
        );
        expected.push(format!("dovecot {i}"));
        expected.push(format!("mailsync {i}"));
        if i % 3 == 2 {
            // Flag changes from both sides in between.
            clean(
                "doveadm flags",
                env.doveadm(
                    loc,
                    &["flags", "add", "\\Seen", "mailbox", "INBOX", "uid", "1:*"],
                ),
            );
            clean(
                "mailsync flags",
                env.mailsync(
                    loc,
                    &["flags", "add", "\\Flagged kw", "mailbox", "INBOX", "all"],
                ),
            );
        }
    }
    let (uids, subjects) = subjects_and_uids(&env, loc);
    assert_eq!(uids, (1..=16).collect::<Vec<u32>>());
    assert_eq!(subjects, expected);

    // Concurrent: both tools save at once, contending for the map and index log locks.
    std::thread::scope(|s| {
        let e = &env;
        s.spawn(move || {
            for i in 100..112 {
                clean(
                    "doveadm save",
                    e.doveadm_stdin(loc, &["save"], Some(&msg("dovecot", i))),
                );
            }
        });
        s.spawn(move || {
            for i in 100..112 {
                clean(
                    "mailsync save",
                    e.mailsync_stdin(loc, &["save"], Some(&msg("mailsync", i))),
                );
            }
        });
    });
    let (uids, subjects) = subjects_and_uids(&env, loc);
    assert_eq!(uids.len(), 40, "messages lost or duplicated: {subjects:?}");
    let mut sorted = uids.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 40, "a UID was used twice: {uids:?}");
    for who in ["dovecot", "mailsync"] {
        for i in 100..112 {
            let s = format!("{who} {i}");
            assert_eq!(
                subjects.iter().filter(|x| **x == s).count(),
                1,
                "{s} missing or doubled"
            );
        }
    }
    let sc = Scenario {
        config: "",
        location: loc,
        parent: "",
        nested: "",
    };
    let d = sorted_table(&ok(
        "doveadm",
        env.doveadm(
            sc.location,
            &["-f", "tab", "fetch", "uid guid flags hdr.subject", "all"],
        ),
    ));
    let m = sorted_table(&ok(
        "mailsync",
        env.mailsync(
            sc.location,
            &["-f", "tab", "fetch", "uid guid flags hdr.subject", "all"],
        ),
    ));
    // \Recent is per-session state: doveadm claims it, mailsync only reads it.
    let strip = |t: String| {
        t.replace(" \\Recent", "")
            .replace("\\Recent ", "")
            .replace("\\Recent", "")
    };
    assert_eq!(strip(d), strip(m));
}

fn storage_files(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.home.join("mdbox/storage"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("m."))
        .collect();
    v.sort();
    v
}

/// Dovecot writes rotated m.N files (`-o mdbox_rotate_size=1k`), copies messages between
/// mailboxes (shared storage, refcount 2) and expunges without purging; mailsync reads it
/// all as Dovecot does, then writes into the same store, and Dovecot still agrees; purge
/// and force-resync find nothing wrong.
#[test]
fn rotated_files_and_shared_copies_read_and_write_the_same() {
    let sc = MDBOX;
    let env = Env::with_config(sc.config);
    let loc = sc.location;
    let small = ["-o", "mdbox_rotate_size=1k"];
    let dove = |args: &[&str], stdin: Option<&[u8]>| {
        let all: Vec<&str> = small.iter().chain(args.iter()).copied().collect();
        clean(
            &format!("doveadm {args:?}"),
            env.doveadm_stdin(loc, &all, stdin),
        );
    };
    dove(&["mailbox", "create", "Work"], None);
    for i in 0..6 {
        let body = format!(
            "Subject: rotated {i}\nMessage-ID: <r{i}@x>\n\n{}\n",
            "x".repeat(500)
        );
        dove(&["save", "-m", "INBOX"], Some(body.as_bytes()));
    }
    dove(&["copy", "Work", "mailbox", "INBOX", "uid", "1:3"], None);
    dove(&["expunge", "mailbox", "INBOX", "uid", "2"], None);
    dove(
        &[
            "flags",
            "add",
            "\\Seen Copied",
            "mailbox",
            "Work",
            "uid",
            "1",
        ],
        None,
    );
    assert!(
        storage_files(&env).len() >= 3,
        "rotation made several files: {:?}",
        storage_files(&env)
    );
    assert_same_views(&env, &sc);

    // mailsync writes into the same store
    for i in 0..3 {
        let body = format!("Subject: ours {i}\nMessage-ID: <o{i}@x>\n\nbody\n");
        clean(
            "mailsync save",
            env.mailsync_stdin(loc, &["save", "-m", "Work"], Some(body.as_bytes())),
        );
    }
    clean(
        "mailsync expunge",
        env.mailsync(loc, &["expunge", "mailbox", "Work", "uid", "2"]),
    );
    clean(
        "mailsync flags",
        env.mailsync(
            loc,
            &["flags", "add", "\\Flagged", "mailbox", "INBOX", "all"],
        ),
    );
    assert_same_views(&env, &sc);
    let before = views(&env, &sc, doveadm_tool, "doveadm");
    clean("doveadm purge", env.doveadm(loc, &["purge"]));
    assert!(before == views(&env, &sc, doveadm_tool, "doveadm"));
    assert_same_views(&env, &sc);
    let out = env.doveadm(loc, &["force-resync", "*"]);
    assert!(out.status.success());
    assert_only_rebuild_notices(&String::from_utf8_lossy(&out.stderr));
    assert!(before == views(&env, &sc, doveadm_tool, "doveadm"));
}

/// mailsync rotates m.N files at its mdbox_rotate_size (set small here), maps each
/// message at the right file and offset, and Dovecot reads the result as its own: same
/// views, `doveadm purge` silent, force-resync changing nothing.
#[test]
fn mailsync_rotated_files_read_the_same_in_dovecot() {
    use mailstore::{Flags, Location, NewMail, Store, StoreOptions, Uid};
    let sc = MDBOX;
    let env = Env::with_config(sc.config);
    let loc = Location::parse(sc.location, Some(&env.home)).unwrap();
    let store = mailsync_dbox::DboxStore::open(&loc, &StoreOptions::default())
        .unwrap()
        .with_rotate_size(400);
    store.create_mailbox("Work", None).unwrap();
    for (name, count) in [("INBOX", 5), ("Work", 3)] {
        let mut mb = store.open_mailbox(name).unwrap();
        for i in 0..count {
            let mut t = mb.begin().unwrap();
            let body = format!(
                "Subject: {name} {i}\r\nMessage-ID: <{name}{i}@x>\r\n\r\n{}\r\n",
                "y".repeat(150)
            );
            let mail = NewMail {
                flags: if i % 2 == 0 {
                    Flags::SEEN
                } else {
                    Flags::EMPTY
                },
                ..NewMail::default()
            };
            t.save(mail, &mut body.as_bytes()).unwrap();
            t.commit().unwrap();
        }
    }
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let mut t = inbox.begin().unwrap();
    t.expunge(Uid(2)).unwrap();
    t.commit().unwrap();
    drop(inbox);
    let files = storage_files(&env);
    assert!(files.len() >= 3, "rotated into several files: {files:?}");
    env.chown_tree(&env.home.join("mdbox"));
    assert_same_views(&env, &sc);
    let before = views(&env, &sc, doveadm_tool, "doveadm");
    clean("doveadm purge", env.doveadm(sc.location, &["purge"]));
    assert!(before == views(&env, &sc, doveadm_tool, "doveadm"));
    assert_same_views(&env, &sc);
    let out = env.doveadm(sc.location, &["force-resync", "*"]);
    assert!(out.status.success());
    assert_only_rebuild_notices(&String::from_utf8_lossy(&out.stderr));
    assert!(before == views(&env, &sc, doveadm_tool, "doveadm"));
}
