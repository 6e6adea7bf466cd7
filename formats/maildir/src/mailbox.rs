//! One Maildir mailbox: scanning new/ and cur/, UID assignment through `dovecot-uidlist`,
//! flags from filenames, saving through tmp/, flag changes by rename, expunge by unlink.
//!
//! Sources (Dovecot 2.3.19.1, src/lib-storage/index/maildir/): maildir-sync.c (scan rules,
//! duplicate handling, new/ is not moved to cur/ outside an IMAP SELECT), maildir-uidlist.c
//! (locking, UID assignment order, append vs. recreate), maildir-save.c (tmp/ names, new/ vs.
//! cur/, `,S=`/`,W=`, GUID handling, mtime = received date), maildir-util.c (ENOENT retries,
//! missing subdirectories recreated), maildir-storage.c (tmp/ cleanup), maildir-mail.c
//! (sizes and dates), maildir-keywords.c.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailstore::{
    Changes, CommitResult, Error, FlagChange, FlagOp, FlagUpdate, Flags, Guid, Keyword,
    LineEndingReader, MailRecord, Mailbox, MailboxGuid, MailboxStatus, MailboxUpdate, ModSeq,
    NewMail, Pop3Info, Result, SaveLineEndings, SyncGuard, Transaction, Uid, VsizeCounter,
};
use mailsupport::dotlock::{DotLock, DotLockOptions};

use crate::filename::{self, EXTRA_FILE_SIZE, EXTRA_VIRTUAL_SIZE};
use crate::index_file::{self, IndexInfo};
use crate::index_sync::{self, Comparison, FileMail};
use crate::keywords::{KeywordMap, MAX_KEYWORDS};
use crate::layout::{Layout, LayoutKind};
use crate::uidlist::{self, UidList, UidRecord};
use crate::{uidvalidity, warn};

pub(crate) const UIDLIST_NAME: &str = "dovecot-uidlist";
pub(crate) const KEYWORDS_NAME: &str = "dovecot-keywords";
/// Files in tmp/ whose ctime is older than this are deleted (MAILDIR_TMP_DELETE_SECS).
const TMP_DELETE_SECS: u64 = 36 * 60 * 60;
/// tmp/ is scanned when its atime is older than this (mail_temp_scan_interval default).
const TEMP_SCAN_INTERVAL_SECS: u64 = 7 * 24 * 60 * 60;
/// How often a vanished file is looked for again (MAILDIR_RESYNC_RETRY_COUNT, maildir-util.c).
const RESYNC_RETRY_COUNT: usize = 10;
/// dovecot-keywords.lock stale timeout (KEYWORDS_LOCK_STALE_TIMEOUT, maildir-keywords.c).
const KEYWORDS_LOCK_STALE: Duration = Duration::from_secs(120);
/// mailsync's private uidlist record field: the saved date in UNIX seconds. Dovecot keeps
/// it in dovecot.index.cache (maildir-save.c), which we don't write yet; Dovecot preserves
/// unknown upper-case record fields (maildir_uidlist_read_extended), so it survives.
pub const SAVE_DATE_KEY: u8 = b'X';

/// The files of one mailbox.
#[derive(Clone, Debug)]
pub(crate) struct Paths {
    pub dir: PathBuf,
    pub control: PathBuf,
}

impl Paths {
    fn sub(&self, in_new: bool) -> PathBuf {
        self.dir.join(if in_new { "new" } else { "cur" })
    }
    fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }
    pub(crate) fn uidlist(&self) -> PathBuf {
        self.control.join(UIDLIST_NAME)
    }
    fn keywords(&self) -> PathBuf {
        self.control.join(KEYWORDS_NAME)
    }
}

/// A message file found in new/ or cur/.
#[derive(Clone, Debug)]
struct Found {
    in_new: bool,
    /// The system flags of the name's info ([`filename::flag_bits`]), read when the name is
    /// found: a walk over a large set later reads no name to learn them.
    flags: u8,
    /// Length of the base name within `fname` (what [`filename::base`] gives), found once:
    /// the scan's set hashes and compares bases at every lookup.
    base_len: u32,
    /// The keyword letters of the name's info as bits ([`filename::flag_bits`]).
    letter_bits: u32,
    /// Where the uidlist last given to [`mark_listed`] lists it: the index of its record,
    /// or [`NOT_LISTED`].
    record: std::cell::Cell<u32>,
    fname: Box<[u8]>,
}

/// [`Found::record`] of a file the uidlist doesn't list.
const NOT_LISTED: u32 = u32::MAX;

impl Found {
    fn new(in_new: bool, fname: Box<[u8]>) -> Found {
        let base_len = filename::base(&fname).len() as u32;
        let (flags, letter_bits) = filename::flag_bits(&fname);
        Found {
            in_new,
            flags: flags.0,
            base_len,
            letter_bits,
            record: std::cell::Cell::new(NOT_LISTED),
            fname,
        }
    }

    fn base(&self) -> &[u8] {
        &self.fname[..self.base_len as usize]
    }

    fn listed(&self) -> bool {
        self.record.get() != NOT_LISTED
    }

    /// The system flags of the name ([`filename::flags_of`]).
    fn flags(&self) -> Flags {
        Flags(self.flags)
    }

    /// The keyword letters of the name, in ASCII order.
    fn letters(&self) -> impl Iterator<Item = u8> + Clone {
        filename::letters_of_bits(self.letter_bits)
    }
}

/// A [`Found`] as an element of [`FileSet`]: hashed and compared by its base filename,
/// which is a prefix of its file name, so the set needs no copy of the name as a key.
#[derive(Clone, Debug)]
struct ByBase(Found);

impl ByBase {
    fn base(&self) -> &[u8] {
        self.0.base()
    }
}

impl PartialEq for ByBase {
    fn eq(&self, other: &ByBase) -> bool {
        self.base() == other.base()
    }
}

impl Eq for ByBase {}

impl std::hash::Hash for ByBase {
    // as `[u8]` hashes, so a lookup by `&[u8]` finds it (`Borrow`)
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.base().hash(state)
    }
}

impl std::borrow::Borrow<[u8]> for ByBase {
    fn borrow(&self) -> &[u8] {
        self.base()
    }
}

/// The message files of a scan by base filename: one per base.
#[derive(Clone, Debug, Default)]
struct FileSet {
    files: HashSet<ByBase>,
    /// How many times each keyword letter `a`..=`z` appears in the flags of the files'
    /// names, kept as files come and go: the letters in use without a walk over every
    /// name ([`FileSet::keyword_letters`]).
    letters: [u32; 26],
    /// Counts the changes of the set: marks made on its files ([`SlotStamp`]) stand for
    /// the set as it was.
    generation: u64,
}

impl FileSet {
    /// An empty set with room for `capacity` files (no growing while a scan fills it).
    fn with_capacity(capacity: usize) -> FileSet {
        FileSet {
            files: HashSet::with_capacity(capacity),
            letters: [0; 26],
            generation: 0,
        }
    }

    fn get(&self, base: &[u8]) -> Option<&Found> {
        self.files.get(base).map(|f| &f.0)
    }

    fn contains_key(&self, base: &[u8]) -> bool {
        self.files.contains(base)
    }

    fn len(&self) -> usize {
        self.files.len()
    }

    /// Puts `found` in, in place of the file with the same base if there is one.
    fn insert(&mut self, found: Found) {
        self.replace(found);
    }

    /// [`Self::insert`], returning the file it replaced.
    fn replace(&mut self, found: Found) -> Option<Found> {
        self.generation += 1;
        self.count_letters(&found, true);
        let old = self.files.replace(ByBase(found)).map(|f| f.0);
        if let Some(old) = &old {
            self.count_letters(old, false);
        }
        old
    }

    fn remove(&mut self, base: &[u8]) -> Option<Found> {
        self.generation += 1;
        let old = self.files.take(base).map(|f| f.0);
        if let Some(old) = &old {
            self.count_letters(old, false);
        }
        old
    }

    fn count_letters(&mut self, found: &Found, added: bool) {
        for c in found.letters() {
            let n = &mut self.letters[usize::from(c - b'a')];
            *n = if added { *n + 1 } else { n.saturating_sub(1) };
        }
    }

    /// The keyword letters in the flags of the files' names, each once.
    fn keyword_letters(&self) -> impl Iterator<Item = u8> + '_ {
        (b'a'..=b'z').filter(|&c| self.letters[usize::from(c - b'a')] > 0)
    }

    fn values(&self) -> impl Iterator<Item = &Found> {
        self.files.iter().map(|f| &f.0)
    }

    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.files.iter().map(ByBase::base)
    }

    fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// One readdir pass over new/ and cur/.
#[derive(Debug, Default)]
struct Scan {
    /// The files, by base.
    files: FileSet,
    /// Further files with a base already seen.
    duplicates: Vec<Found>,
    /// `new/` and `cur/` as they were when read.
    dirs: DirTimes,
}

/// When `new/` and `cur/` were read and their (mtime, nsecs) just before (maildir_scan_dir
/// stats the directory, then reads it): what the index's `maildir` header records.
#[derive(Clone, Copy, Debug, Default)]
struct DirTimes {
    /// UNIX seconds at the start of the scan.
    check_time: i64,
    /// `None` for a directory that is missing or was modified so shortly before it was read
    /// that a second change within the same clock tick would keep its mtime: the header
    /// then says "not read" for it (mtime 0), so the next open reads it again.
    new: Option<(i64, i64)>,
    cur: Option<(i64, i64)>,
}

/// From this many files on, [`MaildirMailbox::stat_mails`] opens `new/` and `cur/` once and
/// stats each name in them; fewer are stat'ed by path.
const STAT_BY_DIR_MIN: usize = 8;

/// A directory modified less than this before it was read (by this machine's clock) isn't
/// trusted to show a later change in its mtime (a file-system timestamp tick is a few
/// milliseconds) — unless the file system's own clock shows it has moved on
/// ([`fs_clock_now`]).
const RACY_MTIME: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a scan made while `new/` or `cur/` had just changed stands for the files
/// within one handle, as long as nothing visible changed since: the delayed refresh of
/// maildir-sync.c (DIR_DELAYED_REFRESH, MAILDIR_SYNC_SECS), which checks such a directory
/// again only once this much time has passed. Deviation: Dovecot skips the delay for a
/// MAILBOX_SYNC_FLAG_FULL_READ sync, which dsync asks for, and so reads a directory that
/// changed in the last second at every sync of a run. A change hidden by the timestamp
/// tick is then seen up to a second later, as if made then; across handles and runs the
/// index records such a directory as unread, so the next open reads it. Without the delay
/// every `sync()` of a run that starts just after a delivery reads the whole mailbox.
const DELAYED_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a directory last modified at (`secs`, `nsecs`) had settled by `at`: modified at
/// least [`RACY_MTIME`] before. An mtime with no nanoseconds may come from a file system
/// that keeps whole seconds, where the real change can be up to a second later.
fn mtime_settled(secs: i64, nsecs: i64, at: SystemTime) -> bool {
    let (Ok(secs), Ok(nsecs)) = (u64::try_from(secs), u32::try_from(nsecs)) else {
        return false;
    };
    let granule = if nsecs == 0 {
        std::time::Duration::from_secs(1)
    } else {
        std::time::Duration::ZERO
    };
    let latest_change = SystemTime::UNIX_EPOCH + std::time::Duration::new(secs, nsecs) + granule;
    at.duration_since(latest_change)
        .is_ok_and(|age| age >= RACY_MTIME)
}

/// The present time of the clock of the file system holding `tmp` (secs, nsecs): the
/// mtime of a file created now in `tmp` and removed at once; `None` when it can't be made
/// (a read-only mailbox). A directory on that file system changed after this gets a later
/// mtime than any time this clock had passed, so a directory last modified before the
/// answer and read after this call can't change unseen: the test of racy-git, with the
/// file system's own clock (no skew between machines, whatever its tick).
fn fs_clock_now(tmp: &Path) -> Option<(i64, i64)> {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    #[cfg(test)]
    if NO_CLOCK_PROBE.with(|n| n.get()) {
        return None;
    }
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = tmp.join(format!(".mailsync-clock.{}.{n}", std::process::id()));
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .ok()?;
    let md = f.metadata();
    drop(f);
    let _ = fs::remove_file(&probe);
    md.ok().map(|m| (m.mtime(), m.mtime_nsec()))
}

impl DirTimes {
    /// The (mtime, nsecs) of `dir` now, unless it was modified so shortly before that a
    /// change in the same timestamp tick could keep it: within [`RACY_MTIME`] by this
    /// machine's clock and not before the file system's clock's present tick. That clock
    /// ([`fs_clock_now`], a file made in `tmp`) is read at most once per scan, in `probe`:
    /// a reading taken before this `stat` serves as well. Called before `dir` is read.
    fn settled_mtime(
        dir: &Path,
        tmp: &Path,
        probe: &mut Option<Option<(i64, i64)>>,
    ) -> Option<(i64, i64)> {
        let md = fs::metadata(dir).ok()?;
        let mtime = (md.mtime(), md.mtime_nsec());
        let settled = mtime_settled(mtime.0, mtime.1, SystemTime::now())
            || probe
                .get_or_insert_with(|| fs_clock_now(tmp))
                .is_some_and(|now| now > mtime);
        settled.then_some(mtime)
    }

    /// Both `new/` and `cur/` were read settled (see [`DirTimes::settled_mtime`]).
    fn settled(&self) -> bool {
        self.new.is_some() && self.cur.is_some()
    }

    /// The index's `maildir` header for this scan and the uidlist `uidlist` (its metadata
    /// under the uidlist lock, after any write); `None` when a value doesn't fit a u32.
    fn header(&self, uidlist: &fs::Metadata) -> Option<index_file::MaildirHeader> {
        let u = |v: i64| u32::try_from(v).ok();
        let (new_mtime, new_nsecs) = self.new.unwrap_or((0, 0));
        let (cur_mtime, cur_nsecs) = self.cur.unwrap_or((0, 0));
        Some(index_file::MaildirHeader {
            new_check_time: u(self.check_time)?,
            new_mtime: u(new_mtime)?,
            new_mtime_nsecs: u(new_nsecs)?,
            cur_check_time: u(self.check_time)?,
            cur_mtime: u(cur_mtime)?,
            cur_mtime_nsecs: u(cur_nsecs)?,
            uidlist_mtime: u(uidlist.mtime())?,
            uidlist_mtime_nsecs: u(uidlist.mtime_nsec())?,
            uidlist_size: u32::try_from(uidlist.len()).ok()?,
        })
    }
}

/// What the Maildir quick check takes from the index (its header alone, or the view).
struct IndexFacts {
    uid_validity: u32,
    /// HIGHESTMODSEQ, at least 1.
    highest_modseq: u64,
    last_uid: Option<u32>,
    messages: u32,
    /// Messages at or above `first_recent_uid`.
    recent: u32,
    unseen: u32,
}

/// The on-disk state read at one moment.
struct DiskState {
    list: Option<UidList>,
    /// The uidlist file exists and ends with `\n` (so records may be appended).
    appendable: bool,
    keywords: KeywordMap,
    scan: Scan,
    /// UID → 128-bit GUID of the messages a transaction expunged, for the index's
    /// EXPUNGE_GUID records (others' expunges are logged with a zero GUID).
    expunged_guids: HashMap<u32, [u8; 16]>,
    /// What the files' [`Found::record`] marks were made for ([`mark_listed`], then kept
    /// right by [`assign_unlisted`]): while the list and the set are as they were, each
    /// listed file's mark is the index of its record, so giving UIDs needn't look every
    /// record up again ([`DiskState::listed_marks`]) and a walk over the set pairs records
    /// with files ([`DiskState::files_by_record`]).
    marks: std::cell::Cell<Option<Marks>>,
}

/// [`DiskState::marks`]: the stamp of the list and the set they were made for, and how
/// many files the list lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Marks {
    stamp: SlotStamp,
    listed: usize,
}

/// A list and a set of files as marks were made for them: the records (their UIDs and
/// base lengths, in order) and the set (its generation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlotStamp {
    records: u64,
    files: u64,
}

impl SlotStamp {
    fn of(list: &UidList, files: &FileSet) -> SlotStamp {
        let records = list.records.iter().fold(list.records.len() as u64, |h, r| {
            (h ^ (u64::from(r.uid) << 32 | r.base().len() as u64))
                .wrapping_mul(0x0000_0100_0000_01b3)
        });
        SlotStamp {
            records,
            files: files.generation,
        }
    }
}

impl DiskState {
    fn new(list: Option<UidList>, appendable: bool, keywords: KeywordMap, scan: Scan) -> Self {
        DiskState {
            list,
            appendable,
            keywords,
            scan,
            expunged_guids: HashMap::new(),
            marks: std::cell::Cell::new(None),
        }
    }

    /// Notes that every file's [`Found::record`] is right for `list` as it is now, and
    /// that it lists `listed` files.
    fn note_marks(&self, list: &UidList, listed: usize) {
        let stamp = SlotStamp::of(list, &self.scan.files);
        self.marks.set(Some(Marks { stamp, listed }));
    }

    /// How many of the scan's files `list` lists, when the files' marks were made for
    /// `list` as it is now (and for the set as it is).
    fn listed_marks(&self, list: &UidList) -> Option<usize> {
        self.marks
            .get()
            .filter(|m| m.stamp == SlotStamp::of(list, &self.scan.files))
            .map(|m| m.listed)
    }

    /// Whether the files' [`Found::record`] marks were made for `list` as it is now.
    fn slots_valid(&self, list: &UidList) -> bool {
        self.listed_marks(list).is_some()
    }

    /// The file of each record of `list` (`None`: no file), by index: from the files'
    /// marks when they were made for `list` (one walk over the set, no name looked up),
    /// else by looking each base up.
    fn files_by_record(&self, list: &UidList) -> Vec<Option<&Found>> {
        let mut out = vec![None; list.records.len()];
        if self.slots_valid(list) {
            #[cfg(test)]
            SLOT_WALKS.with(|w| w.set(w.get() + 1));
            for f in self.scan.files.values() {
                if let Some(slot) = out.get_mut(f.record.get() as usize) {
                    *slot = Some(f);
                }
            }
            debug_assert!(out
                .iter()
                .zip(&list.records)
                .all(|(f, r)| f.is_none_or(|f| f.base() == r.base())));
        } else {
            for (slot, rec) in out.iter_mut().zip(&list.records) {
                *slot = self.scan.files.get(rec.base());
            }
        }
        out
    }

    /// Marks the files `list` lists and keeps the count for [`Self::listed_marks`].
    fn mark_listed(&self, list: &UidList) -> usize {
        let listed = mark_listed(list, &self.scan);
        self.note_marks(list, listed);
        listed
    }
}

/// What follows a message's base name in its file name (`:2,` and the flag letters in
/// cur/, usually nothing in new/). A view keeps only this, since the base is its uidlist
/// record's; short ones (nearly all) inline.
#[derive(Clone, Debug)]
enum NameSuffix {
    Inline { len: u8, bytes: [u8; INLINE_SUFFIX] },
    Heap(Box<[u8]>),
}

const INLINE_SUFFIX: usize = 22;

impl NameSuffix {
    fn new(suffix: &[u8]) -> NameSuffix {
        if suffix.len() <= INLINE_SUFFIX {
            let mut bytes = [0; INLINE_SUFFIX];
            bytes[..suffix.len()].copy_from_slice(suffix);
            NameSuffix::Inline {
                len: suffix.len() as u8,
                bytes,
            }
        } else {
            NameSuffix::Heap(suffix.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            NameSuffix::Inline { len, bytes } => &bytes[..usize::from(*len)],
            NameSuffix::Heap(b) => b,
        }
    }

    /// The suffix of a found file's name after its base name.
    fn of(found: &Found) -> NameSuffix {
        NameSuffix::new(&found.fname[found.base().len()..])
    }
}

/// A message in the current view.
#[derive(Clone, Debug)]
struct MailFile {
    uid: u32,
    /// The file is in new/ (else cur/); its name is the record's base name and `suffix`.
    in_new: bool,
    suffix: NameSuffix,
    record: UidRecord,
    flags: Flags,
    keywords: Box<[Keyword]>,
    physical_size: u64,
    virtual_size: Option<u64>,
    /// (mtime = received date, ctime) from stat(), taken only when a caller needs the
    /// dates ([`MaildirMailbox::stat_view`]): counters and saves need none, so most views
    /// hold none and the box keeps the other messages 16 bytes smaller.
    times: Option<Box<(i64, i64)>>,
}

impl MailFile {
    fn fname(&self) -> Vec<u8> {
        [self.record.base(), self.suffix.as_bytes()].concat()
    }

    fn found(&self) -> Found {
        Found::new(self.in_new, self.fname().into())
    }

    /// The file was found again under `f` (renamed since): same base name.
    fn set_found(&mut self, f: &Found) {
        self.in_new = f.in_new;
        self.suffix = NameSuffix::of(f);
    }
}

#[derive(Clone, Debug, Default)]
struct View {
    uid_validity: u32,
    uid_next: u32,
    guid: MailboxGuid,
    mails: Vec<MailFile>,
}

fn is_readonly_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    )
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn os(bytes: &[u8]) -> &std::ffi::OsStr {
    std::ffi::OsStr::from_bytes(bytes)
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads new/ and cur/ (new/ first, as maildir_sync does). Files starting with `.` are
/// skipped; names starting with `:` (empty base) or holding CR/LF are skipped with a warning
/// (Dovecot renames the first and ignores the second); directories are skipped.
fn scan_dirs(paths: &Paths) -> Result<Scan> {
    scan_dirs_sized(paths, 0)
}

/// Bytes of directory entries one `getdents64` may return ([`read_dirs`]): about 1,000
/// Maildir names. Also about the bytes of names a [`NameBatch`] holds.
const READDIR_BUFFER: usize = 64 * 1024;

/// [`scan_dirs`] expecting about `expected` files: the set is made that big at once, so
/// a large mailbox's files are not hashed again each time it grows.
fn scan_dirs_sized(paths: &Paths, expected: usize) -> Result<Scan> {
    let mut scan = Scan::with_capacity(expected);
    scan.dirs = read_dirs(paths, |in_new, name| scan.add(in_new, name))?;
    Ok(scan)
}

impl Scan {
    /// An empty scan with room for `expected` files in its set.
    fn with_capacity(expected: usize) -> Scan {
        Scan {
            files: FileSet::with_capacity(expected),
            ..Scan::default()
        }
    }

    /// A file as [`read_dirs`] hands it on: one per base (the first found stays, but a file
    /// seen in `new/` and then in `cur/` was moved while the directories were read: the one
    /// in `cur/`), further ones with a base already seen go to the duplicates.
    fn add(&mut self, in_new: bool, name: &[u8]) {
        #[cfg(test)]
        FILES_ADDED.with(|n| n.set(n.get() + 1));
        let found = Found::new(in_new, name.into());
        // one lookup for the usual case, a new base
        match self.files.replace(found) {
            None => {}
            // Seen in new/ and now in cur/: moved while we were scanning.
            Some(prev) if prev.in_new && !in_new => {}
            // the first one found stays
            Some(prev) => {
                if let Some(dup) = self.files.replace(prev) {
                    self.duplicates.push(dup);
                }
            }
        }
    }
}

/// Reads `new/` and then `cur/` with `getdents64` into one buffer and hands each message
/// file's name to `on_file` (with whether it is in `new/`) as the kernel returned it;
/// returns when and how the directories were read. What [`scan_dirs`] skips is skipped
/// here, with its warnings.
fn read_dirs(paths: &Paths, mut on_file: impl FnMut(bool, &[u8])) -> Result<DirTimes> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};
    let mut dirs = DirTimes {
        check_time: unix_secs(SystemTime::now()),
        ..DirTimes::default()
    };
    let mut probe = None;
    let mut buf = Vec::with_capacity(READDIR_BUFFER);
    for in_new in [true, false] {
        let dir = paths.sub(in_new);
        let mtime = DirTimes::settled_mtime(&dir, &paths.tmp(), &mut probe);
        if in_new {
            dirs.new = mtime;
        } else {
            dirs.cur = mtime;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(&dir, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(Error::io("opendir", &dir, e.into())),
        };
        let mut entries = RawDir::new(&fd, buf.spare_capacity_mut());
        while let Some(entry) = entries.next() {
            let entry = entry.map_err(|e| Error::io("readdir", &dir, e.into()))?;
            let name = entry.file_name().to_bytes();
            if name.first() == Some(&b'.') {
                continue;
            }
            let path = || dir.join(os(name));
            if name.first() == Some(&filename::INFO_SEP) {
                warn(&format!(
                    "ignoring a file with an empty base name: {}",
                    path().display()
                ));
                continue;
            }
            if memchr::memchr2(b'\r', b'\n', name).is_some() {
                warn(&format!(
                    "ignoring a file with CR/LF in its name: {}",
                    path().display()
                ));
                continue;
            }
            let is_dir = match entry.file_type() {
                FileType::Directory => true,
                // a file system that doesn't say: lstat, as std's DirEntry::file_type
                FileType::Unknown => {
                    rustix::fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
                }
                _ => false,
            };
            if is_dir {
                warn(&format!(
                    "ignoring an unexpected directory: {}",
                    path().display()
                ));
                continue;
            }
            on_file(in_new, name);
        }
    }
    Ok(dirs)
}

/// Names of message files of one directory, as a scanning thread hands them to the thread
/// that builds the set ([`read_disk`]): one buffer for about [`READDIR_BUFFER`] bytes of
/// names instead of an allocation per name in the scanning thread.
struct NameBatch {
    in_new: bool,
    names: Vec<u8>,
    /// Where each name ends in `names`.
    ends: Vec<usize>,
}

impl NameBatch {
    fn new(in_new: bool) -> NameBatch {
        NameBatch {
            in_new,
            names: Vec::with_capacity(READDIR_BUFFER),
            ends: Vec::new(),
        }
    }

    /// Room left for `name` (a batch holds at least one name, however long).
    fn fits(&self, in_new: bool, name: &[u8]) -> bool {
        self.in_new == in_new
            && (self.ends.is_empty() || self.names.len() + name.len() <= READDIR_BUFFER)
    }

    fn push(&mut self, name: &[u8]) {
        self.names.extend_from_slice(name);
        self.ends.push(self.names.len());
    }

    fn names(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, &b)| &self.names[a..b])
    }
}

/// The base filenames of the message files in new/ and cur/ (one per base; for
/// force-resync, `crate::resync`).
pub(crate) fn scanned_bases(paths: &Paths) -> Result<Vec<Vec<u8>>> {
    Ok(scan_dirs(paths)?.files.keys().map(<[u8]>::to_vec).collect())
}

/// Looks for the file with `base` again (it was renamed or expunged since the view was
/// taken), retrying as maildir_file_do does.
fn find_file(paths: &Paths, base: &[u8]) -> Result<Option<Found>> {
    for _ in 0..RESYNC_RETRY_COUNT {
        let scan = scan_dirs(paths)?;
        match scan.files.get(base) {
            Some(f) if paths.sub(f.in_new).join(os(&f.fname)).exists() => {
                return Ok(Some(f.clone()))
            }
            Some(_) => continue,
            None => return Ok(None),
        }
    }
    Ok(None)
}

#[cfg(test)]
thread_local! {
    /// How many times this thread read a mailbox's files (`read_disk`), for tests.
    static READINGS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// How many times this thread compared a mailbox's files with an index, for tests.
    static COMPARISONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// How many times this thread marked the files a uidlist lists, for tests.
    static MARKINGS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// How many times this thread paired records with files by their marks, for tests.
    static SLOT_WALKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// How many files this thread put in a scan's set ([`Scan::add`]), for tests.
    static FILES_ADDED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// How many readings of this thread read the directories in a second thread, for tests.
    static CONCURRENT_SCANS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Tests of a racy reading: [`fs_clock_now`] has no answer, as within one tick.
    static NO_CLOCK_PROBE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// From this uidlist size on (about 2,000 messages), a reading under the uidlist lock reads
/// `new/` and `cur/` in a second thread while it parses the uidlist ([`read_disk`]): the
/// two take about as long, and the peer's brain is usually waiting meanwhile. Below it a
/// thread costs more than it saves.
const CONCURRENT_SCAN_MIN_UIDLIST: u64 = 64 * 1024;

/// Bytes of a uidlist line, about (`12345 :1700000000.M123P4567.host,S=4567`): the
/// uidlist's size over this is how many files a scan expects.
const UIDLIST_LINE_GUESS: u64 = 40;

/// Reads the uidlist, the keywords file and `new/` + `cur/`. `locked`: the caller holds the
/// uidlist lock, so the uidlist can't change while the directories are read, and a large
/// one is parsed while a second thread reads them ([`CONCURRENT_SCAN_MIN_UIDLIST`]).
/// Without the lock the uidlist is read first and the directories after it, as
/// maildir_sync does: a file delivered in between is then unlisted (a new message), never
/// a listed one missing from the scan (an expunge).
fn read_disk(paths: &Paths, locked: bool) -> Result<DiskState> {
    #[cfg(test)]
    READINGS.with(|r| r.set(r.get() + 1));
    let path = paths.uidlist();
    let uidlist = match File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let size = match &uidlist {
        Some(f) => f
            .metadata()
            .map_err(|e| Error::io("fstat", &path, e))?
            .len(),
        None => 0,
    };
    // about one file per line of the uidlist
    let expected = usize::try_from(size / UIDLIST_LINE_GUESS).unwrap_or(0);
    if !(locked && size >= CONCURRENT_SCAN_MIN_UIDLIST) {
        let (list, appendable) = read_uidlist(&path, uidlist, size)?;
        let keywords = read_keywords(paths)?;
        let scan = scan_dirs_sized(paths, expected)?;
        return Ok(DiskState::new(list, appendable, keywords, scan));
    }
    #[cfg(test)]
    let no_clock_probe = NO_CLOCK_PROBE.with(|n| n.get());
    // The second thread only reads the directories and passes the names on in batches;
    // this one builds the set from them once it has parsed the uidlist, while the kernel is
    // still reading the rest (the allocations then come from this thread's warm heap, not
    // a new thread's growing one).
    std::thread::scope(|s| {
        let (batches, received) = std::sync::mpsc::channel::<NameBatch>();
        let scanner = std::thread::Builder::new()
            .name("maildir-scan".into())
            .spawn_scoped(s, move || {
                #[cfg(test)]
                NO_CLOCK_PROBE.with(|n| n.set(no_clock_probe));
                let mut batch = NameBatch::new(true);
                let dirs = read_dirs(paths, |in_new, name| {
                    if !batch.fits(in_new, name) {
                        let full = std::mem::replace(&mut batch, NameBatch::new(in_new));
                        // the receiver lives until this thread is joined
                        let _ = batches.send(full);
                    }
                    batch.push(name);
                });
                let _ = batches.send(batch);
                dirs
            });
        let read = read_uidlist(&path, uidlist, size)
            .and_then(|(list, appendable)| Ok((list, appendable, read_keywords(paths)?)));
        #[cfg(test)]
        if scanner.is_ok() {
            CONCURRENT_SCANS.with(|c| c.set(c.get() + 1));
        }
        let scan = match scanner {
            Ok(handle) => {
                let mut scan = Scan::with_capacity(expected);
                // ends when the scanning thread is done (its sender dropped)
                for batch in received.iter() {
                    for name in batch.names() {
                        scan.add(batch.in_new, name);
                    }
                }
                match handle.join() {
                    Ok(dirs) => dirs.map(|dirs| Scan { dirs, ..scan }),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            // no thread to be had: read them here
            Err(_) => scan_dirs_sized(paths, expected),
        };
        let (list, appendable, keywords) = read?;
        Ok(DiskState::new(list, appendable, keywords, scan?))
    })
}

/// The uidlist from its open file (`size` bytes by fstat), with whether it ends with a
/// newline (records may be appended); `None` when there is none or it holds no header.
fn read_uidlist(path: &Path, file: Option<File>, size: u64) -> Result<(Option<UidList>, bool)> {
    let Some(mut file) = file else {
        return Ok((None, false));
    };
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    file.read_to_end(&mut data)
        .map_err(|e| Error::io("read", path, e))?;
    match uidlist::parse(&data) {
        Ok(Some((list, warnings))) => {
            for w in warnings {
                warn(&format!(
                    "{}: line {}: {}",
                    path.display(),
                    w.line,
                    w.message
                ));
            }
            Ok((Some(list), data.ends_with(b"\n")))
        }
        Ok(None) => Ok((None, false)),
        Err(e) => Err(Error::corrupted(
            path,
            format!("Broken file: line {}: {}", e.line, e.reason),
        )),
    }
}

fn read_keywords(paths: &Paths) -> Result<KeywordMap> {
    let kw_path = paths.keywords();
    match fs::read(&kw_path) {
        Ok(data) => Ok(KeywordMap::parse(&data)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(KeywordMap::default()),
        Err(e) => Err(Error::io("open", &kw_path, e)),
    }
}

/// Marks the files of the scan that `list` lists ([`Found::listed`]) and returns how many
/// there are (the bases of both are unique): one lookup a record, no set of the records.
fn mark_listed(list: &UidList, scan: &Scan) -> usize {
    #[cfg(test)]
    MARKINGS.with(|m| m.set(m.get() + 1));
    for f in scan.files.values() {
        f.record.set(NOT_LISTED);
    }
    let mut listed = 0;
    for (i, r) in list.records.iter().enumerate() {
        if let Some(f) = scan.files.get(r.base()) {
            f.record.set(i as u32);
            listed += 1;
        }
    }
    listed
}

/// True when the uidlist lists every file of the scan.
#[cfg(test)]
fn every_file_listed(list: &UidList, scan: &Scan) -> bool {
    mark_listed(list, scan) == scan.files.len()
}

/// Gives UIDs to files the uidlist doesn't list, sorted as maildir_filename_sort_cmp
/// (maildir_uidlist_assign_uids). Returns how many were added. `listed`: the files are
/// already marked for `list` and this many are listed ([`DiskState::listed_marks`]); else
/// they are marked here.
fn assign_unlisted(
    list: &mut UidList,
    scan: &Scan,
    path: &Path,
    listed: Option<usize>,
) -> Result<usize> {
    let listed = match listed {
        Some(n) => n,
        None => mark_listed(list, scan),
    };
    if listed == scan.files.len() {
        return Ok(0);
    }
    let mut new: Vec<&Found> = scan.files.values().filter(|f| !f.listed()).collect();
    new.sort_by(|a, b| filename::sort_cmp(a.base(), b.base()));
    let count = new.len();
    for found in new {
        let uid = take_uid(list, None, path)?;
        // the marks stay those of the list, which now lists this file too
        found.record.set(list.records.len() as u32);
        list.records
            .push(UidRecord::new(uid, found.base().to_vec()));
    }
    Ok(count)
}

/// The UID for a new record: `wanted` when it is at or above NEXTUID, else NEXTUID.
/// True when the two files hold the same bytes (false on any read error).
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (Ok(fa), Ok(fb)) = (File::open(a), File::open(b)) else {
        return false;
    };
    match (fa.metadata(), fb.metadata()) {
        (Ok(ma), Ok(mb)) if ma.len() == mb.len() => {}
        _ => return false,
    }
    let (mut ra, mut rb) = (io::BufReader::new(fa), io::BufReader::new(fb));
    let (mut ba, mut bb) = ([0u8; 8192], [0u8; 8192]);
    loop {
        let n = match ra.read(&mut ba) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 {
            return true;
        }
        if rb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

fn take_uid(list: &mut UidList, wanted: Option<u32>, path: &Path) -> Result<u32> {
    let uid = match wanted {
        Some(w) if w >= list.next_uid => w,
        _ => list.next_uid,
    };
    if uid == 0 || uid == u32::MAX {
        return Err(Error::NotPossible(format!(
            "{}: UID space exhausted (next UID {uid})",
            path.display()
        )));
    }
    list.next_uid = uid + 1;
    Ok(uid)
}

fn dir_mode(path: &Path) -> u32 {
    fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o700)
        | 0o700
}

/// Creates a directory (mode taken from `like`), treating "already exists" as success.
pub(crate) fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn mkdir_all(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .recursive(true)
        .create(path)
}

/// Takes the `dovecot-uidlist.lock` dotlock (Dovecot's timeouts), creating the control
/// directory when it is missing.
pub(crate) fn lock_uidlist(paths: &Paths) -> Result<DotLock> {
    let target = paths.uidlist();
    let opts = DotLockOptions {
        mode: file_mode(&paths.dir),
        ..DotLockOptions::maildir_uidlist()
    };
    match DotLock::acquire(&target, &opts) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            mkdir_all(&paths.control, dir_mode(&paths.dir))
                .map_err(|e| Error::io("mkdir", &paths.control, e))?;
            DotLock::acquire(&target, &opts).map_err(|e| lock_error(&target, e))
        }
        Err(e) => Err(lock_error(&target, e)),
    }
}

fn lock_error(target: &Path, e: io::Error) -> Error {
    let mut lock = target.as_os_str().to_owned();
    lock.push(".lock");
    if e.kind() == io::ErrorKind::TimedOut {
        Error::LockTimeout {
            path: PathBuf::from(lock),
        }
    } else {
        Error::io("file_dotlock_create", PathBuf::from(lock), e)
    }
}

/// Mode for new files: the mailbox directory's mode without x bits (Dovecot's
/// file_create_mode follows the directory), at least 0600.
pub(crate) fn file_mode(dir: &Path) -> u32 {
    (fs::metadata(dir)
        .map(|m| m.permissions().mode() & 0o666)
        .unwrap_or(0o600))
        | 0o600
}

fn fsync_dir(dir: &Path) -> Result<()> {
    mailsupport::atomic::fsync_dir(dir).map_err(|e| Error::io("fsync", dir, e))
}

/// Writes the uidlist: appends records `[first_new..]` in place when that is what Dovecot
/// would do, else rewrites it as `dovecot-uidlist.tmp` + rename (maildir_uidlist_recreate),
/// dropping records whose files are gone. Must be called with the uidlist locked.
/// `live_count`: how many records have a file in `live`, when the caller knows (else it is
/// counted, and only if an append is possible at all).
fn write_uidlist(
    paths: &Paths,
    list: &mut UidList,
    state_appendable: bool,
    first_new: usize,
    recreate: bool,
    live: &FileSet,
    live_count: Option<usize>,
) -> Result<()> {
    let path = paths.uidlist();
    let new_count = list.records.len() - first_new;
    let may_append = !recreate && state_appendable && list.version == 3 && list.guid.is_some();
    // maildir_uidlist_want_compress: rewrite when at most 75% of the lines are still live.
    let compress = may_append && list.lines_read > 0 && {
        let live_count = live_count.unwrap_or_else(|| {
            list.records
                .iter()
                .filter(|r| live.contains_key(r.base()))
                .count()
        });
        (list.lines_read + new_count) * 75 / 100 >= live_count
    };
    if may_append && !compress {
        if new_count == 0 {
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let mut out = io::BufWriter::with_capacity(64 * 1024, &mut f);
        list.records[first_new..]
            .iter()
            .try_for_each(|rec| uidlist::write_record(&mut out, rec))
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("write", &path, e))?;
        drop(out);
        f.sync_data().map_err(|e| Error::io("write", &path, e))?;
        list.lines_read += new_count;
        return Ok(());
    }
    // Records of files that are gone are dropped only if a second scan agrees, so a file
    // being renamed by someone else at the moment of the first scan keeps its UID.
    if list.records.iter().any(|r| !live.contains_key(r.base())) {
        let again = scan_dirs(paths)?;
        list.records
            .retain(|r| live.contains_key(r.base()) || again.files.contains_key(r.base()));
    }
    list.version = 3;
    if list.guid.is_none() {
        list.guid = Some(MailboxGuid::generate());
    }
    replace_uidlist(paths, list, file_mode(&paths.dir))?;
    list.lines_read = list.records.len();
    Ok(())
}

/// Replaces the uidlist with `list`: writes `dovecot-uidlist.tmp` (created with `mode`,
/// before umask), syncs it, renames it over the uidlist and syncs the control directory
/// (maildir_uidlist_recreate). Must be called with the uidlist locked.
pub(crate) fn replace_uidlist(paths: &Paths, list: &UidList, mode: u32) -> Result<()> {
    let path = paths.uidlist();
    let tmp = paths.control.join(format!("{UIDLIST_NAME}.tmp"));
    let result = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // a record at a time: the file is not built in memory
        let mut out = io::BufWriter::with_capacity(64 * 1024, &mut f);
        uidlist::write_list(&mut out, list)?;
        out.flush()?;
        drop(out);
        f.sync_data()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", &path, e));
    }
    fsync_dir(&paths.control)
}

/// Writes dovecot-keywords through its dotlock (maildir_keywords_commit): the new contents go
/// into `dovecot-keywords.lock`, its mtime is made newer than the old file's, then it is
/// renamed over the file. A leftover lock is removed first: the uidlist lock we hold is what
/// protects the keywords file.
fn write_keywords(paths: &Paths, map: &KeywordMap) -> Result<()> {
    let target = paths.keywords();
    let mut lock_path = target.as_os_str().to_owned();
    lock_path.push(".lock");
    let _ = fs::remove_file(&lock_path);
    let old_mtime = fs::metadata(&target).and_then(|m| m.modified()).ok();
    let opts = DotLockOptions {
        timeout: Duration::from_secs(0),
        stale_timeout: KEYWORDS_LOCK_STALE,
        lock_suffix: ".lock",
        use_excl_lock: true,
        write_pid: false,
        mode: file_mode(&paths.dir),
    };
    let mut lock = DotLock::acquire(&target, &opts).map_err(|e| lock_error(&target, e))?;
    let data = map.serialize();
    let result = (|| -> io::Result<()> {
        let f = lock.file();
        f.set_len(0)?;
        f.rewind()?;
        f.write_all(&data)?;
        if let Some(old) = old_mtime {
            let now = f.metadata()?.modified()?;
            if now <= old {
                f.set_times(FileTimes::new().set_modified(old + Duration::from_secs(1)))?;
            }
        }
        f.sync_all()
    })();
    match result {
        Ok(()) => lock.replace().map_err(|e| Error::io("rename", &target, e)),
        Err(e) => {
            let _ = lock.release();
            Err(Error::io("write", PathBuf::from(lock_path), e))
        }
    }
}

/// Deletes stale files from tmp/ as maildir_check_tmp + unlink_old_files do: only when the
/// directory's atime is older than the scan interval (and not when atime > ctime + 36 h,
/// meaning it was already found empty), then every non-directory whose ctime is older than
/// 36 h goes, and the directory's times are set to `now`.
pub(crate) fn clean_tmp(tmp: &Path, now: SystemTime) {
    let Ok(md) = fs::metadata(tmp) else {
        return;
    };
    let now_secs = unix_secs(now);
    if md.atime() > md.ctime() + TMP_DELETE_SECS as i64 {
        return;
    }
    if md.atime() >= now_secs - TEMP_SCAN_INTERVAL_SECS as i64 {
        return;
    }
    let Ok(rd) = fs::read_dir(tmp) else {
        return;
    };
    let limit = now_secs - TMP_DELETE_SECS as i64;
    let entries: Vec<fs::DirEntry> = rd.flatten().collect();
    // unlink_old_files marks the scan with utime(dir, NULL) (done after reading here, so a
    // relatime mount doesn't move the atime again).
    if let Ok(dir) = File::open(tmp) {
        let _ = dir.set_times(FileTimes::new().set_accessed(now).set_modified(now));
    }
    for entry in entries {
        let path = entry.path();
        if let Ok(m) = fs::metadata(&path) {
            if !m.is_dir() && m.ctime() < limit {
                if let Err(e) = fs::remove_file(&path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        warn(&format!("unlink({}) failed: {e}", path.display()));
                    }
                }
            }
        }
    }
}

/// The files' side of a comparison with the index: each listed message with a file, as
/// its filename shows it, and the keyword letters.
struct FilesSide {
    files: Vec<FileMail>,
    keywords: KeywordMap,
    uid_validity: u32,
    next_uid: u32,
}

impl FilesSide {
    /// `recent` are the UIDs given in this sync or commit (new to the uidlist, so \Recent as
    /// in maildir_uidlist_sync_next); files in new/ are \Recent too.
    fn of(st: &DiskState, list: &UidList, recent: &HashSet<u32>) -> FilesSide {
        let mut keywords = st.keywords.clone();
        for c in st.scan.files.keyword_letters() {
            keywords.claim_letter(c);
        }
        let mut files = Vec::with_capacity(list.records.len());
        let by_record = st.files_by_record(list);
        files.extend(
            list.records
                .iter()
                .zip(by_record)
                .filter_map(|(rec, found)| {
                    let found = found?;
                    Some(FileMail {
                        uid: rec.uid,
                        flags: found.flags & index_sync::REAL_FLAGS,
                        keywords: found
                            .letters()
                            .filter_map(|l| keywords.keyword_for_letter(l))
                            .collect(),
                        recent: found.in_new || recent.contains(&rec.uid),
                    })
                }),
        );
        FilesSide {
            files,
            keywords,
            uid_validity: list.uid_validity,
            next_uid: list.next_uid,
        }
    }

    /// A keyword that has a letter or can still get one (maildir_keywords_idx_char); the
    /// others can live in the index only.
    fn storable(&self, k: &Keyword) -> bool {
        self.keywords.letter_for(k.as_bytes()).is_some() || self.keywords.len() < MAX_KEYWORDS
    }

    fn compare(&self, side: &index_sync::IndexSide, non_recent: &HashSet<u32>) -> Comparison {
        #[cfg(test)]
        COMPARISONS.with(|c| c.set(c.get() + 1));
        index_sync::compare(
            side,
            self.uid_validity,
            self.next_uid,
            &self.files,
            non_recent,
            &|k| self.storable(k),
        )
    }

    /// What Dovecot's in-memory index would show after its sync.
    fn simulate(
        &self,
        base: Option<&mailsync_index::View>,
        non_recent: &HashSet<u32>,
    ) -> IndexInfo {
        let side = index_file::index_side(base);
        IndexInfo::simulated(base, &self.compare(&side, non_recent).changes)
    }
}

/// An open Maildir mailbox.
pub struct MaildirMailbox {
    name: String,
    kind: LayoutKind,
    is_inbox: bool,
    control_root: PathBuf,
    paths: Paths,
    view: View,
    /// Virtual sizes computed by reading files (no `,W=` and no uidlist `W`).
    vsize_cache: HashMap<u32, u64>,
    tmp_checked: bool,
    line_endings: SaveLineEndings,
    /// Where `dovecot.index*` live; `None` for INDEX=MEMORY.
    index_dir: Option<PathBuf>,
    /// Modseqs and \Recent as of the last sync (FORMAT.md §6).
    index: IndexInfo,
    /// What the files looked like before the scan the view comes from, when nothing can
    /// have changed unseen since ([`DiskStamp`]); with the time it stands until when the
    /// scan was made while a directory had just changed ([`DELAYED_REFRESH`]).
    stamp: Option<(DiskStamp, Option<std::time::Instant>)>,
    /// Opened by the quick check ([`MaildirMailbox::quick_counters`]): the counters, with
    /// `view` not read yet, and the files as they were before the check (a sync finding
    /// them unchanged keeps the answer). Everything but the counters and the index's
    /// history reads the mailbox first ([`MaildirMailbox::load`]).
    quick: Option<(MailboxStatus, DiskStamp)>,
    /// The index a quick check read without being able to answer, with the files as they
    /// were before it was read: the full sync that follows uses it when `P` and `P.log`
    /// are still as they were then, instead of reading the index again.
    prefetched: Option<(mailsync_index::View, DiskStamp)>,
    /// `view` was dropped by a sync or a commit, to be rebuilt from what they read (the two
    /// are never held at once), and they failed before it was: the next access reads the
    /// mailbox again ([`MaildirMailbox::load`]).
    view_lost: bool,
    /// This handle changed `dovecot.index*`: when it is dropped, the log's tail is settled and
    /// the index file brought up to date unless the next run can answer from its header and
    /// a short replay of the log past it (`IndexWriter::close_synced`).
    index_written: std::cell::Cell<bool>,
}

impl Drop for MaildirMailbox {
    fn drop(&mut self) {
        let Some(dir) = self
            .index_dir
            .as_deref()
            .filter(|_| self.index_written.get())
        else {
            return;
        };
        let writer = mailsync_index::IndexWriter::open(dir, index_file::INDEX_PREFIX);
        if let Err(e) = writer.close_synced() {
            warn(&format!(
                "{}: writing the index at close failed: {e}",
                writer.paths().index().display()
            ));
        }
    }
}

/// The quick check of maildir-sync.c (maildir_sync_quick_check), within one process: the
/// (inode, size, mtime) of `new/`, `cur/`, `dovecot-uidlist`, `dovecot-keywords` and the
/// index files. Any delivery, flag change (rename), expunge, UID assignment or index
/// change by anyone alters at least one of them, so an equal stamp means the last scan
/// still holds — unless a directory changed so shortly before that scan that a change in
/// the same clock tick could leave its mtime as it was ([`DirTimes::settled_mtime`];
/// Dovecot's "dirty" rule, at the nanosecond mtimes Linux file systems keep): then the
/// next sync scans again.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DiskStamp(Vec<Option<(u64, u64, i64, i64)>>);

impl DiskStamp {
    fn take(paths: &Paths, index_dir: Option<&Path>) -> DiskStamp {
        let mut files = vec![
            paths.sub(true),
            paths.sub(false),
            paths.uidlist(),
            paths.keywords(),
        ];
        if let Some(dir) = index_dir {
            files.push(dir.join(index_file::INDEX_PREFIX));
            files.push(dir.join(format!("{}.log", index_file::INDEX_PREFIX)));
        }
        DiskStamp(
            files
                .iter()
                .map(|p| {
                    fs::metadata(p)
                        .ok()
                        .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
                })
                .collect(),
        )
    }

    /// True when `new/` and `cur/` are as in `other`.
    fn same_dirs(&self, other: &DiskStamp) -> bool {
        self.0[..2] == other.0[..2]
    }

    /// True when the index files (`P`, `P.log`) are as in `other`.
    fn same_index(&self, other: &DiskStamp) -> bool {
        self.0[4..] == other.0[4..]
    }
}

/// The mailbox's index as read under the uidlist lock, before a change.
enum IndexBase {
    /// INDEX=MEMORY, or the index can't be used: Dovecot's answers are simulated.
    InMemory(Option<mailsync_index::View>),
    /// The index directory (the view is `None` when there is no index yet).
    OnDisk(PathBuf, Option<mailsync_index::View>),
}

impl IndexBase {
    fn view(&self) -> Option<&mailsync_index::View> {
        match self {
            IndexBase::InMemory(v) | IndexBase::OnDisk(_, v) => v.as_ref(),
        }
    }
}

impl MaildirMailbox {
    pub(crate) fn open(layout: &Layout, vname: &str) -> Result<MaildirMailbox> {
        let mut mb = MaildirMailbox {
            name: vname.to_string(),
            kind: layout.kind,
            is_inbox: Layout::is_inbox(vname),
            control_root: layout.control_root().to_path_buf(),
            paths: Paths {
                dir: layout.mailbox_dir(vname),
                control: layout.control_dir(vname),
            },
            view: View::default(),
            vsize_cache: HashMap::new(),
            tmp_checked: false,
            line_endings: layout.line_endings,
            index_dir: layout.index_dir(vname),
            index: IndexInfo::default(),
            stamp: None,
            quick: None,
            prefetched: None,
            view_lost: false,
            index_written: std::cell::Cell::new(false),
        };
        mb.sync_quick_or_full()?;
        Ok(mb)
    }

    /// The quick check (for a handle whose view isn't read yet), else the full sync.
    fn sync_quick_or_full(&mut self) -> Result<()> {
        let before = DiskStamp::take(&self.paths, self.index_dir.as_deref());
        if let Some(counters) = self.quick_counters(&before)? {
            self.quick = Some((counters, before));
            return Ok(());
        }
        self.sync_impl()
    }

    /// Reads the mailbox when it was opened by the quick check.
    fn load(&mut self) -> Result<()> {
        if self.quick.is_some() || self.view_lost {
            self.sync_impl()?;
        }
        Ok(())
    }

    /// Dovecot's quick check across processes (maildir_sync_quick_check, maildir-sync.c, and
    /// maildir_uidlist_refresh_fast_init, maildir-uidlist.c): when the index's `maildir`
    /// header says `new/`, `cur/` and `dovecot-uidlist` are exactly as the index last read
    /// them and the index holds no change still waiting for the files, the index is the
    /// mailbox. The counters then come from it and from the uidlist's first line and the
    /// last message's line, without reading the directories. `None`: a full sync is needed
    /// (no index, no header, anything changed, a pending change, an old uidlist format).
    fn quick_counters(&mut self, before: &DiskStamp) -> Result<Option<MailboxStatus>> {
        let Some(dir) = self.index_dir.clone() else {
            return Ok(None);
        };
        let mtime = |p: &Path| {
            fs::metadata(p)
                .ok()
                .map(|m| (m.mtime(), m.mtime_nsec(), m.len()))
        };
        let (Some(new), Some(cur), Some(uidlist)) = (
            mtime(&self.paths.sub(true)),
            mtime(&self.paths.sub(false)),
            mtime(&self.paths.uidlist()),
        ) else {
            return Ok(None);
        };
        let still_valid = |hdr: Option<index_file::MaildirHeader>| {
            hdr.is_some_and(|hdr| {
                index_file::header_still_valid(
                    &hdr,
                    unix_secs(SystemTime::now()),
                    (new.0, new.1),
                    (cur.0, cur.1),
                    uidlist,
                )
            })
        };
        // The index's header alone, when nothing but header changes were logged past
        // dovecot.index: what it costs doesn't grow with the messages.
        let paths = mailsync_index::IndexPaths::new(&dir, index_file::INDEX_PREFIX);
        if let Ok(Some(head)) = mailsync_index::HeaderView::open(&paths) {
            if !still_valid(index_file::maildir_header_in(&head)) {
                // changed: the full sync reads the index (once)
                return Ok(None);
            }
            let h = head.header();
            // some recent, some not: counted from the records below
            let recent = head.recent_count();
            if let (Some(recent), false) = (recent, head.backend_pending()) {
                let facts = IndexFacts {
                    uid_validity: h.uid_validity,
                    highest_modseq: head.highest_modseq().max(1),
                    last_uid: head.last_uid(),
                    messages: h.messages_count,
                    recent,
                    unseen: head.unseen_count(),
                };
                let status = self.quick_status(&facts);
                if status.is_some() {
                    self.index = IndexInfo::from_header(&head, &dir);
                }
                return Ok(status);
            }
        }
        // an index that can't be read is the full sync's to report
        let Ok(Some(view)) = index_file::read_view(&dir) else {
            return Ok(None);
        };
        if !still_valid(index_file::maildir_header(&view)) || index_file::has_pending(&view) {
            return Ok(self.miss(view, before));
        }
        let first_recent_uid = view.header().first_recent_uid.max(1);
        let (mut recent, mut unseen) = (0u32, 0u32);
        for m in view.messages() {
            if m.uid() >= first_recent_uid {
                recent += 1;
            }
            if !m.system_flags().contains(Flags::SEEN) {
                unseen += 1;
            }
        }
        let facts = IndexFacts {
            uid_validity: view.uid_validity(),
            highest_modseq: view.highest_modseq().max(1),
            last_uid: view.messages().last().map(|m| m.uid()),
            messages: view.messages_count() as u32,
            recent,
            unseen,
        };
        Ok(match self.quick_status(&facts) {
            Some(status) => {
                self.index = IndexInfo::from_view(view);
                Some(status)
            }
            None => self.miss(view, before),
        })
    }

    /// The quick check's answer from the index `facts`, when the uidlist agrees: its header
    /// (v3, with a GUID and the index's UIDVALIDITY) and the last message's line.
    fn quick_status(&self, facts: &IndexFacts) -> Option<MailboxStatus> {
        let (list, last) =
            uidlist::read_header_and_record(&self.paths.uidlist(), facts.last_uid.unwrap_or(0))?;
        // the full sync rewrites an old or GUID-less uidlist
        if list.version != 3 || list.guid.is_none() || list.uid_validity != facts.uid_validity {
            return None;
        }
        if facts.last_uid.is_some() && last.is_none() {
            return None;
        }
        let status = MailboxStatus {
            uid_validity: list.uid_validity,
            uid_next: list.next_uid,
            highest_modseq: facts.highest_modseq,
            messages: facts.messages,
            recent: facts.recent,
            unseen: facts.unseen,
            vsize: 0,
            guid: list.guid.unwrap_or_default(),
            first_saved: None,
            last_guid: last.map(|r| Guid::from_bytes(r.guid())),
        };
        Some(status)
    }

    /// A quick check that can't answer: the index it read (after the files were as
    /// `before`) is kept for the full sync that follows, which would otherwise read it
    /// again.
    fn miss(&mut self, view: mailsync_index::View, before: &DiskStamp) -> Option<MailboxStatus> {
        self.prefetched = Some((view, before.clone()));
        None
    }

    /// The Maildir directory of this mailbox.
    pub fn path(&self) -> &Path {
        &self.paths.dir
    }

    /// Makes sure the mailbox exists and has cur/ new/ tmp/. Missing subdirectories are
    /// created as Dovecot does (maildir_mailbox_open / maildir_set_deleted); INBOX itself is
    /// created when missing (it always exists). When they can't be created (read-only
    /// store), the mailbox is read with the missing ones counted as empty.
    fn ensure_dirs(&self) -> Result<()> {
        let dir = &self.paths.dir;
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::MailboxNotFound(self.name.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.is_inbox {
                    return Err(Error::MailboxNotFound(self.name.clone()));
                }
                mkdir_all(dir, 0o700).map_err(|e| Error::io("mkdir", dir, e))?;
            }
            Err(e) => return Err(Error::io("stat", dir, e)),
        }
        if self.kind == LayoutKind::Fs && !self.is_inbox && !dir.join("cur").is_dir() {
            // mailbox-list-fs: a directory without cur/ is \NoSelect.
            return Err(Error::MailboxNotFound(self.name.clone()));
        }
        let mode = dir_mode(dir);
        for sub in ["cur", "new", "tmp"] {
            let p = dir.join(sub);
            if p.is_dir() {
                continue;
            }
            match mkdir(&p, mode) {
                Ok(()) => {}
                Err(e) if is_readonly_error(&e) => {
                    warn(&format!("can't create {}: {e}", p.display()));
                }
                Err(e) => return Err(Error::io("mkdir", &p, e)),
            }
        }
        if self.paths.control != *dir && !self.paths.control.is_dir() {
            if let Err(e) = mkdir_all(&self.paths.control, mode) {
                if !is_readonly_error(&e) {
                    return Err(Error::io("mkdir", &self.paths.control, e));
                }
            }
        }
        Ok(())
    }

    /// Whether the uidlist must be written: files without UIDs, no uidlist or one without a
    /// mailbox GUID (Dovecot then generates and writes one: maildir_uidlist_refresh), an old
    /// version, or duplicate files to fix.
    fn needs_write(st: &DiskState) -> bool {
        let Some(list) = &st.list else {
            return true;
        };
        if list.guid.is_none() || list.version != 3 || !st.scan.duplicates.is_empty() {
            return true;
        }
        st.mark_listed(list) != st.scan.files.len()
    }

    /// A file whose base is already taken by another file is renamed to a new unique base in
    /// new/ (keeping `,S=`/`,W=`), so it gets its own UID (maildir_fix_duplicate). Files that
    /// are in fact the same inode are left alone.
    fn fix_duplicates(&self, st: &mut DiskState) -> Result<()> {
        let dups = std::mem::take(&mut st.scan.duplicates);
        for dup in dups {
            let Some(first) = st.scan.files.get(dup.base()) else {
                continue;
            };
            let p1 = self.paths.sub(first.in_new).join(os(&first.fname));
            let p2 = self.paths.sub(dup.in_new).join(os(&dup.fname));
            let (Ok(m1), Ok(m2)) = (fs::metadata(&p1), fs::metadata(&p2)) else {
                continue;
            };
            if m1.ino() == m2.ino() && m1.dev() == m2.dev() {
                continue;
            }
            let mut new_base = filename::generate();
            for key in [EXTRA_FILE_SIZE, EXTRA_VIRTUAL_SIZE] {
                if let Some(size) = filename::size_field(&dup.fname, key) {
                    new_base.push_str(&format!(",{}={size}", key as char));
                }
            }
            let dest = self.paths.sub(true).join(&new_base);
            match fs::rename(&p2, &dest) {
                Ok(()) => {
                    warn(&format!(
                        "Fixed a duplicate: {} -> {new_base}",
                        p2.display()
                    ));
                    st.scan
                        .files
                        .insert(Found::new(true, new_base.into_bytes().into()));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("rename", &p2, e)),
            }
        }
        Ok(())
    }

    /// A fresh uidlist for a mailbox that has none: a new UIDVALIDITY from the root's
    /// dovecot-uidvalidity and a new GUID. When an index exists, its UIDVALIDITY and
    /// next UID are kept, so no UID the index ever saw is given again
    /// (maildir-sync.c maildir_sync_update_next_uid).
    fn new_uidlist(&self, base: &IndexBase) -> Result<UidList> {
        if let Some(view) = base.view() {
            if view.uid_validity() != 0 {
                let mut list = UidList::new(view.uid_validity(), MailboxGuid::generate());
                list.next_uid = list.next_uid.max(view.next_uid());
                list.header_next_uid = list.next_uid;
                return Ok(list);
            }
        }
        let v = uidvalidity::next(&self.control_root)
            .map_err(|e| Error::io("open", self.control_root.join(uidvalidity::FILE_NAME), e))?;
        Ok(UidList::new(v, MailboxGuid::generate()))
    }

    /// Reads the index (INDEX=MEMORY and an unusable index give `InMemory`).
    fn index_base(&self) -> IndexBase {
        let Some(dir) = &self.index_dir else {
            return IndexBase::InMemory(None);
        };
        match index_file::read_view(dir) {
            Ok(v) => IndexBase::OnDisk(dir.clone(), v),
            Err(e) => {
                warn(&format!("{e}; the index is not used"));
                IndexBase::InMemory(None)
            }
        }
    }

    /// Raises the uidlist's next UID to the index's, so a UID is never given below the
    /// index's next_uid (Dovecot would renumber such a message; FORMAT.md §6.6).
    fn raise_next_uid(list: &mut UidList, base: &IndexBase) {
        if let Some(v) = base.view() {
            if v.uid_validity() == list.uid_validity && v.next_uid() > list.next_uid {
                list.next_uid = v.next_uid();
            }
        }
    }

    /// Under the uidlist lock, after the files and the uidlist are written: writes what
    /// Dovecot's maildir sync would write for them to the index (maildir_sync_index) and
    /// returns the modseqs and \Recent for the view. `recent` are UIDs given in this
    /// operation; `non_recent` saves that asked for a UID without \Recent.
    fn index_sync_locked(
        &self,
        st: &mut DiskState,
        base: IndexBase,
        recent: &HashSet<u32>,
        non_recent: &HashSet<u32>,
        own: &OwnChanges,
    ) -> Result<IndexInfo> {
        let Some(mut list) = st.list.take() else {
            return Ok(IndexInfo::default());
        };
        let result = self.index_sync_list(st, &mut list, base, recent, non_recent, own);
        st.list = Some(list);
        result
    }

    fn index_sync_list(
        &self,
        st: &DiskState,
        list: &mut UidList,
        base: IndexBase,
        recent: &HashSet<u32>,
        non_recent: &HashSet<u32>,
        own: &OwnChanges,
    ) -> Result<IndexInfo> {
        let (dir, mut view) = match base {
            IndexBase::OnDisk(dir, view) => (dir, view),
            IndexBase::InMemory(view) => {
                let files = FilesSide::of(st, list, recent);
                return Ok(files.simulate(view.as_ref(), non_recent));
            }
        };
        if let Some(v) = &view {
            if v.uid_validity() != 0 && v.uid_validity() != list.uid_validity {
                // maildir_sync_index: "UIDVALIDITY changed", mail_index_reset.
                warn(&format!(
                    "Maildir {}: UIDVALIDITY changed ({} -> {})",
                    self.paths.dir.display(),
                    v.uid_validity(),
                    list.uid_validity
                ));
                index_file::remove_index(&dir)?;
                view = None;
            }
        }
        let side = index_file::index_side(view.as_ref());
        let mut files = FilesSide::of(st, list, recent);
        let cmp = files.compare(&side, non_recent);
        // the uidlist as written (we hold its lock): what the header's stamp names
        let stamp = self.scan_stamp(st);
        // What the comparison found holds under the log lock when nothing was logged since
        // the view was read (the same log position of the same index).
        let read_at = view.as_ref().map(|v| (v.indexid(), v.log_position()));
        let mut compared = None;
        if !cmp.reappeared.is_empty() {
            // maildir_handle_uid_insertion: the index already expunged these UIDs; the files
            // get new ones (as Dovecot does, keeping the records' fields).
            for uid in &cmp.reappeared {
                let Some(idx) = list.find_uid(*uid) else {
                    continue;
                };
                let mut rec = list.records.remove(idx);
                let new_uid = take_uid(list, None, &self.paths.uidlist())?;
                warn(&format!(
                    "Maildir {}: Expunged message reappeared, giving a new UID (old uid={uid}, file={})",
                    self.paths.dir.display(),
                    show(rec.base())
                ));
                rec.uid = new_uid;
                list.records.push(rec);
            }
            let count = list.records.len();
            write_uidlist(&self.paths, list, false, count, true, &st.scan.files, None)?;
            // the records moved to new UIDs
            files = FilesSide::of(st, list, recent);
        } else if cmp.changes.is_empty()
            && view
                .as_ref()
                .is_some_and(|v| stamp.is_none_or(|s| !index_file::header_needs_write(&s, v)))
        {
            if let Some(v) = view {
                return Ok(IndexInfo::from_view(v));
            }
        } else {
            compared = Some((side, cmp.changes));
        }
        let written = index_file::write_changes(
            &dir,
            dir_mode(&self.paths.dir),
            list.uid_validity,
            own.by_sync,
            stamp,
            |locked| {
                let current = compared
                    .take()
                    .filter(|_| read_at == Some((locked.indexid(), locked.log_position())));
                let (side, mut changes) = current.unwrap_or_else(|| {
                    let side = index_file::index_side(Some(locked));
                    let changes = files.compare(&side, non_recent).changes;
                    (side, changes)
                });
                for (uid, guid) in &mut changes.expunges {
                    if let Some(g) = st.expunged_guids.get(uid) {
                        *guid = *g;
                    }
                }
                changes.log_exactly(&side, &own.flag_uids);
                changes
            },
        );
        match written {
            Ok(v) => {
                self.index_written.set(true);
                Ok(IndexInfo::from_view(v))
            }
            Err(e) => {
                // The files and the uidlist are right; the index is only a copy of them that
                // the next sync (ours or Dovecot's) brings up to date.
                warn(&format!("{}: index not updated: {e}", dir.display()));
                Ok(files.simulate(view.as_ref(), non_recent))
            }
        }
    }

    /// The index's `maildir` header for the files of `st` and the uidlist as it is now.
    fn scan_stamp(&self, st: &DiskState) -> Option<index_file::MaildirHeader> {
        fs::metadata(self.paths.uidlist())
            .ok()
            .and_then(|md| st.scan.dirs.header(&md))
    }

    /// Whether the index's `maildir` header no longer describes the files just read (its
    /// uidlist part as the uidlist is now): the next index sync writes the new one, so the
    /// next open can take the quick path.
    fn index_stamp_outdated(&self, st: &DiskState, base: &IndexBase) -> bool {
        let IndexBase::OnDisk(_, Some(view)) = base else {
            return false;
        };
        self.scan_stamp(st)
            .is_some_and(|s| index_file::header_needs_write(&s, view))
    }

    /// Whether the index differs from the files (checked without locks; the change itself
    /// is computed again under the locks).
    fn index_differs(&self, st: &DiskState, base: &IndexBase) -> bool {
        let IndexBase::OnDisk(_, view) = base else {
            return false;
        };
        let (Some(list), Some(view)) = (&st.list, view) else {
            return true;
        };
        let side = index_file::index_side(Some(view));
        let c = FilesSide::of(st, list, &HashSet::new()).compare(&side, &HashSet::new());
        !c.changes.is_empty() || !c.reappeared.is_empty() || side.uid_validity != list.uid_validity
    }

    /// Re-reads the mailbox (the `sync()` of the API): gives UIDs to new files and brings
    /// the index up to date with the files, as Dovecot's maildir sync does.
    fn sync_impl(&mut self) -> Result<()> {
        self.quick = None;
        let prefetched = self.prefetched.take();
        let unlocked = DiskStamp::take(&self.paths, self.index_dir.as_deref());
        if let Some((stamp, until)) = &self.stamp {
            if *stamp == unlocked && until.is_none_or(|t| std::time::Instant::now() < t) {
                return Ok(());
            }
        }
        self.stamp = None;
        // rebuilt below from what this sync reads
        self.view.mails = Vec::new();
        self.view_lost = true;
        self.ensure_dirs()?;
        if !self.tmp_checked {
            clean_tmp(&self.paths.tmp(), SystemTime::now());
            self.tmp_checked = true;
        }
        // As maildir_sync_context (maildir-sync.c): the uidlist is locked before the
        // directories are read and kept until the index is written, so the files are read
        // once, and a file another reader's rename hid from this readdir() can't be
        // written out of the uidlist. A read-only mailbox is read without the lock, and
        // new messages get UIDs for this session only.
        let lock = match lock_uidlist(&self.paths) {
            Ok(lock) => Some(lock),
            Err(Error::Io { source, .. }) if is_readonly_error(&source) => None,
            Err(e) => return Err(e),
        };
        let before = DiskStamp::take(&self.paths, self.index_dir.as_deref());
        let scan_instant = std::time::Instant::now();
        // The index as read by the quick check, when `P` and `P.log` haven't changed since
        // (they are in the stamp); else read now, under the lock.
        let prefetched = prefetched.filter(|(_, at)| at.same_index(&before));
        let (st, own_write) = match lock {
            Some(lock) => {
                let result = self.read_locked(prefetched.map(|(v, _)| v), &before);
                let released = lock.release();
                let read = result?;
                released.map_err(|e| Error::io("unlink", self.paths.uidlist(), e))?;
                read
            }
            None => (self.read_readonly(prefetched.map(|(v, _)| v))?, None),
        };
        let settled = st.scan.dirs.settled();
        self.build_view(st)?;
        // Trusted only when nothing but this sync changed the files since they were read
        // (else the stamp is stale anyway); when the directories had not settled before
        // that, only for DELAYED_REFRESH.
        let now = DiskStamp::take(&self.paths, self.index_dir.as_deref());
        if now == before || own_write.as_ref() == Some(&now) {
            if settled {
                self.stamp = Some((now, None));
            } else {
                self.stamp = Some((now, Some(scan_instant + DELAYED_REFRESH)));
            }
        }
        Ok(())
    }

    /// The index as [`Self::index_base`] reads it, or `prefetched` when it is current.
    fn base_or(&self, prefetched: Option<mailsync_index::View>) -> IndexBase {
        match (prefetched, &self.index_dir) {
            (Some(v), Some(dir)) => IndexBase::OnDisk(dir.clone(), Some(v)),
            _ => self.index_base(),
        }
    }

    /// [`Self::sync_impl`]'s reading under the uidlist lock, the files being as `before`:
    /// the files, UIDs for new ones, the index brought up to date. With the stamp of the
    /// files after this sync's own write, when it wrote and `new/` and `cur/` still look
    /// as they did.
    fn read_locked(
        &mut self,
        prefetched: Option<mailsync_index::View>,
        before: &DiskStamp,
    ) -> Result<(DiskState, Option<DiskStamp>)> {
        let mut st = read_disk(&self.paths, true)?;
        let base = self.base_or(prefetched);
        if self.needs_index_work(&st, &base) {
            let recent = self.assign_uids_locked(&mut st, &base)?;
            self.index = self.index_sync_locked(
                &mut st,
                base,
                &recent,
                &HashSet::new(),
                &OwnChanges::default(),
            )?;
            // taken under the uidlist lock, before others may write again
            let after = DiskStamp::take(&self.paths, self.index_dir.as_deref());
            let own_write = after.same_dirs(before).then_some(after);
            return Ok((st, own_write));
        }
        self.index = Self::index_of(base, &st);
        Ok((st, None))
    }

    /// [`Self::sync_impl`]'s reading of a mailbox it can't lock (read-only): new files get
    /// UIDs for this session only, and Dovecot's index answers are simulated.
    fn read_readonly(&mut self, prefetched: Option<mailsync_index::View>) -> Result<DiskState> {
        let mut st = read_disk(&self.paths, false)?;
        let base = self.base_or(prefetched);
        if !self.needs_index_work(&st, &base) {
            self.index = Self::index_of(base, &st);
            return Ok(st);
        }
        if Self::needs_write(&st) {
            warn(&format!(
                "{}: read-only, new messages get UIDs only for this session",
                self.paths.dir.display()
            ));
        }
        let mut list = match st.list.take() {
            Some(l) => l,
            None => UidList::new(
                unix_secs(SystemTime::now()).max(1) as u32,
                MailboxGuid::generate(),
            ),
        };
        let first_new = list.records.len();
        assign_unlisted(&mut list, &st.scan, &self.paths.uidlist(), None)?;
        // every file is listed now, its mark right
        st.note_marks(&list, st.scan.files.len());
        let recent: HashSet<u32> = list.records[first_new..].iter().map(|r| r.uid).collect();
        self.index = FilesSide::of(&st, &list, &recent).simulate(base.view(), &HashSet::new());
        st.list = Some(list);
        Ok(st)
    }

    /// True when the files as read (`st`) need UIDs or the uidlist rewritten, or the index
    /// `base` doesn't match them or their stamp.
    fn needs_index_work(&self, st: &DiskState, base: &IndexBase) -> bool {
        Self::needs_write(st) || self.index_differs(st, base) || self.index_stamp_outdated(st, base)
    }

    /// The index's answers for files that need no write: the index's own, else simulated.
    fn index_of(base: IndexBase, st: &DiskState) -> IndexInfo {
        match (base, &st.list) {
            (IndexBase::OnDisk(_, Some(v)), _) => IndexInfo::from_view(v),
            (other, Some(list)) => {
                FilesSide::of(st, list, &HashSet::new()).simulate(other.view(), &HashSet::new())
            }
            (_, None) => IndexInfo::default(),
        }
    }

    /// `Mailbox::update_mailbox`, as maildir_mailbox_update (maildir-storage.c): under the
    /// uidlist lock the uidlist header gets the new `V` / raised `N`
    /// (maildir_uidlist_set_uid_validity / _set_next_uid, written as maildir_uidlist_update
    /// does), then the index the same values through the usual maildir index sync
    /// (EXTERNAL `next_uid` header update; a new UIDVALIDITY resets the index, which the
    /// sync then recreates, as Dovecot's mail_index_reset). HIGHESTMODSEQ is raised as
    /// index_storage_mailbox_update does (`modseq` extension, modseq update of uid 0).
    ///
    /// Deviation: Dovecot also changes the UIDVALIDITY of a mailbox holding messages (they
    /// keep their UIDs); mailsync does it only for an empty mailbox, as every mailstore
    /// backend, and then starts UIDs again at 1. With INDEX=MEMORY a HIGHESTMODSEQ raise
    /// can't be kept: `NotPossible`.
    /// `update_mailbox`, and with `guid` also `set_mailbox_guid` (the uidlist header's `G`).
    fn update_impl(&mut self, update: &MailboxUpdate, guid: Option<MailboxGuid>) -> Result<()> {
        if update.uid_validity == Some(0) {
            return Err(Error::Params("UIDVALIDITY can't be 0".into()));
        }
        if guid.is_some_and(|g| g.is_zero()) {
            return Err(Error::Params("mailbox GUID can't be all zero".into()));
        }
        if *update == MailboxUpdate::default() && guid.is_none() {
            return Ok(());
        }
        self.load()?;
        self.ensure_dirs()?;
        let lock = lock_uidlist(&self.paths)?;
        let result = self.update_mailbox_locked(update, guid);
        let released = lock.release();
        result?;
        released.map_err(|e| Error::io("unlink", self.paths.uidlist(), e))?;
        self.sync_impl()
    }

    /// [`Self::update_impl`] with the uidlist locked.
    fn update_mailbox_locked(
        &self,
        update: &MailboxUpdate,
        guid: Option<MailboxGuid>,
    ) -> Result<()> {
        let mut st = read_disk(&self.paths, true)?;
        let base = self.index_base();
        let recent = self.update_locked(&mut st, &base)?;
        let uidlist_path = self.paths.uidlist();
        let Some(list) = st.list.as_mut() else {
            return Err(Error::corrupted(
                &uidlist_path,
                "uidlist missing after its update",
            ));
        };
        let mut rewrite = false;
        let mut reset_index = false;
        if let Some(v) = update.uid_validity {
            if v != list.uid_validity {
                if !st.scan.files.is_empty() {
                    return Err(Error::NotPossible(format!(
                        "{}: UIDVALIDITY can be changed only in an empty mailbox",
                        self.name
                    )));
                }
                // the old UIDs mean nothing under the new UIDVALIDITY
                list.uid_validity = v;
                list.records.clear();
                list.next_uid = 1;
                list.header_next_uid = 1;
                rewrite = true;
                reset_index = true;
            }
        }
        if let Some(g) = guid {
            if list.guid != Some(g) {
                list.guid = Some(g);
                rewrite = true;
            }
        }
        if let Some(min) = update.min_uid_next {
            if list.next_uid < min {
                list.next_uid = min;
                list.header_next_uid = min;
                rewrite = true;
            }
        }
        if rewrite {
            replace_uidlist(&self.paths, list, file_mode(&self.paths.dir))?;
            list.lines_read = list.records.len();
        }
        if reset_index {
            if let Some(dir) = &self.index_dir {
                index_file::remove_index(dir)?;
            }
        }
        let base = self.index_base();
        let info = self.index_sync_locked(
            &mut st,
            base,
            &recent,
            &HashSet::new(),
            &OwnChanges::default(),
        )?;
        let Some(min) = update.min_highest_modseq else {
            return Ok(());
        };
        if min <= info.highest_modseq {
            return Ok(());
        }
        let Some(dir) = &self.index_dir else {
            return Err(Error::NotPossible(format!(
                "{}: INDEX=MEMORY keeps no HIGHESTMODSEQ to raise",
                self.name
            )));
        };
        let writer = mailsync_index::IndexWriter::open(dir, index_file::INDEX_PREFIX);
        mailsync_index::locked_commit::raise_highest_modseq(&writer, min)?;
        self.index_written.set(true);
        Ok(())
    }

    /// Under the uidlist lock: re-reads everything and gives UIDs to unlisted files.
    /// Returns the UIDs given.
    fn update_locked(&self, st: &mut DiskState, base: &IndexBase) -> Result<HashSet<u32>> {
        *st = read_disk(&self.paths, true)?;
        self.assign_uids_locked(st, base)
    }

    /// [`Self::update_locked`] on files already read under the lock (or known unchanged
    /// since they were read).
    fn assign_uids_locked(&self, st: &mut DiskState, base: &IndexBase) -> Result<HashSet<u32>> {
        self.fix_duplicates(st)?;
        let (mut list, recreate) = match st.list.take() {
            Some(l) => {
                let r = l.guid.is_none() || l.version != 3;
                (l, r)
            }
            None => (self.new_uidlist(base)?, true),
        };
        Self::raise_next_uid(&mut list, base);
        let first_new = list.records.len();
        let marked = st.listed_marks(&list);
        let added = assign_unlisted(&mut list, &st.scan, &self.paths.uidlist(), marked)?;
        // every file is listed now, its mark right (made here or kept by assign_unlisted)
        st.note_marks(&list, st.scan.files.len());
        let given = list.records[first_new..].iter().map(|r| r.uid).collect();
        if recreate || added > 0 {
            // every file now has its record (bases are unique in the list and the scan):
            // as many records have a file as there are files
            write_uidlist(
                &self.paths,
                &mut list,
                st.appendable,
                first_new,
                recreate || !st.appendable,
                &st.scan.files,
                Some(st.scan.files.len()),
            )?;
        }
        st.list = Some(list);
        Ok(given)
    }

    fn build_view(&mut self, mut st: DiskState) -> Result<()> {
        let list = st
            .list
            .take()
            .unwrap_or_else(|| UidList::new(1, MailboxGuid::default()));
        // Letters seen in filenames keep their slot even without a dovecot-keywords entry.
        for c in st.scan.files.keyword_letters() {
            st.keywords.claim_letter(c);
        }
        let (uid_validity, uid_next, guid) = (list.uid_validity, list.next_uid, list.guid);
        let every_letter_taken = st.keywords.len() >= MAX_KEYWORDS;
        let mut mails = Vec::with_capacity(list.records.len());
        // The records and files move into the view (a base is listed once): no second
        // copy of either is alive while the view is built. With marks made for the list,
        // the files are paired with their records by one walk over the set (no name
        // looked up); else each is looked up by its base.
        let mut by_record: Vec<Option<Found>> = Vec::new();
        if st.slots_valid(&list) {
            #[cfg(test)]
            SLOT_WALKS.with(|w| w.set(w.get() + 1));
            by_record.resize_with(list.records.len(), || None);
            for f in st.scan.files.files.drain() {
                let f = f.0;
                if let Some(slot) = by_record.get_mut(f.record.get() as usize) {
                    *slot = Some(f);
                }
            }
        }
        for (i, rec) in list.records.into_iter().enumerate() {
            let found = match by_record.get_mut(i) {
                Some(slot) => slot.take(),
                None => st.scan.files.remove(rec.base()),
            };
            let Some(mut found) = found else {
                continue;
            };
            debug_assert_eq!(found.base(), rec.base());
            let mut flags = found.flags();
            let mut keywords: Vec<Keyword> = found
                .letters()
                .filter_map(|l| st.keywords.keyword_for_letter(l))
                .collect();
            // A change Dovecot logged but hasn't applied to the file yet: its own sync
            // applies it before answering, so report it as the index has it.
            if let Some((f, k)) = self.index.pending(rec.uid) {
                flags = f;
                keywords = k.to_vec();
            } else if every_letter_taken {
                // Keywords without a letter (all 26 taken) live in the index only.
                for k in self.index.keywords_of(rec.uid) {
                    if st.keywords.letter_for(k.as_bytes()).is_none() && !keywords.contains(&k) {
                        keywords.push(k);
                    }
                }
            }
            // index-sync.c index_sync_update_recent_count: UIDs from first_recent_uid on.
            if rec.uid >= self.index.first_recent_uid {
                flags.insert(Flags::RECENT);
            }
            let ext_size = |key: u8| {
                rec.ext(key)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u64>().ok())
            };
            // maildir_quick_size_lookup: the filename, then the uidlist, then stat().
            let mut times = None;
            let physical_size = match filename::size_field(&found.fname, EXTRA_FILE_SIZE)
                .or_else(|| ext_size(EXTRA_FILE_SIZE))
            {
                Some(size) => size,
                None => match self.stat_file(&mut found, rec.base())? {
                    Some(md) => {
                        times = Some(Box::new((md.mtime(), md.ctime())));
                        md.len()
                    }
                    None => continue,
                },
            };
            let virtual_size = filename::size_field(&found.fname, EXTRA_VIRTUAL_SIZE)
                .or_else(|| ext_size(EXTRA_VIRTUAL_SIZE));
            mails.push(MailFile {
                uid: rec.uid,
                in_new: found.in_new,
                suffix: NameSuffix::of(&found),
                record: rec,
                flags,
                keywords: keywords.into_boxed_slice(),
                physical_size,
                virtual_size,
                times,
            });
        }
        if !self.vsize_cache.is_empty() {
            let alive: HashSet<u32> = mails.iter().map(|m| m.uid).collect();
            self.vsize_cache.retain(|uid, _| alive.contains(uid));
        }
        self.view = View {
            uid_validity,
            uid_next,
            guid: guid.unwrap_or_default(),
            mails,
        };
        self.view_lost = false;
        Ok(())
    }

    fn mail_index(&self, uid: u32) -> Option<usize> {
        self.view.mails.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// Opens the file of a message, finding it again if it was renamed since the view.
    fn open_file(&mut self, uid: Uid) -> Result<File> {
        let idx = self.mail_index(uid.0).ok_or(Error::MailNotFound(uid))?;
        let found = self.view.mails[idx].found();
        let path = self.paths.sub(found.in_new).join(os(&found.fname));
        match File::open(&path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io("open", &path, e))
            }
            Err(_) => {}
        }
        let base = self.view.mails[idx].record.base().to_vec();
        for _ in 0..RESYNC_RETRY_COUNT {
            let Some(f) = find_file(&self.paths, &base)? else {
                return Err(Error::MailNotFound(uid));
            };
            let path = self.paths.sub(f.in_new).join(os(&f.fname));
            match File::open(&path) {
                Ok(file) => {
                    self.view.mails[idx].set_found(&f);
                    return Ok(file);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("open", &path, e)),
            }
        }
        Err(Error::MailNotFound(uid))
    }

    /// stat() of a message's file, finding it again (and updating `found`) when it was
    /// renamed since the directory scan; `None` when it is gone.
    fn stat_file(&self, found: &mut Found, base: &[u8]) -> Result<Option<fs::Metadata>> {
        let path = self.paths.sub(found.in_new).join(os(&found.fname));
        match fs::metadata(&path) {
            Ok(md) => return Ok(Some(md)),
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io("stat", path, e))
            }
            Err(_) => {}
        }
        // Renamed or expunged between readdir and stat: look again.
        let Some(f) = find_file(&self.paths, base)? else {
            return Ok(None);
        };
        let path = self.paths.sub(f.in_new).join(os(&f.fname));
        match fs::metadata(&path) {
            Ok(md) => {
                *found = f;
                Ok(Some(md))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// Takes the dates of every message of the view that has none yet (one stat each);
    /// a message whose file is gone meanwhile leaves the view.
    fn stat_view(&mut self) -> Result<()> {
        self.stat_mails((0..self.view.mails.len()).collect())
    }

    /// Stats the files of the view's messages at these positions (ascending) whose dates
    /// are not known yet; a message whose file is gone leaves the view.
    fn stat_mails(&mut self, positions: Vec<usize>) -> Result<()> {
        // For many files new/ and cur/ are opened once: each stat then looks up one name,
        // not the whole path. A few (a sync's sender asks for one message's record at a
        // time) are stat'ed by path: two opens and closes would cost more than the walk.
        let open_dir = |in_new: bool| {
            use rustix::fs::{Mode, OFlags};
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            rustix::fs::open(self.paths.sub(in_new), flags, Mode::empty()).ok()
        };
        let dirs = if positions.len() >= STAT_BY_DIR_MIN {
            [open_dir(false), open_dir(true)]
        } else {
            [None, None]
        };
        let mut gone = Vec::new();
        for i in positions {
            let m = &self.view.mails[i];
            if m.times.is_some() {
                continue;
            }
            let quick = dirs[usize::from(m.in_new)].as_ref().and_then(|dir| {
                rustix::fs::statat(dir, os(&m.fname()), rustix::fs::AtFlags::empty()).ok()
            });
            if let Some(st) = quick {
                self.view.mails[i].times = Some(Box::new((st.st_mtime, st.st_ctime)));
                continue;
            }
            // renamed meanwhile, or an error to report with its path: the slow way
            let mut found = self.view.mails[i].found();
            let base = self.view.mails[i].record.base().to_vec();
            match self.stat_file(&mut found, &base)? {
                Some(md) => {
                    let m = &mut self.view.mails[i];
                    m.set_found(&found);
                    m.times = Some(Box::new((md.mtime(), md.ctime())));
                }
                None => gone.push(i),
            }
        }
        for i in gone.into_iter().rev() {
            self.view.mails.remove(i);
        }
        Ok(())
    }

    /// The record of a message; its dates are 0 unless [`Self::stat_view`] ran.
    fn record_of(&self, m: &MailFile) -> MailRecord {
        let (mtime, ctime) = m.times.as_deref().copied().unwrap_or_default();
        let saved_date = m
            .record
            .ext(SAVE_DATE_KEY)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(ctime);
        MailRecord {
            uid: Uid(m.uid),
            guid: Guid::from_bytes(m.record.guid()),
            flags: m.flags,
            keywords: m.keywords.to_vec(),
            modseq: ModSeq(self.index.modseq(m.uid)),
            received_date: mtime,
            saved_date,
            physical_size: m.physical_size,
            virtual_size: m
                .virtual_size
                .or_else(|| self.vsize_cache.get(&m.uid).copied()),
        }
    }

    fn computed_vsize(&mut self, uid: u32) -> Result<u64> {
        if let Some(v) = self.vsize_cache.get(&uid) {
            return Ok(*v);
        }
        let mut f = self.open_file(Uid(uid))?;
        let v = mailstore::virtual_size_of(&mut f)
            .map_err(|e| Error::io("read", self.paths.dir.clone(), e))?;
        self.vsize_cache.insert(uid, v);
        Ok(v)
    }
}

impl MaildirMailbox {
    /// The status counters of the current view, with the given size sum and first saved
    /// date (which need message reads; `counters` passes 0 and `None`).
    fn counters_of_view(&self, vsize: u64, first_saved: Option<i64>) -> MailboxStatus {
        let mails = &self.view.mails;
        // one pass over the view for both counts (a large mailbox's view is megabytes)
        let (recent, unseen) = mails.iter().fold((0u32, 0u32), |(recent, unseen), m| {
            (
                recent + u32::from(m.flags.contains(Flags::RECENT)),
                unseen + u32::from(!m.flags.contains(Flags::SEEN)),
            )
        });
        MailboxStatus {
            uid_validity: self.view.uid_validity,
            uid_next: self.view.uid_next,
            highest_modseq: self.index.highest_modseq,
            messages: mails.len() as u32,
            recent,
            unseen,
            vsize,
            guid: self.view.guid,
            first_saved,
            last_guid: mails.last().map(|m| Guid::from_bytes(m.record.guid())),
        }
    }
}

impl Mailbox for MaildirMailbox {
    fn name(&self) -> &str {
        &self.name
    }

    fn sync(&mut self) -> Result<()> {
        if let Some((_, stamp)) = &self.quick {
            // the quick check's answer holds while the files it was taken from are unchanged
            if *stamp == DiskStamp::take(&self.paths, self.index_dir.as_deref()) {
                return Ok(());
            }
            self.quick = None;
            return self.sync_quick_or_full();
        }
        self.sync_impl()
    }

    fn counters(&mut self) -> Result<MailboxStatus> {
        if let Some((q, _)) = &self.quick {
            return Ok(q.clone());
        }
        Ok(self.counters_of_view(0, None))
    }

    fn status(&mut self) -> Result<MailboxStatus> {
        self.load()?;
        self.stat_view()?;
        let mut vsize = 0u64;
        for i in 0..self.view.mails.len() {
            let m = &self.view.mails[i];
            vsize += match m.virtual_size {
                Some(v) => v,
                None => {
                    let uid = m.uid;
                    match self.computed_vsize(uid) {
                        Ok(v) => v,
                        // Expunged since the view was taken: counted as Dovecot's cached view would not.
                        Err(Error::MailNotFound(_)) => 0,
                        Err(e) => return Err(e),
                    }
                }
            };
        }
        let first_saved = self
            .view
            .mails
            .first()
            .map(|m| self.record_of(m).saved_date);
        Ok(self.counters_of_view(vsize, first_saved))
    }

    fn mails(&mut self) -> Result<Vec<MailRecord>> {
        self.load()?;
        self.stat_view()?;
        Ok(self.view.mails.iter().map(|m| self.record_of(m)).collect())
    }

    /// The view as it is: no file is statted (dates 0 where no earlier call read them).
    fn mails_without_dates(&mut self) -> Result<(Vec<MailRecord>, bool)> {
        self.load()?;
        let records = self.view.mails.iter().map(|m| self.record_of(m)).collect();
        Ok((records, true))
    }

    /// Stats only the files asked for.
    fn mails_of(&mut self, uids: &[Uid]) -> Result<Vec<MailRecord>> {
        self.load()?;
        let mut positions: Vec<usize> = uids.iter().filter_map(|u| self.mail_index(u.0)).collect();
        positions.sort_unstable();
        positions.dedup();
        self.stat_mails(positions)?;
        let mut wanted: Vec<Uid> = uids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        Ok(wanted
            .into_iter()
            .filter_map(|u| self.mail_index(u.0))
            .map(|i| self.record_of(&self.view.mails[i]))
            .collect())
    }

    fn open_mail(&mut self, uid: Uid) -> Result<Box<dyn Read + Send>> {
        self.load()?;
        Ok(Box::new(self.open_file(uid)?))
    }

    /// From the record's `P` and `O` fields (an empty `P` is the base filename).
    fn pop3_info(&mut self, uid: Uid) -> Result<Pop3Info> {
        self.load()?;
        let idx = self.mail_index(uid.0).ok_or(Error::MailNotFound(uid))?;
        let (info, bad_order) = record_pop3(&self.view.mails[idx].record);
        if let Some(o) = bad_order {
            warn(&format!(
                "{}: {UIDLIST_NAME}: UID {} has an invalid POP3 order O{}; ignored",
                self.paths.uidlist().display(),
                uid.0,
                show(o)
            ));
        }
        Ok(info)
    }

    fn virtual_size(&mut self, uid: Uid) -> Result<u64> {
        self.load()?;
        let idx = self.mail_index(uid.0).ok_or(Error::MailNotFound(uid))?;
        match self.view.mails[idx].virtual_size {
            Some(v) => Ok(v),
            None => self.computed_vsize(uid.0),
        }
    }

    /// `.dovecot-box-sync.lock` in the mailbox's index directory (none for INDEX=MEMORY).
    fn lock_for_sync(&mut self, timeout: std::time::Duration) -> Result<Option<SyncGuard>> {
        let Some(dir) = &self.index_dir else {
            return Ok(None);
        };
        mkdir_all(dir, dir_mode(&self.paths.dir)).map_err(|e| Error::io("mkdir", dir, e))?;
        mailsync_index::lock::lock_mailbox_for_sync(dir, timeout)
    }

    /// Answered from the index's transaction logs as of the last sync (`Unknown` when the
    /// logs don't reach back that far, or for INDEX=MEMORY).
    fn changes_since(&mut self, since: ModSeq) -> Result<Changes> {
        self.index.read_view()?;
        Ok(self.index.changes_since(since))
    }

    fn expunged_since(&mut self, since: ModSeq) -> Result<Option<mailstore::Expunges>> {
        self.index.read_view()?;
        Ok(self.index.expunged_since(since))
    }

    /// From the index's transaction logs as of the last sync (nothing for INDEX=MEMORY).
    fn flag_changes_since(
        &mut self,
        since: ModSeq,
        uids: &[Uid],
    ) -> Result<Vec<(Uid, FlagChange)>> {
        self.index.read_view()?;
        Ok(self.index.flag_changes_since(since, uids))
    }

    fn update_mailbox(&mut self, update: &MailboxUpdate) -> Result<()> {
        self.update_impl(update, None)
    }

    fn set_mailbox_guid(&mut self, guid: MailboxGuid) -> Result<()> {
        self.update_impl(&MailboxUpdate::default(), Some(guid))
    }

    fn begin(&mut self) -> Result<Box<dyn Transaction + '_>> {
        self.load()?;
        Ok(Box::new(MaildirTransaction {
            mbox: self,
            saves: Vec::new(),
            ops: Vec::new(),
            finished: false,
            by_sync: false,
            file_mode: None,
        }))
    }
}

/// Touches the uidlist lock every MAILDIR_LOCK_TOUCH_SECS (10 s, maildir-storage.h) during
/// long work, so other hosts don't take it as stale.
struct LockToucher<'a> {
    lock: &'a DotLock,
    last: std::time::Instant,
}

impl<'a> LockToucher<'a> {
    fn new(lock: &'a DotLock) -> LockToucher<'a> {
        LockToucher {
            lock,
            last: std::time::Instant::now(),
        }
    }

    fn tick(&mut self) {
        if self.last.elapsed() >= Duration::from_secs(10) {
            if let Err(e) = self.lock.touch() {
                warn(&format!(
                    "touching {}: {e}",
                    self.lock.lock_path().display()
                ));
            }
            self.last = std::time::Instant::now();
        }
    }
}

/// A message written to tmp/, waiting for commit.
struct PendingSave {
    tmp_name: String,
    size: u64,
    vsize: u64,
    flags: Flags,
    keywords: Vec<Keyword>,
    guid: Option<Guid>,
    uid: Option<u32>,
    saved_date: i64,
    /// With a UIDL that fits a uidlist field (checked by `save`), or none.
    pop3: Pop3Info,
}

enum Op {
    Flags(u32, FlagUpdate),
    Expunge(u32),
}

/// A transaction applied to the files and the uidlist, waiting for its index sync.
struct Committed {
    result: CommitResult,
    st: DiskState,
    base: IndexBase,
    given: HashSet<u32>,
    non_recent: HashSet<u32>,
    own: OwnChanges,
}

/// What the index write learns of a transaction's own changes (none for a sync of
/// changes made by others).
#[derive(Default)]
pub(crate) struct OwnChanges {
    /// UIDs whose flags or keywords the transaction changed: logged exactly
    /// (`ExternalChanges::log_exactly`).
    flag_uids: HashSet<u32>,
    /// `Transaction::mark_as_sync`: the index transaction is marked SYNC.
    by_sync: bool,
}

struct MaildirTransaction<'a> {
    mbox: &'a mut MaildirMailbox,
    saves: Vec<PendingSave>,
    ops: Vec<Op>,
    finished: bool,
    /// `mark_as_sync`.
    by_sync: bool,
    /// The mode of new message files, taken at the first save: a stat of the directory
    /// once per transaction, not per message.
    file_mode: Option<u32>,
}

fn check_keywords(keywords: &[Keyword]) -> Result<()> {
    for k in keywords {
        if !Keyword::is_valid_atom(k.as_bytes()) {
            return Err(Error::Params(format!("Invalid keyword: {k:?}")));
        }
    }
    Ok(())
}

/// A GUID is stored as the uidlist `G` field or as the filename base: no spaces, controls,
/// `/` or `:`.
fn check_guid(guid: &Guid) -> Result<()> {
    let b = guid.as_bytes();
    if b.is_empty() || b.iter().any(|&c| c <= b' ' || c == 0x7f) {
        return Err(Error::Params(format!("Invalid message GUID: {guid:?}")));
    }
    Ok(())
}

/// A GUID can be the filename base itself when it looks like one (maildir-save.c
/// maildir_save_set_dest_basename + maildir_filename_check_conflicts).
fn guid_usable_as_base(g: &[u8]) -> bool {
    !g.is_empty()
        && g[0] != b'.'
        && !g
            .iter()
            .any(|&c| c == b'/' || c == filename::INFO_SEP || c <= b' ' || c == 0x7f)
}

/// The POP3 state a record keeps (`P`, `O`; maildir-mail.c maildir_mail_get_special
/// MAIL_FETCH_UIDL_BACKEND and MAIL_FETCH_POP3_ORDER), and the `O` value when it isn't a
/// decimal number (then read as no order; Dovecot's dsync would abort on it, dsync-mail.c).
fn record_pop3(rec: &UidRecord) -> (Pop3Info, Option<&[u8]>) {
    let order = rec.pop3_order();
    let bad_order = match order {
        None => rec.pop3_order_field(),
        Some(_) => None,
    };
    let info = Pop3Info {
        uidl: rec.pop3_uidl().map(<[u8]>::to_vec).unwrap_or_default(),
        order: order.unwrap_or(0),
    };
    (info, bad_order)
}

fn dedup_keywords(keywords: &[Keyword]) -> Vec<Keyword> {
    let mut out: Vec<Keyword> = Vec::new();
    for k in keywords {
        if !out
            .iter()
            .any(|o| o.as_bytes().eq_ignore_ascii_case(k.as_bytes()))
        {
            out.push(k.clone());
        }
    }
    out
}

impl MaildirTransaction<'_> {
    fn remove_tmp_files(&mut self) {
        let tmp = self.mbox.paths.tmp();
        for s in self.saves.drain(..) {
            let _ = fs::remove_file(tmp.join(&s.tmp_name));
        }
    }

    fn letters_for(map: &mut KeywordMap, keywords: &[Keyword], path: &Path) -> Result<Vec<u8>> {
        let mut letters = Vec::new();
        for k in keywords {
            match map.letter_or_assign(k.as_bytes()) {
                Some(l) => letters.push(l),
                None => {
                    return Err(Error::NotPossible(format!(
                        "{}: all 26 Maildir keyword letters are in use, can't add keyword {k}",
                        path.display()
                    )))
                }
            }
        }
        Ok(letters)
    }

    /// Applies the transaction to the files and the uidlist. Returns what the index sync
    /// that follows (still under the lock) needs: the disk state, the index as read before,
    /// the UIDs given (\Recent) and the saves that asked for a UID without \Recent.
    fn commit_locked(&mut self, lock: &DotLock) -> Result<Committed> {
        let mut toucher = LockToucher::new(lock);
        let paths = self.mbox.paths.clone();
        let mut st = read_disk(&paths, true)?;
        self.mbox.fix_duplicates(&mut st)?;
        let base = self.mbox.index_base();
        let (mut list, mut recreate) = match st.list.take() {
            Some(l) => {
                let r = l.guid.is_none() || l.version != 3;
                (l, r)
            }
            None => (self.mbox.new_uidlist(&base)?, true),
        };
        MaildirMailbox::raise_next_uid(&mut list, &base);
        let mut non_recent: HashSet<u32> = HashSet::new();
        if !st.appendable {
            recreate = true;
        }
        let first_new = list.records.len();
        // Files delivered by others since the last sync get their UIDs first.
        assign_unlisted(&mut list, &st.scan, &paths.uidlist(), None)?;

        // Keyword letters for everything this commit adds, before touching any file, so a
        // 27th keyword fails the commit without a partial change.
        let mut kwmap = st.keywords.clone();
        for c in st.scan.files.keyword_letters() {
            kwmap.claim_letter(c);
        }
        let kw_path = paths.keywords();
        let mut save_letters = Vec::with_capacity(self.saves.len());
        for s in &self.saves {
            save_letters.push(Self::letters_for(&mut kwmap, &s.keywords, &kw_path)?);
        }
        for op in &self.ops {
            if let Op::Flags(_, u) = op {
                if u.op != FlagOp::Remove {
                    Self::letters_for(&mut kwmap, &u.keywords, &kw_path)?;
                }
            }
        }
        if kwmap.changed {
            write_keywords(&paths, &kwmap)?;
        }

        // Every saved file durable before the first one becomes visible.
        {
            let temps: Vec<PathBuf> = self
                .saves
                .iter()
                .map(|s| paths.tmp().join(&s.tmp_name))
                .collect();
            mailsupport::durable::sync_files(&temps).map_err(|(p, e)| Error::io("fsync", p, e))?;
        }
        // Saves: tmp/ → new/ (no flags) or cur/ (with `:2,<flags>`), as maildir_file_move.
        let mut saved = Vec::with_capacity(self.saves.len());
        let listed: HashSet<Vec<u8>> = list.records.iter().map(|r| r.base().to_vec()).collect();
        let (mut new_changed, mut cur_changed) = (false, false);
        // A save of the very bytes of a message this transaction expunges, under its GUID
        // (the sync engine renumbering a message: copy to the new UID, expunge the old):
        // the file keeps its name and gets the new UID in the uidlist instead, so the move
        // is one atomic uidlist rewrite. A copy + unlink would leave, if killed in between,
        // the message twice (the copy's GUID, only in the uidlist, even lost).
        let expunging: HashSet<u32> = self
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Expunge(u) => Some(*u),
                Op::Flags(..) => None,
            })
            .collect();
        let mut renumbered: HashSet<u32> = HashSet::new();
        // (index of the save, in new/, its file name there): paths are made when moved
        let mut to_move: Vec<(usize, bool, Vec<u8>)> = Vec::new();
        let result = (|| -> Result<()> {
            for (i, (s, letters)) in self.saves.iter().zip(&save_letters).enumerate() {
                toucher.tick();
                if let Some(old) =
                    self.same_file_expunged(s, &list, &st.scan, &expunging, &renumbered)
                {
                    let idx = list.find_uid(old).ok_or(Error::MailNotFound(Uid(old)))?;
                    let mut rec = list.records.remove(idx);
                    st.expunged_guids
                        .insert(old, mailsupport::sha1::guid_128(rec.guid()));
                    let uid = take_uid(&mut list, s.uid, &paths.uidlist())?;
                    if s.uid.is_some() && !s.flags.contains(Flags::RECENT) {
                        non_recent.insert(uid);
                    }
                    rec.uid = uid;
                    // The message at its new UID has the POP3 state it was saved with, as a
                    // copy would; a record that already says the same (an empty `P` for a
                    // UIDL that is the base name) is left as it is.
                    let (kept, bad_order) = record_pop3(&rec);
                    if kept != s.pop3 || bad_order.is_some() {
                        rec.set_pop3(&s.pop3.uidl, s.pop3.order);
                    }
                    let base = rec.base().to_vec();
                    list.records.push(rec);
                    recreate = true;
                    renumbered.insert(old);
                    let update = FlagUpdate {
                        op: FlagOp::Replace,
                        flags: Flags(s.flags.0 & !Flags::RECENT.0),
                        keywords: s.keywords.clone(),
                    };
                    if self.rename_flags(&mut st.scan, &kwmap, &base, &update)? {
                        cur_changed = true;
                    }
                    let _ = fs::remove_file(paths.tmp().join(&s.tmp_name));
                    saved.push(Uid(uid));
                    continue;
                }
                let sized = |base: &str| format!("{base},S={},W={}", s.size, s.vsize);
                let (base, g_field): (Vec<u8>, Option<Vec<u8>>) = match &s.guid {
                    Some(g) => {
                        let g = g.as_bytes();
                        let fits = guid_usable_as_base(g)
                            && filename::size_field(g, EXTRA_FILE_SIZE) == Some(s.size)
                            && filename::size_field(g, EXTRA_VIRTUAL_SIZE) == Some(s.vsize)
                            && !listed.contains(g)
                            // every name this commit gave is in the scan too
                            && !st.scan.files.contains_key(g);
                        if fits {
                            (g.to_vec(), None)
                        } else {
                            (sized(&filename::generate()).into_bytes(), Some(g.to_vec()))
                        }
                    }
                    None => (sized(&s.tmp_name).into_bytes(), None),
                };
                let system = Flags(s.flags.0 & !Flags::RECENT.0);
                let in_new = system.is_empty() && letters.is_empty();
                let fname = if in_new {
                    base.clone()
                } else {
                    filename::set_flags(&base, system, letters)
                };
                to_move.push((i, in_new, fname.clone()));
                if in_new {
                    new_changed = true;
                } else {
                    cur_changed = true;
                }
                let uid = take_uid(&mut list, s.uid, &paths.uidlist())?;
                // maildir_save_add: a save that asks for a UID is \Recent only when asked.
                if s.uid.is_some() && !s.flags.contains(Flags::RECENT) {
                    non_recent.insert(uid);
                }
                let mut rec = UidRecord::new(uid, base.clone());
                if let Some(g) = g_field {
                    rec.set_ext(uidlist::EXT_GUID, Some(g));
                }
                // maildir-save.c maildir_save_sync_uidlist: `P` and `O` after `G`.
                rec.set_pop3(&s.pop3.uidl, s.pop3.order);
                rec.set_ext(SAVE_DATE_KEY, Some(s.saved_date.to_string().into_bytes()));
                list.records.push(rec);
                st.scan.files.insert(Found::new(in_new, fname.into()));
                saved.push(Uid(uid));
            }
            Ok(())
        })();
        result?;
        // The uidlist first, with the new records (and the GUIDs a file name can't carry,
        // `G`), then the files into place: a run killed in between leaves records whose
        // files never appeared (dropped later, as after any expunge), never a visible file
        // without its record — which would come back as a new message with a new GUID.
        let given = list.records[first_new..].iter().map(|r| r.uid).collect();
        if recreate || list.records.len() > first_new {
            write_uidlist(
                &paths,
                &mut list,
                st.appendable,
                first_new,
                recreate,
                &st.scan.files,
                None,
            )?;
        }
        let place =
            |(_, in_new, fname): &(usize, bool, Vec<u8>)| paths.sub(*in_new).join(os(fname));
        for (done, m) in to_move.iter().enumerate() {
            let src = paths.tmp().join(&self.saves[m.0].tmp_name);
            if let Err(e) = fs::rename(&src, place(m)) {
                // Nobody has seen these files (we hold the lock): take them back; their
                // records name files that don't exist.
                for moved in &to_move[..done] {
                    let _ = fs::remove_file(place(moved));
                }
                return Err(Error::io("rename", &src, e));
            }
        }
        self.saves.clear();

        // Flag changes (rename) and expunges (unlink) of existing messages.
        let flag_uids: HashSet<u32> = self
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Flags(uid, _) => Some(*uid),
                Op::Expunge(_) => None,
            })
            .collect();
        for op in std::mem::take(&mut self.ops) {
            toucher.tick();
            let uid = match &op {
                Op::Flags(u, _) | Op::Expunge(u) => *u,
            };
            if renumbered.contains(&uid) {
                // moved to its new UID above: its file stays
                continue;
            }
            let Some(idx) = list.find_uid(uid) else {
                continue;
            };
            let base = list.records[idx].base().to_vec();
            match op {
                Op::Expunge(_) => {
                    let guid = mailsupport::sha1::guid_128(list.records[idx].guid());
                    if self.expunge_file(&mut st.scan, &base)? {
                        cur_changed = true;
                        st.expunged_guids.insert(uid, guid);
                    }
                }
                Op::Flags(_, update) => {
                    if self.rename_flags(&mut st.scan, &kwmap, &base, &update)? {
                        cur_changed = true;
                    }
                }
            }
        }
        if new_changed {
            fsync_dir(&paths.sub(true))?;
        }
        if cur_changed {
            fsync_dir(&paths.sub(false))?;
        }
        let result = CommitResult {
            saved,
            uid_validity: list.uid_validity,
        };
        st.list = Some(list);
        st.keywords = kwmap;
        Ok(Committed {
            result,
            st,
            base,
            given,
            non_recent,
            own: OwnChanges {
                flag_uids,
                by_sync: self.by_sync,
            },
        })
    }

    /// The UID of a message this transaction expunges whose file holds exactly the bytes
    /// of save `s` under the GUID `s` is saved with (not one already moved).
    fn same_file_expunged(
        &self,
        s: &PendingSave,
        list: &UidList,
        scan: &Scan,
        expunging: &HashSet<u32>,
        moved: &HashSet<u32>,
    ) -> Option<u32> {
        let guid = s.guid.as_ref()?;
        let paths = &self.mbox.paths;
        let rec = list.records.iter().find(|r| {
            expunging.contains(&r.uid) && !moved.contains(&r.uid) && r.guid() == guid.as_bytes()
        })?;
        let found = scan.files.get(rec.base())?;
        let old_path = paths.sub(found.in_new).join(os(&found.fname));
        let new_path = paths.tmp().join(&s.tmp_name);
        same_bytes(&old_path, &new_path).then_some(rec.uid)
    }

    /// Unlinks a message file (maildir_expunge); a file renamed meanwhile is found again.
    fn expunge_file(&self, scan: &mut Scan, base: &[u8]) -> Result<bool> {
        let paths = &self.mbox.paths;
        let mut current = scan.files.get(base).cloned();
        for _ in 0..RESYNC_RETRY_COUNT {
            let Some(f) = current else {
                return Ok(false);
            };
            let path = paths.sub(f.in_new).join(os(&f.fname));
            match fs::remove_file(&path) {
                Ok(()) => {
                    scan.files.remove(base);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    current = find_file(paths, base)?;
                }
                Err(e) => return Err(Error::io("unlink", &path, e)),
            }
        }
        Ok(false)
    }

    /// Applies a flag update by renaming the file (maildir_sync_flags); the file stays in its
    /// directory. On ENOENT the file is looked for again, as Dovecot resyncs and retries.
    fn rename_flags(
        &self,
        scan: &mut Scan,
        kwmap: &KeywordMap,
        base: &[u8],
        update: &FlagUpdate,
    ) -> Result<bool> {
        let paths = &self.mbox.paths;
        let mut current = scan.files.get(base).cloned();
        for _ in 0..RESYNC_RETRY_COUNT {
            let Some(f) = current else {
                return Ok(false);
            };
            let mut flags = f.flags();
            let mut keywords: Vec<Keyword> = f
                .letters()
                .filter_map(|l| kwmap.keyword_for_letter(l))
                .collect();
            update.apply(&mut flags, &mut keywords);
            let new_letters: Vec<u8> = keywords
                .iter()
                .filter_map(|k| kwmap.letter_for(k.as_bytes()))
                .collect();
            let system = Flags(flags.0 & !Flags::RECENT.0);
            let new_name = filename::set_flags(&f.fname, system, &new_letters);
            if *new_name == *f.fname {
                return Ok(false);
            }
            let dir = paths.sub(f.in_new);
            let (src, dest) = (dir.join(os(&f.fname)), dir.join(os(&new_name)));
            match fs::rename(&src, &dest) {
                Ok(()) => {
                    scan.files.insert(Found::new(f.in_new, new_name.into()));
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    current = find_file(paths, base)?;
                }
                Err(e) => return Err(Error::io("rename", &src, e)),
            }
        }
        warn(&format!(
            "{}: filename keeps changing for {}",
            paths.dir.display(),
            show(base)
        ));
        Ok(false)
    }
}

impl Transaction for MaildirTransaction<'_> {
    fn save(&mut self, mail: NewMail, body: &mut dyn Read) -> Result<()> {
        check_keywords(&mail.keywords)?;
        if let Some(g) = &mail.guid {
            check_guid(g)?;
        }
        let mut pop3 = mail.pop3;
        if !pop3.uidl.is_empty() && !uidlist::pop3_uidl_storable(&pop3.uidl) {
            // A uidlist field ends at a space and the line at LF (maildir-uidlist.c
            // maildir_uidlist_read_extended): such a UIDL would break the record. The message
            // is saved without it.
            warn(&format!(
                "{}: POP3 UIDL \"{}\" has a space, control or non-ASCII byte and can't be \
                 kept in {UIDLIST_NAME}; saving the message without it",
                self.mbox.paths.dir.display(),
                pop3.uidl.escape_ascii()
            ));
            pop3.uidl = Vec::new();
        }
        let tmp = self.mbox.paths.tmp();
        let mode = *self
            .file_mode
            .get_or_insert_with(|| file_mode(&self.mbox.paths.dir));
        // maildir_create_tmp: a unique name, O_EXCL in case the clock went backwards; tmp/
        // made (once) when it is missing.
        let mut tmp_made = false;
        let (name, mut file) = loop {
            let name = filename::generate();
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(tmp.join(&name))
            {
                Ok(f) => break (name, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !tmp_made => {
                    mkdir(&tmp, dir_mode(&self.mbox.paths.dir))
                        .map_err(|e| Error::io("mkdir", &tmp, e))?;
                    tmp_made = true;
                }
                Err(e) => return Err(Error::io("open", tmp.join(&name), e)),
            }
        };
        let path = tmp.join(&name);
        // maildir-save.c: every saved message goes through i_stream_create_lf() (or _crlf()).
        let mut body = LineEndingReader::new(body, self.mbox.line_endings);
        let result = (|| -> io::Result<(u64, u64)> {
            let mut buf = vec![0u8; 64 * 1024];
            let (mut size, mut vsize) = (0u64, VsizeCounter::default());
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                vsize.update(&buf[..n]);
                size += n as u64;
                file.write_all(&buf[..n])?;
            }
            // made durable at commit, with the transaction's other saves (mailsupport::durable)
            // maildir_save_finish_received_date: the received date is the file's mtime.
            let now = SystemTime::now();
            let mut times = FileTimes::new().set_accessed(now);
            if let Some(r) = mail.received_date {
                times = times.set_modified(system_time(r));
            }
            file.set_times(times)?;
            Ok((size, vsize.total()))
        })();
        let (size, vsize) = match result {
            Ok(v) => v,
            Err(e) => {
                drop(file);
                let _ = fs::remove_file(&path);
                return Err(Error::io("write", &path, e));
            }
        };
        self.saves.push(PendingSave {
            tmp_name: name,
            size,
            vsize,
            flags: mail.flags,
            keywords: dedup_keywords(&mail.keywords),
            guid: mail.guid,
            uid: mail.uid.map(|u| u.0),
            saved_date: mail
                .saved_date
                .unwrap_or_else(|| unix_secs(SystemTime::now())),
            pop3,
        });
        Ok(())
    }

    fn update_flags(&mut self, uid: Uid, update: &FlagUpdate) -> Result<()> {
        if self.mbox.mail_index(uid.0).is_none() {
            return Err(Error::MailNotFound(uid));
        }
        check_keywords(&update.keywords)?;
        let mut update = update.clone();
        update.keywords = dedup_keywords(&update.keywords);
        self.ops.push(Op::Flags(uid.0, update));
        Ok(())
    }

    fn expunge(&mut self, uid: Uid) -> Result<()> {
        if self.mbox.mail_index(uid.0).is_none() {
            return Err(Error::MailNotFound(uid));
        }
        self.ops.push(Op::Expunge(uid.0));
        Ok(())
    }

    fn mark_as_sync(&mut self) {
        self.by_sync = true;
    }

    fn commit(mut self: Box<Self>) -> Result<CommitResult> {
        self.finished = true;
        if self.saves.is_empty() && self.ops.is_empty() {
            return Ok(CommitResult {
                saved: Vec::new(),
                uid_validity: self.mbox.view.uid_validity,
            });
        }
        // The view is rebuilt below from what is read under the lock: the old one goes
        // first, so the two are never held at once (the peak of a big backup).
        self.mbox.view.mails = Vec::new();
        self.mbox.view_lost = true;
        let result = (|| -> Result<(CommitResult, DiskState)> {
            self.mbox.ensure_dirs()?;
            let lock = lock_uidlist(&self.mbox.paths)?;
            // The index gets the EXTERNAL transaction for these changes under the same
            // uidlist lock (files first, then uidlist, then log: FORMAT.md §6.5).
            let result = self.commit_locked(&lock).and_then(|mut c| {
                self.mbox.index = self.mbox.index_sync_locked(
                    &mut c.st,
                    c.base,
                    &c.given,
                    &c.non_recent,
                    &c.own,
                )?;
                Ok((c.result, c.st))
            });
            let released = lock.release();
            let r = result?;
            released.map_err(|e| Error::io("unlink", self.mbox.paths.uidlist(), e))?;
            Ok(r)
        })();
        self.remove_tmp_files();
        let (r, st) = match result {
            Ok(r) => r,
            Err(e) => {
                // the next access reads the view again, as the failed commit left the files
                self.mbox.stamp = None;
                return Err(e);
            }
        };
        // The files as read under the lock plus this commit's changes are the new view
        // (not read a second time); the next sync() reads the directories again, as a
        // delivery may have landed in new/ meanwhile.
        self.mbox.quick = None;
        self.mbox.stamp = None;
        self.mbox.build_view(st)?;
        Ok(r)
    }

    fn rollback(mut self: Box<Self>) {
        self.finished = true;
        self.remove_tmp_files();
    }
}

impl Drop for MaildirTransaction<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.remove_tmp_files();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many times this test's thread read a mailbox's files.
    fn readings() -> usize {
        READINGS.with(|r| r.get())
    }

    /// A view holds one `MailFile` per message (170,000 on the bench's large store):
    /// dates that most views never take must not make each of them bigger.
    #[test]
    fn a_view_message_stays_compact() {
        assert!(
            std::mem::size_of::<MailFile>() <= 104,
            "MailFile is {} bytes",
            std::mem::size_of::<MailFile>()
        );
    }

    #[test]
    fn a_directory_counts_as_settled_only_well_after_its_last_possible_change() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_000_000, 500_000_000);
        let ms = |n: u64| Duration::from_millis(n);
        let split = |t: SystemTime| {
            let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
            (d.as_secs() as i64, i64::from(d.subsec_nanos()))
        };
        let (s, n) = split(at - ms(50));
        assert!(!mtime_settled(s, n, at), "changed 50 ms before");
        let (s, n) = split(at - ms(200));
        assert!(mtime_settled(s, n, at), "changed 200 ms before");
        let (s, n) = split(at + ms(200));
        assert!(
            !mtime_settled(s, n, at),
            "changed in the future (clock skew)"
        );
        // whole seconds: the change may have been up to a second after the mtime shown
        assert!(
            !mtime_settled(1_000_000, 0, at),
            "shown 500 ms before: the change may be up to 500 ms later than now"
        );
        assert!(
            !mtime_settled(999_999, 0, at - ms(450)),
            "shown 1.05 s before: the change may have been 50 ms ago"
        );
        assert!(
            mtime_settled(999_999, 0, at),
            "shown 1.5 s before: at least 500 ms ago"
        );
    }

    /// The file system's clock, read by a file made in `tmp/` and removed at once: past a
    /// time before the file's creation, not past one after it; no answer without `tmp/`.
    #[test]
    fn the_file_system_clock_is_read_by_a_file_made_in_tmp() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        fs::write(d.path().join("marker"), b"").unwrap();
        let md = fs::metadata(d.path().join("marker")).unwrap();
        let (secs, nsecs) = (md.mtime(), md.mtime_nsec());
        let now = fs_clock_now(&tmp).unwrap();
        assert!(now > (secs - 1, nsecs));
        assert!(now < (secs + 10, nsecs), "a time to come");
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            0,
            "the probe is removed"
        );
        fs::remove_dir(&tmp).unwrap();
        assert_eq!(fs_clock_now(&tmp), None, "no tmp/");
    }

    /// A mailbox read soon after a change — within RACY_MTIME by this machine's clock,
    /// but after the file system's clock has moved past the change — is trusted: the index
    /// records the reading, and the next open doesn't read the files again. Within one
    /// tick of that clock it is not.
    #[test]
    fn a_reading_soon_after_a_change_is_trusted_once_the_file_system_clock_moved_on() {
        for same_tick in [false, true] {
            NO_CLOCK_PROBE.with(|n| n.set(same_tick));
            let (_d, layout) = maildir_with_one_message();
            // longer than a tick of any file system clock, shorter than RACY_MTIME
            std::thread::sleep(Duration::from_millis(30));
            let start = readings();
            drop(MaildirMailbox::open(&layout, "INBOX").unwrap());
            let mut mb = MaildirMailbox::open(&layout, "INBOX").unwrap();
            assert_eq!(mb.counters().unwrap().messages, 1);
            let expected = if same_tick { 2 } else { 1 };
            assert_eq!(readings() - start, expected, "same tick: {same_tick}");
        }
        NO_CLOCK_PROBE.with(|n| n.set(false));
    }

    /// The layout of an empty Maildir (`cur/`, `new/`, `tmp/`) made at `dir`.
    fn empty_maildir(dir: &Path) -> Layout {
        let loc =
            mailstore::Location::parse(&format!("maildir:{}", dir.display()), Some(dir)).unwrap();
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        Layout::from_location(&loc, &Default::default()).unwrap()
    }

    /// An empty Maildir in a new temporary directory, then one message put into its
    /// `cur/` (as a delivery agent may).
    /// [`maildir_with_one_message`], opened once (it has its UID), then files 2 to 4
    /// added under the names `name` gives (relative to the Maildir).
    fn synced_then_three_more(name: impl Fn(u32) -> String) -> (tempfile::TempDir, Layout) {
        let (d, layout) = maildir_with_one_message();
        drop(MaildirMailbox::open(&layout, "INBOX").unwrap());
        for i in 2..=4 {
            fs::write(d.path().join(name(i)), b"Subject: y\n\nbody\n").unwrap();
        }
        (d, layout)
    }

    fn maildir_with_one_message() -> (tempfile::TempDir, Layout) {
        let d = tempfile::tempdir().unwrap();
        let layout = empty_maildir(d.path());
        fs::write(
            d.path().join("cur/1.M1P1.host:2,S"),
            b"Subject: x\n\nbody\n",
        )
        .unwrap();
        (d, layout)
    }

    /// A sync that writes the index compares the files with it once: the comparison made
    /// before the log lock stands under it when nothing was logged in between.
    #[test]
    fn an_index_sync_compares_the_files_once_when_nothing_was_logged_meanwhile() {
        let (d, layout) = maildir_with_one_message();
        let mut mb = MaildirMailbox::open(&layout, "INBOX").unwrap();
        fs::write(d.path().join("new/2.M2P1.host"), b"Subject: y\n\nbody\n").unwrap();
        fs::rename(
            d.path().join("cur/1.M1P1.host:2,S"),
            d.path().join("cur/1.M1P1.host:2,FS"),
        )
        .unwrap();
        let start = COMPARISONS.with(|c| c.get());
        mb.sync_impl().unwrap();
        assert_eq!(COMPARISONS.with(|c| c.get()) - start, 1);
        let flags: Vec<_> = mb.view.mails.iter().map(|m| (m.uid, m.flags)).collect();
        assert_eq!(flags.len(), 2);
        assert!(flags[0].1.contains(Flags::FLAGGED), "{flags:?}");
        // what the index logged is what a fresh reading of it shows
        let view = mailsync_index::View::open(d.path(), index_file::INDEX_PREFIX).unwrap();
        let logged: Vec<_> = view
            .messages()
            .map(|m| (m.uid(), m.system_flags()))
            .collect();
        assert_eq!(logged.len(), 2);
        assert!(logged[0].1.contains(Flags::FLAGGED), "{logged:?}");
    }

    /// A large mailbox read under the uidlist lock has its directories read by a second
    /// thread while the uidlist is parsed (the names passed back in batches, the set built
    /// by the reading thread), and reads the same as one thread does; without
    /// the lock (a read-only mailbox) the uidlist is read before the directories, in one
    /// thread, so a delivery in between can't look like an expunge.
    #[test]
    fn a_large_locked_reading_scans_the_directories_while_it_parses_the_uidlist() {
        let d = tempfile::tempdir().unwrap();
        let layout = empty_maildir(d.path());
        let count = 2_500;
        for i in 0..count {
            let name = format!("cur/1700000000.M{i}P4242.bench.example,S=17:2,S");
            fs::write(d.path().join(name), b"Subject: x\n\nbody\n").unwrap();
        }
        // two unlisted: one in new/, one in cur/
        drop(MaildirMailbox::open(&layout, "INBOX").unwrap());
        fs::write(d.path().join("new/1800000000.M1P1.host"), b"x\n").unwrap();
        fs::write(d.path().join("cur/1800000000.M2P1.host:2,"), b"x\n").unwrap();
        let paths = MaildirMailbox::open(&layout, "INBOX")
            .unwrap()
            .paths
            .clone();
        assert!(fs::metadata(paths.uidlist()).unwrap().len() >= CONCURRENT_SCAN_MIN_UIDLIST);
        let start = CONCURRENT_SCANS.with(|c| c.get());
        let alone = read_disk(&paths, false).unwrap();
        assert_eq!(
            CONCURRENT_SCANS.with(|c| c.get()),
            start,
            "unlocked: one thread"
        );
        let _lock = lock_uidlist(&paths).unwrap();
        let added = FILES_ADDED.with(|n| n.get());
        let both = read_disk(&paths, true).unwrap();
        assert_eq!(CONCURRENT_SCANS.with(|c| c.get()), start + 1, "locked: two");
        // the second thread only read the names (in more than one batch): this thread
        // built the set
        assert!(count * 40 > READDIR_BUFFER);
        assert_eq!(FILES_ADDED.with(|n| n.get()), added + count + 2);
        let records = |st: &DiskState| -> Vec<(u32, Vec<u8>)> {
            let list = st.list.as_ref().unwrap();
            list.records
                .iter()
                .map(|r| (r.uid, r.base().to_vec()))
                .collect()
        };
        let files = |st: &DiskState| -> Vec<(bool, Vec<u8>)> {
            let mut v: Vec<_> = st
                .scan
                .files
                .values()
                .map(|f| (f.in_new, f.fname.to_vec()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(records(&both).len(), count + 2);
        assert_eq!(records(&both), records(&alone));
        assert_eq!(files(&both).len(), count + 2);
        assert_eq!(files(&both), files(&alone));
        assert!(files(&both).contains(&(true, b"1800000000.M1P1.host".to_vec())));
        assert_eq!(both.appendable, alone.appendable);
    }

    /// A sync that gives UIDs marks the listed files once: the marks made to see whether
    /// the uidlist must be written serve to find the unlisted files, and the count of
    /// live records for the append-or-rewrite choice comes from them too.
    #[test]
    fn a_sync_giving_uids_marks_the_listed_files_once() {
        let (d, layout) = synced_then_three_more(|i| format!("new/{i}.M{i}P1.host"));
        let before = fs::read_to_string(d.path().join("dovecot-uidlist")).unwrap();
        let start = MARKINGS.with(|m| m.get());
        let mb = MaildirMailbox::open(&layout, "INBOX").unwrap();
        assert_eq!(
            MARKINGS.with(|m| m.get()) - start,
            1,
            "marked more than once"
        );
        assert_eq!(mb.view.mails.len(), 4);
        let after = fs::read_to_string(d.path().join("dovecot-uidlist")).unwrap();
        assert!(
            after.starts_with(&before),
            "appended: {before:?} then {after:?}"
        );
        assert_eq!(after.lines().count(), 5, "{after}");
    }

    /// A sync that gives UIDs and writes the index pairs records with files by the marks
    /// the needs-write check made, in the comparison with the index and in the view: no
    /// base is looked up again. The view is the one a lookup per record gives.
    #[test]
    fn a_sync_pairs_records_with_files_by_their_marks() {
        let (_d, layout) = synced_then_three_more(|i| format!("cur/{i}.M{i}P1.host:2,S"));
        let start = SLOT_WALKS.with(|w| w.get());
        let mb = MaildirMailbox::open(&layout, "INBOX").unwrap();
        // the index comparison and the view
        assert_eq!(SLOT_WALKS.with(|w| w.get()) - start, 2);
        let view: Vec<_> = mb
            .view
            .mails
            .iter()
            .map(|m| (m.uid, m.record.base().to_vec(), m.flags))
            .collect();
        assert_eq!(view.len(), 4);
        assert!(
            view[1..].iter().all(|m| m.2.contains(Flags::SEEN)),
            "{view:?}"
        );

        // the same files read again, paired by lookups: the same view
        let paths = mb.paths.clone();
        drop(mb);
        let st = read_disk(&paths, false).unwrap();
        let list = st.list.as_ref().unwrap();
        assert!(!st.slots_valid(list));
        let looked_up: Vec<_> = st
            .files_by_record(list)
            .iter()
            .map(|f| f.map(|f| f.fname.to_vec()))
            .collect();
        st.mark_listed(list);
        assert!(st.slots_valid(list));
        let walked: Vec<_> = st
            .files_by_record(list)
            .iter()
            .map(|f| f.map(|f| f.fname.to_vec()))
            .collect();
        assert_eq!(walked, looked_up);
        assert_eq!(walked.iter().flatten().count(), 4);
    }

    /// Marks stand only for the list and the set they were made for: a record given
    /// another UID, a record dropped, or a file taken out or put in makes them stale,
    /// and the files are then looked up by base.
    #[test]
    fn marks_made_for_another_list_or_set_are_not_used() {
        let mut list = UidList::new(1, MailboxGuid::default());
        list.records.push(UidRecord::new(1, b"1.a.h".to_vec()));
        list.records.push(UidRecord::new(2, b"2.b.h".to_vec()));
        let mut scan = Scan::default();
        scan.files
            .insert(Found::new(false, b"1.a.h:2,S".to_vec().into()));
        scan.files
            .insert(Found::new(true, b"2.b.h".to_vec().into()));
        let mut st = DiskState::new(Some(list.clone()), true, KeywordMap::default(), scan);
        st.mark_listed(&list);
        assert!(st.slots_valid(&list));

        let mut moved = list.clone();
        let rec = moved.records.remove(0);
        moved.records.push(UidRecord::new(3, rec.base().to_vec()));
        assert!(!st.slots_valid(&moved));
        let names: Vec<_> = st
            .files_by_record(&moved)
            .iter()
            .map(|f| f.map(|f| f.fname.to_vec()))
            .collect();
        assert_eq!(
            names,
            [Some(b"2.b.h".to_vec()), Some(b"1.a.h:2,S".to_vec())]
        );

        let mut fewer = list.clone();
        fewer.records.truncate(1);
        assert!(!st.slots_valid(&fewer));

        st.scan.files.remove(b"2.b.h");
        assert!(!st.slots_valid(&list));
        assert_eq!(st.files_by_record(&list)[1].map(|f| f.base()), None);
    }

    /// As Dovecot's maildir_sync_context, a sync locks the uidlist before it reads the
    /// files, and reads them once: also when they had just changed (a delivery within
    /// RACY_MTIME, which a reading made before the lock couldn't vouch for) and it gives
    /// UIDs.
    #[test]
    fn a_sync_reads_the_files_once_under_the_uidlist_lock() {
        let (d, layout) = maildir_with_one_message();
        let start = readings();
        let mb = MaildirMailbox::open(&layout, "INBOX").unwrap();
        assert_eq!(readings() - start, 1);
        assert_eq!(mb.view.mails.len(), 1);
        let list = fs::read_to_string(d.path().join("dovecot-uidlist")).unwrap();
        assert!(list.lines().any(|l| l.starts_with("1 ")), "{list}");
        assert!(!d.path().join("dovecot-uidlist.lock").exists());
    }

    /// A mailbox read just after a delivery (the directories not settled): a `sync()`
    /// within [`DELAYED_REFRESH`] that finds nothing visibly changed keeps that reading,
    /// as Dovecot's delayed refresh does; the first one after it reads again, and a
    /// change seen in the stamp is read at once.
    #[test]
    fn a_scan_just_after_a_delivery_stands_for_the_delayed_refresh() {
        // as when the delivery and the scan fall within one tick of the file system clock
        NO_CLOCK_PROBE.with(|n| n.set(true));
        let d = tempfile::tempdir().unwrap();
        let layout = empty_maildir(d.path());
        // into cur/, as a delivery agent may: a sync moves nothing then
        let deliver = |name: &str| {
            fs::write(d.path().join("cur").join(name), b"Subject: x\n\nbody\n").unwrap()
        };
        deliver("1.M1P1.host:2,");
        let start = std::time::Instant::now();
        let mut mb = MaildirMailbox::open(&layout, "INBOX").unwrap();
        mb.load().unwrap();
        let first = readings();
        assert!(first >= 1);
        let racy = matches!(mb.stamp, Some((_, Some(_))));
        // the first reading gave a UID and wrote the uidlist and the index under the lock;
        // its own write doesn't make the next sync read again
        mb.sync_impl().unwrap();
        mb.sync_impl().unwrap();
        if start.elapsed() < DELAYED_REFRESH {
            // the scan ran within RACY_MTIME of the delivery unless this machine stalled
            // for that long; then it was trusted outright and read nothing again either
            assert_eq!(readings(), first, "read again within the delayed refresh");
        }
        // Nor once the directories have settled: a reading now would only move the next
        // run's reading into this one (the index records the racy reading as unread),
        // and at every later sync() of a long run on a big mailbox it would be paid
        // again after each of the run's own changes.
        std::thread::sleep(RACY_MTIME + std::time::Duration::from_millis(50));
        mb.sync_impl().unwrap();
        if start.elapsed() < DELAYED_REFRESH {
            assert_eq!(readings(), first, "read again once settled");
        }
        std::thread::sleep(DELAYED_REFRESH);
        mb.sync_impl().unwrap();
        let expected = if racy { first + 1 } else { first };
        assert_eq!(
            readings(),
            expected,
            "read again once the second has passed"
        );
        mb.sync_impl().unwrap();
        assert_eq!(readings(), expected, "settled now: trusted");
        deliver("2.M2P1.host:2,S");
        mb.sync_impl().unwrap();
        assert_eq!(readings(), expected + 1, "a delivery changes the stamp");
        assert_eq!(mb.view.mails.len(), 2);
    }

    /// A transaction looks at `tmp/` once, at its first save; when someone removes `tmp/`
    /// after that, the next save makes it again (maildir_create_tmp) instead of failing.
    #[test]
    fn a_save_makes_tmp_again_when_it_was_removed_after_the_first_save() {
        let d = tempfile::tempdir().unwrap();
        let layout = empty_maildir(d.path());
        let mut mb = MaildirMailbox::open(&layout, "INBOX").unwrap();
        let mut t = mb.begin().unwrap();
        t.save(NewMail::default(), &mut &b"Subject: 1\n\none\n"[..])
            .unwrap();
        fs::remove_dir_all(d.path().join("tmp")).unwrap();
        t.save(NewMail::default(), &mut &b"Subject: 2\n\ntwo\n"[..])
            .unwrap();
        let in_tmp: Vec<_> = fs::read_dir(d.path().join("tmp")).unwrap().collect();
        assert_eq!(in_tmp.len(), 1, "the second message waits in the new tmp/");
        t.rollback();
    }

    #[test]
    fn stale_tmp_files_are_deleted_as_dovecot_does() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        fs::write(tmp.join("old"), b"x").unwrap();
        // Right now nothing is old enough and tmp/ was just scanned (atime is now).
        clean_tmp(&tmp, SystemTime::now());
        assert!(tmp.join("old").exists());
        // Eight days later the scan interval has passed and the file's ctime is > 36 h old.
        let later = SystemTime::now() + Duration::from_secs(8 * 24 * 3600);
        clean_tmp(&tmp, later);
        assert!(!tmp.join("old").exists());
        // The scan set tmp/'s atime to that time, so another file isn't looked at again.
        fs::write(tmp.join("new"), b"x").unwrap();
        clean_tmp(&tmp, later + Duration::from_secs(3 * 24 * 3600));
        assert!(tmp.join("new").exists());
    }

    #[test]
    fn scan_skips_dot_files_dirs_and_broken_names() {
        let d = tempfile::tempdir().unwrap();
        for s in ["cur", "new", "tmp"] {
            fs::create_dir(d.path().join(s)).unwrap();
        }
        fs::write(d.path().join("cur/.hidden"), b"").unwrap();
        fs::write(d.path().join("cur/:2,S"), b"").unwrap();
        fs::write(d.path().join("cur/a\nb"), b"").unwrap();
        fs::create_dir(d.path().join("cur/subdir")).unwrap();
        fs::write(d.path().join("cur/1.M1P1.h:2,S"), b"").unwrap();
        fs::write(d.path().join("new/1.M1P1.h"), b"").unwrap();
        fs::write(d.path().join("cur/2.M1P1.h:2,S"), b"").unwrap();
        fs::write(d.path().join("cur/2.M1P1.h:2,F"), b"").unwrap();
        let paths = Paths {
            dir: d.path().to_path_buf(),
            control: d.path().to_path_buf(),
        };
        let scan = scan_dirs(&paths).unwrap();
        assert_eq!(scan.files.len(), 2);
        assert!(
            !scan.files.get(b"1.M1P1.h").unwrap().in_new,
            "cur/ wins over new/"
        );
        assert_eq!(scan.duplicates.len(), 1);
    }

    /// A directory bigger than one `getdents64` buffer is read whole, every name once and
    /// byte for byte (non-UTF-8 too), whatever the expected count.
    #[test]
    fn scan_reads_a_directory_larger_than_its_buffer() {
        let d = tempfile::tempdir().unwrap();
        for s in ["cur", "new", "tmp"] {
            fs::create_dir(d.path().join(s)).unwrap();
        }
        let names: Vec<Vec<u8>> = (0..3_000)
            .map(|i| format!("1700000000.M{i}P4242.a-rather-long-host-name,S=1:2,S").into_bytes())
            .chain([b"1.M1P1.h\xff\xfe:2,".to_vec()])
            .collect();
        for n in &names {
            fs::write(d.path().join("cur").join(os(n)), b"").unwrap();
        }
        let paths = Paths {
            dir: d.path().to_path_buf(),
            control: d.path().to_path_buf(),
        };
        for expected in [0, 10, 100_000] {
            let scan = scan_dirs_sized(&paths, expected).unwrap();
            let mut found: Vec<Vec<u8>> = scan.files.values().map(|f| f.fname.to_vec()).collect();
            found.sort();
            let mut want = names.clone();
            want.sort();
            assert!(found == want, "expected {expected}: {} names", found.len());
        }
    }

    /// The set counts the keyword letters of its files' names as they come and go.
    #[test]
    fn a_file_set_knows_the_keyword_letters_in_use() {
        let mut set = FileSet::default();
        let letters = |set: &FileSet| set.keyword_letters().collect::<Vec<u8>>();
        set.insert(Found::new(false, (*b"1.a.h:2,Sac").into()));
        set.insert(Found::new(false, (*b"2.b.h:2,Fc").into()));
        set.insert(Found::new(true, (*b"3.c.h").into()));
        assert_eq!(letters(&set), b"ac");
        // renamed: the old name's letters go, the new one's come
        set.insert(Found::new(false, (*b"1.a.h:2,Sd").into()));
        assert_eq!(letters(&set), b"cd");
        set.remove(b"2.b.h");
        assert_eq!(letters(&set), b"d");
        set.remove(b"9.none.h");
        set.remove(b"1.a.h");
        assert!(letters(&set).is_empty());
        // what a walk over the names finds
        for name in ["4.d.h:2,Fxy", "5.e.h:2,y,extra", "6.f.h:3,z"] {
            set.insert(Found::new(false, name.as_bytes().into()));
        }
        let mut walked: Vec<u8> = set
            .values()
            .flat_map(|f| filename::flag_chars(&f.fname).to_vec())
            .filter(u8::is_ascii_lowercase)
            .collect();
        walked.sort();
        walked.dedup();
        assert_eq!(letters(&set), walked);
    }

    #[test]
    fn a_found_file_keeps_its_base_and_suffix_apart() {
        let f = Found::new(false, (*b"1.M1P1.h,S=10:2,FS").into());
        assert_eq!(f.base(), b"1.M1P1.h,S=10");
        assert_eq!(NameSuffix::of(&f).as_bytes(), b":2,FS");
        let f = Found::new(true, (*b"2.M1P1.h").into());
        assert_eq!(f.base(), b"2.M1P1.h");
        assert_eq!(NameSuffix::of(&f).as_bytes(), b"");
    }

    #[test]
    fn unlisted_files_are_those_the_last_marked_uidlist_lacks() {
        let mut scan = Scan::default();
        for name in ["1.a.h:2,S", "2.b.h", "3.c.h:2,"] {
            scan.files
                .insert(Found::new(!name.contains(':'), name.as_bytes().into()));
        }
        let mut list = UidList::new(1, MailboxGuid::generate());
        list.records.push(UidRecord::new(1, b"1.a.h".to_vec()));
        list.records.push(UidRecord::new(2, b"3.c.h".to_vec()));
        list.records.push(UidRecord::new(3, b"9.gone.h".to_vec()));
        list.next_uid = 4;
        assert_eq!(mark_listed(&list, &scan), 2);
        assert!(!every_file_listed(&list, &scan));
        // marks follow the list they were last given
        let mut other = UidList::new(1, MailboxGuid::generate());
        other.records.push(UidRecord::new(1, b"2.b.h".to_vec()));
        assert_eq!(mark_listed(&other, &scan), 1);
        assert!(!scan.files.get(b"1.a.h").unwrap().listed());
        assert_eq!(
            assign_unlisted(&mut list, &scan, Path::new("dovecot-uidlist"), None).unwrap(),
            1
        );
        let last = list.records.last().unwrap();
        assert_eq!((last.uid, last.base()), (4, &b"2.b.h"[..]));
        assert!(every_file_listed(&list, &scan));
        assert_eq!(
            assign_unlisted(&mut list, &scan, Path::new("x"), None).unwrap(),
            0
        );
    }
}
