//! One open mbox mailbox: a view of the file as of the last sync, and transactions that
//! rewrite the file under Dovecot's write locks, crash-safely.
//!
//! Metadata Dovecot keeps in the file (UIDVALIDITY, UIDs, flags, keywords) is read from and
//! written to the file's headers. Modseqs, HIGHESTMODSEQ and the change history are Dovecot's
//! index of the mailbox (`dovecot.index*`, `modseq` extension and transaction log): every
//! change mailsync makes is written there as EXTERNAL transactions, and read back from the
//! replayed view. What neither can hold — saved dates, GUIDs given by the caller, and the
//! mailbox GUID — lives in `<index dir>/mailsync-mbox.meta`, a small text file Dovecot
//! ignores (see FORMAT.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use mailstore::{
    Changes, CommitResult, Error, FlagChange, FlagUpdate, Flags, Guid, Keyword, LineEndingReader,
    MailRecord, Mailbox, MailboxGuid, MailboxStatus, MailboxUpdate, ModSeq, NewMail, Result,
    SaveLineEndings, SyncGuard, Transaction, Uid,
};

use crate::dovecot_index;
use crate::header::{self, HeaderLine};
use crate::lock::{self, FcntlLock};
use crate::md5::hex;
use crate::reader::{scan, MboxFile, MboxMessage, MessageReader, ScanError};
use crate::store::MailboxPaths;
use crate::writer::{self, BaseHeader, Managed};

/// The sidecar file in the mailbox's index directory.
pub const META_NAME: &str = "mailsync-mbox.meta";
const META_MAGIC: &str = "mailsync-mbox-meta 2";
const META_MAGIC_V1: &str = "mailsync-mbox-meta 1";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Per-message data neither the mbox file nor Dovecot's index can hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaMail {
    pub saved_date: i64,
    /// A GUID given at save time (or generated to keep GUIDs unique); `None` = the
    /// header MD5, as Dovecot computes it.
    pub guid: Option<Vec<u8>>,
}

/// The sidecar's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub mailbox_guid: MailboxGuid,
    /// UIDVALIDITY the per-message entries belong to (also used while the file is empty).
    pub uid_validity: u32,
    pub mails: BTreeMap<u32, MetaMail>,
}

impl Meta {
    pub fn new(guid: MailboxGuid) -> Meta {
        Meta {
            mailbox_guid: guid,
            uid_validity: new_uid_validity(),
            mails: BTreeMap::new(),
        }
    }

    /// Reads the sidecar; `None` if missing or unreadable (it is then rebuilt). Version 1
    /// (which also kept modseqs and expunges, now in Dovecot's index) is read too.
    pub fn load(index_dir: &Path) -> Option<Meta> {
        let text = fs::read_to_string(index_dir.join(META_NAME)).ok()?;
        let mut lines = text.lines();
        let magic = lines.next()?;
        if magic != META_MAGIC && magic != META_MAGIC_V1 {
            return None;
        }
        let mut meta = Meta {
            mailbox_guid: MailboxGuid::default(),
            uid_validity: 0,
            mails: BTreeMap::new(),
        };
        let guid_field = |g: &str| -> Option<Option<Vec<u8>>> {
            if g == "-" {
                Some(None)
            } else {
                Some(Some(unhex(g)?))
            }
        };
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            let (uid, saved, guid) = match f.as_slice() {
                ["guid", g] => {
                    meta.mailbox_guid = MailboxGuid::parse_hex(g.as_bytes())?;
                    continue;
                }
                ["uidvalidity", v] => {
                    meta.uid_validity = v.parse().ok()?;
                    continue;
                }
                ["m", uid, saved, guid] => (uid, saved, guid),
                // version 1: m <uid> <modseq> <saved> <guid> <state>
                ["m", uid, _, saved, guid, _] => (uid, saved, guid),
                _ => continue,
            };
            meta.mails.insert(
                uid.parse().ok()?,
                MetaMail {
                    saved_date: saved.parse().ok()?,
                    guid: guid_field(guid)?,
                },
            );
        }
        (!meta.mailbox_guid.is_zero()).then_some(meta)
    }

    /// Writes the sidecar atomically (temp + fsync + rename).
    pub fn save(&self, index_dir: &Path) -> Result<()> {
        let mut out = format!(
            "{META_MAGIC}\nguid {}\nuidvalidity {}\n",
            self.mailbox_guid, self.uid_validity
        );
        for (uid, m) in &self.mails {
            let guid = m.guid.as_ref().map_or("-".to_string(), |g| hex(g));
            out.push_str(&format!("m {uid} {} {guid}\n", m.saved_date));
        }
        let path = index_dir.join(META_NAME);
        fs::create_dir_all(index_dir).map_err(|e| Error::io("mkdir", index_dir, e))?;
        mailsupport::atomic::write_atomic(&path, out.as_bytes())
            .map_err(|e| Error::io("write", &path, e))
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A UIDVALIDITY as Dovecot picks one: the current time.
fn new_uid_validity() -> u32 {
    (now() as u32).max(1)
}

fn scan_error(path: &Path, e: ScanError) -> Error {
    match e {
        ScanError::NotMbox => Error::corrupted(path, "mbox file doesn't begin with 'From ' line"),
        ScanError::Io(e) => Error::io("read", path, e),
    }
}

/// UIDVALIDITY and next UID from Dovecot's index of the mailbox, when Dovecot has one: an
/// mbox Dovecot created is an empty file whose UIDVALIDITY lives only there, and Dovecot
/// starts its sync from its index's next UID (mbox-sync.c), so mailsync does too.
fn dovecot_index_state(index_dir: &Path) -> Option<(u32, u32)> {
    if !index_dir.join("dovecot.index.log").exists() && !index_dir.join("dovecot.index").exists() {
        return None;
    }
    let view = mailsync_index::View::open(index_dir, "dovecot.index").ok()?;
    (view.uid_validity() != 0).then(|| (view.uid_validity(), view.next_uid().max(1)))
}

/// The mailbox GUID Dovecot keeps in its index (`mbox` extension header, offset 16), for a
/// mailbox mailsync sees first after Dovecot.
pub(crate) fn dovecot_mailbox_guid(index_dir: &Path) -> Option<MailboxGuid> {
    let view = mailsync_index::View::open(index_dir, "dovecot.index").ok()?;
    let hdr = view.extension("mbox")?;
    let bytes: [u8; 16] = hdr.data.get(16..32)?.try_into().ok()?;
    let guid = MailboxGuid(bytes);
    (!guid.is_zero()).then_some(guid)
}

/// Brings the sidecar in line with the file; returns whether it changed.
fn reconcile(file: &MboxFile, meta: &mut Meta, dovecot: Option<(u32, u32)>) -> bool {
    let mut changed = false;
    let mut file_uv = file.uid_validity();
    if file_uv == 0 {
        // no X-IMAPbase yet: Dovecot's index, if any, holds the UIDVALIDITY
        file_uv = dovecot.map_or(0, |d| d.0);
    }
    if file_uv != 0 && meta.uid_validity != file_uv {
        meta.uid_validity = file_uv;
        meta.mails.clear();
        changed = true;
    }
    if meta.uid_validity == 0 {
        meta.uid_validity = new_uid_validity();
        changed = true;
    }
    let present: HashSet<u32> = file.messages.iter().map(|m| m.uid).collect();
    let before = meta.mails.len();
    meta.mails.retain(|uid, _| present.contains(uid));
    changed |= meta.mails.len() != before;
    for m in &file.messages {
        meta.mails.entry(m.uid).or_insert_with(|| {
            changed = true;
            MetaMail {
                saved_date: now(),
                guid: None,
            }
        });
    }
    changed
}

/// GUIDs of messages mailsync saved must be unique in the mailbox (the mailstore contract):
/// a saved message whose header MD5 equals another message's GUID gets a generated GUID in
/// the sidecar. Messages found in the file keep the header MD5 even when two are equal, as
/// Dovecot reports them.
fn make_saved_guids_unique(file: &MboxFile, meta: &mut Meta, saved: &[Uid]) {
    let saved: HashSet<u32> = saved.iter().map(|u| u.0).collect();
    let guid_of = |meta: &Meta, m: &MboxMessage| -> Vec<u8> {
        meta.mails
            .get(&m.uid)
            .and_then(|e| e.guid.clone())
            .unwrap_or_else(|| m.guid_hex().into_bytes())
    };
    let mut seen: HashSet<Vec<u8>> = file
        .messages
        .iter()
        .filter(|m| !saved.contains(&m.uid))
        .map(|m| guid_of(meta, m))
        .collect();
    for m in file.messages.iter().filter(|m| saved.contains(&m.uid)) {
        let guid = guid_of(meta, m);
        if seen.insert(guid) {
            continue;
        }
        if let Some(e) = meta.mails.get_mut(&m.uid) {
            if e.guid.is_none() {
                let fresh = Guid::generate().as_bytes().to_vec();
                seen.insert(fresh.clone());
                e.guid = Some(fresh);
            }
        }
    }
}

/// An open mbox mailbox.
pub struct MboxMailbox {
    name: String,
    paths: MailboxPaths,
    line_endings: SaveLineEndings,
    /// The file the view was read from (kept open: a rewrite renames a new file over the
    /// path, so this one keeps the bytes the view's offsets point at).
    file: Option<File>,
    /// The file's identity and change time when the view was read.
    stamp: Stamp,
    view: MboxFile,
    meta: Meta,
    /// Dovecot's index as of the last sync: modseqs, HIGHESTMODSEQ, the change history.
    index: Option<mailsync_index::View>,
    vsizes: HashMap<u32, u64>,
}

/// Inode, size and mtime (ns) of the mbox: any rewrite (ours or Dovecot's, both in place)
/// or append changes one of them, and the view's offsets are then stale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(file: &File, path: &Path) -> Result<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().map_err(|e| Error::io("fstat", path, e))?;
        Ok(Stamp {
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

impl MboxMailbox {
    pub(crate) fn open(
        name: String,
        paths: MailboxPaths,
        line_endings: SaveLineEndings,
    ) -> Result<MboxMailbox> {
        let mut mb = MboxMailbox {
            name,
            paths,
            line_endings,
            file: None,
            stamp: Stamp::default(),
            view: MboxFile::default(),
            meta: Meta::new(MailboxGuid::default()),
            index: None,
            vsizes: HashMap::new(),
        };
        mb.sync_impl()?;
        Ok(mb)
    }

    /// The mbox file's path.
    pub fn path(&self) -> &Path {
        &self.paths.file
    }

    fn open_file(&self, write: bool) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(&self.paths.file)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Error::MailboxNotFound(self.name.clone())
                } else {
                    Error::io("open", &self.paths.file, e)
                }
            })
    }

    fn load_meta(&self) -> Meta {
        Meta::load(&self.paths.index_dir).unwrap_or_else(|| {
            Meta::new(
                dovecot_mailbox_guid(&self.paths.index_dir).unwrap_or_else(MailboxGuid::generate),
            )
        })
    }

    /// Reads the file under a shared fcntl lock (mbox_read_locks = fcntl); writes only when
    /// the file lacks Dovecot's metadata, or the sidecar or Dovecot's index is behind it.
    fn sync_impl(&mut self) -> Result<()> {
        if writer::Journal::of(&self.paths.file).is_pending() {
            return self.locked_apply(Pending::default()).map(|_| ());
        }
        let dovecot = dovecot_index_state(&self.paths.index_dir);
        let file = self.open_file(false)?;
        let scanned = {
            let _lock = FcntlLock::acquire(&file, &self.paths.file, false, lock::LOCK_TIMEOUT)?;
            let scanned = scan(&file, dovecot.map_or(1, |d| d.1))
                .map_err(|e| scan_error(&self.paths.file, e))?;
            (scanned, Stamp::of(&file, &self.paths.file)?)
        };
        let (scanned, stamp) = scanned;
        let mut meta = Meta::load(&self.paths.index_dir);
        let meta_missing = meta.is_none();
        let mut m = meta
            .take()
            .unwrap_or_else(|| Meta::new(MailboxGuid::generate()));
        let meta_changed = reconcile(&scanned, &mut m, dovecot);
        let file_needs_metadata = scanned.needs_rewrite && !scanned.messages.is_empty();
        let index = dovecot_index::read_view(&self.paths.index_dir);
        // the index must hold what the file holds (someone other than Dovecot or mailsync
        // changed the file, or there is no index yet): written under the write locks
        let index_behind = index
            .as_ref()
            .is_none_or(|v| !dovecot_index::index_changes(v, &scanned, &HashMap::new()).is_empty());
        let index = index.filter(|v| !dovecot_index::uid_validity_differs(v, &scanned));
        if file_needs_metadata || meta_changed || meta_missing || index_behind {
            match self.locked_apply(Pending::default()) {
                Ok(_) => return Ok(()),
                // read-only mailbox: keep what we read (UIDs are then not persistent)
                Err(e) if e.kind() == mailstore::ErrorKind::Perm => {}
                Err(e) => return Err(e),
            }
        }
        self.file = Some(file);
        self.stamp = stamp;
        self.view = scanned;
        self.meta = m;
        self.index = index;
        self.vsizes.clear();
        Ok(())
    }

    fn message(&self, uid: Uid) -> Option<&MboxMessage> {
        self.view
            .messages
            .binary_search_by_key(&uid.0, |m| m.uid)
            .ok()
            .map(|i| &self.view.messages[i])
    }

    fn record_of(&self, m: &MboxMessage) -> MailRecord {
        let entry = self.meta.mails.get(&m.uid);
        let guid = entry
            .and_then(|e| e.guid.clone())
            .unwrap_or_else(|| m.guid_hex().into_bytes());
        MailRecord {
            uid: Uid(m.uid),
            guid: Guid::from_bytes(guid),
            // \Recent as Dovecot's first session sees it: no `O` in Status
            flags: if m.recent {
                m.flags | Flags::RECENT
            } else {
                m.flags
            },
            keywords: m.keywords.clone(),
            modseq: ModSeq(self.modseq_of(m.uid)),
            received_date: m.received,
            saved_date: entry.map_or(m.received, |e| e.saved_date),
            physical_size: m.physical_size(),
            virtual_size: self.vsizes.get(&m.uid).copied(),
        }
    }

    /// The message's MODSEQ from Dovecot's index (mail_index_modseq_lookup): the HIGHESTMODSEQ
    /// for a message the index doesn't know (yet).
    fn modseq_of(&self, uid: u32) -> u64 {
        self.index
            .as_ref()
            .and_then(|v| v.message(uid).map(|m| m.modseq()))
            .unwrap_or_else(|| self.highest_modseq())
            .max(1)
    }

    /// HIGHESTMODSEQ from Dovecot's index (at least 1, as doveadm shows it).
    fn highest_modseq(&self) -> u64 {
        self.index.as_ref().map_or(1, |v| v.highest_modseq().max(1))
    }

    fn reader_of(&self, uid: Uid) -> Result<Option<MessageReader>> {
        let msg = self.message(uid).ok_or(Error::MailNotFound(uid))?;
        let file = self.file.as_ref().ok_or(Error::MailNotFound(uid))?;
        // an in-place rewrite since the view was read moves messages: resync first
        let now = match File::open(&self.paths.file) {
            Ok(f) => Stamp::of(&f, &self.paths.file)?,
            Err(_) => return Ok(None),
        };
        if now != self.stamp {
            return Ok(None);
        }
        let clone = file
            .try_clone()
            .map_err(|e| Error::io("dup", &self.paths.file, e))?;
        Ok(Some(MessageReader::new(clone, msg)))
    }

    /// Applies a transaction (or, with nothing pending, just brings file metadata, sidecar
    /// and Dovecot's index up to date) under the write locks: dotlock, then fcntl
    /// (mbox_write_locks). Dovecot's index is written after the file, as Dovecot's mbox
    /// sync does (the file is the truth; the index is rebuilt from it when they differ).
    fn locked_apply(&mut self, pending: Pending) -> Result<CommitResult> {
        let by_sync = pending.by_sync;
        let write_lock = lock::WriteLock::acquire(&self.paths.file)?;
        let dovecot = dovecot_index_state(&self.paths.index_dir);
        let min_next_uid = dovecot.map_or(1, |d| d.1);
        let scanned =
            scan(&write_lock.file, min_next_uid).map_err(|e| scan_error(&self.paths.file, e))?;
        let mut meta = self.load_meta();
        reconcile(&scanned, &mut meta, dovecot);
        // GUIDs of the messages as they are now, for the expunge records
        let guids: HashMap<u32, Vec<u8>> = scanned
            .messages
            .iter()
            .map(|m| {
                let guid = meta
                    .mails
                    .get(&m.uid)
                    .and_then(|e| e.guid.clone())
                    .unwrap_or_else(|| m.guid_hex().into_bytes());
                (m.uid, guid)
            })
            .collect();
        let dirty = dovecot_index::read_view_for(&self.paths.index_dir, &scanned)
            .map(|v| dovecot_index::dirty_records(&v))
            .unwrap_or_default();
        let old_uid_validity = if scanned.uid_validity() != 0 {
            scanned.uid_validity()
        } else {
            meta.uid_validity
        };
        let result = self.rewrite(&write_lock.file, &scanned, &mut meta, pending, dirty)?;
        let (dovecot, min_next_uid) = if result.uid_validity != old_uid_validity {
            // a new UIDVALIDITY resets Dovecot's index (index_storage_mailbox_update →
            // mail_index_reset); it is written anew below, with the mailbox GUID
            dovecot_index::remove(&self.paths.index_dir)?;
            (None, 1)
        } else {
            (dovecot, min_next_uid)
        };
        // read back what is now on disk (still under both locks)
        let file = self.open_file(false)?;
        let now_scanned = scan(&file, min_next_uid).map_err(|e| scan_error(&self.paths.file, e))?;
        let stamp = Stamp::of(&file, &self.paths.file)?;
        let file_changed = stamp.len != scanned.size || now_scanned.messages != scanned.messages;
        reconcile(&now_scanned, &mut meta, dovecot);
        make_saved_guids_unique(&now_scanned, &mut meta, &result.saved);
        meta.save(&self.paths.index_dir)?;
        let uid_validity = if now_scanned.uid_validity() != 0 {
            now_scanned.uid_validity()
        } else {
            meta.uid_validity
        };
        dovecot_index::write(
            &self.paths.index_dir,
            &now_scanned,
            stamp.len,
            dovecot_index::Written {
                file_changed,
                by_sync,
            },
            uid_validity,
            meta.mailbox_guid,
            &guids,
        );
        self.index = dovecot_index::read_view_for(&self.paths.index_dir, &now_scanned);
        write_lock.release(&self.paths.file)?;
        self.stamp = stamp;
        self.file = Some(file);
        self.view = now_scanned;
        self.meta = meta;
        self.vsizes.clear();
        Ok(result)
    }

    /// Writes the new file next to the old one, fsyncs it and renames it over the old one
    /// (crash-safe: the path always names a complete mbox). Skipped when nothing changes.
    fn rewrite(
        &self,
        file: &File,
        scanned: &MboxFile,
        meta: &mut Meta,
        mut pending: Pending,
        dirty: HashMap<u32, (Flags, Vec<Keyword>)>,
    ) -> Result<CommitResult> {
        let current_uid_validity = if scanned.uid_validity() != 0 {
            scanned.uid_validity()
        } else {
            meta.uid_validity
        };
        let mut next_uid = scanned.next_uid.max(1);
        // update_mailbox (mbox_mailbox_update → mbox-sync.c mbox_sync_hdr_update): a new
        // UIDVALIDITY and a raised last UID go into X-IMAPbase
        let uid_validity = match pending.uid_validity {
            Some(v) if v != current_uid_validity => {
                if !scanned.messages.is_empty() {
                    return Err(Error::NotPossible(format!(
                        "{}: UIDVALIDITY can be changed only in an empty mailbox",
                        self.name
                    )));
                }
                // the old UIDs mean nothing under the new UIDVALIDITY
                next_uid = 1;
                v
            }
            _ => current_uid_validity,
        };
        let header_changed = uid_validity != current_uid_validity
            || pending.min_next_uid.is_some_and(|m| m > next_uid);
        if let Some(min) = pending.min_next_uid {
            next_uid = next_uid.max(min);
        }
        // UIDs for saves (mbox-save.c: a wanted UID ≥ next_uid is used)
        let mut saved = Vec::new();
        for s in &mut pending.saves {
            let uid = match s.mail.uid {
                Some(Uid(u)) if u >= next_uid => u,
                _ => next_uid,
            };
            s.uid = uid;
            next_uid = uid.saturating_add(1);
            saved.push(Uid(uid));
        }
        let expunged: HashSet<u32> = pending.expunges.iter().map(|u| u.0).collect();
        // new flags of existing messages
        // flags Dovecot changed in its index but not yet in the file (DIRTY records) are
        // written first, as Dovecot's full sync does (mbox_sync_get_dirty_flags)
        let mut new_state: HashMap<u32, (Flags, Vec<Keyword>)> = dirty
            .into_iter()
            .filter(|(uid, (flags, kws))| {
                // messages are in UID order (the reader assigns ascending UIDs)
                let i = scanned.messages.partition_point(|m| m.uid < *uid);
                scanned.messages.get(i).is_some_and(|m| {
                    m.uid == *uid
                        && (m.flags.0 & !Flags::RECENT.0 != flags.0
                            || !dovecot_index::same_keywords(&m.keywords, kws))
                })
            })
            .collect();
        for (uid, update) in &pending.updates {
            if let Some(m) = scanned.messages.iter().find(|m| m.uid == uid.0) {
                let (mut flags, mut kws) = new_state
                    .remove(&uid.0)
                    .unwrap_or_else(|| (m.flags, m.keywords.clone()));
                update.apply(&mut flags, &mut kws);
                flags.remove(Flags::RECENT);
                new_state.insert(uid.0, (flags, kws));
            }
        }
        // keyword list of X-IMAPbase: existing order, new ones appended
        let mut keywords: Vec<Vec<u8>> = scanned
            .base
            .as_ref()
            .map(|b| b.keywords.clone())
            .unwrap_or_default();
        let mut note = |k: &Keyword| {
            if Keyword::is_valid_atom(k.as_bytes()) && !keywords.iter().any(|x| x == k.as_bytes()) {
                keywords.push(k.as_bytes().to_vec());
            }
        };
        for (_, kws) in new_state.values() {
            kws.iter().for_each(&mut note);
        }
        for s in &pending.saves {
            s.mail.keywords.iter().for_each(&mut note);
        }
        for m in &scanned.messages {
            m.keywords.iter().for_each(&mut note);
        }
        let changes = header_changed
            || !pending.saves.is_empty()
            || !expunged.is_empty()
            || !new_state.is_empty()
            || (scanned.needs_rewrite && !scanned.messages.is_empty());
        if !changes {
            return Ok(CommitResult {
                saved,
                uid_validity,
            });
        }
        let last_uid = next_uid - 1;
        let base = BaseHeader {
            uid_validity,
            last_uid,
            keywords: &keywords,
        };
        let journal = writer::Journal::of(&self.paths.file);
        let tmp_path = journal.tmp.clone();
        let old_meta = file
            .metadata()
            .map_err(|e| Error::io("fstat", &self.paths.file, e))?;
        let result = (|| -> io::Result<()> {
            let tmp = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp_path)?;
            tmp.set_permissions(fs::Permissions::from_mode(0o600))?;
            let mut out = BufWriter::with_capacity(256 * 1024, &tmp);
            let mut first = true;
            let keep: Vec<&MboxMessage> = scanned
                .messages
                .iter()
                .filter(|m| !expunged.contains(&m.uid))
                .collect();
            for m in &keep {
                let (flags, kws) = new_state
                    .get(&m.uid)
                    .cloned()
                    .unwrap_or_else(|| (m.flags, m.keywords.clone()));
                writer::copy_range(file, m.from_start, m.hdr_offset, &mut out)?;
                let first_line = crate::lines::LineReader::peek_at(
                    file,
                    m.hdr_offset,
                    (m.header_end - m.hdr_offset).min(1024) as usize,
                )?;
                let from_first = writer::first_line_is_from(&first_line);
                let managed = writer::managed_headers(&Managed {
                    base: first.then(|| base.clone()),
                    uid: m.uid,
                    flags,
                    recent: m.recent,
                    keywords: &kws,
                    content_length: m.body_size(),
                });
                if !from_first {
                    out.write_all(&managed)?;
                }
                let ends_with_newline =
                    writer::copy_unmanaged_header(file, m.hdr_offset, m.header_end, &mut out)?;
                if from_first {
                    if !ends_with_newline {
                        out.write_all(b"\n")?;
                    }
                    out.write_all(&managed)?;
                }
                if m.body_offset > m.header_end {
                    out.write_all(b"\n")?;
                }
                writer::copy_range(file, m.body_offset, m.end, &mut out)?;
                out.write_all(b"\n")?;
                first = false;
            }
            for s in &mut pending.saves {
                out.write_all(&crate::from_line::create(
                    b"MAILER-DAEMON",
                    s.mail.received_date.unwrap_or_else(now),
                ))?;
                let mut flags = s.mail.flags;
                flags.remove(Flags::RECENT);
                let managed = writer::managed_headers(&Managed {
                    base: first.then(|| base.clone()),
                    uid: s.uid,
                    flags,
                    recent: true,
                    keywords: &s.mail.keywords,
                    content_length: s.body_len,
                });
                if !s.first_line_is_from {
                    out.write_all(&managed)?;
                }
                s.spool.seek(SeekFrom::Start(0))?;
                let mut header = (&mut s.spool).take(s.header_len);
                io::copy(&mut header, &mut out)?;
                if s.first_line_is_from {
                    if !s.header_ends_with_newline {
                        out.write_all(b"\n")?;
                    }
                    out.write_all(&managed)?;
                }
                if s.has_eoh {
                    out.write_all(b"\n")?;
                }
                s.spool.seek(SeekFrom::Start(s.body_start))?;
                io::copy(&mut (&mut s.spool).take(s.body_len), &mut out)?;
                out.write_all(b"\n")?;
                first = false;
            }
            if first {
                // nothing left: keep UIDVALIDITY and the next UID in a pseudo message
                out.write_all(&writer::pseudo_message(&base, now()))?;
            }
            out.flush()?;
            drop(out);
            tmp.sync_all()?;
            drop(tmp);
            // the complete new contents are durable: mark the journal ready, then copy it
            // over the mbox in place (same inode, as Dovecot rewrites)
            journal.commit()?;
            journal.replay(file, &old_meta)?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp_path);
            return Err(Error::io("write", &self.paths.file, e));
        }
        // sidecar entries of the saved messages
        for s in &pending.saves {
            meta.mails.insert(
                s.uid,
                MetaMail {
                    saved_date: s.mail.saved_date.unwrap_or_else(now),
                    guid: s.mail.guid.as_ref().map(|g| g.as_bytes().to_vec()),
                },
            );
        }
        for uid in &expunged {
            meta.mails.remove(uid);
        }
        Ok(CommitResult {
            saved,
            uid_validity,
        })
    }
}

/// What a transaction collected.
#[derive(Default)]
struct Pending {
    saves: Vec<SpooledMail>,
    updates: Vec<(Uid, FlagUpdate)>,
    expunges: Vec<Uid>,
    /// `Mailbox::update_mailbox`: the X-IMAPbase UIDVALIDITY to set (empty mailbox only).
    uid_validity: Option<u32>,
    /// `Mailbox::update_mailbox`: raise X-IMAPbase's last UID to at least this − 1.
    min_next_uid: Option<u32>,
    /// `Transaction::mark_as_sync`.
    by_sync: bool,
}

/// A message to save, already converted as Dovecot's save converts it and spooled to an
/// unlinked temporary file in the index directory.
struct SpooledMail {
    mail: NewMail,
    spool: File,
    header_len: u64,
    header_ends_with_newline: bool,
    first_line_is_from: bool,
    has_eoh: bool,
    body_start: u64,
    body_len: u64,
    uid: u32,
}

/// Spools `body`: line endings converted per the store's policy, the header's own copies of
/// Dovecot's metadata headers dropped (mbox_save_drop_headers), the header's line endings
/// made LF (HEADER_FILTER_NO_CR), and the header/body split recorded.
fn spool(dir: &Path, mode: SaveLineEndings, body: &mut dyn Read) -> io::Result<SpooledMail> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(dir)?;
    let path: PathBuf = dir.join(format!(
        ".mailsync-save.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut spool = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let _ = fs::remove_file(&path);
    let mut input = BufReader::new(LineEndingReader::new(body, mode));
    let mut out = BufWriter::new(&mut spool);
    let mut header_len = 0u64;
    let mut ends_with_newline = true;
    let mut hidden = false;
    let mut line = Vec::new();
    let mut eoh_len = 0u64;
    let mut first_line_is_from = false;
    let mut line_no = 0usize;
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if line == b"\n" || line == b"\r\n" {
            eoh_len = n as u64;
            break;
        }
        if line_no == 1 {
            first_line_is_from = writer::first_line_is_from(&line);
        } else if writer::first_line_is_from(&line) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a header line begins with 'From ': it would split the message in mbox",
            ));
        }
        let content = line.strip_suffix(b"\n").unwrap_or(&line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if let HeaderLine::Field { name, .. } = header::split(content) {
            hidden = header::is_hidden(name);
        }
        if hidden {
            continue;
        }
        out.write_all(content)?;
        let newline = line.ends_with(b"\n");
        if newline {
            out.write_all(b"\n")?;
        }
        ends_with_newline = newline;
        header_len += content.len() as u64 + u64::from(newline);
    }
    let body_len = io::copy(&mut input, &mut out)?;
    out.flush()?;
    drop(out);
    Ok(SpooledMail {
        mail: NewMail::default(),
        spool,
        header_len,
        header_ends_with_newline: ends_with_newline,
        first_line_is_from,
        has_eoh: eoh_len > 0,
        body_start: header_len,
        body_len,
        uid: 0,
    })
}

impl Mailbox for MboxMailbox {
    fn name(&self) -> &str {
        &self.name
    }

    fn sync(&mut self) -> Result<()> {
        self.sync_impl()
    }

    fn status(&mut self) -> Result<MailboxStatus> {
        let mut vsize = 0;
        let uids: Vec<u32> = self.view.messages.iter().map(|m| m.uid).collect();
        for uid in uids {
            vsize += self.virtual_size(Uid(uid))?;
        }
        let records = self.mails()?;
        Ok(MailboxStatus {
            uid_validity: if self.view.uid_validity() != 0 {
                self.view.uid_validity()
            } else {
                self.meta.uid_validity
            },
            uid_next: self.view.next_uid.max(1),
            highest_modseq: self.highest_modseq(),
            messages: records.len() as u32,
            recent: 0,
            unseen: records
                .iter()
                .filter(|r| !r.flags.contains(Flags::SEEN))
                .count() as u32,
            vsize,
            guid: self.meta.mailbox_guid,
            first_saved: records.first().map(|r| r.saved_date),
            last_guid: records.last().map(|r| r.guid.clone()),
        })
    }

    fn mails(&mut self) -> Result<Vec<MailRecord>> {
        Ok(self
            .view
            .messages
            .iter()
            .map(|m| self.record_of(m))
            .collect())
    }

    fn open_mail(&mut self, uid: Uid) -> Result<Box<dyn Read + Send>> {
        if let Some(r) = self.reader_of(uid)? {
            return Ok(Box::new(r));
        }
        self.sync_impl()?;
        match self.reader_of(uid)? {
            Some(r) => Ok(Box::new(r)),
            None => Err(Error::MailNotFound(uid)),
        }
    }

    fn virtual_size(&mut self, uid: Uid) -> Result<u64> {
        if let Some(v) = self.vsizes.get(&uid.0) {
            return Ok(*v);
        }
        let mut reader = self.open_mail(uid)?;
        let v = mailstore::virtual_size_of(&mut reader)
            .map_err(|e| Error::io("read", &self.paths.file, e))?;
        self.vsizes.insert(uid.0, v);
        Ok(v)
    }

    /// `.dovecot-box-sync.lock` in the mailbox's index directory.
    fn lock_for_sync(&mut self, timeout: std::time::Duration) -> Result<Option<SyncGuard>> {
        let dir = &self.paths.index_dir;
        fs::create_dir_all(dir).map_err(|e| Error::io("mkdir", dir, e))?;
        mailsync_index::lock::lock_mailbox_for_sync(dir, timeout)
    }

    /// From the transaction logs of Dovecot's index (modseqs of every change mailsync or
    /// Dovecot made); `Unknown` when the logs don't reach back to `since` or there is no
    /// index.
    fn changes_since(&mut self, since: ModSeq) -> Result<Changes> {
        Ok(match &self.index {
            Some(v) => v.changes_since(since),
            None => Changes::Unknown,
        })
    }

    /// From the same logs; nothing without an index.
    fn flag_changes_since(
        &mut self,
        since: ModSeq,
        uids: &[Uid],
    ) -> Result<Vec<(Uid, FlagChange)>> {
        Ok(match &self.index {
            Some(v) => v.flag_changes_since(since, uids),
            None => Vec::new(),
        })
    }

    /// As mbox_mailbox_update (mbox-storage.c): X-IMAPbase of the first message (or of the
    /// pseudo message of an empty mailbox) gets the new UIDVALIDITY / raised last UID in a
    /// locked rewrite, Dovecot's index the same values (reset for a new UIDVALIDITY), and
    /// HIGHESTMODSEQ is raised in the index as index_storage_mailbox_update does.
    /// Deviation: a UIDVALIDITY change is refused (`NotPossible`) unless the mailbox is
    /// empty, as in every mailstore backend; Dovecot keeps the messages' UIDs instead.
    fn update_mailbox(&mut self, update: &MailboxUpdate) -> Result<()> {
        if update.uid_validity == Some(0) {
            return Err(Error::Params("UIDVALIDITY can't be 0".into()));
        }
        if *update == MailboxUpdate::default() {
            return Ok(());
        }
        if update.uid_validity.is_some() || update.min_uid_next.is_some() {
            self.locked_apply(Pending {
                uid_validity: update.uid_validity,
                min_next_uid: update.min_uid_next,
                ..Pending::default()
            })?;
        }
        if let Some(min) = update.min_highest_modseq {
            if min > self.highest_modseq() {
                if self.index.is_none() {
                    // no usable index yet: the locked sync writes one
                    self.locked_apply(Pending::default())?;
                }
                let writer = mailsync_index::IndexWriter::open(
                    &self.paths.index_dir,
                    dovecot_index::INDEX_PREFIX,
                );
                mailsync_index::locked_commit::raise_highest_modseq(&writer, min)?;
                self.index = dovecot_index::read_view_for(&self.paths.index_dir, &self.view);
            }
        }
        Ok(())
    }

    /// The GUID in the sidecar and in Dovecot's index (the `mbox` extension header, where
    /// Dovecot's mbox keeps it: struct mbox_index_header, mbox-storage.h), under the mbox
    /// write lock.
    fn set_mailbox_guid(&mut self, guid: MailboxGuid) -> Result<()> {
        if guid.is_zero() {
            return Err(Error::Params("mailbox GUID can't be all zero".into()));
        }
        let _lock = lock::WriteLock::acquire(&self.paths.file)?;
        let mut meta = self.load_meta();
        meta.mailbox_guid = guid;
        meta.save(&self.paths.index_dir)?;
        dovecot_index::set_mailbox_guid(&self.paths.index_dir, guid).map_err(|e| {
            Error::io(
                "write",
                self.paths.index_dir.join("dovecot.index.log"),
                std::io::Error::other(e.to_string()),
            )
        })?;
        self.meta.mailbox_guid = guid;
        Ok(())
    }

    fn begin(&mut self) -> Result<Box<dyn Transaction + '_>> {
        Ok(Box::new(MboxTransaction {
            mailbox: self,
            pending: Pending::default(),
        }))
    }
}

/// A transaction: saves are spooled at once, everything is applied by one locked rewrite.
pub struct MboxTransaction<'a> {
    mailbox: &'a mut MboxMailbox,
    pending: Pending,
}

impl Transaction for MboxTransaction<'_> {
    fn save(&mut self, mail: NewMail, body: &mut dyn Read) -> Result<()> {
        let dir = self.mailbox.paths.index_dir.clone();
        let mut spooled = spool(&dir, self.mailbox.line_endings, body).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidInput {
                Error::Params(e.to_string())
            } else {
                Error::io("write", &dir, e)
            }
        })?;
        spooled.mail = mail;
        self.pending.saves.push(spooled);
        Ok(())
    }

    fn update_flags(&mut self, uid: Uid, update: &FlagUpdate) -> Result<()> {
        if self.mailbox.message(uid).is_none() {
            return Err(Error::MailNotFound(uid));
        }
        self.pending.updates.push((uid, update.clone()));
        Ok(())
    }

    fn expunge(&mut self, uid: Uid) -> Result<()> {
        if self.mailbox.message(uid).is_none() {
            return Err(Error::MailNotFound(uid));
        }
        self.pending.expunges.push(uid);
        Ok(())
    }

    fn mark_as_sync(&mut self) {
        self.pending.by_sync = true;
    }

    fn commit(self: Box<Self>) -> Result<CommitResult> {
        let MboxTransaction { mailbox, pending } = *self;
        mailbox.locked_apply(pending)
    }

    fn rollback(self: Box<Self>) {}
}
