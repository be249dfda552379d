//! The blocks in force with an unblock time, in SQLite (`response_blocks`): a restart unblocks on
//! time, and unblocks at once what fell due while the agent was down.

use rusqlite::{params, Connection, OptionalExtension};

/// One block waiting for its unblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The mechanism ([`super::action::Action::key`]).
    pub action: String,
    pub ip: String,
    pub user: Option<String>,
    pub rule: u32,
    /// Milliseconds since the epoch.
    pub unblock_at: i64,
    /// Unblocks tried and failed so far.
    pub attempts: u32,
}

/// The table, through the responder's own connection.
pub struct Store {
    conn: Connection,
}

impl Store {
    pub fn new(conn: Connection) -> Store {
        Store { conn }
    }

    /// When the block of `ip` by `action` is to be lifted, if it is recorded.
    pub fn unblock_at(&self, action: &str, ip: &str) -> rusqlite::Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT unblock_at FROM response_blocks WHERE action = ?1 AND ip = ?2",
                params![action, ip],
                |r| r.get(0),
            )
            .optional()
    }

    /// Records a block (or moves an existing one's unblock time).
    pub fn record(&self, p: &Pending, now: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO response_blocks (action, ip, user, rule, blocked_at, unblock_at, attempts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)
             ON CONFLICT (action, ip) DO UPDATE SET unblock_at = excluded.unblock_at, attempts = 0",
            params![p.action, p.ip, p.user, p.rule, now, p.unblock_at],
        )?;
        Ok(())
    }

    /// Moves the unblock of a recorded block (a failed unblock is retried later).
    pub fn reschedule(
        &self,
        action: &str,
        ip: &str,
        at: i64,
        attempts: u32,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE response_blocks SET unblock_at = ?3, attempts = ?4 WHERE action = ?1 AND ip = ?2",
            params![action, ip, at, attempts],
        )?;
        Ok(())
    }

    pub fn remove(&self, action: &str, ip: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "DELETE FROM response_blocks WHERE action = ?1 AND ip = ?2",
            params![action, ip],
        )?;
        Ok(())
    }

    /// The blocks due at `now`, oldest first.
    pub fn due(&self, now: i64) -> rusqlite::Result<Vec<Pending>> {
        let mut st = self.conn.prepare_cached(
            "SELECT action, ip, user, rule, unblock_at, attempts FROM response_blocks
             WHERE unblock_at <= ?1 ORDER BY unblock_at LIMIT 100",
        )?;
        let rows = st.query_map(params![now], |r| {
            Ok(Pending {
                action: r.get(0)?,
                ip: r.get(1)?,
                user: r.get(2)?,
                rule: r.get(3)?,
                unblock_at: r.get(4)?,
                attempts: r.get(5)?,
            })
        })?;
        rows.collect()
    }

    /// The next unblock time, if any block waits.
    pub fn next_due(&self) -> rusqlite::Result<Option<i64>> {
        self.conn
            .query_row("SELECT min(unblock_at) FROM response_blocks", [], |r| {
                r.get(0)
            })
    }

    /// How many blocks wait for their unblock.
    pub fn count(&self) -> rusqlite::Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM response_blocks", [], |r| r.get(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_extend_due_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let st = crate::state::State::open(tmp.path()).unwrap();
        let s = Store::new(st.conn);
        let p = Pending {
            action: "[\"nftables\"]".into(),
            ip: "203.0.113.7".into(),
            user: None,
            rule: 100150,
            unblock_at: 5_000,
            attempts: 0,
        };
        s.record(&p, 1_000).unwrap();
        assert_eq!(s.unblock_at(&p.action, &p.ip).unwrap(), Some(5_000));
        assert_eq!(s.next_due().unwrap(), Some(5_000));
        assert!(s.due(4_999).unwrap().is_empty());
        s.record(
            &Pending {
                unblock_at: 9_000,
                ..p.clone()
            },
            2_000,
        )
        .unwrap();
        assert_eq!(s.count().unwrap(), 1);
        assert!(s.due(5_000).unwrap().is_empty());
        s.reschedule(&p.action, &p.ip, 7_000, 2).unwrap();
        let due = s.due(7_000).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].attempts, 2);
        s.remove(&p.action, &p.ip).unwrap();
        assert_eq!(s.next_due().unwrap(), None);
        assert_eq!(s.count().unwrap(), 0);
    }
}
