//! Extended attributes (POSIX ACLs and file capabilities included): reading them from a path,
//! their manifest encoding, setting them back, and the text form of an ACL that GNU tar's
//! `--acls` reads (`SCHILY.acl.access`).
//!
//! Every namespace the running user may read is kept (`user.*`, `trusted.*` as root,
//! `security.*`, `system.posix_acl_*`). Names are raw bytes (no NUL); values are raw bytes.

use std::ffi::CString;
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
    // SAFETY: valid C string; the buffer pointer and length come from `sized`.
    let names = sized(|p, n| unsafe { libc::llistxattr(c.as_ptr(), p.cast(), n) });
    let names = match names {
        Ok(n) if n.is_empty() => return Ok(None),
        Ok(n) => n,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).expect("split on NUL");
        // SAFETY: valid C strings; buffer from `sized`.
        let v = sized(|p, n| unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), p, n) });
        match v {
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
