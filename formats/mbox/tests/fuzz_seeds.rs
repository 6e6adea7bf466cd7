//! Runs the reader's fuzz entry point over every seed of fuzz/corpus/reader and simple
//! mutations of each (truncations, bit flips, insertions of mbox-significant bytes), so it
//! is compiled and exercised by `cargo test`.

use std::fs;
use std::path::Path;

fn seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/reader");
    let mut out: Vec<Vec<u8>> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(out.len() >= 10, "too few seeds");
    out.sort();
    out
}

fn mutations(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![seed.to_vec()];
    let step = (seed.len() / 12).max(1);
    for cut in (0..=seed.len()).step_by(step) {
        out.push(seed[..cut].to_vec());
        out.push(seed[cut..].to_vec());
    }
    let specials: [&[u8]; 8] = [
        b"\n",
        b"\r",
        b"\nFrom a@b Thu Nov  9 22:33:52 2001\n",
        b"\n\n",
        b"Content-Length: 3\n",
        b"X-UID: 4294967295\n",
        b"\0",
        b"X-IMAPbase: 1 0000000009 a b\n",
    ];
    for (i, pos) in (0..seed.len()).step_by(step).enumerate() {
        let mut flipped = seed.to_vec();
        flipped[pos] ^= 1 << (i % 8);
        out.push(flipped);
        let mut inserted = seed.to_vec();
        let s = specials[i % specials.len()];
        inserted.splice(pos..pos, s.iter().copied());
        out.push(inserted);
    }
    out
}

#[test]
fn reader_seeds_and_mutations() {
    let mut count = 0;
    for seed in seeds() {
        for m in mutations(&seed) {
            mailsync_mbox::fuzzing::fuzz_reader(&m);
            count += 1;
        }
    }
    assert!(count > 300, "only {count} inputs");
}
