//! The text patterns a rule holds (`match`, `regex`, `pcre2`, and the per-field forms): a
//! [`crate::pattern::Pattern`] plus the `negate="yes"` attribute Wazuh-style rules may carry.

use crate::pattern::{Pattern, PatternError};

pub use crate::pattern::Dialect;

/// A compiled rule pattern.
#[derive(Debug, Clone)]
pub struct Pat {
    pattern: Pattern,
    negate: bool,
    /// The source text, for diagnostics and `logtest`.
    pub source: String,
}

impl Pat {
    /// Compiles `text` in `dialect`.
    pub fn compile(dialect: Dialect, text: &str) -> Result<Pat, PatternError> {
        Ok(Pat {
            pattern: Pattern::new(dialect, text)?,
            negate: false,
            source: text.to_string(),
        })
    }

    /// Like [`Pat::compile`], with the automaton built on first use (see
    /// [`Pattern::new_deferred`]): for the patterns sibling sets answer for.
    pub fn compile_deferred(dialect: Dialect, text: &str) -> Result<Pat, PatternError> {
        Ok(Pat {
            pattern: Pattern::new_deferred(dialect, text)?,
            negate: false,
            source: text.to_string(),
        })
    }

    /// Builds a deferred automaton now (see [`Pattern::compile_deferred`]).
    pub fn compile_now(&self) -> Result<(), PatternError> {
        self.pattern.compile_deferred()
    }

    /// The same pattern with its sense inverted.
    pub fn negated(mut self) -> Pat {
        self.negate = !self.negate;
        self
    }

    /// False when the pattern runs on the bounded backtracking engine.
    pub fn is_linear(&self) -> bool {
        self.pattern.is_linear()
    }

    /// The expression to put in a [`regex::bytes::RegexSet`] standing for this pattern, when it
    /// can: linear, not negated, not the match-everything pattern.
    pub fn set_source(&self) -> Option<&str> {
        let t = self.pattern.translated();
        (!self.negate && !self.pattern.is_negated() && self.is_linear() && !t.is_empty())
            .then_some(t)
    }

    /// Whether `text` matches (honouring `!` and `negate`).
    #[inline]
    pub fn is_match(&self, text: &str) -> bool {
        self.pattern.is_match(text) != self.negate
    }
}
