//! Alert outputs against real servers on 127.0.0.1: rsyslog over UDP, TCP, TLS and a local
//! socket, checked byte by byte; an SMTP server (aiosmtpd) with STARTTLS and authentication;
//! servers down then up; `kill -9` with alerts in the spool; crafted log lines.
//!
//! The `hids` binary raises alerts here through `hids alerts test` (the operator's command to try
//! the outputs), which goes through the same spool and delivery as the agent. Tests that need a
//! short email rate window or fast retries drive the library's `Outputs` directly.

use std::process::Stdio;
use std::time::Duration;

use hids::config;
use hids::outputs::format::{syslog_frame, FrameContext};
use hids::outputs::record::AlertRecord;
use hids::outputs::{Options, Outputs};

use crate::servers::{free_port, make_certs, wait_for, Listen, Rsyslog, Smtp};
use crate::util::{stderr, stdout, Env};

const INJECT_BCC: &str = "\r\nBcc: attacker@example.com";
const INJECT_FRAME: &str =
    "\n<13>Nov 22 01:52:41 web-01 sshd[1]: Accepted password for root from 203.0.113.9\n";

fn records(env: &Env) -> Vec<AlertRecord> {
    env.alerts_json()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `hids alerts test` with `args`; returns the child's pid and its output.
fn alerts_test(env: &Env, args: &[&str]) -> (u32, std::process::Output) {
    let child = env
        .cmd()
        .args(["alerts", "test"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (pid, child.wait_with_output().unwrap())
}

fn syslog_section(target: &str, format: &str) -> String {
    format!("[alerts.file]\nenabled = false\n[[alerts.syslog]]\n{target}\nformat = \"{format}\"\n")
}

/// Sends three alerts (one carrying a crafted frame) and checks that rsyslog received exactly
/// the frames hids renders, byte for byte, one message per alert.
fn check_frames(env: &Env, rs: &Rsyslog, format: config::SyslogFormat, local: bool) {
    let (pid, o) = alerts_test(
        env,
        &[
            "--count",
            "3",
            "--level",
            "10",
            "--field",
            "srcip=203.0.113.7",
            "--field",
            "user=root",
            "--full-log",
            &format!("Failed password{INJECT_FRAME}{INJECT_BCC}"),
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let got = rs.wait_lines(3);
    let recs = records(env);
    assert_eq!(recs.len(), 3);
    let cx = FrameContext {
        format,
        facility: 16,
        hostname: "testhost",
        local,
        pid,
    };
    let expected: Vec<String> = recs.iter().map(|r| syslog_frame(r, &cx)).collect();
    assert_eq!(got, expected);
    assert!(got.iter().all(|l| !l.starts_with("<13>")));
}

#[test]
fn syslog_udp_rfc5424_byte_by_byte() {
    let env = Env::new();
    let port = free_port();
    let rs = Rsyslog::start(&env.path().join("rs"), Listen::Udp(port));
    env.config(&syslog_section(
        &format!("server = \"127.0.0.1\"\nport = {port}\nprotocol = \"udp\""),
        "rfc5424",
    ));
    check_frames(&env, &rs, config::SyslogFormat::Rfc5424, false);
}

#[test]
fn syslog_tcp_octet_counting_json_and_cef_byte_by_byte() {
    for (fmt, f) in [
        ("json", config::SyslogFormat::Json),
        ("cef", config::SyslogFormat::Cef),
        ("rfc3164", config::SyslogFormat::Rfc3164),
    ] {
        let env = Env::new();
        let port = free_port();
        let rs = Rsyslog::start(&env.path().join("rs"), Listen::Tcp(port));
        env.config(&syslog_section(
            &format!("server = \"127.0.0.1\"\nport = {port}\nprotocol = \"tcp\""),
            fmt,
        ));
        check_frames(&env, &rs, f, false);
        if fmt == "json" {
            for l in rs.lines() {
                let json = &l[l.find('{').unwrap()..];
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                assert_eq!(v["rule"]["level"], 10);
                assert!(v["full_log"]
                    .as_str()
                    .unwrap()
                    .contains("\nBcc: attacker@example.com"));
            }
        }
    }
}

#[test]
fn syslog_tls_verifies_the_server_and_delivers() {
    let env = Env::new();
    let certs = make_certs(env.path(), "ca");
    let other = make_certs(env.path(), "other");
    let port = free_port();
    let rs = Rsyslog::start(&env.path().join("rs"), Listen::Tls(port, &certs));
    // A CA that did not sign the server's certificate: nothing is sent, the alert stays spooled.
    env.config(&syslog_section(
        &format!(
            "server = \"127.0.0.1\"\nport = {port}\nprotocol = \"tls\"\nca_file = \"{}\"",
            other.ca.display()
        ),
        "rfc5424",
    ));
    let (_, o) = alerts_test(&env, &["--timeout", "3"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("1 still waiting"), "{}", stdout(&o));
    assert!(rs.lines().is_empty());
    // The right CA: the waiting alert and the new ones arrive.
    std::fs::remove_dir_all(env.state_dir()).unwrap();
    env.config(&syslog_section(
        &format!(
            "server = \"127.0.0.1\"\nport = {port}\nprotocol = \"tls\"\nca_file = \"{}\"",
            certs.ca.display()
        ),
        "rfc5424",
    ));
    check_frames(&env, &rs, config::SyslogFormat::Rfc5424, false);
}

#[test]
fn syslog_local_socket_rfc3164() {
    let env = Env::new();
    let sock = env.path().join("log.sock");
    let rs = Rsyslog::start(&env.path().join("rs"), Listen::Unix(&sock));
    env.config(&syslog_section(
        &format!("socket = \"{}\"", sock.display()),
        "rfc3164",
    ));
    check_frames(&env, &rs, config::SyslogFormat::Rfc3164, true);
}

fn lib_config(env: &Env, body: &str) -> config::Config {
    let p = env.config(body);
    config::load(&p).unwrap()
}

fn fast() -> Options {
    Options {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ..Options::default()
    }
}

fn test_record(cfg: &config::Config, n: u32) -> AlertRecord {
    let mut r = hids::outputs::internal_record(
        &cfg.agent.hostname,
        5716,
        8,
        format!("alert {n}"),
        vec!["sshd".into()],
    );
    r.full_log = Some(format!("line {n}"));
    r
}

#[test]
fn syslog_server_down_then_up_every_alert_arrives_once() {
    let env = Env::new();
    let port = free_port();
    let mut rs = Rsyslog::start(&env.path().join("rs"), Listen::Tcp(port));
    let cfg = lib_config(&env, &format!("[alerts.file]\nenabled = false\n[alerts.json]\nenabled = false\n[[alerts.syslog]]\nserver = \"127.0.0.1\"\nport = {port}\nformat = \"json\"\n"));
    let out = Outputs::start(
        &cfg.alerts,
        &cfg.agent.hostname,
        &cfg.agent.state_dir,
        fast(),
    )
    .unwrap();
    for n in 0..20 {
        out.submit_record(test_record(&cfg, n)).unwrap();
    }
    assert!(out.wait_idle(Duration::from_secs(30)));
    assert_eq!(rs.wait_lines(20).len(), 20);
    rs.stop();
    for n in 20..40 {
        out.submit_record(test_record(&cfg, n)).unwrap();
    }
    // Down for a while: the alerts wait in the spool.
    std::thread::sleep(Duration::from_secs(1));
    assert!(!out.pending().unwrap().is_empty());
    rs.restart(Listen::Tcp(port));
    assert!(out.wait_idle(Duration::from_secs(60)));
    let got = rs.wait_lines(40);
    assert!(out.shutdown(Duration::from_secs(2)).unwrap().is_empty());
    let mut descs: Vec<String> = got
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l[l.find('{').unwrap()..]).unwrap();
            v["rule"]["description"].as_str().unwrap().to_string()
        })
        .collect();
    descs.sort_by_key(|d| d[6..].parse::<u32>().unwrap());
    assert_eq!(
        descs,
        (0..40).map(|n| format!("alert {n}")).collect::<Vec<_>>()
    );
}

#[test]
fn kill_9_with_alerts_spooled_then_restart_delivers_all() {
    let env = Env::new();
    let port = free_port();
    env.config(&format!(
        "[[alerts.syslog]]\nserver = \"127.0.0.1\"\nport = {port}\nformat = \"rfc5424\"\n"
    ));
    // Nothing listens yet: the 25 alerts are spooled, written to the files, and retried for syslog.
    let mut child = env
        .cmd()
        .args(["alerts", "test", "--count", "25", "--timeout", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = || stdout(&env.cmd().args(["alerts", "status"]).output().unwrap());
    assert!(
        wait_for(60, || status().contains(&format!(
            "syslog tcp://127.0.0.1:{port} rfc5424: 25 waiting"
        ))),
        "{}",
        status()
    );
    // The spool holds them for every output from the start: the file outputs write them at their
    // own pace, syslog keeps them.
    let lines = || env.alerts_json().matches('\n').count();
    assert!(wait_for(60, || lines() == 25), "{}", status());
    let _ = std::process::Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert_eq!(records(&env).len(), 25);
    let rs = Rsyslog::start(&env.path().join("rs"), Listen::Tcp(port));
    let o = env
        .cmd()
        .args(["alerts", "flush", "--timeout", "60"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("all delivered"));
    let got = rs.wait_lines(25);
    assert_eq!(got.len(), 25, "{got:#?}");
    let mut fired: Vec<u32> = got
        .iter()
        .map(|l| {
            let i = l.find("firedtimes=\"").unwrap() + 12;
            l[i..l[i..].find('"').unwrap() + i].parse().unwrap()
        })
        .collect();
    fired.sort();
    assert_eq!(fired, (1..=25).collect::<Vec<_>>());
    assert_eq!(status().trim(), "spool empty");
}

fn email_section(port: u16, extra: &str) -> String {
    format!(
        "[alerts.file]\nenabled = false\n[alerts.email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nfrom = \"hids@testhost.example\"\nto = [\"ops@example.com\"]\nmin_level = 7\n{extra}"
    )
}

fn no_bare_cr_or_lf(raw: &[u8]) {
    for (i, b) in raw.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && raw[i - 1] == b'\r', "bare LF at {i}");
        }
        if *b == b'\r' {
            assert_eq!(raw.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
}

#[test]
fn email_starttls_auth_headers_body_routes_and_injection() {
    let env = Env::new();
    let certs = make_certs(env.path(), "ca");
    let port = free_port();
    let smtp = Smtp::start(
        &env.path().join("mail"),
        port,
        Some(&certs),
        Some(("hids", "s3cret")),
    );
    let pw = env.path().join("smtp-password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let body = email_section(
        port,
        &format!(
            "tls = \"starttls\"\nca_file = \"{}\"\nuser = \"hids\"\npassword_file = \"{}\"\n[[alerts.email.route]]\ngroups = [\"authentication_failed\"]\nmin_level = 3\nto = [\"security@example.com\"]\n",
            certs.ca.display(),
            pw.display()
        ),
    );
    env.config(&body);
    // A password file others can read is refused.
    let (_, o) = alerts_test(&env, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();

    let desc = format!("sshd: login failed for root{INJECT_BCC}");
    let runs: [&[&str]; 4] = [
        // Level 10 in the routed group: ops and security.
        &[
            "--level",
            "10",
            "--group",
            "authentication_failed",
            "--description",
            &desc,
            "--full-log",
            &format!("bare\rCR and LF\n{INJECT_BCC}"),
        ],
        // Level 5 in the routed group: security only.
        &[
            "--level",
            "5",
            "--group",
            "authentication_failed",
            "--description",
            "five",
        ],
        // Level 5 elsewhere: nobody.
        &["--level", "5", "--group", "web", "--description", "nobody"],
        // Level 3 with alert_by_email: ops, whatever min_level says.
        &[
            "--level",
            "3",
            "--group",
            "web",
            "--description",
            "forced",
            "--alert-by-email",
        ],
    ];
    for args in runs {
        let (_, o) = alerts_test(&env, args);
        assert!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
    }
    let mails = smtp.mails();
    assert_eq!(mails.len(), 3, "{mails:#?}");
    let rcpts: Vec<Vec<String>> = mails.iter().map(|m| m.rcpt_tos.clone()).collect();
    assert_eq!(
        rcpts,
        vec![
            vec![
                "ops@example.com".to_string(),
                "security@example.com".to_string()
            ],
            vec!["security@example.com".to_string()],
            vec!["ops@example.com".to_string()],
        ]
    );
    let m = &mails[0];
    assert_eq!(m.user.as_deref(), Some("hids"));
    assert_eq!(m.mail_from, "hids@testhost.example");
    no_bare_cr_or_lf(&m.raw);
    assert_eq!(
        m.header("Subject").unwrap(),
        "hids alert: level 10 on testhost: sshd: login failed for root\\r\\nBcc: attacker@example.com"
    );
    assert!(m.header("Bcc").is_none());
    assert!(!m
        .headers()
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("bcc") || v.starts_with("attacker")));
    assert_eq!(
        m.header("To").unwrap(),
        "ops@example.com, security@example.com"
    );
    let b = m.body();
    assert!(b.starts_with("hids alert: level 10 on testhost\r\n\r\nRule: 871 (level 10) -> 'sshd: login failed for root\\r\\nBcc: attacker@example.com'\r\n"), "{b:?}");
    assert!(
        b.contains("\r\nbare\\rCR and LF\\n\\r\\nBcc: attacker@example.com\r\n"),
        "{b:?}"
    );
    for m in &mails {
        no_bare_cr_or_lf(&m.raw);
        assert!(!m.rcpt_tos.iter().any(|r| r.contains("attacker")));
    }
}

#[test]
fn email_hourly_cap_groups_the_overflow_into_a_digest() {
    let env = Env::new();
    let port = free_port();
    let smtp = Smtp::start(&env.path().join("mail"), port, None, None);
    let cfg = lib_config(
        &env,
        &email_section(
            port,
            "tls = \"none\"\nmax_per_hour = 2\n[alerts.json]\nenabled = false\n",
        ),
    );
    let window = Duration::from_secs(4);
    let out = Outputs::start(
        &cfg.alerts,
        &cfg.agent.hostname,
        &cfg.agent.state_dir,
        Options {
            email_window: window,
            ..fast()
        },
    )
    .unwrap();
    for n in 0..7 {
        out.submit_record(test_record(&cfg, n)).unwrap();
    }
    assert!(out.wait_idle(Duration::from_secs(30)));
    let sent_at_idle = smtp.mails().len();
    out.shutdown(Duration::from_secs(1)).unwrap();
    let mails = smtp.mails();
    assert_eq!(mails.len(), sent_at_idle);
    // At most 2 mails in any window (less half a second for the way from client to server).
    let mut times: Vec<std::time::SystemTime> = (1..=mails.len())
        .map(|n| {
            std::fs::metadata(smtp.dir.join(format!("{n}.eml")))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    times.sort();
    for (i, t) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .filter(|u| u.duration_since(*t).unwrap() < window - Duration::from_millis(500))
            .count();
        assert!(within <= 2, "{within} mails within one window: {times:?}");
    }
    let mut seen = Vec::new();
    let mut digests = 0;
    for m in &mails {
        no_bare_cr_or_lf(&m.raw);
        let subject = m.header("Subject").unwrap();
        let b = m.body();
        if subject.starts_with("hids alert digest: ") {
            digests += 1;
            assert!(
                b.contains("arrived after this hour's limit of 2 mails"),
                "{b}"
            );
            assert!(b.contains(" x rule 5716 (level 8): alert "), "{b}");
        } else {
            assert!(
                subject.starts_with("hids alert: level 8 on testhost: alert "),
                "{subject}"
            );
        }
        for line in b.split("\r\n") {
            if let Some(d) = line.strip_prefix("Rule: 5716 (level 8) -> 'alert ") {
                seen.push(d.trim_end_matches('\'').parse::<u32>().unwrap());
            }
        }
    }
    assert!(digests >= 1, "{digests} digests");
    seen.sort();
    assert_eq!(
        seen,
        (0..7).collect::<Vec<_>>(),
        "every alert in exactly one mail"
    );
}

#[test]
fn email_cap_counts_mails_of_earlier_runs_and_waiting_alerts_go_as_a_digest() {
    let env = Env::new();
    let port = free_port();
    let smtp = Smtp::start(&env.path().join("mail"), port, None, None);
    let cfg = lib_config(
        &env,
        &email_section(port, "tls = \"none\"\nmax_per_hour = 2\n"),
    );
    // Two mails went out just now, before a restart.
    let st = hids::state::State::open(&cfg.agent.state_dir).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for _ in 0..2 {
        st.conn
            .execute(
                "INSERT INTO email_sent (output, sent_ms) VALUES ('email', ?1)",
                [now],
            )
            .unwrap();
    }
    drop(st);
    let window = Duration::from_secs(4);
    let out = Outputs::start(
        &cfg.alerts,
        &cfg.agent.hostname,
        &cfg.agent.state_dir,
        Options {
            email_window: window,
            ..fast()
        },
    )
    .unwrap();
    for n in 0..4 {
        out.submit_record(test_record(&cfg, n)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(out.pending().unwrap(), vec![("email".to_string(), 4)]);
    assert!(smtp.mails().is_empty());
    assert!(out.wait_idle(Duration::from_secs(30)));
    out.shutdown(Duration::from_secs(1)).unwrap();
    let mails = smtp.mails();
    let subjects: Vec<String> = mails.iter().map(|m| m.header("Subject").unwrap()).collect();
    assert_eq!(
        subjects,
        vec![
            "hids alert: level 8 on testhost: alert 0".to_string(),
            "hids alert digest: 3 alerts on testhost, highest level 8".to_string(),
        ]
    );
    let digest = mails[1].body();
    assert!(
        digest.contains("  3 x rule 5716 (level 8): alert 1\r\n"),
        "{digest}"
    );
    for n in 1..4 {
        assert!(
            digest.contains(&format!("Rule: 5716 (level 8) -> 'alert {n}'\r\n")),
            "{digest}"
        );
    }
}

#[test]
fn email_server_down_then_up_every_alert_arrives_once() {
    let env = Env::new();
    let port = free_port();
    let cfg = lib_config(
        &env,
        &email_section(port, "tls = \"none\"\nmax_per_hour = 0\n"),
    );
    let out = Outputs::start(
        &cfg.alerts,
        &cfg.agent.hostname,
        &cfg.agent.state_dir,
        fast(),
    )
    .unwrap();
    for n in 0..5 {
        out.submit_record(test_record(&cfg, n)).unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(out.pending().unwrap(), vec![("email".to_string(), 5)]);
    let smtp = Smtp::start(&env.path().join("mail"), port, None, None);
    assert!(out.wait_idle(Duration::from_secs(30)));
    out.shutdown(Duration::from_secs(1)).unwrap();
    let mut subjects: Vec<String> = smtp
        .mails()
        .iter()
        .map(|m| m.header("Subject").unwrap())
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        (0..5)
            .map(|n| format!("hids alert: level 8 on testhost: alert {n}"))
            .collect::<Vec<_>>()
    );
}

/// A mail the server refuses for good (5xx) is given up after a few tries instead of holding back
/// every mail behind it.
#[test]
fn email_refused_for_good_is_given_up_and_later_alerts_still_go_out() {
    let env = Env::new();
    let port = free_port();
    let cfg = lib_config(
        &env,
        &email_section(port, "tls = \"none\"\nmax_per_hour = 0\n"),
    );
    let smtp = Smtp::start_rejecting(&env.path().join("mail"), port, "REFUSE-THIS");
    let out = Outputs::start(
        &cfg.alerts,
        &cfg.agent.hostname,
        &cfg.agent.state_dir,
        fast(),
    )
    .unwrap();
    let mut bad = test_record(&cfg, 0);
    bad.full_log = Some("REFUSE-THIS".into());
    out.submit_record(bad).unwrap();
    for n in 1..4 {
        out.submit_record(test_record(&cfg, n)).unwrap();
    }
    assert!(
        out.wait_idle(Duration::from_secs(30)),
        "{:?}",
        out.pending()
    );
    out.shutdown(Duration::from_secs(1)).unwrap();
    let subjects: Vec<String> = smtp
        .mails()
        .iter()
        .map(|m| m.header("Subject").unwrap())
        .collect();
    assert_eq!(
        subjects,
        (1..4)
            .map(|n| format!("hids alert: level 8 on testhost: alert {n}"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn alert_files_are_written_and_rotated() {
    let env = Env::new();
    env.config("[alerts.json]\nrotate = \"size\"\nmax_size = 2000\nkeep = 2\n");
    let (_, o) = alerts_test(
        &env,
        &["--count", "20", "--full-log", &format!("x{INJECT_FRAME}")],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let log = std::fs::read_to_string(env.state_dir().join("alerts.log")).unwrap();
    assert_eq!(
        log.matches("\n** Alert ").count() + usize::from(log.starts_with("** Alert ")),
        20
    );
    assert!(log.contains("Rule: 871 (level 7) -> 'hids test alert'\n"));
    assert!(!log.lines().any(|l| l.starts_with("<13>")));
    let dir = env.state_dir();
    let json: Vec<String> = ["alerts.json.2", "alerts.json.1", "alerts.json"]
        .iter()
        .flat_map(|n| {
            std::fs::read_to_string(dir.join(n))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!dir.join("alerts.json.3").exists());
    assert!(json.len() < 20, "older files beyond keep were removed");
    for l in &json {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["agent"]["name"], "testhost");
    }
}

#[test]
fn a_second_process_only_spools_while_another_delivers() {
    let env = Env::new();
    let port = free_port();
    env.config(&format!("[alerts.file]\nenabled = false\n[[alerts.syslog]]\nserver = \"127.0.0.1\"\nport = {port}\nformat = \"rfc5424\"\n"));
    // The first process delivers (and retries, the server being down) ...
    let first = env
        .cmd()
        .args([
            "alerts",
            "test",
            "--count",
            "3",
            "--timeout",
            "120",
            "--description",
            "first",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = || stdout(&env.cmd().args(["alerts", "status"]).output().unwrap());
    assert!(
        wait_for(60, || status().contains("rfc5424: 3 waiting")),
        "{}",
        status()
    );
    // ... so a second one only spools, and flush refuses to deliver in parallel.
    let o = env
        .cmd()
        .args(["alerts", "flush", "--timeout", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("another hids process"),
        "{}",
        stderr(&o)
    );
    let second = env
        .cmd()
        .args([
            "alerts",
            "test",
            "--count",
            "2",
            "--timeout",
            "120",
            "--description",
            "second",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(60, || status().contains("rfc5424: 5 waiting")),
        "{}",
        status()
    );
    let rs = Rsyslog::start(&env.path().join("rs"), Listen::Tcp(port));
    let o1 = first.wait_with_output().unwrap();
    let o2 = second.wait_with_output().unwrap();
    assert!(o1.status.success(), "{}", stdout(&o1));
    assert!(o2.status.success(), "{}", stdout(&o2));
    assert!(
        stdout(&o2).contains("the running agent delivers them"),
        "{}",
        stdout(&o2)
    );
    let got = rs.wait_lines(5);
    assert_eq!(got.len(), 5, "{got:#?}");
    assert_eq!(
        got.iter()
            .filter(|l| l.contains("Rule: 871 - first;"))
            .count(),
        3
    );
    assert_eq!(
        got.iter()
            .filter(|l| l.contains("Rule: 871 - second;"))
            .count(),
        2
    );
}

#[test]
fn email_implicit_tls() {
    let env = Env::new();
    let certs = make_certs(env.path(), "ca");
    let port = free_port();
    let smtp = Smtp::start_implicit(&env.path().join("mail"), port, &certs);
    env.config(&email_section(
        port,
        &format!("tls = \"tls\"\nca_file = \"{}\"\n", certs.ca.display()),
    ));
    let (_, o) = alerts_test(&env, &["--level", "9", "--description", "over TLS"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0].header("Subject").unwrap(),
        "hids alert: level 9 on testhost: over TLS"
    );
}
