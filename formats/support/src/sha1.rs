//! SHA-1 (FIPS 180-4), for Dovecot's 128-bit name and GUID hashes: mail_generate_guid_128_hash
//! (a message GUID that isn't 32 hex digits, src/lib-storage/mail.c, used by mdbox) and
//! mailbox_name_get_sha128 (mailbox log records, src/lib-storage/mailbox-list.c). Moved here
//! from the dbox crate. Not used for security.

pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(data);
    h.finish()
}

/// 128-bit form of a message GUID (mail_generate_guid_128_hash, src/lib-storage/mail.c):
/// 32 hex digits are parsed, anything else (a Maildir base name, a header hash) is hashed
/// with SHA-1 and the last 16 bytes are used. The form expunge records carry (EXPUNGE_GUID).
pub fn guid_128(guid: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let hex = |c: u8| (c as char).to_digit(16);
    if guid.len() == 32 && guid.iter().all(|c| hex(*c).is_some()) {
        for (i, pair) in guid.chunks_exact(2).enumerate() {
            let (Some(hi), Some(lo)) = (hex(pair[0]), hex(pair[1])) else {
                break;
            };
            out[i] = (hi * 16 + lo) as u8;
        }
        return out;
    }
    let digest = sha1(guid);
    out.copy_from_slice(&digest[4..20]);
    out
}

/// Streaming SHA-1: `update` with any split of the input gives the digest of the whole.
#[derive(Clone, Debug)]
pub struct Sha1 {
    state: [u32; 5],
    /// Bytes not yet hashed (always less than one 64-byte block).
    pending: Vec<u8>,
    total_len: u64,
}

impl Default for Sha1 {
    fn default() -> Self {
        Sha1::new()
    }
}

impl Sha1 {
    pub fn new() -> Sha1 {
        Sha1 {
            state: [
                0x6745_2301,
                0xEFCD_AB89,
                0x98BA_DCFE,
                0x1032_5476,
                0xC3D2_E1F0,
            ],
            pending: Vec::with_capacity(64),
            total_len: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total_len = self.total_len.wrapping_add(data.len() as u64);
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < 64 {
                return;
            }
            let block: [u8; 64] = std::array::from_fn(|i| self.pending[i]);
            compress(&mut self.state, &block);
            self.pending.clear();
        }
        let mut blocks = data.chunks_exact(64);
        for block in &mut blocks {
            let block: [u8; 64] = std::array::from_fn(|i| block[i]);
            compress(&mut self.state, &block);
        }
        self.pending.extend_from_slice(blocks.remainder());
    }

    pub fn finish(mut self) -> [u8; 20] {
        let bit_len = self.total_len.wrapping_mul(8);
        let mut tail = std::mem::take(&mut self.pending);
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&bit_len.to_be_bytes());
        for block in tail.chunks_exact(64) {
            let block: [u8; 64] = std::array::from_fn(|i| block[i]);
            compress(&mut self.state, &block);
        }
        let mut out = [0u8; 20];
        for (i, x) in self.state.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
        }
        out
    }
}

fn compress(h: &mut [u32; 5], block: &[u8; 64]) {
    let mut w = [0u32; 80];
    for (i, word) in block.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    }
    for i in 16..80 {
        w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
    }
    let [mut a, mut b, mut c, mut d, mut e] = *h;
    for (i, wi) in w.iter().enumerate() {
        let (f, k) = match i {
            0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
            20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
            40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
            _ => (b ^ c ^ d, 0xCA62_C1D6),
        };
        let t = a
            .rotate_left(5)
            .wrapping_add(f)
            .wrapping_add(e)
            .wrapping_add(k)
            .wrapping_add(*wi);
        e = d;
        d = c;
        c = b.rotate_left(30);
        b = a;
        a = t;
    }
    for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
        *x = x.wrapping_add(y);
    }
}

#[cfg(test)]
mod tests {
    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn known_vectors() {
        assert_eq!(
            hex(&super::sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(&super::sha1(b"")),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            hex(&super::sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
    }

    #[test]
    fn streaming_matches_one_shot_for_every_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 127, 128, 200, 300] {
            let whole = super::sha1(&data[..len]);
            for split in [0, 1, 13, 63, 64, 65, 100] {
                let split = split.min(len);
                let mut h = super::Sha1::new();
                h.update(&data[..split]);
                for chunk in data[split..len].chunks(17) {
                    h.update(chunk);
                }
                assert_eq!(h.finish(), whole, "len {len} split {split}");
            }
        }
    }

    #[test]
    fn guid_128_parses_hex_and_hashes_anything_else() {
        let hex_guid = b"0123456789abcdefFEDCBA9876543210";
        assert_eq!(
            super::guid_128(hex_guid),
            [
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
                0x32, 0x10
            ]
        );
        let base = b"1600000000.M0P1.host";
        assert_eq!(super::guid_128(base)[..], super::sha1(base)[4..]);
    }
}
