//! The SQLite manifest (`vault.db`): sources, snapshots, the versioned tree and where each
//! content is stored. This is the only module that touches rusqlite.
//!
//! Promises:
//! - The schema is versioned ([`schema::SCHEMA_VERSION`]) and migrated forward on open; a newer
//!   schema is refused with [`ManifestError::TooNew`].
//! - A snapshot is recorded by one transaction ([`Manifest::begin_snapshot`] to
//!   [`Recording::commit`]), so it is either wholly present or absent.
//! - Unchanged paths cost no row per snapshot: a row of `entries` spans every snapshot from the
//!   one that introduced that version to the one that replaced or deleted it.
//! - Paths and digests are stored as bytes.

mod history;
pub mod hosts;
mod record;
pub mod schema;

pub use history::{Version, VersionFilter};
pub use record::Recording;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use thin_vec::ThinVec;

use crate::hash::{Digest, HashAlgo};
use crate::tree::{Entry, EntryKind, StatCache};
use crate::xattr::Xattrs;

/// Errors of the manifest layer. Each names the database file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("manifest {path} has schema version {found}, newer than this vault understands ({supported}); upgrade vault")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("manifest {path} is damaged: {what}")]
    Damaged { path: PathBuf, what: String },
    #[error("disk full while writing manifest {path}; nothing was changed")]
    Full { path: PathBuf },
}

/// Snapshot kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Full,
    Incremental,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Incremental => "incremental",
        }
    }
    /// The short form used in archive names, as in the original script.
    pub fn short(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Incremental => "incr",
        }
    }
}

/// A recorded snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotRow {
    pub seq: i64,
    pub id: String,
    pub source_id: i64,
    pub source_path: Vec<u8>,
    pub source_name: Vec<u8>,
    pub kind: Kind,
    pub parent_seq: Option<i64>,
    pub parent_id: Option<String>,
    pub chain_seq: i64,
    pub time_ns: i64,
    pub hash: HashAlgo,
    pub compression: String,
    pub archive: Option<String>,
    pub archive_size: Option<u64>,
    pub archive_blake3: Option<Vec<u8>>,
    pub stats: SnapshotStats,
    /// The source folder's own metadata (absent in snapshots made before schema 2).
    pub root: Option<RootMeta>,
}

/// The source folder's own mode, owner and mtime at backup time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
}

/// Counters recorded with a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    pub files: u64,
    pub new: u64,
    pub changed: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub bytes_read: u64,
    pub warnings: u64,
    pub duration_ms: u64,
}

/// A snapshot about to be recorded.
#[derive(Clone, Debug)]
pub struct NewSnapshot {
    pub id: String,
    pub source_id: i64,
    pub kind: Kind,
    pub parent_seq: Option<i64>,
    /// The chain's full; `None` for a full, which starts its own chain.
    pub chain_seq: Option<i64>,
    pub time_ns: i64,
    pub hash: HashAlgo,
    pub compression: String,
    pub archive: Option<String>,
    pub archive_size: Option<u64>,
    pub archive_blake3: Option<Vec<u8>>,
    pub stats: SnapshotStats,
    pub root: Option<RootMeta>,
}

/// A change to the versioned tree made by a new snapshot.
#[derive(Clone, Debug)]
pub enum EntryChange {
    /// The path has this (new or changed) version from now on.
    Put(Entry),
    /// The path is gone from now on.
    Remove(Vec<u8>),
}

/// A content stored in the new snapshot's archive.
#[derive(Clone, Debug)]
pub struct NewBlob {
    pub digest: Digest,
    pub member: Vec<u8>,
    pub size: u64,
}

/// Where a content is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub snap_seq: i64,
    pub member: Vec<u8>,
    pub size: u64,
}

/// An open manifest.
#[derive(Debug)]
pub struct Manifest {
    conn: Connection,
    path: PathBuf,
}

const SNAPSHOT_COLUMNS: &str =
    "s.seq, s.id, s.source_id, src.path, src.name, s.kind, s.parent_seq, \
     p.id, s.chain_seq, s.time_ns, s.hash, s.compression, s.archive, s.archive_size, \
     s.archive_blake3, s.files, s.new, s.changed, s.deleted, s.unchanged, s.bytes_read, \
     s.warnings, s.duration_ms, s.root_mode, s.root_uid, s.root_gid, s.root_mtime_ns";
const SNAPSHOT_FROM: &str = "snapshots s JOIN sources src ON src.id = s.source_id \
     LEFT JOIN snapshots p ON p.seq = s.parent_seq";
/// Each connection is used by one thread at a time (a `Connection` is not `Sync`), so SQLite's
/// per-connection mutex only costs: a lock and an unlock around every column read.
const NO_MUTEX: OpenFlags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
const ENTRY_COLUMNS: &str =
    "path, kind, mode, uid, gid, size, mtime_ns, ctime_ns, ino, dev, nlink, digest, target, \
     rdev, xattrs, sparse";

impl Manifest {
    /// Creates a new manifest at `path` (which must not exist) with the current schema.
    pub fn create(path: &Path) -> Result<Manifest, ManifestError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | NO_MUTEX,
        )
        .map_err(|e| sql(path, e))?;
        let mut m = Manifest {
            conn,
            path: path.to_path_buf(),
        };
        m.configure()?;
        m.migrate()?;
        Ok(m)
    }

    /// Opens an existing manifest, migrating an older schema forward.
    ///
    /// On a full disk SQLite cannot grow the shared-memory file that WAL mode keeps beside
    /// vault.db, which would make even reading fail; the manifest is then opened in exclusive
    /// locking mode, which keeps that index in memory (writers wait until this process ends).
    pub fn open(path: &Path) -> Result<Manifest, ManifestError> {
        match Manifest::open_with(path, false) {
            Err(ManifestError::Full { .. }) => Manifest::open_with(path, true),
            other => other,
        }
    }

    fn open_with(path: &Path, exclusive: bool) -> Result<Manifest, ManifestError> {
        check_not_truncated(path)?;
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | NO_MUTEX)
            .map_err(|e| sql(path, e))?;
        if exclusive {
            conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE")
                .map_err(|e| sql(path, e))?;
        }
        // Before anything writes to it: a file with no schema (empty, zeroed, or some other
        // SQLite database) is not a repository that lost its snapshots, and must never be
        // mistaken for a new one (forget would then delete every archive).
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| damaged_or_sql(path, e))?;
        if version == 0 {
            return Err(ManifestError::Damaged {
                path: path.to_path_buf(),
                what: "it is empty or holds no vault schema (truncated, zeroed or replaced?); \
                       refusing to treat it as a new repository"
                    .into(),
            });
        }
        let mut m = Manifest {
            conn,
            path: path.to_path_buf(),
        };
        m.configure()?;
        m.migrate()?;
        m.repository_id()?;
        Ok(m)
    }

    /// The repository's identity, written once when it was created (or upgraded to schema 2).
    /// A manifest without it is damaged.
    pub fn repository_id(&self) -> Result<String, ManifestError> {
        let id: Option<String> = self
            .conn
            .query_row("SELECT id FROM repository LIMIT 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        id.ok_or_else(|| ManifestError::Damaged {
            path: self.path.clone(),
            what: "it has no repository id (its repository table was emptied)".into(),
        })
    }

    /// The ids of the snapshots `forget` removed from this repository.
    pub fn forgotten(&self) -> Result<HashSet<String>, ManifestError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id FROM forgotten")
            .map_err(|e| self.err(e))?;
        let rows = st.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The repository id stored in a manifest file, read without changing it: `None` for a
    /// manifest older than schema 2 (which has none yet). An empty or foreign file is damage.
    pub fn peek_repository_id(path: &Path) -> Result<Option<String>, ManifestError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | NO_MUTEX)
            .map_err(|e| damaged_or_sql(path, e))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| damaged_or_sql(path, e))?;
        match version {
            0 => Err(ManifestError::Damaged {
                path: path.to_path_buf(),
                what: "it is empty or holds no vault schema".into(),
            }),
            1 => Ok(None),
            _ => conn
                .query_row("SELECT id FROM repository LIMIT 1", [], |r| r.get(0))
                .optional()
                .map_err(|e| damaged_or_sql(path, e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&mut self) -> Result<(), ManifestError> {
        self.conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn err(&self, e: rusqlite::Error) -> ManifestError {
        match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, ref why) => ManifestError::Damaged {
                path: self.path.clone(),
                what: format!("{why} in a row (tampered with, or written by something else)"),
            },
            e => damaged_or_sql(&self.path, e),
        }
    }

    /// True when the error is the disk being full.
    pub fn is_full(e: &ManifestError) -> bool {
        matches!(e, ManifestError::Full { .. })
    }

    /// The schema version stored in the file.
    pub fn schema_version(&self) -> Result<i64, ManifestError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<(), ManifestError> {
        let found = self.schema_version()?;
        if found > schema::SCHEMA_VERSION {
            return Err(ManifestError::TooNew {
                path: self.path.clone(),
                found,
                supported: schema::SCHEMA_VERSION,
            });
        }
        for (i, step) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
            let path = self.path.clone();
            let tx = self.conn.transaction().map_err(|e| sql(&path, e))?;
            tx.execute_batch(step).map_err(|e| sql(&path, e))?;
            if i == schema::IDENTITY_STEP {
                tx.execute(
                    "INSERT INTO repository (id, created_ns) VALUES (?1, ?2)",
                    params![crate::hash::random_hex(16), crate::time::now_ns()],
                )
                .map_err(|e| sql(&path, e))?;
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(|e| sql(&path, e))?;
            tx.commit().map_err(|e| sql(&path, e))?;
        }
        Ok(())
    }

    /// The id of a source, if it was ever backed up.
    pub fn source_id(&self, path: &[u8]) -> Result<Option<i64>, ManifestError> {
        self.conn
            .query_row("SELECT id FROM sources WHERE path = ?1", [path], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every source: (id, path).
    pub fn sources(&self) -> Result<Vec<(i64, Vec<u8>)>, ManifestError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, path FROM sources ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// All snapshots, oldest first; of one source when `source_id` is given.
    pub fn snapshots(&self, source_id: Option<i64>) -> Result<Vec<SnapshotRow>, ManifestError> {
        let q = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM {SNAPSHOT_FROM} \
             WHERE ?1 IS NULL OR s.source_id = ?1 ORDER BY s.seq"
        );
        let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
        let rows = st
            .query_map([source_id], snapshot_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The newest snapshot of a source.
    pub fn latest(&self, source_id: i64) -> Result<Option<SnapshotRow>, ManifestError> {
        let q = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM {SNAPSHOT_FROM} \
             WHERE s.source_id = ?1 ORDER BY s.seq DESC LIMIT 1"
        );
        self.conn
            .query_row(&q, [source_id], snapshot_row)
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Snapshots whose id starts with `prefix`.
    pub fn snapshots_by_prefix(&self, prefix: &str) -> Result<Vec<SnapshotRow>, ManifestError> {
        let q = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM {SNAPSHOT_FROM} \
             WHERE substr(s.id, 1, length(?1)) = ?1 ORDER BY s.seq"
        );
        let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
        let rows = st
            .query_map([prefix], snapshot_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Number of snapshots in a chain (the full included).
    pub fn chain_len(&self, chain_seq: i64) -> Result<u64, ManifestError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM snapshots WHERE chain_seq = ?1",
                [chain_seq],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// The tree of the newest snapshot of a source, in path byte order.
    pub fn live_entries(&self, source_id: i64) -> Result<Vec<Entry>, ManifestError> {
        self.with_live_entries(source_id, |rows| rows.collect())
    }

    /// Streams the tree of the newest snapshot of a source, in path byte order (the primary
    /// key's order: no sort, no copy of the whole tree), to `f`. A row that cannot be read
    /// ends the stream and is returned as the error.
    pub fn with_live_entries<R>(
        &self,
        source_id: i64,
        f: impl FnOnce(&mut dyn Iterator<Item = Entry>) -> R,
    ) -> Result<R, ManifestError> {
        let q = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE source_id = ?1 AND to_seq IS NULL ORDER BY path"
        );
        let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
        let rows = st
            .query_map([source_id], entry_row)
            .map_err(|e| self.err(e))?;
        let mut failure = None;
        let mut it = rows.map_while(|r| match r {
            Ok(e) => Some(e),
            Err(e) => {
                failure = Some(e);
                None
            }
        });
        let out = f(&mut it);
        drop(it);
        match failure {
            Some(e) => Err(self.err(e)),
            None => Ok(out),
        }
    }

    /// The newest snapshot's entries below folder `dir` (its whole subtree; `dir` itself not
    /// included), in path byte order: a range of the primary key, not a scan of the tree.
    pub fn live_under(&self, source_id: i64, dir: &[u8]) -> Result<Vec<Entry>, ManifestError> {
        if dir.is_empty() {
            return self.live_entries(source_id);
        }
        let mut lo = dir.to_vec();
        lo.push(b'/');
        let mut hi = dir.to_vec();
        hi.push(b'/' + 1);
        let q = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE source_id = ?1 AND path > ?2 AND path < ?3 \
             AND to_seq IS NULL ORDER BY path"
        );
        let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![source_id, lo, hi], entry_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The newest snapshot's entry for one path.
    pub fn live_entry(&self, source_id: i64, path: &[u8]) -> Result<Option<Entry>, ManifestError> {
        let q = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE source_id = ?1 AND path = ?2 AND to_seq IS NULL"
        );
        self.conn
            .query_row(&q, params![source_id, path], entry_row)
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The tree of one snapshot, in path byte order.
    pub fn snapshot_entries(&self, snap: &SnapshotRow) -> Result<Vec<Entry>, ManifestError> {
        let q = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE source_id = ?1 AND from_seq <= ?2 \
             AND (to_seq IS NULL OR to_seq > ?2) ORDER BY path"
        );
        let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![snap.source_id, snap.seq], entry_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Every digest stored in a chain.
    pub fn chain_digests(&self, chain_seq: i64) -> Result<HashSet<Digest>, ManifestError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT digest FROM blobs WHERE chain_seq = ?1")
            .map_err(|e| self.err(e))?;
        let mut out = HashSet::new();
        let mut rows = st.query([chain_seq]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let b: Vec<u8> = r.get(0).map_err(|e| self.err(e))?;
            let d = Digest::from_bytes(&b).ok_or_else(|| ManifestError::Damaged {
                path: self.path.clone(),
                what: format!("blob digest of {} bytes in chain {chain_seq}", b.len()),
            })?;
            out.insert(d);
        }
        Ok(out)
    }

    /// Whether a chain stores a content (one b-tree search).
    pub fn chain_has(&self, chain_seq: i64, digest: &Digest) -> Result<bool, ManifestError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM blobs WHERE chain_seq = ?1 AND digest = ?2")
            .map_err(|e| self.err(e))?;
        st.exists(params![chain_seq, digest.as_bytes()])
            .map_err(|e| self.err(e))
    }

    /// Where a content of a chain is stored.
    pub fn blob(
        &self,
        chain_seq: i64,
        digest: &Digest,
    ) -> Result<Option<BlobLocation>, ManifestError> {
        self.conn
            .query_row(
                "SELECT snap_seq, member, size FROM blobs WHERE chain_seq = ?1 AND digest = ?2",
                params![chain_seq, digest.as_bytes()],
                |r| {
                    Ok(BlobLocation {
                        snap_seq: r.get(0)?,
                        member: r.get(1)?,
                        size: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Writes a consistent copy of the whole manifest to `dst` (SQLite's online backup API),
    /// even while a backup is writing to it.
    pub fn copy_to(&self, dst: &Path) -> Result<(), ManifestError> {
        self.conn
            .backup(rusqlite::MAIN_DB, dst, None)
            .map_err(|e| sql(dst, e))
    }

    /// SQLite's own consistency check; empty when the file is sound.
    pub fn integrity_problems(&self) -> Result<Vec<String>, ManifestError> {
        let mut st = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out: Vec<String> = rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?;
        out.retain(|l| l != "ok");
        let mut fk = self
            .conn
            .prepare("PRAGMA foreign_key_check")
            .map_err(|e| self.err(e))?;
        let n = fk
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .count();
        if n > 0 {
            out.push(format!("{n} rows break foreign keys"));
        }
        Ok(out)
    }

    /// Files of a snapshot whose content the chain does not store (a damaged manifest).
    pub fn unstored_files(&self, snap: &SnapshotRow) -> Result<Vec<Vec<u8>>, ManifestError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT e.path FROM entries e WHERE e.source_id = ?1 AND e.from_seq <= ?2 \
                 AND (e.to_seq IS NULL OR e.to_seq > ?2) AND e.kind = 0 AND e.size > 0 \
                 AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.chain_seq = ?3 AND b.digest = e.digest)",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![snap.source_id, snap.seq, snap.chain_seq], |r| {
                r.get(0)
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Entries of a snapshot that contradict themselves or what the chain stores: a file
    /// without a digest of the chain's length or whose size differs from its stored content's,
    /// a folder or symlink with a content digest, a symlink without a target. Each comes with
    /// why. (A tampered row would otherwise pass check and fail, or go wrong, at restore.)
    pub fn inconsistent_entries(
        &self,
        snap: &SnapshotRow,
    ) -> Result<Vec<(Vec<u8>, String)>, ManifestError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT e.path, CASE \
                   WHEN e.kind = 0 AND (e.digest IS NULL OR length(e.digest) <> ?4) \
                     THEN 'file without a valid digest' \
                   WHEN e.kind = 0 AND e.size > 0 AND b.size IS NOT NULL AND b.size <> e.size \
                     THEN 'size differs from its stored content''s size' \
                   WHEN e.kind = 0 AND e.target IS NOT NULL THEN 'file with a link target' \
                   WHEN e.kind <> 0 AND e.digest IS NOT NULL \
                     THEN 'not a file, yet it has a content digest (kind changed?)' \
                   WHEN e.kind = 1 AND e.target IS NOT NULL THEN 'folder with a link target' \
                   WHEN e.kind = 2 AND e.target IS NULL THEN 'symlink without a target' \
                   WHEN e.kind > 2 AND e.target IS NOT NULL THEN 'special file with a link target' \
                   WHEN e.kind NOT IN (0, 1, 2, 3, 4, 5) THEN 'unknown kind' END AS why \
                 FROM entries e LEFT JOIN blobs b ON b.chain_seq = ?3 AND b.digest = e.digest \
                 WHERE e.source_id = ?1 AND e.from_seq <= ?2 \
                 AND (e.to_seq IS NULL OR e.to_seq > ?2) AND why IS NOT NULL ORDER BY e.path",
            )
            .map_err(|e| self.err(e))?;
        let digest_len = snap.hash.digest_len() as i64;
        let rows = st
            .query_map(
                params![snap.source_id, snap.seq, snap.chain_seq, digest_len],
                |r| {
                    let why: String = r.get(1)?;
                    Ok((r.get(0)?, why))
                },
            )
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The contents stored in one snapshot's archive: (member, digest, size).
    pub fn stored_in(&self, snap_seq: i64) -> Result<Vec<(Vec<u8>, Digest, u64)>, ManifestError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT member, digest, size FROM blobs WHERE snap_seq = ?1")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([snap_seq], |r| {
                let d: Vec<u8> = r.get(1)?;
                Ok((
                    r.get(0)?,
                    Digest::from_bytes(&d).ok_or_else(|| bad_column(1, "digest"))?,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Removes whole chains of one source in one transaction: their snapshots, their stored
    /// contents, and the tree rows no remaining snapshot of the source can see.
    pub fn forget_chains(&mut self, source_id: i64, chains: &[i64]) -> Result<(), ManifestError> {
        let path = self.path.clone();
        let e = |e| sql(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        for c in chains {
            tx.execute(
                "INSERT OR IGNORE INTO forgotten (id, time_ns) \
                 SELECT id, ?2 FROM snapshots WHERE chain_seq = ?1",
                params![c, crate::time::now_ns()],
            )
            .map_err(e)?;
            tx.execute("DELETE FROM blobs WHERE chain_seq = ?1", [c])
                .map_err(e)?;
            tx.execute(
                "UPDATE snapshots SET parent_seq = NULL WHERE parent_seq IN \
                 (SELECT seq FROM snapshots WHERE chain_seq = ?1) AND chain_seq <> ?1",
                [c],
            )
            .map_err(e)?;
            tx.execute(
                "DELETE FROM snapshots WHERE chain_seq = ?1 AND source_id = ?2",
                params![c, source_id],
            )
            .map_err(e)?;
        }
        let oldest: Option<i64> = tx
            .query_row(
                "SELECT min(seq) FROM snapshots WHERE source_id = ?1",
                [source_id],
                |r| r.get(0),
            )
            .map_err(e)?;
        match oldest {
            Some(o) => tx.execute(
                "DELETE FROM entries WHERE source_id = ?1 AND to_seq IS NOT NULL AND to_seq <= ?2",
                params![source_id, o],
            ),
            None => tx.execute("DELETE FROM entries WHERE source_id = ?1", [source_id]),
        }
        .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(())
    }
}

/// Refuses a file shorter than its SQLite header says it is (cut short by a copy, a full disk
/// or by hand): SQLite itself would read the missing pages as empty only when it reaches them.
fn check_not_truncated(path: &Path) -> Result<(), ManifestError> {
    use std::io::Read;
    let damaged = |what: String| ManifestError::Damaged {
        path: path.to_path_buf(),
        what,
    };
    let mut f = std::fs::File::open(path).map_err(|e| damaged(e.to_string()))?;
    let len = f.metadata().map_err(|e| damaged(e.to_string()))?.len();
    let mut h = [0u8; 100];
    if len == 0 {
        return Ok(()); // no schema at all: refused by the caller, with that reason
    }
    // While a writer has a WAL beside it, a checkpoint may be growing the file right now.
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    if len < 100 || f.read_exact(&mut h).is_err() {
        return Err(damaged(format!("it is truncated ({len} bytes)")));
    }
    let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let page = match u16::from_be_bytes([h[16], h[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    // The page count in the header is valid when its version matches the change counter.
    let pages = u64::from(be32(28));
    if be32(92) == be32(24) && pages > 0 && len < pages * page {
        return Err(damaged(format!(
            "it is truncated ({len} bytes; its header says {} bytes)",
            pages * page
        )));
    }
    Ok(())
}

/// A corrupt or foreign file is damage; anything else keeps its SQLite error.
fn damaged_or_sql(path: &Path, e: rusqlite::Error) -> ManifestError {
    match e {
        rusqlite::Error::SqliteFailure(ref f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            ManifestError::Damaged {
                path: path.to_path_buf(),
                what: e.to_string(),
            }
        }
        e => sql(path, e),
    }
}

fn sql(path: &Path, e: rusqlite::Error) -> ManifestError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        // SQLITE_IOERR_SHMSIZE and SQLITE_IOERR_SHMMAP: no room to grow the WAL index.
        if f.code == rusqlite::ErrorCode::DiskFull || matches!(f.extended_code, 4874 | 5386) {
            return ManifestError::Full {
                path: path.to_path_buf(),
            };
        }
    }
    ManifestError::Sqlite {
        path: path.to_path_buf(),
        source: e,
    }
}

fn bad_column(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        i,
        rusqlite::types::Type::Blob,
        format!("invalid {what}").into(),
    )
}

/// An archive name as backup makes them: one plain file name (letters, digits, `-_.+@`, not
/// starting with a dot) ending in `.tar`, `.tar.gz` or `.tar.zst`. Anything else in a manifest
/// (`../x`, `/etc/passwd`, a name with a slash) is refused before any file is touched, so a
/// pulled or tampered manifest cannot make pull, forget, check or restore reach outside archives/.
pub fn valid_archive_name(a: &str) -> bool {
    !a.starts_with('.')
        && a.chars()
            .all(|c| c.is_alphanumeric() || "-_.+@".contains(c))
        && [".tar", ".tar.gz", ".tar.zst"]
            .iter()
            .any(|x| a.ends_with(x) && a.len() > x.len())
}

fn snapshot_row(r: &Row<'_>) -> rusqlite::Result<SnapshotRow> {
    let kind: String = r.get(5)?;
    let hash: String = r.get(10)?;
    Ok(SnapshotRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        source_id: r.get(2)?,
        source_path: r.get(3)?,
        source_name: r.get(4)?,
        kind: match kind.as_str() {
            "full" => Kind::Full,
            "incremental" => Kind::Incremental,
            _ => return Err(bad_column(5, "snapshot kind")),
        },
        parent_seq: r.get(6)?,
        parent_id: r.get(7)?,
        chain_seq: r.get(8)?,
        time_ns: r.get(9)?,
        hash: hash.parse().map_err(|_| bad_column(10, "hash name"))?,
        compression: r.get(11)?,
        archive: match r.get::<_, Option<String>>(12)? {
            Some(a) if !valid_archive_name(&a) => return Err(bad_column(12, "archive name")),
            a => a,
        },
        archive_size: r.get::<_, Option<i64>>(13)?.map(|s| s as u64),
        archive_blake3: r.get(14)?,
        stats: SnapshotStats {
            files: r.get::<_, i64>(15)? as u64,
            new: r.get::<_, i64>(16)? as u64,
            changed: r.get::<_, i64>(17)? as u64,
            deleted: r.get::<_, i64>(18)? as u64,
            unchanged: r.get::<_, i64>(19)? as u64,
            bytes_read: r.get::<_, i64>(20)? as u64,
            warnings: r.get::<_, i64>(21)? as u64,
            duration_ms: r.get::<_, i64>(22)? as u64,
        },
        root: match r.get::<_, Option<i64>>(23)? {
            Some(mode) => Some(RootMeta {
                mode: (mode & 0o7777) as u32,
                uid: r.get::<_, i64>(24)? as u32,
                gid: r.get::<_, i64>(25)? as u32,
                mtime_ns: r.get(26)?,
            }),
            None => None,
        },
    })
}

fn entry_row(r: &Row<'_>) -> rusqlite::Result<Entry> {
    // Borrowed from the row, not copied into a vector first: a million rows are read back
    // for every incremental of a million-file tree.
    let digest = match r.get_ref(11)? {
        ValueRef::Null => None,
        ValueRef::Blob(b) => Some(Digest::from_bytes(b).ok_or_else(|| bad_column(11, "digest"))?),
        _ => return Err(bad_column(11, "digest")),
    };
    Ok(Entry {
        path: r.get(0)?,
        kind: EntryKind::from_code(r.get(1)?).ok_or_else(|| bad_column(1, "entry kind"))?,
        mode: r.get::<_, i64>(2)? as u32,
        uid: r.get::<_, i64>(3)? as u32,
        gid: r.get::<_, i64>(4)? as u32,
        size: r.get::<_, i64>(5)? as u64,
        mtime_ns: r.get(6)?,
        stat: StatCache {
            ctime_ns: r.get(7)?,
            ino: r.get::<_, i64>(8)? as u64,
            dev: r.get::<_, i64>(9)? as u64,
            nlink: r.get::<_, i64>(10)? as u64,
        },
        digest,
        target: r.get::<_, Option<Vec<u8>>>(12)?.map(ThinVec::from),
        rdev: r.get::<_, i64>(13)? as u64,
        xattrs: match r.get::<_, Option<Vec<u8>>>(14)? {
            None => None,
            Some(b) => Some(Box::new(
                Xattrs::decode(&b).ok_or_else(|| bad_column(14, "extended attributes"))?,
            )),
        },
        sparse: r.get::<_, i64>(15)? != 0,
    })
}
