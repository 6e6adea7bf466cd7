//! A private Dovecot 2.3 setup in a temp dir (shared/reference/dovecot-harness.md; a
//! trimmed copy of the workspace's tests/harness). doveadm runs as an unprivileged mail
//! user when the tests run as root; files this crate writes are handed to that user with
//! [`Env::chown`].

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;

pub const MAIL_USER: &str = "mailsynct";

pub struct Env {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub conf: PathBuf,
    pub log: PathBuf,
    pub run_as: Option<(u32, u32)>,
}

fn id_of(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, MAIL_USER]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn ensure_mail_user() -> (u32, u32) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if id_of("-u").is_none() {
            let _ = Command::new("useradd")
                .args(["-M", "-r", "-s", "/usr/sbin/nologin", MAIL_USER])
                .status();
        }
    });
    (
        id_of("-u").expect("mail user"),
        id_of("-g").expect("mail group"),
    )
}

impl Env {
    pub fn new() -> Env {
        assert!(
            Path::new("/usr/bin/doveadm").exists(),
            "doveadm is missing: these tests need Dovecot 2.3 (apt-get install dovecot-core)"
        );
        let dir = tempfile::Builder::new()
            .prefix("mailsync-index")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let home = root.join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(root.join("run")).unwrap();
        let log = root.join("dovecot.log");
        let is_root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let (run_as, user) = if is_root {
            (Some(ensure_mail_user()), MAIL_USER.to_string())
        } else {
            (
                None,
                std::env::var("USER").unwrap_or_else(|_| "nobody".into()),
            )
        };
        let conf = root.join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "base_dir = {r}/run\nstate_dir = {r}/run/state\nlog_path = {l}\ninfo_log_path = {l}\n\
                 first_valid_uid = 0\nssl = no\nmail_uid = {user}\nmail_gid = {user}\n",
                r = root.display(),
                l = log.display()
            ),
        )
        .unwrap();
        let env = Env {
            _dir: dir,
            root,
            home,
            conf,
            log,
            run_as,
        };
        env.chown(&env.root);
        env
    }

    /// Gives a tree to the mail user (after this crate wrote into it as root).
    pub fn chown(&self, path: &Path) {
        if let Some((u, g)) = self.run_as {
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{u}:{g}"))
                .arg(path)
                .status()
                .unwrap();
            assert!(st.success());
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("/usr/bin/doveadm");
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("USER", "alice")
            .env("HOME", &self.home)
            .env("TZ", "UTC");
        c
    }

    /// `doveadm -c CONF -o mail_location=LOC ARGS...`
    pub fn doveadm(&self, loc: &str, args: &[&str]) -> Output {
        self.doveadm_stdin(loc, args, None)
    }

    pub fn doveadm_stdin(&self, loc: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = self.cmd();
        c.arg("-c")
            .arg(&self.conf)
            .arg("-o")
            .arg(format!("mail_location={loc}"));
        c.args(args);
        run(c, stdin)
    }

    /// `doveadm -c CONF -o OPT -o mail_location=LOC ARGS...` spawned, not waited for.
    pub fn doveadm_spawn(&self, loc: &str, opts: &[&str], args: &[&str]) -> std::process::Child {
        let mut c = self.cmd();
        c.arg("-c").arg(&self.conf);
        for o in opts {
            c.arg("-o").arg(o);
        }
        c.arg("-o").arg(format!("mail_location={loc}"));
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    }

    pub fn save(&self, loc: &str, mailbox: &str, body: &str) {
        ok(
            "save",
            self.doveadm_stdin(loc, &["save", "-m", mailbox], Some(body.as_bytes())),
        );
    }

    /// Dovecot's own log: must stay free of errors.
    pub fn dovecot_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `doveadm dump [-t TYPE] PATH` (needs no config).
pub fn doveadm_dump(path: &Path, kind: Option<&str>) -> Output {
    let mut c = Command::new("/usr/bin/doveadm");
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("TZ", "UTC");
    c.arg("dump");
    if let Some(k) = kind {
        c.arg("-t").arg(k);
    }
    c.arg(path);
    run(c, None)
}

fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(d) = stdin {
        let _ = child.stdin.take().unwrap().write_all(d);
    }
    child.wait_with_output().unwrap()
}

pub fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
