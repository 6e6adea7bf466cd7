//! Human-readable dumps in the layout of `doveadm dump` (src/doveadm/doveadm-dump-index.c,
//! doveadm-dump-log.c, doveadm-dump-mailboxlog.c), so admins can diff the two. Differences:
//! the index dump has no `-- CACHE` section and no per-record cache lines (this crate never
//! reads dovecot.index.cache); a log record that can't be read completes the dump with an
//! `error:` line instead of aborting.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::codec::{offset_to_u32, u16_at, u32_at, u64_at};
use crate::format::ext::{self, hex};
use crate::format::index::{hdr_off, rec_flag};
use crate::format::log::{
    rec_type, update_modseq, LogHeader, RecordBody, HEADER_MIN_SIZE, HEADER_SIZE,
    RECORD_HEADER_SIZE,
};
use crate::format::mailbox_log;
use crate::paths::IndexPaths;
use crate::view::View;

/// What kind of file to dump (doveadm dump `-t index|log|mailboxlog`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpKind {
    Index,
    Log,
    MailboxLog,
}

impl DumpKind {
    pub fn name(self) -> &'static str {
        match self {
            DumpKind::Index => "index",
            DumpKind::Log => "log",
            DumpKind::MailboxLog => "mailboxlog",
        }
    }
    /// Parses a `-t` type name.
    pub fn from_name(name: &str) -> Option<DumpKind> {
        Some(match name {
            "index" => DumpKind::Index,
            "log" => DumpKind::Log,
            "mailboxlog" => DumpKind::MailboxLog,
            _ => return None,
        })
    }
}

/// Index paths for a dump path: a directory holding `dovecot.index*` or
/// `dovecot.map.index*`, or a file path whose name is the prefix (path_open_index).
fn index_paths(path: &Path) -> Option<IndexPaths> {
    if path.is_dir() {
        for prefix in [crate::paths::MAILBOX_INDEX, crate::paths::MAP_INDEX] {
            let p = IndexPaths::new(path, prefix);
            if p.index().exists() || p.log().exists() {
                return Some(p);
            }
        }
        None
    } else {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let name = path.file_name()?.to_string_lossy().into_owned();
        Some(IndexPaths::new(dir.unwrap_or(Path::new(".")), name))
    }
}

/// doveadm dump's autodetection (index, then log, then mailbox log).
pub fn detect(path: &Path) -> Option<DumpKind> {
    if let Some(p) = index_paths(path) {
        if (p.index().exists() || p.log().exists()) && View::open_paths(&p).is_ok() {
            return Some(DumpKind::Index);
        }
    }
    let name = path.file_name()?.to_string_lossy().into_owned();
    let data = std::fs::read(path).ok()?;
    if let Some(i) = name.find(".log") {
        let rest = &name[i + 4..];
        if (rest.is_empty() || rest.starts_with('.'))
            && data.len() >= HEADER_MIN_SIZE
            && data[0] == crate::format::log::MAJOR_VERSION
            && u16_at(&data, 2).unwrap_or(0) as usize >= HEADER_MIN_SIZE
        {
            return Some(DumpKind::Log);
        }
    }
    if name.ends_with(".log")
        && data.len() >= mailbox_log::RECORD_SIZE
        && data[1..4] == [0, 0, 0]
        && (1..=6).contains(&data[0])
    {
        return Some(DumpKind::MailboxLog);
    }
    None
}

/// Dumps `path` (autodetected when `kind` is `None`, then starting with "Detected file
/// type: ..." like doveadm), times in the system time zone.
pub fn dump(path: &Path, kind: Option<DumpKind>) -> Result<String> {
    dump_with_tz(path, kind, &jiff::tz::TimeZone::system())
}

/// [`dump`] with times shown in `tz`.
pub fn dump_with_tz(
    path: &Path,
    kind: Option<DumpKind>,
    tz: &jiff::tz::TimeZone,
) -> Result<String> {
    let mut out = String::new();
    let kind = match kind {
        Some(k) => k,
        None => {
            let k = detect(path).ok_or_else(|| {
                Error::Invalid(format!("Can't autodetect file type: {}", path.display()))
            })?;
            let _ = writeln!(out, "Detected file type: {}", k.name());
            k
        }
    };
    let d = Dates(tz);
    match kind {
        DumpKind::Index => {
            let p = index_paths(path)
                .ok_or_else(|| Error::Invalid(format!("Couldn't open index {}", path.display())))?;
            let view = View::open_paths(&p)?;
            dump_index(&view, &d, &mut out);
        }
        DumpKind::Log => {
            let data = std::fs::read(path).map_err(|e| Error::io("open", path, e))?;
            dump_log(&data, &d, &mut out)?;
        }
        DumpKind::MailboxLog => {
            let data = std::fs::read(path).map_err(|e| Error::io("open", path, e))?;
            for (i, c) in data.chunks_exact(mailbox_log::RECORD_SIZE).enumerate() {
                let name = mailbox_log::MailboxLogType::from_u8(c[0])
                    .map(|t| t.name())
                    .unwrap_or("");
                let ts = u32::from_be_bytes([c[20], c[21], c[22], c[23]]);
                let _ = writeln!(
                    out,
                    "#{}: {name} {} ({})",
                    i * mailbox_log::RECORD_SIZE,
                    hex(&c[4..20]),
                    d.fmt(ts as i64)
                );
            }
        }
    }
    Ok(out)
}

struct Dates<'a>(&'a jiff::tz::TimeZone);

impl Dates<'_> {
    /// unixdate2str: "%Y-%m-%d %H:%M:%S" in local time.
    fn fmt(&self, t: i64) -> String {
        match jiff::Timestamp::from_second(t) {
            Ok(ts) => ts
                .to_zoned(self.0.clone())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string(),
            Err(_) => t.to_string(),
        }
    }
}

fn dump_index(view: &View, d: &Dates, out: &mut String) {
    let h = view.header();
    let _ = writeln!(out, "-- INDEX: {}", view.paths().index().display());
    let w = |out: &mut String, k: &str, v: String| {
        let _ = writeln!(out, "{k} = {v}");
    };
    w(
        out,
        "version ..................",
        format!("{}.{}", h.major_version, h.minor_version),
    );
    w(
        out,
        "base header size .........",
        h.base_header_size.to_string(),
    );
    w(out, "header size ..............", h.header_size.to_string());
    w(out, "record size ..............", h.record_size.to_string());
    w(
        out,
        "compat flags .............",
        h.compat_flags.to_string(),
    );
    w(
        out,
        "index id .................",
        format!("{} ({})", h.indexid, d.fmt(h.indexid as i64)),
    );
    w(out, "flags ....................", h.flags.to_string());
    w(
        out,
        "uid validity .............",
        format!("{} ({})", h.uid_validity, d.fmt(h.uid_validity as i64)),
    );
    w(out, "next uid .................", h.next_uid.to_string());
    w(
        out,
        "messages count ...........",
        h.messages_count.to_string(),
    );
    w(
        out,
        "seen messages count ......",
        h.seen_messages_count.to_string(),
    );
    w(
        out,
        "deleted messages count ...",
        h.deleted_messages_count.to_string(),
    );
    w(
        out,
        "first recent uid .........",
        h.first_recent_uid.to_string(),
    );
    w(
        out,
        "first unseen uid lowwater ",
        h.first_unseen_uid_lowwater.to_string(),
    );
    w(
        out,
        "first deleted uid lowwater",
        h.first_deleted_uid_lowwater.to_string(),
    );
    w(
        out,
        "log file seq .............",
        h.log_file_seq.to_string(),
    );
    w(
        out,
        "log file tail offset .....",
        h.log_file_tail_offset.to_string(),
    );
    w(
        out,
        "log file head offset .....",
        h.log_file_head_offset.to_string(),
    );
    w(
        out,
        "log2 rotate time .........",
        format!(
            "{} ({})",
            h.log2_rotate_time,
            d.fmt(h.log2_rotate_time as i64)
        ),
    );
    w(
        out,
        "last temp file scan ......",
        format!(
            "{} ({})",
            h.last_temp_file_scan,
            d.fmt(h.last_temp_file_scan as i64)
        ),
    );
    w(
        out,
        "day stamp ................",
        format!("{} ({})", h.day_stamp, d.fmt(h.day_stamp as i64)),
    );
    for (i, v) in h.day_first_uid.iter().enumerate() {
        let _ = writeln!(out, "day first uid[{i}] ......... = {v}");
    }
    if view.extensions().is_empty() {
        let _ = writeln!(out, "no extensions");
    }
    for (i, e) in view.extensions().iter().enumerate() {
        let _ = writeln!(out, "-- Extension {i} --");
        let _ = writeln!(out, "name ........ = {}", e.name);
        let _ = writeln!(out, "hdr_size .... = {}", e.hdr_size());
        let _ = writeln!(out, "reset_id .... = {}", e.reset_id);
        let _ = writeln!(out, "record_offset = {}", e.record_offset);
        let _ = writeln!(out, "record_size . = {}", e.record_size);
        let _ = writeln!(out, "record_align  = {}", e.record_align);
        if !e.data.is_empty() && e.name != ext::KEYWORDS {
            dump_ext_header(&e.name, &e.data, d, out);
        }
    }
    let _ = writeln!(out, "-- Keywords --");
    for (i, k) in view.keywords().iter().enumerate() {
        let _ = writeln!(out, "{i:3} = {}", String::from_utf8_lossy(k));
    }
    let _ = writeln!(out, "\n-- RECORDS: {}", h.messages_count);
    // extension numbering of doveadm: keywords and modseq are registered first, then the
    // map's extensions in map order; keywords is printed with its registered 2 bytes
    let mut order: Vec<(&str, Option<usize>)> =
        vec![(ext::KEYWORDS, Some(2)), (ext::MODSEQ, Some(8))];
    for e in view.extensions() {
        if e.name != ext::KEYWORDS && e.name != ext::MODSEQ {
            order.push((e.name.as_str(), None));
        }
    }
    for m in view.messages() {
        let f = m.flags();
        let mut names = Vec::new();
        for (bit, n) in [
            (rec_flag::SEEN, "Seen"),
            (rec_flag::ANSWERED, "Answered"),
            (rec_flag::FLAGGED, "Flagged"),
            (rec_flag::DELETED, "Deleted"),
            (rec_flag::DRAFT, "Draft"),
        ] {
            if f & bit != 0 {
                names.push(n);
            }
        }
        let fs = if names.is_empty() {
            String::new()
        } else {
            format!("({})", names.join(" "))
        };
        let _ = writeln!(
            out,
            "RECORD: seq={}, uid={}, flags=0x{f:02x} {fs}",
            m.index + 1,
            m.uid()
        );
        for (i, (name, reg_size)) in order.iter().enumerate() {
            let Some(e) = view.extension(name) else {
                continue;
            };
            if e.record_size == 0 {
                continue;
            }
            let Some(data) = m.ext(name) else { continue };
            let size = reg_size.unwrap_or(e.record_size as usize).min(data.len());
            let data = &data[..size];
            let align = if *name == ext::KEYWORDS {
                1
            } else {
                e.record_align as usize
            };
            let value = match (size, align) {
                (2, 2) => format!("{:10}", u16_at(data, 0).unwrap_or(0)),
                (4, 4) => format!("{:10}", u32_at(data, 0).unwrap_or(0)),
                (8, 8) => format!("{:10}", u64_at(data, 0).unwrap_or(0)),
                _ => " ".repeat(10),
            };
            let _ = writeln!(out, " - ext {i} {name:<10}: {value} ({})", hex(data));
            let pad = "                   : ";
            match *name {
                ext::MAP => {
                    let r = ext::MapRecord::decode(data);
                    let _ = writeln!(out, "{pad}file_id = {}", r.file_id);
                    let _ = writeln!(out, "{pad}offset  = {}", r.offset);
                    let _ = writeln!(out, "{pad}size    = {}", r.size);
                }
                ext::MDBOX => {
                    let r = ext::MdboxRecord::decode(data);
                    let _ = writeln!(out, "{pad}map_uid   = {}", r.map_uid);
                    let _ = writeln!(
                        out,
                        "{pad}save_date = {} ({})",
                        r.save_date,
                        d.fmt(r.save_date as i64)
                    );
                }
                ext::LIST => {
                    let r = ext::ListRecord::decode(data);
                    let _ = writeln!(out, "{pad}name_id      = {}", r.name_id);
                    let _ = writeln!(out, "{pad}parent_uid   = {}", r.parent_uid);
                    let _ = writeln!(out, "{pad}guid         = {}", hex(&r.guid));
                    let _ = writeln!(out, "{pad}uid_validity = {}", r.uid_validity);
                }
                ext::LIST_MSGS => {
                    let r = ext::ListMsgsRecord::decode(data);
                    let _ = writeln!(out, "{pad}messages = {}", r.messages);
                    let _ = writeln!(out, "{pad}unseen   = {}", r.unseen);
                    let _ = writeln!(out, "{pad}recent   = {}", r.recent);
                    let _ = writeln!(out, "{pad}uidnext  = {}", r.uidnext);
                }
                ext::VSIZE if data.len() >= 16 => {
                    let r = ext::VsizeHeader::decode(data);
                    let _ = writeln!(out, "{pad}vsize         = {}", r.vsize);
                    let _ = writeln!(out, "{pad}highest_uid   = {}", r.highest_uid);
                    let _ = writeln!(out, "{pad}message_count = {}", r.message_count);
                }
                _ => {}
            }
        }
        let _ = writeln!(out);
    }
}

fn dump_ext_header(name: &str, data: &[u8], d: &Dates, out: &mut String) {
    let mut buf = data.to_vec();
    buf.resize(data.len() + 128, 0);
    let data = &buf[..];
    let u32f = |o: usize| u32_at(data, o).unwrap_or(0);
    match name {
        ext::HDR_VSIZE => {
            let h = ext::VsizeHeader::decode(data);
            let _ = writeln!(
                out,
                "header\n - highest uid . = {}\n - message count = {}\n - vsize ....... = {}",
                h.highest_uid, h.message_count, h.vsize
            );
        }
        ext::MAILDIR => {
            let h = ext::MaildirHeader::decode(data);
            let _ = writeln!(out, "header");
            let _ = writeln!(
                out,
                " - new_check_time .... = {}",
                d.fmt(h.new_check_time as i64)
            );
            let _ = writeln!(
                out,
                " - new_mtime ......... = {}",
                d.fmt(h.new_mtime as i64)
            );
            let _ = writeln!(out, " - new_mtime_nsecs ... = {}", h.new_mtime_nsecs);
            let _ = writeln!(
                out,
                " - cur_check_time .... = {}",
                d.fmt(h.cur_check_time as i64)
            );
            let _ = writeln!(
                out,
                " - cur_mtime ......... = {}",
                d.fmt(h.cur_mtime as i64)
            );
            let _ = writeln!(out, " - cur_mtime_nsecs.... = {}", h.cur_mtime_nsecs);
            let _ = writeln!(
                out,
                " - uidlist_mtime ..... = {}",
                d.fmt(h.uidlist_mtime as i64)
            );
            let _ = writeln!(out, " - uidlist_mtime_nsecs = {}", h.uidlist_mtime_nsecs);
            let _ = writeln!(out, " - uidlist_size ...... = {}", h.uidlist_size);
        }
        ext::MBOX => {
            let h = ext::MboxHeader::decode(data);
            let _ = writeln!(out, "header");
            let _ = writeln!(out, " - sync_mtime . = {}", d.fmt(h.sync_mtime as i64));
            let _ = writeln!(out, " - sync_size .. = {}", h.sync_size);
            let _ = writeln!(out, " - dirty_flag . = {}", h.dirty_flag);
            let _ = writeln!(out, " - mailbox_guid = {}", hex(&h.mailbox_guid));
        }
        ext::MDBOX_HDR => {
            let h = ext::DboxHeader::decode(data);
            let _ = writeln!(out, "header");
            let _ = writeln!(out, " - map_uid_validity .. = {}", h.counter);
            let _ = writeln!(out, " - mailbox_guid ...... = {}", hex(&h.mailbox_guid));
            let _ = writeln!(out, " - flags ............. = 0x{:x}", h.flags);
        }
        ext::DBOX_HDR => {
            let h = ext::DboxHeader::decode(data);
            let _ = writeln!(out, "header");
            let _ = writeln!(out, " - rebuild_count . = {}", h.counter);
            let _ = writeln!(out, " - mailbox_guid .. = {}", hex(&h.mailbox_guid));
            let _ = writeln!(out, " - flags ......... = 0x{:x}", h.flags);
        }
        ext::MODSEQ => {
            let _ = writeln!(out, "header");
            let _ = writeln!(out, " - highest_modseq = {}", u64_at(data, 0).unwrap_or(0));
            let _ = writeln!(out, " - log_seq ...... = {}", u32f(8));
            let _ = writeln!(out, " - log_offset ... = {}", u32f(12));
        }
        ext::HDR_POP3_UIDL => {
            let _ = writeln!(out, "header\n - max_uid_with_pop3_uidl = {}", u32f(0));
        }
        ext::LIST => {
            let real = &data[..data.len() - 128];
            let _ = writeln!(out, "header ........ = {}", hex(real));
            let (refresh, names) = ext::list_header_names(real);
            let _ = writeln!(out, " - refresh_flag = {refresh}");
            for (id, n) in names {
                let _ = writeln!(out, " - {id} : {}", String::from_utf8_lossy(&n));
            }
        }
        ext::BOX_NAME => {
            let real = &data[..data.len() - 128];
            let _ = writeln!(out, "header ........ = {}", hex(real));
            let text: String = String::from_utf8_lossy(real).replace('\0', "\n");
            let parts: Vec<&str> = text.split('\n').filter(|s| !s.is_empty()).collect();
            let _ = writeln!(out, " {}", parts.join("\n "));
        }
        _ => {
            let _ = writeln!(out, "header ........ = {}", hex(&data[..data.len() - 128]));
        }
    }
}

fn log_type_name(t: u32) -> String {
    let base = match t & rec_type::TYPE_MASK {
        x if x == rec_type::EXPUNGE | rec_type::EXPUNGE_PROT => "expunge".to_string(),
        x if x == rec_type::EXPUNGE_GUID | rec_type::EXPUNGE_PROT => "expunge-guid".into(),
        rec_type::APPEND => "append".into(),
        rec_type::FLAG_UPDATE => "flag-update".into(),
        rec_type::HEADER_UPDATE => "header-update".into(),
        rec_type::EXT_INTRO => "ext-intro".into(),
        rec_type::EXT_RESET => "ext-reset".into(),
        rec_type::EXT_HDR_UPDATE => "ext-hdr".into(),
        rec_type::EXT_HDR_UPDATE32 => "ext-hdr32".into(),
        rec_type::EXT_REC_UPDATE => "ext-rec".into(),
        rec_type::KEYWORD_UPDATE => "keyword-update".into(),
        rec_type::KEYWORD_RESET => "keyword-reset".into(),
        rec_type::EXT_ATOMIC_INC => "ext-atomic-inc".into(),
        rec_type::MODSEQ_UPDATE => "modseq-update".into(),
        rec_type::INDEX_DELETED => "index-deleted".into(),
        rec_type::INDEX_UNDELETED => "index-undeleted".into(),
        rec_type::BOUNDARY => "boundary".into(),
        rec_type::ATTRIBUTE_UPDATE => "attribute-update".into(),
        _ => format!("unknown: {t:x}"),
    };
    let mut s = base;
    if t & rec_type::EXTERNAL != 0 {
        s.push_str(" (ext)");
    }
    if t & rec_type::SYNC != 0 {
        s.push_str(" (sync)");
    }
    s
}

fn print_data(data: &[u8]) -> String {
    let mut s = hex(data);
    if data.len() == 4 {
        s.push_str(&format!(" (dec={})", u32_at(data, 0).unwrap_or(0)));
    }
    s
}

/// doveadm-dump-log.c header_fields: base header fields a HEADER_UPDATE may name.
const HEADER_FIELDS: [(&str, usize, usize); 20] = [
    ("minor_version", hdr_off::MINOR_VERSION, 1),
    ("base_header_size", hdr_off::BASE_HEADER_SIZE, 2),
    ("header_size", hdr_off::HEADER_SIZE, 4),
    ("record_size", hdr_off::RECORD_SIZE, 4),
    ("compat_flags", hdr_off::COMPAT_FLAGS, 1),
    ("indexid", hdr_off::INDEXID, 4),
    ("flags", hdr_off::FLAGS, 4),
    ("uid_validity", hdr_off::UID_VALIDITY, 4),
    ("next_uid", hdr_off::NEXT_UID, 4),
    ("messages_count", hdr_off::MESSAGES_COUNT, 4),
    (
        "unused_old_recent_messages_count",
        hdr_off::UNUSED_OLD_RECENT_MESSAGES_COUNT,
        4,
    ),
    ("seen_messages_count", hdr_off::SEEN_MESSAGES_COUNT, 4),
    ("deleted_messages_count", hdr_off::DELETED_MESSAGES_COUNT, 4),
    ("first_recent_uid", hdr_off::FIRST_RECENT_UID, 4),
    (
        "first_unseen_uid_lowwater",
        hdr_off::FIRST_UNSEEN_UID_LOWWATER,
        4,
    ),
    (
        "first_deleted_uid_lowwater",
        hdr_off::FIRST_DELETED_UID_LOWWATER,
        4,
    ),
    ("log_file_seq", hdr_off::LOG_FILE_SEQ, 4),
    ("log_file_tail_offset", hdr_off::LOG_FILE_TAIL_OFFSET, 4),
    ("log_file_head_offset", hdr_off::LOG_FILE_HEAD_OFFSET, 4),
    ("day_stamp", hdr_off::DAY_STAMP, 4),
];

fn try_uint(data: &[u8]) -> String {
    match data.len() {
        1 => data[0].to_string(),
        2 => u16_at(data, 0).unwrap_or(0).to_string(),
        4 => u32_at(data, 0).unwrap_or(0).to_string(),
        8 => u64_at(data, 0).unwrap_or(0).to_string(),
        _ => hex(data),
    }
}

fn dump_log(data: &[u8], d: &Dates, out: &mut String) -> Result<()> {
    if data.len() < HEADER_MIN_SIZE {
        return Err(Error::Invalid(format!(
            "file hdr read() {} != {HEADER_SIZE}",
            data.len()
        )));
    }
    let h = LogHeader::decode_raw(data);
    let _ = writeln!(out, "version = {}.{}", h.major_version, h.minor_version);
    let _ = writeln!(out, "hdr size = {}", h.hdr_size);
    let _ = writeln!(out, "index id = {}", h.indexid);
    let _ = writeln!(out, "file seq = {}", h.file_seq);
    let _ = writeln!(
        out,
        "prev file = {}/{}",
        h.prev_file_seq, h.prev_file_offset
    );
    let _ = writeln!(out, "create stamp = {}", h.create_stamp);
    let _ = writeln!(out, "initial modseq = {}", h.initial_modseq);
    let _ = writeln!(out, "compat flags = {:x}", h.compat_flags);
    let mut modseq = h.initial_modseq;
    let version = h.version();
    let mut prev_intro_size: u16 = 0;
    let mut pos = h.hdr_size as usize;
    while pos < data.len() {
        if pos + RECORD_HEADER_SIZE > data.len() {
            let _ = writeln!(
                out,
                "error: rec hdr read() {} != {RECORD_HEADER_SIZE}",
                data.len() - pos
            );
            break;
        }
        let raw_size = [data[pos], data[pos + 1], data[pos + 2], data[pos + 3]];
        let size = offset_to_u32(raw_size) as usize;
        let t = u32_at(data, pos + 4).unwrap_or(0);
        if size < RECORD_HEADER_SIZE {
            let _ = writeln!(
                out,
                "record: offset={pos}, type={}, size=broken ({:x})",
                log_type_name(t),
                u32::from_le_bytes(raw_size)
            );
            break;
        }
        let _ = write!(
            out,
            "record: offset={pos}, type={}, size={size}",
            log_type_name(t)
        );
        if size > data.len() - pos {
            let _ = writeln!(
                out,
                "\nerror: rec data read() {} != {}",
                data.len() - pos - RECORD_HEADER_SIZE,
                size - RECORD_HEADER_SIZE
            );
            break;
        }
        let payload = &data[pos + RECORD_HEADER_SIZE..pos + size];
        let body = RecordBody::decode(t, payload);
        let prev = modseq;
        match &body {
            Ok(b) => update_modseq(t, b, &mut modseq, version),
            Err(_) => {
                if modseq != 0
                    && matches!(
                        t & rec_type::TYPE_MASK,
                        rec_type::APPEND
                            | rec_type::KEYWORD_UPDATE
                            | rec_type::KEYWORD_RESET
                            | rec_type::ATTRIBUTE_UPDATE
                    )
                {
                    modseq += 1;
                }
            }
        }
        if modseq > prev {
            let _ = write!(out, ", modseq={modseq}");
        }
        let _ = writeln!(out);
        match body {
            Ok(b) => print_body(&b, payload, &mut prev_intro_size, d, out),
            Err(e) => {
                let _ = writeln!(out, " - broken record: {e}");
            }
        }
        pos += size;
    }
    Ok(())
}

fn print_body(
    b: &RecordBody,
    payload: &[u8],
    prev_intro_size: &mut u16,
    d: &Dates,
    out: &mut String,
) {
    match b {
        RecordBody::Expunge(v) => {
            let s: String = v
                .iter()
                .map(|r| format!("{}-{},", r.uid1, r.uid2))
                .collect();
            let _ = writeln!(out, " - uids={s}");
        }
        RecordBody::ExpungeGuid(v) => {
            for e in v {
                let _ = writeln!(out, " - uid={} (guid {})", e.uid, print_data(&e.guid));
            }
        }
        RecordBody::Append(v) => {
            let mut s = String::new();
            for a in v {
                s.push_str(&a.uid.to_string());
                if a.flags != 0 {
                    s.push_str(&format!(" (flags={:x})", a.flags));
                }
                s.push(',');
            }
            let _ = writeln!(out, " - uids={s}");
        }
        RecordBody::FlagUpdate(v) => {
            for u in v {
                let _ = writeln!(
                    out,
                    " - uids={}-{} (flags +{:x}-{:x}, modseq_inc_flag={})",
                    u.uid1, u.uid2, u.add_flags, u.remove_flags, u.modseq_inc_flag
                );
            }
        }
        RecordBody::HeaderUpdate(v) => {
            // doveadm prints only the first item
            if let Some(p) = v.first() {
                let (mut off, mut data) = (p.offset as usize, &p.data[..]);
                while !data.is_empty() {
                    match HEADER_FIELDS
                        .iter()
                        .find(|(_, o, s)| *o == off && *s <= data.len())
                    {
                        Some((name, _, s)) => {
                            let _ = writeln!(out, " - {name} = {}", try_uint(&data[..*s]));
                            off += s;
                            data = &data[*s..];
                        }
                        None => {
                            let _ = writeln!(
                                out,
                                " - offset = {off}, size = {}: {}",
                                data.len(),
                                print_data(data)
                            );
                            break;
                        }
                    }
                }
            }
        }
        RecordBody::ExtIntro(v) => {
            if let Some(i) = v.first() {
                *prev_intro_size = i.record_size;
                let _ = writeln!(out, " - ext_id = {}", i.ext_id);
                let _ = writeln!(out, " - reset_id = {}", i.reset_id);
                let _ = writeln!(out, " - hdr_size = {}", i.hdr_size);
                let _ = writeln!(out, " - record_size = {}", i.record_size);
                let _ = writeln!(out, " - record_align = {}", i.record_align);
                let _ = writeln!(out, " - flags = {}", i.flags);
                let _ = writeln!(out, " - name_size = {}", i.name.len());
                if !i.name.is_empty() {
                    let _ = writeln!(out, " - name = '{}'", String::from_utf8_lossy(&i.name));
                }
            }
        }
        RecordBody::ExtReset(r) => {
            let _ = writeln!(out, " - new_reset_id = {}", r.new_reset_id);
            let _ = writeln!(out, " - preserve_data = {}", r.preserve_data);
        }
        RecordBody::ExtHdrUpdate(v) | RecordBody::ExtHdrUpdate32(v) => {
            if let Some(p) = v.first() {
                let _ = writeln!(
                    out,
                    " - offset = {}, size = {}: {}",
                    p.offset,
                    p.data.len(),
                    print_data(&p.data)
                );
            }
        }
        RecordBody::ExtRecUpdate(raw) => {
            let rs = *prev_intro_size as usize;
            let stride = crate::format::log::ext_rec_stride(*prev_intro_size);
            let mut i = 0;
            while i + 4 <= raw.len() {
                let uid = u32_at(raw, i).unwrap_or(0);
                if rs <= raw.len() - i - 4 {
                    let _ = writeln!(out, " - uid={uid}: {}", print_data(&raw[i + 4..i + 4 + rs]));
                } else {
                    let _ = writeln!(out, " - uid={uid}: (record_size too large)");
                }
                i += stride;
            }
        }
        RecordBody::ExtAtomicInc(v) => {
            for a in v {
                let _ = writeln!(
                    out,
                    " - uid={}: {}{}",
                    a.uid,
                    if a.diff > 0 { "+" } else { "" },
                    a.diff
                );
            }
        }
        RecordBody::KeywordUpdate(k) => {
            let s: String = k
                .uids
                .iter()
                .map(|r| format!("{}-{},", r.uid1, r.uid2))
                .collect();
            let _ = writeln!(
                out,
                " - modify={}, name={}, uids={s}",
                k.modify_type,
                String::from_utf8_lossy(&k.name)
            );
        }
        RecordBody::KeywordReset(v) => {
            let s: String = v
                .iter()
                .map(|r| format!("{}-{}, ", r.uid1, r.uid2))
                .collect();
            let _ = writeln!(out, " - uids={s}");
        }
        RecordBody::ModseqUpdate(v) => {
            for m in v {
                let _ = writeln!(out, " - uid={} modseq={}", m.uid, m.modseq);
            }
        }
        RecordBody::Boundary(s) => {
            let _ = writeln!(out, " - size={s}");
        }
        RecordBody::AttributeUpdate(v) => {
            for c in v {
                let _ = write!(
                    out,
                    " - {}: {}/{} : timestamp={}",
                    if c.set { "add" } else { "remove" },
                    if c.private { "private" } else { "shared" },
                    String::from_utf8_lossy(&c.key),
                    d.fmt(c.timestamp as i64)
                );
                if let Some(l) = c.value_len {
                    let _ = write!(out, " value_len={l}");
                }
                let _ = writeln!(out);
            }
        }
        RecordBody::IndexDeleted | RecordBody::IndexUndeleted | RecordBody::Unknown(_) => {
            let _ = payload;
        }
    }
}
