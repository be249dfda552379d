use super::*;
use crate::outputs::record::{Fields, FimRecord};
use crate::outputs::testutil::{record, INJECT_BCC, INJECT_FRAME};

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}

#[test]
fn escape_text_leaves_plain_text_alone_and_escapes_controls() {
    assert!(matches!(escape_text("plain é text"), Cow::Borrowed(_)));
    assert_eq!(
        escape_text("a\r\nBcc: x\t\u{1b}[31m\u{7f}\u{85}\u{2028}\u{202e}"),
        "a\\r\\nBcc: x\\t\\u{1b}[31m\\u{7f}\\u{85}\\u{2028}\\u{202e}"
    );
}

#[test]
fn alerts_log_entry_has_ossec_layout() {
    let mut r = record(5716, 5, "SSHD authentication failed.");
    r.id = "1732240361.42".into();
    let e = alerts_log_entry(&r);
    let t = r.time();
    let expected = format!(
        "** Alert 1732240361.42: - syslog,sshd,authentication_failed,\n\
         {} {} {} web-01->/var/log/auth.log\n\
         Rule: 5716 (level 5) -> 'SSHD authentication failed.'\n\
         Src IP: 203.0.113.7\n\
         User: root\n\
         Nov 22 01:52:41 web-01 sshd[123]: Failed password for root from 203.0.113.7 port 22 ssh2\n\n",
        t.format("%Y"),
        month(&t),
        t.format("%d %H:%M:%S")
    );
    assert_eq!(e, expected);
    r.rule.options.alert_by_email = true;
    assert!(alerts_log_entry(&r).starts_with("** Alert 1732240361.42: mail  - syslog,"));
}

#[test]
fn alerts_log_entry_cannot_be_split_by_a_crafted_line() {
    let mut r = record(1, 3, INJECT_BCC);
    r.full_log = Some(format!("x{INJECT_FRAME}\n** Alert 1.1: - fake,\r\n"));
    r.data = Fields(vec![("user".into(), "a\nRule: 1 (level 15)".into())]);
    let e = alerts_log_entry(&r);
    // Header, time line, rule line, one field, the log, and the empty line: nothing more.
    assert_eq!(e.lines().count(), 6, "{e}");
    assert_eq!(e.matches("** Alert").count(), 2);
    assert!(e.lines().nth(4).unwrap().starts_with("x\\n<13>"));
}

#[test]
fn fim_entry_shows_attributes_and_escaped_diff() {
    let mut r = record(550, 7, "Integrity checksum changed.");
    r.data = Fields::default();
    r.full_log = Some("File '/etc/app.conf' modified".into());
    r.fim = Some(FimRecord {
        path: "/etc/app.conf".into(),
        event: "modified".into(),
        changed_attributes: vec!["size".into(), "hash".into()],
        before: Some(serde_json::json!({"size": 10, "hash": "aa"})),
        after: Some(serde_json::json!({"size": 12, "hash": "bb"})),
        diff: Some("@@ -1 +1 @@\n-a=1\n+a=2\u{1b}[2J\n".into()),
        tampered: false,
    });
    let e = alerts_log_entry(&r);
    assert!(e.contains(
        "File '/etc/app.conf' modified\nAttributes changed: size, hash\nsize: '10' -> '12'\nhash: 'aa' -> 'bb'\nWhat changed:\n@@ -1 +1 @@\n-a=1\n+a=2\\u{1b}[2J\n\n"
    ), "{e}");
    let j: serde_json::Value = serde_json::from_str(&json_line(&r)).unwrap();
    assert_eq!(j["fim"]["changed_attributes"][1], "hash");
    assert_eq!(j["fim"]["after"]["size"], 12);
}

#[test]
fn json_line_is_valid_one_line_and_round_trips() {
    let mut r = record(5716, 5, "d\u{85}\u{2028}\"q\"");
    r.full_log = Some(format!("{INJECT_BCC}{INJECT_FRAME}\u{0}\u{7f}\u{202e}"));
    r.data = Fields(vec![
        ("srcip".into(), "1.2.3.4".into()),
        ("srcip".into(), "5.6.7.8".into()),
        ("k\n".into(), "v".into()),
    ]);
    let line = json_line(&r);
    assert!(!has_control(&line), "{line}");
    assert!(!line.contains('\u{2028}') && !line.contains('\u{202e}'));
    let j: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        j["data"]["srcip"],
        serde_json::json!(["1.2.3.4", "5.6.7.8"])
    );
    assert_eq!(j["rule"]["id"], 5716);
    assert_eq!(j["rule"]["mitre"], serde_json::json!(["T1110"]));
    assert_eq!(j["agent"]["name"], "web-01");
    let back: AlertRecord = serde_json::from_str(&line).unwrap();
    assert_eq!(back, r);
}

fn cx(format: SyslogFormat) -> FrameContext<'static> {
    FrameContext {
        format,
        facility: 16,
        hostname: "web-01",
        local: false,
        pid: 42,
    }
}

#[test]
fn rfc5424_frame_with_structured_data() {
    let mut r = record(5716, 5, "SSHD \"auth\" failed]");
    r.id = "1.7".into();
    r.data = Fields(vec![
        ("srcip".into(), "203.0.113.7".into()),
        ("bad name]=".into(), "a\\b\"]\n".into()),
    ]);
    let f = syslog_frame(&r, &cx(SyslogFormat::Rfc5424));
    let expected = format!(
        "<133>1 {} web-01 hids 42 alert [alert@32473 rule=\"5716\" level=\"5\" groups=\"syslog,sshd,authentication_failed\" location=\"/var/log/auth.log\" firedtimes=\"3\" id=\"1.7\" mitre=\"T1110\"][data@32473 srcip=\"203.0.113.7\" bad_name__=\"a\\\\b\\\"\\]\\\\n\"] Alert Level: 5; Rule: 5716 - SSHD \"auth\" failed]; Location: web-01->/var/log/auth.log; srcip: 203.0.113.7; bad name]=: a\\b\"]\\n; {}",
        r.timestamp,
        r.full_log.as_deref().unwrap()
    );
    assert_eq!(f, expected);
}

#[test]
fn rfc3164_frames_remote_and_local() {
    let r = record(5716, 12, "x");
    let t = r.time();
    let ts = format!("{} {}", month(&t), t.format("%e %H:%M:%S"));
    let f = syslog_frame(&r, &cx(SyslogFormat::Rfc3164));
    assert!(
        f.starts_with(&format!(
            "<130>{ts} web-01 hids[42]: Alert Level: 12; Rule: 5716 - x; "
        )),
        "{f}"
    );
    let mut c = cx(SyslogFormat::Rfc3164);
    c.local = true;
    let f = syslog_frame(&r, &c);
    assert!(
        f.starts_with(&format!("<130>{ts} hids[42]: Alert Level: 12;")),
        "{f}"
    );
}

#[test]
fn no_frame_carries_a_line_break_or_control() {
    let mut r = record(1, 3, INJECT_BCC);
    r.full_log = Some(INJECT_FRAME.into());
    r.location = "loc\n<14>fake".into();
    r.agent.name = "h\nx".into();
    for fmt in [
        SyslogFormat::Rfc3164,
        SyslogFormat::Rfc5424,
        SyslogFormat::Json,
        SyslogFormat::Cef,
    ] {
        let f = syslog_frame(&r, &cx(fmt));
        assert!(!has_control(&f), "{fmt:?}: {f}");
    }
}

#[test]
fn cef_escapes_per_spec() {
    let mut r = record(5716, 15, "a|b\\c=d\ne");
    r.data = Fields(vec![
        ("srcip".into(), "203.0.113.7".into()),
        ("srcport".into(), "not a port".into()),
        ("action".into(), "x=y\\z\r\n|".into()),
    ]);
    r.full_log = Some("m".into());
    let c = cef(&r);
    let ms = r.time().timestamp_millis();
    assert_eq!(
        c,
        format!(
            "CEF:0|hids|hids|{}|5716|a\\|b\\\\c=d\\\\ne|10|rt={ms} dvchost=web-01 src=203.0.113.7 act=x\\=y\\\\z\\r\\n| cs1Label=groups cs1=syslog,sshd,authentication_failed cs2Label=location cs2=/var/log/auth.log cn1Label=firedtimes cn1=3 msg=m",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(cef_severity(0), 0);
    assert_eq!(cef_severity(7), 5);
    assert_eq!(cef_severity(200), 10);
}

#[test]
fn udp_frames_are_shortened_not_cut() {
    let mut r = record(5716, 5, "d");
    r.full_log = Some("é".repeat(5000));
    r.data = Fields(vec![("extra_data".into(), "y".repeat(3000))]);
    for fmt in [
        SyslogFormat::Rfc5424,
        SyslogFormat::Json,
        SyslogFormat::Cef,
        SyslogFormat::Rfc3164,
    ] {
        let f = syslog_frame_fitted(&r, &cx(fmt), 2048);
        assert!(f.len() <= 2048, "{fmt:?} {}", f.len());
        assert!(f.contains("[truncated]"), "{fmt:?}");
        if fmt == SyslogFormat::Json {
            let json = &f[f.find('{').unwrap()..];
            let j: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(j["truncated"], true);
        }
    }
    let small = record(1, 1, "s");
    assert_eq!(
        syslog_frame_fitted(&small, &cx(SyslogFormat::Json), 2048),
        syslog_frame(&small, &cx(SyslogFormat::Json))
    );
}

#[test]
fn email_subject_is_one_line_and_body_is_crlf() {
    let mut r = record(5716, 10, &format!("login{INJECT_BCC}"));
    r.full_log = Some(format!("line\rwith bare CR\nand LF{INJECT_BCC}"));
    let s = email_subject(&r);
    assert_eq!(
        s,
        "hids alert: level 10 on web-01: login\\r\\nBcc: attacker@example.com"
    );
    let b = email_body(&r);
    assert!(b.ends_with("\r\n"));
    let stripped = b.replace("\r\n", "");
    assert!(
        !stripped.contains('\r') && !stripped.contains('\n'),
        "{b:?}"
    );
    assert!(b.contains("line\\rwith bare CR\\nand LF\\r\\nBcc: attacker@example.com\r\n"));
    let other = record(1, 3, "other");
    let d = digest_body(&[&r, &other, &r], 12);
    assert!(
        d.contains("  2 x rule 5716 (level 10): login\\r\\nBcc"),
        "{d}"
    );
    assert!(d.contains("  1 x rule 1 (level 3): other\r\n"));
    assert!(!d.replace("\r\n", "").contains('\n'));
    assert_eq!(
        digest_subject(&[&r, &other]),
        "hids alert digest: 2 alerts on web-01, highest level 10"
    );
}
