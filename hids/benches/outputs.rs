//! Alert output benchmark (run by tests/bench/outputs.sh): alerts per second through the spool to
//! alerts.json and to a real rsyslog over TCP, the delay from submit to rsyslog's receipt (p50,
//! p99), and the same number of messages sent to the same rsyslog by util-linux `logger` (TCP,
//! octet counting) as the reference.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hids::config;
use hids::outputs::{internal_record, Options, Outputs};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Rsyslog {
    child: Child,
    received: PathBuf,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16) -> Rsyslog {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let received = dir.join("received.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{}\" maxMessageSize=\"64k\")\n\
                 module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"r\")\n\
                 template(name=\"t\" type=\"string\" string=\"%timegenerated:::date-unixtimestamp% %timegenerated:::date-rfc3339% %rawmsg%\\n\")\n\
                 ruleset(name=\"r\") {{ action(type=\"omfile\" file=\"{}\" template=\"t\") }}\n",
                dir.join("work").display(),
                received.display()
            ),
        )
        .unwrap();
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd");
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "rsyslogd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Rsyslog { child, received }
    }

    fn count(&self) -> usize {
        std::fs::read(&self.received)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
    }

    fn wait(&self, n: usize) {
        let end = Instant::now() + Duration::from_secs(300);
        while self.count() < n {
            assert!(
                Instant::now() < end,
                "only {} of {n} received",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cfg(dir: &Path, body: &str) -> config::Config {
    let p = dir.join("hids.toml");
    std::fs::write(
        &p,
        format!(
            "[agent]\nstate_dir = \"{}\"\nhostname = \"bench\"\n{body}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    config::load(&p).unwrap()
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

fn record(c: &config::Config, n: usize) -> hids::outputs::record::AlertRecord {
    let mut r = internal_record(
        &c.agent.hostname,
        5716,
        8,
        format!("sshd: authentication failed {n}"),
        vec!["syslog".into(), "sshd".into()],
    );
    r.full_log = Some(format!(
        "Nov 22 01:52:41 web-01 sshd[123]: Failed password for root from 203.0.113.7 port 22 ssh2 submit_us={}",
        now_us()
    ));
    r.data.0 = vec![
        ("srcip".into(), "203.0.113.7".into()),
        ("dstuser".into(), "root".into()),
    ];
    r
}

fn throughput(label: &str, n: usize, c: &config::Config, done: impl Fn() -> bool) -> f64 {
    let out = Outputs::start(
        &c.alerts,
        &c.agent.hostname,
        &c.agent.state_dir,
        Options::default(),
    )
    .unwrap();
    let t = Instant::now();
    for i in 0..n {
        out.submit_record(record(c, i)).unwrap();
    }
    let submitted = t.elapsed();
    while !done() {
        std::thread::sleep(Duration::from_millis(2));
    }
    let total = t.elapsed();
    out.shutdown(Duration::from_secs(5)).unwrap();
    let rate = n as f64 / total.as_secs_f64();
    println!(
        "{label}: {n} alerts in {:.3} s = {rate:.0} alerts/s (submit alone: {:.0} alerts/s)",
        total.as_secs_f64(),
        n as f64 / submitted.as_secs_f64()
    );
    rate
}

fn main() {
    let n: usize = std::env::var("BENCH_ALERTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20000);
    let tmp = tempfile::tempdir().unwrap();

    // 1. alerts.json only.
    let d1 = tmp.path().join("json");
    std::fs::create_dir_all(&d1).unwrap();
    let c1 = cfg(
        &d1,
        "[alerts.file]\nenabled = false\n[alerts.json]\nrotate = \"never\"\n",
    );
    let json = c1.alerts.json.path.clone();
    let lines = |p: &Path| {
        std::fs::read(p)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
    };
    throughput("spool -> alerts.json", n, &c1, || lines(&json) >= n);

    // 2. syslog TCP (RFC 5424, octet counting) only.
    let d2 = tmp.path().join("tcp");
    let port = free_port();
    let rs = Rsyslog::start(&d2.join("rs"), port);
    let c2 = cfg(&d2, &format!("[alerts.file]\nenabled = false\n[alerts.json]\nenabled = false\n[[alerts.syslog]]\nserver = \"127.0.0.1\"\nport = {port}\nformat = \"rfc5424\"\n"));
    let hids_rate = throughput("spool -> syslog tcp (rsyslog)", n, &c2, || rs.count() >= n);

    // 3. The reference: logger sends as many messages of the same size to the same rsyslog.
    let sample = hids::outputs::format::syslog_text(&record(&c2, 0));
    let before = rs.count();
    let mut input = String::new();
    for i in 0..n {
        input.push_str(&format!("{sample} {i}\n"));
    }
    let t = Instant::now();
    let mut lg = Command::new("logger")
        .args([
            "--tcp",
            "--octet-count",
            "--rfc5424",
            "-n",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-t",
            "hids",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("logger (util-linux)");
    lg.stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    lg.wait().unwrap();
    rs.wait(before + n);
    let ref_rate = n as f64 / t.elapsed().as_secs_f64();
    println!("reference: logger --tcp --octet-count -> rsyslog: {n} messages in {:.3} s = {ref_rate:.0} msgs/s", t.elapsed().as_secs_f64());
    println!(
        "ratio hids/logger (syslog tcp): {:.2}",
        hids_rate / ref_rate
    );
    drop(rs);

    // 4. Delay from submit to rsyslog's receipt, at a steady 500 alerts/s.
    let d3 = tmp.path().join("delay");
    let port = free_port();
    let rs = Rsyslog::start(&d3.join("rs"), port);
    let c3 = cfg(&d3, &format!("[alerts.file]\nenabled = false\n[alerts.json]\nenabled = false\n[[alerts.syslog]]\nserver = \"127.0.0.1\"\nport = {port}\nformat = \"rfc5424\"\n"));
    let out = Outputs::start(
        &c3.alerts,
        &c3.agent.hostname,
        &c3.agent.state_dir,
        Options::default(),
    )
    .unwrap();
    let m = 2000;
    let start = Instant::now();
    for i in 0..m {
        let due = start + Duration::from_micros(2000 * i as u64);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        out.submit_record(record(&c3, i)).unwrap();
    }
    rs.wait(m);
    out.shutdown(Duration::from_secs(5)).unwrap();
    let text = std::fs::read_to_string(&rs.received).unwrap();
    let mut delays: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            // "<unix seconds> <rfc3339 with microseconds> <frame ... submit_us=N>"
            let mut parts = l.splitn(3, ' ');
            let _secs = parts.next()?;
            let ts = parts.next()?;
            let recv = chrono::DateTime::parse_from_rfc3339(ts)
                .ok()?
                .timestamp_micros() as f64;
            let i = l.rfind("submit_us=")? + 10;
            let sub: f64 = l[i..].trim().parse().ok()?;
            Some((recv - sub) / 1000.0)
        })
        .collect();
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| delays[((delays.len() as f64 * p) as usize).min(delays.len() - 1)];
    println!(
        "delay submit -> rsyslog receipt at 500 alerts/s over {} alerts: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        delays.len(),
        pct(0.5),
        pct(0.99),
        delays.last().unwrap()
    );
}
