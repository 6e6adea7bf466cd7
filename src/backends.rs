//! Maps a mail location's driver to its storage backend.

use mailstore::{Error, Location, Result, Store, StoreOptions};

/// Opens the store a location names. Drivers: `maildir`.
pub fn open_store(location: &Location, opts: &StoreOptions) -> Result<Box<dyn Store>> {
    match location.driver.as_str() {
        "maildir" => open_maildir(location, opts),
        other => Err(Error::Params(format!(
            "Unknown mail storage driver {other}"
        ))),
    }
}

fn open_maildir(location: &Location, opts: &StoreOptions) -> Result<Box<dyn Store>> {
    let _ = (location, opts);
    Err(Error::Params(
        "maildir backend not available in this build yet".into(),
    ))
}
