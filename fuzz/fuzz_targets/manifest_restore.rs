//! Restore (and `ls`, `diff`, `check`) from a tampered manifest: the archive is intact, the rows
//! of the snapshot's tree are the fuzzer's. Paths are built from components that include `.`,
//! `..`, empty ones, raw bytes and a leading `/`; kinds, modes, sizes, digests and symlink
//! targets (some pointing outside) are arbitrary, and so are the member names of stored content.
//! This is what "manifest path decoding" means here: from SQLite rows to restored files.
//!
//! Must hold for every input: no panic; nothing outside the target written or removed; no file
//! holds content that was never backed up.
#![no_main]

mod common;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rusqlite::{params, Connection};

#[derive(Arbitrary, Debug)]
enum Comp {
    A,
    D,
    E,
    F,
    BBin,
    CTxt,
    Dot,
    DotDot,
    Empty,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum DigestPick {
    None,
    /// The digest of one of the fixture's contents.
    Of(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum TargetPick {
    None,
    Sibling,
    UpOut,
    AbsOut,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Row {
    absolute: bool,
    comps: Vec<Comp>,
    kind: i8,
    mode: u32,
    /// None: the right size for the digest picked.
    size: Option<i64>,
    digest: DigestPick,
    target: TargetPick,
    /// Ends the row's life before the snapshot (to_seq = from_seq), or starts it after.
    dead: Option<bool>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    rows: Vec<Row>,
    /// New member names for stored contents (by index into the blobs).
    members: Vec<(u8, Vec<u8>)>,
    pre: u8,
    delete: bool,
    include: Vec<String>,
}

fn path_of(r: &Row) -> Vec<u8> {
    let mut p = Vec::new();
    if r.absolute {
        p.push(b'/');
    }
    for (i, c) in r.comps.iter().enumerate() {
        if i > 0 {
            p.push(b'/');
        }
        match c {
            Comp::A => p.extend_from_slice(b"a.txt"),
            Comp::D => p.push(b'd'),
            Comp::E => p.push(b'e'),
            Comp::F => p.push(b'f'),
            Comp::BBin => p.extend_from_slice(b"b.bin"),
            Comp::CTxt => p.extend_from_slice(b"c.txt"),
            Comp::Dot => p.push(b'.'),
            Comp::DotDot => p.extend_from_slice(b".."),
            Comp::Empty => {}
            Comp::Raw(b) => p.extend_from_slice(b),
        }
    }
    p
}

fuzz_target!(|input: Input| {
    let f = common::fixture();
    std::fs::write(&f.archive, &f.archive_bytes).unwrap();
    let db = f.repo.join("vault.db");
    for sfx in ["-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(f.repo.join(format!("vault.db{sfx}")));
    }
    std::fs::write(&db, &f.db_bytes).unwrap();
    {
        let mut c = Connection::open(&db).unwrap();
        let t = c.transaction().unwrap();
        let (sid, seq): (i64, i64) = t
            .query_row("SELECT source_id, seq FROM snapshots", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let blobs: Vec<(Vec<u8>, Vec<u8>, i64)> = t
            .prepare("SELECT digest, member, size FROM blobs ORDER BY member")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        t.execute("DELETE FROM entries", []).unwrap();
        let outside = f.outside();
        for r in input.rows.iter().take(64) {
            let (digest, right_size) = match &r.digest {
                DigestPick::None => (None, 0),
                DigestPick::Of(i) => {
                    let b = &blobs[*i as usize % blobs.len()];
                    (Some(b.0.clone()), b.2)
                }
                DigestPick::Raw(b) => (Some(b.clone()), 0),
            };
            let target: Option<Vec<u8>> = match &r.target {
                TargetPick::None => None,
                TargetPick::Sibling => Some(b"a.txt".to_vec()),
                TargetPick::UpOut => Some(b"../../outside".to_vec()),
                TargetPick::AbsOut => Some(outside.as_os_str().as_encoded_bytes().to_vec()),
                TargetPick::Raw(b) => Some(b.clone()),
            };
            let (from, to) = match r.dead {
                None => (seq, None),
                Some(true) => (seq - 1, Some(seq)),
                Some(false) => (seq + 1, None),
            };
            // Duplicate keys are skipped, as SQLite would refuse them anyway.
            let _ = t.execute(
                "INSERT INTO entries (source_id, path, from_seq, to_seq, kind, mode, uid, gid, size,
                 mtime_ns, ctime_ns, ino, dev, nlink, digest, target)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7, 0, 0, 0, 0, 1, ?8, ?9)",
                params![
                    sid,
                    path_of(r),
                    from,
                    to,
                    i64::from(r.kind),
                    i64::from(r.mode),
                    r.size.unwrap_or(right_size),
                    digest,
                    target
                ],
            );
        }
        for (i, name) in input.members.iter().take(8) {
            let b = &blobs[*i as usize % blobs.len()];
            t.execute(
                "UPDATE blobs SET member = ?1 WHERE digest = ?2",
                params![name, b.0],
            )
            .unwrap();
        }
        t.commit().unwrap();
    }
    common::fresh_work(f, input.pre);
    let include: Vec<String> = input.include.into_iter().take(4).collect();
    let force = input.pre & 1 != 0;
    let r = common::restore(f, force, input.delete, include);
    common::assert_contained(f);
    common::assert_no_foreign_content(f);
    if let Err(e) = r {
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "error is not one line: {msg}");
    }
    // The read-only views of the same manifest: errors, never panics.
    if let Ok(repo) = vault::Repository::open(&f.repo) {
        if let Ok(snap) = vault::resolve(&repo, "latest", None) {
            let _ = vault::ls(&repo, &snap);
            let _ = vault::diff(&repo, &snap, &snap);
        }
        let _ = vault::snapshots(&repo, None);
    }
    let _ = vault::check(
        &f.repo,
        false,
        &f.pool,
        &vault::CancelToken::new(),
        &vault::NoProgress,
    );
    common::assert_contained(f);
});
