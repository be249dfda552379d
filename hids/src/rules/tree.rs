//! Rule files to rules, and rules to OSSEC's evaluation tree.
//!
//! A file is a fragment of `<group name="...">` elements holding `<rule>`s (the XML quirks and
//! `<var>` substitution are the loader's, [`crate::xml`]). Each rule becomes a [`Rule`]; then, in
//! load order, a rule without `if_sid`/`if_group`/`if_level` joins the top level, and the others are
//! attached as children exactly as OSSEC's `rules_list.c` does:
//! - `if_sid` (ids separated by commas or spaces) attaches under the first node with that id in each
//!   sibling list searched depth first, and the child takes its parent's category;
//! - `if_group` attaches under every node whose group string contains the name;
//! - `if_level` attaches under every node whose level is at least N.
//!
//! Every sibling list is kept in OSSEC's order: level-0 rules first (OSSEC sorts them as level 99),
//! then by descending level, ties in load order. `overwrite="yes"` replaces the definition of the
//! rule with that id but keeps its place in the tree, as OSSEC does.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::Diagnostic;
use crate::event::AlertOptions;

use super::correlate::SameFlags;
use super::lists::{List, Lookup};
use super::matcher::{Category, Compiled, Conditions, FieldCheck, ListCheck, TimeRange, Weekdays};
use super::pat::{Dialect, Pat};

/// An XML element as the rule parser needs it: names, attributes, text and byte spans into the file.
#[derive(Debug, Clone, Default)]
pub struct Elem {
    pub name: String,
    pub span: Range<usize>,
    pub attrs: Vec<Attr>,
    pub text: String,
    pub text_span: Range<usize>,
    pub children: Vec<Elem>,
}

/// One attribute with the span of its value.
#[derive(Debug, Clone, Default)]
pub struct Attr {
    pub name: String,
    pub value: String,
    pub span: Range<usize>,
}

impl Elem {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

/// Fields `ignore` / `check_if_ignored` / first-time-seen keys are built from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyFields {
    pub user: bool,
    pub srcip: bool,
    pub dstip: bool,
    pub id: bool,
    pub location: bool,
    pub data: bool,
    pub name: bool,
}

impl KeyFields {
    /// OSSEC looks for each word as a substring of the option's text.
    fn parse(s: &str) -> KeyFields {
        KeyFields {
            user: s.contains("user"),
            srcip: s.contains("srcip"),
            dstip: s.contains("dstip"),
            id: s.contains("id"),
            location: s.contains("location"),
            data: s.contains("data"),
            name: s.contains("name"),
        }
    }

    pub fn any(&self) -> bool {
        self.user || self.srcip || self.dstip || self.id || self.location || self.data || self.name
    }

    fn or(self, o: KeyFields) -> KeyFields {
        KeyFields {
            user: self.user || o.user,
            srcip: self.srcip || o.srcip,
            dstip: self.dstip || o.dstip,
            id: self.id || o.id,
            location: self.location || o.location,
            data: self.data || o.data,
            name: self.name || o.name,
        }
    }
}

/// One rule, compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: u32,
    pub level: u8,
    /// `accuracy="0"` sorts a rule after every other sibling.
    pub accuracy: bool,
    pub frequency: u32,
    pub timeframe: u64,
    /// The `ignore` attribute: seconds during which the rule does not fire again.
    pub ignore_time: u64,
    pub noalert: bool,
    pub category: Category,
    /// OSSEC's group string (the wrapper's name followed by the rule's `<group>` texts).
    pub group_text: String,
    /// Shared with every alert the rule raises (as are `info` and `mitre`).
    pub groups: Arc<[String]>,
    pub cond: Conditions,
    pub if_sid: Vec<u32>,
    pub if_group: Option<String>,
    pub if_level: Option<u8>,
    pub if_matched_sid: Option<u32>,
    pub if_matched_group: Option<Pat>,
    pub if_matched_regex: Option<Pat>,
    pub same: SameFlags,
    pub if_fts: bool,
    pub check_diff: bool,
    pub ignore_fields: KeyFields,
    pub check_ignore_fields: KeyFields,
    pub options: AlertOptions,
    pub description: Arc<str>,
    pub info: Arc<[String]>,
    pub mitre: Arc<[String]>,
    pub file: Arc<Path>,
    pub line: usize,
}

impl Rule {
    /// Whether the rule searches correlation memory.
    pub fn has_context(&self) -> bool {
        self.if_matched_sid.is_some()
            || self.if_matched_group.is_some()
            || self.if_matched_regex.is_some()
    }

    /// OSSEC's sort key: level × 100, level 0 counting as 99, accuracy 0 unscaled.
    pub fn sort_level(&self) -> u32 {
        let l = if self.level == 0 {
            99
        } else {
            u32::from(self.level)
        };
        if self.accuracy {
            l * 100
        } else {
            l
        }
    }
}

/// A parsed rule in load order: the rule, whether it overwrites, its span, file and file text.
pub type Parsed = (Rule, bool, Range<usize>, PathBuf, Arc<str>);

/// Index of a rule in [`Tree::rules`].
pub type RuleIdx = usize;
/// Index of a node in [`Tree::nodes`].
pub type NodeIdx = usize;

/// A place of a rule in the tree (a rule attached under several parents has several nodes).
#[derive(Debug, Clone)]
pub struct Node {
    pub rule: RuleIdx,
    pub children: Vec<NodeIdx>,
}

/// The loaded rules and the evaluation tree.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub rules: Vec<Rule>,
    pub nodes: Vec<Node>,
    pub top: Vec<NodeIdx>,
    pub by_id: HashMap<u32, RuleIdx>,
}

/// What rule loading needs from outside: the decoder names `decoded_as` may name (None: do not
/// check) and the lists `<list>` may name.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub decoder_names: Option<std::collections::HashSet<String>>,
    /// Lists by the name rules use (the path as configured, and its file name).
    pub lists: HashMap<String, Arc<List>>,
    /// OSSEC's `default_timeframe` (360 seconds).
    pub default_timeframe: u64,
}

struct FileCx<'a> {
    path: &'a Path,
    text: &'a str,
    errors: &'a mut Vec<Diagnostic>,
}

impl FileCx<'_> {
    fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.errors
            .push(Diagnostic::at(self.path, self.text, span, msg.into()));
    }
}

const ELEMENTS: &[&str] = &[
    "match",
    "regex",
    "pcre2",
    "match_pcre2",
    "decoded_as",
    "category",
    "srcip",
    "dstip",
    "srcport",
    "dstport",
    "srcport_pcre2",
    "dstport_pcre2",
    "user",
    "user_pcre2",
    "program_name",
    "program_name_pcre2",
    "hostname",
    "hostname_pcre2",
    "id",
    "id_pcre2",
    "url",
    "url_pcre2",
    "action",
    "status",
    "status_pcre2",
    "extra_data",
    "extra_data_pcre2",
    "field",
    "time",
    "weekday",
    "if_sid",
    "if_group",
    "if_level",
    "if_matched_sid",
    "if_matched_group",
    "if_matched_regex",
    "if_fts",
    "same_source_ip",
    "same_src_ip",
    "same_source_port",
    "same_src_port",
    "same_dst_port",
    "same_user",
    "same_id",
    "same_location",
    "different_url",
    "different_srcip",
    "not_same_source_ip",
    "not_same_user",
    "not_same_id",
    "not_same_agent",
    "check_diff",
    "list",
    "options",
    "group",
    "description",
    "info",
    "cve",
    "mitre",
    "ignore",
    "check_if_ignored",
    "compiled_rule",
];

/// Parses the rules of one file (its top-level elements) into `out`, reporting every problem.
pub fn parse_file(
    path: &Path,
    text: &str,
    roots: &[Elem],
    cx: &Context,
    out: &mut Vec<(Rule, bool, Range<usize>)>,
    errors: &mut Vec<Diagnostic>,
) {
    let mut f = FileCx { path, text, errors };
    let file: Arc<Path> = Arc::from(path);
    for root in roots {
        if !root.name.eq_ignore_ascii_case("group") {
            f.err(
                root.span.clone(),
                format!(
                    "invalid root element <{}>: only <group name=\"...\"> is allowed",
                    root.name
                ),
            );
            continue;
        }
        let Some(name) = root.attr("name") else {
            f.err(root.span.clone(), "<group> needs a name attribute");
            continue;
        };
        if root.children.is_empty() {
            f.err(root.span.clone(), "<group> without any rule");
        }
        for r in &root.children {
            if !r.name.eq_ignore_ascii_case("rule") {
                f.err(
                    r.span.clone(),
                    format!("<{}> is not valid here: expected <rule>", r.name),
                );
                continue;
            }
            if let Some((rule, overwrite)) = parse_rule(&mut f, &file, &name.value, r, cx) {
                out.push((rule, overwrite, r.span.clone()));
            }
        }
    }
}

fn num<T: std::str::FromStr>(f: &mut FileCx, a: &Attr, what: &str) -> Option<T> {
    match a.value.trim().parse::<T>() {
        Ok(v) => Some(v),
        Err(_) => {
            f.err(
                a.span.clone(),
                format!("{what} must be a number, not {:?}", a.value),
            );
            None
        }
    }
}

fn parse_rule(
    f: &mut FileCx,
    file: &Arc<Path>,
    group: &str,
    r: &Elem,
    cx: &Context,
) -> Option<(Rule, bool)> {
    let errors_before = f.errors.len();
    let mut id = None;
    let mut level = None;
    let mut rule = Rule {
        id: 0,
        level: 0,
        accuracy: true,
        frequency: 0,
        timeframe: cx.default_timeframe,
        ignore_time: 0,
        noalert: false,
        category: Category::Syslog,
        group_text: group.to_string(),
        groups: Arc::from([]),
        cond: Conditions::default(),
        if_sid: Vec::new(),
        if_group: None,
        if_level: None,
        if_matched_sid: None,
        if_matched_group: None,
        if_matched_regex: None,
        same: SameFlags::default(),
        if_fts: false,
        check_diff: false,
        ignore_fields: KeyFields::default(),
        check_ignore_fields: KeyFields::default(),
        options: AlertOptions::default(),
        description: "".into(),
        info: Arc::from([]),
        mitre: Arc::from([]),
        file: file.clone(),
        line: crate::diag::line_col(f.text, r.span.start).0,
    };
    let mut overwrite = false;
    for a in &r.attrs {
        match a.name.to_ascii_lowercase().as_str() {
            "id" => id = num::<u32>(f, a, "the rule id"),
            "level" => {
                level = num::<u8>(f, a, "the level");
                if level.is_some_and(|l| l > 16) {
                    f.err(a.span.clone(), "the level must be between 0 and 16");
                }
            }
            "maxsize" => rule.cond.maxsize = num::<usize>(f, a, "maxsize").unwrap_or(0),
            "frequency" => rule.frequency = num::<u32>(f, a, "frequency").unwrap_or(0),
            "timeframe" => rule.timeframe = num::<u64>(f, a, "timeframe").unwrap_or(0),
            "ignore" => rule.ignore_time = num::<u64>(f, a, "ignore").unwrap_or(0),
            "accuracy" => rule.accuracy = num::<u8>(f, a, "accuracy").unwrap_or(1) != 0,
            "noalert" => rule.noalert = a.value.trim() != "0",
            "overwrite" => overwrite = a.value.trim().eq_ignore_ascii_case("yes"),
            other => f.err(
                a.span.clone(),
                format!(
                    "unknown rule attribute {other:?} (expected id, level, maxsize, frequency, \
                     timeframe, ignore, accuracy, noalert, overwrite)"
                ),
            ),
        }
    }
    let (Some(id), Some(level)) = (id, level) else {
        if f.errors.len() == errors_before {
            f.err(r.span.clone(), "a rule needs an id and a level");
        }
        return None;
    };
    rule.id = id;
    rule.level = level;
    if r.children.is_empty() {
        f.err(r.span.clone(), format!("rule {id} has no options"));
    }

    // Elements of the same kind are concatenated as OSSEC does before compiling.
    let mut texts: HashMap<&'static str, (String, Range<usize>)> = HashMap::new();
    let mut groups_extra = String::new();
    let mut info = Vec::new();
    let mut mitre = Vec::new();
    for e in &r.children {
        let name = e.name.to_ascii_lowercase();
        let Some(&key) = ELEMENTS.iter().find(|k| **k == name) else {
            let hint = crate::diag::suggest(&name, ELEMENTS.iter().copied())
                .map(|s| format!(" (did you mean <{s}>?)"))
                .unwrap_or_default();
            f.err(
                e.span.clone(),
                format!("unknown element <{}> in rule {id}{hint}", e.name),
            );
            continue;
        };
        // Wazuh writes the PCRE2 form as an attribute.
        let key = match e.attr("type").map(|a| a.value.as_str()) {
            Some("pcre2") => match key {
                "match" => "match_pcre2",
                "regex" => "pcre2",
                "user" | "program_name" | "hostname" | "id" | "url" | "status" | "extra_data"
                | "srcport" | "dstport" => {
                    let k = format!("{key}_pcre2");
                    ELEMENTS.iter().copied().find(|x| *x == k).unwrap_or(key)
                }
                _ => key,
            },
            _ => key,
        };
        let text = e.text.as_str();
        let trimmed = text.trim();
        let span = if e.text_span.is_empty() {
            e.span.clone()
        } else {
            e.text_span.clone()
        };
        match key {
            "decoded_as" => {
                if let Some(names) = &cx.decoder_names {
                    if !names.contains(trimmed) {
                        f.err(span, format!("decoded_as names no decoder: {text:?}"));
                        continue;
                    }
                }
                rule.cond.decoded_as = Some(trimmed.to_string());
            }
            "category" => match Category::parse(trimmed) {
                Some(c) => rule.category = c,
                None => f.err(
                    span,
                    format!(
                        "invalid category {text:?} (expected one of {})",
                        Category::NAMES.join(", ")
                    ),
                ),
            },
            "srcip" | "dstip" => {
                let list = if key == "srcip" {
                    &mut rule.cond.srcip
                } else {
                    &mut rule.cond.dstip
                };
                if let Err(m) = list.push(text) {
                    f.err(span, m);
                }
            }
            "action" => rule.cond.action = Some(trimmed.to_string()),
            "time" => match TimeRange::parse(trimmed) {
                Some(t) => rule.cond.time = Some(t),
                None => f.err(span, format!("invalid time window {text:?}")),
            },
            "weekday" => match Weekdays::parse(trimmed) {
                Some(w) => rule.cond.weekday = Some(w),
                None => f.err(span, format!("invalid weekday {text:?}")),
            },
            "if_sid" => {
                for part in text.split([',', ' ']).filter(|s| !s.is_empty()) {
                    match part.parse::<u32>() {
                        Ok(n) => rule.if_sid.push(n),
                        Err(_) => f.err(
                            span.clone(),
                            format!("if_sid must list rule ids, not {part:?}"),
                        ),
                    }
                }
            }
            "if_group" => {
                let g = rule.if_group.get_or_insert_with(String::new);
                g.push_str(text);
            }
            "if_level" => match text.trim().parse::<u8>() {
                Ok(n) if n > 0 => rule.if_level = Some(n),
                _ => f.err(
                    span,
                    format!("if_level must be a level from 1, not {text:?}"),
                ),
            },
            "if_matched_sid" => match text.trim().parse::<u32>() {
                Ok(n) => rule.if_matched_sid = Some(n),
                Err(_) => f.err(
                    span,
                    format!("if_matched_sid must be a rule id, not {text:?}"),
                ),
            },
            "if_fts" => rule.if_fts = true,
            "same_source_ip" | "same_src_ip" => rule.same.source_ip = true,
            "same_source_port" | "same_src_port" => rule.same.source_port = true,
            "same_dst_port" => rule.same.dst_port = true,
            "same_user" => rule.same.user = true,
            "same_id" => rule.same.id = true,
            "same_location" => rule.same.location = true,
            "different_url" => rule.same.different_url = true,
            "different_srcip" => rule.same.different_srcip = true,
            "not_same_source_ip" => rule.same.source_ip = false,
            "not_same_user" => rule.same.user = false,
            "not_same_id" => rule.same.id = false,
            "not_same_agent" => rule.same.location = false,
            "check_diff" => rule.check_diff = true,
            "options" => {
                for o in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match o {
                        "alert_by_email" => {
                            rule.options.alert_by_email = true;
                            rule.options.no_email_alert = false;
                        }
                        "no_email_alert" => {
                            rule.options.no_email_alert = true;
                            rule.options.alert_by_email = false;
                        }
                        "no_log" => rule.options.no_log = true,
                        "log_alert" => rule.options.no_log = false,
                        "no_full_log" => rule.options.no_full_log = true,
                        "no_ar" | "no_counter" => {}
                        other => f.err(
                            span.clone(),
                            format!(
                                "unknown option {other:?} (expected alert_by_email, \
                                 no_email_alert, no_log, no_full_log, no_ar)"
                            ),
                        ),
                    }
                }
            }
            "group" => groups_extra.push_str(text),
            "description" => rule.description = format!("{}{text}", rule.description).into(),
            "info" | "cve" => {
                let kind = e.attr("type").map(|a| a.value.clone());
                info.push(match (key, kind) {
                    ("cve", _) => format!("cve: {text}"),
                    (_, Some(t)) => format!("{t}: {text}"),
                    _ => text.to_string(),
                });
            }
            "mitre" => {
                for c in &e.children {
                    if c.name.eq_ignore_ascii_case("id") {
                        mitre.push(c.text.trim().to_string());
                    } else {
                        f.err(c.span.clone(), "<mitre> holds <id> elements only");
                    }
                }
                if e.children.is_empty() && !text.trim().is_empty() {
                    mitre.push(text.trim().to_string());
                }
            }
            "ignore" => rule.ignore_fields = rule.ignore_fields.or(KeyFields::parse(text)),
            "check_if_ignored" => {
                rule.check_ignore_fields = rule.check_ignore_fields.or(KeyFields::parse(text))
            }
            "compiled_rule" => match Compiled::parse(text.trim()) {
                Some(c) => rule.cond.compiled = Some(c),
                None => f.err(
                    span,
                    format!(
                        "unknown compiled rule {text:?} (available: {})",
                        Compiled::NAMES.join(", ")
                    ),
                ),
            },
            "field" => {
                let Some(n) = e.attr("name") else {
                    f.err(e.span.clone(), "<field> needs a name attribute");
                    continue;
                };
                let dialect = match e.attr("type").map(|a| a.value.as_str()) {
                    Some("pcre2") => Dialect::Pcre2,
                    Some("osmatch") => Dialect::OsMatch,
                    _ => Dialect::OsRegex,
                };
                match compile(dialect, text, negated(e)) {
                    Ok(pat) => rule.cond.fields.push(FieldCheck {
                        name: n.value.clone(),
                        pat,
                    }),
                    Err(m) => f.err(span, m),
                }
            }
            "list" => parse_list(f, e, span, cx, &mut rule),
            _ => {
                // Text patterns: collected, concatenated, compiled below.
                let entry = texts
                    .entry(key)
                    .or_insert_with(|| (String::new(), span.clone()));
                entry.0.push_str(text);
                if negated(e) && !entry.0.starts_with('!') {
                    entry.0.insert(0, '!');
                }
            }
        }
    }
    for (key, (text, span)) in texts {
        let (dialect, base) = match key.strip_suffix("_pcre2") {
            Some(b) => (Dialect::Pcre2, b),
            None if key == "pcre2" => (Dialect::Pcre2, "match"),
            None if key == "regex" || key == "if_matched_regex" => (Dialect::OsRegex, key),
            None => (Dialect::OsMatch, key),
        };
        // The patterns sibling sets can answer for are built only when needed (RuleSet::link
        // builds those that a set does not cover).
        let deferred = matches!(base, "match" | "regex" | "url" | "id" | "program_name");
        let compiled = if deferred {
            Pat::compile_deferred(dialect, &text).map_err(|e| e.to_string())
        } else {
            compile(dialect, &text, false)
        };
        let pat = match compiled {
            Ok(p) => p,
            Err(m) => {
                f.err(span, m);
                continue;
            }
        };
        let c = &mut rule.cond;
        match base {
            "match" => c.matches.push(pat),
            "regex" => c.regex.push(pat),
            "program_name" => c.program_name.push(pat),
            "id" => c.id.push(pat),
            "url" => c.url.push(pat),
            "srcport" => c.srcport.push(pat),
            "dstport" => c.dstport.push(pat),
            "user" => c.user.push(pat),
            "extra_data" => c.extra_data.push(pat),
            "hostname" => c.hostname.push(pat),
            "status" => c.status.push(pat),
            "if_matched_group" => rule.if_matched_group = Some(pat),
            "if_matched_regex" => rule.if_matched_regex = Some(pat),
            other => f.err(span, format!("internal: unhandled element <{other}>")),
        }
    }
    rule.group_text.push_str(&groups_extra);
    rule.info = info.into();
    rule.mitre = mitre.into();
    rule.groups = rule
        .group_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();

    if (rule.same.any() || rule.frequency > 0) && !rule.has_context() {
        f.err(
            r.span.clone(),
            format!(
                "rule {id}: frequency and same_*/different_* options need if_matched_sid, \
                 if_matched_group or if_matched_regex"
            ),
        );
    }
    // OSSEC: a correlation rule without a parent hangs under what it correlates.
    if rule.if_sid.is_empty() && rule.if_group.is_none() && rule.if_level.is_none() {
        if let Some(s) = rule.if_matched_sid {
            rule.if_sid.push(s);
        } else if let Some(g) = &rule.if_matched_group {
            rule.if_group = Some(g.source.clone());
        }
    }
    if f.errors.len() > errors_before {
        return None;
    }
    Some((rule, overwrite))
}

fn negated(e: &Elem) -> bool {
    e.attr("negate")
        .is_some_and(|a| a.value.trim().eq_ignore_ascii_case("yes"))
}

fn compile(dialect: Dialect, text: &str, negate: bool) -> Result<Pat, String> {
    let p = Pat::compile(dialect, text).map_err(|e| e.to_string())?;
    Ok(if negate { p.negated() } else { p })
}

fn parse_list(f: &mut FileCx, e: &Elem, span: Range<usize>, cx: &Context, rule: &mut Rule) {
    let Some(field) = e.attr("field") else {
        f.err(e.span.clone(), "<list> needs a field attribute");
        return;
    };
    let lookup = match e.attr("lookup") {
        None => Lookup::MatchKey,
        Some(a) => match Lookup::parse(a.value.trim()) {
            Some(l) => l,
            None => {
                f.err(
                    a.span.clone(),
                    format!(
                        "unknown lookup {:?} (expected one of {})",
                        a.value,
                        Lookup::NAMES.join(", ")
                    ),
                );
                return;
            }
        },
    };
    let check_value = match (e.attr("check_value"), lookup.needs_value()) {
        (Some(a), true) => match Pat::compile(Dialect::OsMatch, &a.value) {
            Ok(p) => Some(p),
            Err(m) => {
                f.err(a.span.clone(), m.to_string());
                return;
            }
        },
        (None, true) => {
            f.err(
                e.span.clone(),
                "this lookup needs a check_value attribute".to_string(),
            );
            return;
        }
        (Some(a), false) => {
            f.err(
                a.span.clone(),
                "check_value is only used by *_key_value lookups",
            );
            return;
        }
        (None, false) => None,
    };
    let name = e.text.trim();
    let found = cx.lists.get(name).cloned().or_else(|| {
        let file = Path::new(name).file_name()?.to_str()?;
        cx.lists.get(file).cloned()
    });
    match found {
        Some(list) => rule.cond.lists.push(ListCheck {
            field: field.value.clone(),
            lookup,
            check_value,
            list,
        }),
        None => f.err(
            span,
            format!("list {name:?} is not loaded (add it to [rules] lists in the configuration)"),
        ),
    }
}

impl Tree {
    /// Builds the tree from parsed rules in load order; `spans` locate each rule for errors.
    pub fn build(parsed: Vec<Parsed>, errors: &mut Vec<Diagnostic>) -> Tree {
        let mut t = Tree::default();
        for (rule, overwrite, span, path, text) in parsed {
            let id = rule.id;
            if overwrite {
                match t.by_id.get(&id) {
                    Some(&idx) => {
                        // The new definition, at the old place (OSSEC's OS_AddRuleInfo).
                        let old = &t.rules[idx];
                        let mut new = rule;
                        new.category = old.category;
                        new.if_sid = old.if_sid.clone();
                        new.if_group = old.if_group.clone();
                        new.if_level = old.if_level;
                        t.rules[idx] = new;
                    }
                    None => errors.push(Diagnostic::at(
                        &path,
                        &text,
                        span,
                        format!("overwrite of rule {id}, which is not loaded"),
                    )),
                }
                continue;
            }
            if t.by_id.contains_key(&id) {
                errors.push(Diagnostic::at(
                    &path,
                    &text,
                    span,
                    format!("duplicate rule id {id} (use overwrite=\"yes\" to replace it)"),
                ));
                continue;
            }
            let idx = t.rules.len();
            t.rules.push(rule);
            t.by_id.insert(id, idx);
            if let Err(m) = t.attach(idx) {
                errors.push(Diagnostic::at(&path, &text, span, m));
            }
        }
        t
    }

    fn new_node(&mut self, rule: RuleIdx) -> NodeIdx {
        self.nodes.push(Node {
            rule,
            children: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Inserts `node` into a sibling list in OSSEC's order.
    fn insert_sorted(&mut self, list: Option<NodeIdx>, node: NodeIdx) {
        let key = self.rules[self.nodes[node].rule].sort_level();
        let nodes = &self.nodes;
        let rules = &self.rules;
        let siblings = match list {
            None => &self.top,
            Some(p) => &nodes[p].children,
        };
        let pos = siblings
            .iter()
            .position(|&n| key > rules[nodes[n].rule].sort_level())
            .unwrap_or(siblings.len());
        match list {
            None => self.top.insert(pos, node),
            Some(p) => self.nodes[p].children.insert(pos, node),
        }
    }

    fn add_child(&mut self, parent: NodeIdx, rule: RuleIdx) {
        let n = self.new_node(rule);
        self.insert_sorted(Some(parent), n);
    }

    fn attach(&mut self, idx: RuleIdx) -> Result<(), String> {
        let rule = &self.rules[idx];
        if !rule.if_sid.is_empty() {
            let sids = rule.if_sid.clone();
            for sid in sids {
                let top = self.top.clone();
                if !self.attach_sid(&top, sid, idx) {
                    return Err(format!(
                        "rule {}: if_sid {sid} names no loaded rule (parents must load first)",
                        self.rules[idx].id
                    ));
                }
            }
            Ok(())
        } else if let Some(level) = rule.if_level {
            let key = u32::from(level) * 100;
            let id = rule.id;
            let targets: Vec<NodeIdx> = self
                .walk()
                .into_iter()
                .filter(|&n| {
                    let r = &self.rules[self.nodes[n].rule];
                    r.sort_level() >= key && r.id != id
                })
                .collect();
            if targets.is_empty() {
                return Err(format!("rule {id}: no rule has level {level} for if_level"));
            }
            for n in targets {
                self.add_child(n, idx);
            }
            Ok(())
        } else if let Some(g) = rule.if_group.clone() {
            let id = rule.id;
            let g = g.to_ascii_lowercase();
            let targets: Vec<NodeIdx> = self
                .walk()
                .into_iter()
                .filter(|&n| {
                    let r = &self.rules[self.nodes[n].rule];
                    r.group_text.to_ascii_lowercase().contains(&g) && r.id != id
                })
                .collect();
            if targets.is_empty() {
                return Err(format!("rule {id}: no rule is in group {g:?} for if_group"));
            }
            for n in targets {
                self.add_child(n, idx);
            }
            Ok(())
        } else {
            let n = self.new_node(idx);
            self.insert_sorted(None, n);
            Ok(())
        }
    }

    /// OSSEC's `_AddtoRule` for one sid: in each sibling list, the first node with the id takes the
    /// child and ends that list's search; otherwise each node's children are searched in turn.
    fn attach_sid(&mut self, list: &[NodeIdx], sid: u32, idx: RuleIdx) -> bool {
        let mut found = false;
        for &n in list {
            let r = self.nodes[n].rule;
            if self.rules[r].id == sid {
                self.rules[idx].category = self.rules[r].category;
                self.add_child(n, idx);
                return true;
            }
            let children = self.nodes[n].children.clone();
            if !children.is_empty() && self.attach_sid(&children, sid, idx) {
                found = true;
            }
        }
        found
    }

    /// Every node, depth first in sibling order (the order OSSEC's group and level searches visit),
    /// collected before any insertion so a rule is never attached under its own new node.
    fn walk(&self) -> Vec<NodeIdx> {
        let mut out = Vec::new();
        let mut stack: Vec<NodeIdx> = self.top.iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            out.push(n);
            stack.extend(self.nodes[n].children.iter().rev().copied());
        }
        out
    }
}
