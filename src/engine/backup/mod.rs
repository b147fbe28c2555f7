//! `vault backup`: walk, plan, read and hash on the pool, write one archive, commit the manifest.
//!
//! Promises:
//! - A snapshot is complete or absent: the archive is finished, fsynced and renamed into place
//!   before the manifest transaction commits; any failure before the commit leaves no archive and
//!   no snapshot behind.
//! - Only files whose stat data changed (or every file, for a full or `--rehash`) are read. A
//!   full reads each file once, hashing it as it is archived (large files whose size matches
//!   another large file's are hashed first so duplicates can become hard links).
//! - Each distinct content is stored once per chain: identical files in one full archive become
//!   tar hard links; content already in the chain is not stored again.
//! - Per-file trouble is a warning in the report, never an abort.
//!
//! The steps: `policy` picks full or incremental, the walk and [`crate::engine::plan`] say
//! what to read, `read` reads on the pool, the `sink` writes the archive on this thread,
//! `record` counts and the manifest commits.

mod origin;
mod outcome;
mod policy;
mod read;
mod record;
mod remote;
mod sink;
mod stdin;
mod stored;
mod xattrs;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::archive::Compression;
use crate::engine::batch::INLINE_MAX;
use crate::engine::paths;
use crate::engine::plan::{self, Plan, ReadReason};
use crate::engine::problem::Problem;
use crate::engine::repo::Repository;
use crate::engine::select::Selection;
use crate::engine::walk::{self, Walk, WalkOptions};
use crate::error::{Error, Result};
use crate::hash::HashAlgo;
use crate::manifest::{Kind, NewBlob, NewSnapshot, Recording, SnapshotStats};
use crate::pool::{CancelToken, Pool};
use crate::progress::Progress;
use crate::text::display_path;

pub use policy::FullDay;
use policy::Prior;
pub use remote::RemoteSource;
use stdin::Staged;
pub use stdin::StdinSource;

/// What `vault backup` was asked to do.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub source: PathBuf,
    pub repo: PathBuf,
    /// Forced kind; `None` lets the policy decide.
    pub kind: Option<Kind>,
    pub full_on: FullDay,
    pub max_chain: u64,
    pub compression: Compression,
    pub level: Option<i32>,
    /// Digest for a new chain; `None` keeps the chain's (BLAKE3 for a first chain).
    pub hash: Option<HashAlgo>,
    pub rehash: bool,
    pub exclude: Vec<String>,
    /// Do not enter folders on other file systems (mount points are recorded empty).
    pub one_file_system: bool,
    /// Leave out what folders holding a valid `CACHEDIR.TAG` contain.
    pub exclude_caches: bool,
    /// Leave out what folders holding a file of one of these names contain.
    pub exclude_if_present: Vec<String>,
    /// Pattern files in gitignore syntax (`!` re-includes), relative to the source.
    pub exclude_file: Vec<PathBuf>,
    /// Back up standard input as one file instead of a folder (`--stdin`).
    pub stdin: Option<StdinSource>,
    pub dry_run: bool,
    /// Re-examine only these folders (relative; empty = the source itself) and trust the
    /// previous tree elsewhere, for an incremental (`vault watch`). `None`: walk everything.
    pub hint: Option<Vec<Vec<u8>>>,
    /// Record nothing when nothing changed (`vault watch`): the report has no snapshot.
    pub skip_unchanged: bool,
    /// How long to wait for another writer to release the repository.
    pub lock_wait: std::time::Duration,
    /// Back up a folder on another host instead of `source` (`ssh://host/path`).
    pub remote: Option<RemoteSource>,
    /// Record the snapshot at this time (ns) instead of now (`--time`, for imports); it may
    /// not be older than the source's newest snapshot.
    pub time_ns: Option<i64>,
    /// After a snapshot is recorded, forget this source's snapshots by these rules
    /// (`forget_after = true` of a job).
    pub forget_after: Option<crate::engine::retention::KeepRules>,
}

impl BackupOptions {
    pub fn new(source: impl Into<PathBuf>, repo: impl Into<PathBuf>) -> BackupOptions {
        BackupOptions {
            source: source.into(),
            repo: repo.into(),
            kind: None,
            full_on: FullDay::Day(0),
            max_chain: 30,
            compression: Compression::Gzip,
            level: None,
            hash: None,
            rehash: false,
            exclude: Vec::new(),
            one_file_system: false,
            exclude_caches: false,
            exclude_if_present: Vec::new(),
            exclude_file: Vec::new(),
            stdin: None,
            dry_run: false,
            hint: None,
            skip_unchanged: false,
            lock_wait: std::time::Duration::ZERO,
            remote: None,
            time_ns: None,
            forget_after: None,
        }
    }
}

/// Counters of one backup, as printed in `--json`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BackupStats {
    /// Paths in the snapshot (files, folders and symlinks).
    pub files: u64,
    pub new: u64,
    pub changed: u64,
    pub deleted: u64,
    pub unchanged: u64,
    /// File content read from the source.
    pub bytes_read: u64,
    /// The archive's size on disk.
    pub bytes_stored: u64,
    pub duration_s: f64,
    /// A remote source only: what came over the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteStats>,
}

/// What a remote backup received from the host.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RemoteStats {
    /// Bytes received for the listing of the tree.
    pub listing_bytes: u64,
    /// Files fetched (the ones the plan read).
    pub fetched_files: u64,
    /// Their content bytes.
    pub fetched_bytes: u64,
    /// Bytes received for the fetch (content, tar headers and padding).
    pub received_bytes: u64,
}

/// A file the dry run would read.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlannedRead {
    pub path: String,
    pub size: u64,
    pub reason: ReadReason,
}

/// The outcome of `vault backup`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupReport {
    /// The new snapshot's id (`null` for a dry run).
    pub snapshot: Option<String>,
    pub kind: &'static str,
    /// Why this kind was chosen.
    pub reason: String,
    pub source: String,
    /// `archives/NAME`, or `null` when nothing new had to be stored.
    pub archive: Option<String>,
    pub stats: BackupStats,
    pub warnings: Vec<Problem>,
    pub dry_run: bool,
    /// The repository did not exist and was created.
    pub created_repository: bool,
    /// Dry run only: the files that would be read and stored if new.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_read: Option<Vec<PlannedRead>>,
    /// Dry run only: the paths that would be recorded as deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_delete: Option<Vec<String>>,
}

/// Builds the exclude matcher; a bad pattern is a usage error.
pub fn build_excludes(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // Paths are matched relative to the source, so a leading `/` anchors the pattern
        // there (as rsync and restic read it) instead of matching nothing.
        let pat = p.trim_end_matches('/');
        let pat = pat.strip_prefix('/').unwrap_or(pat);
        if pat.is_empty() {
            return Err(Error::Usage(format!(
                "bad --exclude '{p}': it would leave out the whole source"
            )));
        }
        let g = Glob::new(pat).map_err(|e| Error::Usage(format!("bad --exclude '{p}': {e}")))?;
        b.add(g);
    }
    b.build()
        .map_err(|e| Error::Usage(format!("bad --exclude patterns: {e}")))
}

/// A fresh random snapshot id: 16 hex digits.
pub fn new_snapshot_id() -> String {
    crate::hash::random_hex(8)
}

/// The base name used for archives and members (`/` backs up as `root`).
fn source_name(src: &Path) -> Vec<u8> {
    match src.file_name() {
        Some(n) => n.as_bytes().to_vec(),
        None => b"root".to_vec(),
    }
}

/// Safe for a file name: the base name with anything odd replaced.
fn file_name_part(name: &[u8]) -> String {
    String::from_utf8_lossy(name)
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.+@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The source folder, absolute and resolved.
fn source_folder(source: &Path) -> Result<PathBuf> {
    let src = fs::canonicalize(source).map_err(|e| Error::Source {
        path: source.to_path_buf(),
        source: e,
    })?;
    if !src.is_dir() {
        return Err(Error::SourceNotDir { path: src });
    }
    Ok(src)
}

/// Options a remote source cannot take: the selections that read files on the source side,
/// `--stdin`, and a watch hint.
fn remote_checks(opts: &BackupOptions) -> Result<()> {
    if opts.remote.is_none() {
        return Ok(());
    }
    let bad = [
        (opts.stdin.is_some(), "--stdin"),
        (opts.exclude_caches, "--exclude-caches"),
        (!opts.exclude_if_present.is_empty(), "--exclude-if-present"),
        (!opts.exclude_file.is_empty(), "--exclude-file"),
        (opts.hint.is_some(), "vault watch"),
    ];
    match bad.iter().find(|(on, _)| *on) {
        Some((_, what)) => Err(Error::Usage(format!(
            "{what} does not work with a remote (ssh://) source; use --exclude"
        ))),
        None => Ok(()),
    }
}

/// The repository (created if need be); a dry run never creates or locks it.
fn open_repo(opts: &BackupOptions) -> Result<(Option<Repository>, bool)> {
    if !opts.dry_run {
        let (r, created) = Repository::open_or_create(&opts.repo, opts.lock_wait)?;
        return Ok((Some(r), created));
    }
    match Repository::open(&opts.repo) {
        Ok(r) => Ok((Some(r), false)),
        Err(_) if !Repository::db_path(&opts.repo).exists() => Ok((None, false)),
        Err(e) => Err(e),
    }
}

/// Runs one backup.
pub fn backup(
    opts: &BackupOptions,
    pool: &Pool,
    cancel: &CancelToken,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let started = Instant::now();
    let excludes = checks(opts)?;
    let src = match (&opts.stdin, &opts.remote) {
        (None, None) => Some(source_folder(&opts.source)?),
        _ => None,
    };
    let (repo, created) = open_repo(opts)?;
    // --stdin: the data is staged in the repository and backed up as source `stdin:NAME`.
    let staged = match (&opts.stdin, &repo) {
        (Some(s), Some(r)) => Some(Staged::take(r.root(), s, &mut std::io::stdin().lock())?),
        _ => None,
    };
    let id = match (&opts.stdin, &staged, src) {
        (Some(s), Some(st), _) => (st.dir.clone(), s.key(), s.source_name.as_bytes().to_vec()),
        (_, _, Some(src)) => {
            let b = src.as_os_str().as_bytes().to_vec();
            let n = source_name(&src);
            (src, b, n)
        }
        _ => match &opts.remote {
            Some(r) => (PathBuf::from(&r.path), r.key(), r.name()),
            None => unreachable!("a stdin backup always has a repository"),
        },
    };
    let env = (pool, cancel, progress);
    let prepared = prepare(opts, env, repo.as_ref(), id, (excludes, started))?;
    let mut report = match repo {
        Some(repo) if !opts.dry_run => {
            let r = prepared.store(&repo);
            // Closing the manifest checkpoints its write-ahead log: part of the run's time.
            drop(repo);
            r?
        }
        _ => prepared.dry_run(),
    };
    report.created_repository = created && !opts.dry_run;
    report.stats.duration_s = started.elapsed().as_secs_f64();
    drop(staged);
    Ok(report)
}

/// The checks of a backup's options that need no file; gives the exclude matcher.
fn checks(opts: &BackupOptions) -> Result<GlobSet> {
    if let Some(l) = opts.level {
        opts.compression.check_level(l).map_err(Error::Usage)?;
    }
    let excludes = build_excludes(&opts.exclude)?;
    if opts.stdin.is_some() && opts.dry_run {
        return Err(Error::Usage("--stdin cannot be a dry run".into()));
    }
    remote_checks(opts)?;
    Ok(excludes)
}

/// A backup walked (or listed) and planned, with a remote source's files fetched: what is
/// left is to archive and record it ([`Prepared::store`]), or to report the dry run.
pub struct Prepared<'a> {
    run: Run<'a>,
    scan: Walk,
    plan: Plan,
    report: BackupReport,
    staging: Option<remote::Staging>,
}

impl std::fmt::Debug for Prepared<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("source", &self.report.source)
            .field("kind", &self.report.kind)
            .finish_non_exhaustive()
    }
}

/// The pool, the cancellation token and the progress sink a backup runs with.
pub type Env<'a> = (&'a Pool, &'a CancelToken, &'a dyn Progress);

/// Prepares the backup of a remote source (`opts.remote`) into `repo`, which it only reads:
/// several hosts can be prepared at once, each with its own connection to the manifest, and
/// stored one after the other by the holder of the repository's lock.
pub fn prepare_remote<'a>(
    opts: &BackupOptions,
    env: Env<'a>,
    repo: &Repository,
) -> Result<Prepared<'a>> {
    let started = Instant::now();
    let excludes = checks(opts)?;
    let r = opts
        .remote
        .as_ref()
        .ok_or_else(|| Error::Usage("no remote source".into()))?;
    let id = (PathBuf::from(&r.path), r.key(), r.name());
    prepare(opts, env, Some(repo), id, (excludes, started))
}

/// Decides the kind, walks and plans, and fetches a remote source's files.
fn prepare<'a>(
    opts: &BackupOptions,
    (pool, cancel, progress): Env<'a>,
    repo: Option<&Repository>,
    (src, src_bytes, name): (PathBuf, Vec<u8>, Vec<u8>),
    (excludes, started): (GlobSet, Instant),
) -> Result<Prepared<'a>> {
    let prior = Prior::load(repo, &src_bytes)?;
    let now_ns = opts.time_ns.unwrap_or_else(crate::time::now_ns);
    if let (Some(t), Some(last)) = (opts.time_ns, &prior.last) {
        if t < last.time_ns {
            return Err(Error::Usage(format!(
                "--time {} is older than the newest snapshot of this source ({}, {})",
                crate::time::rfc3339(t),
                last.id,
                crate::time::rfc3339(last.time_ns)
            )));
        }
    }
    let (kind, reason) = policy::decide(
        opts,
        prior.last.as_ref(),
        &prior.history,
        prior.chain_len,
        now_ns,
    )?;
    if let (Kind::Incremental, Some(r), Some(l)) = (kind, repo, &prior.last) {
        policy::check_chain_archives(r, &prior.history, l.chain_seq)?;
    }
    let run = Run {
        opts: opts.clone(),
        pool,
        cancel,
        progress,
        name,
        src,
        src_bytes,
        kind,
        now_ns,
        started,
        prior,
        listing_bytes: std::cell::Cell::new(0),
        by_sftp: std::cell::Cell::new(false),
    };
    let (scan, plan) = run.walk_and_plan(excludes, repo)?;
    // A remote source's files are fetched before anything is written: a transfer that breaks
    // leaves nothing.
    let staging = match (&opts.remote, repo) {
        (Some(r), Some(repo)) if !opts.dry_run => Some(run.fetch(r, repo, &plan)?),
        _ => None,
    };
    let report = BackupReport {
        snapshot: None,
        kind: kind.name(),
        reason,
        source: display_path(&run.src_bytes),
        archive: None,
        stats: BackupStats::default(),
        warnings: scan.warnings.clone(),
        dry_run: opts.dry_run,
        created_repository: false,
        would_read: None,
        would_delete: None,
    };
    Ok(Prepared {
        run,
        scan,
        plan,
        report,
        staging,
    })
}

impl Prepared<'_> {
    /// Archives and records the snapshot in `repo` (whose lock the caller holds).
    pub fn store(self, repo: &Repository) -> Result<BackupReport> {
        let Prepared {
            run,
            scan,
            plan,
            report,
            staging,
        } = self;
        run.store(repo, &scan, plan, report, staging.as_ref())
    }

    /// What a dry run reports.
    pub fn dry_run(self) -> BackupReport {
        self.run.dry_run(self.plan, self.report)
    }
}

/// One backup past its checks.
struct Run<'a> {
    opts: BackupOptions,
    pool: &'a Pool,
    cancel: &'a CancelToken,
    progress: &'a dyn Progress,
    src: PathBuf,
    src_bytes: Vec<u8>,
    /// The archive's top folder name.
    name: Vec<u8>,
    kind: Kind,
    now_ns: i64,
    started: Instant,
    prior: Prior,
    /// A remote source: the bytes its listing took.
    listing_bytes: std::cell::Cell<u64>,
    /// A remote source listed (and so fetched) by SFTP.
    by_sftp: std::cell::Cell<bool>,
}

impl Run<'_> {
    /// Walks the source (only the touched folders under `vault watch`) and plans the work.
    fn walk_and_plan(&self, exclude: GlobSet, repo: Option<&Repository>) -> Result<(Walk, Plan)> {
        let opts = &self.opts;
        if let Some(r) = &opts.remote {
            return self.list_and_plan(r, &exclude, repo);
        }
        let skip_dir = fs::metadata(&opts.repo).ok().map(|m| (m.dev(), m.ino()));
        let select = Selection {
            device: opts
                .one_file_system
                .then(|| fs::metadata(&self.src).map(|m| m.dev()).ok())
                .flatten(),
            exclude_caches: opts.exclude_caches,
            tags: opts
                .exclude_if_present
                .iter()
                .map(|t| t.as_bytes().to_vec())
                .collect(),
            ignore: Selection::load_patterns(&self.src, &opts.exclude_file)?,
        };
        let scan_opts = WalkOptions {
            exclude,
            skip_dir,
            select,
        };
        let (kind, prev) = (self.kind, self.prior.source_id);
        let (mut scan, mut plan) = match (&opts.hint, kind, repo, prev) {
            // With a hint (vault watch), only the touched folders are compared; the rest of
            // the tree is the previous snapshot's, unchanged.
            (Some(dirty), Kind::Incremental, Some(r), Some(id)) => {
                let m = &r.manifest;
                let p = walk::walk_partial(
                    &self.src,
                    dirty,
                    &scan_opts,
                    self.pool,
                    self.cancel,
                    &mut |d| Ok(m.live_under(id, d)?),
                    &mut |path| Ok(m.live_entry(id, path)?),
                )?;
                let untouched = match &self.prior.last {
                    Some(l) => l.stats.files.saturating_sub(p.prev.len() as u64),
                    None => 0,
                };
                let mut now = p.now;
                let entries = std::mem::take(&mut now.entries);
                let mut plan = plan::plan(p.prev, entries, &now.failed, kind, opts.rehash);
                // Paths outside the touched folders are as they were.
                plan.unchanged += untouched;
                (now, plan)
            }
            (_, _, Some(r), Some(id)) => r
                .manifest
                .with_live_entries(id, |rows| self.walk_planned(&scan_opts, rows))??,
            _ => self.walk_planned(&scan_opts, std::iter::empty())?,
        };
        let problems = xattrs::read_unread(&self.src, &mut plan, self.pool, self.cancel)?;
        if !problems.is_empty() {
            scan.warnings.extend(problems);
            scan.warnings.sort_by(|a, b| a.path.cmp(&b.path));
        }
        Ok((scan, plan))
    }

    /// Lists a remote source on its host and plans against the previous tree. The listing has
    /// no extended attributes: none are read or recorded.
    fn list_and_plan(
        &self,
        r: &RemoteSource,
        exclude: &GlobSet,
        repo: Option<&Repository>,
    ) -> Result<(Walk, Plan)> {
        self.progress.phase("list", None);
        let (mut scan, received, by_sftp) = r.list(exclude, self.opts.one_file_system)?;
        self.listing_bytes.set(received);
        self.by_sftp.set(by_sftp);
        let entries = std::mem::take(&mut scan.entries);
        let (kind, rehash, failed) = (self.kind, self.opts.rehash, &scan.failed);
        let mut plan = match (repo, self.prior.source_id) {
            (Some(repo), Some(id)) => repo
                .manifest
                .with_live_entries(id, |rows| plan::plan(rows, entries, failed, kind, rehash))?,
            _ => plan::plan(std::iter::empty(), entries, failed, kind, rehash),
        };
        for it in &mut plan.items {
            it.xattrs_unread = false;
            it.entry.xattrs = None;
        }
        Ok((scan, plan))
    }

    /// Walks the whole source and plans against `prev` (the previous tree, in path order) as
    /// the walk goes.
    fn walk_planned(
        &self,
        scan_opts: &WalkOptions,
        prev: impl Iterator<Item = crate::tree::Entry>,
    ) -> Result<(Walk, Plan)> {
        let mut planner = plan::Planner::new(prev, self.kind, self.opts.rehash);
        let scan = walk::walk(
            &self.src,
            scan_opts,
            self.pool,
            self.cancel,
            self.progress,
            &mut |e, failed| planner.push(e, failed),
        )?;
        let plan = planner.finish(&scan.failed);
        Ok((scan, plan))
    }

    /// A dry run: what would be read and deleted, counted as a real run would.
    fn dry_run(&self, plan: Plan, mut report: BackupReport) -> BackupReport {
        report.created_repository = false;
        let read = |i: &plan::Item| PlannedRead {
            path: display_path(&i.entry.path),
            size: i.entry.size,
            reason: i.read,
        };
        report.would_read = Some(plan.reads().map(read).collect());
        report.would_delete = Some(plan.removed.iter().map(|p| display_path(p)).collect());
        let mut stats = record::count(&plan, self.kind, None);
        stats.duration_s = self.started.elapsed().as_secs_f64();
        report.stats = stats;
        report
    }

    /// The archive's file name: source, kind, UTC time and snapshot id.
    fn archive_name(&self, id: &str) -> String {
        format!(
            "{}_{}_{}_{}{}",
            file_name_part(&self.name),
            self.kind.short(),
            crate::time::compact_utc(self.now_ns),
            id,
            self.opts.compression.extension()
        )
    }

    /// Reads and archives what the plan says, then commits the snapshot.
    fn store(
        &self,
        repo: &Repository,
        scan: &Walk,
        plan: Plan,
        mut report: BackupReport,
        staging: Option<&remote::Staging>,
    ) -> Result<BackupReport> {
        let nothing = plan.items.is_empty() && plan.removed.is_empty() && plan.dropped.is_empty();
        if self.opts.skip_unchanged && self.kind == Kind::Incremental && nothing {
            report.reason = "nothing changed; no snapshot recorded".into();
            let mut stats = record::count(&plan, self.kind, None);
            stats.duration_s = self.started.elapsed().as_secs_f64();
            report.stats = stats;
            return Ok(report);
        }
        let id = new_snapshot_id();
        let archive_name = self.archive_name(&id);
        let origin = match staging {
            Some(s) => origin::Origin::Staged(s),
            None => origin::Origin::Local(&self.src),
        };
        // The snapshot's transaction is open while the archive is written (its rows go in as
        // the paths are archived); it commits after the archive is complete, or rolls back.
        let stats = BackupStats::default();
        let provisional = self.snapshot_row(&id, scan, &stats, 0, None, &archive_name);
        let mut rec = repo
            .manifest
            .begin_snapshot(&self.src_bytes, &self.name, &provisional)?;
        let mut sink = self.archive((repo, origin), scan, &plan, &archive_name, &mut rec)?;
        let finished = match sink.writer.take() {
            Some(w) => Some(w.finish()?),
            None => None,
        };
        let outcomes = std::mem::replace(&mut sink.outcomes, outcome::Outcomes::new(0));
        let stored =
            std::mem::take(&mut sink.stored).into_sorted(&|i| sink::stored_digest(&outcomes, i));
        let (bytes_read, mut problems) = (sink.bytes_read, std::mem::take(&mut sink.problems));
        drop(sink);
        let mut stats = record::count(&plan, self.kind, Some(&outcomes));
        stats.bytes_read = bytes_read;
        stats.bytes_stored = finished.as_ref().map_or(0, |f| f.size);
        stats.duration_s = self.started.elapsed().as_secs_f64();
        // A remote source's content is read from the host once, by the fetch.
        if let Some(s) = staging {
            stats.bytes_read = s.bytes;
        }
        stats.remote = staging.map(|s| RemoteStats {
            listing_bytes: self.listing_bytes.get(),
            fetched_files: s.files,
            fetched_bytes: s.bytes,
            received_bytes: s.received,
        });
        report.warnings.append(&mut problems);
        let snap = self.snapshot_row(
            &id,
            scan,
            &stats,
            report.warnings.len(),
            finished.as_ref(),
            &archive_name,
        );
        if let Err(e) = self.commit(rec, &snap, &plan, &outcomes, &stored) {
            // Not recorded: the archive must not outlive the failed commit.
            if let Some(f) = &finished {
                let _ = fs::remove_file(&f.path);
            }
            return Err(e);
        }
        repo.ensure_reserve();
        drop((plan, outcomes, stored));
        self.progress.finish();
        report.snapshot = Some(id);
        report.archive = finished.map(|_| Repository::archive_name(&archive_name));
        stats.duration_s = self.started.elapsed().as_secs_f64();
        report.stats = stats;
        Ok(report)
    }

    /// Commits the snapshot: its final row, the tree changes not made while archiving (made
    /// one at a time from the plan) and where its archive stores each content.
    fn commit(
        &self,
        rec: Recording<'_>,
        snap: &NewSnapshot,
        plan: &Plan,
        outcomes: &outcome::Outcomes,
        stored: &[u32],
    ) -> Result<()> {
        let mut changes = record::rest(plan, self.kind, outcomes);
        let mut blobs = stored.iter().map(|&i| i as usize).map(|i| NewBlob {
            digest: sink::stored_digest(outcomes, i),
            member: paths::member(&self.name, &plan.items[i].entry.path),
            size: sink::stored_size(plan, outcomes, i),
        });
        rec.commit(snap, &mut changes, &mut blobs)?;
        Ok(())
    }

    /// Fetches the files the plan reads from a remote source's host into a staging folder.
    fn fetch(&self, r: &RemoteSource, repo: &Repository, plan: &Plan) -> Result<remote::Staging> {
        let mut staging = remote::Staging::create(repo.root())?;
        let label = String::from_utf8_lossy(&r.key()).into_owned();
        let index = |i: usize| u32::try_from(i).expect("a plan holds fewer than 2^32 items");
        let want = remote::Wanted {
            label: &label,
            root: &r.path,
            plan,
            items: (0..plan.items.len())
                .filter(|&i| read::reads(&plan.items[i]))
                .map(index)
                .collect(),
        };
        r.fetch(
            (&want, &mut staging),
            self.by_sftp.get(),
            self.cancel,
            self.progress,
        )?;
        Ok(staging)
    }

    /// Runs the reads on the pool and the archive on this thread.
    fn archive<'s>(
        &'s self,
        (repo, origin): (&'s Repository, origin::Origin<'s>),
        scan: &'s Walk,
        plan: &'s Plan,
        archive_name: &str,
        rec: &mut Recording<'_>,
    ) -> Result<sink::Sink<'s>> {
        let opts = &self.opts;
        let level = opts
            .level
            .unwrap_or_else(|| opts.compression.default_level());
        let algo = self.prior.algo(opts, self.kind);
        let mut sink = sink::Sink {
            plan,
            origin,
            top: &self.name,
            algo,
            spec: sink::ArchiveSpec {
                path: repo.archive_path(archive_name),
                compression: opts.compression,
                level,
                pool: self.pool,
            },
            progress: self.progress,
            chain_digests: self.prior.chain_digests(
                repo,
                self.kind,
                plan.reads().count() as u64,
            )?,
            writer: None,
            // Room for half the reads: a table sized for all of them has twice the slots it
            // needs once an eighth of the contents are duplicates; it doubles if need be.
            stored: stored::Stored::with_capacity(plan.reads().count() / 2),
            outcomes: outcome::Outcomes::new(plan.items.len()),
            bytes_read: 0,
            problems: Vec::new(),
        };
        if self.kind == Kind::Full {
            let w = crate::archive::ArchiveWriter::create(
                &sink.spec.path,
                opts.compression,
                level,
                self.pool,
            )?;
            sink.writer = Some(w);
            sink.writer
                .as_mut()
                .expect("just set")
                .add_dir(&self.name, &sink::meta_of(&scan.root))?;
        }
        self.read_into(plan, algo, &mut sink, rec)?;
        Ok(sink)
    }

    /// The pool reads batches of files; the sink takes them in archive order, and each item's
    /// manifest row is written as soon as the sink has taken it.
    fn read_into(
        &self,
        plan: &Plan,
        algo: HashAlgo,
        sink: &mut sink::Sink<'_>,
        rec: &mut Recording<'_>,
    ) -> Result<()> {
        // Large files of equal size may be duplicates: hash those before archiving them.
        let mut large_sizes: std::collections::HashMap<u64, u32> = Default::default();
        for it in plan.reads().filter(|it| it.entry.size > INLINE_MAX) {
            *large_sizes.entry(it.entry.size).or_default() += 1;
        }
        let incremental = self.kind == Kind::Incremental;
        let prehash = |size: u64| incremental || large_sizes.get(&size) > Some(&1);
        let total_bytes: u64 = plan.reads().map(|i| i.entry.size).sum();
        self.progress.phase("read", Some(total_bytes));
        let origin = sink.origin;
        self.pool.map_ordered(
            self.cancel,
            read::batches(plan, self.kind),
            read::Worker::new,
            |w, batch: Vec<usize>| {
                w.start_batch();
                let one = |idx: usize| {
                    let it = &plan.items[idx];
                    (
                        idx,
                        read::read_one(&origin, (idx, it), algo, prehash(it.entry.size), w),
                    )
                };
                batch.into_iter().map(one).collect::<Vec<_>>()
            },
            |done: Vec<(usize, read::Content)>| -> Result<()> {
                for (idx, content) in done {
                    sink.take(idx, content)?;
                    let it = &plan.items[idx];
                    if let Some(c) = record::row(it, idx, &sink.outcomes, self.kind) {
                        rec.change(&c)?;
                    }
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    /// The manifest row of the new snapshot.
    fn snapshot_row(
        &self,
        id: &str,
        scan: &Walk,
        stats: &BackupStats,
        warnings: usize,
        finished: Option<&crate::archive::FinishedArchive>,
        archive_name: &str,
    ) -> NewSnapshot {
        let last = self.prior.last.as_ref();
        NewSnapshot {
            id: id.to_string(),
            source_id: self.prior.source_id.unwrap_or(0),
            kind: self.kind,
            parent_seq: last.map(|l| l.seq),
            chain_seq: match self.kind {
                Kind::Full => None,
                Kind::Incremental => last.map(|l| l.chain_seq),
            },
            time_ns: self.now_ns,
            hash: self.prior.algo(&self.opts, self.kind),
            compression: self.opts.compression.name().to_string(),
            archive: finished.map(|_| archive_name.to_string()),
            archive_size: finished.map(|f| f.size),
            archive_blake3: finished.map(|f| f.blake3.to_vec()),
            stats: SnapshotStats {
                files: stats.files,
                new: stats.new,
                changed: stats.changed,
                deleted: stats.deleted,
                unchanged: stats.unchanged,
                bytes_read: stats.bytes_read,
                warnings: warnings as u64,
                duration_ms: (stats.duration_s * 1000.0) as u64,
            },
            root: Some(crate::manifest::RootMeta {
                mode: scan.root.mode,
                uid: scan.root.uid,
                gid: scan.root.gid,
                mtime_ns: scan.root.mtime_ns,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_day_parsing() {
        assert_eq!("mon".parse::<FullDay>().unwrap(), FullDay::Day(0));
        assert_eq!("Sunday".parse::<FullDay>().unwrap(), FullDay::Day(6));
        assert_eq!("never".parse::<FullDay>().unwrap(), FullDay::Never);
        assert!("funday".parse::<FullDay>().is_err());
        assert!("mo".parse::<FullDay>().is_err());
    }
}
