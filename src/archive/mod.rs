//! Archive files: tar streams compressed with gzip or zstd (or not at all). This is the only
//! module that touches the tar, flate2 and zstd crates.
//!
//! Promises:
//! - Archives are plain tar (GNU headers, GNU long names) that GNU tar, bsdtar and Python's
//!   `tarfile` read.
//! - An archive is written as `NAME.partial` and becomes `NAME` only in [`ArchiveWriter::finish`],
//!   after the tar end blocks, the compressor's trailer and an fsync of file and folder; nothing is
//!   finished in `Drop`. A writer dropped without `finish` removes its partial file.
//! - Every member written has exactly the size its header announces, even when the source file
//!   shrinks or grows while it is read ([`StreamOutcome`] reports that).
//! - The BLAKE3 of the archive bytes and their count are computed as they are written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

mod parallel;
pub mod reader;

use crate::hash::{Digest, HashAlgo, Hasher};
use crate::xattr::Xattrs;

/// Archive codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
    /// File name extension, dot included.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => ".tar.gz",
            Compression::Zstd => ".tar.zst",
            Compression::None => ".tar",
        }
    }
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
            Compression::None => 0,
        }
    }
    /// Checks a `--level` value for this codec.
    pub fn check_level(self, level: i32) -> Result<(), String> {
        let (lo, hi) = match self {
            Compression::Gzip => (0, 9),
            Compression::Zstd => (1, 22),
            Compression::None => (0, 0),
        };
        if (lo..=hi).contains(&level) {
            Ok(())
        } else {
            Err(format!(
                "level {level} is out of range for {} ({lo}..={hi})",
                self.name()
            ))
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            other => Err(format!(
                "unknown compression '{other}' (expected gzip, zstd or none)"
            )),
        }
    }
}

/// Errors of the archive layer. Each names the archive file.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("disk full while writing {path}")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write archive {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn write_err(path: &Path, e: io::Error) -> ArchiveError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        ArchiveError::DiskFull {
            path: path.to_path_buf(),
            source: e,
        }
    } else {
        ArchiveError::Write {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// Compresses everything `input` yields with the block-parallel codec of `compression` (what
/// archives use) into `out`; returns `out`. For benchmarks and tools.
pub fn compress_stream<W: Write + Send + 'static>(
    pool: &crate::pool::Pool,
    compression: Compression,
    level: i32,
    input: &mut dyn Read,
    out: W,
) -> io::Result<W> {
    let codec = match compression {
        Compression::Gzip => parallel::BlockCodec::Gzip {
            level: level.clamp(0, 9) as u32,
        },
        Compression::Zstd => parallel::BlockCodec::Zstd { level },
        Compression::None => {
            let mut out = out;
            io::copy(input, &mut out)?;
            return Ok(out);
        }
    };
    let mut w = parallel::ParallelWriter::new(pool, codec, out)?;
    io::copy(input, &mut w)?;
    w.finish()
}

/// Metadata written into a member header (and, where the header cannot hold it, into a PAX
/// record before it: mtime nanoseconds, extended attributes, ACLs).
#[derive(Clone, Copy, Debug)]
pub struct MemberMeta<'a> {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub xattrs: Option<&'a Xattrs>,
}

impl MemberMeta<'_> {
    /// The PAX records this member needs (none for whole-second mtimes and no attributes):
    /// `mtime` with nanoseconds, `SCHILY.xattr.NAME` for every attribute (GNU tar
    /// `--xattrs`, bsdtar) and `SCHILY.acl.access`/`.default` as GNU tar `--acls` writes them.
    fn pax_records(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let (secs, ns) = (
            self.mtime_ns.div_euclid(1_000_000_000),
            self.mtime_ns.rem_euclid(1_000_000_000),
        );
        if ns != 0 || secs < 0 {
            out.push(("mtime".to_string(), format!("{secs}.{ns:09}").into_bytes()));
        }
        if let Some(x) = self.xattrs {
            for (name, value) in &x.0 {
                if let Ok(n) = std::str::from_utf8(name) {
                    out.push((format!("SCHILY.xattr.{n}"), value.clone()));
                }
            }
            for (key, text) in x.acl_records() {
                out.push((key.to_string(), text.into_bytes()));
            }
        }
        out
    }
}

/// How streaming a file into the archive went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOutcome {
    /// Digest of the bytes stored (always exactly the announced size).
    pub digest: Digest,
    /// Bytes actually read from the source.
    pub bytes_read: u64,
    /// The source ended before the announced size; the rest was stored as zeros.
    pub shrank: bool,
    /// The source had more bytes than announced; they were not stored.
    pub grew: bool,
}

/// Counts and hashes the compressed bytes on their way to the file, and starts their
/// writeback every few MiB so that the final fsync has little left to wait for.
struct Sink {
    file: File,
    bytes: u64,
    hash: blake3::Hasher,
    flushed: u64,
}

const WRITEBACK_STEP: u64 = 8 << 20;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.bytes += n as u64;
        self.hash.update(&buf[..n]);
        if self.bytes - self.flushed >= WRITEBACK_STEP {
            use std::os::fd::AsRawFd;
            // SAFETY: a hint to the kernel on an fd we own; failure only loses the hint.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.flushed as libc::off64_t,
                    (self.bytes - self.flushed) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.flushed = self.bytes;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

enum Encoder {
    Parallel(Box<parallel::ParallelWriter<Sink>>),
    Plain(Box<io::BufWriter<Sink>>),
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Parallel(w) => w.write(buf),
            Encoder::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Parallel(w) => w.flush(),
            Encoder::Plain(w) => w.flush(),
        }
    }
}

impl Encoder {
    fn finish(self) -> io::Result<Sink> {
        match self {
            Encoder::Parallel(w) => w.finish(),
            Encoder::Plain(w) => w.into_inner().map_err(|e| e.into_error()),
        }
    }
}

/// A finished, durable archive.
#[derive(Clone, Debug)]
pub struct FinishedArchive {
    pub path: PathBuf,
    pub size: u64,
    pub blake3: [u8; 32],
}

/// Writes one archive. See the module promises.
pub struct ArchiveWriter {
    builder: Option<tar::Builder<Encoder>>,
    partial: PathBuf,
    final_path: PathBuf,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("partial", &self.partial)
            .finish()
    }
}

impl ArchiveWriter {
    /// Starts `final_path` as `final_path.partial` (created new, mode 0600). Compression runs
    /// in blocks on `pool`'s workers (see `parallel`).
    pub fn create(
        final_path: &Path,
        compression: Compression,
        level: i32,
        pool: &crate::pool::Pool,
    ) -> Result<ArchiveWriter, ArchiveError> {
        let mut partial = final_path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|e| write_err(&partial, e))?;
        let sink = Sink {
            file,
            bytes: 0,
            hash: blake3::Hasher::new(),
            flushed: 0,
        };
        let enc = match compression {
            Compression::Gzip | Compression::Zstd => {
                let codec = match compression {
                    Compression::Gzip => parallel::BlockCodec::Gzip {
                        level: level.clamp(0, 9) as u32,
                    },
                    _ => parallel::BlockCodec::Zstd { level },
                };
                let w = parallel::ParallelWriter::new(pool, codec, sink)
                    .map_err(|e| write_err(&partial, e))?;
                Encoder::Parallel(Box::new(w))
            }
            Compression::None => {
                Encoder::Plain(Box::new(io::BufWriter::with_capacity(1 << 20, sink)))
            }
        };
        let mut builder = tar::Builder::new(enc);
        builder.mode(tar::HeaderMode::Complete);
        builder.follow_symlinks(false);
        Ok(ArchiveWriter {
            builder: Some(builder),
            partial,
            final_path: final_path.to_path_buf(),
        })
    }

    fn builder(&mut self) -> &mut tar::Builder<Encoder> {
        self.builder
            .as_mut()
            .expect("archive writer used after finish")
    }

    /// The member's header, after writing the PAX record it needs (if any).
    fn header(
        &mut self,
        kind: tar::EntryType,
        meta: &MemberMeta,
        size: u64,
    ) -> Result<tar::Header, ArchiveError> {
        self.header_with(kind, meta, size, &[], false)
    }

    /// As [`Self::header`], with `extra` PAX records first (one extended header per member);
    /// `posix`: a ustar header instead of a GNU one (GNU tar reads PAX sparse maps only then).
    fn header_with(
        &mut self,
        kind: tar::EntryType,
        meta: &MemberMeta,
        size: u64,
        extra: &[(&str, &[u8])],
        posix: bool,
    ) -> Result<tar::Header, ArchiveError> {
        let pax = meta.pax_records();
        if !pax.is_empty() || !extra.is_empty() {
            let own = pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
            let records = extra.iter().copied().chain(own);
            let r = self.builder().append_pax_extensions(records);
            r.map_err(|e| write_err(&self.partial, e))?;
        }
        Ok(Self::plain_header(kind, meta, size, posix))
    }

    fn plain_header(
        kind: tar::EntryType,
        meta: &MemberMeta,
        size: u64,
        posix: bool,
    ) -> tar::Header {
        let mut h = if posix {
            tar::Header::new_ustar()
        } else {
            tar::Header::new_gnu()
        };
        h.set_entry_type(kind);
        h.set_mode(meta.mode & 0o7777);
        h.set_uid(meta.uid as u64);
        h.set_gid(meta.gid as u64);
        h.set_mtime(meta.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
        h.set_size(size);
        h
    }

    /// A directory member.
    pub fn add_dir(&mut self, name: &[u8], meta: &MemberMeta) -> Result<(), ArchiveError> {
        let mut h = self.header(tar::EntryType::Directory, meta, 0)?;
        let mut n = name.to_vec();
        if !n.ends_with(b"/") {
            n.push(b'/');
        }
        let r = self
            .builder()
            .append_data(&mut h, bytes_path(&n), io::empty());
        r.map_err(|e| write_err(&self.partial, e))
    }

    /// A symbolic link member (the link is stored, never followed).
    pub fn add_symlink(
        &mut self,
        name: &[u8],
        target: &[u8],
        meta: &MemberMeta,
    ) -> Result<(), ArchiveError> {
        let mut h = self.header(tar::EntryType::Symlink, meta, 0)?;
        let r = self
            .builder()
            .append_link(&mut h, bytes_path(name), bytes_path(target));
        r.map_err(|e| write_err(&self.partial, e))
    }

    /// A hard link member pointing at an earlier member of this archive.
    pub fn add_hardlink(
        &mut self,
        name: &[u8],
        earlier_member: &[u8],
        meta: &MemberMeta,
    ) -> Result<(), ArchiveError> {
        let mut h = self.header(tar::EntryType::Link, meta, 0)?;
        let r = self
            .builder()
            .append_link(&mut h, bytes_path(name), bytes_path(earlier_member));
        r.map_err(|e| write_err(&self.partial, e))
    }

    /// A FIFO or device node member (`kind` says which; `rdev` its device number).
    pub fn add_special(
        &mut self,
        name: &[u8],
        kind: crate::tree::EntryKind,
        rdev: u64,
        meta: &MemberMeta,
    ) -> Result<(), ArchiveError> {
        use crate::tree::EntryKind as K;
        let t = match kind {
            K::Fifo => tar::EntryType::Fifo,
            K::CharDevice => tar::EntryType::Char,
            K::BlockDevice => tar::EntryType::Block,
            _ => unreachable!("not a special file"),
        };
        let mut h = self.header(t, meta, 0)?;
        if kind != K::Fifo {
            let gnu = h.as_gnu_mut().expect("GNU header");
            gnu.set_device_major(libc::major(rdev));
            gnu.set_device_minor(libc::minor(rdev));
        }
        let r = self
            .builder()
            .append_data(&mut h, bytes_path(name), io::empty());
        r.map_err(|e| write_err(&self.partial, e))
    }

    /// A regular file member from bytes in memory.
    pub fn add_file_bytes(
        &mut self,
        name: &[u8],
        meta: &MemberMeta,
        data: &[u8],
    ) -> Result<(), ArchiveError> {
        let mut h = self.header(tar::EntryType::Regular, meta, data.len() as u64)?;
        let r = self.builder().append_data(&mut h, bytes_path(name), data);
        r.map_err(|e| write_err(&self.partial, e))
    }

    /// A regular file member of exactly `size` bytes streamed from `src`, hashed on the way.
    /// Read errors from `src` are returned as `Err(Ok(io_error))` after the member has been
    /// completed with zeros, so the archive stays valid; write errors are `Err(Err(..))`.
    pub fn add_file_stream(
        &mut self,
        name: &[u8],
        meta: &MemberMeta,
        size: u64,
        src: &mut dyn Read,
        algo: HashAlgo,
    ) -> Result<StreamOutcome, Result<io::Error, ArchiveError>> {
        self.stream_member(name, meta, size, src, algo, None)
    }

    fn stream_member(
        &mut self,
        name: &[u8],
        meta: &MemberMeta,
        size: u64,
        src: &mut dyn Read,
        algo: HashAlgo,
        sparse: Option<&[(&str, &[u8])]>,
    ) -> Result<StreamOutcome, Result<io::Error, ArchiveError>> {
        // A sparse member: its records, and a ustar header (see `header_with`).
        let (extra, posix) = (sparse.unwrap_or_default(), sparse.is_some());
        let kind = tar::EntryType::Regular;
        let mut h = self
            .header_with(kind, meta, size, extra, posix)
            .map_err(Err)?;
        let mut reader = ExactReader {
            src,
            remaining: size,
            hasher: algo.hasher(),
            read: 0,
            shrank: false,
            read_error: None,
        };
        let r = self
            .builder
            .as_mut()
            .expect("archive writer used after finish")
            .append_data(&mut h, bytes_path(name), &mut reader);
        let ExactReader {
            hasher,
            read,
            shrank,
            read_error,
            src,
            ..
        } = reader;
        if let Err(e) = r {
            return Err(Err(write_err(&self.partial, e)));
        }
        if let Some(e) = read_error {
            return Err(Ok(e));
        }
        // One more byte tells whether the file grew while it was read.
        let grew = !shrank && matches!(src.read(&mut [0u8; 1]), Ok(n) if n > 0);
        Ok(StreamOutcome {
            digest: hasher.finish(),
            bytes_read: read,
            shrank,
            grew,
        })
    }

    /// A sparse file's member (PAX `GNU.sparse` 1.0, which GNU tar and bsdtar restore with
    /// holes): the map block and the data regions of `file`, hashed on the way (the digest of
    /// a sparse file is that of its member data; see `sparse`). Errors as for
    /// [`ArchiveWriter::add_file_stream`].
    pub fn add_sparse_stream(
        &mut self,
        name: &[u8],
        meta: &MemberMeta,
        map: &crate::sparse::Map,
        file: &File,
        algo: HashAlgo,
    ) -> Result<StreamOutcome, Result<io::Error, ArchiveError>> {
        let (real, size) = (map.real_size().to_string(), map.member_len());
        let size_text = size.to_string();
        let mut records = vec![
            ("GNU.sparse.major", &b"1"[..]),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", name),
            ("GNU.sparse.realsize", real.as_bytes()),
        ];
        if size >= 1 << 33 {
            records.push(("size", size_text.as_bytes())); // beyond the ustar size field
        }
        // The header's own name, as GNU tar writes it (short, so it needs no long-name
        // record); readers that know PAX 1.0 use GNU.sparse.name instead.
        let base = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
        let mut shown = b"GNUSparseFile.0/".to_vec();
        shown.extend_from_slice(&base[..base.len().min(80)]);
        let mut stream = crate::sparse::MemberStream::new(file, map);
        let mut o = self.stream_member(&shown, meta, size, &mut stream, algo, Some(&records))?;
        o.shrank |= stream.shrank;
        o.bytes_read = o.bytes_read.saturating_sub(size - map.data_len());
        Ok(o)
    }

    /// Writes the tar end blocks and the compressor trailer, fsyncs, renames the partial file to
    /// its final name and fsyncs the folder.
    pub fn finish(mut self) -> Result<FinishedArchive, ArchiveError> {
        let builder = self.builder.take().expect("finish called twice");
        let p = self.partial.clone();
        let sealed = (|| -> Result<Sink, ArchiveError> {
            let enc = builder.into_inner().map_err(|e| write_err(&p, e))?;
            let mut sink = enc.finish().map_err(|e| write_err(&p, e))?;
            sink.file.flush().map_err(|e| write_err(&p, e))?;
            sink.file.sync_all().map_err(|e| write_err(&p, e))?;
            fs::rename(&self.partial, &self.final_path).map_err(|e| write_err(&p, e))?;
            Ok(sink)
        })();
        let sink = match sealed {
            Ok(s) => s,
            Err(e) => {
                let _ = fs::remove_file(&self.partial);
                return Err(e);
            }
        };
        if let Some(dir) = self.final_path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| write_err(dir, e))?;
        }
        Ok(FinishedArchive {
            path: self.final_path.clone(),
            size: sink.bytes,
            blake3: *sink.hash.finalize().as_bytes(),
        })
    }
}

impl Drop for ArchiveWriter {
    fn drop(&mut self) {
        // Abandoned without `finish`: the partial file must not survive to look like an
        // archive. (Dropping the builder may try to write end blocks; that is harmless.)
        if let Some(b) = self.builder.take() {
            drop(b);
            let _ = fs::remove_file(&self.partial);
        }
    }
}

fn bytes_path(b: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(b))
}

/// Yields exactly `remaining` bytes: the source's, then zeros if it ends early or fails.
struct ExactReader<'a> {
    src: &'a mut dyn Read,
    remaining: u64,
    hasher: Hasher,
    read: u64,
    shrank: bool,
    read_error: Option<io::Error>,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = out
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = if self.shrank || self.read_error.is_some() {
            out[..want].fill(0);
            want
        } else {
            match self.src.read(&mut out[..want]) {
                Ok(0) => {
                    self.shrank = true;
                    out[..want].fill(0);
                    want
                }
                Ok(n) => {
                    self.read += n as u64;
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    self.read_error = Some(e);
                    out[..want].fill(0);
                    want
                }
            }
        };
        self.hasher.update(&out[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}
