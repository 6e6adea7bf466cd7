//! The shared conformance suite against sdbox, with the default `/` separator and with
//! a `.` namespace separator.

use mailstore::conformance::ConformanceTarget;
use mailstore::{Location, Store, StoreOptions};
use mailsync_dbox::DboxStore;

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
        let loc = Location::parse(&self.spec, Some(self.dir.path())).unwrap();
        Box::new(
            DboxStore::open(
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

mod sdbox {
    mailstore::conformance_suite!(|| super::Target::new("sdbox:~/sdbox", None));
}

mod sdbox_dot_separator {
    mailstore::conformance_suite!(|| super::Target::new("sdbox:~/sdbox", Some('.')));
}

mod mdbox {
    mailstore::conformance_suite!(|| super::Target::new("mdbox:~/mdbox", None));
}

mod mdbox_dot_separator {
    mailstore::conformance_suite!(|| super::Target::new("mdbox:~/mdbox", Some('.')));
}
