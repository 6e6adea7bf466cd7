//! `mailbox list|create|delete|rename|subscribe|unsubscribe|status`
//! (src/doveadm/doveadm-mail-mailbox.c, doveadm-mail-mailbox-status.c).

use mailstore::{names, MailboxGuid, Store};

use super::format::{Column, FormatterKind};
use super::mail::{mailbox_arg, select_mailboxes};
use super::query::Query;
use super::{exit, storage_error_text, Fatal, MailboxCommand, Runtime};

/// Status fields in doveadm's fixed output order.
pub const STATUS_FIELDS: [&str; 9] = [
    "messages",
    "recent",
    "uidnext",
    "uidvalidity",
    "unseen",
    "highestmodseq",
    "vsize",
    "guid",
    "firstsaved",
];
/// What `all` means with `-t`.
const TOTAL_FIELDS: [&str; 4] = ["messages", "recent", "unseen", "vsize"];

/// A parsed mailbox command.
pub enum Plan {
    List {
        mutf7: bool,
        subscribed: bool,
        masks: Vec<String>,
    },
    Create {
        names: Vec<String>,
        subscribe: bool,
        guid: Option<MailboxGuid>,
    },
    Delete {
        names: Vec<String>,
        recursive: bool,
        unsubscribe: bool,
        require_empty: bool,
    },
    Rename {
        old: String,
        new: String,
        subscriptions: bool,
    },
    Subscribe {
        names: Vec<String>,
        subscribe: bool,
    },
    Status {
        total: bool,
        /// Selected fields, in output order.
        fields: Vec<&'static str>,
        masks: Vec<String>,
    },
}

fn names_of(args: &[std::ffi::OsString]) -> Result<Vec<String>, Fatal> {
    args.iter().map(|a| mailbox_arg(a)).collect()
}

/// Parses status fields as status_parse_fields: case-sensitive names, `all`, and the `-t`
/// restriction.
pub fn parse_status_fields(words: &[String], total: bool) -> Result<Vec<&'static str>, Fatal> {
    if words.is_empty() {
        return Err(Fatal::plain(exit::USAGE, "No status fields"));
    }
    let mut selected = [false; 9];
    for w in words {
        if w == "all" {
            let set: &[&str] = if total { &TOTAL_FIELDS } else { &STATUS_FIELDS };
            for f in set {
                selected[STATUS_FIELDS.iter().position(|x| x == f).unwrap()] = true;
            }
        } else if let Some(i) = STATUS_FIELDS.iter().position(|f| f == w) {
            selected[i] = true;
        } else {
            return Err(Fatal::plain(
                exit::USAGE,
                format!("Unknown status field: {w}"),
            ));
        }
        if total
            && STATUS_FIELDS
                .iter()
                .zip(selected)
                .any(|(f, on)| on && !TOTAL_FIELDS.contains(f))
        {
            return Err(Fatal::plain(
                exit::USAGE,
                format!("Status field {w} can't be used with -t"),
            ));
        }
    }
    Ok(STATUS_FIELDS
        .iter()
        .zip(selected)
        .filter(|(_, on)| *on)
        .map(|(f, _)| *f)
        .collect())
}

pub fn plan(cmd: MailboxCommand, rt: &mut Runtime) -> Result<Plan, Fatal> {
    Ok(match cmd {
        MailboxCommand::List {
            mutf7,
            subscribed,
            masks,
            ..
        } => Plan::List {
            mutf7,
            subscribed,
            masks: names_of(&masks)?,
        },
        MailboxCommand::Create {
            subscribe,
            guid,
            names,
            ..
        } => {
            let guid = match guid {
                None => None,
                Some(g) => match MailboxGuid::parse_hex(g.as_bytes()) {
                    Some(g) => Some(g),
                    None => {
                        return Err(Fatal::plain(
                            exit::USAGE,
                            format!("Invalid mailbox GUID: {g} (32 hex digits expected)"),
                        ))
                    }
                },
            };
            Plan::Create {
                names: names_of(&names)?,
                subscribe,
                guid,
            }
        }
        MailboxCommand::Delete {
            recursive,
            unsubscribe,
            require_empty,
            names,
            ..
        } => {
            let mut names = names_of(&names)?;
            // doveadm sorts the names in reverse so children go before parents.
            names.sort_by(|a, b| b.cmp(a));
            Plan::Delete {
                names,
                recursive,
                unsubscribe,
                require_empty,
            }
        }
        MailboxCommand::Rename {
            subscriptions,
            old,
            new,
            ..
        } => Plan::Rename {
            old: mailbox_arg(&old)?,
            new: mailbox_arg(&new)?,
            subscriptions,
        },
        MailboxCommand::Subscribe { names, .. } => Plan::Subscribe {
            names: names_of(&names)?,
            subscribe: true,
        },
        MailboxCommand::Unsubscribe { names, .. } => Plan::Subscribe {
            names: names_of(&names)?,
            subscribe: false,
        },
        MailboxCommand::Status {
            total,
            field_or_formatter,
            args,
            ..
        } => {
            let mut fields_from_opt = Vec::new();
            for f in field_or_formatter {
                // Extension: `-f json` picks a formatter; doveadm's -f is a field.
                match FormatterKind::parse(&f) {
                    Some(k) => rt.formatter = Some(k),
                    None => fields_from_opt.push(f),
                }
            }
            let args = names_of(&args)?;
            let (words, masks): (Vec<String>, Vec<String>) = if fields_from_opt.is_empty() {
                let (first, rest) = args.split_first().expect("clap requires one argument");
                (
                    first
                        .split(' ')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                    rest.to_vec(),
                )
            } else {
                (fields_from_opt, args)
            };
            if masks.is_empty() {
                return Err(Fatal::plain(
                    exit::USAGE,
                    "usage: mailsync mailbox status [-u <user>] [-t] [-f <field>] <fields> <mailbox mask> [...]",
                ));
            }
            Plan::Status {
                total,
                fields: parse_status_fields(&words, total)?,
                masks,
            }
        }
    })
}

fn finish_silent(rt: &mut Runtime) -> Result<(), Fatal> {
    if let Some(mut p) = rt.printer(None, Vec::new()) {
        p.finish()
            .map_err(|e| Fatal::plain(exit::TEMPFAIL, format!("write(stdout) failed: {e}")))?;
    }
    Ok(())
}

pub fn run(rt: &mut Runtime, store: &dyn Store, plan: Plan) -> Result<(), Fatal> {
    match plan {
        Plan::List {
            mutf7,
            subscribed,
            masks,
        } => list(rt, store, mutf7, subscribed, &masks),
        Plan::Create {
            names,
            subscribe,
            guid,
        } => {
            for name in &names {
                let sep = store.hierarchy_separator();
                // A trailing separator asks for a directory-only mailbox; Dovecot strips it.
                let name = name.strip_suffix(sep).unwrap_or(name);
                rt.debug(format!("Creating mailbox {name}"));
                if let Err(e) = store.create_mailbox(name, guid) {
                    rt.storage_failed(format_args!("Can't create mailbox {name}"), &e);
                }
                if subscribe {
                    if let Err(e) = store.set_subscribed(name, true) {
                        rt.storage_failed(format_args!("Can't subscribe to mailbox {name}"), &e);
                    }
                }
            }
            finish_silent(rt)
        }
        Plan::Delete {
            names,
            recursive,
            unsubscribe,
            require_empty,
        } => {
            let names = if recursive {
                with_children(rt, store, &names)
            } else {
                names
            };
            for name in &names {
                if let Err(e) = delete_one(store, name, require_empty) {
                    rt.storage_failed(format_args!("Can't delete mailbox {name}"), &e);
                }
                if unsubscribe {
                    if let Err(e) = store.set_subscribed(name, false) {
                        rt.storage_failed(format_args!("Can't unsubscribe mailbox {name}"), &e);
                    }
                }
            }
            finish_silent(rt)
        }
        Plan::Rename {
            old,
            new,
            subscriptions,
        } => {
            if let Err(e) = store.rename_mailbox(&old, &new) {
                rt.storage_failed(format_args!("Can't rename mailbox {old} to {new}"), &e);
            }
            if subscriptions {
                if let Err(e) = store.set_subscribed(&old, false) {
                    rt.storage_failed(format_args!("Can't unsubscribe mailbox {old}"), &e);
                }
                if let Err(e) = store.set_subscribed(&new, true) {
                    rt.storage_failed(format_args!("Can't subscribe to mailbox {new}"), &e);
                }
            }
            finish_silent(rt)
        }
        Plan::Subscribe { names, subscribe } => {
            for name in &names {
                if let Err(e) = store.set_subscribed(name, subscribe) {
                    // doveadm's format arguments are swapped here ("Can't <name> mailbox
                    // subscribe to: ..."); replicated for identical output.
                    let verb = if subscribe {
                        "subscribe to"
                    } else {
                        "unsubscribe"
                    };
                    rt.storage_failed(format_args!("Can't {name} mailbox {verb}"), &e);
                }
            }
            finish_silent(rt)
        }
        Plan::Status {
            total,
            fields,
            masks,
        } => status(rt, store, total, &fields, &masks),
    }
}

/// `mailbox delete -e`: only an empty mailbox.
fn delete_one(store: &dyn Store, name: &str, require_empty: bool) -> mailstore::Result<()> {
    if require_empty {
        let mut mbox = store.open_mailbox(name)?;
        if mbox.status()?.messages > 0 {
            return Err(mailstore::Error::NotPossible("Mailbox isn't empty".into()));
        }
    }
    store.delete_mailbox(name)
}

/// The names plus all their children, sorted in reverse so children are deleted first
/// (get_child_mailboxes in doveadm-mail-mailbox.c).
fn with_children(rt: &mut Runtime, store: &dyn Store, names: &[String]) -> Vec<String> {
    let sep = store.hierarchy_separator();
    let mut out: Vec<String> = Vec::new();
    match store.list_mailboxes() {
        Ok(list) => {
            for name in names {
                for info in &list {
                    if names::is_below(&info.name, name, sep) && !info.attrs.nonexistent {
                        out.push(info.name.clone());
                    }
                }
                if !name.is_empty() {
                    out.push(name.clone());
                }
            }
        }
        Err(e) => {
            rt.error(format!(
                "Listing mailboxes failed: {}",
                storage_error_text(&e)
            ));
            rt.fail(exit::TEMPFAIL);
            out.extend(names.iter().cloned());
        }
    }
    out.sort_by(|a, b| b.cmp(a));
    out.dedup();
    out
}

fn list(
    rt: &mut Runtime,
    store: &dyn Store,
    mutf7: bool,
    subscribed: bool,
    masks: &[String],
) -> Result<(), Fatal> {
    let mut printer = rt
        .printer(Some(FormatterKind::Flow), vec![Column::hidden("mailbox")])
        .expect("default formatter given");
    let sep = store.hierarchy_separator();
    let query = Query::from_mailbox_masks(masks);
    let (patterns, wild) = query.mailbox_patterns();
    let names: Vec<String> = if !patterns.is_empty() && !wild {
        // One exact name: printed as given, existing or not (doveadm does the same).
        patterns
    } else {
        let listed: mailstore::Result<Vec<String>> = if subscribed {
            store.subscriptions()
        } else {
            store
                .list_mailboxes()
                .map(|l| l.into_iter().map(|i| i.name).collect())
        };
        match listed {
            Ok(all) => all
                .into_iter()
                .filter(|n| query.match_mailbox(n, None, sep) != Some(false))
                .collect(),
            Err(e) => {
                rt.storage_failed(format_args!("Listing mailboxes failed"), &e);
                Vec::new()
            }
        }
    };
    for name in names {
        let shown = if mutf7 {
            mailsupport::mutf7::encode(&name)
        } else {
            name
        };
        printer
            .value(shown)
            .map_err(|e| Fatal::plain(exit::TEMPFAIL, format!("write(stdout) failed: {e}")))?;
    }
    printer
        .finish()
        .map_err(|e| Fatal::plain(exit::TEMPFAIL, format!("write(stdout) failed: {e}")))
}

fn status(
    rt: &mut Runtime,
    store: &dyn Store,
    total: bool,
    fields: &[&'static str],
    masks: &[String],
) -> Result<(), Fatal> {
    let mut columns = Vec::new();
    if !total {
        columns.push(Column::hidden("mailbox"));
    }
    columns.extend(fields.iter().map(|f| Column::new(*f)));
    let mut printer = rt
        .printer(Some(FormatterKind::Flow), columns)
        .expect("default formatter given");
    let werr =
        |e: std::io::Error| Fatal::plain(exit::TEMPFAIL, format!("write(stdout) failed: {e}"));
    let query = Query::from_mailbox_masks(masks);
    let mut sums = (0u64, 0u64, 0u64, 0u64);
    for name in select_mailboxes(rt, store, &query) {
        // the counters need no message read (a Maildir opened by its quick check stays
        // unread); VSIZE and FIRSTSAVED do
        let needs_mails = fields.iter().any(|f| matches!(*f, "vsize" | "firstsaved"));
        let st = store.open_mailbox(&name).and_then(|mut m| {
            if needs_mails {
                m.status()
            } else {
                m.counters()
            }
        });
        let st = match st {
            Ok(s) => s,
            Err(e) => {
                rt.storage_failed(
                    format_args!("Mailbox {name}: Failed to lookup mailbox status"),
                    &e,
                );
                continue;
            }
        };
        if total {
            sums.0 += st.messages as u64;
            sums.1 += st.recent as u64;
            sums.2 += st.unseen as u64;
            sums.3 += st.vsize;
            continue;
        }
        printer.value(&name).map_err(werr)?;
        for f in fields {
            let v = match *f {
                "messages" => st.messages.to_string(),
                "recent" => st.recent.to_string(),
                "uidnext" => st.uid_next.to_string(),
                "uidvalidity" => st.uid_validity.to_string(),
                "unseen" => st.unseen.to_string(),
                "highestmodseq" => st.highest_modseq.to_string(),
                "vsize" => st.vsize.to_string(),
                "guid" => st.guid.to_string(),
                "firstsaved" => match st.first_saved {
                    Some(t) if t > -1 => t.to_string(),
                    _ => "never".to_string(),
                },
                _ => unreachable!("fields are validated"),
            };
            printer.value(v).map_err(werr)?;
        }
    }
    if total {
        for f in fields {
            let v = match *f {
                "messages" => sums.0,
                "recent" => sums.1,
                "unseen" => sums.2,
                "vsize" => sums.3,
                _ => unreachable!("-t fields are validated"),
            };
            printer.value(v.to_string()).map_err(werr)?;
        }
    }
    printer.finish().map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::mail::run_on_store;
    use mailstore::memory::MemoryStore;
    use mailstore::{Flags, NewMail};

    fn run(s: &MemoryStore, args: &[&str]) -> (i32, String, String) {
        let (c, o, e) = run_on_store(s, args, "alice");
        (
            c,
            String::from_utf8(o).unwrap(),
            String::from_utf8(e).unwrap(),
        )
    }

    fn save(s: &MemoryStore, mailbox: &str, msg: &[u8]) {
        let mut m = s.open_mailbox(mailbox).unwrap();
        let mut tx = m.begin().unwrap();
        tx.save(
            NewMail {
                flags: Flags::EMPTY,
                saved_date: Some(1700000000),
                ..NewMail::default()
            },
            &mut &msg[..],
        )
        .unwrap();
        tx.commit().unwrap();
    }

    fn sorted_lines(s: &str) -> Vec<&str> {
        let mut v: Vec<&str> = s.lines().collect();
        v.sort();
        v
    }

    #[test]
    fn status_fields_fixed_order_and_errors() {
        assert_eq!(
            parse_status_fields(&["vsize".into(), "messages".into()], false).unwrap(),
            vec!["messages", "vsize"]
        );
        assert_eq!(
            parse_status_fields(&["all".into()], true).unwrap(),
            TOTAL_FIELDS.to_vec()
        );
        assert_eq!(
            parse_status_fields(&["Messages".into()], false)
                .unwrap_err()
                .msg,
            "Unknown status field: Messages"
        );
        let e = parse_status_fields(&["guid".into()], true).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (64, "Status field guid can't be used with -t")
        );
    }

    #[test]
    fn create_list_rename_delete() {
        let s = MemoryStore::new();
        let (c, o, _) = run(&s, &["mailbox", "create", "A", "B", "B/C", "Entwürfe"]);
        assert_eq!((c, o.as_str()), (0, ""));
        let (c, o, _) = run(&s, &["mailbox", "list"]);
        assert_eq!(c, 0);
        assert_eq!(sorted_lines(&o), vec!["A", "B", "B/C", "Entwürfe", "INBOX"]);
        let (_, o, _) = run(&s, &["mailbox", "list", "-7", "Ent*"]);
        assert_eq!(o, "Entw&APw-rfe\n");
        let (_, o, _) = run(&s, &["mailbox", "list", "%"]);
        assert_eq!(sorted_lines(&o), vec!["A", "B", "Entwürfe", "INBOX"]);
        let (c, _, e) = run(&s, &["mailbox", "create", "INBOX", "D"]);
        assert_eq!(c, 65);
        assert_eq!(
            e,
            "mailsync(alice): Error: Can't create mailbox INBOX: Mailbox already exists\n"
        );
        let (c, _, _) = run(&s, &["mailbox", "rename", "A", "A2"]);
        assert_eq!(c, 0);
        let (c, _, e) = run(&s, &["mailbox", "rename", "Nope", "X"]);
        assert_eq!(c, 68);
        assert_eq!(
            e,
            "mailsync(alice): Error: Can't rename mailbox Nope to X: Mailbox doesn't exist: Nope\n"
        );
        let (c, _, e) = run(&s, &["mailbox", "delete", "A2", "Nope", "D"]);
        assert_eq!(c, 68, "{e}");
        let (_, o, _) = run(&s, &["mailbox", "list"]);
        assert_eq!(sorted_lines(&o), vec!["B", "B/C", "Entwürfe", "INBOX"]);
        let (c, _, _) = run(&s, &["mailbox", "delete", "-r", "B"]);
        assert_eq!(c, 0);
        let (_, o, _) = run(&s, &["mailbox", "list"]);
        assert_eq!(sorted_lines(&o), vec!["Entwürfe", "INBOX"]);
    }

    #[test]
    fn delete_e_refuses_non_empty() {
        let s = MemoryStore::new();
        save(&s, "INBOX", b"x\n\nbody\n");
        s.create_mailbox("E", None).unwrap();
        let (c, _, e) = run(&s, &["mailbox", "delete", "-e", "E"]);
        assert_eq!((c, e.as_str()), (0, ""));
        save(&s, "INBOX", b"y\n\n");
        s.create_mailbox("F", None).unwrap();
        save(&s, "F", b"z\n\n");
        let (c, _, e) = run(&s, &["mailbox", "delete", "-e", "F"]);
        assert_eq!(c, 65);
        assert_eq!(
            e,
            "mailsync(alice): Error: Can't delete mailbox F: Mailbox isn't empty\n"
        );
    }

    #[test]
    fn subscriptions() {
        let s = MemoryStore::new();
        s.create_mailbox("A", None).unwrap();
        let (c, _, _) = run(&s, &["mailbox", "subscribe", "A", "Ghost"]);
        assert_eq!(c, 0);
        let (_, o, _) = run(&s, &["mailbox", "list", "-s"]);
        assert_eq!(sorted_lines(&o), vec!["A", "Ghost"]);
        run(&s, &["mailbox", "unsubscribe", "Ghost"]);
        let (_, o, _) = run(&s, &["mailbox", "list", "-s"]);
        assert_eq!(o, "A\n");
        run(&s, &["mailbox", "rename", "-s", "A", "B"]);
        let (_, o, _) = run(&s, &["mailbox", "list", "-s"]);
        assert_eq!(o, "B\n");
        run(&s, &["mailbox", "create", "-s", "C"]);
        let (_, o, _) = run(&s, &["mailbox", "list", "-s"]);
        assert_eq!(sorted_lines(&o), vec!["B", "C"]);
    }

    #[test]
    fn status_output_and_totals() {
        let s = MemoryStore::new();
        save(&s, "INBOX", b"Subject: a\n\nbody\n");
        save(&s, "INBOX", b"Subject: b\n\n");
        s.create_mailbox("Sub", None).unwrap();
        let (c, o, _) = run(
            &s,
            &["mailbox", "status", "vsize messages firstsaved", "INBOX"],
        );
        assert_eq!(c, 0);
        let vsize = (b"Subject: a\n\nbody\n".len() + 3) + (b"Subject: b\n\n".len() + 2);
        assert_eq!(
            o,
            format!("INBOX messages=2 vsize={vsize} firstsaved=1700000000\n")
        );
        let (_, o, _) = run(
            &s,
            &[
                "mailbox",
                "status",
                "-f",
                "messages",
                "-f",
                "firstsaved",
                "Sub",
            ],
        );
        assert_eq!(o, "Sub messages=0 firstsaved=never\n");
        let (_, o, _) = run(&s, &["mailbox", "status", "-t", "all", "*"]);
        assert_eq!(o, format!("messages=2 recent=2 unseen=2 vsize={vsize}\n"));
        let (_, o, _) = run(
            &s,
            &["mailbox", "status", "-f", "json", "messages", "inbox"],
        );
        assert_eq!(o, "[{\"mailbox\":\"INBOX\",\"messages\":\"2\"}]");
        let (c, o, e) = run(&s, &["mailbox", "status", "messages", "Nope"]);
        assert_eq!((c, o.as_str()), (68, ""));
        assert_eq!(
            e,
            "mailsync(alice): Error: Mailbox Nope: Failed to lookup mailbox status: Mailbox doesn't exist: Nope\n"
        );
        let (c, o, e) = run(&s, &["mailbox", "status", "messages", "Nope*"]);
        assert_eq!((c, o.as_str(), e.as_str()), (0, "", ""));
        let (c, _, e) = run(&s, &["mailbox", "status", "bogus", "INBOX"]);
        assert_eq!(
            (c, e.as_str()),
            (64, "Fatal: Unknown status field: bogus\n")
        );
    }
}
