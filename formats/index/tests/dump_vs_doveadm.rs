//! Our dump of every Dovecot-written log prints exactly what `doveadm dump` prints.

mod common;

use common::dovecot::{doveadm_dump, ok};
use mailsync_index::dump::{dump_with_tz, DumpKind};

#[test]
fn log_dumps_equal_doveadm_dump() {
    let utc = jiff::tz::TimeZone::UTC;
    let logs = common::testdata_logs();
    assert!(logs.len() >= 15);
    for path in logs {
        let want = ok("doveadm dump", doveadm_dump(&path, Some("log")));
        let got = dump_with_tz(&path, Some(DumpKind::Log), &utc).unwrap();
        assert_eq!(got, want, "{}", path.display());
        // autodetection agrees too
        let want = ok("doveadm dump", doveadm_dump(&path, None));
        let got = dump_with_tz(&path, None, &utc).unwrap();
        assert_eq!(
            got.lines().next(),
            want.lines().next(),
            "{}",
            path.display()
        );
    }
}
