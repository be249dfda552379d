//! A small matcher for the pattern shapes decoders use most: a plain sequence of literal text,
//! byte classes, repeated byte classes (`\S+`, `\d*?`, `.+?` ...), capturing groups and `^`/`$`,
//! or a choice between such sequences.
//!
//! The regex crate extracts captures with a general backtracker or PikeVM over its NFA; for a
//! sequence that is several times the cost of walking the sequence directly. This matcher is
//! compiled from the same translated expression the regex crate runs (so both dialects share it)
//! and follows the same leftmost-first rules: start positions are tried left to right and, at a
//! start, choices are tried in priority order (greedy repetitions longest first, lazy ones
//! shortest first), backtracking to the latest choice on failure. It gives the same match and
//! captures as the regex crate; the differential tests below compare them.
//!
//! Two things keep it cheap and linear:
//! - a greedy repetition that nothing after it can start with (`\S+` before a space) never needs
//!   to give bytes back, so it leaves no choice behind;
//! - each search has a step budget linear in the haystack length. A search that exhausts it (a
//!   pattern and text that make backtracking explode) gives up, and the caller runs the regex
//!   crate, which is linear in all cases.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use regex_syntax::hir::{Class, Hir, HirKind, Look};

use super::Captures;

/// Most capture groups a sequence may have (OSSEC decoders use at most a dozen).
const MAX_GROUPS: usize = 16;
/// Searches allowed to give up before a pattern stops using this matcher.
const GIVE_UP_LIMIT: u32 = 64;
/// Most repetitions that can leave a choice behind (one frame each on the backtracking stack).
const MAX_CHOICES: usize = 24;

/// A set of bytes, as a table: one load per test in the inner loops.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Set([bool; 256]);

impl Set {
    const EMPTY: Set = Set([false; 256]);

    #[inline]
    fn has(&self, b: u8) -> bool {
        self.0[b as usize]
    }

    fn add(&mut self, b: u8) {
        self.0[b as usize] = true;
    }

    fn union(&mut self, o: &Set) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a |= b;
        }
    }

    fn disjoint(&self, o: &Set) -> bool {
        self.0.iter().zip(o.0).all(|(a, b)| !(a & b))
    }

    fn len(&self) -> usize {
        self.0.iter().filter(|&&b| b).count()
    }

    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|&b| self.has(b))
    }
}

#[derive(Clone)]
enum Tok {
    /// Literal bytes: text byte `h` matches `lit[i]` when `h | mask[i] == lit[i]` (a mask of 0x20
    /// folds the case of an ASCII letter, whose `lit` byte is then lower case).
    Lit { lit: Box<[u8]>, mask: Box<[u8]> },
    /// One byte of a set (an index into [`Seq::sets`]).
    Class(u16),
    /// `min..=max` bytes of a set; `choice` is false when giving bytes back can never help.
    /// `next` is what the rest must start with, when known: a choice whose run ends before
    /// another byte is skipped without trying the rest.
    Rep {
        set: u16,
        min: usize,
        max: usize,
        greedy: bool,
        choice: bool,
        next: Option<u16>,
    },
    /// Start or end of capture group `n` (slot `2n` or `2n + 1`).
    Slot(usize),
    /// `^`: the start of the text.
    Start,
    /// `$`: the end of the text.
    End,
}

/// A choice left by a repetition: the repetition started at `base` and now takes `count` bytes.
/// Positions are `u32` (searches are for texts below 4 GiB): the frames and slots a search
/// clears are half the size.
#[derive(Clone, Copy, Default)]
struct Frame {
    tok: u32,
    base: u32,
    count: u32,
}

/// Where a match may start.
#[derive(Clone)]
enum Starts {
    /// Only at 0 (the pattern begins with `^`).
    Zero,
    /// At this byte, or at the end of the text.
    Byte(u8),
    /// At a byte of the set, or at the end of the text.
    First(u16),
    /// Anywhere.
    Any,
}

/// A compiled sequence.
pub(super) struct Seq {
    toks: Box<[Tok]>,
    /// The byte sets the pieces refer to, each once.
    sets: Box<[Set]>,
    /// The capture groups the sequence holds, by their number in the whole pattern, ascending
    /// (an alternative of a choice holds only its own).
    groups: Box<[usize]>,
    starts: Starts,
    /// When the pattern begins with an unbounded repetition of this set (at least one byte): a
    /// search that fails from inside a run of the set fails from the rest of the run too.
    lead: Option<u16>,
    /// Searches that ran out of budget. Past [`GIVE_UP_LIMIT`] the pattern is left to the regex
    /// crate: a pattern whose searches keep exploding would pay for both engines on every line.
    gave_up: AtomicU32,
}

impl Clone for Seq {
    fn clone(&self) -> Seq {
        Seq {
            toks: self.toks.clone(),
            sets: self.sets.clone(),
            groups: self.groups.clone(),
            starts: self.starts.clone(),
            lead: self.lead,
            gave_up: AtomicU32::new(self.gave_up.load(Ordering::Relaxed)),
        }
    }
}

/// Most alternatives a choice of sequences may have.
const MAX_ALTERNATIVES: usize = 8;

/// A compiled pattern: one sequence, or a choice between sequences (`^from (\S+): |^from (\S+) `,
/// as several decoders write theirs).
#[derive(Clone)]
pub(super) struct Seqs {
    alts: Box<[Seq]>,
}

impl Seqs {
    /// Compiles the regex crate's expression `translated` (byte semantics, no Unicode), or `None`
    /// when it is not a sequence or a choice of sequences of the supported pieces.
    pub(super) fn new(translated: &str) -> Option<Seqs> {
        let hir = super::byte_hir(translated)?;
        let alts = alternatives(&hir)?
            .iter()
            .map(Seq::from_hir)
            .collect::<Option<Vec<Seq>>>()?;
        Some(Seqs {
            alts: alts.into_boxed_slice(),
        })
    }

    /// The leftmost-first match in `hay` with its groups: `Some(None)` when there is none, `None`
    /// when a search gave up (the caller then asks the regex crate).
    ///
    /// For a choice, the regex crate's match starts at the first position where some
    /// alternative matches, and is the first such alternative's: that is, of each alternative's
    /// own leftmost-first match, the one starting first, ties going to the earlier alternative.
    pub(super) fn captures(&self, hay: &[u8]) -> Option<Option<Captures>> {
        let mut best: Option<(usize, Captures)> = None;
        for alt in self.alts.iter() {
            let mut groups = Vec::new();
            if let Some((start, end)) = alt.captures(hay, &mut groups)? {
                let c = Captures { end, groups };
                if best.as_ref().map_or(true, |(b, _)| start < *b) {
                    let done = start == 0;
                    best = Some((start, c));
                    if done {
                        // Nothing starts earlier; later alternatives lose ties.
                        break;
                    }
                }
            }
        }
        Some(best.map(|(_, c)| c))
    }

    /// [`Seqs::captures`] into `out`, whose group list is reused when there is one sequence:
    /// whether there is a match, or `None` when a search gave up.
    pub(super) fn captures_into(&self, hay: &[u8], out: &mut Captures) -> Option<bool> {
        if let [one] = &*self.alts {
            let found = one.captures(hay, &mut out.groups)?;
            if let Some((_, end)) = found {
                out.end = end;
            }
            return Some(found.is_some());
        }
        let found = self.captures(hay)?;
        let matched = found.is_some();
        if let Some(c) = found {
            *out = c;
        }
        Some(matched)
    }
}

/// The alternatives of `hir` as sequences, in priority order: itself when it has no choice; the
/// branches of a choice, whole or with the pieces around it (which regex-syntax lifts out of
/// branches that begin alike) copied into each. `None` when a choice sits elsewhere or after
/// a repetition, whose choices would then interleave with the branches'.
fn alternatives(hir: &Hir) -> Option<Vec<Hir>> {
    let out = match hir.kind() {
        HirKind::Alternation(alts) => alts.to_vec(),
        HirKind::Concat(parts) => {
            let mut choices = parts
                .iter()
                .enumerate()
                .filter(|(_, p)| matches!(p.kind(), HirKind::Alternation(_)));
            match (choices.next(), choices.next()) {
                (None, _) => vec![hir.clone()],
                (Some((k, choice)), None) => {
                    let fixed = |h: &Hir| {
                        matches!(
                            h.kind(),
                            HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_)
                        )
                    };
                    if !parts[..k].iter().all(fixed) {
                        return None;
                    }
                    let HirKind::Alternation(alts) = choice.kind() else {
                        return None;
                    };
                    alts.iter()
                        .map(|a| {
                            let mut v = parts[..k].to_vec();
                            v.push(a.clone());
                            v.extend_from_slice(&parts[k + 1..]);
                            Hir::concat(v)
                        })
                        .collect()
                }
                _ => return None,
            }
        }
        _ => vec![hir.clone()],
    };
    (out.len() <= MAX_ALTERNATIVES).then_some(out)
}

/// What the follow-set walk found after a position of the sequence.
struct Follow {
    /// The bytes the rest can start with.
    set: Set,
    /// The rest can match without consuming a byte (it reaches the end of the sequence).
    nullable: bool,
    /// The rest contains `^` before its first byte (position-dependent: assume nothing).
    start: bool,
}

impl Seq {
    /// Compiles one sequence, or `None` when it is not a plain sequence of the supported pieces.
    fn from_hir(hir: &Hir) -> Option<Seq> {
        let mut b = Builder {
            toks: Vec::new(),
            sets: Vec::new(),
            groups: Vec::new(),
        };
        b.flatten(hir)?;
        let (mut groups, mut sets) = (b.groups, b.sets);
        groups.sort_unstable();
        groups.dedup();
        let mut toks = merge_literals(b.toks);
        for i in 0..toks.len() {
            let f = follow(&toks[i + 1..], &sets);
            if let Tok::Rep {
                set,
                greedy,
                choice,
                next,
                ..
            } = &mut toks[i]
            {
                if *greedy && !f.start && (f.nullable || f.set.disjoint(&sets[*set as usize])) {
                    // Nothing after it starts with one of its bytes (or the rest matches empty,
                    // so the longest run succeeds at once): shorter runs can only fail.
                    *choice = false;
                }
                if !f.start && !f.nullable {
                    // The rest needs a byte of `f.set`, or the end of the text for a `$`.
                    *next = intern(&mut sets, f.set);
                }
            }
        }
        let choices = toks
            .iter()
            .filter(|t| matches!(t, Tok::Rep { choice: true, .. }))
            .count();
        if choices > MAX_CHOICES {
            return None;
        }
        let f = follow(&toks, &sets);
        let leading = toks.iter().find(|t| !matches!(t, Tok::Slot(_)));
        let starts = match leading {
            Some(Tok::Start) => Starts::Zero,
            _ if f.start || f.nullable => Starts::Any,
            _ if f.set.len() == 1 => match f.set.bytes().next() {
                Some(b) => Starts::Byte(b),
                None => Starts::Any,
            },
            _ => match intern(&mut sets, f.set) {
                Some(i) => Starts::First(i),
                None => Starts::Any,
            },
        };
        let lead = match leading {
            Some(Tok::Rep {
                set,
                min,
                max: usize::MAX,
                ..
            }) if *min >= 1 => Some(*set),
            _ => None,
        };
        Some(Seq {
            toks: toks.into_boxed_slice(),
            sets: sets.into_boxed_slice(),
            groups: groups.into_boxed_slice(),
            starts,
            lead,
            gave_up: AtomicU32::new(0),
        })
    }

    /// The leftmost-first match in `hay`, with where it starts and ends, its groups replacing
    /// those in `groups`: `Some(None)` when there is none, `None` when the search gave up (the
    /// caller then asks the regex crate).
    fn captures(
        &self,
        hay: &[u8],
        groups: &mut Vec<Range<usize>>,
    ) -> Option<Option<(usize, usize)>> {
        if self.gave_up.load(Ordering::Relaxed) >= GIVE_UP_LIMIT {
            return None;
        }
        let found = self.search(hay, groups);
        if found.is_none() {
            self.gave_up.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    fn search(&self, hay: &[u8], groups: &mut Vec<Range<usize>>) -> Option<Option<(usize, usize)>> {
        // Texts of 4 GiB or more are left to the regex crate.
        u32::try_from(hay.len()).ok()?;
        let mut slots = [0u32; 2 * MAX_GROUPS + 2];
        let mut frames = [Frame::default(); MAX_CHOICES];
        // Linear in the text. Charged per start position, per choice taken back and per byte a
        // repetition reads; the pieces run between two of those are at most the sequence.
        let mut budget = (hay.len() + 1) * (self.toks.len() + 4) * 2;
        let mut at = 0;
        loop {
            // The next start position.
            match &self.starts {
                Starts::Zero if at > 0 => return Some(None),
                Starts::Byte(b) => {
                    at = match hay.get(at..) {
                        Some(rest) => memchr::memchr(*b, rest).map_or(hay.len(), |i| at + i),
                        None => at,
                    };
                }
                Starts::First(i) => {
                    let set = &self.sets[*i as usize];
                    while at < hay.len() && !set.has(hay[at]) {
                        at += 1;
                    }
                }
                _ => {}
            }
            if at > hay.len() {
                return Some(None);
            }
            if let Some(end) = self.attempt(hay, at, &mut slots, &mut frames, &mut budget)? {
                groups.clear();
                groups.extend(
                    self.groups
                        .iter()
                        .map(|&g| slots[2 * g] as usize..slots[2 * g + 1] as usize),
                );
                return Some(Some((at, end)));
            }
            match self.lead.map(|i| &self.sets[i as usize]) {
                Some(set) if at < hay.len() && set.has(hay[at]) => {
                    while at < hay.len() && set.has(hay[at]) {
                        at += 1;
                    }
                }
                _ => at += 1,
            }
        }
    }

    /// A match starting exactly at `start`: its end, or `Some(None)` when there is none, `None`
    /// when the budget ran out.
    fn attempt(
        &self,
        hay: &[u8],
        start: usize,
        slots: &mut [u32],
        frames: &mut [Frame; MAX_CHOICES],
        budget: &mut usize,
    ) -> Option<Option<usize>> {
        let toks = &self.toks;
        let n = hay.len();
        let mut sp = 0;
        let mut pc = 0;
        let mut pos = start;
        *budget = budget.checked_sub(1)?;
        loop {
            // Forward until the sequence ends (a match) or a piece fails.
            let ok = match toks.get(pc) {
                None => return Some(Some(pos)),
                Some(tok) => match tok {
                    Tok::Lit { lit, mask } => {
                        let ok = hay.get(pos..pos + lit.len()).is_some_and(|h| {
                            h.iter()
                                .zip(lit.iter().zip(mask.iter()))
                                .all(|(&h, (&l, &m))| h | m == l)
                        });
                        if ok {
                            pos += lit.len();
                        }
                        ok
                    }
                    Tok::Class(i) => {
                        let ok = pos < n && self.sets[*i as usize].has(hay[pos]);
                        pos += ok as usize;
                        ok
                    }
                    Tok::Rep {
                        set,
                        min,
                        max,
                        greedy,
                        choice,
                        ..
                    } => {
                        let (min, max) = (*min, *max);
                        let set = &self.sets[*set as usize];
                        if *greedy {
                            let limit = n.min(pos.saturating_add(max));
                            let run = hay.get(pos..limit).unwrap_or_default();
                            let count = run.iter().position(|&b| !set.has(b)).unwrap_or(run.len());
                            *budget = budget.checked_sub(count)?;
                            let e = pos + count;
                            if count < min {
                                false
                            } else {
                                if *choice && count > min {
                                    *frames.get_mut(sp)? = Frame {
                                        tok: pc as u32,
                                        base: pos as u32,
                                        count: count as u32,
                                    };
                                    sp += 1;
                                }
                                pos = e;
                                true
                            }
                        } else {
                            let ok =
                                pos + min <= n && hay[pos..pos + min].iter().all(|&b| set.has(b));
                            *budget = budget.checked_sub(min)?;
                            if ok {
                                if max > min {
                                    *frames.get_mut(sp)? = Frame {
                                        tok: pc as u32,
                                        base: pos as u32,
                                        count: min as u32,
                                    };
                                    sp += 1;
                                }
                                pos += min;
                            }
                            ok
                        }
                    }
                    Tok::Slot(s) => {
                        slots[*s] = pos as u32;
                        true
                    }
                    Tok::Start => pos == 0,
                    Tok::End => pos == n,
                },
            };
            if ok {
                pc += 1;
                continue;
            }
            // Back to the latest choice that has another option. Slots need no restoring: the
            // pieces after the choice set theirs again on the way forward, the ones before it
            // have not changed.
            loop {
                if sp == 0 {
                    return Some(None);
                }
                *budget = budget.checked_sub(1)?;
                let f = &mut frames[sp - 1];
                let Tok::Rep {
                    set,
                    min,
                    max,
                    greedy,
                    next: follow,
                    ..
                } = &toks[f.tok as usize]
                else {
                    sp -= 1;
                    continue;
                };
                let set = &self.sets[*set as usize];
                let follow = follow.map(|i| &self.sets[i as usize]);
                // Whether the rest can start at `at` (else that choice would fail at once).
                let viable = |at: usize| match (follow, hay.get(at)) {
                    (Some(fs), Some(&b)) => fs.has(b),
                    _ => true,
                };
                let base = f.base as usize;
                let next = if *greedy {
                    // Give bytes back, one or more.
                    let mut c = f.count as usize;
                    loop {
                        if c <= *min {
                            break None;
                        }
                        c -= 1;
                        *budget = budget.checked_sub(1)?;
                        if viable(base + c) {
                            break Some(c);
                        }
                    }
                } else {
                    // Take one more byte, or more: the first byte after which the rest can
                    // start, within the run of the set.
                    let from = base + f.count as usize;
                    let limit = n.min(base.saturating_add(*max));
                    let run = hay.get(from..limit).unwrap_or_default();
                    let mut taken = None;
                    let mut read = 0;
                    for &b in run {
                        if !set.has(b) {
                            break;
                        }
                        read += 1;
                        if viable(from + read) {
                            taken = Some(read);
                            break;
                        }
                    }
                    *budget = budget.checked_sub(read)?;
                    taken.map(|k| f.count as usize + k)
                };
                match next {
                    Some(c) => {
                        f.count = c as u32;
                        pos = base + c;
                        pc = f.tok as usize + 1;
                        if *greedy && c == *min || !*greedy && c == *max {
                            sp -= 1;
                        }
                        break;
                    }
                    None => sp -= 1,
                }
            }
        }
    }
}

/// The pieces and sets of a sequence being compiled.
struct Builder {
    toks: Vec<Tok>,
    sets: Vec<Set>,
    groups: Vec<usize>,
}

/// The index of `set` in `sets`, added if new; `None` past the index range.
fn intern(sets: &mut Vec<Set>, set: Set) -> Option<u16> {
    let i = match sets.iter().position(|s| *s == set) {
        Some(i) => i,
        None => {
            sets.push(set);
            sets.len() - 1
        }
    };
    u16::try_from(i).ok()
}

impl Builder {
    /// Appends the pieces of `hir`; `None` when a piece is not supported.
    fn flatten(&mut self, hir: &Hir) -> Option<()> {
        let toks = &mut self.toks;
        match hir.kind() {
            HirKind::Empty => {}
            HirKind::Literal(lit) => toks.push(Tok::Lit {
                lit: lit.0.clone(),
                mask: vec![0; lit.0.len()].into_boxed_slice(),
            }),
            HirKind::Class(c) => {
                let set = class_set(c)?;
                let t = single(set, &mut self.sets)?;
                toks.push(t);
            }
            HirKind::Look(Look::Start) => toks.push(Tok::Start),
            HirKind::Look(Look::End) => toks.push(Tok::End),
            HirKind::Look(_) => return None,
            HirKind::Repetition(r) => {
                let set = match r.sub.kind() {
                    HirKind::Class(c) => class_set(c)?,
                    HirKind::Literal(lit) if lit.0.len() == 1 => {
                        let mut s = Set::EMPTY;
                        s.add(lit.0[0]);
                        s
                    }
                    _ => return None,
                };
                let min = usize::try_from(r.min).ok()?;
                let max = match r.max {
                    Some(m) => usize::try_from(m).ok()?,
                    None => usize::MAX,
                };
                let set = intern(&mut self.sets, set)?;
                toks.push(Tok::Rep {
                    set,
                    min,
                    max,
                    greedy: r.greedy,
                    choice: true,
                    next: None,
                });
            }
            HirKind::Capture(c) => {
                let g = usize::try_from(c.index).ok()?;
                if g == 0 || g > MAX_GROUPS {
                    return None;
                }
                self.groups.push(g);
                toks.push(Tok::Slot(2 * g));
                self.flatten(&c.sub)?;
                self.toks.push(Tok::Slot(2 * g + 1));
            }
            HirKind::Concat(parts) => {
                for p in parts {
                    self.flatten(p)?;
                }
            }
            HirKind::Alternation(_) => return None,
        }
        Some(())
    }
}

fn class_set(c: &Class) -> Option<Set> {
    let mut s = Set::EMPTY;
    match c {
        Class::Bytes(b) => {
            for r in b.ranges() {
                for x in r.start()..=r.end() {
                    s.add(x);
                }
            }
        }
        Class::Unicode(u) => {
            for r in u.ranges() {
                let (a, b) = (u8::try_from(r.start()).ok()?, u8::try_from(r.end()).ok()?);
                if b > 0x7f {
                    return None;
                }
                for x in a..=b {
                    s.add(x);
                }
            }
        }
    }
    Some(s)
}

/// A one-byte piece: a literal when the set is one byte or one ASCII letter in both cases.
fn single(set: Set, sets: &mut Vec<Set>) -> Option<Tok> {
    let lit = |b: u8, m: u8| Tok::Lit {
        lit: Box::new([b]),
        mask: Box::new([m]),
    };
    match set.len() {
        1 => {
            if let Some(b) = set.bytes().next() {
                return Some(lit(b, 0));
            }
        }
        2 => {
            let mut it = set.bytes();
            if let (Some(a), Some(b)) = (it.next(), it.next()) {
                if a.is_ascii_uppercase() && b == a.to_ascii_lowercase() {
                    return Some(lit(b, 0x20));
                }
            }
        }
        _ => {}
    }
    intern(sets, set).map(Tok::Class)
}

/// Joins runs of one-byte literals into one literal.
fn merge_literals(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out: Vec<Tok> = Vec::with_capacity(toks.len());
    for t in toks {
        if let (Some(Tok::Lit { lit: l0, mask: m0 }), Tok::Lit { lit, mask }) = (out.last_mut(), &t)
        {
            let mut l = l0.to_vec();
            l.extend_from_slice(lit);
            let mut m = m0.to_vec();
            m.extend_from_slice(mask);
            *l0 = l.into_boxed_slice();
            *m0 = m.into_boxed_slice();
            continue;
        }
        out.push(t);
    }
    out
}

/// The bytes `toks` can start with.
fn follow(toks: &[Tok], sets: &[Set]) -> Follow {
    let mut set = Set::EMPTY;
    for t in toks {
        match t {
            Tok::Slot(_) => {}
            Tok::Lit { lit, mask } => {
                if let (Some(&l), Some(&m)) = (lit.first(), mask.first()) {
                    set.add(l);
                    if m != 0 {
                        set.add(l.to_ascii_uppercase());
                    }
                }
                return Follow {
                    set,
                    nullable: false,
                    start: false,
                };
            }
            Tok::Class(s) => {
                set.union(&sets[*s as usize]);
                return Follow {
                    set,
                    nullable: false,
                    start: false,
                };
            }
            Tok::Rep { set: s, min, .. } => {
                set.union(&sets[*s as usize]);
                if *min > 0 {
                    return Follow {
                        set,
                        nullable: false,
                        start: false,
                    };
                }
            }
            // Matches only at the end of the text, where there is no byte to start with.
            Tok::End => {
                return Follow {
                    set,
                    nullable: false,
                    start: false,
                }
            }
            Tok::Start => {
                return Follow {
                    set,
                    nullable: false,
                    start: true,
                }
            }
        }
    }
    Follow {
        set,
        nullable: true,
        start: false,
    }
}

#[cfg(test)]
#[path = "seq_tests.rs"]
mod tests;
