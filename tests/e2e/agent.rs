//! `hids run` end to end: a temp tree and a temp log watched by the real agent; attacks appended to
//! the log and a watched binary replaced; alerts checked in alerts.json; SIGHUP reloads; SIGTERM in
//! the middle of a stream then a restart loses nothing.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::Env;

/// Decoders written for this test: sshd's failed password line and an API access log line.
pub(crate) const DECODERS: &str = r#"
<decoder name="t-sshd">
  <program_name>^sshd</program_name>
</decoder>

<decoder name="t-sshd-failed">
  <parent>t-sshd</parent>
  <prematch>^Failed password for </prematch>
  <regex offset="after_prematch">^(\S+) from (\S+) port </regex>
  <order>user, srcip</order>
</decoder>

<decoder name="t-api">
  <prematch>^api-access </prematch>
  <regex offset="after_prematch">^(\S+) (\w+) (\S+) (\d+)$</regex>
  <order>srcip, action, url, status</order>
</decoder>
"#;

/// Rules written for this test: single events, two bursts and the API binary.
pub(crate) const RULES: &str = r#"
<group name="test,">
  <rule id="100001" level="5">
    <decoded_as>t-sshd</decoded_as>
    <match>^Failed password</match>
    <description>SSH password failure for $(user) from $(srcip)</description>
    <group>authentication_failed,</group>
  </rule>

  <rule id="100002" level="10" frequency="4" timeframe="120">
    <if_matched_sid>100001</if_matched_sid>
    <same_source_ip />
    <description>SSH brute force from $(srcip)</description>
    <group>authentication_failures,</group>
  </rule>

  <rule id="100010" level="3">
    <decoded_as>t-api</decoded_as>
    <status>^401$</status>
    <description>API request refused (401) from $(srcip)</description>
  </rule>

  <rule id="100011" level="10" frequency="5" timeframe="120">
    <if_matched_sid>100010</if_matched_sid>
    <same_source_ip />
    <description>Burst of refused API requests from $(srcip)</description>
  </rule>

  <rule id="100020" level="12">
    <decoded_as>t-api</decoded_as>
    <url>union%20select|UNION%20SELECT</url>
    <description>SQL injection attempt from $(srcip)</description>
    <group>web,attack,sql_injection,</group>
  </rule>

  <rule id="100030" level="12">
    <category>ossec</category>
    <decoded_as>syscheck_integrity_changed</decoded_as>
    <field name="file">/bin/api$</field>
    <description>API binary changed: $(file)</description>
  </rule>

  <rule id="100041" level="3">
    <match>^stream-line </match>
    <description>stream line</description>
  </rule>
</group>
"#;

/// A rule added by the reload test.
const NEW_RULE: &str = r#"
<group name="test,">
  <rule id="100050" level="6">
    <match>^canary-after-reload</match>
    <description>canary seen</description>
  </rule>
</group>
"#;

pub(crate) struct Agent {
    pub(crate) child: Child,
    log: PathBuf,
}

impl Agent {
    pub(crate) fn start(env: &Env, name: &str) -> Agent {
        let log = env.path().join(name);
        let child = env
            .cmd()
            .arg("run")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    /// Started as the leader of a process group of its own, as a shell job or a systemd service's
    /// cgroup: [`Agent::signal_group`] then reaches it and everything it started that stayed in
    /// its group.
    pub(crate) fn start_as_group_leader(env: &Env, name: &str) -> Agent {
        let log = env.path().join(name);
        let child = env
            .cmd()
            .arg("run")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    /// Sends `sig` to the agent's whole process group (Ctrl-C in a terminal, `systemctl stop`).
    pub(crate) fn signal_group(&self, sig: &str) {
        let s = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .status()
            .unwrap();
        assert!(s.success());
    }

    /// Waits for the agent to exit by itself; its exit status.
    pub(crate) fn wait_exit(mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("hids run did not stop:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn signal(&self, sig: &str) {
        let s = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(s.success());
    }

    pub(crate) fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit status; fails if the agent does not stop.
    pub(crate) fn stop(self) -> i32 {
        self.signal("-TERM");
        self.wait_exit()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn wait_for(what: &dyn Fn() -> bool, label: &str, agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !what() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {label}\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn alerts(env: &Env) -> Vec<Value> {
    env.alerts_json()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn count(env: &Env, rule: u64) -> usize {
    alerts(env)
        .iter()
        .filter(|a| a["rule"]["id"] == rule)
        .count()
}

pub(crate) fn append(path: &Path, lines: &[String]) {
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// The temp config: a tree with a "binary", a log, our decoders and rules.
pub(crate) fn setup(env: &Env) -> (PathBuf, PathBuf, PathBuf) {
    let tree = env.path().join("tree");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::write(tree.join("bin/api"), "#!/bin/sh\necho v1\n").unwrap();
    let log = env.path().join("app.log");
    fs::write(&log, "").unwrap();
    fs::write(env.path().join("decoders.xml"), DECODERS).unwrap();
    let rules = env.path().join("rules.xml");
    fs::write(&rules, RULES).unwrap();
    let local = env.path().join("local_rules.xml");
    fs::write(&local, "").unwrap();
    env.config(&format!(
        "[fim]\ninterval = 1\n[[fim.paths]]\npath = \"{}\"\n\
         [[logs]]\npath = \"{}\"\nformat = \"syslog\"\n\
         [rules]\ndecoders = [\"{}\"]\nrules = [\"{}\"]\nlocal_rules = [\"{}\"]\n",
        tree.display(),
        log.display(),
        env.path().join("decoders.xml").display(),
        rules.display(),
        local.display()
    ));
    (tree, log, local)
}

#[test]
fn agent_scenario_attacks_binary_replaced_reloads() {
    let env = Env::new();
    let (tree, log, local) = setup(&env);
    let mut agent = Agent::start(&env, "run1.log");
    wait_for(
        &|| agent.stderr().contains("FIM baseline recorded"),
        "the baseline",
        &agent,
    );
    assert!(agent.stderr().contains("no FIM baseline yet"));

    // OSSEC's frequency counts the matches before the current one from 2 on: frequency 4 fires on
    // the 6th failure, frequency 5 on the 7th 401; one burst each, so one alert each.
    let mut lines = Vec::new();
    for i in 0..6 {
        lines.push(format!(
            "Nov 22 03:00:0{i} web1 sshd[4242]: Failed password for root from 203.0.113.7 port 5{i}022 ssh2"
        ));
    }
    for i in 0..7 {
        lines.push(format!("api-access 198.51.100.9 GET /v1/orders/{i} 401"));
    }
    lines.push(
        "api-access 192.0.2.44 GET /v1/items?id=1%20UNION%20SELECT%20password%20FROM%20users 200"
            .to_string(),
    );
    append(&log, &lines);
    // The "binary" replaced by a new file renamed over it, as an attacker's dropper would.
    fs::write(tree.join("bin/.api.new"), "#!/bin/sh\necho evil\n").unwrap();
    fs::rename(tree.join("bin/.api.new"), tree.join("bin/api")).unwrap();

    wait_for(
        &|| {
            count(&env, 100002) >= 1
                && count(&env, 100011) >= 1
                && count(&env, 100020) >= 1
                && count(&env, 100030) >= 1
        },
        "the scenario's alerts",
        &agent,
    );
    // Let a few more scans and the last lines through before counting.
    std::thread::sleep(Duration::from_secs(2));
    for rule in [100002, 100011, 100020, 100030] {
        assert_eq!(count(&env, rule), 1, "rule {rule}: {:#?}", alerts(&env));
    }
    let all = alerts(&env);
    let brute = all.iter().find(|a| a["rule"]["id"] == 100002).unwrap();
    assert_eq!(brute["rule"]["level"], 10);
    assert!(brute["rule"]["description"]
        .as_str()
        .unwrap()
        .contains("203.0.113.7"));
    let sqli = all.iter().find(|a| a["rule"]["id"] == 100020).unwrap();
    assert_eq!(sqli["data"]["srcip"], "192.0.2.44");
    let bin = all.iter().find(|a| a["rule"]["id"] == 100030).unwrap();
    assert_eq!(bin["location"], "fim");
    assert!(
        bin["fim"]["diff"]
            .as_str()
            .unwrap_or("")
            .contains("+echo evil")
            || bin["fim"]["path"].as_str().unwrap().ends_with("/bin/api")
    );

    // SIGHUP with a new rule: applied to the next line.
    fs::write(&local, NEW_RULE).unwrap();
    agent.signal("-HUP");
    wait_for(
        &|| agent.stderr().contains("reloaded the configuration"),
        "the reload",
        &agent,
    );
    append(&log, &["canary-after-reload one".to_string()]);
    wait_for(&|| count(&env, 100050) == 1, "the new rule's alert", &agent);

    // SIGHUP with a broken rule: the agent keeps running on the rules it has.
    fs::write(
        &local,
        "<group name=\"x,\"><rule id=\"100051\" level=\"3\">\n",
    )
    .unwrap();
    agent.signal("-HUP");
    wait_for(
        &|| agent.stderr().contains("reload failed"),
        "the failed reload",
        &agent,
    );
    assert!(agent.alive(), "{}", agent.stderr());
    append(&log, &["canary-after-reload two".to_string()]);
    wait_for(
        &|| count(&env, 100050) == 2,
        "the kept rule's alert",
        &agent,
    );
    let err = agent.stderr();
    assert!(
        err.contains("local_rules.xml"),
        "the failure names the file: {err}"
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn agent_sigterm_mid_stream_then_restart_loses_nothing() {
    let env = Env::new();
    let (_tree, log, _local) = setup(&env);
    let agent = Agent::start(&env, "run1.log");
    wait_for(
        &|| agent.stderr().contains("hids agent started"),
        "the start",
        &agent,
    );
    const N: usize = 3000;
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
                let lines: Vec<String> = chunk.iter().map(|i| format!("stream-line {i}")).collect();
                append(&log, &lines);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // Stop while lines are still being written and read.
    wait_for(&|| count(&env, 100041) > 0, "the first lines", &agent);
    let code = agent.stop();
    assert_eq!(code, 0);
    writer.join().unwrap();
    let before = count(&env, 100041);
    let agent = Agent::start(&env, "run2.log");
    wait_for(&|| count(&env, 100041) >= N, "every line", &agent);
    std::thread::sleep(Duration::from_secs(1));
    let seen: Vec<usize> = alerts(&env)
        .iter()
        .filter(|a| a["rule"]["id"] == 100041)
        .map(|a| {
            a["full_log"].as_str().unwrap()["stream-line ".len()..]
                .parse()
                .unwrap()
        })
        .collect();
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..N).collect::<Vec<_>>(),
        "each line once ({before} before the restart)"
    );
    // `hids status` reads the running agent's row, positions and spool.
    let status = || {
        let o = env.cmd().args(["status", "--json"]).output().unwrap();
        let v: Value = serde_json::from_str(crate::util::stdout(&o).trim()).unwrap();
        (o.status.code(), v)
    };
    wait_for(
        &|| status().1["positions"][0]["lag_bytes"] == 0,
        "no lag in the status",
        &agent,
    );
    let (_, v) = status();
    assert_eq!(
        v["positions"][0]["offset"],
        fs::metadata(&log).unwrap().len()
    );
    assert!(v["agent"]["uptime"].is_u64(), "{v}");
    assert_eq!(agent.stop(), 0);
    let (code, v) = status();
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["running"], false);
    let text = env.cmd().arg("status").output().unwrap();
    assert!(crate::util::stdout(&text).contains("agent: not running"));
}

#[test]
fn sighup_keeps_correlation_state() {
    let env = Env::new();
    let (_tree, log, local) = setup(&env);
    let agent = Agent::start(&env, "run1.log");
    wait_for(
        &|| agent.stderr().contains("FIM baseline recorded"),
        "the baseline",
        &agent,
    );
    let failure = |i: usize| {
        format!(
            "Nov 22 03:00:0{i} web1 sshd[4242]: Failed password for root from 203.0.113.7 port 5{i}022 ssh2"
        )
    };
    // Half the brute force before the reload: frequency 4 fires on the 6th failure.
    append(&log, &(0..3).map(failure).collect::<Vec<_>>());
    wait_for(&|| count(&env, 100001) == 3, "the first failures", &agent);
    // Reload with the same rules plus a new one: the brute-force rule is unchanged.
    fs::write(&local, NEW_RULE).unwrap();
    agent.signal("-HUP");
    wait_for(
        &|| agent.stderr().contains("reloaded the configuration"),
        "the reload",
        &agent,
    );
    append(&log, &(3..6).map(failure).collect::<Vec<_>>());
    wait_for(
        &|| count(&env, 100002) == 1,
        "the brute force across the reload",
        &agent,
    );
    assert_eq!(count(&env, 100001), 5, "{:#?}", alerts(&env));
}
