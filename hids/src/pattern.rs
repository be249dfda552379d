//! OSSEC's three pattern dialects compiled to a linear-time engine.
//!
//! - **OS_Match** (`<match>`, `<program_name>`, `<hostname>` ...): literal text, case-insensitive,
//!   `|` separates alternatives, each of which may start with `^` (prefix) and end with `$` (suffix);
//!   an empty alternative matches everything; a leading `!` negates the whole pattern.
//! - **OS_Regex** (`<regex>`, `<prematch>`): OSSEC's own small regex language with its own classes
//!   (`\w` is `[A-Za-z0-9-@_]`, `\s` is a space only, `\.` is any character, `\p` punctuation),
//!   `+`/`*` only after a backslash class, literal `.`/`[`/`?`, one level of capturing parentheses,
//!   `|` splitting the whole pattern into alternatives each with its own `^`/`$`, case-insensitive.
//!   Quantifiers are lazy except the last one of an alternative, as OSSEC's own translation to PCRE2
//!   does, so captures come out as OSSEC extracts them. Where OSSEC's old matcher and its newer
//!   PCRE2 translation differ, the documented dialect wins: `^`/`$` anchor only at the ends of an
//!   alternative (elsewhere they are literal), and nested parentheses or `|` inside parentheses
//!   are load errors that point to `pcre2`.
//! - **PCRE2** (`<pcre2>`, `<prematch_pcre2>`, `type="pcre2"` ...): translated token by token to the
//!   `regex` crate's syntax where the meaning is preserved exactly (byte semantics as OSSEC's
//!   non-UTF PCRE2 compile, ASCII classes, case-insensitive as OSSEC compiles them, possessive
//!   quantifiers made plain where that cannot change a match). A pattern that truly needs
//!   backtracking (lookaround, backreferences, atomic groups) is compiled with `fancy-regex` under a
//!   backtrack limit and reported by [`Pattern::is_linear`] so `check-config` can name it.
//!   Anything else that cannot be translated is a [`PatternError`] naming the construct.
//!
//! Matching works on bytes, as OSSEC does: `\.` or `\S` consume one byte at a time and captures that
//! cut a multi-byte character are returned with the replacement character.
//!
//! Captures of an expression that is a plain sequence (most decoder regexes) come from a direct
//! matcher with the regex crate's semantics ([`seq`]), which costs a fraction of the crate's
//! capture engines; everything else, and any search that matcher gives up on, uses the crate.

use std::fmt;
use std::ops::Range;

mod seq;

/// Backtracking steps allowed to a non-linear pattern on one line before it counts as no match.
pub const BACKTRACK_LIMIT: usize = 100_000;

/// The pattern language of an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// OSSEC's OS_Match ("sregex").
    OsMatch,
    /// OSSEC's OS_Regex ("regex").
    OsRegex,
    /// PCRE2 as OSSEC compiles it (caseless, not UTF).
    Pcre2,
}

impl Dialect {
    /// The dialect's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OsMatch => "OS_Match",
            Dialect::OsRegex => "OS_Regex",
            Dialect::Pcre2 => "PCRE2",
        }
    }
}

/// Why a pattern could not be compiled. `offset` is a byte offset into the pattern when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{dialect} pattern '{pattern}': {message}")]
pub struct PatternError {
    pub dialect: &'static str,
    pub pattern: String,
    pub message: String,
    pub offset: Option<usize>,
}

/// A compiled pattern.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    dialect: Dialect,
    negate: bool,
    translated: String,
    engine: Engine,
    /// The direct matcher for plain sequences, which extracts captures for [`Pattern::captures`]
    /// when the expression fits it (see [`seq`]). Compiled on the first capture search, so that
    /// patterns only ever searched for a yes or no (prematches, rules) do not pay for it.
    seq: std::sync::OnceLock<Option<Box<seq::Seqs>>>,
    /// When the pattern is a choice of literals all anchored at the start (most prematches and
    /// many rule patterns), those literals: comparing them answers a search without the regex
    /// engine, whose per-search setup costs more than the comparison. Found on first use.
    prefixes: std::sync::OnceLock<Option<Box<[LiteralAlt]>>>,
    /// A literal without letters that every match begins with (`--` for `--[0-9A-Za-z]+-A--`),
    /// if any: a text without it cannot match, which a substring search tells for less than the
    /// regex engine's per-search setup. Found on first use.
    required: std::sync::OnceLock<Option<Box<memchr::memmem::Finder<'static>>>>,
}

#[derive(Clone)]
enum Engine {
    /// Matches every text (an empty OS_Match alternative).
    Always,
    Linear(regex::bytes::Regex),
    /// A linear pattern whose syntax was checked but whose automaton is built on first use: rule
    /// patterns that a multi-pattern set answers for are never searched on their own, and a
    /// compiled regex costs tens of kilobytes. Built lean (see [`build_lean`]). `None` inside when the build failed (see
    /// [`Pattern::compile_deferred`], which reports it at load time).
    Deferred(Box<std::sync::OnceLock<Option<regex_automata::meta::Regex>>>),
    Backtrack(Box<fancy_regex::Regex>),
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pattern")
            .field("dialect", &self.dialect)
            .field("source", &self.source)
            .field("translated", &self.translated)
            .field("linear", &self.is_linear())
            .finish()
    }
}

/// The outcome of a successful match with its capture groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    /// Byte offset just after the whole match (OSSEC continues from here for offsets).
    pub end: usize,
    /// The groups that took part in the match, in order. Like OSSEC, groups that did not take part
    /// are left out rather than kept as empty values, so later groups move up.
    pub groups: Vec<Range<usize>>,
}

impl Captures {
    /// The text of group `i` (lossy where a capture cut a multi-byte character).
    pub fn text(&self, haystack: &str, i: usize) -> Option<String> {
        self.text_at(haystack, 0, i).map(String::from)
    }

    /// The text of group `i` of a match that ran on `text[offset..]` (as bytes: `offset` need not
    /// fall between characters). A group that starts and ends between characters is copied as it
    /// is, with no check of its bytes; otherwise it is converted lossily.
    pub fn text_at(&self, text: &str, offset: usize, i: usize) -> Option<crate::event::FieldValue> {
        let r = self.groups.get(i)?;
        let (start, end) = (offset.checked_add(r.start)?, offset.checked_add(r.end)?);
        match text.get(start..end) {
            Some(s) => Some(s.into()),
            None => Some(crate::event::FieldValue::from_utf8_lossy(
                text.as_bytes().get(start..end)?,
            )),
        }
    }
}

impl Pattern {
    /// Compiles `source` in `dialect`.
    pub fn new(dialect: Dialect, source: &str) -> Result<Pattern, PatternError> {
        Pattern::build(dialect, source, false)
    }

    fn build(dialect: Dialect, source: &str, defer: bool) -> Result<Pattern, PatternError> {
        match dialect {
            Dialect::OsMatch => Pattern::os_match_in(source, defer),
            Dialect::OsRegex => Pattern::os_regex_in(source, defer),
            Dialect::Pcre2 => Pattern::pcre2_in(source, defer),
        }
    }

    /// Like [`Pattern::new`], but a linear pattern only has its syntax checked: its automaton is
    /// built the first time it is searched, or by [`Pattern::compile_deferred`]. For patterns that
    /// a [`regex::bytes::RegexSet`] usually answers for.
    pub fn new_deferred(dialect: Dialect, source: &str) -> Result<Pattern, PatternError> {
        Pattern::build(dialect, source, true)
    }

    /// Builds a deferred pattern's automaton now, reporting what would stop it from ever
    /// matching (an expression too large for the size limits).
    pub fn compile_deferred(&self) -> Result<(), PatternError> {
        if self.prefixes().is_some() {
            // Answered by comparing literals: the automaton is never needed.
            return Ok(());
        }
        if let Engine::Deferred(cell) = &self.engine {
            let mut error = None;
            cell.get_or_init(|| match build_lean(&self.translated) {
                Ok(re) => Some(re),
                Err(e) => {
                    error = Some(e);
                    None
                }
            });
            if let Some(e) = error {
                return Err(err(
                    self.dialect,
                    &self.source,
                    format!("cannot be compiled: {}", first_line(&e.to_string())),
                    None,
                ));
            }
        }
        Ok(())
    }

    /// The direct matcher, compiled now if this is its first use; `None` when the expression is
    /// not a plain sequence or the pattern is not an eagerly compiled OS_Regex or PCRE2 one.
    fn seq(&self) -> Option<&seq::Seqs> {
        if self.dialect == Dialect::OsMatch || !matches!(self.engine, Engine::Linear(_)) {
            return None;
        }
        self.seq
            .get_or_init(|| seq::Seqs::new(&self.translated).map(Box::new))
            .as_deref()
    }

    /// The linear automaton, built now if it was deferred.
    #[inline]
    fn regex(&self) -> Option<Lin<'_>> {
        match &self.engine {
            Engine::Linear(re) => Some(Lin::Full(re)),
            Engine::Deferred(cell) => cell
                .get_or_init(|| build_lean(&self.translated).ok())
                .as_ref()
                .map(Lin::Lean),
            _ => None,
        }
    }

    /// Whether `hay` lacks the literal every match of this linear pattern begins with (see
    /// `required`): then it has no match.
    #[inline]
    fn lacks_required(&self, hay: &[u8]) -> bool {
        self.required
            .get_or_init(|| {
                required_prefix(&self.translated)
                    .map(|l| Box::new(memchr::memmem::Finder::new(&l).into_owned()))
            })
            .as_ref()
            .is_some_and(|f| f.find(hay).is_none())
    }

    /// The start-anchored literals that answer for this linear pattern, if it is made of them.
    #[inline]
    fn prefixes(&self) -> Option<&[LiteralAlt]> {
        if !matches!(self.engine, Engine::Linear(_) | Engine::Deferred(_)) {
            return None;
        }
        self.prefixes
            .get_or_init(|| {
                literal_alternatives(&self.translated)
                    .filter(|alts| alts.iter().all(|a| a.start))
                    .map(Vec::into_boxed_slice)
            })
            .as_deref()
    }

    /// OS_Match: literal alternatives with `^`/`$`, case-insensitive; a leading `!` negates.
    pub fn os_match(source: &str) -> Result<Pattern, PatternError> {
        Pattern::os_match_in(source, false)
    }

    fn os_match_in(source: &str, defer: bool) -> Result<Pattern, PatternError> {
        let (negate, body) = match source.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, source),
        };
        let mut alts = Vec::new();
        for alt in body.split('|') {
            let (start, rest) = match alt.strip_prefix('^') {
                Some(r) => (true, r),
                None => (false, alt),
            };
            let (end, lit) = match rest.strip_suffix('$') {
                // OSSEC only treats a trailing '$' as an anchor when something precedes it or the
                // alternative also starts with '^' ("^$" is the empty line).
                Some(r) => (true, r),
                None => (false, rest),
            };
            if lit.is_empty() && !(start && end) {
                // Empty alternative, "^" alone or "$" alone: OSSEC matches every text.
                return Ok(Pattern {
                    source: source.to_string(),
                    dialect: Dialect::OsMatch,
                    negate,
                    translated: String::new(),
                    engine: Engine::Always,
                    seq: Default::default(),
                    prefixes: Default::default(),
                    required: Default::default(),
                });
            }
            let mut s = String::new();
            if start {
                s.push('^');
            }
            push_literal(&mut s, lit);
            if end {
                s.push('$');
            }
            alts.push(s);
        }
        let translated = format!("(?i){}", alts.join("|"));
        let engine = linear(Dialect::OsMatch, source, &translated, defer)?;
        Ok(Pattern {
            source: source.to_string(),
            dialect: Dialect::OsMatch,
            negate,
            translated,
            engine,
            seq: Default::default(),
            prefixes: Default::default(),
            required: Default::default(),
        })
    }

    /// OS_Regex with OSSEC's classes and rules (see the module documentation).
    pub fn os_regex(source: &str) -> Result<Pattern, PatternError> {
        Pattern::os_regex_in(source, false)
    }

    fn os_regex_in(source: &str, defer: bool) -> Result<Pattern, PatternError> {
        let translated = translate_os_regex(source)?;
        let engine = linear(Dialect::OsRegex, source, &translated, defer)?;
        Ok(Pattern {
            source: source.to_string(),
            dialect: Dialect::OsRegex,
            negate: false,
            translated,
            engine,
            seq: Default::default(),
            prefixes: Default::default(),
            required: Default::default(),
        })
    }

    /// PCRE2, compiled as OSSEC does (caseless, byte semantics).
    pub fn pcre2(source: &str) -> Result<Pattern, PatternError> {
        Pattern::pcre2_in(source, false)
    }

    fn pcre2_in(source: &str, defer: bool) -> Result<Pattern, PatternError> {
        let t = translate_pcre2(source)?;
        let translated = format!("(?i){}", t.regex);
        let engine = if t.needs_backtracking {
            let re = fancy_regex::RegexBuilder::new(&translated)
                .backtrack_limit(BACKTRACK_LIMIT)
                .build()
                .map_err(|e| err(Dialect::Pcre2, source, e.to_string(), None))?;
            Engine::Backtrack(Box::new(re))
        } else {
            linear(Dialect::Pcre2, source, &translated, defer)?
        };
        Ok(Pattern {
            source: source.to_string(),
            dialect: Dialect::Pcre2,
            negate: false,
            translated,
            engine,
            seq: Default::default(),
            prefixes: Default::default(),
            required: Default::default(),
        })
    }

    /// The pattern as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The dialect it was compiled from.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The expression handed to the engine (for diagnostics and tests).
    pub fn translated(&self) -> &str {
        &self.translated
    }

    /// False when the pattern needs the bounded backtracking engine.
    pub fn is_linear(&self) -> bool {
        !matches!(self.engine, Engine::Backtrack(_))
    }

    /// A leading `!` in an OS_Match pattern.
    pub fn is_negated(&self) -> bool {
        self.negate
    }

    /// Whether the pattern matches anywhere in `text` (negation applied).
    pub fn is_match(&self, text: &str) -> bool {
        let m = match &self.engine {
            Engine::Always => true,
            Engine::Linear(_) | Engine::Deferred(_) => match self.prefixes() {
                Some(p) => prefix_end(p, text.as_bytes()).is_some(),
                None if self.lacks_required(text.as_bytes()) => false,
                None => self.regex().is_some_and(|re| re.is_match(text.as_bytes())),
            },
            // A pattern that exceeds its backtrack limit counts as not matching.
            Engine::Backtrack(re) => re.is_match(text).unwrap_or(false),
        };
        m != self.negate
    }

    /// The byte offset just after the leftmost match, without extracting groups. For a negated
    /// pattern that "matches" (the text does not contain it) the offset is 0.
    pub fn find_end(&self, text: &str) -> Option<usize> {
        let end = match &self.engine {
            Engine::Always => Some(0),
            Engine::Linear(_) | Engine::Deferred(_) => match self.prefixes() {
                Some(p) => prefix_end(p, text.as_bytes()),
                None if self.lacks_required(text.as_bytes()) => None,
                None => self.regex().and_then(|re| re.find_end(text.as_bytes())),
            },
            Engine::Backtrack(re) => re.find(text).ok().flatten().map(|m| m.end()),
        };
        match (self.negate, end) {
            (false, e) => e,
            (true, Some(_)) => None,
            (true, None) => Some(0),
        }
    }

    /// [`Pattern::find_end`] on bytes: decoders continue from offsets that a byte-level match may
    /// have left inside a multi-byte character. The backtracking engine needs text; there the
    /// bytes are read lossily.
    pub fn find_end_bytes(&self, hay: &[u8]) -> Option<usize> {
        if let Some(p) = self.prefixes() {
            let end = prefix_end(p, hay);
            return match (self.negate, end) {
                (false, e) => e,
                (true, Some(_)) => None,
                (true, None) => Some(0),
            };
        }
        if let Some(re) = self.regex() {
            let end = if self.lacks_required(hay) {
                None
            } else {
                re.find_end(hay)
            };
            return match (self.negate, end) {
                (false, e) => e,
                (true, Some(_)) => None,
                (true, None) => Some(0),
            };
        }
        match std::str::from_utf8(hay) {
            Ok(text) => self.find_end(text),
            Err(_) => self.find_end(&String::from_utf8_lossy(hay)),
        }
    }

    /// [`Pattern::captures`] on bytes (see [`Pattern::find_end_bytes`]); the ranges index `hay`.
    pub fn captures_bytes(&self, hay: &[u8]) -> Option<Captures> {
        let mut c = Captures::default();
        self.captures_bytes_into(hay, &mut c).then_some(c)
    }

    /// [`Pattern::captures_bytes`] into `out`, whose group list is reused where the direct
    /// matcher answers (a decoder keeps one for all its lines): whether there is a match. Without
    /// a match, `out` is left as it was.
    pub fn captures_bytes_into(&self, hay: &[u8], out: &mut Captures) -> bool {
        if let Some(s) = self.seq() {
            // The direct matcher answers unless the search gave up.
            if let Some(found) = s.captures_into(hay, out) {
                return found;
            }
        }
        match self.captures_bytes_other(hay) {
            Some(c) => {
                *out = c;
                true
            }
            None => false,
        }
    }

    /// [`Pattern::captures_bytes`] by the other engines.
    fn captures_bytes_other(&self, hay: &[u8]) -> Option<Captures> {
        if let (Some(re), false) = (self.regex(), self.negate) {
            return re.captures(hay);
        }
        match std::str::from_utf8(hay) {
            Ok(text) => self.captures(text),
            Err(_) => {
                // Lossy text can be longer than the bytes; keep the ranges inside `hay`.
                let text = String::from_utf8_lossy(hay);
                let mut c = self.captures(&text)?;
                let n = hay.len();
                c.end = c.end.min(n);
                for g in &mut c.groups {
                    *g = g.start.min(n)..g.end.min(n);
                }
                Some(c)
            }
        }
    }

    /// The match with its groups, or `None`. Only this method runs capture extraction.
    pub fn captures(&self, text: &str) -> Option<Captures> {
        if self.negate {
            return self.find_end(text).map(|end| Captures {
                end,
                groups: Vec::new(),
            });
        }
        match &self.engine {
            Engine::Always => Some(Captures {
                end: 0,
                groups: Vec::new(),
            }),
            Engine::Linear(_) | Engine::Deferred(_) => self.captures_bytes(text.as_bytes()),
            Engine::Backtrack(re) => {
                let caps = re.captures(text).ok().flatten()?;
                let end = caps.get(0).map_or(0, |m| m.end());
                let groups = caps.iter().skip(1).flatten().map(|m| m.range()).collect();
                Some(Captures { end, groups })
            }
        }
    }

    /// How many capture groups the pattern has.
    pub fn group_count(&self) -> usize {
        match &self.engine {
            Engine::Always => 0,
            Engine::Linear(_) | Engine::Deferred(_) => {
                self.regex().map_or(0, |re| re.group_count())
            }
            Engine::Backtrack(re) => re.captures_len() - 1,
        }
    }

    /// Whether every match must start at the beginning of the text (the pattern, or each of its
    /// alternatives, begins with `^`).
    pub fn is_start_anchored(&self) -> bool {
        if self.negate || !self.is_linear() {
            return false;
        }
        regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(&self.translated)
            .is_ok_and(|h| {
                h.properties()
                    .look_set_prefix()
                    .contains(regex_syntax::hir::Look::Start)
            })
    }

    /// When every match must start at the beginning of the text with one of a few literal
    /// prefixes (compared ASCII case-insensitively), those prefixes, lower-cased. Used to index
    /// decoders so that not every pattern runs on every line. `None` when there is no such set.
    pub fn anchored_prefixes(&self) -> Option<Vec<Vec<u8>>> {
        if self.negate || !self.is_linear() {
            return None;
        }
        // Extract from the case-sensitive form: the prefixes are then compared without case,
        // which accepts a superset of what the pattern accepts, as a prefilter must.
        anchored_prefixes(self.translated.strip_prefix("(?i)")?)
    }
}

fn err(dialect: Dialect, pattern: &str, message: String, offset: Option<usize>) -> PatternError {
    PatternError {
        dialect: dialect.as_str(),
        pattern: pattern.to_string(),
        message,
        offset,
    }
}

/// A linear automaton: the regex crate's, or the lean one deferred patterns get.
#[derive(Clone, Copy)]
enum Lin<'a> {
    Full(&'a regex::bytes::Regex),
    Lean(&'a regex_automata::meta::Regex),
}

impl Lin<'_> {
    #[inline]
    fn is_match(self, hay: &[u8]) -> bool {
        match self {
            Lin::Full(re) => re.is_match(hay),
            Lin::Lean(re) => re.is_match(hay),
        }
    }

    fn find_end(self, hay: &[u8]) -> Option<usize> {
        match self {
            Lin::Full(re) => re.find(hay).map(|m| m.end()),
            Lin::Lean(re) => re.find(hay).map(|m| m.end()),
        }
    }

    fn captures(self, hay: &[u8]) -> Option<Captures> {
        match self {
            Lin::Full(re) => {
                let caps = re.captures(hay)?;
                let end = caps.get(0).map_or(0, |m| m.end());
                let groups = caps.iter().skip(1).flatten().map(|m| m.range()).collect();
                Some(Captures { end, groups })
            }
            Lin::Lean(re) => {
                let mut caps = re.create_captures();
                re.captures(hay, &mut caps);
                let end = caps.get_match()?.end();
                let groups = (1..caps.group_len())
                    .filter_map(|i| caps.get_group(i))
                    .map(|s| s.range())
                    .collect();
                Some(Captures { end, groups })
            }
        }
    }

    fn group_count(self) -> usize {
        match self {
            Lin::Full(re) => re.captures_len() - 1,
            Lin::Lean(re) => re.group_info().group_len(regex_automata::PatternID::ZERO) - 1,
        }
    }
}

/// The syntax every pattern automaton is built with: patterns match bytes (a log line need not be
/// UTF-8), and classes such as `\w` and `\d` are ASCII as in OSSEC.
pub(crate) fn byte_syntax() -> regex_automata::util::syntax::Config {
    regex_automata::util::syntax::Config::new()
        .unicode(false)
        .utf8(false)
}

/// The automaton of a deferred pattern: the regex crate's engine minus the parts that trade
/// memory for speed (the full and one-pass DFAs, the literal prefilter, whose Aho-Corasick
/// automaton for a case-insensitive alternation outweighs the rest); the lazy DFA stays. A rule's
/// own pattern is searched for a yes or no, on short texts.
fn build_lean(translated: &str) -> Result<regex_automata::meta::Regex, String> {
    regex_automata::meta::Regex::builder()
        .syntax(byte_syntax())
        .configure(
            regex_automata::meta::Config::new()
                .utf8_empty(false)
                .nfa_size_limit(Some(16 << 20))
                .hybrid_cache_capacity(2 << 20)
                .dfa(false)
                .onepass(false)
                .auto_prefilter(false),
        )
        .build(translated)
        .map_err(|e| e.to_string())
}

fn build_linear(translated: &str) -> Result<regex::bytes::Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(translated)
        .unicode(false)
        .size_limit(16 << 20)
        .dfa_size_limit(8 << 20)
        .build()
}

fn linear(
    dialect: Dialect,
    source: &str,
    translated: &str,
    defer: bool,
) -> Result<Engine, PatternError> {
    if defer {
        // The syntax is checked now, as the regex crate's builder would check it, so that errors
        // still name the pattern at load time; only the automaton waits.
        return regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(translated)
            .map(|_| Engine::Deferred(Box::default()))
            .map_err(|e| {
                err(
                    dialect,
                    source,
                    format!("cannot be compiled: {}", first_line(&e.to_string())),
                    None,
                )
            });
    }
    build_linear(translated).map(Engine::Linear).map_err(|e| {
        err(
            dialect,
            source,
            format!("cannot be compiled: {}", first_line(&e.to_string())),
            None,
        )
    })
}

/// The regex crate's multi-line error message, reduced to its last line (the reason).
fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

/// Appends `lit` escaped for the regex crate.
fn push_literal(out: &mut String, lit: &str) {
    for c in lit.chars() {
        push_char(out, c);
    }
}

fn push_char(out: &mut String, c: char) {
    if c.is_ascii_punctuation() || c == ' ' {
        // Escaping every punctuation character is always valid outside a class, except '<' and
        // '>' which the regex crate reads as word-boundary assertions when escaped.
        match c {
            '<' | '>' | ' ' | '"' | '\'' | '!' | '%' | ',' | '/' | ':' | ';' | '=' | '@' | '_'
            | '`' => out.push(c),
            _ => {
                out.push('\\');
                out.push(c);
            }
        }
    } else if c.is_ascii_control() {
        out.push_str(&format!("\\x{:02X}", c as u32));
    } else {
        out.push(c);
    }
}

// ---------------------------------------------------------------------------------------------
// OS_Regex

const OS_W: &str = "[A-Za-z0-9@_\\-]";
const OS_NOT_W: &str = "[^A-Za-z0-9@_\\-]";
const OS_P: &str = "[()*+,.:;<=>?\\[\\]!\"'#%&$|{}\\-]";

fn translate_os_regex(src: &str) -> Result<String, PatternError> {
    let e = |msg: &str, off: usize| err(Dialect::OsRegex, src, msg.to_string(), Some(off));
    let mut out = String::from("(?i)");
    // The alternatives are split on '|' outside parentheses; each keeps its own '^' and '$'.
    let bytes = src.as_bytes();
    let mut alts: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    let mut depth = 0i32;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                i += 2;
                continue;
            }
            b'(' => {
                depth += 1;
                if depth > 1 {
                    return Err(e(
                        "nested parentheses are not allowed in OS_Regex (use pcre2)",
                        i,
                    ));
                }
            }
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(e("')' without '('", i));
                }
            }
            b'|' => {
                if depth != 0 {
                    return Err(e(
                        "'|' inside parentheses is not allowed in OS_Regex (use pcre2)",
                        i,
                    ));
                }
                alts.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return Err(e("'(' not closed", src.len()));
    }
    alts.push((start, src.len()));

    for (n, &(a, b)) in alts.iter().enumerate() {
        if n > 0 {
            out.push('|');
        }
        let mut alt = &src[a..b];
        let mut base = a;
        let anchored_start = alt.starts_with('^');
        if anchored_start {
            alt = &alt[1..];
            base += 1;
            out.push('^');
        }
        // A trailing '$' is an anchor unless it is escaped ("\$").
        let anchored_end = alt.ends_with('$') && !ends_with_escape(alt);
        if anchored_end {
            alt = &alt[..alt.len() - 1];
        }
        translate_os_regex_alt(src, alt, base, &mut out)?;
        if anchored_end {
            out.push('$');
        }
    }
    Ok(out)
}

/// Whether the last character of `s` is escaped by an odd run of backslashes.
fn ends_with_escape(s: &str) -> bool {
    let b = s.as_bytes();
    let mut n = 0;
    let mut i = b.len().saturating_sub(1);
    while i > 0 && b[i - 1] == b'\\' {
        n += 1;
        i -= 1;
    }
    n % 2 == 1
}

fn translate_os_regex_alt(
    src: &str,
    alt: &str,
    base: usize,
    out: &mut String,
) -> Result<(), PatternError> {
    let chars: Vec<(usize, char)> = alt.char_indices().collect();
    let mut i = 0;
    // Whether the previous token was a backslash escape (which '+' and '*' may follow).
    let mut prev_escape = false;
    while i < chars.len() {
        let (off, c) = chars[i];
        let after_escape = std::mem::take(&mut prev_escape);
        match c {
            '\\' => {
                let Some(&(_, n)) = chars.get(i + 1) else {
                    return Err(err(
                        Dialect::OsRegex,
                        src,
                        "a trailing '\\' escapes nothing".into(),
                        Some(base + off),
                    ));
                };
                let piece: &str = match n {
                    'd' => "[0-9]",
                    'D' => "[^0-9]",
                    'w' => OS_W,
                    'W' => OS_NOT_W,
                    's' => "[ ]",
                    'S' => "[^ ]",
                    'p' => OS_P,
                    '.' => "(?s:.)",
                    't' => "\\t",
                    '$' => "\\$",
                    '(' => "\\(",
                    ')' => "\\)",
                    '\\' => "\\\\",
                    '|' => "\\|",
                    '<' => "<",
                    '[' => "\\[",
                    ']' => "\\]",
                    '{' => "\\{",
                    '}' => "\\}",
                    other => {
                        return Err(err(
                            Dialect::OsRegex,
                            src,
                            format!(
                                "unknown escape '\\{other}' (OS_Regex knows \\w \\d \\s \\p \\W \\D \\S \\. \\t \\$ \\( \\) \\\\ \\| \\<)"
                            ),
                            Some(base + off),
                        ))
                    }
                };
                out.push_str(piece);
                i += 2;
                prev_escape = true;
                continue;
            }
            '+' | '*' if after_escape => {
                out.push(c);
                let _ = off;
                // OSSEC's own PCRE2 translation makes every quantifier lazy except the last one
                // of an alternative (followed only by closing parentheses): its old matcher took
                // the shortest run and only the final run to the end.
                let mut j = i + 1;
                while j < chars.len() && chars[j].1 == ')' {
                    j += 1;
                }
                if j < chars.len() {
                    out.push('?');
                }
            }
            '(' => out.push('('),
            ')' => out.push(')'),
            // Everything else is literal, including '.', '[', '?', and '+'/'*' that follow no
            // class, '^' and '$' away from the ends of an alternative.
            c => push_char(out, c),
        }
        i += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// PCRE2

struct Pcre2Translation {
    regex: String,
    needs_backtracking: bool,
}

/// The first bytes an atom can match, to decide whether a possessive quantifier on it can be made
/// plain (the quantified set and what follows are disjoint: no backtracking into it can help).
#[derive(Clone, Copy)]
struct ByteSet([u128; 2]);

impl ByteSet {
    fn empty() -> ByteSet {
        ByteSet([0, 0])
    }
    fn full() -> ByteSet {
        ByteSet([u128::MAX, u128::MAX])
    }
    fn add(&mut self, b: u8) {
        self.0[(b >> 7) as usize] |= 1u128 << (b & 127);
    }
    fn add_ci(&mut self, b: u8) {
        self.add(b.to_ascii_lowercase());
        self.add(b.to_ascii_uppercase());
    }
    fn add_range(&mut self, a: u8, b: u8) {
        for x in a..=b {
            self.add_ci(x);
        }
    }
    fn invert(&mut self) {
        self.0[0] = !self.0[0];
        self.0[1] = !self.0[1];
    }
    fn disjoint(&self, o: &ByteSet) -> bool {
        self.0[0] & o.0[0] == 0 && self.0[1] & o.0[1] == 0
    }
}

fn class_set(name: char) -> Option<ByteSet> {
    let mut s = ByteSet::empty();
    match name.to_ascii_lowercase() {
        'd' => s.add_range(b'0', b'9'),
        'w' => {
            s.add_range(b'0', b'9');
            s.add_range(b'a', b'z');
            s.add(b'_');
        }
        's' => {
            for b in [b' ', b'\t', b'\n', 0x0b, 0x0c, b'\r'] {
                s.add(b);
            }
        }
        'h' => {
            for b in [b' ', b'\t', 0xa0] {
                s.add(b);
            }
        }
        _ => return None,
    }
    if name.is_ascii_uppercase() {
        s.invert();
    }
    Some(s)
}

/// One translated atom: its regex text and, when simple, the set of bytes it can start with.
struct Atom {
    text: String,
    first: Option<ByteSet>,
    /// The atom is a single byte-class or literal (so a possessive quantifier on it is analysable).
    simple: bool,
}

struct Pcre2Parser<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    i: usize,
    backtrack: bool,
}

impl<'a> Pcre2Parser<'a> {
    fn error(&self, msg: impl Into<String>, off: usize) -> PatternError {
        err(Dialect::Pcre2, self.src, msg.into(), Some(off))
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).map(|x| x.1)
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.i + n).map(|x| x.1)
    }

    fn off(&self) -> usize {
        self.chars.get(self.i).map_or(self.src.len(), |x| x.0)
    }

    fn rest_starts_with(&self, s: &str) -> bool {
        self.src[self.off()..].starts_with(s)
    }

    /// Translates a sequence of atoms up to ')' or the end.
    fn sequence(&mut self, out: &mut String) -> Result<(), PatternError> {
        let mut pending: Option<Atom> = None;
        while let Some(c) = self.peek() {
            match c {
                ')' => break,
                '|' => {
                    self.flush(&mut pending, out);
                    out.push('|');
                    self.i += 1;
                }
                '*' | '+' | '?' | '{' => {
                    if c == '{' && !self.is_quantifier_brace() {
                        self.flush(&mut pending, out);
                        pending = Some(lit_atom('{'));
                        self.i += 1;
                        continue;
                    }
                    let Some(atom) = pending.take() else {
                        return Err(self.error(
                            format!("quantifier '{c}' does not follow anything"),
                            self.off(),
                        ));
                    };
                    let q_start = self.off();
                    let mut q = String::new();
                    if c == '{' {
                        while let Some(ch) = self.peek() {
                            q.push(ch);
                            self.i += 1;
                            if ch == '}' {
                                break;
                            }
                        }
                    } else {
                        q.push(c);
                        self.i += 1;
                    }
                    let mut text = atom.text;
                    text.push_str(&q);
                    match self.peek() {
                        Some('?') => {
                            text.push('?');
                            self.i += 1;
                        }
                        Some('+') => {
                            // Possessive: plain when nothing after it can start with what it
                            // consumes, otherwise the backtracking engine.
                            self.i += 1;
                            let follow = self.follow_set();
                            let safe = atom.simple
                                && match (atom.first, follow) {
                                    (Some(a), Some(f)) => a.disjoint(&f),
                                    _ => false,
                                };
                            if !safe {
                                self.backtrack = true;
                                text.push('+');
                            }
                        }
                        _ => {}
                    }
                    let _ = q_start;
                    out.push_str(&text);
                }
                _ => {
                    self.flush(&mut pending, out);
                    pending = Some(self.atom()?);
                }
            }
        }
        self.flush(&mut pending, out);
        Ok(())
    }

    fn flush(&self, pending: &mut Option<Atom>, out: &mut String) {
        if let Some(a) = pending.take() {
            out.push_str(&a.text);
        }
    }

    fn is_quantifier_brace(&self) -> bool {
        // {n}, {n,}, {n,m}
        let rest = &self.src[self.off()..];
        let Some(end) = rest.find('}') else {
            return false;
        };
        let inner = &rest[1..end];
        let mut parts = inner.splitn(2, ',');
        let a = parts.next().unwrap_or("");
        let b = parts.next();
        !a.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.map_or(true, |b| b.bytes().all(|c| c.is_ascii_digit()))
    }

    /// The set of bytes that may come right after the current position; `None` when unknown.
    /// The end of the pattern, ')' and '|' and '$' give the empty set (nothing to give back to).
    fn follow_set(&self) -> Option<ByteSet> {
        let c = self.peek();
        match c {
            None | Some(')') | Some('|') | Some('$') => Some(ByteSet::empty()),
            Some('\\') => {
                let n = self.peek_at(1)?;
                if let Some(s) = class_set(n) {
                    Some(s)
                } else if n.is_ascii_punctuation() {
                    let mut s = ByteSet::empty();
                    s.add(n as u8);
                    Some(s)
                } else {
                    None
                }
            }
            Some('[') | Some('(') | Some('.') | Some('*') | Some('+') | Some('?') | Some('{') => {
                None
            }
            Some(ch) if ch.is_ascii() => {
                // A following quantifier could make this literal optional.
                if matches!(self.peek_at(1), Some('*') | Some('?') | Some('{')) {
                    return None;
                }
                let mut s = ByteSet::empty();
                s.add_ci(ch as u8);
                Some(s)
            }
            _ => None,
        }
    }

    fn atom(&mut self) -> Result<Atom, PatternError> {
        let off = self.off();
        let c = self.peek().unwrap_or('\0');
        match c {
            '(' => self.group(),
            '[' => self.class(),
            '.' => {
                self.i += 1;
                let mut s = ByteSet::full();
                let mut nl = ByteSet::empty();
                nl.add(b'\n');
                s.0[0] &= !nl.0[0];
                Some(Atom {
                    text: "[^\\n]".into(),
                    first: Some(s),
                    simple: true,
                })
                .ok_or_else(|| self.error("", off))
            }
            '^' => {
                self.i += 1;
                Ok(Atom {
                    text: "^".into(),
                    first: None,
                    simple: false,
                })
            }
            '$' => {
                self.i += 1;
                Ok(Atom {
                    text: "$".into(),
                    first: None,
                    simple: false,
                })
            }
            '\\' => self.escape(false).map(|(text, first)| Atom {
                simple: first.is_some(),
                text,
                first,
            }),
            c => {
                self.i += 1;
                Ok(lit_atom(c))
            }
        }
    }

    /// An escape outside or inside a class. Returns the translated text and, for a single-byte
    /// thing, the set of bytes it matches.
    fn escape(&mut self, in_class: bool) -> Result<(String, Option<ByteSet>), PatternError> {
        let off = self.off();
        self.i += 1; // the backslash
        let Some(n) = self.peek() else {
            return Err(self.error("a trailing '\\' escapes nothing", off));
        };
        self.i += 1;
        let single = |b: u8| {
            let mut s = ByteSet::empty();
            s.add_ci(b);
            Some(s)
        };
        Ok(match n {
            'd' | 'D' | 'w' | 'W' | 's' | 'S' => {
                let text = match n {
                    'd' => "0-9",
                    'D' => "^0-9",
                    'w' => "0-9A-Za-z_",
                    'W' => "^0-9A-Za-z_",
                    's' => "\\t\\n\\x0B\\x0C\\r ",
                    _ => "^\\t\\n\\x0B\\x0C\\r ",
                };
                let t = if in_class {
                    // Negated classes cannot nest inside a class without brackets.
                    format!("[{text}]")
                } else {
                    format!("[{text}]")
                };
                (t, class_set(n))
            }
            'h' => ("[\\t \\xA0]".into(), class_set('h')),
            'H' => ("[^\\t \\xA0]".into(), class_set('H')),
            't' => ("\\t".into(), single(b'\t')),
            'n' => ("\\n".into(), single(b'\n')),
            'r' => ("\\r".into(), single(b'\r')),
            'f' => ("\\x0C".into(), single(0x0c)),
            'v' if !in_class => ("[\\n\\x0B\\x0C\\r\\x85]".into(), None),
            'e' => ("\\x1B".into(), single(0x1b)),
            'a' => ("\\x07".into(), single(0x07)),
            '0' => {
                // Octal: \0, \0n, \0nn.
                let mut v = 0u32;
                let mut k = 0;
                while k < 2 && matches!(self.peek(), Some('0'..='7')) {
                    v = v * 8 + self.peek().and_then(|c| c.to_digit(8)).unwrap_or(0);
                    self.i += 1;
                    k += 1;
                }
                (format!("\\x{v:02X}"), single(v as u8))
            }
            'x' => {
                let v = if self.peek() == Some('{') {
                    self.i += 1;
                    let start = self.off();
                    while self.peek().is_some_and(|c| c != '}') {
                        self.i += 1;
                    }
                    let hex = &self.src[start..self.off()];
                    self.i += 1;
                    u32::from_str_radix(hex, 16)
                        .map_err(|_| self.error(format!("bad hex escape '\\x{{{hex}}}'"), off))?
                } else {
                    let start = self.off();
                    let mut k = 0;
                    while k < 2 && self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                        self.i += 1;
                        k += 1;
                    }
                    let hex = &self.src[start..self.off()];
                    if hex.is_empty() {
                        0
                    } else {
                        u32::from_str_radix(hex, 16).unwrap_or(0)
                    }
                };
                if v > 0xff {
                    return Err(self.error(
                        format!("code point \\x{{{v:X}}} is above 0xFF (OSSEC compiles PCRE2 without UTF)"),
                        off,
                    ));
                }
                (format!("\\x{v:02X}"), single(v as u8))
            }
            'b' | 'B' if !in_class => (format!("\\{n}"), None),
            'b' if in_class => ("\\x08".into(), single(0x08)),
            'A' if !in_class => ("\\A".into(), None),
            'z' | 'Z' if !in_class => ("\\z".into(), None),
            'Q' => {
                let mut t = String::new();
                let mut first = None;
                while self.peek().is_some() && !self.rest_starts_with("\\E") {
                    let ch = self.peek().unwrap_or('\0');
                    if first.is_none() && ch.is_ascii() {
                        first = single(ch as u8);
                    }
                    if in_class {
                        push_class_char(&mut t, ch);
                    } else {
                        push_char(&mut t, ch);
                    }
                    self.i += 1;
                }
                if self.rest_starts_with("\\E") {
                    self.i += 2;
                }
                let simple = t.chars().count() <= 2;
                (
                    if in_class { t } else { format!("(?:{t})") },
                    if simple { first } else { None },
                )
            }
            'E' => (String::new(), None),
            '1'..='9' | 'g' | 'k' if !in_class => {
                // Backreference: only the backtracking engine can do it.
                self.backtrack = true;
                let mut t = format!("\\{n}");
                while let Some(ch) = self.peek() {
                    let more = match n {
                        '1'..='9' => ch.is_ascii_digit(),
                        _ => ch.is_ascii_alphanumeric() || "{}<>'_-".contains(ch),
                    };
                    if !more {
                        break;
                    }
                    t.push(ch);
                    self.i += 1;
                    if matches!(ch, '}' | '>' | '\'') {
                        break;
                    }
                }
                (t, None)
            }
            'K' | 'G' | 'X' | 'R' | 'C' | 'N' | 'p' | 'P' if !in_class => {
                return Err(self.error(
                    format!("'\\{n}' cannot be translated (no equivalent without PCRE2)"),
                    off,
                ))
            }
            c if c.is_ascii_alphanumeric() => {
                return Err(self.error(format!("unknown escape '\\{c}'"), off))
            }
            c => {
                let mut t = String::new();
                if in_class {
                    push_class_char(&mut t, c);
                } else {
                    push_char(&mut t, c);
                }
                let first = if c.is_ascii() { single(c as u8) } else { None };
                (t, first)
            }
        })
    }

    fn group(&mut self) -> Result<Atom, PatternError> {
        let off = self.off();
        self.i += 1; // '('
        let mut text = String::from("(");
        if self.peek() == Some('?') {
            let rest = &self.src[self.off()..];
            if rest.starts_with("?#") {
                // Comment.
                while self.peek().is_some_and(|c| c != ')') {
                    self.i += 1;
                }
                self.i += 1;
                return Ok(Atom {
                    text: String::new(),
                    first: None,
                    simple: false,
                });
            } else if rest.starts_with("?:") {
                text.push_str("?:");
                self.i += 2;
            } else if rest.starts_with("?=")
                || rest.starts_with("?!")
                || rest.starts_with("?<=")
                || rest.starts_with("?<!")
                || rest.starts_with("?>")
            {
                self.backtrack = true;
                let n = if rest.starts_with("?<") { 3 } else { 2 };
                text.push_str(&rest[..n]);
                self.i += n;
            } else if rest.starts_with("?<") || rest.starts_with("?P<") || rest.starts_with("?'") {
                // Named group.
                let skip = if rest.starts_with("?P<") { 3 } else { 2 };
                self.i += skip;
                let start = self.off();
                while self.peek().is_some_and(|c| c != '>' && c != '\'') {
                    self.i += 1;
                }
                let name = self.src[start..self.off()].to_string();
                self.i += 1;
                text.push_str(&format!("?P<{name}>"));
            } else if rest.starts_with("?|") {
                return Err(self.error("branch reset groups '(?|' cannot be translated", off));
            } else {
                // Inline flags: (?i) (?-i) (?i:...) and friends.
                self.i += 1;
                let start = self.off();
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '-' || c == '^')
                {
                    self.i += 1;
                }
                let flags = self.src[start..self.off()].to_string();
                if let Some(bad) = flags.chars().find(|c| !"imsxU-".contains(*c)) {
                    return Err(
                        self.error(format!("inline option '{bad}' cannot be translated"), off)
                    );
                }
                match self.peek() {
                    Some(')') => {
                        self.i += 1;
                        return Ok(Atom {
                            text: format!("(?{flags})"),
                            first: None,
                            simple: false,
                        });
                    }
                    Some(':') => {
                        self.i += 1;
                        text.push_str(&format!("?{flags}:"));
                    }
                    _ => return Err(self.error("malformed group option", off)),
                }
            }
        }
        self.sequence(&mut text)?;
        if self.peek() != Some(')') {
            return Err(self.error("'(' not closed", off));
        }
        self.i += 1;
        text.push(')');
        Ok(Atom {
            text,
            first: None,
            simple: false,
        })
    }

    fn class(&mut self) -> Result<Atom, PatternError> {
        let off = self.off();
        self.i += 1; // '['
        let mut text = String::from("[");
        let mut set = ByteSet::empty();
        let mut exact = true;
        let negated = self.peek() == Some('^');
        if negated {
            text.push('^');
            self.i += 1;
        }
        let mut first_item = true;
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error("'[' not closed", off));
            };
            if c == ']' && !first_item {
                self.i += 1;
                break;
            }
            first_item = false;
            if c == '[' && self.rest_starts_with("[:") {
                let rest = &self.src[self.off()..];
                if let Some(end) = rest.find(":]") {
                    let name = &rest[2..end];
                    let known = [
                        "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower",
                        "print", "punct", "space", "upper", "word", "xdigit",
                    ];
                    let bare = name.trim_start_matches('^');
                    if !known.contains(&bare) {
                        return Err(self.error(format!("unknown POSIX class '[:{name}:]'"), off));
                    }
                    text.push_str(&rest[..end + 2]);
                    self.i += rest[..end + 2].chars().count();
                    exact = false;
                    continue;
                }
            }
            // One item: a char (maybe escaped), maybe the start of a range.
            let (item_text, item_byte) = self.class_char()?;
            if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.i += 1;
                let (hi_text, hi_byte) = self.class_char()?;
                match (item_byte, hi_byte) {
                    (Some(a), Some(b)) if a <= b => {
                        set.add_range(a, b);
                        text.push_str(&item_text);
                        text.push('-');
                        text.push_str(&hi_text);
                    }
                    _ => {
                        return Err(self.error("bad range in character class", off));
                    }
                }
            } else {
                match item_byte {
                    Some(b) => set.add_ci(b),
                    None => exact = false,
                }
                text.push_str(&item_text);
            }
        }
        text.push(']');
        if negated {
            set.invert();
        }
        Ok(Atom {
            text,
            first: if exact { Some(set) } else { None },
            simple: true,
        })
    }

    /// One character of a class, escaped for the regex crate, with its byte value when it is one.
    fn class_char(&mut self) -> Result<(String, Option<u8>), PatternError> {
        let c = self.peek().unwrap_or('\0');
        if c == '\\' {
            let save = self.i;
            let (t, set) = self.escape(true)?;
            // Single bytes come back as one-element sets; classes (\d ...) as bracketed text.
            let n = self.src[self.chars[save].0..self.off()].to_string();
            let byte = match set {
                Some(_) if t.starts_with('[') => None,
                Some(_) => single_byte_of(&n),
                None => None,
            };
            return Ok((t, byte));
        }
        self.i += 1;
        let mut t = String::new();
        push_class_char(&mut t, c);
        Ok((t, if c.is_ascii() { Some(c as u8) } else { None }))
    }
}

/// The byte a single-byte escape such as `\x41`, `\t` or `\]` stands for.
fn single_byte_of(esc: &str) -> Option<u8> {
    let body = esc.strip_prefix('\\')?;
    let mut it = body.chars();
    let c = it.next()?;
    match c {
        't' => Some(b'\t'),
        'n' => Some(b'\n'),
        'r' => Some(b'\r'),
        'f' => Some(0x0c),
        'e' => Some(0x1b),
        'a' => Some(0x07),
        'b' => Some(0x08),
        'x' => {
            let hex: String = body[1..]
                .chars()
                .filter(|c| c.is_ascii_hexdigit())
                .collect();
            u8::from_str_radix(if hex.is_empty() { "0" } else { &hex }, 16).ok()
        }
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Some(c as u8),
        _ => None,
    }
}

fn lit_atom(c: char) -> Atom {
    let mut t = String::new();
    push_char(&mut t, c);
    let first = if c.is_ascii() {
        let mut s = ByteSet::empty();
        s.add_ci(c as u8);
        Some(s)
    } else {
        None
    };
    Atom {
        simple: first.is_some(),
        text: t,
        first,
    }
}

/// A character inside a regex-crate class: escape everything that could be class syntax there
/// (`[`, `]`, `\`, `^`, `-`, and `&`, `~` which double up into set operations).
fn push_class_char(out: &mut String, c: char) {
    match c {
        '[' | ']' | '\\' | '^' | '-' | '&' | '~' => {
            out.push('\\');
            out.push(c);
        }
        c if c.is_ascii_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
        c => out.push(c),
    }
}

fn translate_pcre2(src: &str) -> Result<Pcre2Translation, PatternError> {
    if src.is_empty() {
        return Err(err(Dialect::Pcre2, src, "empty pattern".into(), None));
    }
    let mut p = Pcre2Parser {
        src,
        chars: src.char_indices().collect(),
        i: 0,
        backtrack: false,
    };
    let mut out = String::new();
    p.sequence(&mut out)?;
    if p.peek() == Some(')') {
        return Err(p.error("')' without '('", p.off()));
    }
    Ok(Pcre2Translation {
        regex: out,
        needs_backtracking: p.backtrack,
    })
}

// ---------------------------------------------------------------------------------------------
// Literal prefixes for indexing

/// The syntax tree of a translated expression as the byte-oriented engines run it (no Unicode
/// classes, any byte may match). None when it does not parse.
fn byte_hir(translated: &str) -> Option<regex_syntax::hir::Hir> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(translated)
        .ok()
}

fn anchored_prefixes(translated: &str) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    use regex_syntax::hir::{HirKind, Look};
    let hir = byte_hir(translated)?;
    // Every alternative must start with '^'.
    let alts: Vec<&regex_syntax::hir::Hir> = match hir.kind() {
        HirKind::Alternation(a) => a.iter().collect(),
        _ => vec![&hir],
    };
    let mut out = Vec::new();
    for alt in alts {
        let parts: Vec<&regex_syntax::hir::Hir> = match alt.kind() {
            HirKind::Concat(c) => c.iter().collect(),
            _ => vec![alt],
        };
        let first = parts.first()?;
        if !matches!(first.kind(), HirKind::Look(Look::Start)) {
            return None;
        }
        let rest =
            regex_syntax::hir::Hir::concat(parts[1..].iter().map(|h| (*h).clone()).collect());
        let mut ex = Extractor::new();
        ex.kind(ExtractKind::Prefix).limit_total(256);
        let seq = ex.extract(&rest);
        let lits = seq.literals()?;
        for l in lits {
            out.push(l.as_bytes().to_ascii_lowercase());
        }
    }
    if out.iter().any(|l| l.is_empty()) {
        return None;
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// What every match of `translated` begins with, when that is two bytes or more without letters
/// (whose case the pattern may ignore).
fn required_prefix(translated: &str) -> Option<Vec<u8>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = byte_hir(translated)?;
    let mut ex = Extractor::new();
    ex.kind(ExtractKind::Prefix).limit_total(64);
    let seq = ex.extract(&hir);
    // Every match begins with one of the literals, so with what they all begin with.
    let (first, rest) = seq.literals()?.split_first()?;
    let mut common = first.as_bytes();
    for l in rest {
        let n = common
            .iter()
            .zip(l.as_bytes())
            .take_while(|(a, b)| a == b)
            .count();
        common = &common[..n];
    }
    let letters = common.iter().any(u8::is_ascii_alphabetic);
    (common.len() >= 2 && !letters).then(|| common.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Patterns that are literals

/// One alternative of a pattern that is a choice of literals compared ignoring ASCII case (many
/// prematches and `<match>`/`<pcre2>` elements): a literal, maybe anchored at the start and/or
/// the end of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LiteralAlt {
    /// The literal; letters stand for both cases.
    text: Vec<u8>,
    /// Anchored at the start of the text (`^`).
    start: bool,
    /// Anchored at the end of the text (`$`).
    end: bool,
}

impl LiteralAlt {
    /// Whether this anchored alternative holds for `text` (ASCII case ignored). Unanchored
    /// alternatives are searched for, not tested here.
    fn anchored_match(&self, text: &[u8]) -> bool {
        let n = self.text.len();
        match (self.start, self.end) {
            (true, true) => text.eq_ignore_ascii_case(&self.text),
            (true, false) => text
                .get(..n)
                .is_some_and(|t| t.eq_ignore_ascii_case(&self.text)),
            (false, true) => text
                .len()
                .checked_sub(n)
                .is_some_and(|k| text[k..].eq_ignore_ascii_case(&self.text)),
            (false, false) => false,
        }
    }
}

/// The end of the leftmost-first match of start-anchored literal alternatives: the first one,
/// in the pattern's order, that holds.
#[inline]
fn prefix_end(alts: &[LiteralAlt], hay: &[u8]) -> Option<usize> {
    alts.iter()
        .find(|a| a.anchored_match(hay))
        .map(|a| a.text.len())
}

/// Most alternatives a pattern may expand to and still count as literals.
const MAX_LITERAL_ALTS: usize = 64;

/// Most bytes a class (other than a letter's two cases) may hold and still count as literals.
const MAX_CLASS_ALTS: usize = 4;

/// One position of an expanded alternative.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tok {
    Start,
    End,
    /// A byte; letters (lower-cased) stand for both cases.
    Byte(u8),
}

/// Expands a translated expression into the literal alternatives it means exactly, or `None` when
/// it means anything else: a letter compared with its case (`(?-i)`), a class other than a
/// letter's two cases, a repetition, an anchor elsewhere than at an end, or too many alternatives.
fn literal_alternatives(translated: &str) -> Option<Vec<LiteralAlt>> {
    let hir = byte_hir(translated)?;
    let mut out = Vec::new();
    for toks in expand(&hir)? {
        let (start, rest) = match toks.split_first() {
            Some((Tok::Start, r)) => (true, r),
            _ => (false, &toks[..]),
        };
        let (end, mid) = match rest.split_last() {
            Some((Tok::End, m)) => (true, m),
            _ => (false, rest),
        };
        let text = mid
            .iter()
            .map(|t| match t {
                Tok::Byte(b) => Some(*b),
                _ => None,
            })
            .collect::<Option<Vec<u8>>>()?;
        if text.is_empty() && !(start && end) {
            // Matches everywhere (or at every start or end): not worth a literal search.
            return None;
        }
        out.push(LiteralAlt { text, start, end });
    }
    (!out.is_empty()).then_some(out)
}

fn expand(hir: &regex_syntax::hir::Hir) -> Option<Vec<Vec<Tok>>> {
    use regex_syntax::hir::{Class, HirKind, Look};
    Some(match hir.kind() {
        HirKind::Empty => vec![Vec::new()],
        HirKind::Literal(l) => {
            // A letter here is compared with its case: not what a case-blind search does.
            if l.0.iter().any(u8::is_ascii_alphabetic) {
                return None;
            }
            vec![l.0.iter().map(|&b| Tok::Byte(b)).collect()]
        }
        HirKind::Class(Class::Bytes(c)) => {
            let r = c.ranges();
            let one = |i: usize| r.get(i).filter(|x| x.start() == x.end()).map(|x| x.start());
            match (r.len(), one(0), one(1)) {
                (1, Some(b), _) if !b.is_ascii_alphabetic() => vec![vec![Tok::Byte(b)]],
                (2, Some(u), Some(l)) if u.is_ascii_uppercase() && l == u.to_ascii_lowercase() => {
                    vec![vec![Tok::Byte(l)]]
                }
                _ => class_alternatives(r.iter().flat_map(|x| x.start()..=x.end()))?,
            }
        }
        // Alternatives of single ASCII characters are merged into a class of this kind
        // (`^2|^3` becomes `^[2-3]`).
        HirKind::Class(Class::Unicode(c)) => class_alternatives(
            c.iter()
                .flat_map(|x| u32::from(x.start())..=u32::from(x.end()))
                .map(|c| u8::try_from(c).ok().filter(u8::is_ascii)),
        )?,
        HirKind::Look(Look::Start) => vec![vec![Tok::Start]],
        HirKind::Look(Look::End) => vec![vec![Tok::End]],
        HirKind::Capture(c) => expand(&c.sub)?,
        HirKind::Concat(parts) => {
            let mut acc: Vec<Vec<Tok>> = vec![Vec::new()];
            for p in parts {
                let next = expand(p)?;
                if acc.len() * next.len() > MAX_LITERAL_ALTS {
                    return None;
                }
                acc = acc
                    .iter()
                    .flat_map(|a| {
                        next.iter().map(move |n| {
                            let mut v = a.clone();
                            v.extend_from_slice(n);
                            v
                        })
                    })
                    .collect();
            }
            acc
        }
        HirKind::Alternation(alts) => {
            let mut acc = Vec::new();
            for a in alts {
                acc.extend(expand(a)?);
                if acc.len() > MAX_LITERAL_ALTS {
                    return None;
                }
            }
            acc
        }
        _ => return None,
    })
}

/// A class of a few bytes, none of them a letter (whose case would matter), as one alternative
/// each; `None` for anything else (a `None` byte stands for one that is not ASCII).
fn class_alternatives<B: Into<Option<u8>>>(
    bytes: impl Iterator<Item = B>,
) -> Option<Vec<Vec<Tok>>> {
    let mut out = Vec::new();
    for b in bytes {
        let b = b.into().filter(|b| !b.is_ascii_alphabetic())?;
        if out.len() == MAX_CLASS_ALTS {
            return None;
        }
        out.push(vec![Tok::Byte(b)]);
    }
    Some(out)
}

#[cfg(test)]
mod tests;
