//! Address blocks (CIDR), shared by the configuration (active response allowlist) and the rules
//! (`srcip`/`dstip` conditions and address lists).

use std::net::IpAddr;

/// An address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d`, `a.b.c.d/n`, `a.b.c.d/m.m.m.m`, or the IPv6 forms.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                Ok(_) => return None,
                Err(_) => {
                    // A dotted netmask: count its leading ones; it must be contiguous.
                    let m: std::net::Ipv4Addr = p.trim().parse().ok()?;
                    let bits = u32::from(m);
                    let ones = bits.leading_ones();
                    if bits.checked_shl(ones).unwrap_or(0) != 0 || !addr.is_ipv4() {
                        return None;
                    }
                    ones as u8
                }
            },
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` lies in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}
