//! Log collection through `hids tail`, the real binary: rotation of every kind while lines are
//! written, restarts after `kill -9`, globs, awkward lines, journald files, command output.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// Generous: the machine may be busy building.
const WAIT: Duration = Duration::from_secs(60);

/// A running `hids tail` and the events it printed so far.
struct Tail {
    child: Child,
    rx: Receiver<Value>,
    stderr: Option<std::thread::JoinHandle<()>>,
    diag: Arc<Mutex<String>>,
    pub events: Vec<Value>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        // Never leave a follower running behind a failed test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tail {
    fn start(env: &Env) -> Tail {
        Tail::start_with(env, &[])
    }

    fn start_with(env: &Env, args: &[&str]) -> Tail {
        let mut c = env.cmd();
        c.arg("tail").args(args);
        Tail::spawn(c)
    }

    fn spawn(mut cmd: std::process::Command) -> Tail {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        // Bounded: a test that stops reading makes `hids tail` wait, as a slow pipeline would.
        let (tx, rx) = mpsc::sync_channel(1024);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                // A line cut by `kill -9` is not JSON; it shows as a string (and fails tests that
                // expect every line whole).
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let diag = Arc::new(Mutex::new(String::new()));
        let d = diag.clone();
        let stderr = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut d = d.lock().unwrap();
                d.push_str(&line);
                d.push('\n');
            }
        });
        Tail {
            child,
            rx,
            stderr: Some(stderr),
            diag,
            events: Vec::new(),
        }
    }

    /// Waits until an event for which `pred` holds has been printed (looking at each event once).
    fn wait_until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) {
        if self.events.iter().any(&pred) {
            return;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(v) => {
                    let hit = pred(&v);
                    self.events.push(v);
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(e) => panic!(
                    "waiting for {what}: {e:?}; got {} events, last: {:?}",
                    self.events.len(),
                    self.events.last()
                ),
            }
        }
    }

    /// Waits until the diagnostics (stderr) say `text` `times` times.
    fn wait_diag(&mut self, text: &str, times: usize) {
        let deadline = Instant::now() + WAIT;
        while self.diag.lock().unwrap().matches(text).count() < times {
            assert!(
                Instant::now() < deadline,
                "waiting for {text:?} on stderr: {}",
                self.diag.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts and waits until `files` files are followed.
    fn start_following(env: &Env, files: usize) -> Tail {
        let mut t = Tail::start(env);
        t.wait_diag("following log file", files);
        t
    }

    /// Waits until `n` events have been printed.
    fn wait_count(&mut self, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.events.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => self.events.push(v),
                Err(e) => panic!("waiting for {n} events: {e:?}; got {}", self.events.len()),
            }
        }
    }

    /// Waits until a line with this text was printed.
    fn wait_for_line(&mut self, text: &str) {
        self.wait_until(text, |e| e["full_log"] == text);
    }

    /// Collects for a moment more (to see lines that should not come).
    fn settle(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if let Ok(v) = self.rx.recv_timeout(left) {
                self.events.push(v);
            }
        }
    }

    fn logs_of(&self, location: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["location"] == location)
            .map(|e| e["full_log"].as_str().unwrap().to_string())
            .collect()
    }

    /// `kill -9`, then everything it had already written to the pipe.
    fn kill9(mut self) -> Vec<Value> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        while let Ok(v) = self.rx.recv_timeout(Duration::from_secs(5)) {
            self.events.push(v);
        }
        std::mem::take(&mut self.events)
    }

    /// Stops it and returns its diagnostics.
    fn stop(mut self) -> (Vec<Value>, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(v) = self.rx.recv_timeout(Duration::from_millis(500)) {
            self.events.push(v);
        }
        if let Some(h) = self.stderr.take() {
            h.join().unwrap();
        }
        let err = self.diag.lock().unwrap().clone();
        (std::mem::take(&mut self.events), err)
    }
}

fn numbered(i: usize) -> String {
    format!("line {i:07} of the numbered test log")
}

fn append(path: &Path, from: usize, to: usize) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut s = String::new();
    for i in from..to {
        s.push_str(&numbered(i));
        s.push('\n');
    }
    f.write_all(s.as_bytes()).unwrap();
}

/// Appends through a file opened for writing whatever its mode (root may, the owner may not).
fn append_text_as_is(path: &Path, text: &str) {
    let mode = fs::metadata(path).unwrap().permissions();
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    append_text(path, text);
    fs::set_permissions(path, mode).unwrap();
}

fn append_text(path: &Path, text: &str) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn assert_numbered(lines: &[String], n: usize) {
    let expected: Vec<String> = (0..n).map(numbered).collect();
    if lines != expected {
        let first_bad = lines
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(lines.len().min(n));
        panic!(
            "got {} lines, expected {n}; first difference at {first_bad}: {:?} vs {:?}",
            lines.len(),
            lines.get(first_bad),
            expected.get(first_bad)
        );
    }
}

fn file_source(env: &Env, path: &Path, extra: &str) {
    env.config(&format!(
        "[[logs]]\npath = \"{}\"\nformat = \"syslog\"\nstart = \"beginning\"\n{extra}",
        path.display()
    ));
}

/// Writes numbered lines in bursts, rotating the file between bursts with `rotate`; every line
/// must come once, in order.
fn rotation_case(rotate: impl Fn(&Path, usize, &mut usize), wait_for_catch_up: bool) {
    rotation_case_with(&[], &rotate, wait_for_catch_up);
}

fn rotation_case_with(
    args: &[&str],
    rotate: &dyn Fn(&Path, usize, &mut usize),
    wait_for_catch_up: bool,
) {
    let env = Env::new();
    let log = env.path().join("app.log");
    append(&log, 0, 100);
    file_source(&env, &log, "");
    let mut tail = Tail::start_with(&env, args);
    tail.wait_diag("following log file", 1);
    let loc = log.display().to_string();
    let mut n = 100;
    for round in 0..6 {
        // Writing while the tail reads.
        for _ in 0..5 {
            append(&log, n, n + 200);
            n += 200;
        }
        if wait_for_catch_up {
            tail.wait_for_line(&numbered(n - 1));
        }
        rotate(&log, round, &mut n);
        // The first lines of the new file, written right away.
        append(&log, n, n + 50);
        n += 50;
        // The next rotation may only come once the new file was seen (else it is a file that
        // lived and vanished unseen, which no tail can read).
        tail.wait_for_line(&numbered(n - 50));
    }
    append(&log, n, n + 10);
    n += 10;
    tail.wait_for_line(&numbered(n - 1));
    tail.settle(Duration::from_millis(1500));
    let (events, stderr) = tail.stop();
    let lines: Vec<String> = events
        .iter()
        .filter(|e| e["location"] == loc.as_str())
        .map(|e| e["full_log"].as_str().unwrap().to_string())
        .collect();
    assert_numbered(&lines, n);
    assert!(!stderr.contains("WARN"), "{stderr}");
}

#[test]
fn rotation_by_rename_delivers_every_line_once_in_order() {
    rotation_case(
        |log, round, _| {
            fs::rename(log, log.with_extension(format!("log.{round}"))).unwrap();
            File::create(log).unwrap();
        },
        false,
    );
}

#[test]
fn rotation_by_rename_is_followed_by_polling_too() {
    rotation_case_with(
        &["--poll"],
        &|log, round, _| {
            fs::rename(log, log.with_extension(format!("log.{round}"))).unwrap();
            File::create(log).unwrap();
        },
        false,
    );
}

#[test]
fn unreadable_file_is_reported_once_and_read_once_readable() {
    // Run as nobody so that permissions bite even when the tests run as root.
    let env = Env::new();
    let log = env.path().join("secret.log");
    fs::write(&log, "").unwrap();
    fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let state = env.state_dir();
    fs::create_dir(&state).unwrap();
    file_source(&env, &log, "");
    let is_root =
        stdout(&std::process::Command::new("id").arg("-u").output().unwrap()).trim() == "0";
    if is_root {
        for p in [env.path(), &state, &log, &env.path().join("config.toml")] {
            std::process::Command::new("chown")
                .args(["65534:65534"])
                .arg(p)
                .status()
                .unwrap();
        }
        fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    } else {
        fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    }
    let mut cmd = if is_root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_hids"));
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_hids"))
    };
    cmd.env_remove("HIDS_CONFIG")
        .arg("--config")
        .arg(env.path().join("config.toml"))
        .arg("tail");
    let mut tail = Tail::spawn(cmd);
    tail.wait_diag("Permission denied", 1);
    // Retried with backoff (1 s, 2 s, 4 s ...) but reported once.
    std::thread::sleep(Duration::from_secs(4));
    append_text_as_is(&log, "written while unreadable\n");
    fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    tail.wait_for_line("written while unreadable");
    let (_, err) = tail.stop();
    assert_eq!(err.matches("cannot follow log file").count(), 1, "{err}");
    assert!(err.contains("readable again"), "{err}");
}

#[test]
fn rotation_by_delete_and_recreate_delivers_every_line_once_in_order() {
    rotation_case(
        |log, _, _| {
            fs::remove_file(log).unwrap();
        },
        false,
    );
}

#[test]
fn rotation_by_copytruncate_delivers_every_line_once_in_order() {
    // copytruncate loses what is written between the copy and the truncation, and what the tail
    // had not read before it: the writer here waits until the tail caught up, as logrotate's
    // copytruncate needs; what is tested is that reading restarts at 0 and skips nothing after.
    rotation_case(
        |log, round, n| {
            fs::copy(log, log.with_extension(format!("log.{round}"))).unwrap();
            OpenOptions::new()
                .write(true)
                .open(log)
                .unwrap()
                .set_len(0)
                .unwrap();
            if round % 2 == 1 {
                // Grow past the old offset at once: only the changed first bytes tell.
                append(log, *n, *n + 400);
                *n += 400;
            }
        },
        true,
    );
}

#[test]
fn copytruncate_growing_past_the_old_offset_is_noticed_by_its_head() {
    let env = Env::new();
    let log = env.path().join("app.log");
    append(&log, 0, 10);
    file_source(&env, &log, "");
    let mut tail = Tail::start_following(&env, 1);
    tail.wait_for_line(&numbered(9));
    // Rewritten in place with more bytes than were read: same inode, size above our offset.
    let mut s = String::new();
    for i in 0..40 {
        s.push_str(&format!("rewritten {i:04} and longer than before\n"));
    }
    fs::write(&log, s).unwrap();
    tail.wait_for_line("rewritten 0039 and longer than before");
    let (events, _) = tail.stop();
    let lines: Vec<&str> = events
        .iter()
        .map(|e| e["full_log"].as_str().unwrap())
        .collect();
    assert!(
        lines.contains(&"rewritten 0000 and longer than before"),
        "{lines:?}"
    );
}

#[test]
fn kill_9_in_a_large_file_then_restart_loses_nothing() {
    let env = Env::new();
    let log = env.path().join("big.log");
    let n = 300_000;
    append(&log, 0, n);
    file_source(&env, &log, "");
    let mut tail = Tail::start(&env);
    tail.wait_count(n / 3);
    // The tail is now blocked on the full pipe; let a checkpoint pass, then kill it hard.
    std::thread::sleep(Duration::from_millis(1500));
    let first: Vec<Value> = tail.kill9().into_iter().filter(|v| v.is_object()).collect();
    assert!(
        first.len() < n,
        "the whole file went through before the kill"
    );
    let mut tail = Tail::start_following(&env, 1);
    tail.wait_for_line(&numbered(n - 1));
    let (second, _) = tail.stop();
    let first_of_second = second[0]["full_log"].as_str().unwrap().to_string();
    assert_ne!(first_of_second, numbered(0), "the restart did not resume");
    // Every line is there; repeats are allowed only where the two runs meet.
    let mut all: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|e| e["full_log"].as_str().unwrap().to_string())
        .collect();
    let total = all.len();
    all.dedup();
    all.sort();
    all.dedup();
    assert_numbered(&all, n);
    assert!(total - n < 50_000, "{} lines repeated", total - n);
}

#[test]
fn glob_picks_up_a_new_file_from_its_beginning() {
    let env = Env::new();
    let dir = env.path().join("logs");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("old.log"), "old line\n").unwrap();
    fs::write(dir.join("other.txt"), "not matched\n").unwrap();
    env.config(&format!(
        "[[logs]]\npath = \"{}/*.log\"\nformat = \"nginx\"\n",
        dir.display()
    ));
    let mut tail = Tail::start_following(&env, 1);
    // start = "end": the old file is followed from its end.
    append_text(&dir.join("old.log"), "new in old\n");
    tail.wait_for_line("new in old");
    fs::write(dir.join("new.log"), "first of new\nsecond of new\n").unwrap();
    tail.wait_for_line("second of new");
    append_text(&dir.join("other.txt"), "still not\n");
    tail.settle(Duration::from_millis(1500));
    let (events, _) = tail.stop();
    let new_loc = dir.join("new.log").display().to_string();
    let got: Vec<&str> = events
        .iter()
        .map(|e| e["full_log"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec!["new in old", "first of new", "second of new"]);
    assert_eq!(events[1]["location"], new_loc.as_str());
    assert_eq!(events[1]["format"], "nginx");
}

#[test]
fn awkward_lines_are_kept_cut_or_marked_and_partial_lines_wait() {
    let env = Env::new();
    let log = env.path().join("odd.log");
    fs::write(&log, "").unwrap();
    file_source(&env, &log, "partial_line_wait = 60\n");
    let mut tail = Tail::start_following(&env, 1);
    let mut f = OpenOptions::new().append(true).open(&log).unwrap();
    let mut data = vec![b'A'; 200_000];
    data.extend_from_slice(b"\nbad \xff\xfe bytes\r\nnul\0inside\nhalf ");
    f.write_all(&data).unwrap();
    tail.wait_count(3);
    std::thread::sleep(Duration::from_millis(1200));
    f.write_all(b"and the rest\n").unwrap();
    tail.wait_for_line("half and the rest");
    let (ev, _) = tail.stop();
    assert_eq!(ev.len(), 4, "{ev:?}");
    let long = ev[0]["full_log"].as_str().unwrap();
    assert_eq!(long.len(), 64 << 10);
    assert_eq!(ev[0]["truncated"], true);
    assert_eq!(ev[1]["full_log"], "bad \u{fffd}\u{fffd} bytes");
    assert_eq!(ev[1]["lossy_utf8"], true);
    assert_eq!(ev[1]["truncated"], false);
    assert_eq!(ev[2]["full_log"], "nul\u{0}inside");
    assert_eq!(ev[2]["lossy_utf8"], false);
}

#[test]
fn a_partial_last_line_is_handed_on_after_the_quiet_time() {
    let env = Env::new();
    let log = env.path().join("p.log");
    fs::write(&log, "").unwrap();
    file_source(&env, &log, "partial_line_wait = 1\n");
    let mut tail = Tail::start_following(&env, 1);
    let mut f = OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"no newline yet").unwrap();
    tail.wait_for_line("no newline yet");
    f.write_all(b" then more\n").unwrap();
    tail.wait_for_line(" then more");
    tail.stop();
}

#[test]
fn fifos_and_failing_sources_do_not_stop_the_others() {
    let env = Env::new();
    let dir = env.path().join("logs");
    fs::create_dir(&dir).unwrap();
    let fifo = dir.join("pipe.log");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    fs::write(dir.join("ok.log"), "").unwrap();
    env.config(&format!(
        "[[logs]]\npath = \"{0}/*.log\"\nformat = \"plain\"\n\
         [[logs]]\nformat = \"command\"\ncommand = [\"/nonexistent/program\"]\ninterval = 1\n\
         [[logs]]\npath = \"{0}/dir-not-there/x.log\"\nformat = \"plain\"\n",
        dir.display()
    ));
    let mut tail = Tail::start_following(&env, 1);
    append_text(&dir.join("ok.log"), "still read\n");
    tail.wait_for_line("still read");
    tail.settle(Duration::from_millis(3500));
    let (_, stderr) = tail.stop();
    assert_eq!(
        stderr.matches("not a regular file").count(),
        1,
        "reported once: {stderr}"
    );
    assert_eq!(
        stderr.matches("cannot run /nonexistent/program").count(),
        1,
        "reported once: {stderr}"
    );
}

#[test]
fn command_output_change_is_seen() {
    let env = Env::new();
    let src = env.path().join("ports.txt");
    fs::write(&src, "tcp 0.0.0.0:22\n").unwrap();
    env.config(&format!(
        "[[logs]]\nformat = \"command\"\ncommand = [\"cat\", \"{}\"]\ninterval = 1\nalias = \"ports\"\n",
        src.display()
    ));
    let mut tail = Tail::start(&env);
    tail.wait_for_line("ossec: output: 'ports':\ntcp 0.0.0.0:22");
    fs::write(&src, "tcp 0.0.0.0:22\ntcp 0.0.0.0:4444\n").unwrap();
    tail.wait_for_line("ossec: output: 'ports':\ntcp 0.0.0.0:22\ntcp 0.0.0.0:4444");
    let (ev, _) = tail.stop();
    assert!(ev
        .iter()
        .all(|e| e["location"] == "ports" && e["format"] == "command"));
}

/// Writes journal entries (export format) into a journal file in `dir` with systemd-journal-remote.
pub(crate) fn journal_remote(dir: &Path, entries: &[(u64, &str, &str, u32)]) {
    let mut export = String::new();
    for (i, (t, ident, msg, pid)) in entries.iter().enumerate() {
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n\
             MESSAGE={msg}\nSYSLOG_IDENTIFIER={ident}\n_PID={pid}\n_HOSTNAME=web1\n_SYSTEMD_UNIT=ssh.service\nPRIORITY=6\n\n",
            t / 1000 + i as u64
        ));
    }
    let file = dir.join("in.export");
    fs::write(&file, export).unwrap();
    let o = std::process::Command::new("/lib/systemd/systemd-journal-remote")
        .arg(format!("--output={}/remote.journal", dir.display()))
        .arg(&file)
        .output()
        .expect("systemd-journal-remote (Debian package systemd-journal-remote; tests/run.sh installs it)");
    assert!(o.status.success(), "{}", stderr(&o));
    fs::remove_file(&file).unwrap();
}

#[test]
fn journald_entries_read_like_the_auth_log_and_resume_after_restart() {
    let env = Env::new();
    let jdir = env.path().join("journal");
    fs::create_dir(&jdir).unwrap();
    let t0 = 1_700_000_000_000_000u64;
    let msg = "Accepted publickey for root from 10.0.0.1 port 5555 ssh2: ED25519 SHA256:abc";
    journal_remote(
        &jdir,
        &[
            (t0, "sshd", msg, 4242),
            (
                t0 + 1_000_000,
                "sudo",
                "root : TTY=pts/0 ; COMMAND=/bin/ls",
                77,
            ),
        ],
    );
    // The same line as rsyslog writes it to auth.log (local time, short host name).
    let local = std::process::Command::new("date")
        .args(["-d", "@1700000000", "+%b %e %H:%M:%S"])
        .output()
        .unwrap();
    let ts = stdout(&local).trim_end().to_string();
    let auth = env.path().join("auth.log");
    let auth_line = format!("{ts} web1 sshd[4242]: {msg}");
    fs::write(&auth, format!("{auth_line}\n")).unwrap();
    env.config(&format!(
        "[[logs]]\nformat = \"journald\"\njournal_dir = \"{}\"\nstart = \"beginning\"\n\
         [[logs]]\npath = \"{}\"\nformat = \"syslog\"\nstart = \"beginning\"\n",
        jdir.display(),
        auth.display()
    ));
    let mut tail = Tail::start(&env);
    tail.wait_until("the sudo entry", |e| {
        e["full_log"].as_str().unwrap().contains("COMMAND=/bin/ls")
    });
    tail.wait_for_line(&auth_line);
    let j = tail.logs_of("journald");
    assert_eq!(j[0], auth_line, "journal and auth.log differ");
    // New entries while following.
    journal_remote(
        &jdir,
        &[(
            t0 + 5_000_000,
            "sshd",
            "Connection closed by 10.0.0.9",
            4243,
        )],
    );
    tail.wait_until("the appended entry", |e| {
        e["full_log"]
            .as_str()
            .unwrap()
            .ends_with("sshd[4243]: Connection closed by 10.0.0.9")
    });
    tail.settle(Duration::from_millis(1500));
    let (first, _) = tail.stop();
    assert_eq!(
        first.iter().filter(|e| e["location"] == "journald").count(),
        3
    );
    // A restart resumes after the saved cursor: only the entries added meanwhile, all of them
    // (journalctl --follow alone would show only the last 10).
    let msgs: Vec<String> = (0..15).map(|i| format!("while stopped {i}")).collect();
    let mut entries: Vec<(u64, &str, &str, u32)> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (t0 + 6_000_000 + i as u64 * 1000, "sshd", m.as_str(), 5000))
        .collect();
    entries.push((t0 + 9_000_000, "sshd", "after restart", 4244));
    journal_remote(&jdir, &entries);
    let mut tail = Tail::start(&env);
    tail.wait_until("the entry added while stopped", |e| {
        e["full_log"].as_str().unwrap().ends_with("after restart")
    });
    tail.settle(Duration::from_millis(1500));
    let (second, _) = tail.stop();
    let j: Vec<&Value> = second
        .iter()
        .filter(|e| e["location"] == "journald")
        .collect();
    assert_eq!(j.len(), 16, "{j:?}");
    assert!(j[0]["full_log"]
        .as_str()
        .unwrap()
        .ends_with("while stopped 0"));
}

#[test]
fn once_reads_to_the_end_and_counts_what_it_altered() {
    let env = Env::new();
    let log = env.path().join("odd.log");
    let mut data = vec![b'x'; 300];
    data.extend_from_slice(b"\nbad \xc3\x28\nfine\n");
    fs::write(&log, &data).unwrap();
    file_source(&env, &log, "max_line = 256\n");
    let o = env.cmd().args(["tail", "--once"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["full_log"].as_str().unwrap().len(), 256);
    assert!(
        stderr(&o).contains("3 events, 1 cut at max_line, 1 with invalid UTF-8 replaced"),
        "{}",
        stderr(&o)
    );
    // Positions were saved: a second run has nothing new.
    let o = env
        .cmd()
        .args(["tail", "--once", "--count"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "0");
}

#[test]
fn journald_first_start_at_the_end_reads_only_new_entries() {
    let env = Env::new();
    let jdir = env.path().join("journal");
    fs::create_dir(&jdir).unwrap();
    let t0 = 1_700_000_000_000_000u64;
    journal_remote(
        &jdir,
        &[
            (t0, "sshd", "old one", 1),
            (t0 + 1000, "sshd", "old two", 2),
        ],
    );
    env.config(&format!(
        "[[logs]]\nformat = \"journald\"\njournal_dir = \"{}\"\nidentifiers = [\"sshd\"]\n",
        jdir.display()
    ));
    let mut tail = Tail::start(&env);
    tail.wait_diag("reading the journal after cursor", 1);
    journal_remote(
        &jdir,
        &[
            (t0 + 2000, "cron", "not this identifier", 3),
            (t0 + 3000, "sshd", "new one", 4),
        ],
    );
    tail.wait_until("the new entry", |e| {
        e["full_log"]
            .as_str()
            .unwrap()
            .ends_with("sshd[4]: new one")
    });
    tail.settle(Duration::from_millis(1000));
    let (ev, _) = tail.stop();
    assert_eq!(ev.len(), 1, "{ev:?}");
}

/// Runs `hids tail --once` and returns the lines it printed for `location`.
fn once_lines(env: &Env, location: &Path) -> (Vec<String>, String) {
    let o = env.cmd().args(["tail", "--once"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let loc = location.display().to_string();
    let lines = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .inspect(|v| assert_eq!(v["location"], loc.as_str(), "{v}"))
        .map(|v| v["full_log"].as_str().unwrap().to_string())
        .collect();
    (lines, stderr(&o))
}

#[test]
fn rotated_while_stopped_the_old_file_is_finished_before_the_new_one() {
    let env = Env::new();
    let log = env.path().join("app.log");
    append(&log, 0, 100);
    file_source(&env, &log, "");
    let (lines, _) = once_lines(&env, &log);
    assert_numbered(&lines, 100);

    // Written after the saved position, then rotated by date (a name the path does not match).
    append(&log, 100, 150);
    fs::rename(&log, env.path().join("app.log-20261122")).unwrap();
    append(&log, 150, 200);
    let (lines, err) = once_lines(&env, &log);
    let expected: Vec<String> = (100..200).map(numbered).collect();
    assert_eq!(lines, expected, "{err}");
    assert!(
        err.contains("finishing a file rotated while stopped"),
        "{err}"
    );
    let (lines, _) = once_lines(&env, &log);
    assert!(lines.is_empty(), "{lines:?}");

    // The same while following: stopped hard once its position was saved, rotated by number.
    let mut tail = Tail::start(&env);
    append(&log, 200, 230);
    tail.wait_for_line(&numbered(229));
    // A checkpoint passes (every second) before the kill.
    tail.settle(Duration::from_millis(2500));
    tail.kill9();
    append(&log, 230, 260);
    fs::rename(&log, log.with_extension("log.1")).unwrap();
    append(&log, 260, 300);
    let mut tail = Tail::start(&env);
    tail.wait_for_line(&numbered(299));
    tail.settle(Duration::from_millis(500));
    let (events, err) = tail.stop();
    let lines: Vec<&str> = events
        .iter()
        .map(|e| e["full_log"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (230..300).map(numbered).collect();
    assert_eq!(lines, expected, "{err}");
    assert!(
        events
            .iter()
            .all(|e| e["location"] == log.display().to_string()),
        "{events:?}"
    );
}

#[test]
fn double_star_in_a_glob_matches_files_at_any_depth() {
    let env = Env::new();
    let dir = env.path().join("logs");
    fs::create_dir_all(dir.join("a")).unwrap();
    fs::write(dir.join("x.log"), "").unwrap();
    fs::write(dir.join("a/x.log"), "").unwrap();
    env.config(&format!(
        "[[logs]]\npath = \"{}/**/x.log\"\nformat = \"plain\"\n",
        dir.display()
    ));
    let mut tail = Tail::start_following(&env, 2);
    append_text(&dir.join("a/x.log"), "in a\n");
    tail.wait_for_line("in a");
    // A file that appears later, deeper, in new directories: read from its beginning.
    fs::create_dir_all(dir.join("b/c")).unwrap();
    fs::write(dir.join("b/c/y.log"), "not matched\n").unwrap();
    fs::write(dir.join("b/c/x.log"), "deep and new\n").unwrap();
    tail.wait_for_line("deep and new");
    append_text(&dir.join("x.log"), "at the top\n");
    tail.wait_for_line("at the top");
    tail.settle(Duration::from_millis(500));
    let (events, _) = tail.stop();
    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["location"].as_str().unwrap(),
                e["full_log"].as_str().unwrap(),
            )
        })
        .collect();
    let loc = |p: &str| dir.join(p).display().to_string();
    let (a, c, top) = (loc("a/x.log"), loc("b/c/x.log"), loc("x.log"));
    assert_eq!(
        got,
        vec![
            (a.as_str(), "in a"),
            (c.as_str(), "deep and new"),
            (top.as_str(), "at the top")
        ]
    );
}
