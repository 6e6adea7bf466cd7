//! `mailsync sync` and `mailsync backup`: doveadm's dsync commands (doveadm-dsync.c) over
//! the engine in `crate::sync`. SOURCE is the user's mail location (`-o mail_location=`,
//! `-c FILE`) unless given; DESTINATION is a location string such as
//! `mdbox:/srv/mail/u1/mdbox`.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use mailstore::{Flags, Location, MailboxGuid, StoreOptions};

use super::config::{expand_vars, Config, Vars};
use super::{dates, exit, query, Cli, SharedWriter};
use crate::sync::{self, FlagWanted, MailFilter, MergeKind, SyncOptions};

pub const SYNC_AFTER_HELP: &str = "\
Exit codes as doveadm: 0 in sync, 2 finished but not perfectly in sync (run again), \
64 usage, 65 data error, 68 not found, 75 temporary failure, 78 configuration error.

-t/-e take doveadm's dates (YYYY-MM-DD, 1-Jan-2024, a UNIX time, or an interval such as \
30days before now); -I a size such as 100k or 10M; -O a system flag (\\Seen) or keyword, \
with a leading - for mails without it. These filters only choose which missing mails are \
saved: mails outside them are neither copied nor treated as missing. -l SECS takes the \
per-user lock ~/.dovecot-sync.lock, waiting at most SECS (exit 75 on timeout), and bounds the \
wait for each mailbox's .dovecot-box-sync.lock (else 30 s). -T SECS gives up with exit 75 when \
nothing moves between the two sides for SECS seconds (a side stuck on a hung file system).

mailsync has one namespace: every -n prefix selects it, as doveadm does for a user with one \
namespace; -N is accepted for the same reason. -P purges the destination afterwards (mdbox: \
as `mailsync purge`; other formats have nothing to purge).";

/// Options of `sync` and `backup` (doveadm-dsync.c's getopt string `1a:dEfg:I:l:m:n:NO:Pr:Rs:t:e:T:Ux:`).
#[derive(Args, Debug, Clone, Default)]
pub struct SyncArgs {
    /// Run as this user instead of $USER.
    #[arg(short = 'u', value_name = "USER")]
    pub user: Option<String>,
    /// sync only: one-way merge into DESTINATION (delete nothing, never write SOURCE).
    #[arg(short = '1')]
    pub one_way: bool,
    /// Full sync: compare every mailbox even if its counters are unchanged.
    #[arg(short = 'f')]
    pub full: bool,
    /// Purge the destination afterwards (mdbox; as `mailsync purge`).
    #[arg(short = 'P')]
    pub purge: bool,
    /// Reverse the direction: DESTINATION is the source of a one-way run.
    #[arg(short = 'R')]
    pub reverse: bool,
    /// Take the per-user sync lock ~/.dovecot-sync.lock, waiting at most SECS (0: no lock);
    /// also the wait for each mailbox's .dovecot-box-sync.lock (else 30 s).
    #[arg(short = 'l', value_name = "SECS")]
    pub lock_timeout: Option<u32>,
    /// Only this mailbox.
    #[arg(short = 'm', value_name = "MAILBOX")]
    pub mailbox: Option<String>,
    /// Only the mailbox with this GUID ("" = mailbox tree only, no mail).
    #[arg(short = 'g', value_name = "GUID")]
    pub mailbox_guid: Option<String>,
    /// Only these namespace prefixes (mailsync has one namespace: all of them select it).
    #[arg(short = 'n', value_name = "NS")]
    pub namespace: Vec<String>,
    /// All namespaces (accepted: there is one).
    #[arg(short = 'N')]
    pub all_namespaces: bool,
    /// Exclude mailboxes matching this mask (`*`, `?`... as doveadm); repeatable.
    #[arg(short = 'x', value_name = "MASK")]
    pub exclude: Vec<String>,
    /// Stateful sync from this state ("" = none); prints the new state on stdout.
    #[arg(short = 's', value_name = "STATE")]
    pub state: Option<String>,
    /// Give up (exit 75) when nothing moves between the two sides for SECS seconds (a side
    /// stuck in I/O, e.g. on a hung file system); 0 or absent: wait.
    #[arg(short = 'T', value_name = "SECS")]
    pub timeout: Option<u32>,
    /// Only save mails received at or after this date.
    #[arg(short = 't', value_name = "START")]
    pub start: Option<String>,
    /// Only save mails received at or before this date.
    #[arg(short = 'e', value_name = "END")]
    pub end: Option<String>,
    /// Only save mails with this flag or keyword (-FLAG: without it).
    #[arg(short = 'O', value_name = "FLAG", allow_hyphen_values = true)]
    pub flag: Option<String>,
    /// Only save mails whose virtual size is at most this.
    #[arg(short = 'I', value_name = "SIZE")]
    pub max_size: Option<String>,
    /// [SOURCE] DESTINATION locations.
    #[arg(required = true, num_args = 1..=2, value_name = "LOCATION")]
    pub locations: Vec<String>,
}

fn fail(err: &mut SharedWriter, code: i32, msg: impl std::fmt::Display) -> i32 {
    let _ = writeln!(err, "Error: {msg}");
    code
}

/// Runs `sync` (`backup == false`) or `backup`.
pub fn run(
    backup: bool,
    args: &SyncArgs,
    cli: &Cli,
    out: &mut SharedWriter,
    err: &mut SharedWriter,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> i32 {
    let filters = match parse_filters(args) {
        Ok(f) => f,
        Err(msg) => {
            // doveadm-dsync.c's option parser i_fatal()s.
            let _ = writeln!(err, "Fatal: {msg}");
            return exit::TEMPFAIL;
        }
    };
    if backup && args.one_way {
        return fail(err, exit::USAGE, "backup: -1 is only for sync");
    }
    let user = args
        .user
        .clone()
        .or_else(|| env("USER").map(|u| u.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let home = env("HOME").map(PathBuf::from);
    let vars = Vars {
        user,
        home: home.as_ref().map(|h| h.to_string_lossy().into_owned()),
    };
    let cfg = match load_config(cli) {
        Ok(c) => c,
        Err((code, msg)) => return fail(err, code, msg),
    };
    let commit_msgs_interval = match commit_msgs_interval(&cfg) {
        Ok(n) => n,
        Err((code, msg)) => return fail(err, code, msg),
    };
    let (source_spec, source_opts, dest_spec) = if args.locations.len() == 2 {
        (
            args.locations[0].clone(),
            StoreOptions::default(),
            args.locations[1].clone(),
        )
    } else {
        match configured_location(&cfg, &vars) {
            Ok((spec, opts)) => (spec, opts, args.locations[0].clone()),
            Err((code, msg)) => return fail(err, code, msg),
        }
    };
    let open = |spec: &str, opts: &StoreOptions| -> Result<Box<dyn mailstore::Store>, String> {
        let loc = Location::parse(&expand_vars(spec, &vars), home.as_deref())
            .map_err(|e| format!("{spec}: {e}"))?;
        crate::backends::open_store(&loc, opts).map_err(|e| format!("{spec}: {e}"))
    };
    let source = match open(&source_spec, &source_opts) {
        Ok(s) => s,
        Err(e) => return fail(err, exit::TEMPFAIL, e),
    };
    let dest = match open(&dest_spec, &StoreOptions::default()) {
        Ok(s) => s,
        Err(e) => return fail(err, exit::TEMPFAIL, e),
    };
    let mut state_invalid = false;
    let state = match &args.state {
        None => None,
        Some(text) => match sync::state::decode(text) {
            Ok(s) => Some(s),
            Err(e) => {
                let _ = writeln!(err, "Warning: {e}");
                state_invalid = true;
                Some(Vec::new())
            }
        },
    };
    let opts = SyncOptions {
        kind: if backup {
            MergeKind::Backup
        } else if args.one_way {
            MergeKind::OneWay
        } else {
            MergeKind::TwoWay
        },
        reverse: args.reverse,
        full: args.full || state_invalid,
        mailbox: args.mailbox.clone().filter(|m| !m.is_empty()),
        exclude: args.exclude.clone(),
        mailbox_guid: filters.mailbox_guid,
        no_mail_sync: filters.no_mail_sync || args.mailbox.as_deref() == Some(""),
        filter: filters.mail,
        state,
        debug: cli.debug,
        mailbox_lock_timeout: args
            .lock_timeout
            .filter(|secs| *secs > 0)
            .map_or(sync::MAILBOX_LOCK_TIMEOUT, |secs| {
                Duration::from_secs(secs.into())
            }),
        io_timeout: args
            .timeout
            .filter(|secs| *secs > 0)
            .map(|secs| Duration::from_secs(secs.into())),
        commit_msgs_interval,
        second_lane: true,
    };
    // dsync_brain_lock: in a local run the master locks, in the user's home.
    let _lock = match args.lock_timeout.filter(|secs| *secs > 0) {
        None => None,
        Some(secs) => {
            let Some(home) = home.as_deref() else {
                return fail(err, exit::TEMPFAIL, "User has no home directory");
            };
            match sync::lock::acquire(home, Duration::from_secs(secs.into())) {
                Ok(l) => Some(l),
                Err(e) => return fail(err, exit::TEMPFAIL, e),
            }
        }
    };
    let report = sync::run(source, dest, &opts);
    for line in &report.log {
        let _ = writeln!(err, "Debug: {line}");
    }
    for e in &report.errors {
        let _ = writeln!(err, "Error: {e}");
    }
    let mut code = report.exit_code;
    if state_invalid && code == 0 {
        code = 2;
    }
    if args.purge && matches!(code, 0 | 2) {
        // -P (doveadm-dsync.c purge_remote): purge the destination once the sync is done.
        if let Err((c, msg)) = purge_destination(&dest_spec, &vars, home.as_deref()) {
            let _ = writeln!(err, "Error: {msg}");
            code = c;
        }
    }
    if args.state.is_some() {
        let states = if code == 0 { report.state } else { Vec::new() };
        let _ = writeln!(out, "{}", sync::state::encode(&states));
    }
    let _ = out.flush();
    code
}

/// `-P`: `mailsync purge` of the destination: mdbox's unreferenced messages removed from
/// its storage files; other formats have nothing to purge (doveadm purge does nothing for
/// them either).
fn purge_destination(
    spec: &str,
    vars: &Vars,
    home: Option<&std::path::Path>,
) -> Result<(), (i32, String)> {
    use super::purge::{purge_store, PurgeError};
    let loc = Location::parse(&expand_vars(spec, vars), home)
        .map_err(|e| (exit::TEMPFAIL, format!("{spec}: {e}")))?;
    match purge_store(&loc, &StoreOptions::default()) {
        Ok(_) => Ok(()),
        Err(PurgeError::Open(e)) => Err((exit::TEMPFAIL, format!("{spec}: {e}"))),
        Err(PurgeError::Purge(e)) => Err((
            e.kind().exit_code(),
            format!("Purging {spec} failed: {}", super::storage_error_text(&e)),
        )),
    }
}

/// The parsed `-g`, `-t`, `-e`, `-I` and `-O` (doveadm-dsync.c cmd_mailbox_dsync_parse_arg).
struct Filters {
    mailbox_guid: Option<MailboxGuid>,
    no_mail_sync: bool,
    mail: MailFilter,
}

/// Parses the filter options; the error is doveadm's fatal message.
fn parse_filters(args: &SyncArgs) -> Result<Filters, String> {
    let mut f = Filters {
        mailbox_guid: None,
        no_mail_sync: false,
        mail: MailFilter::default(),
    };
    match args.mailbox_guid.as_deref() {
        None => {}
        Some("") => f.no_mail_sync = true,
        Some(g) => match MailboxGuid::parse_hex(g.as_bytes()) {
            Some(guid) if !guid.is_zero() => f.mailbox_guid = Some(guid),
            _ => return Err(format!("Invalid -g parameter: {g}")),
        },
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // mail_parse_human_timestamp; 0 means "no limit" (dsync tests `> 0`).
    let date = |v: &Option<String>, letter: char| -> Result<Option<i64>, String> {
        match v {
            None => Ok(None),
            Some(s) => match dates::parse_human_timestamp(s, now) {
                Some(d) => Ok(Some(d.time).filter(|t| *t > 0)),
                None => Err(format!("Invalid -{letter} parameter: {s}")),
            },
        }
    };
    f.mail.since = date(&args.start, 't')?;
    f.mail.until = date(&args.end, 'e')?;
    if let (Some(s), Some(e)) = (f.mail.since, f.mail.until) {
        if s > e {
            return Err("start date is later than end date".into());
        }
    }
    if let Some(size) = &args.max_size {
        let n =
            query::parse_size(size).map_err(|e| format!("Invalid -I parameter '{size}': {e}"))?;
        f.mail.max_size = Some(n).filter(|n| *n > 0);
    }
    if let Some(flag) = &args.flag {
        if flag.contains(' ') {
            return Err("-O parameter doesn't support multiple flags currently".into());
        }
        let (want, name) = match flag.strip_prefix('-') {
            Some(rest) => (false, rest),
            None => (true, flag.as_str()),
        };
        let what = if name.starts_with('\\') {
            // imap_parse_system_flag: case-insensitive.
            let found = Flags::ALL_IN_ORDER
                .iter()
                .find(|(_, n)| n.eq_ignore_ascii_case(name))
                .map(|(f, _)| *f);
            match found {
                Some(f) => FlagWanted::Flag(f),
                None => {
                    return Err(format!(
                        "Invalid system flag given for -O parameter: '{name}'"
                    ))
                }
            }
        } else {
            FlagWanted::Keyword(name.as_bytes().to_vec())
        };
        f.mail.flag = Some((what, want));
    }
    Ok(f)
}

/// The configuration `-c` names (none: empty) with the `-o` overrides.
fn load_config(cli: &Cli) -> Result<Config, (i32, String)> {
    let mut cfg = match &cli.config {
        Some(path) => Config::load(Path::new(path)).map_err(|e| (exit::CONFIG, e.0))?,
        None => Config::default(),
    };
    for o in &cli.overrides {
        let Some((k, v)) = o.split_once('=') else {
            return Err((
                exit::USAGE,
                format!("-o parameter not in key=value format: {o}"),
            ));
        };
        cfg.set_override(k, v);
    }
    Ok(cfg)
}

/// doveadm's `dsync_commit_msgs_interval` setting, else mailsync's default.
fn commit_msgs_interval(cfg: &Config) -> Result<usize, (i32, String)> {
    match cfg.get("dsync_commit_msgs_interval") {
        None => Ok(sync::COMMIT_MSGS_INTERVAL),
        Some(v) => v.trim().parse().map_err(|_| {
            (
                exit::CONFIG,
                format!("dsync_commit_msgs_interval: not a number: {v}"),
            )
        }),
    }
}

/// SOURCE from `-c`/`-o`: the inbox namespace's location or `mail_location`.
fn configured_location(cfg: &Config, vars: &Vars) -> Result<(String, StoreOptions), (i32, String)> {
    let ns = cfg.inbox_namespace().cloned();
    let raw = ns
        .as_ref()
        .and_then(|n| n.get("location"))
        .filter(|l| !l.is_empty())
        .or_else(|| cfg.get("mail_location"))
        .unwrap_or("")
        .to_string();
    if raw.is_empty() {
        return Err((
            exit::CONFIG,
            "mail_location not set: give -o mail_location=DRIVER:PATH, -c FILE or SOURCE".into(),
        ));
    }
    let separator = ns
        .as_ref()
        .and_then(|n| n.get("separator"))
        .and_then(|s| s.chars().next());
    Ok((
        expand_vars(&raw, vars),
        StoreOptions {
            separator,
            save_line_endings: None,
        },
    ))
}
