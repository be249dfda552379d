//! Active response (`[active_response]`): alerts that match a configured response block their
//! source address, and the block is lifted after the response's timeout.
//!
//! The analysis hands each spooled alert to [`Responder::offer`], which only matches it against
//! the responses and queues a request (it never waits: a full queue drops the request and counts
//! it). One worker thread ([`Worker::run`]) acts on the requests in order and on the unblocks as
//! they fall due:
//! - the decoded `srcip` must parse as an IP address ([`action::host_address`]); anything else
//!   (a crafted `1.2.3.4;touch /tmp/x`, `$(id)`) is counted, logged and never reaches a command;
//! - loopback, this host's addresses and the allowlist are never blocked;
//! - an address the same mechanism already blocks is not blocked twice: the repeat is ignored and
//!   the block keeps its unblock time (a burst after the unblock blocks again);
//! - at most `max_per_minute` blocks a minute (0: no cap); beyond it requests are skipped, logged
//!   and reported by one alert a minute;
//! - commands run without a shell, the address (and the user, when a program asks for it) as
//!   separate arguments, stdin from /dev/null, a clean environment, a timeout ([`exec`]);
//! - timed blocks are recorded in SQLite before the alert is raised, so that a restart still
//!   unblocks on time and lifts at once what fell due while the agent was down; a failed unblock
//!   is retried a few times.
//!
//! Every action and its result is logged (tracing) and raised as an alert of its own (rules 601
//! block, 602 unblock, 603 failed or skipped; group `active_response`), which never triggers a
//! response itself. A reload ([`Responder::reconfigure`]) replaces the responses, the allowlist
//! and the cap; blocks in force keep the mechanism and timeout they were made with.

pub mod action;
mod allow;
pub mod exec;
mod store;

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{ActiveResponseConfig, ResponseConfig};
use crate::diag::escape_control;
use crate::event::{Alert, RuleInfo};
use crate::state::StateError;

use action::{edit_hosts_deny, host_address, valid_user, Action, Op, Target};
use allow::Allowlist;
use store::{Pending, Store};

/// The alert raised when an address was blocked.
pub const RULE_BLOCK: u32 = 601;
/// The alert raised when a block was lifted.
pub const RULE_UNBLOCK: u32 = 602;
/// The alert raised when a response failed or was skipped by the cap.
pub const RULE_FAILED: u32 = 603;
/// The group of those alerts; alerts in it never trigger a response.
pub const GROUP: &str = "active_response";
/// The location of those alerts.
pub const LOCATION: &str = "active-response";

/// How long one command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests waiting for the worker; more are dropped (and counted).
const QUEUE: usize = 256;
/// A failed unblock is tried this many times in all, then given up (and alerted).
const UNBLOCK_TRIES: u32 = 5;
/// The wait before the next unblock try, times the tries so far.
const UNBLOCK_RETRY: Duration = Duration::from_secs(30);

/// What active response did since the start.
#[derive(Debug, Default)]
pub struct Counters {
    pub blocked: AtomicU64,
    pub unblocked: AtomicU64,
    /// Repeat alerts for an address already blocked (ignored: no second block, and the first
    /// keeps its unblock time, which the nftables kernel timeout could not follow anyway).
    pub repeated: AtomicU64,
    /// Commands (or hosts.deny edits) that failed, blocks and unblocks.
    pub failed: AtomicU64,
    /// Of `failed`, the unblocks (each try counts).
    pub unblock_failed: AtomicU64,
    /// Matching alerts without a usable address (or user, when one is wanted).
    pub invalid: AtomicU64,
    pub allowlisted: AtomicU64,
    /// Skipped by `max_per_minute`.
    pub capped: AtomicU64,
    /// Dropped because the worker's queue was full.
    pub dropped: AtomicU64,
    /// Addresses blocked now: the recorded timed blocks and this run's blocks without timeout
    /// (a gauge, set by the worker after each change).
    pub in_force: AtomicU64,
}

/// A plain copy of [`Counters`], for the status row and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CountersSnapshot {
    pub blocked: u64,
    pub unblocked: u64,
    pub block_failed: u64,
    pub unblock_failed: u64,
    pub repeated: u64,
    pub invalid: u64,
    pub allowlisted: u64,
    pub capped: u64,
    pub dropped: u64,
    pub in_force: u64,
}

impl Counters {
    /// The counters now.
    pub fn snapshot(&self) -> CountersSnapshot {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let unblock_failed = n(&self.unblock_failed);
        CountersSnapshot {
            blocked: n(&self.blocked),
            unblocked: n(&self.unblocked),
            block_failed: n(&self.failed).saturating_sub(unblock_failed),
            unblock_failed,
            repeated: n(&self.repeated),
            invalid: n(&self.invalid),
            allowlisted: n(&self.allowlisted),
            capped: n(&self.capped),
            dropped: n(&self.dropped),
            in_force: n(&self.in_force),
        }
    }
}

fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed) + 1
}

/// One matching alert, for the worker.
struct Request {
    response: ResponseConfig,
    rule: u32,
    srcip: String,
    user: Option<String>,
}

/// The analysis side: matches alerts and queues requests. Cheap to clone.
#[derive(Clone)]
pub struct Responder {
    cfg: Arc<Mutex<Arc<ActiveResponseConfig>>>,
    tx: SyncSender<Request>,
    counters: Arc<Counters>,
}

/// The thread side: runs the commands and the unblocks. See the module documentation.
pub struct Worker {
    cfg: Arc<Mutex<Arc<ActiveResponseConfig>>>,
    seen: Arc<ActiveResponseConfig>,
    rx: Receiver<Request>,
    counters: Arc<Counters>,
    store: Store,
    allow: Allowlist,
    host: Arc<str>,
    emit: Box<dyn FnMut(Alert) -> bool + Send>,
    stop: Arc<AtomicBool>,
    recent: VecDeque<Instant>,
    cap_alerted: Option<Instant>,
    /// Blocks without a timeout made by this run (they are not stored: nothing to undo).
    permanent: HashSet<(String, IpAddr)>,
}

impl Responder {
    /// The responder and its worker (to be run on a thread of its own). `emit` hands the
    /// responses' own alerts to the outputs; it may wait, and returns false once they are gone.
    /// The worker also runs while responses are disabled, to lift the blocks still recorded.
    pub fn new(
        cfg: &ActiveResponseConfig,
        state_dir: &Path,
        host: &str,
        stop: Arc<AtomicBool>,
        emit: impl FnMut(Alert) -> bool + Send + 'static,
    ) -> Result<(Responder, Worker), StateError> {
        let conn = crate::state::State::open(state_dir)?.conn;
        let shared = Arc::new(Mutex::new(Arc::new(cfg.clone())));
        let (tx, rx) = sync_channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            cfg: shared.clone(),
            seen: Arc::new(cfg.clone()),
            rx,
            counters: counters.clone(),
            store: Store::new(conn),
            allow: Allowlist::new(cfg.allowlist.clone()),
            host: Arc::from(host),
            emit: Box::new(emit),
            stop,
            recent: VecDeque::new(),
            cap_alerted: None,
            permanent: HashSet::new(),
        };
        Ok((
            Responder {
                cfg: shared,
                tx,
                counters,
            },
            worker,
        ))
    }

    fn current(&self) -> Arc<ActiveResponseConfig> {
        self.cfg.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the responses, allowlist and cap (a reload).
    pub fn reconfigure(&self, cfg: &ActiveResponseConfig) {
        *self.cfg.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(cfg.clone());
    }

    /// What active response did since the start.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The same counters, shared (for the status row and the metrics).
    pub fn shared_counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Queues a request for each response `alert` matches. Never waits.
    pub fn offer(&self, alert: &Alert) {
        let cfg = self.current();
        if !cfg.enabled || alert.rule.groups.iter().any(|g| g == GROUP) {
            return;
        }
        for r in cfg.responses.iter().filter(|r| matches(r, &alert.rule)) {
            let Some(srcip) = alert.decoded.get("srcip") else {
                bump(&self.counters.invalid);
                tracing::debug!(
                    rule = alert.rule.id,
                    "active response not run: the alert has no source address"
                );
                continue;
            };
            let user = ["dstuser", "user", "srcuser"]
                .iter()
                .find_map(|k| alert.decoded.get(k))
                .map(str::to_string);
            let req = Request {
                response: r.clone(),
                rule: alert.rule.id,
                srcip: srcip.to_string(),
                user,
            };
            match self.tx.try_send(req) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    let n = bump(&self.counters.dropped);
                    if n.is_power_of_two() {
                        tracing::warn!(dropped = n, "active response queue full: request dropped");
                    }
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

/// Whether every criterion the response gives matches the alert's rule.
fn matches(r: &ResponseConfig, rule: &RuleInfo) -> bool {
    (r.rules.is_empty() || r.rules.contains(&rule.id))
        && (r.groups.is_empty() || r.groups.iter().any(|g| rule.groups.contains(g)))
        && r.min_level.map_or(true, |l| rule.level >= l)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// "10m", "2s", "1d" for a timeout.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        _ if s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s % 3_600 == 0 => format!("{}h", s / 3_600),
        _ if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

impl Worker {
    /// Acts on requests and unblocks until the agent stops. Requests still queued then are
    /// dropped (and logged); recorded blocks wait for the next start.
    pub fn run(mut self) {
        match self.store.count() {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                blocks = n,
                "active response: blocks recorded with a timeout; those due are lifted now"
            ),
            Err(e) => tracing::error!("active response: cannot read the recorded blocks: {e}"),
        }
        self.count_in_force();
        let mut rx_open = true;
        while !self.stop.load(Ordering::Relaxed) {
            self.sync_config();
            self.unblock_due();
            let wait = match self.store.next_due() {
                Ok(Some(t)) => (t - now_ms()).clamp(0, 500),
                _ => 500,
            };
            let wait = Duration::from_millis(wait as u64);
            if !rx_open {
                std::thread::sleep(wait);
                continue;
            }
            match self.rx.recv_timeout(wait) {
                Ok(req) => self.handle(req),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => rx_open = false,
            }
        }
        let left = self.rx.try_iter().count();
        if left > 0 {
            tracing::warn!(
                requests = left,
                "stopping: active response requests not acted on"
            );
        }
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        if n(&c.blocked) + n(&c.unblocked) + n(&c.failed) + n(&c.invalid) + n(&c.capped) > 0 {
            tracing::info!(
                blocked = n(&c.blocked),
                unblocked = n(&c.unblocked),
                repeated = n(&c.repeated),
                failed = n(&c.failed),
                invalid = n(&c.invalid),
                allowlisted = n(&c.allowlisted),
                capped = n(&c.capped),
                dropped = n(&c.dropped),
                waiting = self.store.count().unwrap_or(0),
                "active response stopped"
            );
        }
    }

    /// Sets the gauge of addresses blocked now.
    fn count_in_force(&self) {
        match self.store.count() {
            Ok(n) => self
                .counters
                .in_force
                .store(n + self.permanent.len() as u64, Ordering::Relaxed),
            Err(e) => tracing::debug!("active response: cannot count the recorded blocks: {e}"),
        }
    }

    fn sync_config(&mut self) {
        let cur = self.cfg.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !Arc::ptr_eq(&cur, &self.seen) {
            self.allow.set_configured(cur.allowlist.clone());
            self.seen = cur;
        }
    }

    fn handle(&mut self, req: Request) {
        self.sync_config();
        let cfg = self.seen.clone();
        if !cfg.enabled {
            return;
        }
        let action = Action::of(&req.response);
        let name = action.name();
        let ip = match host_address(&req.srcip) {
            Ok(ip) => ip,
            Err(why) => {
                bump(&self.counters.invalid);
                tracing::warn!(
                    srcip = %escape_control(&req.srcip),
                    rule = req.rule,
                    response = %name,
                    "active response not run: the source address is {why}"
                );
                return;
            }
        };
        if let Some(why) = self.allow.reason(ip) {
            bump(&self.counters.allowlisted);
            tracing::info!(
                srcip = %ip,
                rule = req.rule,
                response = %name,
                "active response not run: the address is {why}"
            );
            return;
        }
        let key = action.key();
        let ip_text = ip.to_string();
        if self.permanent.contains(&(key.clone(), ip)) {
            bump(&self.counters.repeated);
            tracing::debug!(srcip = %ip, rule = req.rule, response = %name, "already blocked (without timeout): not blocked twice");
            return;
        }
        match self.store.unblock_at(&key, &ip_text) {
            Ok(Some(_)) => {
                bump(&self.counters.repeated);
                // Debug: a brute force repeats for every line until the block bites.
                tracing::debug!(
                    srcip = %ip,
                    rule = req.rule,
                    response = %name,
                    "already blocked: not blocked twice (the block keeps its unblock time)"
                );
                return;
            }
            Ok(None) => {}
            Err(e) => tracing::error!("active response: cannot read the recorded blocks: {e}"),
        }
        let user = if action.wants_user() {
            match req.user.filter(|u| valid_user(u)) {
                Some(u) => Some(u),
                None => {
                    bump(&self.counters.invalid);
                    tracing::warn!(
                        srcip = %ip,
                        rule = req.rule,
                        response = %name,
                        "active response not run: it passes the user name and the alert has no valid one"
                    );
                    return;
                }
            }
        } else {
            None
        };
        // The cap: blocks in the last minute.
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        let cap = cfg.max_per_minute as usize;
        if cap > 0 && self.recent.len() >= cap {
            bump(&self.counters.capped);
            tracing::warn!(
                srcip = %ip,
                rule = req.rule,
                response = %name,
                max_per_minute = cap,
                "active response skipped: the cap of responses a minute is reached"
            );
            if self
                .cap_alerted
                .map_or(true, |t| t.elapsed() >= Duration::from_secs(60))
            {
                self.cap_alerted = Some(now);
                let text = format!(
                    "Active response skipped: {cap} responses a minute reached; {ip} not blocked ({name}). Further skips this minute are only logged."
                );
                self.raise(RULE_FAILED, 8, &text, ip, None, &name, req.rule, "skipped");
            }
            return;
        }
        self.recent.push_back(now);
        let target = Target {
            ip,
            user,
            rule: req.rule,
            timeout: req.response.timeout,
        };
        match self.apply(&action, Op::Add, &target) {
            Ok(detail) => {
                bump(&self.counters.blocked);
                let until = match target.timeout {
                    Some(t) => {
                        let p = Pending {
                            action: key,
                            ip: ip_text,
                            user: target.user.clone(),
                            rule: req.rule,
                            unblock_at: now_ms() + t.as_millis() as i64,
                            attempts: 0,
                        };
                        if let Err(e) = self.store.record(&p, now_ms()) {
                            tracing::error!(
                                srcip = %ip,
                                "active response: cannot record the block, it will not be lifted automatically: {e}"
                            );
                        }
                        format!("for {}", human(t))
                    }
                    None => {
                        self.permanent.insert((key, ip));
                        "without timeout".to_string()
                    }
                };
                self.count_in_force();
                tracing::info!(srcip = %ip, rule = req.rule, response = %name, "blocked {until}: {detail}");
                let text = format!(
                    "Active response: {ip} blocked ({name}) {until} after rule {}",
                    req.rule
                );
                self.raise(
                    RULE_BLOCK,
                    6,
                    &text,
                    ip,
                    target.user.as_deref(),
                    &name,
                    req.rule,
                    &detail,
                );
            }
            Err(detail) => {
                bump(&self.counters.failed);
                tracing::warn!(srcip = %ip, rule = req.rule, response = %name, "block failed: {detail}");
                let text = format!(
                    "Active response failed: blocking {ip} ({name}) after rule {}",
                    req.rule
                );
                self.raise(
                    RULE_FAILED,
                    8,
                    &text,
                    ip,
                    target.user.as_deref(),
                    &name,
                    req.rule,
                    &detail,
                );
            }
        }
    }

    /// Lifts the blocks that are due; a failure is retried later, then given up.
    fn unblock_due(&mut self) {
        let now = now_ms();
        let due = match self.store.due(now) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("active response: cannot read the recorded blocks: {e}");
                return;
            }
        };
        for p in due {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let forget = |s: &Store| {
                if let Err(e) = s.remove(&p.action, &p.ip) {
                    tracing::error!("active response: cannot remove a recorded block: {e}");
                }
            };
            let (Some(action), Ok(ip)) = (Action::from_key(&p.action), host_address(&p.ip)) else {
                tracing::error!(
                    action = %escape_control(&p.action),
                    ip = %escape_control(&p.ip),
                    "active response: a recorded block this version cannot undo: forgotten"
                );
                forget(&self.store);
                continue;
            };
            let name = action.name();
            let target = Target {
                ip,
                user: p.user.clone(),
                rule: p.rule,
                timeout: None,
            };
            match self.apply(&action, Op::Delete, &target) {
                Ok(detail) => {
                    forget(&self.store);
                    bump(&self.counters.unblocked);
                    self.count_in_force();
                    tracing::info!(srcip = %ip, rule = p.rule, response = %name, "unblocked: {detail}");
                    let text = format!("Active response: {ip} unblocked ({name})");
                    self.raise(
                        RULE_UNBLOCK,
                        3,
                        &text,
                        ip,
                        p.user.as_deref(),
                        &name,
                        p.rule,
                        &detail,
                    );
                }
                Err(detail) => {
                    bump(&self.counters.failed);
                    bump(&self.counters.unblock_failed);
                    let tries = p.attempts + 1;
                    let text = if tries >= UNBLOCK_TRIES {
                        forget(&self.store);
                        self.count_in_force();
                        tracing::error!(srcip = %ip, response = %name, "unblock failed {tries} times, given up (lift it by hand): {detail}");
                        format!("Active response failed: unblocking {ip} ({name}) given up after {tries} tries; lift it by hand")
                    } else {
                        let at = now + (UNBLOCK_RETRY * tries).as_millis() as i64;
                        if let Err(e) = self.store.reschedule(&p.action, &p.ip, at, tries) {
                            tracing::error!("active response: cannot record the retry: {e}");
                        }
                        tracing::warn!(srcip = %ip, response = %name, "unblock failed, retried later: {detail}");
                        format!("Active response failed: unblocking {ip} ({name}); retried later")
                    };
                    self.raise(
                        RULE_FAILED,
                        8,
                        &text,
                        ip,
                        p.user.as_deref(),
                        &name,
                        p.rule,
                        &detail,
                    );
                }
            }
        }
    }

    /// Runs one block or unblock: Ok or Err with what happened, for the log and the alert.
    fn apply(&self, action: &Action, op: Op, t: &Target) -> Result<String, String> {
        if let Action::HostsDeny(path) = action {
            return match edit_hosts_deny(path, t.ip, op) {
                Ok(true) if op == Op::Add => Ok(format!("added to {}", path.display())),
                Ok(true) => Ok(format!("removed from {}", path.display())),
                Ok(false) if op == Op::Add => Ok(format!("already in {}", path.display())),
                Ok(false) => Ok(format!("was not in {}", path.display())),
                Err(e) => Err(format!("{}: {e}", path.display())),
            };
        }
        let Some(argv) = action.argv(op, t) else {
            return Err("no command".into());
        };
        let shown = escape_control(&argv.join(" "));
        let mut out = exec::run(&argv, COMMAND_TIMEOUT, &self.stop);
        if !out.ok && op == Op::Add {
            // nftables: the table and sets may not exist yet; create them and try again.
            if let Some(setup) = action.setup_argv() {
                let s = exec::run(&setup, COMMAND_TIMEOUT, &self.stop);
                if s.ok {
                    tracing::info!("created the nftables table inet hids");
                    out = exec::run(&argv, COMMAND_TIMEOUT, &self.stop);
                } else {
                    tracing::warn!(
                        "cannot create the nftables table inet hids: {}: {}",
                        s.status,
                        escape_control(&s.output)
                    );
                }
            }
        }
        let detail = if out.output.is_empty() {
            format!("{shown}: {}", out.status)
        } else {
            format!(
                "{shown}: {}: {}",
                out.status,
                escape_control(&out.output.chars().take(1024).collect::<String>())
            )
        };
        if out.ok {
            Ok(detail)
        } else if op == Op::Delete && action.already_gone(&out.output) {
            Ok(format!("{detail} (already gone)"))
        } else {
            Err(detail)
        }
    }

    /// Raises one of active response's own alerts.
    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        id: u32,
        level: u8,
        description: &str,
        ip: IpAddr,
        user: Option<&str>,
        response: &str,
        trigger: u32,
        detail: &str,
    ) {
        let verb = match id {
            RULE_BLOCK => "block",
            RULE_UNBLOCK => "unblock",
            _ => "failed",
        };
        let mut fields: Vec<crate::event::DecodedField> = vec![
            (Arc::from("srcip"), ip.to_string().into()),
            (Arc::from("action"), verb.into()),
        ];
        if let Some(u) = user {
            fields.push((Arc::from("dstuser"), u.into()));
        }
        fields.push((Arc::from("response"), response.into()));
        fields.push((Arc::from("trigger_rule"), trigger.to_string().into()));
        let text = escape_control(&format!("{description}: {detail}"));
        let mut alert = Alert::internal(
            id,
            level,
            escape_control(description),
            &["ossec", GROUP],
            self.host.clone(),
            LOCATION,
            text,
        );
        alert.decoded.fields = fields;
        let _ = (self.emit)(alert);
    }
}

#[cfg(test)]
mod tests;
