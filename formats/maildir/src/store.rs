//! The mailbox tree of a Maildir store: list, create, delete, rename, subscriptions.
//!
//! Sources (Dovecot 2.3.19.1): src/lib-storage/list/mailbox-list-maildir.c (Maildir++
//! delete via `..DOVECOT-TRASHED`, rename with children), mailbox-list-fs.c (LAYOUT=fs),
//! mailbox-list-delete.c (non-recursive delete, children survive), mailbox-list-maildir-iter.c
//! (ghost parents), src/lib-storage/index/maildir/maildir-storage.c (create: cur/ new/ tmp/ +
//! maildirfolder), subscription-file.c via mailsupport::subscriptions.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use mailstore::names;
use mailstore::{
    Error, Location, Mailbox, MailboxGuid, MailboxInfo, NameChangeTimes, Result, Store,
    StoreOptions,
};
use mailsupport::subscriptions;
use mailsync_index::format::mailbox_log::MailboxLogType;
use mailsync_index::mailbox_log;

use crate::layout::{IndexLocation, Layout, LayoutKind, MAILDIRPP_TRASH_DIR};
use crate::mailbox::{
    lock_uidlist, mkdir, mkdir_all, replace_uidlist, MaildirMailbox, Paths, UIDLIST_NAME,
};
use crate::uidlist::{self, UidList};
use crate::{uidvalidity, warn};

/// A Maildir store rooted at a mail location.
#[derive(Clone, Debug)]
pub struct MaildirStore {
    /// The time its mailbox log records get (`Store::set_change_time`).
    change_clock: mailbox_log::ChangeClock,
    layout: Layout,
}

/// The empty marker file in every non-INBOX Maildir++ folder (maildir-storage.c
/// MAILDIR_SUBFOLDER_FILENAME).
const MAILDIRFOLDER: &str = "maildirfolder";

impl MaildirStore {
    /// Opens the Maildir store a `maildir:` location names (options LAYOUT, INBOX, INDEX,
    /// CONTROL). The root is created on first write, as Dovecot does.
    pub fn open(location: &Location, options: &StoreOptions) -> Result<MaildirStore> {
        Ok(MaildirStore {
            change_clock: Default::default(),
            layout: Layout::from_location(location, options)?,
        })
    }

    /// The resolved layout (paths and separators).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn dir_mode(&self) -> u32 {
        fs::metadata(&self.layout.root)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or(0o700)
            | 0o700
    }

    fn paths(&self, vname: &str) -> Paths {
        Paths {
            dir: self.layout.mailbox_dir(vname),
            control: self.layout.control_dir(vname),
        }
    }

    /// Normalizes INBOX and validates a name that refers to an existing mailbox.
    fn existing_name(&self, name: &str) -> Result<String> {
        let v = self.layout.normalize(name);
        self.layout.validate(&v, false)?;
        Ok(v)
    }

    /// True when the mailbox can be opened (its Maildir exists).
    fn exists(&self, vname: &str) -> bool {
        let dir = self.layout.mailbox_dir(vname);
        match self.layout.kind {
            _ if Layout::is_inbox(vname) => true,
            LayoutKind::MaildirPlusPlus => dir.is_dir(),
            LayoutKind::Fs => dir.join("cur").is_dir(),
        }
    }

    /// The mailbox GUID from the uidlist header, if the uidlist has one.
    fn listed_guid(&self, vname: &str) -> Option<MailboxGuid> {
        use std::io::Read;
        let path = self.layout.control_dir(vname).join(UIDLIST_NAME);
        // Only the header line is needed: it is short (V, N, G and a few other fields).
        let mut head = Vec::with_capacity(256);
        fs::File::open(&path)
            .ok()?
            .take(4096)
            .read_to_end(&mut head)
            .ok()?;
        let end = head.iter().position(|&b| b == b'\n')?;
        uidlist::parse(&head[..=end]).ok().flatten()?.0.guid
    }

    /// mailbox_list_mkdir_root, plus INBOX's cur/ new/ tmp/ when INBOX is the root, as
    /// `doveadm mailbox create` leaves them.
    fn ensure_root(&self) -> Result<()> {
        let root = &self.layout.root;
        mkdir_all(root, 0o700).map_err(|e| Error::io("mkdir", root, e))?;
        if self.layout.inbox == self.layout.root {
            let mode = self.dir_mode();
            for sub in ["cur", "new", "tmp"] {
                let p = root.join(sub);
                mkdir(&p, mode).map_err(|e| Error::io("mkdir", &p, e))?;
            }
        }
        Ok(())
    }

    /// Creates the Maildir of `vname` in `dir` (which must not be a mailbox yet) and writes
    /// its uidlist with a new UIDVALIDITY and the GUID.
    fn make_maildir(&self, vname: &str, dir: &Path, guid: Option<MailboxGuid>) -> Result<()> {
        let mode = self.dir_mode();
        for sub in ["cur", "new", "tmp"] {
            let p = dir.join(sub);
            mkdir(&p, mode).map_err(|e| Error::io("mkdir", &p, e))?;
        }
        if self.layout.kind == LayoutKind::MaildirPlusPlus && !Layout::is_inbox(vname) {
            let p = dir.join(MAILDIRFOLDER);
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&p)
                .map_err(|e| Error::io("open", &p, e))?;
        }
        let paths = self.paths(vname);
        mkdir_all(&paths.control, mode).map_err(|e| Error::io("mkdir", &paths.control, e))?;
        let lock = lock_uidlist(&paths)?;
        let result = (|| -> Result<()> {
            let root = self.layout.control_root();
            let v = uidvalidity::next(root)
                .map_err(|e| Error::io("open", root.join(uidvalidity::FILE_NAME), e))?;
            let list = UidList::new(v, guid.unwrap_or_else(MailboxGuid::generate));
            // Created with the default 0666 (before umask), not the mailbox's file mode.
            replace_uidlist(&paths, &list, 0o666)
        })();
        let released = lock.release();
        result?;
        released.map_err(|e| Error::io("unlink", paths.uidlist(), e))
    }

    /// Deletes a directory's own files and cur/ new/ tmp/, keeping child mailbox directories;
    /// removes the directory when it ends up empty (mailbox_list_delete_mailbox_nonrecursive).
    fn delete_nonrecursive(path: &Path) -> Result<()> {
        let rd = match fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("opendir", path, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("readdir", path, e))?;
            let p = entry.path();
            let name = entry.file_name();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                if matches!(name.to_str(), Some("cur" | "new" | "tmp")) {
                    fs::remove_dir_all(&p).map_err(|e| Error::io("unlink_directory", &p, e))?;
                }
                // Other directories are child mailboxes (LAYOUT=fs): they stay.
                continue;
            }
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("unlink", &p, e)),
            }
        }
        match fs::remove_dir(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            // Children still there.
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(()),
            Err(e) => Err(Error::io("rmdir", path, e)),
        }
    }

    /// Maildir++ delete: rename the folder to `<root>/..DOVECOT-TRASHED` (atomically
    /// invisible), then remove that (mailbox_list_delete_maildir_via_trash).
    fn delete_via_trash(&self, vname: &str, dir: &Path) -> Result<()> {
        let trash = self.layout.root.join(MAILDIRPP_TRASH_DIR);
        let mut dest = trash.clone();
        for attempt in 0..5 {
            match fs::rename(dir, &dest) {
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
                    // Another delete is in progress or crashed: go inside the trash dir.
                    dest = trash.join(format!(
                        "{}.{}.{attempt}",
                        mailstore::hostname(),
                        std::process::id()
                    ));
                }
                Err(e) => return Err(Error::io("rename", dir, e)),
            }
        }
        if let Err(e) = fs::remove_dir_all(&trash) {
            // Already invisible: the delete has happened as far as anyone can tell.
            warn(&format!(
                "unlink_directory({}) failed: {e}",
                trash.display()
            ));
        }
        Ok(())
    }

    /// Renames a directory if it exists; creates the target's parents first.
    fn rename_if_exists(from: &Path, to: &Path) -> Result<bool> {
        if from == to || !from.exists() {
            return Ok(false);
        }
        if let Some(parent) = to.parent() {
            mkdir_all(parent, 0o700).map_err(|e| Error::io("mkdir", parent, e))?;
        }
        match fs::rename(from, to) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("rename", from, e)),
        }
    }

    /// Removes empty directories from `path` up to (not including) `root`
    /// (mailbox_list_delete_until_root).
    fn remove_empty_parents(mut path: &Path, root: &Path) {
        while path != root && path.starts_with(root) {
            if fs::remove_dir(path).is_err() {
                return;
            }
            match path.parent() {
                Some(p) => path = p,
                None => return,
            }
        }
    }

    fn index_root(&self) -> Option<&Path> {
        match &self.layout.index {
            IndexLocation::Dir(d) => Some(d),
            _ => None,
        }
    }

    /// Where `dovecot.mailbox.log` lives: the index root (`INDEX=`, else the mail root;
    /// mailbox_list_get_root_path(MAILBOX_LIST_PATH_TYPE_INDEX) in mailbox-list.c). None
    /// for INDEX=MEMORY, which keeps no mailbox log.
    fn mailbox_log_root(&self) -> Option<&Path> {
        match &self.layout.index {
            IndexLocation::Dir(d) => Some(d),
            IndexLocation::InMailbox => Some(&self.layout.root),
            IndexLocation::Memory => None,
        }
    }

    /// mailbox_list_add_change: appends a record to the mailbox log. The change itself is
    /// done: a failure here is only a warning, as in Dovecot.
    fn log_change(&self, kind: MailboxLogType, guid: [u8; 16]) {
        let Some(root) = self.mailbox_log_root() else {
            return;
        };
        if let Err(e) = mailbox_log::append(root, kind, guid, self.change_clock.time()) {
            warn(&format!(
                "write({}) failed: {e}",
                mailbox_log::path_in(root).display()
            ));
        }
    }
}

impl Store for MaildirStore {
    fn hierarchy_separator(&self) -> char {
        self.layout.ns_sep
    }

    fn save_line_endings(&self) -> mailstore::SaveLineEndings {
        self.layout.line_endings
    }

    /// Each mailbox is its own directories and index files; what the mailboxes share
    /// (the `dovecot-uidvalidity` file, the mailbox log, the subscriptions) is written as
    /// safely against a second handle as against another process, and generated file
    /// names are unique in the process (`filename::generate`). Offered only to a run that
    /// reads this Maildir: one that writes it holds a uidlist record and a file name per
    /// message besides the view, and two mailboxes' worth of that at once (each lane's
    /// freed memory kept by its own thread's malloc arena) took a 28,000-message Maildir
    /// to Maildir backup from 29 to 36 MiB peak RSS, doveadm's own (BENCHMARKS.md, the
    /// twenty-first session).
    fn second_handle(&self, writes: bool) -> Option<Box<dyn Store>> {
        (!writes).then(|| Box::new(self.clone()) as Box<dyn Store>)
    }

    fn list_mailboxes(&self) -> Result<Vec<MailboxInfo>> {
        let found = self.layout.scan_mailboxes()?;
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
        let storage = subscriptions::read(&path, self.layout.list_sep())
            .map_err(|e| Error::io("read", &path, e))?;
        let mut out = Vec::new();
        for s in storage {
            match self.layout.vname_of_storage(s.as_bytes()) {
                Some(v) if !out.contains(&v) => out.push(v),
                Some(_) => {}
                None => warn(&format!("{}: skipping entry {s:?}", path.display())),
            }
        }
        Ok(out)
    }

    fn create_mailbox(&self, name: &str, guid: Option<MailboxGuid>) -> Result<()> {
        let v = self.layout.normalize(name);
        self.layout.validate(&v, true)?;
        let dir = self.layout.mailbox_dir(&v);
        if Layout::is_inbox(&v) {
            // INBOX always exists: it is created when first opened (mailbox_autocreate).
            return Err(Error::MailboxExists(v));
        }
        self.ensure_root()?;
        let mode = self.dir_mode();
        match self.layout.kind {
            LayoutKind::MaildirPlusPlus => match fs::DirBuilder::new().mode(mode).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(Error::MailboxExists(v))
                }
                Err(e) => return Err(Error::io("mkdir", &dir, e)),
            },
            LayoutKind::Fs => {
                if dir.join("cur").is_dir() {
                    return Err(Error::MailboxExists(v));
                }
                // A \NoSelect directory becomes a mailbox (Dovecot does the same).
                mkdir_all(&dir, mode).map_err(|e| Error::io("mkdir", &dir, e))?;
            }
        }
        self.make_maildir(&v, &dir, guid)
    }

    fn delete_mailbox(&self, name: &str) -> Result<()> {
        let v = self.existing_name(name)?;
        if Layout::is_inbox(&v) {
            return Err(Error::NotPossible("INBOX can't be deleted.".into()));
        }
        let dir = self.layout.mailbox_dir(&v);
        // The GUID for the mailbox log, read before the uidlist goes.
        let guid = self.listed_guid(&v);
        match self.layout.kind {
            LayoutKind::MaildirPlusPlus => {
                if !dir.is_dir() {
                    return Err(Error::MailboxNotFound(v));
                }
                self.delete_via_trash(&v, &dir)?;
            }
            LayoutKind::Fs => {
                if !dir.is_dir() {
                    return Err(Error::MailboxNotFound(v));
                }
                if !dir.join("cur").is_dir() {
                    // A \NoSelect directory: removable only when empty (fs_list_delete_dir).
                    return match fs::remove_dir(&dir) {
                        Ok(()) => {
                            // fs_list_rmdir
                            self.log_change(MailboxLogType::DeleteDir, mailbox_log::name_guid(&v));
                            Ok(())
                        }
                        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                            Err(Error::NotPossible(format!(
                                "Mailbox has children, delete them first: {v}"
                            )))
                        }
                        Err(e) => Err(Error::io("rmdir", &dir, e)),
                    };
                }
                Self::delete_nonrecursive(&dir)?;
            }
        }
        // CONTROL= and INDEX= directories of the mailbox (mailbox_list_try_delete).
        let control = self.layout.control_dir(&v);
        if control != dir {
            Self::delete_nonrecursive(&control)?;
            if let Some(root) = &self.layout.control {
                Self::remove_empty_parents(control.parent().unwrap_or(root), root);
            }
        }
        if let (Some(index), Some(root)) = (self.layout.index_dir(&v), self.index_root()) {
            if index != dir && index != control {
                Self::delete_nonrecursive(&index)?;
                Self::remove_empty_parents(index.parent().unwrap_or(root), root);
            }
        }
        // index_storage_mailbox_delete_post: DELETE_MAILBOX with the mailbox GUID, then
        // DELETE_DIR with the name's hash once the directory is gone (Maildir++ removes it
        // with the mailbox; LAYOUT=fs only when no child is left in it).
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
        let children: Vec<String> = self
            .layout
            .scan_mailboxes()?
            .into_keys()
            .filter(|c| names::is_below(c, &o, sep))
            .collect();
        let old_exists = old_dir.is_dir();
        if !old_exists && children.is_empty() {
            return Err(Error::MailboxNotFound(o));
        }
        if new_dir.exists() {
            return Err(Error::MailboxExists(n));
        }
        // The same move for the mailbox's CONTROL= and INDEX= directories.
        let move_aux = |from: &str, to: &str| -> Result<()> {
            if self.layout.control.is_some() {
                Self::rename_if_exists(
                    &self.layout.control_dir(from),
                    &self.layout.control_dir(to),
                )?;
            }
            if self.index_root().is_some() {
                if let (Some(a), Some(b)) = (self.layout.index_dir(from), self.layout.index_dir(to))
                {
                    Self::rename_if_exists(&a, &b)?;
                }
            }
            Ok(())
        };
        match self.layout.kind {
            LayoutKind::MaildirPlusPlus => {
                if old_exists {
                    fs::rename(&old_dir, &new_dir).map_err(|e| Error::io("rename", &old_dir, e))?;
                }
                move_aux(&o, &n)?;
                // maildir_rename_children: every `.Old.X` becomes `.New.X`; a child whose
                // target already exists is left where it is.
                for child in children {
                    let new_child = format!("{n}{}", &child[o.len()..]);
                    let from = self.layout.mailbox_dir(&child);
                    let to = self.layout.mailbox_dir(&new_child);
                    if to.exists() {
                        warn(&format!(
                            "not renaming {} over existing {}",
                            from.display(),
                            to.display()
                        ));
                        continue;
                    }
                    match fs::rename(&from, &to) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(Error::io("rename", &from, e)),
                    }
                    move_aux(&child, &new_child)?;
                }
            }
            LayoutKind::Fs => {
                if !old_exists {
                    return Err(Error::MailboxNotFound(o));
                }
                if let Some(parent) = new_dir.parent() {
                    mkdir_all(parent, self.dir_mode())
                        .map_err(|e| Error::io("mkdir", parent, e))?;
                }
                // Children live inside the directory and move with it.
                fs::rename(&old_dir, &new_dir).map_err(|e| Error::io("rename", &old_dir, e))?;
                move_aux(&o, &n)?;
                if let Some(c) = &self.layout.control {
                    let old_c = self.layout.control_dir(&o);
                    Self::remove_empty_parents(old_c.parent().unwrap_or(c), c);
                }
            }
        }
        // index_storage_mailbox_rename: one RENAME record with the new name's hash.
        self.log_change(MailboxLogType::Rename, mailbox_log::name_guid(&n));
        Ok(())
    }

    fn set_subscribed(&self, name: &str, subscribed: bool) -> Result<()> {
        let v = self.existing_name(name)?;
        let path = self.layout.subscriptions_path();
        let dir: PathBuf = self.layout.control_root().to_path_buf();
        mkdir_all(&dir, 0o700).map_err(|e| Error::io("mkdir", &dir, e))?;
        let storage = self.layout.storage_name(&v);
        subscriptions::set_subscribed(&path, self.layout.list_sep(), &storage, subscribed)
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
        let Some(root) = self.mailbox_log_root() else {
            return Ok(vec![NameChangeTimes::default(); names.len()]);
        };
        let (times, warnings) = mailbox_log::name_change_times(root, names)
            .map_err(|e| Error::io("read", mailbox_log::path_in(root), e))?;
        for w in warnings {
            warn(&w);
        }
        Ok(times)
    }

    fn deleted_mailboxes(&self) -> Result<Vec<(MailboxGuid, i64)>> {
        let Some(root) = self.mailbox_log_root() else {
            return Ok(Vec::new());
        };
        let (deleted, warnings) = mailbox_log::deleted_mailboxes(root)
            .map_err(|e| Error::io("read", mailbox_log::path_in(root), e))?;
        for w in warnings {
            warn(&w);
        }
        Ok(deleted
            .into_iter()
            .map(|(g, t)| (MailboxGuid(g), t))
            .collect())
    }

    fn open_mailbox(&self, name: &str) -> Result<Box<dyn Mailbox>> {
        let v = self.existing_name(name)?;
        if !self.exists(&v) {
            return Err(Error::MailboxNotFound(v));
        }
        Ok(Box::new(MaildirMailbox::open(&self.layout, &v)?))
    }
}
