//! Which kind of snapshot to take (the Monday-full policy, forced kinds, chain limits), and
//! what the repository already knows about the source.

use std::collections::HashSet;

use crate::engine::repo::Repository;
use crate::error::{Error, Result};
use crate::hash::HashAlgo;
use crate::manifest::{Kind, SnapshotRow};

use super::sink::ChainDigests;
use super::BackupOptions;

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

/// What the repository knows about the source before this backup.
#[derive(Debug, Default)]
pub(super) struct Prior {
    /// The source's id in the manifest (None: never backed up).
    pub source_id: Option<i64>,
    pub history: Vec<SnapshotRow>,
    pub last: Option<SnapshotRow>,
    /// Snapshots in the last one's chain.
    pub chain_len: u64,
}

impl Prior {
    pub(super) fn load(repo: Option<&Repository>, src: &[u8]) -> Result<Prior> {
        let Some(r) = repo else {
            return Ok(Prior::default());
        };
        let Some(id) = r.manifest.source_id(src)? else {
            return Ok(Prior::default());
        };
        let history = r.manifest.snapshots(Some(id))?;
        let last = history.last().cloned();
        let chain_len = match &last {
            Some(l) => r.manifest.chain_len(l.chain_seq)?,
            None => 0,
        };
        Ok(Prior {
            source_id: Some(id),
            history,
            last,
            chain_len,
        })
    }

    /// The digest to use: an incremental keeps its chain's; a full takes --hash, else the
    /// previous one, else BLAKE3.
    pub(super) fn algo(&self, opts: &BackupOptions, kind: Kind) -> HashAlgo {
        match (kind, &self.last) {
            (Kind::Incremental, Some(l)) => l.hash,
            _ => opts
                .hash
                .or(self.last.as_ref().map(|l| l.hash))
                .unwrap_or(HashAlgo::Blake3),
        }
    }

    /// The contents already stored in the chain an incremental extends: loaded whole when
    /// many files are to be read, else asked of the manifest one digest at a time (an
    /// incremental that reads 1% of a million files does not load a million digests).
    pub(super) fn chain_digests<'r>(
        &self,
        repo: &'r Repository,
        kind: Kind,
        reads: u64,
    ) -> Result<ChainDigests<'r>> {
        match (kind, &self.last) {
            (Kind::Incremental, Some(l)) if reads.saturating_mul(8) < l.stats.files => {
                Ok(ChainDigests::Lookup(&repo.manifest, l.chain_seq))
            }
            (Kind::Incremental, Some(l)) => Ok(ChainDigests::Loaded(
                repo.manifest.chain_digests(l.chain_seq)?,
            )),
            _ => Ok(ChainDigests::Loaded(HashSet::new())),
        }
    }
}

/// Chooses full or incremental.
pub(super) fn decide(
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

/// Refuses an incremental onto a chain one of whose archives is gone: its snapshots could
/// not be restored, and neither could the new one.
pub(super) fn check_chain_archives(
    repo: &Repository,
    history: &[SnapshotRow],
    chain: i64,
) -> Result<()> {
    for s in history.iter().filter(|s| s.chain_seq == chain) {
        if let Some(a) = &s.archive {
            if !repo.archive_path(a).is_file() {
                return Err(Error::Refused(format!(
                    "chain is damaged: archives/{a} of snapshot {} is missing; run `vault check`; the next backup must be --full",
                    s.id
                )));
            }
        }
    }
    Ok(())
}
