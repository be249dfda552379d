//! `hids fim init|check|list|show`: the library side of the commands, printing to the given
//! writers. Each returns the exit code: 0 done (no change), 1 changes found, 2 for errors (as
//! `Err`) or a path that is not in the baseline.

use std::io::Write;

use serde_json::json;

use super::baseline::{key_of, path_of_key, Baseline, Row};
use super::report::{attr_text, attrs_json, change_json, format_unix, full_log};
use super::{scan, FimError, Mode, ScanOptions, Summary};
use crate::config::Config;
use crate::event::{display_path, path_from_display};

/// Opens an existing baseline: a missing key with no baseline is "run init", not "tampered".
fn open_existing(cfg: &Config) -> Result<Baseline, FimError> {
    let dir = &cfg.agent.state_dir;
    match Baseline::open(dir, false) {
        Err(FimError::NoKey { path }) => {
            let st = crate::state::State::open(dir)?;
            let initialized: bool = st
                .conn
                .query_row(
                    "SELECT count(*) FROM fim_meta WHERE key = 'initialized'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n > 0)
                .unwrap_or(false);
            if initialized {
                Err(FimError::NoKey { path })
            } else {
                Err(FimError::NoBaseline {
                    path: st.db_path.clone(),
                })
            }
        }
        other => other,
    }
}

fn print_warnings(s: &Summary, err: &mut dyn Write) {
    for w in &s.warnings {
        let _ = writeln!(err, "hids: warning: {}", crate::diag::escape_control(w));
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// `hids fim init`: records a new baseline, of the paths the agent scans (the configured ones
/// and the agent's own files), so that the agent and this command agree on what is there.
pub fn init(
    cfg: &Config,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, FimError> {
    let (cfg, _) = crate::agent::protect::with_own_files(cfg);
    let cfg = &cfg;
    let mut b = Baseline::open(&cfg.agent.state_dir, true)?;
    let s = scan(
        &mut b,
        &cfg.fim,
        Mode::Init,
        &ScanOptions::default(),
        &mut |_| {},
    )?;
    print_warnings(&s, err);
    if json {
        let _ = writeln!(out, "{}", serde_json::to_string(&s).unwrap_or_default());
    } else {
        let _ = writeln!(
            out,
            "baseline recorded in {}: {} entries ({} files, {} directories, {} symlinks, {} other); \
             {} files hashed ({}) in {:.2} s{}",
            cfg.agent.state_dir.display(),
            s.entries,
            s.files,
            s.directories,
            s.symlinks,
            s.other,
            s.hashed,
            mib(s.hashed_bytes),
            s.seconds,
            if s.denied > 0 {
                format!("; {} unreadable", s.denied)
            } else {
                String::new()
            }
        );
    }
    Ok(0)
}

/// `hids fim check`: compares, reports, updates, over the same paths as the agent (see
/// [`init`]). Exit 1 when something changed.
pub fn check(
    cfg: &Config,
    json: bool,
    full: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, FimError> {
    let (cfg, _) = crate::agent::protect::with_own_files(cfg);
    let cfg = &cfg;
    let mut b = open_existing(cfg)?;
    let opts = ScanOptions {
        full,
        ..Default::default()
    };
    let s = scan(&mut b, &cfg.fim, Mode::Check, &opts, &mut |c| {
        if json {
            let _ = writeln!(out, "{}", change_json(c));
        } else {
            let _ = writeln!(out, "{}\n", full_log(c));
        }
    })?;
    print_warnings(&s, err);
    if !json {
        let _ = writeln!(
            out,
            "{} added, {} modified, {} deleted{}; {} entries checked, {} files hashed ({}) in {:.2} s",
            s.added,
            s.modified,
            s.deleted,
            if s.tampered > 0 {
                format!(" ({} baseline entries TAMPERED)", s.tampered)
            } else {
                String::new()
            },
            s.entries,
            s.hashed,
            mib(s.hashed_bytes),
            s.seconds
        );
    }
    Ok(if s.changes() > 0 { 1 } else { 0 })
}

fn prefix_key(prefix: &str) -> Option<Vec<u8>> {
    path_from_display(prefix).map(|p| key_of(&p))
}

fn list_line(r: &Row) -> String {
    let a = &r.attrs;
    let (path, _) = display_path(&r.path());
    let hash = a
        .hash
        .as_deref()
        .map(|h| h.get(..16).unwrap_or(h).to_string())
        .unwrap_or_else(|| "-".into());
    let mut line = format!(
        "{:<9} {:>4} {:>8}:{:<8} {:>12} {:<16} {}",
        attr_text(a, "type"),
        attr_text(a, "perm"),
        a.user
            .clone()
            .or_else(|| a.uid.map(|u| u.to_string()))
            .unwrap_or_else(|| "-".into()),
        a.group
            .clone()
            .or_else(|| a.gid.map(|u| u.to_string()))
            .unwrap_or_else(|| "-".into()),
        attr_text(a, "size"),
        hash,
        crate::diag::escape_control(&path)
    );
    if let Some(t) = &a.link_target {
        line.push_str(&format!(" -> {}", crate::diag::escape_control(t)));
    }
    if !r.mac_ok {
        line.push_str("  [TAMPERED]");
    }
    line
}

fn row_json(r: &Row) -> serde_json::Value {
    let (path, escaped) = super::report::json_path(&r.path());
    let mut v = json!({
        "path": path,
        "attrs": attrs_json(&r.attrs),
        "recorded": format_unix(r.since),
        "integrity_ok": r.mac_ok,
    });
    if escaped {
        v["path_escaped"] = json!(true);
    }
    v
}

/// `hids fim list [PREFIX]`: the baseline's entries, under PREFIX if given.
pub fn list(
    cfg: &Config,
    prefix: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, FimError> {
    let b = open_existing(cfg)?;
    let key = match prefix {
        None => Vec::new(),
        Some(p) => match prefix_key(p) {
            Some(k) => k,
            None => return Ok(2),
        },
    };
    let mut ok = true;
    b.for_each(&key, |r| {
        let line = if json {
            row_json(r).to_string()
        } else {
            list_line(r)
        };
        ok = writeln!(out, "{line}").is_ok();
        ok
    })?;
    Ok(0)
}

/// `hids fim show PATH`: one entry, every attribute, its recorded changes.
pub fn show(
    cfg: &Config,
    path: &str,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, FimError> {
    let b = open_existing(cfg)?;
    let Some(key) = prefix_key(path) else {
        let _ = writeln!(err, "hids: {path:?}: not a valid escaped path");
        return Ok(2);
    };
    let Some(row) = b.get(&key)? else {
        let _ = writeln!(
            err,
            "hids: {}: not in the baseline",
            display_path(&path_of_key(&key)).0
        );
        return Ok(2);
    };
    let history = b.history(&key)?;
    let has_copy = b.content(&key)?.is_some();
    if json {
        let mut v = row_json(&row);
        v["stored_copy"] = json!(has_copy);
        v["changes"] = serde_json::Value::Array(
            history
                .iter()
                .map(|(t, _, rec)| {
                    let mut r: serde_json::Value =
                        serde_json::from_str(rec).unwrap_or(serde_json::Value::Null);
                    if r.is_object() {
                        r["time"] = json!(format_unix(*t));
                    }
                    r
                })
                .collect(),
        );
        let _ = writeln!(out, "{v}");
        return Ok(0);
    }
    let a = &row.attrs;
    let (shown, escaped) = display_path(&row.path());
    let _ = writeln!(
        out,
        "path:        {}{}",
        crate::diag::escape_control(&shown),
        if escaped {
            "  (not UTF-8: escaped)"
        } else {
            ""
        }
    );
    for (label, name) in [
        ("type", "type"),
        ("size", "size"),
        ("permissions", "perm"),
        ("owner", "owner"),
        ("group", "group"),
        ("inode", "inode"),
        ("device", "device"),
        ("mtime", "mtime"),
        ("ctime", "ctime"),
        ("blake3", "hash"),
        ("link target", "link"),
    ] {
        let v = attr_text(a, name);
        if v != "-" {
            let _ = writeln!(
                out,
                "{:<12} {}",
                format!("{label}:"),
                crate::diag::escape_control(&v)
            );
        }
    }
    if let Some(why) = &a.hash_skipped {
        let _ = writeln!(out, "not hashed:  {why}");
    }
    let _ = writeln!(out, "recorded:    {}", format_unix(row.since));
    let _ = writeln!(
        out,
        "integrity:   {}",
        if row.mac_ok {
            "ok"
        } else {
            "FAILED: this entry was altered outside hids (baseline tampered)"
        }
    );
    let _ = writeln!(
        out,
        "stored copy: {}",
        if has_copy { "yes (for diffs)" } else { "no" }
    );
    if history.is_empty() {
        let _ = writeln!(out, "changes:     none recorded");
    } else {
        let _ = writeln!(out, "changes:");
        for (t, kind, rec) in &history {
            let changed = serde_json::from_str::<serde_json::Value>(rec)
                .ok()
                .and_then(|v| {
                    v["changed"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}  {kind}{}",
                format_unix(*t),
                if changed.is_empty() {
                    String::new()
                } else {
                    format!(": {changed}")
                }
            );
        }
    }
    Ok(0)
}
