//! What became of each planned item once the sink took it, kept in 33 bytes an item: a full of
//! a million small files notes a million digests, and an enum with a boxed variant beside a
//! digest took 40 bytes each. The rare file that changed while it was read keeps its fresh
//! stat data in a side table.

use std::collections::HashMap;

use crate::hash::Digest;
use crate::tree::Entry;
use crate::xattr::Xattrs;

/// What became of one item.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Fate<'a> {
    /// Read as walked: only the digest (and whether it was stored sparse) is new (the common
    /// case).
    Digest(Digest, bool),
    /// The file changed between the walk and the read: its fresh stat data and digest.
    Fresh(&'a Entry),
    Failed,
}

/// The state byte of a slot (one byte: no variant carries data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// As planned: nothing read.
    Planned,
    Blake3,
    Blake3Sparse,
    Md5,
    Md5Sparse,
    Fresh,
    Failed,
}

/// One item's slot: its state and, for a digest, the digest's bytes (alignment 1, so 33
/// bytes in a vector).
#[derive(Clone, Copy)]
struct Slot {
    state: State,
    bytes: [u8; 32],
}

/// By plan index: what became of each item.
pub(super) struct Outcomes {
    slots: Vec<Slot>,
    fresh: HashMap<usize, Box<Entry>>,
    /// Extended attributes read with the file (the plan left them unread) that are not the
    /// planned entry's.
    xattrs: HashMap<usize, Option<Box<Xattrs>>>,
}

impl Outcomes {
    /// `n` items, all as planned.
    pub fn new(n: usize) -> Outcomes {
        let planned = Slot {
            state: State::Planned,
            bytes: [0; 32],
        };
        Outcomes {
            slots: vec![planned; n],
            fresh: HashMap::new(),
            xattrs: HashMap::new(),
        }
    }

    /// What became of item `idx`; None: as planned, nothing read.
    pub fn get(&self, idx: usize) -> Option<Fate<'_>> {
        let s = &self.slots[idx];
        match s.state {
            State::Planned => None,
            State::Blake3 | State::Blake3Sparse => {
                let sparse = s.state == State::Blake3Sparse;
                Some(Fate::Digest(Digest::Blake3(s.bytes), sparse))
            }
            State::Md5 | State::Md5Sparse => {
                let b: [u8; 16] = s.bytes[..16].try_into().expect("16 bytes");
                Some(Fate::Digest(Digest::Md5(b), s.state == State::Md5Sparse))
            }
            State::Fresh => Some(Fate::Fresh(&self.fresh[&idx])),
            State::Failed => Some(Fate::Failed),
        }
    }

    /// Item `idx` was read as walked and has digest `d`.
    pub fn set_digest(&mut self, idx: usize, d: Digest, sparse: bool) {
        let mut bytes = [0u8; 32];
        bytes[..d.as_bytes().len()].copy_from_slice(d.as_bytes());
        let state = match (d, sparse) {
            (Digest::Blake3(_), false) => State::Blake3,
            (Digest::Blake3(_), true) => State::Blake3Sparse,
            (Digest::Md5(_), false) => State::Md5,
            (Digest::Md5(_), true) => State::Md5Sparse,
        };
        self.forget_fresh(idx);
        self.slots[idx] = Slot { state, bytes };
    }

    /// Item `idx` changed between the walk and the read: `e` is what it is now.
    pub fn set_fresh(&mut self, idx: usize, e: Entry) {
        self.slots[idx].state = State::Fresh;
        self.fresh.insert(idx, Box::new(e));
    }

    /// Item `idx` was read with these extended attributes, not the planned entry's.
    pub fn set_xattrs(&mut self, idx: usize, x: Option<Box<Xattrs>>) {
        self.xattrs.insert(idx, x);
    }

    /// The extended attributes item `idx` was read with when they are not the planned
    /// entry's.
    pub fn new_xattrs(&self, idx: usize) -> Option<&Option<Box<Xattrs>>> {
        // Nearly always empty: no hashing per item then (this is asked for every item).
        if self.xattrs.is_empty() {
            return None;
        }
        self.xattrs.get(&idx)
    }

    /// Drops the side-table entry of a slot that held a fresh entry (only such a slot has one).
    fn forget_fresh(&mut self, idx: usize) {
        if self.slots[idx].state == State::Fresh {
            self.fresh.remove(&idx);
        }
    }

    /// Item `idx` could not be read.
    pub fn set_failed(&mut self, idx: usize) {
        self.forget_fresh(idx);
        if !self.xattrs.is_empty() {
            self.xattrs.remove(&idx);
        }
        self.slots[idx].state = State::Failed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashAlgo;
    use crate::tree::EntryKind;

    #[test]
    fn each_fate_reads_back_as_it_was_set_in_33_bytes_a_slot() {
        assert_eq!(std::mem::size_of::<Slot>(), 33);
        let mut o = Outcomes::new(5);
        let b = HashAlgo::Blake3.digest(b"x");
        let m = HashAlgo::Md5.digest(b"x");
        o.set_digest(0, b, false);
        o.set_digest(1, m, true);
        let mut e = Entry::bare("f", EntryKind::File);
        e.digest = Some(b);
        o.set_fresh(2, e.clone());
        o.set_failed(3);
        assert_eq!(o.get(0), Some(Fate::Digest(b, false)));
        assert_eq!(o.get(1), Some(Fate::Digest(m, true)));
        assert_eq!(o.get(2), Some(Fate::Fresh(&e)));
        assert_eq!(o.get(3), Some(Fate::Failed));
        assert_eq!(o.get(4), None);
        o.set_digest(2, b, false);
        assert_eq!(o.get(2), Some(Fate::Digest(b, false)));
    }
}
