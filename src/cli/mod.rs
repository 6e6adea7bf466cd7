//! The doveadm-compatible command line.
//!
//! `mailsync [-Dv] [-f FORMATTER] [-c FILE] [-o KEY=VALUE]... COMMAND ...` accepts the mail
//! commands of `doveadm` 2.3 with the same options, output formats and exit codes, so admin
//! scripts port by replacing `doveadm` with `mailsync` (see
//! /work/shared/reference/doveadm-cli.md for the behaviour replicated).

pub mod config;
pub mod dates;
pub mod dump;
pub mod fetch;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod mail;
pub mod mailbox;
pub mod mime;
pub mod purge;
pub mod query;
pub mod resync;
pub mod sync;

use std::cell::RefCell;
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::rc::Rc;

use clap::{Args, Parser, Subcommand};

use format::{Column, FormatterKind, Printer};

/// sysexits.h codes doveadm uses.
pub mod exit {
    pub const OK: i32 = 0;
    pub const USAGE: i32 = 64;
    pub const DATAERR: i32 = 65;
    pub const NOUSER: i32 = 67;
    pub const NOTFOUND: i32 = 68;
    pub const TEMPFAIL: i32 = 75;
    pub const NOPERM: i32 = 77;
    pub const CONFIG: i32 = 78;
}

const AFTER_HELP: &str = "\
Mail location: taken from `-o mail_location=...`, else from `mail_location` in the -c \
config file (or from a namespace's `location`). Unlike doveadm, mailsync does not \
autodetect a location: none given exits 78. `~` expands to the home directory; `%u` \
(user), `%n`/`%d` (user/domain parts), `%h` (home) and `%%` expand in config-file values \
AND, deliberately unlike doveadm, also in `-o` values.

User: $USER (and $HOME) unless a command is given `-u USER`; for another user than \
$USER the home directory comes from /etc/passwd.

Hierarchy separator: the inbox namespace's `separator` (config `namespace NAME { \
separator = / }` or `-o namespace/NAME/separator=/`), else the layout's own (`.` for \
Maildir++).

Storage drivers: maildir (Maildir++ and LAYOUT=fs), sdbox, mdbox, mbox.

More commands (each has its own --help): `purge` (rewrite mdbox storage files without \
expunged messages), `force-resync [-f] MASK` (offline rebuild of indexes from the mail \
files).

Formatters replicate doveadm byte for byte, including the tab formatter's quirk with \
streams (hdr, body, text): a TAB before every 8 KiB chunk of a stream that is not in the \
first column, and one more TAB (or the newline) after the stream.

Exit codes as doveadm: 0 ok, 64 usage, 65 data error / exists, 67 no such user, 68 not \
found, 75 temporary failure, 77 permission denied, 78 configuration error.";

/// Global options and the command.
#[derive(Parser, Debug)]
#[command(
    name = "mailsync",
    version,
    about = "doveadm-compatible mail commands over native Dovecot-format stores",
    after_help = AFTER_HELP,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Debug logging to stderr (what is opened, which mailboxes are visited).
    #[arg(short = 'D')]
    pub debug: bool,
    /// Verbose logging (accepted for doveadm compatibility; mail commands print the same).
    #[arg(short = 'v')]
    pub verbose: bool,
    /// Read settings from this Dovecot config file (`key = value`, `!include`, namespace
    /// blocks; only mail_location, mail_save_crlf and the namespace separator are used).
    #[arg(short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override a setting, e.g. `-o mail_location=maildir:~/Maildir` or
    /// `-o namespace/inbox/separator=/`. Repeatable. %u/%h/%n/%d/%% are expanded here too
    /// (doveadm does not expand them in -o values).
    #[arg(short = 'o', value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Output formatter: flow, tab, table, json or pager. Default: pager for fetch, flow
    /// for the others.
    #[arg(short = 'f', value_name = "FORMATTER")]
    pub formatter: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every mail command takes.
#[derive(Args, Debug, Clone, Default)]
pub struct UserOpt {
    /// Run as this user instead of $USER (home from /etc/passwd when it isn't $USER).
    #[arg(short = 'u', value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Two-way sync (or with -1 one-way merge) of the user's mail with DESTINATION, as
    /// `doveadm sync`: `sync [-1fPR] [-m mailbox] [-x mask]... [-s state] [SOURCE] DESTINATION`.
    #[command(after_help = sync::SYNC_AFTER_HELP)]
    Sync(sync::SyncArgs),
    /// Make DESTINATION an exact copy of the user's mail, as `doveadm backup`.
    #[command(after_help = sync::SYNC_AFTER_HELP)]
    Backup(sync::SyncArgs),
    /// Print a Dovecot index (dovecot.index + its log replayed), transaction log
    /// (dovecot.index.log, .log.2) or mailbox log in `doveadm dump`'s layout.
    ///
    /// PATH is the file, or for an index also the directory holding dovecot.index*. Needs
    /// no user and no mail location.
    Dump {
        /// index, log or mailboxlog (default: detected from the file).
        #[arg(short = 't', value_name = "TYPE")]
        kind: Option<String>,
        path: PathBuf,
    },
    /// Mailbox management: list, create, delete, rename, subscribe, unsubscribe, status.
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// Print fields of the messages matching a search query.
    ///
    /// FIELDS is one argument, space separated, case-insensitive: user mailbox mailbox-guid
    /// seq uid guid flags modseq hdr body text hdr.<name> (raw, folded; also
    /// hdr.<name>.utf8, .address, .address_name, .address_name.utf8) size.physical
    /// size.virtual date.received date.saved date.sent date.received.unixtime
    /// date.saved.unixtime date.sent.unixtime pop3.uidl pop3.order refcount storageid.
    /// Dates are in the local time zone (TZ respected).
    Fetch {
        #[command(flatten)]
        user: UserOpt,
        /// Output formatter (same as the global -f; an extension, doveadm has no
        /// per-command -f for fetch).
        #[arg(short = 'f', value_name = "FORMATTER")]
        formatter: Option<String>,
        /// Space-separated field names, as one argument.
        fields: String,
        /// Search query (see `search --help`).
        #[arg(required = true, num_args = 1.., value_name = "QUERY")]
        query: Vec<String>,
    },
    /// Print `<mailbox-guid> <uid>` of the messages matching a search query.
    ///
    /// Query keys (case-insensitive, each a separate argument; implicit AND; `or` infix;
    /// `not KEY`; `(` and `)` as separate arguments): all, SEQSET, uid SET, seen unseen
    /// flagged unflagged answered unanswered deleted undeleted draft undraft recent old
    /// new, keyword K, unkeyword K, before/on/since DATE (received), sentbefore/senton/
    /// sentsince DATE, savedbefore/savedon/savedsince DATE, larger/smaller SIZE (k/m/g
    /// suffixes), from/to/cc/bcc/subject TEXT, header NAME TEXT, body TEXT, text TEXT,
    /// mailbox NAME (`*`/`%` wildcards), mailbox-guid GUID, guid GUID, modseq N,
    /// older/younger SECS. DATE: YYYY-MM-DD (local midnight), d-Mon-yyyy, a UNIX time, or
    /// an interval like 1d, 2w, 30mins. Without a mailbox key all mailboxes are searched.
    Search {
        #[command(flatten)]
        user: UserOpt,
        #[arg(required = true, num_args = 1.., value_name = "QUERY")]
        query: Vec<String>,
    },
    /// Save a message read from FILE (default: standard input) into a mailbox.
    Save {
        #[command(flatten)]
        user: UserOpt,
        /// Mailbox to save into (default INBOX).
        #[arg(short = 'm', value_name = "MAILBOX")]
        mailbox: Option<OsString>,
        /// File holding the message (standard input when absent).
        file: Option<PathBuf>,
    },
    /// Add, remove or replace flags and keywords of the messages matching a query.
    #[command(subcommand)]
    Flags(FlagsCommand),
    /// Expunge the messages matching a query (the query must name a mailbox in every OR
    /// branch).
    Expunge {
        #[command(flatten)]
        user: UserOpt,
        #[arg(required = true, num_args = 1.., value_name = "QUERY")]
        query: Vec<String>,
    },
    /// Copy the messages matching a query into DESTINATION.
    Copy {
        #[command(flatten)]
        user: UserOpt,
        /// Destination mailbox.
        destination: OsString,
        #[arg(required = true, num_args = 1.., value_name = "QUERY")]
        query: Vec<String>,
    },
    /// Move the messages matching a query into DESTINATION (the query must name a
    /// mailbox in every OR branch, as for expunge).
    Move {
        #[command(flatten)]
        user: UserOpt,
        /// Destination mailbox.
        destination: OsString,
        #[arg(required = true, num_args = 1.., value_name = "QUERY")]
        query: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum MailboxCommand {
    /// List mailboxes (all, or those matching the masks; `*` and `%` wildcards).
    List {
        #[command(flatten)]
        user: UserOpt,
        /// Print names in modified UTF-7 (as stored on disk).
        #[arg(short = '7', overrides_with = "utf8")]
        mutf7: bool,
        /// Print names in UTF-8 (the default).
        #[arg(short = '8', overrides_with = "mutf7")]
        utf8: bool,
        /// List only subscribed mailboxes.
        #[arg(short = 's')]
        subscribed: bool,
        /// Mailbox masks.
        masks: Vec<OsString>,
    },
    /// Create mailboxes.
    Create {
        #[command(flatten)]
        user: UserOpt,
        /// Also subscribe them.
        #[arg(short = 's')]
        subscribe: bool,
        /// Give the mailbox this GUID (32 hex digits).
        #[arg(short = 'g', value_name = "GUID")]
        guid: Option<String>,
        #[arg(required = true, num_args = 1.., value_name = "MAILBOX")]
        names: Vec<OsString>,
    },
    /// Delete mailboxes, with their messages.
    Delete {
        #[command(flatten)]
        user: UserOpt,
        /// Delete child mailboxes too.
        #[arg(short = 'r')]
        recursive: bool,
        /// Also unsubscribe them.
        #[arg(short = 's')]
        unsubscribe: bool,
        /// Only delete empty mailboxes.
        #[arg(short = 'e')]
        require_empty: bool,
        /// Accepted for doveadm compatibility (unsafe delete); no effect.
        #[arg(short = 'Z')]
        unsafe_delete: bool,
        #[arg(required = true, num_args = 1.., value_name = "MAILBOX")]
        names: Vec<OsString>,
    },
    /// Rename a mailbox (and its children).
    Rename {
        #[command(flatten)]
        user: UserOpt,
        /// Also move the subscription.
        #[arg(short = 's')]
        subscriptions: bool,
        old: OsString,
        new: OsString,
    },
    /// Subscribe mailboxes (they need not exist).
    Subscribe {
        #[command(flatten)]
        user: UserOpt,
        #[arg(required = true, num_args = 1.., value_name = "MAILBOX")]
        names: Vec<OsString>,
    },
    /// Unsubscribe mailboxes.
    Unsubscribe {
        #[command(flatten)]
        user: UserOpt,
        #[arg(required = true, num_args = 1.., value_name = "MAILBOX")]
        names: Vec<OsString>,
    },
    /// Print mailbox status fields.
    ///
    /// FIELDS is one argument (space separated) or given with -f: all messages recent
    /// uidnext uidvalidity unseen highestmodseq vsize guid firstsaved (case-sensitive;
    /// printed in this fixed order). The remaining arguments are mailbox masks.
    Status {
        #[command(flatten)]
        user: UserOpt,
        /// Print the sums over all matched mailboxes (messages recent unseen vsize).
        #[arg(short = 't')]
        total: bool,
        /// A status field (as doveadm; repeatable) — or, as an extension, an output
        /// formatter name (flow, tab, table, json, pager).
        #[arg(short = 'f', value_name = "FIELD|FORMATTER")]
        field_or_formatter: Vec<String>,
        /// FIELDS then MAILBOX masks (only masks when -f gave fields).
        #[arg(required = true, num_args = 1.., value_name = "ARGS")]
        args: Vec<OsString>,
    },
}

#[derive(Subcommand, Debug)]
pub enum FlagsCommand {
    /// Add flags/keywords.
    Add(FlagsArgs),
    /// Remove flags/keywords.
    Remove(FlagsArgs),
    /// Replace all flags/keywords.
    Replace(FlagsArgs),
}

#[derive(Args, Debug)]
pub struct FlagsArgs {
    #[command(flatten)]
    pub user: UserOpt,
    /// Space-separated flags as one argument: \Answered \Flagged \Deleted \Seen \Draft
    /// and keywords.
    pub flags: String,
    #[arg(required = true, num_args = 1.., value_name = "QUERY")]
    pub query: Vec<String>,
}

/// A `Write` shared between the runtime and its printers.
#[derive(Clone)]
pub struct SharedWriter(Rc<RefCell<Box<dyn Write>>>);

impl SharedWriter {
    pub fn new(w: Box<dyn Write>) -> SharedWriter {
        SharedWriter(Rc::new(RefCell::new(w)))
    }
}

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// Output kept in memory; clones share the bytes, so they can be read back after a printer
/// or runtime wrote to its clone.
#[derive(Clone, Default)]
pub struct MemoryOutput(Rc<RefCell<Vec<u8>>>);

impl MemoryOutput {
    /// The bytes written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.borrow().clone()
    }
}

impl Write for MemoryOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A fatal error: message and exit code. With `user` set the message is prefixed
/// `mailsync(<user>): Fatal: ` as doveadm does for fatals raised while running for a
/// user; otherwise just `Fatal: ` (option and argument parsing).
#[derive(Debug)]
pub struct Fatal {
    pub code: i32,
    pub msg: String,
    pub user: Option<String>,
}

impl Fatal {
    pub fn plain(code: i32, msg: impl Into<String>) -> Fatal {
        Fatal {
            code,
            msg: msg.into(),
            user: None,
        }
    }
    pub fn for_user(user: &str, code: i32, msg: impl Into<String>) -> Fatal {
        Fatal {
            code,
            msg: msg.into(),
            user: Some(user.to_string()),
        }
    }
}

/// Per-run state: the user, output, error log and exit code.
pub struct Runtime {
    pub user: String,
    /// The formatter given with -f, if any.
    pub formatter: Option<FormatterKind>,
    pub out: SharedWriter,
    pub err: SharedWriter,
    pub exit_code: i32,
    pub debug: bool,
    /// Mail storage driver (`maildir`, ...), for driver-specific fetch fields.
    pub driver: String,
}

impl Runtime {
    /// Logs `mailsync(<user>): Error: <msg>`.
    pub fn error(&mut self, msg: impl AsRef<str>) {
        let _ = writeln!(self.err, "mailsync({}): Error: {}", self.user, msg.as_ref());
    }

    pub fn debug(&mut self, msg: impl AsRef<str>) {
        if self.debug {
            let _ = writeln!(self.err, "mailsync({}): Debug: {}", self.user, msg.as_ref());
        }
    }

    /// Records a failure (doveadm_mail_failed_error): tempfail overrides everything,
    /// otherwise the first error's code wins.
    pub fn fail(&mut self, code: i32) {
        if self.exit_code == 0 || code == exit::TEMPFAIL {
            self.exit_code = code;
        }
    }

    /// Records a storage failure with its exit code.
    pub fn fail_storage(&mut self, e: &mailstore::Error) {
        self.fail(e.kind().exit_code());
    }

    /// Logs a storage failure as doveadm words it, `<context>: <error text>`, and records
    /// its exit code.
    pub fn storage_failed(&mut self, context: impl std::fmt::Display, e: &mailstore::Error) {
        self.error(format!("{context}: {}", storage_error_text(e)));
        self.fail_storage(e);
    }

    /// A printer for a command: the -f formatter, else `default`. Commands that print
    /// nothing pass `None` and get a printer only when -f was given (doveadm then still
    /// prints the formatter's empty output, e.g. `[]`).
    pub fn printer(&self, default: Option<FormatterKind>, columns: Vec<Column>) -> Option<Printer> {
        let kind = self.formatter.or(default)?;
        Some(Printer::new(kind, columns, Box::new(self.out.clone())))
    }
}

/// doveadm's wording of a storage error (`Mailbox already exists`, `Invalid mailbox
/// name: <reason>`, `Mailbox doesn't exist: <name>`, ...).
pub fn storage_error_text(e: &mailstore::Error) -> String {
    match e {
        mailstore::Error::MailboxExists(_) => "Mailbox already exists".into(),
        mailstore::Error::InvalidMailboxName { reason, .. } => {
            format!("Invalid mailbox name: {reason}")
        }
        // strerror() text, without Rust's " (os error N)" suffix.
        mailstore::Error::Io { op, path, source } => format!(
            "{op}({}) failed: {}",
            path.display(),
            mail::io_error_text(source)
        ),
        other => other.to_string(),
    }
}

/// Runs the command line and returns the process exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let stdout: Box<dyn Write> = Box::new(io::BufWriter::new(io::stdout()));
    let stderr: Box<dyn Write> = Box::new(io::stderr());
    run_with(
        args,
        SharedWriter::new(stdout),
        SharedWriter::new(stderr),
        &|name| std::env::var_os(name),
    )
}

/// [`run`] with explicit output streams and environment (for tests).
pub fn run_with(
    args: Vec<OsString>,
    mut out: SharedWriter,
    mut err: SharedWriter,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> i32 {
    if let Some(code) = purge::intercept(&args, &mut out, &mut err, env) {
        return code;
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind as K;
            let code = match e.kind() {
                K::DisplayHelp | K::DisplayVersion => {
                    let _ = write!(out, "{}", e.render());
                    let _ = out.flush();
                    return exit::OK;
                }
                _ => exit::USAGE,
            };
            let _ = write!(err, "{}", e.render());
            return code;
        }
    };
    let result = match &cli.command {
        Command::Dump { kind, path } => dump::run(kind.as_deref(), path, &mut out),
        Command::Sync(a) => Ok(sync::run(false, a, &cli, &mut out, &mut err, env)),
        Command::Backup(a) => Ok(sync::run(true, a, &cli, &mut out, &mut err, env)),
        _ => mail::execute(cli, out.clone(), err.clone(), env),
    };
    let code = match result {
        Ok(code) => code,
        Err(f) => {
            let _ = out.flush();
            match &f.user {
                Some(user) => {
                    let _ = writeln!(err, "mailsync({user}): Fatal: {}", f.msg);
                }
                None => {
                    let _ = writeln!(err, "Fatal: {}", f.msg);
                }
            }
            f.code
        }
    };
    let _ = out.flush();
    let _ = err.flush();
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> Runtime {
        Runtime {
            user: "u".into(),
            formatter: None,
            out: SharedWriter::new(Box::new(io::sink())),
            err: SharedWriter::new(Box::new(io::sink())),
            exit_code: 0,
            debug: false,
            driver: String::new(),
        }
    }

    #[test]
    fn first_error_wins_but_tempfail_overrides() {
        let mut r = rt();
        r.fail(exit::NOTFOUND);
        r.fail(exit::NOPERM);
        assert_eq!(r.exit_code, exit::NOTFOUND);
        r.fail(exit::TEMPFAIL);
        r.fail(exit::DATAERR);
        assert_eq!(r.exit_code, exit::TEMPFAIL);
    }

    #[test]
    fn storage_errors_read_like_doveadm() {
        use mailstore::Error;
        assert_eq!(
            storage_error_text(&Error::MailboxExists("X".into())),
            "Mailbox already exists"
        );
        assert_eq!(
            storage_error_text(&Error::invalid_name(
                "A/B",
                "Name must not have '/' characters"
            )),
            "Invalid mailbox name: Name must not have '/' characters"
        );
        assert_eq!(
            storage_error_text(&Error::MailboxNotFound("Nope".into())),
            "Mailbox doesn't exist: Nope"
        );
        let io = Error::io("open", "/x/y", io::Error::from_raw_os_error(2));
        assert_eq!(
            storage_error_text(&io),
            "open(/x/y) failed: No such file or directory"
        );
    }
}
