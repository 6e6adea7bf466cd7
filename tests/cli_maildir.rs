//! Black-box tests of every mailsync command and option on Maildir stores in temporary
//! directories, with the real doveadm's output compared where it is cheap: both tools run
//! on the same store (tests/harness) and must print the same bytes and exit codes.

#[path = "harness/mod.rs"]
mod harness;

use harness::{clean, sorted_lines, sorted_pager_records, Env};
use std::process::Output;

const LOC: &str = "maildir:~/Maildir";

/// Messages covering folded and encoded headers, a Latin-1 body, no trailing newline and
/// a missing Date.
fn seed_messages() -> Vec<&'static [u8]> {
    vec![
        b"Subject: hello\n world folded\nFrom: =?UTF-8?Q?J=C3=B6rg?= <j@x.org>\nTo: a@b.c, \"Doe, J\" <d@e.f>\nDate: Tue, 05 Mar 2024 10:20:30 +0100\n\nline one\nline two\n",
        b"Subject: two\n\nbody2\n",
        b"Subject: =?UTF-8?B?R3LDvMOfZQ==?=\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\ncaf\xe9 latin\n",
        b"Subject: nobody",
    ]
}

/// A Maildir++ store written by doveadm: INBOX with four messages and flags, Sub1 with one
/// message, an empty Entwürfe and a Foo.Bar child with a ghost parent.
fn seeded_env() -> Env {
    let env = Env::new();
    for m in seed_messages() {
        clean("doveadm save", env.doveadm_stdin(LOC, &["save"], Some(m)));
    }
    clean(
        "doveadm create",
        env.doveadm(LOC, &["mailbox", "create", "Foo.Bar", "Sub1", "Entwürfe"]),
    );
    clean(
        "doveadm save Sub1",
        env.doveadm_stdin(LOC, &["save", "-m", "Sub1"], Some(b"Subject: sub\n\nx\n")),
    );
    clean(
        "flags",
        env.doveadm(
            LOC,
            &[
                "flags",
                "add",
                "\\Seen \\Flagged $Label1",
                "mailbox",
                "INBOX",
                "uid",
                "1",
            ],
        ),
    );
    clean(
        "flags",
        env.doveadm(
            LOC,
            &["flags", "add", "\\Answered", "mailbox", "INBOX", "uid", "2"],
        ),
    );
    env
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts both tools give the same exit code, stdout and stderr (doveadm's
/// `doveadm(` prefix read as `mailsync(`).
fn assert_same(env: &Env, args: &[&str]) -> Output {
    let d = env.doveadm(LOC, args);
    let m = env.mailsync(LOC, args);
    assert_eq!(
        m.status.code(),
        d.status.code(),
        "exit code of {args:?}: doveadm stderr {} / mailsync stderr {}",
        text(&d.stderr),
        text(&m.stderr)
    );
    assert_eq!(text(&m.stdout), text(&d.stdout), "stdout of {args:?}");
    assert_eq!(m.stdout, d.stdout, "stdout bytes of {args:?}");
    let d_err = text(&d.stderr).replace("doveadm(", "mailsync(");
    assert_eq!(text(&m.stderr), d_err, "stderr of {args:?}");
    m
}

/// Asserts both tools give the same exit code and the same output lines, in any order
/// (the tools may visit mailboxes in different orders).
fn assert_same_lines_in_any_order(env: &Env, args: &[&str]) -> Output {
    let d = env.doveadm(LOC, args);
    let m = env.mailsync(LOC, args);
    assert_eq!(m.status.code(), d.status.code(), "{args:?}");
    assert_eq!(sorted_lines(&m.stdout), sorted_lines(&d.stdout), "{args:?}");
    m
}

/// Fields whose values come from the store alone (modseq is left out: it depends on
/// Dovecot's index, which the Maildir backend does not write).
const FIELDS: &str = "uid seq flags guid mailbox mailbox-guid size.physical size.virtual hdr.subject hdr.from hdr.to date.sent date.sent.unixtime date.received date.received.unixtime date.saved.unixtime user storageid refcount pop3.uidl pop3.order hdr.subject.utf8 hdr.from.address hdr.to.address hdr.from.address_name hdr.from.address_name.utf8";

#[test]
fn fetch_matches_doveadm_in_every_formatter() {
    let env = seeded_env();
    for f in ["pager", "flow", "tab", "json", "table"] {
        assert_same(&env, &["-f", f, "fetch", FIELDS, "mailbox", "INBOX", "all"]);
    }
    // Streams, including a message without a trailing newline (pager glues the next
    // title on) and tab's stray tabs.
    for f in ["pager", "flow", "tab", "json"] {
        assert_same(
            &env,
            &[
                "-f",
                f,
                "fetch",
                "uid hdr body text",
                "mailbox",
                "INBOX",
                "all",
            ],
        );
    }
    // Default formatter of fetch is pager; -f after the command name is accepted too.
    let m = assert_same(&env, &["fetch", "uid", "mailbox", "INBOX", "uid", "1:2"]);
    assert_eq!(text(&m.stdout), "uid: 1\n\x0c\nuid: 2\n");
    let m = env.mailsync(
        LOC,
        &[
            "fetch", "-f", "json", "uid", "mailbox", "INBOX", "uid", "1:2",
        ],
    );
    assert_eq!(text(&m.stdout), "[{\"uid\":\"1\"},{\"uid\":\"2\"}]");
    // No match: formatter's empty output.
    for f in ["tab", "json", "table"] {
        assert_same(
            &env,
            &[
                "-f",
                f,
                "fetch",
                "uid flags",
                "mailbox",
                "INBOX",
                "uid",
                "99",
            ],
        );
    }
    assert_same(&env, &["fetch", "uid", "mailbox", "Nope", "all"]);
}

#[test]
fn fetch_over_all_mailboxes_matches_doveadm_sorted() {
    let env = seeded_env();
    let args = ["fetch", "mailbox uid guid hdr.subject", "all"];
    let d = env.doveadm(LOC, &args);
    let m = env.mailsync(LOC, &args);
    assert_eq!(m.status.code(), Some(0), "{}", text(&m.stderr));
    assert_eq!(
        sorted_pager_records(&m.stdout),
        sorted_pager_records(&d.stdout)
    );
}

#[test]
fn fetch_dates_follow_tz() {
    let env = seeded_env();
    let m = env.mailsync(
        LOC,
        &[
            "-f",
            "flow",
            "fetch",
            "date.sent",
            "mailbox",
            "INBOX",
            "uid",
            "1:2",
        ],
    );
    assert_eq!(
        text(&m.stdout),
        "date.sent=2024-03-05 09:20:30 (+0100)\ndate.sent=1970-01-01 00:00:00 (+0000)\n"
    );
}

#[test]
fn search_queries_match_doveadm() {
    let env = seeded_env();
    let queries: &[&[&str]] = &[
        &["all"],
        &["uid", "2:3"],
        &["uid", "3:*"],
        &["uid", "1,4"],
        &["uid", "9:7"],
        &["uid", "*"],
        &["*"],
        &["1,3:4"],
        &["subject", "world"],
        &["subject", "grüße"],
        &["from", "jörg"],
        &["to", "doe"],
        &["header", "to", "d@e.f"],
        &["header", "x-none", ""],
        &["header", "subject", ""],
        &["body", "é"],
        &["body", "LINE TWO"],
        &["text", "latin"],
        &["text", "hello"],
        &["body", "hello"],
        &["larger", "100"],
        &["smaller", "1K"],
        &["smaller", "1kb"],
        &["seen"],
        &["unseen"],
        &["flagged", "or", "answered"],
        &["seen", "flagged", "or", "answered"],
        &["not", "(", "uid", "1", "or", "uid", "2", ")"],
        &["(", "uid", "1", "or", "uid", "2", ")", "seen"],
        &["keyword", "$label1"],
        &["unkeyword", "$Label1"],
        &["new"],
        &["old"],
        &["recent"],
        &["since", "2024-03-05"],
        &["before", "1-Jan-2030"],
        &["sentbefore", "2024-03-06"],
        &["sentsince", "2024-03-05"],
        &["senton", "2024-03-05"],
        &["senton", "5-Mar-2024"],
        &["savedsince", "1d"],
        &["savedbefore", "1d"],
        &["since", "1709630430"],
        &["mailbox", "inbox", "uid", "1"],
        &["mailbox", "Sub*", "all"],
        &["mailbox", "%", "seen"],
        &["mailbox", "Nope", "all"],
        &["bogus"],
        &["seen", "or", "answered", "flagged"],
        &["larger", "1x"],
        &["uid", "0"],
        &["0"],
        &["since", "yesterday"],
        &["larger"],
        &["(", "seen"],
        &["seen", ")"],
    ];
    for q in queries {
        let mut args = vec!["search", "mailbox", "INBOX"];
        args.extend_from_slice(q);
        assert_same(&env, &args);
    }
    // Over all mailboxes: same lines, in any order.
    for q in [&["all"][..], &["flagged"], &["mailbox", "Sub1", "all"]] {
        let mut args = vec!["search"];
        args.extend_from_slice(q);
        assert_same_lines_in_any_order(&env, &args);
    }
    assert_same(&env, &["-f", "json", "search", "mailbox", "INBOX", "seen"]);
}

#[test]
fn mailbox_status_and_list_match_doveadm() {
    let env = seeded_env();
    // highestmodseq and firstsaved are left out (index data / saved-date source).
    for args in [
        &[
            "mailbox",
            "status",
            "messages recent uidnext uidvalidity unseen vsize guid",
            "INBOX",
        ][..],
        &["mailbox", "status", "vsize messages", "Sub1"],
        &["mailbox", "status", "-t", "all", "*"],
        &["mailbox", "status", "-t", "messages", "Sub*"],
        &["mailbox", "status", "-f", "messages", "-f", "guid", "INBOX"],
        &["mailbox", "status", "messages", "Nope"],
        &["mailbox", "status", "messages", "Nope*"],
        &["mailbox", "status", "bogus", "INBOX"],
        &["mailbox", "status", "Messages", "INBOX"],
        &["mailbox", "status", "-t", "guid", "INBOX"],
        &[
            "-f",
            "pager",
            "mailbox",
            "status",
            "messages unseen",
            "INBOX",
        ],
        &[
            "-f",
            "json",
            "mailbox",
            "status",
            "messages unseen",
            "INBOX",
        ],
        &[
            "-f",
            "table",
            "mailbox",
            "status",
            "messages unseen",
            "INBOX",
        ],
        &["-f", "tab", "mailbox", "status", "messages unseen", "INBOX"],
        &["mailbox", "list", "-7", "Entw*"],
        &["mailbox", "list", "-8", "Entw*"],
        &["mailbox", "list", "Nope"],
        &["mailbox", "list", "inbox"],
        &["mailbox", "list", "-s"],
    ] {
        assert_same(&env, args);
    }
    for args in [
        &["mailbox", "list"][..],
        &["mailbox", "list", "%"],
        &["mailbox", "status", "messages", "*"],
    ] {
        assert_same_lines_in_any_order(&env, args);
    }
    // The extension: -f with a formatter name after `mailbox status`.
    let m = env.mailsync(
        LOC,
        &["mailbox", "status", "-f", "json", "messages", "Sub1"],
    );
    assert_eq!(
        text(&m.stdout),
        "[{\"mailbox\":\"Sub1\",\"messages\":\"1\"}]"
    );
}

#[test]
fn error_messages_and_codes_match_doveadm() {
    let env = seeded_env();
    for args in [
        &["mailbox", "create", "INBOX"][..],
        &["mailbox", "create", "A/B"],
        &["mailbox", "delete", "Nope"],
        &["mailbox", "rename", "Nope", "X"],
        &["copy", "Nope", "all"],
        &["move", "Nope", "all"],
        &["move", "Nope", "mailbox", "INBOX", "all"],
        &["search", "mailbox", "Nope", "all"],
        &["expunge", "all"],
        &["expunge", "mailbox", "INBOX"],
        &["flags", "add", "\\Bogus", "all"],
        &["fetch", "hdr.to.bogus", "mailbox", "INBOX", "all"],
        &["-f", "bogus", "mailbox", "list"],
        &["mailbox", "subscribe", "Zed"],
        &["mailbox", "unsubscribe", "Zed"],
    ] {
        assert_same(&env, args);
    }
    let args = ["save", "-m", "Nope"];
    let d = env.doveadm_stdin(LOC, &args, Some(b""));
    let m = env.mailsync_stdin(LOC, &args, Some(b""));
    assert_eq!(
        (m.status.code(), text(&m.stderr)),
        (
            d.status.code(),
            text(&d.stderr).replace("doveadm(", "mailsync(")
        )
    );
    // Silent commands print the formatter's empty output when -f is given.
    assert_same(&env, &["-f", "json", "mailbox", "subscribe", "Zed"]);
    assert_same(&env, &["-f", "tab", "mailbox", "unsubscribe", "Zed"]);
}

fn fetch_all_sorted(env: &Env, home_loc: &str) -> Vec<Vec<u8>> {
    let out = env.mailsync(
        home_loc,
        &["fetch", "mailbox uid flags guid hdr.subject", "all"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    sorted_pager_records(&out.stdout)
}

#[test]
fn modifying_commands_do_what_doveadm_does() {
    let env = seeded_env();
    let src = env.home.join("Maildir");
    for copy in ["A", "B"] {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(env.home.join(copy))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let steps: &[&[&str]] = &[
        &[
            "flags",
            "replace",
            "\\Draft kwA",
            "mailbox",
            "INBOX",
            "uid",
            "2",
        ],
        &["flags", "remove", "\\Seen", "mailbox", "INBOX", "uid", "1"],
        &["flags", "add", "kwB \\Deleted", "mailbox", "INBOX", "3:4"],
        &["expunge", "mailbox", "INBOX", "deleted", "uid", "4"],
        &["copy", "Sub1", "mailbox", "INBOX", "uid", "1"],
        &["move", "Foo.Bar", "mailbox", "INBOX", "uid", "2"],
    ];
    for s in steps {
        clean("doveadm", env.doveadm("maildir:~/A", s));
        clean("mailsync", env.mailsync("maildir:~/B", s));
    }
    let a = fetch_all_sorted(&env, "maildir:~/A");
    assert_eq!(fetch_all_sorted(&env, "maildir:~/B"), a);
    assert!(a.len() == 5, "{a:?}");
}

#[test]
fn save_from_stdin_file_and_mailbox() {
    let env = Env::new();
    clean(
        "save",
        env.mailsync_stdin(LOC, &["save"], Some(b"Subject: one\n\nx\n")),
    );
    clean("create", env.mailsync(LOC, &["mailbox", "create", "Box"]));
    let file = env.home.join("msg.eml");
    std::fs::write(&file, b"Subject: from file\n\ny\n").unwrap();
    env.chown_tree(&file);
    clean(
        "save file",
        env.mailsync(LOC, &["save", "-m", "Box", file.to_str().unwrap()]),
    );
    clean(
        "save empty",
        env.mailsync_stdin(LOC, &["save", "-m", "Box"], Some(b"")),
    );
    let out = clean(
        "fetch",
        env.mailsync(
            LOC,
            &[
                "-f",
                "flow",
                "fetch",
                "mailbox hdr.subject size.physical",
                "all",
            ],
        ),
    );
    let mut lines: Vec<String> = text(&out).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "mailbox=Box hdr.subject= size.physical=0",
            "mailbox=Box hdr.subject=from file size.physical=22",
            "mailbox=INBOX hdr.subject=one size.physical=16",
        ]
    );
    // doveadm reads what mailsync saved.
    let d = clean(
        "doveadm fetch",
        env.doveadm(
            LOC,
            &[
                "-f",
                "flow",
                "fetch",
                "hdr.subject",
                "mailbox",
                "Box",
                "all",
            ],
        ),
    );
    assert_eq!(text(&d), "hdr.subject=from file\nhdr.subject=\n");
    let o = env.mailsync(LOC, &["save", "/nonexistent/file"]);
    assert_eq!(o.status.code(), Some(75));
    assert_eq!(
        text(&o.stderr),
        "mailsync(alice): Error: read(/nonexistent/file) failed: open(/nonexistent/file) failed: No such file or directory\n"
    );
}

#[test]
fn mailbox_commands_and_options() {
    let env = Env::new();
    let guid = "0123456789abcdef0123456789abcdef";
    clean(
        "create",
        env.mailsync(LOC, &["mailbox", "create", "-s", "-g", guid, "Archive"]),
    );
    clean(
        "create",
        env.mailsync(
            LOC,
            &[
                "mailbox",
                "create",
                "Archive.2024",
                "Archive.2023",
                "Entwürfe",
            ],
        ),
    );
    let st = clean(
        "status",
        env.mailsync(LOC, &["mailbox", "status", "guid", "Archive"]),
    );
    assert_eq!(text(&st), format!("Archive guid={guid}\n"));
    // doveadm sees the same GUID and subscription.
    let d = clean(
        "doveadm status",
        env.doveadm(LOC, &["mailbox", "status", "guid", "Archive"]),
    );
    assert_eq!(d, st);
    assert_eq!(
        text(&clean(
            "list -s",
            env.mailsync(LOC, &["mailbox", "list", "-s"])
        )),
        "Archive\n"
    );
    assert_eq!(
        text(&clean(
            "list -7",
            env.mailsync(LOC, &["mailbox", "list", "-7", "Entw*"])
        )),
        "Entw&APw-rfe\n"
    );
    // rename -s moves the subscription
    clean(
        "rename",
        env.mailsync(LOC, &["mailbox", "rename", "-s", "Entwürfe", "Drafts"]),
    );
    clean(
        "subscribe",
        env.mailsync(LOC, &["mailbox", "subscribe", "Drafts"]),
    );
    clean(
        "rename",
        env.mailsync(LOC, &["mailbox", "rename", "-s", "Drafts", "Drafts2"]),
    );
    assert_eq!(
        sorted_lines(&clean(
            "list -s",
            env.mailsync(LOC, &["mailbox", "list", "-s"])
        )),
        "Archive\nDrafts2"
    );
    // delete -e refuses a non-empty mailbox (rc 65), delete -r -s takes the children
    clean(
        "save",
        env.mailsync_stdin(LOC, &["save", "-m", "Archive.2024"], Some(b"S: x\n\n")),
    );
    let o = env.mailsync(LOC, &["mailbox", "delete", "-e", "Archive.2024"]);
    assert_eq!(o.status.code(), Some(65));
    assert_eq!(
        text(&o.stderr),
        "mailsync(alice): Error: Can't delete mailbox Archive.2024: Mailbox isn't empty\n"
    );
    clean(
        "delete -r",
        env.mailsync(LOC, &["mailbox", "delete", "-r", "-s", "Archive"]),
    );
    assert_eq!(
        sorted_lines(&clean("list", env.mailsync(LOC, &["mailbox", "list"]))),
        "Drafts2\nINBOX"
    );
    assert_eq!(
        text(&clean(
            "list -s",
            env.mailsync(LOC, &["mailbox", "list", "-s"])
        )),
        "Drafts2\n"
    );
    // Deleting several names continues after a failure; the worst code wins.
    clean(
        "create",
        env.mailsync(LOC, &["mailbox", "create", "X1", "X2"]),
    );
    let o = env.mailsync(LOC, &["mailbox", "delete", "X1", "Nope", "X2"]);
    assert_eq!(o.status.code(), Some(68));
    assert_eq!(
        sorted_lines(&clean("list", env.mailsync(LOC, &["mailbox", "list"]))),
        "Drafts2\nINBOX"
    );
}

#[test]
fn config_namespace_separator_and_overrides() {
    let env = Env::with_config("namespace inbox {\n  inbox = yes\n  separator = /\n}\n");
    clean(
        "create",
        env.mailsync(LOC, &["mailbox", "create", "Foo/Baz"]),
    );
    assert!(env.home.join("Maildir/.Foo.Baz").is_dir());
    let m = assert_same_lines_in_any_order(&env, &["mailbox", "list"]);
    assert!(text(&m.stdout).contains("Foo/Baz"));
    // -o overrides the namespace separator, as doveadm's -o namespace/inbox/separator.
    let args = [
        "-o",
        "namespace/inbox/separator=:",
        "mailbox",
        "list",
        "Foo*",
    ];
    let m = assert_same_lines_in_any_order(&env, &args);
    assert!(text(&m.stdout).contains("Foo:Baz"));
    // -D debug goes to stderr only; -v changes nothing.
    let m = env.mailsync(LOC, &["-D", "-v", "mailbox", "list", "Foo/Baz"]);
    assert_eq!(text(&m.stdout), "Foo/Baz\n");
    assert!(
        text(&m.stderr).contains("Debug: mail_location = maildir:"),
        "{}",
        text(&m.stderr)
    );
}

#[test]
fn location_expansion_in_o_value() {
    // %u in an -o value is expanded (deliberately unlike doveadm).
    let env = Env::new();
    clean(
        "create",
        env.mailsync("maildir:~/M-%u", &["mailbox", "create", "X"]),
    );
    assert!(env.home.join("M-alice/.X").is_dir());
}

#[test]
fn permission_denied_exits_77_and_other_mailboxes_still_work() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    clean(
        "create",
        env.mailsync(LOC, &["mailbox", "create", "Locked", "Open"]),
    );
    clean(
        "save",
        env.mailsync_stdin(LOC, &["save", "-m", "Open"], Some(b"Subject: o\n\n")),
    );
    let cur = env.home.join("Maildir/.Locked/cur");
    std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(0o000)).unwrap();
    let o = env.mailsync(LOC, &["mailbox", "status", "messages", "Open", "Locked"]);
    std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(o.status.code(), Some(77), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "Open messages=1\n");
    assert_eq!(
        text(&o.stderr),
        format!(
            "mailsync(alice): Error: Mailbox Locked: Failed to lookup mailbox status: opendir({}) failed: Permission denied\n",
            cur.display()
        )
    );
}

#[test]
fn header_edge_cases_match_doveadm() {
    let env = Env::new();
    let msgs: [&[u8]; 5] = [
        b"Subject: crlf\r\n folded\r\nX-Dup: a\r\nX-Dup: b\r\nX-Empty:\r\nX-NoSp:val\r\nX-Tab:\tt1\r\n\tt2\r\nX-Lat: caf\xe9\r\nFrom: \"Q, R\" <q@r>, s@t\r\nDate: 5 Mar 2024 04:20:30 -0500 (EST)\r\n\r\nbody\r\nline\x00nul\r\n",
        b"X-Only: header\n",
        b"\nno headers\n",
        b"Subject: =?utf-8?q?a?= =?utf-8?q?b?= c =?iso-8859-1?q?caf=E9?=\nDate: garbage\n\n",
        b"X-T: a\tb\n  c\n\td\n\n",
    ];
    for m in msgs {
        clean("doveadm save", env.doveadm_stdin(LOC, &["save"], Some(m)));
    }
    let fields = "uid hdr.subject hdr.x-dup hdr.x-empty hdr.x-nosp hdr.x-tab hdr.x-lat hdr.x-t hdr.from.address hdr.from.address_name hdr.subject.utf8 hdr.x-tab.utf8 hdr.x-t.utf8 date.sent date.sent.unixtime size.virtual hdr body";
    for f in ["pager", "json", "tab", "flow"] {
        assert_same(&env, &["-f", f, "fetch", fields, "mailbox", "INBOX", "all"]);
    }
    for q in [
        &["header", "x-lat", "café"][..],
        &["header", "x-dup", "b"],
        &["subject", "crlf folded"],
        &["subject", "ab"],
        &["from", "q@r"],
        &["body", "nul"],
        &["text", "x-only"],
        &["header", "x-empty", ""],
        &["sentbefore", "2000-01-01"],
        &["senton", "2024-03-05"],
        &["header", "x-t", "c d"],
        &["header", "x-t", "c\td"],
        &["header", "x-t", "b  c"],
    ] {
        let mut args = vec!["search", "mailbox", "INBOX"];
        args.extend_from_slice(q);
        assert_same(&env, &args);
    }
}

#[test]
fn mime_body_search_matches_doveadm() {
    let env = Env::new();
    let msgs: [&[u8]; 2] = [
        b"Content-Type: multipart/mixed; boundary=\"b1\"\n\npreamble text\n--b1\nContent-Type: text/plain\n\nfirst part\n--b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nc2VjcmV0YmluYXJ5\n--b1\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n<p>h=C3=A9llo <b>bold</b> wor=\nld</p>\n--b1\nContent-Type: message/rfc822\n\nSubject: inner subj\n\ninner body\n--b1--\nepilogue text\n",
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\nw6l0w6kgY2hhdXQ=\n",
    ];
    for m in msgs {
        clean("doveadm save", env.doveadm_stdin(LOC, &["save"], Some(m)));
    }
    for needle in [
        "first part",
        "secretbinary",
        "preamble",
        "epilogue",
        "héllo",
        "world",
        "<b>",
        "inner subj",
        "inner body",
        "été",
        "application/octet",
        "chaut",
        "c2VjcmV0",
    ] {
        for key in ["body", "text"] {
            assert_same(&env, &["search", "mailbox", "INBOX", key, needle]);
        }
    }
}

/// Runs mailsync directly (not through the harness, which pins TZ=UTC).
fn mailsync_tz(home: &std::path::Path, tz: &str, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailsync"))
        .env_clear()
        .env("USER", "alice")
        .env("HOME", home)
        .env("TZ", tz)
        .args(["-o", "mail_location=maildir:~/Maildir"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn dates_are_printed_and_searched_in_the_tz_zone() {
    let dir = tempfile::tempdir().unwrap();
    let msg = b"Subject: d\nDate: Tue, 05 Mar 2024 10:20:30 +0100\n\nx\n";
    assert!(mailsync_tz(dir.path(), "UTC", &["save"], msg)
        .status
        .success());
    let fetch = |tz: &str| {
        let o = mailsync_tz(
            dir.path(),
            tz,
            &["-f", "flow", "fetch", "date.sent date.sent.unixtime", "all"],
            b"",
        );
        text(&o.stdout)
    };
    assert_eq!(
        fetch("UTC"),
        "date.sent=2024-03-05 09:20:30 (+0100) date.sent.unixtime=1709630430\n"
    );
    assert_eq!(
        fetch("Europe/Berlin"),
        "date.sent=2024-03-05 10:20:30 (+0100) date.sent.unixtime=1709630430\n"
    );
    assert_eq!(
        fetch("America/New_York"),
        "date.sent=2024-03-05 04:20:30 (+0100) date.sent.unixtime=1709630430\n"
    );
    // senton compares the header's wall-clock date with the local calendar day.
    let search = |tz: &str, day: &str| {
        let o = mailsync_tz(dir.path(), tz, &["search", "senton", day], b"");
        text(&o.stdout).lines().count()
    };
    assert_eq!(search("UTC", "2024-03-05"), 1);
    assert_eq!(search("America/New_York", "2024-03-05"), 1);
    assert_eq!(search("America/New_York", "2024-03-04"), 0);
    assert_eq!(search("UTC", "2024-03-06"), 0);
}
