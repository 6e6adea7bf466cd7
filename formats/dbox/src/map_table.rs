//! What a reader of an mdbox needs of the map index `storage/dovecot.map.index`: where
//! each map UID's message is (ext `map` {file_id, offset, size}) and the map's
//! UIDVALIDITY — kept as one compact table (16 bytes a message) shared by every mailbox
//! of a store, and read again only when the map's files changed (`index::IndexStamp`; Dovecot
//! too re-reads the map only when its log grew or was replaced: mdbox-map.c
//! mdbox_map_refresh → mail_index_refresh).
//!
//! Before, every mailbox open, sync and commit built a whole map `View` (the map index
//! plus both of its decoded logs: ~20 MiB transient for a 28,000-message store) to look
//! up its own messages' locations, and kept a per-mailbox location table.

use std::sync::{Arc, Mutex};

use mailstore::Result;
use mailsync_index::format::ext::{self, MapRecord};
use mailsync_index::format::{index, log};
use mailsync_index::{HeaderView, IndexPaths, Sources, View};

use crate::index::{ix_err, IndexStamp};

/// The locations of the map's messages and its UIDVALIDITY, as of one map view.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MapTable {
    /// The map's UIDVALIDITY (the mailbox indexes' `mdbox-hdr` map_uid_validity).
    pub uid_validity: u32,
    /// (map UID, where its message is), ascending by map UID. A map message without a
    /// `map` record is left out (it has no location).
    records: Vec<(u32, MapRecord)>,
}

impl MapTable {
    pub fn from_view(view: &View) -> MapTable {
        // sized once (a filtered iterator would grow it by doubling)
        let mut records = Vec::with_capacity(view.messages().len());
        records.extend(
            view.messages()
                .filter_map(|m| Some((m.uid(), MapRecord::decode(m.ext(ext::MAP)?)))),
        );
        MapTable {
            uid_validity: view.uid_validity(),
            records,
        }
    }

    /// Where the message of `map_uid` is, if the map has it.
    pub fn get(&self, map_uid: u32) -> Option<MapRecord> {
        self.records
            .binary_search_by_key(&map_uid, |(uid, _)| *uid)
            .ok()
            .map(|i| self.records[i].1)
    }

    /// Messages with a location.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A value read from an index's files, kept while the files' stamp is unchanged.
#[derive(Debug)]
struct Stamped<T>(Mutex<Option<(IndexStamp, Arc<T>)>>);

impl<T> Default for Stamped<T> {
    fn default() -> Self {
        Stamped(Mutex::new(None))
    }
}

impl<T> Stamped<T> {
    /// The kept value while the files of `paths` are unchanged, else `read()` (kept unless
    /// it fails).
    fn get_or_read(&self, paths: &IndexPaths, read: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let mut current = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // stamped before the read: a change after this point changes the stamp
        let stamp = IndexStamp::of(paths)?;
        if let Some((seen, value)) = current.as_ref() {
            if *seen == stamp {
                return Ok(Arc::clone(value));
            }
        }
        // the old value goes before the new one is read, not after
        *current = None;
        let value = Arc::new(read()?);
        *current = Some((stamp, Arc::clone(&value)));
        Ok(value)
    }

    fn is_kept(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

/// The map table of one store, shared by its mailboxes (and their clones of the store's
/// layout): built on first use, rebuilt when the map's files changed since it was read.
#[derive(Debug, Default)]
pub struct MapCache {
    table: Stamped<MapTable>,
    /// The map's [`HeaderView`] for the quick open of each mailbox, by the same rule:
    /// without it, every mailbox's quick open read and decoded the whole map log again.
    header: Stamped<Option<HeaderView>>,
    /// The map index, once a handle of the store changed it: written at the end
    /// ([`crate::index::close_index`]) when the store and its mailboxes are done.
    written: Mutex<Option<IndexPaths>>,
}

impl Drop for MapCache {
    fn drop(&mut self) {
        let written = self.written.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(paths) = written.take() {
            crate::index::close_index(&mailsync_index::IndexWriter::from_paths(paths));
        }
    }
}

impl MapCache {
    /// The table as of now: the cached one while the map's files are unchanged, else read
    /// again. The map must exist (see `mdbox::create_map_if_missing`).
    pub fn table(&self, paths: &IndexPaths) -> Result<Arc<MapTable>> {
        self.table.get_or_read(paths, || {
            Ok(MapTable::from_view(&read_map_view(paths).map_err(ix_err)?))
        })
    }

    /// The map's [`HeaderView`] as of now (`None` when the header alone can't tell, see
    /// [`HeaderView::open`]): the cached one while the map's files are unchanged.
    pub fn header_view(&self, paths: &IndexPaths) -> Result<Arc<Option<HeaderView>>> {
        self.header
            .get_or_read(paths, || HeaderView::open(paths).map_err(ix_err))
    }

    /// Notes that a handle changed the map index at `paths` (see `written`).
    pub(crate) fn note_written(&self, paths: &IndexPaths) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        *written = Some(paths.clone());
    }

    /// Whether a header view is cached (tests).
    #[doc(hidden)]
    pub fn is_header_cached(&self) -> bool {
        self.header.is_kept()
    }

    /// Whether a table is cached (tests).
    #[doc(hidden)]
    pub fn is_cached(&self) -> bool {
        self.table.is_kept()
    }
}

/// The map view for reading locations, built without `P.log.2` when the replay starts in
/// `P.log`: the state (records, extensions, header) is then the same, as the index's
/// replay never reads the older file (mail-index-map-read.c mail_index_map_latest_file +
/// mail_index_sync_map from the index's log_file_seq); only the history a
/// `changes_since` would answer from is shorter, and nothing asks the map for that.
/// Decoding the older log would double the view's transient memory. Should the view fail
/// without it, it is built again from all three files.
pub fn read_map_view(paths: &IndexPaths) -> mailsync_index::Result<View> {
    {
        let _guard = mailsync_index::lock::read_guard(paths);
        let mut sources = Sources::read(paths)?;
        if !replay_starts_in_head(&sources) {
            return View::build(paths, sources);
        }
        sources.log2 = None;
        if let Ok(view) = View::build(paths, sources) {
            return Ok(view);
        }
    }
    View::open_paths(paths)
}

/// True when `P` and `P.log` have the same indexid and `P` was written at a position in
/// `P.log` (its log_file_seq is the head log's file_seq): replaying `P` needs no older log.
fn replay_starts_in_head(sources: &Sources) -> bool {
    let u32_at = |d: &[u8], off: usize| -> Option<u32> {
        Some(u32::from_le_bytes(d.get(off..off + 4)?.try_into().ok()?))
    };
    let (Some(idx), Some(head)) = (sources.index.as_deref(), sources.log.as_deref()) else {
        return false;
    };
    let (Some(idx_id), Some(idx_seq), Some(log_id), Some(log_seq)) = (
        u32_at(idx, index::hdr_off::INDEXID),
        u32_at(idx, index::hdr_off::LOG_FILE_SEQ),
        u32_at(head, log::hdr_off::INDEXID),
        u32_at(head, log::hdr_off::FILE_SEQ),
    ) else {
        return false;
    };
    idx_id != 0 && idx_id == log_id && idx_seq == log_seq
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DboxStore;
    use mailstore::{Location, NewMail, Store, StoreOptions};
    use mailsync_index::IndexWriter;

    fn store(dir: &std::path::Path) -> DboxStore {
        let loc = Location::parse("mdbox:~/mdbox", Some(dir)).unwrap();
        DboxStore::open(&loc, &StoreOptions::default()).unwrap()
    }

    fn save(s: &DboxStore, n: usize) {
        let mut mb = s.open_mailbox("INBOX").unwrap();
        let mut t = mb.begin().unwrap();
        for i in 0..n {
            let body = format!("Subject: m{i}\n\nbody {i}\n");
            t.save(NewMail::default(), &mut body.as_bytes()).unwrap();
        }
        t.commit().unwrap();
    }

    fn map_paths(dir: &std::path::Path) -> IndexPaths {
        IndexPaths::new(dir.join("mdbox/storage"), crate::mdbox::MAP_PREFIX)
    }

    #[test]
    fn map_view_leaves_out_the_older_log_only_when_the_replay_starts_in_the_head_log() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        save(&s, 3);
        let paths = map_paths(dir.path());
        let w = IndexWriter::from_paths(paths.clone());
        w.write_index().unwrap();
        let old_index = std::fs::read(paths.index()).unwrap();
        // rotation writes P at the start of the new head log
        w.rotate().unwrap();
        save(&s, 2);
        assert!(paths.log2().exists());

        let full = View::open_paths(&paths).unwrap();
        assert_eq!(full.logs().len(), 2);
        let lean = read_map_view(&paths).unwrap();
        assert_eq!(
            lean.logs().len(),
            1,
            "P starts in the head log: log.2 not read"
        );
        let table = MapTable::from_view(&lean);
        assert_eq!(table, MapTable::from_view(&full));
        assert_eq!(table.len(), 5);
        assert_eq!(table.uid_validity, full.uid_validity());
        for m in full.messages() {
            let rec = MapRecord::decode(m.ext(ext::MAP).unwrap());
            assert_eq!(table.get(m.uid()), Some(rec));
        }
        assert_eq!(table.get(full.next_uid()), None);

        // P from before the rotation: its replay starts in log.2, which is read
        std::fs::write(paths.index(), &old_index).unwrap();
        let lean = read_map_view(&paths).unwrap();
        assert_eq!(lean.logs().len(), 2);
        assert_eq!(MapTable::from_view(&lean), table);
        // no P at all: the logs alone, both of them
        std::fs::remove_file(paths.index()).unwrap();
        let lean = read_map_view(&paths).unwrap();
        assert_eq!(lean.logs().len(), 2);
        assert_eq!(MapTable::from_view(&lean), table);
    }

    #[test]
    fn the_cached_table_is_kept_while_the_map_is_unchanged_and_read_again_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        save(&s, 2);
        let paths = map_paths(dir.path());
        let cache = MapCache::default();
        assert!(!cache.is_cached());
        let first = cache.table(&paths).unwrap();
        assert_eq!(first.len(), 2);
        let again = cache.table(&paths).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "unchanged map: same table");
        save(&s, 1);
        let after = cache.table(&paths).unwrap();
        assert!(!Arc::ptr_eq(&first, &after));
        assert_eq!(after.len(), 3);
        assert_eq!(
            *after,
            MapTable::from_view(&View::open_paths(&paths).unwrap())
        );
    }
}
