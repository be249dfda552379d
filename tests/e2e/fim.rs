//! File integrity end to end: `hids fim init|check|list|show` and `hids run` on real trees in temp
//! dirs.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// An env with a tree `tree/` watched with the given extra `[[fim.paths]]` options.
fn setup(opts: &str) -> (Env, PathBuf) {
    let env = Env::new();
    let tree = env.path().join("tree");
    fs::create_dir(&tree).unwrap();
    env.config(&format!(
        "[fim]\ninterval = 0\n[[fim.paths]]\npath = \"{}\"\n{opts}\n",
        tree.display()
    ));
    (env, tree)
}

fn hids_in(env: &Env, args: &[&str]) -> Output {
    env.cmd().args(args).output().unwrap()
}

fn init(env: &Env) {
    let o = hids_in(env, &["fim", "init"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

/// `fim check --json`: the exit code and the changes by path.
fn check(env: &Env) -> (i32, Vec<Value>) {
    let o = hids_in(env, &["fim", "check", "--json"]);
    let code = o.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "{}{}", stdout(&o), stderr(&o));
    let changes = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (code, changes)
}

fn find<'a>(changes: &'a [Value], path: &Path) -> &'a Value {
    let p = path.to_str().unwrap();
    changes
        .iter()
        .find(|c| c["path"] == p)
        .unwrap_or_else(|| panic!("no change for {p} in {changes:#?}"))
}

fn changed(c: &Value) -> Vec<String> {
    c["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn sh(cmd: &str, args: &[&str]) {
    let s = Command::new(cmd).args(args).status().unwrap();
    assert!(s.success(), "{cmd} {args:?}");
}

/// Waits for a child with a generous timeout; kills it and fails if it hangs.
fn wait_or_kill(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn check_before_init_is_an_error() {
    let (env, _) = setup("");
    let o = hids_in(&env, &["fim", "check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("hids fim init"), "{}", stderr(&o));
}

#[test]
fn add_modify_delete_rename() {
    let (env, tree) = setup("");
    fs::write(tree.join("keep"), "same\n").unwrap();
    fs::write(tree.join("mod"), "one\n").unwrap();
    fs::write(tree.join("del"), "bye\n").unwrap();
    fs::write(tree.join("old-name"), "moving\n").unwrap();
    init(&env);
    assert_eq!(check(&env), (0, vec![]), "nothing changed yet");

    fs::write(tree.join("mod"), "one two\n").unwrap();
    fs::remove_file(tree.join("del")).unwrap();
    fs::write(tree.join("new"), "hi\n").unwrap();
    fs::rename(tree.join("old-name"), tree.join("new-name")).unwrap();
    let (code, changes) = check(&env);
    assert_eq!(code, 1);
    assert_eq!(changes.len(), 5, "{changes:#?}");
    let m = find(&changes, &tree.join("mod"));
    assert_eq!(m["change"], "modified");
    assert_eq!(m["type"], "file");
    assert!(changed(m).contains(&"hash".to_string()), "{m}");
    assert!(changed(m).contains(&"size".to_string()), "{m}");
    assert_eq!(m["old"]["size"], 4);
    assert_eq!(m["new"]["size"], 8);
    assert_eq!(
        m["new"]["hash"].as_str().unwrap(),
        blake3::hash(b"one two\n").to_hex().as_str()
    );
    assert_eq!(find(&changes, &tree.join("del"))["change"], "deleted");
    assert_eq!(find(&changes, &tree.join("new"))["change"], "added");
    // A rename is a delete plus an add.
    assert_eq!(find(&changes, &tree.join("old-name"))["change"], "deleted");
    assert_eq!(find(&changes, &tree.join("new-name"))["change"], "added");
    // The baseline was updated: the next check is quiet.
    assert_eq!(check(&env), (0, vec![]));

    // The text output reads like syscheck, and show lists the history.
    fs::write(tree.join("mod"), "three\n").unwrap();
    let o = hids_in(&env, &["fim", "check"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("File '{}' modified", tree.join("mod").display())),
        "{out}"
    );
    assert!(out.contains("0 added, 1 modified, 0 deleted"), "{out}");
    let mod_path = tree.join("mod");
    let o = hids_in(&env, &["fim", "show", mod_path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("integrity:   ok"), "{out}");
    assert_eq!(out.matches("  modified: ").count(), 2, "{out}");
    let o = hids_in(&env, &["fim", "list", tree.to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(out.contains(tree.join("new-name").to_str().unwrap()));
    let o = hids_in(&env, &["fim", "show", "/nonexistent/path"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn each_attribute_changed_alone_is_reported_alone() {
    let (env, tree) = setup("");
    for f in ["perm", "owner", "group", "mtime", "hash", "inode"] {
        fs::write(tree.join(f), format!("{f} content\n")).unwrap();
    }
    std::os::unix::fs::symlink("target-a", tree.join("link")).unwrap();
    init(&env);

    fs::set_permissions(tree.join("perm"), fs::Permissions::from_mode(0o600)).unwrap();
    let root = euid() == 0;
    if root {
        std::os::unix::fs::chown(tree.join("owner"), Some(65534), None).unwrap();
        std::os::unix::fs::chown(tree.join("group"), None, Some(65534)).unwrap();
    }
    sh(
        "touch",
        &[
            "-m",
            "-d",
            "2001-02-03 04:05:06",
            tree.join("mtime").to_str().unwrap(),
        ],
    );
    // Same size, other bytes, mtime put back: only the hash can tell.
    let h = tree.join("hash");
    let before = fs::metadata(&h).unwrap();
    fs::write(&h, "HASH content\n").unwrap();
    sh(
        "touch",
        &[
            "-m",
            "-d",
            &format!("@{}.{:09}", before.mtime(), before.mtime_nsec()),
            h.to_str().unwrap(),
        ],
    );
    // A copy with every attribute kept, moved over the original: a new inode only.
    let i = tree.join("inode");
    sh(
        "cp",
        &[
            "-p",
            i.to_str().unwrap(),
            tree.join(".tmp").to_str().unwrap(),
        ],
    );
    fs::rename(tree.join(".tmp"), &i).unwrap();

    let (code, changes) = check(&env);
    assert_eq!(code, 1);
    assert_eq!(changed(find(&changes, &tree.join("perm"))), ["perm"]);
    assert_eq!(changed(find(&changes, &tree.join("mtime"))), ["mtime"]);
    assert_eq!(changed(find(&changes, &tree.join("hash"))), ["hash"]);
    assert_eq!(changed(find(&changes, &tree.join("inode"))), ["inode"]);
    if root {
        let o = find(&changes, &tree.join("owner"));
        assert_eq!(changed(o), ["owner"]);
        assert_eq!(o["new"]["uid"], 65534);
        assert_eq!(changed(find(&changes, &tree.join("group"))), ["group"]);
    }
    let p = find(&changes, &tree.join("perm"));
    assert_eq!(p["old"]["perm"], "0644");
    assert_eq!(p["new"]["perm"], "0600");
    let expected = if root { 6 } else { 4 };
    assert_eq!(changes.len(), expected, "{changes:#?}");
}

/// The effective uid, from /proc (no libc in the tests).
fn euid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn symlink_target_and_type_changes() {
    let (env, tree) = setup("checks = [\"type\", \"link\"]");
    std::os::unix::fs::symlink("target-a", tree.join("link")).unwrap();
    fs::write(tree.join("was-file"), "x").unwrap();
    init(&env);
    fs::remove_file(tree.join("link")).unwrap();
    std::os::unix::fs::symlink("target-b", tree.join("link")).unwrap();
    fs::remove_file(tree.join("was-file")).unwrap();
    fs::create_dir(tree.join("was-file")).unwrap();
    let (code, changes) = check(&env);
    assert_eq!(code, 1);
    let l = find(&changes, &tree.join("link"));
    assert_eq!(changed(l), ["link"]);
    assert_eq!(l["old"]["link"], "target-a");
    assert_eq!(l["new"]["link"], "target-b");
    let t = find(&changes, &tree.join("was-file"));
    assert_eq!(changed(t), ["type"]);
    assert_eq!(t["new"]["type"], "directory");
}

#[test]
fn ignore_restrict_and_depth() {
    let (env, tree) =
        setup("ignore = [\"*.swp\", \"cache\"]\nignore_regex = [\"\\\\.tmp$\"]\ndepth = 1");
    fs::create_dir_all(tree.join("a/b/c")).unwrap();
    fs::create_dir_all(tree.join("cache")).unwrap();
    for f in [
        "x.swp",
        "y.tmp",
        "z.conf",
        "cache/in-cache",
        "a/one",
        "a/b/two",
        "a/b/c/three",
    ] {
        fs::write(tree.join(f), f).unwrap();
    }
    init(&env);
    let o = hids_in(&env, &["fim", "list", "--json"]);
    let listed: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // The tree's entries (the baseline also holds the agent's own binary and config).
    let rel: Vec<String> = listed
        .iter()
        .filter_map(|p| Some(p.strip_prefix(tree.to_str().unwrap())?.to_string()))
        .collect();
    // depth 1: the tree's entries, and one level below them.
    assert_eq!(rel, ["", "/a", "/a/b", "/a/one", "/z.conf"], "{rel:?}");
    // Changes to what is not recorded are not reported.
    fs::write(tree.join("x.swp"), "changed").unwrap();
    fs::write(tree.join("a/b/two"), "changed").unwrap();
    fs::write(tree.join("cache/in-cache"), "changed").unwrap();
    assert_eq!(check(&env), (0, vec![]));

    // restrict: only matching files are recorded.
    let (env, tree) = setup("restrict = [\"*.conf\"]\nrestrict_regex = [\"/keep[^/]*$\"]");
    fs::create_dir(tree.join("d")).unwrap();
    for f in ["a.conf", "b.txt", "d/c.conf", "d/keepme", "d/other"] {
        fs::write(tree.join(f), f).unwrap();
    }
    init(&env);
    let o = hids_in(&env, &["fim", "list"]);
    let out = stdout(&o);
    for f in ["a.conf", "d/c.conf", "d/keepme"] {
        assert!(out.contains(tree.join(f).to_str().unwrap()), "{f}: {out}");
    }
    for f in ["b.txt", "d/other"] {
        assert!(!out.contains(tree.join(f).to_str().unwrap()), "{f}: {out}");
    }
    fs::write(tree.join("b.txt"), "new content").unwrap();
    fs::write(tree.join("a.conf"), "new content").unwrap();
    let (code, changes) = check(&env);
    assert_eq!(code, 1);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    find(&changes, &tree.join("a.conf"));
}

#[test]
fn a_fifo_in_the_tree_is_recorded_and_never_opened() {
    let (env, tree) = setup("report_changes = true\nfollow_symlinks = true");
    sh("mkfifo", &[tree.join("pipe").to_str().unwrap()]);
    std::os::unix::fs::symlink("pipe", tree.join("to-pipe")).unwrap();
    fs::write(tree.join("file"), "x").unwrap();
    let child = env
        .cmd()
        .args(["fim", "init"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_or_kill(child, "fim init with a FIFO");
    assert!(o.status.success(), "{}", stderr(&o));
    let pipe = tree.join("pipe");
    let o = hids_in(&env, &["fim", "show", "--json", pipe.to_str().unwrap()]);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["attrs"]["type"], "fifo");
    assert!(v["attrs"].get("hash").is_none());
    let child = env
        .cmd()
        .args(["fim", "check"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_or_kill(child, "fim check with a FIFO");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn symlink_loops_terminate() {
    let (env, tree) = setup("follow_symlinks = true");
    fs::create_dir_all(tree.join("a/b")).unwrap();
    std::os::unix::fs::symlink("../..", tree.join("a/b/up")).unwrap();
    std::os::unix::fs::symlink("self", tree.join("self")).unwrap();
    fs::write(tree.join("a/f"), "x").unwrap();
    let child = env
        .cmd()
        .args(["fim", "init", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_or_kill(child, "fim init over a symlink loop");
    assert!(o.status.success(), "{}", stderr(&o));
    let s: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    // tree, a, a/b, a/b/up (a directory seen again: not entered), a/f, self (dangling loop);
    // and the agent's own binary and config.
    assert_eq!(s["entries"], 8, "{s}");
    assert_eq!(check(&env), (0, vec![]));
}

#[test]
fn non_utf8_names_are_stored_and_shown_losslessly() {
    let (env, tree) = setup("");
    let name = OsString::from_vec(b"caf\xe9-\xff.conf".to_vec());
    let path = tree.join(&name);
    fs::write(&path, "a").unwrap();
    init(&env);
    fs::write(&path, "b").unwrap();
    let (code, changes) = check(&env);
    assert_eq!(code, 1);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let c = &changes[0];
    let shown = format!("{}/caf\\xe9-\\xff.conf", tree.display());
    assert_eq!(c["path"], shown.as_str());
    assert_eq!(c["path_escaped"], true);
    // The escaped form is accepted back.
    let o = hids_in(&env, &["fim", "show", &shown]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("(not UTF-8: escaped)"));
    fs::remove_file(&path).unwrap();
    let (_, changes) = check(&env);
    assert_eq!(changes[0]["change"], "deleted");
    assert_eq!(changes[0]["path"], shown.as_str());
}

/// Every byte of every file under `dir`.
fn all_bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes_under(&p));
        } else {
            out.extend(fs::read(&p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn nodiff_content_never_reaches_the_database_or_any_output() {
    let (env, tree) = setup("report_changes = true\nnodiff = [\"*.key\", \".env\"]");
    fs::write(tree.join("api.key"), "SECRET-ALPHA-4242\n").unwrap();
    fs::write(tree.join(".env"), "PASSWORD=SECRET-BETA-4242\n").unwrap();
    fs::write(tree.join("app.conf"), "visible=1\n").unwrap();
    init(&env);
    fs::write(tree.join("api.key"), "SECRET-GAMMA-4242\n").unwrap();
    fs::write(tree.join(".env"), "PASSWORD=SECRET-DELTA-4242\n").unwrap();
    fs::write(tree.join("app.conf"), "visible=2\n").unwrap();
    let mut outputs = Vec::new();
    for args in [
        &["fim", "check", "--json"][..],
        &["fim", "list", "--json"],
        &["fim", "list"],
    ] {
        let o = hids_in(&env, args);
        outputs.extend(o.stdout);
        outputs.extend(o.stderr);
    }
    // The change to a nodiff file is reported by its hash, without a diff.
    fs::write(tree.join("api.key"), "SECRET-EPSILON-4242\n").unwrap();
    let (code, changes) = check(&env);
    assert_eq!(code, 1);
    let k = find(&changes, &tree.join("api.key"));
    assert!(changed(k).contains(&"hash".to_string()));
    assert!(k["diff"].is_null(), "{k}");
    outputs.extend(serde_json::to_vec(&changes).unwrap());
    for f in ["api.key", ".env", "app.conf"] {
        for json in [false, true] {
            let p = tree.join(f);
            let mut args = vec!["fim", "show", p.to_str().unwrap()];
            if json {
                args.push("--json");
            }
            let o = hids_in(&env, &args);
            outputs.extend(o.stdout);
        }
    }
    let o = hids_in(&env, &["fim", "check"]);
    outputs.extend(o.stdout);
    // The text file's diff is there: the outputs do show content where allowed.
    assert!(contains(&outputs, "+visible=2"));
    let db = all_bytes_under(&env.state_dir());
    for secret in [
        "SECRET-ALPHA",
        "SECRET-BETA",
        "SECRET-GAMMA",
        "SECRET-DELTA",
        "SECRET-EPSILON",
    ] {
        assert!(!contains(&outputs, secret), "{secret} in the output");
        assert!(!contains(&db, secret), "{secret} in the state dir");
    }
}

#[test]
fn a_tampered_baseline_row_is_reported_not_trusted() {
    let (env, tree) = setup("");
    fs::write(tree.join("bin"), "original").unwrap();
    init(&env);
    // Someone edits the database to hide a change: the hash of what the file will become.
    fs::write(tree.join("bin"), "trojaned").unwrap();
    let db = rusqlite::Connection::open(env.state_dir().join("hids.db")).unwrap();
    let n = db
        .execute(
            // The row of `bin` (the baseline also holds the agent's own binary and config).
            "UPDATE fim_entry SET hash = ?1, size = 8 WHERE type = 'file' AND hash = ?2",
            [
                blake3::hash(b"trojaned").as_bytes().to_vec(),
                blake3::hash(b"original").as_bytes().to_vec(),
            ],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    let (code, changes) = check(&env);
    assert_eq!(code, 1);
    let c = find(&changes, &tree.join("bin"));
    assert_eq!(c["tampered"], true, "{c}");
    let o = hids_in(&env, &["fim", "check"]);
    assert_eq!(o.status.code(), Some(0), "the row was rewritten and sealed");
    // The text form says so.
    fs::write(tree.join("bin"), "again").unwrap();
    let db = rusqlite::Connection::open(env.state_dir().join("hids.db")).unwrap();
    let n = db
        .execute(
            "UPDATE fim_entry SET mode = 4095 WHERE type = 'file' AND size = 8",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    let o = hids_in(&env, &["fim", "check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("Baseline tampered"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("1 baseline entries TAMPERED"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_small_config_edit_gives_the_exact_diff() {
    let (env, tree) = setup("report_changes = true");
    let conf = tree.join("nginx.conf");
    let mut lines: Vec<String> = (1..=20).map(|i| format!("line {i};")).collect();
    fs::write(&conf, lines.join("\n") + "\n").unwrap();
    fs::write(tree.join("blob.bin"), b"\x7fELF\0\x01\x02").unwrap();
    init(&env);
    lines[9] = "line 10 changed;".into();
    fs::write(&conf, lines.join("\n") + "\n").unwrap();
    fs::write(tree.join("blob.bin"), b"\x7fELF\0\x01\x03").unwrap();
    let (_, changes) = check(&env);
    let d = find(&changes, &conf)["diff"].as_str().unwrap().to_string();
    let label = conf.display();
    assert_eq!(
        d,
        format!(
            "--- {label} (baseline)\n+++ {label} (now)\n@@ -7,7 +7,7 @@\n line 7;\n line 8;\n \
             line 9;\n-line 10;\n+line 10 changed;\n line 11;\n line 12;\n line 13;\n"
        )
    );
    assert_eq!(
        find(&changes, &tree.join("blob.bin"))["diff"],
        "binary file changed"
    );
}

/// Runs `cmd` as nobody when we are root (CI), else as we are.
fn as_unprivileged(cmd: Command) -> Command {
    if euid() != 0 {
        return cmd;
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    c.arg(cmd.get_program());
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

#[test]
fn unreadable_entries_are_warned_once_per_path_and_never_fatal() {
    let env = Env::new();
    fs::set_permissions(env.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let tree = env.path().join("tree");
    let other = env.path().join("other");
    for d in [&tree, &other] {
        fs::create_dir_all(d.join("open")).unwrap();
        fs::create_dir_all(d.join("closed/deeper")).unwrap();
        fs::write(d.join("open/readable"), "r").unwrap();
        fs::write(d.join("secret"), "s").unwrap();
        fs::write(d.join("closed/x"), "x").unwrap();
        fs::write(d.join("closed/deeper/y"), "y").unwrap();
    }
    // Owned by root (when root) or by us: in both cases unreadable to the scanning user.
    for d in [&tree, &other] {
        fs::set_permissions(d.join("closed"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(d.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    }
    let state = env.path().join("state");
    if euid() == 0 {
        // The state directory must belong to the user hids runs as.
        fs::create_dir(&state).unwrap();
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    }
    let cfg = env.path().join("config.toml");
    fs::write(
        &cfg,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[fim]\ninterval = 0\n[[fim.paths]]\npath = \"{}\"\n\
             [[fim.paths]]\npath = \"{}\"\n[[fim.paths]]\npath = \"{}/missing\"\n",
            state.display(),
            tree.display(),
            other.display(),
            env.path().display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut c = hids();
        c.arg("--config").arg(&cfg).args(args);
        as_unprivileged(c).output().unwrap()
    };
    let o = run(&["fim", "init"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    // One warning per configured path, whatever the number of unreadable entries.
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 3, "{err}");
    assert!(
        warnings.iter().any(|w| w.contains(tree.to_str().unwrap())
            && w.contains("2 entries")
            && w.contains("permission denied")),
        "{err}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("missing: does not exist")),
        "{err}"
    );
    // The unreadable file is recorded by its metadata, without a hash.
    let secret = tree.join("secret");
    let o = run(&["fim", "show", "--json", secret.to_str().unwrap()]);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["attrs"]["hash_skipped"], "permission denied");
    // A check finds nothing (nothing under the closed directory is "deleted") and still warns once.
    let o = run(&["fim", "check"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    fs::write(tree.join("open/readable"), "changed").unwrap();
    let o = run(&["fim", "check", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    for d in [&tree, &other] {
        fs::set_permissions(d.join("closed"), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn hids_run_records_the_baseline_then_alerts_on_changes_and_stops_cleanly() {
    let (env, tree) = setup("");
    fs::write(tree.join("app.conf"), "a=1\n").unwrap();
    // Scan every second.
    let body = format!(
        "[fim]\ninterval = 1\n[[fim.paths]]\npath = \"{}\"\nreport_changes = true\n",
        tree.display()
    );
    env.config(&body);
    let log = env.path().join("run.log");
    let mut child = env
        .cmd()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let wait_for = |what: &dyn Fn() -> bool, label: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !what() {
            assert!(Instant::now() < deadline, "timed out waiting for {label}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let read_log = || fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        &|| read_log().contains("FIM baseline recorded"),
        "the baseline",
    );
    assert!(read_log().contains("no FIM baseline yet"), "{}", read_log());
    fs::write(tree.join("app.conf"), "a=2\n").unwrap();
    let alerts = env.state_dir().join("alerts.json");
    wait_for(&|| env.alerts_json().contains("app.conf"), "the alert");
    // Stop with SIGTERM: a clean exit 0.
    sh("kill", &["-TERM", &child.id().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "hids run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", read_log());
    let line = env.alerts_json();
    let alert: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(alert["location"], "fim");
    assert_eq!(alert["rule"]["level"], 7);
    assert!(alert["full_log"].as_str().unwrap().starts_with(&format!(
        "File '{}' modified",
        tree.join("app.conf").display()
    )));
    assert!(alert["fim"]["diff"].as_str().unwrap().contains("+a=2"));
    let text = fs::read_to_string(env.state_dir().join("alerts.log")).unwrap();
    assert!(text.contains("Rule: 550 (level 7)"), "{text}");
    assert_eq!(
        fs::metadata(&alerts).unwrap().mode() & 0o777,
        0o600,
        "alert files are private"
    );
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn bind_mount_cycles_terminate() {
    let (env, tree) = setup("one_file_system = false");
    fs::create_dir_all(tree.join("sub/loop")).unwrap();
    fs::write(tree.join("sub/f"), "x").unwrap();
    let target = tree.join("sub/loop");
    let mounted = euid() == 0
        && Command::new("mount")
            .args(["--bind", tree.to_str().unwrap(), target.to_str().unwrap()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("bind_mount_cycles_terminate: cannot bind-mount here (needs root); skipped");
        return;
    }
    let _guard = Unmount(target.clone());
    let child = env
        .cmd()
        .args(["fim", "init", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_or_kill(child, "fim init over a bind-mount cycle");
    assert!(o.status.success(), "{}", stderr(&o));
    let s: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    // tree, sub, sub/f, sub/loop (the tree again: recorded, not entered); and the agent's own
    // binary and config.
    assert_eq!(s["entries"], 6, "{s}");
}

/// `hids run` on `env` until its start-up FIM work is logged as `done`, then SIGTERM; its log.
fn run_until(env: &Env, done: &str) -> String {
    let agent = crate::agent::Agent::start(env, "run.log");
    crate::agent::wait_for(&|| agent.stderr().contains(done), done, &agent);
    let log = agent.stderr();
    assert_eq!(agent.stop(), 0, "{log}");
    log
}

#[test]
fn fim_commands_and_the_agent_agree_on_the_agents_own_files() {
    // `hids fim init`, then the agent: its scan at start finds nothing new (its binary and
    // config are in the baseline already), and `hids fim check` afterwards finds nothing gone.
    let (env, tree) = setup("");
    fs::write(tree.join("app.conf"), "a=1\n").unwrap();
    init(&env);
    let log = run_until(&env, "FIM scan at start done");
    assert!(log.contains("the agent's own file is under FIM"), "{log}");
    let fim_alerts: Vec<Value> = crate::agent::alerts(&env)
        .into_iter()
        .filter(|a| a["location"] == "fim")
        .collect();
    assert!(fim_alerts.is_empty(), "{fim_alerts:#?}\n{log}");
    assert_eq!(check(&env), (0, Vec::new()));

    // The other way round: the agent records the baseline, `hids fim check` finds no change,
    // and it does cover the agent's own files (an edit of the config is reported).
    let (env, _tree) = setup("");
    run_until(&env, "FIM baseline recorded");
    assert_eq!(check(&env), (0, Vec::new()));
    let config = env.path().join("config.toml").canonicalize().unwrap();
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str("# edited\n");
    fs::write(&config, text).unwrap();
    let (code, changes) = check(&env);
    assert_eq!(code, 1, "{changes:#?}");
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(
        find(&changes, &config)["change"],
        "modified",
        "{changes:#?}"
    );
}
