//! Runs the fuzz entry points over every seed in `fuzz/corpus/<target>/` plus deterministic
//! mutations of each seed, and exhaustively over short modified-UTF-7-like strings, so the
//! fuzz properties are checked by `cargo test` on stable.

use std::path::PathBuf;

use mailsupport::fuzzing::{fuzz_mutf7_decode, fuzz_subscriptions_parse};

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "too few seeds in {}", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Truncations, byte deletions, replacements and insertions of bytes that matter to the
/// formats, at every position.
fn mutations(seed: &[u8]) -> Vec<Vec<u8>> {
    const INTERESTING: &[u8] = b"&-A/+,.\t\x01\r\n\x00\x7f\xff\xc3V2";
    let mut out = Vec::new();
    for pos in 0..=seed.len() {
        out.push(seed[..pos].to_vec());
        if pos < seed.len() {
            let mut deleted = seed.to_vec();
            deleted.remove(pos);
            out.push(deleted);
        }
        for &byte in INTERESTING {
            let mut inserted = seed.to_vec();
            inserted.insert(pos, byte);
            out.push(inserted);
            if pos < seed.len() {
                let mut replaced = seed.to_vec();
                replaced[pos] = byte;
                out.push(replaced);
            }
        }
    }
    out
}

#[test]
fn mutf7_decode_seeds_and_mutations() {
    let mut decoded = 0;
    for seed in seeds("mutf7_decode") {
        fuzz_mutf7_decode(&seed);
        decoded += usize::from(mailsupport::mutf7::decode(&seed).is_ok());
        for mutant in mutations(&seed) {
            fuzz_mutf7_decode(&mutant);
        }
    }
    // The corpus holds both valid and invalid names.
    assert!(decoded >= 10, "only {decoded} seeds decode");
}

#[test]
fn mutf7_decode_all_short_strings() {
    // Every string up to 5 bytes over an alphabet that reaches every decoder state:
    // shifts, terminators, base64 digits making NUL / ASCII / BMP / surrogate units.
    const ALPHABET: &[u8] = b"&-AB2D3gQ+a,";
    let mut buf = Vec::new();
    let mut valid = 0usize;
    fn walk(buf: &mut Vec<u8>, depth: usize, valid: &mut usize) {
        fuzz_mutf7_decode(buf);
        *valid += usize::from(mailsupport::mutf7::is_valid(buf));
        if depth == 0 {
            return;
        }
        for &b in ALPHABET {
            buf.push(b);
            walk(buf, depth - 1, valid);
            buf.pop();
        }
    }
    walk(&mut buf, 5, &mut valid);
    assert!(valid > 1000, "{valid}");
}

#[test]
fn subscriptions_parse_seeds_and_mutations() {
    let mut names = 0;
    for seed in seeds("subscriptions_parse") {
        fuzz_subscriptions_parse(&seed);
        names += mailsupport::subscriptions::parse(&seed, '/').len();
        for mutant in mutations(&seed) {
            fuzz_subscriptions_parse(&mutant);
        }
    }
    assert!(names >= 15, "{names}");
}
