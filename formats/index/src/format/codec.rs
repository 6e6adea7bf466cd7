//! Explicit little-endian decoding with bounds checks, and the 7-bit encoding of log record
//! sizes (src/lib-index/mail-index-util.c mail_index_uint32_to_offset/offset_to_uint32).

/// Reads a little-endian u16 at `off`, `None` past the end.
pub fn u16_at(data: &[u8], off: usize) -> Option<u16> {
    let b = data.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// Reads a little-endian u32 at `off`, `None` past the end.
pub fn u32_at(data: &[u8], off: usize) -> Option<u32> {
    let b = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads a little-endian u64 at `off`, `None` past the end.
pub fn u64_at(data: &[u8], off: usize) -> Option<u64> {
    let b = data.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// Reads a u8 at `off`.
pub fn u8_at(data: &[u8], off: usize) -> Option<u8> {
    data.get(off).copied()
}

/// Writes a little-endian u16 at `off`, growing `buf` with zeros if needed.
pub fn put_u16(buf: &mut Vec<u8>, off: usize, v: u16) {
    put_bytes(buf, off, &v.to_le_bytes());
}

/// Writes a little-endian u32 at `off`, growing `buf` with zeros if needed.
pub fn put_u32(buf: &mut Vec<u8>, off: usize, v: u32) {
    put_bytes(buf, off, &v.to_le_bytes());
}

/// Writes a little-endian u64 at `off`, growing `buf` with zeros if needed.
pub fn put_u64(buf: &mut Vec<u8>, off: usize, v: u64) {
    put_bytes(buf, off, &v.to_le_bytes());
}

/// Writes bytes at `off`, growing `buf` with zeros if needed (Dovecot's buffer_write).
pub fn put_bytes(buf: &mut Vec<u8>, off: usize, data: &[u8]) {
    let end = off + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[off..end].copy_from_slice(data);
}

/// Appends zero bytes until `buf.len()` is a multiple of `align`.
pub fn pad_to(buf: &mut Vec<u8>, align: usize) {
    while !buf.len().is_multiple_of(align) {
        buf.push(0);
    }
}

/// Rounds up to a multiple of 4 (log record payload alignment).
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Rounds up to a multiple of 8 (MAIL_INDEX_HEADER_SIZE_ALIGN).
pub fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Decodes a log record size field (mail_index_offset_to_uint32): the 4 bytes as read from
/// disk, big-endian 7-bit groups each with the high bit set. Returns 0 when any high bit is
/// clear (an unfinished or corrupted record).
pub fn offset_to_u32(raw: [u8; 4]) -> u32 {
    let v = u32::from_be_bytes(raw);
    if v & 0x8080_8080 != 0x8080_8080 {
        return 0;
    }
    ((v & 0x0000_007f)
        | ((v & 0x0000_7f00) >> 8 << 7)
        | ((v & 0x007f_0000) >> 16 << 14)
        | ((v & 0x7f00_0000) >> 24 << 21))
        << 2
}

/// Encodes a log record size (mail_index_uint32_to_offset). `size` must be a multiple of 4
/// and below 2^30; returns `None` otherwise.
pub fn u32_to_offset(size: u32) -> Option<[u8; 4]> {
    if size >= 0x4000_0000 || !size.is_multiple_of(4) {
        return None;
    }
    let v = size >> 2;
    let enc = 0x0000_0080
        | (v & 0x0000_007f)
        | 0x0000_8000
        | ((v & 0x0000_3f80) >> 7 << 8)
        | 0x0080_0000
        | ((v & 0x001f_c000) >> 14 << 16)
        | 0x8000_0000
        | ((v & 0x0fe0_0000) >> 21 << 24);
    Some(enc.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_size_encoding_matches_dovecot() {
        // [dump] a 12-byte record is stored as 80 80 80 83.
        assert_eq!(u32_to_offset(12), Some([0x80, 0x80, 0x80, 0x83]));
        assert_eq!(offset_to_u32([0x80, 0x80, 0x80, 0x83]), 12);
        for size in [8u32, 12, 508, 512, 65536, 0x3fff_fffc] {
            assert_eq!(offset_to_u32(u32_to_offset(size).unwrap()), size);
        }
        assert_eq!(u32_to_offset(6), None);
        assert_eq!(u32_to_offset(0x4000_0000), None);
        // a clear high bit means "not written yet"
        assert_eq!(offset_to_u32([0x80, 0x80, 0x00, 0x83]), 0);
        assert_eq!(offset_to_u32([0, 0, 0, 0]), 0);
    }

    #[test]
    fn reads_are_bounds_checked() {
        assert_eq!(u32_at(&[1, 0, 0, 0], 0), Some(1));
        assert_eq!(u32_at(&[1, 0, 0], 0), None);
        assert_eq!(u32_at(&[1, 0, 0, 0], usize::MAX - 1), None);
        assert_eq!(u64_at(&[0; 7], 0), None);
    }
}
