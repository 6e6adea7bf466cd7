//! Streaming mbox reader with Dovecot's rules (istream-raw-mbox.c, mbox-sync-parse.c):
//! where messages begin and end, what bytes a message has, and the UIDs, flags and keywords
//! Dovecot's metadata headers give them. Reads line by line; holds at most one header line
//! (capped) and the metadata of each message, never a message body.
//!
//! Message boundaries, exactly as Dovecot draws them:
//! - the file must begin with a valid From_ line (an empty file has no messages);
//! - a message's headers start after its From_ line and end at the first empty line;
//! - a message ends just before the line ending (`\n`, or `\r\n`) that precedes the next
//!   valid From_ line: a line beginning `From ` that [`from_line::parse`] accepts, at any
//!   line start after the message's own From_ line (also inside headers). So in
//!   `body\n\nFrom ...` the message is `body\n` and the empty line is the separator; in
//!   mboxo files without the empty line (`body\nFrom ...`) the last newline is dropped;
//! - when `Content-Length: n` is present and `n` bytes after the header lead exactly to
//!   `\nFrom <valid>`, `\r\nFrom <valid>` or to a final `\n`/`\r\n` at end of file, the body is
//!   those `n` bytes whatever From_ lines it contains; otherwise the header is ignored;
//! - at end of file one trailing `\n` (or `\r\n`) is the separator, not message data;
//! - `>From ` lines are never unescaped (Dovecot reads mboxrd and mboxo alike).

use std::fs::File;
use std::io;

use mailstore::{Flags, Keyword};

use crate::from_line::{self, FromLine};
use crate::header::{self, HeaderLine, HeaderMd5, ImapBase};
use crate::lines::{Line, LineReader};

/// Bytes kept of a header line: metadata values longer than this are cut (Dovecot's own
/// lines are far shorter).
pub const HEADER_KEEP: usize = 64 * 1024;
/// Bytes kept of a body line: enough to parse any From_ line.
pub const BODY_KEEP: usize = 1024;

/// Why a file can't be read as an mbox.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("mbox file doesn't begin with 'From ' line")]
    NotMbox,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// One message as found in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MboxMessage {
    /// Offset of the `From ` of its From_ line.
    pub from_start: u64,
    /// First byte after the From_ line.
    pub hdr_offset: u64,
    /// Where the header's empty line starts (`body_offset` minus the empty line), or where
    /// the header was cut off; never past `end`.
    pub header_end: u64,
    /// First byte of the body (after the empty line); `end` when the header has no end.
    pub body_offset: u64,
    /// One past the message's last byte (the separator's line ending not included).
    pub end: u64,
    /// Envelope sender of the From_ line.
    pub sender: Vec<u8>,
    /// From_ line date: INTERNALDATE.
    pub received: i64,
    /// UID: the trusted X-UID, or the one assigned as Dovecot would (0 for the pseudo message).
    pub uid: u32,
    /// Whether `uid` came from the message's X-UID header.
    pub uid_from_header: bool,
    /// \Seen \Answered \Flagged \Draft \Deleted from Status/X-Status.
    pub flags: Flags,
    /// Status has no `O`: Dovecot counts the message as \Recent.
    pub recent: bool,
    pub keywords: Vec<Keyword>,
    /// Dovecot's header MD5 (mbox-md5-apop3d.c): the message GUID in hex.
    pub header_md5: [u8; 16],
    /// Size of the header as Dovecot shows it (hidden fields dropped, CRLF → LF).
    pub shown_header_size: u64,
    /// The c-client "FOLDER INTERNAL DATA" message (X-IMAP in message 1).
    pub pseudo: bool,
    /// A valid Content-Length value, if the header had one.
    pub content_length: Option<u64>,
}

impl MboxMessage {
    pub fn body_size(&self) -> u64 {
        self.end - self.body_offset
    }
    /// Size of the message as Dovecot presents it (and as [`MessageReader`] streams it).
    pub fn physical_size(&self) -> u64 {
        self.shown_header_size + self.body_size()
    }
    pub fn guid_hex(&self) -> String {
        crate::md5::hex(&self.header_md5)
    }
}

/// A whole mbox file's contents.
#[derive(Clone, Debug, Default)]
pub struct MboxFile {
    /// Real messages, in file order (ascending UIDs).
    pub messages: Vec<MboxMessage>,
    /// The pseudo message, if message 1 is one.
    pub pseudo: Option<MboxMessage>,
    /// X-IMAPbase (or the pseudo message's X-IMAP) of message 1, when valid.
    pub base: Option<ImapBase>,
    /// The next UID to give.
    pub next_uid: u32,
    /// Dovecot would rewrite metadata on a read-write sync: missing/broken X-IMAPbase,
    /// messages without a trusted X-UID, next UID larger than X-IMAPbase says.
    pub needs_rewrite: bool,
    /// File size scanned.
    pub size: u64,
}

impl MboxFile {
    pub fn uid_validity(&self) -> u32 {
        self.base.as_ref().map_or(0, |b| b.uid_validity)
    }
}

/// UID state carried from message to message (mbox_sync_context).
struct UidState {
    next_uid: u32,
    prev_uid: u32,
    base: Option<ImapBase>,
    needs_rewrite: bool,
}

/// Where the message after the current one starts.
enum Next {
    /// A From_ line starting at this offset.
    At(u64),
    Eof,
}

/// Reads all messages of `file`. `min_next_uid` is the next UID known from elsewhere (1 if
/// nothing is known), as Dovecot starts from its index header.
pub fn scan(file: &File, min_next_uid: u32) -> Result<MboxFile, ScanError> {
    let size = file.metadata()?.len();
    let mut out = MboxFile {
        next_uid: min_next_uid.max(1),
        size,
        ..MboxFile::default()
    };
    if size == 0 {
        return Ok(out);
    }
    let mut reader = LineReader::new(file, 0, size)?;
    let mut state = UidState {
        next_uid: out.next_uid,
        prev_uid: 0,
        base: None,
        needs_rewrite: false,
    };
    let mut from_start = 0u64;
    let mut seq = 1u32;
    let mut line = Line::default();
    loop {
        reader.seek_to(from_start)?;
        if !reader.next_line(BODY_KEEP, &mut line)? || !line.head.starts_with(b"From ") {
            return Err(ScanError::NotMbox);
        }
        let from = from_line::parse(&line.head[5..]).ok_or(ScanError::NotMbox)?;
        let (mut msg, next) = scan_message(
            &mut reader,
            file,
            size,
            from_start,
            line.end(),
            from,
            seq,
            &mut state,
        )?;
        if msg.pseudo {
            out.pseudo = Some(msg);
        } else {
            if msg.uid == 0 {
                msg.uid = state.next_uid;
                state.next_uid = state.next_uid.wrapping_add(1);
                state.needs_rewrite = true;
            }
            state.prev_uid = msg.uid;
            out.messages.push(msg);
        }
        match next {
            Next::At(offset) => from_start = offset,
            Next::Eof => break,
        }
        seq += 1;
    }
    out.base = state.base;
    out.next_uid = state.next_uid;
    out.needs_rewrite = state.needs_rewrite;
    Ok(out)
}

/// Per-message header parsing state.
struct HeaderParse {
    seq: u32,
    md5: HeaderMd5,
    /// The field being collected: (name, full value, hidden).
    field: Option<(Vec<u8>, Vec<u8>)>,
    hidden: bool,
    shown_size: u64,
    last_line_shown: bool,
    flags: Flags,
    nonrecent: bool,
    uid: u32,
    keywords: Option<Vec<Keyword>>,
    content_length: Option<u64>,
    pseudo: bool,
    seen_imapbase: bool,
}

impl HeaderParse {
    fn line(&mut self, line: &Line, state: &mut UidState) {
        let content = line.content();
        let split = header::split(content);
        match &split {
            HeaderLine::Field { name, value } => {
                self.finish_field(state);
                self.hidden = header::is_hidden(name);
                if self.hidden {
                    self.md5.skipped_field();
                    self.field = Some((name.to_vec(), value.to_vec()));
                } else {
                    self.md5.line(&split);
                }
            }
            HeaderLine::Continued(v) => {
                if self.hidden {
                    if let Some((_, full)) = &mut self.field {
                        full.push(b'\n');
                        full.extend_from_slice(v);
                    }
                } else {
                    self.md5.line(&split);
                }
            }
        }
        if !self.hidden {
            self.shown_size += line.len - u64::from(line.crlf);
        }
        self.last_line_shown = !self.hidden;
    }

    /// Applies a complete Dovecot-managed field (mbox-sync-parse.c header_funcs).
    fn finish_field(&mut self, state: &mut UidState) {
        let Some((name, value)) = self.field.take() else {
            return;
        };
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("Content-Length") {
            if self.content_length.is_none() {
                self.content_length = header::parse_number(&value);
            }
        } else if is("Status") {
            for &c in &value {
                match c {
                    b'R' => self.flags.insert(Flags::SEEN),
                    b'O' => self.nonrecent = true,
                    _ => {}
                }
            }
        } else if is("X-Status") {
            for &c in &value {
                match c {
                    b'A' => self.flags.insert(Flags::ANSWERED),
                    b'F' => self.flags.insert(Flags::FLAGGED),
                    b'T' => self.flags.insert(Flags::DRAFT),
                    b'D' => self.flags.insert(Flags::DELETED),
                    _ => {}
                }
            }
        } else if is("X-IMAPbase") || is("X-IMAP") {
            if self.seq != 1 || self.seen_imapbase {
                return;
            }
            let Some(base) = header::parse_imap_base(&value) else {
                return;
            };
            let last_uid_digits = value
                .split(|&b| b == b' ' || b == b'\t' || b == b'\n')
                .filter(|w| !w.is_empty())
                .nth(1)
                .map_or(0, |w| w.len());
            if last_uid_digits != 10 {
                state.needs_rewrite = true;
            }
            if state.next_uid.wrapping_sub(1) <= base.last_uid {
                state.next_uid = base.last_uid.wrapping_add(1);
            } else {
                state.needs_rewrite = true;
            }
            if is("X-IMAP") {
                self.pseudo = true;
            }
            self.seen_imapbase = true;
            state.base = Some(base);
        } else if is("X-Keywords") {
            if self.keywords.is_some() {
                return;
            }
            let known: &[Vec<u8>] = state.base.as_ref().map_or(&[], |b| &b.keywords);
            let mut list: Vec<Keyword> = Vec::new();
            for word in header::split_words(&value) {
                if !known.contains(&word) {
                    // unknown keyword: Dovecot drops the whole header
                    return;
                }
                let k = Keyword::new(word);
                if !list.contains(&k) {
                    list.push(k);
                }
            }
            self.keywords = Some(list);
        } else if is("X-UID") {
            if self.uid != 0 {
                return;
            }
            let Some(value) = header::parse_number(&value) else {
                return;
            };
            let value = value as u32;
            if self.seq == 1 && !self.seen_imapbase {
                return;
            }
            if value == state.next_uid {
                state.next_uid = state.next_uid.wrapping_add(1);
            } else if value > state.next_uid {
                return;
            }
            if value <= state.prev_uid {
                return;
            }
            self.uid = value;
        }
    }
}

/// Finds where a message whose From_ line ends at `hdr_offset` ends, reading its headers.
#[allow(clippy::too_many_arguments)]
fn scan_message(
    reader: &mut LineReader<'_>,
    file: &File,
    size: u64,
    from_start: u64,
    hdr_offset: u64,
    from: FromLine,
    seq: u32,
    state: &mut UidState,
) -> Result<(MboxMessage, Next), ScanError> {
    let mut hp = HeaderParse {
        seq,
        md5: HeaderMd5::default(),
        field: None,
        hidden: false,
        shown_size: 0,
        last_line_shown: false,
        flags: Flags::EMPTY,
        nonrecent: false,
        uid: 0,
        keywords: None,
        content_length: None,
        pseudo: false,
        seen_imapbase: false,
    };
    let mut line = Line::default();
    // the last line read inside this message: (newline, crlf)
    let mut last: Option<(bool, bool)> = None;
    let mut body_offset = None;
    let mut header_end = None;
    let mut end = None;
    let mut next = Next::Eof;
    // headers
    while reader.next_line(HEADER_KEEP, &mut line)? {
        if let Some(prev) = last {
            if is_from_line(&line) {
                end = Some(line.start - 1 - u64::from(prev.1));
                next = Next::At(line.start);
                break;
            }
        }
        last = Some((line.newline, line.crlf));
        if line.is_empty_line() {
            hp.shown_size += 1;
            header_end = Some(line.start);
            body_offset = Some(line.end());
            break;
        }
        hp.line(&line, state);
    }
    hp.finish_field(state);
    if seq == 1 && !hp.seen_imapbase {
        state.needs_rewrite = true;
    }
    // body
    if end.is_none() {
        if let Some(body_start) = body_offset {
            if let Some(cl) = hp.content_length {
                if let Some(n) = content_length_end(file, size, body_start, cl)? {
                    end = Some(body_start + cl);
                    next = n;
                }
            }
            if end.is_none() {
                while reader.next_line(BODY_KEEP, &mut line)? {
                    if let Some(prev) = last {
                        if is_from_line(&line) {
                            end = Some(line.start - 1 - u64::from(prev.1));
                            next = Next::At(line.start);
                            break;
                        }
                    }
                    last = Some((line.newline, line.crlf));
                }
            }
        }
    }
    let end = match end {
        Some(e) => e,
        None => {
            // end of file: the final line ending is the separator
            let strip = match last {
                Some((true, crlf)) => 1 + u64::from(crlf),
                _ => 0,
            };
            size - strip
        }
    };
    // The line ending cut off as separator is no longer part of the shown header.
    let mut shown_header_size = hp.shown_size;
    match body_offset {
        Some(b) if b > end => shown_header_size -= 1,
        None if hp.last_line_shown && last.is_some_and(|(newline, _)| newline) => {
            shown_header_size -= 1
        }
        _ => {}
    }
    let body_offset = body_offset.unwrap_or(end).min(end);
    let header_end = header_end.unwrap_or(end).min(end);
    Ok((
        MboxMessage {
            from_start,
            hdr_offset,
            header_end,
            body_offset,
            end,
            sender: from.sender,
            received: from.time,
            uid: hp.uid,
            uid_from_header: hp.uid != 0,
            flags: hp.flags,
            recent: !hp.nonrecent,
            keywords: hp.keywords.unwrap_or_default(),
            header_md5: hp.md5.finish(),
            shown_header_size,
            pseudo: hp.pseudo,
            content_length: hp.content_length,
        },
        next,
    ))
}

/// A line that starts a new message.
fn is_from_line(line: &Line) -> bool {
    line.head.starts_with(b"From ") && from_line::parse(&line.head[5..]).is_some()
}

/// Checks a Content-Length as istream_raw_mbox_get_body_size does: `Some` when `cl` bytes
/// after `body_start` lead to a valid From_ line or to the file's final line ending.
fn content_length_end(
    file: &File,
    size: u64,
    body_start: u64,
    cl: u64,
) -> io::Result<Option<Next>> {
    let Some(at) = body_start.checked_add(cl) else {
        return Ok(None);
    };
    if at > size {
        return Ok(None);
    }
    let peek = LineReader::peek_at(file, at, BODY_KEEP + 7)?;
    if peek == b"\n" || peek == b"\r\n" {
        return Ok(Some(Next::Eof));
    }
    for prefix in [&b"\nFrom "[..], b"\r\nFrom "] {
        if peek.len() > prefix.len() + 25 && peek.starts_with(prefix) {
            let rest = &peek[prefix.len()..];
            let rest = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => &rest[..=i],
                None => rest,
            };
            if from_line::parse(rest).is_some() {
                return Ok(Some(Next::At(at + prefix.len() as u64 - 5)));
            }
        }
    }
    Ok(None)
}

/// Streams one message as Dovecot presents it (mbox-mail.c: the raw message through
/// `i_stream_create_header_filter(HEADER_FILTER_EXCLUDE | HEADER_FILTER_NO_CR,
/// mbox_hide_headers)`): header lines of [`header::HIDDEN_HEADERS`] fields (with their
/// continuation lines) dropped, header line endings as LF, body bytes untouched.
pub struct MessageReader {
    file: File,
    pos: u64,
    body_offset: u64,
    end: u64,
    in_header: bool,
    at_line_start: bool,
    line_hidden: bool,
    pending_cr: bool,
    out: Vec<u8>,
    out_pos: usize,
}

const CHUNK: usize = 64 * 1024;

impl MessageReader {
    pub fn new(file: File, msg: &MboxMessage) -> MessageReader {
        MessageReader {
            file,
            pos: msg.hdr_offset,
            body_offset: msg.body_offset,
            end: msg.end,
            in_header: true,
            at_line_start: true,
            line_hidden: false,
            pending_cr: false,
            out: Vec::with_capacity(CHUNK),
            out_pos: 0,
        }
    }

    fn read_at(&self, pos: u64, n: usize) -> io::Result<Vec<u8>> {
        LineReader::peek_at(&self.file, pos, n)
    }

    /// Produces the next piece of output; leaves `out` empty only at the end.
    fn fill(&mut self) -> io::Result<()> {
        self.out.clear();
        self.out_pos = 0;
        while self.out.is_empty() {
            if self.in_header {
                if self.pos >= self.body_offset {
                    if self.pending_cr {
                        self.out.push(b'\r');
                        self.pending_cr = false;
                    }
                    self.in_header = false;
                    continue;
                }
                let room = (self.body_offset - self.pos) as usize;
                if self.at_line_start {
                    let peek = self.read_at(self.pos, room.min(BODY_KEEP))?;
                    if peek.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "mbox file shrank while reading a message",
                        ));
                    }
                    if peek.starts_with(b"\n") || peek.starts_with(b"\r\n") {
                        // end of header
                        self.out.push(b'\n');
                        self.pos += if peek[0] == b'\n' { 1 } else { 2 };
                        self.in_header = false;
                        continue;
                    }
                    let line_end = peek.iter().position(|&b| b == b'\n').unwrap_or(peek.len());
                    let content = &peek[..line_end];
                    let content = content.strip_suffix(b"\r").unwrap_or(content);
                    match header::split(content) {
                        HeaderLine::Continued(_) => {}
                        HeaderLine::Field { name, .. } => {
                            self.line_hidden = header::is_hidden(name)
                        }
                    }
                    self.at_line_start = false;
                }
                let chunk = self.read_at(self.pos, room.min(CHUNK))?;
                if chunk.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "mbox file shrank while reading a message",
                    ));
                }
                let newline = chunk.iter().position(|&b| b == b'\n');
                let data = &chunk[..newline.unwrap_or(chunk.len())];
                let consumed = data.len() + usize::from(newline.is_some());
                if !self.line_hidden {
                    if self.pending_cr {
                        if !(data.is_empty() && newline.is_some()) {
                            self.out.push(b'\r');
                        }
                        self.pending_cr = false;
                    }
                    let mut d = data;
                    if let Some(stripped) = d.strip_suffix(b"\r") {
                        d = stripped;
                        if newline.is_none() {
                            self.pending_cr = true;
                        }
                    }
                    self.out.extend_from_slice(d);
                    if newline.is_some() {
                        self.out.push(b'\n');
                    }
                }
                self.pos += consumed as u64;
                if newline.is_some() {
                    self.at_line_start = true;
                }
            } else {
                if self.pos >= self.end {
                    return Ok(());
                }
                let n = ((self.end - self.pos) as usize).min(CHUNK);
                let chunk = self.read_at(self.pos, n)?;
                if chunk.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "mbox file shrank while reading a message",
                    ));
                }
                self.pos += chunk.len() as u64;
                self.out = chunk;
            }
        }
        Ok(())
    }
}

impl io::Read for MessageReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.out_pos >= self.out.len() {
            self.fill()?;
            if self.out.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    const FROM: &str = "From a@b Thu Nov  9 22:33:52 2001";

    /// (uid, shown bytes) of every message of `data`.
    fn read(data: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        let mbox = scan(&f, 1).unwrap();
        mbox.messages
            .iter()
            .map(|m| {
                let mut out = Vec::new();
                MessageReader::new(f.try_clone().unwrap(), m)
                    .read_to_end(&mut out)
                    .unwrap();
                assert_eq!(out.len() as u64, m.physical_size());
                (m.uid, out)
            })
            .collect()
    }

    fn texts(data: &str) -> Vec<String> {
        read(data.as_bytes())
            .into_iter()
            .map(|(_, b)| String::from_utf8(b).unwrap())
            .collect()
    }

    #[test]
    fn blank_line_before_from_is_the_separator_and_mboxo_loses_its_last_newline() {
        assert_eq!(
            texts(&format!("{FROM}\nS: 1\n\nbody\n\n{FROM}\nS: 2\n\nb2\n\n")),
            ["S: 1\n\nbody\n", "S: 2\n\nb2\n"]
        );
        assert_eq!(
            texts(&format!("{FROM}\nS: 1\n\nbody\n{FROM}\nS: 2\n\nb2")),
            ["S: 1\n\nbody", "S: 2\n\nb2"]
        );
    }

    #[test]
    fn only_valid_from_lines_split_and_escapes_stay() {
        let t = texts(&format!(
            "{FROM}\nS: 1\n\nFrom time to time\n>From x\n\n{FROM}\nS: 2\n\n"
        ));
        assert_eq!(t, ["S: 1\n\nFrom time to time\n>From x\n", "S: 2\n"]);
    }

    #[test]
    fn content_length_is_honoured_only_when_it_checks_out() {
        let body = format!("a\n\n{FROM}\nb\n");
        let good = format!(
            "{FROM}\nContent-Length: {}\n\n{body}\n{FROM}\nS: 2\n\nx\n",
            body.len()
        );
        // the file's final newline is the separator, not message data
        assert_eq!(texts(&good), [format!("\n{body}"), "S: 2\n\nx".into()]);
        let lying = format!("{FROM}\nContent-Length: 3\n\n{body}\n");
        assert_eq!(texts(&lying).len(), 2, "a lying Content-Length is ignored");
        let too_big = format!("{FROM}\nContent-Length: 999\n\n{body}");
        assert_eq!(texts(&too_big).len(), 2);
    }

    #[test]
    fn crlf_headers_are_shown_with_lf_and_hidden_headers_dropped() {
        let t = read(
            format!("{FROM}\r\nS: x\r\nX-UID: 7\r\nStatus: RO\r\n more\r\n\r\nb\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(t[0].1, b"S: x\n\nb\r\n");
    }

    #[test]
    fn metadata_headers_give_uids_flags_and_known_keywords() {
        let data = format!(
            "{FROM}\nX-IMAPbase: 5 0000000009 k1 k2\nX-UID: 3\nStatus: RO\nX-Status: AD\nX-Keywords: k2\n\n\n\
             {FROM}\nX-UID: 20\nX-Keywords: k1 zz\n\n\n\
             {FROM}\nX-UID: 2\n\n\n"
        );
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data.as_bytes()).unwrap();
        let mbox = scan(&f, 1).unwrap();
        assert_eq!(mbox.uid_validity(), 5);
        let uids: Vec<u32> = mbox.messages.iter().map(|m| m.uid).collect();
        // X-UID 20 is above the next expected UID (10): untrusted, gets 10; X-UID 2 is not
        // above the previous one: gets 11
        assert_eq!(uids, [3, 10, 11]);
        let m = &mbox.messages[0];
        assert_eq!(m.flags, Flags::SEEN | Flags::ANSWERED | Flags::DELETED);
        assert!(!m.recent);
        assert_eq!(m.keywords, [Keyword::from("k2")]);
        assert!(
            mbox.messages[1].keywords.is_empty(),
            "unknown keyword drops the header"
        );
        assert!(mbox.messages[1].recent);
        assert!(mbox.needs_rewrite);
        assert_eq!(mbox.next_uid, 12);
    }

    #[test]
    fn the_pseudo_message_is_never_a_message() {
        let data = format!(
            "From MAILER_DAEMON  Sun Nov 29 19:18:23 2026\nX-IMAP: 9 0000000004\n\ntext\n\n{FROM}\nX-UID: 4\n\nb\n"
        );
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data.as_bytes()).unwrap();
        let mbox = scan(&f, 1).unwrap();
        assert!(mbox.pseudo.is_some());
        assert_eq!(mbox.messages.len(), 1);
        assert_eq!(mbox.messages[0].uid, 4);
        assert_eq!(mbox.next_uid, 5);
    }

    #[test]
    fn not_an_mbox_is_an_error_and_empty_is_empty() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"Subject: not mbox\n\n").unwrap();
        assert!(matches!(scan(&f, 1), Err(ScanError::NotMbox)));
        assert!(read(b"").is_empty());
    }

    #[test]
    fn header_md5_is_dovecots_guid() {
        // mbox.md §6, dump-verified against Dovecot 2.3.19.1
        let data = format!(
            "{FROM}\nMessage-ID: <1@x>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: s\n\nb\n"
        );
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data.as_bytes()).unwrap();
        let mbox = scan(&f, 1).unwrap();
        let mut md5 = crate::md5::Md5::default();
        md5.update(b"<1@x>Mon, 1 Jan 2024 00:00:00 +0000");
        assert_eq!(mbox.messages[0].header_md5, md5.finish());
    }
}
