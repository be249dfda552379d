//! What a response does to an address: the built-ins (nftables, iptables, ufw, hosts.deny) and
//! configured programs, as argument vectors (never a shell line), and the hosts.deny edit.

use std::fs;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::ResponseConfig;

/// Where the hosts-deny built-in writes unless the response says otherwise.
pub const HOSTS_DENY: &str = "/etc/hosts.deny";

/// The nftables table and sets the nftables built-in owns.
const NFT_TABLE: &str = "hids";
const NFT_SET4: &str = "blocked4";
const NFT_SET6: &str = "blocked6";

/// The nftables element outlives our own unblock by this much: if the agent is down when an
/// unblock is due, the kernel still lifts the block; normally our delete comes first.
const NFT_MARGIN: Duration = Duration::from_secs(60);

/// Block or unblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Delete,
}

impl Op {
    /// The word a program receives: `add` or `delete` (OSSEC's convention).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Delete => "delete",
        }
    }
}

/// The values one response acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub ip: IpAddr,
    /// Only set when the response wants it, and then a checked user name.
    pub user: Option<String>,
    /// The rule whose alert triggered the response.
    pub rule: u32,
    /// How long the block lasts (None: until removed by hand).
    pub timeout: Option<Duration>,
}

/// One response's mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nftables,
    Iptables,
    Ufw,
    HostsDeny(PathBuf),
    /// An absolute program path and its arguments (placeholders not yet replaced).
    Program(Vec<String>),
}

/// The argument placeholders a program's command may hold (each a whole argument).
pub const PLACEHOLDERS: [&str; 4] = ["{action}", "{srcip}", "{user}", "{rule}"];

impl Action {
    /// The mechanism a (validated) response names.
    pub fn of(r: &ResponseConfig) -> Action {
        match r.command.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["nftables"] => Action::Nftables,
            ["iptables"] => Action::Iptables,
            ["ufw"] => Action::Ufw,
            ["hosts-deny"] => Action::HostsDeny(
                r.hosts_deny_path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(HOSTS_DENY)),
            ),
            _ => Action::Program(r.command.clone()),
        }
    }

    /// A stable text naming the mechanism (stored with a block, so that the unblock uses what
    /// blocked even after the configuration changed).
    pub fn key(&self) -> String {
        let v: Vec<String> = match self {
            Action::Nftables => vec!["nftables".into()],
            Action::Iptables => vec!["iptables".into()],
            Action::Ufw => vec!["ufw".into()],
            Action::HostsDeny(p) => vec!["hosts-deny".into(), p.to_string_lossy().into_owned()],
            Action::Program(argv) => argv.clone(),
        };
        serde_json::to_string(&v).unwrap_or_default()
    }

    /// The mechanism a stored [`Action::key`] names; None for a key this build cannot read.
    pub fn from_key(key: &str) -> Option<Action> {
        let v: Vec<String> = serde_json::from_str(key).ok()?;
        let s: Vec<&str> = v.iter().map(String::as_str).collect();
        Some(match s[..] {
            ["nftables"] => Action::Nftables,
            ["iptables"] => Action::Iptables,
            ["ufw"] => Action::Ufw,
            ["hosts-deny", p] => Action::HostsDeny(PathBuf::from(p)),
            [prog, ..] if prog.starts_with('/') => Action::Program(v),
            _ => return None,
        })
    }

    /// A short name for logs and alerts.
    pub fn name(&self) -> String {
        match self {
            Action::Nftables => "nftables".into(),
            Action::Iptables => "iptables".into(),
            Action::Ufw => "ufw".into(),
            Action::HostsDeny(p) => format!("hosts-deny ({})", p.display()),
            Action::Program(argv) => argv.first().cloned().unwrap_or_default(),
        }
    }

    /// Whether the response passes the user name (a program with a `{user}` argument).
    pub fn wants_user(&self) -> bool {
        matches!(self, Action::Program(argv) if argv.iter().skip(1).any(|a| a == "{user}"))
    }

    /// The command to run, or None for the hosts-deny built-in (edited in-process).
    pub fn argv(&self, op: Op, t: &Target) -> Option<Vec<String>> {
        let ip = t.ip.to_string();
        let s = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Some(match self {
            Action::Nftables => {
                let set = if t.ip.is_ipv4() { NFT_SET4 } else { NFT_SET6 };
                let mut v = s(&[
                    "nft",
                    op.as_str(),
                    "element",
                    "inet",
                    NFT_TABLE,
                    set,
                    "{",
                    &ip,
                ]);
                if op == Op::Add {
                    if let Some(d) = t.timeout {
                        v.push("timeout".into());
                        v.push(format!("{}s", (d + NFT_MARGIN).as_secs()));
                    }
                }
                v.push("}".into());
                v
            }
            Action::Iptables => {
                let prog = if t.ip.is_ipv4() {
                    "iptables"
                } else {
                    "ip6tables"
                };
                let flag = if op == Op::Add { "-I" } else { "-D" };
                s(&[prog, "-w", flag, "INPUT", "-s", &ip, "-j", "DROP"])
            }
            Action::Ufw => match op {
                // Before the allow rules, or an allowed port would still be open to the address.
                Op::Add => s(&["ufw", "prepend", "deny", "from", &ip]),
                Op::Delete => s(&["ufw", "delete", "deny", "from", &ip]),
            },
            Action::HostsDeny(_) => return None,
            Action::Program(argv) => {
                let mut out = Vec::with_capacity(argv.len() + 2);
                let mut any = false;
                for (i, a) in argv.iter().enumerate() {
                    let v = match a.as_str() {
                        _ if i == 0 => a.clone(),
                        "{action}" => op.as_str().to_string(),
                        "{srcip}" => ip.clone(),
                        "{user}" => t.user.clone().unwrap_or_default(),
                        "{rule}" => t.rule.to_string(),
                        _ => {
                            out.push(a.clone());
                            continue;
                        }
                    };
                    any |= i > 0;
                    out.push(v);
                }
                if !any {
                    out.push(op.as_str().to_string());
                    out.push(ip);
                }
                out
            }
        })
    }

    /// For nftables: the table, sets and chain, created when the first add finds them missing.
    /// One argument of constant text (nft reads its arguments as one command line).
    pub fn setup_argv(&self) -> Option<Vec<String>> {
        (*self == Action::Nftables).then(|| {
            vec![
                "nft".to_string(),
                format!(
                    "add table inet {NFT_TABLE}; \
                     add set inet {NFT_TABLE} {NFT_SET4} {{ type ipv4_addr; flags timeout; }}; \
                     add set inet {NFT_TABLE} {NFT_SET6} {{ type ipv6_addr; flags timeout; }}; \
                     add chain inet {NFT_TABLE} input {{ type filter hook input priority -10; policy accept; }}; \
                     add rule inet {NFT_TABLE} input ip saddr @{NFT_SET4} drop; \
                     add rule inet {NFT_TABLE} input ip6 saddr @{NFT_SET6} drop"
                ),
            ]
        })
    }

    /// Whether a failed delete only says that the block is already gone (expired in the kernel,
    /// removed by hand): the unblock is then done.
    pub fn already_gone(&self, output: &str) -> bool {
        match self {
            Action::Nftables => output.contains("No such file or directory"),
            Action::Iptables => output.contains("does a matching rule exist"),
            Action::Ufw => output.contains("non-existent rule"),
            _ => false,
        }
    }
}

/// The address a response may act on, from a decoded `srcip`: an IP address, IPv4-mapped IPv6
/// written as IPv4, and neither unspecified, multicast nor broadcast.
pub fn host_address(text: &str) -> Result<IpAddr, &'static str> {
    let ip: IpAddr = text.parse().map_err(|_| "not an IP address")?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let bad = ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if bad {
        return Err("not a host address (unspecified, multicast or broadcast)");
    }
    Ok(ip)
}

/// Whether a decoded user name may be passed to a program: 1 to 64 of letters, digits and
/// `._-@$`, not starting with '-' (which a program would read as an option).
pub fn valid_user(u: &str) -> bool {
    (1..=64).contains(&u.len())
        && !u.starts_with('-')
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@$".contains(c))
}

/// The hosts.deny line for an address (IPv6 in brackets, as tcp_wrappers wants it).
pub fn hosts_deny_line(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ALL: {v4}"),
        IpAddr::V6(v6) => format!("ALL: [{v6}]"),
    }
}

/// Adds (`Op::Add`) or removes the address's `ALL: ip` line in `path`. The file is never
/// followed through a symlink, and is replaced atomically (a new file renamed over it, with the
/// old one's mode and owner). False when nothing had to change.
pub fn edit_hosts_deny(path: &Path, ip: IpAddr, op: Op) -> io::Result<bool> {
    let line = hosts_deny_line(ip);
    let (text, meta) = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(mut f) => {
            let meta = f.metadata()?;
            if !meta.is_file() {
                return Err(io::Error::other("not a regular file"));
            }
            let mut bytes = Vec::new();
            Read::by_ref(&mut f)
                .take(16 << 20)
                .read_to_end(&mut bytes)?;
            (String::from_utf8_lossy(&bytes).into_owned(), Some(meta))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (String::new(), None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::other("it is a symlink: refused"))
        }
        Err(e) => return Err(e),
    };
    let present = text.lines().any(|l| l.trim() == line);
    let new = match op {
        Op::Add if present => return Ok(false),
        Op::Delete if !present => return Ok(false),
        Op::Add => {
            let mut t = text;
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            t.push_str(&line);
            t.push('\n');
            t
        }
        Op::Delete => {
            let mut t = String::with_capacity(text.len());
            for l in text.split_inclusive('\n') {
                if l.trim() != line {
                    t.push_str(l);
                }
            }
            t
        }
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.hids-{}", std::process::id()));
    let mode = meta.as_ref().map_or(0o644, |m| m.mode() & 0o7777);
    // A stale temporary file of ours (crash) is removed; create_new refuses anything planted.
    let _ = fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(new.as_bytes())?;
        if let Some(m) = &meta {
            if m.uid() != crate::sys::euid() {
                std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
            }
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(ip: &str) -> Target {
        Target {
            ip: ip.parse().unwrap(),
            user: None,
            rule: 100150,
            timeout: Some(Duration::from_secs(600)),
        }
    }

    fn resp(cmd: &[&str]) -> ResponseConfig {
        ResponseConfig {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            rules: vec![],
            groups: vec![],
            min_level: Some(10),
            timeout: None,
            hosts_deny_path: None,
        }
    }

    #[test]
    fn builtin_argv_v4_and_v6() {
        let t4 = target("203.0.113.7");
        let t6 = target("2001:db8::7");
        assert_eq!(
            Action::Iptables.argv(Op::Add, &t4).unwrap().join(" "),
            "iptables -w -I INPUT -s 203.0.113.7 -j DROP"
        );
        assert_eq!(
            Action::Iptables.argv(Op::Delete, &t6).unwrap().join(" "),
            "ip6tables -w -D INPUT -s 2001:db8::7 -j DROP"
        );
        assert_eq!(
            Action::Nftables.argv(Op::Add, &t4).unwrap().join(" "),
            "nft add element inet hids blocked4 { 203.0.113.7 timeout 660s }"
        );
        assert_eq!(
            Action::Nftables.argv(Op::Delete, &t6).unwrap().join(" "),
            "nft delete element inet hids blocked6 { 2001:db8::7 }"
        );
        assert_eq!(
            Action::Ufw.argv(Op::Add, &t4).unwrap().join(" "),
            "ufw prepend deny from 203.0.113.7"
        );
        assert_eq!(
            Action::Ufw.argv(Op::Delete, &t4).unwrap().join(" "),
            "ufw delete deny from 203.0.113.7"
        );
        assert!(Action::Nftables.setup_argv().unwrap()[1].contains("ip6 saddr @blocked6 drop"));
        assert!(Action::Iptables.setup_argv().is_none());
    }

    #[test]
    fn program_argv_placeholders_or_appended() {
        let mut t = target("198.51.100.9");
        let a = Action::of(&resp(&["/usr/local/bin/block"]));
        assert_eq!(
            a.argv(Op::Add, &t).unwrap(),
            ["/usr/local/bin/block", "add", "198.51.100.9"]
        );
        let a = Action::of(&resp(&[
            "/usr/local/bin/block",
            "--ip",
            "{srcip}",
            "{action}",
            "{user}",
            "{rule}",
        ]));
        assert!(a.wants_user());
        t.user = Some("alice".into());
        assert_eq!(
            a.argv(Op::Delete, &t).unwrap(),
            [
                "/usr/local/bin/block",
                "--ip",
                "198.51.100.9",
                "delete",
                "alice",
                "100150"
            ]
        );
        // A placeholder inside a longer argument is not replaced (only whole arguments are).
        let a = Action::of(&resp(&["/bin/x", "--ip={srcip}"]));
        assert_eq!(
            a.argv(Op::Add, &t).unwrap(),
            ["/bin/x", "--ip={srcip}", "add", "198.51.100.9"]
        );
    }

    #[test]
    fn keys_round_trip() {
        for a in [
            Action::Nftables,
            Action::Iptables,
            Action::Ufw,
            Action::HostsDeny(PathBuf::from("/tmp/h")),
            Action::Program(vec!["/bin/x".into(), "{srcip}".into()]),
        ] {
            assert_eq!(Action::from_key(&a.key()), Some(a));
        }
        assert_eq!(Action::from_key("[\"rm\"]"), None);
        assert_eq!(Action::from_key("junk"), None);
    }

    #[test]
    fn addresses_and_users() {
        assert_eq!(host_address("1.2.3.4"), Ok("1.2.3.4".parse().unwrap()));
        assert_eq!(
            host_address("::ffff:1.2.3.4"),
            Ok("1.2.3.4".parse().unwrap())
        );
        assert!(host_address("2001:db8::1").is_ok());
        for bad in [
            "1.2.3.4;touch /tmp/x",
            "$(id)",
            " 1.2.3.4",
            "1.2.3.4:22",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "",
            "-1.2.3.4",
        ] {
            assert!(host_address(bad).is_err(), "{bad}");
        }
        assert!(valid_user("alice"));
        assert!(valid_user("svc-api.01"));
        for bad in ["", "-rf", "a b", "a;b", "$(id)x/", "a\nb"] {
            assert!(!valid_user(bad), "{bad}");
        }
    }

    #[test]
    fn hosts_deny_add_remove_keeps_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("hosts.deny");
        fs::write(&p, "# local\nsshd: 10.9.9.9").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let ip6: IpAddr = "2001:db8::7".parse().unwrap();
        assert!(edit_hosts_deny(&p, ip, Op::Add).unwrap());
        assert!(!edit_hosts_deny(&p, ip, Op::Add).unwrap());
        assert!(edit_hosts_deny(&p, ip6, Op::Add).unwrap());
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "# local\nsshd: 10.9.9.9\nALL: 203.0.113.7\nALL: [2001:db8::7]\n"
        );
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o644);
        assert!(edit_hosts_deny(&p, ip, Op::Delete).unwrap());
        assert!(!edit_hosts_deny(&p, ip, Op::Delete).unwrap());
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "# local\nsshd: 10.9.9.9\nALL: [2001:db8::7]\n"
        );
        // No temporary file left behind.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
        // A missing file is created.
        let q = tmp.path().join("new.deny");
        assert!(edit_hosts_deny(&q, ip, Op::Add).unwrap());
        assert_eq!(fs::read_to_string(&q).unwrap(), "ALL: 203.0.113.7\n");
    }

    #[test]
    fn hosts_deny_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("victim");
        fs::write(&target, "keep\n").unwrap();
        let link = tmp.path().join("hosts.deny");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let e = edit_hosts_deny(&link, ip, Op::Add).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
