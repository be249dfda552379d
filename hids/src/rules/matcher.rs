//! Whether one rule's own conditions hold for one event: the text patterns, the decoded fields,
//! addresses, time of day and weekday, lists and the native `<compiled_rule>` functions, checked in
//! OSSEC's order (cheap tests first, the context search last, in the engine).

use std::net::IpAddr;
use std::sync::Arc;

use crate::event::Decoded;

use super::lists::{Cidr, List, Lookup};
use super::pat::Pat;

/// OSSEC's decoder types, which split the rule tree: a top-level rule only sees events whose
/// decoder has its category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Category {
    #[default]
    Syslog,
    Firewall,
    Ids,
    WebLog,
    Squid,
    Windows,
    Ossec,
    HostInformation,
}

impl Category {
    /// The category of a decoded event: its decoder's type, syslog when no decoder matched.
    pub fn of(d: &Decoded) -> Category {
        d.decoder_type
            .and_then(Category::parse)
            .unwrap_or(Category::Syslog)
    }

    /// The names used by `<category>` and decoders' `<type>`.
    pub fn parse(s: &str) -> Option<Category> {
        Some(match s {
            "syslog" => Category::Syslog,
            "firewall" => Category::Firewall,
            "ids" => Category::Ids,
            "web-log" => Category::WebLog,
            "squid" => Category::Squid,
            "windows" => Category::Windows,
            "ossec" => Category::Ossec,
            "host-information" => Category::HostInformation,
            _ => return None,
        })
    }

    pub const NAMES: [&'static str; 8] = [
        "syslog",
        "firewall",
        "ids",
        "web-log",
        "squid",
        "windows",
        "ossec",
        "host-information",
    ];
}

/// What rules see of one event: the pre-decoded header, the decoder's fields and the text.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The message after the syslog header (OSSEC's `log`): what `match`/`regex`/`pcre2` test.
    pub log: &'a str,
    pub full_log: &'a str,
    pub location: &'a str,
    /// The pre-decoded host name, or the location when there is none (as OSSEC does).
    pub hostname: &'a str,
    pub program_name: Option<&'a str>,
    pub decoder: Option<&'a str>,
    pub category: Category,
    /// Seconds since the epoch.
    pub time: u64,
    /// Local time of day in seconds and weekday (0 = Sunday), for `<time>` and `<weekday>`.
    pub day_seconds: u32,
    pub weekday: u8,
    pub decoded: &'a Decoded,
    pub f: Fields<'a>,
}

/// The texts whose patterns a sibling list can answer with one multi-pattern scan each: the log
/// (`match`/`regex`/`pcre2`), the URL, the id (a web status code) and the program name (which
/// dozens of top-level rules test, each with its own pattern).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    Log = 0,
    Url = 1,
    Id = 2,
    ProgramName = 3,
}

/// Number of [`Src`] values.
pub const SOURCES: usize = 4;

/// A sibling list's patterns, per source, in one set each.
#[derive(Debug, Default)]
pub struct SiblingSets {
    /// Boxed: a lazy DFA's tables of byte classes and start bytes are kept inline, and most
    /// lists have no set.
    pub sets: [Option<Box<PatternScan>>; SOURCES],
    /// Per source, per sibling (in list order), per pattern of that source: its index in the set.
    pub maps: [Vec<Box<[Option<u32>]>>; SOURCES],
    /// Per source, per sibling: the set index of its first pattern the set answers for.
    pub first: [Vec<Option<u32>>; SOURCES],
}

/// The caches of a [`PatternScan`]'s lazy DFA, one per thread that uses it.
type CachePool = regex_automata::util::pool::Pool<
    regex_automata::hybrid::dfa::Cache,
    Box<dyn Fn() -> regex_automata::hybrid::dfa::Cache + Send + Sync>,
>;

/// Patterns (OSSEC's `match`, `regex`, `pcre2` ... of sibling rules) whose matches in a text are
/// all named in one forward pass of a lazy DFA: every state the text leads to that ends a match
/// names the patterns it ends. That pass costs a few instructions per byte whether or not anything
/// matches, where regex-automata's overlapping search steps through a general loop at several
/// times that.
#[derive(Debug)]
pub struct PatternScan {
    dfa: regex_automata::hybrid::dfa::DFA,
    caches: CachePool,
}

impl PatternScan {
    /// Compiles the patterns (regex syntax, matched as bytes) into one set; pattern `i` of the set
    /// is `patterns[i]`.
    pub fn new(patterns: &[&str]) -> Result<PatternScan, String> {
        use regex_automata::nfa::thompson;
        let nfa = thompson::Compiler::new()
            .syntax(crate::pattern::byte_syntax())
            .configure(
                thompson::Config::new()
                    .which_captures(thompson::WhichCaptures::None)
                    .utf8(false)
                    .nfa_size_limit(Some(32 << 20)),
            )
            .build_many(patterns)
            .map_err(|e| e.to_string())?;
        let dfa = regex_automata::hybrid::dfa::DFA::builder()
            .configure(
                regex_automata::hybrid::dfa::Config::new()
                    .match_kind(regex_automata::MatchKind::All)
                    .cache_capacity(2 << 20),
            )
            .build_from_nfa(nfa)
            .map_err(|e| e.to_string())?;
        let for_caches = dfa.clone();
        Ok(PatternScan {
            dfa,
            caches: CachePool::new(Box::new(move || for_caches.create_cache())),
        })
    }

    pub fn pattern_len(&self) -> usize {
        self.dfa.pattern_len()
    }

    /// Puts every pattern that matches somewhere in `text` into `found` (which must have room for
    /// all of them).
    pub fn which(&self, text: &[u8], found: &mut regex_automata::PatternSet) {
        let input = regex_automata::Input::new(text);
        let mut cache = self.caches.get();
        if self.scan(&mut cache, &input, found).is_err() {
            // The lazy DFA never gives up as configured; should it fail anyway, the same
            // automaton runs as a PikeVM.
            found.clear();
            let vm = regex_automata::nfa::thompson::pikevm::PikeVM::builder()
                .configure(
                    regex_automata::nfa::thompson::pikevm::Config::new()
                        .match_kind(regex_automata::MatchKind::All),
                )
                .build_from_nfa(self.dfa.get_nfa().clone());
            if let Ok(vm) = vm {
                vm.which_overlapping_matches(&mut vm.create_cache(), &input, found);
            }
        }
    }

    fn scan(
        &self,
        cache: &mut regex_automata::hybrid::dfa::Cache,
        input: &regex_automata::Input,
        found: &mut regex_automata::PatternSet,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dfa = &self.dfa;
        let text = input.haystack();
        let mut sid = dfa.start_state_forward(cache, input)?;
        let mut at = 0;
        while at < text.len() {
            // Plain states (no match ends here, nothing to compute) in a tight loop.
            if !sid.is_tagged() {
                let rest = &text[at..];
                let plain = rest
                    .iter()
                    .position(|&b| {
                        let next = dfa.next_state_untagged(cache, sid, b);
                        let special = next.is_tagged();
                        if !special {
                            sid = next;
                        }
                        special
                    })
                    .unwrap_or(rest.len());
                at += plain;
                if at == text.len() {
                    break;
                }
            }
            sid = dfa.next_state(cache, sid, text[at])?;
            at += 1;
            if sid.is_match() {
                // Matches are reported one byte late: these end at `at - 1`.
                self.record(cache, sid, found);
            } else if sid.is_dead() {
                return Ok(());
            } else if sid.is_quit() {
                return Err("lazy DFA quit".into());
            }
        }
        sid = dfa.next_eoi_state(cache, sid)?;
        if sid.is_match() {
            self.record(cache, sid, found);
        }
        Ok(())
    }

    fn record(
        &self,
        cache: &regex_automata::hybrid::dfa::Cache,
        sid: regex_automata::hybrid::LazyStateID,
        found: &mut regex_automata::PatternSet,
    ) {
        for i in 0..self.dfa.match_len(cache, sid) {
            // A set made with room for every pattern cannot be full here.
            let _ = found.try_insert(self.dfa.match_pattern(cache, sid, i));
        }
    }
}

impl SiblingSets {
    /// Whether a set already scanned for this list says that the sibling at `pos` does not match
    /// (one of its patterns did not): its conditions need not be looked at, as they would fail
    /// at that pattern with nothing else done before it.
    #[inline]
    pub fn rules_out(&self, pos: usize, scratch: &Scratch) -> bool {
        (0..SOURCES).any(|s| {
            scratch.done[s]
                && matches!(
                    (self.first[s].get(pos), &scratch.results[s]),
                    (Some(&Some(si)), Some(r))
                        if !regex_automata::PatternID::new(si as usize).is_ok_and(|p| r.contains(p))
                )
        })
    }
}

/// Per-evaluation scratch space for [`Known`]. The engine keeps these between events, so their
/// pattern sets are allocated once rather than per sibling list and event.
#[derive(Debug, Default)]
pub struct Scratch {
    results: [Option<regex_automata::PatternSet>; SOURCES],
    done: [bool; SOURCES],
}

impl Scratch {
    /// Forgets the results of the last sibling list (the sets' memory is kept).
    pub fn reset(&mut self) {
        self.done = [false; SOURCES];
    }
}

/// Results already known for some of a rule's patterns: one scan of a sibling list's set answers
/// for every sibling at once, so each rule's own patterns need not run. Each set runs lazily, the
/// first time a rule that has entries in it gets that far.
pub struct Known<'a> {
    pub sets: &'a SiblingSets,
    /// This rule's position in its sibling list.
    pub pos: usize,
    pub scratch: &'a mut Scratch,
}

impl Known<'_> {
    fn get(&mut self, src: Src, i: usize, text: &str) -> Option<bool> {
        let s = src as usize;
        let si = (*self.sets.maps[s].get(self.pos)?.get(i)?)? as usize;
        let set = self.sets.sets[s].as_ref()?;
        let r = self.scratch.results[s]
            .get_or_insert_with(|| regex_automata::PatternSet::new(set.pattern_len()));
        if !self.scratch.done[s] {
            // A set with room for more patterns than this one has is fine: kept from a larger list.
            if r.capacity() < set.pattern_len() {
                *r = regex_automata::PatternSet::new(set.pattern_len());
            } else {
                r.clear();
            }
            set.which(text.as_bytes(), r);
            self.scratch.done[s] = true;
        }
        Some(r.contains(regex_automata::PatternID::new(si).ok()?))
    }
}

/// Every pattern of `pats` matches `text` (answered from `known` where it can).
fn all_k(pats: &[Pat], text: Option<&str>, src: Src, known: &mut Option<Known>) -> bool {
    if pats.is_empty() {
        return true;
    }
    let Some(t) = text else { return false };
    pats.iter().enumerate().all(|(i, p)| {
        known
            .as_mut()
            .and_then(|k| k.get(src, i, t))
            .unwrap_or_else(|| p.is_match(t))
    })
}

/// OSSEC's static fields, looked up once per event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    pub srcip: Option<&'a str>,
    pub dstip: Option<&'a str>,
    pub srcport: Option<&'a str>,
    pub dstport: Option<&'a str>,
    pub protocol: Option<&'a str>,
    pub action: Option<&'a str>,
    pub srcuser: Option<&'a str>,
    pub dstuser: Option<&'a str>,
    pub id: Option<&'a str>,
    pub url: Option<&'a str>,
    pub status: Option<&'a str>,
    pub extra_data: Option<&'a str>,
    pub system_name: Option<&'a str>,
}

impl<'a> Fields<'a> {
    /// Reads the static fields from the decoder's output (first value of each name; `user` is
    /// OSSEC's `dstuser`, `data` its `extra_data`).
    pub fn from_decoded(d: &'a Decoded) -> Fields<'a> {
        let mut f = Fields::default();
        for (k, v) in &d.fields {
            let v = Some(v.as_str());
            let slot = match &**k {
                "srcip" => &mut f.srcip,
                "dstip" => &mut f.dstip,
                "srcport" => &mut f.srcport,
                "dstport" => &mut f.dstport,
                "protocol" => &mut f.protocol,
                "action" => &mut f.action,
                "srcuser" => &mut f.srcuser,
                "dstuser" | "user" => &mut f.dstuser,
                "id" => &mut f.id,
                "url" => &mut f.url,
                "status" => &mut f.status,
                "extra_data" | "data" => &mut f.extra_data,
                "system_name" => &mut f.system_name,
                _ => continue,
            };
            if slot.is_none() {
                *slot = v;
            }
        }
        f
    }

    /// A static field by its OSSEC name, for `$(field)` and `<list field=...>`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        match name {
            "srcip" => self.srcip,
            "dstip" => self.dstip,
            "srcport" => self.srcport,
            "dstport" => self.dstport,
            "protocol" => self.protocol,
            "action" => self.action,
            "srcuser" => self.srcuser,
            "dstuser" | "user" => self.dstuser,
            "id" => self.id,
            "url" => self.url,
            "status" => self.status,
            "extra_data" | "data" => self.extra_data,
            "system_name" => self.system_name,
            _ => None,
        }
    }
}

/// `<srcip>`/`<dstip>`: OSSEC's `OS_IPFoundList`. Entries are addresses or blocks; once an entry
/// with `!` has been read, a match means "no" and no match means "yes" (OSSEC's sticky negation).
#[derive(Debug, Clone, Default)]
pub struct IpList {
    entries: Vec<(Cidr, bool)>,
}

impl IpList {
    pub fn push(&mut self, text: &str) -> Result<(), String> {
        for part in text.split([',', ' ']).filter(|s| !s.is_empty()) {
            let (neg, addr) = match part.strip_prefix('!') {
                Some(a) => (true, a),
                None => (false, part),
            };
            let c = Cidr::parse(addr).ok_or_else(|| format!("invalid address {part:?}"))?;
            self.entries.push((c, neg));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn found(&self, ip: &str) -> bool {
        let Ok(addr) = ip.trim().parse::<IpAddr>() else {
            return false;
        };
        let mut yes = true;
        for (c, neg) in &self.entries {
            if *neg {
                yes = false;
            }
            if c.contains(addr) {
                return yes;
            }
        }
        !yes
    }
}

/// `<time>`: a daily window such as `6 pm - 8:30 am` or `!09:00-17:00` (OSSEC's OS_IsValidTime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: u32,
    pub end: u32,
    pub negate: bool,
}

impl TimeRange {
    pub fn parse(s: &str) -> Option<TimeRange> {
        let s = s.trim();
        let (negate, s) = match s.strip_prefix('!') {
            Some(r) => (true, r.trim()),
            None => (false, s),
        };
        let (a, b) = s.split_once('-')?;
        Some(TimeRange {
            start: parse_clock(a)?,
            end: parse_clock(b)?,
            negate,
        })
    }

    /// Whether `secs` (since local midnight) is inside the window; a window may wrap midnight.
    pub fn contains(&self, secs: u32) -> bool {
        let minute = secs / 60 * 60;
        let inside = if self.start <= self.end {
            minute >= self.start && minute < self.end
        } else {
            minute >= self.start || minute < self.end
        };
        inside != self.negate
    }
}

/// `6 pm`, `8:30 am`, `18:00`, `6pm` to seconds since midnight.
fn parse_clock(s: &str) -> Option<u32> {
    let s = s.trim().to_ascii_lowercase();
    let (body, pm) = if let Some(b) = s.strip_suffix("pm") {
        (b.trim(), Some(true))
    } else if let Some(b) = s.strip_suffix("am") {
        (b.trim(), Some(false))
    } else {
        (s.as_str(), None)
    };
    let (h, m) = match body.split_once(':') {
        Some((h, m)) => (h.trim().parse::<u32>().ok()?, m.trim().parse::<u32>().ok()?),
        None => (body.parse::<u32>().ok()?, 0),
    };
    if m > 59 {
        return None;
    }
    let h = match pm {
        Some(true) if h < 12 => h + 12,
        Some(false) if h == 12 => 0,
        Some(_) if h > 12 => return None,
        _ => h,
    };
    if h > 23 {
        return None;
    }
    Some(h * 3600 + m * 60)
}

/// `<weekday>`: `monday - friday`, `weekdays`, `weekends`, `sat, sun`, `!sunday` (bit 0 = Sunday).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weekdays(pub u8);

impl Weekdays {
    pub fn parse(s: &str) -> Option<Weekdays> {
        let s = s.trim().to_ascii_lowercase();
        let (negate, s) = match s.strip_prefix('!') {
            Some(r) => (true, r.trim().to_string()),
            None => (false, s),
        };
        let mut mask = 0u8;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some((a, b)) = part.split_once('-') {
                let (a, b) = (day(a.trim())?, day(b.trim())?);
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            } else {
                mask |= match part {
                    "weekdays" => 0b0111110,
                    "weekends" => 0b1000001,
                    p => 1 << day(p)?,
                };
            }
        }
        if mask == 0 {
            return None;
        }
        Some(Weekdays(if negate { !mask & 0x7f } else { mask }))
    }

    pub fn contains(&self, weekday: u8) -> bool {
        weekday < 7 && self.0 & (1 << weekday) != 0
    }
}

fn day(s: &str) -> Option<u8> {
    const NAMES: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    NAMES
        .iter()
        .position(|n| s.len() >= 3 && n.starts_with(s))
        .map(|i| i as u8)
}

/// The native versions of OSSEC's `<compiled_rule>` functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// The source and destination user are the same, or one is missing.
    SameUser,
    /// The `id` field is at least 10 characters long.
    CheckIdSize,
    /// Windows: target account and caller user differ.
    TargetUserDiffers,
    /// A plain GET without a query string (or of `/`).
    SimpleHttpRequest,
    /// The request comes from a known search engine crawler (see [`is_valid_crawler`]).
    ValidCrawler,
}

impl Compiled {
    pub const NAMES: [&'static str; 5] = [
        "comp_srcuser_dstuser",
        "check_id_size",
        "comp_mswin_targetuser_calleruser_diff",
        "is_simple_http_request",
        "is_valid_crawler",
    ];

    pub fn parse(s: &str) -> Option<Compiled> {
        Some(match s {
            "comp_srcuser_dstuser" => Compiled::SameUser,
            "check_id_size" => Compiled::CheckIdSize,
            "comp_mswin_targetuser_calleruser_diff" => Compiled::TargetUserDiffers,
            "is_simple_http_request" => Compiled::SimpleHttpRequest,
            "is_valid_crawler" => Compiled::ValidCrawler,
            _ => return None,
        })
    }

    pub fn check(self, v: &View) -> bool {
        let f = &v.f;
        match self {
            Compiled::SameUser => match (f.srcuser, f.dstuser) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            },
            Compiled::CheckIdSize => f.id.is_some_and(|id| id.len() >= 10),
            Compiled::TargetUserDiffers => target_user_differs(v.log),
            Compiled::SimpleHttpRequest => {
                let Some(url) = f.url else { return false };
                if f.action.is_some_and(|a| !a.eq_ignore_ascii_case("GET")) {
                    return false;
                }
                url == "/" || !url.contains('?')
            }
            Compiled::ValidCrawler => is_valid_crawler(v.log),
        }
    }
}

/// OSSEC accepts the log (which for web access logs starts with the client address) when it starts
/// with one of a few crawler prefixes, or else when a reverse DNS lookup of it ends in googlebot.com
/// and the forward lookup agrees. The analysis path never does network I/O, so the DNS step is
/// replaced by Google's published Googlebot block 66.249.64.0/19: the addresses for which that
/// reverse-and-forward check succeeds. Anything else is not a crawler, as with OSSEC when DNS fails.
pub fn is_valid_crawler(log: &str) -> bool {
    const PREFIXES: [&str; 7] = [
        "72.14.", "209.85.", "65.55.", "207.46.", "74.6.", "72.30.", "67.195.",
    ];
    if PREFIXES.iter().any(|p| log.starts_with(p)) {
        return true;
    }
    let addr = log
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .unwrap_or("");
    match addr.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => u32::from(ip) & 0xffff_e000 == u32::from(std::net::Ipv4Addr::new(66, 249, 64, 0)),
        Err(_) => false,
    }
}

fn target_user_differs(log: &str) -> bool {
    let (Some(t), Some(c)) = (
        log.find("Target Account Name"),
        log.find("Caller User Name"),
    ) else {
        return false;
    };
    let (Some(ti), Some(ci)) = (log[t..].find(':'), log[c..].find(':')) else {
        return false;
    };
    let target = &log.as_bytes()[t + ti + 1..];
    let caller = &log.as_bytes()[c + ci + 1..];
    for (i, &b) in target.iter().enumerate() {
        if caller.get(i) != Some(&b) {
            return true;
        }
        if b == b'\t' || (b == b' ' && target.get(i + 1) == Some(&b' ')) {
            break;
        }
    }
    false
}

/// A `<list>` condition, resolved to its loaded list.
#[derive(Debug, Clone)]
pub struct ListCheck {
    pub field: String,
    pub lookup: Lookup,
    pub check_value: Option<Pat>,
    pub list: Arc<List>,
}

/// A `<field name="...">` condition on a dynamic (or JSON) field.
#[derive(Debug, Clone)]
pub struct FieldCheck {
    pub name: String,
    pub pat: Pat,
}

/// A rule's own conditions, in evaluation order. Unset conditions are `None`/empty.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub decoded_as: Option<String>,
    pub program_name: Vec<Pat>,
    pub id: Vec<Pat>,
    pub matches: Vec<Pat>,
    pub regex: Vec<Pat>,
    pub action: Option<String>,
    pub url: Vec<Pat>,
    pub srcip: IpList,
    pub dstip: IpList,
    pub srcport: Vec<Pat>,
    pub dstport: Vec<Pat>,
    pub compiled: Option<Compiled>,
    pub user: Vec<Pat>,
    pub maxsize: usize,
    pub time: Option<TimeRange>,
    pub weekday: Option<Weekdays>,
    pub extra_data: Vec<Pat>,
    pub hostname: Vec<Pat>,
    pub status: Vec<Pat>,
    pub fields: Vec<FieldCheck>,
    pub lists: Vec<ListCheck>,
}

#[inline]
fn all(pats: &[Pat], text: Option<&str>) -> bool {
    if pats.is_empty() {
        return true;
    }
    match text {
        Some(t) => pats.iter().all(|p| p.is_match(t)),
        None => false,
    }
}

impl Conditions {
    /// OSSEC's `OS_CheckIfRuleMatch` minus the first-time-seen test and the context search, which
    /// need the engine's state.
    pub fn check(&self, v: &View, mut known: Option<Known>) -> bool {
        let f = &v.f;
        if let Some(d) = &self.decoded_as {
            if v.decoder != Some(d.as_str()) {
                return false;
            }
        }
        if !all_k(
            &self.program_name,
            v.program_name,
            Src::ProgramName,
            &mut known,
        ) || !all_k(&self.id, f.id, Src::Id, &mut known)
        {
            return false;
        }
        for (i, p) in self.matches.iter().chain(self.regex.iter()).enumerate() {
            let r = known
                .as_mut()
                .and_then(|k| k.get(Src::Log, i, v.log))
                .unwrap_or_else(|| p.is_match(v.log));
            if !r {
                return false;
            }
        }
        if let Some(a) = &self.action {
            // OSSEC compares the action exactly (case-insensitively in later versions).
            if !f.action.is_some_and(|x| x.eq_ignore_ascii_case(a)) {
                return false;
            }
        }
        if !all_k(&self.url, f.url, Src::Url, &mut known) {
            return false;
        }
        if !self.srcip.is_empty() && !f.srcip.is_some_and(|ip| self.srcip.found(ip)) {
            return false;
        }
        if !self.dstip.is_empty() && !f.dstip.is_some_and(|ip| self.dstip.found(ip)) {
            return false;
        }
        if !all(&self.srcport, f.srcport) || !all(&self.dstport, f.dstport) {
            return false;
        }
        if let Some(c) = self.compiled {
            if !c.check(v) {
                return false;
            }
        }
        if !self.user.is_empty() && !all(&self.user, f.dstuser.or(f.srcuser)) {
            return false;
        }
        if self.maxsize > 0 && v.log.len() < self.maxsize {
            return false;
        }
        if let Some(t) = &self.time {
            if !t.contains(v.day_seconds) {
                return false;
            }
        }
        if let Some(w) = &self.weekday {
            if !w.contains(v.weekday) {
                return false;
            }
        }
        if !all(&self.extra_data, f.extra_data)
            || !all(&self.hostname, Some(v.hostname))
            || !all(&self.status, f.status)
        {
            return false;
        }
        for fc in &self.fields {
            let value = v.f.get(&fc.name).or_else(|| v.decoded.get(&fc.name));
            if !value.is_some_and(|val| fc.pat.is_match(val)) {
                return false;
            }
        }
        for l in &self.lists {
            let value = match l.field.as_str() {
                "user" => f.srcuser.or(f.dstuser),
                "program_name" => v.program_name,
                "hostname" => Some(v.hostname),
                name => f.get(name).or_else(|| v.decoded.get(name)),
            };
            let Some(value) = value else { return false };
            let check = |val: &str| l.check_value.as_ref().map_or(true, |p| p.is_match(val));
            if !l.lookup.eval(&l.list, value, check) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns a regex-automata overlapping search over the same set names.
    fn by_meta(patterns: &[&str], text: &[u8]) -> Vec<usize> {
        let re = regex_automata::meta::Regex::builder()
            .syntax(crate::pattern::byte_syntax())
            .configure(
                regex_automata::meta::Config::new()
                    .match_kind(regex_automata::MatchKind::All)
                    .utf8_empty(false),
            )
            .build_many(patterns)
            .unwrap();
        let mut set = regex_automata::PatternSet::new(re.pattern_len());
        re.which_overlapping_matches(&regex_automata::Input::new(text), &mut set);
        set.iter().map(|p| p.as_usize()).collect()
    }

    #[test]
    fn a_pattern_scan_names_the_matches_an_overlapping_search_names() {
        let patterns = [
            r"^Failed password",
            r"password",
            r"(?i)invalid user",
            r"user$",
            r"a+b",
            r"^$",
            r"x*",
            r"\bport\b",
            r"[0-9]{3}",
            r"from \d+\.\d+\.\d+\.\d+",
            r"^\S+ \S+$",
            r"\xff",
            r"ab|ba",
            r"^",
            r"$",
        ];
        let texts: [&[u8]; 14] = [
            b"",
            b"Failed password for root from 10.0.0.1 port 22 ssh2",
            b"Failed password for INVALID USER admin",
            b"invalid user",
            b"aaab",
            b"ba",
            b"report 12",
            b"port",
            b"x",
            b"one two",
            b"\xff\x00\n binary \xff",
            b"passwor",
            b"\npassword\n",
            b"a b c d e f g h i j k l m n o p q r s t u v w x y z 0123456789 aab",
        ];
        let scan = PatternScan::new(&patterns).unwrap();
        assert_eq!(scan.pattern_len(), patterns.len());
        let mut set = regex_automata::PatternSet::new(patterns.len());
        for text in texts {
            set.clear();
            scan.which(text, &mut set);
            let got: Vec<usize> = set.iter().map(|p| p.as_usize()).collect();
            assert_eq!(
                got,
                by_meta(&patterns, text),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        // Each pattern alone, and every pair, over every text.
        for (i, a) in patterns.iter().enumerate() {
            for b in &patterns[i..] {
                let pair = [*a, *b];
                let scan = PatternScan::new(&pair).unwrap();
                let mut set = regex_automata::PatternSet::new(2);
                for text in texts {
                    set.clear();
                    scan.which(text, &mut set);
                    let got: Vec<usize> = set.iter().map(|p| p.as_usize()).collect();
                    assert_eq!(got, by_meta(&pair, text), "{pair:?} {text:?}");
                }
            }
        }
    }

    #[test]
    fn ip_lists_follow_ossec_negation() {
        let mut l = IpList::default();
        l.push("10.0.0.0/8").unwrap();
        l.push("192.168.1.1").unwrap();
        assert!(l.found("10.2.3.4"));
        assert!(l.found("192.168.1.1"));
        assert!(!l.found("192.168.1.2"));
        assert!(!l.found("not-an-ip"));
        let mut n = IpList::default();
        n.push("!10.0.0.0/8").unwrap();
        assert!(!n.found("10.1.1.1"));
        assert!(n.found("8.8.8.8"));
        assert!(IpList::default().push("300.1.1.1").is_err());
    }

    #[test]
    fn time_windows_wrap_midnight() {
        let t = TimeRange::parse("6 pm - 8:30 am").unwrap();
        assert_eq!((t.start, t.end), (18 * 3600, 8 * 3600 + 1800));
        assert!(t.contains(23 * 3600));
        assert!(t.contains(3600));
        assert!(t.contains(18 * 3600));
        assert!(!t.contains(8 * 3600 + 1800));
        assert!(!t.contains(12 * 3600));
        let d = TimeRange::parse("!09:00-17:00").unwrap();
        assert!(!d.contains(10 * 3600));
        assert!(d.contains(20 * 3600));
        assert!(TimeRange::parse("25:00 - 1:00").is_none());
        assert!(TimeRange::parse("noon").is_none());
    }

    #[test]
    fn weekdays() {
        let w = Weekdays::parse("weekends").unwrap();
        assert!(w.contains(0) && w.contains(6) && !w.contains(3));
        let w = Weekdays::parse("monday - friday").unwrap();
        assert!(w.contains(1) && w.contains(5) && !w.contains(6));
        let w = Weekdays::parse("fri - mon").unwrap();
        assert!(w.contains(5) && w.contains(0) && w.contains(1) && !w.contains(3));
        let w = Weekdays::parse("!sunday").unwrap();
        assert!(!w.contains(0) && w.contains(1));
        assert!(Weekdays::parse("someday").is_none());
    }

    #[test]
    fn compiled_rules() {
        let d = Decoded::default();
        let mk = |url: Option<&'static str>, action: Option<&'static str>| Fields {
            url,
            action,
            ..Fields::default()
        };
        let view = |f: Fields<'static>, log: &'static str, d: &'static Decoded| View {
            log,
            full_log: log,
            location: "x",
            hostname: "x",
            program_name: None,
            decoder: None,
            category: Category::WebLog,
            time: 0,
            day_seconds: 0,
            weekday: 0,
            decoded: d,
            f,
        };
        let d: &'static Decoded = Box::leak(Box::new(d));
        let s = Compiled::SimpleHttpRequest;
        assert!(s.check(&view(mk(Some("/"), Some("GET")), "", d)));
        assert!(s.check(&view(mk(Some("/a/b"), None), "", d)));
        assert!(!s.check(&view(mk(Some("/a?x=1"), Some("GET")), "", d)));
        assert!(!s.check(&view(mk(Some("/"), Some("POST")), "", d)));
        assert!(!s.check(&view(mk(None, None), "", d)));
        let c = Compiled::ValidCrawler;
        assert!(c.check(&view(mk(None, None), "66.249.66.1 - - [x]", d)));
        assert!(c.check(&view(mk(None, None), "207.46.1.1 - -", d)));
        assert!(!c.check(&view(mk(None, None), "203.0.113.9 - -", d)));
        assert!(target_user_differs(
            "Target Account Name: bob\tCaller User Name: alice\t"
        ));
        assert!(!target_user_differs(
            "Target Account Name: bob\tCaller User Name: bob\t"
        ));
    }
}
