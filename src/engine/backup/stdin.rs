//! `vault backup --stdin`: standard input backed up as one file, in a source of its own
//! (`stdin:NAME` in the manifest), deduplicated and incremental like any other source.
//!
//! The data is first copied into a staging folder inside the repository (it needs as much
//! free space there as the dump is large), which the normal backup then reads; the staging
//! folder is removed when the backup ends, whatever the outcome (one left by a killed run is
//! removed by the next `--stdin` backup, which holds the repository lock).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What `--stdin` backs up.
#[derive(Clone, Debug)]
pub struct StdinSource {
    /// The file's name in the snapshot (`--stdin-name`), one path component.
    pub file_name: String,
    /// The source's name (`--source-name`): `stdin:NAME` in the manifest.
    pub source_name: String,
}

impl StdinSource {
    /// Checks both names: one path component each, not `.` or `..`, no NUL.
    pub fn new(file_name: &str, source_name: &str) -> Result<StdinSource> {
        for (flag, v) in [("--stdin-name", file_name), ("--source-name", source_name)] {
            if v.is_empty() || v == "." || v == ".." || v.contains('/') || v.contains('\0') {
                return Err(Error::Usage(format!(
                    "bad {flag} '{v}': give a plain name (no '/', not '.' or '..')"
                )));
            }
        }
        Ok(StdinSource {
            file_name: file_name.to_string(),
            source_name: source_name.to_string(),
        })
    }

    /// The source's key in the manifest.
    pub fn key(&self) -> Vec<u8> {
        format!("stdin:{}", self.source_name).into_bytes()
    }
}

/// The staging folder holding the piped data; removed on drop.
#[derive(Debug)]
pub(super) struct Staged {
    pub dir: PathBuf,
}

impl Staged {
    /// Copies `input` into `REPO/.stdin-PID/NAME` (0600 in a 0700 folder).
    pub(super) fn take(repo: &Path, s: &StdinSource, input: &mut dyn Read) -> Result<Staged> {
        let dir = repo.join(format!(".stdin-{}", std::process::id()));
        let err = |path: &Path, e: io::Error| Error::RepoIo {
            path: path.to_path_buf(),
            source: e,
        };
        // The repository lock is held: any staging folder left here is from a killed run.
        if let Ok(rd) = fs::read_dir(repo) {
            for e in rd.flatten() {
                if e.file_name().as_encoded_bytes().starts_with(b".stdin-") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| err(&dir, e))?;
        let staged = Staged { dir };
        let file = staged.dir.join(&s.file_name);
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .map_err(|e| err(&file, e))?;
        io::copy(input, &mut out).map_err(|e| match e.kind() {
            io::ErrorKind::WriteZero => err(&file, e),
            _ if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => err(&file, e),
            _ => Error::Source {
                path: PathBuf::from("<stdin>"),
                source: e,
            },
        })?;
        Ok(staged)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
