//! Rule engine tests: the stock OSSEC ruleset, each element, correlation edge cases, lists,
//! overwrite and `$(field)` expansion.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::*;

/// OSSEC's stock ruleset (`../shared/ossec-ruleset` from the repository, found from any worktree).
pub(crate) fn ossec_dir() -> PathBuf {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    loop {
        let cand = dir.join("shared/ossec-ruleset");
        if cand.is_dir() {
            return cand;
        }
        if !dir.pop() {
            panic!(
                "../shared/ossec-ruleset not found above {}",
                env!("CARGO_MANIFEST_DIR")
            );
        }
    }
}

/// The stock rule files in OSSEC's include order.
pub(crate) fn stock_rule_files() -> Vec<PathBuf> {
    let dir = ossec_dir();
    std::fs::read_to_string(dir.join("rules-include-order.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| dir.join("rules").join(l.trim()))
        .collect()
}

#[test]
fn stock_ruleset_loads_without_error() {
    let set = match RuleSet::load(&stock_rule_files(), &LoadOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            for d in &e.0 {
                eprintln!("{d}");
            }
            panic!("{} errors", e.0.len());
        }
    };
    // 1,139 `<rule` tags, three of them inside comments (symantec-ws, local_rules).
    assert_eq!(set.len(), 1136);
}

/// One section of an OSSEC test file, read as Python 2's ConfigParser reads it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Section {
    pub name: String,
    /// Options in first-insertion order; a repeated key keeps its last value.
    pub options: Vec<(String, String)>,
}

impl Section {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Python 2 `ConfigParser.read` on one file: `#`/`;` comment lines, `[section]` headers (a repeated
/// section merges into the first), `key = value` or `key: value` options with lower-cased names,
/// an inline comment only where the first `;` follows whitespace, indented continuation lines.
pub(crate) fn read_ini(text: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    let mut cur: Option<usize> = None;
    let mut last_opt: Option<String> = None;
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let first_word = line.split_whitespace().next().unwrap_or("");
        if line.trim().is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || (first_word.eq_ignore_ascii_case("rem") && line.starts_with(['r', 'R']))
        {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let (Some(c), Some(opt)) = (cur, &last_opt) {
                let v = line.trim();
                if !v.is_empty() {
                    if let Some(o) = sections[c].options.iter_mut().find(|(n, _)| n == opt) {
                        o.1 = format!("{}\n{}", o.1, v);
                    }
                }
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix('[') {
            if let Some(end) = rest.find(']') {
                let name = &rest[..end];
                cur = Some(match sections.iter().position(|s| s.name == name) {
                    Some(i) => i,
                    None => {
                        sections.push(Section {
                            name: name.to_string(),
                            options: Vec::new(),
                        });
                        sections.len() - 1
                    }
                });
                last_opt = None;
                continue;
            }
        }
        let Some(c) = cur else { continue };
        // OPTCRE: (?P<option>[^:=\s][^:=]*)\s*(?P<vi>[:=])\s*(?P<value>.*)$
        let Some(sep) = line.find([':', '=']) else {
            continue;
        };
        let name = line[..sep].trim_end().to_lowercase();
        if name.is_empty() || line.starts_with(char::is_whitespace) {
            continue;
        }
        let mut value = &line[sep + 1..];
        if let Some(pos) = value.find(';') {
            if pos > 0 && value.as_bytes()[pos - 1].is_ascii_whitespace() {
                value = &value[..pos];
            }
        }
        let mut value = value.trim().to_string();
        if value == "\"\"" {
            value.clear();
        }
        let opts = &mut sections[c].options;
        match opts.iter_mut().find(|(n, _)| *n == name) {
            Some(o) => o.1 = value,
            None => opts.push((name.clone(), value)),
        }
        last_opt = Some(name);
    }
    sections
}

#[test]
fn ini_reading_follows_python2_configparser() {
    let s = read_ini(
        "[a]\nlog 1 pass = x ; TTY=pts/4 ; PWD=/\nrule = 1\nRULE = 2\n# c\n; c\n[b]\nk: v;w\n  more\n[a]\nlog 2 fail = y %% z\n",
    );
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].get("log 1 pass"), Some("x"));
    assert_eq!(s[0].get("rule"), Some("2"));
    assert_eq!(s[0].get("log 2 fail"), Some("y %% z"));
    assert_eq!(s[1].get("k"), Some("v;w\nmore"));
}

/// OSSEC's results were produced on a weekday during office hours (its `<time>` and `<weekday>`
/// rules, 17101 and 17102, read the wall clock); the suite runs at such a time: local noon on
/// Wednesday 2026-08-12, whatever the machine's time zone.
pub(crate) fn test_clock() -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(local_instant(3, 12))
}

/// Seconds since the epoch of local `hour`:00 on a day of the week of 2026-08-09..15 (0 = Sunday).
pub(crate) fn local_instant(weekday: u8, hour: u32) -> u64 {
    let sunday_noon_utc: i64 = 1_786_536_000 - 3 * 86_400;
    let guess = sunday_noon_utc + i64::from(weekday) * 86_400 + (i64::from(hour) - 12) * 3600;
    for shift in -15..=15i64 {
        let t = guess + shift * 3600;
        if crate::sys::local_day_time(t) == Some((hour * 3600, weekday)) {
            return t as u64;
        }
    }
    panic!("no local {hour}:00 on weekday {weekday} near {guess}");
}

/// The analysis of one log line from scratch, as OSSEC's test runner does (a fresh logtest).
pub(crate) struct Pipeline {
    pub decoders: crate::decode::DecoderSet,
    pub rules: Arc<RuleSet>,
}

impl Pipeline {
    pub fn stock() -> Pipeline {
        let dir = ossec_dir();
        let decoders = crate::decode::DecoderSet::load(&[dir.join("decoder.xml")])
            .unwrap_or_else(|e| panic!("stock decoders: {}", e[0]));
        let opts = LoadOptions {
            decoder_names: Some(decoders.reported_names()),
            lists: Vec::new(),
        };
        let rules = RuleSet::load(&stock_rule_files(), &opts)
            .unwrap_or_else(|e| panic!("stock rules: {}", e.0[0]));
        Pipeline {
            decoders,
            rules: Arc::new(rules),
        }
    }

    /// `rule:level:decoder` as OSSEC's runner records it (`-` for no rule, `(null)` for no decoder).
    pub fn got(&self, engine: &mut Engine, line: &str) -> String {
        let event = Event {
            time: test_clock(),
            host: Arc::from("testhost"),
            location: Arc::from("stdin"),
            format: crate::event::LogFormat::Syslog,
            full_log: line.to_string(),
            flags: Default::default(),
            fim: None,
        };
        let pre = crate::decode::predecode(line, event.format);
        let mut cache = crate::decode::DecodeCache::default();
        let (decoded, idx) = self.decoders.decode_full(&pre, &mut cache);
        let fts = idx
            .map(|i| Fts::parse(&self.decoders.decoders()[i].fts.join(",")))
            .unwrap_or_default();
        let input = Input {
            event: &event,
            predecoded: &pre,
            decoded: &decoded,
            category: Category::of(&decoded),
            fts,
        };
        let v = engine.evaluate(&input);
        let dec = decoded.decoder.as_deref().unwrap_or("(null)");
        match v {
            Some(v) => format!("{}:{}:{dec}", v.id, v.level),
            None => format!("-:-:{dec}"),
        }
    }
}

/// Every case of OSSEC's own rule test suite, through our decoders and rules, compared with what
/// OSSEC itself produced (`ossec-results.tsv`, column `got`).
#[test]
fn ossec_test_suite_agrees_with_ossec() {
    let dir = ossec_dir();
    let p = Pipeline::stock();
    let tsv = std::fs::read_to_string(dir.join("ossec-results.tsv")).unwrap();
    let mut files: HashMap<String, Vec<Section>> = HashMap::new();
    let (mut total, mut agree, mut pass_ok) = (0, 0, 0);
    let mut report = Vec::new();
    for row in tsv.lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        let [file, section, key, negate, _ok, expected, got] = cols[..] else {
            panic!("bad row {row:?}");
        };
        let sections = files.entry(file.to_string()).or_insert_with(|| {
            read_ini(&std::fs::read_to_string(dir.join("tests").join(file)).unwrap())
        });
        let sec = sections
            .iter()
            .find(|s| s.name == section)
            .unwrap_or_else(|| panic!("{file}: no section {section:?}"));
        let line = sec
            .get(key)
            .unwrap_or_else(|| panic!("{file} [{section}]: no {key:?}"));
        let mut engine = Engine::new(p.rules.clone(), Limits::default());
        let ours = p.got(&mut engine, line);
        total += 1;
        let negate = negate == "True";
        if (ours == expected) != negate {
            pass_ok += 1;
        }
        if ours == got {
            agree += 1;
        } else {
            report.push(format!(
                "{file} [{section}] {key}: ours {ours}, OSSEC {got} (expected {expected})\n    {line}"
            ));
        }
    }
    for r in &report {
        eprintln!("DISAGREE {r}");
    }
    eprintln!("agreement with OSSEC: {agree}/{total}; test expectations met: {pass_ok}/{total}");
    assert_eq!(total, 261);
    assert!(
        agree * 100 >= total * 99,
        "agreement {agree}/{total} is below 99%"
    );
}

// ---- Unit tests per element, on small rule files ----

fn load(xml: &str) -> Result<RuleSet, LoadError> {
    let doc =
        crate::xml::Document::parse(Path::new("t.xml"), xml.to_string()).map_err(LoadError)?;
    RuleSet::from_documents(&[doc], &LoadOptions::default())
}

fn load_ok(xml: &str) -> Arc<RuleSet> {
    match load(xml) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!(
            "{}",
            e.0.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn load_err(xml: &str) -> String {
    match load(xml) {
        Ok(_) => panic!("loaded"),
        Err(e) => {
            e.0.iter()
                .map(|d| d.headline())
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

/// A verdict with its rule information.
struct Out {
    info: RuleInfo,
    related: Vec<String>,
    alert: bool,
    suppressed: Option<&'static str>,
}

/// A test event: `log` after the header, with a decoder name and fields, at `secs`.
struct Ev<'a> {
    log: &'a str,
    decoder: Option<&'a str>,
    fields: &'a [(&'a str, &'a str)],
    secs: u64,
    category: Category,
    program: Option<&'a str>,
}

impl<'a> Ev<'a> {
    fn new(log: &'a str) -> Self {
        Ev {
            log,
            decoder: None,
            fields: &[],
            secs: 1_786_536_000,
            category: Category::Syslog,
            program: None,
        }
    }
    fn dec(mut self, d: &'a str) -> Self {
        self.decoder = Some(d);
        self
    }
    fn fields(mut self, f: &'a [(&'a str, &'a str)]) -> Self {
        self.fields = f;
        self
    }
    fn at(mut self, secs: u64) -> Self {
        self.secs = secs;
        self
    }
    fn run(&self, e: &mut Engine) -> Option<Out> {
        let event = Event {
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(self.secs),
            host: Arc::from("h"),
            location: Arc::from("/var/log/x"),
            format: crate::event::LogFormat::Syslog,
            full_log: self.log.to_string(),
            flags: Default::default(),
            fim: None,
        };
        let pre = Predecoded {
            program_name: self.program.map(Into::into),
            message: self.log.to_string(),
            ..Predecoded::default()
        };
        let decoded = Decoded {
            decoder: self.decoder.map(Arc::from),
            parent: None,
            decoder_type: None,
            fields: self
                .fields
                .iter()
                .map(|(k, v)| (Arc::from(*k), (*v).into()))
                .collect(),
        };
        let input = Input {
            event: &event,
            predecoded: &pre,
            decoded: &decoded,
            category: self.category,
            fts: Fts::default(),
        };
        let v = e.evaluate(&input)?;
        Some(Out {
            info: e.rule_info(&v, &input),
            related: v.related,
            alert: v.alert,
            suppressed: v.suppressed,
        })
    }
    /// `Some((id, alert))`.
    fn fire(&self, e: &mut Engine) -> Option<(u32, bool)> {
        self.run(e).map(|v| (v.info.id, v.alert))
    }
}

fn engine(set: &Arc<RuleSet>) -> Engine {
    Engine::new(set.clone(), Limits::default())
}

#[test]
fn sibling_order_is_level_zero_first_then_descending_level_then_load_order() {
    let set = load_ok(
        r#"<group name="g,">
  <rule id="100" level="3"><match>a</match><description>low</description></rule>
  <rule id="101" level="7"><match>a</match><description>high</description></rule>
  <rule id="102" level="7"><match>a</match><description>high, later</description></rule>
  <rule id="103" level="0"><match>ab</match><description>silence</description></rule>
</group>"#,
    );
    let ids: Vec<u32> = set
        .tree
        .top
        .iter()
        .map(|&n| set.tree.rules[set.tree.nodes[n].rule].id)
        .collect();
    assert_eq!(ids, [103, 101, 102, 100]);
    let mut e = engine(&set);
    assert_eq!(Ev::new("xa").fire(&mut e), Some((101, true)));
    // The level-0 rule is tried first: it matches and ends the search without an alert.
    assert_eq!(Ev::new("xab").fire(&mut e), Some((103, false)));
}

#[test]
fn deepest_matching_child_wins_and_noalert_parents_fire_only_through_children() {
    let set = load_ok(
        r#"<group name="sshd,">
  <rule id="200" level="0" noalert="1"><decoded_as>sshd</decoded_as><description>all</description></rule>
  <rule id="201" level="5"><if_sid>200</if_sid><match>Failed</match><description>fail</description></rule>
  <rule id="202" level="10"><if_sid>201</if_sid><match>root</match><description>root</description></rule>
  <rule id="203" level="3"><if_sid>201, 200</if_sid><match>password</match><description>pw</description></rule>
</group>"#,
    );
    let mut e = engine(&set);
    assert_eq!(
        Ev::new("Failed x").dec("sshd").fire(&mut e),
        Some((201, true))
    );
    assert_eq!(
        Ev::new("Failed root").dec("sshd").fire(&mut e),
        Some((202, true))
    );
    // 203 hangs under both 201 and 200; under 201 it sorts after 202 (lower level).
    assert_eq!(
        Ev::new("Failed password").dec("sshd").fire(&mut e),
        Some((203, true))
    );
    assert_eq!(
        Ev::new("password").dec("sshd").fire(&mut e),
        Some((203, true))
    );
    // The parent alone is noalert: nothing fires.
    assert_eq!(Ev::new("other").dec("sshd").fire(&mut e), None);
    assert_eq!(Ev::new("Failed").dec("other").fire(&mut e), None);
}

#[test]
fn if_group_and_if_level_attach_under_every_matching_rule() {
    let set = load_ok(
        r#"<group name="a,">
  <rule id="300" level="4"><match>x</match><group>auth_fail,</group><description>x</description></rule>
  <rule id="301" level="9"><match>y</match><group>auth_fail,</group><description>y</description></rule>
  <rule id="302" level="2"><match>z</match><description>z</description></rule>
  <rule id="310" level="6"><if_group>auth_fail</if_group><match>admin</match><description>g</description></rule>
  <rule id="320" level="12"><if_level>9</if_level><match>boom</match><description>l</description></rule>
</group>"#,
    );
    let mut e = engine(&set);
    assert_eq!(Ev::new("x admin").fire(&mut e), Some((310, true)));
    assert_eq!(Ev::new("y admin").fire(&mut e), Some((310, true)));
    assert_eq!(Ev::new("z admin").fire(&mut e), Some((302, true)));
    assert_eq!(Ev::new("y boom").fire(&mut e), Some((320, true)));
    assert_eq!(Ev::new("x boom").fire(&mut e), Some((300, true)));
}

const BRUTE: &str = r#"<group name="sshd,">
  <rule id="400" level="5"><match>Failed password</match><group>authentication_failed,</group><description>fail from $(srcip)</description></rule>
  <rule id="401" level="10" frequency="2" timeframe="60">
    <if_matched_sid>400</if_matched_sid>
    <same_source_ip />
    <description>brute force from $(srcip)</description>
  </rule>
</group>"#;

#[test]
fn frequency_fires_at_setting_plus_two_from_the_same_source() {
    let set = load_ok(BRUTE);
    let mut e = engine(&set);
    let a: &[(&str, &str)] = &[("srcip", "10.0.0.1")];
    let b: &[(&str, &str)] = &[("srcip", "10.0.0.2")];
    let ev = |f| Ev::new("Failed password for root").fields(f);
    assert_eq!(ev(a).fire(&mut e), Some((400, true)));
    assert_eq!(ev(b).fire(&mut e), Some((400, true)));
    assert_eq!(ev(a).fire(&mut e), Some((400, true)));
    assert_eq!(ev(b).fire(&mut e), Some((400, true)));
    assert_eq!(ev(a).fire(&mut e), Some((400, true)));
    // Fourth from 10.0.0.1 = frequency (2) + 2.
    let v = ev(a).run(&mut e).unwrap();
    assert_eq!((v.info.id, v.info.level), (401, 10));
    assert_eq!(&*v.info.description, "brute force from 10.0.0.1");
    assert_eq!(v.related.len(), 3);
    assert_eq!(v.info.firedtimes, 1);
    // The records are consumed: the next one is a plain failure again.
    assert_eq!(ev(a).fire(&mut e), Some((400, true)));
}

#[test]
fn reload_keeps_correlation_state_of_unchanged_rules() {
    let a: &[(&str, &str)] = &[("srcip", "10.0.0.1")];
    let ev = || Ev::new("Failed password for root").fields(a);
    let mut old = engine(&load_ok(BRUTE));
    for _ in 0..3 {
        assert_eq!(ev().fire(&mut old), Some((400, true)));
    }
    // The same rules plus an unrelated one: the fourth failure still completes the brute force.
    let grown = BRUTE.replace(
        "</group>",
        r#"<rule id="402" level="3"><match>Accepted</match><description>login</description></rule></group>"#,
    );
    let mut new = engine(&load_ok(&grown));
    new.inherit(old);
    assert_eq!(ev().fire(&mut new).map(|x| x.0), Some(401));

    // A changed frequency drops the history of the changed rule.
    let mut old = engine(&load_ok(BRUTE));
    for _ in 0..3 {
        assert_eq!(ev().fire(&mut old), Some((400, true)));
    }
    let changed = BRUTE.replace(r#"frequency="2""#, r#"frequency="1""#);
    let mut new = engine(&load_ok(&changed));
    new.inherit(old);
    assert_eq!(ev().fire(&mut new), Some((400, true)));
    assert_eq!(ev().fire(&mut new), Some((400, true)));
    assert_eq!(ev().fire(&mut new).map(|x| x.0), Some(401));
}

#[test]
fn frequency_window_expires() {
    let set = load_ok(BRUTE);
    let mut e = engine(&set);
    let a: &[(&str, &str)] = &[("srcip", "10.0.0.1")];
    let ev = |t| Ev::new("Failed password").fields(a).at(t);
    for t in [0, 10, 20] {
        assert_eq!(ev(t).fire(&mut e), Some((400, true)));
    }
    // At 61 the record from 0 is outside the 60 s timeframe: only two earlier ones count.
    assert_eq!(ev(71).fire(&mut e), Some((400, true)));
    // At 75: records at 20 (55 s ago, inside), 71 and the earlier 10 (65 s, outside): 2 < 3.
    assert_eq!(ev(75).fire(&mut e), Some((400, true)));
    // At 76: 20, 71, 75 inside → fires.
    assert_eq!(ev(76).fire(&mut e).map(|x| x.0), Some(401));
}

#[test]
fn level_zero_rules_do_not_feed_correlation() {
    let set = load_ok(
        r#"<group name="g,">
  <rule id="500" level="0"><match>quiet</match><description>q</description></rule>
  <rule id="501" level="8"><if_matched_sid>500</if_matched_sid><match>loud</match><description>after quiet</description></rule>
</group>"#,
    );
    let mut e = engine(&set);
    assert_eq!(Ev::new("quiet").fire(&mut e), Some((500, false)));
    assert_eq!(Ev::new("quiet loud").fire(&mut e), Some((500, false)));
    assert_eq!(Ev::new("loud").fire(&mut e), None);
}

#[test]
fn if_matched_group_correlates_across_rules() {
    let set = load_ok(
        r#"<group name="g,">
  <rule id="600" level="5"><match>fail</match><group>authentication_failed,</group><description>f</description></rule>
  <rule id="601" level="5"><match>denied</match><group>authentication_failed,</group><description>d</description></rule>
  <rule id="602" level="3"><match>ok</match><group>authentication_success,</group><description>s</description></rule>
  <rule id="610" level="12" timeframe="60">
    <if_group>authentication_success</if_group>
    <if_matched_group>authentication_failed</if_matched_group>
    <same_source_ip />
    <description>success after failures</description>
  </rule>
</group>"#,
    );
    let mut e = engine(&set);
    let ip: &[(&str, &str)] = &[("srcip", "1.2.3.4")];
    assert_eq!(Ev::new("ok").fields(ip).fire(&mut e), Some((602, true)));
    assert_eq!(Ev::new("denied").fields(ip).fire(&mut e), Some((601, true)));
    assert_eq!(Ev::new("ok").fields(ip).fire(&mut e), Some((610, true)));
}

#[test]
fn ignore_suppresses_refiring() {
    let set = load_ok(
        r#"<group name="g,">
  <rule id="700" level="6" ignore="30"><match>scan</match><description>s</description></rule>
</group>"#,
    );
    let mut e = engine(&set);
    assert_eq!(Ev::new("scan").at(100).fire(&mut e), Some((700, true)));
    let v = Ev::new("scan").at(110).run(&mut e).unwrap();
    assert!(!v.alert);
    assert!(v.suppressed.unwrap().contains("ignore"));
    assert_eq!(Ev::new("scan").at(131).fire(&mut e), Some((700, true)));
}

#[test]
fn overwrite_replaces_definition_in_place() {
    let a = r#"<group name="g,">
  <rule id="800" level="0" noalert="1"><match>svc</match><description>p</description></rule>
  <rule id="801" level="5"><if_sid>800</if_sid><match>error</match><description>old</description></rule>
</group>"#;
    let b = r#"<group name="local,">
  <rule id="801" level="11" overwrite="yes"><if_sid>800</if_sid><match>fatal</match><description>new</description></rule>
</group>"#;
    let docs = [
        crate::xml::Document::parse(Path::new("a.xml"), a.into()).unwrap(),
        crate::xml::Document::parse(Path::new("b.xml"), b.into()).unwrap(),
    ];
    let set = Arc::new(RuleSet::from_documents(&docs, &LoadOptions::default()).unwrap());
    let mut e = engine(&set);
    assert_eq!(Ev::new("svc error").fire(&mut e), None);
    let v = Ev::new("svc fatal").run(&mut e).unwrap();
    assert_eq!(
        (v.info.id, v.info.level, &*v.info.description),
        (801, 11, "new")
    );
    assert_eq!(*v.info.groups, ["local"]);
    // Overwriting a rule that does not exist is an error.
    let c = r#"<group name="x,"><rule id="999" level="1" overwrite="yes"><match>a</match></rule></group>"#;
    let docs = [crate::xml::Document::parse(Path::new("c.xml"), c.into()).unwrap()];
    let err = RuleSet::from_documents(&docs, &LoadOptions::default()).unwrap_err();
    assert!(
        err.0[0].message.contains("overwrite of rule 999"),
        "{:?}",
        err.0
    );
}

#[test]
fn description_expands_fields() {
    let set = load_ok(
        r#"<group name="g,">
  <rule id="900" level="3"><match>x</match><description>$(dstuser) from $(srcip) via $(program_name) [$(json.user.id)] $(nope)!</description></rule>
</group>"#,
    );
    let mut e = engine(&set);
    let mut ev = Ev::new("x").fields(&[
        ("srcip", "10.1.1.1"),
        ("dstuser", "root"),
        ("json.user.id", "42"),
    ]);
    ev.program = Some("sshd");
    let v = ev.run(&mut e).unwrap();
    assert_eq!(&*v.info.description, "root from 10.1.1.1 via sshd [42] !");
}

#[test]
fn field_elements_match_their_fields() {
    let set = load_ok(
        r#"<group name="web,">
  <rule id="1000" level="0"><decoded_as>web</decoded_as><description>w</description></rule>
  <rule id="1001" level="5"><if_sid>1000</if_sid><srcip>!10.0.0.0/8</srcip><url>/admin</url><description>external admin</description></rule>
  <rule id="1002" level="6"><if_sid>1000</if_sid><user>^root$</user><status_pcre2>^40[13]$</status_pcre2><description>root denied</description></rule>
  <rule id="1003" level="7"><if_sid>1000</if_sid><field name="api.path">^/v1/keys</field><action>DELETE</action><description>key delete</description></rule>
  <rule id="1004" level="4"><if_sid>1000</if_sid><id_pcre2>^5\d\d$</id_pcre2><extra_data>upstream</extra_data><description>5xx</description></rule>
  <rule id="1005" level="2"><if_sid>1000</if_sid><program_name>^api</program_name><hostname>web01</hostname><description>api host</description></rule>
</group>"#,
    );
    let mut e = engine(&set);
    let f = |fs: &'static [(&'static str, &'static str)]| Ev::new("-").dec("web").fields(fs);
    assert_eq!(
        f(&[("srcip", "8.8.8.8"), ("url", "/admin/x")]).fire(&mut e),
        Some((1001, true))
    );
    assert_eq!(
        f(&[("srcip", "10.1.1.1"), ("url", "/admin/x")]).fire(&mut e),
        Some((1000, false))
    );
    assert_eq!(
        f(&[("dstuser", "root"), ("status", "403")]).fire(&mut e),
        Some((1002, true))
    );
    assert_eq!(
        f(&[("srcuser", "ROOT"), ("status", "401")]).fire(&mut e),
        Some((1002, true))
    );
    assert_eq!(
        f(&[("dstuser", "rooty"), ("status", "401")]).fire(&mut e),
        Some((1000, false))
    );
    assert_eq!(
        f(&[("api.path", "/v1/keys/7"), ("action", "delete")]).fire(&mut e),
        Some((1003, true))
    );
    assert_eq!(
        f(&[("id", "502"), ("extra_data", "upstream timed out")]).fire(&mut e),
        Some((1004, true))
    );
    let mut ev = f(&[]);
    ev.program = Some("api-gw");
    assert_eq!(ev.fire(&mut e), Some((1000, false)));
}

#[test]
fn category_selects_top_level_rules() {
    let set = load_ok(
        r#"<group name="fw,">
  <rule id="1100" level="4"><category>firewall</category><action>DROP</action><description>drop</description></rule>
  <rule id="1101" level="2"><match>DROP</match><description>syslog drop text</description></rule>
</group>"#,
    );
    let mut e = engine(&set);
    let mut ev = Ev::new("DROP").fields(&[("action", "DROP")]);
    assert_eq!(ev.fire(&mut e), Some((1101, true)));
    ev.category = Category::Firewall;
    assert_eq!(ev.fire(&mut e), Some((1100, true)));
}

#[test]
fn time_and_weekday() {
    let set = load_ok(
        r#"<group name="g,">
  <rule id="1200" level="9"><match>login</match><time>6 pm - 8:30 am</time><description>night</description></rule>
  <rule id="1201" level="8"><match>login</match><weekday>weekends</weekday><description>weekend</description></rule>
  <rule id="1202" level="3"><match>login</match><description>login</description></rule>
</group>"#,
    );
    let mut e = engine(&set);
    // Evaluated in local time.
    let wed_noon = local_instant(3, 12);
    let wed_night = local_instant(3, 2);
    let sat_noon = local_instant(6, 12);
    assert_eq!(
        Ev::new("login").at(wed_noon).fire(&mut e),
        Some((1202, true))
    );
    assert_eq!(
        Ev::new("login").at(wed_night).fire(&mut e),
        Some((1200, true))
    );
    assert_eq!(
        Ev::new("login").at(sat_noon).fire(&mut e),
        Some((1201, true))
    );
}

#[test]
fn lists_are_looked_up() {
    let dir = tempfile::tempdir().unwrap();
    let lp = dir.path().join("bad-ips");
    std::fs::write(&lp, "203.0.113.:scanner\n198.51.100.7:known\n").unwrap();
    let up = dir.path().join("admins");
    std::fs::write(&up, "alice:ops\nbob:dev\n").unwrap();
    let xml = r#"<group name="g,">
  <rule id="1300" level="10"><match>x</match><list field="srcip" lookup="address_match_key">bad-ips</list><description>bad ip</description></rule>
  <rule id="1301" level="6"><match>x</match><list field="user" lookup="match_key_value" check_value="^ops">admins</list><description>ops user</description></rule>
  <rule id="1302" level="5"><match>x</match><list field="user" lookup="not_match_key">admins</list><description>unknown user</description></rule>
</group>"#;
    let doc = crate::xml::Document::parse(Path::new("t.xml"), xml.into()).unwrap();
    let opts = LoadOptions {
        decoder_names: None,
        lists: vec![lp, up],
    };
    let set = Arc::new(RuleSet::from_documents(&[doc], &opts).unwrap());
    let mut e = engine(&set);
    assert_eq!(
        Ev::new("x")
            .fields(&[("srcip", "203.0.113.9")])
            .fire(&mut e),
        Some((1300, true))
    );
    assert_eq!(
        Ev::new("x").fields(&[("dstuser", "alice")]).fire(&mut e),
        Some((1301, true))
    );
    assert_eq!(
        Ev::new("x").fields(&[("dstuser", "bob")]).fire(&mut e),
        None
    );
    assert_eq!(
        Ev::new("x").fields(&[("dstuser", "eve")]).fire(&mut e),
        Some((1302, true))
    );
    // A list that is not loaded is a load error.
    let e = load_err(
        r#"<group name="g,"><rule id="1" level="1"><list field="srcip">nope</list></rule></group>"#,
    );
    assert!(e.contains("list \"nope\" is not loaded"), "{e}");
}

#[test]
fn load_errors_are_located_and_complete() {
    let e = load_err(
        r#"<group name="g,">
  <rule id="1" level="3"><match>a</match><sbumatch>b</sbumatch></rule>
  <rule id="2" level="5" frequency="3"><match>a</match></rule>
  <rule id="3" level="5"><if_sid>42</if_sid></rule>
  <rule id="6" level="5"><match>a</match></rule>
  <rule id="4" level="99"><match>a</match></rule>
  <rule id="5" level="1"><pcre2>(unclosed</pcre2></rule>
  <rule id="6" level="1"><match>b</match></rule>
</group>"#,
    );
    assert!(
        e.contains("t.xml:2:") && e.contains("unknown element <sbumatch>"),
        "{e}"
    );
    assert!(
        e.contains("t.xml:3:") && e.contains("frequency and same_"),
        "{e}"
    );
    assert!(e.contains("t.xml:4:") && e.contains("if_sid 42"), "{e}");
    assert!(
        e.contains("t.xml:8:") && e.contains("duplicate rule id 6"),
        "{e}"
    );
    assert!(
        e.contains("t.xml:6:") && e.contains("between 0 and 16"),
        "{e}"
    );
    assert!(e.contains("t.xml:7:") && e.contains("unclosed"), "{e}");
    let e = load_err(r#"<rule id="1" level="1"><match>a</match></rule>"#);
    assert!(e.contains("only <group"), "{e}");
}

#[test]
fn fim_events_go_through_syscheck_rules() {
    let xml = r#"<group name="ossec,">
  <rule id="550" level="7"><category>ossec</category><decoded_as>syscheck_integrity_changed</decoded_as><description>Integrity checksum changed.</description><group>syscheck,</group></rule>
  <rule id="554" level="5"><category>ossec</category><decoded_as>syscheck_new_entry</decoded_as><description>File added.</description><group>syscheck,</group></rule>
</group>
<group name="local,">
  <rule id="100550" level="12"><if_sid>550</if_sid><match>for: '/opt/api/bin/</match><description>API binary $(file) changed</description></rule>
  <rule id="100551" level="0"><if_sid>550, 554</if_sid><match>/var/cache/</match><description>silenced</description></rule>
</group>"#;
    let set = load_ok(xml);
    let mut e = engine(&set);
    let mut run = |path: &str, kind| {
        let ev = syscheck::tests_support::fim_event(path, kind);
        let (pre, dec) = syscheck::decode(&ev).unwrap();
        let input = Input {
            event: &ev,
            predecoded: &pre,
            decoded: &dec,
            category: Category::of(&dec),
            fts: Fts::default(),
        };
        let v = e.evaluate(&input)?;
        let info = e.rule_info(&v, &input);
        Some((info.id, info.level, info.description))
    };
    use crate::event::ChangeKind::*;
    assert_eq!(
        run("/opt/api/bin/server", Modified),
        Some((100550, 12, "API binary /opt/api/bin/server changed".into()))
    );
    assert_eq!(run("/etc/passwd", Modified).map(|x| x.0), Some(550));
    assert_eq!(run("/etc/new", Added).map(|x| x.0), Some(554));
    assert_eq!(
        run("/var/cache/x", Added).map(|x| (x.0, x.1)),
        Some((100551, 0))
    );
    assert_eq!(run("/etc/gone", Deleted), None);
}

// ---- Our own rules (rules/) on our own decoders (decoders/) ----

fn own_pipeline() -> Pipeline {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let decoders = crate::decode::DecoderSet::load(&[repo.join("decoders")])
        .unwrap_or_else(|e| panic!("decoders: {}", e[0]));
    let opts = LoadOptions {
        decoder_names: Some(decoders.reported_names()),
        lists: Vec::new(),
    };
    let rules =
        RuleSet::load(&[repo.join("rules")], &opts).unwrap_or_else(|e| panic!("rules: {}", e.0[0]));
    Pipeline {
        decoders,
        rules: Arc::new(rules),
    }
}

#[test]
fn own_rules_fire_on_our_users_logs() {
    let p = own_pipeline();
    let cases: &[(&str, &str)] = &[
        ("Nov 21 10:00:00 web01 sshd[1]: Failed password for alice from 198.51.100.9 port 3921 ssh2", "100101:5"),
        ("Nov 21 10:00:00 web01 sshd[1]: Failed password for invalid user admin from 198.51.100.9 port 3921 ssh2", "100102:6"),
        ("Nov 21 10:00:00 web01 sshd[1]: Invalid user oracle from 198.51.100.9 port 60022", "100102:6"),
        ("Nov 21 10:00:00 web01 sshd[1]: Accepted publickey for deploy from 10.0.0.5 port 41000 ssh2", "100104:3"),
        ("Nov 21 10:00:00 web01 sshd[1]: Accepted password for root from 10.0.0.5 port 41000 ssh2", "100105:8"),
        ("Nov 21 10:00:00 web01 sshd[1]: Did not receive identification string from 104.38.106.38 port 20371", "100106:4"),
        ("Nov 21 10:00:00 web01 sshd[1]: Disconnected from user carol 10.0.3.131 port 52755", "100107:0"),
        ("Nov 21 10:00:00 db01 sudo:   ubuntu : TTY=pts/3 ; PWD=/home/ubuntu ; USER=root ; COMMAND=/usr/sbin/service postgresql reload", "100121:3"),
        ("Nov 21 10:00:00 db01 sudo:   ubuntu : TTY=pts/3 ; PWD=/home/ubuntu ; USER=root ; COMMAND=/bin/bash", "100122:8"),
        ("Nov 21 10:00:00 db01 sudo:   mallory : user NOT in sudoers ; TTY=pts/1 ; PWD=/tmp ; USER=root ; COMMAND=/bin/sh", "100123:10"),
        ("203.0.113.7 - - [21/Nov/2025:10:00:00 +0000] \"GET /api/v1/users?id=1%27%20OR%201=1-- HTTP/1.1\" 500 12 \"-\" \"curl/8\"", "100210:7"),
        ("203.0.113.7 - - [21/Nov/2025:10:00:00 +0000] \"GET /static/../../etc/passwd HTTP/1.1\" 200 12 \"-\" \"curl/8\"", "100212:12"),
        ("203.0.113.7 - - [21/Nov/2025:10:00:00 +0000] \"GET / HTTP/1.1\" 404 12 \"-\" \"sqlmap/1.7.2#stable (https://sqlmap.org)\"", "100213:6"),
        ("203.0.113.7 - - [21/Nov/2025:10:00:00 +0000] \"GET /.env HTTP/1.1\" 404 12 \"-\" \"Mozilla/5.0\"", "100214:5"),
        ("203.0.113.7 - - [21/Nov/2025:10:00:00 +0000] \"POST /api/v1/login HTTP/1.1\" 401 12 \"-\" \"Mozilla/5.0\"", "100220:6"),
        ("203.0.113.7 - - [21/Nov/2025:10:00:00 +0000] \"GET /favicon.ico HTTP/1.1\" 404 12 \"-\" \"Mozilla/5.0\"", "100221:0"),
        ("203.0.113.7 - - [21/Nov/2025:10:00:00 +0000] \"GET /api/v1/nope HTTP/1.1\" 404 12 \"-\" \"Mozilla/5.0\"", "100222:3"),
        ("203.0.113.7 - - [21/Nov/2025:10:00:00 +0000] \"GET /api/v1/users HTTP/1.1\" 502 12 \"-\" \"Mozilla/5.0\"", "100223:5"),
        ("203.0.113.7 - - [21/Nov/2025:10:00:00 +0000] \"GET /api/v1/users HTTP/1.1\" 200 12 \"-\" \"Mozilla/5.0\"", "-:-"),
        (r#"{"client_ip":"203.0.113.7","request":{"method":"POST","uri":"/login"},"response":{"status":401}}"#, "100302:5"),
        (r#"{"client_ip":"203.0.113.7","request":{"method":"GET","uri":"/v1/items?q=1 union select 1"},"response":{"status":200}}"#, "100301:7"),
        ("Nov 21 10:00:00 web01 kernel: [137702.101318] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=185.76.170.176 DST=10.0.0.4 LEN=40 TOS=0x00 PREC=0x00 TTL=240 ID=54321 PROTO=TCP SPT=40000 DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0", "100401:2"),
        ("2025-11-21 10:00:00 install nmap:amd64 <none> 7.94+git20230807.3be01efb1+dfsg-3", "100504:7"),
        ("2025-11-21 10:00:00 upgrade libssl3:amd64 3.0.11-1 3.0.13-1", "100502:3"),
        ("2025-11-21 10:00:00 remove curl:amd64 8.5.0-2 <none>", "100503:5"),
    ];
    let mut bad = Vec::new();
    for (line, want) in cases {
        let mut e = Engine::new(p.rules.clone(), Limits::default());
        let got = p.got(&mut e, line);
        let got = got
            .rsplit_once(':')
            .map_or(got.as_str(), |(a, _)| a)
            .to_string();
        if got != *want {
            bad.push(format!("{line}\n    want {want}, got {got}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn own_rules_correlate_bursts() {
    let p = own_pipeline();
    let mut e = Engine::new(p.rules.clone(), Limits::default());
    // SSH brute force: 6 + 2 failures from one address, mixing failure kinds.
    let mut ids = Vec::new();
    for i in 0..8 {
        let line = if i % 2 == 0 {
            "Nov 21 10:00:00 web01 sshd[1]: Failed password for root from 198.51.100.9 port 3921 ssh2"
        } else {
            "Nov 21 10:00:00 web01 sshd[1]: Invalid user test from 198.51.100.9 port 60022"
        };
        ids.push(p.got(&mut e, line));
    }
    assert!(ids[..7].iter().all(|g| !g.starts_with("100150")), "{ids:?}");
    assert!(ids[7].starts_with("100150:10"), "{ids:?}");
    // A login from that address afterwards.
    let g = p.got(
        &mut e,
        "Nov 21 10:00:01 web01 sshd[1]: Accepted password for root from 198.51.100.9 port 4000 ssh2",
    );
    assert!(g.starts_with("100151:12"), "{g}");
    // 401 burst from one address: 8 + 2.
    let line = "203.0.113.8 - - [21/Nov/2025:10:00:00 +0000] \"POST /api/v1/login HTTP/1.1\" 401 12 \"-\" \"x\"";
    let got: Vec<String> = (0..10).map(|_| p.got(&mut e, line)).collect();
    assert!(got[..9].iter().all(|g| g.starts_with("100220")), "{got:?}");
    assert!(got[9].starts_with("100230:10"), "{got:?}");
}

#[test]
fn a_pattern_too_large_to_build_is_a_load_error_even_when_deferred() {
    let e = load_err(
        r#"<group name="g,"><rule id="100" level="3">
             <pcre2>(?:(?:\w{100}){100}){100}</pcre2><description>x</description>
           </rule></group>"#,
    );
    assert!(
        e.contains("rule 100") && e.contains("cannot be compiled"),
        "{e}"
    );
}
