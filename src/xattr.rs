//! Extended attributes (POSIX ACLs and file capabilities included): reading them from a path,
//! their manifest encoding, setting them back, and the text form of an ACL that GNU tar's
//! `--acls` reads (`SCHILY.acl.access`).
//!
//! Every namespace the running user may read is kept (`user.*`, `trusted.*` as root,
//! `security.*`, `system.posix_acl_*`). Names are raw bytes (no NUL); values are raw bytes.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The extended attributes of one path, sorted by name. Never empty (no attributes: `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Xattrs(pub Vec<(Vec<u8>, Vec<u8>)>);

/// Why an attribute could not be set back.
#[derive(Debug, thiserror::Error)]
#[error("cannot set extended attribute {name}: {source}")]
pub struct SetError {
    pub name: String,
    #[source]
    pub source: io::Error,
}

const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

impl Xattrs {
    /// The manifest form: for each attribute its name, a NUL, the value's length as 4 bytes
    /// little-endian, and the value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in &self.0 {
            out.extend_from_slice(n);
            out.push(0);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    /// Reads the manifest form back; None when it is malformed.
    pub fn decode(mut b: &[u8]) -> Option<Xattrs> {
        let mut v = Vec::new();
        while !b.is_empty() {
            let nul = b.iter().position(|&c| c == 0)?;
            let name = b[..nul].to_vec();
            let len = u32::from_le_bytes(b.get(nul + 1..nul + 5)?.try_into().ok()?) as usize;
            let start = nul + 5;
            let value = b.get(start..start.checked_add(len)?)?.to_vec();
            if name.is_empty() {
                return None;
            }
            v.push((name, value));
            b = &b[start + len..];
        }
        (!v.is_empty()).then_some(Xattrs(v))
    }

    /// The POSIX ACLs as GNU tar's text records: (`SCHILY.acl.access` or `.default`, text).
    pub fn acl_records(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (n, v) in &self.0 {
            let key = match n.as_slice() {
                ACL_ACCESS => "SCHILY.acl.access",
                ACL_DEFAULT => "SCHILY.acl.default",
                _ => continue,
            };
            if let Some(t) = acl_text(v) {
                out.push((key, t));
            }
        }
        out
    }
}

/// The text form (`user::rw-\nuser:1000:r--\n…`, numeric ids) of a binary ACL value as the
/// kernel stores it (version 2, then 8-byte entries of tag, permissions and id).
pub fn acl_text(v: &[u8]) -> Option<String> {
    if v.len() < 4 || (v.len() - 4) % 8 != 0 || v[..4] != [2, 0, 0, 0] {
        return None;
    }
    let mut out = String::new();
    for e in v[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let (what, qualified) = match tag {
            0x01 => ("user", false),
            0x02 => ("user", true),
            0x04 => ("group", false),
            0x08 => ("group", true),
            0x10 => ("mask", false),
            0x20 => ("other", false),
            _ => return None,
        };
        let q = if qualified {
            id.to_string()
        } else {
            String::new()
        };
        let bit = |b: u16, c: char| if perm & b != 0 { c } else { '-' };
        out.push_str(&format!(
            "{what}:{q}:{}{}{}\n",
            bit(4, 'r'),
            bit(2, 'w'),
            bit(1, 'x')
        ));
    }
    Some(out)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Runs a list/get call that fills a buffer, growing it while the answer is too big.
fn sized(mut call: impl FnMut(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = call(buf.as_mut_ptr().cast(), buf.len());
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || buf.len() > 1 << 24 {
            return Err(e);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// The attributes of `path` itself (a symlink is not followed). One `llistxattr` when there
/// are none. A file system without attribute support reads as none; a value that vanished
/// in between is left out.
pub fn read_path(path: &Path) -> io::Result<Option<Xattrs>> {
    let c = cpath(path)?;
    read_with(
        // SAFETY: valid C string; the buffer pointer and length come from `sized`.
        |p, n| unsafe { libc::llistxattr(c.as_ptr(), p.cast(), n) },
        // SAFETY: valid C strings; buffer from `sized`.
        |attr, p, n| unsafe { libc::lgetxattr(c.as_ptr(), attr.as_ptr(), p, n) },
    )
}

/// As [`read_path`], for an open file: no lookup at all.
pub fn read_fd(fd: RawFd) -> io::Result<Option<Xattrs>> {
    read_with(
        // SAFETY: an open descriptor; the buffer pointer and length come from `sized`.
        |p, n| unsafe { libc::flistxattr(fd, p.cast(), n) },
        // SAFETY: as above, and a valid C string.
        |attr, p, n| unsafe { libc::fgetxattr(fd, attr.as_ptr(), p, n) },
    )
}

/// `listxattrat` and `getxattrat` (Linux 6.13; one number on every architecture since).
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;

/// `struct xattr_args` of `getxattrat`.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// As [`read_path`], for `name` in the open folder `dir`: the kernel looks up one name, not
/// the whole path again. Fails with `ENOSYS` before Linux 6.13 (the caller then reads by
/// path).
pub fn read_at(dir: RawFd, name: &CStr) -> io::Result<Option<Xattrs>> {
    let nofollow = libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
    read_with(
        // SAFETY: an open folder, a valid C string; buffer pointer and length from `sized`.
        |p, n| unsafe {
            libc::syscall(SYS_LISTXATTRAT, dir, name.as_ptr(), nofollow, p, n) as isize
        },
        |attr, p, n| {
            let mut args = XattrArgs {
                value: p as u64,
                size: u32::try_from(n).unwrap_or(u32::MAX),
                flags: 0,
            };
            let (a, len) = (
                &mut args as *mut XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            );
            // SAFETY: as above; `args` points at the buffer from `sized` and lives across the
            // call, `len` is its size.
            unsafe {
                libc::syscall(
                    SYS_GETXATTRAT,
                    dir,
                    name.as_ptr(),
                    nofollow,
                    attr.as_ptr(),
                    a,
                    len,
                ) as isize
            }
        },
    )
}

/// Lists the names with `list`, then reads each value with `get`.
fn read_with(
    list: impl FnMut(*mut libc::c_void, usize) -> isize,
    mut get: impl FnMut(&CStr, *mut libc::c_void, usize) -> isize,
) -> io::Result<Option<Xattrs>> {
    let names = match sized(list) {
        Ok(n) if n.is_empty() => return Ok(None),
        Ok(n) => n,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).expect("split on NUL");
        match sized(|p, n| get(&cn, p, n)) {
            Ok(v) => out.push((name.to_vec(), v)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok((!out.is_empty()).then_some(Xattrs(out)))
}

fn set_err(name: &[u8], e: io::Error) -> SetError {
    SetError {
        name: String::from_utf8_lossy(name).into_owned(),
        source: e,
    }
}

/// Sets every attribute of `x` with `set` (a C name, the value; 0 on success); returns the
/// ones refused.
fn set_each(x: &Xattrs, set: impl Fn(&CString, &[u8]) -> libc::c_int) -> Vec<SetError> {
    let mut refused = Vec::new();
    for (name, value) in &x.0 {
        let Ok(cn) = CString::new(name.as_slice()) else {
            continue;
        };
        if set(&cn, value) != 0 {
            refused.push(set_err(name, io::Error::last_os_error()));
        }
    }
    refused
}

/// Sets every attribute on an open file or folder; returns the ones refused.
pub fn set_fd(fd: RawFd, x: &Xattrs) -> Vec<SetError> {
    // SAFETY: fd held by the caller; valid C string and slice.
    set_each(x, |n, v| unsafe {
        libc::fsetxattr(fd, n.as_ptr(), v.as_ptr().cast(), v.len(), 0)
    })
}

/// Sets every attribute on `name` in the open folder `dir`, not following a symlink there.
pub fn set_at(dir: RawFd, name: &[u8], x: &Xattrs) -> Vec<SetError> {
    let mut p = format!("/proc/self/fd/{dir}/").into_bytes();
    p.extend_from_slice(name);
    let Ok(cp) = CString::new(p) else {
        return vec![set_err(b"*", io::Error::from(io::ErrorKind::InvalidInput))];
    };
    // SAFETY: valid C strings and slice; lsetxattr acts on the last component itself.
    set_each(x, |n, v| unsafe {
        libc::lsetxattr(cp.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_from_the_folder_gives_what_reading_by_path_gives() {
        use std::os::fd::AsRawFd;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        std::fs::write(d.path().join("none"), b"x").unwrap();
        let x = Xattrs(vec![
            (b"user.a".to_vec(), b"1".to_vec()),
            (b"user.big".to_vec(), vec![7; 1000]),
        ]);
        let dir = std::fs::File::open(d.path()).unwrap();
        assert!(set_at(dir.as_raw_fd(), b"f", &x).is_empty());
        for name in ["f", "none"] {
            let by_path = read_path(&d.path().join(name)).unwrap();
            let c = CString::new(name).unwrap();
            match read_at(dir.as_raw_fd(), &c) {
                Ok(at) => assert_eq!(at, by_path),
                // A kernel before 6.13: the caller reads by path instead.
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSYS)),
            }
        }
        assert_eq!(read_path(&d.path().join("f")).unwrap(), Some(x));
    }

    #[test]
    fn encoding_round_trips_and_rejects_damage() {
        let x = Xattrs(vec![
            (b"security.capability".to_vec(), vec![1, 0, 0, 2, 0, 0x20]),
            (b"user.bin".to_vec(), vec![0, 0xff, 1]),
            (b"user.empty".to_vec(), vec![]),
        ]);
        let e = x.encode();
        assert_eq!(Xattrs::decode(&e), Some(x));
        assert_eq!(Xattrs::decode(&e[..e.len() - 1]), None);
        assert_eq!(Xattrs::decode(b"\0\0\0\0\0"), None);
    }

    #[test]
    fn acl_text_is_what_getfacl_shows() {
        let mut v = vec![2, 0, 0, 0];
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 6, 1234),
            (4, 4, u32::MAX),
            (0x10, 6, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(
            acl_text(&v).unwrap(),
            "user::rw-\nuser:1234:rw-\ngroup::r--\nmask::rw-\nother::r--\n"
        );
        assert_eq!(acl_text(&v[..7]), None);
    }
}
