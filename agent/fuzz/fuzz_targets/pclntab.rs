//! Fuzz target: golens::target::fuzzing::pclntab must survive any input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    golens::target::fuzzing::pclntab(data);
});
