//! The durable alert queue, in the state database: an alert is written once (`spool_alert`) with
//! one `spool_pending` row per output that wants it; an output deletes its row once it has
//! delivered, and a trigger deletes the alert when no row is left. Delivery is at least once: a
//! crash between sending and deleting the row sends that alert again after the restart.
//!
//! The spool is capped (`alerts.spool_max`): when the alerts waiting exceed the cap, alerts are
//! dropped, lowest level first and oldest first within a level (they can only be waiting for an
//! output that is down), and the caller is told, so that it raises an alert about it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::OutputError;
use crate::state;

/// An alert read back from the spool.
#[derive(Debug, Clone)]
pub struct Spooled {
    pub id: i64,
    pub created_ms: i64,
    pub body: String,
}

/// What the cap dropped during a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub alerts: u64,
    pub bytes: u64,
}

struct Inner {
    conn: Connection,
    /// An upper bound of the bytes in `spool_alert`: the exact sum when last computed plus what
    /// was pushed since (deliveries only lower the real figure).
    estimate: u64,
}

/// The spool, shared by the submitting threads.
pub struct Spool {
    db_path: PathBuf,
    max_bytes: u64,
    inner: Mutex<Inner>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Spool {
    /// Opens the spool in the database at `db_path` (migrated by [`state::open_db`]).
    pub fn open(db_path: &Path, max_bytes: u64) -> Result<Spool, OutputError> {
        let conn = state::open_db(db_path)?;
        let exact = exact_size(&conn).map_err(|e| sql(db_path, e))?;
        Ok(Spool {
            db_path: db_path.to_path_buf(),
            max_bytes,
            inner: Mutex::new(Inner {
                conn,
                estimate: exact,
            }),
        })
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// A new connection for a delivery thread.
    pub fn connect(&self) -> Result<Connection, OutputError> {
        Ok(state::open_db(&self.db_path)?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves nothing half-written (SQLite rolls back).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes one alert for `outputs`; returns its id and what the cap dropped to make room.
    pub fn push(
        &self,
        body: &str,
        level: u8,
        outputs: &[&str],
    ) -> Result<(i64, Option<Dropped>), OutputError> {
        let mut g = self.lock();
        let size = body.len() as u64;
        let mut dropped = None;
        if g.estimate + size > self.max_bytes {
            let exact = exact_size(&g.conn).map_err(|e| sql(&self.db_path, e))?;
            g.estimate = exact;
            if exact + size > self.max_bytes {
                // Make room for a tenth of the cap, so that the cap is not hit on every push.
                let target = (self.max_bytes - self.max_bytes / 10).saturating_sub(size);
                let d = drop_oldest(&mut g.conn, exact.saturating_sub(target))
                    .map_err(|e| sql(&self.db_path, e))?;
                g.estimate = exact - d.bytes;
                dropped = Some(d);
            }
        }
        let tx = g
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql(&self.db_path, e))?;
        tx.prepare_cached(
            "INSERT INTO spool_alert (created_ms, level, size, body) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| st.execute(params![now_ms(), level, size as i64, body]))
        .map_err(|e| sql(&self.db_path, e))?;
        let id = tx.last_insert_rowid();
        {
            let mut st = tx
                .prepare_cached("INSERT INTO spool_pending (output, alert_id) VALUES (?1, ?2)")
                .map_err(|e| sql(&self.db_path, e))?;
            for o in outputs {
                st.execute(params![o, id])
                    .map_err(|e| sql(&self.db_path, e))?;
            }
        }
        tx.commit().map_err(|e| sql(&self.db_path, e))?;
        g.estimate += size;
        Ok((id, dropped))
    }

    /// Forgets what is pending for outputs no longer configured; returns (output, alerts) dropped.
    pub fn retain_outputs(&self, keep: &[String]) -> Result<Vec<(String, u64)>, OutputError> {
        let g = self.lock();
        let mut gone = Vec::new();
        for (name, n) in counts(&g.conn).map_err(|e| sql(&self.db_path, e))? {
            if !keep.contains(&name) {
                g.conn
                    .execute("DELETE FROM spool_pending WHERE output = ?1", [&name])
                    .map_err(|e| sql(&self.db_path, e))?;
                gone.push((name, n));
            }
        }
        Ok(gone)
    }

    /// Which of `ids` are still waiting, counted per output.
    pub fn undelivered(&self, ids: &[i64]) -> Result<Vec<(String, u64)>, OutputError> {
        let g = self.lock();
        let mut st = g
            .conn
            .prepare_cached("SELECT output FROM spool_pending WHERE alert_id = ?1")
            .map_err(|e| sql(&self.db_path, e))?;
        let mut by: std::collections::BTreeMap<String, u64> = Default::default();
        for id in ids {
            let outs = st
                .query_map([id], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| sql(&self.db_path, e))?;
            for o in outs {
                *by.entry(o).or_default() += 1;
            }
        }
        Ok(by.into_iter().collect())
    }

    /// Up to `limit` alerts waiting for `output`, oldest first.
    pub fn pending(&self, output: &str, limit: usize) -> Result<Vec<Spooled>, OutputError> {
        pending(&self.lock().conn, output, limit).map_err(|e| sql(&self.db_path, e))
    }

    /// Marks alerts delivered by `output`.
    pub fn ack(&self, output: &str, ids: &[i64]) -> Result<(), OutputError> {
        ack(&mut self.lock().conn, output, ids).map_err(|e| sql(&self.db_path, e))
    }

    /// Alerts waiting, per output.
    pub fn pending_counts(&self) -> Result<Vec<(String, u64)>, OutputError> {
        counts(&self.lock().conn).map_err(|e| sql(&self.db_path, e))
    }
}

fn exact_size(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COALESCE(SUM(size), 0) FROM spool_alert", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n.max(0) as u64)
}

fn drop_oldest(conn: &mut Connection, need: u64) -> rusqlite::Result<Dropped> {
    let tx = conn.transaction()?;
    let mut freed = 0u64;
    let mut n = 0u64;
    let mut ids = Vec::new();
    {
        let mut st = tx.prepare("SELECT id, size FROM spool_alert ORDER BY level, id")?;
        let mut rows = st.query([])?;
        while freed < need {
            let Some(r) = rows.next()? else { break };
            ids.push(r.get::<_, i64>(0)?);
            freed += r.get::<_, i64>(1)?.max(0) as u64;
            n += 1;
        }
    }
    {
        let mut del = tx.prepare("DELETE FROM spool_alert WHERE id = ?1")?;
        for id in ids {
            del.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(Dropped {
        alerts: n,
        bytes: freed,
    })
}

fn counts(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut st =
        conn.prepare("SELECT output, COUNT(*) FROM spool_pending GROUP BY output ORDER BY output")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

/// Up to `limit` alerts waiting for `output`, oldest first.
pub fn pending(conn: &Connection, output: &str, limit: usize) -> rusqlite::Result<Vec<Spooled>> {
    let mut st = conn.prepare_cached(
        "SELECT a.id, a.created_ms, a.body FROM spool_pending p JOIN spool_alert a ON a.id = p.alert_id \
         WHERE p.output = ?1 ORDER BY p.alert_id LIMIT ?2",
    )?;
    let rows = st.query_map(params![output, limit as i64], |r| {
        Ok(Spooled {
            id: r.get(0)?,
            created_ms: r.get(1)?,
            body: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// Marks alerts delivered by `output`.
pub fn ack(conn: &mut Connection, output: &str, ids: &[i64]) -> rusqlite::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut st =
            tx.prepare_cached("DELETE FROM spool_pending WHERE output = ?1 AND alert_id = ?2")?;
        for id in ids {
            st.execute(params![output, id])?;
        }
    }
    tx.commit()
}

/// Whether anything is waiting for `output`.
pub fn has_pending(conn: &Connection, output: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM spool_pending WHERE output = ?1 LIMIT 1",
        [output],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
}

fn sql(path: &Path, source: rusqlite::Error) -> OutputError {
    OutputError::Spool {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(max: u64) -> (tempfile::TempDir, Spool) {
        let d = tempfile::tempdir().unwrap();
        let st = state::State::open(d.path()).unwrap();
        let s = Spool::open(&st.db_path, max).unwrap();
        (d, s)
    }

    #[test]
    fn alert_is_pruned_when_every_output_delivered() {
        let (_d, s) = open(1 << 20);
        let (id, dropped) = s.push("{}", 3, &["a", "b"]).unwrap();
        assert!(dropped.is_none());
        let mut c = s.connect().unwrap();
        assert_eq!(pending(&c, "a", 10).unwrap().len(), 1);
        ack(&mut c, "a", &[id]).unwrap();
        assert!(!has_pending(&c, "a").unwrap());
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM spool_alert", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "b has not delivered yet");
        ack(&mut c, "b", &[id]).unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM spool_alert", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn cap_drops_oldest_and_says_so() {
        let (_d, s) = open(1000);
        let body = "x".repeat(100);
        for _ in 0..10 {
            let (_, d) = s.push(&body, 3, &["a"]).unwrap();
            assert!(d.is_none());
        }
        let (id, d) = s.push(&body, 2, &["a"]).unwrap();
        let d = d.expect("cap hit");
        assert!(d.alerts >= 2, "{d:?}");
        let c = s.connect().unwrap();
        let left = pending(&c, "a", 100).unwrap();
        assert_eq!(left.last().unwrap().id, id);
        assert_eq!(left.len() as u64, 11 - d.alerts);
        assert!(left.iter().map(|a| a.body.len()).sum::<usize>() <= 1000);
    }

    #[test]
    fn unconfigured_outputs_are_forgotten() {
        let (_d, s) = open(1 << 20);
        s.push("{}", 3, &["a", "old"]).unwrap();
        let gone = s.retain_outputs(&["a".to_string()]).unwrap();
        assert_eq!(gone, vec![("old".to_string(), 1)]);
        assert_eq!(s.pending_counts().unwrap(), vec![("a".to_string(), 1)]);
    }
}
