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
use mailsync_index::{HeaderView, IndexPaths, View};

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

/// The map view for reading locations ([`View::open_recent`]): the head log from `P`'s
/// head offset on (a map index tracks no per-message modseqs), `P.log.2` only when the
/// replay from `P` needs it. The state (records, extensions, header) is the same as a full
/// read's, as the replay never reads the records before `P`'s offset
/// (mail-index-map-read.c mail_index_map_latest_file + mail_index_sync_map from the index's
/// log_file_seq); only the history a `changes_since` would answer from is shorter, and
/// nothing asks the map for that. Should the view need a repair, every log is read.
pub fn read_map_view(paths: &IndexPaths) -> mailsync_index::Result<View> {
    View::open_recent(paths)
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

    /// The map tracks no per-message modseqs: its head log is decoded from `P`'s head
    /// offset (the counter there counted over the records before it), and the view is the
    /// full read's.
    #[test]
    fn map_view_decodes_the_head_log_from_ps_head_offset() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        save(&s, 3);
        let paths = map_paths(dir.path());
        IndexWriter::from_paths(paths.clone())
            .write_index()
            .unwrap();
        save(&s, 2);
        let full = View::open_paths(&paths).unwrap();
        let lean = read_map_view(&paths).unwrap();
        let p_head = full.header_on_disk().unwrap().log_file_head_offset as u64;
        assert!(p_head > full.logs()[0].header.hdr_size as u64);
        assert_eq!(lean.logs()[0].first_offset, p_head);
        assert_eq!(lean.index_file().encode(), full.index_file().encode());
        assert_eq!(lean.log_modseq(), full.log_modseq());
        assert_eq!(MapTable::from_view(&lean), MapTable::from_view(&full));
        assert_eq!(MapTable::from_view(&lean).len(), 5);
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
