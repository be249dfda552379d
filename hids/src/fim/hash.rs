//! BLAKE3 hashing of one regular file, safely: opened without following a symlink, without
//! blocking on a FIFO and without becoming a controlling terminal, checked with `fstat` to be the
//! regular file the walk saw, and re-checked after reading so that a file changing under us is
//! hashed again once it settles. Large files are hashed with BLAKE3's multi-threaded update.
//!
//! Files are read, not mmapped: a mapped file truncated by someone else while we hash it kills the
//! process with SIGBUS, and the agent runs as root over files other processes write.

use std::cell::RefCell;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Files at least this large are hashed with all cores (BLAKE3 `update_rayon`); below, files are
/// spread over the cores one per thread instead.
pub const PARALLEL_THRESHOLD: u64 = 4 << 20;
const SMALL_BUF: usize = 256 << 10;
const LARGE_BUF: usize = 2 << 20;
const ATTEMPTS: u32 = 4;

/// What hashing a path found.
#[derive(Debug)]
pub enum Outcome {
    /// The file's hash, the metadata it had while read (unchanged from before to after reading),
    /// and its content when asked for and no larger than the limit.
    Hashed {
        meta: Metadata,
        hash: blake3::Hash,
        content: Option<Vec<u8>>,
    },
    /// The path is no longer a regular file (replaced by a symlink, FIFO, directory...): here is
    /// what it is now; the caller records it as such.
    NotRegular(Metadata),
    /// The path disappeared.
    Vanished,
    /// Permission denied.
    Denied,
    /// The file kept changing while it was read; here is its latest metadata.
    Unsettled(Metadata),
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

fn open_safely(path: &Path, follow: bool) -> io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    // O_NOATIME keeps scans from rewriting every inode's atime; it is allowed only to the owner
    // and to root, so fall back without it.
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path),
        other => other,
    }
}

fn same_state(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev()
        && a.ino() == b.ino()
        && a.size() == b.size()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
}

/// Hashes the regular file at `path` (through a final symlink only with `follow`). With
/// `keep_content > 0`, also returns its content when it holds no more than that many bytes.
pub fn hash_path(
    path: &Path,
    follow: bool,
    keep_content: u64,
    throttle: Option<&Throttle>,
    stop: Option<&AtomicBool>,
) -> Outcome {
    let stat = |p: &Path| {
        if follow {
            std::fs::metadata(p)
        } else {
            std::fs::symlink_metadata(p)
        }
    };
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(20 << attempt));
        }
        let file = match open_safely(path, follow) {
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
        let before = match file.metadata() {
            Ok(m) => m,
            Err(e) => return Outcome::Failed(e),
        };
        if !before.is_file() {
            return Outcome::NotRegular(before);
        }
        let want = keep_content > 0 && before.size() <= keep_content;
        let (hash, content) = match read_hash(file, &before, want, throttle, stop) {
            Ok(Some(x)) => x,
            Ok(None) => return Outcome::Stopped,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Outcome::Denied,
            Err(e) => return Outcome::Failed(e),
        };
        let after = match stat(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Outcome::Vanished,
            Err(e) => return Outcome::Failed(e),
        };
        if same_state(&before, &after) {
            let content = content.filter(|c| c.len() as u64 <= keep_content);
            return Outcome::Hashed {
                meta: after,
                hash,
                content,
            };
        }
        if !after.is_file() {
            return Outcome::NotRegular(after);
        }
        last = Some(after);
    }
    match last {
        Some(m) => Outcome::Unsettled(m),
        None => Outcome::Vanished,
    }
}

fn read_hash(
    mut file: File,
    meta: &Metadata,
    keep: bool,
    throttle: Option<&Throttle>,
    stop: Option<&AtomicBool>,
) -> io::Result<Option<(blake3::Hash, Option<Vec<u8>>)>> {
    let mut hasher = blake3::Hasher::new();
    let large = meta.size() >= PARALLEL_THRESHOLD;
    let mut content = keep.then(|| Vec::with_capacity(meta.size() as usize));
    BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        let want = if large { LARGE_BUF } else { SMALL_BUF };
        if buf.len() != want {
            buf.resize(want, 0);
        }
        let mut stopped = false;
        loop {
            if large && stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                stopped = true;
                break;
            }
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Some(t) = throttle {
                t.take(n as u64, 0);
            }
            if large {
                hasher.update_rayon(&buf[..n]);
            } else {
                hasher.update(&buf[..n]);
            }
            if let Some(c) = content.as_mut() {
                c.extend_from_slice(&buf[..n]);
                // Grew past what was announced: the caller retries or drops it.
                if c.len() as u64 > meta.size() {
                    content = None;
                }
            }
        }
        if large {
            // Don't keep 2 MiB per thread around after a big file.
            buf.truncate(SMALL_BUF);
            buf.shrink_to_fit();
        }
        Ok(stopped)
    })
    .map(|stopped| (!stopped).then(|| (hasher.finalize(), content)))
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
            matches!(hash_path(&link, false, 0, None, None), Outcome::NotRegular(m) if m.file_type().is_symlink())
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
