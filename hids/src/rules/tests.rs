//! Rule engine tests: the stock OSSEC ruleset, each element, correlation edge cases, lists,
//! overwrite and `$(field)` expansion.

use std::path::{Path, PathBuf};

use super::*;

/// OSSEC's stock ruleset (`../shared/ossec-ruleset` from the repository, found from any worktree).
pub(crate) fn ossec_dir() -> PathBuf {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    loop {
        let cand = dir.join("shared/ossec-ruleset");
        if cand.is_dir() {
            return cand;
        }
        if !dir.pop() {
            panic!(
                "../shared/ossec-ruleset not found above {}",
                env!("CARGO_MANIFEST_DIR")
            );
        }
    }
}

/// The stock rule files in OSSEC's include order.
pub(crate) fn stock_rule_files() -> Vec<PathBuf> {
    let dir = ossec_dir();
    std::fs::read_to_string(dir.join("rules-include-order.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| dir.join("rules").join(l.trim()))
        .collect()
}

#[test]
fn stock_ruleset_loads_without_error() {
    let set = match RuleSet::load(&stock_rule_files(), &LoadOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            for d in &e.0 {
                eprintln!("{d}");
            }
            panic!("{} errors", e.0.len());
        }
    };
    // 1,139 `<rule` tags, three of them inside comments (symantec-ws, local_rules).
    assert_eq!(set.len(), 1136);
}
