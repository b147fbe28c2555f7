//! Read-only questions about a repository: `snapshots`, `ls`, `diff`, and resolving the
//! `SNAP` argument (an id, a unique id prefix, or `latest`). Readers take no lock.

use std::path::Path;

use crate::engine::repo::Repository;
use crate::error::{Error, Result};
use crate::manifest::SnapshotRow;
use crate::text::display_path;
use crate::tree::{Entry, EntryKind};

/// One line of `vault snapshots --json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub time: String,
    /// `time` in nanoseconds since the epoch.
    #[serde(skip)]
    pub time_ns: i64,
    pub source: String,
    pub kind: &'static str,
    pub parent: Option<String>,
    pub archive: Option<String>,
    pub files: u64,
    pub bytes_stored: u64,
    /// The full that starts this snapshot's chain.
    pub chain: String,
    pub hash: &'static str,
    pub compression: String,
    pub new: u64,
    pub changed: u64,
    pub deleted: u64,
    pub bytes_read: u64,
    pub warnings: u64,
}

impl SnapshotInfo {
    fn from_row(r: &SnapshotRow, chain_id: String) -> SnapshotInfo {
        SnapshotInfo {
            id: r.id.clone(),
            time: crate::time::rfc3339(r.time_ns),
            time_ns: r.time_ns,
            source: display_path(&r.source_path),
            kind: r.kind.name(),
            parent: r.parent_id.clone(),
            archive: r.archive.as_ref().map(|a| format!("archives/{a}")),
            files: r.stats.files,
            bytes_stored: r.archive_size.unwrap_or(0),
            chain: chain_id,
            hash: r.hash.name(),
            compression: r.compression.clone(),
            new: r.stats.new,
            changed: r.stats.changed,
            deleted: r.stats.deleted,
            bytes_read: r.stats.bytes_read,
            warnings: r.stats.warnings,
        }
    }
}

/// Every snapshot, oldest first; only those of `source` when given.
pub fn snapshots(repo: &Repository, source: Option<&Path>) -> Result<Vec<SnapshotInfo>> {
    let source_id = match source {
        Some(s) => Some(source_id(repo, s)?),
        None => None,
    };
    let rows = repo.manifest.snapshots(source_id)?;
    let all = if source_id.is_some() {
        repo.manifest.snapshots(None)?
    } else {
        rows.clone()
    };
    let id_of = |seq: i64| {
        all.iter()
            .find(|r| r.seq == seq)
            .map(|r| r.id.clone())
            .unwrap_or_default()
    };
    Ok(rows
        .iter()
        .map(|r| SnapshotInfo::from_row(r, id_of(r.chain_seq)))
        .collect())
}

/// The source `--source` names: a folder (resolved), or a source key as `snapshots` shows it
/// (`stdin:NAME`), or the NAME of a `--stdin` source.
pub(crate) fn source_id(repo: &Repository, source: &Path) -> Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let abs = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let given = source.as_os_str().as_bytes();
    let candidates = [
        abs.as_os_str().as_bytes().to_vec(),
        given.to_vec(),
        [&b"stdin:"[..], given].concat(),
    ];
    for key in &candidates {
        if let Some(id) = repo.manifest.source_id(key)? {
            return Ok(id);
        }
    }
    Err(Error::Usage(format!(
        "no snapshots of source {}",
        abs.display()
    )))
}

/// The source a command means: the one given, or the only one the repository holds.
pub(crate) fn one_source(repo: &Repository, source: Option<&Path>, what: &str) -> Result<i64> {
    if let Some(s) = source {
        return source_id(repo, s);
    }
    let sources = repo.manifest.sources()?;
    match sources.as_slice() {
        [] => Err(Error::NoSuchSnapshot(format!(
            "{what} (the repository is empty)"
        ))),
        [(id, _)] => Ok(*id),
        many => {
            let names: Vec<String> = many.iter().map(|(_, p)| display_path(p)).collect();
            Err(Error::Usage(format!(
                "'{what}' is ambiguous: the repository holds several sources ({}); add --source",
                names.join(", ")
            )))
        }
    }
}

/// The newest snapshot taken at or before `at_ns`. A time given in whole seconds (as
/// `snapshots` prints them) covers that whole second.
pub fn resolve_at(repo: &Repository, at_ns: i64, source: Option<&Path>) -> Result<SnapshotRow> {
    let sid = one_source(repo, source, "--at")?;
    let limit = covering_second(at_ns);
    repo.manifest
        .snapshots(Some(sid))?
        .into_iter()
        .rev()
        .find(|s| s.time_ns <= limit)
        .ok_or_else(|| {
            Error::NoSuchSnapshot(format!("at or before {}", crate::time::rfc3339(at_ns)))
        })
}

/// The last instant a time limit covers: a time in whole seconds (as snapshot times are
/// printed) covers that whole second.
pub(crate) fn covering_second(ns: i64) -> i64 {
    if ns % 1_000_000_000 == 0 {
        ns.saturating_add(999_999_999)
    } else {
        ns
    }
}

/// Resolves `SNAP`: an id, a unique id prefix, or `latest` (of `source` when the repository
/// holds several sources).
pub fn resolve(repo: &Repository, snap: &str, source: Option<&Path>) -> Result<SnapshotRow> {
    if snap == "latest" {
        let sid = match source {
            Some(s) => source_id(repo, s)?,
            None => {
                let sources = repo.manifest.sources()?;
                match sources.as_slice() {
                    [] => {
                        return Err(Error::NoSuchSnapshot(
                            "latest (the repository is empty)".into(),
                        ))
                    }
                    [(id, _)] => *id,
                    many => {
                        let names: Vec<String> =
                            many.iter().map(|(_, p)| display_path(p)).collect();
                        return Err(Error::Usage(format!(
                            "'latest' is ambiguous: the repository holds several sources ({}); add --source",
                            names.join(", ")
                        )));
                    }
                }
            }
        };
        return repo
            .manifest
            .latest(sid)?
            .ok_or_else(|| Error::NoSuchSnapshot("latest".into()));
    }
    if snap.is_empty() || !snap.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::NoSuchSnapshot(snap.to_string()));
    }
    let mut found = repo
        .manifest
        .snapshots_by_prefix(&snap.to_ascii_lowercase())?;
    match found.len() {
        0 => Err(Error::NoSuchSnapshot(snap.to_string())),
        1 => Ok(found.remove(0)),
        _ => Err(Error::AmbiguousSnapshot {
            prefix: snap.to_string(),
            candidates: found
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// One line of `vault ls --json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LsEntry {
    /// The exact name when it is UTF-8 (JSON escapes what needs escaping); otherwise the
    /// escaped display form, with the exact bytes in `path_bytes`.
    pub path: String,
    /// Base64 of the name's bytes, only when the name is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<String>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    /// Octal permission bits, e.g. "0644".
    pub mode: String,
    /// RFC 3339 with nanoseconds.
    pub mtime: String,
    pub mtime_ns: i64,
    pub uid: u32,
    pub gid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Base64 of the link target's bytes, only when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_bytes: Option<String>,
    /// Devices: "MAJOR,MINOR".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdev: Option<String>,
    /// Extended attributes (ACLs and capabilities included): name → base64 of the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xattrs: Option<std::collections::BTreeMap<String, String>>,
    /// Stored sparse (holes kept as holes).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
}

/// A name for JSON: exact when UTF-8, else the display form plus base64 of the bytes.
pub(crate) fn json_name(p: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(p) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (display_path(p), Some(crate::hash::base64(p, true))),
    }
}

pub(crate) fn rfc3339_ns(ns: i64) -> String {
    let base = crate::time::rfc3339(ns);
    let frac = ns.rem_euclid(1_000_000_000);
    if frac == 0 {
        base
    } else {
        format!("{}.{:09}Z", base.trim_end_matches('Z'), frac)
    }
}

impl From<&Entry> for LsEntry {
    fn from(e: &Entry) -> LsEntry {
        let (path, path_bytes) = json_name(&e.path);
        let (target, target_bytes) = match e.target.as_deref().map(json_name) {
            Some((t, b)) => (Some(t), b),
            None => (None, None),
        };
        LsEntry {
            path,
            path_bytes,
            kind: e.kind.name(),
            size: e.size,
            mode: format!("{:04o}", e.mode),
            mtime: rfc3339_ns(e.mtime_ns),
            mtime_ns: e.mtime_ns,
            uid: e.uid,
            gid: e.gid,
            digest: e.digest.map(|d| d.to_hex()),
            target,
            target_bytes,
            rdev: matches!(e.kind, EntryKind::CharDevice | EntryKind::BlockDevice)
                .then(|| format!("{},{}", libc::major(e.rdev), libc::minor(e.rdev))),
            xattrs: e.xattrs.as_ref().map(|x| {
                x.0.iter()
                    .map(|(n, v)| {
                        let name = String::from_utf8_lossy(n).into_owned();
                        (name, crate::hash::base64(v, true))
                    })
                    .collect()
            }),
            sparse: e.sparse,
        }
    }
}

/// The tree of a snapshot.
pub fn ls(repo: &Repository, snap: &SnapshotRow) -> Result<Vec<Entry>> {
    Ok(repo.manifest.snapshot_entries(snap)?)
}

/// A modified path and what changed about it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Modification {
    pub path: String,
    pub what: Vec<&'static str>,
}

/// `vault diff --json`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DiffReport {
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
    /// `modified` with what changed for each path (content, type, mode, owner, mtime).
    pub changes: Vec<Modification>,
}

/// Compares two snapshots' trees.
pub fn diff(repo: &Repository, a: &SnapshotRow, b: &SnapshotRow) -> Result<DiffReport> {
    let ta = repo.manifest.snapshot_entries(a)?;
    let tb = repo.manifest.snapshot_entries(b)?;
    Ok(diff_trees(&ta, &tb))
}

/// Compares two trees sorted in path byte order.
pub fn diff_trees(ta: &[Entry], tb: &[Entry]) -> DiffReport {
    let mut out = DiffReport::default();
    let (mut i, mut j) = (0, 0);
    while i < ta.len() || j < tb.len() {
        match (ta.get(i), tb.get(j)) {
            (Some(x), Some(y)) if x.path == y.path => {
                let what = y.changes_from(x);
                if !what.is_empty() {
                    out.modified.push(display_path(&y.path));
                    out.changes.push(Modification {
                        path: display_path(&y.path),
                        what,
                    });
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.path < y.path => {
                out.deleted.push(display_path(&x.path));
                i += 1;
            }
            (Some(_), Some(y)) => {
                out.added.push(display_path(&y.path));
                j += 1;
            }
            (Some(x), None) => {
                out.deleted.push(display_path(&x.path));
                i += 1;
            }
            (None, Some(y)) => {
                out.added.push(display_path(&y.path));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// A short type letter for human listings.
pub fn type_char(k: EntryKind) -> char {
    match k {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Fifo => 'p',
        EntryKind::CharDevice => 'c',
        EntryKind::BlockDevice => 'b',
    }
}
