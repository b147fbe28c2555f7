//! The contents stored in the archive being written, held compactly: a full of a million small
//! files stores about a million contents, and each costs the memory of the whole backup.
//!
//! A content is its digest, its size and the plan item whose path names its tar member (the
//! member name itself is made again when needed, not kept). The index from digest to content
//! holds only positions in that list, hashed by the digest's first bytes: a digest is already
//! a uniform hash, and no one can make many distinct contents share those bytes.

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::hash::Digest;

/// One stored content.
#[derive(Clone, Copy, Debug)]
pub(super) struct StoredContent {
    pub size: u64,
    /// The plan item stored as this content's member.
    pub item: usize,
    pub digest: Digest,
}

/// The contents of this archive, in the order they were stored, with an index by digest.
#[derive(Default)]
pub(super) struct Stored {
    list: Vec<StoredContent>,
    index: HashTable<usize>,
}

impl Stored {
    /// Room for `n` contents (the number of files to read bounds it), so that the list does
    /// not double past what it needs.
    pub fn with_capacity(n: usize) -> Stored {
        Stored {
            list: Vec::with_capacity(n),
            index: HashTable::with_capacity(n),
        }
    }

    /// The content with this digest, if this archive stores it.
    pub fn get(&self, d: &Digest) -> Option<&StoredContent> {
        self.index
            .find(prefix(d), |&i| self.list[i].digest == *d)
            .map(|&i| &self.list[i])
    }

    /// Notes a content (the first one stored under a digest wins).
    pub fn insert(&mut self, c: StoredContent) {
        let list = &mut self.list;
        let at = list.len();
        let found = self.index.entry(
            prefix(&c.digest),
            |&i| list[i].digest == c.digest,
            |&i| prefix(&list[i].digest),
        );
        if let Entry::Vacant(v) = found {
            v.insert(at);
            list.push(c);
        }
    }

    /// The list, the index dropped, sorted by digest: the manifest's key order.
    pub fn into_sorted(self) -> Vec<StoredContent> {
        let mut list = self.list;
        list.sort_unstable_by_key(|c| prefix(&c.digest));
        list
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
    fn the_first_content_of_a_digest_is_kept_and_the_list_comes_out_in_key_order() {
        let d = |s: &[u8]| HashAlgo::Blake3.digest(s);
        let mut s = Stored::with_capacity(2);
        s.insert(StoredContent {
            size: 1,
            item: 7,
            digest: d(b"a"),
        });
        s.insert(StoredContent {
            size: 1,
            item: 9,
            digest: d(b"a"),
        });
        s.insert(StoredContent {
            size: 2,
            item: 3,
            digest: d(b"bb"),
        });
        assert_eq!(s.get(&d(b"a")).map(|c| c.item), Some(7));
        assert!(s.get(&d(b"c")).is_none());
        let list = s.into_sorted();
        assert_eq!(list.len(), 2);
        assert!(prefix(&list[0].digest) <= prefix(&list[1].digest));
    }
}
