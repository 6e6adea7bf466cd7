#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mailsync_index::fuzzing::fuzz_header_replay(data);
});
