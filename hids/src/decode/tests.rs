//! Decoder loading and decoding tests, including OSSEC's stock decoders and its test suite.

use std::path::Path;

use super::*;
use crate::event::LogFormat;

fn set(xml: &str) -> DecoderSet {
    match DecoderSet::parse(Path::new("t.xml"), xml) {
        Ok(s) => s,
        Err(e) => panic!(
            "{}",
            e.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn errors(xml: &str) -> Vec<crate::diag::Diagnostic> {
    DecoderSet::parse(Path::new("t.xml"), xml).expect_err("should fail")
}

fn decode(s: &DecoderSet, line: &str) -> crate::event::Decoded {
    let pre = predecode(line, LogFormat::Syslog);
    s.decode(&pre, &mut DecodeCache::default())
}

#[test]
fn stock_decoders_load_without_errors() {
    let dir = crate::testutil::ossec_ruleset();
    let s = DecoderSet::load(&[dir.join("decoder.xml")]).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(s.decoders().len() > 300);
}

/// The options of one section as Python 2's `RawConfigParser` reads them (OSSEC's test runner):
/// lower-cased names, ` ;` inline comments cut at the first ';' after a space, repeated keys keep
/// the last value, repeated sections merge, indented lines continue a value.
fn read_ini(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut cur: Option<usize> = None;
    let mut opt: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let first_word = line.split_whitespace().next().unwrap_or("");
        if first_word.eq_ignore_ascii_case("rem") && line.starts_with(['r', 'R']) {
            continue;
        }
        if let (true, Some(ci), Some(name)) =
            (line.starts_with(char::is_whitespace), cur, opt.clone())
        {
            let v = line.trim();
            if !v.is_empty() {
                let sec = &mut sections[ci].1;
                if let Some(slot) = sec.iter_mut().find(|(k, _)| *k == name) {
                    slot.1.push('\n');
                    slot.1.push_str(v);
                }
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            if let Some(end) = rest.find(']') {
                if end > 0 {
                    let name = rest[..end].to_string();
                    cur = Some(match sections.iter().position(|(n, _)| *n == name) {
                        Some(i) => i,
                        None => {
                            sections.push((name, Vec::new()));
                            sections.len() - 1
                        }
                    });
                    opt = None;
                    continue;
                }
            }
        }
        let Some(ci) = cur else { continue };
        // OPTCRE: (?P<option>[^:=\s][^:=]*)\s*(?P<vi>[:=])\s*(?P<value>.*)$
        let Some(d) = line.find([':', '=']) else {
            continue;
        };
        if d == 0 || line.starts_with(char::is_whitespace) {
            continue;
        }
        let name = line[..d].trim_end().to_lowercase();
        let mut val = line[d + 1..].to_string();
        if let Some(pos) = val.find(';') {
            let before = if pos == 0 {
                val.chars().last()
            } else {
                val[..pos].chars().last()
            };
            if before.is_some_and(char::is_whitespace) {
                val.truncate(pos);
            }
        }
        let mut val = val.trim().to_string();
        if val == "\"\"" {
            val.clear();
        }
        let sec = &mut sections[ci].1;
        match sec.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = val,
            None => sec.push((name.clone(), val)),
        }
        opt = Some(name);
    }
    sections
}

/// Every case of OSSEC's own test suite: our decoder name must be the one OSSEC produced.
#[test]
fn ossec_test_suite_decoder_names_agree_with_ossec() {
    let dir = crate::testutil::ossec_ruleset();
    let set = DecoderSet::load(&[dir.join("decoder.xml")]).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let tsv = std::fs::read_to_string(dir.join("ossec-results.tsv")).unwrap();
    let mut inis = std::collections::HashMap::new();
    let mut cases = 0;
    let mut disagreements = Vec::new();
    let mut cache = DecodeCache::default();
    for row in tsv.lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (file, section, key, got) = (cols[0], cols[1], cols[2], cols[6]);
        let ini = inis.entry(file.to_string()).or_insert_with(|| {
            read_ini(&std::fs::read_to_string(dir.join("tests").join(file)).unwrap())
        });
        let opts = &ini
            .iter()
            .find(|(n, _)| n == section)
            .unwrap_or_else(|| panic!("{file}: no section [{section}]"))
            .1;
        let line = &opts
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{file} [{section}]: no key {key}"))
            .1;
        let want = got.rsplit(':').next().unwrap();
        let pre = predecode(line, LogFormat::Syslog);
        let d = set.decode(&pre, &mut cache);
        let ours = d.decoder.as_deref().unwrap_or("(null)");
        cases += 1;
        if ours != want {
            disagreements.push(format!(
                "{file} [{section}] {key}: OSSEC '{want}', hids '{ours}' (program_name {:?})\n    {line}",
                pre.program_name
            ));
        }
    }
    assert_eq!(cases, 261);
    assert!(
        disagreements.is_empty(),
        "{} of {cases} cases disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

const SSHD: &str = r#"
<decoder name="sshd">
  <program_name>^sshd</program_name>
</decoder>
<decoder name="sshd-success">
  <parent>sshd</parent>
  <prematch>^Accepted</prematch>
  <regex offset="after_prematch">^ \S+ for (\S+) from (\S+) port </regex>
  <order>user, srcip</order>
  <fts>name, user, location</fts>
</decoder>
<decoder name="sshd-failed">
  <parent>sshd</parent>
  <use_own_name>true</use_own_name>
  <prematch_pcre2>^Failed \S+ </prematch_pcre2>
  <pcre2 offset="after_prematch">^for (?:invalid user )?(\S+) from (\S+) port (\d+)</pcre2>
  <order>user, srcip, srcport</order>
</decoder>
"#;

#[test]
fn children_report_the_parent_name_and_fill_fields() {
    let s = set(SSHD);
    let d = decode(
        &s,
        "Nov 21 10:00:00 h sshd[1]: Accepted password for root from 10.0.0.1 port 22 ssh2",
    );
    assert_eq!(d.decoder.as_deref(), Some("sshd"));
    assert_eq!(d.parent.as_deref(), Some("sshd"));
    assert_eq!(d.get("dstuser"), Some("root"));
    assert_eq!(d.get("srcip"), Some("10.0.0.1"));
    let d = decode(&s, "Nov 21 10:00:00 h sshd[1]: Failed password for invalid user bob from 10.0.0.2 port 4242 ssh2");
    assert_eq!(d.decoder.as_deref(), Some("sshd-failed"));
    assert_eq!(d.get("dstuser"), Some("bob"));
    assert_eq!(d.get("srcport"), Some("4242"));
    // The root matches but no child: the root's name, no fields.
    let d = decode(&s, "Nov 21 10:00:00 h sshd[1]: Connection closed");
    assert_eq!(d.decoder.as_deref(), Some("sshd"));
    assert!(d.fields.is_empty());
    // program_name is matched against the header, not the text.
    let d = decode(
        &s,
        "Nov 21 10:00:00 h cron[1]: sshd Accepted x for y from z port ",
    );
    assert_eq!(d.decoder, None);
}

#[test]
fn first_matching_root_wins_and_duplicate_names_are_legal() {
    let s = set(
        r#"<decoder name="web"><prematch>^\d+.\d+.\d+.\d+ </prematch></decoder>
<decoder name="web"><prematch>^\S+ - </prematch></decoder>
<decoder name="other"><prematch>^\S+ - </prematch></decoder>
<decoder name="web-child"><parent>web</parent><regex>^(\S+) - (\S+) </regex><order>srcip, user</order></decoder>"#,
    );
    let d = decode(&s, "host.example - alice [x]");
    assert_eq!(d.decoder.as_deref(), Some("web"));
    assert_eq!(d.get("srcip"), Some("host.example"));
    assert_eq!(d.get("dstuser"), Some("alice"));
}

#[test]
fn same_named_children_chain_their_regexes() {
    let s = set(r#"<decoder name="app"><prematch>^app: </prematch></decoder>
<decoder name="app-kv"><parent>app</parent><regex>user=(\S+)</regex><order>user</order></decoder>
<decoder name="app-kv"><parent>app</parent><regex offset="after_regex">ip=(\S+)</regex><order>srcip</order></decoder>
<decoder name="app-kv"><parent>app</parent><regex>action=(\w+)</regex><order>action</order></decoder>"#);
    let d = decode(&s, "app: user=ann ip=1.2.3.4 action=login");
    assert_eq!(d.get("dstuser"), Some("ann"));
    assert_eq!(d.get("srcip"), Some("1.2.3.4"));
    assert_eq!(d.get("action"), Some("login"));
    // after_regex: the ip must come after the user.
    let d = decode(&s, "app: ip=9.9.9.9 user=ann action=x");
    assert_eq!(d.get("dstuser"), Some("ann"));
    assert_eq!(d.get("srcip"), None);
    // As in OSSEC, a failed regex in the chain hands on to the next one.
    assert_eq!(d.get("action"), Some("x"));
}

#[test]
fn lines_with_a_program_name_only_try_decoders_with_one() {
    let s = set(r#"<decoder name="plain"><prematch>^hello</prematch></decoder>"#);
    assert_eq!(decode(&s, "hello world").decoder.as_deref(), Some("plain"));
    assert_eq!(
        decode(&s, "Nov 21 10:00:00 h prog: hello world").decoder,
        None
    );
}

#[test]
fn dynamic_fields_and_json_plugin() {
    let s = set(
        r#"<decoder name="kv"><prematch>^kv </prematch><regex offset="after_prematch">^(\S+) took (\d+)ms</regex><order>request_id, duration_ms</order></decoder>
<decoder name="json"><prematch>^{</prematch><plugin_decoder>JSON_Decoder</plugin_decoder></decoder>"#,
    );
    let d = decode(&s, "kv abc took 35ms");
    assert_eq!(d.get("request_id"), Some("abc"));
    assert_eq!(d.get("duration_ms"), Some("35"));
    let d = decode(&s, r#"{"client":{"ip":"1.2.3.4"},"status":404}"#);
    assert_eq!(d.decoder.as_deref(), Some("json"));
    assert_eq!(d.get("client.ip"), Some("1.2.3.4"));
    assert_eq!(d.get("status"), Some("404"));
}

#[test]
fn unknown_parent_is_a_located_error() {
    let e = errors("<decoder name=\"a\">\n  <prematch>x</prematch>\n</decoder>\n<decoder name=\"b\">\n  <parent>nope</parent>\n</decoder>\n");
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].line, e[0].col), (4, 1));
    assert!(e[0].message.contains("'nope'"), "{}", e[0]);
}

#[test]
fn bad_regex_points_into_the_pattern() {
    let e = errors("<decoder name=\"a\">\n  <prematch>ab\\qc</prematch>\n</decoder>\n");
    assert_eq!((e[0].line, e[0].col), (2, 15), "{}", e[0]);
    assert!(e[0].message.contains("unknown escape"), "{}", e[0]);
    let e = errors("<decoder name=\"a\">\n  <prematch_pcre2>(ab</prematch_pcre2>\n</decoder>\n");
    assert_eq!(e[0].line, 2, "{}", e[0]);
    assert!(e[0].message.contains("'(ab'"), "{}", e[0]);
}

#[test]
fn unclosed_tag_is_a_located_error() {
    let e = errors("<decoder name=\"a\">\n  <prematch>x\n</decoder>\n");
    assert_eq!(e[0].line, 3, "{}", e[0]);
}

#[test]
fn order_with_more_names_than_captures_is_reported() {
    let s = DecoderSet::parse(
        Path::new("t.xml"),
        "<decoder name=\"a\">\n  <prematch>x</prematch>\n  <regex>(\\d+)</regex>\n  <order>id, srcip</order>\n</decoder>\n",
    )
    .unwrap();
    assert_eq!(s.warnings.len(), 1);
    assert_eq!(s.warnings[0].line, 3);
    assert!(
        s.warnings[0]
            .message
            .contains("names 2 fields but the regex has 1"),
        "{}",
        s.warnings[0]
    );
}

#[test]
fn other_structural_errors() {
    for (xml, needle) in [
        ("<decoder><prematch>x</prematch></decoder>", "needs a name"),
        ("<decoder name=\"a\"><regex>(x)</regex></decoder>", "needs a prematch"),
        ("<decoder name=\"a\"><prematch>x</prematch><regex>(x)</regex></decoder>", "needs an <order>"),
        ("<decoder name=\"a\"><prematch>x</prematch><order>user</order></decoder>", "without a regex"),
        ("<decoder name=\"a\"><prematch>x</prematch><bogus/></decoder>", "invalid element <bogus>"),
        ("<decoder name=\"a\"><prematch>x</prematch><type>nope</type></decoder>", "invalid decoder type"),
        ("<decoder name=\"a\"><prematch offset=\"after_regex\">x</prematch></decoder>", "only have offset"),
        ("<rule id=\"1\"/>", "not a decoder"),
        ("<decoder name=\"a\"><prematch>x</prematch><plugin_decoder>Nope</plugin_decoder></decoder>", "unknown plugin"),
    ] {
        let e = errors(xml);
        assert!(e.iter().any(|d| d.message.contains(needle)), "{xml}: {e:?}");
    }
}

#[test]
fn non_linear_patterns_are_named_in_warnings() {
    let s = set(r#"<decoder name="a"><prematch_pcre2>foo(?=bar)</prematch_pcre2></decoder>"#);
    assert!(s.warnings.iter().any(|w| w.message.contains("non-linear")));
    assert_eq!(decode(&s, "foobar").decoder.as_deref(), Some("a"));
}

#[test]
fn directories_load_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.xml"), "<decoder name=\"child\"><parent>root</parent><regex>(\\d+)</regex><order>id</order></decoder>").unwrap();
    std::fs::write(
        dir.path().join("a.xml"),
        "<decoder name=\"root\"><prematch>^x</prematch></decoder>",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let s = DecoderSet::load(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(s.decoders().len(), 2);
    assert_eq!(decode(&s, "x 42").get("id"), Some("42"));
}

/// Our own decoders (decoders/ in the repository) on the lines they are written for.
#[test]
fn project_decoders_decode_their_logs() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../decoders");
    let s = DecoderSet::load(&[dir]).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    type Case = (
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
    );
    let cases: &[Case] = &[
        ("Nov 21 10:00:00 web01 sshd[1]: Accepted publickey for deploy from 10.0.0.5 port 41000 ssh2: ED25519 SHA256:abc", "sshd",
            &[("method", "publickey"), ("dstuser", "deploy"), ("srcip", "10.0.0.5"), ("srcport", "41000")]),
        ("Nov 21 10:00:00 web01 sshd[1]: Failed password for invalid user admin from 198.51.100.9 port 3921 ssh2", "sshd",
            &[("dstuser", "admin"), ("srcip", "198.51.100.9")]),
        ("Nov 21 10:00:00 web01 sshd-session[1]: Invalid user oracle from 198.51.100.9 port 60022", "sshd",
            &[("dstuser", "oracle"), ("srcip", "198.51.100.9"), ("srcport", "60022")]),
        ("Nov 21 10:00:00 web01 sshd[1]: Connection closed by 198.51.100.9 port 22 [preauth]", "sshd",
            &[("dstuser", ""), ("srcip", "198.51.100.9")]),
        ("Nov 21 10:00:00 web01 sshd[1]: Disconnected from authenticating user root 198.51.100.9 port 22 [preauth]", "sshd",
            &[("dstuser", "root"), ("srcip", "198.51.100.9")]),
        ("Nov 21 10:00:00 web01 sshd[1]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.9  user=root", "sshd",
            &[("srcip", "198.51.100.9"), ("dstuser", "root")]),
        ("Nov 21 10:00:00 web01 sshd[1]: Did not receive identification string from 203.0.113.5 port 6450", "sshd",
            &[("srcip", "203.0.113.5")]),
        ("Nov 21 10:00:00 web01 sudo:    alice : TTY=pts/1 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx", "sudo",
            &[("srcuser", "alice"), ("status", ""), ("tty", "pts/1"), ("dstuser", "root"), ("command", "/usr/bin/systemctl restart nginx")]),
        ("Nov 21 10:00:00 web01 sudo:    alice : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash", "sudo",
            &[("srcuser", "alice"), ("status", "3 incorrect password attempts"), ("command", "/bin/bash")]),
        ("Nov 21 10:00:00 web01 sudo: pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)", "sudo",
            &[("action", "opened"), ("dstuser", "root"), ("srcuser", "alice")]),
        ("Nov 21 10:00:00 web01 su[9]: FAILED SU (to root) alice on pts/0", "su",
            &[("status", "FAILED"), ("dstuser", "root"), ("srcuser", "alice")]),
        ("Nov 21 10:00:00 web01 CRON[5]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)", "pam",
            &[("service", "cron"), ("action", "opened"), ("dstuser", "root")]),
        ("203.0.113.7 - alice [21/Nov/2026:10:00:00 +0000] \"GET /api/v1/users?id=4 HTTP/1.1\" 200 512 \"-\" \"curl/8.5.0\"", "web-accesslog",
            &[("srcip", "203.0.113.7"), ("srcuser", "alice"), ("action", "GET"), ("url", "/api/v1/users?id=4"), ("id", "200"), ("user_agent", "curl/8.5.0")]),
        ("2001:db8::1 - - [21/Nov/2026:10:00:00 +0000] \"POST /login HTTP/2.0\" 401 12", "web-accesslog",
            &[("srcip", "2001:db8::1"), ("id", "401")]),
        ("2026/11/21 10:00:00 [error] 1234#1234: *56 open() \"/srv/www/x\" failed (2: No such file or directory), client: 203.0.113.7, server: api, request: \"GET /x HTTP/1.1\", host: \"api.example\"", "nginx-errorlog",
            &[("status", "error"), ("srcip", "203.0.113.7"), ("server", "api"), ("url", "/x")]),
        ("2026/11/21 10:00:00 [notice] 1#1: signal process started", "nginx-errorlog",
            &[("status", "notice"), ("extra_data", "signal process started")]),
        ("[Fri Nov 21 10:00:00.123456 2026] [core:error] [pid 1234:tid 5678] [client 203.0.113.7:51234] AH00126: Invalid URI in request GET /x HTTP/1.1", "apache-errorlog",
            &[("module", "core"), ("status", "error"), ("srcip", "203.0.113.7"), ("id", "AH00126")]),
        ("[Fri Nov 21 10:00:00 2026] [error] [client 203.0.113.7] File does not exist: /var/www/x", "apache-errorlog",
            &[("module", ""), ("status", "error"), ("srcip", "203.0.113.7"), ("extra_data", "File does not exist: /var/www/x")]),
        ("{\"client_ip\":\"203.0.113.7\",\"request\":{\"method\":\"POST\",\"uri\":\"/login\"},\"response\":{\"status\":401},\"latencies\":{\"request\":12}}", "json-api",
            &[("client_ip", "203.0.113.7"), ("request.method", "POST"), ("response.status", "401")]),
        ("Nov 21 10:00:00 gw kong[7]: {\"request\":{\"uri\":\"/admin\"}}", "json-api", &[("request.uri", "/admin")]),
        ("Nov 21 10:00:00 web01 kernel: [999434.025323] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56 SRC=198.51.100.9 DST=10.0.0.5 LEN=44 TOS=0x00 PREC=0x00 TTL=51 ID=0 PROTO=TCP SPT=43210 DPT=22 WINDOW=1024 RES=0x00 SYN URGP=0", "ufw",
            &[("action", "BLOCK"), ("srcip", "198.51.100.9"), ("dstip", "10.0.0.5"), ("protocol", "TCP"), ("dstport", "22")]),
        ("Nov 21 10:00:00 web01 kernel: iptables-drop: IN=eth0 OUT= SRC=198.51.100.9 DST=10.0.0.5 LEN=40 PROTO=UDP SPT=53 DPT=1900", "netfilter",
            &[("action", "iptables-drop:"), ("srcip", "198.51.100.9"), ("protocol", "UDP"), ("dstport", "1900")]),
        ("2026-11-21 10:00:00 upgrade openssl:amd64 3.0.11-1 3.0.13-1", "dpkg",
            &[("action", "upgrade"), ("package", "openssl:amd64"), ("old_version", "3.0.11-1"), ("version", "3.0.13-1")]),
        ("2026-11-21 10:00:00 status installed nginx:amd64 1.24.0-2", "dpkg-status",
            &[("status", "installed"), ("package", "nginx:amd64")]),
        ("Requested-By: alice (1000)", "apt", &[("dstuser", "alice"), ("uid", "1000")]),
        ("Install: nginx:amd64 (1.24.0-2)", "apt", &[("action", "Install"), ("extra_data", "nginx:amd64 (1.24.0-2)")]),
        ("type=USER_LOGIN msg=audit(1700000000.123:457): pid=1 uid=0 auid=1000 ses=2 msg='op=login id=1000 exe=\"/usr/sbin/sshd\" hostname=? addr=203.0.113.7 terminal=sshd res=failed'", "auditd",
            &[("audit_type", "USER_LOGIN"), ("id", "1700000000.123:457"), ("audit_auid", "1000"), ("audit_exe", "/usr/sbin/sshd"), ("srcip", "203.0.113.7"), ("status", "failed")]),
    ];
    let mut failures = Vec::new();
    for (line, name, fields) in cases {
        let d = decode(&s, line);
        if d.decoder.as_deref() != Some(*name) {
            failures.push(format!("{line}\n  decoder {:?}, want {name}", d.decoder));
            continue;
        }
        for (k, v) in *fields {
            if d.get(k) != Some(*v) {
                failures.push(format!(
                    "{line}\n  {k} = {:?}, want {v:?} (all: {:?})",
                    d.get(k),
                    d.fields
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A byte-level match may end inside a multi-byte character; what follows must not panic.
#[test]
fn offsets_inside_multibyte_characters_are_safe() {
    let s = set(r#"<decoder name="any"><prematch>^\.</prematch></decoder>
<decoder name="any-child"><parent>any</parent><prematch offset="after_parent">^\.</prematch><regex offset="after_prematch">^(\.)(\S+)</regex><order>a, b</order></decoder>"#);
    let d = decode(&s, "ééé x");
    assert_eq!(d.decoder.as_deref(), Some("any"));
    assert_eq!(d.get("a"), Some("\u{fffd}"));
}

#[test]
fn hostile_lines_through_every_decoder_set_do_not_panic() {
    let dir = crate::testutil::ossec_ruleset();
    let stock = DecoderSet::load(&[dir.join("decoder.xml")]).unwrap();
    let ours = DecoderSet::load(&[
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../decoders")
    ])
    .unwrap();
    let base = [
        "Nov 21 10:00:00 web01 sshd[1]: Failed password for invalid user admin from 198.51.100.9 port 3921 ssh2",
        "203.0.113.7 - - [21/Nov/2026:10:00:00 +0000] \"GET /x HTTP/1.1\" 200 5 \"-\" \"ua\"",
        "Nov 21 10:00:00 web01 sudo:    alice : TTY=pts/1 ; PWD=/h ; USER=root ; COMMAND=/bin/ls",
        "{\"a\":{\"b\":\"c\"}}",
    ];
    let mut cache = DecodeCache::default();
    for line in base {
        for i in (0..=line.len()).filter(|&i| line.is_char_boundary(i)) {
            for ins in ["é", "\u{1F600}", "\u{0}", "\u{fffd}"] {
                let l = format!("{}{ins}{}", &line[..i], &line[i..]);
                let pre = predecode(&l, LogFormat::Syslog);
                let _ = stock.decode(&pre, &mut cache);
                let _ = ours.decode(&pre, &mut cache);
            }
        }
    }
    let long = "a".repeat(100_000);
    let _ = stock.decode(&predecode(&long, LogFormat::Syslog), &mut cache);
}

/// The child index must give the same first child as trying them in order, whatever mix of
/// anchored, unanchored and after_parent prematches comes first.
#[test]
fn indexed_children_keep_file_order() {
    let s = set(r#"<decoder name="r"><prematch>^r: </prematch></decoder>
<decoder name="c1"><parent>r</parent><use_own_name>true</use_own_name><prematch_pcre2>^r: alpha</prematch_pcre2></decoder>
<decoder name="c2"><parent>r</parent><use_own_name>true</use_own_name><prematch_pcre2>beta</prematch_pcre2></decoder>
<decoder name="c3"><parent>r</parent><use_own_name>true</use_own_name><prematch_pcre2>^r: (?:beta|gamma)</prematch_pcre2></decoder>
<decoder name="c4"><parent>r</parent><use_own_name>true</use_own_name><prematch_pcre2 offset="after_parent">^delta</prematch_pcre2></decoder>
<decoder name="c5"><parent>r</parent><use_own_name>true</use_own_name><prematch_pcre2>^r: delta|^r: eps</prematch_pcre2></decoder>
<decoder name="c6"><parent>r</parent><use_own_name>true</use_own_name><prematch_pcre2>^r: \w+ zeta</prematch_pcre2></decoder>
<decoder name="c7"><parent>r</parent><use_own_name>true</use_own_name><prematch_pcre2>^r: </prematch_pcre2></decoder>"#);
    for (line, want) in [
        ("r: alpha", "c1"),
        ("r: beta", "c2"),
        ("r: gamma beta", "c2"),
        ("r: gamma", "c3"),
        ("r: delta", "c4"),
        ("r: eps", "c5"),
        ("r: x zeta", "c6"),
        ("r: other", "c7"),
    ] {
        assert_eq!(decode(&s, line).decoder.as_deref(), Some(want), "{line}");
    }
}
