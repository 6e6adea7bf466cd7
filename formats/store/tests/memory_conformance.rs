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
            ..Default::default()
        }
    ));
}

/// Saving with Dovecot's default line-ending conversion (`mail_save_crlf = no`).
mod lf_line_endings {
    mailstore::conformance_suite!(|| mailstore::memory::MemoryStore::with_options(
        &mailstore::StoreOptions {
            save_line_endings: Some(mailstore::SaveLineEndings::Lf),
            ..Default::default()
        }
    ));
}

/// Saving with `mail_save_crlf = yes`.
mod crlf_line_endings {
    mailstore::conformance_suite!(|| mailstore::memory::MemoryStore::with_options(
        &mailstore::StoreOptions {
            save_line_endings: Some(mailstore::SaveLineEndings::Crlf),
            ..Default::default()
        }
    ));
}

/// A closure may return a boxed target (`impl ConformanceTarget for Box<T>`); the boxed
/// handle reaches the same shared state.
#[test]
fn boxed_target_opens_the_same_store() {
    use mailstore::conformance::ConformanceTarget;
    let target: Box<dyn ConformanceTarget> = Box::new(mailstore::memory::MemoryStore::new());
    target.open().create_mailbox("Shared", None).unwrap();
    let names: Vec<String> = target
        .open()
        .list_mailboxes()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["INBOX", "Shared"]);
    let fresh: Box<dyn ConformanceTarget> = Box::new(mailstore::memory::MemoryStore::new());
    mailstore::conformance::rename_moves_children(&fresh);
}
