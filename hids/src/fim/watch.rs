//! Real-time FIM: inotify watches on every directory of the `realtime = true` trees, events
//! coalesced per path for the settle window, each settled path compared with the baseline by
//! [`super::check_path`] (so a change is reported exactly like a scan's, and never twice).
//!
//! Two threads: the reader blocks on the inotify descriptor and hands raw events over a channel;
//! the checker blocks on that channel (with a timeout only while some path is settling), keeps
//! the watch table up to date, and checks settled paths. Nothing runs while nothing changes.
//!
//! Gaps are closed by scanning: a new directory is listed right after its watch is added (what
//! was created before the watch existed is found there), and a lost-event overflow
//! (`IN_Q_OVERFLOW`) re-watches the trees and runs a full check, with an alert saying so.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
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
const READ_BUF: usize = 256 << 10;
/// Reads queued between the reader and the checker, at most.
const QUEUED_READS: usize = 64;

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
    events: Receiver<Vec<RawEvent>>,
}

/// The checker thread's state.
struct Checker {
    cfg: FimConfig,
    plan: Plan,
    state_dir: PathBuf,
    watches: Watches,
    by_wd: HashMap<i32, (WatchDescriptor, PathBuf)>,
    /// Watches on the parent directory of a configured single file.
    parent_wds: HashSet<i32>,
    /// Configured single files (watched through their parent).
    file_roots: HashSet<PathBuf>,
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
            parent_wds: HashSet::new(),
            file_roots: HashSet::new(),
            pending: HashMap::new(),
            exhausted: false,
            unwatched: 0,
            gauge: Arc::default(),
        };
        // Bounded: under a flood the kernel queue fills and overflows (then a rescan catches
        // up) rather than this process's memory growing without end.
        let (tx, rx) = mpsc::sync_channel(QUEUED_READS);
        std::thread::Builder::new()
            .name("fim-inotify".into())
            .spawn(move || read_loop(inotify, tx))
            .map_err(io_err)?;
        let roots: Vec<PathBuf> = state.realtime_roots();
        for r in &roots {
            state.watch_tree(r, false);
        }
        tracing::info!(
            trees = roots.len(),
            watches = state.by_wd.len(),
            "real-time FIM watching"
        );
        state
            .gauge
            .store(state.by_wd.len() as u64, Ordering::Relaxed);
        Ok(Some(Watcher { state, events: rx }))
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
        let Watcher { mut state, events } = self;
        let (go, wait) = mpsc::channel::<Sender<Notice>>();
        std::thread::Builder::new()
            .name("fim-realtime".into())
            .spawn(move || {
                let Ok(out) = wait.recv() else {
                    return;
                };
                let mut b = match Baseline::open(&state.state_dir, false) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!("real-time FIM cannot open the baseline: {e}");
                        return;
                    }
                };
                if state.exhausted {
                    state.report_exhausted(&out);
                }
                state.check_loop(&mut b, &events, &out);
            })?;
        Ok(Paused { go })
    }
}

/// The checking thread, waiting for the baseline to exist.
pub struct Paused {
    go: Sender<Sender<Notice>>,
}

impl Paused {
    /// Starts checking (the events since [`Watcher::start`] first): changes and alerts about the
    /// watching go to `out`. The thread ends when `out` is closed.
    pub fn resume(self, out: Sender<Notice>) {
        let _ = self.go.send(out);
    }
}

/// Reads events until the checker goes away.
fn read_loop(mut inotify: Inotify, tx: SyncSender<Vec<RawEvent>>) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        match inotify.read_events_blocking(&mut buf) {
            Ok(events) => {
                let v: Vec<RawEvent> = events
                    .map(|e| RawEvent {
                        wd: e.wd.get_watch_descriptor_id(),
                        mask: e.mask,
                        name: e.name.map(|n| n.to_os_string()),
                    })
                    .collect();
                if tx.send(v).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::error!("real-time FIM stopped: cannot read inotify events: {e}");
                return;
            }
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
                // A configured single file (or a root not there yet): its parent directory is
                // watched for that one name, since a file replaced by a rename (`/etc/passwd` by
                // useradd) is a new inode that a watch on the file itself would not follow.
                if dir == top && !scan_new {
                    if let Some(parent) = dir.parent().filter(|p| !self.wants_watch(p)) {
                        if let Some(id) = self.add_watch(parent) {
                            self.parent_wds.insert(id);
                            self.file_roots.insert(dir.clone());
                        }
                    }
                }
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
            self.parent_wds.remove(&id);
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

    fn report_exhausted(&mut self, out: &Sender<Notice>) {
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
            self.parent_wds.remove(&ev.wd);
            return;
        }
        let Some((_, base)) = self.by_wd.get(&ev.wd) else {
            // A watch already dropped (its directory moved away or deleted).
            return;
        };
        let base = base.clone();
        if self.parent_wds.contains(&ev.wd) {
            // The parent of a configured single file: only that file's events count.
            if let Some(path) = ev.name.map(|n| base.join(n)) {
                if self.file_roots.contains(&path) {
                    self.touch(&path);
                }
            }
            return;
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

    fn check_loop(
        &mut self,
        b: &mut Baseline,
        events: &Receiver<Vec<RawEvent>>,
        out: &Sender<Notice>,
    ) {
        loop {
            let batch = match self.next_due() {
                None => match events.recv() {
                    Ok(v) => Some(v),
                    Err(_) => return,
                },
                Some(due) => {
                    match events.recv_timeout(due.saturating_duration_since(Instant::now())) {
                        Ok(v) => Some(v),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            };
            let mut overflow = false;
            if let Some(v) = batch {
                for ev in v {
                    self.handle(ev, &mut overflow);
                }
                // Take what is already queued before checking anything.
                while let Ok(v) = events.try_recv() {
                    for ev in v {
                        self.handle(ev, &mut overflow);
                    }
                }
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
    fn check_due(&mut self, b: &mut Baseline, out: &Sender<Notice>) -> bool {
        let now = Instant::now();
        let settle = self.cfg.settle;
        let mut due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, &(first, last))| {
                last + settle <= now || first + settle * MAX_SETTLES <= now
            })
            .map(|(p, _)| p.clone())
            .collect();
        due.sort();
        let mut alive = true;
        for p in due {
            self.pending.remove(&p);
            let r = super::check_path(b, &self.cfg, &self.plan, &p, &mut |c| {
                alive &= out.send(Notice::Change(Box::new(c.clone()))).is_ok();
            });
            if let Err(e) = r {
                tracing::error!(path = %display_path(&p).0, "real-time FIM check failed: {e}");
            }
        }
        alive
    }

    /// Events were lost: watch the trees again and check everything. False when the agent is gone.
    fn rescan(&mut self, b: &mut Baseline, out: &Sender<Notice>) -> bool {
        tracing::warn!("inotify event queue overflowed: events were lost; rescanning");
        for r in self.realtime_roots() {
            self.watch_tree(&r, false);
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
        assert_eq!(c.by_wd.len(), 2, "the tree and sub/ are watched");
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
        let (tx, rx) = mpsc::channel();
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
    fn deleted_and_moved_directories_lose_their_watches() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("t");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        let cfg = config(&tree);
        let w = Watcher::start(&cfg, &d.path().join("state"))
            .unwrap()
            .unwrap();
        let mut c = w.state;
        assert_eq!(c.by_wd.len(), 3);
        c.drop_under(&tree.join("a"));
        assert_eq!(c.by_wd.len(), 1);
        fs::create_dir_all(tree.join("n/m")).unwrap();
        c.watch_tree(&tree.join("n"), true);
        assert_eq!(c.by_wd.len(), 3);
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
