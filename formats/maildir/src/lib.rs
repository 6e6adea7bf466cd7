//! Dovecot-compatible Maildir backend (Maildir++ and LAYOUT=fs). See FORMAT.md.

use mailstore::{Location, Result, StoreOptions};

/// A Maildir store rooted at a mail location.
pub struct MaildirStore {}

impl MaildirStore {
    /// Opens the Maildir store a `maildir:` location names (options LAYOUT, INBOX, INDEX,
    /// CONTROL). The root is created on first write, as Dovecot does.
    pub fn open(location: &Location, options: &StoreOptions) -> Result<MaildirStore> {
        let _ = (location, options);
        todo!()
    }
}
