//! `hids alerts`: send a test alert through the configured outputs, show what the spool holds,
//! deliver what an earlier run left in it. The operator's way to check a SIEM or SMTP setup
//! before a real alert depends on it.

use std::time::{Duration, Instant, SystemTime};

use super::record::{AlertRecord, Fields};
use super::{internal_record, Options, OutputError, Outputs, Spool, Spooler, Submitted};
use crate::config::Config;

/// The rule id of test alerts.
pub const TEST_RULE: u32 = 871;

/// What a test alert says.
#[derive(Debug, Clone)]
pub struct TestAlert {
    pub level: u8,
    pub rule_id: u32,
    pub description: String,
    pub full_log: Option<String>,
    pub groups: Vec<String>,
    pub fields: Vec<(String, String)>,
    pub alert_by_email: bool,
}

impl Default for TestAlert {
    fn default() -> TestAlert {
        TestAlert {
            level: 7,
            rule_id: TEST_RULE,
            description: "hids test alert".into(),
            full_log: None,
            groups: vec!["hids".into(), "test".into()],
            fields: Vec::new(),
            alert_by_email: false,
        }
    }
}

/// What a run of the outputs left.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Alerts spooled (by a test).
    pub spooled: u64,
    /// Still waiting, per output, when the run ended.
    pub waiting: Vec<(String, u64)>,
    pub outputs: Vec<String>,
    /// A running agent held the spool and delivered (or will deliver) the alerts.
    pub by_agent: bool,
}

fn record(cfg: &Config, t: &TestAlert, n: u32) -> AlertRecord {
    let mut r = internal_record(
        &cfg.agent.hostname,
        t.rule_id,
        t.level,
        t.description.clone(),
        t.groups.clone(),
    );
    r.location = "hids alerts test".into();
    r.timestamp = super::record::rfc3339(SystemTime::now());
    r.full_log = Some(
        t.full_log
            .clone()
            .unwrap_or_else(|| format!("test alert {n} from hids alerts test")),
    );
    r.data = Fields(t.fields.clone());
    r.rule.firedtimes = u64::from(n);
    r.rule.options.alert_by_email = t.alert_by_email;
    r
}

/// Sends `count` test alerts and waits up to `wait` for their delivery. Undelivered alerts stay
/// in the spool for the next start. When an agent is running, the alerts are only spooled and the
/// agent delivers them.
pub fn test(
    cfg: &Config,
    t: &TestAlert,
    count: u32,
    wait: Duration,
) -> Result<Report, OutputError> {
    let out = match Outputs::start(
        &cfg.alerts,
        &cfg.agent.hostname,
        &cfg.agent.state_dir,
        Options::default(),
    ) {
        Ok(out) => out,
        Err(OutputError::Busy { .. }) => return test_beside_agent(cfg, t, count, wait),
        Err(e) => return Err(e),
    };
    let mut spooled = 0;
    for n in 1..=count {
        if let Submitted::Spooled(_) = out.submit_record(record(cfg, t, n))? {
            spooled += 1;
        }
    }
    finish(out, wait, spooled)
}

fn test_beside_agent(
    cfg: &Config,
    t: &TestAlert,
    count: u32,
    wait: Duration,
) -> Result<Report, OutputError> {
    let sp = Spooler::open(&cfg.alerts, &cfg.agent.hostname, &cfg.agent.state_dir)?;
    let mut ids = Vec::new();
    for n in 1..=count {
        if let Submitted::Spooled(id) = sp.submit_record(record(cfg, t, n))? {
            ids.push(id);
        }
    }
    let end = Instant::now() + wait;
    let mut waiting = sp.undelivered(&ids)?;
    while !waiting.is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        waiting = sp.undelivered(&ids)?;
    }
    Ok(Report {
        spooled: ids.len() as u64,
        waiting,
        outputs: sp.names(),
        by_agent: true,
    })
}

/// Starts the outputs, delivers what the spool holds for up to `wait`, and stops.
pub fn flush(cfg: &Config, wait: Duration) -> Result<Report, OutputError> {
    let out = Outputs::start(
        &cfg.alerts,
        &cfg.agent.hostname,
        &cfg.agent.state_dir,
        Options::default(),
    )?;
    finish(out, wait, 0)
}

fn finish(out: Outputs, wait: Duration, spooled: u64) -> Result<Report, OutputError> {
    out.wait_idle(wait);
    let outputs = out.names();
    let waiting = out.shutdown(Duration::from_millis(200))?;
    Ok(Report {
        spooled,
        waiting,
        outputs,
        by_agent: false,
    })
}

/// Alerts waiting in the spool, per output (without starting any output).
pub fn status(cfg: &Config) -> Result<Vec<(String, u64)>, OutputError> {
    let st = crate::state::State::open(&cfg.agent.state_dir)?;
    Spool::open(&st.db_path, cfg.alerts.spool_max)?.pending_counts()
}
