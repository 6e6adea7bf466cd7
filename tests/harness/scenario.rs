//! The interop scenario every format runs (issue #2 point 5, #4 point 4): the same mailbox
//! operations through doveadm and through mailsync, and the read-only views both tools must
//! agree on.

use super::{clean, ok, sorted_lines, sorted_pager_records, sorted_table, Env};

pub const NS_SLASH: &str = "namespace inbox {\n  inbox = yes\n  separator = /\n}\n";

/// Messages with the shapes that break naive code: CRLF, 8-bit, NUL, no final newline,
/// folded headers, a large body, an empty message.
pub fn messages() -> Vec<Vec<u8>> {
    let mut large = b"From: big@example.com\nSubject: large\nMessage-ID: <big@x>\n\n".to_vec();
    for i in 0..4000 {
        large.extend_from_slice(
            format!("line {i:05} of a large body, padded to make it longer\n").as_bytes(),
        );
    }
    vec![
        b"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: one\nDate: Tue, 05 Mar 2024 10:20:30 +0100\nMessage-ID: <1@example.com>\n\nbody one\n".to_vec(),
        b"From: carol@example.com\r\nSubject: crlf\r\nMessage-ID: <2@example.com>\r\n\r\nline one\r\nline two\r\n".to_vec(),
        b"From: =?UTF-8?Q?J=C3=B6rg?= <j@example.com>\nSubject: hello\n world folded\nContent-Type: text/plain; charset=iso-8859-1\n\nlatin1 \xe9\xe8 no final newline".to_vec(),
        b"Subject: nul\n\nbefore\0after\n".to_vec(),
        b"Subject: five\nX-Mixed: yes\r\n\nmixed\r\nendings\n".to_vec(),
        large,
    ]
}

pub struct Scenario {
    pub config: &'static str,
    pub location: &'static str,
    /// A nested mailbox name in this namespace's separator, and its parent.
    pub parent: &'static str,
    pub nested: &'static str,
}

pub type Tool = fn(&Env, &str, &[&str], Option<&[u8]>) -> std::process::Output;

pub fn doveadm_tool(
    env: &Env,
    loc: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> std::process::Output {
    env.doveadm_stdin(loc, args, stdin)
}

pub fn mailsync_tool(
    env: &Env,
    loc: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> std::process::Output {
    env.mailsync_stdin(loc, args, stdin)
}

/// The operations of point 5: nested and non-ASCII folders, saves, subscriptions, flags,
/// keywords, expunges, a rename.
pub fn populate(env: &Env, sc: &Scenario, tool: Tool, name: &str) {
    let loc = sc.location;
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        clean(&format!("{name} {args:?}"), tool(env, loc, args, stdin));
    };
    run(
        &[
            "mailbox",
            "create",
            sc.parent,
            sc.nested,
            "Entwürfe",
            "Sent Items",
            "Trash",
        ],
        None,
    );
    run(
        &[
            "mailbox",
            "subscribe",
            "INBOX",
            "Sent Items",
            "Entwürfe",
            sc.nested,
        ],
        None,
    );
    let msgs = messages();
    for m in &msgs {
        run(&["save", "-m", "INBOX"], Some(m));
    }
    run(&["save", "-m", sc.nested], Some(&msgs[0]));
    run(&["save", "-m", sc.nested], Some(b""));
    run(&["save", "-m", "Entwürfe"], Some(&msgs[2]));
    run(&["save", "-m", "Trash"], Some(&msgs[1]));
    run(
        &[
            "flags",
            "add",
            "\\Seen \\Flagged $Forwarded Junk",
            "mailbox",
            "INBOX",
            "uid",
            "1:2",
        ],
        None,
    );
    run(
        &[
            "flags",
            "add",
            "\\Answered $label1",
            "mailbox",
            "INBOX",
            "uid",
            "3",
        ],
        None,
    );
    run(
        &[
            "flags",
            "remove",
            "\\Flagged Junk",
            "mailbox",
            "INBOX",
            "uid",
            "2",
        ],
        None,
    );
    run(
        &[
            "flags",
            "replace",
            "\\Draft NonJunk",
            "mailbox",
            "INBOX",
            "uid",
            "4",
        ],
        None,
    );
    run(
        &["flags", "add", "\\Deleted", "mailbox", "INBOX", "uid", "6"],
        None,
    );
    run(
        &["flags", "add", "\\Seen", "mailbox", "Entwürfe", "all"],
        None,
    );
    run(&["expunge", "mailbox", "INBOX", "uid", "5"], None);
    run(&["save", "-m", "INBOX"], Some(&msgs[4]));
    run(&["mailbox", "rename", "Trash", "Deleted Items"], None);
    run(&["mailbox", "unsubscribe", "Entwürfe"], None);
}

/// Every read-only view both tools must agree on, returned per tool for diffing.
pub fn views(env: &Env, sc: &Scenario, tool: Tool, name: &str) -> Vec<(String, Vec<u8>)> {
    let loc = sc.location;
    let get = |args: &[&str]| clean(&format!("{name} {args:?}"), tool(env, loc, args, None));
    vec![
        (
            "mailbox list".into(),
            sorted_lines(&get(&["mailbox", "list"])).into_bytes(),
        ),
        (
            "mailbox list -s".into(),
            sorted_lines(&get(&["mailbox", "list", "-s"])).into_bytes(),
        ),
        (
            "mailbox status".into(),
            sorted_table(&get(&[
                "-f",
                "tab",
                "mailbox",
                "status",
                "messages uidnext uidvalidity unseen guid vsize",
                "*",
            ]))
            .into_bytes(),
        ),
        (
            "fetch metadata".into(),
            sorted_table(&get(&[
                "-f",
                "tab",
                "fetch",
                "mailbox uid guid flags size.physical size.virtual date.received",
                "all",
            ]))
            .into_bytes(),
        ),
        (
            "fetch headers".into(),
            sorted_table(&get(&[
                "-f",
                "tab",
                "fetch",
                "mailbox uid hdr.subject hdr.message-id",
                "all",
            ]))
            .into_bytes(),
        ),
        (
            "message bytes".into(),
            sorted_pager_records(&get(&["-f", "pager", "fetch", "mailbox uid text", "all"]))
                .concat(),
        ),
    ]
}

pub fn assert_same_views(env: &Env, sc: &Scenario) {
    let dove = views(env, sc, doveadm_tool, "doveadm");
    let ms = views(env, sc, mailsync_tool, "mailsync");
    for ((what, d), (_, m)) in dove.iter().zip(ms.iter()) {
        assert!(
            d == m,
            "{what} differs\n--- doveadm ---\n{}\n--- mailsync ---\n{}",
            String::from_utf8_lossy(d),
            String::from_utf8_lossy(m)
        );
    }
}

pub fn status_line(env: &Env, sc: &Scenario, mailbox: &str) -> String {
    let out = ok(
        "status",
        env.doveadm(
            sc.location,
            &["mailbox", "status", "messages uidnext", mailbox],
        ),
    );
    String::from_utf8_lossy(&out).trim().to_string()
}

pub fn dovecot_written_reads_the_same(sc: &Scenario) {
    let env = Env::with_config(sc.config);
    populate(&env, sc, doveadm_tool, "doveadm");
    // Sanity: the scenario did what we think (expunge left a UID gap, rename happened).
    assert_eq!(status_line(&env, sc, "INBOX"), "INBOX messages=6 uidnext=8");
    assert_same_views(&env, sc);
}

pub fn subjects_and_uids(env: &Env, loc: &str) -> (Vec<u32>, Vec<String>) {
    let out = ok(
        "doveadm fetch",
        env.doveadm(
            loc,
            &[
                "-f",
                "tab",
                "fetch",
                "uid hdr.subject",
                "mailbox",
                "INBOX",
                "all",
            ],
        ),
    );
    let text = String::from_utf8(out).unwrap();
    let mut uids = Vec::new();
    let mut subjects = Vec::new();
    for line in text.lines().skip(1) {
        let (uid, subject) = line.split_once('\t').unwrap();
        uids.push(uid.parse().unwrap());
        subjects.push(subject.to_string());
    }
    (uids, subjects)
}
