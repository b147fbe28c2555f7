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
//! - Modes are exact (setuid/setgid included) when root restores, unless `no_setid`; a non-root
//!   restore clears setuid/setgid. Extended attributes, ACLs and capabilities are set back after
//!   the content and owner, before the mode and mtime; one the target refuses is a problem.
//! - Only the archives that hold needed content are read, each once, streaming, and reading stops
//!   after the last needed member; decompression runs on the calling thread beside the pool's
//!   workers that check and write.
//! - A path that cannot be restored (a folder that cannot be written, a damaged content) is a
//!   per-item problem: it is named in the report, everything else is still restored, and the
//!   command exits 3.
//!
//! The steps: `validate` the tree, clear the way in the [`target`], then `write` folders,
//! file contents from each `archive`, hard links and symlinks, `--delete`, folder metadata.

mod archive;
pub mod target;
mod validate;
mod wants;
mod write;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::fsx;
use crate::engine::problem::Problem;
use crate::engine::query;
use crate::engine::repo::Repository;
use crate::error::{Error, Result};
use crate::manifest::SnapshotRow;
use crate::pool::{CancelToken, Pool};
use crate::progress::Progress;
use crate::text::display_path;
use crate::tree::{Entry, EntryKind};

pub use validate::safe_components;
use write::WriteCtx;

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
    /// Strip setuid/setgid even when running as root (a non-root restore always strips them).
    pub no_setid: bool,
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
    /// FIFOs and device nodes.
    pub specials: u64,
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
    pub errors: Vec<Problem>,
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
    validate::validate_tree(&snap, &tree)?;
    if !opts.include.is_empty() {
        tree = validate::filter_include(&snap, tree, &opts.include)?;
    }
    let mut problems: Vec<Problem> = Vec::new();
    let spared = target::repository_inside(&opts.repo, &opts.target)?;
    if let Some(r) = &spared {
        target::spare_repository(&mut tree, r, &mut problems);
    }
    let report = RestoreReport {
        snapshot: snap.id.clone(),
        source: display_path(&snap.source_path),
        target: opts.target.display().to_string(),
        dry_run: opts.dry_run,
        ..RestoreReport::default()
    };
    let had_content = check_target(opts)?;
    if opts.dry_run {
        return dry_run(opts, tree, spared, problems, report);
    }
    let job = Job {
        opts,
        repo: &repo,
        snap: &snap,
        spared,
        had_content,
        pool,
        cancel,
        progress,
    };
    job.run(tree, problems, report)
}

/// A restore past its checks, into an existing target.
struct Job<'a> {
    opts: &'a RestoreOptions,
    repo: &'a Repository,
    snap: &'a SnapshotRow,
    spared: Option<Vec<u8>>,
    had_content: bool,
    pool: &'a Pool,
    cancel: &'a CancelToken,
    progress: &'a dyn Progress,
}

impl Job<'_> {
    fn run(
        self,
        mut tree: Vec<Entry>,
        mut problems: Vec<Problem>,
        mut report: RestoreReport,
    ) -> Result<RestoreReport> {
        let opts = self.opts;
        let root = open_target(&opts.target)?;
        let root_fd = root.as_raw_fd();
        let mut removed = Vec::new();
        if self.had_content {
            target::clear_folders_in_the_way(
                root_fd,
                &mut tree,
                opts.delete,
                false,
                &mut removed,
                &mut problems,
            )?;
        }
        count_kinds(&tree, &mut report);
        // Failures from here on are of entries counted above: each uncounts its entry.
        let failed_before = problems.len();
        let is_root = unsafe { libc::geteuid() } == 0;
        let notes = std::sync::Mutex::new(Vec::new());
        let ctx = WriteCtx {
            root: root_fd,
            algo: self.snap.hash,
            owner: is_root,
            keep_setid: is_root && !opts.no_setid,
            force: opts.force,
            notes: &notes,
        };
        let dropped = write::make_dirs(root_fd, &mut tree, &mut problems);
        let written = self.write_files(ctx, &tree, &mut report, &mut problems)?;
        write::make_symlinks(ctx, &tree, &mut problems);
        write::make_specials(ctx, &tree, &mut problems);
        if opts.delete {
            let scope = target::delete_scope(opts, &tree, self.spared.clone(), false);
            target::delete_extra(root_fd, Vec::new(), &scope, &mut removed)
                .map_err(|e| target::delete_failed(opts, e))?;
        }
        report.deleted = removed.len() as u64;
        write::set_dir_meta(ctx, &tree, &mut problems);
        self.set_root_meta(ctx, &mut problems);
        // SAFETY: syncfs on an fd we hold.
        unsafe { libc::syncfs(root_fd) };
        self.progress.finish();
        report.bytes_written = written;
        report.uncount(&problems[failed_before..], &tree, &dropped);
        // Refused attributes: the path is restored, but not quite as it was.
        problems.extend(notes.into_inner().unwrap_or_else(|e| e.into_inner()));
        Ok(report.with_problems(problems))
    }

    /// File contents, then the hard links between restored files. Returns bytes written.
    fn write_files(
        &self,
        ctx: WriteCtx<'_>,
        tree: &[Entry],
        report: &mut RestoreReport,
        problems: &mut Vec<Problem>,
    ) -> Result<u64> {
        let mut plan = archive::plan_files(self.repo, self.snap, tree, problems)?;
        let total = plan.files.iter().map(|e| e.size).sum();
        self.progress.phase("restore", Some(total));
        let writer = archive::Writer {
            ctx,
            pool: self.pool,
            cancel: self.cancel,
            progress: self.progress,
            written: AtomicU64::new(0),
        };
        report.archives = writer.write_all(self.repo, self.snap, &mut plan, problems)?;
        let links: Vec<(&Entry, &Entry)> = plan
            .links
            .iter()
            .map(|&(l, p)| (plan.files[l], plan.files[p]))
            .collect();
        report.hardlinks = write::make_links(ctx.root, &links, problems);
        Ok(writer.written.load(Ordering::Relaxed))
    }

    /// The target itself gets the source folder's metadata when the whole tree was restored.
    fn set_root_meta(&self, ctx: WriteCtx<'_>, problems: &mut Vec<Problem>) {
        let (Some(r), true) = (self.snap.root, self.opts.include.is_empty()) else {
            return;
        };
        let meta = fsx::Meta {
            mode: ctx.mode(r.mode),
            owner: ctx.owner.then_some((r.uid, r.gid)),
            mtime_ns: r.mtime_ns,
            xattrs: None,
        };
        if let Err(err) = fsx::set_meta_fd(ctx.root, &meta) {
            problems.push(Problem::failed(
                Vec::new(),
                format!("cannot set the target's metadata: {err}"),
            ));
        }
    }
}

impl RestoreReport {
    /// Takes the entries that failed out of the counts of what was restored: each is in the
    /// tree (in path order) or among the entries taken out of it below failed folders.
    fn uncount(&mut self, failed: &[Problem], tree: &[Entry], dropped: &[(Vec<u8>, EntryKind)]) {
        for p in failed {
            let in_tree = tree
                .binary_search_by(|e| e.path.as_slice().cmp(&p.path))
                .map(|i| tree[i].kind);
            let kind = in_tree.ok().or_else(|| {
                dropped
                    .binary_search_by(|(path, _)| path.as_slice().cmp(&p.path))
                    .ok()
                    .map(|i| dropped[i].1)
            });
            let counter = match kind {
                Some(EntryKind::File) => &mut self.files,
                Some(EntryKind::Dir) => &mut self.dirs,
                Some(EntryKind::Symlink) => &mut self.symlinks,
                Some(EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice) => {
                    &mut self.specials
                }
                None => continue, // the target's own metadata
            };
            *counter = counter.saturating_sub(1);
        }
    }

    /// Sorts the problems into the report.
    fn with_problems(mut self, mut problems: Vec<Problem>) -> RestoreReport {
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        self.failed = problems.len() as u64;
        self.errors = problems;
        self
    }
}

/// Creates the target if need be and opens it.
fn open_target(target: &std::path::Path) -> Result<std::os::fd::OwnedFd> {
    std::fs::create_dir_all(target)
        .map_err(|e| Error::Refused(format!("cannot create target {}: {e}", target.display())))?;
    fsx::open_root(target)
        .map_err(|e| Error::Refused(format!("cannot open target {}: {e}", target.display())))
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
            EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice => {
                report.specials += 1
            }
        }
    }
}

/// A dry run: what would be written, what would fail, and what `--delete` would remove.
fn dry_run(
    opts: &RestoreOptions,
    mut tree: Vec<Entry>,
    spared: Option<Vec<u8>>,
    mut errors: Vec<Problem>,
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
            let scope = target::delete_scope(opts, &tree, spared, true);
            target::delete_extra(fd, Vec::new(), &scope, &mut removed)
                .map_err(|e| target::delete_failed(opts, e))?;
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
