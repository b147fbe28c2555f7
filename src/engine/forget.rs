//! `vault forget --keep-fulls N`: delete whole chains (a full and its incrementals), keeping the
//! newest N per source.
//!
//! Promise: the manifest forgets a chain (one transaction) before any of its archives is deleted,
//! so a crash in between leaves unreferenced archives (reported by `check` as orphans), never a
//! snapshot pointing at a missing archive. The next `forget` removes such orphans, and the
//! `*.partial` files of killed backups, under the writer lock (so no backup is running).

use std::collections::BTreeMap;

use crate::engine::repo::Repository;
use crate::error::{repo_io, Error, Result};
use crate::text::display_path;

/// One chain removed (or that would be).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ForgottenChain {
    pub source: String,
    /// Id of the chain's full.
    pub full: String,
    pub snapshots: Vec<String>,
    pub archives: Vec<String>,
    pub bytes: u64,
}

/// The outcome of `vault forget`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub kept_chains: u64,
    pub removed: Vec<ForgottenChain>,
    /// Archives no snapshot refers to and `*.partial` leftovers (what a backup or forget killed
    /// at the wrong moment leaves), removed while holding the writer lock (or, with `dry_run`,
    /// that would be).
    pub debris_removed: Vec<String>,
    pub bytes_freed: u64,
}

/// Runs `vault forget`.
pub fn forget(
    repo_path: &std::path::Path,
    keep_fulls: u64,
    dry_run: bool,
    lock_wait: std::time::Duration,
) -> Result<ForgetReport> {
    if keep_fulls == 0 {
        return Err(Error::Usage("--keep-fulls must be at least 1".into()));
    }
    let mut repo = Repository::open(repo_path)?;
    if !dry_run {
        repo.lock_exclusive_wait(lock_wait)?;
    }
    let rows = repo.manifest.snapshots(None)?;
    let mut report = ForgetReport {
        dry_run,
        ..ForgetReport::default()
    };
    report.debris_removed = remove_debris(&repo, &rows, dry_run)?;
    // source -> chain_seq -> snapshots
    let mut by_source: BTreeMap<i64, BTreeMap<i64, Vec<&crate::manifest::SnapshotRow>>> =
        BTreeMap::new();
    for r in &rows {
        by_source
            .entry(r.source_id)
            .or_default()
            .entry(r.chain_seq)
            .or_default()
            .push(r);
    }
    for (source_id, chains) in by_source {
        let n = chains.len();
        let drop_count = n.saturating_sub(keep_fulls as usize);
        report.kept_chains += (n - drop_count) as u64;
        let doomed: Vec<(i64, Vec<&crate::manifest::SnapshotRow>)> =
            chains.into_iter().take(drop_count).collect();
        if doomed.is_empty() {
            continue;
        }
        let mut forgotten = Vec::new();
        for (chain_seq, snaps) in &doomed {
            let full = snaps
                .iter()
                .find(|s| s.seq == *chain_seq)
                .map_or(String::new(), |s| s.id.clone());
            forgotten.push(ForgottenChain {
                source: display_path(&snaps[0].source_path),
                full,
                snapshots: snaps.iter().map(|s| s.id.clone()).collect(),
                archives: snaps.iter().filter_map(|s| s.archive.clone()).collect(),
                bytes: snaps.iter().filter_map(|s| s.archive_size).sum(),
            });
        }
        if !dry_run {
            let seqs: Vec<i64> = doomed.iter().map(|(c, _)| *c).collect();
            match repo.manifest.forget_chains(source_id, &seqs) {
                // A full disk: the reserve makes room for the transaction (then retried once).
                Err(e) if crate::manifest::Manifest::is_full(&e) && repo.release_reserve() => {
                    repo.manifest.forget_chains(source_id, &seqs)?
                }
                other => other?,
            }
            let dir = repo.archives_dir();
            for c in &forgotten {
                for a in &c.archives {
                    let p = dir.join(a);
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(repo_io(p, e)),
                    }
                }
            }
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
        }
        for c in &mut forgotten {
            for a in &mut c.archives {
                *a = Repository::archive_name(a);
            }
        }
        report.bytes_freed += forgotten.iter().map(|c| c.bytes).sum::<u64>();
        report.removed.extend(forgotten);
    }
    if !dry_run {
        repo.ensure_reserve();
    }
    Ok(report)
}

/// Removes (or, for a dry run, lists) what in archives/ no snapshot refers to. The caller holds
/// the writer lock unless `dry_run`.
fn remove_debris(
    repo: &Repository,
    rows: &[crate::manifest::SnapshotRow],
    dry_run: bool,
) -> Result<Vec<String>> {
    let dir = repo.archives_dir();
    let names = repo.unreferenced_archives(rows)?;
    if !dry_run {
        for name in &names {
            let path = dir.join(name);
            std::fs::remove_file(&path).map_err(|e| repo_io(&path, e))?;
        }
    }
    Ok(names.into_iter().map(|n| format!("archives/{n}")).collect())
}
