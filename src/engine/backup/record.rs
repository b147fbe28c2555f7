//! Counting and recording: the stats of a backup (one count for real runs and dry runs) and
//! the manifest changes, made one at a time as the commit takes them so that the tree is never
//! held twice.

use super::outcome::{Fate, Outcomes};
use super::read;
use super::BackupStats;
use crate::engine::plan::{self, Item, Plan, Prev, ReadReason};
use crate::manifest::{EntryChange, Kind};

/// How an item is counted in the snapshot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Count {
    New,
    Changed,
    Unchanged,
}

/// What the manifest does for an item.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Row {
    /// Nothing: its live row stands (or there is none and it is not in the snapshot).
    Keep,
    /// A new version of the path.
    Put,
    /// Its previous version ends here.
    Remove,
}

/// What one planned item comes to; `count` None: not in the snapshot.
struct Judged {
    count: Option<Count>,
    row: Row,
}

/// Judges one item; `fate` is None for a dry run (what the plan expects). `xattrs_changed`:
/// the file was read with extended attributes other than the planned ones.
fn judge(it: &Item, fate: Option<Option<Fate<'_>>>, kind: Kind, xattrs_changed: bool) -> Judged {
    let digest = match fate {
        None => return planned(it),
        Some(Some(Fate::Failed)) => return failed(it.prev, kind),
        Some(Some(Fate::Digest(d, _))) => Some(d),
        Some(Some(Fate::Fresh(e))) => e.digest,
        Some(None) => it.entry.digest,
    };
    let (row, visible) = plan::outcome(it.prev, it.entry.digest, digest);
    let (row, visible) = (row || xattrs_changed, visible || xattrs_changed);
    let count = match it.prev {
        Prev::None => Count::New,
        Prev::Was { .. } if visible => Count::Changed,
        Prev::Was { .. } => Count::Unchanged,
    };
    Judged {
        count: Some(count),
        row: if row { Row::Put } else { Row::Keep },
    }
}

/// A dry run's view of an item: no row, counted as the plan expects.
fn planned(it: &Item) -> Judged {
    let count = match it.prev {
        Prev::Was { meta_same, .. } if it.read == ReadReason::No && meta_same => Count::Unchanged,
        Prev::Was { .. } => Count::Changed,
        Prev::None => Count::New,
    };
    Judged {
        count: Some(count),
        row: Row::Keep,
    }
}

/// A file that could not be read: its previous version stays in an incremental, a full
/// starts without it.
fn failed(prev: Prev, kind: Kind) -> Judged {
    match (prev, kind) {
        (Prev::Was { .. }, Kind::Full) => Judged {
            count: None,
            row: Row::Remove,
        },
        (Prev::Was { .. }, Kind::Incremental) => Judged {
            count: Some(Count::Unchanged),
            row: Row::Keep,
        },
        (Prev::None, _) => Judged {
            count: None,
            row: Row::Keep,
        },
    }
}

/// Counts a plan's items. `outcomes` is None for a dry run.
pub(super) fn count(plan: &Plan, kind: Kind, outcomes: Option<&Outcomes>) -> BackupStats {
    let mut stats = BackupStats::default();
    for (idx, it) in plan.items.iter().enumerate() {
        let xattrs_changed = outcomes.is_some_and(|o| o.new_xattrs(idx).is_some());
        let j = judge(it, outcomes.map(|o| o.get(idx)), kind, xattrs_changed);
        if let Some(c) = j.count {
            stats.files += 1;
            match c {
                Count::New => stats.new += 1,
                Count::Changed => stats.changed += 1,
                Count::Unchanged => stats.unchanged += 1,
            }
        }
    }
    stats.files += plan.unchanged + plan.carried;
    stats.unchanged += plan.unchanged + plan.carried;
    stats.deleted = plan.removed.len() as u64;
    stats
}

/// The manifest change of item `idx` of a real run once the sink took it (None: its live row
/// stands).
pub(super) fn row(it: &Item, idx: usize, outcomes: &Outcomes, kind: Kind) -> Option<EntryChange> {
    let (fate, new_xattrs) = (outcomes.get(idx), outcomes.new_xattrs(idx));
    let j = judge(it, Some(fate.clone()), kind, new_xattrs.is_some());
    let mut change = match (j.row, fate) {
        (Row::Keep, _) => None,
        (Row::Remove, _) => Some(EntryChange::Remove(it.entry.path.clone())),
        (Row::Put, Some(Fate::Fresh(e))) => Some(EntryChange::Put(e.clone())),
        (Row::Put, Some(Fate::Digest(d, sparse))) => {
            let mut entry = it.entry.clone();
            (entry.digest, entry.sparse) = (Some(d), sparse);
            Some(EntryChange::Put(entry))
        }
        (Row::Put, _) => Some(EntryChange::Put(it.entry.clone())),
    };
    if let (Some(EntryChange::Put(e)), Some(x)) = (&mut change, new_xattrs) {
        e.xattrs = x.clone();
    }
    change
}

/// The manifest changes of a real run that were not made as the archive was written: the
/// items that never went to the archive (see [`read::archived`]), then the paths that are gone.
/// Made one at a time as the commit takes them (each entry is copied just before its row is
/// written and dropped just after).
pub(super) fn rest<'p>(
    plan: &'p Plan,
    kind: Kind,
    outcomes: &'p Outcomes,
) -> impl Iterator<Item = EntryChange> + 'p {
    let per_item = plan
        .items
        .iter()
        .enumerate()
        .filter(move |(_, it)| !read::archived(it, kind))
        .filter_map(move |(idx, it)| row(it, idx, outcomes, kind));
    let gone = plan.removed.iter().chain(&plan.dropped).cloned();
    per_item.chain(gone.map(EntryChange::Remove))
}
