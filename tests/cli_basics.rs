//! Black-box tests of the `mailsync` binary that need no mail store: help, usage errors,
//! user and location resolution, config files and argument validation, with doveadm's
//! exit codes and messages.

use std::path::Path;
use std::process::{Command, Output};

fn mailsync(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailsync"));
    cmd.env_clear().env("PATH", "/usr/bin:/bin").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run mailsync")
}

const ALICE: &[(&str, &str)] = &[("USER", "alice"), ("HOME", "/nonexistent/alice")];

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_stderr_contains(o: &Output, expected: &str) {
    let err = stderr(o);
    assert!(err.contains(expected), "stderr lacks {expected:?}: {err}");
}

#[test]
fn help_describes_commands_and_options() {
    let o = mailsync(&["--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let h = stdout(&o);
    for s in [
        "mailbox",
        "fetch",
        "search",
        "save",
        "flags",
        "expunge",
        "-D",
        "-c <FILE>",
        "-o <KEY=VALUE>",
        "-f <FORMATTER>",
        "autodetect",
        "unlike doveadm",
    ] {
        assert!(h.contains(s), "--help lacks {s}: {h}");
    }
    let o = mailsync(&["mailbox", "status", "--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let h = stdout(&o);
    assert!(
        h.contains("-t") && h.contains("-f <FIELD|FORMATTER>") && h.contains("firstsaved"),
        "{h}"
    );
    let o = mailsync(&["fetch", "--help"], &[]);
    let h = stdout(&o);
    assert!(
        h.contains("date.sent.unixtime") && h.contains("-u <USER>"),
        "{h}"
    );
    let o = mailsync(&["--version"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("mailsync "), "{}", stdout(&o));
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        &["fetch", "uid"][..],
        &["fetch"],
        &["mailbox", "create"],
        &["mailbox", "rename", "A"],
        &["search"],
        &["flags", "add", "\\Seen"],
        &["bogus-command"],
        &["fetch", "uid", "larger", "-1"],
    ] {
        let o = mailsync(args, ALICE);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
        assert!(
            stderr(&o).contains("Usage:") || stderr(&o).contains("error:"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn missing_user_is_usage_error() {
    let o = mailsync(&["mailbox", "list"], &[("HOME", "/tmp")]);
    assert_eq!(o.status.code(), Some(64));
    assert_eq!(
        stderr(&o),
        "Fatal: USER environment is missing and -u option not used\n"
    );
}

#[test]
fn missing_location_is_config_error() {
    let o = mailsync(&["mailbox", "list"], ALICE);
    assert_eq!(o.status.code(), Some(78));
    assert_stderr_contains(&o, "mail_location not set");
}

#[test]
fn bad_locations_exit_75_with_doveadm_message() {
    let o = mailsync(&["-o", "mail_location=maildir:", "mailbox", "list"], ALICE);
    assert_eq!(o.status.code(), Some(75));
    assert_eq!(
        stderr(&o),
        "mailsync(alice): Error: Initializing mail storage from mail_location setting failed: Root mail directory not given\n"
    );
    let o = mailsync(
        &["-o", "mail_location=foobox:~/x", "mailbox", "list"],
        ALICE,
    );
    assert_eq!(o.status.code(), Some(75));
    assert_eq!(
        stderr(&o),
        "mailsync(alice): Error: Initializing mail storage from mail_location setting failed: Unknown mail storage driver foobox\n"
    );
}

#[test]
fn unknown_formatter_is_fatal_75() {
    let o = mailsync(
        &[
            "-f",
            "bogus",
            "-o",
            "mail_location=maildir:~/M",
            "mailbox",
            "list",
        ],
        ALICE,
    );
    assert_eq!(o.status.code(), Some(75));
    assert_eq!(
        stderr(&o),
        "mailsync(alice): Fatal: Unknown print formatter: bogus\n"
    );
    let o = mailsync(
        &[
            "-o",
            "mail_location=maildir:~/M",
            "fetch",
            "-f",
            "bogus",
            "uid",
            "all",
        ],
        ALICE,
    );
    assert_eq!(o.status.code(), Some(75));
}

#[test]
fn argument_errors_have_doveadm_codes() {
    let loc = "mail_location=maildir:~/M";
    let cases: &[(&[&str], i32, &str)] = &[
        (&["fetch", "uid bogus", "all"], 75, "Fatal: Unknown fetch field: bogus\n"),
        (&["fetch", "hdr.to.bogus", "all"], 75, "mailsync(alice): Fatal: Unknown header filter: bogus\n"),
        (&["search", "bogus"], 75, "Fatal: Unknown argument BOGUS\n"),
        (&["search", "seen or answered flagged"], 75, "Fatal: Unknown argument SEEN OR ANSWERED FLAGGED\n"),
        (&["search", "seen", "or", "answered", "flagged"], 75, "Fatal: Use parenthesis when mixing ANDs and ORs\n"),
        (&["search", "larger", "1x"], 75, "Fatal: Invalid size: 1x\n"),
        (&["search", "since", "yesterday"], 75, "Fatal: Invalid search date parameter: yesterday\n"),
        (&["search", "uid", "0"], 75, "Fatal: Invalid UID messageset\n"),
        (&["search", "larger"], 75, "Fatal: Missing parameter for search key (for search key: LARGER)\n"),
        (&["expunge", "all"], 64, "Fatal: expunge: To avoid accidents, search query must contain MAILBOX in all search branches\n"),
        (&["mailbox", "status", "bogus", "INBOX"], 64, "Fatal: Unknown status field: bogus\n"),
        (&["mailbox", "status", "-t", "guid", "INBOX"], 64, "Fatal: Status field guid can't be used with -t\n"),
        (&["flags", "add", "\\Bogus", "all"], 75, "Fatal: Invalid system flag: \\Bogus\n"),
    ];
    for (args, code, err) in cases {
        let mut full = vec!["-o", loc];
        full.extend_from_slice(args);
        let o = mailsync(&full, ALICE);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).ends_with(err), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    let o = mailsync(&["-o", loc, "fetch", "uid bogus", "all"], ALICE);
    assert!(stderr(&o).starts_with("Available fetch fields: hdr.<name> user mailbox"));
}

#[test]
fn non_utf8_mailbox_name_is_data_error() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"Bad\xff");
    let o = Command::new(env!("CARGO_BIN_EXE_mailsync"))
        .env_clear()
        .envs(ALICE.iter().copied())
        .args(["-o", "mail_location=maildir:~/M", "mailbox", "create"])
        .arg(bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).starts_with("Fatal: Mailbox name not valid UTF-8: Bad"),
        "{}",
        stderr(&o)
    );
}

fn debug_location(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut full = vec!["-D"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["mailbox", "list"]);
    let o = mailsync(&full, env);
    let e = stderr(&o);
    e.lines()
        .find_map(|l| {
            l.split_once("Debug: mail_location = ")
                .map(|(_, v)| v.to_string())
        })
        .unwrap_or_else(|| panic!("no debug line: {e}"))
}

#[test]
fn config_file_location_namespace_and_expansion() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("dovecot.conf");
    std::fs::write(
        dir.path().join("inc.conf"),
        "mail_location = maildir:/x/%u/cfg:INDEX=%h/idx:%%u\n",
    )
    .unwrap();
    std::fs::write(
        &conf,
        "# test\n!include inc.conf\nnamespace inbox {\n  inbox = yes\n  separator = /\n}\n",
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    assert_eq!(
        debug_location(&["-c", c], ALICE),
        "maildir:/x/alice/cfg:INDEX=/nonexistent/alice/idx:%u"
    );
    // -o overrides the file, and (unlike doveadm) is expanded too.
    assert_eq!(
        debug_location(
            &["-c", c, "-o", "mail_location=maildir:/o/%n/%d"],
            &[("USER", "bob@example.org"), ("HOME", "/h")]
        ),
        "maildir:/o/bob/example.org"
    );
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "mail_location maildir:/x\n").unwrap();
    let o = mailsync(&["-c", bad.to_str().unwrap(), "mailbox", "list"], ALICE);
    assert_eq!(o.status.code(), Some(78));
    assert_stderr_contains(&o, "line 1: Expecting '='");
}

#[test]
fn other_user_home_comes_from_passwd() {
    // root is in every /etc/passwd; its home is what the file says.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let root_home = passwd
        .lines()
        .find(|l| l.starts_with("root:"))
        .and_then(|l| l.split(':').nth(5))
        .unwrap()
        .to_string();
    let o = mailsync(
        &[
            "-D",
            "-o",
            "mail_location=maildir:%h/M",
            "mailbox",
            "list",
            "-u",
            "root",
        ],
        ALICE,
    );
    assert_stderr_contains(&o, &format!("Debug: mail_location = maildir:{root_home}/M"));
    let o = mailsync(
        &[
            "-o",
            "mail_location=maildir:%h/M",
            "mailbox",
            "list",
            "-u",
            "no-such-user-xyz",
        ],
        ALICE,
    );
    assert_eq!(o.status.code(), Some(67));
    assert_eq!(
        stderr(&o),
        "mailsync(no-such-user-xyz): Error: User doesn't exist\n"
    );
    assert!(Path::new("/etc/passwd").exists());
}

#[test]
fn a_commit_interval_that_is_not_a_number_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = format!("mail_location=maildir:{}/a", dir.path().display());
    let dst = format!("maildir:{}/b", dir.path().display());
    let o = mailsync(
        &[
            "-o",
            &src,
            "-o",
            "dsync_commit_msgs_interval=ten",
            "sync",
            &dst,
        ],
        &[("USER", "u"), ("HOME", "/nonexistent")],
    );
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert_stderr_contains(&o, "dsync_commit_msgs_interval: not a number: ten");
    assert!(!dir.path().join("b").exists(), "nothing written");
}
