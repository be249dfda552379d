//! Test helpers: a temp dir per test with a config file, and a command builder for the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp dir with a state dir inside; `cmd` runs `hids` with this dir's config.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    /// The JSON alerts written so far, oldest first: `alerts.json` after the files a daily
    /// rotation moved aside (`alerts.json.1` the newest), since a test can straddle midnight.
    pub fn alerts_json(&self) -> String {
        let path = |n: u32| match n {
            0 => self.state_dir().join("alerts.json"),
            n => self.state_dir().join(format!("alerts.json.{n}")),
        };
        let rotated = (1..).take_while(|&n| path(n).exists()).count() as u32;
        (0..=rotated)
            .rev()
            .map(|n| std::fs::read_to_string(path(n)).unwrap_or_default())
            .collect()
    }

    /// Writes `config.toml` with `[agent] state_dir` pointing into this dir, followed by `body`.
    pub fn config(&self, body: &str) -> PathBuf {
        let p = self.path().join("config.toml");
        let text = format!(
            "[agent]\nstate_dir = \"{}\"\nhostname = \"testhost\"\n{}",
            self.state_dir().display(),
            body
        );
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// `hids` with `--config <dir>/config.toml`, the environment cleared of HIDS_CONFIG.
    pub fn cmd(&self) -> Command {
        let mut c = hids();
        c.arg("--config").arg(self.path().join("config.toml"));
        c
    }
}

/// The binary under test.
pub fn hids() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hids"));
    c.env_remove("HIDS_CONFIG").env("NO_COLOR", "1");
    c
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
