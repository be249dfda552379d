//! From the file as written ([`RawConfig`]) to the checked [`Config`]: every value's meaning is
//! checked here and each problem is recorded with the path of the key it came from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobBuilder, GlobSetBuilder};
use regex::RegexSet;

use super::locate::{path, Seg};
use super::raw::*;
use super::*;

type Errors = Vec<(Vec<Seg>, String)>;

struct V<'a> {
    errors: Errors,
    base: &'a Path,
}

impl V<'_> {
    fn err(&mut self, p: Vec<Seg>, msg: impl Into<String>) {
        self.errors.push((p, msg.into()));
    }

    /// A level 0..=16.
    fn level(&mut self, p: Vec<Seg>, v: Option<i64>, default: u8) -> u8 {
        match v {
            None => default,
            Some(l) if (0..=16).contains(&l) => l as u8,
            Some(l) => {
                self.err(p, format!("level {l} is out of range: levels are 0 to 16"));
                default
            }
        }
    }

    fn port(&mut self, p: Vec<Seg>, v: Option<i64>, default: u16) -> u16 {
        match v {
            None => default,
            Some(n) if (1..=65535).contains(&n) => n as u16,
            Some(n) => {
                self.err(p, format!("port {n} is out of range: ports are 1 to 65535"));
                default
            }
        }
    }

    fn duration(&mut self, p: Vec<Seg>, v: &Option<RawDuration>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(RawDuration::Seconds(s)) if *s >= 0 => Duration::from_secs(*s as u64),
            Some(RawDuration::Seconds(s)) => {
                self.err(p, format!("duration {s} is negative"));
                default
            }
            Some(RawDuration::Text(t)) => match parse_duration(t) {
                Some(d) => d,
                None => {
                    self.err(
                        p,
                        format!("\"{t}\" is not a duration: write seconds, or a number with s, m, h or d (\"90s\", \"12h\")"),
                    );
                    default
                }
            },
        }
    }

    fn size(&mut self, p: Vec<Seg>, v: &Option<RawSize>, default: u64) -> u64 {
        match v {
            None => default,
            Some(RawSize::Bytes(b)) if *b >= 0 => *b as u64,
            Some(RawSize::Bytes(b)) => {
                self.err(p, format!("size {b} is negative"));
                default
            }
            Some(RawSize::Text(t)) => match parse_size(t) {
                Some(s) => s,
                None => {
                    self.err(p, format!("\"{t}\" is not a size: write bytes, or a number with K, M, G, KiB, MiB or GiB"));
                    default
                }
            },
        }
    }

    /// One of a fixed set of words, with a suggestion when it is misspelt.
    fn choice<'c>(
        &mut self,
        p: Vec<Seg>,
        v: &Option<String>,
        choices: &[&'c str],
        default: &'c str,
    ) -> &'c str {
        let Some(v) = v else { return default };
        if let Some(c) = choices.iter().find(|c| **c == v.as_str()) {
            return c;
        }
        let mut msg = format!("\"{v}\" is not one of {}", choices.join(", "));
        if let Some(s) = crate::diag::suggest(v, choices.iter().copied()) {
            msg.push_str(&format!("; did you mean \"{s}\"?"));
        }
        self.err(p, msg);
        default
    }

    fn absolute(&mut self, p: Vec<Seg>, v: &str) -> PathBuf {
        let pb = PathBuf::from(v);
        if !pb.is_absolute() {
            self.err(p, format!("path \"{v}\" must be absolute"));
        }
        pb
    }

    /// A path that may be relative to the configuration file's directory.
    fn resolved(&self, v: &str) -> PathBuf {
        let pb = PathBuf::from(v);
        if pb.is_absolute() {
            pb
        } else {
            self.base.join(pb)
        }
    }

    fn matcher(
        &mut self,
        p: Vec<Seg>,
        key_globs: &str,
        globs: &[String],
        key_re: &str,
        res: &[String],
    ) -> PathMatcher {
        let mut full = GlobSetBuilder::new();
        let mut name = GlobSetBuilder::new();
        let mut patterns = Vec::new();
        for (i, g) in globs.iter().enumerate() {
            match GlobBuilder::new(g)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
            {
                Ok(glob) => {
                    if g.contains('/') {
                        full.add(glob);
                    } else {
                        name.add(glob);
                    }
                    patterns.push(g.clone());
                }
                Err(e) => {
                    let mut q = p.clone();
                    q.push(Seg::from(key_globs));
                    q.push(Seg::Index(i));
                    self.err(q, format!("bad glob \"{g}\": {}", e.kind()));
                }
            }
        }
        let mut ok_res = Vec::new();
        for (i, r) in res.iter().enumerate() {
            match regex::Regex::new(r) {
                Ok(_) => {
                    ok_res.push(r.clone());
                    patterns.push(format!("regex:{r}"));
                }
                Err(e) => {
                    let mut q = p.clone();
                    q.push(Seg::from(key_re));
                    q.push(Seg::Index(i));
                    self.err(
                        q,
                        format!(
                            "bad regular expression \"{r}\": {}",
                            first_line(&e.to_string()).trim_start_matches("error: ")
                        ),
                    );
                }
            }
        }
        PathMatcher {
            patterns,
            full: full.build().unwrap_or_default(),
            name: name.build().unwrap_or_default(),
            regexes: if ok_res.is_empty() {
                None
            } else {
                RegexSet::new(&ok_res).ok()
            },
            ..PathMatcher::default()
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_string()
}

/// "90s", "15m", "12h", "1d", "100ms", "2h30m" or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86400)?),
            _ => return None,
        };
        total = total.checked_add(d)?;
    }
    Some(total)
}

/// "64KiB", "10M", "1 GB", "512" (bytes). K/M/G without "i" are powers of 1000.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let mult: u64 = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn parse_time_of_day(s: &str) -> Option<(u8, u8)> {
    let (h, m) = s.trim().split_once(':')?;
    let h: u8 = h.parse().ok()?;
    let m: u8 = m.parse().ok()?;
    (h < 24 && m < 60).then_some((h, m))
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn facility_number(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u8)
}

fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !s
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>' || c == ',')
}

/// Validates `raw`; returns the config (with defaults where values were wrong) and the errors.
pub fn validate(raw: RawConfig, source: &Path, base: &Path) -> (Config, Errors) {
    let mut v = V {
        errors: Vec::new(),
        base,
    };

    // [agent]
    let a = &raw.agent;
    let state_dir = match &a.state_dir {
        Some(s) => v.absolute(path!["agent", "state_dir"], s),
        None => default_state_dir(),
    };
    let log_level = v
        .choice(
            path!["agent", "log_level"],
            &a.log_level,
            &["error", "warn", "info", "debug", "trace"],
            "info",
        )
        .to_string();
    let hostname = match &a.hostname {
        Some(h)
            if h.trim().is_empty() || h.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            v.err(
                path!["agent", "hostname"],
                "hostname must be non-empty, without spaces or control characters",
            );
            system_hostname()
        }
        Some(h) => h.clone(),
        None => system_hostname(),
    };
    let metrics_listen = a.metrics_listen.as_ref().and_then(|m| match m.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            v.err(
                path!["agent", "metrics_listen"],
                format!("\"{m}\" is not an address:port such as \"127.0.0.1:9108\""),
            );
            None
        }
    });
    let agent = AgentConfig {
        state_dir: state_dir.clone(),
        log_level,
        hostname,
        metrics_listen,
    };

    // [fim]
    let f = &raw.fim;
    let interval = v.duration(
        path!["fim", "interval"],
        &f.interval,
        Duration::from_secs(12 * 3600),
    );
    let daily_time = f
        .daily_time
        .as_ref()
        .and_then(|t| match parse_time_of_day(t) {
            Some(x) => Some(x),
            None => {
                v.err(
                    path!["fim", "daily_time"],
                    format!("\"{t}\" is not a time of day \"HH:MM\" (00:00 to 23:59)"),
                );
                None
            }
        });
    let check_mode = match v.choice(
        path!["fim", "check_mode"],
        &f.check_mode,
        &["fast", "full"],
        "fast",
    ) {
        "full" => CheckMode::Full,
        _ => CheckMode::Fast,
    };
    let mut paths = Vec::new();
    for (i, p) in f.paths.iter().enumerate() {
        let at = |k: &str| path!["fim", "paths", i, k];
        let fpath = v.absolute(at("path"), &p.path);
        let mut checks = Checks::NONE;
        match &p.checks {
            None => checks = Checks::ALL,
            Some(list) => {
                if list.is_empty() {
                    v.err(at("checks"), "checks is empty: list attributes, or \"all\"");
                }
                for (j, c) in list.iter().enumerate() {
                    if !checks.enable(c) {
                        let mut msg = format!(
                            "unknown check \"{c}\" (one of {})",
                            Checks::NAMES.join(", ")
                        );
                        if let Some(s) = crate::diag::suggest(c, Checks::NAMES) {
                            msg = format!("unknown check \"{c}\", did you mean \"{s}\"?");
                        }
                        v.err(path!["fim", "paths", i, "checks", j], msg);
                    }
                }
            }
        }
        let here = path!["fim", "paths", i];
        let mut ignore = v.matcher(
            here.clone(),
            "ignore",
            &p.ignore,
            "ignore_regex",
            &p.ignore_regex,
        );
        // The state database changes all the time, and a descriptor of it opened and closed by
        // the hashing would drop the SQLite locks this process holds on it: never part of FIM.
        if state_dir.starts_with(&fpath) {
            ignore.add_exact(crate::state::db_files(&state_dir));
        }
        let restrict = v.matcher(
            here.clone(),
            "restrict",
            &p.restrict,
            "restrict_regex",
            &p.restrict_regex,
        );
        let nodiff = match &p.nodiff {
            None | Some(BoolOrList::Bool(false)) => NoDiff::None,
            Some(BoolOrList::Bool(true)) => NoDiff::All,
            Some(BoolOrList::List(l)) => {
                NoDiff::Matching(v.matcher(here.clone(), "nodiff", l, "nodiff", &[]))
            }
        };
        if let Some(d) = p.depth {
            if d > 4096 {
                v.err(
                    at("depth"),
                    format!("depth {d} is too large (at most 4096)"),
                );
            }
        }
        paths.push(FimPath {
            path: fpath,
            depth: p.depth.unwrap_or(256).min(4096),
            ignore,
            restrict,
            checks,
            realtime: p.realtime.unwrap_or(false),
            report_changes: p.report_changes.unwrap_or(false),
            nodiff,
            follow_symlinks: p.follow_symlinks.unwrap_or(false),
            max_hashed_size: v.size(at("max_hashed_size"), &p.max_hashed_size, 1 << 30),
            one_file_system: p.one_file_system.unwrap_or(true),
        });
    }
    for i in 0..paths.len() {
        for j in 0..i {
            if paths[i].path == paths[j].path {
                v.err(
                    path!["fim", "paths", i, "path"],
                    format!("\"{}\" is listed twice", paths[i].path.display()),
                );
            }
        }
    }
    let settle_ms = f.settle_ms.unwrap_or(100);
    if settle_ms > 60_000 {
        v.err(
            path!["fim", "settle_ms"],
            "settle_ms is at most 60000 (one minute)",
        );
    }
    let fim = FimConfig {
        interval: Some(interval).filter(|d| !d.is_zero()),
        daily_time,
        check_mode,
        full_every: f.full_every.unwrap_or(0),
        max_io_bytes_per_s: u64::from(f.max_io_mb_per_s.unwrap_or(0)) * 1_000_000,
        max_files_per_s: f.max_files_per_s.unwrap_or(0),
        low_priority: f.low_priority.unwrap_or(true),
        settle: Duration::from_millis(settle_ms.min(60_000)),
        paths,
    };

    // [[logs]]
    let mut logs = Vec::new();
    for (i, l) in raw.logs.iter().enumerate() {
        let at = |k: &str| path!["logs", i, k];
        let format = match &l.format {
            None => {
                v.err(
                    path!["logs", i],
                    format!(
                        "missing field \"format\" (one of {})",
                        LogFormat::NAMES.join(", ")
                    ),
                );
                LogFormat::Plain
            }
            Some(_) => {
                LogFormat::parse(v.choice(at("format"), &l.format, &LogFormat::NAMES, "plain"))
                    .unwrap_or(LogFormat::Plain)
            }
        };
        match format {
            LogFormat::Command => {
                match &l.command {
                    None => v.err(
                        path!["logs", i],
                        "format \"command\" needs command = [\"program\", \"arg\", ...]",
                    ),
                    Some(c) if c.is_empty() || c[0].is_empty() => {
                        v.err(at("command"), "command is empty")
                    }
                    Some(_) => {}
                }
                if l.path.is_some() {
                    v.err(at("path"), "path is not used with format \"command\"");
                }
            }
            LogFormat::Journald => {
                if l.path.is_some() {
                    v.err(at("path"), "path is not used with format \"journald\" (use journal_dir for journal files)");
                }
            }
            _ => {
                match &l.path {
                    None => v.err(
                        path!["logs", i],
                        format!("missing field \"path\" for format \"{}\"", format.as_str()),
                    ),
                    Some(p) => {
                        v.absolute(at("path"), p);
                        if let Err(e) = globset::Glob::new(p) {
                            v.err(at("path"), format!("bad glob \"{p}\": {}", e.kind()));
                        }
                    }
                }
                if l.command.is_some() {
                    v.err(
                        at("command"),
                        "command is only used with format = \"command\"",
                    );
                }
            }
        }
        if format != LogFormat::Journald
            && (!l.units.is_empty() || !l.identifiers.is_empty() || l.journal_dir.is_some())
        {
            v.err(
                path!["logs", i],
                "units, identifiers and journal_dir are only used with format = \"journald\"",
            );
        }
        let start = match v.choice(at("start"), &l.start, &["end", "beginning"], "end") {
            "beginning" => StartAt::Beginning,
            _ => StartAt::End,
        };
        let interval = v.duration(at("interval"), &l.interval, Duration::from_secs(60));
        if format == LogFormat::Command && interval.is_zero() {
            v.err(at("interval"), "interval must be at least one second");
        }
        let max_line = v.size(at("max_line"), &l.max_line, DEFAULT_MAX_LINE as u64);
        if !(256..=(16 << 20)).contains(&max_line) {
            v.err(
                at("max_line"),
                "max_line must be between 256 bytes and 16MiB",
            );
        }
        let partial_line_wait = v.duration(
            at("partial_line_wait"),
            &l.partial_line_wait,
            Duration::from_secs(5),
        );
        if partial_line_wait > Duration::from_secs(3600) {
            v.err(
                at("partial_line_wait"),
                "partial_line_wait must be at most 1h",
            );
        }
        let journal_dir = l
            .journal_dir
            .as_ref()
            .map(|d| v.absolute(at("journal_dir"), d));
        logs.push(LogConfig {
            path: l.path.clone(),
            format,
            command: l.command.clone().unwrap_or_default(),
            interval,
            alias: l.alias.clone(),
            start,
            units: l.units.clone(),
            identifiers: l.identifiers.clone(),
            journal_dir,
            max_line: max_line.clamp(256, 16 << 20) as usize,
            partial_line_wait: partial_line_wait.min(Duration::from_secs(3600)),
        });
    }

    // [rules]
    let r = &raw.rules;
    let list = |v: &V, l: &Option<Vec<String>>, d: &str| -> Vec<PathBuf> {
        match l {
            Some(l) => l.iter().map(|x| v.resolved(x)).collect(),
            None => vec![v.resolved(d)],
        }
    };
    let count = |v: &mut V, key: &str, n: Option<i64>, default: usize| -> usize {
        const MAX: i64 = 1 << 24;
        match n {
            None => default,
            Some(n) if (0..=MAX).contains(&n) => n as usize,
            Some(n) => {
                v.err(
                    path!["rules", key],
                    format!("{key} {n} is out of range: 0 to {MAX}"),
                );
                default
            }
        }
    };
    let correlation_max_events = count(
        &mut v,
        "correlation_max_events",
        r.correlation_max_events,
        8192,
    );
    let correlation_max_keys = count(
        &mut v,
        "correlation_max_keys",
        r.correlation_max_keys,
        65536,
    );
    let log_bytes = v.size(
        path!["rules", "correlation_max_log_bytes"],
        &r.correlation_max_log_bytes,
        2048,
    );
    if !(64..=(1 << 20)).contains(&log_bytes) {
        v.err(
            path!["rules", "correlation_max_log_bytes"],
            "correlation_max_log_bytes must be between 64 bytes and 1MiB",
        );
    }
    let rules = RulesConfig {
        correlation_max_events,
        correlation_max_keys,
        correlation_max_log_bytes: log_bytes.clamp(64, 1 << 20) as usize,
        decoders: list(&v, &r.decoders, "/usr/share/hids/decoders"),
        rules: list(&v, &r.rules, "/usr/share/hids/rules"),
        lists: r.lists.iter().map(|x| v.resolved(x)).collect(),
        local_decoders: r.local_decoders.iter().map(|x| v.resolved(x)).collect(),
        local_rules: r.local_rules.iter().map(|x| v.resolved(x)).collect(),
    };

    // [alerts]
    let al = &raw.alerts;
    let log_level = v.level(path!["alerts", "log_level"], al.log_level, 1);
    let file_out = |v: &mut V, key: &str, raw: &Option<RawAlertFile>, default_name: &str| {
        let d = RawAlertFile::default();
        let rf = raw.as_ref().unwrap_or(&d);
        let rotate = match v.choice(
            path!["alerts", key, "rotate"],
            &rf.rotate,
            &["daily", "size", "never"],
            "daily",
        ) {
            "size" => Rotate::Size,
            "never" => Rotate::Never,
            _ => Rotate::Daily,
        };
        AlertFileConfig {
            enabled: rf.enabled.unwrap_or(true),
            path: match &rf.path {
                Some(p) => v.absolute(path!["alerts", key, "path"], p),
                None => state_dir.join(default_name),
            },
            rotate,
            max_size: v.size(path!["alerts", key, "max_size"], &rf.max_size, 100 << 20),
            keep: rf.keep.unwrap_or(30),
        }
    };
    let file = file_out(&mut v, "file", &al.file, "alerts.log");
    let json = file_out(&mut v, "json", &al.json, "alerts.json");
    let mut syslog = Vec::new();
    for (i, s) in al.syslog.iter().enumerate() {
        let at = |k: &str| path!["alerts", "syslog", i, k];
        let protocol = match v.choice(at("protocol"), &s.protocol, &["udp", "tcp", "tls"], "tcp") {
            "udp" => SyslogProtocol::Udp,
            "tls" => SyslogProtocol::Tls,
            _ => SyslogProtocol::Tcp,
        };
        let format = match v.choice(
            at("format"),
            &s.format,
            &["rfc3164", "rfc5424", "json", "cef"],
            "rfc5424",
        ) {
            "rfc3164" => SyslogFormat::Rfc3164,
            "json" => SyslogFormat::Json,
            "cef" => SyslogFormat::Cef,
            _ => SyslogFormat::Rfc5424,
        };
        let default_port = if protocol == SyslogProtocol::Tls {
            6514
        } else {
            514
        };
        let port = v.port(at("port"), s.port, default_port);
        let target = match (&s.server, &s.socket) {
            (Some(_), Some(_)) => {
                v.err(at("socket"), "give either server or socket, not both");
                SyslogTarget::Socket(PathBuf::from("/dev/log"))
            }
            (Some(h), None) => {
                if h.trim().is_empty()
                    || h.chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
                {
                    v.err(
                        at("server"),
                        format!("\"{h}\" is not a host name or address"),
                    );
                }
                SyslogTarget::Server {
                    host: h.clone(),
                    port,
                    protocol,
                }
            }
            (None, Some(sock)) => {
                if s.protocol.is_some() || s.port.is_some() {
                    v.err(
                        at("socket"),
                        "protocol and port do not apply to a local socket",
                    );
                }
                SyslogTarget::Socket(v.absolute(at("socket"), sock))
            }
            (None, None) => {
                v.err(
                    path!["alerts", "syslog", i],
                    "give server = \"host\" or socket = \"/dev/log\"",
                );
                SyslogTarget::Socket(PathBuf::from("/dev/log"))
            }
        };
        let facility = match &s.facility {
            None => 16,
            Some(name) => facility_number(name).unwrap_or_else(|| {
                v.err(at("facility"), format!("unknown facility \"{name}\" (kern, user, daemon, auth, authpriv, local0 to local7, ...)"));
                16
            }),
        };
        let ca_file = s.ca_file.as_ref().map(|c| v.resolved(c));
        if ca_file.is_some() && protocol != SyslogProtocol::Tls {
            v.err(
                at("ca_file"),
                "ca_file is only used with protocol = \"tls\"",
            );
        }
        syslog.push(SyslogConfig {
            target,
            format,
            min_level: v.level(at("min_level"), s.min_level, 1),
            groups: s.groups.clone(),
            facility,
            ca_file,
        });
    }
    let email = match &al.email {
        Some(e) if e.enabled.unwrap_or(true) => {
            let at = |k: &str| path!["alerts", "email", k];
            let tls = match v.choice(at("tls"), &e.tls, &["none", "starttls", "tls"], "starttls") {
                "none" => SmtpTls::None,
                "tls" => SmtpTls::Tls,
                _ => SmtpTls::StartTls,
            };
            let default_port = match tls {
                SmtpTls::None => 25,
                SmtpTls::StartTls => 587,
                SmtpTls::Tls => 465,
            };
            let smtp_host = match &e.smtp_host {
                Some(h) => h.clone(),
                None => {
                    v.err(
                        path!["alerts", "email"],
                        "missing field \"smtp_host\" in [alerts.email]",
                    );
                    String::new()
                }
            };
            let from = e
                .from
                .clone()
                .unwrap_or_else(|| format!("hids@{}", agent.hostname));
            if !valid_email(&from) {
                v.err(at("from"), format!("\"{from}\" is not an email address"));
            }
            if e.to.is_empty() {
                v.err(
                    path!["alerts", "email"],
                    "missing field \"to\" in [alerts.email] (a list of addresses)",
                );
            }
            for (j, t) in e.to.iter().enumerate() {
                if !valid_email(t) {
                    v.err(
                        path!["alerts", "email", "to", j],
                        format!("\"{t}\" is not an email address"),
                    );
                }
            }
            if e.user.is_some() != e.password_file.is_some() {
                v.err(
                    path!["alerts", "email"],
                    "user and password_file go together",
                );
            }
            let mut routes = Vec::new();
            for (j, r) in e.route.iter().enumerate() {
                if r.to.is_empty() {
                    v.err(
                        path!["alerts", "email", "route", j],
                        "a route needs to = [addresses]",
                    );
                }
                for (k, t) in r.to.iter().enumerate() {
                    if !valid_email(t) {
                        v.err(
                            path!["alerts", "email", "route", j, "to", k],
                            format!("\"{t}\" is not an email address"),
                        );
                    }
                }
                if r.groups.is_empty() && r.rules.is_empty() && r.min_level.is_none() {
                    v.err(
                        path!["alerts", "email", "route", j],
                        "a route needs groups, rules or min_level",
                    );
                }
                routes.push(EmailRoute {
                    groups: r.groups.clone(),
                    rules: r.rules.clone(),
                    min_level: r.min_level.map(|l| {
                        v.level(
                            path!["alerts", "email", "route", j, "min_level"],
                            Some(l),
                            0,
                        )
                    }),
                    to: r.to.clone(),
                });
            }
            let ca_file = e.ca_file.as_ref().map(|c| v.resolved(c));
            if ca_file.is_some() && tls == SmtpTls::None {
                v.err(
                    at("ca_file"),
                    "ca_file is only used with tls = \"starttls\" or \"tls\"",
                );
            }
            Some(EmailConfig {
                smtp_host,
                smtp_port: v.port(at("smtp_port"), e.smtp_port, default_port),
                tls,
                ca_file,
                user: e.user.clone(),
                password_file: e.password_file.as_ref().map(|p| v.resolved(p)),
                from,
                to: e.to.clone(),
                min_level: v.level(at("min_level"), e.min_level, 7),
                max_per_hour: e.max_per_hour.unwrap_or(12),
                routes,
            })
        }
        _ => None,
    };
    let alerts = AlertsConfig {
        log_level,
        file,
        json,
        syslog,
        email,
        spool_max: v.size(path!["alerts", "spool_max"], &al.spool_max, 256 << 20),
    };

    // [active_response]
    let ar = &raw.active_response;
    let mut allowlist = Vec::new();
    for (i, a) in ar.allowlist.iter().enumerate() {
        match Cidr::parse(a) {
            Some(c) => allowlist.push(c),
            None => v.err(
                path!["active_response", "allowlist", i],
                format!("\"{a}\" is not an address or CIDR (\"10.0.0.0/8\")"),
            ),
        }
    }
    let mut responses = Vec::new();
    for (i, r) in ar.response.iter().enumerate() {
        let at = |k: &str| path!["active_response", "response", i, k];
        let command = match &r.command {
            Some(c) if !c.is_empty() && !c[0].is_empty() => {
                if c.len() == 1
                    && !c[0].starts_with('/')
                    && !["nftables", "iptables", "ufw", "hosts-deny"].contains(&c[0].as_str())
                {
                    v.err(at("command"), format!("\"{}\" is neither a built-in (nftables, iptables, ufw, hosts-deny) nor an absolute program path", c[0]));
                } else if c.len() > 1 && !c[0].starts_with('/') {
                    v.err(
                        at("command"),
                        format!("program \"{}\" must be an absolute path", c[0]),
                    );
                }
                for (j, a) in c.iter().enumerate().skip(1) {
                    if a.starts_with('{')
                        && a.ends_with('}')
                        && !["{action}", "{srcip}", "{user}", "{rule}"].contains(&a.as_str())
                    {
                        v.err(
                            path!["active_response", "response", i, "command", j],
                            format!("unknown placeholder \"{a}\" (known: {{action}}, {{srcip}}, {{user}}, {{rule}})"),
                        );
                    }
                }
                c.clone()
            }
            _ => {
                v.err(
                    path!["active_response", "response", i],
                    "missing command (a built-in name or [\"/path/program\", \"arg\", ...])",
                );
                Vec::new()
            }
        };
        if r.rules.is_empty() && r.groups.is_empty() && r.min_level.is_none() {
            v.err(
                path!["active_response", "response", i],
                "a response needs rules, groups or min_level",
            );
        }
        let timeout = v.duration(at("timeout"), &r.timeout, Duration::from_secs(600));
        let hosts_deny_path = r.hosts_deny_path.as_ref().map(|p| {
            if command.len() != 1 || command[0] != "hosts-deny" {
                v.err(
                    at("hosts_deny_path"),
                    "hosts_deny_path applies only to command = [\"hosts-deny\"]",
                );
            }
            v.absolute(at("hosts_deny_path"), p)
        });
        responses.push(ResponseConfig {
            command,
            rules: r.rules.clone(),
            groups: r.groups.clone(),
            min_level: r.min_level.map(|l| v.level(at("min_level"), Some(l), 0)),
            timeout: Some(timeout).filter(|t| !t.is_zero()),
            hosts_deny_path,
        });
    }
    let active_response = ActiveResponseConfig {
        enabled: ar.enabled.unwrap_or(false),
        allowlist,
        max_per_minute: ar.max_per_minute.unwrap_or(30),
        responses,
    };

    let config = Config {
        source: source.to_path_buf(),
        agent,
        fim,
        logs,
        rules,
        alerts,
        active_response,
    };
    (config, v.errors)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43200)));
        assert_eq!(parse_duration("2h30m"), Some(Duration::from_secs(9000)));
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1 GB"), Some(1_000_000_000));
        assert_eq!(parse_size("10M"), Some(10_000_000));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.2.3.4".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
    }
}
