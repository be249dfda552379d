//! `hids logtest` and the decoder part of `hids check-config`, through the real binary.
//!
//! Golden files live in tests/e2e/golden/logtest/; set UPDATE_GOLDEN=1 to rewrite them after an
//! intended change (and review the diff).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::util::*;

fn golden_dir() -> PathBuf {
    repo().join("tests/e2e/golden/logtest")
}

fn ossec_decoders() -> PathBuf {
    if let Some(p) = std::env::var_os("HIDS_OSSEC_RULESET") {
        return PathBuf::from(p).join("decoder.xml");
    }
    for up in ["../shared/ossec-ruleset", "../../shared/ossec-ruleset"] {
        let p = repo().join(up).join("decoder.xml");
        if p.is_file() {
            return p;
        }
    }
    panic!("OSSEC's decoder.xml not found next to the checkout (set HIDS_OSSEC_RULESET)");
}

/// Runs `cmd` with `input` on stdin.
fn run_with_input(mut cmd: Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The binary may exit before reading (a usage error): a closed pipe is not a failure here.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

fn check_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    if want != actual {
        let diff: Vec<String> = want
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}:\n  want: {a}\n  got:  {b}", i + 1))
            .collect();
        panic!(
            "{} differs from the output ({} vs {} lines):\n{}",
            path.display(),
            want.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

fn env_with_project_decoders() -> Env {
    let env = Env::new();
    env.config(&format!(
        "[rules]\ndecoders = [\"{}\"]\n",
        repo().join("decoders").display()
    ));
    env
}

#[test]
fn logtest_text_output_matches_golden() {
    let env = env_with_project_decoders();
    let input = std::fs::read(golden_dir().join("input.log")).unwrap();
    let mut cmd = env.cmd();
    cmd.arg("logtest");
    let o = run_with_input(cmd, &input);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains('\x1b'), "control characters must be escaped");
    check_golden("text.out", &out);
}

#[test]
fn logtest_json_output_matches_golden() {
    let env = env_with_project_decoders();
    let mut cmd = env.cmd();
    cmd.args(["logtest", "--json", "-f"])
        .arg(golden_dir().join("input.log"));
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["predecoder", "decoder", "data", "rule"] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
        assert!(v["rule"].is_null());
    }
    check_golden("json.out", &out);
}

#[test]
fn logtest_quiet_prints_only_a_summary() {
    let env = env_with_project_decoders();
    let mut cmd = env.cmd();
    cmd.args(["logtest", "-q", "-f"])
        .arg(golden_dir().join("input.log"));
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    check_golden("quiet.out", &stdout(&o));
}

#[test]
fn logtest_with_ossec_stock_decoders_given_on_the_command_line() {
    let env = Env::new();
    env.config("");
    let mut cmd = env.cmd();
    cmd.args(["logtest", "--json", "--decoders"])
        .arg(ossec_decoders());
    let o = run_with_input(
        cmd,
        b"Apr 14 19:28:21 gorilla sshd[31274]: Connection closed by 192.168.1.33\n\
          [Fri Dec 13 06:59:54 2013] [error] [client 12.34.65.78] File does not exist: /var/www/x\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["decoder"]["name"], "sshd");
    assert_eq!(lines[1]["decoder"]["name"], "apache-errorlog");
    assert_eq!(lines[1]["data"]["srcip"], "12.34.65.78");
}

#[test]
fn logtest_decoders_flag_is_repeatable_and_loads_in_order() {
    let env = Env::new();
    env.config("");
    let a = env.path().join("a.xml");
    let b = env.path().join("b.xml");
    std::fs::write(
        &a,
        "<decoder name=\"app\"><prematch>^app: </prematch></decoder>",
    )
    .unwrap();
    std::fs::write(
        &b,
        "<decoder name=\"app-user\"><parent>app</parent><regex>user=(\\S+)</regex><order>user</order></decoder>",
    )
    .unwrap();
    let mut cmd = env.cmd();
    cmd.args(["logtest", "--json", "--decoders"])
        .arg(&a)
        .arg("--decoders")
        .arg(&b);
    let o = run_with_input(cmd, b"app: user=ann\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"dstuser\":\"ann\""), "{}", stdout(&o));
    // The other order: the child comes before its parent.
    let mut cmd = env.cmd();
    cmd.args(["logtest", "--decoders"])
        .arg(&b)
        .arg("--decoders")
        .arg(&a);
    let o = run_with_input(cmd, b"app: user=ann\n");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("parent decoder 'app' is not defined"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn logtest_rejects_an_unknown_log_format() {
    let env = env_with_project_decoders();
    let mut cmd = env.cmd();
    cmd.args(["logtest", "--log-format", "xml"]);
    let o = run_with_input(cmd, b"x\n");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown log format 'xml'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn logtest_location_and_log_format_reach_the_event() {
    let env = env_with_project_decoders();
    let mut cmd = env.cmd();
    cmd.args([
        "logtest",
        "--json",
        "--location",
        "/var/log/nginx/access.log",
        "--log-format",
        "json",
    ]);
    let o = run_with_input(
        cmd,
        b"Nov 21 10:00:00 h sshd[1]: not split in json format\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["location"], "/var/log/nginx/access.log");
    assert_eq!(v["predecoder"]["program_name"], serde_json::Value::Null);
}

#[test]
fn check_config_reports_decoder_errors_with_location() {
    let env = Env::new();
    let bad = env.path().join("bad.xml");
    std::fs::write(
        &bad,
        "<decoder name=\"ok\">\n  <prematch>^ok</prematch>\n</decoder>\n\n<decoder name=\"broken\">\n  <prematch_pcre2>(unclosed</prematch_pcre2>\n</decoder>\n",
    )
    .unwrap();
    env.config(&format!("[rules]\ndecoders = [\"{}\"]\n", bad.display()));
    let o = env.cmd().arg("check-config").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("bad.xml:6:"), "{err}");
    assert!(err.contains("'(unclosed'"), "{err}");
    assert!(err.contains('^'), "caret expected: {err}");
}

#[test]
fn check_config_names_non_linear_patterns() {
    let env = Env::new();
    let f = env.path().join("d.xml");
    std::fs::write(
        &f,
        "<decoder name=\"la\">\n  <prematch_pcre2>^GET (?!/health)</prematch_pcre2>\n</decoder>\n",
    )
    .unwrap();
    env.config(&format!("[rules]\ndecoders = [\"{}\"]\n", f.display()));
    let o = env.cmd().arg("check-config").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("non-linear"), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("1 decoder(s) from 1 file(s), 1 warning(s)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn check_config_loads_the_project_decoders_cleanly() {
    let env = env_with_project_decoders();
    let o = env.cmd().arg("check-config").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("0 warning(s)"), "{}", stdout(&o));
}

#[test]
fn logtest_survives_huge_lines_and_invalid_utf8() {
    let env = env_with_project_decoders();
    let f = env.path().join("hostile.log");
    let mut data = Vec::new();
    data.extend(vec![b'A'; 1 << 20]);
    data.extend(b"\n\xff\xfe sshd \xc3\n");
    data.extend(b"Nov 21 10:00:00 h sshd[1]: Invalid user \xe9\xff from 198.51.100.9 port 22\n");
    std::fs::write(&f, &data).unwrap();
    let o = env
        .cmd()
        .args(["logtest", "-q", "-f"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("lines read: 3"), "{out}");
    assert!(out.contains("lines truncated: 1"), "{out}");
    assert!(out.contains("lines with invalid UTF-8: 2"), "{out}");
    assert!(out.contains("decoder sshd: 1"), "{out}");
}
