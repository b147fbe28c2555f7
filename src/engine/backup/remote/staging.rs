//! Where a remote backup keeps the files it fetched until the pipeline has read them: a
//! folder in the repository (`.fetch-PID-N`) holding one pack file for the small files (each
//! at an offset, read back with `pread`: no file to create per small file) and one file per
//! large file, named by its plan item's number (never by a name the host chose).
//!
//! It needs as much free space as the files read this run (a full: the whole tree); it is
//! removed when the backup ends, whatever the outcome, and one left by a killed run is removed
//! by the next remote backup (which holds the repository lock).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::engine::batch::INLINE_MAX;
use crate::error::{Error, Result};

/// The fetched copies of one run; removed on drop.
#[derive(Debug)]
pub(in crate::engine::backup) struct Staging {
    dir: PathBuf,
    /// The small files, one after the other.
    pack: File,
    pack_len: u64,
    /// Where each small file is in the pack: offset and length.
    packed: HashMap<u32, (u64, u64)>,
    /// Items whose copy differs in size or mtime from the listing (changed since).
    moved: HashSet<u32>,
    /// Items the host did not send, with why.
    pub(super) missing: HashMap<u32, String>,
    /// The copy buffer, kept between files.
    buf: Vec<u8>,
    pub files: u64,
    /// Content bytes staged.
    pub bytes: u64,
    /// Bytes received from the host for the fetch.
    pub received: u64,
}

/// A copy that failed: reading the stream from the host, or writing the staged copy.
pub(super) enum Copy {
    Read(io::Error),
    Write(io::Error),
}

fn repo_io(path: &Path, e: io::Error) -> Error {
    Error::RepoIo {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Opens a new file for writing (and reading): 0600, never an existing one.
fn new_file(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
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
        let pack_path = dir.join("pack");
        let pack = new_file(&pack_path).map_err(|e| repo_io(&pack_path, e))?;
        Ok(Staging {
            dir,
            pack,
            pack_len: 0,
            packed: HashMap::new(),
            moved: HashSet::new(),
            missing: HashMap::new(),
            buf: vec![0u8; 256 * 1024],
            files: 0,
            bytes: 0,
            received: 0,
        })
    }

    /// Where item `idx`'s copy is when it is not in the pack.
    pub(in crate::engine::backup) fn path_of(&self, idx: usize) -> PathBuf {
        self.dir.join(idx.to_string())
    }

    /// Whether item `idx`'s copy is not what the listing described.
    pub(in crate::engine::backup) fn moved(&self, idx: usize) -> bool {
        u32::try_from(idx).is_ok_and(|i| self.moved.contains(&i))
    }

    /// Item `idx`'s copy is not what the listing described (it changed while sent).
    pub(super) fn mark_moved(&mut self, idx: u32) {
        self.moved.insert(idx);
    }

    /// Why item `idx` was not received, if it was not.
    pub(in crate::engine::backup) fn missing(&self, idx: usize) -> Option<&str> {
        let i = u32::try_from(idx).ok()?;
        self.missing.get(&i).map(String::as_str)
    }

    /// Item `idx`'s content when it is a small file, from the pack.
    pub(in crate::engine::backup) fn small(&self, idx: usize) -> Option<io::Result<Vec<u8>>> {
        let &(off, len) = self.packed.get(&u32::try_from(idx).ok()?)?;
        let mut data = vec![0u8; len as usize];
        Some(self.pack.read_exact_at(&mut data, off).map(|()| data))
    }

    /// Stages `data` (a member of `size` bytes) as item `idx`'s copy; `listed` is the item's
    /// listed size and mtime, `mtime` the member's (seconds).
    pub(super) fn write(
        &mut self,
        idx: u32,
        (data, size, mtime): (&mut dyn Read, u64, u64),
        listed: (u64, i64),
    ) -> std::result::Result<(), Copy> {
        let n = if size <= INLINE_MAX {
            self.pack_one(idx, data)?
        } else {
            let mut f = new_file(&self.path_of(idx as usize)).map_err(Copy::Write)?;
            copy(data, &mut f, &mut self.buf)?
        };
        let (listed_size, listed_ns) = listed;
        if n != listed_size || mtime as i64 != listed_ns.div_euclid(1_000_000_000) {
            self.moved.insert(idx);
        }
        self.files += 1;
        self.bytes += n;
        Ok(())
    }

    /// Appends a small file to the pack.
    fn pack_one(&mut self, idx: u32, data: &mut dyn Read) -> std::result::Result<u64, Copy> {
        let mut pack = &self.pack;
        let n = copy(data, &mut pack, &mut self.buf)?;
        self.packed.insert(idx, (self.pack_len, n));
        self.pack_len += n;
        Ok(n)
    }

    /// A staged copy's path, for error messages.
    pub(super) fn place_of(&self, idx: u32) -> PathBuf {
        match self.packed.contains_key(&idx) {
            true => self.dir.join("pack"),
            false => self.path_of(idx as usize),
        }
    }
}

/// Copies `from` into `to` through `buf`; gives the bytes copied.
fn copy(from: &mut dyn Read, to: &mut dyn Write, buf: &mut [u8]) -> std::result::Result<u64, Copy> {
    let mut n = 0u64;
    loop {
        let got = match from.read(buf) {
            Ok(0) => return Ok(n),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        to.write_all(&buf[..got]).map_err(Copy::Write)?;
        n += got as u64;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
