//! FIM changes decoded as OSSEC's syscheck decoder decodes them, so OSSEC's syscheck rules (and
//! local rules written for them) match our file integrity events.
//!
//! OSSEC gives a syscheck event one of its built-in decoders, of type `ossec`:
//! `syscheck_integrity_changed` (modified), `syscheck_new_entry` (added) or `syscheck_deleted`,
//! and a log whose first line names the file:
//! - `Integrity checksum changed for: '/etc/passwd'` then one line per changed attribute;
//! - `New file '/etc/x' added to the file system.`
//! - `File '/etc/x' was deleted. Unable to retrieve checksum.`
//!
//! We build that text from the structured [`FimChange`] (whatever the event's `full_log` says), so
//! `<match>/opt/api/bin/</match>` under `<if_sid>550</if_sid>` works as it does with OSSEC, and add
//! the fields Wazuh names for syscheck (`file`, `size_before`, `size_after`, ...) for `<field>` and
//! `$(file)`.

use std::sync::Arc;

use crate::event::{display_path, ChangeKind, Decoded, Event, FileAttrs, FimChange, Predecoded};

/// The decoder names FIM events take.
pub const DECODER_NAMES: [&str; 5] = [
    "syscheck_integrity_changed",
    "syscheck_integrity_changed_2nd",
    "syscheck_integrity_changed_3rd",
    "syscheck_new_entry",
    "syscheck_deleted",
];

/// The log OSSEC's syscheck decoder would show for a change (first line, then details).
pub fn ossec_log(c: &FimChange) -> String {
    let (path, _) = display_path(&c.path);
    match c.kind {
        ChangeKind::Added => format!("New file '{path}' added to the file system."),
        ChangeKind::Deleted => format!("File '{path}' was deleted. Unable to retrieve checksum."),
        ChangeKind::Modified => {
            let mut s = format!("Integrity checksum changed for: '{path}'");
            let (b, a) = (
                c.before.clone().unwrap_or_default(),
                c.after.clone().unwrap_or_default(),
            );
            let opt = |v: Option<String>| v.unwrap_or_default();
            for &name in &c.changed {
                let line = match name {
                    "size" => format!(
                        "Size changed from '{}' to '{}'",
                        opt(b.size.map(|x| x.to_string())),
                        opt(a.size.map(|x| x.to_string()))
                    ),
                    "perm" | "mode" => format!(
                        "Permissions changed from '{}' to '{}'",
                        opt(b.mode.map(|m| format!("{m:o}"))),
                        opt(a.mode.map(|m| format!("{m:o}")))
                    ),
                    "owner" | "uid" => format!(
                        "Ownership was '{}', now it is '{}'",
                        opt(b.uid.map(|x| x.to_string())),
                        opt(a.uid.map(|x| x.to_string()))
                    ),
                    "group" | "gid" => format!(
                        "Group ownership was '{}', now it is '{}'",
                        opt(b.gid.map(|x| x.to_string())),
                        opt(a.gid.map(|x| x.to_string()))
                    ),
                    "hash" => format!(
                        "Old blake3sum was: '{}'\nNew blake3sum is : '{}'",
                        opt(b.hash.clone()),
                        opt(a.hash.clone())
                    ),
                    other => format!("{other} changed"),
                };
                s.push('\n');
                s.push_str(&line);
            }
            if let Some(d) = &c.diff {
                s.push_str("\nWhat changed:\n");
                s.push_str(d);
            }
            s
        }
    }
}

/// Decodes a FIM event: its pre-decoded form (no header; the OSSEC-style log as the message) and
/// its decoded fields. `None` for events that are not FIM changes.
pub fn decode(event: &Event) -> Option<(Predecoded, Decoded)> {
    let c = event.fim.as_deref()?;
    let name = match c.kind {
        ChangeKind::Added => DECODER_NAMES[3],
        ChangeKind::Deleted => DECODER_NAMES[4],
        ChangeKind::Modified => DECODER_NAMES[0],
    };
    let mut fields: Vec<crate::event::DecodedField> = Vec::new();
    let mut add = |k: &str, v: String| fields.push((Arc::from(k), v.into()));
    add("file", display_path(&c.path).0);
    add("event", c.kind.as_str().to_string());
    if !c.changed.is_empty() {
        add("changed_attributes", c.changed.join(","));
    }
    let mut attrs = |suffix: &str, a: &Option<FileAttrs>| {
        let Some(a) = a else { return };
        if let Some(v) = a.size {
            add(&format!("size_{suffix}"), v.to_string());
        }
        if let Some(v) = a.mode {
            add(&format!("perm_{suffix}"), format!("{v:o}"));
        }
        if let Some(v) = a.uid {
            add(&format!("uid_{suffix}"), v.to_string());
        }
        if let Some(v) = a.gid {
            add(&format!("gid_{suffix}"), v.to_string());
        }
        if let Some(v) = &a.user {
            add(&format!("uname_{suffix}"), v.clone());
        }
        if let Some(v) = &a.group {
            add(&format!("gname_{suffix}"), v.clone());
        }
        if let Some(v) = &a.hash {
            add(&format!("blake3_{suffix}"), v.clone());
        }
    };
    attrs("before", &c.before);
    attrs("after", &c.after);
    let pre = Predecoded {
        message: ossec_log(c),
        ..Predecoded::default()
    };
    Some((
        pre,
        Decoded {
            decoder: Some(Arc::from(name)),
            parent: None,
            decoder_type: Some("ossec"),
            fields,
        },
    ))
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::event::{LineFlags, LogFormat};
    use std::path::PathBuf;

    pub(crate) fn fim_event(path: &str, kind: ChangeKind) -> Event {
        Event {
            time: std::time::SystemTime::now(),
            host: Arc::from("h"),
            location: Arc::from("fim"),
            format: LogFormat::Plain,
            full_log: format!("File '{path}' {}", kind.as_str()),
            flags: LineFlags::default(),
            fim: Some(Box::new(FimChange {
                path: PathBuf::from(path),
                kind,
                before: Some(FileAttrs {
                    size: Some(1),
                    hash: Some("aa".into()),
                    ..FileAttrs::default()
                }),
                after: Some(FileAttrs {
                    size: Some(2),
                    hash: Some("bb".into()),
                    ..FileAttrs::default()
                }),
                changed: vec!["size", "hash"],
                diff: None,
                tampered: false,
            })),
        }
    }

    #[test]
    fn decodes_like_ossec_syscheck() {
        let (pre, d) = decode(&fim_event("/opt/api/bin/api", ChangeKind::Modified)).unwrap();
        assert_eq!(d.decoder.as_deref(), Some("syscheck_integrity_changed"));
        assert!(pre
            .message
            .starts_with("Integrity checksum changed for: '/opt/api/bin/api'\n"));
        assert!(pre.message.contains("Size changed from '1' to '2'"));
        assert_eq!(d.get("file"), Some("/opt/api/bin/api"));
        assert_eq!(d.get("size_after"), Some("2"));
        let (pre, d) = decode(&fim_event("/etc/x", ChangeKind::Added)).unwrap();
        assert_eq!(d.decoder.as_deref(), Some("syscheck_new_entry"));
        assert_eq!(pre.message, "New file '/etc/x' added to the file system.");
        let (_, d) = decode(&fim_event("/etc/x", ChangeKind::Deleted)).unwrap();
        assert_eq!(d.decoder.as_deref(), Some("syscheck_deleted"));
    }
}
