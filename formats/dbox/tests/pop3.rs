//! A message's POP3 UIDL and order in sdbox and mdbox (FORMAT.md §1.4, §3.1, §4.2): the
//! `P` / `O` metadata lines in Dovecot's place, the `dbox-hdr` / `mdbox-hdr` flags byte,
//! `hdr-pop3-uidl`, and reading them back only as far as the index allows, as Dovecot does.

use std::path::{Path, PathBuf};

use mailstore::{Error, Guid, Location, Mailbox, NewMail, Pop3Info, Store, StoreOptions, Uid};
use mailsync_dbox::pop3::{
    HAVE_POP3_ORDERS, HAVE_POP3_UIDLS, HDR_FLAGS_OFFSET, POP3_UIDL_HDR_SIZE,
};
use mailsync_dbox::{rebuild, DboxStore};
use mailsync_index::format::ext;
use mailsync_index::{IndexWriter, View};

const GUID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const RECEIVED: i64 = 0x6b0c_9158;
/// Saved with CRLF, stored with LF (17 bytes, virtual size 0x14).
const BODY: &[u8] = b"Subject: x\r\n\r\nbody\r\n";

fn store(dir: &Path, spec: &str) -> DboxStore {
    let loc = Location::parse(spec, Some(dir)).unwrap();
    DboxStore::open(&loc, &StoreOptions::default()).unwrap()
}

fn sdbox(dir: &Path) -> DboxStore {
    store(dir, "sdbox:~/sdbox")
}

fn mdbox(dir: &Path) -> DboxStore {
    store(dir, "mdbox:~/mdbox")
}

fn index_dir(dir: &Path, spec_root: &str, mailbox: &str) -> PathBuf {
    dir.join(spec_root)
        .join("mailboxes")
        .join(mailbox)
        .join("dbox-Mails")
}

fn pop3(uidl: &str, order: u32) -> Pop3Info {
    Pop3Info {
        uidl: uidl.as_bytes().to_vec(),
        order,
    }
}

fn mail(guid: Option<&str>, p: Pop3Info) -> NewMail {
    NewMail {
        guid: guid.map(|g| Guid::from_bytes(g.as_bytes())),
        received_date: Some(RECEIVED),
        pop3: p,
        ..Default::default()
    }
}

/// Saves each mail (with [`BODY`]) in one transaction; returns the UIDs.
fn save(mb: &mut dyn Mailbox, mails: Vec<NewMail>) -> Vec<Uid> {
    let mut t = mb.begin().unwrap();
    for m in mails {
        t.save(m, &mut &BODY[..]).unwrap();
    }
    t.commit().unwrap().saved
}

/// The metadata block after a message's body, from the magic through the empty line.
fn metadata_block(file: &[u8], from: usize) -> &[u8] {
    let start = from
        + file[from..]
            .windows(4)
            .position(|w| w == b"\n\x01\x03\n")
            .unwrap();
    let end = start
        + 4
        + file[start + 4..]
            .windows(2)
            .position(|w| w == b"\n\n")
            .unwrap()
        + 2;
    &file[start..end]
}

/// The mailbox index's `name` extension header.
fn ext_hdr(index: &Path, name: &str) -> Option<Vec<u8>> {
    let view = View::open(index, "dovecot.index").unwrap();
    view.extension(name).map(|e| e.data.clone())
}

fn all_pop3(mb: &mut dyn Mailbox, uids: &[Uid]) -> Vec<Pop3Info> {
    uids.iter().map(|u| mb.pop3_info(*u).unwrap()).collect()
}

#[test]
fn sdbox_writes_p_and_o_lines_where_dovecot_does_and_sets_the_header() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sdbox(tmp.path());
    let mut mb = s.open_mailbox("INBOX").unwrap();
    let uids = save(
        mb.as_mut(),
        vec![
            mail(Some(GUID), pop3("UID17-1300000000", 3)),
            mail(None, Pop3Info::default()),
        ],
    );
    let dir = index_dir(tmp.path(), "sdbox", "INBOX");
    let file = std::fs::read(dir.join(format!("u.{}", uids[0].0))).unwrap();
    // dbox-save.c dbox_save_write_metadata: R, V, P, O, G
    let want = format!("\n\x01\x03\nR{RECEIVED:x}\nV14\nPUID17-1300000000\nO3\nG{GUID}\n\n");
    assert_eq!(metadata_block(&file, 0), want.as_bytes());
    // no POP3 data: no P/O line
    let plain = std::fs::read(dir.join(format!("u.{}", uids[1].0))).unwrap();
    let block = String::from_utf8_lossy(metadata_block(&plain, 0)).into_owned();
    assert!(
        !block.contains("\nP") && !block.contains("\nO"),
        "{block:?}"
    );

    let hdr = ext_hdr(&dir, ext::DBOX_HDR).unwrap();
    assert_eq!(hdr.len(), 24);
    assert_eq!(hdr[HDR_FLAGS_OFFSET], HAVE_POP3_UIDLS | HAVE_POP3_ORDERS);
    // index-pop3-uidl.c: the highest UID saved with POP3 data, not the plain one after it
    let max = ext_hdr(&dir, ext::HDR_POP3_UIDL).unwrap();
    assert_eq!(max, uids[0].0.to_le_bytes());
    assert_eq!(max.len(), POP3_UIDL_HDR_SIZE);

    let mut again = s.open_mailbox("INBOX").unwrap();
    assert_eq!(
        all_pop3(again.as_mut(), &uids),
        [pop3("UID17-1300000000", 3), Pop3Info::default()]
    );
    assert!(matches!(
        again.pop3_info(Uid(99)),
        Err(Error::MailNotFound(Uid(99)))
    ));
}

#[test]
fn mdbox_writes_p_and_o_lines_where_dovecot_does_and_sets_the_header() {
    let tmp = tempfile::tempdir().unwrap();
    let s = mdbox(tmp.path());
    let mut mb = s.open_mailbox("INBOX").unwrap();
    let uids = save(
        mb.as_mut(),
        vec![
            mail(Some(GUID), pop3("", 7)),
            mail(None, pop3("000001a24f3c", 0)),
        ],
    );
    let file = std::fs::read(tmp.path().join("mdbox/storage/m.1")).unwrap();
    // an order alone: O, then G and the mdbox B line
    let want = format!("\n\x01\x03\nR{RECEIVED:x}\nV14\nO7\nG{GUID}\nBINBOX\n\n");
    assert_eq!(metadata_block(&file, 0), want.as_bytes());
    let second = file
        .windows(want.len())
        .position(|w| w == want.as_bytes())
        .unwrap()
        + want.len();
    let block = String::from_utf8_lossy(metadata_block(&file, second)).into_owned();
    assert!(
        block.starts_with(&format!("\n\x01\x03\nR{RECEIVED:x}\nV14\nP000001a24f3c\nG")),
        "{block:?}"
    );

    let dir = index_dir(tmp.path(), "mdbox", "INBOX");
    let hdr = ext_hdr(&dir, ext::MDBOX_HDR).unwrap();
    assert_eq!(hdr[HDR_FLAGS_OFFSET], HAVE_POP3_UIDLS | HAVE_POP3_ORDERS);
    assert_eq!(
        ext_hdr(&dir, ext::HDR_POP3_UIDL).unwrap(),
        uids[1].0.to_le_bytes()
    );

    for mb in [&mut mb, &mut s.open_mailbox("INBOX").unwrap()] {
        mb.sync().unwrap();
        assert_eq!(
            all_pop3(mb.as_mut(), &uids),
            [pop3("", 7), pop3("000001a24f3c", 0)]
        );
        assert!(matches!(
            mb.pop3_info(Uid(99)),
            Err(Error::MailNotFound(Uid(99)))
        ));
    }
}

#[test]
fn saves_without_pop3_data_leave_the_index_headers_alone() {
    for (spec, root, name) in [
        ("sdbox:~/sdbox", "sdbox", ext::DBOX_HDR),
        ("mdbox:~/mdbox", "mdbox", ext::MDBOX_HDR),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), spec);
        let mut mb = s.open_mailbox("INBOX").unwrap();
        // a UIDL with an LF can't be a metadata line: dropped, and no flag for it
        let uids = save(
            mb.as_mut(),
            vec![mail(None, Pop3Info::default()), mail(None, pop3("a\nb", 0))],
        );
        let dir = index_dir(tmp.path(), root, "INBOX");
        assert_eq!(ext_hdr(&dir, name).unwrap()[HDR_FLAGS_OFFSET], 0, "{spec}");
        assert_eq!(ext_hdr(&dir, ext::HDR_POP3_UIDL), None, "{spec}");
        assert_eq!(
            all_pop3(mb.as_mut(), &uids),
            [Pop3Info::default(), Pop3Info::default()]
        );
    }
}

/// Dovecot looks at `P` / `O` only when the header flag is set and the UID is not above
/// `hdr-pop3-uidl`; mailsync answers the same for the same index.
#[test]
fn reading_honours_the_header_flags_and_hdr_pop3_uidl() {
    for (spec, root, name) in [
        ("sdbox:~/sdbox", "sdbox", ext::DBOX_HDR),
        ("mdbox:~/mdbox", "mdbox", ext::MDBOX_HDR),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), spec);
        let mut mb = s.open_mailbox("INBOX").unwrap();
        let kept = pop3("uidl-1", 4);
        let uids = save(mb.as_mut(), vec![mail(None, kept.clone())]);
        let dir = index_dir(tmp.path(), root, "INBOX");
        let set = |changes: &dyn Fn(&mut mailsync_index::Transaction<'_>)| {
            let w = IndexWriter::open(&dir, "dovecot.index");
            let mut t = w.begin().external(true);
            changes(&mut t);
            t.commit().unwrap();
        };
        let reopen = || {
            let mut mb = s.open_mailbox("INBOX").unwrap();
            mb.pop3_info(uids[0]).unwrap()
        };
        assert_eq!(reopen(), kept, "{spec}");
        // only the order flag: the UIDL isn't looked at
        set(&|t| {
            t.ext_hdr_update(name, HDR_FLAGS_OFFSET as u32, &[HAVE_POP3_ORDERS]);
        });
        assert_eq!(reopen(), pop3("", 4), "{spec}");
        // the UID above max_uid_with_pop3_uidl: neither
        set(&|t| {
            t.ext_hdr_update(
                name,
                HDR_FLAGS_OFFSET as u32,
                &[HAVE_POP3_UIDLS | HAVE_POP3_ORDERS],
            );
            t.ext_hdr_update(ext::HDR_POP3_UIDL, 0, &(uids[0].0 - 1).to_le_bytes());
        });
        assert_eq!(reopen(), Pop3Info::default(), "{spec}");
        // no flags: nothing, whatever the file holds
        set(&|t| {
            t.ext_hdr_update(name, HDR_FLAGS_OFFSET as u32, &[0]);
            t.ext_hdr_update(ext::HDR_POP3_UIDL, 0, &uids[0].0.to_le_bytes());
        });
        assert_eq!(reopen(), Pop3Info::default(), "{spec}");
        // a later save with a UIDL sets that flag again (not the order's: uid 1's `O`
        // stays hidden, as in Dovecot); an open mailbox sees it after sync
        let more = save(mb.as_mut(), vec![mail(None, pop3("uidl-2", 0))]);
        mb.sync().unwrap();
        assert_eq!(
            all_pop3(mb.as_mut(), &[uids[0], more[0]]),
            [pop3("uidl-1", 0), pop3("uidl-2", 0)],
            "{spec}"
        );
        assert_eq!(
            ext_hdr(&dir, name).unwrap()[HDR_FLAGS_OFFSET],
            HAVE_POP3_UIDLS
        );
        assert_eq!(
            ext_hdr(&dir, ext::HDR_POP3_UIDL).unwrap(),
            more[0].0.to_le_bytes()
        );
    }
}

/// Without the header flags, mdbox answers without reading the message file at all.
#[test]
fn mdbox_without_flags_answers_without_reading_the_storage_file() {
    let tmp = tempfile::tempdir().unwrap();
    let s = mdbox(tmp.path());
    let mut mb = s.open_mailbox("INBOX").unwrap();
    let uids = save(mb.as_mut(), vec![mail(None, Pop3Info::default())]);
    std::fs::remove_file(tmp.path().join("mdbox/storage/m.1")).unwrap();
    let mut mb = s.open_mailbox("INBOX").unwrap();
    assert_eq!(mb.pop3_info(uids[0]).unwrap(), Pop3Info::default());
}

/// An old, shorter dbox header (20 bytes: no flags byte) grows to hold the flags
/// (dbox-save.c dbox_save_update_header_flags → mail_index_ext_resize_hdr).
#[test]
fn a_header_without_the_flags_byte_grows() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sdbox(tmp.path());
    s.create_mailbox("Old", None).unwrap();
    let dir = index_dir(tmp.path(), "sdbox", "Old");
    let view = View::open(&dir, "dovecot.index").unwrap();
    let hdr = view.extension(ext::DBOX_HDR).unwrap().data.clone();
    let uid_validity = view.uid_validity();
    drop(view);
    for f in std::fs::read_dir(&dir).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    IndexWriter::open(&dir, "dovecot.index")
        .create_with(uid_validity, |t| {
            t.ext_intro(ext::DBOX_HDR, HDR_FLAGS_OFFSET as u32, 0, 0);
            t.ext_hdr_update(ext::DBOX_HDR, 0, &hdr[..HDR_FLAGS_OFFSET]);
        })
        .unwrap();
    assert_eq!(
        ext_hdr(&dir, ext::DBOX_HDR).unwrap().len(),
        HDR_FLAGS_OFFSET
    );
    let mut mb = s.open_mailbox("Old").unwrap();
    let uids = save(mb.as_mut(), vec![mail(None, pop3("u", 0))]);
    let grown = ext_hdr(&dir, ext::DBOX_HDR).unwrap();
    assert_eq!(grown.len(), HDR_FLAGS_OFFSET + 1);
    assert_eq!(grown[..HDR_FLAGS_OFFSET], hdr[..HDR_FLAGS_OFFSET]);
    assert_eq!(grown[HDR_FLAGS_OFFSET], HAVE_POP3_UIDLS);
    assert_eq!(mb.pop3_info(uids[0]).unwrap(), pop3("u", 0));
}

/// force-resync keeps the flags: mdbox sets them from the storage files
/// (mdbox-storage-rebuild.c), sdbox keeps the old ones and adds those of its files.
#[test]
fn rebuild_keeps_the_header_flags() {
    for (spec, root, name) in [
        ("sdbox:~/sdbox", "sdbox", ext::DBOX_HDR),
        ("mdbox:~/mdbox", "mdbox", ext::MDBOX_HDR),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), spec);
        s.create_mailbox("Box", None).unwrap();
        let mut mb = s.open_mailbox("Box").unwrap();
        let uids = save(
            mb.as_mut(),
            vec![mail(None, pop3("x1", 1)), mail(None, Pop3Info::default())],
        );
        drop(mb);
        let dir = index_dir(tmp.path(), root, "Box");
        for f in ["dovecot.index", "dovecot.index.log", "dovecot.index.log.2"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        match root {
            "sdbox" => {
                rebuild::rebuild_sdbox(s.layout(), "*").unwrap();
            }
            _ => {
                rebuild::rebuild_mdbox(s.layout()).unwrap();
            }
        }
        assert_eq!(
            ext_hdr(&dir, name).unwrap()[HDR_FLAGS_OFFSET],
            HAVE_POP3_UIDLS | HAVE_POP3_ORDERS,
            "{spec}"
        );
        let mut mb = s.open_mailbox("Box").unwrap();
        let found: Vec<Pop3Info> = mb
            .mails()
            .unwrap()
            .iter()
            .map(|r| mb.pop3_info(r.uid).unwrap())
            .collect();
        assert_eq!(found, [pop3("x1", 1), Pop3Info::default()], "{spec}");
        assert_eq!(found.len(), uids.len());
    }
}
