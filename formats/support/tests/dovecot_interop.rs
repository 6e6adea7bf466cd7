//! mailsupport against the real Dovecot 2.3.19.1 (`/usr/bin/doveadm`), run from a private
//! config in a temp dir (shared/reference/dovecot-harness.md). When the tests run as root,
//! doveadm drops to the unprivileged `mailsynct` user (created if missing). The tests fail,
//! never skip, when doveadm is missing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mailsupport::dotlock::{DotLock, DotLockOptions};
use mailsupport::subscriptions;

const MAIL_USER: &str = "mailsynct";

struct Env {
    _dir: tempfile::TempDir,
    home: PathBuf,
    conf: PathBuf,
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
    /// Namespace separator `/`, Maildir++ (list separator `.`).
    fn new() -> Env {
        assert!(
            Path::new("/usr/bin/doveadm").exists(),
            "doveadm is missing: these tests need Dovecot 2.3 (apt-get install dovecot-core)"
        );
        let dir = tempfile::Builder::new()
            .prefix("mailsupport-interop")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        let user = if running_as_root() {
            // once per process: this file's tests run on parallel threads, and two
            // useradds at once on a fresh machine left one test with ids of neither
            static CREATE_USER: std::sync::Once = std::sync::Once::new();
            CREATE_USER.call_once(|| {
                if id_of("-u").is_none() {
                    let _ = Command::new("useradd")
                        .args(["-M", "-r", "-s", "/usr/sbin/nologin", MAIL_USER])
                        .status();
                }
            });
            let uid = id_of("-u").expect("could not create the mail user");
            let gid = id_of("-g").expect("mail user has no group");
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success());
            MAIL_USER.to_string()
        } else {
            std::env::var("USER").unwrap_or_else(|_| "nobody".into())
        };
        let conf = dir.path().join("dovecot.conf");
        let log = dir.path().join("dovecot.log");
        std::fs::write(
            &conf,
            format!(
                "base_dir = {run}\nstate_dir = {run}/state\nlog_path = {log}\n\
                 info_log_path = {log}\nfirst_valid_uid = 0\nssl = no\n\
                 mail_uid = {user}\nmail_gid = {user}\n\
                 namespace inbox {{\n  inbox = yes\n  separator = /\n}}\n",
                run = dir.path().join("run").display(),
                log = log.display(),
            ),
        )
        .unwrap();
        Env {
            _dir: dir,
            home,
            conf,
        }
    }

    fn maildir(&self) -> PathBuf {
        self.home.join("Maildir")
    }

    fn command(&self, program: &str, extra: &[&str], args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("USER", "alice")
            .env("HOME", &self.home)
            .args(extra)
            .arg("/usr/bin/doveadm")
            .arg("-c")
            .arg(&self.conf)
            .arg("-o")
            .arg("mail_location=maildir:~/Maildir")
            .args(args);
        cmd
    }

    fn doveadm(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run(self.command("env", &[], args), stdin)
    }
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
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Hands a file we created (as root) to the mail user, so Dovecot may replace/read it.
fn give_to_mail_user(path: &Path) {
    if running_as_root() {
        let st = Command::new("chown")
            .arg(format!("{MAIL_USER}:{MAIL_USER}"))
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// The subscribed mailboxes `doveadm mailbox list -s` prints, sorted.
fn subscribed_per_doveadm(env: &Env) -> Vec<String> {
    let listed = ok(
        "mailbox list -s",
        env.doveadm(&["mailbox", "list", "-s"], None),
    );
    let mut listed: Vec<String> = listed.lines().map(str::to_string).collect();
    listed.sort();
    listed
}

/// Asserts `doveadm mailbox list -s` lists exactly `expected`, in any order.
fn assert_doveadm_subscribed(env: &Env, expected: &[&str]) {
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(subscribed_per_doveadm(env), expected);
}

const SUBSCRIBED: [&str; 6] = [
    "INBOX",
    "Entwürfe",
    "Archive/2024",
    "台北/日本語",
    "a&b",
    "😀",
];

#[test]
fn parses_the_file_doveadm_writes() {
    let env = Env::new();
    ok(
        "mailbox create",
        env.doveadm(
            &[
                "mailbox",
                "create",
                "Entwürfe",
                "Archive/2024",
                "台北/日本語",
                "a&b",
            ],
            None,
        ),
    );
    let mut args = vec!["mailbox", "subscribe"];
    args.extend(SUBSCRIBED);
    ok("mailbox subscribe", env.doveadm(&args, None));
    let path = env.maildir().join("subscriptions");
    let written = std::fs::read(&path).unwrap();
    // Same bytes as the committed fixture (tests/data/README.md).
    let fixture = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dovecot-2.3.19.1-subscriptions"),
    )
    .unwrap();
    assert_eq!(written, fixture);
    // Storage names (modified UTF-7, Maildir++ separator '.') ...
    let storage = subscriptions::read(&path, '.').unwrap();
    assert_eq!(
        storage,
        [
            "INBOX",
            "Entw&APw-rfe",
            "Archive.2024",
            "&U,BTFw-.&ZeVnLIqe-",
            "a&-b",
            "&2D3eAA-"
        ]
    );
    // ... which are the virtual names doveadm lists, once decoded and with '/' for '.'.
    let vnames: Vec<String> = subscriptions::read(&path, '/')
        .unwrap()
        .iter()
        .map(|name| subscriptions::to_vname(name).unwrap())
        .collect();
    assert_eq!(vnames, SUBSCRIBED);
    assert_doveadm_subscribed(&env, &SUBSCRIBED);
}

#[test]
fn doveadm_reads_the_file_we_write() {
    let env = Env::new();
    ok(
        "mailbox create",
        env.doveadm(&["mailbox", "create", "Other"], None),
    );
    let path = env.maildir().join("subscriptions");
    let names: Vec<String> = SUBSCRIBED
        .iter()
        .map(|vname| subscriptions::from_vname(vname))
        .collect();
    subscriptions::write(&path, '/', &names).unwrap();
    give_to_mail_user(&path);
    assert_doveadm_subscribed(&env, &SUBSCRIBED);

    // Dovecot edits our file in place of its own: unsubscribe one, subscribe another.
    ok(
        "mailbox unsubscribe",
        env.doveadm(&["mailbox", "unsubscribe", "Archive/2024"], None),
    );
    ok(
        "mailbox subscribe",
        env.doveadm(&["mailbox", "subscribe", "Other"], None),
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"V\t2\n\nINBOX\nEntw&APw-rfe\n&U,BTFw-\t&ZeVnLIqe-\na&-b\n&2D3eAA-\nOther\n".to_vec()
    );

    // And our single-entry edit is seen by Dovecot.
    assert!(subscriptions::set_subscribed(&path, '.', "Entw&APw-rfe", false).unwrap());
    give_to_mail_user(&path);
    let listed = subscribed_per_doveadm(&env);
    assert!(!listed.iter().any(|l| l == "Entwürfe"), "{listed:?}");
    assert!(listed.iter().any(|l| l == "Other"), "{listed:?}");
}

#[test]
fn doveadm_does_not_write_subscriptions_while_we_hold_the_lock() {
    let env = Env::new();
    ok(
        "mailbox create",
        env.doveadm(&["mailbox", "create", "A"], None),
    );
    let path = env.maildir().join("subscriptions");
    let lock = DotLock::acquire(&path, &DotLockOptions::subscriptions()).unwrap();
    // Dovecot's subscriptions lock timeout is a fixed 120 s: kill it after 3 s. (SIGKILL:
    // doveadm keeps waiting through SIGTERM, and after 30 s (SUBSCRIPTION_FILE_CHANGE_TIMEOUT)
    // it would rightly take our untouched pid-less lock as stale.)
    let out = run(
        env.command(
            "timeout",
            &["-s", "KILL", "3"],
            &["mailbox", "subscribe", "A"],
        ),
        None,
    );
    // timeout(1) with KILL kills its whole process group, itself included.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.signal() == Some(9) || out.status.code() == Some(137),
        "doveadm did not wait: {out:?}"
    );
    assert!(!path.exists(), "doveadm wrote the subscriptions file");
    assert!(lock.is_still_ours().unwrap());
    lock.release().unwrap();
    ok(
        "mailbox subscribe",
        env.doveadm(&["mailbox", "subscribe", "A"], None),
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"V\t2\n\nA\n".to_vec());
}

#[test]
fn doveadm_respects_our_uidlist_lock() {
    let env = Env::new();
    ok(
        "save 1",
        env.doveadm(&["save", "-m", "INBOX"], Some(b"Subject: one\n\nbody\n")),
    );
    let uidlist = env.maildir().join("dovecot-uidlist");
    let before = std::fs::read(&uidlist).unwrap();
    // Readable by Dovecot's mail user so it can check our pid, as between Dovecot processes.
    let lock = DotLock::acquire(
        &uidlist,
        &DotLockOptions {
            mode: 0o644,
            ..DotLockOptions::maildir_uidlist()
        },
    )
    .unwrap();
    std::fs::set_permissions(lock.lock_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    // Saving only try-locks the uidlist: the mail lands in new/ without a UID.
    ok(
        "save 2",
        env.doveadm(&["save", "-m", "INBOX"], Some(b"Subject: two\n\nbody\n")),
    );
    assert_eq!(std::fs::read(&uidlist).unwrap(), before);
    // Older than Dovecot's 2 s pid-check age: it now reads our pid, finds us alive and must
    // not override the lock (it would override a dead pid's lock at this point).
    std::thread::sleep(Duration::from_millis(2500));
    let waited = env.doveadm(
        &[
            "-o",
            "mail_max_lock_timeout=2s",
            "fetch",
            "uid",
            "mailbox",
            "INBOX",
            "all",
        ],
        None,
    );
    // The new mail cannot get a UID while we hold the lock, so Dovecot shows only the first.
    assert_eq!(ok("fetch while locked", waited), "uid: 1\n");
    assert_eq!(std::fs::read(&uidlist).unwrap(), before);
    assert!(lock.is_still_ours().unwrap(), "Dovecot overrode our lock");
    lock.release().unwrap();
    let uids = ok(
        "fetch",
        env.doveadm(&["fetch", "uid", "mailbox", "INBOX", "all"], None),
    );
    assert_eq!(
        uids.split_whitespace().collect::<Vec<_>>(),
        ["uid:", "1", "uid:", "2"]
    );
    assert_ne!(std::fs::read(&uidlist).unwrap(), before);
}
