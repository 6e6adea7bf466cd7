//! The shared conformance suite against Maildir++, LAYOUT=fs, and a store with INBOX=,
//! CONTROL= and INDEX= options and a `/` namespace separator over Maildir++.

use std::path::Path;

use mailstore::conformance::ConformanceTarget;
use mailstore::{Location, Store, StoreOptions};
use mailsync_maildir::MaildirStore;

struct Target {
    dir: tempfile::TempDir,
    spec: String,
    separator: Option<char>,
}

impl Target {
    fn new(spec: &str, separator: Option<char>) -> Target {
        Target {
            dir: tempfile::tempdir().unwrap(),
            spec: spec.to_string(),
            separator,
        }
    }
}

impl ConformanceTarget for Target {
    fn open(&self) -> Box<dyn Store> {
        let home: &Path = self.dir.path();
        let loc = Location::parse(&self.spec, Some(home)).unwrap();
        Box::new(
            MaildirStore::open(
                &loc,
                &StoreOptions {
                    separator: self.separator,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    }
}

mod maildirpp {
    mailstore::conformance_suite!(|| super::Target::new("maildir:~/Maildir", None));
}

mod layout_fs {
    mailstore::conformance_suite!(|| super::Target::new("maildir:~/Maildir:LAYOUT=fs", None));
}

mod options_and_slash_namespace {
    mailstore::conformance_suite!(|| super::Target::new(
        "maildir:~/Maildir:INBOX=~/inbox:CONTROL=~/control:INDEX=~/index",
        Some('/')
    ));
}
