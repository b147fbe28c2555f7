//! The members a restore wants from one archive: a vector sorted by member name, searched as the
//! archive streams past, each member taken once.
//!
//! A restore of a million small files wants a million members, so a wanted member is kept
//! small. A hash map of them touched every page of a table twice its size (its buckets double
//! past what it holds, spread at random); the sorted vector is about half that. And the name is
//! not stored twice: every member of an archive is `TOP/path`, and nearly always `path` is the
//! path of the first file that wants it (a content stored under the file's own name), which
//! the restore holds anyway; only the others keep a name of their own. One destination, the
//! common case, needs no allocation either.

use thin_vec::ThinVec;

use crate::tree::Entry;

/// A file's number in the restore's file list, as a slot keeps it.
fn file_number(i: usize) -> u32 {
    u32::try_from(i).expect("a restore holds fewer than 2^32 files")
}

/// A needed content: where it goes.
#[derive(Debug)]
pub(super) struct Wanted {
    /// Indices into the restore's file list; the first is written from the archive, the
    /// others copied from it.
    pub dests: Vec<usize>,
    pub size: u64,
}

/// One wanted member, not taken yet or taken: 32 bytes (thin vectors, which hold nothing
/// on the heap while empty; file numbers as u32).
#[derive(Debug)]
struct Slot {
    /// The member's name after `TOP/` when it is not the path of file `first`.
    own: Option<ThinVec<u8>>,
    first: u32,
    /// Further destinations, in the order they were added.
    more: ThinVec<u32>,
    size: u64,
    taken: bool,
}

impl Slot {
    /// The name after `TOP/`.
    fn key<'a>(&'a self, files: &'a [&Entry]) -> &'a [u8] {
        self.own
            .as_deref()
            .unwrap_or(&files[self.first as usize].path)
    }

    fn take(&mut self) -> Option<Wanted> {
        if self.taken {
            return None;
        }
        self.taken = true;
        let mut dests = Vec::with_capacity(1 + self.more.len());
        dests.push(self.first as usize);
        dests.extend(self.more.drain(..).map(|d| d as usize));
        Some(Wanted {
            dests,
            size: self.size,
        })
    }
}

/// The wanted members of one archive.
#[derive(Debug)]
pub(super) struct Wants {
    /// `TOP/`: what every member name of the archive starts with.
    prefix: Vec<u8>,
    /// Members below `TOP/`, by the rest of their name. Unsorted until [`Wants::seal`].
    list: Vec<Slot>,
    /// Members with another name (never written by vault; kept so that nothing is lost), by
    /// their whole name.
    other: Vec<(Box<[u8]>, Slot)>,
    left: usize,
}

impl Wants {
    /// Wants from an archive whose members lie in folder `top` (the source's name).
    pub fn new(top: &[u8]) -> Wants {
        let mut prefix = top.to_vec();
        prefix.push(b'/');
        Wants {
            prefix,
            list: Vec::new(),
            other: Vec::new(),
            left: 0,
        }
    }

    /// Notes that file `dest` (whose path is `path`) needs the content stored as `member`
    /// (`size` bytes).
    pub fn add(&mut self, member: Vec<u8>, dest: usize, path: &[u8], size: u64) {
        let mut slot = Slot {
            own: None,
            first: file_number(dest),
            more: ThinVec::new(),
            size,
            taken: false,
        };
        match member.strip_prefix(self.prefix.as_slice()) {
            Some(rest) if rest == path => self.list.push(slot),
            Some(rest) => {
                slot.own = Some(ThinVec::from(rest));
                self.list.push(slot);
            }
            None => self.other.push((member.into_boxed_slice(), slot)),
        }
    }

    /// Sorts by member and merges the files that need the same member (in the order they were
    /// added); call once, after the last [`Wants::add`], with the restore's file list.
    pub fn seal(&mut self, files: &[&Entry]) {
        self.list.sort_by(|a, b| a.key(files).cmp(b.key(files)));
        self.list.dedup_by(|later, first| {
            if later.key(files) != first.key(files) {
                return false;
            }
            first.more.push(later.first);
            first.more.append(&mut later.more);
            true
        });
        self.list.shrink_to_fit();
        self.other.sort_by(|a, b| a.0.cmp(&b.0));
        self.other.dedup_by(|later, first| {
            if later.0 != first.0 {
                return false;
            }
            first.1.more.push(later.1.first);
            first.1.more.append(&mut later.1.more);
            true
        });
        self.left = self.list.len() + self.other.len();
    }

    /// True when every wanted member has been taken.
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// Takes the member of this name, if it is wanted and not taken yet.
    pub fn take(&mut self, name: &[u8], files: &[&Entry]) -> Option<Wanted> {
        let slot = match name.strip_prefix(self.prefix.as_slice()) {
            Some(rest) => {
                let i = self
                    .list
                    .binary_search_by(|s| s.key(files).cmp(rest))
                    .ok()?;
                &mut self.list[i]
            }
            None => {
                let i = self.other.binary_search_by(|o| (*o.0).cmp(name)).ok()?;
                &mut self.other[i].1
            }
        };
        let w = slot.take()?;
        self.left -= 1;
        Some(w)
    }

    /// The wanted members not taken yet, taken now.
    pub fn drain(&mut self) -> impl Iterator<Item = Wanted> + '_ {
        self.left = 0;
        let others = self.other.iter_mut().map(|o| &mut o.1);
        self.list.iter_mut().chain(others).filter_map(Slot::take)
    }

    /// Every destination of the members not taken yet.
    pub fn dests(&self) -> impl Iterator<Item = usize> + '_ {
        let others = self.other.iter().map(|o| &o.1);
        self.list
            .iter()
            .chain(others)
            .filter(|s| !s.taken)
            .flat_map(|s| std::iter::once(s.first).chain(s.more.iter().copied()))
            .map(|d| d as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::EntryKind;

    fn file(path: &str) -> Entry {
        Entry {
            size: 1,
            ..Entry::bare(path, EntryKind::File)
        }
    }

    #[test]
    fn members_merge_by_name_and_are_taken_once() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        let owned: Vec<Entry> = (0..10).map(|i| file(&format!("f{i}"))).collect();
        let files: Vec<&Entry> = owned.iter().collect();
        let mut w = Wants::new(b"src");
        // f2 and f7 share the content stored as src/b; f0 has its own; f9's is f9's path.
        w.add(b"src/b".to_vec(), 2, b"f2", 5);
        w.add(b"src/f0".to_vec(), 0, b"f0", 3);
        w.add(b"src/b".to_vec(), 7, b"f7", 5);
        w.add(b"src/f9".to_vec(), 9, b"f9", 1);
        w.add(b"elsewhere/x".to_vec(), 4, b"f4", 2);
        w.seal(&files);
        assert_eq!(w.dests().collect::<Vec<_>>(), vec![2, 7, 0, 9, 4]);
        assert_eq!(w.take(b"src/b", &files).map(|x| x.dests), Some(vec![2, 7]));
        assert!(w.take(b"src/b", &files).is_none());
        assert!(w.take(b"src/zz", &files).is_none());
        assert!(w.take(b"srcf0", &files).is_none());
        assert_eq!(w.take(b"elsewhere/x", &files).map(|x| x.size), Some(2));
        assert!(!w.is_empty());
        let rest: Vec<Vec<usize>> = w.drain().map(|x| x.dests).collect();
        assert_eq!(rest, vec![vec![0], vec![9]]);
        assert!(w.is_empty());
    }
}
