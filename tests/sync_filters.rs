//! `sync`/`backup` options that narrow a run: `-I`, `-O`, `-t`, `-e` (which missing mails
//! are saved), `-g`, `-m ""`/`-g ""`, `-n`, and the per-user lock `-l`. Each scenario runs
//! the real `doveadm` and `mailsync` on identical copies of the same stores and compares
//! the results, plus direct assertions of what each option must (not) copy.

mod harness;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use harness::Env;

const DAY: i64 = 86_400;
/// 2020-01-10, 2021-06-01, 2022-03-01, 2022-09-01, 2023-01-01 (UTC midnights).
const JAN_2020: i64 = 1_578_614_400;
const JUN_2021: i64 = 1_622_505_600;
const MAR_2022: i64 = 1_646_092_800;
const SEP_2022: i64 = 1_661_990_400;
const JAN_2023: i64 = 1_672_531_200;

fn loc(env: &Env, name: &str) -> String {
    format!("maildir:{}", env.root.join(name).display())
}

/// Writes a message file with a fixed received date (a Maildir's received date is the
/// file's mtime) before either tool has seen the store, so both read the same dates.
fn put(dir: &Path, sub: &str, name: &str, body: &str, received: i64) {
    let path = dir.join(sub).join(name);
    std::fs::write(&path, body).unwrap();
    let st = Command::new("touch")
        .arg("-d")
        .arg(format!("@{received}"))
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
}

fn maildir(dir: &Path) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
}

fn big_body() -> String {
    format!(
        "From: big@example\nSubject: big\nMessage-ID: <big@example>\n\n{}\n",
        "x".repeat(3000)
    )
}

/// The source A: INBOX with a small plain mail (2020), a big one (2021), a \Seen one
/// (2022), one with the keyword `Work` (Sep 2022); Box with one mail (2023).
fn source(env: &Env) {
    let a = env.root.join("A");
    maildir(&a);
    std::fs::write(a.join("dovecot-keywords"), "0 Work\n").unwrap();
    put(
        &a,
        "cur",
        "1000000001.M1P1.host:2,",
        "From: a@example\nSubject: small\nMessage-ID: <small@example>\n\nsmall\n",
        JAN_2020,
    );
    put(&a, "cur", "1000000002.M2P1.host:2,", &big_body(), JUN_2021);
    put(
        &a,
        "cur",
        "1000000003.M3P1.host:2,S",
        "From: a@example\nSubject: seen\nMessage-ID: <seen@example>\n\nseen\n",
        MAR_2022,
    );
    put(
        &a,
        "cur",
        "1000000004.M4P1.host:2,a",
        "From: a@example\nSubject: work\nMessage-ID: <work@example>\n\nwork\n",
        SEP_2022,
    );
    let b = a.join(".Box");
    maildir(&b);
    std::fs::write(b.join("maildirfolder"), "").unwrap();
    put(
        &b,
        "cur",
        "1000000005.M5P1.host:2,",
        "From: a@example\nSubject: box\nMessage-ID: <box@example>\n\nbox\n",
        JAN_2023,
    );
    env.chown_tree(&env.root);
}

/// Mailbox names and (mailbox, uid, guid, flags without \Recent) as doveadm sees them.
fn snapshot(env: &Env, location: &str) -> String {
    if !Path::new(location.trim_start_matches("maildir:")).exists() {
        return "(no store)".into();
    }
    let list = harness::ok(
        "doveadm mailbox list",
        env.doveadm(location, &["mailbox", "list"]),
    );
    format!(
        "{}\n--\n{}",
        harness::sorted_lines(&list),
        mails(env, location).join("\n")
    )
}

/// "mailbox uid guid flags" rows, sorted, \Recent dropped.
fn mails(env: &Env, location: &str) -> Vec<String> {
    let fetch = harness::ok(
        "doveadm fetch",
        env.doveadm(
            location,
            &["-f", "tab", "fetch", "mailbox uid guid flags", "all"],
        ),
    );
    let mut rows: Vec<String> = String::from_utf8_lossy(&fetch)
        .lines()
        .skip(1)
        .map(|l| {
            l.split('\t')
                .map(|c| {
                    c.split(' ')
                        .filter(|f| *f != "\\Recent")
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect();
    rows.sort();
    rows
}

/// The GUIDs (Maildir base names) the store holds in `mailbox`.
fn guids_in(env: &Env, location: &str, mailbox: &str) -> Vec<String> {
    mails(env, location)
        .iter()
        .filter_map(|r| {
            let c: Vec<&str> = r.split('\t').collect();
            (c[0] == mailbox).then(|| c[2].to_string())
        })
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// doveadm's exit code and mailsync's, where mailsync's 2 counts as 0 when its only reason
/// is the Maildir backend not taking the source's UIDVALIDITY (as in sync_differential.rs).
fn codes(dove: &Output, ms: &Output) -> (Option<i32>, Option<i32>) {
    let mut m = ms.status.code();
    if dove.status.code() == Some(0)
        && m == Some(2)
        && stderr(ms).contains("UIDVALIDITY still differs")
    {
        m = Some(0);
    }
    (dove.status.code(), m)
}

/// What a scenario ends with: both tools' exit codes per run and the stores afterwards.
struct Outcome {
    env: Env,
}

impl Outcome {
    fn mailsync_dest(&self) -> String {
        loc(&self.env, "B2")
    }
}

/// Runs `command ... DEST` once per entry of `runs` with doveadm (A → B) and with mailsync
/// (A2 → B2) and asserts identical exit codes and identical stores. `base`: B starts as a
/// plain `doveadm backup` of A; `prepare` then changes the stores (before the copies).
fn differential(name: &str, runs: &[&[&str]], base: bool, prepare: &dyn Fn(&Env)) -> Outcome {
    let env = Env::new();
    source(&env);
    // Fix the mailbox GUIDs and UIDs once, so both copies share them.
    let out = harness::ok(
        "status",
        env.doveadm(
            &loc(&env, "A"),
            &["-f", "flow", "mailbox", "status", "guid", "Box"],
        ),
    );
    let box_guid = String::from_utf8_lossy(&out)
        .trim()
        .rsplit("guid=")
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(box_guid.len(), 32, "{box_guid}");
    if base {
        harness::ok(
            "base backup",
            env.doveadm(&loc(&env, "A"), &["backup", &loc(&env, "B")]),
        );
    }
    prepare(&env);
    harness::copy_tree(&env.root.join("A"), &env.root.join("A2"));
    if env.root.join("B").exists() {
        harness::copy_tree(&env.root.join("B"), &env.root.join("B2"));
    }
    env.chown_tree(&env.root);
    for (i, args) in runs.iter().enumerate() {
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == BOX_GUID { box_guid.as_str() } else { a })
            .collect();
        let mut d: Vec<&str> = args.clone();
        let db = loc(&env, "B");
        d.push(&db);
        let dove = env.doveadm(&loc(&env, "A"), &d);
        let mut m: Vec<&str> = args.clone();
        let mb = loc(&env, "B2");
        m.push(&mb);
        let ms = env.mailsync(&loc(&env, "A2"), &m);
        let (dc, mc) = codes(&dove, &ms);
        assert_eq!(
            dc,
            mc,
            "{name}, run {i} {args:?}: exit codes differ\ndoveadm: {}\nmailsync: {}",
            stderr(&dove),
            stderr(&ms)
        );
    }
    for (d, m) in [("A", "A2"), ("B", "B2")] {
        assert_eq!(
            snapshot(&env, &loc(&env, d)),
            snapshot(&env, &loc(&env, m)),
            "{name}: {d} (doveadm) and {m} (mailsync) differ"
        );
    }
    Outcome { env }
}

/// Stands for Box's mailbox GUID in a scenario's arguments.
const BOX_GUID: &str = "<Box GUID>";

const SMALL: &str = "1000000001.M1P1.host";
const BIG: &str = "1000000002.M2P1.host";
const SEEN: &str = "1000000003.M3P1.host";
const WORK: &str = "1000000004.M4P1.host";
const BOX: &str = "1000000005.M5P1.host";

fn no_change(_: &Env) {}

#[test]
fn max_size_skips_big_mails_without_rebuilding_or_deleting_them() {
    // Into an empty destination, twice: the big mail is neither copied nor "missing".
    let o = differential(
        "backup -I",
        &[&["backup", "-I", "100"], &["backup", "-I", "100"]],
        false,
        &no_change,
    );
    let dest = o.mailsync_dest();
    assert_eq!(guids_in(&o.env, &dest, "INBOX"), [SMALL, SEEN, WORK]);
    assert_eq!(guids_in(&o.env, &dest, "Box"), [BOX]);
    // Units as settings_get_size: 1k = 1024 bytes still excludes the 3 kB mail.
    let o = differential(
        "backup -I 1k",
        &[&["backup", "-I", "1k"]],
        false,
        &no_change,
    );
    assert!(!guids_in(&o.env, &o.mailsync_dest(), "INBOX").contains(&BIG.to_string()));
    // A copy that already has the big mail keeps it: the filter only governs saves.
    let o = differential(
        "backup -I over a full copy",
        &[&["backup", "-I", "100"]],
        true,
        &no_change,
    );
    assert_eq!(
        guids_in(&o.env, &o.mailsync_dest(), "INBOX"),
        [SMALL, BIG, SEEN, WORK]
    );
}

#[test]
fn max_size_in_a_two_way_sync_copies_only_small_new_mail_both_ways() {
    let o = differential("sync -I", &[&["sync", "-I", "1000"]], true, &|env: &Env| {
        let b = loc(env, "B");
        let big = big_body().replace("<big@example>", "<big-on-b@example>");
        harness::ok(
            "save",
            env.doveadm_stdin(&b, &["save", "-m", "INBOX"], Some(big.as_bytes())),
        );
        harness::ok(
            "save",
            env.doveadm_stdin(
                &b,
                &["save", "-m", "Box"],
                Some(b"From: b@example\nSubject: new small\n\nnew\n"),
            ),
        );
    });
    let a = loc(&o.env, "A2");
    // A got the small new mail of B, not the big one; B keeps its big mail.
    assert_eq!(guids_in(&o.env, &a, "Box").len(), 2);
    assert_eq!(guids_in(&o.env, &a, "INBOX").len(), 4);
    assert_eq!(guids_in(&o.env, &o.mailsync_dest(), "INBOX").len(), 5);
}

#[test]
fn flag_filter_saves_only_mails_with_or_without_the_flag_or_keyword() {
    let o = differential(
        "backup -O \\Seen",
        &[&["backup", "-O", "\\Seen"], &["backup", "-O", "\\Seen"]],
        false,
        &no_change,
    );
    assert_eq!(guids_in(&o.env, &o.mailsync_dest(), "INBOX"), [SEEN]);
    assert!(guids_in(&o.env, &o.mailsync_dest(), "Box").is_empty());
    let o = differential(
        "backup -O -\\seen",
        &[&["backup", "-O", "-\\seen"]],
        false,
        &no_change,
    );
    assert_eq!(
        guids_in(&o.env, &o.mailsync_dest(), "INBOX"),
        [SMALL, BIG, WORK]
    );
    // Keywords compare case-insensitively.
    let o = differential(
        "backup -O work",
        &[&["backup", "-O", "work"]],
        false,
        &no_change,
    );
    assert_eq!(guids_in(&o.env, &o.mailsync_dest(), "INBOX"), [WORK]);
    let o = differential(
        "backup -O -Work",
        &[&["backup", "-O", "-Work"]],
        false,
        &no_change,
    );
    assert_eq!(
        guids_in(&o.env, &o.mailsync_dest(), "INBOX"),
        [SMALL, BIG, SEEN]
    );
}

#[test]
fn received_date_range_limits_what_is_saved() {
    let o = differential(
        "backup -t",
        &[
            &["backup", "-t", "2021-01-01"],
            &["backup", "-t", "2021-01-01"],
        ],
        false,
        &no_change,
    );
    assert_eq!(
        guids_in(&o.env, &o.mailsync_dest(), "INBOX"),
        [BIG, SEEN, WORK]
    );
    let until = (SEP_2022 - DAY).to_string();
    let o = differential("backup -e", &[&["backup", "-e", &until]], false, &no_change);
    assert_eq!(
        guids_in(&o.env, &o.mailsync_dest(), "INBOX"),
        [SMALL, BIG, SEEN]
    );
    assert!(guids_in(&o.env, &o.mailsync_dest(), "Box").is_empty());
    let since = (JUN_2021 + DAY).to_string();
    let o = differential(
        "backup -t -e",
        &[&["backup", "-t", &since, "-e", "1-Jan-2023"]],
        false,
        &no_change,
    );
    // -e 1-Jan-2023 is local (UTC here) midnight: Box's mail received at it is included.
    assert_eq!(guids_in(&o.env, &o.mailsync_dest(), "INBOX"), [SEEN, WORK]);
    assert_eq!(guids_in(&o.env, &o.mailsync_dest(), "Box"), [BOX]);
}

#[test]
fn mailbox_guid_selects_one_mailbox_and_empty_means_the_tree_only() {
    let o = differential(
        "backup -g",
        &[&["backup", "-g", BOX_GUID], &["backup", "-g", BOX_GUID]],
        false,
        &no_change,
    );
    assert_eq!(guids_in(&o.env, &o.mailsync_dest(), "Box"), [BOX]);
    assert!(guids_in(&o.env, &o.mailsync_dest(), "INBOX").is_empty());
    // Mailboxes created, no mail copied.
    for only_tree in [["backup", "-g", ""], ["backup", "-m", ""]] {
        let o = differential("no mail sync", &[&only_tree], false, &no_change);
        let dest = o.mailsync_dest();
        assert!(mails(&o.env, &dest).is_empty(), "{only_tree:?}");
        let list = harness::ok("list", o.env.doveadm(&dest, &["mailbox", "list"]));
        assert_eq!(harness::sorted_lines(&list), "Box\nINBOX");
    }
}

#[test]
fn a_namespace_prefix_selects_the_single_namespace_as_doveadm_does() {
    for prefix in ["", "INBOX", "nonexistent/"] {
        let o = differential("backup -n", &[&["backup", "-n", prefix]], false, &no_change);
        assert_eq!(mails(&o.env, &o.mailsync_dest()).len(), 5, "-n {prefix:?}");
    }
}

#[test]
fn invalid_option_values_fail_like_doveadm() {
    let env = Env::new();
    source(&env);
    let cases: &[&[&str]] = &[
        &["backup", "-g", "xyz"],
        &["backup", "-g", "00000000000000000000000000000000"],
        &["backup", "-O", "\\Bogus"],
        &["backup", "-O", "\\Seen \\Flagged"],
        &["backup", "-I", "1x"],
        &["backup", "-t", "yesterday"],
        &["backup", "-t", "2030-01-01", "-e", "2020-01-01"],
    ];
    for args in cases {
        let mut a = args.to_vec();
        let dest = loc(&env, "X");
        a.push(&dest);
        let dove = env.doveadm(&loc(&env, "A"), &a);
        let ms = env.mailsync(&loc(&env, "A"), &a);
        assert_eq!(dove.status.code(), Some(75), "doveadm {args:?}");
        assert_eq!(
            ms.status.code(),
            Some(75),
            "mailsync {args:?}: {}",
            stderr(&ms)
        );
        assert!(stderr(&ms).starts_with("Fatal: "), "{}", stderr(&ms));
        assert!(
            !env.root.join("X").exists(),
            "{args:?} wrote the destination"
        );
    }
}

#[test]
fn sync_lock_waits_times_out_with_75_and_is_shared_with_dovecot() {
    let env = Env::new();
    source(&env);
    let a = loc(&env, "A");
    let b = loc(&env, "B");
    let held = mailsync::sync::lock::acquire(&env.home, Duration::from_secs(5)).unwrap();
    let lock_path = env.home.join(".dovecot-sync.lock");
    assert!(lock_path.exists());
    env.chown_tree(&env.home);
    // mailsync waits its -l seconds, then gives up without touching the destination.
    let start = Instant::now();
    let out = env.mailsync(&a, &["backup", "-l", "1", &b]);
    let waited = start.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(".dovecot-sync.lock"),
        "{}",
        stderr(&out)
    );
    assert!(waited >= Duration::from_secs(1), "gave up after {waited:?}");
    assert!(waited < Duration::from_secs(30), "took {waited:?}");
    assert!(!env.root.join("B").exists());
    // Dovecot honours the same lock (same file, same fcntl lock kind).
    let out = env.doveadm(&a, &["backup", "-l", "1", &b]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    // Released while a run waits: that run proceeds.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        drop(held);
    });
    let out = env.mailsync(&a, &["backup", "-l", "30", &b]);
    releaser.join().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{:?}: {}",
        out.status.code(),
        stderr(&out)
    );
    assert_eq!(mails(&env, &b).len(), 5);
    // The lock file is removed at the end of the run, as dsync does.
    assert!(!lock_path.exists());
    // Without a competitor, -l just works.
    let out = env.mailsync(&a, &["sync", "-l", "5", &b]);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", stderr(&out));
}

/// In-memory stores through the engine: a two-way `-I` run with a UID conflict keeps every
/// message, copies only the small one, and later runs change nothing (an unwanted message
/// is never renumbered again and again).
#[test]
fn two_way_max_size_with_a_uid_conflict_is_stable_and_loses_nothing() {
    use mailstore::memory::MemoryStore;
    use mailstore::{Guid, NewMail, Store};
    use mailsync::sync::{self, MailFilter, MergeKind, SyncOptions};

    fn save(s: &MemoryStore, guid: &str, body: &str) {
        let mut mb = s.open_mailbox("INBOX").unwrap();
        let mut tx = mb.begin().unwrap();
        tx.save(
            NewMail {
                guid: Some(Guid::from_bytes(guid.as_bytes())),
                received_date: Some(JAN_2020),
                ..Default::default()
            },
            &mut body.as_bytes(),
        )
        .unwrap();
        tx.commit().unwrap();
    }
    fn uids(s: &MemoryStore) -> Vec<(u32, String)> {
        let mut mb = s.open_mailbox("INBOX").unwrap();
        mb.mails()
            .unwrap()
            .into_iter()
            .map(|r| (r.uid.0, r.guid.to_string()))
            .collect()
    }
    let run = |a: &MemoryStore, b: &MemoryStore| {
        let opts = SyncOptions {
            kind: MergeKind::TwoWay,
            full: true,
            filter: MailFilter {
                max_size: Some(100),
                ..Default::default()
            },
            ..Default::default()
        };
        let r = sync::run(Box::new(a.clone()), Box::new(b.clone()), &opts);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        r.exit_code
    };
    let a = MemoryStore::new();
    let b = MemoryStore::new();
    save(&a, "common", "common\n");
    assert_eq!(run(&a, &b), 0);
    // UID 2 is a big message on A and a different small one on B.
    save(&a, "big-on-a", &"x".repeat(500));
    save(&b, "small-on-b", "small\n");
    assert!(matches!(run(&a, &b), 0 | 2));
    let after_first = (uids(&a), uids(&b));
    let guids = |v: &[(u32, String)]| {
        let mut g: Vec<String> = v.iter().map(|x| x.1.clone()).collect();
        g.sort();
        g
    };
    assert_eq!(guids(&after_first.0), ["big-on-a", "common", "small-on-b"]);
    assert_eq!(guids(&after_first.1), ["common", "small-on-b"]);
    for _ in 0..2 {
        assert_eq!(run(&a, &b), 0);
        assert_eq!((uids(&a), uids(&b)), after_first);
    }
}

/// A stateful run with a filter must not record the filtered message as common: a later
/// stateful run (here without the filter) would take its absence on the other side for an
/// expunge and delete it.
#[test]
fn a_state_from_a_filtered_run_never_makes_a_filtered_message_look_expunged() {
    use mailstore::memory::MemoryStore;
    use mailstore::{Guid, NewMail, Store};
    use mailsync::sync::{self, MailFilter, MergeKind, SyncOptions};

    fn save(s: &MemoryStore, guid: &str, body: &str) {
        let mut mb = s.open_mailbox("INBOX").unwrap();
        let mut tx = mb.begin().unwrap();
        tx.save(
            NewMail {
                guid: Some(Guid::from_bytes(guid.as_bytes())),
                received_date: Some(JAN_2020),
                ..Default::default()
            },
            &mut body.as_bytes(),
        )
        .unwrap();
        tx.commit().unwrap();
    }
    fn guids(s: &MemoryStore) -> Vec<String> {
        let mut mb = s.open_mailbox("INBOX").unwrap();
        let mut g: Vec<String> = mb
            .mails()
            .unwrap()
            .into_iter()
            .map(|r| r.guid.to_string())
            .collect();
        g.sort();
        g
    }
    for kind in [MergeKind::TwoWay, MergeKind::Backup] {
        let a = MemoryStore::new();
        let b = MemoryStore::new();
        save(&a, "small-1", "small\n");
        save(&a, "big", &"x".repeat(500));
        save(&a, "small-3", "small 3\n");
        let opts = SyncOptions {
            kind,
            state: Some(Vec::new()),
            filter: MailFilter {
                max_size: Some(100),
                ..Default::default()
            },
            ..Default::default()
        };
        let r = sync::run(Box::new(a.clone()), Box::new(b.clone()), &opts);
        assert!(matches!(r.exit_code, 0 | 2), "{:?}", r.errors);
        assert_eq!(guids(&b), ["small-1", "small-3"]);
        let state = r.state;
        let inbox = state.iter().map(|s| s.last_common_uid).next();
        assert_eq!(
            inbox,
            Some(1),
            "{kind:?}: the state stops below the big message"
        );
        // Something changes, then a stateful two-way run without the filter.
        save(&b, "new-on-b", "new\n");
        let opts = SyncOptions {
            kind: MergeKind::TwoWay,
            state: Some(state),
            ..Default::default()
        };
        let r = sync::run(Box::new(a.clone()), Box::new(b.clone()), &opts);
        assert!(matches!(r.exit_code, 0 | 2), "{:?}", r.errors);
        let all = ["big", "new-on-b", "small-1", "small-3"];
        assert_eq!(guids(&a), all, "{kind:?}");
        assert_eq!(guids(&b), all, "{kind:?}");
    }
}
