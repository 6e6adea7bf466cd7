//! The sync engine over pairs of in-memory stores: every row of dsync-algorithm.md §4.7,
//! the worked examples §4.8–4.10, the modes, and a randomized model test.

use std::io::Read;

use mailstore::memory::MemoryStore;
use mailstore::{
    FlagOp, FlagUpdate, Flags, Guid, Keyword, Location, MailboxUpdate, NewMail, Pop3Info, Store,
    Uid,
};
use mailsync::sync::{self, MergeKind, SyncOptions};

fn store() -> MemoryStore {
    MemoryStore::new()
}

fn save(s: &MemoryStore, mailbox: &str, uid: Option<u32>, guid: &str, body: &str) -> u32 {
    if s.open_mailbox(mailbox).is_err() {
        s.create_mailbox(mailbox, None).unwrap();
    }
    let mut mb = s.open_mailbox(mailbox).unwrap();
    let mut tx = mb.begin().unwrap();
    tx.save(
        NewMail {
            guid: Some(Guid::from_bytes(guid.as_bytes())),
            uid: uid.map(Uid),
            received_date: Some(1_700_000_000),
            saved_date: Some(1_700_000_100),
            ..Default::default()
        },
        &mut body.as_bytes(),
    )
    .unwrap();
    tx.commit().unwrap().saved[0].0
}

fn flags(s: &MemoryStore, mailbox: &str, uid: u32, op: FlagOp, f: Flags, kw: &[&str]) {
    let mut mb = s.open_mailbox(mailbox).unwrap();
    let mut tx = mb.begin().unwrap();
    tx.update_flags(
        Uid(uid),
        &FlagUpdate {
            op,
            flags: f,
            keywords: kw.iter().map(|k| Keyword::from(*k)).collect(),
        },
    )
    .unwrap();
    tx.commit().unwrap();
}

fn expunge(s: &MemoryStore, mailbox: &str, uid: u32) {
    let mut mb = s.open_mailbox(mailbox).unwrap();
    let mut tx = mb.begin().unwrap();
    tx.expunge(Uid(uid)).unwrap();
    tx.commit().unwrap();
}

/// (uid, guid, flags without \Recent, sorted keywords, body)
type Msg = (u32, String, u8, Vec<String>, String);

fn contents(s: &MemoryStore, mailbox: &str) -> Vec<Msg> {
    let mut mb = s.open_mailbox(mailbox).unwrap();
    mb.mails()
        .unwrap()
        .into_iter()
        .map(|r| {
            let mut body = String::new();
            mb.open_mail(r.uid)
                .unwrap()
                .read_to_string(&mut body)
                .unwrap();
            let mut kw: Vec<String> = r.keywords.iter().map(|k| k.to_string()).collect();
            kw.sort();
            (
                r.uid.0,
                r.guid.to_string(),
                r.flags.0 & !Flags::RECENT.0,
                kw,
                body,
            )
        })
        .collect()
}

fn uids(s: &MemoryStore, mailbox: &str) -> Vec<(u32, String)> {
    contents(s, mailbox)
        .into_iter()
        .map(|m| (m.0, m.1))
        .collect()
}

fn names(s: &MemoryStore) -> Vec<String> {
    let mut v: Vec<String> = s
        .list_mailboxes()
        .unwrap()
        .into_iter()
        .filter(|i| !i.attrs.nonexistent)
        .map(|i| i.name)
        .collect();
    v.sort();
    v
}

/// `SYNC_DEBUG=1`: print the model's operations and every run's log (with `SYNC_SEED` to
/// replay a failing seed).
fn debug() -> bool {
    std::env::var_os("SYNC_DEBUG").is_some()
}

fn run(a: &MemoryStore, b: &MemoryStore, kind: MergeKind) -> i32 {
    let opts = SyncOptions {
        kind,
        full: true,
        debug: true,
        ..Default::default()
    };
    let r = sync::run(Box::new(a.clone()), Box::new(b.clone()), &opts);
    if debug() {
        eprintln!("RUN exit {} LOG {:#?}", r.exit_code, r.log);
    }
    assert!(
        r.errors.is_empty(),
        "errors: {:?}\nlog: {:#?}",
        r.errors,
        r.log
    );
    r.exit_code
}

/// A two-way run (fast mode) with the debug log; it must exit 0.
fn run_logged(a: &MemoryStore, b: &MemoryStore) -> sync::SyncReport {
    let opts = SyncOptions {
        debug: true,
        ..Default::default()
    };
    let r = sync::run(Box::new(a.clone()), Box::new(b.clone()), &opts);
    assert_eq!(r.exit_code, 0, "{:?}\n{:#?}", r.errors, r.log);
    r
}

fn status(s: &MemoryStore, mailbox: &str) -> (u32, u32) {
    let st = s.open_mailbox(mailbox).unwrap().status().unwrap();
    (st.uid_validity, st.uid_next)
}

/// A and B holding the same five messages in INBOX (B a backup of A).
fn common_five() -> (MemoryStore, MemoryStore) {
    let a = store();
    let b = store();
    for i in 1..=5 {
        save(&a, "INBOX", None, &format!("g{i}"), &format!("body {i}\n"));
    }
    assert_eq!(run(&a, &b, MergeKind::Backup), 0);
    assert_eq!(contents(&a, "INBOX"), contents(&b, "INBOX"));
    (a, b)
}

fn assert_equal(a: &MemoryStore, b: &MemoryStore) {
    assert_eq!(names(a), names(b));
    for n in names(a) {
        assert_eq!(contents(a, &n), contents(b, &n), "mailbox {n}");
    }
}

#[test]
fn backup_into_an_empty_store_copies_uids_guids_dates_flags_uidvalidity_and_uidnext() {
    let a = store();
    save(&a, "INBOX", None, "g1", "one\r\n");
    save(&a, "INBOX", None, "g2", "two\n");
    save(&a, "INBOX", None, "g3", "three");
    expunge(&a, "INBOX", 3);
    flags(&a, "INBOX", 2, FlagOp::Add, Flags::SEEN, &["$Label1"]);
    save(&a, "Work/Projects", None, "w1", "work\n");
    a.set_subscribed("Work/Projects", true).unwrap();
    let b = store();
    assert_eq!(run(&a, &b, MergeKind::Backup), 0);
    assert_equal(&a, &b);
    assert_eq!(status(&a, "INBOX"), status(&b, "INBOX"));
    assert_eq!(status(&a, "Work/Projects"), status(&b, "Work/Projects"));
    assert_eq!(
        b.subscriptions().unwrap(),
        vec!["Work/Projects".to_string()]
    );
    let rec = &b.open_mailbox("INBOX").unwrap().mails().unwrap()[0];
    assert_eq!(
        (rec.received_date, rec.saved_date),
        (1_700_000_000, 1_700_000_100)
    );
    // The mailbox GUID is kept too.
    let ga = a
        .open_mailbox("Work/Projects")
        .unwrap()
        .status()
        .unwrap()
        .guid;
    let gb = b
        .open_mailbox("Work/Projects")
        .unwrap()
        .status()
        .unwrap()
        .guid;
    assert_eq!(ga, gb);
    // A second run finds nothing to do.
    assert_eq!(run(&a, &b, MergeKind::Backup), 0);
    assert_equal(&a, &b);
}

#[test]
fn row_message_only_on_a_above_b_uidnext_is_copied_with_its_uid() {
    let (a, b) = common_five();
    save(&a, "INBOX", None, "new", "new\n");
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_eq!(uids(&b, "INBOX").last().unwrap(), &(6, "new".to_string()));
    assert_equal(&a, &b);
}

#[test]
fn row_expunged_on_a_unchanged_on_b_is_expunged_on_b() {
    let (a, b) = common_five();
    expunge(&a, "INBOX", 2);
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_eq!(
        uids(&b, "INBOX").iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 3, 4, 5]
    );
    assert_equal(&a, &b);
}

#[test]
fn row_expunged_on_a_flags_changed_on_b_is_expunged_on_b() {
    let (a, b) = common_five();
    expunge(&a, "INBOX", 3);
    flags(&b, "INBOX", 3, FlagOp::Add, Flags::FLAGGED, &[]);
    assert_eq!(run(&b, &a, MergeKind::TwoWay), 0);
    assert_eq!(uids(&b, "INBOX").len(), 4);
    assert_equal(&a, &b);
}

#[test]
fn row_message_only_on_a_below_b_uidnext_without_evidence_is_kept_and_renumbered() {
    let (a, b) = common_five();
    // A has a UID 6 that B never saw, yet B's UIDNEXT passed 6 (B had a message 6 and
    // its history was lost with an UIDNEXT bump).
    save(&a, "INBOX", None, "only-a", "only a\n");
    b.open_mailbox("INBOX")
        .unwrap()
        .update_mailbox(&MailboxUpdate {
            min_uid_next: Some(7),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    let u = uids(&a, "INBOX");
    assert_eq!(u.last().unwrap(), &(7, "only-a".to_string()), "{u:?}");
    assert_equal(&a, &b);
}

#[test]
fn worked_example_uid_6_conflict_ends_with_7_and_8_on_both_sides() {
    for (ga, gb) in [("x-lower", "y-higher"), ("y-higher", "x-lower")] {
        let (a, b) = common_five();
        save(&a, "INBOX", None, ga, "from A\n");
        save(&b, "INBOX", None, gb, "from B\n");
        assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
        let u = uids(&a, "INBOX");
        assert_eq!(
            u[5..].to_vec(),
            vec![(7, "x-lower".to_string()), (8, "y-higher".to_string())]
        );
        assert_equal(&a, &b);
        assert_eq!(status(&a, "INBOX").1, 9);
        assert_eq!(status(&b, "INBOX").1, 9);
        assert_eq!(run(&a, &b, MergeKind::TwoWay), 0, "second run");
    }
}

/// POP3 UIDLs and order go with the message (dsync's pop3_uidl / pop3_order in the mail
/// item): into a backup, and through a UID conflict where one side renumbers its own copy
/// and receives the other's.
#[test]
fn pop3_uidl_and_order_travel_with_the_message_also_when_renumbered() {
    let pop3 = |uidl: &str, order: u32| Pop3Info {
        uidl: uidl.as_bytes().to_vec(),
        order,
    };
    let save_pop3 = |s: &MemoryStore, guid: &str, info: Pop3Info| {
        let mut mb = s.open_mailbox("INBOX").unwrap();
        let mut tx = mb.begin().unwrap();
        tx.save(
            NewMail {
                guid: Some(Guid::from_bytes(guid.as_bytes())),
                pop3: info,
                ..Default::default()
            },
            &mut &b"Subject: pop\n\nbody\n"[..],
        )
        .unwrap();
        tx.commit().unwrap();
    };
    let info_of = |s: &MemoryStore, uid: u32| {
        s.open_mailbox("INBOX")
            .unwrap()
            .pop3_info(Uid(uid))
            .unwrap()
    };
    let (a, b) = common_five();
    save_pop3(&a, "x-lower", pop3("UID-6", 6));
    save_pop3(&b, "y-higher", pop3("000abc", 0));
    let backup = store();
    assert_eq!(run(&a, &backup, MergeKind::Backup), 0);
    assert_eq!(info_of(&backup, 6), pop3("UID-6", 6));
    assert_eq!(info_of(&backup, 1), Pop3Info::default());
    // UID 6 on both sides: both renumbered to 7 (x) and 8 (y).
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    for s in [&a, &b] {
        assert_eq!(
            uids(s, "INBOX")[5..],
            [(7, "x-lower".into()), (8, "y-higher".into())]
        );
        assert_eq!(info_of(s, 7), pop3("UID-6", 6));
        assert_eq!(info_of(s, 8), pop3("000abc", 0));
    }
}

#[test]
fn same_guid_on_both_sides_at_different_uids_is_never_merged_away() {
    // Header-derived GUIDs can collide: two messages with one GUID stay two messages.
    let (a, b) = common_five();
    save(&a, "INBOX", None, "same", "A's bytes\n");
    save(&b, "INBOX", None, "other", "B's other\n");
    save(&b, "INBOX", None, "same", "B's bytes\n");
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    let bodies: Vec<String> = contents(&a, "INBOX").into_iter().map(|m| m.4).collect();
    assert!(bodies.contains(&"A's bytes\n".to_string()));
    assert!(bodies.contains(&"B's bytes\n".to_string()));
    assert_equal(&a, &b);
}

#[test]
fn one_new_message_at_different_uids_on_both_sides_is_linked_not_duplicated() {
    // What a two-way run killed while renumbering a UID conflict leaves: the primary moved
    // "y" to 8 already, the secondary still holds it at 6 (dsync-mailbox-import.c
    // newmail_link; the bodies are compared, not just the GUIDs).
    let (a, b) = common_five();
    save(&a, "INBOX", Some(7), "x", "x\n");
    save(&a, "INBOX", Some(8), "y", "y's bytes\n");
    assert_eq!(save(&b, "INBOX", Some(6), "y", "y's bytes\n"), 6);
    assert_eq!(save(&b, "INBOX", Some(7), "x", "x\n"), 7);
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    let want: Vec<(u32, String)> = (1..=5)
        .map(|i| (i, format!("g{i}")))
        .chain([(7, "x".to_string()), (8, "y".to_string())])
        .collect();
    assert_eq!(uids(&a, "INBOX"), want);
    assert_equal(&a, &b);
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0, "second run");
    assert_eq!(uids(&b, "INBOX"), want);
}

#[test]
fn linked_messages_take_a_new_uid_when_neither_is_free_and_keep_the_newer_flags() {
    let (a, b) = common_five();
    save(&a, "INBOX", None, "z", "z\r\nline\r\n"); // A: 6
    save(&b, "INBOX", None, "other", "other\n"); // B: 6
    save(&b, "INBOX", None, "w", "w\n"); // B: 7
    save(&a, "INBOX", None, "w", "w\n"); // A: 7 (common)
    save(&b, "INBOX", None, "z", "z\nline\n"); // B: 8, the same text with LF
    save(&a, "INBOX", None, "a-only", "a-only\n"); // A: 8
    flags(&b, "INBOX", 8, FlagOp::Add, Flags::SEEN, &["$Later"]);
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    let on_a = contents(&a, "INBOX");
    let z: Vec<&Msg> = on_a.iter().filter(|m| m.1 == "z").collect();
    assert_eq!(z.len(), 1, "one z, not two: {on_a:?}");
    assert!(z[0].0 >= 9, "z moved to a UID new on both sides: {on_a:?}");
    assert_eq!(z[0].2, Flags::SEEN.0, "B changed z's flags last");
    assert_eq!(z[0].3, vec!["$Later".to_string()]);
    assert_eq!(z[0].4, "z\r\nline\r\n", "A keeps its own bytes");
    let on_b = contents(&b, "INBOX");
    assert_eq!(
        on_a.iter().map(|m| (m.0, &m.1)).collect::<Vec<_>>(),
        on_b.iter().map(|m| (m.0, &m.1)).collect::<Vec<_>>()
    );
    for guid in ["other", "a-only", "w"] {
        assert_eq!(on_b.iter().filter(|m| m.1 == guid).count(), 1, "{guid}");
    }
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0, "second run");
}

#[test]
fn one_way_links_without_writing_the_source() {
    let (s, d) = common_five();
    save(&s, "INBOX", None, "n", "n\n"); // S: 6
    save(&d, "INBOX", Some(9), "n", "n\n"); // D: 9
    let before = contents(&s, "INBOX");
    assert_eq!(run(&s, &d, MergeKind::OneWay), 0);
    assert_eq!(contents(&s, "INBOX"), before);
    let on_d = uids(&d, "INBOX");
    assert_eq!(on_d.iter().filter(|m| m.1 == "n").count(), 1, "{on_d:?}");
    assert_eq!(run(&s, &d, MergeKind::OneWay), 0, "second run");
    assert_eq!(uids(&d, "INBOX"), on_d, "stable");
}

#[test]
fn a_mailbox_renamed_on_both_sides_takes_the_later_name() {
    for (a_time, b_time, want) in [(1000, 2000, "FromB"), (3000, 2000, "FromA")] {
        let (a, b) = common_five();
        save(&a, "Box", None, "box-1", "in box\n");
        assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
        a.set_clock(Some(a_time));
        b.set_clock(Some(b_time));
        a.rename_mailbox("Box", "FromA").unwrap();
        b.rename_mailbox("Box", "FromB").unwrap();
        assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
        let mut want_names = vec!["INBOX".to_string(), want.to_string()];
        want_names.sort();
        assert_eq!(
            names(&a),
            want_names,
            "A renamed at {a_time}, B at {b_time}"
        );
        assert_equal(&a, &b);
        assert_eq!(contents(&a, want).len(), 1);
        assert_eq!(run(&a, &b, MergeKind::TwoWay), 0, "second run");
    }
}

#[test]
fn a_rename_copied_from_the_peer_keeps_the_peers_time_so_a_later_rename_still_wins() {
    let (a, b) = common_five();
    save(&a, "Box", None, "box-1", "in box\n");
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    a.set_clock(Some(1000));
    a.rename_mailbox("Box", "X").unwrap();
    a.set_subscribed("X", true).unwrap();
    // B's clock runs ahead (another host): what it copies is still logged at A's times.
    b.set_clock(Some(5000));
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    let t = b.name_change_times(&["X".to_string()]).unwrap()[0];
    assert_eq!((t.renamed, t.subscription_changed), (1000, 1000));
    // A renames again, at 2000 by its clock: later than its first rename, earlier than
    // B's clock. Had B logged the copied rename at 5000, B's older name would win.
    a.set_clock(Some(2000));
    a.rename_mailbox("X", "Y").unwrap();
    assert_eq!(run(&b, &a, MergeKind::TwoWay), 0);
    assert_eq!(names(&a), ["INBOX", "Y"]);
    assert_equal(&a, &b);
}

/// A delete copied from the peer is logged at the peer's time of the delete (as renames
/// and subscriptions are): mail a third replica received after the real delete keeps
/// that replica's mailbox when it syncs with the copy, as it would with the original.
#[test]
fn a_delete_copied_from_the_peer_keeps_the_peers_time_so_later_mail_elsewhere_survives() {
    let (a, b) = common_five();
    save(&a, "Box", None, "box-1", "in box\n");
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    let c = store();
    assert_eq!(run(&b, &c, MergeKind::TwoWay), 0);
    let guid = mailbox_guid_of(&a, "Box");
    let t0 = 1_700_001_000;
    a.set_clock(Some(t0));
    a.delete_mailbox("Box").unwrap();
    // After the delete, mail arrives in C's copy of the mailbox.
    let mut mb = c.open_mailbox("Box").unwrap();
    let mut tx = mb.begin().unwrap();
    tx.save(
        NewMail {
            guid: Some(Guid::from_bytes(&b"box-2"[..])),
            saved_date: Some(t0 + 10),
            ..Default::default()
        },
        &mut &b"after the delete\n"[..],
    )
    .unwrap();
    tx.commit().unwrap();
    drop(mb);
    // B's clock runs far ahead of A's.
    b.set_clock(Some(t0 + 5000));
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert!(!names(&b).contains(&"Box".to_string()));
    assert!(
        b.deleted_mailboxes().unwrap().contains(&(guid, t0)),
        "{:?}",
        b.deleted_mailboxes().unwrap()
    );
    assert_eq!(run(&b, &c, MergeKind::TwoWay), 0);
    assert!(names(&c).contains(&"Box".to_string()), "{:?}", names(&c));
    assert_eq!(body_of(&c, "Box", 2), "after the delete\n");
}

#[test]
fn subscription_changes_follow_the_later_change_on_either_side() {
    let (a, b) = common_five();
    save(&a, "Box", None, "box-1", "in box\n");
    a.set_clock(Some(1000));
    b.set_clock(Some(1000));
    a.set_subscribed("Box", true).unwrap();
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_eq!(b.subscriptions().unwrap(), ["Box"]);
    // B unsubscribes later: A follows (before, a two-way run only ever added).
    b.set_clock(Some(2000));
    b.set_subscribed("Box", false).unwrap();
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert!(a.subscriptions().unwrap().is_empty());
    assert!(b.subscriptions().unwrap().is_empty());
    // A subscribes again, later still: B follows.
    a.set_clock(Some(3000));
    a.set_subscribed("Box", true).unwrap();
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_eq!(b.subscriptions().unwrap(), ["Box"]);
}

#[test]
fn worked_example_one_way_after_divergence() {
    // §4.9: S has 1..5 backed up to D; S gets 6, D expunges 1.
    let (s, d) = common_five();
    save(&s, "INBOX", None, "six", "six\n");
    expunge(&d, "INBOX", 1);
    let before = contents(&s, "INBOX");
    assert_eq!(run(&s, &d, MergeKind::OneWay), 0);
    assert_eq!(
        contents(&s, "INBOX"),
        before,
        "sync -1 never writes the source"
    );
    assert_eq!(
        uids(&d, "INBOX").iter().map(|m| m.0).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6]
    );
    // Two-way: both end 2..6.
    let (s, d) = common_five();
    save(&s, "INBOX", None, "six", "six\n");
    expunge(&d, "INBOX", 1);
    assert_eq!(run(&s, &d, MergeKind::TwoWay), 0);
    assert_eq!(
        uids(&s, "INBOX").iter().map(|m| m.0).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6]
    );
    assert_equal(&s, &d);
    // Backup: D is an exact copy again (UID 1 restored by rebuilding the mailbox).
    let (s, d) = common_five();
    save(&s, "Box", None, "b1", "b1\n");
    save(&s, "Box", None, "b2", "b2\n");
    assert_eq!(run(&s, &d, MergeKind::Backup), 0);
    save(&s, "INBOX", None, "six", "six\n");
    expunge(&d, "INBOX", 1);
    expunge(&d, "Box", 1);
    let code = run(&s, &d, MergeKind::Backup);
    // Box is rebuilt in the same run: an exact copy again.
    assert_eq!(contents(&s, "Box"), contents(&d, "Box"));
    assert_eq!(status(&s, "Box"), status(&d, "Box"));
    // INBOX can't be deleted and its UIDNEXT can't go back under one UIDVALIDITY: it is
    // emptied, its UIDs restarted through another UIDVALIDITY and back to the source's,
    // then filled again — an exact copy in the same run (Dovecot instead empties the INBOX
    // and fails with 65 on every later run).
    assert_eq!(code, 0);
    assert_eq!(contents(&s, "INBOX"), contents(&d, "INBOX"));
    assert_eq!(status(&s, "INBOX"), status(&d, "INBOX"));
    assert_eq!(run(&s, &d, MergeKind::Backup), 0);
}

#[test]
fn worked_example_flag_conflict_higher_modseq_wins_master_on_ties() {
    let (a, b) = common_five();
    flags(&a, "INBOX", 1, FlagOp::Add, Flags::SEEN, &[]);
    // B changes twice, so its modseq is higher: +\Seen then \Flagged + kw for everything
    // (logged: +\Flagged −\Seen +kw). A's +\Seen loses to B's −\Seen (§4.10).
    flags(&b, "INBOX", 1, FlagOp::Add, Flags::SEEN, &[]);
    flags(&b, "INBOX", 1, FlagOp::Replace, Flags::FLAGGED, &["kw"]);
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_eq!(contents(&a, "INBOX")[0].2, Flags::FLAGGED.0);
    assert_eq!(contents(&a, "INBOX")[0].3, vec!["kw".to_string()]);
    assert_equal(&a, &b);
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_equal(&a, &b);
    // Tie on a real conflict (A added \Seen, B removed it; four changes each): the master
    // (A) wins it; the other logged changes of both sides apply.
    let (a, b) = common_five();
    flags(&a, "INBOX", 2, FlagOp::Add, Flags::FLAGGED, &[]);
    flags(&a, "INBOX", 2, FlagOp::Remove, Flags::FLAGGED, &[]);
    flags(&a, "INBOX", 2, FlagOp::Add, Flags::SEEN, &[]);
    flags(&a, "INBOX", 2, FlagOp::Add, Flags::ANSWERED, &[]);
    flags(&b, "INBOX", 2, FlagOp::Add, Flags::SEEN, &[]);
    flags(&b, "INBOX", 2, FlagOp::Remove, Flags::SEEN, &[]);
    flags(&b, "INBOX", 2, FlagOp::Add, Flags::DRAFT, &["b"]);
    flags(&b, "INBOX", 2, FlagOp::Remove, Flags::EMPTY, &["b"]);
    let ma = a.open_mailbox("INBOX").unwrap().mails().unwrap()[1].modseq;
    let mb = b.open_mailbox("INBOX").unwrap().mails().unwrap()[1].modseq;
    assert_eq!(ma, mb);
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_eq!(
        contents(&b, "INBOX")[1].2,
        Flags::SEEN.0 | Flags::ANSWERED.0 | Flags::DRAFT.0
    );
    assert_equal(&a, &b);
}

/// dsync-mailbox-import.c merge_flags: flags and keywords changed on both sides without a
/// conflict are merged flag by flag — each side's additions and removals survive, whatever
/// the modseqs (Dovecot 2.3's observed union, dsync-algorithm.md §4.10 caveat). Changes the
/// engine copied in a sync are not taken for the receiving side's own in the next merge.
#[test]
fn flags_changed_on_both_sides_are_merged_flag_by_flag() {
    let (a, b) = common_five();
    flags(&a, "INBOX", 2, FlagOp::Add, Flags::ANSWERED, &["a"]);
    flags(&b, "INBOX", 2, FlagOp::Add, Flags::DRAFT, &["b"]);
    flags(&b, "INBOX", 2, FlagOp::Add, Flags::SEEN, &[]);
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    let m = &contents(&a, "INBOX")[1];
    assert_eq!(m.2, Flags::ANSWERED.0 | Flags::DRAFT.0 | Flags::SEEN.0);
    let mut kws = m.3.clone();
    kws.sort();
    assert_eq!(kws, vec!["a".to_string(), "b".to_string()]);
    assert_equal(&a, &b);
    // Now A removes its keyword "a", and B — changing message 2 more often, so its modseq
    // is higher — adds \Flagged. B's "a" came from the sync: no change of B's own, so A's
    // removal is no conflict and stands (were the copy B's own addition, B would win it).
    flags(&a, "INBOX", 2, FlagOp::Remove, Flags::EMPTY, &["a"]);
    flags(&b, "INBOX", 2, FlagOp::Add, Flags::FLAGGED, &[]);
    flags(&b, "INBOX", 2, FlagOp::Remove, Flags::FLAGGED, &[]);
    flags(&b, "INBOX", 2, FlagOp::Add, Flags::FLAGGED, &[]);
    let ma = a.open_mailbox("INBOX").unwrap().mails().unwrap()[1].modseq;
    let mb = b.open_mailbox("INBOX").unwrap().mails().unwrap()[1].modseq;
    assert!(mb > ma, "B's modseq {mb} above A's {ma}");
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    let m = &contents(&b, "INBOX")[1];
    assert_eq!(
        m.2,
        Flags::ANSWERED.0 | Flags::DRAFT.0 | Flags::SEEN.0 | Flags::FLAGGED.0
    );
    assert_eq!(m.3, vec!["b".to_string()]);
    assert_equal(&a, &b);
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_equal(&a, &b);
}

#[test]
fn backup_reverts_destination_changes_and_deletes_extras() {
    let (a, b) = common_five();
    flags(&b, "INBOX", 1, FlagOp::Add, Flags::DELETED, &["junk"]);
    save(&b, "Extra", None, "e", "extra\n");
    let before = contents(&a, "INBOX");
    assert_eq!(run(&a, &b, MergeKind::Backup), 0);
    assert_eq!(contents(&a, "INBOX"), before);
    assert_equal(&a, &b);
    assert!(!names(&b).contains(&"Extra".to_string()));
}

#[test]
fn backup_r_reverses_the_direction() {
    let (a, b) = common_five();
    save(&b, "INBOX", None, "from-b", "b\n");
    let opts = SyncOptions {
        kind: MergeKind::Backup,
        reverse: true,
        full: true,
        ..Default::default()
    };
    let r = sync::run(Box::new(a.clone()), Box::new(b.clone()), &opts);
    assert_eq!(r.exit_code, 0, "{:?}", r.errors);
    assert_eq!(uids(&a, "INBOX").len(), 6);
    assert_equal(&a, &b);
}

#[test]
fn mailbox_tree_creates_renames_and_one_way_keeps_destination_extras() {
    let (a, b) = common_five();
    save(&a, "Lists/Rust", None, "r1", "rust\n");
    save(&b, "OnlyB", None, "ob", "only b\n");
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_equal(&a, &b);
    // Rename on A (same GUID) follows to B, contents kept.
    a.rename_mailbox("Lists/Rust", "Lists/Rustlang").unwrap();
    save(
        &b,
        "Lists/Rust",
        None,
        "r2",
        "new mail under the old name\n",
    );
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_equal(&a, &b);
    assert_eq!(uids(&b, "Lists/Rustlang").len(), 2);
    // sync -1: the destination's own mailbox stays, the source is not written.
    save(&b, "OnlyB2", None, "x", "x\n");
    let before = names(&a);
    assert_eq!(run(&a, &b, MergeKind::OneWay), 0);
    assert_eq!(names(&a), before);
    assert!(names(&b).contains(&"OnlyB2".to_string()));
}

#[test]
fn uidvalidity_mismatch_keeps_every_message_and_converges() {
    let a = store();
    let b = store();
    for i in 0..3 {
        save(&a, "Box", None, &format!("a{i}"), &format!("a{i}\n"));
    }
    b.create_mailbox("Box", None).unwrap();
    b.open_mailbox("Box")
        .unwrap()
        .update_mailbox(&MailboxUpdate {
            uid_validity: Some(status(&a, "Box").0 + 1000),
            ..Default::default()
        })
        .unwrap();
    for i in 0..2 {
        save(&b, "Box", None, &format!("b{i}"), &format!("b{i}\n"));
    }
    // Two independently created mailboxes of one name, different UIDVALIDITY.
    assert_ne!(status(&a, "Box").0, status(&b, "Box").0);
    let code = run(&a, &b, MergeKind::TwoWay);
    assert!(code == 0 || code == 2);
    assert_eq!(contents(&a, "Box").len(), 5, "{:?}", uids(&a, "Box"));
    assert_equal(&a, &b);
    assert_eq!(status(&a, "Box"), status(&b, "Box"));
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
}

#[test]
fn state_string_round_trips_through_a_run() {
    let (a, b) = common_five();
    let opts = SyncOptions {
        state: Some(Vec::new()),
        ..Default::default()
    };
    let r = sync::run(Box::new(a.clone()), Box::new(b.clone()), &opts);
    assert_eq!(r.exit_code, 0);
    let text = sync::state::encode(&r.state);
    let decoded = sync::state::decode(&text).unwrap();
    assert_eq!(decoded.len(), 1);
    assert_eq!(decoded[0].last_common_uid, 5);
    // With the state, a UID inside the common range missing on B means B expunged it.
    expunge(&b, "INBOX", 4);
    let opts = SyncOptions {
        state: Some(decoded),
        ..Default::default()
    };
    let r = sync::run(Box::new(a.clone()), Box::new(b.clone()), &opts);
    assert_eq!(r.exit_code, 0);
    assert_eq!(uids(&a, "INBOX").len(), 4);
}

/// Tiny deterministic PRNG (xorshift) so seeds replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mailbox_guid_of(s: &MemoryStore, mailbox: &str) -> mailstore::MailboxGuid {
    s.open_mailbox(mailbox).unwrap().status().unwrap().guid
}

fn body_of(s: &MemoryStore, mailbox: &str, uid: u32) -> String {
    let mut body = String::new();
    s.open_mailbox(mailbox)
        .unwrap()
        .open_mail(Uid(uid))
        .unwrap()
        .read_to_string(&mut body)
        .unwrap();
    body
}

/// Rounds of random changes on both sides of two stores — saves, copies (same GUID and
/// bytes, into the same or another mailbox), flag changes, expunges, mailbox creates,
/// renames and deletes — each followed by `sync` (the closure, which returns the exit
/// code): after each, both sides are equal and hold exactly the messages saved or copied
/// and never expunged (as a multiset of GUIDs: nothing lost, resurrected or duplicated); a
/// second `sync` finds nothing to do. Seeds are printed; `SYNC_SEED` replays.
///
/// One side per round (alternating) also copies and deletes mailboxes; the other side then
/// leaves the mailboxes deleted that round alone (a delete takes the mailbox's mail on both
/// sides, which the model counts only once). Saves use a fixed old saved date, so a delete
/// is never held back by "new mail since the delete".
fn random_model(what: &str, mut sync: impl FnMut(&MemoryStore, &MemoryStore) -> i32) {
    let base = std::env::var("SYNC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    for seed in base..base + 12 {
        println!("{what}: seed {seed}");
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let a = store();
        let b = store();
        let mut counter = 0;
        // GUID → how many messages with it must exist.
        let mut alive: std::collections::BTreeMap<String, i64> = Default::default();
        for round in 0..8 {
            let active = round % 2;
            let mut deleted_guids = std::collections::BTreeSet::new();
            let mut expunged_now = std::collections::BTreeSet::new();
            // The active side goes first: the other then knows what it deleted.
            let order = if active == 0 {
                [(0, &a), (1, &b)]
            } else {
                [(1, &b), (0, &a)]
            };
            for (side_no, side) in order {
                let is_active = side_no == active;
                if is_active {
                    for name in names(side) {
                        if name != "INBOX" && rng.below(8) == 0 {
                            if debug() {
                                eprintln!(
                                    "MODEL round {round} side {side_no} deletes {name}: {:?}",
                                    uids(side, &name)
                                );
                            }
                            deleted_guids.insert(mailbox_guid_of(side, &name));
                            for (_, g) in uids(side, &name) {
                                *alive.get_mut(&g).unwrap() -= 1;
                            }
                            side.delete_mailbox(&name).unwrap();
                        }
                    }
                }
                let deleted_guids = &deleted_guids;
                let untouched = |name: &str| !deleted_guids.contains(&mailbox_guid_of(side, name));
                for name in names(side) {
                    if name != "INBOX" && untouched(&name) && rng.below(10) == 0 {
                        counter += 1;
                        if debug() {
                            eprintln!(
                                "MODEL round {round} side {side_no} renames {name} -> R{counter}"
                            );
                        }
                        side.rename_mailbox(&name, &format!("R{counter}")).unwrap();
                    }
                }
                if rng.below(4) == 0 {
                    counter += 1;
                    side.create_mailbox(&format!("C{counter}"), None).unwrap();
                }
                let boxes: Vec<String> = ["INBOX".to_string(), "Box".into(), "Other".into()]
                    .into_iter()
                    .chain(names(side))
                    .filter(|n| side.open_mailbox(n).is_err() || untouched(n))
                    .collect();
                for _ in 0..rng.below(5) {
                    let mailbox = &boxes[rng.below(boxes.len() as u64) as usize];
                    counter += 1;
                    let g = format!("m{seed}-{counter}");
                    let u = save(side, mailbox, None, &g, &format!("body {g}\n"));
                    if debug() {
                        eprintln!("MODEL round {round} side {side_no} saves {mailbox} {u} {g}");
                    }
                    *alive.entry(g).or_default() += 1;
                }
                if is_active {
                    for _ in 0..rng.below(3) {
                        let from: Vec<(String, u32, String)> = names(side)
                            .into_iter()
                            .flat_map(|n| {
                                uids(side, &n)
                                    .into_iter()
                                    .map(move |(u, g)| (n.clone(), u, g))
                            })
                            .collect();
                        if from.is_empty() {
                            break;
                        }
                        let (n, uid, g) = &from[rng.below(from.len() as u64) as usize];
                        let to = &boxes[rng.below(boxes.len() as u64) as usize];
                        let u = save(side, to, None, g, &body_of(side, n, *uid));
                        if debug() {
                            eprintln!("MODEL round {round} side {side_no} copies {n} {uid} to {to} {u} {g}");
                        }
                        *alive.get_mut(g).unwrap() += 1;
                    }
                }
                for mailbox in names(side) {
                    if !untouched(&mailbox) {
                        continue;
                    }
                    for (uid, g) in uids(side, &mailbox) {
                        match rng.below(6) {
                            0 => {
                                if debug() {
                                    eprintln!("MODEL round {round} side {side_no} expunges {mailbox} {uid} {g}");
                                }
                                expunge(side, &mailbox, uid);
                                // Both sides may expunge the same message in one round.
                                let key = (mailbox_guid_of(side, &mailbox), uid, g.clone());
                                if expunged_now.insert(key) {
                                    *alive.get_mut(&g).unwrap() -= 1;
                                }
                            }
                            1 => flags(side, &mailbox, uid, FlagOp::Add, Flags::SEEN, &["k1"]),
                            2 => flags(side, &mailbox, uid, FlagOp::Replace, Flags::FLAGGED, &[]),
                            _ => {}
                        }
                    }
                }
            }
            // Exit 2 ("not perfectly in sync", e.g. a name both sides use for different
            // mailboxes) asks for another run, as an administrator would.
            let mut code = sync(&a, &b);
            for _ in 0..3 {
                if code != 2 {
                    break;
                }
                code = sync(&a, &b);
            }
            assert_eq!(code, 0, "{what} seed {seed} round {round}");
            assert_equal(&a, &b);
            let mut alive_now = Vec::new();
            for mailbox in names(&a) {
                for (_, g) in uids(&a, &mailbox) {
                    alive_now.push(g);
                }
            }
            alive_now.sort();
            let want: Vec<String> = alive
                .iter()
                .flat_map(|(g, n)| std::iter::repeat_n(g.clone(), (*n).max(0) as usize))
                .collect();
            assert_eq!(alive_now, want, "{what} seed {seed} round {round}");
            assert_eq!(sync(&a, &b), 0, "{what} seed {seed}: second run");
        }
    }
}

#[test]
fn randomized_two_way_model_never_loses_mail_and_converges() {
    random_model("full", |a, b| run(a, b, MergeKind::TwoWay));
}

#[test]
fn randomized_stateful_model_lists_only_changes_and_ends_like_a_full_sync() {
    let mut state: Vec<sync::MailboxStateItem> = Vec::new();
    let mut incremental_rounds = 0;
    random_model("stateful", |a, b| {
        if names(a).is_empty() && names(b).is_empty() {
            state.clear(); // a new pair of stores
        }
        let r = sync::run(
            Box::new(a.clone()),
            Box::new(b.clone()),
            &SyncOptions {
                state: Some(state.clone()),
                debug: true,
                ..Default::default()
            },
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        if debug() {
            eprintln!("STATE IN {state:?}\nLOG {:#?}", r.log);
        }
        incremental_rounds += r
            .log
            .iter()
            .filter(|l| l.starts_with("master:") && l.contains("changes since the state"))
            .count();
        // Through the state string, as the CLI passes it.
        state = sync::state::decode(&sync::state::encode(&r.state)).unwrap();
        r.exit_code
    });
    assert!(incremental_rounds > 50, "{incremental_rounds}");
}

#[test]
fn stateful_run_after_100_changes_lists_only_those_messages() {
    let a = store();
    let b = store();
    for i in 0..1000 {
        save(&a, "INBOX", None, &format!("g{i}"), &format!("body {i}\n"));
    }
    let stateful = |state: Vec<sync::MailboxStateItem>| {
        let r = sync::run(
            Box::new(a.clone()),
            Box::new(b.clone()),
            &SyncOptions {
                state: Some(state),
                debug: true,
                ..Default::default()
            },
        );
        assert_eq!(r.exit_code, 0, "{:?}", r.errors);
        r
    };
    let r = stateful(Vec::new());
    assert_equal(&a, &b);
    // 50 new messages on A, 50 flag changes on B.
    for i in 0..50 {
        save(&a, "INBOX", None, &format!("new{i}"), &format!("new {i}\n"));
        flags(
            &b,
            "INBOX",
            1 + i * 20,
            FlagOp::Add,
            Flags::SEEN,
            &["$Done"],
        );
    }
    let r = stateful(r.state);
    let listed: Vec<&String> = r
        .log
        .iter()
        .filter(|l| l.contains("INBOX: changes since the state"))
        .collect();
    assert_eq!(
        listed,
        [
            "master: INBOX: changes since the state: 50 here, 50 there, 50 looked up",
            "slave: INBOX: changes since the state: 50 here, 50 there, 0 looked up",
        ],
        "{:#?}",
        r.log
    );
    assert_equal(&a, &b);
    assert_eq!(contents(&a, "INBOX")[20].2, Flags::SEEN.0);
    assert_eq!(contents(&a, "INBOX").len(), 1050);
    let r = stateful(r.state);
    assert!(
        r.log
            .iter()
            .any(|l| l == "master: INBOX: unchanged since the state, skipped"),
        "{:#?}",
        r.log
    );
}

#[test]
fn a_flag_change_after_a_sync_wins_even_against_a_side_with_higher_modseqs() {
    let (a, b) = common_five();
    // A's counters race ahead: many changes on A that are synced to B.
    for _ in 0..10 {
        flags(&a, "INBOX", 2, FlagOp::Add, Flags::SEEN, &[]);
        flags(&a, "INBOX", 2, FlagOp::Remove, Flags::SEEN, &[]);
    }
    flags(&a, "INBOX", 1, FlagOp::Add, Flags::SEEN, &[]);
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    // Now only B changes message 1; A's copy is unchanged since the sync.
    flags(
        &b,
        "INBOX",
        1,
        FlagOp::Replace,
        Flags::FLAGGED,
        &["$Important"],
    );
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_eq!(contents(&a, "INBOX")[0].2, Flags::FLAGGED.0);
    assert_eq!(contents(&a, "INBOX")[0].3, vec!["$Important".to_string()]);
    assert_equal(&a, &b);
}

#[test]
fn row_same_guid_at_different_uids_a_copy_on_one_side_arrives_as_a_copy() {
    let (a, b) = common_five();
    // A copies message 2 (same GUID, new UID 6), as COPY does.
    let mut body = String::new();
    a.open_mailbox("INBOX")
        .unwrap()
        .open_mail(Uid(2))
        .unwrap()
        .read_to_string(&mut body)
        .unwrap();
    save(&a, "INBOX", None, "g2", &body);
    let r = run_logged(&a, &b);
    assert_equal(&a, &b);
    let u = uids(&b, "INBOX");
    assert_eq!(u.iter().filter(|m| m.1 == "g2").count(), 2);
    assert_eq!(u.last().unwrap(), &(6, "g2".to_string()));
    // B made it from its own UID 2 (bytes verified equal): no body crossed.
    assert!(
        r.log
            .iter()
            .any(|l| l == "slave: INBOX: local copies (peer UID -> own UID): {Uid(6): Uid(2)}"),
        "{:#?}",
        r.log
    );
    assert!(
        !r.log.iter().any(|l| l.contains("Peer(")),
        "a body was requested: {:#?}",
        r.log
    );
    assert_eq!(body_of(&b, "INBOX", 6), body);
}

/// A local copy needs equal bytes, not just an equal GUID: a message at a new UID whose
/// GUID the receiver holds with other bytes (header-derived GUIDs collide) is transferred,
/// and arrives with its own bytes.
#[test]
fn a_same_guid_with_other_bytes_is_transferred_not_copied() {
    let (a, b) = common_five();
    save(&a, "INBOX", None, "g2", "not the bytes of message 2\n");
    let r = run_logged(&a, &b);
    assert!(
        r.log
            .iter()
            .any(|l| l == "slave: INBOX: local copies (peer UID -> own UID): {}"),
        "{:#?}",
        r.log
    );
    assert_eq!(body_of(&b, "INBOX", 6), "not the bytes of message 2\n");
    assert_ne!(body_of(&b, "INBOX", 2), body_of(&b, "INBOX", 6));
    assert_equal(&a, &b);
}

#[test]
fn exclude_and_mailbox_filters_limit_the_sync() {
    let (a, b) = common_five();
    save(&a, "Spam", None, "s", "spam\n");
    save(&a, "Keep", None, "k", "keep\n");
    let opts = SyncOptions {
        exclude: vec!["Sp*".into()],
        full: true,
        ..Default::default()
    };
    assert_eq!(
        sync::run(Box::new(a.clone()), Box::new(b.clone()), &opts).exit_code,
        0
    );
    assert!(names(&b).contains(&"Keep".to_string()));
    assert!(!names(&b).contains(&"Spam".to_string()));
    save(&a, "Other", None, "o", "other\n");
    let opts = SyncOptions {
        mailbox: Some("Other".into()),
        full: true,
        ..Default::default()
    };
    assert_eq!(
        sync::run(Box::new(a.clone()), Box::new(b.clone()), &opts).exit_code,
        0
    );
    assert!(names(&b).contains(&"Other".to_string()));
    assert!(!names(&b).contains(&"Spam".to_string()));
}

#[test]
fn mailbox_deleted_on_one_side_is_deleted_on_the_other_unless_new_mail_arrived() {
    let (a, b) = common_five();
    save(&a, "Old", None, "o1", "old\n");
    save(&a, "Busy", None, "b1", "busy\n");
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_equal(&a, &b);
    // A deletes both; B meanwhile receives new mail in Busy (saved after the delete).
    a.delete_mailbox("Old").unwrap();
    a.delete_mailbox("Busy").unwrap();
    {
        let mut mb = b.open_mailbox("Busy").unwrap();
        let mut tx = mb.begin().unwrap();
        tx.save(
            NewMail {
                guid: Some(Guid::from_bytes(&b"late"[..])),
                saved_date: Some(i64::MAX / 2),
                ..Default::default()
            },
            &mut &b"late mail\n"[..],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert!(
        !names(&b).contains(&"Old".to_string()),
        "the delete propagates"
    );
    // Busy survives with all its mail on both sides: a delete never takes new mail.
    assert_equal(&a, &b);
    assert_eq!(uids(&a, "Busy").len(), 2);
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
}

#[test]
fn stateful_sync_propagates_a_mailbox_delete_without_a_mailbox_log() {
    let (a, b) = common_five();
    save(&a, "Gone", None, "g", "g\n");
    let first = sync::run(
        Box::new(a.clone()),
        Box::new(b.clone()),
        &SyncOptions {
            state: Some(Vec::new()),
            ..Default::default()
        },
    );
    assert_eq!(first.exit_code, 0);
    // A store whose backend keeps no mailbox log: only the state tells.
    let b2 = store();
    assert_eq!(run(&b, &b2, MergeKind::Backup), 0);
    b2.delete_mailbox("Gone").unwrap();
    let fresh = store();
    assert_eq!(run(&b2, &fresh, MergeKind::Backup), 0);
    let opts = SyncOptions {
        state: Some(first.state.clone()),
        ..Default::default()
    };
    // `fresh` has no delete records but lacks Gone, which the state knew.
    assert_eq!(
        sync::run(Box::new(a.clone()), Box::new(fresh.clone()), &opts).exit_code,
        0
    );
    assert!(!names(&a).contains(&"Gone".to_string()));
}

#[test]
fn stateful_run_touches_only_mailboxes_changed_on_either_side() {
    let (a, b) = common_five();
    for m in ["One", "Two", "Three"] {
        save(&a, m, None, &format!("{m}-1"), "x\n");
    }
    let stateful = |state: Vec<sync::MailboxStateItem>| {
        sync::run(
            Box::new(a.clone()),
            Box::new(b.clone()),
            &SyncOptions {
                state: Some(state),
                debug: true,
                ..Default::default()
            },
        )
    };
    let r = stateful(Vec::new());
    assert_eq!(r.exit_code, 0, "{:?}", r.errors);
    let state = sync::state::decode(&sync::state::encode(&r.state)).unwrap();
    assert_eq!(state.len(), 4);
    // Nothing changed: every mailbox is skipped.
    let r = stateful(state.clone());
    assert_eq!(r.exit_code, 0);
    let skipped = |r: &sync::SyncReport| {
        r.log
            .iter()
            .filter(|l| l.starts_with("master:") && l.contains("unchanged since the state"))
            .count()
    };
    assert_eq!(skipped(&r), 4, "{:#?}", r.log);
    // A change on the slave only (B) is not missed.
    flags(&b, "Two", 1, FlagOp::Add, Flags::SEEN, &[]);
    save(&b, "Three", None, "Three-2", "y\n");
    let r = stateful(state);
    assert_eq!(r.exit_code, 0);
    assert_eq!(skipped(&r), 2, "{:#?}", r.log);
    assert_equal(&a, &b);
    assert_eq!(contents(&a, "Two")[0].2, Flags::SEEN.0);
}

fn inbox_guid(s: &MemoryStore) -> mailstore::MailboxGuid {
    s.open_mailbox("INBOX").unwrap().status().unwrap().guid
}

#[test]
fn inboxes_created_apart_end_with_one_mailbox_guid() {
    // backup: the destination takes the source's GUID
    let (a, b) = (store(), store());
    save(&a, "INBOX", None, "g1", "one");
    save(&b, "INBOX", None, "g2", "two");
    assert_ne!(inbox_guid(&a), inbox_guid(&b));
    let source = inbox_guid(&a);
    run(&a, &b, MergeKind::Backup);
    assert_eq!((inbox_guid(&a), inbox_guid(&b)), (source, source));
    // two-way: the lower GUID takes the higher
    let (a, b) = (store(), store());
    save(&a, "INBOX", None, "g1", "one");
    save(&b, "INBOX", None, "g2", "two");
    let higher = inbox_guid(&a).max(inbox_guid(&b));
    run(&a, &b, MergeKind::TwoWay);
    assert_eq!((inbox_guid(&a), inbox_guid(&b)), (higher, higher));
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    assert_equal(&a, &b);
}

#[test]
fn fast_mode_does_not_skip_equal_counters_with_different_last_mail() {
    // after a sync, one delivery to each side leaves UIDNEXT, the message count and the
    // GUIDs equal (and HIGHESTMODSEQ too once aligned): fast mode must still look
    let (a, b) = (store(), store());
    save(&a, "INBOX", None, "g1", "one");
    save(&b, "INBOX", None, "g0", "zero");
    run(&a, &b, MergeKind::TwoWay);
    assert_eq!(run(&a, &b, MergeKind::TwoWay), 0);
    save(&a, "INBOX", None, "only-a", "a");
    save(&b, "INBOX", None, "only-b", "b");
    let (sa, sb) = (
        a.open_mailbox("INBOX").unwrap().status().unwrap(),
        b.open_mailbox("INBOX").unwrap().status().unwrap(),
    );
    assert_eq!((sa.uid_next, sa.messages), (sb.uid_next, sb.messages));
    let fast = SyncOptions {
        kind: MergeKind::TwoWay,
        full: false,
        ..Default::default()
    };
    let r = sync::run(Box::new(a.clone()), Box::new(b.clone()), &fast);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let guids: Vec<String> = uids(&a, "INBOX").into_iter().map(|(_, g)| g).collect();
    for g in ["g1", "only-a", "only-b"] {
        assert!(guids.iter().any(|x| x == g), "{g} in {guids:?}");
    }
    assert_equal(&a, &b);
}

fn store_with_separator(sep: char) -> MemoryStore {
    MemoryStore::with_options(&mailstore::StoreOptions {
        separator: Some(sep),
        ..Default::default()
    })
}

#[test]
fn a_name_holding_the_other_sides_separator_is_repaired_there() {
    // dsync's name repair (dsync_alt_char '_'): "v1.2" is one level where the separator is
    // '/', and can't be one level where it is '.'.
    for kind in [MergeKind::Backup, MergeKind::TwoWay] {
        let a = store_with_separator('/');
        let b = store_with_separator('.');
        save(&a, "v1.2", None, "dotted", "dotted\n");
        save(&a, "Dir/Sub", None, "sub", "sub\n");
        assert_eq!(run(&a, &b, kind), 0, "{kind:?}");
        assert_eq!(names(&b), ["Dir.Sub", "INBOX", "v1_2"], "{kind:?}");
        assert_eq!(uids(&b, "v1_2"), [(1, "dotted".to_string())]);
        assert_eq!(uids(&b, "Dir.Sub"), [(1, "sub".to_string())]);
        assert_eq!(run(&a, &b, kind), 0, "{kind:?}: second run");
        assert_eq!(names(&a), ["Dir/Sub", "INBOX", "v1.2"], "{kind:?}");
        assert_eq!(names(&b), ["Dir.Sub", "INBOX", "v1_2"], "{kind:?}");
    }
}

/// doveadm's `dsync_commit_msgs_interval`: a mailbox's saves are committed in batches of
/// that many messages (dsync_mailbox_import_saved_uid), growing to the number committed
/// before. Shown on a Maildir destination, whose index log gets one APPEND record per
/// commit; the result is the same as with one commit.
#[test]
fn saves_are_committed_every_commit_msgs_interval_messages() {
    use mailsync_index::format::log::RecordBody;
    let a = store();
    for i in 1..=20u32 {
        save(
            &a,
            "INBOX",
            Some(i),
            &format!("g{i}"),
            &format!("Subject: {i}\n\n{i}\n"),
        );
    }
    let appends = |interval: usize| -> (usize, Vec<(u32, String)>) {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(
            &format!("maildir:{}", dir.path().join("Maildir").display()),
            None,
        )
        .unwrap();
        let b = mailsync::backends::open_store(&loc, &Default::default()).unwrap();
        let opts = SyncOptions {
            kind: MergeKind::Backup,
            commit_msgs_interval: interval,
            ..Default::default()
        };
        let r = sync::run(Box::new(a.clone()), b, &opts);
        assert_eq!(r.exit_code, 0, "{:?}", r.errors);
        let view =
            mailsync_index::View::open(&dir.path().join("Maildir"), "dovecot.index").unwrap();
        let commits = view
            .logs()
            .iter()
            .flat_map(|l| &l.records)
            .filter(|r| matches!(r.body, RecordBody::Append(_)))
            .count();
        let b = mailsync::backends::open_store(&loc, &Default::default()).unwrap();
        let mut mb = b.open_mailbox("INBOX").unwrap();
        let got = mb
            .mails()
            .unwrap()
            .into_iter()
            .map(|m| {
                (
                    m.uid.0,
                    String::from_utf8_lossy(m.guid.as_bytes()).into_owned(),
                )
            })
            .collect();
        (commits, got)
    };
    let (batched, got_batched) = appends(3);
    let (single, got_single) = appends(0);
    // every 3 saves, but never more often than the number committed before:
    // 3 + 3 + 6 + 8 (the rest)
    assert_eq!(batched, 4, "20 saves committed 3 + 3 + 6 + 8");
    assert_eq!(single, 1);
    assert_eq!(got_batched, got_single);
    assert_eq!(got_batched, uids(&a, "INBOX"));
}
