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

const DB: &str = "vault.db";
const ARCHIVES: &str = "archives";
const LOCK: &str = "lock";
/// Space kept for `forget` to free space with when the disk is full (see [`Repository::ensure_reserve`]).
const RESERVE: &str = "reserve";
const RESERVE_BYTES: i64 = 8 << 20;

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
            name == LOCK || name == RESERVE
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
        if root.join(DB).exists() {
            return Err(Error::Repo {
                path: root.to_path_buf(),
                what: "already holds a vault repository".into(),
            });
        }
        if root.exists() && !is_blank(root)? {
            return Err(Error::Repo {
                path: root.to_path_buf(),
                what: "exists and is not empty; choose an empty or new folder".into(),
            });
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| repo_io(root, e))?;
        let archives = root.join(ARCHIVES);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&archives)
            .map_err(|e| repo_io(&archives, e))?;
        let db = root.join(DB);
        let manifest = Manifest::create(&db)?;
        fs::set_permissions(&db, fs::Permissions::from_mode(0o600)).map_err(|e| repo_io(&db, e))?;
        let repo = Repository {
            root: root.to_path_buf(),
            manifest,
            lock: None,
        };
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

    /// Opens the repository, creating it when `root` is missing or empty. The flag says
    /// whether it was created.
    pub fn open_or_create(root: &Path) -> Result<(Repository, bool)> {
        let empty = match fs::metadata(root) {
            Ok(_) => is_blank(root)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(repo_io(root, e)),
        };
        if empty {
            Ok((Repository::init(root)?, true))
        } else {
            ensure_writable(root)?;
            Ok((Repository::open(root)?, false))
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn archives_dir(&self) -> PathBuf {
        self.root.join(ARCHIVES)
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
    /// naming the holder. The lock dies with its process (flock), so it is never stale.
    pub fn lock_exclusive_wait(&mut self, wait: std::time::Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.lock_exclusive() {
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// Takes the writer lock, or fails at once naming the holder.
    pub fn lock_exclusive(&mut self) -> Result<()> {
        let path = self.root.join(LOCK);
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
                    path: self.root.clone(),
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
        self.lock = Some(f);
        Ok(())
    }
}
