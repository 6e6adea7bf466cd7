//! The Dovecot-written fixture store (testdata/dovecot-generated/maildir) reads exactly as
//! Dovecot 2.3.19.1 itself reported it (`maildir.expected-*.txt`).

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::{copy_tree, doveadm_flags, open_store, store_names, testdata};
use mailstore::Store;

fn fixture() -> (tempfile::TempDir, mailsync_maildir::MaildirStore) {
    let home = tempfile::tempdir().unwrap();
    copy_tree(
        &testdata("dovecot-generated/maildir"),
        &home.path().join("Maildir"),
    );
    let store = open_store("maildir:~/Maildir", home.path(), None);
    (home, store)
}

/// Parses `doveadm fetch` pager output: blocks of `key: value` lines.
fn expected_fetch() -> Vec<BTreeMap<String, String>> {
    let text =
        fs::read_to_string(testdata("dovecot-generated/maildir.expected-flags.txt")).unwrap();
    let mut out = Vec::new();
    let mut cur = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('\x0c') {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let (k, v) = line
            .split_once(": ")
            .unwrap_or((line.trim_end_matches(':'), ""));
        cur.insert(k.to_string(), v.to_string());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[test]
fn fetch_matches_doveadm() {
    let (_home, store) = fixture();
    let expected = expected_fetch();
    assert_eq!(expected.len(), 53, "fixture has 53 messages");
    let mut got = Vec::new();
    for name in ["Entwürfe", "Archive.2002", "Sent Items", "INBOX"] {
        let mut mb = store.open_mailbox(name).unwrap();
        for r in mb.mails().unwrap() {
            let mut m = BTreeMap::new();
            m.insert("mailbox".to_string(), name.to_string());
            m.insert("uid".to_string(), r.uid.to_string());
            m.insert("guid".to_string(), r.guid.to_string());
            m.insert("flags".to_string(), doveadm_flags(&r));
            m.insert("size.physical".to_string(), r.physical_size.to_string());
            got.push(m);
        }
    }
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e);
    }
}

#[test]
fn status_matches_doveadm() {
    let (_home, store) = fixture();
    let text =
        fs::read_to_string(testdata("dovecot-generated/maildir.expected-status.txt")).unwrap();
    for line in text.lines() {
        let (name, rest) = line.split_once(" messages=").unwrap();
        let mut mb = store.open_mailbox(name).unwrap();
        let s = mb.status().unwrap();
        let got = format!(
            "{} uidnext={} uidvalidity={} unseen={}",
            s.messages, s.uid_next, s.uid_validity, s.unseen
        );
        assert_eq!(got, rest, "{name}");
        assert_eq!(
            s.recent, s.messages,
            "every message is \\Recent without an index"
        );
    }
}

#[test]
fn mailbox_list_matches_doveadm_with_ghost_parent() {
    let (_home, store) = fixture();
    let text =
        fs::read_to_string(testdata("dovecot-generated/maildir.expected-mailboxes.txt")).unwrap();
    let mut expected: Vec<String> = text.lines().map(String::from).collect();
    expected.sort();
    assert_eq!(store_names(&store), expected);
    let list = store.list_mailboxes().unwrap();
    let archive = list.iter().find(|i| i.name == "Archive").unwrap();
    assert!(archive.attrs.nonexistent && archive.attrs.children && archive.guid.is_none());
    let sent = list.iter().find(|i| i.name == "Sent Items").unwrap();
    assert_eq!(
        sent.guid.unwrap().to_string(),
        "94dba02cff790c6b533c000083ecc375"
    );
}

#[test]
fn reading_changes_no_uid_and_writes_no_uidlist() {
    let (home, store) = fixture();
    let root = home.path().join("Maildir");
    let before = fs::read(root.join("dovecot-uidlist")).unwrap();
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    inbox.mails().unwrap();
    inbox.sync().unwrap();
    assert_eq!(fs::read(root.join("dovecot-uidlist")).unwrap(), before);
    // The missing cur/ new/ tmp/ of the folders were created, as Dovecot does.
    let _ = store.open_mailbox("Sent Items").unwrap();
    for sub in ["cur", "new", "tmp"] {
        assert!(root.join(".Sent Items").join(sub).is_dir(), "{sub}");
    }
}

#[test]
fn message_bytes_are_the_files() {
    let (home, store) = fixture();
    let mut mb = store.open_mailbox("Archive.2002").unwrap();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut mb.open_mail(mailstore::Uid(1)).unwrap(), &mut body).unwrap();
    let file = home
        .path()
        .join("Maildir/.Archive.2002/new/1795979775.M747593P15443.vm,S=378,W=407:2,RS");
    assert_eq!(body, fs::read(file).unwrap());
    // W= is trusted for the virtual size, as Dovecot does.
    assert_eq!(mb.virtual_size(mailstore::Uid(1)).unwrap(), 407);
}
