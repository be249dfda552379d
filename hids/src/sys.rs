//! The few calls into the C library that std does not wrap. Each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
