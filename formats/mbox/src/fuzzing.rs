//! Fuzz entry points (see fuzz/). Never panic, whatever the input.

use std::io::{Read, Seek, Write};

/// Scans `data` as an mbox file and streams every message; checks that each message's
/// streamed size equals its reported size and that boundaries are ordered.
pub fn fuzz_reader(data: &[u8]) {
    let Ok(mut file) = tempfile_in_memory(data) else {
        return;
    };
    let _ = file.rewind();
    let Ok(mbox) = crate::reader::scan(&file, 1) else {
        return;
    };
    let mut prev_end = 0;
    for m in mbox.pseudo.iter().chain(mbox.messages.iter()) {
        assert!(m.from_start >= prev_end && m.hdr_offset <= m.body_offset);
        assert!(m.body_offset <= m.end && m.end <= data.len() as u64);
        prev_end = m.end;
        let Ok(clone) = file.try_clone() else { return };
        let mut reader = crate::reader::MessageReader::new(clone, m);
        let mut out = Vec::new();
        if reader.read_to_end(&mut out).is_ok() {
            assert_eq!(out.len() as u64, m.physical_size(), "streamed size");
        }
    }
    let uids: Vec<u32> = mbox.messages.iter().map(|m| m.uid).collect();
    assert!(uids.windows(2).all(|w| w[0] < w[1]) || uids.contains(&0) || uids.contains(&u32::MAX));
}

fn tempfile_in_memory(data: &[u8]) -> std::io::Result<std::fs::File> {
    let mut f = tempfile_file()?;
    f.write_all(data)?;
    Ok(f)
}

/// An anonymous temporary file (unlinked at once).
fn tempfile_file() -> std::io::Result<std::fs::File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "mailsync-mbox-fuzz.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(f)
}
