//! Command setup (user, config, location, store) and the message commands: fetch,
//! search, save, flags, expunge, copy, move.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use mailstore::{
    names, Error, FlagOp, FlagUpdate, Flags, Keyword, Location, MailRecord, Mailbox, MailboxGuid,
    NewMail, SaveLineEndings, Store, StoreOptions, Transaction, Uid,
};

use super::config::{expand_vars, Config, Vars};
use super::fetch::{self, Field, FieldError, LiveMail};
use super::format::{Column, FormatterKind, PrintError};
use super::query::Query;
use super::{
    exit, mailbox, storage_error_text, Cli, Command, Fatal, FlagsCommand, MailboxCommand,
    MemoryOutput, Runtime, SharedWriter, UserOpt,
};

/// The `-u` option of whichever command runs.
fn command_user(cmd: &Command) -> Option<&str> {
    let u: &UserOpt = match cmd {
        Command::Dump { .. } | Command::Sync(_) | Command::Backup(_) => return None,
        Command::Mailbox(m) => match m {
            MailboxCommand::List { user, .. }
            | MailboxCommand::Create { user, .. }
            | MailboxCommand::Delete { user, .. }
            | MailboxCommand::Rename { user, .. }
            | MailboxCommand::Subscribe { user, .. }
            | MailboxCommand::Unsubscribe { user, .. }
            | MailboxCommand::Status { user, .. } => user,
        },
        Command::Fetch { user, .. }
        | Command::Search { user, .. }
        | Command::Save { user, .. }
        | Command::Expunge { user, .. }
        | Command::Copy { user, .. }
        | Command::Move { user, .. } => user,
        Command::Flags(FlagsCommand::Add(a))
        | Command::Flags(FlagsCommand::Remove(a))
        | Command::Flags(FlagsCommand::Replace(a)) => &a.user,
    };
    u.user.as_deref()
}

/// Home directory of `user` from /etc/passwd.
fn passwd_home(user: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[0] == user).then(|| PathBuf::from(fields[5]))
    })
}

/// Rust's io::Error text without the " (os error N)" suffix, as strerror() prints it.
pub fn io_error_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Converts a mailbox-name argument, refusing invalid UTF-8 like doveadm_mailbox_args_check.
pub fn mailbox_arg(name: &OsStr) -> Result<String, Fatal> {
    name.to_str().map(str::to_string).ok_or_else(|| {
        Fatal::plain(
            exit::DATAERR,
            format!("Mailbox name not valid UTF-8: {}", name.to_string_lossy()),
        )
    })
}

fn parse_query(args: &[String]) -> Result<Query, Fatal> {
    Query::parse(args).map_err(|e| Fatal::plain(exit::TEMPFAIL, e))
}

fn formatter_kind(name: &str, user: &str) -> Result<FormatterKind, Fatal> {
    FormatterKind::parse(name).ok_or_else(|| {
        Fatal::for_user(
            user,
            exit::TEMPFAIL,
            format!("Unknown print formatter: {name}"),
        )
    })
}

/// A command with its arguments parsed, ready to run against a store.
enum Plan {
    Fetch {
        fields: Vec<(String, Field)>,
        query: Query,
    },
    Search(Query),
    Save {
        mailbox: String,
        file: Option<PathBuf>,
    },
    Flags {
        op: FlagOp,
        flags: Flags,
        keywords: Vec<String>,
        query: Query,
    },
    Expunge(Query),
    Copy {
        dest: String,
        query: Query,
        is_move: bool,
    },
    Mailbox(mailbox::Plan),
}

/// Parses flags the way cmd_flags_init does: `\Name` system flags (case-insensitive,
/// `\Recent` accepted and ignored by the update), everything else keywords.
pub fn parse_flags(spec: &str) -> Result<(Flags, Vec<String>), Fatal> {
    let mut flags = Flags::EMPTY;
    let mut keywords = Vec::new();
    for word in spec.split(' ').filter(|w| !w.is_empty()) {
        if word.starts_with('\\') {
            match Flags::from_name(word) {
                Some(f) => flags.insert(f),
                None => {
                    return Err(Fatal::plain(
                        exit::TEMPFAIL,
                        format!("Invalid system flag: {word}"),
                    ))
                }
            }
        } else {
            keywords.push(word.to_string());
        }
    }
    Ok((flags, keywords))
}

fn plan(cmd: Command, rt: &mut Runtime) -> Result<Plan, Fatal> {
    Ok(match cmd {
        Command::Fetch {
            formatter,
            fields,
            query,
            ..
        } => {
            if let Some(f) = formatter {
                rt.formatter = Some(formatter_kind(&f, &rt.user)?);
            }
            let fields = match fetch::parse_fields(&fields, &rt.user) {
                Ok(f) => f,
                Err((print_list, fatal)) => {
                    if print_list {
                        let _ = writeln!(rt.err, "{}", fetch::available_fields_line());
                    }
                    return Err(fatal);
                }
            };
            Plan::Fetch {
                fields,
                query: parse_query(&query)?,
            }
        }
        Command::Search { query, .. } => Plan::Search(parse_query(&query)?),
        Command::Save { mailbox, file, .. } => Plan::Save {
            mailbox: match mailbox {
                Some(m) => mailbox_arg(&m)?,
                None => "INBOX".to_string(),
            },
            file,
        },
        Command::Flags(fc) => {
            let (op, args) = match fc {
                FlagsCommand::Add(a) => (FlagOp::Add, a),
                FlagsCommand::Remove(a) => (FlagOp::Remove, a),
                FlagsCommand::Replace(a) => (FlagOp::Replace, a),
            };
            let (flags, keywords) = parse_flags(&args.flags)?;
            Plan::Flags {
                op,
                flags,
                keywords,
                query: parse_query(&args.query)?,
            }
        }
        Command::Expunge { query, .. } => {
            let query = parse_query(&query)?;
            query
                .expunge_check("expunge")
                .map_err(|e| Fatal::plain(exit::USAGE, e))?;
            Plan::Expunge(query)
        }
        Command::Copy {
            destination, query, ..
        } => Plan::Copy {
            dest: mailbox_arg(&destination)?,
            query: parse_query(&query)?,
            is_move: false,
        },
        Command::Move {
            destination, query, ..
        } => {
            let dest = mailbox_arg(&destination)?;
            let query = parse_query(&query)?;
            // cmd_copy_init: move expunges, so it has expunge's safety check.
            query
                .expunge_check("move")
                .map_err(|e| Fatal::plain(exit::USAGE, e))?;
            Plan::Copy {
                dest,
                query,
                is_move: true,
            }
        }
        Command::Mailbox(m) => Plan::Mailbox(mailbox::plan(m, rt)?),
        // cli::run_with runs `dump` itself: it opens no mail store.
        Command::Dump { .. } | Command::Sync(_) | Command::Backup(_) => {
            return Err(Fatal::plain(exit::USAGE, "dump is not a mail command"))
        }
    })
}

/// Where the store is and how to open it.
pub struct StoreSetup {
    pub location: Location,
    pub options: StoreOptions,
}

/// Resolves the mail location and separator from `-c` and `-o`.
fn store_setup(
    cli_config: Option<&Path>,
    overrides: &[String],
    vars: &Vars,
    home: Option<&Path>,
    rt: &mut Runtime,
) -> Result<Option<StoreSetup>, Fatal> {
    let mut cfg = match cli_config {
        Some(path) => Config::load(path).map_err(|e| Fatal::plain(exit::CONFIG, e.0))?,
        None => Config::default(),
    };
    for o in overrides {
        let Some((k, v)) = o.split_once('=') else {
            return Err(Fatal::plain(
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
        return Err(Fatal::plain(
            exit::CONFIG,
            "mail_location not set: mailsync doesn't autodetect mail locations; give -o mail_location=DRIVER:PATH or mail_location in the -c config",
        ));
    }
    let spec = expand_vars(&raw, vars);
    rt.debug(format!("mail_location = {spec}"));
    let separator = ns
        .as_ref()
        .and_then(|n| n.get("separator"))
        .and_then(|s| s.chars().next());
    if ns
        .as_ref()
        .and_then(|n| n.get("prefix"))
        .is_some_and(|p| !p.is_empty())
    {
        rt.debug("namespace prefix is ignored: mailbox names are used without it");
    }
    // mail_save_crlf (mail-storage-settings.c, default no): how saved messages' line endings
    // are written. Dovecot's boolean syntax: yes/no (also y/n, 1/0... we accept yes/no/1/0).
    let save_line_endings = match cfg.get("mail_save_crlf").map(|v| v.to_ascii_lowercase()) {
        None => None,
        Some(v) if matches!(v.as_str(), "yes" | "y" | "1" | "true") => Some(SaveLineEndings::Crlf),
        Some(v) if matches!(v.as_str(), "no" | "n" | "0" | "false" | "") => {
            Some(SaveLineEndings::Lf)
        }
        Some(v) => {
            return Err(Fatal::plain(
                exit::CONFIG,
                format!("mail_save_crlf: Invalid boolean value: {v} (use yes or no)"),
            ))
        }
    };
    match Location::parse(&spec, home) {
        Ok(location) => Ok(Some(StoreSetup {
            location,
            options: StoreOptions {
                separator,
                save_line_endings,
            },
        })),
        Err(e) => {
            storage_init_failed(rt, &e);
            Ok(None)
        }
    }
}

/// Logs that the mail location can't be parsed or its store opened (exit code TEMPFAIL).
fn storage_init_failed(rt: &mut Runtime, e: &Error) {
    rt.error(format!(
        "Initializing mail storage from mail_location setting failed: {}",
        storage_error_text(e)
    ));
    rt.fail(exit::TEMPFAIL);
}

/// Runs a parsed command line. Returns the exit code, or a fatal error to report.
pub fn execute(
    cli: Cli,
    out: SharedWriter,
    err: SharedWriter,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<i32, Fatal> {
    let env_user = env("USER").map(|u| u.to_string_lossy().into_owned());
    let opt_user = command_user(&cli.command).map(str::to_string);
    let user = match opt_user.clone().or(env_user.clone()) {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err(Fatal::plain(
                exit::USAGE,
                "USER environment is missing and -u option not used",
            ))
        }
    };
    let mut rt = Runtime {
        user: user.clone(),
        formatter: None,
        out,
        err,
        exit_code: 0,
        debug: cli.debug,
        driver: String::new(),
    };
    if let Some(f) = &cli.formatter {
        rt.formatter = Some(formatter_kind(f, &user)?);
    }
    let home: Option<PathBuf> = match &opt_user {
        Some(u) if Some(u) != env_user.as_ref() => match passwd_home(u) {
            Some(h) => Some(h),
            None => {
                rt.error("User doesn't exist");
                return Ok(exit::NOUSER);
            }
        },
        _ => env("HOME").map(PathBuf::from),
    };
    let plan = plan(cli.command, &mut rt)?;
    let vars = Vars {
        user: user.clone(),
        home: home.as_ref().map(|h| h.to_string_lossy().into_owned()),
    };
    let Some(setup) = store_setup(
        cli.config.as_deref(),
        &cli.overrides,
        &vars,
        home.as_deref(),
        &mut rt,
    )?
    else {
        return Ok(rt.exit_code);
    };
    rt.driver = setup.location.driver.clone();
    let store = match crate::backends::open_store(&setup.location, &setup.options) {
        Ok(s) => s,
        Err(e) => {
            storage_init_failed(&mut rt, &e);
            return Ok(rt.exit_code);
        }
    };
    run_plan(&mut rt, store.as_ref(), plan)?;
    let _ = rt.out.flush();
    Ok(rt.exit_code)
}

fn run_plan(rt: &mut Runtime, store: &dyn Store, plan: Plan) -> Result<(), Fatal> {
    match plan {
        Plan::Fetch { fields, query } => cmd_fetch(rt, store, &fields, &query),
        Plan::Search(q) => cmd_search(rt, store, &q),
        Plan::Save { mailbox, file } => cmd_save(rt, store, &mailbox, file.as_deref()),
        Plan::Flags {
            op,
            flags,
            keywords,
            query,
        } => cmd_flags(rt, store, op, flags, &keywords, &query),
        Plan::Expunge(q) => cmd_expunge(rt, store, &q),
        Plan::Copy {
            dest,
            query,
            is_move,
        } => cmd_copy(rt, store, &dest, &query, is_move),
        Plan::Mailbox(p) => mailbox::run(rt, store, p),
    }
}

/// Runs one command for tests: a store handle, a command line (without global options
/// other than -f) and the user; returns (exit code, stdout, stderr).
pub fn run_on_store(store: &dyn Store, args: &[&str], user: &str) -> (i32, Vec<u8>, Vec<u8>) {
    let out = MemoryOutput::default();
    let err = MemoryOutput::default();
    let mut argv: Vec<OsString> = vec!["mailsync".into()];
    argv.extend(args.iter().map(OsString::from));
    let code = (|| -> Result<i32, Fatal> {
        let cli = <Cli as clap::Parser>::try_parse_from(argv)
            .map_err(|e| Fatal::plain(exit::USAGE, e.to_string()))?;
        let mut rt = Runtime {
            user: user.to_string(),
            formatter: None,
            out: SharedWriter::new(Box::new(out.clone())),
            err: SharedWriter::new(Box::new(err.clone())),
            exit_code: 0,
            debug: false,
            driver: "memory".into(),
        };
        if let Some(f) = &cli.formatter {
            rt.formatter = Some(formatter_kind(f, user)?);
        }
        let plan = plan(cli.command, &mut rt)?;
        run_plan(&mut rt, store, plan)?;
        let _ = rt.out.flush();
        Ok(rt.exit_code)
    })();
    let code = match code {
        Ok(c) => c,
        Err(f) => {
            let mut e = err.clone();
            let _ = writeln!(e, "Fatal: {}", f.msg);
            f.code
        }
    };
    (code, out.contents(), err.contents())
}

/// The mailboxes a message command visits (doveadm_mailbox_list_iter): the names of the
/// query's MAILBOX keys as given when they are all exact, otherwise every selectable
/// mailbox the query's mailbox keys can match.
pub fn select_mailboxes(rt: &mut Runtime, store: &dyn Store, query: &Query) -> Vec<String> {
    let sep = store.hierarchy_separator();
    let (patterns, wild) = query.mailbox_patterns();
    if !patterns.is_empty() && !wild {
        return patterns
            .iter()
            .map(|p| names::normalize_inbox(p, sep))
            .collect();
    }
    let list = match store.list_mailboxes() {
        Ok(l) => l,
        Err(e) => {
            rt.storage_failed(format_args!("Listing mailboxes failed"), &e);
            return Vec::new();
        }
    };
    list.into_iter()
        .filter(|info| !info.attrs.nonexistent && !info.attrs.noselect)
        .filter(|info| {
            patterns.is_empty()
                || patterns.iter().any(|p| {
                    names::mask_matches(p, &info.name, sep)
                        || super::query::mailbox_name_matches(p, &info.name, sep)
                })
        })
        .filter(|info| query.match_mailbox(&info.name, info.guid, sep) != Some(false))
        .map(|info| info.name)
        .collect()
}

/// Opens a mailbox for iterating (doveadm_mail_iter_init): a mailbox that doesn't exist
/// is skipped silently; other failures are logged.
fn open_for_iter(rt: &mut Runtime, store: &dyn Store, name: &str) -> Option<Box<dyn Mailbox>> {
    rt.debug(format!("Opening mailbox {name}"));
    match store.open_mailbox(name) {
        Ok(m) => Some(m),
        Err(Error::MailboxNotFound(_)) => None,
        Err(e) => {
            rt.storage_failed(format_args!("Syncing mailbox {name} failed"), &e);
            None
        }
    }
}

fn mails_of(rt: &mut Runtime, mbox: &mut dyn Mailbox, name: &str) -> Option<Vec<MailRecord>> {
    match mbox.mails() {
        Ok(m) => Some(m),
        Err(e) => {
            rt.storage_failed(format_args!("Searching mailbox {name} failed"), &e);
            None
        }
    }
}

/// The matching messages of an open mailbox.
fn matching(
    rt: &mut Runtime,
    mbox: &mut dyn Mailbox,
    name: &str,
    sep: char,
    query: &Query,
) -> Vec<MailRecord> {
    let Some(mails) = mails_of(rt, mbox, name) else {
        return Vec::new();
    };
    let last = mails.len() as u32;
    let mut guid: Option<MailboxGuid> = None;
    let mut out = Vec::new();
    let mut failed = false;
    for (i, rec) in mails.iter().enumerate() {
        let seq = i as u32 + 1;
        let mut view = LiveMail::new(mbox, rec, seq, last, name, sep, &mut guid);
        match query.matches(&mut view) {
            Ok(true) => out.push(rec.clone()),
            Ok(false) => {}
            // Expunged meanwhile: not a match, not an error (as Dovecot's search).
            Err(Error::MailNotFound(_)) => {}
            Err(e) => {
                if !failed {
                    rt.error(format!(
                        "Searching mailbox {name} failed: {}",
                        storage_error_text(&e)
                    ));
                    failed = true;
                }
                rt.fail_storage(&e);
            }
        }
    }
    out
}

fn write_failed(e: io::Error) -> Fatal {
    Fatal::plain(
        exit::TEMPFAIL,
        format!("write(stdout) failed: {}", io_error_text(&e)),
    )
}

fn cmd_fetch(
    rt: &mut Runtime,
    store: &dyn Store,
    fields: &[(String, Field)],
    query: &Query,
) -> Result<(), Fatal> {
    let mut printer = rt
        .printer(Some(FormatterKind::Pager), fetch::columns(fields))
        .expect("default formatter given");
    let sep = store.hierarchy_separator();
    let user = rt.user.clone();
    let driver = rt.driver.clone();
    for name in select_mailboxes(rt, store, query) {
        let Some(mut mbox) = open_for_iter(rt, store, &name) else {
            continue;
        };
        let Some(mails) = mails_of(rt, mbox.as_mut(), &name) else {
            continue;
        };
        let last = mails.len() as u32;
        let mut guid: Option<MailboxGuid> = None;
        for (i, rec) in mails.iter().enumerate() {
            let seq = i as u32 + 1;
            let mut view = LiveMail::new(mbox.as_mut(), rec, seq, last, &name, sep, &mut guid);
            match query.matches(&mut view) {
                Ok(true) => {}
                Ok(false) | Err(Error::MailNotFound(_)) => continue,
                Err(e) => {
                    rt.storage_failed(format_args!("Searching mailbox {name} failed"), &e);
                    continue;
                }
            }
            for (title, field) in fields {
                match fetch::print_field(&mut printer, field, &mut view, &user, &driver) {
                    Ok(()) => {}
                    Err(FieldError::Storage(e)) => {
                        // doveadm prints nothing for a failed plain field (later columns
                        // shift) and goes on; a stream is always closed by the printer.
                        rt.storage_failed(
                            format_args!("fetch({title}) failed for box={name} uid={}", rec.uid),
                            &e,
                        );
                    }
                    Err(FieldError::Print(PrintError::Fatal(m))) => {
                        return Err(Fatal::for_user(&user, exit::TEMPFAIL, m));
                    }
                    Err(FieldError::Print(PrintError::Write(e) | PrintError::Read(e))) => {
                        return Err(write_failed(e));
                    }
                }
            }
        }
    }
    printer.finish().map_err(write_failed)
}

fn cmd_search(rt: &mut Runtime, store: &dyn Store, query: &Query) -> Result<(), Fatal> {
    let mut printer = rt
        .printer(
            Some(FormatterKind::Flow),
            vec![Column::hidden("mailbox-guid"), Column::hidden("uid")],
        )
        .expect("default formatter given");
    let sep = store.hierarchy_separator();
    for name in select_mailboxes(rt, store, query) {
        let mut mbox = match store.open_mailbox(&name) {
            Ok(m) => m,
            Err(e) => {
                rt.storage_failed(format_args!("Couldn't get mailbox '{name}' GUID"), &e);
                continue;
            }
        };
        let guid = match mbox.status() {
            Ok(s) => s.guid,
            Err(e) => {
                rt.storage_failed(format_args!("Couldn't get mailbox '{name}' GUID"), &e);
                continue;
            }
        }
        .to_string();
        for rec in matching(rt, mbox.as_mut(), &name, sep, query) {
            printer.value(&guid).map_err(write_failed)?;
            printer.value(rec.uid.to_string()).map_err(write_failed)?;
        }
    }
    printer.finish().map_err(write_failed)
}

fn finish_silent(rt: &mut Runtime) -> Result<(), Fatal> {
    if let Some(mut p) = rt.printer(None, Vec::new()) {
        p.finish().map_err(write_failed)?;
    }
    Ok(())
}

/// Runs `body` in one transaction of `mbox`: commits when it succeeds, rolls everything
/// back when it fails.
fn in_transaction<T>(
    mbox: &mut dyn Mailbox,
    body: impl FnOnce(&mut dyn Transaction) -> mailstore::Result<T>,
) -> mailstore::Result<T> {
    let mut tx = mbox.begin()?;
    match body(tx.as_mut()) {
        Ok(value) => {
            tx.commit()?;
            Ok(value)
        }
        Err(e) => {
            tx.rollback();
            Err(e)
        }
    }
}

/// Applies `op` to each of `uids` in one transaction of `mbox`. A message expunged
/// meanwhile (MailNotFound) is skipped, not an error; any other error rolls the whole
/// transaction back.
fn for_each_uid(
    mbox: &mut dyn Mailbox,
    uids: impl IntoIterator<Item = Uid>,
    mut op: impl FnMut(&mut dyn Transaction, Uid) -> mailstore::Result<()>,
) -> mailstore::Result<()> {
    in_transaction(mbox, |tx| {
        for uid in uids {
            match op(tx, uid) {
                Ok(()) | Err(Error::MailNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
}

/// Calls `visit` for each mailbox the query selects that opens and has messages matching
/// the query (doveadm_mail_iter), with those messages.
fn for_each_matching_mailbox(
    rt: &mut Runtime,
    store: &dyn Store,
    query: &Query,
    mut visit: impl FnMut(&mut Runtime, &str, &mut dyn Mailbox, &[MailRecord]),
) {
    let sep = store.hierarchy_separator();
    for name in select_mailboxes(rt, store, query) {
        let Some(mut mbox) = open_for_iter(rt, store, &name) else {
            continue;
        };
        let matches = matching(rt, mbox.as_mut(), &name, sep, query);
        if !matches.is_empty() {
            visit(rt, &name, mbox.as_mut(), &matches);
        }
    }
}

fn cmd_save(
    rt: &mut Runtime,
    store: &dyn Store,
    mailbox: &str,
    file: Option<&Path>,
) -> Result<(), Fatal> {
    let mut mbox = match store.open_mailbox(mailbox) {
        Ok(m) => m,
        Err(e) => {
            rt.storage_failed(format_args!("Failed to open mailbox {mailbox}"), &e);
            return finish_silent(rt);
        }
    };
    let mut input: Box<dyn Read> = match file {
        None => Box::new(io::stdin()),
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                rt.error(format!(
                    "read({p}) failed: open({p}) failed: {}",
                    io_error_text(&e),
                    p = path.display()
                ));
                rt.fail(exit::TEMPFAIL);
                return finish_silent(rt);
            }
        },
    };
    if let Err(e) = in_transaction(mbox.as_mut(), |tx| tx.save(NewMail::default(), &mut input)) {
        rt.storage_failed(format_args!("Mailbox {mailbox}: Saving mail"), &e);
    }
    finish_silent(rt)
}

fn cmd_flags(
    rt: &mut Runtime,
    store: &dyn Store,
    op: FlagOp,
    flags: Flags,
    keywords: &[String],
    query: &Query,
) -> Result<(), Fatal> {
    if let Some(k) = keywords
        .iter()
        .find(|k| !Keyword::is_valid_atom(k.as_bytes()))
    {
        // Refused for each mailbox that opens, before searching it.
        for name in select_mailboxes(rt, store, query) {
            if open_for_iter(rt, store, &name).is_some() {
                rt.error(format!("Invalid keywords: Invalid keyword: {k}"));
                rt.exit_code = exit::DATAERR;
            }
        }
        return finish_silent(rt);
    }
    let update = FlagUpdate {
        op,
        flags,
        keywords: keywords.iter().map(|k| Keyword::from(k.as_str())).collect(),
    };
    for_each_matching_mailbox(rt, store, query, |rt, name, mbox, matches| {
        let uids = matches.iter().map(|rec| rec.uid);
        if let Err(e) = for_each_uid(mbox, uids, |tx, uid| tx.update_flags(uid, &update)) {
            rt.storage_failed(format_args!("Mailbox {name}: Mailbox sync failed"), &e);
        }
    });
    finish_silent(rt)
}

fn cmd_expunge(rt: &mut Runtime, store: &dyn Store, query: &Query) -> Result<(), Fatal> {
    for_each_matching_mailbox(rt, store, query, |rt, name, mbox, matches| {
        let uids = matches.iter().map(|rec| rec.uid);
        let result = for_each_uid(mbox, uids, |tx, uid| {
            rt.debug(format!("expunge: box={name} uid={uid}"));
            tx.expunge(uid)
        });
        if let Err(e) = result {
            rt.storage_failed(format_args!("Syncing mailbox '{name}' failed"), &e);
        }
    });
    finish_silent(rt)
}

fn cmd_copy(
    rt: &mut Runtime,
    store: &dyn Store,
    dest: &str,
    query: &Query,
    is_move: bool,
) -> Result<(), Fatal> {
    let mut dest_box = match store.open_mailbox(dest) {
        Ok(m) => m,
        Err(e) => {
            rt.storage_failed(format_args!("Can't open mailbox '{dest}'"), &e);
            return finish_silent(rt);
        }
    };
    for_each_matching_mailbox(rt, store, query, |rt, name, mbox, matches| {
        // Copy: every message or none (one destination transaction per source mailbox).
        let copied = in_transaction(dest_box.as_mut(), |tx| {
            let mut done = Vec::new();
            for rec in matches {
                let mut input = match mbox.open_mail(rec.uid) {
                    Ok(i) => i,
                    Err(Error::MailNotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                let mut flags = rec.flags;
                flags.remove(Flags::RECENT);
                // mail-copy.c mail_save_copy_default_metadata keeps no POP3 UIDL or order
                let new = NewMail {
                    guid: Some(rec.guid.clone()),
                    uid: None,
                    received_date: Some(rec.received_date),
                    saved_date: None,
                    flags,
                    keywords: rec.keywords.clone(),
                    pop3: Default::default(),
                };
                tx.save(new, &mut input)?;
                done.push(rec.uid);
            }
            Ok(done)
        });
        let copied = match copied {
            Ok(c) => c,
            Err(e) => {
                let what = if is_move { "moved" } else { "copied" };
                rt.storage_failed(format_args!("Committing {what} mails failed"), &e);
                return;
            }
        };
        if is_move && !copied.is_empty() {
            if let Err(e) = for_each_uid(mbox, copied, |tx, uid| tx.expunge(uid)) {
                rt.storage_failed(format_args!("Mailbox {name}: Mailbox sync failed"), &e);
            }
        }
    });
    finish_silent(rt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailstore::memory::MemoryStore;
    use mailstore::{MailboxGuid, Store};

    fn save(store: &MemoryStore, mailbox: &str, msg: &[u8], flags: Flags) {
        let mut m = store.open_mailbox(mailbox).unwrap();
        let mut tx = m.begin().unwrap();
        tx.save(
            NewMail {
                flags,
                received_date: Some(1709630430),
                saved_date: Some(1709630500),
                ..NewMail::default()
            },
            &mut &msg[..],
        )
        .unwrap();
        tx.commit().unwrap();
    }

    const M1: &[u8] = b"Subject: hello\n world folded\nFrom: a@b.c\nDate: Tue, 05 Mar 2024 10:20:30 +0100\n\nline one\nline two\n";
    const M2: &[u8] = b"Subject: two\n\nbody2\n";

    fn store() -> MemoryStore {
        let s = MemoryStore::new();
        save(&s, "INBOX", M1, Flags::SEEN);
        save(&s, "INBOX", M2, Flags::EMPTY);
        s.create_mailbox("Sub", Some(MailboxGuid([0xab; 16])))
            .unwrap();
        save(&s, "Sub", M2, Flags::FLAGGED);
        s
    }

    fn run(s: &MemoryStore, args: &[&str]) -> (i32, String, String) {
        let (c, o, e) = run_on_store(s, args, "alice");
        (
            c,
            String::from_utf8(o).unwrap(),
            String::from_utf8(e).unwrap(),
        )
    }

    #[test]
    fn fetch_pager_default_and_field_order() {
        let s = store();
        let (c, o, e) = run(
            &s,
            &[
                "fetch",
                "uid FLAGS hdr.subject body",
                "mailbox",
                "INBOX",
                "all",
            ],
        );
        assert_eq!(c, 0, "{e}");
        assert_eq!(
            o,
            "uid: 1\nflags: \\Seen \\Recent\nhdr.subject: hello\n world folded\nbody:\nline one\nline two\n\x0c\nuid: 2\nflags: \\Recent\nhdr.subject: two\nbody:\nbody2\n"
        );
    }

    #[test]
    fn fetch_json_and_dates() {
        let s = store();
        let (c, o, _) = run(
            &s,
            &[
                "-f",
                "json",
                "fetch",
                "uid date.sent.unixtime date.received.unixtime size.physical",
                "mailbox",
                "INBOX",
                "uid",
                "1",
            ],
        );
        assert_eq!(c, 0);
        assert_eq!(
            o,
            format!(
                "[{{\"uid\":\"1\",\"date.sent.unixtime\":\"1709630430\",\"date.received.unixtime\":\"1709630430\",\"size.physical\":\"{}\"}}]",
                M1.len()
            )
        );
    }

    #[test]
    fn fetch_unknown_field_prints_list_and_fatal() {
        let s = store();
        let (c, o, e) = run(&s, &["fetch", "uid bogus", "all"]);
        assert_eq!(c, 75);
        assert_eq!(o, "");
        assert!(
            e.starts_with("Available fetch fields: hdr.<name> user"),
            "{e}"
        );
        assert!(e.ends_with("Fatal: Unknown fetch field: bogus\n"), "{e}");
    }

    #[test]
    fn search_prints_guid_uid_and_errors_on_missing_mailbox() {
        let s = store();
        let (c, o, _) = run(&s, &["search", "mailbox", "Sub", "all"]);
        assert_eq!(c, 0);
        assert_eq!(o, format!("{} 1\n", MailboxGuid([0xab; 16])));
        let (c, o, e) = run(&s, &["search", "mailbox", "Nope", "all"]);
        assert_eq!(c, 68);
        assert_eq!(o, "");
        assert_eq!(
            e,
            "mailsync(alice): Error: Couldn't get mailbox 'Nope' GUID: Mailbox doesn't exist: Nope\n"
        );
        let (c, o, _) = run(&s, &["search", "flagged"]);
        assert_eq!(c, 0);
        assert_eq!(o.lines().count(), 1);
        let (c, _, e) = run(&s, &["search", "bogus"]);
        assert_eq!((c, e.as_str()), (75, "Fatal: Unknown argument BOGUS\n"));
    }

    #[test]
    fn flags_add_remove_replace() {
        let s = store();
        let (c, _, _) = run(
            &s,
            &[
                "flags",
                "add",
                "\\Flagged $Work",
                "mailbox",
                "INBOX",
                "uid",
                "2",
            ],
        );
        assert_eq!(c, 0);
        let (_, o, _) = run(
            &s,
            &[
                "-f", "flow", "fetch", "flags", "mailbox", "INBOX", "uid", "2",
            ],
        );
        assert_eq!(o, "flags=\\Flagged \\Recent $Work\n");
        run(
            &s,
            &["flags", "remove", "$Work", "mailbox", "INBOX", "uid", "2"],
        );
        let (_, o, _) = run(
            &s,
            &[
                "-f", "flow", "fetch", "flags", "mailbox", "INBOX", "uid", "2",
            ],
        );
        assert_eq!(o, "flags=\\Flagged \\Recent\n");
        run(
            &s,
            &["flags", "replace", "\\Answered", "mailbox", "INBOX", "all"],
        );
        let (_, o, _) = run(
            &s,
            &["-f", "flow", "fetch", "flags", "mailbox", "INBOX", "all"],
        );
        assert_eq!(o, "flags=\\Answered \\Recent\nflags=\\Answered \\Recent\n");
        let (c, _, e) = run(&s, &["flags", "add", "\\Bogus", "all"]);
        assert_eq!(
            (c, e.as_str()),
            (75, "Fatal: Invalid system flag: \\Bogus\n")
        );
    }

    #[test]
    fn invalid_keyword_is_refused_for_each_mailbox_and_changes_nothing() {
        let s = store();
        let (c, _, e) = run(&s, &["flags", "add", "\\Seen bad(kw", "all"]);
        assert_eq!(c, exit::DATAERR);
        assert_eq!(
            e,
            "mailsync(alice): Error: Invalid keywords: Invalid keyword: bad(kw\n".repeat(2)
        );
        let (_, o, _) = run(&s, &["-f", "flow", "fetch", "mailbox flags", "all"]);
        assert_eq!(
            o,
            "mailbox=INBOX flags=\\Seen \\Recent\nmailbox=INBOX flags=\\Recent\nmailbox=Sub flags=\\Flagged \\Recent\n"
        );
    }

    #[test]
    fn expunge_needs_mailbox_and_removes() {
        let s = store();
        let (c, _, e) = run(&s, &["expunge", "all"]);
        assert_eq!(c, 64);
        assert!(
            e.contains("must contain MAILBOX in all search branches"),
            "{e}"
        );
        let (c, _, _) = run(&s, &["expunge", "mailbox", "INBOX", "uid", "1"]);
        assert_eq!(c, 0);
        let (_, o, _) = run(
            &s,
            &["-f", "flow", "fetch", "uid", "mailbox", "INBOX", "all"],
        );
        assert_eq!(o, "uid=2\n");
    }

    #[test]
    fn copy_and_move() {
        let s = store();
        let (c, _, _) = run(&s, &["copy", "Sub", "mailbox", "INBOX", "uid", "1"]);
        assert_eq!(c, 0);
        let (_, o, _) = run(
            &s,
            &[
                "-f",
                "flow",
                "fetch",
                "hdr.subject flags",
                "mailbox",
                "Sub",
                "all",
            ],
        );
        assert!(
            o.contains("hdr.subject=hello\n world folded flags=\\Seen"),
            "{o}"
        );
        let (c, _, _) = run(&s, &["move", "Sub", "mailbox", "INBOX", "uid", "2"]);
        assert_eq!(c, 0);
        let (_, o, _) = run(
            &s,
            &["-f", "flow", "fetch", "uid", "mailbox", "INBOX", "all"],
        );
        assert_eq!(o, "uid=1\n");
        let (c, _, e) = run(&s, &["copy", "Nope", "all"]);
        assert_eq!(c, 68);
        assert!(
            e.contains("Can't open mailbox 'Nope': Mailbox doesn't exist: Nope"),
            "{e}"
        );
    }

    #[test]
    fn silent_commands_print_empty_formatter_output_only_with_f() {
        let s = store();
        let (_, o, _) = run(&s, &["flags", "add", "\\Seen", "all"]);
        assert_eq!(o, "");
        let (_, o, _) = run(&s, &["-f", "json", "flags", "add", "\\Seen", "all"]);
        assert_eq!(o, "[]");
        let (_, o, _) = run(&s, &["-f", "tab", "flags", "add", "\\Seen", "all"]);
        assert_eq!(o, "\n");
    }

    #[test]
    fn flag_parsing() {
        let (f, k) = parse_flags("\\seen \\RECENT kw1  $x").unwrap();
        assert_eq!(f, Flags::SEEN | Flags::RECENT);
        assert_eq!(k, vec!["kw1", "$x"]);
    }
}
