-- Log sources: one row per configured source once it has run (so that a restart knows a file it
-- has not seen is new, and reads it whole), with the journal cursor for journald sources.
CREATE TABLE log_sources (
    source  TEXT PRIMARY KEY NOT NULL,
    cursor  TEXT,
    updated INTEGER NOT NULL
);

-- Log positions: per followed file, by identity (device, inode and a hash of its first bytes), the
-- offset up to which its events were handed on.
CREATE TABLE log_files (
    source    TEXT NOT NULL,
    dev       INTEGER NOT NULL,
    ino       INTEGER NOT NULL,
    head_len  INTEGER NOT NULL,
    head_hash INTEGER NOT NULL,
    path      TEXT NOT NULL,
    offset    INTEGER NOT NULL,
    updated   INTEGER NOT NULL,
    PRIMARY KEY (source, dev, ino)
);
