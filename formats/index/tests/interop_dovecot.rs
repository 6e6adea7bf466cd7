//! mailsync and Dovecot 2.3.19.1 on the same index: our view equals `doveadm fetch` /
//! `mailbox status`, both append to the same log in turn, our dumps match `doveadm dump`,
//! and our fcntl lock excludes Dovecot.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::dovecot::{doveadm_dump, ok, Env};
use mailsync_index::format::index::rec_flag;
use mailsync_index::{HeaderView, IndexPaths, IndexWriter, View};

const LOC: &str = "sdbox:~/sdbox";

fn inbox(env: &Env) -> PathBuf {
    env.home.join("sdbox/mailboxes/INBOX/dbox-Mails")
}

/// uid → (flags line, modseq) from `doveadm fetch "uid flags modseq"`.
fn fetch(env: &Env) -> BTreeMap<u32, (Vec<String>, u64)> {
    let text = ok(
        "fetch",
        env.doveadm(
            LOC,
            &["fetch", "uid flags modseq", "mailbox", "INBOX", "all"],
        ),
    );
    let mut out = BTreeMap::new();
    for block in text.split('\x0c') {
        let (mut uid, mut flags, mut modseq) = (0, Vec::new(), 0);
        for l in block.lines() {
            if let Some(v) = l.strip_prefix("uid: ") {
                uid = v.parse().unwrap();
            } else if let Some(v) = l.strip_prefix("flags: ") {
                flags = v
                    .split(' ')
                    .filter(|f| !f.is_empty() && *f != "\\Recent")
                    .map(String::from)
                    .collect();
            } else if let Some(v) = l.strip_prefix("modseq: ") {
                modseq = v.parse().unwrap();
            }
        }
        if uid != 0 {
            out.insert(uid, (flags, modseq));
        }
    }
    out
}

fn status(env: &Env) -> BTreeMap<String, u64> {
    let text = ok(
        "status",
        env.doveadm(
            LOC,
            &[
                "mailbox",
                "status",
                "messages uidnext uidvalidity highestmodseq",
                "INBOX",
            ],
        ),
    );
    text.trim()
        .split(' ')
        .skip(1)
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn view_flags(view: &View) -> BTreeMap<u32, (Vec<String>, u64)> {
    view.messages()
        .map(|m| {
            let mut f: Vec<String> = mailstore::Flags::ALL_IN_ORDER
                .iter()
                .filter(|(fl, _)| m.system_flags().contains(*fl) && !fl.is_empty())
                .map(|(_, n)| n.to_string())
                .collect();
            f.extend(
                m.keywords()
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
            );
            (m.uid(), (f, m.modseq()))
        })
        .collect()
}

fn assert_view_equals_dovecot(env: &Env, what: &str) {
    let view = View::open(&inbox(env), "dovecot.index").unwrap();
    assert!(
        view.recoveries().is_empty(),
        "{what}: {:?}",
        view.recoveries()
    );
    assert_eq!(view_flags(&view), fetch(env), "{what}");
    let st = status(env);
    assert_eq!(view.messages_count() as u64, st["messages"], "{what}");
    assert_eq!(view.next_uid() as u64, st["uidnext"], "{what}");
    assert_eq!(view.uid_validity() as u64, st["uidvalidity"], "{what}");
    assert_eq!(view.highest_modseq().max(1), st["highestmodseq"], "{what}");
}

fn assert_clean_log(env: &Env) {
    let log = env.dovecot_log();
    assert!(
        !log.contains("rror") && !log.contains("orrupt") && !log.contains("Panic"),
        "Dovecot complained:\n{log}"
    );
}

#[test]
fn dovecot_and_mailsync_append_to_the_same_sdbox_log_in_turn() {
    let env = Env::new();
    for i in 1..=4 {
        env.save(
            LOC,
            "INBOX",
            &format!("Subject: m{i}\nMessage-ID: <{i}@x>\n\nbody {i}\n"),
        );
    }
    ok(
        "flags",
        env.doveadm(
            LOC,
            &[
                "flags",
                "add",
                "\\Seen $Label1",
                "mailbox",
                "INBOX",
                "uid",
                "2",
            ],
        ),
    );
    // fetch modseq enables the modseq extension
    let before = fetch(&env);
    assert_view_equals_dovecot(&env, "after doveadm");
    let highest_before = View::open(&inbox(&env), "dovecot.index")
        .unwrap()
        .highest_modseq();

    // our turn: client-style (non-EXTERNAL) changes, as an IMAP STORE would write them
    let w = IndexWriter::open(&inbox(&env), "dovecot.index");
    let mut t = w.begin();
    t.flags(1, 1, rec_flag::FLAGGED, 0);
    t.flags(3, 3, rec_flag::ANSWERED | rec_flag::SEEN, 0xff);
    t.keywords(true, b"NonJunk", &[1, 4]);
    t.keywords(false, b"$Label1", &[2]);
    let c1 = t.commit().unwrap();
    assert!(c1.highest_modseq > highest_before);
    let mut t = w.begin();
    t.flags(2, 2, 0, rec_flag::SEEN);
    let c2 = t.commit().unwrap();
    assert!(c2.highest_modseq > c1.highest_modseq);
    env.chown(&env.root);

    let after = fetch(&env);
    assert_eq!(after[&1].0, vec!["\\Flagged", "NonJunk"]);
    assert_eq!(after[&2].0, Vec::<String>::new());
    assert_eq!(after[&3].0, vec!["\\Answered", "\\Seen"]);
    assert_eq!(after[&4].0, vec!["NonJunk"]);
    for uid in 1..=4 {
        assert!(after[&uid].1 > before[&uid].1, "uid {uid} modseq must grow");
    }
    assert_eq!(after[&2].1, c2.highest_modseq);
    assert_view_equals_dovecot(&env, "after mailsync");

    // Dovecot again, then we see it
    ok(
        "flags",
        env.doveadm(
            LOC,
            &["flags", "add", "\\Draft", "mailbox", "INBOX", "uid", "4"],
        ),
    );
    env.save(LOC, "INBOX", "Subject: m5\n\nbody 5\n");
    ok(
        "expunge",
        env.doveadm(LOC, &["expunge", "mailbox", "INBOX", "uid", "1"]),
    );
    assert_view_equals_dovecot(&env, "after doveadm again");
    let view = View::open(&inbox(&env), "dovecot.index").unwrap();
    assert!(view.message(1).is_none());
    assert!(view
        .message(4)
        .unwrap()
        .system_flags()
        .contains(mailstore::Flags::DRAFT));

    // changes since our first commit: 2 (c2), 4, 5 changed; 1 expunged
    match view.changes_since(mailstore::ModSeq(c1.highest_modseq)) {
        mailstore::Changes::Known {
            changed,
            expunged,
            highest_modseq,
        } => {
            let changed: Vec<u32> = changed.iter().map(|u| u.0).collect();
            assert_eq!(changed, vec![2, 4, 5]);
            assert_eq!(expunged.len(), 1);
            assert_eq!(expunged[0].0 .0, 1);
            // sdbox has no guid extension: Dovecot writes an all-zero GUID (None here)
            assert_eq!(highest_modseq.0, view.highest_modseq());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        view.changes_since(mailstore::ModSeq(0)),
        mailstore::Changes::Unknown
    );

    // our log records are fine for doveadm dump, and our dump equals it
    let log = inbox(&env).join("dovecot.index.log");
    let want = ok("doveadm dump", doveadm_dump(&log, Some("log")));
    let got = mailsync_index::dump::dump_with_tz(
        &log,
        Some(mailsync_index::dump::DumpKind::Log),
        &jiff::tz::TimeZone::UTC,
    )
    .unwrap();
    assert_eq!(got, want);
    assert_clean_log(&env);
}

#[test]
fn index_dump_shows_the_records_doveadm_dump_shows() {
    let env = Env::new();
    for i in 1..=3 {
        env.save(LOC, "INBOX", &format!("Subject: m{i}\n\nbody {i}\n"));
    }
    ok(
        "flags",
        env.doveadm(
            LOC,
            &[
                "flags",
                "add",
                "\\Seen $Label1",
                "mailbox",
                "INBOX",
                "uid",
                "2",
            ],
        ),
    );
    fetch(&env);
    let dir = inbox(&env);
    let want = ok("doveadm dump", doveadm_dump(&dir, None));
    let got = mailsync_index::dump::dump_with_tz(&dir, None, &jiff::tz::TimeZone::UTC).unwrap();
    // header and extension sections are identical up to the cache section
    let want_head = want.split("\n-- CACHE").next().unwrap();
    let got_head = got.split("\n-- RECORDS").next().unwrap();
    assert_eq!(got_head.trim_end(), want_head.trim_end());
    // records: identical lines except doveadm's cache lines
    let want_recs: Vec<&str> = want
        .split("-- RECORDS")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(" - cache") && !l.starts_with("    - "))
        .collect();
    let got_recs: Vec<&str> = got.split("-- RECORDS").nth(1).unwrap().lines().collect();
    assert_eq!(got_recs, want_recs);
}

#[test]
fn our_fcntl_lock_excludes_dovecot_writers() {
    let env = Env::new();
    env.save(LOC, "INBOX", "Subject: a\n\nbody\n");
    let dir = inbox(&env);
    let log = dir.join("dovecot.index.log");
    let size_before = std::fs::metadata(&log).unwrap().len();
    let lock = mailsync_index::lock::LogLock::acquire(&log, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    let mut child = env.doveadm_spawn(
        LOC,
        &[],
        &["flags", "add", "\\Flagged", "mailbox", "INBOX", "uid", "1"],
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "doveadm must wait for our lock"
    );
    assert_eq!(std::fs::metadata(&log).unwrap().len(), size_before);
    drop(lock);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view = View::open(&dir, "dovecot.index").unwrap();
    assert!(view
        .message(1)
        .unwrap()
        .system_flags()
        .contains(mailstore::Flags::FLAGGED));
}

#[test]
fn our_new_index_rotation_and_snapshot_are_read_by_dovecot() {
    let env = Env::new();
    let dir = env.root.join("idx");
    std::fs::create_dir_all(&dir).unwrap();
    let w = IndexWriter::open(&dir, "dovecot.index");
    w.create(12345).unwrap();
    let mut t = w.begin().external(true);
    for uid in 1..=5 {
        t.append(uid, if uid % 2 == 0 { rec_flag::SEEN } else { 0 });
    }
    t.ext_intro("modseq", 16, 8, 8);
    t.ext_hdr_update("modseq", 0, &[0; 16]);
    t.commit().unwrap();
    let mut t = w.begin();
    t.keywords(true, b"Junk", &[3]);
    t.flags(1, 2, rec_flag::FLAGGED, 0);
    t.commit().unwrap();
    let mut t = w.begin().external(true);
    t.expunge_guid(5, [0; 16]);
    t.commit().unwrap();
    let before = View::open(&dir, "dovecot.index").unwrap();
    assert!(before.recoveries().is_empty(), "{:?}", before.recoveries());
    w.rotate().unwrap();
    w.write_index().unwrap();
    let after = View::open(&dir, "dovecot.index").unwrap();
    assert_eq!(after.log_position().0, 2);
    assert!(dir.join("dovecot.index.log.2").exists());
    assert_eq!(view_flags(&after), view_flags(&before));
    assert_eq!(after.highest_modseq(), before.highest_modseq());
    assert_eq!(after.uid_validity(), 12345);
    // Dovecot opens our files: doveadm dump index shows the same header and records
    let want = ok("doveadm dump", doveadm_dump(&dir, None));
    let got = mailsync_index::dump::dump_with_tz(&dir, None, &jiff::tz::TimeZone::UTC).unwrap();
    assert_eq!(
        got.split("\n-- RECORDS").next().unwrap().trim_end(),
        want.split("\n-- CACHE").next().unwrap().trim_end()
    );
    for log in ["dovecot.index.log", "dovecot.index.log.2"] {
        let p = dir.join(log);
        let want = ok("doveadm dump", doveadm_dump(&p, Some("log")));
        let got = mailsync_index::dump::dump_with_tz(
            &p,
            Some(mailsync_index::dump::DumpKind::Log),
            &jiff::tz::TimeZone::UTC,
        )
        .unwrap();
        assert_eq!(got, want);
    }
}

/// An index Dovecot wrote: its header read alone answers as the full view, and so it does
/// after flag changes and an expunge Dovecot logged past `P`.
#[test]
fn the_header_of_a_dovecot_written_index_answers_as_the_full_view() {
    let env = Env::new();
    const MAILDIR: &str = "maildir:~/Maildir";
    // Dovecot writes P once a sync read more than 8 KiB of log past it (the fetch after the
    // status that indexed 1,500 deliveries)
    let md = env.home.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    for i in 1..=1500 {
        let name = format!("17000{i}.M{i}P1.host");
        std::fs::write(
            md.join("new").join(name),
            format!("Subject: m{i}\n\nbody\n"),
        )
        .unwrap();
    }
    env.chown(&env.home);
    ok(
        "status",
        env.doveadm(MAILDIR, &["mailbox", "status", "messages", "INBOX"]),
    );
    ok("fetch", env.doveadm(MAILDIR, &["fetch", "uid", "uid", "1"]));
    let flags = |flag: &str, uid: &str| {
        ok(
            "flags",
            env.doveadm(
                MAILDIR,
                &["flags", "add", flag, "mailbox", "INBOX", "uid", uid],
            ),
        )
    };
    assert!(md.join("dovecot.index").exists(), "Dovecot wrote P");
    let paths = IndexPaths::new(&md, "dovecot.index");
    let full = View::open(&md, "dovecot.index").unwrap();
    let head = HeaderView::open(&paths)
        .unwrap()
        .expect("P is current after Dovecot wrote it");
    let (a, b) = (full.header(), head.header());
    assert_eq!(
        (
            a.uid_validity,
            a.next_uid,
            a.messages_count,
            a.seen_messages_count
        ),
        (
            b.uid_validity,
            b.next_uid,
            b.messages_count,
            b.seen_messages_count
        )
    );
    assert_eq!((b.messages_count, b.next_uid), (1500, 1501));
    assert_eq!(head.highest_modseq(), full.highest_modseq());
    assert_eq!(head.last_uid(), Some(1500));
    for e in full.extensions().iter().filter(|e| e.name != "modseq") {
        assert_eq!(
            head.extension(&e.name).map(|x| &x.data),
            Some(&e.data),
            "{}",
            e.name
        );
    }
    // record changes Dovecot logged past P: replayed on the records they name, the header
    // answers as the full view, records (with their modseqs) included
    flags("\\Seen", "3");
    flags("\\Flagged", "1400:1410");
    ok(
        "expunge",
        env.doveadm(MAILDIR, &["expunge", "mailbox", "INBOX", "uid", "1500"]),
    );
    let full = View::open(&md, "dovecot.index").unwrap();
    assert_ne!(
        full.header_on_disk().unwrap().log_file_head_offset as u64,
        full.log_position().1,
        "Dovecot logged the changes past P"
    );
    let head = HeaderView::open(&paths)
        .unwrap()
        .expect("the changes past P are replayed");
    assert!(head.replayed_records() >= 13, "{}", head.replayed_records());
    let (a, b) = (full.header(), head.header());
    assert_eq!(
        (a.messages_count, a.seen_messages_count, a.next_uid, a.flags),
        (b.messages_count, b.seen_messages_count, b.next_uid, b.flags)
    );
    assert_eq!((b.messages_count, b.seen_messages_count), (1499, 1));
    assert_eq!(head.highest_modseq(), full.highest_modseq());
    assert_eq!(head.last_uid(), Some(1499));
    assert_eq!(head.state(), (full.indexid(), full.log_position()));
    for uid in [1, 2, 3, 4, 1399, 1400, 1405, 1410, 1411, 1499] {
        let m = full.message(uid).unwrap();
        assert_eq!(
            head.record_of(uid).unwrap().as_deref(),
            full.index_file().record(m.index),
            "uid {uid}"
        );
    }
    assert_eq!(head.record_of(1500).unwrap(), None);
}
