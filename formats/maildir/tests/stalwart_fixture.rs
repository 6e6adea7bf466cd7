//! The stalwart mail-parser Maildir (testdata/stalwart-mail-parser/maildir): `;2,` "info"
//! parts, a trailing comma, and `,S=` values that don't match the 2-byte files. Documented
//! behaviour (FORMAT.md, "Sizes" and "Info separator"):
//! - Dovecot 2.3's info separator is `:` only, so `;2,Sb` is part of the base name: no flags,
//!   and the GUID is the whole filename;
//! - `,S=` is trusted for the physical size as Dovecot does (a value followed by `;` is not a
//!   valid field and the size comes from stat());
//! - the message bytes are the real file contents.

mod common;

use std::io::Read;

use common::{copy_tree, open_store, store_names, testdata};
use mailstore::{FlagOp, FlagUpdate, Flags, Store};

#[test]
fn opens_without_panic_with_documented_sizes_and_flags() {
    let home = tempfile::tempdir().unwrap();
    copy_tree(
        &testdata("stalwart-mail-parser/maildir"),
        &home.path().join("Maildir"),
    );
    let store = open_store("maildir:~/Maildir", home.path(), Some('/'));
    assert_eq!(
        store_names(&store),
        ["INBOX", "My Folder", "My Folder/Nested Folder"]
    );

    let mut inbox = store.open_mailbox("INBOX").unwrap();
    let mails = inbox.mails().unwrap();
    assert_eq!(mails.len(), 2);
    // UIDs in Dovecot's order: by the leading timestamp.
    assert_eq!(
        mails[0].guid.as_bytes(),
        b"1234567890.M20046P2137.mailserver,S=4542,W=4642;2,Sb"
    );
    assert_eq!(mails[0].physical_size, 4542, ",S= is trusted");
    assert_eq!(mails[0].virtual_size, None, "W=4642; is not a valid field");
    assert_eq!(
        inbox.virtual_size(mails[0].uid).unwrap(),
        3,
        "computed from the bytes"
    );
    assert_eq!(
        mails[1].physical_size, 2,
        "S=10956; is invalid: stat() size"
    );
    for m in &mails {
        assert_eq!(m.flags, Flags::RECENT, "`;2,` carries no flags");
        assert!(m.keywords.is_empty());
        let mut body = Vec::new();
        inbox
            .open_mail(m.uid)
            .unwrap()
            .read_to_end(&mut body)
            .unwrap();
        // No `:` in these names: the base (GUID) is the whole filename.
        let name = String::from_utf8(m.guid.as_bytes().to_vec()).unwrap();
        let src = ["new", "cur"]
            .iter()
            .map(|d| testdata("stalwart-mail-parser/maildir").join(d).join(&name))
            .find(|p| p.exists())
            .unwrap();
        assert_eq!(body, std::fs::read(src).unwrap(), "the real bytes");
    }

    let mut nested = store.open_mailbox("My Folder/Nested Folder").unwrap();
    let n = nested.mails().unwrap();
    assert_eq!(n.len(), 2);
    assert!(n.iter().all(|m| m.flags == Flags::RECENT));

    // A flag change appends a real `:2,` info and keeps the odd base as it is.
    let uid = mails[0].uid;
    let mut tx = inbox.begin().unwrap();
    tx.update_flags(
        uid,
        &FlagUpdate {
            op: FlagOp::Add,
            flags: Flags::SEEN,
            keywords: vec![],
        },
    )
    .unwrap();
    tx.commit().unwrap();
    let r = inbox
        .mails()
        .unwrap()
        .into_iter()
        .find(|m| m.uid == uid)
        .unwrap();
    assert!(r.flags.contains(Flags::SEEN));
    assert_eq!(r.guid, mails[0].guid, "the GUID (base) is unchanged");
    assert!(home
        .path()
        .join("Maildir/new/1234567890.M20046P2137.mailserver,S=4542,W=4642;2,Sb:2,S")
        .exists());
    assert_eq!(inbox.status().unwrap().uid_next, 3);
}
