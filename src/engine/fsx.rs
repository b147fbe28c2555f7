//! Descriptor-relative filesystem operations for restore: every path below the target is
//! reached by `openat` one component at a time with `O_NOFOLLOW`, so a symlink (planted by an
//! archive, by a hostile manifest, or already in the target) is never followed.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::xattr::{self, Xattrs};

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens the restore target itself (following the user's own path, as any tool would).
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: valid C string; the returned fd is owned by us.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens folder `name` in `dir`, refusing symlinks and non-folders.
pub fn open_dir_at(dir: RawFd, name: &[u8]) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: valid C string and directory fd.
    let fd = check(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Walks `components` from `root`, each with `O_NOFOLLOW`; returns the last folder's fd.
pub fn open_path(root: RawFd, components: &[&[u8]]) -> io::Result<OwnedFd> {
    let mut cur = open_dir_at(root, b".")?;
    for c in components {
        cur = open_dir_at(cur.as_raw_fd(), c)?;
    }
    Ok(cur)
}

/// What is at `name` in `dir`, without following a symlink.
pub fn lstat_at(dir: RawFd, name: &[u8]) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    // SAFETY: valid C string; st is written by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        return Ok(Some(st));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::NotFound {
        Ok(None)
    } else {
        Err(e)
    }
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn mkdir_at(dir: RawFd, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string and fd.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// Creates a new file (never an existing one, never through a symlink), mode 0600.
pub fn create_excl_at(dir: RawFd, name: &[u8]) -> io::Result<std::fs::File> {
    let c = cstr(name)?;
    // SAFETY: valid C string and fd.
    let fd = check(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    })?;
    // SAFETY: fresh fd, handed to File which owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Opens `name` in `dir` for reading, never through a symlink, and never blocking on (or
/// reading from) a FIFO swapped in under the name. The caller checks what it opened.
pub fn open_nofollow_at(dir: RawFd, name: &[u8]) -> io::Result<std::fs::File> {
    let c = cstr(name)?;
    // SAFETY: valid C string and fd.
    let fd = check(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    })?;
    // SAFETY: fresh fd, handed to File which owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Opens an existing regular file for reading, never through a symlink, and never blocking
/// on (or reading from) a FIFO or device swapped in under the name.
pub fn open_file_at(dir: RawFd, name: &[u8]) -> io::Result<std::fs::File> {
    let f = open_nofollow_at(dir, name)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

pub fn rename_at(dir: RawFd, from: &[u8], to: &[u8]) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: valid C strings and fd.
    check(unsafe { libc::renameat(dir, f.as_ptr(), dir, t.as_ptr()) }).map(drop)
}

pub fn unlink_at(dir: RawFd, name: &[u8], is_dir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid C string and fd.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) }).map(drop)
}

pub fn symlink_at(target: &[u8], dir: RawFd, name: &[u8]) -> io::Result<()> {
    let (t, n) = (cstr(target)?, cstr(name)?);
    // SAFETY: valid C strings and fd.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, n.as_ptr()) }).map(drop)
}

pub fn link_at(from_dir: RawFd, from: &[u8], to_dir: RawFd, to: &[u8]) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: valid C strings and fds; flags 0 never follows a symlink `from`.
    check(unsafe { libc::linkat(from_dir, f.as_ptr(), to_dir, t.as_ptr(), 0) }).map(drop)
}

fn times(mtime_ns: i64) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    [ts, ts]
}

/// The metadata restore gives a path, set in this order: owner (chown clears setuid bits and
/// file capabilities), extended attributes (ACLs, capabilities), mode (after the ACL, whose
/// mask it sets), mtime last.
#[derive(Clone, Copy, Debug)]
pub struct Meta<'a> {
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
    pub mtime_ns: i64,
    pub xattrs: Option<&'a Xattrs>,
}

/// Sets the metadata of an open file or folder. Attributes the file system refuses are
/// returned (the rest is still set); any other failure is an error.
pub fn set_meta_fd(fd: RawFd, m: &Meta) -> io::Result<Vec<xattr::SetError>> {
    // SAFETY: plain syscalls on an fd we hold.
    unsafe {
        if let Some((u, g)) = m.owner {
            check(libc::fchown(fd, u, g))?;
        }
    }
    let refused = m.xattrs.map(|x| xattr::set_fd(fd, x)).unwrap_or_default();
    // SAFETY: as above.
    unsafe {
        check(libc::fchmod(fd, m.mode as libc::mode_t))?;
        let t = times(m.mtime_ns);
        check(libc::futimens(fd, t.as_ptr()))?;
    }
    Ok(refused)
}

/// Sets owner, attributes and mtime of a symlink itself (a symlink has no mode of its own).
pub fn set_symlink_meta_at(dir: RawFd, name: &[u8], m: &Meta) -> io::Result<Vec<xattr::SetError>> {
    let c = cstr(name)?;
    // SAFETY: valid C string and fd; AT_SYMLINK_NOFOLLOW acts on the link itself.
    unsafe {
        if let Some((u, g)) = m.owner {
            check(libc::fchownat(
                dir,
                c.as_ptr(),
                u,
                g,
                libc::AT_SYMLINK_NOFOLLOW,
            ))?;
        }
    }
    let refused = m
        .xattrs
        .map(|x| xattr::set_at(dir, name, x))
        .unwrap_or_default();
    let t = times(m.mtime_ns);
    // SAFETY: as above.
    check(unsafe { libc::utimensat(dir, c.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(refused)
}

/// Makes a FIFO or device node `name` in `dir` (`kind` is `S_IFIFO`, `S_IFCHR` or `S_IFBLK`)
/// and gives it its metadata. The mode is set through an `O_PATH` descriptor of the node just
/// made, so a symlink swapped in under the name is never followed.
pub fn mknod_at(
    dir: RawFd,
    name: &[u8],
    kind: u32,
    rdev: u64,
    m: &Meta,
) -> io::Result<Vec<xattr::SetError>> {
    let c = cstr(name)?;
    // SAFETY: valid C string and fd.
    check(unsafe { libc::mknodat(dir, c.as_ptr(), kind | 0o600, rdev as libc::dev_t) })?;
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid C string and fd; the fd is owned right away.
    let fd = unsafe { OwnedFd::from_raw_fd(check(libc::openat(dir, c.as_ptr(), flags))?) };
    // SAFETY: fstat into a zeroed struct on an fd we hold.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    if st.st_mode & libc::S_IFMT != kind {
        return Err(io::Error::other("replaced while it was made"));
    }
    let empty = c"";
    // SAFETY: AT_EMPTY_PATH acts on the O_PATH fd itself.
    unsafe {
        if let Some((u, g)) = m.owner {
            check(libc::fchownat(
                fd.as_raw_fd(),
                empty.as_ptr(),
                u,
                g,
                libc::AT_EMPTY_PATH,
            ))?;
        }
    }
    let refused = m
        .xattrs
        .map(|x| xattr::set_at(dir, name, x))
        .unwrap_or_default();
    let proc_path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
    let t = times(m.mtime_ns);
    // SAFETY: the /proc path names the node held by `fd`, not whatever is at `name` now.
    unsafe {
        check(libc::chmod(proc_path.as_ptr(), m.mode as libc::mode_t))?;
        check(libc::utimensat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            t.as_ptr(),
            0,
        ))?;
    }
    Ok(refused)
}

/// The names in an open folder (not `.` and `..`).
pub fn list_dir(dir: RawFd) -> io::Result<Vec<Vec<u8>>> {
    // SAFETY: dup gives fdopendir an fd of its own, which closedir closes.
    unsafe {
        let fd = check(libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 0))?;
        let d = libc::fdopendir(fd);
        if d.is_null() {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        libc::rewinddir(d);
        let mut out = Vec::new();
        loop {
            let ent = libc::readdir(d);
            if ent.is_null() {
                break;
            }
            let name = CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes();
            if name != b"." && name != b".." {
                out.push(name.to_vec());
            }
        }
        libc::closedir(d);
        Ok(out)
    }
}

/// Removes `name` in `dir` and, if it is a folder, everything in it; never follows symlinks.
pub fn remove_tree_at(dir: RawFd, name: &[u8]) -> io::Result<()> {
    match lstat_at(dir, name)? {
        None => Ok(()),
        Some(st) if is_dir(&st) => {
            let sub = open_dir_at(dir, name)?;
            for child in list_dir(sub.as_raw_fd())? {
                remove_tree_at(sub.as_raw_fd(), &child)?;
            }
            drop(sub);
            unlink_at(dir, name, true)
        }
        Some(_) => unlink_at(dir, name, false),
    }
}

/// `p` made absolute with symlinks resolved as far as it exists (the rest, which does not
/// exist yet, appended as given): where `p` is or will be.
pub fn resolve_path(p: &Path) -> std::path::PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) if parent != abs => resolve_path(parent).join(name),
        _ => abs,
    }
}

/// The folder of the path handled last, kept open so that the names that follow in it are
/// looked up from it (`openat` and its kind): a run of paths in one folder costs one path walk
/// instead of one a path. Callers forget it at each batch, so that a folder renamed (or
/// swapped) meanwhile is looked up afresh within moments, as a path per file would be.
#[derive(Debug, Default)]
pub struct FolderCache {
    dir: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl FolderCache {
    /// The open folder `dir` (relative to `root`, `/`-separated; empty: `root` itself).
    pub fn open(&mut self, root: &Path, dir: &[u8]) -> io::Result<RawFd> {
        match &self.fd {
            Some(fd) if self.dir == dir => Ok(fd.as_raw_fd()),
            _ => {
                self.fd = None;
                let abs = if dir.is_empty() {
                    root.to_path_buf()
                } else {
                    root.join(std::ffi::OsStr::from_bytes(dir))
                };
                let d = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                    .open(abs)?;
                self.dir = dir.to_vec();
                Ok(self.fd.insert(OwnedFd::from(d)).as_raw_fd())
            }
        }
    }

    /// Lets the open folder go.
    pub fn forget(&mut self) {
        self.fd = None;
    }
}
