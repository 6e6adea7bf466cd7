//! `dovecot-uidlist`: the UID ↔ filename map of one Maildir (src/lib-storage/index/maildir/
//! maildir-uidlist.c in Dovecot 2.3.19.1).
//!
//! ```text
//! v1 header: 1 <uidvalidity> <nextuid>         record: <uid> <filename>
//! v2 header: 2 <uidvalidity> <nextuid>         record: <uid> <flags> <filename>
//! v3 header: 3 [<key><value> ...]              record: <uid> [<KEY><value> ...] :<filename>
//! ```
//! v3 header keys: `V` uidvalidity, `N` next uid, `G` mailbox GUID (32 hex); any other key is
//! kept verbatim. Record keys are `A`-`Z` (`S` psize, `W` vsize, `P` POP3 UIDL (empty: the base
//! filename), `O` POP3 order, `G` message GUID). Only v3 is written. v2 is read (Dovecot 2.3 itself rejects it).
//!
//! Parsing follows maildir_uidlist_read_header / maildir_uidlist_next: what Dovecot calls a
//! "Broken file" is a [`ParseError`] naming the line; what Dovecot merely warns about
//! (lower-case record keys, which it drops; a filename listed twice, where the later line
//! wins) is a [`ParseWarning`].

use std::path::Path;

use mailstore::MailboxGuid;

use crate::filename;

/// Record field: the message GUID (`MAILDIR_UIDLIST_REC_EXT_GUID`, maildir-uidlist.h).
pub const EXT_GUID: u8 = b'G';
/// Record field: the POP3 UIDL (`MAILDIR_UIDLIST_REC_EXT_POP3_UIDL`, maildir-uidlist.h); an
/// empty value means "the base filename" (maildir-mail.c, MAIL_FETCH_UIDL_BACKEND).
pub const EXT_POP3_UIDL: u8 = b'P';
/// Record field: the POP3 order, decimal (`MAILDIR_UIDLIST_REC_EXT_POP3_ORDER`,
/// maildir-uidlist.h).
pub const EXT_POP3_ORDER: u8 = b'O';

/// Whether `uidl` can be a record's `P` value and read back as itself: non-empty (an empty
/// `P` means the base filename) and only printable ASCII without space (fields are
/// space-separated, the line ends at LF). RFC 1939 allows only 0x21-0x7E in a UIDL anyway.
pub fn pop3_uidl_storable(uidl: &[u8]) -> bool {
    !uidl.is_empty() && uidl.iter().all(|&c| (0x21..=0x7e).contains(&c))
}

/// One record: a UID, its extension fields and the base filename (up to the first `:`).
///
/// A mailbox holds one per message, so the fields and the name share one allocation:
/// `data` is each field as its key byte, its value's length (u32 LE) and its value, in file
/// order, followed by the base filename from `base_at` on.
#[derive(Clone, PartialEq, Eq)]
pub struct UidRecord {
    pub uid: u32,
    base_at: u32,
    data: Box<[u8]>,
}

impl std::fmt::Debug for UidRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UidRecord")
            .field("uid", &self.uid)
            .field(
                "ext",
                &self
                    .ext_fields()
                    .map(|(k, v)| (k as char, show(v)))
                    .collect::<Vec<_>>(),
            )
            .field("base", &show(self.base()))
            .finish()
    }
}

/// Bytes before a field's value in [`UidRecord`]'s data: the key and the length.
const FIELD_HEAD: usize = 5;

impl UidRecord {
    pub fn new(uid: u32, base: Vec<u8>) -> UidRecord {
        UidRecord {
            uid,
            base_at: 0,
            data: base.into_boxed_slice(),
        }
    }

    /// A record from its fields, in order, and its base filename.
    fn with_fields<'a>(
        uid: u32,
        fields: impl Iterator<Item = (u8, &'a [u8])> + Clone,
        base: &[u8],
    ) -> UidRecord {
        let len: usize = fields.clone().map(|(_, v)| FIELD_HEAD + v.len()).sum();
        let mut data = Vec::with_capacity(len + base.len());
        for (k, v) in fields {
            data.push(k);
            // a value comes from one line of a file or a GUID / UIDL / number: far below 4 GiB
            data.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
            data.extend_from_slice(&v[..v.len().min(u32::MAX as usize)]);
        }
        let base_at = data.len() as u32;
        data.extend_from_slice(base);
        UidRecord {
            uid,
            base_at,
            data: data.into_boxed_slice(),
        }
    }

    /// The base filename (everything before the first `:` of the real filename).
    pub fn base(&self) -> &[u8] {
        &self.data[self.base_at as usize..]
    }

    /// The `(key, value)` extension fields in file order; keys are `A`-`Z`.
    pub fn ext_fields(&self) -> impl Iterator<Item = (u8, &[u8])> + Clone + '_ {
        let fields = &self.data[..self.base_at as usize];
        let mut at = 0usize;
        std::iter::from_fn(move || {
            let head = fields.get(at..at + FIELD_HEAD)?;
            let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let value = fields.get(at + FIELD_HEAD..at + FIELD_HEAD + len)?;
            at += FIELD_HEAD + len;
            Some((head[0], value))
        })
    }

    /// The value of extension field `key`.
    pub fn ext(&self, key: u8) -> Option<&[u8]> {
        self.ext_fields().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Sets (or with `None` removes) extension field `key`, keeping the others' order.
    pub fn set_ext(&mut self, key: u8, value: Option<Vec<u8>>) {
        let others = self.ext_fields().filter(|(k, _)| *k != key);
        *self = match &value {
            Some(v) => UidRecord::with_fields(
                self.uid,
                others.chain(std::iter::once((key, v.as_slice()))),
                self.base(),
            ),
            None => UidRecord::with_fields(self.uid, others, self.base()),
        };
    }

    /// The message GUID: the `G` field, or else the base filename (maildir-mail.c,
    /// maildir_mail_get_special MAIL_FETCH_GUID).
    pub fn guid(&self) -> &[u8] {
        match self.ext(EXT_GUID) {
            Some(g) if !g.is_empty() => g,
            _ => self.base(),
        }
    }

    /// The kept POP3 UIDL: the `P` field, where an empty value stands for the base filename
    /// (maildir-mail.c, maildir_mail_get_special MAIL_FETCH_UIDL_BACKEND); `None` without
    /// `P`.
    pub fn pop3_uidl(&self) -> Option<&[u8]> {
        match self.ext(EXT_POP3_UIDL) {
            Some([]) => Some(self.base()),
            other => other,
        }
    }

    /// The raw `O` field (the POP3 order as decimal text), if present.
    pub fn pop3_order_field(&self) -> Option<&[u8]> {
        self.ext(EXT_POP3_ORDER)
    }

    /// The kept POP3 order: the `O` field as a strict decimal; `None` when the field is
    /// missing or not a number (see [`Self::pop3_order_field`]). `O0` reads as 0 (none).
    pub fn pop3_order(&self) -> Option<u32> {
        self.pop3_order_field().and_then(parse_u32)
    }

    /// Sets the `P` and `O` fields as maildir-save.c (maildir_save_sync_uidlist) does: `P`
    /// with the UIDL verbatim when there is one, `O` when the order is not 0; a field with
    /// nothing to say is removed. The caller checks the UIDL with [`pop3_uidl_storable`].
    pub fn set_pop3(&mut self, uidl: &[u8], order: u32) {
        self.set_ext(EXT_POP3_UIDL, (!uidl.is_empty()).then(|| uidl.to_vec()));
        self.set_ext(
            EXT_POP3_ORDER,
            (order != 0).then(|| order.to_string().into_bytes()),
        );
    }
}

/// A parsed `dovecot-uidlist`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UidList {
    /// The version the file had (1, 2 or 3); we always write 3.
    pub version: u8,
    pub uid_validity: u32,
    /// The header's `N` as written in the file.
    pub header_next_uid: u32,
    /// The next UID to assign: max(header `N`, last record's UID + 1).
    pub next_uid: u32,
    pub guid: Option<MailboxGuid>,
    /// Header fields other than V, N and G, kept verbatim in file order.
    pub header_ext: Vec<(u8, Vec<u8>)>,
    /// Records ascending by UID, one per base filename.
    pub records: Vec<UidRecord>,
    /// Number of record lines the file had (for Dovecot's compression heuristic).
    pub lines_read: usize,
}

impl UidList {
    /// A new, empty uidlist.
    pub fn new(uid_validity: u32, guid: MailboxGuid) -> UidList {
        UidList {
            version: 3,
            uid_validity,
            header_next_uid: 1,
            next_uid: 1,
            guid: Some(guid),
            header_ext: Vec::new(),
            records: Vec::new(),
            lines_read: 0,
        }
    }

    /// The index of the record for `base`, if listed.
    pub fn find_base(&self, base: &[u8]) -> Option<usize> {
        self.records.iter().position(|r| r.base() == base)
    }

    /// The index of the record with `uid`, if listed.
    pub fn find_uid(&self, uid: u32) -> Option<usize> {
        self.records.binary_search_by_key(&uid, |r| r.uid).ok()
    }
}

/// A line Dovecot would call broken: the whole file is rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Something Dovecot tolerates with a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseWarning {
    pub line: usize,
    pub message: String,
}

fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(80).collect::<String>())
    } else {
        s.into_owned()
    }
}

/// Strict unsigned decimal (Dovecot's str_to_uint): digits only, no sign, no overflow.
fn parse_u32(v: &[u8]) -> Option<u32> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u32 = 0;
    for &d in v {
        n = n.checked_mul(10)?.checked_add((d - b'0') as u32)?;
    }
    Some(n)
}

/// Splits into complete lines. A last line without `\n` is ignored: it is being written by
/// someone else (Dovecot's i_stream_read_next_line does the same). A `\r` before `\n` is
/// dropped.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', data).map(move |end| {
        let line = &data[start..end];
        start = end + 1;
        line.strip_suffix(b"\r").unwrap_or(line)
    })
}

/// Parses a `dovecot-uidlist`. `Ok(None)` for an empty file (Dovecot treats it as missing).
pub fn parse(data: &[u8]) -> Result<Option<(UidList, Vec<ParseWarning>)>, ParseError> {
    let mut lines = lines(data).enumerate().map(|(i, l)| (i + 1, l));
    let Some((_, header)) = lines.next() else {
        return Ok(None);
    };
    let err = |line: usize, reason: String| Err(ParseError { line, reason });
    let mut list = parse_header(header)?;
    let mut warnings = Vec::new();
    // keyed by the names in `data`: no copy of each; sized once (it lives only while the
    // records are read: no second table while it grows)
    let records = memchr::memchr_iter(b'\n', data).count().saturating_sub(1);
    let mut seen: foldhash::HashMap<&[u8], u32> = foldhash::HashMapExt::with_capacity(records);
    // one allocation of the right size, not a doubling one (up to twice the records):
    // `records` counts the complete record lines, the only ones `lines` yields
    list.records.reserve_exact(records);
    let mut prev_uid = 0u32;
    for (lineno, line) in lines {
        list.lines_read += 1;
        let (rec, base) = parse_record(&list, lineno, line, &mut warnings)?;
        let uid = rec.uid;
        if uid <= prev_uid {
            return err(lineno, format!("UIDs not ordered ({uid} >= {prev_uid})"));
        }
        prev_uid = uid;
        if let Some(old_uid) = seen.insert(base, uid) {
            // maildir_uidlist_next: "Duplicate file entry": the later line wins.
            warnings.push(ParseWarning {
                line: lineno,
                message: format!(
                    "Duplicate file entry: {} (uid {old_uid} -> {uid})",
                    show(base)
                ),
            });
            if let Some(old) = list.find_uid(old_uid) {
                list.records.remove(old);
            }
        }
        list.records.push(rec);
    }
    list.next_uid = list.header_next_uid.max(prev_uid.saturating_add(1).max(1));
    Ok(Some((list, warnings)))
}

/// The header of a uidlist (no records; `next_uid` as [`parse`] computes it) and the
/// record of `uid` when the file lists it, reading only the first line and the lines from
/// the end back to `uid`: what the Maildir quick check needs (the mailbox GUID and the
/// last message's GUID) without parsing every record. `Ok(None)` for an empty file. The
/// lines read are checked as [`parse`] checks them; the others are not read at all.
pub fn parse_header_and_record(
    data: &[u8],
    uid: u32,
) -> Result<Option<(UidList, Option<UidRecord>)>, ParseError> {
    let complete = match data.iter().rposition(|&b| b == b'\n') {
        Some(p) => &data[..p],
        None => return Ok(None),
    };
    let (header, records) = match complete.iter().position(|&b| b == b'\n') {
        Some(p) => (&complete[..p], &complete[p + 1..]),
        None => (complete, &complete[..0]),
    };
    let mut list = parse_header(header.strip_suffix(b"\r").unwrap_or(header))?;
    let mut found = None;
    let mut last_uid = None;
    if !records.is_empty() {
        let mut warnings = Vec::new();
        for line in records.rsplit(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            // line numbers are unknown from the end: 0
            let (rec, _) = parse_record(&list, 0, line, &mut warnings)?;
            let rec_uid = rec.uid;
            if last_uid.is_none() {
                last_uid = Some(rec_uid);
            }
            if rec_uid == uid {
                found = Some(rec);
            }
            if rec_uid <= uid {
                break;
            }
        }
    }
    list.next_uid = list
        .header_next_uid
        .max(last_uid.unwrap_or(0).saturating_add(1).max(1));
    Ok(Some((list, found)))
}

/// [`parse_header_and_record`] of the uidlist at `path`, reading its first line and only as
/// much of its end as it needs: a uidlist of 100,000 messages is read in two chunks, not
/// whole. `None` when the file can't be read or parsed (the full sync reports why).
pub fn read_header_and_record(path: &Path, uid: u32) -> Option<(UidList, Option<UidRecord>)> {
    /// Bytes read at each end of a bigger file: the header line and the last records.
    const CHUNK: u64 = 16 * 1024;
    let whole = || {
        let data = std::fs::read(path).ok()?;
        parse_header_and_record(&data, uid).ok().flatten()
    };
    let file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    if len <= 4 * CHUNK {
        return whole();
    }
    let read_at = |offset: u64| {
        let mut buf = vec![0u8; CHUNK as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, offset).ok()?;
        Some(buf)
    };
    let head = read_at(0)?;
    let tail = read_at(len - CHUNK)?;
    let (Some(header_end), Some(first_full)) = (
        head.iter().position(|&b| b == b'\n'),
        tail.iter().position(|&b| b == b'\n'),
    ) else {
        return whole();
    };
    let lines = &tail[first_full + 1..];
    // the record of `uid` may lie before the tail: then it is read whole
    let first_uid = lines
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .try_fold(0u32, |n, &d| {
            n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
        });
    if !lines.first().is_some_and(u8::is_ascii_digit) || first_uid.is_none_or(|first| first > uid) {
        return whole();
    }
    let mut data = head[..=header_end].to_vec();
    data.extend_from_slice(lines);
    parse_header_and_record(&data, uid).ok().flatten()
}

/// The header line (the uidlist without records).
fn parse_header(header: &[u8]) -> Result<UidList, ParseError> {
    let err = |line: usize, reason: String| Err(ParseError { line, reason });
    if header.len() < 2 || !header[0].is_ascii_digit() || header[1] != b' ' {
        return err(1, "Corrupted header (invalid version number)".into());
    }
    let version = header[0] - b'0';
    let rest = &header[2..];
    let mut list = UidList {
        version,
        uid_validity: 0,
        header_next_uid: 0,
        next_uid: 0,
        guid: None,
        header_ext: Vec::new(),
        records: Vec::new(),
        lines_read: 0,
    };
    match version {
        1 | 2 => {
            let mut fields = rest.split(|&b| b == b' ').filter(|f| !f.is_empty());
            let v = fields.next().and_then(parse_u32);
            let n = fields.next().and_then(parse_u32);
            match (v, n) {
                (Some(v), Some(n)) => {
                    list.uid_validity = v;
                    list.header_next_uid = n;
                }
                _ => return err(1, format!("Corrupted header (version {version})")),
            }
        }
        3 => {
            for field in rest.split(|&b| b == b' ').filter(|f| !f.is_empty()) {
                let (key, value) = (field[0], &field[1..]);
                match key {
                    b'V' => match parse_u32(value) {
                        Some(v) => list.uid_validity = v,
                        None => {
                            return err(1, format!("Invalid mailbox UID_VALIDITY: {}", show(value)))
                        }
                    },
                    b'N' => match parse_u32(value) {
                        Some(n) => list.header_next_uid = n,
                        None => {
                            return err(1, format!("Invalid mailbox NEXT_UID: {}", show(value)))
                        }
                    },
                    b'G' => match MailboxGuid::parse_hex(value) {
                        Some(g) => list.guid = Some(g),
                        None => return err(1, format!("Invalid mailbox GUID: {}", show(value))),
                    },
                    _ => list.header_ext.push((key, value.to_vec())),
                }
            }
        }
        _ => return err(1, format!("Unsupported version {version}")),
    }
    if list.uid_validity == 0 || list.header_next_uid == 0 {
        return err(
            1,
            format!(
                "Broken header (uidvalidity = {}, next_uid={})",
                list.uid_validity, list.header_next_uid
            ),
        );
    }
    Ok(list)
}

/// One record line of a uidlist whose header is `list` (line `lineno`, for errors).
/// A record line: the record and its base filename as a slice of `line`.
fn parse_record<'a>(
    list: &UidList,
    lineno: usize,
    line: &'a [u8],
    warnings: &mut Vec<ParseWarning>,
) -> Result<(UidRecord, &'a [u8]), ParseError> {
    let err = |line: usize, reason: String| Err(ParseError { line, reason });
    let version = list.version;
    let digits = line.iter().take_while(|b| b.is_ascii_digit()).count();
    let uid = if digits == 0 {
        0
    } else {
        match parse_u32(&line[..digits]) {
            Some(u) if u < u32::MAX => u,
            _ => return err(lineno, format!("UID too high ({})", show(&line[..digits]))),
        }
    };
    if uid == 0 || line.get(digits) != Some(&b' ') {
        return err(lineno, format!("Invalid data: {}", show(&line[digits..])));
    }
    if version == 1 && uid >= list.header_next_uid {
        return err(
            lineno,
            format!(
                "UID larger than next_uid ({uid} >= {})",
                list.header_next_uid
            ),
        );
    }
    let mut p = digits;
    while p < line.len() && line[p] == b' ' {
        p += 1;
    }
    // where the extension fields are (v3)
    let mut fields: &[u8] = &[];
    match version {
        3 => {
            // Extension fields until one starts with ':' (maildir_uidlist_read_extended).
            let fields_at = p;
            while p < line.len() && line[p] != b':' {
                let start = p;
                while p < line.len() && line[p] != b' ' {
                    p += 1;
                }
                let field = &line[start..p];
                if !field[0].is_ascii_uppercase() {
                    warnings.push(ParseWarning {
                        line: lineno,
                        message: format!("Invalid extension record, removing: {}", show(field)),
                    });
                }
                while p < line.len() && line[p] == b' ' {
                    p += 1;
                }
            }
            fields = &line[fields_at..p];
            if p < line.len() && line[p] == b':' {
                p += 1;
            }
            if p >= line.len() {
                return err(
                    lineno,
                    format!("Invalid extended fields: {}", show(&line[digits..])),
                );
            }
        }
        2 => {
            // v2: a flags field between the UID and the filename.
            while p < line.len() && line[p] != b' ' {
                p += 1;
            }
            while p < line.len() && line[p] == b' ' {
                p += 1;
            }
        }
        _ => {}
    }
    let fname = &line[p..];
    if fname.is_empty() {
        return err(lineno, "Missing filename".into());
    }
    if memchr::memchr2(b'/', 0, fname).is_some() {
        return err(lineno, format!("Broken filename: {}", show(fname)));
    }
    let base = filename::base(fname);
    if base.is_empty() {
        return err(lineno, format!("Broken filename: {}", show(fname)));
    }
    // the upper-case fields, in order (the others were warned about above)
    let kept = fields
        .split(|&b| b == b' ')
        .filter(|f| f.first().is_some_and(u8::is_ascii_uppercase))
        .map(|f| (f[0], &f[1..]));
    Ok((UidRecord::with_fields(uid, kept, base), base))
}

/// Writes one record line to `out`, as maildir_uidlist_write_fd writes it.
pub fn write_record(out: &mut impl std::io::Write, rec: &UidRecord) -> std::io::Result<()> {
    write!(out, "{}", rec.uid)?;
    for (k, v) in rec.ext_fields() {
        out.write_all(&[b' ', k])?;
        out.write_all(v)?;
    }
    out.write_all(b" :")?;
    out.write_all(filename::base(rec.base()))?;
    out.write_all(b"\n")
}

/// Writes the whole file in version 3 to `out`, a record at a time: `3 V<uidvalidity>
/// N<nextuid> G<guid>[ <other>...]` then the records. The caller must have set a GUID.
pub fn write_list(out: &mut impl std::io::Write, list: &UidList) -> std::io::Result<()> {
    write!(
        out,
        "3 V{} N{} G{}",
        list.uid_validity,
        list.next_uid.max(1),
        list.guid.unwrap_or_default()
    )?;
    for (k, v) in &list.header_ext {
        out.write_all(&[b' ', *k])?;
        out.write_all(v)?;
    }
    out.write_all(b"\n")?;
    for rec in &list.records {
        write_record(out, rec)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_line(rec: &UidRecord) -> Vec<u8> {
        let mut out = Vec::new();
        write_record(&mut out, rec).unwrap();
        out
    }

    fn serialize(list: &UidList) -> Vec<u8> {
        let mut out = Vec::new();
        write_list(&mut out, list).unwrap();
        out
    }

    const DOVECOT_V3: &[u8] = b"3 V1795979776 N1 G95dba02cff790c6b533c000083ecc375\n\
1 G84edc1f91e8dc99649d2d27167a582c6 :1795979775.M747593P15443.vm,S=378,W=407\n\
2 :1795979775.M747594P15443.vm,S=564,W=600\n";

    #[test]
    fn reads_dovecot_v3() {
        let (l, w) = parse(DOVECOT_V3).unwrap().unwrap();
        assert!(w.is_empty());
        assert_eq!(l.version, 3);
        assert_eq!(l.uid_validity, 1795979776);
        assert_eq!(l.header_next_uid, 1);
        assert_eq!(l.next_uid, 3, "next uid = max(N, last + 1)");
        assert_eq!(
            l.guid.unwrap().to_string(),
            "95dba02cff790c6b533c000083ecc375"
        );
        assert_eq!(l.records.len(), 2);
        assert_eq!(l.records[0].guid(), b"84edc1f91e8dc99649d2d27167a582c6");
        assert_eq!(
            l.records[1].guid(),
            b"1795979775.M747594P15443.vm,S=564,W=600"
        );
    }

    /// The records are read into one allocation of their number (a large mailbox's list
    /// doesn't hold up to twice its records' room), also when the last line is cut short
    /// (not read: a write in progress).
    #[test]
    fn records_take_the_room_of_their_number() {
        let mut text = b"3 V5 N1 G00112233445566778899aabbccddeeff\n".to_vec();
        for uid in 1..=1000 {
            text.extend_from_slice(format!("{uid} :{uid}.M1P1.host,S=10\n").as_bytes());
        }
        let (l, _) = parse(&text).unwrap().unwrap();
        assert_eq!(l.records.len(), 1000);
        assert!(l.records.capacity() <= 1001, "{}", l.records.capacity());
        text.pop();
        let (l, _) = parse(&text).unwrap().unwrap();
        assert_eq!(l.records.len(), 999);
        assert!(l.records.capacity() <= 1001, "{}", l.records.capacity());
    }

    #[test]
    fn v3_roundtrips_with_unknown_keys() {
        let text = b"3 V5 N9 G00112233445566778899aabbccddeeff Xfoo\n3 S12 Q7 :a.b:2,S\n8 :c\n";
        let (l, _) = parse(text).unwrap().unwrap();
        assert_eq!(l.header_ext, vec![(b'X', b"foo".to_vec())]);
        assert_eq!(l.records[0].ext(b'Q'), Some(&b"7"[..]));
        assert_eq!(l.records[0].base(), b"a.b");
        let out = serialize(&l);
        assert_eq!(
            out,
            b"3 V5 N9 G00112233445566778899aabbccddeeff Xfoo\n3 S12 Q7 :a.b\n8 :c\n"
        );
    }

    #[test]
    fn pop3_fields_as_dovecot_writes_them() {
        let text = b"3 V5 N9 G00112233445566778899aabbccddeeff\n\
1 P O2 G84edc1f91e8dc99649d2d27167a582c6 :1.M1P1.h,S=3,W=4:2,S\n\
2 PUID-7 O1 :2.M1P1.h,S=3,W=4\n3 Ox :3.M1P1.h\n4 :4.M1P1.h\n";
        let (l, w) = parse(text).unwrap().unwrap();
        assert!(w.is_empty());
        let r = &l.records;
        assert_eq!(
            r[0].pop3_uidl(),
            Some(&b"1.M1P1.h,S=3,W=4"[..]),
            "empty P = base"
        );
        assert_eq!(r[0].pop3_order(), Some(2));
        assert_eq!(r[0].guid(), b"84edc1f91e8dc99649d2d27167a582c6");
        assert_eq!(r[1].pop3_uidl(), Some(&b"UID-7"[..]));
        assert_eq!(r[1].pop3_order(), Some(1));
        assert_eq!(r[2].pop3_uidl(), None);
        assert_eq!(r[2].pop3_order(), None, "not a number");
        assert_eq!(r[2].pop3_order_field(), Some(&b"x"[..]));
        assert_eq!((r[3].pop3_uidl(), r[3].pop3_order()), (None, None));
        // Written back as it was (the empty P stays empty); only the `:2,S` goes, as
        // records are written with the base filename.
        let again = String::from_utf8_lossy(text).replace(":2,S", "");
        assert_eq!(String::from_utf8_lossy(&serialize(&l)), again);
    }

    /// A record is a UID, an offset and one allocation holding the fields and the name
    /// (a mailbox keeps one per message); fields keep their order and their bytes, an
    /// empty value included.
    #[test]
    fn a_record_is_one_allocation_and_keeps_its_fields_in_order() {
        assert!(std::mem::size_of::<UidRecord>() <= 24);
        let (l, _) = parse(b"3 V1 N9\n4 S120 P W130 Gab :x.y:2,S\n")
            .unwrap()
            .unwrap();
        let r = &l.records[0];
        let fields: Vec<(u8, &[u8])> = r.ext_fields().collect();
        assert_eq!(
            fields,
            [
                (b'S', &b"120"[..]),
                (b'P', b""),
                (b'W', b"130"),
                (b'G', b"ab")
            ]
        );
        assert_eq!(
            (r.base(), r.guid(), r.pop3_uidl()),
            (&b"x.y"[..], &b"ab"[..], Some(&b"x.y"[..]))
        );
        let mut r = r.clone();
        r.set_ext(b'S', Some(b"121".to_vec()));
        r.set_ext(b'P', None);
        assert_eq!(record_line(&r), b"4 W130 Gab S121 :x.y\n");
        assert_eq!(
            format!("{r:?}"),
            r#"UidRecord { uid: 4, ext: [('W', "130"), ('G', "ab"), ('S', "121")], base: "x.y" }"#
        );
    }

    #[test]
    fn set_pop3_writes_p_and_o_as_maildir_save() {
        let mut rec = UidRecord::new(4, b"a.b".to_vec());
        rec.set_ext(EXT_GUID, Some(b"g1".to_vec()));
        rec.set_pop3(b"UID17-1300000000", 3);
        rec.set_ext(b'X', Some(b"7".to_vec()));
        assert_eq!(record_line(&rec), b"4 Gg1 PUID17-1300000000 O3 X7 :a.b\n");
        rec.set_pop3(b"u", 0);
        assert_eq!(record_line(&rec), b"4 Gg1 X7 Pu :a.b\n");
        rec.set_pop3(b"", 0);
        assert_eq!(record_line(&rec), b"4 Gg1 X7 :a.b\n");
        let (l, _) = parse(b"3 V1 N1\n4 Gg1 PUID17-1300000000 O3 :a.b\n")
            .unwrap()
            .unwrap();
        assert_eq!(l.records[0].pop3_uidl(), Some(&b"UID17-1300000000"[..]));
        assert_eq!(l.records[0].pop3_order(), Some(3));
    }

    #[test]
    fn storable_uidls() {
        assert!(pop3_uidl_storable(b"UID17-1300000000"));
        assert!(pop3_uidl_storable(b"a:b~!"));
        for bad in [
            &b""[..],
            b"a b",
            b"a\tb",
            b"a\nb",
            b"a\rb",
            b"\x7f",
            b"\xc3\xa9",
            b"\0",
        ] {
            assert!(!pop3_uidl_storable(bad), "{bad:?}");
        }
    }

    #[test]
    fn reads_v1_and_v2() {
        let (l, _) = parse(b"1 77 5\n1 a.b.c:2,S\n4 d\n").unwrap().unwrap();
        assert_eq!(l.uid_validity, 77);
        assert_eq!(l.next_uid, 5);
        assert_eq!(l.records[0].base(), b"a.b.c");
        assert!(l.guid.is_none());
        let (l, _) = parse(b"2 77 5\n1 0 a\n3 S b\n").unwrap().unwrap();
        assert_eq!(
            l.records
                .iter()
                .map(|r| r.base().to_vec())
                .collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        let e = parse(b"1 77 5\n5 a\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn broken_files_name_the_line() {
        for (text, line, what) in [
            (&b"x\n"[..], 1, "invalid version"),
            (b"3 V0 N1\n", 1, "Broken header"),
            (b"3 Vx N1\n", 1, "UID_VALIDITY"),
            (b"3 V1 N1 Gzz\n", 1, "GUID"),
            (b"9 V1 N1\n", 1, "Unsupported version"),
            (b"3 V1 N1\n1 :a\nfoo :b\n", 3, "Invalid data"),
            (b"3 V1 N1\n2 :a\n2 :b\n", 3, "not ordered"),
            (b"3 V1 N1\n2 :a\n1 :b\n", 3, "not ordered"),
            (b"3 V1 N1\n1 S5\n", 2, "Invalid extended fields"),
            (b"3 V1 N1\n1 :a/b\n", 2, "Broken filename"),
            (b"3 V1 N1\n99999999999 :a\n", 2, "too high"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{}", String::from_utf8_lossy(text));
            assert!(e.reason.contains(what), "{e}");
        }
    }

    #[test]
    fn tolerated_problems_are_warnings() {
        let (l, w) = parse(b"3 V1 N1\n1 x5 :a\n2 :b\n3 :a\n").unwrap().unwrap();
        assert_eq!(w.len(), 2);
        assert!(w[0].message.contains("Invalid extension"));
        assert!(w[1].message.contains("Duplicate"));
        assert_eq!(l.records.len(), 2);
        assert_eq!(l.find_base(b"a").map(|i| l.records[i].uid), Some(3));
    }

    #[test]
    fn empty_file_and_partial_last_line() {
        assert!(parse(b"").unwrap().is_none());
        assert!(parse(b"3 V1 N1").unwrap().is_none());
        let (l, _) = parse(b"3 V1 N1\n1 :a\n2 :b").unwrap().unwrap();
        assert_eq!(l.records.len(), 1);
        assert_eq!(l.next_uid, 2);
    }
}
