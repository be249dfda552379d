//! The agent's health and self-protection end to end: `hids status` while the agent runs (and
//! after a restart), the Prometheus endpoint, tampering with the agent's own files, and the
//! privileges the running agent keeps.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{append, setup, wait_for, Agent};
use crate::util::Env;

/// `hids status --json`, parsed.
fn status(env: &Env) -> Value {
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
        &|| agent.stderr().contains("hids agent started"),
        "the start",
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
