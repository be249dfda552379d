//! Real-time FIM end to end: `hids run` watching a tree with `realtime = true`, each kind of
//! change made for real and the alerts read back from alerts.json.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// A running `hids run` watching `tree/` in real time (no scheduled scans); killed on drop.
struct Agent {
    env: Env,
    tree: PathBuf,
    outside: PathBuf,
    child: Child,
    /// Alerts already looked at.
    seen: usize,
    marks: u32,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &mut dyn FnMut() -> bool, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !what() {
        assert!(Instant::now() < deadline, "timed out waiting for {label}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Agent {
    fn start(prepare: impl FnOnce(&Path)) -> Agent {
        Agent::start_with(prepare, "")
    }

    /// With `extra` (where `{dir}` is the temp dir) appended to the config.
    fn start_with(prepare: impl FnOnce(&Path), extra: &str) -> Agent {
        Agent::start_fim("interval = 0\n", prepare, extra)
    }

    /// With `fim` as the `[fim]` table's settings.
    fn start_fim(fim: &str, prepare: impl FnOnce(&Path), extra: &str) -> Agent {
        let env = Env::new();
        let tree = env.path().join("tree");
        let outside = env.path().join("outside");
        fs::create_dir(&tree).unwrap();
        fs::create_dir(&outside).unwrap();
        prepare(&tree);
        env.config(&format!(
            "[fim]\n{fim}[[fim.paths]]\npath = \"{}\"\nrealtime = true\n{}",
            tree.display(),
            extra.replace("{dir}", &env.path().display().to_string())
        ));
        let log = env.path().join("run.log");
        let child = env
            .cmd()
            .arg("run")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let agent = Agent {
            env,
            tree,
            outside,
            child,
            seen: 0,
            marks: 0,
        };
        wait_for(
            &mut || agent.log().contains("FIM baseline recorded"),
            "the baseline",
        );
        agent
    }

    fn log(&self) -> String {
        fs::read_to_string(self.env.path().join("run.log")).unwrap_or_default()
    }

    fn alerts(&self) -> Vec<Value> {
        let text = self.env.alerts_json();
        // The last line may still be being written.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The alerts caused by what was done since the last call, as (change, path relative to the
    /// tree) sorted: a mark file is created and its own alert awaited, so every earlier change
    /// has settled and been reported by then.
    fn changes(&mut self) -> Vec<(String, String)> {
        self.marks += 1;
        let mark = self.tree.join(format!("zz-mark-{}", self.marks));
        fs::write(&mark, "m").unwrap();
        let want = mark.to_str().unwrap().to_string();
        let mut all = Vec::new();
        wait_for(
            &mut || {
                all = self.alerts();
                all[self.seen.min(all.len())..]
                    .iter()
                    .any(|a| a["fim"]["path"] == want.as_str())
            },
            &format!("the alert for {want} (log: {})", self.log()),
        );
        let new = &all[self.seen..];
        self.seen = all.len();
        let mut out: Vec<(String, String)> = new
            .iter()
            .filter(|a| a["fim"]["path"] != want.as_str())
            .map(|a| {
                let p = a["fim"]["path"].as_str().unwrap_or("");
                let rel = Path::new(p)
                    .strip_prefix(&self.tree)
                    .map(|r| r.display().to_string())
                    .unwrap_or_else(|_| p.to_string());
                (a["fim"]["event"].as_str().unwrap_or("").to_string(), rel)
            })
            .collect();
        out.sort();
        out
    }
}

fn v(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

fn sh(script: &str) {
    let s = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(s.success(), "{script}");
}

#[test]
fn realtime_reports_each_kind_of_change_once() {
    let mut a = Agent::start(|t| {
        fs::write(t.join("conf"), "a=1\n").unwrap();
        fs::write(t.join("victim"), "v\n").unwrap();
        fs::write(t.join("old-name"), "n\n").unwrap();
        fs::write(t.join("leaving"), "l\n").unwrap();
        fs::write(t.join("bin"), "version 1\n").unwrap();
        fs::create_dir_all(t.join("gone/deep/er")).unwrap();
        fs::write(t.join("gone/deep/er/f"), "f").unwrap();
        fs::write(t.join("gone/g"), "g").unwrap();
    });
    let t = a.tree.clone();

    fs::write(t.join("new"), "hello\n").unwrap();
    assert_eq!(a.changes(), v(&[("added", "new")]), "create");

    fs::write(t.join("conf"), "a=2\n").unwrap();
    assert_eq!(a.changes(), v(&[("modified", "conf")]), "modify");

    fs::set_permissions(t.join("conf"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(a.changes(), v(&[("modified", "conf")]), "chmod");

    fs::remove_file(t.join("victim")).unwrap();
    assert_eq!(a.changes(), v(&[("deleted", "victim")]), "delete");

    fs::rename(t.join("old-name"), t.join("new-name")).unwrap();
    assert_eq!(
        a.changes(),
        v(&[("added", "new-name"), ("deleted", "old-name")]),
        "rename"
    );

    fs::write(a.outside.join("incoming"), "i\n").unwrap();
    fs::rename(a.outside.join("incoming"), t.join("incoming")).unwrap();
    assert_eq!(a.changes(), v(&[("added", "incoming")]), "move in");

    fs::rename(t.join("leaving"), a.outside.join("leaving")).unwrap();
    assert_eq!(a.changes(), v(&[("deleted", "leaving")]), "move out");

    // Atomic replace: a temp file written, then renamed over the target.
    fs::write(t.join(".bin.tmp"), "version 2\n").unwrap();
    fs::rename(t.join(".bin.tmp"), t.join("bin")).unwrap();
    assert_eq!(a.changes(), v(&[("modified", "bin")]), "atomic replace");

    sh(&format!(
        "mkdir -p {0}/a/b/c && echo x > {0}/a/b/c/f",
        t.display()
    ));
    assert_eq!(
        a.changes(),
        v(&[
            ("added", "a"),
            ("added", "a/b"),
            ("added", "a/b/c"),
            ("added", "a/b/c/f")
        ]),
        "nested new directories"
    );
    // The new directories are watched too.
    fs::write(t.join("a/b/c/f"), "y\n").unwrap();
    assert_eq!(a.changes(), v(&[("modified", "a/b/c/f")]), "in a new dir");

    fs::remove_dir_all(t.join("gone")).unwrap();
    assert_eq!(
        a.changes(),
        v(&[
            ("deleted", "gone"),
            ("deleted", "gone/deep"),
            ("deleted", "gone/deep/er"),
            ("deleted", "gone/deep/er/f"),
            ("deleted", "gone/g")
        ]),
        "tree removed"
    );

    // A watched directory renamed: its old watches dropped, the new name watched.
    fs::rename(t.join("a"), t.join("a2")).unwrap();
    let c = a.changes();
    assert!(c.contains(&("deleted".into(), "a/b/c/f".into())), "{c:?}");
    assert!(c.contains(&("added".into(), "a2/b/c/f".into())), "{c:?}");
    assert_eq!(c.len(), 8, "{c:?}");
    fs::write(t.join("a2/b/c/f"), "z\n").unwrap();
    assert_eq!(
        a.changes(),
        v(&[("modified", "a2/b/c/f")]),
        "in a renamed dir"
    );

    // A directory with contents moved in from outside: all of it added, and watched.
    fs::create_dir_all(a.outside.join("pkg/sub")).unwrap();
    fs::write(a.outside.join("pkg/sub/lib"), "l\n").unwrap();
    fs::rename(a.outside.join("pkg"), t.join("pkg")).unwrap();
    assert_eq!(
        a.changes(),
        v(&[
            ("added", "pkg"),
            ("added", "pkg/sub"),
            ("added", "pkg/sub/lib")
        ]),
        "directory moved in"
    );
    fs::write(t.join("pkg/sub/lib"), "l2\n").unwrap();
    assert_eq!(
        a.changes(),
        v(&[("modified", "pkg/sub/lib")]),
        "in a moved-in dir"
    );

    // Moved out again: all of it deleted, and no longer watched.
    fs::rename(t.join("pkg"), a.outside.join("pkg")).unwrap();
    assert_eq!(
        a.changes(),
        v(&[
            ("deleted", "pkg"),
            ("deleted", "pkg/sub"),
            ("deleted", "pkg/sub/lib")
        ]),
        "directory moved out"
    );
    fs::write(a.outside.join("pkg/sub/lib"), "l3\n").unwrap();
    assert_eq!(a.changes(), v(&[]), "outside the tree");

    // Nothing left for a scan to find: the baseline equals the tree.
    let o = a
        .env
        .cmd()
        .args(["fim", "check", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn realtime_flood_ends_with_a_baseline_equal_to_the_tree() {
    let mut a = Agent::start(|_| {});
    let t = a.tree.clone();
    // 5,000 changes: files created in new directories, half of them rewritten, a tenth deleted.
    for d in 0..50 {
        let dir = t.join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..60 {
            fs::write(dir.join(format!("f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    for d in 0..50 {
        for f in 0..30 {
            fs::write(t.join(format!("d{d}/f{f}")), "rewritten").unwrap();
        }
        for f in 50..60 {
            fs::remove_file(t.join(format!("d{d}/f{f}"))).unwrap();
        }
    }
    let c = a.changes();
    assert!(!c.is_empty());
    let o = a
        .env
        .cmd()
        .args(["fim", "check", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "a scan still found changes: {}{}",
        stdout(&o),
        stderr(&o)
    );
    // Every file that exists now was reported added.
    for d in 0..50 {
        for f in 0..50 {
            let rel = format!("d{d}/f{f}");
            assert!(
                c.contains(&("added".to_string(), rel.clone())),
                "{rel} not reported"
            );
        }
    }
}

#[test]
fn realtime_follows_a_single_file_replaced_by_rename() {
    let mut a = Agent::start_with(
        |t| {
            let etc = t.parent().unwrap().join("etc");
            fs::create_dir(&etc).unwrap();
            fs::write(etc.join("passwd"), "root:x:0:0\n").unwrap();
        },
        "[[fim.paths]]\npath = \"{dir}/etc/passwd\"\nrealtime = true\n",
    );
    let etc = a.env.path().join("etc");
    // A sibling: not configured, never reported.
    fs::write(etc.join("group"), "root:x:0\n").unwrap();
    let mut changes = Vec::new();
    for round in 0..3 {
        fs::write(etc.join("passwd+"), format!("root:x:0:0\nu{round}:x:1\n")).unwrap();
        fs::rename(etc.join("passwd+"), etc.join("passwd")).unwrap();
        changes.push(a.changes());
    }
    let passwd = etc.join("passwd").display().to_string();
    assert_eq!(
        changes,
        vec![
            vec![("modified".to_string(), passwd.clone())],
            vec![("modified".to_string(), passwd.clone())],
            vec![("modified".to_string(), passwd.clone())],
        ]
    );
}

#[test]
fn realtime_watches_a_configured_directory_again_after_it_is_removed_and_created_again() {
    let mut a = Agent::start_with(
        |t| {
            let app = t.parent().unwrap().join("srv/app");
            fs::create_dir_all(&app).unwrap();
            fs::write(app.join("bin"), "v1\n").unwrap();
        },
        "[[fim.paths]]\npath = \"{dir}/srv/app\"\nrealtime = true\n",
    );
    let srv = a.env.path().join("srv");
    let app = srv.join("app").display().to_string();
    let bin = srv.join("app/bin").display().to_string();
    let ch = |kind: &str, p: &str| (kind.to_string(), p.to_string());

    // The directory itself, then (round 2) its parent too.
    for (round, gone) in [(1, "srv/app"), (2, "srv")] {
        fs::remove_dir_all(a.env.path().join(gone)).unwrap();
        assert_eq!(
            a.changes(),
            vec![ch("deleted", &app), ch("deleted", &bin)],
            "round {round}"
        );
        fs::create_dir_all(srv.join("app")).unwrap();
        fs::write(srv.join("app/bin"), format!("v{round}\n")).unwrap();
        assert_eq!(
            a.changes(),
            vec![ch("added", &app), ch("added", &bin)],
            "round {round}"
        );
        // Watched again: a change inside is reported in real time.
        fs::write(srv.join("app/bin"), format!("v{round} changed\n")).unwrap();
        assert_eq!(a.changes(), vec![ch("modified", &bin)], "round {round}");
    }
}

#[test]
fn realtime_alerts_do_not_wait_for_a_scheduled_scan() {
    // A second tree scanned slowly (10 entries a second): a scheduled scan lasts about 10 s.
    let a = Agent::start_fim(
        "interval = \"1s\"\nmax_files_per_s = 10\n",
        |t| {
            fs::write(t.join("conf"), "a=1\n").unwrap();
            let big = t.parent().unwrap().join("big");
            fs::create_dir(&big).unwrap();
            for i in 0..100 {
                fs::write(big.join(format!("f{i:03}")), "x").unwrap();
            }
        },
        "[[fim.paths]]\npath = \"{dir}/big\"\n",
    );
    // The first scheduled scan starts a second after the one at start.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!a.log().contains("scheduled FIM scan done"), "{}", a.log());
    fs::write(a.tree.join("conf"), "a=2\n").unwrap();
    let want = a.tree.join("conf").display().to_string();
    wait_for(
        &mut || a.alerts().iter().any(|x| x["fim"]["path"] == want.as_str()),
        "the real-time alert",
    );
    assert!(
        !a.log().contains("scheduled FIM scan done"),
        "the alert came only after the scan: {}",
        a.log()
    );
}
