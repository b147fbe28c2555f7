//! What restore may and may not touch in its target folder.
//!
//! Promises:
//! - The repository being read is never written, replaced or deleted, even when it lies inside
//!   the target: its path and everything below it are left alone, and a snapshot entry that
//!   would replace it (or a folder above it) is a per-item failure.
//! - A folder that is in the way of a file, symlink or hard link is replaced only when it is
//!   empty or `--delete` was given (then it is removed and counted); otherwise the entry fails,
//!   as GNU tar does.
//! - `--delete` removes only what the snapshot lacks, within the `--include` scopes, and
//!   `--dry-run` lists exactly what it would remove.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::engine::fsx;
use crate::engine::paths::{above, split_parent, trim_slashes, within};
use crate::engine::problem::Problem;
use crate::engine::restore::RestoreOptions;
use crate::error::{Error, Result};
use crate::text::display_path;
use crate::tree::{Entry, EntryKind};

/// Where the repository lies inside an existing target (relative path), if it does. A target
/// that is the repository, or inside it, is refused.
pub fn repository_inside(repo: &Path, target: &Path) -> Result<Option<Vec<u8>>> {
    let (repo, target) = (fsx::resolve_path(repo), fsx::resolve_path(target));
    if target.starts_with(&repo) {
        return Err(Error::Refused(format!(
            "target {} is inside the repository {} being restored from; choose another folder",
            target.display(),
            repo.display()
        )));
    }
    Ok(repo
        .strip_prefix(&target)
        .ok()
        .map(|rel| rel.as_os_str().as_bytes().to_vec()))
}

/// Takes out of `tree` every entry that would write into the repository at `repo` (a path
/// relative to the target) or replace a folder above it, as per-item failures.
pub fn spare_repository(tree: &mut Vec<Entry>, repo: &[u8], errors: &mut Vec<Problem>) {
    tree.retain(|e| {
        let why = if within(&e.path, repo) {
            "lies where the repository being restored from is; not restored"
        } else if above(&e.path, repo) && e.kind != EntryKind::Dir {
            "would replace the folder holding the repository being restored from; not restored"
        } else {
            return true;
        };
        errors.push(Problem::failed(e.path.clone(), why));
        false
    });
}

/// Finds folders in the target that stand where the snapshot has a file, symlink or hard
/// link. Without `delete` each such entry fails (and leaves `tree`); with it the folder is
/// removed (unless `dry_run`) and listed in `removed`.
pub fn clear_folders_in_the_way(
    root: RawFd,
    tree: &mut Vec<Entry>,
    delete: bool,
    dry_run: bool,
    removed: &mut Vec<Vec<u8>>,
    errors: &mut Vec<Problem>,
) -> Result<()> {
    let mut failed: Vec<Vec<u8>> = Vec::new();
    // Entries come in path order: the folder opened for one serves its siblings.
    let mut last: Option<(&[u8], Option<std::os::fd::OwnedFd>)> = None;
    for e in tree.iter().filter(|e| e.kind != EntryKind::Dir) {
        let (parent, name) = split_parent(&e.path);
        if !matches!(&last, Some((p, _)) if *p == parent) {
            last = Some((
                parent,
                fsx::open_path(root, &crate::engine::paths::components(parent)).ok(),
            ));
        }
        // A parent that is missing or not a folder holds nothing in the way yet.
        let Some((_, Some(dir))) = &last else {
            continue;
        };
        let Ok(Some(st)) = fsx::lstat_at(dir.as_raw_fd(), name) else {
            continue;
        };
        if !fsx::is_dir(&st) || is_empty_dir(dir.as_raw_fd(), name) {
            continue;
        }
        if !delete {
            errors.push(Problem::failed(
                e.path.clone(),
                "a non-empty folder is in the way; not replaced (restore with --delete to replace it)",
            ));
            failed.push(e.path.clone());
            continue;
        }
        if !dry_run {
            fsx::remove_tree_at(dir.as_raw_fd(), name).map_err(|err| {
                Error::Refused(format!(
                    "--delete: cannot remove folder {}: {err}",
                    display_path(&e.path)
                ))
            })?;
        }
        removed.push(e.path.clone());
    }
    if !failed.is_empty() {
        let failed: std::collections::HashSet<Vec<u8>> = failed.into_iter().collect();
        tree.retain(|e| !failed.contains(&e.path));
    }
    Ok(())
}

fn is_dir_at(dir: RawFd, name: &[u8]) -> bool {
    matches!(fsx::lstat_at(dir, name), Ok(Some(st)) if fsx::is_dir(&st))
}

fn is_empty_dir(dir: RawFd, name: &[u8]) -> bool {
    fsx::open_dir_at(dir, name)
        .and_then(|d| fsx::list_dir(d.as_raw_fd()))
        .map(|l| l.is_empty())
        .unwrap_or(false)
}

/// What `--delete` works with: the snapshot's kinds by path, the `--include` scopes (one empty
/// scope: everything) and the repository to spare.
#[derive(Debug)]
pub struct DeleteScope<'a> {
    pub keep: HashMap<&'a [u8], EntryKind>,
    pub scopes: Vec<Vec<u8>>,
    pub repo: Option<Vec<u8>>,
    pub dry_run: bool,
}

/// Removes (or, in a dry run, lists) what the snapshot lacks below `prefix`; the paths go to
/// `removed`. An error names the path it concerns.
pub fn delete_extra(
    root: RawFd,
    prefix: Vec<u8>,
    scope: &DeleteScope<'_>,
    removed: &mut Vec<Vec<u8>>,
) -> std::result::Result<(), (Vec<u8>, io::Error)> {
    let fd = fsx::open_path(root, &crate::engine::paths::components(&prefix))
        .map_err(|e| (prefix.clone(), e))?;
    let mut names = fsx::list_dir(fd.as_raw_fd()).map_err(|e| (prefix.clone(), e))?;
    names.sort();
    for name in names {
        let rel = crate::engine::paths::join(&prefix, &name);
        let repo = scope.repo.as_deref();
        if repo.is_some_and(|r| within(&rel, r)) {
            continue;
        }
        let in_scope = scope.scopes.iter().any(|s| within(&rel, s));
        let above_scope = scope.scopes.iter().any(|s| above(&rel, s));
        let holds_repo = repo.is_some_and(|r| above(&rel, r));
        match scope.keep.get(rel.as_slice()) {
            None if in_scope && !holds_repo => {
                if !scope.dry_run {
                    fsx::remove_tree_at(fd.as_raw_fd(), &name).map_err(|e| (rel.clone(), e))?;
                }
                removed.push(rel);
            }
            Some(EntryKind::Dir)
                if (in_scope || above_scope) && is_dir_at(fd.as_raw_fd(), &name) =>
            {
                delete_extra(root, rel, scope, removed)?;
            }
            None if holds_repo && is_dir_at(fd.as_raw_fd(), &name) => {
                delete_extra(root, rel, scope, removed)?
            }
            _ => {}
        }
    }
    Ok(())
}

/// What `--delete` keeps: the snapshot's paths, outside the `--include` scopes everything.
pub(super) fn delete_scope<'a>(
    opts: &RestoreOptions,
    tree: &'a [Entry],
    repo: Option<Vec<u8>>,
    dry_run: bool,
) -> DeleteScope<'a> {
    DeleteScope {
        keep: tree.iter().map(|e| (e.path.as_slice(), e.kind)).collect(),
        scopes: if opts.include.is_empty() {
            vec![Vec::new()]
        } else {
            opts.include
                .iter()
                .map(|s| trim_slashes(s).to_vec())
                .collect()
        },
        repo,
        dry_run,
    }
}

pub(super) fn delete_failed(opts: &RestoreOptions, (path, e): (Vec<u8>, io::Error)) -> Error {
    Error::Refused(format!(
        "--delete: cannot remove or list {} in {}: {e}",
        if path.is_empty() {
            ".".to_string()
        } else {
            display_path(&path)
        },
        opts.target.display()
    ))
}
