//! `mailsync backup` of each Dovecot-written store (Maildir, mbox, sdbox, mdbox in
//! `testdata/dovecot-generated/`) into every format, checked with Dovecot's own doveadm
//! (the oracle): the copy must read in Dovecot exactly as the source does.
//!
//! Compared for every (source, destination) pair, each Dovecot view normalised only where
//! the formats legitimately differ (see `same_separator`, `fetch_all`):
//! - `doveadm fetch "mailbox uid guid flags size.virtual date.received" all`,
//! - `doveadm mailbox status "messages uidvalidity uidnext" "*"`,
//! - `doveadm mailbox list`,
//! - every message's bytes (`doveadm fetch "mailbox uid size.physical text" all`),
//! - a second `backup` exits 0 and changes no byte of the destination, Dovecot's view of the
//!   source is the same before and after, and Dovecot logs nothing.
//!
//! Message GUIDs are compared on every pair, mbox destinations included: Dovecot's mbox
//! has no GUID field, it shows an MD5 of some header fields instead (mbox-mail.c
//! mbox_mail_get_md5_header). The fixture was imported from mbox files, so every format
//! holds exactly those header-hash GUIDs, and an mbox copy shows them too. (A store whose
//! GUIDs came from elsewhere could not keep them in mbox.)
//!
//! Message bytes are compared exactly, with no line-ending or trailing-newline allowance:
//! the fixture's messages all use LF (Dovecot's mail_save_crlf=no). Two messages have no
//! final newline in Maildir/sdbox/mdbox (`Sent Items` 7, `Entwürfe` 1); Dovecot's mbox save
//! ends every body with one (mbox-save.c: HEADER_FILTER_END_BODY_WITH_LF), so the mbox
//! fixture shows them one byte longer, and a copy must show the bytes of its own source.
//! A copy into mbox made by Dovecot's own dsync would add that byte; mailsync's mbox writer
//! keeps such a message as it is (the separator's newline is not part of the message) and
//! Dovecot reads it back exactly, so here the copy is held to the source's exact bytes.
//!
//! The fixture has messages sharing a GUID: `Entwürfe` 1 and all 7 of `Sent Items` show
//! d41d8cd9… (the MD5 of no header), both of `Archive/2002` one GUID. Dovecot 2.3.19's own
//! `doveadm backup` gives every message of such a group the bytes of the first one it
//! copied (dsync reuses a mail it already has by GUID); the byte comparison holds mailsync
//! to each message's own bytes.
//!
//! Mailbox GUIDs (`mailbox status guid`) are checked by separate tests below.

mod harness;

use harness::Env;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/dovecot-generated");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Maildir,
    Mbox,
    Sdbox,
    Mdbox,
}

use Format::*;

const ALL: [Format; 4] = [Maildir, Mbox, Sdbox, Mdbox];

impl Format {
    fn name(self) -> &'static str {
        match self {
            Maildir => "maildir",
            Mbox => "mbox",
            Sdbox => "sdbox",
            Mdbox => "mdbox",
        }
    }

    /// Mail location of a store of this format at `root`. mbox keeps INBOX apart; the
    /// fixture's INBOX is the file `INBOX` in the root, and copies use the same layout.
    fn location(self, root: &Path) -> String {
        let r = root.display();
        match self {
            Mbox => format!("mbox:{r}:INBOX={r}/INBOX"),
            other => format!("{}:{r}", other.name()),
        }
    }
}

/// A private Dovecot environment holding a copy of the `format` fixture at `src/<format>`;
/// returns the environment and the copy's mail location.
fn source_env(format: Format) -> (Env, String) {
    let env = Env::new();
    let src = env.root.join("src").join(format.name());
    harness::copy_tree(&Path::new(FIXTURES).join(format.name()), &src);
    env.chown_tree(&env.root.join("src"));
    let loc = format.location(&src);
    (env, loc)
}

fn dest_location(env: &Env, format: Format) -> String {
    format.location(&env.root.join("dest").join(format.name()))
}

fn doveadm_text(env: &Env, loc: &str, what: &str, args: &[&str]) -> String {
    let out = harness::clean(&format!("doveadm {what} ({loc})"), env.doveadm(loc, args));
    String::from_utf8(out).unwrap_or_else(|e| panic!("doveadm {what}: not UTF-8: {e}"))
}

/// Per-message metadata as Dovecot shows it, one sorted tab line a message.
fn fetch_all(env: &Env, loc: &str) -> String {
    let out = doveadm_text(
        env,
        loc,
        "fetch",
        &[
            "-f",
            "tab",
            "fetch",
            "mailbox uid guid flags size.virtual date.received",
            "all",
        ],
    );
    // \Recent is IMAP session state (the first reader of a new copy sees it), not synced.
    let out = out
        .replace("\t\\Recent ", "\t")
        .replace(" \\Recent", "")
        .replace("\t\\Recent\t", "\t\t");
    harness::same_separator(&out)
}

fn status_all(env: &Env, loc: &str, fields: &str) -> String {
    harness::same_separator(&doveadm_text(
        env,
        loc,
        "mailbox status",
        &["-f", "tab", "mailbox", "status", fields, "*"],
    ))
}

fn mailbox_list(env: &Env, loc: &str) -> String {
    harness::same_separator(&doveadm_text(
        env,
        loc,
        "mailbox list",
        &["mailbox", "list"],
    ))
}

/// Every message's bytes as Dovecot returns them (`text`: header and body), keyed by
/// (mailbox with `.` as separator, UID). doveadm's pager output streams `text` raw, without
/// adding a newline (doveadm-print-pager.c print_stream), and starts every further record
/// with `\f\n`; the message is cut at `size.physical` bytes, so a `\f\n` inside a body
/// can't split it, and a physical size that disagrees with the bytes fails the parse.
fn message_bytes(env: &Env, loc: &str) -> BTreeMap<(String, u32), Vec<u8>> {
    let out = harness::clean(
        &format!("doveadm fetch text ({loc})"),
        env.doveadm(
            loc,
            &[
                "-f",
                "pager",
                "fetch",
                "mailbox uid size.physical text",
                "all",
            ],
        ),
    );
    let mut messages = BTreeMap::new();
    let mut rest: &[u8] = &out;
    while !rest.is_empty() {
        let mailbox = take_field(&mut rest, "mailbox");
        let uid: u32 = take_field(&mut rest, "uid").parse().unwrap();
        let size: usize = take_field(&mut rest, "size.physical").parse().unwrap();
        rest = rest
            .strip_prefix(b"text:\n".as_slice())
            .unwrap_or_else(|| panic!("{loc}: no text field in {}", show(rest)));
        assert!(
            rest.len() >= size,
            "{loc}: {mailbox} uid {uid}: size.physical {size} but only {} bytes follow",
            rest.len()
        );
        let (text, after) = rest.split_at(size);
        rest = if after.is_empty() {
            after
        } else {
            after.strip_prefix(b"\x0c\n".as_slice()).unwrap_or_else(|| {
                panic!(
                    "{loc}: {mailbox} uid {uid}: text longer than size.physical {size}: {}",
                    show(&after[..after.len().min(80)])
                )
            })
        };
        let key = (mailbox.replace('/', "."), uid);
        assert!(
            messages.insert(key, text.to_vec()).is_none(),
            "{loc}: {mailbox} uid {uid} twice"
        );
    }
    messages
}

/// Takes one `name: value\n` line off the front of `rest`.
fn take_field(rest: &mut &[u8], name: &str) -> String {
    let prefix = format!("{name}: ");
    let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or_else(|| {
        panic!("expected {name}: in {}", show(rest));
    });
    let line = std::str::from_utf8(&rest[..line_end]).unwrap();
    let value = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected {name}: got {line:?}"))
        .to_string();
    *rest = &rest[line_end + 1..];
    value
}

fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// What Dovecot shows of a store.
#[derive(Debug, PartialEq)]
struct View {
    fetch: String,
    status: String,
    list: String,
    messages: BTreeMap<(String, u32), Vec<u8>>,
}

fn view(env: &Env, loc: &str) -> View {
    View {
        fetch: fetch_all(env, loc),
        status: status_all(env, loc, "messages uidvalidity uidnext"),
        list: mailbox_list(env, loc),
        messages: message_bytes(env, loc),
    }
}

/// Asserts two sorted tables are equal, showing only the lines that differ.
fn assert_same_lines(got: &str, want: &str, what: &str) {
    if got != want {
        let only_got: Vec<&str> = got
            .lines()
            .filter(|l| !want.lines().any(|w| w == *l))
            .collect();
        let only_want: Vec<&str> = want
            .lines()
            .filter(|l| !got.lines().any(|g| g == *l))
            .collect();
        panic!(
            "{what} differs\nonly in the copy:\n{}\nonly in the source:\n{}",
            only_got.join("\n"),
            only_want.join("\n")
        );
    }
}

/// Asserts two views are equal, naming the first part (and message) that differs.
fn assert_same_view(got: &View, want: &View, what: &str) {
    assert_same_lines(&got.list, &want.list, &format!("{what}: mailbox list"));
    assert_same_lines(
        &got.status,
        &want.status,
        &format!("{what}: mailbox status messages uidvalidity uidnext"),
    );
    assert_same_lines(&got.fetch, &want.fetch, &format!("{what}: fetch metadata"));
    let got_keys: Vec<_> = got.messages.keys().collect();
    let want_keys: Vec<_> = want.messages.keys().collect();
    assert_eq!(got_keys, want_keys, "{what}: messages with text");
    for (key, want_text) in &want.messages {
        let got_text = &got.messages[key];
        if got_text != want_text {
            let at = got_text
                .iter()
                .zip(want_text)
                .position(|(a, b)| a != b)
                .unwrap_or(got_text.len().min(want_text.len()));
            let from = at.saturating_sub(40);
            panic!(
                "{what}: {} uid {}: bytes differ at offset {at} (lengths {} vs {})\n\
                 got:  {}\nwant: {}",
                key.0,
                key.1,
                got_text.len(),
                want_text.len(),
                show(&got_text[from..got_text.len().min(at + 40)]),
                show(&want_text[from..want_text.len().min(at + 40)]),
            );
        }
    }
    assert_eq!(got, want, "{what}");
}

/// The `<format>.expected-status.txt` lines Dovecot wrote when it made the fixture, as
/// sorted `name\tmessages\tuidnext\tuidvalidity` lines.
fn expected_status(format: Format) -> String {
    let path = Path::new(FIXTURES).join(format!("{}.expected-status.txt", format.name()));
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let at = line.find(" messages=").expect("messages=");
            let (name, fields) = line.split_at(at);
            let field = |key: &str| {
                fields
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix(&format!("{key}=")).map(str::to_string))
                    .unwrap_or_else(|| panic!("{}: no {key} in {line}", path.display()))
            };
            format!(
                "{name}\t{}\t{}\t{}",
                field("messages"),
                field("uidnext"),
                field("uidvalidity")
            )
        })
        .collect();
    harness::same_separator(&lines.join("\n"))
}

/// `status_all` rows reordered as `name\tmessages\tuidnext\tuidvalidity`, header dropped
/// (doveadm prints the columns in its own order, named by its header line).
fn status_columns(status: &str) -> String {
    let (headers, rows): (Vec<&str>, Vec<&str>) =
        status.lines().partition(|l| l.starts_with("mailbox\t"));
    assert_eq!(headers.len(), 1, "status header in {status}");
    let header: Vec<&str> = headers[0].split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<String> = rows
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            format!(
                "{}\t{}\t{}\t{}",
                f[0],
                f[col("messages")],
                f[col("uidnext")],
                f[col("uidvalidity")]
            )
        })
        .collect();
    harness::same_separator(&rows.join("\n"))
}

/// Every file and directory under `root` with the bytes of each file.
fn tree_bytes(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                out.insert(rel, None);
            } else {
                out.insert(rel, Some(std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out
}

fn backup(env: &Env, src: &str, dest: &str, what: &str) {
    harness::clean(
        &format!("{what}: mailsync backup"),
        env.mailsync(src, &["backup", dest]),
    );
}

/// The whole check for one (source, destination) pair.
fn backup_reads_the_same_in_dovecot(from: Format, into: Format) {
    let what = format!("{} -> {}", from.name(), into.name());
    let (env, src) = source_env(from);
    let want = view(&env, &src);
    // The copy is the fixture Dovecot made: 4 mailboxes, 53 messages with UID gaps.
    assert_eq!(
        status_columns(&want.status),
        expected_status(from),
        "{what}: source fixture"
    );
    assert_eq!(
        want.messages.len(),
        43 + 2 + 7 + 1,
        "{what}: source fixture"
    );

    let dest = dest_location(&env, into);
    backup(&env, &src, &dest, &what);
    let got = view(&env, &dest);
    assert_same_view(&got, &want, &what);

    // A second run finds nothing to do: no byte of the destination changes.
    let dest_root = env.root.join("dest").join(into.name());
    // (Dovecot's reads write its own indexes, so the snapshot is taken after them.)
    let highest_before = status_all(&env, &dest, "highestmodseq");
    let before = tree_bytes(&dest_root);
    backup(&env, &src, &dest, &format!("{what} (second run)"));
    let after = tree_bytes(&dest_root);
    let changed: std::collections::BTreeSet<_> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "{what}: second run changed {changed:?}");
    assert_eq!(
        status_all(&env, &dest, "highestmodseq"),
        highest_before,
        "{what}: second run"
    );
    assert_same_view(&view(&env, &dest), &want, &format!("{what} (second run)"));

    // backup never writes the source.
    assert_same_view(&view(&env, &src), &want, &format!("{what}: source after"));
    assert_eq!(env.dovecot_log(), "", "{what}: Dovecot logged something");
}

macro_rules! pair_tests {
    ($($test:ident: $from:ident => $into:ident;)*) => {$(
        #[test]
        fn $test() {
            backup_reads_the_same_in_dovecot($from, $into);
        }
    )*};
}

pair_tests! {
    maildir_into_maildir: Maildir => Maildir;
    maildir_into_mbox: Maildir => Mbox;
    maildir_into_sdbox: Maildir => Sdbox;
    maildir_into_mdbox: Maildir => Mdbox;
    mbox_into_maildir: Mbox => Maildir;
    mbox_into_mbox: Mbox => Mbox;
    mbox_into_sdbox: Mbox => Sdbox;
    mbox_into_mdbox: Mbox => Mdbox;
    sdbox_into_maildir: Sdbox => Maildir;
    sdbox_into_mbox: Sdbox => Mbox;
    sdbox_into_sdbox: Sdbox => Sdbox;
    sdbox_into_mdbox: Sdbox => Mdbox;
    mdbox_into_maildir: Mdbox => Maildir;
    mdbox_into_mbox: Mdbox => Mbox;
    mdbox_into_sdbox: Mdbox => Sdbox;
    mdbox_into_mdbox: Mdbox => Mdbox;
}

/// Backs up every source format into `into` and compares the mailbox GUIDs Dovecot shows
/// (`mailbox status guid`): dsync gives a backup the source's mailbox GUIDs, also for the
/// INBOX each side has on its own (dsync-brain-mailbox-tree-sync.c sync_create_box, then
/// mailbox_update with mailbox_guid), and Dovecot's `doveadm backup` does so into each of
/// the four formats.
fn mailbox_guids_carry_over_into(into: Format) {
    for from in ALL {
        let what = format!("{} -> {}", from.name(), into.name());
        let (env, src) = source_env(from);
        let want = status_all(&env, &src, "guid");
        assert_eq!(want.lines().count(), 1 + 4, "{what}: {want}");
        let dest = dest_location(&env, into);
        backup(&env, &src, &dest, &what);
        assert_eq!(
            status_all(&env, &dest, "guid"),
            want,
            "{what}: mailbox GUIDs"
        );
        assert_eq!(env.dovecot_log(), "", "{what}: Dovecot logged something");
    }
}

#[test]
fn mailbox_guids_carry_over_into_maildir() {
    mailbox_guids_carry_over_into(Maildir);
}

#[test]
fn mailbox_guids_carry_over_into_sdbox() {
    mailbox_guids_carry_over_into(Sdbox);
}

#[test]
fn mailbox_guids_carry_over_into_mdbox() {
    mailbox_guids_carry_over_into(Mdbox);
}

#[test]
fn mailbox_guids_carry_over_into_mbox() {
    mailbox_guids_carry_over_into(Mbox);
}
