//! The view built from the Dovecot-written logs in testdata/ equals what `doveadm fetch` and
//! `doveadm mailbox status` reported on the same stores (`<fmt>.expected-*.txt`, recorded
//! when the stores were generated).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use mailsync_index::View;

/// mailbox name → [(uid, flags+keywords without \Recent)]
fn expected_flags(fmt: &str) -> BTreeMap<String, Vec<(u32, Vec<String>)>> {
    let text =
        std::fs::read_to_string(common::testdata_dir().join(format!("{fmt}.expected-flags.txt")))
            .unwrap();
    let mut out: BTreeMap<String, Vec<(u32, Vec<String>)>> = BTreeMap::new();
    for block in text.split("\x0c\n") {
        let mut mailbox = None;
        let mut uid = 0;
        let mut flags = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("mailbox: ") {
                mailbox = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("uid: ") {
                uid = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("flags: ") {
                flags = v
                    .split(' ')
                    .filter(|f| !f.is_empty() && *f != "\\Recent")
                    .map(String::from)
                    .collect();
            }
        }
        if let Some(m) = mailbox {
            out.entry(m).or_default().push((uid, flags));
        }
    }
    out
}

fn expected_status(fmt: &str) -> BTreeMap<String, (u32, u32, u32)> {
    let text =
        std::fs::read_to_string(common::testdata_dir().join(format!("{fmt}.expected-status.txt")))
            .unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        // "<name> messages=N uidnext=N uidvalidity=N unseen=N" (name may contain spaces)
        let idx = line.find(" messages=").unwrap();
        let name = line[..idx].to_string();
        let mut vals = BTreeMap::new();
        for kv in line[idx + 1..].split(' ') {
            let (k, v) = kv.split_once('=').unwrap();
            vals.insert(k.to_string(), v.parse::<u32>().unwrap());
        }
        out.insert(
            name,
            (vals["messages"], vals["uidnext"], vals["uidvalidity"]),
        );
    }
    out
}

fn index_dir(fmt: &str, mailbox: &str) -> PathBuf {
    let root = common::testdata_dir().join(fmt);
    let mailbox = &mailbox.replace('ü', "&APw-");
    match fmt {
        "sdbox" | "mdbox" => root.join("mailboxes").join(mailbox).join("dbox-Mails"),
        "maildir" if mailbox == "INBOX" => root,
        "maildir" => root.join(format!(".{mailbox}")),
        "mbox" => match mailbox.split_once('/') {
            Some((a, b)) => root.join(a).join(".imap").join(b),
            None => root.join(".imap").join(mailbox),
        },
        _ => unreachable!(),
    }
}

fn flags_of(m: &mailsync_index::Message) -> Vec<String> {
    let mut out: Vec<String> = mailstore::Flags::ALL_IN_ORDER
        .iter()
        .filter(|(f, _)| m.system_flags().contains(*f) && !f.is_empty())
        .map(|(_, n)| n.to_string())
        .collect();
    out.extend(
        m.keywords()
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
    );
    out
}

#[test]
fn dbox_views_equal_doveadm_fetch_and_status() {
    for fmt in ["sdbox", "mdbox"] {
        let flags = expected_flags(fmt);
        let status = expected_status(fmt);
        assert_eq!(flags.len(), 4);
        for (mailbox, msgs) in &flags {
            let dir = index_dir(fmt, mailbox);
            let view = View::open(&dir, "dovecot.index")
                .unwrap_or_else(|e| panic!("{fmt} {mailbox}: {e}"));
            assert!(view.recoveries().is_empty(), "{:?}", view.recoveries());
            let got: Vec<(u32, Vec<String>)> =
                view.messages().map(|m| (m.uid(), flags_of(&m))).collect();
            assert_eq!(&got, msgs, "{fmt} {mailbox}");
            let (messages, uidnext, uidvalidity) = status[mailbox];
            assert_eq!(view.messages_count() as u32, messages, "{fmt} {mailbox}");
            assert_eq!(view.next_uid(), uidnext, "{fmt} {mailbox}");
            assert_eq!(view.uid_validity(), uidvalidity, "{fmt} {mailbox}");
        }
    }
}

#[test]
fn maildir_and_mbox_views_hold_what_dovecot_synced() {
    for fmt in ["maildir", "mbox"] {
        let status = expected_status(fmt);
        for (mailbox, (messages, uidnext, uidvalidity)) in &status {
            let dir = index_dir(fmt, mailbox);
            let view = View::open(&dir, "dovecot.index")
                .unwrap_or_else(|e| panic!("{fmt} {mailbox} {}: {e}", dir.display()));
            assert_eq!(view.messages_count() as u32, *messages, "{fmt} {mailbox}");
            assert_eq!(view.next_uid(), *uidnext, "{fmt} {mailbox}");
            assert_eq!(view.uid_validity(), *uidvalidity, "{fmt} {mailbox}");
        }
        // flags: the index holds the system flags Dovecot synced from the files
        for (mailbox, msgs) in expected_flags(fmt) {
            let dir = index_dir(fmt, &mailbox);
            let view = View::open(&dir, "dovecot.index").unwrap();
            for (uid, want) in msgs {
                let m = view.message(uid).unwrap();
                let got: Vec<String> = flags_of(&m);
                let want_sys: Vec<&String> = want.iter().filter(|f| f.starts_with('\\')).collect();
                let got_sys: Vec<&String> = got.iter().filter(|f| f.starts_with('\\')).collect();
                assert_eq!(got_sys, want_sys, "{fmt} {mailbox} uid {uid}");
            }
        }
    }
}

#[test]
fn map_and_list_indexes_replay() {
    let map = View::open(
        &common::testdata_dir().join("mdbox/storage"),
        "dovecot.map.index",
    )
    .unwrap();
    assert!(map.recoveries().is_empty(), "{:?}", map.recoveries());
    assert!(map.extension("map").is_some() && map.extension("ref").is_some());
    // every mdbox mailbox message's map_uid exists in the map index
    for mailbox in ["INBOX", "Archive/2002", "Sent Items", "Entwürfe"] {
        let view = View::open(&index_dir("mdbox", mailbox), "dovecot.index").unwrap();
        for m in view.messages() {
            let rec = mailsync_index::format::ext::MdboxRecord::decode(m.ext("mdbox").unwrap());
            let mm = map
                .message(rec.map_uid)
                .unwrap_or_else(|| panic!("map_uid {}", rec.map_uid));
            let r = mailsync_index::format::ext::MapRecord::decode(mm.ext("map").unwrap());
            assert!(r.size > 0 && r.file_id > 0);
            assert_eq!(
                mailsync_index::format::ext::ref_count(mm.ext("ref").unwrap()),
                1
            );
        }
    }
    for fmt in ["maildir", "sdbox", "mdbox", "mbox"] {
        let dir = if fmt == "mbox" {
            common::testdata_dir().join("mbox/.imap")
        } else {
            common::testdata_dir().join(fmt)
        };
        let list = View::open(&dir, "dovecot.list.index").unwrap();
        assert!(
            list.recoveries().is_empty(),
            "{fmt}: {:?}",
            list.recoveries()
        );
        assert!(list.extension("list").is_some(), "{fmt}");
        assert!(
            list.messages_count() >= 4,
            "{fmt}: {}",
            list.messages_count()
        );
    }
}
