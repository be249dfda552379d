//! The few calls into the C library that std does not wrap. Each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The local time of day (seconds since midnight) and weekday (0 = Sunday) at `secs` since the
/// epoch, in the system's time zone; `None` if the C library cannot convert it.
pub fn local_day_time(secs: i64) -> Option<(u32, u8)> {
    #[allow(clippy::useless_conversion)]
    let t: libc::time_t = secs.try_into().ok()?;
    // SAFETY: `tm` is plain old data for which all-zero is valid; localtime_r only writes into the
    // `tm` we pass and reads `t`, both valid for the call. (glibc's localtime_r reads the time zone
    // once on first use.)
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        tm
    };
    let day = u32::try_from(tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec).ok()?;
    Some((day, u8::try_from(tm.tm_wday).ok()?))
}
