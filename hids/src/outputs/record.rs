//! The form in which an alert is spooled and delivered: an owned, serializable copy of
//! [`crate::event::Alert`] taken when it is submitted. It is also the `alerts.json` document, so
//! that a restart delivers exactly what would have been delivered before it.

use std::fmt;
use std::time::SystemTime;

use chrono::{DateTime, FixedOffset, Local, SecondsFormat};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::{display_path, Alert};

/// One alert as the outputs see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// RFC 3339 with milliseconds and the local offset.
    pub timestamp: String,
    /// `<unix seconds>.<spool id>`: unique per state directory. Filled when read from the spool.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub rule: RuleRecord,
    pub agent: AgentRecord,
    pub location: String,
    /// The log format of the source (`syslog`, `json`, ...).
    #[serde(default)]
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<DecoderRecord>,
    #[serde(default, skip_serializing_if = "PredecoderRecord::is_empty")]
    pub predecoder: PredecoderRecord,
    /// The decoded fields, in the order found; a repeated field becomes a list.
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub data: Fields,
    /// Absent when the rule has `no_full_log`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_log: Option<String>,
    /// For correlation rules: the earlier events that led to this alert.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_output: Vec<String>,
    /// For file integrity alerts: the structured change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fim: Option<FimRecord>,
    /// The source cut the line or replaced invalid UTF-8.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lossy_utf8: bool,
}

/// `rule` in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    pub id: u32,
    pub level: u8,
    pub description: String,
    pub groups: Vec<String>,
    #[serde(default)]
    pub mitre: Vec<String>,
    #[serde(default)]
    pub firedtimes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub info: Vec<String>,
    #[serde(default, skip_serializing_if = "OptionsRecord::is_empty")]
    pub options: OptionsRecord,
}

/// The rule options outputs honour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionsRecord {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alert_by_email: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_email_alert: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_log: bool,
}

impl OptionsRecord {
    fn is_empty(&self) -> bool {
        *self == OptionsRecord::default()
    }
}

/// `agent` in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: String,
}

/// `decoder` in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderRecord {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// The syslog header the pre-decoder split off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PredecoderRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
}

impl PredecoderRecord {
    fn is_empty(&self) -> bool {
        *self == PredecoderRecord::default()
    }
}

/// A file integrity change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FimRecord {
    /// The path; bytes that are not UTF-8 are written `\xNN` (see [`crate::event::display_path`]).
    pub path: String,
    /// added, modified or deleted.
    pub event: String,
    #[serde(default)]
    pub changed_attributes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tampered: bool,
}

/// Decoded fields in their order. Serialized as a JSON object; a field found more than once
/// becomes a list of its values, so that the object never has duplicate keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Each distinct name in first-seen order with all its values.
    pub fn grouped(&self) -> Vec<(&str, Vec<&str>)> {
        let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
        for (k, v) in &self.0 {
            match out.iter_mut().find(|(n, _)| n == k) {
                Some((_, vs)) => vs.push(v),
                None => out.push((k, vec![v])),
            }
        }
        out
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let grouped = self.grouped();
        let mut m = s.serialize_map(Some(grouped.len()))?;
        for (k, vs) in grouped {
            if vs.len() == 1 {
                m.serialize_entry(k, vs[0])?;
            } else {
                m.serialize_entry(k, &vs)?;
            }
        }
        m.end()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of strings or lists of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, OneOrMany>()? {
                    match v {
                        OneOrMany::One(s) => out.push((k, s)),
                        OneOrMany::Many(vs) => out.extend(vs.into_iter().map(|s| (k.clone(), s))),
                    }
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// RFC 3339 with milliseconds in the local time zone.
pub fn rfc3339(t: SystemTime) -> String {
    DateTime::<Local>::from(t).to_rfc3339_opts(SecondsFormat::Millis, false)
}

impl AlertRecord {
    /// Takes the owned copy of an alert.
    pub fn from_alert(a: &Alert) -> AlertRecord {
        let r = &a.rule;
        let e = &a.event;
        let p = &a.predecoded;
        let fim = e.fim.as_deref().map(|c| FimRecord {
            path: display_path(&c.path).0,
            event: c.kind.as_str().to_string(),
            changed_attributes: c.changed.iter().map(|s| s.to_string()).collect(),
            before: c
                .before
                .as_ref()
                .and_then(|b| serde_json::to_value(b).ok())
                .map(drop_nulls),
            after: c
                .after
                .as_ref()
                .and_then(|b| serde_json::to_value(b).ok())
                .map(drop_nulls),
            diff: c.diff.clone(),
            tampered: c.tampered,
        });
        AlertRecord {
            timestamp: rfc3339(a.time),
            id: String::new(),
            rule: RuleRecord {
                id: r.id,
                level: r.level,
                description: r.description.to_string(),
                groups: r.groups.to_vec(),
                mitre: r.mitre.to_vec(),
                firedtimes: r.firedtimes,
                info: r.info.to_vec(),
                options: OptionsRecord {
                    alert_by_email: r.options.alert_by_email,
                    no_email_alert: r.options.no_email_alert,
                    no_log: r.options.no_log,
                },
            },
            agent: AgentRecord {
                name: e.host.to_string(),
            },
            location: e.location.to_string(),
            format: e.format.as_str().to_string(),
            decoder: a.decoded.decoder.as_ref().map(|d| DecoderRecord {
                name: d.to_string(),
                parent: a.decoded.parent.as_ref().map(|p| p.to_string()),
            }),
            predecoder: PredecoderRecord {
                timestamp: p.timestamp.as_deref().map(String::from),
                hostname: p.hostname.as_deref().map(String::from),
                program_name: p.program_name.as_deref().map(String::from),
                pid: p.pid.as_deref().map(String::from),
            },
            data: Fields(
                a.decoded
                    .fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            full_log: (!r.options.no_full_log).then(|| e.full_log.clone()),
            previous_output: a.related.clone(),
            fim,
            truncated: e.flags.truncated,
            lossy_utf8: e.flags.lossy_utf8,
        }
    }

    /// The alert's time; the Unix epoch when the stored timestamp cannot be read.
    pub fn time(&self) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(&self.timestamp)
            .unwrap_or_else(|_| DateTime::UNIX_EPOCH.fixed_offset())
    }

    /// Whether the alert is in one of `groups`.
    pub fn in_any_group(&self, groups: &[String]) -> bool {
        self.rule.groups.iter().any(|g| groups.contains(g))
    }
}

fn drop_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            serde_json::Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        v => v,
    }
}
