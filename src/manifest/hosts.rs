//! The scan state store (`scan.db`): the last known state of each scanned host, so that a
//! sweep can report transitions. A small SQLite file of its own, versioned like the manifest.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use super::ManifestError;

const HOSTS_SCHEMA_VERSION: i64 = 1;

/// A host's remembered state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostState {
    pub up: bool,
    /// When it entered that state (ns since the epoch).
    pub since_ns: i64,
}

/// The open state store.
#[derive(Debug)]
pub struct HostStore {
    conn: Connection,
    path: PathBuf,
}

impl HostStore {
    /// Opens (creating when missing) `DIR/scan.db`.
    pub fn open(dir: &Path) -> Result<HostStore, ManifestError> {
        let path = dir.join("scan.db");
        let e = |err| ManifestError::Sqlite {
            path: path.clone(),
            source: err,
        };
        let conn = Connection::open(&path).map_err(e)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(e)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(e)?;
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(e)?;
        if v > HOSTS_SCHEMA_VERSION {
            return Err(ManifestError::TooNew {
                path: path.clone(),
                found: v,
                supported: HOSTS_SCHEMA_VERSION,
            });
        }
        if v < 1 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS hosts (
                     host     TEXT PRIMARY KEY,
                     up       INTEGER NOT NULL,
                     since_ns INTEGER NOT NULL,
                     seen_ns  INTEGER NOT NULL
                 );
                 PRAGMA user_version = 1;
                 COMMIT;",
            )
            .map_err(e)?;
        }
        Ok(HostStore { conn, path })
    }

    pub fn get(&self, host: &str) -> Result<Option<HostState>, ManifestError> {
        self.conn
            .query_row(
                "SELECT up, since_ns FROM hosts WHERE host = ?1",
                [host],
                |r| {
                    Ok(HostState {
                        up: r.get::<_, i64>(0)? != 0,
                        since_ns: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(|e| ManifestError::Sqlite {
                path: self.path.clone(),
                source: e,
            })
    }

    /// Records this sweep's states in one transaction; `since_ns` moves only on a change.
    pub fn record(&mut self, states: &[(String, bool)], now_ns: i64) -> Result<(), ManifestError> {
        let path = self.path.clone();
        let e = |err| ManifestError::Sqlite {
            path: path.clone(),
            source: err,
        };
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO hosts (host, up, since_ns, seen_ns) VALUES (?1, ?2, ?3, ?3)
                     ON CONFLICT(host) DO UPDATE SET
                       since_ns = CASE WHEN up = excluded.up THEN since_ns ELSE excluded.since_ns END,
                       up = excluded.up, seen_ns = excluded.seen_ns",
                )
                .map_err(e)?;
            for (h, up) in states {
                st.execute(params![h, i64::from(*up), now_ns]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }
}
