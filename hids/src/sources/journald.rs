//! The systemd journal, read through `journalctl --output=json` (run without a shell), with the
//! journal cursor as the position.
//!
//! Each entry becomes the line rsyslog would have written for it in /var/log/auth.log or syslog
//! (`Nov 14 22:13:20 web1 sshd[123]: message`, control characters as `#ooo`), so that an entry
//! decodes exactly like the same line read from a file.

use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::{Delivery, Position, SourceContext};
use crate::config::StartAt;
use crate::event::{Event, LineFlags};

const BATCH_MAX: usize = 512;
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A journal entry (one JSON line) longer than this is skipped; journald's own limits are lower.
const ENTRY_MAX: usize = 16 << 20;
/// How often a following journalctl checks whether its source is to stop.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The program that reads the journal.
pub const JOURNALCTL: &str = "journalctl";

/// The arguments for `journalctl`: filters, the journal directory, and where to start.
pub fn journalctl_args(
    ctx_cfg: &crate::config::LogConfig,
    follow: bool,
    cursor: Option<&str>,
) -> Vec<String> {
    let mut a = vec![
        "--output=json".to_string(),
        "--all".to_string(),
        "--no-pager".to_string(),
        "--quiet".to_string(),
    ];
    if follow {
        a.push("--follow".into());
    }
    if let Some(d) = &ctx_cfg.journal_dir {
        a.push(format!("--directory={}", d.display()));
    }
    for u in &ctx_cfg.units {
        a.push(format!("--unit={u}"));
    }
    for i in &ctx_cfg.identifiers {
        a.push(format!("--identifier={i}"));
    }
    if let Some(c) = cursor {
        a.push(format!("--after-cursor={c}"));
    }
    // Always: with --follow, journalctl otherwise shows only the last 10 entries after the cursor.
    a.push("--lines=all".into());
    a
}

/// A field's value as text: journalctl writes strings, byte arrays for binary values, and arrays
/// of either for a field that occurs more than once (the first is taken).
fn field(entry: &Value, name: &str) -> Option<String> {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) if items.iter().all(|x| x.is_u64()) => {
                let bytes: Vec<u8> = items
                    .iter()
                    .filter_map(|x| x.as_u64())
                    .map(|b| b as u8)
                    .collect();
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            Value::Array(items) => items.first().and_then(text),
            _ => None,
        }
    }
    entry.get(name).and_then(text)
}

/// `Nov  4 22:13:20`: the timestamp of rsyslog's traditional file format, in local time.
pub fn syslog_time(micros: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    match crate::sys::local_time(micros.div_euclid(1_000_000)) {
        Some((_, mon, day, h, m, s)) => format!(
            "{} {:>2} {:02}:{:02}:{:02}",
            MONTHS[(mon as usize).clamp(1, 12) - 1],
            day,
            h,
            m,
            s
        ),
        None => "Jan  1 00:00:00".to_string(),
    }
}

/// Control characters as rsyslog writes them to files: `#` and three octal digits.
fn escape_like_rsyslog(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (c as u32) < 0x20 || c == '\u{7f}' {
            out.push_str(&format!("#{:03o}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The syslog line for one journal entry (None when it has no MESSAGE), and whether it was cut.
pub fn entry_to_line(entry: &Value, default_host: &str, max_line: usize) -> Option<(String, bool)> {
    let message = field(entry, "MESSAGE")?;
    let message = escape_like_rsyslog(message.trim_end_matches('\n'));
    let micros = field(entry, "__REALTIME_TIMESTAMP")
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0)
        });
    let host = field(entry, "_HOSTNAME")
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| default_host.to_string());
    let ident = field(entry, "SYSLOG_IDENTIFIER")
        .or_else(|| field(entry, "_COMM"))
        .unwrap_or_else(|| "unknown".to_string());
    let pid = field(entry, "SYSLOG_PID").or_else(|| field(entry, "_PID"));
    let mut line = format!(
        "{} {} {}",
        syslog_time(micros),
        escape_like_rsyslog(&host),
        escape_like_rsyslog(&ident)
    );
    if let Some(p) = pid {
        line.push('[');
        line.push_str(&escape_like_rsyslog(&p));
        line.push(']');
    }
    line.push_str(": ");
    line.push_str(&message);
    let cut = line.len() > max_line;
    if cut {
        let mut n = max_line;
        while !line.is_char_boundary(n) {
            n -= 1;
        }
        line.truncate(n);
    }
    Some((line, cut))
}

/// Reads the journal until the sources stop (or, with `once`, to its current end).
pub fn run(ctx: SourceContext, saved_cursor: Option<String>) {
    let mut cursor = saved_cursor;
    let mut backoff = BACKOFF_FIRST;
    if cursor.is_none() && ctx.config.start == StartAt::End {
        // First start at the end: remember where the end is now, so that a restart before any new
        // entry still reads what came meanwhile.
        match last_cursor(&ctx) {
            Ok(c) => {
                if let Some(c) = &c {
                    ctx.ledger.ack_cursor(&Arc::from(c.as_str()));
                }
                cursor = c;
            }
            Err(e) => {
                tracing::warn!(location = %ctx.location, "cannot read the journal: {e}");
            }
        }
    }
    loop {
        if ctx.stopping() {
            return;
        }
        let started = Instant::now();
        let result = follow(&ctx, &mut cursor);
        match result {
            Ok(()) if ctx.options.once => return,
            Ok(()) => {}
            Err(Stop) => return,
        }
        if ctx.options.once {
            return;
        }
        // journalctl ended: report why (once per distinct reason) and start it again.
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_FIRST;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

struct Stop;

fn spawn(ctx: &SourceContext, args: &[String]) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(JOURNALCTL);
    // A process group of its own: Ctrl-C in a terminal (or a signal to the agent's group)
    // reaches the agent alone, which stops journalctl itself once it has stopped reading;
    // journalctl dying first would be reported as a failure of the source. And it ends when the
    // source's thread does, should the process end without stopping it (`hids tail` on Ctrl-C).
    cmd.process_group(0);
    crate::sys::end_with_parent(&mut cmd);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .env_remove("SYSTEMD_LESS")
        .spawn()
        .inspect_err(|e| {
            tracing::debug!(location = %ctx.location, "cannot run {JOURNALCTL}: {e}");
        })
}

/// The cursor of the newest entry matching the filters, if any.
fn last_cursor(ctx: &SourceContext) -> Result<Option<String>, String> {
    let mut args = journalctl_args(&ctx.config, false, None);
    args.retain(|a| a != "--lines=all");
    args.push("--lines=1".into());
    let out = Command::new(JOURNALCTL)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {JOURNALCTL}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{JOURNALCTL} failed ({}): {}",
            out.status,
            crate::diag::escape_control(String::from_utf8_lossy(&out.stderr).trim())
        ));
    }
    Ok(out
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter_map(|v| field(&v, "__CURSOR"))
        .next_back())
}

/// Runs journalctl once, handing on entries until it ends.
fn follow(ctx: &SourceContext, cursor: &mut Option<String>) -> Result<(), Stop> {
    let args = journalctl_args(&ctx.config, !ctx.options.once, cursor.as_deref());
    match cursor.as_deref() {
        Some(c) => tracing::info!(
            location = %ctx.location,
            "reading the journal after cursor {}",
            crate::diag::escape_control(c)
        ),
        None => tracing::info!(location = %ctx.location, "reading the journal from its start"),
    }
    let mut child = match spawn(ctx, &args) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(location = %ctx.location, "cannot run {JOURNALCTL}: {e} (retrying)");
            return Ok(());
        }
    };
    let stderr = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = s.by_ref().take(64 << 10).read_to_end(&mut b);
            let _ = io::copy(&mut s, &mut io::sink());
            b
        })
    });
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(());
    };
    // `journalctl --follow` blocks while the journal is quiet: a thread ends it once the source
    // is asked to stop (the agent stops, or a reload removes the source).
    let child = Arc::new(Mutex::new(child));
    let reading = Arc::new(AtomicBool::new(true));
    let stopper = if ctx.options.once {
        None
    } else {
        let (stop, reading, child) = (ctx.stop.clone(), reading.clone(), child.clone());
        std::thread::Builder::new()
            .name("journalctl stop".into())
            .spawn(move || {
                while reading.load(Ordering::Relaxed) {
                    if stop.load(Ordering::Relaxed) {
                        let _ = child.lock().unwrap_or_else(|e| e.into_inner()).kill();
                        return;
                    }
                    std::thread::sleep(STOP_POLL);
                }
            })
            .ok()
    };
    let mut reader = BufReader::with_capacity(256 << 10, stdout);
    let mut line = Vec::new();
    let mut batch = Vec::new();
    let mut batch_bytes = 0usize;
    let mut bad = 0u64;
    let result = loop {
        line.clear();
        match (&mut reader)
            .take(ENTRY_MAX as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(location = %ctx.location, "reading {JOURNALCTL}: {e}");
                break Ok(());
            }
        }
        if line.last() != Some(&b'\n') && line.len() >= ENTRY_MAX {
            // Skip the rest of an oversized entry.
            let mut rest = Vec::new();
            let _ = reader.read_until(b'\n', &mut rest);
            bad += 1;
            continue;
        }
        let entry: Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(_) => {
                bad += 1;
                continue;
            }
        };
        let Some(c) = field(&entry, "__CURSOR") else {
            bad += 1;
            continue;
        };
        let c: Arc<str> = Arc::from(c.as_str());
        *cursor = Some(c.to_string());
        if let Some((full_log, truncated)) = entry_to_line(&entry, &ctx.host, ctx.config.max_line) {
            batch_bytes += full_log.len();
            batch.push(Delivery {
                event: Event {
                    time: SystemTime::now(),
                    host: ctx.host.clone(),
                    location: ctx.location.clone(),
                    format: ctx.config.format,
                    full_log,
                    flags: LineFlags {
                        truncated,
                        lossy_utf8: false,
                    },
                    fim: None,
                },
                position: Position::Cursor {
                    source: ctx.index,
                    cursor: c,
                },
            });
        } else {
            // No message: nothing to hand on, but the cursor moves past it once acknowledged
            // with the next entry.
        }
        let due = batch.len() >= BATCH_MAX
            || batch_bytes >= super::BATCH_MAX_BYTES
            || (reader.buffer().is_empty() && !batch.is_empty());
        if due {
            batch_bytes = 0;
            if !ctx.send(std::mem::take(&mut batch)) || ctx.stopping() {
                break Err(Stop);
            }
        }
    };
    reading.store(false, Ordering::Relaxed);
    if let Some(h) = stopper {
        let _ = h.join();
    }
    let mut child = child.lock().unwrap_or_else(|e| e.into_inner());
    if !batch.is_empty() && !ctx.send(batch) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Stop);
    }
    if bad > 0 {
        tracing::warn!(location = %ctx.location, "{bad} journal entries could not be read and were skipped");
    }
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait();
    let err = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    if ctx.stopping() {
        // Ended by the stop above: nothing to report.
        return Err(Stop);
    }
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!(
            location = %ctx.location,
            "{JOURNALCTL} exited ({s}): {}",
            crate::diag::escape_control(String::from_utf8_lossy(&err).trim())
        ),
        Err(e) => tracing::warn!(location = %ctx.location, "{JOURNALCTL}: {e}"),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_entry_becomes_its_auth_log_line() {
        let e: Value = serde_json::json!({
            "__CURSOR": "s=1;i=1",
            "__REALTIME_TIMESTAMP": "1700000000000000",
            "MESSAGE": "Accepted publickey for root from 10.0.0.1 port 5555 ssh2",
            "SYSLOG_IDENTIFIER": "sshd",
            "_PID": "123",
            "_HOSTNAME": "web1",
        });
        let (line, cut) = entry_to_line(&e, "h", 65536).unwrap();
        assert!(!cut);
        let ts = syslog_time(1_700_000_000_000_000);
        assert_eq!(
            line,
            format!(
                "{ts} web1 sshd[123]: Accepted publickey for root from 10.0.0.1 port 5555 ssh2"
            )
        );
        assert_eq!(ts.len(), 15);
    }

    #[test]
    fn binary_fields_control_chars_and_missing_parts() {
        let e: Value = serde_json::json!({
            "__REALTIME_TIMESTAMP": "1700000000000000",
            "MESSAGE": [104, 105, 10, 9, 255],
            "_COMM": "kernel",
        });
        let (line, _) = entry_to_line(&e, "myhost", 65536).unwrap();
        assert!(
            line.ends_with(" myhost kernel: hi#012#011\u{fffd}"),
            "{line}"
        );
        assert!(entry_to_line(&serde_json::json!({"_PID": "1"}), "h", 100).is_none());
        let long = serde_json::json!({"MESSAGE": "é".repeat(300), "SYSLOG_IDENTIFIER": "x"});
        let (line, cut) = entry_to_line(&long, "h", 256).unwrap();
        assert!(cut && line.len() <= 256);
    }

    #[test]
    fn arguments_follow_the_configuration() {
        let mut c = crate::config::LogConfig {
            path: None,
            format: crate::config::LogFormat::Journald,
            command: vec![],
            interval: Duration::from_secs(60),
            alias: None,
            start: StartAt::End,
            units: vec!["ssh.service".into()],
            identifiers: vec!["sudo".into()],
            journal_dir: Some("/j".into()),
            max_line: 1000,
            partial_line_wait: Duration::from_secs(5),
        };
        let a = journalctl_args(&c, true, Some("s=x"));
        assert!(a.contains(&"--follow".to_string()));
        assert!(a.contains(&"--directory=/j".to_string()));
        assert!(a.contains(&"--unit=ssh.service".to_string()));
        assert!(a.contains(&"--identifier=sudo".to_string()));
        assert!(a.contains(&"--after-cursor=s=x".to_string()));
        c.journal_dir = None;
        let a = journalctl_args(&c, false, None);
        assert!(!a
            .iter()
            .any(|x| x.starts_with("--directory") || x == "--follow"));
        assert!(a.contains(&"--lines=all".to_string()));
        assert!(journalctl_args(&c, true, Some("s=y")).contains(&"--lines=all".to_string()));
    }
}
