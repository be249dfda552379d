//! The few calls into the C library that std does not wrap. Each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Broken-down local time (as the system's time zone gives it) for seconds since the epoch:
/// (year, month 1..=12, day 1..=31, hour, minute, second). None when the C library cannot convert.
pub fn local_time(secs: i64) -> Option<(i32, u32, u32, u32, u32, u32)> {
    #[allow(clippy::useless_conversion)] // time_t is i64 here, not on every target
    let t: libc::time_t = secs.try_into().ok()?;
    // SAFETY: an all-zero `tm` is a valid value of a plain C struct of integers (and a null
    // tm_zone pointer, which localtime_r overwrites and we never read).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the reentrant form and writes
    // only into `tm`.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return None;
    }
    Some((
        tm.tm_year + 1900,
        (tm.tm_mon + 1) as u32,
        tm.tm_mday as u32,
        tm.tm_hour as u32,
        tm.tm_min as u32,
        tm.tm_sec as u32,
    ))
}
