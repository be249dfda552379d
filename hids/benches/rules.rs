//! Benchmark: events per second through pre-decoding, decoding and rules on one core, with every
//! alert formatted as JSON and written to /dev/null, plus peak RSS and the alert count per rule id
//! (compared with OSSEC's, when a reference file is given).
//!
//! Run through `tests/bench/rules.sh`, which makes the corpus and the rule set. Arguments:
//! `CORPUS DECODER_FILE RULES_DIR_OR_FILE... [--order FILE] [--reference FILE] [--memory N]
//! [--out FILE]` (`--out`: the alerts' JSON goes to FILE instead of /dev/null, to compare the
//! output of two builds).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use hids::decode::{predecode, DecodeCache, DecoderSet};
use hids::event::{Event, LineFlags, LogFormat};
use hids::rules::correlate::Limits;
use hids::rules::matcher::Category;
use hids::rules::{Engine, Fts, Input, LoadOptions, RuleSet};
use hids::sources::lines::{set_text, Line, LineSplitter};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time this process has used, in seconds (user + system): the events per CPU-second figure
/// does not move when other work shares the core, as wall-clock time does.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start at ") ".
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    // --timed-only: no decoding-only pass first (an instruction count then covers only the timed
    // pass; decoders' deferred patterns are built during it instead).
    let timed_only = args.iter().any(|a| a == "--timed-only");
    args.retain(|a| a != "--timed-only");
    let mut reference = None;
    let mut order = None;
    let mut limits = Limits::default();
    let mut out = String::from("/dev/null");
    while let Some(i) = args
        .iter()
        .position(|a| a == "--reference" || a == "--order" || a == "--memory" || a == "--out")
    {
        let v = args.remove(i + 1);
        match args.remove(i).as_str() {
            "--reference" => reference = Some(v),
            "--order" => order = Some(v),
            "--out" => out = v,
            _ => limits.max_events = v.parse().expect("--memory N"),
        }
    }
    if args.len() < 3 {
        eprintln!(
            "usage: rules CORPUS DECODERS RULES... [--order FILE] [--reference FILE] [--out FILE] [--memory N] [--timed-only]"
        );
        std::process::exit(2);
    }
    let corpus = PathBuf::from(&args[0]);
    let decoders = DecoderSet::load(&[PathBuf::from(&args[1])]).expect("decoders load");
    let mut rule_paths: Vec<PathBuf> = args[2..].iter().map(PathBuf::from).collect();
    if let Some(o) = order {
        // A directory plus OSSEC's include list: load the listed files in that order.
        let dir = rule_paths.remove(0);
        let text = std::fs::read_to_string(o).expect("order file");
        rule_paths = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| dir.join(l.trim()))
            .collect();
    }
    let opts = LoadOptions {
        decoder_names: Some(decoders.reported_names()),
        lists: Vec::new(),
    };
    let rss_decoders = rss_kib();
    let load_start = Instant::now();
    let rules = match RuleSet::load(&rule_paths, &opts) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            for d in &e.0 {
                eprintln!("{d}");
            }
            std::process::exit(1);
        }
    };
    let load_secs = load_start.elapsed().as_secs_f64();
    let rss_rules = rss_kib();
    let fts: Vec<Fts> = decoders
        .decoders()
        .iter()
        .map(|d| Fts::parse(&d.fts.join(",")))
        .collect();
    let open = || std::io::BufReader::new(std::fs::File::open(&corpus).expect("corpus"));

    // Decoding alone first, to show what the rules add.
    let mut cache = DecodeCache::default();
    let start = Instant::now();
    let mut decoded_lines = 0u64;
    for line in open().lines().take(if timed_only { 0 } else { usize::MAX }) {
        let line = line.expect("read");
        let pre = predecode(&line, LogFormat::Syslog);
        let (d, _) = decoders.decode_full(&pre, &mut cache);
        decoded_lines += u64::from(d.decoder.is_some());
    }
    let decode_secs = start.elapsed().as_secs_f64();

    // OSSEC's reference run was made on a weekday in office hours, and its <time>/<weekday> rules
    // read the clock: every event gets Wednesday 2026-08-12 12:00 UTC (all events within the same
    // few seconds, as in a logtest run, so timeframes never expire).
    let clock = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_786_536_000);
    let mut engine = Engine::new(rules.clone(), limits);
    let mut cache = DecodeCache::default();
    let mut sink = std::io::BufWriter::new(std::fs::File::create(&out).expect("--out"));
    let host: Arc<str> = Arc::from("bench");
    let location: Arc<str> = Arc::from("stdin");
    let mut per_rule: BTreeMap<u32, (u8, u64)> = BTreeMap::new();
    let mut alerts = 0u64;
    let mut count = 0u64;
    let start = Instant::now();
    let cpu_start = cpu_secs();
    // Lines are read as the agent's file sources read them: blocks split into lines, each
    // checked as UTF-8 and copied into the event's reused buffer.
    let mut reader = std::fs::File::open(&corpus).expect("corpus");
    let mut splitter = LineSplitter::new(hids::config::DEFAULT_MAX_LINE, 0);
    let mut block = vec![0u8; 64 << 10];
    // One line buffer for the whole run: the event takes it and gives it back.
    let mut line = String::new();
    let mut process = |l: Line<'_>| {
        count += 1;
        let lossy_utf8 = set_text(&mut line, &l);
        let event = Event {
            time: clock,
            host: host.clone(),
            location: location.clone(),
            format: LogFormat::Syslog,
            full_log: std::mem::take(&mut line),
            flags: LineFlags {
                truncated: l.truncated,
                lossy_utf8,
            },
            fim: None,
        };
        let pre = predecode(&event.full_log, event.format);
        let (decoded, idx) = decoders.decode_full(&pre, &mut cache);
        let input = Input {
            event: &event,
            predecoded: &pre,
            decoded: &decoded,
            category: Category::of(&decoded),
            fts: idx.map(|i| fts[i]).unwrap_or_default(),
        };
        if let Some(v) = engine.evaluate(&input) {
            if v.alert {
                let info = engine.rule_info(&v, &input);
                if !info.options.no_log {
                    hids::rules::write_json_parts(
                        &mut sink, &info, &event, &pre, &decoded, &v.related,
                    )
                    .expect("write");
                    alerts += 1;
                    per_rule.entry(v.id).or_insert((v.level, 0)).1 += 1;
                }
            }
        }
        line = event.full_log;
    };
    loop {
        let n = std::io::Read::read(&mut reader, &mut block).expect("read");
        if n == 0 {
            break;
        }
        splitter.feed(&block[..n], &mut process);
    }
    splitter.flush_partial(&mut process);
    sink.flush().expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu_start;
    let n = count as f64;
    println!("rules loaded: {} in {load_secs:.3} s", rules.len());
    println!(
        "events: {} in {:.3} s = {:.0} events/s (one core); alerts: {alerts}",
        count,
        secs,
        n / secs
    );
    println!(
        "CPU time: {cpu:.2} s = {:.0} events per CPU-second",
        n / cpu.max(0.01)
    );
    if !timed_only {
        println!(
            "decoding only: {:.3} s = {:.0} lines/s ({decoded_lines} decoded)",
            decode_secs,
            n / decode_secs
        );
    }
    println!(
        "peak RSS: {} KiB (after loading decoders {rss_decoders} KiB, rules {rss_rules} KiB, at the end {} KiB)",
        peak_rss_kib(),
        rss_kib()
    );
    println!("correlation memory: {:?}", engine.counters());

    if let Some(r) = reference {
        let text = std::fs::read_to_string(r).expect("reference");
        let mut theirs: BTreeMap<u32, u64> = BTreeMap::new();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            // "  26233 Rule: 31101 (level 5)"
            let w: Vec<&str> = l.split_whitespace().collect();
            if let (Some(c), Some(id)) = (w.first(), w.get(2)) {
                if let (Ok(c), Ok(id)) = (c.parse::<u64>(), id.parse::<u32>()) {
                    theirs.insert(id, c);
                }
            }
        }
        let total: u64 = theirs.values().sum();
        println!("OSSEC alerts: {total}; ours: {alerts}");
        let mut ids: Vec<u32> = theirs.keys().chain(per_rule.keys()).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut same = true;
        for id in ids {
            let o = per_rule.get(&id).map_or(0, |x| x.1);
            let t = theirs.get(&id).copied().unwrap_or(0);
            let mark = if o == t { "" } else { "  <-- differs" };
            if o != t {
                same = false;
            }
            println!("  rule {id:>6}: ours {o:>6}  OSSEC {t:>6}{mark}");
        }
        println!(
            "{}",
            if same {
                "alert counts per rule: identical to OSSEC"
            } else {
                "alert counts per rule: differ (see above)"
            }
        );
    }
}
