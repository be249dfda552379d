//! `hids logtest`: run log lines through the analysis as OSSEC's `ossec-logtest` does and show each
//! phase: pre-decoding, decoding, and the rule (phase 3, supplied by a [`RuleStage`]).
//!
//! Output is text (OSSEC's layout, control characters escaped), one JSON object per line
//! (`--json`), or only a summary (`-q`). Lines are read with a length cap and invalid UTF-8 is
//! replaced, so any input file can be fed through it.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::decode::{predecode, DecodeCache, DecoderSet};
use crate::diag::escape_control;
use crate::event::{Decoded, Event, LineFlags, LogFormat, Predecoded, RuleInfo};

/// Lines longer than this are cut (and marked as truncated).
pub const MAX_LINE: usize = 64 * 1024;

/// Phase 3: what the rule engine does with a decoded event. `logtest` keeps one stage for the
/// whole run, so correlation state carries across lines as in `ossec-logtest`.
pub trait RuleStage {
    /// The rule that fires for this event (its level may be 0), or `None`.
    fn evaluate(&mut self, event: &Event, pre: &Predecoded, decoded: &Decoded) -> Option<RuleInfo>;
}

/// How to present the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// OSSEC's layout.
    Text,
    /// One JSON object per line.
    Json,
    /// A summary at the end only.
    Quiet,
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: OutputMode,
    pub format: LogFormat,
    pub location: String,
    /// The host name shown when a line has none (OSSEC shows its own).
    pub hostname: String,
}

/// What a run saw.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub lines: u64,
    pub decoded: u64,
    pub truncated: u64,
    pub invalid_utf8: u64,
    /// Lines per reported decoder name.
    pub decoders: BTreeMap<String, u64>,
    /// Alerts per (rule id, level).
    pub alerts: BTreeMap<(u32, u8), u64>,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    full_log: &'a str,
    location: &'a str,
    predecoder: JsonPre<'a>,
    decoder: Option<JsonDecoder<'a>>,
    data: BTreeMap<&'a str, &'a str>,
    rule: Option<&'a RuleInfo>,
}

#[derive(Serialize)]
struct JsonPre<'a> {
    timestamp: Option<&'a str>,
    hostname: Option<&'a str>,
    program_name: Option<&'a str>,
    pid: Option<&'a str>,
    log: &'a str,
}

#[derive(Serialize)]
struct JsonDecoder<'a> {
    name: &'a str,
    parent: Option<&'a str>,
    #[serde(rename = "type")]
    decoder_type: Option<&'a str>,
}

/// Reads lines from `input` until its end and writes what each phase found to `out`.
pub fn run(
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    decoders: &DecoderSet,
    mut rules: Option<&mut dyn RuleStage>,
    opts: &Options,
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    let mut cache = DecodeCache::default();
    let host: Arc<str> = Arc::from(opts.hostname.as_str());
    let location: Arc<str> = Arc::from(opts.location.as_str());
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let (n, truncated) = read_line_capped(input, &mut buf, MAX_LINE)?;
        if n == 0 {
            break;
        }
        while matches!(buf.last(), Some(b'\n') | Some(b'\r')) {
            buf.pop();
        }
        if buf.is_empty() {
            continue;
        }
        let (text, lossy) = match String::from_utf8(std::mem::take(&mut buf)) {
            Ok(s) => (s, false),
            Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
        };
        summary.lines += 1;
        summary.truncated += u64::from(truncated);
        summary.invalid_utf8 += u64::from(lossy);
        let event = Event {
            time: SystemTime::now(),
            host: host.clone(),
            location: location.clone(),
            format: opts.format,
            full_log: text,
            flags: LineFlags {
                truncated,
                lossy_utf8: lossy,
            },
            fim: None,
        };
        let pre = predecode(&event.full_log, opts.format);
        let decoded = decoders.decode(&pre, &mut cache);
        if let Some(d) = &decoded.decoder {
            summary.decoded += 1;
            *summary.decoders.entry(d.to_string()).or_default() += 1;
        }
        let rule = rules
            .as_deref_mut()
            .and_then(|r| r.evaluate(&event, &pre, &decoded));
        if let Some(r) = &rule {
            *summary.alerts.entry((r.id, r.level)).or_default() += 1;
        }
        match opts.mode {
            OutputMode::Quiet => {}
            OutputMode::Json => write_json(out, &event, &pre, &decoded, rule.as_ref())?,
            OutputMode::Text => write_text(
                out,
                &event,
                &pre,
                &decoded,
                rule.as_ref(),
                rules.is_some(),
                opts,
            )?,
        }
    }
    if opts.mode == OutputMode::Quiet {
        write_summary(out, &summary)?;
    }
    out.flush()?;
    Ok(summary)
}

/// Reads one line of at most `max` bytes into `buf`; the rest of a longer line is skipped.
/// Returns the bytes consumed (0 at the end) and whether the line was cut.
fn read_line_capped(
    input: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut truncated = false;
    loop {
        let avail = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok((consumed, truncated));
        }
        let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..=i], true),
            None => (avail, false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            truncated = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        input.consume(n);
        consumed += n;
        if done {
            return Ok((consumed, truncated));
        }
    }
}

fn q(s: &str) -> String {
    escape_control(s)
}

fn write_text(
    out: &mut dyn Write,
    event: &Event,
    pre: &Predecoded,
    decoded: &Decoded,
    rule: Option<&RuleInfo>,
    have_rules: bool,
    opts: &Options,
) -> io::Result<()> {
    writeln!(out, "**Phase 1: Completed pre-decoding.")?;
    writeln!(out, "       full event: '{}'", q(&event.full_log))?;
    if let Some(t) = &pre.timestamp {
        writeln!(out, "       timestamp: '{}'", q(t))?;
    }
    writeln!(
        out,
        "       hostname: '{}'",
        q(pre.hostname.as_deref().unwrap_or(&opts.hostname))
    )?;
    match &pre.program_name {
        Some(p) => writeln!(out, "       program_name: '{}'", q(p))?,
        None => writeln!(out, "       program_name: '(null)'")?,
    }
    writeln!(out, "       log: '{}'", q(&pre.message))?;
    writeln!(out)?;
    writeln!(out, "**Phase 2: Completed decoding.")?;
    match &decoded.decoder {
        None => writeln!(out, "       No decoder matched.")?,
        Some(name) => {
            writeln!(out, "       decoder: '{}'", q(name))?;
            if let Some(p) = &decoded.parent {
                if p != name {
                    writeln!(out, "       parent: '{}'", q(p))?;
                }
            }
            for (k, v) in &decoded.fields {
                writeln!(out, "       {}: '{}'", q(k), q(v))?;
            }
        }
    }
    writeln!(out)?;
    if have_rules {
        match rule {
            Some(r) => {
                writeln!(out, "**Phase 3: Completed filtering (rules).")?;
                writeln!(out, "       Rule id: '{}'", r.id)?;
                writeln!(out, "       Level: '{}'", r.level)?;
                writeln!(out, "       Description: '{}'", q(&r.description))?;
                if !r.groups.is_empty() {
                    writeln!(out, "       Groups: '{}'", q(&r.groups.join(",")))?;
                }
                if r.firedtimes > 1 {
                    writeln!(out, "       Fired times: '{}'", r.firedtimes)?;
                }
                if r.level > 0 {
                    writeln!(out, "**Alert to be generated.")?;
                }
            }
            None => writeln!(out, "**Phase 3: No rule matched.")?,
        }
        writeln!(out)?;
    }
    Ok(())
}

fn write_json(
    out: &mut dyn Write,
    event: &Event,
    pre: &Predecoded,
    decoded: &Decoded,
    rule: Option<&RuleInfo>,
) -> io::Result<()> {
    let line = JsonLine {
        full_log: &event.full_log,
        location: &event.location,
        predecoder: JsonPre {
            timestamp: pre.timestamp.as_deref(),
            hostname: pre.hostname.as_deref(),
            program_name: pre.program_name.as_deref(),
            pid: pre.pid.as_deref(),
            log: &pre.message,
        },
        decoder: decoded.decoder.as_deref().map(|name| JsonDecoder {
            name,
            parent: decoded.parent.as_deref(),
            decoder_type: decoded.decoder_type,
        }),
        data: decoded
            .fields
            .iter()
            .map(|(k, v)| (&**k, v.as_str()))
            .collect(),
        rule,
    };
    serde_json::to_writer(&mut *out, &line).map_err(io::Error::other)?;
    writeln!(out)
}

fn write_summary(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    writeln!(out, "lines read: {}", s.lines)?;
    writeln!(out, "lines decoded: {}", s.decoded)?;
    if s.truncated > 0 {
        writeln!(out, "lines truncated: {}", s.truncated)?;
    }
    if s.invalid_utf8 > 0 {
        writeln!(out, "lines with invalid UTF-8: {}", s.invalid_utf8)?;
    }
    let mut by_count: Vec<_> = s.decoders.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (name, n) in by_count {
        writeln!(out, "  decoder {}: {n}", q(name))?;
    }
    let total: u64 = s.alerts.values().sum();
    writeln!(out, "alerts: {total}")?;
    for ((id, level), n) in &s.alerts {
        writeln!(out, "  rule {id} (level {level}): {n}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn opts(mode: OutputMode) -> Options {
        Options {
            mode,
            format: LogFormat::Syslog,
            location: "stdin".into(),
            hostname: "testhost".into(),
        }
    }

    fn set() -> DecoderSet {
        DecoderSet::parse(
            Path::new("t.xml"),
            r#"<decoder name="sshd"><program_name>^sshd</program_name></decoder>
<decoder name="sshd-ok"><parent>sshd</parent><prematch>^Accepted </prematch><regex offset="after_prematch">^\S+ for (\S+) from (\S+)</regex><order>user,srcip</order></decoder>"#,
        )
        .unwrap()
    }

    struct Fixed;
    impl RuleStage for Fixed {
        fn evaluate(&mut self, _: &Event, _: &Predecoded, d: &Decoded) -> Option<RuleInfo> {
            d.decoder.as_ref()?;
            Some(RuleInfo {
                id: 5715,
                level: 3,
                description: "ok".into(),
                groups: vec!["sshd".into()].into(),
                mitre: Vec::new().into(),
                firedtimes: 1,
                options: Default::default(),
                info: Vec::new().into(),
            })
        }
    }

    #[test]
    fn json_has_every_phase_and_escapes_nothing_unsafe() {
        let mut input: &[u8] =
            b"Nov 21 10:00:00 h sshd[1]: Accepted password for root from 1.2.3.4\n\nnothing \x1b[31m here\n";
        let mut out = Vec::new();
        let s = run(&mut input, &mut out, &set(), None, &opts(OutputMode::Json)).unwrap();
        assert_eq!(s.lines, 2);
        assert_eq!(s.decoded, 1);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["decoder"]["name"], "sshd");
        assert_eq!(lines[0]["predecoder"]["program_name"], "sshd");
        assert_eq!(lines[0]["data"]["dstuser"], "root");
        assert_eq!(lines[0]["rule"], serde_json::Value::Null);
        assert_eq!(lines[1]["decoder"], serde_json::Value::Null);
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn text_output_escapes_control_characters_and_shows_phase_3_when_rules_exist() {
        let mut input: &[u8] = b"Nov 21 10:00:00 h sshd[1]: Accepted x for r\x1b from 1.2.3.4\n";
        let mut out = Vec::new();
        let mut rules = Fixed;
        run(
            &mut input,
            &mut out,
            &set(),
            Some(&mut rules),
            &opts(OutputMode::Text),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("dstuser: 'r\\u{1b}'"), "{text}");
        assert!(text.contains("Rule id: '5715'"), "{text}");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn quiet_prints_a_summary_and_long_lines_are_cut() {
        let mut data = b"Nov 21 10:00:00 h sshd[1]: Accepted x for root from 1.2.3.4\n".to_vec();
        data.extend(vec![b'a'; MAX_LINE + 10]);
        data.extend(b"\n\xff\xfe\n");
        let mut input: &[u8] = &data;
        let mut out = Vec::new();
        let mut rules = Fixed;
        let s = run(
            &mut input,
            &mut out,
            &set(),
            Some(&mut rules),
            &opts(OutputMode::Quiet),
        )
        .unwrap();
        assert_eq!(
            (s.lines, s.decoded, s.truncated, s.invalid_utf8),
            (3, 1, 1, 1)
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("lines read: 3"), "{text}");
        assert!(text.contains("rule 5715 (level 3): 1"), "{text}");
    }
}

/// The `hids logtest` command as given on the command line.
#[derive(Debug, Clone)]
pub struct Command {
    pub config: std::path::PathBuf,
    pub file: Option<std::path::PathBuf>,
    pub json: bool,
    pub quiet: bool,
    pub log_format: String,
    pub location: String,
    /// Replace the configured decoders (in this order) when not empty.
    pub decoders: Vec<std::path::PathBuf>,
    /// Replace the configured rules when not empty.
    pub rules: Vec<std::path::PathBuf>,
}

/// Why `hids logtest` could not run.
#[derive(Debug, thiserror::Error)]
pub enum LogtestError {
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{} error(s) in the decoders:\n{}", .0.len(), .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    /// The decoders did not load; every problem, located.
    Decoders(Vec<crate::diag::Diagnostic>),
    #[error("unknown log format '{0}' (one of {names})", names = LogFormat::NAMES.join(", "))]
    /// `--log-format` names no format.
    Format(String),
    #[error("cannot read {}: {source}", path.display())]
    /// `-f FILE` could not be opened.
    Input {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Runs `hids logtest`: loads the decoders (those given, else the configured ones), reads the
/// lines and prints. `rules` is phase 3 when a rule engine is available.
pub fn run_command(
    cmd: &Command,
    rules: Option<&mut dyn RuleStage>,
) -> Result<Summary, LogtestError> {
    let format = LogFormat::parse(&cmd.log_format)
        .ok_or_else(|| LogtestError::Format(cmd.log_format.clone()))?;
    // The configuration is needed only for what the command line does not replace.
    let (decoder_paths, hostname) = if cmd.decoders.is_empty() {
        let cfg = crate::config::load(&cmd.config)?;
        let mut paths = cfg.rules.decoders.clone();
        paths.extend(cfg.rules.local_decoders.iter().cloned());
        (paths, cfg.agent.hostname)
    } else {
        let host = crate::config::load(&cmd.config)
            .map(|c| c.agent.hostname)
            .unwrap_or_else(|_| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "localhost".into())
            });
        (cmd.decoders.clone(), host)
    };
    let set = DecoderSet::load(&decoder_paths).map_err(LogtestError::Decoders)?;
    let opts = Options {
        mode: if cmd.quiet {
            OutputMode::Quiet
        } else if cmd.json {
            OutputMode::Json
        } else {
            OutputMode::Text
        },
        format,
        location: cmd.location.clone(),
        hostname,
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match &cmd.file {
        Some(path) => {
            let f = std::fs::File::open(path).map_err(|source| LogtestError::Input {
                path: path.clone(),
                source,
            })?;
            let mut r = io::BufReader::new(f);
            Ok(run(&mut r, &mut out, &set, rules, &opts)?)
        }
        None => {
            let stdin = io::stdin();
            let mut r = stdin.lock();
            Ok(run(&mut r, &mut out, &set, rules, &opts)?)
        }
    }
}
