//! The direct sequence matcher against the regex crate: on OSSEC's stock decoder patterns with
//! the benchmark corpus and edited copies of its lines, and on random patterns and texts.

use super::*;
use crate::pattern::{Dialect, Pattern};

/// The regex crate's answer for `p` (the reference).
fn reference(p: &Pattern, hay: &[u8]) -> Option<Captures> {
    p.regex().and_then(|re| re.captures(hay))
}

/// Compares the two engines on `hay`; returns false when the direct matcher gave up.
fn same(p: &Pattern, hay: &[u8]) -> bool {
    let Some(s) = p.seq() else { return false };
    let Some(got) = s.captures(hay) else {
        // Gave up: the pattern's answer must still be the reference one.
        assert_eq!(
            p.captures_bytes(hay),
            reference(p, hay),
            "fallback for {:?} ({}) on {:?}",
            p.source(),
            p.translated(),
            String::from_utf8_lossy(hay)
        );
        return false;
    };
    assert_eq!(
        got,
        reference(p, hay),
        "{} {:?} ({}) on {:?}",
        p.dialect().as_str(),
        p.source(),
        p.translated(),
        String::from_utf8_lossy(hay)
    );
    true
}

fn caps(p: &str, dialect: Dialect, t: &str) -> Option<Vec<String>> {
    let pat = Pattern::new(dialect, p).unwrap();
    assert!(pat.seq().is_some(), "{p} should use the direct matcher");
    let c = pat.seq().unwrap().captures(t.as_bytes()).unwrap()?;
    assert_eq!(Some(c.clone()), reference(&pat, t.as_bytes()));
    Some((0..c.groups.len()).map(|i| c.text(t, i).unwrap()).collect())
}

/// A small deterministic generator (xorshift64*), so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T: ?Sized>(&mut self, xs: &[&'a T]) -> &'a T {
        xs[self.below(xs.len())]
    }
}

#[test]
fn sequence_shapes_are_accepted_and_others_are_not() {
    let ok = |d, p: &str| Pattern::new(d, p).unwrap().seq().is_some();
    assert!(ok(Dialect::OsRegex, r"^(\S+) \S+ (\S+) \[\S+ \S\d+\] "));
    assert!(ok(Dialect::OsRegex, r"user (\w+) from (\S+)$"));
    assert!(ok(Dialect::OsRegex, r"^\.+(\d+)\s+\p\W\D"));
    assert!(ok(Dialect::Pcre2, r#""(\w+) (.+?) HTTP\S+" (\d+) "#));
    assert!(ok(Dialect::Pcre2, r"^[a-f0-9]{2,8}(?:x|X)?"));
    assert!(ok(Dialect::OsRegex, r"^a (\S+)|^b (\S+)"));
    assert!(ok(Dialect::Pcre2, r"^from (\S+): |^from (\S+) "));
    // A choice after a repetition, or two choices, are left to the regex crate.
    assert!(!ok(Dialect::Pcre2, r"(\S+) (?:ab|cd)"));
    assert!(!ok(Dialect::Pcre2, r"(?:ab|cd)x(?:ef|gh)"));
    assert!(!ok(Dialect::Pcre2, r"(ab)+"));
    assert!(!ok(Dialect::Pcre2, r"\bword\b"));
    assert!(!ok(Dialect::Pcre2, r"x(?=y)"));
    // Rule patterns compiled on first use do not get it (they are never asked for captures).
    assert!(Pattern::new_deferred(Dialect::OsRegex, r"^(\S+)")
        .unwrap()
        .seq()
        .is_none());
}

#[test]
fn sequence_captures_follow_ossec_greediness() {
    let os = Dialect::OsRegex;
    // Lazy except the last quantifier.
    assert_eq!(
        caps(r"(\S+) (\S+)", os, "a b c d"),
        Some(vec!["a".into(), "b".into()])
    );
    assert_eq!(
        caps(r"^(\.+) (\.+)", os, "a b c d"),
        Some(vec!["a".into(), "b c d".into()])
    );
    assert_eq!(
        caps(r"user (\w+)$", os, "USER x user bob"),
        Some(vec!["bob".into()])
    );
    assert_eq!(caps(r"^x(\d*)y", os, "xy"), Some(vec!["".into()]));
    assert_eq!(caps(r"^x(\d*)y", os, "x12"), None);
    // Greedy \S+ gives bytes back to a following literal it also matches.
    assert_eq!(
        caps(
            r#"(\w+) (.+?) HTTP\S+" (\d+) "#,
            Dialect::Pcre2,
            r#""GET /a" HTTP/1.1" 200 "#
        ),
        Some(vec!["GET".into(), r#"/a""#.into(), "200".into()])
    );
    assert_eq!(
        caps(
            r#""(\w+) (.+?) HTTP\S+" (\d+) "#,
            Dialect::Pcre2,
            r#""GET /x HTTP/1.1" 404 "#
        ),
        Some(vec!["GET".into(), "/x".into(), "404".into()])
    );
    // Case-insensitive literals; non-ASCII bytes are matched one at a time.
    assert_eq!(
        caps(r"Name: (\S+) é", os, "x NAME: jürgen é"),
        Some(vec!["jürgen".into()])
    );
    assert_eq!(caps(r"a$", os, ""), None);
    assert_eq!(caps(r"\d*$", os, "ab"), Some(vec![]));
}

#[test]
fn a_search_that_explodes_falls_back_to_the_regex_crate() {
    let p = Pattern::pcre2(r"^(.*?)(.*?)(.*?)(.*?)(.*?)x").unwrap();
    let hay = "a".repeat(400);
    assert!(p.seq().unwrap().captures(hay.as_bytes()).is_none());
    assert_eq!(p.captures_bytes(hay.as_bytes()), None);
    let hay = format!("{hay}x");
    assert_eq!(
        p.captures_bytes(hay.as_bytes()),
        reference(&p, hay.as_bytes())
    );
}

#[test]
fn a_pattern_that_keeps_exploding_is_left_to_the_regex_crate() {
    let p = Pattern::pcre2(r"^(.*?)(.*?)(.*?)(.*?)(.*?)x").unwrap();
    let s = p.seq().unwrap();
    assert!(s.captures(b"abx").is_some());
    let long = "a".repeat(400);
    for _ in 0..GIVE_UP_LIMIT {
        assert!(s.captures(long.as_bytes()).is_none());
    }
    // Even an easy text now goes to the regex crate, with the same answer.
    assert!(s.captures(b"abx").is_none());
    assert_eq!(p.captures_bytes(b"abx"), reference(&p, b"abx"));
    assert_eq!(p.captures_bytes(b"abx").map(|c| c.end), Some(3));
}

/// The benchmark corpus (`../shared/bench/corpus/gen.py`), `lines` lines.
fn corpus(lines: usize, seed: u64) -> Vec<String> {
    let gen = crate::testutil::ossec_ruleset().join("../bench/corpus/gen.py");
    let out = std::process::Command::new("python3")
        .arg(&gen)
        .args(["--lines", &lines.to_string(), "--seed", &seed.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", gen.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Edited copies of a line: cut short, separators doubled, fields emptied, non-ASCII inserted.
fn variants(line: &str, rng: &mut Rng) -> Vec<Vec<u8>> {
    let b = line.as_bytes();
    let mut out = vec![b.to_vec(), Vec::new()];
    if !b.is_empty() {
        let cut = rng.below(b.len());
        out.push(b[..cut].to_vec());
        let at = rng.below(b.len());
        let mut v = b[..at].to_vec();
        v.extend_from_slice("é\u{ff}".as_bytes());
        v.push(0xff);
        v.extend_from_slice(&b[at..]);
        out.push(v);
    }
    out.push(line.replace(' ', "  ").into_bytes());
    out.push(line.replace(": ", ":").replace("[", "[]").into_bytes());
    out.push(line.to_ascii_uppercase().into_bytes());
    // A field emptied: two separators meet.
    let words: Vec<&str> = line.split(' ').collect();
    if words.len() > 2 {
        let k = rng.below(words.len());
        let v: Vec<&str> = words
            .iter()
            .enumerate()
            .map(|(i, w)| if i == k { "" } else { *w })
            .collect();
        out.push(v.join(" ").into_bytes());
    }
    // Tails from word boundaries, as decoders search from offsets.
    for (i, _) in line.match_indices(' ').take(4) {
        out.push(b[i + 1..].to_vec());
    }
    out
}

#[test]
fn sequence_matches_the_regex_crate_on_stock_decoders_and_the_corpus() {
    let set =
        crate::decode::DecoderSet::load(&[crate::testutil::ossec_ruleset().join("decoder.xml")])
            .unwrap_or_else(|e| panic!("{e:?}"));
    let mut patterns: Vec<&Pattern> = Vec::new();
    let (mut total, mut patterns_total) = (0, 0);
    // Of the `<regex>`/`<pcre2>` patterns alone: (all, accepted).
    let mut regexes = (0, 0);
    for d in set.decoders() {
        for (p, is_regex) in [(&d.regex, true), (&d.prematch, false)] {
            let Some(p) = p else { continue };
            let accepted = p.seq().is_some();
            total += 1;
            patterns_total += accepted as usize;
            if is_regex {
                regexes.0 += 1;
                regexes.1 += accepted as usize;
            }
            if accepted && !patterns.iter().any(|q| q.translated() == p.translated()) {
                patterns.push(p);
            }
        }
    }
    // Most stock decoder patterns are plain sequences.
    assert!(
        patterns.len() * 2 > total,
        "{} of {total} accepted",
        patterns.len()
    );
    let mut lines = corpus(800, 1);
    lines.sort();
    lines.dedup();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for l in &lines {
        inputs.extend(variants(l, &mut rng));
        let pre = crate::decode::predecode(l, crate::event::LogFormat::Syslog);
        inputs.push(pre.message.as_bytes().to_vec());
    }
    inputs.sort();
    inputs.dedup();
    let (mut compared, mut matched, mut gave_up) = (0u64, 0u64, 0u64);
    for hay in &inputs {
        for p in &patterns {
            if same(p, hay) {
                compared += 1;
                matched += p.seq().and_then(|s| s.captures(hay)).flatten().is_some() as u64;
            } else {
                gave_up += 1;
            }
        }
    }
    eprintln!(
        "{} of {total} stock decoder patterns accepted ({} distinct; regexes: {} of {}); \
         {compared} comparisons, {matched} matches, {gave_up} gave up",
        patterns_total,
        patterns.len(),
        regexes.1,
        regexes.0
    );
    assert!(matched > 1000, "only {matched} matches among {compared}");
    // Giving up is rare: a few patterns with several greedy `.*` on texts they do not match.
    assert!(
        gave_up * 100 < compared,
        "gave up {gave_up} times of {compared}"
    );
}

/// A random OS_Regex made of the pieces decoders use.
fn random_os_regex(rng: &mut Rng) -> String {
    let pieces = [
        "a", "b", "ab", " ", ":", "-", "=", ".", "é", r"\S+", r"\S*", r"\d+", r"\d*", r"\w+",
        r"\w*", r"\s+", r"\s*", r"\.+", r"\.*", r"\p", r"\W", r"\D", r"\s", r"\S", r"\d", r"\w",
        r"\.", r"\p+", r"\W+",
    ];
    let mut s = String::new();
    if rng.below(3) == 0 {
        s.push('^');
    }
    let mut open = false;
    for _ in 0..1 + rng.below(7) {
        if !open && rng.below(4) == 0 {
            s.push('(');
            open = true;
        }
        s.push_str(rng.pick(&pieces));
        if open && rng.below(2) == 0 {
            s.push(')');
            open = false;
        }
    }
    if open {
        s.push(')');
    }
    if rng.below(4) == 0 {
        s.push('$');
    }
    s
}

/// A random PCRE2 sequence: greedy, lazy and bounded repetitions of classes.
fn random_pcre2(rng: &mut Rng) -> String {
    let atoms = [
        "a", "b", " ", ":", r"\S", r"\d", r"\w", r"\s", ".", "[a-b]", "[^ :]", "é",
    ];
    let quants = [
        "", "", "+", "*", "+?", "*?", "?", "??", "{1,2}", "{2,}?", "{0,3}",
    ];
    let mut s = String::new();
    if rng.below(3) == 0 {
        s.push('^');
    }
    let mut open = false;
    for _ in 0..1 + rng.below(7) {
        if !open && rng.below(4) == 0 {
            s.push('(');
            open = true;
        }
        let a = rng.pick(&atoms);
        s.push_str(a);
        if a.chars().count() == 1 || a.starts_with('\\') || a.starts_with('[') || a == "." {
            s.push_str(rng.pick(&quants));
        }
        if open && rng.below(2) == 0 {
            s.push(')');
            open = false;
        }
    }
    if open {
        s.push(')');
    }
    if rng.below(4) == 0 {
        s.push('$');
    }
    s
}

fn random_text(rng: &mut Rng) -> Vec<u8> {
    let parts: [&[u8]; 12] = [
        b"a",
        b"A",
        b"b",
        b"1",
        b"22",
        b" ",
        b"  ",
        b":",
        b"-",
        b".",
        "é".as_bytes(),
        b"\xff",
    ];
    let mut v = Vec::new();
    for _ in 0..rng.below(24) {
        v.extend_from_slice(parts[rng.below(parts.len())]);
    }
    v
}

#[test]
fn sequence_matches_the_regex_crate_on_random_patterns() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let (mut accepted, mut compared, mut matched) = (0, 0, 0);
    for i in 0..1500 {
        let (dialect, src) = if i % 2 == 0 {
            (Dialect::OsRegex, random_os_regex(&mut rng))
        } else {
            (Dialect::Pcre2, random_pcre2(&mut rng))
        };
        let Ok(p) = Pattern::new(dialect, &src) else {
            continue;
        };
        if p.seq().is_none() {
            continue;
        }
        accepted += 1;
        for _ in 0..60 {
            let hay = random_text(&mut rng);
            if same(&p, &hay) {
                compared += 1;
                matched += p.seq().and_then(|s| s.captures(&hay)).flatten().is_some() as i32;
            }
        }
    }
    assert!(accepted > 1200, "{accepted} accepted");
    assert!(matched > compared / 10, "{matched} matches of {compared}");
}

/// Choices between sequences: the match is the one starting first, ties to the earlier branch,
/// with only that branch's groups; a common beginning lifted out of the branches or a common
/// end is copied into each.
#[test]
fn choices_of_sequences_match_as_the_regex_crate() {
    let pats: &[(Dialect, &str)] = &[
        (Dialect::OsRegex, r"^from (\S+): |^from (\S+) "),
        (Dialect::OsRegex, r" from (\S+)$| from (\S+) port (\d+)$"),
        (Dialect::OsRegex, r"\[(\S+)\]: (\d+) |\[(\S+)\]:\d+: (\d+) "),
        (Dialect::Pcre2, r"b(\w+)|a(\w+)"),
        (Dialect::Pcre2, r"(a)(\w*)|(\w)(b)"),
        (Dialect::Pcre2, r"x(?:(\d+)|(\w+))y"),
        (Dialect::Pcre2, r"^(?:GET|POST) (\S+)"),
        (Dialect::Pcre2, r"^k=(?:ab|cd)(\S+)"),
        (Dialect::Pcre2, r"(?:ab|cd)x(\d+)"),
    ];
    let texts = [
        "from 1.2.3.4: x",
        "from 1.2.3.4 x",
        "from a:b: c d",
        "Failed for root from 10.0.0.1 port 22",
        "Failed for root from 10.0.0.1",
        "x from a from b port 9",
        "sshd[12]: 44 and [p]:7: 5 ",
        "[p]:7: 5 [q]: 6 ",
        "ab",
        "ba",
        "cab",
        "abba",
        "xy",
        "x12y",
        "x1ay",
        "xay",
        "GET /a",
        "post /b c",
        "PUT /c",
        "k=abX",
        "k=cd1 cdx2",
        "abx1 cdx22",
        "cdx",
        "",
    ];
    for (d, src) in pats {
        let p = Pattern::new(*d, src).unwrap();
        assert!(p.seq().is_some(), "{src} should use the direct matcher");
        for t in texts {
            assert!(same(&p, t.as_bytes()), "gave up on {src} / {t:?}");
        }
    }
}
