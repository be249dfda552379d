//! The FIM baseline in SQLite: rows keyed so that key order is walk order, each row sealed with a
//! keyed BLAKE3 MAC, read in pages (never the whole table), and written with conditional
//! statements so that two writers (a scan and a real-time watch, or the agent and `hids fim check`)
//! can never both report the same change: a write applies only if the row is still the one that
//! was compared against.

use std::cell::RefCell;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::FimError;
use crate::config::Checks;
use crate::event::{FileAttrs, FileType};

/// The name of the MAC key file in the state directory.
pub const KEY_FILE: &str = "fim.key";

/// Changes kept per path in the history shown by `hids fim show`.
const HISTORY_PER_PATH: i64 = 50;

/// The baseline key of a path: its bytes with each separator turned into 0x00, so that comparing
/// keys byte by byte compares paths component by component (a directory's subtree sorts right
/// after it, before its next sibling). `/` itself is the empty key.
pub fn key_of(path: &Path) -> Vec<u8> {
    let mut key = Vec::with_capacity(path.as_os_str().len());
    for c in path.components() {
        match c {
            Component::Normal(n) => {
                key.push(0);
                key.extend_from_slice(n.as_bytes());
            }
            Component::ParentDir => {
                key.push(0);
                key.extend_from_slice(b"..");
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    key
}

/// The path of a key.
pub fn path_of_key(key: &[u8]) -> PathBuf {
    if key.is_empty() {
        return PathBuf::from("/");
    }
    let bytes: Vec<u8> = key
        .iter()
        .map(|b| if *b == 0 { b'/' } else { *b })
        .collect();
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

/// Whether `key` lies strictly inside the subtree of `dir`.
pub fn is_under(key: &[u8], dir: &[u8]) -> bool {
    key.len() > dir.len() && key.starts_with(dir) && key[dir.len()] == 0
}

/// The bounds of `dir`'s subtree (exclusive): every key `k` with `lo <= k < hi` is under `dir`.
pub fn subtree_bounds(dir: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut lo = dir.to_vec();
    lo.push(0);
    let mut hi = dir.to_vec();
    hi.push(1);
    (lo, hi)
}

/// The checks bitmask stored with a row.
pub fn checks_bits(c: &Checks) -> u16 {
    let flags = [
        c.file_type,
        c.size,
        c.perm,
        c.owner,
        c.group,
        c.inode,
        c.device,
        c.mtime,
        c.ctime,
        c.hash,
        c.link,
    ];
    flags
        .iter()
        .enumerate()
        .fold(0, |acc, (i, on)| if *on { acc | (1 << i) } else { acc })
}

/// One baseline row.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: Vec<u8>,
    pub checks: u16,
    pub attrs: FileAttrs,
    /// When the row was written (Unix seconds).
    pub since: i64,
    /// The stored MAC; also the row's version for conditional writes.
    pub mac: Vec<u8>,
    /// Whether the MAC matches the row: false means someone edited the database.
    pub mac_ok: bool,
    /// Whether a text copy of the file is stored (for diffs).
    pub has_content: bool,
}

impl Row {
    pub fn path(&self) -> PathBuf {
        path_of_key(&self.key)
    }
}

/// A stored text copy, checked and decompressed.
#[derive(Debug)]
pub enum Content {
    Text(Vec<u8>),
    /// The copy failed its MAC: not used for a diff.
    Tampered,
}

/// What to do with the stored copy of a file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentOp {
    Keep,
    /// Store this (uncompressed) text.
    Set(Vec<u8>),
    Delete,
}

/// One conditional write.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // built and consumed a batch at a time
pub enum Op {
    /// Write the row for `key`. `expect`: the MAC of the row compared against, or None when there
    /// was none (then the write applies only if there still is none).
    Put {
        key: Vec<u8>,
        checks: u16,
        attrs: FileAttrs,
        expect: Option<Vec<u8>>,
        content: ContentOp,
        /// The change record to keep in the history.
        record: Option<(String, String)>,
        /// The row's MAC, computed ahead (off the writing thread) by [`Sealer::seal`] over these
        /// same `key`, `checks` and `attrs`; None: computed when written.
        seal: Option<Seal>,
    },
    /// Remove the row for `key` if it is still the one with MAC `expect`, its content copy, and
    /// (`subtree`) nothing else.
    Delete {
        key: Vec<u8>,
        expect: Vec<u8>,
        record: Option<(String, String)>,
    },
}

/// What sealing a row gives: its MAC and its hash in the stored (binary) form, both held inline
/// (a baseline records a row per file: no allocations of their own, freed by another thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    mac: [u8; 32],
    hash: Option<HashBytes>,
}

/// A hash in its stored (binary) form: BLAKE3's 32 bytes inline; a hash of another length (only
/// in a row edited by hand, whose MAC is being checked) on the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HashBytes {
    Blake3([u8; 32]),
    Other(Vec<u8>),
}

impl HashBytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            HashBytes::Blake3(h) => h,
            HashBytes::Other(h) => h,
        }
    }
}

/// Computes row MACs with the baseline's key, on any thread: so that the hashing threads seal the
/// rows they prepare and the single writer only writes them.
#[derive(Clone)]
pub struct Sealer {
    key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer with an all-zero key, for tests that never write what it seals.
    #[cfg(test)]
    pub(crate) fn unkeyed() -> Sealer {
        Sealer { key: [0; 32] }
    }

    /// The MAC of the row (`key`, `checks`, `attrs`) and its hash as stored.
    pub fn seal(&self, key: &[u8], checks: u16, attrs: &FileAttrs) -> Seal {
        self.seal_hashed(key, checks, attrs, None)
    }

    /// [`Sealer::seal`], given the hash whose hex `attrs` holds when it was just computed: it is
    /// not parsed back from the hex.
    pub fn seal_hashed(
        &self,
        key: &[u8],
        checks: u16,
        attrs: &FileAttrs,
        computed: Option<&blake3::Hash>,
    ) -> Seal {
        let hash = match (computed, attrs.hash.as_deref()) {
            (Some(h), Some(hex)) => {
                debug_assert_eq!(hex, h.to_hex().as_str(), "not the hash of these attributes");
                Some(HashBytes::Blake3(*h.as_bytes()))
            }
            (_, hex) => hex.and_then(hex_to_bytes),
        };
        let mac = row_mac(
            &self.key,
            key,
            checks,
            attrs,
            hash.as_ref().map(HashBytes::as_slice),
        );
        Seal { mac, hash }
    }

    /// Checks the MAC of a row read unchecked by [`Baseline::read_page`], setting its `mac_ok`.
    pub fn check(&self, row: &mut Row) {
        // The stored hash is what `seal` takes back from the row's hex.
        row.mac_ok = self.seal(&row.key, row.checks, &row.attrs).mac[..] == row.mac[..];
    }
}

/// Rows written per transaction while recording a new baseline in bulk.
const BULK_ROWS: u64 = 8192;

/// The baseline: an open database connection and the MAC key.
pub struct Baseline {
    conn: Connection,
    db_path: PathBuf,
    mac_key: [u8; 32],
    /// Recording a new baseline: writes share transactions of [`BULK_ROWS`] rows, and the WAL is
    /// checkpointed once at the end.
    bulk: bool,
    /// Rows written in the bulk transaction open now (None: none is open).
    bulk_open: Option<u64>,
    /// While in bulk: the thread folding committed WAL frames into the database file.
    checkpointer: Option<Checkpointer>,
}

/// A thread with a connection of its own that checkpoints the WAL (PASSIVE: never waiting on the
/// writer) after each bulk commit, so that the copy into the database file and its fsyncs run
/// while the scan goes on, rather than all at its end.
struct Checkpointer {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// None when the connection or the thread cannot be had: the final checkpoint does it all.
    fn start(db_path: &Path) -> Option<Checkpointer> {
        let conn = Connection::open_with_flags(
            db_path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        // Its checkpoints sync the WAL before copying from it, and the database file after.
        conn.pragma_update(None, "synchronous", "NORMAL").ok()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("fim-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // Busy (another checkpoint, a reader at the end of the WAL): next time.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .ok()?;
        Some(Checkpointer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint (one already asked for and not started covers this one too).
    fn poke(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Reads the MAC key, creating it when `create` and it does not exist.
fn load_key(dir: &Path, create: bool) -> Result<[u8; 32], FimError> {
    let path = dir.join(KEY_FILE);
    let io_err = |source: io::Error| FimError::Io {
        path: path.clone(),
        source,
    };
    let open = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path);
    let mut file = match open {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            let mut key = [0u8; 32];
            fs::File::open("/dev/urandom")
                .and_then(|mut r| r.read_exact(&mut key))
                .map_err(|source| FimError::Io {
                    path: PathBuf::from("/dev/urandom"),
                    source,
                })?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(io_err)?;
            f.write_all(&key)
                .and_then(|_| f.sync_all())
                .map_err(io_err)?;
            return Ok(key);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FimError::NoKey { path });
        }
        Err(e) => return Err(io_err(e)),
    };
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() || meta.len() != 32 {
        return Err(FimError::BadKey {
            path,
            reason: "it must be a regular file of exactly 32 bytes".into(),
        });
    }
    if meta.uid() != crate::sys::euid() {
        return Err(FimError::BadKey {
            path,
            reason: format!("it is owned by uid {}, not by us", meta.uid()),
        });
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err)?;
    }
    let mut key = [0u8; 32];
    file.read_exact(&mut key).map_err(io_err)?;
    Ok(key)
}

/// The MAC of a row: the keyed BLAKE3 hash of [`mac_input`].
fn row_mac(
    mac_key: &[u8; 32],
    key: &[u8],
    checks: u16,
    a: &FileAttrs,
    hash: Option<&[u8]>,
) -> [u8; 32] {
    thread_local! {
        // The input is put together in the same buffer for every row this thread seals.
        static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let mac = |out: &mut Vec<u8>| {
        out.clear();
        mac_input(out, key, checks, a, hash);
        *blake3::keyed_hash(mac_key, out).as_bytes()
    };
    INPUT.with(|cell| match cell.try_borrow_mut() {
        Ok(mut out) => {
            let m = mac(&mut out);
            // A very long key or link target does not keep its buffer for good.
            if out.capacity() > 64 << 10 {
                *out = Vec::new();
            }
            m
        }
        Err(_) => mac(&mut Vec::new()),
    })
}

/// The canonical bytes a row's MAC covers, appended to `out`.
fn mac_input(out: &mut Vec<u8>, key: &[u8], checks: u16, a: &FileAttrs, hash: Option<&[u8]>) {
    fn num(out: &mut Vec<u8>, v: Option<i128>) {
        match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    fn bytes(out: &mut Vec<u8>, v: Option<&[u8]>) {
        match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out.reserve(192 + key.len());
    out.extend_from_slice(b"hids fim row v1\0");
    bytes(out, Some(key));
    out.extend_from_slice(&checks.to_le_bytes());
    bytes(out, a.file_type.map(|t| t.as_str().as_bytes()));
    num(out, a.size.map(i128::from));
    num(out, a.mode.map(i128::from));
    num(out, a.uid.map(i128::from));
    num(out, a.gid.map(i128::from));
    bytes(out, a.user.as_deref().map(str::as_bytes));
    bytes(out, a.group.as_deref().map(str::as_bytes));
    num(out, a.inode.map(i128::from));
    num(out, a.device.map(i128::from));
    num(out, a.mtime.map(i128::from));
    num(out, a.ctime.map(i128::from));
    bytes(out, hash);
    bytes(out, a.hash_skipped.as_deref().map(str::as_bytes));
    bytes(out, a.link_target.as_deref().map(str::as_bytes));
}

fn hex_to_bytes(s: &str) -> Option<HashBytes> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() % 2 != 0 {
        return None;
    }
    if let Ok(h) = blake3::Hash::from_hex(s) {
        return Some(HashBytes::Blake3(*h.as_bytes()));
    }
    let mut out = Vec::with_capacity(s.len() / 2);
    for p in s.chunks_exact(2) {
        out.push(nibble(p[0])? << 4 | nibble(p[1])?);
    }
    Some(HashBytes::Other(out))
}

fn bytes_to_hex(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(char::from(HEX[usize::from(x >> 4)]));
        s.push(char::from(HEX[usize::from(x & 15)]));
    }
    s
}

const ROW_COLUMNS: &str = "key, checks, type, size, mode, uid, gid, user, grp, inode, dev, mtime, \
                           ctime, hash, hash_skipped, link, since, mac";
/// The columns read for a [`Row`]: the stored ones and whether a copy of the content is kept.
const READ_COLUMNS: &str =
    "key, checks, type, size, mode, uid, gid, user, grp, inode, dev, mtime, \
                            ctime, hash, hash_skipped, link, since, mac, \
                            EXISTS (SELECT 1 FROM fim_content c WHERE c.key = fim_entry.key)";

/// Rows per multi-row insert (18 parameters each: well under SQLite's limit of 32766), and the
/// smaller statement for the end of a batch.
const ROWS_PER_INSERT: usize = 64;
const FEW_ROWS_PER_INSERT: usize = 8;

/// Whether an op only inserts a row, in bulk: no content to store, no history to keep.
fn plain_insert(op: &Op) -> bool {
    matches!(
        op,
        Op::Put {
            expect: None,
            record: None,
            content: ContentOp::Keep | ContentOp::Delete,
            ..
        }
    )
}

/// The statement inserting `n` rows at once, none over an existing one.
fn insert_rows_sql(n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    let make = |n: usize| {
        let row = format!("({})", vec!["?"; 18].join(","));
        format!(
            "INSERT INTO fim_entry ({ROW_COLUMNS}) VALUES {} ON CONFLICT (key) DO NOTHING",
            vec![row; n].join(",")
        )
    };
    let sql = SQL.get_or_init(|| [make(ROWS_PER_INSERT), make(FEW_ROWS_PER_INSERT)]);
    if n == ROWS_PER_INSERT {
        &sql[0]
    } else {
        &sql[1]
    }
}

/// Inserts the rows of `ops` (plain inserts, [`ROWS_PER_INSERT`] or [`FEW_ROWS_PER_INSERT`] of
/// them) in one statement. False, with nothing written, when a row existed for one of the keys:
/// then each must be tried on its own to know which applied.
///
/// `bound`: the rows whose values `stmt` holds from its last run in the same [`Baseline::apply`]
/// (so with the same `now`), if any. A value equal to the one bound in its place already is not
/// bound again: most columns repeat from row to row (type, owner, mode, device...), and binding
/// text copies it.
fn insert_rows<'o>(
    conn: &Connection,
    stmt: &mut rusqlite::Statement<'_>,
    ops: &'o [Op],
    macs: &[Option<Seal>],
    now: i64,
    bound: &mut Option<&'o [Op]>,
) -> rusqlite::Result<bool> {
    // Nothing is bound unless every row can be.
    let sealed = |(op, computed): (&Op, &Option<Seal>)| matches!(op, Op::Put { seal, .. } if seal.is_some() || computed.is_some());
    if !ops.iter().zip(macs).all(sealed) {
        return Ok(false);
    }
    // What the statement holds is known again once every value is bound.
    let held = bound.take().filter(|p| p.len() == ops.len());
    for (r, (op, computed)) in ops.iter().zip(macs).enumerate() {
        let Op::Put {
            key,
            checks,
            attrs: a,
            seal,
            ..
        } = op
        else {
            return Ok(false);
        };
        let Some(Seal { mac, hash }) = seal.as_ref().or(computed.as_ref()) else {
            return Ok(false);
        };
        let (old_checks, o) = match held.map(|p| &p[r]) {
            Some(Op::Put { checks, attrs, .. }) => (Some(*checks), Some(attrs)),
            _ => (None, None),
        };
        // Whether a column's value differs from the one held (or none is known).
        let differs = |same: &dyn Fn(&FileAttrs) -> bool| o.map_or(true, |o| !same(o));
        let at = r * 18;
        stmt.raw_bind_parameter(at + 1, key)?;
        if old_checks != Some(*checks) {
            stmt.raw_bind_parameter(at + 2, i64::from(*checks))?;
        }
        if differs(&|o| o.file_type == a.file_type) {
            stmt.raw_bind_parameter(at + 3, a.file_type.map(|t| t.as_str()))?;
        }
        if differs(&|o| o.size == a.size) {
            stmt.raw_bind_parameter(at + 4, a.size.map(|v| v as i64))?;
        }
        if differs(&|o| o.mode == a.mode) {
            stmt.raw_bind_parameter(at + 5, a.mode.map(i64::from))?;
        }
        if differs(&|o| o.uid == a.uid) {
            stmt.raw_bind_parameter(at + 6, a.uid.map(i64::from))?;
        }
        if differs(&|o| o.gid == a.gid) {
            stmt.raw_bind_parameter(at + 7, a.gid.map(i64::from))?;
        }
        if differs(&|o| o.user == a.user) {
            stmt.raw_bind_parameter(at + 8, &a.user)?;
        }
        if differs(&|o| o.group == a.group) {
            stmt.raw_bind_parameter(at + 9, &a.group)?;
        }
        if differs(&|o| o.inode == a.inode) {
            stmt.raw_bind_parameter(at + 10, a.inode.map(|v| v as i64))?;
        }
        if differs(&|o| o.device == a.device) {
            stmt.raw_bind_parameter(at + 11, a.device.map(|v| v as i64))?;
        }
        if differs(&|o| o.mtime == a.mtime) {
            stmt.raw_bind_parameter(at + 12, a.mtime)?;
        }
        if differs(&|o| o.ctime == a.ctime) {
            stmt.raw_bind_parameter(at + 13, a.ctime)?;
        }
        stmt.raw_bind_parameter(at + 14, hash.as_ref().map(HashBytes::as_slice))?;
        if differs(&|o| o.hash_skipped == a.hash_skipped) {
            stmt.raw_bind_parameter(at + 15, &a.hash_skipped)?;
        }
        if differs(&|o| o.link_target == a.link_target) {
            stmt.raw_bind_parameter(at + 16, &a.link_target)?;
        }
        if held.is_none() {
            stmt.raw_bind_parameter(at + 17, now)?;
        }
        stmt.raw_bind_parameter(at + 18, &mac[..])?;
    }
    *bound = Some(ops);
    conn.prepare_cached("SAVEPOINT fim_rows")?.execute([])?;
    let inserted = stmt.raw_execute();
    let all = matches!(inserted, Ok(n) if n == ops.len());
    if !all {
        // Also on an error: the statement's rows are undone before it is reported.
        conn.prepare_cached("ROLLBACK TO fim_rows")?.execute([])?;
    }
    conn.prepare_cached("RELEASE fim_rows")?.execute([])?;
    inserted.map(|_| all)
}

impl Baseline {
    /// Opens the baseline in the state directory. With `create_key`, a missing MAC key is created
    /// (a new baseline); otherwise a missing key is an error.
    pub fn open(state_dir: &Path, create_key: bool) -> Result<Baseline, FimError> {
        let state = crate::state::State::open(state_dir)?;
        let mac_key = load_key(state_dir, create_key)?;
        // A scan reads the whole table in key order: a larger page cache (bounded: 16 MiB) saves
        // re-reading interior pages. (Not mmap: mapped pages would count towards the agent's
        // resident memory, which would then grow with the tree.)
        let _ = state.conn.pragma_update(None, "cache_size", -16384i64);
        Ok(Baseline {
            conn: state.conn,
            db_path: state.db_path,
            mac_key,
            bulk: false,
            bulk_open: None,
            checkpointer: None,
        })
    }

    /// Starts recording a new baseline in bulk: [`Baseline::apply`] then writes many batches per
    /// transaction (one commit per [`BULK_ROWS`] rows, each with its own WAL frames for the same
    /// interior pages). The writer never checkpoints (an automatic checkpoint every thousand
    /// pages wrote and synced the database file again and again, on the writer's time): a
    /// thread of its own folds each committed transaction into the database file while the scan
    /// goes on, and [`Baseline::end_bulk`] the rest. Between transactions the write lock is
    /// released, so that other writers are not held off for the whole scan.
    pub fn begin_bulk(&mut self) -> Result<(), FimError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(self.sql())?;
        // The writer does not fsync: each time the checkpointing thread has emptied the WAL, the
        // next commit would otherwise sync the WAL's new header on the writer's time. The
        // checkpointing connection syncs the WAL before it copies anything into the database
        // file, and the database file after; end_bulk syncs what is left.
        self.conn
            .pragma_update(None, "synchronous", "OFF")
            .map_err(self.sql())?;
        self.bulk = true;
        self.checkpointer = Checkpointer::start(&self.db_path);
        Ok(())
    }

    /// Commits what [`Baseline::begin_bulk`] left open, checkpoints what is left of the WAL, and
    /// goes back to one transaction per [`Baseline::apply`].
    pub fn end_bulk(&mut self) -> Result<(), FimError> {
        self.bulk = false;
        // Its last checkpoint finishes first.
        self.checkpointer = None;
        let committed = match self.bulk_open.take() {
            Some(_) => self.conn.execute_batch("COMMIT").map_err(self.sql()),
            None => Ok(()),
        };
        // Back to the default (1000 pages); then fold the WAL into the database and truncate it
        // (left to later if a reader holds it: not an error).
        let restored = self
            .conn
            .pragma_update(None, "wal_autocheckpoint", 1000)
            .and_then(|()| self.conn.pragma_update(None, "synchronous", "NORMAL"))
            .map_err(self.sql());
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        committed.and(restored)
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> FimError + '_ {
        move |source| FimError::Sql {
            path: self.db_path.clone(),
            source,
        }
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    fn mac(&self, key: &[u8], checks: u16, a: &FileAttrs, hash: Option<&[u8]>) -> [u8; 32] {
        row_mac(&self.mac_key, key, checks, a, hash)
    }

    /// What seals rows with this baseline's key (see [`Op::Put`]'s `seal`).
    pub fn sealer(&self) -> Sealer {
        Sealer { key: self.mac_key }
    }

    /// Another connection to the same baseline, for reading it (a scan's cursor) while this one
    /// writes. WAL mode: it never waits on the writer, and sees what was committed when each of
    /// its queries starts.
    pub fn reader(&self) -> Result<Baseline, FimError> {
        let conn = crate::state::open_db(&self.db_path)?;
        // Pages are read in key order, each once: a small cache keeps the interior pages (4 MiB,
        // so that the two connections together stay within what one had before).
        let _ = conn.pragma_update(None, "cache_size", -4096i64);
        conn.pragma_update(None, "query_only", true)
            .map_err(self.sql())?;
        Ok(Baseline {
            conn,
            db_path: self.db_path.clone(),
            mac_key: self.mac_key,
            bulk: false,
            bulk_open: None,
            checkpointer: None,
        })
    }

    fn content_mac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut h = blake3::Hasher::new_keyed(&self.mac_key);
        h.update(b"hids fim content v1\0");
        h.update(&(key.len() as u64).to_le_bytes());
        h.update(key);
        h.update(data);
        h.finalize().as_bytes().to_vec()
    }

    /// A value from the FIM bookkeeping table.
    pub fn meta(&self, name: &str) -> Result<Option<String>, FimError> {
        self.conn
            .query_row(
                "SELECT value FROM fim_meta WHERE key = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())
    }

    pub fn set_meta(&self, name: &str, value: &str) -> Result<(), FimError> {
        self.conn
            .execute(
                "INSERT INTO fim_meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
            .map(|_| ())
            .map_err(self.sql())
    }

    /// Whether a baseline was completed at least once.
    pub fn is_initialized(&self) -> Result<bool, FimError> {
        Ok(self.meta("initialized")?.is_some())
    }

    /// Empties the baseline (before `init`).
    pub fn clear(&mut self) -> Result<(), FimError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| FimError::Sql {
                path: self.db_path.clone(),
                source,
            })?;
        let r = tx.execute_batch(
            "DELETE FROM fim_entry; DELETE FROM fim_content; DELETE FROM fim_change;
             DELETE FROM fim_meta WHERE key = 'initialized';",
        );
        r.and_then(|_| tx.commit()).map_err(self.sql())
    }

    /// A row as read; its MAC checked only with `check` (else `mac_ok` is false).
    fn row_from(&self, r: &rusqlite::Row<'_>, check: bool) -> rusqlite::Result<Row> {
        let key: Vec<u8> = r.get(0)?;
        let checks: i64 = r.get(1)?;
        let checks = checks as u16;
        let hash: Option<Vec<u8>> = r.get(13)?;
        let attrs = FileAttrs {
            file_type: r.get::<_, Option<String>>(2)?.map(|s| FileType::parse(&s)),
            size: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
            mode: r.get::<_, Option<i64>>(4)?.map(|v| v as u32),
            uid: r.get::<_, Option<i64>>(5)?.map(|v| v as u32),
            gid: r.get::<_, Option<i64>>(6)?.map(|v| v as u32),
            user: r.get(7)?,
            group: r.get(8)?,
            inode: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
            device: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
            mtime: r.get(11)?,
            ctime: r.get(12)?,
            hash: hash.as_deref().map(bytes_to_hex),
            hash_skipped: r.get(14)?,
            link_target: r.get(15)?,
        };
        let since: i64 = r.get(16)?;
        let mac: Vec<u8> = r.get(17)?;
        let has_content: bool = r.get(18)?;
        let mac_ok = check && self.mac(&key, checks, &attrs, hash.as_deref())[..] == mac[..];
        Ok(Row {
            key,
            checks,
            attrs,
            since,
            mac,
            mac_ok,
            has_content,
        })
    }

    /// Up to `limit` rows in key order with keys after `after` (or from `from`, inclusive, when
    /// `after` is None) and before `before`.
    pub fn page(
        &self,
        from: &[u8],
        after: Option<&[u8]>,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Row>, FimError> {
        self.read_page(from, after, before, limit, true)
    }

    /// [`Baseline::page`], checking the rows' MACs only with `check`: otherwise each row's
    /// `mac_ok` is false until [`Sealer::check`] is called on it (a scan checks them on its
    /// hashing threads).
    pub fn read_page(
        &self,
        from: &[u8],
        after: Option<&[u8]>,
        before: Option<&[u8]>,
        limit: usize,
        check: bool,
    ) -> Result<Vec<Row>, FimError> {
        let (op, start) = match after {
            Some(a) => (">", a),
            None => (">=", from),
        };
        // Two statements, not `(?2 IS NULL OR key < ?2)`: SQLite cannot use that as the upper
        // bound of the range, and read every row after `start` to the end of the table looking
        // for more matches (a real-time check of one path read the whole baseline).
        let mut stmt = match before {
            Some(_) => self.conn.prepare_cached(&format!(
                "SELECT {READ_COLUMNS} FROM fim_entry WHERE key {op} ?1 AND key < ?2
                 ORDER BY key LIMIT ?3"
            )),
            None => self.conn.prepare_cached(&format!(
                "SELECT {READ_COLUMNS} FROM fim_entry WHERE key {op} ?1 ORDER BY key LIMIT ?2"
            )),
        }
        .map_err(self.sql())?;
        let map = |r: &rusqlite::Row<'_>| self.row_from(r, check);
        let rows = match before {
            Some(hi) => stmt.query_map(params![start, hi, limit as i64], map),
            None => stmt.query_map(params![start, limit as i64], map),
        }
        .map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }

    /// The row for one key.
    pub fn get(&self, key: &[u8]) -> Result<Option<Row>, FimError> {
        let sql = format!("SELECT {READ_COLUMNS} FROM fim_entry WHERE key = ?1");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.sql())?;
        stmt.query_row(params![key], |r| self.row_from(r, true))
            .optional()
            .map_err(self.sql())
    }

    /// Calls `f` for each row under `prefix` (the prefix itself included), in key order, a page
    /// at a time.
    pub fn for_each(&self, prefix: &[u8], mut f: impl FnMut(&Row) -> bool) -> Result<(), FimError> {
        if let Some(r) = self.get(prefix)? {
            if !f(&r) {
                return Ok(());
            }
        }
        let (lo, hi) = subtree_bounds(prefix);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.page(&lo, after.as_deref(), Some(&hi), 4096)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.key.clone());
            for r in &page {
                if !f(r) {
                    return Ok(());
                }
            }
        }
    }

    /// The stored text copy of a file, if any.
    pub fn content(&self, key: &[u8]) -> Result<Option<Content>, FimError> {
        let got: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT data, mac FROM fim_content WHERE key = ?1")
            .and_then(|mut s| {
                s.query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(self.sql())?;
        let Some((data, mac)) = got else {
            return Ok(None);
        };
        if self.content_mac(key, &data) != mac {
            return Ok(Some(Content::Tampered));
        }
        match super::diff::decompress(&data) {
            Some(text) => Ok(Some(Content::Text(text))),
            None => Ok(Some(Content::Tampered)),
        }
    }

    /// The recorded changes of a path, oldest first: (time, kind, JSON record).
    pub fn history(&self, key: &[u8]) -> Result<Vec<(i64, String, String)>, FimError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT time, kind, record FROM fim_change WHERE key = ?1 ORDER BY id")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }

    /// Number of rows.
    pub fn count(&self) -> Result<u64, FimError> {
        self.conn
            .query_row("SELECT count(*) FROM fim_entry", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(self.sql())
    }

    /// Applies the writes in one transaction. Returns, per op, whether it applied: false means the
    /// row was changed by another writer since it was read, and the path must be compared again.
    pub fn apply(&mut self, ops: &[Op]) -> Result<Vec<bool>, FimError> {
        let now = now_secs();
        let mut done = Vec::with_capacity(ops.len());
        // Compute the MACs not computed ahead before borrowing the connection for the transaction.
        type ContentRow = Option<(Vec<u8>, Vec<u8>, usize)>;
        let sealer = self.sealer();
        let macs: Vec<Option<Seal>> = ops
            .iter()
            .map(|op| match op {
                Op::Put { seal: Some(_), .. } => None,
                Op::Put {
                    key, checks, attrs, ..
                } => Some(sealer.seal(key, *checks, attrs)),
                Op::Delete { .. } => None,
            })
            .collect();
        let contents: Vec<ContentRow> = ops
            .iter()
            .map(|op| match op {
                Op::Put {
                    key,
                    content: ContentOp::Set(text),
                    ..
                } => {
                    let data = super::diff::compress(text);
                    let mac = self.content_mac(key, &data);
                    Some((data, mac, text.len()))
                }
                _ => None,
            })
            .collect();
        let db_path = self.db_path.clone();
        let sql = |source| FimError::Sql {
            path: db_path.clone(),
            source,
        };
        // Outside bulk mode, one transaction for this call; in bulk mode, the open bulk
        // transaction (begun here when none is).
        let tx = if self.bulk {
            if self.bulk_open.is_none() {
                self.conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
                self.bulk_open = Some(0);
            }
            None
        } else {
            Some(
                Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
                    .map_err(sql)?,
            )
        };
        let conn: &Connection = &self.conn;
        {
            let mut update = conn
                .prepare_cached(
                    "UPDATE fim_entry SET checks=?2, type=?3, size=?4, mode=?5, uid=?6, gid=?7,
                     user=?8, grp=?9, inode=?10, dev=?11, mtime=?12, ctime=?13, hash=?14,
                     hash_skipped=?15, link=?16, since=?17, mac=?18 WHERE key=?1 AND mac=?19",
                )
                .map_err(sql)?;
            let mut insert = conn
                .prepare_cached(&format!(
                    "INSERT INTO fim_entry ({ROW_COLUMNS}) VALUES
                     (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)
                     ON CONFLICT (key) DO NOTHING"
                ))
                .map_err(sql)?;
            let mut delete = conn
                .prepare_cached("DELETE FROM fim_entry WHERE key = ?1 AND mac = ?2")
                .map_err(sql)?;
            let mut put_content = conn
                .prepare_cached(
                    "INSERT INTO fim_content (key, size, data, mac) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key) DO UPDATE SET size = excluded.size, data = excluded.data,
                     mac = excluded.mac",
                )
                .map_err(sql)?;
            let mut del_content = conn
                .prepare_cached("DELETE FROM fim_content WHERE key = ?1")
                .map_err(sql)?;
            let mut add_change = conn
                .prepare_cached(
                    "INSERT INTO fim_change (key, time, kind, record) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql)?;
            let mut prune = conn
                .prepare_cached(
                    "DELETE FROM fim_change WHERE key = ?1 AND id <= (SELECT id FROM fim_change
                     WHERE key = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                )
                .map_err(sql)?;
            // Held for the whole call: a statement given back to the cache drops its bindings,
            // and binding hundreds of values anew costs as many allocations.
            let (mut many, mut few) = if self.bulk {
                (
                    Some(
                        conn.prepare_cached(insert_rows_sql(ROWS_PER_INSERT))
                            .map_err(sql)?,
                    ),
                    Some(
                        conn.prepare_cached(insert_rows_sql(FEW_ROWS_PER_INSERT))
                            .map_err(sql)?,
                    ),
                )
            } else {
                (None, None)
            };
            // The rows whose values each multi-row statement holds (see `insert_rows`).
            let (mut many_bound, mut few_bound): (Option<&[Op]>, Option<&[Op]>) = (None, None);
            // Up to this op, rows are inserted one by one (a run that had a conflict).
            let mut single_until = 0;
            let mut i = 0;
            while i < ops.len() {
                // A new baseline: runs of plain inserts go many rows to a statement, which saves
                // the statement's set-up and, the keys coming in order, the search for where each
                // goes (SQLite appends after the previous row).
                if self.bulk && i >= single_until {
                    let run = ops[i..]
                        .iter()
                        .take(ROWS_PER_INSERT)
                        .take_while(|op| plain_insert(op))
                        .count();
                    let (n, stmt, bound) = match run {
                        ROWS_PER_INSERT => (ROWS_PER_INSERT, many.as_mut(), &mut many_bound),
                        r if r >= FEW_ROWS_PER_INSERT => {
                            (FEW_ROWS_PER_INSERT, few.as_mut(), &mut few_bound)
                        }
                        _ => (0, None, &mut few_bound),
                    };
                    if let Some(stmt) = stmt {
                        let (ops, macs) = (&ops[i..i + n], &macs[i..i + n]);
                        if insert_rows(conn, stmt, ops, macs, now, bound).map_err(sql)? {
                            done.extend(std::iter::repeat(true).take(n));
                            i += n;
                            continue;
                        }
                        // Some row exists already: this run again, row by row.
                        single_until = i + n;
                    }
                }
                let op = &ops[i];
                let at = i;
                i += 1;
                let (key, record) = match op {
                    Op::Put {
                        key,
                        checks,
                        attrs: a,
                        expect,
                        content,
                        record,
                        seal,
                    } => {
                        let Some(Seal { mac, hash }) = seal.as_ref().or(macs[at].as_ref()) else {
                            // Every put is sealed ahead or above; were one not, it is not
                            // written, and says so in its place.
                            done.push(false);
                            continue;
                        };
                        debug_assert!(
                            seal.is_none() || seal.as_ref() == Some(&sealer.seal(key, *checks, a)),
                            "a row sealed ahead no longer matches its seal"
                        );
                        let (mac, hash) = (&mac[..], hash.as_ref().map(HashBytes::as_slice));
                        let values = params![
                            key,
                            i64::from(*checks),
                            a.file_type.map(|t| t.as_str()),
                            a.size.map(|v| v as i64),
                            a.mode.map(i64::from),
                            a.uid.map(i64::from),
                            a.gid.map(i64::from),
                            a.user,
                            a.group,
                            a.inode.map(|v| v as i64),
                            a.device.map(|v| v as i64),
                            a.mtime,
                            a.ctime,
                            hash,
                            a.hash_skipped,
                            a.link_target,
                            now,
                            mac,
                        ];
                        let n = match expect {
                            None => insert.execute(values).map_err(sql)?,
                            Some(old) => {
                                let mut v: Vec<&dyn rusqlite::ToSql> = values.to_vec();
                                v.push(old);
                                update.execute(v.as_slice()).map_err(sql)?
                            }
                        };
                        if n == 0 {
                            done.push(false);
                            continue;
                        }
                        match content {
                            ContentOp::Keep => {}
                            // A new baseline's rows are inserted into the tables `clear` emptied:
                            // a key without a row has no copy either (rows and copies go together).
                            ContentOp::Delete if self.bulk && expect.is_none() => {}
                            ContentOp::Delete => {
                                del_content.execute(params![key]).map_err(sql)?;
                            }
                            ContentOp::Set(_) => {
                                if let Some((data, cmac, size)) = &contents[at] {
                                    put_content
                                        .execute(params![key, *size as i64, data, cmac])
                                        .map_err(sql)?;
                                }
                            }
                        }
                        (key, record)
                    }
                    Op::Delete {
                        key,
                        expect,
                        record,
                    } => {
                        if delete.execute(params![key, expect]).map_err(sql)? == 0 {
                            done.push(false);
                            continue;
                        }
                        del_content.execute(params![key]).map_err(sql)?;
                        (key, record)
                    }
                };
                if let Some((kind, json)) = record {
                    add_change
                        .execute(params![key, now, kind, json])
                        .map_err(sql)?;
                    prune.execute(params![key, HISTORY_PER_PATH]).map_err(sql)?;
                }
                done.push(true);
            }
        }
        match tx {
            Some(tx) => tx.commit().map_err(sql)?,
            None => {
                let rows = self.bulk_open.unwrap_or(0) + ops.len() as u64;
                if rows >= BULK_ROWS {
                    self.bulk_open = None;
                    self.conn.execute_batch("COMMIT").map_err(sql)?;
                    if let Some(c) = &self.checkpointer {
                        c.poke();
                    }
                } else {
                    self.bulk_open = Some(rows);
                }
            }
        }
        Ok(done)
    }

    /// Overwrites a stored row's size without updating its MAC (tests of tamper detection).
    #[cfg(test)]
    pub(crate) fn tamper(&self, key: &[u8]) {
        self.conn
            .execute(
                "UPDATE fim_entry SET size = coalesce(size, 0) + 1 WHERE key = ?1",
                params![key],
            )
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_walk_order() {
        let mut paths = [
            "/etc.d", "/etc/a", "/etc", "/etc/a/b", "/etc-x", "/", "/etc/a.b",
        ];
        paths.sort_by_key(|p| key_of(Path::new(p)));
        assert_eq!(
            paths,
            ["/", "/etc", "/etc/a", "/etc/a/b", "/etc/a.b", "/etc-x", "/etc.d"]
        );
        for p in paths {
            assert_eq!(path_of_key(&key_of(Path::new(p))), Path::new(p));
        }
        let etc = key_of(Path::new("/etc"));
        assert!(is_under(&key_of(Path::new("/etc/a/b")), &etc));
        assert!(!is_under(&key_of(Path::new("/etc.d")), &etc));
        assert!(!is_under(&etc, &etc));
    }

    #[test]
    fn bulk_commits_are_folded_into_the_database_file_while_the_scan_goes_on() {
        let d = tempfile::tempdir().unwrap();
        let mut b = Baseline::open(d.path(), true).unwrap();
        let db = b.db_path().to_path_buf();
        let wal = db.with_extension("db-wal");
        let start = fs::metadata(&db).unwrap().len();
        b.begin_bulk().unwrap();
        let put = |i: u64| Op::Put {
            key: key_of(Path::new(&format!("/tree/{i:08}"))),
            checks: 0x7ff,
            attrs: FileAttrs {
                file_type: Some(FileType::File),
                size: Some(i),
                ..Default::default()
            },
            expect: None,
            content: ContentOp::Keep,
            record: None,
            seal: None,
        };
        let ops: Vec<Op> = (0..BULK_ROWS + 10).map(put).collect();
        b.apply(&ops).unwrap();
        // One bulk transaction committed: the checkpointing thread copies it into the database
        // file without the writer's help.
        let grown = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            fs::metadata(&db).unwrap().len() > start + 50 * 4096
        });
        assert!(grown, "the database file did not grow during the bulk");
        b.apply(&[put(BULK_ROWS + 10)]).unwrap();
        b.end_bulk().unwrap();
        assert_eq!(b.count().unwrap(), BULK_ROWS + 11);
        // All of it in the database file, the WAL emptied, and commits synced as before.
        assert_eq!(fs::metadata(&wal).map_or(0, |m| m.len()), 0);
        let sync: i64 = b
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1);
    }

    #[test]
    fn bulk_inserts_many_rows_at_once_and_still_sees_rows_that_exist() {
        let d = tempfile::tempdir().unwrap();
        let mut b = Baseline::open(d.path(), true).unwrap();
        let sealer = b.sealer();
        let put = |i: u64, size: u64, sealed: bool| {
            let key = key_of(Path::new(&format!("/tree/{i:08}")));
            let attrs = FileAttrs {
                file_type: Some(FileType::File),
                size: Some(size),
                user: Some(format!("u{i}")),
                hash: Some(bytes_to_hex(blake3::hash(&i.to_le_bytes()).as_bytes())),
                ..Default::default()
            };
            let seal = sealed.then(|| sealer.seal(&key, 0x7ff, &attrs));
            Op::Put {
                key,
                checks: 0x7ff,
                attrs,
                expect: None,
                content: ContentOp::Delete,
                record: None,
                seal,
            }
        };
        // Another writer recorded rows 70 and 140 first.
        assert_eq!(
            b.apply(&[put(70, 1, false), put(140, 1, true)]).unwrap(),
            [true, true]
        );
        b.begin_bulk().unwrap();
        // Runs of 64 and 8 rows, the rest one by one; sealed ahead or not.
        let ops: Vec<Op> = (0..150).map(|i| put(i, 2, i % 3 != 0)).collect();
        let done = b.apply(&ops).unwrap();
        b.end_bulk().unwrap();
        let not_applied: Vec<usize> = (0..150).filter(|&i| !done[i]).collect();
        assert_eq!(not_applied, [70, 140]);
        assert_eq!(b.count().unwrap(), 150);
        for i in 0..150u64 {
            let row = b
                .get(&key_of(Path::new(&format!("/tree/{i:08}"))))
                .unwrap()
                .unwrap();
            assert!(row.mac_ok, "row {i}");
            let want = if i == 70 || i == 140 { 1 } else { 2 };
            assert_eq!(row.attrs.size, Some(want), "row {i}");
            assert_eq!(row.attrs.user.as_deref(), Some(format!("u{i}").as_str()));
        }
    }

    #[test]
    fn bulk_rows_whose_columns_repeat_or_change_are_each_written_as_given() {
        let d = tempfile::tempdir().unwrap();
        let mut b = Baseline::open(d.path(), true).unwrap();
        let sealer = b.sealer();
        // Every column changes now and then, each with its own period, so that a statement run
        // again holds some values from its last run and not others.
        let attrs = |i: u64| FileAttrs {
            file_type: Some(if i % 7 == 3 {
                FileType::Symlink
            } else {
                FileType::File
            }),
            size: (i % 11 != 0).then_some(i / 2),
            mode: Some(0o644 + (i / 9 % 2) as u32),
            uid: Some((i / 13 % 3) as u32),
            gid: (i % 17 != 0).then_some((i / 5 % 2) as u32),
            user: (i % 19 != 0).then(|| format!("u{}", i / 23 % 2)),
            group: Some(format!("g{}", i / 3 % 2)),
            inode: Some(i / 4),
            device: Some(i / 100),
            mtime: Some((i / 6) as i64),
            ctime: (i % 29 != 0).then_some(7),
            hash: (i % 31 != 1).then(|| bytes_to_hex(blake3::hash(&i.to_le_bytes()).as_bytes())),
            hash_skipped: (i % 31 == 1).then(|| "too large".to_string()),
            link_target: (i % 7 == 3).then(|| format!("/t{}", i / 50)),
        };
        let put = |i: u64| {
            let key = key_of(Path::new(&format!("/tree/{i:08}")));
            let checks = if i % 37 == 0 { 0x3ff } else { 0x7ff };
            let a = attrs(i);
            let seal = Some(sealer.seal(&key, checks, &a));
            Op::Put {
                key,
                checks,
                attrs: a,
                expect: None,
                content: ContentOp::Delete,
                record: None,
                seal,
            }
        };
        // A row recorded first breaks one run of 64 into rows one by one.
        assert_eq!(b.apply(&[put(200)]).unwrap(), [true]);
        b.begin_bulk().unwrap();
        let ops: Vec<Op> = (0..500).map(put).collect();
        let done = b.apply(&ops).unwrap();
        b.end_bulk().unwrap();
        assert_eq!((0..500).filter(|&i| !done[i]).collect::<Vec<_>>(), [200]);
        for i in 0..500u64 {
            let row = b
                .get(&key_of(Path::new(&format!("/tree/{i:08}"))))
                .unwrap()
                .unwrap();
            assert!(row.mac_ok, "row {i}");
            assert_eq!(row.attrs, attrs(i), "row {i}");
            assert_eq!(row.checks, if i % 37 == 0 { 0x3ff } else { 0x7ff });
        }
    }

    #[test]
    fn rows_round_trip_and_tampering_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let mut b = Baseline::open(d.path(), true).unwrap();
        let key_mode = fs::metadata(d.path().join(KEY_FILE)).unwrap().mode() & 0o777;
        assert_eq!(key_mode, 0o600);
        let attrs = FileAttrs {
            file_type: Some(FileType::File),
            size: Some(u64::MAX),
            hash: Some(bytes_to_hex(blake3::hash(b"x").as_bytes())),
            ..Default::default()
        };
        let key = key_of(Path::new("/x"));
        let put = Op::Put {
            key: key.clone(),
            checks: 0x7ff,
            attrs: attrs.clone(),
            expect: None,
            content: ContentOp::Set(b"hello\n".to_vec()),
            record: None,
            seal: None,
        };
        assert_eq!(b.apply(std::slice::from_ref(&put)).unwrap(), vec![true]);
        // A second insert of the same key does not apply: the row exists now.
        assert_eq!(b.apply(&[put]).unwrap(), vec![false]);
        let row = b.get(&key).unwrap().unwrap();
        assert!(row.mac_ok);
        assert_eq!(row.attrs, attrs);
        assert!(matches!(b.content(&key).unwrap(), Some(Content::Text(t)) if t == b"hello\n"));
        b.tamper(&key);
        assert!(!b.get(&key).unwrap().unwrap().mac_ok);
        // A stale version does not delete.
        let del = Op::Delete {
            key: key.clone(),
            expect: vec![1, 2, 3],
            record: None,
        };
        assert_eq!(b.apply(&[del]).unwrap(), vec![false]);
        drop(b);
        // The same key opens again; without a key file, opening without create fails.
        Baseline::open(d.path(), false).unwrap();
        fs::remove_file(d.path().join(KEY_FILE)).unwrap();
        assert!(matches!(
            Baseline::open(d.path(), false),
            Err(FimError::NoKey { .. })
        ));
    }
}
