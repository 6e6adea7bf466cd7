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
