//! Well-known extensions: names and decoders of their header and record data
//! (src/lib-index/mail-index-private.h, mail-index-modseq.h; src/lib-storage/index/
//! index-storage.c, maildir/maildir-storage.h, mbox/mbox-storage.h, dbox-single/
//! sdbox-storage.h, dbox-multi/mdbox-storage.h, mdbox-map-private.h;
//! src/lib-storage/list/mailbox-list-index.h). Byte tables: FORMAT.md §3.

use super::codec::{u16_at, u32_at, u64_at, u8_at};

pub const KEYWORDS: &str = "keywords";
pub const MODSEQ: &str = "modseq";
pub const CACHE: &str = "cache";
pub const HDR_VSIZE: &str = "hdr-vsize";
pub const HDR_POP3_UIDL: &str = "hdr-pop3-uidl";
pub const VSIZE: &str = "vsize";
pub const GUID: &str = "guid";
pub const MAILDIR: &str = "maildir";
pub const MBOX: &str = "mbox";
pub const HEADER_MD5: &str = "header-md5";
pub const DBOX_HDR: &str = "dbox-hdr";
pub const MDBOX_HDR: &str = "mdbox-hdr";
pub const MDBOX: &str = "mdbox";
pub const MAP: &str = "map";
pub const REF: &str = "ref";
/// dovecot.list.index extensions.
pub const LIST: &str = "list";
pub const LIST_MSGS: &str = "msgs";
pub const LIST_HMODSEQ: &str = "hmodseq";
pub const BOX_NAME: &str = "box-name";

fn guid16(data: &[u8], off: usize) -> [u8; 16] {
    let mut g = [0u8; 16];
    if let Some(b) = data.get(off..off + 16) {
        g.copy_from_slice(b);
    }
    g
}

/// Lowercase hex of bytes.
pub fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `keywords` extension header (struct mail_index_keyword_header + _rec[] + names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeywordsHeader {
    /// Keyword names in index order (bit i of the record bitmap).
    pub names: Vec<Vec<u8>>,
}

impl KeywordsHeader {
    /// Decodes with mail_index_map_parse_keywords's checks.
    pub fn decode(data: &[u8]) -> Result<KeywordsHeader, String> {
        if data.is_empty() {
            return Ok(KeywordsHeader::default());
        }
        let count = u32_at(data, 0).ok_or("keywords header too small")? as usize;
        let names_start = (count as u64) * 8 + 4;
        if names_start > data.len() as u64 {
            return Err("keywords_count larger than header size".into());
        }
        let names_start = names_start as usize;
        let area = &data[names_start..];
        for i in 0..count {
            let off = u32_at(data, 4 + i * 8 + 4).unwrap_or(0) as usize;
            if off > area.len() {
                return Err("name_offset points outside allocated header".into());
            }
        }
        if count > 0 && area.last() != Some(&0) {
            return Err("Keyword header doesn't end with NUL".into());
        }
        let mut names = Vec::with_capacity(count);
        for i in 0..count {
            let off = u32_at(data, 4 + i * 8 + 4).unwrap_or(0) as usize;
            let rest = area.get(off..).unwrap_or(&[]);
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            if end == 0 {
                return Err("Empty keyword name in header".into());
            }
            names.push(rest[..end].to_vec());
        }
        Ok(KeywordsHeader { names })
    }

    /// Encodes the header as Dovecot lays it out (cumulative name offsets, padded to 4).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.names.len() as u32).to_le_bytes());
        let mut off = 0u32;
        for n in &self.names {
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
            off += n.len() as u32 + 1;
        }
        for n in &self.names {
            out.extend_from_slice(n);
            out.push(0);
        }
        super::codec::pad_to(&mut out, 4);
        out
    }

    /// Record size Dovecot uses for `count` keywords (keywords_ext_register): one bit each,
    /// plus one spare byte when not a multiple of 4.
    pub fn record_size_for(count: usize) -> u16 {
        let mut size = count.div_ceil(8) as u16;
        if !size.is_multiple_of(4) {
            size += 1;
        }
        size
    }
}

/// Indexes of the keywords set in a record bitmap.
pub fn keyword_bits(record: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, &b) in record.iter().enumerate() {
        // the set bits only, lowest first
        let mut rest = b;
        while rest != 0 {
            out.push(i * 8 + rest.trailing_zeros() as usize);
            rest &= rest - 1;
        }
    }
    out
}

/// `modseq` header (struct mail_index_modseq_header), 16 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModseqHeader {
    pub highest_modseq: u64,
    pub log_seq: u32,
    pub log_offset: u32,
}

impl ModseqHeader {
    pub const SIZE: usize = 16;
    pub fn decode(d: &[u8]) -> Option<ModseqHeader> {
        if d.len() != Self::SIZE {
            return None;
        }
        Some(ModseqHeader {
            highest_modseq: u64_at(d, 0)?,
            log_seq: u32_at(d, 8)?,
            log_offset: u32_at(d, 12)?,
        })
    }
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.highest_modseq.to_le_bytes());
        b[8..12].copy_from_slice(&self.log_seq.to_le_bytes());
        b[12..16].copy_from_slice(&self.log_offset.to_le_bytes());
        b
    }
}

/// `hdr-vsize` header (struct index_vsize_header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VsizeHeader {
    pub vsize: u64,
    pub highest_uid: u32,
    pub message_count: u32,
}

impl VsizeHeader {
    pub fn decode(d: &[u8]) -> VsizeHeader {
        VsizeHeader {
            vsize: u64_at(d, 0).unwrap_or(0),
            highest_uid: u32_at(d, 8).unwrap_or(0),
            message_count: u32_at(d, 12).unwrap_or(0),
        }
    }
}

/// `maildir` header (struct maildir_index_header), 36 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaildirHeader {
    pub new_check_time: u32,
    pub new_mtime: u32,
    pub new_mtime_nsecs: u32,
    pub cur_check_time: u32,
    pub cur_mtime: u32,
    pub cur_mtime_nsecs: u32,
    pub uidlist_mtime: u32,
    pub uidlist_mtime_nsecs: u32,
    pub uidlist_size: u32,
}

impl MaildirHeader {
    /// The header's size (the extension has no record part).
    pub const SIZE: usize = 36;

    /// The nine u32 in the order of the struct, little-endian (what [`Self::decode`] reads).
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        let fields = [
            self.new_check_time,
            self.new_mtime,
            self.new_mtime_nsecs,
            self.cur_check_time,
            self.cur_mtime,
            self.cur_mtime_nsecs,
            self.uidlist_mtime,
            self.uidlist_mtime_nsecs,
            self.uidlist_size,
        ];
        for (slot, v) in out.chunks_exact_mut(4).zip(fields) {
            slot.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// A header shorter than [`Self::SIZE`] reads as zeros past its end.
    pub fn decode(d: &[u8]) -> MaildirHeader {
        let f = |i: usize| u32_at(d, i * 4).unwrap_or(0);
        MaildirHeader {
            new_check_time: f(0),
            new_mtime: f(1),
            new_mtime_nsecs: f(2),
            cur_check_time: f(3),
            cur_mtime: f(4),
            cur_mtime_nsecs: f(5),
            uidlist_mtime: f(6),
            uidlist_mtime_nsecs: f(7),
            uidlist_size: f(8),
        }
    }
}

/// `mbox` header (struct mbox_index_header), 32 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MboxHeader {
    pub sync_size: u64,
    pub sync_mtime: u32,
    pub dirty_flag: u8,
    pub mailbox_guid: [u8; 16],
}

impl MboxHeader {
    pub fn decode(d: &[u8]) -> MboxHeader {
        MboxHeader {
            sync_size: u64_at(d, 0).unwrap_or(0),
            sync_mtime: u32_at(d, 8).unwrap_or(0),
            dirty_flag: u8_at(d, 12).unwrap_or(0),
            mailbox_guid: guid16(d, 16),
        }
    }
}

/// `dbox-hdr` (sdbox, struct sdbox_index_header) and `mdbox-hdr` (struct
/// mdbox_index_header): a u32 (rebuild_count resp. map_uid_validity), the mailbox GUID,
/// a flags byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DboxHeader {
    /// sdbox: rebuild_count; mdbox: map_uid_validity.
    pub counter: u32,
    pub mailbox_guid: [u8; 16],
    /// 0x01 HAVE_POP3_UIDLS, 0x02 HAVE_POP3_ORDERS.
    pub flags: u8,
}

impl DboxHeader {
    pub const SIZE: usize = 24;
    pub fn decode(d: &[u8]) -> DboxHeader {
        DboxHeader {
            counter: u32_at(d, 0).unwrap_or(0),
            mailbox_guid: guid16(d, 4),
            flags: u8_at(d, 20).unwrap_or(0),
        }
    }
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&self.counter.to_le_bytes());
        b[4..20].copy_from_slice(&self.mailbox_guid);
        b[20] = self.flags;
        b
    }
}

/// `mdbox` record (struct mdbox_mail_index_record).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MdboxRecord {
    pub map_uid: u32,
    pub save_date: u32,
}

impl MdboxRecord {
    pub fn decode(d: &[u8]) -> MdboxRecord {
        MdboxRecord {
            map_uid: u32_at(d, 0).unwrap_or(0),
            save_date: u32_at(d, 4).unwrap_or(0),
        }
    }
}

/// `map` header of dovecot.map.index (struct mdbox_map_mail_index_header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapHeader {
    pub highest_file_id: u32,
    pub rebuild_count: u32,
}

impl MapHeader {
    pub fn decode(d: &[u8]) -> MapHeader {
        MapHeader {
            highest_file_id: u32_at(d, 0).unwrap_or(0),
            rebuild_count: u32_at(d, 4).unwrap_or(0),
        }
    }
}

/// `map` record of dovecot.map.index (struct mdbox_map_mail_index_record).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapRecord {
    pub file_id: u32,
    pub offset: u32,
    pub size: u32,
}

impl MapRecord {
    pub fn decode(d: &[u8]) -> MapRecord {
        MapRecord {
            file_id: u32_at(d, 0).unwrap_or(0),
            offset: u32_at(d, 4).unwrap_or(0),
            size: u32_at(d, 8).unwrap_or(0),
        }
    }
}

/// `ref` record of dovecot.map.index: the message's reference count.
pub fn ref_count(d: &[u8]) -> u16 {
    u16_at(d, 0).unwrap_or(0)
}

/// `guid` record: the message's 128-bit GUID.
pub fn guid_record(d: &[u8]) -> [u8; 16] {
    guid16(d, 0)
}

/// `cache` record: offset into dovecot.index.cache (0 = nothing cached).
pub fn cache_offset(d: &[u8]) -> u32 {
    u32_at(d, 0).unwrap_or(0)
}

/// `list` record of dovecot.list.index (struct mailbox_list_index_record).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListRecord {
    pub name_id: u32,
    pub parent_uid: u32,
    pub guid: [u8; 16],
    pub uid_validity: u32,
}

impl ListRecord {
    pub fn decode(d: &[u8]) -> ListRecord {
        ListRecord {
            name_id: u32_at(d, 0).unwrap_or(0),
            parent_uid: u32_at(d, 4).unwrap_or(0),
            guid: guid16(d, 8),
            uid_validity: u32_at(d, 24).unwrap_or(0),
        }
    }
}

/// `msgs` record of dovecot.list.index (struct mailbox_list_index_msgs_record).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListMsgsRecord {
    pub messages: u32,
    pub unseen: u32,
    pub recent: u32,
    pub uidnext: u32,
}

impl ListMsgsRecord {
    pub fn decode(d: &[u8]) -> ListMsgsRecord {
        ListMsgsRecord {
            messages: u32_at(d, 0).unwrap_or(0),
            unseen: u32_at(d, 4).unwrap_or(0),
            recent: u32_at(d, 8).unwrap_or(0),
            uidnext: u32_at(d, 12).unwrap_or(0),
        }
    }
}

/// `list` header of dovecot.list.index: u8 refresh_flag, then {u32 id, name NUL}... until id 0.
pub fn list_header_names(d: &[u8]) -> (u8, Vec<(u32, Vec<u8>)>) {
    let refresh = u8_at(d, 0).unwrap_or(0);
    let mut out = Vec::new();
    let mut i = 1;
    while i + 4 <= d.len() {
        let id = u32_at(d, i).unwrap_or(0);
        i += 4;
        if id == 0 {
            break;
        }
        let rest = &d[i..];
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            break;
        };
        out.push((id, rest[..end].to_vec()));
        i += end + 1;
    }
    (refresh, out)
}

#[cfg(test)]
mod tests {
    use super::keyword_bits;

    #[test]
    fn keyword_bits_are_the_set_bits_lowest_first() {
        assert_eq!(keyword_bits(&[]), Vec::<usize>::new());
        assert_eq!(keyword_bits(&[0, 0, 0, 0]), Vec::<usize>::new());
        assert_eq!(
            keyword_bits(&[0b1000_0101, 0, 0b0100_0000, 0xff]),
            [0, 2, 7, 22, 24, 25, 26, 27, 28, 29, 30, 31]
        );
    }
}
