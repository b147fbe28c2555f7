//! The backup plan: a pure comparison of the walked tree with the previous snapshot's tree.
//!
//! It decides, without touching the disk, which files must be read (new, or stat data changed,
//! or every file for a full or `--rehash`), which paths are gone, and which previous entries are
//! kept because their state could not be read this time. `--dry-run` prints this plan.
//!
//! Both trees come in path byte order (the manifest's order); the previous one is consumed as a
//! stream, and an incremental keeps no item for a path that is exactly as it was, so memory holds
//! the walked tree and the changes, not two copies of the tree.

use crate::hash::Digest;
use crate::manifest::Kind;
use crate::tree::{Entry, EntryKind};

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

/// What the previous snapshot had at an item's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prev {
    /// Nothing (a new path).
    None,
    /// Something. `meta_same`: type, mode, owner, mtime and (for symlinks) target are as they
    /// were; `exact`: the stat cache too. The previous content digest (files) is the item's
    /// `entry.digest` until the file is read: a full plan holds a million items, and a second
    /// digest in each was 32 MB.
    Was { meta_same: bool, exact: bool },
}

/// One walked path and what to do with it.
#[derive(Clone, Debug)]
pub struct Item {
    pub entry: Entry,
    pub prev: Prev,
    pub read: ReadReason,
    /// The walk does not read extended attributes: a path whose stat data (ctime included)
    /// is as before keeps the previous ones. True when they must still be read (a new path, or
    /// its stat changed, or `--rehash`); until then `entry.xattrs` holds the previous ones and
    /// `prev` was decided as if they had not changed.
    pub xattrs_unread: bool,
}

/// Once an item's file is read (or not), with `was` its previous content digest (the planned
/// entry's) and `now` the one it has: does the manifest need a new row, and is it a
/// user-visible change?
pub fn outcome(prev: Prev, was: Option<Digest>, now: Option<Digest>) -> (bool, bool) {
    match prev {
        Prev::None => (true, true),
        Prev::Was { meta_same, exact } => {
            let content_same = was == now;
            let visible = !meta_same || !content_same;
            let row = visible || !exact;
            (row, visible)
        }
    }
}

/// The plan for one backup.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The walked paths that need work or a new manifest row, in path order; for a full, every
    /// walked path.
    pub items: Vec<Item>,
    /// Walked paths of an incremental that are exactly as before (no item kept for them).
    pub unchanged: u64,
    /// Previous paths that are gone.
    pub removed: Vec<Vec<u8>>,
    /// Previous entries kept as they were (their state could not be read this time).
    pub carried: u64,
    /// Previous entries dropped because they could not be read and a full starts a new chain.
    pub dropped: Vec<Vec<u8>>,
}

impl Plan {
    /// Files that will be read.
    pub fn reads(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.read != ReadReason::No)
    }
}

/// True when `path` or a folder above it could not be read this time: the source folder itself
/// (the empty path: its listing broke off part-way) counts as above everything. `failed` is
/// sorted.
fn under(path: &[u8], failed: &[Vec<u8>]) -> bool {
    let found = |p: &[u8]| failed.binary_search_by(|f| f.as_slice().cmp(p)).is_ok();
    found(b"")
        || found(path)
        || path
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'/' && found(&path[..i]))
}

fn meta_same(a: &Entry, b: &Entry) -> bool {
    a.kind == b.kind
        && a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime_ns == b.mtime_ns
        && a.target == b.target
        && a.rdev == b.rdev
        && a.xattrs == b.xattrs
}

/// Compares `scanned` with `prev`, both sorted by path bytes. `prev` is consumed as a stream.
pub fn plan(
    prev: impl IntoIterator<Item = Entry>,
    scanned: Vec<Entry>,
    failed: &[Vec<u8>],
    kind: Kind,
    rehash: bool,
) -> Plan {
    debug_assert!(failed.windows(2).all(|w| w[0] <= w[1]));
    debug_assert!(scanned.windows(2).all(|w| w[0].path < w[1].path));
    let mut p = Planner::new(prev.into_iter(), kind, rehash);
    if kind == Kind::Full {
        p.out.items.reserve(scanned.len());
    }
    for entry in freeing(scanned, 16 * 1024) {
        p.push(entry, failed);
    }
    p.finish(failed)
}

/// The plan made one walked entry at a time, as the walk gives them in path byte order:
/// neither tree is ever held whole.
pub struct Planner<P: Iterator<Item = Entry>> {
    prev: std::iter::Peekable<P>,
    kind: Kind,
    rehash: bool,
    out: Plan,
}

impl<P: Iterator<Item = Entry>> std::fmt::Debug for Planner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planner")
            .field("kind", &self.kind)
            .field("items", &self.out.items.len())
            .finish_non_exhaustive()
    }
}

impl<P: Iterator<Item = Entry>> Planner<P> {
    /// A plan against `prev`, the previous tree in path byte order (empty for a first backup).
    pub fn new(prev: P, kind: Kind, rehash: bool) -> Planner<P> {
        Planner {
            prev: prev.peekable(),
            kind,
            rehash,
            out: Plan::default(),
        }
    }

    /// Takes the next walked entry (greater than every one before it). `failed`: the paths
    /// known so far whose state could not be read, sorted; it holds every one at or before
    /// `entry` in path order.
    pub fn push(&mut self, mut entry: Entry, failed: &[Vec<u8>]) {
        let kind = self.kind;
        // Previous paths sorting before this one are not in the walk.
        while let Some(old) = self.prev.next_if(|o| o.path < entry.path) {
            gone(&mut self.out, old, failed, kind);
        }
        let old = self.prev.next_if(|o| o.path == entry.path);
        let read = read_reason(&entry, old.as_ref(), kind, self.rehash);
        if read == ReadReason::No && entry.kind == EntryKind::File {
            entry.digest = old.as_ref().and_then(|o| o.digest);
            entry.sparse = old.as_ref().is_some_and(|o| o.sparse);
        }
        // Setting an attribute moves ctime: with the stat data as before, so are they.
        let xattrs_unread = self.rehash || !old.as_ref().is_some_and(|o| o.same_stat(&entry));
        entry.xattrs = old.as_ref().and_then(|o| o.xattrs.clone());
        let prev = match &old {
            None => Prev::None,
            Some(o) => Prev::Was {
                meta_same: meta_same(o, &entry),
                exact: *o == entry,
            },
        };
        let exact = matches!(prev, Prev::Was { exact: true, .. });
        if kind == Kind::Incremental && read == ReadReason::No && exact {
            self.out.unchanged += 1;
            return;
        }
        // A file to read keeps its previous digest in the entry until the read gives the new
        // one (`exact` above was decided without it, as before).
        if read != ReadReason::No {
            entry.digest = old.as_ref().and_then(|o| o.digest);
        }
        self.out.items.push(Item {
            entry,
            prev,
            read,
            xattrs_unread,
        });
    }

    /// The plan, once every walked entry is in: what is left of `prev` is gone.
    pub fn finish(mut self, failed: &[Vec<u8>]) -> Plan {
        for old in self.prev {
            gone(&mut self.out, old, failed, self.kind);
        }
        self.out
    }
}

/// Why (and whether) a walked entry's content is read.
fn read_reason(entry: &Entry, old: Option<&Entry>, kind: Kind, rehash: bool) -> ReadReason {
    if entry.kind != EntryKind::File {
        ReadReason::No
    } else if kind == Kind::Full {
        ReadReason::Full
    } else if rehash {
        ReadReason::Rehash
    } else {
        match old {
            None => ReadReason::New,
            Some(o) if o.kind != EntryKind::File || o.digest.is_none() => ReadReason::New,
            Some(o) if !o.same_stat(entry) => ReadReason::StatChanged,
            Some(_) => ReadReason::No,
        }
    }
}

/// A vector's items in order, its memory given back as they are taken: the items of a full
/// plan are a copy of the walked tree and more, and holding both at once was the backup's peak.
/// The vector is cut into chunks from its end (each cut copies only that chunk; the shrink
/// returns the pages past it), and each chunk is freed once consumed.
fn freeing<T>(mut v: Vec<T>, chunk: usize) -> impl Iterator<Item = T> {
    let mut chunks = Vec::with_capacity(v.len() / chunk + 1);
    while v.len() > chunk {
        let tail = v.split_off(v.len() - chunk);
        v.shrink_to_fit();
        chunks.push(tail);
    }
    chunks.push(v);
    chunks.into_iter().rev().flatten()
}

fn gone(out: &mut Plan, old: Entry, failed: &[Vec<u8>], kind: Kind) {
    if under(&old.path, failed) {
        if kind == Kind::Full {
            out.dropped.push(old.path);
        } else {
            out.carried += 1;
        }
    } else {
        out.removed.push(old.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeing_gives_every_item_once_in_order() {
        for n in [0usize, 1, 5, 16, 17, 100] {
            let got: Vec<usize> = freeing((0..n).collect(), 4).collect();
            assert_eq!(got, (0..n).collect::<Vec<_>>());
        }
    }
    use crate::hash::HashAlgo;
    use crate::tree::StatCache;

    fn file(p: &str, size: u64, mtime: i64) -> Entry {
        Entry {
            size,
            mtime_ns: mtime,
            stat: StatCache {
                ctime_ns: mtime,
                ino: 1,
                dev: 1,
                nlink: 1,
            },
            ..Entry::bare(p, EntryKind::File)
        }
    }

    fn stored(mut e: Entry) -> Entry {
        e.digest = Some(HashAlgo::Blake3.digest(&e.path));
        e
    }

    #[test]
    fn detects_new_changed_removed_and_skips_unchanged() {
        let prev = vec![
            stored(file("a", 1, 1)),
            stored(file("b", 1, 1)),
            stored(file("c", 1, 1)),
        ];
        let scanned = vec![file("a", 1, 1), file("b", 2, 5), file("d", 1, 1)];
        let p = plan(prev.clone(), scanned, &[], Kind::Incremental, false);
        assert_eq!(p.unchanged, 1);
        let reads: Vec<_> = p.items.iter().map(|i| i.read).collect();
        assert_eq!(reads, [ReadReason::StatChanged, ReadReason::New]);
        assert!(matches!(
            p.items[0].prev,
            Prev::Was {
                meta_same: false,
                ..
            }
        ));
        assert_eq!(p.removed, vec![b"c".to_vec()]);
        assert_eq!(p.carried, 0);
    }

    #[test]
    fn unreadable_folder_keeps_previous_children() {
        let prev = vec![
            stored(file("d/x", 1, 1)),
            stored(file("d/y", 1, 1)),
            stored(file("dz", 1, 1)),
        ];
        let failed = vec![b"d".to_vec()];
        let p = plan(prev.clone(), vec![], &failed, Kind::Incremental, false);
        assert_eq!(p.carried, 2);
        assert_eq!(p.removed, vec![b"dz".to_vec()]);
        let p = plan(prev, vec![], &failed, Kind::Full, false);
        assert_eq!(p.dropped.len(), 2);
    }

    #[test]
    fn a_source_folder_listed_part_way_keeps_everything_it_did_not_reach() {
        let prev = vec![stored(file("a", 1, 1)), stored(file("z/y", 1, 1))];
        let walked = vec![file("a", 1, 1)];
        let failed = vec![Vec::new()];
        let p = plan(prev, walked, &failed, Kind::Incremental, false);
        assert_eq!((p.carried, p.removed.len()), (1, 0));
    }

    #[test]
    fn full_and_rehash_read_everything() {
        let prev = vec![stored(file("a", 1, 1))];
        let p = plan(prev.clone(), vec![file("a", 1, 1)], &[], Kind::Full, false);
        assert_eq!(p.items[0].read, ReadReason::Full);
        let p = plan(prev, vec![file("a", 1, 1)], &[], Kind::Incremental, true);
        assert_eq!(p.items[0].read, ReadReason::Rehash);
    }

    #[test]
    fn attributes_are_kept_while_the_stat_stands_and_read_once_it_moves() {
        use crate::xattr::Xattrs;
        let mut old = stored(file("a", 1, 1));
        old.xattrs = Some(Box::new(Xattrs(vec![(b"user.k".to_vec(), b"v".to_vec())])));
        let p = plan(
            vec![old.clone()],
            vec![file("a", 1, 1)],
            &[],
            Kind::Full,
            false,
        );
        assert_eq!(p.items[0].entry.xattrs, old.xattrs);
        assert!(!p.items[0].xattrs_unread);
        let p = plan(
            vec![old.clone()],
            vec![file("a", 1, 1)],
            &[],
            Kind::Incremental,
            false,
        );
        assert_eq!((p.unchanged, p.items.len()), (1, 0));
        let mut moved = file("a", 1, 1);
        moved.stat.ctime_ns = 2;
        let p = plan(
            vec![old.clone()],
            vec![moved],
            &[],
            Kind::Incremental,
            false,
        );
        assert!(p.items[0].xattrs_unread);
        let p = plan(Vec::new(), vec![file("b", 1, 1)], &[], Kind::Full, false);
        assert!(p.items[0].xattrs_unread);
    }
}
