//! `dovecot.index`: base header, extension header entries and records
//! (src/lib-index/mail-index.h, mail-index-private.h, mail-index-map-hdr.c,
//! mail-index-map-read.c, mail-index-map.c). Byte tables: FORMAT.md §1.

use std::path::Path;

use super::codec::{align8, pad_to, put_bytes, put_u16, put_u32, u16_at, u32_at, u8_at};
use crate::error::{Error, Result};

/// MAIL_INDEX_MAJOR_VERSION.
pub const MAJOR_VERSION: u8 = 7;
/// MAIL_INDEX_MINOR_VERSION.
pub const MINOR_VERSION: u8 = 3;
/// MAIL_INDEX_HEADER_MIN_SIZE = sizeof(struct mail_index_header).
pub const BASE_HEADER_SIZE: usize = 120;
/// sizeof(struct mail_index_record): u32 uid + u8 flags, padded.
pub const RECORD_BASE_SIZE: usize = 8;
/// MAIL_INDEX_RECORD_MIN_SIZE: where extension record data may start.
pub const RECORD_MIN_SIZE: usize = 5;
/// sizeof(struct mail_index_ext_header).
pub const EXT_HEADER_SIZE: usize = 16;
/// MAIL_INDEX_EXT_HEADER_MAX_SIZE.
pub const EXT_HDR_MAX_SIZE: u32 = 1024 * 1024 * 16 - 1;
/// MAIL_INDEX_EXT_NAME_MAX_LENGTH.
pub const EXT_NAME_MAX_LENGTH: usize = 64;
/// Record sizes of an extension must stay below this (mail-index-map.c).
pub const EXT_RECORD_SIZE_LIMIT: u16 = 32768;

/// enum mail_index_header_compat_flags.
pub const COMPAT_LITTLE_ENDIAN: u8 = 0x01;

/// enum mail_index_header_flag.
pub mod hdr_flag {
    /// Never on disk; a file with it is rejected.
    pub const CORRUPTED: u32 = 0x0001;
    /// Some records carry the DIRTY flag.
    pub const HAVE_DIRTY: u32 = 0x0002;
    /// The index has been fsck'd.
    pub const FSCKD: u32 = 0x0004;
}

/// Record flag bits (enum mail_flags | enum mail_index_mail_flags).
pub mod rec_flag {
    pub const ANSWERED: u8 = 0x01;
    pub const FLAGGED: u8 = 0x02;
    pub const DELETED: u8 = 0x04;
    pub const SEEN: u8 = 0x08;
    pub const DRAFT: u8 = 0x10;
    /// MAIL_INDEX_FLAGS_MASK: the five IMAP system flags.
    pub const SYSTEM_MASK: u8 = 0x1f;
    /// Old \Recent bit, always 0 in v7.3 files.
    pub const UNUSED_RECENT: u8 = 0x20;
    /// Backend private (dbox: message in alt storage).
    pub const BACKEND: u8 = 0x40;
    /// Flags not yet written to the backend (maildir/mbox).
    pub const DIRTY: u8 = 0x80;
}

/// Byte offsets of the base header fields (struct mail_index_header).
pub mod hdr_off {
    pub const MAJOR_VERSION: usize = 0;
    pub const MINOR_VERSION: usize = 1;
    pub const BASE_HEADER_SIZE: usize = 2;
    pub const HEADER_SIZE: usize = 4;
    pub const RECORD_SIZE: usize = 8;
    pub const COMPAT_FLAGS: usize = 12;
    pub const INDEXID: usize = 16;
    pub const FLAGS: usize = 20;
    pub const UID_VALIDITY: usize = 24;
    pub const NEXT_UID: usize = 28;
    pub const MESSAGES_COUNT: usize = 32;
    pub const UNUSED_OLD_RECENT_MESSAGES_COUNT: usize = 36;
    pub const SEEN_MESSAGES_COUNT: usize = 40;
    pub const DELETED_MESSAGES_COUNT: usize = 44;
    pub const FIRST_RECENT_UID: usize = 48;
    pub const FIRST_UNSEEN_UID_LOWWATER: usize = 52;
    pub const FIRST_DELETED_UID_LOWWATER: usize = 56;
    pub const LOG_FILE_SEQ: usize = 60;
    pub const LOG_FILE_TAIL_OFFSET: usize = 64;
    pub const LOG_FILE_HEAD_OFFSET: usize = 68;
    pub const UNUSED_OLD_SYNC_SIZE_PART1: usize = 72;
    pub const LOG2_ROTATE_TIME: usize = 76;
    pub const LAST_TEMP_FILE_SCAN: usize = 80;
    pub const DAY_STAMP: usize = 84;
    pub const DAY_FIRST_UID: usize = 88;
}

/// Byte offsets inside an extension header entry (struct mail_index_ext_header).
pub mod ext_off {
    pub const HDR_SIZE: usize = 0;
    pub const RESET_ID: usize = 4;
    pub const RECORD_OFFSET: usize = 8;
    pub const RECORD_SIZE: usize = 10;
    pub const RECORD_ALIGN: usize = 12;
    pub const NAME_SIZE: usize = 14;
    pub const NAME: usize = 16;
}

/// The 120-byte base header, all fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexHeader {
    pub major_version: u8,
    pub minor_version: u8,
    pub base_header_size: u16,
    pub header_size: u32,
    pub record_size: u32,
    pub compat_flags: u8,
    pub indexid: u32,
    pub flags: u32,
    pub uid_validity: u32,
    pub next_uid: u32,
    pub messages_count: u32,
    pub unused_old_recent_messages_count: u32,
    pub seen_messages_count: u32,
    pub deleted_messages_count: u32,
    pub first_recent_uid: u32,
    pub first_unseen_uid_lowwater: u32,
    pub first_deleted_uid_lowwater: u32,
    pub log_file_seq: u32,
    pub log_file_tail_offset: u32,
    pub log_file_head_offset: u32,
    pub unused_old_sync_size_part1: u32,
    pub log2_rotate_time: u32,
    pub last_temp_file_scan: u32,
    pub day_stamp: u32,
    pub day_first_uid: [u32; 8],
}

impl IndexHeader {
    /// A header for a new, empty index (mail-index-map.c mail_index_header_init).
    pub fn new(indexid: u32) -> IndexHeader {
        IndexHeader {
            major_version: MAJOR_VERSION,
            minor_version: MINOR_VERSION,
            base_header_size: BASE_HEADER_SIZE as u16,
            header_size: BASE_HEADER_SIZE as u32,
            record_size: RECORD_BASE_SIZE as u32,
            compat_flags: COMPAT_LITTLE_ENDIAN,
            indexid,
            log_file_seq: 1,
            next_uid: 1,
            first_recent_uid: 1,
            ..IndexHeader::default()
        }
    }

    /// Decodes the base header from its raw bytes; bytes missing past the end read as 0
    /// (mail_index_map_copy_hdr: a smaller base header leaves later fields zero).
    pub fn decode(base: &[u8]) -> IndexHeader {
        let mut b = [0u8; BASE_HEADER_SIZE];
        let n = base.len().min(BASE_HEADER_SIZE);
        b[..n].copy_from_slice(&base[..n]);
        let u32f = |off: usize| u32_at(&b, off).unwrap_or(0);
        let mut day_first_uid = [0u32; 8];
        for (i, d) in day_first_uid.iter_mut().enumerate() {
            *d = u32f(hdr_off::DAY_FIRST_UID + 4 * i);
        }
        IndexHeader {
            major_version: b[hdr_off::MAJOR_VERSION],
            minor_version: b[hdr_off::MINOR_VERSION],
            base_header_size: u16_at(&b, hdr_off::BASE_HEADER_SIZE).unwrap_or(0),
            header_size: u32f(hdr_off::HEADER_SIZE),
            record_size: u32f(hdr_off::RECORD_SIZE),
            compat_flags: b[hdr_off::COMPAT_FLAGS],
            indexid: u32f(hdr_off::INDEXID),
            flags: u32f(hdr_off::FLAGS),
            uid_validity: u32f(hdr_off::UID_VALIDITY),
            next_uid: u32f(hdr_off::NEXT_UID),
            messages_count: u32f(hdr_off::MESSAGES_COUNT),
            unused_old_recent_messages_count: u32f(hdr_off::UNUSED_OLD_RECENT_MESSAGES_COUNT),
            seen_messages_count: u32f(hdr_off::SEEN_MESSAGES_COUNT),
            deleted_messages_count: u32f(hdr_off::DELETED_MESSAGES_COUNT),
            first_recent_uid: u32f(hdr_off::FIRST_RECENT_UID),
            first_unseen_uid_lowwater: u32f(hdr_off::FIRST_UNSEEN_UID_LOWWATER),
            first_deleted_uid_lowwater: u32f(hdr_off::FIRST_DELETED_UID_LOWWATER),
            log_file_seq: u32f(hdr_off::LOG_FILE_SEQ),
            log_file_tail_offset: u32f(hdr_off::LOG_FILE_TAIL_OFFSET),
            log_file_head_offset: u32f(hdr_off::LOG_FILE_HEAD_OFFSET),
            unused_old_sync_size_part1: u32f(hdr_off::UNUSED_OLD_SYNC_SIZE_PART1),
            log2_rotate_time: u32f(hdr_off::LOG2_ROTATE_TIME),
            last_temp_file_scan: u32f(hdr_off::LAST_TEMP_FILE_SCAN),
            day_stamp: u32f(hdr_off::DAY_STAMP),
            day_first_uid,
        }
    }

    /// Writes every field into the first 120 bytes of `base` (grown if shorter).
    pub fn encode_into(&self, base: &mut Vec<u8>) {
        if base.len() < BASE_HEADER_SIZE {
            base.resize(BASE_HEADER_SIZE, 0);
        }
        base[hdr_off::MAJOR_VERSION] = self.major_version;
        base[hdr_off::MINOR_VERSION] = self.minor_version;
        put_u16(base, hdr_off::BASE_HEADER_SIZE, self.base_header_size);
        put_u32(base, hdr_off::HEADER_SIZE, self.header_size);
        put_u32(base, hdr_off::RECORD_SIZE, self.record_size);
        base[hdr_off::COMPAT_FLAGS] = self.compat_flags;
        base[13..16].fill(0);
        let fields = [
            (hdr_off::INDEXID, self.indexid),
            (hdr_off::FLAGS, self.flags),
            (hdr_off::UID_VALIDITY, self.uid_validity),
            (hdr_off::NEXT_UID, self.next_uid),
            (hdr_off::MESSAGES_COUNT, self.messages_count),
            (
                hdr_off::UNUSED_OLD_RECENT_MESSAGES_COUNT,
                self.unused_old_recent_messages_count,
            ),
            (hdr_off::SEEN_MESSAGES_COUNT, self.seen_messages_count),
            (hdr_off::DELETED_MESSAGES_COUNT, self.deleted_messages_count),
            (hdr_off::FIRST_RECENT_UID, self.first_recent_uid),
            (
                hdr_off::FIRST_UNSEEN_UID_LOWWATER,
                self.first_unseen_uid_lowwater,
            ),
            (
                hdr_off::FIRST_DELETED_UID_LOWWATER,
                self.first_deleted_uid_lowwater,
            ),
            (hdr_off::LOG_FILE_SEQ, self.log_file_seq),
            (hdr_off::LOG_FILE_TAIL_OFFSET, self.log_file_tail_offset),
            (hdr_off::LOG_FILE_HEAD_OFFSET, self.log_file_head_offset),
            (
                hdr_off::UNUSED_OLD_SYNC_SIZE_PART1,
                self.unused_old_sync_size_part1,
            ),
            (hdr_off::LOG2_ROTATE_TIME, self.log2_rotate_time),
            (hdr_off::LAST_TEMP_FILE_SCAN, self.last_temp_file_scan),
            (hdr_off::DAY_STAMP, self.day_stamp),
        ];
        for (off, v) in fields {
            put_u32(base, off, v);
        }
        for (i, d) in self.day_first_uid.iter().enumerate() {
            put_u32(base, hdr_off::DAY_FIRST_UID + 4 * i, *d);
        }
    }
}

/// One extension as listed in the index header (struct mail_index_ext_header + name + data).
/// Its position in [`IndexFile::extensions`] is its "ext_id" used by log EXT_INTRO records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    pub name: String,
    pub reset_id: u32,
    /// Offset of this extension inside each record (0 when `record_size` is 0).
    pub record_offset: u16,
    pub record_size: u16,
    pub record_align: u16,
    /// The extension header data (`hdr_size` bytes).
    pub data: Vec<u8>,
}

impl Extension {
    pub fn hdr_size(&self) -> u32 {
        self.data.len() as u32
    }
}

/// True for names Dovecot accepts (mail_index_ext_name_is_valid): ASCII alphanumerics,
/// `-`, `_`, space; shorter than 64.
pub fn ext_name_is_valid(name: &[u8]) -> bool {
    name.len() < EXT_NAME_MAX_LENGTH
        && name
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b' ')
}

/// mail_index_map_ext_hdr_check: validates an extension's sizes against the index record
/// size. `record_offset == 0` skips the placement checks (an intro before layout).
pub fn ext_hdr_check(
    index_record_size: u32,
    name: &[u8],
    hdr_size: u32,
    record_offset: u16,
    record_size: u16,
    record_align: u16,
) -> std::result::Result<(), String> {
    if record_size == 0 && hdr_size == 0 {
        return Err("Invalid field values".into());
    }
    if !ext_name_is_valid(name) {
        return Err("Invalid name".into());
    }
    if record_size != 0 {
        if record_align == 0 {
            return Err("Record field alignment is zero".into());
        }
        if record_align > 8 {
            return Err("Record alignment is too large".into());
        }
        if record_size >= EXT_RECORD_SIZE_LIMIT {
            return Err("Record size is too large".into());
        }
        if record_offset != 0 {
            if record_offset as u32 + record_size as u32 > index_record_size {
                return Err(format!(
                    "Record field points outside record size ({}+{} > {})",
                    record_offset, record_size, index_record_size
                ));
            }
            if !record_offset.is_multiple_of(record_align) {
                return Err(format!("Record field alignment {record_align} not used"));
            }
            if !index_record_size.is_multiple_of(record_align as u32) {
                return Err(format!(
                    "Record size not aligned by {record_align} as required by extension"
                ));
            }
        }
    }
    if hdr_size > EXT_HDR_MAX_SIZE {
        return Err(format!("Headersize too large ({hdr_size})"));
    }
    Ok(())
}

/// A decoded `dovecot.index` (or `dovecot.map.index`, `dovecot.list.index`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexFile {
    /// The raw base header (`base_header_size` bytes, at least 120). Header fields are read
    /// and written through [`IndexFile::header`] / [`IndexFile::set_header`]; bytes past 120
    /// are unknown fields kept as they are.
    pub base: Vec<u8>,
    pub extensions: Vec<Extension>,
    /// `messages_count` records of `record_size` bytes each.
    pub records: Vec<u8>,
}

impl IndexFile {
    /// A new, empty index (no extensions, no records).
    pub fn new(indexid: u32) -> IndexFile {
        let mut base = Vec::new();
        IndexHeader::new(indexid).encode_into(&mut base);
        IndexFile {
            base,
            extensions: Vec::new(),
            records: Vec::new(),
        }
    }

    pub fn header(&self) -> IndexHeader {
        IndexHeader::decode(&self.base)
    }

    pub fn set_header(&mut self, hdr: &IndexHeader) {
        hdr.encode_into(&mut self.base);
    }

    /// A base header u32 field (offset from [`hdr_off`]).
    pub fn hdr_u32(&self, off: usize) -> u32 {
        u32_at(&self.base, off).unwrap_or(0)
    }

    pub fn set_hdr_u32(&mut self, off: usize, v: u32) {
        put_u32(&mut self.base, off, v);
    }

    pub fn record_size(&self) -> usize {
        self.hdr_u32(hdr_off::RECORD_SIZE) as usize
    }

    /// Number of records held.
    pub fn records_count(&self) -> usize {
        self.records
            .len()
            .checked_div(self.record_size())
            .unwrap_or(0)
    }

    /// The raw record at 0-based position `idx`.
    pub fn record(&self, idx: usize) -> Option<&[u8]> {
        let rs = self.record_size();
        self.records.get(idx * rs..(idx + 1) * rs)
    }

    /// UID of the record at position `idx`.
    pub fn record_uid(&self, idx: usize) -> u32 {
        let rs = self.record_size();
        u32_at(&self.records, idx * rs).unwrap_or(0)
    }

    /// The position of the record of `uid` among the first `n` records, which are sorted by
    /// UID (mail_index_lookup_seq).
    pub fn position_of(&self, uid: u32, n: usize) -> Option<usize> {
        let i = partition_point(n, |i| self.record_uid(i) < uid);
        (i < n && self.record_uid(i) == uid).then_some(i)
    }

    /// Flags byte of the record at position `idx`.
    pub fn record_flags(&self, idx: usize) -> u8 {
        let rs = self.record_size();
        u8_at(&self.records, idx * rs + 4).unwrap_or(0)
    }

    /// Position of the extension called `name` (its ext_id).
    pub fn ext_index(&self, name: &str) -> Option<usize> {
        self.extensions.iter().position(|e| e.name == name)
    }

    pub fn ext(&self, name: &str) -> Option<&Extension> {
        self.extensions.iter().find(|e| e.name == name)
    }

    /// The bytes of extension `ext_idx` in the record at position `idx`.
    pub fn ext_record(&self, idx: usize, ext_idx: usize) -> Option<&[u8]> {
        let ext = self.extensions.get(ext_idx)?;
        if ext.record_size == 0 {
            return None;
        }
        let rec = self.record(idx)?;
        rec.get(ext.record_offset as usize..ext.record_offset as usize + ext.record_size as usize)
    }

    /// Total header size for the current extensions (base + padding + ext entries).
    pub fn computed_header_size(&self) -> usize {
        if self.extensions.is_empty() {
            return self.base.len();
        }
        let mut size = align8(self.base.len());
        for ext in &self.extensions {
            size += align8(EXT_HEADER_SIZE + ext.name.len()) + align8(ext.data.len());
        }
        size
    }

    /// Encodes the file. `header_size` and `messages_count` are taken from the structure.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.base.clone();
        let header_size = self.computed_header_size() as u32;
        put_u32(&mut out, hdr_off::HEADER_SIZE, header_size);
        put_u32(
            &mut out,
            hdr_off::MESSAGES_COUNT,
            self.records_count() as u32,
        );
        put_u16(&mut out, hdr_off::BASE_HEADER_SIZE, self.base.len() as u16);
        if !self.extensions.is_empty() {
            pad_to(&mut out, 8);
        }
        for ext in &self.extensions {
            let start = out.len();
            put_u32(&mut out, start + ext_off::HDR_SIZE, ext.data.len() as u32);
            put_u32(&mut out, start + ext_off::RESET_ID, ext.reset_id);
            put_u16(&mut out, start + ext_off::RECORD_OFFSET, ext.record_offset);
            put_u16(&mut out, start + ext_off::RECORD_SIZE, ext.record_size);
            put_u16(&mut out, start + ext_off::RECORD_ALIGN, ext.record_align);
            put_u16(&mut out, start + ext_off::NAME_SIZE, ext.name.len() as u16);
            put_bytes(&mut out, start + ext_off::NAME, ext.name.as_bytes());
            pad_to(&mut out, 8);
            out.extend_from_slice(&ext.data);
            pad_to(&mut out, 8);
        }
        // header_size might not be 8-aligned when there are no extensions.
        out.resize(header_size as usize, 0);
        out.extend_from_slice(&self.records);
        out
    }

    /// Decodes and validates a whole index file with Dovecot's checks
    /// (mail_index_try_read_map, mail_index_check_header_compat, mail_index_map_check_header,
    /// mail_index_map_parse_extensions, mail_index_map_parse_keywords). Dovecot treats every
    /// failure here as "rebuild the index"; this returns the reason as an error.
    pub fn decode(data: &[u8], path: &Path) -> Result<IndexFile> {
        IndexFile::decode_with(data, data.len() as u64, Records::All, path)
    }

    /// The header and extension headers of an index file of `file_len` bytes, from its
    /// first `header_size` bytes (`data`), holding only its last record (`last`, `None`
    /// when `messages_count` is 0). Validated as [`IndexFile::decode`] validates the whole
    /// file, except the order of the records it doesn't hold. `messages_count` stays the
    /// file's, so [`IndexFile::records_count`] is 0 or 1 here: a header-only map is for
    /// reading header fields, never for replaying record changes.
    pub fn decode_header_only(
        data: &[u8],
        file_len: u64,
        last: Option<&[u8]>,
        path: &Path,
    ) -> Result<IndexFile> {
        IndexFile::decode_with(data, file_len, Records::LastOnly(last), path)
    }

    /// [`IndexFile::decode_header_only`] of a whole file's bytes `data`.
    pub fn decode_header_of(data: &[u8], path: &Path) -> Result<IndexFile> {
        let h = IndexHeader::decode(data);
        let header_size = (h.header_size as usize).min(data.len());
        let record_size = h.record_size as usize;
        let last = match (h.messages_count as usize).checked_mul(record_size) {
            Some(0) => None,
            Some(len) => header_size
                .checked_add(len)
                .and_then(|end| data.get(end - record_size..end)),
            None => None,
        };
        IndexFile::decode_header_only(&data[..header_size], data.len() as u64, last, path)
    }

    fn decode_with(data: &[u8], file_len: u64, want: Records, path: &Path) -> Result<IndexFile> {
        let bad = |off: usize, reason: String| Err(Error::corrupt(path, off as u64, reason));
        if data.is_empty() {
            return bad(0, "File too small (0)".into());
        }
        if data[0] != MAJOR_VERSION {
            return bad(
                0,
                format!("Major version changed ({} != {})", data[0], MAJOR_VERSION),
            );
        }
        if data.len() < BASE_HEADER_SIZE {
            return bad(0, format!("File too small ({})", data.len()));
        }
        let hdr = IndexHeader::decode(data);
        if hdr.flags & hdr_flag::CORRUPTED != 0 {
            return bad(hdr_off::FLAGS, "Header's corrupted flag is set".into());
        }
        if hdr.compat_flags != COMPAT_LITTLE_ENDIAN {
            return bad(hdr_off::COMPAT_FLAGS, "CPU architecture changed".into());
        }
        if (hdr.base_header_size as usize) < BASE_HEADER_SIZE
            || hdr.header_size < hdr.base_header_size as u32
        {
            return bad(
                hdr_off::BASE_HEADER_SIZE,
                format!(
                    "Corrupted header sizes (base {}, full {})",
                    hdr.base_header_size, hdr.header_size
                ),
            );
        }
        if hdr.header_size as u64 > file_len || hdr.header_size as usize > data.len() {
            return bad(
                hdr_off::HEADER_SIZE,
                format!(
                    "Header size is larger than file ({} > {})",
                    hdr.header_size, file_len
                ),
            );
        }
        if (hdr.record_size as usize) < RECORD_BASE_SIZE {
            return bad(
                hdr_off::RECORD_SIZE,
                format!(
                    "record_size too small ({} < {})",
                    hdr.record_size, RECORD_BASE_SIZE
                ),
            );
        }
        let header_size = hdr.header_size as usize;
        let records_size = hdr.messages_count as u64 * hdr.record_size as u64;
        // Dovecot reads only messages_count records; a shorter file is corrupted
        // ("messages_count too large"), trailing bytes are ignored.
        if file_len - (header_size as u64) < records_size {
            return bad(
                hdr_off::MESSAGES_COUNT,
                format!(
                    "messages_count too large ({} > {})",
                    hdr.messages_count,
                    (file_len - header_size as u64) / hdr.record_size as u64
                ),
            );
        }
        let base = data[..hdr.base_header_size as usize].to_vec();
        let records = match want {
            Records::All => data[header_size..header_size + records_size as usize].to_vec(),
            Records::LastOnly(last) => {
                let want_len = if hdr.messages_count == 0 {
                    0
                } else {
                    hdr.record_size as usize
                };
                let last = last.unwrap_or_default();
                if last.len() != want_len {
                    return bad(
                        header_size,
                        format!("last record: {} bytes, not {want_len}", last.len()),
                    );
                }
                last.to_vec()
            }
        };
        let mut file = IndexFile {
            base,
            extensions: Vec::new(),
            records,
        };
        file.upgrade_minor_version();
        let checked = match want {
            Records::All => file.check_header(),
            Records::LastOnly(_) => file.check_header_fields().and_then(|()| {
                file.check_last_uid(
                    file.records_count()
                        .checked_sub(1)
                        .map(|i| file.record_uid(i)),
                )
            }),
        };
        if let Err((off, reason)) = checked {
            return bad(off, reason);
        }
        file.extensions = parse_extensions(data, &hdr, path)?;
        if let Some(kw) = file.ext(crate::format::ext::KEYWORDS) {
            if let Err(reason) = crate::format::ext::KeywordsHeader::decode(&kw.data) {
                return bad(0, format!("keywords extension: {reason}"));
            }
        }
        Ok(file)
    }

    /// Silent upgrades of mail_index_map_check_header for minor versions < 3.
    fn upgrade_minor_version(&mut self) {
        let minor = self.base[hdr_off::MINOR_VERSION];
        if minor == 0 {
            self.set_hdr_u32(hdr_off::UNUSED_OLD_RECENT_MESSAGES_COUNT, 0);
            if self.hdr_u32(hdr_off::FIRST_RECENT_UID) == 0 {
                self.set_hdr_u32(hdr_off::FIRST_RECENT_UID, 1);
            }
        }
        if minor <= 1 {
            let rs = self.record_size();
            for i in 0..self.records_count() {
                self.records[i * rs + 4] &= !rec_flag::UNUSED_RECENT;
            }
            self.base[hdr_off::MINOR_VERSION] = MINOR_VERSION;
        }
        if minor <= 2 {
            self.set_hdr_u32(hdr_off::UNUSED_OLD_SYNC_SIZE_PART1, 0);
            self.set_hdr_u32(hdr_off::LOG2_ROTATE_TIME, 0);
            self.set_hdr_u32(hdr_off::LAST_TEMP_FILE_SCAN, 0);
        }
    }

    /// mail_index_map_check_header's consistency checks; `Err((offset, reason))`.
    pub fn check_header(&self) -> std::result::Result<(), (usize, String)> {
        self.check_header_fields()?;
        let h = self.header();
        if h.messages_count as usize > self.records_count() {
            return Err((
                hdr_off::MESSAGES_COUNT,
                format!(
                    "messages_count is higher in header than record map ({} > {})",
                    h.messages_count,
                    self.records_count()
                ),
            ));
        }
        // Records must be strictly ascending and below next_uid (the last-record check of
        // mail_index_map_check_header, extended to every record: lookups bisect by UID).
        let count = h.messages_count as usize;
        let rs = self.record_size();
        let at = |i: usize| h.header_size as usize + i * rs;
        // each record's UID, its first 4 bytes, read in one pass over whole records (a
        // record too short for a UID reads as record_uid does: past the end is 0)
        let last = if rs >= 4 {
            ascending_uids(
                self.records
                    .chunks_exact(rs)
                    .take(count)
                    .map(|r| u32::from_le_bytes([r[0], r[1], r[2], r[3]])),
                at,
            )?
        } else {
            ascending_uids((0..count).map(|i| self.record_uid(i)), at)?
        };
        self.check_last_uid(last)
    }

    /// [`IndexFile::check_header`] for a map holding only some of the index's records (a
    /// sparse replay, [`crate::HeaderView`]): the header fields, and the records held
    /// ascending and below next_uid.
    pub(crate) fn check_header_of_held(&self) -> std::result::Result<(), (usize, String)> {
        self.check_header_fields()?;
        let h = self.header();
        let at = |i: usize| h.header_size as usize + i * self.record_size();
        let n = self.records_count();
        let last = ascending_uids((0..n).map(|i| self.record_uid(i)), at)?;
        self.check_last_uid(last)
    }

    /// The last record's UID must be below next_uid (and not 0).
    fn check_last_uid(&self, last: Option<u32>) -> std::result::Result<(), (usize, String)> {
        let h = self.header();
        match last {
            Some(0) => Err((
                h.header_size as usize,
                "record uids not ascending (0 after 0)".to_string(),
            )),
            Some(uid) if uid >= h.next_uid => Err((
                hdr_off::NEXT_UID,
                format!("last message uid {} >= next_uid {}", uid, h.next_uid),
            )),
            _ => Ok(()),
        }
    }

    /// The checks of [`IndexFile::check_header`] that read only the base header.
    fn check_header_fields(&self) -> std::result::Result<(), (usize, String)> {
        let h = self.header();
        if h.uid_validity == 0 && h.next_uid != 1 {
            return Err((
                hdr_off::UID_VALIDITY,
                format!("uidvalidity=0, but next_uid={}", h.next_uid),
            ));
        }
        if h.next_uid == 0 {
            return Err((hdr_off::NEXT_UID, "next_uid=0".into()));
        }
        if h.seen_messages_count > h.messages_count {
            return Err((
                hdr_off::SEEN_MESSAGES_COUNT,
                format!(
                    "seen_messages_count {} > messages_count {}",
                    h.seen_messages_count, h.messages_count
                ),
            ));
        }
        if h.deleted_messages_count > h.messages_count {
            return Err((
                hdr_off::DELETED_MESSAGES_COUNT,
                format!(
                    "deleted_messages_count {} > messages_count {}",
                    h.deleted_messages_count, h.messages_count
                ),
            ));
        }
        if h.first_recent_uid == 0 {
            return Err((hdr_off::FIRST_RECENT_UID, "first_recent_uid=0".into()));
        }
        if h.first_recent_uid > h.next_uid {
            return Err((
                hdr_off::FIRST_RECENT_UID,
                format!(
                    "first_recent_uid {} > next_uid {}",
                    h.first_recent_uid, h.next_uid
                ),
            ));
        }
        if h.first_unseen_uid_lowwater > h.next_uid {
            return Err((
                hdr_off::FIRST_UNSEEN_UID_LOWWATER,
                format!(
                    "first_unseen_uid_lowwater {} > next_uid {}",
                    h.first_unseen_uid_lowwater, h.next_uid
                ),
            ));
        }
        if h.first_deleted_uid_lowwater > h.next_uid {
            return Err((
                hdr_off::FIRST_DELETED_UID_LOWWATER,
                format!(
                    "first_deleted_uid_lowwater {} > next_uid {}",
                    h.first_deleted_uid_lowwater, h.next_uid
                ),
            ));
        }
        Ok(())
    }
}

/// What [`IndexFile::decode_with`] keeps of the records.
#[derive(Clone, Copy)]
enum Records<'a> {
    All,
    /// Only the last record (`None`: the file has none).
    LastOnly(Option<&'a [u8]>),
}

/// mail_index_map_parse_extensions + mail_index_map_ext_get_next.
fn parse_extensions(data: &[u8], hdr: &IndexHeader, path: &Path) -> Result<Vec<Extension>> {
    let header_size = hdr.header_size as usize;
    let mut offset = align8(hdr.base_header_size as usize);
    let mut exts: Vec<Extension> = Vec::new();
    let mut i = 0;
    while offset < header_size {
        let start = offset;
        let outside = |name: &str| {
            Err(Error::corrupt(
                path,
                start as u64,
                format!("Header extension #{i} ({name}) goes outside header"),
            ))
        };
        if offset + EXT_HEADER_SIZE >= header_size {
            return outside("");
        }
        let hdr_size = u32_at(data, offset + ext_off::HDR_SIZE).unwrap_or(0);
        let reset_id = u32_at(data, offset + ext_off::RESET_ID).unwrap_or(0);
        let record_offset = u16_at(data, offset + ext_off::RECORD_OFFSET).unwrap_or(0);
        let record_size = u16_at(data, offset + ext_off::RECORD_SIZE).unwrap_or(0);
        let record_align = u16_at(data, offset + ext_off::RECORD_ALIGN).unwrap_or(0);
        let name_size = u16_at(data, offset + ext_off::NAME_SIZE).unwrap_or(0) as usize;
        let data_off = offset + align8(EXT_HEADER_SIZE + name_size);
        if data_off > header_size {
            return outside("");
        }
        let name_bytes = &data[offset + EXT_HEADER_SIZE..offset + EXT_HEADER_SIZE + name_size];
        let name = if name_bytes.iter().all(|&c| (0x20..0x7f).contains(&c)) {
            String::from_utf8_lossy(name_bytes).into_owned()
        } else {
            String::new()
        };
        let end = (data_off as u64) + align8(hdr_size as usize) as u64;
        if end > header_size as u64 {
            return outside(&name);
        }
        if let Err(reason) = ext_hdr_check(
            hdr.record_size,
            name.as_bytes(),
            hdr_size,
            record_offset,
            record_size,
            record_align,
        ) {
            return Err(Error::corrupt(
                path,
                start as u64,
                format!("Broken extension #{i} ({name}): {reason}"),
            ));
        }
        if name.is_empty() {
            return Err(Error::corrupt(
                path,
                start as u64,
                format!("Broken extension #{i} (): Invalid name"),
            ));
        }
        if exts.iter().any(|e| e.name == name) {
            return Err(Error::corrupt(
                path,
                start as u64,
                format!("Duplicate header extension {name}"),
            ));
        }
        exts.push(Extension {
            name,
            reset_id,
            record_offset,
            record_size,
            record_align,
            data: data[data_off..data_off + hdr_size as usize].to_vec(),
        });
        offset = end as usize;
        i += 1;
    }
    Ok(exts)
}

/// First position in `0..n` where `pred` is false (`pred` must be true-then-false).
pub(crate) fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The last of `uids` when they are strictly ascending from 1 up (`None` for none), else
/// where (`at(i)` of the i-th) and why not.
fn ascending_uids(
    uids: impl Iterator<Item = u32>,
    at: impl Fn(usize) -> usize,
) -> std::result::Result<Option<u32>, (usize, String)> {
    let mut prev = 0u32;
    for (i, uid) in uids.enumerate() {
        if uid <= prev {
            return Err((
                at(i),
                format!("record uids not ascending ({uid} after {prev})"),
            ));
        }
        prev = uid;
    }
    Ok((prev != 0).then_some(prev))
}
