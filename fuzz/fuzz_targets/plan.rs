//! The planner on arbitrary trees: it must never panic, and its output must account for every
//! walked and every previous path exactly once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault::engine::plan::{plan, Prev};
use vault::tree::{sort_entries, StatCache};
use vault::{Entry, EntryKind, HashAlgo, Kind};

fn entries(bytes: &[u8], salt: u8) -> Vec<Entry> {
    let mut v: Vec<Entry> = bytes
        .chunks(3)
        .map(|c| {
            let name = [
                b'a' + c[0] % 4,
                b'/',
                b'a' + c.get(1).copied().unwrap_or(0) % 3,
            ];
            let path = if c[0] & 0x80 != 0 {
                name[..1].to_vec()
            } else {
                name.to_vec()
            };
            let kind = match c.get(2).copied().unwrap_or(0) % 3 {
                0 => EntryKind::File,
                1 => EntryKind::Dir,
                _ => EntryKind::Symlink,
            };
            Entry {
                path,
                kind,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: u64::from(c[0] ^ salt),
                mtime_ns: i64::from(c.get(1).copied().unwrap_or(0)),
                digest: (kind == EntryKind::File).then(|| HashAlgo::Blake3.digest(c)),
                target: None,
                rdev: 0,
                xattrs: None,
                sparse: false,
                stat: StatCache::default(),
            }
        })
        .collect();
    sort_entries(&mut v);
    v.dedup_by(|a, b| a.path == b.path);
    v
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let split = data[0] as usize % data.len();
    let prev = entries(&data[1..split.max(1)], 0);
    let now = entries(&data[split.max(1)..], data[0]);
    let failed: Vec<Vec<u8>> = if data[0] & 1 == 1 {
        vec![b"a".to_vec()]
    } else {
        vec![]
    };
    for kind in [Kind::Full, Kind::Incremental] {
        let p = plan(prev.clone(), now.clone(), &failed, kind, data[0] & 2 == 2);
        assert_eq!(p.items.len() as u64 + p.unchanged, now.len() as u64);
        let matched = p.items.iter().filter(|i| i.prev != Prev::None).count() as u64 + p.unchanged;
        assert_eq!(
            matched + p.removed.len() as u64 + p.carried + p.dropped.len() as u64,
            prev.len() as u64
        );
    }
});
