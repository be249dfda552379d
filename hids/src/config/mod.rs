//! The configuration: one TOML file, read in two stages.
//!
//! `raw.rs` is the file as written (serde, `deny_unknown_fields`); `validate.rs` checks what each
//! value means and builds [`Config`]. Every problem is collected, each located to file:line:col with
//! the source line, so `hids check-config` shows them all at once.

pub(crate) mod locate;
pub mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobSet;
use regex::RegexSet;

use crate::diag::Diagnostic;
use locate::Located;

/// Errors from loading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} error(s) in {}:\n{}", .diagnostics.len(), path.display(), render(.diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from; relative paths in it were resolved against its directory.
    pub source: PathBuf,
    pub agent: AgentConfig,
    pub fim: FimConfig,
    pub logs: Vec<LogConfig>,
    pub rules: RulesConfig,
    pub alerts: AlertsConfig,
    pub active_response: ActiveResponseConfig,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub state_dir: PathBuf,
    pub log_level: String,
    pub hostname: String,
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckMode {
    Fast,
    Full,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FimConfig {
    /// None: no interval-based scans.
    pub interval: Option<Duration>,
    /// Local time of day (hour, minute) for a daily scan.
    pub daily_time: Option<(u8, u8)>,
    pub check_mode: CheckMode,
    pub full_every: u32,
    /// Bytes per second, 0 for no cap.
    pub max_io_bytes_per_s: u64,
    pub max_files_per_s: u32,
    pub low_priority: bool,
    pub settle: Duration,
    pub paths: Vec<FimPath>,
}

/// Which attributes are compared for a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    pub file_type: bool,
    pub size: bool,
    pub perm: bool,
    /// uid and user name.
    pub owner: bool,
    /// gid and group name.
    pub group: bool,
    pub inode: bool,
    pub device: bool,
    pub mtime: bool,
    pub ctime: bool,
    pub hash: bool,
    pub link: bool,
}

impl Checks {
    pub const ALL: Checks = Checks {
        file_type: true,
        size: true,
        perm: true,
        owner: true,
        group: true,
        inode: true,
        device: true,
        mtime: true,
        ctime: true,
        hash: true,
        link: true,
    };
    pub const NONE: Checks = Checks {
        file_type: false,
        size: false,
        perm: false,
        owner: false,
        group: false,
        inode: false,
        device: false,
        mtime: false,
        ctime: false,
        hash: false,
        link: false,
    };
    /// The names accepted in `checks`.
    pub const NAMES: [&'static str; 12] = [
        "all", "type", "size", "perm", "owner", "group", "inode", "device", "mtime", "ctime",
        "hash", "link",
    ];

    /// Turns on one named check; false when the name is unknown.
    pub fn enable(&mut self, name: &str) -> bool {
        match name {
            "all" => *self = Checks::ALL,
            "type" => self.file_type = true,
            "size" => self.size = true,
            "perm" => self.perm = true,
            "owner" => self.owner = true,
            "group" => self.group = true,
            "inode" => self.inode = true,
            "device" => self.device = true,
            "mtime" => self.mtime = true,
            "ctime" => self.ctime = true,
            "hash" => self.hash = true,
            "link" => self.link = true,
            _ => return false,
        }
        true
    }
}

/// Globs and regexes matched against a path.
#[derive(Debug, Clone, Default)]
pub struct PathMatcher {
    /// The patterns as written, for display.
    pub patterns: Vec<String>,
    /// Globs with a '/' match the full path; globs without one match the file name.
    full: GlobSet,
    name: GlobSet,
    regexes: Option<RegexSet>,
    /// Exact paths hids itself leaves out (its state database), not written by the operator.
    exact: Vec<PathBuf>,
}

/// Equal when written the same: the compiled sets follow from the patterns.
impl PartialEq for PathMatcher {
    fn eq(&self, other: &PathMatcher) -> bool {
        self.patterns == other.patterns && self.exact == other.exact
    }
}

impl PathMatcher {
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty() && self.exact.is_empty()
    }

    /// Also matches these exact paths.
    pub fn add_exact(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        self.exact.extend(paths);
    }

    /// Whether `path` matches any pattern.
    pub fn matches(&self, path: &Path) -> bool {
        if !self.exact.is_empty() && self.exact.iter().any(|p| p == path) {
            return true;
        }
        if self.full.is_match(path) {
            return true;
        }
        if let Some(name) = path.file_name() {
            if self.name.is_match(Path::new(name)) {
                return true;
            }
        }
        if let Some(set) = &self.regexes {
            return set.is_match(&path.to_string_lossy());
        }
        false
    }
}

/// `nodiff` for one path.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum NoDiff {
    #[default]
    None,
    All,
    Matching(PathMatcher),
}

impl NoDiff {
    pub fn covers(&self, path: &Path) -> bool {
        match self {
            NoDiff::None => false,
            NoDiff::All => true,
            NoDiff::Matching(m) => m.matches(path),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FimPath {
    pub path: PathBuf,
    pub depth: u32,
    pub ignore: PathMatcher,
    pub restrict: PathMatcher,
    pub checks: Checks,
    pub realtime: bool,
    pub report_changes: bool,
    pub nodiff: NoDiff,
    pub follow_symlinks: bool,
    pub max_hashed_size: u64,
    pub one_file_system: bool,
}

pub use crate::event::LogFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    End,
    Beginning,
}

/// A log source's longest line when its `max_line` is not set.
pub const DEFAULT_MAX_LINE: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub path: Option<String>,
    pub format: LogFormat,
    pub command: Vec<String>,
    pub interval: Duration,
    pub alias: Option<String>,
    pub start: StartAt,
    pub units: Vec<String>,
    pub identifiers: Vec<String>,
    pub journal_dir: Option<PathBuf>,
    pub max_line: usize,
    /// How long a last line without its newline waits before it is handed on; zero: forever.
    pub partial_line_wait: Duration,
}

impl LogConfig {
    /// What alerts show as the location: the alias, else the path, else the command line.
    pub fn location(&self) -> String {
        if let Some(a) = &self.alias {
            return a.clone();
        }
        match self.format {
            LogFormat::Journald => "journald".to_string(),
            LogFormat::Command => self.command.join(" "),
            _ => self.path.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RulesConfig {
    pub decoders: Vec<PathBuf>,
    pub rules: Vec<PathBuf>,
    pub lists: Vec<PathBuf>,
    pub local_decoders: Vec<PathBuf>,
    pub local_rules: Vec<PathBuf>,
    /// Bounds on correlation memory (`rules::correlate::Limits`).
    pub correlation_max_events: usize,
    pub correlation_max_log_bytes: usize,
    pub correlation_max_keys: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotate {
    Daily,
    Size,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertFileConfig {
    pub enabled: bool,
    pub path: PathBuf,
    pub rotate: Rotate,
    pub max_size: u64,
    pub keep: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogProtocol {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    Rfc3164,
    Rfc5424,
    Json,
    Cef,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SyslogTarget {
    Server {
        host: String,
        port: u16,
        protocol: SyslogProtocol,
    },
    Socket(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyslogConfig {
    pub target: SyslogTarget,
    pub format: SyslogFormat,
    pub min_level: u8,
    pub groups: Vec<String>,
    /// Facility number (RFC 5424 table: local0 = 16).
    pub facility: u8,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    StartTls,
    Tls,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmailRoute {
    pub groups: Vec<String>,
    pub rules: Vec<u32>,
    pub min_level: Option<u8>,
    pub to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmailConfig {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: SmtpTls,
    /// CA certificates to verify the SMTP server with (the system's when `None`).
    pub ca_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    pub min_level: u8,
    pub max_per_hour: u32,
    pub routes: Vec<EmailRoute>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    pub log_level: u8,
    pub file: AlertFileConfig,
    pub json: AlertFileConfig,
    pub syslog: Vec<SyslogConfig>,
    pub email: Option<EmailConfig>,
    pub spool_max: u64,
}

/// An address or network never acted on.
pub use crate::net::Cidr;

/// One `[[active_response.response]]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseConfig {
    /// A built-in name alone, or an absolute program path and its arguments.
    pub command: Vec<String>,
    pub rules: Vec<u32>,
    pub groups: Vec<String>,
    pub min_level: Option<u8>,
    /// None: never undone.
    pub timeout: Option<Duration>,
    /// For the `hosts-deny` built-in: the file edited (`/etc/hosts.deny` when not given).
    pub hosts_deny_path: Option<PathBuf>,
}

/// `[active_response]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveResponseConfig {
    pub enabled: bool,
    pub allowlist: Vec<Cidr>,
    pub max_per_minute: u32,
    pub responses: Vec<ResponseConfig>,
}

/// Where the configuration is read from when neither `--config` nor `HIDS_CONFIG` says:
/// the checkout's `etc/hids.toml` for a binary built in a development checkout, else
/// `/etc/hids/hids.toml`.
pub fn default_path() -> PathBuf {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Ok(exe) = std::env::current_exe() {
        if let Ok(root) = checkout.canonicalize() {
            let dev = root.join("etc/hids.toml");
            if exe.starts_with(root.join("target")) && dev.is_file() {
                return dev;
            }
        }
    }
    PathBuf::from("/etc/hids/hids.toml")
}

/// The state directory used when the configuration names none.
pub fn default_state_dir() -> PathBuf {
    if crate::state::is_root() {
        return PathBuf::from("/var/lib/hids");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| Path::new(x).is_absolute()) {
        return PathBuf::from(x).join("hids");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/hids"),
        None => PathBuf::from("/tmp/hids-state"),
    }
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates configuration text; `path` is used for messages and to resolve relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let invalid = |diagnostics| ConfigError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    };
    let located = match Located::parse(text) {
        Ok(l) => l,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().to_string();
            return Err(invalid(vec![Diagnostic::at(
                path,
                text,
                span,
                format!("TOML syntax error: {msg}"),
            )]));
        }
    };
    let (raw, mut diags) = deserialize_collecting(path, text);
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let (config, errors) = validate::validate(raw.unwrap_or_default(), path, &base);
    for (p, msg) in errors {
        let span = located.span_of(&p).unwrap_or(0..0);
        diags.push(Diagnostic::at(path, text, span, msg));
    }
    if diags.is_empty() {
        Ok(config)
    } else {
        diags.sort_by_key(|d| (d.line, d.col));
        diags.dedup();
        Err(invalid(diags))
    }
}

/// Runs serde over the text; on each error records it, blanks the offending entry (keeping every
/// byte offset) and tries again, so that all unknown keys and badly typed values are reported.
fn deserialize_collecting(path: &Path, text: &str) -> (Option<raw::RawConfig>, Vec<Diagnostic>) {
    let mut work = text.as_bytes().to_vec();
    let mut diags = Vec::new();
    for _ in 0..200 {
        let current = String::from_utf8_lossy(&work).into_owned();
        match toml::from_str::<raw::RawConfig>(&current) {
            Ok(raw) => return (Some(raw), diags),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let located = Located::parse(&current).ok();
                let found = located.as_ref().and_then(|l| l.entry_at(span.start));
                diags.push(Diagnostic::at(
                    path,
                    text,
                    found
                        .as_ref()
                        .and_then(|f| f.key.clone())
                        .filter(|_| e.message().starts_with("unknown field"))
                        .unwrap_or(span.clone()),
                    describe_serde_error(e.message(), found.as_ref()),
                ));
                let Some(f) = found else { break };
                let mut start = f
                    .key
                    .as_ref()
                    .map_or(span.start, |k| k.start)
                    .min(span.start);
                // A table header: blank its brackets too.
                while start > 0 && matches!(work[start - 1], b'[' | b' ' | b'\t') {
                    start -= 1;
                }
                let end = f.end.max(span.end).min(work.len());
                if start >= end || work[start..end].iter().all(|b| b.is_ascii_whitespace()) {
                    break;
                }
                for b in &mut work[start..end] {
                    if *b != b'\n' {
                        *b = b' ';
                    }
                }
            }
        }
    }
    (None, diags)
}

fn table_label(f: &locate::Found) -> String {
    if f.table.is_empty() {
        "at the top level".to_string()
    } else if f.in_array_of_tables {
        format!("in [[{}]]", f.table.join("."))
    } else {
        format!("in [{}]", f.table.join("."))
    }
}

/// Rewrites serde's message into one an operator can act on.
fn describe_serde_error(msg: &str, found: Option<&locate::Found>) -> String {
    let msg = msg.trim();
    let quoted: Vec<&str> = msg.split('`').skip(1).step_by(2).collect();
    let place = found.map(table_label).unwrap_or_default();
    if let Some(rest) = msg.strip_prefix("unknown field") {
        let _ = rest;
        let word = quoted.first().copied().unwrap_or("");
        let mut out = format!("unknown field \"{word}\" {place}");
        if let Some(s) = crate::diag::suggest(word, quoted.iter().skip(1).copied()) {
            out.push_str(&format!(", did you mean \"{s}\"?"));
        } else if quoted.len() > 1 {
            out.push_str(&format!(" (expected one of: {})", quoted[1..].join(", ")));
        }
        return out;
    }
    if msg.starts_with("missing field") {
        let word = quoted.first().copied().unwrap_or("");
        return format!("missing field \"{word}\" {place}")
            .trim_end()
            .to_string();
    }
    let key = found
        .and_then(|f| f.name.clone())
        .map(|n| format!("\"{n}\" {place}: "))
        .unwrap_or_default();
    let what = if msg.contains("RawDuration") {
        "expected a duration: whole seconds, or a number with s, m, h or d (\"90s\", \"12h\")"
            .to_string()
    } else if msg.contains("RawSize") {
        "expected a size: bytes, or a number with K, M, G or KiB, MiB, GiB (\"64KiB\")".to_string()
    } else if msg.contains("BoolOrList") {
        "expected true, false or a list of globs".to_string()
    } else {
        msg.to_string()
    };
    format!("invalid value for {key}{what}")
}

#[cfg(test)]
mod tests;
