//! Running one response command: no shell, stdin from /dev/null, a clean environment, its own
//! process group (killed whole on timeout), and a bounded copy of what it printed.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How much of each of stdout and stderr is kept for the log; the rest is read and dropped.
pub const OUTPUT_KEEP: usize = 4096;

/// The environment a command gets: nothing of the agent's but a fixed PATH and the C locale (so
/// that the messages we look for are in English).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a command may still run once the agent is stopping.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What running a command gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// True when it ran and exited with status 0.
    pub ok: bool,
    /// "exit status 0", "exit status 4", "killed by signal 9", "timed out after 30s", or why it
    /// could not start.
    pub status: String,
    /// stdout then stderr, each cut at [`OUTPUT_KEEP`] bytes, lossy UTF-8, trimmed.
    pub output: String,
}

/// Runs `argv` (program first) and waits at most `timeout` (less when `stop` is set meanwhile).
pub fn run(argv: &[String], timeout: Duration, stop: &AtomicBool) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome {
            ok: false,
            status: "empty command".into(),
            output: String::new(),
        };
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("LC_ALL", "C")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                ok: false,
                status: format!("cannot start {program}: {e}"),
                output: String::new(),
            }
        }
    };
    // Each pipe is drained by a thread that keeps the first bytes; a child that fills a pipe
    // would otherwise block forever.
    let (otx, orx) = mpsc::channel::<(u8, Vec<u8>)>();
    for (n, pipe) in [
        (
            0u8,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            1u8,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let otx = otx.clone();
        let spawned = std::thread::Builder::new()
            .name("response output".into())
            .spawn(move || {
                let mut kept = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => {
                            let room = OUTPUT_KEEP.saturating_sub(kept.len());
                            kept.extend_from_slice(&buf[..k.min(room)]);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = otx.send((n, kept));
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot read a response command's output: {e}");
        }
    }
    drop(otx);
    let started = Instant::now();
    let mut deadline = started + timeout;
    let mut stop_seen = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) => {}
            Err(e) => break Err(format!("cannot wait for {program}: {e}")),
        }
        if !stop_seen && stop.load(Ordering::Relaxed) {
            stop_seen = true;
            deadline = deadline.min(Instant::now() + STOP_GRACE);
        }
        if Instant::now() >= deadline {
            let _ = crate::sys::kill_process_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
            break Err(format!(
                "timed out after {}s and was killed",
                started.elapsed().as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // A grandchild that kept a pipe open must not hold us: wait a little for the readers.
    let mut parts: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let until = Instant::now() + Duration::from_secs(1);
    while let Ok((n, bytes)) = orx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        parts[usize::from(n)] = bytes;
    }
    let output = parts
        .iter()
        .map(|p| String::from_utf8_lossy(p).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    match status {
        Ok(s) => Outcome {
            ok: s.success(),
            status: match (s.code(), s.signal()) {
                (Some(c), _) => format!("exit status {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => s.to_string(),
            },
            output,
        },
        Err(status) => Outcome {
            ok: false,
            status,
            output,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn runs_without_shell_and_captures_output() {
        let stop = AtomicBool::new(false);
        // A shell metacharacter in an argument is just text.
        let o = run(
            &argv(&["/bin/echo", "1.2.3.4;touch", "$(id)"]),
            Duration::from_secs(10),
            &stop,
        );
        assert!(o.ok, "{o:?}");
        assert_eq!(o.output, "1.2.3.4;touch $(id)");
        assert_eq!(o.status, "exit status 0");
    }

    #[test]
    fn stdin_is_null_and_environment_clean() {
        let stop = AtomicBool::new(false);
        let o = run(
            &argv(&["/bin/sh", "-c", "cat; env | sort"]),
            Duration::from_secs(10),
            &stop,
        );
        assert!(o.ok, "{o:?}");
        assert!(!o.output.contains("CARGO"), "{}", o.output);
        assert!(o.output.contains("LC_ALL=C"));
    }

    #[test]
    fn failure_timeout_and_missing_program() {
        let stop = AtomicBool::new(false);
        let o = run(
            &argv(&["/bin/sh", "-c", "echo nope >&2; exit 3"]),
            Duration::from_secs(10),
            &stop,
        );
        assert!(!o.ok);
        assert_eq!(o.status, "exit status 3");
        assert_eq!(o.output, "nope");
        // The group is killed: the background sleep holding the pipe does not keep us waiting.
        let o = run(
            &argv(&["/bin/sh", "-c", "sleep 100 & sleep 100"]),
            Duration::from_millis(300),
            &stop,
        );
        assert!(!o.ok);
        assert!(o.status.starts_with("timed out"), "{o:?}");
        let o = run(&argv(&["/nonexistent/prog"]), Duration::from_secs(1), &stop);
        assert!(!o.ok);
        assert!(o.status.starts_with("cannot start"), "{o:?}");
    }

    #[test]
    fn output_is_bounded() {
        let stop = AtomicBool::new(false);
        let o = run(
            &argv(&["/bin/sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x"]),
            Duration::from_secs(30),
            &stop,
        );
        assert!(o.ok, "{}", o.status);
        assert_eq!(o.output.len(), OUTPUT_KEEP);
    }
}
