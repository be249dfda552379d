//! SIGHUP applies the whole configuration to the running agent: log sources added, removed and
//! kept, FIM paths added, outputs changed; an invalid configuration changes nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::{alerts, append, count, setup, wait_for, Agent};
use crate::util::Env;

/// The configuration `setup` writes, with these FIM trees, log files and extra text.
fn write_config(env: &Env, trees: &[(&Path, bool)], logs: &[&Path], extra: &str) {
    let mut body = String::from("[fim]\ninterval = 1\n");
    for (t, realtime) in trees {
        body.push_str(&format!(
            "[[fim.paths]]\npath = \"{}\"\nrealtime = {realtime}\n",
            t.display()
        ));
    }
    for l in logs {
        body.push_str(&format!(
            "[[logs]]\npath = \"{}\"\nformat = \"syslog\"\n",
            l.display()
        ));
    }
    body.push_str(&format!(
        "[rules]\ndecoders = [\"{}\"]\nrules = [\"{}\"]\nlocal_rules = [\"{}\"]\n{extra}",
        env.path().join("decoders.xml").display(),
        env.path().join("rules.xml").display(),
        env.path().join("local_rules.xml").display(),
    ));
    env.config(&body);
}

/// Sends SIGHUP and waits for the `n`th successful reload.
fn reload(agent: &Agent, n: usize) {
    agent.signal("-HUP");
    wait_for(
        &|| agent.stderr().matches("reloaded the configuration").count() >= n,
        "the reload",
        agent,
    );
}

/// The stream lines (rule 100041) alerted, by their text after "stream-line ".
fn stream_lines(env: &Env) -> Vec<String> {
    alerts(env)
        .iter()
        .filter(|a| a["rule"]["id"] == 100041)
        .filter_map(|a| a["full_log"].as_str())
        .map(|s| s.trim_start_matches("stream-line ").to_string())
        .collect()
}

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("stream-line {prefix}{i}")).collect()
}

#[test]
fn agent_sighup_starts_added_log_sources_and_stops_removed_ones() {
    let env = Env::new();
    let (tree, log, _) = setup(&env);
    let second = env.path().join("second.log");
    fs::write(&second, "stream-line old-before-the-reload\n").unwrap();
    let agent = Agent::start(&env, "run.log");
    wait_for(
        &|| agent.stderr().contains("hids agent started"),
        "the start",
        &agent,
    );
    // The kept source is written to all through the reload: each line exactly once.
    const N: usize = 2000;
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for c in (0..N).collect::<Vec<_>>().chunks(20) {
                let chunk: Vec<String> = c.iter().map(|i| format!("stream-line a{i}")).collect();
                append(&log, &chunk);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    wait_for(&|| count(&env, 100041) > 0, "the first lines", &agent);
    write_config(&env, &[(&tree, false)], &[&log, &second], "");
    reload(&agent, 1);
    writer.join().unwrap();
    assert!(
        agent.stderr().contains("log source started"),
        "{}",
        agent.stderr()
    );
    // The new file source starts at its end, as at a first start: its new lines alert.
    append(&second, &lines("b", 0..3));
    wait_for(
        &|| {
            stream_lines(&env)
                .iter()
                .filter(|l| l.starts_with('b'))
                .count()
                == 3
        },
        "the new source's lines",
        &agent,
    );
    wait_for(
        &|| {
            stream_lines(&env)
                .iter()
                .filter(|l| l.starts_with('a'))
                .count()
                >= N
        },
        "the kept source's lines",
        &agent,
    );
    let seen = stream_lines(&env);
    let mut kept: Vec<usize> = seen
        .iter()
        .filter_map(|l| l.strip_prefix('a'))
        .map(|n| n.parse().unwrap())
        .collect();
    kept.sort_unstable();
    assert_eq!(kept, (0..N).collect::<Vec<_>>(), "each line once");
    assert!(!seen.iter().any(|l| l.starts_with("old")), "{seen:?}");

    // The first source removed: no longer read; the second goes on.
    write_config(&env, &[(&tree, false)], &[&second], "");
    reload(&agent, 2);
    assert!(agent.stderr().contains("log source stopped"));
    append(&log, &lines("gone", 0..2));
    append(&second, &lines("c", 0..2));
    wait_for(
        &|| {
            stream_lines(&env)
                .iter()
                .filter(|l| l.starts_with('c'))
                .count()
                == 2
        },
        "the remaining source's lines",
        &agent,
    );
    std::thread::sleep(Duration::from_secs(1));
    let seen = stream_lines(&env);
    assert!(!seen.iter().any(|l| l.starts_with("gone")), "{seen:?}");

    // Added back: it resumes from the position saved when it stopped.
    write_config(&env, &[(&tree, false)], &[&second, &log], "");
    reload(&agent, 3);
    append(&log, &lines("back", 0..1));
    wait_for(
        &|| stream_lines(&env).iter().any(|l| l == "back0"),
        "the source added back",
        &agent,
    );
    let gone = stream_lines(&env)
        .iter()
        .filter(|l| l.starts_with("gone"))
        .count();
    assert_eq!(gone, 2, "the lines written while removed are read once");
    assert_eq!(agent.stop(), 0);
}

fn fim_alerts(env: &Env, under: &Path) -> Vec<(u64, String)> {
    alerts(env)
        .iter()
        .filter_map(|a| {
            let p = a["fim"]["path"].as_str()?;
            Path::new(p)
                .starts_with(under)
                .then(|| (a["rule"]["id"].as_u64().unwrap_or(0), p.to_string()))
        })
        .collect()
}

#[test]
fn agent_sighup_adding_a_fim_path_records_it_silently_then_watches_it() {
    let env = Env::new();
    let (tree, log, _) = setup(&env);
    // In a directory of its own: nothing else written there wakes its watches.
    let tree2: PathBuf = env.path().join("quiet/tree2");
    fs::create_dir_all(tree2.join("sub")).unwrap();
    for i in 0..20 {
        fs::write(tree2.join(format!("f{i}")), format!("{i}\n")).unwrap();
        fs::write(tree2.join(format!("sub/g{i}")), format!("{i}\n")).unwrap();
    }
    let agent = Agent::start(&env, "run.log");
    wait_for(
        &|| agent.stderr().contains("FIM baseline recorded"),
        "the baseline",
        &agent,
    );
    write_config(&env, &[(&tree, false), (&tree2, true)], &[&log], "");
    reload(&agent, 1);
    wait_for(
        &|| agent.stderr().contains("FIM scan after the reload done"),
        "the scan of the new path",
        &agent,
    );
    assert!(agent.stderr().contains("FIM paths new to the baseline"));
    // A few scheduled scans later: still no "added" for what the new path held.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        fim_alerts(&env, &tree2).is_empty(),
        "{:?}",
        fim_alerts(&env, &tree2)
    );
    // A change there is reported (by the real-time watch or the next scan), once.
    fs::write(tree2.join("sub/g3"), "changed\n").unwrap();
    let changed = tree2.join("sub/g3").display().to_string();
    wait_for(
        &|| fim_alerts(&env, &tree2) == [(550, changed.clone())],
        "the change in the new path",
        &agent,
    );
    // The old path is still checked.
    fs::write(tree.join("bin/api"), "#!/bin/sh\necho v2\n").unwrap();
    wait_for(
        &|| count(&env, 100030) == 1,
        "the old path's change",
        &agent,
    );

    // The real-time path removed: its watches are released, its changes no longer reported.
    let watching = inotify_watches(&agent);
    assert!(watching >= 2, "{watching}");
    write_config(&env, &[(&tree, false)], &[&log], "");
    reload(&agent, 2);
    wait_for(
        &|| inotify_watches(&agent) <= watching - 2,
        "the watches released",
        &agent,
    );
    fs::write(tree2.join("f1"), "changed\n").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fim_alerts(&env, &tree2).len(), 1);
    assert_eq!(agent.stop(), 0);
}

/// The inotify watches the agent's process holds (all instances).
fn inotify_watches(agent: &Agent) -> usize {
    let dir = PathBuf::from(format!("/proc/{}/fdinfo", agent.child.id()));
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_to_string(e.path()).ok())
                .map(|t| t.lines().filter(|l| l.starts_with("inotify wd:")).count())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn agent_sighup_moving_the_json_alerts_delivers_there() {
    let env = Env::new();
    let (tree, log, _) = setup(&env);
    let agent = Agent::start(&env, "run.log");
    wait_for(
        &|| agent.stderr().contains("hids agent started"),
        "the start",
        &agent,
    );
    append(&log, &lines("x", 0..1));
    wait_for(&|| count(&env, 100041) == 1, "the first alert", &agent);
    let moved = env.path().join("moved.json");
    write_config(
        &env,
        &[(&tree, false)],
        &[&log],
        &format!("[alerts.json]\npath = \"{}\"\n", moved.display()),
    );
    reload(&agent, 1);
    append(&log, &lines("y", 0..2));
    let at_moved = || {
        fs::read_to_string(&moved)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("stream-line y"))
            .count()
    };
    wait_for(&|| at_moved() == 2, "the alerts at the new path", &agent);
    assert_eq!(count(&env, 100041), 1, "the old file gets no more alerts");
    assert_eq!(agent.stop(), 0);
}

#[test]
fn agent_sighup_with_an_invalid_configuration_keeps_everything_running() {
    let env = Env::new();
    let (tree, log, _) = setup(&env);
    let second = env.path().join("second.log");
    fs::write(&second, "").unwrap();
    write_config(&env, &[(&tree, false)], &[&log, &second], "");
    let agent = Agent::start(&env, "run.log");
    wait_for(
        &|| agent.stderr().contains("FIM baseline recorded"),
        "the baseline",
        &agent,
    );
    // Sources and outputs changed, but an unknown key makes the file invalid: nothing applies.
    let third = env.path().join("third.log");
    fs::write(&third, "").unwrap();
    write_config(
        &env,
        &[],
        &[&third],
        &format!(
            "[alerts.json]\npath = \"{}\"\nno_such_key = 1\n",
            env.path().join("moved.json").display()
        ),
    );
    agent.signal("-HUP");
    wait_for(
        &|| agent.stderr().contains("reload failed"),
        "the failed reload",
        &agent,
    );
    let mut agent = agent;
    assert!(agent.alive());
    assert!(agent.stderr().contains("no_such_key"), "{}", agent.stderr());
    append(&log, &lines("one", 0..1));
    append(&second, &lines("two", 0..1));
    append(&third, &lines("three", 0..1));
    fs::write(tree.join("bin/api"), "#!/bin/sh\necho v2\n").unwrap();
    wait_for(
        &|| {
            let s = stream_lines(&env);
            s.contains(&"one0".to_string())
                && s.contains(&"two0".to_string())
                && count(&env, 100030) == 1
        },
        "the sources, FIM and the output as before",
        &agent,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(!stream_lines(&env).contains(&"three0".to_string()));
    assert!(!env.path().join("moved.json").exists());
    assert!(!agent.stderr().contains("reloaded the configuration"));
    assert_eq!(agent.stop(), 0);
}

/// An agent started by `start` with a file source and a journald source whose journal holds one
/// entry and stays quiet, once journalctl follows it; the FIM tree and the log file.
fn agent_on_a_quiet_journal(
    env: &Env,
    start: fn(&Env, &str) -> Agent,
) -> (Agent, PathBuf, PathBuf) {
    let (tree, log, _) = setup(env);
    let jdir = env.path().join("journal");
    fs::create_dir(&jdir).unwrap();
    crate::logs::journal_remote(&jdir, &[(1_700_000_000_000_000, "sshd", "one", 1)]);
    let journald = format!(
        "[[logs]]\nformat = \"journald\"\njournal_dir = \"{}\"\n",
        jdir.display()
    );
    write_config(env, &[(&tree, false)], &[&log], &journald);
    let agent = start(env, "run.log");
    wait_for(
        &|| agent.stderr().contains("reading the journal"),
        "journalctl following a quiet journal",
        &agent,
    );
    (agent, tree, log)
}

#[test]
fn agent_sighup_removing_a_journald_source_stops_it_at_once() {
    let env = Env::new();
    let (agent, tree, log) = agent_on_a_quiet_journal(&env, Agent::start);
    // journalctl blocks while the journal is quiet: the source is stopped all the same, and
    // the reload does not wait for a new entry.
    write_config(&env, &[(&tree, false)], &[&log], "");
    reload(&agent, 1);
    let err = agent.stderr();
    assert!(err.contains("log source stopped"), "{err}");
    assert!(!err.contains("did not catch up"), "{err}");
    assert!(!err.contains("journalctl exited"), "{err}");
    append(&log, &lines("after", 0..1));
    wait_for(
        &|| stream_lines(&env).contains(&"after0".to_string()),
        "the file source after the reload",
        &agent,
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn stopping_the_whole_process_group_stops_journald_sources_quietly() {
    // Ctrl-C in a terminal or `systemctl stop` signals every process of the agent's group or
    // cgroup at once: journalctl must not die before the agent, which stops it itself.
    let env = Env::new();
    let (agent, _, _) = agent_on_a_quiet_journal(&env, Agent::start_as_group_leader);
    // journalctl is not in the agent's process group, so the group's signal misses it.
    let agent_pid = agent.child.id();
    let find = || {
        children(agent_pid)
            .into_iter()
            .find(|(_, comm, _)| comm == "journalctl")
    };
    wait_for(&|| find().is_some(), "journalctl under the agent", &agent);
    let journalctl = find().unwrap();
    assert_ne!(
        journalctl.2, agent_pid,
        "journalctl is in the agent's group"
    );
    agent.signal_group("-TERM");
    let err_path = env.path().join("run.log");
    assert_eq!(agent.wait_exit(), 0);
    let err = fs::read_to_string(err_path).unwrap();
    assert!(err.contains("hids agent stopped"), "{err}");
    assert!(!err.contains("journalctl exited"), "{err}");
    // And the agent stopped it.
    assert!(!Path::new(&format!("/proc/{}", journalctl.0)).exists());
}

/// (pid, command name, process group) of each child of `parent`.
fn children(parent: u32) -> Vec<(u32, String, u32)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let (Ok(pid), Some(Ok(ppid)), Some(Ok(pgrp))) = (
            stat[..open].trim().parse::<u32>(),
            rest.get(1).map(|v| v.parse::<u32>()),
            rest.get(2).map(|v| v.parse::<u32>()),
        ) else {
            continue;
        };
        if ppid == parent {
            out.push((pid, comm, pgrp));
        }
    }
    out
}

#[test]
fn agent_sighup_removing_a_file_source_releases_its_watches() {
    let env = Env::new();
    let (tree, log, _) = setup(&env);
    // In a directory of its own: nothing else written there wakes its watch.
    let quiet = env.path().join("quiet/q.log");
    fs::create_dir_all(quiet.parent().unwrap()).unwrap();
    fs::write(&quiet, "").unwrap();
    write_config(&env, &[(&tree, false)], &[&log, &quiet], "");
    let agent = Agent::start(&env, "run.log");
    wait_for(
        &|| agent.stderr().contains("hids agent started"),
        "the start",
        &agent,
    );
    wait_for(&|| inotify_watches(&agent) >= 2, "the watches", &agent);
    let before = inotify_watches(&agent);
    write_config(&env, &[(&tree, false)], &[&log], "");
    reload(&agent, 1);
    wait_for(
        &|| inotify_watches(&agent) < before,
        "the removed source's watch released",
        &agent,
    );
    assert_eq!(agent.stop(), 0);
}
