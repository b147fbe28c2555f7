//! A path's history across snapshots, read from the versioned tree alone (no archive is
//! opened): `vault log PATH` lists one path's changes, newest first; `vault find PATTERN`
//! lists every snapshot holding a matching path, unchanged runs collapsed into one match.

use std::path::Path;

use crate::engine::query::{json_name, one_source, rfc3339_ns, source_id};
use crate::engine::repo::Repository;
use crate::error::{Error, Result};
use crate::manifest::{SnapshotRow, Version};
use crate::text::display_path;
use crate::tree::Entry;

/// What happened to a path in one snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    pub fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Modified => "modified",
            Change::Deleted => "deleted",
        }
    }
}

/// One change of `vault log`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogVersion {
    pub snapshot: String,
    pub time: String,
    #[serde(skip)]
    pub time_ns: i64,
    pub change: Change,
    /// For `modified`: what changed (content, mode, owner, mtime, xattrs, type, rdev, sparse).
    pub what: Vec<&'static str>,
    /// The version from this snapshot on (None for `deleted`).
    #[serde(rename = "type")]
    pub kind: Option<&'static str>,
    pub size: Option<u64>,
    pub digest: Option<String>,
    pub mtime: Option<String>,
}

/// `vault log --json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogReport {
    pub path: String,
    pub source: String,
    /// Newest first.
    pub versions: Vec<LogVersion>,
}

/// The changes of one path in one source's snapshots, newest first: its first appearance,
/// every snapshot in which something a user sees changed, and every deletion. A path that
/// no snapshot holds is a usage error.
pub fn log(repo: &Repository, source: Option<&Path>, path: &Path) -> Result<LogReport> {
    let (sid, src_path) = source_of(repo, source, path)?;
    let rel = relative_path(&src_path, path)?;
    let versions = repo.manifest.path_versions(sid, &rel)?;
    let snaps = repo.manifest.snapshots(Some(sid))?;
    let mut out = Vec::new();
    let mut prev: Option<usize> = None;
    // Both lists are in seq order: the version a snapshot holds only moves forward.
    let mut next = 0;
    for s in &snaps {
        while next < versions.len() && versions[next].to_seq.is_some_and(|t| t <= s.seq) {
            next += 1;
        }
        let cur = (next < versions.len() && versions[next].holds(s.seq)).then_some(next);
        let change = match (prev, cur) {
            (None, Some(c)) => Some((Change::Added, Vec::new(), c)),
            (Some(p), None) => Some((Change::Deleted, Vec::new(), p)),
            (Some(p), Some(c)) if p != c => {
                let what = versions[c].entry.changes_from(&versions[p].entry);
                (!what.is_empty()).then_some((Change::Modified, what, c))
            }
            _ => None,
        };
        if let Some((change, what, i)) = change {
            let e = (change != Change::Deleted).then_some(&versions[i].entry);
            out.push(log_version(s, change, what, e));
        }
        prev = cur;
    }
    if out.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no snapshot of {} holds it",
            display_path(&rel),
            display_path(&src_path)
        )));
    }
    out.reverse();
    Ok(LogReport {
        path: json_name(&rel).0,
        source: display_path(&src_path),
        versions: out,
    })
}

fn log_version(
    s: &SnapshotRow,
    change: Change,
    what: Vec<&'static str>,
    e: Option<&Entry>,
) -> LogVersion {
    LogVersion {
        snapshot: s.id.clone(),
        time: crate::time::rfc3339(s.time_ns),
        time_ns: s.time_ns,
        change,
        what,
        kind: e.map(|e| e.kind.name()),
        size: e.map(|e| e.size),
        digest: e.and_then(|e| e.digest.map(|d| d.to_hex())),
        mtime: e.map(|e| rfc3339_ns(e.mtime_ns)),
    }
}

/// The source a path belongs to: `--source` when given; else, for an absolute path, the
/// source folder holding it (the deepest); else the only source. Returns its id and path.
pub(crate) fn source_of(
    repo: &Repository,
    source: Option<&Path>,
    path: &Path,
) -> Result<(i64, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let sources = repo.manifest.sources()?;
    let sid = match source {
        Some(s) => source_id(repo, s)?,
        None => {
            let p = path.as_os_str().as_bytes();
            let holding = sources
                .iter()
                .filter(|(_, sp)| p.starts_with(b"/") && within(p, sp))
                .max_by_key(|(_, sp)| sp.len());
            match holding {
                Some((id, _)) => *id,
                None => one_source(repo, None, &path.display().to_string())?,
            }
        }
    };
    let sp = sources.into_iter().find(|(id, _)| *id == sid);
    Ok((sid, sp.map(|(_, p)| p).unwrap_or_default()))
}

/// True when absolute path `p` is folder `dir` or lies below it (`dir` may end in `/`, as the
/// source `/` does).
fn within(p: &[u8], dir: &[u8]) -> bool {
    crate::engine::paths::within(p, dir.strip_suffix(b"/").unwrap_or(dir))
}

/// A path as the manifest records it, relative to the source folder: an absolute path must lie
/// inside the source and loses the source's part; leading `./` and doubled or trailing `/`
/// go. Empty paths, `..` and absolute paths elsewhere are refused.
pub(crate) fn relative_path(source: &[u8], path: &Path) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = path.as_os_str().as_bytes();
    let mut rest = match p.starts_with(b"/") {
        true if within(p, source) => &p[source.strip_suffix(b"/").unwrap_or(source).len()..],
        true => {
            return Err(Error::Usage(format!(
                "{}: not inside the source {}",
                path.display(),
                display_path(source)
            )))
        }
        false => p,
    };
    let parts: Vec<&[u8]> = {
        while let Some(r) = rest.strip_prefix(b"./") {
            rest = r;
        }
        rest.split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect()
    };
    if parts.is_empty() || parts.iter().any(|c| *c == b"..") {
        return Err(Error::Usage(format!(
            "{}: not a path inside the source {}",
            path.display(),
            display_path(source)
        )));
    }
    Ok(parts.join(&b'/'))
}

/// The snapshots of a source that hold a version, as a range of `snaps` (sorted by seq).
pub(crate) fn holding(snaps: &[SnapshotRow], v: &Version) -> std::ops::Range<usize> {
    let start = snaps.partition_point(|s| s.seq < v.from_seq);
    let end = match v.to_seq {
        Some(t) => snaps.partition_point(|s| s.seq < t),
        None => snaps.len(),
    };
    start..end.max(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_relative_to_the_source() {
        let rel = |s: &[u8], p: &str| relative_path(s, Path::new(p)).ok();
        assert_eq!(
            rel(b"/etc", "/etc/nginx/nginx.conf"),
            Some(b"nginx/nginx.conf".to_vec())
        );
        assert_eq!(rel(b"/", "/etc/fstab"), Some(b"etc/fstab".to_vec()));
        assert_eq!(rel(b"/srv/data", "./a//b/"), Some(b"a/b".to_vec()));
        assert_eq!(rel(b"/srv/data", "/srv/data/a//b"), Some(b"a/b".to_vec()));
        assert_eq!(rel(b"/srv/data", "/a/b"), None);
        assert_eq!(rel(b"/srv/data", "/srv/database/x"), None);
        assert_eq!(rel(b"/srv/data", "/srv/data"), None);
        assert_eq!(rel(b"/srv/data", "a/../../b"), None);
        assert_eq!(rel(b"/srv/data", ""), None);
    }
}
