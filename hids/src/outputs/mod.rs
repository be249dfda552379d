//! Alert outputs: `alerts.log`, `alerts.json`, syslog and email, behind the [`Output`] trait, fed
//! from a durable spool.
//!
//! [`Outputs::submit`] writes the alert once into the spool (SQLite, in the state database) with
//! one row for each output that wants it, and returns once it is committed. One delivery thread
//! per output reads its rows oldest first, delivers them in batches and deletes the rows it
//! delivered; on failure it retries with exponential backoff, so a syslog or SMTP server that is
//! down delays alerts and never loses them, and a restart resumes where delivery stopped.
//! [`Outputs::shutdown`] lets every thread deliver what is waiting, up to a deadline.
//!
//! The agent's use: [`Outputs::start`]`(&cfg.alerts, &cfg.agent.hostname, &cfg.agent.state_dir,
//! Options::default())` once, [`Outputs::submit`] for each alert (before it advances a log offset),
//! and [`Outputs::shutdown`] on SIGTERM. Only one process delivers from a state directory (a lock
//! beside the database); another one can still spool through [`Spooler`].
//!
//! Delivery is at least once: if the process dies between sending and recording the delivery,
//! that batch is sent again after the restart. Syslog and SMTP have no way to ask the receiver
//! whether it already has a message.

pub mod alerts_json;
pub mod alerts_log;
pub mod cli;
pub mod email;
pub mod format;
pub mod record;
mod rotate;
pub mod spool;
pub mod syslog;
#[cfg(test)]
mod testutil;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::config::AlertsConfig;
use crate::event::Alert;
use record::{AgentRecord, AlertRecord, RuleRecord};
use spool::Spool;

/// Errors of the outputs that stop them from starting or spooling.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("alert spool {}: {source}", path.display())]
    Spool {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("email: {0}")]
    Email(String),
    #[error("syslog: {0}")]
    Syslog(String),
    #[error("cannot start a delivery thread: {0}")]
    Thread(std::io::Error),
    #[error("another hids process (the agent) delivers alerts from this state directory (lock {})", path.display())]
    Busy { path: PathBuf },
}

/// An alert read from the spool, ready to deliver.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The spool row id.
    pub id: i64,
    pub record: AlertRecord,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything not listed as delivered can be offered again at once.
    Done,
    /// The output failed: retry with backoff.
    Failed(String),
    /// Nothing more for now (a rate limit): offer the rest again after this long.
    Later(Duration),
}

/// The result of [`Output::deliver`].
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Spool ids delivered (and so removed from this output's queue).
    pub delivered: Vec<i64>,
    pub outcome: Outcome,
}

/// Decides at submission whether an output wants an alert (level, groups, rule options).
pub type Selector = Arc<dyn Fn(&AlertRecord) -> bool + Send + Sync>;

/// One alert destination. Each runs on its own delivery thread.
pub trait Output: Send {
    /// A stable name: the spool keeps rows under it across restarts.
    fn name(&self) -> &str;
    /// Which alerts this output takes.
    fn selector(&self) -> Selector;
    /// Delivers some or all of `batch` (oldest first).
    fn deliver(&mut self, batch: &[Pending]) -> Delivery;
}

/// Writes a batch to a file; all or nothing.
fn write_file_batch(
    file: &mut rotate::RotatingFile,
    entries: &[String],
    batch: &[Pending],
) -> Delivery {
    match file.write(entries) {
        Ok(()) => Delivery {
            delivered: batch.iter().map(|p| p.id).collect(),
            outcome: Outcome::Done,
        },
        Err(e) => Delivery {
            delivered: Vec::new(),
            outcome: Outcome::Failed(format!("{}: {e}", file.path().display())),
        },
    }
}

/// Tuning of the delivery threads; the defaults are what the agent uses.
#[derive(Debug, Clone)]
pub struct Options {
    /// The first retry delay after a failure; doubled on each further failure.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The window of `max_per_hour` for email (an hour; shorter in tests).
    pub email_window: Duration,
    /// Alerts handed to an output at once.
    pub batch: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            email_window: Duration::from_secs(3600),
            batch: 256,
        }
    }
}

/// The rule id of the alert raised when the spool cap drops alerts (an id OSSEC's stock ruleset
/// leaves free).
pub const SPOOL_FULL_RULE: u32 = 870;

struct Wake {
    generation: Mutex<u64>,
    cv: Condvar,
}

struct Shared {
    wake: Wake,
    /// Deliver what is waiting, then stop.
    draining: AtomicBool,
    /// Stop now.
    stop: AtomicBool,
    deadline: Mutex<Option<Instant>>,
}

impl Shared {
    fn notify(&self) {
        let mut g = self
            .wake
            .generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *g += 1;
        self.wake.cv.notify_all();
    }

    fn generation(&self) -> u64 {
        *self
            .wake
            .generation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps up to `d`; wakes early on a new submission when `wake_on_submit`, and on stop.
    fn sleep(&self, d: Duration, seen: u64, wake_on_submit: bool) {
        let end = Instant::now() + d;
        let mut g = self
            .wake
            .generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            if self.stop.load(Ordering::SeqCst) || (wake_on_submit && *g != seen) {
                return;
            }
            let now = Instant::now();
            let mut until = end;
            if let Some(dl) = *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) {
                until = until.min(dl);
            }
            if now >= until {
                return;
            }
            // Wake at least every 200 ms to notice a shutdown deadline.
            let step = (until - now).min(Duration::from_millis(200));
            g = match self.wake.cv.wait_timeout(g, step) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    fn past_deadline(&self) -> bool {
        matches!(*self.deadline.lock().unwrap_or_else(|p| p.into_inner()), Some(d) if Instant::now() >= d)
    }
}

/// What [`Outputs::submit`] did with an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Spooled under this id for at least one output.
    Spooled(i64),
    /// Below `alerts.log_level`, or no output wants it.
    Ignored,
}

/// One output's delivery counters since the start, for `hids status` and the metrics.
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    /// Alerts delivered.
    pub delivered: std::sync::atomic::AtomicU64,
    /// Delivery attempts that failed (each is retried).
    pub errors: std::sync::atomic::AtomicU64,
    /// The last failure, as logged.
    pub last_error: Mutex<Option<String>>,
}

/// Per output: its name and delivery counters; [`Outputs::replace`] changes the list.
pub type DeliveryList = Arc<Mutex<Vec<(String, Arc<DeliveryCounters>)>>>;

/// The running outputs: the handle the agent submits alerts to.
pub struct Outputs {
    spooler: Spooler,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    counters: DeliveryList,
    opts: Options,
    db_path: PathBuf,
    /// Held while delivering, so that a second process does not deliver the same rows.
    lock: Option<std::fs::File>,
}

/// Writes alerts into the spool for the configured outputs without delivering them: for a
/// process (such as `hids alerts test`) that runs beside an agent, which delivers them.
pub struct Spooler {
    spool: Arc<Spool>,
    outputs: Vec<(String, Selector)>,
    log_level: u8,
    hostname: String,
    last_full_alert: Mutex<Option<Instant>>,
}

fn db_path(state_dir: &Path) -> Result<PathBuf, OutputError> {
    let st = crate::state::State::open(state_dir)?;
    Ok(st.db_path.clone())
}

/// Takes the delivery lock beside the database.
fn lock(db_path: &Path) -> Result<std::fs::File, OutputError> {
    let path = db_path.with_file_name("outputs.lock");
    crate::state::ensure_private_file(&path)?;
    let io = |e: std::io::Error| OutputError::File {
        path: path.clone(),
        reason: e.to_string(),
    };
    let f = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io)?;
    if crate::sys::try_lock_exclusive(&f).map_err(io)? {
        Ok(f)
    } else {
        Err(OutputError::Busy { path })
    }
}

/// The configured outputs.
fn build(
    cfg: &AlertsConfig,
    hostname: &str,
    db_path: &Path,
    opts: &Options,
) -> Result<Vec<Box<dyn Output>>, OutputError> {
    let mut list: Vec<Box<dyn Output>> = Vec::new();
    if cfg.file.enabled {
        list.push(Box::new(alerts_log::AlertsLog::new(&cfg.file)));
    }
    if cfg.json.enabled {
        list.push(Box::new(alerts_json::AlertsJson::new(&cfg.json)));
    }
    let mut names: Vec<String> = list.iter().map(|o| o.name().to_string()).collect();
    for s in &cfg.syslog {
        let mut name = syslog::output_name(s);
        let base = name.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}#{n}");
            n += 1;
        }
        names.push(name.clone());
        list.push(Box::new(syslog::SyslogOutput::new(name, s, hostname)?));
    }
    if let Some(e) = &cfg.email {
        list.push(Box::new(email::EmailOutput::new(
            e,
            db_path,
            opts.email_window,
        )?));
    }
    Ok(list)
}

impl Spooler {
    /// Opens the spool for the outputs `cfg` configures, without delivering.
    pub fn open(
        cfg: &AlertsConfig,
        hostname: &str,
        state_dir: &Path,
    ) -> Result<Spooler, OutputError> {
        let db_path = db_path(state_dir)?;
        let list = build(cfg, hostname, &db_path, &Options::default())?;
        Ok(Spooler {
            spool: Arc::new(Spool::open(&db_path, cfg.spool_max)?),
            outputs: list
                .iter()
                .map(|o| (o.name().to_string(), o.selector()))
                .collect(),
            log_level: cfg.log_level,
            hostname: hostname.to_string(),
            last_full_alert: Mutex::new(None),
        })
    }

    /// The names of the outputs.
    pub fn names(&self) -> Vec<String> {
        self.outputs.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Spools an alert for every output that wants it; returns once it is committed to SQLite.
    pub fn submit_record(&self, rec: AlertRecord) -> Result<Submitted, OutputError> {
        if rec.rule.level < self.log_level {
            return Ok(Submitted::Ignored);
        }
        let wanted: Vec<&str> = self
            .outputs
            .iter()
            .filter(|(_, sel)| sel(&rec))
            .map(|(n, _)| n.as_str())
            .collect();
        if wanted.is_empty() {
            return Ok(Submitted::Ignored);
        }
        let body = format::json_line(&rec);
        let (id, dropped) = self.spool.push(&body, rec.rule.level, &wanted)?;
        if let Some(d) = dropped {
            tracing::error!(
                alerts = d.alerts,
                bytes = d.bytes,
                "alert spool full (alerts.spool_max): undelivered alerts were dropped"
            );
            self.raise_spool_full(d)?;
        }
        Ok(Submitted::Spooled(id))
    }

    fn raise_spool_full(&self, d: spool::Dropped) -> Result<(), OutputError> {
        {
            let mut last = self
                .last_full_alert
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if matches!(*last, Some(t) if t.elapsed() < Duration::from_secs(60)) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let rec = internal_record(
            &self.hostname,
            SPOOL_FULL_RULE,
            12,
            format!(
                "alert spool full: {} undelivered alerts ({} bytes) dropped; an output is down",
                d.alerts, d.bytes
            ),
            vec!["hids".into(), "spool_full".into()],
        );
        self.submit_record(rec).map(|_| ())
    }

    /// Which of these spooled alerts are still waiting, counted per output.
    pub fn undelivered(&self, ids: &[i64]) -> Result<Vec<(String, u64)>, OutputError> {
        self.spool.undelivered(ids)
    }

    /// Alerts waiting, per output.
    pub fn pending(&self) -> Result<Vec<(String, u64)>, OutputError> {
        self.spool.pending_counts()
    }
}

/// Outputs built from a new configuration and not started yet: a reload builds them before it
/// stops anything, so that an output that cannot be built leaves the running ones alone.
pub struct Prepared {
    list: Vec<Box<dyn Output>>,
    cfg: AlertsConfig,
    hostname: String,
}

impl Prepared {
    /// Builds the outputs `cfg` configures, without starting them.
    pub fn new(
        cfg: &AlertsConfig,
        hostname: &str,
        state_dir: &Path,
    ) -> Result<Prepared, OutputError> {
        let db_path = db_path(state_dir)?;
        Ok(Prepared {
            list: build(cfg, hostname, &db_path, &Options::default())?,
            cfg: cfg.clone(),
            hostname: hostname.to_string(),
        })
    }

    /// The names of the outputs.
    pub fn names(&self) -> Vec<String> {
        self.list.iter().map(|o| o.name().to_string()).collect()
    }
}

impl Outputs {
    /// Opens the spool in `state_dir` and starts a delivery thread for each configured output.
    /// Fails with [`OutputError::Busy`] when another process delivers from the same spool.
    pub fn start(
        cfg: &AlertsConfig,
        hostname: &str,
        state_dir: &Path,
        opts: Options,
    ) -> Result<Outputs, OutputError> {
        let db_path = db_path(state_dir)?;
        let lock = lock(&db_path)?;
        let list = build(cfg, hostname, &db_path, &opts)?;
        let mut o = Self::start_with(list, cfg, hostname, &db_path, opts)?;
        o.lock = Some(lock);
        Ok(o)
    }

    /// Replaces the running outputs with `new` (a reload): the delivery threads stop after what
    /// they are delivering, and the new ones take over from the spool, so that an output kept
    /// under the same name goes on with the alerts waiting for it. The alerts waiting for an
    /// output no longer configured are dropped from the spool and logged, as at a start.
    pub fn replace(&mut self, new: Prepared) -> Result<(), OutputError> {
        let Prepared {
            list,
            cfg,
            hostname,
        } = new;
        self.stop(Duration::ZERO);
        let mut n = Self::start_with(list, &cfg, &hostname, &self.db_path, self.opts.clone())?;
        // The delivery lock and the counters' list (read by the status and metrics) stay.
        n.lock = self.lock.take();
        let counters = std::mem::replace(&mut n.counters, self.counters.clone());
        let list = std::mem::take(&mut *counters.lock().unwrap_or_else(|p| p.into_inner()));
        *self.counters.lock().unwrap_or_else(|p| p.into_inner()) = list;
        // The old delivery threads have ended: dropping the old outputs waits for nothing.
        *self = n;
        Ok(())
    }

    pub fn start_with(
        list: Vec<Box<dyn Output>>,
        cfg: &AlertsConfig,
        hostname: &str,
        db_path: &Path,
        opts: Options,
    ) -> Result<Outputs, OutputError> {
        let spool = Arc::new(Spool::open(db_path, cfg.spool_max)?);
        let names: Vec<String> = list.iter().map(|o| o.name().to_string()).collect();
        for (name, n) in spool.retain_outputs(&names)? {
            tracing::warn!(
                output = %name,
                alerts = n,
                "output no longer configured: its undelivered alerts are dropped from the spool"
            );
        }
        let shared = Arc::new(Shared {
            wake: Wake {
                generation: Mutex::new(0),
                cv: Condvar::new(),
            },
            draining: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            deadline: Mutex::new(None),
        });
        let mut outputs = Vec::new();
        let mut threads = Vec::new();
        let mut counters = Vec::new();
        for out in list {
            outputs.push((out.name().to_string(), out.selector()));
            let sp = spool.clone();
            let sh = shared.clone();
            let o = opts.clone();
            let c = Arc::new(DeliveryCounters::default());
            counters.push((out.name().to_string(), c.clone()));
            let h = std::thread::Builder::new()
                .name(format!("output {}", out.name()))
                .spawn(move || deliver_loop(out, sp, sh, o, c))
                .map_err(OutputError::Thread)?;
            threads.push(h);
        }
        Ok(Outputs {
            spooler: Spooler {
                spool,
                outputs,
                log_level: cfg.log_level,
                hostname: hostname.to_string(),
                last_full_alert: Mutex::new(None),
            },
            shared,
            threads,
            counters: Arc::new(Mutex::new(counters)),
            opts,
            db_path: db_path.to_path_buf(),
            lock: None,
        })
    }

    /// Each output's delivery counters, by name; the list follows [`Outputs::replace`].
    pub fn delivery_counters(&self) -> DeliveryList {
        self.counters.clone()
    }

    /// The names of the running outputs.
    pub fn names(&self) -> Vec<String> {
        self.spooler.names()
    }

    /// Spools an alert for every output that wants it; returns once it is committed to SQLite.
    pub fn submit(&self, alert: &Alert) -> Result<Submitted, OutputError> {
        self.submit_record(AlertRecord::from_alert(alert))
    }

    /// [`Outputs::submit`] for an alert already in its delivered form.
    pub fn submit_record(&self, rec: AlertRecord) -> Result<Submitted, OutputError> {
        let r = self.spooler.submit_record(rec);
        self.shared.notify();
        r
    }

    /// Alerts waiting, per output.
    pub fn pending(&self) -> Result<Vec<(String, u64)>, OutputError> {
        self.spooler.pending()
    }

    /// Waits until nothing is waiting for any output, up to `timeout`; true when all delivered.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if matches!(self.pending(), Ok(p) if p.is_empty()) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets every output deliver what is waiting, for up to `timeout`, then stops the threads.
    /// Whatever is still undelivered stays in the spool for the next start; returns how much, per
    /// output.
    pub fn shutdown(mut self, timeout: Duration) -> Result<Vec<(String, u64)>, OutputError> {
        self.stop(timeout);
        self.spooler.pending()
    }

    fn stop(&mut self, timeout: Duration) {
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + timeout);
        self.shared.draining.store(true, Ordering::SeqCst);
        self.shared.notify();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop(Duration::from_secs(5));
        }
    }
}

/// An alert raised by hids itself (not by a rule), such as [`SPOOL_FULL_RULE`].
pub fn internal_record(
    host: &str,
    id: u32,
    level: u8,
    description: String,
    groups: Vec<String>,
) -> AlertRecord {
    AlertRecord {
        timestamp: record::rfc3339(SystemTime::now()),
        id: String::new(),
        rule: RuleRecord {
            id,
            level,
            description,
            groups,
            mitre: Vec::new(),
            firedtimes: 1,
            info: Vec::new(),
            options: Default::default(),
        },
        agent: AgentRecord {
            name: host.to_string(),
        },
        location: "hids".to_string(),
        format: "plain".to_string(),
        decoder: None,
        predecoder: Default::default(),
        data: Default::default(),
        full_log: None,
        previous_output: Vec::new(),
        fim: None,
        truncated: false,
        lossy_utf8: false,
    }
}

/// One output's delivery. It shares the submitters' connection (behind the spool's mutex): within
/// one process that is a short wait on a mutex instead of SQLite's sleeping busy handler.
fn deliver_loop(
    mut out: Box<dyn Output>,
    spool: Arc<Spool>,
    sh: Arc<Shared>,
    opts: Options,
    counters: Arc<DeliveryCounters>,
) {
    let name = out.name().to_string();
    let mut backoff = opts.backoff_min;
    loop {
        if sh.stop.load(Ordering::SeqCst) || sh.past_deadline() {
            return;
        }
        let seen = sh.generation();
        let rows = match spool.pending(&name, opts.batch.max(1)) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(output = %name, error = %e, "cannot read the alert spool");
                sh.sleep(backoff, seen, false);
                backoff = (backoff * 2).min(opts.backoff_max);
                continue;
            }
        };
        if rows.is_empty() {
            if sh.draining.load(Ordering::SeqCst) {
                return;
            }
            sh.sleep(Duration::from_secs(5), seen, true);
            continue;
        }
        let mut batch = Vec::with_capacity(rows.len());
        let mut unreadable = Vec::new();
        for r in rows {
            match serde_json::from_str::<AlertRecord>(&r.body) {
                Ok(mut rec) => {
                    rec.id = format!("{}.{}", r.created_ms.div_euclid(1000), r.id);
                    batch.push(Pending {
                        id: r.id,
                        record: rec,
                    });
                }
                Err(e) => {
                    tracing::error!(output = %name, spool_id = r.id, error = %e, "unreadable spooled alert skipped");
                    unreadable.push(r.id);
                }
            }
        }
        let d = if batch.is_empty() {
            Delivery {
                delivered: Vec::new(),
                outcome: Outcome::Done,
            }
        } else {
            // A bug in one output must not stop its thread for good: count it as a failure.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| out.deliver(&batch)))
                .unwrap_or_else(|_| Delivery {
                    delivered: Vec::new(),
                    outcome: Outcome::Failed("the output panicked".into()),
                })
        };
        let delivered = d.delivered.len() as u64;
        let mut acked: Vec<i64> = d.delivered;
        acked.extend(unreadable);
        if let Err(e) = spool.ack(&name, &acked) {
            tracing::error!(output = %name, error = %e, "cannot record deliveries in the spool");
        }
        let progress = !acked.is_empty();
        counters.delivered.fetch_add(delivered, Ordering::Relaxed);
        match d.outcome {
            // An output that took nothing and gave no reason: do not spin on it.
            Outcome::Done if !progress => sh.sleep(Duration::from_secs(1), seen, false),
            Outcome::Done => backoff = opts.backoff_min,
            Outcome::Later(after) => {
                backoff = opts.backoff_min;
                sh.sleep(after, seen, false);
            }
            Outcome::Failed(e) => {
                tracing::warn!(output = %name, error = %e, retry_in = ?backoff, "delivery failed");
                counters.errors.fetch_add(1, Ordering::Relaxed);
                *counters
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e);
                sh.sleep(backoff, seen, false);
                backoff = (backoff * 2).min(opts.backoff_max);
            }
        }
    }
}

#[cfg(test)]
mod tests;
