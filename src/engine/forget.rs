//! `vault forget`: delete whole chains (a full and its incrementals): `--keep-fulls N` keeps
//! the newest N chains per source; the calendar rules (`--keep-daily N` …, see
//! `engine::retention`) keep snapshots, and a chain goes only when none of
//! its snapshots is kept (a kept incremental needs every archive of its chain up to it).
//!
//! Promise: the manifest forgets a chain (one transaction) before any of its archives is deleted,
//! so a crash in between leaves unreferenced archives (reported by `check` as orphans), never a
//! snapshot pointing at a missing archive. The next `forget` removes such orphans, and the
//! `*.partial` files of killed backups, under the writer lock (so no backup is running).

use std::collections::BTreeMap;

use crate::engine::repo::Repository;
use crate::engine::retention::{self, KeepRules, Reason};
use crate::error::{repo_io, Error, Result};
use crate::manifest::SnapshotRow;
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

/// What a calendar `forget` decided for one snapshot.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verdict {
    pub id: String,
    pub time: String,
    pub source: String,
    pub kept: bool,
    /// The rules that keep it (empty: none; it may still stay for its chain).
    pub reasons: Vec<Reason>,
    /// Kept only because another snapshot of its chain is kept (chains are deleted whole).
    pub kept_for_chain: bool,
}

/// What `vault forget` keeps.
#[derive(Clone, Copy, Debug)]
pub enum Keep {
    /// The newest N chains of each source.
    Fulls(u64),
    /// The snapshots the calendar rules keep, and their chains.
    Rules(KeepRules),
}

/// The outcome of `vault forget`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub kept_chains: u64,
    /// Calendar rules only: every snapshot considered, oldest first, and why it stays.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<Verdict>,
    pub removed: Vec<ForgottenChain>,
    /// Every archive removed (or that would be), `archives/NAME`.
    pub removed_archives: Vec<String>,
    /// Archives no snapshot refers to and `*.partial` leftovers (what a backup or forget killed
    /// at the wrong moment leaves), removed while holding the writer lock (or, with `dry_run`,
    /// that would be).
    pub debris_removed: Vec<String>,
    pub bytes_freed: u64,
}

/// Source → chain → snapshots (oldest first), of one source or all.
type Chains<'a> = BTreeMap<i64, BTreeMap<i64, Vec<&'a SnapshotRow>>>;

/// The chains to delete, by source: the oldest beyond `keep` chains.
fn beyond_fulls(chains: &Chains<'_>, keep: u64, report: &mut ForgetReport) -> Vec<(i64, Vec<i64>)> {
    let mut out = Vec::new();
    for (source_id, c) in chains {
        let drop_count = c.len().saturating_sub(keep as usize);
        report.kept_chains += (c.len() - drop_count) as u64;
        out.push((*source_id, c.keys().take(drop_count).copied().collect()));
    }
    out
}

/// The chains none of whose snapshots a rule keeps; every snapshot's verdict goes in the report.
fn unkept(
    chains: &Chains<'_>,
    rules: &KeepRules,
    report: &mut ForgetReport,
) -> Vec<(i64, Vec<i64>)> {
    let mut out = Vec::new();
    for (source_id, c) in chains {
        let snaps: Vec<&SnapshotRow> = c.values().flatten().copied().collect();
        let times: Vec<i64> = snaps.iter().map(|s| s.time_ns).collect();
        let reasons = retention::apply(rules, &times);
        let mut doomed = Vec::new();
        let mut verdicts = Vec::new();
        for (chain_seq, members) in c {
            let of = |s: &SnapshotRow| {
                snaps
                    .iter()
                    .position(|x| x.seq == s.seq)
                    .map_or(&[][..], |i| &reasons[i][..])
            };
            // A kept snapshot keeps its chain: the archives before it, and (chains go whole) the
            // snapshots after it.
            let newest_kept = members.iter().rposition(|s| !of(s).is_empty());
            match newest_kept {
                Some(_) => report.kept_chains += 1,
                None => doomed.push(*chain_seq),
            }
            for s in members.iter() {
                let r = of(s).to_vec();
                // Chains go whole: every snapshot of a kept chain stays.
                let for_chain = r.is_empty() && newest_kept.is_some();
                verdicts.push(Verdict {
                    id: s.id.clone(),
                    time: crate::time::rfc3339(s.time_ns),
                    source: display_path(&s.source_path),
                    kept: !r.is_empty() || for_chain,
                    reasons: r,
                    kept_for_chain: for_chain,
                });
            }
        }
        report.snapshots.extend(verdicts);
        out.push((*source_id, doomed));
    }
    out
}

/// Runs `vault forget` (on every source, or on `source` only).
pub fn forget(
    repo_path: &std::path::Path,
    keep: Keep,
    source: Option<&std::path::Path>,
    dry_run: bool,
    lock_wait: std::time::Duration,
) -> Result<ForgetReport> {
    match keep {
        Keep::Fulls(0) => return Err(Error::Usage("--keep-fulls must be at least 1".into())),
        Keep::Rules(r) if r.is_empty() => {
            return Err(Error::Usage(
                "give --keep-fulls or at least one --keep-* rule".into(),
            ))
        }
        _ => {}
    }
    let mut repo = Repository::open(repo_path)?;
    if !dry_run {
        repo.lock_exclusive_wait(lock_wait)?;
    }
    let only = source
        .map(|s| crate::engine::query::source_id(&repo, s))
        .transpose()?;
    let rows = repo.manifest.snapshots(None)?;
    let mut report = ForgetReport {
        dry_run,
        ..ForgetReport::default()
    };
    report.debris_removed = remove_debris(&repo, &rows, dry_run)?;
    let mut chains: Chains<'_> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| only.map_or(true, |o| o == r.source_id))
    {
        chains
            .entry(r.source_id)
            .or_default()
            .entry(r.chain_seq)
            .or_default()
            .push(r);
    }
    let doomed = match keep {
        Keep::Fulls(n) => beyond_fulls(&chains, n, &mut report),
        Keep::Rules(rules) => unkept(&chains, &rules, &mut report),
    };
    for (source_id, seqs) in doomed {
        if seqs.is_empty() {
            continue;
        }
        let c = &chains[&source_id];
        let mut forgotten: Vec<ForgottenChain> =
            seqs.iter().map(|q| chain_report(*q, &c[q])).collect();
        if !dry_run {
            delete_chains(&mut repo, source_id, &seqs, &forgotten)?;
        }
        for c in &mut forgotten {
            for a in &mut c.archives {
                *a = Repository::archive_name(a);
            }
            report.removed_archives.extend(c.archives.iter().cloned());
        }
        report.bytes_freed += forgotten.iter().map(|c| c.bytes).sum::<u64>();
        report.removed.extend(forgotten);
    }
    if !dry_run {
        repo.ensure_reserve();
    }
    Ok(report)
}

fn chain_report(chain_seq: i64, snaps: &[&SnapshotRow]) -> ForgottenChain {
    let full = snaps
        .iter()
        .find(|s| s.seq == chain_seq)
        .map_or(String::new(), |s| s.id.clone());
    ForgottenChain {
        source: display_path(&snaps[0].source_path),
        full,
        snapshots: snaps.iter().map(|s| s.id.clone()).collect(),
        archives: snaps.iter().filter_map(|s| s.archive.clone()).collect(),
        bytes: snaps.iter().filter_map(|s| s.archive_size).sum(),
    }
}

/// Forgets the chains in the manifest (one transaction), then deletes their archives.
fn delete_chains(
    repo: &mut Repository,
    source_id: i64,
    seqs: &[i64],
    forgotten: &[ForgottenChain],
) -> Result<()> {
    match repo.manifest.forget_chains(source_id, seqs) {
        // A full disk: the reserve makes room for the transaction (then retried once).
        Err(e) if crate::manifest::Manifest::is_full(&e) && repo.release_reserve() => {
            repo.manifest.forget_chains(source_id, seqs)?
        }
        other => other?,
    }
    let dir = repo.archives_dir();
    for c in forgotten {
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
    Ok(())
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

/// A job's `forget_after`: after `report`'s snapshot, forget the source's snapshots by the
/// job's rules. None when there is nothing to do (no rules, a dry run, nothing recorded).
pub fn after_backup(
    opts: &crate::engine::backup::BackupOptions,
    report: &crate::engine::backup::BackupReport,
) -> Option<Result<ForgetReport>> {
    let rules = opts.forget_after?;
    if opts.dry_run || report.snapshot.is_none() || opts.remote.is_some() || opts.stdin.is_some() {
        return None;
    }
    Some(forget(
        &opts.repo,
        Keep::Rules(rules),
        Some(&opts.source),
        false,
        opts.lock_wait,
    ))
}
