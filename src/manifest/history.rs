//! The versioned tree read across snapshots: every version a path has had (`vault log`,
//! `vault find`) and one path's version in one snapshot (`vault cat`).

use rusqlite::types::ValueRef;
use rusqlite::{params, OptionalExtension};

use super::{entry_row, Manifest, ManifestError, SnapshotRow, ENTRY_COLUMNS};
use crate::tree::Entry;

/// One row of the versioned tree: a version of a path, part of every snapshot of its source
/// with `from_seq <= seq < to_seq` (`to_seq` None: still in the newest one).
#[derive(Clone, Debug)]
pub struct Version {
    pub from_seq: i64,
    pub to_seq: Option<i64>,
    pub entry: Entry,
}

impl Version {
    /// Whether snapshot `seq` of the source holds this version.
    pub fn holds(&self, seq: i64) -> bool {
        self.from_seq <= seq && self.to_seq.map_or(true, |t| seq < t)
    }
}

/// What [`Manifest::scan_versions`] keeps.
pub struct VersionFilter<'a> {
    /// Only paths starting with these bytes (a range of the primary key: the other rows are
    /// never read).
    pub prefix: Option<&'a [u8]>,
    /// Only paths holding these bytes (checked inside SQLite, before a row is handed out).
    pub contains: Option<&'a [u8]>,
    /// Only versions whose digest starts with these bytes (checked inside SQLite too).
    pub digest_prefix: Option<&'a [u8]>,
    /// Asked once per distinct path that passed the two above, in path byte order.
    pub path: &'a mut dyn FnMut(&[u8]) -> bool,
}

impl std::fmt::Debug for VersionFilter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionFilter")
            .field("prefix", &self.prefix)
            .field("contains", &self.contains)
            .field("digest_prefix", &self.digest_prefix)
            .finish_non_exhaustive()
    }
}

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Version> {
    Ok(Version {
        entry: entry_row(r)?,
        from_seq: r.get(16)?,
        to_seq: r.get(17)?,
    })
}

impl Manifest {
    /// Every version one path of a source has had, oldest first (a range of the primary key).
    pub fn path_versions(
        &self,
        source_id: i64,
        path: &[u8],
    ) -> Result<Vec<Version>, ManifestError> {
        let q = format!(
            "SELECT {ENTRY_COLUMNS}, from_seq, to_seq FROM entries \
             WHERE source_id = ?1 AND path = ?2 ORDER BY from_seq"
        );
        let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![source_id, path], version_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The version of `path` that snapshot `snap` holds.
    pub fn entry_at(
        &self,
        snap: &SnapshotRow,
        path: &[u8],
    ) -> Result<Option<Entry>, ManifestError> {
        let q = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE source_id = ?1 AND path = ?2 \
             AND from_seq <= ?3 AND (to_seq IS NULL OR to_seq > ?3)"
        );
        self.conn
            .query_row(&q, params![snap.source_id, path, snap.seq], entry_row)
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The versions of every path of a source that `filter` keeps, in path order and oldest
    /// first per path. One pass over the source's rows in primary-key order; a row whose path
    /// is not wanted is not decoded past its path.
    pub fn scan_versions(
        &self,
        source_id: i64,
        filter: VersionFilter<'_>,
    ) -> Result<Vec<Version>, ManifestError> {
        let (lo, hi) = match filter.prefix.and_then(|p| successor(p).map(|s| (p, s))) {
            Some((p, s)) => (p.to_vec(), Some(s)),
            None => (Vec::new(), None),
        };
        // Two statements: SQLite takes a bound from the primary key only when it is plain.
        let range = if hi.is_some() {
            "AND path >= ?4 AND path < ?5"
        } else {
            ""
        };
        let q = format!(
            "SELECT {ENTRY_COLUMNS}, from_seq, to_seq FROM entries WHERE source_id = ?1 {range} \
             AND (?2 IS NULL OR instr(path, ?2) > 0) \
             AND (?3 IS NULL OR substr(digest, 1, length(?3)) = ?3) ORDER BY path, from_seq"
        );
        let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
        let mut rows = if hi.is_some() {
            let p = params![source_id, filter.contains, filter.digest_prefix, lo, hi];
            st.query(p)
        } else {
            st.query(params![source_id, filter.contains, filter.digest_prefix])
        }
        .map_err(|e| self.err(e))?;
        let (mut last, mut wanted) = (Vec::new(), false);
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let ValueRef::Blob(path) = r.get_ref(0).map_err(|e| self.err(e))? else {
                return Err(self.err(super::bad_column(0, "path")));
            };
            if path != last.as_slice() {
                last.clear();
                last.extend_from_slice(path);
                wanted = (filter.path)(path);
            }
            if !wanted {
                continue;
            }
            out.push(version_row(r).map_err(|e| self.err(e))?);
        }
        Ok(out)
    }
}

/// The smallest byte string above every string that starts with `p` (None when there is
/// none: `p` is empty or all 0xFF).
fn successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(&last) = s.last() {
        if last < 0xFF {
            *s.last_mut().expect("not empty") += 1;
            return Some(s);
        }
        s.pop();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn successors_bound_every_string_with_the_prefix() {
        assert_eq!(successor(b"etc/"), Some(b"etc0".to_vec()));
        assert_eq!(successor(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b"\xff"), None);
        assert_eq!(successor(b""), None);
    }
}
