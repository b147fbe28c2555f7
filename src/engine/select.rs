//! What a backup leaves out beyond `--exclude` globs: other file systems
//! (`--one-file-system`), folders marked as caches (`--exclude-caches`) or by a tag file
//! (`--exclude-if-present NAME`), and gitignore-style pattern files (`--exclude-file`).
//!
//! A tagged folder keeps its own entry and its tag file (as GNU tar's `--exclude-tag` does,
//! so a restore puts the marker back); everything else in it is left out. A mount point met
//! with `--one-file-system` is recorded as an empty folder.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{Error, Result};

/// The first bytes of a valid `CACHEDIR.TAG` (https://bford.info/cachedir/).
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// The selection rules of one walk.
#[derive(Debug, Default)]
pub struct Selection {
    /// With `--one-file-system`: the source's device; folders on another are not entered.
    pub device: Option<u64>,
    pub exclude_caches: bool,
    /// Tag file names (`--exclude-if-present`).
    pub tags: Vec<Vec<u8>>,
    /// Patterns from `--exclude-file` files, relative to the source.
    pub ignore: Option<Gitignore>,
}

impl Selection {
    /// Loads the `--exclude-file` pattern files (gitignore syntax, `!` re-includes) for the
    /// source `root`. A missing file or a bad pattern is a usage error naming the file.
    pub fn load_patterns(root: &Path, files: &[PathBuf]) -> Result<Option<Gitignore>> {
        if files.is_empty() {
            return Ok(None);
        }
        let mut b = GitignoreBuilder::new(root);
        for f in files {
            if let Err(e) = std::fs::metadata(f) {
                return Err(Error::Usage(format!(
                    "cannot read --exclude-file {}: {e}",
                    f.display()
                )));
            }
            if let Some(e) = b.add(f) {
                return Err(Error::Usage(format!(
                    "bad --exclude-file {}: {e}",
                    f.display()
                )));
            }
        }
        let gi = b
            .build()
            .map_err(|e| Error::Usage(format!("bad --exclude-file patterns: {e}")))?;
        Ok(Some(gi))
    }

    /// When the folder `abs` is tagged (a valid `CACHEDIR.TAG` with `--exclude-caches`, or a
    /// file named by `--exclude-if-present`): the names in it to keep (the tags found).
    pub fn tagged(&self, abs: &Path) -> Option<Vec<Vec<u8>>> {
        use std::os::unix::ffi::OsStrExt;
        let mut found = Vec::new();
        if self.exclude_caches && valid_cachedir_tag(&abs.join("CACHEDIR.TAG")) {
            found.push(b"CACHEDIR.TAG".to_vec());
        }
        for t in &self.tags {
            let p = abs.join(std::ffi::OsStr::from_bytes(t));
            if std::fs::symlink_metadata(&p).is_ok() && !found.contains(t) {
                found.push(t.clone());
            }
        }
        (!found.is_empty()).then_some(found)
    }

    /// True when the pattern files leave out `rel` (relative to the source).
    pub fn ignored(&self, rel: &[u8], is_dir: bool) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let Some(gi) = &self.ignore else {
            return false;
        };
        gi.matched(Path::new(std::ffi::OsStr::from_bytes(rel)), is_dir)
            .is_ignore()
    }

    /// False for a folder on another file system under `--one-file-system`.
    pub fn enters(&self, dev: u64) -> bool {
        match self.device {
            None => true,
            Some(d) => d == dev,
        }
    }
}

fn valid_cachedir_tag(p: &Path) -> bool {
    let mut head = [0u8; CACHEDIR_SIGNATURE.len()];
    match File::open(p) {
        Ok(f) => {
            f.take(head.len() as u64).read_exact(&mut head).is_ok() && head == CACHEDIR_SIGNATURE
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_patterns() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("c");
        std::fs::create_dir(&c).unwrap();
        std::fs::write(
            c.join("CACHEDIR.TAG"),
            b"Signature: 8a477f597d28d172789f06886806bc55\n",
        )
        .unwrap();
        let bad = d.path().join("bad");
        std::fs::create_dir(&bad).unwrap();
        std::fs::write(bad.join("CACHEDIR.TAG"), b"Signature: nope").unwrap();
        let s = Selection {
            exclude_caches: true,
            ..Selection::default()
        };
        assert_eq!(s.tagged(&c), Some(vec![b"CACHEDIR.TAG".to_vec()]));
        assert_eq!(s.tagged(&bad), None);

        let pats = d.path().join("pats");
        std::fs::write(&pats, "*.log\n!keep.log\n/build/\n").unwrap();
        let gi = Selection::load_patterns(d.path(), &[pats]).unwrap();
        let s = Selection {
            ignore: gi,
            ..Selection::default()
        };
        assert!(s.ignored(b"a/x.log", false));
        assert!(!s.ignored(b"a/keep.log", false));
        assert!(s.ignored(b"build", true));
        assert!(!s.ignored(b"a/build", true));
        assert!(Selection::load_patterns(d.path(), &[d.path().join("missing")]).is_err());
    }
}
