//! How a FIM change is shown: the [`Event`] handed to the rules (an OSSEC-syscheck-like
//! `full_log` plus the structured change), and the JSON object of `hids fim check --json`.
//! Paths that are not UTF-8 are escaped losslessly ([`display_path`]) and flagged.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::event::{display_path, ChangeKind, Event, FileAttrs, FimChange, LineFlags, LogFormat};

/// The location of FIM events.
pub const LOCATION: &str = "fim";

/// A time as RFC 3339 UTC with seconds ("2026-11-22T01:52:41Z").
pub fn format_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format_unix(secs)
}

/// Unix seconds as RFC 3339 UTC.
pub fn format_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn format_nanos(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let s = format_unix(secs);
    if frac == 0 {
        s
    } else {
        format!("{}.{frac:09}Z", s.trim_end_matches('Z'))
    }
}

fn owner(id: Option<u32>, name: &Option<String>) -> String {
    match (id, name) {
        (Some(i), Some(n)) => format!("{n} ({i})"),
        (Some(i), None) => i.to_string(),
        (None, Some(n)) => n.clone(),
        (None, None) => "-".into(),
    }
}

/// One attribute of a record as shown in text, by its change name.
pub fn attr_text(a: &FileAttrs, name: &str) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    match name {
        "type" => opt(a.file_type.map(|t| t.as_str().to_string())),
        "size" => opt(a.size.map(|v| v.to_string())),
        "perm" => opt(a.mode.map(|m| format!("{m:04o}"))),
        "owner" => owner(a.uid, &a.user),
        "group" => owner(a.gid, &a.group),
        "inode" => opt(a.inode.map(|v| v.to_string())),
        "device" => opt(a.device.map(|v| format!("{}:{}", v >> 8 & 0xfff, v & 0xff))),
        "mtime" => opt(a.mtime.map(format_nanos)),
        "ctime" => opt(a.ctime.map(format_nanos)),
        "hash" => opt(a.hash.clone()),
        "link" => opt(a.link_target.clone()),
        _ => "-".into(),
    }
}

fn label(name: &str) -> &'static str {
    match name {
        "type" => "Type",
        "size" => "Size",
        "perm" => "Permissions",
        "owner" => "Ownership",
        "group" => "Group ownership",
        "inode" => "Inode",
        "device" => "Device",
        "mtime" => "Mtime",
        "ctime" => "Ctime",
        "hash" => "BLAKE3",
        "link" => "Symlink target",
        _ => "Attribute",
    }
}

/// The attributes shown for an added or deleted entry.
const SUMMARY_ATTRS: [&str; 6] = ["type", "size", "perm", "owner", "group", "hash"];

/// The readable text of a change, as OSSEC's syscheck alerts show it: a first line
/// (`File '/etc/nginx/nginx.conf' modified`), then one line per changed attribute with its old
/// and new value, then the diff if there is one. Control characters are escaped.
pub fn full_log(c: &FimChange) -> String {
    let (path, _) = display_path(&c.path);
    let path = crate::diag::escape_control(&path);
    let mut out = match c.kind {
        ChangeKind::Added => format!("File '{path}' added"),
        ChangeKind::Modified => format!("File '{path}' modified"),
        ChangeKind::Deleted => format!("File '{path}' deleted"),
    };
    if c.tampered {
        out.push_str(
            "\nBaseline tampered: the recorded entry failed its integrity check and was not trusted",
        );
    }
    match c.kind {
        ChangeKind::Modified => {
            if let (Some(b), Some(a)) = (&c.before, &c.after) {
                if !c.changed.is_empty() {
                    out.push_str(&format!("\nChanged attributes: {}", c.changed.join(", ")));
                }
                for name in &c.changed {
                    out.push_str(&format!(
                        "\n{} changed from '{}' to '{}'",
                        label(name),
                        crate::diag::escape_control(&attr_text(b, name)),
                        crate::diag::escape_control(&attr_text(a, name)),
                    ));
                }
            }
        }
        ChangeKind::Added | ChangeKind::Deleted => {
            if let Some(a) = c.after.as_ref().or(c.before.as_ref()) {
                for name in SUMMARY_ATTRS {
                    let v = attr_text(a, name);
                    if v != "-" {
                        out.push_str(&format!(
                            "\n{}: {}",
                            label(name),
                            crate::diag::escape_control(&v)
                        ));
                    }
                }
            }
        }
    }
    if let Some(d) = &c.diff {
        out.push_str("\nWhat changed:\n");
        out.push_str(d.trim_end_matches('\n'));
    }
    out
}

/// A record's attributes as a JSON object (only those recorded).
pub fn attrs_json(a: &FileAttrs) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            m.insert(k.to_string(), v);
        }
    };
    put("type", json!(a.file_type.map(|t| t.as_str())));
    put("size", json!(a.size));
    put("perm", json!(a.mode.map(|m| format!("{m:04o}"))));
    put("uid", json!(a.uid));
    put("user", json!(a.user));
    put("gid", json!(a.gid));
    put("group", json!(a.group));
    put("inode", json!(a.inode));
    put("device", json!(a.device));
    put("mtime", json!(a.mtime.map(format_nanos)));
    put("ctime", json!(a.ctime.map(format_nanos)));
    put("hash", json!(a.hash));
    put("hash_skipped", json!(a.hash_skipped));
    put("link", json!(a.link_target));
    Value::Object(m)
}

/// A path for JSON: the escaped text, and whether it differs from the raw bytes (not UTF-8, or a
/// backslash doubled), in which case consumers must unescape it.
pub fn json_path(p: &std::path::Path) -> (String, bool) {
    let (shown, lossy) = display_path(p);
    let escaped = lossy || shown.len() != p.as_os_str().len();
    (shown, escaped)
}

/// The JSON object of a change: `path`, `change`, `type`, `changed`, `old`, `new`, `diff`, plus
/// `path_escaped: true` when the path had to be escaped (not UTF-8, or holding a backslash) and
/// `tampered: true` when the baseline row failed its integrity check.
pub fn change_json(c: &FimChange) -> Value {
    let (path, escaped) = json_path(&c.path);
    let ftype = c
        .after
        .as_ref()
        .and_then(|a| a.file_type)
        .or_else(|| c.before.as_ref().and_then(|a| a.file_type));
    let mut v = json!({
        "path": path,
        "change": c.kind.as_str(),
        "type": ftype.map(|t| t.as_str()),
        "changed": c.changed,
        "old": c.before.as_ref().map(attrs_json),
        "new": c.after.as_ref().map(attrs_json),
        "diff": c.diff,
    });
    if escaped {
        v["path_escaped"] = json!(true);
    }
    if c.tampered {
        v["tampered"] = json!(true);
    }
    v
}

/// The event for a change: location [`LOCATION`], the readable [`full_log`], the change attached.
pub fn change_event(change: &FimChange, host: Arc<str>) -> Event {
    Event {
        time: SystemTime::now(),
        host,
        location: Arc::from(LOCATION),
        format: LogFormat::Plain,
        full_log: full_log(change),
        flags: LineFlags::default(),
        fim: Some(Box::new(change.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FileType;
    use std::path::PathBuf;

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_795_830_761), "2026-11-28T01:52:41Z");
        assert_eq!(
            format_nanos(1_500_000_000),
            "1970-01-01T00:00:01.500000000Z"
        );
    }

    #[test]
    fn modified_event_reads_like_syscheck() {
        let before = FileAttrs {
            file_type: Some(FileType::File),
            size: Some(120),
            mode: Some(0o644),
            ..Default::default()
        };
        let mut after = before.clone();
        after.size = Some(134);
        after.mode = Some(0o600);
        let c = FimChange {
            path: PathBuf::from("/etc/nginx/nginx.conf"),
            kind: ChangeKind::Modified,
            before: Some(before),
            after: Some(after),
            changed: vec!["size", "perm"],
            diff: None,
            tampered: false,
        };
        let e = change_event(&c, Arc::from("h"));
        assert_eq!(&*e.location, "fim");
        assert_eq!(
            e.full_log,
            "File '/etc/nginx/nginx.conf' modified\nChanged attributes: size, perm\n\
             Size changed from '120' to '134'\nPermissions changed from '0644' to '0600'"
        );
        let j = change_json(&c);
        assert_eq!(j["changed"], json!(["size", "perm"]));
        assert_eq!(j["old"]["perm"], json!("0644"));
        assert!(j.get("path_escaped").is_none());
    }
}
