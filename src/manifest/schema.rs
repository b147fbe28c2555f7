//! The manifest schema and its migrations.
//!
//! The schema version lives in SQLite's `user_version`. Migration `i` (0-based) takes the
//! database from version `i` to `i + 1`; each runs in its own transaction. A database whose
//! version is newer than [`SCHEMA_VERSION`] is refused rather than misread.

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 4;

/// Migration steps, in order.
pub const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    r#"
    CREATE TABLE sources (
        id   INTEGER PRIMARY KEY,
        path BLOB NOT NULL UNIQUE,   -- absolute source path, raw bytes
        name BLOB NOT NULL           -- base name; prefix of archive members
    );

    -- One row per complete snapshot. `seq` orders snapshots globally; the snapshots of one
    -- source form a line (parent_seq), cut into chains that each start with a full.
    CREATE TABLE snapshots (
        seq            INTEGER PRIMARY KEY,
        id             TEXT NOT NULL UNIQUE,
        source_id      INTEGER NOT NULL REFERENCES sources(id),
        kind           TEXT NOT NULL CHECK (kind IN ('full', 'incremental')),
        parent_seq     INTEGER REFERENCES snapshots(seq),
        chain_seq      INTEGER NOT NULL,      -- seq of the full that starts this chain
        time_ns        INTEGER NOT NULL,
        hash           TEXT NOT NULL CHECK (hash IN ('blake3', 'md5')),
        compression    TEXT NOT NULL,
        archive        TEXT,                  -- file name under archives/, NULL when nothing was stored
        archive_size   INTEGER,
        archive_blake3 BLOB,
        files          INTEGER NOT NULL,
        new            INTEGER NOT NULL,
        changed        INTEGER NOT NULL,
        deleted        INTEGER NOT NULL,
        unchanged      INTEGER NOT NULL,
        bytes_read     INTEGER NOT NULL,
        warnings       INTEGER NOT NULL,
        duration_ms    INTEGER NOT NULL
    );
    CREATE INDEX snapshots_source ON snapshots(source_id, seq);

    -- Versioned tree: a row is part of every snapshot of its source with
    -- from_seq <= seq < to_seq (to_seq NULL: still present in the newest one).
    -- Unchanged paths therefore cost nothing per snapshot.
    CREATE TABLE entries (
        source_id INTEGER NOT NULL,
        path      BLOB NOT NULL,
        from_seq  INTEGER NOT NULL,
        to_seq    INTEGER,
        kind      INTEGER NOT NULL,          -- 0 file, 1 dir, 2 symlink (3-5: see 2 -> 3)
        mode      INTEGER NOT NULL,
        uid       INTEGER NOT NULL,
        gid       INTEGER NOT NULL,
        size      INTEGER NOT NULL,
        mtime_ns  INTEGER NOT NULL,
        ctime_ns  INTEGER NOT NULL,
        ino       INTEGER NOT NULL,
        dev       INTEGER NOT NULL,
        nlink     INTEGER NOT NULL,
        digest    BLOB,                      -- files: 32 bytes BLAKE3 or 16 bytes MD5
        target    BLOB,                      -- symlinks
        PRIMARY KEY (source_id, path, from_seq)
    ) WITHOUT ROWID;
    CREATE INDEX entries_live ON entries(source_id, to_seq);

    -- Where each distinct content of a chain is stored: once per chain.
    CREATE TABLE blobs (
        chain_seq INTEGER NOT NULL,
        digest    BLOB NOT NULL,
        snap_seq  INTEGER NOT NULL,          -- the snapshot whose archive holds it
        member    BLOB NOT NULL,             -- tar member name in that archive
        size      INTEGER NOT NULL,
        PRIMARY KEY (chain_seq, digest)
    ) WITHOUT ROWID;
    "#,
    // 1 -> 2: the repository's identity (written once, at init or by this step; a manifest
    // without it is not taken for a repository) and the source folder's own metadata per
    // snapshot (restore gives the target root the source root's mode, owner and mtime).
    r#"
    CREATE TABLE repository (
        id         TEXT NOT NULL,
        created_ns INTEGER NOT NULL
    );
    -- Snapshots removed by forget: a push may drop these from a remote copy, never others.
    CREATE TABLE forgotten (
        id     TEXT PRIMARY KEY,
        time_ns INTEGER NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE snapshots ADD COLUMN root_mode INTEGER;
    ALTER TABLE snapshots ADD COLUMN root_uid INTEGER;
    ALTER TABLE snapshots ADD COLUMN root_gid INTEGER;
    ALTER TABLE snapshots ADD COLUMN root_mtime_ns INTEGER;
    "#,
    // 2 -> 3: FIFOs and devices (kinds 3 fifo, 4 char device, 5 block device, with their
    // device number), extended attributes (ACLs and capabilities included; see
    // `xattr::Xattrs::encode`) and sparse files.
    r#"
    ALTER TABLE entries ADD COLUMN rdev INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE entries ADD COLUMN xattrs BLOB;
    ALTER TABLE entries ADD COLUMN sparse INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3 -> 4: no index on (source_id, to_seq). SQLite read live rows through the primary key
    // anyway (they are wanted in path order), so the index only cost a sixth of the file and
    // an insert per row; forget's delete of closed rows scans the source's rows instead.
    r#"
    DROP INDEX entries_live;
    "#,
];

/// The migration after which the repository table exists and must hold its one row.
pub const IDENTITY_STEP: usize = 1;
