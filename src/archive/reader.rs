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
    pub size: u64,
    pub data: &'a mut dyn Read,
}

impl std::fmt::Debug for Member<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &String::from_utf8_lossy(&self.name))
            .field("kind", &self.kind)
            .field("size", &self.size)
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

/// Streams every member of the archive at `path` through `f`, in archive order. An error
/// returned by `f` stops the walk and is returned as `Err(Ok(e))`; a damaged archive is
/// `Err(Err(..))`.
pub fn for_each_member<E>(
    path: &Path,
    compression: Compression,
    mut f: impl FnMut(Member<'_>) -> Result<Flow, E>,
) -> Result<(), Result<E, ReadError>> {
    let damaged = |e: io::Error| ReadError::Damaged {
        path: path.to_path_buf(),
        source: e,
    };
    let mut archive = tar::Archive::new(decoder(path, compression).map_err(Err)?);
    let entries = archive.entries().map_err(|e| Err(damaged(e)))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Err(damaged(e)))?;
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => MemberKind::Regular,
            tar::EntryType::Directory => MemberKind::Directory,
            tar::EntryType::Symlink => MemberKind::Symlink,
            tar::EntryType::Link => MemberKind::HardLink,
            other => MemberKind::Other(other.as_byte()),
        };
        let name = entry.path_bytes().into_owned();
        let size = entry.size();
        let flow = f(Member {
            name,
            kind,
            size,
            data: &mut entry,
        })
        .map_err(Ok)?;
        if flow == Flow::Stop {
            break;
        }
    }
    Ok(())
}
