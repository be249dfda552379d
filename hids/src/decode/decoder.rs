//! OSSEC decoder files compiled into a decoder tree, and decoding (OSSEC's phase 2).
//!
//! Loading follows OSSEC's `ReadDecodeXML` and its decoder lists: decoders are read in file order;
//! a decoder with `<program_name>` goes to the list used for lines that have a program name, one
//! without to the list for lines that have none (this is why OSSEC's own `pam` decoder says
//! `<program_name_pcre2>.*</program_name_pcre2>`); a child joins every earlier root of its parent's
//! name; children with the same name chain their regexes (OSSEC's "get_next"); a child reports its
//! parent's name unless `use_own_name`.
//!
//! Decoding follows OSSEC's `DecodeEvent`: the first root whose `program_name` and `prematch` match
//! wins and only its children are tried, in order; a child without prematch ends the search; the
//! regex then runs from the offset asked for (`after_parent`, `after_prematch`, `after_regex`) and
//! its groups fill the `order` fields.
//!
//! Speed: lines with a program name look up the roots whose `program_name` matches in a small
//! cache keyed by the program name; lines without one run a single anchored multi-pattern search
//! over the start-anchored root prematches (the lowest pattern that matches is the first such
//! root in file order), and only the few unanchored roots before it are tried one by one. Capture
//! groups are extracted only for the decoder that matched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::Diagnostic;
use crate::event::{Decoded, Predecoded};
use crate::pattern::{Captures, Dialect, Pattern};
use crate::xml::{Document, Element};

use super::json;

/// Where a regex (or a child's prematch) starts looking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// At the start of the message.
    Start,
    /// After the root decoder's prematch (or the start of the message when it has none).
    AfterParent,
    /// After this decoder's own prematch.
    AfterPrematch,
    /// After the previous regex of a chain of same-named decoders.
    AfterRegex,
}

/// OSSEC's decoder `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecoderType {
    Syslog,
    Firewall,
    Ids,
    WebLog,
    Squid,
    Windows,
    HostInformation,
    Ossec,
}

impl DecoderType {
    /// The names OSSEC accepts in `<type>`, in the order of the variants.
    pub const NAMES: [&'static str; 8] = [
        "syslog",
        "firewall",
        "ids",
        "web-log",
        "squid",
        "windows",
        "host-information",
        "ossec",
    ];

    /// The type named `s`, if OSSEC knows it.
    pub fn parse(s: &str) -> Option<DecoderType> {
        Some(match s {
            "syslog" => DecoderType::Syslog,
            "firewall" => DecoderType::Firewall,
            "ids" => DecoderType::Ids,
            "web-log" => DecoderType::WebLog,
            "squid" => DecoderType::Squid,
            "windows" => DecoderType::Windows,
            "host-information" => DecoderType::HostInformation,
            "ossec" => DecoderType::Ossec,
            _ => return None,
        })
    }

    /// The name as written in `<type>`.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// The plugin decoders OSSEC implements in C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// JSON objects to fields (implemented).
    Json,
    /// OSSEC's SonicWall decoder (implemented).
    SonicWall,
    /// OSSEC's Symantec Web Security decoder (implemented).
    SymantecWs,
    /// OSSEC's PF and OSSECAlert decoders: not implemented; the decoder still matches (its name
    /// is reported) but extracts no fields.
    Unsupported(&'static str),
}

/// One compiled decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// The name as written in the file.
    pub name: Arc<str>,
    /// The name OSSEC reports: the parent's, unless `use_own_name`.
    pub reported_name: Arc<str>,
    /// The `<parent>` decoder's name.
    pub parent: Option<Arc<str>>,
    /// Matched against the pre-decoded program name.
    pub program_name: Option<Pattern>,
    /// Matched against the message; its end is where `after_prematch` starts.
    pub prematch: Option<Pattern>,
    /// The prematch of a child runs after the parent's prematch.
    pub prematch_after_parent: bool,
    /// Its groups fill `order`.
    pub regex: Option<Pattern>,
    /// Where `regex` starts looking.
    pub regex_offset: Offset,
    /// Field names in capture order (OSSEC names: `dstuser` for `user`, `extra_data` for `data`).
    pub order: Vec<Arc<str>>,
    /// The `<fts>` fields (first time seen), for the rules.
    pub fts: Vec<String>,
    /// `<ftscomment>`, recorded.
    pub ftscomment: Option<String>,
    /// `<use_own_name>true</use_own_name>`.
    pub use_own_name: bool,
    /// `<type>` (syslog by default).
    pub decoder_type: DecoderType,
    /// `<plugin_decoder>`.
    pub plugin: Option<Plugin>,
    /// `<accumulate>` is recorded; OSSEC's accumulator is not implemented.
    pub accumulate: bool,
    /// The file the decoder came from.
    /// The following sibling of the same name continues this decoder's regex (OSSEC's get_next).
    pub get_next: bool,
    pub file: PathBuf,
    /// Byte offset of `<decoder` in the file.
    pub pos: usize,
}

#[derive(Debug, Clone)]
struct Root {
    decoder: usize,
    children: Vec<usize>,
    /// One anchored multi-pattern search over the start-anchored prematches of the children
    /// (those that look at the start of the message), built for roots with many children.
    child_index: Option<ChildIndex>,
}

#[derive(Debug, Clone)]
struct ChildIndex {
    re: regex_automata::meta::Regex,
    /// For each pattern, the position of its child in `children`.
    position: Vec<usize>,
    /// Whether the child at each position is in the index.
    indexed: Vec<bool>,
}

/// Builds a leftmost-first multi-pattern regex with the same syntax settings as [`Pattern`].
fn multi_regex(patterns: &[String]) -> Option<regex_automata::meta::Regex> {
    regex_automata::meta::Regex::builder()
        .syntax(crate::pattern::byte_syntax())
        .configure(
            regex_automata::meta::Config::new()
                .utf8_empty(false)
                .nfa_size_limit(Some(64 << 20))
                .hybrid_cache_capacity(16 << 20),
        )
        .build_many(patterns)
        .ok()
}

/// Unanchored roots tried one by one rather than first asking the multi-pattern search whether
/// any could match: each has its own prefilter, the multi-pattern search reads the whole line.
const FEW_ROOTS: usize = 2;

/// Children indexed only when there are at least this many candidates.
const CHILD_INDEX_MIN: usize = 4;

/// A loaded set of decoders, ready to decode.
#[derive(Debug, Clone)]
pub struct DecoderSet {
    decoders: Vec<Decoder>,
    with_pname: Vec<Root>,
    without_pname: Vec<Root>,
    /// One anchored multi-pattern search over the start-anchored prematches of the roots of
    /// `without_pname`: the first (lowest) pattern that matches is the first such root in order.
    nopname_anchored: Option<regex_automata::meta::Regex>,
    /// For each pattern of `nopname_anchored`, the index into `without_pname`.
    nopname_anchored_roots: Vec<usize>,
    /// Roots of `without_pname` that the anchored search does not cover (tried one by one).
    nopname_always: Vec<usize>,
    /// One search telling whether any of `nopname_always` could match at all (present when they
    /// are all linear), so that lines none of them match skip them in one pass.
    nopname_always_any: Option<regex_automata::meta::Regex>,
    /// Notes for `check-config`: non-linear patterns, unsupported plugins.
    pub warnings: Vec<Diagnostic>,
}

/// Per-thread state that speeds decoding up; keep one per decoding thread.
#[derive(Debug, Default)]
pub struct DecodeCache {
    pname_roots: crate::hash::Map<Box<str>, Arc<[u32]>>,
    /// The last regex match, whose group list each match reuses.
    captures: Captures,
    /// Counters for the benchmark and metrics.
    pub stats: DecodeStats,
}

/// How lines were decoded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    pub lines: u64,
    /// Lines whose root was found through the index alone (a program-name cache hit, or the
    /// anchored multi-pattern pass with no unanchored root to try before it).
    pub indexed: u64,
    /// Lines a decoder matched.
    pub decoded: u64,
    /// Root patterns evaluated one by one (cache misses, non-linear prematches).
    pub root_patterns_tried: u64,
}

/// Program names remembered per cache before it is cleared (bounds memory under hostile input).
const PNAME_CACHE_MAX: usize = 4096;

/// Static fields and the name OSSEC gives them.
fn static_field(name: &str) -> Option<&'static str> {
    Some(match name {
        "user" | "dstuser" => "dstuser",
        "srcuser" => "srcuser",
        "srcip" => "srcip",
        "dstip" => "dstip",
        "srcport" => "srcport",
        "dstport" => "dstport",
        "protocol" => "protocol",
        "action" => "action",
        "id" => "id",
        "url" => "url",
        "data" | "extra_data" => "extra_data",
        "status" => "status",
        "system_name" => "system_name",
        "filename" => "filename",
        _ => return None,
    })
}

const FTS_FIELDS: [&str; 11] = [
    "dstuser",
    "user",
    "srcuser",
    "srcip",
    "dstip",
    "id",
    "location",
    "data",
    "extra_data",
    "system_name",
    "name",
];

impl DecoderSet {
    /// Loads decoder files and directories in the order given. All errors are returned at once.
    pub fn load(paths: &[PathBuf]) -> Result<DecoderSet, Vec<Diagnostic>> {
        let files = crate::xml::expand_paths(paths)?;
        let mut errors = Vec::new();
        let mut docs = Vec::new();
        for f in &files {
            match Document::load(f) {
                Ok(d) => docs.push(d),
                Err(e) => errors.extend(e),
            }
        }
        let set = DecoderSet::from_documents(&docs, &mut errors);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Loads decoder text (for tests and `logtest` snippets).
    pub fn parse(path: &Path, text: &str) -> Result<DecoderSet, Vec<Diagnostic>> {
        let doc = Document::parse(path, text.to_string())?;
        let mut errors = Vec::new();
        let set = DecoderSet::from_documents(std::slice::from_ref(&doc), &mut errors);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Builds the set from parsed documents, in order, adding every problem to `errors`.
    pub fn from_documents(docs: &[Document], errors: &mut Vec<Diagnostic>) -> DecoderSet {
        let mut b = Builder::default();
        for doc in docs {
            for el in &doc.roots {
                if !el.name.eq_ignore_ascii_case("decoder") {
                    errors.push(doc.diag(
                        el.pos,
                        format!(
                            "<{}> is not a decoder (expected <decoder name=\"...\">)",
                            el.name
                        ),
                    ));
                    continue;
                }
                match compile_decoder(doc, el, &mut b.warnings) {
                    Ok(d) => {
                        if let Err(m) = b.add(d) {
                            errors.push(doc.diag(el.pos, m));
                        }
                    }
                    Err(mut e) => errors.append(&mut e),
                }
            }
        }
        b.finish()
    }

    /// Every decoder, in load order.
    pub fn decoders(&self) -> &[Decoder] {
        &self.decoders
    }

    /// The names alerts report for these decoders: what a rule's `decoded_as` is checked against.
    pub fn reported_names(&self) -> std::collections::HashSet<String> {
        self.decoders
            .iter()
            .map(|d| d.reported_name.to_string())
            .collect()
    }

    /// Whether a decoder (or a child reporting under that name) exists with this reported name.
    pub fn has_name(&self, name: &str) -> bool {
        self.decoders.iter().any(|d| &*d.reported_name == name)
    }

    /// Decodes one pre-decoded line (OSSEC's phase 2).
    pub fn decode(&self, pre: &Predecoded, cache: &mut DecodeCache) -> Decoded {
        self.decode_full(pre, cache).0
    }

    /// Decodes and also returns the index of the decoder that matched (for its type and fts).
    pub fn decode_full(
        &self,
        pre: &Predecoded,
        cache: &mut DecodeCache,
    ) -> (Decoded, Option<usize>) {
        cache.stats.lines += 1;
        let mut decoded = Decoded::default();
        let Some((root_idx, pmatch)) = self.select_root(pre, cache) else {
            return (decoded, None);
        };
        let root = match &pre.program_name {
            Some(_) => &self.with_pname[root_idx],
            None => &self.without_pname[root_idx],
        };
        cache.stats.decoded += 1;
        let mut type_override = None;
        let info = self.run_tree(
            root,
            &pre.message,
            pmatch,
            &mut decoded.fields,
            &mut type_override,
            &mut cache.captures,
        );
        let d = &self.decoders[info];
        decoded.decoder = Some(d.reported_name.clone());
        if info != root.decoder {
            decoded.parent = Some(self.decoders[root.decoder].name.clone());
        }
        decoded.decoder_type = Some(type_override.unwrap_or(d.decoder_type.as_str()));
        (decoded, Some(info))
    }

    /// The first root that matches, with OSSEC's "pmatch" (the offset after its prematch; `None`
    /// when it has neither program name nor prematch checks that set it).
    fn select_root(
        &self,
        pre: &Predecoded,
        cache: &mut DecodeCache,
    ) -> Option<(usize, Option<usize>)> {
        let log = pre.message.as_bytes();
        if let Some(pname) = &pre.program_name {
            let candidates = match cache.pname_roots.get(pname.as_str()) {
                Some(c) => {
                    cache.stats.indexed += 1;
                    c.clone()
                }
                None => {
                    let c: Arc<[u32]> = self
                        .with_pname
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| {
                            self.decoders[r.decoder]
                                .program_name
                                .as_ref()
                                .is_none_or_match(pname)
                        })
                        .map(|(i, _)| i as u32)
                        .collect();
                    cache.stats.root_patterns_tried += self.with_pname.len() as u64;
                    if cache.pname_roots.len() >= PNAME_CACHE_MAX {
                        cache.pname_roots.clear();
                    }
                    cache.pname_roots.insert(pname.as_str().into(), c.clone());
                    c
                }
            };
            for &i in candidates.iter() {
                let d = &self.decoders[self.with_pname[i as usize].decoder];
                match &d.prematch {
                    Some(p) => {
                        if let Some(end) = p.find_end_bytes(log) {
                            return Some((i as usize, Some(end)));
                        }
                    }
                    None => return Some((i as usize, Some(0))),
                }
            }
            return None;
        }
        // No program name: one anchored pass finds the first start-anchored root that matches;
        // only the other roots before it are tried one by one.
        let anchored = self.nopname_anchored.as_ref().and_then(|re| {
            let input = regex_automata::Input::new(log).anchored(regex_automata::Anchored::Yes);
            re.find(input)
                .map(|m| (self.nopname_anchored_roots[m.pattern().as_usize()], m.end()))
        });
        let limit = anchored.map_or(usize::MAX, |(i, _)| i);
        let mut tried = 0u64;
        // The roots to try come before the anchored one. When they are few, trying them costs
        // less than the pass over the line that tells whether any of them could match.
        let before = self.nopname_always.partition_point(|&i| i < limit);
        let skip_all = before > FEW_ROOTS
            && self
                .nopname_always_any
                .as_ref()
                .is_some_and(|re| !re.is_match(log));
        let always: &[usize] = if skip_all { &[] } else { &self.nopname_always };
        for &i in always.iter().take_while(|&&i| i < limit) {
            tried += 1;
            let d = &self.decoders[self.without_pname[i].decoder];
            let found = match &d.prematch {
                Some(p) => p.find_end_bytes(log).map(|end| (i, Some(end))),
                None => Some((i, None)),
            };
            if found.is_some() {
                cache.stats.root_patterns_tried += tried;
                return found;
            }
        }
        cache.stats.root_patterns_tried += tried;
        if tried == 0 {
            cache.stats.indexed += 1;
        }
        anchored.map(|(i, end)| (i, Some(end)))
    }

    /// Runs the children of `root` and the regexes; returns the decoder OSSEC reports.
    fn run_tree(
        &self,
        root: &Root,
        message: &str,
        pmatch: Option<usize>,
        fields: &mut Vec<crate::event::DecodedField>,
        type_override: &mut Option<&'static str>,
        c: &mut Captures,
    ) -> usize {
        let log = message.as_bytes();
        let mut info = root.decoder;
        // The node whose regex runs: a position in `chain`.
        let chain: &[usize] = if root.children.is_empty() {
            std::slice::from_ref(&root.decoder)
        } else {
            &root.children
        };
        let mut cmatch: Option<usize> = None;
        let mut pos: Option<usize> = None;
        if root.children.is_empty() {
            pos = Some(0);
        } else {
            // The first indexed child whose prematch matches, and where that match ends: indexed
            // children before it do not match; after it, they are tried one by one.
            let first_indexed = root.child_index.as_ref().map(|ix| {
                let input = regex_automata::Input::new(log).anchored(regex_automata::Anchored::Yes);
                ix.re
                    .find(input)
                    .map(|m| (ix.position[m.pattern().as_usize()], m.end()))
            });
            let mut i = 0;
            while i < chain.len() {
                let c = &self.decoders[chain[i]];
                if let Some(pm) = &c.prematch {
                    let base = if c.prematch_after_parent {
                        pmatch
                    } else {
                        Some(0)
                    };
                    let known = match (&root.child_index, first_indexed) {
                        (Some(ix), Some(found)) if ix.indexed[i] => match found {
                            Some((k, end)) if k == i => Some(Some(end)),
                            Some((k, _)) if i > k => None,
                            _ => Some(None),
                        },
                        _ => None,
                    };
                    if let Some(base) = base {
                        let end = match known {
                            Some(e) => e,
                            None => pm.find_end_bytes(&log[base.min(log.len())..]),
                        };
                        if let Some(end) = end {
                            cmatch = Some(base + end);
                            info = chain[i];
                            pos = Some(i);
                            break;
                        }
                    }
                } else {
                    cmatch = pmatch;
                    pos = Some(i);
                    break;
                }
                if c.get_next {
                    // Skip the rest of this chain of same-named regex-only decoders.
                    loop {
                        i += 1;
                        if i >= chain.len() || !self.decoders[chain[i]].get_next {
                            break;
                        }
                    }
                    if i >= chain.len() {
                        return info;
                    }
                    i += 1;
                } else {
                    i += 1;
                }
            }
        }
        let Some(mut j) = pos else { return info };
        let mut node = &self.decoders[chain[j]];
        if let Some(plugin) = node.plugin {
            match plugin {
                Plugin::Json => {
                    json::decode_json(&String::from_utf8_lossy(log), fields);
                }
                // OSSEC's SonicWall decoder sets the event's type from the message id.
                Plugin::SonicWall => *type_override = Some(super::plugins::sonicwall(log, fields)),
                Plugin::SymantecWs => super::plugins::symantec_ws(log, fields),
                Plugin::Unsupported(_) => {}
            }
            return info;
        }
        let mut regex_prev: Option<usize> = None;
        loop {
            let Some(re) = &node.regex else { return info };
            let start = match node.regex_offset {
                Offset::Start => Some(0),
                Offset::AfterParent => pmatch,
                Offset::AfterPrematch => cmatch,
                Offset::AfterRegex => regex_prev.or(cmatch),
            };
            let caps = start.and_then(|s| {
                let s = s.min(log.len());
                re.captures_bytes_into(&log[s..], c).then_some(s)
            });
            match caps {
                None => {
                    if node.get_next && j + 1 < chain.len() {
                        j += 1;
                        node = &self.decoders[chain[j]];
                        continue;
                    }
                    return info;
                }
                Some(s) => {
                    info = chain[j];
                    regex_prev = Some(s + c.end);
                    fields.reserve(node.order.len());
                    for (k, name) in node.order.iter().enumerate() {
                        if let Some(v) = c.text_at(message, s, k) {
                            json::set_shared(fields, name, v);
                        }
                    }
                    if node.get_next && j + 1 < chain.len() {
                        j += 1;
                        node = &self.decoders[chain[j]];
                        continue;
                    }
                    return info;
                }
            }
        }
    }
}

trait MatchOpt {
    fn is_none_or_match(&self, text: &str) -> bool;
}

impl MatchOpt for Option<&Pattern> {
    fn is_none_or_match(&self, text: &str) -> bool {
        self.map_or(true, |p| p.is_match(text))
    }
}

#[derive(Default)]
struct Builder {
    decoders: Vec<Decoder>,
    with_pname: Vec<Root>,
    without_pname: Vec<Root>,
    warnings: Vec<Diagnostic>,
}

impl Builder {
    /// OSSEC's OS_AddOSDecoder.
    fn add(&mut self, d: Decoder) -> Result<(), String> {
        let idx = self.decoders.len();
        if let Some(parent) = d.parent.clone() {
            let mut added = false;
            let mut problem = None;
            // Check and link against every root of that name in both lists.
            let decoders = &mut self.decoders;
            for root in self
                .with_pname
                .iter_mut()
                .chain(self.without_pname.iter_mut())
            {
                if *decoders[root.decoder].name != *parent {
                    continue;
                }
                if let Err(m) = link_child(decoders, &mut root.children, &d, idx) {
                    problem = Some(m);
                    break;
                }
                added = true;
            }
            if let Some(m) = problem {
                return Err(m);
            }
            if !added {
                return Err(format!(
                    "parent decoder '{parent}' is not defined before decoder '{}'",
                    d.name
                ));
            }
        } else {
            if d.regex_offset == Offset::AfterRegex {
                return Err(format!(
                    "decoder '{}': offset=\"after_regex\" needs an earlier decoder of the same name",
                    d.name
                ));
            }
            let root = Root {
                decoder: idx,
                children: Vec::new(),
                child_index: None,
            };
            if d.program_name.is_some() {
                self.with_pname.push(root);
            } else {
                self.without_pname.push(root);
            }
        }
        self.decoders.push(d);
        Ok(())
    }

    fn finish(mut self) -> DecoderSet {
        for roots in [&mut self.with_pname, &mut self.without_pname] {
            for r in roots.iter_mut() {
                let mut pats = Vec::new();
                let mut position = Vec::new();
                let mut indexed = vec![false; r.children.len()];
                for (i, &c) in r.children.iter().enumerate() {
                    let d = &self.decoders[c];
                    if let Some(p) = &d.prematch {
                        if !d.prematch_after_parent && p.is_start_anchored() {
                            pats.push(p.translated().to_string());
                            position.push(i);
                            indexed[i] = true;
                        }
                    }
                }
                if pats.len() >= CHILD_INDEX_MIN {
                    r.child_index = multi_regex(&pats).map(|re| ChildIndex {
                        re,
                        position,
                        indexed,
                    });
                }
            }
        }
        // Reported names: a child reports its root's name unless use_own_name.
        for roots in [&self.with_pname, &self.without_pname] {
            for r in roots {
                let root_name = self.decoders[r.decoder].name.clone();
                for &c in &r.children {
                    let d = &mut self.decoders[c];
                    d.reported_name = if d.use_own_name {
                        d.name.clone()
                    } else {
                        root_name.clone()
                    };
                }
            }
        }
        let mut pats = Vec::new();
        let mut pat_roots = Vec::new();
        let mut always = Vec::new();
        for (i, r) in self.without_pname.iter().enumerate() {
            match &self.decoders[r.decoder].prematch {
                Some(p) if p.is_start_anchored() => {
                    pats.push(p.translated().to_string());
                    pat_roots.push(i);
                }
                _ => always.push(i),
            }
        }
        let anchored = if pats.is_empty() {
            None
        } else {
            multi_regex(&pats)
        };
        if anchored.is_none() {
            always = (0..self.without_pname.len()).collect();
            pat_roots.clear();
        }
        let always_pats: Option<Vec<String>> = always
            .iter()
            .map(
                |&i| match &self.decoders[self.without_pname[i].decoder].prematch {
                    Some(p) if p.is_linear() && !p.is_negated() => Some(p.translated().to_string()),
                    _ => None,
                },
            )
            .collect();
        let always_any = always_pats
            .filter(|p| !p.is_empty())
            .and_then(|p| multi_regex(&p));
        DecoderSet {
            decoders: self.decoders,
            with_pname: self.with_pname,
            without_pname: self.without_pname,
            nopname_anchored: anchored,
            nopname_anchored_roots: pat_roots,
            nopname_always: always,
            nopname_always_any: always_any,
            warnings: self.warnings,
        }
    }
}

/// OSSEC's _OS_AddOSDecoder for a child: same-named siblings chain their regexes.
fn link_child(
    decoders: &mut [Decoder],
    children: &mut Vec<usize>,
    d: &Decoder,
    idx: usize,
) -> Result<(), String> {
    let mut rm_f = false;
    for &c in children.iter() {
        let sib = &decoders[c];
        if sib.name != d.name {
            continue;
        }
        if (sib.prematch.is_some() || sib.regex.is_some()) && d.regex_offset != Offset::Start {
            rm_f = true;
        }
        if d.prematch.is_some() {
            return Err(format!(
                "decoder '{}' repeats an earlier decoder of the same parent and name, so it continues its regex and cannot have a prematch",
                d.name
            ));
        }
        if !d.fts.is_empty() {
            return Err(format!(
                "decoder '{}' continues an earlier decoder of the same name and cannot have fts",
                d.name
            ));
        }
        if sib.regex.is_none() || d.regex.is_none() {
            return Err(format!(
                "decoder '{}' is defined twice under the same parent without a regex in both",
                d.name
            ));
        }
    }
    for &c in children.iter() {
        if decoders[c].name == d.name {
            decoders[c].get_next = true;
        }
    }
    if !rm_f && d.regex_offset == Offset::AfterRegex {
        return Err(format!(
            "decoder '{}': offset=\"after_regex\" needs an earlier decoder of the same name with a regex",
            d.name
        ));
    }
    children.push(idx);
    Ok(())
}

fn parse_offset(doc: &Document, el: &Element, errors: &mut Vec<Diagnostic>) -> Option<Offset> {
    let mut off = None;
    for a in &el.attrs {
        if a.name.eq_ignore_ascii_case("offset") {
            off = Some(match a.value.as_str() {
                "after_parent" => Offset::AfterParent,
                "after_prematch" => Offset::AfterPrematch,
                "after_regex" => Offset::AfterRegex,
                other => {
                    errors.push(doc.diag(
                        a.pos,
                        format!("invalid offset '{other}' (after_parent, after_prematch or after_regex)"),
                    ));
                    return None;
                }
            });
        } else if a.name.eq_ignore_ascii_case("type") {
            if a.value != "pcre2" && a.value != "osregex" && a.value != "osmatch" {
                errors.push(doc.diag(
                    a.pos,
                    format!("invalid type '{}' (pcre2, osregex or osmatch)", a.value),
                ));
            }
        } else {
            errors.push(doc.diag(
                a.pos,
                format!("invalid attribute '{}' on <{}>", a.name, el.name),
            ));
        }
    }
    off
}

/// A pattern element: its text (joined across repeats), dialect and position.
struct PatternText {
    text: String,
    dialect: Dialect,
    el_pos: usize,
    text_pos: Option<usize>,
}

fn compile_pattern(
    doc: &Document,
    name: &str,
    what: &str,
    pt: &PatternText,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Option<Pattern> {
    match Pattern::new(pt.dialect, &pt.text) {
        Ok(p) => {
            if !p.is_linear() {
                warnings.push(doc.diag(
                    pt.text_pos.unwrap_or(pt.el_pos),
                    format!(
                        "decoder '{name}': {what} '{}' needs backtracking (non-linear, limited to {} steps per line)",
                        pt.text,
                        crate::pattern::BACKTRACK_LIMIT
                    ),
                ));
            }
            Some(p)
        }
        Err(e) => {
            let at = match (e.offset, pt.text_pos) {
                (Some(o), Some(tp)) => tp + o,
                (_, Some(tp)) => tp,
                _ => pt.el_pos,
            };
            errors.push(doc.diag(at, format!("decoder '{name}': bad {what}: {e}")));
            None
        }
    }
}

fn compile_decoder(
    doc: &Document,
    el: &Element,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Decoder, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let name = match el.attr("name") {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => {
            return Err(vec![doc.diag(el.pos, "<decoder> needs a name attribute")]);
        }
    };
    for a in &el.attrs {
        if !a.name.eq_ignore_ascii_case("name") && !a.name.eq_ignore_ascii_case("status") {
            errors.push(doc.diag(
                a.pos,
                format!("invalid attribute '{}' on <decoder>", a.name),
            ));
        }
    }
    let mut parent: Option<String> = None;
    let mut program_name: Option<PatternText> = None;
    let mut prematch: Option<PatternText> = None;
    let mut prematch_offset: Option<Offset> = None;
    let mut regex: Option<PatternText> = None;
    let mut regex_offset: Option<Offset> = None;
    let mut order: Option<(String, usize)> = None;
    let mut fts: Vec<String> = Vec::new();
    let mut ftscomment = None;
    let mut use_own_name = false;
    let mut decoder_type = DecoderType::Syslog;
    let mut plugin = None;
    let mut accumulate = false;

    // Appends to a pattern text as OSSEC's _loadmemory does; mixing dialects is refused.
    let append = |slot: &mut Option<PatternText>,
                  c: &Element,
                  dialect: Dialect,
                  errors: &mut Vec<Diagnostic>| {
        match slot {
            None => {
                *slot = Some(PatternText {
                    text: c.text.clone(),
                    dialect,
                    el_pos: c.pos,
                    text_pos: (!c.text_substituted).then_some(c.text_pos),
                })
            }
            Some(p) if p.dialect == dialect => {
                p.text.push_str(&c.text);
                p.text_pos = None;
            }
            Some(p) => errors.push(doc.diag(
                c.pos,
                format!(
                    "<{}> mixes {} with an earlier {} pattern",
                    c.name,
                    dialect.as_str(),
                    p.dialect.as_str()
                ),
            )),
        }
    };
    let dialect_of = |c: &Element, default: Dialect| -> Dialect {
        match c.attr("type") {
            Some("pcre2") => Dialect::Pcre2,
            Some("osregex") => Dialect::OsRegex,
            Some("osmatch") => Dialect::OsMatch,
            _ => default,
        }
    };

    for c in &el.children {
        let n = c.name.to_ascii_lowercase();
        match n.as_str() {
            "parent" => {
                parent = Some(match parent.take() {
                    Some(mut p) => {
                        p.push_str(&c.text);
                        p
                    }
                    None => c.text.clone(),
                })
            }
            "program_name" | "program_name_pcre2" => {
                let d = if n.ends_with("_pcre2") {
                    Dialect::Pcre2
                } else {
                    dialect_of(c, Dialect::OsMatch)
                };
                let _ = parse_offset(doc, c, &mut errors);
                append(&mut program_name, c, d, &mut errors);
            }
            "prematch" | "prematch_pcre2" => {
                let d = if n.ends_with("_pcre2") {
                    Dialect::Pcre2
                } else {
                    dialect_of(c, Dialect::OsRegex)
                };
                let off = parse_offset(doc, c, &mut errors);
                if off.is_some() && prematch.is_some() {
                    errors.push(doc.diag(c.pos, "only the first <prematch> may have an offset"));
                }
                if prematch.is_none() {
                    prematch_offset = off;
                }
                append(&mut prematch, c, d, &mut errors);
            }
            "regex" | "pcre2" => {
                let d = if n == "pcre2" {
                    Dialect::Pcre2
                } else {
                    dialect_of(c, Dialect::OsRegex)
                };
                let off = parse_offset(doc, c, &mut errors);
                if off.is_some() && regex.is_some() {
                    errors.push(doc.diag(c.pos, "only the first <regex> may have an offset"));
                }
                if regex.is_none() {
                    regex_offset = off;
                }
                append(&mut regex, c, d, &mut errors);
            }
            "order" => order = Some((c.text.clone(), c.pos)),
            "fts" => {
                for f in c.text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    fts.push(f.to_string());
                }
            }
            "ftscomment" => ftscomment = Some(c.text.clone()),
            "use_own_name" => use_own_name = c.text.trim() == "true",
            "type" => match DecoderType::parse(c.text.trim()) {
                Some(t) => decoder_type = t,
                None => errors.push(doc.diag(
                    c.text_pos,
                    format!(
                        "invalid decoder type '{}' (one of {})",
                        c.text.trim(),
                        DecoderType::NAMES.join(", ")
                    ),
                )),
            },
            "plugin_decoder" => {
                plugin = Some(match c.text.trim() {
                    "JSON_Decoder" => Plugin::Json,
                    "PF_Decoder" => Plugin::Unsupported("PF_Decoder"),
                    "SonicWall_Decoder" => Plugin::SonicWall,
                    "SymantecWS_Decoder" => Plugin::SymantecWs,
                    "OSSECAlert_Decoder" => Plugin::Unsupported("OSSECAlert_Decoder"),
                    other => {
                        errors.push(
                            doc.diag(c.text_pos, format!("unknown plugin decoder '{other}'")),
                        );
                        continue;
                    }
                });
                if let Some(Plugin::Unsupported(p)) = plugin {
                    warnings.push(doc.diag(
                        c.pos,
                        format!(
                            "decoder '{name}': plugin {p} is not supported: lines it matches get the decoder name but no fields"
                        ),
                    ));
                }
            }
            "accumulate" => accumulate = true,
            other => errors.push(doc.diag(
                c.pos,
                format!("invalid element <{other}> in decoder '{name}'"),
            )),
        }
    }

    if prematch.is_none() && parent.is_none() && program_name.is_none() {
        errors.push(doc.diag(
            el.pos,
            format!("decoder '{name}' needs a prematch or a program_name (or a parent)"),
        ));
    }
    if regex.is_none() && order.is_some() {
        errors.push(doc.diag(
            order.as_ref().map_or(el.pos, |o| o.1),
            format!("decoder '{name}': <order> without a regex"),
        ));
    }
    if regex.is_none() && !fts.is_empty() {
        errors.push(doc.diag(el.pos, format!("decoder '{name}': <fts> without a regex")));
    }
    if let Some(r) = &regex {
        if order.is_none() {
            errors.push(doc.diag(
                r.el_pos,
                format!("decoder '{name}': a regex needs an <order>"),
            ));
        }
    }
    if plugin.is_some() && (regex.is_some() || order.is_some()) {
        errors.push(doc.diag(
            el.pos,
            format!("decoder '{name}': a plugin decoder cannot have a regex or an order"),
        ));
    }
    let mut regex_offset = regex_offset.unwrap_or(Offset::Start);
    if regex_offset == Offset::AfterParent && parent.is_none() {
        errors.push(doc.diag(
            el.pos,
            format!("decoder '{name}': offset=\"after_parent\" needs a parent"),
        ));
    }
    if regex_offset == Offset::AfterPrematch {
        if parent.is_none() {
            // As OSSEC: a root's own prematch is its "parent" offset.
            regex_offset = Offset::AfterParent;
        } else if prematch.is_none() {
            errors.push(doc.diag(
                el.pos,
                format!("decoder '{name}': offset=\"after_prematch\" needs a prematch"),
            ));
        }
    }
    if regex_offset == Offset::AfterRegex && (parent.is_none() || regex.is_none()) {
        errors.push(doc.diag(
            el.pos,
            format!("decoder '{name}': offset=\"after_regex\" needs a parent and a regex"),
        ));
    }
    let prematch_after_parent = match prematch_offset {
        None => false,
        Some(Offset::AfterParent) => {
            if parent.is_none() {
                errors.push(doc.diag(
                    el.pos,
                    format!("decoder '{name}': offset=\"after_parent\" needs a parent"),
                ));
            }
            true
        }
        Some(_) => {
            errors.push(doc.diag(
                prematch.as_ref().map_or(el.pos, |p| p.el_pos),
                format!("decoder '{name}': a prematch may only have offset=\"after_parent\""),
            ));
            false
        }
    };

    let program_name = program_name
        .and_then(|p| compile_pattern(doc, &name, "program_name", &p, &mut errors, warnings));
    let prematch =
        prematch.and_then(|p| compile_pattern(doc, &name, "prematch", &p, &mut errors, warnings));
    let regex_pos = regex.as_ref().map(|r| r.el_pos);
    let regex = regex.and_then(|p| compile_pattern(doc, &name, "regex", &p, &mut errors, warnings));

    let mut order_names = Vec::new();
    if let Some((text, pos)) = &order {
        for f in text.split(',').map(str::trim) {
            if f.is_empty() || f.contains(char::is_whitespace) {
                errors.push(doc.diag(
                    *pos,
                    format!("decoder '{name}': bad field name '{f}' in <order>"),
                ));
                continue;
            }
            order_names.push(Arc::<str>::from(static_field(f).unwrap_or(f)));
        }
        if let Some(re) = &regex {
            if order_names.len() > re.group_count() {
                // OSSEC loads such decoders (its own stock set has some) and leaves the extra
                // fields empty, so this is a warning that check-config shows, not an error.
                warnings.push(doc.diag(
                    regex_pos.unwrap_or(*pos),
                    format!(
                        "decoder '{name}': <order> names {} fields but the regex has {} capture group(s)",
                        order_names.len(),
                        re.group_count()
                    ),
                ));
            }
        }
    }
    for f in &fts {
        let known = FTS_FIELDS.contains(&f.as_str()) || order_names.iter().any(|o| &**o == f);
        if !known {
            errors.push(doc.diag(
                el.pos,
                format!("decoder '{name}': unknown field '{f}' in <fts>"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let name: Arc<str> = Arc::from(name.as_str());
    Ok(Decoder {
        reported_name: name.clone(),
        name,
        parent: parent.map(|p| Arc::from(p.as_str())),
        program_name,
        prematch,
        prematch_after_parent,
        regex,
        regex_offset,
        order: order_names,
        fts,
        ftscomment,
        use_own_name,
        decoder_type,
        plugin,
        accumulate,
        get_next: false,
        file: doc.path.clone(),
        pos: el.pos,
    })
}
