//! The rule engine as `hids logtest`'s phase 3 (correlation state kept across the lines of one
//! run, as `ossec-logtest` does) and what `hids check-config` reports about the configured rules.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::decode::DecoderSet;
use crate::diag::Diagnostic;
use crate::event::{Decoded, Event, Predecoded, RuleInfo};

use super::correlate::Limits;
use super::matcher::Category;
use super::{syscheck, Engine, Fts, Input, LoadError, LoadOptions, RuleSet};

/// Why the rules for a run could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{} error(s) in the decoders:\n{}", .0.len(), render(.0))]
    Decoders(Vec<Diagnostic>),
    #[error("{} error(s) in the rules:\n{}", .0 .0.len(), render(&.0 .0))]
    Rules(LoadError),
}

fn render(d: &[Diagnostic]) -> String {
    d.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Phase 3 of `hids logtest`: one engine for the whole run.
#[derive(Debug)]
pub struct LogtestStage {
    engine: Engine,
    /// `<fts>` of the first decoder reporting each name.
    fts: HashMap<Arc<str>, Fts>,
}

impl LogtestStage {
    /// Builds the stage from decoders and rules already loaded.
    pub fn new(decoders: &DecoderSet, rules: Arc<RuleSet>) -> LogtestStage {
        let mut fts = HashMap::new();
        for d in decoders.decoders() {
            if !d.fts.is_empty() {
                fts.entry(d.reported_name.clone())
                    .or_insert_with(|| Fts::parse(&d.fts.join(",")));
            }
        }
        LogtestStage {
            engine: Engine::new(rules, Limits::default()),
            fts,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl crate::logtest::RuleStage for LogtestStage {
    fn evaluate(&mut self, event: &Event, pre: &Predecoded, decoded: &Decoded) -> Option<RuleInfo> {
        // A FIM event is decoded as OSSEC's syscheck decoder would.
        let fim = syscheck::decode(event);
        let (pre, decoded) = match &fim {
            Some((p, d)) => (p, d),
            None => (pre, decoded),
        };
        let fts = decoded
            .decoder
            .as_ref()
            .and_then(|n| self.fts.get(n).copied())
            .unwrap_or_default();
        let input = Input {
            event,
            predecoded: pre,
            decoded,
            category: Category::of(decoded),
            fts,
        };
        let v = self.engine.evaluate(&input)?;
        Some(self.engine.rule_info(&v, &input))
    }
}

/// The decoder and rule files a run uses: those given on the command line, or the configured ones
/// (`decoders`/`rules` then the `local_*` ones), and the configured lists.
pub struct Selection {
    pub decoders: Vec<PathBuf>,
    pub rules: Vec<PathBuf>,
    pub lists: Vec<PathBuf>,
}

impl Selection {
    /// For `hids logtest`: command-line paths replace the configured ones.
    pub fn for_logtest(
        cmd: &crate::logtest::Command,
    ) -> Result<Selection, crate::config::ConfigError> {
        let cfg = if cmd.decoders.is_empty() || cmd.rules.is_empty() {
            Some(crate::config::load(&cmd.config)?)
        } else {
            crate::config::load(&cmd.config).ok()
        };
        let configured = cfg.as_ref().map(Selection::configured);
        let decoders = if cmd.decoders.is_empty() {
            configured
                .as_ref()
                .map(|c| c.decoders.clone())
                .unwrap_or_default()
        } else {
            cmd.decoders.clone()
        };
        let rules = if cmd.rules.is_empty() {
            configured
                .as_ref()
                .map(|c| c.rules.clone())
                .unwrap_or_default()
        } else {
            cmd.rules.clone()
        };
        let lists = configured.map(|c| c.lists).unwrap_or_default();
        Ok(Selection {
            decoders,
            rules,
            lists,
        })
    }

    /// The configured files.
    pub fn configured(cfg: &crate::config::Config) -> Selection {
        let r = &cfg.rules;
        Selection {
            decoders: r
                .decoders
                .iter()
                .chain(&r.local_decoders)
                .cloned()
                .collect(),
            rules: r.rules.iter().chain(&r.local_rules).cloned().collect(),
            lists: r.lists.clone(),
        }
    }

    /// Loads the decoders and the rules (checking `decoded_as` against the decoders).
    pub fn load(&self) -> Result<(DecoderSet, RuleSet), StageError> {
        let decoders = DecoderSet::load(&self.decoders).map_err(StageError::Decoders)?;
        let names = decoders.reported_names();
        let opts = LoadOptions {
            decoder_names: Some(names),
            lists: self.lists.clone(),
        };
        let rules = RuleSet::load(&self.rules, &opts).map_err(StageError::Rules)?;
        Ok((decoders, rules))
    }
}

/// The phase-3 stage for a `hids logtest` command.
pub fn logtest_stage(cmd: &crate::logtest::Command) -> Result<LogtestStage, StageError> {
    let sel = Selection::for_logtest(cmd)?;
    let (decoders, rules) = sel.load()?;
    Ok(LogtestStage::new(&decoders, Arc::new(rules)))
}

/// What `check-config` reports about the configured rules.
#[derive(Debug)]
pub struct CheckReport {
    pub files: usize,
    pub rules: usize,
    pub errors: Vec<Diagnostic>,
    /// Rules whose patterns run on the bounded backtracking engine.
    pub non_linear: Vec<u32>,
    /// Configured paths that do not exist.
    pub warnings: Vec<Diagnostic>,
}

/// Loads the configured rules (against the configured decoders) and reports every problem.
pub fn check_configured(cfg: &crate::config::Config) -> CheckReport {
    let mut sel = Selection::configured(cfg);
    // A configured path that does not exist loads nothing (the agent then runs without those
    // rules); it is reported as a warning, a file that cannot be read as an error.
    let mut warnings = Vec::new();
    sel.rules.retain(|p| {
        let exists = p.exists();
        if !exists {
            warnings.push(Diagnostic::whole_file(
                p,
                "does not exist: no rules loaded from it",
            ));
        }
        exists
    });
    let files = super::expand_paths(&sel.rules).map_or(0, |f| f.len());
    let names = DecoderSet::load(&sel.decoders)
        .ok()
        .map(|d| d.reported_names());
    let opts = LoadOptions {
        decoder_names: names,
        lists: sel.lists.clone(),
    };
    match RuleSet::load(&sel.rules, &opts) {
        Ok(set) => CheckReport {
            files,
            rules: set.len(),
            errors: Vec::new(),
            non_linear: set.non_linear(),
            warnings,
        },
        Err(LoadError(errors)) => CheckReport {
            files,
            rules: 0,
            errors,
            non_linear: Vec::new(),
            warnings,
        },
    }
}
