//! Walking the source: one `lstat` per path, no file contents read.
//!
//! Promises: symlinks are recorded, never followed (dangling ones too); FIFOs, sockets and
//! devices are skipped with a warning; a folder that cannot be listed is a warning and is
//! reported in [`Scan::failed`] so that the plan keeps what the previous snapshot had below it;
//! excluded paths (and the repository itself, when it lies inside the source) are not entered.
//! The result is sorted in path byte order (a folder before what it holds).

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use globset::GlobSet;

use crate::error::{Error, Result};
use crate::pool::{CancelToken, Pool};
use crate::progress::Progress;
use crate::tree::{Entry, EntryKind, StatCache};

/// A per-item problem, reported and not fatal.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    #[serde(serialize_with = "ser_path")]
    pub path: Vec<u8>,
    pub error: String,
    /// True when the item could not be backed up as it is (unreadable, vanished, changed while
    /// read): the command exits 3. False for items skipped by design (FIFOs, sockets, devices).
    pub failed: bool,
}

impl Warning {
    /// A failed item.
    pub fn failed(path: Vec<u8>, error: impl Into<String>) -> Warning {
        Warning {
            path,
            error: error.into(),
            failed: true,
        }
    }
}

fn ser_path<S: serde::Serializer>(p: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(p))
}

/// The walked source.
#[derive(Debug)]
pub struct Scan {
    /// The source folder itself (path empty).
    pub root: Entry,
    /// Everything below it, sorted by path.
    pub entries: Vec<Entry>,
    pub warnings: Vec<Warning>,
    /// Paths whose state is unknown this time (unreadable folders and files): the plan keeps
    /// their previous version, and everything the previous snapshot had below them.
    pub failed: Vec<Vec<u8>>,
}

/// What to leave out.
#[derive(Debug, Default)]
pub struct ScanOptions {
    pub exclude: GlobSet,
    /// (device, inode) of a folder never to enter, e.g. the repository.
    pub skip_dir: Option<(u64, u64)>,
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
        stat: StatCache {
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
            nlink: m.nlink(),
        },
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        p.extend_from_slice(dir);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn os(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
}

/// What one folder's listing produced.
#[derive(Default)]
struct Listing {
    entries: Vec<Entry>,
    warnings: Vec<Warning>,
    failed: Vec<Vec<u8>>,
}

/// Lists one folder (`dir`, relative to `src`): an lstat per child; sub-folders to enter are
/// pushed to `more`.
fn list_dir(src: &Path, dir: Vec<u8>, opts: &ScanOptions, more: &mut Vec<Vec<u8>>) -> Listing {
    let mut out = Listing::default();
    let abs = if dir.is_empty() {
        src.to_path_buf()
    } else {
        src.join(os(&dir))
    };
    let rd = match fs::read_dir(&abs) {
        Ok(rd) => rd,
        Err(e) => {
            out.warnings.push(Warning::failed(
                dir.clone(),
                format!("cannot list folder: {e}"),
            ));
            out.failed.push(dir);
            return out;
        }
    };
    for de in rd {
        let de = match de {
            Ok(de) => de,
            Err(e) => {
                out.warnings.push(Warning::failed(
                    dir.clone(),
                    format!("cannot list folder: {e}"),
                ));
                out.failed.push(dir.clone());
                break;
            }
        };
        let rel = join(&dir, de.file_name().as_bytes());
        if !opts.exclude.is_empty() && opts.exclude.is_match(os(&rel)) {
            continue;
        }
        let m = match de.metadata() {
            Ok(m) => m,
            Err(e) => {
                let vanished = e.kind() == io::ErrorKind::NotFound;
                let why = if vanished {
                    "vanished before it could be read".to_string()
                } else {
                    format!("cannot stat: {e}")
                };
                out.warnings.push(Warning::failed(rel.clone(), why));
                if !vanished {
                    out.failed.push(rel);
                }
                continue;
            }
        };
        let ft = m.file_type();
        if ft.is_dir() {
            if opts.skip_dir == Some((m.dev(), m.ino())) {
                continue;
            }
            out.entries
                .push(entry_from_meta(rel.clone(), EntryKind::Dir, &m));
            more.push(rel);
        } else if ft.is_file() {
            out.entries.push(entry_from_meta(rel, EntryKind::File, &m));
        } else if ft.is_symlink() {
            match fs::read_link(de.path()) {
                Ok(t) => {
                    let mut e = entry_from_meta(rel, EntryKind::Symlink, &m);
                    let t = t.into_os_string().into_vec();
                    e.size = t.len() as u64;
                    e.target = Some(t);
                    out.entries.push(e);
                }
                Err(err) => {
                    out.warnings.push(Warning::failed(
                        rel.clone(),
                        format!("cannot read symlink: {err}"),
                    ));
                    out.failed.push(rel);
                }
            }
        } else {
            let what = if ft.is_fifo() {
                "FIFO"
            } else if ft.is_socket() {
                "socket"
            } else if ft.is_block_device() {
                "block device"
            } else if ft.is_char_device() {
                "character device"
            } else {
                "special file"
            };
            out.warnings.push(Warning {
                path: rel,
                error: format!("skipped: {what} (only files, folders and symlinks are backed up)"),
                failed: false,
            });
        }
    }
    out
}

/// Walks `src` (an absolute folder), folders listed in parallel on the pool.
pub fn scan(
    src: &Path,
    opts: &ScanOptions,
    pool: &Pool,
    cancel: &CancelToken,
    progress: &dyn Progress,
) -> Result<Scan> {
    let meta = fs::symlink_metadata(src).map_err(|e| Error::Source {
        path: src.to_path_buf(),
        source: e,
    })?;
    if !meta.is_dir() {
        return Err(Error::SourceNotDir {
            path: src.to_path_buf(),
        });
    }
    let root = entry_from_meta(Vec::new(), EntryKind::Dir, &meta);
    // The root itself must be listable, or nothing can be backed up.
    fs::read_dir(src).map_err(|e| Error::Source {
        path: src.to_path_buf(),
        source: e,
    })?;

    progress.phase("scan", None);
    let mut out = Scan {
        root,
        entries: Vec::new(),
        warnings: Vec::new(),
        failed: Vec::new(),
    };
    let r = pool.run_queue(
        cancel,
        vec![Vec::new()],
        || (),
        |_, dir, more| list_dir(src, dir, opts, more),
        |l: Listing| {
            progress.advance(l.entries.len() as u64);
            out.entries.extend(l.entries);
            out.warnings.extend(l.warnings);
            out.failed.extend(l.failed);
            Ok::<(), ()>(())
        },
    );
    crate::error::pool_done(r)?;
    crate::tree::sort_entries(&mut out.entries);
    out.warnings.sort_by(|a, b| a.path.cmp(&b.path));
    out.failed.sort_unstable();
    out.failed.dedup();
    Ok(out)
}

use std::os::unix::ffi::OsStringExt;

fn parent_of(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[..i],
        None => &[],
    }
}

fn is_under(p: &[u8], dir: &[u8]) -> bool {
    p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/'
}

/// Re-examines only the folders in `dirty` (relative paths; `b""` is the source itself) and
/// takes everything else from `prev`, the previous snapshot's tree: the children of a dirty
/// folder are listed afresh, sub-folders that are new are walked whole, and the subtrees of
/// folders that disappeared are dropped. For `vault watch`, where change events say which
/// folders to look at; the periodic full rescan catches anything events missed.
pub fn scan_partial(
    src: &Path,
    prev: Vec<Entry>,
    dirty: &[Vec<u8>],
    opts: &ScanOptions,
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<Scan> {
    let meta = fs::symlink_metadata(src).map_err(|e| Error::Source {
        path: src.to_path_buf(),
        source: e,
    })?;
    if !meta.is_dir() {
        return Err(Error::SourceNotDir {
            path: src.to_path_buf(),
        });
    }
    let root = entry_from_meta(Vec::new(), EntryKind::Dir, &meta);
    let prev_dirs: std::collections::HashSet<Vec<u8>> = prev
        .iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .map(|e| e.path.clone())
        .collect();
    // Only folders that still are folders (and are not excluded) are listed.
    let mut listed: Vec<Vec<u8>> = Vec::new();
    for d in dirty {
        let abs = if d.is_empty() {
            src.to_path_buf()
        } else {
            src.join(os(d))
        };
        if (d.is_empty() || !opts.exclude.is_match(os(d)))
            && fs::symlink_metadata(&abs)
                .map(|m| m.is_dir())
                .unwrap_or(false)
        {
            listed.push(d.clone());
        }
    }
    listed.sort();
    listed.dedup();
    let listed_set: std::collections::HashSet<&[u8]> = listed.iter().map(Vec::as_slice).collect();

    let mut out = Scan {
        root,
        entries: Vec::new(),
        warnings: Vec::new(),
        failed: Vec::new(),
    };
    let mut new_dirs: Vec<Vec<u8>> = Vec::new();
    let mut fresh_dirs: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for d in &listed {
        let mut more = Vec::new();
        let l = list_dir(src, d.clone(), opts, &mut more);
        for sub in more {
            fresh_dirs.insert(sub.clone());
            // Sub-folders the previous tree did not have are walked whole.
            if !prev_dirs.contains(&sub) && !listed_set.contains(sub.as_slice()) {
                new_dirs.push(sub);
            }
        }
        out.entries.extend(l.entries);
        out.warnings.extend(l.warnings);
        out.failed.extend(l.failed);
    }
    if !new_dirs.is_empty() {
        let r = pool.run_queue(
            cancel,
            new_dirs,
            || (),
            |_, dir, more| list_dir(src, dir, opts, more),
            |l: Listing| {
                out.entries.extend(l.entries);
                out.warnings.extend(l.warnings);
                out.failed.extend(l.failed);
                Ok::<(), ()>(())
            },
        );
        crate::error::pool_done(r)?;
    }
    // Previous folders that were children of a listed folder and are no longer folders there.
    let gone: Vec<&[u8]> = prev
        .iter()
        .filter(|e| e.kind == EntryKind::Dir && listed_set.contains(parent_of(&e.path)))
        .filter(|e| !fresh_dirs.contains(&e.path))
        .map(|e| e.path.as_slice())
        .collect();
    let keep: Vec<Entry> = prev
        .iter()
        .filter(|e| !listed_set.contains(parent_of(&e.path)))
        .filter(|e| !gone.iter().any(|g| is_under(&e.path, g)))
        .cloned()
        .collect();
    drop(gone);
    out.entries.extend(keep);
    // A listed folder's own entry is refreshed too (its mtime moved).
    for d in listed.iter().filter(|d| !d.is_empty()) {
        if let Ok(m) = fs::symlink_metadata(src.join(os(d))) {
            let fresh = entry_from_meta(d.clone(), EntryKind::Dir, &m);
            out.entries.retain(|e| e.path != *d);
            out.entries.push(fresh);
        }
    }
    crate::tree::sort_entries(&mut out.entries);
    out.entries.dedup_by(|a, b| a.path == b.path);
    out.warnings.sort_by(|a, b| a.path.cmp(&b.path));
    out.failed.sort_unstable();
    out.failed.dedup();
    Ok(out)
}
