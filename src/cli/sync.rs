//! `mailsync sync` and `mailsync backup`: doveadm's dsync commands (doveadm-dsync.c) over
//! the engine in `crate::sync`. SOURCE is the user's mail location (`-o mail_location=`,
//! `-c FILE`) unless given; DESTINATION is a location string such as
//! `mdbox:/srv/mail/u1/mdbox`.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use mailstore::{Location, StoreOptions};

use super::config::{expand_vars, Config, Vars};
use super::{exit, Cli, SharedWriter};
use crate::sync::{self, MergeKind, SyncOptions};

pub const SYNC_AFTER_HELP: &str = "\
Exit codes as doveadm: 0 in sync, 2 finished but not perfectly in sync (run again), \
64 usage, 65 data error, 68 not found, 75 temporary failure, 78 configuration error.

Not supported yet (they exit 64 with \"not supported yet\"): -l (sync lock), -g, -n, \
-t, -e, -O, -I. Accepted without effect: -N (mailsync has one namespace), -P (purging \
is done by the backends' own commands), -T (a local sync has no remote I/O to time out).";

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
    /// Purge the destination afterwards (accepted; no effect yet).
    #[arg(short = 'P')]
    pub purge: bool,
    /// Reverse the direction: DESTINATION is the source of a one-way run.
    #[arg(short = 'R')]
    pub reverse: bool,
    /// Sync lock timeout in seconds (not supported yet).
    #[arg(short = 'l', value_name = "SECS")]
    pub lock_timeout: Option<u32>,
    /// Only this mailbox.
    #[arg(short = 'm', value_name = "MAILBOX")]
    pub mailbox: Option<String>,
    /// Only the mailbox with this GUID (not supported yet).
    #[arg(short = 'g', value_name = "GUID")]
    pub mailbox_guid: Option<String>,
    /// Only these namespaces (not supported yet).
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
    /// I/O stall timeout (accepted; a local sync has no remote I/O).
    #[arg(short = 'T', value_name = "SECS")]
    pub timeout: Option<u32>,
    /// Only mails received since (not supported yet).
    #[arg(short = 't', value_name = "START")]
    pub start: Option<String>,
    /// Only mails received until (not supported yet).
    #[arg(short = 'e', value_name = "END")]
    pub end: Option<String>,
    /// Only mails with this flag (not supported yet).
    #[arg(short = 'O', value_name = "FLAG")]
    pub flag: Option<String>,
    /// Only mails up to this size (not supported yet).
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
    for (set, letter) in [
        (args.lock_timeout.is_some(), "-l"),
        (args.mailbox_guid.is_some(), "-g"),
        (!args.namespace.is_empty(), "-n"),
        (args.start.is_some(), "-t"),
        (args.end.is_some(), "-e"),
        (args.flag.is_some(), "-O"),
        (args.max_size.is_some(), "-I"),
    ] {
        if set {
            return fail(err, exit::USAGE, format!("{letter} is not supported yet"));
        }
    }
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
    let (source_spec, source_opts, dest_spec) = if args.locations.len() == 2 {
        (
            args.locations[0].clone(),
            StoreOptions::default(),
            args.locations[1].clone(),
        )
    } else {
        match configured_location(cli, &vars) {
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
        mailbox: args.mailbox.clone(),
        exclude: args.exclude.clone(),
        state,
        debug: cli.debug,
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
    if args.state.is_some() {
        let states = if code == 0 { report.state } else { Vec::new() };
        let _ = writeln!(out, "{}", sync::state::encode(&states));
    }
    let _ = out.flush();
    code
}

/// SOURCE from `-c`/`-o`: the inbox namespace's location or `mail_location`.
fn configured_location(cli: &Cli, vars: &Vars) -> Result<(String, StoreOptions), (i32, String)> {
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
