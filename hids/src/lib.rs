//! hids: host intrusion detection for Linux servers that run APIs.
//!
//! The module tree is the pipeline (see architecture.md): sources produce [`event::Event`]s, the
//! analysis decodes them and matches rules, and outputs deliver the alerts. This crate is the library;
//! `main.rs` is only the command line.
#![deny(unsafe_code)]

pub mod config;
pub mod diag;
pub mod event;
pub mod outputs;
pub mod state;
mod sys;
