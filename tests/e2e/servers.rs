//! Real servers for the output tests, started on 127.0.0.1 by the tests and stopped when dropped:
//! rsyslog (UDP, TCP, TLS, a local socket) writing each received message to a file, and an
//! aiosmtpd SMTP server saving each mail. Also a test CA made with the openssl CLI.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 at the time of the call.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms for up to `secs` seconds.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn listening(proto: &str, port: u16) -> bool {
    let hex = format!(":{port:04X} ");
    [proto, &format!("{proto}6")].iter().any(|p| {
        std::fs::read_to_string(format!("/proc/net/{p}"))
            .map(|t| {
                t.lines().skip(1).any(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|a| format!("{a} ").contains(&hex))
                })
            })
            .unwrap_or(false)
    })
}

/// A self-signed CA and a server certificate for 127.0.0.1 and localhost.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI (tests/run.sh installs it)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn make_certs(dir: &Path, name: &str) -> Certs {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    openssl(
        &d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=hids test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        &d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(
        &d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    Certs {
        ca: d.join("ca.pem"),
        cert: d.join("server.pem"),
        key: d.join("server.key"),
    }
}

/// How rsyslog listens.
#[derive(Clone, Copy)]
pub enum Listen<'a> {
    Udp(u16),
    Tcp(u16),
    Tls(u16, &'a Certs),
    Unix(&'a Path),
}

/// rsyslogd in the foreground with its own configuration; every message received goes to
/// `received` as its raw bytes (`%rawmsg%`) and a newline.
pub struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    conf: PathBuf,
    pub received: PathBuf,
}

impl Rsyslog {
    pub fn start(dir: &Path, listen: Listen) -> Rsyslog {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let received = dir.join("received.log");
        let input = match listen {
            Listen::Udp(p) => format!("module(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{p}\" ruleset=\"r\")\n"),
            Listen::Tcp(p) => format!("module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{p}\" ruleset=\"r\")\n"),
            Listen::Tls(p, c) => format!(
                "global(DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{}\" DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\")\n\
                 module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{p}\" ruleset=\"r\")\n",
                c.ca.display(), c.cert.display(), c.key.display()
            ),
            Listen::Unix(s) => format!("module(load=\"imuxsock\" SysSock.Use=\"off\")\ninput(type=\"imuxsock\" Socket=\"{}\" ruleset=\"r\")\n", s.display()),
        };
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{}\" parser.escapeControlCharactersOnReceive=\"off\" maxMessageSize=\"64k\")\n{input}\
                 template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
                 ruleset(name=\"r\") {{ action(type=\"omfile\" file=\"{}\" template=\"raw\" flushOnTXEnd=\"on\" asyncWriting=\"off\") }}\n",
                dir.join("work").display(),
                received.display()
            ),
        )
        .unwrap();
        let mut r = Rsyslog {
            child: None,
            dir,
            conf,
            received,
        };
        r.restart(listen);
        r
    }

    /// Starts rsyslogd (again) and waits until it listens.
    pub fn restart(&mut self, listen: Listen) {
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd (tests/run.sh installs rsyslog)");
        self.child = Some(child);
        let ok = wait_for(20, || match listen {
            Listen::Udp(p) => listening("udp", p),
            Listen::Tcp(p) | Listen::Tls(p, _) => listening("tcp", p),
            Listen::Unix(s) => s.exists(),
        });
        assert!(ok, "rsyslogd did not start listening");
    }

    /// Stops rsyslogd (SIGTERM, so that it writes out what it received) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// The messages received so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read(&self.received)
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until at least `n` messages arrived (and a moment more, to catch any extra).
    pub fn wait_lines(&self, n: usize) -> Vec<String> {
        wait_for(60, || self.lines().len() >= n);
        std::thread::sleep(Duration::from_millis(300));
        self.lines()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Python's aiosmtpd, saving each mail under `dir`.
pub struct Smtp {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
}

/// One mail as the server received it.
#[derive(Debug)]
pub struct Mail {
    /// The DATA bytes as received.
    pub raw: Vec<u8>,
    pub rcpt_tos: Vec<String>,
    pub mail_from: String,
    pub user: Option<String>,
}

impl Mail {
    /// Headers, unfolded, as (name, value).
    pub fn headers(&self) -> Vec<(String, String)> {
        let text = String::from_utf8_lossy(&self.raw);
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .replace("\r\n ", " ")
            .replace("\r\n\t", " ");
        head.split("\r\n")
            .filter_map(|l| {
                l.split_once(": ")
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The body, transfer-decoded (7bit, quoted-printable or base64 as the sender chose).
    pub fn body(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw).into_owned();
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_string();
        match self.header("Content-Transfer-Encoding").as_deref() {
            Some("quoted-printable") => {
                let soft = body.replace("=\r\n", "");
                let b = soft.as_bytes();
                let mut out = Vec::new();
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'=' && i + 2 < b.len() {
                        if let Ok(v) = u8::from_str_radix(
                            std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"),
                            16,
                        ) {
                            out.push(v);
                            i += 3;
                            continue;
                        }
                    }
                    out.push(b[i]);
                    i += 1;
                }
                String::from_utf8_lossy(&out).into_owned()
            }
            Some("base64") => {
                let o = Command::new("base64")
                    .arg("-d")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .and_then(|mut c| {
                        use std::io::Write;
                        c.stdin.take().unwrap().write_all(body.as_bytes())?;
                        c.wait_with_output()
                    })
                    .unwrap();
                String::from_utf8_lossy(&o.stdout).into_owned()
            }
            _ => body,
        }
    }
}

impl Smtp {
    pub fn start(dir: &Path, port: u16, tls: Option<&Certs>, auth: Option<(&str, &str)>) -> Smtp {
        Self::start_with(dir, port, tls.map(|c| ("--tls", c)), auth)
    }

    /// With implicit TLS (SMTPS) instead of STARTTLS.
    pub fn start_implicit(dir: &Path, port: u16, certs: &Certs) -> Smtp {
        Self::start_with(dir, port, Some(("--implicit-tls", certs)), None)
    }

    /// Plain SMTP that refuses for good (554) every message containing `text`.
    pub fn start_rejecting(dir: &Path, port: u16, text: &str) -> Smtp {
        Self::start_args(dir, port, None, None, &["--reject", text])
    }

    fn start_with(
        dir: &Path,
        port: u16,
        tls: Option<(&str, &Certs)>,
        auth: Option<(&str, &str)>,
    ) -> Smtp {
        Self::start_args(dir, port, tls, auth, &[])
    }

    fn start_args(
        dir: &Path,
        port: u16,
        tls: Option<(&str, &Certs)>,
        auth: Option<(&str, &str)>,
        extra: &[&str],
    ) -> Smtp {
        std::fs::create_dir_all(dir).unwrap();
        let script = crate::util::repo().join("tests/e2e/smtp_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(dir).arg(port.to_string());
        if let Some((flag, c)) = tls {
            cmd.arg(flag).arg(&c.cert).arg(&c.key);
        }
        if let Some((u, p)) = auth {
            cmd.args(["--auth", u, p]);
        }
        cmd.args(extra);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (tests/run.sh installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "SMTP server did not start");
        Smtp {
            child,
            dir: dir.to_path_buf(),
            port,
        }
    }

    /// The mails received so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        let mut out = Vec::new();
        for n in 1.. {
            let eml = self.dir.join(format!("{n}.eml"));
            let Ok(raw) = std::fs::read(&eml) else { break };
            let meta: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(self.dir.join(format!("{n}.json"))).unwrap(),
            )
            .unwrap();
            out.push(Mail {
                raw,
                rcpt_tos: meta["rcpt_tos"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect(),
                mail_from: meta["mail_from"].as_str().unwrap().to_string(),
                user: meta["user"].as_str().map(str::to_string),
            });
        }
        out
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
