//! Counting and recording: the stats of a backup (one tally for real runs and dry runs), the
//! manifest changes, and the snapshot row the manifest commits.

use super::read::Fate;
use super::BackupStats;
use crate::engine::plan::{self, Item, Plan, Prev, ReadReason};
use crate::manifest::{EntryChange, Kind};
use crate::tree::Entry;

/// What became of one planned item, as the tally sees it.
enum Final {
    /// Stored or recorded as this entry.
    Entry(Entry),
    /// A dry run: what the plan expects.
    Planned,
}

/// Counts a plan's items (and, for a real run, makes the manifest changes, moving each entry
/// out of the plan rather than copying it). `outcomes` is None for a dry run.
pub(super) fn tally(
    plan: Plan,
    kind: Kind,
    mut outcomes: Option<Vec<Option<Fate>>>,
) -> (BackupStats, Vec<EntryChange>) {
    let mut stats = BackupStats::default();
    let mut changes: Vec<EntryChange> = Vec::new();
    for (idx, it) in plan.items.into_iter().enumerate() {
        let Item {
            mut entry,
            prev,
            read,
            ..
        } = it;
        let fin = match outcomes.as_mut().map(|o| o[idx].take()) {
            None => Final::Planned,
            Some(Some(Fate::Digest(d, sparse))) => {
                (entry.digest, entry.sparse) = (Some(d), sparse);
                Final::Entry(entry)
            }
            Some(Some(Fate::Fresh(e))) => Final::Entry(*e),
            Some(Some(Fate::Failed)) => {
                // Its previous version stays in an incremental; a full starts without it.
                if let Prev::Was { .. } = prev {
                    if kind == Kind::Full {
                        changes.push(EntryChange::Remove(entry.path));
                    } else {
                        stats.files += 1;
                        stats.unchanged += 1;
                    }
                }
                continue;
            }
            Some(None) => Final::Entry(entry),
        };
        let (row, visible) = match &fin {
            Final::Entry(e) => plan::outcome(prev, e),
            Final::Planned => match prev {
                Prev::Was { meta_same, .. } => (false, !(read == ReadReason::No && meta_same)),
                Prev::None => (false, true),
            },
        };
        stats.files += 1;
        match prev {
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
