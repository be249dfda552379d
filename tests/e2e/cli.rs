//! The command surface: help for every subcommand, exit codes, check-config output.

use crate::util::*;

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["fim", "--help"],
        &["fim", "init", "--help"],
        &["fim", "check", "--help"],
        &["fim", "list", "--help"],
        &["fim", "show", "--help"],
        &["logtest", "--help"],
        &["tail", "--help"],
        &["check-config", "--help"],
        &["version", "--help"],
    ] {
        let o = hids().args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("Usage: hids"), "{args:?}: {out}");
    }
    let o = hids().arg("--help").output().unwrap();
    let out = stdout(&o);
    for sub in ["run", "fim", "logtest", "check-config", "version"] {
        assert!(out.contains(sub), "{out}");
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let o = hids().arg("frobnicate").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unrecognized subcommand"));
}

#[test]
fn version_prints_the_package_version() {
    let o = hids().arg("version").output().unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).starts_with(&format!("hids {}\n", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let o = hids()
        .arg("--config")
        .arg(repo().join("etc/hids.toml"))
        .arg("check-config")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("configuration OK"));
}

#[test]
fn check_config_env_var_selects_the_file() {
    let env = Env::new();
    let cfg = env.config("[fim]\nintervl = 5\n");
    let o = hids()
        .env("HIDS_CONFIG", &cfg)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("did you mean \"interval\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_config_typo_names_file_line_column_and_suggestion() {
    let env = Env::new();
    let cfg = env.config("[fim]\nintervl = \"12h\"\n");
    let o = env.cmd().arg("check-config").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    // Three lines of [agent] come first, then [fim] on line 4.
    let want = format!(
        "{}:5:1: unknown field \"intervl\" in [fim], did you mean \"interval\"?",
        cfg.display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("5 | intervl = \"12h\"\n  | ^"), "{err}");
}

#[test]
fn check_config_lists_every_error() {
    let env = Env::new();
    env.config("[fim]\ncheck_mode = \"fsat\"\n[[fim.paths]]\npath = \"relative\"\n[alerts]\nlog_level = 99\n");
    let o = env.cmd().arg("check-config").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(":5:14: \"fsat\" is not one of fast, full"),
        "{err}"
    );
    assert!(
        err.contains(":7:8: path \"relative\" must be absolute"),
        "{err}"
    );
    assert!(err.contains(":9:13: level 99 is out of range"), "{err}");
    assert!(err.contains(": 3 error(s)"), "{err}");
}

#[test]
fn missing_config_file_is_an_error() {
    let o = hids()
        .args(["--config", "/nonexistent/hids.toml", "check-config"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read configuration /nonexistent/hids.toml"));
}

#[test]
fn control_characters_in_config_errors_are_escaped() {
    let env = Env::new();
    env.config("[fim]\n\"inter\u{1b}[31mval\" = 1\n");
    let o = env.cmd().arg("check-config").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(!err.contains('\u{1b}'), "{err:?}");
}
