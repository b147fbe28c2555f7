//! Extended attributes of the planned paths: read on the pool, after the plan, for the paths
//! whose stat data changed (and every path of a first backup). A path whose ctime is as before
//! keeps its previous attributes, since setting one moves ctime: a no-change run reads none. A
//! file that will be read is left to its reader, which reads them from the open file.

use std::cell::RefCell;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::engine::fsx;
use crate::engine::paths::split_parent;
use crate::engine::plan::{Item, Plan, Prev};
use crate::engine::problem::Problem;
use crate::error::Result;
use crate::pool::{CancelToken, Pool};
use crate::xattr::{self, Xattrs};

/// Paths handed to a worker at once.
const BATCH: usize = 256;

/// Reads the attributes of every item that needs them; returns the paths whose attributes
/// could not be read (they keep the previous ones). The paths go to the pool a batch at a time
/// as the pool takes them: copying every path first (a full backup reads them all) was the
/// peak of a full backup's memory.
pub(super) fn read_unread(
    src: &Path,
    plan: &mut Plan,
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<Vec<Problem>> {
    // The feed reads paths and the sink writes attributes, both on this thread, never at once.
    let items = RefCell::new(&mut plan.items);
    let mut problems = Vec::new();
    let r = pool.map_fed(
        cancel,
        Reader::default,
        |reader, batch: Vec<(usize, Vec<u8>)>| {
            reader.folder.forget();
            batch
                .into_iter()
                .map(|(i, rel)| (i, reader.read(src, &rel)))
                .collect::<Vec<_>>()
        },
        |results| {
            let mut items = items.borrow_mut();
            for (i, r) in results {
                apply(&mut items[i], r, &mut problems);
            }
            Ok::<(), ()>(())
        },
        |push| {
            let mut next = 0;
            loop {
                let batch = next_batch(&items.borrow(), &mut next);
                if batch.is_empty() || !push(batch) {
                    break;
                }
            }
        },
    );
    crate::error::pool_done(r)?;
    Ok(problems)
}

/// A worker's state: the folder of the path it read last, open, while the kernel has the
/// `*xattrat` calls to look a name up from it.
#[derive(Default)]
struct Reader {
    folder: fsx::FolderCache,
    /// `listxattrat` answered `ENOSYS` (Linux before 6.13): read by path from then on.
    by_path: bool,
}

impl Reader {
    fn read(&mut self, src: &Path, rel: &[u8]) -> io::Result<Option<Xattrs>> {
        if !self.by_path {
            let (dir, name) = split_parent(rel);
            let name = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
            let got = self
                .folder
                .open(src, dir)
                .and_then(|fd| xattr::read_at(fd, &name));
            match got {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => self.by_path = true,
                got => return got,
            }
        }
        xattr::read_path(&src.join(std::ffi::OsStr::from_bytes(rel)))
    }
}

/// The next (up to) [`BATCH`] items from `*next` on whose attributes are unread, with their
/// paths; moves `*next` past them.
fn next_batch(items: &[Item], next: &mut usize) -> Vec<(usize, Vec<u8>)> {
    let mut batch = Vec::new();
    while *next < items.len() && batch.len() < BATCH {
        let it = &items[*next];
        // A file to read gets them from the open file (`read::fresh_entry`).
        if it.xattrs_unread && !super::read::reads(it) {
            batch.push((*next, it.entry.path.clone()));
        }
        *next += 1;
    }
    batch
}

/// Takes one path's attributes into its item; a change makes the item a visible change.
fn apply(it: &mut Item, r: io::Result<Option<Xattrs>>, problems: &mut Vec<Problem>) {
    it.xattrs_unread = false;
    match r {
        Ok(x) => {
            let now = x.map(Box::new);
            if now != it.entry.xattrs {
                if let Prev::Was {
                    meta_same, exact, ..
                } = &mut it.prev
                {
                    (*meta_same, *exact) = (false, false);
                }
            }
            it.entry.xattrs = now;
        }
        // Vanished since the walk: reading its content reports it.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => problems.push(Problem::failed(
            it.entry.path.clone(),
            format!("cannot read extended attributes: {e}; the previous ones are kept"),
        )),
    }
}
