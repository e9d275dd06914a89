//! Fuzz target: golens::gobinary::fuzzing::buildinfo must survive any input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    golens::gobinary::fuzzing::buildinfo(data);
});
