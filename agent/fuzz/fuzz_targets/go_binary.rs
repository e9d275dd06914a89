//! Fuzz target: golens::gobinary::fuzzing::go_binary must survive any input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    golens::gobinary::fuzzing::go_binary(data);
});
