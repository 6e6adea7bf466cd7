//! Maildir message filenames: `<base>[,S=<psize>][,W=<vsize>][,<X>=...][:2,<flags>[,<more>]]`.
//!
//! Every rule here follows Dovecot 2.3.19.1:
//! - the info separator is `:` (compile-time `MAILDIR_INFO_SEP`, maildir-storage.h; 2.3 has no
//!   `maildir_info_separator` setting, so `;2,` is *not* an info part and belongs to the base);
//! - the base (uidlist key and default GUID) is everything before the **first** `:`
//!   (maildir_filename_base_cmp, maildir-filename.c);
//! - flags are read after the **last** `:` when it is followed by `2,`, up to the next `,`
//!   (maildir_filename_flags_get, maildir-filename-flags.c);
//! - `,S=`/`,W=` sizes are the first `,S=` / `,W=` anywhere in the name followed by digits and
//!   then `:`, `,` or the end (maildir_filename_get_size, maildir-filename.c);
//! - new names are `<secs>.M<usecs>P<pid>.<host>`, unique within the process by bumping the
//!   microseconds (maildir_filename_generate, maildir-filename.c).

use std::cmp::Ordering;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use mailstore::Flags;

/// The info separator (`MAILDIR_INFO_SEP`).
pub const INFO_SEP: u8 = b':';
/// Separator before extra fields and between flag sets (`MAILDIR_EXTRA_SEP`, `MAILDIR_FLAGS_SEP`).
pub const EXTRA_SEP: u8 = b',';
/// `:2,`: the standard info prefix (`MAILDIR_FLAGS_FULL_SEP`).
pub const FLAGS_FULL_SEP: &[u8] = b":2,";
/// First and last keyword letters (`MAILDIR_KEYWORD_FIRST` / `_LAST`).
pub const KEYWORD_FIRST: u8 = b'a';
pub const KEYWORD_LAST: u8 = b'z';
/// Physical size field key (`MAILDIR_EXTRA_FILE_SIZE`).
pub const EXTRA_FILE_SIZE: u8 = b'S';
/// Virtual size field key (`MAILDIR_EXTRA_VIRTUAL_SIZE`).
pub const EXTRA_VIRTUAL_SIZE: u8 = b'W';

/// The base of a filename: everything before the first `:`.
pub fn base(fname: &[u8]) -> &[u8] {
    match memchr::memchr(INFO_SEP, fname) {
        Some(p) => &fname[..p],
        None => fname,
    }
}

/// The `,<key>=<digits>` size field, as Dovecot's maildir_filename_get_size reads it: the
/// first `,<key>=` in the name, then decimal digits that must be followed by `:`, `,` or
/// the end. A value that doesn't fit in u64 is treated as absent.
pub fn size_field(fname: &[u8], key: u8) -> Option<u64> {
    let start = memchr::memchr_iter(EXTRA_SEP, fname)
        .find(|&i| fname.get(i + 1) == Some(&key) && fname.get(i + 2) == Some(&b'='))?
        + 3;
    let mut size: u64 = 0;
    let mut j = start;
    while j < fname.len() && fname[j].is_ascii_digit() {
        size = size
            .checked_mul(10)?
            .checked_add((fname[j] - b'0') as u64)?;
        j += 1;
    }
    if j < fname.len() && fname[j] != INFO_SEP && fname[j] != EXTRA_SEP {
        return None;
    }
    Some(size)
}

/// The flag characters of the first flag set of the `:2,` info (after the last `:`), or an
/// empty slice when there is no standard info.
pub fn flag_chars(fname: &[u8]) -> &[u8] {
    let Some(colon) = fname.iter().rposition(|&b| b == INFO_SEP) else {
        return &[];
    };
    let info = &fname[colon..];
    if !info.starts_with(FLAGS_FULL_SEP) {
        return &[];
    }
    let flags = &info[FLAGS_FULL_SEP.len()..];
    match flags.iter().position(|&b| b == EXTRA_SEP) {
        Some(p) => &flags[..p],
        None => flags,
    }
}

/// True when the name has a standard `:2,` info part (after its last `:`).
pub fn has_standard_info(fname: &[u8]) -> bool {
    match fname.iter().rposition(|&b| b == INFO_SEP) {
        Some(colon) => fname[colon..].starts_with(FLAGS_FULL_SEP),
        None => false,
    }
}

/// The system flag a letter of the info stands for (`DFRST`), if any.
fn system_flag(c: u8) -> Option<Flags> {
    match c {
        b'R' => Some(Flags::ANSWERED),
        b'S' => Some(Flags::SEEN),
        b'T' => Some(Flags::DELETED),
        b'D' => Some(Flags::DRAFT),
        b'F' => Some(Flags::FLAGGED),
        _ => None,
    }
}

/// System flags and keyword letters of a filename (maildir_filename_flags_get), the letters
/// each once, in ASCII order ([`flag_bits`] as a list). Letters other than `DFRST` and
/// `a`-`z` are ignored here (and kept by [`set_flags`]).
pub fn flags_of(fname: &[u8]) -> (Flags, Vec<u8>) {
    let (flags, bits) = flag_bits(fname);
    (flags, letters_of_bits(bits).collect())
}

/// System flags and keyword letters of a filename (maildir_filename_flags_get), the letters
/// as a set of bits: bit `n` for letter `a` + `n` (see [`letters_of_bits`]). No
/// allocation: a scan keeps this for every file it finds.
pub fn flag_bits(fname: &[u8]) -> (Flags, u32) {
    let mut flags = Flags::EMPTY;
    let mut letters = 0u32;
    for &c in flag_chars(fname) {
        match system_flag(c) {
            Some(f) => flags.insert(f),
            None if (KEYWORD_FIRST..=KEYWORD_LAST).contains(&c) => {
                letters |= 1 << (c - KEYWORD_FIRST)
            }
            None => {}
        }
    }
    (flags, letters)
}

/// The keyword letters of [`flag_bits`]'s set, in ASCII order.
pub fn letters_of_bits(bits: u32) -> impl Iterator<Item = u8> + Clone {
    // one step per letter set, none for the letters not set (most names have none)
    let mut rest = bits;
    std::iter::from_fn(move || {
        let n = rest.trailing_zeros();
        (n < 32).then(|| {
            rest &= rest - 1;
            KEYWORD_FIRST + n as u8
        })
    })
}

fn is_known_flag_char(c: u8) -> bool {
    system_flag(c).is_some() || (KEYWORD_FIRST..=KEYWORD_LAST).contains(&c)
}

/// Rewrites a filename's info to `:2,<flags>`, as maildir_filename_flags_full_set does:
/// the old info (after the last `:`) is removed; known flag letters (`DFRST`, `a`-`z`) are
/// replaced by `flags` and `keyword_letters`; any other letter of the old first flag set is
/// kept in ASCII order among the new ones; a second flag set (after a `,`) is kept verbatim.
/// `\Recent` is never written.
pub fn set_flags(fname: &[u8], flags: Flags, keyword_letters: &[u8]) -> Vec<u8> {
    let (stem, old_flags): (&[u8], &[u8]) = match fname.iter().rposition(|&b| b == INFO_SEP) {
        Some(colon) => {
            let info = &fname[colon..];
            let old = if info.starts_with(FLAGS_FULL_SEP) {
                &info[FLAGS_FULL_SEP.len()..]
            } else {
                &[][..]
            };
            (&fname[..colon], old)
        }
        None => (fname, &[][..]),
    };
    let mut out = Vec::with_capacity(fname.len() + 16);
    out.extend_from_slice(stem);
    out.extend_from_slice(FLAGS_FULL_SEP);

    let mut kw: Vec<u8> = keyword_letters
        .iter()
        .copied()
        .filter(|c| (KEYWORD_FIRST..=KEYWORD_LAST).contains(c))
        .collect();
    kw.sort_unstable();
    kw.dedup();
    let mut keywords_pending = !kw.is_empty();
    let mut left = flags;
    let system = [
        (Flags::DRAFT, b'D'),
        (Flags::FLAGGED, b'F'),
        (Flags::ANSWERED, b'R'),
        (Flags::SEEN, b'S'),
        (Flags::DELETED, b'T'),
    ];
    let mut i = 0;
    loop {
        while i < old_flags.len() && is_known_flag_char(old_flags[i]) {
            i += 1;
        }
        let next: u16 = if i >= old_flags.len() || old_flags[i] == EXTRA_SEP {
            256
        } else {
            old_flags[i] as u16
        };
        for (flag, c) in system {
            if left.contains(flag) && next > c as u16 {
                out.push(c);
                left.remove(flag);
            }
        }
        if keywords_pending && next > KEYWORD_FIRST as u16 {
            out.extend_from_slice(&kw);
            keywords_pending = false;
        }
        if next == 256 {
            break;
        }
        out.push(old_flags[i]);
        i += 1;
    }
    if i < old_flags.len() && old_flags[i] == EXTRA_SEP {
        out.extend_from_slice(&old_flags[i..]);
    }
    out
}

/// The leading decimal timestamp and, when the uniqueness part has one, the `M<usecs>`
/// value, for ordering new files (maildir_filename_sort_cmp).
fn sort_key(fname: &[u8]) -> (u64, usize) {
    let mut secs: u64 = 0;
    let mut i = 0;
    while i < fname.len() && fname[i].is_ascii_digit() {
        secs = secs.wrapping_mul(10).wrapping_add((fname[i] - b'0') as u64);
        i += 1;
    }
    (secs, i)
}

fn usecs_of(rest: &[u8]) -> Option<u64> {
    // ".<uniqueness>.<host>": find 'M' followed by digits inside the uniqueness part.
    if rest.first() != Some(&b'.') {
        return None;
    }
    let mut i = 1;
    while i < rest.len() && rest[i] != b'.' && rest[i] != INFO_SEP {
        let c = rest[i];
        i += 1;
        if c == b'M' {
            let mut usecs: u64 = 0;
            while i < rest.len() && rest[i].is_ascii_digit() {
                usecs = usecs.wrapping_mul(10).wrapping_add((rest[i] - b'0') as u64);
                i += 1;
            }
            return Some(usecs);
        }
    }
    None
}

/// Dovecot's order for giving UIDs to new files: by the leading timestamp, then by the
/// microseconds of `M<usecs>`, then by the base name (maildir_filename_sort_cmp).
pub fn sort_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let (sa, ia) = sort_key(a);
    let (sb, ib) = sort_key(b);
    sa.cmp(&sb)
        .then_with(|| match (usecs_of(&a[ia..]), usecs_of(&b[ib..])) {
            (Some(ua), Some(ub)) => ua.cmp(&ub),
            _ => Ordering::Equal,
        })
        .then_with(|| base(&a[ia..]).cmp(base(&b[ib..])))
}

/// The host name as it goes into new filenames: `/` and `:` escaped as `\057` and `\072`
/// (the Maildir convention; Dovecot 2.3 refuses such host names instead, hostpid.c), so the
/// name can never contain a path separator or start an info part.
pub fn escaped_hostname(host: &str) -> String {
    let mut out = String::with_capacity(host.len());
    for c in host.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push_str("localhost");
    }
    out
}

static LAST_TIME: Mutex<(u64, u32)> = Mutex::new((0, 0));

/// A new unique base name `<secs>.M<usecs>P<pid>.<host>` (maildir_filename_generate): the
/// (secs, usecs) pair strictly increases within this process.
pub fn generate() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut tv = (now.as_secs(), now.subsec_micros());
    {
        let mut last = LAST_TIME.lock().unwrap_or_else(|e| e.into_inner());
        if tv <= *last {
            tv = *last;
            tv.1 += 1;
            if tv.1 == 1_000_000 {
                tv.0 += 1;
                tv.1 = 0;
            }
        }
        *last = tv;
    }
    format!(
        "{}.M{}P{}.{}",
        tv.0,
        tv.1,
        std::process::id(),
        escaped_hostname(mailstore::hostname())
    )
}

/// The seconds of a generated (or any Maildir-style) name, when it starts with digits.
pub fn leading_time(fname: &[u8]) -> Option<u64> {
    let (secs, len) = sort_key(fname);
    (len > 0).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_is_up_to_first_colon() {
        assert_eq!(base(b"123.M1P2.h,S=5,W=6:2,RS"), b"123.M1P2.h,S=5,W=6");
        assert_eq!(base(b"no-info"), b"no-info");
        assert_eq!(base(b"a:b:2,S"), b"a");
    }

    #[test]
    fn sizes_follow_dovecot() {
        let f = b"1795979775.M747649P15443.vm,S=2868,W=2934:2,RS";
        assert_eq!(size_field(f, b'S'), Some(2868));
        assert_eq!(size_field(f, b'W'), Some(2934));
        assert_eq!(size_field(b"x,S=12", b'S'), Some(12));
        assert_eq!(size_field(b"x,S=12,X=1", b'S'), Some(12));
        // `;` is not an info separator in 2.3: the field is invalid.
        assert_eq!(size_field(b"x,S=10956;2,STln", b'S'), None);
        assert_eq!(size_field(b"x,S=10;2,S", b'W'), None);
        assert_eq!(size_field(b"x,W=4642;2,Sb", b'W'), None);
        assert_eq!(size_field(b"x,S=99999999999999999999999", b'S'), None);
        assert_eq!(size_field(b"x", b'S'), None);
    }

    #[test]
    fn flags_are_read_after_last_colon() {
        let (f, kw) = flags_of(b"x,S=1:2,FRSab");
        assert_eq!(f, Flags::FLAGGED | Flags::ANSWERED | Flags::SEEN);
        assert_eq!(kw, b"ab");
        let (f, kw) = flags_of(b"x:2,RDF,");
        assert_eq!(f, Flags::ANSWERED | Flags::DRAFT | Flags::FLAGGED);
        assert!(kw.is_empty());
        assert_eq!(flags_of(b"x;2,S").0, Flags::EMPTY);
        assert_eq!(flags_of(b"x:1,S").0, Flags::EMPTY);
        assert_eq!(flags_of(b"x:2,P").0, Flags::EMPTY);
    }

    #[test]
    fn flag_bits_are_flags_of_as_a_set() {
        for name in [
            &b"x,S=1:2,FRSab"[..],
            b"x:2,zbaTDb,ca",
            b"x:2,",
            b"x",
            b"x;2,S",
            b"x:1,Sa",
            b"x:2,P",
            b"a:b:2,z",
        ] {
            let (flags, letters) = flags_of(name);
            let (bits_flags, bits) = flag_bits(name);
            assert_eq!(bits_flags, flags, "{}", String::from_utf8_lossy(name));
            let mut sorted = letters.clone();
            sorted.sort_unstable();
            assert_eq!(letters_of_bits(bits).collect::<Vec<u8>>(), sorted);
        }
        assert_eq!(flag_bits(b"x:2,zba").1, 1 | 2 | 1 << 25);
    }

    #[test]
    fn set_flags_sorts_and_keeps_unknown_letters() {
        assert_eq!(
            set_flags(b"x,S=5", Flags::SEEN | Flags::ANSWERED, b""),
            b"x,S=5:2,RS"
        );
        assert_eq!(set_flags(b"x:2,S", Flags::EMPTY, b""), b"x:2,");
        assert_eq!(
            set_flags(
                b"x:2,PS",
                Flags::SEEN | Flags::DRAFT | Flags::DELETED,
                b"ba"
            ),
            b"x:2,DPSTab"
        );
        // Unknown uppercase and digit letters stay where ASCII order puts them; a second
        // flag set is kept verbatim.
        assert_eq!(
            set_flags(b"x:2,1XSc,extra", Flags::FLAGGED, b"d"),
            b"x:2,1FXd,extra"
        );
        // Old keyword letters are replaced by the new set.
        assert_eq!(set_flags(b"x:2,Sab", Flags::SEEN, b"c"), b"x:2,Sc");
        // An info part that isn't `2,` is dropped, as Dovecot does.
        assert_eq!(set_flags(b"x:1,abc", Flags::SEEN, b""), b"x:2,S");
    }

    #[test]
    fn sort_order_is_time_then_usecs_then_name() {
        let mut v: Vec<&[u8]> = vec![
            b"20.M5P1.h",
            b"10.M900P1.h",
            b"10.M1000P1.h",
            b"10.M1000P0.h",
            b"9.x",
        ];
        v.sort_by(|a, b| sort_cmp(a, b));
        assert_eq!(
            v,
            vec![
                &b"9.x"[..],
                b"10.M900P1.h",
                b"10.M1000P0.h",
                b"10.M1000P1.h",
                b"20.M5P1.h"
            ]
        );
    }

    #[test]
    fn generated_names_are_unique_and_escaped() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(!a.contains('/') && !a.contains(':'));
        assert!(a.contains(&format!("P{}.", std::process::id())));
        assert_eq!(escaped_hostname("a/b:c"), "a\\057b\\072c");
        assert!(sort_cmp(a.as_bytes(), b.as_bytes()) == Ordering::Less);
    }
}
