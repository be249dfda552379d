//! End-to-end tests: the real `hids` binary in temp dirs.

mod util;

mod cli;
mod logtest;
mod rules;
