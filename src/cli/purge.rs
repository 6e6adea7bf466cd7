//! `mailsync purge` (doveadm purge, doveadm-mail.c cmd_purge_run): rewrites mdbox
//! storage files without their refcount-0 messages (`mailsync_dbox::purge`). Silent,
//! exit 0; a no-op for other formats, as doveadm (only mdbox implements purge).
//!
//! Parsed here, before the main command line (`intercept`), with the same global options.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use mailstore::{Location, StoreOptions};

use super::config::{expand_vars, Config, Vars};
use super::{exit, SharedWriter};

/// Global options (as the main command line) and a maintenance command.
#[derive(Parser, Debug)]
#[command(name = "mailsync", disable_help_subcommand = true)]
pub struct OpsCli {
    #[arg(short = 'D')]
    pub debug: bool,
    #[arg(short = 'v')]
    pub verbose: bool,
    #[arg(short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(short = 'o', value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    #[arg(short = 'f', value_name = "FORMATTER")]
    pub formatter: Option<String>,
    #[command(subcommand)]
    pub command: OpsCommand,
}

#[derive(Subcommand, Debug)]
pub enum OpsCommand {
    /// Remove expunged (refcount 0) messages from mdbox storage files (no-op for other
    /// formats), as `doveadm purge`.
    Purge {
        /// Run as this user instead of $USER.
        #[arg(short = 'u', value_name = "USER")]
        user: Option<String>,
    },
    /// Rebuild the indexes from the mail files, as `doveadm force-resync` (mdbox).
    ForceResync(super::resync::ResyncArgs),
}

/// The command word of a command line: the first argument that is neither a global
/// option nor the value of one (-c, -o, -f take a value).
fn command_word(args: &[OsString]) -> Option<&OsString> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "-c" || s == "-o" || s == "-f" {
            it.next();
        } else if !s.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// Runs `purge` / `force-resync` when the command line is one of them; None otherwise
/// (the main parser handles it).
pub fn intercept(
    args: &[OsString],
    out: &mut SharedWriter,
    err: &mut SharedWriter,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Option<i32> {
    let word = command_word(args)?;
    if word != "purge" && word != "force-resync" {
        return None;
    }
    let cli = match OpsCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
                let _ = write!(out, "{}", e.render());
                let _ = out.flush();
                return Some(exit::OK);
            }
            let _ = write!(err, "{}", e.render());
            return Some(exit::USAGE);
        }
    };
    let code = match &cli.command {
        OpsCommand::Purge { user } => run_purge(&cli, user.as_deref(), err, env),
        OpsCommand::ForceResync(a) => super::resync::run(&cli, a, err, env),
    };
    let _ = out.flush();
    let _ = err.flush();
    Some(code)
}

/// The user's mail location from `-c`/`-o` (inbox namespace location, else
/// mail_location), with %-variables expanded. Err: (exit code, message).
pub fn user_location(
    cli: &OpsCli,
    user: Option<&str>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<(Location, StoreOptions, String), (i32, String)> {
    let user = user
        .map(str::to_string)
        .or_else(|| env("USER").map(|u| u.to_string_lossy().into_owned()))
        .filter(|u| !u.is_empty())
        .ok_or((
            exit::USAGE,
            "USER environment is missing and -u option not used".to_string(),
        ))?;
    let home = env("HOME").map(PathBuf::from);
    let mut cfg = match &cli.config {
        Some(path) => Config::load(Path::new(path)).map_err(|e| (exit::CONFIG, e.0))?,
        None => Config::default(),
    };
    for o in &cli.overrides {
        let (k, v) = o.split_once('=').ok_or((
            exit::USAGE,
            format!("-o parameter not in key=value format: {o}"),
        ))?;
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
            "mail_location not set: give -o mail_location=DRIVER:PATH or mail_location in the -c config".into(),
        ));
    }
    let vars = Vars {
        user: user.clone(),
        home: home.as_ref().map(|h| h.to_string_lossy().into_owned()),
    };
    let spec = expand_vars(&raw, &vars);
    let separator = ns
        .as_ref()
        .and_then(|n| n.get("separator"))
        .and_then(|s| s.chars().next());
    let loc = Location::parse(&spec, home.as_deref()).map_err(|e| {
        (
            exit::TEMPFAIL,
            format!("Initializing mail storage from mail_location setting failed: {e}"),
        )
    })?;
    Ok((
        loc,
        StoreOptions {
            separator,
            save_line_endings: None,
        },
        user,
    ))
}

fn run_purge(
    cli: &OpsCli,
    user: Option<&str>,
    err: &mut SharedWriter,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> i32 {
    let (loc, opts, user) = match user_location(cli, user, env) {
        Ok(x) => x,
        Err((code, msg)) => {
            let _ = writeln!(err, "Fatal: {msg}");
            return code;
        }
    };
    match purge_store(&loc, &opts) {
        Ok(stats) => {
            if cli.debug {
                if let Some(stats) = stats {
                    let _ = writeln!(err, "mailsync({user}): Debug: purge: {stats:?}");
                }
            }
            exit::OK
        }
        Err(PurgeError::Open(e)) => {
            let _ = writeln!(
                err,
                "mailsync({user}): Error: Initializing mail storage from mail_location setting failed: {}",
                super::storage_error_text(&e)
            );
            exit::TEMPFAIL
        }
        Err(PurgeError::Purge(e)) => {
            let _ = writeln!(
                err,
                "mailsync({user}): Error: Purging namespace '' failed: {}",
                super::storage_error_text(&e)
            );
            e.kind().exit_code()
        }
    }
}

/// Why [`purge_store`] failed.
pub enum PurgeError {
    /// The store couldn't be opened.
    Open(mailstore::Error),
    /// The purge itself failed.
    Purge(mailstore::Error),
}

/// Purges the store at `loc`: mdbox's unreferenced messages removed from its storage files.
/// Other formats have nothing to purge (`None`; doveadm purge does nothing for storages
/// without a purge method). Used by `purge` and by `sync`/`backup -P`.
pub fn purge_store(
    loc: &Location,
    opts: &StoreOptions,
) -> Result<Option<mailsync_dbox::purge::PurgeStats>, PurgeError> {
    if loc.driver != "mdbox" {
        return Ok(None);
    }
    let store = mailsync_dbox::DboxStore::open(loc, opts).map_err(PurgeError::Open)?;
    mailsync_dbox::purge::purge(store.layout())
        .map(Some)
        .map_err(PurgeError::Purge)
}
