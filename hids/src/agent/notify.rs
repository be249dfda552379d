//! systemd's notify protocol (`sd_notify`): `READY=1`, `WATCHDOG=1`, `STATUS=...` and
//! `STOPPING=1` sent as datagrams to `$NOTIFY_SOCKET`, and the watchdog interval from
//! `$WATCHDOG_USEC`. Outside systemd (no socket in the environment) every call does nothing.
//!
//! The protocol is one line of `KEY=value` pairs per datagram; a crate would add nothing but
//! build time, so this is the whole client.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The notify socket of the service manager, if the agent runs under one.
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// How often systemd wants a `WATCHDOG=1` (half of `WatchdogSec`), if it watches.
    pub watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honouring `$WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec();
            let addr = address(&bytes)?;
            let s = UnixDatagram::unbound().ok()?;
            Some((s, addr))
        });
        let pid_ok = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .map_or(true, |p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && pid_ok)
            .map(|u| Duration::from_micros(u / 2));
        Notifier { socket, watchdog }
    }

    /// True when a service manager listens.
    pub fn active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one notification: `KEY=value` lines (`READY=1\nSTATUS=...`). Failures are logged
    /// at debug level only: the agent works the same without a listener.
    pub fn send(&self, state: &str) {
        if let Some((s, addr)) = &self.socket {
            if let Err(e) = s.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!("sd_notify failed: {e}");
            }
        }
    }

    /// Sends `STATUS=text`, the text kept on one line.
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", text.replace(['\n', '\r'], " ")));
    }
}

/// The socket address `$NOTIFY_SOCKET` names: a path, or `@name` for the abstract namespace.
fn address(bytes: &[u8]) -> Option<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    match bytes.first()? {
        b'@' => std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..]).ok(),
        b'/' => std::os::unix::net::SocketAddr::from_pathname(std::path::Path::new(
            std::ffi::OsStr::new(std::str::from_utf8(bytes).ok()?),
        ))
        .ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                address(path.to_str().unwrap().as_bytes()).unwrap(),
            )),
            watchdog: None,
        };
        n.send("READY=1");
        n.status("up\nand running");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=up and running");
    }

    #[test]
    fn relative_paths_are_refused() {
        assert!(address(b"relative/sock").is_none());
        assert!(address(b"").is_none());
        assert!(address(b"@abstract").is_some());
    }
}
