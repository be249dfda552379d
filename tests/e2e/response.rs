//! Active response end to end: the real `hids run` with our shipped decoders and rules reads an
//! sshd log; a test program records the arguments it is run with. A brute force blocks once with
//! the exact address and is unblocked after the timeout; allowlisted and crafted addresses never
//! reach a command (and nothing runs a shell on them); the hosts-deny built-in edits a temp file;
//! a restart with a block pending still unblocks it; a reload applies new responses.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::health;
use crate::util::{repo, Env};

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(env: &Env, name: &str) -> Agent {
        Agent::spawn(env, name, env.cmd())
    }

    /// `hids run` in a network namespace of its own: its firewall changes touch nothing else.
    fn start_in_netns(env: &Env, name: &str) -> Agent {
        let inner = env.cmd();
        let mut c = Command::new("unshare");
        c.arg("--net").arg("--").arg(inner.get_program());
        c.args(inner.get_args());
        c.env_remove("HIDS_CONFIG").env("NO_COLOR", "1");
        // `unshare` execs hids in place: the child's pid is the agent's.
        Agent::spawn(env, name, c)
    }

    /// Runs a command in the agent's network namespace; its stdout.
    fn in_netns(&self, argv: &[&str]) -> String {
        let o = Command::new("nsenter")
            .args(["-t", &self.child.id().to_string(), "-n", "--"])
            .args(argv)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn spawn(env: &Env, name: &str, mut cmd: Command) -> Agent {
        let log = env.path().join(name);
        let child = cmd
            .arg("run")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let a = Agent { child, log };
        a.wait_for(
            &|| a.stderr().contains("hids agent started"),
            "the agent's start",
        );
        a
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let s = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(s.success());
    }

    fn wait_for(&self, what: &dyn Fn() -> bool, label: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !what() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {label}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert_eq!(s.code(), Some(0), "{}", self.stderr());
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("hids run did not stop:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The temp setup: an sshd log, a recording program, and the config with `responses` appended.
struct Setup {
    env: Env,
    log: PathBuf,
    script: PathBuf,
    record: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let env = Env::new();
        let log = env.path().join("auth.log");
        fs::write(&log, "").unwrap();
        let record = env.path().join("calls");
        let script = env.path().join("record.sh");
        // Each argument in brackets, one run per line: what the program received, exactly.
        fs::write(
            &script,
            format!(
                "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done >> '{0}'\necho >> '{0}'\n",
                record.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        Setup {
            env,
            log,
            script,
            record,
        }
    }

    fn config(&self, active_response: &str) {
        self.env.config(&format!(
            "[[logs]]\npath = \"{}\"\nformat = \"syslog\"\nstart = \"beginning\"\n\
             [rules]\ndecoders = [\"{}\"]\nrules = [\"{}\"]\n\
             [active_response]\nenabled = true\n{}",
            self.log.display(),
            repo().join("decoders").display(),
            repo().join("rules").display(),
            active_response.replace("SCRIPT", &self.script.display().to_string())
        ));
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn failures(&self, src: &str, n: usize) {
        let mut f = fs::OpenOptions::new().append(true).open(&self.log).unwrap();
        for i in 0..n {
            writeln!(
                f,
                "Nov 22 03:00:{:02} web1 sshd[4242]: Failed password for root from {src} port {} ssh2",
                i % 60,
                40000 + i
            )
            .unwrap();
        }
    }

    fn alerts(&self, rule: u64) -> Vec<Value> {
        self.env
            .alerts_json()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|a| a["rule"]["id"] == rule)
            .collect()
    }
}

#[test]
fn response_brute_force_blocks_once_unblocks_after_timeout_and_reload_applies() {
    let s = Setup::new();
    // The brute-force rule (100150) blocks for 2s; each failure (100101) also asks a second
    // response that never unblocks: repeats for the same address are not blocked twice.
    let responses = "[[active_response.response]]\ncommand = [\"SCRIPT\", \"brute\", \"{action}\", \"{srcip}\"]\nrules = [100150]\ntimeout = \"2s\"\n\
                     [[active_response.response]]\ncommand = [\"SCRIPT\", \"each\", \"{action}\", \"{srcip}\", \"{user}\"]\nrules = [100101]\ntimeout = 0\n";
    s.config(responses);
    let port = health::free_port();
    health::listen_on(&s.env, port);
    let agent = Agent::start(&s.env, "run1.log");
    s.failures("203.0.113.7", 10);
    agent.wait_for(&|| s.alerts(602).len() == 1, "the unblock alert");
    // The counters, in `hids status` (its row is rewritten every 5 s) and in the metrics: two
    // blocks, the timed one lifted, the one without timeout still in force, the repeats skipped.
    agent.wait_for(
        &|| health::status(&s.env)["agent"]["active_response"]["unblocked"] == 1,
        "the unblock in the status",
    );
    let st = health::status(&s.env);
    let ar = &st["agent"]["active_response"];
    assert_eq!(ar["blocked"], 2, "{st}");
    assert_eq!(ar["in_force"], 1, "{st}");
    assert_eq!(ar["block_failed"], 0, "{st}");
    assert_eq!(ar["unblock_failed"], 0, "{st}");
    // Nine failures hit rule 100101 (the tenth is the brute force): one block, eight repeats.
    assert_eq!(ar["repeated"], 8, "{st}");
    let o = s.env.cmd().arg("status").output().unwrap();
    let text = crate::util::stdout(&o);
    assert!(
        text.contains("active response: 1 address(es) blocked now; 2 block(s), 1 unblock(s), 0 failed block(s), 0 failed unblock(s); skipped: 8 already blocked\n"),
        "{text}"
    );
    let m = health::scrape(port);
    for (series, want) in [
        (
            "hids_active_response_total{action=\"block\",result=\"ok\"}",
            2,
        ),
        (
            "hids_active_response_total{action=\"unblock\",result=\"ok\"}",
            1,
        ),
        (
            "hids_active_response_total{action=\"block\",result=\"failed\"}",
            0,
        ),
        (
            "hids_active_response_skipped_total{reason=\"allowlisted\"}",
            0,
        ),
        ("hids_active_response_blocked", 1),
    ] {
        assert_eq!(health::sample(&m, series), Some(want), "{series}\n{m}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut calls = s.calls();
    calls.sort();
    assert_eq!(
        calls,
        [
            "[brute][add][203.0.113.7]",
            "[brute][delete][203.0.113.7]",
            "[each][add][203.0.113.7][root]",
        ],
        "{}",
        agent.stderr()
    );
    let blocks = s.alerts(601);
    assert_eq!(blocks.len(), 2, "{blocks:#?}");
    assert!(blocks.iter().all(|a| a["data"]["srcip"] == "203.0.113.7"));
    assert!(blocks.iter().any(|a| a["rule"]["description"]
        .as_str()
        .unwrap()
        .contains("for 2s after rule 100150")));
    assert_eq!(s.alerts(603).len(), 0);

    // SIGHUP with a changed response: the next failure uses it.
    s.config(&responses.replace("\"each\"", "\"after-reload\""));
    agent.signal("-HUP");
    agent.wait_for(
        &|| agent.stderr().contains("reloaded the configuration"),
        "the reload",
    );
    s.failures("198.51.100.20", 1);
    agent.wait_for(&|| s.calls().len() == 4, "the response after the reload");
    assert_eq!(
        s.calls()[3],
        "[after-reload][add][198.51.100.20][root]",
        "{}",
        agent.stderr()
    );
    agent.stop();
}

#[test]
fn response_never_for_allowlisted_or_crafted_addresses() {
    let s = Setup::new();
    s.config(
        "allowlist = [\"10.0.0.0/8\", \"2001:db8:1::/48\"]\n\
         [[active_response.response]]\ncommand = [\"SCRIPT\", \"{srcip}\"]\nrules = [100101]\ntimeout = 0\n",
    );
    let agent = Agent::start(&s.env, "run.log");
    let pwned = s.env.path().join("pwned");
    let p = pwned.display();
    for src in [
        "10.1.2.3".to_string(),
        "2001:db8:1::5".to_string(),
        "127.0.0.1".to_string(),
        format!("1.2.3.4;touch${{IFS}}{p}1"),
        format!("$(touch${{IFS}}{p}2)"),
        format!("`touch${{IFS}}{p}3`"),
        format!("1.2.3.4|touch${{IFS}}{p}4"),
        "1.2.3.4\u{1b}[31m".to_string(),
    ] {
        s.failures(&src, 1);
    }
    // The last line is a real address: once it is blocked, everything before it was handled.
    s.failures("198.51.100.30", 1);
    agent.wait_for(
        &|| s.alerts(601).len() == 1,
        "the block of the real address",
    );
    assert_eq!(s.calls(), ["[198.51.100.30]"]);
    for i in 1..=4 {
        assert!(!Path::new(&format!("{p}{i}")).exists(), "pwned{i}");
    }
    let err = agent.stderr();
    assert!(
        err.contains("the source address is not an IP address"),
        "{err}"
    );
    assert!(err.contains("the address is in the allowlist"), "{err}");
    assert!(err.contains("the address is loopback"), "{err}");
    // The diagnostic log shows the crafted text escaped: no raw escape character.
    assert!(!err.contains('\u{1b}'), "{err}");
    agent.stop();
}

#[test]
fn response_hosts_deny_builtin_on_a_temp_file() {
    let s = Setup::new();
    let deny = s.env.path().join("hosts.deny");
    fs::write(&deny, "# managed by hand\nsshd: 192.0.2.99\n").unwrap();
    s.config(&format!(
        "[[active_response.response]]\ncommand = [\"hosts-deny\"]\nhosts_deny_path = \"{}\"\nrules = [100150]\ntimeout = \"2s\"\n",
        deny.display()
    ));
    let agent = Agent::start(&s.env, "run.log");
    s.failures("2001:db8::77", 10);
    agent.wait_for(
        &|| {
            fs::read_to_string(&deny)
                .unwrap()
                .contains("ALL: [2001:db8::77]")
        },
        "the hosts.deny line",
    );
    assert_eq!(
        fs::read_to_string(&deny).unwrap(),
        "# managed by hand\nsshd: 192.0.2.99\nALL: [2001:db8::77]\n"
    );
    agent.wait_for(&|| s.alerts(602).len() == 1, "the unblock");
    assert_eq!(
        fs::read_to_string(&deny).unwrap(),
        "# managed by hand\nsshd: 192.0.2.99\n"
    );
    agent.stop();
}

#[test]
fn response_restart_with_a_pending_unblock_still_unblocks() {
    let s = Setup::new();
    s.config(
        "[[active_response.response]]\ncommand = [\"SCRIPT\", \"{action}\", \"{srcip}\"]\nrules = [100150]\ntimeout = \"4s\"\n",
    );
    let agent = Agent::start(&s.env, "run1.log");
    s.failures("203.0.113.50", 10);
    agent.wait_for(&|| s.alerts(601).len() == 1, "the block");
    agent.stop();
    assert_eq!(s.calls(), ["[add][203.0.113.50]"]);
    // Started again before the unblock is due: it still happens, once.
    let agent = Agent::start(&s.env, "run2.log");
    agent.wait_for(
        &|| s.alerts(602).len() == 1,
        "the unblock after the restart",
    );
    assert_eq!(s.calls(), ["[add][203.0.113.50]", "[delete][203.0.113.50]"]);
    assert!(agent.stderr().contains("blocks recorded with a timeout"));
    agent.stop();
}

/// Whether the firewall built-ins can run for real here: root, nft and iptables installed (tests/run.sh
/// installs them) and network namespaces allowed.
fn firewall_tools() -> bool {
    let ok = |argv: &[&str]| {
        Command::new(argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ok(&["unshare", "--net", "--", "nft", "list", "ruleset"])
        && ok(&["unshare", "--net", "--", "iptables", "-w", "-S", "INPUT"])
}

#[test]
fn response_nftables_and_iptables_builtins_in_a_network_namespace() {
    if !firewall_tools() {
        eprintln!("skipped: needs root, nft, iptables and unshare --net (tests/run.sh installs them as root)");
        return;
    }
    let s = Setup::new();
    s.config(
        "[[active_response.response]]\ncommand = [\"nftables\"]\nrules = [100101]\ntimeout = \"3s\"\n\
         [[active_response.response]]\ncommand = [\"iptables\"]\nrules = [100101]\ntimeout = \"3s\"\n",
    );
    let agent = Agent::start_in_netns(&s.env, "run.log");
    s.failures("203.0.113.7", 1);
    s.failures("2001:db8::7", 1);
    agent.wait_for(&|| s.alerts(601).len() == 4, "the four blocks");
    let set4 = agent.in_netns(&["nft", "list", "set", "inet", "hids", "blocked4"]);
    assert!(set4.contains("203.0.113.7 timeout"), "{set4}");
    let set6 = agent.in_netns(&["nft", "list", "set", "inet", "hids", "blocked6"]);
    assert!(set6.contains("2001:db8::7 timeout"), "{set6}");
    let chain = agent.in_netns(&["nft", "list", "chain", "inet", "hids", "input"]);
    assert!(chain.contains("ip saddr @blocked4 drop"), "{chain}");
    let v4 = agent.in_netns(&["iptables", "-w", "-S", "INPUT"]);
    assert!(v4.contains("-A INPUT -s 203.0.113.7/32 -j DROP"), "{v4}");
    let v6 = agent.in_netns(&["ip6tables", "-w", "-S", "INPUT"]);
    assert!(v6.contains("-A INPUT -s 2001:db8::7/128 -j DROP"), "{v6}");
    agent.wait_for(&|| s.alerts(602).len() == 4, "the four unblocks");
    assert_eq!(s.alerts(603).len(), 0, "{}", agent.stderr());
    let set4 = agent.in_netns(&["nft", "list", "set", "inet", "hids", "blocked4"]);
    assert!(!set4.contains("203.0.113.7"), "{set4}");
    let v4 = agent.in_netns(&["iptables", "-w", "-S", "INPUT"]);
    assert!(!v4.contains("203.0.113.7"), "{v4}");
    let v6 = agent.in_netns(&["ip6tables", "-w", "-S", "INPUT"]);
    assert!(!v6.contains("2001:db8::7"), "{v6}");
    agent.stop();
}
