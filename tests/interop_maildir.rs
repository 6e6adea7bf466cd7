//! Maildir interop with the real Dovecot 2.3 (issue #2, point 5).
//!
//! The same operations are done once with `doveadm` and once with `mailsync`; then both tools
//! read the resulting store and must report exactly the same mailboxes, statuses, UIDs, GUIDs,
//! flags, sizes, dates and message bytes. Dovecot must not warn about a store mailsync wrote.

mod harness;

use harness::scenario::*;

use harness::{clean, ok, sorted_lines, sorted_pager_records, sorted_table, Env};

const MAILDIRPP: Scenario = Scenario {
    config: "",
    location: "maildir:~/Maildir",
    parent: "Archive",
    nested: "Archive.2024",
};
const MAILDIRPP_SLASH: Scenario = Scenario {
    config: NS_SLASH,
    location: "maildir:~/Maildir",
    parent: "Archive",
    nested: "Archive/2024",
};
const LAYOUT_FS: Scenario = Scenario {
    config: "",
    location: "maildir:~/Maildir:LAYOUT=fs",
    parent: "Archive",
    nested: "Archive/2024",
};

fn mailsync_written_reads_the_same(sc: &Scenario) {
    let env = Env::with_config(sc.config);
    populate(&env, sc, mailsync_tool, "mailsync");
    assert_same_views(&env, sc);
    assert_eq!(status_line(&env, sc, "INBOX"), "INBOX messages=6 uidnext=8");
    // Dovecot's own consistency check finds nothing to fix: UIDs and GUIDs stay put.
    let before = views(&env, sc, doveadm_tool, "doveadm");
    clean(
        "doveadm force-resync",
        env.doveadm(sc.location, &["force-resync", "*"]),
    );
    let after = views(&env, sc, doveadm_tool, "doveadm");
    assert!(
        before == after,
        "doveadm force-resync changed what Dovecot sees"
    );
    let log = env.dovecot_log();
    assert!(
        !log.contains("Error") && !log.contains("Warning") && !log.contains("Panic"),
        "Dovecot logged problems:\n{log}"
    );
}

#[test]
fn dovecot_written_maildirpp_reads_the_same_in_mailsync() {
    dovecot_written_reads_the_same(&MAILDIRPP);
}

#[test]
fn dovecot_written_maildirpp_with_slash_namespace_reads_the_same() {
    dovecot_written_reads_the_same(&MAILDIRPP_SLASH);
}

#[test]
fn dovecot_written_layout_fs_reads_the_same() {
    dovecot_written_reads_the_same(&LAYOUT_FS);
}

#[test]
fn mailsync_written_maildirpp_reads_the_same_in_dovecot() {
    mailsync_written_reads_the_same(&MAILDIRPP);
}

#[test]
fn mailsync_written_maildirpp_with_slash_namespace_reads_the_same() {
    mailsync_written_reads_the_same(&MAILDIRPP_SLASH);
}

#[test]
fn mailsync_written_layout_fs_reads_the_same_in_dovecot() {
    mailsync_written_reads_the_same(&LAYOUT_FS);
}

/// The Dovecot-generated fixture store (imported from real mbox files by Dovecot itself).
#[test]
fn dovecot_generated_fixture_reads_the_same() {
    let env = Env::new();
    let dst = env.home.join("Maildir");
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dovecot-generated/maildir");
    let st = std::process::Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    env.chown_tree(&dst);
    let sc = Scenario {
        config: "",
        location: "maildir:~/Maildir",
        parent: "",
        nested: "",
    };
    // The fixture has a ghost parent (Archive for Archive.2002): list both tools the same way.
    let list_d = sorted_lines(&ok(
        "doveadm list",
        env.doveadm(sc.location, &["mailbox", "list"]),
    ));
    let list_m = sorted_lines(&ok(
        "mailsync list",
        env.mailsync(sc.location, &["mailbox", "list"]),
    ));
    assert_eq!(list_d, list_m);
    for args in [
        &[
            "-f",
            "tab",
            "fetch",
            "mailbox uid guid flags size.physical size.virtual",
            "all",
        ][..],
        &[
            "-f",
            "tab",
            "mailbox",
            "status",
            "messages uidnext uidvalidity unseen guid",
            "INBOX",
            "Sent Items",
            "Entwürfe",
            "Archive.2002",
        ][..],
    ] {
        let d = sorted_table(&ok("doveadm", env.doveadm(sc.location, args)));
        let m = sorted_table(&ok("mailsync", env.mailsync(sc.location, args)));
        assert_eq!(d, m, "{args:?}");
    }
    let d = sorted_pager_records(&ok(
        "doveadm",
        env.doveadm(sc.location, &["fetch", "mailbox uid text", "all"]),
    ));
    let m = sorted_pager_records(&ok(
        "mailsync",
        env.mailsync(sc.location, &["fetch", "mailbox uid text", "all"]),
    ));
    assert_eq!(d.len(), 53);
    assert!(d == m, "message bytes differ");
}

/// Dovecot and mailsync take turns saving into the same Maildir, then save at the same time:
/// nothing is lost, no UID is used twice, and both tools see the same thing.
#[test]
fn dovecot_and_mailsync_saving_into_one_maildir_lose_nothing() {
    let env = Env::new();
    let loc = "maildir:~/Maildir";
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

    // Concurrent: both tools save at once, contending for dovecot-uidlist.lock.
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
    // \Recent too: both read first_recent_uid from the same dovecot.index.log.
    assert_eq!(d, m);
}

/// The same operations done by doveadm in one store and by mailsync in another give stores
/// that Dovecot cannot tell apart (apart from UIDVALIDITY, GUIDs and dates, which are unique).
fn same_operations_give_the_same_store(sc: &Scenario) {
    let d_env = Env::with_config(sc.config);
    let m_env = Env::with_config(sc.config);
    populate(&d_env, sc, doveadm_tool, "doveadm");
    populate(&m_env, sc, mailsync_tool, "mailsync");
    let read = |env: &Env, args: &[&str]| ok("doveadm", env.doveadm(sc.location, args));
    for args in [
        &["mailbox", "list"][..],
        &["mailbox", "list", "-s"][..],
        &[
            "-f",
            "tab",
            "mailbox",
            "status",
            "messages recent uidnext unseen vsize",
            "*",
        ][..],
        &[
            "-f",
            "tab",
            "fetch",
            "mailbox uid flags size.physical size.virtual hdr.subject",
            "all",
        ][..],
    ] {
        let sort = if args.contains(&"-f") {
            sorted_table
        } else {
            sorted_lines
        };
        let d = sort(&read(&d_env, args));
        let m = sort(&read(&m_env, args));
        assert_eq!(
            d, m,
            "doveadm {args:?} differs between the doveadm-made and the mailsync-made store"
        );
    }
    let d = sorted_pager_records(&read(
        &d_env,
        &["-f", "pager", "fetch", "mailbox uid text", "all"],
    ));
    let m = sorted_pager_records(&read(
        &m_env,
        &["-f", "pager", "fetch", "mailbox uid text", "all"],
    ));
    assert!(
        d == m,
        "message bytes differ between the doveadm-made and the mailsync-made store"
    );
}

#[test]
fn same_operations_give_the_same_store_maildirpp() {
    same_operations_give_the_same_store(&MAILDIRPP);
}

#[test]
fn same_operations_give_the_same_store_layout_fs() {
    same_operations_give_the_same_store(&LAYOUT_FS);
}

/// `mail_save_crlf = yes` in the shared config: both tools store CRLF line endings.
#[test]
fn mail_save_crlf_setting_is_honoured_like_dovecot() {
    let d_env = Env::with_config("mail_save_crlf = yes\n");
    let m_env = Env::with_config("mail_save_crlf = yes\n");
    let loc = "maildir:~/Maildir";
    let msg = b"Subject: lf\n\nline\r\nbare lf\nlone\rcr\n";
    clean(
        "doveadm save",
        d_env.doveadm_stdin(loc, &["save"], Some(msg)),
    );
    clean(
        "mailsync save",
        m_env.mailsync_stdin(loc, &["save"], Some(msg)),
    );
    let fetch = |env: &Env| {
        ok(
            "doveadm fetch",
            env.doveadm(
                loc,
                &[
                    "-f",
                    "pager",
                    "fetch",
                    "size.physical size.virtual text",
                    "all",
                ],
            ),
        )
    };
    let d = fetch(&d_env);
    assert_eq!(d, fetch(&m_env));
    assert!(
        String::from_utf8_lossy(&d).contains("bare lf\r\n"),
        "{}",
        String::from_utf8_lossy(&d)
    );
}

/// `doveadm dump` lines of the index log's expunge records of `dir`.
fn expunge_records(env: &Env, loc: &str, dir: &std::path::Path) -> Vec<String> {
    let out = ok(
        "doveadm dump",
        env.doveadm(
            loc,
            &["dump", dir.join("dovecot.index.log").to_str().unwrap()],
        ),
    );
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("expunge") {
            found.push(l.trim().to_string());
            // the record's fields follow on indented lines
            for next in lines[i + 1..].iter().take_while(|n| n.starts_with(" - ")) {
                found.push(next.trim().to_string());
            }
        }
    }
    found
}

#[test]
fn an_expunge_is_logged_with_the_guid_dovecot_logs_and_dovecot_dsync_follows_it() {
    let env = Env::new();
    let (a, b, c) = ("maildir:~/a", "maildir:~/b", "maildir:~/c");
    for i in 1..=3 {
        let body = format!("From: x@example.org\nSubject: {i}\n\nbody {i}\n");
        ok(
            "doveadm save",
            env.doveadm_stdin(a, &["save"], Some(body.as_bytes())),
        );
    }
    ok("doveadm backup", env.doveadm(a, &["backup", b]));
    ok("doveadm backup", env.doveadm(a, &["backup", c]));
    // The highest UID, expunged by mailsync in A and by Dovecot in C.
    clean(
        "mailsync expunge",
        env.mailsync(a, &["expunge", "mailbox", "INBOX", "uid", "3"]),
    );
    ok(
        "doveadm expunge",
        env.doveadm(c, &["expunge", "mailbox", "INBOX", "uid", "3"]),
    );
    let ours = expunge_records(&env, a, &env.home.join("a"));
    let dovecots = expunge_records(&env, c, &env.home.join("c"));
    assert!(
        ours.iter().any(|l| l.contains("(guid ")),
        "no GUID logged: {ours:?}"
    );
    // Dovecot logs the GUID with the expunge and then a zero-GUID expunge when its maildir
    // sync sees the file gone; mailsync logs one record, with the GUID.
    let guid_lines = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|l| {
                l.contains("(guid ") && !l.contains("(guid 00000000000000000000000000000000)")
            })
            .cloned()
            .collect()
    };
    assert_eq!(guid_lines(&ours), guid_lines(&dovecots));
    // mailsync reads the GUID of Dovecot's expunge too (from its request record).
    for (loc, dir) in [(a, "a"), (c, "c")] {
        let location = mailstore::Location::parse(loc, Some(&env.home)).unwrap();
        let store =
            mailsync::backends::open_store(&location, &mailstore::StoreOptions::default()).unwrap();
        let mut inbox = store.open_mailbox("INBOX").unwrap();
        let mailstore::Changes::Known { expunged, .. } =
            inbox.changes_since(mailstore::ModSeq(1)).unwrap()
        else {
            panic!("{dir}: history unknown");
        };
        assert_eq!(expunged.len(), 1, "{dir}: {expunged:?}");
        let (uid, guid) = &expunged[0];
        assert_eq!(uid.0, 3, "{dir}");
        let logged = guid_lines(if dir == "a" { &ours } else { &dovecots });
        let hex = guid.as_ref().map(|g| g.to_string()).unwrap_or_default();
        assert!(
            logged[0].contains(&hex) && !hex.is_empty(),
            "{dir}: {hex} vs {logged:?}"
        );
    }
    // Dovecot's stateless two-way sync takes the expunge to B instead of copying UID 3 back.
    ok("doveadm sync", env.doveadm(a, &["sync", b]));
    for side in [a, b] {
        let out = ok(
            "doveadm fetch",
            env.doveadm(
                side,
                &["-f", "flow", "fetch", "uid", "mailbox", "INBOX", "all"],
            ),
        );
        assert_eq!(
            String::from_utf8(out).unwrap().lines().collect::<Vec<_>>(),
            ["uid=1", "uid=2"],
            "{side}"
        );
    }
}

fn set_mtime(path: &std::path::Path, t: std::time::SystemTime) {
    std::fs::File::open(path)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(t))
        .unwrap();
}

fn messages(out: Vec<u8>) -> String {
    String::from_utf8_lossy(&out).trim().to_string()
}

/// The index's `maildir` header mailsync writes after reading new/ and cur/ is the one
/// Dovecot's quick check reads (maildir_sync_quick_check): Dovecot trusts it exactly as
/// mailsync does — shown by a removal hidden from cur/'s mtime, which neither tool
/// rereads — and a real change of a directory makes both read it again.
#[test]
fn the_maildir_header_mailsync_writes_is_the_one_dovecots_quick_check_reads() {
    use std::time::{Duration, SystemTime};
    let env = Env::new();
    let loc = "maildir:~/Maildir";
    for i in 0..4 {
        let msg = format!("Subject: m{i}\n\nbody {i}\n");
        clean(
            "mailsync save",
            env.mailsync_stdin(loc, &["save"], Some(msg.as_bytes())),
        );
    }
    let dir = env.home.join("Maildir");
    let old = SystemTime::now() - Duration::from_secs(60);
    for sub in ["new", "cur"] {
        set_mtime(&dir.join(sub), old);
    }
    // mailsync reads the settled directories and records them in the header
    let status = ["mailbox", "status", "messages", "INBOX"];
    assert_eq!(
        messages(ok("mailsync", env.mailsync(loc, &status))),
        "INBOX messages=4"
    );
    // a message file removed without its directory's mtime changing
    let victim = ["new", "cur"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(dir.join(sub)).unwrap())
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    std::fs::remove_file(&victim).unwrap();
    set_mtime(victim.parent().unwrap(), old);
    assert_eq!(
        messages(ok("doveadm", env.doveadm(loc, &status))),
        "INBOX messages=4",
        "Dovecot trusted mailsync's header"
    );
    assert_eq!(
        messages(ok("mailsync", env.mailsync(loc, &status))),
        "INBOX messages=4"
    );
    // a delivery changes new/: both read the directories again and see the removal too
    std::fs::write(dir.join("new/1700000000.M1P1.host"), "Subject: new\n\nx\n").unwrap();
    env.chown_tree(&dir);
    set_mtime(&dir.join("new"), old + Duration::from_secs(30));
    assert_eq!(
        messages(ok("mailsync", env.mailsync(loc, &status))),
        "INBOX messages=4"
    );
    assert_eq!(
        messages(ok("doveadm", env.doveadm(loc, &status))),
        "INBOX messages=4"
    );
    let d = sorted_table(&ok(
        "doveadm",
        env.doveadm(loc, &["-f", "tab", "fetch", "uid guid flags", "all"]),
    ));
    let m = sorted_table(&ok(
        "mailsync",
        env.mailsync(loc, &["-f", "tab", "fetch", "uid guid flags", "all"]),
    ));
    assert_eq!(d, m);
}
