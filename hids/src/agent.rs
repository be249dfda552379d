//! The agent (`hids run`): the wiring of sources, analysis and outputs, its schedules and signals.
//!
//! Threads and bounded channels, as architecture.md draws them:
//! - one thread per `[[logs]]` source (the `sources` module) sends batches of lines; a forwarder
//!   passes them into the analysis channel as [`Work::Logs`];
//! - the FIM thread runs the scheduled scans (at idle IO and low CPU priority by default) and sends
//!   each change as [`Work::Fim`]. A second FIM source (real-time watches) takes a clone of the
//!   same [`WorkSender`] and sends its changes the same way: the analysis does not know where a
//!   change came from;
//! - the analysis thread pre-decodes, decodes and runs the rules (one [`Engine`], so correlation
//!   sees every event in order), submits each alert to the outputs spool, and only then
//!   acknowledges the batch's positions: a crash repeats lines, never skips them;
//! - the outputs' delivery threads (the `outputs` module) deliver from the spool.
//!
//! Every channel is bounded: a slow output slows the analysis, which slows the reading; nothing
//! is dropped. SIGTERM/SIGINT stop the sources, let the analysis finish what is queued, save the
//! positions and give the outputs the rest of a 5 s budget; a second signal exits at once.
//! The active response worker (the `response` module) takes each spooled alert from the
//! analysis without ever making it wait, and sends its own alerts back as notices.
//!
//! SIGHUP reloads the whole configuration. The new file is read and checked first, all of it
//! (config, decoders and rules, outputs built): if anything is wrong, nothing changes and the
//! reason is logged. Then, in order:
//! - decoders, rules and outputs are swapped in the analysis thread between two events
//!   (correlation state carries over); outputs are rebuilt only when `[alerts]` changed, and
//!   take over from the spool (an output removed from the configuration has its waiting alerts
//!   dropped and logged, as at a start);
//! - `[active_response]` goes to the responder;
//! - `[[logs]]`: a source whose settings are unchanged keeps running untouched; a removed or
//!   changed one stops, the analysis acknowledges what it sent, its positions are saved; a new
//!   one starts like at the agent's start (a file never read before from its end, a source
//!   known from before at its saved position);
//! - `[fim]`: when it changed, the FIM thread and the real-time watches stop and start again
//!   with the new paths. A path new to the baseline is recorded by its first scan without
//!   "added" alerts; a removed path is no longer scanned nor watched, and its baseline rows are
//!   dropped silently by the next scan (adding it back records it afresh, silently).
//!
//! `[agent]` (state directory, hostname, log level, metrics address) changes at restart only.

pub mod metrics;
mod notify;
pub mod outbox;
pub mod privileges;
pub mod protect;
pub mod status;

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{CheckMode, Config};
use crate::decode::{predecode, DecodeCache, DecoderSet};
use crate::diag::Diagnostic;
use crate::event::{Alert, AlertOptions, ChangeKind, Event, FimChange, RuleInfo};
use crate::fim::{self, baseline::Baseline, hash::Throttle, FimError, Mode, ScanOptions, Summary};
use crate::outputs::{OutputError, Outputs, Prepared};
use crate::response::Responder;
use crate::rules::correlate::Limits;
use crate::rules::matcher::Category;
use crate::rules::{Engine, Fts, Input, LoadOptions, RuleSet};
use crate::sources::{self, Acker, Batch, SourceError};

pub use notify::Notifier;

/// How many work items may wait for the analysis before the senders wait.
pub const WORK_QUEUE: usize = 64;

/// How long real-time FIM notices still go to the analysis once the FIM thread stops.
const NOTICE_DRAIN: Duration = Duration::from_secs(2);

/// How long a stop may take in total (systemd's default stop timeout is far longer; 5 s is ours).
pub const STOP_BUDGET: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Fim(#[from] FimError),
    #[error("cannot install the signal handlers: {0}")]
    Signals(#[source] io::Error),
    #[error(transparent)]
    Sources(#[from] SourceError),
    #[error(transparent)]
    Outputs(#[from] OutputError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("{}", render(.0))]
    Analysis(Vec<Diagnostic>),
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

fn render(d: &[Diagnostic]) -> String {
    let mut s = format!("{} error(s) in the decoders or rules:", d.len());
    for x in d {
        s.push('\n');
        s.push_str(&x.to_string());
    }
    s
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

/// What the analysis thread takes.
pub enum Work {
    /// Lines from the log sources, acknowledged once analysed and their alerts spooled.
    Logs(Batch),
    /// A file change, from a scan or a watch.
    Fim(Event),
    /// An alert about the agent's own machinery (real-time FIM lost events, out of watches).
    Notice(Box<Alert>),
    /// New decoders and rules, and new outputs if they changed (SIGHUP), applied between two
    /// events.
    Reload(Box<Reload>),
}

/// What a reload hands the analysis thread, checked before anything was touched.
pub struct Reload {
    analysis: Analysis,
    outputs: Option<Prepared>,
    /// The outcome of replacing the outputs (the names of the new ones).
    done: SyncSender<Result<Vec<String>, String>>,
}

/// The sending side of the analysis channel; clone it for another source of FIM changes.
pub type WorkSender = SyncSender<Work>;

/// Decoders and rules ready to run: what a reload replaces.
pub struct Analysis {
    decoders: DecoderSet,
    fts: Vec<Fts>,
    engine: Engine,
}

impl Analysis {
    /// Loads the decoders and rules `cfg` names; every error found, each located.
    /// A configured path that does not exist is skipped with a warning (the packaged defaults may
    /// not be installed); a file that exists and is wrong is an error.
    pub fn load(cfg: &Config) -> Result<Analysis, Vec<Diagnostic>> {
        let existing = |paths: &[&Vec<std::path::PathBuf>]| {
            let mut out = Vec::new();
            for p in paths.iter().flat_map(|v| v.iter()) {
                if std::fs::symlink_metadata(p).is_ok() {
                    out.push(p.clone());
                } else {
                    tracing::warn!(path = %p.display(), "configured decoder or rule path does not exist: skipped");
                }
            }
            out
        };
        let dpaths = existing(&[&cfg.rules.decoders, &cfg.rules.local_decoders]);
        let decoders = DecoderSet::load(&dpaths)?;
        let rpaths = existing(&[&cfg.rules.rules, &cfg.rules.local_rules]);
        let opts = LoadOptions {
            decoder_names: Some(decoders.reported_names()),
            lists: cfg.rules.lists.clone(),
        };
        let rules = RuleSet::load(&rpaths, &opts).map_err(|e| e.0)?;
        let fts = decoders
            .decoders()
            .iter()
            .map(|d| Fts::parse(&d.fts.join(",")))
            .collect();
        Ok(Analysis {
            decoders,
            fts,
            engine: Engine::new(
                Arc::new(rules),
                Limits {
                    max_events: cfg.rules.correlation_max_events,
                    max_log_bytes: cfg.rules.correlation_max_log_bytes,
                    max_keys: cfg.rules.correlation_max_keys,
                },
            ),
        })
    }

    /// How many decoders and rules are loaded.
    pub fn sizes(&self) -> (usize, usize) {
        (self.decoders.decoders().len(), self.engine.rules().len())
    }

    /// Runs one event through pre-decoding, decoding and the rules; the alert it raises, if any.
    /// A FIM change that no rule classifies still raises the built-in syscheck alert, so that a
    /// rule set without FIM rules never silences file integrity.
    pub fn analyse(&mut self, event: &Event, cache: &mut DecodeCache) -> Option<Alert> {
        let (pre, decoded, fts) = match crate::rules::syscheck::decode(event) {
            Some((pre, decoded)) => (pre, decoded, Fts::default()),
            None => {
                let pre = predecode(&event.full_log, event.format);
                let (decoded, idx) = self.decoders.decode_full(&pre, cache);
                let fts = idx
                    .and_then(|i| self.fts.get(i).copied())
                    .unwrap_or_default();
                (pre, decoded, fts)
            }
        };
        let input = Input {
            event,
            predecoded: &pre,
            decoded: &decoded,
            category: Category::of(&decoded),
            fts,
        };
        match self.engine.evaluate(&input) {
            Some(v)
                if v.alert
                    && !self
                        .engine
                        .rules()
                        .rule(v.id)
                        .is_some_and(|r| r.options.no_log) =>
            {
                Some(self.engine.alert(&v, &input))
            }
            Some(_) => None,
            None => {
                let change = event.fim.as_deref()?;
                Some(Alert {
                    time: SystemTime::now(),
                    rule: builtin_fim_rule(change),
                    event: event.clone(),
                    predecoded: pre,
                    decoded,
                    related: Vec::new(),
                })
            }
        }
    }
}

/// The rule a FIM change carries when no loaded rule fires for it: OSSEC's syscheck rule ids and
/// levels, level 12 for a tampered baseline.
fn builtin_fim_rule(c: &FimChange) -> RuleInfo {
    let (id, level, description) = if c.tampered {
        (
            559,
            12,
            "FIM baseline tampered: an entry failed its integrity check",
        )
    } else {
        match c.kind {
            ChangeKind::Modified => (550, 7, "Integrity checksum changed."),
            ChangeKind::Deleted => (553, 7, "File deleted."),
            ChangeKind::Added => (554, 5, "File added to the system."),
        }
    };
    RuleInfo {
        id,
        level,
        description: description.into(),
        groups: ["ossec".into(), "syscheck".into()].into(),
        mitre: Arc::from([]),
        firedtimes: 0,
        options: AlertOptions::default(),
        info: Arc::from([]),
    }
}

/// Counters the agent keeps for its status and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Log events analysed.
    pub events: AtomicU64,
    /// FIM changes analysed.
    pub fim_changes: AtomicU64,
    /// Alerts spooled, by level (0..=15).
    pub alerts_by_level: [AtomicU64; 16],
    /// Alerts per rule id.
    pub rule_hits: Mutex<BTreeMap<u32, u64>>,
    /// Spool writes that failed (and were retried).
    pub submit_errors: AtomicU64,
    /// Successful reloads.
    pub reloads: AtomicU64,
    /// Seconds since the epoch when the analysis last took work or waited idle.
    pub heartbeat: AtomicU64,
    /// inotify watches held by real-time FIM.
    pub fim_watches: Arc<AtomicU64>,
}

impl Stats {
    fn beat(&self) {
        self.heartbeat.store(now_secs(), Ordering::Relaxed);
    }

    fn count_alert(&self, rule: &RuleInfo) {
        self.alerts_by_level[usize::from(rule.level.min(15))].fetch_add(1, Ordering::Relaxed);
        let mut m = self.rule_hits.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(rule.id).or_default() += 1;
    }

    /// Alerts spooled in total.
    pub fn alerts(&self) -> u64 {
        self.alerts_by_level
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What follows a spooled alert: the active response, and the FIM outbox that lets a change go.
struct AfterSpool {
    responder: Responder,
    outbox: Option<outbox::Outbox>,
}

/// The analysis thread's loop: runs until every sender is gone, then hands the outputs back.
fn analysis_loop(
    rx: Receiver<Work>,
    mut analysis: Analysis,
    mut outputs: Outputs,
    acker: Acker,
    stats: Arc<Stats>,
    stopping: Arc<AtomicBool>,
    after: AfterSpool,
) -> Outputs {
    let AfterSpool { responder, outbox } = after;
    let mut cache = DecodeCache::default();
    // Once an alert could not be spooled during a stop, no later position may be acknowledged.
    let mut hold_acks = false;
    loop {
        stats.beat();
        let work = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(w) => w,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match work {
            Work::Logs(batch) => {
                for d in &batch {
                    if let Some(alert) = analysis.analyse(&d.event, &mut cache) {
                        let spooled = submit(&outputs, &alert, &stats, &stopping);
                        hold_acks |= !spooled;
                        if spooled {
                            responder.offer(&alert);
                        }
                    }
                }
                stats
                    .events
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if !hold_acks {
                    acker.ack_batch(&batch);
                }
            }
            Work::Fim(event) => {
                stats.fim_changes.fetch_add(1, Ordering::Relaxed);
                let spooled = match analysis.analyse(&event, &mut cache) {
                    Some(alert) => {
                        let spooled = submit(&outputs, &alert, &stats, &stopping);
                        if spooled {
                            responder.offer(&alert);
                        }
                        spooled
                    }
                    None => true,
                };
                // Only now may the change leave the outbox (see outbox.rs).
                if let (true, Some(o)) = (spooled, &outbox) {
                    o.done(&event);
                }
            }
            Work::Notice(alert) => {
                submit(&outputs, &alert, &stats, &stopping);
            }
            Work::Reload(new) => {
                let Reload {
                    analysis: new,
                    outputs: new_outputs,
                    done,
                } = *new;
                let old = std::mem::replace(&mut analysis, new);
                analysis.engine.inherit(old.engine);
                cache = DecodeCache::default();
                let replaced = match new_outputs {
                    // Replaced here, between two alerts: none is spooled for a half-built set.
                    Some(p) => outputs
                        .replace(p)
                        .map(|()| outputs.names())
                        .map_err(|e| e.to_string()),
                    None => Ok(outputs.names()),
                };
                stats.reloads.fetch_add(1, Ordering::Relaxed);
                let _ = done.try_send(replaced);
            }
        }
    }
    outputs
}

/// Spools an alert, retrying while SQLite refuses (disk full, locked): the reading waits meanwhile.
/// False only when the agent is stopping and the spool still refuses after a few tries: the
/// positions then stay where they were, and the lines are read again after the restart.
fn submit(outputs: &Outputs, alert: &Alert, stats: &Stats, stopping: &AtomicBool) -> bool {
    let mut delay = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        match outputs.submit(alert) {
            Ok(_) => {
                stats.count_alert(&alert.rule);
                return true;
            }
            Err(e) => {
                stats.submit_errors.fetch_add(1, Ordering::Relaxed);
                tries += 1;
                tracing::error!(
                    rule = alert.rule.id,
                    "cannot spool an alert (retrying): {e}"
                );
                if stopping.load(Ordering::Relaxed) && tries >= 3 {
                    return false;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(10));
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

/// The FIM thread of the running configuration; a reload that changes `[fim]` replaces it.
struct FimRun {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    watches: Arc<AtomicU64>,
}

impl FimRun {
    /// Starts the FIM thread; `at_start` when the agent starts (not a reload), which also
    /// reports the changes a crash left unspooled.
    fn start(
        cfg: &Config,
        tx: &WorkSender,
        watches: &Arc<AtomicU64>,
        at_start: bool,
    ) -> Result<FimRun, AgentError> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (tx, stop, cfg, watches) = (tx.clone(), stop.clone(), cfg.clone(), watches.clone());
            spawn("fim", move || fim_loop(cfg, tx, stop, watches, at_start))?
        };
        Ok(FimRun {
            stop,
            thread,
            watches: watches.clone(),
        })
    }

    /// Stops the scan under way (what it compared is written) and the real-time watches.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        // The watches are released; a new watcher counts its own.
        self.watches.store(0, Ordering::Relaxed);
    }
}

/// The FIM thread: the scan at start (or the silent baseline on first start), then the schedule,
/// until `stop`. Paths new to the baseline are recorded without alerts by the first scan.
fn fim_loop(
    cfg: Config,
    tx: WorkSender,
    stop: Arc<AtomicBool>,
    watches: Arc<AtomicU64>,
    at_start: bool,
) {
    let fimc = &cfg.fim;
    // Real-time FIM: watches added before the scan at start (so nothing changed during it is
    // missed), its thread spawned before the priority is lowered; checking starts after the scan.
    let realtime = start_realtime(fimc, &cfg.agent.state_dir, watches);
    let host: Arc<str> = Arc::from(cfg.agent.hostname.as_str());
    // Real-time notices reach the analysis through a thread of their own, also started before
    // the priority is lowered: they never wait for a scheduled scan running on this thread.
    let realtime = realtime.and_then(|w| {
        let (ntx, nrx) = sync_channel(WORK_QUEUE);
        let (tx, host, stop) = (tx.clone(), Arc::clone(&host), Arc::clone(&stop));
        // Once stopping, what the watcher still reports while it ends goes through too (a
        // reload does not look at the outbox again), for a short while at most.
        let forward = move || {
            let mut until = None;
            while realtime_notices(&nrx, &tx, &host) {
                if stop.load(Ordering::Relaxed)
                    && Instant::now() >= *until.get_or_insert_with(|| Instant::now() + NOTICE_DRAIN)
                {
                    break;
                }
            }
        };
        match spawn("fim-notices", forward) {
            Ok(_) => Some((w, ntx)),
            Err(e) => {
                tracing::error!("cannot start real-time FIM: {e}; the scheduled scans still run");
                None
            }
        }
    });
    if fimc.low_priority {
        // This thread (and the hashing threads it starts) only: the log analysis keeps its pace.
        match crate::sys::lower_priority() {
            Ok(()) => tracing::info!("FIM scans run at idle IO priority and nice 19"),
            Err(e) => tracing::warn!("cannot lower the scan priority: {e}"),
        }
    }
    let state_dir = &cfg.agent.state_dir;
    let opened = crate::state::State::open(state_dir)
        .map_err(FimError::from)
        .and_then(|st| {
            let n: i64 = st
                .conn
                .query_row(
                    "SELECT count(*) FROM fim_meta WHERE key = 'initialized'",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            let fresh = n == 0;
            Ok((Baseline::open(state_dir, fresh)?, fresh))
        });
    let (mut b, fresh) = match opened {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("FIM disabled: cannot open the baseline: {e}");
            return;
        }
    };
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
    let scan = |b: &mut Baseline, mode: Mode, full: bool| -> Option<Summary> {
        let opts = ScanOptions {
            full,
            throttle: throttle.as_ref(),
            stop: Some(&stop),
        };
        let r = fim::scan(b, fimc, mode, &opts, &mut |c| {
            // Blocks while the analysis is behind; fails only when it is gone (stopping).
            let _ = tx.send(Work::Fim(fim::change_event(c, Arc::clone(&host))));
        });
        match r {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("FIM scan failed: {e}");
                None
            }
        }
    };
    if fimc.paths.is_empty() {
        tracing::info!("no FIM paths configured");
        return;
    }
    if fresh {
        tracing::info!(
            "no FIM baseline yet: recording it now; changes are reported from the next scan on"
        );
        if let Some(s) = scan(&mut b, Mode::Init, false) {
            report_warnings(&s);
            log_summary("FIM baseline recorded", &s);
        }
    } else {
        if at_start {
            // (At a reload, what is in the outbox is still on its way through the analysis.)
            report_left(state_dir, &tx, &host);
        }
        if let Some(s) = scan(&mut b, Mode::Check, fimc.check_mode == CheckMode::Full) {
            report_warnings(&s);
            log_summary(
                if at_start {
                    "FIM scan at start done"
                } else {
                    "FIM scan after the reload done"
                },
                &s,
            );
        }
    }
    let realtime = realtime.map(|(w, ntx)| w.resume(ntx));
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
            std::thread::sleep(Duration::from_millis(100));
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
        if let Some(s) = scan(&mut b, mode, full) {
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
    if let Some(r) = realtime {
        r.stop();
    }
}

fn spawn<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, AgentError> {
    std::thread::Builder::new()
        .name(what.into())
        .spawn(f)
        .map_err(|source| AgentError::Thread { what, source })
}

/// A new configuration and what it needs, all checked: the decoders and rules loaded, the
/// outputs built (when they changed). Nothing running has been touched yet.
struct Checked {
    cfg: Config,
    analysis: Analysis,
    outputs: Option<Prepared>,
}

/// Reads and checks the configuration file again (the whole of it: a reload applies all of it or
/// nothing). The `[agent]` settings (state directory, hostname, log level, metrics address) take
/// effect at the next start only; a change to them is logged.
fn check_reload(running: &Config) -> Result<Checked, String> {
    let loaded = crate::config::load(&running.source).map_err(|e| match e {
        crate::config::ConfigError::Invalid { diagnostics, .. } => render(&diagnostics),
        other => other.to_string(),
    })?;
    let (mut cfg, _) = protect::with_own_files(&loaded);
    let (old, new) = (&running.agent, &cfg.agent);
    if old.state_dir != new.state_dir
        || old.hostname != new.hostname
        || old.log_level != new.log_level
        || old.metrics_listen != new.metrics_listen
    {
        tracing::warn!("[agent] settings changed: they take effect at the next start");
    }
    cfg.agent = running.agent.clone();
    let analysis = Analysis::load(&cfg).map_err(|d| render(&d))?;
    let outputs = if cfg.alerts != running.alerts {
        let p = Prepared::new(&cfg.alerts, &cfg.agent.hostname, &cfg.agent.state_dir)
            .map_err(|e| format!("outputs: {e}"))?;
        Some(p)
    } else {
        None
    };
    Ok(Checked {
        cfg,
        analysis,
        outputs,
    })
}

/// The parts of the agent a reload replaces.
struct Reloadable<'a> {
    tx: &'a WorkSender,
    responder: &'a Responder,
    running: &'a mut sources::Running,
    fim: &'a mut Option<FimRun>,
    watches: &'a Arc<AtomicU64>,
}

/// Applies a checked configuration: decoders, rules and outputs (in the analysis thread, between
/// two events), active responses, log sources (only those whose settings changed stop or start),
/// and FIM (its thread and watches start again with the new paths when `[fim]` changed). Returns
/// the new configuration, or why a part could not be applied (the parts before it are applied).
fn apply_reload(old: &Config, new: Checked, r: Reloadable<'_>) -> Result<Config, String> {
    let Checked {
        cfg,
        analysis,
        outputs,
    } = new;
    let (ndec, nrules) = analysis.sizes();
    let outputs_changed = outputs.is_some();
    let (done, outcome) = sync_channel(1);
    r.tx.send(Work::Reload(Box::new(Reload {
        analysis,
        outputs,
        done,
    })))
    .map_err(|_| "the analysis has stopped".to_string())?;
    match outcome.recv_timeout(sources::RELOAD_DRAIN) {
        Ok(Ok(names)) => tracing::info!(
            decoders = ndec,
            rules = nrules,
            outputs = %names.join(","),
            outputs_restarted = outputs_changed,
            "reload: decoders, rules and outputs applied"
        ),
        Ok(Err(e)) => return Err(format!("cannot start the new outputs: {e}")),
        Err(_) => tracing::warn!("reload: the analysis has not taken the new rules yet"),
    }
    r.responder.reconfigure(&cfg.active_response);
    let s = r
        .running
        .reload(&cfg.logs)
        .map_err(|e| format!("log sources: {e}"))?;
    for l in &s.stopped {
        tracing::info!(location = %l, "reload: log source stopped");
    }
    for l in &s.started {
        tracing::info!(location = %l, "reload: log source started");
    }
    if cfg.fim != old.fim {
        if let Some(f) = r.fim.take() {
            f.stop();
        }
        *r.fim =
            Some(FimRun::start(&cfg, r.tx, r.watches, false).map_err(|e| format!("FIM: {e}"))?);
        tracing::info!(
            fim_paths = cfg.fim.paths.len(),
            "reload: FIM restarted with the new paths and settings"
        );
    }
    tracing::info!(
        log_sources = cfg.logs.len(),
        kept = s.kept,
        stopped = s.stopped.len(),
        started = s.started.len(),
        fim_paths = cfg.fim.paths.len(),
        "reloaded the configuration"
    );
    Ok(cfg)
}

/// Runs the agent in the foreground until SIGINT or SIGTERM.
pub fn run(cfg: &Config) -> Result<(), AgentError> {
    let started = Instant::now();
    // Before the first thread: capabilities are per thread, and threads inherit them.
    privileges::drop_privileges(cfg);
    let (cfg, own) = protect::with_own_files(cfg);
    let cfg = &cfg;
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .map_err(AgentError::Signals)?;
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(AgentError::Signals)?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .map_err(AgentError::Signals)?;
    let notifier = Notifier::from_env();

    let analysis = Analysis::load(cfg).map_err(AgentError::Analysis)?;
    let (ndec, nrules) = analysis.sizes();
    let state = crate::state::State::open(&cfg.agent.state_dir)?;
    let outputs = Outputs::start(
        &cfg.alerts,
        &cfg.agent.hostname,
        &cfg.agent.state_dir,
        crate::outputs::Options::default(),
    )?;
    let output_names = outputs.names();
    let mut running = sources::spawn(cfg, &state, sources::RunOptions::default())?;
    let mut status = status::StatusWriter::new(state.connect()?);
    let stats = Arc::new(Stats::default());
    let spool = crate::outputs::spool::Spool::open(&state.db_path, cfg.alerts.spool_max).ok();
    drop(state);
    let (tx, rx) = sync_channel::<Work>(WORK_QUEUE);

    // The log sources' channel feeds the analysis channel, so that the analysis waits on one queue.
    let logs_rx = std::mem::replace(&mut running.rx, sync_channel(0).1);
    let forwarder = {
        let tx = tx.clone();
        spawn("log forwarder", move || {
            while let Ok(batch) = logs_rx.recv() {
                if tx.send(Work::Logs(batch)).is_err() {
                    break;
                }
            }
        })?
    };
    // Active response: its own alerts enter the analysis channel like the FIM notices.
    let (responder, response_worker) = {
        let tx = tx.clone();
        Responder::new(
            &cfg.active_response,
            &cfg.agent.state_dir,
            &cfg.agent.hostname,
            stop.clone(),
            move |a| tx.send(Work::Notice(Box::new(a))).is_ok(),
        )?
    };
    let live = Arc::new(metrics::Live {
        started: now_secs(),
        stats: stats.clone(),
        sources: running.counters.clone(),
        deliveries: outputs.delivery_counters(),
        spool,
        response: Some(responder.shared_counters()),
    });
    let metrics_server = start_metrics(cfg, &live);
    let response_thread = spawn("active response", move || response_worker.run())?;
    let analysis_thread = {
        let acker = running.acker.clone();
        let stats = stats.clone();
        let stopping = stop.clone();
        let outbox = crate::state::State::open(&cfg.agent.state_dir)
            .map(|s| s.conn)
            .map(outbox::Outbox::new)
            .map_err(|e| tracing::error!("cannot open the FIM outbox: {e}"))
            .ok();
        let responder = responder.clone();
        spawn("analysis", move || {
            analysis_loop(
                rx,
                analysis,
                outputs,
                acker,
                stats,
                stopping,
                AfterSpool { responder, outbox },
            )
        })?
    };
    let mut fim_run = Some(FimRun::start(cfg, &tx, &stats.fim_watches, true)?);
    tracing::info!(
        fim_paths = cfg.fim.paths.len(),
        log_sources = cfg.logs.len(),
        decoders = ndec,
        rules = nrules,
        outputs = %output_names.join(","),
        state = %cfg.agent.state_dir.display(),
        "hids agent started"
    );
    for p in &own {
        tracing::info!(path = %p.display(), "the agent's own file is under FIM");
    }
    notifier.send("READY=1");
    notifier.status(&format!(
        "running: {} log source(s), {} FIM path(s), {nrules} rule(s)",
        cfg.logs.len(),
        cfg.fim.paths.len()
    ));

    let mut current = cfg.clone();
    let mut last_watchdog = Instant::now();
    let mut last_status = Instant::now();
    let mut last_row = Instant::now();
    status.write(&live);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if hup.swap(false, Ordering::Relaxed) {
            notifier.send("RELOADING=1");
            match check_reload(&current) {
                Ok(checked) => {
                    let parts = Reloadable {
                        tx: &tx,
                        responder: &responder,
                        running: &mut running,
                        fim: &mut fim_run,
                        watches: &stats.fim_watches,
                    };
                    match apply_reload(&current, checked, parts) {
                        Ok(new) => current = new,
                        Err(e) => tracing::error!(
                            "reload applied in part only: {}",
                            crate::diag::escape_control_keep_newlines(&e)
                        ),
                    }
                }
                Err(e) => tracing::error!(
                    "reload failed, the running configuration stays: {}",
                    crate::diag::escape_control_keep_newlines(&e)
                ),
            }
            notifier.send("READY=1");
        }
        if let Some(every) = notifier.watchdog {
            // Only while the analysis is alive: a stuck pipeline lets systemd restart us.
            let beat = stats.heartbeat.load(Ordering::Relaxed);
            if last_watchdog.elapsed() >= every && now_secs().saturating_sub(beat) < 30 {
                notifier.send("WATCHDOG=1");
                last_watchdog = Instant::now();
            }
        }
        if last_row.elapsed() >= status::WRITE_EVERY {
            last_row = Instant::now();
            status.write(&live);
        }
        if last_status.elapsed() >= Duration::from_secs(10) {
            last_status = Instant::now();
            notifier.status(&format!(
                "up {}s: {} event(s), {} FIM change(s), {} alert(s)",
                started.elapsed().as_secs(),
                stats.events.load(Ordering::Relaxed),
                stats.fim_changes.load(Ordering::Relaxed),
                stats.alerts()
            ));
        }
    }

    tracing::info!("stopping: signal received");
    notifier.send("STOPPING=1");
    if let Some(m) = metrics_server {
        m.stop();
    }
    let deadline = Instant::now() + STOP_BUDGET;
    running.stop();
    drop(tx);
    // The sources end once they see the flag; the analysis ends once the queue is empty.
    if let Some(f) = fim_run.take() {
        f.stop();
    }
    let _ = forwarder.join();
    let _ = response_thread.join();
    let outputs = match analysis_thread.join() {
        Ok(o) => Some(o),
        Err(_) => {
            tracing::error!(
                "the analysis thread panicked; positions stay at the last analysed line"
            );
            None
        }
    };
    status.write(&live);
    running.finish();
    if let Some(outputs) = outputs {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(500));
        match outputs.shutdown(left) {
            Ok(waiting) => {
                for (o, n) in waiting {
                    tracing::info!(output = %o, alerts = n, "kept in the spool for the next start");
                }
            }
            Err(e) => tracing::error!("cannot read the spool at stop: {e}"),
        }
    }
    tracing::info!(
        events = stats.events.load(Ordering::Relaxed),
        fim_changes = stats.fim_changes.load(Ordering::Relaxed),
        alerts = stats.alerts(),
        seconds = started.elapsed().as_secs(),
        "hids agent stopped"
    );
    Ok(())
}

/// Reports the FIM changes a crash left in the outbox (absorbed by the baseline, alert not
/// spooled), before the first scan.
fn report_left(state_dir: &std::path::Path, tx: &WorkSender, host: &Arc<str>) {
    let left = crate::state::State::open(state_dir)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            outbox::Outbox::new(s.conn)
                .left()
                .map_err(|e| e.to_string())
        });
    match left {
        Ok(changes) if changes.is_empty() => {}
        Ok(changes) => {
            tracing::warn!(
                changes = changes.len(),
                "reporting FIM changes whose alerts a stop or crash left unspooled"
            );
            for c in changes {
                if tx
                    .send(Work::Fim(fim::change_event(&c, Arc::clone(host))))
                    .is_err()
                {
                    return;
                }
            }
        }
        Err(e) => tracing::error!("cannot read the FIM outbox: {e}"),
    }
}

/// Starts the Prometheus endpoint if configured; a failure to bind is logged, not fatal (the
/// detection matters more than its graphs).
fn start_metrics(cfg: &Config, live: &Arc<metrics::Live>) -> Option<metrics::Server> {
    for w in metrics::config_warnings(cfg) {
        tracing::warn!("{w}");
    }
    let addr = cfg.agent.metrics_listen?;
    match metrics::Server::start(addr, live.clone()) {
        Ok(s) => {
            tracing::info!(listen = %s.addr(), "metrics served at /metrics");
            Some(s)
        }
        Err(e) => {
            tracing::error!(listen = %addr, "cannot serve the metrics: {e}");
            None
        }
    }
}

// --- Real-time FIM: the watcher's changes enter the analysis exactly like a scan's. ---

fn start_realtime(
    fimc: &crate::config::FimConfig,
    state_dir: &std::path::Path,
    watches: Arc<AtomicU64>,
) -> Option<fim::watch::Paused> {
    let started = fim::watch::Watcher::start(fimc, state_dir)
        .map_err(|e| e.to_string())
        .and_then(|w| {
            w.map(|w| {
                w.count_watches_in(watches)
                    .spawn()
                    .map_err(|e| e.to_string())
            })
            .transpose()
        });
    match started {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("cannot start real-time FIM: {e}; the scheduled scans still run");
            None
        }
    }
}

/// Hands the watcher's notices to the analysis for up to 100 ms (so that signals and schedules are
/// seen): changes exactly like a scan's, problems with the watching as alerts of their own.
/// False once the watcher or the analysis is gone.
fn realtime_notices(rx: &Receiver<fim::watch::Notice>, tx: &WorkSender, host: &Arc<str>) -> bool {
    let mut next = match rx.recv_timeout(Duration::from_millis(100)) {
        Ok(n) => Some(n),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => return false,
    };
    while let Some(n) = next {
        let work = match n {
            fim::watch::Notice::Change(c) => Work::Fim(fim::change_event(&c, Arc::clone(host))),
            fim::watch::Notice::Alert {
                rule,
                level,
                description,
                text,
            } => Work::Notice(Box::new(notice_alert(host, rule, level, description, text))),
        };
        if tx.send(work).is_err() {
            return false;
        }
        next = rx.try_recv().ok();
    }
    true
}

/// An alert about the FIM machinery itself, not about a file.
fn notice_alert(host: &Arc<str>, id: u32, level: u8, description: &str, text: String) -> Alert {
    Alert::internal(
        id,
        level,
        description.to_string(),
        &["ossec", "syscheck"],
        Arc::clone(host),
        fim::LOCATION,
        text,
    )
}
