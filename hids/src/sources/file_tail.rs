//! Following files: one path or glob per source, read line by line without losing or repeating a
//! line across rotation and restarts.
//!
//! Wake-ups come from inotify on the directories that hold the files (a change to a file is
//! reported on its directory too), with a short poll as a fallback when inotify is not available
//! or runs out of watches. On every wake each followed file is read to its end, and its path is
//! checked:
//! - renamed or deleted (the path now names another file, or none): the open file is read to its
//!   end, kept a little longer for late writers, then closed; the file now at the path is new and
//!   read from its beginning;
//! - truncated in place (copytruncate: a size below our offset, or first bytes that changed): read
//!   again from 0;
//! - not there yet: picked up when it appears (inotify, or the glob re-evaluated every few seconds).
//!
//! A file is known by its identity (device, inode, hash of its first bytes), which is what positions
//! are saved under; a restart resumes a known file at its acknowledged offset and reads a file it
//! does not know (created while hids was down) from the beginning. A known file the path no longer
//! names (rotated while hids was down) is looked for by inode in its directory and read to its end
//! first.
//!
//! The reading path allocates nothing per line once running: blocks of 256 KiB are split with
//! `memchr`, validated as UTF-8 once per block, and written into the deliveries of batches that
//! came back from the consumer (see [`super::Batch`]).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use globset::GlobMatcher;

use super::lines::{set_text, Line, LineSplitter};
use super::positions::{KnownFiles, SavedFile};
use super::{Batch, BatchWriter, Delivery, FileIdentity, Position, SourceContext};
use crate::config::StartAt;
use crate::event::{Event, LineFlags};

/// How many leading bytes of a file its identity hash covers.
pub const HEAD_BYTES: usize = 1024;
/// Globs are evaluated again this often (inotify also triggers it when a directory changes).
const GLOB_EVERY: Duration = Duration::from_secs(3);
/// The longest sleep between checks when inotify is working (partial lines, truncation).
const TICK_INOTIFY: Duration = Duration::from_millis(500);
/// The sleep between checks without inotify.
const TICK_POLL: Duration = Duration::from_millis(250);
/// A rotated-away file is still read this long, for writers that have not reopened yet.
const ROTATED_GRACE: Duration = Duration::from_secs(2);
/// Retry delays for a file that cannot be opened.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Deliveries per batch sent to the consumer.
const BATCH_MAX: usize = 1024;
/// Bytes read per system call.
const CHUNK: usize = 256 << 10;

/// FNV-1a: a stable (across builds and runs) hash for a file's first bytes.
pub fn head_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The configured path: one file, or a glob whose components may hold wildcards.
#[derive(Debug)]
enum Pattern {
    Literal(PathBuf),
    Glob(Vec<Part>),
}

#[derive(Debug)]
enum Part {
    Literal(std::ffi::OsString),
    /// A pattern for one name, and whether it may match names that start with a dot.
    Glob(GlobMatcher, bool),
    /// `**`: the directory itself and every directory below it (or, as the last component, every
    /// file below it).
    AnyDepth,
}

/// How deep `**` descends: deep enough for any log tree, and a bound on a runaway walk.
const ANY_DEPTH_MAX: usize = 32;

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

impl Pattern {
    fn parse(path: &str) -> Pattern {
        if !has_meta(path) {
            return Pattern::Literal(PathBuf::from(path));
        }
        let mut parts = Vec::new();
        for c in Path::new(path).components() {
            if let Component::Normal(os) = c {
                let s = os.to_string_lossy();
                if s == "**" {
                    if !matches!(parts.last(), Some(Part::AnyDepth)) {
                        parts.push(Part::AnyDepth);
                    }
                } else if has_meta(&s) {
                    match globset::GlobBuilder::new(&s)
                        .literal_separator(true)
                        .build()
                    {
                        Ok(g) => parts.push(Part::Glob(g.compile_matcher(), s.starts_with('.'))),
                        // Validated with the configuration; a pattern that still fails matches nothing.
                        Err(_) => return Pattern::Glob(Vec::new()),
                    }
                } else {
                    parts.push(Part::Literal(os.to_owned()));
                }
            }
        }
        Pattern::Glob(parts)
    }

    /// The files the pattern names now, and the directories to watch for new ones.
    fn expand(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        match self {
            Pattern::Literal(p) => {
                let dirs = p
                    .parent()
                    .map(|d| vec![d.to_path_buf()])
                    .unwrap_or_default();
                (vec![p.clone()], dirs)
            }
            Pattern::Glob(parts) if parts.is_empty() => (Vec::new(), Vec::new()),
            Pattern::Glob(parts) => {
                let mut current = vec![PathBuf::from("/")];
                let mut dirs = Vec::new();
                for (i, part) in parts.iter().enumerate() {
                    let last = i + 1 == parts.len();
                    if last {
                        dirs.clone_from(&current);
                    }
                    let mut next = Vec::new();
                    if let Part::AnyDepth = part {
                        let mut below = Vec::new();
                        for dir in &current {
                            descend(dir, 0, &mut below, &mut next);
                        }
                        if last {
                            // Watch every directory the files may appear in.
                            dirs.extend(below);
                        } else {
                            next = below;
                        }
                        current = next;
                        continue;
                    }
                    for dir in &current {
                        match part {
                            Part::Literal(name) => next.push(dir.join(name)),
                            Part::AnyDepth => {}
                            Part::Glob(m, dots) => {
                                let Ok(rd) = fs::read_dir(dir) else { continue };
                                let mut found: Vec<PathBuf> = rd
                                    .flatten()
                                    .filter(|e| {
                                        let n = e.file_name();
                                        (*dots || !n.as_encoded_bytes().starts_with(b"."))
                                            && m.is_match(Path::new(&n))
                                    })
                                    .map(|e| e.path())
                                    .filter(|p| last || p.is_dir())
                                    .collect();
                                found.sort();
                                next.extend(found);
                            }
                        }
                    }
                    current = next;
                }
                (current, dirs)
            }
        }
    }
}

/// Collects `dir` (if it is a directory) and every directory below it into `dirs`, and the other
/// entries below it into `files`, in name order. Symbolic links to directories are not descended
/// (no loops, and no walking out of the log tree); hidden entries are skipped, as `*` skips them.
fn descend(dir: &Path, depth: usize, dirs: &mut Vec<PathBuf>, files: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    dirs.push(dir.to_path_buf());
    let mut entries: Vec<(PathBuf, Option<fs::FileType>)> = rd
        .flatten()
        .filter(|e| !e.file_name().as_encoded_bytes().starts_with(b"."))
        .map(|e| (e.path(), e.file_type().ok()))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, t) in entries {
        match t {
            Some(t) if t.is_dir() => {
                if depth < ANY_DEPTH_MAX {
                    descend(&p, depth + 1, dirs, files);
                }
            }
            // A link to a directory is neither descended nor a file to follow.
            Some(t) if t.is_symlink() && p.is_dir() => {}
            _ => files.push(p),
        }
    }
}

/// One followed file (the open descriptor, not the path: a renamed file is still followed).
struct Tracked {
    slot: u32,
    generation: u32,
    path: PathBuf,
    location: Arc<str>,
    file: File,
    dev: u64,
    ino: u64,
    head_len: u32,
    head_hash: u64,
    splitter: LineSplitter,
    last_data: Instant,
    /// When the path stopped naming this file.
    rotated: Option<Instant>,
}

impl Tracked {
    fn identity(&self) -> FileIdentity {
        FileIdentity {
            dev: self.dev,
            ino: self.ino,
            head_len: self.head_len,
            head_hash: self.head_hash,
        }
    }
}

struct Failure {
    next_try: Instant,
    backoff: Duration,
    message: String,
}

/// inotify, read on its own thread: each batch of events becomes one wake-up message saying
/// whether a directory's entries changed (a file created, renamed or deleted, or events lost).
struct Watcher {
    watches: inotify::Watches,
    rx: Receiver<bool>,
    /// The directories watched, and their watches.
    dirs: HashMap<PathBuf, inotify::WatchDescriptor>,
}

impl Drop for Watcher {
    /// The source stopped (a reload removed it): the channel is closed first, then the watches
    /// removed, which wakes the reading thread; it finds the channel closed and ends, closing the
    /// inotify instance. Without this, a quiet directory kept both until its next event.
    fn drop(&mut self) {
        drop(std::mem::replace(&mut self.rx, mpsc::sync_channel(0).1));
        for (_, wd) in self.dirs.drain() {
            let _ = self.watches.remove(wd);
        }
    }
}

impl Watcher {
    fn start() -> Option<Watcher> {
        let mut ino = match inotify::Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("inotify is not available ({e}); polling log files instead");
                return None;
            }
        };
        let watches = ino.watches();
        let (tx, rx) = mpsc::sync_channel::<bool>(64);
        let spawned = std::thread::Builder::new()
            .name("log inotify".into())
            .spawn(move || {
                use inotify::EventMask as M;
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let events = match ino.read_events_blocking(&mut buf) {
                        Ok(ev) => ev,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return,
                    };
                    let structural = events.into_iter().any(|e| {
                        e.mask.intersects(
                            M::CREATE
                                | M::MOVED_TO
                                | M::MOVED_FROM
                                | M::DELETE
                                | M::ATTRIB
                                | M::Q_OVERFLOW
                                | M::DELETE_SELF
                                | M::MOVE_SELF,
                        )
                    });
                    match tx.try_send(structural) {
                        Ok(()) => {}
                        // The tail is busy and has wake-ups waiting: nothing is lost by dropping one,
                        // except the structural hint, which the periodic rescan covers.
                        Err(mpsc::TrySendError::Full(_)) => {}
                        Err(mpsc::TrySendError::Disconnected(_)) => return,
                    }
                }
            });
        if spawned.is_err() {
            return None;
        }
        Some(Watcher {
            watches,
            rx,
            dirs: HashMap::new(),
        })
    }

    fn watch(&mut self, dir: &Path) {
        use inotify::WatchMask as W;
        if self.dirs.contains_key(dir) {
            return;
        }
        let mask = W::MODIFY
            | W::CREATE
            | W::MOVED_TO
            | W::MOVED_FROM
            | W::DELETE
            | W::ATTRIB
            | W::DELETE_SELF
            | W::MOVE_SELF
            | W::ONLYDIR;
        match self.watches.add(dir, mask) {
            Ok(wd) => {
                self.dirs.insert(dir.to_path_buf(), wd);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                // Out of watches, or no permission: the poll tick still finds changes.
                tracing::debug!(dir = %dir.display(), "cannot watch directory: {e}");
            }
        }
    }
}

/// What the reading side needs to turn lines into deliveries.
///
/// Lines are written into the deliveries of spent batches that came back from the consumer
/// ([`BatchWriter`]): the strings keep their allocations, and the shared host and location are
/// only cloned into a delivery that does not hold them already, so that in the steady state a
/// line costs no allocation and no reference count shared with the consumer's thread.
struct Out {
    index: u32,
    host: Arc<str>,
    format: crate::event::LogFormat,
    batch: BatchWriter,
    /// The file (slot, generation) of the last delivery written.
    last_run: (u32, u32),
    /// Of the batch being filled: lines cut, lines with invalid UTF-8.
    truncated: u64,
    lossy: u64,
    /// Bytes of text in the batch being filled.
    text_bytes: usize,
    tx: mpsc::SyncSender<Batch>,
    counters: Arc<super::Counters>,
    closed: bool,
}

impl Out {
    #[inline]
    fn push(
        &mut self,
        t_slot: u32,
        generation: u32,
        location: &Arc<str>,
        line: Line<'_>,
        now: SystemTime,
    ) {
        if self.last_run != (t_slot, generation) {
            self.batch.end_run();
            self.last_run = (t_slot, generation);
        }
        let (host, format) = (&self.host, self.format);
        let d = self.batch.next(|| Delivery {
            event: Event {
                time: now,
                host: host.clone(),
                location: location.clone(),
                format,
                full_log: String::new(),
                flags: LineFlags::default(),
                fim: None,
            },
            position: Position::None,
        });
        let e = &mut d.event;
        let before = e.full_log.capacity();
        let lossy = set_text(&mut e.full_log, &line);
        let grew = e.full_log.capacity() - before;
        let text_len = e.full_log.len();
        e.time = now;
        if !Arc::ptr_eq(&e.host, host) {
            e.host = host.clone();
        }
        if !Arc::ptr_eq(&e.location, location) {
            e.location = location.clone();
        }
        e.format = format;
        e.flags = LineFlags {
            truncated: line.truncated,
            lossy_utf8: lossy,
        };
        e.fim = None;
        d.position = Position::File {
            source: self.index,
            slot: t_slot,
            generation,
            offset: line.end,
        };
        self.batch.grew(grew);
        self.text_bytes += text_len;
        self.truncated += u64::from(line.truncated);
        self.lossy += u64::from(lossy);
    }

    fn send(&mut self) {
        let Some(b) = self.batch.take() else { return };
        self.text_bytes = 0;
        let (t, l) = (
            std::mem::take(&mut self.truncated),
            std::mem::take(&mut self.lossy),
        );
        if self.closed {
            return;
        }
        self.counters.add(b.len() as u64, t, l);
        if self.tx.send(b).is_err() {
            self.closed = true;
        }
    }
}

struct Tail {
    ctx: SourceContext,
    pattern: Pattern,
    literal: bool,
    first_start: bool,
    known: HashMap<(u64, u64), SavedFile>,
    files: Vec<Tracked>,
    next_slot: u32,
    failures: HashMap<PathBuf, Failure>,
    watcher: Option<Watcher>,
    chunk: Vec<u8>,
    out: Out,
}

/// Follows one file source until the sources stop (or, with `once`, until every file was read to
/// its end).
pub fn run(ctx: SourceContext, known: KnownFiles) {
    let path = ctx.config.path.clone().unwrap_or_default();
    let pattern = Pattern::parse(&path);
    let literal = matches!(pattern, Pattern::Literal(_));
    let out = Out {
        index: ctx.index,
        host: ctx.host.clone(),
        format: ctx.config.format,
        batch: BatchWriter::new(),
        last_run: (u32::MAX, 0),
        truncated: 0,
        lossy: 0,
        text_bytes: 0,
        tx: ctx.tx.clone(),
        counters: ctx.counters.clone(),
        closed: false,
    };
    let watcher = if ctx.options.once || ctx.options.poll {
        None
    } else {
        Watcher::start()
    };
    let mut t = Tail {
        ctx,
        pattern,
        literal,
        first_start: known.first_start,
        known: known.files,
        files: Vec::new(),
        next_slot: 0,
        failures: HashMap::new(),
        watcher,
        chunk: vec![0u8; CHUNK],
        out,
    };
    t.run();
}

impl Tail {
    fn run(&mut self) {
        self.rescan(true);
        self.ctx.ledger.initial_scan_done();
        if self.ctx.options.once {
            self.pump(true);
            let mut files = std::mem::take(&mut self.files);
            for t in &mut files {
                self.flush_partial(t);
            }
            self.out.send();
            for t in files.iter().filter(|t| t.rotated.is_some()) {
                self.ctx.ledger.retire(t.slot);
            }
            return;
        }
        let mut next_glob = Instant::now() + GLOB_EVERY;
        let mut structural = false;
        loop {
            if self.ctx.stopping() || self.out.closed {
                break;
            }
            let rotated = self.pump(false);
            let now = Instant::now();
            if self.literal || structural || rotated || now >= next_glob {
                self.rescan(false);
                next_glob = now + GLOB_EVERY;
            }
            self.out.send();
            if self.out.closed {
                break;
            }
            structural = self.wait();
        }
        self.out.send();
    }

    /// Sleeps until inotify reports something or the tick passes; true when directory entries
    /// changed (or may have).
    fn wait(&mut self) -> bool {
        let Some(w) = &self.watcher else {
            std::thread::sleep(TICK_POLL);
            return false;
        };
        let mut structural = match w.rx.recv_timeout(TICK_INOTIFY) {
            Ok(s) => s,
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                tracing::warn!("inotify stopped; polling log files instead");
                self.watcher = None;
                return true;
            }
        };
        while let Ok(s) = w.rx.try_recv() {
            structural |= s;
        }
        structural
    }

    /// Checks every followed file's path, reads every file to its end, hands on quiet partial
    /// lines, and closes rotated files that are done. True when a path stopped naming its file.
    fn pump(&mut self, once: bool) -> bool {
        let mut rotated_any = false;
        let mut files = std::mem::take(&mut self.files);
        for t in &mut files {
            if t.rotated.is_none() && !once && !same_file(&t.path, t.dev, t.ino) {
                tracing::debug!(path = %t.path.display(), "file rotated or deleted; reading it to its end");
                t.rotated = Some(Instant::now());
                rotated_any = true;
            }
            self.read_file(t);
            let wait = self.ctx.config.partial_line_wait;
            if !wait.is_zero() && t.splitter.has_partial() && t.last_data.elapsed() >= wait {
                self.flush_partial(t);
            }
            self.out.send();
        }
        let now = Instant::now();
        let mut kept = Vec::with_capacity(files.len());
        for mut t in files {
            match t.rotated {
                Some(r) if now.duration_since(r) >= ROTATED_GRACE => {
                    self.flush_partial(&mut t);
                    self.out.send();
                    self.ctx.ledger.retire(t.slot);
                }
                _ => kept.push(t),
            }
        }
        self.files = kept;
        rotated_any
    }

    fn flush_partial(&mut self, t: &mut Tracked) {
        let now = SystemTime::now();
        let (slot, generation, loc) = (t.slot, t.generation, t.location.clone());
        let out = &mut self.out;
        t.splitter
            .flush_partial(|l| out.push(slot, generation, &loc, l, now));
    }

    /// Reads a file from where it stands to its end, noticing truncation first.
    fn read_file(&mut self, t: &mut Tracked) {
        let meta = match t.file.metadata() {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(path = %t.path.display(), "cannot stat open file: {e}");
                return;
            }
        };
        let size = meta.len();
        let offset = t.splitter.read_offset();
        let mut truncated = size < offset;
        if !truncated && t.head_len > 0 {
            match read_head(&t.file, t.head_len as usize) {
                Ok(h) if h.len() == t.head_len as usize && head_hash(&h) == t.head_hash => {}
                Ok(_) => truncated = true,
                Err(_) => {}
            }
        }
        if truncated {
            tracing::info!(path = %t.path.display(), "file was truncated or rewritten; reading it from the start");
            self.flush_partial(t);
            t.generation += 1;
            t.splitter = LineSplitter::new(self.ctx.config.max_line, 0);
            if t.file.seek(SeekFrom::Start(0)).is_err() {
                return;
            }
            t.head_len = 0;
            t.head_hash = head_hash(&[]);
            self.refresh_head(t, size);
            self.ctx.ledger.register(
                t.slot,
                t.identity(),
                t.path.to_string_lossy().into_owned(),
                t.generation,
                0,
            );
        } else if (t.head_len as usize) < HEAD_BYTES && size > u64::from(t.head_len) {
            self.refresh_head(t, size);
            self.ctx.ledger.update_head(t.slot, t.head_len, t.head_hash);
        }
        loop {
            let n = match t.file.read(&mut self.chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(path = %t.path.display(), "read error: {e}");
                    break;
                }
            };
            // One clock read per block: the lines of a block were read at the same moment.
            let now = SystemTime::now();
            t.last_data = Instant::now();
            let (slot, generation, loc) = (t.slot, t.generation, t.location.clone());
            let out = &mut self.out;
            t.splitter.feed(&self.chunk[..n], |l| {
                out.push(slot, generation, &loc, l, now)
            });
            if self.out.batch.len() >= BATCH_MAX || self.out.text_bytes >= super::BATCH_MAX_BYTES {
                self.out.send();
                if self.out.closed || self.ctx.stopping() {
                    return;
                }
            }
        }
    }

    fn refresh_head(&self, t: &mut Tracked, size: u64) {
        let want = (size as usize).min(HEAD_BYTES);
        if let Ok(h) = read_head(&t.file, want) {
            t.head_len = h.len() as u32;
            t.head_hash = head_hash(&h);
        }
    }

    /// Evaluates the pattern and opens the files it names that are not followed yet.
    fn rescan(&mut self, at_startup: bool) {
        let (paths, dirs) = self.pattern.expand();
        if let Some(w) = &mut self.watcher {
            for d in &dirs {
                w.watch(d);
            }
        }
        if at_startup {
            self.recover_rotated(&paths);
        }
        for p in paths {
            if self.out.closed {
                return;
            }
            if self
                .files
                .iter()
                .any(|t| t.rotated.is_none() && t.path == p)
            {
                continue;
            }
            if let Some(f) = self.failures.get(&p) {
                if Instant::now() < f.next_try {
                    continue;
                }
            }
            match self.open(&p, at_startup, None) {
                Ok(Some(mut t)) => {
                    if let Some(f) = self.failures.remove(&p) {
                        tracing::info!(path = %p.display(), "log file is readable again (was: {})", f.message);
                    }
                    // Read what rotated-away files still hold before the new file.
                    let mut files = std::mem::take(&mut self.files);
                    for old in files.iter_mut().filter(|o| o.rotated.is_some()) {
                        self.read_file(old);
                    }
                    self.out.send();
                    files.append(&mut self.files);
                    self.files = files;
                    self.read_file(&mut t);
                    self.out.send();
                    self.files.push(t);
                }
                Ok(None) => {
                    self.failures.remove(&p);
                }
                Err(msg) => self.failed(&p, msg),
            }
        }
    }

    /// Finds the files followed at the last stop that the pattern no longer names because they
    /// were rotated while hids was stopped (`app.log` renamed to `app.log.1`, `app.log-20261122`
    /// ...), and follows them from their saved position as rotated-away files: what was written
    /// to them after the last saved position is read before the file now at the path. A file is
    /// looked for in the directory it was in, by its inode, and taken only if its device and first
    /// bytes match too.
    fn recover_rotated(&mut self, paths: &[PathBuf]) {
        let named: HashSet<(u64, u64)> = paths
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        let mut by_dir: HashMap<PathBuf, Vec<(u64, bool, PathBuf)>> = HashMap::new();
        for s in self.known.values() {
            if named.contains(&(s.identity.dev, s.identity.ino)) {
                continue;
            }
            let was = PathBuf::from(&s.path);
            if let Some(dir) = was.parent() {
                by_dir.entry(dir.to_path_buf()).or_default().push((
                    s.identity.ino,
                    s.identity.head_len == 0,
                    was.clone(),
                ));
            }
        }
        let mut found = Vec::new();
        for (dir, wanted) in by_dir {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                use std::os::unix::fs::DirEntryExt;
                let Some((_, empty, was)) = wanted.iter().find(|(ino, ..)| *ino == e.ino()) else {
                    continue;
                };
                // A file saved while empty has no first bytes to tell it from another file that
                // got its inode since: it is taken only under a rotated form of its name.
                let rotated_name = was.file_name().is_some_and(|n| {
                    e.file_name()
                        .as_encoded_bytes()
                        .starts_with(n.as_encoded_bytes())
                });
                if !*empty || rotated_name {
                    found.push((e.path(), was.clone()));
                }
            }
        }
        // The file last written longest ago first (`path.2` before `path.1`).
        found.sort_by_cached_key(|(p, _)| fs::metadata(p).and_then(|m| m.modified()).ok());
        for (now_at, was) in found {
            match self.open(&now_at, true, Some(&was)) {
                Ok(Some(t)) => {
                    tracing::info!(path = %now_at.display(), was = %was.display(), "finishing a file rotated while stopped");
                    self.files.push(t);
                }
                Ok(None) => {}
                Err(msg) => {
                    tracing::warn!(path = %now_at.display(), "cannot finish a file rotated while stopped: {msg}");
                }
            }
        }
    }

    fn failed(&mut self, p: &Path, message: String) {
        let now = Instant::now();
        match self.failures.get_mut(p) {
            Some(f) => {
                f.backoff = (f.backoff * 2).min(BACKOFF_MAX);
                f.next_try = now + f.backoff;
                if f.message != message {
                    tracing::warn!(path = %p.display(), "cannot follow log file: {message} (retrying)");
                    f.message = message;
                }
            }
            None => {
                tracing::warn!(path = %p.display(), "cannot follow log file: {message} (retrying)");
                self.failures.insert(
                    p.to_path_buf(),
                    Failure {
                        next_try: now + BACKOFF_FIRST,
                        backoff: BACKOFF_FIRST,
                        message,
                    },
                );
            }
        }
    }

    /// Opens a file the pattern names. Ok(None): nothing to follow (it does not exist, or it is a
    /// followed file under a new name). Err: a problem to report and retry.
    ///
    /// `rotated_from`: the file is one saved last time under that path and since rotated away; it
    /// is followed only if it is that file (else Ok(None)), from its saved offset, to its end.
    fn open(
        &mut self,
        p: &Path,
        at_startup: bool,
        rotated_from: Option<&Path>,
    ) -> Result<Option<Tracked>, String> {
        let lmeta = match fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        if rotated_from.is_some() && !lmeta.is_file() {
            // Not a rotated log (and never a symbolic link planted under a rotated name).
            return Ok(None);
        }
        let file = fs::OpenOptions::new()
            .read(true)
            // Non-blocking: opening a FIFO must not wait for a writer.
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(p);
        let file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("not a regular file (a FIFO, device or directory is not followed)".into());
        }
        if !lmeta.file_type().is_symlink() && (lmeta.dev(), lmeta.ino()) != (meta.dev(), meta.ino())
        {
            // Replaced between the check and the open (perhaps by a symbolic link): look again later.
            return Err("the file changed while it was being opened".into());
        }
        if lmeta.file_type().is_symlink() && lmeta.uid() != 0 && lmeta.uid() != meta.uid() {
            // Someone who may write the log directory must not make us read another's file.
            return Err(format!(
                "a symbolic link owned by uid {} to a file owned by uid {} is not followed",
                lmeta.uid(),
                meta.uid()
            ));
        }
        let (dev, ino, size) = (meta.dev(), meta.ino(), meta.len());
        if let Some(t) = self.files.iter_mut().find(|t| t.dev == dev && t.ino == ino) {
            // A followed file renamed to a name the glob also matches: keep following it there.
            t.path = p.to_path_buf();
            t.rotated = None;
            return Ok(None);
        }
        let head = read_head(&file, (size as usize).min(HEAD_BYTES)).map_err(|e| e.to_string())?;
        let hash = head_hash(&head);
        let same = |s: &SavedFile| {
            let n = s.identity.head_len as usize;
            n <= head.len() && head_hash(&head[..n]) == s.identity.head_hash
        };
        if rotated_from.is_some() && !self.known.get(&(dev, ino)).is_some_and(same) {
            return Ok(None);
        }
        let saved = self.known.remove(&(dev, ino)).filter(same);
        let offset = match saved {
            Some(s) if s.offset <= size => s.offset,
            Some(_) => 0,
            None if at_startup && self.first_start && self.ctx.config.start == StartAt::End => size,
            None => 0,
        };
        let mut file = file;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| e.to_string())?;
        let slot = self.next_slot;
        self.next_slot += 1;
        let location: Arc<str> = match &self.ctx.config.alias {
            Some(_) => self.ctx.location.clone(),
            // A rotated file's lines keep the location of the log they were written to.
            None => Arc::from(
                crate::event::display_path(rotated_from.unwrap_or(p))
                    .0
                    .as_str(),
            ),
        };
        let t = Tracked {
            slot,
            generation: 0,
            path: p.to_path_buf(),
            location,
            file,
            dev,
            ino,
            head_len: head.len() as u32,
            head_hash: hash,
            splitter: LineSplitter::new(self.ctx.config.max_line, offset),
            last_data: Instant::now(),
            rotated: rotated_from.map(|_| Instant::now()),
        };
        self.ctx.ledger.register(
            slot,
            t.identity(),
            p.to_string_lossy().into_owned(),
            0,
            offset,
        );
        tracing::info!(path = %p.display(), offset, "following log file");
        Ok(Some(t))
    }
}

/// Whether `path` still names the file with this device and inode.
fn same_file(path: &Path, dev: u64, ino: u64) -> bool {
    match fs::metadata(path) {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        // Cannot tell (permissions changed on the directory): keep following.
        Err(_) => true,
    }
}

fn read_head(file: &File, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_hash_is_stable() {
        assert_eq!(head_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(head_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn globs_expand_per_component() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for p in [
            "a/x.log", "a/y.log", "a/.h.log", "a/z.txt", "b/x.log", "c.log",
        ] {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, "").unwrap();
        }
        let pat = Pattern::parse(&format!("{}/*/*.log", root.display()));
        let (files, dirs) = pat.expand();
        assert_eq!(
            files,
            vec![
                root.join("a/x.log"),
                root.join("a/y.log"),
                root.join("b/x.log")
            ]
        );
        assert_eq!(dirs, vec![root.join("a"), root.join("b")]);
        let pat = Pattern::parse(&format!("{}/a/x.log", root.display()));
        assert!(matches!(pat, Pattern::Literal(_)));
        assert_eq!(pat.expand().1, vec![root.join("a")]);
    }

    #[test]
    fn double_star_matches_any_depth() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for p in [
            "x.log",
            "a/x.log",
            "a/y.log",
            "a/b/c/x.log",
            "a/.hidden/x.log",
            "d/x.log.1",
        ] {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, "").unwrap();
        }
        // A link back up the tree is not descended.
        std::os::unix::fs::symlink(root.join("a"), root.join("a/b/loop")).unwrap();
        let pat = Pattern::parse(&format!("{}/**/x.log", root.display()));
        let (mut files, dirs) = pat.expand();
        // A literal name is a candidate in every directory (followed once it exists).
        assert!(files.contains(&root.join("d/x.log")));
        files.retain(|p| p.exists());
        assert_eq!(
            files,
            vec![
                root.join("x.log"),
                root.join("a/x.log"),
                root.join("a/b/c/x.log")
            ]
        );
        for d in ["", "a", "a/b", "a/b/c", "d"] {
            assert!(dirs.contains(&root.join(d)), "{d} not watched: {dirs:?}");
        }
        // `**` between globs, repeated, and last.
        let pat = Pattern::parse(&format!("{}/a/**/**/*.log", root.display()));
        assert_eq!(
            pat.expand().0,
            vec![
                root.join("a/x.log"),
                root.join("a/y.log"),
                root.join("a/b/c/x.log")
            ]
        );
        let pat = Pattern::parse(&format!("{}/a/b/**", root.display()));
        assert_eq!(pat.expand().0, vec![root.join("a/b/c/x.log")]);
    }
}
