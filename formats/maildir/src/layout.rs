//! Where a mailbox lives on disk: the location options (LAYOUT, INBOX, CONTROL, INDEX), the
//! virtual name ↔ storage name ↔ directory mapping, name validation and mailbox listing.
//!
//! Sources (Dovecot 2.3.19.1): src/lib-storage/list/mailbox-list-maildir.c
//! (maildir_list_get_path), mailbox-list-fs.c (fs_list_get_path), mailbox-list.c
//! (mailbox_list_settings_parse, mailbox_list_default_get_storage_name/_get_vname,
//! mailbox_list_is_valid_fs_name), src/lib-storage/mail-storage.c (mailbox_verify_name),
//! mailbox-list-maildir-iter.c and mailbox-list-fs-iter.c (listing).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use mailstore::names;
use mailstore::{Error, Location, Result, SaveLineEndings, StoreOptions};
use mailsupport::mutf7;

use crate::warn;

/// The mailbox list layout (`LAYOUT=`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LayoutKind {
    /// `LAYOUT=maildir++` (default): folders are `<root>/.<Name>.<Sub>`, separator `.`.
    MaildirPlusPlus,
    /// `LAYOUT=fs`: folders are nested directories `<root>/<Name>/<Sub>`, separator `/`.
    Fs,
}

impl LayoutKind {
    /// The separator between levels of the storage name (on disk).
    pub fn list_separator(self) -> char {
        match self {
            LayoutKind::MaildirPlusPlus => '.',
            LayoutKind::Fs => '/',
        }
    }
}

/// Where index files go (`INDEX=`): `dovecot.index*` of each mailbox (FORMAT.md §6);
/// renames and deletes move or remove index directories where Dovecot does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexLocation {
    /// No INDEX=: inside each mailbox directory.
    InMailbox,
    /// `INDEX=MEMORY`: no index files.
    Memory,
    /// `INDEX=<dir>`: mirrored under this directory like CONTROL.
    Dir(PathBuf),
}

/// Maildir++'s trash directory for deletes in progress: `<root>/..DOVECOT-TRASHED`
/// (MAILBOX_LIST_MAILDIR_TRASH_DIR_NAME, mailbox-list-maildir.c).
pub const MAILDIRPP_TRASH_DIR: &str = "..DOVECOT-TRASHED";

/// The resolved layout of one store.
#[derive(Clone, Debug)]
pub struct Layout {
    pub kind: LayoutKind,
    /// The mail root (`maildir:<root>`).
    pub root: PathBuf,
    /// INBOX's Maildir: `INBOX=` or the root (maildir_storage_get_list_settings).
    pub inbox: PathBuf,
    /// `CONTROL=`: uidlist, keywords, uidvalidity and subscriptions go here.
    pub control: Option<PathBuf>,
    pub index: IndexLocation,
    /// The separator of virtual names (namespace separator).
    pub ns_sep: char,
    /// Line endings of saved messages: LF unless `mail_save_crlf` (maildir-save.c).
    pub line_endings: SaveLineEndings,
}

impl Layout {
    /// Reads the location options. Dovecot knows more settings than we implement: those are
    /// refused as unsupported rather than silently ignored.
    pub fn from_location(location: &Location, options: &StoreOptions) -> Result<Layout> {
        if location.driver != "maildir" {
            return Err(Error::Params(format!(
                "Not a maildir location: {}",
                location.driver
            )));
        }
        const SUPPORTED: &[&str] = &["LAYOUT", "INBOX", "CONTROL", "INDEX"];
        // Known to Dovecot's mailbox_list_settings_parse but not implemented here.
        const UNSUPPORTED: &[&str] = &[
            "INDEXPVT",
            "INDEXCACHE",
            "ALT",
            "ALTNOCHECK",
            "SUBSCRIPTIONS",
            "DIRNAME",
            "MAILBOXDIR",
            "VOLATILEDIR",
            "LISTINDEX",
            "FULLDIRNAME",
            "BROKENCHAR",
            "ITERINDEX",
            "NO-NOSELECT",
            "NO-FS-VALIDATION",
            "UTF-8",
        ];
        for (key, _) in &location.options {
            if UNSUPPORTED.contains(&key.as_str()) {
                return Err(Error::Params(format!(
                    "Unsupported setting for maildir: {key}"
                )));
            }
        }
        location.check_options(SUPPORTED)?;
        let kind = match location.option("LAYOUT") {
            None => LayoutKind::MaildirPlusPlus,
            Some(l) if l.eq_ignore_ascii_case("maildir++") => LayoutKind::MaildirPlusPlus,
            Some(l) if l.eq_ignore_ascii_case("fs") => LayoutKind::Fs,
            Some(l) => return Err(Error::Params(format!("Unknown mailbox list driver: {l}"))),
        };
        let nonempty = |key: &str| -> Result<Option<PathBuf>> {
            match location.option(key) {
                None => Ok(None),
                Some("") => Err(Error::Params(format!("{key} setting has an empty value"))),
                Some(v) => Ok(Some(PathBuf::from(v))),
            }
        };
        let inbox = nonempty("INBOX")?.unwrap_or_else(|| location.root.clone());
        let control = nonempty("CONTROL")?;
        let index = match location.option("INDEX") {
            None => IndexLocation::InMailbox,
            Some(v) if v.is_empty() || v == "MEMORY" => IndexLocation::Memory,
            Some(v) => IndexLocation::Dir(PathBuf::from(v)),
        };
        let ns_sep = options.separator.unwrap_or(kind.list_separator());
        if ns_sep == '\0' || (ns_sep as u32) < 0x20 {
            return Err(Error::Params("Invalid hierarchy separator".into()));
        }
        Ok(Layout {
            kind,
            root: location.root.clone(),
            inbox,
            control,
            index,
            ns_sep,
            line_endings: options.save_line_endings.unwrap_or(SaveLineEndings::Lf),
        })
    }

    pub fn list_sep(&self) -> char {
        self.kind.list_separator()
    }

    /// `INBOX` in any case as the first level becomes `INBOX`.
    pub fn normalize(&self, vname: &str) -> String {
        names::normalize_inbox(vname, self.ns_sep)
    }

    pub fn is_inbox(vname: &str) -> bool {
        vname == "INBOX"
    }

    /// Validates a (normalized) virtual name. `create` applies the creation-only rules.
    /// On top of mailstore::names: the layout's separator may not appear in a level when the
    /// namespace separator differs (mailbox_verify_name: "Character not allowed in mailbox
    /// name"), and with LAYOUT=fs a level may not be `cur`, `new` or `tmp`
    /// (mailbox_list_is_valid_fs_name: "Contains reserved name").
    pub fn validate(&self, vname: &str, create: bool) -> Result<()> {
        if create {
            names::validate_mailbox_name(vname, self.ns_sep)?;
        } else {
            names::validate_existing_mailbox_name(vname, self.ns_sep)?;
        }
        if Self::is_inbox(vname) {
            return Ok(());
        }
        let list_sep = self.list_sep();
        if self.ns_sep != list_sep && vname.contains(list_sep) {
            return Err(Error::invalid_name(
                vname,
                format!("Character not allowed in mailbox name: '{list_sep}'"),
            ));
        }
        if vname.contains('\0') {
            return Err(Error::invalid_name(vname, "Contains NUL"));
        }
        let storage = self.storage_name(vname);
        for part in storage.split('/') {
            if part.is_empty() {
                return Err(Error::invalid_name(vname, "Has adjacent '/' chars"));
            }
            if part == "." || part == ".." {
                return Err(Error::invalid_name(
                    vname,
                    format!("Contains '{part}' part"),
                ));
            }
            if self.kind == LayoutKind::Fs && matches!(part, "cur" | "new" | "tmp") {
                return Err(Error::invalid_name(vname, "Contains reserved name"));
            }
        }
        if storage.starts_with('~') {
            return Err(Error::invalid_name(vname, "Begins with '~'"));
        }
        Ok(())
    }

    /// The storage name: each level in modified UTF-7, joined with the layout separator
    /// (mailbox_list_default_get_storage_name).
    pub fn storage_name(&self, vname: &str) -> String {
        if Self::is_inbox(vname) {
            return "INBOX".into();
        }
        let sep = self.list_sep().to_string();
        vname
            .split(self.ns_sep)
            .map(mutf7::encode)
            .collect::<Vec<_>>()
            .join(&sep)
    }

    /// The virtual name of an on-disk storage name: levels decoded from modified UTF-7; a
    /// level that isn't valid mUTF-7 is kept as it is (mailbox_list_default_get_vname_part).
    /// `None` when the result isn't UTF-8 (Dovecot renames such directories; we skip them).
    pub fn vname_of_storage(&self, storage: &[u8]) -> Option<String> {
        if storage == b"INBOX" {
            return Some("INBOX".into());
        }
        let list_sep = self.list_sep() as u8;
        let mut out = String::new();
        for (i, part) in storage.split(|&b| b == list_sep).enumerate() {
            if i > 0 {
                out.push(self.ns_sep);
            }
            match mutf7::decode(part) {
                Ok(s) => out.push_str(&s),
                Err(_) => out.push_str(std::str::from_utf8(part).ok()?),
            }
        }
        Some(out)
    }

    /// `<dir>/.<storage>` for Maildir++, `<dir>/<storage>` for LAYOUT=fs
    /// (maildir_list_get_dirname_path / fs_list_get_path_to).
    fn under(&self, dir: &Path, storage: &str) -> PathBuf {
        match self.kind {
            LayoutKind::MaildirPlusPlus => {
                let mut name = std::ffi::OsString::from(".");
                name.push(storage);
                dir.join(name)
            }
            LayoutKind::Fs => dir.join(storage),
        }
    }

    /// The Maildir directory (with cur/ new/ tmp/) of a mailbox.
    pub fn mailbox_dir(&self, vname: &str) -> PathBuf {
        if Self::is_inbox(vname) {
            return self.inbox.clone();
        }
        self.under(&self.root, &self.storage_name(vname))
    }

    /// Where dovecot-uidlist and dovecot-keywords of a mailbox go. With CONTROL= this mirrors
    /// the folder structure, INBOX included (`<control>/.INBOX` for Maildir++,
    /// `<control>/INBOX` for fs), as maildir_list_get_path does.
    pub fn control_dir(&self, vname: &str) -> PathBuf {
        match &self.control {
            Some(c) => self.under(c, &self.storage_name(vname)),
            None => self.mailbox_dir(vname),
        }
    }

    /// Where index files of a mailbox live (`None` for INDEX=MEMORY).
    pub fn index_dir(&self, vname: &str) -> Option<PathBuf> {
        match &self.index {
            IndexLocation::InMailbox => Some(self.mailbox_dir(vname)),
            IndexLocation::Memory => None,
            IndexLocation::Dir(d) => Some(self.under(d, &self.storage_name(vname))),
        }
    }

    /// The directory holding dovecot-uidvalidity and subscriptions: CONTROL= or the root.
    pub fn control_root(&self) -> &Path {
        self.control.as_deref().unwrap_or(&self.root)
    }

    pub fn subscriptions_path(&self) -> PathBuf {
        self.control_root().join("subscriptions")
    }

    /// Lists the mailboxes on disk (INBOX not included) with whether each is selectable.
    pub fn scan_mailboxes(&self) -> Result<BTreeMap<String, bool>> {
        let mut found = BTreeMap::new();
        match self.kind {
            LayoutKind::MaildirPlusPlus => self.scan_maildirpp(&mut found)?,
            LayoutKind::Fs => self.scan_fs(&self.root, "", &mut found)?,
        }
        found.remove("INBOX");
        Ok(found)
    }

    fn read_dir(dir: &Path) -> Result<Option<fs::ReadDir>> {
        match fs::read_dir(dir) {
            Ok(rd) => Ok(Some(rd)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("opendir", dir, e)),
        }
    }

    fn is_dir(entry: &fs::DirEntry) -> bool {
        match entry.file_type() {
            Ok(t) if t.is_dir() => true,
            Ok(t) if t.is_symlink() => entry.path().is_dir(),
            _ => false,
        }
    }

    /// mailbox-list-maildir-iter.c: every `.X` directory of the root is mailbox `X`.
    fn scan_maildirpp(&self, found: &mut BTreeMap<String, bool>) -> Result<()> {
        let Some(rd) = Self::read_dir(&self.root)? else {
            return Ok(());
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("readdir", &self.root, e))?;
            let name = entry.file_name();
            let name = name.as_bytes();
            if name.first() != Some(&b'.') || name == b"." || name == b".." {
                continue;
            }
            if name == MAILDIRPP_TRASH_DIR.as_bytes() {
                cleanup_old_trash(&entry.path());
                continue;
            }
            if !Self::is_dir(&entry) {
                continue;
            }
            match self.vname_of_storage(&name[1..]) {
                Some(v) if !v.is_empty() => {
                    found.insert(v, true);
                }
                _ => warn(&format!(
                    "skipping directory with a name that isn't valid UTF-8 or mUTF-7: {}",
                    entry.path().display()
                )),
            }
        }
        Ok(())
    }

    /// mailbox-list-fs-iter.c: nested directories; `cur`, `new`, `tmp` are internal; a
    /// directory without `cur/` is a \NoSelect mailbox.
    fn scan_fs(&self, dir: &Path, prefix: &str, found: &mut BTreeMap<String, bool>) -> Result<()> {
        let Some(rd) = Self::read_dir(dir)? else {
            return Ok(());
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("readdir", dir, e))?;
            let name = entry.file_name();
            let bytes = name.as_bytes();
            if bytes == b"." || bytes == b".." || !Self::is_dir(&entry) {
                continue;
            }
            // The Maildir's own directories (INBOX's at the root).
            if matches!(bytes, b"cur" | b"new" | b"tmp") {
                continue;
            }
            let Some(level) = self.vname_of_storage(bytes) else {
                warn(&format!(
                    "skipping directory with a name that isn't valid UTF-8 or mUTF-7: {}",
                    entry.path().display()
                ));
                continue;
            };
            let vname = if prefix.is_empty() {
                level
            } else {
                format!("{prefix}{}{level}", self.ns_sep)
            };
            let path = entry.path();
            let selectable = path.join("cur").is_dir();
            found.insert(vname.clone(), selectable);
            self.scan_fs(&path, &vname, found)?;
        }
        Ok(())
    }
}

/// A trash directory left by an interrupted delete is removed once it is over an hour old
/// (maildir_delete_trash_dir, mailbox-list-maildir-iter.c).
fn cleanup_old_trash(path: &Path) {
    let old = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() > 3600);
    if old {
        if let Err(e) = fs::remove_dir_all(path) {
            warn(&format!("unlink_directory({}) failed: {e}", path.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(spec: &str, sep: Option<char>) -> Result<Layout> {
        let loc = Location::parse(spec, Some(Path::new("/h")))?;
        Layout::from_location(
            &loc,
            &StoreOptions {
                separator: sep,
                ..Default::default()
            },
        )
    }

    #[test]
    fn maildirpp_paths() {
        let l = layout("maildir:~/M", None).unwrap();
        assert_eq!(l.ns_sep, '.');
        assert_eq!(l.mailbox_dir("INBOX"), Path::new("/h/M"));
        assert_eq!(l.mailbox_dir("A.B"), Path::new("/h/M/.A.B"));
        assert_eq!(l.mailbox_dir("Entwürfe"), Path::new("/h/M/.Entw&APw-rfe"));
        assert_eq!(l.control_dir("A.B"), Path::new("/h/M/.A.B"));
        let l = layout("maildir:~/M:CONTROL=~/C:INDEX=~/I", Some('/')).unwrap();
        assert_eq!(l.mailbox_dir("A/B"), Path::new("/h/M/.A.B"));
        assert_eq!(l.control_dir("A/B"), Path::new("/h/C/.A.B"));
        assert_eq!(l.control_dir("INBOX"), Path::new("/h/C/.INBOX"));
        assert_eq!(l.index_dir("INBOX"), Some(PathBuf::from("/h/I/.INBOX")));
        assert_eq!(l.subscriptions_path(), Path::new("/h/C/subscriptions"));
    }

    #[test]
    fn fs_paths() {
        let l = layout("maildir:~/M:LAYOUT=fs:CONTROL=~/C:INBOX=~/in", None).unwrap();
        assert_eq!(l.ns_sep, '/');
        assert_eq!(l.mailbox_dir("A/B"), Path::new("/h/M/A/B"));
        assert_eq!(l.mailbox_dir("INBOX"), Path::new("/h/in"));
        assert_eq!(l.control_dir("A/B"), Path::new("/h/C/A/B"));
        assert_eq!(l.control_dir("INBOX"), Path::new("/h/C/INBOX"));
        assert_eq!(l.index_dir("A"), Some(PathBuf::from("/h/M/A")));
        let l = layout("maildir:~/M:INDEX=MEMORY", None).unwrap();
        assert_eq!(l.index_dir("A"), None);
    }

    #[test]
    fn options_are_checked() {
        let e = layout("maildir:~/M:FOO=1", None).unwrap_err();
        assert_eq!(e.to_string(), "Unknown setting: FOO");
        assert!(layout("maildir:~/M:ALT=/x", None).is_err());
        assert!(layout("maildir:~/M:LAYOUT=imapdir", None).is_err());
        assert!(layout("maildir:~/M:LAYOUT=FS", None).is_ok());
    }

    #[test]
    fn names_map_both_ways() {
        let l = layout("maildir:~/M", Some('/')).unwrap();
        assert_eq!(l.storage_name("A/Ünï"), "A.&ANw-n&AO8-");
        assert_eq!(l.vname_of_storage(b"A.&ANw-n&AO8-").unwrap(), "A/Ünï");
        // Invalid mUTF-7 is listed as it is.
        assert_eq!(l.vname_of_storage(b"a&b.c").unwrap(), "a&b/c");
        assert_eq!(l.vname_of_storage(b"\xff"), None);
    }

    #[test]
    fn layout_specific_name_rules() {
        let l = layout("maildir:~/M", Some('/')).unwrap();
        let e = l.validate("a.b", true).unwrap_err();
        assert!(e.to_string().contains("Character not allowed"), "{e}");
        l.validate("a/cur", true).unwrap();
        let l = layout("maildir:~/M:LAYOUT=fs", None).unwrap();
        assert!(l.validate("a/cur", true).is_err());
        assert!(l.validate("new", true).is_err());
        l.validate("a..b", true).unwrap();
        l.validate(".hidden", true).unwrap();
        let l = layout("maildir:~/M", None).unwrap();
        for bad in ["../evil", "~evil", ".hidden", "a..b", "a.", "a/b", "nul\0x"] {
            assert!(l.validate(bad, true).is_err(), "{bad}");
        }
        l.validate("INBOX", true).unwrap();
    }
}
