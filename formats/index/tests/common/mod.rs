//! Shared test helpers: fixture paths and (in dovecot.rs) the Dovecot harness.
#![allow(dead_code)]

pub mod dovecot;

use std::path::{Path, PathBuf};

/// The crate's copy of the Dovecot-generated store files.
pub fn testdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every file under testdata/ whose name matches `pred`.
pub fn testdata_files(pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut all = Vec::new();
    walk(&testdata_dir(), &mut all);
    all.into_iter()
        .filter(|p| pred(&p.file_name().unwrap().to_string_lossy()))
        .collect()
}

/// Every transaction log (`*.log`, `*.log.2`) in testdata.
pub fn testdata_logs() -> Vec<PathBuf> {
    testdata_files(|n| n.ends_with(".index.log") || n.ends_with(".index.log.2"))
}
