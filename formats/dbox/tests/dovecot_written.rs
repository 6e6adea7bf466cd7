//! Stores written by Dovecot 2.3.19.1 (testdata/, see SOURCES.md) read in mailsync exactly
//! as `doveadm fetch`/`mailbox status`/`mailbox list` showed them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mailstore::{Flags, Location, Store, StoreOptions};
use mailsync_dbox::DboxStore;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// (mailbox, uid) → (guid, flags without \Recent, physical size) from expected-flags.
fn expected_fetch(fmt: &str) -> BTreeMap<(String, u32), (String, String, u64)> {
    let text = std::fs::read_to_string(testdata(&format!("{fmt}.expected-flags.txt"))).unwrap();
    let mut out = BTreeMap::new();
    // doveadm pager output: records separated by form-feed lines
    for block in text.split("\x0c\n").filter(|b| !b.trim().is_empty()) {
        let mut f: BTreeMap<&str, &str> = BTreeMap::new();
        for line in block.lines() {
            let (k, v) = line.split_once(':').unwrap();
            f.insert(k.trim(), v.trim());
        }
        let flags: Vec<&str> = f["flags"]
            .split_whitespace()
            .filter(|x| *x != "\\Recent")
            .collect();
        out.insert(
            (f["mailbox"].to_string(), f["uid"].parse().unwrap()),
            (
                f["guid"].to_string(),
                flags.join(" "),
                f["size.physical"].parse().unwrap(),
            ),
        );
    }
    out
}

fn flag_text(flags: Flags, keywords: &[mailstore::Keyword]) -> String {
    let mut parts: Vec<String> = Flags::ALL_IN_ORDER
        .iter()
        .filter(|(f, _)| *f != Flags::RECENT && flags.contains(*f))
        .map(|(_, n)| n.to_string())
        .collect();
    parts.extend(keywords.iter().map(|k| k.to_string()));
    parts.join(" ")
}

fn open_copy(fmt: &str) -> (tempfile::TempDir, Box<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&testdata(fmt), &dir.path().join(fmt));
    let loc = Location::parse(&format!("{fmt}:~/{fmt}"), Some(dir.path())).unwrap();
    let store = DboxStore::open(&loc, &StoreOptions::default()).unwrap();
    (dir, Box::new(store))
}

pub fn check_store_reads_as_dovecot_showed(fmt: &str) {
    let (_dir, store) = open_copy(fmt);
    let mut want_names: Vec<String> =
        std::fs::read_to_string(testdata(&format!("{fmt}.expected-mailboxes.txt")))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
    want_names.sort();
    let mut names: Vec<String> = store
        .list_mailboxes()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    assert_eq!(names, want_names);

    let want = expected_fetch(fmt);
    let mut got = BTreeMap::new();
    let selectable: Vec<String> = store
        .list_mailboxes()
        .unwrap()
        .into_iter()
        .filter(|m| !m.attrs.noselect && !m.attrs.nonexistent)
        .map(|m| m.name)
        .collect();
    for name in &selectable {
        let mut mb = store.open_mailbox(name).unwrap();
        for r in mb.mails().unwrap() {
            let mut body = Vec::new();
            mb.open_mail(r.uid).unwrap().read_to_end(&mut body).unwrap();
            assert_eq!(body.len() as u64, r.physical_size, "{name} {}", r.uid);
            assert!(!body.contains(&b'\r'), "dbox bodies are LF-only");
            assert_eq!(
                r.virtual_size,
                Some(mailstore::virtual_size_of(&mut &body[..]).unwrap())
            );
            got.insert(
                (name.clone(), r.uid.0),
                (
                    r.guid.to_string(),
                    flag_text(r.flags, &r.keywords),
                    r.physical_size,
                ),
            );
        }
    }
    assert_eq!(got, want);

    let status = std::fs::read_to_string(testdata(&format!("{fmt}.expected-status.txt"))).unwrap();
    for line in status.lines() {
        let (name, rest) = line.split_once(" messages=").unwrap();
        let fields: BTreeMap<&str, u64> = format!("messages={rest}")
            .split(' ')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (
                    Box::leak(k.to_string().into_boxed_str()) as &str,
                    v.parse().unwrap(),
                )
            })
            .collect();
        let st = store.open_mailbox(name).unwrap().status().unwrap();
        assert_eq!(st.messages as u64, fields["messages"], "{name}");
        assert_eq!(st.uid_next as u64, fields["uidnext"], "{name}");
        assert_eq!(st.uid_validity as u64, fields["uidvalidity"], "{name}");
        assert_eq!(st.unseen as u64, fields["unseen"], "{name}");
        assert!(!st.guid.is_zero());
    }
}

use std::io::Read;

#[test]
fn dovecot_written_sdbox_reads_as_doveadm_showed() {
    check_store_reads_as_dovecot_showed("sdbox");
}

/// Includes expunged-but-unpurged messages in `m.*` (refcount 0), which must not show.
#[test]
fn dovecot_written_mdbox_reads_as_doveadm_showed() {
    check_store_reads_as_dovecot_showed("mdbox");
}
