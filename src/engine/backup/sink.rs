//! The one thread that owns the archive: it takes the workers' results in archive order, adds
//! each entry to the tar stream (streaming large files itself), stores each content once per
//! chain (later copies become hard links in a full, nothing in an incremental) and notes what
//! became of every item.

use std::collections::HashSet;
use std::path::PathBuf;

use super::outcome::{Fate, Outcomes};
use super::read::{sparse_map, Content};
use super::stored::Stored;
use crate::archive::{ArchiveWriter, Compression, MemberMeta};
use crate::engine::paths;
use crate::engine::plan::{self, Plan};
use crate::engine::problem::Problem;
use crate::error::Result;
use crate::hash::{Digest, HashAlgo};
use crate::manifest::Manifest;
use crate::pool::Pool;
use crate::progress::Progress;
use crate::tree::{Entry, EntryKind};

pub(super) fn meta_of(e: &Entry) -> MemberMeta<'_> {
    MemberMeta {
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime_ns: e.mtime_ns,
        xattrs: e.xattrs.as_deref(),
    }
}

/// The contents a chain already stores.
pub(super) enum ChainDigests<'r> {
    Loaded(HashSet<Digest>),
    /// The manifest and the chain's seq: looked up per digest.
    Lookup(&'r Manifest, i64),
}

impl ChainDigests<'_> {
    pub(super) fn contains(&self, d: &Digest) -> Result<bool> {
        match self {
            ChainDigests::Loaded(set) => Ok(set.contains(d)),
            ChainDigests::Lookup(m, chain_seq) => Ok(m.chain_has(*chain_seq, d)?),
        }
    }
}

/// Where and how the archive is written (it is created with the first entry it needs).
pub(super) struct ArchiveSpec<'a> {
    pub path: PathBuf,
    pub compression: Compression,
    pub level: i32,
    pub pool: &'a Pool,
}

/// What the sink has done so far.
pub(super) struct Sink<'a> {
    pub plan: &'a Plan,
    /// The source folder and the archive's top folder name.
    pub origin: super::origin::Origin<'a>,
    pub top: &'a [u8],
    pub algo: HashAlgo,
    pub spec: ArchiveSpec<'a>,
    pub progress: &'a dyn Progress,
    /// Contents already stored in the chain (an incremental stores them again never).
    pub chain_digests: ChainDigests<'a>,
    pub writer: Option<ArchiveWriter>,
    /// Contents stored in this archive, each with the item that is its member.
    pub stored: Stored,
    /// By plan index: what became of the item.
    pub outcomes: Outcomes,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
}

/// The digest a stored item ended with (its outcome's).
pub(super) fn stored_digest(outcomes: &Outcomes, item: usize) -> Digest {
    match outcomes.get(item) {
        Some(Fate::Digest(d, _)) => d,
        Some(Fate::Fresh(e)) => e.digest.expect("a stored file has its digest"),
        _ => unreachable!("a stored file has an outcome with its digest"),
    }
}

/// The size a stored item ended with.
pub(super) fn stored_size(plan: &Plan, outcomes: &Outcomes, item: usize) -> u64 {
    match outcomes.get(item) {
        Some(Fate::Fresh(e)) => e.size,
        _ => plan.items[item].entry.size,
    }
}

/// A file's content as the sink gets it: what is known before it is stored.
struct Incoming {
    fresh: Entry,
    digest: Option<Digest>,
    changed: bool,
    inline: Option<Vec<u8>>,
}

impl Sink<'_> {
    fn writer(&mut self) -> Result<&mut ArchiveWriter> {
        if self.writer.is_none() {
            let s = &self.spec;
            self.writer = Some(ArchiveWriter::create(
                &s.path,
                s.compression,
                s.level,
                s.pool,
            )?);
        }
        Ok(self.writer.as_mut().expect("just created"))
    }

    fn failed(&mut self, idx: usize, why: impl ToString) {
        let path = self.plan.items[idx].entry.path.clone();
        self.problems.push(Problem::failed(path, why));
        self.outcomes.set_failed(idx);
    }

    /// Takes one item's read result.
    pub(super) fn take(&mut self, idx: usize, content: Content) -> Result<()> {
        let it: &plan::Item = &self.plan.items[idx];
        let member = paths::member(self.top, &it.entry.path);
        match (it.entry.kind, content) {
            (EntryKind::Dir, _) => {
                if let Some(w) = self.writer.as_mut() {
                    w.add_dir(&member, &meta_of(&it.entry))?;
                }
            }
            (EntryKind::Symlink, _) => {
                if let Some(w) = self.writer.as_mut() {
                    let t = it.entry.target.as_deref().unwrap_or_default();
                    w.add_symlink(&member, t, &meta_of(&it.entry))?;
                }
            }
            (k @ (EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice), _) => {
                if let Some(w) = self.writer.as_mut() {
                    w.add_special(&member, k, it.entry.rdev, &meta_of(&it.entry))?;
                }
            }
            (EntryKind::File, Content::Skip) => {}
            (EntryKind::File, Content::Failed(err)) => self.failed(idx, err),
            (EntryKind::File, content) => self.file(idx, member, content)?,
        }
        Ok(())
    }

    fn file(&mut self, idx: usize, member: Vec<u8>, content: Content) -> Result<()> {
        let mut inc = match content {
            Content::Inline {
                fresh,
                data,
                digest,
                changed,
            } => {
                self.bytes_read += data.len() as u64;
                self.progress.advance(data.len() as u64);
                Incoming {
                    fresh,
                    digest: Some(digest),
                    changed,
                    inline: Some(data),
                }
            }
            Content::Hashed {
                fresh,
                digest,
                read,
                changed,
            } => {
                self.bytes_read += read;
                Incoming {
                    fresh,
                    digest: Some(digest),
                    changed,
                    inline: None,
                }
            }
            Content::Deferred { fresh } => Incoming {
                fresh,
                digest: None,
                changed: false,
                inline: None,
            },
            Content::Skip | Content::Failed(_) => unreachable!("handled by take"),
        };
        let outcomes = &self.outcomes;
        let first = inc
            .digest
            .and_then(|d| self.stored.get(&d, &|i| stored_digest(outcomes, i)));
        let known = match inc.digest {
            Some(d) => first.is_some() || self.chain_digests.contains(&d)?,
            None => false,
        };
        if known {
            // Stored before: a hard link inside a full, nothing in an incremental.
            if let (Some(w), Some(first)) = (self.writer.as_mut(), first) {
                let first = paths::member(self.top, &self.plan.items[first].entry.path);
                w.add_hardlink(&member, &first, &meta_of(&inc.fresh))?;
            }
        } else {
            match self.store(idx, &member, &mut inc)? {
                Some(d) => {
                    let outcomes = &self.outcomes;
                    self.stored.insert(idx, &d, &|i| stored_digest(outcomes, i));
                }
                None => return Ok(()),
            }
        }
        self.finish_file(idx, inc);
        Ok(())
    }

    /// Adds new content to the archive; None when the file could not be read (a problem).
    fn store(&mut self, idx: usize, member: &[u8], inc: &mut Incoming) -> Result<Option<Digest>> {
        if let Some(data) = inc.inline.take() {
            inc.fresh.size = data.len() as u64;
            let meta = meta_of(&inc.fresh);
            self.writer()?.add_file_bytes(member, &meta, &data)?;
            return Ok(inc.digest);
        }
        let digest = self.stream(idx, member, inc)?;
        if digest.is_some() {
            inc.digest = digest;
        }
        Ok(digest)
    }

    /// Streams a large file into the archive on this thread, hashing it as it goes.
    fn stream(&mut self, idx: usize, member: &[u8], inc: &mut Incoming) -> Result<Option<Digest>> {
        let item = &self.plan.items[idx];
        let origin = self.origin;
        let opened = origin
            .open_alone(idx, item)
            .and_then(|f| origin.fresh(&f, item).map(|e| (f, e)));
        let mut f = match opened {
            Ok((f, e)) => {
                if inc.digest.is_none() {
                    inc.fresh = e;
                } else if !e.same_stat(&inc.fresh) {
                    inc.changed = true;
                }
                f
            }
            Err(e) => {
                self.failed(idx, format!("cannot read: {e}"));
                return Ok(None);
            }
        };
        let (size, algo) = (inc.fresh.size, self.algo);
        let map = sparse_map(&f, size);
        inc.fresh.sparse = map.is_some();
        let meta = meta_of(&inc.fresh);
        let w = self.writer()?;
        let stored = match &map {
            Some(map) => w.add_sparse_stream(member, &meta, map, &f, algo),
            None => w.add_file_stream(member, &meta, size, &mut f, algo),
        };
        match stored {
            Ok(o) => {
                self.bytes_read += o.bytes_read;
                self.progress.advance(o.bytes_read);
                let moved = o.shrank || o.grew || origin.moved(&f, idx, &inc.fresh);
                inc.changed |= moved || inc.digest.is_some_and(|d| d != o.digest);
                Ok(Some(o.digest))
            }
            Err(Ok(read_err)) => {
                self.failed(idx, format!("cannot read: {read_err}"));
                Ok(None)
            }
            Err(Err(write_err)) => Err(write_err.into()),
        }
    }

    /// Records what the file is now: only its digest when it was read as walked (and its
    /// attributes, when the plan left them unread and they are not the planned ones).
    fn finish_file(&mut self, idx: usize, mut inc: Incoming) {
        let it = &self.plan.items[idx];
        let xattrs = it
            .xattrs_unread
            .then(|| std::mem::replace(&mut inc.fresh.xattrs, it.entry.xattrs.clone()));
        if inc.changed {
            self.problems.push(Problem::failed(
                it.entry.path.clone(),
                "changed while being read; the stored copy may mix old and new \
                 content, and the next backup reads it again",
            ));
        }
        let (digest, sparse) = (inc.digest, inc.fresh.sparse);
        (inc.fresh.digest, inc.fresh.sparse) = (it.entry.digest, it.entry.sparse);
        let as_walked = inc.fresh == it.entry;
        (inc.fresh.digest, inc.fresh.sparse) = (digest, sparse);
        match inc.digest {
            Some(d) if as_walked => self.outcomes.set_digest(idx, d, sparse),
            _ => self.outcomes.set_fresh(idx, inc.fresh),
        }
        match xattrs {
            Some(x) if x != it.entry.xattrs => self.outcomes.set_xattrs(idx, x),
            _ => {}
        }
    }
}
