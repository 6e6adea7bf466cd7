//! The `-s` state string (dsync-mailbox-state.c): base64 of a 4-byte header `01 00 00 00`,
//! 44-byte records (GUID, u32 LE last_uidvalidity, u32 LE last_common_uid, u64 LE
//! last_common_modseq, u64 LE last_common_pvt_modseq, u32 LE last_messages_count) and a
//! u32 LE CRC-32 (IEEE) of everything before it.

use super::items::MailboxStateItem;
use mailstore::MailboxGuid;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// CRC-32 (IEEE), as Dovecot's crc32_data (the same one `mailsync.meta-cache` uses).
fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for &c in chunk {
            let v = match c {
                b'=' => {
                    pad += 1;
                    0
                }
                _ if pad > 0 => return None,
                _ => B64.iter().position(|&x| x == c)? as u32,
            };
            n = n << 6 | v;
        }
        if pad > 2 {
            return None;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// Encodes states as Dovecot prints them.
pub fn encode(states: &[MailboxStateItem]) -> String {
    let mut buf = vec![1u8, 0, 0, 0];
    for s in states {
        buf.extend_from_slice(&s.mailbox_guid.0);
        buf.extend_from_slice(&s.last_uidvalidity.to_le_bytes());
        buf.extend_from_slice(&s.last_common_uid.to_le_bytes());
        buf.extend_from_slice(&s.last_common_modseq.to_le_bytes());
        buf.extend_from_slice(&s.last_common_pvt_modseq.to_le_bytes());
        buf.extend_from_slice(&s.last_messages_count.to_le_bytes());
    }
    let crc = crc32(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    base64_encode(&buf)
}

/// Decodes a state string. `Ok(empty)` for `""`, all-zero input and the legacy v0 format;
/// `Err` for anything malformed ("Saved sync state is invalid, falling back to full sync").
pub fn decode(text: &str) -> Result<Vec<MailboxStateItem>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let data = base64_decode(text).ok_or("Invalid base64")?;
    if data.len() == 4 && data.iter().all(|&b| b == 0) {
        return Ok(Vec::new());
    }
    let crc_ok = |d: &[u8]| {
        d.len() >= 4 && {
            let (body, tail) = d.split_at(d.len() - 4);
            crc32(body).to_le_bytes() == tail
        }
    };
    if data.len() >= 8 && (data.len() - 8) % 44 == 0 && crc_ok(&data) {
        let mut states = Vec::new();
        for rec in data[4..data.len() - 4].chunks(44) {
            let u32_at = |o: usize| u32::from_le_bytes(rec[o..o + 4].try_into().unwrap_or([0; 4]));
            let u64_at = |o: usize| u64::from_le_bytes(rec[o..o + 8].try_into().unwrap_or([0; 8]));
            let mut guid = [0u8; 16];
            guid.copy_from_slice(&rec[..16]);
            states.push(MailboxStateItem {
                mailbox_guid: MailboxGuid(guid),
                last_uidvalidity: u32_at(16),
                last_common_uid: u32_at(20),
                last_common_modseq: u64_at(24),
                last_common_pvt_modseq: u64_at(32),
                last_messages_count: u32_at(40),
                changes_during_sync: false,
            });
        }
        return Ok(states);
    }
    // Legacy v0: 40-byte records + CRC, accepted as empty.
    if data.len() >= 4 && (data.len() - 4) % 40 == 0 && crc_ok(&data) {
        return Ok(Vec::new());
    }
    Err("Saved sync state is invalid, falling back to full sync".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_base64_match_zlib_and_rfc4648() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
        // Empty table: header + CRC = 8 bytes = 12 base64 characters.
        assert_eq!(encode(&[]).len(), 12);
    }

    #[test]
    fn states_round_trip_and_corruption_is_detected() {
        let s = MailboxStateItem {
            mailbox_guid: MailboxGuid([7; 16]),
            last_uidvalidity: 1234,
            last_common_uid: 55,
            last_common_modseq: 99,
            last_common_pvt_modseq: 0,
            last_messages_count: 40,
            changes_during_sync: false,
        };
        let text = encode(std::slice::from_ref(&s));
        assert_eq!(decode(&text).unwrap(), vec![s]);
        let mut bad = text.into_bytes();
        bad[10] = if bad[10] == b'A' { b'B' } else { b'A' };
        assert!(decode(&String::from_utf8(bad).unwrap()).is_err());
        assert_eq!(decode("").unwrap(), vec![]);
        assert!(decode("not base64!").is_err());
    }
}
