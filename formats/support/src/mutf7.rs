//! IMAP modified UTF-7 (RFC 3501 §5.1.3), as Dovecot stores mailbox names on disk
//! (src/lib-imap/imap-utf7.c, Dovecot 2.3.19.1).
//!
//! Encoding (Dovecot's `imap_utf8_to_utf7`): characters U+0020..U+007E are written as
//! themselves, except `&`, which becomes `&-`. Every maximal run of other characters
//! (controls below U+0020, U+007F and everything non-ASCII) is written as its UTF-16
//! big-endian code units in the modified base64 alphabet (`+` and `,` instead of `+` and `/`,
//! no padding) between `&` and `-`; characters outside the BMP become surrogate pairs.
//!
//! Decoding is strict, following Dovecot's `imap_utf7_to_utf8`, so that a name we accept is
//! one Dovecot accepts and `encode(decode(x)?) == x` always holds:
//! - every input byte must be printable ASCII (0x20..=0x7E): control characters, DEL and 8-bit
//!   bytes are rejected;
//! - `&` must start either `&-` or a base64 run closed by `-`;
//! - the run must decode to a whole number of 16-bit units (a dangling byte or sextet is an
//!   error);
//! - a run may not encode U+0000 or printable ASCII (U+0020..=U+007E), which must be written
//!   directly;
//! - surrogates must come in high+low pairs inside one run;
//! - a run may not be directly followed by another run (`&AOQ-&AOQ-` must be `&AOQA5A-`).
//!
//! One rule is stricter than Dovecot: the unused low bits of the last base64 character must be
//! zero (RFC 2152 requires it; Dovecot ignores them). Dovecot's encoder always writes zeros, so
//! every name Dovecot itself created decodes; rejecting the others keeps decoding injective.

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// The value of a modified-base64 character, or None when it is not in the alphabet.
fn base64_value(byte: u8) -> Option<u32> {
    let value = match byte {
        b'A'..=b'Z' => byte - b'A',
        b'a'..=b'z' => byte - b'a' + 26,
        b'0'..=b'9' => byte - b'0' + 52,
        b'+' => 62,
        b',' => 63,
        _ => return None,
    };
    Some(u32::from(value))
}

/// True for the characters written as themselves (Dovecot's imap_utf8_first_encode_char
/// encodes everything `< 0x20 || >= 0x7f`, and `&` as `&-`).
fn is_direct(c: char) -> bool {
    ('\u{20}'..'\u{7f}').contains(&c)
}

/// Appends `units` (UTF-16 code units) base64-encoded between `&` and `-`.
fn push_base64_run(out: &mut String, units: &[u16]) {
    out.push('&');
    let mut bits: u32 = 0;
    let mut bit_count = 0;
    for unit in units {
        bits = (bits << 16) | u32::from(*unit);
        bit_count += 16;
        while bit_count >= 6 {
            bit_count -= 6;
            out.push(char::from(
                BASE64_ALPHABET[((bits >> bit_count) & 0x3f) as usize],
            ));
        }
        bits &= (1 << bit_count) - 1;
    }
    if bit_count > 0 {
        // Pad the last sextet with zero bits.
        out.push(char::from(
            BASE64_ALPHABET[((bits << (6 - bit_count)) & 0x3f) as usize],
        ));
    }
    out.push('-');
}

/// Encodes a UTF-8 name to modified UTF-7.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + name.len() / 2);
    let mut chars = name.chars().peekable();
    let mut units: Vec<u16> = Vec::new();
    while let Some(c) = chars.next() {
        if c == '&' {
            out.push_str("&-");
        } else if is_direct(c) {
            out.push(c);
        } else {
            units.clear();
            let mut buf = [0u16; 2];
            units.extend_from_slice(c.encode_utf16(&mut buf));
            while let Some(&next) = chars.peek() {
                if is_direct(next) {
                    break;
                }
                units.extend_from_slice(next.encode_utf16(&mut buf));
                chars.next();
            }
            push_base64_run(&mut out, &units);
        }
    }
    out
}

/// Decodes modified UTF-7 to UTF-8. Errors (with a reason) on invalid input, as Dovecot's
/// imap_utf7_to_utf8 does: bad base64, non-minimal encodings, `&` without `-`, encoded
/// printable ASCII, unpaired surrogates, 8-bit bytes.
pub fn decode(name: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(name.len());
    let mut pos = 0;
    while pos < name.len() {
        let byte = name[pos];
        if !(0x20..0x7f).contains(&byte) {
            return Err(format!(
                "byte 0x{byte:02x} at offset {pos} is not printable ASCII"
            ));
        }
        if byte != b'&' {
            out.push(char::from(byte));
            pos += 1;
            continue;
        }
        let shift_start = pos;
        pos += 1;
        if name.get(pos) == Some(&b'-') {
            out.push('&');
            pos += 1;
            continue;
        }
        pos = decode_base64_run(name, shift_start, pos, &mut out)?;
        // Dovecot (mbase64_decode_to_utf8): a run may not be followed by another run; only
        // `&-` may follow directly.
        if name.get(pos) == Some(&b'&') && name.get(pos + 1) != Some(&b'-') {
            return Err(format!(
                "unnecessary shift at offset {pos}: adjacent encoded runs must be merged"
            ));
        }
    }
    Ok(out)
}

/// Decodes the base64 run starting at `pos` (just after the `&` at `shift_start`) up to its
/// closing `-`, appending the characters to `out`. Returns the offset after the `-`.
fn decode_base64_run(
    name: &[u8],
    shift_start: usize,
    mut pos: usize,
    out: &mut String,
) -> Result<usize, String> {
    let mut units: Vec<u16> = Vec::new();
    let mut bits: u32 = 0;
    let mut bit_count = 0;
    loop {
        let Some(&byte) = name.get(pos) else {
            return Err(format!(
                "'&' at offset {shift_start} is not terminated by '-'"
            ));
        };
        if byte == b'-' {
            break;
        }
        let Some(value) = base64_value(byte) else {
            return Err(format!(
                "invalid modified base64 byte 0x{byte:02x} at offset {pos}"
            ));
        };
        bits = (bits << 6) | value;
        bit_count += 6;
        if bit_count >= 16 {
            bit_count -= 16;
            units.push((bits >> bit_count) as u16);
            bits &= (1 << bit_count) - 1;
        }
        pos += 1;
    }
    // Whole 16-bit units only: at most 4 padding bits (2 after one unit, 4 after two, 0 after
    // three) may remain. 6 or more means a dangling sextet or byte.
    if units.is_empty() || bit_count >= 6 {
        return Err(format!(
            "encoded run at offset {shift_start} does not hold whole UTF-16 units"
        ));
    }
    if bits != 0 {
        return Err(format!(
            "encoded run at offset {shift_start} has non-zero padding bits"
        ));
    }
    let mut index = 0;
    while index < units.len() {
        let unit = units[index];
        let c = match unit {
            0xd800..=0xdbff => {
                let low = units.get(index + 1).copied().unwrap_or(0);
                if !(0xdc00..=0xdfff).contains(&low) {
                    return Err(format!(
                        "unpaired high surrogate in encoded run at offset {shift_start}"
                    ));
                }
                index += 1;
                let scalar =
                    0x10000 + ((u32::from(unit) - 0xd800) << 10) + (u32::from(low) - 0xdc00);
                char::from_u32(scalar).ok_or_else(|| {
                    format!("invalid surrogate pair in encoded run at offset {shift_start}")
                })?
            }
            0xdc00..=0xdfff => {
                return Err(format!(
                    "unpaired low surrogate in encoded run at offset {shift_start}"
                ));
            }
            0 => {
                return Err(format!(
                    "encoded NUL in encoded run at offset {shift_start}"
                ));
            }
            0x20..=0x7e => {
                return Err(format!(
                    "printable ASCII 0x{unit:02x} encoded in run at offset {shift_start}"
                ));
            }
            _ => char::from_u32(u32::from(unit)).ok_or_else(|| {
                format!("invalid code unit in encoded run at offset {shift_start}")
            })?,
        };
        out.push(c);
        index += 1;
    }
    Ok(pos + 1)
}

/// True if `name` is valid modified UTF-7 (Dovecot's imap_utf7_is_valid, plus the zero
/// padding-bits rule described in the module doc).
pub fn is_valid(name: &[u8]) -> bool {
    decode(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &[(&str, &str)] = &[
        ("", ""),
        ("INBOX", "INBOX"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("&", "&-"),
        ("a&b", "a&-b"),
        ("Ünï", "&ANw-n&AO8-"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("ä&", "&AOQ-&-"),
        ("&ä", "&-&AOQ-"),
        ("ää", "&AOQA5A-"),
        ("äää", "&AOQA5ADk-"),
        // Astral plane: U+1F600 = D83D DE00.
        ("😀", "&2D3eAA-"),
        ("x😀y", "x&2D3eAA-y"),
        ("😀😀", "&2D3eANg93gA-"),
        // Controls and DEL are encoded too (Dovecot encodes < 0x20 and >= 0x7f).
        ("a\tb", "a&AAk-b"),
        ("\u{7f}", "&AH8-"),
    ];

    #[test]
    fn vectors_encode_and_decode() {
        for (utf8, utf7) in VECTORS {
            assert_eq!(encode(utf8), *utf7, "encode {utf8:?}");
            assert_eq!(
                decode(utf7.as_bytes()).as_deref(),
                Ok(*utf8),
                "decode {utf7:?}"
            );
            assert!(is_valid(utf7.as_bytes()));
        }
    }

    #[test]
    fn astral_roundtrip_all_planes() {
        for c in [
            '\u{10000}',
            '\u{1F4E7}',
            '\u{10FFFF}',
            '\u{FFFF}',
            '\u{E000}',
        ] {
            let s = format!("a{c}b");
            let enc = encode(&s);
            assert_eq!(decode(enc.as_bytes()).unwrap(), s);
        }
    }

    fn rejected(input: &[u8]) -> String {
        match decode(input) {
            Ok(s) => panic!("{input:?} decoded to {s:?}, expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn rejects_unterminated_shift() {
        assert!(rejected(b"&").contains("not terminated"));
        assert!(rejected(b"abc&AOQ").contains("not terminated"));
    }

    #[test]
    fn rejects_bad_base64() {
        assert!(rejected(b"&AO?-").contains("invalid modified base64"));
        assert!(rejected(b"&AO/Q-").contains("invalid modified base64"));
        assert!(rejected(b"&AO=-").contains("invalid modified base64"));
    }

    #[test]
    fn rejects_incomplete_units() {
        rejected(b"&A-");
        rejected(b"&AA-");
        rejected(b"&AOQA-");
        rejected(b"&AOQAA-");
    }

    #[test]
    fn rejects_nonzero_padding_bits() {
        // "&AOQ-" is ä; "&AOR-" has the two padding bits set.
        assert!(rejected(b"&AOR-").contains("padding"));
    }

    #[test]
    fn rejects_encoded_printable_ascii_and_nul() {
        // 'a' = 0x0061 -> "AGE"
        assert!(rejected(b"&AGE-").contains("printable"));
        // '&' encoded
        rejected(b"&ACY-");
        // NUL
        assert!(rejected(b"&AAA-").contains("NUL"));
    }

    #[test]
    fn rejects_unpaired_surrogates() {
        // High surrogate D83D alone.
        assert!(rejected(b"&2D0-").contains("high surrogate"));
        // High followed by a non-surrogate (D83D 00E4).
        assert!(rejected(b"&2D0A5A-").contains("high surrogate"));
        // Low surrogate DE00 alone.
        assert!(rejected(b"&3gA-").contains("low surrogate"));
        // Pair split across two runs.
        rejected(b"&2D0-&3gA-");
    }

    #[test]
    fn rejects_8bit_and_control_bytes() {
        assert!(rejected("Entwürfe".as_bytes()).contains("not printable"));
        rejected(b"a\tb");
        rejected(b"a\0b");
        rejected(b"a\x7fb");
    }

    #[test]
    fn rejects_adjacent_runs() {
        assert!(rejected(b"&AOQ-&AOQ-").contains("unnecessary shift"));
        // But a run followed by "&-" is fine.
        assert_eq!(decode(b"&AOQ-&-").unwrap(), "ä&");
    }
}
