//! CDB-style lists for rules' `<list>` lookups, read from OSSEC's text form (`key:value` per line)
//! and compiled once into hash maps, so a lookup costs one hash probe per candidate key.
//!
//! Address lookups follow OSSEC: keys written with a trailing dot are network prefixes (`192.168.:`
//! covers 192.168.0.0/16), and a lookup tries the full address, then each shorter prefix ending in a
//! dot. As an extension, CIDR keys (`10.0.0.0/8:`, IPv4 or IPv6) are accepted and checked after the
//! dotted prefixes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::diag::Diagnostic;
pub use crate::net::Cidr;

/// One compiled list.
#[derive(Debug, Clone, Default)]
pub struct List {
    pub path: PathBuf,
    map: HashMap<Box<str>, Box<str>>,
    cidrs: Vec<(Cidr, Box<str>)>,
}

impl List {
    /// Reads a list file. Every bad line is reported; the list is usable only without errors.
    pub fn load(path: &Path) -> Result<List, Vec<Diagnostic>> {
        let text = std::fs::read(path).map_err(|e| {
            vec![Diagnostic::whole_file(
                path,
                format!("cannot read list: {e}"),
            )]
        })?;
        let text = String::from_utf8_lossy(&text);
        List::parse(path, &text)
    }

    /// Parses list text.
    pub fn parse(path: &Path, text: &str) -> Result<List, Vec<Diagnostic>> {
        let mut list = List {
            path: path.to_path_buf(),
            ..List::default()
        };
        let mut errors = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let start = offset;
            offset += line.len();
            let l = line.trim_end_matches(['\n', '\r']);
            if l.trim().is_empty() || l.trim_start().starts_with('#') {
                continue;
            }
            let (key, value) = if let Some(rest) = l.strip_prefix('"') {
                // A quoted key may hold colons (MAC addresses).
                match rest.find('"') {
                    Some(end) => {
                        let after = &rest[end + 1..];
                        match after.strip_prefix(':') {
                            Some(v) => (&rest[..end], v),
                            None if after.is_empty() => (&rest[..end], ""),
                            None => {
                                errors.push(Diagnostic::at(
                                    path,
                                    text,
                                    start..offset,
                                    "a quoted key must be followed by ':'",
                                ));
                                continue;
                            }
                        }
                    }
                    None => {
                        errors.push(Diagnostic::at(
                            path,
                            text,
                            start..offset,
                            "unterminated quoted key",
                        ));
                        continue;
                    }
                }
            } else {
                l.split_once(':').unwrap_or((l, ""))
            };
            if key.is_empty() {
                errors.push(Diagnostic::at(path, text, start..offset, "empty key"));
                continue;
            }
            if key.contains('/') {
                if let Some(c) = Cidr::parse(key) {
                    list.cidrs.push((c, value.into()));
                    continue;
                }
            }
            list.map.insert(key.into(), value.into());
        }
        if errors.is_empty() {
            Ok(list)
        } else {
            Err(errors)
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len() + self.cidrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of an exact key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(|v| &**v)
    }

    /// The value for an address: the full address, then each shorter dotted prefix, then CIDR keys.
    pub fn get_address(&self, ip: &str) -> Option<&str> {
        if let Some(v) = self.map.get(ip) {
            return Some(v);
        }
        let mut end = ip.len();
        while let Some(dot) = ip[..end].rfind(['.', ':']) {
            if let Some(v) = self.map.get(&ip[..=dot]) {
                return Some(v);
            }
            end = dot;
        }
        if !self.cidrs.is_empty() {
            if let Ok(addr) = ip.parse::<IpAddr>() {
                return self
                    .cidrs
                    .iter()
                    .find(|(c, _)| c.contains(addr))
                    .map(|(_, v)| &**v);
            }
        }
        None
    }
}

/// How a rule's `<list>` looks its field up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    MatchKey,
    NotMatchKey,
    MatchKeyValue,
    AddressMatchKey,
    NotAddressMatchKey,
    AddressMatchKeyValue,
}

impl Lookup {
    pub fn parse(s: &str) -> Option<Lookup> {
        Some(match s {
            "match_key" => Lookup::MatchKey,
            "not_match_key" => Lookup::NotMatchKey,
            "match_key_value" => Lookup::MatchKeyValue,
            "address_match_key" => Lookup::AddressMatchKey,
            "not_address_match_key" => Lookup::NotAddressMatchKey,
            "address_match_key_value" => Lookup::AddressMatchKeyValue,
            _ => return None,
        })
    }

    pub const NAMES: [&'static str; 6] = [
        "match_key",
        "not_match_key",
        "match_key_value",
        "address_match_key",
        "not_address_match_key",
        "address_match_key_value",
    ];

    /// Whether `check_value` is required.
    pub fn needs_value(self) -> bool {
        matches!(self, Lookup::MatchKeyValue | Lookup::AddressMatchKeyValue)
    }

    /// Evaluates the lookup; `check` tests the value for the `*_value` forms.
    pub fn eval(self, list: &List, key: &str, check: impl Fn(&str) -> bool) -> bool {
        match self {
            Lookup::MatchKey => list.get(key).is_some(),
            Lookup::NotMatchKey => list.get(key).is_none(),
            Lookup::MatchKeyValue => list.get(key).is_some_and(check),
            Lookup::AddressMatchKey => list.get_address(key).is_some(),
            Lookup::NotAddressMatchKey => list.get_address(key).is_none(),
            Lookup::AddressMatchKeyValue => list.get_address(key).is_some_and(check),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> List {
        List::parse(Path::new("t.list"), text).unwrap()
    }

    #[test]
    fn keys_and_values() {
        let l = list("root:admin\n# comment\n\nbob:\n\"aa:bb:cc\":mac\nnovalue\n");
        assert_eq!(l.get("root"), Some("admin"));
        assert_eq!(l.get("bob"), Some(""));
        assert_eq!(l.get("aa:bb:cc"), Some("mac"));
        assert_eq!(l.get("novalue"), Some(""));
        assert_eq!(l.get("Root"), None);
        assert!(Lookup::MatchKey.eval(&l, "root", |_| true));
        assert!(Lookup::NotMatchKey.eval(&l, "alice", |_| true));
        assert!(Lookup::MatchKeyValue.eval(&l, "root", |v| v == "admin"));
        assert!(!Lookup::MatchKeyValue.eval(&l, "bob", |v| v == "admin"));
    }

    #[test]
    fn address_prefixes_as_ossec() {
        let l = list(
            "192.168.:lan\n172.16.19.:dmz\n10.1.1.1:host\n10.0.0.0/8:cidr\n\"2001:db8::/32\":v6\n",
        );
        assert_eq!(l.get_address("192.168.44.3"), Some("lan"));
        assert_eq!(l.get_address("172.16.19.200"), Some("dmz"));
        assert_eq!(l.get_address("172.16.20.1"), None);
        assert_eq!(l.get_address("10.1.1.1"), Some("host"));
        assert_eq!(l.get_address("10.9.9.9"), Some("cidr"));
        assert_eq!(l.get_address("2001:db8::1"), Some("v6"));
        assert_eq!(l.get_address("8.8.8.8"), None);
        // "192.168." must not match "192.1680.x" style text: prefixes end at a dot.
        assert_eq!(l.get_address("192.1680.1.1"), None);
        assert!(Lookup::NotAddressMatchKey.eval(&l, "8.8.8.8", |_| true));
        assert!(Lookup::AddressMatchKeyValue.eval(&l, "192.168.1.1", |v| v == "lan"));
    }

    #[test]
    fn bad_lines_are_located() {
        let e = List::parse(Path::new("t.list"), "ok:1\n\"open:2\n").unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 2);
        assert!(e[0].message.contains("unterminated"));
    }

    #[test]
    fn cidr_parsing() {
        let c = Cidr::parse("192.168.1.0/255.255.255.0").unwrap();
        assert_eq!(c.prefix, 24);
        assert!(c.contains("192.168.1.77".parse().unwrap()));
        assert!(!c.contains("192.168.2.1".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_none());
        assert!(Cidr::parse("1.2.3.4/255.0.255.0").is_none());
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("9.9.9.9".parse().unwrap()));
    }
}
