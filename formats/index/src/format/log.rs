//! `dovecot.index.log` / `.log.2`: file header, record header with the 7-bit size
//! encoding, every transaction record type (src/lib-index/mail-transaction-log.h,
//! mail-transaction-log-file.c, mail-transaction-log-view.c, mail-transaction-log-append.c).
//! Byte tables: FORMAT.md §2.

use std::path::Path;

use super::codec::{
    align4, offset_to_u32, pad_to, put_u16, put_u32, put_u64, u16_at, u32_at, u32_to_offset,
    u64_at, u8_at,
};
use crate::error::{Error, Result};

pub const MAJOR_VERSION: u8 = 1;
pub const MINOR_VERSION: u8 = 3;
/// sizeof(struct mail_transaction_log_header).
pub const HEADER_SIZE: usize = 40;
/// MAIL_TRANSACTION_LOG_HEADER_MIN_SIZE.
pub const HEADER_MIN_SIZE: usize = 24;
/// sizeof(struct mail_transaction_header).
pub const RECORD_HEADER_SIZE: usize = 8;

/// Byte offsets of the log file header fields.
pub mod hdr_off {
    pub const MAJOR_VERSION: usize = 0;
    pub const MINOR_VERSION: usize = 1;
    pub const HDR_SIZE: usize = 2;
    pub const INDEXID: usize = 4;
    pub const FILE_SEQ: usize = 8;
    pub const PREV_FILE_SEQ: usize = 12;
    pub const PREV_FILE_OFFSET: usize = 16;
    pub const CREATE_STAMP: usize = 20;
    pub const INITIAL_MODSEQ: usize = 24;
    pub const COMPAT_FLAGS: usize = 32;
}

/// Byte offsets of a record header (struct mail_transaction_header).
pub mod rec_off {
    /// u32, 7-bit encoded (codec::offset_to_u32), total size incl. this header.
    pub const SIZE: usize = 0;
    /// u32 LE, type | flags.
    pub const TYPE: usize = 4;
}

/// enum mail_transaction_type.
pub mod rec_type {
    pub const EXPUNGE: u32 = 0x0000_0001;
    pub const APPEND: u32 = 0x0000_0002;
    pub const FLAG_UPDATE: u32 = 0x0000_0004;
    pub const HEADER_UPDATE: u32 = 0x0000_0020;
    pub const EXT_INTRO: u32 = 0x0000_0040;
    pub const EXT_RESET: u32 = 0x0000_0080;
    pub const EXT_HDR_UPDATE: u32 = 0x0000_0100;
    pub const EXT_REC_UPDATE: u32 = 0x0000_0200;
    pub const KEYWORD_UPDATE: u32 = 0x0000_0400;
    pub const KEYWORD_RESET: u32 = 0x0000_0800;
    pub const EXT_ATOMIC_INC: u32 = 0x0000_1000;
    pub const EXPUNGE_GUID: u32 = 0x0000_2000;
    pub const MODSEQ_UPDATE: u32 = 0x0000_8000;
    pub const EXT_HDR_UPDATE32: u32 = 0x0001_0000;
    pub const INDEX_DELETED: u32 = 0x0002_0000;
    pub const INDEX_UNDELETED: u32 = 0x0004_0000;
    pub const BOUNDARY: u32 = 0x0008_0000;
    pub const ATTRIBUTE_UPDATE: u32 = 0x0010_0000;
    /// Type without the flags.
    pub const TYPE_MASK: u32 = 0x0fff_ffff;
    /// ORed into EXPUNGE and EXPUNGE_GUID; without it the log is corrupted.
    pub const EXPUNGE_PROT: u32 = 0x0000_cd90;
    /// The change already happened in the backend.
    pub const EXTERNAL: u32 = 0x1000_0000;
    /// The change syncs with another mailbox (dsync).
    pub const SYNC: u32 = 0x2000_0000;
}

/// struct mail_transaction_ext_intro flags.
pub const EXT_INTRO_FLAG_NO_SHRINK: u16 = 0x01;
/// EXT_INTRO ext_id meaning "look up by name".
pub const EXT_ID_BY_NAME: u32 = u32::MAX;

/// The 40-byte log file header (struct mail_transaction_log_header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogHeader {
    pub major_version: u8,
    pub minor_version: u8,
    pub hdr_size: u16,
    pub indexid: u32,
    pub file_seq: u32,
    pub prev_file_seq: u32,
    pub prev_file_offset: u32,
    pub create_stamp: u32,
    pub initial_modseq: u64,
    pub compat_flags: u8,
}

impl LogHeader {
    /// A v1.3 header for a new log file.
    pub fn new(indexid: u32, file_seq: u32, initial_modseq: u64, create_stamp: u32) -> LogHeader {
        LogHeader {
            major_version: MAJOR_VERSION,
            minor_version: MINOR_VERSION,
            hdr_size: HEADER_SIZE as u16,
            indexid,
            file_seq,
            prev_file_seq: 0,
            prev_file_offset: 0,
            create_stamp,
            initial_modseq: initial_modseq.max(1),
            compat_flags: super::index::COMPAT_LITTLE_ENDIAN,
        }
    }

    /// MAIL_TRANSACTION_LOG_HDR_VERSION: major << 8 | minor.
    pub fn version(&self) -> u16 {
        (self.major_version as u16) << 8 | self.minor_version as u16
    }

    /// Decodes the header fields without validation; fields past `hdr_size` (or the data)
    /// read as 0 (mail_transaction_log_file_read_hdr).
    pub fn decode_raw(data: &[u8]) -> LogHeader {
        let mut b = [0u8; HEADER_SIZE];
        let n = data.len().min(HEADER_SIZE);
        b[..n].copy_from_slice(&data[..n]);
        let hdr_size = u16_at(&b, hdr_off::HDR_SIZE).unwrap_or(0) as usize;
        if hdr_size < HEADER_SIZE {
            b[hdr_size.min(HEADER_SIZE)..].fill(0);
        }
        LogHeader {
            major_version: b[hdr_off::MAJOR_VERSION],
            minor_version: b[hdr_off::MINOR_VERSION],
            hdr_size: hdr_size as u16,
            indexid: u32_at(&b, hdr_off::INDEXID).unwrap_or(0),
            file_seq: u32_at(&b, hdr_off::FILE_SEQ).unwrap_or(0),
            prev_file_seq: u32_at(&b, hdr_off::PREV_FILE_SEQ).unwrap_or(0),
            prev_file_offset: u32_at(&b, hdr_off::PREV_FILE_OFFSET).unwrap_or(0),
            create_stamp: u32_at(&b, hdr_off::CREATE_STAMP).unwrap_or(0),
            initial_modseq: u64_at(&b, hdr_off::INITIAL_MODSEQ).unwrap_or(0),
            compat_flags: b[hdr_off::COMPAT_FLAGS],
        }
    }

    /// Decodes and validates as Dovecot does when opening a log.
    pub fn decode(data: &[u8], path: &Path) -> Result<LogHeader> {
        let bad = |off: usize, r: &str| Err(Error::corrupt(path, off as u64, r));
        if data.is_empty() {
            return bad(0, "empty file");
        }
        if data[0] != MAJOR_VERSION {
            return bad(
                0,
                &format!(
                    "incompatible major version {} (want {MAJOR_VERSION})",
                    data[0]
                ),
            );
        }
        if data.len() < HEADER_MIN_SIZE {
            return bad(0, "unexpected end of file while reading header");
        }
        let hdr = LogHeader::decode_raw(data);
        if hdr.version() >= 0x0102 && hdr.compat_flags != super::index::COMPAT_LITTLE_ENDIAN {
            return bad(hdr_off::COMPAT_FLAGS, "CPU architecture changed");
        }
        if (hdr.hdr_size as usize) < HEADER_MIN_SIZE {
            return bad(hdr_off::HDR_SIZE, "Header size too small");
        }
        if hdr.indexid == 0 {
            return bad(hdr_off::INDEXID, "marked corrupted (indexid=0)");
        }
        Ok(hdr)
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut v = Vec::with_capacity(HEADER_SIZE);
        v.push(self.major_version);
        v.push(self.minor_version);
        put_u16(&mut v, hdr_off::HDR_SIZE, HEADER_SIZE as u16);
        put_u32(&mut v, hdr_off::INDEXID, self.indexid);
        put_u32(&mut v, hdr_off::FILE_SEQ, self.file_seq);
        put_u32(&mut v, hdr_off::PREV_FILE_SEQ, self.prev_file_seq);
        put_u32(&mut v, hdr_off::PREV_FILE_OFFSET, self.prev_file_offset);
        put_u32(&mut v, hdr_off::CREATE_STAMP, self.create_stamp);
        put_u64(&mut v, hdr_off::INITIAL_MODSEQ, self.initial_modseq);
        v.resize(HEADER_SIZE, 0);
        v[hdr_off::COMPAT_FLAGS] = self.compat_flags;
        let mut out = [0u8; HEADER_SIZE];
        out.copy_from_slice(&v);
        out
    }
}

/// A UID range `uid1..=uid2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UidRange {
    pub uid1: u32,
    pub uid2: u32,
}

/// One APPEND entry (struct mail_index_record as stored in the log: 8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendRecord {
    pub uid: u32,
    pub flags: u8,
    /// Struct padding, kept as found (Dovecot copies these bytes into the new record).
    pub pad: [u8; 3],
}

/// struct mail_transaction_flag_update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagUpdate {
    pub uid1: u32,
    pub uid2: u32,
    pub add_flags: u8,
    /// 0xff together with `add_flags` = replace all flags.
    pub remove_flags: u8,
    pub modseq_inc_flag: u8,
    pub padding: u8,
}

impl FlagUpdate {
    /// MAIL_TRANSACTION_FLAG_UPDATE_IS_INTERNAL: changes no IMAP flag and forces no modseq.
    pub fn is_internal(&self) -> bool {
        (self.add_flags | self.remove_flags) & super::index::rec_flag::SYSTEM_MASK == 0
            && self.modseq_inc_flag == 0
    }
}

/// One item of HEADER_UPDATE / EXT_HDR_UPDATE / EXT_HDR_UPDATE32.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderPatch {
    pub offset: u32,
    pub data: Vec<u8>,
}

/// struct mail_transaction_ext_intro + name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtIntro {
    /// Position in the current map's extension list, or [`EXT_ID_BY_NAME`].
    pub ext_id: u32,
    pub reset_id: u32,
    pub hdr_size: u32,
    pub record_size: u16,
    pub record_align: u16,
    pub flags: u16,
    pub name: Vec<u8>,
}

/// struct mail_transaction_ext_reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtReset {
    pub new_reset_id: u32,
    pub preserve_data: u8,
}

/// struct mail_transaction_keyword_update + name + uid ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeywordUpdate {
    /// 0 = add (MODIFY_ADD), 1 = remove (MODIFY_REMOVE).
    pub modify_type: u8,
    pub name: Vec<u8>,
    pub uids: Vec<UidRange>,
}

/// struct mail_transaction_ext_atomic_inc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtomicInc {
    pub uid: u32,
    pub diff: i32,
}

/// struct mail_transaction_expunge_guid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpungeGuid {
    pub uid: u32,
    /// All zero = don't check.
    pub guid: [u8; 16],
}

/// struct mail_transaction_modseq_update (uid 0 = the highest modseq itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModseqUpdate {
    pub uid: u32,
    pub modseq: u64,
}

/// One change of an ATTRIBUTE_UPDATE record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeChange {
    /// `+` set, `-` unset.
    pub set: bool,
    /// `p` private, `s` shared.
    pub private: bool,
    pub key: Vec<u8>,
    pub timestamp: u32,
    /// Length of the value (set only).
    pub value_len: Option<u32>,
}

/// The typed payload of a log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordBody {
    Expunge(Vec<UidRange>),
    Append(Vec<AppendRecord>),
    FlagUpdate(Vec<FlagUpdate>),
    HeaderUpdate(Vec<HeaderPatch>),
    ExtIntro(Vec<ExtIntro>),
    ExtReset(ExtReset),
    ExtHdrUpdate(Vec<HeaderPatch>),
    ExtHdrUpdate32(Vec<HeaderPatch>),
    /// Entries are {u32 uid, data[record_size of the preceding intro], pad to 4}; the size
    /// is not known from the record alone, so the payload is kept raw
    /// (see [`ext_rec_entries`]).
    ExtRecUpdate(Vec<u8>),
    KeywordUpdate(KeywordUpdate),
    KeywordReset(Vec<UidRange>),
    ExtAtomicInc(Vec<AtomicInc>),
    ExpungeGuid(Vec<ExpungeGuid>),
    ModseqUpdate(Vec<ModseqUpdate>),
    IndexDeleted,
    IndexUndeleted,
    /// Byte length of the whole transaction including this record.
    Boundary(u32),
    AttributeUpdate(Vec<AttributeChange>),
    /// A type this crate doesn't know: payload kept as is.
    Unknown(Vec<u8>),
}

/// The size of one EXT_REC_UPDATE entry ({uid, data, pad4}) of an extension with
/// `record_size` bytes per record.
pub fn ext_rec_stride(record_size: u16) -> usize {
    align4(4 + record_size as usize)
}

/// The whole entries at the start of an EXT_REC_UPDATE payload (all of it unless the last
/// entry is partial): what Dovecot applies before it complains about the rest.
pub fn ext_rec_whole(payload: &[u8], record_size: u16) -> &[u8] {
    &payload[..payload.len() - payload.len() % ext_rec_stride(record_size)]
}

/// Splits an EXT_REC_UPDATE payload into (uid, data) entries for an extension with
/// `record_size` bytes per record. `None` when the payload isn't a whole number of entries.
pub fn ext_rec_entries(payload: &[u8], record_size: u16) -> Option<Vec<(u32, &[u8])>> {
    let stride = ext_rec_stride(record_size);
    if !payload.len().is_multiple_of(stride) {
        return None;
    }
    Some(
        payload
            .chunks(stride)
            .map(|c| (u32_at(c, 0).unwrap_or(0), &c[4..4 + record_size as usize]))
            .collect(),
    )
}

/// Encodes EXT_REC_UPDATE entries ({uid, data, pad4} each).
pub fn encode_ext_rec_entries(entries: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (uid, data) in entries {
        out.extend_from_slice(&uid.to_le_bytes());
        out.extend_from_slice(data);
        pad_to(&mut out, 4);
    }
    out
}

/// A record type as Dovecot names it in errors: `type=0x…`.
struct RecordName(u32);

impl std::fmt::Display for RecordName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "type=0x{:x}", self.0)
    }
}

fn uid_ranges(data: &[u8], rec: &RecordName) -> std::result::Result<Vec<UidRange>, String> {
    if !data.len().is_multiple_of(8) {
        return Err(format!("Invalid record size ({rec})"));
    }
    if data.is_empty() {
        return Err(format!("No UID ranges ({rec})"));
    }
    let mut out: Vec<UidRange> = Vec::with_capacity(data.len() / 8);
    for c in data.chunks(8) {
        let r = UidRange {
            uid1: u32_at(c, 0).unwrap_or(0),
            uid2: u32_at(c, 4).unwrap_or(0),
        };
        if r.uid1 > r.uid2 || r.uid1 == 0 {
            return Err(format!(
                "Invalid UID range ({} .. {}, {rec})",
                r.uid1, r.uid2
            ));
        }
        if let Some(prev) = out.last() {
            if r.uid1 <= prev.uid2 {
                return Err(format!("Non-sorted UID ranges ({rec})"));
            }
        }
        out.push(r);
    }
    Ok(out)
}

fn patches(data: &[u8], wide: bool, what: &str) -> std::result::Result<Vec<HeaderPatch>, String> {
    let item_hdr = if wide { 8 } else { 4 };
    let mut out = Vec::new();
    let mut i = 0usize;
    while i < data.len() {
        if i + item_hdr > data.len() {
            return Err(format!("{what}: invalid record size"));
        }
        let (offset, size) = if wide {
            (
                u32_at(data, i).unwrap_or(0),
                u32_at(data, i + 4).unwrap_or(0) as usize,
            )
        } else {
            (
                u16_at(data, i).unwrap_or(0) as u32,
                u16_at(data, i + 2).unwrap_or(0) as usize,
            )
        };
        let start = i + item_hdr;
        if size > data.len() - start {
            return Err(format!("{what}: invalid record size"));
        }
        out.push(HeaderPatch {
            offset,
            data: data[start..start + size].to_vec(),
        });
        i = align4(start + size);
    }
    Ok(out)
}

impl RecordBody {
    /// Decodes a payload of type `type_raw` (type | flags as on disk), with the validity
    /// checks of log_view_is_record_valid and the size checks of the sync code. `Err` is
    /// the corruption reason Dovecot would give.
    pub fn decode(type_raw: u32, data: &[u8]) -> std::result::Result<RecordBody, String> {
        let t = type_raw & rec_type::TYPE_MASK;
        if type_raw & rec_type::EXPUNGE != 0 && t != rec_type::EXPUNGE | rec_type::EXPUNGE_PROT {
            return Err("expunge record missing protection mask".into());
        }
        if type_raw & rec_type::EXPUNGE_GUID != 0
            && t != rec_type::EXPUNGE_GUID | rec_type::EXPUNGE_PROT
        {
            return Err("expunge guid record missing protection mask".into());
        }
        if data.is_empty() {
            return Err(format!("Empty record contents (type=0x{t:x})"));
        }
        // the record's name in error messages ("type=0x…"), formatted only on error
        let name = RecordName(t);
        Ok(match t {
            x if x == rec_type::EXPUNGE | rec_type::EXPUNGE_PROT => {
                RecordBody::Expunge(uid_ranges(data, &name)?)
            }
            x if x == rec_type::EXPUNGE_GUID | rec_type::EXPUNGE_PROT => {
                if !data.len().is_multiple_of(20) {
                    return Err("Invalid expunge guid record size".into());
                }
                let mut v = Vec::new();
                for c in data.chunks(20) {
                    let uid = u32_at(c, 0).unwrap_or(0);
                    if uid == 0 {
                        return Err("Expunge guid record with uid=0".into());
                    }
                    let mut guid = [0u8; 16];
                    guid.copy_from_slice(&c[4..20]);
                    v.push(ExpungeGuid { uid, guid });
                }
                RecordBody::ExpungeGuid(v)
            }
            rec_type::APPEND => {
                if !data.len().is_multiple_of(8) {
                    return Err("Invalid append record size".into());
                }
                RecordBody::Append(
                    data.chunks(8)
                        .map(|c| AppendRecord {
                            uid: u32_at(c, 0).unwrap_or(0),
                            flags: c[4],
                            pad: [c[5], c[6], c[7]],
                        })
                        .collect(),
                )
            }
            rec_type::FLAG_UPDATE => {
                if !data.len().is_multiple_of(12) {
                    return Err(format!("Invalid record size ({name})"));
                }
                let ranges = data
                    .chunks(12)
                    .flat_map(|c| c[..8].to_vec())
                    .collect::<Vec<u8>>();
                uid_ranges(&ranges, &name)?;
                RecordBody::FlagUpdate(
                    data.chunks(12)
                        .map(|c| FlagUpdate {
                            uid1: u32_at(c, 0).unwrap_or(0),
                            uid2: u32_at(c, 4).unwrap_or(0),
                            add_flags: c[8],
                            remove_flags: c[9],
                            modseq_inc_flag: c[10],
                            padding: c[11],
                        })
                        .collect(),
                )
            }
            rec_type::HEADER_UPDATE => {
                RecordBody::HeaderUpdate(patches(data, false, "header update")?)
            }
            rec_type::EXT_INTRO => {
                let mut v = Vec::new();
                let mut i = 0usize;
                while i + 20 <= data.len() {
                    let name_size = u16_at(data, i + 18).unwrap_or(0) as usize;
                    if i + 20 + name_size > data.len() {
                        return Err("ext intro: name_size too large".into());
                    }
                    v.push(ExtIntro {
                        ext_id: u32_at(data, i).unwrap_or(0),
                        reset_id: u32_at(data, i + 4).unwrap_or(0),
                        hdr_size: u32_at(data, i + 8).unwrap_or(0),
                        record_size: u16_at(data, i + 12).unwrap_or(0),
                        record_align: u16_at(data, i + 14).unwrap_or(0),
                        flags: u16_at(data, i + 16).unwrap_or(0),
                        name: data[i + 20..i + 20 + name_size].to_vec(),
                    });
                    i = align4(i + 20 + name_size);
                }
                RecordBody::ExtIntro(v)
            }
            rec_type::EXT_RESET => {
                if data.len() < 4 {
                    return Err("ext reset: invalid record size".into());
                }
                RecordBody::ExtReset(ExtReset {
                    new_reset_id: u32_at(data, 0).unwrap_or(0),
                    preserve_data: u8_at(data, 4).unwrap_or(0),
                })
            }
            rec_type::EXT_HDR_UPDATE => {
                RecordBody::ExtHdrUpdate(patches(data, false, "ext hdr update")?)
            }
            rec_type::EXT_HDR_UPDATE32 => {
                RecordBody::ExtHdrUpdate32(patches(data, true, "ext hdr update")?)
            }
            rec_type::EXT_REC_UPDATE => RecordBody::ExtRecUpdate(data.to_vec()),
            rec_type::KEYWORD_UPDATE => {
                let name_size = u16_at(data, 2).unwrap_or(0) as usize;
                let seqset = align4(4 + name_size);
                if name_size == 0 {
                    return Err("Trying to use empty keyword".into());
                }
                if data.len() < 4 || seqset > data.len() {
                    return Err("Invalid keyword update record size".into());
                }
                RecordBody::KeywordUpdate(KeywordUpdate {
                    modify_type: data[0],
                    name: data[4..4 + name_size].to_vec(),
                    uids: uid_ranges(&data[seqset..], &name)?,
                })
            }
            rec_type::KEYWORD_RESET => RecordBody::KeywordReset(uid_ranges(data, &name)?),
            rec_type::EXT_ATOMIC_INC => {
                if !data.len().is_multiple_of(8) {
                    return Err(format!("Invalid record size ({name})"));
                }
                RecordBody::ExtAtomicInc(
                    data.chunks(8)
                        .map(|c| AtomicInc {
                            uid: u32_at(c, 0).unwrap_or(0),
                            diff: u32_at(c, 4).unwrap_or(0) as i32,
                        })
                        .collect(),
                )
            }
            rec_type::MODSEQ_UPDATE => {
                if !data.len().is_multiple_of(12) {
                    return Err(format!("Invalid record size ({name})"));
                }
                RecordBody::ModseqUpdate(
                    data.chunks(12)
                        .map(|c| ModseqUpdate {
                            uid: u32_at(c, 0).unwrap_or(0),
                            modseq: u32_at(c, 4).unwrap_or(0) as u64
                                | (u32_at(c, 8).unwrap_or(0) as u64) << 32,
                        })
                        .collect(),
                )
            }
            rec_type::INDEX_DELETED => RecordBody::IndexDeleted,
            rec_type::INDEX_UNDELETED => RecordBody::IndexUndeleted,
            rec_type::BOUNDARY => RecordBody::Boundary(u32_at(data, 0).unwrap_or(0)),
            rec_type::ATTRIBUTE_UPDATE => RecordBody::AttributeUpdate(decode_attributes(data)?),
            _ => RecordBody::Unknown(data.to_vec()),
        })
    }

    /// The record type (without flags; expunges include EXPUNGE_PROT) for this body.
    pub fn type_code(&self) -> Option<u32> {
        Some(match self {
            RecordBody::Expunge(_) => rec_type::EXPUNGE | rec_type::EXPUNGE_PROT,
            RecordBody::Append(_) => rec_type::APPEND,
            RecordBody::FlagUpdate(_) => rec_type::FLAG_UPDATE,
            RecordBody::HeaderUpdate(_) => rec_type::HEADER_UPDATE,
            RecordBody::ExtIntro(_) => rec_type::EXT_INTRO,
            RecordBody::ExtReset(_) => rec_type::EXT_RESET,
            RecordBody::ExtHdrUpdate(_) => rec_type::EXT_HDR_UPDATE,
            RecordBody::ExtHdrUpdate32(_) => rec_type::EXT_HDR_UPDATE32,
            RecordBody::ExtRecUpdate(_) => rec_type::EXT_REC_UPDATE,
            RecordBody::KeywordUpdate(_) => rec_type::KEYWORD_UPDATE,
            RecordBody::KeywordReset(_) => rec_type::KEYWORD_RESET,
            RecordBody::ExtAtomicInc(_) => rec_type::EXT_ATOMIC_INC,
            RecordBody::ExpungeGuid(_) => rec_type::EXPUNGE_GUID | rec_type::EXPUNGE_PROT,
            RecordBody::ModseqUpdate(_) => rec_type::MODSEQ_UPDATE,
            RecordBody::IndexDeleted => rec_type::INDEX_DELETED,
            RecordBody::IndexUndeleted => rec_type::INDEX_UNDELETED,
            RecordBody::Boundary(_) => rec_type::BOUNDARY,
            RecordBody::AttributeUpdate(_) => rec_type::ATTRIBUTE_UPDATE,
            RecordBody::Unknown(_) => return None,
        })
    }

    /// Encodes the payload as Dovecot writes it (padded to 4 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let ranges = |out: &mut Vec<u8>, r: &[UidRange]| {
            for u in r {
                out.extend_from_slice(&u.uid1.to_le_bytes());
                out.extend_from_slice(&u.uid2.to_le_bytes());
            }
        };
        match self {
            RecordBody::Expunge(r) | RecordBody::KeywordReset(r) => ranges(&mut out, r),
            RecordBody::Append(v) => {
                for a in v {
                    out.extend_from_slice(&a.uid.to_le_bytes());
                    out.push(a.flags);
                    out.extend_from_slice(&a.pad);
                }
            }
            RecordBody::FlagUpdate(v) => {
                for f in v {
                    out.extend_from_slice(&f.uid1.to_le_bytes());
                    out.extend_from_slice(&f.uid2.to_le_bytes());
                    out.extend_from_slice(&[
                        f.add_flags,
                        f.remove_flags,
                        f.modseq_inc_flag,
                        f.padding,
                    ]);
                }
            }
            RecordBody::HeaderUpdate(v) | RecordBody::ExtHdrUpdate(v) => {
                for p in v {
                    out.extend_from_slice(&(p.offset as u16).to_le_bytes());
                    out.extend_from_slice(&(p.data.len() as u16).to_le_bytes());
                    out.extend_from_slice(&p.data);
                    pad_to(&mut out, 4);
                }
            }
            RecordBody::ExtHdrUpdate32(v) => {
                for p in v {
                    out.extend_from_slice(&p.offset.to_le_bytes());
                    out.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
                    out.extend_from_slice(&p.data);
                    pad_to(&mut out, 4);
                }
            }
            RecordBody::ExtIntro(v) => {
                for i in v {
                    out.extend_from_slice(&i.ext_id.to_le_bytes());
                    out.extend_from_slice(&i.reset_id.to_le_bytes());
                    out.extend_from_slice(&i.hdr_size.to_le_bytes());
                    out.extend_from_slice(&i.record_size.to_le_bytes());
                    out.extend_from_slice(&i.record_align.to_le_bytes());
                    out.extend_from_slice(&i.flags.to_le_bytes());
                    out.extend_from_slice(&(i.name.len() as u16).to_le_bytes());
                    out.extend_from_slice(&i.name);
                    pad_to(&mut out, 4);
                }
            }
            RecordBody::ExtReset(r) => {
                out.extend_from_slice(&r.new_reset_id.to_le_bytes());
                out.extend_from_slice(&[r.preserve_data, 0, 0, 0]);
            }
            RecordBody::ExtRecUpdate(raw) | RecordBody::Unknown(raw) => {
                out.extend_from_slice(raw);
                pad_to(&mut out, 4);
            }
            RecordBody::KeywordUpdate(k) => {
                out.push(k.modify_type);
                out.push(0);
                out.extend_from_slice(&(k.name.len() as u16).to_le_bytes());
                out.extend_from_slice(&k.name);
                pad_to(&mut out, 4);
                ranges(&mut out, &k.uids);
            }
            RecordBody::ExtAtomicInc(v) => {
                for a in v {
                    out.extend_from_slice(&a.uid.to_le_bytes());
                    out.extend_from_slice(&a.diff.to_le_bytes());
                }
            }
            RecordBody::ExpungeGuid(v) => {
                for e in v {
                    out.extend_from_slice(&e.uid.to_le_bytes());
                    out.extend_from_slice(&e.guid);
                }
            }
            RecordBody::ModseqUpdate(v) => {
                for m in v {
                    out.extend_from_slice(&m.uid.to_le_bytes());
                    out.extend_from_slice(&(m.modseq as u32).to_le_bytes());
                    out.extend_from_slice(&((m.modseq >> 32) as u32).to_le_bytes());
                }
            }
            RecordBody::IndexDeleted | RecordBody::IndexUndeleted => out.extend_from_slice(&[0; 4]),
            RecordBody::Boundary(size) => out.extend_from_slice(&size.to_le_bytes()),
            RecordBody::AttributeUpdate(changes) => {
                for c in changes {
                    out.push(if c.set { b'+' } else { b'-' });
                    out.push(if c.private { b'p' } else { b's' });
                    out.extend_from_slice(&c.key);
                    out.push(0);
                }
                out.push(0);
                pad_to(&mut out, 4);
                for c in changes {
                    out.extend_from_slice(&c.timestamp.to_le_bytes());
                    if let Some(len) = c.value_len {
                        out.extend_from_slice(&len.to_le_bytes());
                    }
                }
            }
        }
        out
    }
}

fn decode_attributes(data: &[u8]) -> std::result::Result<Vec<AttributeChange>, String> {
    // log_view_is_record_valid, then the layout of doveadm-dump-log.c.
    let mut keys: Vec<(bool, bool, Vec<u8>)> = Vec::new();
    let mut i = 0usize;
    while i + 2 < data.len() && data[i] != 0 {
        let set = match data[i] {
            b'+' => true,
            b'-' => false,
            c => return Err(format!("attribute update: Invalid prefix 0x{c:02x}")),
        };
        let private = match data[i + 1] {
            b'p' => true,
            b's' => false,
            c => return Err(format!("attribute update: Invalid type 0x{c:02x}")),
        };
        i += 2;
        if data[i] == 0 {
            return Err("attribute update: Empty key".into());
        }
        let end = data[i..].iter().position(|&b| b == 0).map(|p| i + p);
        let Some(end) = end else {
            return Err("attribute update doesn't end with NUL".into());
        };
        keys.push((set, private, data[i..end].to_vec()));
        i = end + 1;
    }
    if i == 0 || (i < data.len() && data[i] != 0) {
        return Err("attribute update doesn't end with NUL".into());
    }
    let mut pos = align4(i + 1);
    let mut out = Vec::new();
    for (set, private, key) in keys {
        let timestamp = u32_at(data, pos).ok_or("attribute update: broken entry")?;
        pos += 4;
        let value_len = if set {
            let v = u32_at(data, pos).ok_or("attribute update: broken entry")?;
            pos += 4;
            Some(v)
        } else {
            None
        };
        out.push(AttributeChange {
            set,
            private,
            key,
            timestamp,
            value_len,
        });
    }
    Ok(out)
}

/// Encodes one whole record (header + payload) with `flags` (EXTERNAL/SYNC) ORed in, the
/// way mail_transaction_log_append_add does: expunges get EXPUNGE_PROT, BOUNDARY always
/// gets EXTERNAL.
pub fn encode_record(body: &RecordBody, flags: u32) -> Result<Vec<u8>> {
    let payload = body.encode();
    let t = body
        .type_code()
        .ok_or_else(|| Error::Invalid("can't encode a record of unknown type".into()))?;
    let mut type_raw = t | flags;
    if matches!(body, RecordBody::Boundary(_)) {
        type_raw |= rec_type::EXTERNAL;
    }
    encode_raw_record(type_raw, &payload)
}

/// Encodes a record header + payload for any type value.
pub fn encode_raw_record(type_raw: u32, payload: &[u8]) -> Result<Vec<u8>> {
    let size = (RECORD_HEADER_SIZE + payload.len()) as u32;
    let enc = u32_to_offset(size)
        .ok_or_else(|| Error::Invalid(format!("record size {size} can't be encoded")))?;
    let mut out = Vec::with_capacity(size as usize);
    out.extend_from_slice(&enc);
    out.extend_from_slice(&type_raw.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// mail_transaction_update_modseq: advances `cur` for one record.
pub fn update_modseq(type_raw: u32, body: &RecordBody, cur: &mut u64, version: u16) {
    let t = type_raw & rec_type::TYPE_MASK;
    if *cur == 0 {
        // modseqs not tracked yet: start at an intro of the "modseq" extension
        if t == rec_type::EXT_INTRO {
            if let RecordBody::ExtIntro(intros) = body {
                if intros.first().map(|i| i.name.as_slice()) == Some(b"modseq") {
                    *cur += 1;
                }
            }
        }
        return;
    }
    match body {
        RecordBody::Expunge(_) | RecordBody::ExpungeGuid(_)
            if type_raw & rec_type::EXTERNAL != 0 => {
                *cur += 1;
            }
        RecordBody::Append(_)
        | RecordBody::KeywordUpdate(_)
        | RecordBody::KeywordReset(_)
        | RecordBody::AttributeUpdate(_) => *cur += 1,
        RecordBody::FlagUpdate(v)
            // MAIL_TRANSACTION_LOG_VERSION_FEATURE_HIDE_INTERNAL_MODSEQS (1.3)
            if (version < 0x0103 || v.iter().any(|u| !u.is_internal())) => {
                *cur += 1;
            }
        RecordBody::ModseqUpdate(v) => {
            for m in v {
                if *cur < m.modseq {
                    *cur = m.modseq;
                }
            }
        }
        _ => {}
    }
}

/// One record of a log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Byte offset of the record header in the file.
    pub offset: u64,
    /// Total size (header + payload).
    pub size: u32,
    /// Type | flags as on disk.
    pub type_raw: u32,
    pub body: RecordBody,
    /// The log's modseq counter after this record (mail_transaction_update_modseq).
    pub modseq: u64,
}

impl LogRecord {
    pub fn is_external(&self) -> bool {
        self.type_raw & rec_type::EXTERNAL != 0
    }
    pub fn is_sync(&self) -> bool {
        self.type_raw & rec_type::SYNC != 0
    }
    /// Offset just past this record.
    pub fn end(&self) -> u64 {
        self.offset + self.size as u64
    }
}

/// Why reading a log file stopped before its end, if it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogStop {
    /// Every byte was consumed.
    Eof,
    /// A record at `offset` isn't completely written (size field 0 or data past EOF):
    /// an append in progress or a torn write.
    Unfinished { offset: u64 },
    /// A BOUNDARY at `offset` announces a transaction reaching past EOF: not yet written.
    BoundaryPastEof { offset: u64 },
    /// The record at `offset` is invalid; Dovecot marks the file corrupted here.
    Corrupt { offset: u64, reason: String },
}

/// A decoded log file: every complete, valid record from `first_offset` up to
/// `sync_offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFile {
    pub header: LogHeader,
    /// Where `records` start: the header's end for a whole file; later for the tail a
    /// writer reads ([`LogFile::decode_tail`]), whose earlier records were not read.
    pub first_offset: u64,
    /// The modseq counter at `first_offset`: the header's initial_modseq for a whole file.
    pub first_modseq: u64,
    pub records: Vec<LogRecord>,
    /// End of the last accepted record (Dovecot's sync_offset).
    pub sync_offset: u64,
    pub file_size: u64,
    pub stop: LogStop,
    /// The modseq counter at `sync_offset` (sync_highest_modseq).
    pub end_modseq: u64,
}

impl LogFile {
    /// Decodes a whole log file. Header problems are errors; a record problem ends the
    /// records there and is reported in `stop` (see [`LogFile::check`]).
    pub fn decode(data: &[u8], path: &Path) -> Result<LogFile> {
        let header = LogHeader::decode(data, path)?;
        let first = header.hdr_size as usize;
        let tail = data.get(first..).unwrap_or_default();
        let initial_modseq = header.initial_modseq;
        let mut file = LogFile::decode_records(header, tail, first as u64, initial_modseq);
        file.file_size = data.len() as u64;
        Ok(file)
    }

    /// The records from `from` on of a log whose first bytes are `head` (at least its
    /// header) and whose bytes from offset `from` to its end are `tail`; `from_modseq` is
    /// the modseq counter at `from`, and `from` must be where a record starts. Dovecot reads
    /// a log this way from the offset a view starts at (mail_transaction_log_file_read,
    /// which moves sync_offset up to the buffer's start): records before `from` are
    /// neither read nor checked. A wrong `from` shows as a record that doesn't decode.
    pub fn decode_tail(
        head: &[u8],
        tail: &[u8],
        from: u64,
        from_modseq: u64,
        path: &Path,
    ) -> Result<LogFile> {
        let header = LogHeader::decode(head, path)?;
        if from < header.hdr_size as u64 {
            return Err(Error::corrupt(
                path,
                from,
                format!("records asked from inside the header ({})", header.hdr_size),
            ));
        }
        Ok(LogFile::decode_records(header, tail, from, from_modseq))
    }

    /// The records in `data`, the file's bytes from offset `base` to its end.
    fn decode_records(header: LogHeader, data: &[u8], base: u64, base_modseq: u64) -> LogFile {
        let version = header.version();
        let mut pos = 0usize;
        let mut modseq = base_modseq;
        let mut records = Vec::new();
        let mut stop = LogStop::Eof;
        let at = |pos: usize| base + pos as u64;
        while pos < data.len() {
            if pos + RECORD_HEADER_SIZE > data.len() {
                stop = LogStop::Unfinished { offset: at(pos) };
                break;
            }
            let raw = [data[pos], data[pos + 1], data[pos + 2], data[pos + 3]];
            let size = offset_to_u32(raw) as usize;
            let type_raw = u32_at(data, pos + rec_off::TYPE).unwrap_or(0);
            if size == 0 {
                stop = LogStop::Unfinished { offset: at(pos) };
                break;
            }
            if size < RECORD_HEADER_SIZE {
                stop = LogStop::Corrupt {
                    offset: at(pos),
                    reason: format!("hdr.size too small ({size})"),
                };
                break;
            }
            if size > data.len() - pos {
                stop = LogStop::Unfinished { offset: at(pos) };
                break;
            }
            let payload = &data[pos + RECORD_HEADER_SIZE..pos + size];
            // log_file_track_sync: an external BOUNDARY whose transaction isn't complete
            // means the rest hasn't been written yet.
            if type_raw & rec_type::TYPE_MASK == rec_type::BOUNDARY
                && type_raw & rec_type::EXTERNAL != 0
            {
                let tsize = u32_at(payload, 0).unwrap_or(0) as usize;
                if tsize > data.len() - pos {
                    stop = LogStop::BoundaryPastEof { offset: at(pos) };
                    break;
                }
            }
            let body = match RecordBody::decode(type_raw, payload) {
                Ok(b) => b,
                Err(reason) => {
                    stop = LogStop::Corrupt {
                        offset: at(pos),
                        reason,
                    };
                    break;
                }
            };
            update_modseq(type_raw, &body, &mut modseq, version);
            records.push(LogRecord {
                offset: at(pos),
                size: size as u32,
                type_raw,
                body,
                modseq,
            });
            pos += size;
        }
        let sync_offset = records.last().map(|r| r.end()).unwrap_or(base);
        LogFile {
            header,
            first_offset: base,
            first_modseq: base_modseq,
            records,
            sync_offset,
            file_size: base + data.len() as u64,
            stop,
            end_modseq: modseq,
        }
    }

    /// The modseq counter after the first `len` bytes of records of a log whose header is
    /// `header` (mail_transaction_update_modseq over each), read from `records` (the log
    /// from the header's end) one record at a time, nothing kept. `Err` names why a
    /// record there doesn't decode, or that the bytes end inside one.
    pub fn modseq_counter_after(
        records: impl std::io::Read,
        header: &LogHeader,
        len: u64,
    ) -> std::result::Result<u64, String> {
        Self::modseq_counter_from(records, header, header.initial_modseq, len)
    }

    /// [`LogFile::modseq_counter_after`] from a record boundary inside the log where the
    /// counter was `modseq`: `records` starts there, `len` bytes of records are counted.
    pub fn modseq_counter_from(
        mut records: impl std::io::Read,
        header: &LogHeader,
        modseq: u64,
        len: u64,
    ) -> std::result::Result<u64, String> {
        let version = header.version();
        let mut modseq = modseq;
        let mut pos = 0u64;
        let mut payload = Vec::new();
        while pos < len {
            let mut rec = [0u8; RECORD_HEADER_SIZE];
            records
                .read_exact(&mut rec)
                .map_err(|e| format!("record at +{pos}: {e}"))?;
            let size = offset_to_u32([rec[0], rec[1], rec[2], rec[3]]) as u64;
            let type_raw = u32_at(&rec, rec_off::TYPE).unwrap_or(0);
            if size < RECORD_HEADER_SIZE as u64 || pos + size > len {
                return Err(format!("record at +{pos}: size {size}"));
            }
            payload.resize((size - RECORD_HEADER_SIZE as u64) as usize, 0);
            records
                .read_exact(&mut payload)
                .map_err(|e| format!("record at +{pos}: {e}"))?;
            let body = RecordBody::decode(type_raw, &payload)?;
            update_modseq(type_raw, &body, &mut modseq, version);
            pos += size;
        }
        Ok(modseq)
    }

    /// True when no older log continues into this one's records: a log started afresh
    /// (prev_file_seq 0, a reset), or one read only from a later offset.
    pub fn starts_history(&self) -> bool {
        self.header.prev_file_seq == 0 || self.read_from_later_offset()
    }

    /// True when the records were read from a later offset than the header's end
    /// ([`LogFile::decode_tail`]): the ones before `first_offset` were not read.
    pub fn read_from_later_offset(&self) -> bool {
        self.first_offset > self.header.hdr_size as u64
    }

    /// `Err` naming the offset when a record was corrupted (Dovecot: "Corrupted transaction
    /// log file"); unfinished tails are not errors.
    pub fn check(&self, path: &Path) -> Result<()> {
        match &self.stop {
            LogStop::Corrupt { offset, reason } => {
                Err(Error::corrupt(path, *offset, reason.clone()))
            }
            _ => Ok(()),
        }
    }

    /// The modseq counter just before the record at `offset` (or at the end), for an
    /// `offset` from `first_offset` on.
    pub fn modseq_at(&self, offset: u64) -> u64 {
        let mut m = self.first_modseq;
        for r in &self.records {
            if r.offset >= offset {
                break;
            }
            m = r.modseq;
        }
        m
    }
}

/// The oldest of `logs` (oldest first) from which every later change is held: the last
/// that [starts a history](LogFile::starts_history), else the first. Its `first_modseq`
/// is the oldest modseq the logs can answer changes after.
pub fn history_start(logs: &[LogFile]) -> usize {
    logs.iter().rposition(LogFile::starts_history).unwrap_or(0)
}
