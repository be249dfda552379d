//! Decoding throughput: predecode + decode with OSSEC's stock decoders on the benchmark corpus,
//! one thread, and the share of lines whose candidate decoders came from the index.
//!
//! Run with `cargo bench --bench decode -- CORPUS [DECODER_FILE...]`; the corpus comes from
//! `python3 ../shared/bench/corpus/gen.py --lines 200000 --seed 1 -o CORPUS`. Without decoder
//! files, OSSEC's stock `decoder.xml` next to the checkout is used.

use std::path::PathBuf;
use std::time::Instant;

use hids::decode::{predecode, DecodeCache, DecoderSet};
use hids::event::LogFormat;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(corpus) = args.first() else {
        eprintln!("usage: cargo bench --bench decode -- CORPUS [DECODER_FILE...]");
        std::process::exit(2);
    };
    let mut decoders: Vec<PathBuf> = args[1..].iter().map(PathBuf::from).collect();
    if decoders.is_empty() {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let found = [
            "../shared/ossec-ruleset/decoder.xml",
            "../../shared/ossec-ruleset/decoder.xml",
        ]
        .iter()
        .map(|p| repo.join(p))
        .find(|p| p.is_file());
        match found {
            Some(p) => decoders.push(p),
            None => {
                eprintln!("OSSEC's decoder.xml not found; pass it after the corpus");
                std::process::exit(2);
            }
        }
    }
    let set = match DecoderSet::load(&decoders) {
        Ok(s) => s,
        Err(e) => {
            for d in e {
                eprintln!("{d}");
            }
            std::process::exit(2);
        }
    };
    let text = std::fs::read_to_string(corpus).expect("read corpus");
    let lines: Vec<&str> = text.lines().collect();
    // Warm-up pass (page cache, allocator, program-name cache), then timed passes.
    let mut cache = DecodeCache::default();
    let mut decoded = 0u64;
    for l in &lines {
        let pre = predecode(l, LogFormat::Syslog);
        decoded += u64::from(set.decode(&pre, &mut cache).decoder.is_some());
    }
    let warm = cache.stats;
    let rounds = 5;
    let mut best = f64::MAX;
    let mut best_cpu = f64::MAX;
    for _ in 0..rounds {
        let mut c = DecodeCache::default();
        let cpu0 = thread_cpu_ns();
        let t = Instant::now();
        let mut n = 0u64;
        for l in &lines {
            let pre = predecode(l, LogFormat::Syslog);
            n += u64::from(set.decode(&pre, &mut c).decoder.is_some());
        }
        let secs = t.elapsed().as_secs_f64();
        if let (Some(a), Some(b)) = (cpu0, thread_cpu_ns()) {
            best_cpu = best_cpu.min((b - a) as f64 / 1e9);
        }
        assert_eq!(n, decoded);
        best = best.min(secs);
    }
    let lps = lines.len() as f64 / best;
    println!("decoders: {} from {:?}", set.decoders().len(), decoders);
    println!(
        "corpus: {} lines, {} decoded ({:.1}%)",
        lines.len(),
        decoded,
        100.0 * decoded as f64 / lines.len() as f64
    );
    println!("best of {rounds}: {best:.3} s, {lps:.0} lines/s on one thread (wall clock)");
    if best_cpu < f64::MAX {
        println!(
            "best of {rounds}: {best_cpu:.3} s on the CPU, {:.0} lines per CPU-second (less sensitive to a busy machine)",
            lines.len() as f64 / best_cpu
        );
    }
    println!(
        "indexed fast path: {:.1}% of lines (root found by the index alone: program-name cache hit, or the anchored multi-pattern pass with no unanchored root before it); {} root patterns tried one by one in the first pass",
        100.0 * warm.indexed as f64 / warm.lines as f64,
        warm.root_patterns_tried
    );
}

/// CPU time this thread has run, in nanoseconds (from /proc/thread-self/schedstat), so that the
/// figure does not depend on how busy the machine is.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
