//! Decoding: OSSEC's phase 1 (pre-decoding the syslog header, [`predecode`]) and phase 2 (the XML
//! decoders, [`DecoderSet`]), turning an [`crate::event::Event`]'s text into
//! [`crate::event::Predecoded`] and [`crate::event::Decoded`].

pub mod decoder;
pub mod json;
pub mod predecode;

pub use decoder::{DecodeCache, DecodeStats, Decoder, DecoderSet, DecoderType, Offset, Plugin};
pub use predecode::predecode;

#[cfg(test)]
mod tests;
