//! `LogHistory`: the logs of an index read without `P` answer "what changed since" exactly
//! as the full `View` does, across a rotation (history in `P.log.2` and `P.log`).

use mailstore::{Changes, ModSeq, Uid};
use mailsync_index::format::index::rec_flag;
use mailsync_index::{IndexPaths, IndexWriter, LogHistory, View};

/// Asserts the history answers as the view for every modseq up to the highest.
fn same_answers(w: &IndexWriter, what: &str) {
    let view = w.view().unwrap();
    let history = LogHistory::read(w.paths()).unwrap().expect("a log");
    assert_eq!(history.indexid(), view.indexid(), "{what}");
    assert_eq!(history.log_position(), view.log_position(), "{what}");
    let present: Vec<u32> = view.messages().map(|m| m.uid()).collect();
    let all: Vec<Uid> = (1..=view.next_uid()).map(Uid).collect();
    // the comparison covers real answers, not only "unknown" and "nothing"
    assert!(matches!(
        view.changes_since(ModSeq(1)),
        Changes::Known { changed, .. } if !changed.is_empty()
    ));
    assert!(!view.flag_changes_since(ModSeq(1), &all).is_empty());
    for since in 0..=view.highest_modseq() + 1 {
        assert_eq!(
            history.changes_since(ModSeq(since), view.highest_modseq(), present.clone()),
            view.changes_since(ModSeq(since)),
            "{what}: changes since {since}"
        );
        assert_eq!(
            history.flag_changes_since(ModSeq(since), &all, |uid| present.contains(&uid)),
            view.flag_changes_since(ModSeq(since), &all),
            "{what}: flag changes since {since}"
        );
    }
}

#[test]
fn the_logs_alone_answer_as_the_full_view() {
    let dir = tempfile::tempdir().unwrap();
    let w = IndexWriter::open(dir.path(), "dovecot.index");
    w.create(4242).unwrap();
    mailsync_index::locked_commit::enable_modseqs(&w).unwrap();
    let mut t = w.begin().external(true);
    for uid in 1..=6 {
        t.append(uid, 0);
    }
    t.commit().unwrap();
    let mut t = w.begin();
    t.flags(2, 3, rec_flag::SEEN, 0);
    t.keywords(true, b"$Label1", &[1, 4]);
    t.commit().unwrap();
    // a change copied from another replica: left out of the flag changes
    let mut t = w.begin().sync(true);
    t.flags(5, 5, rec_flag::FLAGGED, 0);
    t.commit().unwrap();
    same_answers(&w, "one log");

    w.rotate().unwrap();
    let mut t = w.begin().external(true);
    t.expunge_guid(4, [7; 16]);
    t.append(7, rec_flag::SEEN);
    t.commit().unwrap();
    let mut t = w.begin();
    t.flags(1, 1, 0, rec_flag::SEEN);
    t.keywords(false, b"$Label1", &[1]);
    t.commit().unwrap();
    same_answers(&w, "after a rotation");
    let history = LogHistory::read(w.paths()).unwrap().unwrap();
    assert_eq!(history.logs().len(), 2, "P.log.2 and P.log");

    // no log: no history
    std::fs::remove_file(IndexPaths::new(dir.path(), "dovecot.index").log()).unwrap();
    assert!(LogHistory::read(w.paths()).unwrap().is_none());
    View::open(dir.path(), "dovecot.index").unwrap();
}
