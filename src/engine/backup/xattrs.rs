//! Extended attributes of the planned paths: read on the pool, after the plan, for the paths
//! whose stat data changed (and every path of a first backup). A path whose ctime is as before
//! keeps its previous attributes, since setting one moves ctime: a no-change run reads none.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::engine::plan::{Item, Plan, Prev};
use crate::engine::problem::Problem;
use crate::error::Result;
use crate::pool::{CancelToken, Pool};
use crate::xattr::{self, Xattrs};

/// Paths handed to a worker at once.
const BATCH: usize = 256;

/// Reads the attributes of every item that needs them; returns the paths whose attributes
/// could not be read (they keep the previous ones).
pub(super) fn read_unread(
    src: &Path,
    plan: &mut Plan,
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<Vec<Problem>> {
    let todo: Vec<(usize, Vec<u8>)> = plan
        .items
        .iter()
        .enumerate()
        .filter(|(_, it)| it.xattrs_unread)
        .map(|(i, it)| (i, it.entry.path.clone()))
        .collect();
    let batches: Vec<Vec<(usize, Vec<u8>)>> = todo.chunks(BATCH).map(<[_]>::to_vec).collect();
    let mut problems = Vec::new();
    let r = pool.map_unordered(
        cancel,
        batches,
        || (),
        |_, batch| {
            batch
                .into_iter()
                .map(|(i, rel)| {
                    (
                        i,
                        xattr::read_path(&src.join(std::ffi::OsStr::from_bytes(&rel))),
                    )
                })
                .collect::<Vec<_>>()
        },
        |results| {
            for (i, r) in results {
                apply(&mut plan.items[i], r, &mut problems);
            }
            Ok::<(), ()>(())
        },
    );
    crate::error::pool_done(r)?;
    Ok(problems)
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
