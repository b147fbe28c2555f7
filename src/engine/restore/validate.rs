//! Checks on what a snapshot asks restore to write: every path stays inside the target.

use std::collections::HashMap;

use crate::engine::paths::{above, split_parent, trim_slashes, within};
use crate::error::{Error, Result};
use crate::manifest::SnapshotRow;
use crate::text::display_path;
use crate::tree::{Entry, EntryKind};

/// Splits a manifest path into components, refusing anything that could leave the target.
pub fn safe_components(path: &[u8]) -> Option<Vec<&[u8]>> {
    if path.is_empty() || path[0] == b'/' || path.contains(&0) {
        return None;
    }
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == b"." || *c == b"..")
    {
        return None;
    }
    Some(parts)
}

fn unsafe_path(snap: &SnapshotRow, path: &[u8], why: &str) -> Error {
    Error::Refused(format!(
        "snapshot {}: manifest path '{}' {why}; refusing to restore (the manifest may have been tampered with)",
        snap.id,
        display_path(path)
    ))
}

/// The kind of the entry at a path of the tree, if it has one.
enum Kinds<'a> {
    /// The tree in strict path order (as the manifest gives it): binary search, no copy.
    Sorted(&'a [Entry]),
    /// Anything else: a map of every path (50 MB for a million paths).
    Map(HashMap<&'a [u8], EntryKind>),
}

impl<'a> Kinds<'a> {
    fn of(tree: &'a [Entry]) -> Kinds<'a> {
        if tree.windows(2).all(|w| w[0].path < w[1].path) {
            Kinds::Sorted(tree)
        } else {
            Kinds::Map(tree.iter().map(|e| (e.path.as_slice(), e.kind)).collect())
        }
    }

    fn get(&self, path: &[u8]) -> Option<EntryKind> {
        match self {
            Kinds::Sorted(t) => t
                .binary_search_by(|e| e.path.as_slice().cmp(path))
                .ok()
                .map(|i| t[i].kind),
            Kinds::Map(m) => m.get(path).copied(),
        }
    }
}

/// Checks every path of a tree and that each one lies below a folder of the tree.
pub(super) fn validate_tree(snap: &SnapshotRow, tree: &[Entry]) -> Result<()> {
    let kinds = Kinds::of(tree);
    for e in tree {
        let parts = safe_components(&e.path).ok_or_else(|| {
            unsafe_path(
                snap,
                &e.path,
                "is absolute or has an empty, '.' or '..' component",
            )
        })?;
        if parts.len() > 1 {
            match kinds.get(split_parent(&e.path).0) {
                Some(EntryKind::Dir) => {}
                Some(_) => {
                    return Err(unsafe_path(
                        snap,
                        &e.path,
                        "lies below something that is not a folder",
                    ))
                }
                None => {
                    return Err(unsafe_path(
                        snap,
                        &e.path,
                        "lies below a folder the snapshot does not have",
                    ))
                }
            }
        }
        if e.kind == EntryKind::File && e.digest.is_none() {
            return Err(unsafe_path(snap, &e.path, "is a file without a digest"));
        }
        if e.kind == EntryKind::Symlink && e.target.is_none() {
            return Err(unsafe_path(snap, &e.path, "is a symlink without a target"));
        }
    }
    Ok(())
}

pub(super) fn filter_include(
    snap: &SnapshotRow,
    tree: Vec<Entry>,
    include: &[Vec<u8>],
) -> Result<Vec<Entry>> {
    let wanted: Vec<Vec<u8>> = include.iter().map(|s| trim_slashes(s).to_vec()).collect();
    for w in &wanted {
        if !tree.iter().any(|e| &e.path == w) {
            return Err(Error::Usage(format!(
                "--include {}: no such path in snapshot {}",
                display_path(w),
                snap.id
            )));
        }
    }
    // The path is inside an included one, or is a folder above it.
    let keep = |p: &[u8]| wanted.iter().any(|w| within(p, w) || above(p, w));
    Ok(tree.into_iter().filter(|e| keep(&e.path)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_in_a_sorted_tree_and_in_one_out_of_order() {
        let sorted = vec![
            Entry::bare("a", EntryKind::Dir),
            Entry::bare("a-b", EntryKind::File),
            Entry::bare("a/x", EntryKind::File),
        ];
        let mut shuffled = sorted.clone();
        shuffled.swap(0, 2);
        for tree in [&sorted, &shuffled] {
            let k = Kinds::of(tree);
            assert_eq!(matches!(k, Kinds::Sorted(_)), std::ptr::eq(tree, &sorted));
            assert_eq!(k.get(b"a"), Some(EntryKind::Dir));
            assert_eq!(k.get(b"a/x"), Some(EntryKind::File));
            assert_eq!(k.get(b"a/y"), None);
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"a/../../x",
            b"a//b",
            b"./a",
            b"a/.",
            b"",
            b"a\0b",
            b"a/",
        ] {
            assert!(
                safe_components(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(safe_components(b"a/b.c/..d").unwrap().len(), 3);
    }
}
