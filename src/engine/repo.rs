//! The repository on disk: `vault.db`, `archives/` and a `lock` file.
//!
//! Promises: folders are created 0700 and files 0600; writers take an exclusive `flock` on
//! `lock` (released by the kernel when the process dies, so a stale lock never needs removing);
//! readers take no lock.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{repo_io, Error, Result};
use crate::manifest::Manifest;

/// The manifest's file name in a repository (and on a remote copy).
pub const DB: &str = "vault.db";
/// A remote copy's previous manifest, kept while a new one is put in place.
pub const DB_PREV: &str = "vault.db.prev";
/// A remote copy's manifest while it is being uploaded.
pub const DB_PUSHING: &str = "vault.db.partial-push";
/// SQLite's side files of the manifest.
pub const DB_SIDE_FILES: [&str; 2] = ["vault.db-wal", "vault.db-shm"];
/// The archives' folder name in a repository (and on a remote copy).
pub const ARCHIVES: &str = "archives";
const LOCK: &str = "lock";
/// Space kept for `forget` to free space with when the disk is full (see [`Repository::ensure_reserve`]).
const RESERVE: &str = "reserve";
const RESERVE_BYTES: i64 = 8 << 20;
/// Prefix of the manifest an init is building (renamed to vault.db when complete).
const INIT_TMP: &str = "vault.db.init-";

/// Fails with a clear message when `root` cannot be written (read-only mount, permissions).
fn ensure_writable(root: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(root.as_os_str().as_bytes()).map_err(|_| Error::Repo {
        path: root.to_path_buf(),
        what: "path contains a NUL byte".into(),
    })?;
    // SAFETY: valid C string; statvfs fills the struct we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 && st.f_flag & libc::ST_RDONLY != 0 {
        return Err(Error::Repo {
            path: root.to_path_buf(),
            what: "is on a read-only filesystem".into(),
        });
    }
    // SAFETY: valid C string.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Err(Error::Repo {
            path: root.to_path_buf(),
            what: format!("is not writable: {}", std::io::Error::last_os_error()),
        });
    }
    Ok(())
}

/// True for an empty folder, or what an interrupted `init` leaves: no vault.db, at most an
/// empty `archives/` and the lock file. Such a folder is (re)initialised, never refused.
fn is_blank(root: &Path) -> Result<bool> {
    if root.join(DB).exists() {
        return Ok(false);
    }
    for e in fs::read_dir(root).map_err(|e| repo_io(root, e))? {
        let e = e.map_err(|e| repo_io(root, e))?;
        let name = e.file_name();
        let ok = if name == ARCHIVES {
            fs::read_dir(e.path())
                .map(|mut it| it.next().is_none())
                .unwrap_or(false)
        } else {
            use std::os::unix::ffi::OsStrExt;
            name == LOCK || name == RESERVE || name.as_bytes().starts_with(INIT_TMP.as_bytes())
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// An open repository.
#[derive(Debug)]
pub struct Repository {
    root: PathBuf,
    pub(crate) manifest: Manifest,
    lock: Option<File>,
}

impl Repository {
    /// Creates a repository in `root` (missing or empty). Fails if one is already there.
    pub fn init(root: &Path) -> Result<Repository> {
        Repository::init_waiting(root, std::time::Duration::ZERO)
    }

    /// [`Repository::init`], waiting up to `wait` for the writer lock (another process
    /// creating the same repository holds it).
    pub fn init_waiting(root: &Path, wait: std::time::Duration) -> Result<Repository> {
        let exists = || Error::Repo {
            path: root.to_path_buf(),
            what: "already holds a vault repository".into(),
        };
        if root.join(DB).exists() {
            return Err(exists());
        }
        if root.exists() && !is_blank(root)? {
            return Err(not_empty(root));
        }
        make_dir(root)?;
        let lock = take_lock_waiting(root, wait)?;
        if root.join(DB).exists() {
            return Err(exists());
        }
        Repository::create_locked(root, lock)
    }

    /// Makes the repository's files while holding the writer lock. The manifest is built under
    /// a temporary name and renamed into place complete, so a `vault.db` that exists always
    /// has its schema and repository id (an interrupted init leaves only the temporary file,
    /// which the next init removes).
    fn create_locked(root: &Path, lock: File) -> Result<Repository> {
        if !is_blank(root)? {
            return Err(not_empty(root));
        }
        remove_init_leftovers(root);
        make_dir(&root.join(ARCHIVES))?;
        let db = root.join(DB);
        let tmp = root.join(format!("{INIT_TMP}{}", std::process::id()));
        let manifest = Manifest::create(&tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
            .map_err(|e| repo_io(&tmp, e))?;
        drop(manifest);
        fs::rename(&tmp, &db).map_err(|e| repo_io(&db, e))?;
        let mut repo = Repository::open(root)?;
        repo.lock = Some(lock);
        repo.ensure_reserve();
        Ok(repo)
    }

    /// Opens an existing repository.
    pub fn open(root: &Path) -> Result<Repository> {
        let db = root.join(DB);
        if !root.is_dir() {
            return Err(Error::Repo {
                path: root.to_path_buf(),
                what: "no such folder".into(),
            });
        }
        if !db.is_file() {
            return Err(Error::Repo {
                path: root.to_path_buf(),
                what: "not a vault repository (no vault.db)".into(),
            });
        }
        let manifest = Manifest::open(&db)?;
        Ok(Repository {
            root: root.to_path_buf(),
            manifest,
            lock: None,
        })
    }

    /// Opens the repository and takes the writer lock (waiting up to `wait`), creating the
    /// repository when `root` is missing or empty. Creation happens under the lock, so two
    /// first backups started at once make one repository. The flag says whether it was created.
    pub fn open_or_create(root: &Path, wait: std::time::Duration) -> Result<(Repository, bool)> {
        let empty = match fs::metadata(root) {
            Ok(_) => is_blank(root)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(repo_io(root, e)),
        };
        if !empty {
            ensure_writable(root)?;
            let mut repo = Repository::open(root)?;
            repo.lock_exclusive_wait(wait)?;
            return Ok((repo, false));
        }
        make_dir(root)?;
        let lock = take_lock_waiting(root, wait)?;
        if root.join(DB).exists() {
            // Another process created it while we waited for the lock.
            let mut repo = Repository::open(root)?;
            repo.lock = Some(lock);
            return Ok((repo, false));
        }
        Ok((Repository::create_locked(root, lock)?, true))
    }

    /// This repository's identity (see [`Manifest::repository_id`]).
    pub fn id(&self) -> Result<String> {
        Ok(self.manifest.repository_id()?)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn archives_dir(&self) -> PathBuf {
        self.root.join(ARCHIVES)
    }

    /// Where the archive `name` lies.
    pub fn archive_path(&self, name: &str) -> PathBuf {
        self.archives_dir().join(name)
    }

    /// An archive's name relative to the repository root (`archives/NAME`), as reports show it
    /// and remote copies lay it out.
    pub fn archive_name(name: &str) -> String {
        format!("{ARCHIVES}/{name}")
    }

    /// The manifest's path in the repository at `root`.
    pub fn db_path(root: &Path) -> PathBuf {
        root.join(DB)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The regular files in archives/ that none of `rows` names (orphans and `.partial`
    /// leftovers), sorted by name.
    pub fn unreferenced_archives(
        &self,
        rows: &[crate::manifest::SnapshotRow],
    ) -> Result<Vec<String>> {
        let known: std::collections::HashSet<&str> =
            rows.iter().filter_map(|r| r.archive.as_deref()).collect();
        let dir = self.archives_dir();
        let mut out = Vec::new();
        for ent in fs::read_dir(&dir).map_err(|e| repo_io(&dir, e))?.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if !known.contains(name.as_str()) && ent.file_type().is_ok_and(|t| t.is_file()) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Best effort: makes sure `reserve`, a file of 8 MiB of allocated space, exists, so that
    /// `vault forget` on a full disk can delete it to make room for its manifest transaction.
    pub fn ensure_reserve(&self) {
        let path = self.root.join(RESERVE);
        if path.exists() {
            return;
        }
        let Ok(f) = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        else {
            return;
        };
        // SAFETY: fallocate-style allocation on a descriptor we own.
        let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, RESERVE_BYTES) };
        if rc != 0 || f.sync_all().is_err() {
            drop(f);
            let _ = fs::remove_file(&path);
        }
    }

    /// Deletes the reserve; true when there was one to delete.
    pub fn release_reserve(&self) -> bool {
        fs::remove_file(self.root.join(RESERVE)).is_ok()
    }

    /// Closes the manifest (SQLite checkpoints its WAL into vault.db) and keeps only the writer
    /// lock, for replacing vault.db as a whole while no other writer can start.
    pub fn close_keeping_lock(self) -> Option<File> {
        let Repository { manifest, lock, .. } = self;
        drop(manifest);
        lock
    }

    /// Takes the writer lock, waiting up to `wait` for another writer to finish; then fails
    /// naming the holder. The lock dies with its process (flock), so it is never stale. A
    /// repository that already holds its lock keeps it.
    pub fn lock_exclusive_wait(&mut self, wait: std::time::Duration) -> Result<()> {
        if self.lock.is_none() {
            self.lock = Some(take_lock_waiting(&self.root, wait)?);
        }
        Ok(())
    }

    /// Takes the writer lock, or fails at once naming the holder.
    pub fn lock_exclusive(&mut self) -> Result<()> {
        self.lock_exclusive_wait(std::time::Duration::ZERO)
    }
}

fn not_empty(root: &Path) -> Error {
    Error::Repo {
        path: root.to_path_buf(),
        what: "exists and is not empty; choose an empty or new folder".into(),
    }
}

fn make_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| repo_io(dir, e))
}

/// Removes manifests that an interrupted init left under their temporary name.
fn remove_init_leftovers(root: &Path) {
    use std::os::unix::ffi::OsStrExt;
    for e in fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().as_bytes().starts_with(INIT_TMP.as_bytes()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Takes the writer lock of the repository in `root`, retrying until `wait` has passed.
fn take_lock_waiting(root: &Path, wait: std::time::Duration) -> Result<File> {
    // A wait too long for the clock to hold is a wait without end.
    let deadline = std::time::Instant::now().checked_add(wait);
    loop {
        match take_lock(root) {
            Err(Error::Locked { .. }) if !matches!(deadline, Some(d) if std::time::Instant::now() >= d) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Takes the writer lock, or fails at once naming the holder.
fn take_lock(root: &Path) -> Result<File> {
    let path = root.join(LOCK);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| repo_io(&path, e))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::Locked {
                path: root.to_path_buf(),
                holder: if holder.is_empty() {
                    "another process".into()
                } else {
                    holder.to_string()
                },
            });
        }
        return Err(repo_io(&path, err));
    }
    let text = format!(
        "PID {} since {}\n",
        std::process::id(),
        crate::time::rfc3339(crate::time::now_ns())
    );
    f.set_len(0).map_err(|e| repo_io(&path, e))?;
    f.rewind().map_err(|e| repo_io(&path, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| repo_io(&path, e))?;
    Ok(f)
}
