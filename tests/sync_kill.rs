//! Crash safety of `mailsync backup` / `mailsync sync`, black-box through the real binary:
//! a run killed with SIGKILL at a random point and then run again (to completion) must end
//! with both stores in sync, nothing lost and nothing duplicated.
//!
//! One Maildir source (a few mailboxes, a hierarchy, an empty mailbox, ~300 messages of
//! varied sizes including three of about 1 MB so kills land in the middle of a body, flags,
//! keywords, LF and CRLF mail) is synced into mdbox, sdbox and Maildir destinations, in
//! `backup` and two-way `sync` mode, starting from an empty destination or from an older
//! backup (the source has since received new mail, flag changes, expunges and a new
//! mailbox; for two-way `sync` the destination has its own new mail, flag changes and an
//! expunge, whose UIDs collide with the source's new mail). A two-way run killed while it
//! renumbers those collisions leaves one message at different UIDs on the two sides; the
//! re-run links them after comparing their bodies (dsync-mailbox-import.c newmail_link)
//! instead of copying them both ways.
//! Each format also has a stateful two-way scenario: `sync -s` with the state of a run made
//! before both sides changed; a killed stateful run is re-run with that same state.
//! For each of the fifteen scenarios one uninterrupted run gives the run time and
//! the expected result; then each trial kills a run after a delay drawn uniformly within
//! that run time, runs the same command again (exit 0, or 2 followed by a run that exits 0)
//! and compares (mailbox, UID, GUID, flags, keywords, message bytes) of both stores.
//!
//! The trial delays come from a seeded xorshift generator; the seed is printed, and
//! `MAILSYNC_KILL_SEED=<n>` replays the same trial parameters (where a kill lands still
//! depends on timing).

mod harness;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Trials per (destination format, mode, start) scenario; 15 scenarios.
const TRIALS_PER_SCENARIO: usize = 5;
/// A run that takes longer than this after a kill is treated as hung (e.g. a stale lock).
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// xorshift64*: a std-only seeded generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ------------------------------------------------------------------ running mailsync

struct Ctx {
    _dir: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
}

impl Ctx {
    fn command(&self, loc: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailsync"));
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("USER", "alice")
            .env("HOME", &self.home)
            .env("TZ", "UTC")
            .arg("-o")
            .arg(format!("mail_location={loc}"))
            // saves committed every 25 messages, so that kills also land between the
            // intermediate commits of one mailbox
            .arg("-o")
            .arg("dsync_commit_msgs_interval=25")
            .args(args);
        cmd
    }

    fn run(&self, loc: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = self.command(loc, args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn mailsync");
        if let Some(data) = stdin {
            child.stdin.take().unwrap().write_all(data).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed with nothing on stderr; returns stdout.
    fn ok(&self, loc: &str, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let out = self.run(loc, args, stdin);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "mailsync {args:?} on {loc}: exit {:?}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Waits for `child` at most `limit`; a hung child is killed and reported as `None`.
fn wait_limited(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A sync/backup run to completion: exit code and stderr, or an error when it hung.
fn run_sync(ctx: &Ctx, src: &str, args: &[&str]) -> Result<(i32, String), String> {
    let mut child = ctx
        .command(src, args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailsync");
    // stderr is small; read it on a thread so a chatty run cannot block on the pipe.
    let mut err_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut err_pipe, &mut buf).ok();
        buf
    });
    let status = wait_limited(&mut child, RUN_TIMEOUT);
    let stderr = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    match status {
        Some(st) => Ok((st.code().unwrap_or(-1), stderr)),
        None => Err(format!(
            "mailsync {args:?} hung for {RUN_TIMEOUT:?}; stderr: {stderr}"
        )),
    }
}

/// Runs until in sync: exit 0, or exit 2 and then 0 on one more run. Returns the stderr.
fn run_to_completion(ctx: &Ctx, src: &str, args: &[&str]) -> Result<String, String> {
    let (code, err1) = run_sync(ctx, src, args)?;
    match code {
        0 => Ok(err1),
        2 => {
            let (code2, err2) = run_sync(ctx, src, args)?;
            if code2 == 0 {
                Ok(format!("{err1}{err2}"))
            } else {
                Err(format!(
                    "run after exit 2 exited {code2}\nfirst stderr: {err1}\nsecond stderr: {err2}"
                ))
            }
        }
        _ => Err(format!("run exited {code}; stderr: {err1}")),
    }
}

// ------------------------------------------------------------------ store contents

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Mail {
    uid: u32,
    guid: String,
    /// System flags and keywords, sorted, without \Recent (session state, not synced).
    flags: Vec<String>,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "uid {} guid {} flags {:?} ({} bytes)",
            self.uid,
            self.guid,
            self.flags,
            self.bytes.len()
        )
    }
}

/// Mailbox name (hierarchy separator written as `.`) → mails in UID order, plus the
/// mailbox list and the (messages, uidnext) status of every mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    mailboxes: BTreeMap<String, Vec<Mail>>,
    status: BTreeMap<String, String>,
}

/// Maildir++ shows `Lists.rust`, the dbox layouts `Lists/rust`; the parts must agree.
fn normalize_name(name: &str) -> String {
    name.replace('/', ".")
}

/// Saving stores line ends as LF (Dovecot's default `mail_save_crlf = no`), so the CRLF
/// source mail reads back with LF from a copy; the mail's bytes are compared that way.
fn crlf_to_lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, b) in bytes.iter().enumerate() {
        if !(*b == b'\r' && bytes.get(i + 1) == Some(&b'\n')) {
            out.push(*b);
        }
    }
    out
}

fn parse_pager_mails(out: &[u8]) -> Result<BTreeMap<String, Vec<Mail>>, String> {
    let mut boxes: BTreeMap<String, Vec<Mail>> = BTreeMap::new();
    if out.is_empty() {
        return Ok(boxes);
    }
    const FIRST: &[u8] = b"mailbox: ";
    const NEXT: &[u8] = b"\x0c\nmailbox: ";
    if !out.starts_with(FIRST) {
        return Err(format!(
            "fetch output starts with {:?}",
            String::from_utf8_lossy(&out[..out.len().min(80)])
        ));
    }
    // The generated mail never contains a form feed, so `\f\nmailbox: ` only separates.
    let mut records = Vec::new();
    let mut start = FIRST.len();
    let mut i = start;
    while i + NEXT.len() <= out.len() {
        if &out[i..i + NEXT.len()] == NEXT {
            records.push(&out[start..i]);
            start = i + NEXT.len();
            i = start;
        } else {
            i += 1;
        }
    }
    records.push(&out[start..]);
    for rec in records {
        let mut rest = rec;
        let mut field = |title: &str| -> Result<String, String> {
            let nl = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| format!("record without {title}"))?;
            let line = String::from_utf8_lossy(&rest[..nl]).into_owned();
            rest = &rest[nl + 1..];
            Ok(line)
        };
        let mailbox = field("mailbox")?;
        let uid = field("uid")?;
        let guid = field("guid")?;
        let flags = field("flags")?;
        let text = field("text")?;
        let uid: u32 = uid
            .strip_prefix("uid: ")
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| format!("bad uid line {uid:?}"))?;
        let guid = guid
            .strip_prefix("guid: ")
            .ok_or_else(|| format!("bad guid line {guid:?}"))?
            .to_string();
        let flags = flags
            .strip_prefix("flags:")
            .ok_or_else(|| format!("bad flags line {flags:?}"))?;
        if text != "text:" {
            return Err(format!("bad text line {text:?}"));
        }
        let mut flags: Vec<String> = flags
            .split_whitespace()
            .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
            .map(str::to_string)
            .collect();
        flags.sort();
        boxes
            .entry(normalize_name(&mailbox))
            .or_default()
            .push(Mail {
                uid,
                guid,
                flags,
                bytes: crlf_to_lf(rest),
            });
    }
    for mails in boxes.values_mut() {
        mails.sort();
    }
    Ok(boxes)
}

/// Reads a whole store through `mailsync`; every command must succeed without a word on
/// stderr (opening a store after a crash and a repair run must not report errors).
fn snapshot(ctx: &Ctx, loc: &str) -> Result<Snapshot, String> {
    let run = |args: &[&str]| -> Result<Vec<u8>, String> {
        let out = ctx.run(loc, args, None);
        if out.status.success() && out.stderr.is_empty() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "mailsync {args:?} on {loc}: exit {:?}, stderr: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let list = run(&["mailbox", "list"])?;
    let mut mailboxes: BTreeMap<String, Vec<Mail>> = String::from_utf8_lossy(&list)
        .lines()
        .map(|n| (normalize_name(n), Vec::new()))
        .collect();
    let fetched = run(&["-f", "pager", "fetch", "mailbox uid guid flags text", "all"])?;
    for (name, mails) in parse_pager_mails(&fetched)? {
        mailboxes.insert(name, mails);
    }
    let status_out = run(&["-f", "tab", "mailbox", "status", "messages uidnext", "*"])?;
    let status = String::from_utf8_lossy(&status_out)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, rest)| (normalize_name(n), rest.to_string()))
        .collect();
    Ok(Snapshot { mailboxes, status })
}

/// The content without UIDs: sorted (mailbox, GUID, flags, bytes) rows.
fn without_uids(s: &Snapshot) -> Vec<(String, String, Vec<String>, Vec<u8>)> {
    let mut rows: Vec<_> = s
        .mailboxes
        .iter()
        .flat_map(|(name, mails)| {
            mails.iter().map(move |m| {
                (
                    name.clone(),
                    m.guid.clone(),
                    m.flags.clone(),
                    m.bytes.clone(),
                )
            })
        })
        .collect();
    rows.sort();
    rows
}

fn total_mails(s: &Snapshot) -> usize {
    s.mailboxes.values().map(Vec::len).sum()
}

/// No GUID twice in one mailbox (the source never holds a GUID twice).
fn duplicates(s: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (name, mails) in &s.mailboxes {
        let mut guids: Vec<&str> = mails.iter().map(|m| m.guid.as_str()).collect();
        guids.sort();
        for w in guids.windows(2) {
            if w[0] == w[1] {
                out.push(format!("{name}: GUID {} twice", w[0]));
            }
        }
    }
    out
}

/// A short human description of how two snapshots differ.
fn describe_diff(want: &Snapshot, got: &Snapshot) -> String {
    let mut out = String::new();
    let names: std::collections::BTreeSet<&String> =
        want.mailboxes.keys().chain(got.mailboxes.keys()).collect();
    for name in names {
        let w = want.mailboxes.get(name);
        let g = got.mailboxes.get(name);
        match (w, g) {
            (Some(_), None) => out.push_str(&format!("mailbox {name} missing\n")),
            (None, Some(_)) => out.push_str(&format!("mailbox {name} unexpected\n")),
            (Some(w), Some(g)) => {
                let key = |m: &Mail| (m.uid, m.guid.clone());
                for m in w {
                    match g.iter().find(|x| x.guid == m.guid) {
                        None => out.push_str(&format!(
                            "{name}: lost uid {} guid {} ({} bytes)\n",
                            m.uid,
                            m.guid,
                            m.bytes.len()
                        )),
                        Some(x) if x != m => out.push_str(&format!(
                            "{name}: guid {} differs: want uid {} flags {:?} {} bytes, got uid {} flags {:?} {} bytes{}\n",
                            m.guid,
                            m.uid,
                            m.flags,
                            m.bytes.len(),
                            x.uid,
                            x.flags,
                            x.bytes.len(),
                            if x.bytes != m.bytes { " (bytes differ)" } else { "" }
                        )),
                        Some(_) => {}
                    }
                }
                for m in g {
                    let n = g.iter().filter(|x| x.guid == m.guid).count();
                    if !w.iter().any(|x| x.guid == m.guid) {
                        out.push_str(&format!(
                            "{name}: extra uid {} guid {} ({} bytes)\n",
                            m.uid,
                            m.guid,
                            m.bytes.len()
                        ));
                    } else if n > 1 && g.iter().find(|x| x.guid == m.guid).map(key) == Some(key(m))
                    {
                        out.push_str(&format!("{name}: guid {} held {n} times\n", m.guid));
                    }
                }
            }
            (None, None) => {}
        }
    }
    if want.status != got.status {
        out.push_str(&format!(
            "status (messages uidnext) want {:?}\n                       got  {:?}\n",
            want.status, got.status
        ));
    }
    if out.is_empty() {
        out.push_str("(no difference)\n");
    }
    out
}

// ------------------------------------------------------------------ building the stores

const KEYWORDS: &[&str] = &["$Label1", "Work", "Later"];

fn words(rng: &mut Rng, n: usize) -> String {
    const W: &[&str] = &[
        "mail", "sync", "crash", "index", "storage", "dovecot", "backup", "flag", "keyword",
        "message", "quota", "server", "folder", "archive", "test", "kill", "signal", "random",
    ];
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(if i % 12 == 0 { '\n' } else { ' ' });
        }
        s.push_str(W[rng.below(W.len() as u64) as usize]);
    }
    s
}

/// A message of about `size` bytes whose Message-ID and first body line name it.
fn message(rng: &mut Rng, tag: &str, size: usize, crlf: bool) -> Vec<u8> {
    let mut text = format!(
        "From: Sender {tag} <sender@example.org>\nTo: alice@example.org\n\
         Subject: {tag} {}\nMessage-ID: <{tag}@kill.test>\n\
         Date: Mon, 1 Jan 2024 12:00:00 +0000\n\n{tag}\n",
        words(rng, 4)
    );
    while text.len() < size {
        let n = 10 + rng.below(40) as usize;
        let line = words(rng, n);
        text.push_str(&line);
        text.push('\n');
    }
    if crlf {
        text = text.replace('\n', "\r\n");
    }
    text.into_bytes()
}

fn maildir_dirs(dir: &Path) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
}

/// Writes the initial source Maildir directly (files in cur/ and new/ with flags in their
/// names, keyword letters from dovecot-keywords); mailsync assigns the UIDs on first use.
fn write_source(root: &Path) -> usize {
    let mut rng = Rng::new(0x5eed_da11);
    // (directory, message count, indexes of ~1 MB messages)
    let boxes: &[(&str, usize, &[usize])] = &[
        ("", 150, &[40]),
        (".Archive", 80, &[10]),
        (".Lists.rust", 60, &[55]),
        (".Sent", 12, &[]),
        (".Empty", 0, &[]),
    ];
    let mut n = 0;
    for (dir, count, big) in boxes {
        let mbox = root.join(dir);
        maildir_dirs(&mbox);
        if !dir.is_empty() {
            std::fs::write(mbox.join("maildirfolder"), "").unwrap();
        }
        let kw: String = KEYWORDS
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{i} {k}\n"))
            .collect();
        std::fs::write(mbox.join("dovecot-keywords"), kw).unwrap();
        for i in 0..*count {
            n += 1;
            let size = if big.contains(&i) {
                900_000 + rng.below(200_000) as usize
            } else if rng.below(25) == 0 {
                20_000 + rng.below(80_000) as usize
            } else {
                200 + rng.below(6_000) as usize
            };
            let tag = format!("m{n}");
            let crlf = rng.below(10) == 0;
            let body = message(&mut rng, &tag, size, crlf);
            let mut flags = String::new();
            for (letter, p) in [('D', 30), ('F', 8), ('R', 5), ('S', 2), ('T', 40)] {
                if rng.below(p) == 0 {
                    flags.push(letter);
                }
            }
            for letter in ['a', 'b', 'c'] {
                if rng.below(6) == 0 {
                    flags.push(letter);
                }
            }
            let base = format!("{}.M{n}P4242.killtest", 1_700_000_000 + n);
            let path = if rng.below(8) == 0 {
                mbox.join("new").join(&base)
            } else {
                mbox.join("cur").join(format!("{base}:2,{flags}"))
            };
            std::fs::write(&path, &body).unwrap();
            let received = UNIX_EPOCH + Duration::from_secs(1_690_000_000 + n as u64 * 3_600);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(received)
                .unwrap();
        }
    }
    n
}

/// The changes a source gets after its first backup: new mail (one ~1 MB), flag and
/// keyword changes, expunges and a new mailbox.
fn change_source(ctx: &Ctx, loc: &str) {
    let mut rng = Rng::new(77);
    for i in 0..6 {
        let size = if i == 3 { 1_000_000 } else { 500 + i * 700 };
        let msg = message(&mut rng, &format!("src-new-{i}"), size, false);
        ctx.ok(loc, &["save", "-m", "INBOX"], Some(&msg));
    }
    let msg = message(&mut rng, "src-new-archive", 3000, true);
    ctx.ok(loc, &["save", "-m", "Archive"], Some(&msg));
    ctx.ok(loc, &["mailbox", "create", "New"], None);
    for i in 0..3 {
        let msg = message(&mut rng, &format!("src-newbox-{i}"), 800, false);
        ctx.ok(loc, &["save", "-m", "New"], Some(&msg));
    }
    for (op, flag, mailbox, uids) in [
        ("add", "\\Flagged", "INBOX", "3,4"),
        ("remove", "\\Seen", "INBOX", "10:12"),
        ("add", "Work", "Archive", "5"),
        ("add", "\\Answered $Label1", "Sent", "1:3"),
    ] {
        ctx.ok(
            loc,
            &["flags", op, flag, "mailbox", mailbox, "uid", uids],
            None,
        );
    }
    ctx.ok(loc, &["expunge", "mailbox", "INBOX", "uid", "7:8"], None);
    ctx.ok(loc, &["expunge", "mailbox", "Archive", "uid", "2"], None);
}

/// The destination side's own changes for two-way trials, on other messages than the
/// source's changes (so the result does not depend on which side's modseq is higher).
fn change_destination(ctx: &Ctx, loc: &str) {
    let mut rng = Rng::new(99);
    for i in 0..3 {
        let msg = message(&mut rng, &format!("dst-new-{i}"), 1200 + i * 900, false);
        ctx.ok(loc, &["save", "-m", "INBOX"], Some(&msg));
    }
    let msg = message(&mut rng, "dst-new-archive", 40_000, false);
    ctx.ok(loc, &["save", "-m", "Archive"], Some(&msg));
    ctx.ok(
        loc,
        &[
            "flags",
            "add",
            "\\Answered",
            "mailbox",
            "INBOX",
            "uid",
            "20",
        ],
        None,
    );
    ctx.ok(
        loc,
        &["flags", "add", "Later", "mailbox", "INBOX", "uid", "21:22"],
        None,
    );
    ctx.ok(loc, &["expunge", "mailbox", "INBOX", "uid", "30"], None);
    ctx.ok(loc, &["expunge", "mailbox", "Archive", "uid", "40"], None);
}

// ------------------------------------------------------------------ scenarios and trials

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Backup,
    Sync,
    /// Two-way `sync -s <state>` with the state of a run between the older backup and the
    /// source before both sides changed; a killed run is re-run with the same state (it
    /// printed no new one).
    Stateful,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// The destination does not exist yet.
    Empty,
    /// The destination is a backup of the source before its changes (plus, for two-way
    /// runs, changes of its own).
    Older,
}

struct Scenario {
    format: &'static str,
    mode: Mode,
    start: Start,
    /// Source and destination trees to copy for each trial (`None`: no destination yet).
    src_template: PathBuf,
    dst_template: Option<PathBuf>,
    /// The result of an uninterrupted run: the destination (backup) or both sides (sync).
    want: Snapshot,
    /// How long the uninterrupted run took.
    duration: Duration,
    /// The `-s` state of a `Stateful` scenario.
    state: String,
}

impl Scenario {
    fn name(&self) -> String {
        format!("{} {:?} from {:?}", self.format, self.mode, self.start)
    }
    fn args(&self, dest_loc: &str) -> Vec<String> {
        match self.mode {
            Mode::Backup => vec!["backup".into(), dest_loc.into()],
            Mode::Sync => vec!["sync".into(), dest_loc.into()],
            Mode::Stateful => vec![
                "sync".into(),
                "-s".into(),
                self.state.clone(),
                dest_loc.into(),
            ],
        }
    }
}

fn loc(format: &str, dir: &Path) -> String {
    format!("{format}:{}", dir.display())
}

struct Work {
    src_dir: PathBuf,
    dst_dir: PathBuf,
}

fn prepare(ctx: &Ctx, sc: &Scenario, tag: &str) -> Work {
    let src_dir = ctx.root.join(format!("work-{tag}-src"));
    let dst_dir = ctx.root.join(format!("work-{tag}-dst"));
    harness::copy_tree(&sc.src_template, &src_dir);
    let _ = std::fs::remove_dir_all(&dst_dir);
    if let Some(t) = &sc.dst_template {
        harness::copy_tree(t, &dst_dir);
    }
    Work { src_dir, dst_dir }
}

fn cleanup(w: &Work) {
    let _ = std::fs::remove_dir_all(&w.src_dir);
    let _ = std::fs::remove_dir_all(&w.dst_dir);
}

/// Checks the stores after a (repaired) run against the scenario's expectations.
fn verify(
    ctx: &Ctx,
    sc: &Scenario,
    w: &Work,
    src_before: &Snapshot,
    want: &Snapshot,
) -> Result<(), String> {
    let src_loc = loc("maildir", &w.src_dir);
    let dst_loc = loc(sc.format, &w.dst_dir);
    let dst = snapshot(ctx, &dst_loc)?;
    let src = snapshot(ctx, &src_loc)?;
    let dups: Vec<String> = duplicates(&dst)
        .into_iter()
        .map(|d| format!("destination {d}"))
        .chain(duplicates(&src).into_iter().map(|d| format!("source {d}")))
        .collect();
    if !dups.is_empty() {
        return Err(format!("duplicated mail:\n{}", dups.join("\n")));
    }
    match sc.mode {
        Mode::Backup => {
            if src != *src_before {
                return Err(format!(
                    "backup altered its source:\n{}",
                    describe_diff(src_before, &src)
                ));
            }
            // The backup is the source: same mailboxes, UIDs, GUIDs, flags, bytes, uidnext.
            if dst != *src_before {
                return Err(format!(
                    "destination differs from the source:\n{}",
                    describe_diff(src_before, &dst)
                ));
            }
        }
        Mode::Sync | Mode::Stateful => {
            // Both sides hold the same mail under the same UIDs ...
            if dst.mailboxes != src.mailboxes {
                return Err(format!(
                    "the two sides differ (source as wanted, destination as got):\n{}",
                    describe_diff(&src, &dst)
                ));
            }
            // ... and that mail is what an uninterrupted run gives (UIDs of mail new on
            // both sides may be assigned differently after a kill, the content may not).
            if without_uids(&src) != without_uids(want) {
                return Err(format!(
                    "content differs from an uninterrupted run:\n{}",
                    describe_diff(want, &src)
                ));
            }
        }
    }
    Ok(())
}

fn build_scenarios(ctx: &Ctx) -> (Vec<Scenario>, Snapshot) {
    let s0 = ctx.root.join("source-v0");
    let n = write_source(&s0);
    let s0_loc = loc("maildir", &s0);
    // First access assigns UIDs and GUIDs; from now on the source's content is fixed.
    let v0 = snapshot(ctx, &s0_loc).expect("initial source");
    assert_eq!(total_mails(&v0), n, "every written message is read back");
    let s1 = ctx.root.join("source-v1");
    harness::copy_tree(&s0, &s1);
    let s1_loc = loc("maildir", &s1);
    change_source(ctx, &s1_loc);
    let v1 = snapshot(ctx, &s1_loc).expect("changed source");
    assert_eq!(total_mails(&v1), n + 6 + 1 + 3 - 3);
    assert!(v1.mailboxes.contains_key("Empty") && v1.mailboxes.contains_key("Lists.rust"));
    // So any GUID held twice in a mailbox after a run is a duplicate the run made.
    assert_eq!(duplicates(&v1), Vec::<String>::new());

    let mut scenarios = Vec::new();
    for format in ["mdbox", "sdbox", "maildir"] {
        // An older backup of v0, and the same with the destination's own changes.
        let old = ctx.root.join(format!("old-backup-{format}"));
        let old_loc = loc(format, &old);
        let (code, err) = run_sync(ctx, &s0_loc, &["backup", &old_loc]).unwrap();
        assert_eq!(code, 0, "backup of v0 into {format}: {err}");
        let old_snap = snapshot(ctx, &old_loc).unwrap();
        assert!(
            old_snap == v0,
            "{format} backup of v0:\n{}",
            describe_diff(&v0, &old_snap)
        );
        let changed = ctx.root.join(format!("old-changed-{format}"));
        harness::copy_tree(&old, &changed);
        change_destination(ctx, &loc(format, &changed));

        // The stateful pair: a `-s` run between copies of v0 and the older backup gives the
        // state; then both sides change as in the two-way scenario.
        let st_src = ctx.root.join(format!("stateful-src-{format}"));
        let st_dst = ctx.root.join(format!("stateful-dst-{format}"));
        harness::copy_tree(&s0, &st_src);
        harness::copy_tree(&old, &st_dst);
        let out = ctx.run(
            &loc("maildir", &st_src),
            &["sync", "-s", "", &loc(format, &st_dst)],
            None,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "stateful base run into {format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let state = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(!state.is_empty(), "a state for {format}");
        change_source(ctx, &loc("maildir", &st_src));
        change_destination(ctx, &loc(format, &st_dst));

        let runs = [
            (Mode::Backup, Start::Empty),
            (Mode::Backup, Start::Older),
            (Mode::Sync, Start::Empty),
            (Mode::Sync, Start::Older),
            (Mode::Stateful, Start::Older),
        ];
        for (mode, start) in runs {
            let dst_template = match (start, mode) {
                (Start::Empty, _) => None,
                (Start::Older, Mode::Backup) => Some(old.clone()),
                (Start::Older, Mode::Sync) => Some(changed.clone()),
                (Start::Older, Mode::Stateful) => Some(st_dst.clone()),
            };
            let src_template = if mode == Mode::Stateful {
                st_src.clone()
            } else {
                s1.clone()
            };
            let mut sc = Scenario {
                format,
                mode,
                start,
                src_template,
                dst_template,
                want: v1.clone(),
                duration: Duration::ZERO,
                state: if mode == Mode::Stateful {
                    state.clone()
                } else {
                    String::new()
                },
            };
            // One uninterrupted run: its duration spreads the kills, its result is
            // what every killed-and-repaired run must reach. The duration is the shorter
            // of two such runs (the first may pay for a cold cache), so that the kills
            // land inside the runs.
            let again = prepare(ctx, &sc, "reference-timing");
            let dst_loc = loc(format, &again.dst_dir);
            let args = sc.args(&dst_loc);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let t = Instant::now();
            let (code, err) = run_sync(ctx, &loc("maildir", &again.src_dir), &args).unwrap();
            let first = t.elapsed();
            assert_eq!(code, 0, "uninterrupted {}: {err}", sc.name());
            cleanup(&again);
            let w = prepare(ctx, &sc, "reference");
            let dst_loc = loc(format, &w.dst_dir);
            let args = sc.args(&dst_loc);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let t = Instant::now();
            let (code, err) = run_sync(ctx, &loc("maildir", &w.src_dir), &args).unwrap();
            sc.duration = t.elapsed().min(first);
            assert_eq!(code, 0, "uninterrupted {}: {err}", sc.name());
            let want = snapshot(ctx, &loc("maildir", &w.src_dir)).unwrap();
            if mode != Mode::Backup {
                sc.want = want;
                if start == Start::Older {
                    // v1 plus the destination's 4 new mails, minus its 2 expunges.
                    assert_eq!(total_mails(&sc.want), total_mails(&v1) + 4 - 2);
                }
            }
            if let Err(e) = verify(ctx, &sc, &w, &v1, &sc.want.clone()) {
                panic!("uninterrupted {}: {e}", sc.name());
            }
            cleanup(&w);
            scenarios.push(sc);
        }
    }
    (scenarios, v1)
}

struct TrialResult {
    killed_mid_run: bool,
    /// `.newlock` files the killed run left (see [`remove_stale_newlocks`]).
    stale_locks: usize,
    error: Option<String>,
}

/// A run killed while it creates a transaction log (a new mailbox's index) leaves the
/// `<index>.log.newlock` dotlock behind. That lock holds no pid, so it is only overridden
/// once unchanged for 180 s (MAIL_TRANSACTION_LOG_DOTLOCK_CHANGE_TIMEOUT), exactly as
/// Dovecot would wait; the next run blocks until then. The trials model a re-run after that
/// time by removing what the stale-lock rule would remove (only `.newlock` files, only
/// those the killed run left). Returns how many there were.
fn remove_stale_newlocks(w: &Work) -> usize {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&path, found);
            } else if path.to_string_lossy().ends_with(".log.newlock") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&w.src_dir, &mut found);
    walk(&w.dst_dir, &mut found);
    for path in &found {
        std::fs::remove_file(path).unwrap();
    }
    found.len()
}

fn trial(ctx: &Ctx, sc: &Scenario, v1: &Snapshot, delay: Duration) -> TrialResult {
    let w = prepare(ctx, sc, "trial");
    let src_loc = loc("maildir", &w.src_dir);
    let dst_loc = loc(sc.format, &w.dst_dir);
    let args = sc.args(&dst_loc);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = ctx
        .command(&src_loc, &args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mailsync");
    std::thread::sleep(delay);
    let killed_mid_run = child.try_wait().unwrap().is_none();
    // Child::kill sends SIGKILL on Unix.
    let _ = child.kill();
    let _ = child.wait();
    let keep = ctx.root.join(format!(
        "failed-{}-{}",
        sc.name().replace(' ', "-"),
        delay.as_micros()
    ));
    let debug = std::env::var_os("MAILSYNC_KILL_DEBUG").is_some();
    if debug {
        // The stores as the kill left them, for a failure's post-mortem.
        harness::copy_tree(&w.src_dir, &keep.with_extension("killed-src"));
        if w.dst_dir.exists() {
            harness::copy_tree(&w.dst_dir, &keep.with_extension("killed-dst"));
        }
    }
    let stale_locks = remove_stale_newlocks(&w);
    let error =
        run_to_completion(ctx, &src_loc, &args).and_then(|_| verify(ctx, sc, &w, v1, &sc.want));
    // Keep the stores of a failed trial for inspection.
    if error.is_ok() {
        cleanup(&w);
        if debug {
            let _ = std::fs::remove_dir_all(keep.with_extension("killed-src"));
            let _ = std::fs::remove_dir_all(keep.with_extension("killed-dst"));
        }
    } else {
        let _ = std::fs::rename(&w.src_dir, keep.with_extension("src"));
        let _ = std::fs::rename(&w.dst_dir, keep.with_extension("dst"));
    }
    TrialResult {
        killed_mid_run,
        stale_locks,
        error: error.err(),
    }
}

#[test]
fn sigkill_at_random_points_then_rerun_ends_in_sync_with_nothing_lost_or_duplicated() {
    let dir = tempfile::Builder::new()
        .prefix("mailsync-kill")
        .tempdir()
        .unwrap();
    let root = dir.path().to_path_buf();
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let ctx = Ctx {
        _dir: dir,
        root,
        home,
    };
    let seed: u64 = match std::env::var("MAILSYNC_KILL_SEED") {
        Ok(s) => s.parse().expect("MAILSYNC_KILL_SEED is a number"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("sync_kill: seed {seed} (replay with MAILSYNC_KILL_SEED={seed})");
    let started = Instant::now();
    let (scenarios, v1) = build_scenarios(&ctx);
    for sc in &scenarios {
        eprintln!("  {}: uninterrupted run {:?}", sc.name(), sc.duration);
    }
    let mut rng = Rng::new(seed);
    let mut failures = Vec::new();
    let mut trials = 0;
    let mut mid_run = 0;
    let mut stale_locks = 0;
    for round in 0..TRIALS_PER_SCENARIO {
        for sc in &scenarios {
            // Uniform within the uninterrupted run's duration (in microseconds).
            let span = sc.duration.as_micros().max(1) as u64;
            let delay = Duration::from_micros(rng.below(span));
            let r = trial(&ctx, sc, &v1, delay);
            trials += 1;
            mid_run += usize::from(r.killed_mid_run);
            stale_locks += usize::from(r.stale_locks > 0);
            if let Some(e) = r.error {
                failures.push(format!(
                    "seed {seed}, round {round}, {}: killed after {delay:?} (of {:?}){}{}:\n{e}",
                    sc.name(),
                    sc.duration,
                    if r.killed_mid_run {
                        ""
                    } else {
                        ", run had already ended"
                    },
                    if r.stale_locks > 0 {
                        ", stale .log.newlock removed"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    eprintln!(
        "sync_kill: {trials} trials, {mid_run} killed mid-run, {stale_locks} left a stale \
         .log.newlock, {} failed, {:?} in all",
        failures.len(),
        started.elapsed()
    );
    if !failures.is_empty() {
        // Keep the temporary directory with the failed trials' stores.
        let kept = ctx._dir.keep();
        panic!(
            "{} of {trials} trials failed (stores kept under {}):\n\n{}",
            failures.len(),
            kept.display(),
            failures.join("\n\n")
        );
    }
    assert!(trials >= 50);
    // The kills must mostly land inside the runs, or the test proves little.
    assert!(
        mid_run * 4 >= trials * 3,
        "only {mid_run} of {trials} kills landed before the run ended"
    );
}
