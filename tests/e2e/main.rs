//! End-to-end tests: the real `hids` binary in temp dirs.

mod util;

mod agent;
mod cli;
mod fim;
mod health;
mod logs;
mod logtest;
mod outputs;
mod realtime;
mod reload;
mod response;
mod rules;
mod servers;
