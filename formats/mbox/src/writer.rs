//! Writing mbox messages as Dovecot writes them (mbox-save.c, mbox-sync-rewrite.c).
//!
//! A message is written as: From_ line, the message's own header fields minus the ones
//! Dovecot manages ([`header::HIDDEN_HEADERS`]), then `X-IMAPbase` (first message only),
//! `X-UID`, `Status`, `X-Status` (when a flag needs it), `X-Keywords` padded with spaces as
//! Dovecot pads it so later flag changes fit in place, `Content-Length` (the body size),
//! the empty line, the body, and one `\n` separator. Dovecot never `>`-escapes body
//! `From ` lines; the Content-Length keeps them inside the message.

use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailstore::{Flags, Keyword};

use crate::header::{self, HeaderLine};
use crate::lines::{Line, LineReader};
use crate::reader::BODY_KEEP;

/// mbox-storage.h MBOX_HEADER_PADDING.
pub const HEADER_PADDING: usize = 50;
/// strfuncs.h MAX_INT_STRLEN for a 64-bit uintmax_t.
const MAX_INT_STRLEN: usize = 23;
/// The space mbox-save.c reserves after `X-Keywords:`; `\nContent-Length: <n>` is then
/// written over its end.
const KEYWORDS_SPACE: usize = HEADER_PADDING + 1 + "Content-Length: \n".len() + MAX_INT_STRLEN;

/// UIDVALIDITY, last UID and keyword list of the X-IMAPbase (or X-IMAP) header.
#[derive(Clone, Debug)]
pub struct BaseHeader<'a> {
    pub uid_validity: u32,
    pub last_uid: u32,
    pub keywords: &'a [Vec<u8>],
}

impl BaseHeader<'_> {
    fn write(&self, name: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!("{name}: {} {:010}", self.uid_validity, self.last_uid).as_bytes(),
        );
        for k in self.keywords {
            out.push(b' ');
            out.extend_from_slice(k);
        }
        out.push(b'\n');
    }
}

/// The headers Dovecot keeps for one message.
#[derive(Clone, Debug)]
pub struct Managed<'a> {
    pub base: Option<BaseHeader<'a>>,
    pub uid: u32,
    pub flags: Flags,
    pub recent: bool,
    pub keywords: &'a [Keyword],
    pub content_length: u64,
}

/// The managed header block, in mbox-save.c's order (without the empty line).
pub fn managed_headers(m: &Managed<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    if let Some(base) = &m.base {
        base.write("X-IMAPbase", &mut out);
    }
    out.extend_from_slice(format!("X-UID: {}\n", m.uid).as_bytes());
    out.extend_from_slice(b"Status: ");
    if m.flags.contains(Flags::SEEN) {
        out.push(b'R');
    }
    if !m.recent {
        out.push(b'O');
    }
    out.push(b'\n');
    let xstatus: Vec<u8> = [
        (Flags::ANSWERED, b'A'),
        (Flags::FLAGGED, b'F'),
        (Flags::DRAFT, b'T'),
        (Flags::DELETED, b'D'),
    ]
    .iter()
    .filter(|(f, _)| m.flags.contains(*f))
    .map(|(_, c)| *c)
    .collect();
    if !xstatus.is_empty() {
        out.extend_from_slice(b"X-Status: ");
        out.extend_from_slice(&xstatus);
        out.push(b'\n');
    }
    out.extend_from_slice(b"X-Keywords:");
    for k in m.keywords {
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
    }
    let content_length = format!("\nContent-Length: {}", m.content_length);
    out.extend(std::iter::repeat_n(
        b' ',
        KEYWORDS_SPACE.saturating_sub(content_length.len()),
    ));
    out.extend_from_slice(content_length.as_bytes());
    out.push(b'\n');
    out
}

/// The c-client "FOLDER INTERNAL DATA" message Dovecot writes to keep UIDVALIDITY and the
/// next UID in an mbox without messages (mbox-sync.c mbox_sync_write_pseudo).
pub fn pseudo_message(base: &BaseHeader<'_>, now: i64) -> Vec<u8> {
    let host = mailstore::hostname();
    let date = jiff::Timestamp::from_second(now)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::system())
        .strftime("%a, %d %b %Y %H:%M:%S %z")
        .to_string();
    let mut out = crate::from_line::create(b"MAILER_DAEMON", now);
    out.extend_from_slice(format!("Date: {date}\n").as_bytes());
    out.extend_from_slice(
        format!("From: Mail System Internal Data <MAILER-DAEMON@{host}>\n").as_bytes(),
    );
    out.extend_from_slice(b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n");
    out.extend_from_slice(format!("Message-ID: <{now}@{host}>\n").as_bytes());
    base.write("X-IMAP", &mut out);
    out.extend_from_slice(b"Status: RO\n\n");
    out.extend_from_slice(
        b"This text is part of the internal format of your mail folder, and is not\n\
a real message.  It is created automatically by the mail system software.\n\
If deleted, important folder data will be lost, and it will be re-created\n\
with the data reset to initial values.\n\n",
    );
    out
}

/// Whether a header's first line is itself a valid From_ line. Such a line is safe only
/// directly after the message's own From_ line (Dovecot, like [`crate::reader`], never looks
/// for a From_ line there), so the managed headers must then follow the header instead of
/// preceding it.
pub fn first_line_is_from(first_line: &[u8]) -> bool {
    first_line.starts_with(b"From ") && crate::from_line::parse(&first_line[5..]).is_some()
}

/// Copies file bytes `[start, end)` to `out`.
pub fn copy_range(file: &File, start: u64, end: u64, out: &mut dyn Write) -> io::Result<()> {
    let mut pos = start;
    while pos < end {
        let n = ((end - pos) as usize).min(256 * 1024);
        let chunk = LineReader::peek_at(file, pos, n)?;
        if chunk.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "mbox file shrank while copying",
            ));
        }
        out.write_all(&chunk)?;
        pos += chunk.len() as u64;
    }
    Ok(())
}

/// Copies the header lines in `[start, end)` except Dovecot-managed fields (with their
/// continuation lines), byte for byte. Returns whether the copied text ends with a line
/// ending (or is empty), so the caller knows if one must be added before more headers.
pub fn copy_unmanaged_header(
    file: &File,
    start: u64,
    end: u64,
    out: &mut dyn Write,
) -> io::Result<bool> {
    let mut reader = LineReader::new(file, start, end)?;
    let mut line = Line::default();
    let mut hidden = false;
    let mut ends_with_newline = true;
    while reader.next_line(BODY_KEEP, &mut line)? {
        if let HeaderLine::Field { name, .. } = header::split(line.content()) {
            hidden = header::is_hidden(name);
        }
        if !hidden {
            copy_range(file, line.start, line.end(), out)?;
            ends_with_newline = line.newline;
        }
    }
    Ok(ends_with_newline)
}

/// The redo journal of an in-place rewrite, next to the mbox (dot files, which neither
/// Dovecot nor mailsync list as mailboxes):
/// 1. the new contents are written to `.<name>.mailsync-rewrite.tmp` and fsynced;
/// 2. it is renamed to `.<name>.mailsync-rewrite` (the journal is now "ready");
/// 3. its bytes are copied over the mbox from offset 0, the mbox is truncated to the new
///    length and fsynced; 4. the journal is deleted.
///
/// A crash before 2 leaves the mbox untouched (the temp file is deleted by the next
/// writer); a crash after 2 leaves a ready journal holding the complete new mbox, which the
/// next writer (under the locks) copies again before doing anything else. Every message is
/// therefore always in the mbox or in the journal.
pub struct Journal {
    pub tmp: PathBuf,
    pub ready: PathBuf,
    dir: PathBuf,
}

impl Journal {
    pub fn of(mbox: &Path) -> Journal {
        let dir = mbox.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = mbox
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Journal {
            tmp: dir.join(format!(".{name}.mailsync-rewrite.tmp")),
            ready: dir.join(format!(".{name}.mailsync-rewrite")),
            dir,
        }
    }

    /// A rewrite was interrupted after its journal became ready.
    pub fn is_pending(&self) -> bool {
        self.ready.exists()
    }

    /// Step 2: the fsynced temp file becomes the ready journal.
    pub fn commit(&self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.ready)?;
        mailsupport::atomic::fsync_dir(&self.dir)
    }

    /// Steps 3 and 4, on the write-locked mbox. `old` is the mbox's metadata before the
    /// rewrite: when the size doesn't change, the mtime is moved past the old one, since
    /// Dovecot trusts its index while size and mtime match (mbox_dirty_syncs).
    pub fn replay(&self, mbox: &File, old: &Metadata) -> io::Result<()> {
        let journal = File::open(&self.ready)?;
        let len = journal.metadata()?.len();
        let mut buf = vec![0u8; 256 * 1024];
        let mut pos = 0u64;
        while pos < len {
            let n = journal.read_at(&mut buf, pos)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "mbox rewrite journal shrank",
                ));
            }
            mbox.write_all_at(&buf[..n], pos)?;
            pos += n as u64;
        }
        mbox.set_len(len)?;
        if len == old.len() {
            let old_mtime = UNIX_EPOCH + Duration::from_secs(old.mtime().max(0) as u64);
            let now = SystemTime::now();
            let wanted =
                if now.duration_since(old_mtime).unwrap_or_default() >= Duration::from_secs(1) {
                    now
                } else {
                    old_mtime + Duration::from_secs(1)
                };
            mbox.set_modified(wanted)?;
        }
        mbox.sync_all()?;
        fs::remove_file(&self.ready)?;
        mailsupport::atomic::fsync_dir(&self.dir)
    }

    /// Called by a writer holding the locks: finishes an interrupted rewrite, drops an
    /// unfinished temp file. Returns whether a journal was replayed.
    pub fn recover(&self, mbox: &File) -> io::Result<bool> {
        let _ = fs::remove_file(&self.tmp);
        if !self.is_pending() {
            return Ok(false);
        }
        let old = mbox.metadata()?;
        self.replay(mbox, &old)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_line_is_padded_as_dovecot_pads_it() {
        let kws = [Keyword::from("$Forwarded")];
        let h = managed_headers(&Managed {
            base: None,
            uid: 2,
            flags: Flags::SEEN | Flags::ANSWERED,
            recent: false,
            keywords: &kws,
            content_length: 25,
        });
        let text = String::from_utf8(h).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "X-UID: 2");
        assert_eq!(lines[1], "Status: RO");
        assert_eq!(lines[2], "X-Status: A");
        // Dovecot 2.3.19.1 file: "X-Keywords:" + 72 spaces before "Content-Length: 25"
        assert!(lines[3].starts_with("X-Keywords: $Forwarded "));
        assert_eq!(lines[3].len(), 83 + " $Forwarded".len());
        assert_eq!(lines[4], "Content-Length: 25");
        assert_eq!(&lines[5..], [""]);
    }
}
