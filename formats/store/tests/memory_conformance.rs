//! The conformance suite run against the in-memory reference backend, once with each
//! common hierarchy separator.

/// `/` as separator (the default: LAYOUT=fs, dbox, mbox).
mod slash_separator {
    mailstore::conformance_suite!(mailstore::memory::MemoryStore::new);
}

/// `.` as separator (Maildir++): `/` is then not allowed in names.
mod dot_separator {
    mailstore::conformance_suite!(|| mailstore::memory::MemoryStore::with_options(
        &mailstore::StoreOptions {
            separator: Some('.'),
        }
    ));
}
