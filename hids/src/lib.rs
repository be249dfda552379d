//! hids: host intrusion detection for Linux servers that run APIs.
//!
//! The module tree is the pipeline (see architecture.md): sources produce [`event::Event`]s, the
//! analysis decodes them and matches rules, and outputs deliver the alerts. This crate is the library;
//! `main.rs` is only the command line.
#![deny(unsafe_code)]

/// The process's allocator (see [`sys::Allocator`]).
#[global_allocator]
static ALLOCATOR: sys::Allocator = sys::Allocator;

pub mod agent;
pub mod config;
pub mod decode;
pub mod diag;
pub mod event;
pub mod fim;
pub mod hash;
pub mod logtest;
pub mod net;
pub mod outputs;
pub mod pattern;
pub mod response;
pub mod rules;
pub mod sources;
pub mod state;
mod sys;
#[cfg(test)]
mod testutil;
pub mod xml;
