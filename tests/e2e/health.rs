//! The agent's health and self-protection end to end: `hids status` while the agent runs (and
//! after a restart), the Prometheus endpoint, tampering with the agent's own files, and the
//! privileges the running agent keeps.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{append, setup, wait_for, Agent};
use crate::util::Env;

/// `hids status --json`, parsed.
pub(crate) fn status(env: &Env) -> Value {
    let o = env.cmd().args(["status", "--json"]).output().unwrap();
    serde_json::from_str(crate::util::stdout(&o).trim()).unwrap()
}

#[test]
fn regression_status_row_stopped_advancing_after_hids_status_ran() {
    // `hids status` used to delete the WAL under the running agent (which had dropped its SQLite
    // locks by opening and closing the database file itself): from then on nothing the agent
    // wrote, status row or log positions, reached the database. Seen after a restart.
    let env = Env::new();
    let (_tree, log, _local) = setup(&env);
    let agent = Agent::start(&env, "run1.log");
    wait_for(
        &|| agent.stderr().contains("FIM baseline recorded"),
        "the first start",
        &agent,
    );
    assert_eq!(agent.stop(), 0);
    let agent = Agent::start(&env, "run2.log");
    wait_for(
        &|| agent.stderr().contains("FIM scan at start done"),
        "the second start",
        &agent,
    );
    // Polled all along: the row must keep advancing (it is written every 5 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = status(&env);
        assert_eq!(v["running"], true, "{v}");
        if v["agent"]["uptime"].as_u64().unwrap_or(0) >= 11 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the status row stopped advancing: {v}\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // And what the agent writes after those reads is seen: a new line's position.
    append(&log, &["stream-line after-status".to_string()]);
    let len = fs::metadata(&log).unwrap().len();
    wait_for(
        &|| status(&env)["positions"][0]["offset"] == len,
        "the new position in the status",
        &agent,
    );
    assert_eq!(agent.stop(), 0);
}

/// A port free on 127.0.0.1 a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of `GET /metrics`, or "" while the endpoint is not up.
pub(crate) fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The value of one sample line (`name{labels}`) in a scrape.
pub(crate) fn sample(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Adds `metrics_listen` to the `[agent]` table of the config `setup` wrote.
pub(crate) fn listen_on(env: &Env, port: u16) {
    let p = env.path().join("config.toml");
    let text = fs::read_to_string(&p).unwrap().replacen(
        "hostname = \"testhost\"\n",
        &format!("hostname = \"testhost\"\nmetrics_listen = \"127.0.0.1:{port}\"\n"),
        1,
    );
    fs::write(p, text).unwrap();
}

#[test]
fn metrics_endpoint_serves_rule_hits_and_event_counters() {
    let env = Env::new();
    let (_tree, log, _local) = setup(&env);
    let port = free_port();
    listen_on(&env, port);
    let agent = Agent::start(&env, "run.log");
    wait_for(
        &|| agent.stderr().contains("metrics served at /metrics"),
        "the endpoint",
        &agent,
    );
    append(
        &log,
        &(0..3)
            .map(|i| format!("stream-line {i}"))
            .collect::<Vec<_>>(),
    );
    let hits = "hids_rule_hits_total{rule_id=\"100041\"}";
    wait_for(
        &|| sample(&scrape(port), hits) == Some(3),
        "three rule hits in the metrics",
        &agent,
    );
    let body = scrape(port);
    assert_eq!(
        sample(&body, "hids_events_analysed_total{kind=\"log\"}"),
        Some(3),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            &format!("hids_source_events_total{{source=\"{}\"}}", log.display())
        ),
        Some(3),
        "{body}"
    );
    assert_eq!(
        sample(&body, "hids_alerts_total{level=\"3\"}"),
        Some(3),
        "{body}"
    );
    assert!(body.contains("hids_uptime_seconds "), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(agent.stop(), 0);
}

#[test]
fn check_config_warns_when_metrics_are_not_on_loopback() {
    let env = Env::new();
    env.config("metrics_listen = \"0.0.0.0:9108\"\n");
    let o = env.cmd().arg("check-config").output().unwrap();
    assert!(
        crate::util::stderr(&o).contains("not a loopback address"),
        "{}",
        crate::util::stderr(&o)
    );
    env.config("metrics_listen = \"localhost\"\n");
    let o = env.cmd().arg("check-config").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(crate::util::stderr(&o).contains("metrics_listen"));
}

#[test]
fn tampering_with_a_loaded_rules_file_raises_a_fim_alert() {
    let env = Env::new();
    let (_tree, _log, _local) = setup(&env);
    let rules = env.path().join("rules.xml").canonicalize().unwrap();
    let agent = Agent::start(&env, "run.log");
    wait_for(
        &|| agent.stderr().contains("FIM baseline recorded"),
        "the baseline",
        &agent,
    );
    let err = agent.stderr();
    for own in [rules.clone(), env.path().join("config.toml")] {
        assert!(
            err.contains(&format!("own file is under FIM path={}", own.display())),
            "{}: {err}",
            own.display()
        );
    }
    // The binary under test is watched too (it cannot be modified here).
    assert!(err.contains(&format!(
        "path={}",
        std::fs::canonicalize(env!("CARGO_BIN_EXE_hids"))
            .unwrap()
            .display()
    )));
    let mut text = fs::read_to_string(&rules).unwrap();
    text.push_str("\n<!-- planted -->\n");
    fs::write(&rules, text).unwrap();
    let is_rules_alert = |a: &Value| a["fim"]["path"] == rules.display().to_string();
    wait_for(
        &|| crate::agent::alerts(&env).iter().any(is_rules_alert),
        "the FIM alert for the rules file",
        &agent,
    );
    let all = crate::agent::alerts(&env);
    let a = all.iter().find(|a| is_rules_alert(a)).unwrap();
    assert_eq!(a["fim"]["event"], "modified", "{a}");
    assert!(
        a["fim"]["diff"].as_str().unwrap_or("").contains("planted"),
        "{a}"
    );
    // The state database is never reported, however often it changes.
    assert!(
        !all.iter().any(|a| a["fim"]["path"]
            .as_str()
            .is_some_and(|p| p.contains("hids.db"))),
        "{all:#?}"
    );
    assert_eq!(agent.stop(), 0);
}

/// A field of /proc/<pid>/status.
fn proc_status(pid: u32, field: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| Some(l.strip_prefix(field)?.strip_prefix(':')?.trim().to_string()))
        .unwrap_or_default()
}

#[test]
fn the_running_agent_has_no_new_privs_and_as_root_only_the_capabilities_it_needs() {
    let env = Env::new();
    let (_tree, log, _local) = setup(&env);
    let agent = Agent::start(&env, "run.log");
    wait_for(
        &|| agent.stderr().contains("hids agent started"),
        "the start",
        &agent,
    );
    let pid = agent.child.id();
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    if proc_status(std::process::id(), "Uid").starts_with("0\t") {
        // CAP_DAC_READ_SEARCH (bit 2) only, in every thread and in the bounding set; no
        // inheritable or ambient capability for children.
        for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
            let status = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
            assert!(status.contains("CapEff:\t0000000000000004"), "{status}");
        }
        assert_eq!(proc_status(pid, "CapPrm"), "0000000000000004");
        assert_eq!(proc_status(pid, "CapBnd"), "0000000000000004");
        assert_eq!(proc_status(pid, "CapInh"), "0000000000000000");
        assert_eq!(proc_status(pid, "CapAmb"), "0000000000000000");
        assert!(agent.stderr().contains("reduced capabilities"));
    }
    // And it still works: a line is read and alerted.
    append(&log, &["stream-line after-drop".to_string()]);
    wait_for(
        &|| crate::agent::count(&env, 100041) == 1,
        "the alert",
        &agent,
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_change_absorbed_by_the_baseline_without_its_alert_is_alerted_at_the_next_start() {
    // The state a crash leaves between a scan's baseline commit and the alert's spooling is the
    // one `hids fim check` leaves: the baseline has the change, the spool has no alert.
    let env = Env::new();
    let (tree, _log, _local) = setup(&env);
    let agent = Agent::start(&env, "run1.log");
    wait_for(
        &|| agent.stderr().contains("FIM baseline recorded"),
        "the baseline",
        &agent,
    );
    assert_eq!(agent.stop(), 0);
    fs::write(tree.join("bin/api"), "#!/bin/sh\necho evil\n").unwrap();
    let o = env.cmd().args(["fim", "check", "--json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", crate::util::stderr(&o));
    assert!(crate::util::stdout(&o).contains("/bin/api"));

    let agent = Agent::start(&env, "run2.log");
    wait_for(
        &|| crate::agent::count(&env, 100030) == 1,
        "the alert of the absorbed change",
        &agent,
    );
    assert!(
        agent.stderr().contains("left unspooled"),
        "{}",
        agent.stderr()
    );
    assert_eq!(agent.stop(), 0);
    // Reported once: the next start has nothing left.
    let agent = Agent::start(&env, "run3.log");
    wait_for(
        &|| agent.stderr().contains("FIM scan at start done"),
        "the third start",
        &agent,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(crate::agent::count(&env, 100030), 1);
    assert!(!agent.stderr().contains("left unspooled"));
    assert_eq!(agent.stop(), 0);
}
