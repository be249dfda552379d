//! The FIM outbox: changes the baseline has absorbed but whose alert is not spooled yet.
//!
//! A scan (or a real-time check) writes a change to the baseline before the analysis thread
//! spools its alert; a crash in between used to lose the alert for good, as the next scan
//! compares with the new baseline. Migration 0007 adds `fim_outbox`, filled by a trigger in the
//! same transaction as the change's `fim_change` row. The analysis deletes the row once the alert
//! is in the spool ([`Outbox::done`]); at start the agent reports what a crash left
//! ([`Outbox::left`]), before its first scan. A crash after the spool and before the delete
//! repeats an alert, never loses one, as with the log positions.

use std::str::FromStr;

use rusqlite::{params, Connection};
use serde_json::Value;

use crate::event::{ChangeKind, Event, FileAttrs, FileType, FimChange};
use crate::fim::baseline::key_of;

/// At most this many changes left by a crash are reported at start (the newest); older ones are
/// dropped with a warning (a state dir used for months by `hids fim check` alone would hold them).
pub const MAX_LEFT: i64 = 10_000;

/// The analysis' handle on the outbox.
pub struct Outbox {
    conn: Connection,
}

impl Outbox {
    /// Uses its own connection to the state database.
    pub fn new(conn: Connection) -> Outbox {
        Outbox { conn }
    }

    /// The change in `event` has its alert spooled (or raises none): forgets the oldest entry for
    /// its path. Failures are logged (the change is then reported again at the next start).
    pub fn done(&self, event: &Event) {
        let Some(c) = event.fim.as_deref() else {
            return;
        };
        let r = self
            .conn
            .prepare_cached(
                "DELETE FROM fim_outbox WHERE change_id =
                 (SELECT min(change_id) FROM fim_outbox WHERE key = ?1)",
            )
            .and_then(|mut st| st.execute(params![key_of(&c.path)]));
        if let Err(e) = r {
            tracing::warn!("cannot clear a reported FIM change from the outbox: {e}");
        }
    }

    /// The changes a crash left unreported, oldest first.
    pub fn left(&self) -> rusqlite::Result<Vec<FimChange>> {
        let dropped = self.conn.execute(
            "DELETE FROM fim_outbox WHERE change_id <
             (SELECT change_id FROM fim_outbox ORDER BY change_id DESC LIMIT 1 OFFSET ?1)",
            params![MAX_LEFT - 1],
        )?;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "too many unreported FIM changes in the outbox: only the newest are reported"
            );
        }
        let mut q = self
            .conn
            .prepare("SELECT record FROM fim_outbox ORDER BY change_id")?;
        let rows = q.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            match serde_json::from_str::<Value>(&r?)
                .ok()
                .and_then(|v| parse(&v))
            {
                Some(c) => out.push(c),
                None => tracing::warn!("unreadable FIM change in the outbox: skipped"),
            }
        }
        Ok(out)
    }
}

/// Nanoseconds since the epoch from the RFC 3339 text the records hold.
fn nanos(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()?
        .timestamp_nanos_opt()
}

/// The attributes of a change record's `old` or `new` (see fim::report::attrs_json).
fn attrs(v: &Value) -> Option<FileAttrs> {
    let o = v.as_object()?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    let n = |k: &str| o.get(k).and_then(Value::as_u64);
    Some(FileAttrs {
        file_type: o.get("type").and_then(Value::as_str).map(FileType::parse),
        size: n("size"),
        mode: o
            .get("perm")
            .and_then(Value::as_str)
            .and_then(|p| u32::from_str_radix(p, 8).ok()),
        uid: n("uid").and_then(|x| u32::try_from(x).ok()),
        gid: n("gid").and_then(|x| u32::try_from(x).ok()),
        user: s("user"),
        group: s("group"),
        inode: n("inode"),
        device: n("device"),
        mtime: o.get("mtime").and_then(nanos),
        ctime: o.get("ctime").and_then(nanos),
        hash: s("hash"),
        hash_skipped: s("hash_skipped"),
        link_target: s("link"),
    })
}

/// A change back from its record (fim::report::change_json).
fn parse(v: &Value) -> Option<FimChange> {
    let path_text = v.get("path")?.as_str()?;
    let path = if v.get("path_escaped").and_then(Value::as_bool) == Some(true) {
        crate::event::path_from_display(path_text)?
    } else {
        std::path::PathBuf::from_str(path_text).ok()?
    };
    let kind = match v.get("change")?.as_str()? {
        "added" => ChangeKind::Added,
        "modified" => ChangeKind::Modified,
        "deleted" => ChangeKind::Deleted,
        _ => return None,
    };
    let before = v.get("old").and_then(attrs);
    let after = v.get("new").and_then(attrs);
    let changed = match (&before, &after) {
        (Some(b), Some(a)) => crate::fim::attrs::changed(b, a),
        _ => Vec::new(),
    };
    Some(FimChange {
        path,
        kind,
        before,
        after,
        changed,
        diff: v.get("diff").and_then(Value::as_str).map(str::to_string),
        tampered: v.get("tampered").and_then(Value::as_bool) == Some(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fim::report::change_json;

    #[test]
    fn a_change_record_reads_back() {
        let before = FileAttrs {
            file_type: Some(FileType::File),
            size: Some(3),
            mode: Some(0o644),
            uid: Some(0),
            gid: Some(0),
            user: Some("root".into()),
            group: Some("root".into()),
            inode: Some(7),
            device: Some(2049),
            mtime: Some(1_700_000_000_123_456_789),
            ctime: Some(1_700_000_000_000_000_000),
            hash: Some("ab".into()),
            hash_skipped: None,
            link_target: None,
        };
        let mut after = before.clone();
        after.size = Some(9);
        after.hash = Some("cd".into());
        after.mode = Some(0o4755);
        let c = FimChange {
            path: std::path::PathBuf::from("/etc/x\\y"),
            kind: ChangeKind::Modified,
            changed: crate::fim::attrs::changed(&before, &after),
            before: Some(before),
            after: Some(after),
            diff: Some("-a\n+b\n".into()),
            tampered: false,
        };
        let back = parse(&change_json(&c)).unwrap();
        assert_eq!(back.path, c.path);
        assert_eq!(back.kind, c.kind);
        assert_eq!(back.before, c.before);
        assert_eq!(back.after, c.after);
        assert_eq!(back.changed, c.changed);
        assert_eq!(back.diff, c.diff);
    }
}
