//! `IndexWriter::create_with` writes the UIDVALIDITY transaction and a second one into the
//! new log before it is renamed into place: the same bytes as creating and then committing,
//! but never visible half-done.

use mailsync_index::IndexWriter;

/// The log with its create stamp and indexid (time-derived) zeroed.
fn normalized(dir: &std::path::Path) -> Vec<u8> {
    let mut b = std::fs::read(dir.join("dovecot.index.log")).unwrap();
    // header: indexid at 4..8, create_stamp at 20..24 (mail-transaction-log.h)
    b[4..8].fill(0);
    b[20..24].fill(0);
    b
}

#[test]
fn one_step_create_writes_what_two_steps_write() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let wa = IndexWriter::open(a.path(), "dovecot.index");
    wa.create_with(1234, |t| {
        t.ext_intro("dbox-hdr", 24, 0, 0);
        t.ext_hdr_update("dbox-hdr", 0, &[7u8; 24]);
    })
    .unwrap();
    let wb = IndexWriter::open(b.path(), "dovecot.index");
    wb.create(1234).unwrap();
    let mut t = wb.begin();
    t.ext_intro("dbox-hdr", 24, 0, 0);
    t.ext_hdr_update("dbox-hdr", 0, &[7u8; 24]);
    t.commit().unwrap();
    assert_eq!(normalized(a.path()), normalized(b.path()));
    let view = wa.view().unwrap();
    assert_eq!(view.uid_validity(), 1234);
    assert_eq!(view.extension("dbox-hdr").unwrap().data, vec![7u8; 24]);
    // nothing but the log (and no leftover .newlock)
    let names: Vec<String> = std::fs::read_dir(a.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["dovecot.index.log"]);
}

#[test]
fn create_refuses_an_existing_index() {
    let d = tempfile::tempdir().unwrap();
    let w = IndexWriter::open(d.path(), "dovecot.index");
    w.create(1).unwrap();
    let before = std::fs::read(d.path().join("dovecot.index.log")).unwrap();
    assert!(w.create_with(2, |_| {}).is_err());
    assert_eq!(
        std::fs::read(d.path().join("dovecot.index.log")).unwrap(),
        before
    );
}
