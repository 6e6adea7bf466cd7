//! Mailbox name rules shared by every backend: validation of virtual names, INBOX
//! normalisation, and the IMAP LIST mask matcher.
//!
//! Validation follows Dovecot 2.3's `mailbox_verify_name()` / `mailbox_verify_create_name()`
//! (src/lib-storage/mail-storage.c) and `mailbox_list_is_valid_fs_name()`
//! (src/lib-storage/mailbox-list.c). Mask matching follows `imap_match()`
//! (src/lib-imap/imap-match.c) with `inboxcase` on.

use crate::error::{Error, Result};

/// Longest mailbox name accepted at creation (MAILBOX_LIST_NAME_MAX_LENGTH = PATH_MAX).
pub const MAX_NAME_LENGTH: usize = 4096;
/// Longest single hierarchy level accepted at creation (MAILBOX_MAX_HIERARCHY_NAME_LENGTH).
pub const MAX_COMPONENT_LENGTH: usize = 255;

/// True when `name` is INBOX in any letter case.
pub fn is_inbox(name: &str) -> bool {
    name.eq_ignore_ascii_case("INBOX")
}

/// Writes INBOX as `INBOX` when it is the first hierarchy level (`inbox` → `INBOX`,
/// `Inbox/sub` → `INBOX/sub`); other names are returned unchanged. Dovecot treats the
/// INBOX prefix case-insensitively and always shows it upper case.
pub fn normalize_inbox(name: &str, separator: char) -> String {
    let first_len = name.find(separator).unwrap_or(name.len());
    if is_inbox(&name[..first_len]) {
        let mut out = String::with_capacity(name.len());
        out.push_str("INBOX");
        out.push_str(&name[first_len..]);
        out
    } else {
        name.to_string()
    }
}

/// Checks a mailbox name for creating a mailbox (or as a rename target).
///
/// Rejects, with `Error::InvalidMailboxName` (kind `Params`):
/// - an empty name;
/// - control characters (< 0x20, as Dovecot's create check) and DEL (0x7f, stricter than
///   Dovecot, which accepts it);
/// - `/` anywhere when the separator isn't `/` ("Name must not have '/' characters");
/// - a leading or trailing separator, or two separators in a row;
/// - a hierarchy level that is `.` or `..`;
/// - a name starting with `~`;
/// - names longer than [`MAX_NAME_LENGTH`] bytes or a level longer than
///   [`MAX_COMPONENT_LENGTH`] bytes.
///
/// INBOX (any case) is always valid.
pub fn validate_mailbox_name(name: &str, separator: char) -> Result<()> {
    validate_structure(name, separator)?;
    if is_inbox(name) {
        return Ok(());
    }
    // mailbox_verify_create_name(): checked after the structural rules, with this exact text.
    if name.chars().any(|c| (c as u32) < 0x20 || c == '\x7f') {
        return Err(Error::Params(
            "Control characters not allowed in new mailbox names".into(),
        ));
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(Error::invalid_name(name, "Mailbox name too long"));
    }
    if name
        .split(separator)
        .any(|level| level.len() > MAX_COMPONENT_LENGTH)
    {
        return Err(Error::invalid_name(
            name,
            "Mailbox name too long (hierarchy level over 255 bytes)",
        ));
    }
    Ok(())
}

/// Checks a name used to refer to a mailbox (open, delete, rename source, subscribe).
///
/// Same as [`validate_mailbox_name`] except that DEL and the length limits are not checked
/// (Dovecot applies those only when creating), so mailboxes made by other software stay
/// reachable. Other control characters are looked up like any name (doveadm answers "doesn't
/// exist" for them); NUL is refused because it can never reach a file system.
pub fn validate_existing_mailbox_name(name: &str, separator: char) -> Result<()> {
    validate_structure(name, separator)?;
    // Dovecot looks such a name up and reports it missing; only NUL, which no file system
    // and no C string can hold, is refused outright.
    if name.contains('\0') {
        return Err(Error::invalid_name(
            name,
            "Control character 0x00 not allowed",
        ));
    }
    Ok(())
}

/// The structural rules, in Dovecot's order so the first failing rule gives the same message
/// (mailbox_verify_name(), then the list's is_valid_name(): observed with doveadm 2.3.19.1 —
/// `../evil` under Maildir++ is "Begins with hierarchy separator", `a/../../x` is "Has
/// adjacent hierarchy separators", `x/` is "Name must not have '/' characters").
fn validate_structure(name: &str, separator: char) -> Result<()> {
    let invalid = |reason: &str| Err(Error::invalid_name(name, reason));
    if name.is_empty() {
        return invalid("Name is empty");
    }
    if is_inbox(name) {
        return Ok(());
    }
    if name.starts_with(separator) {
        return invalid("Begins with hierarchy separator");
    }
    if name.starts_with('~') {
        return invalid("Begins with '~'");
    }
    let mut levels = name.split(separator).peekable();
    while let Some(level) = levels.next() {
        if level.is_empty() {
            return if levels.peek().is_none() {
                invalid("Ends with hierarchy separator")
            } else {
                invalid("Has adjacent hierarchy separators")
            };
        }
        if level == "." {
            return invalid("Contains '.' part");
        }
        if level == ".." {
            return invalid("Contains '..' part");
        }
    }
    if separator != '/' && name.contains('/') {
        return invalid("Name must not have '/' characters");
    }
    Ok(())
}

/// The checks every backend makes before renaming the (normalised, validated) mailbox `old`
/// to `new`: same name or INBOX as target → `MailboxExists`; renaming INBOX or moving a
/// mailbox below itself → `NotPossible` (mail-storage.c mailbox_rename_check_children and
/// the list backends).
pub fn check_rename(old: &str, new: &str, separator: char) -> Result<()> {
    if old == new {
        return Err(Error::MailboxExists(new.to_string()));
    }
    if is_inbox(old) {
        return Err(Error::NotPossible("Renaming INBOX isn't supported.".into()));
    }
    if is_inbox(new) {
        return Err(Error::MailboxExists(new.to_string()));
    }
    if is_below(new, old, separator) {
        return Err(Error::NotPossible(format!(
            "Can't rename mailbox under itself: {old} -> {new}"
        )));
    }
    Ok(())
}

/// The `list_mailboxes` answer of a directory-tree store: INBOX first, then every name in
/// order. `found` maps the mailboxes on disk to whether they are selectable (a directory
/// without mail is `\Noselect`); INBOX always exists and an entry for it in `found` wins;
/// parents of found names that aren't on disk are listed as `\NonExistent` ghosts. GUIDs
/// (from `guid`) only for selectable mailboxes.
pub fn mailbox_listing(
    found: &std::collections::BTreeMap<String, bool>,
    subscribed: &std::collections::HashSet<String>,
    separator: char,
    guid: impl Fn(&str) -> Option<crate::types::MailboxGuid>,
) -> Vec<crate::types::MailboxInfo> {
    use crate::types::{MailboxAttrs, MailboxInfo};
    // name → (directory exists, selectable)
    let mut all: std::collections::BTreeMap<String, (bool, bool)> = Default::default();
    all.insert("INBOX".into(), (true, true));
    for (name, selectable) in found {
        all.insert(name.clone(), (true, *selectable));
    }
    for name in found.keys() {
        for parent in parent_names(name, separator) {
            all.entry(parent.to_string()).or_insert((false, false));
        }
    }
    let mut out: Vec<MailboxInfo> = all
        .iter()
        .map(|(name, &(on_disk, selectable))| {
            // children sort right after their parent's prefix: one range lookup
            let prefix = format!("{name}{separator}");
            let children = all
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&prefix));
            MailboxInfo {
                name: name.clone(),
                guid: if selectable { guid(name) } else { None },
                subscribed: subscribed.contains(name),
                attrs: MailboxAttrs {
                    nonexistent: !on_disk,
                    noselect: on_disk && !selectable,
                    children,
                },
            }
        })
        .collect();
    out.sort_by(|a, b| (a.name != "INBOX", &a.name).cmp(&(b.name != "INBOX", &b.name)));
    out
}

/// The parent names of `name`: `a/b/c` → `a`, `a/b`.
pub fn parent_names(name: &str, separator: char) -> impl Iterator<Item = &str> {
    name.char_indices()
        .filter(move |&(_, c)| c == separator)
        .map(move |(i, _)| &name[..i])
}

/// True when `name` lies below `parent` in the hierarchy (`a/b` is below `a`, `ab` is not).
pub fn is_below(name: &str, parent: &str, separator: char) -> bool {
    name.len() > parent.len()
        && name.starts_with(parent)
        && name[parent.len()..].starts_with(separator)
}

/// Matches a mailbox name against an IMAP LIST mask: `*` matches any characters including
/// the separator, `%` any characters except the separator. A leading INBOX level of the
/// name is compared case-insensitively (imap-match.c `inboxcase`); everything else is
/// case-sensitive.
pub fn mask_matches(mask: &str, name: &str, separator: char) -> bool {
    let pattern: Vec<char> = mask.chars().collect();
    let data: Vec<char> = name.chars().collect();
    // Characters of `data` before this index are an INBOX level: compared ignoring case.
    let inboxcase_end = if data.len() >= 5
        && is_inbox(&data[..5].iter().collect::<String>())
        && (data.len() == 5 || data[5] == separator)
    {
        5
    } else {
        0
    };
    let chars_equal =
        |d: usize, p: char| data[d] == p || (d < inboxcase_end && data[d].eq_ignore_ascii_case(&p));

    // can[j] = pattern[..pi] matches data[..j]; rolled over the pattern.
    let mut can = vec![false; data.len() + 1];
    can[0] = true;
    for &p in &pattern {
        let mut next = vec![false; data.len() + 1];
        match p {
            '*' => {
                let mut any = false;
                for j in 0..=data.len() {
                    any |= can[j];
                    next[j] = any;
                }
            }
            '%' => {
                // Extend from any matched prefix by characters other than the separator.
                let mut run = false;
                for j in 0..=data.len() {
                    if j > 0 && data[j - 1] == separator {
                        run = false;
                    }
                    run |= can[j];
                    next[j] = run;
                }
            }
            _ => {
                for j in 1..=data.len() {
                    next[j] = can[j - 1] && chars_equal(j - 1, p);
                }
            }
        }
        can = next;
    }
    can[data.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn reason(name: &str, sep: char) -> String {
        match validate_mailbox_name(name, sep) {
            Err(Error::InvalidMailboxName { reason, .. }) => reason,
            other => panic!("{name:?} with {sep:?}: expected InvalidMailboxName, got {other:?}"),
        }
    }

    #[test]
    fn accepts_ordinary_names() {
        for sep in ['/', '.'] {
            for name in [
                "INBOX",
                "inbox",
                "Sent",
                "a b",
                "Entwürfe",
                "日本語",
                "a&b",
                "a~b",
                "x.",
                "[Gmail]",
            ] {
                if sep == '.' && name == "x." {
                    continue;
                }
                validate_mailbox_name(name, sep).unwrap();
            }
        }
        validate_mailbox_name("a/b/c", '/').unwrap();
        validate_mailbox_name("a.b.c", '.').unwrap();
        validate_mailbox_name("...x", '/').unwrap();
        validate_mailbox_name(".hidden", '/').unwrap();
    }

    #[test]
    fn rejects_empty_and_control_characters() {
        assert_eq!(reason("", '/'), "Name is empty");
        for name in ["a\0b", "a\x01b", "a\tb", "a\x7fb", "a\nb"] {
            let err = validate_mailbox_name(name, '/').unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Params);
            assert_eq!(
                err.to_string(),
                "Control characters not allowed in new mailbox names"
            );
        }
        // Referring to an existing mailbox: NUL is refused, other controls are looked up.
        let err = validate_existing_mailbox_name("a\0b", '/').unwrap_err();
        assert!(err.to_string().contains("Control character 0x00"), "{err}");
        assert!(validate_existing_mailbox_name("a\x7fb", '/').is_ok());
        assert!(validate_existing_mailbox_name("a\tb", '/').is_ok());
        // Structural rules win over control characters, as in Dovecot.
        assert_eq!(reason("/a\tb", '/'), "Begins with hierarchy separator");
    }

    #[test]
    fn rejects_bad_separators() {
        assert_eq!(reason("/a", '/'), "Begins with hierarchy separator");
        assert_eq!(reason("a/", '/'), "Ends with hierarchy separator");
        assert_eq!(reason("a//b", '/'), "Has adjacent hierarchy separators");
        assert_eq!(reason(".a", '.'), "Begins with hierarchy separator");
        assert_eq!(reason("a.", '.'), "Ends with hierarchy separator");
        assert_eq!(reason("a..b", '.'), "Has adjacent hierarchy separators");
        assert_eq!(reason("a/b", '.'), "Name must not have '/' characters");
        assert_eq!(reason("/a", '.'), "Name must not have '/' characters");
    }

    #[test]
    fn rejects_dot_levels_and_tilde() {
        assert_eq!(reason("..", '/'), "Contains '..' part");
        assert_eq!(reason("../x", '/'), "Contains '..' part");
        assert_eq!(reason("a/../b", '/'), "Contains '..' part");
        assert_eq!(reason("a/.", '/'), "Contains '.' part");
        assert_eq!(reason(".", '/'), "Contains '.' part");
        assert_eq!(reason("~user", '/'), "Begins with '~'");
        assert_eq!(reason("~user", '.'), "Begins with '~'");
        // With '.' as separator these are separator errors instead, still rejected.
        validate_mailbox_name("..", '.').unwrap_err();
        validate_mailbox_name("../x", '.').unwrap_err();
    }

    #[test]
    fn length_limits_apply_to_new_names_only() {
        let long_level = "x".repeat(256);
        assert!(reason(&long_level, '/').contains("too long"));
        validate_mailbox_name(&"x".repeat(255), '/').unwrap();
        validate_existing_mailbox_name(&long_level, '/').unwrap();
        let long_name = vec!["y".repeat(200); 25].join("/");
        assert!(reason(&long_name, '/').contains("too long"));
        validate_existing_mailbox_name("a\x7fb", '/').unwrap();
        validate_existing_mailbox_name("a\x01b", '/').unwrap();
    }

    #[test]
    fn rename_checks() {
        assert_eq!(
            check_rename("a", "a", '/').unwrap_err().kind(),
            ErrorKind::Exists
        );
        assert_eq!(
            check_rename("a", "INBOX", '/').unwrap_err().kind(),
            ErrorKind::Exists
        );
        assert_eq!(
            check_rename("INBOX", "b", '/').unwrap_err().kind(),
            ErrorKind::NotPossible
        );
        assert_eq!(
            check_rename("a", "a/b", '/').unwrap_err().kind(),
            ErrorKind::NotPossible
        );
        check_rename("a", "ab", '/').unwrap();
        check_rename("a/b", "a", '/').unwrap();
    }

    #[test]
    fn inbox_normalisation() {
        assert_eq!(normalize_inbox("inbox", '/'), "INBOX");
        assert_eq!(normalize_inbox("InBoX/sub", '/'), "INBOX/sub");
        assert_eq!(normalize_inbox("inbox.sub", '.'), "INBOX.sub");
        assert_eq!(normalize_inbox("inboxes", '/'), "inboxes");
        assert_eq!(normalize_inbox("Other/inbox", '/'), "Other/inbox");
        assert!(is_inbox("iNbOx"));
        assert!(!is_inbox("INBOX/x"));
    }

    #[test]
    fn parents_and_below() {
        assert_eq!(parent_names("a/b/c", '/').collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(parent_names("a", '/').count(), 0);
        assert!(is_below("a/b", "a", '/'));
        assert!(is_below("a/b/c", "a", '/'));
        assert!(!is_below("ab", "a", '/'));
        assert!(!is_below("a", "a", '/'));
    }

    #[test]
    fn mask_star_and_percent() {
        assert!(mask_matches("*", "a/b/c", '/'));
        assert!(mask_matches("%", "a", '/'));
        assert!(!mask_matches("%", "a/b", '/'));
        assert!(mask_matches("a/%", "a/b", '/'));
        assert!(!mask_matches("a/%", "a/b/c", '/'));
        assert!(mask_matches("a/*", "a/b/c", '/'));
        assert!(!mask_matches("a/*", "a", '/'));
        assert!(mask_matches("a*", "a", '/'));
        assert!(mask_matches("a*", "abc/d", '/'));
        assert!(mask_matches("%/%", "a/b", '/'));
        assert!(!mask_matches("%/%", "a", '/'));
        assert!(mask_matches("S%t", "Sent", '/'));
        assert!(!mask_matches("S%t", "Se/nt", '/'));
        assert!(mask_matches("S*t", "Se/nt", '/'));
        assert!(mask_matches("%.%", "a.b", '.'));
        assert!(!mask_matches("%", "a.b", '.'));
        assert!(mask_matches("%", "a/b", '.'));
        assert!(mask_matches("", "", '/'));
        assert!(!mask_matches("", "a", '/'));
        assert!(mask_matches("**%%*", "x/y", '/'));
        assert!(mask_matches("Entw%rfe", "Entwürfe", '/'));
        assert!(mask_matches("日*", "日本語", '/'));
    }

    #[test]
    fn mask_is_case_sensitive_except_inbox() {
        assert!(!mask_matches("sent", "Sent", '/'));
        assert!(mask_matches("inbox", "INBOX", '/'));
        assert!(mask_matches("InBox", "INBOX", '/'));
        assert!(mask_matches("inbox/*", "INBOX/Sub", '/'));
        assert!(!mask_matches("inbox/sub", "INBOX/Sub", '/'));
        assert!(mask_matches("i%", "INBOX", '/'));
        // Only a whole INBOX level is case-insensitive.
        assert!(!mask_matches("inboxes", "INBOXES", '/'));
        assert!(!mask_matches("other/inbox", "other/INBOX", '/'));
    }
}
