//! What Dovecot's maildir sync would write to `dovecot.index.log` for the current files:
//! the comparison of uidlist + filename flags with the index records, as
//! `maildir_sync_index` does it (src/lib-storage/index/maildir/maildir-sync-index.c, Dovecot
//! 2.3.19.1). Pure logic: the caller reads both sides and writes the result as one EXTERNAL
//! transaction (FORMAT.md §6).

use foldhash::{HashMap, HashSet};

use mailstore::Keyword;

/// The real IMAP flag bits in an index record (MAIL_FLAGS_NONRECENT, mail-types.h).
pub(crate) const REAL_FLAGS: u8 = 0x1f;
/// MAIL_INDEX_MAIL_FLAG_DIRTY (mail-index.h): flags not yet written to the files.
pub(crate) const DIRTY_FLAG: u8 = 0x80;

/// One record of the index, as the replayed view holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IndexedMail {
    pub uid: u32,
    /// Record flags (system flags plus DIRTY and backend bits).
    pub flags: u8,
    pub keywords: Box<[Keyword]>,
}

/// The index side of the comparison.
#[derive(Clone, Debug, Default)]
pub(crate) struct IndexSide {
    pub uid_validity: u32,
    pub next_uid: u32,
    pub first_recent_uid: u32,
    /// Records ascending by UID.
    pub mails: Vec<IndexedMail>,
    /// The index's keyword names in their index order (the `keywords` extension).
    pub keyword_names: Vec<Keyword>,
    /// UIDs with changes Dovecot logged (non-external records after `log_file_tail_offset`)
    /// but hasn't applied to the files yet: their flags are left to Dovecot's sync
    /// (index-sync-changes.c).
    pub pending: HashSet<u32>,
}

/// One message as the files show it: a uidlist record whose file exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileMail {
    pub uid: u32,
    /// System flags from the filename (no \Recent).
    pub flags: u8,
    pub keywords: Box<[Keyword]>,
    /// The uidlist would mark it recent for this sync (MAILDIR_UIDLIST_REC_FLAG_RECENT): the
    /// file is in new/ or got its UID in this sync/commit (maildir-sync.c, maildir-uidlist.c).
    pub recent: bool,
}

/// The records of the EXTERNAL transaction, in Dovecot's export order
/// (mail-index-transaction-export.c): header (uid_validity), APPEND, FLAG_UPDATE,
/// KEYWORD_UPDATEs, EXPUNGE_GUID, header (next_uid, first_recent_uid).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ExternalChanges {
    /// `HEADER_UPDATE uid_validity` (a new index).
    pub uid_validity: Option<u32>,
    /// `APPEND` {uid, flags}, ascending.
    pub appends: Vec<(u32, u8)>,
    /// `FLAG_UPDATE` {uid, add, remove} (MODIFY_REPLACE: remove = real flags not wanted).
    pub flag_updates: Vec<(u32, u8, u8)>,
    /// `KEYWORD_UPDATE`s: (name, add?, uids ascending), per keyword in index order, the
    /// add before the remove (log_append_keyword_updates).
    pub keyword_updates: Vec<(Keyword, bool, Vec<u32>)>,
    /// `EXPUNGE_GUID` {uid, GUID}, ascending. The GUID is all-zero for a file that
    /// vanished (the maildir sync's mail_index_expunge) and the 128-bit form of the
    /// message's GUID for an expunge through a transaction (index_mail_expunge).
    pub expunges: Vec<(u32, [u8; 16])>,
    /// `HEADER_UPDATE next_uid`.
    pub next_uid: Option<u32>,
    /// `HEADER_UPDATE first_recent_uid`.
    pub first_recent_uid: Option<u32>,
}

impl ExternalChanges {
    pub fn is_empty(&self) -> bool {
        *self == ExternalChanges::default()
    }

    /// Logs the flag and keyword changes of `uids` (changed through this backend's own
    /// transaction) as exactly what changed, as a client's change through Dovecot's index
    /// is logged (MODIFY_ADD / MODIFY_REMOVE), instead of the maildir sync's MODIFY_REPLACE
    /// of a file renamed by someone else. The index ends the same; the log then tells which
    /// flags this side changed, which the sync engine's per-flag merge reads
    /// (`Mailbox::flag_changes_since`).
    pub fn log_exactly(&mut self, side: &IndexSide, uids: &HashSet<u32>) {
        if uids.is_empty() {
            return;
        }
        let old = |uid: u32| {
            side.mails
                .binary_search_by_key(&uid, |m| m.uid)
                .ok()
                .map(|i| &side.mails[i])
        };
        for (uid, add, remove) in &mut self.flag_updates {
            if let Some(m) = old(*uid).filter(|_| uids.contains(uid)) {
                let current = m.flags & REAL_FLAGS;
                *add &= !current;
                *remove &= current;
            }
        }
        self.flag_updates.retain(|(_, a, r)| *a != 0 || *r != 0);
        let mut exact: Vec<(Keyword, bool, u32)> = Vec::new();
        for uid in uids.iter().copied() {
            let Some(m) = old(uid) else { continue };
            // the keywords after this transaction's records, applied in their order
            let mut after: Vec<Keyword> = m.keywords.to_vec();
            for (name, add, list) in &self.keyword_updates {
                if !list.contains(&uid) {
                    continue;
                }
                after.retain(|k| !same_keyword(k, name));
                if *add {
                    after.push(name.clone());
                }
            }
            for k in after.iter().filter(|k| !contains_keyword(&m.keywords, k)) {
                exact.push((k.clone(), true, uid));
            }
            for k in m.keywords.iter().filter(|k| !contains_keyword(&after, k)) {
                exact.push((k.clone(), false, uid));
            }
        }
        for (_, _, list) in &mut self.keyword_updates {
            list.retain(|uid| !uids.contains(uid) || old(*uid).is_none());
        }
        for (name, add, uid) in exact {
            match self
                .keyword_updates
                .iter_mut()
                .find(|(n, a, _)| *a == add && same_keyword(n, &name))
            {
                Some((_, _, list)) => {
                    list.push(uid);
                    list.sort_unstable();
                }
                None => self.keyword_updates.push((name, add, vec![uid])),
            }
        }
        self.keyword_updates.retain(|(_, _, l)| !l.is_empty());
    }
}

/// The outcome of [`compare`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Comparison {
    pub changes: ExternalChanges,
    /// Uidlist UIDs below the index's `next_uid` that the index doesn't have: Dovecot gives
    /// these files new UIDs ("Expunged message reappeared", maildir_handle_uid_insertion).
    pub reappeared: Vec<u32>,
}

fn same_keyword(a: &Keyword, b: &Keyword) -> bool {
    // The index matches keyword names case-insensitively (strcase_hash, mail-index.c).
    a.as_bytes().eq_ignore_ascii_case(b.as_bytes())
}

fn contains_keyword(set: &[Keyword], k: &Keyword) -> bool {
    set.iter().any(|x| same_keyword(x, k))
}

/// Collects keyword changes per name, remembering first-seen order for new names.
#[derive(Default)]
struct KeywordChanges {
    order: Vec<Keyword>,
    add: HashMap<Vec<u8>, Vec<u32>>,
    remove: HashMap<Vec<u8>, Vec<u32>>,
}

impl KeywordChanges {
    fn key(k: &Keyword) -> Vec<u8> {
        k.as_bytes().to_ascii_lowercase()
    }

    fn note(&mut self, k: &Keyword) {
        if !contains_keyword(&self.order, k) {
            self.order.push(k.clone());
        }
    }

    fn add(&mut self, k: &Keyword, uid: u32) {
        self.note(k);
        self.add.entry(Self::key(k)).or_default().push(uid);
    }

    fn remove(&mut self, k: &Keyword, uid: u32) {
        self.note(k);
        self.remove.entry(Self::key(k)).or_default().push(uid);
    }

    /// Per keyword in the index's order, then new names in first-seen order.
    fn into_records(mut self, index_order: &[Keyword]) -> Vec<(Keyword, bool, Vec<u32>)> {
        let mut names: Vec<Keyword> = index_order
            .iter()
            .filter(|k| contains_keyword(&self.order, k))
            .cloned()
            .collect();
        for k in &self.order {
            if !contains_keyword(&names, k) {
                names.push(k.clone());
            }
        }
        let mut out = Vec::new();
        for name in names {
            let key = Self::key(&name);
            if let Some(uids) = self.add.remove(&key) {
                out.push((name.clone(), true, uids));
            }
            if let Some(uids) = self.remove.remove(&key) {
                out.push((name.clone(), false, uids));
            }
        }
        out
    }
}

/// Compares the files with the index as maildir_sync_index does and returns the records a
/// sync writes. `uidlist_validity`/`uidlist_next_uid` are the uidlist header values after
/// UIDs were assigned; `files` ascend by UID; `non_recent` lists saved UIDs that must not
/// be \Recent (a save with a requested UID and no \Recent, maildir-save.c
/// `last_nonrecent_uid`). `storable` tells whether a keyword has (or can get) a filename
/// letter; index keywords that can't are kept in the index only and never removed
/// (maildir_sync_mail_keywords, "index-only keywords").
pub(crate) fn compare(
    index: &IndexSide,
    uidlist_validity: u32,
    uidlist_next_uid: u32,
    files: &[FileMail],
    non_recent: &HashSet<u32>,
    storable: &dyn Fn(&Keyword) -> bool,
) -> Comparison {
    let mut cmp = Comparison::default();
    let changes = &mut cmp.changes;
    if index.uid_validity == 0 && uidlist_validity != 0 {
        changes.uid_validity = Some(uidlist_validity);
    }
    let mut hdr_next_uid = index.next_uid.max(1);
    let mut first_recent_uid = index.first_recent_uid.max(1);
    let mut keywords = KeywordChanges::default();
    // which index records have a file: looked up by bisection (the records ascend by UID,
    // an index invariant), no map or set of every UID
    let mut present = vec![false; index.mails.len()];
    for f in files {
        let found = index.mails.binary_search_by_key(&f.uid, |m| m.uid).ok();
        if let Some(i) = found {
            present[i] = true;
        }
        match found.map(|i| &index.mails[i]) {
            None if f.uid < hdr_next_uid => cmp.reappeared.push(f.uid),
            None => {
                // Trust the uidlist's recent flag only for newly added messages.
                if (!f.recent || non_recent.contains(&f.uid)) && f.uid >= first_recent_uid {
                    first_recent_uid = f.uid + 1;
                }
                hdr_next_uid = f.uid + 1;
                changes.appends.push((f.uid, f.flags & REAL_FLAGS));
                for k in &f.keywords {
                    keywords.add(k, f.uid);
                }
            }
            Some(rec) => {
                if index.pending.contains(&f.uid) || rec.flags & DIRTY_FLAG != 0 {
                    // Dovecot still has to apply its own change to this file.
                    continue;
                }
                let want = f.flags & REAL_FLAGS;
                if want != rec.flags & REAL_FLAGS {
                    changes.flag_updates.push((f.uid, want, REAL_FLAGS & !want));
                }
                // maildir_sync_mail_keywords: without index-only keywords MODIFY_REPLACE,
                // split into removing what the index has and adding what the file has
                // (keywords kept are re-added); with them, only the differences.
                let in_files: Vec<&Keyword> = rec.keywords.iter().filter(|k| storable(k)).collect();
                let index_only = in_files.len() != rec.keywords.len();
                let differs = in_files.len() != f.keywords.len()
                    || in_files.iter().any(|k| !contains_keyword(&f.keywords, k));
                if differs {
                    for k in &in_files {
                        if !contains_keyword(&f.keywords, k) {
                            keywords.remove(k, f.uid);
                        }
                    }
                    for k in &f.keywords {
                        if !index_only || !contains_keyword(&rec.keywords, k) {
                            keywords.add(k, f.uid);
                        }
                    }
                }
            }
        }
    }
    changes.keyword_updates = keywords.into_records(&index.keyword_names);
    changes.expunges = index
        .mails
        .iter()
        .zip(&present)
        .filter(|(_, &present)| !present)
        .map(|(m, _)| (m.uid, [0; 16]))
        .collect();
    if hdr_next_uid < uidlist_next_uid {
        changes.next_uid = Some(uidlist_next_uid);
    }
    let next_uid = hdr_next_uid.max(uidlist_next_uid);
    let first_recent_uid = first_recent_uid.min(next_uid);
    if first_recent_uid > index.first_recent_uid.max(1) {
        changes.first_recent_uid = Some(first_recent_uid);
    }
    cmp
}

#[cfg(test)]
mod tests {
    use super::*;
    use foldhash::HashSetExt;

    fn kw(s: &str) -> Keyword {
        Keyword::from(s)
    }

    fn file(uid: u32, flags: u8, kws: &[&str], recent: bool) -> FileMail {
        FileMail {
            uid,
            flags,
            keywords: kws.iter().map(|k| kw(k)).collect(),
            recent,
        }
    }

    fn indexed(uid: u32, flags: u8, kws: &[&str]) -> IndexedMail {
        IndexedMail {
            uid,
            flags,
            keywords: kws.iter().map(|k| kw(k)).collect(),
        }
    }

    #[test]
    fn a_new_index_gets_uidvalidity_appends_and_first_recent_uid_as_dovecot_wrote_them() {
        // Observed with doveadm 2.3.19.1 (FORMAT.md §6.3): cur/1 (listed), cur/9 (listed),
        // new/10 (not listed) over a missing index → APPEND 1 (flags 3), 9 (flags 8), 10;
        // KEYWORD_UPDATE add Work 1; first_recent_uid = 10.
        let index = IndexSide::default();
        let files = [
            file(1, 0x03, &["Work"], false),
            file(9, 0x08, &[], false),
            file(10, 0, &[], true),
        ];
        let c = compare(&index, 1795984733, 11, &files, &HashSet::new(), &|_| true);
        assert!(c.reappeared.is_empty());
        let ch = c.changes;
        assert_eq!(ch.uid_validity, Some(1795984733));
        assert_eq!(ch.appends, vec![(1, 3), (9, 8), (10, 0)]);
        assert_eq!(ch.keyword_updates, vec![(kw("Work"), true, vec![1])]);
        assert_eq!(ch.first_recent_uid, Some(10));
        assert_eq!(ch.next_uid, None);
        assert!(ch.flag_updates.is_empty() && ch.expunges.is_empty());
    }

    #[test]
    fn renamed_and_unlinked_files_give_replace_flag_updates_keyword_changes_and_expunges() {
        // Observed: a file renamed from :2,Sa ($Label1) to :2,FRb (Work) → flag-update
        // +3 -1c, keyword remove $Label1, keyword add Work; a new listed file appended.
        let index = IndexSide {
            uid_validity: 7,
            next_uid: 3,
            first_recent_uid: 1,
            mails: vec![indexed(1, 0x08, &["$Label1"]), indexed(2, 0, &[])],
            keyword_names: vec![kw("$Label1")],
            pending: HashSet::new(),
        };
        let files = [file(1, 0x03, &["Work"], false), file(3, 0, &[], true)];
        let c = compare(&index, 7, 4, &files, &HashSet::new(), &|_| true).changes;
        assert_eq!(c.uid_validity, None);
        assert_eq!(c.appends, vec![(3, 0)]);
        assert_eq!(c.flag_updates, vec![(1, 0x03, 0x1c)]);
        assert_eq!(
            c.keyword_updates,
            vec![(kw("$Label1"), false, vec![1]), (kw("Work"), true, vec![1])]
        );
        assert_eq!(c.expunges, vec![(2, [0; 16])]);
        assert_eq!(c.first_recent_uid, None);
    }

    #[test]
    fn nothing_changed_means_no_transaction() {
        let index = IndexSide {
            uid_validity: 7,
            next_uid: 2,
            first_recent_uid: 1,
            mails: vec![indexed(1, 0x08, &["a"])],
            keyword_names: vec![kw("a")],
            pending: HashSet::new(),
        };
        // Keyword case differs only: the index matches names case-insensitively.
        let files = [file(1, 0x08, &["A"], true)];
        let c = compare(&index, 7, 2, &files, &HashSet::new(), &|_| true);
        assert!(c.changes.is_empty(), "{c:?}");
    }

    #[test]
    fn a_listed_uid_below_next_uid_missing_from_the_index_reappeared() {
        let index = IndexSide {
            uid_validity: 7,
            next_uid: 9,
            first_recent_uid: 1,
            mails: vec![indexed(1, 0, &[])],
            ..IndexSide::default()
        };
        let files = [file(1, 0, &[], false), file(5, 0x08, &[], false)];
        let c = compare(&index, 7, 9, &files, &HashSet::new(), &|_| true);
        assert_eq!(c.reappeared, vec![5]);
        assert!(c.changes.appends.is_empty());
    }

    #[test]
    fn pending_and_dirty_records_are_left_to_dovecot() {
        let mut pending = HashSet::new();
        pending.insert(1);
        let index = IndexSide {
            uid_validity: 7,
            next_uid: 3,
            first_recent_uid: 1,
            mails: vec![indexed(1, 0x08, &[]), indexed(2, 0x08 | DIRTY_FLAG, &[])],
            keyword_names: vec![],
            pending,
        };
        let files = [file(1, 0, &[], false), file(2, 0, &[], false)];
        let c = compare(&index, 7, 3, &files, &HashSet::new(), &|_| true);
        assert!(c.changes.is_empty(), "{c:?}");
    }

    #[test]
    fn uidlist_next_uid_above_the_index_is_written_and_recent_never_shrinks() {
        let index = IndexSide {
            uid_validity: 7,
            next_uid: 2,
            first_recent_uid: 2,
            mails: vec![indexed(1, 0, &[])],
            ..IndexSide::default()
        };
        let files = [file(1, 0, &[], false), file(5, 0, &[], true)];
        let mut non_recent = HashSet::new();
        non_recent.insert(5);
        let c = compare(&index, 7, 9, &files, &non_recent, &|_| true).changes;
        assert_eq!(c.appends, vec![(5, 0)]);
        assert_eq!(c.next_uid, Some(9));
        assert_eq!(c.first_recent_uid, Some(6));
    }

    #[test]
    fn index_only_keywords_are_never_removed() {
        // All 26 letters taken: Dovecot keeps a 27th keyword in the index only.
        let index = IndexSide {
            uid_validity: 7,
            next_uid: 2,
            first_recent_uid: 1,
            mails: vec![indexed(1, 0, &["a", "extra"])],
            keyword_names: vec![kw("a"), kw("extra")],
            pending: HashSet::new(),
        };
        let storable = |k: &Keyword| k.as_bytes() != b"extra";
        let same = [file(1, 0, &["a"], false)];
        let c = compare(&index, 7, 2, &same, &HashSet::new(), &storable);
        assert!(c.changes.is_empty(), "{c:?}");
        let changed = [file(1, 0, &["b"], false)];
        let c = compare(&index, 7, 2, &changed, &HashSet::new(), &storable);
        assert_eq!(
            c.changes.keyword_updates,
            vec![(kw("a"), false, vec![1]), (kw("b"), true, vec![1])]
        );
    }
}
