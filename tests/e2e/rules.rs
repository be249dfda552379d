//! The rule engine through the real binary: `hids logtest` phase 3 with correlation kept across
//! the lines of a run, `--rules` (repeatable, in order), and rule errors in `hids check-config`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::util::*;

fn with_input(cmd: &mut Command, input: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

fn project_env() -> Env {
    let env = Env::new();
    env.config(&format!(
        "[rules]\ndecoders = [\"{}\"]\nrules = [\"{}\"]\n",
        repo().join("decoders").display(),
        repo().join("rules").display()
    ));
    env
}

fn ossec_ruleset() -> PathBuf {
    if let Some(p) = std::env::var_os("HIDS_OSSEC_RULESET") {
        return PathBuf::from(p);
    }
    for up in ["../shared/ossec-ruleset", "../../shared/ossec-ruleset"] {
        let p = repo().join(up);
        if p.is_dir() {
            return p;
        }
    }
    panic!("OSSEC's ruleset not found next to the checkout (set HIDS_OSSEC_RULESET)");
}

const FAIL: &str =
    "Nov 21 10:00:00 web01 sshd[77]: Failed password for root from 198.51.100.9 port 3921 ssh2\n";

#[test]
fn logtest_brute_force_pasted_line_by_line_fires_the_frequency_rule() {
    let env = project_env();
    let o = with_input(env.cmd().arg("logtest"), &FAIL.repeat(8));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "alerts exit 1: {}", stderr(&o));
    assert_eq!(out.matches("Rule id: '100101'").count(), 7, "{out}");
    let last = out.rsplit("**Phase 1").next().unwrap();
    assert!(last.contains("Rule id: '100150'"), "{last}");
    assert!(last.contains("Level: '10'"), "{last}");
    assert!(
        last.contains("Description: 'Brute force: 8 authentication failures from 198.51.100.9 within 2 minutes.'"),
        "{last}"
    );
    assert!(
        last.contains("Groups: 'syslog,authentication_failures'"),
        "{last}"
    );
    assert!(out.contains("Fired times: '7'"), "{out}");
}

#[test]
fn logtest_json_carries_the_rule() {
    let env = project_env();
    let o = with_input(
        env.cmd().args(["logtest", "--json"]),
        "203.0.113.7 - - [21/Nov/2025:10:00:00 +0000] \"GET /a/../../etc/passwd HTTP/1.1\" 404 1 \"-\" \"x\"\n\
         Nov 21 10:00:00 web01 sshd[1]: Disconnected from user carol 10.0.3.131 port 52755\n\
         Nov 21 10:00:00 web01 myapp[1]: nothing to see\n",
    );
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["rule"]["id"], 100211);
    assert_eq!(lines[0]["rule"]["level"], 7);
    assert_eq!(lines[0]["rule"]["mitre"][0], "T1190");
    assert!(lines[0]["rule"]["description"]
        .as_str()
        .unwrap()
        .contains("203.0.113.7: GET /a/../../etc/passwd"));
    assert_eq!(lines[1]["rule"]["id"], 100107);
    assert_eq!(lines[1]["rule"]["level"], 0);
    assert!(lines[2]["rule"].is_null());
}

#[test]
fn logtest_rules_flag_loads_ossec_stock_rules_in_order() {
    let env = Env::new();
    env.config("");
    let dir = ossec_ruleset();
    let mut cmd = env.cmd();
    cmd.arg("logtest")
        .arg("--decoders")
        .arg(dir.join("decoder.xml"));
    for f in std::fs::read_to_string(dir.join("rules-include-order.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        cmd.arg("--rules").arg(dir.join("rules").join(f.trim()));
    }
    let o = with_input(&mut cmd, &FAIL.repeat(8));
    let out = stdout(&o);
    assert!(o.status.code() == Some(1), "{}", stderr(&o));
    // OSSEC's 5720 (frequency 6) fires on the 8th failure: the setting plus two.
    let ids: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Rule id: '"))
        .collect();
    assert_eq!(ids.len(), 8, "{out}");
    assert!(ids[..7].iter().all(|i| i.starts_with("5716")), "{ids:?}");
    assert!(ids[7].starts_with("5720"), "{ids:?}");
}

#[test]
fn rules_given_on_the_command_line_must_load() {
    let env = project_env();
    let bad = env.path().join("bad.xml");
    std::fs::write(
        &bad,
        "<group name=\"x,\">\n  <rule id=\"1\" level=\"3\">\n    <match>a</match>\n    <frequency>3</frequency>\n  </rule>\n</group>\n",
    )
    .unwrap();
    let o = with_input(env.cmd().arg("logtest").arg("--rules").arg(&bad), FAIL);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("bad.xml:4:5: unknown element <frequency>"),
        "{err}"
    );
}

#[test]
fn check_config_reports_rule_errors_with_location() {
    let env = Env::new();
    let bad = env.path().join("local_rules.xml");
    std::fs::write(
        &bad,
        "<group name=\"local,\">\n  <rule id=\"100900\" level=\"5\" frequency=\"4\">\n    <match>x</match>\n    <description>d</description>\n  </rule>\n  <rule id=\"100901\" level=\"5\">\n    <if_sid>424242</if_sid>\n    <description>d</description>\n  </rule>\n</group>\n",
    )
    .unwrap();
    env.config(&format!(
        "[rules]\ndecoders = [\"{}\"]\nrules = [\"{}\"]\nlocal_rules = [\"{}\"]\n",
        repo().join("decoders").display(),
        repo().join("rules").display(),
        bad.display()
    ));
    let o = env.cmd().arg("check-config").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("local_rules.xml:2:3: rule 100900: frequency"),
        "{err}"
    );
    assert!(
        err.contains("local_rules.xml:6:3: rule 100901: if_sid 424242"),
        "{err}"
    );
    assert!(err.contains("rules: 2 error(s)"), "{err}");
}

#[test]
fn check_config_counts_the_project_rules() {
    let env = project_env();
    let o = env.cmd().arg("check-config").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("rule(s) from 6 file(s)"),
        "{}",
        stdout(&o)
    );
}
