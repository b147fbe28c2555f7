//! Counting and recording: the stats of a backup (one tally for real runs and dry runs), the
//! manifest changes, and the snapshot row the manifest commits.

use super::read::Fate;
use super::BackupStats;
use crate::engine::plan::{Plan, Prev, ReadReason};
use crate::manifest::{EntryChange, Kind};
use crate::tree::Entry;

/// What became of one planned item, as the tally sees it.
enum Final {
    /// Stored or recorded as this entry.
    Entry(Entry),
    /// Could not be read this time.
    Failed,
    /// A dry run: what the plan expects.
    Planned,
}

/// Counts a plan's items (and, for a real run, makes the manifest changes). `outcomes` is
/// None for a dry run.
pub(super) fn tally(
    plan: &Plan,
    kind: Kind,
    mut outcomes: Option<Vec<Option<Fate>>>,
) -> (BackupStats, Vec<EntryChange>) {
    let mut stats = BackupStats::default();
    let mut changes: Vec<EntryChange> = Vec::new();
    for (idx, it) in plan.items.iter().enumerate() {
        let fin = match outcomes.as_mut().map(|o| o[idx].take()) {
            None => Final::Planned,
            Some(Some(Fate::Digest(d, sparse))) => {
                let mut e = it.entry.clone();
                e.digest = Some(d);
                e.sparse = sparse;
                Final::Entry(e)
            }
            Some(Some(Fate::Fresh(e))) => Final::Entry(*e),
            Some(Some(Fate::Failed)) => Final::Failed,
            Some(None) => Final::Entry(it.entry.clone()),
        };
        let (row, visible) = match &fin {
            Final::Entry(e) => it.outcome(e),
            Final::Planned => match it.prev {
                Prev::Was { meta_same, .. } => (false, !(it.read == ReadReason::No && meta_same)),
                Prev::None => (false, true),
            },
            Final::Failed => {
                // Its previous version stays in an incremental; a full starts without it.
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
        };
        stats.files += 1;
        match it.prev {
            Prev::None => stats.new += 1,
            Prev::Was { .. } if visible => stats.changed += 1,
            Prev::Was { .. } => stats.unchanged += 1,
        }
        if let (true, Final::Entry(e)) = (row, fin) {
            changes.push(EntryChange::Put(e));
        }
    }
    stats.files += plan.unchanged + plan.carried;
    stats.unchanged += plan.unchanged + plan.carried;
    stats.deleted = plan.removed.len() as u64;
    for p in plan.removed.iter().chain(&plan.dropped) {
        changes.push(EntryChange::Remove(p.clone()));
    }
    (stats, changes)
}
