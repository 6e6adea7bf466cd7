//! Fuzz entry points (used by `formats/support/fuzz/` and by the seed-corpus unit test).
//! Each function must never panic on any input; the assertions inside are the properties
//! being fuzzed.

use crate::{mutf7, subscriptions};

/// Decoding never panics; whatever decodes re-encodes to exactly the input (decoding is
/// strict, so there is one encoding per name). UTF-8 input also round-trips through encode.
pub fn fuzz_mutf7_decode(data: &[u8]) {
    if let Ok(name) = mutf7::decode(data) {
        assert!(mutf7::is_valid(data));
        assert_eq!(
            mutf7::encode(&name).as_bytes(),
            data,
            "decode/encode round trip of {data:?}"
        );
    } else {
        assert!(!mutf7::is_valid(data));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let encoded = mutf7::encode(text);
        assert!(encoded.bytes().all(|b| (0x20..0x7f).contains(&b)));
        // Dovecot refuses an encoded NUL, so only NUL-free names must come back.
        if !text.contains('\0') {
            assert_eq!(
                mutf7::decode(encoded.as_bytes()).as_deref(),
                Ok(text),
                "encode/decode round trip of {text:?}"
            );
        }
    }
}

/// Parsing never panics; parsed names are non-empty and NUL-free, and serializing what was
/// parsed is a fixed point of parse + serialize. (A parsed name may still end with the
/// separator: Dovecot strips only one, so `A//` reads as `A/`.)
pub fn fuzz_subscriptions_parse(data: &[u8]) {
    for separator in ['/', '.'] {
        let names = subscriptions::parse(data, separator);
        for name in &names {
            assert!(!name.is_empty());
            assert!(!name.contains('\0'));
        }
        let written = subscriptions::serialize(separator, &names);
        let reparsed = subscriptions::parse(&written, separator);
        assert_eq!(subscriptions::serialize(separator, &reparsed), written);
    }
}
