//! The responder and its worker, with a real program that records its arguments.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::*;
use crate::event::{AlertOptions, Decoded, Event, LogFormat, Predecoded};
use crate::net::Cidr;

struct Rig {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    record: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let record = dir.join("calls");
        let script = dir.join("block.sh");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done >> {}\necho >> {}\n",
                record.display(),
                record.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        Rig {
            _tmp: tmp,
            dir,
            record,
        }
    }

    fn script(&self) -> String {
        self.dir.join("block.sh").display().to_string()
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn cfg(&self, command: Vec<String>, timeout: Option<Duration>) -> ActiveResponseConfig {
        ActiveResponseConfig {
            enabled: true,
            allowlist: vec![Cidr::parse("10.0.0.0/8").unwrap()],
            max_per_minute: 30,
            responses: vec![ResponseConfig {
                command,
                rules: vec![100150],
                groups: vec![],
                min_level: None,
                timeout,
                hosts_deny_path: None,
            }],
        }
    }

    fn start(&self, cfg: &ActiveResponseConfig) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let (atx, arx) = mpsc::channel();
        let (r, w) = Responder::new(
            cfg,
            &self.dir.join("state"),
            "testhost",
            stop.clone(),
            move |a| atx.send(a).is_ok(),
        )
        .unwrap();
        let thread = std::thread::spawn(move || w.run());
        Running {
            r,
            stop,
            alerts: arx,
            thread: Some(thread),
        }
    }
}

struct Running {
    r: Responder,
    stop: Arc<AtomicBool>,
    alerts: mpsc::Receiver<Alert>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn next_alert(&self) -> Alert {
        self.alerts
            .recv_timeout(Duration::from_secs(30))
            .expect("an active response alert")
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An alert of `rule` at level 10 with `srcip` (none when empty) and user root.
fn alert_with(rule: u32, srcip: &str) -> Alert {
    let now = SystemTime::now();
    let mut fields: Vec<crate::event::DecodedField> = Vec::new();
    if !srcip.is_empty() {
        fields.push((Arc::from("srcip"), srcip.into()));
    }
    Alert {
        time: now,
        rule: RuleInfo {
            id: rule,
            level: 10,
            description: "test".into(),
            groups: vec!["syslog".into()].into(),
            mitre: Vec::new().into(),
            firedtimes: 1,
            options: AlertOptions::default(),
            info: Vec::new().into(),
        },
        event: Event {
            time: now,
            host: Arc::from("testhost"),
            location: Arc::from("/var/log/auth.log"),
            format: LogFormat::Syslog,
            full_log: String::new(),
            flags: Default::default(),
            fim: None,
        },
        predecoded: Predecoded::default(),
        decoded: Decoded {
            fields,
            ..Default::default()
        },
        related: Vec::new(),
    }
}

fn alert(rule: u32, srcip: &str) -> Alert {
    let mut a = alert_with(rule, srcip);
    a.decoded.fields.push((Arc::from("dstuser"), "root".into()));
    a
}

fn wait_until(what: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !what() {
        assert!(Instant::now() < end, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn blocks_once_then_unblocks_after_timeout() {
    let rig = Rig::new();
    let cfg = rig.cfg(vec![rig.script()], Some(Duration::from_millis(800)));
    let run = rig.start(&cfg);
    run.r.offer(&alert(100150, "203.0.113.7"));
    let a = run.next_alert();
    assert_eq!(a.rule.id, RULE_BLOCK);
    assert_eq!(a.decoded.get("srcip"), Some("203.0.113.7"));
    assert!(a.rule.groups.iter().any(|g| g == GROUP));
    assert_eq!(run.r.counters().snapshot().in_force, 1);
    // A repeat is not blocked twice; a rule no response names does nothing.
    run.r.offer(&alert(100150, "203.0.113.7"));
    run.r.offer(&alert(100101, "203.0.113.8"));
    let a = run.next_alert();
    assert_eq!(a.rule.id, RULE_UNBLOCK, "{a:?}");
    assert_eq!(rig.calls(), ["[add][203.0.113.7]", "[delete][203.0.113.7]"]);
    let c = run.r.counters().snapshot();
    assert_eq!(
        (c.blocked, c.unblocked, c.repeated, c.in_force),
        (1, 1, 1, 0),
        "{c:?}"
    );
    // Our own alerts never trigger a response.
    run.r.offer(&a);
    run.stop();
    assert_eq!(rig.calls().len(), 2);
}

#[test]
fn never_blocks_bad_or_allowlisted_addresses() {
    let rig = Rig::new();
    let cfg = rig.cfg(
        vec![rig.script(), "{action}".into(), "{srcip}".into()],
        None,
    );
    let run = rig.start(&cfg);
    for ip in [
        "1.2.3.4;touch /tmp/x",
        "$(id)",
        "`id`",
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "0.0.0.0",
    ] {
        run.r.offer(&alert(100150, ip));
    }
    // No srcip at all.
    run.r.offer(&alert_with(100150, ""));
    // Then a good one, acted on after all the above (one worker, in order).
    run.r.offer(&alert(100150, "::ffff:198.51.100.9"));
    let a = run.next_alert();
    assert_eq!(a.rule.id, RULE_BLOCK);
    assert_eq!(rig.calls(), ["[add][198.51.100.9]"]);
    let c = run.r.counters();
    assert_eq!(c.allowlisted.load(Ordering::Relaxed), 3);
    assert_eq!(c.invalid.load(Ordering::Relaxed), 5);
    run.stop();
}

#[test]
fn cap_per_minute_skips_and_alerts_once() {
    let rig = Rig::new();
    let mut cfg = rig.cfg(vec![rig.script()], None);
    cfg.max_per_minute = 2;
    let run = rig.start(&cfg);
    for i in 1..=5 {
        run.r.offer(&alert(100150, &format!("203.0.113.{i}")));
    }
    let ids: Vec<u32> = (0..3).map(|_| run.next_alert().rule.id).collect();
    assert_eq!(ids, [RULE_BLOCK, RULE_BLOCK, RULE_FAILED]);
    wait_until(|| run.r.counters().capped.load(Ordering::Relaxed) == 3);
    assert_eq!(rig.calls().len(), 2);
    // Blocks without timeout stay in force.
    let c = run.r.counters().snapshot();
    assert_eq!((c.blocked, c.capped, c.in_force), (2, 3, 2), "{c:?}");
    assert!(run.alerts.try_recv().is_err());
    run.stop();
}

#[test]
fn user_passed_only_when_wanted_and_valid() {
    let rig = Rig::new();
    let cfg = rig.cfg(vec![rig.script(), "{srcip}".into(), "{user}".into()], None);
    let run = rig.start(&cfg);
    let mut bad = alert(100150, "203.0.113.9");
    bad.decoded.fields.retain(|(k, _)| &**k != "dstuser");
    bad.decoded
        .fields
        .push((Arc::from("dstuser"), "-oProxyCommand=x".into()));
    run.r.offer(&bad);
    run.r.offer(&alert(100150, "203.0.113.10"));
    let a = run.next_alert();
    assert_eq!(a.rule.id, RULE_BLOCK);
    assert_eq!(a.decoded.get("dstuser"), Some("root"));
    assert_eq!(rig.calls(), ["[203.0.113.10][root]"]);
    run.stop();
}

#[test]
fn failure_is_alerted_and_restart_unblocks_overdue() {
    let rig = Rig::new();
    // A failing program: a 603 alert with its output.
    let cfg = rig.cfg(
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo denied >&2; exit 2".into(),
        ],
        None,
    );
    let run = rig.start(&cfg);
    run.r.offer(&alert(100150, "203.0.113.20"));
    let a = run.next_alert();
    assert_eq!(a.rule.id, RULE_FAILED);
    assert!(
        a.event.full_log.contains("exit status 2: denied"),
        "{}",
        a.event.full_log
    );
    run.stop();

    // Blocked with a long timeout, then stopped; the unblock time passes while stopped.
    let cfg = rig.cfg(vec![rig.script()], Some(Duration::from_secs(3600)));
    let run = rig.start(&cfg);
    run.r.offer(&alert(100150, "2001:db8::20"));
    assert_eq!(run.next_alert().rule.id, RULE_BLOCK);
    run.stop();
    let st = crate::state::State::open(&rig.dir.join("state")).unwrap();
    st.conn
        .execute("UPDATE response_blocks SET unblock_at = 0", [])
        .unwrap();
    drop(st);
    // The next start, even with responses now disabled, lifts it with the recorded mechanism.
    let mut off = rig.cfg(vec!["/bin/false".into()], None);
    off.enabled = false;
    let run = rig.start(&off);
    assert_eq!(run.next_alert().rule.id, RULE_UNBLOCK);
    assert_eq!(
        rig.calls(),
        ["[add][2001:db8::20]", "[delete][2001:db8::20]"]
    );
    run.stop();
}

#[test]
fn reload_replaces_responses() {
    let rig = Rig::new();
    let cfg = rig.cfg(vec![rig.script()], None);
    let run = rig.start(&cfg);
    let mut new = cfg.clone();
    new.responses[0].rules = vec![100151];
    new.allowlist.push(Cidr::parse("203.0.113.0/24").unwrap());
    run.r.reconfigure(&new);
    run.r.offer(&alert(100150, "198.51.100.1"));
    run.r.offer(&alert(100151, "203.0.113.1"));
    run.r.offer(&alert(100151, "198.51.100.2"));
    assert_eq!(run.next_alert().rule.id, RULE_BLOCK);
    assert_eq!(rig.calls(), ["[add][198.51.100.2]"]);
    run.stop();
}

#[test]
fn hosts_deny_builtin() {
    let rig = Rig::new();
    let path = rig.dir.join("hosts.deny");
    let mut cfg = rig.cfg(vec!["hosts-deny".into()], Some(Duration::from_millis(500)));
    cfg.responses[0].hosts_deny_path = Some(path.clone());
    let run = rig.start(&cfg);
    run.r.offer(&alert(100150, "203.0.113.30"));
    assert_eq!(run.next_alert().rule.id, RULE_BLOCK);
    assert_eq!(fs::read_to_string(&path).unwrap(), "ALL: 203.0.113.30\n");
    assert_eq!(run.next_alert().rule.id, RULE_UNBLOCK);
    assert_eq!(fs::read_to_string(&path).unwrap(), "");
    run.stop();
}

#[test]
fn human_durations() {
    assert_eq!(human(Duration::from_secs(600)), "10m");
    assert_eq!(human(Duration::from_secs(2)), "2s");
    assert_eq!(human(Duration::from_secs(7200)), "2h");
    assert_eq!(human(Duration::from_secs(86400)), "1d");
    assert_eq!(human(Duration::from_millis(500)), "500ms");
}
