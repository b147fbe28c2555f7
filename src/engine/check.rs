//! `vault check`: is every snapshot restorable?
//!
//! Checks, in order: SQLite's integrity check; that every file of every snapshot has its content
//! stored in the snapshot's chain; that every archive is present with its recorded size and
//! BLAKE3; with `read_data`, that every archive decompresses and every stored content has its
//! recorded size and digest. A problem names the archive or path and lists every snapshot it
//! affects (a damaged archive affects its own snapshot and the later ones of its chain).
//! Leftover `*.partial` files of an interrupted backup are removed (when no backup is running)
//! and reported, not counted as damage.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::archive::reader::{self, Flow, MemberKind};
use crate::engine::repo::Repository;
use crate::error::Result;
use crate::manifest::{Manifest, ManifestError, SnapshotRow};

/// The contents an archive stores: (member name, digest, size).
type StoredList = Vec<(Vec<u8>, crate::hash::Digest, u64)>;
use crate::pool::{CancelToken, Pool};
use crate::progress::Progress;
use crate::text::display_path;

/// One piece of damage found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Damage {
    /// What is damaged: `vault.db`, `archives/NAME`, or a snapshot path.
    pub what: String,
    pub error: String,
    /// Ids of the snapshots it makes unrestorable (in part or whole).
    pub snapshots: Vec<String>,
}

/// The outcome of `vault check`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub snapshots: u64,
    pub archives: u64,
    pub read_data: bool,
    /// Bytes of archive checked (with `read_data`, decompressed content hashed).
    pub bytes_checked: u64,
    pub problems: Vec<Damage>,
    /// Every snapshot some problem affects.
    pub affected_snapshots: Vec<String>,
    /// Leftovers of interrupted backups, removed.
    pub partials_removed: Vec<String>,
    /// Leftovers found while a backup holds the lock (left alone).
    pub partials_in_use: Vec<String>,
    /// Archives no snapshot refers to (e.g. a backup killed between archive and commit).
    pub orphans: Vec<String>,
}

fn affected_by(rows: &[SnapshotRow], damaged: &SnapshotRow) -> Vec<String> {
    rows.iter()
        .filter(|r| r.chain_seq == damaged.chain_seq && r.seq >= damaged.seq)
        .map(|r| r.id.clone())
        .collect()
}

/// A problem with `count` rows of one snapshot, shown by one example.
fn row_problem(r: &SnapshotRow, count: usize, what: &str, example: &str) -> Damage {
    Damage {
        what: format!("snapshot {}", r.id),
        error: format!("{count} {what}, e.g. {example}"),
        snapshots: vec![r.id.clone()],
    }
}

/// Runs `vault check`.
pub fn check(
    repo_path: &std::path::Path,
    read_data: bool,
    pool: &Pool,
    cancel: &CancelToken,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let mut repo = Repository::open(repo_path)?;
    let mut report = CheckReport {
        read_data,
        ..CheckReport::default()
    };
    let (rows, stored) = check_manifest(&repo.manifest, read_data, &mut report)?;

    // Debris and orphans in archives/.
    let locked = repo.lock_exclusive().is_ok();
    let dir = repo.archives_dir();
    list_archives(&repo, &dir, locked, &rows, &mut report)?;

    // Archives: presence, size, checksum; with read_data, every stored content.
    let ctx = ArchiveCheck {
        rows: &rows,
        dir: &dir,
        read_data,
        stored: &stored,
    };
    check_archives(&ctx, pool, cancel, progress, &mut report)?;
    build_report(&mut report, &rows);
    progress.finish();
    Ok(report)
}

/// What a snapshot's rows yielded: files with no stored content, and contradicting rows.
type Findings = (Vec<Vec<u8>>, Vec<(Vec<u8>, String)>);

/// Checks the manifest: SQLite's integrity check, then every snapshot's rows. Returns the
/// snapshots and, with `read_data`, the contents each archive stores (by snapshot seq).
fn check_manifest(
    manifest: &Manifest,
    read_data: bool,
    report: &mut CheckReport,
) -> Result<(Vec<SnapshotRow>, HashMap<i64, StoredList>)> {
    // SQLite's own check stops with an error at some kinds of damage: that is a finding too.
    let integrity = match manifest.integrity_problems() {
        Ok(v) => v,
        Err(ManifestError::Damaged { what, .. }) => vec![what],
        Err(e) => return Err(e.into()),
    };
    let rows = manifest.snapshots(None)?;
    report.snapshots = rows.len() as u64;
    // Per snapshot: can its tree and stored contents be read, and is every content stored?
    // A damaged page makes the reads of the snapshots whose rows it holds fail; those are the
    // snapshots the damage affects, and the others can still be restored.
    let mut unreadable: Vec<(String, String)> = Vec::new();
    let mut stored_lists: HashMap<i64, StoredList> = HashMap::new();
    for r in &rows {
        match read_snapshot(manifest, r, &integrity, read_data, &mut stored_lists) {
            Ok((missing, bad)) => report_findings(report, r, &missing, &bad),
            Err(ManifestError::Damaged { what, .. }) => unreadable.push((r.id.clone(), what)),
            Err(e) => return Err(e.into()),
        }
    }
    if !integrity.is_empty() || !unreadable.is_empty() {
        report
            .problems
            .insert(0, manifest_damage(&integrity, unreadable, &rows));
    }
    Ok((rows, stored_lists))
}

/// Reads one snapshot's tree (when the database is damaged) and stored contents (with
/// `read_data`), and finds its contradicting rows and its files with no stored content.
fn read_snapshot(
    manifest: &Manifest,
    r: &SnapshotRow,
    integrity: &[String],
    read_data: bool,
    stored_lists: &mut HashMap<i64, StoredList>,
) -> std::result::Result<Findings, ManifestError> {
    if !integrity.is_empty() {
        manifest.snapshot_entries(r)?;
    }
    if read_data && r.archive.is_some() {
        stored_lists.insert(r.seq, manifest.stored_in(r.seq)?);
    }
    let bad = manifest.inconsistent_entries(r)?;
    Ok((manifest.unstored_files(r)?, bad))
}

/// Adds the problems found in one readable snapshot's rows to the report.
fn report_findings(
    report: &mut CheckReport,
    r: &SnapshotRow,
    missing: &[Vec<u8>],
    bad: &[(Vec<u8>, String)],
) {
    if let Some((path, why)) = bad.first() {
        let what = "manifest row(s) contradict themselves or the stored contents";
        let example = format!("{}: {why}", display_path(path));
        report
            .problems
            .push(row_problem(r, bad.len(), what, &example));
    }
    if let Some(first) = missing.first() {
        let what = "file(s) whose content the chain does not store";
        let example = display_path(first);
        report
            .problems
            .push(row_problem(r, missing.len(), what, &example));
    }
}

/// The damage of vault.db itself: the integrity check's findings and the unreadable snapshots.
fn manifest_damage(
    integrity: &[String],
    unreadable: Vec<(String, String)>,
    rows: &[SnapshotRow],
) -> Damage {
    let mut error = integrity.join("; ");
    if let Some((_, what)) = unreadable.first() {
        if !error.is_empty() {
            error.push_str("; ");
        }
        error.push_str(&format!(
            "{} snapshot(s) cannot be read ({what}); the others can still be restored",
            unreadable.len()
        ));
    }
    Damage {
        what: "vault.db".into(),
        error,
        // When every snapshot reads cleanly the damage cannot be placed: all of them.
        snapshots: if unreadable.is_empty() {
            rows.iter().map(|r| r.id.clone()).collect()
        } else {
            unreadable.into_iter().map(|(id, _)| id).collect()
        },
    }
}

/// Lists the archives no snapshot refers to: leftover `*.partial` files are removed (when
/// `locked`) or reported in use, anything else is an orphan.
fn list_archives(
    repo: &Repository,
    dir: &Path,
    locked: bool,
    rows: &[SnapshotRow],
    report: &mut CheckReport,
) -> Result<()> {
    for name in repo.unreferenced_archives(rows)? {
        if name.ends_with(".partial") {
            if locked {
                let path = dir.join(&name);
                std::fs::remove_file(&path).map_err(|e| crate::error::repo_io(&path, e))?;
                report.partials_removed.push(format!("archives/{name}"));
            } else {
                report.partials_in_use.push(format!("archives/{name}"));
            }
        } else {
            report.orphans.push(format!("archives/{name}"));
        }
    }
    Ok(())
}

/// What checking the archives needs to know.
struct ArchiveCheck<'a> {
    /// Every snapshot.
    rows: &'a [SnapshotRow],
    /// The archives folder.
    dir: &'a Path,
    read_data: bool,
    /// The contents each archive stores, by snapshot seq (with `read_data`).
    stored: &'a HashMap<i64, StoredList>,
}

/// Reads every snapshot's archive on the pool and adds the damage found to the report.
fn check_archives(
    ctx: &ArchiveCheck<'_>,
    pool: &Pool,
    cancel: &CancelToken,
    progress: &dyn Progress,
    report: &mut CheckReport,
) -> Result<()> {
    let rows = ctx.rows;
    let with_archive: Vec<&SnapshotRow> = rows.iter().filter(|r| r.archive.is_some()).collect();
    report.archives = with_archive.len() as u64;
    let total: u64 = with_archive
        .iter()
        .map(|r| r.archive_size.unwrap_or(0))
        .sum();
    progress.phase("check", Some(total));
    let found: Mutex<Vec<(i64, String, String)>> = Mutex::new(Vec::new());
    let checked = AtomicU64::new(0);
    let result = pool.map_unordered(
        cancel,
        with_archive.iter().copied(),
        || vec![0u8; 256 * 1024],
        |buf, r| check_archive(ctx, buf, r, &checked),
        |(seq, name, problems)| {
            progress.advance(
                rows.iter()
                    .find(|r| r.seq == seq)
                    .and_then(|r| r.archive_size)
                    .unwrap_or(0),
            );
            let mut f = found.lock().unwrap_or_else(|e| e.into_inner());
            for p in problems {
                f.push((seq, name.clone(), p));
            }
            Ok::<(), ()>(())
        },
    );
    crate::error::pool_done(result)?;
    let mut found = found.into_inner().unwrap_or_else(|e| e.into_inner());
    found.sort();
    for (seq, name, error) in found {
        let r = rows
            .iter()
            .find(|r| r.seq == seq)
            .expect("row of a checked archive");
        report.problems.push(Damage {
            what: format!("archives/{name}"),
            error,
            snapshots: affected_by(rows, r),
        });
    }
    report.bytes_checked = checked.into_inner();
    Ok(())
}

/// Checks one snapshot's archive (on a pool thread): returns its seq, its name and the
/// problems found.
fn check_archive(
    ctx: &ArchiveCheck<'_>,
    buf: &mut [u8],
    r: &SnapshotRow,
    checked: &AtomicU64,
) -> (i64, String, Vec<String>) {
    let name = r.archive.clone().unwrap_or_default();
    let path = ctx.dir.join(&name);
    let mut problems = Vec::new();
    match std::fs::File::open(&path) {
        Err(e) => problems.push(format!("cannot open: {e}")),
        Ok(f) => problems.extend(check_archive_file(f, buf, r, checked)),
    }
    if ctx.read_data && problems.iter().all(|p| !p.starts_with("cannot open")) {
        problems.extend(read_archive(&path, r, ctx.stored.get(&r.seq)));
    }
    (r.seq, name, problems)
}

/// Reads an open archive whole, counting its bytes into `checked`, and compares its size and
/// BLAKE3 with the manifest's.
fn check_archive_file(
    mut f: std::fs::File,
    buf: &mut [u8],
    r: &SnapshotRow,
    checked: &AtomicU64,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut h = blake3::Hasher::new();
    let mut n = 0u64;
    loop {
        match f.read(buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) => {
                problems.push(format!("read error: {e}"));
                break;
            }
        }
    }
    checked.fetch_add(n, Ordering::Relaxed);
    if Some(n) != r.archive_size {
        problems.push(format!(
            "size is {n} bytes, the manifest says {}",
            r.archive_size.unwrap_or(0)
        ));
    } else if r.archive_blake3.as_deref() != Some(h.finalize().as_bytes()) {
        problems.push("BLAKE3 checksum differs from the manifest's".into());
    }
    problems
}

/// Completes the report: every snapshot some problem affects (in seq order), and the verdict.
fn build_report(report: &mut CheckReport, rows: &[SnapshotRow]) {
    let affected: BTreeSet<(i64, String)> = report
        .problems
        .iter()
        .flat_map(|p| p.snapshots.iter())
        .filter_map(|id| {
            rows.iter()
                .find(|r| &r.id == id)
                .map(|r| (r.seq, r.id.clone()))
        })
        .collect();
    report.affected_snapshots = affected.into_iter().map(|(_, id)| id).collect();
    report.ok = report.problems.is_empty();
}

/// Decompresses one archive and checks every content the manifest says it stores.
fn read_archive(
    path: &std::path::Path,
    r: &SnapshotRow,
    stored: Option<&StoredList>,
) -> Vec<String> {
    let mut want: HashMap<&[u8], (crate::hash::Digest, u64)> = stored
        .map(|v| v.iter().map(|(m, d, s)| (m.as_slice(), (*d, *s))).collect())
        .unwrap_or_default();
    let mut problems = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let res = reader::for_each_member(path, reader::compression_of(path), |m| {
        if let Some((d, size)) = want.remove(m.name.as_slice()) {
            if m.kind != MemberKind::Regular {
                problems.push(format!("{}: not a regular member", display_path(&m.name)));
                return Ok::<Flow, ()>(Flow::Continue);
            }
            if m.size != size {
                problems.push(format!(
                    "{}: {} bytes, the manifest says {size}",
                    display_path(&m.name),
                    m.size
                ));
                return Ok(Flow::Continue);
            }
            // A sparse member's digest covers its map block and data regions, as stored.
            match crate::hash::hash_reader(r.hash, m.data, &mut buf) {
                Ok((got, n)) if n == m.stored && got == d => {}
                Ok((_, n)) if n != m.stored => problems.push(format!(
                    "{}: member ends after {n} of {} bytes",
                    display_path(&m.name),
                    m.stored
                )),
                Ok(_) => problems.push(format!("{}: digest mismatch", display_path(&m.name))),
                Err(e) => problems.push(format!("{}: {e}", display_path(&m.name))),
            }
        }
        Ok(Flow::Continue)
    });
    if let Err(Err(e)) = res {
        problems.push(e.to_string());
    }
    for m in want.keys() {
        problems.push(format!("{}: not found in the archive", display_path(m)));
    }
    problems.sort();
    problems
}
