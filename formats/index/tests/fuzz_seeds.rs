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

#[test]
fn fuzz_log_never_panics_on_seeds_and_mutations() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/log");
    let mut seeds = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        for m in mutations(&data) {
            fuzz_log(&m);
        }
        seeds += 1;
    }
    assert!(seeds >= 15);
}

#[test]
fn fuzz_index_never_panics_on_snapshots_and_mutations() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/index");
    for e in std::fs::read_dir(dir).unwrap() {
        seeds.push(std::fs::read(e.unwrap().path()).unwrap());
    }
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
