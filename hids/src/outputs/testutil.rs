//! Alerts for the unit tests of the outputs.

use super::record::{AlertRecord, Fields};
use crate::event::{
    Alert, AlertOptions, Decoded, Event, LineFlags, LogFormat, Predecoded, RuleInfo,
};

/// A log line crafted to add a mail header.
pub const INJECT_BCC: &str = "\r\nBcc: attacker@example.com";
/// A log line crafted to look like a second syslog frame.
pub const INJECT_FRAME: &str = "\n<13>Nov 22 01:52:41 web-01 sshd[1]: Accepted password for root\n";

/// An sshd alert as the rules would raise it.
pub fn alert(id: u32, level: u8, description: &str) -> Alert {
    Alert {
        time: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_763_776_361_123),
        rule: RuleInfo {
            id,
            level,
            description: description.into(),
            groups: vec![
                "syslog".into(),
                "sshd".into(),
                "authentication_failed".into(),
            ]
            .into(),
            mitre: vec!["T1110".into()].into(),
            firedtimes: 3,
            options: AlertOptions::default(),
            info: Vec::new().into(),
        },
        event: Event {
            time: std::time::SystemTime::now(),
            host: "web-01".into(),
            location: "/var/log/auth.log".into(),
            format: LogFormat::Syslog,
            full_log: "Nov 22 01:52:41 web-01 sshd[123]: Failed password for root from 203.0.113.7 port 22 ssh2".into(),
            flags: LineFlags::default(),
            fim: None,
        },
        predecoded: Predecoded {
            timestamp: Some("Nov 22 01:52:41".into()),
            hostname: Some("web-01".into()),
            program_name: Some("sshd".into()),
            pid: Some("123".into()),
            message: "Failed password for root from 203.0.113.7 port 22 ssh2".into(),
        },
        decoded: Decoded {
            decoder: Some("sshd".into()),
            parent: None,
            fields: vec![
                ("srcip".into(), "203.0.113.7".into()),
                ("dstuser".into(), "root".into()),
            ],
            ..Default::default()
        },
        related: vec![],
    }
}

/// [`alert`] as a record.
pub fn record(id: u32, level: u8, description: &str) -> AlertRecord {
    let r = AlertRecord::from_alert(&alert(id, level, description));
    assert_eq!(
        r.data,
        Fields(vec![
            ("srcip".into(), "203.0.113.7".into()),
            ("dstuser".into(), "root".into())
        ])
    );
    r
}
