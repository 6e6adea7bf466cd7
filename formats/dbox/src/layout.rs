//! Where a dbox store keeps things: `<root>/mailboxes/<storage name>/dbox-Mails/` per
//! mailbox, `/`-separated levels in modified UTF-7 (Dovecot's fs list layout with
//! mailbox_dir_name = "mailboxes", maildir_name = "dbox-Mails": dbox-storage.c
//! dbox_storage_get_list_settings, src/lib-storage/list/mailbox-list-fs.c).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use mailstore::{names, Error, Location, Result, SaveLineEndings, StoreOptions};
use mailsupport::mutf7;

/// DBOX_MAILBOX_DIR_NAME.
pub const MAILBOXES_DIR: &str = "mailboxes";
/// DBOX_MAILDIR_NAME: the directory holding a mailbox's index (and sdbox `u.N` files).
pub const MAIL_DIR: &str = "dbox-Mails";
/// MAILBOX_LIST_FS_TRASH_DIR_NAME: deleted mailboxes are renamed here, then removed.
pub const TRASH_DIR: &str = "..DOVECOT-TrasH";
/// The per-mailbox (and map) index prefix.
pub const INDEX_PREFIX: &str = "dovecot.index";

/// Which dbox flavour a store is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DboxKind {
    Single,
    Multi,
}

/// The resolved paths and name rules of a dbox store.
#[derive(Clone, Debug)]
pub struct Layout {
    pub kind: DboxKind,
    pub root: PathBuf,
    /// The namespace (virtual name) separator; on disk levels are always `/`.
    pub ns_sep: char,
    pub line_endings: SaveLineEndings,
    /// mdbox_rotate_size: an `m.N` at least this big gets no more messages.
    pub rotate_size: u64,
}

impl Layout {
    /// From an `sdbox:`/`mdbox:` location. Options (ALT=, INDEX=, CONTROL=, ...) are
    /// refused: this backend keeps everything under the root.
    pub fn from_location(
        location: &Location,
        options: &StoreOptions,
        kind: DboxKind,
    ) -> Result<Layout> {
        location.check_options(&[])?;
        Ok(Layout {
            kind,
            root: location.root.clone(),
            ns_sep: options.separator.unwrap_or('/'),
            line_endings: options.save_line_endings.unwrap_or(SaveLineEndings::Lf),
            rotate_size: crate::mdbox::DEFAULT_ROTATE_SIZE,
        })
    }

    pub fn normalize(&self, vname: &str) -> String {
        names::normalize_inbox(vname, self.ns_sep)
    }

    pub fn is_inbox(vname: &str) -> bool {
        vname == "INBOX"
    }

    /// Validates a normalized name; `create` adds the creation-only rules. On top of
    /// mailstore::names: `/` can't be inside a level when the separator differs, and no
    /// level may be `dbox-Mails` (it would be taken for a mailbox's mail directory).
    pub fn validate(&self, vname: &str, create: bool) -> Result<()> {
        if create {
            names::validate_mailbox_name(vname, self.ns_sep)?;
        } else {
            names::validate_existing_mailbox_name(vname, self.ns_sep)?;
        }
        if Self::is_inbox(vname) {
            return Ok(());
        }
        if self.ns_sep != '/' && vname.contains('/') {
            return Err(Error::invalid_name(
                vname,
                "Character not allowed in mailbox name: '/'",
            ));
        }
        if vname.contains('\0') {
            return Err(Error::invalid_name(vname, "Contains NUL"));
        }
        for part in self.storage_name(vname).split('/') {
            if part.is_empty() {
                return Err(Error::invalid_name(vname, "Has adjacent '/' chars"));
            }
            if part == "." || part == ".." {
                return Err(Error::invalid_name(
                    vname,
                    format!("Contains '{part}' part"),
                ));
            }
            if part == MAIL_DIR {
                return Err(Error::invalid_name(vname, "Contains reserved name"));
            }
        }
        if vname.starts_with('~') {
            return Err(Error::invalid_name(vname, "Begins with '~'"));
        }
        Ok(())
    }

    /// Levels in modified UTF-7 joined with `/` (mailbox_list_default_get_storage_name).
    pub fn storage_name(&self, vname: &str) -> String {
        if Self::is_inbox(vname) {
            return "INBOX".into();
        }
        vname
            .split(self.ns_sep)
            .map(mutf7::encode)
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The virtual name of a storage name; levels that aren't valid mUTF-7 are kept as
    /// they are. `None` when not UTF-8 or when a level holds the namespace separator.
    pub fn vname_of_storage(&self, storage: &[u8]) -> Option<String> {
        if storage == b"INBOX" {
            return Some("INBOX".into());
        }
        let mut out = String::new();
        for (i, part) in storage.split(|&b| b == b'/').enumerate() {
            if i > 0 {
                out.push(self.ns_sep);
            }
            let level = match mutf7::decode(part) {
                Ok(s) => s,
                Err(_) => std::str::from_utf8(part).ok()?.to_string(),
            };
            if self.ns_sep != '/' && level.contains(self.ns_sep) {
                return None;
            }
            out.push_str(&level);
        }
        Some(out)
    }

    pub fn mailboxes_root(&self) -> PathBuf {
        self.root.join(MAILBOXES_DIR)
    }

    /// `<root>/mailboxes/<storage name>`: the mailbox's directory (children live inside).
    pub fn mailbox_dir(&self, vname: &str) -> PathBuf {
        self.mailboxes_root().join(self.storage_name(vname))
    }

    /// `<root>/mailboxes/<storage name>/dbox-Mails`: index files and sdbox `u.N` files.
    pub fn mail_dir(&self, vname: &str) -> PathBuf {
        self.mailbox_dir(vname).join(MAIL_DIR)
    }

    /// mdbox `storage/`: `m.N` files and the map index.
    pub fn storage_dir(&self) -> PathBuf {
        self.root.join("storage")
    }

    pub fn subscriptions_path(&self) -> PathBuf {
        self.root.join("subscriptions")
    }

    /// Every mailbox directory below `mailboxes/` (INBOX included when it exists on
    /// disk), with whether it is selectable (has `dbox-Mails`).
    pub fn scan_mailboxes(&self) -> Result<BTreeMap<String, bool>> {
        let mut found = BTreeMap::new();
        self.scan_dir(&self.mailboxes_root(), Vec::new(), &mut found)?;
        Ok(found)
    }

    fn scan_dir(
        &self,
        dir: &Path,
        prefix: Vec<u8>,
        found: &mut BTreeMap<String, bool>,
    ) -> Result<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("opendir", dir, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("readdir", dir, e))?;
            let name = entry.file_name();
            let name = name.as_bytes();
            // fs_list_iter: "." and ".." are skipped; so are hidden and trash directories
            if name.first() == Some(&b'.') || name == MAIL_DIR.as_bytes() {
                continue;
            }
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let mut storage = prefix.clone();
            if !storage.is_empty() {
                storage.push(b'/');
            }
            storage.extend_from_slice(name);
            let Some(vname) = self.vname_of_storage(&storage) else {
                crate::warn(&format!("skipping mailbox directory {}", path.display()));
                continue;
            };
            let vname = if storage == b"INBOX" {
                vname
            } else if names::is_inbox(&vname) {
                // `inbox` in another case on disk is not INBOX (fs layout is case-sensitive)
                continue;
            } else {
                vname
            };
            found.insert(vname, path.join(MAIL_DIR).is_dir());
            self.scan_dir(&path, storage, found)?;
        }
        Ok(())
    }
}

/// mkdir -p with `mode` for new directories.
pub fn mkdir_all(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}
