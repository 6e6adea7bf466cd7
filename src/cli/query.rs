//! doveadm's search query language ("human" register: IMAP SEARCH keys plus Dovecot
//! extras), parsed exactly as src/lib-storage/mail-search-build.c,
//! mail-search-register-human.c, mail-search-register-imap.c and
//! mail-search-parser-cmdline.c do, and evaluated against mailbox metadata first and
//! message contents only when a key needs them (index-search.c semantics).

use mailstore::{Flags, MailRecord, MailboxGuid};

use super::dates::{self, SearchDate};

/// Which date of a message a date key compares.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DateKind {
    Received,
    Sent,
    Saved,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DateOp {
    Before,
    On,
    Since,
}

/// How a header key compares (SEARCH_HEADER / _ADDRESS / _COMPRESS_LWSP).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HeaderKind {
    Plain,
    Address,
    CompressLwsp,
}

/// One `a:b` range of a message set; `u32::MAX` stands for `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqSet(pub Vec<(u32, u32)>);

impl SeqSet {
    /// imap_seq_set_parse: comma-separated numbers or ranges, `*` allowed, 0 refused.
    pub fn parse(s: &str) -> Option<SeqSet> {
        let mut ranges = Vec::new();
        for item in s.split(',') {
            let (a, b) = match item.split_once(':') {
                Some((a, b)) => (a, b),
                None => (item, item),
            };
            let num = |x: &str| -> Option<u32> {
                if x == "*" {
                    return Some(u32::MAX);
                }
                if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                let n: u32 = x.parse().ok()?;
                if n == 0 {
                    None
                } else {
                    Some(n)
                }
            };
            let (a, b) = (num(a)?, num(b)?);
            ranges.push((a.min(b), a.max(b)));
        }
        Some(SeqSet(ranges))
    }

    /// True when `n` is in the set; `star` is what `*` stands for.
    pub fn contains(&self, n: u32, star: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let a = if a == u32::MAX { star } else { a };
            let b = if b == u32::MAX { star } else { b };
            let (lo, hi) = (a.min(b), a.max(b));
            n >= lo && n <= hi
        })
    }
}

/// A search key (one `struct mail_search_arg` type with its value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    All,
    /// AND of the children (a parenthesised list, or NEW).
    Sub(Vec<Arg>),
    /// OR of the children.
    Or(Vec<Arg>),
    SeqSet(SeqSet),
    UidSet(SeqSet),
    Flags(Flags),
    Keyword(String),
    Date {
        op: DateOp,
        kind: DateKind,
        date: SearchDate,
    },
    SaveDateSupported,
    Larger(u64),
    Smaller(u64),
    Header {
        /// Upper-case header name.
        name: String,
        kind: HeaderKind,
        value: String,
    },
    Body(String),
    Text(String),
    Mailbox(String),
    MailboxGlob(String),
    MailboxGuid(String),
    Guid(String),
    Modseq(u64),
}

/// A key with its NOT flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    pub key: Key,
    pub not: bool,
}

impl Arg {
    fn new(key: Key) -> Arg {
        Arg { key, not: false }
    }
}

/// A parsed query: the implicit AND of `args` (as `mail_search_args.args`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub args: Vec<Arg>,
}

const LIST_KEY: &str = "(";

struct Builder<'a> {
    argv: &'a [String],
    pos: usize,
    list_level: u32,
    cur_key: Option<String>,
    now: i64,
    /// Set by an `OR` key: the list being built is an OR list (ctx->parent->type).
    parent_is_or: bool,
}

type BuildResult<T> = Result<T, String>;

impl Builder<'_> {
    /// cmdline_search_parse_key: Ok(None) at the end of the args or at `)`.
    fn parse_key(&mut self) -> BuildResult<Option<String>> {
        let Some(arg) = self.argv.get(self.pos) else {
            if self.list_level != 0 {
                return Err("Missing ')'".into());
            }
            return Ok(None);
        };
        self.pos += 1;
        if arg == "(" {
            self.list_level += 1;
            self.cur_key = Some(LIST_KEY.into());
            return Ok(Some(LIST_KEY.into()));
        }
        if arg == ")" {
            if self.list_level == 0 {
                return Err("Unexpected ')'".into());
            }
            self.list_level -= 1;
            return Ok(None);
        }
        self.cur_key = Some(arg.clone());
        Ok(Some(arg.clone()))
    }

    /// mail_search_parse_string, with the "(for search key: X)" suffix on errors.
    fn parse_string(&mut self) -> BuildResult<String> {
        match self.argv.get(self.pos) {
            Some(s) => {
                self.pos += 1;
                Ok(s.clone())
            }
            None => {
                let mut e = "Missing parameter for search key".to_string();
                if let Some(k) = &self.cur_key {
                    e.push_str(&format!(" (for search key: {})", k.to_ascii_uppercase()));
                }
                Err(e)
            }
        }
    }

    /// mail_search_build_list: keys until `)` or the end; AND unless an OR key switched
    /// the list to OR, and mixing both is an error.
    fn build_list(&mut self) -> BuildResult<Arg> {
        #[derive(PartialEq)]
        enum T {
            Sub,
            Or,
        }
        let saved_parent = self.parent_is_or;
        let mut cur = T::Sub;
        let mut subargs = Vec::new();
        loop {
            self.parent_is_or = false;
            let Some(arg) = self.build_key_int()? else {
                break;
            };
            let t = if self.parent_is_or { T::Or } else { T::Sub };
            if cur == t {
            } else if cur == T::Sub {
                cur = t;
            } else {
                return Err("Use parenthesis when mixing ANDs and ORs".into());
            }
            subargs.push(arg);
        }
        self.parent_is_or = saved_parent;
        Ok(Arg::new(if cur == T::Or {
            Key::Or(subargs)
        } else {
            Key::Sub(subargs)
        }))
    }

    /// mail_search_build_key: one key, required.
    fn build_key(&mut self) -> BuildResult<Arg> {
        match self.build_key_int()? {
            Some(a) => Ok(a),
            None => Err("Missing argument".into()),
        }
    }

    /// mail_search_build_key_int: Ok(None) when the list ends.
    fn build_key_int(&mut self) -> BuildResult<Option<Arg>> {
        let Some(key) = self.parse_key()? else {
            return Ok(None);
        };
        if key == LIST_KEY {
            let list = self.build_list()?;
            let empty = match &list.key {
                Key::Sub(v) | Key::Or(v) => v.is_empty(),
                _ => false,
            };
            if empty {
                return Err("No search parameters inside list".into());
            }
            return Ok(Some(list));
        }
        let key = key.to_ascii_uppercase();
        self.build_registered(&key).map(Some)
    }

    fn date(&mut self, op: DateOp, kind: DateKind) -> BuildResult<Arg> {
        let value = self.parse_string()?;
        match dates::parse_human_timestamp(&value, self.now) {
            Some(date) => Ok(Arg::new(Key::Date { op, kind, date })),
            None => Err(format!("Invalid search date parameter: {value}")),
        }
    }

    fn size(&mut self) -> BuildResult<u64> {
        let value = self.parse_string()?;
        parse_size(&value)
    }

    fn flag(flags: Flags, not: bool) -> Arg {
        Arg {
            key: Key::Flags(flags),
            not,
        }
    }

    fn interval(&mut self) -> BuildResult<i64> {
        let value = self.parse_string()?;
        match value.parse::<u32>() {
            Ok(n) if n > 0 && value.bytes().all(|c| c.is_ascii_digit()) => Ok(n as i64),
            _ => Err("Invalid search interval parameter".into()),
        }
    }

    fn build_registered(&mut self, key: &str) -> BuildResult<Arg> {
        let header = |b: &mut Self, name: &str, kind: HeaderKind| -> BuildResult<Arg> {
            let value = b.parse_string()?;
            Ok(Arg::new(Key::Header {
                name: name.into(),
                kind,
                value,
            }))
        };
        Ok(match key {
            "OR" => {
                // human_search_or: the enclosing list becomes an OR list.
                self.parent_is_or = true;
                let saved = self.parent_is_or;
                let arg = self.build_key()?;
                self.parent_is_or = saved || self.parent_is_or;
                arg
            }
            "NOT" => {
                let saved = self.parent_is_or;
                let mut arg = self.build_key()?;
                self.parent_is_or = saved || self.parent_is_or;
                arg.not = !arg.not;
                arg
            }
            "ALL" => Arg::new(Key::All),
            "UID" => {
                let v = self.parse_string()?;
                match SeqSet::parse(&v) {
                    Some(s) => Arg::new(Key::UidSet(s)),
                    None => return Err("Invalid UID messageset".into()),
                }
            }
            "ANSWERED" => Self::flag(Flags::ANSWERED, false),
            "UNANSWERED" => Self::flag(Flags::ANSWERED, true),
            "DELETED" => Self::flag(Flags::DELETED, false),
            "UNDELETED" => Self::flag(Flags::DELETED, true),
            "DRAFT" => Self::flag(Flags::DRAFT, false),
            "UNDRAFT" => Self::flag(Flags::DRAFT, true),
            "FLAGGED" => Self::flag(Flags::FLAGGED, false),
            "UNFLAGGED" => Self::flag(Flags::FLAGGED, true),
            "SEEN" => Self::flag(Flags::SEEN, false),
            "UNSEEN" => Self::flag(Flags::SEEN, true),
            "RECENT" => Self::flag(Flags::RECENT, false),
            "OLD" => Self::flag(Flags::RECENT, true),
            "NEW" => Arg::new(Key::Sub(vec![
                Self::flag(Flags::RECENT, false),
                Self::flag(Flags::SEEN, true),
            ])),
            "KEYWORD" => Arg::new(Key::Keyword(self.parse_string()?)),
            "UNKEYWORD" => Arg {
                key: Key::Keyword(self.parse_string()?),
                not: true,
            },
            "BEFORE" => self.date(DateOp::Before, DateKind::Received)?,
            "ON" => self.date(DateOp::On, DateKind::Received)?,
            "SINCE" => self.date(DateOp::Since, DateKind::Received)?,
            "SENTBEFORE" => self.date(DateOp::Before, DateKind::Sent)?,
            "SENTON" => self.date(DateOp::On, DateKind::Sent)?,
            "SENTSINCE" => self.date(DateOp::Since, DateKind::Sent)?,
            "SAVEDBEFORE" | "X-SAVEDBEFORE" => self.date(DateOp::Before, DateKind::Saved)?,
            "SAVEDON" | "X-SAVEDON" => self.date(DateOp::On, DateKind::Saved)?,
            "SAVEDSINCE" | "X-SAVEDSINCE" => self.date(DateOp::Since, DateKind::Saved)?,
            "SAVEDATESUPPORTED" => Arg::new(Key::SaveDateSupported),
            "LARGER" => Arg::new(Key::Larger(self.size()?)),
            "SMALLER" => Arg::new(Key::Smaller(self.size()?)),
            "BCC" => header(self, "BCC", HeaderKind::Address)?,
            "CC" => header(self, "CC", HeaderKind::Address)?,
            "FROM" => header(self, "FROM", HeaderKind::Address)?,
            "TO" => header(self, "TO", HeaderKind::Address)?,
            "SUBJECT" => header(self, "SUBJECT", HeaderKind::CompressLwsp)?,
            "HEADER" => {
                let name = self.parse_string()?.to_ascii_uppercase();
                header(self, &name, HeaderKind::Plain)?
            }
            "BODY" => Arg::new(Key::Body(self.parse_string()?)),
            "TEXT" => Arg::new(Key::Text(self.parse_string()?)),
            "OLDER" => {
                // WITHIN: received at or before now - secs (SEARCH_BEFORE compares "<").
                let secs = self.interval()?;
                Arg::new(Key::Date {
                    op: DateOp::Before,
                    kind: DateKind::Received,
                    date: SearchDate {
                        time: self.now - secs + 1,
                        utc: true,
                    },
                })
            }
            "YOUNGER" => {
                let secs = self.interval()?;
                Arg::new(Key::Date {
                    op: DateOp::Since,
                    kind: DateKind::Received,
                    date: SearchDate {
                        time: self.now - secs,
                        utc: true,
                    },
                })
            }
            "MODSEQ" => {
                let v = self.parse_string()?;
                match v.parse::<u64>() {
                    Ok(n) if v.bytes().all(|c| c.is_ascii_digit()) => Arg::new(Key::Modseq(n)),
                    _ => return Err("Invalid MODSEQ value".into()),
                }
            }
            "GUID" | "X-GUID" => Arg::new(Key::Guid(self.parse_string()?)),
            "MAILBOX" => {
                let v = self.parse_string()?;
                if v.contains(['*', '%']) {
                    Arg::new(Key::MailboxGlob(v))
                } else {
                    Arg::new(Key::Mailbox(v))
                }
            }
            "X-MAILBOX" => {
                let v = self.parse_string()?;
                match mailsupport::mutf7::decode(v.as_bytes()) {
                    Ok(name) => Arg::new(Key::MailboxGlob(name)),
                    Err(_) => return Err("X-MAILBOX name not mUTF-7".into()),
                }
            }
            "MAILBOX-GUID" => Arg::new(Key::MailboxGuid(self.parse_string()?)),
            "OLDESTONLY" => Arg::new(Key::All),
            _ => {
                // imap_search_fallback: a message sequence set.
                if key.starts_with('*') || key.starts_with(|c: char| c.is_ascii_digit()) {
                    match SeqSet::parse(key) {
                        Some(s) => Arg::new(Key::SeqSet(s)),
                        None => return Err("Invalid messageset".into()),
                    }
                } else {
                    return Err(format!("Unknown argument {key}"));
                }
            }
        })
    }
}

/// settings_get_size: a number with an optional `B`/`K`/`M`/`G`/`T` unit (`k`, `kb`,
/// `kib` ...).
pub fn parse_size(s: &str) -> BuildResult<u64> {
    let invalid = || format!("Invalid size: {s}");
    let digits = s.bytes().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return Err(invalid());
    }
    let num: u64 = s[..digits].parse().map_err(|_| invalid())?;
    let rest = s[digits..].trim_start_matches(' ').as_bytes();
    let (mult, mut rest): (u64, &[u8]) = match rest.first().map(|c| c.to_ascii_uppercase()) {
        Some(b'B') => (1, &rest[1..]),
        Some(b'K') => (1 << 10, &rest[1..]),
        Some(b'M') => (1 << 20, &rest[1..]),
        Some(b'G') => (1 << 30, &rest[1..]),
        Some(b'T') => (1 << 40, &rest[1..]),
        _ => (1, rest),
    };
    if mult > 1 {
        if rest.first().is_some_and(|c| c.eq_ignore_ascii_case(&b'I')) {
            rest = &rest[1..];
        }
        if rest.first().is_some_and(|c| c.eq_ignore_ascii_case(&b'B')) {
            rest = &rest[1..];
        }
    }
    if !rest.is_empty() {
        return Err(invalid());
    }
    num.checked_mul(mult)
        .ok_or_else(|| format!("Size is too large: {s}"))
}

impl Query {
    /// Parses command-line query arguments (each argv element one token).
    pub fn parse(argv: &[String]) -> Result<Query, String> {
        Self::parse_at(argv, now())
    }

    /// As [`Query::parse`] with "now" given (for intervals like `1d`).
    pub fn parse_at(argv: &[String], now: i64) -> Result<Query, String> {
        let mut b = Builder {
            argv,
            pos: 0,
            list_level: 0,
            cur_key: None,
            now,
            parent_is_or: false,
        };
        let root = b.build_list()?;
        // A simple AND root is flattened into the argument list (mail_search_build).
        let args = match root.key {
            Key::Sub(args) => args,
            other => vec![Arg::new(other)],
        };
        Ok(Query { args })
    }

    /// A query of mailbox names as `mailbox status`/`mailbox list` build it
    /// (doveadm_mail_mailbox_search_args_build): one MAILBOX key per name, OR-ed when there
    /// are several.
    pub fn from_mailbox_masks(masks: &[String]) -> Query {
        let mut args: Vec<Arg> = masks
            .iter()
            .map(|m| {
                Arg::new(if m.contains(['*', '%']) {
                    Key::MailboxGlob(m.clone())
                } else {
                    Key::Mailbox(m.clone())
                })
            })
            .collect();
        if args.len() > 1 {
            args = vec![Arg::new(Key::Or(args))];
        }
        Query { args }
    }

    /// The mailbox names/masks doveadm iterates for this query
    /// (search_args_get_mailbox_patterns in doveadm-mailbox-list-iter.c): the MAILBOX keys
    /// in the top-level AND (and nested ANDs), none when any is negated. Returns
    /// `(patterns, has_wildcards)`.
    pub fn mailbox_patterns(&self) -> (Vec<String>, bool) {
        fn collect(args: &[Arg], out: &mut Vec<String>, wild: &mut bool) -> bool {
            for a in args {
                match &a.key {
                    Key::Or(_) => {}
                    Key::Sub(sub) if !collect(sub, out, wild) => return false,
                    Key::Sub(_) => {}
                    Key::MailboxGlob(m) | Key::Mailbox(m) => {
                        if matches!(a.key, Key::MailboxGlob(_)) {
                            *wild = true;
                        }
                        if a.not {
                            out.clear();
                            return false;
                        }
                        out.push(m.clone());
                    }
                    _ => {}
                }
            }
            true
        }
        let mut out = Vec::new();
        let mut wild = false;
        collect(&self.args, &mut out, &mut wild);
        (out, wild)
    }

    /// expunge_search_args_check (doveadm-mail-expunge.c): every OR branch must name a
    /// mailbox, and the query must contain something besides mailboxes.
    pub fn expunge_check(&self, cmd: &str) -> Result<(), String> {
        fn is_mb(k: &Key) -> bool {
            matches!(
                k,
                Key::Mailbox(_) | Key::MailboxGuid(_) | Key::MailboxGlob(_)
            )
        }
        fn mailbox_or_ok(args: &[Arg]) -> bool {
            for a in args {
                match &a.key {
                    Key::Or(sub) => {
                        if !mailbox_or_ok(sub) {
                            return false;
                        }
                    }
                    Key::Sub(sub) => {
                        if !mailbox_ok(sub) {
                            return false;
                        }
                    }
                    k if is_mb(k) => {}
                    _ => return false,
                }
            }
            true
        }
        fn mailbox_ok(args: &[Arg]) -> bool {
            let mut have_or = false;
            for a in args {
                match &a.key {
                    k if is_mb(k) => return true,
                    Key::Or(_) => have_or = true,
                    Key::Sub(sub) if mailbox_ok(sub) => return true,
                    _ => {}
                }
            }
            if !have_or {
                return false;
            }
            args.iter().all(|a| match &a.key {
                Key::Or(sub) => mailbox_or_ok(sub),
                _ => true,
            })
        }
        fn msgset_or_ok(args: &[Arg]) -> bool {
            for a in args {
                match &a.key {
                    k if is_mb(k) => return false,
                    Key::Or(sub) if !msgset_or_ok(sub) => return false,
                    Key::Sub(sub) if !msgset_ok(sub) => return false,
                    _ => {}
                }
            }
            true
        }
        fn msgset_ok(args: &[Arg]) -> bool {
            for a in args {
                match &a.key {
                    k if is_mb(k) => {}
                    Key::Or(sub) => {
                        if msgset_or_ok(sub) {
                            return true;
                        }
                    }
                    Key::Sub(sub) => {
                        if msgset_ok(sub) {
                            return true;
                        }
                    }
                    _ => return true,
                }
            }
            false
        }
        if !mailbox_ok(&self.args) {
            return Err(format!(
                "{cmd}: To avoid accidents, search query must contain MAILBOX in all search branches"
            ));
        }
        if !msgset_ok(&self.args) {
            return Err(format!(
                "{cmd}: To avoid accidents, each branch in search query must contain something else besides MAILBOX (e.g. just add \"all\" if you want everything)"
            ));
        }
        Ok(())
    }

    /// Whether a mailbox can hold matches, judging only the mailbox keys: `Some(false)`
    /// when it can't, `None` when messages decide (mail_search_args_match_mailbox).
    pub fn match_mailbox(&self, name: &str, guid: Option<MailboxGuid>, sep: char) -> Option<bool> {
        and3(self.args.iter().map(|a| mailbox_only(a, name, guid, sep)))
    }

    /// True when some key needs the message's header or body.
    pub fn needs_content(&self) -> bool {
        self.args.iter().any(arg_needs_content)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn and3(it: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut all_true = true;
    for v in it {
        match v {
            Some(false) => return Some(false),
            None => all_true = false,
            Some(true) => {}
        }
    }
    if all_true {
        Some(true)
    } else {
        None
    }
}

fn or3(it: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut all_false = true;
    for v in it {
        match v {
            Some(true) => return Some(true),
            None => all_false = false,
            Some(false) => {}
        }
    }
    if all_false {
        Some(false)
    } else {
        None
    }
}

/// Compares a MAILBOX key's name with a mailbox name: exact, INBOX case-insensitive.
pub fn mailbox_name_matches(pattern: &str, name: &str, sep: char) -> bool {
    mailstore::names::normalize_inbox(pattern, sep) == mailstore::names::normalize_inbox(name, sep)
}

fn mailbox_only(a: &Arg, name: &str, guid: Option<MailboxGuid>, sep: char) -> Option<bool> {
    let v = match &a.key {
        Key::Sub(sub) => and3(sub.iter().map(|s| mailbox_only(s, name, guid, sep))),
        Key::Or(sub) => or3(sub.iter().map(|s| mailbox_only(s, name, guid, sep))),
        Key::Mailbox(m) => Some(mailbox_name_matches(m, name, sep)),
        Key::MailboxGlob(m) => Some(mailstore::names::mask_matches(m, name, sep)),
        Key::MailboxGuid(g) => guid.map(|guid| guid.to_string().eq_ignore_ascii_case(g)),
        _ => None,
    };
    if a.not {
        v.map(|b| !b)
    } else {
        v
    }
}

fn arg_needs_content(a: &Arg) -> bool {
    match &a.key {
        Key::Sub(s) | Key::Or(s) => s.iter().any(arg_needs_content),
        Key::Header { .. } | Key::Body(_) | Key::Text(_) => true,
        Key::Date {
            kind: DateKind::Sent,
            ..
        } => true,
        _ => false,
    }
}

/// What the evaluator needs from one message. Content accessors load lazily.
pub trait MailView {
    fn record(&self) -> &MailRecord;
    fn seq(&self) -> u32;
    /// The mailbox's message count (what `*` means in a sequence set).
    fn last_seq(&self) -> u32;
    fn mailbox_name(&self) -> &str;
    fn separator(&self) -> char;
    fn mailbox_guid(&mut self) -> mailstore::Result<MailboxGuid>;
    fn virtual_size(&mut self) -> mailstore::Result<u64>;
    /// All values of a header (raw, folded).
    fn header(&mut self, name: &str) -> mailstore::Result<Vec<Vec<u8>>>;
    /// Sent date from the Date: header: (UNIX time, zone minutes); (0, 0) when missing.
    fn sent_date(&mut self) -> mailstore::Result<(i64, i32)>;
    /// Searches decoded message text (body only, or headers too).
    fn text_contains(&mut self, needle: &str, with_headers: bool) -> mailstore::Result<bool>;
}

impl Query {
    /// Does the message match? Cheap keys (flags, UIDs, sizes, dates) are evaluated before
    /// those needing the message contents, so contents are read only when still needed.
    pub fn matches(&self, m: &mut dyn MailView) -> mailstore::Result<bool> {
        eval_and(&self.args, m)
    }
}

fn eval_and(args: &[Arg], m: &mut dyn MailView) -> mailstore::Result<bool> {
    for a in args.iter().filter(|a| !arg_needs_content(a)) {
        if !eval(a, m)? {
            return Ok(false);
        }
    }
    for a in args.iter().filter(|a| arg_needs_content(a)) {
        if !eval(a, m)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn eval_or(args: &[Arg], m: &mut dyn MailView) -> mailstore::Result<bool> {
    for a in args.iter().filter(|a| !arg_needs_content(a)) {
        if eval(a, m)? {
            return Ok(true);
        }
    }
    for a in args.iter().filter(|a| arg_needs_content(a)) {
        if eval(a, m)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn eval(a: &Arg, m: &mut dyn MailView) -> mailstore::Result<bool> {
    let v = match &a.key {
        Key::All => true,
        Key::Sub(sub) => eval_and(sub, m)?,
        Key::Or(sub) => eval_or(sub, m)?,
        Key::SeqSet(set) => set.contains(m.seq(), m.last_seq()),
        // `*` in a UID set stays (uint32_t)-1, so `uid *` matches nothing (observed).
        Key::UidSet(set) => set.contains(m.record().uid.0, u32::MAX),
        Key::Flags(f) => m.record().flags.contains(*f),
        Key::Keyword(k) => m
            .record()
            .keywords
            .iter()
            .any(|kw| kw.as_bytes().eq_ignore_ascii_case(k.as_bytes())),
        Key::Date { op, kind, date } => {
            let (mut t, tz) = match kind {
                DateKind::Received => (m.record().received_date, None),
                DateKind::Saved => (m.record().saved_date, None),
                DateKind::Sent => {
                    let (t, tz) = m.sent_date()?;
                    (t, Some(tz))
                }
            };
            if !date.utc {
                // index-search.c: compare the wall clock (the header's zone for sent
                // dates, the local zone otherwise) with the local-midnight search date.
                let offset = match tz {
                    Some(tz) => tz as i64 * 60,
                    None => dates::local_offset(t),
                };
                t += offset;
            }
            match op {
                DateOp::Before => t < date.time,
                DateOp::On => t >= date.time && t < date.time + 86400,
                DateOp::Since => t >= date.time,
            }
        }
        Key::SaveDateSupported => true,
        Key::Larger(n) => m.virtual_size()? > *n,
        Key::Smaller(n) => m.virtual_size()? < *n,
        Key::Header { name, kind, value } => {
            let needle = super::mime::fold_case(value);
            let values = m.header(name)?;
            if values.is_empty() {
                // A missing header never matches, even an empty value
                // (index-search.c: search_header_arg on no such header).
                false
            } else if needle.is_empty() {
                true
            } else {
                values.iter().any(|v| {
                    let mut decoded = super::mime::decoded_header(v);
                    if *kind == HeaderKind::CompressLwsp {
                        decoded = compress_lwsp(&decoded);
                    }
                    super::mime::fold_case(&decoded).contains(&needle)
                })
            }
        }
        Key::Body(s) => m.text_contains(s, false)?,
        Key::Text(s) => m.text_contains(s, true)?,
        Key::Mailbox(name) => mailbox_name_matches(name, m.mailbox_name(), m.separator()),
        Key::MailboxGlob(mask) => {
            mailstore::names::mask_matches(mask, m.mailbox_name(), m.separator())
        }
        Key::MailboxGuid(g) => m.mailbox_guid()?.to_string().eq_ignore_ascii_case(g),
        Key::Guid(g) => m.record().guid.as_bytes() == g.as_bytes(),
        Key::Modseq(n) => m.record().modseq.0 >= *n,
    };
    Ok(v != a.not)
}

/// Collapses runs of spaces/tabs to one space (SEARCH_HEADER_COMPRESS_LWSP).
fn compress_lwsp(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_ws = false;
    for c in s.chars() {
        if c == ' ' || c == '\t' {
            if !prev_ws {
                out.push(' ');
            }
            prev_ws = true;
        } else {
            out.push(c);
            prev_ws = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailstore::{Guid, Keyword, ModSeq, Uid};

    fn q(s: &str) -> Result<Query, String> {
        let argv: Vec<String> = s.split(' ').map(String::from).collect();
        Query::parse_at(&argv, 1_000_000)
    }

    fn a(key: Key) -> Arg {
        Arg::new(key)
    }

    #[test]
    fn implicit_and_and_infix_or() {
        assert_eq!(
            q("seen flagged").unwrap().args,
            vec![
                Builder::flag(Flags::SEEN, false),
                Builder::flag(Flags::FLAGGED, false)
            ]
        );
        assert_eq!(
            q("uid 1 or uid 2 or uid 3").unwrap().args,
            vec![a(Key::Or(vec![
                a(Key::UidSet(SeqSet(vec![(1, 1)]))),
                a(Key::UidSet(SeqSet(vec![(2, 2)]))),
                a(Key::UidSet(SeqSet(vec![(3, 3)]))),
            ]))]
        );
    }

    #[test]
    fn mixing_and_or_needs_parentheses_but_leading_ands_become_or() {
        assert_eq!(
            q("seen or answered flagged").unwrap_err(),
            "Use parenthesis when mixing ANDs and ORs"
        );
        // Dovecot quirk: keys before the first OR join the OR list.
        assert_eq!(
            q("seen flagged or answered").unwrap().args,
            vec![a(Key::Or(vec![
                Builder::flag(Flags::SEEN, false),
                Builder::flag(Flags::FLAGGED, false),
                Builder::flag(Flags::ANSWERED, false),
            ]))]
        );
        let parsed = q("( uid 1 or uid 2 ) seen").unwrap();
        assert_eq!(parsed.args.len(), 2);
        assert!(matches!(parsed.args[0].key, Key::Or(_)));
    }

    #[test]
    fn not_and_parentheses() {
        let parsed = q("not ( uid 1 or uid 2 )").unwrap();
        assert_eq!(parsed.args.len(), 1);
        assert!(parsed.args[0].not);
        assert!(matches!(parsed.args[0].key, Key::Or(_)));
        assert_eq!(q("( seen").unwrap_err(), "Missing ')'");
        assert_eq!(q("seen )").unwrap_err(), "Unexpected ')'");
        assert_eq!(q("( )").unwrap_err(), "No search parameters inside list");
        assert_eq!(q("not").unwrap_err(), "Missing argument");
        assert_eq!(q("(seen").unwrap_err(), "Unknown argument (SEEN");
        // double negation
        assert!(!q("not not seen").unwrap().args[0].not);
    }

    #[test]
    fn flag_keys_and_negations() {
        for (k, f, not) in [
            ("answered", Flags::ANSWERED, false),
            ("unanswered", Flags::ANSWERED, true),
            ("deleted", Flags::DELETED, false),
            ("undeleted", Flags::DELETED, true),
            ("draft", Flags::DRAFT, false),
            ("undraft", Flags::DRAFT, true),
            ("flagged", Flags::FLAGGED, false),
            ("unflagged", Flags::FLAGGED, true),
            ("SEEN", Flags::SEEN, false),
            ("unseen", Flags::SEEN, true),
            ("recent", Flags::RECENT, false),
            ("old", Flags::RECENT, true),
        ] {
            assert_eq!(q(k).unwrap().args, vec![Builder::flag(f, not)], "{k}");
        }
        assert_eq!(
            q("new").unwrap().args,
            vec![a(Key::Sub(vec![
                Builder::flag(Flags::RECENT, false),
                Builder::flag(Flags::SEEN, true)
            ]))]
        );
        assert_eq!(
            q("unkeyword $x").unwrap().args,
            vec![Arg {
                key: Key::Keyword("$x".into()),
                not: true
            }]
        );
    }

    #[test]
    fn sets_and_errors() {
        assert_eq!(
            q("1,3:4").unwrap().args,
            vec![a(Key::SeqSet(SeqSet(vec![(1, 1), (3, 4)])))]
        );
        assert_eq!(
            q("*").unwrap().args,
            vec![a(Key::SeqSet(SeqSet(vec![(u32::MAX, u32::MAX)])))]
        );
        assert_eq!(q("uid 0").unwrap_err(), "Invalid UID messageset");
        assert_eq!(q("0").unwrap_err(), "Invalid messageset");
        assert_eq!(q("1:").unwrap_err(), "Invalid messageset");
        assert_eq!(q("bogus").unwrap_err(), "Unknown argument BOGUS");
        assert_eq!(q("seen or answered").unwrap().args.len(), 1);
        assert_eq!(
            Query::parse_at(&["seen or answered".to_string()], 0).unwrap_err(),
            "Unknown argument SEEN OR ANSWERED"
        );
    }

    #[test]
    fn missing_parameters_name_the_key() {
        assert_eq!(
            q("larger").unwrap_err(),
            "Missing parameter for search key (for search key: LARGER)"
        );
        assert_eq!(
            q("header subject").unwrap_err(),
            "Missing parameter for search key (for search key: HEADER)"
        );
        for k in [
            "uid",
            "keyword",
            "since",
            "from",
            "body",
            "text",
            "mailbox",
            "mailbox-guid",
            "guid",
        ] {
            assert!(q(k).unwrap_err().starts_with("Missing parameter"), "{k}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("200"), Ok(200));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("1kb"), Ok(1024));
        assert_eq!(parse_size("2 MiB"), Ok(2 << 20));
        assert_eq!(parse_size("3g"), Ok(3 << 30));
        assert_eq!(parse_size("1x"), Err("Invalid size: 1x".into()));
        assert_eq!(parse_size("x"), Err("Invalid size: x".into()));
        assert_eq!(q("larger 1x").unwrap_err(), "Invalid size: 1x");
    }

    #[test]
    fn dates_parse_and_reject() {
        assert!(matches!(
            q("since 1d").unwrap().args[0].key,
            Key::Date {
                op: DateOp::Since,
                kind: DateKind::Received,
                date: SearchDate {
                    time: 913600,
                    utc: true
                }
            }
        ));
        for k in [
            "before",
            "on",
            "since",
            "sentbefore",
            "senton",
            "sentsince",
            "savedbefore",
            "savedon",
            "savedsince",
            "x-savedsince",
        ] {
            assert!(q(&format!("{k} 2024-03-05")).is_ok(), "{k}");
        }
        assert_eq!(
            q("since yesterday").unwrap_err(),
            "Invalid search date parameter: yesterday"
        );
    }

    #[test]
    fn header_keys() {
        assert_eq!(
            q("header X-Foo bar").unwrap().args,
            vec![a(Key::Header {
                name: "X-FOO".into(),
                kind: HeaderKind::Plain,
                value: "bar".into()
            })]
        );
        for (k, kind) in [
            ("from", HeaderKind::Address),
            ("to", HeaderKind::Address),
            ("cc", HeaderKind::Address),
            ("bcc", HeaderKind::Address),
            ("subject", HeaderKind::CompressLwsp),
        ] {
            assert_eq!(
                q(&format!("{k} v")).unwrap().args,
                vec![a(Key::Header {
                    name: k.to_ascii_uppercase(),
                    kind,
                    value: "v".into()
                })]
            );
        }
    }

    #[test]
    fn mailbox_keys_and_patterns() {
        let p = q("mailbox INBOX seen").unwrap();
        assert_eq!(p.mailbox_patterns(), (vec!["INBOX".to_string()], false));
        let p = q("mailbox Foo* all").unwrap();
        assert_eq!(p.mailbox_patterns(), (vec!["Foo*".to_string()], true));
        let p = q("mailbox A or mailbox B").unwrap();
        assert_eq!(p.mailbox_patterns(), (vec![], false));
        let p = q("mailbox A not mailbox B").unwrap();
        assert_eq!(p.mailbox_patterns().0, Vec::<String>::new());
        assert_eq!(p.match_mailbox("A", None, '/'), Some(true));
        assert_eq!(p.match_mailbox("B", None, '/'), Some(false));
        let p = q("mailbox inbox uid 1").unwrap();
        assert_eq!(p.match_mailbox("INBOX", None, '/'), None);
        assert_eq!(p.match_mailbox("Other", None, '/'), Some(false));
    }

    #[test]
    fn expunge_requires_mailbox_in_every_branch() {
        assert!(q("mailbox INBOX all")
            .unwrap()
            .expunge_check("expunge")
            .is_ok());
        assert!(q("( mailbox A uid 1 ) or ( mailbox B uid 2 )")
            .unwrap()
            .expunge_check("expunge")
            .is_ok());
        assert_eq!(
            q("all").unwrap().expunge_check("expunge").unwrap_err(),
            "expunge: To avoid accidents, search query must contain MAILBOX in all search branches"
        );
        assert!(q("( mailbox A uid 1 ) or uid 2")
            .unwrap()
            .expunge_check("expunge")
            .is_err());
        assert!(q("mailbox INBOX")
            .unwrap()
            .expunge_check("expunge")
            .unwrap_err()
            .contains("something else besides MAILBOX"));
    }

    struct Fake {
        rec: MailRecord,
        seq: u32,
        last: u32,
        headers: Vec<(String, Vec<u8>)>,
        body: String,
        content_reads: u32,
    }

    impl MailView for Fake {
        fn record(&self) -> &MailRecord {
            &self.rec
        }
        fn seq(&self) -> u32 {
            self.seq
        }
        fn last_seq(&self) -> u32 {
            self.last
        }
        fn mailbox_name(&self) -> &str {
            "INBOX"
        }
        fn separator(&self) -> char {
            '/'
        }
        fn mailbox_guid(&mut self) -> mailstore::Result<MailboxGuid> {
            Ok(MailboxGuid([0x11; 16]))
        }
        fn virtual_size(&mut self) -> mailstore::Result<u64> {
            Ok(self.rec.physical_size + 5)
        }
        fn header(&mut self, name: &str) -> mailstore::Result<Vec<Vec<u8>>> {
            self.content_reads += 1;
            Ok(self
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .collect())
        }
        fn sent_date(&mut self) -> mailstore::Result<(i64, i32)> {
            Ok((1709630430, 60))
        }
        fn text_contains(&mut self, needle: &str, _h: bool) -> mailstore::Result<bool> {
            self.content_reads += 1;
            Ok(self.body.to_lowercase().contains(&needle.to_lowercase()))
        }
    }

    fn fake() -> Fake {
        Fake {
            rec: MailRecord {
                uid: Uid(3),
                guid: Guid::from_bytes(b"g3"),
                flags: Flags::SEEN | Flags::RECENT,
                keywords: vec![Keyword::from("$Label1")],
                modseq: ModSeq(7),
                received_date: 1709630430,
                saved_date: 1709630500,
                physical_size: 195,
                virtual_size: None,
            },
            seq: 2,
            last: 4,
            headers: vec![
                ("Subject".into(), b"hello\n world   folded".to_vec()),
                ("From".into(), b"=?UTF-8?Q?J=C3=B6rg?= <j@x>".to_vec()),
            ],
            body: "Line one é".into(),
            content_reads: 0,
        }
    }

    fn m(s: &str) -> bool {
        let mut f = fake();
        q(s).unwrap().matches(&mut f).unwrap()
    }

    #[test]
    fn evaluates_every_key() {
        assert!(m("all"));
        assert!(m("seen") && !m("unseen") && m("recent") && !m("old") && !m("new"));
        assert!(!m("flagged") && m("unflagged") && !m("answered") && !m("deleted") && !m("draft"));
        assert!(m("keyword $label1") && !m("keyword other") && m("unkeyword other"));
        assert!(m("uid 3") && m("uid 1:3") && m("uid 3:*") && !m("uid *") && !m("uid 4:9"));
        assert!(m("2") && m("1:2") && !m("*") && m("2:*") && !m("3"));
        assert!(m("larger 199") && !m("larger 200") && m("smaller 201") && !m("smaller 200"));
        assert!(m("since 1709630430") && !m("before 1709630430") && m("before 1709630431"));
        assert!(m("savedsince 1709630500") && !m("savedbefore 1709630500"));
        assert!(m("sentsince 1709630430") && !m("sentbefore 1709630430"));
        assert!(m("senton 5-Mar-2024") && !m("senton 6-Mar-2024"));
        assert!(m("subject world") && !m("subject \"world"));
        assert!(m("subject FOLDED") && !m("subject nothere"));
        assert!(m("from jörg") && m("from j@x") && !m("to j@x"));
        assert!(m("header subject hello") && !m("header x-none a"));
        assert!(m("body é") && m("text line") && !m("body nope"));
        assert!(m("mailbox inbox") && m("mailbox IN*") && !m("mailbox Other"));
        assert!(m("mailbox-guid 11111111111111111111111111111111"));
        assert!(m("guid g3") && !m("guid g4"));
        assert!(m("modseq 7") && !m("modseq 8"));
        assert!(!m("not seen or flagged"));
        assert!(m("seen ( uid 9 or uid 3 )"));
        assert!(m("not ( uid 1 or uid 2 )"));
    }

    #[test]
    fn cheap_keys_short_circuit_content_reads() {
        let mut f = fake();
        assert!(!q("body line unseen").unwrap().matches(&mut f).unwrap());
        assert_eq!(f.content_reads, 0);
        let mut f = fake();
        assert!(q("body line or seen").unwrap().matches(&mut f).unwrap());
        assert_eq!(f.content_reads, 0);
        let mut f = fake();
        assert!(q("body line seen").unwrap().matches(&mut f).unwrap());
        assert_eq!(f.content_reads, 1);
    }
}
