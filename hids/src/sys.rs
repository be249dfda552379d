//! The few calls into the C library that std does not wrap. Each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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
