//! Fuzzing entry points (see fuzz/). They must never panic, whatever the input.

/// Parses `data` as a whole dbox file (file header, then every message with its metadata)
/// the way the backends read `u.N` and `m.N` files.
pub fn fuzz_dbox_file(data: &[u8]) {
    let _ = crate::file::FileHeader::parse(data);
    let _ = crate::file::parse_message_header(data, 0);
    let _ = crate::file::Metadata::parse(data, 0);
    if let Ok((_, mails)) = crate::file::read_all_mails(data) {
        for m in mails {
            let _ = m.physical_size();
            let _ = crate::sdbox::info_of(&m, 0);
            let _ =
                mailsupport::sha1::guid_128(m.metadata.get(crate::file::key::GUID).unwrap_or(b""));
        }
    }
}

/// Parses `data` as a `mailsync.meta-cache` file (of the map UIDVALIDITY its header names,
/// so that the entries are reached), as a read of the cache does.
pub fn fuzz_meta_cache(data: &[u8]) {
    let uid_validity = data
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    let scan = crate::meta_cache::scan_from(&mut &data[..], uid_validity, |e| {
        let _ = e.info();
    });
    let _ = scan.upkeep(scan.entries / 2, 1, true);
}
