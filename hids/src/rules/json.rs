//! The JSON form of an alert (one object per line), as `logtest --json` shows it and the benchmark
//! writes it.
//!
//! Written by hand rather than through serde: an alert is a few hundred bytes of mostly log text,
//! and serde_json escapes strings one byte at a time and writes each piece through its writer. The
//! output is byte for byte what serde_json gives for the same structure (the field order and
//! names of [`RuleInfo`], [`AlertOptions`] and [`Predecoded`] as derived, serde_json's escapes);
//! the tests below hold the two side by side.

use std::time::SystemTime;

use crate::event::{Alert, AlertOptions, Decoded, Event, Predecoded, RuleInfo};

/// Writes `alert` as one JSON line.
pub fn write_alert_json(out: &mut dyn std::io::Write, alert: &Alert) -> std::io::Result<()> {
    write_json_parts(
        out,
        &alert.rule,
        &alert.event,
        &alert.predecoded,
        &alert.decoded,
        &alert.related,
    )
}

/// Writes an alert, given by its parts, as one JSON line (what [`write_alert_json`] writes).
pub fn write_json_parts(
    out: &mut dyn std::io::Write,
    rule: &RuleInfo,
    event: &Event,
    predecoded: &Predecoded,
    decoded: &Decoded,
    related: &[String],
) -> std::io::Result<()> {
    // Formatted into a buffer first, then written in one call.
    JSON_SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let JsonScratch {
            buf,
            stamp_secs,
            stamp,
            order,
            rules,
        } = &mut *scratch;
        // Alerts come in bursts within the same second: the timestamp is formatted once per
        // second (times before 1970 are formatted each time).
        let secs = event
            .time
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        if secs.is_none() || *stamp_secs != secs {
            *stamp = rfc3339(event.time);
            *stamp_secs = secs;
        }
        buf.clear();
        if rules.is_empty() {
            rules.resize_with(RULE_PARTS, || None);
        }
        let part = &mut rules[rule_slot(rule.id)];
        alert_json(
            buf, order, part, stamp, rule, event, predecoded, decoded, related,
        );
        buf.push(b'\n');
        let r = out.write_all(buf);
        // A rare huge alert does not keep its buffer.
        if buf.capacity() > 1 << 16 {
            *buf = Vec::new();
        }
        r
    })
}

/// The alert object, without the line end.
#[allow(clippy::too_many_arguments)]
fn alert_json(
    b: &mut Vec<u8>,
    order: &mut Vec<usize>,
    part: &mut Option<RulePart>,
    stamp: &str,
    rule: &RuleInfo,
    event: &Event,
    predecoded: &Predecoded,
    decoded: &Decoded,
    related: &[String],
) {
    // Destructured so that a field added to these types cannot be left out here.
    let RuleInfo {
        id,
        level,
        description,
        groups,
        mitre,
        firedtimes,
        options,
        info,
    } = rule;
    let AlertOptions {
        no_email_alert,
        alert_by_email,
        no_log,
        no_full_log,
    } = options;
    let Predecoded {
        timestamp,
        hostname,
        program_name,
        pid,
        message,
    } = predecoded;
    b.extend_from_slice(b"{\"timestamp\":");
    string(b, stamp);
    match part {
        Some(p) if p.holds(rule) => {
            b.extend_from_slice(&p.head);
            number(b, *firedtimes);
            b.extend_from_slice(&p.tail);
        }
        _ => {
            let head = b.len();
            b.extend_from_slice(b",\"rule\":{\"id\":");
            number(b, u64::from(*id));
            b.extend_from_slice(b",\"level\":");
            number(b, u64::from(*level));
            b.extend_from_slice(b",\"description\":");
            string(b, description);
            b.extend_from_slice(b",\"groups\":");
            strings(b, groups);
            b.extend_from_slice(b",\"mitre\":");
            strings(b, mitre);
            b.extend_from_slice(b",\"firedtimes\":");
            let head = head..b.len();
            number(b, *firedtimes);
            let tail = b.len();
            b.extend_from_slice(b",\"options\":{\"no_email_alert\":");
            boolean(b, *no_email_alert);
            b.extend_from_slice(b",\"alert_by_email\":");
            boolean(b, *alert_by_email);
            b.extend_from_slice(b",\"no_log\":");
            boolean(b, *no_log);
            b.extend_from_slice(b",\"no_full_log\":");
            boolean(b, *no_full_log);
            b.extend_from_slice(b"},\"info\":");
            strings(b, info);
            let tail = tail..b.len();
            // Kept for the next alerts of this rule, unless the slot holds this rule already
            // (then its description varies, as `$(field)` expansions make it).
            if !part.as_ref().is_some_and(|p| p.same_rule(rule)) {
                *part = Some(RulePart {
                    rule: rule.clone(),
                    head: b[head].into(),
                    tail: b[tail].into(),
                });
            }
        }
    }
    b.extend_from_slice(b"},\"host\":");
    string(b, &event.host);
    b.extend_from_slice(b",\"location\":");
    string(b, &event.location);
    // The message is usually the end of the full log (all of it for a line without a header):
    // escaping works byte by byte, so its escaped form is then copied from the full log's.
    let mut message_escaped = None;
    if !no_full_log {
        b.extend_from_slice(b",\"full_log\":");
        let full = event.full_log.as_bytes();
        let rest = full.len().checked_sub(message.len());
        match rest.filter(|&k| full.get(k..) == Some(message.as_bytes())) {
            Some(k) => {
                b.push(b'"');
                escape_run(b, &full[..k]);
                let from = b.len();
                escape_run(b, &full[k..]);
                message_escaped = Some(from..b.len());
                b.push(b'"');
            }
            None => string(b, &event.full_log),
        }
    }
    b.extend_from_slice(b",\"predecoder\":{\"timestamp\":");
    opt_string(b, timestamp.as_deref());
    b.extend_from_slice(b",\"hostname\":");
    opt_string(b, hostname.as_deref());
    b.extend_from_slice(b",\"program_name\":");
    opt_string(b, program_name.as_deref());
    b.extend_from_slice(b",\"pid\":");
    opt_string(b, pid.as_deref());
    b.extend_from_slice(b",\"message\":");
    match message_escaped {
        Some(run) => {
            b.push(b'"');
            b.extend_from_within(run);
            b.push(b'"');
        }
        None => string(b, message),
    }
    b.extend_from_slice(b"},\"decoder\":");
    opt_string(b, decoded.decoder.as_deref());
    if let Some(p) = decoded.parent.as_deref() {
        b.extend_from_slice(b",\"parent\":");
        string(b, p);
    }
    b.extend_from_slice(b",\"data\":");
    data(b, order, &decoded.fields);
    if !related.is_empty() {
        b.extend_from_slice(b",\"related\":");
        strings(b, related);
    }
    b.push(b'}');
}

/// The decoded fields as a JSON object: keys in byte order, the last value of a repeated name
/// (what collecting them into a `serde_json::Map` gave). `order` is scratch space.
fn data(b: &mut Vec<u8>, order: &mut Vec<usize>, fields: &[crate::event::DecodedField]) {
    order.clear();
    order.extend(0..fields.len());
    // Stable: of equal names, the last one found stays last.
    order.sort_by(|&x, &y| fields[x].0.cmp(&fields[y].0));
    b.push(b'{');
    let mut first = true;
    for (n, &i) in order.iter().enumerate() {
        let (k, v) = &fields[i];
        if order.get(n + 1).is_some_and(|&next| fields[next].0 == *k) {
            continue;
        }
        if !first {
            b.push(b',');
        }
        first = false;
        string(b, k);
        b.push(b':');
        string(b, v);
    }
    b.push(b'}');
}

fn boolean(b: &mut Vec<u8>, v: bool) {
    b.extend_from_slice(if v { b"true" } else { b"false" });
}

fn number(b: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b.extend_from_slice(&digits[i..]);
}

fn strings<S: AsRef<str>>(b: &mut Vec<u8>, list: &[S]) {
    b.push(b'[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        string(b, s.as_ref());
    }
    b.push(b']');
}

fn opt_string(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(b, s),
        None => b.extend_from_slice(b"null"),
    }
}

/// A JSON string with serde_json's escapes: `\"`, `\\`, `\b \t \n \f \r`, and `\u00xx` for the
/// other control characters below 0x20; everything else (DEL and UTF-8 included) as is.
fn string(b: &mut Vec<u8>, s: &str) {
    b.reserve(s.len() + 2);
    b.push(b'"');
    escape_run(b, s.as_bytes());
    b.push(b'"');
}

/// The escaped bytes of a JSON string, without its quotes. Each byte is escaped on its own, so
/// the escape of a text is the escapes of its parts, wherever it is cut.
fn escape_run(b: &mut Vec<u8>, bytes: &[u8]) {
    // Runs without anything to escape are copied whole; they are found sixteen bytes at a time.
    // The last chunk of a text of 16 bytes or more ends at its end and overlaps the one before
    // (the bytes already passed are shifted out of its mask); a shorter text is padded with
    // spaces, which need no escape.
    let len = bytes.len();
    let mut start = 0;
    let mut i = 0;
    while i < len {
        let m = if let Some(chunk) = chunk16(bytes, i) {
            crate::sys::json_escapes(chunk)
        } else if let Some(last) = len.checked_sub(16).and_then(|t| chunk16(bytes, t)) {
            crate::sys::json_escapes(last) >> (16 - (len - i))
        } else {
            let mut chunk = [b' '; 16];
            chunk[..len - i].copy_from_slice(&bytes[i..]);
            crate::sys::json_escapes(&chunk)
        };
        if m == 0 {
            i += 16;
            continue;
        }
        let at = i + m.trailing_zeros() as usize;
        b.extend_from_slice(&bytes[start..at]);
        escape(b, bytes[at]);
        i = at + 1;
        start = i;
    }
    b.extend_from_slice(&bytes[start..]);
}

/// The sixteen bytes of `bytes` from `at`, if there are that many.
fn chunk16(bytes: &[u8], at: usize) -> Option<&[u8; 16]> {
    bytes.get(at..at.checked_add(16)?)?.try_into().ok()
}

/// serde_json's escape for one byte that needs one.
fn escape(b: &mut Vec<u8>, c: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match c {
        b'"' => b.extend_from_slice(b"\\\""),
        b'\\' => b.extend_from_slice(b"\\\\"),
        0x08 => b.extend_from_slice(b"\\b"),
        b'\t' => b.extend_from_slice(b"\\t"),
        b'\n' => b.extend_from_slice(b"\\n"),
        0x0c => b.extend_from_slice(b"\\f"),
        b'\r' => b.extend_from_slice(b"\\r"),
        _ => b.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(c >> 4)],
            HEX[usize::from(c & 0xf)],
        ]),
    }
}

/// [`write_json_parts`]'s buffers, reused between alerts, and the last timestamp it formatted.
#[derive(Default)]
struct JsonScratch {
    buf: Vec<u8>,
    stamp_secs: Option<u64>,
    stamp: String,
    /// The order in which the decoded fields are written.
    order: Vec<usize>,
    /// The JSON of recent rules, in the slots [`rule_slot`] gives (empty until the first alert).
    rules: Vec<Option<RulePart>>,
}

/// How many rules' JSON [`write_json_parts`] keeps.
const RULE_PARTS: usize = 512;

/// A rule's slot among the [`RULE_PARTS`]: its id hashed (Fibonacci hashing), since ids that
/// differ by a round number (5501 and 31101 by 100 * 256) are common.
fn rule_slot(id: u32) -> usize {
    const BITS: u32 = RULE_PARTS.trailing_zeros();
    (id.wrapping_mul(0x9e37_79b9) >> (32 - BITS)) as usize
}

/// The JSON of a rule's object, around its firedtimes count (the one part that changes from one
/// alert of the rule to the next): `head` runs from `,"rule":{"id":` to `"firedtimes":`, `tail`
/// from `,"options":` to the end of `"info"`.
struct RulePart {
    /// What the parts were written from. Its lists and description are shared with the rule, so
    /// the same rule's next alert is recognised by pointer.
    rule: RuleInfo,
    head: Box<[u8]>,
    tail: Box<[u8]>,
}

impl RulePart {
    /// Whether the parts are those `rule` would be written as.
    fn holds(&self, rule: &RuleInfo) -> bool {
        let k = &self.rule;
        self.same_rule(rule)
            && (std::sync::Arc::ptr_eq(&k.description, &rule.description)
                || k.description == rule.description)
    }

    /// Whether `rule` is the rule the parts were written from (the same loaded rule: its
    /// description may differ by expansion).
    fn same_rule(&self, rule: &RuleInfo) -> bool {
        let k = &self.rule;
        k.id == rule.id
            && k.level == rule.level
            && k.options == rule.options
            && std::sync::Arc::ptr_eq(&k.groups, &rule.groups)
            && std::sync::Arc::ptr_eq(&k.mitre, &rule.mitre)
            && std::sync::Arc::ptr_eq(&k.info, &rule.info)
    }
}

thread_local! {
    static JSON_SCRATCH: std::cell::RefCell<JsonScratch> = std::cell::RefCell::default();
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{LineFlags, LogFormat};
    use std::sync::Arc;

    /// The serde form the writer reproduces: the alert as serde_json wrote it before.
    #[derive(serde::Serialize)]
    struct AlertJson<'a> {
        timestamp: &'a str,
        rule: &'a RuleInfo,
        host: &'a str,
        location: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        full_log: Option<&'a str>,
        predecoder: &'a Predecoded,
        decoder: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        parent: Option<&'a str>,
        data: serde_json::Map<String, serde_json::Value>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        related: &'a [String],
    }

    fn by_serde(
        rule: &RuleInfo,
        ev: &Event,
        pre: &Predecoded,
        d: &Decoded,
        rel: &[String],
    ) -> String {
        let j = AlertJson {
            timestamp: &rfc3339(ev.time),
            rule,
            host: &ev.host,
            location: &ev.location,
            full_log: (!rule.options.no_full_log).then_some(ev.full_log.as_str()),
            predecoder: pre,
            decoder: d.decoder.as_deref(),
            parent: d.parent.as_deref(),
            data: d
                .fields
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.as_str())))
                .collect(),
            related: rel,
        };
        serde_json::to_string(&j).unwrap() + "\n"
    }

    fn by_writer(
        rule: &RuleInfo,
        ev: &Event,
        pre: &Predecoded,
        d: &Decoded,
        rel: &[String],
    ) -> String {
        let mut out = Vec::new();
        write_json_parts(&mut out, rule, ev, pre, d, rel).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Every byte value below 0x80, quotes and backslashes at every position of an 8-byte run,
    /// multi-byte UTF-8, DEL and C1 controls.
    #[test]
    fn escape_run_agrees_with_serde_json_at_every_length_and_position() {
        let serde = |s: &str| {
            let q = serde_json::to_string(s).unwrap();
            q[1..q.len() - 1].to_string()
        };
        let ours = |s: &str| {
            let mut b = Vec::new();
            escape_run(&mut b, s.as_bytes());
            String::from_utf8(b).unwrap()
        };
        for len in 0..50 {
            assert_eq!(ours(&"x".repeat(len)), "x".repeat(len));
            for p in 0..len {
                for c in ['"', '\\', '\n', '\u{0}', '\u{1f}', ' ', '\u{7f}', 'é'] {
                    let mut s: String = "x".repeat(p);
                    s.push(c);
                    s.push_str(&"y".repeat(len - p - 1));
                    assert_eq!(ours(&s), serde(&s), "{s:?}");
                    // And a second escape at every later position.
                    for q in p + 1..len {
                        let mut t: Vec<char> = s.chars().collect();
                        t[q] = '\t';
                        let t: String = t.into_iter().collect();
                        assert_eq!(ours(&t), serde(&t), "{t:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_byte_value_is_classified_at_every_lane() {
        for c in 0..=255u8 {
            let want = c < 0x20 || c == b'"' || c == b'\\';
            for k in 0..16 {
                let mut chunk = [b'a'; 16];
                chunk[k] = c;
                let m = crate::sys::json_escapes(&chunk);
                assert_eq!(m, u32::from(want) << k, "byte {c:#x} at {k}");
            }
        }
    }

    fn awkward() -> Vec<String> {
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut v = vec![
            String::new(),
            all.clone(),
            all.chars().rev().collect(),
            "plain text that needs nothing at all, long enough for several words".into(),
            "é ü \u{2028} \u{7f} \u{85} \u{202e} 日本語 \u{1F600}".into(),
        ];
        for i in 0..17 {
            for c in ['"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', ' ', 'é'] {
                let mut s = "a".repeat(i);
                s.push(c);
                s.push_str(&"b".repeat(17 - i));
                v.push(s);
            }
        }
        v
    }

    #[test]
    fn alert_json_is_byte_identical_to_serde_json() {
        let texts = awkward();
        let same_slot: Vec<u32> = (5_000_000..)
            .filter(|&id| rule_slot(id) == rule_slot(5_000_000))
            .take(5)
            .collect();
        let mut n = 0;
        for (i, t) in texts.iter().enumerate() {
            let other = &texts[(i * 7 + 3) % texts.len()];
            let rule = RuleInfo {
                // Few ids, all in one slot of the rule parts kept between alerts.
                id: same_slot[i % same_slot.len()],
                level: (i % 16) as u8,
                description: t.as_str().into(),
                groups: vec![t.clone(), "syslog".into()].into(),
                mitre: if i % 2 == 0 {
                    Vec::new()
                } else {
                    vec![other.clone()]
                }
                .into(),
                firedtimes: u64::MAX - i as u64,
                options: AlertOptions {
                    no_email_alert: i % 2 == 0,
                    alert_by_email: i % 3 == 0,
                    no_log: i % 5 == 0,
                    no_full_log: i % 4 == 0,
                },
                info: if i % 3 == 0 {
                    vec![t.clone(), other.clone()]
                } else {
                    Vec::new()
                }
                .into(),
            };
            let event = Event {
                time: std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(1_786_536_000 + i as u64),
                host: Arc::from(other.as_str()),
                location: Arc::from(t.as_str()),
                format: LogFormat::Syslog,
                full_log: format!("{t}{other}"),
                flags: LineFlags::default(),
                fim: None,
            };
            let pre = Predecoded {
                timestamp: (i % 2 == 0).then(|| "Nov 21 00:00:01".into()),
                hostname: (i % 3 != 0).then(|| other.as_str().into()),
                program_name: (i % 5 != 0).then(|| t.as_str().into()),
                pid: (i % 7 == 0).then(|| "1028".into()),
                // The end of the full log (cut before an escape, after one, inside a multi-byte
                // character's text), all of it, or its beginning.
                message: match i % 3 {
                    0 => other.clone(),
                    1 => format!("{t}{other}"),
                    _ => t.clone(),
                },
            };
            let decoded = Decoded {
                decoder: (i % 4 != 0).then(|| Arc::from("sshd")),
                parent: (i % 3 == 0).then(|| Arc::from(t.as_str())),
                decoder_type: None,
                fields: vec![
                    (Arc::from("srcip"), "10.0.0.1".into()),
                    (Arc::from(t.as_str()), other.as_str().into()),
                    (Arc::from("dstuser"), t.as_str().into()),
                    (Arc::from("srcip"), "10.0.0.2".into()),
                    (Arc::from("a"), Default::default()),
                ][..i % 6]
                    .to_vec(),
            };
            let related: Vec<String> = texts.iter().skip(i).take(i % 3).cloned().collect();
            // The rule, its next alert (kept parts), the same rule with another description
            // (as an expansion gives), then its next alert again.
            let next = RuleInfo {
                firedtimes: i as u64,
                ..rule.clone()
            };
            let expanded = RuleInfo {
                description: other.as_str().into(),
                ..rule.clone()
            };
            for (k, r) in [&rule, &next, &expanded, &next].into_iter().enumerate() {
                assert_eq!(
                    by_writer(r, &event, &pre, &decoded, &related),
                    by_serde(r, &event, &pre, &decoded, &related),
                    "text {i}, alert {k}: {t:?}"
                );
            }
            n += 1;
        }
        assert!(n > 100);
    }

    #[test]
    fn alert_json_pinned() {
        let rule = RuleInfo {
            id: 5716,
            level: 5,
            description: "sshd: authentication failed from \"10.1.2.3\"\\".into(),
            groups: vec!["syslog".to_string(), "sshd".into()].into(),
            mitre: vec!["T1110".to_string()].into(),
            firedtimes: 3,
            options: AlertOptions {
                alert_by_email: true,
                ..AlertOptions::default()
            },
            info: Vec::new().into(),
        };
        let event = Event {
            time: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_786_536_000),
            host: Arc::from("web01"),
            location: Arc::from("/var/log/auth.log"),
            format: LogFormat::Syslog,
            full_log: "Nov 21 00:00:01 web01 sshd[1028]: Failed password\tfor x\u{1}".into(),
            flags: LineFlags::default(),
            fim: None,
        };
        let pre = Predecoded {
            timestamp: Some("Nov 21 00:00:01".into()),
            hostname: Some("web01".into()),
            program_name: Some("sshd".into()),
            pid: None,
            message: "Failed password\tfor x\u{1}".into(),
        };
        let decoded = Decoded {
            decoder: Some(Arc::from("sshd")),
            parent: None,
            decoder_type: None,
            fields: vec![
                (Arc::from("srcip"), "10.1.2.3".into()),
                (Arc::from("dstuser"), "x".into()),
                (Arc::from("srcip"), "10.1.2.4".into()),
            ],
        };
        let related = vec!["earlier é".to_string()];
        assert_eq!(
            by_writer(&rule, &event, &pre, &decoded, &related),
            concat!(
                r#"{"timestamp":"2026-08-12T12:00:00Z","rule":{"id":5716,"level":5,"#,
                r#""description":"sshd: authentication failed from \"10.1.2.3\"\\","#,
                r#""groups":["syslog","sshd"],"mitre":["T1110"],"firedtimes":3,"#,
                r#""options":{"no_email_alert":false,"alert_by_email":true,"no_log":false,"#,
                r#""no_full_log":false},"info":[]},"host":"web01","location":"/var/log/auth.log","#,
                r#""full_log":"Nov 21 00:00:01 web01 sshd[1028]: Failed password\tfor x\u0001","#,
                r#""predecoder":{"timestamp":"Nov 21 00:00:01","hostname":"web01","#,
                r#""program_name":"sshd","pid":null,"message":"Failed password\tfor x\u0001"},"#,
                r#""decoder":"sshd","data":{"dstuser":"x","srcip":"10.1.2.4"},"#,
                r#""related":["earlier é"]}"#,
                "\n"
            )
        );
    }
}
