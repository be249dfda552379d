//! What the agent gives up at start, before its first thread: `PR_SET_NO_NEW_PRIVS` always, and,
//! when it runs as root, every capability but those it uses.
//!
//! Kept as root:
//! - `CAP_DAC_READ_SEARCH`: reading any log file and file under FIM, listing any directory, and
//!   inotify watches on them;
//! - `CAP_NET_ADMIN` and `CAP_NET_RAW` only with `[active_response] enabled`: the nftables,
//!   iptables and ufw responses run those tools as children, which need them;
//! - `CAP_NET_BIND_SERVICE` only when `metrics_listen` is a port below 1024.
//!
//! The uid stays 0: the state directory, the database and the alert files are root's own and
//! need no capability to write (owner permissions), and `/etc/hosts.deny` (root's, 0644) too.
//! Dropped among others: `CAP_DAC_OVERRIDE` (write anything), `CAP_FOWNER` (chmod anything: a
//! way back to full root), `CAP_CHOWN`, `CAP_SETUID`, `CAP_SYS_ADMIN`, `CAP_SYS_PTRACE`.
//!
//! Children: with no_new_privs, a root child's capabilities are at most the agent's permitted set
//! (the kernel intersects them at `execve`), so commands run by sources and responses get what is
//! listed above and nothing else. That is why the network capabilities stay in the agent's own
//! permitted set when responses are on: dropping them would break the firewall responses. Custom
//! response or command sources that need more than this must run through a helper that has it
//! (a systemd unit, sudo is refused by no_new_privs). The bounding set is reduced the same way,
//! so a compromised agent cannot regain anything by running a root binary.
//!
//! A side effect: `O_NOATIME` is allowed only on one's own files without `CAP_FOWNER`, so hashing
//! files of other users falls back to a plain open (fim::hash already does).

use caps::{CapSet, Capability, CapsHashSet};

use crate::config::Config;

/// The capabilities the agent keeps when it runs as root, for this configuration.
pub fn needed(cfg: &Config) -> CapsHashSet {
    let mut keep = CapsHashSet::new();
    keep.insert(Capability::CAP_DAC_READ_SEARCH);
    if cfg.active_response.enabled {
        keep.insert(Capability::CAP_NET_ADMIN);
        keep.insert(Capability::CAP_NET_RAW);
    }
    if cfg.agent.metrics_listen.is_some_and(|a| a.port() < 1024) {
        keep.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    keep
}

/// Sets no_new_privs and, as root, reduces the capabilities to [`needed`]. Call before any thread
/// starts (capabilities are per thread; threads created later inherit them). Failures are logged
/// and the agent runs on: it is hardening, not a condition to detect intrusions.
pub fn drop_privileges(cfg: &Config) {
    match crate::sys::set_no_new_privs() {
        Ok(()) => tracing::debug!("no_new_privs set"),
        Err(e) => tracing::warn!("cannot set no_new_privs: {e}"),
    }
    if !crate::state::is_root() {
        return;
    }
    let keep = needed(cfg);
    let mut failed = Vec::new();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    match caps::read(None, CapSet::Bounding) {
        Ok(bounding) => {
            for c in bounding.difference(&keep) {
                if let Err(e) = caps::drop(None, CapSet::Bounding, *c) {
                    failed.push(format!("bounding {c}: {e}"));
                }
            }
        }
        Err(e) => failed.push(format!("reading the bounding set: {e}")),
    }
    // Only what we hold can be kept (a container may have given us less).
    let held = caps::read(None, CapSet::Permitted).unwrap_or_default();
    let keep: CapsHashSet = keep.intersection(&held).copied().collect();
    for (set, value) in [
        (CapSet::Inheritable, CapsHashSet::new()),
        (CapSet::Effective, keep.clone()),
        (CapSet::Permitted, keep.clone()),
    ] {
        if let Err(e) = caps::set(None, set, &value) {
            failed.push(format!("{set:?}: {e}"));
        }
    }
    let mut names: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
    names.sort();
    if failed.is_empty() {
        tracing::info!(
            kept = %names.join(","),
            "running as root with reduced capabilities"
        );
    } else {
        tracing::warn!(
            kept = %names.join(","),
            "could not reduce every capability: {}",
            failed.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_capabilities_only_for_responses_and_low_ports() {
        let mut cfg = crate::config::parse(std::path::Path::new("t.toml"), "").unwrap();
        assert_eq!(
            needed(&cfg),
            CapsHashSet::from_iter([Capability::CAP_DAC_READ_SEARCH])
        );
        cfg.active_response.enabled = true;
        cfg.agent.metrics_listen = Some("127.0.0.1:910".parse().unwrap());
        let n = needed(&cfg);
        for c in [
            Capability::CAP_NET_ADMIN,
            Capability::CAP_NET_RAW,
            Capability::CAP_NET_BIND_SERVICE,
        ] {
            assert!(n.contains(&c), "{c}");
        }
        assert!(!n.contains(&Capability::CAP_DAC_OVERRIDE));
    }
}
