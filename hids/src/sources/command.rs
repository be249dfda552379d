//! Command output as a log source: a program and its arguments (never a shell) run every interval,
//! its whole standard output one event, as OSSEC's `full_command`: the event reads
//! `ossec: output: '<alias or command>':` followed by a newline and the output, so that rules can
//! compare one run's output with the last (e.g. `ss -tlnp` and a new listening port).

use std::io::{self, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::{Delivery, Position, SourceContext};
use crate::event::{Event, LineFlags};

/// How often a running command is checked for completion.
const POLL: Duration = Duration::from_millis(20);

/// What one run produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Output {
    pub text: String,
    pub truncated: bool,
    pub lossy: bool,
}

/// Runs `argv` without a shell, killing it after `timeout`; keeps at most `max` bytes of stdout.
pub fn run_command(argv: &[String], timeout: Duration, max: usize) -> Result<Output, String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out = std::thread::spawn(move || capture(stdout, max));
    let err = std::thread::spawn(move || capture(stderr, 4096));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(format!("waiting for {prog}: {e}")),
        }
    };
    let (bytes, truncated) = out.join().unwrap_or_default();
    let (errbytes, _) = err.join().unwrap_or_default();
    match status {
        None => {
            return Err(format!(
                "{prog} did not finish within {}s and was killed",
                timeout.as_secs()
            ))
        }
        Some(s) if !s.success() => {
            tracing::debug!(
                command = prog.as_str(),
                "exited ({s}): {}",
                crate::diag::escape_control(String::from_utf8_lossy(&errbytes).trim())
            );
        }
        Some(_) => {}
    }
    let mut bytes = bytes;
    while bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    let (text, lossy) = super::lines::to_text(&bytes);
    Ok(Output {
        text,
        truncated,
        lossy,
    })
}

/// Reads a pipe to its end, keeping the first `max` bytes (the rest is read and dropped so that the
/// program is not blocked on a full pipe).
fn capture<R: Read>(r: Option<R>, max: usize) -> (Vec<u8>, bool) {
    let Some(mut r) = r else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let _ = r.by_ref().take(max as u64).read_to_end(&mut kept);
    let dropped = io::copy(&mut r, &mut io::sink()).unwrap_or(0);
    (kept, dropped > 0)
}

/// The event text of one run, as OSSEC's full_command writes it.
pub fn full_log(location: &str, output: &str) -> String {
    format!("ossec: output: '{location}':\n{output}")
}

/// Runs the command every interval until the sources stop (once with `once`).
pub fn run(ctx: SourceContext) {
    let timeout = ctx.config.interval.max(Duration::from_secs(1));
    let mut last_error: Option<String> = None;
    loop {
        if ctx.stopping() {
            return;
        }
        let started = Instant::now();
        match run_command(&ctx.config.command, timeout, ctx.config.max_line) {
            Ok(out) => {
                if last_error.take().is_some() {
                    tracing::info!(location = %ctx.location, "command runs again");
                }
                let d = Delivery {
                    event: Event {
                        time: SystemTime::now(),
                        host: ctx.host.clone(),
                        location: ctx.location.clone(),
                        format: ctx.config.format,
                        full_log: full_log(&ctx.location, &out.text),
                        flags: LineFlags {
                            truncated: out.truncated,
                            lossy_utf8: out.lossy,
                        },
                        fim: None,
                    },
                    position: Position::None,
                };
                if !ctx.send(vec![d]) {
                    return;
                }
            }
            Err(e) => {
                if last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(location = %ctx.location, "{} (retrying every interval)", crate::diag::escape_control(&e));
                    last_error = Some(e);
                }
            }
        }
        if ctx.options.once {
            return;
        }
        while started.elapsed() < ctx.config.interval {
            if ctx.stopping() {
                return;
            }
            std::thread::sleep(
                (ctx.config.interval - started.elapsed()).min(Duration::from_millis(200)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn output_is_captured_without_a_shell() {
        let o = run_command(
            &argv(&["echo", "a;b", "$(id)"]),
            Duration::from_secs(10),
            1000,
        )
        .unwrap();
        assert_eq!(o.text, "a;b $(id)");
        assert_eq!(full_log("x", &o.text), "ossec: output: 'x':\na;b $(id)");
    }

    #[test]
    fn long_output_is_cut_and_hung_commands_killed() {
        let o = run_command(&argv(&["seq", "1", "100000"]), Duration::from_secs(10), 300).unwrap();
        assert!(o.truncated);
        assert!(o.text.len() <= 300 && o.text.starts_with("1\n2\n3\n"));
        let e = run_command(&argv(&["sleep", "5"]), Duration::from_millis(200), 10).unwrap_err();
        assert!(e.contains("killed"), "{e}");
        let e = run_command(&argv(&["/nonexistent/prog"]), Duration::from_secs(1), 10).unwrap_err();
        assert!(e.contains("cannot run"), "{e}");
    }
}
