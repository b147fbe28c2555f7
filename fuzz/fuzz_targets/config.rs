//! The config file parser on arbitrary text: a `Config` or a one-line error naming the file,
//! never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = vault::config::parse(Path::new("vault.toml"), text) {
        let msg = e.to_string();
        assert!(
            msg.starts_with("vault.toml"),
            "error does not name the file: {msg}"
        );
        assert!(!msg.contains('\n'), "error is not one line: {msg}");
    }
});
