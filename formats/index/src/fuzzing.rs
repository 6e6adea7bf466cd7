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

/// The quick open of an index ([`crate::HeaderView`]) on `data` split into `P` and its log:
/// a little-endian u32 length of `P`'s bytes, `P`'s bytes, then the log's. Written to a
/// directory of this process's own and opened there: never a panic, and when it answers,
/// every accessor answers too (the records it replayed or reads from `P`, the last
/// message's, the counters). Returns whether it answered.
pub fn fuzz_header_replay(data: &[u8]) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return false;
    };
    let split = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (index, log) = rest.split_at(split);
    let dir = std::env::temp_dir().join(format!(
        "mailsync-fuzz-header-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let mut answered = false;
    let paths = IndexPaths::new(&dir, "dovecot.index");
    if std::fs::write(paths.index(), index).is_ok() && std::fs::write(paths.log(), log).is_ok() {
        if let Ok(Some(head)) = crate::HeaderView::open(&paths) {
            answered = true;
            let h = head.header();
            let _ = (head.unseen_count(), head.recent_count(), head.state());
            let _ = (head.replayed_records(), head.tail_at_log_end());
            for uid in [head.first_uid(), head.last_uid()].into_iter().flatten() {
                let _ = head.record_of(uid);
            }
            for uid in [0, 1, h.next_uid / 2, h.next_uid, u32::MAX] {
                let _ = head.record_of(uid);
            }
            use crate::format::ext;
            for name in [
                ext::MODSEQ,
                ext::KEYWORDS,
                ext::GUID,
                ext::MDBOX,
                ext::MAP,
                ext::REF,
            ] {
                let _ = head.last_ext(name);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    answered
}
