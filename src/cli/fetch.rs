//! `fetch` fields (src/doveadm/doveadm-mail-fetch.c) and the per-message view that both
//! the search evaluator and the field printers read from. Message bytes are read only for
//! fields and keys that need them; `hdr`, `body` and `text` are streamed.

use std::io::{self, Read};

use mailstore::{Flags, MailRecord, Mailbox, MailboxGuid};

use super::format::{Column, PrintError, Printer};
use super::mime::{self, HeaderField};
use super::query::MailView;
use super::{dates, exit, Fatal};

/// A `hdr.NAME.<filter>` filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderFilter {
    Raw,
    Utf8,
    Address,
    AddressName,
    AddressNameUtf8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    User,
    Mailbox,
    MailboxGuid,
    Seq,
    Uid,
    Guid,
    Flags,
    Modseq,
    Hdr,
    Body,
    Text,
    HdrField { name: String, filter: HeaderFilter },
    SizePhysical,
    SizeVirtual,
    DateReceived,
    DateSent,
    DateSaved,
    DateReceivedUnix,
    DateSentUnix,
    DateSavedUnix,
    Pop3Uidl,
    Pop3Order,
    Refcount,
    StorageId,
}

const SIMPLE_FIELDS: &[(&str, Field)] = &[
    ("user", Field::User),
    ("mailbox", Field::Mailbox),
    ("mailbox-guid", Field::MailboxGuid),
    ("seq", Field::Seq),
    ("uid", Field::Uid),
    ("guid", Field::Guid),
    ("flags", Field::Flags),
    ("modseq", Field::Modseq),
    ("hdr", Field::Hdr),
    ("body", Field::Body),
    ("text", Field::Text),
    ("size.physical", Field::SizePhysical),
    ("size.virtual", Field::SizeVirtual),
    ("date.received", Field::DateReceived),
    ("date.sent", Field::DateSent),
    ("date.saved", Field::DateSaved),
    ("date.received.unixtime", Field::DateReceivedUnix),
    ("date.sent.unixtime", Field::DateSentUnix),
    ("date.saved.unixtime", Field::DateSavedUnix),
    ("pop3.uidl", Field::Pop3Uidl),
    ("pop3.order", Field::Pop3Order),
    ("refcount", Field::Refcount),
    ("storageid", Field::StorageId),
];

/// doveadm fields mailsync does not implement (yet); named in the error.
const UNSUPPORTED: &[&str] = &[
    "body.preview",
    "body.snippet",
    "text.utf8",
    "imap.envelope",
    "imap.body",
    "imap.bodystructure",
];

/// The "Available fetch fields" line printed before an unknown-field fatal, listing what
/// mailsync supports (doveadm's list also names fields mailsync lacks).
pub fn available_fields_line() -> String {
    let names: Vec<&str> = SIMPLE_FIELDS.iter().map(|(n, _)| *n).collect();
    format!("Available fetch fields: hdr.<name> {}", names.join(" "))
}

/// Parses the fields argument: space separated, lower-cased (titles are the lower-cased
/// names, duplicates allowed). On an unknown field, returns the fatal after which the
/// caller prints [`available_fields_line`] first.
pub fn parse_fields(spec: &str, user: &str) -> Result<Vec<(String, Field)>, (bool, Fatal)> {
    let mut out = Vec::new();
    for raw in spec.split(' ').filter(|s| !s.is_empty()) {
        let name = raw.to_ascii_lowercase();
        if let Some((_, f)) = SIMPLE_FIELDS.iter().find(|(n, _)| *n == name) {
            out.push((name, f.clone()));
            continue;
        }
        if let Some(rest) = name.strip_prefix("hdr.") {
            let (hdr, filter) = match rest.split_once('.') {
                None => (rest, HeaderFilter::Raw),
                Some((h, f)) => {
                    let filter = match f {
                        "utf8" => HeaderFilter::Utf8,
                        "address" => HeaderFilter::Address,
                        "address_name" => HeaderFilter::AddressName,
                        "address_name.utf8" => HeaderFilter::AddressNameUtf8,
                        _ => {
                            return Err((
                                false,
                                Fatal::for_user(
                                    user,
                                    exit::TEMPFAIL,
                                    format!("Unknown header filter: {f}"),
                                ),
                            ))
                        }
                    };
                    (h, filter)
                }
            };
            out.push((
                name.clone(),
                Field::HdrField {
                    name: hdr.to_string(),
                    filter,
                },
            ));
            continue;
        }
        if UNSUPPORTED.contains(&name.as_str())
            || name.starts_with("body.")
            || name.starts_with("binary.")
        {
            return Err((
                true,
                Fatal::plain(
                    exit::TEMPFAIL,
                    format!("Unsupported fetch field: {name} (not implemented by mailsync)"),
                ),
            ));
        }
        return Err((
            true,
            Fatal::plain(exit::TEMPFAIL, format!("Unknown fetch field: {name}")),
        ));
    }
    Ok(out)
}

/// Columns for the fields, titled by their lower-cased names.
pub fn columns(fields: &[(String, Field)]) -> Vec<Column> {
    fields.iter().map(|(t, _)| Column::new(t.clone())).collect()
}

/// One message of an open mailbox, with lazily loaded parts.
pub struct LiveMail<'a> {
    pub mailbox: &'a mut dyn Mailbox,
    pub record: &'a MailRecord,
    pub seq: u32,
    pub last_seq: u32,
    pub name: &'a str,
    pub separator: char,
    pub guid_cache: &'a mut Option<MailboxGuid>,
    header_fields: Option<Vec<HeaderField>>,
    vsize: Option<u64>,
    sent: Option<(i64, i32)>,
}

impl<'a> LiveMail<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mailbox: &'a mut dyn Mailbox,
        record: &'a MailRecord,
        seq: u32,
        last_seq: u32,
        name: &'a str,
        separator: char,
        guid_cache: &'a mut Option<MailboxGuid>,
    ) -> LiveMail<'a> {
        LiveMail {
            mailbox,
            record,
            seq,
            last_seq,
            name,
            separator,
            guid_cache,
            header_fields: None,
            vsize: None,
            sent: None,
        }
    }

    fn open(&mut self) -> mailstore::Result<Box<dyn Read + Send>> {
        self.mailbox.open_mail(self.record.uid)
    }

    fn read_error(&self, e: io::Error) -> mailstore::Error {
        mailstore::Error::io("read", format!("{} uid {}", self.name, self.record.uid), e)
    }

    fn fields(&mut self) -> mailstore::Result<&[HeaderField]> {
        if self.header_fields.is_none() {
            let mut input = self.open()?;
            let (block, _) = mime::read_header_block(&mut input).map_err(|e| self.read_error(e))?;
            self.header_fields = Some(mime::parse_header_fields(&block));
        }
        Ok(self.header_fields.as_deref().unwrap_or(&[]))
    }
}

impl MailView for LiveMail<'_> {
    fn record(&self) -> &MailRecord {
        self.record
    }
    fn seq(&self) -> u32 {
        self.seq
    }
    fn last_seq(&self) -> u32 {
        self.last_seq
    }
    fn mailbox_name(&self) -> &str {
        self.name
    }
    fn separator(&self) -> char {
        self.separator
    }
    fn mailbox_guid(&mut self) -> mailstore::Result<MailboxGuid> {
        if let Some(g) = *self.guid_cache {
            return Ok(g);
        }
        let g = self.mailbox.status()?.guid;
        *self.guid_cache = Some(g);
        Ok(g)
    }
    fn virtual_size(&mut self) -> mailstore::Result<u64> {
        if let Some(v) = self.vsize.or(self.record.virtual_size) {
            return Ok(v);
        }
        let v = self.mailbox.virtual_size(self.record.uid)?;
        self.vsize = Some(v);
        Ok(v)
    }
    fn header(&mut self, name: &str) -> mailstore::Result<Vec<Vec<u8>>> {
        let fields = self.fields()?;
        Ok(mime::header_values(fields, name)
            .into_iter()
            .map(|v| v.to_vec())
            .collect())
    }
    fn sent_date(&mut self) -> mailstore::Result<(i64, i32)> {
        if let Some(s) = self.sent {
            return Ok(s);
        }
        let values = self.header("Date")?;
        let s = values
            .first()
            .and_then(|v| dates::parse_rfc822_date(&mime::unfold(v)))
            .unwrap_or((0, 0));
        self.sent = Some(s);
        Ok(s)
    }
    fn text_contains(&mut self, needle: &str, with_headers: bool) -> mailstore::Result<bool> {
        let mut input = self.open()?;
        let (block, rest) = mime::read_header_block(&mut input).map_err(|e| self.read_error(e))?;
        mime::search_message_text(&block, rest, &mut input, needle, with_headers)
            .map_err(|e| self.read_error(e))
    }
}

/// IMAP flag list as doveadm prints it: system flags in fixed order, then keywords.
pub fn flags_string(flags: Flags, keywords: &[mailstore::Keyword]) -> Vec<u8> {
    let mut parts: Vec<Vec<u8>> = Flags::ALL_IN_ORDER
        .iter()
        .filter(|(f, _)| flags.contains(*f))
        .map(|(_, n)| n.as_bytes().to_vec())
        .collect();
    parts.extend(keywords.iter().map(|k| k.as_bytes().to_vec()));
    parts.join(&b' ')
}

/// Why printing one field failed.
pub enum FieldError {
    /// Storage or read failure: logged as `fetch(<field>) failed ...`, then continue.
    Storage(mailstore::Error),
    /// Output failure or a formatter fatal: stop.
    Print(PrintError),
}

impl From<mailstore::Error> for FieldError {
    fn from(e: mailstore::Error) -> FieldError {
        FieldError::Storage(e)
    }
}

/// Prints one field of a message.
pub fn print_field(
    p: &mut Printer,
    field: &Field,
    m: &mut LiveMail<'_>,
    user: &str,
    driver: &str,
) -> Result<(), FieldError> {
    let w = |p: &mut Printer, v: &[u8]| {
        p.value(v)
            .map_err(|e| FieldError::Print(PrintError::Write(e)))
    };
    let rec = m.record;
    match field {
        Field::User => w(p, user.as_bytes()),
        Field::Mailbox => w(p, m.name.as_bytes()),
        Field::MailboxGuid => {
            let g = m.mailbox_guid()?;
            w(p, g.to_string().as_bytes())
        }
        Field::Seq => w(p, m.seq.to_string().as_bytes()),
        Field::Uid => w(p, rec.uid.to_string().as_bytes()),
        Field::Guid => w(p, rec.guid.as_bytes()),
        Field::Flags => w(p, &flags_string(rec.flags, &rec.keywords)),
        Field::Modseq => w(p, rec.modseq.to_string().as_bytes()),
        Field::Hdr => {
            let input = m.open()?;
            stream_header(p, input)
        }
        Field::Body => {
            let mut input = m.open()?;
            // Skip the header block, streaming what was read past it first.
            let (_, rest) = match mime::read_header_block(&mut input) {
                Ok(x) => x,
                Err(e) => {
                    return Err(FieldError::Storage(m.read_error(e)));
                }
            };
            let mut chained = io::Cursor::new(rest).chain(input);
            stream_value(p, &mut chained)
        }
        Field::Text => {
            let mut input = m.open()?;
            stream_value(p, &mut input)
        }
        Field::HdrField { name, filter } => {
            let values = m.header(name)?;
            let joined = |vals: Vec<Vec<u8>>| vals.join(&b'\n');
            let value: Vec<u8> = match filter {
                HeaderFilter::Raw => joined(values),
                HeaderFilter::Utf8 => joined(
                    values
                        .iter()
                        .map(|v| mime::decoded_header(v).into_bytes())
                        .collect(),
                ),
                HeaderFilter::Address
                | HeaderFilter::AddressName
                | HeaderFilter::AddressNameUtf8 => {
                    let all = joined(values);
                    let addrs = mime::parse_addresses(&all);
                    let lines: Vec<Vec<u8>> = addrs
                        .iter()
                        .map(|a| match filter {
                            HeaderFilter::Address => {
                                let mut s = a.mailbox.clone().unwrap_or_default();
                                if let Some(d) = &a.domain {
                                    s.push('@');
                                    s.push_str(d);
                                }
                                s.into_bytes()
                            }
                            HeaderFilter::AddressName => {
                                a.name.clone().unwrap_or_default().into_bytes()
                            }
                            _ => a
                                .name
                                .as_deref()
                                .map(|n| mime::decode_rfc2047(n.as_bytes()))
                                .unwrap_or_default()
                                .into_bytes(),
                        })
                        .collect();
                    lines.join(&b'\n')
                }
            };
            w(p, &value)
        }
        Field::SizePhysical => w(p, rec.physical_size.to_string().as_bytes()),
        Field::SizeVirtual => {
            let v = m.virtual_size()?;
            w(p, v.to_string().as_bytes())
        }
        Field::DateReceived => w(p, dates::format_local(rec.received_date).as_bytes()),
        Field::DateSaved => w(p, dates::format_local(rec.saved_date).as_bytes()),
        Field::DateSent => {
            let (t, tz) = m.sent_date()?;
            w(p, dates::format_sent(t, tz).as_bytes())
        }
        Field::DateReceivedUnix => w(p, rec.received_date.to_string().as_bytes()),
        Field::DateSavedUnix => w(p, rec.saved_date.to_string().as_bytes()),
        Field::DateSentUnix => {
            let (t, _) = m.sent_date()?;
            w(p, t.to_string().as_bytes())
        }
        // Empty for a message without one, as doveadm prints it.
        Field::Pop3Uidl => {
            let info = m.mailbox.pop3_info(rec.uid)?;
            w(p, &info.uidl)
        }
        Field::Pop3Order => {
            let info = m.mailbox.pop3_info(rec.uid)?;
            match info.order {
                0 => w(p, b""),
                n => w(p, n.to_string().as_bytes()),
            }
        }
        // One file per message in maildir/dbox; mbox has no refcount (empty).
        Field::Refcount => w(p, if driver == "mbox" { b"" } else { b"1" }),
        // Maildir's storage id is the base filename, which is the GUID unless the
        // uidlist overrides it; other formats print nothing.
        Field::StorageId => w(
            p,
            if driver == "maildir" {
                rec.guid.as_bytes()
            } else {
                b""
            },
        ),
    }
}

fn stream_value(p: &mut Printer, input: &mut dyn Read) -> Result<(), FieldError> {
    match p.stream(input) {
        Ok(()) => Ok(()),
        Err(PrintError::Read(e)) => Err(FieldError::Storage(mailstore::Error::io(
            "read", "message", e,
        ))),
        Err(e) => Err(FieldError::Print(e)),
    }
}

/// Streams the header block (through its blank line) without reading the body.
fn stream_header(p: &mut Printer, input: Box<dyn Read + Send>) -> Result<(), FieldError> {
    let mut limited = HeaderOnly {
        inner: input,
        state: 0,
        done: false,
    };
    stream_value(p, &mut limited)
}

/// A reader that stops after the first empty line (`\n\n` or `\n\r\n`, or a leading
/// empty line).
struct HeaderOnly {
    inner: Box<dyn Read + Send>,
    /// 0 = start of line, 1 = inside a line, 2 = after CR at line start.
    state: u8,
    done: bool,
}

impl Read for HeaderOnly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        for (i, &b) in buf[..n].iter().enumerate() {
            match (self.state, b) {
                (0, b'\n') | (2, b'\n') => {
                    self.done = true;
                    return Ok(i + 1);
                }
                (0, b'\r') => self.state = 2,
                (_, b'\n') => self.state = 0,
                _ => self.state = 1,
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_lowercased_in_order() {
        let f = parse_fields("UID flags HDR.Subject uid hdr.from.address", "u").unwrap();
        let titles: Vec<&str> = f.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            titles,
            ["uid", "flags", "hdr.subject", "uid", "hdr.from.address"]
        );
        assert_eq!(
            f[2].1,
            Field::HdrField {
                name: "subject".into(),
                filter: HeaderFilter::Raw
            }
        );
    }

    #[test]
    fn unknown_fields_and_filters() {
        let Err((list, fatal)) = parse_fields("uid bogus", "u") else {
            panic!()
        };
        assert!(list);
        assert_eq!(fatal.msg, "Unknown fetch field: bogus");
        assert_eq!(fatal.code, 75);
        assert!(fatal.user.is_none());
        let Err((list, fatal)) = parse_fields("hdr.to.bogus", "alice") else {
            panic!()
        };
        assert!(!list);
        assert_eq!(fatal.msg, "Unknown header filter: bogus");
        assert_eq!(fatal.user.as_deref(), Some("alice"));
        assert!(parse_fields("imap.envelope", "u").is_err());
        assert!(
            available_fields_line().starts_with("Available fetch fields: hdr.<name> user mailbox")
        );
    }

    #[test]
    fn flags_in_doveadm_order() {
        let s = flags_string(
            Flags::RECENT | Flags::SEEN | Flags::FLAGGED,
            &[mailstore::Keyword::from("$Label1")],
        );
        assert_eq!(s, b"\\Flagged \\Seen \\Recent $Label1");
        assert_eq!(flags_string(Flags::EMPTY, &[]), b"");
    }

    #[test]
    fn header_only_reader_stops_after_blank_line() {
        for (msg, hdr) in [
            (&b"A: 1\nB: 2\n\nbody\n"[..], &b"A: 1\nB: 2\n\n"[..]),
            (b"A: 1\r\n\r\nbody", b"A: 1\r\n\r\n"),
            (b"\nbody", b"\n"),
            (b"A: 1\n", b"A: 1\n"),
        ] {
            let mut r = HeaderOnly {
                inner: Box::new(io::Cursor::new(msg.to_vec())),
                state: 0,
                done: false,
            };
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, hdr);
        }
    }
}
