//! Configuration tests: the shipped file, a full file with every section, and bad files whose
//! messages must name the exact line and column.

use super::*;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Parses `text` and returns the diagnostic headlines, without the file name.
fn errors(text: &str) -> Vec<String> {
    match parse(Path::new("t.toml"), text) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid { diagnostics, .. }) => diagnostics
            .iter()
            .map(|d| d.headline().trim_start_matches("t.toml:").to_string())
            .collect(),
        Err(e) => panic!("{e}"),
    }
}

fn one_error(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap()
}

#[test]
fn shipped_config_parses() {
    let path = repo_file("etc/hids.toml");
    let cfg = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.fim.paths.iter().any(|p| p.path == Path::new("/etc")));
    assert_eq!(cfg.fim.interval, Some(Duration::from_secs(12 * 3600)));
    assert_eq!(cfg.fim.check_mode, CheckMode::Fast);
    assert!(cfg.logs.iter().any(|l| l.format == LogFormat::Journald));
    assert!(cfg.logs.iter().any(|l| l.format == LogFormat::Command));
    assert!(cfg.rules.decoders[0].ends_with("decoders"));
    assert_eq!(cfg.alerts.log_level, 1);
    assert!(!cfg.active_response.enabled);
}

/// The shipped file with its commented-out examples turned on parses too: each documented
/// option is real.
#[test]
fn shipped_config_with_examples_enabled_parses() {
    let text = std::fs::read_to_string(repo_file("etc/hids.toml")).unwrap();
    let mut on = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        // Example settings are "# key = value" or "# [section]" lines.
        let uncommented = t.strip_prefix("# ").filter(|rest| {
            rest.starts_with('[')
                || rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        });
        on.push_str(uncommented.unwrap_or(line));
        on.push('\n');
    }
    let cfg = parse(&repo_file("etc/hids.toml"), &on).unwrap_or_else(|e| panic!("{e}\n{on}"));
    assert_eq!(cfg.alerts.syslog.len(), 2);
    let email = cfg.alerts.email.expect("email section");
    assert_eq!(email.smtp_port, 587);
    assert_eq!(email.routes.len(), 1);
    assert_eq!(cfg.active_response.responses.len(), 1);
    assert_eq!(cfg.fim.daily_time, Some((3, 30)));
    assert!(cfg.agent.metrics_listen.is_some());
}

#[test]
fn full_config_values() {
    let cfg = parse(
        Path::new("/etc/hids/hids.toml"),
        r#"
[agent]
state_dir = "/var/lib/x"
hostname = "api-01"
[fim]
interval = "30m"
check_mode = "full"
full_every = 4
max_io_mb_per_s = 50
[[fim.paths]]
path = "/opt/api"
depth = 3
checks = ["hash", "perm"]
nodiff = true
ignore = ["*.log", "/opt/api/tmp/*"]
restrict_regex = ["\\.conf$"]
max_hashed_size = "10MiB"
[[logs]]
path = "/var/log/nginx/*.log"
format = "nginx"
start = "beginning"
[rules]
decoders = ["decoders", "/usr/share/x.xml"]
[[alerts.syslog]]
server = "10.0.0.5"
protocol = "tls"
format = "cef"
facility = "auth"
ca_file = "ca.pem"
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.agent.state_dir, Path::new("/var/lib/x"));
    assert_eq!(cfg.agent.hostname, "api-01");
    assert_eq!(cfg.fim.interval, Some(Duration::from_secs(1800)));
    assert_eq!(cfg.fim.max_io_bytes_per_s, 50_000_000);
    let p = &cfg.fim.paths[0];
    assert_eq!(p.depth, 3);
    assert!(p.checks.hash && p.checks.perm && !p.checks.size);
    assert!(p.nodiff.covers(Path::new("/opt/api/anything")));
    assert!(p.ignore.matches(Path::new("/opt/api/x/access.log")));
    assert!(p.ignore.matches(Path::new("/opt/api/tmp/a")));
    assert!(!p.ignore.matches(Path::new("/opt/api/tmp/a/b")));
    assert!(p.restrict.matches(Path::new("/opt/api/app.conf")));
    assert_eq!(p.max_hashed_size, 10 << 20);
    assert_eq!(cfg.logs[0].start, StartAt::Beginning);
    assert_eq!(cfg.rules.decoders[0], Path::new("/etc/hids/decoders"));
    assert_eq!(cfg.rules.decoders[1], Path::new("/usr/share/x.xml"));
    let s = &cfg.alerts.syslog[0];
    assert!(matches!(
        s.target,
        SyslogTarget::Server {
            port: 6514,
            protocol: SyslogProtocol::Tls,
            ..
        }
    ));
    assert_eq!(s.format, SyslogFormat::Cef);
    assert_eq!(s.facility, 4);
    assert_eq!(s.ca_file.as_deref(), Some(Path::new("/etc/hids/ca.pem")));
    assert_eq!(cfg.alerts.json.path, Path::new("/var/lib/x/alerts.json"));
}

#[test]
fn empty_file_is_a_valid_config() {
    assert!(errors("").is_empty());
}

#[test]
fn misspelt_key_names_line_column_and_suggestion() {
    assert_eq!(
        one_error("[fim]\ncheck_mode = \"fast\"\n    intervl = 30\n"),
        "3:5: unknown field \"intervl\" in [fim], did you mean \"interval\"?"
    );
}

#[test]
fn misspelt_key_in_array_of_tables() {
    assert_eq!(
        one_error("[[fim.paths]]\npath = \"/etc\"\nreal_time = true\n"),
        "3:1: unknown field \"real_time\" in [[fim.paths]], did you mean \"realtime\"?"
    );
}

#[test]
fn misspelt_section() {
    assert_eq!(
        one_error("[alert]\nlog_level = 3\n"),
        "1:2: unknown field \"alert\" at the top level, did you mean \"alerts\"?"
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        one_error("[[fim.paths]]\npath = \"/etc\"\ndepth = \"deep\"\n"),
        "3:9: invalid value for \"depth\" in [[fim.paths]]: invalid type: string \"deep\", expected u32"
    );
}

#[test]
fn relative_fim_path() {
    assert_eq!(
        one_error("[[fim.paths]]\npath = \"etc/nginx\"\n"),
        "2:8: path \"etc/nginx\" must be absolute"
    );
}

#[test]
fn level_out_of_range() {
    assert_eq!(
        one_error("[alerts]\nlog_level = 17\n"),
        "2:13: level 17 is out of range: levels are 0 to 16"
    );
}

#[test]
fn port_out_of_range() {
    assert_eq!(
        one_error("[[alerts.syslog]]\nserver = \"siem\"\nport = 0\n"),
        "3:8: port 0 is out of range: ports are 1 to 65535"
    );
}

#[test]
fn bad_regex_points_at_the_pattern() {
    assert_eq!(
        one_error("[[fim.paths]]\npath = \"/etc\"\nignore_regex = [\"ok\", \"(x\"]\n"),
        "3:23: bad regular expression \"(x\": unclosed group"
    );
}

#[test]
fn bad_glob_points_at_the_pattern() {
    assert_eq!(
        one_error("[[fim.paths]]\npath = \"/etc\"\nignore = [\"a[\"]\n"),
        "3:11: bad glob \"a[\": unclosed character class; missing ']'"
    );
}

#[test]
fn bad_choice_suggests() {
    assert_eq!(
        one_error("[[logs]]\npath = \"/var/log/x\"\nformat = \"sylog\"\n"),
        "3:10: \"sylog\" is not one of syslog, json, nginx, apache, audit, plain, journald, command; did you mean \"syslog\"?"
    );
}

#[test]
fn bad_duration_and_size() {
    assert_eq!(
        errors("[fim]\ninterval = \"soon\"\n[[fim.paths]]\npath = \"/x\"\nmax_hashed_size = \"big\"\n"),
        vec![
            "2:12: \"soon\" is not a duration: write seconds, or a number with s, m, h or d (\"90s\", \"12h\")".to_string(),
            "5:19: \"big\" is not a size: write bytes, or a number with K, M, G, KiB, MiB or GiB".to_string(),
        ]
    );
}

#[test]
fn bad_time_of_day() {
    assert_eq!(
        one_error("[fim]\ndaily_time = \"25:00\"\n"),
        "2:14: \"25:00\" is not a time of day \"HH:MM\" (00:00 to 23:59)"
    );
}

#[test]
fn command_source_needs_command() {
    assert_eq!(
        one_error("[[logs]]\nformat = \"command\"\n"),
        "1:1: format \"command\" needs command = [\"program\", \"arg\", ...]"
    );
}

#[test]
fn bad_email_and_cidr() {
    assert_eq!(
        errors("[alerts.email]\nsmtp_host = \"x\"\nto = [\"ops at example\"]\n[active_response]\nallowlist = [\"10.0.0.0/33\"]\n"),
        vec![
            "3:7: \"ops at example\" is not an email address".to_string(),
            "5:14: \"10.0.0.0/33\" is not an address or CIDR (\"10.0.0.0/8\")".to_string(),
        ]
    );
}

#[test]
fn syntax_error_is_located() {
    let e = one_error("[fim]\ninterval = \n");
    assert!(e.starts_with("2:12: TOML syntax error"), "{e}");
}

#[test]
fn all_errors_are_reported_at_once() {
    let e = errors(
        "[agent]\nlog_level = \"loud\"\n[fim]\nintervl = 1\ncheck_mode = \"quick\"\n[[fim.paths]]\npath = \"rel\"\nbogus = 1\n[[fim.paths]]\npath = \"/x\"\nchecks = [\"hsah\"]\n[nope]\nx = 1\n",
    );
    let lines: Vec<&str> = e.iter().map(|s| s.split(':').next().unwrap()).collect();
    assert_eq!(lines, ["2", "4", "5", "7", "8", "11", "12"], "{e:#?}");
}

#[test]
fn duplicate_fim_path() {
    assert_eq!(
        one_error("[[fim.paths]]\npath = \"/etc\"\n[[fim.paths]]\npath = \"/etc\"\n"),
        "4:8: \"/etc\" is listed twice"
    );
}

#[test]
fn correlation_limits_default_set_and_bounded() {
    let cfg = parse(Path::new("/etc/hids/x.toml"), "").unwrap();
    assert_eq!(cfg.rules.correlation_max_events, 8192);
    assert_eq!(cfg.rules.correlation_max_log_bytes, 2048);
    assert_eq!(cfg.rules.correlation_max_keys, 65536);
    let cfg = parse(
        Path::new("/etc/hids/x.toml"),
        "[rules]\ncorrelation_max_events = 100\ncorrelation_max_log_bytes = \"4KiB\"\ncorrelation_max_keys = 0\n",
    )
    .unwrap();
    assert_eq!(cfg.rules.correlation_max_events, 100);
    assert_eq!(cfg.rules.correlation_max_log_bytes, 4096);
    assert_eq!(cfg.rules.correlation_max_keys, 0);
    assert_eq!(
        one_error("[rules]\ncorrelation_max_events = -1\n"),
        "2:26: correlation_max_events -1 is out of range: 0 to 16777216"
    );
    assert_eq!(
        one_error("[rules]\ncorrelation_max_log_bytes = 10\n"),
        "2:29: correlation_max_log_bytes must be between 64 bytes and 1MiB"
    );
}

#[test]
fn partial_line_wait_defaults_and_is_bounded() {
    let cfg = parse(
        Path::new("/etc/hids/x.toml"),
        "[[logs]]\npath = \"/var/log/a\"\nformat = \"plain\"\n[[logs]]\npath = \"/var/log/b\"\nformat = \"plain\"\npartial_line_wait = 0\n",
    )
    .unwrap();
    assert_eq!(cfg.logs[0].partial_line_wait, Duration::from_secs(5));
    assert!(cfg.logs[1].partial_line_wait.is_zero());
    assert_eq!(
        one_error(
            "[[logs]]\npath = \"/var/log/x\"\nformat = \"plain\"\npartial_line_wait = \"2h\"\n"
        ),
        "4:21: partial_line_wait must be at most 1h"
    );
}

#[test]
fn email_ca_file_needs_tls() {
    let base = "[alerts.email]\nsmtp_host = \"mx\"\nto = [\"a@b.c\"]\n";
    let e = one_error(&format!("{base}tls = \"none\"\nca_file = \"/ca.pem\"\n"));
    assert!(e.starts_with("5:11: ca_file is only used with tls"), "{e}");
    let cfg = parse(
        Path::new("/etc/hids/t.toml"),
        &format!("{base}tls = \"starttls\"\nca_file = \"ca.pem\"\n"),
    )
    .unwrap();
    let em = cfg.alerts.email.unwrap();
    assert_eq!(em.ca_file.as_deref(), Some(Path::new("/etc/hids/ca.pem")));
}

#[test]
fn active_response_placeholders_and_hosts_deny_path() {
    let ok = parse(
        Path::new("t.toml"),
        "[active_response]\nenabled = true\n[[active_response.response]]\ncommand = [\"hosts-deny\"]\nrules = [1]\nhosts_deny_path = \"/tmp/hd\"\ntimeout = \"2s\"\n[[active_response.response]]\ncommand = [\"/bin/echo\", \"{action}\", \"--ip\", \"{srcip}\", \"{user}\"]\nmin_level = 10\ntimeout = 0\n",
    )
    .unwrap();
    let r = &ok.active_response.responses;
    assert_eq!(r[0].hosts_deny_path.as_deref(), Some(Path::new("/tmp/hd")));
    assert_eq!(r[0].timeout, Some(Duration::from_secs(2)));
    assert_eq!(r[1].timeout, None);
    assert_eq!(
        errors("[[active_response.response]]\ncommand = [\"/bin/echo\", \"{ip}\"]\nrules = [1]\n"),
        vec!["2:25: unknown placeholder \"{ip}\" (known: {action}, {srcip}, {user}, {rule})"]
    );
    assert_eq!(
        errors("[[active_response.response]]\ncommand = [\"ufw\"]\nrules = [1]\nhosts_deny_path = \"hd\"\n"),
        vec![
            "4:19: hosts_deny_path applies only to command = [\"hosts-deny\"]",
            "4:19: path \"hd\" must be absolute"
        ]
    );
}

#[test]
fn the_state_database_is_never_part_of_fim() {
    let text = "[agent]\nstate_dir = \"/var/lib/hids\"\n[fim]\n\
                [[fim.paths]]\npath = \"/var/lib\"\n[[fim.paths]]\npath = \"/etc\"\n";
    let cfg = parse(Path::new("t.toml"), text).unwrap_or_else(|e| panic!("{e}"));
    let var = &cfg.fim.paths[0].ignore;
    for f in ["hids.db", "hids.db-wal", "hids.db-shm"] {
        assert!(var.matches(&Path::new("/var/lib/hids").join(f)), "{f}");
    }
    assert!(!var.matches(Path::new("/var/lib/hids/fim.key")));
    assert!(!var.matches(Path::new("/var/lib/dpkg/hids.db")));
    assert!(cfg.fim.paths[1].ignore.is_empty());
}
