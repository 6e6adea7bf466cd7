//! Entry points for fuzzing the parsers (see fuzz/). Each must never panic on any input.

use crate::{filename, keywords::KeywordMap, uidlist};

/// Parses a dovecot-uidlist and, when it parses, checks that writing it back and parsing
/// again gives the same records. The quick check's partial parse
/// (`uidlist::parse_header_and_record`) must never panic either, and where both parse it
/// must agree with the full parse on the header and on the record it finds.
pub fn fuzz_uidlist(data: &[u8]) {
    let full = uidlist::parse(data);
    let last = full
        .as_ref()
        .ok()
        .and_then(|l| l.as_ref())
        .and_then(|(l, _)| l.records.last().map(|r| r.uid));
    for uid in [0, 1, 2, last.unwrap_or(3)] {
        let partial = uidlist::parse_header_and_record(data, uid);
        if let (Ok(Some((full, _))), Ok(Some((head, rec)))) = (&full, &partial) {
            assert_eq!(head.uid_validity, full.uid_validity);
            assert_eq!(head.guid, full.guid);
            assert_eq!(head.next_uid, full.next_uid);
            if let Some(i) = full.find_uid(uid) {
                assert_eq!(rec.as_ref(), Some(&full.records[i]));
            }
        }
    }
    if let Ok(Some((list, _))) = full {
        let mut list = list;
        if list.guid.is_none() {
            list.guid = Some(mailstore::MailboxGuid::default());
        }
        let mut out = Vec::new();
        uidlist::write_list(&mut out, &list).expect("a Vec takes every write");
        let (again, _) = uidlist::parse(&out)
            .expect("serialized uidlist parses")
            .expect("serialized uidlist is not empty");
        assert_eq!(again.records, list.records);
        assert_eq!(again.uid_validity, list.uid_validity);
        assert_eq!(again.next_uid, list.next_uid);
    }
}

/// Reads flags and sizes from a filename and rewrites its flags; the base and any second
/// flag set must survive.
pub fn fuzz_filename(data: &[u8]) {
    let base = filename::base(data);
    let _ = filename::size_field(data, b'S');
    let _ = filename::size_field(data, b'W');
    let (flags, letters) = filename::flags_of(data);
    let (bits_flags, bits) = filename::flag_bits(data);
    assert_eq!(bits_flags, flags);
    assert!(filename::letters_of_bits(bits).eq(letters
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<u8>>()));
    let renamed = filename::set_flags(data, flags, &letters);
    let (flags2, mut letters2) = filename::flags_of(&renamed);
    assert_eq!(flags, flags2);
    let mut letters = letters;
    letters.sort_unstable();
    letters2.sort_unstable();
    assert_eq!(letters, letters2);
    if !data.contains(&filename::INFO_SEP) {
        assert_eq!(filename::base(&renamed), base);
    }
    let _ = filename::sort_cmp(data, &renamed);
}

/// Parses a dovecot-keywords file; writing it back and parsing again is stable.
pub fn fuzz_keywords(data: &[u8]) {
    let map = KeywordMap::parse(data);
    let out = map.serialize();
    let again = KeywordMap::parse(&out);
    assert_eq!(again.serialize(), out);
    for c in b'a'..=b'z' {
        if let Some(k) = map.keyword_for_letter(c) {
            let _ = map.letter_for(k.as_bytes());
        }
    }
}
