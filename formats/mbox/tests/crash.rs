//! Crash safety of rewrites: a rewrite interrupted after its journal became ready (the mbox
//! possibly half overwritten) is finished by the next opener; an interrupted temp file is
//! ignored and the mbox left as it was.

use std::io::Read;

use mailstore::{Location, NewMail, Store, StoreOptions, Uid};
use mailsync_mbox::MboxStore;

fn store(dir: &std::path::Path) -> MboxStore {
    let loc = Location::parse("mbox:~/mail:INBOX=~/mail/INBOX", Some(dir)).unwrap();
    MboxStore::open(&loc, &StoreOptions::default()).unwrap()
}

fn bodies(store: &MboxStore) -> Vec<Vec<u8>> {
    let mut mb = store.open_mailbox("INBOX").unwrap();
    let uids: Vec<Uid> = mb.mails().unwrap().into_iter().map(|r| r.uid).collect();
    uids.into_iter()
        .map(|u| {
            let mut out = Vec::new();
            mb.open_mail(u).unwrap().read_to_end(&mut out).unwrap();
            out
        })
        .collect()
}

fn save(store: &MboxStore, n: usize) {
    let mut mb = store.open_mailbox("INBOX").unwrap();
    let mut tx = mb.begin().unwrap();
    for i in 0..n {
        let body = format!("Subject: m{i}\nMessage-ID: <{i}@x>\n\nbody {i}\n");
        tx.save(NewMail::default(), &mut body.as_bytes()).unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn a_ready_journal_is_replayed_over_a_half_written_mbox() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    save(&s, 3);
    let inbox = dir.path().join("mail/INBOX");
    let complete = std::fs::read(&inbox).unwrap();
    // the state of a crash during step 3: journal ready, mbox cut in the middle
    std::fs::write(dir.path().join("mail/.INBOX.mailsync-rewrite"), &complete).unwrap();
    std::fs::write(&inbox, &complete[..complete.len() / 2]).unwrap();
    let got = bodies(&store(dir.path()));
    assert_eq!(got.len(), 3, "every message is back");
    assert_eq!(got[2], b"Subject: m2\nMessage-ID: <2@x>\n\nbody 2\n");
    assert_eq!(std::fs::read(&inbox).unwrap(), complete);
    assert!(!dir.path().join("mail/.INBOX.mailsync-rewrite").exists());
}

#[test]
fn an_unfinished_journal_temp_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    save(&s, 2);
    let inbox = dir.path().join("mail/INBOX");
    let before = std::fs::read(&inbox).unwrap();
    // a crash during step 1: a partial new mbox in the temp file
    std::fs::write(
        dir.path().join("mail/.INBOX.mailsync-rewrite.tmp"),
        &before[..before.len() / 3],
    )
    .unwrap();
    assert_eq!(bodies(&store(dir.path())).len(), 2);
    save(&store(dir.path()), 1);
    assert_eq!(bodies(&store(dir.path())).len(), 3);
    assert!(!dir.path().join("mail/.INBOX.mailsync-rewrite.tmp").exists());
    // the mailbox list doesn't show journal files
    let names: Vec<String> = store(dir.path())
        .list_mailboxes()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["INBOX"]);
}
