//! The shared conformance suite against the mbox store (`mbox:~/mail:INBOX=~/mail/INBOX`).

use mailstore::conformance::ConformanceTarget;
use mailstore::{Location, Store, StoreOptions};
use mailsync_mbox::MboxStore;

struct Target {
    dir: tempfile::TempDir,
}

impl ConformanceTarget for Target {
    fn open(&self) -> Box<dyn Store> {
        let loc = Location::parse("mbox:~/mail:INBOX=~/mail/INBOX", Some(self.dir.path())).unwrap();
        Box::new(MboxStore::open(&loc, &StoreOptions::default()).unwrap())
    }
}

mailstore::conformance_suite!(|| Target {
    dir: tempfile::tempdir().unwrap()
});
