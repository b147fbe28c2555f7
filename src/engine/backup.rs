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

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::archive::{ArchiveWriter, Compression, MemberMeta};
use crate::engine::plan::{self, Plan, Prev, ReadReason};
use crate::engine::problem::Problem;
use crate::engine::repo::Repository;
use crate::engine::scan::{self, entry_from_meta, ScanOptions};
use crate::error::{Error, Result};
use crate::hash::{hash_reader, Digest, HashAlgo};
use crate::manifest::{EntryChange, Kind, NewBlob, NewSnapshot, SnapshotRow, SnapshotStats};
use crate::pool::{CancelToken, Pool};
use crate::progress::Progress;
use crate::tree::{display_path, Entry, EntryKind};

/// Files up to this size are read whole by a worker; larger ones are streamed.
const INLINE_MAX: u64 = 1 << 20;

/// The weekday on which the policy starts a new full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullDay {
    /// 0 = Monday … 6 = Sunday.
    Day(u32),
    Never,
}

impl std::str::FromStr for FullDay {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let l = s.to_ascii_lowercase();
        if l == "never" {
            return Ok(FullDay::Never);
        }
        DAYS.iter()
            .position(|d| l.len() >= 3 && d.starts_with(&l[..3]) && is_day_name(&l))
            .map(|i| FullDay::Day(i as u32))
            .ok_or_else(|| {
                format!("bad day '{s}': expected mon, tue, wed, thu, fri, sat, sun or never")
            })
    }
}

fn is_day_name(l: &str) -> bool {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    FULL.iter().any(|f| f.starts_with(l))
}

impl FullDay {
    pub fn name(self) -> &'static str {
        match self {
            FullDay::Day(d) => ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][d as usize % 7],
            FullDay::Never => "never",
        }
    }
}

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
    pub dry_run: bool,
    /// Re-examine only these folders (relative; empty = the source itself) and trust the
    /// previous tree elsewhere, for an incremental (`vault watch`). `None`: walk everything.
    pub hint: Option<Vec<Vec<u8>>>,
    /// Record nothing when nothing changed (`vault watch`): the report has no snapshot.
    pub skip_unchanged: bool,
    /// How long to wait for another writer to release the repository.
    pub lock_wait: std::time::Duration,
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
            dry_run: false,
            hint: None,
            skip_unchanged: false,
            lock_wait: std::time::Duration::ZERO,
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

/// Chooses full or incremental.
fn decide(
    opts: &BackupOptions,
    last: Option<&SnapshotRow>,
    history: &[SnapshotRow],
    chain_len: u64,
    now_ns: i64,
) -> Result<(Kind, String)> {
    let Some(last) = last else {
        if opts.kind == Some(Kind::Incremental) {
            return Err(Error::Refused(format!(
                "no full snapshot of {} yet: an incremental needs one (drop --incremental)",
                opts.source.display()
            )));
        }
        return Ok((Kind::Full, "first backup of this source".into()));
    };
    if let Some(h) = opts.hash {
        if h != last.hash {
            if opts.kind == Some(Kind::Incremental) {
                return Err(Error::Refused(format!(
                    "the current chain uses {}; --hash {} needs a new full (use --full)",
                    last.hash, h
                )));
            }
            return Ok((
                Kind::Full,
                format!("hash changed from {} to {}", last.hash, h),
            ));
        }
    }
    match opts.kind {
        Some(Kind::Full) => return Ok((Kind::Full, "forced with --full".into())),
        Some(Kind::Incremental) => {
            return Ok((Kind::Incremental, "forced with --incremental".into()))
        }
        None => {}
    }
    if let FullDay::Day(d) = opts.full_on {
        let today = crate::time::local(now_ns);
        if today.weekday == d {
            let same_day = |t: i64| {
                let c = crate::time::local(t);
                (c.year, c.month, c.day) == (today.year, today.month, today.day)
            };
            let full_today = history
                .iter()
                .any(|s| s.kind == Kind::Full && same_day(s.time_ns));
            if !full_today {
                return Ok((
                    Kind::Full,
                    format!(
                        "today is the full day ({}) and no full ran today",
                        opts.full_on.name()
                    ),
                ));
            }
        }
    }
    let incrementals = chain_len.saturating_sub(1);
    if incrementals >= opts.max_chain {
        return Ok((
            Kind::Full,
            format!(
                "the chain holds {incrementals} incrementals (--max-chain {})",
                opts.max_chain
            ),
        ));
    }
    Ok((Kind::Incremental, "a full exists in this chain".into()))
}

/// What a worker found when reading one file.
enum Content {
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

/// The final state of a read file.
enum Outcome {
    /// Read as walked: only the digest is new (the common case, kept small).
    Digest(Digest),
    /// The file changed between the walk and the read: its fresh stat data and digest.
    Fresh(Box<Entry>),
    Failed,
}

fn open_nofollow(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
}

/// `fstat` of an open file as a fresh entry for `item`; refuses anything but a regular file.
fn fresh_entry(f: &File, item: &Entry) -> io::Result<Entry> {
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::other("is no longer a regular file"));
    }
    Ok(entry_from_meta(item.path.clone(), EntryKind::File, &m))
}

fn stat_moved(f: &File, before: &Entry) -> bool {
    match f.metadata() {
        Ok(m) => {
            m.size() != before.size
                || m.mtime() * 1_000_000_000 + m.mtime_nsec() != before.mtime_ns
                || m.ctime() * 1_000_000_000 + m.ctime_nsec() != before.stat.ctime_ns
        }
        Err(_) => true,
    }
}

fn read_one(
    src: &Path,
    item: &plan::Item,
    algo: HashAlgo,
    prehash: bool,
    buf: &mut [u8],
) -> Content {
    if item.entry.kind != EntryKind::File || item.read == ReadReason::No {
        return Content::Skip;
    }
    let abs = src.join(item.entry.path());
    let mut run = || -> io::Result<Content> {
        let f = open_nofollow(&abs)?;
        let fresh = fresh_entry(&f, &item.entry)?;
        if fresh.size <= INLINE_MAX {
            let mut data = Vec::with_capacity(fresh.size as usize + 1);
            (&f).take(fresh.size + 1).read_to_end(&mut data)?;
            let changed = data.len() as u64 != fresh.size || stat_moved(&f, &fresh);
            let digest = algo.digest(&data);
            Ok(Content::Inline {
                fresh,
                data,
                digest,
                changed,
            })
        } else if prehash {
            let (digest, read) = hash_reader(algo, &f, buf)?;
            let changed = read != fresh.size || stat_moved(&f, &fresh);
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

fn meta_of(e: &Entry) -> MemberMeta {
    MemberMeta {
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime_ns: e.mtime_ns,
    }
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

/// Refuses an incremental onto a chain one of whose archives is gone: its snapshots could
/// not be restored, and neither could the new one.
fn check_chain_archives(repo: &Repository, history: &[SnapshotRow], chain: i64) -> Result<()> {
    for s in history.iter().filter(|s| s.chain_seq == chain) {
        if let Some(a) = &s.archive {
            if !repo.archives_dir().join(a).is_file() {
                return Err(Error::Refused(format!(
                    "chain is damaged: archives/{a} of snapshot {} is missing; run `vault check`; the next backup must be --full",
                    s.id
                )));
            }
        }
    }
    Ok(())
}

/// Runs one backup.
pub fn backup(
    opts: &BackupOptions,
    pool: &Pool,
    cancel: &CancelToken,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let started = Instant::now();
    let now_ns = crate::time::now_ns();
    if let Some(l) = opts.level {
        opts.compression.check_level(l).map_err(Error::Usage)?;
    }
    let excludes = build_excludes(&opts.exclude)?;
    let src = fs::canonicalize(&opts.source).map_err(|e| Error::Source {
        path: opts.source.clone(),
        source: e,
    })?;
    if !src.is_dir() {
        return Err(Error::SourceNotDir { path: src });
    }
    let src_bytes = src.as_os_str().as_bytes().to_vec();
    let name = source_name(&src);

    // The repository: a dry run never creates or locks it.
    let (repo, created) = if opts.dry_run {
        match Repository::open(&opts.repo) {
            Ok(r) => (Some(r), false),
            Err(_) if !Repository::db_path(&opts.repo).exists() => (None, false),
            Err(e) => return Err(e),
        }
    } else {
        let (r, c) = Repository::open_or_create(&opts.repo, opts.lock_wait)?;
        (Some(r), c)
    };

    let source_id = match &repo {
        Some(r) => r.manifest.source_id(&src_bytes)?,
        None => None,
    };
    let (last, history, chain_len, prev) = match (&repo, source_id) {
        (Some(r), Some(id)) => {
            let history = r.manifest.snapshots(Some(id))?;
            let last = history.last().cloned();
            let chain_len = match &last {
                Some(l) => r.manifest.chain_len(l.chain_seq)?,
                None => 0,
            };
            (last, history, chain_len, Some(id))
        }
        _ => (None, Vec::new(), 0, None),
    };
    let (kind, reason) = decide(opts, last.as_ref(), &history, chain_len, now_ns)?;
    if let (Kind::Incremental, Some(r), Some(l)) = (kind, &repo, &last) {
        check_chain_archives(r, &history, l.chain_seq)?;
    }
    let algo = match (kind, &last) {
        (Kind::Incremental, Some(l)) => l.hash,
        _ => opts
            .hash
            .or(last.as_ref().map(|l| l.hash))
            .unwrap_or(HashAlgo::Blake3),
    };

    let skip_dir = fs::metadata(&opts.repo).ok().map(|m| (m.dev(), m.ino()));
    let scan_opts = ScanOptions {
        exclude: excludes,
        skip_dir,
    };
    // With a hint (vault watch), only the touched folders are compared; the rest of the tree
    // is the previous snapshot's, unchanged.
    let (scan, partial_prev) = match (&opts.hint, kind, &repo, prev) {
        (Some(dirty), Kind::Incremental, Some(r), Some(id)) => {
            let m = &r.manifest;
            let p = scan::scan_partial(
                &src,
                dirty,
                &scan_opts,
                pool,
                cancel,
                &mut |d| Ok(m.live_under(id, d)?),
                &mut |path| Ok(m.live_entry(id, path)?),
            )?;
            (p.now, Some(p.prev))
        }
        _ => (scan::scan(&src, &scan_opts, pool, cancel, progress)?, None),
    };
    let untouched_base = match (&partial_prev, &last) {
        (Some(pp), Some(l)) => l.stats.files.saturating_sub(pp.len() as u64),
        _ => 0,
    };
    let mut warnings = scan.warnings.clone();
    let mut plan = match (&repo, prev, partial_prev) {
        (_, _, Some(pp)) => plan::plan(pp, scan.entries, &scan.failed, kind, opts.rehash),
        (Some(r), Some(id), None) => r.manifest.with_live_entries(id, |rows| {
            plan::plan(rows, scan.entries, &scan.failed, kind, opts.rehash)
        })?,
        _ => plan::plan(Vec::new(), scan.entries, &scan.failed, kind, opts.rehash),
    };
    // Paths outside the touched folders are as they were.
    plan.unchanged += untouched_base;

    if opts.dry_run {
        let mut stats = BackupStats::default();
        for it in &plan.items {
            stats.files += 1;
            match it.prev {
                Prev::None => stats.new += 1,
                Prev::Was { meta_same, .. } if it.read == ReadReason::No && meta_same => {
                    stats.unchanged += 1
                }
                Prev::Was { .. } => stats.changed += 1,
            }
        }
        stats.files += plan.unchanged + plan.carried;
        stats.unchanged += plan.unchanged + plan.carried;
        stats.deleted = plan.removed.len() as u64;
        stats.duration_s = started.elapsed().as_secs_f64();
        return Ok(BackupReport {
            snapshot: None,
            kind: kind.name(),
            reason,
            source: display_path(&src_bytes),
            archive: None,
            stats,
            warnings,
            dry_run: true,
            created_repository: false,
            would_read: Some(
                plan.reads()
                    .map(|i| PlannedRead {
                        path: display_path(&i.entry.path),
                        size: i.entry.size,
                        reason: i.read,
                    })
                    .collect(),
            ),
            would_delete: Some(plan.removed.iter().map(|p| display_path(p)).collect()),
        });
    }
    let repo = repo.expect("a real run has a repository");
    if opts.skip_unchanged
        && kind == Kind::Incremental
        && plan.items.is_empty()
        && plan.removed.is_empty()
        && plan.dropped.is_empty()
    {
        return Ok(BackupReport {
            snapshot: None,
            kind: kind.name(),
            reason: "nothing changed; no snapshot recorded".into(),
            source: display_path(&src_bytes),
            archive: None,
            stats: BackupStats {
                files: plan.unchanged + plan.carried,
                unchanged: plan.unchanged + plan.carried,
                duration_s: started.elapsed().as_secs_f64(),
                ..BackupStats::default()
            },
            warnings,
            dry_run: false,
            created_repository: created,
            would_read: None,
            would_delete: None,
        });
    }

    let chain_digests: HashSet<Digest> = match (kind, &last) {
        (Kind::Incremental, Some(l)) => repo.manifest.chain_digests(l.chain_seq)?,
        _ => HashSet::new(),
    };
    let id = new_snapshot_id();
    let level = opts
        .level
        .unwrap_or_else(|| opts.compression.default_level());
    let archive_name = format!(
        "{}_{}_{}_{}{}",
        file_name_part(&name),
        kind.short(),
        crate::time::compact_utc(now_ns),
        id,
        opts.compression.extension()
    );
    let archive_path = repo.archives_dir().join(&archive_name);

    // Large files of equal size may be duplicates: hash those before archiving them.
    let mut large_sizes: HashMap<u64, u32> = HashMap::new();
    for it in plan.reads() {
        if it.entry.size > INLINE_MAX {
            *large_sizes.entry(it.entry.size).or_default() += 1;
        }
    }
    let prehash = |size: u64| kind == Kind::Incremental || large_sizes.get(&size) > Some(&1);

    let mut writer: Option<ArchiveWriter> = None;
    if kind == Kind::Full {
        let mut w = ArchiveWriter::create(&archive_path, opts.compression, level, pool)?;
        w.add_dir(&name, &meta_of(&scan.root))?;
        writer = Some(w);
    }
    let mut stored_here: HashMap<Digest, Vec<u8>> = HashMap::new();
    let mut blobs: Vec<NewBlob> = Vec::new();
    let mut outcomes: Vec<Option<Outcome>> = Vec::new();
    outcomes.resize_with(plan.items.len(), || None);
    let mut bytes_read = 0u64;

    let total_bytes: u64 = plan.reads().map(|i| i.entry.size).sum();
    progress.phase("read", Some(total_bytes));
    let indices: Vec<usize> = if kind == Kind::Full {
        // Archive order: each folder's contents right after the folder (GNU tar needs that to
        // restore folder times), which is not quite path byte order.
        let mut v: Vec<usize> = (0..plan.items.len()).collect();
        v.sort_by(|&a, &b| {
            crate::tree::path_cmp(&plan.items[a].entry.path, &plan.items[b].entry.path)
        });
        v
    } else {
        (0..plan.items.len())
            .filter(|&i| plan.items[i].read != ReadReason::No)
            .collect()
    };
    let plan_ref: &Plan = &plan;
    let src_ref: &Path = &src;
    // Work goes to the pool in batches (up to 64 paths or 1 MiB of small files), so that
    // channel hand-offs do not dominate trees of small files.
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut cur_bytes = 0u64;
    for idx in indices {
        let it = &plan.items[idx];
        if it.read != ReadReason::No {
            cur_bytes += it.entry.size.min(INLINE_MAX);
        }
        cur.push(idx);
        if cur.len() >= 64 || cur_bytes >= INLINE_MAX {
            batches.push(std::mem::take(&mut cur));
            cur_bytes = 0;
        }
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    let mut handle = |(idx, content): (usize, Content)| -> Result<()> {
        let it = &plan.items[idx];
        let member = crate::engine::paths::member(&name, &it.entry.path);
        match (it.entry.kind, content) {
            (EntryKind::Dir, _) => {
                if let Some(w) = writer.as_mut() {
                    w.add_dir(&member, &meta_of(&it.entry))?;
                }
            }
            (EntryKind::Symlink, _) => {
                if let Some(w) = writer.as_mut() {
                    let t = it.entry.target.as_deref().unwrap_or_default();
                    w.add_symlink(&member, t, &meta_of(&it.entry))?;
                }
            }
            (EntryKind::File, Content::Skip) => {}
            (EntryKind::File, Content::Failed(err)) => {
                warnings.push(Problem::failed(it.entry.path.clone(), err));
                outcomes[idx] = Some(Outcome::Failed);
            }
            (EntryKind::File, content) => {
                let (mut fresh, known, changed, inline) = match content {
                    Content::Inline {
                        fresh,
                        data,
                        digest,
                        changed,
                    } => {
                        bytes_read += data.len() as u64;
                        progress.advance(data.len() as u64);
                        (fresh, Some(digest), changed, Some(data))
                    }
                    Content::Hashed {
                        fresh,
                        digest,
                        read,
                        changed,
                    } => {
                        bytes_read += read;
                        (fresh, Some(digest), changed, None)
                    }
                    Content::Deferred { fresh } => (fresh, None, false, None),
                    Content::Skip | Content::Failed(_) => unreachable!("handled above"),
                };
                let mut changed = changed;
                let mut digest = known;
                let already = |d: &Digest| chain_digests.contains(d) || stored_here.contains_key(d);
                if let Some(d) = digest.filter(|d| already(d)) {
                    // Stored before: a hard link inside a full, nothing in an incremental.
                    if let (Some(w), Some(first)) = (writer.as_mut(), stored_here.get(&d)) {
                        w.add_hardlink(&member, first, &meta_of(&fresh))?;
                    }
                } else {
                    if writer.is_none() {
                        writer = Some(ArchiveWriter::create(
                            &archive_path,
                            opts.compression,
                            level,
                            pool,
                        )?);
                    }
                    let w = writer.as_mut().expect("just created");
                    let stored_digest = match inline {
                        Some(data) => {
                            fresh.size = data.len() as u64;
                            w.add_file_bytes(&member, &meta_of(&fresh), &data)?;
                            digest.expect("inline content is hashed")
                        }
                        None => {
                            let abs = src.join(it.entry.path());
                            let mut f = match open_nofollow(&abs)
                                .and_then(|f| fresh_entry(&f, &it.entry).map(|e| (f, e)))
                            {
                                Ok((f, e)) => {
                                    if digest.is_none() {
                                        fresh = e;
                                    } else if !e.same_stat(&fresh) {
                                        changed = true;
                                    }
                                    f
                                }
                                Err(e) => {
                                    warnings.push(Problem::failed(
                                        it.entry.path.clone(),
                                        format!("cannot read: {e}"),
                                    ));
                                    outcomes[idx] = Some(Outcome::Failed);
                                    return Ok(());
                                }
                            };
                            let size = fresh.size;
                            match w.add_file_stream(&member, &meta_of(&fresh), size, &mut f, algo) {
                                Ok(o) => {
                                    bytes_read += o.bytes_read;
                                    progress.advance(o.bytes_read);
                                    if o.shrank || o.grew || stat_moved(&f, &fresh) {
                                        changed = true;
                                    }
                                    if digest.is_some_and(|d| d != o.digest) {
                                        changed = true;
                                    }
                                    o.digest
                                }
                                Err(Ok(read_err)) => {
                                    warnings.push(Problem::failed(
                                        it.entry.path.clone(),
                                        format!("cannot read: {read_err}"),
                                    ));
                                    outcomes[idx] = Some(Outcome::Failed);
                                    return Ok(());
                                }
                                Err(Err(write_err)) => return Err(write_err.into()),
                            }
                        }
                    };
                    digest = Some(stored_digest);
                    if let std::collections::hash_map::Entry::Vacant(v) =
                        stored_here.entry(stored_digest)
                    {
                        v.insert(member.clone());
                        blobs.push(NewBlob {
                            digest: stored_digest,
                            member,
                            size: fresh.size,
                        });
                    }
                }
                if changed {
                    warnings.push(Problem::failed(
                        it.entry.path.clone(),
                        "changed while being read; the stored copy may mix old and new \
                             content, and the next backup reads it again",
                    ));
                }
                fresh.digest = it.entry.digest;
                let as_walked = fresh == it.entry;
                fresh.digest = digest;
                outcomes[idx] = Some(match digest {
                    Some(d) if as_walked => Outcome::Digest(d),
                    _ => Outcome::Fresh(Box::new(fresh)),
                });
            }
        }
        Ok(())
    };
    let result = pool.map_ordered(
        cancel,
        batches,
        || vec![0u8; 256 * 1024],
        |buf, batch: Vec<usize>| {
            batch
                .into_iter()
                .map(|idx| {
                    let it = &plan_ref.items[idx];
                    (
                        idx,
                        read_one(src_ref, it, algo, prehash(it.entry.size), buf),
                    )
                })
                .collect::<Vec<_>>()
        },
        |done: Vec<(usize, Content)>| -> Result<()> {
            for d in done {
                handle(d)?;
            }
            Ok(())
        },
    );
    result?;
    let finished = match writer {
        Some(w) => Some(w.finish()?),
        None => None,
    };

    // The tree changes and the counters.
    let mut stats = BackupStats::default();
    let mut changes: Vec<EntryChange> = Vec::new();
    for (idx, it) in plan.items.iter().enumerate() {
        let entry = match outcomes[idx].take() {
            Some(Outcome::Digest(d)) => {
                let mut e = it.entry.clone();
                e.digest = Some(d);
                e
            }
            Some(Outcome::Fresh(e)) => *e,
            Some(Outcome::Failed) => {
                if let Prev::Was { .. } = it.prev {
                    if kind == Kind::Full {
                        changes.push(EntryChange::Remove(it.entry.path.clone()));
                    } else {
                        stats.files += 1;
                        stats.unchanged += 1;
                    }
                }
                continue;
            }
            None => it.entry.clone(),
        };
        stats.files += 1;
        let (row, visible) = it.outcome(&entry);
        match it.prev {
            Prev::None => stats.new += 1,
            Prev::Was { .. } if visible => stats.changed += 1,
            Prev::Was { .. } => stats.unchanged += 1,
        }
        if row {
            changes.push(EntryChange::Put(entry));
        }
    }
    stats.files += plan.unchanged + plan.carried;
    stats.unchanged += plan.unchanged + plan.carried;
    stats.deleted = plan.removed.len() as u64;
    for p in plan.removed.iter().chain(&plan.dropped) {
        changes.push(EntryChange::Remove(p.clone()));
    }
    stats.bytes_read = bytes_read;
    stats.bytes_stored = finished.as_ref().map_or(0, |f| f.size);
    stats.duration_s = started.elapsed().as_secs_f64();

    let snap = NewSnapshot {
        id: id.clone(),
        source_id: source_id.unwrap_or(0),
        kind,
        parent_seq: last.as_ref().map(|l| l.seq),
        chain_seq: match kind {
            Kind::Full => None,
            Kind::Incremental => last.as_ref().map(|l| l.chain_seq),
        },
        time_ns: now_ns,
        hash: algo,
        compression: opts.compression.name().to_string(),
        archive: finished.as_ref().map(|_| archive_name.clone()),
        archive_size: finished.as_ref().map(|f| f.size),
        archive_blake3: finished.as_ref().map(|f| f.blake3.to_vec()),
        stats: SnapshotStats {
            files: stats.files,
            new: stats.new,
            changed: stats.changed,
            deleted: stats.deleted,
            unchanged: stats.unchanged,
            bytes_read: stats.bytes_read,
            warnings: warnings.len() as u64,
            duration_ms: (stats.duration_s * 1000.0) as u64,
        },
        root: Some(crate::manifest::RootMeta {
            mode: scan.root.mode,
            uid: scan.root.uid,
            gid: scan.root.gid,
            mtime_ns: scan.root.mtime_ns,
        }),
    };
    let mut repo = repo;
    if let Err(e) = repo
        .manifest
        .commit_snapshot(&src_bytes, &name, &snap, &changes, &blobs)
    {
        // Not recorded: the archive must not outlive the failed commit.
        if let Some(f) = &finished {
            let _ = fs::remove_file(&f.path);
        }
        return Err(e.into());
    }
    repo.ensure_reserve();
    progress.finish();
    Ok(BackupReport {
        snapshot: Some(id),
        kind: kind.name(),
        reason,
        source: display_path(&src_bytes),
        archive: finished.map(|_| Repository::archive_name(&archive_name)),
        stats,
        warnings,
        dry_run: false,
        created_repository: created,
        would_read: None,
        would_delete: None,
    })
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
