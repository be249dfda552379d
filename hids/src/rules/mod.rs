//! The rule engine: OSSEC-format rule files loaded into OSSEC's evaluation tree ([`tree`]), each
//! rule's conditions ([`matcher`]), correlation memory ([`correlate`]) and CDB-style lists
//! ([`lists`]). An [`Engine`] takes decoded events and says which rule fired, as OSSEC's
//! analysisd does, and builds the [`Alert`].
//!
//! Evaluation follows `OS_CheckIfRuleMatch`: the top-level rules of the event's category are tried
//! in order (level 0 first, then by descending level); a rule whose conditions hold tries its
//! children in order and the first child that fires wins (so the deepest matching rule is the one
//! reported); a rule with `noalert` fires only through a child. A fired level-0 rule ends the search
//! without an alert and is not remembered for correlation.

pub mod correlate;
mod json;
pub mod lists;
pub mod matcher;
pub mod pat;
pub mod stage;
pub mod syscheck;
pub mod tree;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::diag::Diagnostic;
use crate::event::{Alert, Decoded, Event, Predecoded, RuleInfo};

use correlate::{Keys, Limits, ListId, Search, State};
use matcher::{Category, Fields, Known, Scratch, SiblingSets, Src, View};
use tree::{Elem, KeyFields, NodeIdx, Rule, RuleIdx, Tree};

/// Why rules could not be loaded: every problem found, each located.
#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in rule files", .0.len())]
pub struct LoadError(pub Vec<Diagnostic>);

/// Decoder names OSSEC defines in its code rather than in decoder files: the FIM decoders (which
/// [`syscheck`] implements) and the rootcheck and host-information ones (accepted so that OSSEC's
/// rules load; no event of ours carries them).
pub const BUILTIN_DECODERS: [&str; 8] = [
    "syscheck_integrity_changed",
    "syscheck_integrity_changed_2nd",
    "syscheck_integrity_changed_3rd",
    "syscheck_new_entry",
    "syscheck_deleted",
    "rootcheck",
    "hostinfo_modified",
    "hostinfo_new",
];

/// Options for loading a rule set.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Decoder names `decoded_as` may use (None: not checked). [`BUILTIN_DECODERS`] are always
    /// accepted.
    pub decoder_names: Option<HashSet<String>>,
    /// List files `<list>` may name, by path.
    pub lists: Vec<PathBuf>,
}

/// Where a rule searches correlation memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchIn {
    Sid(ListId),
    Group(ListId),
    /// `if_matched_regex`: every remembered event.
    Events(ListId),
}

/// Rules loaded and ready: the tree plus where each rule reads and feeds correlation memory.
#[derive(Debug)]
pub struct RuleSet {
    pub tree: Tree,
    search: Vec<Option<SearchIn>>,
    feeds: Vec<Vec<ListId>>,
    lists: usize,
    uses_clock: bool,
    top_set: Option<SiblingSets>,
    top_index: TopIndex,
    child_sets: Vec<Option<SiblingSets>>,
    /// The files loaded, in order.
    pub files: Vec<PathBuf>,
}

pub use crate::xml::expand_paths;
pub use json::{rfc3339, write_alert_json, write_json_parts};

impl RuleSet {
    /// Loads rule files (directories expand to their `*.xml` in name order) in the order given.
    pub fn load(paths: &[PathBuf], opts: &LoadOptions) -> Result<RuleSet, LoadError> {
        let files = expand_paths(paths).map_err(LoadError)?;
        let mut errors = Vec::new();
        let mut docs = Vec::new();
        for file in &files {
            match crate::xml::Document::load(file) {
                Ok(d) => docs.push(d),
                Err(e) => errors.extend(e),
            }
        }
        match RuleSet::from_documents(&docs, opts) {
            Ok(set) if errors.is_empty() => Ok(set),
            Ok(_) => Err(LoadError(errors)),
            Err(LoadError(e)) => {
                errors.extend(e);
                Err(LoadError(errors))
            }
        }
    }

    /// Builds a rule set from parsed files, in order.
    pub fn from_documents(
        docs: &[crate::xml::Document],
        opts: &LoadOptions,
    ) -> Result<RuleSet, LoadError> {
        let mut errors = Vec::new();
        let mut cx = tree::Context {
            decoder_names: opts.decoder_names.clone().map(|mut n| {
                n.extend(BUILTIN_DECODERS.iter().map(|s| s.to_string()));
                n
            }),
            lists: HashMap::new(),
            default_timeframe: 360,
        };
        for lp in &opts.lists {
            match lists::List::load(lp) {
                Ok(l) => {
                    let l = Arc::new(l);
                    cx.lists.insert(lp.display().to_string(), l.clone());
                    if let Some(name) = lp.file_name().and_then(|n| n.to_str()) {
                        cx.lists.insert(name.to_string(), l.clone());
                    }
                    // OSSEC names lists without their .cdb suffix.
                    if let Some(stem) = lp.file_stem().and_then(|n| n.to_str()) {
                        cx.lists.entry(stem.to_string()).or_insert(l);
                    }
                }
                Err(e) => errors.extend(e),
            }
        }
        let mut parsed = Vec::new();
        for doc in docs {
            let text: Arc<str> = Arc::from(doc.source.as_str());
            let roots: Vec<Elem> = doc.roots.iter().map(to_elem).collect();
            let mut out = Vec::new();
            tree::parse_file(&doc.path, &text, &roots, &cx, &mut out, &mut errors);
            parsed.extend(
                out.into_iter()
                    .map(|(r, o, s)| (r, o, s, doc.path.clone(), text.clone())),
            );
        }
        let t = Tree::build(parsed, &mut errors);
        let files = docs.iter().map(|d| d.path.clone()).collect();
        let set = RuleSet::link(t, &mut errors, files);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(LoadError(errors))
        }
    }

    /// Works out the correlation lists: one per `if_matched_sid` target, one per `if_matched_group`
    /// rule (fed by every rule whose group matches), one for `if_matched_regex`.
    fn link(tree: Tree, errors: &mut Vec<Diagnostic>, files: Vec<PathBuf>) -> RuleSet {
        let top_set = sibling_sets(&tree, &tree.top);
        let top_index = TopIndex::new(&tree);
        let child_sets: Vec<Option<SiblingSets>> = (0..tree.nodes.len())
            .map(|n| sibling_sets(&tree, &tree.nodes[n].children))
            .collect();
        build_uncovered(&tree, &top_set, &child_sets, errors);
        let n = tree.rules.len();
        let mut search = vec![None; n];
        let mut sid_list: Vec<Option<ListId>> = vec![None; n];
        let mut group_feeds: Vec<Vec<ListId>> = vec![Vec::new(); n];
        let mut lists = 0;
        let mut events_list = None;
        for (i, r) in tree.rules.iter().enumerate() {
            if let Some(sid) = r.if_matched_sid {
                match tree.by_id.get(&sid) {
                    Some(&t) => {
                        let l = *sid_list[t].get_or_insert_with(|| {
                            lists += 1;
                            lists - 1
                        });
                        search[i] = Some(SearchIn::Sid(l));
                    }
                    None => errors.push(rule_diag(
                        r,
                        format!("rule {}: if_matched_sid {sid} names no loaded rule", r.id),
                    )),
                }
            } else if let Some(g) = &r.if_matched_group {
                let l = lists;
                lists += 1;
                search[i] = Some(SearchIn::Group(l));
                for (t, other) in tree.rules.iter().enumerate() {
                    if g.is_match(&other.group_text) {
                        group_feeds[t].push(l);
                    }
                }
            } else if r.if_matched_regex.is_some() {
                let l = *events_list.get_or_insert_with(|| {
                    lists += 1;
                    lists - 1
                });
                search[i] = Some(SearchIn::Events(l));
            }
        }
        let feeds = (0..n)
            .map(|i| {
                // OSSEC: a rule feeds its own if_matched_sid list, otherwise its group lists.
                let mut f = match sid_list[i] {
                    Some(l) => vec![l],
                    None => group_feeds[i].clone(),
                };
                f.extend(events_list);
                f
            })
            .collect();
        let uses_clock = tree
            .rules
            .iter()
            .any(|r| r.cond.time.is_some() || r.cond.weekday.is_some());
        RuleSet {
            tree,
            search,
            feeds,
            lists,
            uses_clock,
            top_set,
            top_index,
            child_sets,
            files,
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.tree.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.rules.is_empty()
    }

    /// A rule by id.
    pub fn rule(&self, id: u32) -> Option<&Rule> {
        self.tree.by_id.get(&id).map(|&i| &self.tree.rules[i])
    }

    /// Rules whose patterns need the bounded backtracking engine (for `check-config`).
    pub fn non_linear(&self) -> Vec<u32> {
        let c = |r: &Rule| {
            let cd = &r.cond;
            [
                &cd.program_name,
                &cd.id,
                &cd.matches,
                &cd.regex,
                &cd.url,
                &cd.srcport,
                &cd.dstport,
                &cd.user,
                &cd.extra_data,
                &cd.hostname,
                &cd.status,
            ]
            .iter()
            .any(|v| v.iter().any(|p| !p.is_linear()))
        };
        self.tree
            .rules
            .iter()
            .filter(|r| c(r))
            .map(|r| r.id)
            .collect()
    }
}

/// The top-level rules an event can reach, by its category and decoder, as positions in
/// [`Tree::top`] (in order): a top-level rule sees only events of its category, and one with
/// `decoded_as` only its decoder's, so most are never tried.
#[derive(Debug, Default)]
struct TopIndex {
    /// For each decoder some top-level rule names in `decoded_as`, per category.
    by_decoder: crate::hash::Map<Box<str>, [Box<[u32]>; CATEGORIES]>,
    /// For any other decoder (or none), per category: the rules without `decoded_as`.
    other: [Box<[u32]>; CATEGORIES],
}

const CATEGORIES: usize = Category::NAMES.len();

impl TopIndex {
    fn new(tree: &Tree) -> TopIndex {
        let list = |cat: usize, dec: Option<&str>| -> Box<[u32]> {
            tree.top
                .iter()
                .enumerate()
                .filter(|(_, &n)| {
                    let r = &tree.rules[tree.nodes[n].rule];
                    r.category as usize == cat
                        && r.cond
                            .decoded_as
                            .as_deref()
                            .map_or(true, |d| Some(d) == dec)
                })
                .map(|(pos, _)| pos as u32)
                .collect()
        };
        let mut by_decoder = crate::hash::Map::default();
        for &n in &tree.top {
            if let Some(d) = &tree.rules[tree.nodes[n].rule].cond.decoded_as {
                by_decoder
                    .entry(d.as_str().into())
                    .or_insert_with(|| std::array::from_fn(|c| list(c, Some(d))));
            }
        }
        TopIndex {
            by_decoder,
            other: std::array::from_fn(|c| list(c, None)),
        }
    }

    fn candidates(&self, category: Category, decoder: Option<&str>) -> &[u32] {
        let c = category as usize;
        match decoder.and_then(|d| self.by_decoder.get(d)) {
            Some(lists) => &lists[c],
            None => &self.other[c],
        }
    }
}

/// Sibling lists with fewer patterns of a source than this check them one by one.
const MIN_SET_PATTERNS: usize = 4;

/// The patterns of a sibling list, per source, in one multi-pattern regex each. Built without
/// a literal prefilter: every such scan reads the whole text anyway, and the prefilters of
/// case-insensitive alternations took more memory than the automata.
fn sibling_sets(tree: &Tree, list: &[NodeIdx]) -> Option<SiblingSets> {
    let mut out = SiblingSets::default();
    let mut any = false;
    for src in [Src::Log, Src::Url, Src::Id, Src::ProgramName] {
        let mut sources: Vec<&str> = Vec::new();
        let mut maps = Vec::with_capacity(list.len());
        for &n in list {
            let pats = patterns_of(&tree.rules[tree.nodes[n].rule].cond, src);
            let map: Box<[Option<u32>]> = pats
                .iter()
                .map(|p| {
                    p.set_source().map(|s| {
                        sources.push(s);
                        (sources.len() - 1) as u32
                    })
                })
                .collect();
            maps.push(map);
        }
        if sources.len() < MIN_SET_PATTERNS {
            continue;
        }
        let Ok(set) = matcher::PatternScan::new(&sources) else {
            continue;
        };
        out.sets[src as usize] = Some(Box::new(set));
        out.first[src as usize] = maps
            .iter()
            .map(|m| m.iter().flatten().next().copied())
            .collect();
        out.maps[src as usize] = maps;
        any = true;
    }
    any.then_some(out)
}

/// A rule's patterns of one [`Src`], in the order [`matcher::Conditions::check`] numbers them.
fn patterns_of(c: &matcher::Conditions, src: Src) -> Vec<&pat::Pat> {
    match src {
        Src::Log => c.matches.iter().chain(c.regex.iter()).collect(),
        Src::Url => c.url.iter().collect(),
        Src::Id => c.id.iter().collect(),
        Src::ProgramName => c.program_name.iter().collect(),
    }
}

/// Builds the deferred patterns that some sibling list cannot answer from its set (a rule can sit
/// in several lists), so that they are ready and a pattern too large to build is a load error
/// rather than a silent mismatch. The others are never searched on their own in the engine.
fn build_uncovered(
    tree: &Tree,
    top_set: &Option<SiblingSets>,
    child_sets: &[Option<SiblingSets>],
    errors: &mut Vec<Diagnostic>,
) {
    const SRCS: [Src; 4] = [Src::Log, Src::Url, Src::Id, Src::ProgramName];
    let mut needed: Vec<[Vec<bool>; 4]> = tree
        .rules
        .iter()
        .map(|r| SRCS.map(|s| vec![false; patterns_of(&r.cond, s).len()]))
        .collect();
    let mut mark = |list: &[NodeIdx], sets: Option<&SiblingSets>| {
        for (pos, &n) in list.iter().enumerate() {
            let need = &mut needed[tree.nodes[n].rule];
            for s in SRCS {
                let map = sets
                    .filter(|x| x.sets[s as usize].is_some())
                    .and_then(|x| x.maps[s as usize].get(pos));
                for (i, flag) in need[s as usize].iter_mut().enumerate() {
                    if !map.is_some_and(|m| m.get(i).copied().flatten().is_some()) {
                        *flag = true;
                    }
                }
            }
        }
    };
    mark(&tree.top, top_set.as_ref());
    for (n, node) in tree.nodes.iter().enumerate() {
        mark(&node.children, child_sets[n].as_ref());
    }
    for (r, need) in tree.rules.iter().zip(&needed) {
        for s in SRCS {
            for (p, &n) in patterns_of(&r.cond, s).iter().zip(&need[s as usize]) {
                if let (true, Err(e)) = (n, p.compile_now()) {
                    errors.push(rule_diag(r, format!("rule {}: {e}", r.id)));
                }
            }
        }
    }
}

fn rule_diag(r: &Rule, msg: String) -> Diagnostic {
    Diagnostic {
        file: r.file.to_path_buf(),
        line: r.line,
        col: 1,
        message: msg,
        source_line: String::new(),
    }
}

fn to_elem(e: &crate::xml::Element) -> Elem {
    let text_at = e.text_offset(0);
    Elem {
        name: e.name.clone(),
        span: e.pos..e.pos,
        attrs: e
            .attrs
            .iter()
            .map(|a| tree::Attr {
                name: a.name.clone(),
                value: a.value.clone(),
                span: a.pos..a.pos,
            })
            .collect(),
        text: e.text.clone(),
        text_span: text_at..text_at + usize::from(!e.text.is_empty()),
        children: e.children.iter().map(to_elem).collect(),
    }
}

/// One decoded event as the engine takes it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub event: &'a Event,
    pub predecoded: &'a Predecoded,
    pub decoded: &'a Decoded,
    /// The matching decoder's `<type>` (syslog when none matched).
    pub category: Category,
    /// The matching decoder's `<fts>` fields, for `if_fts`.
    pub fts: Fts,
}

/// A decoder's first-time-seen key fields (`<fts>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fts {
    pub fields: KeyFields,
    pub srcuser: bool,
    pub system_name: bool,
}

impl Fts {
    /// Parses a decoder's `<fts>` text (`name, user, location` ...).
    pub fn parse(s: &str) -> Fts {
        let words: Vec<&str> = s.split([',', ' ']).filter(|w| !w.is_empty()).collect();
        let has = |w: &str| words.contains(&w);
        Fts {
            fields: KeyFields {
                user: has("user") || has("dstuser"),
                srcip: has("srcip"),
                dstip: has("dstip"),
                id: has("id"),
                location: has("location"),
                data: has("data") || has("extra_data"),
                name: has("name"),
            },
            srcuser: has("srcuser"),
            system_name: has("system_name"),
        }
    }

    pub fn any(&self) -> bool {
        self.fields.any() || self.srcuser || self.system_name
    }
}

/// What the engine decided for one event.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub rule: RuleIdx,
    pub id: u32,
    pub level: u8,
    /// How many times the rule has fired in this engine, this event included.
    pub firedtimes: u64,
    /// For correlation rules, the logs of the earlier events (newest first).
    pub related: Vec<String>,
    /// Whether an alert is raised: false for level 0 and for suppressed repeats.
    pub alert: bool,
    /// Why a matching rule raised no alert.
    pub suppressed: Option<&'static str>,
}

/// A rule set plus the state of one analysis stream (correlation memory, firing counts).
#[derive(Debug)]
pub struct Engine {
    set: Arc<RuleSet>,
    state: State,
    firedtimes: Vec<u64>,
    ignored_at: Vec<Option<u64>>,
    last_diff: HashMap<RuleIdx, Box<str>>,
    clock: (i64, u32, u8),
    /// [`Walk::pool`] between events.
    pool: Vec<Scratch>,
}

/// What a correlation list holds, stable across reloads (list numbers are not).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ListKey {
    /// Events of the rule with this id (`if_matched_sid`).
    Sid(u32),
    /// Events whose group matches the `if_matched_group` of the rule with this id.
    Group(u32),
    /// Every event (`if_matched_regex`).
    Events,
}

fn list_key(r: &Rule, s: SearchIn) -> (ListKey, ListId) {
    match s {
        SearchIn::Sid(l) => (ListKey::Sid(r.if_matched_sid.unwrap_or(0)), l),
        SearchIn::Group(l) => (ListKey::Group(r.id), l),
        SearchIn::Events(l) => (ListKey::Events, l),
    }
}

fn list_keys(set: &RuleSet) -> HashMap<ListKey, ListId> {
    set.search
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some(list_key(&set.tree.rules[i], (*s)?)))
        .collect()
}

/// Whether two versions of a rule search and mark correlation memory alike.
fn same_correlation(a: &Rule, b: &Rule) -> bool {
    let src = |p: &Option<pat::Pat>| p.as_ref().map(|p| p.source.clone());
    a.level == b.level
        && a.frequency == b.frequency
        && a.timeframe == b.timeframe
        && a.same == b.same
        && a.if_matched_sid == b.if_matched_sid
        && src(&a.if_matched_group) == src(&b.if_matched_group)
        && src(&a.if_matched_regex) == src(&b.if_matched_regex)
}

/// Per-event scratch space for the tree walk.
struct Walk<'a> {
    view: View<'a>,
    keys: Option<Keys<'a>>,
    fts: Fts,
    matched: u8,
    related: Vec<String>,
    /// Scratch space for the sibling lists being walked, one per tree level, reused.
    pool: Vec<Scratch>,
}

impl<'a> Walk<'a> {
    fn keys(&mut self) -> &Keys<'a> {
        let v = &self.view;
        self.keys.get_or_insert_with(|| keys_of(v))
    }
}

fn keys_of<'a>(v: &View<'a>) -> Keys<'a> {
    Keys {
        srcip: v.f.srcip,
        srcport: v.f.srcport,
        dstport: v.f.dstport,
        dstuser: v.f.dstuser,
        id: v.f.id,
        url: v.f.url,
        host: v.hostname,
        category: v.category as u8,
    }
}

impl Engine {
    pub fn new(set: Arc<RuleSet>, limits: Limits) -> Engine {
        let n = set.len();
        let mut state = State::new(limits, set.lists);
        state.set_max_timeframe(
            set.tree
                .rules
                .iter()
                .filter(|r| r.has_context())
                .map(|r| r.timeframe)
                .max()
                .unwrap_or(0),
        );
        Engine {
            state,
            firedtimes: vec![0; n],
            ignored_at: vec![None; n],
            last_diff: HashMap::new(),
            clock: (i64::MIN, 0, 0),
            pool: Vec::new(),
            set,
        }
    }

    /// Takes over the correlation state of `old` (the engine a reload replaces) for what still
    /// applies: remembered events and keys, the lists searched by rules whose id still exists with
    /// the same correlation settings (`if_matched_*`, frequency, timeframe, `same_*`, level), and
    /// those rules' fired counts, ignore timers and last `check_diff` logs. State of rules removed
    /// or changed is dropped.
    pub fn inherit(&mut self, old: Engine) {
        let new_set = self.set.clone();
        let old_set = &old.set;
        let counterpart = |i: usize| -> Option<usize> {
            let r = &new_set.tree.rules[i];
            let &k = old_set.tree.by_id.get(&r.id)?;
            same_correlation(r, &old_set.tree.rules[k]).then_some(k)
        };
        // Old lists by what they hold, and whether every old searcher is unchanged.
        let old_lists = list_keys(old_set);
        let mut lists: Vec<Option<ListId>> = vec![None; new_set.lists];
        let mut spoiled = vec![false; new_set.lists];
        for (i, s) in new_set.search.iter().enumerate() {
            let Some(s) = s else { continue };
            let (key, l) = list_key(&new_set.tree.rules[i], *s);
            if counterpart(i).is_none() {
                spoiled[l] = true;
            } else if let Some(&o) = old_lists.get(&key) {
                lists[l] = Some(o);
            }
        }
        for (l, bad) in spoiled.iter().enumerate() {
            if *bad {
                lists[l] = None;
            }
        }
        let Engine {
            state,
            firedtimes,
            ignored_at,
            mut last_diff,
            ..
        } = old;
        self.state.inherit(state, &lists);
        for i in 0..new_set.tree.rules.len() {
            let Some(k) = counterpart(i) else { continue };
            let (r, o) = (&new_set.tree.rules[i], &old_set.tree.rules[k]);
            self.firedtimes[i] = firedtimes[k];
            if r.ignore_time == o.ignore_time {
                self.ignored_at[i] = ignored_at[k];
            }
            if r.check_diff && o.check_diff {
                if let Some(d) = last_diff.remove(&k) {
                    self.last_diff.insert(i, d);
                }
            }
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.set
    }

    /// Correlation memory counters.
    pub fn counters(&self) -> correlate::Counters {
        self.state.counters()
    }

    fn local_clock(&mut self, secs: i64) -> (u32, u8) {
        if !self.set.uses_clock {
            return (0, 0);
        }
        if self.clock.0 != secs {
            let (d, w) = crate::sys::local_day_time(secs).unwrap_or((0, 0));
            self.clock = (secs, d, w);
        }
        (self.clock.1, self.clock.2)
    }

    /// Runs the rules on one decoded event.
    pub fn evaluate(&mut self, input: &Input) -> Option<Verdict> {
        let set = self.set.clone();
        let ev = input.event;
        let secs = ev
            .time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (day_seconds, weekday) = self.local_clock(secs as i64);
        self.evaluate_with(&set, input, secs, day_seconds, weekday)
    }

    fn evaluate_with(
        &mut self,
        set: &RuleSet,
        input: &Input,
        secs: u64,
        day_seconds: u32,
        weekday: u8,
    ) -> Option<Verdict> {
        let ev = input.event;
        let pre = input.predecoded;
        let view = View {
            log: &pre.message,
            full_log: &ev.full_log,
            location: &ev.location,
            hostname: pre.hostname.as_deref().unwrap_or(&ev.location),
            program_name: pre.program_name.as_deref(),
            decoder: input.decoded.decoder.as_deref(),
            category: input.category,
            time: secs,
            day_seconds,
            weekday,
            decoded: input.decoded,
            f: Fields::from_decoded(input.decoded),
        };
        let mut w = Walk {
            view,
            keys: None,
            fts: input.fts,
            matched: 0,
            related: Vec::new(),
            pool: std::mem::take(&mut self.pool),
        };
        let mut fired = None;
        let mut scratch = w.pool.pop().unwrap_or_default();
        scratch.reset();
        for &pos in set.top_index.candidates(input.category, w.view.decoder) {
            let pos = pos as usize;
            if set
                .top_set
                .as_ref()
                .is_some_and(|s| s.rules_out(pos, &scratch))
            {
                continue;
            }
            let n = set.tree.top[pos];
            let known = set.top_set.as_ref().map(|s| Known {
                sets: s,
                pos,
                scratch: &mut scratch,
            });
            if let Some(r) = self.check(set, n, &mut w, known) {
                fired = Some(r);
                break;
            }
        }
        w.pool.push(scratch);
        self.pool = std::mem::take(&mut w.pool);
        let idx = fired?;
        let rule = &set.tree.rules[idx];
        let mut verdict = Verdict {
            rule: idx,
            id: rule.id,
            level: rule.level,
            firedtimes: self.firedtimes[idx],
            related: std::mem::take(&mut w.related),
            alert: false,
            suppressed: None,
        };
        if rule.level == 0 {
            verdict.suppressed = Some("level 0");
            return Some(verdict);
        }
        if rule.ignore_time > 0 {
            match self.ignored_at[idx] {
                Some(t) if secs.saturating_sub(t) < rule.ignore_time => {
                    verdict.suppressed = Some("ignored: fired within its ignore time");
                    return Some(verdict);
                }
                _ => self.ignored_at[idx] = Some(secs),
            }
        }
        if rule.check_ignore_fields.any()
            && self
                .state
                .is_ignored(&key_text(&w.view, rule.check_ignore_fields))
        {
            verdict.suppressed = Some("ignored: check_if_ignored");
            return Some(verdict);
        }
        if rule.ignore_fields.any() {
            self.state
                .add_ignore(&key_text(&w.view, rule.ignore_fields));
        }
        let feeds = &set.feeds[idx];
        let empty = Keys::default();
        if !feeds.is_empty() {
            w.keys();
        }
        let keys = match &w.keys {
            Some(k) if !feeds.is_empty() => k,
            _ => &empty,
        };
        let log = if feeds.is_empty() {
            ""
        } else {
            w.view.full_log
        };
        // Every alert takes a place in correlation memory, as in OSSEC, so records age out after
        // the same number of alerts.
        self.state.remember(feeds, keys, log, secs, w.matched);
        verdict.alert = true;
        Some(verdict)
    }

    fn check(
        &mut self,
        set: &RuleSet,
        node: NodeIdx,
        w: &mut Walk,
        known: Option<Known>,
    ) -> Option<RuleIdx> {
        let n = &set.tree.nodes[node];
        let idx = n.rule;
        let r = &set.tree.rules[idx];
        if !r.cond.check(&w.view, known) {
            return None;
        }
        if r.check_diff && !self.diff(idx, w.view.log) {
            return None;
        }
        if r.if_fts && !self.first_time(&w.view, w.fts) {
            return None;
        }
        if let Some(s) = set.search[idx] {
            let search = Search {
                level: r.level,
                frequency: r.frequency,
                timeframe: r.timeframe,
                same: r.same,
            };
            let now = w.view.time;
            // The keys are borrowed, not cloned: a search runs for most events of a busy
            // decoder, and cloning them allocated once per key field.
            let found = match s {
                SearchIn::Sid(l) | SearchIn::Group(l) => {
                    self.state.search(l, w.keys(), now, &search, None)
                }
                SearchIn::Events(l) => {
                    let keys = w.keys();
                    let category = keys.category;
                    let re = r.if_matched_regex.as_ref();
                    let filter = |log: &str, cat: u8| {
                        cat == category && re.map_or(true, |p| p.is_match(log))
                    };
                    self.state.search(l, keys, now, &search, Some(&filter))
                }
            }?;
            w.matched = r.level;
            w.related = found.related;
        }
        if !n.children.is_empty() {
            let mut scratch = w.pool.pop().unwrap_or_default();
            scratch.reset();
            let sibs = set.child_sets[node].as_ref();
            let mut found = None;
            for (pos, &c) in n.children.iter().enumerate() {
                if sibs.is_some_and(|s| s.rules_out(pos, &scratch)) {
                    continue;
                }
                let known = sibs.map(|s| Known {
                    sets: s,
                    pos,
                    scratch: &mut scratch,
                });
                if let Some(x) = self.check(set, c, w, known) {
                    found = Some(x);
                    break;
                }
            }
            w.pool.push(scratch);
            if found.is_some() {
                return found;
            }
        }
        if r.noalert {
            return None;
        }
        self.firedtimes[idx] += 1;
        Some(idx)
    }

    /// `check_diff`: fires when the log differs from the last one this rule saw.
    fn diff(&mut self, idx: RuleIdx, log: &str) -> bool {
        match self.last_diff.get(&idx) {
            Some(prev) if &**prev == log => false,
            Some(_) => {
                self.last_diff.insert(idx, log.into());
                true
            }
            None => {
                self.last_diff.insert(idx, log.into());
                false
            }
        }
    }

    /// `if_fts`: the decoder must declare `<fts>` fields; fires the first time their values are seen.
    fn first_time(&mut self, v: &View, fts: Fts) -> bool {
        if !fts.any() {
            return false;
        }
        let f = &v.f;
        let key = [
            pick(fts.fields.name, v.decoder),
            pick(fts.fields.id, f.id),
            pick(fts.fields.user, f.dstuser),
            pick(fts.srcuser, f.srcuser),
            pick(fts.fields.srcip, f.srcip),
            pick(fts.fields.dstip, f.dstip),
            pick(fts.fields.data, f.extra_data),
            pick(fts.system_name, f.system_name),
            pick(fts.fields.location, Some(v.location)),
        ]
        .join(" ");
        self.state.first_time(&key)
    }

    /// The rule as an alert carries it: description expanded with the event's fields, groups,
    /// options, the firing count.
    pub fn rule_info(&self, v: &Verdict, input: &Input) -> RuleInfo {
        let r = &self.set.tree.rules[v.rule];
        let pre = input.predecoded;
        let view = View {
            log: &pre.message,
            full_log: &input.event.full_log,
            location: &input.event.location,
            hostname: pre.hostname.as_deref().unwrap_or(&input.event.location),
            program_name: pre.program_name.as_deref(),
            decoder: input.decoded.decoder.as_deref(),
            category: input.category,
            time: 0,
            day_seconds: 0,
            weekday: 0,
            decoded: input.decoded,
            f: Fields::from_decoded(input.decoded),
        };
        RuleInfo {
            id: r.id,
            level: r.level,
            description: expand(&r.description, &view, pre),
            groups: r.groups.clone(),
            mitre: r.mitre.clone(),
            firedtimes: v.firedtimes,
            options: r.options,
            info: r.info.clone(),
        }
    }

    /// The alert for a verdict that raises one.
    pub fn alert(&self, verdict: &Verdict, input: &Input) -> Alert {
        Alert {
            time: SystemTime::now(),
            rule: self.rule_info(verdict, input),
            event: input.event.clone(),
            predecoded: input.predecoded.clone(),
            decoded: input.decoded.clone(),
            related: verdict.related.clone(),
        }
    }
}

fn key_text(v: &View, k: KeyFields) -> String {
    let f = &v.f;
    [
        pick(k.name, v.decoder),
        pick(k.id, f.id),
        pick(k.user, f.dstuser),
        pick(k.srcip, f.srcip),
        pick(k.dstip, f.dstip),
        pick(k.data, f.extra_data),
        pick(k.location, Some(v.location)),
    ]
    .join(" ")
}

/// Expands `$(name)` in a description with the event's fields: OSSEC's static fields, then dynamic
/// and JSON fields, then the pre-decoded header (`hostname`, `program_name`, `location`). A name
/// with no value expands to nothing.
pub fn expand(text: &Arc<str>, v: &View, pre: &Predecoded) -> Arc<str> {
    if !text.contains("$(") {
        return text.clone();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = text;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) => {
                let name = &after[..j];
                let value =
                    v.f.get(name)
                        .or_else(|| v.decoded.get(name))
                        .or(match name {
                            "hostname" => pre.hostname.as_deref(),
                            "program_name" => pre.program_name.as_deref(),
                            "location" => Some(v.location),
                            "decoder" => v.decoder,
                            _ => None,
                        });
                out.push_str(value.unwrap_or(""));
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.into()
}

/// The canonical path of the stock OSSEC ruleset next to the repository (tests and benchmarks).
pub fn ossec_ruleset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/ossec-ruleset")
}

fn pick(on: bool, s: Option<&str>) -> &str {
    if on {
        s.unwrap_or("")
    } else {
        ""
    }
}

#[cfg(test)]
mod tests;
