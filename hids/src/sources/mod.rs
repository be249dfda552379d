//! Log sources: the `[[logs]]` of the configuration turned into [`Event`]s.
//!
//! Each source runs on its own thread (a source that fails never holds up another) and sends
//! batches of [`Delivery`] values into one bounded channel: a slow consumer makes the sources wait,
//! nothing is dropped. A delivery carries the [`Position`] just after its event; the consumer hands
//! positions back through the [`Acker`] once it has taken the events, and only acknowledged
//! positions are written to SQLite (in batches, by the checkpoint thread). After a crash reading
//! resumes at the last saved acknowledged position: a line may be read again, none is skipped.
//! [`Running::reload`] applies new `[[logs]]` while running: sources whose settings did not
//! change go on untouched, the others stop (positions saved once the consumer has acknowledged
//! what they sent) or start (from their saved positions, if any).
//!
//! - `file_tail.rs`: files and globs, rotation, truncation, positions per file identity.
//! - `journald.rs`: `journalctl --follow --output=json`, the cursor as position.
//! - `command.rs`: a program run every interval, its output one event (OSSEC's full_command).
//! - `lines.rs`: splitting bytes into lines (partial lines, long lines, invalid UTF-8).
//! - `positions.rs`: the SQLite side of positions and cursors.
//! - `tail_cmd.rs`: `hids tail`, which prints what the sources read.

pub mod command;
pub mod file_tail;
pub mod journald;
pub mod lines;
pub mod positions;
pub mod tail_cmd;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{Config, LogConfig, LogFormat};
use crate::event::Event;
use crate::state::{State, StateError};

/// How many batches may wait in the channel before the sources wait for the consumer.
pub const CHANNEL_BATCHES: usize = 64;

/// How often acknowledged positions are written to the database.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Errors that stop the sources from starting (a source that fails later only reports and retries).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot start a thread for log source {location}: {source}")]
    Thread {
        location: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where reading stands just after an event, to be acknowledged once the event is handed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Nothing to remember (command output).
    None,
    /// The byte offset in one generation of one tracked file of a source.
    File {
        source: u32,
        slot: u32,
        generation: u32,
        offset: u64,
    },
    /// The journal cursor of the entry.
    Cursor { source: u32, cursor: Arc<str> },
}

/// One event and the position to acknowledge once it has been handed on.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: Event,
    pub position: Position,
}

/// Bytes of text per batch a source sends: with lines up to `max_line` long (64 KiB by default),
/// a count of lines alone would let a queue of batches hold gigabytes.
pub(crate) const BATCH_MAX_BYTES: usize = 4 << 20;

/// What the sources send: the deliveries read in one go, in order.
///
/// It reads as a slice of [`Delivery`]. A file source's batch goes back to its source when the
/// consumer drops it, and is filled again there: the vector and the events' strings are reused,
/// so reading a line allocates nothing once the first batches have come back. A batch is only
/// kept while its strings are small (a burst of huge lines does not stay pinned in memory), and
/// only a few batches wait to be reused.
#[derive(Default)]
pub struct Batch {
    /// The deliveries; those past `len` are spent ones kept for their allocations.
    items: Vec<Delivery>,
    len: usize,
    /// The bytes held by the strings of every item (spent ones too).
    bytes: usize,
    /// Where the batch goes back to once dropped.
    home: Option<Arc<Pool>>,
    /// The index of the last delivery of each run of one file (generation), when the source
    /// recorded them: acknowledging needs those positions only.
    run_ends: Vec<u32>,
    /// Signalled when the batch is dropped: an empty batch sent behind others tells when the
    /// consumer has handled (and acknowledged) them all ([`Running::reload`]).
    barrier: Option<SyncSender<()>>,
}

impl Batch {
    /// A batch of these deliveries, not reused after it is dropped.
    pub fn new(items: Vec<Delivery>) -> Batch {
        Batch {
            len: items.len(),
            items,
            bytes: 0,
            home: None,
            run_ends: Vec::new(),
            barrier: None,
        }
    }

    /// An empty batch that signals the receiver once the consumer drops it (or the receiver
    /// sees a disconnection when the batch never reaches a consumer).
    fn barrier() -> (Batch, Receiver<()>) {
        let (tx, rx) = sync_channel(1);
        let mut b = Batch::new(Vec::new());
        b.barrier = Some(tx);
        (b, rx)
    }
}

impl From<Vec<Delivery>> for Batch {
    fn from(items: Vec<Delivery>) -> Batch {
        Batch::new(items)
    }
}

impl std::ops::Deref for Batch {
    type Target = [Delivery];
    fn deref(&self) -> &[Delivery] {
        &self.items[..self.len]
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a Delivery;
    type IntoIter = std::slice::Iter<'a, Delivery>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl IntoIterator for Batch {
    type Item = Delivery;
    type IntoIter = std::vec::IntoIter<Delivery>;
    /// Takes the deliveries out; the batch is then not reused.
    fn into_iter(mut self) -> Self::IntoIter {
        let mut items = std::mem::take(&mut self.items);
        items.truncate(self.len);
        items.into_iter()
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(b) = self.barrier.take() {
            let _ = b.try_send(());
        }
        if let Some(home) = &self.home {
            if self.bytes <= POOL_BATCH_BYTES && !self.items.is_empty() {
                home.put(std::mem::take(&mut self.items), self.bytes);
            }
        }
    }
}

/// How many spent batches a file source keeps for reuse.
///
/// As many as the channel holds: when a slow consumer catches up, the batches that were waiting
/// in the channel come back together, and freeing them only to allocate them again at the next
/// slowdown would bring back the cost per line.
const POOL_BATCHES: usize = CHANNEL_BATCHES;
/// A spent batch whose strings hold more than this is freed rather than kept.
const POOL_BATCH_BYTES: usize = 4 << 20;
/// The memory the spent batches of one source may hold while they wait.
const POOL_BYTES: usize = 16 << 20;

/// Spent batches on their way back to the source that filled them.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    spent: Mutex<PoolInner>,
}

#[derive(Debug, Default)]
struct PoolInner {
    batches: Vec<(Vec<Delivery>, usize)>,
    /// What `batches` hold, deliveries and strings.
    bytes: usize,
}

fn held(items: &Vec<Delivery>, bytes: usize) -> usize {
    items.capacity() * std::mem::size_of::<Delivery>() + bytes
}

impl Pool {
    fn put(&self, items: Vec<Delivery>, bytes: usize) {
        let size = held(&items, bytes);
        let mut g = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        if g.batches.len() < POOL_BATCHES && g.bytes + size <= POOL_BYTES {
            g.bytes += size;
            g.batches.push((items, bytes));
        }
        // Else freed here, when `items` goes out of scope after the lock is released.
    }

    fn take(&self) -> Option<(Vec<Delivery>, usize)> {
        let mut g = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        let (items, bytes) = g.batches.pop()?;
        g.bytes -= held(&items, bytes);
        Some((items, bytes))
    }
}

/// Fills batches for one source, reusing spent ones: each [`BatchWriter::next`] hands out the
/// delivery to overwrite (a spent one when there is one, so its string keeps its allocation).
#[derive(Debug)]
pub(crate) struct BatchWriter {
    items: Vec<Delivery>,
    len: usize,
    bytes: usize,
    pool: Arc<Pool>,
    run_ends: Vec<u32>,
}

impl BatchWriter {
    pub fn new() -> BatchWriter {
        BatchWriter {
            items: Vec::new(),
            len: 0,
            bytes: 0,
            pool: Arc::new(Pool::default()),
            run_ends: Vec::new(),
        }
    }

    /// The next delivery starts another run (another file, or generation of it).
    pub fn end_run(&mut self) {
        if self.len > 0 {
            self.run_ends.push(self.len as u32 - 1);
        }
    }

    /// How many deliveries the batch being filled holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The next delivery: a spent one to overwrite (every field of it), or `fresh()`.
    #[inline]
    pub fn next(&mut self, fresh: impl FnOnce() -> Delivery) -> &mut Delivery {
        if self.len == self.items.len() {
            if self.len == 0 {
                if let Some((items, bytes)) = self.pool.take() {
                    self.items = items;
                    self.bytes = bytes;
                    return self.next(fresh);
                }
            }
            self.items.push(fresh());
        }
        self.len += 1;
        &mut self.items[self.len - 1]
    }

    /// Counts `n` more bytes held by the strings (those a written delivery's string grew by).
    pub fn grew(&mut self, n: usize) {
        self.bytes += n;
    }

    /// The filled batch, if any; the writer starts a new one.
    pub fn take(&mut self) -> Option<Batch> {
        if self.len == 0 {
            return None;
        }
        self.end_run();
        let b = Batch {
            items: std::mem::take(&mut self.items),
            len: std::mem::take(&mut self.len),
            bytes: std::mem::take(&mut self.bytes),
            home: Some(self.pool.clone()),
            run_ends: std::mem::take(&mut self.run_ends),
            barrier: None,
        };
        Some(b)
    }
}

/// A file's identity: where it lives and what it starts with, so that a renamed, replaced or
/// truncated file is told apart from the one whose offset we saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    /// How many leading bytes `head_hash` covers (up to [`file_tail::HEAD_BYTES`]).
    pub head_len: u32,
    pub head_hash: u64,
}

/// The acknowledged position of one tracked file.
#[derive(Debug, Clone)]
pub(crate) struct FileMark {
    pub identity: FileIdentity,
    pub path: String,
    pub generation: u32,
    pub offset: u64,
    /// The file is no longer followed: forget it once saved.
    pub retired: bool,
}

#[derive(Debug, Default)]
pub(crate) struct LedgerInner {
    pub files: HashMap<u32, FileMark>,
    pub cursor: Option<Arc<str>>,
    pub dirty: bool,
    /// Saved rows of files not in `files` are to be deleted at the next save.
    pub prune_pending: bool,
}

/// The acknowledged positions of one source, shared by its reader (which registers files), the
/// consumer (which acknowledges) and the checkpoint thread (which saves).
#[derive(Debug)]
pub struct Ledger {
    /// The key the source's rows are stored under (its configured path, or a journald description).
    pub key: String,
    inner: Mutex<LedgerInner>,
}

impl Ledger {
    pub fn new(key: String) -> Ledger {
        Ledger {
            key,
            // Dirty from the start: the first checkpoint records that the source has run.
            inner: Mutex::new(LedgerInner {
                dirty: true,
                ..LedgerInner::default()
            }),
        }
    }

    /// The source has opened every file that exists now: saved rows of other files can go.
    pub fn initial_scan_done(&self) {
        let mut g = self.lock();
        g.prune_pending = true;
        g.dirty = true;
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, LedgerInner> {
        // A panic elsewhere while holding the lock leaves plain data behind: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts (or restarts, after a truncation) following a file at `offset`; saved at the next
    /// checkpoint even if nothing is read, so that a restart knows the file.
    pub fn register(
        &self,
        slot: u32,
        identity: FileIdentity,
        path: String,
        generation: u32,
        offset: u64,
    ) {
        let mut g = self.lock();
        g.files.insert(
            slot,
            FileMark {
                identity,
                path,
                generation,
                offset,
                retired: false,
            },
        );
        g.dirty = true;
    }

    /// The file grew past the bytes its identity hash covered: a longer head identifies it better.
    pub fn update_head(&self, slot: u32, head_len: u32, head_hash: u64) {
        let mut g = self.lock();
        if let Some(m) = g.files.get_mut(&slot) {
            m.identity.head_len = head_len;
            m.identity.head_hash = head_hash;
            g.dirty = true;
        }
    }

    /// The file is no longer followed; its last acknowledged position is still saved once.
    pub fn retire(&self, slot: u32) {
        let mut g = self.lock();
        if let Some(m) = g.files.get_mut(&slot) {
            m.retired = true;
            g.dirty = true;
        }
    }

    fn ack_file(&self, slot: u32, generation: u32, offset: u64) {
        let mut g = self.lock();
        if let Some(m) = g.files.get_mut(&slot) {
            // An acknowledgement from before a truncation must not move the new generation.
            if m.generation == generation && offset >= m.offset {
                m.offset = offset;
                g.dirty = true;
            }
        }
    }

    fn ack_cursor(&self, cursor: &Arc<str>) {
        let mut g = self.lock();
        g.cursor = Some(cursor.clone());
        g.dirty = true;
    }
}

/// Hands acknowledged positions back to the sources' ledgers. Cheap to clone.
///
/// Ledgers are found by the source index positions carry; indexes are never reused, so that an
/// acknowledgement for a source removed by a reload finds nothing and is ignored.
#[derive(Debug, Clone, Default)]
pub struct Acker {
    ledgers: Arc<RwLock<Vec<Option<Arc<Ledger>>>>>,
}

impl Acker {
    #[cfg(test)]
    fn with(ledgers: Vec<Arc<Ledger>>) -> Acker {
        Acker {
            ledgers: Arc::new(RwLock::new(ledgers.into_iter().map(Some).collect())),
        }
    }

    fn with_ledger(&self, source: u32, f: impl FnOnce(&Ledger)) {
        let g = self.ledgers.read().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(l)) = g.get(source as usize) {
            f(l);
        }
    }

    /// Makes `ledger` the one of source `index` (`None`: the source is gone).
    fn set(&self, index: u32, ledger: Option<Arc<Ledger>>) {
        let mut g = self.ledgers.write().unwrap_or_else(|e| e.into_inner());
        let i = index as usize;
        if g.len() <= i {
            g.resize(i + 1, None);
        }
        g[i] = ledger;
    }

    /// The ledgers of the running sources.
    fn live(&self) -> Vec<Arc<Ledger>> {
        let g = self.ledgers.read().unwrap_or_else(|e| e.into_inner());
        g.iter().flatten().cloned().collect()
    }

    /// Acknowledges one position: every event of its source up to it has been handed on.
    pub fn ack(&self, p: &Position) {
        match p {
            Position::None => {}
            Position::File {
                source,
                slot,
                generation,
                offset,
            } => self.with_ledger(*source, |l| l.ack_file(*slot, *generation, *offset)),
            Position::Cursor { source, cursor } => {
                self.with_ledger(*source, |l| l.ack_cursor(cursor))
            }
        }
    }

    /// Acknowledges a batch taken in order, like [`Acker::ack_all`], looking only at the last
    /// delivery of each run where the source recorded them (the consumer then does not touch the
    /// other deliveries, which the source fills again once the batch is back).
    pub fn ack_batch(&self, batch: &Batch) {
        if batch.run_ends.is_empty() {
            return self.ack_all(batch);
        }
        for &i in &batch.run_ends {
            if let Some(d) = batch.get(i as usize) {
                self.ack(&d.position);
            }
        }
    }

    /// Acknowledges a run of deliveries taken in order: only the last position of each run of the
    /// same file or source is written, which keeps the cost per event low.
    pub fn ack_all<'a>(&self, deliveries: impl IntoIterator<Item = &'a Delivery>) {
        let mut pending: Option<&Position> = None;
        for d in deliveries {
            if let Some(p) = pending {
                if !same_stream(p, &d.position) {
                    self.ack(p);
                }
            }
            pending = Some(&d.position);
        }
        if let Some(p) = pending {
            self.ack(p);
        }
    }
}

fn same_stream(a: &Position, b: &Position) -> bool {
    match (a, b) {
        (
            Position::File {
                source: s1,
                slot: f1,
                generation: g1,
                ..
            },
            Position::File {
                source: s2,
                slot: f2,
                generation: g2,
                ..
            },
        ) => s1 == s2 && f1 == f2 && g1 == g2,
        (Position::Cursor { source: s1, .. }, Position::Cursor { source: s2, .. }) => s1 == s2,
        (Position::None, Position::None) => true,
        _ => false,
    }
}

/// What one source has handed on, and how much of it it had to alter (for metrics and summaries).
#[derive(Debug, Default)]
pub struct Counters {
    pub events: AtomicU64,
    /// Lines cut at `max_line`.
    pub truncated: AtomicU64,
    /// Lines with invalid UTF-8 replaced.
    pub lossy_utf8: AtomicU64,
}

impl Counters {
    /// Counts a batch about to be sent.
    pub fn count(&self, batch: &[Delivery]) {
        let (mut t, mut l) = (0, 0);
        for d in batch {
            t += u64::from(d.event.flags.truncated);
            l += u64::from(d.event.flags.lossy_utf8);
        }
        self.add(batch.len() as u64, t, l);
    }

    /// Counts `events` about to be sent, of which `truncated` were cut and `lossy` had invalid
    /// UTF-8.
    pub fn add(&self, events: u64, truncated: u64, lossy: u64) {
        self.events.fetch_add(events, Ordering::Relaxed);
        if truncated > 0 {
            self.truncated.fetch_add(truncated, Ordering::Relaxed);
        }
        if lossy > 0 {
            self.lossy_utf8.fetch_add(lossy, Ordering::Relaxed);
        }
    }
}

/// How the sources run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Read what is there now and stop (files to their end, the journal without following, each
    /// command once) instead of following.
    pub once: bool,
    /// Find changes to files by polling only, without inotify (file systems where inotify sees
    /// nothing, such as NFS or some container mounts).
    pub poll: bool,
}

/// What every source needs to build its events.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The source's index, as [`Position`]s name it.
    pub index: u32,
    pub config: LogConfig,
    pub host: Arc<str>,
    pub location: Arc<str>,
    pub ledger: Arc<Ledger>,
    pub tx: SyncSender<Batch>,
    pub options: RunOptions,
    /// Set when the sources are to stop.
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
}

impl SourceContext {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Counts and sends a batch; false when the consumer is gone.
    pub fn send(&self, batch: Vec<Delivery>) -> bool {
        self.counters.count(&batch);
        self.tx.send(Batch::new(batch)).is_ok()
    }
}

/// Per source (in configuration order): its location and counters, for the status and metrics;
/// a reload replaces the list.
pub type SourceCounters = Arc<Mutex<Vec<(Arc<str>, Arc<Counters>)>>>;

/// How long a reload waits for the consumer to acknowledge what removed sources had sent.
pub const RELOAD_DRAIN: Duration = Duration::from_secs(30);

/// One running source.
struct Source {
    index: u32,
    config: LogConfig,
    location: Arc<str>,
    counters: Arc<Counters>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The running sources: take batches from `rx`, acknowledge through `acker`, then [`Running::finish`].
pub struct Running {
    pub rx: Receiver<Batch>,
    pub acker: Acker,
    /// Per source (in configuration order): its location and counters.
    pub counters: SourceCounters,
    sources: Vec<Source>,
    next_index: u32,
    /// Kept while sources may still be started (not with `once`, nor once stopping), so that
    /// the channel closes when the last source ends.
    tx: Option<SyncSender<Batch>>,
    host: Arc<str>,
    options: RunOptions,
    checkpoint: Option<JoinHandle<()>>,
    checkpoint_stop: Arc<AtomicBool>,
    store: Arc<Mutex<positions::Store>>,
}

/// What a reload does to the running sources, by index: into the old list for `keep` and `stop`,
/// into the new configuration for `start`; `keep` pairs (old, new).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    pub keep: Vec<(usize, usize)>,
    pub stop: Vec<usize>,
    pub start: Vec<usize>,
}

impl ReloadPlan {
    /// Compares the running sources' settings with the new ones: a source whose settings are
    /// identical keeps running untouched; any other difference stops the old source and starts
    /// the new one (which resumes from the positions the old one saved, when its key is the same).
    pub fn new(old: &[LogConfig], new: &[LogConfig]) -> ReloadPlan {
        let mut taken = vec![false; old.len()];
        let mut plan = ReloadPlan::default();
        for (j, n) in new.iter().enumerate() {
            match (0..old.len()).find(|&i| !taken[i] && old[i] == *n) {
                Some(i) => {
                    taken[i] = true;
                    plan.keep.push((i, j));
                }
                None => plan.start.push(j),
            }
        }
        plan.stop = (0..old.len()).filter(|&i| !taken[i]).collect();
        plan
    }

    pub fn is_empty(&self) -> bool {
        self.stop.is_empty() && self.start.is_empty()
    }
}

/// Sends an empty batch behind what is in the channel and waits, up to `deadline`, until the
/// consumer has handled it (and so everything before it).
fn barrier(tx: &SyncSender<Batch>, deadline: std::time::Instant) -> bool {
    let (mut b, rx) = Batch::barrier();
    loop {
        match tx.try_send(b) {
            Ok(()) => break,
            Err(std::sync::mpsc::TrySendError::Full(back)) => b = back,
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return false,
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    !matches!(rx.recv_timeout(left), Err(RecvTimeoutError::Timeout))
}

/// What [`Running::reload`] did: the locations of the sources stopped and started.
#[derive(Debug, Default)]
pub struct Reloaded {
    pub kept: usize,
    pub stopped: Vec<String>,
    pub started: Vec<String>,
}

impl Running {
    /// Writes the acknowledged positions now.
    pub fn save(&self) {
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        s.save_all(&self.acker.live());
    }

    /// Per source (in configuration order): its location and counters, now.
    pub fn counters(&self) -> Vec<(Arc<str>, Arc<Counters>)> {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks the sources to stop without waiting: their threads end and the channel closes once
    /// the consumer has taken what they were sending. Call [`Running::finish`] after the last ack.
    pub fn stop(&mut self) {
        for s in &self.sources {
            s.stop.store(true, Ordering::Relaxed);
        }
        self.tx = None;
    }

    /// Asks the sources to stop, and saves the acknowledged positions a last time.
    pub fn finish(mut self) {
        self.stop();
        self.checkpoint_stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.checkpoint.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        self.save();
    }

    /// Applies the `[[logs]]` of a new configuration while the consumer keeps taking batches:
    /// sources whose settings did not change go on untouched; the others stop, the consumer
    /// acknowledges what they had sent (up to [`RELOAD_DRAIN`]), their positions are saved;
    /// then the new sources start, from their saved positions when they ran before (a file
    /// source that never ran starts where its `start` says, as at the agent's start).
    ///
    /// Must not be called from the consumer's thread (it waits for the consumer).
    pub fn reload(&mut self, new: &[LogConfig]) -> Result<Reloaded, SourceError> {
        let old: Vec<LogConfig> = self.sources.iter().map(|s| s.config.clone()).collect();
        let plan = ReloadPlan::new(&old, new);
        let mut done = Reloaded {
            kept: plan.keep.len(),
            ..Reloaded::default()
        };
        if plan.is_empty() {
            return Ok(done);
        }
        for &i in &plan.stop {
            self.sources[i].stop.store(true, Ordering::Relaxed);
        }
        // Bounded waits: a consumer stuck on a full disk must not hold the agent's main loop.
        let deadline = std::time::Instant::now() + RELOAD_DRAIN;
        let mut ended = true;
        for &i in &plan.stop {
            if let Some(h) = self.sources[i].thread.take() {
                while !h.is_finished() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                ended &= h.is_finished();
                if h.is_finished() {
                    let _ = h.join();
                }
            }
        }
        if !plan.stop.is_empty() {
            // Everything the stopped sources sent is in the channel ahead of the barrier.
            let drained = ended && self.tx.as_ref().is_some_and(|tx| barrier(tx, deadline));
            if !drained {
                tracing::warn!(
                    "the analysis did not catch up with the removed log sources in time: their \
                     saved positions may lag (lines read again if they come back)"
                );
            }
        }
        let mut old_sources: Vec<Option<Source>> = std::mem::take(&mut self.sources)
            .into_iter()
            .map(Some)
            .collect();
        {
            let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            let mut gone = Vec::new();
            for &i in &plan.stop {
                if let Some(s) = old_sources[i].take() {
                    self.acker.set(s.index, None);
                    done.stopped.push(s.location.to_string());
                    gone.push(s.ledger);
                }
            }
            store.save_all(&gone);
        }
        let mut next: Vec<Option<Source>> = (0..new.len()).map(|_| None).collect();
        for &(i, j) in &plan.keep {
            next[j] = old_sources[i].take();
        }
        let mut result = Ok(());
        for &j in &plan.start {
            match self.start_source(&new[j]) {
                Ok(s) => {
                    done.started.push(s.location.to_string());
                    next[j] = Some(s);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.sources = next.into_iter().flatten().collect();
        self.publish_counters();
        result.map(|()| done)
    }

    fn publish_counters(&self) {
        let list = self
            .sources
            .iter()
            .map(|s| (s.location.clone(), s.counters.clone()))
            .collect();
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = list;
    }

    /// Starts the thread of one source, its ledger registered with the acker.
    fn start_source(&mut self, lc: &LogConfig) -> Result<Source, SourceError> {
        let index = self.next_index;
        self.next_index += 1;
        let location: Arc<str> = Arc::from(crate::diag::escape_control(&lc.location()).as_str());
        let Some(tx) = self.tx.clone() else {
            return Err(SourceError::Thread {
                location: location.to_string(),
                source: std::io::Error::other("the sources are stopping"),
            });
        };
        let ledger = Arc::new(Ledger::new(source_key(lc)));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = SourceContext {
            index,
            config: lc.clone(),
            host: self.host.clone(),
            location: location.clone(),
            counters: counters.clone(),
            ledger: ledger.clone(),
            tx,
            options: self.options,
            stop: stop.clone(),
        };
        self.acker.set(index, Some(ledger.clone()));
        let name = format!("log {index}");
        let result = {
            let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            match ctx.config.format {
                LogFormat::Journald => {
                    let cursor = store.load_cursor(&ctx.ledger.key);
                    drop(store);
                    std::thread::Builder::new()
                        .name(name)
                        .spawn(move || journald::run(ctx, cursor))
                }
                LogFormat::Command => std::thread::Builder::new()
                    .name(name)
                    .spawn(move || command::run(ctx)),
                _ => {
                    let known = store.load_files(&ctx.ledger.key);
                    drop(store);
                    std::thread::Builder::new()
                        .name(name)
                        .spawn(move || file_tail::run(ctx, known))
                }
            }
        };
        match result {
            Ok(h) => Ok(Source {
                index,
                config: lc.clone(),
                location,
                counters,
                ledger,
                stop,
                thread: Some(h),
            }),
            Err(source) => {
                self.acker.set(index, None);
                Err(SourceError::Thread {
                    location: location.to_string(),
                    source,
                })
            }
        }
    }
}

/// The key a source's positions are stored under: stable across restarts and config reordering.
pub fn source_key(c: &LogConfig) -> String {
    match c.format {
        LogFormat::Journald => {
            let mut k = String::from("journald");
            if let Some(d) = &c.journal_dir {
                k.push_str(&format!(" dir={}", d.display()));
            }
            for u in &c.units {
                k.push_str(&format!(" unit={u}"));
            }
            for i in &c.identifiers {
                k.push_str(&format!(" id={i}"));
            }
            k
        }
        LogFormat::Command => format!("command {}", c.command.join(" ")),
        _ => c.path.clone().unwrap_or_default(),
    }
}

/// Starts one thread per configured log source and the checkpoint thread.
pub fn spawn(config: &Config, state: &State, options: RunOptions) -> Result<Running, SourceError> {
    let (tx, rx) = sync_channel::<Batch>(CHANNEL_BATCHES);
    let store = positions::Store::new(state.connect()?, state.db_path.clone());
    let mut running = Running {
        rx,
        acker: Acker::default(),
        counters: SourceCounters::default(),
        sources: Vec::new(),
        next_index: 0,
        tx: Some(tx),
        host: Arc::from(config.agent.hostname.as_str()),
        options,
        checkpoint: None,
        checkpoint_stop: Arc::new(AtomicBool::new(false)),
        store: Arc::new(Mutex::new(store)),
    };
    for lc in &config.logs {
        match running.start_source(lc) {
            Ok(s) => running.sources.push(s),
            Err(e) => {
                running.stop();
                return Err(e);
            }
        }
    }
    running.publish_counters();
    if options.once {
        // The channel closes once every source has read what there is.
        running.tx = None;
    }
    let checkpoint = {
        let store = running.store.clone();
        let acker = running.acker.clone();
        let cs = running.checkpoint_stop.clone();
        std::thread::Builder::new()
            .name("log positions".into())
            .spawn(move || {
                while !cs.load(Ordering::Relaxed) {
                    std::thread::park_timeout(CHECKPOINT_EVERY);
                    let ledgers = acker.live();
                    let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
                    s.save_all(&ledgers);
                }
            })
            .map_err(|source| SourceError::Thread {
                location: "positions".into(),
                source,
            })
    };
    match checkpoint {
        Ok(h) => running.checkpoint = Some(h),
        Err(e) => {
            running.stop();
            return Err(e);
        }
    }
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> FileIdentity {
        FileIdentity {
            dev: 1,
            ino: 2,
            head_len: 0,
            head_hash: 0,
        }
    }

    #[test]
    fn acks_move_forward_within_a_generation_only() {
        let l = Arc::new(Ledger::new("k".into()));
        let acker = Acker::with(vec![l.clone()]);
        l.register(0, id(), "/x".into(), 0, 10);
        let pos = |generation, offset| Position::File {
            source: 0,
            slot: 0,
            generation,
            offset,
        };
        acker.ack(&pos(0, 50));
        assert_eq!(l.lock().files[&0].offset, 50);
        // Truncated: generation 1 starts at 0; a late ack of generation 0 is ignored.
        l.register(0, id(), "/x".into(), 1, 0);
        acker.ack(&pos(0, 60));
        assert_eq!(l.lock().files[&0].offset, 0);
        acker.ack(&pos(1, 7));
        assert_eq!(l.lock().files[&0].offset, 7);
    }

    #[test]
    fn ack_all_keeps_the_last_of_each_run() {
        let l = Arc::new(Ledger::new("k".into()));
        let acker = Acker::with(vec![l.clone()]);
        l.register(0, id(), "/x".into(), 0, 0);
        l.register(1, id(), "/y".into(), 0, 0);
        let ev = Event {
            time: std::time::SystemTime::now(),
            host: Arc::from("h"),
            location: Arc::from("l"),
            format: LogFormat::Plain,
            full_log: String::new(),
            flags: Default::default(),
            fim: None,
        };
        let d = |slot, offset| Delivery {
            event: ev.clone(),
            position: Position::File {
                source: 0,
                slot,
                generation: 0,
                offset,
            },
        };
        acker.ack_all(&[d(0, 5), d(0, 9), d(1, 3), d(0, 12)]);
        assert_eq!(l.lock().files[&0].offset, 12);
        assert_eq!(l.lock().files[&1].offset, 3);
    }

    fn delivery(text: &str) -> Delivery {
        Delivery {
            event: Event {
                time: std::time::SystemTime::now(),
                host: Arc::from("h"),
                location: Arc::from("l"),
                format: LogFormat::Plain,
                full_log: text.to_string(),
                flags: Default::default(),
                fim: None,
            },
            position: Position::None,
        }
    }

    #[test]
    fn spent_batches_come_back_to_be_filled_again() {
        let mut w = BatchWriter::new();
        for t in ["a", "b", "c"] {
            w.next(|| delivery(t));
        }
        w.end_run();
        w.next(|| delivery("d"));
        let b = w.take().unwrap();
        assert!(w.take().is_none());
        assert_eq!(b.len(), 4);
        assert_eq!(b.run_ends, [2, 3]);
        let first = b[0].event.full_log.as_ptr();
        drop(b);
        // The spent batch is handed out again, its deliveries (and strings) in place.
        let d = w.next(|| panic!("a spent delivery was expected"));
        assert_eq!(d.event.full_log, "a");
        assert_eq!(d.event.full_log.as_ptr(), first);
        let b = w.take().unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b.iter().count(), 1);
        assert_eq!(b.into_iter().count(), 1);
        // A batch holding much memory is not kept.
        w.next(|| delivery("x"));
        w.grew(POOL_BATCH_BYTES + 1);
        drop(w.take());
        assert!(w.pool.take().is_none());
    }

    fn config_for(dir: &std::path::Path, log: &std::path::Path) -> Config {
        let text = format!(
            "[agent]\nstate_dir = \"{}\"\nhostname = \"t\"\n[[logs]]\npath = \"{}\"\nformat = \"plain\"\nstart = \"beginning\"\n",
            dir.join("state").display(),
            log.display()
        );
        crate::config::parse(&dir.join("c.toml"), &text).unwrap()
    }

    /// Reads the file once, acknowledging only the first `ack` events; returns what was read.
    fn read_once(cfg: &Config, ack: usize) -> Vec<String> {
        let state = State::open(&cfg.agent.state_dir).unwrap();
        let running = spawn(
            cfg,
            &state,
            RunOptions {
                once: true,
                poll: false,
            },
        )
        .unwrap();
        let mut got = Vec::new();
        for batch in running.rx.iter() {
            for d in batch {
                if got.len() < ack {
                    running.acker.ack(&d.position);
                }
                got.push(d.event.full_log);
            }
        }
        running.finish();
        got
    }

    #[test]
    fn batches_of_long_lines_are_bounded_in_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("a.log");
        // 300 lines of 60 KB: 18 MB, far below the count per batch but past its bytes.
        let line = "x".repeat(60_000);
        std::fs::write(&log, format!("{line}\n").repeat(300)).unwrap();
        let cfg = config_for(tmp.path(), &log);
        let state = State::open(&cfg.agent.state_dir).unwrap();
        let opts = RunOptions {
            once: true,
            poll: false,
        };
        let running = spawn(&cfg, &state, opts).unwrap();
        let (mut lines, mut batches) = (0, 0);
        for batch in running.rx.iter() {
            let bytes: usize = batch.iter().map(|d| d.event.full_log.len()).sum();
            // The bound, plus what one read block can add past it.
            assert!(bytes <= (4 << 20) + (256 << 10) + 60_000, "{bytes} bytes");
            lines += batch.len();
            batches += 1;
        }
        running.finish();
        assert_eq!(lines, 300);
        assert!(batches >= 5, "{batches} batches");
    }

    #[test]
    fn positions_advance_only_past_acknowledged_events() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("a.log");
        std::fs::write(&log, "l1\nl2\nl3\nl4\n").unwrap();
        let cfg = config_for(tmp.path(), &log);
        // Nothing acknowledged: everything is read again.
        assert_eq!(read_once(&cfg, 0), ["l1", "l2", "l3", "l4"]);
        // Two acknowledged: the next run starts after them.
        assert_eq!(read_once(&cfg, 2), ["l1", "l2", "l3", "l4"]);
        assert_eq!(read_once(&cfg, 99), ["l3", "l4"]);
        assert!(read_once(&cfg, 99).is_empty());
        // Rewritten (another identity at the same path would be too): read from the start.
        std::fs::write(&log, "n1\n").unwrap();
        assert_eq!(read_once(&cfg, 99), ["n1"]);
        // Rotated while stopped: the rest of the old file, then all of the new one (unknown).
        std::fs::write(&log, "n1\nn2\n").unwrap();
        std::fs::rename(&log, tmp.path().join("a.log.1")).unwrap();
        std::fs::write(&log, "r1\nr2\n").unwrap();
        assert_eq!(read_once(&cfg, 99), ["n2", "r1", "r2"]);
        assert!(read_once(&cfg, 99).is_empty());
    }

    #[test]
    fn a_file_saved_empty_is_finished_only_under_a_rotated_form_of_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("a.log");
        std::fs::write(&log, "").unwrap();
        let cfg = config_for(tmp.path(), &log);
        assert!(read_once(&cfg, 99).is_empty());
        std::fs::write(&log, "e1\n").unwrap();
        std::fs::rename(&log, tmp.path().join("a.log-20261122")).unwrap();
        std::fs::write(&log, "").unwrap();
        assert_eq!(read_once(&cfg, 99), ["e1"]);
        // Nothing tells this one from an unrelated file that took over its inode.
        std::fs::write(&log, "u1\n").unwrap();
        std::fs::rename(&log, tmp.path().join("unrelated.txt")).unwrap();
        std::fs::write(&log, "r1\n").unwrap();
        assert_eq!(read_once(&cfg, 99), ["r1"]);
    }

    fn log(path: &str) -> LogConfig {
        let text = format!(
            "[agent]\nstate_dir = \"/nonexistent\"\n[[logs]]\npath = \"{path}\"\nformat = \"plain\"\n"
        );
        crate::config::parse(std::path::Path::new("c.toml"), &text)
            .unwrap()
            .logs
            .remove(0)
    }

    #[test]
    fn a_reload_keeps_unchanged_sources_and_restarts_changed_ones() {
        let (a, b, c) = (log("/a"), log("/b"), log("/c"));
        let mut b2 = b.clone();
        b2.format = LogFormat::Syslog;
        let plan = ReloadPlan::new(&[a.clone(), b.clone()], &[c.clone(), a.clone(), b2]);
        assert_eq!(
            plan,
            ReloadPlan {
                keep: vec![(0, 1)],
                stop: vec![1],
                start: vec![0, 2],
            }
        );
        assert!(ReloadPlan::new(&[a.clone(), b.clone()], &[b.clone(), a.clone()]).is_empty());
        // The same source twice: each copy is matched once.
        let plan = ReloadPlan::new(&[a.clone(), a.clone()], std::slice::from_ref(&a));
        assert_eq!(plan.keep, [(0, 0)]);
        assert_eq!(plan.stop, [1]);
    }

    #[test]
    fn a_reload_stops_removed_sources_and_ignores_their_late_acks() {
        let tmp = tempfile::tempdir().unwrap();
        let (la, lb) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
        std::fs::write(&la, "a1\n").unwrap();
        std::fs::write(&lb, "b1\n").unwrap();
        let cfg = config_for(tmp.path(), &la);
        let state = State::open(&cfg.agent.state_dir).unwrap();
        let mut running = spawn(&cfg, &state, RunOptions::default()).unwrap();
        let rx = std::mem::replace(&mut running.rx, sync_channel(0).1);
        let acker = running.acker.clone();
        // The consumer: acknowledges everything, passes the text on, keeps a position of a.log.
        let (seen_tx, seen) = std::sync::mpsc::channel::<String>();
        let consumer = std::thread::spawn(move || {
            let mut first = None;
            for batch in rx.iter() {
                // Acknowledged before the text is passed on: a line the test has seen is saved
                // by `finish`.
                acker.ack_batch(&batch);
                for d in &batch {
                    let _ = seen_tx.send(d.event.full_log.clone());
                    first.get_or_insert(d.position.clone());
                }
            }
            first
        });
        let wait = |line: &str| loop {
            let got = seen.recv_timeout(Duration::from_secs(30)).unwrap();
            assert_ne!(got, "a2", "read from a removed source");
            if got == line {
                break;
            }
        };
        wait("a1");
        // b.log added (read from its start, as the config says), a.log removed.
        let mut lb_cfg = cfg.logs[0].clone();
        lb_cfg.path = Some(lb.display().to_string());
        let done = running.reload(std::slice::from_ref(&lb_cfg)).unwrap();
        assert_eq!(
            (done.kept, done.started.len(), done.stopped.len()),
            (0, 1, 1)
        );
        assert_eq!(running.counters().len(), 1);
        wait("b1");
        std::fs::write(&la, "a1\na2\n").unwrap();
        std::fs::write(&lb, "b1\nb2\n").unwrap();
        wait("b2");
        let acker = running.acker.clone();
        running.finish();
        let first = consumer.join().unwrap();
        assert!(seen.try_iter().all(|l| l != "a2"));
        // A late acknowledgement for the removed source finds nothing and does no harm.
        acker.ack(&first.unwrap());
        let live = acker.live();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].key, lb.display().to_string());
        // a.log's position was saved where its analysed lines end: a2 is read when it is back.
        let mut back = config_for(tmp.path(), &la);
        back.logs.push(lb_cfg);
        assert_eq!(read_once(&back, 99), ["a2"]);
    }

    #[test]
    fn first_start_at_end_skips_old_lines_but_remembers_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("a.log");
        std::fs::write(&log, "old\n").unwrap();
        let text = format!(
            "[agent]\nstate_dir = \"{}\"\n[[logs]]\npath = \"{}\"\nformat = \"plain\"\n",
            tmp.path().join("state").display(),
            log.display()
        );
        let cfg = crate::config::parse(&tmp.path().join("c.toml"), &text).unwrap();
        assert!(read_once(&cfg, 99).is_empty());
        std::fs::write(&log, "old\nnew\n").unwrap();
        assert_eq!(read_once(&cfg, 99), ["new"]);
    }
}
