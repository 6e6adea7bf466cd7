//! Fuzzing entry points (see fuzz/). They must never panic, whatever the input.

use std::io::Write;

/// Parses `data` as a whole dbox file (file header, then every message with its metadata)
/// the way the backends read `u.N` and `m.N` files.
pub fn fuzz_dbox_file(data: &[u8]) {
    let _ = crate::file::FileHeader::parse(data);
    let _ = crate::file::parse_message_header(data, 0);
    let _ = crate::file::Metadata::parse(data, 0);
    let Ok(mut f) = tempfile_for(data) else {
        return;
    };
    let _ = f.flush();
    if let Ok((_, mails)) = crate::file::read_all_mails(&f) {
        for m in mails {
            let _ = m.physical_size();
            let _ = crate::sdbox::info_of(&m, 0);
        }
    }
}

fn tempfile_for(data: &[u8]) -> std::io::Result<std::fs::File> {
    let mut f = tempfile_anon()?;
    f.write_all(data)?;
    Ok(f)
}

/// An unnamed temporary file (O_TMPFILE-like: created then unlinked).
fn tempfile_anon() -> std::io::Result<std::fs::File> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "mailsync-dbox-fuzz.{}.{}",
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
