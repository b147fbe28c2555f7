//! `vault restore`: make a target folder hold a snapshot's tree exactly.
//!
//! Restore is a security boundary. Promises:
//! - Only what the manifest vouches for is written: the tree comes from the manifest; an archive
//!   member is used only if it is a regular member whose name is the one the manifest recorded for
//!   a needed content, whose size matches, and whose digest checks out as it is written. Every other
//!   member (unknown names, links, devices, `../` or absolute names) is never acted on.
//! - Nothing is written outside the target: every manifest path is checked (relative, no `.`, `..`
//!   or empty component, below a folder of the snapshot), and every folder below the target is
//!   reached with `openat(O_NOFOLLOW)` one component at a time, so no symlink is ever followed.
//! - Files are written to a temporary name, checked, given their metadata, then renamed.
//! - Setuid/setgid bits are cleared unless running as root with `preserve_setid`.
//! - Only the archives that hold needed content are read, each once, streaming, and reading stops
//!   after the last needed member; decompression runs beside the workers that check and write.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::archive::reader::{self, Flow, MemberKind, ReadError};
use crate::engine::fsx;
use crate::engine::query;
use crate::engine::repo::Repository;
use crate::engine::scan::Warning;
use crate::engine::target;
use crate::error::{Error, Result};
use crate::hash::HashAlgo;
use crate::manifest::SnapshotRow;
use crate::pool::{CancelToken, Pool};
use crate::progress::Progress;
use crate::tree::{display_path, Entry, EntryKind};

/// Members up to this size are read whole by the archive reader and written by a worker.
const INLINE_MAX: u64 = 1 << 20;
/// Small members are handed to the workers in batches of up to this many (or INLINE_MAX bytes).
const BATCH_FILES: usize = 64;

/// Which snapshot to restore.
#[derive(Clone, Debug)]
pub enum SnapSpec {
    /// An id, a unique id prefix, or `latest`.
    Id(String),
    /// The newest snapshot taken at or before this time (ns since the epoch).
    At(i64),
}

/// What `vault restore` was asked to do.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub repo: PathBuf,
    pub snapshot: SnapSpec,
    pub source: Option<PathBuf>,
    pub target: PathBuf,
    /// Only these paths (relative to the source) and what is below them.
    /// Raw bytes, as paths are (names need not be UTF-8).
    pub include: Vec<Vec<u8>>,
    pub force: bool,
    pub delete: bool,
    pub dry_run: bool,
    pub preserve_setid: bool,
}

/// The outcome of `vault restore`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub source: String,
    pub target: String,
    /// Files restored (failed ones not counted).
    pub files: u64,
    /// Files that could not be restored.
    pub failed: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Files restored as hard links of another restored file (as they were in the source).
    pub hardlinks: u64,
    pub bytes_written: u64,
    /// Paths removed from the target by `--delete` (folders in the way of a file included).
    pub deleted: u64,
    /// The archives read.
    pub archives: Vec<String>,
    pub dry_run: bool,
    /// Dry run only: the paths that would be written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_write: Option<Vec<String>>,
    /// Dry run only: the paths that `--delete` would remove.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_delete: Option<Vec<String>>,
    /// Files that could not be restored (damaged or missing content); non-empty means failure.
    pub errors: Vec<Warning>,
}

/// Splits a manifest path into components, refusing anything that could leave the target.
pub fn safe_components(path: &[u8]) -> Option<Vec<&[u8]>> {
    if path.is_empty() || path[0] == b'/' || path.contains(&0) {
        return None;
    }
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == b"." || *c == b"..")
    {
        return None;
    }
    Some(parts)
}

fn unsafe_path(snap: &SnapshotRow, path: &[u8], why: &str) -> Error {
    Error::Refused(format!(
        "snapshot {}: manifest path '{}' {why}; refusing to restore (the manifest may have been tampered with)",
        snap.id,
        display_path(path)
    ))
}

/// Checks every path of a tree and that each one lies below a folder of the tree.
fn validate_tree(snap: &SnapshotRow, tree: &[Entry]) -> Result<()> {
    let kinds: HashMap<&[u8], EntryKind> =
        tree.iter().map(|e| (e.path.as_slice(), e.kind)).collect();
    for e in tree {
        let parts = safe_components(&e.path).ok_or_else(|| {
            unsafe_path(
                snap,
                &e.path,
                "is absolute or has an empty, '.' or '..' component",
            )
        })?;
        if parts.len() > 1 {
            let parent = &e.path[..e.path.len() - parts[parts.len() - 1].len() - 1];
            match kinds.get(parent) {
                Some(EntryKind::Dir) => {}
                Some(_) => {
                    return Err(unsafe_path(
                        snap,
                        &e.path,
                        "lies below something that is not a folder",
                    ))
                }
                None => {
                    return Err(unsafe_path(
                        snap,
                        &e.path,
                        "lies below a folder the snapshot does not have",
                    ))
                }
            }
        }
        if e.kind == EntryKind::File && e.digest.is_none() {
            return Err(unsafe_path(snap, &e.path, "is a file without a digest"));
        }
        if e.kind == EntryKind::Symlink && e.target.is_none() {
            return Err(unsafe_path(snap, &e.path, "is a symlink without a target"));
        }
    }
    Ok(())
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Holds the folder fd of the last parent used, since paths arrive in tree order.
struct DirCache {
    root: RawFd,
    last: Option<(Vec<u8>, OwnedFd)>,
}

impl DirCache {
    fn new(root: RawFd) -> DirCache {
        DirCache { root, last: None }
    }
    fn get(&mut self, parent: &[u8]) -> io::Result<RawFd> {
        if let Some((p, fd)) = &self.last {
            if p.as_slice() == parent {
                return Ok(fd.as_raw_fd());
            }
        }
        let fd = fsx::open_path(self.root, &fsx::components(parent))?;
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

/// Settings every file write needs.
#[derive(Clone, Copy)]
struct WriteCtx {
    root: RawFd,
    algo: HashAlgo,
    owner: bool,
    keep_setid: bool,
    force: bool,
}

fn final_mode(mode: u32, keep_setid: bool) -> u32 {
    if keep_setid {
        mode & 0o7777
    } else {
        mode & 0o1777
    }
}

/// Writes one file from `data` (exactly `entry.size` bytes expected) to a temporary name,
/// checks its digest, sets its metadata and renames it into place. Returns bytes written.
fn write_file(
    ctx: WriteCtx,
    dirs: &mut DirCache,
    entry: &Entry,
    data: &mut dyn Read,
    archive: &str,
) -> std::result::Result<u64, String> {
    let (parent, name) = split_parent(&entry.path);
    let dir = dirs
        .get(parent)
        .map_err(|e| format!("cannot open its folder: {e}"))?;
    let tmp = tmp_name();
    let mut f = fsx::create_excl_at(dir, &tmp).map_err(|e| format!("cannot create: {e}"))?;
    let result = (|| -> std::result::Result<u64, String> {
        let mut h = ctx.algo.hasher();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        let mut limited = data.take(entry.size + 1);
        loop {
            let k = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(format!(
                        "cannot read its content from archive {archive}: {e}"
                    ))
                }
            };
            h.update(&buf[..k]);
            f.write_all(&buf[..k])
                .map_err(|e| format!("cannot write: {e}"))?;
            n += k as u64;
        }
        if n != entry.size {
            return Err(format!(
                "size mismatch in archive {archive}: {n} bytes, the manifest says {}",
                entry.size
            ));
        }
        let got = h.finish();
        if Some(got) != entry.digest {
            return Err(format!(
                "digest mismatch in archive {archive}: content has {}, the manifest says {}",
                got,
                entry.digest.map(|d| d.to_hex()).unwrap_or_default()
            ));
        }
        let owner = ctx.owner.then_some((entry.uid, entry.gid));
        fsx::set_meta_fd(
            f.as_raw_fd(),
            final_mode(entry.mode, ctx.keep_setid),
            owner,
            entry.mtime_ns,
        )
        .map_err(|e| format!("cannot set metadata: {e}"))?;
        if ctx.force {
            // Only an empty folder can still be here (see target::clear_folders_in_the_way).
            if let Ok(Some(st)) = fsx::lstat_at(dir, name) {
                if fsx::is_dir(&st) {
                    fsx::unlink_at(dir, name, true)
                        .map_err(|e| format!("cannot replace folder: {e}"))?;
                }
            }
        } else if let Ok(Some(_)) = fsx::lstat_at(dir, name) {
            return Err("already exists in the target".into());
        }
        fsx::rename_at(dir, &tmp, name).map_err(|e| format!("cannot rename into place: {e}"))?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = fsx::unlink_at(dir, &tmp, false);
    }
    result
}

/// A needed content: where it goes.
struct Wanted {
    /// Indices into the restore's file list; the first is written from the archive, the
    /// others copied from it.
    dests: Vec<usize>,
    size: u64,
}

/// Work for the pool.
enum Job {
    /// Small members' contents, batched so that one hand-over carries many files (one per file
    /// made the channels, not the disk, the cost of restoring many small files).
    Data(Vec<(Vec<u8>, Vec<usize>)>),
    Done {
        dests: Vec<usize>,
        result: std::result::Result<u64, String>,
    },
    Fail {
        dests: Vec<usize>,
        error: String,
    },
}

/// Runs one restore.
pub fn restore(
    opts: &RestoreOptions,
    pool: &Pool,
    cancel: &CancelToken,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let repo = Repository::open(&opts.repo)?;
    let snap = match &opts.snapshot {
        SnapSpec::Id(s) => query::resolve(&repo, s, opts.source.as_deref())?,
        SnapSpec::At(t) => query::resolve_at(&repo, *t, opts.source.as_deref())?,
    };
    let mut tree = repo.manifest.snapshot_entries(&snap)?;
    validate_tree(&snap, &tree)?;
    if !opts.include.is_empty() {
        tree = filter_include(&snap, tree, &opts.include)?;
    }
    let mut errors: Vec<Warning> = Vec::new();
    let spared = target::repository_inside(&opts.repo, &opts.target)?;
    if let Some(r) = &spared {
        target::spare_repository(&mut tree, r, &mut errors);
    }
    let mut report = RestoreReport {
        snapshot: snap.id.clone(),
        source: display_path(&snap.source_path),
        target: opts.target.display().to_string(),
        dry_run: opts.dry_run,
        ..RestoreReport::default()
    };

    let had_content = check_target(opts)?;
    if opts.dry_run {
        return dry_run(opts, tree, spared, errors, report);
    }
    std::fs::create_dir_all(&opts.target).map_err(|e| {
        Error::Refused(format!(
            "cannot create target {}: {e}",
            opts.target.display()
        ))
    })?;
    let root = fsx::open_root(&opts.target).map_err(|e| {
        Error::Refused(format!("cannot open target {}: {e}", opts.target.display()))
    })?;
    let root_fd = root.as_raw_fd();
    let mut removed = Vec::new();
    if had_content {
        target::clear_folders_in_the_way(
            root_fd,
            &mut tree,
            opts.delete,
            false,
            &mut removed,
            &mut errors,
        )?;
    }
    count_kinds(&tree, &mut report);
    // Failures from here on are of entries counted above.
    let failed_before = errors.len() as u64;
    let is_root = unsafe { libc::geteuid() } == 0;
    let ctx = WriteCtx {
        root: root_fd,
        algo: snap.hash,
        owner: is_root,
        keep_setid: is_root && opts.preserve_setid,
        force: opts.force,
    };
    let target_err = |e: &Entry, what: &str, err: io::Error| {
        Error::Refused(format!(
            "cannot restore {} in {}: {what}: {err}",
            display_path(&e.path),
            opts.target.display()
        ))
    };

    // 1. Folders, parents first (0700 while we write into them).
    let mut dirs = DirCache::new(root_fd);
    for e in tree.iter().filter(|e| e.kind == EntryKind::Dir) {
        let (parent, name) = split_parent(&e.path);
        let dir = dirs
            .get(parent)
            .map_err(|err| target_err(e, "cannot open its folder", err))?;
        match fsx::lstat_at(dir, name).map_err(|err| target_err(e, "cannot stat", err))? {
            Some(st) if fsx::is_dir(&st) => {}
            Some(_) => {
                fsx::remove_tree_at(dir, name)
                    .map_err(|err| target_err(e, "cannot replace", err))?;
                fsx::mkdir_at(dir, name, 0o700)
                    .map_err(|err| target_err(e, "cannot create folder", err))?;
            }
            None => fsx::mkdir_at(dir, name, 0o700)
                .map_err(|err| target_err(e, "cannot create folder", err))?,
        }
    }
    drop(dirs);

    // 2. Files: hard-link groups share one written file; contents are found in the chain.
    let files: Vec<&Entry> = tree.iter().filter(|e| e.kind == EntryKind::File).collect();
    let mut primary_of: HashMap<(u64, u64), usize> = HashMap::new();
    let mut links: Vec<(usize, usize)> = Vec::new(); // (link, primary)
    let mut by_archive: BTreeMap<i64, HashMap<Vec<u8>, Wanted>> = BTreeMap::new();
    let mut empty: Vec<usize> = Vec::new();
    for (i, e) in files.iter().enumerate() {
        if e.stat.nlink > 1 {
            if let Some(&p) = primary_of.get(&(e.stat.dev, e.stat.ino)) {
                if files[p].digest == e.digest {
                    links.push((i, p));
                    continue;
                }
            } else {
                primary_of.insert((e.stat.dev, e.stat.ino), i);
            }
        }
        if e.size == 0 {
            empty.push(i);
            continue;
        }
        let digest = e.digest.expect("validated");
        match repo.manifest.blob(snap.chain_seq, &digest)? {
            Some(loc) => {
                let w = by_archive
                    .entry(loc.snap_seq)
                    .or_default()
                    .entry(loc.member)
                    .or_insert(Wanted { dests: Vec::new(), size: loc.size });
                w.dests.push(i);
            }
            None => errors.push(Warning::failed(
                e.path.clone(),
                format!("content {digest} is not stored in the chain of snapshot {} (manifest damaged?)", snap.id),
            )),
        }
    }
    let chain: HashMap<i64, SnapshotRow> = repo
        .manifest
        .snapshots(Some(snap.source_id))?
        .into_iter()
        .map(|r| (r.seq, r))
        .collect();

    let total: u64 = files.iter().map(|e| e.size).sum();
    progress.phase("restore", Some(total));
    let written = AtomicU64::new(0);
    let mut dirs = DirCache::new(root_fd);
    for &i in &empty {
        match write_file(ctx, &mut dirs, files[i], &mut io::empty(), "-") {
            Ok(_) => {}
            Err(err) => errors.push(Warning::failed(files[i].path.clone(), err)),
        }
    }
    drop(dirs);
    for (seq, wanted) in by_archive {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let Some(row) = chain.get(&seq) else {
            for w in wanted.values() {
                for &i in &w.dests {
                    errors.push(Warning::failed(
                        files[i].path.clone(),
                        format!("snapshot seq {seq} holding its content is gone"),
                    ));
                }
            }
            continue;
        };
        let Some(archive) = row.archive.clone() else {
            for w in wanted.values() {
                for &i in &w.dests {
                    errors.push(Warning::failed(
                        files[i].path.clone(),
                        format!("snapshot {} has no archive", row.id),
                    ));
                }
            }
            continue;
        };
        report.archives.push(format!("archives/{archive}"));
        let path = repo.archives_dir().join(&archive);
        let files_ref = &files;
        let errs = restore_archive(
            ctx, pool, cancel, progress, &path, &archive, wanted, files_ref, &written,
        )?;
        errors.extend(errs);
    }

    // 3. Hard links of restored files.
    let mut dirs = DirCache::new(root_fd);
    let failed: HashSet<Vec<u8>> = errors.iter().map(|w| w.path.clone()).collect();
    for (l, p) in links {
        let (le, pe) = (files[l], files[p]);
        if failed.contains(&pe.path) {
            errors.push(Warning::failed(
                le.path.clone(),
                "hard link of a file that failed".to_string(),
            ));
            continue;
        }
        let r = (|| -> io::Result<()> {
            let (pp, pn) = split_parent(&pe.path);
            let (lp, ln) = split_parent(&le.path);
            let pdir = fsx::open_path(root_fd, &fsx::components(pp))?;
            let ldir = dirs.get(lp)?;
            clear_slot(ldir, ln)?;
            fsx::link_at(pdir.as_raw_fd(), pn, ldir, ln)
        })();
        match r {
            Ok(()) => report.hardlinks += 1,
            Err(err) => errors.push(Warning::failed(
                le.path.clone(),
                format!("cannot link: {err}"),
            )),
        }
    }

    // 4. Symlinks, created as they are and never followed.
    for e in tree.iter().filter(|e| e.kind == EntryKind::Symlink) {
        let (parent, name) = split_parent(&e.path);
        let dir = dirs
            .get(parent)
            .map_err(|err| target_err(e, "cannot open its folder", err))?;
        clear_slot(dir, name).map_err(|err| target_err(e, "cannot replace", err))?;
        let target = e.target.as_deref().expect("validated");
        fsx::symlink_at(target, dir, name)
            .map_err(|err| target_err(e, "cannot create symlink", err))?;
        let owner = is_root.then_some((e.uid, e.gid));
        fsx::set_symlink_meta_at(dir, name, owner, e.mtime_ns)
            .map_err(|err| target_err(e, "cannot set symlink metadata", err))?;
    }
    drop(dirs);

    // 5. --delete: what the snapshot does not have goes (within --include when given).
    if opts.delete {
        let scope = delete_scope(opts, &tree, spared, false);
        target::delete_extra(root_fd, Vec::new(), &scope, &mut removed)
            .map_err(|e| delete_failed(opts, e))?;
    }
    report.deleted = removed.len() as u64;

    // 6. Folder metadata, deepest first, now that nothing more is written into them.
    for e in tree.iter().rev().filter(|e| e.kind == EntryKind::Dir) {
        let fd = fsx::open_path(root_fd, &fsx::components(&e.path))
            .map_err(|err| target_err(e, "cannot open folder", err))?;
        let owner = is_root.then_some((e.uid, e.gid));
        fsx::set_meta_fd(
            fd.as_raw_fd(),
            final_mode(e.mode, ctx.keep_setid),
            owner,
            e.mtime_ns,
        )
        .map_err(|err| target_err(e, "cannot set folder metadata", err))?;
    }
    // The target itself gets the source folder's metadata when the whole tree was restored.
    if let (Some(r), true) = (snap.root, opts.include.is_empty()) {
        fsx::set_meta_fd(
            root_fd,
            final_mode(r.mode, ctx.keep_setid),
            is_root.then_some((r.uid, r.gid)),
            r.mtime_ns,
        )
        .map_err(|err| {
            Error::Refused(format!(
                "cannot set the metadata of target {}: {err}",
                opts.target.display()
            ))
        })?;
    }
    // SAFETY: syncfs on an fd we hold.
    unsafe { libc::syncfs(root_fd) };
    progress.finish();
    report.bytes_written = written.load(Ordering::Relaxed);
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    report.failed = errors.len() as u64;
    report.files = report
        .files
        .saturating_sub(report.failed.saturating_sub(failed_before));
    report.errors = errors;
    Ok(report)
}

/// The target must be missing (it is created), an empty folder, or anything with --force.
/// Returns whether it already held something.
fn check_target(opts: &RestoreOptions) -> Result<bool> {
    match std::fs::symlink_metadata(&opts.target) {
        Ok(_) if !opts.target.is_dir() => Err(Error::Refused(format!(
            "target {} exists and is not a folder",
            opts.target.display()
        ))),
        Ok(_) => {
            let non_empty = std::fs::read_dir(&opts.target)
                .map_err(|e| {
                    Error::Refused(format!("cannot read target {}: {e}", opts.target.display()))
                })?
                .next()
                .is_some();
            if non_empty && !opts.force {
                return Err(Error::Refused(format!(
                    "target {} is not empty; use --force to restore over it (and --delete to remove what the snapshot lacks)",
                    opts.target.display()
                )));
            }
            Ok(non_empty)
        }
        Err(_) => Ok(false),
    }
}

fn count_kinds(tree: &[Entry], report: &mut RestoreReport) {
    for e in tree {
        match e.kind {
            EntryKind::File => report.files += 1,
            EntryKind::Dir => report.dirs += 1,
            EntryKind::Symlink => report.symlinks += 1,
        }
    }
}

/// Reads one archive on a reader thread and writes the wanted members on the pool.
#[allow(clippy::too_many_arguments)]
fn restore_archive(
    ctx: WriteCtx,
    pool: &Pool,
    cancel: &CancelToken,
    progress: &dyn Progress,
    path: &Path,
    archive: &str,
    mut wanted: HashMap<Vec<u8>, Wanted>,
    files: &[&Entry],
    written: &AtomicU64,
) -> Result<Vec<Warning>> {
    let mut errors = Vec::new();
    let (tx, rx) = crossbeam::channel::bounded::<Job>(pool.threads() * 2);
    let archive_name = archive.to_string();
    std::thread::scope(|s| -> Result<()> {
        let reader = s.spawn(move || {
            let mut dirs = DirCache::new(ctx.root);
            let mut batch: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
            let mut batch_bytes = 0u64;
            let r = reader::for_each_member(path, reader::compression_of(path), |m| -> std::result::Result<Flow, ()> {
                if wanted.is_empty() || cancel.is_cancelled() {
                    return Ok(Flow::Stop);
                }
                let Some(w) = wanted.remove(&m.name) else {
                    return Ok(Flow::Continue); // not vouched for by the manifest: never used
                };
                let job = if m.kind != MemberKind::Regular {
                    Job::Fail { dests: w.dests, error: format!("member in archive {archive_name} is not a regular file") }
                } else if m.size != w.size {
                    Job::Fail { dests: w.dests, error: format!("member in archive {archive_name} has {} bytes, the manifest says {}", m.size, w.size) }
                } else if m.size <= INLINE_MAX {
                    let mut data = Vec::with_capacity(m.size as usize);
                    match m.data.take(m.size).read_to_end(&mut data) {
                        Ok(_) => {
                            batch_bytes += data.len() as u64;
                            batch.push((data, w.dests));
                            if batch.len() < BATCH_FILES && batch_bytes < INLINE_MAX {
                                return Ok(Flow::Continue);
                            }
                            batch_bytes = 0;
                            Job::Data(std::mem::take(&mut batch))
                        }
                        Err(e) => Job::Fail { dests: w.dests, error: format!("archive {archive_name} is damaged: {e}") },
                    }
                } else {
                    let result = write_file(ctx, &mut dirs, files[w.dests[0]], m.data, &archive_name);
                    Job::Done { dests: w.dests, result }
                };
                tx.send(job).map_err(|_| ())?;
                Ok(Flow::Continue)
            });
            if !batch.is_empty() {
                let _ = tx.send(Job::Data(batch));
            }
            let leftover = match r {
                Ok(()) => format!("not found in archive {archive_name}"),
                Err(Ok(())) => "restore stopped".to_string(),
                Err(Err(ReadError::Missing { .. })) => format!("archive {archive_name} is missing"),
                Err(Err(e)) => e.to_string(),
            };
            for (_, w) in wanted.drain() {
                let _ = tx.send(Job::Fail { dests: w.dests, error: leftover.clone() });
            }
        });
        let result = pool.map_unordered(
            cancel,
            rx.iter(),
            || DirCache::new(ctx.root),
            |dirs, job| -> Vec<(usize, std::result::Result<u64, String>)> {
                let mut out = Vec::new();
                let mut finish =
                    |dirs: &mut DirCache,
                     dests: Vec<usize>,
                     first: std::result::Result<u64, String>| {
                        for &d in &dests[1..] {
                            let r = match &first {
                                Err(e) => Err(e.clone()),
                                Ok(_) => {
                                    copy_restored(ctx, dirs, files[dests[0]], files[d], archive)
                                }
                            };
                            out.push((d, r));
                        }
                        out.push((dests[0], first));
                    };
                match job {
                    Job::Fail { dests, error } => {
                        return dests.into_iter().map(|d| (d, Err(error.clone()))).collect()
                    }
                    Job::Done { dests, result } => finish(dirs, dests, result),
                    Job::Data(batch) => {
                        for (data, dests) in batch {
                            let r = write_file(
                                ctx,
                                dirs,
                                files[dests[0]],
                                &mut data.as_slice(),
                                archive,
                            );
                            finish(dirs, dests, r);
                        }
                    }
                }
                out
            },
            |results| -> std::result::Result<(), ()> {
                for (i, r) in results {
                    match r {
                        Ok(n) => {
                            written.fetch_add(n, Ordering::Relaxed);
                            progress.advance(n);
                        }
                        Err(e) => errors.push(Warning::failed(files[i].path.clone(), e)),
                    }
                }
                Ok(())
            },
        );
        let _ = reader.join();
        crate::error::pool_done(result)
    })?;
    Ok(errors)
}

/// Writes `dest` with the content of the already restored `src` (same digest).
fn copy_restored(
    ctx: WriteCtx,
    dirs: &mut DirCache,
    src: &Entry,
    dest: &Entry,
    archive: &str,
) -> std::result::Result<u64, String> {
    let (sp, sn) = split_parent(&src.path);
    let sdir = fsx::open_path(ctx.root, &fsx::components(sp))
        .map_err(|e| format!("cannot open {}: {e}", display_path(sp)))?;
    let mut f = fsx::open_file_at(sdir.as_raw_fd(), sn)
        .map_err(|e| format!("cannot reopen {}: {e}", display_path(&src.path)))?;
    write_file(ctx, dirs, dest, &mut f, archive)
}

fn filter_include(snap: &SnapshotRow, tree: Vec<Entry>, include: &[Vec<u8>]) -> Result<Vec<Entry>> {
    let wanted: Vec<Vec<u8>> = include.iter().map(|s| trim_slashes(s).to_vec()).collect();
    for w in &wanted {
        if !tree.iter().any(|e| &e.path == w) {
            return Err(Error::Usage(format!(
                "--include {}: no such path in snapshot {}",
                display_path(w),
                snap.id
            )));
        }
    }
    // The path is inside an included one, or is a folder above it.
    let keep = |p: &[u8]| {
        wanted
            .iter()
            .any(|w| target::within(p, w) || target::above(p, w))
    };
    Ok(tree.into_iter().filter(|e| keep(&e.path)).collect())
}

/// Empties the place of a file or symlink about to be made: unlinks a non-folder, removes an
/// empty folder (a non-empty one fails; see target::clear_folders_in_the_way).
fn clear_slot(dir: RawFd, name: &[u8]) -> io::Result<()> {
    match fsx::lstat_at(dir, name)? {
        Some(st) if fsx::is_dir(&st) => fsx::unlink_at(dir, name, true),
        Some(_) => fsx::unlink_at(dir, name, false),
        None => Ok(()),
    }
}

fn trim_slashes(p: &[u8]) -> &[u8] {
    let start = p.iter().position(|&b| b != b'/').unwrap_or(p.len());
    let end = p.iter().rposition(|&b| b != b'/').map_or(start, |i| i + 1);
    &p[start..end]
}

/// What `--delete` keeps: the snapshot's paths, outside the `--include` scopes everything.
fn delete_scope<'a>(
    opts: &RestoreOptions,
    tree: &'a [Entry],
    repo: Option<Vec<u8>>,
    dry_run: bool,
) -> target::DeleteScope<'a> {
    target::DeleteScope {
        keep: tree.iter().map(|e| (e.path.as_slice(), e.kind)).collect(),
        scopes: if opts.include.is_empty() {
            vec![Vec::new()]
        } else {
            opts.include
                .iter()
                .map(|s| trim_slashes(s).to_vec())
                .collect()
        },
        repo,
        dry_run,
    }
}

fn delete_failed(opts: &RestoreOptions, (path, e): (Vec<u8>, io::Error)) -> Error {
    Error::Refused(format!(
        "--delete: cannot remove or list {} in {}: {e}",
        if path.is_empty() {
            ".".to_string()
        } else {
            display_path(&path)
        },
        opts.target.display()
    ))
}

/// A dry run: what would be written, what would fail, and what `--delete` would remove.
fn dry_run(
    opts: &RestoreOptions,
    mut tree: Vec<Entry>,
    spared: Option<Vec<u8>>,
    mut errors: Vec<Warning>,
    mut report: RestoreReport,
) -> Result<RestoreReport> {
    let mut removed = Vec::new();
    if let Ok(root) = fsx::open_root(&opts.target) {
        let fd = root.as_raw_fd();
        target::clear_folders_in_the_way(
            fd,
            &mut tree,
            opts.delete,
            true,
            &mut removed,
            &mut errors,
        )?;
        if opts.delete {
            let scope = delete_scope(opts, &tree, spared, true);
            target::delete_extra(fd, Vec::new(), &scope, &mut removed)
                .map_err(|e| delete_failed(opts, e))?;
        }
    }
    count_kinds(&tree, &mut report);
    report.would_write = Some(tree.iter().map(|e| display_path(&e.path)).collect());
    report.would_delete = Some(removed.iter().map(|p| display_path(p)).collect());
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    report.failed = errors.len() as u64;
    report.errors = errors;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"a/../../x",
            b"a//b",
            b"./a",
            b"a/.",
            b"",
            b"a\0b",
            b"a/",
        ] {
            assert!(
                safe_components(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(safe_components(b"a/b.c/..d").unwrap().len(), 3);
    }
}
