//! Runs the real Dovecot (`doveadm`) and `mailsync` side by side on the same store, from a
//! private configuration in a temporary directory (shared/reference/dovecot-harness.md).
//!
//! Dovecot refuses mail access as root, so when the tests run as root (CI does) both tools run
//! as an unprivileged mail user: doveadm drops to `mail_uid` itself, mailsync is started
//! through `setpriv`. The tests fail, never skip, when `doveadm` is missing.
#![allow(dead_code)]

pub mod scenario;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;

pub const MAIL_USER: &str = "mailsynct";
pub const USER: &str = "alice";

pub struct Env {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub conf: PathBuf,
    pub log: PathBuf,
    /// uid/gid the mail is accessed as; `None` when not running as root.
    pub run_as: Option<(u32, u32)>,
}

fn doveadm_path() -> PathBuf {
    let p = PathBuf::from("/usr/bin/doveadm");
    assert!(
        p.exists(),
        "doveadm is missing: the interop tests need Dovecot 2.3 \
         (apt-get install -y dovecot-core dovecot-imapd; scripts/test does this)"
    );
    p
}

fn ensure_mail_user() -> (u32, u32) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if id_of("-u").is_none() {
            // Another test process may race us; check again afterwards either way.
            let _ = Command::new("useradd")
                .args(["-M", "-r", "-s", "/usr/sbin/nologin", MAIL_USER])
                .status();
        }
    });
    let uid = id_of("-u").expect("could not create the unprivileged mail user");
    let gid = id_of("-g").expect("mail user has no group");
    (uid, gid)
}

fn id_of(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, MAIL_USER]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

impl Env {
    /// A fresh environment whose config has no namespace block (Maildir++ separator `.`).
    pub fn new() -> Env {
        Env::with_config("")
    }

    /// A fresh environment; `extra` is appended to the private dovecot.conf (e.g. a
    /// `namespace inbox { separator = / }` block), which both tools read with `-c`.
    pub fn with_config(extra: &str) -> Env {
        doveadm_path();
        let dir = tempfile::Builder::new()
            .prefix("mailsync-interop")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let home = root.join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(root.join("run")).unwrap();
        let log = root.join("dovecot.log");
        let (run_as, mail_user) = if running_as_root() {
            let ids = ensure_mail_user();
            (Some(ids), MAIL_USER.to_string())
        } else {
            let name = std::env::var("USER").unwrap_or_else(|_| "nobody".into());
            (None, name)
        };
        let conf = root.join("dovecot.conf");
        let text = format!(
            "base_dir = {run}\nstate_dir = {run}/state\nlog_path = {log}\ninfo_log_path = {log}\n\
             first_valid_uid = 0\nssl = no\nmail_uid = {mail_user}\nmail_gid = {mail_group}\n{extra}\n",
            run = root.join("run").display(),
            log = log.display(),
            mail_group = if run_as.is_some() { MAIL_USER.to_string() } else { mail_user.clone() },
        );
        std::fs::write(&conf, text).unwrap();
        let env = Env {
            _dir: dir,
            root,
            home,
            conf,
            log,
            run_as,
        };
        env.chown_tree(&env.root.clone());
        env
    }

    /// Hands a tree to the mail user (after copying fixtures in).
    pub fn chown_tree(&self, path: &Path) {
        if let Some((uid, gid)) = self.run_as {
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(path)
                .status()
                .unwrap();
            assert!(st.success());
        }
    }

    fn base(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("USER", USER)
            .env("HOME", &self.home)
            .env("TZ", "UTC");
    }

    /// `doveadm -c CONF -o mail_location=LOC ARGS...`
    pub fn doveadm(&self, loc: &str, args: &[&str]) -> Output {
        self.doveadm_stdin(loc, args, None)
    }

    pub fn doveadm_stdin(&self, loc: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(doveadm_path());
        self.base(&mut cmd);
        cmd.arg("-c")
            .arg(&self.conf)
            .arg("-o")
            .arg(format!("mail_location={loc}"));
        cmd.args(args);
        run(cmd, stdin)
    }

    /// `mailsync -c CONF -o mail_location=LOC ARGS...`, as the mail user.
    pub fn mailsync(&self, loc: &str, args: &[&str]) -> Output {
        self.mailsync_stdin(loc, args, None)
    }

    pub fn mailsync_stdin(&self, loc: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run(self.mailsync_command(loc, args), stdin)
    }

    /// The `mailsync` command of [`Env::mailsync`], not started (to run it in the
    /// background).
    pub fn mailsync_command(&self, loc: &str, args: &[&str]) -> Command {
        let bin = env!("CARGO_BIN_EXE_mailsync");
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        self.base(&mut cmd);
        cmd.arg("-c")
            .arg(&self.conf)
            .arg("-o")
            .arg(format!("mail_location={loc}"));
        cmd.args(args);
        cmd
    }

    /// Dovecot's own log: must stay free of warnings and errors.
    pub fn dovecot_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(data) = stdin {
        // A command that fails early (bad mailbox) may exit before reading its input.
        if let Err(e) = child.stdin.take().unwrap().write_all(data) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "writing stdin: {e}"
            );
        }
    }
    child.wait_with_output().unwrap()
}

/// Asserts success and returns stdout, showing stderr on failure.
pub fn ok(what: &str, out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Like `ok`, and also asserts nothing was written to stderr (no warning, no error).
pub fn clean(what: &str, out: Output) -> Vec<u8> {
    let stderr = out.stderr.clone();
    let stdout = ok(what, out);
    assert!(
        stderr.is_empty(),
        "{what} wrote to stderr: {}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

/// Header line plus the remaining lines sorted: doveadm lists mailboxes in readdir order.
pub fn sorted_table(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("").to_string();
    let mut rows: Vec<&str> = lines.collect();
    rows.sort();
    format!("{header}\n{}", rows.join("\n"))
}

/// Copies a store or fixture tree as `cp -a` does (modification times kept: a Maildir's
/// received date is its file's mtime, Dovecot's mbox index records the file's mtime), made
/// writable by its owner (the fixtures in shared/ are read-only). Whatever was at `to`
/// is removed first.
pub fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
    let st = Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "chmod -R u+w {}", to.display());
}

/// Mailbox names with the hierarchy separator written as `.`: Maildir++ shows `.`, the
/// dbox and mbox layouts `/` (for stores whose names hold neither character themselves);
/// the hierarchy parts are what must agree. `table` is a tab table (name first) or one
/// name a line; the lines come back sorted.
pub fn same_separator(table: &str) -> String {
    let mut lines: Vec<String> = table
        .lines()
        .map(|l| match l.split_once('\t') {
            Some((name, rest)) => format!("{}\t{rest}", name.replace('/', ".")),
            None => l.replace('/', "."),
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// Lines sorted (for headerless flow output).
pub fn sorted_lines(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let mut rows: Vec<&str> = text.lines().collect();
    rows.sort();
    rows.join("\n")
}

/// Pager records (separated by `\f\n`) sorted, compared as bytes.
pub fn sorted_pager_records(out: &[u8]) -> Vec<Vec<u8>> {
    let mut recs: Vec<Vec<u8>> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < out.len() {
        if out[i] == b'\x0c' && out[i + 1] == b'\n' {
            recs.push(out[start..i].to_vec());
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    if start < out.len() {
        recs.push(out[start..].to_vec());
    }
    recs.sort();
    recs
}
