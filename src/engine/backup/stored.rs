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
    pub fn into_sorted(self, digest_of: DigestOf<'_>) -> Vec<u32> {
        let mut items: Vec<u32> = self.index.into_iter().collect();
        items.sort_unstable_by_key(|&i| prefix(&digest_of(i as usize)));
        items
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
}
