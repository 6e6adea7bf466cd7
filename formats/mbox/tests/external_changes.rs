//! Changes made to the mbox by others (an MTA appending, another program removing a
//! message or changing a Status header) are noticed at the next sync: new modseqs, expunge
//! records, and an exact `changes_since`.

use std::io::Write;

use mailstore::{Changes, Flags, Location, ModSeq, NewMail, Store, StoreOptions, Uid};
use mailsync_mbox::MboxStore;

fn store(dir: &std::path::Path) -> MboxStore {
    let loc = Location::parse("mbox:~/mail:INBOX=~/mail/INBOX", Some(dir)).unwrap();
    MboxStore::open(&loc, &StoreOptions::default()).unwrap()
}

#[test]
fn external_appends_expunges_and_flag_changes_are_exact_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut mb = s.open_mailbox("INBOX").unwrap();
    let mut tx = mb.begin().unwrap();
    for i in 0..3 {
        let body = format!("Subject: m{i}\nMessage-ID: <{i}@x>\n\nbody {i}\n");
        tx.save(NewMail::default(), &mut body.as_bytes()).unwrap();
    }
    tx.commit().unwrap();
    let guid2 = mb.mails().unwrap()[1].guid.clone();
    let before = ModSeq(mb.status().unwrap().highest_modseq);

    // another program: drops message 2, marks message 3 seen (Status: → Status: R), and an
    // MTA appends one message without any Dovecot header
    let path = dir.path().join("mail/INBOX");
    let text = std::fs::read_to_string(&path).unwrap();
    let parts: Vec<&str> = text.split("\nFrom ").collect();
    assert_eq!(parts.len(), 3, "{text}");
    let third = parts[2].replacen("Status: \n", "Status: R\n", 1);
    let rewritten = format!("{}\nFrom {third}", parts[0]);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(rewritten.as_bytes()).unwrap();
    f.write_all(b"From mta@x Mon Jan  1 00:00:00 2024\nMessage-ID: <new@x>\n\nnew\n\n")
        .unwrap();
    drop(f);

    mb.sync().unwrap();
    let records = mb.mails().unwrap();
    let uids: Vec<Uid> = records.iter().map(|r| r.uid).collect();
    assert_eq!(uids, [Uid(1), Uid(3), Uid(4)]);
    assert!(records[1].flags.contains(Flags::SEEN));
    assert!(records[2].modseq > before && records[1].modseq > before);
    assert!(records[0].modseq <= before);
    match mb.changes_since(before).unwrap() {
        Changes::Known {
            changed,
            expunged,
            highest_modseq,
        } => {
            assert_eq!(changed, [Uid(3), Uid(4)]);
            // an expunge noticed from outside has no GUID unless the sidecar stored one (a
            // header-MD5 GUID can't be recomputed from a message that is gone)
            assert_eq!(expunged, [(Uid(2), None)]);
            assert!(!guid2.is_empty());
            assert!(highest_modseq > before);
            assert_eq!(highest_modseq.0, mb.status().unwrap().highest_modseq);
        }
        Changes::Unknown => panic!("the sidecar has the whole history"),
    }
    // the new message got X-UID/X-IMAPbase in the file, so its UID stays
    drop(mb);
    let mut again = store(dir.path()).open_mailbox("INBOX").unwrap();
    let uids: Vec<Uid> = again.mails().unwrap().iter().map(|r| r.uid).collect();
    assert_eq!(uids, [Uid(1), Uid(3), Uid(4)]);
}
