//! Entry points for fuzzing (see fuzz/). None may panic on any input.

use std::path::Path;

use crate::format::index::IndexFile;
use crate::format::log::LogFile;
use crate::view::{Sources, View};
use crate::IndexPaths;

/// Decodes `data` as dovecot.index; when it decodes, re-encoding and decoding again gives
/// the same structure. Also builds a view from it alone.
pub fn fuzz_index(data: &[u8]) {
    let path = Path::new("fuzz/dovecot.index");
    if let Ok(f) = IndexFile::decode(data, path) {
        let again = IndexFile::decode(&f.encode(), path).expect("re-encoded index decodes");
        assert_eq!(again.extensions, f.extensions);
        assert_eq!(again.records, f.records);
    }
    fuzz_index_header(data);
    let src = Sources {
        index: Some(data.to_vec()),
        log: None,
        log2: None,
    };
    if let Ok(v) = View::build(&IndexPaths::new("fuzz", "dovecot.index"), src) {
        for m in v.messages() {
            let _ = (m.uid(), m.keywords(), m.modseq());
        }
    }
}

/// The header-only decode (`HeaderView`'s) of the same bytes: never a panic, and wherever
/// the whole file decodes, the header alone decodes to the same header and extensions.
fn fuzz_index_header(data: &[u8]) {
    use crate::format::index::{IndexHeader, BASE_HEADER_SIZE};
    let path = Path::new("fuzz/dovecot.index");
    if data.len() < BASE_HEADER_SIZE {
        return;
    }
    let h = IndexHeader::decode(data);
    let header_size = (h.header_size as usize).min(data.len());
    let records_end = h.header_size as u64 + h.messages_count as u64 * h.record_size as u64;
    let last = (h.messages_count > 0 && records_end <= data.len() as u64)
        .then(|| &data[(records_end - h.record_size as u64) as usize..records_end as usize]);
    let head = IndexFile::decode_header_only(&data[..header_size], data.len() as u64, last, path);
    if let Ok(full) = IndexFile::decode(data, path) {
        let head = head.expect("an index that decodes whole decodes from its header");
        assert_eq!(head.base, full.base);
        assert_eq!(head.extensions, full.extensions);
        let last = full
            .records_count()
            .checked_sub(1)
            .and_then(|i| full.record(i));
        assert_eq!(head.record(0), last);
    }
}

/// Decodes `data` as a transaction log, re-encodes every record, replays it into a view
/// and dumps it.
pub fn fuzz_log(data: &[u8]) {
    let path = Path::new("fuzz/dovecot.index.log");
    if let Ok(log) = LogFile::decode(data, path) {
        for r in &log.records {
            let _ = r.body.encode();
        }
    }
    let src = Sources {
        index: None,
        log: Some(data.to_vec()),
        log2: None,
    };
    if let Ok(v) = View::build(&IndexPaths::new("fuzz", "dovecot.index"), src) {
        let _ = v.changes_since(mailstore::ModSeq(1));
        for m in v.messages() {
            let _ = (m.uid(), m.keywords(), m.modseq());
        }
        if let Ok(snapshot) = IndexFile::decode(&v.index_file().encode(), path) {
            let _ = snapshot.header();
        }
    }
}
