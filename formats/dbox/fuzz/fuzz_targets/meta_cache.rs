#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailsync_dbox::fuzzing::fuzz_meta_cache(data);
});
