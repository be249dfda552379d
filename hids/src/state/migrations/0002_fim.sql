-- File integrity baseline: one row per path.
-- `key` is the path's bytes with every '/' turned into a 0x00 byte: byte order of keys is then the
-- order of a depth-first walk with siblings sorted by name, so a scan merge-joins its walk against
-- the table read in key order, and a subtree is one key range.
-- `mac` is a keyed BLAKE3 over the whole row (key in <state_dir>/fim.key); it also serves as the
-- row's version for conditional writes.
CREATE TABLE fim_entry (
    key          BLOB PRIMARY KEY NOT NULL,
    checks       INTEGER NOT NULL,
    type         TEXT,
    size         INTEGER,
    mode         INTEGER,
    uid          INTEGER,
    gid          INTEGER,
    user         TEXT,
    grp          TEXT,
    inode        INTEGER,
    dev          INTEGER,
    mtime        INTEGER,
    ctime        INTEGER,
    hash         BLOB,
    hash_skipped TEXT,
    link         TEXT,
    since        INTEGER NOT NULL,
    mac          BLOB NOT NULL
) WITHOUT ROWID;

-- Compressed copies of text files under report_changes (never for nodiff paths), for diffs.
CREATE TABLE fim_content (
    id   INTEGER PRIMARY KEY,
    key  BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    data BLOB NOT NULL,
    mac  BLOB NOT NULL
);

-- The changes reported for each path (the latest few per path), as JSON records.
CREATE TABLE fim_change (
    id     INTEGER PRIMARY KEY,
    key    BLOB NOT NULL,
    time   INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX fim_change_key ON fim_change (key, id);

-- Scan bookkeeping: whether a baseline exists, scheduled scan count, last scan times.
CREATE TABLE fim_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
