//! Unit tests for each OS_Match, OS_Regex and PCRE2 construct, with the edge cases OSSEC's
//! documentation and sources call out.

use super::*;

fn m(p: &str, t: &str) -> bool {
    Pattern::os_match(p).unwrap().is_match(t)
}

fn r(p: &str, t: &str) -> bool {
    Pattern::os_regex(p).unwrap().is_match(t)
}

fn rc(p: &str, t: &str) -> Option<Vec<String>> {
    let pat = Pattern::os_regex(p).unwrap();
    let c = pat.captures(t)?;
    Some((0..c.groups.len()).map(|i| c.text(t, i).unwrap()).collect())
}

fn pc(p: &str, t: &str) -> Option<Vec<String>> {
    let pat = Pattern::pcre2(p).unwrap();
    let c = pat.captures(t)?;
    Some((0..c.groups.len()).map(|i| c.text(t, i).unwrap()).collect())
}

fn p(p: &str, t: &str) -> bool {
    Pattern::pcre2(p).unwrap().is_match(t)
}

// ---- OS_Match

#[test]
fn os_match_is_a_case_insensitive_substring() {
    assert!(m("Failed password", "sshd: failed PASSWORD for root"));
    assert!(!m("Failed password", "Failed  password"));
}

#[test]
fn os_match_anchors_per_alternative() {
    assert!(m("^sshd", "sshd[12]"));
    assert!(!m("^sshd", "xsshd"));
    assert!(m("d$", "sshd"));
    assert!(!m("d$", "sshd "));
    assert!(m("^sshd$", "SSHD"));
    assert!(!m("^sshd$", "sshd2"));
    assert!(m("^foo|bar$", "xbar"));
    assert!(m("^foo|bar$", "foox"));
    assert!(!m("^foo|bar$", "xfoo bar x"));
}

#[test]
fn os_match_special_characters_are_literal() {
    assert!(m("a.b", "xa.bx"));
    assert!(!m("a.b", "axb"));
    assert!(m("(x)*[y]?", "(x)*[y]?"));
    assert!(m("\\d", "a\\db"));
    assert!(m("a^b", "a^b"));
}

#[test]
fn os_match_empty_alternative_matches_everything() {
    assert!(m("", "anything"));
    assert!(m("foo|", "bar"));
    assert!(m("^", "bar"));
    assert!(m("^$", ""));
    assert!(!m("^$", "x"));
}

#[test]
fn os_match_negation() {
    let pat = Pattern::os_match("!root").unwrap();
    assert!(pat.is_negated());
    assert!(pat.is_match("admin"));
    assert!(!pat.is_match("root"));
}

// ---- OS_Regex classes

#[test]
fn os_regex_w_includes_dash_at_and_underscore() {
    assert_eq!(rc("^(\\w+)$", "a-b@c_d9"), Some(vec!["a-b@c_d9".into()]));
    assert!(!r("^\\w+$", "a.b"));
    assert!(r("^\\W$", "."));
    assert!(!r("^\\W$", "-"));
}

#[test]
fn os_regex_s_is_a_space_only() {
    assert!(r("a\\sb", "a b"));
    assert!(!r("a\\sb", "a\tb"));
    assert!(r("a\\Sb", "a\tb"));
    assert!(r("a\\tb", "a\tb"));
}

#[test]
fn os_regex_dot_escape_is_any_character_and_bare_dot_is_literal() {
    assert!(r("a\\.c", "abc"));
    assert!(r("a.c", "a.c"));
    assert!(!r("a.c", "abc"));
    assert!(r("a[b", "a[b"));
    assert!(r("a?", "a?"));
}

#[test]
fn os_regex_digits_and_punctuation() {
    assert!(r("^\\d\\d\\d", "333"));
    assert!(!r("^\\d\\d\\d", "f44"));
    assert!(r("^\\D", "x"));
    for c in "()*+,-.:;<=>?[]!\"'#$%&|{}".chars() {
        assert!(r("^\\p$", &c.to_string()), "{c}");
    }
    assert!(!r("^\\p$", "/"));
    assert!(!r("^\\p$", "@"));
    assert!(!r("^\\p$", "\\"));
}

#[test]
fn os_regex_plus_and_star_apply_only_after_a_class() {
    assert!(r("^\\d+$", "123"));
    assert!(r("^a\\d*b$", "ab"));
    assert!(r("^a+$", "a+"));
    assert!(!r("^a+$", "aa"));
    assert!(r("^a*$", "a*"));
}

#[test]
fn os_regex_escapes() {
    assert!(r("\\$\\(\\)\\\\\\|\\<", "$()\\|<"));
    let e = Pattern::os_regex("\\x").unwrap_err();
    assert!(e.message.contains("unknown escape"), "{e}");
    assert_eq!(e.offset, Some(0));
}

#[test]
fn os_regex_is_case_insensitive() {
    assert!(r("^FAILED \\w+", "failed password"));
    assert!(r("root", "ROOT"));
}

#[test]
fn os_regex_alternatives_have_their_own_anchors() {
    assert!(r("^abc|xyz$", "abc..."));
    assert!(r("^abc|xyz$", "...xyz"));
    assert!(!r("^abc|xyz$", ".abc.xyz."));
    // '^' and '$' elsewhere are literal.
    assert!(r("a^b$", "xa^b"));
    assert!(r("a$b", "a$b"));
    assert!(r("^x\\$$", "x$"));
}

#[test]
fn os_regex_parentheses_capture_one_level_only() {
    assert_eq!(
        rc("^(\\S+) from (\\S+)", "root from 1.2.3.4 port"),
        Some(vec!["root".into(), "1.2.3.4".into()])
    );
    assert!(Pattern::os_regex("((a))").is_err());
    assert!(Pattern::os_regex("(a|b)").is_err());
    assert!(Pattern::os_regex("(a").is_err());
    assert!(Pattern::os_regex("a)").is_err());
}

#[test]
fn os_regex_quantifiers_are_lazy_except_the_last() {
    // \w includes '-', so a greedy run would swallow "foo-bar".
    assert_eq!(rc("^(\\w+)-", "foo-bar-baz"), Some(vec!["foo".into()]));
    // The last quantifier runs to the end as OSSEC's did.
    assert_eq!(rc("id=(\\d+)", "id=12345"), Some(vec!["12345".into()]));
    assert_eq!(
        rc("^(\\S+) (\\.+)", "a b c d"),
        Some(vec!["a".into(), "b c d".into()])
    );
    let pat = Pattern::os_regex("(\\d+)x(\\d+)").unwrap();
    assert_eq!(pat.translated(), "(?i)([0-9]+?)x([0-9]+)");
}

#[test]
fn os_regex_works_on_bytes() {
    // '\.' consumes one byte; a capture may cut a character and is shown lossily.
    assert_eq!(rc("^(\\.)", "é"), Some(vec!["\u{fffd}".into()]));
    assert!(r("^\\S+$", "héllo"));
    assert!(!r("^\\w+$", "héllo"));
}

#[test]
fn os_regex_find_end_gives_the_offset_after_the_match() {
    let pat = Pattern::os_regex("^Accepted \\S+ for ").unwrap();
    let t = "Accepted password for root from x";
    assert_eq!(&t[pat.find_end(t).unwrap()..], "root from x");
}

// ---- PCRE2

#[test]
fn pcre2_basic_classes_are_ascii_and_caseless() {
    assert_eq!(
        pc("^Failed (\\S+) for (\\w+)", "failed password for root"),
        Some(vec!["password".into(), "root".into()])
    );
    assert!(!p("^\\w+$", "héllo"));
    assert!(p("^\\s$", "\t"));
    assert!(p("^\\d{2,3}$", "123"));
    assert!(!p("^\\d{2,3}$", "1234"));
}

#[test]
fn pcre2_literal_braces_and_escaped_punctuation() {
    assert!(p("\\{ .+ \\}", "x { a } y"));
    assert!(p("a{b", "a{b"));
    assert!(p("x{,2}", "x{,2}"));
    assert!(p("\\<x\\>", "<x>"));
}

#[test]
fn pcre2_classes_with_regex_crate_metacharacters() {
    let pat = Pattern::pcre2("^[()*+,.:;\\<=>?\\[\\]!\"'#%&$|{}-]+$").unwrap();
    assert!(pat.is_match("&&--<>[]"), "{}", pat.translated());
    assert!(!pat.is_match("~"));
    assert!(p("^[a&&b]$", "&"));
    assert!(p("^[]a]$", "]"));
    assert!(p("^[^]a]$", "b"));
    assert!(p("^[\\w.-]+$", "a.b-c"));
    assert!(p("^[[:digit:]]+$", "42"));
}

#[test]
fn pcre2_groups_named_and_non_capturing() {
    assert_eq!(
        pc("(?:a|b)(?<n>\\d+)(?#note)", "b42"),
        Some(vec!["42".into()])
    );
    assert!(p("(?i)ABC", "abc"));
    assert!(p("(?-i:ABC)", "ABC"));
}

#[test]
fn pcre2_unset_groups_are_left_out_like_ossec() {
    assert_eq!(pc("(a)|(b)", "b"), Some(vec!["b".into()]));
    assert_eq!(pc("(x)?(y)", "y"), Some(vec!["y".into()]));
}

#[test]
fn pcre2_escapes() {
    assert!(p("\\x41\\x{42}\\t", "AB\t"));
    assert!(p("a\\e", "a\x1b"));
    assert!(p("\\Qa.b*\\E$", "a.b*"));
    assert!(!p("\\Qa.b*\\E$", "axbb"));
    assert!(p("end\\z", "the end"));
    assert!(p("\\bword\\b", "a word here"));
    assert!(Pattern::pcre2("\\p{L}").is_err());
    assert!(Pattern::pcre2("\\x{100}").is_err());
    assert!(Pattern::pcre2("\\q").is_err());
}

#[test]
fn pcre2_possessive_is_plain_when_safe() {
    let pat = Pattern::pcre2("^\\d++ ").unwrap();
    assert!(pat.is_linear(), "{}", pat.translated());
    assert!(pat.is_match("123 x"));
    let pat = Pattern::pcre2("^[a-z]*+x").unwrap();
    // 'x' is in [a-z]: possessive can change the outcome, so it must backtrack.
    assert!(!pat.is_linear());
    assert!(!pat.is_match("abx"));
}

#[test]
fn pcre2_lookaround_and_backreferences_use_the_bounded_engine() {
    let pat = Pattern::pcre2("foo(?!bar)").unwrap();
    assert!(!pat.is_linear());
    assert!(pat.is_match("foobaz"));
    assert!(!pat.is_match("foobar"));
    let pat = Pattern::pcre2("(\\w)\\1").unwrap();
    assert!(!pat.is_linear());
    assert!(pat.is_match("xaay"));
    assert!(!pat.is_match("xaby"));
}

#[test]
fn pcre2_errors_name_the_pattern() {
    let e = Pattern::pcre2("(abc").unwrap_err();
    assert!(e.to_string().contains("'(abc'"), "{e}");
    assert!(Pattern::pcre2("abc)").is_err());
    assert!(Pattern::pcre2("*a").is_err());
    assert!(Pattern::pcre2("(?|a)").is_err());
    assert!(Pattern::pcre2("").is_err());
}

#[test]
fn hostile_input_stays_linear() {
    let pat = Pattern::pcre2("^(a+)+$").unwrap();
    assert!(pat.is_linear());
    let text = "a".repeat(50_000) + "!";
    assert!(!pat.is_match(&text));
}

#[test]
fn start_anchoring_is_detected() {
    assert!(Pattern::pcre2("^a|^b").unwrap().is_start_anchored());
    assert!(!Pattern::pcre2("^a|b").unwrap().is_start_anchored());
    assert!(Pattern::os_regex("^a\\d+").unwrap().is_start_anchored());
    assert!(!Pattern::os_match("!^a").unwrap().is_start_anchored());
}

#[test]
fn anchored_prefixes_for_indexing() {
    let pat = Pattern::pcre2("^sshd").unwrap();
    assert_eq!(pat.anchored_prefixes(), Some(vec![b"sshd".to_vec()]));
    let pat = Pattern::pcre2("^Accepted|^Failed \\S+").unwrap();
    assert_eq!(
        pat.anchored_prefixes(),
        Some(vec![b"accepted".to_vec(), b"failed ".to_vec()])
    );
    assert_eq!(Pattern::pcre2("sshd").unwrap().anchored_prefixes(), None);
    assert_eq!(Pattern::pcre2("^.*").unwrap().anchored_prefixes(), None);
    let pat = Pattern::os_match("^su$|^sudo").unwrap();
    assert_eq!(
        pat.anchored_prefixes(),
        Some(vec![b"su".to_vec(), b"sudo".to_vec()])
    );
}

/// Every PCRE2 pattern of OSSEC's stock decoders and rules compiles on the linear engine; every
/// OS_Match/OS_Regex element (`match`, `regex`, `prematch`, `program_name`, ...) compiles too.
#[test]
fn every_stock_ossec_pattern_compiles_linearly() {
    fn walk(el: &crate::xml::Element, out: &mut Vec<(String, String)>) {
        for c in &el.children {
            out.push((c.name.to_ascii_lowercase(), c.text.clone()));
            walk(c, out);
        }
    }
    let dir = crate::testutil::ossec_ruleset();
    let mut files = vec![dir.join("decoder.xml")];
    for e in std::fs::read_dir(dir.join("rules")).unwrap() {
        files.push(e.unwrap().path());
    }
    let mut elements = Vec::new();
    for f in &files {
        let doc = crate::xml::Document::load(f).unwrap();
        for r in &doc.roots {
            walk(r, &mut elements);
        }
    }
    let (mut pcre2, mut legacy) = (0, 0);
    let mut failures = Vec::new();
    for (name, text) in &elements {
        let dialect = if name.ends_with("_pcre2") || name == "pcre2" {
            pcre2 += 1;
            Dialect::Pcre2
        } else if matches!(name.as_str(), "regex" | "prematch") {
            legacy += 1;
            Dialect::OsRegex
        } else if matches!(name.as_str(), "match" | "program_name" | "hostname") {
            legacy += 1;
            Dialect::OsMatch
        } else {
            continue;
        };
        match Pattern::new(dialect, text) {
            Ok(p) if p.is_linear() => {}
            Ok(_) => failures.push(format!("<{name}> {text}: not linear")),
            Err(e) => failures.push(format!("<{name}>: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(pcre2 > 1700, "{pcre2}");
    assert!(legacy > 0);
}

#[test]
fn deferred_patterns_behave_like_compiled_ones() {
    let cases: [(Dialect, &str, &[&str]); 4] = [
        (
            Dialect::OsMatch,
            "Failed password|^Accepted",
            &["x Failed password", "accepted y", "no"],
        ),
        (Dialect::OsMatch, "!root", &["user root", "user bob"]),
        (
            Dialect::OsRegex,
            "(\\d+)x(\\w+)$",
            &["a 12xab", "12x", "zz 3xq-"],
        ),
        (
            Dialect::Pcre2,
            "^(?:GET|POST) (\\S+)",
            &["GET /a b", "post /x", "PUT /"],
        ),
    ];
    for (d, src, texts) in cases {
        let eager = Pattern::new(d, src).unwrap();
        let lazy = Pattern::new_deferred(d, src).unwrap();
        assert_eq!(lazy.translated(), eager.translated());
        for t in texts {
            assert_eq!(lazy.is_match(t), eager.is_match(t), "{src} on {t}");
            assert_eq!(lazy.find_end(t), eager.find_end(t), "{src} on {t}");
            assert_eq!(lazy.captures(t), eager.captures(t), "{src} on {t}");
        }
        assert_eq!(lazy.group_count(), eager.group_count());
        assert!(lazy.compile_deferred().is_ok());
    }
    // Syntax errors are still found when the automaton waits.
    assert!(Pattern::new_deferred(Dialect::Pcre2, "(abc").is_err());
    // A pattern too large for the size limits is reported when it is built.
    let big = "(?:(?:\\w{100}){100}){100}";
    assert!(Pattern::new(Dialect::Pcre2, big).is_err());
    let huge = Pattern::new_deferred(Dialect::Pcre2, big).unwrap();
    assert!(huge.compile_deferred().is_err());
    assert!(!huge.is_match("abc"));
}

/// `p`'s searches of each text end where the regex engine's search of its expression does,
/// negation applied.
fn answers_as_the_regex_engine(p: &Pattern, texts: &[&str]) {
    let src = p.source();
    let re = regex::bytes::RegexBuilder::new(p.translated())
        .unicode(false)
        .build()
        .unwrap();
    for &t in texts {
        let want = re.find(t.as_bytes()).map(|m| m.end());
        let want_end = match (p.is_negated(), want) {
            (false, e) => e,
            (true, Some(_)) => None,
            (true, None) => Some(0),
        };
        assert_eq!(p.find_end_bytes(t.as_bytes()), want_end, "{src} on {t:?}");
        assert_eq!(p.find_end(t), want_end, "{src} on {t:?}");
        assert_eq!(p.is_match(t), want_end.is_some(), "{src} on {t:?}");
    }
}

/// Patterns made of start-anchored literals are answered by comparing them; the answer must be
/// the regex engine's, alternative order (leftmost-first) and negation included.
#[test]
fn start_anchored_literals_answer_as_the_regex_engine_does() {
    let cases: &[(Dialect, &str, bool)] = &[
        (Dialect::Pcre2, "^Accepted", true),
        (Dialect::Pcre2, "^Failed keyboard|^Postponed keyboard", true),
        (Dialect::Pcre2, "^ab|^abc", true),
        (Dialect::Pcre2, "^abc|^ab", true),
        (Dialect::Pcre2, "^(?:Invalid|Illegal) user", true),
        (Dialect::Pcre2, "^\\(pam_unix\\)|^pam_unix", true),
        (Dialect::Pcre2, "^exact$", true),
        (Dialect::Pcre2, "^$", true),
        (Dialect::Pcre2, "^1[.]2", true),
        (Dialect::OsMatch, "^Accepted |^session opened", true),
        (Dialect::OsMatch, "!^Accepted", true),
        (Dialect::OsMatch, "^Dé", true),
        (Dialect::OsRegex, "^Failed \\S+ ", false),
        (Dialect::Pcre2, "^[ab]c", false),
        (Dialect::Pcre2, "^2|^3", true),
        (Dialect::Pcre2, "^[.:-]x$", true),
        (Dialect::Pcre2, "^[0-9]", false),
        (Dialect::Pcre2, "^[1-4]$|^a", true),
        (Dialect::Pcre2, "^[1-5]$|^a", false),
        (Dialect::Pcre2, "Accepted", false),
        (Dialect::Pcre2, "^Accepted|password", false),
        (Dialect::Pcre2, "^Acc(?-i:e)pted", false),
    ];
    let texts = [
        "Accepted publickey for root",
        "ACCEPTED",
        "accepte",
        "Failed keyboard-interactive",
        "Postponed Keyboard",
        "abc",
        "ab",
        "Invalid user x",
        "illegal user y",
        "(pam_unix) session",
        "pam_unix(sshd)",
        "exact",
        "EXACT",
        "exact ",
        "",
        "1.2",
        "1x2",
        "200",
        "3",
        "404",
        ":x",
        "-X",
        "/x",
        "5",
        "A",
        "session opened for",
        "Dé",
        "DÉ",
        "bc",
        "AcCepted",
        " Accepted",
    ];
    for &(dialect, src, literal) in cases {
        let p = Pattern::new(dialect, src).unwrap();
        assert_eq!(p.prefixes().is_some(), literal, "{src}");
        answers_as_the_regex_engine(&p, &texts);
    }
}

#[test]
fn captured_text_is_copied_between_characters_and_converted_lossily_across_one() {
    let text = "aé b";
    let caps = Captures {
        end: 4,
        groups: vec![1..3, 1..2, 0..2, 3..5, 4..9],
    };
    assert_eq!(caps.text_at(text, 0, 0).as_deref(), Some("é"));
    assert_eq!(caps.text_at(text, 0, 1).as_deref(), Some("\u{fffd}"));
    // Ranges are relative to where the match ran, which may be inside a character.
    assert_eq!(caps.text_at(text, 1, 2).as_deref(), Some("é"));
    assert_eq!(caps.text_at(text, 2, 2).as_deref(), Some("\u{fffd} "));
    assert_eq!(caps.text_at(text, 0, 3).as_deref(), Some(" b"));
    assert_eq!(caps.text_at(text, 0, 4), None);
    assert_eq!(caps.text_at(text, 0, 5), None);
    assert_eq!(caps.text_at(text, usize::MAX, 0), None);
}

/// A pattern whose every match begins with one literal is first checked for that literal; the
/// answers must stay the regex engine's, negation included.
#[test]
fn required_literal_answers_as_the_regex_engine_does() {
    let cases: &[(Dialect, &str, Option<&[u8]>)] = &[
        (Dialect::Pcre2, "--[0-9A-Za-z]+-A--", Some(b"--")),
        (Dialect::Pcre2, "^\\[\\d+\\] x", Some(b"[")),
        (Dialect::Pcre2, ":: \\d+", Some(b":: ")),
        (Dialect::OsMatch, "!== ", Some(b"== ")),
        (Dialect::OsRegex, "^\\d+ ab", None),
        (Dialect::Pcre2, "-A--", None),
        (Dialect::Pcre2, "--a|--b", Some(b"--")),
        (Dialect::Pcre2, "::1|::2", Some(b"::")),
        (Dialect::Pcre2, "--|==", None),
    ];
    let texts = [
        "",
        "--",
        "--abc12-A--",
        "x --Zz9-a-- y",
        "- - [21/Nov] \"GET / HTTP/1.1\" 200",
        "[12] x",
        "[12] X",
        "a [1] x",
        ":: 42",
        "::  42",
        "a == b",
        "a=b",
    ];
    for &(dialect, src, want) in cases {
        let p = Pattern::new(dialect, src).unwrap();
        let got = super::required_prefix(p.translated());
        // One byte is not worth a substring search.
        assert_eq!(got.as_deref(), want.filter(|w| w.len() >= 2), "{src}");
        answers_as_the_regex_engine(&p, &texts);
    }
}
