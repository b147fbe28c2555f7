//! The contents stored in the archive being written, held compactly: a full of a million small
//! files stores about a million contents, and each costs the memory of the whole backup.
//!
//! A content is known by the plan item stored as its member; the digest and size are that
//! item's (its outcome holds them), so the index keeps nothing but item numbers, hashed by the
//! digest's first bytes: a digest is already a uniform hash, and no one can make many distinct
//! contents share those bytes.

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::hash::Digest;

/// The digest of a stored item.
pub(super) type DigestOf<'a> = &'a dyn Fn(usize) -> Digest;

/// The items whose content this archive stores, indexed by digest.
#[derive(Default)]
pub(super) struct Stored {
    /// Item numbers, 4 bytes each: the table has room for twice the contents it may hold.
    index: HashTable<u32>,
}

impl Stored {
    /// Room for `n` contents (the number of files to read bounds it).
    pub fn with_capacity(n: usize) -> Stored {
        Stored {
            index: HashTable::with_capacity(n),
        }
    }

    /// The item stored with this digest, if this archive stores it.
    pub fn get(&self, d: &Digest, digest_of: DigestOf<'_>) -> Option<usize> {
        self.index
            .find(prefix(d), |&i| digest_of(i as usize) == *d)
            .map(|&i| i as usize)
    }

    /// Notes that `item` is stored with digest `d` (the first item stored under a digest
    /// wins). `digest_of` must answer for every item noted before.
    pub fn insert(&mut self, item: usize, d: &Digest, digest_of: DigestOf<'_>) {
        let found = self.index.entry(
            prefix(d),
            |&i| digest_of(i as usize) == *d,
            |&i| prefix(&digest_of(i as usize)),
        );
        if let Entry::Vacant(v) = found {
            v.insert(u32::try_from(item).expect("a plan holds fewer than 2^32 items"));
        }
    }

    /// The stored items in digest order (the manifest's key order), the index dropped.
    ///
    /// A counting sort on the digests' first two bytes, then a sort of each (small) bucket:
    /// `digest_of` is a random access into a large table, and a comparison sort called it
    /// twenty times an item.
    pub fn into_sorted(self, digest_of: DigestOf<'_>) -> Vec<u32> {
        let bucket = |i: u32| (prefix(&digest_of(i as usize)) >> 48) as usize;
        let mut starts = vec![0usize; (1 << 16) + 1];
        for &i in self.index.iter() {
            starts[bucket(i) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let mut next = starts.clone();
        let mut out = vec![0u32; self.index.len()];
        for &i in self.index.iter() {
            let b = bucket(i);
            out[next[b]] = i;
            next[b] += 1;
        }
        drop(self.index);
        for w in starts.windows(2) {
            out[w[0]..w[1]].sort_unstable_by_key(|&i| prefix(&digest_of(i as usize)));
        }
        out
    }
}

/// The first 8 bytes of a digest as a big-endian number: its place in the blobs b-tree, nearly
/// (sorting by it gives locality, and is cheaper than comparing slices).
fn prefix(d: &Digest) -> u64 {
    let mut k = [0u8; 8];
    k.copy_from_slice(&d.as_bytes()[..8]);
    u64::from_be_bytes(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashAlgo;

    #[test]
    fn the_first_item_of_a_digest_is_kept_and_the_items_come_out_in_key_order() {
        let contents: [&[u8]; 4] = [b"a", b"bb", b"a", b"ccc"];
        let digests: Vec<Digest> = contents
            .iter()
            .map(|c| HashAlgo::Blake3.digest(c))
            .collect();
        let of = |i: usize| digests[i];
        let mut s = Stored::with_capacity(1);
        for (i, d) in digests.iter().enumerate() {
            s.insert(i, d, &of);
        }
        assert_eq!(s.get(&digests[2], &of), Some(0));
        assert_eq!(s.get(&HashAlgo::Blake3.digest(b"zz"), &of), None);
        let items = s.into_sorted(&of);
        assert_eq!(items.len(), 3);
        assert!(items
            .windows(2)
            .all(|w| prefix(&of(w[0] as usize)) <= prefix(&of(w[1] as usize))));
    }

    #[test]
    fn many_contents_come_out_once_each_in_key_order() {
        let digests: Vec<Digest> = (0..20_000u32)
            .map(|i| HashAlgo::Blake3.digest(&i.to_le_bytes()))
            .collect();
        let of = |i: usize| digests[i];
        let mut s = Stored::with_capacity(16);
        for (i, d) in digests.iter().enumerate() {
            s.insert(i, d, &of);
        }
        let items = s.into_sorted(&of);
        let mut seen = items.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..20_000u32).collect::<Vec<_>>());
        assert!(items
            .windows(2)
            .all(|w| of(w[0] as usize) <= of(w[1] as usize)));
    }
}
