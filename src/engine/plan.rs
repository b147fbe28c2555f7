//! The backup plan: a pure comparison of the walked tree with the previous snapshot's tree.
//!
//! It decides, without touching the disk, which files must be read (new, or stat data changed,
//! or every file for a full or `--rehash`), which paths are gone, and which previous entries are
//! kept because their state could not be read this time. `--dry-run` prints this plan.

use crate::manifest::Kind;
use std::cmp::Ordering;

use crate::tree::{path_cmp, Entry, EntryKind};

/// Why a file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadReason {
    /// Not read: stat data unchanged, the previous digest stands.
    No,
    /// Not in the previous snapshot (or was not a file).
    New,
    /// Size, mtime, ctime, inode or device changed.
    StatChanged,
    /// A full backup stores every file.
    Full,
    /// `--rehash` asked for every file to be read.
    Rehash,
}

/// One walked path and what to do with it.
#[derive(Clone, Debug)]
pub struct Item {
    pub entry: Entry,
    pub prev: Option<Entry>,
    pub read: ReadReason,
}

/// The plan for one backup.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub items: Vec<Item>,
    /// Previous paths that are gone.
    pub removed: Vec<Vec<u8>>,
    /// Previous entries kept as they were (their state could not be read this time).
    pub carried: Vec<Entry>,
    /// Previous entries dropped because they could not be read and a full starts a new chain.
    pub dropped: Vec<Vec<u8>>,
}

impl Plan {
    /// Files that will be read.
    pub fn reads(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.read != ReadReason::No)
    }
}

fn under(path: &[u8], failed: &[Vec<u8>]) -> bool {
    // `failed` is sorted; check every prefix of `path` that ends at a '/' or the end.
    let mut ends: Vec<usize> = path
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(|(i, _)| i)
        .collect();
    ends.push(path.len());
    ends.iter().any(|&i| {
        failed
            .binary_search_by(|f| f.as_slice().cmp(&path[..i]))
            .is_ok()
    })
}

/// Compares `scanned` with `prev`, both sorted in [`path_cmp`] order.
pub fn plan(
    prev: &[Entry],
    scanned: Vec<Entry>,
    failed: &[Vec<u8>],
    kind: Kind,
    rehash: bool,
) -> Plan {
    debug_assert!(failed.windows(2).all(|w| w[0] <= w[1]));
    let mut out = Plan {
        items: Vec::with_capacity(scanned.len()),
        ..Plan::default()
    };
    let mut p = prev.iter().peekable();
    for entry in scanned {
        // Previous paths sorting before this one are not in the walk.
        while let Some(old) = p.next_if(|o| path_cmp(&o.path, &entry.path) == Ordering::Less) {
            gone(&mut out, old, failed, kind);
        }
        let prev = p.next_if(|o| o.path == entry.path).cloned();
        let read = if entry.kind != EntryKind::File {
            ReadReason::No
        } else if kind == Kind::Full {
            ReadReason::Full
        } else if rehash {
            ReadReason::Rehash
        } else {
            match &prev {
                None => ReadReason::New,
                Some(o) if o.kind != EntryKind::File || o.digest.is_none() => ReadReason::New,
                Some(o) if !o.same_stat(&entry) => ReadReason::StatChanged,
                Some(_) => ReadReason::No,
            }
        };
        let mut entry = entry;
        if read == ReadReason::No && entry.kind == EntryKind::File {
            entry.digest = prev.as_ref().and_then(|o| o.digest);
        }
        out.items.push(Item { entry, prev, read });
    }
    for old in p {
        gone(&mut out, old, failed, kind);
    }
    out
}

fn gone(out: &mut Plan, old: &Entry, failed: &[Vec<u8>], kind: Kind) {
    if under(&old.path, failed) {
        if kind == Kind::Full {
            out.dropped.push(old.path.clone());
        } else {
            out.carried.push(old.clone());
        }
    } else {
        out.removed.push(old.path.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashAlgo;
    use crate::tree::StatCache;

    fn file(p: &str, size: u64, mtime: i64) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime_ns: mtime,
            digest: None,
            target: None,
            stat: StatCache {
                ctime_ns: mtime,
                ino: 1,
                dev: 1,
                nlink: 1,
            },
        }
    }

    fn stored(mut e: Entry) -> Entry {
        e.digest = Some(HashAlgo::Blake3.digest(&e.path));
        e
    }

    #[test]
    fn detects_new_changed_removed_and_keeps_unchanged_digest() {
        let prev = vec![
            stored(file("a", 1, 1)),
            stored(file("b", 1, 1)),
            stored(file("c", 1, 1)),
        ];
        let scanned = vec![file("a", 1, 1), file("b", 2, 5), file("d", 1, 1)];
        let p = plan(&prev, scanned, &[], Kind::Incremental, false);
        let reads: Vec<_> = p.items.iter().map(|i| i.read).collect();
        assert_eq!(
            reads,
            [ReadReason::No, ReadReason::StatChanged, ReadReason::New]
        );
        assert_eq!(p.items[0].entry.digest, prev[0].digest);
        assert_eq!(p.removed, vec![b"c".to_vec()]);
        assert!(p.carried.is_empty());
    }

    #[test]
    fn unreadable_folder_keeps_previous_children() {
        let prev = vec![
            stored(file("d/x", 1, 1)),
            stored(file("d/y", 1, 1)),
            stored(file("dz", 1, 1)),
        ];
        let failed = vec![b"d".to_vec()];
        let p = plan(&prev, vec![], &failed, Kind::Incremental, false);
        assert_eq!(p.carried.len(), 2);
        assert_eq!(p.removed, vec![b"dz".to_vec()]);
        let p = plan(&prev, vec![], &failed, Kind::Full, false);
        assert_eq!(p.dropped.len(), 2);
    }

    #[test]
    fn full_and_rehash_read_everything() {
        let prev = vec![stored(file("a", 1, 1))];
        let p = plan(&prev, vec![file("a", 1, 1)], &[], Kind::Full, false);
        assert_eq!(p.items[0].read, ReadReason::Full);
        let p = plan(&prev, vec![file("a", 1, 1)], &[], Kind::Incremental, true);
        assert_eq!(p.items[0].read, ReadReason::Rehash);
    }
}
