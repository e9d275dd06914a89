//! Fuzz target: /proc/PID/stat parsing must survive any input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = golens::discovery::procfs::parse_start_time(text);
    }
});
