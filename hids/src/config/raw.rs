//! The configuration file as written: serde structs with `deny_unknown_fields`.
//!
//! These doc comments are the reference for every option; `etc/hids.toml` shows each one with its
//! default. Values are only parsed here; `validate.rs` checks what they mean and turns them into
//! [`super::Config`].

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub agent: RawAgent,
    #[serde(default)]
    pub fim: RawFim,
    #[serde(default)]
    pub logs: Vec<RawLog>,
    #[serde(default)]
    pub rules: RawRules,
    #[serde(default)]
    pub alerts: RawAlerts,
    #[serde(default)]
    pub active_response: RawActiveResponse,
}

/// `[agent]`: the process itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// Where the database and keys live. Default: `/var/lib/hids` as root, otherwise
    /// `$XDG_STATE_HOME/hids` or `~/.local/state/hids`.
    pub state_dir: Option<String>,
    /// Diagnostic log level: error, warn, info, debug, trace.
    pub log_level: Option<String>,
    /// The host name written in alerts. Default: the system's host name.
    pub hostname: Option<String>,
    /// Optional Prometheus endpoint, e.g. "127.0.0.1:9108". Off when absent.
    pub metrics_listen: Option<String>,
}

/// A duration: seconds as an integer, or a string with a unit ("90s", "15m", "12h", "1d").
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    Seconds(i64),
    Text(String),
}

/// A size: bytes as an integer, or a string with a unit ("64KiB", "10M", "1 GB").
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

/// `[fim]`: file integrity monitoring.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFim {
    /// Scan every so often. Default "12h". 0 disables scheduled scans.
    pub interval: Option<RawDuration>,
    /// Also scan every day at this local time, "HH:MM".
    pub daily_time: Option<String>,
    /// "fast": skip rehashing files whose size, mtime, ctime, inode and device are unchanged; "full": rehash all.
    pub check_mode: Option<String>,
    /// Every Nth scheduled scan is a full one (0: never).
    pub full_every: Option<u32>,
    /// Read no faster than this many MB per second during scheduled scans (0: no cap).
    pub max_io_mb_per_s: Option<u32>,
    /// Visit no more than this many files per second during scheduled scans (0: no cap).
    pub max_files_per_s: Option<u32>,
    /// Run scheduled scans at idle IO priority and low CPU priority. Default true.
    pub low_priority: Option<bool>,
    /// Real-time changes to a path are coalesced for this many milliseconds before they are reported. Default 100.
    pub settle_ms: Option<u64>,
    /// The trees and files to watch.
    #[serde(default)]
    pub paths: Vec<RawFimPath>,
}

/// Either a boolean or a list of globs.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BoolOrList {
    Bool(bool),
    List(Vec<String>),
}

/// `[[fim.paths]]`: one tree or file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFimPath {
    /// Absolute path of a directory (walked) or a file.
    pub path: String,
    /// How many directory levels below `path` to descend. Default 256.
    pub depth: Option<u32>,
    /// Globs (matched against the full path, or the file name when they hold no '/') to skip.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Regular expressions (matched against the full path) to skip.
    #[serde(default)]
    pub ignore_regex: Vec<String>,
    /// When set, only files matching one of these globs are recorded.
    #[serde(default)]
    pub restrict: Vec<String>,
    /// When set, only files matching one of these regular expressions are recorded.
    #[serde(default)]
    pub restrict_regex: Vec<String>,
    /// Attributes compared: "all" or any of type, size, perm, owner, group, inode, device, mtime,
    /// ctime, hash, link. Default ["all"].
    pub checks: Option<Vec<String>>,
    /// Watch with inotify and report within the settle window.
    pub realtime: Option<bool>,
    /// Keep compressed copies of text files to show a diff when they change.
    pub report_changes: Option<bool>,
    /// Never store or show content: `true` for the whole path, or globs of files (keys, .env ...).
    pub nodiff: Option<BoolOrList>,
    /// Follow symbolic links instead of recording them as links. Default false.
    pub follow_symlinks: Option<bool>,
    /// Files larger than this are recorded without a hash. Default "1GiB".
    pub max_hashed_size: Option<RawSize>,
    /// Stay on the file system `path` is on. Default true.
    pub one_file_system: Option<bool>,
}

/// `[[logs]]`: one log source.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// A file, or a glob of files (`/var/log/nginx/*.log`; `**` for any depth). Not for journald and command.
    pub path: Option<String>,
    /// syslog, json, nginx, apache, audit, plain, journald or command.
    pub format: Option<String>,
    /// For `command`: the program and its arguments, run without a shell.
    pub command: Option<Vec<String>>,
    /// For `command`: run every so often. Default "60s".
    pub interval: Option<RawDuration>,
    /// The location shown in alerts instead of the path or command line.
    pub alias: Option<String>,
    /// Where a file is read from at first sight: "end" (default) or "beginning".
    pub start: Option<String>,
    /// For `journald`: only these units.
    #[serde(default)]
    pub units: Vec<String>,
    /// For `journald`: only these SYSLOG_IDENTIFIERs.
    #[serde(default)]
    pub identifiers: Vec<String>,
    /// For `journald`: read journal files from this directory instead of the running journal.
    pub journal_dir: Option<String>,
    /// Lines longer than this are cut and marked. Default "64KiB".
    pub max_line: Option<RawSize>,
    /// A last line without its newline is handed on as it is once the file has been quiet this
    /// long. Default "5s"; 0 waits for the newline however long it takes.
    pub partial_line_wait: Option<RawDuration>,
}

/// `[rules]`: decoders and rules, OSSEC XML.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    /// Decoder files or directories (a directory loads its *.xml in name order). Relative paths are
    /// taken from the configuration file's directory.
    pub decoders: Option<Vec<String>>,
    /// Rule files or directories, in load order.
    pub rules: Option<Vec<String>>,
    /// CDB-style list files.
    #[serde(default)]
    pub lists: Vec<String>,
    /// Local decoder files, loaded after `decoders`.
    #[serde(default)]
    pub local_decoders: Vec<String>,
    /// Local rule files, loaded after `rules` (they may `overwrite` stock rules).
    #[serde(default)]
    pub local_rules: Vec<String>,
    /// Alerted events remembered for correlation (`frequency`, `if_matched_*`; OSSEC's
    /// `memory_size`). Past it the oldest are dropped and counted. Default 8192, at most 16777216;
    /// 0 turns correlation memory off.
    pub correlation_max_events: Option<i64>,
    /// Bytes of each remembered event's log kept for an alert's related events. Default "2KiB",
    /// between 64 bytes and 1MiB.
    pub correlation_max_log_bytes: Option<RawSize>,
    /// Distinct first-time-seen keys and ignore keys remembered, each. Default 65536, at most
    /// 16777216.
    pub correlation_max_keys: Option<i64>,
}

/// `[alerts]`: what becomes an alert and where it goes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Alerts below this level are not recorded. Default 1.
    pub log_level: Option<i64>,
    pub file: Option<RawAlertFile>,
    pub json: Option<RawAlertFile>,
    #[serde(default)]
    pub syslog: Vec<RawSyslog>,
    pub email: Option<RawEmail>,
    /// Alerts waiting for delivery are kept up to this size. Default "256MiB".
    pub spool_max: Option<RawSize>,
}

/// `[alerts.file]` and `[alerts.json]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertFile {
    /// Default true.
    pub enabled: Option<bool>,
    /// Default `<state_dir>/alerts.log` or `<state_dir>/alerts.json`.
    pub path: Option<String>,
    /// "daily" (default), "size" or "never".
    pub rotate: Option<String>,
    /// For `rotate = "size"`. Default "100MiB".
    pub max_size: Option<RawSize>,
    /// Rotated files kept. Default 30.
    pub keep: Option<u32>,
}

/// `[[alerts.syslog]]`: one syslog destination.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyslog {
    /// Host name or address of a remote server.
    pub server: Option<String>,
    /// A local socket instead of a server, e.g. "/dev/log".
    pub socket: Option<String>,
    /// Default 514 (udp, tcp) or 6514 (tls).
    pub port: Option<i64>,
    /// udp, tcp (RFC 6587 octet counting) or tls (RFC 5425). Default "tcp". Over udp a message is
    /// at most 2048 bytes: longer alerts are shortened (log, diff and fields cut and marked, JSON
    /// kept valid), so prefer tcp or tls, above all with format "json".
    pub protocol: Option<String>,
    /// rfc3164, rfc5424 (default), json or cef.
    pub format: Option<String>,
    /// Default 1.
    pub min_level: Option<i64>,
    /// Only alerts in one of these groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Syslog facility name. Default "local0".
    pub facility: Option<String>,
    /// For tls: the CA certificate file to verify the server with.
    pub ca_file: Option<String>,
}

/// `[alerts.email]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// Default true when the section exists.
    pub enabled: Option<bool>,
    pub smtp_host: Option<String>,
    /// Default 25 (none), 587 (starttls) or 465 (tls).
    pub smtp_port: Option<i64>,
    /// none, starttls (default) or tls (implicit TLS, "SMTPS").
    pub tls: Option<String>,
    /// For starttls and tls: a PEM file of the CA certificate(s) to verify the server with.
    /// Default: the system's trusted certificates.
    pub ca_file: Option<String>,
    pub user: Option<String>,
    /// A 0600 file holding the SMTP password.
    pub password_file: Option<String>,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// Alerts of at least this level are mailed to `to`. A rule with the `alert_by_email` option
    /// is mailed whatever its level (but still only when it reaches `alerts.log_level`, and
    /// counted in `max_per_hour`); `no_email_alert` is never mailed. Default 7.
    pub min_level: Option<i64>,
    /// At most this many mails an hour (0: no cap). Below it each alert is its own mail; past it
    /// the alerts waiting are grouped into a digest mail, sent as the next slot frees. Default 12.
    pub max_per_hour: Option<u32>,
    #[serde(default)]
    pub route: Vec<RawEmailRoute>,
}

/// `[[alerts.email.route]]`: alerts matching the route also go to `to`, whatever the email
/// `min_level`. A route matches when every criterion it gives matches: the alert is in one of
/// `groups`, its rule is one of `rules`, its level is at least `min_level`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmailRoute {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub rules: Vec<u32>,
    pub min_level: Option<i64>,
    #[serde(default)]
    pub to: Vec<String>,
}

/// `[active_response]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActiveResponse {
    /// Default false. Blocks already made are still lifted on time while it is off.
    pub enabled: Option<bool>,
    /// Addresses and CIDRs never acted on (loopback and the host's own are always added).
    #[serde(default)]
    pub allowlist: Vec<String>,
    /// At most this many blocks a minute (unblocks are not counted); beyond it responses are
    /// skipped, logged and reported. Default 30; 0: no cap.
    pub max_per_minute: Option<u32>,
    #[serde(default)]
    pub response: Vec<RawResponse>,
}

/// `[[active_response.response]]`. A response fires when every criterion it gives matches: the
/// alert's rule is one of `rules`, it is in one of `groups`, its level is at least `min_level`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponse {
    /// A built-in (`["nftables"]`, `["iptables"]`, `["ufw"]`, `["hosts-deny"]`) or a program (an
    /// absolute path) and its arguments, run without a shell. An argument that is exactly
    /// `{action}` (`add` or `delete`), `{srcip}`, `{user}` or `{rule}` is replaced by that value;
    /// with none of them, `add|delete` and the address are appended.
    pub command: Option<Vec<String>>,
    /// Fire for these rule ids.
    #[serde(default)]
    pub rules: Vec<u32>,
    /// Fire for alerts in these groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Fire for alerts of at least this level.
    pub min_level: Option<i64>,
    /// Undo after this long ("10m"). Default "10m"; 0: never.
    pub timeout: Option<RawDuration>,
    /// For `hosts-deny`: the file to edit. Default `/etc/hosts.deny`.
    pub hosts_deny_path: Option<String>,
}
