//! vault: content-addressed full and incremental tar backups with an SQLite manifest, and ops
//! modules, all on one worker pool. See docs/architecture.md for the code map and invariants.

pub mod alert;
pub mod archive;
pub mod config;
pub mod engine;
pub mod error;
pub mod hash;
pub mod manifest;
pub mod ops;
pub mod pool;
pub mod progress;
pub mod sparse;
pub mod text;
pub mod time;
pub mod tree;
pub mod xattr;

pub use crate::archive::Compression;
pub use crate::engine::backup::{backup, BackupOptions, BackupReport, BackupStats, FullDay};
pub use crate::engine::check::{check, CheckReport};
pub use crate::engine::forget::{forget, ForgetReport};
pub use crate::engine::problem::Problem;
pub use crate::engine::query::{diff, ls, resolve, snapshots, DiffReport, LsEntry, SnapshotInfo};
pub use crate::engine::repo::Repository;
pub use crate::engine::restore::{restore, RestoreOptions, RestoreReport, SnapSpec};
pub use crate::error::{Error, Result};
pub use crate::hash::{Digest, HashAlgo};
pub use crate::manifest::Kind;
pub use crate::pool::{CancelToken, Pool, PoolError};
pub use crate::progress::{NoProgress, Progress};
pub use crate::tree::{Entry, EntryKind};
