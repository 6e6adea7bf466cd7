//! The dbox file format shared by sdbox (`u.<uid>`, one message) and mdbox (`m.<id>`, many
//! messages): file header line, 30-byte message headers, LF bodies, metadata blocks.
//! Byte tables: FORMAT.md §1. Source: src/lib-storage/index/dbox-common/dbox-file.h,
//! dbox-file.c (dbox_file_parse_header, dbox_file_read_mail_header), dbox-file-fix.c,
//! dbox-save.c (dbox_save_write_metadata, dbox_msg_header_fill).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// DBOX_VERSION: the only file version written and read.
pub const FILE_VERSION: u32 = 2;
/// sizeof(struct dbox_message_header).
pub const MSG_HEADER_SIZE: usize = 30;
/// DBOX_MAGIC_PRE: the first two bytes of a message header.
pub const MAGIC_PRE: [u8; 2] = [0x01, 0x02];
/// DBOX_MAGIC_POST: starts the metadata block after the body.
pub const MAGIC_POST: &[u8; 4] = b"\n\x01\x03\n";
/// DBOX_MESSAGE_TYPE_NORMAL.
pub const MESSAGE_TYPE_NORMAL: u8 = b'N';
/// Longest metadata block we read; Dovecot's lines are short (GUID, sizes, mailbox name).
pub const MAX_METADATA_SIZE: usize = 64 * 1024;
/// Longest file header line we read (Dovecot reads one line).
pub const MAX_FILE_HEADER_SIZE: usize = 1024;

/// Metadata keys (enum dbox_metadata_key).
pub mod key {
    pub const GUID: u8 = b'G';
    pub const POP3_UIDL: u8 = b'P';
    pub const POP3_ORDER: u8 = b'O';
    pub const RECEIVED_TIME: u8 = b'R';
    pub const PHYSICAL_SIZE: u8 = b'Z';
    pub const VIRTUAL_SIZE: u8 = b'V';
    pub const EXT_REF: u8 = b'X';
    pub const ORIG_MAILBOX: u8 = b'B';
    /// DBOX_METADATA_OLDV1_SAVE_TIME: Dovecot 2.3 no longer reads it; mailsync writes it
    /// only for a saved date given explicitly (dsync) and reads it back (FORMAT.md §1.4).
    pub const OLDV1_SAVE_TIME: u8 = b'S';
}

/// A format violation at a byte offset of a dbox file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError {
    pub offset: u64,
    pub reason: String,
}

impl FormatError {
    fn new(offset: u64, reason: impl Into<String>) -> FormatError {
        FormatError {
            offset,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "offset {}: {}", self.offset, self.reason)
    }
}

/// Reading a dbox file failed: the bytes are wrong, or the read itself.
#[derive(Debug)]
pub enum ReadError {
    Format(FormatError),
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

impl From<FormatError> for ReadError {
    fn from(e: FormatError) -> ReadError {
        ReadError::Format(e)
    }
}

impl ReadError {
    /// As a storage error naming `path`.
    pub fn into_store_error(self, path: &std::path::Path) -> mailstore::Error {
        match self {
            ReadError::Format(f) => mailstore::Error::corrupted(path, format!("dbox file {f}")),
            ReadError::Io(e) => mailstore::Error::io("read", path, e),
        }
    }
}

/// The file header line `2 M1e C<hex>\n` (dbox_file_parse_header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub version: u32,
    /// `M`: size of each message header (hex).
    pub msg_header_size: u32,
    /// `C`: creation UNIX time (hex).
    pub create_stamp: u64,
    /// Length of the line including its LF: where the first message starts.
    pub header_len: u32,
}

impl FileHeader {
    /// The header line Dovecot writes for a file created at `create_stamp`
    /// (dbox_file_header_write: `"%u %c%x %c%x\n"`).
    pub fn encode(create_stamp: u64) -> Vec<u8> {
        format!("{FILE_VERSION} M{MSG_HEADER_SIZE:x} C{create_stamp:x}\n").into_bytes()
    }

    /// Parses the first line of `data` (which starts at file offset 0).
    pub fn parse(data: &[u8]) -> Result<FileHeader, FormatError> {
        let end = data
            .iter()
            .take(MAX_FILE_HEADER_SIZE)
            .position(|&b| b == b'\n')
            .ok_or_else(|| FormatError::new(0, "file header line not terminated"))?;
        let line = &data[..end];
        let mut fields = line.split(|&b| b == b' ');
        let version = fields
            .next()
            .and_then(parse_dec)
            .ok_or_else(|| FormatError::new(0, "invalid file version"))?;
        if version != FILE_VERSION {
            // dbox_file_read_header: only version 2 is read by 2.3
            return Err(FormatError::new(
                0,
                format!("unsupported file version {version}"),
            ));
        }
        let mut msg_header_size = 0u32;
        let mut create_stamp = 0u64;
        for f in fields {
            let Some((&k, v)) = f.split_first() else {
                continue;
            };
            match k {
                b'M' => {
                    msg_header_size = parse_hex(v)
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| FormatError::new(0, "invalid M header"))?
                }
                b'C' => create_stamp = parse_hex(v).unwrap_or(0),
                // unknown keys (and the obsolete v1 `A`) are ignored
                _ => {}
            }
        }
        if (msg_header_size as usize) < MSG_HEADER_SIZE {
            // dbox_file_parse_header: "Missing message header size" / too small
            return Err(FormatError::new(
                0,
                format!("message header size {msg_header_size} is too small"),
            ));
        }
        Ok(FileHeader {
            version,
            msg_header_size,
            create_stamp,
            header_len: end as u32 + 1,
        })
    }
}

fn parse_dec(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Lowercase or uppercase hex, at most 16 digits (str_to_uintmax_hex).
pub fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    // at most 16 digits: no overflow
    s.iter().try_fold(0u64, |n, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(n << 4 | u64::from(digit))
    })
}

/// The 30-byte message header: magic, type `N`, 8 spaces (old v1 uid), 16 uppercase hex
/// digits of the body size, LF (dbox_msg_header_fill).
pub fn encode_message_header(body_size: u64) -> [u8; MSG_HEADER_SIZE] {
    let mut h = [b' '; MSG_HEADER_SIZE];
    h[0..2].copy_from_slice(&MAGIC_PRE);
    h[2] = MESSAGE_TYPE_NORMAL;
    h[13..29].copy_from_slice(format!("{body_size:016X}").as_bytes());
    h[29] = b'\n';
    h
}

/// The body size from a message header at file offset `offset`
/// (dbox_file_read_mail_header). hex2dec reads either case; any other character is
/// treated as a broken header here (Dovecot would read size 0 and then fail the metadata).
pub fn parse_message_header(h: &[u8], offset: u64) -> Result<u64, FormatError> {
    if h.len() < MSG_HEADER_SIZE {
        return Err(FormatError::new(offset, "message header truncated"));
    }
    if h[0..2] != MAGIC_PRE {
        return Err(FormatError::new(offset, "message header has bad magic"));
    }
    if h[2] != MESSAGE_TYPE_NORMAL {
        return Err(FormatError::new(
            offset,
            format!("unknown message type {:?}", h[2] as char),
        ));
    }
    parse_hex(&h[13..29]).ok_or_else(|| FormatError::new(offset, "invalid message size"))
}

/// A metadata block: `KEY value` lines in file order, unknown keys kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub lines: Vec<(u8, Vec<u8>)>,
}

impl Metadata {
    /// The value of the first line with `key`.
    pub fn get(&self, key: u8) -> Option<&[u8]> {
        self.lines
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    pub fn hex(&self, key: u8) -> Option<u64> {
        self.get(key).and_then(parse_hex)
    }

    /// Parses a block that starts with [`MAGIC_POST`] at file offset `offset`. Returns the
    /// metadata and the block's length (magic + lines + the empty line), or `None` when
    /// `data` ends before the empty line.
    pub fn parse(data: &[u8], offset: u64) -> Result<Option<(Metadata, usize)>, FormatError> {
        Ok(MetadataRef::parse(data, offset)?.map(|(m, len)| (m.to_owned(), len)))
    }

    /// The block as written: magic, lines, empty line.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC_POST.to_vec();
        for (k, v) in &self.lines {
            out.push(*k);
            out.extend_from_slice(v);
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }
}

/// A metadata block in the buffer it was read into: lines are looked up in place, nothing
/// is copied (what a reader of many messages uses, one buffer for all of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataRef<'a> {
    /// The lines after the magic, each with its LF, up to and including the empty line.
    lines: &'a [u8],
    /// Where the lines are, found by [`MetadataRef::parse`] as it looks for the block's
    /// end: [`MetadataRef::get`] then looks through this instead of the bytes.
    index: LineIndex,
}

/// Lines a [`LineIndex`] holds: a block Dovecot or mailsync writes has up to 8.
const INDEXED_LINES: usize = 12;

/// The key and value of one line of a metadata block, as offsets within its `lines`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LineSpan {
    key: u8,
    start: u16,
    end: u16,
}

/// Where each line of a metadata block is: `count` spans, or `None` when there are more
/// than [`INDEXED_LINES`] or one ends beyond `u16` (then looked up in the bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LineIndex {
    count: Option<u8>,
    spans: [LineSpan; INDEXED_LINES],
}

impl LineIndex {
    /// The spans found, `None` when the block wasn't indexed.
    fn spans(&self) -> Option<&[LineSpan]> {
        self.count.map(|n| &self.spans[..usize::from(n)])
    }
}

impl<'a> MetadataRef<'a> {
    /// As [`Metadata::parse`]: the block starting with [`MAGIC_POST`] at file offset
    /// `offset` and its length, `None` when `data` ends before the empty line.
    pub fn parse(
        data: &'a [u8],
        offset: u64,
    ) -> Result<Option<(MetadataRef<'a>, usize)>, FormatError> {
        if data.len() < MAGIC_POST.len() {
            return Ok(None);
        }
        if &data[..MAGIC_POST.len()] != MAGIC_POST {
            return Err(FormatError::new(offset, "metadata block has bad magic"));
        }
        let mut pos = MAGIC_POST.len();
        // each line's place as its end is found (until the index is full)
        let mut index = LineIndex {
            count: Some(0),
            spans: [LineSpan::default(); INDEXED_LINES],
        };
        loop {
            let Some(nl) = memchr::memchr(b'\n', &data[pos..]) else {
                return Ok(None);
            };
            if let Some(n) = index.count.filter(|_| nl > 0) {
                let start = pos - MAGIC_POST.len();
                let span = (u16::try_from(start + 1), u16::try_from(start + nl));
                match span {
                    (Ok(start), Ok(end)) if usize::from(n) < INDEXED_LINES => {
                        index.spans[usize::from(n)] = LineSpan {
                            key: data[pos],
                            start,
                            end,
                        };
                        index.count = Some(n + 1);
                    }
                    _ => index.count = None,
                }
            }
            pos += nl + 1;
            if nl == 0 {
                let lines = &data[MAGIC_POST.len()..pos];
                return Ok(Some((MetadataRef { lines, index }, pos)));
            }
        }
    }

    /// `KEY value` lines in file order.
    pub fn lines(&self) -> impl Iterator<Item = (u8, &'a [u8])> {
        let lines = self.lines;
        let mut start = 0;
        // each line up to its LF (the block ends with one); the empty line ends the list
        memchr::memchr_iter(b'\n', lines)
            .map(move |end| {
                let line = &lines[start..end];
                start = end + 1;
                line
            })
            .map_while(|line| line.split_first().map(|(&k, v)| (k, v)))
    }

    /// The value of the first line with `key`.
    pub fn get(&self, key: u8) -> Option<&'a [u8]> {
        match self.index.spans() {
            Some(spans) => spans
                .iter()
                .find(|span| span.key == key)
                .map(|span| &self.lines[usize::from(span.start)..usize::from(span.end)]),
            None => self.lines().find(|(k, _)| *k == key).map(|(_, v)| v),
        }
    }

    pub fn hex(&self, key: u8) -> Option<u64> {
        self.get(key).and_then(parse_hex)
    }

    pub fn to_owned(&self) -> Metadata {
        Metadata {
            lines: self.lines().map(|(k, v)| (k, v.to_vec())).collect(),
        }
    }
}

/// Where one message lies in a dbox file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailSpan {
    /// Offset of the message header.
    pub offset: u64,
    /// Offset of the first body byte.
    pub body_offset: u64,
    /// Body size from the message header.
    pub body_size: u64,
    /// Size of header + body + metadata block (the mdbox map record's `size`).
    pub total_size: u64,
}

/// Where one message lies in a dbox file, with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailExtent {
    /// Offset of the message header.
    pub offset: u64,
    /// Offset of the first body byte.
    pub body_offset: u64,
    /// Body size from the message header.
    pub body_size: u64,
    /// Size of header + body + metadata block (the mdbox map record's `size`).
    pub total_size: u64,
    pub metadata: Metadata,
}

impl MailExtent {
    /// The size of the message as stored (`Z` when present, else the header's size).
    pub fn physical_size(&self) -> u64 {
        self.metadata
            .hex(key::PHYSICAL_SIZE)
            .unwrap_or(self.body_size)
    }
}

/// Positional reads from a dbox file: a `File`, or bytes in memory (tests, fuzzing).
pub trait ReadAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// Reads the file header at offset 0 of `file`.
pub fn read_file_header(file: &(impl ReadAt + ?Sized)) -> Result<FileHeader, ReadError> {
    let mut buf = vec![0u8; MAX_FILE_HEADER_SIZE];
    let n = read_at_most(file, &mut buf, 0)?;
    Ok(FileHeader::parse(&buf[..n])?)
}

/// Reads the message whose header starts at `offset` (dbox_file_seek +
/// dbox_file_metadata_read).
pub fn read_mail_at(
    file: &(impl ReadAt + ?Sized),
    hdr: &FileHeader,
    offset: u64,
) -> Result<MailExtent, ReadError> {
    let mut buf = MetaBuf::default();
    let (span, metadata) = read_mail_in(file, hdr, offset, &mut buf)?;
    Ok(MailExtent {
        offset: span.offset,
        body_offset: span.body_offset,
        body_size: span.body_size,
        total_size: span.total_size,
        metadata: metadata.to_owned(),
    })
}

/// The buffer [`read_mail_in`] reads a message's metadata block into, reused from message
/// to message. It keeps every byte that read returned, and the read asks for more than a
/// block's usual length: when messages of one file are read in offset order, the header of
/// the next message (which starts where this block ends) is mostly among them, and is taken
/// from here instead of costing a `pread` of its own.
///
/// The bytes are the file's as of the read. A caller moving to another file, or coming back
/// to one after other work (an appender may have filled preallocated zeros since), calls
/// [`MetaBuf::forget`] first.
#[derive(Debug, Default)]
pub struct MetaBuf {
    bytes: Vec<u8>,
    /// The file offset of `bytes[0]`.
    start: u64,
    /// How many leading bytes of `bytes` came from the file (the rest is fill).
    valid: usize,
}

impl MetaBuf {
    /// Drops what was read: the next [`read_mail_in`] reads everything from the file.
    pub fn forget(&mut self) {
        self.valid = 0;
    }

    /// The `len` bytes at file offset `offset`, if all of them were read last time.
    fn holding(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let from = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        let to = from.checked_add(len)?;
        (to <= self.valid).then(|| &self.bytes[from..to])
    }
}

/// How much [`read_mail_in`] reads at a metadata block first: a block Dovecot or mailsync
/// writes is 100-200 bytes, so this mostly holds it and the next message's header.
const METADATA_READ: usize = 512;

/// [`read_mail_at`] into `buf` (see [`MetaBuf`]): the metadata is returned in place, in
/// `buf`.
pub fn read_mail_in<'b>(
    file: &(impl ReadAt + ?Sized),
    hdr: &FileHeader,
    offset: u64,
    buf: &'b mut MetaBuf,
) -> Result<(MailSpan, MetadataRef<'b>), ReadError> {
    // only the first 30 bytes mean something; a larger M just moves the body (and must
    // never size an allocation: M comes from the file)
    let mut h = [0u8; MSG_HEADER_SIZE];
    let n = match buf.holding(offset, MSG_HEADER_SIZE) {
        Some(held) => {
            h.copy_from_slice(held);
            MSG_HEADER_SIZE
        }
        None => read_at_most(file, &mut h, offset)?,
    };
    let body_size = parse_message_header(&h[..n], offset)?;
    let body_offset = offset + hdr.msg_header_size as u64;
    let meta_offset = body_offset
        .checked_add(body_size)
        .ok_or_else(|| FormatError::new(offset, "message size overflows"))?;
    buf.valid = 0;
    buf.start = meta_offset;
    buf.bytes.clear();
    buf.bytes.resize(METADATA_READ, 0);
    let (len, index) = loop {
        let have = buf.valid;
        let n = read_at_most(file, &mut buf.bytes[have..], meta_offset + have as u64)?;
        buf.valid += n;
        match MetadataRef::parse(&buf.bytes[..buf.valid], meta_offset)? {
            Some((m, len)) => break (len, m.index),
            None if n == 0 || buf.valid >= MAX_METADATA_SIZE => {
                return Err(FormatError::new(
                    meta_offset,
                    if n == 0 {
                        "file ends inside the message or its metadata"
                    } else {
                        "metadata block too large"
                    },
                )
                .into())
            }
            None => {
                if buf.valid == buf.bytes.len() {
                    let grown = (buf.bytes.len() * 2).min(MAX_METADATA_SIZE);
                    buf.bytes.resize(grown, 0);
                }
            }
        }
    };
    let span = MailSpan {
        offset,
        body_offset,
        body_size,
        total_size: meta_offset + len as u64 - offset,
    };
    let metadata = MetadataRef {
        lines: &buf.bytes[MAGIC_POST.len()..len],
        index,
    };
    Ok((span, metadata))
}

/// Every message of a file, in order, from the first offset to EOF. Trailing zero bytes
/// (mdbox_preallocate_space) end the list.
pub fn read_all_mails(
    file: &(impl ReadAt + ?Sized),
) -> Result<(FileHeader, Vec<MailExtent>), ReadError> {
    let hdr = read_file_header(file)?;
    let len = file.size()?;
    let mut out = Vec::new();
    let mut offset = hdr.header_len as u64;
    while offset < len {
        let mut first = [0u8; 1];
        if read_at_most(file, &mut first, offset)? == 0 || first[0] == 0 {
            break;
        }
        let m = read_mail_at(file, &hdr, offset)?;
        // total_size ≥ header + metadata magic + empty line: always progresses
        offset += m.total_size;
        out.push(m);
    }
    Ok((hdr, out))
}

fn read_at_most(file: &(impl ReadAt + ?Sized), buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut have = 0;
    while have < buf.len() {
        match file.read_at(&mut buf[have..], offset + have as u64) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(have)
}

/// Streams `len` bytes of `file` from `offset` (a message body), by positional reads: the
/// file may be shared with other readers (an mdbox `m.N` holds many messages).
pub struct BodyReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl BodyReader {
    pub fn new(file: File, offset: u64, len: u64) -> BodyReader {
        BodyReader::shared(Arc::new(file), offset, len)
    }

    /// Reads from a file other readers may hold too.
    pub fn shared(file: Arc<File>, offset: u64, len: u64) -> BodyReader {
        BodyReader {
            file,
            pos: offset,
            end: offset.saturating_add(len),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = FileExt::read_at(&*self.file, &mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "dbox file is shorter than its message header says",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_numbers_read_as_str_to_uintmax_hex() {
        assert_eq!(parse_hex(b"0"), Some(0));
        assert_eq!(parse_hex(b"1aF"), Some(0x1af));
        assert_eq!(parse_hex(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex(b"00000000000000001"), None, "more than 16 digits");
        assert_eq!(parse_hex(b""), None);
        assert_eq!(parse_hex(b"12g"), None);
        assert_eq!(parse_hex(b"-1"), None);
        assert_eq!(
            parse_hex(b"+1"),
            None,
            "from_str_radix's sign is no hex digit"
        );
    }

    #[test]
    fn message_header_is_uppercase_hex_as_dovecot_writes() {
        let h = encode_message_header(0x4b);
        assert_eq!(&h[..], b"\x01\x02N          000000000000004B\n");
        assert_eq!(parse_message_header(&h, 0).unwrap(), 0x4b);
        let mut lower = h;
        lower[28] = b'b';
        assert_eq!(parse_message_header(&lower, 0).unwrap(), 0x4b);
        let mut bad = h;
        bad[0] = 0;
        assert!(parse_message_header(&bad, 0).is_err());
    }

    #[test]
    fn file_header_round_trips() {
        let line = FileHeader::encode(0x6b0c9158);
        assert_eq!(line, b"2 M1e C6b0c9158\n");
        let h = FileHeader::parse(&line).unwrap();
        assert_eq!(h.msg_header_size, 30);
        assert_eq!(h.create_stamp, 0x6b0c9158);
        assert_eq!(h.header_len, 16);
        assert!(FileHeader::parse(b"1 M1e C0\n").is_err());
        assert!(FileHeader::parse(b"2 C0\n").is_err());
        assert!(FileHeader::parse(b"2 M1e").is_err());
    }

    #[test]
    fn metadata_parses_until_the_empty_line_and_keeps_unknown_keys() {
        let block = b"\n\x01\x03\nR6b0c9158\nV25\nQxyz\nG8b24\n\nrest";
        let (m, len) = Metadata::parse(block, 0).unwrap().unwrap();
        assert_eq!(len, block.len() - 4);
        assert_eq!(m.hex(key::RECEIVED_TIME), Some(0x6b0c9158));
        assert_eq!(m.get(b'Q'), Some(&b"xyz"[..]));
        assert_eq!(m.encode(), &block[..len]);
        assert_eq!(Metadata::parse(&block[..10], 0).unwrap(), None);
        let (r, rlen) = MetadataRef::parse(block, 0).unwrap().unwrap();
        assert_eq!(rlen, len);
        assert_eq!(r.to_owned(), m);
        assert_eq!(r.get(b'Q'), Some(&b"xyz"[..]));
        assert_eq!(r.hex(key::VIRTUAL_SIZE), Some(0x25));
        assert_eq!(r.get(b'X'), None);
        assert!(Metadata::parse(b"\n\x01\x04\n\n", 0).is_err());
    }

    /// A block's lines are found once, as its end is looked for: every lookup answers as
    /// a walk over the lines does (the first line with the key), also for a block with
    /// more lines than the index holds, duplicate keys, empty values and a value after
    /// the empty line.
    #[test]
    fn a_metadata_lookup_answers_as_a_walk_over_the_lines() {
        let mut many = b"\n\x01\x03\n".to_vec();
        for i in 0..(INDEXED_LINES + 3) {
            many.extend_from_slice(format!("{}v{i}\n", (b'a' + i as u8) as char).as_bytes());
        }
        many.extend_from_slice(b"\nZafter\n");
        let blocks: [&[u8]; 3] = [
            b"\n\x01\x03\nR6b0c9158\nV25\nG\nGsecond\nQxyz\n\nZafter\n",
            b"\n\x01\x03\n\n",
            &many,
        ];
        for (i, block) in blocks.into_iter().enumerate() {
            let (r, _) = MetadataRef::parse(block, 0).unwrap().unwrap();
            assert_eq!(r.index.spans().is_none(), i == 2, "block {i}: indexed");
            for key in 0..=255u8 {
                let walked = r.lines().find(|(k, _)| *k == key).map(|(_, v)| v);
                assert_eq!(r.get(key), walked, "block {i}, key {key}");
            }
            assert_eq!(r.get(b'Z'), None, "after the empty line");
        }
        let (r, _) = MetadataRef::parse(blocks[0], 0).unwrap().unwrap();
        assert_eq!(r.get(b'G'), Some(&b""[..]), "the first G");
    }

    /// A file's bytes, counting the reads made of them.
    struct Counted<'a> {
        bytes: &'a [u8],
        reads: std::cell::Cell<usize>,
    }

    impl ReadAt for Counted<'_> {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.reads.set(self.reads.get() + 1);
            self.bytes.read_at(buf, offset)
        }
        fn size(&self) -> io::Result<u64> {
            self.bytes.size()
        }
    }

    /// An mdbox file of messages with these bodies; their offsets.
    fn file_of(bodies: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
        let mut f = FileHeader::encode(0x6b0c9158);
        let mut offsets = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            offsets.push(f.len() as u64);
            f.extend_from_slice(&encode_message_header(body.len() as u64));
            f.extend_from_slice(body);
            f.extend_from_slice(MAGIC_POST);
            f.extend_from_slice(format!("G{i:032x}\nR6b0c9158\n\n").as_bytes());
        }
        (f, offsets)
    }

    #[test]
    fn messages_read_in_file_order_take_one_read_each() {
        // the last message only keeps the reads of the others off the end of the file
        let large = [b'x'; 2 * METADATA_READ];
        let bodies: [&[u8]; 5] = [b"a\r\n", b"Subject: b\n\nbody\n", b"", b"c", &large];
        let (bytes, mut offsets) = file_of(&bodies);
        offsets.pop();
        let file = Counted {
            bytes: &bytes,
            reads: Default::default(),
        };
        let hdr = read_file_header(&bytes[..]).unwrap();
        let mut buf = MetaBuf::default();
        for (i, &offset) in offsets.iter().enumerate() {
            let (span, meta) = read_mail_in(&file, &hdr, offset, &mut buf).unwrap();
            let alone = read_mail_at(&bytes[..], &hdr, offset).unwrap();
            assert_eq!(meta.to_owned(), alone.metadata, "message {i}");
            assert_eq!(span.body_size, bodies[i].len() as u64);
            assert_eq!(span.total_size, alone.total_size);
            let guid = format!("{i:032x}");
            assert_eq!(meta.get(key::GUID), Some(guid.as_bytes()));
        }
        // a header and a metadata block for the first, a metadata block for each other
        assert_eq!(file.reads.get(), offsets.len() + 1);

        // after forget (another file, or later), a header is read from the file again
        file.reads.set(0);
        buf.forget();
        read_mail_in(&file, &hdr, offsets[1], &mut buf).unwrap();
        assert_eq!(file.reads.get(), 2);
        // out of order: a header not among the held bytes is read
        file.reads.set(0);
        read_mail_in(&file, &hdr, offsets[0], &mut buf).unwrap();
        assert_eq!(file.reads.get(), 2);
    }

    #[test]
    fn held_bytes_answer_only_for_offsets_read() {
        let (bytes, offsets) = file_of(&[b"one", b"two"]);
        let hdr = read_file_header(&bytes[..]).unwrap();
        let mut buf = MetaBuf::default();
        read_mail_in(&bytes[..], &hdr, offsets[0], &mut buf).unwrap();
        let next = offsets[1];
        assert_eq!(
            buf.holding(next, MSG_HEADER_SIZE),
            Some(&bytes[next as usize..next as usize + MSG_HEADER_SIZE])
        );
        // the file ends within the read: nothing past its end, nothing before the block
        assert_eq!(buf.holding(bytes.len() as u64 - 2, 4), None);
        assert_eq!(buf.holding(offsets[0], MSG_HEADER_SIZE), None);
        buf.forget();
        assert_eq!(buf.holding(next, MSG_HEADER_SIZE), None);
    }
}
