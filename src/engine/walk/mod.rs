//! Walking the source: one `lstat` per path, no file contents read.
//!
//! Promises: symlinks are recorded, never followed (dangling ones too); FIFOs and device nodes
//! are recorded (type, mode, owner, device number); sockets are skipped with a warning; a
//! folder that cannot be listed is a warning and is reported in [`Walk::failed`] so that the
//! plan keeps what the previous snapshot had below it; excluded paths (and the repository
//! itself, when it lies inside the source) are not entered. Extended attributes are not read
//! here (see `backup::xattrs`).
//! The walk gives its entries out one at a time in path byte order (a folder before what it
//! holds; see `order.rs`).

mod order;

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use globset::GlobSet;

use thin_vec::ThinVec;

use crate::engine::paths::{self, join, parent_of};
use crate::engine::problem::Problem;
use crate::engine::select::Selection;
use crate::error::{Error, Result};
use crate::pool::{CancelToken, Pool};
use crate::progress::Progress;
use crate::tree::{Entry, EntryKind, StatCache};

/// The walked source.
#[derive(Debug)]
pub struct Walk {
    /// The source folder itself (path empty).
    pub root: Entry,
    /// Everything below it, sorted by path (a partial walk; [`walk`] gives its entries out
    /// as it goes and leaves this empty).
    pub entries: Vec<Entry>,
    pub warnings: Vec<Problem>,
    /// Paths whose state is unknown this time (unreadable folders and files): the plan keeps
    /// their previous version, and everything the previous snapshot had below them.
    pub failed: Vec<Vec<u8>>,
}

/// What to leave out.
#[derive(Debug, Default)]
pub struct WalkOptions {
    pub exclude: GlobSet,
    /// (device, inode) of a folder never to enter, e.g. the repository.
    pub skip_dir: Option<(u64, u64)>,
    /// Other file systems, tagged folders, pattern files.
    pub select: Selection,
}

/// Builds an entry from `lstat` data.
pub fn entry_from_meta(path: Vec<u8>, kind: EntryKind, m: &Metadata) -> Entry {
    Entry {
        path,
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: if kind == EntryKind::Dir { 0 } else { m.size() },
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        digest: None,
        target: None,
        rdev: if kind.is_special() { m.rdev() } else { 0 },
        xattrs: None,
        sparse: false,
        stat: StatCache {
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
            nlink: m.nlink(),
        },
    }
}

fn os(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
}

/// What one folder's listing produced.
#[derive(Default)]
struct Listing {
    /// The folder listed.
    dir: Vec<u8>,
    /// Its children, sorted by path.
    entries: Vec<Entry>,
    /// The children that are folders to enter (each gets a listing of its own).
    subdirs: Vec<Vec<u8>>,
    warnings: Vec<Problem>,
    failed: Vec<Vec<u8>>,
}

impl Listing {
    /// The folder `dir` could not be listed (whole, or past some point): a warning, and the
    /// plan keeps what the previous snapshot had below it.
    fn broke_off(&mut self, dir: &[u8], e: &io::Error) {
        self.warnings.push(Problem::failed(
            dir.to_vec(),
            format!("cannot list folder: {e}"),
        ));
        self.failed.push(dir.to_vec());
    }
}

/// Lists one folder (`dir`, relative to `src`): an lstat per child, sorted by path;
/// sub-folders to enter are pushed to `more` (the pool lists the smallest path first, about
/// the order in which the merge wants them).
fn list_dir(src: &Path, dir: Vec<u8>, opts: &WalkOptions, more: &mut Vec<Vec<u8>>) -> Listing {
    let mut out = read_dir_sorted(src, &dir, opts);
    more.extend(out.subdirs.iter().cloned());
    out.dir = dir;
    out
}

/// The listing of one folder, without its name.
fn read_dir_sorted(src: &Path, dir: &[u8], opts: &WalkOptions) -> Listing {
    let mut out = Listing::default();
    let abs = if dir.is_empty() {
        src.to_path_buf()
    } else {
        src.join(os(dir))
    };
    let rd = match fs::read_dir(&abs) {
        Ok(rd) => rd,
        Err(e) => {
            out.broke_off(dir, &e);
            return out;
        }
    };
    // A tagged folder keeps only its tag files.
    let keep_only = opts.select.tagged(&abs);
    for de in rd {
        let de = match de {
            Ok(de) => de,
            Err(e) => {
                out.broke_off(dir, &e);
                break;
            }
        };
        let Some(rel) = selected(dir, &de, opts, keep_only.as_deref()) else {
            continue;
        };
        let m = match de.metadata() {
            Ok(m) => m,
            Err(e) => {
                let vanished = e.kind() == io::ErrorKind::NotFound;
                let why = if vanished {
                    "vanished before it could be read".to_string()
                } else {
                    format!("cannot stat: {e}")
                };
                out.warnings.push(Problem::failed(rel.clone(), why));
                if !vanished {
                    out.failed.push(rel);
                }
                continue;
            }
        };
        if m.is_dir() && opts.skip_dir == Some((m.dev(), m.ino())) {
            continue;
        }
        let kind = match kind_of(m.file_type()) {
            Ok(k) => k,
            Err(what) => {
                out.warnings.push(Problem::skipped(
                    rel,
                    format!(
                        "skipped: {what} (sockets cannot be backed up; GNU tar skips them too)"
                    ),
                ));
                continue;
            }
        };
        let mut e = entry_from_meta(rel, kind, &m);
        if let Err(why) = complete_entry(&de, &mut e) {
            out.warnings.push(Problem::failed(e.path.clone(), why));
            out.failed.push(e.path);
            continue;
        }
        if kind == EntryKind::Dir && opts.select.enters(m.dev()) {
            out.subdirs.push(e.path.clone());
        }
        out.entries.push(e);
    }
    out.entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    out.subdirs.sort_unstable();
    out
}

/// The entry kind of a file type; what it is when it cannot be backed up (a socket).
fn kind_of(ft: fs::FileType) -> std::result::Result<EntryKind, &'static str> {
    Ok(if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() {
        EntryKind::CharDevice
    } else if ft.is_block_device() {
        EntryKind::BlockDevice
    } else if ft.is_socket() {
        return Err("socket");
    } else {
        return Err("special file");
    })
}

/// The child's relative path, unless it is left out: not a tag file of a tagged folder
/// (`keep_only`), or excluded by a glob or a pattern file.
fn selected(
    dir: &[u8],
    de: &fs::DirEntry,
    opts: &WalkOptions,
    keep_only: Option<&[Vec<u8>]>,
) -> Option<Vec<u8>> {
    let name = de.file_name();
    if keep_only.is_some_and(|k| !k.iter().any(|t| t.as_slice() == name.as_bytes())) {
        return None;
    }
    let rel = join(dir, name.as_bytes());
    if !opts.exclude.is_empty() && opts.exclude.is_match(os(&rel)) {
        return None;
    }
    if opts.select.ignore.is_some() {
        let is_dir = de.file_type().is_ok_and(|t| t.is_dir());
        if opts.select.ignored(&rel, is_dir) {
            return None;
        }
    }
    Some(rel)
}

/// Adds what `lstat` does not tell: the symlink target. (Extended attributes are read after
/// the plan, only for paths whose stat data changed: see `backup::xattrs`.)
fn complete_entry(de: &fs::DirEntry, e: &mut Entry) -> std::result::Result<(), String> {
    if e.kind == EntryKind::Symlink {
        // The absolute path is made only here: a million files would each pay for it.
        let t = fs::read_link(de.path()).map_err(|err| format!("cannot read symlink: {err}"))?;
        let t = t.into_os_string().into_vec();
        e.size = t.len() as u64;
        e.target = Some(ThinVec::from(t));
    }
    Ok(())
}

/// The source folder's own entry; fails unless it is a folder that can be listed.
fn source_root(src: &Path) -> Result<Entry> {
    let meta = fs::symlink_metadata(src).map_err(|e| Error::Source {
        path: src.to_path_buf(),
        source: e,
    })?;
    if !meta.is_dir() {
        return Err(Error::SourceNotDir {
            path: src.to_path_buf(),
        });
    }
    // The root itself must be listable, or nothing can be backed up.
    fs::read_dir(src).map_err(|e| Error::Source {
        path: src.to_path_buf(),
        source: e,
    })?;
    Ok(entry_from_meta(Vec::new(), EntryKind::Dir, &meta))
}

/// Entries of listings back ahead of their turn above which the walk lists one folder at a
/// time until the merge catches up (about 13 MB).
const WAITING_MAX: usize = 64 * 1024;

/// Walks `src` (an absolute folder), folders listed in parallel on the pool, and gives `emit`
/// each entry below it in path byte order, with the paths found unreadable so far (sorted;
/// every one at or before that entry is in). The result holds the rest: root, warnings and
/// every failed path.
pub fn walk(
    src: &Path,
    opts: &WalkOptions,
    pool: &Pool,
    cancel: &CancelToken,
    progress: &dyn Progress,
    emit: &mut dyn FnMut(Entry, &[Vec<u8>]),
) -> Result<Walk> {
    let root = source_root(src)?;

    progress.phase("scan", None);
    let mut merge = order::InOrder::new();
    let waiting = std::cell::Cell::new(0);
    let r = pool.run_queue(
        cancel,
        vec![Vec::new()],
        || (),
        |_, dir, more| list_dir(src, dir, opts, more),
        |l: Listing| {
            progress.advance(l.entries.len() as u64);
            merge.take(l, emit);
            waiting.set(merge.waiting());
            Ok::<(), ()>(())
        },
        &|| waiting.get() > WAITING_MAX,
    );
    crate::error::pool_done(r)?;
    let (warnings, failed) = merge
        .finish()
        .ok_or_else(|| Error::Internal("the walk ended with a folder's listing missing".into()))?;
    Ok(Walk {
        root,
        entries: Vec::new(),
        warnings,
        failed,
    })
}

use std::os::unix::ffi::OsStringExt;

/// True when `dir` (relative) is the folder never to enter (the repository) or lies in it.
fn in_skipped_dir(src: &Path, dir: &[u8], opts: &WalkOptions) -> bool {
    let Some(skip) = opts.skip_dir else {
        return false;
    };
    let mut prefix = src.to_path_buf();
    for c in dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        prefix.push(os(c));
        if fs::symlink_metadata(&prefix).is_ok_and(|m| (m.dev(), m.ino()) == skip) {
            return true;
        }
    }
    false
}

/// A partial walk for `vault watch`: the previous and the current state of just the places
/// that change events pointed at.
#[derive(Debug)]
pub struct PartialScan {
    /// What the previous snapshot had there, sorted by path.
    pub prev: Vec<Entry>,
    /// What is there now (and the warnings), sorted by path.
    pub now: Walk,
}

/// Re-examines only the folders in `dirty` (relative paths; `b""` is the source itself): each
/// one's children are listed afresh, sub-folders that are new are walked whole, and the
/// subtrees of sub-folders that disappeared count as removed. `prev_under(dir)` gives the
/// previous snapshot's entries below a folder, `prev_at(path)` one entry. Everything else is
/// left out of both sides, so it counts as unchanged. The periodic full rescan of `vault watch`
/// catches whatever events missed.
pub fn walk_partial(
    src: &Path,
    dirty: &[Vec<u8>],
    opts: &WalkOptions,
    pool: &Pool,
    cancel: &CancelToken,
    prev_under: &mut dyn FnMut(&[u8]) -> Result<Vec<Entry>>,
    prev_at: &mut dyn FnMut(&[u8]) -> Result<Option<Entry>>,
) -> Result<PartialScan> {
    let root = source_root(src)?;
    let listed = dirs_to_list(src, dirty, opts);

    let mut st = PartialState {
        prev: Vec::new(),
        now: Walk {
            root,
            entries: Vec::new(),
            warnings: Vec::new(),
            failed: Vec::new(),
        },
        new_dirs: Vec::new(),
    };
    for d in &listed {
        relist_dir(src, d, opts, &mut st, prev_under, prev_at)?;
    }
    let PartialState {
        mut prev,
        mut now,
        mut new_dirs,
    } = st;
    // New folders are walked whole (they may already hold files the events did not name).
    new_dirs.retain(|n| !listed.contains(n));
    if !new_dirs.is_empty() {
        walk_new_dirs(src, opts, pool, cancel, new_dirs, &mut now)?;
    }
    for v in [&mut prev, &mut now.entries] {
        crate::tree::sort_entries(v);
        v.dedup_by(|a, b| a.path == b.path);
    }
    now.warnings.sort_by(|a, b| a.path.cmp(&b.path));
    now.failed.sort_unstable();
    now.failed.dedup();
    Ok(PartialScan { prev, now })
}

/// The dirty folders to list, sorted and without duplicates: only folders that still are
/// folders (and are not excluded); nested dirty folders are covered by listing each one.
fn dirs_to_list(src: &Path, dirty: &[Vec<u8>], opts: &WalkOptions) -> Vec<Vec<u8>> {
    let mut listed: Vec<Vec<u8>> = Vec::new();
    for d in dirty {
        let abs = if d.is_empty() {
            src.to_path_buf()
        } else {
            src.join(os(d))
        };
        if (d.is_empty() || !(opts.exclude.is_match(os(d)) || opts.select.ignored(d, true)))
            && fs::symlink_metadata(&abs)
                .map(|m| m.is_dir() && opts.select.enters(m.dev()))
                .unwrap_or(false)
            && !in_skipped_dir(src, d, opts)
        {
            listed.push(d.clone());
        }
    }
    listed.sort();
    listed.dedup();
    listed
}

/// Both sides of a partial walk as the listed folders are gone through.
struct PartialState {
    /// What the previous snapshot had in the places looked at.
    prev: Vec<Entry>,
    /// What is there now.
    now: Walk,
    /// Sub-folders the previous snapshot did not have, to walk whole.
    new_dirs: Vec<Vec<u8>>,
}

/// Lists one dirty folder `d` afresh and adds both sides of it to `st`.
fn relist_dir(
    src: &Path,
    d: &[u8],
    opts: &WalkOptions,
    st: &mut PartialState,
    prev_under: &mut dyn FnMut(&[u8]) -> Result<Vec<Entry>>,
    prev_at: &mut dyn FnMut(&[u8]) -> Result<Option<Entry>>,
) -> Result<()> {
    let below = prev_under(d)?;
    let prev_dirs: std::collections::HashSet<&[u8]> = below
        .iter()
        .filter(|e| e.kind == EntryKind::Dir && parent_of(&e.path) == d)
        .map(|e| e.path.as_slice())
        .collect();
    let mut more = Vec::new();
    let l = list_dir(src, d.to_vec(), opts, &mut more);
    let fresh_dirs: std::collections::HashSet<&[u8]> = more.iter().map(Vec::as_slice).collect();
    // Previous side: the direct children, and the whole subtree of children that are
    // no longer folders.
    let gone: Vec<&[u8]> = prev_dirs
        .iter()
        .copied()
        .filter(|p| !fresh_dirs.contains(p))
        .collect();
    for e in &below {
        if parent_of(&e.path) == d || gone.iter().any(|g| paths::below(&e.path, g)) {
            st.prev.push(e.clone());
        }
    }
    for sub in &more {
        if !prev_dirs.contains(sub.as_slice()) {
            st.new_dirs.push(sub.clone());
        }
    }
    add_listing(&mut st.now, l);
    // The folder's own entry (its mtime moved).
    if !d.is_empty() {
        let abs = src.join(os(d));
        if let Ok(m) = fs::symlink_metadata(&abs) {
            // A folder: nothing to add to what lstat told.
            st.now
                .entries
                .push(entry_from_meta(d.to_vec(), EntryKind::Dir, &m));
            if let Some(e) = prev_at(d)? {
                st.prev.push(e);
            }
        }
    }
    Ok(())
}

/// Walks the new folders whole on the pool, adding what they hold to `now`.
fn walk_new_dirs(
    src: &Path,
    opts: &WalkOptions,
    pool: &Pool,
    cancel: &CancelToken,
    new_dirs: Vec<Vec<u8>>,
    now: &mut Walk,
) -> Result<()> {
    let r = pool.run_queue(
        cancel,
        new_dirs,
        || (),
        |_, dir, more| list_dir(src, dir, opts, more),
        |l: Listing| {
            add_listing(now, l);
            Ok::<(), ()>(())
        },
        &|| false,
    );
    crate::error::pool_done(r)
}

/// Adds one folder's listing (entries, warnings, failures) to `now`.
fn add_listing(now: &mut Walk, l: Listing) {
    now.entries.extend(l.entries);
    now.warnings.extend(l.warnings);
    now.failed.extend(l.failed);
}
