//! The agent's live counters ([`Live`]: what `hids status` and the metrics read) and the optional
//! Prometheus endpoint (`[agent] metrics_listen`): `GET /metrics` in the OpenMetrics text format,
//! encoded by `prometheus-client` from the counters the agent already keeps.
//!
//! The server is one plain thread on a `std::net::TcpListener`, answering one connection at a
//! time: a scrape every few seconds needs nothing more, and an async runtime would cost more
//! than the whole endpoint. Each connection is bounded (request size, a total deadline for
//! reading it, a write timeout), so garbage or a stalled client costs at most a few seconds and
//! never the agent.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{now_secs, Stats};
use crate::config::Config;
use crate::outputs::spool::Spool;
use crate::outputs::DeliveryCounters;
use crate::sources::Counters;

/// The largest request accepted (request line and headers).
const MAX_REQUEST: usize = 8 << 10;
/// How long a client may take to send its request, in total.
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// How long writing the answer may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The content type of the OpenMetrics text format that `prometheus-client` writes (Prometheus
/// asks for it first).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The counters of a running agent, shared by the status row and the metrics endpoint.
pub struct Live {
    /// When the agent started, in seconds since the epoch.
    pub started: u64,
    /// The analysis' counters.
    pub stats: Arc<Stats>,
    /// Per log source: its location and counters.
    pub sources: crate::sources::SourceCounters,
    /// Per output: its delivery counters.
    pub deliveries: crate::outputs::DeliveryList,
    /// The spool, read for its depth per output at each scrape (its own connection).
    pub spool: Option<Spool>,
    /// Active response's counters (also kept while responses are disabled: recorded blocks are
    /// still lifted).
    pub response: Option<Arc<crate::response::Counters>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("started", &self.started)
            .field("stats", &self.stats)
            .field("sources", &self.sources)
            .field("deliveries", &self.deliveries)
            .field("response", &self.response)
            .finish_non_exhaustive()
    }
}

impl Live {
    /// Per log source: its location and counters, now (a reload changes the list).
    pub fn sources(&self) -> Vec<(Arc<str>, Arc<Counters>)> {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Per output: its delivery counters, now (a reload changes the list).
    pub fn deliveries(&self) -> Vec<(String, Arc<DeliveryCounters>)> {
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Seconds since the start.
    pub fn uptime(&self) -> u64 {
        now_secs().saturating_sub(self.started)
    }
}

/// Configuration findings that are not errors, for `check-config` and the agent's log.
pub fn config_warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(a) = cfg.agent.metrics_listen {
        if !a.ip().is_loopback() {
            w.push(format!(
                "[agent] metrics_listen = \"{a}\" is not a loopback address: the metrics (rule hits, \
                 log paths) are served without authentication to whoever reaches that address"
            ));
        }
    }
    w
}

fn encode_counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn encode_gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A counter family with one label: `name_total{label="key"} value` for each row.
fn encode_counters<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    rows: impl IntoIterator<Item = (String, u64)> + 'a,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (key, v) in rows {
        let labels = [(label, crate::diag::escape_control(&key))];
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    rows: impl IntoIterator<Item = (String, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (key, v) in rows {
        let labels = [(label, crate::diag::escape_control(&key))];
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Active response: actions by result, requests not acted on by reason, blocks in force.
fn encode_response(
    enc: &mut DescriptorEncoder,
    c: &crate::response::CountersSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(
        "hids_active_response",
        "Active response actions (block, unblock) by result (ok, failed); a failed unblock \
         counts each try.",
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (action, result, v) in [
        ("block", "ok", c.blocked),
        ("block", "failed", c.block_failed),
        ("unblock", "ok", c.unblocked),
        ("unblock", "failed", c.unblock_failed),
    ] {
        ConstCounter::new(v).encode(m.encode_family(&[("action", action), ("result", result)])?)?;
    }
    encode_counters(
        enc,
        "hids_active_response_skipped",
        "Matching alerts not acted on, by reason: allowlisted (allowlist, loopback or own \
         address), capped (max_per_minute), invalid (no valid address or user), repeated \
         (already blocked), queue_full (dropped).",
        "reason",
        [
            ("allowlisted", c.allowlisted),
            ("capped", c.capped),
            ("invalid", c.invalid),
            ("repeated", c.repeated),
            ("queue_full", c.dropped),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )?;
    encode_gauge(
        enc,
        "hids_active_response_blocked",
        "Addresses blocked now by active response (per mechanism).",
        clamp(c.in_force),
    )
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        encode_gauge(
            &mut enc,
            "hids_uptime_seconds",
            "Seconds since the agent started.",
            clamp(self.uptime()),
        )?;
        let sources = self.sources();
        let deliveries = self.deliveries();
        let per_source = |f: fn(&Counters) -> &AtomicU64| {
            sources
                .iter()
                .map(move |(loc, c)| (loc.to_string(), load(f(c))))
        };
        encode_counters(
            &mut enc,
            "hids_source_events",
            "Events read, per log source.",
            "source",
            per_source(|c| &c.events),
        )?;
        encode_counters(
            &mut enc,
            "hids_source_lines_truncated",
            "Lines cut at the source's max_line, per log source.",
            "source",
            per_source(|c| &c.truncated),
        )?;
        encode_counters(
            &mut enc,
            "hids_source_lines_invalid_utf8",
            "Lines with invalid UTF-8 (replaced), per log source.",
            "source",
            per_source(|c| &c.lossy_utf8),
        )?;
        encode_counters(
            &mut enc,
            "hids_events_analysed",
            "Events through decoding and the rules: log events and FIM changes.",
            "kind",
            [
                ("log".to_string(), load(&s.events)),
                ("fim".to_string(), load(&s.fim_changes)),
            ],
        )?;
        encode_counters(
            &mut enc,
            "hids_alerts",
            "Alerts spooled, per level.",
            "level",
            s.alerts_by_level
                .iter()
                .enumerate()
                .map(|(l, a)| (l.to_string(), load(a))),
        )?;
        let hits: Vec<(String, u64)> = s
            .rule_hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, n)| (id.to_string(), *n))
            .collect();
        encode_counters(
            &mut enc,
            "hids_rule_hits",
            "Alerts spooled, per rule id.",
            "rule_id",
            hits,
        )?;
        encode_counter(
            &mut enc,
            "hids_spool_errors",
            "Attempts to spool an alert that failed (each is retried).",
            load(&s.submit_errors),
        )?;
        encode_counter(
            &mut enc,
            "hids_reloads",
            "Successful reloads of the configuration (SIGHUP).",
            load(&s.reloads),
        )?;
        if let Some(spool) = &self.spool {
            let depth = spool.pending_counts().unwrap_or_default();
            // Every output, with 0 when nothing waits for it.
            let rows = deliveries.iter().map(|(o, _)| {
                let n = depth.iter().find(|(d, _)| d == o).map_or(0, |(_, n)| *n);
                (o.clone(), clamp(n))
            });
            encode_gauges(
                &mut enc,
                "hids_spool_waiting",
                "Alerts in the spool waiting for delivery, per output.",
                "output",
                rows,
            )?;
        }
        encode_counters(
            &mut enc,
            "hids_alerts_delivered",
            "Alerts delivered, per output.",
            "output",
            deliveries
                .iter()
                .map(|(o, c)| (o.clone(), load(&c.delivered))),
        )?;
        encode_counters(
            &mut enc,
            "hids_delivery_errors",
            "Failed delivery attempts (retried with backoff), per output.",
            "output",
            deliveries.iter().map(|(o, c)| (o.clone(), load(&c.errors))),
        )?;
        encode_gauge(
            &mut enc,
            "hids_fim_watches",
            "inotify watches held by real-time FIM.",
            clamp(load(&s.fim_watches)),
        )?;
        if let Some(limit) = crate::fim::watch::max_user_watches() {
            encode_gauge(
                &mut enc,
                "hids_fim_watches_limit",
                "fs.inotify.max_user_watches (shared by every process of the user).",
                clamp(limit),
            )?;
        }
        if let Some(r) = &self.response {
            encode_response(&mut enc, &r.snapshot())?;
        }
        Ok(())
    }
}

/// The running endpoint; [`Server::stop`] ends its thread.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and serves `live` from a thread of its own.
    pub fn start(addr: SocketAddr, live: Arc<Live>) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(live));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(listener, registry, flag))?;
        Ok(Server {
            addr: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the thread (woken by a connection of our own).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn serve(listener: TcpListener, registry: Registry, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok(stream) => {
                if let Err(e) = answer(stream, &registry) {
                    tracing::debug!("metrics request: {e}");
                }
            }
            Err(e) => {
                // EMFILE and friends: do not spin.
                tracing::warn!("metrics endpoint cannot accept: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics { head: bool },
    NotFound,
    BadMethod,
    Bad,
}

/// Reads up to the end of the headers, within [`MAX_REQUEST`] bytes and [`READ_DEADLINE`].
fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(Some(buf));
        }
    }
}

fn parse(head: &[u8]) -> Request {
    if head.len() > MAX_REQUEST {
        return Request::Bad;
    }
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::BadMethod,
    };
    let path = target.split('?').next().unwrap_or("");
    if path == "/metrics" {
        Request::Metrics { head }
    } else {
        Request::NotFound
    }
}

fn answer(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let Some(head) = read_head(&mut stream)? else {
        return Ok(());
    };
    let (status, ctype, body, send_body) = match parse(&head) {
        Request::Metrics { head } => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => ("200 OK", CONTENT_TYPE, body, !head),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "cannot encode the metrics\n".to_string(),
                    true,
                ),
            }
        }
        Request::NotFound => (
            "404 Not Found",
            "text/plain",
            "not found: the metrics are at /metrics\n".to_string(),
            true,
        ),
        Request::BadMethod => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n".to_string(),
            true,
        ),
        Request::Bad => (
            "400 Bad Request",
            "text/plain",
            "bad request\n".to_string(),
            true,
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if status.starts_with("405") {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        }
    );
    if send_body {
        out.push_str(&body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Arc<Live> {
        let stats = Arc::new(Stats::default());
        stats.events.store(12, Ordering::Relaxed);
        stats.count_alert(&crate::event::RuleInfo {
            id: 5710,
            level: 5,
            description: "".into(),
            groups: Vec::new().into(),
            mitre: Vec::new().into(),
            firedtimes: 1,
            options: Default::default(),
            info: Vec::new().into(),
        });
        let c = Arc::new(Counters::default());
        c.events.store(12, Ordering::Relaxed);
        Arc::new(Live {
            started: now_secs(),
            stats,
            sources: Arc::new(std::sync::Mutex::new(vec![(
                Arc::from("/var/log/a\"b\nc\r"),
                c,
            )])),
            deliveries: Arc::new(std::sync::Mutex::new(vec![(
                "alerts.json".into(),
                Arc::default(),
            )])),
            spool: None,
            response: Some(Arc::new(crate::response::Counters {
                blocked: 3.into(),
                failed: 2.into(),
                unblock_failed: 1.into(),
                capped: 4.into(),
                in_force: 2.into(),
                ..Default::default()
            })),
        })
    }

    fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(request);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_the_counters_and_refuses_the_rest() {
        let server = Server::start("127.0.0.1:0".parse().unwrap(), live()).unwrap();
        let addr = server.addr();
        let r = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("hids_rule_hits_total{rule_id=\"5710\"} 1\n"),
            "{r}"
        );
        assert!(
            r.contains("hids_events_analysed_total{kind=\"log\"} 12\n"),
            "{r}"
        );
        assert!(r.contains("hids_alerts_total{level=\"5\"} 1\n"), "{r}");
        // Label values are escaped: no raw quote, newline or carriage return.
        assert!(
            r.contains("hids_source_events_total{source=\"/var/log/a\\\"b\\\\nc\\\\r\"} 12"),
            "{r}"
        );
        for line in [
            "hids_active_response_total{action=\"block\",result=\"ok\"} 3\n",
            "hids_active_response_total{action=\"block\",result=\"failed\"} 1\n",
            "hids_active_response_total{action=\"unblock\",result=\"failed\"} 1\n",
            "hids_active_response_skipped_total{reason=\"capped\"} 4\n",
            "hids_active_response_blocked 2\n",
        ] {
            assert!(r.contains(line), "{line} in {r}");
        }
        assert!(r.ends_with("# EOF\n"), "{r}");
        assert!(get(addr, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let head = get(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"));
        // Garbage, binary, oversized and empty requests: an answer or a close, never a crash.
        assert!(get(addr, b"\xff\xfe\x00garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        // Oversized: refused (the client may see the answer or a reset), and the next is served.
        let big = get(addr, &vec![b'A'; 64 << 10]);
        assert!(big.is_empty() || big.starts_with("HTTP/1.1 400"), "{big}");
        assert_eq!(get(addr, b""), "");
        assert!(get(addr, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        server.stop();
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\n\r\n"),
            Request::Metrics { head: false }
        );
        assert_eq!(parse(b"GET /metrics\r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"GET /metrics HTTP/2 x\r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"GET /metricsx HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(parse(b"DELETE / HTTP/1.1\r\n\r\n"), Request::BadMethod);
    }
}
