//! Writing the tree into the target, one kind of entry at a time. Every folder is reached with
//! `openat(O_NOFOLLOW)` from the target's descriptor, so no symlink is ever followed; files are
//! written under a temporary name, checked, given their metadata and renamed into place. A
//! path that cannot be written is a per-item problem: the rest of the tree is still restored.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::engine::fsx;
use crate::engine::paths::{below, components, split_parent};
use crate::engine::problem::Problem;
use crate::hash::HashAlgo;
use crate::text::display_path;
use crate::tree::{Entry, EntryKind};
use crate::xattr;

/// Why one path could not be restored.
#[derive(Debug, thiserror::Error)]
pub(super) enum ItemError {
    #[error("cannot open its folder: {0}")]
    Folder(io::Error),
    #[error("cannot create: {0}")]
    Create(io::Error),
    #[error("cannot read its content from archive {archive}: {source}")]
    Read { archive: String, source: io::Error },
    #[error("cannot write: {0}")]
    Write(io::Error),
    #[error("size mismatch in archive {archive}: {got} bytes, the manifest says {want}")]
    Size {
        archive: String,
        got: u64,
        want: u64,
    },
    #[error("digest mismatch in archive {archive}: content has {got}, the manifest says {want}")]
    Digest {
        archive: String,
        got: String,
        want: String,
    },
    #[error("cannot set metadata: {0}")]
    Meta(io::Error),
    #[error("cannot replace folder: {0}")]
    ReplaceFolder(io::Error),
    #[error("already exists in the target")]
    Exists,
    #[error("cannot rename into place: {0}")]
    Rename(io::Error),
    #[error("cannot reopen {path} to copy it: {source}")]
    Reopen { path: String, source: io::Error },
    /// What the archive holds is not what the manifest vouches for, or the archive is gone.
    #[error("{0}")]
    Content(String),
}

/// Settings every write needs.
#[derive(Clone, Copy)]
pub(super) struct WriteCtx<'a> {
    pub root: RawFd,
    pub algo: HashAlgo,
    /// Set owners (running as root).
    pub owner: bool,
    pub keep_setid: bool,
    pub force: bool,
    /// Restored paths whose extended attributes the target refused (the rest of their
    /// metadata is set): reported, and the restore exits 3.
    pub notes: &'a Mutex<Vec<Problem>>,
}

impl WriteCtx<'_> {
    pub(super) fn mode(&self, mode: u32) -> u32 {
        if self.keep_setid {
            mode & 0o7777
        } else {
            mode & 0o1777
        }
    }

    fn owner_of(&self, e: &Entry) -> Option<(u32, u32)> {
        self.owner.then_some((e.uid, e.gid))
    }

    /// The metadata to give `e`.
    pub(super) fn meta_of<'e>(&self, e: &'e Entry) -> fsx::Meta<'e> {
        fsx::Meta {
            mode: self.mode(e.mode),
            owner: self.owner_of(e),
            mtime_ns: e.mtime_ns,
            xattrs: e.xattrs.as_deref(),
        }
    }

    /// Notes the attributes the target refused for `path`.
    pub(super) fn note_refused(&self, path: &[u8], refused: Vec<xattr::SetError>) {
        if refused.is_empty() {
            return;
        }
        let why = refused
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        notes.push(Problem::failed(path.to_vec(), why));
    }
}

/// Holds the folder fd of the last parent used, since paths arrive in tree order.
pub(super) struct DirCache {
    root: RawFd,
    last: Option<(Vec<u8>, OwnedFd)>,
}

impl DirCache {
    pub(super) fn new(root: RawFd) -> DirCache {
        DirCache { root, last: None }
    }

    pub(super) fn get(&mut self, parent: &[u8]) -> io::Result<RawFd> {
        if let Some((p, fd)) = &self.last {
            if p.as_slice() == parent {
                return Ok(fd.as_raw_fd());
            }
        }
        let fd = fsx::open_path(self.root, &components(parent))?;
        let raw = fd.as_raw_fd();
        self.last = Some((parent.to_vec(), fd));
        Ok(raw)
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn tmp_name() -> Vec<u8> {
    format!(
        ".vault-restore-{}-{}.tmp",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
    .into_bytes()
}

/// Where a restored file's content comes from.
pub(super) enum Body<'a> {
    /// Exactly the file's bytes.
    Plain(&'a mut dyn Read),
    /// A sparse member's data: its map block, then the data regions.
    Sparse(&'a mut dyn Read),
    /// Another restored file with the same (sparse) content, already checked: its data
    /// regions are copied, holes kept.
    SparseCopy(&'a std::fs::File),
}

/// Writes a sparse member's regions into `f` at their offsets (holes stay holes), checking
/// the logical size and the digest (of the member data, as backup computed it).
fn copy_sparse(
    ctx: WriteCtx<'_>,
    entry: &Entry,
    data: &mut dyn Read,
    f: &std::fs::File,
    archive: &str,
) -> Result<u64, ItemError> {
    let mut h = ctx.algo.hasher();
    let read_err = |source: io::Error| ItemError::Read {
        archive: archive.to_string(),
        source,
    };
    let map = crate::sparse::Map::read_block(data, &mut |b| h.update(b)).map_err(read_err)?;
    if map.real_size() != entry.size {
        let (archive, want) = (archive.to_string(), entry.size);
        let got = map.real_size();
        return Err(ItemError::Size { archive, got, want });
    }
    crate::sparse::write_regions(&map, data, f, &mut |b| h.update(b)).map_err(|e| {
        match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => read_err(e),
            _ => ItemError::Write(e),
        }
    })?;
    check_digest(entry, h.finish(), archive)?;
    Ok(entry.size)
}

/// The content written must have the digest the manifest recorded.
fn check_digest(entry: &Entry, got: crate::hash::Digest, archive: &str) -> Result<(), ItemError> {
    if Some(got) == entry.digest {
        return Ok(());
    }
    Err(ItemError::Digest {
        archive: archive.to_string(),
        got: got.to_hex(),
        want: entry.digest.map(|d| d.to_hex()).unwrap_or_default(),
    })
}

/// Copies exactly `entry.size` bytes of `data` into `f`, checking size and digest.
fn copy_checked(
    ctx: WriteCtx<'_>,
    entry: &Entry,
    data: &mut dyn Read,
    f: &mut std::fs::File,
    archive: &str,
) -> Result<u64, ItemError> {
    let mut h = ctx.algo.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    let mut limited = data.take(entry.size + 1);
    loop {
        let k = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                let archive = archive.to_string();
                return Err(ItemError::Read { archive, source });
            }
        };
        h.update(&buf[..k]);
        f.write_all(&buf[..k]).map_err(ItemError::Write)?;
        n += k as u64;
    }
    if n != entry.size {
        let (archive, want) = (archive.to_string(), entry.size);
        return Err(ItemError::Size {
            archive,
            got: n,
            want,
        });
    }
    check_digest(entry, h.finish(), archive)?;
    Ok(n)
}

/// Writes one file from `data` (exactly `entry.size` bytes expected) to a temporary name,
/// checks its digest, sets its metadata and renames it into place. Returns bytes written.
pub(super) fn write_file(
    ctx: WriteCtx<'_>,
    dirs: &mut DirCache,
    entry: &Entry,
    body: Body<'_>,
    archive: &str,
) -> Result<u64, ItemError> {
    let (parent, name) = split_parent(&entry.path);
    let dir = dirs.get(parent).map_err(ItemError::Folder)?;
    let tmp = tmp_name();
    let mut f = fsx::create_excl_at(dir, &tmp).map_err(ItemError::Create)?;
    let result = (|| -> Result<u64, ItemError> {
        let n = match body {
            Body::Plain(data) => copy_checked(ctx, entry, data, &mut f, archive)?,
            Body::Sparse(data) => copy_sparse(ctx, entry, data, &f, archive)?,
            Body::SparseCopy(from) => {
                crate::sparse::copy_file(from, &mut f, entry.size).map_err(ItemError::Write)?
            }
        };
        let refused =
            fsx::set_meta_fd(f.as_raw_fd(), &ctx.meta_of(entry)).map_err(ItemError::Meta)?;
        ctx.note_refused(&entry.path, refused);
        if ctx.force {
            // Only an empty folder can still be here (see target::clear_folders_in_the_way).
            if let Ok(Some(st)) = fsx::lstat_at(dir, name) {
                if fsx::is_dir(&st) {
                    fsx::unlink_at(dir, name, true).map_err(ItemError::ReplaceFolder)?;
                }
            }
        } else if let Ok(Some(_)) = fsx::lstat_at(dir, name) {
            return Err(ItemError::Exists);
        }
        fsx::rename_at(dir, &tmp, name).map_err(ItemError::Rename)?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = fsx::unlink_at(dir, &tmp, false);
    }
    result
}

/// Writes `dest` with the content of the already restored `src` (same digest).
pub(super) fn copy_restored(
    ctx: WriteCtx<'_>,
    dirs: &mut DirCache,
    src: &Entry,
    dest: &Entry,
    archive: &str,
) -> Result<u64, ItemError> {
    let reopen = |source| ItemError::Reopen {
        path: display_path(&src.path),
        source,
    };
    let (sp, sn) = split_parent(&src.path);
    let sdir = fsx::open_path(ctx.root, &components(sp)).map_err(reopen)?;
    let mut f = fsx::open_file_at(sdir.as_raw_fd(), sn).map_err(reopen)?;
    let body = if dest.sparse {
        Body::SparseCopy(&f)
    } else {
        Body::Plain(&mut f)
    };
    write_file(ctx, dirs, dest, body, archive)
}

/// Empties the place of a file or symlink about to be made: unlinks a non-folder, removes an
/// empty folder (a non-empty one fails; see target::clear_folders_in_the_way).
pub(super) fn clear_slot(dir: RawFd, name: &[u8]) -> io::Result<()> {
    match fsx::lstat_at(dir, name)? {
        Some(st) if fsx::is_dir(&st) => fsx::unlink_at(dir, name, true),
        Some(_) => fsx::unlink_at(dir, name, false),
        None => Ok(()),
    }
}

/// Makes one folder (0700 while it is written into), replacing a non-folder in its place.
fn make_dir(dirs: &mut DirCache, e: &Entry) -> Result<(), String> {
    let (parent, name) = split_parent(&e.path);
    let dir = dirs
        .get(parent)
        .map_err(|err| format!("cannot open its folder: {err}"))?;
    let mkdir =
        |dir| fsx::mkdir_at(dir, name, 0o700).map_err(|e| format!("cannot create folder: {e}"));
    match fsx::lstat_at(dir, name).map_err(|err| format!("cannot stat: {err}"))? {
        Some(st) if fsx::is_dir(&st) => Ok(()),
        Some(_) => {
            fsx::remove_tree_at(dir, name).map_err(|err| format!("cannot replace: {err}"))?;
            mkdir(dir)
        }
        None => mkdir(dir),
    }
}

/// Makes the folders, parents first. A folder that cannot be made fails, and so does
/// everything below it: taken out of `tree`, and returned (path and kind, in path order) so
/// that the report can uncount them.
pub(super) fn make_dirs(
    root: RawFd,
    tree: &mut Vec<Entry>,
    problems: &mut Vec<Problem>,
) -> Vec<(Vec<u8>, EntryKind)> {
    let mut dirs = DirCache::new(root);
    let mut failed: Vec<Vec<u8>> = Vec::new();
    for e in tree.iter().filter(|e| e.kind == EntryKind::Dir) {
        if failed.iter().any(|f| below(&e.path, f)) {
            continue;
        }
        if let Err(why) = make_dir(&mut dirs, e) {
            problems.push(Problem::failed(e.path.clone(), why));
            failed.push(e.path.clone());
        }
    }
    drop_below(tree, &failed, problems)
}

/// Takes out of `tree` the failed folders and everything below them; the entries below are
/// problems too. Returns what was taken out.
fn drop_below(
    tree: &mut Vec<Entry>,
    failed: &[Vec<u8>],
    problems: &mut Vec<Problem>,
) -> Vec<(Vec<u8>, EntryKind)> {
    let mut dropped = Vec::new();
    if failed.is_empty() {
        return dropped;
    }
    tree.retain(|e| {
        if failed.iter().any(|f| f == &e.path) {
            dropped.push((e.path.clone(), e.kind));
            return false;
        }
        let Some(f) = failed.iter().find(|f| below(&e.path, f)) else {
            return true;
        };
        let why = format!("its folder {} could not be restored", display_path(f));
        problems.push(Problem::failed(e.path.clone(), why));
        dropped.push((e.path.clone(), e.kind));
        false
    });
    dropped
}

/// Hard links of restored files: (link, file it links to). Returns how many were made.
pub(super) fn make_links(
    root: RawFd,
    links: &[(&Entry, &Entry)],
    problems: &mut Vec<Problem>,
) -> u64 {
    let mut dirs = DirCache::new(root);
    let failed: HashSet<Vec<u8>> = problems.iter().map(|w| w.path.clone()).collect();
    let mut made = 0;
    for &(le, pe) in links {
        if failed.contains(&pe.path) {
            problems.push(Problem::failed(
                le.path.clone(),
                "hard link of a file that failed",
            ));
            continue;
        }
        let r = (|| -> io::Result<()> {
            let (pp, pn) = split_parent(&pe.path);
            let (lp, ln) = split_parent(&le.path);
            let pdir = fsx::open_path(root, &components(pp))?;
            let ldir = dirs.get(lp)?;
            clear_slot(ldir, ln)?;
            fsx::link_at(pdir.as_raw_fd(), pn, ldir, ln)
        })();
        match r {
            Ok(()) => made += 1,
            Err(err) => problems.push(Problem::failed(
                le.path.clone(),
                format!("cannot link: {err}"),
            )),
        }
    }
    made
}

/// Makes each entry `pick` selects with `create` (given its folder and name, after the place is
/// emptied); what `create` refuses of the metadata is noted, a failure is a problem.
fn make_each(
    ctx: WriteCtx<'_>,
    tree: &[Entry],
    problems: &mut Vec<Problem>,
    pick: impl Fn(&Entry) -> bool,
    create: impl Fn(RawFd, &[u8], &Entry) -> Result<Vec<xattr::SetError>, String>,
) {
    let mut dirs = DirCache::new(ctx.root);
    for e in tree.iter().filter(|e| pick(e)) {
        let r = (|| -> Result<(), String> {
            let (parent, name) = split_parent(&e.path);
            let dir = dirs
                .get(parent)
                .map_err(|err| format!("cannot open its folder: {err}"))?;
            clear_slot(dir, name).map_err(|err| format!("cannot replace: {err}"))?;
            ctx.note_refused(&e.path, create(dir, name, e)?);
            Ok(())
        })();
        if let Err(why) = r {
            problems.push(Problem::failed(e.path.clone(), why));
        }
    }
}

/// Symlinks, created as they are and never followed.
pub(super) fn make_symlinks(ctx: WriteCtx<'_>, tree: &[Entry], problems: &mut Vec<Problem>) {
    let symlink = |dir, name: &[u8], e: &Entry| {
        let target = e.target.as_deref().expect("validated");
        fsx::symlink_at(target, dir, name)
            .map_err(|err| format!("cannot create symlink: {err}"))?;
        fsx::set_symlink_meta_at(dir, name, &ctx.meta_of(e))
            .map_err(|err| format!("cannot set symlink metadata: {err}"))
    };
    make_each(
        ctx,
        tree,
        problems,
        |e| e.kind == EntryKind::Symlink,
        symlink,
    );
}

/// FIFOs and device nodes (device nodes need root: otherwise each is a per-item problem).
pub(super) fn make_specials(ctx: WriteCtx<'_>, tree: &[Entry], problems: &mut Vec<Problem>) {
    let node = |dir, name: &[u8], e: &Entry| {
        fsx::mknod_at(dir, name, e.kind.mknod_type(), e.rdev, &ctx.meta_of(e))
            .map_err(|err| format!("cannot create {}: {err}", e.kind.name()))
    };
    make_each(ctx, tree, problems, |e| e.kind.is_special(), node);
}

/// Folder metadata, deepest first, once nothing more is written into them.
pub(super) fn set_dir_meta(ctx: WriteCtx<'_>, tree: &[Entry], problems: &mut Vec<Problem>) {
    for e in tree.iter().rev().filter(|e| e.kind == EntryKind::Dir) {
        let r = fsx::open_path(ctx.root, &components(&e.path))
            .map_err(|err| format!("cannot open folder: {err}"))
            .and_then(|fd| {
                fsx::set_meta_fd(fd.as_raw_fd(), &ctx.meta_of(e))
                    .map(|refused| ctx.note_refused(&e.path, refused))
                    .map_err(|err| format!("cannot set folder metadata: {err}"))
            });
        if let Err(why) = r {
            problems.push(Problem::failed(e.path.clone(), why));
        }
    }
}
