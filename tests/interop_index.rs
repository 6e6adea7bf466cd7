//! mailsync and the real Dovecot 2.3 sharing one Maildir's dovecot.index + dovecot.index.log
//! (issue #3, points 2 and 3; formats/maildir/FORMAT.md §6).
//!
//! After mailsync changes a Maildir, Dovecot must read the index without complaint and find
//! nothing left to fix, and both tools must report the same flags, modseqs, HIGHESTMODSEQ
//! and \Recent; the tools taking turns must lose nothing.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use harness::{clean, ok, Env};

const LOC: &str = "maildir:~/Maildir";

fn msg(subject: &str) -> Vec<u8> {
    format!("Subject: {subject}\nMessage-ID: <{subject}@x>\n\nbody of {subject}\n").into_bytes()
}

fn maildir(env: &Env) -> PathBuf {
    env.home.join("Maildir")
}

fn doveadm(env: &Env, args: &[&str]) -> String {
    String::from_utf8(clean(&format!("doveadm {args:?}"), env.doveadm(LOC, args))).unwrap()
}

fn mailsync(env: &Env, args: &[&str]) -> String {
    String::from_utf8(clean(
        &format!("mailsync {args:?}"),
        env.mailsync(LOC, args),
    ))
    .unwrap()
}

fn doveadm_save(env: &Env, subject: &str) {
    clean(
        "doveadm save",
        env.doveadm_stdin(LOC, &["save"], Some(&msg(subject))),
    );
}

fn mailsync_save(env: &Env, subject: &str) {
    clean(
        "mailsync save",
        env.mailsync_stdin(LOC, &["save"], Some(&msg(subject))),
    );
}

const FETCH: [&str; 7] = [
    "-f",
    "tab",
    "fetch",
    "uid flags modseq hdr.subject",
    "mailbox",
    "INBOX",
    "all",
];
const STATUS: [&str; 5] = [
    "-f",
    "tab",
    "mailbox",
    "status",
    "messages recent uidnext uidvalidity unseen highestmodseq",
];

/// Both tools' `fetch uid flags modseq` and `mailbox status` of INBOX, asserted equal.
/// doveadm reads first (its own sync must find nothing to change), then mailsync.
fn assert_same_view(env: &Env, when: &str) -> String {
    let mut status_args = STATUS.to_vec();
    status_args.push("INBOX");
    let d_fetch = doveadm(env, &FETCH);
    let d_status = doveadm(env, &status_args);
    let m_fetch = mailsync(env, &FETCH);
    let m_status = mailsync(env, &status_args);
    assert_eq!(d_fetch, m_fetch, "fetch differs {when}");
    assert_eq!(d_status, m_status, "status differs {when}");
    d_fetch
}

fn highest_modseq(env: &Env) -> u64 {
    let out = doveadm(env, &["mailbox", "status", "highestmodseq", "INBOX"]);
    out.trim()
        .strip_prefix("INBOX highestmodseq=")
        .unwrap_or_else(|| panic!("unexpected status line {out:?}"))
        .parse()
        .unwrap()
}

/// Dovecot must never have found a reason to rebuild, reset or renumber.
fn assert_dovecot_content(env: &Env) {
    let log = env.dovecot_log();
    for bad in [
        "orrupt",
        "rebuild",
        "UIDVALIDITY changed",
        "reappeared",
        "Error",
        "Warning",
        "Panic",
    ] {
        assert!(!log.contains(bad), "Dovecot logged {bad:?}:\n{log}");
    }
}

/// `doveadm dump` of the log and of the index: no error, and the records as text.
fn dump_log(env: &Env, dir: &Path) -> String {
    let log = dir.join("dovecot.index.log");
    let text = doveadm(env, &["dump", "-t", "log", log.to_str().unwrap()]);
    assert!(!text.contains("rror"), "doveadm dump of the log:\n{text}");
    let index = doveadm(env, &["dump", "-t", "index", dir.to_str().unwrap()]);
    assert!(index.contains("-- INDEX:"), "{index}");
    assert!(
        !index.contains("rror"),
        "doveadm dump of the index:\n{index}"
    );
    text
}

/// The log records that change messages (type lines of `doveadm dump -t log`).
fn message_records(dump: &str) -> Vec<String> {
    dump.lines()
        .filter(|l| l.starts_with("record: "))
        .filter(|l| {
            ["append", "flag-update", "keyword-update", "expunge"]
                .iter()
                .any(|k| l.contains(&format!("type={k}")))
        })
        .map(|l| l.to_string())
        .collect()
}

fn index_id(dump: &str) -> String {
    dump.lines()
        .find(|l| l.starts_with("index id = "))
        .unwrap_or_else(|| panic!("no index id in\n{dump}"))
        .to_string()
}

#[test]
fn mailsync_changes_are_logged_so_dovecot_has_nothing_to_fix() {
    let env = Env::new();
    for s in ["one", "two", "three", "four"] {
        mailsync_save(&env, s);
    }
    mailsync(
        &env,
        &[
            "flags",
            "add",
            "\\Seen $Label1",
            "mailbox",
            "INBOX",
            "uid",
            "1",
        ],
    );
    mailsync(
        &env,
        &[
            "flags",
            "add",
            "\\Flagged work",
            "mailbox",
            "INBOX",
            "uid",
            "2:3",
        ],
    );
    mailsync(
        &env,
        &["flags", "remove", "$Label1", "mailbox", "INBOX", "uid", "1"],
    );
    mailsync(
        &env,
        &[
            "flags",
            "replace",
            "\\Answered",
            "mailbox",
            "INBOX",
            "uid",
            "3",
        ],
    );
    mailsync(&env, &["expunge", "mailbox", "INBOX", "uid", "4"]);

    let dir = maildir(&env);
    let before = dump_log(&env, &dir);
    // Every change mailsync made is an EXTERNAL record (the files changed first).
    let mine = message_records(&before);
    for kind in ["append", "flag-update", "keyword-update", "expunge-guid"] {
        assert!(
            mine.iter()
                .any(|l| l.contains(&format!("type={kind} (ext)"))),
            "no external {kind} record:\n{before}"
        );
    }
    assert!(
        mine.iter().all(|l| l.contains("(ext)")),
        "a change was logged as a request:\n{before}"
    );

    let fetched = assert_same_view(&env, "after mailsync's changes");
    assert!(fetched.contains("1\t\\Seen \\Recent\t"), "{fetched}");
    assert!(
        fetched.contains("3\t\\Answered \\Recent\t"),
        "replace dropped \\Flagged and work: {fetched}"
    );
    assert!(
        !fetched.contains("\nfour") && !fetched.contains("\t4\t"),
        "{fetched}"
    );

    // Dovecot synced the mailbox and wrote no message change of its own: what mailsync
    // logged is what its maildir sync would have logged. Same index, no reset.
    let after = dump_log(&env, &dir);
    assert_eq!(
        message_records(&after),
        mine,
        "Dovecot had to fix the index"
    );
    assert_eq!(index_id(&after), index_id(&before));
    assert!(after.contains("prev file = 0/0"), "{after}");
    assert_dovecot_content(&env);

    // mailsync's own dump prints the log as doveadm does.
    let log = dir.join("dovecot.index.log");
    let d = doveadm(&env, &["dump", "-t", "log", log.to_str().unwrap()]);
    let m = mailsync(&env, &["dump", "-t", "log", log.to_str().unwrap()]);
    assert_eq!(d, m);
    // Like doveadm's, it needs no user, home or mail location.
    let out = Command::new(env!("CARGO_BIN_EXE_mailsync"))
        .env_clear()
        .env("TZ", "UTC")
        .arg("dump")
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("Detected file type: log\n{d}")
    );
}

#[test]
fn dovecot_and_mailsync_take_turns_and_agree_on_every_modseq() {
    let env = Env::new();
    let mut expected: Vec<String> = Vec::new();
    let mut last = 0u64;
    let step = |what: &str, env: &Env, last: &mut u64| {
        assert_same_view(env, what);
        let h = highest_modseq(env);
        assert!(
            h > *last,
            "HIGHESTMODSEQ did not grow after {what}: {last} -> {h}"
        );
        *last = h;
    };
    for i in 0..3 {
        doveadm_save(&env, &format!("d{i}"));
        expected.push(format!("d{i}"));
        step("doveadm save", &env, &mut last);
        mailsync_save(&env, &format!("m{i}"));
        expected.push(format!("m{i}"));
        step("mailsync save", &env, &mut last);
        doveadm(
            &env,
            &["flags", "add", "\\Seen", "mailbox", "INBOX", "uid", "1:*"],
        );
        step("doveadm flags", &env, &mut last);
        mailsync(
            &env,
            &[
                "flags",
                "add",
                &format!("\\Flagged k{i}"),
                "mailbox",
                "INBOX",
                "all",
            ],
        );
        step("mailsync flags", &env, &mut last);
        mailsync(
            &env,
            &["flags", "remove", "\\Seen", "mailbox", "INBOX", "uid", "1"],
        );
        step("mailsync flags remove", &env, &mut last);
        doveadm(
            &env,
            &[
                "flags",
                "remove",
                &format!("k{i}"),
                "mailbox",
                "INBOX",
                "uid",
                "2",
            ],
        );
        step("doveadm flags remove", &env, &mut last);
    }
    // Expunges from both sides.
    doveadm(&env, &["expunge", "mailbox", "INBOX", "uid", "1"]);
    expected.retain(|s| s != "d0");
    step("doveadm expunge", &env, &mut last);
    mailsync(&env, &["expunge", "mailbox", "INBOX", "uid", "2"]);
    expected.retain(|s| s != "m0");
    step("mailsync expunge", &env, &mut last);

    let fetched = assert_same_view(&env, "at the end");
    let subjects: Vec<&str> = fetched
        .lines()
        .skip(1)
        .map(|l| l.rsplit('\t').next().unwrap())
        .collect();
    assert_eq!(subjects, expected, "messages lost or doubled");
    // Modseqs are strictly increasing over the history: no two changes share one.
    let dump = dump_log(&env, &maildir(&env));
    let mut seen: Vec<u64> = dump
        .lines()
        .filter_map(|l| l.split(", modseq=").nth(1))
        .map(|m| m.trim().parse().unwrap())
        .collect();
    let n = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), n, "a modseq was used twice:\n{dump}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_dovecot_content(&env);
}

#[test]
fn a_change_made_without_dovecot_is_logged_by_mailsync_as_dovecot_would_log_it() {
    // Store A: mailsync notices the external changes; store B, a copy: Dovecot does.
    // Both must end with the same flags and the same modseqs.
    let env = Env::new();
    for s in ["a", "b", "c"] {
        mailsync_save(&env, s);
    }
    mailsync(
        &env,
        &["flags", "add", "$Work", "mailbox", "INBOX", "uid", "3"],
    );
    let a = maildir(&env);
    let b = env.home.join("Copy");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(st.success());
    let loc_b = "maildir:~/Copy";
    // Another MUA (no Dovecot, no mailsync): message 1 read and moved to cur/, message 2
    // deleted, message 3's keyword dropped, a new delivery into new/.
    for root in [&a, &b] {
        let (dir1, name1) = file_of(root, "a");
        std::fs::rename(
            root.join(dir1).join(&name1),
            root.join("cur").join(format!("{name1}:2,S")),
        )
        .unwrap();
        let (dir2, name2) = file_of(root, "b");
        std::fs::remove_file(root.join(dir2).join(name2)).unwrap();
        let (dir3, name3) = file_of(root, "c");
        assert!(name3.ends_with(":2,a"), "keyword letter a: {name3}");
        std::fs::rename(
            root.join(dir3).join(&name3),
            root.join(dir3).join(name3.trim_end_matches('a')),
        )
        .unwrap();
        std::fs::write(root.join("new/1700000000.M1P1.mua"), msg("delivered")).unwrap();
    }
    env.chown_tree(&env.home);
    // A: mailsync syncs first; B: Dovecot does.
    let m_a = mailsync(&env, &FETCH);
    let d_b = String::from_utf8(clean("doveadm B", env.doveadm(loc_b, &FETCH))).unwrap();
    assert_eq!(
        m_a, d_b,
        "mailsync's sync logged something else than Dovecot's"
    );
    let d_a = doveadm(&env, &FETCH);
    assert_eq!(d_a, m_a);
    assert!(m_a.contains("\\Seen"), "{m_a}");
    assert!(!m_a.contains("$Work"), "{m_a}");
    assert!(m_a.contains("delivered"), "{m_a}");
    let dump = dump_log(&env, &a);
    let recs = message_records(&dump);
    // mailsync's sync wrote the EXTERNAL records Dovecot would have written.
    for kind in ["append", "flag-update", "keyword-update", "expunge-guid"] {
        assert!(
            recs.iter()
                .filter(|l| l.contains(&format!("type={kind} (ext)")))
                .count()
                >= 1,
            "{kind} missing:\n{dump}"
        );
    }
    assert_dovecot_content(&env);
}

/// The directory (new or cur) and name of the message file with this subject.
fn file_of(root: &Path, subject: &str) -> (&'static str, String) {
    let needle = format!("Subject: {subject}\n");
    for dir in ["new", "cur"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let e = e.unwrap();
            if std::fs::read(e.path())
                .unwrap()
                .starts_with(needle.as_bytes())
            {
                return (dir, e.file_name().into_string().unwrap());
            }
        }
    }
    panic!("no message {subject} in {}", root.display());
}

/// A read-write IMAP SELECT through Dovecot's imap binary (preauthenticated on stdin), which
/// takes \Recent away (first_recent_uid = next_uid) and moves new/ files to cur/.
fn imap_select(env: &Env) {
    let mut cmd = match env.run_as {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg("/usr/lib/dovecot/imap");
            c
        }
        None => Command::new("/usr/lib/dovecot/imap"),
    };
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("USER", harness::USER)
        .env("HOME", &env.home)
        .arg("-c")
        .arg(&env.conf)
        .arg("-o")
        .arg(format!("mail_location={LOC}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run /usr/lib/dovecot/imap");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a SELECT INBOX\r\nb LOGOUT\r\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("a OK [READ-WRITE]"),
        "IMAP SELECT failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn recent_is_what_doveadm_shows_after_an_imap_session_took_it() {
    let env = Env::new();
    mailsync_save(&env, "one");
    doveadm_save(&env, "two");
    let before = assert_same_view(&env, "before SELECT");
    assert_eq!(before.matches("\\Recent").count(), 2, "{before}");
    imap_select(&env);
    let after = assert_same_view(&env, "after SELECT");
    assert!(!after.contains("\\Recent"), "{after}");
    mailsync_save(&env, "three");
    doveadm_save(&env, "four");
    let last = assert_same_view(&env, "after new saves");
    let recent: Vec<&str> = last
        .lines()
        .filter(|l| l.contains("\\Recent"))
        .map(|l| l.rsplit('\t').next().unwrap())
        .collect();
    assert_eq!(recent, vec!["three", "four"], "{last}");
    let status = ok(
        "mailsync status",
        env.mailsync(LOC, &["mailbox", "status", "recent", "INBOX"]),
    );
    assert_eq!(String::from_utf8(status).unwrap(), "INBOX recent=2\n");
    assert_dovecot_content(&env);
}

#[test]
fn the_index_directory_option_is_shared_with_dovecot() {
    let env = Env::new();
    let loc = "maildir:~/Maildir:INDEX=~/idx";
    clean(
        "mailsync save",
        env.mailsync_stdin(loc, &["save"], Some(&msg("one"))),
    );
    clean(
        "mailsync flags",
        env.mailsync(loc, &["flags", "add", "\\Seen", "mailbox", "INBOX", "all"]),
    );
    assert!(env.home.join("idx/.INBOX/dovecot.index.log").exists());
    assert!(!maildir(&env).join("dovecot.index.log").exists());
    let d = clean("doveadm fetch", env.doveadm(loc, &FETCH));
    let m = clean("mailsync fetch", env.mailsync(loc, &FETCH));
    assert_eq!(d, m);
    let text = String::from_utf8(d).unwrap();
    assert!(text.contains("1\t\\Seen \\Recent\t"), "{text}");
    assert_dovecot_content(&env);
}

#[test]
fn dovecot_and_mailsync_changing_one_maildir_at_once_stay_consistent() {
    let env = Env::new();
    for i in 0..6 {
        mailsync_save(&env, &format!("base{i}"));
    }
    std::thread::scope(|s| {
        let e = &env;
        s.spawn(move || {
            for i in 0..8 {
                doveadm_save(e, &format!("d{i}"));
                doveadm(
                    e,
                    &["flags", "add", "\\Seen", "mailbox", "INBOX", "uid", "1:*"],
                );
                doveadm(
                    e,
                    &["flags", "remove", "\\Seen", "mailbox", "INBOX", "uid", "2"],
                );
            }
            doveadm(e, &["expunge", "mailbox", "INBOX", "uid", "3"]);
        });
        s.spawn(move || {
            for i in 0..8 {
                mailsync_save(e, &format!("m{i}"));
                mailsync(
                    e,
                    &[
                        "flags",
                        "add",
                        &format!("\\Flagged k{i}"),
                        "mailbox",
                        "INBOX",
                        "all",
                    ],
                );
                mailsync(
                    e,
                    &[
                        "flags",
                        "remove",
                        "\\Flagged",
                        "mailbox",
                        "INBOX",
                        "uid",
                        "4",
                    ],
                );
            }
            mailsync(e, &["expunge", "mailbox", "INBOX", "uid", "5"]);
        });
    });
    let fetched = assert_same_view(&env, "after concurrent changes");
    let subjects: Vec<&str> = fetched
        .lines()
        .skip(1)
        .map(|l| l.rsplit('\t').next().unwrap())
        .collect();
    assert_eq!(subjects.len(), 6 - 2 + 16, "{fetched}");
    for i in 0..8 {
        assert!(subjects.contains(&format!("d{i}").as_str()), "{fetched}");
        assert!(subjects.contains(&format!("m{i}").as_str()), "{fetched}");
    }
    // A last look by Dovecot finds nothing to fix, and mailsync still agrees.
    let dir = maildir(&env);
    let before = message_records(&dump_log(&env, &dir));
    assert_same_view(&env, "once more");
    assert_eq!(message_records(&dump_log(&env, &dir)), before);
    assert_dovecot_content(&env);
}

#[test]
fn a_flag_change_dovecot_logged_but_did_not_apply_yet_is_kept() {
    let env = Env::new();
    mailsync_save(&env, "one");
    mailsync_save(&env, "two");
    // Dovecot's `flags add` logs this request first and renames the file in its sync; here
    // the sync hasn't happened yet (as when the doveadm process died in between).
    let w = mailsync_index::IndexWriter::open(&maildir(&env), "dovecot.index");
    let mut t = w.begin();
    t.flags(2, 2, 0x08, 0);
    t.commit().unwrap();
    env.chown_tree(&env.home);
    // mailsync neither reverts it nor hides it...
    let m = mailsync(&env, &FETCH);
    assert!(m.contains("2\t\\Seen \\Recent\t"), "{m}");
    // ...and Dovecot, applying it now, reports the same thing (same modseq).
    let d = doveadm(&env, &FETCH);
    assert_eq!(d, m);
    let (dir, name) = file_of(&maildir(&env), "two");
    assert!(name.ends_with(":2,S"), "Dovecot renamed {dir}/{name}");
    assert_same_view(&env, "after Dovecot applied its change");
    assert_dovecot_content(&env);
}

#[test]
fn mailsync_follows_dovecot_rotating_the_log_at_every_change() {
    // Dovecot rotates dovecot.index.log (to .log.2, writing dovecot.index) at every sync.
    let env = Env::with_config(
        "mail_index_log_rotate_min_size = 1\nmail_index_log_rotate_max_size = 1\n\
         mail_index_log_rotate_min_age = 0\n",
    );
    for i in 0..3 {
        doveadm_save(&env, &format!("d{i}"));
        mailsync_save(&env, &format!("m{i}"));
        doveadm(
            &env,
            &["flags", "add", "\\Seen", "mailbox", "INBOX", "uid", "1:*"],
        );
        mailsync(
            &env,
            &["flags", "add", &format!("k{i}"), "mailbox", "INBOX", "all"],
        );
        mailsync(&env, &["expunge", "mailbox", "INBOX", "uid", "1"]);
        assert_same_view(&env, &format!("round {i}"));
    }
    let dir = maildir(&env);
    assert!(dir.join("dovecot.index.log.2").exists(), "Dovecot rotated");
    let dump = dump_log(&env, &dir);
    assert!(
        !dump.contains("prev file = 0/0"),
        "rotated logs continue: {dump}"
    );
    let fetched = assert_same_view(&env, "at the end");
    assert_eq!(fetched.lines().count(), 1 + 6 - 1, "{fetched}");
    assert_dovecot_content(&env);
}

/// A mailbox with a long history (150,000 messages delivered and expunged again, logged as
/// a backend logs them: a log of several MiB). mailsync's next change ends the way Dovecot's
/// maildir sync ends (mail_index_sync_commit): the tail moves, the big log is rotated to
/// `dovecot.index.log.2` and `dovecot.index` is written. Dovecot then reads the mailbox with
/// nothing to fix, and both tools agree.
#[test]
fn a_long_log_is_rotated_by_mailsync_as_dovecot_would() {
    use mailsync_index::format::index::rec_flag;
    use mailsync_index::locked_commit::commit_locked;
    use mailsync_index::IndexWriter;

    let env = Env::new();
    mailsync_save(&env, "first");
    let dir = maildir(&env);
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
    env.chown_tree(&dir);
    assert!(
        std::fs::metadata(dir.join("dovecot.index.log"))
            .unwrap()
            .len()
            > 1024 * 1024
    );
    assert!(!dir.join("dovecot.index.log.2").exists());

    mailsync_save(&env, "second");
    assert!(
        dir.join("dovecot.index.log.2").exists(),
        "mailsync rotated the big log"
    );
    assert!(
        dir.join("dovecot.index").exists(),
        "and wrote dovecot.index"
    );
    assert!(
        std::fs::metadata(dir.join("dovecot.index.log"))
            .unwrap()
            .len()
            < 4096
    );
    let fetch = assert_same_view(&env, "after the rotation");
    assert!(
        fetch.contains("\tfirst\n") && fetch.contains("\tsecond\n"),
        "{fetch}"
    );
    assert!(
        fetch.contains("150002\t"),
        "second got a UID above the history: {fetch}"
    );
    doveadm_save(&env, "third");
    assert_same_view(&env, "after Dovecot saved into the rotated log");
    assert_dovecot_content(&env);
}
