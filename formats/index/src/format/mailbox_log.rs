//! `dovecot.mailbox.log` (+ `.2`): fixed 24-byte records of mailbox deletes, renames and
//! (un)subscriptions used by dsync (src/lib-index/mailbox-log.h, mailbox-log.c).
//! Byte table: FORMAT.md §4.

use std::path::Path;

use crate::error::{Error, Result};

/// sizeof(struct mailbox_log_record).
pub const RECORD_SIZE: usize = 24;

/// Byte offsets in a record.
pub mod rec_off {
    pub const TYPE: usize = 0;
    pub const PADDING: usize = 1;
    pub const MAILBOX_GUID: usize = 4;
    /// u32 **big-endian** UNIX time (cpu32_to_be_unaligned).
    pub const TIMESTAMP: usize = 20;
}

/// enum mailbox_log_record_type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxLogType {
    DeleteMailbox,
    DeleteDir,
    Rename,
    Subscribe,
    Unsubscribe,
    CreateDir,
}

impl MailboxLogType {
    pub fn from_u8(v: u8) -> Option<MailboxLogType> {
        Some(match v {
            1 => MailboxLogType::DeleteMailbox,
            2 => MailboxLogType::DeleteDir,
            3 => MailboxLogType::Rename,
            4 => MailboxLogType::Subscribe,
            5 => MailboxLogType::Unsubscribe,
            6 => MailboxLogType::CreateDir,
            _ => return None,
        })
    }
    pub fn code(self) -> u8 {
        match self {
            MailboxLogType::DeleteMailbox => 1,
            MailboxLogType::DeleteDir => 2,
            MailboxLogType::Rename => 3,
            MailboxLogType::Subscribe => 4,
            MailboxLogType::Unsubscribe => 5,
            MailboxLogType::CreateDir => 6,
        }
    }
    /// The name doveadm dump prints.
    pub fn name(self) -> &'static str {
        match self {
            MailboxLogType::DeleteMailbox => "delete-mailbox",
            MailboxLogType::DeleteDir => "delete-dir",
            MailboxLogType::Rename => "rename",
            MailboxLogType::Subscribe => "subscribe",
            MailboxLogType::Unsubscribe => "unsubscribe",
            MailboxLogType::CreateDir => "create-dir",
        }
    }
}

/// One mailbox log record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxLogRecord {
    pub offset: u64,
    pub kind: MailboxLogType,
    /// Mailbox GUID, or for directory records the SHA1-based GUID of the name.
    pub mailbox_guid: [u8; 16],
    pub timestamp: u32,
}

impl MailboxLogRecord {
    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        b[rec_off::TYPE] = self.kind.code();
        b[rec_off::MAILBOX_GUID..rec_off::MAILBOX_GUID + 16].copy_from_slice(&self.mailbox_guid);
        b[rec_off::TIMESTAMP..].copy_from_slice(&self.timestamp.to_be_bytes());
        b
    }
}

/// Decodes every record. Dovecot's iterator (mailbox_log_iter_next) accepts types 1..5
/// only and stops with "Corrupted mailbox log" on anything else; a trailing partial record
/// is ignored (it reads whole records). Here type 6 (CREATE_DIR, which doveadm dump knows)
/// is accepted too.
pub fn decode(data: &[u8], path: &Path) -> Result<Vec<MailboxLogRecord>> {
    let mut out = Vec::new();
    for (i, c) in data.chunks_exact(RECORD_SIZE).enumerate() {
        let offset = (i * RECORD_SIZE) as u64;
        let kind = MailboxLogType::from_u8(c[rec_off::TYPE]).ok_or_else(|| {
            Error::corrupt(
                path,
                offset,
                format!("Corrupted mailbox log: type={}", c[0]),
            )
        })?;
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&c[rec_off::MAILBOX_GUID..rec_off::MAILBOX_GUID + 16]);
        out.push(MailboxLogRecord {
            offset,
            kind,
            mailbox_guid: guid,
            timestamp: u32::from_be_bytes([c[20], c[21], c[22], c[23]]),
        });
    }
    Ok(out)
}
