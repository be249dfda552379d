//! Correlation state: the memory of earlier alerts that `if_matched_sid`, `if_matched_group`,
//! `frequency`/`timeframe` and the `same_*` options search, plus the first-time-seen (`if_fts`) and
//! `ignore`/`check_if_ignored` sets.
//!
//! OSSEC keeps every alerted event in one global list of `memory_size` entries; an event leaves the
//! per-rule lists when it leaves that global list. We do the same with a ring of compact records
//! (sequence numbered), so memory is bounded by [`Limits::max_events`] however many distinct source
//! addresses an attacker uses: past the bound the oldest record is dropped and counted.
//!
//! The search walks a list from the newest record back, exactly as OSSEC's `Search_LastSids` does:
//! a record older than the timeframe, or one already consumed by a correlation rule of the same or a
//! higher level, ends the search; records failing a `same_*` test are skipped; the rule fires when
//! `frequency + 1` earlier records qualify, so with the current event `frequency + 2` events in all
//! (OSSEC's documented quirk).

use std::collections::VecDeque;
use std::hash::BuildHasher;

/// Bounds on correlation memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Alerted events remembered for correlation (OSSEC's `memory_size`; 8192, the size that
    /// reproduces OSSEC 4.3's alert counts on the benchmark corpus).
    pub max_events: usize,
    /// Bytes of an event's log kept for an alert's related events.
    pub max_log_bytes: usize,
    /// Distinct first-time-seen keys and ignore keys remembered, each.
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events: 8192,
            max_log_bytes: 2048,
            max_keys: 65536,
        }
    }
}

/// Counters a metrics endpoint or `logtest -q` can show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records dropped from correlation memory because it was full.
    pub events_evicted: u64,
    /// First-time-seen keys not remembered because the set was full (the event counts as seen).
    pub fts_dropped: u64,
    /// Ignore keys not remembered because the set was full.
    pub ignore_dropped: u64,
}

/// The `same_*` / `different_*` options of a correlation rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SameFlags {
    pub source_ip: bool,
    pub source_port: bool,
    pub dst_port: bool,
    pub user: bool,
    pub id: bool,
    pub location: bool,
    pub different_url: bool,
    pub different_srcip: bool,
}

impl SameFlags {
    /// Whether any option is set (OSSEC rejects them without an `if_matched_*`).
    pub fn any(&self) -> bool {
        self.source_ip
            || self.source_port
            || self.dst_port
            || self.user
            || self.id
            || self.location
            || self.different_url
            || self.different_srcip
    }
}

/// The fields of an event that correlation compares, borrowed from the event: a [`Record`] copies
/// them when the event is remembered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keys<'a> {
    pub srcip: Option<&'a str>,
    pub srcport: Option<&'a str>,
    pub dstport: Option<&'a str>,
    pub dstuser: Option<&'a str>,
    pub id: Option<&'a str>,
    pub url: Option<&'a str>,
    /// OSSEC compares the host name (the location when the log has no syslog header).
    pub host: &'a str,
    /// The decoder category, compared by `if_matched_regex` searches.
    pub category: u8,
}

/// What a correlation rule needs from its definition to search.
#[derive(Debug, Clone, Copy)]
pub struct Search {
    pub level: u8,
    pub frequency: u32,
    pub timeframe: u64,
    pub same: SameFlags,
}

/// One remembered event. Its log, key fields and host share one allocation: thousands of records
/// are held, and a box per field cost more in allocator overhead than the text itself.
#[derive(Debug)]
struct Record {
    time: u64,
    /// The level of the highest correlation rule that consumed this record (OSSEC's `matched`).
    matched: u8,
    category: u8,
    /// Bit `k`: part `k` (a key field) is present.
    present: u8,
    /// Where each part of `text` ends: the log, the key fields ([`Record::SRCIP`] ...), the host.
    ends: [u32; 8],
    text: Box<str>,
}

impl Record {
    const LOG: usize = 0;
    const SRCIP: usize = 1;
    const SRCPORT: usize = 2;
    const DSTPORT: usize = 3;
    const DSTUSER: usize = 4;
    const ID: usize = 5;
    const URL: usize = 6;
    const HOST: usize = 7;

    fn new(time: u64, matched: u8, keys: &Keys, log: &str) -> Record {
        let fields = [
            keys.srcip,
            keys.srcport,
            keys.dstport,
            keys.dstuser,
            keys.id,
            keys.url,
        ];
        let len =
            log.len() + fields.iter().flatten().map(|f| f.len()).sum::<usize>() + keys.host.len();
        let mut text = String::with_capacity(len);
        let mut ends = [0u32; 8];
        let mut present = 0u8;
        // Offsets are u32: a part past 4 GiB is cut off at that point (the log is bounded by
        // `max_log_bytes`, the fields by the line).
        let mut push = |text: &mut String, k: usize, part: &str| {
            if u32::try_from(text.len() + part.len()).is_ok() {
                text.push_str(part);
            }
            ends[k] = text.len() as u32;
        };
        push(&mut text, Record::LOG, log);
        for (i, f) in fields.iter().enumerate() {
            if let Some(f) = f {
                present |= 1 << (i + 1);
                push(&mut text, i + 1, f);
            } else {
                push(&mut text, i + 1, "");
            }
        }
        push(&mut text, Record::HOST, keys.host);
        Record {
            time,
            matched,
            category: keys.category,
            present,
            ends,
            text: text.into_boxed_str(),
        }
    }

    fn part(&self, k: usize) -> &str {
        let start = if k == 0 { 0 } else { self.ends[k - 1] as usize };
        self.text.get(start..self.ends[k] as usize).unwrap_or("")
    }

    fn key(&self, k: usize) -> Option<&str> {
        (self.present & (1 << k) != 0).then(|| self.part(k))
    }

    fn log(&self) -> &str {
        self.part(Record::LOG)
    }
}

/// An extra test on a record's log and category (for `if_matched_regex`).
pub type RecordFilter<'a> = dyn Fn(&str, u8) -> bool + 'a;

/// Which list an event is remembered in: one per `if_matched_sid` target rule, one per
/// `if_matched_group` rule.
pub type ListId = usize;

/// A list's reference to a record: its sequence number, copies of its time and `matched` level,
/// and a fingerprint of its source address (0 when it has none), so that a search reads only the
/// records it may count.
#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    time: u64,
    /// One more than the number of the list's previous entry with the same address fingerprint
    /// (0: none, or no address).
    prev: u64,
    srcip: u32,
    matched: u8,
}

/// The highest rule level.
const MAX_LEVEL: usize = 16;

/// The entries of one list, oldest first, numbered from when the list began: the entry at
/// position `i` of `entries` is number `popped + i`. A `same_source_ip` search follows the chain
/// of its address's entries (newest first) instead of reading every entry.
#[derive(Debug, Default)]
struct List {
    entries: VecDeque<Entry>,
    popped: u64,
    /// By address fingerprint, the number of the newest entry with it.
    newest: crate::hash::Map<u32, u64>,
    /// `marks[level]`: one more than the number of the newest entry whose `matched` is at least
    /// `level` (0: none). Levels only rise, so this is where OSSEC's walk would stop.
    marks: [u64; MAX_LEVEL + 1],
}

impl List {
    fn push(&mut self, mut e: Entry) {
        let number = self.popped + self.entries.len() as u64;
        if e.srcip != 0 {
            e.prev = self.newest.insert(e.srcip, number).map_or(0, |n| n + 1);
        }
        let matched = e.matched;
        self.entries.push_back(e);
        self.mark(number, matched);
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            // The oldest entry is the newest with its fingerprint only when it is the last one.
            if e.srcip != 0 && self.newest.get(&e.srcip) == Some(&self.popped) {
                self.newest.remove(&e.srcip);
            }
            self.popped += 1;
        }
    }

    /// Notes that entry `number` now has level `matched`.
    fn mark(&mut self, number: u64, matched: u8) {
        let top = usize::from(matched).min(MAX_LEVEL);
        for m in &mut self.marks[1..=top] {
            *m = (*m).max(number + 1);
        }
    }
}

/// The mutable correlation memory of one engine.
#[derive(Debug)]
pub struct State {
    limits: Limits,
    /// Records by sequence number; `records[0]` has sequence `base`.
    records: VecDeque<Record>,
    base: u64,
    lists: Vec<List>,
    /// Keys the source address fingerprints of the list entries.
    fingerprints: crate::hash::Keyed,
    /// One past the newest sequence number whose record is older than the record before it (0:
    /// none). While such a pair is held, record times are not in sequence order and a search reads
    /// each entry's time instead of bisecting its list.
    unordered: u64,
    fts: crate::hash::Set<Box<str>>,
    ignored: crate::hash::Set<Box<str>>,
    counters: Counters,
    max_timeframe: u64,
}

/// A successful search: the logs of the earlier events (newest first, at most 11 as OSSEC keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub related: Vec<String>,
}

/// How many earlier events' logs an alert from a correlation rule carries at most.
const MAX_RELATED: usize = 11;

impl State {
    /// Empty memory with `lists` lists.
    pub fn new(limits: Limits, lists: usize) -> Self {
        State {
            limits,
            records: VecDeque::new(),
            base: 0,
            lists: (0..lists).map(|_| List::default()).collect(),
            fingerprints: crate::hash::Keyed::default(),
            unordered: 0,
            fts: crate::hash::Set::default(),
            ignored: crate::hash::Set::default(),
            counters: Counters::default(),
            max_timeframe: u64::MAX,
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Records currently held (never more than `max_events`).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Searches `list` for the current event (`keys`, at time `now`) as OSSEC does. On success the
    /// consumed records are marked with the rule's level, and the caller must pass `matched = level`
    /// when it remembers the current event.
    /// `filter` (for `if_matched_regex`) must also accept a record's log and category.
    ///
    /// The walk from the newest entry back stops where OSSEC's does, without reading every
    /// record: records are in time order (unless a clock went back), so the entries older than
    /// the timeframe are found by bisecting the list; each entry carries its record's time and
    /// consumed level; and a `same_source_ip` search reads only the entries with its address's
    /// fingerprint, through the chain that links each to the one before it.
    pub fn search(
        &mut self,
        list: ListId,
        keys: &Keys,
        now: u64,
        rule: &Search,
        filter: Option<&RecordFilter>,
    ) -> Option<Found> {
        let State {
            lists,
            records,
            base,
            fingerprints,
            unordered,
            ..
        } = self;
        let base = *base;
        let list = lists.get_mut(list)?;
        // Drop entries of records that left the ring.
        while list.entries.front().is_some_and(|e| e.seq < base) {
            list.pop_front();
        }
        let l = &list.entries;
        let newest = l.back()?.seq;
        // With no source address, no record has the same one: OSSEC's walk finds nothing either,
        // and a failed search changes nothing.
        let srcip = if rule.same.source_ip {
            Some(fingerprint(fingerprints, keys.srcip?))
        } else {
            None
        };
        let too_old = |e: &Entry| now.saturating_sub(e.time) > rule.timeframe;
        let ordered = *unordered <= base;
        let mut count: u32 = 0;
        // The records whose logs the alert will carry (at most 11, newest first): their logs
        // are copied only if the search succeeds, which most searches do not.
        let mut related = [0usize; MAX_RELATED];
        let mut n_related = 0;
        let at = |seq: u64| -> Option<usize> { usize::try_from(seq.checked_sub(base)?).ok() };
        // Reaching an entry older than the timeframe ends the walk as running out of entries does:
        // with ordered records, the walk covers the entries from the first one inside the
        // timeframe on (found by bisecting the list, whose entries carry their records' times).
        let from = if ordered {
            l.partition_point(too_old)
        } else {
            0
        };
        // With ordered records and an address to follow, the walk reads only the entries of its
        // address's chain: it ends below the newest entry already consumed at this level or
        // higher (where the full walk would stop), or below `from`.
        let mut chain = match srcip {
            Some(ip) if ordered => {
                let floor = (list.popped + from as u64)
                    .max(list.marks[usize::from(rule.level).min(MAX_LEVEL)]);
                let first = list.newest.get(&ip).copied();
                Some((first, floor))
            }
            _ => None,
        };
        let mut walk = l.range(from..).rev();
        loop {
            let e = match &mut chain {
                Some((next, floor)) => {
                    let n = (*next).filter(|n| *n >= *floor)?;
                    let e = l.get(usize::try_from(n - list.popped).ok()?)?;
                    *next = e.prev.checked_sub(1);
                    e
                }
                None => walk.next()?,
            };
            if e.matched >= rule.level {
                return None;
            }
            if !ordered && too_old(e) {
                return None;
            }
            if srcip.is_some_and(|ip| ip != e.srcip) {
                continue;
            }
            let i = at(e.seq)?;
            let rec = records.get(i)?;
            if !same_ok(&rule.same, rec, keys) {
                continue;
            }
            if filter.is_some_and(|f| !f(rec.log(), rec.category)) {
                continue;
            }
            if n_related < MAX_RELATED {
                related[n_related] = i;
                n_related += 1;
            }
            if count < rule.frequency {
                count += 1;
                continue;
            }
            let consumed = e.seq;
            for seq in [consumed, newest] {
                if let Some(rec) = at(seq).and_then(|i| records.get_mut(i)) {
                    rec.matched = rule.level;
                    // The record's entries in every list it is in (once each, unless a caller
                    // named a list twice).
                    for l in lists.iter_mut() {
                        let held = |e: Option<&Entry>| e.is_some_and(|e| e.seq <= seq);
                        if !held(l.entries.front()) || l.entries.back().is_some_and(|e| e.seq < seq)
                        {
                            continue;
                        }
                        let k = l.entries.partition_point(|e| e.seq < seq);
                        let first = l.popped + k as u64;
                        let mut last = None;
                        let its = l.entries.range_mut(k..).take_while(|e| e.seq == seq);
                        for (number, e) in (first..).zip(its) {
                            e.matched = rule.level;
                            last = Some(number);
                        }
                        if let Some(n) = last {
                            l.mark(n, rule.level);
                        }
                    }
                }
            }
            let related = related[..n_related]
                .iter()
                .filter_map(|&i| records.get(i))
                .map(|r| r.log().to_string())
                .collect();
            return Some(Found { related });
        }
    }

    /// Remembers an alerted event in `lists` (the lists of the rule that fired).
    pub fn remember(&mut self, lists: &[ListId], keys: &Keys, log: &str, now: u64, matched: u8) {
        if self.limits.max_events == 0 {
            return;
        }
        let seq = self.base + self.records.len() as u64;
        let mut cut = log.len().min(self.limits.max_log_bytes);
        while !log.is_char_boundary(cut) {
            cut -= 1;
        }
        if self.records.back().is_some_and(|r| now < r.time) {
            self.unordered = seq + 1;
        }
        self.records
            .push_back(Record::new(now, matched, keys, &log[..cut]));
        let srcip = keys
            .srcip
            .map_or(0, |ip| fingerprint(&self.fingerprints, ip));
        for &l in lists {
            if let Some(list) = self.lists.get_mut(l) {
                list.push(Entry {
                    seq,
                    time: now,
                    prev: 0,
                    srcip,
                    matched,
                });
                // Keep list memory bounded too: a list never holds more than the ring.
                while list.entries.len() > self.limits.max_events + 1 {
                    list.pop_front();
                }
            }
        }
        // OSSEC's OS_AddEvent: past the bound (its first event is not counted, hence + 1), drop
        // the 10 oldest, and then any older than the longest timeframe of the rule set.
        if self.records.len() > self.limits.max_events + 1 {
            let mut dropped = 0;
            while self.records.len() > 1
                && (dropped < 10
                    || self
                        .records
                        .front()
                        .is_some_and(|r| now.saturating_sub(r.time) > self.max_timeframe))
            {
                self.records.pop_front();
                self.base += 1;
                self.counters.events_evicted += 1;
                dropped += 1;
            }
        }
    }

    /// Takes over `old`'s remembered events, first-time-seen and ignore keys and counters (a
    /// reload keeps what still applies). `lists[i]` names the old list whose contents new list `i`
    /// inherits; `None` starts it empty. Each old list is inherited at most once.
    pub fn inherit(&mut self, old: State, lists: &[Option<ListId>]) {
        let State {
            records,
            base,
            lists: mut old_lists,
            fingerprints,
            unordered,
            fts,
            ignored,
            counters,
            ..
        } = old;
        self.records = records;
        self.base = base;
        // The inherited entries' fingerprints were made with the old keys.
        self.fingerprints = fingerprints;
        self.unordered = unordered;
        self.fts = fts;
        self.ignored = ignored;
        self.counters = counters;
        for (slot, from) in self.lists.iter_mut().zip(lists) {
            if let Some(l) = from.and_then(|o| old_lists.get_mut(o)) {
                *slot = std::mem::take(l);
            }
        }
        // A smaller bound in the new configuration applies at once, oldest first.
        while self.records.len() > self.limits.max_events {
            self.records.pop_front();
            self.base += 1;
            self.counters.events_evicted += 1;
        }
        if self.fts.len() > self.limits.max_keys {
            self.fts.clear();
        }
        if self.ignored.len() > self.limits.max_keys {
            self.ignored.clear();
        }
    }

    /// The longest timeframe of the rule set: records older than that are dropped first when
    /// memory is full.
    pub fn set_max_timeframe(&mut self, secs: u64) {
        self.max_timeframe = secs;
    }

    /// First time seen: true (and remembered) when `key` was not seen before.
    pub fn first_time(&mut self, key: &str) -> bool {
        if self.fts.contains(key) {
            return false;
        }
        if self.fts.len() >= self.limits.max_keys {
            self.counters.fts_dropped += 1;
            return false;
        }
        self.fts.insert(key.into());
        true
    }

    /// Adds an `ignore` key.
    pub fn add_ignore(&mut self, key: &str) {
        if self.ignored.len() >= self.limits.max_keys {
            self.counters.ignore_dropped += 1;
            return;
        }
        self.ignored.insert(key.into());
    }

    /// Whether a `check_if_ignored` key was added by an `ignore`.
    pub fn is_ignored(&self, key: &str) -> bool {
        self.ignored.contains(key)
    }
}

/// A source address's fingerprint in list entries: never 0, which stands for no address.
fn fingerprint(keys: &crate::hash::Keyed, srcip: &str) -> u32 {
    keys.hash_one(srcip) as u32 | 1
}

fn same_ok(same: &SameFlags, old: &Record, cur: &Keys) -> bool {
    fn eq(a: Option<&str>, b: &Option<&str>) -> bool {
        matches!((a, b), (Some(a), Some(b)) if a == *b)
    }
    fn differ(a: Option<&str>, b: &Option<&str>) -> bool {
        matches!((a, b), (Some(a), Some(b)) if a != *b)
    }
    if same.id && !eq(old.key(Record::ID), &cur.id) {
        return false;
    }
    if same.source_ip && !eq(old.key(Record::SRCIP), &cur.srcip) {
        return false;
    }
    if same.source_port && !eq(old.key(Record::SRCPORT), &cur.srcport) {
        return false;
    }
    if same.dst_port && !eq(old.key(Record::DSTPORT), &cur.dstport) {
        return false;
    }
    if same.user && !eq(old.key(Record::DSTUSER), &cur.dstuser) {
        return false;
    }
    if same.location && old.part(Record::HOST) != cur.host {
        return false;
    }
    if same.different_url && !differ(old.key(Record::URL), &cur.url) {
        return false;
    }
    if same.different_srcip && !differ(old.key(Record::SRCIP), &cur.srcip) {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ip: &str) -> Keys<'_> {
        Keys {
            srcip: Some(ip),
            host: "h",
            ..Keys::default()
        }
    }

    fn rule(frequency: u32, timeframe: u64) -> Search {
        Search {
            level: 10,
            frequency,
            timeframe,
            same: SameFlags {
                source_ip: true,
                ..SameFlags::default()
            },
        }
    }

    /// Feeds `n` earlier alerts of the parent and asks whether the correlation rule fires on the next.
    fn fires_after(n: usize, frequency: u32) -> bool {
        let mut s = State::new(Limits::default(), 1);
        for _ in 0..n {
            s.remember(&[0], &keys("10.0.0.1"), "x", 100, 0);
        }
        s.search(0, &keys("10.0.0.1"), 100, &rule(frequency, 60), None)
            .is_some()
    }

    #[test]
    fn frequency_fires_at_setting_plus_two_events() {
        // frequency=6: six earlier are not enough, seven earlier plus this one (8 = 6 + 2) fire.
        assert!(!fires_after(6, 6));
        assert!(fires_after(7, 6));
        // frequency 0 (if_matched_sid alone) needs one earlier event.
        assert!(!fires_after(0, 0));
        assert!(fires_after(1, 0));
    }

    #[test]
    fn records_outside_the_timeframe_end_the_search() {
        let mut s = State::new(Limits::default(), 1);
        for t in [0, 10, 50, 51, 52] {
            s.remember(&[0], &keys("1.1.1.1"), "x", t, 0);
        }
        // At t=60 with timeframe 10, only 50..52 are inside: 3 records.
        assert!(s
            .search(0, &keys("1.1.1.1"), 60, &rule(2, 10), None)
            .is_some());
        assert!(s
            .search(0, &keys("1.1.1.1"), 61, &rule(2, 10), None)
            .is_none());
        // Exactly at the timeframe's edge still counts (OSSEC uses `>`).
        let mut s = State::new(Limits::default(), 1);
        s.remember(&[0], &keys("1.1.1.1"), "x", 0, 0);
        assert!(s
            .search(0, &keys("1.1.1.1"), 10, &rule(0, 10), None)
            .is_some());
        assert!(s
            .search(0, &keys("1.1.1.1"), 11, &rule(0, 10), None)
            .is_none());
    }

    #[test]
    fn same_source_ip_skips_other_addresses() {
        let mut s = State::new(Limits::default(), 1);
        for i in 0..20 {
            let ip = if i % 2 == 0 { "1.1.1.1" } else { "2.2.2.2" };
            s.remember(&[0], &keys(ip), "x", 0, 0);
        }
        assert!(s
            .search(0, &keys("3.3.3.3"), 0, &rule(0, 60), None)
            .is_none());
        assert!(s
            .search(0, &keys("1.1.1.1"), 0, &rule(8, 60), None)
            .is_some());
        // A missing source address never matches.
        let none = Keys::default();
        assert!(s.search(0, &none, 0, &rule(0, 60), None).is_none());
    }

    #[test]
    fn consumed_records_are_not_counted_twice() {
        let mut s = State::new(Limits::default(), 1);
        for _ in 0..3 {
            s.remember(&[0], &keys("1.1.1.1"), "x", 0, 0);
        }
        let r = rule(1, 60);
        let found = s.search(0, &keys("1.1.1.1"), 0, &r, None).unwrap();
        assert_eq!(found.related.len(), 2);
        // The newest record is marked: the next search stops there at once.
        assert!(s.search(0, &keys("1.1.1.1"), 0, &r, None).is_none());
        // Two fresh records after the mark: fires again.
        s.remember(&[0], &keys("1.1.1.1"), "x", 0, 0);
        assert!(s.search(0, &keys("1.1.1.1"), 0, &r, None).is_none());
        s.remember(&[0], &keys("1.1.1.1"), "x", 0, 0);
        assert!(s.search(0, &keys("1.1.1.1"), 0, &r, None).is_some());
        // A lower-level rule cannot reuse records consumed by a higher one.
        let low = Search { level: 5, ..r };
        s.remember(&[0], &keys("1.1.1.1"), "x", 0, 0);
        assert!(s.search(0, &keys("1.1.1.1"), 0, &low, None).is_none());
    }

    #[test]
    fn memory_is_bounded_and_eviction_counted() {
        let limits = Limits {
            max_events: 100,
            ..Limits::default()
        };
        let mut s = State::new(limits, 1);
        for i in 0..10_000u32 {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            s.remember(&[0], &keys(&ip), &"y".repeat(5000), 0, 0);
        }
        // Between max - 9 and max + 1 records, as OSSEC keeps them.
        assert!((91..=101).contains(&s.len()), "{}", s.len());
        assert_eq!(s.counters().events_evicted, 10_000 - s.len() as u64);
        assert!(s.lists[0].entries.len() <= 101);
        assert!(s.lists[0].newest.len() <= 101);
        assert!(s.records.iter().all(|r| r.log().len() <= 2048));
        // Evicted records are gone from the search too.
        assert!(s
            .search(0, &keys("10.0.0.5"), 0, &rule(0, 60), None)
            .is_none());
    }

    /// OSSEC's walk as written: every entry's record read, newest first.
    fn walk_every_record(
        s: &mut State,
        list: ListId,
        keys: &Keys,
        now: u64,
        rule: &Search,
    ) -> Option<Found> {
        let base = s.base;
        let l = &s.lists[list];
        let seqs: Vec<u64> = l
            .entries
            .iter()
            .map(|e| e.seq)
            .filter(|&q| q >= base)
            .collect();
        let newest = *seqs.last()?;
        let mut count = 0;
        let mut related = Vec::new();
        for &seq in seqs.iter().rev() {
            let rec = s.records.get((seq - base) as usize)?;
            if now.saturating_sub(rec.time) > rule.timeframe || rec.matched >= rule.level {
                return None;
            }
            if !same_ok(&rule.same, rec, keys) {
                continue;
            }
            if related.len() < MAX_RELATED {
                related.push(rec.log().to_string());
            }
            if count < rule.frequency {
                count += 1;
                continue;
            }
            for q in [seq, newest] {
                s.records[(q - base) as usize].matched = rule.level;
            }
            return Some(Found { related });
        }
        None
    }

    #[test]
    fn the_search_finds_what_walking_every_record_finds() {
        search_agrees_with_walking_every_record(true);
    }

    /// With time never going back, address searches follow the address chains.
    #[test]
    fn chained_searches_find_what_walking_every_record_finds() {
        search_agrees_with_walking_every_record(false);
    }

    /// Random alerts (a few addresses and users, clocks that sometimes go back when `back`,
    /// correlation levels 0-16) into two memories; one searched as implemented, one by reading
    /// every record.
    fn search_agrees_with_walking_every_record(back: bool) {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let ips = [
            "10.0.0.1",
            "10.0.0.2",
            "10.0.0.3",
            "192.0.2.9",
            "192.0.2.10",
            "::1",
        ];
        let users = ["root", "admin"];
        let limits = Limits {
            max_events: 300,
            ..Limits::default()
        };
        let (mut fast, mut slow) = (State::new(limits, 3), State::new(limits, 3));
        let mut now = 1_000u64;
        let mut found = 0;
        for step in 0..20_000 {
            // Mostly forward, sometimes back.
            now = match next(20) {
                0 if back => now.saturating_sub(next(30)),
                1..=9 => now,
                _ => now + next(3),
            };
            let log = format!("line {step}");
            let k = Keys {
                srcip: (next(8) != 0).then(|| ips[next(ips.len() as u64) as usize]),
                dstuser: Some(users[next(2) as usize]),
                host: "h",
                ..Keys::default()
            };
            let list = next(3) as usize;
            let rule = Search {
                level: next(17) as u8,
                frequency: next(4) as u32,
                timeframe: next(40),
                same: SameFlags {
                    source_ip: next(3) != 0,
                    user: next(4) == 0,
                    different_srcip: next(10) == 0,
                    ..SameFlags::default()
                },
            };
            let a = fast.search(list, &k, now, &rule, None);
            let b = walk_every_record(&mut slow, list, &k, now, &rule);
            assert_eq!(a, b, "step {step}");
            let matched = if a.is_some() { rule.level } else { 0 };
            found += usize::from(a.is_some());
            // Now and then a list named twice.
            let other = if next(50) == 0 { list } else { (list + 1) % 3 };
            let lists = [list, other];
            let feeds = &lists[..1 + next(2) as usize];
            fast.remember(feeds, &k, &log, now, matched);
            slow.remember(feeds, &k, &log, now, matched);
        }
        let levels = |s: &State| s.records.iter().map(|r| r.matched).collect::<Vec<_>>();
        assert_eq!(levels(&fast), levels(&slow));
        assert!(found > 1_000, "{found}");
    }

    #[test]
    fn first_time_seen_and_ignore_sets_are_bounded() {
        let limits = Limits {
            max_keys: 2,
            ..Limits::default()
        };
        let mut s = State::new(limits, 0);
        assert!(s.first_time("a"));
        assert!(!s.first_time("a"));
        assert!(s.first_time("b"));
        assert!(!s.first_time("c"));
        assert_eq!(s.counters().fts_dropped, 1);
        s.add_ignore("k");
        assert!(s.is_ignored("k"));
        assert!(!s.is_ignored("j"));
    }
}
