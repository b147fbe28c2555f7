//! `--at TIME` and duration parsing on arbitrary text: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = vault::time::parse_time(s);
        let _ = vault::time::parse_duration(s);
    }
});
