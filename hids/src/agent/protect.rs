//! Self-protection: the agent's own binary, its configuration file and its decoder, rule and list
//! files are added to the running agent's FIM paths (real-time where inotify allows), so that
//! tampering with the agent raises the same FIM alerts as tampering with anything else.
//!
//! [`with_own_files`] is the one derivation of the effective FIM paths: `hids run` and the
//! `hids fim init|check` commands both use it, so that a baseline made by either is what the
//! other expects (otherwise a manual `hids fim check` would report the agent's own files deleted,
//! and the agent's next scan report them added again).
//! The state database is left out of every FIM path by the configuration itself (it changes all
//! the time). The state directory as a whole is not watched: the outputs create, rotate and remove
//! their files there (alerts.log, alerts.json and their rotations, the lock, SQLite's WAL) in
//! normal operation, so "unexpected" would need an allowlist tracking every output's naming.

use std::path::{Path, PathBuf};

use crate::config::{Checks, Config, FimPath, NoDiff, PathMatcher};

/// What an own file is, for its FIM settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The executable: hashed, never diffed.
    Binary,
    /// The configuration: may hold SMTP or syslog credentials, so never diffed into an alert.
    Config,
    /// Decoders, rules, lists: text worth a diff in the alert.
    Ruleset,
}

/// The agent's own files that exist now, canonical, with what they are.
fn own_files(cfg: &Config) -> Vec<(PathBuf, Kind)> {
    let mut out = Vec::new();
    match std::env::current_exe() {
        Ok(p) => out.push((p, Kind::Binary)),
        Err(e) => tracing::warn!("cannot find the agent's own binary to watch it: {e}"),
    }
    out.push((cfg.source.clone(), Kind::Config));
    let r = &cfg.rules;
    for p in [
        &r.decoders,
        &r.local_decoders,
        &r.rules,
        &r.local_rules,
        &r.lists,
    ]
    .into_iter()
    .flatten()
    {
        out.push((p.clone(), Kind::Ruleset));
    }
    let mut seen = Vec::new();
    out.into_iter()
        .filter_map(|(p, k)| {
            // Canonical, so that a watched symlink names what is really read; a path that does
            // not exist (packaged defaults not installed) is not watched.
            let p = std::fs::canonicalize(&p).ok()?;
            (!seen.contains(&p)).then(|| {
                seen.push(p.clone());
                (p, k)
            })
        })
        .collect()
}

fn fim_path(path: PathBuf, kind: Kind) -> FimPath {
    FimPath {
        path,
        depth: 256,
        ignore: PathMatcher::default(),
        restrict: PathMatcher::default(),
        checks: Checks::ALL,
        realtime: true,
        report_changes: kind == Kind::Ruleset,
        nodiff: if kind == Kind::Ruleset {
            NoDiff::None
        } else {
            NoDiff::All
        },
        follow_symlinks: false,
        max_hashed_size: 1 << 30,
        one_file_system: true,
    }
}

/// `cfg` with the agent's own files added to its FIM paths, each unless the same path is already
/// configured (a configured path keeps the operator's settings; a file inside a configured
/// directory is governed by the deepest path, so these settings apply to it).
pub fn with_own_files(cfg: &Config) -> (Config, Vec<PathBuf>) {
    let mut out = cfg.clone();
    let mut added = Vec::new();
    for (p, kind) in own_files(cfg) {
        if out.fim.paths.iter().any(|f| f.path == p) || is_state(&p, &cfg.agent.state_dir) {
            continue;
        }
        added.push(p.clone());
        out.fim.paths.push(fim_path(p, kind));
    }
    (out, added)
}

/// A path in the state directory changes with the agent's own work: never self-watched.
fn is_state(p: &Path, state_dir: &Path) -> bool {
    let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    p.starts_with(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_files_are_added_once_and_existing_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(dir.join("rules")).unwrap();
        std::fs::write(dir.join("rules/a.xml"), "").unwrap();
        std::fs::write(dir.join("local.xml"), "").unwrap();
        let text = format!(
            "[agent]\nstate_dir = \"{d}/state\"\n[fim]\n[[fim.paths]]\npath = \"{d}/local.xml\"\n\
             [rules]\nrules = [\"{d}/rules\", \"{d}/rules/\"]\nlocal_rules = [\"{d}/local.xml\"]\n\
             decoders = [\"{d}/missing\"]\n",
            d = dir.display()
        );
        std::fs::write(dir.join("hids.toml"), &text).unwrap();
        let cfg = crate::config::load(&dir.join("hids.toml")).unwrap();
        let (with, added) = with_own_files(&cfg);
        let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
        assert_eq!(added, vec![exe, dir.join("hids.toml"), dir.join("rules")]);
        assert_eq!(with.fim.paths.len(), 4);
        let rules = with.fim.paths.iter().find(|p| p.path.ends_with("rules"));
        assert!(rules.is_some_and(|p| p.realtime && p.report_changes));
        let conf = with
            .fim
            .paths
            .iter()
            .find(|p| p.path.ends_with("hids.toml"));
        assert!(conf.is_some_and(|p| !p.report_changes && p.nodiff.covers(&p.path)));
    }
}
