//! The members a restore wants from one archive: a vector sorted by member name, searched as the
//! archive streams past, each member taken once.
//!
//! A restore of a million small files wants a million members. A hash map of them touched
//! every page of a table twice its size (its buckets double past what it holds, spread at
//! random); the sorted vector is about half that, and the pages it never filled are never
//! touched.

/// A needed content: where it goes.
#[derive(Debug)]
pub(super) struct Wanted {
    /// Indices into the restore's file list; the first is written from the archive, the
    /// others copied from it.
    pub dests: Vec<usize>,
    pub size: u64,
}

/// The wanted members of one archive.
#[derive(Debug, Default)]
pub(super) struct Wants {
    /// By member name; None once taken. Unsorted until [`Wants::seal`].
    list: Vec<(Box<[u8]>, Option<Wanted>)>,
    left: usize,
}

impl Wants {
    /// Notes that file `dest` needs the content stored as `member` (`size` bytes).
    pub fn add(&mut self, member: Vec<u8>, dest: usize, size: u64) {
        let w = Wanted {
            dests: vec![dest],
            size,
        };
        self.list.push((member.into_boxed_slice(), Some(w)));
    }

    /// Sorts by member and merges the files that need the same member (in the order they were
    /// added); call once, after the last [`Wants::add`].
    pub fn seal(&mut self) {
        self.list.sort_by(|a, b| a.0.cmp(&b.0));
        self.list.dedup_by(|later, first| {
            if later.0 != first.0 {
                return false;
            }
            if let (Some(l), Some(f)) = (later.1.as_mut(), first.1.as_mut()) {
                f.dests.append(&mut l.dests);
            }
            true
        });
        self.list.shrink_to_fit();
        self.left = self.list.len();
    }

    /// True when every wanted member has been taken.
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// Takes the member of this name, if it is wanted and not taken yet.
    pub fn take(&mut self, name: &[u8]) -> Option<Wanted> {
        let i = self.list.binary_search_by(|(m, _)| (**m).cmp(name)).ok()?;
        let w = self.list[i].1.take()?;
        self.left -= 1;
        Some(w)
    }

    /// The wanted members not taken yet, taken now.
    pub fn drain(&mut self) -> impl Iterator<Item = Wanted> + '_ {
        self.left = 0;
        self.list.iter_mut().filter_map(|(_, w)| w.take())
    }

    /// Every destination of the members not taken yet.
    pub fn dests(&self) -> impl Iterator<Item = usize> + '_ {
        self.list
            .iter()
            .filter_map(|(_, w)| w.as_ref())
            .flat_map(|w| w.dests.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_merge_by_name_and_are_taken_once() {
        let mut w = Wants::default();
        w.add(b"src/b".to_vec(), 2, 5);
        w.add(b"src/a".to_vec(), 0, 3);
        w.add(b"src/b".to_vec(), 7, 5);
        w.add(b"src/c".to_vec(), 9, 1);
        w.seal();
        assert_eq!(w.dests().collect::<Vec<_>>(), vec![0, 2, 7, 9]);
        assert_eq!(w.take(b"src/b").map(|x| x.dests), Some(vec![2, 7]));
        assert!(w.take(b"src/b").is_none());
        assert!(w.take(b"src/zz").is_none());
        assert!(!w.is_empty());
        let rest: Vec<Vec<usize>> = w.drain().map(|x| x.dests).collect();
        assert_eq!(rest, vec![vec![0], vec![9]]);
        assert!(w.is_empty());
    }
}
