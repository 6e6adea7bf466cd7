//! `mailsync dump [-t TYPE] PATH`: Dovecot's index, transaction log and mailbox log in
//! `doveadm dump`'s layout (src/doveadm/doveadm-dump.c), printed by
//! `mailsync_index::dump`. Like doveadm's, it needs no user and no mail location.

use std::io::Write;
use std::path::Path;

use mailsync_index::dump::{dump, DumpKind};

use super::{exit, Fatal};

/// The `-t` types this build can dump.
const TYPES: &str = "index log mailboxlog";
/// doveadm's other dump types (dbox, thread, ...), which mailsync doesn't read.
const DOVEADM_ONLY_TYPES: [&str; 6] = [
    "dbox",
    "thread",
    "imapzlib",
    "dcrypt-file",
    "dcrypt-key",
    "multiplex",
];

/// Dumps `path` to `out`; errors as doveadm reports them: an unknown type is a usage error
/// (64), a file of no known type a data error (65), a file that can't be read a temporary
/// failure (75).
pub fn run(kind: Option<&str>, path: &Path, out: &mut dyn Write) -> Result<i32, Fatal> {
    let kind = match kind {
        None => None,
        Some(name) => match DumpKind::from_name(name) {
            Some(k) => Some(k),
            None if DOVEADM_ONLY_TYPES.contains(&name) => {
                return Err(Fatal::plain(
                    exit::USAGE,
                    format!("Dump type {name} is not supported (available: {TYPES})"),
                ))
            }
            None => {
                return Err(Fatal::plain(
                    exit::USAGE,
                    format!("Unknown type: {name} (available dump types: {TYPES})"),
                ))
            }
        },
    };
    match dump(path, kind) {
        Ok(text) => {
            out.write_all(text.as_bytes())
                .map_err(|e| Fatal::plain(exit::TEMPFAIL, format!("write() failed: {e}")))?;
            Ok(exit::OK)
        }
        Err(e) => Err(error(e)),
    }
}

fn error(e: mailsync_index::Error) -> Fatal {
    use mailsync_index::Error as E;
    match e {
        E::Invalid(msg) => Fatal::plain(exit::DATAERR, msg),
        E::Io { op, path, source } => Fatal::plain(
            exit::TEMPFAIL,
            format!(
                "{op}({}) failed: {}",
                path.display(),
                super::mail::io_error_text(&source)
            ),
        ),
        E::LockTimeout { .. } => Fatal::plain(exit::TEMPFAIL, e.to_string()),
        other => Fatal::plain(exit::DATAERR, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_unsupported_types_are_usage_errors() {
        let mut out = Vec::new();
        let e = run(Some("foo"), Path::new("/nonexistent"), &mut out).unwrap_err();
        assert_eq!(e.code, exit::USAGE);
        assert!(e.msg.starts_with("Unknown type: foo"), "{}", e.msg);
        let e = run(Some("dbox"), Path::new("/nonexistent"), &mut out).unwrap_err();
        assert_eq!(e.code, exit::USAGE);
        assert!(out.is_empty());
    }

    #[test]
    fn undetectable_and_unreadable_files_fail_like_doveadm() {
        let d = tempfile::tempdir().unwrap();
        let junk = d.path().join("junk");
        std::fs::write(&junk, b"not an index").unwrap();
        let mut out = Vec::new();
        let e = run(None, &junk, &mut out).unwrap_err();
        assert_eq!(e.code, exit::DATAERR);
        assert_eq!(
            e.msg,
            format!("Can't autodetect file type: {}", junk.display())
        );
        let e = run(Some("log"), &d.path().join("missing"), &mut out).unwrap_err();
        assert_eq!(e.code, exit::TEMPFAIL);
        assert!(e.msg.contains("No such file or directory"), "{}", e.msg);
        assert!(!e.msg.contains("os error"), "{}", e.msg);
    }

    #[test]
    fn a_log_is_dumped_with_its_header_and_records() {
        let d = tempfile::tempdir().unwrap();
        let w = mailsync_index::IndexWriter::open(d.path(), "dovecot.index");
        w.create(1234).unwrap();
        let mut t = w.begin().external(true);
        t.append(1, 0x08);
        t.commit().unwrap();
        let mut out = Vec::new();
        let code = run(None, &d.path().join("dovecot.index.log"), &mut out).unwrap();
        assert_eq!(code, exit::OK);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("Detected file type: log\n"), "{text}");
        assert!(text.contains(" - uid_validity = 1234\n"), "{text}");
        assert!(text.contains("type=append (ext)"), "{text}");
        let mut out = Vec::new();
        run(Some("index"), d.path(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("uid validity ............. = 1234"), "{text}");
        assert!(text.contains("RECORD: seq=1, uid=1, flags=0x08"), "{text}");
    }
}
