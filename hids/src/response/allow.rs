//! The addresses never blocked: the configured allowlist, loopback, and this host's own addresses
//! (read from /proc, refreshed now and then since addresses come and go).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::net::Cidr;

/// How long the host's own addresses are trusted before they are read again.
const REFRESH: Duration = Duration::from_secs(60);

/// The allowlist in force.
pub struct Allowlist {
    configured: Vec<Cidr>,
    own: Vec<Cidr>,
    read_at: Option<Instant>,
}

impl Allowlist {
    pub fn new(configured: Vec<Cidr>) -> Allowlist {
        Allowlist {
            configured,
            own: Vec::new(),
            read_at: None,
        }
    }

    /// Replaces the configured part (a reload).
    pub fn set_configured(&mut self, configured: Vec<Cidr>) {
        self.configured = configured;
    }

    /// Why `ip` is never blocked, if it is not to be.
    pub fn reason(&mut self, ip: IpAddr) -> Option<&'static str> {
        if ip.is_loopback() {
            return Some("loopback");
        }
        if self.configured.iter().any(|c| c.contains(ip)) {
            return Some("in the allowlist");
        }
        if self.read_at.map_or(true, |t| t.elapsed() >= REFRESH) {
            self.own = own_addresses();
            self.read_at = Some(Instant::now());
        }
        self.own
            .iter()
            .any(|c| c.contains(ip))
            .then_some("an address of this host")
    }
}

/// This host's addresses: IPv4 from the kernel's local routing table (`/proc/net/fib_trie`,
/// entries marked "host LOCAL"), IPv6 from `/proc/net/if_inet6`. Unreadable files give nothing
/// (loopback and the configured allowlist still apply), with a warning.
pub fn own_addresses() -> Vec<Cidr> {
    let mut out = Vec::new();
    match std::fs::read_to_string("/proc/net/fib_trie") {
        Ok(t) => out.extend(parse_fib_trie(&t)),
        Err(e) => tracing::warn!("cannot read /proc/net/fib_trie for this host's addresses: {e}"),
    }
    match std::fs::read_to_string("/proc/net/if_inet6") {
        Ok(t) => out.extend(parse_if_inet6(&t)),
        // No IPv6 in this kernel: nothing to add.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot read /proc/net/if_inet6 for this host's addresses: {e}"),
    }
    out.sort_by_key(|c| (c.addr, c.prefix));
    out.dedup();
    out
}

fn parse_fib_trie(text: &str) -> Vec<Cidr> {
    let mut out = Vec::new();
    let mut last: Option<IpAddr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.trim().parse().ok();
        } else if let (Some(addr), Some(rest)) = (last, t.strip_prefix('/')) {
            let mut words = rest.split_whitespace();
            let prefix = words.next().and_then(|p| p.parse::<u8>().ok());
            if let (Some(prefix), true) = (prefix, rest.ends_with("host LOCAL")) {
                if prefix <= 32 {
                    out.push(Cidr { addr, prefix });
                }
            }
        }
    }
    out
}

fn parse_if_inet6(text: &str) -> Vec<Cidr> {
    text.lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().next()?;
            let n = u128::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == 32)?;
            Some(Cidr {
                addr: IpAddr::V6(n.into()),
                prefix: 128,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 10.1.2.3\n              /32 host LOCAL\n        |-- 10.1.2.255\n           /32 link BROADCAST\n";
        let v = parse_fib_trie(fib);
        assert_eq!(
            v,
            vec![
                Cidr::parse("127.0.0.0/8").unwrap(),
                Cidr::parse("10.1.2.3").unwrap()
            ]
        );
        let v6 = parse_if_inet6(
            "00000000000000000000000000000001 01 80 10 80       lo\nfd000000000000000000000000000002 04 40 00 82     eth0\nbad\n",
        );
        assert_eq!(
            v6,
            vec![Cidr::parse("::1").unwrap(), Cidr::parse("fd00::2").unwrap()]
        );
    }

    #[test]
    fn loopback_configured_and_own() {
        let mut a = Allowlist::new(vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        assert_eq!(a.reason("127.0.0.5".parse().unwrap()), Some("loopback"));
        assert_eq!(a.reason("::1".parse().unwrap()), Some("loopback"));
        assert_eq!(
            a.reason("10.20.30.40".parse().unwrap()),
            Some("in the allowlist")
        );
        assert_eq!(a.reason("203.0.113.7".parse().unwrap()), None);
        // Whatever this machine's addresses are, they are allowed.
        for c in own_addresses() {
            assert!(a.reason(c.addr).is_some(), "{c:?}");
        }
    }
}
