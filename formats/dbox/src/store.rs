//! The mailbox tree of a dbox store (sdbox or mdbox): list, create, delete, rename,
//! subscriptions. Sources (Dovecot 2.3.19.1): src/lib-storage/list/mailbox-list-fs.c
//! (fs_list_delete_maildir via `..DOVECOT-TrasH`, rename), mailbox-list-fs-iter.c,
//! src/lib-storage/index/dbox-common/dbox-storage.c (dbox_mailbox_create),
//! subscription-file.c via mailsupport::subscriptions.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mailstore::names;
use mailstore::{
    Error, Location, Mailbox, MailboxGuid, MailboxInfo, NameChangeTimes, Result, Store,
    StoreOptions,
};
use mailsupport::subscriptions;
use mailsync_index::format::mailbox_log::MailboxLogType;
use mailsync_index::mailbox_log;

use crate::index::{create_index, dbox_header, dbox_header_in, index_exists, IndexStamp};
use crate::layout::{mkdir_all, DboxKind, Layout, INDEX_PREFIX, TRASH_DIR};
use crate::map_table::MapCache;
use crate::sdbox::SdboxMailbox;

/// An sdbox or mdbox store rooted at a mail location.
#[derive(Clone, Debug)]
pub struct DboxStore {
    /// The time its mailbox log records get (`Store::set_change_time`).
    change_clock: mailbox_log::ChangeClock,
    layout: Layout,
    /// mdbox: the map's message locations, shared by the mailboxes opened from this store
    /// (and its clones); read again only when the map changed.
    map_cache: Arc<MapCache>,
    /// The mailbox GUIDs `list_mailboxes` read, by index directory, with the index files'
    /// stamps then: an unchanged index isn't read again for its GUID (a sync lists the
    /// store more than once).
    listed_guids: Arc<Mutex<ListedGuids>>,
}

/// Index directory → (its index files' stamp, the mailbox GUID read from them).
type ListedGuids = HashMap<PathBuf, (IndexStamp, Option<MailboxGuid>)>;

impl DboxStore {
    /// Opens the store an `sdbox:` or `mdbox:` location names. Nothing is created until
    /// the first write, as Dovecot does.
    pub fn open(location: &Location, options: &StoreOptions) -> Result<DboxStore> {
        let kind = match location.driver.as_str() {
            "sdbox" => DboxKind::Single,
            "mdbox" => DboxKind::Multi,
            other => {
                return Err(Error::Params(format!(
                    "not a dbox mail location driver: {other}"
                )))
            }
        };
        Ok(DboxStore {
            change_clock: Default::default(),
            layout: Layout::from_location(location, options, kind)?,
            map_cache: Arc::new(MapCache::default()),
            listed_guids: Default::default(),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Sets Dovecot's `mdbox_rotate_size` (bytes; default 10 MiB): new messages go to a new
    /// `m.N` once the current one is at least this big.
    pub fn with_rotate_size(mut self, bytes: u64) -> DboxStore {
        self.layout.rotate_size = bytes;
        self
    }

    fn existing_name(&self, name: &str) -> Result<String> {
        let v = self.layout.normalize(name);
        self.layout.validate(&v, false)?;
        Ok(v)
    }

    /// The mailbox GUID from the index header, without creating anything.
    fn listed_guid(&self, vname: &str) -> Option<MailboxGuid> {
        let dir = self.layout.mail_dir(vname);
        if !index_exists(&dir) {
            return None;
        }
        let paths = mailsync_index::IndexPaths::new(&dir, INDEX_PREFIX);
        let stamp = IndexStamp::of(&paths).ok()?;
        let mut cache = self
            .listed_guids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((s, g)) = cache.get(&dir) {
            if *s == stamp {
                return *g;
            }
        }
        // the header alone when it can tell (its cost doesn't grow with the messages)
        let hdr = match mailsync_index::HeaderView::open(&paths) {
            Ok(Some(head)) => dbox_header_in(&head, self.layout.kind),
            _ => mailsync_index::View::open_paths(&paths)
                .ok()
                .and_then(|view| dbox_header(&view, self.layout.kind)),
        };
        let guid = hdr
            .map(|h| MailboxGuid(h.mailbox_guid))
            .filter(|g| !g.is_zero());
        cache.insert(dir, (stamp, guid));
        guid
    }

    /// Makes `dbox-Mails` of a new mailbox and its index with a fresh UIDVALIDITY.
    pub(crate) fn init_mailbox(&self, vname: &str, guid: Option<MailboxGuid>) -> Result<()> {
        let dir = self.layout.mail_dir(vname);
        mkdir_all(&dir, 0o700).map_err(|e| Error::io("mkdir", &dir, e))?;
        if index_exists(&dir) {
            return Ok(());
        }
        let uid_validity = self.next_uid_validity()?;
        let counter = match self.layout.kind {
            DboxKind::Single => 0,
            DboxKind::Multi => crate::mdbox::map_uid_validity(&self.layout, &self.map_cache)?,
        };
        create_index(
            &dir,
            self.layout.kind,
            uid_validity,
            counter,
            guid.unwrap_or_else(MailboxGuid::generate),
        )
    }

    /// mailbox_uidvalidity_next on `<root>/dovecot-uidvalidity` (dbox-storage.c).
    fn next_uid_validity(&self) -> Result<u32> {
        let root = &self.layout.root;
        mkdir_all(root, 0o700).map_err(|e| Error::io("mkdir", root, e))?;
        mailsupport::uidvalidity::next(root)
            .map_err(|e| Error::io("open", root.join(mailsupport::uidvalidity::FILE_NAME), e))
    }

    /// Removes empty directories from `path` up to (not including) `mailboxes/`.
    fn remove_empty_parents(&self, mut path: &Path) {
        let root = self.layout.mailboxes_root();
        while path != root && path.starts_with(&root) {
            if fs::remove_dir(path).is_err() {
                return;
            }
            match path.parent() {
                Some(p) => path = p,
                None => return,
            }
        }
    }

    /// fs_list_delete_maildir: `dbox-Mails` is renamed to `<root>/..DOVECOT-TrasH`
    /// (atomically invisible), then removed; then the mailbox directory, if empty.
    fn delete_mail_dir(&self, vname: &str) -> Result<()> {
        let mail_dir = self.layout.mail_dir(vname);
        let trash = self.layout.root.join(TRASH_DIR);
        let mut dest = trash.clone();
        for attempt in 0..5 {
            match fs::rename(&mail_dir, &dest) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::MailboxNotFound(vname.to_string()))
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
                    ) && attempt < 4 =>
                {
                    // a crashed or concurrent delete left the trash dir: go inside it
                    dest = trash.join(format!(
                        "{}.{}.{attempt}",
                        mailstore::hostname(),
                        std::process::id()
                    ));
                }
                Err(e) => return Err(Error::io("rename", &mail_dir, e)),
            }
        }
        if let Err(e) = fs::remove_dir_all(&trash) {
            crate::warn(&format!(
                "unlink_directory({}) failed: {e}",
                trash.display()
            ));
        }
        self.remove_empty_parents(&self.layout.mailbox_dir(vname));
        Ok(())
    }

    /// mailbox_list_add_change: appends a record to `<root>/dovecot.mailbox.log` (the
    /// index root of a dbox list is its mail root). The change itself is done: a failure
    /// here is only a warning, as in Dovecot.
    fn log_change(&self, kind: MailboxLogType, guid: [u8; 16]) {
        let root = &self.layout.root;
        if let Err(e) = mailbox_log::append(root, kind, guid, self.change_clock.time()) {
            crate::warn(&format!(
                "write({}) failed: {e}",
                mailbox_log::path_in(root).display()
            ));
        }
    }
}

/// True when an sdbox mail directory holds any `u.<uid>` file.
fn has_mail_files(dir: &Path) -> Result<bool> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("opendir", dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("readdir", dir, e))?;
        if entry.file_name().as_encoded_bytes().starts_with(b"u.") {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Store for DboxStore {
    fn hierarchy_separator(&self) -> char {
        self.layout.ns_sep
    }

    fn save_line_endings(&self) -> mailstore::SaveLineEndings {
        self.layout.line_endings
    }

    /// sdbox: each mailbox is its own directory of `u.N` files and index files (temp
    /// names are unique in the process, `sdbox::temp_name`). mdbox: none, its mailboxes
    /// append to shared `m.N` files under one map.
    fn second_handle(&self, _writes: bool) -> Option<Box<dyn Store>> {
        match self.layout.kind {
            DboxKind::Single => Some(Box::new(self.clone())),
            DboxKind::Multi => None,
        }
    }

    fn list_mailboxes(&self) -> Result<Vec<MailboxInfo>> {
        let mut found = self.layout.scan_mailboxes()?;
        // INBOX always exists and is selectable, whatever its directory holds
        found.remove("INBOX");
        let subscribed: HashSet<String> = self.subscriptions()?.into_iter().collect();
        Ok(names::mailbox_listing(
            &found,
            &subscribed,
            self.layout.ns_sep,
            |name| self.listed_guid(name),
        ))
    }

    fn subscriptions(&self) -> Result<Vec<String>> {
        let path = self.layout.subscriptions_path();
        let storage = subscriptions::read(&path, '/').map_err(|e| Error::io("read", &path, e))?;
        let mut out = Vec::new();
        for s in storage {
            match self.layout.vname_of_storage(s.as_bytes()) {
                Some(v) if !out.contains(&v) => out.push(v),
                Some(_) => {}
                None => crate::warn(&format!("{}: skipping entry {s:?}", path.display())),
            }
        }
        Ok(out)
    }

    fn create_mailbox(&self, name: &str, guid: Option<MailboxGuid>) -> Result<()> {
        let v = self.layout.normalize(name);
        self.layout.validate(&v, true)?;
        let mail_dir = self.layout.mail_dir(&v);
        // INBOX always exists (it is created on first open)
        if Layout::is_inbox(&v) || mail_dir.is_dir() {
            return Err(Error::MailboxExists(v));
        }
        self.init_mailbox(&v, guid)
    }

    fn delete_mailbox(&self, name: &str) -> Result<()> {
        let v = self.existing_name(name)?;
        if Layout::is_inbox(&v) {
            return Err(Error::NotPossible("INBOX can't be deleted.".into()));
        }
        let dir = self.layout.mailbox_dir(&v);
        if !dir.is_dir() {
            return Err(Error::MailboxNotFound(v));
        }
        if !self.layout.mail_dir(&v).is_dir() {
            // a \NoSelect directory: removable only when empty (fs_list_delete_dir)
            return match fs::remove_dir(&dir) {
                Ok(()) => {
                    // fs_list_rmdir
                    self.log_change(MailboxLogType::DeleteDir, mailbox_log::name_guid(&v));
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Err(Error::NotPossible(
                    format!("Mailbox has children, delete them first: {v}"),
                )),
                Err(e) => Err(Error::io("rmdir", &dir, e)),
            };
        }
        // the GUID for the mailbox log, read before the index goes
        let guid = self.listed_guid(&v);
        if self.layout.kind == DboxKind::Multi {
            crate::mdbox::release_mailbox_refs(&self.layout, &self.layout.mail_dir(&v))?;
        }
        self.delete_mail_dir(&v)?;
        // index_storage_mailbox_delete_post: DELETE_MAILBOX with the mailbox GUID, then
        // DELETE_DIR with the name's hash when the directory went too (fs_list_rmdir; it
        // stays while children are in it)
        if let Some(guid) = guid {
            self.log_change(MailboxLogType::DeleteMailbox, guid.0);
        }
        if !dir.exists() {
            self.log_change(MailboxLogType::DeleteDir, mailbox_log::name_guid(&v));
        }
        Ok(())
    }

    fn rename_mailbox(&self, old: &str, new: &str) -> Result<()> {
        let sep = self.layout.ns_sep;
        let o = self.existing_name(old)?;
        let n = self.layout.normalize(new);
        self.layout.validate(&n, true)?;
        names::check_rename(&o, &n, sep)?;
        let old_dir = self.layout.mailbox_dir(&o);
        let new_dir = self.layout.mailbox_dir(&n);
        if !old_dir.is_dir() {
            return Err(Error::MailboxNotFound(o));
        }
        if new_dir.exists() {
            return Err(Error::MailboxExists(n));
        }
        if let Some(parent) = new_dir.parent() {
            mkdir_all(parent, 0o700).map_err(|e| Error::io("mkdir", parent, e))?;
        }
        // children live inside the directory and move with it; the index (GUID,
        // UIDVALIDITY, UIDs) moves unchanged
        fs::rename(&old_dir, &new_dir).map_err(|e| Error::io("rename", &old_dir, e))?;
        if let Some(parent) = old_dir.parent() {
            self.remove_empty_parents(parent);
        }
        // index_storage_mailbox_rename: one RENAME record with the new name's hash
        self.log_change(MailboxLogType::Rename, mailbox_log::name_guid(&n));
        Ok(())
    }

    fn set_subscribed(&self, name: &str, subscribed: bool) -> Result<()> {
        let v = self.existing_name(name)?;
        let path = self.layout.subscriptions_path();
        let root = &self.layout.root;
        mkdir_all(root, 0o700).map_err(|e| Error::io("mkdir", root, e))?;
        subscriptions::set_subscribed(&path, '/', &self.layout.storage_name(&v), subscribed)
            .map_err(|e| {
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
        let root = &self.layout.root;
        let (times, warnings) = mailbox_log::name_change_times(root, names)
            .map_err(|e| Error::io("read", mailbox_log::path_in(root), e))?;
        for w in warnings {
            crate::warn(&w);
        }
        Ok(times)
    }

    fn deleted_mailboxes(&self) -> Result<Vec<(MailboxGuid, i64)>> {
        let root = &self.layout.root;
        let (deleted, warnings) = mailbox_log::deleted_mailboxes(root)
            .map_err(|e| Error::io("read", mailbox_log::path_in(root), e))?;
        for w in warnings {
            crate::warn(&w);
        }
        Ok(deleted
            .into_iter()
            .map(|(g, t)| (MailboxGuid(g), t))
            .collect())
    }

    fn open_mailbox(&self, name: &str) -> Result<Box<dyn Mailbox>> {
        let v = self.existing_name(name)?;
        let mail_dir = self.layout.mail_dir(&v);
        // INBOX comes into existence when first opened (mailbox_autocreate)
        if !Layout::is_inbox(&v) && !mail_dir.is_dir() {
            return Err(Error::MailboxNotFound(v));
        }
        if !index_exists(&mail_dir) {
            // no index: Dovecot creates a new one, and rebuilds an sdbox one from its u.N
            // files. mailsync doesn't rebuild: a fresh index would hide existing u.N
            // files (and later saves would reuse their UIDs), so it refuses
            if self.layout.kind == DboxKind::Single && has_mail_files(&mail_dir)? {
                return Err(Error::corrupted(
                    mail_dir.join(INDEX_PREFIX),
                    "index missing but u.N files exist: run doveadm force-resync",
                ));
            }
            self.init_mailbox(&v, None)?;
        }
        match self.layout.kind {
            DboxKind::Single => Ok(Box::new(SdboxMailbox::open(&self.layout, &v)?)),
            DboxKind::Multi => {
                crate::mdbox::MdboxMailbox::open(&self.layout, &v, Arc::clone(&self.map_cache))
            }
        }
    }
}
