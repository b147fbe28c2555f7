//! `vault cat SNAP PATH`: one file's content as a snapshot holds it, streamed from the archive
//! that stores it to a writer (a sparse file's holes as zeros) and checked against the
//! manifest's digest at the end. Memory stays a few buffers whatever the file's size.
//!
//! The bytes are written as they are read, so a damaged content is noticed only after most of
//! it went out: the caller then gets an error naming the archive (`vault cat` exits 1), and
//! what was written must be thrown away, as with `gzip -dc`.

use std::io::{self, Read, Write};
use std::path::Path;

use crate::archive::reader::{self, Flow, Member, MemberKind, ReadError};
use crate::engine::history::{relative_path, source_of};
use crate::engine::repo::Repository;
use crate::error::{Error, Result};
use crate::hash::{Digest, Hasher};
use crate::manifest::{ManifestError, SnapshotRow};
use crate::text::display_path;
use crate::tree::{Entry, EntryKind};

const BUF: usize = 256 * 1024;

/// What [`cat`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CatReport {
    pub snapshot: String,
    pub path: String,
    pub size: u64,
    pub digest: Option<String>,
    /// The archive read (None for an empty file).
    pub archive: Option<String>,
}

/// Why a copy stopped: the archive (a member that cannot be read, or not the content the
/// manifest recorded) or the writer.
enum Fail {
    Read(io::Error),
    Size { got: u64, want: u64 },
    Digest { got: Digest, want: Digest },
    Write(io::Error),
}

/// Writes the content of file `path` (inside the source, or absolute under it) of `snap` to
/// `out`. Not a file, or not in the snapshot: a usage error. A missing or damaged archive, or
/// a content whose digest differs: [`Error::ArchiveRead`], naming the archive. A failed write:
/// [`Error::Output`].
pub fn cat(
    repo: &Repository,
    snap: &SnapshotRow,
    path: &Path,
    out: &mut dyn Write,
) -> Result<CatReport> {
    let rel = relative_path(&snap.source_path, path)?;
    let e = file_entry(repo, snap, &rel)?;
    let mut report = CatReport {
        snapshot: snap.id.clone(),
        path: display_path(&rel),
        size: e.size,
        digest: e.digest.map(|d| d.to_hex()),
        archive: None,
    };
    if e.size == 0 {
        return Ok(report);
    }
    let damaged = |what: String| ManifestError::Damaged {
        path: repo.manifest.path().to_path_buf(),
        what,
    };
    let digest = e
        .digest
        .ok_or_else(|| damaged(format!("{} has no digest", report.path)))?;
    let loc = repo
        .manifest
        .blob(snap.chain_seq, &digest)?
        .ok_or_else(|| {
            damaged(format!(
                "content {digest} of {} is not stored in its chain",
                report.path
            ))
        })?;
    let holder = repo.manifest.snapshots(Some(snap.source_id))?;
    let archive = holder
        .iter()
        .find(|s| s.seq == loc.snap_seq)
        .and_then(|s| s.archive.clone())
        .ok_or_else(|| {
            damaged(format!(
                "the archive holding {} is not recorded",
                report.path
            ))
        })?;
    let apath = repo.archive_path(&archive);
    stream_member(&apath, &loc.member, &e, digest, out)?;
    report.archive = Some(Repository::archive_name(&archive));
    Ok(report)
}

/// The snapshot `vault cat SNAP PATH` means: as [`crate::engine::query::resolve`], except that
/// `latest` without `--source` is the newest snapshot of the source folder holding an absolute
/// PATH.
pub fn resolve(
    repo: &Repository,
    snap: &str,
    source: Option<&Path>,
    path: &Path,
) -> Result<SnapshotRow> {
    if snap == "latest" && source.is_none() && path.is_absolute() {
        let (sid, _) = source_of(repo, None, path)?;
        let newest = repo.manifest.latest(sid)?;
        return newest.ok_or_else(|| Error::NoSuchSnapshot("latest".into()));
    }
    crate::engine::query::resolve(repo, snap, source)
}

/// The snapshot's entry for `rel`, which must be a file.
fn file_entry(repo: &Repository, snap: &SnapshotRow, rel: &[u8]) -> Result<Entry> {
    let shown = display_path(rel);
    let e = repo
        .manifest
        .entry_at(snap, rel)?
        .ok_or_else(|| Error::Usage(format!("{shown}: no such path in snapshot {}", snap.id)))?;
    match e.kind {
        EntryKind::File => Ok(e),
        EntryKind::Symlink => Err(Error::Usage(format!(
            "{shown} is a symlink to {} in snapshot {}",
            e.target.as_deref().map(display_path).unwrap_or_default(),
            snap.id
        ))),
        k => Err(Error::Usage(format!(
            "{shown} is a {} in snapshot {}, not a file",
            k.name(),
            snap.id
        ))),
    }
}

/// Finds `member` in the archive and copies it out.
fn stream_member(
    apath: &Path,
    member: &[u8],
    e: &Entry,
    digest: Digest,
    out: &mut dyn Write,
) -> Result<()> {
    let mut found = false;
    let r = reader::for_each_member(apath, reader::compression_of(apath), |m| {
        if m.name != member || m.kind != MemberKind::Regular {
            return Ok(Flow::Continue);
        }
        found = true;
        copy_member(m, e, digest, out)?;
        Ok(Flow::Stop)
    });
    let (path, member) = (apath.to_path_buf(), display_path(member));
    let e = match r {
        Ok(()) if found => return Ok(()),
        Ok(()) => ReadError::NoMember { path, member },
        Err(Ok(Fail::Write(e))) => return Err(Error::Output(e)),
        Err(Ok(Fail::Read(source))) => ReadError::Damaged { path, source },
        Err(Ok(Fail::Size { got, want })) => ReadError::SizeMismatch {
            path,
            member,
            got,
            want,
        },
        Err(Ok(Fail::Digest { got, want })) => ReadError::DigestMismatch {
            path,
            member,
            got,
            want,
        },
        Err(Err(e)) => e,
    };
    Err(e.into())
}

/// Copies one member's content (holes of a sparse one as zeros) and checks size and digest.
fn copy_member(m: Member<'_>, e: &Entry, digest: Digest, out: &mut dyn Write) -> Result<(), Fail> {
    let want = e.size;
    if m.size != want {
        return Err(Fail::Size { got: m.size, want });
    }
    let mut h = digest.algo().hasher();
    if m.sparse {
        let map =
            crate::sparse::Map::read_block(m.data, &mut |b| h.update(b)).map_err(Fail::Read)?;
        if map.real_size() != want {
            return Err(Fail::Size {
                got: map.real_size(),
                want,
            });
        }
        let mut pos = 0;
        for &(off, len) in &map.0 {
            zeros(out, off - pos)?;
            copy_hashed(m.data, len, out, &mut h)?;
            pos = off + len;
        }
    } else {
        copy_hashed(m.data, e.size, out, &mut h)?;
    }
    match h.finish() {
        got if got == digest => Ok(()),
        got => Err(Fail::Digest { got, want: digest }),
    }
}

/// Copies exactly `n` bytes of `data` to `out`, hashing them.
fn copy_hashed(
    data: &mut dyn Read,
    n: u64,
    out: &mut dyn Write,
    h: &mut Hasher,
) -> Result<(), Fail> {
    let mut buf = vec![0u8; BUF];
    let mut left = n;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let k = match data.read(&mut buf[..want]) {
            Ok(0) => return Err(Fail::Read(io::ErrorKind::UnexpectedEof.into())),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Fail::Read(e)),
        };
        h.update(&buf[..k]);
        out.write_all(&buf[..k]).map_err(Fail::Write)?;
        left -= k as u64;
    }
    Ok(())
}

/// Writes `n` zero bytes (a hole).
fn zeros(out: &mut dyn Write, n: u64) -> Result<(), Fail> {
    let buf = [0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        out.write_all(&buf[..k]).map_err(Fail::Write)?;
        left -= k as u64;
    }
    Ok(())
}
