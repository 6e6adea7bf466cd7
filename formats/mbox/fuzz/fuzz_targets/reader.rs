#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailsync_mbox::fuzzing::fuzz_reader(data);
});
