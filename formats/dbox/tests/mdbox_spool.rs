//! mdbox saves go through one spool per transaction: a large transaction is spread over
//! several `m.N` files at the rotate size (mdbox_map_append_next), a failed save leaves the
//! rest of the transaction intact, and no temp file is left behind.

use std::io::Read;

use mailstore::{Location, NewMail, Store, StoreOptions};
use mailsync_dbox::DboxStore;

fn store(dir: &std::path::Path, rotate: u64) -> DboxStore {
    let loc = Location::parse("mdbox:~/mdbox", Some(dir)).unwrap();
    DboxStore::open(&loc, &StoreOptions::default())
        .unwrap()
        .with_rotate_size(rotate)
}

fn message(i: usize) -> Vec<u8> {
    format!("Subject: m{i}\n\n{}\n", "x".repeat(900 + i)).into_bytes()
}

fn storage_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("mdbox/storage"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("dovecot.map.index"))
        .collect();
    v.sort();
    v
}

#[test]
fn one_transaction_rotates_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 4096);
    let mut mb = s.open_mailbox("INBOX").unwrap();
    let mut t = mb.begin().unwrap();
    for i in 0..12 {
        t.save(NewMail::default(), &mut &message(i)[..]).unwrap();
    }
    assert_eq!(t.commit().unwrap().saved.len(), 12);
    let files = storage_files(dir.path());
    // ~1 KiB messages, 4 KiB rotate size: each file gets messages until it reaches 4 KiB
    assert!(files.len() >= 3, "{files:?}");
    assert!(
        files.iter().all(|f| f.starts_with("m.")),
        "temp left: {files:?}"
    );
    for f in &files {
        let len = std::fs::metadata(dir.path().join("mdbox/storage").join(f))
            .unwrap()
            .len();
        assert!(len < 4096 + 2048, "{f} is {len} bytes");
    }
    let mut again = store(dir.path(), 4096).open_mailbox("INBOX").unwrap();
    let mails = again.mails().unwrap();
    assert_eq!(mails.len(), 12);
    for (i, m) in mails.iter().enumerate() {
        let mut body = Vec::new();
        again
            .open_mail(m.uid)
            .unwrap()
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(body, message(i));
    }
}

/// The messages of a transaction go from the spool into `m.N` a run at a time, in
/// chunks that end inside messages as often as between them.
#[test]
fn messages_copied_as_one_run_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 10 << 20);
    let mut mb = s.open_mailbox("INBOX").unwrap();
    let sizes = [100_000, 300_000, 5, 200_000, 70_000, 1];
    let body = |i: usize, n: usize| -> Vec<u8> {
        let mut b = format!("Subject: m{i}\n\n").into_bytes();
        b.extend((0..n).map(|j| b'a' + ((i * 7 + j) % 23) as u8));
        b.push(b'\n');
        b
    };
    let mut t = mb.begin().unwrap();
    for (i, n) in sizes.iter().enumerate() {
        t.save(NewMail::default(), &mut &body(i, *n)[..]).unwrap();
    }
    assert_eq!(t.commit().unwrap().saved.len(), sizes.len());
    assert_eq!(storage_files(dir.path()), ["m.1"]);
    let mut again = store(dir.path(), 10 << 20).open_mailbox("INBOX").unwrap();
    let mails = again.mails().unwrap();
    for (i, m) in mails.iter().enumerate() {
        let mut read = Vec::new();
        again
            .open_mail(m.uid)
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert!(read == body(i, sizes[i]), "message {i}");
    }
}

struct FailingReader(usize);

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0 == 0 {
            return Err(std::io::Error::other("source went away"));
        }
        let n = self.0.min(buf.len()).min(100);
        buf[..n].fill(b'a');
        self.0 -= n;
        Ok(n)
    }
}

#[test]
fn a_failed_save_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 10 << 20);
    let mut mb = s.open_mailbox("INBOX").unwrap();
    let mut t = mb.begin().unwrap();
    t.save(NewMail::default(), &mut &message(1)[..]).unwrap();
    let mut bad = FailingReader(300);
    assert!(t.save(NewMail::default(), &mut bad).is_err());
    t.save(NewMail::default(), &mut &message(2)[..]).unwrap();
    assert_eq!(t.commit().unwrap().saved.len(), 2);
    let mails = mb.mails().unwrap();
    let bodies: Vec<Vec<u8>> = mails
        .iter()
        .map(|m| {
            let mut b = Vec::new();
            mb.open_mail(m.uid).unwrap().read_to_end(&mut b).unwrap();
            b
        })
        .collect();
    assert_eq!(bodies, [message(1), message(2)]);
    assert_eq!(storage_files(dir.path()), ["m.1"]);
}

#[test]
fn rollback_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 10 << 20);
    let mut mb = s.open_mailbox("INBOX").unwrap();
    let mut t = mb.begin().unwrap();
    t.save(NewMail::default(), &mut &message(1)[..]).unwrap();
    t.rollback();
    assert!(storage_files(dir.path()).is_empty());
    assert!(mb.mails().unwrap().is_empty());
}
