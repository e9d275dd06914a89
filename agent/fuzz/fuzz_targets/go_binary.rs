//! Fuzz target: golens::target::fuzzing::go_binary must survive any input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    golens::target::fuzzing::go_binary(data);
});
