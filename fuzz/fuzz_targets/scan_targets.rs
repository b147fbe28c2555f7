//! Scan, ssh and push/pull target parsing on arbitrary text, one target per line as in a hosts
//! file: errors (one line, naming the input), never panics; an expansion is never empty and
//! never larger than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault::ops::remote::Remote;
use vault::ops::ssh::SshTarget;
use vault::ops::sweep::parse_ports;
use vault::ops::sweep::targets::{parse, Target};

const LIMIT: u128 = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines().take(16) {
        match parse(line, LIMIT) {
            Ok(Target::Addrs(v)) => {
                assert!(!v.is_empty(), "{line:?} expanded to nothing");
                assert!(v.len() as u128 <= LIMIT, "{line:?} expanded past the limit");
            }
            Ok(Target::Name(n)) => {
                assert!(!n.is_empty() && n.len() <= 253, "bad name accepted: {n:?}");
                assert!(!n.contains(char::is_whitespace), "bad name accepted: {n:?}");
            }
            Err(e) => assert!(!e.contains('\n') || line.contains('\n'), "{e}"),
        }
        if let Ok(ports) = parse_ports(line) {
            assert!(
                !ports.is_empty() && ports.iter().all(|p| *p != 0),
                "{line:?} -> {ports:?}"
            );
        }
        if let Ok(t) = SshTarget::parse(line) {
            assert!(t.port != 0 && !t.host.is_empty());
            let _ = t.known_hosts_name();
        }
        if let Ok(r) = Remote::parse(line) {
            let _ = r.to_string();
        }
    }
});
