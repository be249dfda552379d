//! The few calls into the C library that std does not wrap. Each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};

/// The process's allocator: mimalloc rather than the C library's. Per-event strings and per-entry
/// paths are allocated and freed by the million, often on another thread than the one that made
/// them, where mimalloc takes a fraction of the C library's instructions.
///
/// Before its first allocation it is told to commit arena memory only as used and to return freed
/// pages at once: its defaults trade resident memory for speed (the rules benchmark's peak RSS
/// was 56 MB with them, 32 MB without, against 30 MB with the C library).
pub struct Allocator;

static CONFIGURED: AtomicBool = AtomicBool::new(false);

extern "C" {
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
    fn mi_malloc(size: usize) -> *mut libc::c_void;
    fn mi_zalloc(size: usize) -> *mut libc::c_void;
    fn mi_realloc(p: *mut libc::c_void, newsize: usize) -> *mut libc::c_void;
}

/// Every block mimalloc's plain `mi_malloc` returns is aligned to this at least; larger
/// alignments take its aligned entry points, which cost about twice as much.
const MI_PLAIN_ALIGN: usize = 8;

/// mimalloc's `mi_option_arena_eager_commit` and `mi_option_purge_delay` (`mimalloc.h`).
const MI_OPTION_ARENA_EAGER_COMMIT: libc::c_int = 4;
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;

#[cold]
fn configure_allocator() {
    // SAFETY: mi_option_set stores an integer in mimalloc's option table; it allocates nothing
    // and is safe to call from any thread, any number of times.
    unsafe {
        mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
    CONFIGURED.store(true, Ordering::Release);
}

// SAFETY: every call is passed on to mimalloc, which upholds GlobalAlloc's contract: blocks of
// `mi_malloc`/`mi_zalloc`/`mi_realloc` are aligned to 8 bytes at least (16 from 16 bytes of size),
// so only those with no larger alignment asked take them, and `mi_free` (MiMalloc's dealloc)
// frees blocks of both kinds. The options are set before the first allocation.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !CONFIGURED.load(Ordering::Acquire) {
            configure_allocator();
        }
        if layout.align() <= MI_PLAIN_ALIGN {
            mi_malloc(layout.size()).cast()
        } else {
            mimalloc::MiMalloc.alloc(layout)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !CONFIGURED.load(Ordering::Acquire) {
            configure_allocator();
        }
        if layout.align() <= MI_PLAIN_ALIGN {
            mi_zalloc(layout.size()).cast()
        } else {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MI_PLAIN_ALIGN {
            mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mimalloc::MiMalloc.realloc(ptr, layout, new_size)
        }
    }
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The bytes of `chunk` that a JSON string escapes, as bits (bit k for byte k): below 0x20, a
/// quote or a backslash.
#[inline]
pub fn json_escapes(chunk: &[u8; 16]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        // SAFETY: SSE2 is part of every x86_64 CPU, so these instructions always exist; the
        // unaligned load reads exactly the 16 bytes of `chunk`.
        unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Unsigned below 0x20: the smaller of the byte and 0x1f is the byte itself.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut m = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            m |= u32::from(c < 0x20 || c == b'"' || c == b'\\') << k;
        }
        m
    }
}

/// Lowers the calling thread's IO priority to the idle class and its CPU priority to nice 19, so
/// that a scan only uses what the host leaves unused. Threads created afterwards by this thread
/// inherit both. Returns a description of what could not be done, if anything.
pub fn lower_priority() -> Result<(), String> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    const IOPRIO_CLASS_IDLE: libc::c_int = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_int = 13;
    let mut failed = Vec::new();
    // SAFETY: ioprio_set takes three integers and touches no memory of ours; `0` means the calling
    // thread. A failure only leaves the priority as it was, and errno is read right after.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if r != 0 {
        failed.push(format!(
            "idle IO priority: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: setpriority takes integers only; on Linux, PRIO_PROCESS with 0 is the calling thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if r != 0 {
        failed.push(format!("nice 19: {}", std::io::Error::last_os_error()));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join(", "))
    }
}

/// The local time of day now, as seconds since local midnight (DST and zone from the C library).
pub fn local_seconds_of_day() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    local_day_time(now).map_or(now.rem_euclid(86_400) as u32, |(day, _)| day)
}

/// Broken-down local time (as the system's time zone gives it) for seconds since the epoch.
fn local_tm(secs: i64) -> Option<libc::tm> {
    #[allow(clippy::useless_conversion)] // time_t is i64 here, not on every target
    let t: libc::time_t = secs.try_into().ok()?;
    // SAFETY: an all-zero `tm` is a valid value of a plain C struct of integers (and a null
    // tm_zone pointer, which localtime_r overwrites and we never read).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the reentrant form and writes
    // only into `tm`.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    (!r.is_null()).then_some(tm)
}

/// The local time of day (seconds since midnight) and weekday (0 = Sunday) at `secs` since the
/// epoch, in the system's time zone; `None` if the C library cannot convert it.
pub fn local_day_time(secs: i64) -> Option<(u32, u8)> {
    let tm = local_tm(secs)?;
    let day = u32::try_from(tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec).ok()?;
    Some((day, u8::try_from(tm.tm_wday).ok()?))
}

/// Local (year, month 1..=12, day 1..=31, hour, minute, second) for seconds since the epoch.
pub fn local_time(secs: i64) -> Option<(i32, u32, u32, u32, u32, u32)> {
    let tm = local_tm(secs)?;
    Some((
        tm.tm_year + 1900,
        (tm.tm_mon + 1) as u32,
        tm.tm_mday as u32,
        tm.tm_hour as u32,
        tm.tm_min as u32,
        tm.tm_sec as u32,
    ))
}

/// Takes an exclusive advisory lock (flock) on an open file without waiting: `Ok(false)` when
/// another process holds it. The lock goes with the file's last descriptor.
pub fn try_lock_exclusive(f: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock reads only the descriptor number, which `f` keeps open during the call.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Makes the command's process receive SIGTERM when the thread that starts it ends (and so when
/// this process ends, however it ends): for helpers started in a process group of their own, which
/// a signal to ours no longer reaches.
pub fn end_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl, getppid
    // and raise, all async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have ended before the prctl: then nothing would ever send the signal.
            if libc::getppid() != parent {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
}

/// Sends SIGKILL to every process in the process group `pgid` (a command started with
/// `process_group(0)`, so that what it started goes too).
pub fn kill_process_group(pgid: u32) -> std::io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    if pgid <= 1 {
        // 0 would be our own group and 1 init's: never what is meant.
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: killpg takes two integers and touches no memory of ours; the group id is a child's
    // pid we started as a group leader (checked above not to be 0 or 1).
    let r = unsafe { libc::killpg(pgid, libc::SIGKILL) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets `PR_SET_NO_NEW_PRIVS` on the calling thread (threads and children created afterwards
/// inherit it, and it cannot be unset): no `execve` from this process on can gain privileges
/// through setuid/setgid bits or file capabilities.
pub fn set_no_new_privs() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes integers only and touches no memory
    // of ours; the unused arguments must be zero, as passed.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The soft limit on this process's open files (None when it cannot be read).
pub fn open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given, which lives for the call.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (r == 0).then_some(lim.rlim_cur)
}

/// `openat(dir, name, flags | O_RDONLY | O_CLOEXEC)`: opens `name` relative to the directory
/// `dir` (a single name: no `/`, which the caller guarantees by passing a path's last component).
pub fn open_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    flags: libc::c_int,
) -> std::io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let invalid = || std::io::Error::from(std::io::ErrorKind::InvalidInput);
    // A file name (at most NAME_MAX, 255 bytes) is made NUL-terminated on the stack: no
    // allocation per file opened. A longer one (which openat refuses) on the heap.
    let bytes = name.as_bytes();
    let mut buf = [0u8; 256];
    let heap;
    let name: &std::ffi::CStr = if bytes.len() < buf.len() {
        buf[..bytes.len()].copy_from_slice(bytes);
        std::ffi::CStr::from_bytes_with_nul(&buf[..=bytes.len()]).map_err(|_| invalid())?
    } else {
        heap = std::ffi::CString::new(bytes).map_err(|_| invalid())?;
        &heap
    };
    // SAFETY: `dir` is a descriptor kept open by its owner for the call, `name` a NUL-terminated
    // string living for the call; openat touches no other memory of ours.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat, is valid, and is owned by nothing else.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// What `lstat`/`fstat` say of an entry: the fields FIM records and compares. Built from a stat
/// of our own (relative to an open directory, or of an open file) or from std's [`Metadata`].
///
/// [`Metadata`]: std::fs::Metadata
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    dev: u64,
    ino: u64,
    /// Type and permission bits (`st_mode`).
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Stat {
    pub fn dev(&self) -> u64 {
        self.dev
    }
    pub fn ino(&self) -> u64 {
        self.ino
    }
    /// Type and permission bits, as `st_mode`.
    pub fn mode(&self) -> u32 {
        self.mode
    }
    pub fn uid(&self) -> u32 {
        self.uid
    }
    pub fn gid(&self) -> u32 {
        self.gid
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn mtime(&self) -> i64 {
        self.mtime
    }
    pub fn mtime_nsec(&self) -> i64 {
        self.mtime_nsec
    }
    pub fn ctime(&self) -> i64 {
        self.ctime
    }
    pub fn ctime_nsec(&self) -> i64 {
        self.ctime_nsec
    }
    /// The file type bits of the mode (`S_IFMT`).
    pub fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }

    fn from_stat(st: &libc::stat) -> Stat {
        // (The field types differ between targets; these conversions are lossless here.)
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Stat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as i64,
            ctime: st.st_ctime as i64,
            ctime_nsec: st.st_ctime_nsec as i64,
        }
    }
}

impl From<&std::fs::Metadata> for Stat {
    fn from(m: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }
}

impl From<std::fs::Metadata> for Stat {
    fn from(m: std::fs::Metadata) -> Stat {
        Stat::from(&m)
    }
}

/// `fstat` of an open file.
pub fn fstat(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Stat> {
    use std::os::fd::AsRawFd;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is kept open by its owner for the call; fstat writes only the struct it is
    // given, which lives for the call.
    let r = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it filled the whole struct.
    Ok(Stat::from_stat(unsafe { st.assume_init_ref() }))
}

/// A file name made NUL-terminated: on the stack when it fits a name (at most NAME_MAX, 255
/// bytes), else on the heap (which the kernel then refuses). None when it holds a NUL byte.
fn with_c_name<T>(
    name: &std::ffi::OsStr,
    f: impl FnOnce(&std::ffi::CStr) -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::unix::ffi::OsStrExt;
    let invalid = || std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let bytes = name.as_bytes();
    let mut buf = [0u8; 256];
    if bytes.len() < buf.len() {
        buf[..bytes.len()].copy_from_slice(bytes);
        f(std::ffi::CStr::from_bytes_with_nul(&buf[..=bytes.len()]).map_err(|_| invalid())?)
    } else {
        f(&std::ffi::CString::new(bytes).map_err(|_| invalid())?)
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the `lstat` of `name` (a single name, no `/`) in
/// the open directory `dir`, without the kernel looking up the directory's path again.
pub fn lstat_at(dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::OsStr) -> std::io::Result<Stat> {
    use std::os::fd::AsRawFd;
    with_c_name(name, |name| {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `dir` is kept open by its owner for the call, `name` is NUL-terminated and
        // lives for the call; fstatat writes only the struct it is given.
        let r = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fstatat returned 0, so it filled the whole struct.
        Ok(Stat::from_stat(unsafe { st.assume_init_ref() }))
    })
}

/// `d_type` of a directory entry whose type the file system did not say (`DT_UNKNOWN`).
pub const DT_UNKNOWN: u8 = libc::DT_UNKNOWN;
/// `d_type` of a regular file.
pub const DT_REG: u8 = libc::DT_REG;
/// `d_type` of a directory.
pub const DT_DIR: u8 = libc::DT_DIR;

/// Lists the open directory `dir` from where its offset is (the start, for a directory just
/// opened) to its end with `getdents64`, through the buffer `buf` (reused from one directory to
/// the next), handing each entry's name and `d_type` to `each`; `.` and `..` are left out. An
/// error ends the listing: what was listed before it has been handed on.
pub fn list_dir(
    dir: std::os::fd::BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    mut each: impl FnMut(&[u8], u8),
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const BUF_LEN: usize = 32 << 10;
    // Offsets of the fields of `struct linux_dirent64` (d_ino u64, d_off i64, d_reclen u16,
    // d_type u8, then the NUL-terminated name).
    const RECLEN: usize = 16;
    const TYPE: usize = 18;
    const NAME: usize = 19;
    if buf.len() < BUF_LEN {
        buf.resize(BUF_LEN, 0);
    }
    loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which is valid for
        // writes of that length and lives for the call; `dir` is kept open by its owner.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let Some(filled) = usize::try_from(n).ok().and_then(|n| buf.get(..n)) else {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidData));
        };
        if filled.is_empty() {
            return Ok(());
        }
        // Read back as plain bytes, each record checked to lie within what was filled.
        let mut at = 0;
        while let Some(rec) = filled.get(at..) {
            let (Some(len), Some(&dtype)) = (rec.get(RECLEN..RECLEN + 2), rec.get(TYPE)) else {
                break;
            };
            let reclen = usize::from(u16::from_ne_bytes([len[0], len[1]]));
            let Some(rec) = rec.get(..reclen).filter(|_| reclen > NAME) else {
                break;
            };
            let name = &rec[NAME..];
            let name = name
                .iter()
                .position(|&b| b == 0)
                .map_or(name, |end| &name[..end]);
            if name != b"." && name != b".." {
                each(name, dtype);
            }
            at += reclen;
        }
    }
}
