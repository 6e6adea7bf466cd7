//! The mbox store: `mbox:<root>[:INBOX=<file>][:INDEX=<dir>]` laid out as Dovecot's
//! mbox + fs mailbox list (mbox-storage.c, mailbox-list-fs.c): every mailbox is a file,
//! directories hold children and are \NoSelect, names are modified UTF-7 with `/` between
//! levels, the index directory of `<dir>/<name>` is `<dir>/.imap/<name>` (INBOX:
//! `<root>/.imap/INBOX`), subscriptions in `<root>/.subscriptions`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use mailstore::names;
use mailstore::{
    Error, Location, Mailbox, MailboxAttrs, MailboxGuid, MailboxInfo, NameChangeTimes, Result,
    SaveLineEndings, Store, StoreOptions,
};
use mailsupport::{mutf7, subscriptions};
use mailsync_index::format::mailbox_log::MailboxLogType;
use mailsync_index::mailbox_log;

use crate::mailbox::{MboxMailbox, Meta};

/// Name of the subscriptions file in the root (Dovecot's mbox default).
pub const SUBSCRIPTIONS: &str = ".subscriptions";
/// Index directory name under each directory of mailboxes.
pub const INDEX_DIR: &str = ".imap";

/// Paths of one mailbox.
#[derive(Clone, Debug)]
pub struct MailboxPaths {
    pub file: PathBuf,
    pub index_dir: PathBuf,
}

/// A Dovecot mbox mail location.
#[derive(Clone, Debug)]
pub struct MboxStore {
    /// The time its mailbox log records get (`Store::set_change_time`).
    change_clock: mailbox_log::ChangeClock,
    root: PathBuf,
    inbox: PathBuf,
    index_root: Option<PathBuf>,
    /// `CONTROL=` dir (else the root) + `SUBSCRIPTIONS=` name (else `.subscriptions`).
    subscriptions: PathBuf,
    sep: char,
    line_endings: SaveLineEndings,
}

impl MboxStore {
    pub fn open(location: &Location, opts: &StoreOptions) -> Result<MboxStore> {
        location.check_options(&["INBOX", "INDEX", "CONTROL", "LAYOUT", "SUBSCRIPTIONS"])?;
        if let Some(layout) = location.option("LAYOUT") {
            if !layout.eq_ignore_ascii_case("fs") {
                return Err(Error::Params(format!(
                    "mbox supports only LAYOUT=fs, not {layout}"
                )));
            }
        }
        let root = location.root.clone();
        let inbox = location
            .option("INBOX")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("INBOX"));
        let index_root = location
            .option("INDEX")
            .filter(|v| *v != "MEMORY")
            .map(PathBuf::from);
        let subscriptions = location
            .option("CONTROL")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.clone())
            .join(location.option("SUBSCRIPTIONS").unwrap_or(SUBSCRIPTIONS));
        Ok(MboxStore {
            change_clock: Default::default(),
            root,
            inbox,
            index_root,
            subscriptions,
            sep: opts.separator.unwrap_or('/'),
            line_endings: opts.save_line_endings.unwrap_or(SaveLineEndings::Lf),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn normalize(&self, name: &str) -> String {
        names::normalize_inbox(name, self.sep)
    }

    fn validate(&self, v: &str, create: bool) -> Result<()> {
        if create {
            names::validate_mailbox_name(v, self.sep)?;
        } else {
            names::validate_existing_mailbox_name(v, self.sep)?;
        }
        if v != "INBOX" {
            if self.sep != '/' && v.contains('/') {
                return Err(Error::invalid_name(
                    v,
                    "Character not allowed in mailbox name: '/'",
                ));
            }
            for level in v.split(self.sep) {
                let encoded = mutf7::encode(level);
                if encoded.starts_with('.') || encoded.ends_with(".lock") {
                    return Err(Error::invalid_name(
                        v,
                        "Name can't begin with '.' or end with '.lock' in mbox",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The storage-relative path of a (non-INBOX) mailbox: mUTF-7 levels joined by `/`.
    fn relative(&self, v: &str) -> PathBuf {
        v.split(self.sep).map(mutf7::encode).collect()
    }

    /// The mbox file and index directory of a validated, normalized name.
    pub fn paths(&self, v: &str) -> MailboxPaths {
        if v == "INBOX" {
            let index_base = self.index_root.clone().unwrap_or_else(|| self.root.clone());
            return MailboxPaths {
                file: self.inbox.clone(),
                index_dir: index_base.join(INDEX_DIR).join("INBOX"),
            };
        }
        let rel = self.relative(v);
        let file = self.root.join(&rel);
        let base = self.index_root.as_ref().unwrap_or(&self.root);
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let leaf = rel
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        MailboxPaths {
            file,
            index_dir: base.join(parent).join(INDEX_DIR).join(leaf),
        }
    }

    fn vname_of(&self, rel: &[String]) -> Option<String> {
        let mut levels = Vec::new();
        for l in rel {
            let v = mutf7::decode(l.as_bytes()).ok()?;
            if v.contains(self.sep) && self.sep != '/' {
                return None;
            }
            levels.push(v);
        }
        Some(levels.join(&self.sep.to_string()))
    }

    /// Walks the root: files are mailboxes, directories \NoSelect (true = selectable).
    fn scan(&self, dir: &Path, prefix: &mut Vec<String>, out: &mut BTreeMap<String, bool>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || name.ends_with(".lock") {
                continue;
            }
            let path = entry.path();
            if prefix.is_empty() && path == self.inbox {
                continue;
            }
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            prefix.push(name.to_string());
            if let Some(v) = self.vname_of(prefix) {
                if !names::is_inbox(&v) || prefix.len() > 1 {
                    out.insert(v, meta.is_file());
                }
            }
            if meta.is_dir() {
                self.scan(&path, prefix, out);
            }
            prefix.pop();
        }
    }

    fn existing_name(&self, name: &str) -> Result<String> {
        let v = self.normalize(name);
        self.validate(&v, false)?;
        Ok(v)
    }

    /// Where `dovecot.mailbox.log` lives: the list's index root, which for mbox is the
    /// `.imap` directory of the root (or of `INDEX=`) [dump: Dovecot 2.3.19.1 writes
    /// `~/mail/.imap/dovecot.mailbox.log`].
    fn mailbox_log_root(&self) -> PathBuf {
        self.index_root
            .as_ref()
            .unwrap_or(&self.root)
            .join(INDEX_DIR)
    }

    /// mailbox_list_add_change: appends a record to the mailbox log. The change itself is
    /// done: a failure here is only a warning, as in Dovecot.
    fn log_change(&self, kind: MailboxLogType, guid: [u8; 16]) {
        let root = self.mailbox_log_root();
        let result = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .and_then(|()| mailbox_log::append(&root, kind, guid, self.change_clock.time()));
        if let Err(e) = result {
            eprintln!(
                "mailsync: warning: write({}) failed: {e}",
                mailbox_log::path_in(&root).display()
            );
        }
    }

    /// The mailbox GUID mailsync or Dovecot keeps for a mailbox, without creating anything.
    fn listed_guid(&self, paths: &MailboxPaths) -> Option<MailboxGuid> {
        Meta::load(&paths.index_dir)
            .map(|m| m.mailbox_guid)
            .or_else(|| crate::mailbox::dovecot_mailbox_guid(&paths.index_dir))
    }

    fn mkdir_all(path: &Path) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| Error::io("mkdir", path, e))
    }

    /// Creates the mbox file (0 bytes, as Dovecot) and its index directory with a new
    /// UIDVALIDITY and GUID.
    fn create_file(&self, v: &str, guid: Option<MailboxGuid>) -> Result<()> {
        let paths = self.paths(v);
        if let Some(parent) = paths.file.parent() {
            Self::mkdir_all(parent)?;
        }
        let meta = Meta::new(guid.unwrap_or_else(MailboxGuid::generate));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&paths.file)
        {
            Ok(mut f) => {
                // Dovecot creates an empty file and keeps UIDVALIDITY in its index; with
                // no index to rely on, mailsync keeps it in the file from the start, in the
                // pseudo message Dovecot itself uses for that (so both report the same)
                use std::io::Write;
                let base = crate::writer::BaseHeader {
                    uid_validity: meta.uid_validity,
                    last_uid: 0,
                    keywords: &[],
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                f.write_all(&crate::writer::pseudo_message(&base, now))
                    .and_then(|()| f.sync_all())
                    .map_err(|e| Error::io("write", &paths.file, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::MailboxExists(v.to_string()))
            }
            Err(e) => return Err(Error::io("create", &paths.file, e)),
        }
        // a stale index of an earlier mailbox with this name must not be reused
        let _ = fs::remove_dir_all(&paths.index_dir);
        Self::mkdir_all(&paths.index_dir)?;
        seed_dovecot_index(&paths.index_dir, &meta);
        meta.save(&paths.index_dir)
    }
}

/// Creates Dovecot's index for a new mailbox with mailsync's UIDVALIDITY and mailbox GUID
/// (the `mbox` extension header: u64 sync_size, u32 sync_mtime, u8 dirty, 3 pad, 16-byte
/// mailbox GUID; record: u64 From_ offset, align 8 — mbox-storage.c), so Dovecot reports the
/// same mailbox GUID as mailsync instead of generating its own. sync_size/sync_mtime stay 0:
/// Dovecot's first look is a full sync. Best effort: without it Dovecot makes its own index.
fn seed_dovecot_index(index_dir: &Path, meta: &Meta) {
    let writer = mailsync_index::IndexWriter::open(index_dir, "dovecot.index");
    if writer.create(meta.uid_validity).is_err() {
        return;
    }
    let mut t = writer.begin().external(true);
    t.ext_intro("mbox", 32, 8, 8);
    t.ext_hdr_update("mbox", 16, &meta.mailbox_guid.0);
    if let Err(e) = t.commit() {
        eprintln!("mailsync: warning: {}: {e}", index_dir.display());
    }
}

impl Store for MboxStore {
    fn hierarchy_separator(&self) -> char {
        self.sep
    }

    /// A mailbox is a file; only directories have children (mailbox-list-fs.c).
    fn selectable_parents(&self) -> bool {
        false
    }

    fn save_line_endings(&self) -> SaveLineEndings {
        self.line_endings
    }

    fn list_mailboxes(&self) -> Result<Vec<MailboxInfo>> {
        let mut found = BTreeMap::new();
        self.scan(&self.root, &mut Vec::new(), &mut found);
        let subscribed = self.subscriptions()?;
        let mut all: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        all.insert("INBOX".into(), (true, true));
        for (name, selectable) in &found {
            all.insert(name.clone(), (true, *selectable));
        }
        for name in found.keys() {
            for parent in names::parent_names(name, self.sep) {
                all.entry(parent.to_string()).or_insert((false, false));
            }
        }
        let keys: Vec<String> = all.keys().cloned().collect();
        let mut out = Vec::new();
        for (name, (on_disk, selectable)) in all {
            let children = keys.iter().any(|n| names::is_below(n, &name, self.sep));
            let guid = if selectable {
                Meta::load(&self.paths(&name).index_dir).map(|m| m.mailbox_guid)
            } else {
                None
            };
            out.push(MailboxInfo {
                subscribed: subscribed.contains(&name),
                guid,
                attrs: MailboxAttrs {
                    nonexistent: !on_disk,
                    noselect: on_disk && !selectable,
                    children,
                },
                name,
            });
        }
        out.sort_by(|a, b| (a.name != "INBOX", &a.name).cmp(&(b.name != "INBOX", &b.name)));
        Ok(out)
    }

    fn subscriptions(&self) -> Result<Vec<String>> {
        let path = self.subscriptions.clone();
        let stored = subscriptions::read(&path, '/').map_err(|e| Error::io("read", &path, e))?;
        let mut out = Vec::new();
        for s in stored {
            let levels: Vec<String> = s.split('/').map(str::to_string).collect();
            if let Some(v) = self.vname_of(&levels) {
                let v = self.normalize(&v);
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        Ok(out)
    }

    fn create_mailbox(&self, name: &str, guid: Option<MailboxGuid>) -> Result<()> {
        let v = self.normalize(name);
        self.validate(&v, true)?;
        if v == "INBOX" {
            return Err(Error::MailboxExists(v));
        }
        let paths = self.paths(&v);
        if paths.file.is_dir() {
            // a directory of children can't also be an mbox file (doveadm: "Mailbox
            // already exists")
            return Err(Error::MailboxExists(v));
        }
        for parent in names::parent_names(&v, self.sep) {
            if self.paths(parent).file.is_file() {
                return Err(Error::NotPossible(format!(
                    "Mailbox doesn't allow inferior mailboxes: {parent}"
                )));
            }
        }
        self.create_file(&v, guid)
    }

    fn delete_mailbox(&self, name: &str) -> Result<()> {
        let v = self.existing_name(name)?;
        if v == "INBOX" {
            return Err(Error::NotPossible("INBOX can't be deleted.".into()));
        }
        let paths = self.paths(&v);
        let meta = fs::metadata(&paths.file).map_err(|_| Error::MailboxNotFound(v.clone()))?;
        if meta.is_dir() {
            // the index directory of deleted children may be left, empty
            let _ = fs::remove_dir(paths.file.join(INDEX_DIR));
            return match fs::remove_dir(&paths.file) {
                Ok(()) => {
                    // fs_list_rmdir
                    self.log_change(MailboxLogType::DeleteDir, mailbox_log::name_guid(&v));
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Err(Error::NotPossible(
                    format!("Mailbox has children, delete them first: {v}"),
                )),
                Err(e) => Err(Error::io("rmdir", &paths.file, e)),
            };
        }
        // the GUID for the mailbox log, read before the index goes
        let guid = self.listed_guid(&paths);
        // under the mailbox's dotlock so no delivery is appending meanwhile
        let lock = crate::lock::dotlock(&paths.file)?;
        fs::remove_file(&paths.file).map_err(|e| Error::io("unlink", &paths.file, e))?;
        drop(lock);
        match fs::remove_dir_all(&paths.index_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("rmdir", &paths.index_dir, e)),
        }
        if let Some(parent) = paths.index_dir.parent() {
            let _ = fs::remove_dir(parent);
        }
        // index_storage_mailbox_delete_post: DELETE_MAILBOX with the mailbox GUID, then
        // DELETE_DIR with the name's hash (Dovecot logs both for an mbox file too)
        if let Some(guid) = guid {
            self.log_change(MailboxLogType::DeleteMailbox, guid.0);
        }
        self.log_change(MailboxLogType::DeleteDir, mailbox_log::name_guid(&v));
        Ok(())
    }

    fn rename_mailbox(&self, old: &str, new: &str) -> Result<()> {
        let o = self.existing_name(old)?;
        let n = self.normalize(new);
        self.validate(&n, true)?;
        names::check_rename(&o, &n, self.sep)?;
        let from = self.paths(&o);
        let to = self.paths(&n);
        if !from.file.exists() {
            return Err(Error::MailboxNotFound(o));
        }
        if to.file.exists() {
            return Err(Error::MailboxExists(n));
        }
        for parent in names::parent_names(&n, self.sep) {
            if self.paths(parent).file.is_file() {
                return Err(Error::NotPossible(format!(
                    "Mailbox doesn't allow inferior mailboxes: {parent}"
                )));
            }
        }
        if let Some(parent) = to.file.parent() {
            Self::mkdir_all(parent)?;
        }
        fs::rename(&from.file, &to.file).map_err(|e| Error::io("rename", &from.file, e))?;
        if from.index_dir.exists() {
            if let Some(parent) = to.index_dir.parent() {
                Self::mkdir_all(parent)?;
            }
            let _ = fs::remove_dir_all(&to.index_dir);
            fs::rename(&from.index_dir, &to.index_dir)
                .map_err(|e| Error::io("rename", &from.index_dir, e))?;
        }
        // index_storage_mailbox_rename: one RENAME record with the new name's hash
        self.log_change(MailboxLogType::Rename, mailbox_log::name_guid(&n));
        Ok(())
    }

    fn set_subscribed(&self, name: &str, subscribed: bool) -> Result<()> {
        let v = self.existing_name(name)?;
        let path = self.subscriptions.clone();
        if let Some(dir) = path.parent() {
            Self::mkdir_all(dir)?;
        }
        let storage = if v == "INBOX" {
            v.clone()
        } else {
            self.relative(&v).to_string_lossy().into_owned()
        };
        subscriptions::set_subscribed(&path, '/', &storage, subscribed).map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                Error::LockTimeout { path: path.clone() }
            } else {
                Error::io("write", &path, e)
            }
        })?;
        // index_storage_set_subscribed
        let kind = if subscribed {
            MailboxLogType::Subscribe
        } else {
            MailboxLogType::Unsubscribe
        };
        self.log_change(kind, mailbox_log::name_guid(&v));
        Ok(())
    }

    fn set_change_time(&self, at: Option<i64>) {
        self.change_clock.set(at);
    }

    fn name_change_times(&self, names: &[String]) -> Result<Vec<NameChangeTimes>> {
        let root = self.mailbox_log_root();
        let (times, warnings) = mailbox_log::name_change_times(&root, names)
            .map_err(|e| Error::io("read", mailbox_log::path_in(&root), e))?;
        for w in warnings {
            eprintln!("mailsync: warning: {w}");
        }
        Ok(times)
    }

    fn deleted_mailboxes(&self) -> Result<Vec<(MailboxGuid, i64)>> {
        let root = self.mailbox_log_root();
        let (deleted, warnings) = mailbox_log::deleted_mailboxes(&root)
            .map_err(|e| Error::io("read", mailbox_log::path_in(&root), e))?;
        for w in warnings {
            eprintln!("mailsync: warning: {w}");
        }
        Ok(deleted
            .into_iter()
            .map(|(g, t)| (MailboxGuid(g), t))
            .collect())
    }

    fn open_mailbox(&self, name: &str) -> Result<Box<dyn Mailbox>> {
        let v = self.existing_name(name)?;
        let paths = self.paths(&v);
        if v == "INBOX" && !paths.file.exists() {
            // INBOX always exists (mailbox_autocreate): create the empty spool file
            match self.create_file(&v, None) {
                Ok(()) | Err(Error::MailboxExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if !paths.file.is_file() {
            return Err(Error::MailboxNotFound(v));
        }
        Ok(Box::new(MboxMailbox::open(v, paths, self.line_endings)?))
    }
}
