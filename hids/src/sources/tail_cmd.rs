//! `hids tail`: runs the configured log sources exactly as the agent does (same readers, same saved
//! positions) and prints each event as one JSON line on stdout: what hids reads.
//!
//! Events are acknowledged once printed and flushed, so positions advance only past what was
//! written; a `kill -9` at worst prints the last second's events again at the next start.

use std::io::{self, BufWriter, Write};
use std::time::SystemTime;

use serde::Serialize;

use super::{spawn, RunOptions, SourceError};
use crate::config::Config;
use crate::event::{Event, LogFormat};
use crate::state::{State, StateError};

/// Options of `hids tail`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TailOptions {
    /// Read what is there and stop, instead of following.
    pub once: bool,
    /// Print only the number of events at the end (for measurements).
    pub count: bool,
    /// Poll files instead of using inotify.
    pub poll: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// One event as `hids tail` prints it.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    host: &'a str,
    location: &'a str,
    format: LogFormat,
    full_log: &'a str,
    truncated: bool,
    lossy_utf8: bool,
}

/// RFC 3339 in UTC with microseconds.
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn write_event(w: &mut impl Write, e: &Event) -> io::Result<()> {
    let line = Line {
        time: rfc3339(e.time),
        host: &e.host,
        location: &e.location,
        format: e.format,
        full_log: &e.full_log,
        truncated: e.flags.truncated,
        lossy_utf8: e.flags.lossy_utf8,
    };
    serde_json::to_writer(&mut *w, &line)?;
    w.write_all(b"\n")
}

/// Sends the diagnostic log (warnings about unreadable files and the like) to stderr, at the
/// configured level unless `HIDS_LOG` says otherwise (`HIDS_LOG=debug`).
pub fn init_diagnostics(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HIDS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Runs the sources and prints their events until they end (`once`) or stdout closes. Returns the
/// number of events handed on.
pub fn run(config: &Config, opts: TailOptions) -> Result<u64, TailError> {
    let state = State::open(&config.agent.state_dir)?;
    let running = spawn(
        config,
        &state,
        RunOptions {
            once: opts.once,
            poll: opts.poll,
        },
    )?;
    let stdout = io::stdout();
    let mut w = BufWriter::with_capacity(256 << 10, stdout.lock());
    let mut count = 0u64;
    // Each batch is printed, flushed, then acknowledged: positions never pass what was written,
    // and a blocked stdout holds back at most one batch.
    'outer: while let Ok(batch) = running.rx.recv() {
        count += batch.len() as u64;
        if !opts.count {
            for d in &batch {
                if write_event(&mut w, &d.event).is_err() {
                    break 'outer;
                }
            }
            if w.flush().is_err() {
                break;
            }
        }
        running.acker.ack_batch(&batch);
    }
    if opts.count {
        let _ = writeln!(w, "{count}");
    }
    let _ = w.flush();
    for (location, c) in &running.counters() {
        use std::sync::atomic::Ordering::Relaxed;
        let (t, l) = (c.truncated.load(Relaxed), c.lossy_utf8.load(Relaxed));
        if t > 0 || l > 0 {
            tracing::info!(
                location = %location,
                "{} events, {t} cut at max_line, {l} with invalid UTF-8 replaced",
                c.events.load(Relaxed)
            );
        }
    }
    running.finish();
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000Z");
    }
}
