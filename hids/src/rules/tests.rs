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
/// rules, 17101 and 17102, read the wall clock); the suite runs at such a time: Wednesday
/// 2026-08-12 12:00 UTC (in any time zone within ±3 hours of UTC it is still office hours).
pub(crate) fn test_clock() -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_786_536_000)
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
            decoder_names: Some(
                decoders
                    .decoders()
                    .iter()
                    .map(|d| d.reported_name.to_string())
                    .collect(),
            ),
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
            Some(v) => format!("{}:{}:{dec}", v.info.id, v.info.level),
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
