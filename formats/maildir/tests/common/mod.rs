//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use mailstore::{Flags, Location, MailRecord, MailboxInfo, Store, StoreOptions};
use mailsync_maildir::MaildirStore;

/// The workspace's testdata directory.
pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

/// Copies a directory tree (files made writable), so read-only fixtures can be opened
/// read-write.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest).unwrap();
            let mut perm = fs::metadata(&dest).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            fs::set_permissions(&dest, perm).unwrap();
        }
    }
}

pub fn open_store(spec: &str, home: &Path, separator: Option<char>) -> MaildirStore {
    let loc = Location::parse(spec, Some(home)).unwrap();
    MaildirStore::open(
        &loc,
        &StoreOptions {
            separator,
            ..Default::default()
        },
    )
    .unwrap()
}

/// The names in one directory, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// What `list_mailboxes` says about `name` (panics when it is not listed).
pub fn listed(store: &dyn Store, name: &str) -> MailboxInfo {
    store
        .list_mailboxes()
        .unwrap()
        .into_iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} is not listed"))
}

/// All files below a directory, relative, sorted.
pub fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for entry in rd {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Flags as `doveadm fetch flags` prints them: system flags in Dovecot's order, then
/// keywords in mailbox order.
pub fn doveadm_flags(r: &MailRecord) -> String {
    let mut parts: Vec<String> = Flags::ALL_IN_ORDER
        .iter()
        .filter(|(f, _)| r.flags.contains(*f))
        .map(|(_, n)| n.to_string())
        .collect();
    parts.extend(r.keywords.iter().map(|k| k.to_string()));
    parts.join(" ")
}

pub fn store_names(store: &dyn Store) -> Vec<String> {
    let mut v: Vec<String> = store
        .list_mailboxes()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    v.sort();
    v
}
