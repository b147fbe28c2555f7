//! The data model of a backed-up tree: one [`Entry`] per path below the source.
//!
//! Paths are relative to the source, stored as raw bytes (Unix paths need not be UTF-8) and
//! never converted lossily except for display. An entry carries what restore needs (type, mode,
//! owner, mtime in nanoseconds, content digest, symlink target) and the stat-cache fields that
//! change detection needs (ctime, inode, device, link count).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use thin_vec::ThinVec;

use crate::hash::Digest;
use crate::xattr::Xattrs;

/// What kind of filesystem object an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
}

impl EntryKind {
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Fifo => "fifo",
            EntryKind::CharDevice => "char-device",
            EntryKind::BlockDevice => "block-device",
        }
    }

    /// The code stored in the manifest.
    pub fn code(self) -> i64 {
        match self {
            EntryKind::File => 0,
            EntryKind::Dir => 1,
            EntryKind::Symlink => 2,
            EntryKind::Fifo => 3,
            EntryKind::CharDevice => 4,
            EntryKind::BlockDevice => 5,
        }
    }

    /// FIFOs and device nodes: no content, made with `mknod`.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice
        )
    }

    /// The file type bits for `mknod`.
    pub fn mknod_type(self) -> u32 {
        match self {
            EntryKind::Fifo => libc::S_IFIFO,
            EntryKind::CharDevice => libc::S_IFCHR,
            EntryKind::BlockDevice => libc::S_IFBLK,
            _ => 0,
        }
    }

    pub fn from_code(c: i64) -> Option<EntryKind> {
        match c {
            0 => Some(EntryKind::File),
            1 => Some(EntryKind::Dir),
            2 => Some(EntryKind::Symlink),
            3 => Some(EntryKind::Fifo),
            4 => Some(EntryKind::CharDevice),
            5 => Some(EntryKind::BlockDevice),
            _ => None,
        }
    }
}

/// One path of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the source, `/`-separated, never empty, never starting with `/`.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Content size for files, target length for symlinks, 0 for directories.
    pub size: u64,
    pub mtime_ns: i64,
    /// Content digest; files only.
    pub digest: Option<Digest>,
    /// Link target; symlinks only. A thin pointer (8 bytes): nearly every entry has none, and a
    /// backup plan holds an entry for every path.
    pub target: Option<ThinVec<u8>>,
    /// Device number; character and block devices only (0 otherwise).
    pub rdev: u64,
    /// Extended attributes, ACLs and capabilities included; None when there are none.
    pub xattrs: Option<Box<Xattrs>>,
    /// Files stored sparse (holes not read, not stored, restored as holes).
    pub sparse: bool,
    pub stat: StatCache,
}

/// The stat fields that decide whether a file must be read again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatCache {
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
}

impl Entry {
    /// A test entry: `path` of `kind`, mode 0644, owned by root, everything else zero or none.
    #[cfg(test)]
    pub fn bare(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime_ns: 0,
            digest: None,
            target: None,
            rdev: 0,
            xattrs: None,
            sparse: false,
            stat: StatCache::default(),
        }
    }

    pub fn path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.path))
    }

    /// True when the stat data that change detection trusts is identical.
    pub fn same_stat(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.stat.ctime_ns == other.stat.ctime_ns
            && self.stat.ino == other.stat.ino
            && self.stat.dev == other.stat.dev
    }

    /// What differs between two versions of one path, as user-facing words.
    pub fn changes_from(&self, old: &Entry) -> Vec<&'static str> {
        let mut what = Vec::new();
        if self.kind != old.kind {
            what.push("type");
            return what;
        }
        if self.digest != old.digest || self.target != old.target {
            what.push("content");
        }
        if self.mode != old.mode {
            what.push("mode");
        }
        if self.uid != old.uid || self.gid != old.gid {
            what.push("owner");
        }
        if self.mtime_ns != old.mtime_ns {
            what.push("mtime");
        }
        if self.xattrs != old.xattrs {
            what.push("xattrs");
        }
        if self.rdev != old.rdev {
            what.push("rdev");
        }
        if self.sparse != old.sparse {
            what.push("sparse");
        }
        what
    }

    /// True when the user-visible state differs (ignores the stat cache).
    pub fn differs_from(&self, old: &Entry) -> bool {
        !self.changes_from(old).is_empty()
    }
}

/// The order of members in archives: component by component (as if `/` sorted before every
/// other byte), so that everything below a folder directly follows the folder. GNU tar relies on
/// that to restore folder times. (Snapshots, the manifest and plans use plain byte order, in
/// which a folder also precedes what it holds.)
pub fn path_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => key(a[i]).cmp(&key(b[i])),
        None => a.len().cmp(&b.len()),
    }
}

/// Sorts entries in path byte order, the order of snapshots and plans.
pub fn sort_entries(entries: &mut [Entry]) {
    entries.sort_unstable_by(|x, y| x.path.cmp(&y.path));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_contents_follow_the_folder() {
        let mut v: Vec<&[u8]> = vec![b"empty.txt", b"empty/folder", b"empty", b"a/b", b"a-b"];
        v.sort_by(|a, b| path_cmp(a, b));
        assert_eq!(
            v,
            [&b"a/b"[..], b"a-b", b"empty", b"empty/folder", b"empty.txt"]
        );
    }
}
