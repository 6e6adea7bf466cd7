//! Runs the fuzz entry points over every seed of fuzz/corpus and simple mutations of each
//! (truncations, byte flips, insertions), so they are compiled and exercised by `cargo test`.

use std::fs;
use std::path::Path;

use mailsync_maildir::fuzzing;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(out.len() >= 3, "{target}: too few seeds");
    out.sort();
    out
}

fn mutations(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![seed.to_vec()];
    let step = (seed.len() / 16).max(1);
    for cut in (0..=seed.len()).step_by(step) {
        out.push(seed[..cut].to_vec());
        out.push(seed[cut..].to_vec());
    }
    let specials = [b'\n', b' ', b':', b',', b'=', 0, 0xff, b'9', b'G', b'a'];
    for (i, pos) in (0..seed.len()).step_by(step).enumerate() {
        let mut flipped = seed.to_vec();
        flipped[pos] ^= 1 << (i % 8);
        out.push(flipped);
        let mut inserted = seed.to_vec();
        inserted.insert(pos, specials[i % specials.len()]);
        out.push(inserted);
        let mut doubled = seed.to_vec();
        doubled.extend_from_slice(&seed[pos..]);
        out.push(doubled);
    }
    out
}

fn run(target: &str, f: fn(&[u8])) {
    let mut count = 0;
    for seed in seeds(target) {
        for m in mutations(&seed) {
            f(&m);
            count += 1;
        }
    }
    assert!(count > 100, "{target}: only {count} inputs");
}

#[test]
fn uidlist_seeds_and_mutations() {
    run("uidlist", fuzzing::fuzz_uidlist);
}

#[test]
fn filename_seeds_and_mutations() {
    run("filename", fuzzing::fuzz_filename);
}

#[test]
fn keywords_seeds_and_mutations() {
    run("keywords", fuzzing::fuzz_keywords);
}
