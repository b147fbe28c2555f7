//! Fetching what a remote backup reads: one `tar -c` on the host streams every planned file in
//! plan order; each regular member that is the next wanted path is written to a staging folder
//! in the repository under its plan item's number (never under a name the host chose), and
//! the normal pipeline reads, hashes and archives it from there.
//!
//! The staging folder needs as much free space as the files read this run (a full: the whole
//! tree); it is removed when the backup ends, whatever the outcome, and one left by a killed run
//! is removed by the next remote backup (which holds the repository lock).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::archive::reader::{for_each_member_in, Flow, Member, MemberKind, ReadError};
use crate::engine::plan::Plan;
use crate::engine::shell::{quote, Shell};
use crate::error::{Error, Result};
use crate::pool::CancelToken;
use crate::progress::Progress;

/// Staged copies per sub-folder of the staging folder.
const BUCKET_BITS: u32 = 12;

/// The fetched copies of one run; removed on drop.
#[derive(Debug)]
pub(in crate::engine::backup) struct Staging {
    dir: PathBuf,
    /// Items whose copy differs in size or mtime from the listing (changed since).
    moved: HashSet<u32>,
    /// Items the host did not send, with why.
    missing: HashMap<u32, String>,
    made: HashSet<u32>,
    pub files: u64,
    /// Content bytes written to the staging folder.
    pub bytes: u64,
    /// Bytes received from the host for the fetch.
    pub received: u64,
}

impl Staging {
    /// An empty staging folder `REPO/.fetch-PID-N`, N counting this process's fetches (hosts
    /// backed up at once each have their own). Any `.fetch-*` of another process is a killed
    /// run's: this process holds the repository's lock.
    pub(in crate::engine::backup) fn create(repo: &Path) -> Result<Staging> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mine = format!(".fetch-{}-", std::process::id());
        if let Ok(rd) = fs::read_dir(repo) {
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.as_encoded_bytes();
                if name.starts_with(b".fetch-") && !name.starts_with(mine.as_bytes()) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = repo.join(format!("{mine}{n}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| repo_io(&dir, e))?;
        Ok(Staging {
            dir,
            moved: HashSet::new(),
            missing: HashMap::new(),
            made: HashSet::new(),
            files: 0,
            bytes: 0,
            received: 0,
        })
    }

    /// Where item `idx`'s copy is.
    pub(in crate::engine::backup) fn path_of(&self, idx: usize) -> PathBuf {
        self.dir
            .join((idx >> BUCKET_BITS).to_string())
            .join(idx.to_string())
    }

    /// Whether item `idx`'s copy is not what the listing described.
    pub(in crate::engine::backup) fn moved(&self, idx: usize) -> bool {
        u32::try_from(idx).is_ok_and(|i| self.moved.contains(&i))
    }

    /// Why item `idx` was not received, if it was not.
    pub(in crate::engine::backup) fn missing(&self, idx: usize) -> Option<&str> {
        let i = u32::try_from(idx).ok()?;
        self.missing.get(&i).map(String::as_str)
    }

    /// Writes member `m` as item `idx`'s copy; `listed` is the item's listed size and mtime.
    fn write(&mut self, idx: u32, m: &mut Member<'_>, listed: (u64, i64)) -> Result<(), Copy> {
        let bucket = idx >> BUCKET_BITS;
        if self.made.insert(bucket) {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(self.dir.join(bucket.to_string()))
                .map_err(Copy::Write)?;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.path_of(idx as usize))
            .map_err(Copy::Write)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let got = match m.data.read(&mut buf) {
                Ok(0) => break,
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Copy::Read(e)),
            };
            f.write_all(&buf[..got]).map_err(Copy::Write)?;
            n += got as u64;
        }
        let (size, mtime_ns) = listed;
        if n != size || m.mtime as i64 != mtime_ns.div_euclid(1_000_000_000) {
            self.moved.insert(idx);
        }
        self.files += 1;
        self.bytes += n;
        Ok(())
    }
}

/// A copy that failed: reading the stream from the host, or writing the staged file.
enum Copy {
    Read(io::Error),
    Write(io::Error),
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn repo_io(path: &Path, e: io::Error) -> Error {
    Error::RepoIo {
        path: path.to_path_buf(),
        source: e,
    }
}

/// What the fetch is asked for: the host's label, the source folder on it, the items to get.
pub(in crate::engine::backup) struct Wanted<'a> {
    pub label: &'a str,
    pub root: &'a str,
    pub plan: &'a Plan,
    /// Plan item numbers, in plan (path) order.
    pub items: Vec<u32>,
}

/// Fetches `want.items` into `staging` through one `tar -c` on the host.
pub(in crate::engine::backup) fn fetch(
    shell: &dyn Shell,
    want: &Wanted<'_>,
    staging: &mut Staging,
    cancel: &CancelToken,
    progress: &dyn Progress,
) -> Result<()> {
    if want.items.is_empty() {
        return Ok(());
    }
    let remote = |what: String| Error::Remote {
        remote: want.label.to_string(),
        what,
    };
    let mut list = Vec::new();
    for &i in &want.items {
        list.extend_from_slice(&want.plan.items[i as usize].entry.path);
        list.push(0);
    }
    let total: u64 = want
        .items
        .iter()
        .map(|&i| want.plan.items[i as usize].entry.size)
        .sum();
    progress.phase("fetch", Some(total));
    let command = format!(
        "cd {} && LC_ALL=C exec tar -c -f - --null --verbatim-files-from --no-recursion \
         --hard-dereference -T -",
        quote(want.root)
    );
    let mut run = shell
        .start(&command, Box::new(io::Cursor::new(list)))
        .map_err(|e| remote(format!("cannot start tar: {e}")))?;
    let mut next = 0usize;
    let mut skipped: Vec<u32> = Vec::new();
    let walked = for_each_member_in(&mut *run, Path::new(want.label), |mut m| {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if m.kind != MemberKind::Regular || m.sparse {
            return Ok(Flow::Continue);
        }
        let rest = &want.items[next..];
        let Some(pos) = rest
            .iter()
            .position(|&i| want.plan.items[i as usize].entry.path == m.name)
        else {
            return Ok(Flow::Continue);
        };
        skipped.extend_from_slice(&rest[..pos]);
        let idx = rest[pos];
        next += pos + 1;
        let e = &want.plan.items[idx as usize].entry;
        match staging.write(idx, &mut m, (e.size, e.mtime_ns)) {
            Ok(()) => {}
            Err(Copy::Read(err)) => return Err(remote(format!("the fetch broke off: {err}"))),
            Err(Copy::Write(err)) => return Err(repo_io(&staging.path_of(idx as usize), err)),
        }
        progress.advance(e.size);
        Ok(Flow::Continue)
    });
    match walked {
        Ok(()) => {}
        Err(Ok(e)) => return Err(e),
        Err(Err(ReadError::Damaged { source, .. })) => {
            return Err(remote(format!("the fetch broke off: {source}")))
        }
        Err(Err(e)) => return Err(remote(format!("the fetch broke off: {e}"))),
    }
    io::copy(&mut *run, &mut io::sink())
        .map_err(|e| remote(format!("reading tar's output: {e}")))?;
    let done = run
        .finish()
        .map_err(|e| remote(format!("tar did not end: {e}")))?;
    staging.received = done.received;
    skipped.extend_from_slice(&want.items[next..]);
    let errors = String::from_utf8_lossy(&done.stderr);
    // 0: all sent; 1: some changed while read; 2: some could not be read (those are missing).
    if !(0..=2).contains(&done.status) {
        let first = errors.lines().next().unwrap_or("no message");
        return Err(remote(format!(
            "tar exited with status {}: {first}",
            done.status
        )));
    }
    for i in skipped {
        let path = String::from_utf8_lossy(&want.plan.items[i as usize].entry.path).into_owned();
        let said = errors.lines().find(|l| l.contains(path.as_str()));
        let why = match said {
            Some(l) => format!("not sent by the host ({l})"),
            None => "not sent by the host (it vanished or is no longer a regular file)".into(),
        };
        staging.missing.insert(i, why);
    }
    Ok(())
}
