//! The walk's folder listings come back from the pool in any order; the plan wants the tree in
//! path byte order (the manifest's order). [`InOrder`] merges the listings and gives out each
//! entry as soon as nothing that sorts before it can still arrive, so that neither the walked
//! tree nor the previous one is ever held whole.
//!
//! Why that is sound: every path below folder `D` starts with `D/` and so sorts after `D`.
//! Once `D` is given out, only `D`'s own listing can hold paths that sort before the smallest
//! entry still waiting; so the merge waits for that listing (the pool lists folders depth
//! first, so it is usually there or next) and then goes on.
//!
//! Memory: listings that come back ahead of their turn wait in `ready`. With folders listed
//! smallest path first that is a handful. One folder far slower to list than the rest (a huge
//! one, a slow mount) would let the other workers run ahead meanwhile, so once
//! [`InOrder::waiting`] passes a limit the walk keeps one listing out at a time (the pool
//! then lists the smallest pending folder, which is the one the merge waits for).

use std::cmp::Ordering;
use std::collections::binary_heap::PeekMut;
use std::collections::{BinaryHeap, HashMap, HashSet};

use super::Listing;
use crate::engine::problem::Problem;
use crate::tree::{Entry, EntryKind};

/// One listing's entries not given out yet, in path order; `head` is the smallest.
struct Cursor {
    head: Entry,
    rest: std::vec::IntoIter<Entry>,
}

impl PartialEq for Cursor {
    fn eq(&self, other: &Self) -> bool {
        self.head.path == other.head.path
    }
}

impl Eq for Cursor {}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cursor {
    /// Reversed: the heap's top is the cursor with the smallest head.
    fn cmp(&self, other: &Self) -> Ordering {
        other.head.path.cmp(&self.head.path)
    }
}

/// The merge of the listings into one stream in path byte order.
pub(super) struct InOrder {
    heap: BinaryHeap<Cursor>,
    /// Listings that came back and are not merged yet, by folder, and how many entries they
    /// hold in all.
    ready: HashMap<Vec<u8>, Vec<Entry>>,
    waiting: usize,
    /// Folders that are being listed and have not been given out yet.
    entered: HashSet<Vec<u8>>,
    /// The folder given out last whose listing must be merged before anything else goes.
    awaiting: Option<Vec<u8>>,
    /// Paths whose state could not be read, so far; sorted, without duplicates.
    failed: Vec<Vec<u8>>,
    warnings: Vec<Problem>,
}

impl InOrder {
    /// A merge that starts with the listing of the source folder itself (path empty).
    pub(super) fn new() -> InOrder {
        InOrder {
            heap: BinaryHeap::new(),
            ready: HashMap::new(),
            waiting: 0,
            entered: HashSet::new(),
            awaiting: Some(Vec::new()),
            failed: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Takes one folder's listing (its entries sorted) and gives `emit` every entry that can
    /// now go, with the failed paths known so far.
    pub(super) fn take(&mut self, l: Listing, emit: &mut dyn FnMut(Entry, &[Vec<u8>])) {
        for f in l.failed {
            if let Err(at) = self.failed.binary_search(&f) {
                self.failed.insert(at, f);
            }
        }
        self.warnings.extend(l.warnings);
        self.entered.extend(l.subdirs);
        self.waiting += l.entries.len();
        self.ready.insert(l.dir, l.entries);
        self.give(emit);
    }

    /// Entries of listings that came back ahead of their turn.
    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    fn give(&mut self, emit: &mut dyn FnMut(Entry, &[Vec<u8>])) {
        loop {
            if let Some(d) = &self.awaiting {
                let Some(v) = self.ready.remove(d) else {
                    return;
                };
                self.waiting -= v.len();
                self.awaiting = None;
                let mut rest = v.into_iter();
                if let Some(head) = rest.next() {
                    self.heap.push(Cursor { head, rest });
                }
            }
            // The smallest head is taken in place: the cursor stays on top (no move) while its
            // next entry is still the smallest.
            let Some(mut top) = self.heap.peek_mut() else {
                return;
            };
            let e = match top.rest.next() {
                Some(next) => std::mem::replace(&mut top.head, next),
                None => PeekMut::pop(top).head,
            };
            if e.kind == EntryKind::Dir && self.entered.remove(&e.path) {
                self.awaiting = Some(e.path.clone());
            }
            emit(e, &self.failed);
        }
    }

    /// The warnings (sorted by path) and failed paths, once every listing came back; None if
    /// one is missing (the walk stopped early), so that nothing is taken for deleted.
    pub(super) fn finish(mut self) -> Option<(Vec<Problem>, Vec<Vec<u8>>)> {
        if self.awaiting.is_some() || !self.heap.is_empty() || !self.ready.is_empty() {
            return None;
        }
        self.warnings.sort_by(|a, b| a.path.cmp(&b.path));
        Some((self.warnings, self.failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing of `dir` whose children are `names` (a trailing '/' marks a folder entered).
    fn listing(dir: &str, names: &[&str]) -> Listing {
        let mut l = Listing {
            dir: dir.as_bytes().to_vec(),
            ..Listing::default()
        };
        for n in names {
            let (name, is_dir) = n.strip_suffix('/').map_or((*n, false), |d| (d, true));
            let p = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            let kind = if is_dir {
                l.subdirs.push(p.as_bytes().to_vec());
                EntryKind::Dir
            } else {
                EntryKind::File
            };
            l.entries.push(Entry::bare(&p, kind));
        }
        l.entries.sort_by(|a, b| a.path.cmp(&b.path));
        l
    }

    #[test]
    fn listings_in_any_order_come_out_in_path_byte_order() {
        let mut ls = vec![
            listing("", &["a/", "a-b", "a.txt", "z"]),
            listing("a", &["b/", "b-c", "c"]),
            listing("a/b", &["x", "y/"]),
            listing("a/b/y", &[]),
        ];
        // Deepest first: nothing can go until the root's listing is in.
        ls.reverse();
        let mut out: Vec<String> = Vec::new();
        let mut m = InOrder::new();
        let mut counts = Vec::new();
        for l in ls {
            m.take(l, &mut |e, _| {
                out.push(String::from_utf8(e.path).unwrap());
            });
            counts.push(out.len());
        }
        assert_eq!(counts, [0, 0, 0, 9]);
        let mut sorted = out.clone();
        sorted.sort();
        assert_eq!(out, sorted);
        assert_eq!(out.len(), 9);
        assert!(m.finish().is_some());
    }

    #[test]
    fn an_entry_waits_for_the_listing_of_a_folder_before_it() {
        let mut m = InOrder::new();
        let mut out: Vec<String> = Vec::new();
        let mut push = |m: &mut InOrder, l| {
            m.take(l, &mut |e, _| out.push(String::from_utf8(e.path).unwrap()));
        };
        push(&mut m, listing("", &["a/", "b"]));
        push(&mut m, listing("a", &["x"]));
        assert_eq!(out, ["a", "a/x", "b"]);
    }

    #[test]
    fn listings_ahead_of_their_turn_are_counted_until_merged() {
        let mut m = InOrder::new();
        m.take(listing("a", &["x", "y"]), &mut |_, _| {});
        m.take(listing("b", &["z"]), &mut |_, _| {});
        assert_eq!(m.waiting(), 3);
        m.take(listing("", &["a/", "b/"]), &mut |_, _| {});
        assert_eq!(m.waiting(), 0);
        assert!(m.finish().is_some());
    }

    #[test]
    fn a_missing_listing_is_not_a_finished_walk() {
        let mut m = InOrder::new();
        m.take(listing("", &["a/", "b"]), &mut |_, _| {});
        assert!(m.finish().is_none());
    }

    #[test]
    fn failed_paths_are_known_before_what_follows_them() {
        let mut m = InOrder::new();
        let mut root = listing("", &["a/", "b"]);
        root.failed.push(b"b".to_vec());
        m.take(root, &mut |_, _| {});
        let mut bad = listing("a", &[]);
        bad.failed.push(b"a".to_vec());
        let mut seen = Vec::new();
        m.take(bad, &mut |e, failed| seen.push((e.path, failed.to_vec())));
        assert_eq!(seen, [(b"b".to_vec(), vec![b"a".to_vec(), b"b".to_vec()])]);
    }
}
