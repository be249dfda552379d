//! File integrity monitoring: the scan that compares the configured trees against the baseline and
//! turns every difference into a [`FimChange`].
//!
//! A scan is a pipeline: the walk (`walk.rs`, a thread) lists entries in baseline key order; this
//! thread merge-joins them with the baseline read a page at a time (so memory does not grow with
//! the tree) and groups them into batches; each batch is hashed by a job on the hashing pool, over
//! all cores (`hash.rs`), several batches at once; this thread then compares each entry with its
//! row and writes the batches, in walk order, one transaction each (`baseline.rs`). Walking,
//! hashing and writing overlap. A real-time check of a few paths ([`check_paths`]) runs the same
//! steps on the calling thread.
//!
//! Single writer: every baseline write is conditional on the row being the one compared against,
//! so the scheduled scan, a real-time watch ([`check_path`]) and a `hids fim check` run by hand can
//! never report one change twice; a change seen by none of them is seen by the next.
//!
//! The configuration may change between scans: a path no longer configured has its rows dropped
//! without alerts, and a path the last complete scan did not cover (meta `roots`) is recorded
//! without "added" alerts, as at the first start.

pub mod attrs;
pub mod baseline;
pub mod cli;
pub mod diff;
pub mod hash;
pub mod report;
pub mod walk;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::config::{CheckMode, FimConfig, FimPath};
use crate::event::{display_path, ChangeKind, FileAttrs, FileType, FimChange};
use crate::state::StateError;
use crate::sys::Stat;
use attrs::Names;
use baseline::{checks_bits, is_under, Baseline, Content, ContentOp, Op, Row, Seal, Sealer};
use hash::{Outcome, Throttle};
use walk::{Node, Plan, WalkItem, WalkStats, Walker};

pub use report::{change_event, change_json, full_log, LOCATION};

/// Entries per batch (one transaction each).
const BATCH: usize = 1024;
/// Bytes to hash per batch, at most (one larger file may exceed it).
const BATCH_BYTES: u64 = 32 << 20;
/// Baseline rows read per page.
const PAGE: usize = 2048;
/// Batches being hashed or waiting to be written, at most.
const IN_FLIGHT: u64 = 4;
/// Walk entries handed over at a time.
const WALK_CHUNK: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum FimError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("database error on {}: {source}", path.display())]
    Sql {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the FIM baseline key {} is missing, so the baseline cannot be verified; run `hids fim init` to record a new baseline", path.display())]
    NoKey { path: PathBuf },
    #[error("the FIM baseline key {} is not usable: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("there is no FIM baseline in {} yet: run `hids fim init` first", path.display())]
    NoBaseline { path: PathBuf },
    #[error("cannot start the hashing threads: {0}")]
    Threads(String),
}

/// Recording a new baseline, or comparing against the existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Record every entry; report nothing.
    Init,
    /// Compare, report and update.
    Check,
}

/// How a scan runs.
#[derive(Default)]
pub struct ScanOptions<'a> {
    /// Rehash every file (`check_mode = "full"`), not only those whose metadata changed.
    pub full: bool,
    /// Caps on reading and visiting (scheduled scans).
    pub throttle: Option<&'a Throttle>,
    /// Set to stop: the batch under way is finished and written, nothing after it is looked at.
    pub stop: Option<&'a AtomicBool>,
}

/// What a scan did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub entries: u64,
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub other: u64,
    /// Files read and hashed (the others kept their hash: metadata unchanged, fast mode).
    pub hashed: u64,
    pub hashed_bytes: u64,
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    /// Rows that failed their MAC.
    pub tampered: u64,
    /// Entries that could not be read or listed (permission denied).
    pub denied: u64,
    /// Stopped before the end (signal): unvisited entries were neither compared nor reported.
    pub interrupted: bool,
    pub seconds: f64,
    /// One line per configured path with a problem (missing, unreadable parts), for the log.
    pub warnings: Vec<String>,
}

impl Summary {
    /// Added + modified + deleted.
    pub fn changes(&self) -> u64 {
        self.added + self.modified + self.deleted
    }
}

/// One entry on its way through the pipeline.
struct Item {
    key: Vec<u8>,
    node: Option<Node>,
    old: Option<Row>,
    attrs: Option<FileAttrs>,
    content: Option<Vec<u8>>,
    /// Read and hashed now (so `content` says all there is to know about a copy).
    hashed: bool,
    denied: bool,
    /// Not looked at because the scan is stopping: neither compared nor written.
    skipped: bool,
    /// The MAC of the row to write for it, computed while hashing (None: unchanged, or not known).
    seal: Option<Seal>,
    /// The hash just computed, whose hex `attrs` holds (for sealing the row).
    hash: Option<blake3::Hash>,
}

impl Item {
    /// An entry the walk met, with its baseline row if it has one.
    fn new(mut node: Node, old: Option<Row>) -> Item {
        // The key moves to the item (the node's is not looked at again).
        let key = std::mem::take(&mut node.key);
        Item {
            key,
            node: Some(node),
            old,
            attrs: None,
            content: None,
            hashed: false,
            denied: false,
            skipped: false,
            seal: None,
            hash: None,
        }
    }

    fn gone(row: Row) -> Item {
        Item {
            key: row.key.clone(),
            node: None,
            old: Some(row),
            attrs: None,
            content: None,
            hashed: false,
            denied: false,
            skipped: false,
            seal: None,
            hash: None,
        }
    }
}

/// Baseline rows in key order from `lo` (inclusive) to `hi` (exclusive), a page at a time.
struct Cursor {
    lo: Vec<u8>,
    hi: Option<Vec<u8>>,
    after: Option<Vec<u8>>,
    buf: std::collections::VecDeque<Row>,
    done: bool,
    /// Whether the rows' MACs are checked as they are read (else by whoever takes them: see
    /// [`Sealer::check`]).
    checked: bool,
}

impl Cursor {
    fn new(lo: Vec<u8>, hi: Option<Vec<u8>>) -> Cursor {
        Cursor {
            lo,
            hi,
            after: None,
            buf: Default::default(),
            done: false,
            checked: true,
        }
    }

    /// Over the whole baseline, leaving the MACs to be checked on the hashing threads.
    fn unchecked() -> Cursor {
        Cursor {
            checked: false,
            ..Cursor::new(Vec::new(), None)
        }
    }

    fn peek(&mut self, b: &Baseline) -> Result<Option<&Row>, FimError> {
        if self.buf.is_empty() && !self.done {
            let (lo, after, hi) = (&self.lo, self.after.as_deref(), self.hi.as_deref());
            let page = b.read_page(lo, after, hi, PAGE, self.checked)?;
            if page.len() < PAGE {
                self.done = true;
            }
            if let Some(last) = page.last() {
                self.after = Some(last.key.clone());
            }
            self.buf.extend(page);
        }
        Ok(self.buf.front())
    }

    fn pop(&mut self) -> Option<Row> {
        self.buf.pop_front()
    }
}

/// What hashing needs, shared by the hashing threads.
struct Ctx<'a> {
    paths: &'a [FimPath],
    names: Arc<Names>,
    full: bool,
    throttle: Option<&'a Throttle>,
    stop: Option<&'a AtomicBool>,
    /// Seals the rows to write, so that the writer does not have to.
    sealer: Sealer,
}

/// Whether the metadata that fast mode trusts is unchanged (and the old hash usable).
fn reusable_hash(old: &Row, new: &FileAttrs) -> bool {
    let o = &old.attrs;
    old.mac_ok
        && o.hash.is_some()
        && o.hash_skipped.is_none()
        && new.size.is_some()
        && new.mtime.is_some()
        && new.ctime.is_some()
        && new.inode.is_some()
        && new.device.is_some()
        && o.size == new.size
        && o.mtime == new.mtime
        && o.ctime == new.ctime
        && o.inode == new.inode
        && o.device == new.device
        && o.file_type.is_some_and(|t| t == FileType::File)
}

/// Whether preparing this entry will read the file (fast mode may reuse the recorded hash).
fn needs_reading(item: &Item, ctx: &Ctx<'_>) -> bool {
    let Some(node) = &item.node else {
        return false;
    };
    let fp = &ctx.paths[node.root];
    // A file the walk did not stat is read.
    let Some(m) = &node.meta else {
        return true;
    };
    if !m.is_file() || !fp.checks.hash || m.size() > fp.max_hashed_size {
        return false;
    }
    if ctx.full {
        return true;
    }
    !item.old.as_ref().is_some_and(|o| {
        let a = &o.attrs;
        o.mac_ok
            && a.hash.is_some()
            && a.hash_skipped.is_none()
            && a.size == Some(m.size())
            && a.mtime == Some(m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec())
            && a.ctime == Some(m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec())
            && a.inode == Some(m.ino())
            && a.device == Some(m.dev())
    })
}

/// Bytes that hashing this entry is expected to read (for sizing batches).
fn expected_read(node: &Node, old: Option<&Row>, paths: &[FimPath], full: bool) -> u64 {
    let fp = &paths[node.root];
    // Not known before the file is opened.
    let Some(m) = &node.meta else {
        return 0;
    };
    if !m.is_file() || !fp.checks.hash || m.size() > fp.max_hashed_size {
        return 0;
    }
    let same = old.is_some_and(|o| {
        o.attrs.size == Some(m.size()) && o.attrs.mtime.is_some() && o.attrs.inode == Some(m.ino())
    });
    if full || !same {
        m.size()
    } else {
        0
    }
}

/// The hashing stage for one entry: its attributes, hash and (for diffs) content, and the MAC
/// of the row that will be written for it, unless it is the row recorded already.
fn prepare(item: &mut Item, ctx: &Ctx<'_>) {
    inspect(item, ctx);
    let (Some(node), Some(new)) = (&item.node, &item.attrs) else {
        return;
    };
    let bits = checks_bits(&ctx.paths[node.root].checks);
    // As `Writer::finish` decides it: an unchanged row is not written (or rarely: then it is
    // sealed when written).
    let unchanged = item
        .old
        .as_ref()
        .is_some_and(|o| o.mac_ok && o.checks == bits && o.attrs == *new);
    if !unchanged {
        item.seal = Some(
            ctx.sealer
                .seal_hashed(&item.key, bits, new, item.hash.as_ref()),
        );
    }
}

/// Looks at one entry: its attributes, and its hash and content when it is read.
fn inspect(item: &mut Item, ctx: &Ctx<'_>) {
    if ctx.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
        item.skipped = true;
        return;
    }
    let Some(node) = &item.node else {
        return;
    };
    let fp = &ctx.paths[node.root];
    let Some(walk_meta) = &node.meta else {
        // A regular file the walk did not stat: opened, fstat-ed and read in one go.
        let outcome = hash::hash_at(
            node.dir.as_deref(),
            &node.path,
            false,
            content_cap(fp, &node.path),
            fp.max_hashed_size,
            ctx.throttle,
            ctx.stop,
        );
        settle(item, ctx, None, outcome);
        return;
    };
    if !walk_meta.is_file() || !fp.checks.hash {
        item.attrs = Some(attrs::from_metadata(
            walk_meta,
            &fp.checks,
            &ctx.names,
            node.link_target.clone(),
        ));
        return;
    }
    if walk_meta.size() > fp.max_hashed_size {
        let outcome = Outcome::TooLarge(*walk_meta);
        return settle(item, ctx, None, outcome);
    }
    let a = attrs::from_metadata(walk_meta, &fp.checks, &ctx.names, None);
    if let Some(old) = item
        .old
        .as_ref()
        .filter(|o| !ctx.full && reusable_hash(o, &a))
    {
        let hash = old.attrs.hash.clone();
        item.attrs = Some(FileAttrs { hash, ..a });
        return;
    }
    let outcome = hash::hash_at(
        node.dir.as_deref(),
        &node.path,
        fp.follow_symlinks,
        content_cap(fp, &node.path),
        u64::MAX,
        ctx.throttle,
        ctx.stop,
    );
    settle(item, ctx, Some(a), outcome);
}

/// How much of a file's content to keep for diffs (0: none).
fn content_cap(fp: &FimPath, path: &Path) -> u64 {
    if fp.report_changes && !fp.nodiff.covers(path) {
        diff::CONTENT_CAP
    } else {
        0
    }
}

/// Records in `item` what hashing its file found. `walked` holds the attributes from the walk's
/// stat, when it made one: they are kept when the opened file's fstat agrees with it.
fn settle(item: &mut Item, ctx: &Ctx<'_>, walked: Option<FileAttrs>, outcome: Outcome) {
    let Some(node) = item.node.as_mut() else {
        return;
    };
    let fp = &ctx.paths[node.root];
    let from =
        |m: &Stat, target: Option<String>| attrs::from_metadata(m, &fp.checks, &ctx.names, target);
    // Keep the last known hash, so that a change made meanwhile is still seen once the file can
    // be read again.
    let carried = || {
        item.old
            .as_ref()
            .filter(|o| o.mac_ok)
            .and_then(|o| o.attrs.hash.clone())
    };
    // Problems reading a file the walk did not stat: its attributes from an lstat now.
    let lstat = |node: &Node| match &node.meta {
        Some(m) => Some(*m),
        None => std::fs::symlink_metadata(&node.path).ok().map(Stat::from),
    };
    let (a, meta) = match outcome {
        Outcome::Hashed {
            meta,
            hash,
            content,
        } => {
            // The walk's lstat and the open file's fstat agree unless the file changed in
            // between: then its attributes are those of what was read.
            let mut a = match (walked, &node.meta) {
                (Some(a), Some(w)) if attrs::same_attrs(w, &meta) => a,
                _ => from(&meta, None),
            };
            // (Copied from the hex as it is: `to_string` would format it.)
            a.hash = Some(String::from(hash.to_hex().as_str()));
            item.hash = Some(hash);
            item.content = content;
            item.hashed = true;
            (a, meta)
        }
        Outcome::TooLarge(meta) => {
            let mut a = walked.unwrap_or_else(|| from(&meta, None));
            a.hash_skipped = Some(format!(
                "larger than max_hashed_size ({} bytes)",
                fp.max_hashed_size
            ));
            (a, meta)
        }
        Outcome::NotRegular(meta) => {
            let target = if meta.is_symlink() {
                std::fs::read_link(&node.path)
                    .ok()
                    .map(|t| display_path(&t).0)
            } else {
                None
            };
            (from(&meta, target), meta)
        }
        Outcome::Vanished => {
            item.node = None;
            return;
        }
        Outcome::Stopped => {
            item.skipped = true;
            return;
        }
        Outcome::Unsettled(meta) => {
            let mut a = from(&meta, None);
            a.hash = carried();
            a.hash_skipped = Some("changed while being read; hashed again next time".into());
            (a, meta)
        }
        Outcome::Denied | Outcome::Failed(_) => {
            let why = match &outcome {
                Outcome::Failed(e) => format!("read error: {e}"),
                _ => {
                    item.denied = true;
                    "permission denied".to_string()
                }
            };
            let Some(meta) = lstat(node) else {
                item.node = None;
                return;
            };
            let mut a = walked.unwrap_or_else(|| from(&meta, None));
            a.hash = carried();
            a.hash_skipped = Some(why);
            (a, meta)
        }
    };
    node.meta = Some(meta);
    item.attrs = Some(a);
}

/// The diff (or the note in its place) for a content change of `item`.
fn diff_for(
    b: &Baseline,
    item: &Item,
    fp: &FimPath,
    path: &Path,
) -> Result<Option<String>, FimError> {
    if !fp.report_changes || fp.nodiff.covers(path) {
        return Ok(None);
    }
    let label = display_path(path).0;
    Ok(Some(match &item.content {
        Some(new) if diff::is_text(new) => match b.content(&item.key)? {
            Some(Content::Text(old)) => diff::unified(&label, &old, new),
            Some(Content::Tampered) => {
                "no diff: the stored copy failed its integrity check".to_string()
            }
            None => "no diff: no earlier copy of this file".to_string(),
        },
        Some(_) => "binary file changed".to_string(),
        None => format!(
            "no diff: the file is larger than {} KiB or could not be read",
            diff::CONTENT_CAP >> 10
        ),
    }))
}

/// The content op for a written row.
fn content_op(item: &Item, fp: &FimPath, path: &Path) -> ContentOp {
    if !fp.report_changes || fp.nodiff.covers(path) {
        return ContentOp::Delete;
    }
    match &item.content {
        Some(c) if diff::is_text(c) => ContentOp::Set(c.clone()),
        _ if item.hashed => ContentOp::Delete,
        _ => ContentOp::Keep,
    }
}

/// The scan's state on the writing side.
struct Writer<'a> {
    b: &'a mut Baseline,
    paths: &'a [FimPath],
    plan: &'a Plan,
    mode: Mode,
    summary: Summary,
    denied: WalkStats,
    conflicts: Vec<Vec<u8>>,
    /// Configured paths the baseline did not cover yet: what is found under them is recorded
    /// without being reported as added, as at the first start.
    quiet: &'a [PathBuf],
    /// The buffer of a batch's writes, kept from one batch to the next.
    ops: Vec<Op>,
}

impl<'a> Writer<'a> {
    /// The writing side of a check of `paths`, every path already in the baseline.
    fn checking(b: &'a mut Baseline, paths: &'a [FimPath], plan: &'a Plan) -> Writer<'a> {
        Writer {
            b,
            paths,
            plan,
            mode: Mode::Check,
            summary: Summary::default(),
            denied: WalkStats::default(),
            conflicts: Vec::new(),
            quiet: &[],
            ops: Vec::new(),
        }
    }

    /// Compares a hashed batch with the baseline, writes it in one transaction, and reports the
    /// changes that were written.
    /// The batch is left empty, its capacity kept for another.
    fn finish(
        &mut self,
        batch: &mut Vec<Item>,
        on_change: &mut dyn FnMut(&FimChange),
    ) -> Result<(), FimError> {
        // The ops of the last batch left their buffer: a fresh one (hundreds of kilobytes) is
        // paged in anew each time.
        let mut ops = std::mem::take(&mut self.ops);
        ops.clear();
        ops.reserve(batch.len());
        // The changes to report, each with the index of its op (most ops report none).
        let mut changes: Vec<(usize, FimChange)> = Vec::new();
        for mut item in batch.drain(..) {
            if item.skipped {
                self.summary.interrupted = true;
                continue;
            }
            // The new attributes and the key are moved into the write, not copied.
            let new_attrs = item.attrs.take();
            match (&item.node, new_attrs, &item.old) {
                (Some(node), Some(new), old) => {
                    let fp = &self.paths[node.root];
                    let path: &Path = &node.path;
                    let s = &mut self.summary;
                    s.entries += 1;
                    match node.meta {
                        Some(t) if t.is_file() => s.files += 1,
                        Some(t) if t.is_dir() => s.directories += 1,
                        Some(t) if t.is_symlink() => s.symlinks += 1,
                        _ => s.other += 1,
                    }
                    if item.hashed {
                        s.hashed += 1;
                        s.hashed_bytes += new.size.unwrap_or(0);
                    }
                    if item.denied {
                        self.denied.deny(node.root, &node.path);
                    }
                    let bits = checks_bits(&fp.checks);
                    let (kind, changed, tampered) = match old {
                        None => (ChangeKind::Added, Vec::new(), false),
                        Some(o) if !o.mac_ok => {
                            (ChangeKind::Modified, attrs::changed(&o.attrs, &new), true)
                        }
                        Some(o) => {
                            if o.attrs == new && o.checks == bits {
                                // Unchanged, or changed only in what is no longer checked.
                                // Full mode: store a missing copy, or drop one that must not
                                // be kept any more, without reporting. (Rewriting every
                                // unchanged row instead cost more than hashing the files.)
                                let op = content_op(&item, fp, path);
                                let refresh = match op {
                                    ContentOp::Set(_) => !o.has_content,
                                    ContentOp::Delete => o.has_content,
                                    ContentOp::Keep => false,
                                };
                                if item.hashed && refresh && self.mode == Mode::Check {
                                    ops.push(Op::Put {
                                        key: item.key.clone(),
                                        checks: bits,
                                        attrs: new.clone(),
                                        expect: Some(o.mac.clone()),
                                        content: op,
                                        record: None,
                                        seal: None,
                                    });
                                }
                                continue;
                            }
                            (ChangeKind::Modified, attrs::changed(&o.attrs, &new), false)
                        }
                    };
                    // (A new baseline reports nothing: no path is compared with the quiet roots.)
                    let report = self.mode == Mode::Check
                        && (tampered
                            || !changed.is_empty()
                            || (kind == ChangeKind::Added
                                && !self.quiet.iter().any(|r| path.starts_with(r))));
                    let change = if report {
                        let diff = if changed.contains(&"hash") && !tampered {
                            diff_for(self.b, &item, fp, path)?
                        } else {
                            None
                        };
                        Some(FimChange {
                            path: path.to_path_buf(),
                            kind,
                            before: old.as_ref().map(|o| o.attrs.clone()),
                            after: Some(new.clone()),
                            changed,
                            diff,
                            tampered,
                        })
                    } else {
                        None
                    };
                    let record = change.as_ref().map(record_of);
                    if let Some(c) = change {
                        changes.push((ops.len(), c));
                    }
                    ops.push(Op::Put {
                        key: std::mem::take(&mut item.key),
                        checks: bits,
                        attrs: new,
                        expect: old.as_ref().map(|o| o.mac.clone()),
                        content: content_op(&item, fp, path),
                        record,
                        seal: item.seal.take(),
                    });
                }
                (_, _, Some(old)) => {
                    let path = baseline::path_of_key(&item.key);
                    let report = self.mode == Mode::Check && self.plan.in_scope(self.paths, &path);
                    if !report {
                        tracing::debug!(path = %display_path(&path).0, "no longer covered by the configuration: dropped from the baseline");
                    }
                    let change = report.then(|| FimChange {
                        path: path.clone(),
                        kind: ChangeKind::Deleted,
                        before: Some(old.attrs.clone()),
                        after: None,
                        changed: Vec::new(),
                        diff: None,
                        tampered: !old.mac_ok,
                    });
                    let record = change.as_ref().map(record_of);
                    if let Some(c) = change {
                        changes.push((ops.len(), c));
                    }
                    ops.push(Op::Delete {
                        key: item.key.clone(),
                        expect: old.mac.clone(),
                        record,
                    });
                }
                _ => {}
            }
        }
        if ops.is_empty() {
            self.ops = ops;
            return Ok(());
        }
        let applied = self.b.apply(&ops)?;
        for (op, ok) in ops.iter().zip(&applied) {
            if !ok {
                let key = match op {
                    Op::Put { key, .. } | Op::Delete { key, .. } => key.clone(),
                };
                self.conflicts.push(key);
            }
        }
        for (at, c) in changes {
            if applied.get(at) == Some(&true) {
                let s = &mut self.summary;
                if c.tampered {
                    s.tampered += 1;
                }
                match c.kind {
                    ChangeKind::Added => s.added += 1,
                    ChangeKind::Modified => s.modified += 1,
                    ChangeKind::Deleted => s.deleted += 1,
                }
                on_change(&c);
            }
        }
        ops.clear();
        self.ops = ops;
        Ok(())
    }
}

fn record_of(c: &FimChange) -> (String, String) {
    (c.kind.as_str().to_string(), change_json(c).to_string())
}

impl Cursor {
    /// Joins one walk item with the baseline rows: rows before it are gone (pushed as such), the
    /// row with its key (if any) goes with it. Returns the bytes hashing it will read.
    fn join(
        &mut self,
        b: &Baseline,
        item: WalkItem,
        batch: &mut Vec<Item>,
        paths: &[FimPath],
        full: bool,
    ) -> Result<u64, FimError> {
        match item {
            WalkItem::Entry(node) => {
                self.gone_before(b, &node.key, batch)?;
                let old = match self.peek(b)? {
                    Some(r) if r.key == node.key => self.pop(),
                    _ => None,
                };
                let bytes = expected_read(&node, old.as_ref(), paths, full);
                batch.push(Item::new(node, old));
                Ok(bytes)
            }
            WalkItem::Unreadable { key, .. } => {
                // Rows before it are gone; the row itself and its subtree are kept.
                self.gone_before(b, &key, batch)?;
                while let Some(row) = self.peek(b)? {
                    if row.key != key && !is_under(&row.key, &key) {
                        break;
                    }
                    self.pop();
                }
                Ok(0)
            }
        }
    }

    fn gone_before(
        &mut self,
        b: &Baseline,
        key: &[u8],
        batch: &mut Vec<Item>,
    ) -> Result<(), FimError> {
        while let Some(row) = self.peek(b)? {
            if row.key.as_slice() >= key {
                break;
            }
            if let Some(r) = self.pop() {
                batch.push(Item::gone(r));
            }
        }
        Ok(())
    }
}

thread_local! {
    static POOL: std::cell::RefCell<Option<Arc<rayon::ThreadPool>>> =
        const { std::cell::RefCell::new(None) };
}

/// The calling thread's hashing pool: built on first use, on this thread, so that its threads
/// inherit this thread's priority (the agent's scans lower theirs, its real-time checks do not);
/// then kept, since starting a thread per core for every real-time check cost more than the check.
fn hashing_pool() -> Result<Arc<rayon::ThreadPool>, FimError> {
    POOL.with(|cell| {
        let mut cell = cell.borrow_mut();
        if let Some(p) = cell.as_ref() {
            return Ok(Arc::clone(p));
        }
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fim-hash-{i}"))
            .build()
            .map_err(|e| FimError::Threads(e.to_string()))?;
        let pool = Arc::new(pool);
        *cell = Some(Arc::clone(&pool));
        Ok(pool)
    })
}

/// Batches being hashed or written, on the dispatching side: the writing thread sends back the
/// changes of each batch it wrote, in walk order, and they are reported here.
struct InFlight {
    spawned: u64,
    written: u64,
    rx: mpsc::Receiver<Written>,
    /// Batches written and emptied, for the next ones: a batch of fresh memory (some hundred
    /// kilobytes) costs a page fault per page each time.
    spare: Vec<Vec<Item>>,
}

/// What the writing thread sends back for each batch written: its changes, and the batch emptied.
type Written = (Vec<FimChange>, Vec<Item>);

impl InFlight {
    fn report(&mut self, (changes, batch): Written, on_change: &mut dyn FnMut(&FimChange)) {
        self.written += 1;
        for c in &changes {
            on_change(c);
        }
        if self.spare.len() < 2 {
            self.spare.push(batch);
        }
    }

    /// An empty batch with room for a full one.
    fn batch(&mut self) -> Vec<Item> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BATCH))
    }

    /// Reports the batches written, waiting for more until no more than `max` batches are left
    /// in flight. False when the writing thread is gone (it failed: its error says why).
    fn wait(&mut self, on_change: &mut dyn FnMut(&FimChange), max: u64) -> bool {
        loop {
            while let Ok(changes) = self.rx.try_recv() {
                self.report(changes, on_change);
            }
            if self.spawned - self.written <= max {
                return true;
            }
            match self.rx.recv() {
                Ok(changes) => self.report(changes, on_change),
                Err(_) => return false,
            }
        }
    }
}

/// The writing thread: writes the hashed batches in walk order as they come back from the
/// hashing jobs (in any order), and sends the changes of each batch written back to the
/// dispatching thread. Batches that come after `abort` is set are dropped unwritten.
fn write_in_order(
    writer: &mut Writer<'_>,
    rx: mpsc::Receiver<(u64, Vec<Item>)>,
    tx: mpsc::Sender<Written>,
    abort: &AtomicBool,
) -> Result<(), FimError> {
    let mut next = 0u64;
    let mut done: std::collections::BTreeMap<u64, Vec<Item>> = Default::default();
    for (seq, batch) in rx {
        done.insert(seq, batch);
        while let Some(mut batch) = done.remove(&next) {
            next += 1;
            if abort.load(Ordering::Relaxed) {
                continue;
            }
            let mut changes = Vec::new();
            writer.finish(&mut batch, &mut |c| changes.push(c.clone()))?;
            // The entries (paths, attributes, open directories) are freed here too, off the
            // dispatching thread.
            if tx.send((changes, batch)).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Runs the pipeline over every configured path.
fn engine(
    b: &mut Baseline,
    cfg: &FimConfig,
    plan: &Plan,
    mode: Mode,
    quiet: &[PathBuf],
    opts: &ScanOptions<'_>,
    on_change: &mut dyn FnMut(&FimChange),
) -> Result<(Summary, WalkStats, Vec<Vec<u8>>), FimError> {
    let started = Instant::now();
    let paths = &cfg.paths[..];
    let pool = hashing_pool()?;
    // The cursor reads the baseline on a connection of its own, so that the writer's thread owns
    // the other. Rows are written only behind the cursor (keys it has read past), so what it
    // reads next is never something this scan wrote.
    let reader = b.reader()?;
    let ctx = Ctx {
        paths,
        names: Names::current(),
        full: opts.full,
        throttle: opts.throttle,
        stop: opts.stop,
        sealer: b.sealer(),
    };
    let pace = opts.throttle.map(|t| move || t.take(0, 1));
    let mut writer = Writer {
        b,
        paths,
        plan,
        mode,
        summary: Summary::default(),
        denied: WalkStats::default(),
        conflicts: Vec::new(),
        quiet,
        ops: Vec::new(),
    };
    let stopped = |o: &ScanOptions<'_>| o.stop.is_some_and(|s| s.load(Ordering::Relaxed));
    let mut walk_stats = WalkStats::default();
    // Set when dispatching failed: the writing thread drops the batches still to come.
    let abort = AtomicBool::new(false);
    let result: Result<bool, FimError> = std::thread::scope(|s| {
        // Entries travel in chunks: one channel operation (and thread wake-up) per entry would
        // cost more than looking at the entry.
        let (wtx, wrx) = mpsc::sync_channel::<Vec<WalkItem>>(16);
        // Chunks come back emptied, to be filled again rather than paged in anew.
        let (ctx_back, crx_back) = mpsc::channel::<Vec<WalkItem>>();
        let walking = std::thread::Builder::new()
            .name("fim-walk".into())
            .spawn_scoped(s, || {
                let mut w = Walker::new(plan, paths);
                // Every file is read: open them relative to their directory.
                w.hold_dirs = mode == Mode::Init || opts.full;
                if let Some(p) = &pace {
                    w.pace = Some(p);
                }
                let wtx = wtx;
                let back = crx_back;
                let mut chunk: Vec<WalkItem> = Vec::with_capacity(WALK_CHUNK);
                let mut emit = |item: WalkItem| {
                    chunk.push(item);
                    if chunk.len() >= WALK_CHUNK {
                        let next = back
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(WALK_CHUNK));
                        return wtx.send(std::mem::replace(&mut chunk, next)).is_ok();
                    }
                    true
                };
                w.run(&mut emit);
                if !chunk.is_empty() {
                    let _ = wtx.send(chunk);
                }
                w.stats
            });
        let walker = walking.map_err(|e| FimError::Threads(e.to_string()))?;
        // Each batch is hashed by a job of its own on the pool, so that a batch's last large
        // file does not leave the other cores idle: the next batches are already being hashed.
        // Batches are written in walk order as they come back, on a thread of their own, so that
        // handing out work here never waits on the database.
        let (htx, hrx) = mpsc::channel::<(u64, Vec<Item>)>();
        let (atx, arx) = mpsc::channel::<Written>();
        let abort = &abort;
        let writer = &mut writer;
        let writing = std::thread::Builder::new()
            .name("fim-write".into())
            .spawn_scoped(s, move || write_in_order(writer, hrx, atx, abort))
            .map_err(|e| FimError::Threads(e.to_string()));
        let writing = match writing {
            Ok(w) => w,
            Err(e) => {
                drop(wrx);
                walk_stats = walker.join().unwrap_or_default();
                return Err(e);
            }
        };
        let ctx = &ctx;
        let reader = &reader;
        let mut flight = InFlight {
            spawned: 0,
            written: 0,
            rx: arx,
            spare: Vec::new(),
        };
        let dispatched = pool.in_place_scope(|rs| {
            // False when the writing thread is gone.
            let send = |batch: Vec<Item>,
                        flight: &mut InFlight,
                        on_change: &mut dyn FnMut(&FimChange)|
             -> bool {
                let seq = flight.spawned;
                flight.spawned += 1;
                let htx = htx.clone();
                let mut batch = batch;
                rs.spawn(move |_| {
                    // The cursor left the rows' MACs to be checked here.
                    for row in batch.iter_mut().filter_map(|it| it.old.as_mut()) {
                        ctx.sealer.check(row);
                    }
                    if batch.iter().any(|it| needs_reading(it, ctx)) {
                        batch.par_iter_mut().for_each(|it| prepare(it, ctx));
                    } else {
                        batch.iter_mut().for_each(|it| prepare(it, ctx));
                    }
                    let _ = htx.send((seq, batch));
                });
                flight.wait(on_change, IN_FLIGHT)
            };
            let mut run = |on_change: &mut dyn FnMut(&FimChange)| -> Result<bool, FimError> {
                let mut cursor = Cursor::unchecked();
                let mut batch: Vec<Item> = flight.batch();
                let mut batch_bytes = 0u64;
                let mut interrupted = false;
                'walk: for mut chunk in wrx.iter() {
                    for item in chunk.drain(..) {
                        batch_bytes += cursor.join(reader, item, &mut batch, paths, opts.full)?;
                        if batch.len() >= BATCH || batch_bytes >= BATCH_BYTES {
                            // The next batch starts at full size: growing it would copy its
                            // items (several hundred bytes each) again and again.
                            let full = std::mem::replace(&mut batch, flight.batch());
                            if !send(full, &mut flight, on_change) {
                                return Ok(false);
                            }
                            batch_bytes = 0;
                        }
                        if stopped(opts) {
                            interrupted = true;
                            break 'walk;
                        }
                    }
                    let _ = ctx_back.send(chunk);
                }
                if !interrupted {
                    // What the walk did not meet is gone (or no longer configured).
                    while cursor.peek(reader)?.is_some() {
                        if let Some(r) = cursor.pop() {
                            batch.push(Item::gone(r));
                        }
                        if batch.len() >= BATCH
                            && !send(
                                std::mem::replace(&mut batch, flight.batch()),
                                &mut flight,
                                on_change,
                            )
                        {
                            return Ok(false);
                        }
                    }
                }
                if !batch.is_empty() {
                    send(batch, &mut flight, on_change);
                }
                Ok(interrupted)
            };
            let r = run(on_change);
            // Write what was hashed (also when stopping: those entries were looked at); on an
            // error, nothing more.
            match r {
                Ok(interrupted) => {
                    flight.wait(on_change, 0);
                    Ok(interrupted)
                }
                Err(e) => {
                    abort.store(true, Ordering::Relaxed);
                    Err(e)
                }
            }
        });
        // Stop the walk if still going.
        drop(wrx);
        walk_stats = walker.join().unwrap_or_default();
        drop(htx);
        let written = match writing.join() {
            Ok(w) => w,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // Whatever was written is reported, also when something failed.
        while let Ok(changes) = flight.rx.try_recv() {
            flight.report(changes, on_change);
        }
        written.and(dispatched)
    });
    let interrupted = result?;
    let mut summary = writer.summary;
    summary.interrupted |= interrupted;
    summary.seconds = started.elapsed().as_secs_f64();
    for (root, (n, first)) in writer.denied.denied {
        let e = walk_stats.denied.entry(root).or_insert((0, first));
        e.0 += n;
    }
    summary.denied = walk_stats.denied.values().map(|(n, _)| *n).sum();
    Ok((summary, walk_stats, writer.conflicts))
}

fn warnings(plan: &Plan, stats: &WalkStats) -> Vec<String> {
    let mut out = Vec::new();
    for &i in &stats.missing {
        out.push(format!(
            "{}: does not exist; skipped",
            display_path(plan.root(i)).0
        ));
    }
    for &i in &stats.root_links {
        out.push(format!(
            "{}: is a symlink, recorded as a link and not followed (set follow_symlinks, or name its target)",
            display_path(plan.root(i)).0
        ));
    }
    let mut denied: Vec<_> = stats.denied.iter().collect();
    denied.sort_by_key(|(i, _)| **i);
    for (&i, (n, first)) in denied {
        out.push(format!(
            "{}: {n} entr{} could not be read (permission denied), e.g. {}; recorded without content, or not listed",
            display_path(plan.root(i)).0,
            if *n == 1 { "y" } else { "ies" },
            display_path(first).0
        ));
    }
    if stats.errors > 0 {
        out.push(format!(
            "{} read error(s), first: {}",
            stats.errors,
            stats.first_error.as_deref().unwrap_or("")
        ));
    }
    out
}

fn now_rfc3339() -> String {
    report::format_time(std::time::SystemTime::now())
}

/// Scans every configured path: records a new baseline ([`Mode::Init`], after emptying the old
/// one) or compares with the baseline, reports each change to `on_change` and updates it.
pub fn scan(
    b: &mut Baseline,
    cfg: &FimConfig,
    mode: Mode,
    opts: &ScanOptions<'_>,
    on_change: &mut dyn FnMut(&FimChange),
) -> Result<Summary, FimError> {
    if mode == Mode::Init {
        b.clear()?;
    } else if !b.is_initialized()? {
        return Err(FimError::NoBaseline {
            path: b.db_path().to_path_buf(),
        });
    }
    let plan = Plan::new(&cfg.paths);
    let full = opts.full || cfg.check_mode == CheckMode::Full;
    let opts = ScanOptions {
        full,
        throttle: opts.throttle,
        stop: opts.stop,
    };
    // Paths added to the configuration since the last complete scan are recorded silently.
    let roots: Vec<PathBuf> = (0..cfg.paths.len())
        .map(|i| plan.root(i).to_path_buf())
        .collect();
    let quiet: Vec<PathBuf> = match (mode, recorded_roots(b)?) {
        (Mode::Check, Some(known)) => roots
            .iter()
            .filter(|r| !known.iter().any(|k| r.starts_with(k)))
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    if !quiet.is_empty() {
        tracing::info!(
            paths = %quiet.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","),
            "FIM paths new to the baseline: recording them without reporting what they hold"
        );
    }
    // A new baseline is written in bulk (see `Baseline::begin_bulk`): what was written is kept
    // also when the scan fails half-way, as with one transaction per batch.
    if mode == Mode::Init {
        b.begin_bulk()?;
    }
    let scanned = engine(b, cfg, &plan, mode, &quiet, &opts, on_change);
    let ended = if mode == Mode::Init {
        b.end_bulk()
    } else {
        Ok(())
    };
    let (mut summary, stats, conflicts) = scanned?;
    ended?;
    // Rows another writer changed while this scan compared them: compare them again.
    if !conflicts.is_empty() {
        let again: Vec<PathBuf> = conflicts.iter().map(|k| baseline::path_of_key(k)).collect();
        let s = check_paths(b, cfg, &plan, &again, on_change)?;
        summary.added += s.added;
        summary.modified += s.modified;
        summary.deleted += s.deleted;
        summary.tampered += s.tampered;
    }
    summary.warnings = warnings(&plan, &stats);
    if !summary.interrupted {
        match mode {
            Mode::Init => b.set_meta("initialized", &now_rfc3339())?,
            Mode::Check => b.set_meta("last_check", &now_rfc3339())?,
        }
        let list: Vec<String> = roots
            .iter()
            .map(|r| r.to_string_lossy().into_owned())
            .collect();
        b.set_meta(ROOTS_META, &serde_json::Value::from(list).to_string())?;
    }
    Ok(summary)
}

/// The baseline meta key listing the configured paths the last complete scan covered.
const ROOTS_META: &str = "roots";

/// The configured paths the last complete scan covered; `None` for a baseline recorded before
/// they were kept (every path is then taken as covered).
fn recorded_roots(b: &Baseline) -> Result<Option<Vec<PathBuf>>, FimError> {
    Ok(b.meta(ROOTS_META)?
        .and_then(|v| serde_json::from_str::<Vec<String>>(&v).ok())
        .map(|v| v.into_iter().map(PathBuf::from).collect()))
}

/// Compares ONE path with the baseline and updates its row in one transaction, reporting what
/// changed: for a real-time watch. A directory is compared by itself (not its subtree); a path
/// that is gone or no longer a directory takes its subtree's rows with it (reported deleted).
/// Paths the configuration does not record are ignored. Safe to interleave with [`scan`] in the
/// same thread or another process: no change is reported twice.
pub fn check_path(
    b: &mut Baseline,
    cfg: &FimConfig,
    plan: &Plan,
    path: &Path,
    on_change: &mut dyn FnMut(&FimChange),
) -> Result<Summary, FimError> {
    check_paths(b, cfg, plan, &[path.to_path_buf()], on_change)
}

/// [`check_path`] for several paths at once, written in as few transactions as possible (one per
/// [`BATCH`] entries), on the calling thread: no walk or hashing threads are started for it, and
/// only a large file wakes the hashing pool.
pub fn check_paths(
    b: &mut Baseline,
    cfg: &FimConfig,
    plan: &Plan,
    paths: &[PathBuf],
    on_change: &mut dyn FnMut(&FimChange),
) -> Result<Summary, FimError> {
    let started = Instant::now();
    let mut keyed: Vec<(Vec<u8>, &PathBuf)> =
        paths.iter().map(|p| (baseline::key_of(p), p)).collect();
    keyed.sort();
    keyed.dedup_by(|a, b| a.0 == b.0);
    let ctx = Ctx {
        paths: &cfg.paths,
        names: Names::current(),
        full: false,
        throttle: None,
        stop: None,
        sealer: b.sealer(),
    };
    let mut writer = Writer::checking(b, &cfg.paths, plan);
    let mut walker = Walker::new(plan, &cfg.paths);
    // A path under a directory found gone earlier in this call was taken with it.
    let mut taken: std::collections::HashSet<Vec<u8>> = Default::default();
    let mut batch: Vec<Item> = Vec::new();
    let flush = |batch: &mut Vec<Item>,
                 writer: &mut Writer<'_>,
                 on_change: &mut dyn FnMut(&FimChange)|
     -> Result<(), FimError> {
        let mut items = std::mem::take(batch);
        let large = items.iter().any(|it| {
            needs_reading(it, &ctx)
                && it.node.as_ref().is_some_and(|n| {
                    n.meta
                        .as_ref()
                        .is_some_and(|m| m.size() >= hash::PARALLEL_THRESHOLD)
                })
        });
        if large {
            let pool = hashing_pool()?;
            pool.install(|| items.iter_mut().for_each(|it| prepare(it, &ctx)));
        } else {
            items.iter_mut().for_each(|it| prepare(it, &ctx));
        }
        writer.finish(&mut items, on_change)
    };
    for (key, path) in keyed {
        if taken.contains(&key) {
            continue;
        }
        let mut walked = Vec::new();
        walker.one(path, &mut |item| {
            walked.push(item);
            true
        });
        // A directory's own entry only: its subtree stays as it is.
        if let Some(WalkItem::Entry(n)) = walked.first() {
            if n.meta.as_ref().is_some_and(|m| m.is_dir()) {
                walked.push(WalkItem::Unreadable {
                    key: n.key.clone(),
                    root: n.root,
                });
            }
        }
        let (_, hi) = baseline::subtree_bounds(&key);
        let mut cursor = Cursor::new(key, Some(hi));
        let mut here = Vec::new();
        for item in walked {
            cursor.join(writer.b, item, &mut here, &cfg.paths, false)?;
        }
        while cursor.peek(writer.b)?.is_some() {
            if let Some(r) = cursor.pop() {
                here.push(Item::gone(r));
            }
        }
        for item in here {
            if taken.insert(item.key.clone()) {
                batch.push(item);
            }
        }
        if batch.len() >= BATCH {
            flush(&mut batch, &mut writer, on_change)?;
        }
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut writer, on_change)?;
    }
    let mut summary = writer.summary;
    if !writer.conflicts.is_empty() {
        tracing::debug!(
            n = writer.conflicts.len(),
            "changed by another writer meanwhile; left to the next check"
        );
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::process::Command;

    fn config(tree: &Path) -> FimConfig {
        let text = format!(
            "[agent]\nstate_dir = \"/nonexistent\"\n[fim]\n[[fim.paths]]\npath = \"{}\"\n",
            tree.display()
        );
        crate::config::parse(Path::new("t.toml"), &text)
            .unwrap()
            .fim
    }

    fn test_ctx(cfg: &FimConfig, full: bool) -> Ctx<'_> {
        Ctx {
            paths: &cfg.paths,
            names: Arc::new(Names::default()),
            full,
            throttle: None,
            stop: None,
            sealer: Sealer::unkeyed(),
        }
    }

    fn collect(b: &mut Baseline, cfg: &FimConfig, mode: Mode) -> (Summary, Vec<FimChange>) {
        let mut v = Vec::new();
        let s = scan(b, cfg, mode, &ScanOptions::default(), &mut |c| {
            v.push(c.clone())
        })
        .unwrap();
        (s, v)
    }

    #[test]
    fn a_path_added_to_the_configuration_is_recorded_without_added_alerts() {
        let d = tempfile::tempdir().unwrap();
        let (t1, t2) = (d.path().join("t1"), d.path().join("t2"));
        fs::create_dir_all(&t1).unwrap();
        fs::create_dir_all(t2.join("sub")).unwrap();
        fs::write(t1.join("a"), "1").unwrap();
        fs::write(t2.join("b"), "2").unwrap();
        fs::write(t2.join("sub/c"), "3").unwrap();
        let one = config(&t1);
        let mut both = one.clone();
        both.paths.extend(config(&t2).paths);
        let mut b = Baseline::open(&d.path().join("state"), true).unwrap();
        collect(&mut b, &one, Mode::Init);
        fs::write(t1.join("new"), "n").unwrap();
        // t2 is new: recorded silently; t1 is compared as before.
        let (s, v) = collect(&mut b, &both, Mode::Check);
        let got: Vec<_> = v.iter().map(|c| (c.path.clone(), c.kind)).collect();
        assert_eq!(got, [(t1.join("new"), ChangeKind::Added)]);
        assert!(s.entries >= 5, "{s:?}");
        // From now on t2 is covered like any path.
        fs::write(t2.join("b"), "changed").unwrap();
        fs::write(t2.join("d"), "4").unwrap();
        let (_, v) = collect(&mut b, &both, Mode::Check);
        let mut got: Vec<_> = v.iter().map(|c| (c.path.clone(), c.kind)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                (t2.join("b"), ChangeKind::Modified),
                (t2.join("d"), ChangeKind::Added)
            ]
        );
        // Removed from the configuration: its rows go without deletion alerts.
        let (_, v) = collect(&mut b, &one, Mode::Check);
        assert!(v.is_empty(), "{v:?}");
        let (_, v) = collect(&mut b, &both, Mode::Check);
        assert!(v.is_empty(), "added back: recorded again silently: {v:?}");
    }

    #[test]
    fn check_path_reports_once_and_scans_do_not_repeat_it() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("t");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("a"), "1").unwrap();
        fs::write(tree.join("sub/x"), "x").unwrap();
        let cfg = config(&tree);
        let plan = Plan::new(&cfg.paths);
        let mut b = Baseline::open(&d.path().join("state"), true).unwrap();
        collect(&mut b, &cfg, Mode::Init);

        fs::write(tree.join("a"), "22").unwrap();
        let mut seen = Vec::new();
        check_path(&mut b, &cfg, &plan, &tree.join("a"), &mut |c| {
            seen.push(c.clone())
        })
        .unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].kind, ChangeKind::Modified);
        // The watch already reported it: the scan must not.
        let (_, v) = collect(&mut b, &cfg, Mode::Check);
        assert!(v.is_empty(), "{v:?}");

        // A directory alone: its subtree is kept as it is.
        fs::write(tree.join("sub/x"), "changed").unwrap();
        let mut seen = Vec::new();
        check_path(&mut b, &cfg, &plan, &tree.join("sub"), &mut |c| {
            seen.push(c.clone())
        })
        .unwrap();
        assert!(seen.is_empty(), "{seen:?}");
        assert!(b
            .get(&baseline::key_of(&tree.join("sub/x")))
            .unwrap()
            .is_some());

        // A directory gone takes its subtree with it.
        fs::remove_dir_all(tree.join("sub")).unwrap();
        let mut seen = Vec::new();
        check_path(&mut b, &cfg, &plan, &tree.join("sub"), &mut |c| {
            seen.push(c.clone())
        })
        .unwrap();
        let paths: Vec<_> = seen.iter().map(|c| (c.path.clone(), c.kind)).collect();
        assert_eq!(
            paths,
            vec![
                (tree.join("sub"), ChangeKind::Deleted),
                (tree.join("sub/x"), ChangeKind::Deleted)
            ]
        );
        let (_, v) = collect(&mut b, &cfg, Mode::Check);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn check_paths_reports_a_removed_directory_and_its_files_once() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("t");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("sub/x"), "x").unwrap();
        fs::write(tree.join("a"), "1").unwrap();
        let cfg = config(&tree);
        let plan = Plan::new(&cfg.paths);
        let mut b = Baseline::open(&d.path().join("state"), true).unwrap();
        collect(&mut b, &cfg, Mode::Init);
        fs::remove_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("a"), "22").unwrap();
        let mut seen = Vec::new();
        let paths = [
            tree.join("sub/x"),
            tree.join("a"),
            tree.join("sub"),
            tree.join("a"),
        ];
        check_paths(&mut b, &cfg, &plan, &paths, &mut |c| {
            seen.push((c.path.clone(), c.kind))
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (tree.join("a"), ChangeKind::Modified),
                (tree.join("sub"), ChangeKind::Deleted),
                (tree.join("sub/x"), ChangeKind::Deleted),
            ]
        );
        let (_, v) = collect(&mut b, &cfg, Mode::Check);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_full_check_does_not_rewrite_unchanged_rows() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("t");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("a"), "1").unwrap();
        let cfg = config(&tree);
        let mut b = Baseline::open(&d.path().join("state"), true).unwrap();
        collect(&mut b, &cfg, Mode::Init);
        let key = baseline::key_of(&tree.join("a"));
        let since = b.get(&key).unwrap().unwrap().since;
        // Rows carry the second they were written.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let opts = ScanOptions {
            full: true,
            ..Default::default()
        };
        let s = scan(&mut b, &cfg, Mode::Check, &opts, &mut |_| {}).unwrap();
        assert_eq!((s.hashed, s.changes()), (1, 0));
        assert_eq!(b.get(&key).unwrap().unwrap().since, since);
    }

    #[test]
    fn a_file_deleted_between_walk_and_hash_is_not_fatal_nor_added() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, "x").unwrap();
        let cfg = config(d.path());
        let node = Node {
            path: f.clone(),
            key: baseline::key_of(&f),
            meta: Some(fs::symlink_metadata(&f).unwrap().into()),
            root: 0,
            link_target: None,
            dir: None,
        };
        fs::remove_file(&f).unwrap();
        let mut item = Item::new(node, None);
        let ctx = test_ctx(&cfg, false);
        prepare(&mut item, &ctx);
        assert!(item.node.is_none() && item.attrs.is_none());
        // The writer sees nothing to record for it.
        let mut b = Baseline::open(&d.path().join("state"), true).unwrap();
        let plan = Plan::new(&cfg.paths);
        let mut w = Writer::checking(&mut b, &cfg.paths, &plan);
        let mut n = 0;
        w.finish(&mut vec![item], &mut |_| n += 1).unwrap();
        assert_eq!(n, 0);
        assert_eq!(b.count().unwrap(), 0);
    }

    #[test]
    fn files_the_walk_did_not_stat_get_their_attributes_from_the_open_file() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = config(d.path());
        cfg.paths[0].max_hashed_size = 4;
        let ctx = test_ctx(&cfg, true);
        let unseen = |name: &str| {
            let path = d.path().join(name);
            let key = baseline::key_of(&path);
            let node = Node {
                path,
                key,
                meta: None,
                root: 0,
                link_target: None,
                dir: None,
            };
            Item::new(node, None)
        };
        let run = |item: &mut Item| prepare(item, &ctx);
        // Read and hashed: its size and hash, and the metadata the writer counts by.
        fs::write(d.path().join("small"), "abc").unwrap();
        let mut small = unseen("small");
        run(&mut small);
        let a = small.attrs.as_ref().unwrap();
        assert_eq!(a.size, Some(3));
        assert_eq!(
            a.hash.as_deref(),
            Some(blake3::hash(b"abc").to_hex().as_str())
        );
        assert!(
            small.hashed
                && small
                    .node
                    .as_ref()
                    .unwrap()
                    .meta
                    .as_ref()
                    .unwrap()
                    .is_file()
        );
        // Larger than max_hashed_size: attributes only.
        fs::write(d.path().join("big"), "abcdef").unwrap();
        let mut big = unseen("big");
        run(&mut big);
        let a = big.attrs.as_ref().unwrap();
        assert_eq!((a.size, a.hash.as_ref()), (Some(6), None));
        assert!(a
            .hash_skipped
            .as_deref()
            .unwrap()
            .contains("max_hashed_size"));
        assert!(!big.hashed);
        // Replaced by a FIFO after the listing: recorded as one (never read: this would block).
        let fifo = d.path().join("fifo");
        assert!(Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let mut f = unseen("fifo");
        run(&mut f);
        assert_eq!(f.attrs.as_ref().unwrap().file_type, Some(FileType::Fifo));
        assert!(f.attrs.as_ref().unwrap().hash.is_none() && !f.hashed);
        // Gone before it was opened: nothing to record.
        let mut gone = unseen("gone");
        run(&mut gone);
        assert!(gone.node.is_none() && gone.attrs.is_none());
    }

    /// A directory of 3,000 small files under `d`, recorded in a new baseline.
    fn recorded_flat_tree(d: &Path) -> (PathBuf, FimConfig, Baseline) {
        let tree = d.join("t");
        fs::create_dir(&tree).unwrap();
        for i in 0..3000 {
            fs::write(tree.join(format!("f{i:05}")), "x").unwrap();
        }
        let cfg = config(&tree);
        let mut b = Baseline::open(&d.join("state"), true).unwrap();
        collect(&mut b, &cfg, Mode::Init);
        (tree, cfg, b)
    }

    #[test]
    fn a_stopped_scan_reports_no_deletions_for_what_it_did_not_visit() {
        let d = tempfile::tempdir().unwrap();
        let (_, cfg, mut b) = recorded_flat_tree(d.path());
        let stop = AtomicBool::new(true);
        let opts = ScanOptions {
            stop: Some(&stop),
            ..Default::default()
        };
        let mut n = 0;
        let s = scan(&mut b, &cfg, Mode::Check, &opts, &mut |_| n += 1).unwrap();
        assert!(s.interrupted);
        assert_eq!(n, 0);
        assert_eq!(b.count().unwrap(), 3001);
    }

    #[test]
    fn changes_over_many_batches_are_reported_in_walk_order() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("t");
        for sub in ["a", "b", "c"] {
            fs::create_dir_all(tree.join(sub)).unwrap();
            for i in 0..1500 {
                fs::write(tree.join(sub).join(format!("f{i:05}")), "x").unwrap();
            }
        }
        let cfg = config(&tree);
        let mut b = Baseline::open(&d.path().join("state"), true).unwrap();
        let (s, v) = collect(&mut b, &cfg, Mode::Init);
        assert_eq!((s.entries, v.len()), (4504, 0));
        // Changes in every batch: modified, deleted and added files, and a directory gone.
        let mut want = Vec::new();
        for sub in ["a", "b"] {
            for i in (0..1500).step_by(7) {
                let f = tree.join(sub).join(format!("f{i:05}"));
                if i % 2 == 0 {
                    fs::write(&f, "changed").unwrap();
                    want.push((f, ChangeKind::Modified));
                } else {
                    fs::remove_file(&f).unwrap();
                    want.push((f, ChangeKind::Deleted));
                }
                let g = tree.join(sub).join(format!("g{i:05}"));
                fs::write(&g, "new").unwrap();
                want.push((g, ChangeKind::Added));
            }
        }
        fs::remove_dir_all(tree.join("c")).unwrap();
        want.push((tree.join("c"), ChangeKind::Deleted));
        for i in 0..1500 {
            want.push((tree.join("c").join(format!("f{i:05}")), ChangeKind::Deleted));
        }
        want.sort_by_key(|(p, _)| baseline::key_of(p));
        let (s, v) = collect(&mut b, &cfg, Mode::Check);
        let got: Vec<_> = v.iter().map(|c| (c.path.clone(), c.kind)).collect();
        assert!(
            got == want,
            "{} changes reported, {} expected",
            got.len(),
            want.len()
        );
        assert_eq!(s.changes(), want.len() as u64);
        let (_, v) = collect(&mut b, &cfg, Mode::Check);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_scan_checks_every_row_it_reads_and_reports_only_the_tampered_ones() {
        let d = tempfile::tempdir().unwrap();
        let (tree, cfg, mut b) = recorded_flat_tree(d.path());
        // One row edited in the database, in the second page the cursor reads; another edited and
        // its file removed.
        b.tamper(&baseline::key_of(&tree.join("f02500")));
        b.tamper(&baseline::key_of(&tree.join("f00007")));
        fs::remove_file(tree.join("f00007")).unwrap();
        for full in [false, true] {
            let opts = ScanOptions {
                full,
                ..Default::default()
            };
            let mut v = Vec::new();
            let s = scan(&mut b, &cfg, Mode::Check, &opts, &mut |c| {
                v.push((c.path.clone(), c.kind, c.tampered))
            })
            .unwrap();
            if full {
                // Rewritten by the first scan: nothing left to report.
                assert!(v.is_empty(), "{v:?}");
                continue;
            }
            assert_eq!(
                v,
                [
                    (tree.join("f00007"), ChangeKind::Deleted, true),
                    (tree.join("f02500"), ChangeKind::Modified, true),
                ]
            );
            assert_eq!((s.tampered, s.changes()), (2, 2));
        }
    }

    #[test]
    fn the_writing_thread_writes_in_walk_order_and_detects_conflicts() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("t");
        fs::create_dir(&tree).unwrap();
        let names = ["a", "b", "c", "d", "e"];
        for n in names {
            fs::write(tree.join(n), "1").unwrap();
        }
        let cfg = config(&tree);
        let plan = Plan::new(&cfg.paths);
        let state = d.path().join("state");
        let mut b = Baseline::open(&state, true).unwrap();
        collect(&mut b, &cfg, Mode::Init);
        for n in names {
            fs::write(tree.join(n), "22").unwrap();
        }
        // Each entry compared with its row and hashed, as the scan does.
        let mut ctx = test_ctx(&cfg, false);
        ctx.sealer = b.sealer();
        let reader = b.reader().unwrap();
        let item = |n: &str| {
            let path = tree.join(n);
            let key = baseline::key_of(&path);
            let old = reader.get(&key).unwrap();
            let node = Node {
                meta: Some(fs::symlink_metadata(&path).unwrap().into()),
                path,
                key,
                root: 0,
                link_target: None,
                dir: None,
            };
            let mut it = Item::new(node, old);
            prepare(&mut it, &ctx);
            it
        };
        let batches = [vec![item("a"), item("b")], vec![item("c")], vec![item("d")]];
        // Meanwhile another writer records a change of `c`: the scan's write of it must not apply.
        let mut other = Baseline::open(&state, false).unwrap();
        let key_c = baseline::key_of(&tree.join("c"));
        let row_c = other.get(&key_c).unwrap().unwrap();
        let mut attrs = row_c.attrs.clone();
        attrs.size = Some(2);
        let put = Op::Put {
            key: key_c.clone(),
            checks: row_c.checks,
            attrs,
            expect: Some(row_c.mac.clone()),
            content: ContentOp::Keep,
            record: None,
            seal: None,
        };
        assert_eq!(other.apply(&[put]).unwrap(), [true]);
        // The hashing jobs finish out of order; a batch after an abort is not written.
        let (htx, hrx) = mpsc::channel();
        let (atx, arx) = mpsc::channel();
        let mut seqs = batches.into_iter().enumerate().collect::<Vec<_>>();
        seqs.reverse();
        for (seq, batch) in seqs.drain(..2) {
            htx.send((seq as u64, batch)).unwrap();
        }
        let abort = AtomicBool::new(false);
        let mut writer = Writer::checking(&mut b, &cfg.paths, &plan);
        std::thread::scope(|s| {
            let w = s.spawn(|| write_in_order(&mut writer, hrx, atx, &abort));
            // Nothing is written before the first batch is back.
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(arx.try_recv().is_err());
            let (seq, batch) = seqs.pop().unwrap();
            htx.send((seq as u64, batch)).unwrap();
            let (first, emptied) = arx.recv().unwrap();
            assert!(emptied.is_empty());
            let names: Vec<_> = first.iter().map(|c| c.path.clone()).collect();
            assert_eq!(names, [tree.join("a"), tree.join("b")]);
            // `c` conflicted: written by no one, reported by no one here.
            assert!(arx.recv().unwrap().0.is_empty());
            let third = arx.recv().unwrap().0;
            assert_eq!(third.len(), 1);
            assert_eq!(third[0].path, tree.join("d"));
            abort.store(true, Ordering::Relaxed);
            htx.send((3, vec![item("e")])).unwrap();
            drop(htx);
            w.join().unwrap().unwrap();
            assert!(arx.recv().is_err(), "written after the abort");
        });
        assert_eq!(writer.conflicts, std::slice::from_ref(&key_c));
        assert_eq!(writer.summary.modified, 3);
        // The other writer's row stands; `e` keeps its old row.
        assert_eq!(b.get(&key_c).unwrap().unwrap().attrs.size, Some(2));
        let e = b.get(&baseline::key_of(&tree.join("e"))).unwrap().unwrap();
        assert_eq!(e.attrs.size, Some(1));
    }
}
