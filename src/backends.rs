//! Maps a mail location's driver to its storage backend.

use mailstore::{Error, Location, Result, Store, StoreOptions};

/// Opens the store a location names. Drivers: `maildir`, `sdbox`, `mdbox`, `mbox`.
pub fn open_store(location: &Location, opts: &StoreOptions) -> Result<Box<dyn Store>> {
    match location.driver.as_str() {
        "maildir" => Ok(Box::new(mailsync_maildir::MaildirStore::open(
            location, opts,
        )?)),
        "sdbox" | "mdbox" => Ok(Box::new(mailsync_dbox::DboxStore::open(location, opts)?)),
        "mbox" => Ok(Box::new(mailsync_mbox::MboxStore::open(location, opts)?)),
        other => Err(Error::Params(format!(
            "Unknown mail storage driver {other}"
        ))),
    }
}
