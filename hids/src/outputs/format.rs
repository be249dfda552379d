//! Every rendering of an alert, and the escaping that goes with each: the OSSEC-style text of
//! `alerts.log`, JSON lines, syslog frames (RFC 3164, RFC 5424 with structured data, JSON, CEF) and
//! mail subjects and bodies.
//!
//! The rule for all of them: text that came from a log or a file (descriptions expand log fields
//! too) never carries a line break or another control character into the output. Text outputs show
//! them escaped (`\n`, `\r`, `\t`, `\u{1b}`), the same way `hids` shows them on a terminal; JSON is
//! produced by serde and additionally escapes DEL, C1 controls, line separators and bidirectional
//! overrides; CEF and RFC 5424 structured data add their own escapes on top.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset};

use super::record::AlertRecord;
use crate::config::SyslogFormat;

/// Whether a character must not reach an output as is: C0 and C1 controls, DEL, the Unicode line
/// and paragraph separators, and bidirectional overrides (which make a terminal show text in an
/// order other than the bytes').
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// Text with every control character escaped: the result is one line, safe for a terminal, a
/// mail header or a syslog frame.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Multi-line text (a diff) as lines, each escaped. A line that could pass for the start of an
/// `alerts.log` entry is indented.
pub fn escaped_lines(s: &str) -> Vec<String> {
    s.trim_end_matches('\n')
        .split('\n')
        .map(|l| {
            let l = escape_text(l);
            if l.starts_with("** Alert") {
                format!(" {l}")
            } else {
                l.into_owned()
            }
        })
        .collect()
}

/// The alert as one JSON line (no trailing newline): valid JSON whatever the fields hold.
pub fn json_line(rec: &AlertRecord) -> String {
    let s = serde_json::to_string(rec).unwrap_or_else(|e| {
        // Serializing plain strings and numbers cannot fail; keep a valid line if it ever does.
        format!("{{\"error\":{}}}", serde_json::Value::String(e.to_string()))
    });
    json_harden(s)
}

/// Escapes in JSON text the characters serde leaves raw that a terminal or a line-oriented reader
/// could act on. They can only occur inside strings, where `\uXXXX` is valid.
pub fn json_harden(s: String) -> String {
    if !s.chars().any(needs_escape) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if needs_escape(c) {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                let _ = write!(out, "\\u{:04x}", u);
            }
        } else {
            out.push(c);
        }
    }
    out
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn month(t: &DateTime<FixedOffset>) -> &'static str {
    use chrono::Datelike;
    MONTHS[(t.month0() as usize).min(11)]
}

/// OSSEC's label for a static field in `alerts.log` and mails.
fn field_label(name: &str) -> Cow<'_, str> {
    Cow::Borrowed(match name {
        "srcip" => "Src IP",
        "srcport" => "Src Port",
        "dstip" => "Dst IP",
        "dstport" => "Dst Port",
        "user" | "dstuser" => "User",
        "srcuser" => "Src User",
        _ => return escape_text(name),
    })
}

fn json_value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => escape_text(s).into_owned(),
        other => escape_text(&other.to_string()).into_owned(),
    }
}

/// The lines describing a file integrity change (attributes, then the diff), escaped.
fn fim_lines(rec: &AlertRecord) -> Vec<String> {
    let Some(f) = &rec.fim else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let (b, a) = (f.before.as_ref(), f.after.as_ref());
    if f.tampered {
        out.push("Baseline entry failed its integrity check".to_string());
    }
    match f.event.as_str() {
        "modified" => {
            out.push(format!(
                "Attributes changed: {}",
                escape_text(&f.changed_attributes.join(", "))
            ));
            for name in &f.changed_attributes {
                let get = |side: Option<&serde_json::Value>| {
                    side.and_then(|s| s.get(name.as_str()))
                        .map(json_value_text)
                        .unwrap_or_else(|| "-".into())
                };
                out.push(format!(
                    "{}: '{}' -> '{}'",
                    escape_text(name),
                    get(b),
                    get(a)
                ));
            }
        }
        _ => {
            if let Some(serde_json::Value::Object(m)) = a.or(b) {
                let attrs: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{}={}", escape_text(k), json_value_text(v)))
                    .collect();
                out.push(format!("Attributes: {}", attrs.join(", ")));
            }
        }
    }
    if let Some(d) = &f.diff {
        out.push("What changed:".to_string());
        out.extend(escaped_lines(d));
    }
    out
}

/// One entry of `alerts.log` in OSSEC's layout, ending with an empty line.
pub fn alerts_log_entry(rec: &AlertRecord) -> String {
    let t = rec.time();
    let mut s = String::with_capacity(512);
    let mail = if rec.rule.options.alert_by_email {
        " mail "
    } else {
        ""
    };
    let mut groups = String::new();
    for g in &rec.rule.groups {
        groups.push_str(&escape_text(g));
        groups.push(',');
    }
    let _ = writeln!(s, "** Alert {}:{mail} - {groups}", escape_text(&rec.id));
    let _ = writeln!(
        s,
        "{} {} {} {}->{}",
        t.format("%Y"),
        month(&t),
        t.format("%d %H:%M:%S"),
        escape_text(&rec.agent.name),
        escape_text(&rec.location)
    );
    let _ = writeln!(
        s,
        "Rule: {} (level {}) -> '{}'",
        rec.rule.id,
        rec.rule.level,
        escape_text(&rec.rule.description)
    );
    for (k, vs) in rec.data.grouped() {
        for v in vs {
            let _ = writeln!(s, "{}: {}", field_label(k), escape_text(v));
        }
    }
    if let Some(l) = &rec.full_log {
        let _ = writeln!(s, "{}", escape_text(l));
    }
    for p in &rec.previous_output {
        let _ = writeln!(s, "{}", escape_text(p));
    }
    for l in fim_lines(rec) {
        let _ = writeln!(s, "{l}");
    }
    s.push('\n');
    s
}

/// The syslog severity for an alert level: 12+ critical, 10+ error, 7+ warning, 4+ notice, else
/// informational.
pub fn severity(level: u8) -> u8 {
    match level {
        12.. => 2,
        10..=11 => 3,
        7..=9 => 4,
        4..=6 => 5,
        _ => 6,
    }
}

/// A token for a syslog header field: printable US-ASCII without spaces, at most `max` bytes, `-`
/// (the RFC 5424 nil value) when nothing is left.
pub fn header_token(s: &str, max: usize) -> String {
    let t: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if t.is_empty() {
        "-".to_string()
    } else {
        t
    }
}

/// An RFC 5424 SD-NAME: printable US-ASCII except `=`, space, `]` and `"`, 1 to 32 bytes.
fn sd_name(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"') {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

/// An RFC 5424 PARAM-VALUE: control characters escaped, then `"`, `\` and `]` backslash-escaped.
fn sd_value(s: &str) -> String {
    let e = escape_text(s);
    let mut out = String::with_capacity(e.len());
    for c in e.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The human-readable alert text carried in syslog messages (OSSEC csyslogd's layout).
pub fn syslog_text(rec: &AlertRecord) -> String {
    let mut s = format!(
        "Alert Level: {}; Rule: {} - {}; Location: {}->{}",
        rec.rule.level,
        rec.rule.id,
        escape_text(&rec.rule.description),
        escape_text(&rec.agent.name),
        escape_text(&rec.location)
    );
    for (k, v) in &rec.data.0 {
        let _ = write!(s, "; {}: {}", escape_text(k), escape_text(v));
    }
    if let Some(f) = &rec.fim {
        let _ = write!(s, "; path: {}", escape_text(&f.path));
        if !f.changed_attributes.is_empty() {
            let _ = write!(
                s,
                "; changed: {}",
                escape_text(&f.changed_attributes.join(","))
            );
        }
    }
    if let Some(l) = &rec.full_log {
        let _ = write!(s, "; {}", escape_text(l));
    }
    s
}

/// The enterprise number in RFC 5424 SD-IDs: 32473 is the one RFC 5612 reserves for examples and
/// documentation, used until the project has its own.
pub const SD_ENTERPRISE: u32 = 32473;

fn sd_elements(rec: &AlertRecord) -> String {
    let mut s = format!(
        "[alert@{SD_ENTERPRISE} rule=\"{}\" level=\"{}\" groups=\"{}\" location=\"{}\" firedtimes=\"{}\"",
        rec.rule.id,
        rec.rule.level,
        sd_value(&rec.rule.groups.join(",")),
        sd_value(&rec.location),
        rec.rule.firedtimes
    );
    if !rec.id.is_empty() {
        let _ = write!(s, " id=\"{}\"", sd_value(&rec.id));
    }
    if !rec.rule.mitre.is_empty() {
        let _ = write!(s, " mitre=\"{}\"", sd_value(&rec.rule.mitre.join(",")));
    }
    s.push(']');
    if !rec.data.is_empty() {
        let _ = write!(s, "[data@{SD_ENTERPRISE}");
        for (k, v) in &rec.data.0 {
            let _ = write!(s, " {}=\"{}\"", sd_name(k), sd_value(v));
        }
        s.push(']');
    }
    if let Some(f) = &rec.fim {
        let _ = write!(
            s,
            "[fim@{SD_ENTERPRISE} path=\"{}\" event=\"{}\" changed=\"{}\"]",
            sd_value(&f.path),
            sd_value(&f.event),
            sd_value(&f.changed_attributes.join(","))
        );
    }
    s
}

/// What a syslog frame is rendered for.
#[derive(Debug, Clone)]
pub struct FrameContext<'a> {
    pub format: SyslogFormat,
    pub facility: u8,
    /// The sending host's name for the header.
    pub hostname: &'a str,
    /// For a local socket: RFC 3164 without the host name, as syslog(3) writes.
    pub local: bool,
    pub pid: u32,
}

fn rfc3164_header(rec: &AlertRecord, cx: &FrameContext, pri: u8) -> String {
    let t = rec.time();
    let day = t.format("%e %H:%M:%S");
    if cx.local {
        format!("<{pri}>{} {day} hids[{}]: ", month(&t), cx.pid)
    } else {
        format!(
            "<{pri}>{} {day} {} hids[{}]: ",
            month(&t),
            header_token(cx.hostname, 255),
            cx.pid
        )
    }
}

fn rfc5424_header(rec: &AlertRecord, cx: &FrameContext, pri: u8, sd: &str) -> String {
    format!(
        "<{pri}>1 {} {} hids {} alert {sd} ",
        header_token(&rec.timestamp, 64),
        header_token(cx.hostname, 255),
        cx.pid
    )
}

/// One syslog message (without transport framing).
pub fn syslog_frame(rec: &AlertRecord, cx: &FrameContext) -> String {
    let pri = cx.facility.min(23) * 8 + severity(rec.rule.level);
    match cx.format {
        SyslogFormat::Rfc3164 => rfc3164_header(rec, cx, pri) + &syslog_text(rec),
        SyslogFormat::Rfc5424 => {
            rfc5424_header(rec, cx, pri, &sd_elements(rec)) + &syslog_text(rec)
        }
        SyslogFormat::Json => rfc5424_header(rec, cx, pri, "-") + &json_line(rec),
        SyslogFormat::Cef => {
            let mut h = rfc3164_header(rec, cx, pri);
            // CEF receivers expect "host CEF:0|..." after the timestamp, without a tag.
            if let Some(i) = h.rfind(" hids[") {
                h.truncate(i + 1);
            }
            h + &cef(rec)
        }
    }
}

/// Renders a frame no longer than `max` bytes (for UDP, where a longer datagram may be cut by the
/// network or the receiver). The long texts (log, diff, fields, description) are shortened and
/// marked, so that the frame stays well-formed (JSON stays valid) instead of being cut.
pub fn syslog_frame_fitted(rec: &AlertRecord, cx: &FrameContext, max: usize) -> String {
    let frame = syslog_frame(rec, cx);
    if frame.len() <= max {
        return frame;
    }
    let mut budget = max / 2;
    loop {
        let mut r = rec.clone();
        let cut = |s: &mut String| {
            if s.len() > budget {
                let mut end = budget;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                s.push_str("...[truncated]");
            }
        };
        if let Some(l) = &mut r.full_log {
            cut(l);
        }
        if let Some(f) = &mut r.fim {
            if let Some(d) = &mut f.diff {
                cut(d);
            }
            if budget < 64 {
                f.before = None;
                f.after = None;
            }
        }
        for (_, v) in &mut r.data.0 {
            cut(v);
        }
        if budget < 64 {
            r.previous_output.clear();
            r.data.0.truncate(4);
        } else {
            for p in &mut r.previous_output {
                cut(p);
            }
        }
        cut(&mut r.rule.description);
        r.truncated = true;
        let frame = syslog_frame(&r, cx);
        if frame.len() <= max || budget <= 8 {
            if frame.len() <= max {
                return frame;
            }
            // Only a pathological host name or group list gets here: cut at a character boundary.
            let mut end = max;
            while !frame.is_char_boundary(end) {
                end -= 1;
            }
            return frame[..end].to_string();
        }
        budget /= 2;
    }
}

/// CEF header escaping: `\` and `|` are backslash-escaped; control characters are shown escaped
/// (with the backslash itself escaped, so a receiver shows `\n` rather than breaking the line).
fn cef_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            c if needs_escape(c) => {
                let mut e = String::new();
                push_escaped(&mut e, c);
                out.push_str(&e.replace('\\', "\\\\"));
            }
            c => out.push(c),
        }
    }
    out
}

/// CEF extension value escaping per the spec: `\`, `=` escaped, line breaks as `\n` and `\r`;
/// other control characters shown escaped.
fn cef_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let mut e = String::new();
                push_escaped(&mut e, c);
                out.push_str(&e.replace('\\', "\\\\"));
            }
            c => out.push(c),
        }
    }
    out
}

/// The CEF severity (0 to 10) for an alert level (0 to 15).
pub fn cef_severity(level: u8) -> u8 {
    ((u16::from(level.min(15)) * 10 + 7) / 15) as u8
}

/// The alert as an ArcSight Common Event Format record.
pub fn cef(rec: &AlertRecord) -> String {
    let mut s = format!(
        "CEF:0|hids|hids|{}|{}|{}|{}|",
        cef_header(env!("CARGO_PKG_VERSION")),
        rec.rule.id,
        cef_header(&rec.rule.description),
        cef_severity(rec.rule.level)
    );
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", rec.time().timestamp_millis().to_string()),
        ("dvchost", rec.agent.name.clone()),
    ];
    let ip = |k: &str| {
        rec.data
            .get(k)
            .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
    };
    let port = |k: &str| rec.data.get(k).filter(|v| v.parse::<u16>().is_ok());
    let mut push = |k: &'static str, v: Option<&str>| {
        if let Some(v) = v {
            ext.push((k, v.to_string()));
        }
    };
    push("src", ip("srcip"));
    push("dst", ip("dstip"));
    push("spt", port("srcport"));
    push("dpt", port("dstport"));
    push("suser", rec.data.get("srcuser"));
    push("duser", rec.data.get("dstuser").or(rec.data.get("user")));
    push("act", rec.data.get("action"));
    push("proto", rec.data.get("protocol"));
    push("request", rec.data.get("url"));
    push("filePath", rec.fim.as_ref().map(|f| f.path.as_str()));
    let groups = rec.rule.groups.join(",");
    let fired = rec.rule.firedtimes.to_string();
    push("cs1Label", Some("groups"));
    push("cs1", Some(&groups));
    push("cs2Label", Some("location"));
    push("cs2", Some(&rec.location));
    push("cn1Label", Some("firedtimes"));
    push("cn1", Some(&fired));
    push("msg", rec.full_log.as_deref());
    let parts: Vec<String> = ext
        .iter()
        .map(|(k, v)| format!("{k}={}", cef_value(v)))
        .collect();
    s.push_str(&parts.join(" "));
    s
}

/// Cuts text to at most `max` characters, marking the cut.
fn shorten(s: &str, max: usize) -> Cow<'_, str> {
    if s.chars().count() <= max {
        return Cow::Borrowed(s);
    }
    let mut t: String = s.chars().take(max).collect();
    t.push_str("...");
    Cow::Owned(t)
}

/// `hids alert: level N on HOST: description`, one line.
pub fn email_subject(rec: &AlertRecord) -> String {
    format!(
        "hids alert: level {} on {}: {}",
        rec.rule.level,
        escape_text(&shorten(&rec.agent.name, 64)),
        escape_text(&shorten(&rec.rule.description, 160))
    )
}

/// The subject of a digest mail.
pub fn digest_subject(recs: &[&AlertRecord]) -> String {
    let max = recs.iter().map(|r| r.rule.level).max().unwrap_or(0);
    let mut hosts: Vec<&str> = recs.iter().map(|r| r.agent.name.as_str()).collect();
    hosts.dedup();
    format!(
        "hids alert digest: {} alerts on {}, highest level {max}",
        recs.len(),
        escape_text(&shorten(&hosts.join(","), 64))
    )
}

/// The lines of one alert in a mail body, escaped.
fn email_lines(rec: &AlertRecord) -> Vec<String> {
    let mut l = vec![
        format!(
            "Rule: {} (level {}) -> '{}'",
            rec.rule.id,
            rec.rule.level,
            escape_text(&rec.rule.description)
        ),
        format!("Time: {}", escape_text(&rec.timestamp)),
        format!(
            "Location: {}->{}",
            escape_text(&rec.agent.name),
            escape_text(&rec.location)
        ),
        format!("Groups: {}", escape_text(&rec.rule.groups.join(", "))),
    ];
    if !rec.id.is_empty() {
        l.push(format!("Alert id: {}", escape_text(&rec.id)));
    }
    for (k, v) in &rec.data.0 {
        l.push(format!("{}: {}", field_label(k), escape_text(v)));
    }
    if let Some(log) = &rec.full_log {
        l.push(String::new());
        l.push(escape_text(log).into_owned());
    }
    for p in &rec.previous_output {
        l.push(escape_text(p).into_owned());
    }
    let fim = fim_lines(rec);
    if !fim.is_empty() {
        l.push(String::new());
        l.extend(fim);
    }
    l
}

/// A mail body for one alert, every line ending in CRLF.
pub fn email_body(rec: &AlertRecord) -> String {
    let mut l = vec![format!(
        "hids alert: level {} on {}",
        rec.rule.level,
        escape_text(&rec.agent.name)
    )];
    l.push(String::new());
    l.extend(email_lines(rec));
    crlf(&l)
}

/// A digest mail body: a summary by rule, then each alert.
pub fn digest_body(recs: &[&AlertRecord], max_per_hour: u32) -> String {
    let mut l = vec![
        format!(
            "{} alerts arrived after this hour's limit of {max_per_hour} mails was reached; they are grouped here.",
            recs.len()
        ),
        String::new(),
        "By rule:".to_string(),
    ];
    let mut by_rule: Vec<(u32, u8, &str, usize)> = Vec::new();
    for r in recs {
        match by_rule.iter_mut().find(|x| x.0 == r.rule.id) {
            Some(x) => x.3 += 1,
            None => by_rule.push((r.rule.id, r.rule.level, &r.rule.description, 1)),
        }
    }
    by_rule.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (id, level, desc, n) in by_rule {
        l.push(format!(
            "  {n} x rule {id} (level {level}): {}",
            escape_text(desc)
        ));
    }
    for r in recs {
        l.push(String::new());
        l.push("----".to_string());
        l.extend(email_lines(r));
    }
    crlf(&l)
}

fn crlf(lines: &[String]) -> String {
    let mut s = String::with_capacity(lines.iter().map(|l| l.len() + 2).sum());
    for l in lines {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s
}

#[cfg(test)]
mod tests;
