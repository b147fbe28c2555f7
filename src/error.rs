//! The error policy.
//!
//! - Each layer has its own `thiserror` enum ([`crate::manifest::ManifestError`],
//!   [`crate::archive::ArchiveError`], and [`Error`] for the engine) whose messages name the path,
//!   repository or snapshot concerned; lower errors are kept as `#[source]`.
//! - A fatal error (nothing was recorded) is returned as `Err`; the CLI prints it on one line and
//!   exits 1 ([`Error::is_usage`] errors exit 2).
//! - Per-item trouble (an unreadable file, a vanished file, a file changed while read) is not an
//!   error: it is data in the command's report (`warnings`), and the CLI exits 3.
//! - Nothing below the CLI prints or exits.

use std::io;
use std::path::PathBuf;

use crate::archive::ArchiveError;
use crate::manifest::ManifestError;

/// Engine-level errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("source {path}: {source}")]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("source {path} is not a directory")]
    SourceNotDir { path: PathBuf },
    #[error("repository {path}: {what}")]
    Repo { path: PathBuf, what: String },
    #[error("repository {path}: {source}")]
    RepoIo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("disk full while writing {path}")]
    DiskFull { path: PathBuf },
    #[error("repository {path} is locked by {holder}")]
    Locked { path: PathBuf, holder: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Archive(ArchiveError),
    /// An archive that is missing or cannot be read back as the manifest says.
    #[error(transparent)]
    ArchiveRead(#[from] crate::archive::reader::ReadError),
    /// The command's output (standard output) could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[source] io::Error),
    #[error("no snapshot matches '{0}'")]
    NoSuchSnapshot(String),
    #[error("snapshot prefix '{prefix}' is ambiguous: {candidates}")]
    AmbiguousSnapshot { prefix: String, candidates: String },
    #[error("{0}")]
    Usage(String),
    /// A glob that does not parse (`vault find PATTERN`): a usage error.
    #[error("bad pattern '{pattern}': {source}")]
    BadPattern {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("{0}")]
    Refused(String),
    /// A remote copy (SFTP server, rclone remote) refused or failed.
    #[error("{remote}: {what}")]
    Remote { remote: String, what: String },
    /// The same, with the lower error that caused it.
    #[error("{remote}: {what}: {source}")]
    RemoteFailed {
        remote: String,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// True for errors in how the command was called (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_) | Error::BadPattern { .. })
    }

    /// A stable name for the kind of failure, for scripts (`--json` error documents).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Source { .. } | Error::SourceNotDir { .. } => "source",
            Error::Repo { .. } | Error::RepoIo { .. } => "repository",
            Error::DiskFull { .. } => "disk_full",
            Error::Locked { .. } => "locked",
            Error::Manifest(ManifestError::Damaged { .. }) => "damaged",
            Error::Manifest(_) => "manifest",
            Error::Archive(_) => "archive",
            Error::ArchiveRead(_) => "damaged",
            Error::Output(_) => "output",
            Error::NoSuchSnapshot(_) | Error::AmbiguousSnapshot { .. } => "snapshot",
            Error::Usage(_) | Error::BadPattern { .. } => "usage",
            Error::Refused(_) | Error::Remote { .. } | Error::RemoteFailed { .. } => "refused",
            Error::Cancelled => "cancelled",
            Error::Internal(_) => "internal",
        }
    }
}

impl From<ArchiveError> for Error {
    fn from(e: ArchiveError) -> Error {
        match e {
            ArchiveError::DiskFull { path, .. } => Error::DiskFull { path },
            e => Error::Archive(e),
        }
    }
}

/// Maps an I/O error on a repository path, recognising a full disk.
pub fn repo_io(path: impl Into<PathBuf>, e: io::Error) -> Error {
    let path = path.into();
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        Error::DiskFull { path }
    } else {
        Error::RepoIo { path, source: e }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::pool::PoolError<Error>> for Error {
    fn from(e: crate::pool::PoolError<Error>) -> Error {
        match e {
            crate::pool::PoolError::Sink(e) => e,
            crate::pool::PoolError::Cancelled => Error::Cancelled,
            crate::pool::PoolError::WorkerPanicked(m) => Error::Internal(m),
        }
    }
}

/// The outcome of a pool run whose sink never fails (or stops it on purpose with `Err(())`).
pub fn pool_done(r: std::result::Result<(), crate::pool::PoolError<()>>) -> Result<()> {
    match r {
        Ok(()) | Err(crate::pool::PoolError::Sink(())) => Ok(()),
        Err(crate::pool::PoolError::Cancelled) => Err(Error::Cancelled),
        Err(crate::pool::PoolError::WorkerPanicked(m)) => Err(Error::Internal(m)),
    }
}
