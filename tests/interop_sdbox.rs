//! sdbox interop with the real Dovecot 2.3 (issue #4, point 4).
//!
//! The same operations are done once with `doveadm` and once with `mailsync` on an sdbox
//! store; then both tools read the result and must report exactly the same mailboxes,
//! statuses, UIDs, GUIDs, flags, sizes, dates and message bytes. Dovecot must log nothing
//! about a store mailsync wrote, and `doveadm force-resync` must change nothing a client
//! sees. (The scenario is `tests/harness/scenario.rs`.)

mod harness;

use harness::scenario::*;

use harness::{clean, ok, sorted_table, Env};

const SDBOX: Scenario = Scenario {
    config: "",
    location: "sdbox:~/sdbox",
    parent: "Archive",
    nested: "Archive/2024",
};
const SDBOX_SLASH: Scenario = Scenario {
    config: NS_SLASH,
    location: "sdbox:~/sdbox",
    parent: "Archive",
    nested: "Archive/2024",
};

fn mailsync_written_reads_the_same(sc: &Scenario) {
    let env = Env::with_config(sc.config);
    populate(&env, sc, mailsync_tool, "mailsync");
    assert_same_views(&env, sc);
    assert_eq!(status_line(&env, sc, "INBOX"), "INBOX messages=6 uidnext=8");
    // Dovecot's own consistency check finds nothing to fix: UIDs and GUIDs stay put.
    // force-resync always rebuilds an sdbox index and says so, for Dovecot's own stores
    // too (sdbox-sync.c: "Rebuilding index"); any other message is a problem.
    let before = views(&env, sc, doveadm_tool, "doveadm");
    let out = env.doveadm(sc.location, &["force-resync", "*"]);
    assert!(out.status.success(), "doveadm force-resync failed");
    assert_only_rebuild_notices(&String::from_utf8_lossy(&out.stderr));
    let after = views(&env, sc, doveadm_tool, "doveadm");
    assert!(
        before == after,
        "doveadm force-resync changed what Dovecot sees"
    );
    assert_only_rebuild_notices(&env.dovecot_log());
}

/// Every line is the notice Dovecot prints for any sdbox force-resync.
fn assert_only_rebuild_notices(text: &str) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("Warning: sdbox ") && line.ends_with(": Rebuilding index"),
            "Dovecot logged a problem:\n{text}"
        );
    }
}

#[test]
fn dovecot_written_sdbox_reads_the_same_in_mailsync() {
    dovecot_written_reads_the_same(&SDBOX);
}

#[test]
fn dovecot_written_sdbox_with_slash_namespace_reads_the_same() {
    dovecot_written_reads_the_same(&SDBOX_SLASH);
}

#[test]
fn mailsync_written_sdbox_reads_the_same_in_dovecot() {
    mailsync_written_reads_the_same(&SDBOX);
}

#[test]
fn mailsync_written_sdbox_with_slash_namespace_reads_the_same() {
    mailsync_written_reads_the_same(&SDBOX_SLASH);
}

/// Dovecot and mailsync take turns saving into the same sdbox mailbox, then save at the
/// same time (both assign UIDs under the index log lock):
/// nothing is lost, no UID is used twice, and both tools see the same thing.
#[test]
fn dovecot_and_mailsync_saving_into_one_sdbox_lose_nothing() {
    let env = Env::new();
    let loc = "sdbox:~/sdbox";
    let msg = |who: &str, i: usize| {
        format!("Subject: {who} {i}\nMessage-ID: <{who}{i}@x>\n\nfrom {who} {i}\n").into_bytes()
    };
    let mut expected = Vec::new();
    for i in 0..8 {
        clean(
            "doveadm save",
            env.doveadm_stdin(loc, &["save"], Some(&msg("dovecot", i))),
        );
        clean(
            "mailsync save",
            env.mailsync_stdin(loc, &["save"], Some(&msg("mailsync", i))),
        );
        expected.push(format!("dovecot {i}"));
        expected.push(format!("mailsync {i}"));
        if i % 3 == 2 {
            // Flag changes from both sides in between.
            clean(
                "doveadm flags",
                env.doveadm(
                    loc,
                    &["flags", "add", "\\Seen", "mailbox", "INBOX", "uid", "1:*"],
                ),
            );
            clean(
                "mailsync flags",
                env.mailsync(
                    loc,
                    &["flags", "add", "\\Flagged kw", "mailbox", "INBOX", "all"],
                ),
            );
        }
    }
    let (uids, subjects) = subjects_and_uids(&env, loc);
    assert_eq!(uids, (1..=16).collect::<Vec<u32>>());
    assert_eq!(subjects, expected);

    // Concurrent: both tools save at once, contending for the dovecot.index.log lock.
    std::thread::scope(|s| {
        let e = &env;
        s.spawn(move || {
            for i in 100..112 {
                clean(
                    "doveadm save",
                    e.doveadm_stdin(loc, &["save"], Some(&msg("dovecot", i))),
                );
            }
        });
        s.spawn(move || {
            for i in 100..112 {
                clean(
                    "mailsync save",
                    e.mailsync_stdin(loc, &["save"], Some(&msg("mailsync", i))),
                );
            }
        });
    });
    let (uids, subjects) = subjects_and_uids(&env, loc);
    assert_eq!(uids.len(), 40, "messages lost or duplicated: {subjects:?}");
    let mut sorted = uids.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 40, "a UID was used twice: {uids:?}");
    for who in ["dovecot", "mailsync"] {
        for i in 100..112 {
            let s = format!("{who} {i}");
            assert_eq!(
                subjects.iter().filter(|x| **x == s).count(),
                1,
                "{s} missing or doubled"
            );
        }
    }
    let sc = Scenario {
        config: "",
        location: loc,
        parent: "",
        nested: "",
    };
    let d = sorted_table(&ok(
        "doveadm",
        env.doveadm(
            sc.location,
            &["-f", "tab", "fetch", "uid guid flags hdr.subject", "all"],
        ),
    ));
    let m = sorted_table(&ok(
        "mailsync",
        env.mailsync(
            sc.location,
            &["-f", "tab", "fetch", "uid guid flags hdr.subject", "all"],
        ),
    ));
    // \Recent is per-session state: doveadm claims it, mailsync only reads it.
    let strip = |t: String| {
        t.replace(" \\Recent", "")
            .replace("\\Recent ", "")
            .replace("\\Recent", "")
    };
    assert_eq!(strip(d), strip(m));
}

/// What dsync passes to a save (GUID, received and saved dates, flags, keywords) is kept,
/// and Dovecot reads the message with the same GUID, date and flags, logging nothing
/// about the extra `S` (saved date) metadata line.
#[test]
fn saves_with_dsync_metadata_read_the_same_in_dovecot() {
    use mailstore::{Flags, Guid, Keyword, Location, NewMail, Store, StoreOptions};
    for sc in [SDBOX, mdbox_scenario()] {
        let env = Env::with_config(sc.config);
        let loc = Location::parse(sc.location, Some(&env.home)).unwrap();
        let store = mailsync_dbox::DboxStore::open(&loc, &StoreOptions::default()).unwrap();
        let mut inbox = store.open_mailbox("INBOX").unwrap();
        let mut t = inbox.begin().unwrap();
        let mail = NewMail {
            guid: Some(Guid::from_bytes("0123456789abcdef0123456789abcdef")),
            uid: Some(mailstore::Uid(7)),
            received_date: Some(1_500_000_000),
            saved_date: Some(1_600_000_000),
            flags: Flags::SEEN | Flags::ANSWERED,
            keywords: vec![Keyword::from("$Forwarded")],
            pop3: Default::default(),
        };
        t.save(mail, &mut &b"Subject: dsync\r\n\r\nbody\r\n"[..])
            .unwrap();
        t.commit().unwrap();
        drop(inbox);
        env.chown_tree(&env.home);
        let out = clean(
            "doveadm fetch",
            env.doveadm(
                sc.location,
                &[
                    "-f",
                    "tab",
                    "fetch",
                    "uid guid flags date.received size.physical",
                    "all",
                ],
            ),
        );
        let text = String::from_utf8(out).unwrap();
        let row: Vec<&str> = text.lines().nth(1).unwrap().split('\t').collect();
        assert_eq!(row[0], "7");
        assert_eq!(row[1], "0123456789abcdef0123456789abcdef");
        assert!(row[2].contains("\\Answered \\Seen") && row[2].contains("$Forwarded"));
        assert!(row[3].starts_with("2017-07-14"), "{}", row[3]);
        assert_eq!(row[4], "21");
        assert_same_views(&env, &sc);
        let mut inbox = store.open_mailbox("INBOX").unwrap();
        assert_eq!(inbox.mails().unwrap()[0].saved_date, 1_600_000_000);
    }
}

fn mdbox_scenario() -> Scenario {
    Scenario {
        config: "",
        location: "mdbox:~/mdbox",
        parent: "Archive",
        nested: "Archive/2024",
    }
}

/// What dsync does to a new mailbox before copying into it (UIDVALIDITY, NEXTUID and
/// HIGHESTMODSEQ of the source) is what Dovecot then reports, for sdbox and mdbox.
#[test]
fn update_mailbox_counters_read_the_same_in_dovecot() {
    use mailstore::{ErrorKind, Location, MailboxUpdate, NewMail, Store, StoreOptions, Uid};
    for sc in [SDBOX, mdbox_scenario()] {
        let env = Env::with_config(sc.config);
        let loc = Location::parse(sc.location, Some(&env.home)).unwrap();
        let store = mailsync_dbox::DboxStore::open(&loc, &StoreOptions::default()).unwrap();
        // INBOX comes into existence when first opened; doveadm's `mailbox status *`
        // skips an INBOX not yet on disk while mailsync's opens (creates) it
        store.open_mailbox("INBOX").unwrap();
        store.create_mailbox("Conv", None).unwrap();
        let guid = store
            .list_mailboxes()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "Conv")
            .unwrap()
            .guid;
        let mut mb = store.open_mailbox("Conv").unwrap();
        mb.update_mailbox(&MailboxUpdate {
            uid_validity: Some(1_234_567),
            min_uid_next: Some(50),
            min_highest_modseq: Some(77),
        })
        .unwrap();
        let mut t = mb.begin().unwrap();
        t.save(NewMail::default(), &mut &b"Subject: c\n\nc\n"[..])
            .unwrap();
        assert_eq!(t.commit().unwrap().saved, [Uid(50)]);
        let st = mb.status().unwrap();
        assert_eq!((st.uid_validity, st.uid_next), (1_234_567, 51));
        assert!(st.highest_modseq > 77);
        // with a message in it, UIDVALIDITY can't change any more
        let e = mb
            .update_mailbox(&MailboxUpdate {
                uid_validity: Some(7),
                min_uid_next: None,
                min_highest_modseq: None,
            })
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotPossible);
        drop(mb);
        // the mailbox GUID survived the index re-creation
        let again = store
            .list_mailboxes()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "Conv")
            .unwrap()
            .guid;
        assert_eq!(again, guid);
        env.chown_tree(&env.home);
        let out = clean(
            "doveadm status",
            env.doveadm(
                sc.location,
                &[
                    "-f",
                    "tab",
                    "mailbox",
                    "status",
                    "uidvalidity uidnext highestmodseq messages",
                    "Conv",
                ],
            ),
        );
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        let head: Vec<&str> = lines.next().unwrap().split('\t').collect();
        let row: Vec<&str> = lines.next().unwrap().split('\t').collect();
        let field = |name: &str| row[head.iter().position(|h| *h == name).unwrap()];
        assert_eq!(field("uidvalidity"), "1234567");
        assert_eq!(field("uidnext"), "51");
        assert_eq!(field("highestmodseq"), st.highest_modseq.to_string());
        assert_eq!(field("messages"), "1");
        assert_same_views(&env, &sc);
    }
}
