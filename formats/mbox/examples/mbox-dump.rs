//! Prints every message of an mbox file as `doveadm fetch "uid guid text"` prints it
//! (pager format), for comparing mailsync's reading with Dovecot's by hand.
//! Usage: mbox-dump FILE

use std::io::{Read, Write};

fn main() {
    let path = std::env::args().nth(1).expect("usage: mbox-dump FILE");
    let file = std::fs::File::open(&path).expect("open");
    let mbox = mailsync_mbox::scan(&file, 1).expect("scan");
    let mut out = std::io::stdout().lock();
    for (i, m) in mbox.messages.iter().enumerate() {
        if i > 0 {
            // doveadm's pager formatter ends a value with a newline before the form feed
            out.write_all(b"\x0c\n").unwrap();
        }
        write!(out, "uid: {}\nguid: {}\ntext:\n", m.uid, m.guid_hex()).unwrap();
        let mut text = Vec::new();
        mailsync_mbox::MessageReader::new(file.try_clone().unwrap(), m)
            .read_to_end(&mut text)
            .unwrap();
        assert_eq!(text.len() as u64, m.physical_size());
        out.write_all(&text).unwrap();
        if i + 1 < mbox.messages.len() && !text.is_empty() && !text.ends_with(b"\n") {
            out.write_all(b"\n").unwrap();
        }
    }
}
