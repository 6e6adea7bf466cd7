//! mdbox purge: rewrites the `storage/m.<id>` files that hold refcount-0 messages,
//! keeping only the live ones (src/lib-storage/index/dbox-multi/mdbox-purge.c
//! mdbox_file_purge, mdbox-map.c mdbox_map_append_move / mdbox_map_remove_file_id).
//!
//! Per file, in this order (each step durable before the next):
//! 1. flock `m.<old>` (LOCK_EX|LOCK_NB; a file someone holds is skipped), take its map
//!    records sorted by offset; the file must hold exactly those messages back to back
//!    (else it is left alone with a warning, as Dovecot's "purging found mismatched
//!    offsets" / "more messages available than in map": bytes the map doesn't know may be
//!    messages a crashed save left for a rebuild to find);
//! 2. copy every live message (refcount > 0), byte for byte (message header, body,
//!    metadata), into a brand-new `m.<new>` (O_EXCL, id above the map's highest_file_id),
//!    fsync it and the directory;
//! 3. under the map lock, check again that no refcount-0 message of the old file was
//!    copied meanwhile (a refcount raised: the purge of this file is cancelled and the
//!    new file removed, as mdbox_file_purge_check_refcounts), then one EXTERNAL map
//!    transaction: the moved records get {new file_id, offset, size}, the refcount-0
//!    records are expunged, `highest_file_id` raised (plus the tail-offset update
//!    Dovecot's map sync leaves);
//! 4. unlink `m.<old>` while still holding the map lock and the file's flock (a saver
//!    picks its file under the map lock, so none is between open and flock of it), then
//!    fsync the directory.
//!
//! Crash at any point: before 3 the map still points into the old file (intact) and the
//! new file is an orphan no record points to; after 3 the map points into the new file
//! and the old one, if not unlinked yet, is an orphan with no map record. Orphans are
//! never read and never deleted automatically (as Dovecot, which leaves them to a
//! rebuild): an unmapped `m.<id>` may also be what a save that crashed between its
//! mailbox and map writes left, holding messages only a rebuild can find again. So a
//! crash costs disk space, never a message, and no message is ever visible twice (only
//! map records make a message visible, and each map UID has exactly one).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use mailstore::{Error, Result};
use mailsync_index::format::ext::{self, MapHeader, MapRecord};
use mailsync_index::locked_commit::{commit_locked, commit_locked_synced};
use mailsync_index::View;

use crate::file::{self, FileHeader};
use crate::index::{ix_err, CommitError};
use crate::layout::{DboxKind, Layout};
use crate::mdbox::{map_file_name, map_writer, now, try_lock_file, MAP_PREFIX};

/// A point of the purge of one file, reported to the hook after it is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurgeStep {
    /// The live messages of `old` are in the new file `new` (fsynced, not mapped yet).
    Copied { old: u32, new: u32 },
    /// The map points to `new` (or, with no live message, only the expunges happened).
    MapUpdated { old: u32 },
    /// `m.<old>` is gone.
    Unlinked { old: u32 },
}

/// What a purge did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeStats {
    /// Files rewritten (or removed) and unlinked.
    pub files_purged: u32,
    /// Refcount-0 messages removed from the map.
    pub messages_removed: u32,
    /// Live messages moved to new files.
    pub messages_moved: u32,
    /// Files skipped (locked by someone, or not matching the map).
    pub files_skipped: u32,
}

/// Purges every mdbox storage file holding refcount-0 messages. Nothing for sdbox (as
/// `doveadm purge`, which only mdbox implements).
pub fn purge(layout: &Layout) -> Result<PurgeStats> {
    purge_with_hook(layout, &mut |_| true)
}

/// [`purge`], calling `hook` after each durable step; when it returns false the purge
/// stops right there, as a crash would (for tests of crash safety).
pub fn purge_with_hook(
    layout: &Layout,
    hook: &mut dyn FnMut(PurgeStep) -> bool,
) -> Result<PurgeStats> {
    let mut stats = PurgeStats::default();
    if layout.kind != DboxKind::Multi {
        return Ok(stats);
    }
    let storage = layout.storage_dir();
    if !storage.join(format!("{MAP_PREFIX}.log")).exists() && !storage.join(MAP_PREFIX).exists() {
        return Ok(stats);
    }
    let map = map_writer(layout).view().map_err(ix_err)?;
    let mut zero_files: Vec<u32> = file_records(&map)
        .into_iter()
        .filter(|(_, recs)| recs.iter().any(|r| r.refcount == 0))
        .map(|(id, _)| id)
        .collect();
    zero_files.sort_unstable();
    for file_id in zero_files {
        match purge_file(layout, file_id, &mut stats, hook)? {
            Outcome::Done => stats.files_purged += 1,
            Outcome::Skipped => stats.files_skipped += 1,
            Outcome::Stopped => return Ok(stats),
        }
    }
    Ok(stats)
}

#[derive(Clone, Copy, Debug)]
struct FileRecord {
    map_uid: u32,
    rec: MapRecord,
    refcount: u16,
}

/// The map records by file id.
fn file_records(map: &View) -> BTreeMap<u32, Vec<FileRecord>> {
    let mut out: BTreeMap<u32, Vec<FileRecord>> = BTreeMap::new();
    for m in map.messages() {
        let Some(rec) = m.ext(ext::MAP).map(MapRecord::decode) else {
            continue;
        };
        let refcount = m.ext(ext::REF).map(ext::ref_count).unwrap_or(0);
        out.entry(rec.file_id).or_default().push(FileRecord {
            map_uid: m.uid(),
            rec,
            refcount,
        });
    }
    out
}

fn highest_file_id(map: &View) -> u32 {
    map.extension(ext::MAP)
        .map(|e| MapHeader::decode(&e.data).highest_file_id)
        .unwrap_or(0)
}

enum Outcome {
    Done,
    Skipped,
    Stopped,
}

fn purge_file(
    layout: &Layout,
    file_id: u32,
    stats: &mut PurgeStats,
    hook: &mut dyn FnMut(PurgeStep) -> bool,
) -> Result<Outcome> {
    let storage = layout.storage_dir();
    let old_path = storage.join(map_file_name(file_id));
    let old = match File::open(&old_path) {
        Ok(f) => f,
        // already purged by someone else
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::Skipped),
        Err(e) => return Err(Error::io("open", &old_path, e)),
    };
    if !try_lock_file(&old, &old_path)? {
        return Ok(Outcome::Skipped);
    }
    if !old_path.exists() {
        return Ok(Outcome::Skipped);
    }
    // the records again, now that the file is locked (no save appends to it meanwhile)
    let map = map_writer(layout).view().map_err(ix_err)?;
    let mut recs = file_records(&map).remove(&file_id).unwrap_or_default();
    recs.sort_by_key(|r| r.rec.offset);
    let hdr = match file::read_file_header(&old) {
        Ok(h) => h,
        Err(e) => {
            crate::warn(&format!(
                "purge: {}: {}",
                old_path.display(),
                e.into_store_error(&old_path)
            ));
            return Ok(Outcome::Skipped);
        }
    };
    // step 1: the file must be exactly the mapped messages back to back
    let len = old
        .metadata()
        .map_err(|e| Error::io("fstat", &old_path, e))?
        .len();
    let mut offset = hdr.header_len as u64;
    let mut extents = Vec::with_capacity(recs.len());
    for r in &recs {
        if r.rec.offset as u64 != offset {
            crate::warn(&format!(
                "purge: {}: mismatched offsets ({offset} vs {}), left alone (force-resync)",
                old_path.display(),
                r.rec.offset
            ));
            return Ok(Outcome::Skipped);
        }
        let extent = match file::read_mail_at(&old, &hdr, offset) {
            Ok(x) => x,
            Err(e) => {
                crate::warn(&format!(
                    "purge: {}: {}",
                    old_path.display(),
                    e.into_store_error(&old_path)
                ));
                return Ok(Outcome::Skipped);
            }
        };
        offset += extent.total_size;
        extents.push(extent.total_size);
    }
    if offset != len {
        crate::warn(&format!(
            "purge: {}: more data than in map ({offset} < {len}), left alone (force-resync)",
            old_path.display()
        ));
        return Ok(Outcome::Skipped);
    }
    // step 2: live messages into a new file
    let live: Vec<(FileRecord, u64)> = recs
        .iter()
        .zip(&extents)
        .filter(|(r, _)| r.refcount > 0)
        .map(|(r, &size)| (*r, size))
        .collect();
    let mut moved: Vec<(u32, MapRecord)> = Vec::new();
    let mut new_file: Option<(u32, std::path::PathBuf)> = None;
    if !live.is_empty() {
        let (new_id, new_path, new, header_len) = create_new_file(&storage, highest_file_id(&map))?;
        new_file = Some((new_id, new_path.clone()));
        let copied = (|| -> Result<()> {
            let mut out_off = header_len;
            let mut buf = vec![0u8; 64 * 1024];
            for (r, size) in &live {
                let mut done = 0u64;
                while done < *size {
                    let want = ((*size - done) as usize).min(buf.len());
                    let n = old
                        .read_at(&mut buf[..want], r.rec.offset as u64 + done)
                        .map_err(|e| Error::io("read", &old_path, e))?;
                    if n == 0 {
                        return Err(Error::corrupted(&old_path, "file shrank during purge"));
                    }
                    new.write_all_at(&buf[..n], out_off + done)
                        .map_err(|e| Error::io("write", &new_path, e))?;
                    done += n as u64;
                }
                let new_rec = MapRecord {
                    file_id: new_id,
                    offset: u32::try_from(out_off)
                        .map_err(|_| Error::NotPossible("purge: new file too large".into()))?,
                    size: u32::try_from(*size)
                        .map_err(|_| Error::NotPossible("purge: message too large".into()))?,
                };
                moved.push((r.map_uid, new_rec));
                out_off += size;
            }
            new.sync_all()
                .map_err(|e| Error::io("fsync", &new_path, e))?;
            mailsupport::atomic::fsync_dir(&storage).map_err(|e| Error::io("fsync", &storage, e))
        })();
        if let Err(e) = copied {
            let _ = fs::remove_file(&new_path);
            return Err(e);
        }
        if !hook(PurgeStep::Copied {
            old: file_id,
            new: new_id,
        }) {
            return Ok(Outcome::Stopped);
        }
    }
    // step 3: the map, in one EXTERNAL transaction
    let moved_uids: HashSet<u32> = moved.iter().map(|(u, _)| *u).collect();
    let new_id = new_file.as_ref().map(|(id, _)| *id);
    let committed = commit_locked_synced(
        &map_writer(layout),
        true,
        |view, t| -> std::result::Result<Option<u32>, CommitError> {
            let now_recs = file_records(view).remove(&file_id).unwrap_or_default();
            // a refcount-0 message copied meanwhile, or a record we didn't see: cancel
            if now_recs
                .iter()
                .any(|r| r.refcount > 0 && !moved_uids.contains(&r.map_uid))
            {
                return Ok(None);
            }
            t.ext_intro(ext::MAP, 8, 12, 4);
            t.ext_intro(ext::REF, 0, 2, 2);
            let mut next_uid = view.next_uid();
            for (map_uid, rec) in &moved {
                let mut data = Vec::with_capacity(12);
                data.extend_from_slice(&rec.file_id.to_le_bytes());
                data.extend_from_slice(&rec.offset.to_le_bytes());
                data.extend_from_slice(&rec.size.to_le_bytes());
                let uid = if view.message(*map_uid).is_some() {
                    *map_uid
                } else {
                    // expunged and purged by someone else meanwhile: mapped again with
                    // refcount 0 for the next purge (as mdbox_map_append_move)
                    t.append(next_uid, 0);
                    next_uid += 1;
                    next_uid - 1
                };
                t.ext_rec_update(ext::MAP, uid, &data);
            }
            let mut removed = 0;
            for r in &now_recs {
                if !moved_uids.contains(&r.map_uid) {
                    t.expunge_guid(r.map_uid, [0; 16]);
                    removed += 1;
                }
            }
            if let Some(id) = new_id {
                if id > highest_file_id(view) {
                    t.ext_hdr_update(ext::MAP, 0, &id.to_le_bytes());
                }
            }
            Ok(Some(removed))
        },
    )
    .map_err(|CommitError(e)| e)?
    .0;
    let Some(removed) = committed else {
        if let Some((_, p)) = &new_file {
            let _ = fs::remove_file(p);
        }
        return Ok(Outcome::Skipped);
    };
    stats.messages_removed += removed;
    stats.messages_moved += moved.len() as u32;
    if !hook(PurgeStep::MapUpdated { old: file_id }) {
        return Ok(Outcome::Stopped);
    }
    // step 4: the old file goes, under the map lock (and its flock, still held)
    commit_locked(
        &map_writer(layout),
        false,
        |_, _t| -> std::result::Result<(), CommitError> {
            fs::remove_file(&old_path).map_err(|e| Error::io("unlink", &old_path, e))?;
            mailsupport::atomic::fsync_dir(&storage)
                .map_err(|e| Error::io("fsync", &storage, e))?;
            Ok(())
        },
    )
    .map_err(|CommitError(e)| e)?;
    drop(old);
    if !hook(PurgeStep::Unlinked { old: file_id }) {
        return Ok(Outcome::Stopped);
    }
    Ok(Outcome::Done)
}

/// A new `m.<id>` (O_EXCL, id above `highest`, skipping existing files) with a file
/// header, flocked; also the header's length (where the first message goes).
fn create_new_file(storage: &Path, highest: u32) -> Result<(u32, std::path::PathBuf, File, u64)> {
    let mut id = highest + 1;
    loop {
        let path = storage.join(map_file_name(id));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                if !try_lock_file(&f, &path)? {
                    id += 1;
                    continue;
                }
                let header = FileHeader::encode(now().max(0) as u64);
                f.write_all_at(&header, 0)
                    .map_err(|e| Error::io("write", &path, e))?;
                return Ok((id, path, f, header.len() as u64));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => id += 1,
            Err(e) => return Err(Error::io("open", &path, e)),
        }
    }
}
