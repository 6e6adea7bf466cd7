//! What an open mdbox mailbox keeps of its index view: per message its UID, system flags,
//! keywords, modseq and `mdbox` record (map UID, save date) — about 40 bytes a message —
//! and per mailbox where POP3 data can be (`mdbox-hdr` flags, `hdr-pop3-uidl`),
//! instead of the whole `View`, which holds the index and every transaction log of the
//! mailbox decoded (5–10 times the files' size: ~19 MiB for the five mailboxes of the
//! 28,000-message benchmark store, all kept open by the sync engine at once).
//!
//! Everything is taken from the view through its own accessors (`Message::modseq`,
//! `Message::keywords`, `View::highest_modseq`, `View::changes_since`), so the rules stay
//! in mailsync-index. `changes_since` needs the logs: the view is read again when it is
//! asked (a mailbox skipped as unchanged never is), and used only if it is the state the
//! snapshot was taken from (same indexid and replay end position in the log).

use std::collections::HashMap;

use mailstore::{Changes, Flags, Keyword, ModSeq};
use mailsync_index::format::ext::{self, MdboxRecord};
use mailsync_index::View;

use crate::layout::DboxKind;
use crate::pop3::Pop3Gate;
use crate::sdbox::IndexCounters;

/// One message of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapMessage {
    pub uid: u32,
    /// The IMAP system flags.
    pub flags: Flags,
    /// MODSEQ as the view reports it (mail_index_modseq_lookup).
    pub modseq: u64,
    /// The `mdbox` record; None when the message has none.
    pub mdbox: Option<MdboxRecord>,
    /// Its keywords: an index into [`Snapshot::keyword_sets`] (0: none).
    keyword_set: u32,
}

/// Whether `changes_since` can be answered, known without the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum History {
    /// The view had no log: only "nothing changed since HIGHESTMODSEQ" can be answered.
    NoLogs,
    /// The initial modseq of the oldest usable log (the last one starting a history):
    /// anything older can't be answered (0: modseqs weren't tracked).
    Since(u64),
    /// The view read the head log only from a later point (`View::open_recent`): the
    /// history must be read again to tell how far back it goes.
    Partial,
}

/// The state of a mailbox index view, compact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub counters: IndexCounters,
    /// The index has the `modseq` extension: messages have their own MODSEQs.
    pub modseqs_tracked: bool,
    /// Where POP3 data can be: the `mdbox-hdr` flags and `hdr-pop3-uidl`.
    pub pop3: Pop3Gate,
    /// indexid and (head log file_seq, offset) where the view's replay ended: what
    /// identifies the state.
    indexid: u32,
    log_position: (u32, u64),
    history: History,
    /// Keyword names in index order, each shared by the records that have it (a clone,
    /// no copy of the name).
    keywords: Vec<Keyword>,
    /// The distinct keyword sets of the messages (indexes into `keywords`, in the view's
    /// order), the empty set first: messages share a few sets, so a message holds no
    /// allocation of its own.
    keyword_sets: Vec<Box<[u32]>>,
    /// Ascending by UID.
    pub messages: Vec<SnapMessage>,
}

impl Snapshot {
    pub(crate) fn of(view: &View) -> Snapshot {
        let keywords: Vec<Keyword> = view.keywords().iter().map(Keyword::new).collect();
        let mut keyword_sets: Vec<Box<[u32]>> = vec![Box::new([])];
        let mut set_ids: HashMap<Box<[u32]>, u32> = HashMap::new();
        let mut set: Vec<u32> = Vec::new();
        let messages = view
            .messages()
            .map(|m| {
                set.clear();
                // positions in the view's list, as Message::keywords reads them (one past
                // its end names nothing)
                set.extend(
                    m.keyword_indexes()
                        .into_iter()
                        .filter(|&i| i < keywords.len())
                        .map(|i| i as u32),
                );
                let keyword_set = if set.is_empty() {
                    0
                } else if let Some(&id) = set_ids.get(set.as_slice()) {
                    id
                } else {
                    let id = keyword_sets.len() as u32;
                    keyword_sets.push(set.as_slice().into());
                    set_ids.insert(set.as_slice().into(), id);
                    id
                };
                SnapMessage {
                    uid: m.uid(),
                    flags: m.system_flags(),
                    modseq: m.modseq(),
                    mdbox: m.ext(ext::MDBOX).map(MdboxRecord::decode),
                    keyword_set,
                }
            })
            .collect();
        // the rule of View::changes_since (mailsync-index changes.rs) for when the logs
        // can't reach back to a modseq
        let logs = view.logs();
        let history = if logs.is_empty() {
            History::NoLogs
        } else {
            let oldest = &logs[mailsync_index::format::log::history_start(logs)];
            if oldest.read_from_later_offset() {
                History::Partial
            } else {
                History::Since(oldest.first_modseq)
            }
        };
        Snapshot {
            counters: IndexCounters::of(view),
            modseqs_tracked: view.modseq_header().is_some(),
            pop3: Pop3Gate::of(view, DboxKind::Multi),
            indexid: view.indexid(),
            log_position: view.log_position(),
            history,
            keywords,
            keyword_sets,
            messages,
        }
    }

    /// No message, no counters: what a mailbox holds until it reads its view.
    pub(crate) fn empty() -> Snapshot {
        Snapshot {
            counters: IndexCounters::default(),
            modseqs_tracked: false,
            pop3: Pop3Gate::default(),
            indexid: 0,
            log_position: (0, 0),
            history: History::NoLogs,
            keywords: Vec::new(),
            keyword_sets: vec![Box::new([])],
            messages: Vec::new(),
        }
    }

    /// indexid and where the view's replay ended: the state the snapshot is of.
    pub(crate) fn state(&self) -> mailsync_index::header_view::IndexState {
        (self.indexid, self.log_position)
    }

    /// The message with `uid`.
    pub(crate) fn message(&self, uid: u32) -> Option<&SnapMessage> {
        self.messages
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .map(|i| &self.messages[i])
    }

    /// The keyword names of a message, in index order.
    pub(crate) fn keywords_of(&self, m: &SnapMessage) -> Vec<Keyword> {
        let set = self.keyword_sets.get(m.keyword_set as usize);
        set.into_iter()
            .flat_map(|s| s.iter())
            .filter_map(|&i| self.keywords.get(i as usize))
            .cloned()
            .collect()
    }

    /// `changes_since` when the snapshot alone knows the answer: `Unknown` for a modseq
    /// the logs don't reach back to, and the answer of a view without logs. None when the
    /// logs must be read.
    pub(crate) fn changes_known(&self, since: ModSeq) -> Option<Changes> {
        let highest = self.counters.highest_modseq;
        match self.history {
            History::NoLogs if since.0 >= highest && highest > 0 => Some(Changes::Known {
                changed: Vec::new(),
                expunged: Vec::new(),
                highest_modseq: ModSeq(highest),
            }),
            History::NoLogs => Some(Changes::Unknown),
            History::Since(first) if first == 0 || since.0 < first => Some(Changes::Unknown),
            History::Since(_) | History::Partial => None,
        }
    }

    /// True when the snapshot was taken of the index `indexid` with its logs ending at
    /// `log_position`.
    pub(crate) fn is_at(&self, indexid: u32, log_position: (u32, u64)) -> bool {
        indexid == self.indexid && log_position == self.log_position
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::INDEX_PREFIX;
    use crate::sdbox::{mail_record, record_from, status_from, status_of, FileInfo};
    use crate::DboxStore;
    use mailstore::{FlagOp, FlagUpdate, Guid, Location, MailboxGuid, NewMail, Store, Uid};
    use mailsync_index::IndexWriter;
    use std::path::{Path, PathBuf};

    /// Every mailbox index directory under `root` (a dbox `mailboxes/` tree).
    fn index_dirs(root: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(root).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().unwrap() == "dbox-Mails" {
                    out.push(p);
                } else {
                    index_dirs(&p, out);
                }
            }
        }
    }

    /// The snapshot gives what the view gives: records, status, the `mdbox` records, and
    /// `changes_since` for every modseq up to past the highest.
    fn assert_same_as_view(view: &View, what: &str) {
        let snap = Snapshot::of(view);
        assert!(snap.is_at(view.indexid(), view.log_position()), "{what}");
        let info = FileInfo {
            guid: mailstore::Guid::from_bytes(b"0123456789abcdef0123456789abcdef"),
            received: 1,
            saved: 2,
            physical: 3,
            vsize: Some(4),
            body_offset: 5,
            pop3: None,
        };
        assert_eq!(snap.messages.len(), view.messages_count(), "{what}");
        for (m, s) in view.messages().zip(&snap.messages) {
            let from_snap = record_from(
                snap.counters.first_recent_uid,
                s.uid,
                s.flags,
                snap.keywords_of(s),
                s.modseq,
                info.clone().into(),
            );
            assert_eq!(from_snap, mail_record(view, &m, &info), "{what}");
            assert_eq!(
                s.mdbox,
                m.ext(ext::MDBOX).map(MdboxRecord::decode),
                "{what}"
            );
            assert_eq!(snap.message(s.uid), Some(s), "{what}");
        }
        let guid = MailboxGuid([7; 16]);
        let sizes = || [(10u64, 20i64), (30, 40)].into_iter();
        assert_eq!(
            status_from(
                &snap.counters,
                snap.messages.iter().map(|m| (m.uid, m.flags)),
                guid,
                sizes(),
                None
            ),
            status_of(view, guid, sizes(), None),
            "{what}"
        );
        for since in 0..=view.highest_modseq() + 2 {
            let want = view.changes_since(ModSeq(since));
            let got = snap
                .changes_known(ModSeq(since))
                .unwrap_or_else(|| view.changes_since(ModSeq(since)));
            assert_eq!(got, want, "{what}: since {since}");
        }
    }

    #[test]
    fn a_snapshot_of_a_dovecot_written_store_answers_as_its_view() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/mdbox/mailboxes");
        let mut dirs = Vec::new();
        index_dirs(&root, &mut dirs);
        assert!(dirs.len() >= 4);
        for dir in dirs {
            let view = View::open(&dir, INDEX_PREFIX).unwrap();
            assert_same_as_view(&view, &dir.display().to_string());
        }
    }

    #[test]
    fn a_snapshot_answers_as_its_view_after_flags_keywords_expunges_and_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let loc = Location::parse("mdbox:~/mdbox", Some(tmp.path())).unwrap();
        let store = DboxStore::open(&loc, &Default::default()).unwrap();
        let mut mb = store.open_mailbox("INBOX").unwrap();
        let dir = tmp.path().join("mdbox/mailboxes/INBOX/dbox-Mails");
        let save = |mb: &mut Box<dyn mailstore::Mailbox>, n: usize| -> Vec<Uid> {
            let mut t = mb.begin().unwrap();
            for i in 0..n {
                let mail = NewMail {
                    guid: Some(Guid::from_bytes(format!("g{i}-{}", rand_tag()))),
                    keywords: if i % 2 == 0 {
                        vec![mailstore::Keyword::new(&b"$Label1"[..])]
                    } else {
                        Vec::new()
                    },
                    ..NewMail::default()
                };
                t.save(mail, &mut &b"Subject: x\n\nbody\n"[..]).unwrap();
            }
            t.commit().unwrap().saved
        };
        let uids = save(&mut mb, 6);
        let mut t = mb.begin().unwrap();
        t.update_flags(
            uids[1],
            &FlagUpdate {
                op: FlagOp::Add,
                flags: Flags::SEEN | Flags::FLAGGED,
                keywords: vec![mailstore::Keyword::new(&b"Work"[..])],
            },
        )
        .unwrap();
        t.expunge(uids[2]).unwrap();
        t.commit().unwrap();
        let view = || View::open(&dir, INDEX_PREFIX).unwrap();
        assert_same_as_view(&view(), "one log");

        // a rotated log: the history spans log.2 and the head log
        IndexWriter::open(&dir, INDEX_PREFIX).rotate().unwrap();
        let more = save(&mut mb, 2);
        let mut t = mb.begin().unwrap();
        t.expunge(uids[0]).unwrap();
        t.expunge(more[1]).unwrap();
        t.commit().unwrap();
        let v = view();
        assert_eq!(v.logs().len(), 2);
        assert_same_as_view(&v, "rotated");
        let snap = Snapshot::of(&v);

        // a change later: the snapshot is no longer the view's state
        let mut t = mb.begin().unwrap();
        t.expunge(uids[3]).unwrap();
        t.commit().unwrap();
        let v = view();
        assert!(!snap.is_at(v.indexid(), v.log_position()));

        // no log at all: P alone
        IndexWriter::open(&dir, INDEX_PREFIX).write_index().unwrap();
        for p in ["dovecot.index.log", "dovecot.index.log.2"] {
            let _ = std::fs::remove_file(dir.join(p));
        }
        let v = view();
        assert!(v.logs().is_empty());
        assert_same_as_view(&v, "no log");
    }

    fn rand_tag() -> String {
        MailboxGuid::generate().to_string()
    }
}
