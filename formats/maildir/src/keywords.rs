//! `dovecot-keywords`: the keyword ↔ filename letter map of one Maildir
//! (src/lib-storage/index/maildir/maildir-keywords.c, Dovecot 2.3.19.1).
//!
//! Lines `<idx> <keyword>\n` with idx 0..25 ↔ letter `a`+idx. Reading is lenient exactly as
//! maildir_keywords_sync: lines without a space, a non-numeric or out-of-range index, an
//! empty name, or a name already listed (compared case-insensitively) are skipped. A letter
//! used in a filename with no entry is reported as keyword `unknown-<idx>`
//! (maildir_keywords_char_idx), which maps back to the same letter.

use mailstore::Keyword;

/// At most 26 keywords per mailbox (`MAILDIR_MAX_KEYWORDS`).
pub const MAX_KEYWORDS: usize = 26;

/// The letter map of one mailbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeywordMap {
    /// The keyword of each letter, shared by every message that has it (a clone, no copy
    /// of the name).
    slots: [Option<Keyword>; MAX_KEYWORDS],
    /// True when a slot was filled that the file doesn't have yet.
    pub changed: bool,
}

impl KeywordMap {
    /// Parses the file contents (never fails: bad lines are skipped as Dovecot does).
    pub fn parse(data: &[u8]) -> KeywordMap {
        let mut map = KeywordMap::default();
        for line in data.split(|&b| b == b'\n') {
            let Some(sp) = line.iter().position(|&b| b == b' ') else {
                continue;
            };
            let (idx, name) = (&line[..sp], &line[sp + 1..]);
            let Some(idx) = parse_index(idx) else {
                continue;
            };
            if idx >= MAX_KEYWORDS || name.is_empty() || map.index_of(name).is_some() {
                continue;
            }
            map.slots[idx] = Some(Keyword::new(name));
        }
        map
    }

    /// The file contents: one `<idx> <name>\n` line per used slot.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(name) = slot {
                out.extend_from_slice(format!("{i} ").as_bytes());
                out.extend_from_slice(name.as_bytes());
                out.push(b'\n');
            }
        }
        out
    }

    /// The slot of a keyword name (case-insensitive, as Dovecot's strcase hash).
    pub fn index_of(&self, name: &[u8]) -> Option<usize> {
        self.slots.iter().position(|s| {
            s.as_ref()
                .is_some_and(|n| n.as_bytes().eq_ignore_ascii_case(name))
        })
    }

    /// The keyword for a filename letter; a letter with no entry is `unknown-<idx>`.
    pub fn keyword_for_letter(&self, letter: u8) -> Option<Keyword> {
        if !letter.is_ascii_lowercase() {
            return None;
        }
        let idx = (letter - b'a') as usize;
        Some(match &self.slots[idx] {
            Some(keyword) => keyword.clone(),
            None => Keyword::new(format!("unknown-{idx}").into_bytes()),
        })
    }

    /// The letter for a keyword, if it has one. `unknown-<idx>` maps to letter idx when that
    /// slot is empty.
    pub fn letter_for(&self, name: &[u8]) -> Option<u8> {
        if let Some(i) = self.index_of(name) {
            return Some(b'a' + i as u8);
        }
        let idx = unknown_index(name)?;
        self.slots[idx].is_none().then_some(b'a' + idx as u8)
    }

    /// The letter for a keyword, giving it the first free slot when it has none
    /// (maildir_keywords_lookup_or_create). `None` when all 26 slots are taken.
    pub fn letter_or_assign(&mut self, name: &[u8]) -> Option<u8> {
        if let Some(l) = self.letter_for(name) {
            return Some(l);
        }
        let free = self.slots.iter().position(Option::is_none)?;
        self.slots[free] = Some(Keyword::new(name));
        self.changed = true;
        Some(b'a' + free as u8)
    }

    /// Makes sure a letter seen in a filename keeps its slot: an empty slot gets the name
    /// `unknown-<idx>` (with `?` appended while that name is taken), as
    /// maildir_keywords_char_idx does, so no other keyword is ever given that letter.
    pub fn claim_letter(&mut self, letter: u8) {
        if !letter.is_ascii_lowercase() {
            return;
        }
        let idx = (letter - b'a') as usize;
        if self.slots[idx].is_some() {
            return;
        }
        let mut name = format!("unknown-{idx}").into_bytes();
        while self.index_of(&name).is_some() {
            name.push(b'?');
        }
        self.slots[idx] = Some(Keyword::new(name));
        self.changed = true;
    }

    /// Number of used slots.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn parse_index(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn unknown_index(name: &[u8]) -> Option<usize> {
    let rest = name.strip_prefix(b"unknown-")?;
    let idx = parse_index(rest)?;
    (idx < MAX_KEYWORDS && rest.len() == idx.to_string().len()).then_some(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dovecot_file() {
        let m = KeywordMap::parse(b"0 $Forwarded\n1 Junk\n2 $label1\n3 NonJunk\n");
        assert_eq!(m.len(), 4);
        assert_eq!(m.letter_for(b"junk"), Some(b'b'));
        assert_eq!(m.keyword_for_letter(b'd').unwrap().as_bytes(), b"NonJunk");
        assert_eq!(
            m.serialize(),
            b"0 $Forwarded\n1 Junk\n2 $label1\n3 NonJunk\n"
        );
    }

    #[test]
    fn corrupt_lines_are_skipped() {
        let m = KeywordMap::parse(b"garbage\n26 TooHigh\nx Bad\n1 \n2 Dup\n3 dup\n-1 Neg\n5 Ok\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m.letter_for(b"Dup"), Some(b'c'));
        assert_eq!(m.letter_for(b"Ok"), Some(b'f'));
    }

    #[test]
    fn unknown_letters_and_assignment() {
        let mut m = KeywordMap::parse(b"0 A\n");
        assert_eq!(m.keyword_for_letter(b'c').unwrap().as_bytes(), b"unknown-2");
        assert_eq!(m.letter_for(b"unknown-2"), Some(b'c'));
        assert_eq!(m.letter_or_assign(b"B"), Some(b'b'));
        assert!(m.changed);
        for i in 0..24 {
            assert!(m.letter_or_assign(format!("k{i}").as_bytes()).is_some());
        }
        assert_eq!(m.len(), 26);
        assert_eq!(m.letter_or_assign(b"one-too-many"), None);
    }

    #[test]
    fn claimed_letters_are_never_reassigned() {
        let mut m = KeywordMap::parse(
            b"1 unknown-0
",
        );
        m.claim_letter(b'a');
        assert_eq!(
            m.keyword_for_letter(b'a').unwrap().as_bytes(),
            b"unknown-0?"
        );
        assert_eq!(m.letter_or_assign(b"New"), Some(b'c'));
    }
}
