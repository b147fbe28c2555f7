//! Reading archives back: a streaming walk over the members of one archive, decompressing as
//! it goes. The caller decides what to do with each member; nothing is extracted here.
//!
//! Promises: member names are returned as raw bytes exactly as stored (GNU long names and PAX
//! paths resolved by tar-rs); entry types are reported, never acted on; a member's data can be
//! read only up to its declared size.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::Compression;

/// What kind of member it is. Only `Regular` members ever carry content restore uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberKind {
    Regular,
    Directory,
    Symlink,
    HardLink,
    /// Anything else (devices, FIFOs, PAX/GNU extension records left over, …).
    Other(u8),
}

/// One member, with its data readable through `data`.
pub struct Member<'a> {
    pub name: Vec<u8>,
    pub kind: MemberKind,
    /// The file's size (for a sparse member, its logical size).
    pub size: u64,
    /// Bytes of member data (for a sparse member: its map block and data regions).
    pub stored: u64,
    /// A PAX `GNU.sparse` 1.0 member: `data` starts with the map block (see `sparse`).
    pub sparse: bool,
    /// The header's modification time, whole seconds.
    pub mtime: u64,
    pub data: &'a mut dyn Read,
}

impl std::fmt::Debug for Member<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &String::from_utf8_lossy(&self.name))
            .field("kind", &self.kind)
            .field("size", &self.size)
            .field("sparse", &self.sparse)
            .finish()
    }
}

/// Errors reading an archive. Each names the archive.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("archive {path} is missing")]
    Missing { path: PathBuf },
    #[error("archive {path} is damaged: {source}")]
    Damaged {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open archive {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The manifest names a member the archive does not hold.
    #[error("archive {path} is damaged: it holds no member {member}")]
    NoMember { path: PathBuf, member: String },
    /// A member's size (a sparse member's: its map's) is not the one the manifest recorded.
    #[error(
        "archive {path} is damaged: member {member} has {got} bytes, the manifest says {want}"
    )]
    SizeMismatch {
        path: PathBuf,
        member: String,
        got: u64,
        want: u64,
    },
    /// A member's content does not have the digest the manifest recorded.
    #[error(
        "archive {path} is damaged: member {member} has digest {got}, the manifest recorded {want}"
    )]
    DigestMismatch {
        path: PathBuf,
        member: String,
        got: crate::hash::Digest,
        want: crate::hash::Digest,
    },
}

/// Whether to go on after a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Guesses the codec from an archive's name.
pub fn compression_of(path: &Path) -> Compression {
    let n = path.to_string_lossy();
    if n.ends_with(".tar.gz") || n.ends_with(".tgz") {
        Compression::Gzip
    } else if n.ends_with(".tar.zst") {
        Compression::Zstd
    } else {
        Compression::None
    }
}

fn decoder(path: &Path, compression: Compression) -> Result<Box<dyn Read + Send>, ReadError> {
    let f = File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ReadError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            ReadError::Open {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    let f = BufReader::with_capacity(256 * 1024, f);
    Ok(match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(f).map_err(|e| {
                ReadError::Damaged {
                    path: path.to_path_buf(),
                    source: e,
                }
            })?)
        }
        Compression::None => Box::new(f),
    })
}

/// The PAX records of an extended header, parsed by their length fields (values may hold any
/// byte, newlines included, as extended attributes do).
pub fn pax_records(mut data: &[u8]) -> io::Result<Vec<(&[u8], &[u8])>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed PAX record");
    let mut out = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let sp = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        out.push((&rec[..eq], &rec[eq + 1..]));
        data = &data[len..];
    }
    Ok(out)
}

/// What the extension headers before a member said.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl Pending {
    /// The member's name, size, and whether it is a PAX `GNU.sparse` 1.0 member.
    fn resolve(&self, header_name: &[u8], stored: u64) -> io::Result<(Vec<u8>, u64, bool)> {
        let mut name = self
            .long_name
            .clone()
            .unwrap_or_else(|| header_name.to_vec());
        let (mut major, mut sparse_name, mut real) = (None, None, None);
        for (k, v) in pax_records(self.pax.as_deref().unwrap_or_default())? {
            match k {
                b"path" => name = v.to_vec(),
                // The data was read by the header's size; a PAX size that says otherwise is
                // a desync (hostile or damaged), never followed.
                b"size" if std::str::from_utf8(v).ok() != Some(&stored.to_string()) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "PAX size {} disagrees with its header's {stored}",
                            String::from_utf8_lossy(v)
                        ),
                    ));
                }
                b"GNU.sparse.major" => major = Some(v.to_vec()),
                b"GNU.sparse.name" => sparse_name = Some(v.to_vec()),
                b"GNU.sparse.realsize" => {
                    real = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok())
                }
                _ => {}
            }
        }
        match (major.as_deref(), sparse_name, real) {
            (None, _, _) => Ok((name, stored, false)),
            (Some(b"1"), Some(n), Some(r)) => Ok((n, r, true)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a sparse member of a format other than PAX GNU.sparse 1.0",
            )),
        }
    }
}

fn member_kind(t: tar::EntryType) -> MemberKind {
    match t {
        tar::EntryType::Regular | tar::EntryType::Continuous => MemberKind::Regular,
        tar::EntryType::Directory => MemberKind::Directory,
        tar::EntryType::Symlink => MemberKind::Symlink,
        tar::EntryType::Link => MemberKind::HardLink,
        other => MemberKind::Other(other.as_byte()),
    }
}

/// Streams every member of the archive at `path` through `f`, in archive order. An error
/// returned by `f` stops the walk and is returned as `Err(Ok(e))`; a damaged archive is
/// `Err(Err(..))`.
pub fn for_each_member<E>(
    path: &Path,
    compression: Compression,
    f: impl FnMut(Member<'_>) -> Result<Flow, E>,
) -> Result<(), Result<E, ReadError>> {
    let r = decoder(path, compression).map_err(Err)?;
    for_each_member_in(r, path, f)
}

/// Streams every member of the uncompressed tar stream `r` through `f`, as
/// [`for_each_member`] does; `path` names the stream in errors.
pub fn for_each_member_in<E>(
    r: impl Read,
    path: &Path,
    mut f: impl FnMut(Member<'_>) -> Result<Flow, E>,
) -> Result<(), Result<E, ReadError>> {
    let damaged = |e: io::Error| ReadError::Damaged {
        path: path.to_path_buf(),
        source: e,
    };
    let mut archive = tar::Archive::new(r);
    // Raw: extension headers are read here, with a PAX parser that takes any value bytes.
    let entries = archive.entries().map_err(|e| Err(damaged(e)))?.raw(true);
    let mut pending = Pending::default();
    for entry in entries {
        let mut entry = entry.map_err(|e| Err(damaged(e)))?;
        let t = entry.header().entry_type();
        if t.is_pax_local_extensions() || t.is_gnu_longname() {
            let mut data = Vec::new();
            let r = (&mut entry).take(64 << 20).read_to_end(&mut data);
            r.map_err(|e| Err(damaged(e)))?;
            if t.is_gnu_longname() {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                data.truncate(end);
                pending.long_name = Some(data);
            } else {
                pending.pax = Some(data);
            }
            continue;
        }
        if t.is_pax_global_extensions() || t.is_gnu_longlink() {
            continue;
        }
        let kind = member_kind(t);
        let stored = entry.size();
        let header_name = entry.header().path_bytes().into_owned();
        let resolved = std::mem::take(&mut pending).resolve(&header_name, stored);
        let (name, size, sparse) = resolved.map_err(|e| Err(damaged(e)))?;
        let mtime = entry.header().mtime().unwrap_or(0);
        let flow = f(Member {
            name,
            kind,
            size,
            stored,
            sparse,
            mtime,
            data: &mut entry,
        })
        .map_err(Ok)?;
        if flow == Flow::Stop {
            break;
        }
    }
    Ok(())
}
