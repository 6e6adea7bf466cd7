//! Broken files give a typed error naming file and offset, or Dovecot's recovery.

mod common;

use mailsync_index::format::index::{hdr_off, IndexFile};
use mailsync_index::format::log::{LogFile, LogStop};
use mailsync_index::{Error, IndexPaths, Sources, View};

fn inbox_log() -> Vec<u8> {
    std::fs::read(common::testdata_dir().join("sdbox/mailboxes/INBOX/dbox-Mails/dovecot.index.log"))
        .unwrap()
}

fn paths() -> IndexPaths {
    IndexPaths::new("/nonexistent", "dovecot.index")
}

fn snapshot() -> Vec<u8> {
    View::build(
        &paths(),
        Sources {
            log: Some(inbox_log()),
            ..Default::default()
        },
    )
    .unwrap()
    .index_file()
    .encode()
}

#[test]
fn truncated_index_is_a_typed_error_and_the_view_rebuilds_from_the_log() {
    let idx = snapshot();
    let cut = &idx[..idx.len() - 10];
    match IndexFile::decode(cut, std::path::Path::new("dovecot.index")) {
        Err(Error::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, hdr_off::MESSAGES_COUNT as u64);
            assert!(reason.contains("messages_count too large"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let full = View::build(
        &paths(),
        Sources {
            log: Some(inbox_log()),
            ..Default::default()
        },
    )
    .unwrap();
    // the log starts a history (prev_file_seq 0): Dovecot rebuilds from it
    let v = View::build(
        &paths(),
        Sources {
            index: Some(cut.to_vec()),
            log: Some(inbox_log()),
            log2: None,
        },
    )
    .unwrap();
    assert!(v.recoveries()[0].contains("messages_count too large"));
    assert_eq!(v.messages_count(), full.messages_count());
}

#[test]
fn truncated_log_mid_record_is_an_unfinished_tail() {
    let log = inbox_log();
    let full = LogFile::decode(&log, std::path::Path::new("l")).unwrap();
    let last = full.records.last().unwrap().clone();
    let cut = &log[..last.offset as usize + 10];
    let l = LogFile::decode(cut, std::path::Path::new("l")).unwrap();
    // the last record belongs to a BOUNDARY-covered transaction: the whole transaction
    // is "not yet written", not only the torn record
    let boundary = full
        .records
        .iter()
        .rev()
        .find(|r| matches!(r.body, mailsync_index::format::log::RecordBody::Boundary(_)))
        .unwrap();
    assert!(boundary.end() <= last.end());
    assert_eq!(
        l.stop,
        LogStop::BoundaryPastEof {
            offset: boundary.offset
        }
    );
    assert_eq!(l.sync_offset, boundary.offset);
    assert!(l.records.iter().all(|r| r.end() <= boundary.offset));
    // without a boundary, only the torn record goes
    let cut = &log[..full.records[2].offset as usize + 10];
    let l = LogFile::decode(cut, std::path::Path::new("l")).unwrap();
    assert_eq!(
        l.stop,
        LogStop::Unfinished {
            offset: full.records[2].offset
        }
    );
    assert_eq!(l.records.len(), 2);
}

#[test]
fn wrong_record_size_encoding_stops_reading() {
    let mut log = inbox_log();
    let full = LogFile::decode(&log, std::path::Path::new("l")).unwrap();
    let r = &full.records[3];
    // clear a high bit: "size not written yet"
    log[r.offset as usize + 2] &= 0x7f;
    let l = LogFile::decode(&log, std::path::Path::new("l")).unwrap();
    assert_eq!(l.stop, LogStop::Unfinished { offset: r.offset });
    // an encoded size below the record header is corruption
    let mut log = inbox_log();
    log[r.offset as usize..r.offset as usize + 4].copy_from_slice(&[0x80, 0x80, 0x80, 0x81]);
    let l = LogFile::decode(&log, std::path::Path::new("/x/dovecot.index.log")).unwrap();
    assert!(
        matches!(&l.stop, LogStop::Corrupt { offset, reason } if *offset == r.offset && reason.contains("too small"))
    );
    match l.check(std::path::Path::new("/x/dovecot.index.log")) {
        Err(Error::Corrupt { path, offset, .. }) => {
            assert_eq!(offset, r.offset);
            assert!(path.ends_with("dovecot.index.log"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn records_out_of_order_in_the_index_are_rejected() {
    let mut idx = snapshot();
    let f = IndexFile::decode(&idx, std::path::Path::new("i")).unwrap();
    let hs = f.header().header_size as usize;
    let rs = f.record_size();
    // swap the uids of records 0 and 1
    let (a, b) = (hs, hs + rs);
    let ua: [u8; 4] = idx[a..a + 4].try_into().unwrap();
    let ub: [u8; 4] = idx[b..b + 4].try_into().unwrap();
    idx[a..a + 4].copy_from_slice(&ub);
    idx[b..b + 4].copy_from_slice(&ua);
    match IndexFile::decode(&idx, std::path::Path::new("i")) {
        Err(Error::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset as usize, b);
            assert!(reason.contains("not ascending"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unsorted_uid_ranges_in_the_log_are_corruption_and_replay_stops_there() {
    // a FLAG_UPDATE with ranges 5-5, 3-3 (not ascending)
    let mut log = inbox_log();
    let body: Vec<u8> = [5u32, 5, 0x08, 3, 3, 0x08]
        .iter()
        .enumerate()
        .flat_map(|(i, v)| {
            if i % 3 == 2 {
                vec![*v as u8, 0, 0, 0]
            } else {
                v.to_le_bytes().to_vec()
            }
        })
        .collect();
    log.extend(mailsync_index::format::log::encode_raw_record(0x4, &body).unwrap());
    let v = View::build(
        &paths(),
        Sources {
            log: Some(log),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        v.recoveries()
            .iter()
            .any(|r| r.contains("Non-sorted UID ranges")),
        "{:?}",
        v.recoveries()
    );
}

#[test]
fn indexid_mismatch_the_index_wins_and_the_writer_refuses() {
    let mut idx = snapshot();
    idx[hdr_off::INDEXID..hdr_off::INDEXID + 4].copy_from_slice(&7u32.to_le_bytes());
    let v = View::build(
        &paths(),
        Sources {
            index: Some(idx.clone()),
            log: Some(inbox_log()),
            log2: None,
        },
    )
    .unwrap();
    assert!(
        v.recoveries()[0].contains("indexid changed"),
        "{:?}",
        v.recoveries()
    );
    assert_eq!(v.indexid(), 7);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dovecot.index"), &idx).unwrap();
    std::fs::write(dir.path().join("dovecot.index.log"), inbox_log()).unwrap();
    let w = mailsync_index::IndexWriter::open(dir.path(), "dovecot.index");
    let mut t = w.begin();
    t.flags(1, 1, 8, 0);
    assert!(matches!(
        t.commit(),
        Err(Error::IndexIdMismatch { index_id: 7, .. })
    ));
}

#[test]
fn bogus_extension_sizes_are_typed_errors() {
    let idx = snapshot();
    let f = IndexFile::decode(&idx, std::path::Path::new("i")).unwrap();
    assert!(!f.extensions.is_empty());
    let first_ext = (f.base.len() + 7) & !7;
    // hdr_size pointing far outside the header
    let mut bad = idx.clone();
    bad[first_ext..first_ext + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    match IndexFile::decode(&bad, std::path::Path::new("i")) {
        Err(Error::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset as usize, first_ext);
            assert!(reason.contains("goes outside header"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // record alignment 0 with a record size
    let cache = f.ext_index("cache").unwrap();
    let _ = cache;
    let mut bad = idx.clone();
    // find the "cache" entry by name and zero its record_align
    let pos = bad.windows(5).position(|w| w == b"cache").unwrap() - 16;
    bad[pos + 12..pos + 14].copy_from_slice(&0u16.to_le_bytes());
    match IndexFile::decode(&bad, std::path::Path::new("i")) {
        Err(Error::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset as usize, pos);
            assert!(reason.contains("alignment is zero"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn boundary_past_eof_is_not_yet_written() {
    let mut log = inbox_log();
    let full = View::build(
        &paths(),
        Sources {
            log: Some(log.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    // a transaction announcing 100 bytes with only its first 28 written
    let b = mailsync_index::format::log::encode_raw_record(
        0x0008_0000 | 0x1000_0000,
        &100u32.to_le_bytes(),
    )
    .unwrap();
    let a = mailsync_index::format::log::encode_raw_record(
        0x2,
        &[99, 0, 0, 0, 8, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0],
    )
    .unwrap();
    log.extend(b);
    log.extend(a);
    let v = View::build(
        &paths(),
        Sources {
            log: Some(log),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(v.messages_count(), full.messages_count());
    assert!(v.message(99).is_none());
    assert!(matches!(v.logs()[0].stop, LogStop::BoundaryPastEof { .. }));
}
