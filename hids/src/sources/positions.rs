//! The SQLite side of log positions: loading what a source saved last time, and writing the
//! acknowledged positions of every ledger in one transaction per checkpoint.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::{FileIdentity, Ledger};

/// A file position saved by an earlier run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedFile {
    pub identity: FileIdentity,
    pub offset: u64,
    /// Where the file was when saved (where to look for it if it was rotated while stopped).
    pub path: String,
}

/// What a file source knew when it last ran.
#[derive(Debug, Clone, Default)]
pub struct KnownFiles {
    /// The source never ran before: files found at start begin where `start` says.
    pub first_start: bool,
    /// By (device, inode).
    pub files: HashMap<(u64, u64), SavedFile>,
}

/// The database connection of the checkpoint thread.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// A failure is reported once until a save succeeds again.
    failing: bool,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    pub fn new(conn: Connection, path: PathBuf) -> Store {
        Store {
            conn,
            path,
            failing: false,
        }
    }

    /// The files a source followed, and whether it ran before. A read error is reported and
    /// treated as a first start (files are then read from where `start` says, nothing is lost).
    pub fn load_files(&mut self, source: &str) -> KnownFiles {
        match self.try_load_files(source) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(db = %self.path.display(), source, "cannot read log positions: {e}");
                KnownFiles {
                    first_start: true,
                    files: HashMap::new(),
                }
            }
        }
    }

    fn try_load_files(&mut self, source: &str) -> rusqlite::Result<KnownFiles> {
        let known: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM log_sources WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()?;
        let mut st = self.conn.prepare(
            "SELECT dev, ino, head_len, head_hash, offset, path FROM log_files WHERE source = ?1",
        )?;
        let rows = st.query_map([source], |r| {
            Ok(SavedFile {
                identity: FileIdentity {
                    dev: r.get::<_, i64>(0)? as u64,
                    ino: r.get::<_, i64>(1)? as u64,
                    head_len: r.get::<_, i64>(2)?.clamp(0, u32::MAX as i64) as u32,
                    head_hash: r.get::<_, i64>(3)? as u64,
                },
                offset: r.get::<_, i64>(4)?.max(0) as u64,
                path: r.get(5)?,
            })
        })?;
        let mut files = HashMap::new();
        for f in rows {
            let f = f?;
            files.insert((f.identity.dev, f.identity.ino), f);
        }
        Ok(KnownFiles {
            first_start: known.is_none(),
            files,
        })
    }

    /// The journal cursor a journald source saved, if any.
    pub fn load_cursor(&mut self, source: &str) -> Option<String> {
        self.conn
            .query_row(
                "SELECT cursor FROM log_sources WHERE source = ?1",
                [source],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .unwrap_or_else(|e| {
                tracing::warn!(db = %self.path.display(), source, "cannot read journal cursor: {e}");
                None
            })
            .flatten()
    }

    /// Writes what changed in every ledger since the last save, in one transaction.
    pub fn save_all(&mut self, ledgers: &[Arc<Ledger>]) {
        struct Snap {
            key: String,
            cursor: Option<Arc<str>>,
            files: Vec<(u32, super::FileMark)>,
            prune: bool,
        }
        let mut snaps = Vec::new();
        for l in ledgers {
            let mut g = l.lock();
            if !g.dirty {
                continue;
            }
            g.dirty = false;
            let prune = std::mem::take(&mut g.prune_pending);
            snaps.push((
                l.clone(),
                Snap {
                    key: l.key.clone(),
                    cursor: g.cursor.clone(),
                    files: g.files.iter().map(|(k, v)| (*k, v.clone())).collect(),
                    prune,
                },
            ));
        }
        if snaps.is_empty() {
            return;
        }
        let result = (|| -> rusqlite::Result<()> {
            let now = now_secs();
            let tx = self.conn.transaction()?;
            for (_, s) in &snaps {
                tx.execute(
                    "INSERT INTO log_sources (source, cursor, updated) VALUES (?1, ?2, ?3)
                     ON CONFLICT (source) DO UPDATE SET
                        cursor = COALESCE(excluded.cursor, cursor), updated = excluded.updated",
                    params![s.key, s.cursor.as_deref(), now],
                )?;
                if s.prune {
                    // Rows of files not followed any more (rotated away, deleted) are dropped once
                    // the source has looked at what exists now.
                    let keep: Vec<(i64, i64)> = s
                        .files
                        .iter()
                        .map(|(_, m)| (m.identity.dev as i64, m.identity.ino as i64))
                        .collect();
                    let mut st = tx.prepare("SELECT dev, ino FROM log_files WHERE source = ?1")?;
                    let rows: Vec<(i64, i64)> = st
                        .query_map([&s.key], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<rusqlite::Result<_>>()?;
                    drop(st);
                    for r in rows.iter().filter(|r| !keep.contains(r)) {
                        tx.execute(
                            "DELETE FROM log_files WHERE source = ?1 AND dev = ?2 AND ino = ?3",
                            params![s.key, r.0, r.1],
                        )?;
                    }
                }
                for (_, m) in &s.files {
                    tx.execute(
                        "INSERT INTO log_files
                            (source, dev, ino, head_len, head_hash, path, offset, updated)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT (source, dev, ino) DO UPDATE SET
                            head_len = excluded.head_len, head_hash = excluded.head_hash,
                            path = excluded.path, offset = excluded.offset,
                            updated = excluded.updated",
                        params![
                            s.key,
                            m.identity.dev as i64,
                            m.identity.ino as i64,
                            i64::from(m.identity.head_len),
                            m.identity.head_hash as i64,
                            m.path,
                            m.offset.min(i64::MAX as u64) as i64,
                            now
                        ],
                    )?;
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!(db = %self.path.display(), "log positions are saved again");
                    self.failing = false;
                }
                for (l, s) in snaps {
                    let mut g = l.lock();
                    for (slot, m) in s.files.iter().filter(|(_, m)| m.retired) {
                        // Forget a retired file only if nothing moved it since the snapshot.
                        if g.files.get(slot).is_some_and(|cur| {
                            cur.retired && cur.generation == m.generation && cur.offset == m.offset
                        }) {
                            g.files.remove(slot);
                        }
                    }
                }
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(db = %self.path.display(), "cannot save log positions (will retry): {e}");
                    self.failing = true;
                }
                for (l, s) in snaps {
                    let mut g = l.lock();
                    g.dirty = true;
                    g.prune_pending |= s.prune;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_positions_load_back_and_prune_forgets_unfollowed_files() {
        let tmp = tempfile::tempdir().unwrap();
        let st = crate::state::State::open(tmp.path()).unwrap();
        let mut store = Store::new(st.connect().unwrap(), st.db_path.clone());
        assert!(store.load_files("/var/log/x").first_start);
        let l = Arc::new(Ledger::new("/var/log/x".into()));
        let id = |ino| FileIdentity {
            dev: 7,
            ino,
            head_len: 3,
            head_hash: u64::MAX - 1,
        };
        l.register(0, id(1), "/var/log/x".into(), 0, 100);
        l.register(1, id(2), "/var/log/x".into(), 0, 5);
        store.save_all(std::slice::from_ref(&l));
        let k = store.load_files("/var/log/x");
        assert!(!k.first_start);
        assert_eq!(k.files[&(7, 1)].offset, 100);
        assert_eq!(k.files[&(7, 1)].identity, id(1));
        assert_eq!(k.files[&(7, 1)].path, "/var/log/x");
        assert_eq!(k.files.len(), 2);
        // Slot 1 retired: saved once, then forgotten by the ledger; pruning drops its row.
        l.retire(1);
        store.save_all(std::slice::from_ref(&l));
        assert!(!l.lock().files.contains_key(&1));
        l.lock().prune_pending = true;
        l.lock().dirty = true;
        store.save_all(std::slice::from_ref(&l));
        let k = store.load_files("/var/log/x");
        assert_eq!(k.files.len(), 1);
        assert!(store.load_cursor("/var/log/x").is_none());
    }

    #[test]
    fn cursor_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let st = crate::state::State::open(tmp.path()).unwrap();
        let mut store = Store::new(st.connect().unwrap(), st.db_path.clone());
        let l = Arc::new(Ledger::new("journald".into()));
        l.ack_cursor(&Arc::from("s=abc;i=1"));
        store.save_all(std::slice::from_ref(&l));
        assert_eq!(store.load_cursor("journald").as_deref(), Some("s=abc;i=1"));
    }
}
