//! IMAP modified UTF-7 (RFC 3501 §5.1.3), as Dovecot stores mailbox names on disk
//! (src/lib-imap/imap-utf7.c).

/// Encodes a UTF-8 name to modified UTF-7.
pub fn encode(name: &str) -> String {
    let _ = name;
    todo!()
}

/// Decodes modified UTF-7 to UTF-8. Errors (with a reason) on invalid input, as Dovecot's
/// imap_utf7_to_utf8 does: bad base64, non-minimal encodings, `&` without `-`, encoded
/// printable ASCII, unpaired surrogates, 8-bit bytes.
pub fn decode(name: &[u8]) -> Result<String, String> {
    let _ = name;
    todo!()
}
