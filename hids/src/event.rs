//! The contracts between pipeline stages: what a source hands on ([`Event`], with a [`FimChange`]
//! for file integrity), what the pre-decoder and decoders add, and what the rules raise ([`Alert`]).
//!
//! Every stage depends on these types and its own helpers only (architecture.md).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

/// How a source's text is to be read; also selects pre-decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Syslog,
    Json,
    Nginx,
    Apache,
    Audit,
    Plain,
    Journald,
    Command,
}

impl LogFormat {
    pub const NAMES: [&'static str; 8] = [
        "syslog", "json", "nginx", "apache", "audit", "plain", "journald", "command",
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "syslog" => LogFormat::Syslog,
            "json" => LogFormat::Json,
            "nginx" => LogFormat::Nginx,
            "apache" => LogFormat::Apache,
            "audit" => LogFormat::Audit,
            "plain" => LogFormat::Plain,
            "journald" => LogFormat::Journald,
            "command" => LogFormat::Command,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Marks on a line that a source had to alter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LineFlags {
    /// The line was longer than the maximum and was cut.
    pub truncated: bool,
    /// The line was not valid UTF-8; invalid bytes were replaced with U+FFFD.
    pub lossy_utf8: bool,
}

/// What a source read: one log entry, one command output, or one file change.
#[derive(Debug, Clone)]
pub struct Event {
    /// When the source read it.
    pub time: SystemTime,
    /// The agent's host name.
    pub host: Arc<str>,
    /// The file path, `journald`, `fim`, or a command's alias: OSSEC's "location".
    pub location: Arc<str>,
    pub format: LogFormat,
    /// The text as OSSEC would show it.
    pub full_log: String,
    pub flags: LineFlags,
    /// For file integrity events, the structured change.
    pub fim: Option<Box<FimChange>>,
}

/// The type of a file system entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    BlockDevice,
    CharDevice,
    Unknown,
}

impl FileType {
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::File => "file",
            FileType::Directory => "directory",
            FileType::Symlink => "symlink",
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
            FileType::BlockDevice => "block-device",
            FileType::CharDevice => "char-device",
            FileType::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> FileType {
        match s {
            "file" => FileType::File,
            "directory" => FileType::Directory,
            "symlink" => FileType::Symlink,
            "fifo" => FileType::Fifo,
            "socket" => FileType::Socket,
            "block-device" => FileType::BlockDevice,
            "char-device" => FileType::CharDevice,
            _ => FileType::Unknown,
        }
    }
}

/// The recorded attributes of one path. Attributes not checked for its path are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct FileAttrs {
    pub file_type: Option<FileType>,
    pub size: Option<u64>,
    /// Permission bits and set-id/sticky bits (mode & 0o7777).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub inode: Option<u64>,
    pub device: Option<u64>,
    /// Nanoseconds since the epoch.
    pub mtime: Option<i64>,
    pub ctime: Option<i64>,
    /// BLAKE3, lower-case hex. `None` for non-files, or when not hashed (see `hash_skipped`).
    pub hash: Option<String>,
    /// Why a file has no hash, when it should have had one ("larger than max_hashed_size" ...).
    pub hash_skipped: Option<String>,
    /// A symlink's target, escaped as [`display_path`] does.
    pub link_target: Option<String>,
}

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
        }
    }
}

/// One change found by a FIM scan or watch.
#[derive(Debug, Clone)]
pub struct FimChange {
    /// The path as bytes (Linux paths need not be UTF-8).
    pub path: PathBuf,
    pub kind: ChangeKind,
    pub before: Option<FileAttrs>,
    pub after: Option<FileAttrs>,
    /// The names of the attributes that differ (for `Modified`).
    pub changed: Vec<&'static str>,
    /// A unified diff for text files with `report_changes`, or a note such as "binary file changed".
    pub diff: Option<String>,
    /// The baseline row for this path failed its integrity check.
    pub tampered: bool,
}

/// The syslog header split off by the pre-decoder, where the format has one (OSSEC's phase 1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Predecoded {
    /// The header's parts are short: kept inline (see [`FieldValue`]).
    pub timestamp: Option<FieldValue>,
    pub hostname: Option<FieldValue>,
    pub program_name: Option<FieldValue>,
    pub pid: Option<FieldValue>,
    /// What follows the header (the whole line when there is none): what decoders and rules see.
    pub message: String,
}

/// What the decoders found (OSSEC's phase 2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Decoded {
    /// The matching decoder's name as OSSEC reports it (the parent's, unless `use_own_name`).
    pub decoder: Option<Arc<str>>,
    /// The root decoder of the matching tree, when the match was a child.
    pub parent: Option<Arc<str>>,
    /// The matching decoder's OSSEC `type` (syslog, firewall, ids, web-log, squid, windows,
    /// host-information, ossec): what rules' `<category>` compares with.
    pub decoder_type: Option<&'static str>,
    /// Fields in the order found: OSSEC's static fields under their OSSEC names (`srcip`, `dstuser`,
    /// `url`, ...) and dynamic or JSON fields under theirs (nested JSON keys as dotted names).
    pub fields: Vec<DecodedField>,
}

/// A decoded field: its name (shared with the decoder that names it) and its value.
pub type DecodedField = (Arc<str>, FieldValue);

/// A decoded field's value. Values of up to 24 bytes (addresses, ports, user names, actions,
/// status codes: most of them) are kept inline, so a decoded field costs no allocation of its own.
pub type FieldValue = compact_str::CompactString;

impl Decoded {
    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The `options` of a rule that outputs honour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AlertOptions {
    pub no_email_alert: bool,
    pub alert_by_email: bool,
    pub no_log: bool,
    pub no_full_log: bool,
}

/// The rule that raised an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    pub id: u32,
    pub level: u8,
    /// With `$(field)` expanded.
    pub description: Arc<str>,
    /// The rule's own lists, shared rather than copied per alert.
    pub groups: Arc<[String]>,
    pub mitre: Arc<[String]>,
    /// How many times this rule has fired since the agent started (OSSEC's firedtimes).
    pub firedtimes: u64,
    pub options: AlertOptions,
    pub info: Arc<[String]>,
}

/// What the rules raise (OSSEC's phase 3) and outputs deliver.
#[derive(Debug, Clone)]
pub struct Alert {
    pub time: SystemTime,
    pub rule: RuleInfo,
    pub event: Event,
    pub predecoded: Predecoded,
    pub decoded: Decoded,
    /// For correlation rules, the full_log of the earlier events that led to this alert.
    pub related: Vec<String>,
}

impl Alert {
    /// An alert raised by hids itself (about FIM, active response...), not by a rule: `text` is
    /// both its full log and its message; the fields, if any, are the caller's to add.
    pub fn internal(
        id: u32,
        level: u8,
        description: String,
        groups: &[&str],
        host: Arc<str>,
        location: &str,
        text: String,
    ) -> Alert {
        let now = SystemTime::now();
        Alert {
            time: now,
            rule: RuleInfo {
                id,
                level,
                description: description.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                mitre: Arc::from([]),
                firedtimes: 1,
                options: AlertOptions::default(),
                info: Arc::from([]),
            },
            event: Event {
                time: now,
                host,
                location: Arc::from(location),
                format: LogFormat::Plain,
                full_log: text.clone(),
                flags: LineFlags::default(),
                fim: None,
            },
            predecoded: Predecoded {
                message: text,
                ..Default::default()
            },
            decoded: Decoded::default(),
            related: Vec::new(),
        }
    }
}

/// A path shown as text without losing information: valid UTF-8 is shown as is; each byte that is not
/// part of valid UTF-8 is written `\xNN`, and a backslash as `\\`. The second value says whether
/// escaping was needed for invalid bytes.
pub fn display_path(path: &std::path::Path) -> (String, bool) {
    escape_bytes(path.as_os_str().as_bytes())
}

/// See [`display_path`].
pub fn escape_bytes(bytes: &[u8]) -> (String, bool) {
    let mut out = String::with_capacity(bytes.len());
    let mut lossy = false;
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(&s.replace('\\', "\\\\"));
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(&String::from_utf8_lossy(good).replace('\\', "\\\\"));
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                lossy = true;
                rest = &bad[n..];
            }
        }
    }
    (out, lossy)
}

/// The inverse of [`escape_bytes`].
pub fn unescape_bytes(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            match b.get(i + 1) {
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x') => {
                    let hex = s.get(i + 2..i + 4)?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 4;
                }
                _ => return None,
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The inverse of [`display_path`].
pub fn path_from_display(s: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    unescape_bytes(s).map(|b| PathBuf::from(OsString::from_vec(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_losslessly() {
        use std::os::unix::ffi::OsStringExt;
        for raw in [
            &b"/etc/x"[..],
            b"/tmp/\xff\xfeok",
            b"/a\\b",
            b"/\xe2\x82",
            b"caf\xc3\xa9",
        ] {
            let p = PathBuf::from(OsString::from_vec(raw.to_vec()));
            let (shown, lossy) = display_path(&p);
            assert_eq!(lossy, std::str::from_utf8(raw).is_err(), "{shown}");
            assert_eq!(path_from_display(&shown).unwrap(), p);
        }
        assert_eq!(
            display_path(std::path::Path::new("/tmp/\u{e9}")).0,
            "/tmp/\u{e9}"
        );
    }
}
