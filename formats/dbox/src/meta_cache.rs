//! `mailsync.meta-cache`: what a full read of an mdbox mailbox takes from each message's
//! dbox metadata block — GUID, received date, physical and virtual size — kept next to
//! the mailbox index, so that listing a mailbox's messages (every full sync) needs no
//! `pread` of 17,000 metadata blocks spread over the `m.N` files. Dovecot keeps the same
//! fields in `dovecot.index.cache` (which mailsync doesn't write); this file is mailsync's
//! own and Dovecot never reads it (it unlinks every file of a mailbox directory it deletes:
//! mailbox-list-delete.c mailbox_list_delete_mailbox_nonrecursive).
//!
//! Entries are keyed by **map UID**: the metadata belongs to the stored message the map
//! record points to, and a stored message's bytes never change (a purge copies them to
//! another file unchanged), nor is a map UID given to another message while the map keeps
//! its UIDVALIDITY, which the file's header names (a rebuild keeps a map UID only for the
//! message at the same file, offset and size — mdbox-storage-rebuild.c
//! rebuild_apply_map — and gives new ones from the map's next UID; a map created anew has
//! a new UIDVALIDITY). An entry is used only when its map UID *and* the map record's size
//! match.
//!
//! It is a cache: losing it loses nothing, and no write to it is fsynced. Every entry
//! carries a CRC-32 of its bytes; reading stops at the first entry that doesn't check (a
//! torn append after a crash), and such a file is written anew (temp file, rename) by the
//! next listing that reads it. Byte layout in FORMAT.md §4.8.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mailstore::Guid;

use crate::sdbox::RecordInfo;

/// The file's name in the mailbox index directory.
pub const FILE_NAME: &str = "mailsync.meta-cache";

/// Header: magic, then the map's UIDVALIDITY, then 4 reserved bytes (zero).
pub const MAGIC: &[u8; 8] = b"MSYNCMC\x01";
const HDR_MAP_UID_VALIDITY: usize = 8;
pub const HEADER_SIZE: usize = 16;

/// An entry: fixed fields at these offsets, then the GUID's bytes, then a CRC-32 (IEEE)
/// of everything before it in the entry. All integers little-endian.
const ENT_MAP_UID: usize = 0;
const ENT_MAP_SIZE: usize = 4;
const ENT_RECEIVED: usize = 8;
const ENT_PHYSICAL: usize = 16;
const ENT_VSIZE: usize = 24;
const ENT_GUID_LEN: usize = 32;
const ENT_GUID: usize = 34;
const CRC_SIZE: usize = 4;
/// `vsize` of a message whose virtual size the metadata doesn't give.
const VSIZE_UNKNOWN: u64 = u64::MAX;

/// Entries of messages no longer in the mailbox (expunged, moved) that a read of the
/// whole mailbox lets stay: it writes the file anew once there are more of them than this
/// and than entries in use.
const STALE_MAX: usize = 1024;

/// The file is read this much at a time (more for an entry with a longer GUID): the
/// cache is never held whole in memory.
const READ_CHUNK: usize = 128 * 1024;

/// What an entry holds about the stored message of map UID `map_uid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    pub map_uid: u32,
    /// The map record's size (the message's bytes in its `m.N`): checked on use.
    pub map_size: u32,
    pub received: i64,
    pub physical: u64,
    pub vsize: Option<u64>,
    pub guid: &'a [u8],
}

/// How the start of some bytes decodes as an entry.
enum Decoded<'a> {
    /// An entry and its length.
    Entry(Entry<'a>, usize),
    /// Cut short: at least this many bytes are needed to tell.
    Short(usize),
    /// Its CRC doesn't match.
    Bad,
}

impl Entry<'_> {
    /// Appends the entry's bytes to `out`; false (nothing written) for a GUID too long
    /// for the length field.
    fn encode(&self, out: &mut Vec<u8>) -> bool {
        let Ok(guid_len) = u16::try_from(self.guid.len()) else {
            return false;
        };
        let start = out.len();
        out.extend_from_slice(&self.map_uid.to_le_bytes());
        out.extend_from_slice(&self.map_size.to_le_bytes());
        out.extend_from_slice(&self.received.to_le_bytes());
        out.extend_from_slice(&self.physical.to_le_bytes());
        out.extend_from_slice(&self.vsize.unwrap_or(VSIZE_UNKNOWN).to_le_bytes());
        out.extend_from_slice(&guid_len.to_le_bytes());
        out.extend_from_slice(self.guid);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        true
    }

    /// The entry at the start of `data`.
    fn decode(data: &[u8]) -> Decoded<'_> {
        let Some(len_field) = data.get(ENT_GUID_LEN..ENT_GUID) else {
            return Decoded::Short(ENT_GUID);
        };
        let guid_len = u16::from_le_bytes([len_field[0], len_field[1]]) as usize;
        let crc_at = ENT_GUID + guid_len;
        let len = crc_at + CRC_SIZE;
        if data.len() < len {
            return Decoded::Short(len);
        }
        let u32_at =
            |at: usize| u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        if crc32fast::hash(&data[..crc_at]) != u32_at(crc_at) {
            return Decoded::Bad;
        }
        let vsize = u64_at(ENT_VSIZE);
        let entry = Entry {
            map_uid: u32_at(ENT_MAP_UID),
            map_size: u32_at(ENT_MAP_SIZE),
            received: u64_at(ENT_RECEIVED) as i64,
            physical: u64_at(ENT_PHYSICAL),
            vsize: (vsize != VSIZE_UNKNOWN).then_some(vsize),
            guid: &data[ENT_GUID..crc_at],
        };
        Decoded::Entry(entry, len)
    }

    /// The metadata as a record's (`saved` is the index's: left 0 here).
    pub fn info(&self) -> RecordInfo {
        RecordInfo {
            guid: Guid::from_bytes(self.guid),
            received: self.received,
            saved: 0,
            physical: self.physical,
            vsize: self.vsize,
        }
    }
}

/// The path of the cache of the mailbox whose index is in `index_dir`.
pub(crate) fn path(index_dir: &Path) -> PathBuf {
    index_dir.join(FILE_NAME)
}

/// What a [`scan`] found of the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Entries read (each handed to the caller).
    pub entries: usize,
    /// The file can't be appended to as it is: unreadable, another map's, an unknown
    /// header, or a tail that doesn't parse (reading stopped there).
    pub needs_rewrite: bool,
}

/// What to do with the file after a read that found `used` of its entries and read `new`
/// messages' metadata from the `m.N` files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Upkeep {
    Nothing,
    /// Append the `new` messages' entries.
    Append,
    /// Write the file anew with the entries of every message the read listed.
    Rewrite,
}

impl Scan {
    /// `whole`: the read was of every message of the mailbox (the entries it didn't use
    /// are then of messages no longer there). The file is written anew when it can't be
    /// appended to, or, after a whole read, when it holds more than [`STALE_MAX`] entries
    /// not used and more of those than of used ones.
    pub fn upkeep(&self, used: usize, new: usize, whole: bool) -> Upkeep {
        let stale = self.entries.saturating_sub(used);
        if self.needs_rewrite || (whole && stale > STALE_MAX.max(used)) {
            Upkeep::Rewrite
        } else if new > 0 {
            Upkeep::Append
        } else {
            Upkeep::Nothing
        }
    }
}

/// Reads the cache at `path` for a map of UIDVALIDITY `map_uid_validity`, a chunk at a
/// time, handing each entry whose CRC matches to `each`, in file order, until the first
/// that doesn't. A missing, unreadable or foreign file has no entries (never an error:
/// the metadata is then read from the `m.N` files).
pub(crate) fn scan(path: &Path, map_uid_validity: u32, each: impl FnMut(Entry<'_>)) -> Scan {
    match File::open(path) {
        Ok(mut f) => scan_from(&mut f, map_uid_validity, each),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Scan::default(),
        Err(_) => Scan {
            needs_rewrite: true,
            ..Scan::default()
        },
    }
}

/// [`scan`] of the bytes `f` reads.
pub(crate) fn scan_from(
    f: &mut impl Read,
    map_uid_validity: u32,
    mut each: impl FnMut(Entry<'_>),
) -> Scan {
    let broken = Scan {
        needs_rewrite: true,
        ..Scan::default()
    };
    let mut buf = vec![0u8; READ_CHUNK];
    let Ok((mut len, mut eof)) = fill(f, &mut buf, 0) else {
        return broken;
    };
    if !is_header_of(&buf[..len], map_uid_validity) {
        return broken;
    }
    let mut scan = Scan::default();
    let mut at = HEADER_SIZE;
    loop {
        match Entry::decode(&buf[at..len]) {
            Decoded::Entry(e, n) => {
                each(e);
                scan.entries += 1;
                at += n;
            }
            Decoded::Short(_) if eof && at == len => break,
            Decoded::Short(need) if !eof => {
                buf.copy_within(at..len, 0);
                len -= at;
                at = 0;
                if need > buf.len() {
                    buf.resize(need, 0);
                }
                match fill(f, &mut buf, len) {
                    Ok((l, e)) => (len, eof) = (l, e),
                    Err(_) => {
                        scan.needs_rewrite = true;
                        break;
                    }
                }
            }
            Decoded::Short(_) | Decoded::Bad => {
                scan.needs_rewrite = true;
                break;
            }
        }
    }
    scan
}

/// Whether `data` starts with a cache header of the map of UIDVALIDITY `map_uid_validity`.
fn is_header_of(data: &[u8], map_uid_validity: u32) -> bool {
    data.len() >= HEADER_SIZE
        && data[..MAGIC.len()] == MAGIC[..]
        && data[HDR_MAP_UID_VALIDITY..HDR_MAP_UID_VALIDITY + 4] == map_uid_validity.to_le_bytes()
}

/// Reads into `buf[from..]` until it is full or the file ends: (bytes in `buf`, ended).
fn fill(f: &mut impl Read, buf: &mut [u8], from: usize) -> io::Result<(usize, bool)> {
    let mut len = from;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) => return Ok((len, true)),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((len, false))
}

/// Bytes gathered before a `write`: a long list of entries goes out in writes of whole
/// entries of about this size, so the list is never encoded whole in memory.
const WRITE_CHUNK: usize = 64 * 1024;

/// Encodes `entries` and writes them to `f` in [`WRITE_CHUNK`]s of whole entries (each
/// write of an O_APPEND file lands whole at its end: concurrent appenders interleave only
/// between entries).
fn write_entries<'a>(
    f: &mut File,
    mut out: Vec<u8>,
    entries: impl Iterator<Item = Entry<'a>>,
) -> io::Result<()> {
    for e in entries {
        e.encode(&mut out);
        if out.len() >= WRITE_CHUNK {
            f.write_all(&out)?;
            out.clear();
        }
    }
    if !out.is_empty() {
        f.write_all(&out)?;
    }
    Ok(())
}

/// Appends `new` to the cache at `path` (O_APPEND, whole entries a write) when its header
/// is of this map; a missing file, or one of another map, is written anew with `new`
/// alone. Nothing is fsynced (see the module documentation); no entries, no write.
pub(crate) fn append<'a>(
    path: &Path,
    map_uid_validity: u32,
    new: impl IntoIterator<Item = Entry<'a>>,
) -> io::Result<()> {
    let mut new = new.into_iter().peekable();
    if new.peek().is_none() {
        return Ok(());
    }
    let mut header = [0u8; HEADER_SIZE];
    let opened = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.read_exact(&mut header).map(|()| f));
    match opened {
        Ok(mut f) if is_header_of(&header, map_uid_validity) => {
            write_entries(&mut f, Vec::with_capacity(WRITE_CHUNK + 128), new)
        }
        _ => rewrite(path, map_uid_validity, new),
    }
}

/// Writes a whole cache (header and `entries`) to a temp file beside `path` and renames
/// it over `path`. Nothing is fsynced (see the module documentation).
pub(crate) fn rewrite<'a>(
    path: &Path,
    map_uid_validity: u32,
    entries: impl IntoIterator<Item = Entry<'a>>,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(WRITE_CHUNK + 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&map_uid_validity.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        "{FILE_NAME}.{}.{}.tmp",
        mailstore::hostname(),
        std::process::id()
    ));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| write_entries(&mut f, out, entries.into_iter()))
        .and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(map_uid: u32, guid: &[u8]) -> Entry<'_> {
        Entry {
            map_uid,
            map_size: 100 + map_uid,
            received: 1_700_000_000 + map_uid as i64,
            physical: 50 + map_uid as u64,
            vsize: map_uid.is_multiple_of(2).then_some(60 + map_uid as u64),
            guid,
        }
    }

    /// The entries a scan hands out (map UID, GUID) and its summary.
    fn read(path: &Path, map_uid_validity: u32) -> (Vec<(u32, Vec<u8>)>, Scan) {
        let mut got = Vec::new();
        let scan = scan(path, map_uid_validity, |e| {
            assert_eq!(e, entry(e.map_uid, e.guid), "read as written");
            got.push((e.map_uid, e.guid.to_vec()));
        });
        (got, scan)
    }

    fn file_with(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for e in entries {
            e.encode(&mut out);
        }
        out
    }

    #[test]
    fn entries_written_are_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = path(dir.path());
        let (got, s) = read(&path, 7);
        assert!(got.is_empty());
        assert_eq!(s, Scan::default(), "no file: nothing to rewrite");
        rewrite(&path, 7, [entry(1, b"g1"), entry(2, b"g2")]).unwrap();
        append(&path, 7, [entry(5, b"\x00weird\xffguid")]).unwrap();
        let (got, s) = read(&path, 7);
        assert_eq!(
            got,
            [
                (1, b"g1".to_vec()),
                (2, b"g2".to_vec()),
                (5, b"\x00weird\xffguid".to_vec())
            ]
        );
        assert_eq!((s.entries, s.needs_rewrite), (3, false));
        let info = entry(2, b"g2").info();
        assert_eq!(info.guid.as_bytes(), b"g2");
        assert_eq!(
            (info.received, info.physical, info.vsize),
            (1_700_000_002, 52, Some(62))
        );
        assert_eq!(entry(1, b"g1").info().vsize, None);
        // another map (rebuilt: a new UIDVALIDITY): nothing is read, and an append
        // writes the file anew
        let (got, s) = read(&path, 8);
        assert!(got.is_empty() && s.needs_rewrite);
        append(&path, 8, [entry(9, b"g9")]).unwrap();
        assert_eq!(read(&path, 8).0, [(9, b"g9".to_vec())]);
        assert!(!dir.path().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
    }

    #[test]
    fn entries_longer_than_a_chunk_and_across_chunks_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = path(dir.path());
        let long = vec![b'x'; 65_535];
        let guids: Vec<String> = (0..5000).map(|i| format!("guid-{i:08}")).collect();
        let mut all: Vec<Entry<'_>> = guids
            .iter()
            .enumerate()
            .map(|(i, g)| entry(i as u32 + 1, g.as_bytes()))
            .collect();
        all.insert(2500, entry(100_000, &long));
        let too_long = vec![b'y'; 65_536];
        all.push(entry(100_001, &too_long));
        rewrite(&path, 3, all.iter().cloned()).unwrap();
        assert!(fs::metadata(&path).unwrap().len() > 2 * READ_CHUNK as u64);
        let (got, s) = read(&path, 3);
        assert_eq!((s.entries, s.needs_rewrite), (5001, false));
        assert_eq!(got[2500], (100_000, long));
        assert_eq!(
            got.last().unwrap().0,
            5000,
            "a GUID too long for the field is left out"
        );
    }

    #[test]
    fn a_torn_tail_ends_the_reading_and_asks_for_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = path(dir.path());
        let whole = file_with(&[entry(1, b"a"), entry(2, b"b")]);
        let first_end = HEADER_SIZE + ENT_GUID + 1 + CRC_SIZE;
        for cut in 0..whole.len() {
            fs::write(&path, &whole[..cut]).unwrap();
            let (got, s) = read(&path, 1);
            assert_eq!(got.len(), usize::from(cut >= first_end), "cut at {cut}");
            let at_an_end = cut == HEADER_SIZE || cut == first_end;
            assert_eq!(s.needs_rewrite, !at_an_end, "cut at {cut}");
        }
        // a flipped byte in the second entry: the first is kept, the rest not trusted
        let mut bad = whole.clone();
        let last = bad.len() - 6;
        bad[last] ^= 0x40;
        fs::write(&path, &bad).unwrap();
        let (got, s) = read(&path, 1);
        assert_eq!((got.len(), s.needs_rewrite), (1, true));
        // zeros after a crash (the size grew, the data never came)
        let mut zeros = whole.clone();
        zeros.extend_from_slice(&[0; 64]);
        fs::write(&path, &zeros).unwrap();
        let (got, s) = read(&path, 1);
        assert_eq!((got.len(), s.needs_rewrite), (2, true));
        assert_eq!(s.upkeep(2, 0, false), Upkeep::Rewrite);
        for junk in [&b"MSYNCMC"[..], b"junk", &whole[..HEADER_SIZE - 1]] {
            fs::write(&path, junk).unwrap();
            let (got, s) = read(&path, 1);
            assert!(got.is_empty() && s.needs_rewrite);
        }
    }

    #[test]
    fn a_whole_read_rewrites_once_stale_entries_outnumber_the_rest() {
        let scan = |entries| Scan {
            entries,
            needs_rewrite: false,
        };
        // 2,000 not used of 3,000: more than STALE_MAX and than the 1,000 used
        assert_eq!(scan(3000).upkeep(1000, 0, true), Upkeep::Rewrite);
        assert_eq!(
            scan(3000).upkeep(1000, 0, false),
            Upkeep::Nothing,
            "can't tell"
        );
        assert_eq!(scan(3000).upkeep(1000, 5, false), Upkeep::Append);
        // 1,000 not used: fewer than STALE_MAX
        assert_eq!(scan(1400).upkeep(400, 0, true), Upkeep::Nothing);
        // 1,100 not used, 2,000 used
        assert_eq!(scan(3100).upkeep(2000, 1, true), Upkeep::Append);
        assert_eq!(Scan::default().upkeep(0, 3, true), Upkeep::Append);
    }
}
