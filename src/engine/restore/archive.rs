//! File contents: which archive of the chain holds each needed content, and reading each of
//! those archives once, streaming, on the calling thread while the pool's workers check and
//! write the files. Reading stops after the last needed member.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::wants::{Wanted, Wants};
use super::write::{copy_restored, write_file, Body, DirCache, ItemError, WriteCtx};
use crate::archive::reader::{self, Flow, Member, MemberKind, ReadError};
use crate::engine::batch::{Batcher, INLINE_MAX};
use crate::engine::problem::Problem;
use crate::engine::repo::Repository;
use crate::error::{Error, Result};
use crate::manifest::SnapshotRow;
use crate::pool::{CancelToken, Pool};
use crate::progress::Progress;
use crate::tree::{Entry, EntryKind};

/// Work for the pool.
enum Job {
    /// Small members' contents, batched so that one hand-over carries many files (one per file
    /// made the channels, not the disk, the cost of restoring many small files).
    Data(Vec<(Vec<u8>, Vec<usize>)>),
    /// A large member, already written on the reading thread; its copies are left to do.
    Done {
        dests: Vec<usize>,
        result: std::result::Result<u64, ItemError>,
    },
    Fail {
        dests: Vec<usize>,
        error: String,
    },
}

/// The files of a restore and where their contents come from.
pub(super) struct FilePlan<'a> {
    pub files: Vec<&'a Entry>,
    /// (link, primary): files restored as hard links of another restored file.
    pub links: Vec<(usize, usize)>,
    /// Empty files (no archive needed).
    empty: Vec<usize>,
    /// By snapshot seq: member name → where it goes.
    by_archive: BTreeMap<i64, Wants>,
}

/// Groups hard links, finds each content's archive; contents missing from the chain fail.
pub(super) fn plan_files<'a>(
    repo: &Repository,
    snap: &SnapshotRow,
    tree: &'a [Entry],
    problems: &mut Vec<Problem>,
) -> Result<FilePlan<'a>> {
    let files: Vec<&Entry> = tree.iter().filter(|e| e.kind == EntryKind::File).collect();
    let mut plan = FilePlan {
        files: Vec::new(),
        links: Vec::new(),
        empty: Vec::new(),
        by_archive: BTreeMap::new(),
    };
    let mut primary_of: HashMap<(u64, u64), usize> = HashMap::new();
    for (i, e) in files.iter().enumerate() {
        if e.stat.nlink > 1 {
            let key = (e.stat.dev, e.stat.ino);
            match primary_of.get(&key) {
                Some(&p) if files[p].digest == e.digest => {
                    plan.links.push((i, p));
                    continue;
                }
                Some(_) => {}
                None => {
                    primary_of.insert(key, i);
                }
            }
        }
        if e.size == 0 {
            plan.empty.push(i);
            continue;
        }
        let digest = e.digest.expect("validated");
        match repo.manifest.blob(snap.chain_seq, &digest)? {
            Some(loc) => {
                let w = plan
                    .by_archive
                    .entry(loc.snap_seq)
                    .or_insert_with(|| Wants::new(&snap.source_name));
                w.add(loc.member, i, &e.path, loc.size);
            }
            None => problems.push(Problem::failed(
                e.path.clone(),
                format!("content {digest} is not stored in the chain of snapshot {} (manifest damaged?)", snap.id),
            )),
        }
    }
    plan.by_archive.values_mut().for_each(|w| w.seal(&files));
    plan.files = files;
    Ok(plan)
}

/// Everything the writers share.
pub(super) struct Writer<'a> {
    pub ctx: WriteCtx<'a>,
    pub pool: &'a Pool,
    pub cancel: &'a CancelToken,
    pub progress: &'a dyn Progress,
    pub written: AtomicU64,
}

impl Writer<'_> {
    /// Writes every file's content; returns the archives read (repository-relative names).
    pub(super) fn write_all(
        &self,
        repo: &Repository,
        snap: &SnapshotRow,
        plan: &mut FilePlan<'_>,
        problems: &mut Vec<Problem>,
    ) -> Result<Vec<String>> {
        let mut dirs = DirCache::new(self.ctx.root);
        for &i in &plan.empty {
            let empty = Body::Plain(&mut io::empty());
            if let Err(err) = write_file(self.ctx, &mut dirs, plan.files[i], empty, "-") {
                problems.push(Problem::failed(plan.files[i].path.clone(), err));
            }
        }
        drop(dirs);
        let chain: HashMap<i64, SnapshotRow> = repo
            .manifest
            .snapshots(Some(snap.source_id))?
            .into_iter()
            .map(|r| (r.seq, r))
            .collect();
        let mut read = Vec::new();
        for (seq, wanted) in std::mem::take(&mut plan.by_archive) {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let archive = match chain.get(&seq) {
                None => Err(format!("snapshot seq {seq} holding its content is gone")),
                Some(row) => row
                    .archive
                    .clone()
                    .ok_or_else(|| format!("snapshot {} has no archive", row.id)),
            };
            let archive = match archive {
                Ok(a) => a,
                Err(why) => {
                    let all = wanted.dests();
                    problems.extend(all.map(|i| Problem::failed(plan.files[i].path.clone(), &why)));
                    continue;
                }
            };
            let path = repo.archive_path(&archive);
            read.push(Repository::archive_name(&archive));
            problems.extend(self.restore_archive(&path, &archive, wanted, &plan.files)?);
        }
        Ok(read)
    }

    /// Reads one archive on this thread and writes the wanted members on the pool.
    fn restore_archive(
        &self,
        path: &Path,
        archive: &str,
        mut wanted: Wants,
        files: &[&Entry],
    ) -> Result<Vec<Problem>> {
        let mut problems = Vec::new();
        let ctx = self.ctx;
        let result = self.pool.map_fed(
            self.cancel,
            || DirCache::new(ctx.root),
            |dirs, job| run_job(ctx, dirs, job, files, archive),
            |results| -> std::result::Result<(), ()> {
                for (i, r) in results {
                    match r {
                        Ok(n) => {
                            self.written.fetch_add(n, Ordering::Relaxed);
                            self.progress.advance(n);
                        }
                        Err(e) => problems.push(Problem::failed(files[i].path.clone(), e)),
                    }
                }
                Ok(())
            },
            |push| self.read_members(path, archive, &mut wanted, files, push),
        );
        crate::error::pool_done(result)?;
        Ok(problems)
    }

    /// Walks the archive's members, handing each wanted one over as a job.
    fn read_members(
        &self,
        path: &Path,
        archive: &str,
        wanted: &mut Wants,
        files: &[&Entry],
        push: &mut dyn FnMut(Job) -> bool,
    ) {
        let mut dirs = DirCache::new(self.ctx.root);
        let mut batch: Batcher<(Vec<u8>, Vec<usize>)> = Batcher::default();
        let r = reader::for_each_member(path, reader::compression_of(path), |m| {
            if wanted.is_empty() || self.cancel.is_cancelled() {
                return Ok(Flow::Stop);
            }
            let Some(w) = wanted.take(&m.name, files) else {
                return Ok(Flow::Continue); // not vouched for by the manifest: never used
            };
            let job = match self.member_job(m, w, archive, files, &mut dirs, &mut batch) {
                Some(job) => job,
                None => return Ok(Flow::Continue),
            };
            if push(job) {
                Ok(Flow::Continue)
            } else {
                Err(())
            }
        });
        if !batch.is_empty() {
            push(Job::Data(batch.take()));
        }
        let leftover = match r {
            Ok(()) => format!("not found in archive {archive}"),
            Err(Ok(())) => "restore stopped".to_string(),
            Err(Err(ReadError::Missing { .. })) => format!("archive {archive} is missing"),
            Err(Err(e)) => e.to_string(),
        };
        for w in wanted.drain() {
            let error = leftover.clone();
            push(Job::Fail {
                dests: w.dests,
                error,
            });
        }
    }

    /// The job for one wanted member (None while a batch of small ones is still filling).
    fn member_job(
        &self,
        m: Member<'_>,
        w: Wanted,
        archive: &str,
        files: &[&Entry],
        dirs: &mut DirCache,
        batch: &mut Batcher<(Vec<u8>, Vec<usize>)>,
    ) -> Option<Job> {
        let fail = |error: String| {
            Some(Job::Fail {
                dests: w.dests.clone(),
                error,
            })
        };
        if m.kind != MemberKind::Regular {
            return fail(format!("member in archive {archive} is not a regular file"));
        }
        if m.size != w.size {
            return fail(format!(
                "member in archive {archive} has {} bytes, the manifest says {}",
                m.size, w.size
            ));
        }
        if m.size > INLINE_MAX || m.sparse {
            let body = if m.sparse {
                Body::Sparse(m.data)
            } else {
                Body::Plain(m.data)
            };
            let result = write_file(self.ctx, dirs, files[w.dests[0]], body, archive);
            return Some(Job::Done {
                dests: w.dests,
                result,
            });
        }
        let mut data = Vec::with_capacity(m.size as usize);
        if let Err(e) = m.data.take(m.size).read_to_end(&mut data) {
            return fail(format!("archive {archive} is damaged: {e}"));
        }
        let size = data.len() as u64;
        batch.add((data, w.dests), size).map(Job::Data)
    }
}

/// Writes a job's files on a worker (copies of a content from its first written file).
fn run_job(
    ctx: WriteCtx<'_>,
    dirs: &mut DirCache,
    job: Job,
    files: &[&Entry],
    archive: &str,
) -> Vec<(usize, std::result::Result<u64, ItemError>)> {
    let mut out = Vec::new();
    let mut finish =
        |dirs: &mut DirCache, dests: Vec<usize>, first: std::result::Result<u64, ItemError>| {
            for &d in &dests[1..] {
                let r = match &first {
                    Err(e) => Err(ItemError::Content(e.to_string())),
                    Ok(_) => copy_restored(ctx, dirs, files[dests[0]], files[d], archive),
                };
                out.push((d, r));
            }
            out.push((dests[0], first));
        };
    match job {
        Job::Fail { dests, error } => {
            return dests
                .into_iter()
                .map(|d| (d, Err(ItemError::Content(error.clone()))))
                .collect()
        }
        Job::Done { dests, result } => finish(dirs, dests, result),
        Job::Data(batch) => {
            for (data, dests) in batch {
                let body = Body::Plain(&mut data.as_slice());
                let r = write_file(ctx, dirs, files[dests[0]], body, archive);
                finish(dirs, dests, r);
            }
        }
    }
    out
}
