//! The fallback for a host without GNU find and tar: the tree listed folder by folder and the
//! files read one by one over SFTP (it needs nothing on the host beyond its SSH server, and is
//! about four times slower than the tar stream on many small files). SFTP gives whole-second
//! mtimes and no ctime, inode or device, so a file is read again when its size or mtime
//! changed (and once more after a backup that saw it written in its last seconds);
//! extended attributes are not read.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::GlobSet;
use thin_vec::ThinVec;

use super::listing::Listed;
use super::staging::{Copy, Staging};
use super::Wanted;
use crate::engine::paths::join;
use crate::engine::problem::Problem;
use crate::engine::shell::{RemoteFiles, RemoteStat};
use crate::error::{Error, Result};
use crate::pool::CancelToken;
use crate::tree::{Entry, EntryKind, StatCache};

/// The kind of an `st_mode`, or why it is not backed up.
fn kind_of(mode: u32) -> std::result::Result<EntryKind, &'static str> {
    match mode & libc::S_IFMT {
        libc::S_IFREG => Ok(EntryKind::File),
        libc::S_IFDIR => Ok(EntryKind::Dir),
        libc::S_IFLNK => Ok(EntryKind::Symlink),
        libc::S_IFIFO => Ok(EntryKind::Fifo),
        libc::S_IFSOCK => {
            Err("skipped: socket (sockets cannot be backed up; GNU tar skips them too)")
        }
        _ => Err("skipped: device file (SFTP does not give its device number)"),
    }
}

fn entry(path: Vec<u8>, kind: EntryKind, st: &RemoteStat, target: Option<Vec<u8>>) -> Entry {
    let size = match (&target, kind) {
        (Some(t), _) => t.len() as u64,
        (None, EntryKind::File) => st.size,
        _ => 0,
    };
    Entry {
        path,
        kind,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        size,
        mtime_ns: st.mtime.saturating_mul(1_000_000_000),
        digest: None,
        target: target.map(ThinVec::from),
        rdev: 0,
        xattrs: None,
        sparse: false,
        stat: StatCache {
            ctime_ns: 0,
            ino: 0,
            dev: 0,
            nlink: 1,
        },
    }
}

/// Lists `root` on the host folder by folder; a folder that cannot be read is failed (the plan
/// keeps what it held before).
pub(super) fn list(
    files: &dyn RemoteFiles,
    root: &str,
    exclude: &GlobSet,
) -> std::result::Result<Listed, String> {
    let top = files
        .lstat(root.as_bytes())
        .map_err(|e| format!("{root}: {e}"))?;
    if kind_of(top.mode) != Ok(EntryKind::Dir) {
        return Err(format!("{root} is not a folder on the host"));
    }
    let mut l = Listed {
        root: entry(Vec::new(), EntryKind::Dir, &top, None),
        entries: Vec::new(),
        warnings: Vec::new(),
        failed: Vec::new(),
    };
    let mut folders: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(dir) = folders.pop() {
        let abs = join(root.as_bytes(), &dir);
        let names = match files.read_dir(&abs) {
            Ok(n) => n,
            Err(e) => {
                l.warnings
                    .push(Problem::failed(dir.clone(), format!("cannot list: {e}")));
                l.failed.push(dir);
                continue;
            }
        };
        for (name, st) in names {
            if name.is_empty() || name.contains(&b'/') {
                return Err("the host named a file with an empty name or a '/'".into());
            }
            if name == b"." || name == b".." {
                continue;
            }
            let rel = join(&dir, &name);
            if exclude.is_match(Path::new(OsStr::from_bytes(&rel))) {
                continue;
            }
            child(files, (root, rel, &st), &mut l, &mut folders);
        }
    }
    l.entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    l.failed.sort();
    Ok(l)
}

/// One listed name: an entry, a folder to list, or a warning.
fn child(
    files: &dyn RemoteFiles,
    (root, rel, st): (&str, Vec<u8>, &RemoteStat),
    l: &mut Listed,
    folders: &mut Vec<Vec<u8>>,
) {
    let kind = match kind_of(st.mode) {
        Ok(k) => k,
        Err(why) => return l.warnings.push(Problem::skipped(rel, why)),
    };
    let target = match kind {
        EntryKind::Symlink => match files.read_link(&join(root.as_bytes(), &rel)) {
            Ok(t) => Some(t),
            Err(e) => {
                return l
                    .warnings
                    .push(Problem::failed(rel, format!("cannot read symlink: {e}")))
            }
        },
        _ => None,
    };
    if kind == EntryKind::Dir {
        folders.push(rel.clone());
    }
    let mut e = entry(rel, kind, st, target);
    // A file written in the last seconds may be written again within the same second, with
    // the same size, after it is read: one nanosecond off its mtime makes the next run read
    // it again (git's "racy clean" rule; whole-second mtimes cannot tell otherwise).
    if kind == EntryKind::File && st.mtime >= crate::time::now_ns() / 1_000_000_000 - 2 {
        e.mtime_ns += 1;
    }
    l.entries.push(e);
}

/// Reads `want.items` over SFTP into `staging`. A file that cannot be opened is missing (a
/// warning); a read that breaks off fails the backup, as a broken stream does.
pub(super) fn fetch(
    files: &dyn RemoteFiles,
    want: &Wanted<'_>,
    staging: &mut Staging,
    cancel: &CancelToken,
) -> Result<()> {
    let remote = |what: String| Error::Remote {
        remote: want.label.to_string(),
        what,
    };
    use std::io::ErrorKind::{NotFound, PermissionDenied};
    for &i in &want.items {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let e = &want.plan.items[i as usize].entry;
        let path = join(want.root.as_bytes(), &e.path);
        let mut r = match files.open(&path) {
            Ok(r) => r,
            // The server's answer about this file: it is missing, the rest goes on.
            Err(err) if matches!(err.kind(), NotFound | PermissionDenied) => {
                let why = format!("not sent by the host ({err})");
                staging.missing.insert(i, why);
                continue;
            }
            Err(err) => return Err(remote(format!("the fetch broke off: {err}"))),
        };
        let secs = e.mtime_ns.div_euclid(1_000_000_000).max(0) as u64;
        match staging.write(i, (&mut *r, e.size, secs), (e.size, e.mtime_ns)) {
            Ok(()) => {}
            Err(Copy::Read(err)) => return Err(remote(format!("the fetch broke off: {err}"))),
            Err(Copy::Write(err)) => {
                return Err(Error::RepoIo {
                    path: staging.place_of(i),
                    source: err,
                })
            }
        }
    }
    staging.received = staging.bytes;
    Ok(())
}
