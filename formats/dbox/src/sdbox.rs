//! An sdbox mailbox: one `u.<uid>` dbox file per message in `dbox-Mails/`, flags,
//! keywords, UIDs and modseqs only in the mailbox index (src/lib-storage/index/dbox-single/
//! sdbox-save.c, sdbox-copy.c, sdbox-sync.c, sdbox-mail.c; dbox-common/dbox-save.c).
//!
//! Save protocol (crash-safe, as sdbox-save.c):
//! 1. the message goes to `.temp.<host>.<pid>.<n>` in `dbox-Mails/` (file header, message
//!    header with the body size patched in afterwards, LF body, metadata), fsync;
//! 2. at commit, under the index log lock: UIDs are assigned from the locked view's
//!    next_uid, each temp file is renamed to `u.<uid>`, the directory fsynced, and one
//!    EXTERNAL transaction appends the records (flags, keywords), sets the `dbox-hdr`
//!    POP3 flags and `hdr-pop3-uidl` when a save kept a POP3 UIDL or order
//!    (`crate::pop3`), and applies the transaction's flag changes and expunges (whose
//!    `u.N` files are unlinked after the log write, as sdbox_sync_finish does).
//!
//! A crash before step 2 leaves only temp files (Dovecot deletes `.temp.*` older than
//! 36 h); a crash between rename and log write leaves `u.N` files above next_uid that the
//! next save overwrites and `doveadm force-resync` would adopt.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use mailstore::{
    Changes, CommitResult, Error, FlagChange, FlagUpdate, Flags, Guid, Keyword, LineEndingReader,
    MailRecord, Mailbox, MailboxGuid, MailboxStatus, ModSeq, NewMail, Pop3Info, Result,
    SaveLineEndings, SyncGuard, Transaction, Uid, VsizeCounter,
};
use mailsync_index::locked_commit::commit_locked;
use mailsync_index::{IndexWriter, View};

use crate::file::{self, key, BodyReader, FileHeader, Metadata};
use crate::index::{dbox_header, ix_err, CommitError};
use crate::layout::{DboxKind, Layout, INDEX_PREFIX};
use crate::pop3;

/// What a `u.N` file tells about its message (immutable once written).
#[derive(Clone, Debug)]
pub(crate) struct FileInfo {
    /// `G`, allocated once (the record it ends in shares it).
    pub guid: Guid,
    pub received: i64,
    pub saved: i64,
    pub physical: u64,
    pub vsize: Option<u64>,
    pub body_offset: u64,
    /// sdbox: the file's `P` / `O` lines (None when it has neither: no allocation for a
    /// message without POP3 data), whatever the index header flags say — they are
    /// applied when asked (`Mailbox::pop3_info`), as the flags may be set later. mdbox
    /// leaves this None and reads the lines when asked.
    pub pop3: Option<Box<Pop3Info>>,
}

pub struct SdboxMailbox {
    name: String,
    dir: PathBuf,
    writer: IndexWriter,
    view: View,
    guid: MailboxGuid,
    line_endings: SaveLineEndings,
    /// The `u.N` files read so far, by UID: a file is read when its message is first asked
    /// about ([`cached_info`]), never at open, so a handle that only saves (a backup's
    /// destination) reads none and holds none.
    files: HashMap<u32, FileInfo>,
    /// Where the read-ahead ([`Mailbox::prefetch_mails`]) goes on: the position in the
    /// view of the next message to look at (0 again when the view is read again).
    read_ahead_at: usize,
    /// This handle changed the mailbox index: `dovecot.index` is brought up to date when it
    /// is dropped ([`crate::index::close_index`]).
    index_written: bool,
}

impl Drop for SdboxMailbox {
    fn drop(&mut self) {
        if self.index_written {
            crate::index::close_index(&self.writer);
        }
    }
}

/// `u.<uid>` (SDBOX_MAIL_FILE_FORMAT).
pub fn mail_file_name(uid: u32) -> String {
    format!("u.{uid}")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A unique temp file name (dbox_file_create_fd: `.temp.<host>.<pid>.<unique>`).
pub(crate) fn temp_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        ".temp.{}.P{}Q{}M{}",
        mailstore::hostname(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_micros())
            .unwrap_or(0)
    )
}

/// Reads the single message of a `u.N` file.
pub(crate) fn read_sdbox_file(path: &Path) -> Result<Option<FileInfo>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let meta = f.metadata().map_err(|e| Error::io("fstat", path, e))?;
    let hdr = file::read_file_header(&f).map_err(|e| e.into_store_error(path))?;
    let m = file::read_mail_at(&f, &hdr, hdr.header_len as u64)
        .map_err(|e| e.into_store_error(path))?;
    Ok(Some(info_of(&m, meta.ctime())))
}

/// The record fields of a message from its metadata; `ctime` is the saved date when the
/// file has no `S` line (dbox_mail_get_save_date: the file's st_ctime).
pub(crate) fn info_of(m: &file::MailExtent, ctime: i64) -> FileInfo {
    let all = pop3::Wanted {
        uidl: true,
        order: true,
    };
    let kept = pop3::from_metadata(|k| m.metadata.get(k), all);
    FileInfo {
        pop3: (!kept.is_empty()).then(|| Box::new(kept)),
        ..info_from(|k| m.metadata.get(k), m.body_size, m.body_offset, ctime)
    }
}

/// What the metadata (looked up by `get`) and the message header tell about a message;
/// `ctime` is the saved date when there is no `S` line. POP3 data is not read (see
/// [`FileInfo::pop3`]).
pub(crate) fn info_from<'a>(
    get: impl Fn(u8) -> Option<&'a [u8]>,
    body_size: u64,
    body_offset: u64,
    ctime: i64,
) -> FileInfo {
    let hex = |k| get(k).and_then(file::parse_hex);
    FileInfo {
        guid: Guid::from_bytes(get(key::GUID).unwrap_or_default()),
        received: hex(key::RECEIVED_TIME).unwrap_or(0) as i64,
        saved: hex(key::OLDV1_SAVE_TIME).map(|v| v as i64).unwrap_or(ctime),
        // MailExtent::physical_size
        physical: hex(key::PHYSICAL_SIZE).unwrap_or(body_size),
        vsize: hex(key::VIRTUAL_SIZE),
        body_offset,
        pop3: None,
    }
}

/// The metadata of a message being written.
pub(crate) struct MessageMeta<'a> {
    pub mail: &'a NewMail,
    pub guid: &'a [u8],
    /// Written as `B` (mdbox only, dbox_save_write_metadata).
    pub orig_mailbox: Option<&'a str>,
}

/// Bytes gathered before a `write`: a message up to this size (with its metadata) is
/// written by one call, a bigger one in chunks of this size.
const WRITE_CHUNK: usize = 64 * 1024;

/// Writes `prefix` (an sdbox file header, or nothing) and one message as a dbox message
/// (header, converted body, metadata) to `out` at its current end; the message header
/// lands at `offset`. Returns (body size, virtual size, total size without `prefix`).
///
/// The bytes go out in [`WRITE_CHUNK`]s: a message that fits is written by one call with
/// its final header, a bigger one has its header's size patched in place at the end.
pub(crate) fn write_message(
    out: &mut File,
    path: &Path,
    offset: u64,
    prefix: &[u8],
    meta: &MessageMeta<'_>,
    line_endings: SaveLineEndings,
    body: &mut dyn Read,
) -> Result<(u64, u64, u64)> {
    let MessageMeta {
        mail,
        guid,
        orig_mailbox,
    } = *meta;
    let werr = |e| Error::io("write", path, e);
    let header_at = prefix.len();
    let header_end = header_at + file::MSG_HEADER_SIZE;
    // grown up to WRITE_CHUNK as the message turns out bigger: a small message costs no
    // 64 KiB of zeroing
    let mut pending = vec![0u8; (8 * 1024).max(header_end)];
    pending[..header_at].copy_from_slice(prefix);
    pending[header_at..header_end].copy_from_slice(&file::encode_message_header(0));
    let mut len = header_end;
    // the message header went out with a first full chunk, still holding size 0
    let mut header_written = false;
    let mut reader = LineEndingReader::new(body, line_endings);
    let mut size = 0u64;
    let mut vsize = VsizeCounter::default();
    loop {
        if len == pending.len() && len < WRITE_CHUNK {
            pending.resize((len * 2).min(WRITE_CHUNK), 0);
        } else if len == pending.len() {
            out.write_all(&pending).map_err(werr)?;
            len = 0;
            header_written = true;
        }
        let n = match reader.read(&mut pending[len..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", "message input", e)),
        };
        vsize.update(&pending[len..len + n]);
        len += n;
        size += n as u64;
    }
    let mut md = Metadata::default();
    let received = mail.received_date.unwrap_or_else(now);
    md.lines.push((
        key::RECEIVED_TIME,
        format!("{:x}", received.max(0)).into_bytes(),
    ));
    md.lines.push((
        key::VIRTUAL_SIZE,
        format!("{:x}", vsize.total()).into_bytes(),
    ));
    // dbox-save.c dbox_save_write_metadata: `P` and `O` after `V`, before `G`
    if !mail.pop3.uidl.is_empty() && pop3::storable_uidl(&mail.pop3.uidl).is_none() {
        crate::warn(&format!(
            "POP3 UIDL {:?} can't be kept in a dbox metadata line: dropped",
            String::from_utf8_lossy(&mail.pop3.uidl)
        ));
    }
    md.lines.extend(pop3::metadata_lines(&mail.pop3));
    md.lines.push((key::GUID, guid.to_vec()));
    if let Some(b) = orig_mailbox {
        if !b.contains(['\r', '\n']) {
            md.lines.push((key::ORIG_MAILBOX, b.as_bytes().to_vec()));
        }
    }
    if let Some(s) = mail.saved_date {
        md.lines
            .push((key::OLDV1_SAVE_TIME, format!("{:x}", s.max(0)).into_bytes()));
    }
    let block = md.encode();
    let header = file::encode_message_header(size);
    if !header_written {
        pending[header_at..header_end].copy_from_slice(&header);
    }
    pending.truncate(len);
    pending.extend_from_slice(&block);
    out.write_all(&pending).map_err(werr)?;
    if header_written {
        out.write_all_at(&header, offset).map_err(werr)?;
    }
    Ok((
        size,
        vsize.total(),
        file::MSG_HEADER_SIZE as u64 + size + block.len() as u64,
    ))
}

/// Checks a GUID given to save: it becomes a metadata line, so no CR/LF, not empty.
pub(crate) fn checked_guid(mail: &NewMail) -> Result<Vec<u8>> {
    match &mail.guid {
        None => Ok(Guid::generate().as_bytes().to_vec()),
        Some(g) if g.is_empty() || g.as_bytes().iter().any(|&b| b == b'\n' || b == b'\r') => Err(
            Error::Params(format!("GUID can't be stored in a dbox file: {g:?}")),
        ),
        Some(g) => Ok(g.as_bytes().to_vec()),
    }
}

/// Validates keywords given to save/update (they become index keyword names).
pub(crate) fn check_keywords(keywords: &[Keyword]) -> Result<()> {
    for k in keywords {
        if !Keyword::is_valid_atom(k.as_bytes()) {
            return Err(Error::Params(format!("Invalid keyword: {k}")));
        }
    }
    Ok(())
}

/// Puts a flag update of `uid` (whose current state is `msg`) into an index transaction.
pub(crate) fn add_flag_update(
    t: &mut mailsync_index::Transaction<'_>,
    msg: &mailsync_index::Message<'_>,
    update: &FlagUpdate,
) {
    let uid = msg.uid();
    let mut flags = msg.system_flags();
    let mut keywords: Vec<Keyword> = msg.keywords().into_iter().map(Keyword::new).collect();
    let before_kw = keywords.clone();
    update.apply(&mut flags, &mut keywords);
    let sys = |f: Flags| f.0 & 0x1f;
    let (old, new) = (sys(msg.system_flags()), sys(flags));
    if old != new {
        t.flags(uid, uid, new & !old, old & !new);
    }
    for k in &keywords {
        if !before_kw.contains(k) {
            t.keywords(true, k.as_bytes(), &[uid]);
        }
    }
    for k in &before_kw {
        if !keywords.contains(k) {
            t.keywords(false, k.as_bytes(), &[uid]);
        }
    }
}

/// The UIDs granted to saves wishing for `wishes`, from next_uid `next`: a wish at or
/// above the next free UID is granted, else the next free UID is used.
pub(crate) fn assign_uids(mut next: u32, wishes: &[Option<Uid>]) -> Vec<u32> {
    wishes
        .iter()
        .map(|w| {
            let uid = match w {
                Some(Uid(u)) if *u >= next => *u,
                _ => next,
            };
            next = uid.saturating_add(1);
            uid
        })
        .collect()
}

/// Status of a view given each message's (vsize, saved date).
pub(crate) fn status_of(
    view: &View,
    guid: MailboxGuid,
    sizes: impl Iterator<Item = (u64, i64)>,
    last_guid: Option<Guid>,
) -> MailboxStatus {
    status_from(
        &IndexCounters::of(view),
        view.messages().map(|m| (m.uid(), m.system_flags())),
        guid,
        sizes,
        last_guid,
    )
}

/// The mailbox-wide numbers of an index view that status and records need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IndexCounters {
    pub uid_validity: u32,
    pub next_uid: u32,
    pub highest_modseq: u64,
    pub first_recent_uid: u32,
}

impl IndexCounters {
    pub(crate) fn of(view: &View) -> IndexCounters {
        IndexCounters {
            uid_validity: view.uid_validity(),
            next_uid: view.next_uid(),
            highest_modseq: view.highest_modseq(),
            first_recent_uid: view.header().first_recent_uid,
        }
    }
}

/// Status from the index counters and each message's (uid, system flags) (sdbox and
/// mdbox): \Recent from first_recent_uid, HIGHESTMODSEQ at least 1 as doveadm shows it.
pub(crate) fn status_from(
    counters: &IndexCounters,
    messages: impl Iterator<Item = (u32, Flags)>,
    guid: MailboxGuid,
    sizes: impl Iterator<Item = (u64, i64)>,
    last_guid: Option<Guid>,
) -> MailboxStatus {
    let mut st = MailboxStatus {
        uid_validity: counters.uid_validity,
        uid_next: counters.next_uid,
        highest_modseq: counters.highest_modseq.max(1),
        guid,
        last_guid,
        ..MailboxStatus::default()
    };
    for (uid, flags) in messages {
        st.messages += 1;
        if uid >= counters.first_recent_uid {
            st.recent += 1;
        }
        if !flags.contains(Flags::SEEN) {
            st.unseen += 1;
        }
    }
    for (i, (vsize, saved)) in sizes.enumerate() {
        st.vsize += vsize;
        if i == 0 {
            st.first_saved = Some(saved);
        }
    }
    st
}

impl SdboxMailbox {
    /// The GUID of the message with the highest UID (from its file's metadata).
    fn last_guid(&mut self) -> Result<Option<Guid>> {
        let Some(m) = self.view.messages().last() else {
            return Ok(None);
        };
        Ok(cached_info(&mut self.files, &self.dir, m.uid())?
            .map(|info| mail_record(&self.view, &m, info).guid))
    }

    pub fn open(layout: &Layout, vname: &str) -> Result<SdboxMailbox> {
        let dir = layout.mail_dir(vname);
        let writer = IndexWriter::open(&dir, INDEX_PREFIX);
        let view = writer.view().map_err(ix_err)?;
        let guid = dbox_header(&view, DboxKind::Single)
            .map(|h| MailboxGuid(h.mailbox_guid))
            .filter(|g| !g.is_zero())
            .ok_or_else(|| {
                Error::corrupted(
                    dir.join(INDEX_PREFIX),
                    "sdbox: missing dbox-hdr mailbox GUID (needs force-resync)",
                )
            })?;
        let mut mb = SdboxMailbox {
            name: vname.to_string(),
            dir,
            writer,
            view,
            guid,
            line_endings: layout.line_endings,
            files: HashMap::new(),
            read_ahead_at: 0,
            index_written: false,
        };
        let present = mail_file_uids(&mb.dir)?;
        let lost: Vec<u32> = mb
            .view
            .messages()
            .map(|m| m.uid())
            .filter(|uid| present.binary_search(uid).is_err())
            .collect();
        mb.expunge_lost(&lost);
        Ok(mb)
    }

    /// Expunges from the index the records of `uids` whose `u.N` file is still missing
    /// under the index log lock. An expunge unlinks the file only after its log write
    /// (here and in Dovecot's sdbox sync), so a record that outlives its file was left by
    /// someone deleting the file by hand (or by an older mailsync, which unlinked first,
    /// killed in between); Dovecot's index rebuild drops such records too
    /// (sdbox-sync-rebuild.c). Without this the mailbox would count a message no one can
    /// read, forever. Best effort: when the index can't be written the record stays hidden.
    /// (A file missing only until someone's expunge reaches the index is left alone: the
    /// record is gone under the lock, and the message is left out when asked about.)
    fn expunge_lost(&mut self, uids: &[u32]) {
        if uids.is_empty() {
            return;
        }
        let dir = self.dir.clone();
        let result = commit_locked(
            &self.writer,
            true,
            |view, t| -> std::result::Result<Vec<u32>, CommitError> {
                let mut done = Vec::new();
                for &uid in uids {
                    let path = dir.join(mail_file_name(uid));
                    let gone = matches!(fs::symlink_metadata(&path),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound);
                    if view.message(uid).is_some() && gone {
                        t.expunge_guid(uid, [0; 16]);
                        done.push(uid);
                    }
                }
                Ok(done)
            },
        );
        match result {
            Ok((done, _)) if !done.is_empty() => {
                crate::warn(&format!(
                    "sdbox {}: the files of UIDs {done:?} are gone but the index still listed \
                     them (a run killed between unlink and index update): expunged from the \
                     index",
                    self.dir.display()
                ));
                match self.writer.view() {
                    Ok(v) => self.view = v,
                    Err(e) => crate::warn(&format!("{}: {e}", self.dir.display())),
                }
            }
            Ok(_) => {}
            Err(CommitError(e)) => crate::warn(&format!(
                "sdbox {}: can't expunge the index records of lost files: {e}",
                self.dir.display()
            )),
        }
    }

    /// Re-reads the index. Every message of the view before had its file checked (at open
    /// by a directory listing, then here); of the newer ones, the files are stat'ed, except
    /// those in `placed` (sorted): this handle has just renamed them into place. So the
    /// records of files gone behind the index's back are found without reading a file.
    fn refresh(&mut self, placed: &[u32]) -> Result<()> {
        let checked_uid = self.view.messages().last().map_or(0, |m| m.uid());
        self.view = self.writer.view().map_err(ix_err)?;
        self.read_ahead_at = 0;
        let view = &self.view;
        self.files.retain(|&uid, _| view.message(uid).is_some());
        let mut lost = Vec::new();
        for m in self.view.messages().rev() {
            let uid = m.uid();
            if uid <= checked_uid {
                break;
            }
            if placed.binary_search(&uid).is_ok() {
                continue;
            }
            let path = self.dir.join(mail_file_name(uid));
            match fs::symlink_metadata(&path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => lost.push(uid),
                Err(e) => return Err(Error::io("stat", &path, e)),
            }
        }
        self.expunge_lost(&lost);
        Ok(())
    }
}

/// The UID named by an sdbox mail file name, `u.<uid>` (SDBOX_MAIL_FILE_PREFIX).
pub(crate) fn mail_file_uid(name: &[u8]) -> Option<u32> {
    let digits = name.strip_prefix(b"u.")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits)
        .ok()?
        .parse::<u32>()
        .ok()
        .filter(|&uid| uid > 0)
}

/// The UIDs of the `u.N` files in `dir`, sorted (one directory listing).
fn mail_file_uids(dir: &Path) -> Result<Vec<u32>> {
    let mut uids = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("opendir", dir, e))? {
        let entry = entry.map_err(|e| Error::io("readdir", dir, e))?;
        if let Some(uid) = mail_file_uid(entry.file_name().as_encoded_bytes()) {
            uids.push(uid);
        }
    }
    uids.sort_unstable();
    Ok(uids)
}

/// The metadata of message `uid` from the cache `files`, its `u.N` file in `dir` read and
/// cached on the first ask; None when the file is gone (expunged meanwhile).
fn cached_info<'a>(
    files: &'a mut HashMap<u32, FileInfo>,
    dir: &Path,
    uid: u32,
) -> Result<Option<&'a FileInfo>> {
    match files.entry(uid) {
        Entry::Occupied(e) => Ok(Some(e.into_mut())),
        Entry::Vacant(e) => {
            Ok(read_sdbox_file(&dir.join(mail_file_name(uid)))?.map(|i| &*e.insert(i)))
        }
    }
}

/// The `MailRecord` of an indexed message whose dbox metadata is `info`.
pub(crate) fn mail_record(
    view: &View,
    m: &mailsync_index::Message<'_>,
    info: &FileInfo,
) -> MailRecord {
    record_from(
        view.header().first_recent_uid,
        m.uid(),
        m.system_flags(),
        m.keywords().into_iter().map(Keyword::new).collect(),
        m.modseq(),
        info.clone().into(),
    )
}

/// What a `MailRecord` takes of a message's dbox metadata ([`FileInfo`] without what only
/// reading the message needs), its GUID already in the record's form.
#[derive(Clone, Debug)]
pub(crate) struct RecordInfo {
    pub guid: Guid,
    pub received: i64,
    pub saved: i64,
    pub physical: u64,
    pub vsize: Option<u64>,
}

impl From<FileInfo> for RecordInfo {
    fn from(info: FileInfo) -> RecordInfo {
        RecordInfo {
            guid: info.guid,
            received: info.received,
            saved: info.saved,
            physical: info.physical,
            vsize: info.vsize,
        }
    }
}

/// The `MailRecord` of a message (sdbox and mdbox): flags, keywords and modseq from the
/// index, \Recent from its first_recent_uid, the rest from the dbox metadata `info`.
pub(crate) fn record_from(
    first_recent_uid: u32,
    uid: u32,
    system_flags: Flags,
    keywords: Vec<Keyword>,
    modseq: u64,
    info: RecordInfo,
) -> MailRecord {
    let mut flags = system_flags;
    if uid >= first_recent_uid {
        flags.insert(Flags::RECENT);
    }
    MailRecord {
        uid: Uid(uid),
        guid: info.guid,
        flags,
        keywords,
        modseq: ModSeq(modseq),
        received_date: info.received,
        saved_date: info.saved,
        physical_size: info.physical,
        virtual_size: info.vsize,
    }
}

/// The virtual size of a message stored in the dbox file at `path`: the `V` metadata when
/// present, else counted by streaming the body.
pub(crate) fn stored_vsize(path: &Path, info: &FileInfo) -> Result<u64> {
    if let Some(v) = info.vsize {
        return Ok(v);
    }
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut r = BodyReader::new(f, info.body_offset, info.physical);
    mailstore::virtual_size_of(&mut r).map_err(|e| Error::io("read", path, e))
}

impl Mailbox for SdboxMailbox {
    fn name(&self) -> &str {
        &self.name
    }

    fn sync(&mut self) -> Result<()> {
        self.refresh(&[])
    }

    fn counters(&mut self) -> Result<MailboxStatus> {
        let last = self.last_guid()?;
        Ok(status_of(&self.view, self.guid, std::iter::empty(), last))
    }

    fn status(&mut self) -> Result<MailboxStatus> {
        let mut sizes = Vec::new();
        for m in self.view.messages() {
            if let Some(info) = cached_info(&mut self.files, &self.dir, m.uid())? {
                let vsize = stored_vsize(&self.dir.join(mail_file_name(m.uid())), info)?;
                sizes.push((vsize, info.saved));
            }
        }
        let last = self.last_guid()?;
        Ok(status_of(&self.view, self.guid, sizes.into_iter(), last))
    }

    fn mails(&mut self) -> Result<Vec<MailRecord>> {
        let mut mails = Vec::with_capacity(self.view.messages_count());
        for m in self.view.messages() {
            if let Some(info) = cached_info(&mut self.files, &self.dir, m.uid())? {
                mails.push(mail_record(&self.view, &m, info));
            }
        }
        Ok(mails)
    }

    /// Reads the `u.N` files of up to `max` more messages, by UID, into the cache
    /// `mails()` reads from (what it would read and keep itself).
    fn prefetch_mails(&mut self, max: usize) -> Result<bool> {
        let mut read = 0;
        for m in self.view.messages_from(self.read_ahead_at) {
            if read >= max.max(1) {
                return Ok(false);
            }
            self.read_ahead_at += 1;
            if !self.files.contains_key(&m.uid()) {
                cached_info(&mut self.files, &self.dir, m.uid())?;
                read += 1;
            }
        }
        Ok(true)
    }

    fn open_mail(&mut self, uid: Uid) -> Result<Box<dyn Read + Send>> {
        if self.view.message(uid.0).is_none() {
            return Err(Error::MailNotFound(uid));
        }
        let info =
            cached_info(&mut self.files, &self.dir, uid.0)?.ok_or(Error::MailNotFound(uid))?;
        let path = self.dir.join(mail_file_name(uid.0));
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MailNotFound(uid))
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        Ok(Box::new(BodyReader::new(
            f,
            info.body_offset,
            info.physical,
        )))
    }

    /// From the `P` / `O` lines read with the file, as far as the index header allows
    /// (sdbox-mail.c sdbox_mail_get_special; [`pop3::Pop3Gate`]): no file is read.
    fn pop3_info(&mut self, uid: Uid) -> Result<Pop3Info> {
        if self.view.message(uid.0).is_none() {
            return Err(Error::MailNotFound(uid));
        }
        let info =
            cached_info(&mut self.files, &self.dir, uid.0)?.ok_or(Error::MailNotFound(uid))?;
        let Some(kept) = info.pop3.as_deref() else {
            return Ok(Pop3Info::default());
        };
        let wanted = pop3::Pop3Gate::of(&self.view, DboxKind::Single).wanted(uid.0);
        Ok(Pop3Info {
            uidl: if wanted.uidl {
                kept.uidl.clone()
            } else {
                Vec::new()
            },
            order: if wanted.order { kept.order } else { 0 },
        })
    }

    fn begin(&mut self) -> Result<Box<dyn Transaction + '_>> {
        Ok(Box::new(SdboxTransaction {
            mb: self,
            saves: Vec::new(),
            updates: Vec::new(),
            expunges: Vec::new(),
            by_sync: false,
        }))
    }

    /// `.dovecot-box-sync.lock` in the mailbox directory (which holds its index).
    fn lock_for_sync(&mut self, timeout: std::time::Duration) -> Result<Option<SyncGuard>> {
        mailsync_index::lock::lock_mailbox_for_sync(&self.dir, timeout)
    }

    fn changes_since(&mut self, since: ModSeq) -> Result<Changes> {
        Ok(self.view.changes_since(since))
    }

    fn flag_changes_since(
        &mut self,
        since: ModSeq,
        uids: &[Uid],
    ) -> Result<Vec<(Uid, FlagChange)>> {
        Ok(self.view.flag_changes_since(since, uids))
    }

    fn set_mailbox_guid(&mut self, guid: MailboxGuid) -> Result<()> {
        self.index_written = true;
        crate::index::set_mailbox_guid(&self.dir, DboxKind::Single, guid)?;
        self.guid = guid;
        self.refresh(&[])
    }

    fn enable_modseqs(&mut self) -> Result<()> {
        // already tracked as of the last sync: nothing to lock or read
        if self.view.modseq_header().is_some() {
            return Ok(());
        }
        if crate::index::enable_modseqs(&self.dir)? {
            self.index_written = true;
            self.refresh(&[])?;
        }
        Ok(())
    }

    fn update_mailbox(&mut self, update: &mailstore::MailboxUpdate) -> Result<()> {
        if crate::index::update_index(&self.dir, DboxKind::Single, update)? {
            self.index_written = true;
            self.refresh(&[])?;
        }
        Ok(())
    }
}

struct PendingSave {
    temp: PathBuf,
    mail: NewMail,
}

/// True when the dbox files `a` and `b` hold the same message: equal after their file
/// header lines (which differ only in the creation time), compared as streams.
fn same_message(a: &Path, b: &Path) -> bool {
    let open = |p: &Path| -> Option<(File, u64, u64)> {
        let f = File::open(p).ok()?;
        let h = file::read_file_header(&f).ok()?;
        let len = f.metadata().ok()?.len();
        Some((f, h.header_len as u64, len))
    };
    let (Some((fa, ha, la)), Some((fb, hb, lb))) = (open(a), open(b)) else {
        return false;
    };
    if la - ha.min(la) != lb - hb.min(lb) {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut off = 0u64;
    let total = la - ha.min(la);
    while off < total {
        let want = (total - off).min(ba.len() as u64) as usize;
        let ok = fa.read_exact_at(&mut ba[..want], ha + off).is_ok()
            && fb.read_exact_at(&mut bb[..want], hb + off).is_ok();
        if !ok || ba[..want] != bb[..want] {
            return false;
        }
        off += want as u64;
    }
    true
}

/// Gives each saved temp file its `u.<uid>` name, UIDs as [`assign_uids`]. Dovecot
/// renames over whatever is there; mailsync renames without replacing
/// ([`mailsupport::atomic::rename_noreplace`]) and, when a `u.<uid>` at or above next_uid
/// already exists (a crashed save, or an index that lost track of messages), leaves it
/// alone and takes the next UID: an existing file is never replaced.
fn place_files(
    dir: &Path,
    mut next: u32,
    wishes: &[Option<Uid>],
    saves: &[PendingSave],
) -> Result<Vec<u32>> {
    let mut uids = Vec::with_capacity(saves.len());
    for (s, wish) in saves.iter().zip(wishes) {
        let mut uid = assign_uids(next, std::slice::from_ref(wish))[0];
        loop {
            let target = dir.join(mail_file_name(uid));
            match mailsupport::atomic::rename_noreplace(&s.temp, &target) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A save of this same message that was killed after the rename and
                    // before the index commit (a rerun asks for the same UID): take the
                    // file that is there, byte for byte the same message.
                    if same_message(&s.temp, &target) {
                        let _ = fs::remove_file(&s.temp);
                        break;
                    }
                    crate::warn(&format!(
                        "{} exists but is not in the index: keeping it, using the next UID",
                        target.display()
                    ));
                    uid = uid
                        .checked_add(1)
                        .ok_or_else(|| Error::NotPossible("UIDs exhausted".into()))?;
                }
                Err(e) => return Err(Error::io("rename", &s.temp, e)),
            }
        }
        uids.push(uid);
        next = uid.saturating_add(1);
    }
    Ok(uids)
}

struct SdboxTransaction<'a> {
    mb: &'a mut SdboxMailbox,
    saves: Vec<PendingSave>,
    updates: Vec<(u32, FlagUpdate)>,
    expunges: Vec<u32>,
    /// `mark_as_sync`: the index records are marked SYNC.
    by_sync: bool,
}

impl SdboxTransaction<'_> {
    fn known(&self, uid: Uid) -> Result<()> {
        if self.mb.view.message(uid.0).is_some() {
            Ok(())
        } else {
            Err(Error::MailNotFound(uid))
        }
    }

    fn remove_temps(&mut self) {
        for s in self.saves.drain(..) {
            let _ = fs::remove_file(&s.temp);
        }
    }
}

impl Transaction for SdboxTransaction<'_> {
    fn save(&mut self, mail: NewMail, body: &mut dyn Read) -> Result<()> {
        check_keywords(&mail.keywords)?;
        let guid = checked_guid(&mail)?;
        let temp = self.mb.dir.join(temp_name());
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| Error::io("open", &temp, e))?;
        let result = (|| -> Result<()> {
            let header = FileHeader::encode(now().max(0) as u64);
            write_message(
                &mut f,
                &temp,
                header.len() as u64,
                &header,
                &MessageMeta {
                    mail: &mail,
                    guid: &guid,
                    orig_mailbox: None,
                },
                self.mb.line_endings,
                body,
            )?;
            // made durable at commit, with the transaction's other saves
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        let mut mail = mail;
        mail.guid = Some(Guid::from_bytes(guid));
        self.saves.push(PendingSave { temp, mail });
        Ok(())
    }

    fn update_flags(&mut self, uid: Uid, update: &FlagUpdate) -> Result<()> {
        self.known(uid)?;
        check_keywords(&update.keywords)?;
        self.updates.push((uid.0, update.clone()));
        Ok(())
    }

    fn expunge(&mut self, uid: Uid) -> Result<()> {
        self.known(uid)?;
        if !self.expunges.contains(&uid.0) {
            self.expunges.push(uid.0);
        }
        Ok(())
    }

    fn mark_as_sync(&mut self) {
        self.by_sync = true;
    }

    fn commit(mut self: Box<Self>) -> Result<CommitResult> {
        if self.saves.is_empty() && self.updates.is_empty() && self.expunges.is_empty() {
            // nothing to log: no lock, no index read, no housekeeping
            return Ok(CommitResult {
                saved: Vec::new(),
                uid_validity: self.mb.view.uid_validity(),
            });
        }
        let by_sync = self.by_sync;
        let saves = std::mem::take(&mut self.saves);
        let updates = std::mem::take(&mut self.updates);
        let expunges = std::mem::take(&mut self.expunges);
        let dir = self.mb.dir.clone();
        // every saved file durable before the first is linked into place
        // (mailsupport::durable), outside the index lock
        let temps: Vec<&Path> = saves.iter().map(|s| s.temp.as_path()).collect();
        if let Err((p, e)) = mailsupport::durable::sync_files(&temps) {
            for s in &saves {
                let _ = fs::remove_file(&s.temp);
            }
            return Err(Error::io("fsync", p, e));
        }
        let result = commit_locked(
            &self.mb.writer,
            true,
            |view, t| -> std::result::Result<(Vec<Uid>, u32, Vec<PathBuf>), CommitError> {
                if by_sync {
                    t.mark_sync();
                }
                let wishes: Vec<Option<Uid>> = saves.iter().map(|s| s.mail.uid).collect();
                let uids = place_files(&dir, view.next_uid(), &wishes, &saves)?;
                if !saves.is_empty() {
                    mailsupport::atomic::fsync_dir(&dir)
                        .map_err(|e| Error::io("fsync", &dir, e))?;
                }
                let mut saved_pop3 = pop3::SavedPop3::default();
                for (s, &uid) in saves.iter().zip(&uids) {
                    t.append(uid, s.mail.flags.0 & 0x1f);
                    for k in &s.mail.keywords {
                        t.keywords(true, k.as_bytes(), &[uid]);
                    }
                    saved_pop3.add(&s.mail.pop3, uid);
                }
                // sdbox-save.c sdbox_transaction_save_commit_pre: header flags,
                // dbox_save_assign_uids: hdr-pop3-uidl
                saved_pop3.write(view, t, DboxKind::Single);
                // flag changes against the locked state; messages expunged meanwhile
                // are skipped, as Dovecot skips them
                for (uid, update) in &updates {
                    if expunges.contains(uid) {
                        continue;
                    }
                    if let Some(m) = view.message(*uid) {
                        add_flag_update(t, &m, update);
                    }
                }
                let mut expunged_files = Vec::new();
                for &uid in &expunges {
                    if view.message(uid).is_none() {
                        continue;
                    }
                    let path = dir.join(mail_file_name(uid));
                    // index_mail_expunge logs the GUID's 128-bit form: a stateless peer can
                    // then tell this expunge from a new message at the same UID.
                    let guid = match read_sdbox_file(&path) {
                        Ok(Some(info)) if !info.guid.is_empty() => {
                            mailsupport::sha1::guid_128(info.guid.as_bytes())
                        }
                        _ => [0; 16],
                    };
                    t.expunge_guid(uid, guid);
                    expunged_files.push(path);
                }
                Ok((
                    uids.into_iter().map(Uid).collect(),
                    view.uid_validity(),
                    expunged_files,
                ))
            },
        );
        let ((saved, uid_validity), _) = match result {
            Ok(((saved, uid_validity, expunged_files), info)) => {
                self.mb.index_written = true;
                // The expunged files go only now that the log no longer lists them
                // (sdbox-sync.c sdbox_sync_finish: dbox_sync_expunge_files after
                // mail_index_sync_commit). Unlinked before, a failed or killed log write
                // would leave a renumbered message only in a `u.N` no index lists, and
                // the next open would drop its old record, whose file is gone. A crash
                // from here on leaves a file no index lists: disk space, not mail.
                for path in &expunged_files {
                    match fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => crate::warn(&format!(
                            "sdbox: can't unlink the expunged {}: {e}",
                            path.display()
                        )),
                    }
                }
                crate::index::housekeeping(&self.mb.writer, info.log_offset);
                ((saved, uid_validity), info)
            }
            Err(CommitError(e)) => {
                for s in &saves {
                    let _ = fs::remove_file(&s.temp);
                }
                return Err(e);
            }
        };
        let mut placed: Vec<u32> = saved.iter().map(|u| u.0).collect();
        placed.sort_unstable();
        self.mb.refresh(&placed)?;
        Ok(CommitResult {
            saved,
            uid_validity,
        })
    }

    fn rollback(mut self: Box<Self>) {
        self.remove_temps();
    }
}

impl Drop for SdboxTransaction<'_> {
    fn drop(&mut self) {
        self.remove_temps();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailstore::{Location, Store, StoreOptions};

    /// A read-ahead reads every message's file, a slice at a time, into the cache that
    /// `mails()` then answers from without reading a file.
    #[test]
    fn mails_after_a_read_ahead_read_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        let loc = Location::parse("sdbox:~/sdbox", Some(tmp.path())).unwrap();
        let store = crate::DboxStore::open(&loc, &StoreOptions::default()).unwrap();
        let mut inbox = store.open_mailbox("INBOX").unwrap();
        let mut t = inbox.begin().unwrap();
        for i in 0..5 {
            let body = format!("Subject: m{i}\n\nbody {i}\n");
            t.save(NewMail::default(), &mut body.as_bytes()).unwrap();
        }
        t.commit().unwrap();
        let expected = inbox.mails().unwrap();
        let layout =
            Layout::from_location(&loc, &StoreOptions::default(), DboxKind::Single).unwrap();
        let mut mb = SdboxMailbox::open(&layout, "INBOX").unwrap();
        assert!(mb.files.is_empty(), "nothing read at open");
        assert!(!mb.prefetch_mails(2).unwrap());
        assert!(!mb.prefetch_mails(2).unwrap());
        assert!(mb.prefetch_mails(2).unwrap(), "five messages, two a call");
        assert_eq!(mb.files.len(), 5);
        for uid in expected.iter().map(|m| m.uid.0) {
            fs::remove_file(mb.dir.join(mail_file_name(uid))).unwrap();
        }
        assert_eq!(
            mb.mails().unwrap(),
            expected,
            "answered from what was read ahead"
        );
    }

    /// Both ways `write_message` finishes: a message that fits one chunk goes out with its
    /// final header, a bigger one has the header's size patched in place — at and around
    /// the chunk boundary, after an sdbox file header and after an earlier message.
    #[test]
    fn write_message_reads_back_whole_at_every_size_around_the_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let header_len = FileHeader::encode(1).len();
        let fits = WRITE_CHUNK - header_len - file::MSG_HEADER_SIZE;
        for body_len in [
            0,
            1,
            4000,
            8192,
            20_000,
            fits - 1,
            fits,
            fits + 1,
            3 * WRITE_CHUNK + 7,
        ] {
            let body: Vec<u8> = (0..body_len).map(|i| b'a' + (i % 26) as u8).collect();
            let path = dir.path().join(format!("m{body_len}"));
            let mut f = File::create_new(&path).unwrap();
            let prefix = FileHeader::encode(1);
            let mail = NewMail::default();
            let meta = MessageMeta {
                mail: &mail,
                guid: b"guid-1",
                orig_mailbox: None,
            };
            let first = write_message(
                &mut f,
                &path,
                prefix.len() as u64,
                &prefix,
                &meta,
                SaveLineEndings::Lf,
                &mut &body[..],
            )
            .unwrap();
            assert_eq!(first.0, body_len as u64);
            // a second message appended without a prefix, as mdbox does
            let second_at = prefix.len() as u64 + first.2;
            write_message(
                &mut f,
                &path,
                second_at,
                &[],
                &meta,
                SaveLineEndings::Lf,
                &mut &b"second\n"[..],
            )
            .unwrap();
            drop(f);

            let f = File::open(&path).unwrap();
            let hdr = file::read_file_header(&f).unwrap();
            let m = file::read_mail_at(&f, &hdr, hdr.header_len as u64).unwrap();
            assert_eq!(m.body_size, body_len as u64, "{body_len}");
            assert_eq!(m.total_size, first.2, "{body_len}");
            assert_eq!(m.metadata.get(key::GUID), Some(&b"guid-1"[..]));
            let mut read = vec![0u8; body_len];
            f.read_exact_at(&mut read, m.body_offset).unwrap();
            assert!(read == body, "{body_len}: body differs");
            let m2 = file::read_mail_at(&f, &hdr, second_at).unwrap();
            assert_eq!(m2.body_size, 7);
            assert_eq!(
                second_at + m2.total_size,
                std::fs::metadata(&path).unwrap().len()
            );
        }
    }
}
