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

#[cfg(test)]
mod tests {
    use super::*;

    /// Which stores the sync engine may use from two threads at once, for a run that only
    /// reads them and one that writes them; a second handle is the same store.
    #[test]
    fn second_handles_by_driver_and_role() {
        let dir = tempfile::tempdir().unwrap();
        for (driver, for_reading, for_writing) in [
            ("maildir", true, false),
            ("sdbox", true, true),
            ("mdbox", false, false),
            ("mbox", false, false),
        ] {
            let spec = format!("{driver}:{}", dir.path().join(driver).display());
            let location = Location::parse(&spec, None).unwrap();
            let store = open_store(&location, &StoreOptions::default()).unwrap();
            assert_eq!(
                store.second_handle(false).is_some(),
                for_reading,
                "{driver}"
            );
            assert_eq!(store.second_handle(true).is_some(), for_writing, "{driver}");
            if let Some(second) = store.second_handle(false) {
                second.create_mailbox("Made", None).unwrap();
                let names: Vec<String> = store
                    .list_mailboxes()
                    .unwrap()
                    .into_iter()
                    .map(|m| m.name)
                    .collect();
                assert!(names.iter().any(|n| n == "Made"), "{driver}: {names:?}");
            }
        }
    }
}
