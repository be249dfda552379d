//! Helpers for unit tests: where OSSEC's stock ruleset (the compatibility corpus) lives.

use std::path::PathBuf;

/// `../shared/ossec-ruleset` next to the checkout (or one level further up when the checkout is a
/// nested worktree), or `$HIDS_OSSEC_RULESET`.
pub fn ossec_ruleset() -> PathBuf {
    if let Some(p) = std::env::var_os("HIDS_OSSEC_RULESET") {
        return PathBuf::from(p);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for up in ["../shared/ossec-ruleset", "../../shared/ossec-ruleset"] {
        let p = repo.join(up);
        if p.join("decoder.xml").is_file() {
            return p;
        }
    }
    panic!(
        "OSSEC's ruleset not found at {}/../shared/ossec-ruleset (set HIDS_OSSEC_RULESET)",
        repo.display()
    );
}
