//! Recording a snapshot. One transaction holds all of it, so a snapshot is wholly present or
//! absent; but it is opened before the archive is written ([`Manifest::begin_snapshot`]) and
//! committed after ([`Recording::commit`]), so that the rows of the paths already archived
//! are written while the pool is still compressing. A full of a million files spent 2.4 s
//! on its rows after the archive, one core busy and the other idle.

use std::path::Path;

use rusqlite::{params, CachedStatement, Connection, OptionalExtension};

use super::{sql, EntryChange, Manifest, ManifestError, NewBlob, NewSnapshot, ENTRY_COLUMNS};

/// A snapshot being recorded: its transaction is open until [`Recording::commit`]; dropped
/// before that, it is rolled back and nothing of the snapshot remains.
pub struct Recording<'m> {
    conn: &'m Connection,
    path: &'m Path,
    source_id: i64,
    seq: i64,
    chain_seq: i64,
    /// False for a source's first snapshot: no live rows to close, a b-tree search saved per
    /// path.
    any_live: bool,
    close: CachedStatement<'m>,
    put: CachedStatement<'m>,
    open: bool,
}

impl Manifest {
    /// Opens the transaction of a new snapshot and inserts its row. `snap`'s stats and archive
    /// are not read here: [`Recording::commit`] sets them.
    pub fn begin_snapshot(
        &self,
        source_path: &[u8],
        source_name: &[u8],
        snap: &NewSnapshot,
    ) -> Result<Recording<'_>, ManifestError> {
        let (conn, path) = (&self.conn, self.path.as_path());
        let e = |e| sql(path, e);
        conn.execute_batch("BEGIN IMMEDIATE").map_err(e)?;
        // From here on a failure rolls back when `rec` (or this guard) drops.
        let guard = Rollback(conn);
        let source_id = source_id_or_insert(conn, path, source_path, source_name)?;
        if snap.source_id != 0 && snap.source_id != source_id {
            return Err(ManifestError::Damaged {
                path: path.to_path_buf(),
                what: "source id mismatch".into(),
            });
        }
        let seq = insert_snapshot_row(conn, path, snap, source_id)?;
        let chain_seq = snap.chain_seq.unwrap_or(seq);
        conn.execute(
            "UPDATE snapshots SET chain_seq = ?1 WHERE seq = ?2",
            params![chain_seq, seq],
        )
        .map_err(e)?;
        let any_live: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM entries WHERE source_id = ?1 AND to_seq IS NULL)",
                [source_id],
                |r| r.get(0),
            )
            .map_err(e)?;
        let close = conn
            .prepare_cached(
                "UPDATE entries SET to_seq = ?1 WHERE source_id = ?2 AND path = ?3 \
                 AND to_seq IS NULL",
            )
            .map_err(e)?;
        let put = conn
            .prepare_cached(&format!(
                "INSERT INTO entries (source_id, from_seq, {ENTRY_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18)"
            ))
            .map_err(e)?;
        std::mem::forget(guard);
        Ok(Recording {
            conn,
            path,
            source_id,
            seq,
            chain_seq,
            any_live,
            close,
            put,
            open: true,
        })
    }
}

/// Rolls back the open transaction when dropped (a failed [`Manifest::begin_snapshot`]).
struct Rollback<'c>(&'c Connection);

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

impl std::fmt::Debug for Recording<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("seq", &self.seq)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Recording<'_> {
    /// One change to the versioned tree: closes the path's live row at this snapshot and, for
    /// a new version, inserts it.
    pub fn change(&mut self, c: &EntryChange) -> Result<(), ManifestError> {
        let path = self.path;
        let e = |e| sql(path, e);
        let (seq, source_id) = (self.seq, self.source_id);
        match c {
            EntryChange::Remove(p) => {
                self.close.execute(params![seq, source_id, p]).map_err(e)?;
            }
            EntryChange::Put(en) => {
                if self.any_live {
                    self.close
                        .execute(params![seq, source_id, &en.path])
                        .map_err(e)?;
                }
                self.put
                    .execute(params![
                        source_id,
                        seq,
                        &en.path,
                        en.kind.code(),
                        en.mode as i64,
                        en.uid as i64,
                        en.gid as i64,
                        en.size as i64,
                        en.mtime_ns,
                        en.stat.ctime_ns,
                        en.stat.ino as i64,
                        en.stat.dev as i64,
                        en.stat.nlink as i64,
                        en.digest.as_ref().map(|d| d.as_bytes()),
                        en.target.as_deref(),
                        en.rdev as i64,
                        en.xattrs.as_ref().map(|x| x.encode()),
                        en.sparse as i64,
                    ])
                    .map_err(e)?;
            }
        }
        Ok(())
    }

    /// Sets the snapshot's final stats and archive, records the remaining tree changes and
    /// where the archive stores each content, and commits; returns the seq.
    pub fn commit(
        mut self,
        snap: &NewSnapshot,
        changes: &mut dyn Iterator<Item = EntryChange>,
        blobs: &mut dyn Iterator<Item = NewBlob>,
    ) -> Result<i64, ManifestError> {
        for c in changes {
            self.change(&c)?;
        }
        let path = self.path;
        finish_snapshot_row(self.conn, path, snap, self.seq)?;
        insert_blobs(self.conn, path, self.chain_seq, self.seq, blobs)?;
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| sql(path, e))?;
        self.open = false;
        Ok(self.seq)
    }
}

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Sets the final stats and archive of the snapshot row `seq`.
fn finish_snapshot_row(
    conn: &Connection,
    path: &Path,
    snap: &NewSnapshot,
    seq: i64,
) -> Result<(), ManifestError> {
    conn.execute(
        "UPDATE snapshots SET archive = ?1, archive_size = ?2, archive_blake3 = ?3, \
         files = ?4, new = ?5, changed = ?6, deleted = ?7, unchanged = ?8, bytes_read = ?9, \
         warnings = ?10, duration_ms = ?11 WHERE seq = ?12",
        params![
            snap.archive,
            snap.archive_size.map(|s| s as i64),
            snap.archive_blake3,
            snap.stats.files as i64,
            snap.stats.new as i64,
            snap.stats.changed as i64,
            snap.stats.deleted as i64,
            snap.stats.unchanged as i64,
            snap.stats.bytes_read as i64,
            snap.stats.warnings as i64,
            snap.stats.duration_ms as i64,
            seq,
        ],
    )
    .map_err(|e| sql(path, e))?;
    Ok(())
}

/// The id of the source at `source_path`, recording it first when it is new.
fn source_id_or_insert(
    conn: &Connection,
    path: &Path,
    source_path: &[u8],
    source_name: &[u8],
) -> Result<i64, ManifestError> {
    let e = |e| sql(path, e);
    let source_id: i64 = match conn
        .query_row(
            "SELECT id FROM sources WHERE path = ?1",
            [source_path],
            |r| r.get(0),
        )
        .optional()
        .map_err(e)?
    {
        Some(id) => id,
        None => {
            conn.execute(
                "INSERT INTO sources (path, name) VALUES (?1, ?2)",
                params![source_path, source_name],
            )
            .map_err(e)?;
            conn.last_insert_rowid()
        }
    };
    Ok(source_id)
}

/// Inserts the snapshot's row and returns its seq. Its chain_seq, archive and stats are
/// placeholders (0 and NULL) until the transaction sets them.
fn insert_snapshot_row(
    conn: &Connection,
    path: &Path,
    snap: &NewSnapshot,
    source_id: i64,
) -> Result<i64, ManifestError> {
    conn.execute(
        "INSERT INTO snapshots (id, source_id, kind, parent_seq, chain_seq, time_ns, hash, \
         compression, files, new, changed, deleted, unchanged, bytes_read, warnings, \
         duration_ms, root_mode, root_uid, root_gid, root_mtime_ns) \
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, 0, 0, 0, 0, 0, 0, 0, 0, ?8, ?9, ?10, ?11)",
        params![
            snap.id,
            source_id,
            snap.kind.name(),
            snap.parent_seq,
            snap.time_ns,
            snap.hash.name(),
            snap.compression,
            snap.root.map(|r| r.mode as i64),
            snap.root.map(|r| r.uid as i64),
            snap.root.map(|r| r.gid as i64),
            snap.root.map(|r| r.mtime_ns),
        ],
    )
    .map_err(|e| sql(path, e))?;
    Ok(conn.last_insert_rowid())
}

/// Records where the snapshot's archive stores each content . They should come
/// in digest order: random digests would scatter the inserts over the whole b-tree, each a
/// page read once the tree outgrows SQLite's page cache.
fn insert_blobs(
    conn: &Connection,
    path: &Path,
    chain_seq: i64,
    seq: i64,
    blobs: &mut dyn Iterator<Item = NewBlob>,
) -> Result<(), ManifestError> {
    let e = |e| sql(path, e);
    let sql_for = |rows: usize| {
        let one = "(?, ?, ?, ?, ?)";
        format!(
            "INSERT OR IGNORE INTO blobs (chain_seq, digest, snap_seq, member, size) VALUES {}",
            vec![one; rows].join(", ")
        )
    };
    // Rows go in BLOB_ROWS to a statement: one statement a row cost as much as the insert.
    let mut many = conn.prepare_cached(&sql_for(BLOB_ROWS)).map_err(e)?;
    let mut one = conn.prepare_cached(&sql_for(1)).map_err(e)?;
    let mut batch: Vec<NewBlob> = Vec::with_capacity(BLOB_ROWS);
    let bind = |st: &mut CachedStatement<'_>, rows: &[NewBlob]| -> rusqlite::Result<()> {
        for (r, b) in rows.iter().enumerate() {
            let i = r * 5;
            st.raw_bind_parameter(i + 1, chain_seq)?;
            st.raw_bind_parameter(i + 2, b.digest.as_bytes())?;
            st.raw_bind_parameter(i + 3, seq)?;
            st.raw_bind_parameter(i + 4, &b.member)?;
            st.raw_bind_parameter(i + 5, b.size as i64)?;
        }
        st.raw_execute().map(drop)
    };
    for b in blobs {
        batch.push(b);
        if batch.len() == BLOB_ROWS {
            bind(&mut many, &batch).map_err(e)?;
            batch.clear();
        }
    }
    for b in batch.chunks(1) {
        bind(&mut one, b).map_err(e)?;
    }
    Ok(())
}

/// Blob rows a multi-row insert takes (5 parameters each, far below SQLite's limit).
const BLOB_ROWS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashAlgo;
    use crate::manifest::{Kind, SnapshotStats};
    use crate::tree::{Entry, EntryKind};

    fn snap(id: &str, files: u64) -> NewSnapshot {
        NewSnapshot {
            id: id.into(),
            source_id: 0,
            kind: Kind::Full,
            parent_seq: None,
            chain_seq: None,
            time_ns: 1,
            hash: HashAlgo::Blake3,
            compression: "gzip".into(),
            archive: Some(format!("{id}.tar.gz")),
            archive_size: Some(10),
            archive_blake3: None,
            stats: SnapshotStats {
                files,
                ..SnapshotStats::default()
            },
            root: None,
        }
    }

    #[test]
    fn a_recording_dropped_before_its_commit_leaves_nothing_and_a_committed_one_all() {
        let d = tempfile::tempdir().unwrap();
        let m = Manifest::create(&d.path().join("vault.db")).unwrap();
        let put = EntryChange::Put(Entry::bare("a", EntryKind::Dir));
        let mut rec = m
            .begin_snapshot(b"/src", b"src", &snap("dropped", 1))
            .unwrap();
        rec.change(&put).unwrap();
        drop(rec);
        assert!(m.snapshots(None).unwrap().is_empty());
        let mut rec = m.begin_snapshot(b"/src", b"src", &snap("kept", 0)).unwrap();
        rec.change(&put).unwrap();
        let rest = EntryChange::Put(Entry::bare("a/b", EntryKind::Dir));
        let seq = rec
            .commit(
                &snap("kept", 2),
                &mut [rest].into_iter(),
                &mut std::iter::empty(),
            )
            .unwrap();
        let rows = m.snapshots(None).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].seq, rows[0].id.as_str()), (seq, "kept"));
        assert_eq!(rows[0].stats.files, 2);
        assert_eq!(rows[0].archive.as_deref(), Some("kept.tar.gz"));
        let id = rows[0].source_id;
        assert!(m.live_entry(id, b"a").unwrap().is_some());
        assert!(m.live_entry(id, b"a/b").unwrap().is_some());
    }

    #[test]
    fn blob_rows_in_full_statements_and_the_tail_all_go_in() {
        let d = tempfile::tempdir().unwrap();
        let m = Manifest::create(&d.path().join("vault.db")).unwrap();
        let n = 2 * BLOB_ROWS + 3;
        let digest = |i: usize| HashAlgo::Blake3.digest(&i.to_le_bytes());
        let mut blobs = (0..n).map(|i| NewBlob {
            digest: digest(i),
            member: format!("src/f{i}").into_bytes(),
            size: i as u64,
        });
        let rec = m.begin_snapshot(b"/src", b"src", &snap("s", 0)).unwrap();
        let seq = rec
            .commit(&snap("s", 0), &mut std::iter::empty(), &mut blobs)
            .unwrap();
        for i in 0..n {
            let loc = m.blob(seq, &digest(i)).unwrap().unwrap();
            assert_eq!((loc.snap_seq, loc.size), (seq, i as u64));
            assert_eq!(loc.member, format!("src/f{i}").into_bytes());
        }
        assert!(m.blob(seq, &digest(n)).unwrap().is_none());
    }
}
