//! mdbox: messages in `storage/m.<file_id>` files shared by every mailbox, located through
//! the map index `storage/dovecot.map.index` (src/lib-storage/index/dbox-multi/
//! mdbox-map.c, mdbox-save.c, mdbox-sync.c, mdbox-mail.c, mdbox-storage.c).
//!
//! - map index: uid = map_uid; ext `map` (hdr {highest_file_id, rebuild_count}, rec
//!   {file_id, offset, size}), ext `ref` (rec u16 refcount);
//! - mailbox index: ext `mdbox-hdr` {map_uid_validity, mailbox GUID, flags}, rec `mdbox`
//!   {map_uid, save_date}, rec `guid` (128-bit GUID), `hdr-pop3-uidl` (`crate::pop3`).
//!
//! Save protocol (commit), in Dovecot's lock and write order (mdbox-save.c):
//! 1. each saved message was already written to the transaction's spool, one temp file
//!    `storage/.temp.*` holding the messages one after another (message header, LF body,
//!    metadata with `B` = mailbox name). The spool is never fsynced: it is thrown away
//!    after the commit, and a crash before the commit loses only uncommitted saves;
//! 2. under the map log lock: the last `m.N` is try-flocked (Dovecot holds that flock
//!    while it appends, before it takes the map lock; waiting for it would deadlock) and
//!    used if below the rotate size, else a new `m.<highest_file_id+1>` is created; the
//!    messages are appended, moving on to a new file whenever the current one reaches
//!    the rotate size (mdbox_map_append_next), and each file is fsynced once before the
//!    map transaction (records {file_id, offset, size}, refcount 1, highest_file_id) is
//!    written, followed by the tail-offset update Dovecot's map sync leaves;
//! 3. under the mailbox log lock: the mailbox transaction (UIDs, `mdbox` {map_uid,
//!    save_date}, `guid`, flags, keywords; the `mdbox-hdr` POP3 flags and
//!    `hdr-pop3-uidl` when a save kept a POP3 UIDL or order).
//!
//! Crash recovery: a crash during 2 leaves bytes after the last mapped message of `m.N`
//! that nothing references (later appends go after them; offsets come from the file
//! size). A crash between 2 and 3 leaves map records (refcount 1) no mailbox points to:
//! a leak, invisible (a Dovecot rebuild would restore them into their `B` mailbox).
//!
//! Expunge: EXTERNAL expunge in the mailbox index, then refcount −1 in the map
//! (EXT_ATOMIC_INC). Data stays until a purge (`crate::purge`).

use foldhash::{HashMap, HashMapExt};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mailstore::{
    Changes, CommitResult, Error, FlagChange, FlagUpdate, Guid, MailRecord, Mailbox, MailboxGuid,
    MailboxStatus, ModSeq, NewMail, Pop3Info, Result, SaveLineEndings, SyncGuard, Transaction, Uid,
};
use mailsync_index::format::ext::{self, MapHeader, MapRecord, MdboxRecord};
use mailsync_index::header_view::IndexState;
use mailsync_index::locked_commit::{commit_locked, commit_locked_synced};
use mailsync_index::{HeaderView, IndexPaths, IndexWriter, LogHistory, View};

use crate::file::{self, BodyReader, FileHeader};
use crate::index::{dbox_header, dbox_header_in, index_exists, ix_err, CommitError, IndexStamp};
use crate::layout::{mkdir_all, DboxKind, Layout, INDEX_PREFIX};
use crate::map_table::{MapCache, MapTable};
use crate::meta_cache::{self, Upkeep};
use crate::pop3;
use crate::sdbox::{
    add_flag_update, assign_uids, check_keywords, checked_guid, info_from, record_from,
    status_from, temp_name, write_message, FileInfo, IndexCounters, MessageMeta, RecordInfo,
};
use crate::snapshot::{SnapMessage, Snapshot};

/// The map index prefix in `storage/`.
pub const MAP_PREFIX: &str = "dovecot.map.index";
/// mdbox_rotate_size default (mdbox-settings.c: 10M): a file at least this big gets no
/// more messages.
pub const DEFAULT_ROTATE_SIZE: u64 = 10 * 1024 * 1024;

/// A listing or read-ahead of fewer messages than this, or of fewer than one in
/// [`META_CACHE_SHARE`] of the mailbox's, reads their metadata from the `m.N` files, not
/// the metadata cache: reading the whole cache would cost more (a `pread` of a block costs
/// about as much as scanning 30 entries).
const META_CACHE_MIN: usize = 64;
const META_CACHE_SHARE: usize = 16;

/// `m.<file_id>` (MDBOX_MAIL_FILE_FORMAT).
pub fn map_file_name(file_id: u32) -> String {
    format!("m.{file_id}")
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn map_writer(layout: &Layout) -> IndexWriter {
    IndexWriter::open(&layout.storage_dir(), MAP_PREFIX)
}

/// The map index files of a store.
pub(crate) fn map_paths(layout: &Layout) -> IndexPaths {
    IndexPaths::new(layout.storage_dir(), MAP_PREFIX)
}

/// Creates the map index when it doesn't exist yet (as mdbox_map_open_or_create; its
/// UIDVALIDITY is the creation time).
pub(crate) fn create_map_if_missing(layout: &Layout) -> Result<()> {
    let dir = layout.storage_dir();
    if dir.join(format!("{MAP_PREFIX}.log")).exists() || dir.join(MAP_PREFIX).exists() {
        return Ok(());
    }
    mkdir_all(&dir, 0o700).map_err(|e| Error::io("mkdir", &dir, e))?;
    let w = map_writer(layout);
    match w.create(now().max(1) as u32) {
        Ok(_) => {
            // the new map's tail must reach its head (see map_commit)
            map_commit(&w, |_| {})
        }
        // created by someone else meanwhile
        Err(mailsync_index::Error::Invalid(_)) => Ok(()),
        Err(e) => Err(ix_err(e)),
    }
}

/// The map's UIDVALIDITY, creating the map index when it doesn't exist yet.
pub(crate) fn map_uid_validity(layout: &Layout, cache: &MapCache) -> Result<u32> {
    create_map_if_missing(layout)?;
    Ok(cache.table(&map_paths(layout))?.uid_validity)
}

/// Where the message of a mailbox index message is, with its save date: its `mdbox`
/// record's map UID looked up in the map table. None when the record or the map UID is
/// missing (Dovecot would rebuild).
fn location_of(m: &SnapMessage, map: &MapTable) -> Option<(MapRecord, u32)> {
    let rec = m.mdbox?;
    Some((map.get(rec.map_uid)?, rec.save_date))
}

/// Lowers the refcount of every message of the mailbox index in `dir` (before the
/// mailbox is deleted; the data stays until purge).
pub(crate) fn release_mailbox_refs(layout: &Layout, dir: &Path) -> Result<()> {
    if !index_exists(dir) {
        return Ok(());
    }
    let view = View::open(dir, INDEX_PREFIX).map_err(ix_err)?;
    let map_uids: Vec<u32> = view
        .messages()
        .filter_map(|m| m.ext(ext::MDBOX).map(|d| MdboxRecord::decode(d).map_uid))
        .collect();
    if map_uids.is_empty() {
        return Ok(());
    }
    map_commit(&map_writer(layout), |t| {
        for uid in map_uids {
            t.ext_atomic_inc(ext::REF, uid, -1);
        }
    })
}

/// Commits a map change the way Dovecot's map sync leaves the map log: the change, then
/// the tail offset moved to the head (mdbox-map.c: a lagging tail means "something
/// crashed" and triggers a rebuild).
fn map_commit(
    w: &IndexWriter,
    build: impl FnOnce(&mut mailsync_index::Transaction<'_>),
) -> Result<()> {
    commit_locked_synced(w, false, |_, t| -> std::result::Result<(), CommitError> {
        build(t);
        Ok(())
    })
    .map_err(|CommitError(e)| e)?;
    Ok(())
}

pub struct MdboxMailbox {
    name: String,
    layout: Layout,
    dir: PathBuf,
    writer: IndexWriter,
    /// The mailbox index view, kept compact (the view itself, with its decoded logs, is
    /// dropped once the snapshot is taken).
    snap: Snapshot,
    /// The mailbox index files as they were just before `snap`'s view was read from them:
    /// while they are unchanged, a sync keeps the snapshot instead of reading it again.
    view_stamp: IndexStamp,
    guid: MailboxGuid,
    line_endings: SaveLineEndings,
    /// The store's map table, shared by its mailboxes, and the table the locations below
    /// were looked up in. A message's location is its `mdbox` record's map UID looked up
    /// in `map` ([`location_of`]): the mailbox keeps no location table of its own.
    map_cache: Arc<MapCache>,
    map: Arc<MapTable>,
    /// A `sync()` found the mailbox index unchanged and left the map table as it was: the
    /// map may have changed meanwhile (another mailbox's commit, a purge), so `map` is
    /// checked against the map's files again before anything is located in it
    /// ([`MdboxMailbox::load`]). A sync of an unchanged mailbox that asks only for its
    /// counters then reads no map table.
    map_unchecked: bool,
    files: MailFiles,
    /// uid → where the body of a message whose metadata was read lies. The rest of the
    /// metadata isn't kept: `mails()` hands it out in its records and reads it again
    /// when asked again (the caller keeps the records; a copy here would double them).
    bodies: HashMap<u32, Body>,
    /// Metadata read ahead for the next `mails()` ([`Mailbox::prefetch_mails`]), in the
    /// order read. An entry is used only while the message is still at the location it
    /// was read at (the bytes there never change: a purge writes the message elsewhere),
    /// and its GUID is moved into the record, so nothing is held twice.
    prefetched: Vec<ReadAhead>,
    /// What is left to read ahead, the highest location first (taken from the end);
    /// `None`: not listed yet, or listed before the view or the map changed.
    prefetch_todo: Option<Vec<(u32, MapRecord, u32)>>,
    /// The listing a read-ahead made for the next `mails()` ([`Mailbox::list_ahead`]),
    /// with the index and the map table it is of: given out only while both are the
    /// same; dropped whenever the view or the map changes ([`MdboxMailbox::check_locations`],
    /// [`MdboxMailbox::after_commit`]).
    listed_ahead: Option<ListedAhead>,
    /// The message with the highest UID, where it was, and its GUID (what `counters`
    /// asks at every sync).
    last: Option<(u32, MapRecord, Guid)>,
    /// Opened from the index headers alone ([`MdboxMailbox::open_quick`]): the counters
    /// and the state they are of. `snap` and `map` are empty until [`MdboxMailbox::load`].
    quick: Option<(MailboxStatus, IndexState)>,
    /// A [`MdboxMailbox::load`] ended a quick open and found the index moved on from the
    /// state the quick counters were of; taken by the next history question
    /// ([`MdboxMailbox::load_moved`]), whatever asked for the load (a read ahead, say).
    moved_since_quick: bool,
    /// This handle changed the mailbox index: `dovecot.index` is brought up to date when it
    /// is dropped ([`crate::index::close_index`]).
    index_written: bool,
}

impl Drop for MdboxMailbox {
    fn drop(&mut self) {
        if self.index_written {
            crate::index::close_index(&self.writer);
        }
    }
}

/// A listing made ahead ([`MdboxMailbox::listed_ahead`]).
struct ListedAhead {
    view_stamp: IndexStamp,
    map: Arc<MapTable>,
    records: Vec<MailRecord>,
}

/// A message's metadata read ahead ([`MdboxMailbox::prefetched`]); `info` is taken when
/// used.
struct ReadAhead {
    uid: u32,
    loc: MapRecord,
    info: Option<RecordInfo>,
}

/// Where a message's body is in its `m.N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Body {
    /// The map record it was read at.
    loc: MapRecord,
    offset: u64,
    /// Bytes to stream (`Z` when present, else the message header's size).
    len: u64,
}

/// The `m.N` files of a store, read one at a time: the file read last (id, file, header
/// line) is kept open for the next read, as the messages of a mailbox mostly lie in a
/// few files one after another.
struct MailFiles {
    storage: PathBuf,
    open: Option<(u32, Arc<File>, FileHeader)>,
    /// Where a message's metadata block is read into, message after message.
    buf: file::MetaBuf,
}

impl MailFiles {
    fn path(&self, file_id: u32) -> PathBuf {
        self.storage.join(map_file_name(file_id))
    }

    /// `m.<file_id>` with its header line: the one read last, else opened now (closing
    /// the previous one).
    fn get(&mut self, file_id: u32) -> Result<(Arc<File>, FileHeader)> {
        if let Some((id, f, h)) = &self.open {
            if *id == file_id {
                return Ok((Arc::clone(f), *h));
            }
        }
        self.open = None;
        let path = self.path(file_id);
        let f = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let h = file::read_file_header(&f).map_err(|e| e.into_store_error(&path))?;
        let f = Arc::new(f);
        self.open = Some((file_id, Arc::clone(&f), h));
        Ok((f, h))
    }

    /// Reads the dbox metadata of each (uid, location, save date) of `todo`, in file
    /// order, handing it to `each` and noting where the body is in `bodies`.
    fn read_metadata(
        &mut self,
        bodies: &mut HashMap<u32, Body>,
        mut todo: Vec<(u32, MapRecord, u32)>,
        mut each: impl FnMut(u32, MapRecord, FileInfo),
    ) -> Result<()> {
        todo.sort_unstable_by_key(|(_, loc, _)| (loc.file_id, loc.offset));
        let mut reading = None;
        for (uid, loc, save_date) in todo {
            let (f, h) = self.get(loc.file_id)?;
            let mut buf = std::mem::take(&mut self.buf);
            // what the buffer holds is of the file read last, and only of this pass
            if reading.replace(loc.file_id) != Some(loc.file_id) {
                buf.forget();
            }
            let read =
                file::read_mail_in(&*f, &h, loc.offset as u64, &mut buf).map(|(span, meta)| {
                    info_from(|k| meta.get(k), span.body_size, span.body_offset, 0)
                });
            self.buf = buf;
            // the save date is the index's (mdbox record), not the file's
            let info = FileInfo {
                saved: save_date as i64,
                ..read.map_err(|e| e.into_store_error(&self.path(loc.file_id)))?
            };
            bodies.insert(
                uid,
                Body {
                    loc,
                    offset: info.body_offset,
                    len: info.physical,
                },
            );
            each(uid, loc, info);
        }
        Ok(())
    }

    /// The `P` / `O` lines `wanted` of the message at `loc` (its metadata read again:
    /// nothing of it is kept).
    fn read_pop3(&mut self, loc: MapRecord, wanted: pop3::Wanted) -> Result<Pop3Info> {
        let (f, h) = self.get(loc.file_id)?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.forget();
        let read = file::read_mail_in(&*f, &h, loc.offset as u64, &mut buf)
            .map(|(_, meta)| pop3::from_metadata(|k| meta.get(k), wanted));
        self.buf = buf;
        read.map_err(|e| e.into_store_error(&self.path(loc.file_id)))
    }

    /// The virtual size of a body: counted by streaming it.
    fn count_vsize(&mut self, body: &Body) -> Result<u64> {
        let (f, _) = self.get(body.loc.file_id)?;
        let mut r = BodyReader::shared(f, body.offset, body.len);
        mailstore::virtual_size_of(&mut r)
            .map_err(|e| Error::io("read", self.path(body.loc.file_id), e))
    }
}

impl MdboxMailbox {
    pub fn open(
        layout: &Layout,
        vname: &str,
        map_cache: Arc<MapCache>,
    ) -> Result<Box<dyn Mailbox>> {
        Ok(Box::new(MdboxMailbox::open_handle(
            layout, vname, map_cache,
        )?))
    }

    fn open_handle(layout: &Layout, vname: &str, map_cache: Arc<MapCache>) -> Result<MdboxMailbox> {
        let dir = layout.mail_dir(vname);
        let writer = IndexWriter::open(&dir, INDEX_PREFIX);
        let view_stamp = IndexStamp::of(writer.paths())?;
        let mut mb = MdboxMailbox {
            name: vname.to_string(),
            layout: layout.clone(),
            dir,
            writer,
            snap: Snapshot::empty(),
            view_stamp,
            guid: MailboxGuid::default(),
            line_endings: layout.line_endings,
            map_cache,
            map: Arc::new(MapTable::default()),
            map_unchecked: false,
            files: MailFiles {
                storage: layout.storage_dir(),
                open: None,
                buf: Default::default(),
            },
            bodies: HashMap::new(),
            prefetched: Vec::new(),
            prefetch_todo: None,
            listed_ahead: None,
            last: None,
            quick: None,
            moved_since_quick: false,
            index_written: false,
        };
        if !mb.open_quick()? {
            mb.read_full()?;
        }
        Ok(mb)
    }

    /// Reads the mailbox index view into the snapshot and takes the map table (what an
    /// open does unless [`MdboxMailbox::open_quick`] answered).
    fn read_full(&mut self) -> Result<()> {
        let view_stamp = IndexStamp::of(self.writer.paths())?;
        // the history before `P` is read when asked for (`changes_since`)
        let view = View::open_recent(self.writer.paths()).map_err(ix_err)?;
        let snap = Snapshot::of(&view);
        let hdr = dbox_header(&view, DboxKind::Multi);
        drop(view);
        let hdr = hdr.ok_or_else(|| {
            Error::corrupted(
                self.dir.join(INDEX_PREFIX),
                "mdbox: missing mdbox-hdr (needs force-resync)",
            )
        })?;
        create_map_if_missing(&self.layout)?;
        let map = self.map_cache.table(&map_paths(&self.layout))?;
        if hdr.counter != map.uid_validity {
            return Err(Error::corrupted(
                self.dir.join(INDEX_PREFIX),
                format!(
                    "mdbox: map_uid_validity {} doesn't match the map's {} \
                     (needs force-resync)",
                    hdr.counter, map.uid_validity
                ),
            ));
        }
        self.snap = snap;
        self.view_stamp = view_stamp;
        self.guid = MailboxGuid(hdr.mailbox_guid);
        self.map = map;
        self.map_unchecked = false;
        self.files.open = None;
        self.quick = None;
        self.check_locations();
        Ok(())
    }

    /// Opens from the headers of the mailbox index and the map index alone, when nothing
    /// but header changes were logged past either `dovecot.index`: the counters come from
    /// the header, the last message's GUID from one map record (found by bisection) and
    /// one metadata read. Nothing is read per message, so an unchanged mailbox costs the
    /// same whatever it holds. False when the headers can't tell (the full read follows,
    /// and reports what is wrong).
    fn open_quick(&mut self) -> Result<bool> {
        let Ok(Some(head)) = HeaderView::open(self.writer.paths()) else {
            return Ok(false);
        };
        let (Some(hdr), Some(recent)) =
            (dbox_header_in(&head, DboxKind::Multi), head.recent_count())
        else {
            return Ok(false);
        };
        let Ok(map_head) = self.map_cache.header_view(&map_paths(&self.layout)) else {
            return Ok(false);
        };
        let Some(map_head) = map_head.as_ref() else {
            return Ok(false);
        };
        if hdr.counter != map_head.uid_validity() {
            return Ok(false);
        }
        let last_guid = match head.last_uid() {
            None => None,
            Some(uid) => {
                let Some(rec) = head.last_ext(ext::MDBOX).map(MdboxRecord::decode) else {
                    return Ok(false);
                };
                let Ok(Some(map_rec)) = map_head.record_of(rec.map_uid) else {
                    return Ok(false);
                };
                let Some(loc) = map_head
                    .record_ext(&map_rec, ext::MAP)
                    .map(MapRecord::decode)
                else {
                    return Ok(false);
                };
                let mut found = None;
                let todo = vec![(uid, loc, rec.save_date)];
                let read = self
                    .files
                    .read_metadata(&mut self.bodies, todo, |_, _, info| {
                        found = Some(info.guid);
                    });
                let (Ok(()), Some(guid)) = (read, found) else {
                    return Ok(false);
                };
                self.last = Some((uid, loc, guid.clone()));
                Some(guid)
            }
        };
        let h = head.header();
        let counters = IndexCounters {
            uid_validity: h.uid_validity,
            next_uid: h.next_uid,
            highest_modseq: head.highest_modseq(),
            first_recent_uid: h.first_recent_uid,
        };
        self.guid = MailboxGuid(hdr.mailbox_guid);
        let mut status = status_from(
            &counters,
            std::iter::empty(),
            self.guid,
            std::iter::empty(),
            last_guid,
        );
        status.messages = h.messages_count;
        status.recent = recent;
        status.unseen = head.unseen_count();
        self.quick = Some((status, head.state()));
        Ok(true)
    }

    /// After this handle's commit: as a new open, from the headers when they tell (the
    /// commit's housekeeping leaves `dovecot.index` current, so they mostly do), the rest
    /// read when first asked; else read now. A sync's last commit is followed by nothing
    /// but the counters for its state: reading every message again for those was a third
    /// of an incremental sync's work on this side.
    fn after_commit(&mut self) -> Result<()> {
        // taken first: a change made after it makes the next sync() read again
        let stamp = IndexStamp::of(self.writer.paths())?;
        self.moved_since_quick = false;
        if self.open_quick()? {
            self.view_stamp = stamp;
            self.snap = Snapshot::empty();
            self.map = Arc::new(MapTable::default());
            self.map_unchecked = false;
            self.files.open = None;
            self.prefetched.clear();
            self.prefetch_todo = None;
            self.listed_ahead = None;
            return Ok(());
        }
        self.quick = None;
        self.listed_ahead = None;
        self.refresh()
    }

    /// Reads the snapshot and the map table of a mailbox opened by the quick check, before
    /// anything but its counters is asked.
    fn load(&mut self) -> Result<()> {
        if let Some(state) = self.quick.as_ref().map(|(_, state)| *state) {
            self.read_full()?;
            self.moved_since_quick |= state != self.snap.state();
        } else if self.map_unchecked {
            self.check_map(false)?;
        }
        Ok(())
    }

    /// Takes the map table as of now (the cached one while the map's files are unchanged)
    /// and, when it changed or `view_changed`, checks the messages' locations in it.
    fn check_map(&mut self, view_changed: bool) -> Result<()> {
        let map = self.map_cache.table(&map_paths(&self.layout))?;
        let map_changed = !Arc::ptr_eq(&map, &self.map);
        if map_changed {
            self.map = map;
            self.files.open = None;
        }
        self.map_unchecked = false;
        if view_changed || map_changed {
            self.check_locations();
        }
        Ok(())
    }

    /// Reads what a quick open left unread; true when the index then is no longer the
    /// state the quick counters are of (the caller's history question can't be answered
    /// for those counters).
    fn load_moved(&mut self) -> Result<bool> {
        self.load()?;
        Ok(std::mem::take(&mut self.moved_since_quick))
    }

    /// After the view or the map changed: warns about messages whose map record is gone
    /// (they are left out: Dovecot would rebuild) and forgets what was read of messages
    /// that are gone or moved (a purge). Nothing is read per message here, so opening a
    /// mailbox to save into it costs no read per message.
    fn check_locations(&mut self) {
        let (snap, map) = (&self.snap, &*self.map);
        for m in &snap.messages {
            let Some(rec) = m.mdbox else {
                continue;
            };
            if map.get(rec.map_uid).is_none() {
                crate::warn(&format!(
                    "{}: uid {} points to missing map uid {}",
                    self.dir.display(),
                    m.uid,
                    rec.map_uid
                ));
            }
        }
        let still_at = |uid: u32, loc: &MapRecord| {
            snap.message(uid)
                .and_then(|m| location_of(m, map))
                .is_some_and(|(l, _)| l == *loc)
        };
        self.bodies.retain(|&uid, body| still_at(uid, &body.loc));
        self.prefetched.retain(|a| still_at(a.uid, &a.loc));
        self.prefetch_todo = None;
        self.listed_ahead = None;
        self.last = self.last.take().filter(|(uid, loc, _)| still_at(*uid, loc));
    }

    /// The message's location and save date, when the view and the map have it.
    fn location(&self, uid: u32) -> Option<(MapRecord, u32)> {
        location_of(self.snap.message(uid)?, &self.map)
    }

    /// (uid, location, save date) of those of `uids` that are located.
    fn located(&self, uids: impl Iterator<Item = u32>) -> Vec<(u32, MapRecord, u32)> {
        uids.filter_map(|uid| {
            let (loc, save_date) = self.location(uid)?;
            Some((uid, loc, save_date))
        })
        .collect()
    }

    /// Every located message (uid, location, save date), by UID.
    fn all_located(&self) -> Vec<(u32, MapRecord, u32)> {
        self.snap
            .messages
            .iter()
            .filter_map(|m| {
                let (loc, save_date) = location_of(m, &self.map)?;
                Some((m.uid, loc, save_date))
            })
            .collect()
    }

    /// Whether reading `n` messages' metadata from the cache costs less than reading
    /// their blocks ([`META_CACHE_MIN`], [`META_CACHE_SHARE`]).
    fn worth_the_meta_cache(&self, n: usize) -> bool {
        n >= META_CACHE_MIN && n.saturating_mul(META_CACHE_SHARE) >= self.snap.messages.len()
    }

    /// The records of the located messages of `todo`, ascending by UID: from the metadata
    /// cache when `todo` is long enough to read it ([`Self::worth_the_meta_cache`]), else from what
    /// was read ahead ([`MdboxMailbox::prefetched`], used and given up for the messages
    /// still at the location it was read at), else from their metadata read in file
    /// order. `whole`: `todo` is every located message. The cache is then brought up to
    /// date ([`meta_cache::Scan::upkeep`]).
    fn records(
        &mut self,
        todo: Vec<(u32, MapRecord, u32)>,
        whole: bool,
    ) -> Result<Vec<MailRecord>> {
        let mut out = Vec::with_capacity(todo.len());
        let snap = &self.snap;
        let cache_path = meta_cache::path(&self.writer.paths().dir);
        let (todo, upkeep) = if !self.worth_the_meta_cache(todo.len()) {
            (todo, Upkeep::Nothing)
        } else {
            let (cached, scan) = cached_entries(snap, &self.map, &cache_path, &todo, |i, e| {
                let (uid, _, save_date) = todo[i];
                if let Some(m) = snap.message(uid) {
                    let saved = save_date as i64;
                    out.push(record_of(snap, m, RecordInfo { saved, ..e.info() }));
                }
            });
            let used = cached.iter().filter(|&&c| c).count();
            let rest: Vec<_> = todo
                .into_iter()
                .zip(cached)
                .filter_map(|(t, c)| (!c).then_some(t))
                .collect();
            let upkeep = scan.upkeep(used, rest.len(), whole);
            (rest, upkeep)
        };
        // the UIDs whose entries an append adds
        let missed: Vec<u32> = match upkeep {
            Upkeep::Append => todo.iter().map(|&(uid, ..)| uid).collect(),
            _ => Vec::new(),
        };
        let unread = if self.prefetched.is_empty() {
            todo
        } else {
            let ahead = &mut self.prefetched;
            ahead.sort_unstable_by_key(|a| a.uid);
            let mut unread = Vec::new();
            for (uid, loc, save_date) in todo {
                let taken = match ahead.binary_search_by_key(&uid, |a| a.uid) {
                    Ok(i) if ahead[i].loc == loc => ahead[i].info.take(),
                    _ => None,
                };
                match (taken, snap.message(uid)) {
                    (Some(info), Some(m)) => {
                        // the save date is the index's, as read_metadata gives it
                        let saved = save_date as i64;
                        out.push(record_of(snap, m, RecordInfo { saved, ..info }));
                    }
                    (Some(_), None) => {}
                    (None, _) => unread.push((uid, loc, save_date)),
                }
            }
            ahead.retain(|a| a.info.is_some());
            if ahead.is_empty() {
                *ahead = Vec::new();
            }
            // a later read-ahead lists what is left again
            self.prefetch_todo = None;
            unread
        };
        self.files
            .read_metadata(&mut self.bodies, unread, |uid, _, info| {
                if let Some(m) = snap.message(uid) {
                    out.push(record_of(snap, m, info.into()));
                }
            })?;
        out.sort_unstable_by_key(|r| r.uid);
        let map = &*self.map;
        // a cache that can't be written costs the next read its metadata, nothing else
        let uv = self.map.uid_validity;
        let _ = match upkeep {
            Upkeep::Nothing => Ok(()),
            Upkeep::Append => {
                let new = missed.iter().filter_map(|&uid| {
                    let i = out.binary_search_by_key(&Uid(uid), |r| r.uid).ok()?;
                    cache_entry_of(snap, map, &out[i])
                });
                meta_cache::append(&cache_path, uv, new)
            }
            Upkeep::Rewrite => {
                let all = out.iter().filter_map(|r| cache_entry_of(snap, map, r));
                meta_cache::rewrite(&cache_path, uv, all)
            }
        };
        Ok(out)
    }

    /// Where the body of a located message is, reading its metadata if needed. The
    /// location leaves the table: a sync opens each message once, and kept, the table of
    /// a mailbox sent whole would hold every message's location to the end of the run (a
    /// second open reads the metadata again).
    fn take_body(&mut self, uid: u32) -> Result<Option<Body>> {
        if let Some(b) = self.bodies.remove(&uid) {
            return Ok(Some(b));
        }
        let todo = self.located(std::iter::once(uid));
        self.files
            .read_metadata(&mut self.bodies, todo, |_, _, _| {})?;
        Ok(self.bodies.remove(&uid))
    }

    /// The GUID of the message with the highest UID (one metadata read at most, none
    /// while it is the one read last time).
    fn last_guid(&mut self) -> Result<Option<Guid>> {
        let Some(uid) = self.snap.messages.last().map(|m| m.uid) else {
            return Ok(None);
        };
        // A message's GUID never changes, wherever a purge moves it; `last` is of this
        // snapshot (check_locations keeps it only for a message still where it was).
        if let Some((u, _, guid)) = &self.last {
            if *u == uid {
                return Ok(Some(guid.clone()));
            }
        }
        // locations are asked of the map as `load()` leaves it
        self.load()?;
        let Some((loc, save_date)) = self.location(uid) else {
            return Ok(None);
        };
        let mut found = None;
        self.files.read_metadata(
            &mut self.bodies,
            vec![(uid, loc, save_date)],
            |_, _, info| {
                found = Some(info.guid);
            },
        )?;
        self.last = found.clone().map(|g| (uid, loc, g));
        Ok(found)
    }

    /// What a history question since `since` is answered from: the logs from there
    /// with the UIDs of the snapshot (which they must be of), or the answer itself when
    /// the snapshot gives it or the logs can't (`Unknown`: the caller compares in full).
    fn history_since(
        &mut self,
        since: ModSeq,
    ) -> Result<std::result::Result<(LogHistory, Vec<u32>), Changes>> {
        if self.load_moved()? {
            return Ok(Err(Changes::Unknown));
        }
        if let Some(known) = self.snap.changes_known(since) {
            return Ok(Err(known));
        }
        // the history is in the logs, which the snapshot doesn't keep: read them again (not
        // `P`: the snapshot has its messages) and answer only from the state the snapshot
        // is of
        let Some(history) = LogHistory::read_since(self.writer.paths(), since.0).map_err(ix_err)?
        else {
            return Ok(Err(Changes::Unknown));
        };
        if !self.snap.is_at(history.indexid(), history.log_position()) {
            return Ok(Err(Changes::Unknown));
        }
        let present = self.snap.messages.iter().map(|m| m.uid).collect();
        Ok(Ok((history, present)))
    }

    /// Reads the view again if the mailbox index changed since it was read, and takes the
    /// map table as of now (read again only if the map changed).
    fn refresh(&mut self) -> Result<()> {
        if self.quick.is_some() {
            return self.read_full();
        }
        let stamp = IndexStamp::of(self.writer.paths())?;
        if stamp == self.view_stamp {
            // the same messages: their locations are checked when first needed
            self.map_unchecked = true;
            return Ok(());
        }
        self.snap = Snapshot::of(&View::open_recent(self.writer.paths()).map_err(ix_err)?);
        self.view_stamp = stamp;
        self.check_map(true)
    }

    fn status_with(
        &self,
        sizes: impl Iterator<Item = (u64, i64)>,
        last: Option<Guid>,
    ) -> MailboxStatus {
        status_from(
            &self.snap.counters,
            self.snap.messages.iter().map(|m| (m.uid, m.flags)),
            self.guid,
            sizes,
            last,
        )
    }
}

/// Reads the mailbox's metadata cache at `path` for the messages of `todo`: for each
/// entry of one of them (its map UID, and the size of its map record) `each` gets the
/// message's index in `todo` and the entry. Returns which of `todo` the cache had, and
/// what the scan found of the file.
fn cached_entries(
    snap: &Snapshot,
    map: &MapTable,
    path: &Path,
    todo: &[(u32, MapRecord, u32)],
    mut each: impl FnMut(usize, &meta_cache::Entry<'_>),
) -> (Vec<bool>, meta_cache::Scan) {
    // (map UID, index in todo): 8 bytes a message
    let mut by_map_uid: Vec<(u32, u32)> = todo
        .iter()
        .zip(0u32..)
        .filter_map(|(&(uid, ..), i)| Some((snap.message(uid)?.mdbox?.map_uid, i)))
        .collect();
    by_map_uid.sort_unstable();
    let mut cached = vec![false; todo.len()];
    let scan = meta_cache::scan(path, map.uid_validity, |e| {
        let Ok(at) = by_map_uid.binary_search_by_key(&e.map_uid, |&(m, _)| m) else {
            return;
        };
        let i = by_map_uid[at].1 as usize;
        if !cached[i] && todo[i].1.size == e.map_size {
            cached[i] = true;
            each(i, &e);
        }
    });
    (cached, scan)
}

/// The metadata cache entry of the message listed as `r`: keyed by its map UID, with its
/// map record's size.
fn cache_entry_of<'a>(
    snap: &Snapshot,
    map: &MapTable,
    r: &'a MailRecord,
) -> Option<meta_cache::Entry<'a>> {
    let map_uid = snap.message(r.uid.0)?.mdbox?.map_uid;
    Some(meta_cache::Entry {
        map_uid,
        map_size: map.get(map_uid)?.size,
        received: r.received_date,
        physical: r.physical_size,
        vsize: r.virtual_size,
        guid: r.guid.as_bytes(),
    })
}

/// The `MailRecord` of a snapshot message whose dbox metadata is `info`.
fn record_of(snap: &Snapshot, m: &SnapMessage, info: RecordInfo) -> MailRecord {
    record_from(
        snap.counters.first_recent_uid,
        m.uid,
        m.flags,
        snap.keywords_of(m),
        m.modseq,
        info,
    )
}

impl Mailbox for MdboxMailbox {
    fn name(&self) -> &str {
        &self.name
    }

    fn sync(&mut self) -> Result<()> {
        // a quick open stays valid while the mailbox index is unchanged (the last message's
        // GUID doesn't change when a purge moves it)
        if self.quick.is_some() && IndexStamp::of(self.writer.paths())? == self.view_stamp {
            return Ok(());
        }
        self.refresh()
    }

    fn counters(&mut self) -> Result<MailboxStatus> {
        if let Some((status, _)) = &self.quick {
            return Ok(status.clone());
        }
        let last = self.last_guid()?;
        Ok(self.status_with(std::iter::empty(), last))
    }

    fn status(&mut self) -> Result<MailboxStatus> {
        self.load()?;
        let todo = self.all_located();
        // (uid, V, save date, body) by file order, then vsizes counted where V is missing
        let mut read: Vec<(u32, Option<u64>, i64, Body)> = Vec::with_capacity(todo.len());
        self.files
            .read_metadata(&mut self.bodies, todo, |uid, loc, info| {
                let body = Body {
                    loc,
                    offset: info.body_offset,
                    len: info.physical,
                };
                read.push((uid, info.vsize, info.saved, body));
            })?;
        read.sort_unstable_by_key(|(uid, ..)| *uid);
        let mut sizes = Vec::with_capacity(read.len());
        for (_, vsize, saved, body) in read {
            let vsize = match vsize {
                Some(v) => v,
                None => self.files.count_vsize(&body)?,
            };
            sizes.push((vsize, saved));
        }
        let last = self.last_guid()?;
        Ok(self.status_with(sizes.into_iter(), last))
    }

    fn mails(&mut self) -> Result<Vec<MailRecord>> {
        self.load()?;
        if let Some(ahead) = self.listed_ahead.take() {
            if ahead.view_stamp == self.view_stamp && Arc::ptr_eq(&ahead.map, &self.map) {
                return Ok(ahead.records);
            }
        }
        let todo = self.all_located();
        self.records(todo, true)
    }

    fn list_ahead(&mut self) -> Result<()> {
        self.load()?;
        if self.listed_ahead.is_none() {
            let todo = self.all_located();
            let records = self.records(todo, true)?;
            self.listed_ahead = Some(ListedAhead {
                view_stamp: self.view_stamp,
                map: Arc::clone(&self.map),
                records,
            });
        }
        Ok(())
    }

    /// The snapshot and the map table a quick open left unread (what every change and
    /// history question loads first).
    fn prefetch_index(&mut self) -> Result<()> {
        self.load()
    }

    /// Reads the metadata of up to `max` more messages, in file order, for the next
    /// `mails()`; the mailbox is loaded first if a quick open left it unread.
    fn prefetch_mails(&mut self, max: usize) -> Result<bool> {
        self.load()?;
        let todo = match &mut self.prefetch_todo {
            Some(todo) => todo,
            None => {
                self.prefetched.sort_unstable_by_key(|a| a.uid);
                let located = self.all_located();
                // what the metadata cache has is left to the listing, which takes it there
                let cached = if self.worth_the_meta_cache(located.len()) {
                    let path = meta_cache::path(&self.writer.paths().dir);
                    cached_entries(&self.snap, &self.map, &path, &located, |_, _| {}).0
                } else {
                    vec![false; located.len()]
                };
                let read = &self.prefetched;
                let is_read = |uid: &u32, loc: &MapRecord| {
                    read.binary_search_by_key(uid, |a| a.uid)
                        .is_ok_and(|i| read[i].loc == *loc)
                };
                let mut todo: Vec<_> = located
                    .into_iter()
                    .zip(cached)
                    .filter(|((uid, loc, _), cached)| !cached && !is_read(uid, loc))
                    .map(|(t, _)| t)
                    .collect();
                todo.sort_unstable_by_key(|(_, loc, _)| {
                    std::cmp::Reverse((loc.file_id, loc.offset))
                });
                self.prefetch_todo.insert(todo)
            }
        };
        let slice = todo.split_off(todo.len().saturating_sub(max.max(1)));
        let done = todo.is_empty();
        let prefetched = &mut self.prefetched;
        self.files
            .read_metadata(&mut self.bodies, slice, |uid, loc, info| {
                let info = Some(info.into());
                prefetched.push(ReadAhead { uid, loc, info });
            })?;
        Ok(done)
    }

    /// Reads the metadata of only the messages asked for.
    fn mails_of(&mut self, uids: &[Uid]) -> Result<Vec<MailRecord>> {
        self.load()?;
        let mut wanted: Vec<u32> = uids.iter().map(|u| u.0).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let todo = self.located(wanted.into_iter());
        self.records(todo, false)
    }

    fn open_mail(&mut self, uid: Uid) -> Result<Box<dyn Read + Send>> {
        self.load()?;
        let body = self.take_body(uid.0)?.ok_or(Error::MailNotFound(uid))?;
        let (f, _) = self.files.get(body.loc.file_id)?;
        Ok(Box::new(BodyReader::shared(f, body.offset, body.len)))
    }

    fn virtual_size(&mut self, uid: Uid) -> Result<u64> {
        self.load()?;
        let todo = self.located(std::iter::once(uid.0));
        let mut found = None;
        self.files
            .read_metadata(&mut self.bodies, todo, |_, loc, info| {
                let body = Body {
                    loc,
                    offset: info.body_offset,
                    len: info.physical,
                };
                found = Some((info.vsize, body));
            })?;
        match found {
            Some((Some(v), _)) => Ok(v),
            Some((None, body)) => self.files.count_vsize(&body),
            None => Err(Error::MailNotFound(uid)),
        }
    }

    /// The `P` / `O` lines of the message, read only when the index says they can be
    /// there (mdbox-mail.c mdbox_mail_get_special; [`pop3::Pop3Gate`]).
    fn pop3_info(&mut self, uid: Uid) -> Result<Pop3Info> {
        self.load()?;
        let (loc, _) = self.location(uid.0).ok_or(Error::MailNotFound(uid))?;
        let wanted = self.snap.pop3.wanted(uid.0);
        if !wanted.any() {
            return Ok(Pop3Info::default());
        }
        self.files.read_pop3(loc, wanted)
    }

    fn begin(&mut self) -> Result<Box<dyn Transaction + '_>> {
        self.load()?;
        Ok(Box::new(MdboxTransaction {
            mb: self,
            saves: Vec::new(),
            spool: None,
            ops: MailboxOps::default(),
        }))
    }

    /// `.dovecot-box-sync.lock` in the mailbox directory (which holds its index).
    fn lock_for_sync(&mut self, timeout: std::time::Duration) -> Result<Option<SyncGuard>> {
        mailsync_index::lock::lock_mailbox_for_sync(&self.dir, timeout)
    }

    fn changes_since(&mut self, since: ModSeq) -> Result<Changes> {
        Ok(match self.history_since(since)? {
            Ok((history, present)) => {
                history.changes_since(since, self.snap.counters.highest_modseq, present)
            }
            Err(answer) => answer,
        })
    }

    /// As `changes_since`, the expunges alone.
    fn expunged_since(&mut self, since: ModSeq) -> Result<Option<mailstore::Expunges>> {
        Ok(match self.history_since(since)? {
            Ok((history, present)) => {
                history.expunged_since(since, self.snap.counters.highest_modseq, present)
            }
            Err(Changes::Known { expunged, .. }) => Some(expunged),
            Err(_) => None,
        })
    }

    fn flag_changes_since(
        &mut self,
        since: ModSeq,
        uids: &[Uid],
    ) -> Result<Vec<(Uid, FlagChange)>> {
        if self.load_moved()? {
            return Ok(Vec::new());
        }
        // The snapshot keeps no log records: read the logs again (not `P`: the snapshot
        // has its messages), answering only when they end where the snapshot's state does
        // (else no history: whole flags win).
        let Some(history) = LogHistory::read_since(self.writer.paths(), since.0).map_err(ix_err)?
        else {
            return Ok(Vec::new());
        };
        if !self.snap.is_at(history.indexid(), history.log_position()) {
            return Ok(Vec::new());
        }
        let snap = &self.snap;
        Ok(history.flag_changes_since(since, uids, |uid| snap.message(uid).is_some()))
    }

    fn set_mailbox_guid(&mut self, guid: MailboxGuid) -> Result<()> {
        self.load()?;
        self.index_written = true;
        crate::index::set_mailbox_guid(&self.dir, DboxKind::Multi, guid)?;
        self.guid = guid;
        self.refresh()
    }

    fn enable_modseqs(&mut self) -> Result<()> {
        self.load()?;
        // already tracked as of the last sync: nothing to lock or read
        if self.snap.modseqs_tracked {
            return Ok(());
        }
        if crate::index::enable_modseqs(&self.dir)? {
            self.index_written = true;
            self.refresh()?;
        }
        Ok(())
    }

    fn update_mailbox(&mut self, update: &mailstore::MailboxUpdate) -> Result<()> {
        if crate::index::update_index(&self.dir, DboxKind::Multi, update)? {
            self.index_written = true;
            self.refresh()?;
        }
        Ok(())
    }
}

struct PendingSave {
    /// Where the dbox message starts in the spool, and its size there.
    offset: u64,
    size: u64,
    guid128: [u8; 16],
    /// The body's size and virtual size, as the metadata gives them to a reader.
    physical: u64,
    vsize: u64,
    /// Its `received_date` is set: the one written.
    mail: NewMail,
}

struct MdboxTransaction<'a> {
    mb: &'a mut MdboxMailbox,
    saves: Vec<PendingSave>,
    /// The temp file the saved messages wait in (created by the first save) and its length.
    spool: Option<(PathBuf, File, u64)>,
    ops: MailboxOps,
}

/// A transaction's changes of existing messages.
#[derive(Default)]
struct MailboxOps {
    updates: Vec<(u32, FlagUpdate)>,
    expunges: Vec<u32>,
    /// `mark_as_sync`: the mailbox index records are marked SYNC.
    by_sync: bool,
}

impl MdboxTransaction<'_> {
    fn known(&self, uid: Uid) -> Result<()> {
        if self.mb.location(uid.0).is_some() {
            Ok(())
        } else {
            Err(Error::MailNotFound(uid))
        }
    }

    fn remove_temps(&mut self) {
        self.saves.clear();
        if let Some((path, _, _)) = self.spool.take() {
            let _ = fs::remove_file(path);
        }
    }

    /// The spool, created on first use.
    fn spool(&mut self) -> Result<&mut (PathBuf, File, u64)> {
        if self.spool.is_none() {
            let storage = self.mb.layout.storage_dir();
            mkdir_all(&storage, 0o700).map_err(|e| Error::io("mkdir", &storage, e))?;
            let temp = storage.join(temp_name());
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
                .map_err(|e| Error::io("open", &temp, e))?;
            return Ok(self.spool.insert((temp, f, 0)));
        }
        self.spool
            .as_mut()
            .ok_or_else(|| Error::NotPossible("mdbox: spool vanished".into()))
    }
}

/// The m.N file new messages go to: the highest one while it is below the rotate size,
/// else a new one. Returns (file_id, file, whether it is new); the file is flocked.
fn appendable_file(storage: &Path, highest: u32, rotate_size: u64) -> Result<(u32, File, bool)> {
    if highest > 0 {
        let path = storage.join(map_file_name(highest));
        match OpenOptions::new().read(true).append(true).open(&path) {
            // someone else appending to it (Dovecot flocks m.N before it takes the map
            // lock): use a new file rather than wait, which could deadlock
            Ok(f) if try_lock_file(&f, &path)? => {
                let ok_header = file::read_file_header(&f).is_ok();
                let len = f
                    .metadata()
                    .map_err(|e| Error::io("fstat", &path, e))?
                    .len();
                if ok_header && len < rotate_size {
                    return Ok((highest, f, false));
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("open", &path, e)),
        }
    }
    let mut id = highest + 1;
    loop {
        let path = storage.join(map_file_name(id));
        match OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                // a brand-new file: nobody else can hold its lock for long
                if !try_lock_file(&f, &path)? {
                    id += 1;
                    continue;
                }
                f.write_all(&FileHeader::encode(now().max(0) as u64))
                    .map_err(|e| Error::io("write", &path, e))?;
                return Ok((id, f, true));
            }
            // a leftover file nobody maps (crash after creating it): skip its id
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => id += 1,
            Err(e) => return Err(Error::io("open", &path, e)),
        }
    }
}

/// flock(LOCK_EX|LOCK_NB) as Dovecot's dbox_file_try_lock (DBOX_FILE_LOCK_METHOD_FLOCK).
/// False when another process holds it.
pub(crate) fn try_lock_file(f: &File, path: &Path) -> Result<bool> {
    match rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(Error::io("flock", path, e.into())),
    }
}

impl Transaction for MdboxTransaction<'_> {
    fn save(&mut self, mail: NewMail, body: &mut dyn Read) -> Result<()> {
        check_keywords(&mail.keywords)?;
        let guid = checked_guid(&mail)?;
        let mut mail = mail;
        // the date written is the one the metadata cache gets
        mail.received_date.get_or_insert_with(now);
        let name = self.mb.name.clone();
        let line_endings = self.mb.line_endings;
        let (temp, f, len) = self.spool()?;
        let offset = *len;
        let written = write_message(
            f,
            temp,
            offset,
            &[],
            &MessageMeta {
                mail: &mail,
                guid: &guid,
                orig_mailbox: Some(&name),
            },
            line_endings,
            body,
        );
        let (physical, vsize, size) = match written {
            Ok(sizes) => sizes,
            Err(e) => {
                // drop the partial message; the spool stays usable for the next save
                f.set_len(offset)
                    .and_then(|()| f.seek(io::SeekFrom::Start(offset)).map(|_| ()))
                    .map_err(|e2| Error::io("truncate", temp.as_path(), e2))?;
                return Err(e);
            }
        };
        *len = offset + size;
        let guid128 = mailsupport::sha1::guid_128(&guid);
        mail.guid = Some(Guid::from_bytes(guid));
        self.saves.push(PendingSave {
            offset,
            size,
            guid128,
            physical,
            vsize,
            mail,
        });
        Ok(())
    }

    fn update_flags(&mut self, uid: Uid, update: &FlagUpdate) -> Result<()> {
        self.known(uid)?;
        check_keywords(&update.keywords)?;
        self.ops.updates.push((uid.0, update.clone()));
        Ok(())
    }

    fn expunge(&mut self, uid: Uid) -> Result<()> {
        self.known(uid)?;
        if !self.ops.expunges.contains(&uid.0) {
            self.ops.expunges.push(uid.0);
        }
        Ok(())
    }

    fn mark_as_sync(&mut self) {
        self.ops.by_sync = true;
    }

    fn commit(mut self: Box<Self>) -> Result<CommitResult> {
        if self.saves.is_empty() && self.ops.updates.is_empty() && self.ops.expunges.is_empty() {
            // nothing to log: no lock, no index read, no housekeeping (a backup's source
            // commits its empty side of the plan)
            let uid_validity = match &self.mb.quick {
                Some((status, _)) => status.uid_validity,
                None => self.mb.snap.counters.uid_validity,
            };
            return Ok(CommitResult {
                saved: Vec::new(),
                uid_validity,
            });
        }
        let saves = std::mem::take(&mut self.saves);
        let ops = std::mem::take(&mut self.ops);
        let layout = self.mb.layout.clone();
        let map_w = map_writer(&layout);
        let spool = self.spool.as_ref().map(|(p, f, _)| (p.as_path(), f));
        let result = if saves.is_empty() {
            // flags and expunges touch only the mailbox index (refcounts follow below)
            commit_locked(&self.mb.writer, true, |view, t| {
                mailbox_changes(view, t, &saves, &[], &ops)
            })
            .map(|(r, info)| {
                crate::index::housekeeping(&self.mb.writer, info.log_offset);
                r
            })
        } else {
            let spool =
                spool.ok_or_else(|| Error::NotPossible("mdbox: saves without a spool".into()))?;
            commit_with_saves(&map_w, &self.mb.writer, &layout, spool, &saves, &ops)
        };
        if let Some((path, _, _)) = self.spool.take() {
            let _ = fs::remove_file(path);
        }
        self.mb.index_written = true;
        if !saves.is_empty() {
            self.mb.map_cache.note_written(map_w.paths());
        }
        let (saved, uid_validity, released) = result.map_err(|CommitError(e)| e)?;
        if !released.is_empty() {
            self.mb.map_cache.note_written(map_w.paths());
            // the messages left this mailbox: their map refcounts drop (data stays until
            // purge; a crash before this leaves refcounts too high, a leak, not a loss)
            map_commit(&map_w, |t| {
                for map_uid in released {
                    t.ext_atomic_inc(ext::REF, map_uid, -1);
                }
            })?;
        }
        self.mb.after_commit()?;
        Ok(CommitResult {
            saved,
            uid_validity,
        })
    }

    fn rollback(mut self: Box<Self>) {
        self.remove_temps();
    }
}

impl Drop for MdboxTransaction<'_> {
    fn drop(&mut self) {
        self.remove_temps();
    }
}

/// UIDs granted, UIDVALIDITY, map UIDs whose refcount must drop.
type Committed = (Vec<Uid>, u32, Vec<u32>);

/// Saves in Dovecot's write order (mdbox-save.c mdbox_transaction_save_commit_pre, which
/// commits the map transaction of mdbox_map_append_assign_map_uids before the mailbox
/// transaction): under the map lock the messages are appended to an m.N file and their
/// map records (refcount 1) committed; then, under the mailbox lock, the mailbox records
/// pointing to them. A crash between the two leaves map records no mailbox points to
/// (refcount 1: a leak, never shown, never purged); never the reverse — a mailbox record
/// whose map UID the map doesn't have yet, which the next save would reuse for another
/// message (found by the kill -9 trials of tests/dbox_ops.rs: the killed save's record
/// then showed the next message twice, with refcount 1 for two records). If the mailbox
/// commit fails, the map records' refcounts are dropped back to 0 (purge removes them).
/// The two locks are never held together, so no lock-order deadlock with Dovecot.
fn commit_with_saves(
    map_w: &IndexWriter,
    mb_writer: &IndexWriter,
    layout: &Layout,
    spool: (&Path, &File),
    saves: &[PendingSave],
    ops: &MailboxOps,
) -> std::result::Result<Committed, CommitError> {
    let storage = layout.storage_dir();
    let ((map_uids, map_uid_validity), map_info) = commit_locked_synced(
        map_w,
        false,
        |map_view, mt| -> std::result::Result<(Vec<u32>, u32), CommitError> {
            let map_uids =
                append_to_storage(&storage, layout.rotate_size, map_view, mt, spool, saves)?;
            Ok((map_uids, map_view.uid_validity()))
        },
    )?;
    let r = commit_locked(mb_writer, true, |view, t| {
        mailbox_changes(view, t, saves, &map_uids, ops)
    });
    match r {
        Ok((c, info)) => {
            crate::index::housekeeping(map_w, map_info.log_offset);
            crate::index::housekeeping(mb_writer, info.log_offset);
            add_saved_to_meta_cache(mb_writer, map_uid_validity, saves, &map_uids);
            Ok(c)
        }
        Err(e) => {
            let _ = map_commit(map_w, |t| {
                for &u in &map_uids {
                    t.ext_atomic_inc(ext::REF, u, -1);
                }
            });
            Err(e)
        }
    }
}

/// Appends the saved messages from the spool to the appendable m.N (flocked), moving to a
/// new file whenever the current one has reached the rotate size, fsyncs every file it
/// wrote, and maps the messages in `mt`. Returns their map UIDs.
fn append_to_storage(
    storage: &Path,
    rotate_size: u64,
    map_view: &View,
    mt: &mut mailsync_index::Transaction<'_>,
    (spool_path, spool): (&Path, &File),
    saves: &[PendingSave],
) -> Result<Vec<u32>> {
    let hdr = map_view
        .extension(ext::MAP)
        .map(|e| MapHeader::decode(&e.data))
        .unwrap_or_default();
    let mut highest = hdr.highest_file_id;
    let mut buf = vec![0u8; 256 * 1024];
    let mut map_uids = Vec::with_capacity(saves.len());
    mt.ext_intro(ext::MAP, 8, 12, 4);
    mt.ext_intro(ext::REF, 0, 2, 2);
    let mut current: Option<(u32, File, PathBuf, u64)> = None;
    // Messages lie one after the other in the spool and go one after the other into a
    // file: copied together, a run of them at a time (spool offset, file offset, length),
    // not a read and a write each.
    let mut run: Option<(u64, u64, u64)> = None;
    let copy = |run: &mut Option<(u64, u64, u64)>, f: &File, path: &Path, buf: &mut [u8]| {
        let Some((from, to, len)) = run.take() else {
            return Ok(());
        };
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(buf.len() as u64) as usize;
            let n = spool
                .read_at(&mut buf[..want], from + done)
                .map_err(|e| Error::io("read", spool_path, e))?;
            if n == 0 {
                return Err(Error::io(
                    "read",
                    spool_path,
                    io::Error::new(io::ErrorKind::UnexpectedEof, "spool shorter than saved"),
                ));
            }
            f.write_all_at(&buf[..n], to + done)
                .map_err(|e| Error::io("write", path, e))?;
            done += n as u64;
        }
        Ok(())
    };
    for (map_uid, s) in (map_view.next_uid()..).zip(saves) {
        if let Some((_, f, path, _)) = current.take_if(|(_, _, _, len)| *len >= rotate_size) {
            copy(&mut run, &f, &path, &mut buf)?;
            f.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
        }
        let (file_id, f, path, offset) = match &mut current {
            Some(open) => open,
            None => {
                let (file_id, f, _new) = appendable_file(storage, highest, rotate_size)?;
                highest = highest.max(file_id);
                let path = storage.join(map_file_name(file_id));
                let len = f
                    .metadata()
                    .map_err(|e| Error::io("fstat", &path, e))?
                    .len();
                current.insert((file_id, f, path, len))
            }
        };
        let written = s.size;
        run = match run {
            Some((from, to, len)) if from + len == s.offset && to + len == *offset => {
                Some((from, to, len + written))
            }
            mut other => {
                copy(&mut other, f, path, &mut buf)?;
                Some((s.offset, *offset, written))
            }
        };
        let size = u32::try_from(written)
            .map_err(|_| Error::NotPossible("message too large for mdbox".into()))?;
        let off = u32::try_from(*offset)
            .map_err(|_| Error::NotPossible(format!("{} is full", path.display())))?;
        mt.append(map_uid, 0);
        let mut rec = Vec::with_capacity(12);
        rec.extend_from_slice(&file_id.to_le_bytes());
        rec.extend_from_slice(&off.to_le_bytes());
        rec.extend_from_slice(&size.to_le_bytes());
        mt.ext_rec_update(ext::MAP, map_uid, &rec);
        mt.ext_rec_update(ext::REF, map_uid, &1u16.to_le_bytes());
        map_uids.push(map_uid);
        *offset += written;
    }
    if let Some((_, f, path, _)) = current.take() {
        copy(&mut run, &f, &path, &mut buf)?;
        f.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
    }
    if highest > hdr.highest_file_id {
        mt.ext_hdr_update(ext::MAP, 0, &highest.to_le_bytes());
    }
    Ok(map_uids)
}

/// Adds the messages just saved (and committed) to the mailbox's metadata cache, as a
/// metadata read would give them: the next listing reads none of their metadata. A
/// cache that can't be written costs that listing the reads, nothing else.
fn add_saved_to_meta_cache(
    mb_writer: &IndexWriter,
    map_uid_validity: u32,
    saves: &[PendingSave],
    map_uids: &[u32],
) {
    let entries = saves.iter().zip(map_uids).filter_map(|(s, &map_uid)| {
        Some(meta_cache::Entry {
            map_uid,
            map_size: u32::try_from(s.size).ok()?,
            // as read_metadata gives it: the hex written (`received.max(0)`), parsed
            received: s.mail.received_date.unwrap_or(0).max(0),
            physical: s.physical,
            vsize: Some(s.vsize),
            guid: s.mail.guid.as_ref()?.as_bytes(),
        })
    });
    let path = meta_cache::path(&mb_writer.paths().dir);
    let _ = meta_cache::append(&path, map_uid_validity, entries);
}

/// The mailbox side of a commit: appends (with `mdbox` and `guid` records), flag
/// changes, expunges (whose map UIDs are returned for the refcount drop).
fn mailbox_changes(
    view: &View,
    t: &mut mailsync_index::Transaction<'_>,
    saves: &[PendingSave],
    map_uids: &[u32],
    ops: &MailboxOps,
) -> std::result::Result<Committed, CommitError> {
    let MailboxOps {
        updates,
        expunges,
        by_sync,
    } = ops;
    if *by_sync {
        t.mark_sync();
    }
    let wishes: Vec<Option<Uid>> = saves.iter().map(|s| s.mail.uid).collect();
    let uids = assign_uids(view.next_uid(), &wishes);
    if !saves.is_empty() {
        t.ext_intro(ext::MDBOX, 0, 8, 4);
        t.ext_intro(ext::GUID, 0, 16, 1);
    }
    let mut saved_pop3 = pop3::SavedPop3::default();
    for ((s, &uid), &map_uid) in saves.iter().zip(&uids).zip(map_uids) {
        saved_pop3.add(&s.mail.pop3, uid);
        t.append(uid, s.mail.flags.0 & 0x1f);
        let save_date = s
            .mail
            .saved_date
            .unwrap_or_else(now)
            .clamp(0, u32::MAX as i64);
        let mut rec = Vec::with_capacity(8);
        rec.extend_from_slice(&map_uid.to_le_bytes());
        rec.extend_from_slice(&(save_date as u32).to_le_bytes());
        t.ext_rec_update(ext::MDBOX, uid, &rec);
        t.ext_rec_update(ext::GUID, uid, &s.guid128);
        for k in &s.mail.keywords {
            t.keywords(true, k.as_bytes(), &[uid]);
        }
    }
    // mdbox-save.c mdbox_transaction_save_commit_pre: header flags
    // (dbox_save_update_header_flags) and hdr-pop3-uidl (index_pop3_uidl_set_max_uid)
    saved_pop3.write(view, t, DboxKind::Multi);
    for (uid, update) in updates {
        if expunges.contains(uid) {
            continue;
        }
        if let Some(m) = view.message(*uid) {
            add_flag_update(t, &m, update);
        }
    }
    let mut released = Vec::new();
    for &uid in expunges {
        let Some(m) = view.message(uid) else { continue };
        let guid = m.guid128().unwrap_or([0; 16]);
        if let Some(r) = m.ext(ext::MDBOX).map(MdboxRecord::decode) {
            released.push(r.map_uid);
        }
        t.expunge_guid(uid, guid);
    }
    Ok((
        uids.into_iter().map(Uid).collect(),
        view.uid_validity(),
        released,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailstore::{Location, Store, StoreOptions};

    fn layout(dir: &Path) -> Layout {
        let loc = Location::parse("mdbox:~/mdbox", Some(dir)).unwrap();
        Layout::from_location(&loc, &StoreOptions::default(), DboxKind::Multi).unwrap()
    }

    fn store(dir: &Path) -> crate::DboxStore {
        let loc = Location::parse("mdbox:~/mdbox", Some(dir)).unwrap();
        crate::DboxStore::open(&loc, &StoreOptions::default()).unwrap()
    }

    fn save(mb: &mut dyn Mailbox, n: usize) -> Vec<Uid> {
        let mut t = mb.begin().unwrap();
        for i in 0..n {
            let body = format!("Subject: m{i}\n\nbody {i}\n");
            t.save(NewMail::default(), &mut body.as_bytes()).unwrap();
        }
        t.commit().unwrap().saved
    }

    /// `\Flagged` added.
    fn add_flagged() -> FlagUpdate {
        FlagUpdate {
            op: mailstore::FlagOp::Add,
            flags: mailstore::Flags::FLAGGED,
            keywords: Vec::new(),
        }
    }

    /// A new store whose INBOX holds `n` messages saved and committed by a handle since
    /// dropped (its index written), and its layout.
    fn inbox_with(n: usize) -> (tempfile::TempDir, Layout) {
        let tmp = tempfile::tempdir().unwrap();
        let layout = layout(tmp.path());
        let store = store(tmp.path());
        let mut mb = store.open_mailbox("INBOX").unwrap();
        save(mb.as_mut(), n);
        (tmp, layout)
    }

    /// A sync of a mailbox whose index is unchanged leaves its map table as it was, while
    /// another mailbox's commit and a purge change the map: its counters are answered
    /// without reading the map, and the first thing that locates a message reads the map
    /// as it is then (a message the purge moved is read from its new file).
    #[test]
    fn an_unchanged_mailbox_reads_a_changed_map_only_to_locate_a_message() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = layout(tmp.path());
        let cache = Arc::new(MapCache::default());
        let st = store(tmp.path());
        st.open_mailbox("INBOX").unwrap();
        st.create_mailbox("Other", None).unwrap();
        let mut mb = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        let uids = save(&mut mb, 3);
        let before = mb.mails().unwrap();
        let counters = mb.counters().unwrap();
        let map = Arc::clone(&mb.map);

        // Other's messages go into the same m.1; one expunged, then purged: m.1 is
        // rewritten elsewhere, INBOX's messages with it
        let mut other = MdboxMailbox::open_handle(&layout, "Other", Arc::clone(&cache)).unwrap();
        let theirs = save(&mut other, 2);
        let mut t = other.begin().unwrap();
        t.expunge(theirs[0]).unwrap();
        t.commit().unwrap();
        drop(other);
        let stats = crate::purge::purge(&layout).unwrap();
        assert!(stats.messages_moved >= 3, "{stats:?}");

        mb.sync().unwrap();
        assert!(
            Arc::ptr_eq(&mb.map, &map),
            "the map table isn't read at the sync"
        );
        assert_eq!(mb.counters().unwrap(), counters);
        assert!(Arc::ptr_eq(&mb.map, &map), "nor for the counters");

        let mut body = String::new();
        mb.open_mail(uids[1])
            .unwrap()
            .read_to_string(&mut body)
            .unwrap();
        assert!(body.contains("body 1"), "{body}");
        assert!(
            !Arc::ptr_eq(&mb.map, &map),
            "read again to locate the message"
        );
        assert_eq!(mb.mails().unwrap(), before);
    }

    /// A message's body location leaves the handle's table once the body is opened (a
    /// sync opens each once): a mailbox sent whole doesn't end the run holding every
    /// message's location. A second open reads the location again.
    #[test]
    fn an_opened_body_leaves_the_table_of_body_locations() {
        let (_tmp, layout) = inbox_with(4);
        let mut mb =
            MdboxMailbox::open_handle(&layout, "INBOX", Arc::new(MapCache::default())).unwrap();
        let uids: Vec<Uid> = mb.mails().unwrap().iter().map(|r| r.uid).collect();
        assert_eq!(uids.len(), 4);
        while !mb.prefetch_mails(2).unwrap() {}
        assert_eq!(mb.bodies.len(), 4, "read ahead: every location known");
        let read = |mb: &mut MdboxMailbox, uid: Uid| {
            let mut body = String::new();
            mb.open_mail(uid)
                .unwrap()
                .read_to_string(&mut body)
                .unwrap();
            body
        };
        for (i, &uid) in uids.iter().enumerate() {
            assert!(read(&mut mb, uid).contains(&format!("body {i}")));
            assert_eq!(mb.bodies.len(), 3 - i, "opened: its location is dropped");
        }
        assert!(read(&mut mb, uids[2]).contains("body 2"), "opened again");
        assert!(mb.bodies.is_empty());
    }

    #[test]
    fn a_sync_with_nothing_changed_keeps_the_snapshot_and_the_map_table() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = layout(tmp.path());
        let cache = Arc::new(MapCache::default());
        // the store creates INBOX's index on first open
        store(tmp.path()).open_mailbox("INBOX").unwrap();
        let mut mb = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        save(&mut mb, 3);
        assert_eq!(mb.mails().unwrap().len(), 3);
        // the snapshot's message table: a rebuild allocates a new one while the old is alive
        let messages = mb.snap.messages.as_ptr();
        let map = Arc::clone(&mb.map);
        let bodies = mb.bodies.len();
        assert_eq!(bodies, 3);
        mb.sync().unwrap();
        mb.sync().unwrap();
        assert_eq!(
            mb.snap.messages.as_ptr(),
            messages,
            "unchanged index: not read again"
        );
        assert!(Arc::ptr_eq(&mb.map, &map), "unchanged map: not read again");
        assert_eq!(mb.bodies.len(), bodies, "body locations read stay");

        // a change through another handle of the same store: the next sync sees it
        let mut other = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        let new = save(&mut other, 1);
        assert!(mb.snap.message(new[0].0).is_none());
        mb.sync().unwrap();
        assert!(!Arc::ptr_eq(&mb.map, &map));
        assert!(mb.snap.message(new[0].0).is_some());
        assert_eq!(mb.mails().unwrap().len(), 4);
    }

    #[test]
    fn quick_opens_share_one_map_header_view_until_the_map_changes() {
        let (_tmp, layout) = inbox_with(3);
        let cache = Arc::new(MapCache::default());
        let paths = map_paths(&layout);
        let mb = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        assert!(mb.quick.is_some(), "opened from the headers");
        assert!(
            cache.is_header_cached(),
            "the quick open kept the map's header view"
        );
        let first = cache.header_view(&paths).unwrap();
        assert!(first.is_some());
        let again = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        assert!(again.quick.is_some());
        let second = cache.header_view(&paths).unwrap();
        assert!(Arc::ptr_eq(&first, &second), "unchanged map: read once");

        // a change to the map: never the old view again
        let mut other = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        save(&mut other, 1);
        let after = cache.header_view(&paths).unwrap();
        assert!(!Arc::ptr_eq(&after, &first));
    }

    /// A state older than `P` (written after the change, as a housekeeping or Dovecot
    /// writes it): the mailbox was read without the history before `P`, so `changes_since`
    /// reads it, and answers.
    #[test]
    fn changes_since_a_state_older_than_the_index_file_reads_the_whole_history() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        let mut mb = store.open_mailbox("INBOX").unwrap();
        mb.enable_modseqs().unwrap();
        // enough for the log to pass 32 KiB, where commits move its tail offset
        let uids = save(mb.as_mut(), 1000);
        let since = ModSeq(mb.counters().unwrap().highest_modseq);
        let mut t = mb.begin().unwrap();
        t.expunge(uids[0]).unwrap();
        t.commit().unwrap();
        drop(mb);
        let dir = tmp.path().join("mdbox/mailboxes/INBOX/dbox-Mails");
        IndexWriter::open(&dir, INDEX_PREFIX).write_index().unwrap();
        let p = std::fs::read(dir.join(INDEX_PREFIX)).unwrap();
        let p = mailsync_index::format::index::IndexFile::decode(&p, &dir).unwrap();
        let m = p
            .ext(ext::MODSEQ)
            .and_then(|e| mailsync_index::format::ext::ModseqHeader::decode(&e.data))
            .unwrap();
        assert!(m.highest_modseq > since.0, "P written past the state");
        // the mailbox is read with its head log from P's modseq header on
        let paths = mailsync_index::IndexPaths::new(&dir, INDEX_PREFIX);
        let recent = View::open_recent(&paths).unwrap();
        assert_eq!(recent.logs()[0].first_offset, m.log_offset as u64);
        let mut mb = store.open_mailbox("INBOX").unwrap();
        let new = save(mb.as_mut(), 1);
        match mb.changes_since(since).unwrap() {
            Changes::Known {
                changed, expunged, ..
            } => {
                assert_eq!(changed, new);
                assert_eq!(
                    expunged.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
                    [uids[0]]
                );
            }
            Changes::Unknown => panic!("the log reaches back to {since:?}"),
        }
    }

    /// Reads ahead until nothing is left, `max` messages a call; returns the calls.
    fn read_ahead_all(mb: &mut MdboxMailbox, max: usize) -> usize {
        let mut calls = 1;
        while !mb.prefetch_mails(max).unwrap() {
            calls += 1;
            assert!(calls < 100, "the read-ahead never ends");
        }
        calls
    }

    /// Moves the store's `m.N` files away (and closes the one kept open): any metadata
    /// read after this fails.
    fn hide_mail_files(layout: &Layout, mb: &mut MdboxMailbox) {
        mb.files.open = None;
        let storage = layout.storage_dir();
        let hidden = storage.with_file_name("hidden");
        fs::create_dir_all(&hidden).unwrap();
        for e in fs::read_dir(&storage).unwrap() {
            let name = e.unwrap().file_name();
            if name.to_string_lossy().starts_with("m.") {
                fs::rename(storage.join(&name), hidden.join(&name)).unwrap();
            }
        }
    }

    /// (map UID, map size, received, physical, vsize, GUID) of a cache entry.
    type CacheEntry = (u32, u32, i64, u64, Option<u64>, Vec<u8>);

    /// The entries of `mailsync.meta-cache` in INBOX's index directory, by map UID.
    fn meta_cache_entries(layout: &Layout) -> Vec<CacheEntry> {
        let path = meta_cache::path(&layout.mail_dir("INBOX"));
        let mut all = Vec::new();
        meta_cache::scan(&path, map_validity(layout), |e| {
            all.push((
                e.map_uid,
                e.map_size,
                e.received,
                e.physical,
                e.vsize,
                e.guid.to_vec(),
            ))
        });
        all.sort();
        all
    }

    /// The INBOX listing a new handle gives (through the map tables of `cache`).
    fn inbox_listing(layout: &Layout, cache: &Arc<MapCache>) -> Vec<MailRecord> {
        MdboxMailbox::open_handle(layout, "INBOX", Arc::clone(cache))
            .unwrap()
            .mails()
            .unwrap()
    }

    fn map_validity(layout: &Layout) -> u32 {
        map_uid_validity(layout, &MapCache::default()).unwrap()
    }

    /// Saves add their messages to the metadata cache as a metadata read would give them,
    /// and a listing then reads no metadata of what the cache has: it answers with the
    /// `m.N` files gone, and fails without the cache.
    #[test]
    fn saves_fill_the_meta_cache_and_a_listing_reads_no_metadata_it_has() {
        let n = META_CACHE_MIN + 36;
        let (_tmp, layout) = inbox_with(n);
        let cache_path = meta_cache::path(&layout.mail_dir("INBOX"));
        let saved = meta_cache_entries(&layout);
        assert_eq!(saved.len(), n);
        // read from the m.N files (the cache gone), the listing writes the cache anew
        fs::remove_file(&cache_path).unwrap();
        let cache = Arc::new(MapCache::default());
        let expected = inbox_listing(&layout, &cache);
        assert_eq!(expected.len(), n);
        assert_eq!(
            meta_cache_entries(&layout),
            saved,
            "saves wrote what a read gives"
        );

        let mut mb = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        hide_mail_files(&layout, &mut mb);
        assert_eq!(mb.mails().unwrap(), expected);
        fs::remove_file(&cache_path).unwrap();
        let without = mb.mails();
        assert!(
            matches!(without, Err(Error::Io { .. })),
            "without the cache the metadata is read: {without:?}"
        );
    }

    /// A listing made ahead is what the next `mails()` gives, read from nothing (the
    /// cache and the `m.N` files gone by then); given out once, and dropped when the view
    /// or the map changes (what `check_locations` follows): then the listing is made again
    /// (and fails here, its files gone).
    #[test]
    fn a_listing_made_ahead_answers_the_next_listing_once() {
        let n = META_CACHE_MIN + 5;
        let (_tmp, layout) = inbox_with(n);
        let cache_path = meta_cache::path(&layout.mail_dir("INBOX"));
        let cache = Arc::new(MapCache::default());
        let expected = inbox_listing(&layout, &cache);
        let mut changed = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        changed.list_ahead().unwrap();
        changed.check_locations();
        let mut mb = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        mb.list_ahead().unwrap();
        hide_mail_files(&layout, &mut mb);
        changed.files.open = None;
        fs::remove_file(&cache_path).unwrap();
        assert_eq!(mb.mails().unwrap(), expected);
        let again = mb.mails();
        assert!(
            matches!(again, Err(Error::Io { .. })),
            "the listing is given out once: {again:?}"
        );
        let after_change = changed.mails();
        assert!(
            matches!(after_change, Err(Error::Io { .. })),
            "a listing made before a change is not given out: {after_change:?}"
        );
    }

    /// A read-ahead leaves what the cache has to the listing (it reads nothing then);
    /// a listing of fewer than META_CACHE_MIN messages, or of fewer than one in
    /// META_CACHE_SHARE of the mailbox's, doesn't read the cache.
    #[test]
    fn a_read_ahead_leaves_what_the_cache_has_and_a_short_listing_ignores_it() {
        let n = META_CACHE_MIN * META_CACHE_SHARE + 1;
        let (_tmp, layout) = inbox_with(n);
        let cache = Arc::new(MapCache::default());
        let expected = inbox_listing(&layout, &cache);
        let mut mb = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        hide_mail_files(&layout, &mut mb);
        assert!(
            mb.prefetch_mails(128).unwrap(),
            "nothing left to read ahead"
        );
        assert!(mb.prefetched.is_empty());
        assert_eq!(mb.mails().unwrap(), expected);
        let uids: Vec<Uid> = expected.iter().map(|m| m.uid).collect();
        for few in [3, META_CACHE_MIN] {
            let short = mb.mails_of(&uids[..few]);
            assert!(
                matches!(short, Err(Error::Io { .. })),
                "{few} of {n} messages are read from their files: {short:?}"
            );
        }
        let enough = META_CACHE_MIN + 1;
        assert_eq!(mb.mails_of(&uids[..enough]).unwrap(), expected[..enough]);
    }

    /// A cache whose entries don't check (a flipped byte, zeros after a crash), or of
    /// another map, is not believed: the listing reads the metadata and writes the cache
    /// anew; entries of a purge's moved messages stay good, those of expunged messages go
    /// once they outnumber the rest.
    #[test]
    fn a_broken_or_foreign_meta_cache_is_read_around_and_written_anew() {
        let (n, kept) = (3 * META_CACHE_MIN, META_CACHE_MIN + 10);
        let (_tmp, layout) = inbox_with(n);
        let cache_path = meta_cache::path(&layout.mail_dir("INBOX"));
        let cache = Arc::new(MapCache::default());
        let listing = || {
            MdboxMailbox::open_handle(&layout, "INBOX", Arc::new(MapCache::default()))
                .unwrap()
                .mails()
                .unwrap()
        };
        let expected = listing();
        let good = fs::read(&cache_path).unwrap();
        let mut broken = good.clone();
        let mid = broken.len() / 2;
        broken[mid] ^= 0x55;
        let mut foreign = good.clone();
        foreign[meta_cache::HEADER_SIZE - 8] ^= 1;
        let mut zeros = good.clone();
        zeros.extend_from_slice(&[0; 100]);
        for bad in [broken, foreign, zeros, b"junk".to_vec()] {
            fs::write(&cache_path, &bad).unwrap();
            assert_eq!(listing(), expected);
            assert_eq!(
                fs::read(&cache_path).unwrap().len(),
                good.len(),
                "written anew"
            );
            assert_eq!(meta_cache_entries(&layout).len(), n);
        }

        // expunge most, purge (the rest move to a new m.N): the entries of those left are
        // still good, the cache is cut down to them
        let mut mb = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        let mut t = mb.begin().unwrap();
        for m in &expected[kept..] {
            t.expunge(m.uid).unwrap();
        }
        t.commit().unwrap();
        drop(mb);
        crate::purge::purge(&layout).unwrap();
        // more stale entries than STALE_MAX (1,024) and than entries in use
        let vals = map_validity(&layout);
        let stale_guids: Vec<String> = (0..1100).map(|i| format!("gone{i}")).collect();
        let stale: Vec<meta_cache::Entry<'_>> = stale_guids
            .iter()
            .enumerate()
            .map(|(i, g)| meta_cache::Entry {
                map_uid: 1_000_000 + i as u32,
                map_size: 1,
                received: 0,
                physical: 1,
                vsize: None,
                guid: g.as_bytes(),
            })
            .collect();
        meta_cache::append(&cache_path, vals, stale).unwrap();
        assert_eq!(meta_cache_entries(&layout).len(), n + 1100);
        let mut mb = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        // what the metadata gives (the expunges raised the modseqs)
        let meta = |r: &[MailRecord]| -> Vec<(Uid, Guid, i64, i64, u64, Option<u64>)> {
            r.iter()
                .map(|m| {
                    let (g, s) = (m.guid.clone(), m.saved_date);
                    (
                        m.uid,
                        g,
                        m.received_date,
                        s,
                        m.physical_size,
                        m.virtual_size,
                    )
                })
                .collect()
        };
        let some: Vec<Uid> = expected[..kept - 1].iter().map(|m| m.uid).collect();
        assert_eq!(
            meta(&mb.mails_of(&some).unwrap()),
            meta(&expected[..kept - 1])
        );
        assert_eq!(
            meta_cache_entries(&layout).len(),
            n + 1100,
            "a listing of some messages can't tell which entries are stale"
        );
        hide_mail_files(&layout, &mut mb);
        let left = mb.mails().unwrap();
        assert_eq!(
            meta(&left),
            meta(&expected[..kept]),
            "answered from the cache alone"
        );
        let entries = meta_cache_entries(&layout);
        assert_eq!(entries.len(), kept, "cut down to the messages left");
        assert!(entries
            .iter()
            .all(|e| left.iter().any(|m| m.guid.as_bytes() == e.5)));
    }

    /// What a read-ahead read is what `mails()` gives, without reading again, and only
    /// once: the records take it.
    #[test]
    fn mails_after_a_read_ahead_are_the_same_and_read_no_metadata() {
        let (_tmp, layout) = inbox_with(5);
        let cache = Arc::new(MapCache::default());
        let expected = inbox_listing(&layout, &cache);
        assert_eq!(expected.len(), 5);
        let mut mb = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        assert!(mb.quick.is_some(), "opened from the headers");
        assert_eq!(read_ahead_all(&mut mb, 2), 3, "five messages, two a call");
        assert!(mb.prefetch_mails(2).unwrap(), "nothing left");
        hide_mail_files(&layout, &mut mb);
        assert_eq!(mb.mails().unwrap(), expected);
        assert!(mb.prefetched.is_empty(), "what was read ahead is given up");
        let again = mb.mails();
        assert!(
            matches!(again, Err(Error::Io { .. })),
            "a second listing reads the files again: {again:?}"
        );
    }

    /// Flags, keywords and modseqs come from the view as of the listing, never from the
    /// time of the read-ahead; a message expunged meanwhile is not listed.
    #[test]
    fn mails_after_a_read_ahead_show_the_changes_made_since() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = layout(tmp.path());
        let cache = Arc::new(MapCache::default());
        store(tmp.path()).open_mailbox("INBOX").unwrap();
        let mut mb = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        let uids = save(&mut mb, 3);
        read_ahead_all(&mut mb, 128);

        let mut other = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
        let mut t = other.begin().unwrap();
        t.update_flags(uids[0], &add_flagged()).unwrap();
        t.expunge(uids[1]).unwrap();
        t.commit().unwrap();
        let expected = other.mails().unwrap();

        mb.sync().unwrap();
        assert_eq!(
            mb.prefetched.len(),
            2,
            "the expunged message's entry is dropped"
        );
        let mails = mb.mails().unwrap();
        assert_eq!(mails, expected);
        assert_eq!(
            mails.iter().map(|m| m.uid).collect::<Vec<_>>(),
            [uids[0], uids[2]]
        );
        assert!(mails[0].flags.contains(mailstore::Flags::FLAGGED));
    }

    /// After its commit a handle answers its counters from the headers, as a new open
    /// does, when `dovecot.index` and a short replay of the log past it tell them, and
    /// reads the rest when asked. The same answers as a handle that read it all. The
    /// commit's housekeeping (a log past the rotate size) leaves `dovecot.index` behind
    /// while the replay is short, and writes it when the commit changed more records than
    /// the replay should hold.
    #[test]
    fn a_commit_leaves_the_counters_to_the_headers_and_the_rest_to_the_next_question() {
        for (before, saved, flag_all, index_written) in [
            (1000, 300, false, false),
            (3, 2, false, false),
            (1100, 2, true, true),
        ] {
            let (tmp, layout) = inbox_with(before);
            let cache = Arc::new(MapCache::default());
            let mut mb = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
            let uids = save(&mut mb, 1);
            let mut t = mb.begin().unwrap();
            for i in 0..saved - 1 {
                let body = format!("Subject: n{i}\n\nbody {i}\n");
                t.save(NewMail::default(), &mut body.as_bytes()).unwrap();
            }
            t.update_flags(uids[0], &add_flagged()).unwrap();
            if flag_all {
                for uid in 1..uids[0].0 {
                    t.update_flags(Uid(uid), &add_flagged()).unwrap();
                }
            }
            t.commit().unwrap();
            assert!(mb.quick.is_some(), "{before} + {saved}");
            let dir = tmp.path().join("mdbox/mailboxes/INBOX/dbox-Mails");
            let v = View::open(&dir, INDEX_PREFIX).unwrap();
            let p_at = v.header_on_disk().unwrap().log_file_head_offset as u64;
            assert_eq!(
                p_at == v.log_position().1,
                index_written,
                "{before} + {saved}"
            );
            let counters = mb.counters().unwrap();
            let mut fresh =
                MdboxMailbox::open_handle(&layout, "INBOX", Arc::new(MapCache::default())).unwrap();
            fresh.read_full().unwrap();
            assert_eq!(counters, fresh.counters().unwrap());
            assert_eq!(counters.messages as usize, before + saved);
            let mails = mb.mails().unwrap();
            assert!(mb.quick.is_none());
            assert_eq!(mails, fresh.mails().unwrap());
            assert!(mails[before].flags.contains(mailstore::Flags::FLAGGED));
        }
    }

    /// An index or message read ahead ends a quick open as the first history question
    /// would, and still tells that question when the index had moved on from the quick
    /// counters.
    #[test]
    fn an_index_read_ahead_keeps_what_a_quick_open_was_of() {
        for (moved, read_mails) in [(false, false), (true, false), (false, true), (true, true)] {
            let (_tmp, layout) = inbox_with(3);
            let cache = Arc::new(MapCache::default());
            let mut mb = MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
            assert!(mb.quick.is_some(), "opened from the headers");
            let since = ModSeq(mb.counters().unwrap().highest_modseq);
            if moved {
                let mut other =
                    MdboxMailbox::open_handle(&layout, "INBOX", Arc::clone(&cache)).unwrap();
                save(&mut other, 1);
            }
            if read_mails {
                mb.prefetch_mails(1).unwrap();
            } else {
                mb.prefetch_index().unwrap();
            }
            assert!(mb.quick.is_none(), "moved: {moved}");
            match mb.changes_since(since).unwrap() {
                Changes::Unknown => assert!(moved, "the quick state was the index's"),
                Changes::Known { changed, .. } => {
                    assert!(!moved, "the index moved on from the quick counters");
                    assert!(changed.is_empty());
                }
            }
        }
    }

    #[test]
    fn changes_since_answers_from_the_state_of_the_last_sync_or_not_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        let mut mb = store.open_mailbox("INBOX").unwrap();
        let uids = save(mb.as_mut(), 3);
        let status = mb.counters().unwrap();
        let since = ModSeq(status.highest_modseq);
        let mut other = store.open_mailbox("INBOX").unwrap();
        let mut t = other.begin().unwrap();
        t.expunge(uids[1]).unwrap();
        t.commit().unwrap();
        // the index changed after mb's last sync: mb can't tell what changed since its state
        assert_eq!(mb.changes_since(since).unwrap(), Changes::Unknown);
        mb.sync().unwrap();
        match mb.changes_since(since).unwrap() {
            Changes::Known { expunged, .. } => {
                assert_eq!(
                    expunged.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
                    [uids[1]]
                )
            }
            Changes::Unknown => panic!("the log reaches back to {since:?}"),
        }
    }
}
