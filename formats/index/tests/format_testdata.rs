//! The format layer against every index/log file Dovecot 2.3.19.1 wrote into
//! /work/shared/testdata/dovecot-generated (copied into testdata/index/ of this crate).

mod common;

use mailsync_index::format::log::{encode_raw_record, LogFile, LogStop, RecordBody};

#[test]
fn every_dovecot_log_decodes_fully_and_reencodes_byte_for_byte() {
    let files = common::testdata_logs();
    assert!(
        files.len() >= 15,
        "expected the generated logs, found {}",
        files.len()
    );
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let log = LogFile::decode(&data, &path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(log.stop, LogStop::Eof, "{}", path.display());
        assert_eq!(log.sync_offset, data.len() as u64, "{}", path.display());
        assert!(!log.records.is_empty());
        // header round trip
        assert_eq!(&log.header.encode()[..], &data[..40], "{}", path.display());
        for rec in &log.records {
            let payload = &data[rec.offset as usize + 8..rec.end() as usize];
            assert!(
                !matches!(rec.body, RecordBody::Unknown(_)),
                "{}",
                path.display()
            );
            let typed = rec.body.encode();
            assert_eq!(typed, payload, "{} at {}", path.display(), rec.offset);
            let whole = encode_raw_record(rec.type_raw, &typed).unwrap();
            assert_eq!(&whole[..], &data[rec.offset as usize..rec.end() as usize]);
        }
        // modseqs never decrease
        let mut prev = log.header.initial_modseq;
        for rec in &log.records {
            assert!(rec.modseq >= prev);
            prev = rec.modseq;
        }
        assert_eq!(log.end_modseq, prev);
    }
}
