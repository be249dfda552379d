//! BLAKE3 hashing of one regular file, safely: opened without following a symlink, without
//! blocking on a FIFO and without becoming a controlling terminal, checked with `fstat` to be the
//! regular file the walk saw, and re-checked after reading so that a file changing under us is
//! hashed again once it settles. Large files are cut along BLAKE3's tree and their parts read and
//! hashed on all cores at once.
//!
//! Files are read, not mmapped: a mapped file truncated by someone else while we hash it kills the
//! process with SIGBUS, and the agent runs as root over files other processes write.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::sys::Stat;

/// Files at least this large are cut into subtrees hashed on all cores at once (each thread
/// reading its own range with `pread`); below, files are spread over the cores one per thread.
pub const PARALLEL_THRESHOLD: u64 = 4 << 20;
/// The largest subtree one thread reads and hashes (a power of two, so that every cut of the
/// file lands on a BLAKE3 subtree boundary).
const SEGMENT: u64 = 1 << 20;
/// The read buffer: small enough to stay in the core's L2 cache between the kernel's copy into it
/// and BLAKE3 reading it back (a larger buffer measured slower).
const BUF_LEN: usize = 128 << 10;
const ATTEMPTS: u32 = 4;

/// What hashing a path found.
#[derive(Debug)]
pub enum Outcome {
    /// The file's hash, the metadata it had while read (unchanged from before to after reading),
    /// and its content when asked for and no larger than the limit.
    Hashed {
        meta: Stat,
        hash: blake3::Hash,
        content: Option<Vec<u8>>,
    },
    /// Larger than the size limit given: not read. Its metadata.
    TooLarge(Stat),
    /// The path is no longer a regular file (replaced by a symlink, FIFO, directory...): here is
    /// what it is now; the caller records it as such.
    NotRegular(Stat),
    /// The path disappeared.
    Vanished,
    /// Permission denied.
    Denied,
    /// The file kept changing while it was read; here is its latest metadata.
    Unsettled(Stat),
    /// Another read error.
    Failed(io::Error),
    /// The scan is stopping: given up half-way.
    Stopped,
}

/// A cap on the bytes read and the files visited per second (scheduled scans only).
#[derive(Debug)]
pub struct Throttle {
    bytes_per_s: u64,
    files_per_s: u32,
    state: Mutex<(Instant, f64, f64)>,
}

impl Throttle {
    /// None when there is no cap.
    pub fn new(bytes_per_s: u64, files_per_s: u32) -> Option<Throttle> {
        if bytes_per_s == 0 && files_per_s == 0 {
            return None;
        }
        Some(Throttle {
            bytes_per_s,
            files_per_s,
            state: Mutex::new((Instant::now(), 0.0, 0.0)),
        })
    }

    /// Accounts for `bytes` read and `files` visited, sleeping as long as needed to stay under the caps.
    pub fn take(&self, bytes: u64, files: u32) {
        let wait = {
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            let now = Instant::now();
            let elapsed = now.duration_since(st.0).as_secs_f64();
            st.0 = now;
            // Debts drain at the allowed rate; the time to sleep is the larger debt.
            let mut wait: f64 = 0.0;
            if self.bytes_per_s > 0 {
                st.1 = (st.1 - elapsed * self.bytes_per_s as f64).max(0.0) + bytes as f64;
                wait = wait.max(st.1 / self.bytes_per_s as f64 - 0.05);
            }
            if self.files_per_s > 0 {
                st.2 = (st.2 - elapsed * f64::from(self.files_per_s)).max(0.0) + f64::from(files);
                wait = wait.max(st.2 / f64::from(self.files_per_s) - 0.05);
            }
            wait
        };
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait.min(5.0)));
        }
    }
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Directory descriptors held at once, at most (a quarter of the open-file limit, at most 4096):
/// the walk runs ahead of hashing, and the files being hashed need descriptors too.
fn dir_fd_cap() -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    *CAP.get_or_init(|| {
        crate::sys::open_files_limit()
            .map_or(0, |n| usize::try_from(n / 4).map_or(4096, |n| n.min(4096)))
    })
}

static DIR_FDS: AtomicUsize = AtomicUsize::new(0);

/// A walked directory, held open: listed through its descriptor, its entries looked at by name
/// relative to it (`fstatat`), and, when held for them, its files opened relative to it
/// (`openat`) rather than by their full path, which the kernel would look up component by
/// component for every file.
#[derive(Debug)]
pub struct DirFd {
    file: File,
    /// Held for its files (counted against the cap).
    held: bool,
}

impl DirFd {
    /// Opens the directory at `path` for listing (following a final symlink, as listing the path
    /// would): by its name relative to `parent`, the directory `path` is in, when given.
    pub fn open(parent: Option<&DirFd>, path: &Path) -> io::Result<DirFd> {
        let flags = libc::O_DIRECTORY | libc::O_CLOEXEC;
        let file = match (parent, path.file_name()) {
            (Some(p), Some(name)) => crate::sys::open_at(p.file.as_fd(), name, flags)?,
            _ => std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(path)?,
        };
        Ok(DirFd { file, held: false })
    }

    /// Opens the directory `name` in `parent` for listing, not through a symlink: its `fstat`
    /// then gives its attributes, the same as an `lstat` of its name.
    pub fn open_child_dir(parent: &DirFd, name: &std::ffi::OsStr) -> io::Result<DirFd> {
        let flags = libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let file = crate::sys::open_at(parent.file.as_fd(), name, flags)?;
        Ok(DirFd { file, held: false })
    }

    /// Holds the directory for its files to be opened relative to it (the walk has checked that
    /// it is the directory whose attributes it read), if fewer than the cap are held already.
    /// Whether it is held.
    pub fn hold(&mut self) -> bool {
        if self.held {
            return true;
        }
        if DIR_FDS.fetch_add(1, Ordering::Relaxed) >= dir_fd_cap() {
            DIR_FDS.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        self.held = true;
        true
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Drop for DirFd {
    fn drop(&mut self) {
        if self.held {
            DIR_FDS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Opens the file read-only, never following a final symlink (unless `follow`), never blocking on
/// a FIFO, never becoming a controlling terminal; relative to its directory when `dir` is given
/// (`path` then ends with the name).
fn open_safely(dir: Option<&DirFd>, path: &Path, follow: bool) -> io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let open = |flags: libc::c_int| match (dir, path.file_name()) {
        (Some(d), Some(name)) => crate::sys::open_at(d.fd(), name, flags),
        _ => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path),
    };
    // O_NOATIME keeps scans from rewriting every inode's atime; it is allowed only to the owner
    // and to root, so fall back without it.
    match open(flags | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(flags),
        other => other,
    }
}

/// Hashes the regular file at `path` (through a final symlink only with `follow`). With
/// `keep_content > 0`, also returns its content when it holds no more than that many bytes.
///
/// Called from a thread of a rayon pool, large files are hashed on all the pool's threads.
pub fn hash_path(
    path: &Path,
    follow: bool,
    keep_content: u64,
    throttle: Option<&Throttle>,
    stop: Option<&AtomicBool>,
) -> Outcome {
    hash_at(None, path, follow, keep_content, u64::MAX, throttle, stop)
}

/// [`hash_path`], opening the file relative to its directory `dir` when given (the directory
/// `path` is in, held open by the walk), and reading it only when it holds at most `max_size`
/// bytes ([`Outcome::TooLarge`] otherwise).
pub fn hash_at(
    dir: Option<&DirFd>,
    path: &Path,
    follow: bool,
    keep_content: u64,
    max_size: u64,
    throttle: Option<&Throttle>,
    stop: Option<&AtomicBool>,
) -> Outcome {
    let stat = |p: &Path| {
        if follow {
            std::fs::metadata(p).map(Stat::from)
        } else {
            std::fs::symlink_metadata(p).map(Stat::from)
        }
    };
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(20 << attempt));
        }
        let file = match open_safely(dir, path, follow) {
            Ok(f) => f,
            Err(e) => {
                return match e.raw_os_error() {
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) => Outcome::Vanished,
                    Some(libc::EACCES) | Some(libc::EPERM) => Outcome::Denied,
                    // O_NOFOLLOW on a symlink, or something that cannot be opened for reading.
                    Some(libc::ELOOP) | Some(libc::ENXIO) | Some(libc::EISDIR) => {
                        match stat(path) {
                            Ok(m) => Outcome::NotRegular(m),
                            Err(_) => Outcome::Vanished,
                        }
                    }
                    _ => Outcome::Failed(e),
                };
            }
        };
        let before = match crate::sys::fstat(file.as_fd()) {
            Ok(m) => m,
            Err(e) => return Outcome::Failed(e),
        };
        if !before.is_file() {
            return Outcome::NotRegular(before);
        }
        if before.size() > max_size {
            return Outcome::TooLarge(before);
        }
        let want = keep_content > 0 && before.size() <= keep_content;
        let read = if !want
            && before.size() >= PARALLEL_THRESHOLD
            && rayon::current_thread_index().is_some()
        {
            read_hash_parallel(&file, before.size(), throttle, stop)
        } else {
            read_hash(&file, &before, want, throttle, stop)
        };
        let (hash, content) = match read {
            Ok(Got::Done(hash, content)) => (Some(hash), content),
            Ok(Got::Stopped) => return Outcome::Stopped,
            // Shorter than it was: it changed while being read; look again.
            Ok(Got::Short) => (None, None),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Outcome::Denied,
            Err(e) => return Outcome::Failed(e),
        };
        // The open file, not the path: a write to it (or a truncation) moves its size, mtime or
        // ctime; a rename over the path after the open leaves this file as it was, and what it
        // was is what was hashed (the next scan meets the new inode).
        let after = match crate::sys::fstat(file.as_fd()) {
            Ok(m) => m,
            Err(e) => return Outcome::Failed(e),
        };
        if let Some(hash) = hash.filter(|_| super::attrs::same_content(&before, &after)) {
            let content = content.filter(|c| c.len() as u64 <= keep_content);
            return Outcome::Hashed {
                meta: after,
                hash,
                content,
            };
        }
        last = Some(after);
    }
    match last {
        Some(m) => Outcome::Unsettled(m),
        None => Outcome::Vanished,
    }
}

/// What reading a file gave.
#[derive(Debug)]
enum Got {
    Done(blake3::Hash, Option<Vec<u8>>),
    /// The file ended before the size it had when opened.
    Short,
    Stopped,
}

fn stopping(stop: Option<&AtomicBool>) -> bool {
    stop.is_some_and(|s| s.load(Ordering::Relaxed))
}

/// Reads and hashes the file from start to end on this thread.
fn read_hash(
    mut file: &File,
    meta: &Stat,
    keep: bool,
    throttle: Option<&Throttle>,
    stop: Option<&AtomicBool>,
) -> io::Result<Got> {
    let size = meta.size();
    let mut hasher = blake3::Hasher::new();
    let mut content = keep.then(|| Vec::with_capacity(size as usize));
    BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() != BUF_LEN {
            buf.resize(BUF_LEN, 0);
        }
        let mut total = 0u64;
        loop {
            if stopping(stop) {
                return Ok(Got::Stopped);
            }
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += n as u64;
            if let Some(t) = throttle {
                t.take(n as u64, 0);
            }
            hasher.update(&buf[..n]);
            if let Some(c) = content.as_mut() {
                c.extend_from_slice(&buf[..n]);
                // Grew past what was announced: the caller retries or drops it.
                if c.len() as u64 > size {
                    content = None;
                }
            }
            // A short read ending exactly at the size seen by fstat is the end of a regular file:
            // one more read() returning 0 would only confirm it. (Growth since then moves the size
            // and mtime, which the caller's second fstat compares.)
            if total == size && n < buf.len() {
                break;
            }
        }
        Ok(Got::Done(hasher.finalize(), content))
    })
}

/// Hashes the first `len` bytes of a large file on all the threads of the current rayon pool:
/// the file is cut along BLAKE3's own tree (left subtrees are the largest power-of-two number of
/// chunks), each subtree of at most [`SEGMENT`] bytes is read with `pread` and hashed by one
/// thread, and the chaining values are merged up to the root. The same hash as reading it in
/// order; the kernel's copies into user memory run in parallel too.
fn read_hash_parallel(
    file: &File,
    len: u64,
    throttle: Option<&Throttle>,
    stop: Option<&AtomicBool>,
) -> io::Result<Got> {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_root, Mode};
    debug_assert!(len > SEGMENT);
    let left = left_subtree_len(len);
    let (l, r) = rayon::join(
        || subtree(file, 0, left, throttle, stop),
        || subtree(file, left, len - left, throttle, stop),
    );
    Ok(match (l?, r?) {
        (Part::Cv(l), Part::Cv(r)) => Got::Done(merge_subtrees_root(&l, &r, Mode::Hash), None),
        (Part::Stopped, _) | (_, Part::Stopped) => Got::Stopped,
        _ => Got::Short,
    })
}

enum Part {
    Cv(blake3::hazmat::ChainingValue),
    Short,
    Stopped,
}

/// The chaining value of the subtree of `len` bytes at `offset` (a valid BLAKE3 subtree).
fn subtree(
    file: &File,
    offset: u64,
    len: u64,
    throttle: Option<&Throttle>,
    stop: Option<&AtomicBool>,
) -> io::Result<Part> {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, HasherExt, Mode};
    use std::os::unix::fs::FileExt;
    if stopping(stop) {
        return Ok(Part::Stopped);
    }
    if len > SEGMENT {
        let left = left_subtree_len(len);
        let (l, r) = rayon::join(
            || subtree(file, offset, left, throttle, stop),
            || subtree(file, offset + left, len - left, throttle, stop),
        );
        return Ok(match (l?, r?) {
            (Part::Cv(l), Part::Cv(r)) => Part::Cv(merge_subtrees_non_root(&l, &r, Mode::Hash)),
            (Part::Stopped, _) | (_, Part::Stopped) => Part::Stopped,
            _ => Part::Short,
        });
    }
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() != BUF_LEN {
            buf.resize(BUF_LEN, 0);
        }
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(BUF_LEN as u64) as usize;
            let n = match file.read_at(&mut buf[..want], offset + done) {
                Ok(0) => return Ok(Part::Short),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Some(t) = throttle {
                t.take(n as u64, 0);
            }
            hasher.update(&buf[..n]);
            done += n as u64;
        }
        Ok(Part::Cv(hasher.finalize_non_root()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_small_and_large_files_like_blake3() {
        let d = tempfile::tempdir().unwrap();
        let small = d.path().join("s");
        std::fs::write(&small, b"hello").unwrap();
        let big = d.path().join("b");
        let data: Vec<u8> = (0..(PARALLEL_THRESHOLD as usize + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&big, &data).unwrap();
        match hash_path(&small, false, 100, None, None) {
            Outcome::Hashed { hash, content, .. } => {
                assert_eq!(hash, blake3::hash(b"hello"));
                assert_eq!(content.unwrap(), b"hello");
            }
            o => panic!("{o:?}"),
        }
        match hash_path(&big, false, 100, None, None) {
            Outcome::Hashed { hash, content, .. } => {
                assert_eq!(hash, blake3::hash(&data));
                assert!(content.is_none());
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn large_files_cut_into_subtrees_hash_like_blake3() {
        let d = tempfile::tempdir().unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        // Around the threshold, at and around powers of two, and with a partial last chunk.
        for len in [
            PARALLEL_THRESHOLD,
            PARALLEL_THRESHOLD + 1,
            PARALLEL_THRESHOLD + 1023,
            5 * SEGMENT + 12345,
            8 * SEGMENT,
            8 * SEGMENT + 1024,
        ] {
            let f = d.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len as usize).map(|i| (i % 251) as u8).collect();
            std::fs::write(&f, &data).unwrap();
            match pool.install(|| hash_path(&f, false, 0, None, None)) {
                Outcome::Hashed { hash, meta, .. } => {
                    assert_eq!(hash, blake3::hash(&data), "length {len}");
                    assert_eq!(meta.size(), len);
                }
                o => panic!("{o:?}"),
            }
        }
    }

    #[test]
    fn a_stop_request_gives_up_a_large_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("big");
        std::fs::write(&f, vec![7u8; (PARALLEL_THRESHOLD * 2) as usize]).unwrap();
        let stop = AtomicBool::new(true);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        assert!(matches!(
            pool.install(|| hash_path(&f, false, 0, None, Some(&stop))),
            Outcome::Stopped
        ));
    }

    #[test]
    fn fifo_symlink_and_missing_are_not_opened_as_files() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("f");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        // Would block forever without O_NONBLOCK.
        assert!(matches!(
            hash_path(&fifo, false, 0, None, None),
            Outcome::NotRegular(_)
        ));
        let link = d.path().join("l");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        assert!(
            matches!(hash_path(&link, false, 0, None, None), Outcome::NotRegular(m) if m.is_symlink())
        );
        assert!(matches!(
            hash_path(&d.path().join("none"), false, 0, None, None),
            Outcome::Vanished
        ));
    }

    #[test]
    fn throttle_without_caps_is_none() {
        assert!(Throttle::new(0, 0).is_none());
        let t = Throttle::new(1 << 30, 0).unwrap();
        t.take(10, 1);
    }
}
