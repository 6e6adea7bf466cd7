#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailsupport::fuzzing::fuzz_mutf7_decode(data);
});
