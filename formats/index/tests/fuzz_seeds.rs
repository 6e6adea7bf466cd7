//! The fuzz entry points run over every seed (fuzz/corpus/*) and index snapshots built from
//! the testdata logs, plus deterministic mutations of each: none may panic.

mod common;

use mailsync_index::fuzzing::{fuzz_index, fuzz_log};
use mailsync_index::View;

fn mutations(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![seed.to_vec()];
    let n = seed.len();
    // truncations
    for cut in [0, 1, 8, 24, 39, 40, 44, 48, 100, 120, 121] {
        if cut < n {
            out.push(seed[..cut].to_vec());
        }
    }
    for frac in 1..8 {
        out.push(seed[..n * frac / 8].to_vec());
    }
    // byte flips spread over the file
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ n as u64;
    for _ in 0..200 {
        if n == 0 {
            break;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut m = seed.to_vec();
        let pos = (x as usize) % n;
        m[pos] = match x % 4 {
            0 => m[pos] ^ 0x80,
            1 => 0xff,
            2 => 0,
            _ => m[pos].wrapping_add(1),
        };
        out.push(m);
    }
    out
}

/// The stored seeds of fuzz target `name` (fuzz/corpus/NAME).
fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn fuzz_log_never_panics_on_seeds_and_mutations() {
    let seeds = corpus("log");
    for data in &seeds {
        for m in mutations(data) {
            fuzz_log(&m);
        }
    }
    assert!(seeds.len() >= 15);
}

#[test]
fn fuzz_index_never_panics_on_snapshots_and_mutations() {
    let mut seeds = corpus("index");
    for log in common::testdata_logs() {
        let paths = mailsync_index::IndexPaths::from_file(&log);
        if let Ok(v) = View::open_paths(&paths) {
            seeds.push(v.index_file().encode());
        }
    }
    assert!(seeds.len() >= 15);
    for s in &seeds {
        // a snapshot of a view is a valid index
        assert!(
            mailsync_index::format::index::IndexFile::decode(s, std::path::Path::new("x")).is_ok()
        );
        for m in mutations(s) {
            fuzz_index(&m);
        }
    }
}

/// `P` and its log as the header replay's fuzz input: a u32 length of `P`, `P`, the log.
fn header_replay_input(dir: &std::path::Path) -> Vec<u8> {
    let p = std::fs::read(dir.join("dovecot.index")).unwrap();
    let log = std::fs::read(dir.join("dovecot.index.log")).unwrap();
    let mut out = (p.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&p);
    out.extend_from_slice(&log);
    out
}

/// Indexes whose log holds record changes past `P` (appends, flag and keyword changes,
/// expunges, extension records, with and without modseqs), as the header replay's seeds:
/// the stored corpus (fuzz/corpus/header_replay) and these, each mutated: no panic.
#[test]
fn fuzz_header_replay_never_panics_on_seeds_and_mutations() {
    use mailsync_index::format::index::rec_flag;
    use mailsync_index::fuzzing::fuzz_header_replay;
    let mut seeds = corpus("header_replay");
    for (n, modseqs) in [(12u32, false), (300, true)] {
        let dir = tempfile::tempdir().unwrap();
        let w = mailsync_index::IndexWriter::open(dir.path(), "dovecot.index");
        w.create(99).unwrap();
        if modseqs {
            mailsync_index::locked_commit::enable_modseqs(&w).unwrap();
        }
        let mut t = w.begin().external(true);
        t.ext_intro("test", 0, 4, 4);
        for uid in 1..=n {
            t.append(uid, if uid % 2 == 0 { rec_flag::SEEN } else { 0 });
            t.ext_rec_update("test", uid, &uid.to_le_bytes());
        }
        t.commit().unwrap();
        let mut t = w.begin();
        t.keywords(true, b"$Label1", &[1]);
        t.commit().unwrap();
        w.write_index().unwrap();
        let mut t = w.begin().external(true);
        t.flags(2, n / 2, rec_flag::FLAGGED, 0);
        t.append(n + 1, 0);
        t.ext_rec_update("test", n + 1, &7u32.to_le_bytes());
        t.expunge_guid(1, [0; 16]);
        t.commit().unwrap();
        let mut t = w.begin();
        t.keywords(true, b"$Label1", &[3, n]);
        t.commit().unwrap();
        seeds.push(header_replay_input(dir.path()));
    }
    assert!(seeds.len() >= 4, "{} seeds", seeds.len());
    for s in &seeds {
        // each seed is answered by replaying its record changes: the replay runs
        assert!(fuzz_header_replay(s));
        for m in mutations(s) {
            fuzz_header_replay(&m);
        }
    }
}
