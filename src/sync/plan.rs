//! Deterministic merge decisions. Both brains run these same pure functions on
//! (primary, secondary) inputs and each applies only its own half, so the two sides agree
//! without further negotiation (the mirror-symmetry rule of dsync,
//! /work/shared/reference/dsync-algorithm.md §1). "Primary" is the side whose view wins
//! ties: the source of a one-way run, the master of a two-way run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mailstore::{FlagChange, Flags, Guid, Keyword, MailboxGuid, Uid};

use super::items::{MailChange, TreeNode};

/// How a mailbox (or the tree) is merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeKind {
    /// `sync`: both sides changed, nothing lost.
    TwoWay,
    /// `sync -1`: the secondary merges two-way; the primary is never written.
    OneWay,
    /// `backup`: the secondary becomes an exact copy of the primary.
    Backup,
}

/// What `-O` asks for: a system flag or a keyword.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagWanted {
    Flag(Flags),
    /// Compared ASCII case-insensitively (dsync_mail_change_have_keyword uses strcasecmp).
    Keyword(Vec<u8>),
}

/// The message filters `-t`, `-e`, `-I` and `-O` (dsync-mailbox-import.c
/// dsync_mailbox_import_want_change). They apply only where a side would *save* a message
/// it is missing: a filtered-out message is neither copied nor "missing" (a backup doesn't
/// rebuild the copy for it), while messages both sides hold and the copy's extras are
/// treated as without filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailFilter {
    /// `-t`: only messages received at or after this UNIX time.
    pub since: Option<i64>,
    /// `-e`: only messages received at or before this UNIX time.
    pub until: Option<i64>,
    /// `-I`: only messages whose virtual size is at most this.
    pub max_size: Option<u64>,
    /// `-O`: the flag or keyword, and whether it must be present (`false` for `-O -flag`).
    pub flag: Option<(FlagWanted, bool)>,
}

impl MailFilter {
    pub fn is_empty(&self) -> bool {
        *self == MailFilter::default()
    }

    /// The filter compares received dates (`-S`, `-E`).
    pub fn needs_dates(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }

    /// True when a side missing `m` should save it. A message whose virtual size is unknown
    /// passes `-I` (the brains fill the sizes in before planning when `-I` is given).
    pub fn wants(&self, m: &MailChange) -> bool {
        if self.since.is_some_and(|t| m.received_date < t) {
            return false;
        }
        if self.until.is_some_and(|t| m.received_date > t) {
            return false;
        }
        if let (Some(max), Some(size)) = (self.max_size, m.virtual_size) {
            if size > max {
                return false;
            }
        }
        if let Some((what, want)) = &self.flag {
            let has = match what {
                FlagWanted::Flag(f) => m.final_flags.0 & f.0 != 0,
                FlagWanted::Keyword(k) => m
                    .keywords
                    .iter()
                    .any(|kw| kw.as_bytes().eq_ignore_ascii_case(k)),
            };
            if has != *want {
                return false;
            }
        }
        true
    }
}

/// One side's messages for a mailbox.
#[derive(Clone, Debug, Default)]
pub struct SideView {
    pub uid_validity: u32,
    /// The backend can change UIDVALIDITY (`Mailbox::update_mailbox`).
    pub uid_validity_settable: bool,
    pub uid_next: u32,
    /// Current messages, ascending by UID. Shared, never copied: between brains in one
    /// process the peer's view of this side is this very list (views are the biggest thing
    /// a run holds; two copies of each would double them).
    pub mails: Arc<Vec<MailChange>>,
    /// Expunges this side's history remembers (UID, GUID); `None` = history unknown.
    pub expunged: Option<Vec<(Uid, Option<Guid>)>>,
    /// How this side changed the flags and keywords of the messages the two sides hold
    /// with different flags, since the last sync (dsync's `add_flags`, `remove_flags` and
    /// `keyword_changes` of those `C` items), ascending by UID, for the per-flag merge.
    /// Kept beside `mails`, not in them: the list is shared with the peer.
    pub logged: Vec<(Uid, FlagChange)>,
    /// The backend left the messages' dates out (`Mailbox::mails_without_dates`): they
    /// are read per message when one is sent or copied.
    pub dates_left_out: bool,
}

impl SideView {
    /// The message at `uid` (the mails ascend by UID).
    pub fn mail(&self, uid: Uid) -> Option<&MailChange> {
        let i = self.mails.binary_search_by_key(&uid, |m| m.uid).ok()?;
        Some(&self.mails[i])
    }

    /// The logged flag changes of `uid` ([`SideView::logged`]).
    pub fn logged_of(&self, uid: Uid) -> Option<&FlagChange> {
        let i = self.logged.binary_search_by_key(&uid, |(u, _)| *u).ok()?;
        Some(&self.logged[i].1)
    }
}

/// Where a saved message's body comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveSource {
    /// This side's own message with that UID (a renumbering: copy, then expunge the old).
    Own(Uid),
    /// The peer's message with that UID (requested with `R`).
    Peer(Uid),
    /// A copy of this side's own message with that UID, which stays: its bytes were
    /// verified equal to the peer's message (`local_copy_candidates`), so nothing crosses.
    Copy(Uid),
}

/// A message to save with a wanted UID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedSave {
    pub uid: Uid,
    pub source: SaveSource,
    pub guid: Option<Guid>,
    pub flags: Flags,
    pub keywords: Vec<Keyword>,
    pub received_date: i64,
    pub saved_date: i64,
}

/// What one side must do to one mailbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SidePlan {
    /// Empty the mailbox and start again with the primary's UIDVALIDITY (backup only).
    pub recreate: bool,
    pub set_uid_validity: Option<u32>,
    pub expunge: Vec<Uid>,
    /// Replace flags and keywords.
    pub flags: Vec<(Uid, Flags, Vec<Keyword>)>,
    /// Ascending by UID.
    pub saves: Vec<PlannedSave>,
    pub min_uid_next: u32,
}

impl SidePlan {
    pub fn is_empty(&self) -> bool {
        !self.recreate
            && self.set_uid_validity.is_none()
            && self.expunge.is_empty()
            && self.flags.is_empty()
            && self.saves.is_empty()
    }
}

/// Both halves of a mailbox merge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxPlan {
    pub primary: SidePlan,
    pub secondary: SidePlan,
    /// The lowest UID a message keeps on one side only because the filter kept it from
    /// being copied: the run's state must not call it common (a later stateful run would
    /// take its absence on the other side for an expunge).
    pub filtered_min_uid: Option<u32>,
}

impl MailboxPlan {
    fn filtered(&mut self, uid: u32) {
        self.filtered_min_uid = Some(self.filtered_min_uid.map_or(uid, |u| u.min(uid)));
    }
}

fn without_recent(flags: Flags) -> Flags {
    Flags(flags.0 & !Flags::RECENT.0)
}

fn keyword_set(k: &[Keyword]) -> BTreeSet<&Keyword> {
    k.iter().collect()
}

fn same_flags(a: &MailChange, b: &MailChange) -> bool {
    without_recent(a.final_flags) == without_recent(b.final_flags)
        // the same list (most often none) is the same set, without building two
        && (a.keywords == b.keywords || keyword_set(&a.keywords) == keyword_set(&b.keywords))
}

/// One flag or keyword of dsync-mailbox-import.c merge_flags, `p` the primary's (dsync's
/// master) and `s` the secondary's: (final, logged add, logged remove).
fn merge_one(p: (bool, bool, bool), s: (bool, bool, bool), prefer_s: bool) -> bool {
    let ((p_final, mut p_add, mut p_remove), (s_final, mut s_add, mut s_remove)) = (p, s);
    // added on one side, removed on the other: the preferred side's change stands
    if p_add && s_remove {
        if prefer_s {
            p_add = false;
        } else {
            s_remove = false;
        }
    }
    if p_remove && s_add {
        if prefer_s {
            p_remove = false;
        } else {
            s_add = false;
        }
    }
    if p_final == s_final {
        // equal on both sides: left alone
        return p_final;
    }
    let (add, remove) = (p_add || s_add, p_remove || s_remove);
    let p_wanted = (p_final || add) && !remove;
    let s_wanted = (s_final || add) && !remove;
    // still different (a side changed it without a logged change): the preferred side's
    if prefer_s {
        s_wanted
    } else {
        p_wanted
    }
}

/// The flags and keywords both copies of one message get (dsync-mailbox-import.c
/// merge_flags and merge_keywords): each side's logged adds and removes since the last
/// sync (`p_logged` and `s_logged`, from `SideView::logged`) are applied — a flag added
/// on one side and removed on the other goes the way of the side with the higher modseq,
/// the primary on ties — flags equal on both sides stay, and what still differs takes
/// the preferred side's value.
/// Without logged changes this is the preferred side's flags whole. Both sides compute the
/// same result.
fn merge_flags(
    p: &MailChange,
    s: &MailChange,
    p_logged: Option<&FlagChange>,
    s_logged: Option<&FlagChange>,
) -> (Flags, Vec<Keyword>) {
    let prefer_s = s.modseq > p.modseq;
    let none = FlagChange::default();
    // (final flags, final keywords, logged changes) of each side
    let sides = [(p, p_logged), (s, s_logged)]
        .map(|(m, logged)| (m.final_flags, &m.keywords, logged.unwrap_or(&none)));
    let mut flags = Flags::EMPTY;
    for (flag, _) in Flags::ALL_IN_ORDER {
        if flag == Flags::RECENT {
            continue;
        }
        let [a, b] = sides.map(|(f, _, l)| {
            (
                f.contains(flag),
                l.add.contains(flag),
                l.remove.contains(flag),
            )
        });
        if merge_one(a, b, prefer_s) {
            flags.insert(flag);
        }
    }
    let mut names: Vec<&Keyword> = Vec::new();
    for (_, kws, l) in &sides {
        for k in kws
            .iter()
            .chain(&l.keywords_added)
            .chain(&l.keywords_removed)
        {
            if !names.contains(&k) {
                names.push(k);
            }
        }
    }
    let keywords = names
        .into_iter()
        .filter(|k| {
            let [a, b] = sides.map(|(_, kws, l)| {
                (
                    kws.contains(k),
                    l.keywords_added.contains(k),
                    l.keywords_removed.contains(k),
                )
            });
            merge_one(a, b, prefer_s)
        })
        .cloned()
        .collect();
    (flags, keywords)
}

/// The messages both sides hold (same UID, same GUID) with different flags or keywords:
/// those whose logged flag changes the merge needs (both sides compute the same list).
/// Ascending by UID, as both views are: one walk of the two lists, no map (this runs in
/// every merge round, for every message).
pub fn flag_conflicts(p: &SideView, s: &SideView) -> Vec<Uid> {
    let mut out = Vec::new();
    let mut theirs = s.mails.iter().peekable();
    for a in p.mails.iter() {
        while theirs.next_if(|b| b.uid < a.uid).is_some() {}
        if let Some(b) = theirs.peek().filter(|b| b.uid == a.uid) {
            if a.guid.is_some() && a.guid == b.guid && !same_flags(a, b) {
                out.push(a.uid);
            }
        }
    }
    out
}

fn flag_target(m: &MailChange) -> (Uid, Flags, Vec<Keyword>) {
    (m.uid, without_recent(m.final_flags), m.keywords.clone())
}

fn save_from(m: &MailChange, uid: Uid, source: SaveSource) -> PlannedSave {
    PlannedSave {
        uid,
        source,
        guid: m.guid.clone(),
        flags: without_recent(m.final_flags),
        keywords: m.keywords.clone(),
        received_date: m.received_date,
        saved_date: m.saved_date,
    }
}

/// True when `side` expunged the message `(uid, guid)` the other side still has: inside
/// the state's verified common range, or its history holds an expunge of that UID with
/// the same GUID, or (Dovecot's maildir logs expunges without GUIDs) an expunge of that UID
/// without a GUID while the UID lies inside the common prefix — below a UID both sides
/// hold with the same GUID and above no conflict (dsync-mailbox-import.c: expunges only
/// inside the verified common prefix). No expunge record at all keeps the message.
fn expunged_on(
    side: &SideView,
    uid: Uid,
    guid: &Option<Guid>,
    verified_common_uid: u32,
    in_common_prefix: bool,
) -> bool {
    if uid.0 <= verified_common_uid {
        return true;
    }
    let Some(list) = &side.expunged else {
        return false;
    };
    list.iter().any(|(u, eg)| {
        *u == uid
            && match (eg, guid) {
                (Some(eg), Some(g)) => eg.same_as(g),
                (None, _) => in_common_prefix,
                (Some(_), None) => false,
            }
    })
}

/// New messages both sides hold under one GUID at different UIDs: (primary UID, secondary
/// UID) pairs, matched in ascending UID order per GUID. A message is a candidate only when
/// the other side doesn't hold its GUID at the same UID (that is a common message). Both
/// brains compute the same list; each hashes its own half, and only pairs whose bodies hash
/// equal become links (`plan_two_way`'s `links`): the GUID alone never proves two messages
/// the same (header-derived GUIDs collide).
pub fn link_candidates(p: &SideView, s: &SideView) -> Vec<(Uid, Uid)> {
    /// GUID → this side's UIDs of it that the other side doesn't hold at the same UID.
    fn uncommon<'a>(own: &'a SideView, other: &SideView) -> BTreeMap<&'a [u8], Vec<Uid>> {
        let other_at = ByUid::of(&other.mails);
        let mut by_guid: BTreeMap<&[u8], Vec<Uid>> = BTreeMap::new();
        let mut cursor = 0;
        for m in own.mails.iter() {
            let Some(g) = &m.guid else { continue };
            if other_at
                .seek(&mut cursor, m.uid.0)
                .is_some_and(|o| o.guid.as_ref() == Some(g))
            {
                continue;
            }
            by_guid.entry(g.as_bytes()).or_default().push(m.uid);
        }
        by_guid
    }
    let pu = uncommon(p, s);
    let su = uncommon(s, p);
    let mut out = Vec::new();
    for (guid, puids) in &pu {
        if let Some(suids) = su.get(guid) {
            out.extend(puids.iter().copied().zip(suids.iter().copied()));
        }
    }
    out.sort();
    out
}

/// Saves of a message the receiving side already holds under the same GUID in this
/// mailbox at another UID that stays (not expunged by the plan): (receiving side is the
/// secondary, the peer's UID, the receiver's UID) — dsync-mailbox-import.c copies such a
/// local instance instead of asking for the body. Both brains compute the same list from
/// the full plan; the copy is made only when the two bodies hash equal byte for byte (the
/// GUID alone never proves two messages the same).
pub fn local_copy_candidates(
    plan: &MailboxPlan,
    p: &SideView,
    s: &SideView,
) -> Vec<(bool, Uid, Uid)> {
    fn for_side(side: &SidePlan, own: &SideView, secondary: bool, out: &mut Vec<(bool, Uid, Uid)>) {
        // the usual round saves nothing from the peer with a GUID: no GUID map then
        if !side
            .saves
            .iter()
            .any(|s| matches!(s.source, SaveSource::Peer(_)) && s.guid.is_some())
        {
            return;
        }
        let expunged: BTreeSet<Uid> = side.expunge.iter().copied().collect();
        // keyed by the saves' GUIDs only (the usual round saves a few messages into a large
        // mailbox): each gets the first local message that has it and stays
        let mut by_guid: BTreeMap<&[u8], Option<Uid>> = side
            .saves
            .iter()
            .filter(|s| matches!(s.source, SaveSource::Peer(_)))
            .filter_map(|s| Some((s.guid.as_ref()?.as_bytes(), None)))
            .collect();
        for m in own.mails.iter().filter(|m| !expunged.contains(&m.uid)) {
            if let Some(local @ None) = m.guid.as_ref().and_then(|g| by_guid.get_mut(g.as_bytes()))
            {
                *local = Some(m.uid);
            }
        }
        for save in &side.saves {
            if let (SaveSource::Peer(peer_uid), Some(g)) = (&save.source, &save.guid) {
                if let Some(&Some(local)) = by_guid.get(g.as_bytes()) {
                    out.push((secondary, *peer_uid, local));
                }
            }
        }
    }
    let mut out = Vec::new();
    for_side(&plan.primary, p, false, &mut out);
    for_side(&plan.secondary, s, true, &mut out);
    out
}

/// The two-way merge (also the secondary's half of `sync -1`).
///
/// `last_common_uid` comes from a trusted state (0 without one): UIDs up to it were common,
/// so a UID missing on one side there was expunged on that side.
///
/// `filter`: a message only one side holds that the other side doesn't want is left alone
/// on both sides (not copied, not renumbered), so repeated runs stay stable.
///
/// `links`: pairs from `link_candidates` whose bodies were verified equal: one message each
/// side holds at a different UID. It ends at one UID on both sides, without a transfer
/// (dsync-mailbox-import.c newmail_link; e.g. a run killed while renumbering a UID conflict
/// leaves the renumbered message on one side and the old UID on the other).
pub fn plan_two_way(
    p: &SideView,
    s: &SideView,
    last_common_uid: u32,
    filter: &MailFilter,
    links: &[(Uid, Uid)],
) -> MailboxPlan {
    merge_two_way(p, s, last_common_uid, filter, links, true)
}

/// A message not common to both sides, in the order new UIDs are handed out.
enum Fresh<'a> {
    /// Held by one side only (or at a UID the other side uses for another message).
    One {
        uid: u32,
        from_secondary: bool,
        mail: &'a MailChange,
    },
    /// Held by both sides at different UIDs, bodies verified equal.
    Link {
        primary: &'a MailChange,
        secondary: &'a MailChange,
    },
}

impl Fresh<'_> {
    fn one(uid: u32, from_secondary: bool, mail: &MailChange) -> Fresh<'_> {
        Fresh::One {
            uid,
            from_secondary,
            mail,
        }
    }

    fn order_key(&self) -> (&[u8], u32, bool) {
        fn guid(m: &MailChange) -> &[u8] {
            m.guid.as_ref().map_or(&[][..], |g| g.as_bytes())
        }
        match self {
            Fresh::One {
                uid,
                from_secondary,
                mail,
            } => (guid(mail), *uid, *from_secondary),
            Fresh::Link { primary, secondary } => {
                (guid(primary), primary.uid.0.min(secondary.uid.0), false)
            }
        }
    }
}

/// A view's mails by UID, ascending, one per UID (of two listed with one UID the later
/// wins, as collecting the list into a map would keep): found by bisection. Instead of a
/// B-tree of every mail of both views for each plan.
struct ByUid<'a>(Vec<(u32, &'a MailChange)>);

impl<'a> ByUid<'a> {
    fn of(mails: &'a [MailChange]) -> ByUid<'a> {
        let mut by_uid: Vec<(u32, &MailChange)> = mails.iter().map(|m| (m.uid.0, m)).collect();
        // stable, and linear for a list already in UID order (a backend's view is)
        by_uid.sort_by_key(|(uid, _)| *uid);
        // of equal UIDs keep the last: dedup_by keeps the first, so move the later over it
        by_uid.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                *kept = *later;
            }
            same
        });
        ByUid(by_uid)
    }

    fn get(&self, uid: &u32) -> Option<&'a MailChange> {
        self.0
            .binary_search_by_key(uid, |(u, _)| *u)
            .ok()
            .map(|i| self.0[i].1)
    }

    /// [`Self::get`] for UIDs asked in ascending order (a view's): from `cursor`, where
    /// the last one was looked for, stepping on; a UID lower than the last is searched
    /// for again.
    fn seek(&self, cursor: &mut usize, uid: u32) -> Option<&'a MailChange> {
        if *cursor > 0 && self.0.get(*cursor - 1).is_some_and(|(u, _)| *u >= uid) {
            *cursor = self.0.partition_point(|(u, _)| *u < uid);
        }
        while self.0.get(*cursor).is_some_and(|(u, _)| *u < uid) {
            *cursor += 1;
        }
        let (u, m) = self.0.get(*cursor)?;
        if *u != uid {
            return None;
        }
        *cursor += 1;
        Some(*m)
    }

    fn contains_key(&self, uid: &u32) -> bool {
        self.get(uid).is_some()
    }
}

/// The UIDs of both views, ascending, each once, with each view's mail at that UID.
type UidPair<'a> = (u32, Option<&'a MailChange>, Option<&'a MailChange>);

fn uid_pairs<'a>(p: &ByUid<'a>, s: &ByUid<'a>) -> Vec<UidPair<'a>> {
    let (mut a, mut b) = (p.0.iter().peekable(), s.0.iter().peekable());
    let mut out = Vec::with_capacity(p.0.len().max(s.0.len()));
    loop {
        let pair = match (a.peek(), b.peek()) {
            (Some(&&(x, m)), Some(&&(y, n))) if x == y => {
                a.next();
                b.next();
                (x, Some(m), Some(n))
            }
            (Some(&&(x, m)), Some(&&(y, _))) if x < y => {
                a.next();
                (x, Some(m), None)
            }
            (_, Some(&&(y, n))) => {
                b.next();
                (y, None, Some(n))
            }
            (Some(&&(x, m)), None) => {
                a.next();
                (x, Some(m), None)
            }
            (None, None) => return out,
        };
        out.push(pair);
    }
}

/// `plan_two_way`; `primary_writable` is false for `sync -1`, whose primary keeps its UIDs:
/// a link is then resolved only by the secondary moving to the primary's UID.
fn merge_two_way(
    p: &SideView,
    s: &SideView,
    last_common_uid: u32,
    filter: &MailFilter,
    links: &[(Uid, Uid)],
    primary_writable: bool,
) -> MailboxPlan {
    let mut plan = MailboxPlan::default();
    let lcu = if p.uid_validity == s.uid_validity {
        last_common_uid
    } else {
        0
    };
    if p.uid_validity != s.uid_validity && s.mails.is_empty() && s.uid_validity_settable {
        plan.secondary.set_uid_validity = Some(p.uid_validity);
    } else if p.uid_validity != s.uid_validity && p.mails.is_empty() && p.uid_validity_settable {
        plan.primary.set_uid_validity = Some(s.uid_validity);
    }
    let pm = ByUid::of(&p.mails);
    let sm = ByUid::of(&s.mails);
    let pairs = uid_pairs(&pm, &sm);
    // The common prefix: up to the highest UID both hold with one GUID, stopping at the
    // first UID that names different messages.
    let mut common_max = 0;
    for &(uid, a, b) in &pairs {
        match (a, b) {
            (Some(a), Some(b)) if a.guid.is_some() && a.guid == b.guid => common_max = uid,
            (Some(_), Some(_)) => break,
            _ => {}
        }
    }
    // Linked messages are placed by their link, never copied or expunged on their own.
    let mut fresh: Vec<Fresh> = Vec::new();
    let mut linked_p = BTreeSet::new();
    let mut linked_s = BTreeSet::new();
    for (pu, su) in links {
        if let (Some(a), Some(b)) = (pm.get(&pu.0), sm.get(&su.0)) {
            // A link never undoes an expunge: each copy must be one the other side
            // didn't expunge.
            let expunged = expunged_on(s, a.uid, &a.guid, lcu, pu.0 < common_max)
                || expunged_on(p, b.uid, &b.guid, lcu, su.0 < common_max);
            if a.guid.is_some() && a.guid == b.guid && pu != su && !expunged {
                linked_p.insert(pu.0);
                linked_s.insert(su.0);
                fresh.push(Fresh::Link {
                    primary: a,
                    secondary: b,
                });
            }
        }
    }
    for (uid, in_p, in_s) in pairs {
        let a = in_p.filter(|_| !linked_p.contains(&uid));
        let b = in_s.filter(|_| !linked_s.contains(&uid));
        match (a, b) {
            (Some(a), Some(b)) if a.guid.is_some() && a.guid == b.guid => {
                if !same_flags(a, b) {
                    let (flags, keywords) =
                        merge_flags(a, b, p.logged_of(a.uid), s.logged_of(b.uid));
                    for (side, own) in [(&mut plan.primary, a), (&mut plan.secondary, b)] {
                        if without_recent(own.final_flags) != flags
                            || keyword_set(&own.keywords) != keyword_set(&keywords)
                        {
                            side.flags.push((own.uid, flags, keywords.clone()));
                        }
                    }
                }
            }
            (Some(a), Some(b)) => {
                // Same UID, different messages: both kept, both renumbered (§4.4).
                fresh.push(Fresh::one(uid, false, a));
                fresh.push(Fresh::one(uid, true, b));
            }
            (Some(a), None) => {
                if in_s.is_some() {
                    // The secondary's message at this UID is linked elsewhere.
                    fresh.push(Fresh::one(uid, false, a));
                } else if expunged_on(s, a.uid, &a.guid, lcu, uid < common_max) {
                    plan.primary.expunge.push(a.uid);
                } else if filter.wants(a) {
                    fresh.push(Fresh::one(uid, false, a));
                } else {
                    plan.filtered(uid);
                }
            }
            (None, Some(b)) => {
                if in_p.is_some() {
                    fresh.push(Fresh::one(uid, true, b));
                } else if expunged_on(p, b.uid, &b.guid, lcu, uid < common_max) {
                    plan.secondary.expunge.push(b.uid);
                } else if filter.wants(b) {
                    fresh.push(Fresh::one(uid, true, b));
                } else {
                    plan.filtered(uid);
                }
            }
            (None, None) => {}
        }
    }
    // dsync_mailbox_import_assign_new_uids: ordered by (GUID, UID) so both sides hand out
    // the same new UIDs from max(UIDNEXT). A GUID match alone never merges two messages.
    fresh.sort_by(|x, y| x.order_key().cmp(&y.order_key()));
    let mut next = p.uid_next.max(s.uid_next);
    let mut filtered = Vec::new();
    for entry in fresh {
        let (uid, from_secondary, m) = match entry {
            Fresh::One {
                uid,
                from_secondary,
                mail,
            } => (uid, from_secondary, mail),
            Fresh::Link { primary, secondary } => {
                let (pu, su) = (primary.uid.0, secondary.uid.0);
                // A UID never used on the other side can be taken there; else a new one.
                let target = if pu >= s.uid_next {
                    Some(pu)
                } else if !primary_writable {
                    None
                } else if su >= p.uid_next {
                    Some(su)
                } else {
                    next += 1;
                    Some(next - 1)
                };
                place_link(&mut plan, primary, secondary, target);
                continue;
            }
        };
        let (own, other, other_next) = if from_secondary {
            (&mut plan.secondary, &mut plan.primary, p.uid_next)
        } else {
            (&mut plan.primary, &mut plan.secondary, s.uid_next)
        };
        let target = if uid >= other_next {
            uid
        } else {
            let t = next;
            next += 1;
            t
        };
        if target != uid {
            own.saves
                .push(save_from(m, Uid(target), SaveSource::Own(Uid(uid))));
            own.expunge.push(Uid(uid));
        }
        // A UID conflict renumbers both messages; the other side copies only a wanted one.
        if filter.wants(m) {
            other
                .saves
                .push(save_from(m, Uid(target), SaveSource::Peer(Uid(uid))));
        } else {
            filtered.push(target);
        }
    }
    for uid in filtered {
        plan.filtered(uid);
    }
    for side in [&mut plan.primary, &mut plan.secondary] {
        side.saves.sort_by_key(|s| s.uid);
        side.expunge.sort();
        side.min_uid_next = next;
    }
    plan
}

/// Moves a linked pair to `target` on both sides (each side renumbers its own copy, no
/// body crosses), with the flags of the copy changed last (higher modseq, the primary on
/// ties). `None` (`sync -1` without a free UID): both keep their UIDs; only flags merge.
fn place_link(
    plan: &mut MailboxPlan,
    primary: &MailChange,
    secondary: &MailChange,
    target: Option<u32>,
) {
    let winner = if secondary.modseq > primary.modseq {
        secondary
    } else {
        primary
    };
    let flags = without_recent(winner.final_flags);
    for (side, own) in [
        (&mut plan.primary, primary),
        (&mut plan.secondary, secondary),
    ] {
        match target {
            Some(t) if t != own.uid.0 => {
                let mut save = save_from(own, Uid(t), SaveSource::Own(own.uid));
                save.flags = flags;
                save.keywords = winner.keywords.clone();
                side.saves.push(save);
                side.expunge.push(own.uid);
            }
            _ if !same_flags(own, winner) => {
                side.flags.push((own.uid, flags, winner.keywords.clone()));
            }
            _ => {}
        }
    }
}

/// True when the secondary can't be made a copy in place: a UID it holds or held means a
/// different message than the primary's (dsync-mailbox-import.c: backup "deletes the whole
/// mailbox"; mailsync then rebuilds it in the same run).
///
/// A source message the filter rejects is not "missing" (dsync_mailbox_find_common_uid asks
/// dsync_mailbox_import_want_change before reverting).
pub fn backup_needs_recreate(p: &SideView, s: &SideView, filter: &MailFilter) -> bool {
    if s.mails.is_empty() {
        return false;
    }
    if s.uid_next > p.uid_next {
        return true;
    }
    if p.uid_validity != s.uid_validity && s.uid_validity_settable {
        // Backends change UIDVALIDITY only of an empty mailbox (Mailbox::update_mailbox):
        // the copy is emptied and takes the source's.
        return true;
    }
    let sm = ByUid::of(&s.mails);
    p.mails.iter().any(|a| match sm.get(&a.uid.0) {
        Some(b) => a.guid != b.guid,
        None => a.uid.0 < s.uid_next && filter.wants(a),
    })
}

/// Backup: the secondary's changes are reverted, its extras expunged, the primary untouched.
pub fn plan_backup(p: &SideView, s: &SideView, filter: &MailFilter) -> MailboxPlan {
    let mut plan = MailboxPlan::default();
    let side = &mut plan.secondary;
    side.min_uid_next = p.uid_next;
    if backup_needs_recreate(p, s, filter) {
        side.recreate = true;
        return plan;
    }
    plan_backup_in_place(p, s, filter)
}

/// Backup without rebuilding: expunge extras and messages whose UID means something else
/// on the source, replace flags, save what is missing (at its UID when still free) and
/// wanted by `filter`. Extras are expunged whatever the filter says (dsync's
/// revert_local_changes expunges local-only mail without asking want_change).
pub fn plan_backup_in_place(p: &SideView, s: &SideView, filter: &MailFilter) -> MailboxPlan {
    let mut plan = MailboxPlan::default();
    let mut filtered = Vec::new();
    let side = &mut plan.secondary;
    side.min_uid_next = p.uid_next;
    if p.uid_validity != s.uid_validity && s.uid_validity_settable {
        side.set_uid_validity = Some(p.uid_validity);
    }
    let pm = ByUid::of(&p.mails);
    let sm = ByUid::of(&s.mails);
    // the saves of the usual backup (the source's messages the destination lacks), sized
    // once instead of doubling
    side.saves
        .reserve(p.mails.len().saturating_sub(s.mails.len()));
    for b in s.mails.iter() {
        match pm.get(&b.uid.0) {
            None => side.expunge.push(b.uid),
            Some(a) if a.guid != b.guid => {
                side.expunge.push(b.uid);
                if filter.wants(a) {
                    side.saves
                        .push(save_from(a, a.uid, SaveSource::Peer(a.uid)));
                } else {
                    filtered.push(a.uid.0);
                }
            }
            Some(a) if !same_flags(a, b) => side.flags.push(flag_target(a)),
            Some(_) => {}
        }
    }
    for a in p.mails.iter() {
        if sm.contains_key(&a.uid.0) {
            continue;
        }
        if filter.wants(a) {
            side.saves
                .push(save_from(a, a.uid, SaveSource::Peer(a.uid)));
        } else {
            filtered.push(a.uid.0);
        }
    }
    side.saves.sort_by_key(|s| s.uid);
    for uid in filtered {
        plan.filtered(uid);
    }
    plan
}

/// The plan for a mailbox in a given kind of run.
pub fn plan_mailbox(
    kind: MergeKind,
    p: &SideView,
    s: &SideView,
    lcu: u32,
    filter: &MailFilter,
    links: &[(Uid, Uid)],
) -> MailboxPlan {
    match kind {
        MergeKind::TwoWay => plan_two_way(p, s, lcu, filter, links),
        MergeKind::OneWay => {
            let mut plan = merge_two_way(p, s, lcu, filter, links, false);
            plan.primary = SidePlan::default();
            plan
        }
        MergeKind::Backup => plan_backup(p, s, filter),
    }
}

/// A mailbox-tree change for one side. Names are hierarchy parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeAction {
    Create {
        name: Vec<String>,
        guid: MailboxGuid,
        uid_validity: u32,
    },
    Delete {
        name: Vec<String>,
        guid: MailboxGuid,
        /// When the other side deleted it (0 = not a copied delete): the time this side's
        /// delete record gets, so that mail saved after the real delete is never taken
        /// for deleted by a later sync with a third copy.
        at: i64,
    },
    Rename {
        guid: MailboxGuid,
        from: Vec<String>,
        to: Vec<String>,
        /// When the winning side renamed it (0 = unknown): the time the log records.
        at: i64,
    },
    /// (name, subscribed, when the winning side changed it (0 = unknown)).
    Subscribe(Vec<String>, bool, i64),
}

/// A mailbox both sides hold after the tree merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxPair {
    /// The final name (the primary's).
    pub name: Vec<String>,
    pub primary_guid: MailboxGuid,
    pub secondary_guid: MailboxGuid,
}

/// The tree merge's result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreePlan {
    pub primary: Vec<TreeAction>,
    pub secondary: Vec<TreeAction>,
    /// Sorted by name.
    pub pairs: Vec<MailboxPair>,
    /// Names of secondary mailboxes left unsynced because the primary uses the name for
    /// another mailbox (the run is then not perfectly in sync).
    pub name_conflicts: Vec<Vec<String>>,
}

/// What one side reported deleted (its `D` item).
#[derive(Clone, Debug, Default)]
pub struct Deletes {
    /// Mailbox log: GUID → time of the delete.
    pub logged: BTreeMap<MailboxGuid, i64>,
    /// Gone since the state: GUID → the state's last common UID.
    pub since_state: BTreeMap<MailboxGuid, u32>,
}

impl Deletes {
    /// True when the other side's mailbox `node` is to be deleted because this side deleted
    /// it — unless it holds mail saved after the delete (or above the state's common UIDs):
    /// mailsync never lets a delete take new mail (Dovecot does, dsync-algorithm.md §2.2).
    fn deletes(&self, node: &TreeNode) -> Option<DeleteEvidence> {
        let guid = node.mailbox_guid?;
        if let Some(ts) = self.logged.get(&guid) {
            return (node.newest_saved_date < *ts).then_some(DeleteEvidence::Logged(*ts));
        }
        if let Some(lcu) = self.since_state.get(&guid) {
            return (node.uid_next <= lcu.saturating_add(1)).then_some(DeleteEvidence::SinceState);
        }
        None
    }
}

/// Why a mailbox counts as deleted by the other side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeleteEvidence {
    /// The other side's mailbox log has a delete record of its GUID, at this time.
    Logged(i64),
    /// The `-s` state knew the GUID and the other side no longer has it. Weaker: a side
    /// that paired its own mailbox by name never held the state's GUID (mbox can't take
    /// the other side's mailbox GUID), so this never stops a pairing by name.
    SinceState,
}

impl DeleteEvidence {
    /// The logged time of the delete (0 = none logged).
    fn time(self) -> i64 {
        match self {
            DeleteEvidence::Logged(t) => t,
            DeleteEvidence::SinceState => 0,
        }
    }
}

/// Compares names with INBOX case-insensitive in the first level.
pub fn name_key(parts: &[String]) -> Vec<String> {
    let mut k = parts.to_vec();
    if let Some(first) = k.first_mut() {
        if first.eq_ignore_ascii_case("INBOX") {
            *first = "INBOX".into();
        }
    }
    k
}

/// Merges the two mailbox trees by mailbox GUID, then by name for mailboxes whose GUID
/// the other side doesn't know (independently created INBOX, a pre-created destination).
/// `deleted_by_*` are the GUIDs each side reported in its `D` item.
pub fn plan_tree(
    kind: MergeKind,
    p: &[TreeNode],
    s: &[TreeNode],
    deleted_by_p: &Deletes,
    deleted_by_s: &Deletes,
) -> TreePlan {
    let mut plan = TreePlan::default();
    // (name, GUID, UIDVALIDITY, deleted by the other side); INBOX is never deleted.
    type BoxEntry = (Vec<String>, MailboxGuid, u32, Option<DeleteEvidence>);
    let boxes = |nodes: &[TreeNode], other: &Deletes| -> Vec<BoxEntry> {
        nodes
            .iter()
            .filter(|n| n.existence == super::items::Existence::Exists)
            .filter_map(|n| {
                let name = name_key(&n.name);
                let is_inbox = name.len() == 1 && name[0] == "INBOX";
                let deleted = other.deletes(n).filter(|_| !is_inbox);
                n.mailbox_guid.map(|g| (name, g, n.uid_validity, deleted))
            })
            .collect()
    };
    let renamed_at = |nodes: &[TreeNode]| -> BTreeMap<MailboxGuid, i64> {
        nodes
            .iter()
            .filter_map(|n| n.mailbox_guid.map(|g| (g, n.last_renamed_or_created)))
            .collect()
    };
    let p_renamed = renamed_at(p);
    let s_renamed = renamed_at(s);
    let pb = boxes(p, deleted_by_s);
    let sb = boxes(s, deleted_by_p);
    let s_by_guid: BTreeMap<MailboxGuid, usize> =
        sb.iter().enumerate().map(|(i, b)| (b.1, i)).collect();
    let p_guids: BTreeSet<MailboxGuid> = pb.iter().map(|b| b.1).collect();
    let mut s_used = vec![false; sb.len()];
    let mut p_unpaired = Vec::new();
    for (pi, (name, guid, _, _)) in pb.iter().enumerate() {
        if let Some(&si) = s_by_guid.get(guid) {
            s_used[si] = true;
            let mut final_name = name.clone();
            if sb[si].0 != *name {
                // Two names for one mailbox: the later rename wins, the primary on ties
                // and in one-way runs (dsync-mailbox-tree-sync.c sync_rename_lower_ts
                // compares last_renamed_or_created).
                let theirs_later = s_renamed.get(guid).copied().unwrap_or(0)
                    > p_renamed.get(guid).copied().unwrap_or(0);
                if kind == MergeKind::TwoWay && theirs_later {
                    final_name = sb[si].0.clone();
                    plan.primary.push(TreeAction::Rename {
                        guid: *guid,
                        from: name.clone(),
                        to: final_name.clone(),
                        at: s_renamed.get(guid).copied().unwrap_or(0),
                    });
                } else {
                    plan.secondary.push(TreeAction::Rename {
                        guid: *guid,
                        from: sb[si].0.clone(),
                        to: name.clone(),
                        at: p_renamed.get(guid).copied().unwrap_or(0),
                    });
                }
            }
            plan.pairs.push(MailboxPair {
                name: final_name,
                primary_guid: *guid,
                secondary_guid: *guid,
            });
        } else {
            p_unpaired.push(pi);
        }
    }
    // Names the secondary will hold after its renames are the primary's names.
    for pi in p_unpaired {
        let (name, guid, uv, deleted_on_s) = &pb[pi];
        // Not a mailbox the other side deleted: a mailbox deleted and created again under
        // its name is another mailbox, and pairing them would bring the deleted mail back.
        let same_name = sb.iter().enumerate().find(|(si, b)| {
            !s_used[*si]
                && b.0 == *name
                && !p_guids.contains(&b.1)
                && !matches!(b.3, Some(DeleteEvidence::Logged(_)))
                && !matches!(deleted_on_s, Some(DeleteEvidence::Logged(_)))
        });
        if let Some((si, b)) = same_name {
            let is_inbox = name.len() == 1 && name[0] == "INBOX";
            if kind == MergeKind::Backup && !is_inbox {
                // Backup: the copy gets the source's mailbox GUID.
                s_used[si] = true;
                plan.secondary.push(TreeAction::Delete {
                    name: b.0.clone(),
                    guid: b.1,
                    at: 0,
                });
                plan.secondary.push(TreeAction::Create {
                    name: name.clone(),
                    guid: *guid,
                    uid_validity: *uv,
                });
                plan.pairs.push(MailboxPair {
                    name: name.clone(),
                    primary_guid: *guid,
                    secondary_guid: *guid,
                });
            } else {
                // Deliberate deviation from Dovecot (which swaps the GUIDs forever, §2.3
                // step 6): the two mailboxes are merged by name and keep their GUIDs.
                s_used[si] = true;
                plan.pairs.push(MailboxPair {
                    name: name.clone(),
                    primary_guid: *guid,
                    secondary_guid: b.1,
                });
            }
            continue;
        }
        if kind == MergeKind::TwoWay && deleted_on_s.is_some() {
            plan.primary.push(TreeAction::Delete {
                name: name.clone(),
                guid: *guid,
                at: deleted_on_s.map_or(0, DeleteEvidence::time),
            });
            continue;
        }
        plan.secondary.push(TreeAction::Create {
            name: name.clone(),
            guid: *guid,
            uid_validity: *uv,
        });
        plan.pairs.push(MailboxPair {
            name: name.clone(),
            primary_guid: *guid,
            secondary_guid: *guid,
        });
    }
    for (si, (name, guid, uv, deleted_on_p)) in sb.iter().enumerate() {
        if s_used[si] {
            continue;
        }
        let is_inbox = name.len() == 1 && name[0] == "INBOX";
        match kind {
            MergeKind::Backup if !is_inbox => plan.secondary.push(TreeAction::Delete {
                name: name.clone(),
                guid: *guid,
                at: deleted_on_p.map_or(0, DeleteEvidence::time),
            }),
            MergeKind::Backup | MergeKind::OneWay => {}
            MergeKind::TwoWay => {
                if deleted_on_p.is_some() {
                    plan.secondary.push(TreeAction::Delete {
                        name: name.clone(),
                        guid: *guid,
                        at: deleted_on_p.map_or(0, DeleteEvidence::time),
                    });
                } else if plan.pairs.iter().any(|pair| pair.name == *name) {
                    // The name stays taken on the primary by another mailbox (after its
                    // renames): the secondary's mailbox can't be created under it.
                    plan.name_conflicts.push(name.clone());
                } else {
                    plan.primary.push(TreeAction::Create {
                        name: name.clone(),
                        guid: *guid,
                        uid_validity: *uv,
                    });
                    plan.pairs.push(MailboxPair {
                        name: name.clone(),
                        primary_guid: *guid,
                        secondary_guid: *guid,
                    });
                }
            }
        }
    }
    // Subscriptions: two-way, a name subscribed on one side only is unsubscribed where
    // the side without it changed the subscription later, else subscribed there (the
    // primary on ties; last_subscription_change); backup mirrors; one-way adds.
    let subs = |nodes: &[TreeNode]| -> BTreeSet<Vec<String>> {
        nodes
            .iter()
            .filter(|n| n.subscribed)
            .map(|n| name_key(&n.name))
            .collect()
    };
    let changed_at = |nodes: &[TreeNode]| -> BTreeMap<Vec<String>, i64> {
        nodes
            .iter()
            .map(|n| (name_key(&n.name), n.last_subscription_change))
            .collect()
    };
    let (p_changed, s_changed) = (changed_at(p), changed_at(s));
    let at = |m: &BTreeMap<Vec<String>, i64>, n: &Vec<String>| m.get(n).copied().unwrap_or(0);
    let ps = subs(p);
    let ss = subs(s);
    for n in ps.difference(&ss) {
        let (p_at, s_at) = (at(&p_changed, n), at(&s_changed, n));
        if kind == MergeKind::TwoWay && s_at > p_at {
            plan.primary
                .push(TreeAction::Subscribe(n.clone(), false, s_at));
        } else {
            plan.secondary
                .push(TreeAction::Subscribe(n.clone(), true, p_at));
        }
    }
    match kind {
        MergeKind::TwoWay => {
            for n in ss.difference(&ps) {
                let (p_at, s_at) = (at(&p_changed, n), at(&s_changed, n));
                if p_at >= s_at && p_at > 0 {
                    plan.secondary
                        .push(TreeAction::Subscribe(n.clone(), false, p_at));
                } else {
                    plan.primary
                        .push(TreeAction::Subscribe(n.clone(), true, s_at));
                }
            }
        }
        MergeKind::Backup => {
            for n in ss.difference(&ps) {
                let p_at = at(&p_changed, n);
                plan.secondary
                    .push(TreeAction::Subscribe(n.clone(), false, p_at));
            }
        }
        MergeKind::OneWay => {}
    }
    if kind != MergeKind::TwoWay {
        plan.primary.clear();
    }
    // Deletes and renames free names before creates take them.
    for actions in [&mut plan.primary, &mut plan.secondary] {
        actions.sort_by_key(|a| match a {
            TreeAction::Delete { .. } => 0,
            TreeAction::Rename { .. } => 1,
            TreeAction::Create { .. } => 2,
            TreeAction::Subscribe(..) => 3,
        });
    }
    plan.pairs.sort_by(|a, b| a.name.cmp(&b.name));
    plan
}

/// Splits the mailbox pairs of a run between two lanes that sync at the same time (the
/// engine's second lane, `Store::second_handle`): the indexes into `pairs` of each lane,
/// ascending. A pair weighs its larger UIDNEXT in the two trees (the messages it has held:
/// what a full sync reads and writes); the heaviest pairs go first, each to the lane with
/// less weight so far (on a tie, the one with fewer pairs, then the earlier). Both brains
/// evaluate it on the same trees, so each knows which of its mailboxes the other lane will
/// sync; and whatever the weights, the second lane is empty only when there are fewer
/// than two pairs, which the brains agree on by the tree plan alone.
pub fn lanes(
    pairs: &[MailboxPair],
    primary_nodes: &[TreeNode],
    secondary_nodes: &[TreeNode],
) -> [Vec<usize>; 2] {
    let uid_next = |nodes: &[TreeNode], guid: MailboxGuid| {
        nodes
            .iter()
            .filter(|n| n.mailbox_guid == Some(guid))
            .map(|n| u64::from(n.uid_next))
            .max()
            .unwrap_or(0)
    };
    let mut by_weight: Vec<(u64, usize)> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let weight = uid_next(primary_nodes, p.primary_guid)
                .max(uid_next(secondary_nodes, p.secondary_guid));
            (weight, i)
        })
        .collect();
    by_weight.sort_by_key(|&(weight, i)| (std::cmp::Reverse(weight), i));
    let mut lanes: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    let mut load = [0u64; 2];
    for (weight, i) in by_weight {
        let lane = usize::from((load[1], lanes[1].len()) < (load[0], lanes[0].len()));
        load[lane] += weight;
        lanes[lane].push(i);
    }
    for lane in &mut lanes {
        lane.sort_unstable();
    }
    lanes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::items::ChangeType;

    #[test]
    fn lanes_give_each_pair_to_the_lighter_lane_heaviest_first() {
        let guid = |b: u8| MailboxGuid([b; 16]);
        let node = |g: u8, uid_next: u32| TreeNode {
            name: vec![format!("box{g}")],
            existence: crate::sync::items::Existence::Exists,
            mailbox_guid: Some(guid(g)),
            uid_validity: 1,
            uid_next,
            subscribed: false,
            newest_saved_date: 0,
            last_renamed_or_created: 0,
            last_subscription_change: 0,
        };
        let pair = |g: u8| MailboxPair {
            name: vec![format!("box{g}")],
            primary_guid: guid(g),
            secondary_guid: guid(g + 100),
        };
        let pairs: Vec<MailboxPair> = (1..=5).map(pair).collect();
        // box1 weighs its secondary's 17,001 (a destination that held more), box4 nothing
        let primary = [node(1, 3), node(2, 4216), node(3, 2658), node(5, 2764)];
        let secondary = [node(101, 17001), node(103, 10)];
        // by weight: box1 17001 -> lane 0; box2 4216 -> lane 1; box5 2764 -> lane 1
        // (6980); box3 2658 -> lane 1 (9638); box4 0 -> lane 1 (lighter)
        assert_eq!(
            lanes(&pairs, &primary, &secondary),
            [vec![0], vec![1, 2, 3, 4]]
        );
        // a tie goes to the earlier lane, and each lane keeps the pairs' order
        let even = [node(1, 10), node(2, 10), node(3, 10), node(4, 10)];
        assert_eq!(lanes(&pairs[..4], &even, &[]), [vec![0, 2], vec![1, 3]]);
        assert_eq!(lanes(&[], &even, &[]), [Vec::<usize>::new(), Vec::new()]);
        // weights unknown on both sides (nodes without these GUIDs): the pairs still
        // alternate, so two or more pairs always give the second lane some
        assert_eq!(lanes(&pairs[..3], &[], &[]), [vec![0, 2], vec![1]]);
        assert_eq!(lanes(&pairs[..1], &[], &[]), [vec![0], Vec::new()]);
    }

    fn mail(uid: u32, guid: &str) -> MailChange {
        MailChange::bare(ChangeType::Save, Uid(uid), Some(Guid::from_bytes(guid)))
    }

    fn guid_at(m: Option<&MailChange>) -> Option<&[u8]> {
        m.and_then(|m| m.guid.as_ref()).map(|g| g.as_bytes())
    }

    #[test]
    fn by_uid_sorts_and_keeps_the_last_of_one_uid_as_a_map_would() {
        let mails = [mail(5, "a"), mail(2, "b"), mail(5, "c"), mail(9, "d")];
        let by_uid = ByUid::of(&mails);
        let uids: Vec<u32> = by_uid.0.iter().map(|(uid, _)| *uid).collect();
        assert_eq!(uids, [2, 5, 9]);
        assert_eq!(guid_at(by_uid.get(&5)), Some(&b"c"[..]));
        assert!(by_uid.contains_key(&9));
        assert!(!by_uid.contains_key(&3));
    }

    #[test]
    fn a_cursor_finds_what_a_search_finds_in_any_order_asked() {
        let mails = [mail(2, "b"), mail(5, "c"), mail(9, "d"), mail(12, "e")];
        let by_uid = ByUid::of(&mails);
        let mut cursor = 0;
        for uid in [1, 2, 3, 5, 5, 4, 9, 13, 12, 2, 20] {
            assert_eq!(
                guid_at(by_uid.seek(&mut cursor, uid)),
                guid_at(by_uid.get(&uid)),
                "uid {uid}"
            );
        }
    }

    #[test]
    fn the_same_keywords_in_another_order_are_the_same_flags() {
        let mut a = mail(1, "a");
        let mut b = mail(1, "a");
        a.keywords = vec![Keyword::new("$Label1"), Keyword::new("work")];
        b.keywords = vec![Keyword::new("work"), Keyword::new("$Label1")];
        assert!(same_flags(&a, &b));
        b.keywords = vec![Keyword::new("work")];
        assert!(!same_flags(&a, &b));
    }

    #[test]
    fn uid_pairs_list_every_uid_of_both_views_once_in_order() {
        let p = [mail(1, "a"), mail(3, "b"), mail(7, "c")];
        let s = [mail(2, "x"), mail(3, "y"), mail(8, "z")];
        let (pm, sm) = (ByUid::of(&p), ByUid::of(&s));
        type Shown<'a> = (u32, Option<&'a [u8]>, Option<&'a [u8]>);
        let pairs: Vec<Shown> = uid_pairs(&pm, &sm)
            .into_iter()
            .map(|(uid, a, b)| (uid, guid_at(a), guid_at(b)))
            .collect();
        assert_eq!(
            pairs,
            [
                (1, Some(&b"a"[..]), None),
                (2, None, Some(&b"x"[..])),
                (3, Some(&b"b"[..]), Some(&b"y"[..])),
                (7, Some(&b"c"[..]), None),
                (8, None, Some(&b"z"[..])),
            ]
        );
        assert!(uid_pairs(&ByUid::of(&[]), &ByUid::of(&[])).is_empty());
    }

    fn view(mails: Vec<MailChange>) -> SideView {
        SideView {
            uid_validity: 1,
            uid_validity_settable: false,
            uid_next: 100,
            mails: Arc::new(mails),
            expunged: None,
            logged: Vec::new(),
            dates_left_out: false,
        }
    }

    #[test]
    fn a_local_copy_is_the_first_local_message_with_the_guid_that_stays() {
        // the secondary holds "g" at 3 (the plan expunges it) and at 5 and 6, "h" nowhere
        let s = view(vec![mail(3, "g"), mail(5, "g"), mail(6, "g"), mail(7, "x")]);
        let p = view(vec![mail(10, "g"), mail(11, "h")]);
        let mut plan = MailboxPlan::default();
        plan.secondary.expunge.push(Uid(3));
        for m in p.mails.iter() {
            plan.secondary
                .saves
                .push(save_from(m, m.uid, SaveSource::Peer(m.uid)));
        }
        // a save of the secondary's own message is no peer save: no candidate of its own
        plan.secondary
            .saves
            .push(save_from(&s.mails[3], Uid(12), SaveSource::Own(Uid(7))));
        assert_eq!(
            local_copy_candidates(&plan, &p, &s),
            [(true, Uid(10), Uid(5))]
        );
        // nothing saved from the peer: nothing to copy locally
        assert!(local_copy_candidates(&MailboxPlan::default(), &p, &s).is_empty());
    }
}
