//! Syslog output: a local datagram socket (`/dev/log`), UDP (RFC 5426), TCP with octet counting
//! (RFC 6587) and TLS (RFC 5425, rustls, the server verified against the configured CA or the
//! system's), in RFC 3164, RFC 5424, JSON or CEF (see [`super::format`]).
//!
//! Own code rather than the `syslog` crate: that crate has no TLS, no octet-counted framing and no
//! CEF or JSON, and the frames here must be escaped field by field anyway.
//!
//! A syslog server never writes to its client, so before each batch on an open TCP or TLS
//! connection the socket is polled: anything readable (end of stream, a TLS close alert) means the
//! server went away, and the connection is remade instead of writing into a dead socket. After a
//! failed write the batch is retried whole on a new connection.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::format::{syslog_frame, syslog_frame_fitted, FrameContext};
use super::{Delivery, Outcome, Output, OutputError, Pending, Selector};
use crate::config::{SyslogConfig, SyslogFormat, SyslogProtocol, SyslogTarget};

/// The largest UDP or local datagram sent; longer alerts are shortened to fit (see
/// [`syslog_frame_fitted`]). RFC 5426 asks receivers to take at least 2048 bytes.
pub const MAX_DATAGRAM: usize = 2048;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

enum Conn {
    Udp(UdpSocket),
    Unix(UnixDatagram),
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// One `[[alerts.syslog]]` destination.
pub struct SyslogOutput {
    name: String,
    cfg: SyslogConfig,
    hostname: String,
    tls: Option<Arc<ClientConfig>>,
    conn: Option<Conn>,
}

/// The spool name of a syslog output: its target and format.
pub fn output_name(cfg: &SyslogConfig) -> String {
    let fmt = match cfg.format {
        SyslogFormat::Rfc3164 => "rfc3164",
        SyslogFormat::Rfc5424 => "rfc5424",
        SyslogFormat::Json => "json",
        SyslogFormat::Cef => "cef",
    };
    match &cfg.target {
        SyslogTarget::Socket(p) => format!("syslog unix:{} {fmt}", p.display()),
        SyslogTarget::Server {
            host,
            port,
            protocol,
        } => {
            let proto = match protocol {
                SyslogProtocol::Udp => "udp",
                SyslogProtocol::Tcp => "tcp",
                SyslogProtocol::Tls => "tls",
            };
            format!("syslog {proto}://{host}:{port} {fmt}")
        }
    }
}

/// The TLS client configuration: the CA file's certificates, or the system's when none is given.
pub fn tls_config(ca_file: Option<&Path>) -> Result<ClientConfig, OutputError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(p) => {
            let certs = CertificateDer::pem_file_iter(p)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| OutputError::File {
                    path: p.to_path_buf(),
                    reason: format!("cannot read CA certificates: {e}"),
                })?;
            if certs.is_empty() {
                return Err(OutputError::File {
                    path: p.to_path_buf(),
                    reason: "no PEM certificate in the CA file".into(),
                });
            }
            for c in certs {
                roots.add(c).map_err(|e| OutputError::File {
                    path: p.to_path_buf(),
                    reason: format!("bad CA certificate: {e}"),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OutputError::Syslog(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

impl SyslogOutput {
    pub fn new(
        name: String,
        cfg: &SyslogConfig,
        hostname: &str,
    ) -> Result<SyslogOutput, OutputError> {
        let tls = match &cfg.target {
            SyslogTarget::Server {
                protocol: SyslogProtocol::Tls,
                ..
            } => Some(Arc::new(tls_config(cfg.ca_file.as_deref())?)),
            _ => None,
        };
        Ok(SyslogOutput {
            name,
            cfg: cfg.clone(),
            hostname: hostname.to_string(),
            tls,
            conn: None,
        })
    }

    fn connect(&self) -> io::Result<Conn> {
        match &self.cfg.target {
            SyslogTarget::Socket(p) => {
                let s = UnixDatagram::unbound()?;
                s.connect(p)?;
                s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                Ok(Conn::Unix(s))
            }
            SyslogTarget::Server {
                host,
                port,
                protocol,
            } => {
                let addrs: Vec<_> = (host.as_str(), *port).to_socket_addrs()?.collect();
                match protocol {
                    SyslogProtocol::Udp => {
                        let mut last = io::Error::other("no address");
                        for a in addrs {
                            let bind = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                            match UdpSocket::bind(bind).and_then(|s| s.connect(a).map(|_| s)) {
                                Ok(s) => return Ok(Conn::Udp(s)),
                                Err(e) => last = e,
                            }
                        }
                        Err(last)
                    }
                    SyslogProtocol::Tcp | SyslogProtocol::Tls => {
                        let mut last = io::Error::other("no address");
                        let mut stream = None;
                        for a in addrs {
                            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                                Ok(s) => {
                                    stream = Some(s);
                                    break;
                                }
                                Err(e) => last = e,
                            }
                        }
                        let s = stream.ok_or(last)?;
                        s.set_nodelay(true)?;
                        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                        s.set_read_timeout(Some(WRITE_TIMEOUT))?;
                        if *protocol == SyslogProtocol::Tcp {
                            return Ok(Conn::Tcp(s));
                        }
                        let cfg = self
                            .tls
                            .clone()
                            .ok_or_else(|| io::Error::other("TLS not configured"))?;
                        let sni = ServerName::try_from(host.clone())
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                        let c = ClientConnection::new(cfg, sni).map_err(io::Error::other)?;
                        let mut tls = StreamOwned::new(c, s);
                        // Complete the handshake now so that a certificate error shows here.
                        while tls.conn.is_handshaking() {
                            tls.conn.complete_io(&mut tls.sock)?;
                        }
                        Ok(Conn::Tls(Box::new(tls)))
                    }
                }
            }
        }
    }

    /// Whether an open stream connection still looks usable (see the module documentation).
    fn alive(conn: &Conn) -> bool {
        let sock = match conn {
            Conn::Tcp(s) => s,
            Conn::Tls(t) => &t.sock,
            _ => return true,
        };
        if sock.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let r = sock.peek(&mut b);
        let ok = sock.set_nonblocking(false).is_ok();
        ok && matches!(r, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends the batch; returns how many alerts left before an error.
    fn send(&mut self, batch: &[Pending]) -> (usize, io::Result<()>) {
        match self.connect_if_needed() {
            Ok(()) => self.send_connected(batch),
            Err(e) => (0, Err(e)),
        }
    }

    fn connect_if_needed(&mut self) -> io::Result<()> {
        if let Some(c) = &self.conn {
            if !Self::alive(c) {
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        Ok(())
    }

    fn send_connected(&mut self, batch: &[Pending]) -> (usize, io::Result<()>) {
        let cx = FrameContext {
            format: self.cfg.format,
            facility: self.cfg.facility,
            hostname: &self.hostname,
            local: matches!(self.cfg.target, SyslogTarget::Socket(_)),
            pid: std::process::id(),
        };
        let mut buf = Vec::new();
        let Some(conn) = self.conn.as_mut() else {
            return (0, Err(io::Error::other("not connected")));
        };
        match conn {
            Conn::Udp(s) => {
                for (i, p) in batch.iter().enumerate() {
                    let f = syslog_frame_fitted(&p.record, &cx, MAX_DATAGRAM);
                    if let Err(e) = s.send(f.as_bytes()) {
                        return (i, Err(e));
                    }
                }
                (batch.len(), Ok(()))
            }
            Conn::Unix(s) => {
                for (i, p) in batch.iter().enumerate() {
                    let f = syslog_frame_fitted(&p.record, &cx, MAX_DATAGRAM);
                    if let Err(e) = s.send(f.as_bytes()) {
                        return (i, Err(e));
                    }
                }
                (batch.len(), Ok(()))
            }
            Conn::Tcp(_) | Conn::Tls(_) => {
                for p in batch {
                    let f = syslog_frame(&p.record, &cx);
                    buf.extend_from_slice(format!("{} ", f.len()).as_bytes());
                    buf.extend_from_slice(f.as_bytes());
                }
                let r = match conn {
                    Conn::Tcp(s) => s.write_all(&buf).and_then(|_| s.flush()),
                    Conn::Tls(t) => t.write_all(&buf).and_then(|_| t.flush()),
                    _ => Ok(()),
                };
                match r {
                    Ok(()) => (batch.len(), Ok(())),
                    Err(e) => (0, Err(e)),
                }
            }
        }
    }
}

impl Output for SyslogOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn selector(&self) -> Selector {
        let min = self.cfg.min_level;
        let groups = self.cfg.groups.clone();
        Arc::new(move |r| {
            !r.rule.options.no_log
                && r.rule.level >= min
                && (groups.is_empty() || r.in_any_group(&groups))
        })
    }

    fn deliver(&mut self, batch: &[Pending]) -> Delivery {
        let (n, r) = self.send(batch);
        let delivered = batch[..n].iter().map(|p| p.id).collect();
        match r {
            Ok(()) => Delivery {
                delivered,
                outcome: Outcome::Done,
            },
            Err(e) => {
                self.conn = None;
                Delivery {
                    delivered,
                    outcome: Outcome::Failed(format!("{}: {e}", self.name)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::testutil::record;

    #[test]
    fn selector_applies_min_level_groups_and_no_log() {
        let cfg = SyslogConfig {
            target: SyslogTarget::Socket("/dev/log".into()),
            format: SyslogFormat::Rfc3164,
            min_level: 5,
            groups: vec!["sshd".into(), "web".into()],
            facility: 16,
            ca_file: None,
        };
        let o = SyslogOutput::new(output_name(&cfg), &cfg, "h").unwrap();
        assert_eq!(o.name(), "syslog unix:/dev/log rfc3164");
        let sel = o.selector();
        assert!(sel(&record(1, 5, "d")));
        assert!(!sel(&record(1, 4, "d")));
        let mut other = record(1, 9, "d");
        other.rule.groups = vec!["pam".into()];
        assert!(!sel(&other));
        let mut nolog = record(1, 9, "d");
        nolog.rule.options.no_log = true;
        assert!(!sel(&nolog));
    }
}
