//! A 200 MB single message is read through the store with bounded memory: it is generated
//! into a temporary mbox, never held in memory, and streamed through `open_mail`.

use std::io::{BufWriter, Read, Write};

use mailstore::{Location, Store, StoreOptions, Uid};
use mailsync_mbox::MboxStore;

const BODY_LEN: u64 = 200 * 1024 * 1024;
const HEADER: &[u8] = b"Subject: big\nMessage-ID: <big@example.com>\n\n";

/// Order-dependent checksum over 8-byte words, fed in chunks of any size.
#[derive(Default)]
struct Checksum {
    h: u64,
    pending: Vec<u8>,
    len: u64,
}

impl Checksum {
    fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        let mut data = data;
        if !self.pending.is_empty() {
            let take = (8 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == 8 {
                let w = u64::from_le_bytes(self.pending[..].try_into().unwrap());
                self.word(w);
                self.pending.clear();
            }
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().unwrap()));
        }
        self.pending.extend_from_slice(words.remainder());
    }
    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(0x100_0000_01b3).rotate_left(5);
    }
    fn finish(mut self) -> (u64, u64) {
        let rest = std::mem::take(&mut self.pending);
        for b in rest {
            self.word(b as u64);
        }
        (self.len, self.h)
    }
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_200_mb_message_streams_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mail");
    std::fs::create_dir_all(&root).unwrap();
    // the message as the store must show it, checksummed while written
    let mut expected = Checksum::default();
    {
        let file = std::fs::File::create(root.join("INBOX")).unwrap();
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(
            b"From a@example.com Thu Nov  9 22:33:52 2001\nX-IMAPbase: 1234 0000000001\nX-UID: 1\nStatus: RO\n",
        )
        .unwrap();
        out.write_all(HEADER).unwrap();
        expected.update(HEADER);
        let mut line = [b'x'; 1000];
        line[999] = b'\n';
        let mut written = 0u64;
        let mut n = 0u64;
        while written < BODY_LEN {
            // "From " at a line start inside the body, with no Content-Length: only a
            // valid From_ line may end the message, this one is not
            let num = format!("From line {n:012} ");
            line[..num.len()].copy_from_slice(num.as_bytes());
            let take = (BODY_LEN - written).min(1000) as usize;
            out.write_all(&line[..take]).unwrap();
            expected.update(&line[..take]);
            written += take as u64;
            n += 1;
        }
        out.write_all(b"\n").unwrap();
        out.flush().unwrap();
    }
    let before = vm_hwm_kib();
    let loc = Location::parse("mbox:~/mail:INBOX=~/mail/INBOX", Some(dir.path())).unwrap();
    let store = MboxStore::open(&loc, &StoreOptions::default()).unwrap();
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let mails = inbox.mails().unwrap();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].uid, Uid(1));
    let total = HEADER.len() as u64 + BODY_LEN;
    assert_eq!(mails[0].physical_size, total);
    let mut reader = inbox.open_mail(Uid(1)).unwrap();
    let mut got = Checksum::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.update(&buf[..n]);
    }
    assert_eq!(got.finish(), expected.finish());
    let grown_kib = vm_hwm_kib().saturating_sub(before);
    assert!(
        grown_kib < 32 * 1024,
        "peak memory grew by {grown_kib} KiB while reading a 200 MB message"
    );
}
