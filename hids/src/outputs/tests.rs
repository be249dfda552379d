use std::sync::atomic::AtomicUsize;

use super::*;
use crate::config::{AlertFileConfig, Rotate};
use crate::outputs::testutil::alert;

fn alerts_cfg(dir: &Path) -> AlertsConfig {
    let file = |name: &str| AlertFileConfig {
        enabled: true,
        path: dir.join(name),
        rotate: Rotate::Never,
        max_size: 1 << 20,
        keep: 2,
    };
    AlertsConfig {
        log_level: 3,
        file: file("alerts.log"),
        json: file("alerts.json"),
        syslog: vec![],
        email: None,
        spool_max: 1 << 20,
    }
}

fn fast() -> Options {
    Options {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..Options::default()
    }
}

/// An output that fails its first `fail` deliveries and records what it delivered.
struct Flaky {
    fail: Arc<AtomicUsize>,
    got: Arc<Mutex<Vec<u32>>>,
}

impl Output for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn selector(&self) -> Selector {
        Arc::new(|r| r.rule.level >= 5)
    }
    fn deliver(&mut self, batch: &[Pending]) -> Delivery {
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Delivery {
                delivered: vec![],
                outcome: Outcome::Failed("down".into()),
            };
        }
        let mut g = self.got.lock().unwrap();
        g.extend(batch.iter().map(|p| p.record.rule.id));
        Delivery {
            delivered: batch.iter().map(|p| p.id).collect(),
            outcome: Outcome::Done,
        }
    }
}

#[test]
fn files_receive_every_alert_and_the_spool_empties() {
    let d = tempfile::tempdir().unwrap();
    let cfg = alerts_cfg(d.path());
    let out = Outputs::start(&cfg, "web-01", &d.path().join("state"), fast()).unwrap();
    assert_eq!(out.names(), vec!["alerts.log", "alerts.json"]);
    for i in 0..50 {
        assert!(matches!(
            out.submit(&alert(1000 + i, 5, "x")).unwrap(),
            Submitted::Spooled(_)
        ));
    }
    assert_eq!(
        out.submit(&alert(1, 2, "below log_level")).unwrap(),
        Submitted::Ignored
    );
    let mut a = alert(2, 9, "no_log");
    a.rule.options.no_log = true;
    assert_eq!(out.submit(&a).unwrap(), Submitted::Ignored);
    assert!(out.wait_idle(Duration::from_secs(20)));
    out.shutdown(Duration::from_secs(5)).unwrap();
    let json = std::fs::read_to_string(d.path().join("alerts.json")).unwrap();
    let ids: Vec<u64> = json
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["rule"]["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (1000..1050).collect::<Vec<_>>());
    let log = std::fs::read_to_string(d.path().join("alerts.log")).unwrap();
    assert_eq!(log.matches("** Alert ").count(), 50);
}

#[test]
fn failing_output_is_retried_and_restart_resumes() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = alerts_cfg(d.path());
    cfg.file.enabled = false;
    cfg.json.enabled = false;
    let db = {
        let st = crate::state::State::open(&d.path().join("state")).unwrap();
        st.db_path.clone()
    };
    let got = Arc::new(Mutex::new(Vec::new()));
    // Down for the whole first run: nothing is delivered, everything stays spooled.
    let fail = Arc::new(AtomicUsize::new(usize::MAX));
    let out = Outputs::start_with(
        vec![Box::new(Flaky {
            fail: fail.clone(),
            got: got.clone(),
        })],
        &cfg,
        "h",
        &db,
        fast(),
    )
    .unwrap();
    for i in 0..10 {
        out.submit(&alert(i, 5, "x")).unwrap();
    }
    out.submit(&alert(99, 4, "not for flaky")).unwrap();
    assert_eq!(
        out.shutdown(Duration::from_millis(100)).unwrap(),
        vec![("flaky".to_string(), 10)]
    );
    assert!(got.lock().unwrap().is_empty());
    // Next run: fails a few times, then delivers each alert once, in order.
    fail.store(3, Ordering::SeqCst);
    let out = Outputs::start_with(
        vec![Box::new(Flaky {
            fail: fail.clone(),
            got: got.clone(),
        })],
        &cfg,
        "h",
        &db,
        fast(),
    )
    .unwrap();
    assert_eq!(out.pending().unwrap(), vec![("flaky".to_string(), 10)]);
    assert!(out.wait_idle(Duration::from_secs(20)));
    assert!(out.shutdown(Duration::from_secs(1)).unwrap().is_empty());
    assert_eq!(*got.lock().unwrap(), (0..10).collect::<Vec<_>>());
}

#[test]
fn spool_full_raises_an_alert() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = alerts_cfg(d.path());
    cfg.spool_max = 20_000;
    cfg.file.enabled = false;
    let db = {
        let st = crate::state::State::open(&d.path().join("state")).unwrap();
        st.db_path.clone()
    };
    // The JSON file cannot be written (its directory is a file), so alerts pile up.
    std::fs::write(d.path().join("blocker"), "").unwrap();
    cfg.json.path = d.path().join("blocker/alerts.json");
    let out = Outputs::start_with(
        vec![Box::new(alerts_json::AlertsJson::new(&cfg.json))],
        &cfg,
        "h",
        &db,
        fast(),
    )
    .unwrap();
    for i in 0..100 {
        out.submit(&alert(i, 5, "x")).unwrap();
    }
    out.shutdown(Duration::from_millis(50)).unwrap();
    let c = crate::state::open_db(&db).unwrap();
    let bodies: Vec<String> = c
        .prepare("SELECT body FROM spool_alert ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(bodies.len() < 100);
    let full: Vec<&String> = bodies
        .iter()
        .filter(|b| b.contains(&format!("\"id\":{SPOOL_FULL_RULE},")))
        .collect();
    assert_eq!(full.len(), 1, "one alert per minute at most");
    assert!(full[0].contains("alert spool full"));
}

#[test]
fn replaced_outputs_deliver_what_waits_for_them() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let mut cfg = alerts_cfg(d.path());
    cfg.file.enabled = false;
    // alerts.json cannot be written at first (its directory is a file): alerts wait.
    std::fs::write(d.path().join("blocker"), "").unwrap();
    cfg.json.path = d.path().join("blocker/alerts.json");
    let mut out = Outputs::start(&cfg, "h", &state, fast()).unwrap();
    let counters = out.delivery_counters();
    for i in 0..5 {
        out.submit(&alert(i, 5, "x")).unwrap();
    }
    assert_eq!(out.pending().unwrap(), vec![("alerts.json".to_string(), 5)]);
    // The path moved (a reload): the same output takes what waits, then new alerts.
    cfg.json.path = d.path().join("moved.json");
    out.replace(Prepared::new(&cfg, "h", &state).unwrap())
        .unwrap();
    out.submit(&alert(5, 5, "x")).unwrap();
    assert!(out.wait_idle(Duration::from_secs(20)));
    let moved = std::fs::read_to_string(d.path().join("moved.json")).unwrap();
    assert_eq!(moved.lines().count(), 6);
    let names = |c: &DeliveryList| -> Vec<String> {
        c.lock().unwrap().iter().map(|(n, _)| n.clone()).collect()
    };
    assert_eq!(names(&counters), ["alerts.json"]);
    // alerts.json removed, alerts.log added: what waits for the removed output is dropped.
    cfg.json.enabled = false;
    cfg.file.enabled = true;
    let next = Prepared::new(&cfg, "h", &state).unwrap();
    assert_eq!(next.names(), ["alerts.log"]);
    out.replace(next).unwrap();
    assert_eq!(names(&counters), ["alerts.log"]);
    out.submit(&alert(7, 5, "x")).unwrap();
    assert!(out.wait_idle(Duration::from_secs(20)));
    out.shutdown(Duration::from_secs(1)).unwrap();
    let log = std::fs::read_to_string(d.path().join("alerts.log")).unwrap();
    assert_eq!(log.matches("** Alert ").count(), 1);
}
