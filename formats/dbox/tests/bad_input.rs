//! Broken dbox files: typed errors naming the file, never a panic; and the fuzz entry
//! point over every seed of fuzz/corpus and deterministic mutations of each.

use std::path::Path;

use mailstore::{ErrorKind, Location, NewMail, Store, StoreOptions};
use mailsync_dbox::file::{self, FileHeader};
use mailsync_dbox::fuzzing::{fuzz_dbox_file, fuzz_meta_cache};
use mailsync_dbox::DboxStore;

fn seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/dbox_file");
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

fn mutations(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![seed.to_vec()];
    let n = seed.len();
    for cut in [0, 1, 2, 15, 16, 17, 30, 45, 46, 47, 60] {
        if cut < n {
            out.push(seed[..cut].to_vec());
        }
    }
    for frac in 1..8 {
        out.push(seed[..n * frac / 8].to_vec());
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ n as u64;
    for _ in 0..300 {
        if n == 0 {
            break;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut m = seed.to_vec();
        // half of the flips hit the first 64 bytes (the headers)
        let pos = if x.is_multiple_of(2) {
            (x as usize >> 8) % n.min(64)
        } else {
            (x as usize >> 8) % n
        };
        m[pos] = match (x >> 3) % 5 {
            0 => m[pos] ^ 0x80,
            1 => 0xff,
            2 => 0,
            3 => b'\n',
            _ => m[pos].wrapping_add(1),
        };
        out.push(m);
    }
    out
}

#[test]
fn fuzz_entry_never_panics_on_seeds_and_mutations() {
    let seeds = seeds();
    assert!(seeds.len() >= 5);
    for seed in &seeds {
        // every seed is a valid Dovecot-written file
        let (_, mails) = file::read_all_mails(&seed[..]).unwrap();
        assert!(!mails.is_empty());
        for m in mutations(seed) {
            fuzz_dbox_file(&m);
        }
    }
}

/// The `mailsync.meta-cache` seeds (written by `mailsync backup` of
/// testdata/dovecot-generated/maildir to mdbox) and their mutations: parsed and looked up
/// without a panic.
#[test]
fn meta_cache_fuzz_entry_never_panics_on_seeds_and_mutations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/meta_cache");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(seeds.len() >= 2);
    for seed in &seeds {
        assert!(seed.starts_with(b"MSYNCMC\x01"), "a cache file");
        for m in mutations(seed) {
            fuzz_meta_cache(&m);
        }
    }
}

#[test]
fn the_two_message_seed_reads_as_dovecot_wrote_it() {
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/dbox_file/mdbox-two-messages"),
    )
    .unwrap();
    let (hdr, mails) = file::read_all_mails(&data[..]).unwrap();
    assert_eq!(hdr.msg_header_size, 30);
    assert_eq!(mails.len(), 2);
    // the map's offsets and sizes, as doveadm dump showed them for this file
    assert_eq!((mails[0].offset, mails[0].total_size), (16, 106));
    assert_eq!((mails[1].offset, mails[1].total_size), (122, 108));
    assert_eq!(mails[0].metadata.get(b'B'), Some(&b"Foo"[..]));
}

fn sdbox_with_one_message() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let loc = Location::parse("sdbox:~/sdbox", Some(dir.path())).unwrap();
    let store = DboxStore::open(&loc, &StoreOptions::default()).unwrap();
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let mut t = inbox.begin().unwrap();
    t.save(NewMail::default(), &mut &b"Subject: x\r\n\r\nbody\r\n"[..])
        .unwrap();
    t.commit().unwrap();
    let file = dir.path().join("sdbox/mailboxes/INBOX/dbox-Mails/u.1");
    assert!(file.exists());
    (dir, file)
}

fn read_inbox_error(dir: &Path) -> mailstore::Error {
    let loc = Location::parse("sdbox:~/sdbox", Some(dir)).unwrap();
    let store = DboxStore::open(&loc, &StoreOptions::default()).unwrap();
    // a broken index fails the open; a broken u.N is read when its message is first
    // asked about
    match store
        .open_mailbox("INBOX")
        .and_then(|mut inbox| inbox.mails())
    {
        Ok(_) => panic!("a broken INBOX must not read silently"),
        Err(e) => e,
    }
}

#[test]
fn truncated_message_file_is_a_corruption_error_naming_it() {
    let (dir, file) = sdbox_with_one_message();
    let data = std::fs::read(&file).unwrap();
    std::fs::write(&file, &data[..data.len() - 10]).unwrap();
    let e = read_inbox_error(dir.path());
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert!(e.to_string().contains("u.1"), "{e}");
}

#[test]
fn bad_magic_and_bad_version_are_corruption_errors_naming_the_file() {
    let (dir, file) = sdbox_with_one_message();
    let mut data = std::fs::read(&file).unwrap();
    let hdr = FileHeader::parse(&data).unwrap();
    data[hdr.header_len as usize] = b'X';
    std::fs::write(&file, &data).unwrap();
    let e = read_inbox_error(dir.path());
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert!(e.to_string().contains("bad magic"), "{e}");
    data[0] = b'1';
    std::fs::write(&file, &data).unwrap();
    let e = read_inbox_error(dir.path());
    assert!(e.to_string().contains("unsupported file version 1"), "{e}");
}

#[test]
fn saved_file_is_byte_for_byte_what_dovecot_writes() {
    let (_dir, file) = sdbox_with_one_message();
    let data = std::fs::read(&file).unwrap();
    let hdr = FileHeader::parse(&data).unwrap();
    let rest = &data[hdr.header_len as usize..];
    assert_eq!(&rest[..30], b"\x01\x02N          0000000000000011\n");
    assert_eq!(&rest[30..30 + 0x11], b"Subject: x\n\nbody\n");
    let md = &rest[30 + 0x11..];
    assert!(md.starts_with(b"\n\x01\x03\nR"), "{md:?}");
    let text = String::from_utf8_lossy(md);
    let lines: Vec<&str> = text[4..].lines().collect();
    assert!(lines[0].starts_with('R'));
    assert_eq!(lines[1], "V14");
    assert!(lines[2].starts_with('G') && lines[2].len() == 33);
    assert_eq!(lines[3], "");
    assert!(md.ends_with(b"\n\n"));
}

#[test]
fn huge_message_header_size_allocates_nothing_and_fails_cleanly() {
    // found by cargo fuzz: `M83ecc375` once sized a 2 GiB buffer
    let mut data = b"2 M83ecc375 C6b0c9158\n".to_vec();
    data.extend_from_slice(&file::encode_message_header(4));
    data.extend_from_slice(b"body\n\x01\x03\nGx\n\n");
    let hdr = FileHeader::parse(&data).unwrap();
    assert_eq!(hdr.msg_header_size, 0x83ec_c375);
    assert!(file::read_all_mails(&data[..]).is_err());
    fuzz_dbox_file(&data);
}

#[test]
fn lost_sdbox_index_is_refused_and_existing_files_are_never_overwritten() {
    let (dir, file) = sdbox_with_one_message();
    let original = std::fs::read(&file).unwrap();
    let mail_dir = file.parent().unwrap().to_path_buf();
    for f in ["dovecot.index", "dovecot.index.log", "dovecot.index.log.2"] {
        let _ = std::fs::remove_file(mail_dir.join(f));
    }
    // a fresh index would start at UID 1 again: refused
    let e = read_inbox_error(dir.path());
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert!(e.to_string().contains("force-resync"), "{e}");
    // a stray u.N above next_uid (crashed save) is kept; the save takes the next UID
    let (dir, file) = sdbox_with_one_message();
    let stray = file.with_file_name("u.2");
    std::fs::write(&stray, b"not ours").unwrap();
    let loc = Location::parse("sdbox:~/sdbox", Some(dir.path())).unwrap();
    let store = DboxStore::open(&loc, &StoreOptions::default()).unwrap();
    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let mut t = inbox.begin().unwrap();
    t.save(NewMail::default(), &mut &b"Subject: y\n\nz\n"[..])
        .unwrap();
    let saved = t.commit().unwrap().saved;
    assert_eq!(saved, [mailstore::Uid(3)]);
    assert_eq!(std::fs::read(&stray).unwrap(), b"not ours");
    assert_eq!(std::fs::read(&file).unwrap().len(), original.len());
}
