//! The agent (`hids run`): the wiring of sources, analysis and outputs, its schedules and signals.
//!
//! For now it runs the scheduled FIM scans in the foreground (at idle IO and low CPU priority by
//! default), records the baseline on first start, and writes each change as an alert line to the
//! configured alert files. SIGINT/SIGTERM finish the batch under way and exit cleanly; a second
//! SIGINT exits at once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::json;

use crate::config::{AlertFileConfig, CheckMode, Config};
use crate::event::{ChangeKind, Event, FimChange};
use crate::fim::{self, baseline::Baseline, hash::Throttle, FimError, Mode, ScanOptions, Summary};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Fim(#[from] FimError),
    #[error("cannot install the signal handlers: {0}")]
    Signals(#[source] io::Error),
    #[error("cannot open alert file {}: {source}", path.display())]
    AlertFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Sets up the diagnostic log on stderr: `level` (or `RUST_LOG`), as text or JSON.
pub fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("hids={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The rule an alert for a FIM change carries until the rule engine classifies FIM events:
/// OSSEC's syscheck rule ids and levels, level 12 for a tampered baseline.
fn fim_rule(c: &FimChange) -> (u32, u8, &'static str) {
    if c.tampered {
        return (
            559,
            12,
            "FIM baseline tampered: an entry failed its integrity check",
        );
    }
    match c.kind {
        ChangeKind::Modified => (550, 7, "Integrity checksum changed."),
        ChangeKind::Deleted => (553, 7, "File deleted."),
        ChangeKind::Added => (554, 5, "File added to the system."),
    }
}

fn open_append(path: &Path) -> Result<File, AgentError> {
    let err = |source| AgentError::AlertFile {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(err)?;
        }
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(err)
}

/// A plain writer of alerts to the configured alert files (JSON lines and OSSEC-style text).
pub struct AlertFiles {
    json: Option<(PathBuf, File)>,
    text: Option<(PathBuf, File)>,
    min_level: u8,
    counter: u64,
}

impl AlertFiles {
    pub fn open(cfg: &Config) -> Result<AlertFiles, AgentError> {
        let open = |c: &AlertFileConfig| -> Result<Option<(PathBuf, File)>, AgentError> {
            if !c.enabled {
                return Ok(None);
            }
            Ok(Some((c.path.clone(), open_append(&c.path)?)))
        };
        Ok(AlertFiles {
            json: open(&cfg.alerts.json)?,
            text: open(&cfg.alerts.file)?,
            min_level: cfg.alerts.log_level,
            counter: 0,
        })
    }

    /// Writes one FIM event as an alert. Write errors are logged, never fatal.
    pub fn write_fim(&mut self, event: &Event) {
        let Some(change) = event.fim.as_deref() else {
            return;
        };
        let (id, level, description) = fim_rule(change);
        if level < self.min_level {
            return;
        }
        let secs = event
            .time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.counter += 1;
        let groups = ["ossec", "syscheck"];
        if let Some((path, f)) = &mut self.json {
            let line = json!({
                "timestamp": fim::report::format_time(event.time),
                "rule": {"id": id, "level": level, "description": description, "groups": groups},
                "hostname": &*event.host,
                "location": &*event.location,
                "full_log": event.full_log,
                "syscheck": fim::change_json(change),
            });
            if let Err(e) = writeln!(f, "{line}") {
                tracing::error!(file = %path.display(), "cannot write alert: {e}");
            }
        }
        if let Some((path, f)) = &mut self.text {
            let text = format!(
                "** Alert {secs}.{}: - {},\n{} {}->{}\nRule: {id} (level {level}) -> '{description}'\n{}\n\n",
                self.counter,
                groups.join(","),
                fim::report::format_time(event.time),
                event.host,
                event.location,
                crate::diag::escape_control_keep_newlines(&event.full_log),
            );
            if let Err(e) = f.write_all(text.as_bytes()) {
                tracing::error!(file = %path.display(), "cannot write alert: {e}");
            }
        }
    }
}

/// Seconds from now until the next local `hh:mm`.
fn until_daily(hh: u8, mm: u8) -> Duration {
    let now = crate::sys::local_seconds_of_day();
    let target = u32::from(hh) * 3600 + u32::from(mm) * 60;
    let secs = (target + 86_400 - now) % 86_400;
    Duration::from_secs(u64::from(if secs == 0 { 86_400 } else { secs }))
}

fn log_summary(what: &str, s: &Summary) {
    tracing::info!(
        entries = s.entries,
        hashed = s.hashed,
        hashed_mib = s.hashed_bytes >> 20,
        added = s.added,
        modified = s.modified,
        deleted = s.deleted,
        tampered = s.tampered,
        unreadable = s.denied,
        seconds = format!("{:.2}", s.seconds),
        "{what}{}",
        if s.interrupted { " (interrupted)" } else { "" }
    );
}

/// Runs the agent in the foreground until SIGINT or SIGTERM.
pub fn run(cfg: &Config) -> Result<(), AgentError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .map_err(AgentError::Signals)?;
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(AgentError::Signals)?;
    }
    let fimc = &cfg.fim;
    // Real-time FIM: watches added before the scan at start (so nothing changed during it is
    // missed), its thread spawned before the priority is lowered; checking starts after the scan.
    let realtime = start_realtime(fimc, &cfg.agent.state_dir);
    if fimc.low_priority {
        // Before any thread exists, so that every scan thread inherits it.
        match crate::sys::lower_priority() {
            Ok(()) => tracing::info!("FIM scans run at idle IO priority and nice 19"),
            Err(e) => tracing::warn!("cannot lower the scan priority: {e}"),
        }
    }
    let host: Arc<str> = Arc::from(cfg.agent.hostname.as_str());
    let mut alerts = AlertFiles::open(cfg)?;
    let state_dir = &cfg.agent.state_dir;
    let fresh = {
        let st = crate::state::State::open(state_dir).map_err(FimError::from)?;
        let n: i64 = st
            .conn
            .query_row(
                "SELECT count(*) FROM fim_meta WHERE key = 'initialized'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        n == 0
    };
    let mut b = Baseline::open(state_dir, fresh)?;
    let throttle = Throttle::new(fimc.max_io_bytes_per_s, fimc.max_files_per_s);
    let mut warned: Vec<String> = Vec::new();
    let mut report_warnings = |s: &Summary| {
        for w in &s.warnings {
            if !warned.contains(w) {
                tracing::warn!("{}", crate::diag::escape_control(w));
                warned.push(w.clone());
            }
        }
    };
    tracing::info!(
        paths = fimc.paths.len(),
        state = %state_dir.display(),
        "hids agent started"
    );
    let scan =
        |b: &mut Baseline, mode: Mode, full: bool, alerts: &mut AlertFiles| -> Option<Summary> {
            let opts = ScanOptions {
                full,
                throttle: throttle.as_ref(),
                stop: Some(&stop),
            };
            let r = fim::scan(b, fimc, mode, &opts, &mut |c| {
                alerts.write_fim(&fim::change_event(c, Arc::clone(&host)));
            });
            match r {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!("FIM scan failed: {e}");
                    None
                }
            }
        };
    if fresh {
        tracing::info!(
            "no FIM baseline yet: recording it now; changes are reported from the next scan on"
        );
        if let Some(s) = scan(&mut b, Mode::Init, false, &mut alerts) {
            report_warnings(&s);
            log_summary("FIM baseline recorded", &s);
        }
    } else if let Some(s) = scan(
        &mut b,
        Mode::Check,
        fimc.check_mode == CheckMode::Full,
        &mut alerts,
    ) {
        report_warnings(&s);
        log_summary("FIM scan at start done", &s);
    }
    let realtime = realtime.map(|w| {
        let (tx, rx) = std::sync::mpsc::channel();
        w.resume(tx);
        rx
    });
    if fimc.interval.is_none() && fimc.daily_time.is_none() {
        tracing::info!("no scheduled FIM scans configured (interval = 0, no daily_time)");
    }
    let mut next_interval = fimc.interval.map(|d| Instant::now() + d);
    let mut next_daily = fimc
        .daily_time
        .map(|(h, m)| Instant::now() + until_daily(h, m));
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let due_interval = next_interval.is_some_and(|t| t <= now);
        let due_daily = next_daily.is_some_and(|t| t <= now);
        if !(due_interval || due_daily) {
            match &realtime {
                Some(rx) => realtime_notices(rx, &mut alerts, &host),
                None => std::thread::sleep(Duration::from_millis(200)),
            }
            continue;
        }
        // A scan that was not initialized (interrupted first start) starts over.
        let initialized = b.is_initialized().unwrap_or(true);
        let n: u64 = b
            .meta("scheduled_scans")
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            + 1;
        let _ = b.set_meta("scheduled_scans", &n.to_string());
        let full = fimc.check_mode == CheckMode::Full
            || (fimc.full_every > 0 && n % u64::from(fimc.full_every) == 0);
        let mode = if initialized { Mode::Check } else { Mode::Init };
        if let Some(s) = scan(&mut b, mode, full, &mut alerts) {
            report_warnings(&s);
            log_summary(
                if full {
                    "scheduled FIM scan (full) done"
                } else {
                    "scheduled FIM scan done"
                },
                &s,
            );
        }
        let now = Instant::now();
        if due_interval {
            next_interval = fimc.interval.map(|d| now + d);
        }
        if due_daily {
            next_daily = fimc.daily_time.map(|(h, m)| now + until_daily(h, m));
        }
    }
    tracing::info!("stopping: signal received");
    Ok(())
}

// --- Real-time FIM hook: the watcher's changes go to the same alert writer as a scan's. ---

fn start_realtime(fimc: &crate::config::FimConfig, state_dir: &Path) -> Option<fim::watch::Paused> {
    let started = fim::watch::Watcher::start(fimc, state_dir)
        .map_err(|e| e.to_string())
        .and_then(|w| w.map(|w| w.spawn().map_err(|e| e.to_string())).transpose());
    match started {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("cannot start real-time FIM: {e}; the scheduled scans still run");
            None
        }
    }
}

/// Writes the watcher's notices for up to 200 ms (so that signals and schedules are seen).
fn realtime_notices(
    rx: &std::sync::mpsc::Receiver<fim::watch::Notice>,
    alerts: &mut AlertFiles,
    host: &Arc<str>,
) {
    let mut next = rx.recv_timeout(Duration::from_millis(200)).ok();
    while let Some(n) = next {
        match n {
            fim::watch::Notice::Change(c) => {
                alerts.write_fim(&fim::change_event(&c, Arc::clone(host)))
            }
            fim::watch::Notice::Alert {
                rule,
                level,
                description,
                text,
            } => alerts.write_notice(host, rule, level, description, &text),
        }
        next = rx.try_recv().ok();
    }
}

impl AlertFiles {
    /// Writes an alert about the agent's own FIM machinery (not about a file).
    pub fn write_notice(&mut self, host: &str, id: u32, level: u8, description: &str, text: &str) {
        if level < self.min_level {
            return;
        }
        let now = std::time::SystemTime::now();
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.counter += 1;
        let groups = ["ossec", "syscheck"];
        if let Some((path, f)) = &mut self.json {
            let line = json!({
                "timestamp": fim::report::format_time(now),
                "rule": {"id": id, "level": level, "description": description, "groups": groups},
                "hostname": host,
                "location": fim::LOCATION,
                "full_log": text,
            });
            if let Err(e) = writeln!(f, "{line}") {
                tracing::error!(file = %path.display(), "cannot write alert: {e}");
            }
        }
        if let Some((path, f)) = &mut self.text {
            let text = format!(
                "** Alert {secs}.{}: - {},\n{} {host}->{}\nRule: {id} (level {level}) -> '{description}'\n{}\n\n",
                self.counter,
                groups.join(","),
                fim::report::format_time(now),
                fim::LOCATION,
                crate::diag::escape_control_keep_newlines(text),
            );
            if let Err(e) = f.write_all(text.as_bytes()) {
                tracing::error!(file = %path.display(), "cannot write alert: {e}");
            }
        }
    }
}
