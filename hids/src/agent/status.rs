//! The agent's health: a status row the running agent rewrites every few seconds in the state
//! database (counters, rates over the last minute and hour, sources, rule hits), and `hids status`,
//! which reads it beside the log positions and the spool while the agent runs.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Map, Value};

use super::metrics::Live;
use super::{now_secs, Stats};
use crate::config::Config;
use crate::response::CountersSnapshot;

/// How often the running agent writes its status row.
pub const WRITE_EVERY: Duration = Duration::from_secs(5);

/// A status row older than this says the agent is not running (it writes every 5 s).
pub const STALE_AFTER: u64 = 30;

/// Errors of `hids status`.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("cannot read the status from {path}: {source}")]
    Sql {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Outputs(#[from] crate::outputs::OutputError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One sample of the counters, for rates.
#[derive(Clone)]
struct Sample {
    at: u64,
    events: u64,
    by_level: [u64; 16],
}

/// Writes the status row; keeps an hour of samples to compute rates.
pub struct StatusWriter {
    conn: Connection,
    started: u64,
    samples: VecDeque<Sample>,
}

fn sample(stats: &Stats) -> Sample {
    let mut by_level = [0; 16];
    for (i, a) in stats.alerts_by_level.iter().enumerate() {
        by_level[i] = a.load(Ordering::Relaxed);
    }
    Sample {
        at: now_secs(),
        events: stats.events.load(Ordering::Relaxed) + stats.fim_changes.load(Ordering::Relaxed),
        by_level,
    }
}

/// Rates between the sample `window` seconds ago (or the oldest) and now.
fn window(samples: &VecDeque<Sample>, now: &Sample, secs: u64) -> Value {
    let old = samples
        .iter()
        .find(|s| now.at.saturating_sub(s.at) <= secs)
        .unwrap_or(now);
    let span = now.at.saturating_sub(old.at).max(1);
    let mut levels = Map::new();
    for l in 0..16 {
        let d = now.by_level[l].saturating_sub(old.by_level[l]);
        if d > 0 {
            levels.insert(l.to_string(), json!(d));
        }
    }
    json!({
        "seconds": span,
        "events": now.events.saturating_sub(old.events),
        "events_per_s": (now.events.saturating_sub(old.events)) as f64 / span as f64,
        "alerts_by_level": levels,
    })
}

impl StatusWriter {
    /// A writer on its own connection to the state database.
    pub fn new(conn: Connection) -> StatusWriter {
        StatusWriter {
            conn,
            started: now_secs(),
            samples: VecDeque::new(),
        }
    }

    /// The status as JSON: what the row holds.
    fn body(&mut self, live: &Live) -> Value {
        let (stats, sources) = (&*live.stats, live.sources());
        let now = sample(stats);
        self.samples.push_back(now.clone());
        while self
            .samples
            .front()
            .is_some_and(|s| now.at.saturating_sub(s.at) > 3600)
        {
            self.samples.pop_front();
        }
        let hits = stats.rule_hits.lock().unwrap_or_else(|e| e.into_inner());
        json!({
            "uptime": now.at.saturating_sub(self.started),
            "events": stats.events.load(Ordering::Relaxed),
            "fim_changes": stats.fim_changes.load(Ordering::Relaxed),
            "alerts": stats.alerts(),
            "submit_errors": stats.submit_errors.load(Ordering::Relaxed),
            "reloads": stats.reloads.load(Ordering::Relaxed),
            "last_minute": window(&self.samples, &now, 60),
            "last_hour": window(&self.samples, &now, 3600),
            "sources": sources.iter().map(|(loc, c)| json!({
                "location": &**loc,
                "events": c.events.load(Ordering::Relaxed),
                "truncated": c.truncated.load(Ordering::Relaxed),
                "lossy_utf8": c.lossy_utf8.load(Ordering::Relaxed),
            })).collect::<Vec<_>>(),
            "rule_hits": hits.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
            "fim_watches": stats.fim_watches.load(Ordering::Relaxed),
            "fim_watches_limit": crate::fim::watch::max_user_watches(),
            "deliveries": live.deliveries().iter().map(|(o, c)| (o.clone(), json!({
                "delivered": c.delivered.load(Ordering::Relaxed),
                "errors": c.errors.load(Ordering::Relaxed),
                "last_error": c.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            }))).collect::<Map<_, _>>(),
            "active_response": live.response.as_ref().map(|r| r.snapshot()),
        })
    }

    /// Rewrites the row; a failure is logged, never fatal.
    pub fn write(&mut self, live: &Live) {
        let body = self.body(live).to_string();
        let r = self.conn.execute(
            "INSERT INTO agent_status (id, pid, started, updated, body) VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET pid = ?1, started = ?2, updated = ?3, body = ?4",
            params![
                std::process::id(),
                self.started as i64,
                now_secs() as i64,
                body
            ],
        );
        if let Err(e) = r {
            tracing::warn!("cannot write the agent status: {e}");
        }
    }
}

/// `hids status`: the agent's status row, the log positions and their lag, the spool.
pub fn print(cfg: &Config, as_json: bool, out: &mut dyn Write) -> Result<bool, StatusError> {
    let st = crate::state::State::open(&cfg.agent.state_dir)?;
    let path = st.db_path.display().to_string();
    let sql = |source| StatusError::Sql {
        path: path.clone(),
        source,
    };
    let row: Option<(i64, i64, i64, String)> = st
        .conn
        .query_row(
            "SELECT pid, started, updated, body FROM agent_status WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(sql)?;
    let now = now_secs();
    let running = row.as_ref().is_some_and(|(pid, _, updated, _)| {
        now.saturating_sub(*updated as u64) <= STALE_AFTER
            && std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    let mut files = Vec::new();
    {
        let mut q = st
            .conn
            .prepare("SELECT source, path, offset, ino FROM log_files ORDER BY source, path")
            .map_err(sql)?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(sql)?;
        for r in rows {
            let (source, p, offset, ino) = r.map_err(sql)?;
            // Lag only when the path still names the file the offset belongs to.
            let lag = std::fs::metadata(&p).ok().and_then(|m| {
                (std::os::unix::fs::MetadataExt::ino(&m) as i64 == ino)
                    .then(|| m.len().saturating_sub(offset as u64))
            });
            files.push(json!({"source": source, "path": p, "offset": offset, "lag_bytes": lag}));
        }
    }
    let spool: Map<String, Value> = crate::outputs::cli::status(cfg)?
        .into_iter()
        .map(|(o, n)| (o, json!(n)))
        .collect();
    let body: Value = row
        .as_ref()
        .and_then(|r| serde_json::from_str(&r.3).ok())
        .unwrap_or(Value::Null);
    let v = json!({
        "running": running,
        "pid": row.as_ref().map(|r| r.0),
        "status_age": row.as_ref().map(|r| now.saturating_sub(r.2 as u64)),
        "agent": body,
        "positions": files,
        "spool_waiting": spool,
    });
    if as_json {
        writeln!(out, "{v}")?;
        return Ok(running);
    }
    match &row {
        None => writeln!(out, "agent: has never run with this state directory")?,
        Some((pid, _, updated, _)) if running => writeln!(
            out,
            "agent: running (pid {pid}, up {}, status {}s old)",
            human(v["agent"]["uptime"].as_u64().unwrap_or(0)),
            now.saturating_sub(*updated as u64)
        )?,
        Some((_, _, updated, _)) => writeln!(
            out,
            "agent: not running (last status {} ago)",
            human(now.saturating_sub(*updated as u64))
        )?,
    }
    let a = &v["agent"];
    if !a.is_null() {
        writeln!(
            out,
            "totals: {} event(s), {} FIM change(s), {} alert(s), {} reload(s), {} spool error(s)",
            a["events"], a["fim_changes"], a["alerts"], a["reloads"], a["submit_errors"]
        )?;
        for (name, w) in [
            ("last minute", &a["last_minute"]),
            ("last hour", &a["last_hour"]),
        ] {
            let levels: Vec<String> = w["alerts_by_level"]
                .as_object()
                .map(|m| {
                    let mut l: Vec<(u32, &Value)> = m
                        .iter()
                        .filter_map(|(k, n)| Some((k.parse().ok()?, n)))
                        .collect();
                    l.sort_by_key(|x| std::cmp::Reverse(x.0));
                    l.iter().map(|(k, n)| format!("level {k}: {n}")).collect()
                })
                .unwrap_or_default();
            writeln!(
                out,
                "{name}: {:.1} event(s)/s; alerts {}",
                w["events_per_s"].as_f64().unwrap_or(0.0),
                if levels.is_empty() {
                    "none".to_string()
                } else {
                    levels.join(", ")
                }
            )?;
        }
        if let Some(src) = a["sources"].as_array() {
            for s in src {
                writeln!(
                    out,
                    "source {}: {} event(s)",
                    crate::diag::escape_control(s["location"].as_str().unwrap_or("")),
                    s["events"]
                )?;
            }
        }
        if a["fim_watches"].as_u64().is_some_and(|n| n > 0) {
            writeln!(
                out,
                "real-time FIM: {} inotify watch(es), limit {}",
                a["fim_watches"],
                a["fim_watches_limit"]
                    .as_u64()
                    .map_or("unknown".to_string(), |l| l.to_string())
            )?;
        }
        if let Some(d) = a["deliveries"].as_object() {
            for (o, c) in d {
                write!(
                    out,
                    "output {}: {} delivered, {} failed attempt(s)",
                    crate::diag::escape_control(o),
                    c["delivered"],
                    c["errors"]
                )?;
                match c["last_error"].as_str() {
                    Some(e) => writeln!(out, ", last: {}", crate::diag::escape_control(e))?,
                    None => writeln!(out)?,
                }
            }
        }
        if let Ok(r) = serde_json::from_value::<CountersSnapshot>(a["active_response"].clone()) {
            if r != CountersSnapshot::default() {
                writeln!(out, "{}", response_line(&r))?;
            }
        }
    }
    for f in &files {
        writeln!(
            out,
            "position {}: offset {}, lag {}",
            crate::diag::escape_control(f["path"].as_str().unwrap_or("")),
            f["offset"],
            f["lag_bytes"]
                .as_u64()
                .map_or("unknown (file replaced or gone)".to_string(), |l| format!(
                    "{l} byte(s)"
                ))
        )?;
    }
    if spool.is_empty() {
        writeln!(out, "spool: empty")?;
    }
    for (o, n) in &spool {
        writeln!(out, "spool {o}: {n} waiting")?;
    }
    Ok(running)
}

/// The text status line of active response.
fn response_line(r: &CountersSnapshot) -> String {
    let skipped: Vec<String> = [
        ("allowlisted", r.allowlisted),
        ("capped", r.capped),
        ("invalid", r.invalid),
        ("already blocked", r.repeated),
        ("queue full", r.dropped),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{n} {k}"))
    .collect();
    format!(
        "active response: {} address(es) blocked now; {} block(s), {} unblock(s), {} failed block(s), {} failed unblock(s); skipped: {}",
        r.in_force,
        r.blocked,
        r.unblocked,
        r.block_failed,
        r.unblock_failed,
        if skipped.is_empty() {
            "none".to_string()
        } else {
            skipped.join(", ")
        }
    )
}

fn human(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_cover_the_window() {
        let mut samples = VecDeque::new();
        let mk = |at, events, l7| {
            let mut by_level = [0; 16];
            by_level[7] = l7;
            Sample {
                at,
                events,
                by_level,
            }
        };
        samples.push_back(mk(1000, 0, 0));
        samples.push_back(mk(1040, 400, 1));
        let now = mk(1100, 1000, 3);
        samples.push_back(now.clone());
        let m = window(&samples, &now, 60);
        assert_eq!(m["events"], 600);
        assert_eq!(m["alerts_by_level"]["7"], 2);
        let h = window(&samples, &now, 3600);
        assert_eq!(h["events"], 1000);
        assert_eq!(h["events_per_s"], 10.0);
        assert_eq!(human(59), "59s");
        assert_eq!(human(3 * 86_400 + 3600), "3d01h");
    }

    #[test]
    fn response_line_names_what_happened() {
        let r = CountersSnapshot {
            blocked: 2,
            unblocked: 1,
            block_failed: 1,
            capped: 3,
            in_force: 1,
            ..Default::default()
        };
        assert_eq!(
            response_line(&r),
            "active response: 1 address(es) blocked now; 2 block(s), 1 unblock(s), 1 failed \
             block(s), 0 failed unblock(s); skipped: 3 capped"
        );
    }
}
