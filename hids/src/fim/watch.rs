//! Real-time FIM: inotify watches on every directory of the `realtime = true` trees, events
//! coalesced per path for the settle window, each settled path compared with the baseline by
//! [`super::check_paths`] (so a change is reported exactly like a scan's, and never twice).
//!
//! Two threads: the reader blocks on the inotify descriptor and moves every event it reads into
//! an inbox (events on files merged per path, so it stays as small as the set of paths changed),
//! never waiting for the checker, so the kernel's queue does not overflow while paths are
//! compared or a rescan runs; the checker waits for the inbox (with a timeout only while some
//! path is settling), keeps the watch table up to date, and checks settled paths. Nothing runs
//! while nothing changes.
//!
//! Gaps are closed by scanning: a new directory is listed right after its watch is added (what
//! was created before the watch existed is found there), and a lost-event overflow
//! (`IN_Q_OVERFLOW`) re-watches the trees and runs a full check, with an alert saying so.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

use super::baseline::Baseline;
use super::walk::Plan;
use super::{FimError, Mode, ScanOptions};
use crate::config::FimConfig;
use crate::event::{display_path, FimChange};

/// Rule id of the alert saying events were lost and a rescan ran (outside OSSEC's syscheck ids).
pub const LOST_EVENTS_RULE: u32 = 598;
/// Rule id of the alert saying the inotify watch limit was reached.
pub const NO_WATCHES_RULE: u32 = 599;

/// A path that keeps changing is checked at least this often (in settle windows).
const MAX_SETTLES: u32 = 10;
/// Bytes read from the inotify descriptor at a time.
const READ_BUF: usize = 64 << 10;
/// Distinct paths (and directory events) held for the checker, at most: about 100 bytes each,
/// so a few tens of MB at worst. Beyond that they are dropped and a rescan runs, as after a
/// kernel queue overflow.
const MAX_HELD: usize = 1 << 19;

/// What the watcher hands to the agent.
#[derive(Debug)]
pub enum Notice {
    /// A change, already written to the baseline: report it like a scan's.
    Change(Box<FimChange>),
    /// A problem with the watching itself, to be alerted at `level`.
    Alert {
        rule: u32,
        level: u8,
        description: &'static str,
        text: String,
    },
}

/// One raw inotify event, owned.
struct RawEvent {
    wd: i32,
    mask: EventMask,
    name: Option<OsString>,
}

const MASK: WatchMask = WatchMask::MODIFY
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::DONT_FOLLOW)
    .union(WatchMask::EXCL_UNLINK);

/// The real-time watcher: watches added by [`Watcher::start`], events checked once
/// [`Paused::resume`] is called (events in between are queued, not lost).
pub struct Watcher {
    state: Checker,
    shared: Arc<Shared>,
}

/// The checker thread's state.
struct Checker {
    cfg: FimConfig,
    plan: Plan,
    state_dir: PathBuf,
    watches: Watches,
    by_wd: HashMap<i32, (WatchDescriptor, PathBuf)>,
    /// Watches outside the trees, on the nearest existing ancestor of a configured path (its
    /// parent while it exists), with the configured paths each one waits for: a configured
    /// file is watched through its parent (a file replaced by rename is a new inode that a watch
    /// on the file would not follow), and a configured directory that is removed and created
    /// again is watched again from there.
    waits: HashMap<i32, HashSet<PathBuf>>,
    /// Path -> (first event, last event) since it was last checked.
    pending: HashMap<PathBuf, (Instant, Instant)>,
    /// The watch limit was hit and not reported since.
    exhausted: bool,
    /// Directories that could not be watched for lack of watches (this walk).
    unwatched: u64,
    /// How many watches are held, for the agent's status and metrics.
    gauge: Arc<AtomicU64>,
}

/// `fs.inotify.max_user_watches`, if readable.
pub fn max_user_watches() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The message for running out of inotify watches.
pub fn exhausted_message(limit: Option<u64>, watched: u64, unwatched: u64) -> String {
    let needed = watched + unwatched;
    let limit_text = limit.map_or("unknown".to_string(), |l| l.to_string());
    let raise = limit.map_or(needed * 2, |l| (l + unwatched).max(l * 2));
    format!(
        "out of inotify watches (fs.inotify.max_user_watches = {limit_text}): {unwatched} director{} of the real-time trees {} not watched; they need at least {needed} watches for this agent alone; raise it with `sysctl -w fs.inotify.max_user_watches={raise}` (and in /etc/sysctl.d/ to keep it); until then the scheduled scan covers them",
        if unwatched == 1 { "y" } else { "ies" },
        if unwatched == 1 { "is" } else { "are" },
    )
}

impl Watcher {
    /// Watches every directory of the `realtime = true` trees. `None` when there are none.
    pub fn start(cfg: &FimConfig, state_dir: &Path) -> Result<Option<Watcher>, FimError> {
        if !cfg.paths.iter().any(|p| p.realtime) {
            return Ok(None);
        }
        let io_err = |source| FimError::Io {
            path: PathBuf::from("inotify"),
            source,
        };
        let inotify = Inotify::init().map_err(io_err)?;
        let mut state = Checker {
            cfg: cfg.clone(),
            plan: Plan::new(&cfg.paths),
            state_dir: state_dir.to_path_buf(),
            watches: inotify.watches(),
            by_wd: HashMap::new(),
            waits: HashMap::new(),
            pending: HashMap::new(),
            exhausted: false,
            unwatched: 0,
            gauge: Arc::default(),
        };
        let shared = Arc::new(Shared::default());
        let reader = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("fim-inotify".into())
            .spawn(move || read_loop(inotify, reader))
            .map_err(io_err)?;
        let roots: Vec<PathBuf> = state.realtime_roots();
        for r in &roots {
            state.watch_tree(r, false);
            state.await_root(r);
        }
        tracing::info!(
            trees = roots.len(),
            watches = state.by_wd.len(),
            "real-time FIM watching"
        );
        state
            .gauge
            .store(state.by_wd.len() as u64, Ordering::Relaxed);
        Ok(Some(Watcher { state, shared }))
    }

    /// Keeps `gauge` at the number of inotify watches held while the watcher runs.
    pub fn count_watches_in(mut self, gauge: Arc<AtomicU64>) -> Watcher {
        gauge.store(self.state.by_wd.len() as u64, Ordering::Relaxed);
        self.state.gauge = gauge;
        self
    }

    /// Starts the checking thread, paused until [`Paused::resume`]. Spawned before the agent
    /// lowers its own priority (so that real-time checks are not starved by a busy machine
    /// while the scans stay at idle priority).
    pub fn spawn(self) -> io::Result<Paused> {
        let Watcher { mut state, shared } = self;
        let (go, wait) = mpsc::channel::<SyncSender<Notice>>();
        let stopper = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fim-realtime".into())
            .spawn(move || {
                let Ok(out) = wait.recv() else {
                    shared.lock().closed = true;
                    return;
                };
                let mut b = match Baseline::open(&state.state_dir, false) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!("real-time FIM cannot open the baseline: {e}");
                        shared.lock().closed = true;
                        return;
                    }
                };
                if state.exhausted {
                    state.report_exhausted(&out);
                }
                state.check_loop(&mut b, &shared, &out);
                shared.lock().closed = true;
                // Removing the watches wakes the reading thread, which then finds the inbox
                // closed and ends, closing the inotify instance.
                for (_, (wd, _)) in state.by_wd.drain() {
                    let _ = state.watches.remove(wd);
                }
            })?;
        Ok(Paused {
            go,
            stop: Stopper {
                shared: stopper,
                thread,
            },
        })
    }
}

/// The checking thread, waiting for the baseline to exist.
pub struct Paused {
    go: Sender<SyncSender<Notice>>,
    stop: Stopper,
}

impl Paused {
    /// Starts checking (the events since [`Watcher::start`] first): changes and alerts about the
    /// watching go to `out`. The thread ends when `out` is closed, or by the returned handle.
    /// `out` is bounded: while the analysis lags, checking waits (paths to check wait in the
    /// inbox, a few bytes each, rather than changes in a queue, a few hundred bytes each).
    pub fn resume(self, out: SyncSender<Notice>) -> Stopper {
        let _ = self.go.send(out);
        self.stop
    }
}

/// Stops a running watcher (a reload that starts another one with new settings).
pub struct Stopper {
    shared: Arc<Shared>,
    thread: std::thread::JoinHandle<()>,
}

impl Stopper {
    /// Stops checking once the check under way is done, and releases the watches.
    pub fn stop(self) {
        self.shared.lock().stop = true;
        self.shared.ready.notify_all();
        let _ = self.thread.join();
    }
}

/// Events read from the inotify descriptor and not yet taken by the checker.
#[derive(Default)]
struct Inbox {
    /// Events that change the watch table or whose order matters (on directories, on a watched
    /// directory itself, the kernel's overflow), in the order read.
    ordered: Vec<RawEvent>,
    /// The other events (on a named entry that is not a directory), merged per watch and name:
    /// a path written ten thousand times is one entry, so memory follows the number of distinct
    /// paths changed, not the number of changes.
    merged: HashMap<i32, HashMap<OsString, EventMask>>,
    /// Entries of `merged`.
    merged_len: usize,
    /// More than [`MAX_HELD`] entries were held: they were dropped, a rescan must run.
    lost: bool,
    /// The checker is gone: the reader stops.
    closed: bool,
    /// The checker is to stop (the watcher is replaced or the agent stops).
    stop: bool,
}

impl Inbox {
    fn is_empty(&self) -> bool {
        self.ordered.is_empty() && self.merged.is_empty() && !self.lost
    }

    fn push(&mut self, wd: i32, mask: EventMask, name: Option<&std::ffi::OsStr>) {
        match name {
            Some(n) if !mask.contains(EventMask::ISDIR) => {
                let names = self.merged.entry(wd).or_default();
                // Looked up before allocating: most events are for a path already held.
                if let Some(m) = names.get_mut(n) {
                    *m |= mask;
                } else {
                    names.insert(n.to_os_string(), mask);
                    self.merged_len += 1;
                }
            }
            _ => self.ordered.push(RawEvent {
                wd,
                mask,
                name: name.map(|n| n.to_os_string()),
            }),
        }
        if self.ordered.len() + self.merged_len > MAX_HELD {
            self.ordered = Vec::new();
            self.merged = HashMap::new();
            self.merged_len = 0;
            self.lost = true;
        }
    }
}

/// The inbox and the signal that something was put in it.
#[derive(Default)]
struct Shared {
    inbox: Mutex<Inbox>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // A panic while holding the lock leaves plain data: use it as it is.
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads events into the inbox until the checker goes away.
///
/// This thread does nothing else, and never waits for the checker: the kernel's queue holds
/// only `fs.inotify.max_queued_events` (16,384 by default) before it overflows and forces a
/// rescan, so it is emptied as fast as it fills, while the checker compares paths or rescans.
fn read_loop(mut inotify: Inotify, shared: Arc<Shared>) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let events = match inotify.read_events_blocking(&mut buf) {
            Ok(events) => events,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("real-time FIM stopped: cannot read inotify events: {e}");
                return;
            }
        };
        let mut inbox = shared.lock();
        if inbox.closed {
            return;
        }
        let was_empty = inbox.is_empty();
        for e in events {
            inbox.push(e.wd.get_watch_descriptor_id(), e.mask, e.name);
        }
        drop(inbox);
        if was_empty {
            shared.ready.notify_one();
        }
    }
}

impl Checker {
    fn realtime_roots(&self) -> Vec<PathBuf> {
        self.cfg
            .paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.realtime)
            .map(|(i, _)| self.plan.root(i).to_path_buf())
            .collect()
    }

    /// Whether `dir` is a directory of a real-time tree whose entries are recorded.
    fn wants_watch(&self, dir: &Path) -> bool {
        let Some((i, level)) = self.plan.governing(dir) else {
            return false;
        };
        let fp = &self.cfg.paths[i];
        if !fp.realtime || level > fp.depth {
            return false;
        }
        let root = self.plan.root(i);
        let mut cur = Some(dir);
        while let Some(p) = cur {
            if p == root {
                break;
            }
            if fp.ignore.matches(p) {
                return false;
            }
            cur = p.parent();
        }
        true
    }

    /// Watches `top` and every directory below it (watch first, then list, so nothing created
    /// in between is missed). With `scan_new`, every entry found is queued for a check.
    fn watch_tree(&mut self, top: &Path, scan_new: bool) {
        let mut stack = vec![top.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
            if !is_dir {
                continue;
            }
            if !self.wants_watch(&dir) {
                continue;
            }
            self.add_watch(&dir);
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in rd.flatten() {
                let path = entry.path();
                if scan_new {
                    self.touch(&path);
                }
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                }
            }
        }
    }

    /// Watches the nearest existing ancestor of the configured path `root` for it (see
    /// `waits`), unless that directory is inside a watched tree already (then the tree's watch
    /// sees it). Called at start, and when the directory watched for it goes away.
    fn await_root(&mut self, root: &Path) {
        let mut dir = root.parent();
        while let Some(d) = dir {
            if std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()) {
                break;
            }
            dir = d.parent();
        }
        let Some(dir) = dir else {
            return;
        };
        if self.wants_watch(dir) {
            return;
        }
        if let Some(id) = self.add_watch(dir) {
            self.waits.entry(id).or_default().insert(root.to_path_buf());
        }
    }

    /// An event in a directory watched for configured paths (see `waits`).
    fn handle_wait(&mut self, wd: i32, base: &Path, ev: &RawEvent) {
        let Some(roots) = self.waits.get(&wd) else {
            return;
        };
        let Some(name) = &ev.name else {
            // The directory itself moved or went: wait from further up.
            if ev
                .mask
                .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
            {
                let roots: Vec<PathBuf> = roots.iter().cloned().collect();
                self.forget_wait(wd);
                for r in roots {
                    self.touch(&r);
                    self.await_root(&r);
                }
            }
            return;
        };
        let path = base.join(name);
        let appeared = ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO);
        let mut found = Vec::new();
        let mut closer = Vec::new();
        for r in roots {
            if *r == path {
                found.push(r.clone());
            } else if appeared && r.starts_with(&path) {
                closer.push(r.clone());
            }
        }
        for r in found {
            self.touch(&r);
            // A configured directory (back again): watch it and look at what it holds.
            if appeared && ev.mask.contains(EventMask::ISDIR) {
                self.watch_tree(&r, true);
            }
        }
        // A directory on the way to a configured path appeared: wait from there (it may hold
        // the configured path already: `mkdir -p`).
        for r in closer {
            if let Some(set) = self.waits.get_mut(&wd) {
                set.remove(&r);
            }
            self.await_root(&r);
            if std::fs::symlink_metadata(&r).is_ok_and(|m| m.is_dir()) {
                self.touch(&r);
                self.watch_tree(&r, true);
            } else if r.exists() {
                self.touch(&r);
            }
        }
        if self.waits.get(&wd).is_some_and(|s| s.is_empty()) {
            self.forget_wait(wd);
        }
    }

    /// Drops a wait watch (and the inotify watch, unless a tree uses the same directory).
    fn forget_wait(&mut self, wd: i32) {
        self.waits.remove(&wd);
        let in_tree = self
            .by_wd
            .get(&wd)
            .is_some_and(|(_, p)| self.wants_watch(p));
        if !in_tree {
            if let Some((w, _)) = self.by_wd.remove(&wd) {
                let _ = self.watches.remove(w);
            }
        }
    }

    fn add_watch(&mut self, path: &Path) -> Option<i32> {
        match self.watches.add(path, MASK) {
            Ok(wd) => {
                let id = wd.get_watch_descriptor_id();
                self.by_wd.insert(id, (wd, path.to_path_buf()));
                return Some(id);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                self.exhausted = true;
                self.unwatched += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                path = %display_path(path).0,
                "cannot watch: {e}; the scheduled scan covers it"
            ),
        }
        None
    }

    /// Drops the watches of `dir` and everything below it (moved away or deleted).
    fn drop_under(&mut self, dir: &Path) {
        let gone: Vec<i32> = self
            .by_wd
            .iter()
            .filter(|(_, (_, p))| p.starts_with(dir))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if self.waits.contains_key(&id) {
                continue;
            }
            if let Some((wd, _)) = self.by_wd.remove(&id) {
                // Fails when the kernel already dropped it (inode gone): nothing to do then.
                let _ = self.watches.remove(wd);
            }
        }
    }

    fn touch(&mut self, path: &Path) {
        let now = Instant::now();
        self.pending
            .entry(path.to_path_buf())
            .and_modify(|e| e.1 = now)
            .or_insert((now, now));
    }

    fn report_exhausted(&mut self, out: &SyncSender<Notice>) {
        let text = exhausted_message(max_user_watches(), self.by_wd.len() as u64, self.unwatched);
        tracing::error!("{text}");
        let _ = out.send(Notice::Alert {
            rule: NO_WATCHES_RULE,
            level: 7,
            description: "Real-time FIM: out of inotify watches.",
            text,
        });
        self.exhausted = false;
        self.unwatched = 0;
    }

    /// When the earliest settling path is due.
    fn next_due(&self) -> Option<Instant> {
        let settle = self.cfg.settle;
        self.pending
            .values()
            .map(|&(first, last)| (last + settle).min(first + settle * MAX_SETTLES))
            .min()
    }

    fn handle(&mut self, ev: RawEvent, overflow: &mut bool) {
        if ev.mask.contains(EventMask::Q_OVERFLOW) {
            *overflow = true;
            return;
        }
        if ev.mask.contains(EventMask::IGNORED) {
            self.by_wd.remove(&ev.wd);
            // A directory waited on went away without a DELETE_SELF we saw: wait from further up.
            if let Some(roots) = self.waits.remove(&ev.wd) {
                for r in roots {
                    self.touch(&r);
                    self.await_root(&r);
                }
            }
            return;
        }
        let Some((_, base)) = self.by_wd.get(&ev.wd) else {
            // A watch already dropped (its directory moved away or deleted).
            return;
        };
        let base = base.clone();
        if self.waits.contains_key(&ev.wd) {
            self.handle_wait(ev.wd, &base, &ev);
            if !self.wants_watch(&base) {
                return;
            }
        }
        let Some(name) = ev.name else {
            // The watched directory (or file) itself.
            if ev
                .mask
                .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
            {
                self.drop_under(&base);
            }
            self.touch(&base);
            return;
        };
        let path = base.join(name);
        self.touch(&path);
        if ev.mask.contains(EventMask::ISDIR) {
            if ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                self.watch_tree(&path, true);
            } else if ev
                .mask
                .intersects(EventMask::DELETE | EventMask::MOVED_FROM)
            {
                self.drop_under(&path);
            }
        }
    }

    /// Takes what the reader holds: the ordered events first, then the merged ones (a
    /// merged event on a watch that an ordered one dropped is for a directory gone or moved,
    /// which the ordered one had checked or rescanned).
    fn take(&mut self, inbox: Inbox, overflow: &mut bool) {
        *overflow |= inbox.lost;
        for ev in inbox.ordered {
            self.handle(ev, overflow);
        }
        for (wd, names) in inbox.merged {
            for (name, mask) in names {
                self.handle(
                    RawEvent {
                        wd,
                        mask,
                        name: Some(name),
                    },
                    overflow,
                );
            }
        }
    }

    fn check_loop(&mut self, b: &mut Baseline, shared: &Shared, out: &SyncSender<Notice>) {
        loop {
            let inbox = {
                let mut inbox = shared.lock();
                loop {
                    if inbox.stop {
                        return;
                    }
                    if !inbox.is_empty() {
                        break Some(std::mem::take(&mut *inbox));
                    }
                    match self.next_due() {
                        None => {
                            inbox = shared.ready.wait(inbox).unwrap_or_else(|e| e.into_inner());
                        }
                        Some(due) => {
                            let left = due.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break None;
                            }
                            inbox = shared
                                .ready
                                .wait_timeout(inbox, left)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                    }
                }
            };
            let mut overflow = false;
            if let Some(inbox) = inbox {
                self.take(inbox, &mut overflow);
            }
            self.gauge.store(self.by_wd.len() as u64, Ordering::Relaxed);
            if self.exhausted {
                self.report_exhausted(out);
            }
            if overflow {
                if !self.rescan(b, out) {
                    return;
                }
                continue;
            }
            if !self.check_due(b, out) {
                return;
            }
        }
    }

    /// Checks the settled paths. False when the agent is gone.
    fn check_due(&mut self, b: &mut Baseline, out: &SyncSender<Notice>) -> bool {
        let now = Instant::now();
        let settle = self.cfg.settle;
        let due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, &(first, last))| {
                last + settle <= now || first + settle * MAX_SETTLES <= now
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in &due {
            self.pending.remove(p);
        }
        if due.is_empty() {
            return true;
        }
        // One call (one transaction per batch) for every settled path: a flood settles
        // thousands of paths at once.
        let mut alive = true;
        let r = super::check_paths(b, &self.cfg, &self.plan, &due, &mut |c| {
            alive &= out.send(Notice::Change(Box::new(c.clone()))).is_ok();
        });
        if let Err(e) = r {
            tracing::error!(paths = due.len(), "real-time FIM check failed: {e}");
        }
        alive
    }

    /// Events were lost: watch the trees again and check everything. False when the agent is gone.
    fn rescan(&mut self, b: &mut Baseline, out: &SyncSender<Notice>) -> bool {
        tracing::warn!("inotify event queue overflowed: events were lost; rescanning");
        for r in self.realtime_roots() {
            self.watch_tree(&r, false);
            self.await_root(&r);
        }
        self.pending.clear();
        let mut alive = true;
        let r = super::scan(
            b,
            &self.cfg,
            Mode::Check,
            &ScanOptions::default(),
            &mut |c| {
                alive &= out.send(Notice::Change(Box::new(c.clone()))).is_ok();
            },
        );
        let text = match r {
            Ok(s) => format!(
                "real-time FIM: the inotify event queue overflowed and events were lost; a rescan ran and found {} change(s) in {} entries",
                s.changes(),
                s.entries
            ),
            Err(e) => format!(
                "real-time FIM: the inotify event queue overflowed and events were lost; the rescan failed: {e}"
            ),
        };
        tracing::warn!("{text}");
        alive
            && out
                .send(Notice::Alert {
                    rule: LOST_EVENTS_RULE,
                    level: 7,
                    description: "Real-time FIM: events lost, rescan ran.",
                    text,
                })
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ChangeKind;
    use std::fs;

    fn config(tree: &Path) -> FimConfig {
        let text = format!(
            "[agent]\nstate_dir = \"/nonexistent\"\n[fim]\n[[fim.paths]]\npath = \"{}\"\nrealtime = true\n",
            tree.display()
        );
        crate::config::parse(Path::new("t.toml"), &text)
            .unwrap()
            .fim
    }

    #[test]
    fn an_overflow_rescans_and_says_events_were_lost() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("t");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("sub/f"), "1").unwrap();
        let cfg = config(&tree);
        let state = d.path().join("state");
        let mut b = Baseline::open(&state, true).unwrap();
        super::super::scan(
            &mut b,
            &cfg,
            Mode::Init,
            &ScanOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        let w = Watcher::start(&cfg, &state).unwrap().unwrap();
        let mut c = w.state;
        assert_eq!(
            c.by_wd.len() - c.waits.len(),
            2,
            "the tree and sub/ are watched"
        );
        assert_eq!(c.waits.len(), 1, "the tree's parent is watched for it");
        fs::write(tree.join("sub/f"), "22").unwrap();
        let mut overflow = false;
        c.handle(
            RawEvent {
                wd: -1,
                mask: EventMask::Q_OVERFLOW,
                name: None,
            },
            &mut overflow,
        );
        assert!(overflow);
        let (tx, rx) = mpsc::sync_channel(16);
        assert!(c.rescan(&mut b, &tx));
        drop(tx);
        let notices: Vec<Notice> = rx.iter().collect();
        assert_eq!(notices.len(), 2, "{notices:?}");
        match &notices[0] {
            Notice::Change(ch) => {
                assert_eq!(ch.kind, ChangeKind::Modified);
                assert_eq!(ch.path, tree.join("sub/f"));
            }
            n => panic!("{n:?}"),
        }
        match &notices[1] {
            Notice::Alert {
                rule, level, text, ..
            } => {
                assert_eq!((*rule, *level), (LOST_EVENTS_RULE, 7));
                assert!(text.contains("events were lost"), "{text}");
                assert!(text.contains("a rescan ran"), "{text}");
            }
            n => panic!("{n:?}"),
        }
    }

    #[test]
    fn the_inbox_merges_file_events_per_path_and_keeps_directory_events_in_order() {
        let mut inbox = Inbox::default();
        assert!(inbox.is_empty());
        let f = std::ffi::OsStr::new("f");
        for _ in 0..10_000 {
            inbox.push(1, EventMask::MODIFY, Some(f));
        }
        inbox.push(1, EventMask::CLOSE_WRITE, Some(f));
        inbox.push(2, EventMask::MODIFY, Some(f));
        inbox.push(1, EventMask::CREATE | EventMask::ISDIR, Some("d".as_ref()));
        inbox.push(1, EventMask::DELETE | EventMask::ISDIR, Some("d".as_ref()));
        inbox.push(3, EventMask::DELETE_SELF, None);
        assert_eq!(inbox.merged_len, 2);
        assert_eq!(
            inbox.merged[&1][f],
            EventMask::MODIFY | EventMask::CLOSE_WRITE
        );
        let order: Vec<(i32, EventMask)> = inbox.ordered.iter().map(|e| (e.wd, e.mask)).collect();
        assert_eq!(
            order,
            vec![
                (1, EventMask::CREATE | EventMask::ISDIR),
                (1, EventMask::DELETE | EventMask::ISDIR),
                (3, EventMask::DELETE_SELF),
            ]
        );
        assert!(!inbox.lost);
    }

    #[test]
    fn an_inbox_past_its_cap_is_dropped_and_asks_for_a_rescan() {
        let mut inbox = Inbox::default();
        for i in 0..=MAX_HELD {
            inbox.push(
                1,
                EventMask::CREATE,
                Some(OsString::from(i.to_string()).as_os_str()),
            );
        }
        assert!(inbox.lost);
        assert_eq!((inbox.merged_len, inbox.ordered.len()), (0, 0));
        assert!(!inbox.is_empty(), "a lost inbox still wakes the checker");
        let d = tempfile::tempdir().unwrap();
        let cfg = config(d.path());
        let mut c = Watcher::start(&cfg, &d.path().join("state"))
            .unwrap()
            .unwrap()
            .state;
        let mut overflow = false;
        c.take(std::mem::take(&mut inbox), &mut overflow);
        assert!(overflow);
    }

    #[test]
    fn deleted_and_moved_directories_lose_their_watches() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("t");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        let cfg = config(&tree);
        let w = Watcher::start(&cfg, &d.path().join("state"))
            .unwrap()
            .unwrap();
        let mut c = w.state;
        let trees = |c: &Checker| c.by_wd.len() - c.waits.len();
        assert_eq!(trees(&c), 3);
        c.drop_under(&tree.join("a"));
        assert_eq!(trees(&c), 1);
        fs::create_dir_all(tree.join("n/m")).unwrap();
        c.watch_tree(&tree.join("n"), true);
        assert_eq!(trees(&c), 3);
        assert!(c.pending.contains_key(&tree.join("n/m")));
    }

    #[test]
    fn exhausted_message_names_the_need_and_the_sysctl() {
        let m = exhausted_message(Some(100), 100, 50);
        assert!(m.contains("fs.inotify.max_user_watches = 100"), "{m}");
        assert!(m.contains("at least 150 watches"), "{m}");
        assert!(
            m.contains("sysctl -w fs.inotify.max_user_watches=200"),
            "{m}"
        );
        assert!(
            m.contains("50 directories of the real-time trees are not watched"),
            "{m}"
        );
    }
}
