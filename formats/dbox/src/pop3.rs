//! A message's POP3 UIDL and order in sdbox and mdbox, as Dovecot 2.3 keeps them (byte
//! tables: FORMAT.md §1.4, §3.1, §4.2):
//!
//! - the message's metadata block holds `P<uidl>\n` and `O<decimal order>\n`, after `V`
//!   and before `G` (dbox-common/dbox-save.c dbox_save_write_metadata);
//! - the mailbox index's `dbox-hdr` / `mdbox-hdr` `flags` byte says whether any message
//!   may have them (HAVE_POP3_UIDLS, HAVE_POP3_ORDERS: dbox-save.c
//!   dbox_save_update_header_flags); without the flag Dovecot doesn't look
//!   (dbox-single/sdbox-mail.c, dbox-multi/mdbox-mail.c `*_mail_get_special`);
//! - the `hdr-pop3-uidl` header extension holds the highest UID saved with one
//!   (index-pop3-uidl.c index_pop3_uidl_set_max_uid): above it, none can exist
//!   (index_pop3_uidl_can_exist).
//!
//! Reading answers as Dovecot's `doveadm fetch pop3.uidl pop3.order` does, and looks at a
//! message file only when the index says the data can be there.

use mailstore::Pop3Info;
use mailsync_index::format::ext;
use mailsync_index::{Transaction, View};

use crate::file::key;
use crate::index::hdr_ext_name;
use crate::layout::DboxKind;

/// DBOX_INDEX_HEADER_FLAG_HAVE_POP3_UIDLS (dbox-common/dbox-storage.h).
pub const HAVE_POP3_UIDLS: u8 = 0x01;
/// DBOX_INDEX_HEADER_FLAG_HAVE_POP3_ORDERS (dbox-common/dbox-storage.h).
pub const HAVE_POP3_ORDERS: u8 = 0x02;
/// offsetof(struct sdbox_index_header, flags) = offsetof(struct mdbox_index_header,
/// flags): after the u32 (rebuild_count / map_uid_validity) and the 16-byte mailbox GUID
/// (dbox-single/sdbox-storage.h, dbox-multi/mdbox-storage.h).
pub const HDR_FLAGS_OFFSET: usize = 20;
/// sizeof(struct mailbox_index_pop3_uidl) (index-storage.h): one u32,
/// max_uid_with_pop3_uidl, at offset 0 of the `hdr-pop3-uidl` header.
pub const POP3_UIDL_HDR_SIZE: usize = 4;
/// Offset of max_uid_with_pop3_uidl in the `hdr-pop3-uidl` header.
pub const POP3_UIDL_MAX_UID_OFFSET: usize = 0;

/// The UIDL as it goes into a `P` line, or None when none is written: empty (none kept),
/// or a value Dovecot could not have written or would not read back the same — an LF
/// (it ends the line: dbox-save.c asserts there is none), a NUL (the value is read as a
/// C string) or a trailing CR (lib/istream.c i_stream_next_line_finish strips it).
pub fn storable_uidl(uidl: &[u8]) -> Option<&[u8]> {
    let bad = uidl.contains(&b'\n') || uidl.contains(&0) || uidl.last() == Some(&b'\r');
    (!uidl.is_empty() && !bad).then_some(uidl)
}

/// The `P` and `O` metadata lines of a save, in Dovecot's order (dbox-save.c
/// dbox_save_write_metadata: `"%c%s\n"` then `"%c%u\n"` for an order ≠ 0).
pub fn metadata_lines(p: &Pop3Info) -> impl Iterator<Item = (u8, Vec<u8>)> + '_ {
    let uidl = storable_uidl(&p.uidl).map(|u| (key::POP3_UIDL, u.to_vec()));
    let order = (p.order != 0).then(|| (key::POP3_ORDER, p.order.to_string().into_bytes()));
    uidl.into_iter().chain(order)
}

/// The header flags a save with `p` sets (what [`metadata_lines`] writes).
pub fn flags_of(p: &Pop3Info) -> u8 {
    let mut flags = 0;
    if storable_uidl(&p.uidl).is_some() {
        flags |= HAVE_POP3_UIDLS;
    }
    if p.order != 0 {
        flags |= HAVE_POP3_ORDERS;
    }
    flags
}

/// What the saves of one commit wrote, for the index (dbox-save.h `have_pop3_uidls`,
/// `have_pop3_orders`, `highest_pop3_uidl_seq`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SavedPop3 {
    /// HAVE_POP3_* of every save together.
    pub flags: u8,
    /// The highest UID saved with a UIDL or an order (0: none).
    pub max_uid: u32,
}

impl SavedPop3 {
    /// Notes a message saved with `p` at `uid`.
    pub fn add(&mut self, p: &Pop3Info, uid: u32) {
        let flags = flags_of(p);
        self.flags |= flags;
        if flags != 0 {
            // dbox-save.c: highest_pop3_uidl_seq follows a UIDL *or* an order
            self.max_uid = self.max_uid.max(uid);
        }
    }

    /// Puts the index changes into the commit's transaction, against the locked `view`:
    /// the header flags OR-ed in, the header grown to hold them if it is shorter
    /// (dbox-save.c dbox_save_update_header_flags, mail_index_ext_resize_hdr; the
    /// transaction's ext intro takes the larger size), and `hdr-pop3-uidl` set to the
    /// highest such UID (index-pop3-uidl.c index_pop3_uidl_set_max_uid, called from
    /// sdbox-save.c dbox_save_assign_uids / mdbox-save.c
    /// mdbox_transaction_save_commit_pre). Nothing when no save had POP3 data.
    pub fn write(&self, view: &View, t: &mut Transaction<'_>, kind: DboxKind) {
        if self.flags != 0 {
            let name = hdr_ext_name(kind);
            let old = header_flags(view, kind);
            if old | self.flags != old {
                t.ext_hdr_update(name, HDR_FLAGS_OFFSET as u32, &[old | self.flags]);
            }
        }
        if self.max_uid != 0 {
            if view.extension(ext::HDR_POP3_UIDL).is_none() {
                // mail_index_ext_register(box->index, "hdr-pop3-uidl",
                // sizeof(struct mailbox_index_pop3_uidl), 0, 0) (index-storage.c)
                t.ext_intro(ext::HDR_POP3_UIDL, POP3_UIDL_HDR_SIZE as u32, 0, 0);
            }
            t.ext_hdr_update(
                ext::HDR_POP3_UIDL,
                POP3_UIDL_MAX_UID_OFFSET as u32,
                &self.max_uid.to_le_bytes(),
            );
        }
    }
}

/// The `flags` byte of the `dbox-hdr` / `mdbox-hdr` header; 0 when the header is too
/// short to hold it (dbox-storage.c dbox_header_have_flag).
pub fn header_flags(view: &View, kind: DboxKind) -> u8 {
    view.extension(hdr_ext_name(kind))
        .and_then(|e| e.data.get(HDR_FLAGS_OFFSET).copied())
        .unwrap_or(0)
}

/// max_uid_with_pop3_uidl, when the `hdr-pop3-uidl` header is there and large enough.
pub fn max_uid_with_pop3_uidl(view: &View) -> Option<u32> {
    let data = &view.extension(ext::HDR_POP3_UIDL)?.data;
    let b = data.get(POP3_UIDL_MAX_UID_OFFSET..POP3_UIDL_MAX_UID_OFFSET + POP3_UIDL_HDR_SIZE)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Which of a message's `P` / `O` lines Dovecot would look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub uidl: bool,
    pub order: bool,
}

impl Wanted {
    pub fn any(&self) -> bool {
        self.uidl || self.order
    }
}

/// What a mailbox index says about where POP3 data can be: the header flags and
/// max_uid_with_pop3_uidl. Kept per view (a few bytes), so asking for a message that
/// can't have any reads nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pop3Gate {
    pub flags: u8,
    /// None: no `hdr-pop3-uidl` header (then any UID can have a UIDL).
    pub max_uid: Option<u32>,
}

impl Pop3Gate {
    pub fn of(view: &View, kind: DboxKind) -> Pop3Gate {
        Pop3Gate {
            flags: header_flags(view, kind),
            max_uid: max_uid_with_pop3_uidl(view),
        }
    }

    /// The lines to look for in the metadata of `uid`: sdbox-mail.c / mdbox-mail.c
    /// `*_mail_get_special` answer "" unless the header flag is set, then dbox-mail.c
    /// dbox_mail_get_special answers "" for a UID above max_uid_with_pop3_uidl
    /// (index-pop3-uidl.c index_pop3_uidl_can_exist, for the UIDL and the order alike).
    pub fn wanted(&self, uid: u32) -> Wanted {
        if self.max_uid.is_some_and(|max| uid > max) {
            return Wanted::default();
        }
        Wanted {
            uidl: self.flags & HAVE_POP3_UIDLS != 0,
            order: self.flags & HAVE_POP3_ORDERS != 0,
        }
    }
}

/// A metadata value as Dovecot reads it: the line without a trailing CR
/// (lib/istream.c i_stream_next_line_finish), then as a C string (up to a NUL).
fn as_read(value: &[u8]) -> &[u8] {
    let value = value.strip_suffix(b"\r").unwrap_or(value);
    match value.iter().position(|&b| b == 0) {
        Some(nul) => &value[..nul],
        None => value,
    }
}

/// The `O` value as Dovecot's str_to_uint takes it (dbox-mail.c
/// dbox_get_cached_metadata): decimal digits only, in range; anything else is 0 (none).
fn parse_order(value: &[u8]) -> u32 {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The POP3 data of a message from its metadata (looked up by `get`, the first line of
/// a key as dbox-file.c dbox_file_metadata_get), only what `wanted` allows.
pub fn from_metadata<'a>(get: impl Fn(u8) -> Option<&'a [u8]>, wanted: Wanted) -> Pop3Info {
    Pop3Info {
        uidl: if wanted.uidl {
            get(key::POP3_UIDL)
                .map(as_read)
                .unwrap_or_default()
                .to_vec()
        } else {
            Vec::new()
        },
        order: if wanted.order {
            get(key::POP3_ORDER).map(as_read).map_or(0, parse_order)
        } else {
            0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(p: &Pop3Info) -> Vec<(u8, Vec<u8>)> {
        metadata_lines(p).collect()
    }

    #[test]
    fn lines_and_flags_follow_what_is_kept() {
        let both = Pop3Info {
            uidl: b"UID1-2".to_vec(),
            order: 12,
        };
        assert_eq!(
            lines(&both),
            [(b'P', b"UID1-2".to_vec()), (b'O', b"12".to_vec())]
        );
        assert_eq!(flags_of(&both), HAVE_POP3_UIDLS | HAVE_POP3_ORDERS);
        assert!(lines(&Pop3Info::default()).is_empty());
        assert_eq!(flags_of(&Pop3Info::default()), 0);
        for bad in [&b"a\nb"[..], b"a\0b", b"ab\r"] {
            let p = Pop3Info {
                uidl: bad.to_vec(),
                order: 0,
            };
            assert!(lines(&p).is_empty(), "{bad:?}");
            assert_eq!(flags_of(&p), 0);
        }
        // a CR inside survives Dovecot's line reader
        assert_eq!(storable_uidl(b"a\rb"), Some(&b"a\rb"[..]));
    }

    #[test]
    fn saved_pop3_takes_the_highest_uid_with_either() {
        let mut s = SavedPop3::default();
        s.add(&Pop3Info::default(), 9);
        assert_eq!(s, SavedPop3::default());
        s.add(
            &Pop3Info {
                uidl: Vec::new(),
                order: 1,
            },
            4,
        );
        s.add(
            &Pop3Info {
                uidl: b"x".to_vec(),
                order: 0,
            },
            3,
        );
        assert_eq!(
            s,
            SavedPop3 {
                flags: HAVE_POP3_UIDLS | HAVE_POP3_ORDERS,
                max_uid: 4
            }
        );
    }

    #[test]
    fn the_gate_follows_the_flags_and_the_max_uid() {
        let gate = Pop3Gate {
            flags: HAVE_POP3_UIDLS,
            max_uid: Some(5),
        };
        assert_eq!(
            gate.wanted(5),
            Wanted {
                uidl: true,
                order: false
            }
        );
        assert!(!gate.wanted(6).any());
        let no_hdr = Pop3Gate {
            flags: HAVE_POP3_ORDERS,
            max_uid: None,
        };
        assert_eq!(
            no_hdr.wanted(1000),
            Wanted {
                uidl: false,
                order: true
            }
        );
        assert!(!Pop3Gate::default().wanted(1).any());
    }

    #[test]
    fn metadata_values_read_as_dovecot_reads_them() {
        let meta: Vec<(u8, &[u8])> = vec![(b'P', b"abc\r"), (b'O', b"0007"), (b'P', b"second")];
        let get = |k: u8| meta.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let all = Wanted {
            uidl: true,
            order: true,
        };
        assert_eq!(
            from_metadata(get, all),
            Pop3Info {
                uidl: b"abc".to_vec(),
                order: 7
            }
        );
        assert_eq!(from_metadata(get, Wanted::default()), Pop3Info::default());
        for (bad, want) in [
            (&b"-1"[..], 0),
            (b"4294967296", 0),
            (b"4294967295", u32::MAX),
            (b"1x", 0),
            (b"", 0),
        ] {
            assert_eq!(parse_order(bad), want, "{bad:?}");
        }
        assert_eq!(as_read(b"ab\0c\r"), b"ab");
        assert_eq!(as_read(b"ab\r\0"), b"ab\r");
    }
}
