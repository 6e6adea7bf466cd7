//! `changes_since(modseq)`: what changed after a modseq, answered from the transaction
//! logs (the QRESYNC way: src/lib-index/mail-index-modseq.c,
//! mail_index_modseq_get_next_log_offset, and the log record modseqs of §2.3).

use std::collections::{BTreeMap, BTreeSet};

use mailstore::{Changes, Expunges, FlagChange, Flags, Guid, Keyword, ModSeq, Uid};

use crate::format::ext::hex;
use crate::format::index::rec_flag::SYSTEM_MASK;
use crate::format::log::{history_start, LogFile, RecordBody};
use crate::view::{LogHistory, View};

impl View {
    /// UIDs whose flags/keywords changed or that were appended after `since`, and UIDs
    /// expunged after it (with their GUID from EXPUNGE_GUID when not all-zero, printed as
    /// 32 lowercase hex digits). `Changes::Unknown` when the logs don't reach back to
    /// `since` (it is older than the oldest log's initial_modseq, or modseqs weren't
    /// tracked): the caller must do a full compare.
    pub fn changes_since(&self, since: ModSeq) -> Changes {
        let present: Vec<u32> = self.messages().map(|m| m.uid()).collect();
        changes_in(self.logs(), since, self.highest_modseq(), present, true)
    }

    /// The `expunged` of [`View::changes_since`] (`None` for `Unknown`), without working
    /// out which present messages changed.
    pub fn expunged_since(&self, since: ModSeq) -> Option<Expunges> {
        let present: Vec<u32> = self.messages().map(|m| m.uid()).collect();
        expunged_of(changes_in(
            self.logs(),
            since,
            self.highest_modseq(),
            present,
            false,
        ))
    }

    /// How the flags and keywords of `uids` were changed after `since`, from FLAG_UPDATE,
    /// KEYWORD_UPDATE and KEYWORD_RESET records, leaving out records marked SYNC (changes
    /// dsync — or mailsync's engine — copied from another replica), as
    /// dsync-transaction-log-scan.c does. As far back as the logs reach (after the last
    /// reset); UIDs no longer in the view and UIDs without changes are left out.
    pub fn flag_changes_since(&self, since: ModSeq, uids: &[Uid]) -> Vec<(Uid, FlagChange)> {
        let present: BTreeSet<u32> = self.messages().map(|m| m.uid()).collect();
        flag_changes_in(self.logs(), since, uids, |uid| present.contains(&uid))
    }
}

impl LogHistory {
    /// [`View::changes_since`] from these logs, for the caller's view at `highest_modseq`
    /// holding the UIDs `present` (in any order).
    pub fn changes_since(&self, since: ModSeq, highest_modseq: u64, present: Vec<u32>) -> Changes {
        changes_in(self.logs(), since, highest_modseq, present, true)
    }

    /// [`View::expunged_since`] from these logs (see [`LogHistory::changes_since`]).
    pub fn expunged_since(
        &self,
        since: ModSeq,
        highest_modseq: u64,
        present: Vec<u32>,
    ) -> Option<Expunges> {
        expunged_of(changes_in(
            self.logs(),
            since,
            highest_modseq,
            present,
            false,
        ))
    }

    /// [`View::flag_changes_since`] from these logs, for the UIDs `present` says the
    /// caller's view holds.
    pub fn flag_changes_since(
        &self,
        since: ModSeq,
        uids: &[Uid],
        present: impl Fn(u32) -> bool,
    ) -> Vec<(Uid, FlagChange)> {
        flag_changes_in(self.logs(), since, uids, present)
    }
}

/// True when `log`'s records answer [`changes_in`] by themselves, as they would with the
/// records before them (for a log read from a later offset): no expunge that takes its
/// UIDs from earlier appends (a UID range, matched against the UIDs known) or its GUID
/// from an earlier request (an all-zero GUID).
pub(crate) fn answerable_alone(log: &LogFile) -> bool {
    log.records.iter().all(|r| match &r.body {
        RecordBody::Expunge(_) => !r.is_external(),
        RecordBody::ExpungeGuid(v) => !r.is_external() || v.iter().all(|e| e.guid != [0; 16]),
        _ => true,
    })
}

fn expunged_of(changes: Changes) -> Option<Expunges> {
    match changes {
        Changes::Known { expunged, .. } => Some(expunged),
        _ => None,
    }
}

/// [`View::changes_since`] from `logs`, for a view at `highest_modseq` holding the UIDs
/// `present`. The UIDs are kept in sorted vectors, not trees: a full view asks for the
/// changes since its first modseq, and then every message is in the answer. Without
/// `changed_too` the answer's `changed` is left empty (only the expunges are wanted).
fn changes_in(
    logs: &[LogFile],
    since: ModSeq,
    highest_modseq: u64,
    mut present: Vec<u32>,
    changed_too: bool,
) -> Changes {
    if !present.is_sorted() {
        present.sort_unstable();
    }
    present.dedup();
    let present = present;
    // the UIDs of `present` from `a` to `b`
    let range = |a: u32, b: u32| -> &[u32] {
        let lo = present.partition_point(|&u| u < a);
        let hi = present.partition_point(|&u| u <= b);
        &present[lo..hi.max(lo)]
    };
    let since = since.0;
    if logs.is_empty() {
        return if since >= highest_modseq && highest_modseq > 0 {
            Changes::Known {
                changed: Vec::new(),
                expunged: Vec::new(),
                highest_modseq: ModSeq(highest_modseq),
            }
        } else {
            Changes::Unknown
        };
    }
    // the oldest usable history: after the last reset point
    let start = history_start(logs);
    let first = &logs[start];
    if first.header.initial_modseq == 0 || since < first.first_modseq {
        return Changes::Unknown;
    }
    let mut changed: Vec<u32> = Vec::new();
    let mut expunged: BTreeMap<u32, Option<Guid>> = BTreeMap::new();
    // the UIDs known besides `present`: appended, not in the view any more
    let mut appended_gone: BTreeSet<u32> = BTreeSet::new();
    // GUIDs of expunge requests (the non-external EXPUNGE_GUID that index_mail_expunge
    // logs; the expunge itself follows as an external record, from Dovecot's maildir
    // sync with a zero GUID).
    let mut requested: BTreeMap<u32, [u8; 16]> = BTreeMap::new();
    for l in &logs[start..] {
        for r in &l.records {
            match &r.body {
                RecordBody::Append(v) => appended_gone.extend(
                    v.iter()
                        .map(|a| a.uid)
                        .filter(|u| present.binary_search(u).is_err()),
                ),
                RecordBody::ExpungeGuid(v) if !r.is_external() => {
                    for e in v.iter().filter(|e| e.guid != [0; 16]) {
                        requested.insert(e.uid, e.guid);
                    }
                }
                _ => {}
            }
        }
    }
    let guid_of = |uid: u32, logged: [u8; 16]| -> Option<Guid> {
        let g = if logged != [0; 16] {
            Some(logged)
        } else {
            requested.get(&uid).copied()
        };
        g.map(|g| Guid::from_bytes(hex(&g).into_bytes()))
    };
    let add_range = |set: &mut Vec<u32>, a: u32, b: u32| {
        if changed_too {
            set.extend_from_slice(range(a, b));
        }
    };
    for l in &logs[start..] {
        let mut prev = l.first_modseq;
        for r in &l.records {
            let increased = r.modseq > prev;
            prev = r.modseq;
            if r.modseq <= since || !increased && !matches!(r.body, RecordBody::ModseqUpdate(_)) {
                continue;
            }
            match &r.body {
                RecordBody::Append(v) => {
                    for a in v {
                        add_range(&mut changed, a.uid, a.uid);
                    }
                }
                RecordBody::FlagUpdate(v) => {
                    for u in v.iter().filter(|u| !u.is_internal()) {
                        add_range(&mut changed, u.uid1, u.uid2);
                    }
                }
                RecordBody::KeywordUpdate(k) => {
                    for u in &k.uids {
                        add_range(&mut changed, u.uid1, u.uid2);
                    }
                }
                RecordBody::KeywordReset(v) => {
                    for u in v {
                        add_range(&mut changed, u.uid1, u.uid2);
                    }
                }
                RecordBody::ModseqUpdate(v) => {
                    for m in v.iter().filter(|m| m.uid != 0 && m.modseq > since) {
                        add_range(&mut changed, m.uid, m.uid);
                    }
                }
                RecordBody::ExpungeGuid(v) if r.is_external() => {
                    for e in v {
                        expunged.insert(e.uid, guid_of(e.uid, e.guid));
                    }
                }
                RecordBody::Expunge(v) if r.is_external() => {
                    for u in v {
                        let gone = appended_gone.range(u.uid1..=u.uid2.max(u.uid1));
                        for uid in range(u.uid1, u.uid2).iter().chain(gone) {
                            expunged
                                .entry(*uid)
                                .or_insert_with(|| guid_of(*uid, [0; 16]));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    changed.sort_unstable();
    changed.dedup();
    changed.retain(|uid| !expunged.contains_key(uid));
    // an expunged UID that is present again can't be (UIDs aren't reused)
    expunged.retain(|uid, _| present.binary_search(uid).is_err());
    Changes::Known {
        changed: changed.into_iter().map(Uid).collect(),
        expunged: expunged.into_iter().map(|(u, g)| (Uid(u), g)).collect(),
        highest_modseq: ModSeq(highest_modseq),
    }
}

fn flag_changes_in(
    logs: &[LogFile],
    since: ModSeq,
    uids: &[Uid],
    present: impl Fn(u32) -> bool,
) -> Vec<(Uid, FlagChange)> {
    let wanted: BTreeSet<u32> = uids.iter().map(|u| u.0).filter(|&u| present(u)).collect();
    let mut out: BTreeMap<u32, FlagChange> = BTreeMap::new();
    let start = history_start(logs);
    for l in logs.iter().skip(start) {
        for r in l
            .records
            .iter()
            .filter(|r| r.modseq > since.0 && !r.is_sync())
        {
            match &r.body {
                RecordBody::FlagUpdate(v) => {
                    for u in v {
                        let add = Flags(u.add_flags & SYSTEM_MASK);
                        let remove = Flags(u.remove_flags & SYSTEM_MASK);
                        if add.is_empty() && remove.is_empty() {
                            continue;
                        }
                        for uid in wanted.range(u.uid1..=u.uid2.max(u.uid1)) {
                            out.entry(*uid).or_default().record_flags(add, remove);
                        }
                    }
                }
                RecordBody::KeywordUpdate(k) => {
                    let keyword = Keyword::new(&k.name);
                    for u in &k.uids {
                        for uid in wanted.range(u.uid1..=u.uid2.max(u.uid1)) {
                            out.entry(*uid)
                                .or_default()
                                .record_keyword(&keyword, k.modify_type == 0);
                        }
                    }
                }
                RecordBody::KeywordReset(v) => {
                    for u in v {
                        for uid in wanted.range(u.uid1..=u.uid2.max(u.uid1)) {
                            out.entry(*uid).or_default().reset_keywords();
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out.into_iter()
        .filter(|(_, c)| !c.is_empty())
        .map(|(u, c)| (Uid(u), c))
        .collect()
}
