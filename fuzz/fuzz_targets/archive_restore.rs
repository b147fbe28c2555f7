//! Restore from an archive with arbitrary bytes in it: the manifest is intact, the archive is
//! not. The first input byte picks how the rest becomes the archive file: bit 0 clear, the rest
//! is tar data that the harness gzips (so mutations reach the tar reader); set, the rest is the
//! file itself (mutations reach the gzip decoder). Bits 1-3 lay out a target that already holds
//! symlinks pointing outside (restored over with `--force`); bit 4 adds `--delete`.
//!
//! Must hold for every input: no panic; nothing outside the target written or removed; every
//! file restored holds exactly what was backed up; a restore that reports success restored all.
#![no_main]

mod common;

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = common::fixture();
    let bytes = if mode & 1 == 0 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(rest).unwrap();
        gz.finish().unwrap()
    } else {
        rest.to_vec()
    };
    std::fs::write(&f.archive, &bytes).unwrap();
    let pre = (mode >> 1) & 7;
    common::fresh_work(f, pre);
    let force = pre != 0;
    let delete = mode & 16 != 0;
    match common::restore(f, force, delete, Vec::new()) {
        Ok(report) => {
            common::assert_contained(f);
            common::assert_right_content(f, &report);
            if report.errors.is_empty() {
                assert_eq!(report.files as usize, common::FILES.len());
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "error is not one line: {msg}");
            common::assert_contained(f);
        }
    }
});
