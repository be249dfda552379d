//! The few calls into the C library that std does not wrap. Each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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
    let now: libc::time_t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: `tm` is a plain C struct for which all-zero bytes are a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r reads `now` and writes only into `tm`, both valid for the call; it is the
    // thread-safe variant (no shared static buffer).
    let ok = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if !ok {
        return (now.rem_euclid(86_400)) as u32;
    }
    (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec) as u32
}
