//! Header fields of an mbox message: which ones Dovecot hides, which feed the header MD5
//! (the mbox message GUID), and the values of Dovecot's metadata headers.

use crate::md5::Md5;

/// Headers Dovecot keeps for itself and never shows as part of a message
/// (mbox-storage.c `mbox_hide_headers`; the same list is dropped from saved input,
/// `mbox_save_drop_headers`).
pub const HIDDEN_HEADERS: [&[u8]; 7] = [
    b"Content-Length",
    b"Status",
    b"X-IMAP",
    b"X-IMAPbase",
    b"X-Keywords",
    b"X-Status",
    b"X-UID",
];

pub fn is_hidden(name: &[u8]) -> bool {
    HIDDEN_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

pub fn is_lwsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_lwsp_lf(b: u8) -> bool {
    is_lwsp(b) || b == b'\n'
}

/// A header line split as message-header-parser.c splits it.
pub enum HeaderLine<'a> {
    /// Starts with a space or tab: continues the previous field; the value is the whole line.
    Continued(&'a [u8]),
    /// `name` (trailing whitespace trimmed), value after `:` and its following whitespace.
    /// A line without `:` is all name.
    Field { name: &'a [u8], value: &'a [u8] },
}

/// Splits one header line's content (without line ending).
pub fn split(content: &[u8]) -> HeaderLine<'_> {
    if content.first().is_some_and(|&b| is_lwsp(b)) {
        return HeaderLine::Continued(content);
    }
    match content.iter().position(|&b| b == b':') {
        Some(colon) => {
            let mut name_end = colon;
            while name_end > 0 && is_lwsp(content[name_end - 1]) {
                name_end -= 1;
            }
            let mut v = colon + 1;
            while v < content.len() && is_lwsp(content[v]) {
                v += 1;
            }
            HeaderLine::Field {
                name: &content[..name_end],
                value: &content[v..],
            }
        }
        None => HeaderLine::Field {
            name: content,
            value: &[],
        },
    }
}

/// The header MD5 Dovecot uses to recognize mbox messages and as their GUID
/// (mbox-md5-apop3d.c, `mbox_md5 = apop3d`): MD5 over the values, in file order, of
/// `Date` and `Message-ID` (only until a `Received` line was seen), `Delivered-To`, all
/// lines of the first `Received`, and `X-Delivery-ID`. Hidden (Dovecot-managed) headers
/// never count.
#[derive(Clone, Default)]
pub struct HeaderMd5 {
    md5: Md5,
    seen_received: bool,
    /// Name of the field the current line belongs to, when it is one that counts.
    current: Option<Md5Field>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Md5Field {
    Date,
    DeliveredTo,
    MessageId,
    Received,
    XDeliveryId,
}

impl HeaderMd5 {
    /// Feeds one header line, in file order.
    pub fn line(&mut self, line: &HeaderLine<'_>) {
        let value = match line {
            HeaderLine::Field { name, value } => {
                self.end_field();
                self.current = [
                    (&b"Date"[..], Md5Field::Date),
                    (b"Delivered-To", Md5Field::DeliveredTo),
                    (b"Message-ID", Md5Field::MessageId),
                    (b"Received", Md5Field::Received),
                    (b"X-Delivery-ID", Md5Field::XDeliveryId),
                ]
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, f)| *f);
                value
            }
            HeaderLine::Continued(v) => v,
        };
        match self.current {
            Some(Md5Field::Date | Md5Field::MessageId | Md5Field::Received)
                if !self.seen_received =>
            {
                self.md5.update(value)
            }
            Some(Md5Field::DeliveredTo | Md5Field::XDeliveryId) => self.md5.update(value),
            _ => {}
        }
    }

    /// A hidden (Dovecot-managed) field line: never hashed, but it ends the previous field.
    pub fn skipped_field(&mut self) {
        self.end_field();
        self.current = None;
    }

    /// Only the first Received field counts: once it ended, Received, Date and Message-ID
    /// are no longer hashed.
    fn end_field(&mut self) {
        if self.current == Some(Md5Field::Received) {
            self.seen_received = true;
        }
    }

    pub fn finish(mut self) -> [u8; 16] {
        self.end_field();
        self.md5.finish()
    }
}

/// `X-IMAPbase: <uidvalidity> <last-uid> [keywords]` (mbox-sync-parse.c parse_x_imap_base).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImapBase {
    pub uid_validity: u32,
    pub last_uid: u32,
    /// Keyword names in index order (only valid atoms are kept).
    pub keywords: Vec<Vec<u8>>,
}

/// Parses an X-IMAPbase (or X-IMAP) value; `None` where Dovecot treats it as broken.
pub fn parse_imap_base(value: &[u8]) -> Option<ImapBase> {
    let mut i = 0;
    let mut uid_validity: u32 = 0;
    while i < value.len() {
        let c = value[i];
        if !c.is_ascii_digit() {
            if c != b' ' {
                return None;
            }
            break;
        }
        uid_validity = uid_validity
            .wrapping_mul(10)
            .wrapping_add((c - b'0') as u32);
        i += 1;
    }
    if uid_validity == 0 {
        return None;
    }
    while i < value.len() && is_lwsp_lf(value[i]) {
        i += 1;
    }
    let mut last_uid: u32 = 0;
    while i < value.len() {
        let c = value[i];
        if !c.is_ascii_digit() {
            if !is_lwsp_lf(c) {
                return None;
            }
            break;
        }
        last_uid = last_uid.wrapping_mul(10).wrapping_add((c - b'0') as u32);
        i += 1;
    }
    let keywords = split_words(&value[i..])
        .into_iter()
        .filter(|k| mailstore::Keyword::is_valid_atom(k))
        .collect();
    Some(ImapBase {
        uid_validity,
        last_uid,
        keywords,
    })
}

/// Whitespace-separated words (space, tab, LF).
pub fn split_words(value: &[u8]) -> Vec<Vec<u8>> {
    value
        .split(|&b| is_lwsp_lf(b))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_vec())
        .collect()
}

/// Parses a decimal number followed only by whitespace (X-UID, Content-Length);
/// `None` if anything else follows. Digits overflow as Dovecot's do (wrapping).
pub fn parse_number(value: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut i = 0;
    while i < value.len() && value[i].is_ascii_digit() {
        v = v.wrapping_mul(10).wrapping_add((value[i] - b'0') as u64);
        i += 1;
    }
    value[i..].iter().all(|&b| is_lwsp_lf(b)).then_some(v)
}
