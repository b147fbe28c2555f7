//! Reading on the pool: each worker opens, stats and reads (or hashes) a batch of planned
//! files; the thread that owns the archive gets the contents back in archive order.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::origin::Origin;
use crate::engine::batch::{Batcher, INLINE_MAX};
use crate::engine::fsx;
use crate::engine::paths::split_parent;
use crate::engine::plan::{self, Plan, ReadReason};
use crate::engine::walk::entry_from_meta;
use crate::hash::{hash_reader, Digest, HashAlgo};
use crate::manifest::Kind;
use crate::sparse::{Map, MemberStream};
use crate::tree::{Entry, EntryKind};

/// What a worker found when reading one file.
pub(super) enum Content {
    /// Nothing to read (not a file, or stat unchanged).
    Skip,
    /// Read whole.
    Inline {
        fresh: Entry,
        data: Vec<u8>,
        digest: Digest,
        changed: bool,
    },
    /// Large file hashed; the writer reads it again if it must be stored.
    Hashed {
        fresh: Entry,
        digest: Digest,
        read: u64,
        changed: bool,
    },
    /// Large file left for the writer to read once while archiving.
    Deferred {
        fresh: Entry,
    },
    Failed(String),
}

/// What a reading worker keeps between files: its read buffer, and within one batch the folder
/// of the file it read last, open ([`fsx::FolderCache`]).
pub(super) struct Worker {
    pub(super) buf: Vec<u8>,
    folder: fsx::FolderCache,
}

impl Worker {
    pub(super) fn new() -> Worker {
        Worker {
            buf: vec![0u8; 256 * 1024],
            folder: fsx::FolderCache::default(),
        }
    }

    /// Forgets the open folder (at the start of a batch).
    pub(super) fn start_batch(&mut self) {
        self.folder.forget();
    }

    /// Opens `rel` (relative to `src`) for reading, never through a symlink at its last
    /// component and never blocking on a FIFO swapped in under its name.
    pub(super) fn open(&mut self, src: &Path, rel: &[u8]) -> io::Result<File> {
        let (dir, name) = split_parent(rel);
        let fd = self.folder.open(src, dir)?;
        fsx::open_nofollow_at(fd, name)
    }
}

pub(super) fn open_nofollow(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
}

/// `fstat` of an open file as a fresh entry for `item`; refuses anything but a regular file.
/// Its extended attributes are read from the open file when the plan left them unread (a file
/// to read skips the attribute pass: no path lookup for them); otherwise they are the planned
/// ones (a change since moved ctime, so the next backup sees it).
pub(super) fn fresh_entry(f: &File, item: &plan::Item) -> io::Result<Entry> {
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::other("is no longer a regular file"));
    }
    let mut e = entry_from_meta(item.entry.path.clone(), EntryKind::File, &m);
    e.xattrs = if item.xattrs_unread {
        let read = crate::xattr::read_fd(f.as_raw_fd())
            .map_err(|err| io::Error::new(err.kind(), format!("extended attributes: {err}")))?;
        read.map(Box::new)
    } else {
        item.entry.xattrs.clone()
    };
    Ok(e)
}

pub(super) fn stat_moved(f: &File, before: &Entry) -> bool {
    match f.metadata() {
        Ok(m) => {
            m.size() != before.size
                || m.mtime() * 1_000_000_000 + m.mtime_nsec() != before.mtime_ns
                || m.ctime() * 1_000_000_000 + m.ctime_nsec() != before.stat.ctime_ns
        }
        Err(_) => true,
    }
}

/// The data regions of a file worth storing sparse; None to store it whole. Only files whose
/// allocated blocks fall short of their size are asked (one more `fstat`, then `lseek`s).
pub(super) fn sparse_map(f: &File, size: u64) -> Option<Map> {
    let m = f.metadata().ok()?;
    if m.blocks().saturating_mul(512) >= size {
        return None;
    }
    Map::of(f, size).ok().flatten()
}

/// Hashes a sparse file as it would be stored (map block and data regions; holes unread).
fn hash_sparse(
    (f, idx, origin): (&File, usize, &Origin<'_>),
    mut fresh: Entry,
    map: &Map,
    algo: HashAlgo,
    buf: &mut [u8],
) -> io::Result<Content> {
    let mut s = MemberStream::new(f, map);
    let (digest, _) = hash_reader(algo, &mut s, buf)?;
    fresh.sparse = true;
    let changed = s.shrank || origin.moved(f, idx, &fresh);
    Ok(Content::Hashed {
        fresh,
        digest,
        read: map.data_len(),
        changed,
    })
}

/// Reads a small file whose stat says `size`, asking for one byte more. A read that returns
/// fewer bytes than asked is the end of the file, so a whole file usually takes one `read`
/// (not two, the second to see the end). The extra byte, when it comes, shows a file larger
/// than its stat (it grew, or its file system reports sizes it does not keep): the length then
/// differs from `size`, and the caller flags the read as changed.
fn read_small(mut f: &File, size: u64) -> io::Result<Vec<u8>> {
    let want = size as usize + 1;
    let mut data = vec![0u8; want];
    let mut got = 0;
    while got < want {
        let asked = want - got;
        match f.read(&mut data[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if n < asked {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    data.truncate(got);
    Ok(data)
}

pub(super) fn read_one(
    origin: &Origin<'_>,
    (idx, item): (usize, &plan::Item),
    algo: HashAlgo,
    prehash: bool,
    w: &mut Worker,
) -> Content {
    if !reads(item) {
        return Content::Skip;
    }
    if let Some(c) = origin.small(idx, item, algo) {
        return c;
    }
    let mut run = || -> io::Result<Content> {
        let f = origin.open(w, idx, item)?;
        let buf = &mut w.buf;
        let fresh = origin.fresh(&f, item)?;
        if fresh.size <= INLINE_MAX {
            let data = read_small(&f, fresh.size)?;
            let changed = data.len() as u64 != fresh.size || origin.moved(&f, idx, &fresh);
            let digest = algo.digest(&data);
            Ok(Content::Inline {
                fresh,
                data,
                digest,
                changed,
            })
        } else if prehash {
            if let Some(map) = sparse_map(&f, fresh.size) {
                return hash_sparse((&f, idx, origin), fresh, &map, algo, buf);
            }
            let (digest, read) = hash_reader(algo, &f, buf)?;
            let changed = read != fresh.size || origin.moved(&f, idx, &fresh);
            Ok(Content::Hashed {
                fresh,
                digest,
                read,
                changed,
            })
        } else {
            Ok(Content::Deferred { fresh })
        }
    };
    match run() {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Content::Failed("vanished before it could be read".into())
        }
        Err(e) => Content::Failed(format!("cannot read: {e}")),
    }
}

/// Whether the pool reads an item's content: a file the plan reads.
pub(super) fn reads(it: &plan::Item) -> bool {
    it.entry.kind == EntryKind::File && it.read != ReadReason::No
}

/// Whether an item goes to the archive's sink (in one of the [`batches`]): every item of a
/// full, the files to read of an incremental.
pub(super) fn archived(it: &plan::Item, kind: Kind) -> bool {
    kind == Kind::Full || it.read != ReadReason::No
}

/// The plan's items in the order they go into the archive, in batches for the pool, made as
/// the pool takes them (a full of a million files would otherwise hold every batch at once). A
/// full has every item, each folder's contents right after the folder (GNU tar needs that to
/// restore folder times), which is not quite path byte order; an incremental only what is read.
pub(super) fn batches(plan: &Plan, kind: Kind) -> impl Iterator<Item = Vec<usize>> + '_ {
    let index = |i: usize| u32::try_from(i).expect("a plan holds fewer than 2^32 items");
    let indices: Vec<u32> = if kind == Kind::Full {
        let mut v: Vec<u32> = (0..plan.items.len()).map(index).collect();
        debug_assert!(plan.items.iter().all(|it| archived(it, kind)));
        v.sort_by(|&a, &b| {
            let (a, b) = (&plan.items[a as usize], &plan.items[b as usize]);
            crate::tree::path_cmp(&a.entry.path, &b.entry.path)
        });
        v
    } else {
        (0..plan.items.len())
            .filter(|&i| archived(&plan.items[i], kind))
            .map(index)
            .collect()
    };
    let mut indices = indices.into_iter();
    let mut batch = Batcher::default();
    std::iter::from_fn(move || {
        for idx in indices.by_ref() {
            let it = &plan.items[idx as usize];
            let bytes = if it.read != ReadReason::No {
                it.entry.size
            } else {
                0
            };
            if let Some(b) = batch.add(idx as usize, bytes) {
                return Some(b);
            }
        }
        (!batch.is_empty()).then(|| batch.take())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_read_shows_a_file_larger_or_smaller_than_its_stat() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let f = File::open(&p).unwrap();
        // As the stat said; one byte more than the stat (a file whose size is not kept);
        // fewer than the stat (it shrank).
        assert_eq!(read_small(&f, 5).unwrap(), b"hello");
        let f = File::open(&p).unwrap();
        assert_eq!(read_small(&f, 0).unwrap(), b"h");
        let f = File::open(&p).unwrap();
        assert_eq!(read_small(&f, 3).unwrap(), b"hell");
        let f = File::open(&p).unwrap();
        assert_eq!(read_small(&f, 9).unwrap(), b"hello");
    }
}
