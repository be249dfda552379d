//! Decoding: OSSEC's phase 1 (pre-decoding the syslog header, [`predecode`]) and phase 2 (the XML
//! decoders, [`DecoderSet`]), turning an [`crate::event::Event`]'s text into
//! [`crate::event::Predecoded`] and [`crate::event::Decoded`].

pub mod decoder;
pub mod json;
pub mod plugins;
pub mod predecode;

pub use decoder::{DecodeCache, DecodeStats, Decoder, DecoderSet, DecoderType, Offset, Plugin};
pub use predecode::predecode;

#[cfg(test)]
mod tests;

/// What `check-config` reports about the configured decoders.
#[derive(Debug)]
pub struct CheckReport {
    pub files: usize,
    pub decoders: usize,
    pub errors: Vec<crate::diag::Diagnostic>,
    /// Non-linear patterns, unsupported plugins, `order` longer than the captures.
    pub warnings: Vec<crate::diag::Diagnostic>,
}

/// Loads the decoders the configuration names (`decoders`, then `local_decoders`).
pub fn check_configured(cfg: &crate::config::Config) -> CheckReport {
    let mut paths = cfg.rules.decoders.clone();
    paths.extend(cfg.rules.local_decoders.iter().cloned());
    let files = crate::xml::expand_paths(&paths)
        .map(|f| f.len())
        .unwrap_or(0);
    match DecoderSet::load(&paths) {
        Ok(set) => CheckReport {
            files,
            decoders: set.decoders().len(),
            errors: Vec::new(),
            warnings: set.warnings.clone(),
        },
        Err(errors) => CheckReport {
            files,
            decoders: 0,
            errors,
            warnings: Vec::new(),
        },
    }
}
