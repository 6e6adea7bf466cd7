//! dbox maintenance commands and crash safety (issue #4, points 2–4), against the real
//! Dovecot (`doveadm fetch`, `doveadm purge`):
//! - `mailsync purge`: frees expunged messages; purges stopped after each durable step
//!   (the library's hook) or killed with SIGKILL (50 trials), then re-run: nothing lost
//!   or duplicated;
//! - `mailsync force-resync`: mdbox with a deleted map index, a deleted mailbox index, a
//!   truncated `m.1`, a wrong refcount; sdbox with a deleted index and an unindexed file;
//! - `mailsync save` killed with SIGKILL at random points (60 trials), then re-run.

mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use harness::{clean, sorted_pager_records, Env};
use mailstore::{FlagOp, FlagUpdate, Flags, Location, NewMail, Store, StoreOptions, Uid};
use mailsync_dbox::purge::{purge_with_hook, PurgeStep};
use mailsync_dbox::DboxStore;

const LOC: &str = "mdbox:~/mdbox";

fn storage_files(storage: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(storage).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("m.") {
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn msg(i: usize) -> Vec<u8> {
    format!(
        "From: a@example.com\nSubject: message {i}\nMessage-ID: <{i}@x>\n\nbody MARKER-{i:03}-END\n"
    )
    .into_bytes()
}

fn fetch_all(env: &Env, tool: &str) -> Vec<Vec<u8>> {
    let args = [
        "-f",
        "pager",
        "fetch",
        "mailbox uid guid flags size.physical text",
        "all",
    ];
    let out = if tool == "doveadm" {
        env.doveadm(LOC, &args)
    } else {
        env.mailsync(LOC, &args)
    };
    sorted_pager_records(&clean(&format!("{tool} fetch"), out))
}

#[test]
fn purge_frees_expunged_messages_and_dovecot_agrees() {
    let env = Env::new();
    clean("create", env.mailsync(LOC, &["mailbox", "create", "Other"]));
    for i in 0..8 {
        clean(
            "save",
            env.mailsync_stdin(LOC, &["save", "-m", "INBOX"], Some(&msg(i))),
        );
    }
    clean(
        "copy",
        env.mailsync(LOC, &["copy", "Other", "mailbox", "INBOX", "uid", "1:2"]),
    );
    clean(
        "flags",
        env.mailsync(
            LOC,
            &[
                "flags",
                "add",
                "\\Seen $Label1",
                "mailbox",
                "INBOX",
                "uid",
                "3,5",
            ],
        ),
    );
    clean(
        "expunge",
        env.mailsync(LOC, &["expunge", "mailbox", "INBOX", "uid", "2,4,6"]),
    );
    let storage = env.home.join("mdbox/storage");
    let before_files = storage_files(&storage);
    assert_eq!(before_files.keys().collect::<Vec<_>>(), ["m.1"]);
    // the expunged messages are still in m.1 before the purge
    assert!(contains(&before_files["m.1"], b"MARKER-003-END"));
    let dovecot_before = fetch_all(&env, "doveadm");
    let mailsync_before = fetch_all(&env, "mailsync");
    assert_eq!(dovecot_before, mailsync_before);
    assert_eq!(dovecot_before.len(), 5 + 2);

    let out = env.mailsync(LOC, &["purge"]);
    assert_eq!(clean("mailsync purge", out), b"");

    let after_files = storage_files(&storage);
    assert!(!after_files.contains_key("m.1"), "old m.1 still there");
    assert_eq!(after_files.len(), 1, "{:?}", after_files.keys());
    let new = after_files.values().next().unwrap();
    assert!(new.len() < before_files["m.1"].len());
    for i in [3, 5] {
        assert!(
            !contains(new, format!("MARKER-{i:03}-END").as_bytes()),
            "expunged message {i} survived the purge"
        );
    }
    for i in [0, 1, 2, 4, 6, 7] {
        assert!(contains(new, format!("MARKER-{i:03}-END").as_bytes()));
    }
    // same UIDs, GUIDs, flags, sizes and bytes, seen by both tools
    assert_eq!(fetch_all(&env, "doveadm"), dovecot_before);
    assert_eq!(fetch_all(&env, "mailsync"), dovecot_before);
    // Dovecot finds nothing to purge and nothing to complain about
    clean("doveadm purge", env.doveadm(LOC, &["purge"]));
    assert_eq!(storage_files(&storage), after_files);
    assert_eq!(fetch_all(&env, "doveadm"), dovecot_before);
    let log = env.dovecot_log();
    assert!(
        !log.contains("Error") && !log.contains("Warning") && !log.contains("rror:"),
        "Dovecot log: {log}"
    );
    // purging again changes nothing
    clean("mailsync purge again", env.mailsync(LOC, &["purge"]));
    assert_eq!(storage_files(&storage), after_files);
}

#[test]
fn purge_is_a_silent_no_op_for_other_formats() {
    let env = Env::new();
    let loc = "sdbox:~/sdbox";
    clean(
        "save",
        env.mailsync_stdin(loc, &["save", "-m", "INBOX"], Some(&msg(1))),
    );
    clean(
        "expunge",
        env.mailsync(loc, &["expunge", "mailbox", "INBOX", "all"]),
    );
    let out = env.mailsync(loc, &["purge"]);
    assert_eq!(clean("purge sdbox", out), b"");
    let out = env.mailsync("maildir:~/Maildir", &["purge"]);
    assert_eq!(clean("purge maildir", out), b"");
}

/// (mailbox, uid, guid, flags, bytes) of every message, sorted.
type Snapshot = Vec<(String, u32, Vec<u8>, u32, Vec<u8>)>;

fn snapshot(root: &Path) -> Snapshot {
    let loc = Location::parse(&format!("mdbox:{}", root.display()), None).unwrap();
    let store = DboxStore::open(&loc, &StoreOptions::default()).unwrap();
    let mut out = Vec::new();
    for name in ["INBOX", "Other"] {
        let mut mb = store.open_mailbox(name).unwrap();
        for m in mb.mails().unwrap() {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut mb.open_mail(m.uid).unwrap(), &mut bytes).unwrap();
            out.push((
                name.to_string(),
                m.uid.0,
                m.guid.as_bytes().to_vec(),
                (m.flags.0 & !Flags::RECENT.0) as u32,
                bytes,
            ));
        }
    }
    out.sort();
    out
}

/// A store with two rotated files (small rotate size), copies, flags and expunges in
/// both files.
fn build_store(root: &Path) {
    let loc = Location::parse(&format!("mdbox:{}", root.display()), None).unwrap();
    let store = DboxStore::open(&loc, &StoreOptions::default())
        .unwrap()
        .with_rotate_size(600);
    store.create_mailbox("Other", None).unwrap();
    for i in 0..12 {
        let mut mb = store
            .open_mailbox(if i % 3 == 0 { "Other" } else { "INBOX" })
            .unwrap();
        let mut t = mb.begin().unwrap();
        t.save(NewMail::default(), &mut &msg(i)[..]).unwrap();
        t.commit().unwrap();
    }
    for name in ["INBOX", "Other"] {
        let mut mb = store.open_mailbox(name).unwrap();
        let uids: Vec<Uid> = mb.mails().unwrap().iter().map(|m| m.uid).collect();
        let mut t = mb.begin().unwrap();
        for (n, uid) in uids.iter().enumerate() {
            if n % 2 == 0 {
                t.expunge(*uid).unwrap();
            } else {
                t.update_flags(
                    *uid,
                    &FlagUpdate {
                        op: FlagOp::Add,
                        flags: Flags::FLAGGED,
                        keywords: vec![],
                    },
                )
                .unwrap();
            }
        }
        t.commit().unwrap();
    }
}

#[test]
fn purge_interrupted_after_each_step_then_rerun_loses_nothing() {
    // stop after the n-th durable step (Copied / MapUpdated / Unlinked of some file)
    for stop_at in 0..9 {
        let dir = tempfile::tempdir().unwrap();
        let root: PathBuf = dir.path().join("mdbox");
        build_store(&root);
        let files_before = storage_files(&root.join("storage"));
        assert!(
            files_before.len() >= 2,
            "the store should span several m.N files"
        );
        let expected = snapshot(&root);
        assert!(!expected.is_empty());
        let layout = {
            let loc = Location::parse(&format!("mdbox:{}", root.display()), None).unwrap();
            DboxStore::open(&loc, &StoreOptions::default())
                .unwrap()
                .layout()
                .clone()
        };
        let mut seen = 0;
        let mut steps: Vec<PurgeStep> = Vec::new();
        purge_with_hook(&layout, &mut |step| {
            steps.push(step);
            seen += 1;
            seen <= stop_at
        })
        .unwrap();
        // the full run has 3 steps per purged file (several files here)
        assert!(
            steps.len() == stop_at + 1 || (stop_at >= 6 && steps.len() >= 6),
            "stop {stop_at}: steps {steps:?}"
        );
        // the "crashed" state reads exactly as before
        assert_eq!(
            snapshot(&root),
            expected,
            "after stopping at step {stop_at}"
        );
        // re-run to the end
        mailsync_dbox::purge::purge(&layout).unwrap();
        assert_eq!(
            snapshot(&root),
            expected,
            "after re-running (stop {stop_at})"
        );
        // a third purge has nothing left to do
        let again = mailsync_dbox::purge::purge(&layout).unwrap();
        assert_eq!(again.messages_removed + again.files_purged, 0, "{again:?}");
        // every expunged message is gone from the files the map references; the live
        // ones are all there
        let map_files = referenced_files(&root);
        let referenced: Vec<u8> = map_files
            .iter()
            .flat_map(|f| std::fs::read(root.join("storage").join(f)).unwrap())
            .collect();
        for (_, _, _, _, bytes) in &expected {
            assert!(contains(&referenced, bytes));
        }
        let live: Vec<&Vec<u8>> = expected.iter().map(|e| &e.4).collect();
        for i in 0..12 {
            let m = msg(i);
            if !live.iter().any(|l| **l == m) {
                assert!(
                    !contains(&referenced, format!("MARKER-{i:03}-END").as_bytes()),
                    "expunged {i} still referenced (stop {stop_at}, steps {steps:?})"
                );
            }
        }
    }
}

/// The m.N files the map points into.
fn referenced_files(root: &Path) -> Vec<String> {
    let view = mailsync_index::View::open(&root.join("storage"), "dovecot.map.index").unwrap();
    let mut ids: Vec<u32> = view
        .messages()
        .filter_map(|m| m.ext("map"))
        .map(|d| u32::from_le_bytes(d[0..4].try_into().unwrap()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().map(|id| format!("m.{id}")).collect()
}

// ---- force-resync --------------------------------------------------------------------

const FIELDS: &str = "mailbox uid guid flags size.physical text";

fn fetch_fields(env: &Env, tool: &str, fields: &str) -> Vec<Vec<u8>> {
    let args = ["-f", "pager", "fetch", fields, "all"];
    let out = if tool == "doveadm" {
        env.doveadm(LOC, &args)
    } else {
        env.mailsync(LOC, &args)
    };
    sorted_pager_records(&clean(&format!("{tool} fetch"), out))
}

/// INBOX with 7 messages (one expunged, flags and keywords on others), copies of two in
/// Other, then one more INBOX message last in m.1. Returns Dovecot's view of it.
fn resync_store() -> (Env, Vec<Vec<u8>>) {
    let env = Env::new();
    clean("create", env.mailsync(LOC, &["mailbox", "create", "Other"]));
    for i in 0..7 {
        clean(
            "save",
            env.mailsync_stdin(LOC, &["save", "-m", "INBOX"], Some(&msg(i))),
        );
    }
    clean(
        "copy",
        env.mailsync(LOC, &["copy", "Other", "mailbox", "INBOX", "uid", "1:2"]),
    );
    clean(
        "flags",
        env.mailsync(
            LOC,
            &[
                "flags",
                "add",
                "\\Seen \\Flagged $Label1",
                "mailbox",
                "INBOX",
                "uid",
                "3,5",
            ],
        ),
    );
    clean(
        "flags other",
        env.mailsync(
            LOC,
            &["flags", "add", "\\Answered", "mailbox", "Other", "uid", "2"],
        ),
    );
    clean(
        "expunge",
        env.mailsync(LOC, &["expunge", "mailbox", "INBOX", "uid", "4"]),
    );
    clean(
        "save last",
        env.mailsync_stdin(LOC, &["save", "-m", "INBOX"], Some(&msg(7))),
    );
    let base = fetch_fields(&env, "doveadm", FIELDS);
    assert_eq!(base.len(), 7 + 2);
    assert_eq!(fetch_fields(&env, "mailsync", FIELDS), base);
    (env, base)
}

/// Runs `mailsync force-resync *`; returns its stderr (warnings about damage).
fn resync(env: &Env) -> String {
    env.chown_tree(&env.root.clone());
    let out = env.mailsync(LOC, &["force-resync", "*"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    harness::ok("mailsync force-resync", out);
    env.chown_tree(&env.root.clone());
    stderr
}

fn text(recs: &[Vec<u8>]) -> Vec<String> {
    recs.iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

fn assert_dovecot_log_clean(env: &Env) {
    let log = env.dovecot_log();
    assert!(
        !log.contains("rror") && !log.contains("arning") && !log.contains("orrupt"),
        "Dovecot log: {log}"
    );
}

#[test]
fn force_resync_rebuilds_a_deleted_map_index() {
    let (env, base) = resync_store();
    let storage = env.home.join("mdbox/storage");
    for f in [
        "dovecot.map.index",
        "dovecot.map.index.log",
        "dovecot.map.index.log.2",
    ] {
        let _ = std::fs::remove_file(storage.join(f));
    }
    assert_eq!(resync(&env), "");
    let after = fetch_fields(&env, "doveadm", FIELDS);
    assert_eq!(text(&fetch_fields(&env, "mailsync", FIELDS)), text(&after));
    // with no map left to say it was expunged, the expunged message 3 is restored, as
    // Dovecot's rebuild does (rebuild_handle_zero_refs), into its B mailbox INBOX with a
    // new UID; everything else is unchanged (UIDs, GUIDs, flags, keywords, bytes)
    let (restored, rest): (Vec<Vec<u8>>, Vec<Vec<u8>>) = after
        .into_iter()
        .partition(|r| contains(r, b"MARKER-003-END"));
    assert_eq!(text(&rest), text(&base));
    assert_eq!(restored.len(), 1);
    assert!(
        restored[0].starts_with(b"mailbox: INBOX\nuid: 9\n"),
        "{}",
        text(&restored)[0]
    );
    assert_dovecot_log_clean(&env);
    // Dovecot's own rebuild of what mailsync rebuilt changes nothing a client sees
    let before = fetch_fields(&env, "doveadm", FIELDS);
    harness::ok(
        "doveadm force-resync",
        env.doveadm(LOC, &["force-resync", "*"]),
    );
    assert_eq!(text(&fetch_fields(&env, "doveadm", FIELDS)), text(&before));
}

#[test]
fn force_resync_rebuilds_a_deleted_mailbox_index() {
    let (env, base) = resync_store();
    let dir = env.home.join("mdbox/mailboxes/Other/dbox-Mails");
    for f in [
        "dovecot.index",
        "dovecot.index.log",
        "dovecot.index.log.2",
        "dovecot.index.cache",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    assert_eq!(resync(&env), "");
    // INBOX keeps UIDs and flags exactly
    let inbox = |recs: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        recs.into_iter()
            .filter(|r| r.starts_with(b"mailbox: INBOX\n"))
            .collect()
    };
    assert_eq!(
        text(&inbox(fetch_fields(&env, "doveadm", FIELDS))),
        text(&inbox(base.clone()))
    );
    // Other's messages are back (by their B metadata), same GUIDs and bytes
    let light = "mailbox guid size.physical text";
    let after = fetch_fields(&env, "doveadm", light);
    assert_eq!(text(&after), text(&fetch_fields(&env, "mailsync", light)));
    let other: Vec<&Vec<u8>> = after
        .iter()
        .filter(|r| r.starts_with(b"mailbox: Other\n"))
        .collect();
    assert_eq!(other.len(), 2, "{:?}", text(&after));
    for i in [0, 1] {
        let marker = format!("MARKER-{i:03}-END");
        assert!(other.iter().any(|r| contains(r, marker.as_bytes())));
    }
    assert_dovecot_log_clean(&env);
}

#[test]
fn force_resync_keeps_messages_before_a_truncation() {
    let (env, base) = resync_store();
    let m1 = env.home.join("mdbox/storage/m.1");
    let len = std::fs::metadata(&m1).unwrap().len();
    // cut into the last message (msg 7, saved last)
    let f = std::fs::OpenOptions::new().write(true).open(&m1).unwrap();
    f.set_len(len - 20).unwrap();
    drop(f);
    let warnings = resync(&env);
    assert!(warnings.contains("m.1: damaged at offset"), "{warnings}");
    let expected: Vec<Vec<u8>> = base
        .iter()
        .filter(|r| !contains(r, b"MARKER-007-END"))
        .cloned()
        .collect();
    assert_eq!(expected.len(), base.len() - 1);
    assert_eq!(
        text(&fetch_fields(&env, "doveadm", FIELDS)),
        text(&expected)
    );
    assert_eq!(
        text(&fetch_fields(&env, "mailsync", FIELDS)),
        text(&expected)
    );
    assert_dovecot_log_clean(&env);
}

#[test]
fn force_resync_repairs_a_wrong_refcount_before_purge_could_lose_it() {
    let (env, base) = resync_store();
    let storage = env.home.join("mdbox/storage");
    // refcount 0 on map uid 1 (INBOX uid 1, live)
    let w = mailsync_index::IndexWriter::open(&storage, "dovecot.map.index");
    let mut t = w.begin();
    t.ext_rec_update("ref", 1, &0u16.to_le_bytes());
    t.commit().unwrap();
    let view = mailsync_index::View::open(&storage, "dovecot.map.index").unwrap();
    assert_eq!(view.message(1).unwrap().ext("ref"), Some(&[0u8, 0][..]));
    assert_eq!(resync(&env), "");
    let view = mailsync_index::View::open(&storage, "dovecot.map.index").unwrap();
    assert_eq!(view.message(1).unwrap().ext("ref"), Some(&[1u8, 0][..]));
    clean("mailsync purge", env.mailsync(LOC, &["purge"]));
    clean("doveadm purge", env.doveadm(LOC, &["purge"]));
    assert_eq!(text(&fetch_fields(&env, "doveadm", FIELDS)), text(&base));
    assert_eq!(text(&fetch_fields(&env, "mailsync", FIELDS)), text(&base));
    assert_dovecot_log_clean(&env);
}

const SDBOX: &str = "sdbox:~/sdbox";

fn sdbox_fetch(env: &Env, tool: &str, fields: &str) -> Vec<String> {
    let args = ["-f", "pager", "fetch", fields, "all"];
    let out = if tool == "doveadm" {
        env.doveadm(SDBOX, &args)
    } else {
        env.mailsync(SDBOX, &args)
    };
    text(&sorted_pager_records(&clean(&format!("{tool} fetch"), out)))
}

fn sdbox_store() -> Env {
    let env = Env::new();
    clean(
        "create",
        env.mailsync(SDBOX, &["mailbox", "create", "Other"]),
    );
    for i in 0..5 {
        clean(
            "save",
            env.mailsync_stdin(SDBOX, &["save", "-m", "INBOX"], Some(&msg(i))),
        );
    }
    clean(
        "save other",
        env.mailsync_stdin(SDBOX, &["save", "-m", "Other"], Some(&msg(9))),
    );
    clean(
        "flags",
        env.mailsync(
            SDBOX,
            &[
                "flags",
                "add",
                "\\Seen $Label1",
                "mailbox",
                "INBOX",
                "uid",
                "2,4",
            ],
        ),
    );
    clean(
        "expunge",
        env.mailsync(SDBOX, &["expunge", "mailbox", "INBOX", "uid", "3"]),
    );
    env
}

#[test]
fn sdbox_force_resync_rebuilds_a_deleted_index_keeping_uids() {
    let env = sdbox_store();
    let light = "mailbox uid guid size.physical text";
    let base = sdbox_fetch(&env, "doveadm", light);
    assert_eq!(base.len(), 5);
    let dir = env.home.join("sdbox/mailboxes/INBOX/dbox-Mails");
    for f in [
        "dovecot.index",
        "dovecot.index.log",
        "dovecot.index.log.2",
        "dovecot.index.cache",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    // without the index mailsync refuses the mailbox rather than reuse its UIDs
    assert!(!env
        .mailsync(SDBOX, &["fetch", "uid", "mailbox", "INBOX", "all"])
        .status
        .success());
    env.chown_tree(&env.root.clone());
    clean(
        "force-resync",
        env.mailsync(SDBOX, &["force-resync", "INBOX"]),
    );
    env.chown_tree(&env.root.clone());
    assert_eq!(sdbox_fetch(&env, "mailsync", light), base);
    assert_eq!(sdbox_fetch(&env, "doveadm", light), base);
    assert_dovecot_log_clean(&env);
}

#[test]
fn sdbox_force_resync_adopts_an_unindexed_file_and_keeps_flags() {
    let env = sdbox_store();
    let base = sdbox_fetch(&env, "doveadm", FIELDS);
    // a u.N a crashed save left above NEXTUID (here: Other's file moved into INBOX)
    let other = env.home.join("sdbox/mailboxes/Other/dbox-Mails/u.1");
    let inbox = env.home.join("sdbox/mailboxes/INBOX/dbox-Mails/u.50");
    std::fs::rename(&other, &inbox).unwrap();
    env.chown_tree(&env.root.clone());
    clean("force-resync", env.mailsync(SDBOX, &["force-resync", "*"]));
    env.chown_tree(&env.root.clone());
    let after = sdbox_fetch(&env, "doveadm", FIELDS);
    assert_eq!(sdbox_fetch(&env, "mailsync", FIELDS), after);
    let (adopted, rest): (Vec<String>, Vec<String>) = after
        .into_iter()
        .partition(|r| r.contains("MARKER-009-END"));
    assert_eq!(adopted.len(), 1);
    assert!(
        adopted[0].starts_with("mailbox: INBOX\nuid: 50\n"),
        "{}",
        adopted[0]
    );
    let expected: Vec<String> = base
        .into_iter()
        .filter(|r| !r.contains("MARKER-009-END"))
        .collect();
    // flags and keywords of the other messages survive
    assert_eq!(rest, expected);
    assert!(rest.iter().any(|r| r.contains("$Label1")));
    assert_dovecot_log_clean(&env);
}

// ---- kill -9 during save ---------------------------------------------------------------

/// `mailsync save -m INBOX` on `loc`, spawned as the owner of the test tree (as the
/// harness runs mailsync), stdin piped.
fn spawn_save(env: &Env, loc: &str) -> std::process::Child {
    use std::os::unix::fs::MetadataExt;
    let bin = env!("CARGO_BIN_EXE_mailsync");
    let meta = std::fs::metadata(&env.home).unwrap();
    let running_as_root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let mut cmd = if running_as_root {
        let mut c = std::process::Command::new("setpriv");
        c.arg(format!("--reuid={}", meta.uid()))
            .arg(format!("--regid={}", meta.gid()))
            .arg("--clear-groups")
            .arg("--")
            .arg(bin);
        c
    } else {
        std::process::Command::new(bin)
    };
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("USER", harness::USER)
        .env("HOME", &env.home)
        .arg("-c")
        .arg(&env.conf)
        .arg("-o")
        .arg(format!("mail_location={loc}"))
        .args(["save", "-m", "INBOX"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd.spawn().unwrap()
}

/// Bodies of every message mailsync sees in INBOX, with their count.
fn inbox_markers(env: &Env, loc: &str) -> BTreeMap<String, usize> {
    let args = ["-f", "pager", "fetch", "text", "mailbox", "INBOX", "all"];
    let mut out = env.mailsync(loc, &args);
    if String::from_utf8_lossy(&out.stderr).contains("needs force-resync") {
        // what Dovecot would do by itself: rebuild
        env.chown_tree(&env.root.clone());
        harness::ok("force-resync", env.mailsync(loc, &["force-resync", "*"]));
        out = env.mailsync(loc, &args);
    }
    let body = String::from_utf8_lossy(&harness::ok("fetch", out)).into_owned();
    let mut counts = BTreeMap::new();
    for (p, _) in body.match_indices("MARKER-") {
        *counts.entry(body[p..p + 10].to_string()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn kill_9_during_mdbox_save_then_rerun_loses_and_duplicates_nothing() {
    let env = Env::new();
    // the store, its map and INBOX exist before the first kill (a kill while the first
    // open creates INBOX's index can leave it without `mdbox-hdr`: "needs force-resync",
    // which the recovery below would repair; these trials are about saves)
    clean(
        "open INBOX",
        env.mailsync(LOC, &["fetch", "uid", "mailbox", "INBOX", "all"]),
    );
    // a cheap xorshift, seeded from the clock: the kill points differ per run
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut killed_mid_way = 0;
    const TRIALS: usize = 60;
    for i in 0..TRIALS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = std::time::Duration::from_micros(seed % 25_000);
        let mut child = spawn_save(&env, LOC);
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all(&msg(i));
        }
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let marker = format!("MARKER-{i:03}");
        let seen = inbox_markers(&env, LOC);
        let n = seen.get(&marker).copied().unwrap_or(0);
        assert!(n <= 1, "trial {i}: message saved twice: {seen:?}");
        if n == 0 {
            if !status.success() {
                killed_mid_way += 1;
            }
            // re-run the save, to completion
            harness::ok(
                "save again",
                env.mailsync_stdin(LOC, &["save", "-m", "INBOX"], Some(&msg(i))),
            );
        }
        let seen = inbox_markers(&env, LOC);
        for j in 0..=i {
            let m = format!("MARKER-{j:03}");
            assert_eq!(
                seen.get(&m),
                Some(&1),
                "trial {i}: {m} lost or duplicated: {seen:?}"
            );
        }
        assert_eq!(seen.len(), i + 1);
    }
    assert!(killed_mid_way > 0, "no save was ever interrupted");
    // Dovecot sees the same INBOX
    let dove = env.doveadm(
        LOC,
        &["-f", "pager", "fetch", "text", "mailbox", "INBOX", "all"],
    );
    let dove = String::from_utf8_lossy(&harness::ok("doveadm fetch", dove)).into_owned();
    for i in 0..TRIALS {
        let m = format!("MARKER-{i:03}");
        assert_eq!(dove.matches(&m).count(), 1, "{m} in Dovecot");
    }
    assert_eq!(dove.matches("MARKER-").count(), TRIALS);
}

// ---- kill -9 during purge ----------------------------------------------------------------

#[test]
fn kill_9_during_purge_then_rerun_loses_and_duplicates_nothing() {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut interrupted = 0;
    let mut mid_purge = 0;
    for trial in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let root: PathBuf = dir.path().join("mdbox");
        build_store(&root);
        let expected = snapshot(&root);
        let files_before: Vec<String> = storage_files(&root.join("storage")).into_keys().collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = std::time::Duration::from_micros(seed % 15_000);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailsync"))
            .env_clear()
            .env("USER", "purger")
            .env("HOME", dir.path())
            .arg("-o")
            .arg(format!("mail_location=mdbox:{}", root.display()))
            .arg("purge")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        if !child.wait().unwrap().success() {
            interrupted += 1;
        }
        assert_eq!(snapshot(&root), expected, "trial {trial}: after the kill");
        let files_killed: Vec<String> = storage_files(&root.join("storage")).into_keys().collect();
        let layout = {
            let loc = Location::parse(&format!("mdbox:{}", root.display()), None).unwrap();
            DboxStore::open(&loc, &StoreOptions::default())
                .unwrap()
                .layout()
                .clone()
        };
        mailsync_dbox::purge::purge(&layout).unwrap();
        assert_eq!(snapshot(&root), expected, "trial {trial}: after re-running");
        // killed between the first and the last step of the purge
        let files_after: Vec<String> = storage_files(&root.join("storage")).into_keys().collect();
        if files_killed != files_before && files_killed != files_after {
            mid_purge += 1;
        }
        let referenced: Vec<u8> = referenced_files(&root)
            .iter()
            .flat_map(|f| std::fs::read(root.join("storage").join(f)).unwrap())
            .collect();
        for i in 0..12 {
            let live = expected.iter().any(|e| e.4 == msg(i));
            let marker = format!("MARKER-{i:03}-END");
            assert_eq!(
                contains(&referenced, marker.as_bytes()),
                live,
                "trial {trial}: message {i} (live: {live})"
            );
        }
    }
    assert!(interrupted > 0, "no purge was ever interrupted");
    // about a third of the kills land between the purge's first and last file change
    assert!(
        mid_purge > 0,
        "no kill landed inside a purge ({interrupted} killed)"
    );
}

/// A message header whose magic is damaged (`01 02 'N' ' '` no longer there): the rebuild
/// keeps every message before it, leaves the file's bytes alone, and Dovecot agrees.
#[test]
fn force_resync_survives_a_bad_message_magic() {
    let (env, base) = resync_store();
    let m1 = env.home.join("mdbox/storage/m.1");
    let mut data = std::fs::read(&m1).unwrap();
    // the last message (msg 7, saved last) begins at the last message-header magic
    let magic = b"\x01\x02N ";
    let at = data
        .windows(magic.len())
        .rposition(|w| w == magic)
        .expect("message header magic in m.1");
    data[at] = b'X';
    std::fs::write(&m1, &data).unwrap();
    let warnings = resync(&env);
    assert!(
        warnings.contains("m.1"),
        "the damage is reported: {warnings}"
    );
    assert_eq!(std::fs::read(&m1).unwrap(), data, "file bytes untouched");
    let expected: Vec<Vec<u8>> = base
        .iter()
        .filter(|r| !contains(r, b"MARKER-007-END"))
        .cloned()
        .collect();
    assert_eq!(
        text(&fetch_fields(&env, "doveadm", FIELDS)),
        text(&expected)
    );
    assert_eq!(
        text(&fetch_fields(&env, "mailsync", FIELDS)),
        text(&expected)
    );
    assert_dovecot_log_clean(&env);
}
