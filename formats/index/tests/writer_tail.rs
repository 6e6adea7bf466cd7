//! A writer's view reads the head log only from where `P`'s `modseq` header says modseq
//! tracking stopped (Dovecot's mail_transaction_log_file_skip_to_head), and is then the
//! same view as one built from the whole log; when `P` can't say so, every record is read.

use std::path::Path;

use mailsync_index::format::index::rec_flag;
use mailsync_index::format::log::rec_type;
use mailsync_index::locked_commit::{commit_locked, enable_modseqs};
use mailsync_index::{Error, HeaderView, IndexPaths, IndexWriter, LogHistory, View};

/// An index with modseqs whose head log holds 40 messages, flag and keyword changes and
/// a HIGHESTMODSEQ raise, written to `P` (the tail offset then moved to the log's end),
/// and then more changes past `P`, requests among them.
fn written_then_changed(dir: &Path) -> IndexWriter {
    let w = IndexWriter::open(dir, "dovecot.index");
    w.create(4242).unwrap();
    enable_modseqs(&w).unwrap();
    let mut t = w.begin().external(true);
    for uid in 1..=40 {
        t.append(uid, 0);
    }
    t.commit().unwrap();
    // as a backend logs the changes it made to its files: EXTERNAL, so nothing waits
    // past the tail offset, which the housekeeping moves to the log's end
    for uid in (2..=40).step_by(3) {
        let mut t = w.begin().external(true);
        t.flags(uid, uid, rec_flag::SEEN, 0);
        t.commit().unwrap();
    }
    let mut t = w.begin().external(true);
    t.keywords(true, b"$Label1", &[3, 7, 9]);
    t.commit().unwrap();
    let mut t = w.begin().external(true);
    t.modseq_update(0, 500);
    t.commit().unwrap();
    w.write_index().unwrap();
    w.sync_housekeeping().unwrap();
    let mut t = w.begin();
    t.flags(5, 6, rec_flag::FLAGGED, 0);
    t.keywords(false, b"$Label1", &[7]);
    t.commit().unwrap();
    let mut t = w.begin().external(true);
    t.append(41, rec_flag::SEEN);
    t.commit().unwrap();
    w
}

/// What a view says: `P` as replayed, HIGHESTMODSEQ, the log's modseq counter, the log
/// position, and every message's (UID, modseq).
type State = (Vec<u8>, u64, u64, (u32, u64), Vec<(u32, u64)>);

fn state(v: &View) -> State {
    (
        v.index_file().encode(),
        v.highest_modseq(),
        v.log_modseq(),
        v.log_position(),
        v.messages()
            .map(|m| m.uid())
            .zip(v.messages().map(|m| m.modseq()))
            .collect(),
    )
}

/// The writer's view (inside a commit that writes nothing) and where its head log's
/// records start.
fn writer_view(w: &IndexWriter) -> (State, u64) {
    let (seen, _) = commit_locked(w, true, |v, _| {
        Ok::<_, Error>((state(v), v.logs().last().unwrap().first_offset))
    })
    .unwrap();
    seen
}

#[test]
fn a_writer_reads_the_head_log_from_the_modseq_header_and_sees_what_a_full_read_sees() {
    let dir = tempfile::tempdir().unwrap();
    let w = written_then_changed(dir.path());
    let full = View::open(dir.path(), "dovecot.index").unwrap();
    assert_eq!(
        full.logs()[0].first_offset,
        full.logs()[0].header.hdr_size as u64
    );
    let (seen, first_offset) = writer_view(&w);
    let modseq_offset = full.index_file().header().log_file_head_offset as u64;
    // P as on disk (the full view replays past it) names where the writer started
    let p = std::fs::read(IndexPaths::new(dir.path(), "dovecot.index").index()).unwrap();
    let on_disk = mailsync_index::format::index::IndexFile::decode(&p, Path::new("P")).unwrap();
    let m = on_disk
        .ext(mailsync_index::format::ext::MODSEQ)
        .and_then(|e| mailsync_index::format::ext::ModseqHeader::decode(&e.data))
        .unwrap();
    assert_eq!(
        first_offset, m.log_offset as u64,
        "read from the modseq header's offset"
    );
    assert!(first_offset > full.logs()[0].header.hdr_size as u64);
    assert!(first_offset < modseq_offset, "changes past P were logged");
    assert_eq!(seen, state(&full));
    // and what the writer then commits is what a full read would have built on
    let mut t = w.begin();
    t.flags(41, 41, rec_flag::ANSWERED, 0);
    t.commit().unwrap();
    let after = View::open(dir.path(), "dovecot.index").unwrap();
    let msg = after.message(41).unwrap();
    assert_eq!(msg.flags() & rec_flag::ANSWERED, rec_flag::ANSWERED);
    assert!(msg.modseq() > 500);
}

/// Records before the offset are not read: a record there that no longer decodes
/// (written over after `P`) doesn't stop the writer, as it doesn't stop Dovecot. The view
/// then answers changes only from that offset on.
#[test]
fn records_before_the_offset_are_not_read_and_answer_no_changes() {
    let dir = tempfile::tempdir().unwrap();
    let w = written_then_changed(dir.path());
    let paths = IndexPaths::new(dir.path(), "dovecot.index");
    let full = View::open(dir.path(), "dovecot.index").unwrap();
    let head = &full.logs()[0];
    // the first record after the header: an expunge without its protection mask
    let first = head.records[0].offset as usize;
    let mut log = std::fs::read(paths.log()).unwrap();
    log[first + 4..first + 8].copy_from_slice(&rec_type::EXPUNGE.to_le_bytes());
    std::fs::write(paths.log(), &log).unwrap();
    // a full read stops at the damage, before P's offset: the log is lost to it
    let damaged = View::open(dir.path(), "dovecot.index");
    assert!(matches!(damaged, Err(Error::LogLost { .. })), "{damaged:?}");
    let (seen, first_offset) = writer_view(&w);
    assert!(first_offset > first as u64);
    assert_eq!(seen, state(&full));
    let (changes, _) = commit_locked(&w, true, |v, _| {
        Ok::<_, Error>((
            v.changes_since(mailstore::ModSeq(1)),
            v.changes_since(mailstore::ModSeq(v.highest_modseq())),
        ))
    })
    .unwrap();
    assert!(
        matches!(changes.0, mailstore::Changes::Unknown),
        "{changes:?}"
    );
    assert!(
        matches!(changes.1, mailstore::Changes::Known { .. }),
        "{changes:?}"
    );
}

/// Requests logged before `P` that no backend carried out (non-EXTERNAL changes, the
/// tail offset left behind them): the writer must see them, so it reads every record.
#[test]
fn pending_requests_before_the_modseq_header_have_the_log_read_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let w = IndexWriter::open(dir.path(), "dovecot.index");
    w.create(4242).unwrap();
    enable_modseqs(&w).unwrap();
    let mut t = w.begin().external(true);
    t.append(1, 0).append(2, 0);
    t.commit().unwrap();
    let mut t = w.begin();
    t.flags(2, 2, rec_flag::SEEN, 0);
    t.commit().unwrap();
    w.write_index().unwrap();
    let (seen, first_offset) = writer_view(&w);
    let full = View::open(dir.path(), "dovecot.index").unwrap();
    assert_eq!(first_offset, full.logs()[0].header.hdr_size as u64);
    assert_eq!(seen, state(&full));
    assert!(
        full.index_file().header().log_file_tail_offset < full.logs()[0].records[2].offset as u32
    );
}

/// A modseq header pointing into the middle of a record (a damaged `P`): the tail
/// doesn't decode there, and the writer's view is built from the whole log.
#[test]
fn a_modseq_header_pointing_inside_a_record_falls_back_to_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let w = written_then_changed(dir.path());
    let paths = IndexPaths::new(dir.path(), "dovecot.index");
    let full = View::open(dir.path(), "dovecot.index").unwrap();
    let p = std::fs::read(paths.index()).unwrap();
    let on_disk = mailsync_index::format::index::IndexFile::decode(&p, Path::new("P")).unwrap();
    let ext = on_disk.ext(mailsync_index::format::ext::MODSEQ).unwrap();
    let m = mailsync_index::format::ext::ModseqHeader::decode(&ext.data).unwrap();
    // the modseq header's log_offset (u32 after the u64 highest_modseq and u32 log_seq)
    let at = find(&p, &ext.data) + 12;
    let inside = m.log_offset - 4;
    let mut damaged = p.clone();
    damaged[at..at + 4].copy_from_slice(&inside.to_le_bytes());
    std::fs::write(paths.index(), &damaged).unwrap();
    let (seen, first_offset) = writer_view(&w);
    assert_eq!(first_offset, full.logs()[0].header.hdr_size as u64);
    // the full replay from the damaged header gives the same messages and flags
    assert_eq!(seen.4.len(), state(&full).4.len());
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("modseq header in P")
}

/// `P`'s modseq header: where the head log is read from, and the modseq there.
fn modseq_header_of_p(dir: &Path) -> mailsync_index::format::ext::ModseqHeader {
    let p = std::fs::read(IndexPaths::new(dir, "dovecot.index").index()).unwrap();
    let on_disk = mailsync_index::format::index::IndexFile::decode(&p, Path::new("P")).unwrap();
    on_disk
        .ext(mailsync_index::format::ext::MODSEQ)
        .and_then(|e| mailsync_index::format::ext::ModseqHeader::decode(&e.data))
        .unwrap()
}

/// A reader that needs no history before `P` (`View::open_recent`) reads the head log as
/// the writer does and sees what a full read sees; it answers changes only from there.
#[test]
fn a_recent_view_is_the_full_view_with_history_from_p_on() {
    let dir = tempfile::tempdir().unwrap();
    let _w = written_then_changed(dir.path());
    let paths = IndexPaths::new(dir.path(), "dovecot.index");
    let full = View::open(dir.path(), "dovecot.index").unwrap();
    let recent = View::open_recent(&paths).unwrap();
    let m = modseq_header_of_p(dir.path());
    assert_eq!(recent.logs().len(), 1);
    assert_eq!(recent.logs()[0].first_offset, m.log_offset as u64);
    assert_eq!(recent.logs()[0].first_modseq, m.highest_modseq);
    assert_eq!(state(&recent), state(&full));
    let since = mailstore::ModSeq(m.highest_modseq);
    assert_eq!(recent.changes_since(since), full.changes_since(since));
    assert!(matches!(
        recent.changes_since(mailstore::ModSeq(1)),
        mailstore::Changes::Unknown
    ));
    assert!(matches!(
        full.changes_since(mailstore::ModSeq(1)),
        mailstore::Changes::Known { .. }
    ));
}

/// The history since a modseq at or after `P`'s modseq header is read from there on and
/// answers as the whole history; an older modseq has every log read.
#[test]
fn history_since_a_recent_modseq_reads_only_the_head_logs_tail() {
    let dir = tempfile::tempdir().unwrap();
    let _w = written_then_changed(dir.path());
    let paths = IndexPaths::new(dir.path(), "dovecot.index");
    let full = View::open(dir.path(), "dovecot.index").unwrap();
    let present = || full.messages().map(|m| m.uid()).collect();
    let m = modseq_header_of_p(dir.path());
    let whole = LogHistory::read(&paths).unwrap().unwrap();
    for (since, from) in [
        (m.highest_modseq, m.log_offset as u64),
        (m.highest_modseq + 1, m.log_offset as u64),
        (m.highest_modseq - 1, whole.logs()[0].header.hdr_size as u64),
        (1, whole.logs()[0].header.hdr_size as u64),
    ] {
        let h = LogHistory::read_since(&paths, since).unwrap().unwrap();
        assert_eq!(h.logs()[0].first_offset, from, "since {since}");
        let s = mailstore::ModSeq(since);
        assert_eq!(
            h.changes_since(s, full.highest_modseq(), present()),
            whole.changes_since(s, full.highest_modseq(), present()),
            "since {since}"
        );
        assert_eq!(
            h.flag_changes_since(s, &[mailstore::Uid(5), mailstore::Uid(7)], |_| true),
            whole.flag_changes_since(s, &[mailstore::Uid(5), mailstore::Uid(7)], |_| true),
        );
    }
}

/// An expunge past `P` whose GUID only an earlier request tells (an all-zero GUID, the
/// request logged before `P`): the tail can't answer alone, so every log is read, and
/// the expunge keeps the request's GUID.
#[test]
fn an_expunge_needing_an_earlier_record_has_the_whole_history_read() {
    let dir = tempfile::tempdir().unwrap();
    let w = written_then_changed(dir.path());
    let paths = IndexPaths::new(dir.path(), "dovecot.index");
    let guid = [0xab; 16];
    let mut t = w.begin();
    t.expunge_guid(2, guid);
    t.commit().unwrap();
    w.write_index().unwrap();
    let m = modseq_header_of_p(dir.path());
    let mut t = w.begin().external(true);
    t.expunge_guid(2, [0; 16]);
    t.commit().unwrap();
    let h = LogHistory::read_since(&paths, m.highest_modseq)
        .unwrap()
        .unwrap();
    assert_eq!(h.logs()[0].first_offset, h.logs()[0].header.hdr_size as u64);
    let full = View::open(dir.path(), "dovecot.index").unwrap();
    let present = full.messages().map(|m| m.uid()).collect();
    match h.changes_since(
        mailstore::ModSeq(m.highest_modseq),
        full.highest_modseq(),
        present,
    ) {
        mailstore::Changes::Known { expunged, .. } => {
            let want = mailstore::Guid::from_bytes("ab".repeat(16).into_bytes());
            assert_eq!(expunged, [(mailstore::Uid(2), Some(want))]);
        }
        other => panic!("{other:?}"),
    }
}

/// An index without the `modseq` extension (as a map index): its log starts at modseq 1
/// (as every log Dovecot and mailsync create), so the counter at `P`'s head offset is
/// counted over the records before it, which are read but not kept, and the log is
/// decoded from the head offset. A record there that doesn't decode has the log read
/// whole (which reports it). A log that tracks no modseqs at all (initial_modseq 0, from
/// an old Dovecot) is read from the head offset as it is, modseq 0.
#[test]
fn an_index_without_modseqs_is_decoded_from_ps_head_offset() {
    let dir = tempfile::tempdir().unwrap();
    let paths = IndexPaths::new(dir.path(), "dovecot.index");
    let w = IndexWriter::open(dir.path(), "dovecot.index");
    w.create(4242).unwrap();
    let mut t = w.begin().external(true);
    for uid in 1..=30 {
        t.append(uid, 0);
    }
    t.commit().unwrap();
    let mut t = w.begin().external(true);
    t.flags(4, 8, rec_flag::SEEN, 0);
    t.commit().unwrap();
    w.write_index().unwrap();
    w.sync_housekeeping().unwrap();
    let mut t = w.begin().external(true);
    t.append(31, 0);
    t.commit().unwrap();
    let p = std::fs::read(paths.index()).unwrap();
    let on_disk = mailsync_index::format::index::IndexFile::decode(&p, Path::new("P")).unwrap();
    assert!(on_disk.ext(mailsync_index::format::ext::MODSEQ).is_none());
    let head_offset = on_disk.header().log_file_head_offset as u64;
    let full = View::open(dir.path(), "dovecot.index").unwrap();
    let hdr_size = full.logs()[0].header.hdr_size as u64;
    assert_eq!(full.logs()[0].header.initial_modseq, 1);
    assert!(full.log_modseq() > 1);
    let (seen, first_offset) = writer_view(&w);
    assert_eq!(first_offset, head_offset);
    assert!(first_offset > hdr_size);
    assert_eq!(seen, state(&full));
    let original = std::fs::read(paths.log()).unwrap();
    // the same log from a Dovecot that tracked no modseqs
    let at = mailsync_index::format::log::hdr_off::INITIAL_MODSEQ;
    let mut log = original.clone();
    log[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    std::fs::write(paths.log(), &log).unwrap();
    let full = View::open(dir.path(), "dovecot.index").unwrap();
    assert_eq!(full.log_modseq(), 0);
    let (seen, first_offset) = writer_view(&w);
    assert_eq!(first_offset, head_offset);
    assert_eq!(seen, state(&full));
    // a record before the head offset that doesn't decode: the whole log is read
    let first = full.logs()[0].records[1].offset as usize;
    let mut log = original;
    log[first + 4..first + 8].copy_from_slice(&rec_type::EXPUNGE.to_le_bytes());
    // as a new file: this process counted the records of the one it read before up to the
    // head offset and counts on from there (Dovecot, too, keeps the log records it read)
    let damaged = dir.path().join("damaged");
    std::fs::write(&damaged, &log).unwrap();
    std::fs::rename(&damaged, paths.log()).unwrap();
    let seen = commit_locked(&w, true, |v, _| Ok::<_, Error>(v.logs()[0].first_offset));
    assert!(!matches!(seen, Ok((o, _)) if o == head_offset), "{seen:?}");
}

/// `P`'s header: (tail offset, head offset).
fn p_offsets(dir: &Path) -> (u32, u32) {
    let p = std::fs::read(dir.join("dovecot.index")).unwrap();
    let h = mailsync_index::format::index::IndexFile::decode(&p, Path::new("P"))
        .unwrap()
        .header();
    (h.log_file_tail_offset, h.log_file_head_offset)
}

/// A Maildir handle's close: a non-EXTERNAL record (a HIGHESTMODSEQ raise) leaves the tail
/// offset behind, and a header view would then read the log from its start for requests
/// that may wait there; the close moves the tail to the end (`P` itself is written only when
/// the next reader would have a long replay), and a close with nothing behind writes
/// nothing.
#[test]
fn a_close_moves_the_tail_to_the_end_and_writes_p() {
    let dir = tempfile::tempdir().unwrap();
    let w = IndexWriter::open(dir.path(), "dovecot.index");
    w.create(4242).unwrap();
    let mut t = w.begin().external(true);
    for uid in 1..=40 {
        t.append(uid, 0);
    }
    t.commit().unwrap();
    w.write_index().unwrap();
    w.sync_housekeeping().unwrap();
    w.write_index().unwrap();
    mailsync_index::locked_commit::raise_highest_modseq(&w, 900).unwrap();
    w.write_index().unwrap();
    let (tail, head) = p_offsets(dir.path());
    assert!(
        tail < head,
        "the raise is a request: the tail stays ({tail} < {head})"
    );
    w.close_synced().unwrap();
    let log_len = std::fs::metadata(dir.path().join("dovecot.index.log"))
        .unwrap()
        .len();
    let view = View::open(dir.path(), "dovecot.index").unwrap();
    assert_eq!(view.highest_modseq(), 900);
    assert_eq!(view.header().log_file_tail_offset as u64, log_len);
    // `P` is left behind (the next reader replays two header records), the header
    // answers with the tail at the end: nothing waits for the backend
    let (_, p_head) = p_offsets(dir.path());
    assert!((p_head as u64) < log_len);
    let head = HeaderView::open(&IndexPaths::new(dir.path(), "dovecot.index"))
        .unwrap()
        .expect("answered from P and the log past it");
    assert!(!head.backend_pending());
    assert_eq!(head.state(), (view.indexid(), view.log_position()));
    assert_eq!(head.highest_modseq(), 900);
    // nothing behind: nothing written
    w.close_synced().unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("dovecot.index.log"))
            .unwrap()
            .len(),
        log_len
    );
}
