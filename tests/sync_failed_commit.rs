//! A two-way sync whose sdbox commit fails at the index log write, after the commit has
//! put its new `u.N` files in place: nothing is lost and the re-run converges.
//!
//! The commit that renumbers a UID conflict saves this side's own message under a new UID
//! and expunges it under the old one, in one transaction. The old file may go only after
//! the log holds the new record (sdbox-sync.c sdbox_sync_finish unlinks the expunged files
//! after mail_index_sync_commit): unlinked first, a failed or killed log write leaves the
//! message only in a `u.N` file no index lists, and the next open drops the old record
//! whose file is gone — the message is lost on both sides.
//!
//! The log write is made to fail deterministically with a file size limit (`ulimit -f`,
//! SIGXFSZ ignored) below the destination log's size, above every other file the run
//! writes.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn mailsync(home: &Path, loc: &str, args: &[&str], fsize_blocks: Option<u64>) -> Command {
    let bin = env!("CARGO_BIN_EXE_mailsync");
    let mut cmd = match fsize_blocks {
        // dash's `ulimit -f` counts 512-byte blocks; an ignored signal stays ignored
        // across exec, so the write fails with EFBIG instead of killing the process
        Some(blocks) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "ulimit -f {blocks} && trap '' XFSZ && exec \"$0\" \"$@\""
                ))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("USER", "alice")
        .env("HOME", home)
        .env("TZ", "UTC")
        .arg("-o")
        .arg(format!("mail_location={loc}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd.spawn().expect("spawn mailsync");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(what: &str, out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn message(tag: &str) -> Vec<u8> {
    format!("From: a@example.com\nSubject: {tag}\nMessage-ID: <{tag}@x>\n\nbody of {tag}\n")
        .into_bytes()
}

/// The Subject lines of INBOX, sorted.
fn subjects(home: &Path, loc: &str) -> Vec<String> {
    let out = ok(
        &format!("fetch {loc}"),
        run(
            &mut mailsync(
                home,
                loc,
                &["-f", "tab", "fetch", "hdr.subject", "mailbox", "INBOX"],
                None,
            ),
            b"",
        ),
    );
    let mut s: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .skip(1)
        .map(|l| l.trim().to_string())
        .collect();
    s.sort();
    s
}

#[test]
fn a_renumbering_sdbox_commit_whose_log_write_fails_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let src = format!("maildir:{}", dir.path().join("src").display());
    let dst_dir = dir.path().join("dst");
    let dst = format!("sdbox:{}", dst_dir.display());
    let save = |loc: &str, tag: &str| {
        ok(
            &format!("save {tag}"),
            run(
                &mut mailsync(&home, loc, &["save", "-m", "INBOX"], None),
                &message(tag),
            ),
        )
    };
    for tag in ["common-1", "common-2", "common-3"] {
        save(&src, tag);
    }
    ok(
        "backup",
        run(&mut mailsync(&home, &src, &["backup", &dst], None), b""),
    );
    // each side's own new message at UID 4: the sync renumbers both
    save(&src, "source-4");
    save(&dst, "destination-4");
    // grow the destination's log well past every other file the sync writes
    // (a keyword update names the keyword: about 60 bytes a transaction)
    let keyword = "GrowTheLogWithAKeywordOfFortyCharacters0";
    for i in 0..200 {
        let op = if i % 2 == 0 { "add" } else { "remove" };
        ok(
            "flags",
            run(
                &mut mailsync(
                    &home,
                    &dst,
                    &["flags", op, keyword, "mailbox", "INBOX", "uid", "1"],
                    None,
                ),
                b"",
            ),
        );
    }
    let log = dst_dir.join("mailboxes/INBOX/dbox-Mails/dovecot.index.log");
    let log_size = std::fs::metadata(&log).unwrap().len();
    let blocks = log_size / 512;
    assert!(
        blocks >= 16,
        "the destination log ({log_size} bytes) is too small for the test"
    );
    let dst_files_before = std::fs::read_dir(log.parent().unwrap()).unwrap().count();

    let failed = run(
        &mut mailsync(&home, &src, &["sync", &dst], Some(blocks)),
        b"",
    );
    assert!(
        !failed.status.success(),
        "the sync whose log write fails must fail"
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("dovecot.index.log"),
        "the error names the log: {stderr}"
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        log_size,
        "the failed run wrote nothing to the destination log"
    );
    assert!(
        std::fs::read_dir(log.parent().unwrap()).unwrap().count() >= dst_files_before,
        "the failed run removed a destination file"
    );

    // run again until done (exit 2: changes during the sync, run once more)
    let mut code = None;
    for _ in 0..3 {
        let out = run(&mut mailsync(&home, &src, &["sync", &dst], None), b"");
        code = out.status.code();
        if code == Some(0) {
            break;
        }
        assert_eq!(code, Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(code, Some(0));
    let want: Vec<String> = [
        "common-1",
        "common-2",
        "common-3",
        "destination-4",
        "source-4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(subjects(&home, &src), want, "source");
    assert_eq!(subjects(&home, &dst), want, "destination");
}
