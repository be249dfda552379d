//! Email output (lettre over SMTP, rustls): one mail per alert, `max_per_hour` at most, the
//! overflow grouped into digest mails.
//!
//! Who gets an alert:
//! - the `to` recipients, when its level is at least `min_level`, or when its rule has the
//!   `alert_by_email` option. `alert_by_email` overrides `min_level` and nothing else: the alert
//!   must still reach `alerts.log_level` to be recorded at all, and it counts against
//!   `max_per_hour` like any other mail (over the cap it goes into the digest);
//! - the `to` of every `[[alerts.email.route]]` it matches (all the criteria a route gives must
//!   match: one of its groups, one of its rules, and its min_level), whatever `min_level` says;
//! - nobody when the rule has `no_email_alert` (it wins over `alert_by_email`).
//!
//! Rate: while fewer than `max_per_hour` mails went out in the last hour, each alert is its own
//! mail (alerts are never lumped together while there is room). When the alerts waiting exceed
//! what is left, the last mail of the hour is a digest of all of them (grouped per recipient list,
//! so a digest never goes to someone who would not have received each of its alerts); after that
//! alerts wait in the spool and go out as a digest when the oldest mail of the hour ages out. The
//! count of mails sent survives restarts (table `email_sent`).
//!
//! Bodies are plain text with CRLF line ends, every field escaped (no bare CR or LF from a log can
//! reach a header or split a line); subjects are `hids alert: level N on HOST: description`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use rusqlite::{params, Connection};

use super::format::{digest_body, digest_subject, email_body, email_subject};
use super::record::AlertRecord;
use super::spool::now_ms;
use super::{Delivery, Outcome, Output, OutputError, Pending, Selector};
use crate::config::{EmailConfig, EmailRoute, SmtpTls};

/// The spool name of the email output.
pub const NAME: &str = "email";

#[derive(Clone)]
struct Rcpt {
    min_level: u8,
    to: Vec<String>,
    routes: Vec<EmailRoute>,
}

impl Rcpt {
    /// The recipients of an alert, sorted and without duplicates.
    fn of(&self, r: &AlertRecord) -> Vec<String> {
        if r.rule.options.no_email_alert {
            return Vec::new();
        }
        let mut out = Vec::new();
        if r.rule.level >= self.min_level || r.rule.options.alert_by_email {
            out.extend(self.to.iter().cloned());
        }
        for route in &self.routes {
            let g = route.groups.is_empty() || r.in_any_group(&route.groups);
            let id = route.rules.is_empty() || route.rules.contains(&r.rule.id);
            let lvl = route.min_level.map_or(true, |m| r.rule.level >= m);
            if g && id && lvl {
                out.extend(route.to.iter().cloned());
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The `[alerts.email]` output.
pub struct EmailOutput {
    rcpt: Rcpt,
    from: Mailbox,
    max_per_hour: u32,
    transport: SmtpTransport,
    db: Connection,
    window: Duration,
    /// Permanent (5xx) rejections so far per spool id: a mail the server refuses for good is given
    /// up after [`GIVE_UP_AFTER`] of them, so that it cannot hold back every mail behind it.
    rejected: HashMap<i64, u32>,
}

/// How many permanent rejections of the same mail end its delivery.
const GIVE_UP_AFTER: u32 = 3;

/// Why a mail was not sent.
struct SendError {
    message: String,
    /// The server (or the message itself) refuses it for good: retrying the same mail cannot help.
    permanent: bool,
}

/// Reads the SMTP password: the file must be a regular file, owned by us or root, and not
/// readable or writable by group or others.
pub fn read_password(path: &Path) -> Result<String, OutputError> {
    let err = |reason: String| OutputError::File {
        path: path.to_path_buf(),
        reason,
    };
    let m = fs::symlink_metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if !m.is_file() {
        return Err(err("not a regular file (a symlink is refused)".into()));
    }
    if m.mode() & 0o077 != 0 {
        return Err(err(format!(
            "mode {:04o} lets others read the SMTP password: chmod 600 it",
            m.mode() & 0o7777
        )));
    }
    if m.uid() != 0 && m.uid() != crate::sys::euid() {
        return Err(err(format!("owned by uid {}, not by us or root", m.uid())));
    }
    let s = fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

fn mailbox(s: &str) -> Result<Mailbox, OutputError> {
    s.parse::<Mailbox>()
        .map_err(|e| OutputError::Email(format!("\"{s}\" is not an address: {e}")))
}

impl EmailOutput {
    /// Sets up the SMTP transport (nothing is connected yet) and the mail counter in `db_path`.
    pub fn new(
        cfg: &EmailConfig,
        db_path: &Path,
        window: Duration,
    ) -> Result<EmailOutput, OutputError> {
        let from = mailbox(&cfg.from)?;
        for t in cfg.to.iter().chain(cfg.routes.iter().flat_map(|r| &r.to)) {
            mailbox(t)?;
        }
        let tls_params = || -> Result<TlsParameters, OutputError> {
            let mut b = TlsParameters::builder(cfg.smtp_host.clone());
            if let Some(ca) = &cfg.ca_file {
                let pem = fs::read(ca).map_err(|e| OutputError::File {
                    path: ca.clone(),
                    reason: format!("cannot read CA certificates: {e}"),
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| OutputError::File {
                    path: ca.clone(),
                    reason: format!("bad CA certificate: {e}"),
                })?;
                b = b
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(cert);
            }
            b.build_rustls()
                .map_err(|e| OutputError::Email(format!("TLS setup: {e}")))
        };
        let mut b = SmtpTransport::builder_dangerous(cfg.smtp_host.clone())
            .port(cfg.smtp_port)
            .timeout(Some(Duration::from_secs(30)));
        b = match cfg.tls {
            SmtpTls::None => b.tls(Tls::None),
            SmtpTls::StartTls => b.tls(Tls::Required(tls_params()?)),
            SmtpTls::Tls => b.tls(Tls::Wrapper(tls_params()?)),
        };
        if let (Some(user), Some(pw)) = (&cfg.user, &cfg.password_file) {
            b = b.credentials(Credentials::new(user.clone(), read_password(pw)?));
        }
        Ok(EmailOutput {
            rcpt: Rcpt {
                min_level: cfg.min_level,
                to: cfg.to.clone(),
                routes: cfg.routes.clone(),
            },
            from,
            max_per_hour: cfg.max_per_hour,
            transport: b.build(),
            db: crate::state::open_db(db_path)?,
            window,
            rejected: HashMap::new(),
        })
    }

    /// Mails sent in the window and when the oldest of them went.
    fn sent_in_window(&self, now: i64) -> rusqlite::Result<(u64, Option<i64>)> {
        let since = now - self.window.as_millis() as i64;
        self.db.execute(
            "DELETE FROM email_sent WHERE output = ?1 AND sent_ms <= ?2",
            params![NAME, since],
        )?;
        self.db.query_row(
            "SELECT COUNT(*), MIN(sent_ms) FROM email_sent WHERE output = ?1",
            [NAME],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )
    }

    fn send(&mut self, to: &[String], subject: String, body: String) -> Result<(), SendError> {
        let permanent = |message: String| SendError {
            message,
            permanent: true,
        };
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for t in to {
            b = b.to(mailbox(t).map_err(|e| permanent(e.to_string()))?);
        }
        let msg = b
            .body(body)
            .map_err(|e| permanent(format!("building the mail: {e}")))?;
        self.transport.send(&msg).map_err(|e| SendError {
            message: format!("SMTP: {e}"),
            permanent: e.is_permanent(),
        })?;
        if let Err(e) = self.db.execute(
            "INSERT INTO email_sent (output, sent_ms) VALUES (?1, ?2)",
            params![NAME, now_ms()],
        ) {
            tracing::warn!(error = %e, "cannot record a sent mail for max_per_hour");
        }
        Ok(())
    }

    /// After a failed send of the mail for spool ids `ids` (the first names it): whether to give
    /// it up (a permanent rejection seen [`GIVE_UP_AFTER`] times), logging why.
    fn give_up(&mut self, ids: &[i64], e: &SendError) -> bool {
        let Some(&first) = ids.first() else {
            return false;
        };
        if !e.permanent {
            return false;
        }
        let n = self.rejected.entry(first).or_insert(0);
        *n += 1;
        if *n < GIVE_UP_AFTER {
            return false;
        }
        self.rejected.remove(&first);
        tracing::error!(
            alerts = ids.len(),
            error = %crate::diag::escape_control(&e.message),
            "mail refused for good {GIVE_UP_AFTER} times: given up (the alert stays in alerts.log and alerts.json)"
        );
        true
    }
}

impl Output for EmailOutput {
    fn name(&self) -> &str {
        NAME
    }

    fn selector(&self) -> Selector {
        let r = self.rcpt.clone();
        Arc::new(move |rec| !r.of(rec).is_empty())
    }

    fn deliver(&mut self, batch: &[Pending]) -> Delivery {
        let now = now_ms();
        let (sent, oldest) = match self.sent_in_window(now) {
            Ok(x) => x,
            Err(e) => {
                return Delivery {
                    delivered: Vec::new(),
                    outcome: Outcome::Failed(format!("mail counter: {e}")),
                }
            }
        };
        let avail = if self.max_per_hour == 0 {
            usize::MAX
        } else {
            (u64::from(self.max_per_hour).saturating_sub(sent)) as usize
        };
        if avail == 0 {
            let wait = oldest.unwrap_or(now) + self.window.as_millis() as i64 - now;
            return Delivery {
                delivered: Vec::new(),
                outcome: Outcome::Later(Duration::from_millis(wait.clamp(10, 3_600_000) as u64)),
            };
        }
        let mut delivered = Vec::new();
        let single = if batch.len() <= avail {
            batch.len()
        } else {
            avail - 1
        };
        for p in &batch[..single] {
            let to = self.rcpt.of(&p.record);
            if to.is_empty() {
                // The configuration changed since it was spooled: nobody wants it now.
                delivered.push(p.id);
                continue;
            }
            if let Err(e) = self.send(&to, email_subject(&p.record), email_body(&p.record)) {
                if !self.give_up(&[p.id], &e) {
                    return Delivery {
                        delivered,
                        outcome: Outcome::Failed(e.message),
                    };
                }
            }
            self.rejected.remove(&p.id);
            delivered.push(p.id);
        }
        let rest = &batch[single..];
        if !rest.is_empty() {
            // One digest, for the recipient list of the oldest alert waiting; the other lists
            // get theirs when the next slot frees.
            let to = self.rcpt.of(&rest[0].record);
            let group: Vec<&Pending> = rest
                .iter()
                .filter(|p| self.rcpt.of(&p.record) == to)
                .collect();
            if to.is_empty() {
                delivered.extend(group.iter().map(|p| p.id));
            } else {
                let recs: Vec<&AlertRecord> = group.iter().map(|p| &p.record).collect();
                let ids: Vec<i64> = group.iter().map(|p| p.id).collect();
                if let Err(e) = self.send(
                    &to,
                    digest_subject(&recs),
                    digest_body(&recs, self.max_per_hour),
                ) {
                    if !self.give_up(&ids, &e) {
                        return Delivery {
                            delivered,
                            outcome: Outcome::Failed(e.message),
                        };
                    }
                }
                self.rejected.remove(&ids[0]);
                delivered.extend(ids);
            }
        }
        Delivery {
            delivered,
            outcome: Outcome::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::testutil::record;

    fn rcpt() -> Rcpt {
        Rcpt {
            min_level: 7,
            to: vec!["ops@x".into()],
            routes: vec![
                EmailRoute {
                    groups: vec!["sshd".into()],
                    rules: vec![],
                    min_level: Some(10),
                    to: vec!["sec@x".into()],
                },
                EmailRoute {
                    groups: vec![],
                    rules: vec![31101],
                    min_level: None,
                    to: vec!["web@x".into(), "ops@x".into()],
                },
            ],
        }
    }

    #[test]
    fn recipients_follow_level_routes_and_options() {
        let r = rcpt();
        // sshd level 5: below min_level, route needs 10: nobody.
        assert!(r.of(&record(5716, 5, "d")).is_empty());
        // sshd level 7: ops only.
        assert_eq!(r.of(&record(5716, 7, "d")), vec!["ops@x"]);
        // sshd level 10: ops and the sshd route.
        assert_eq!(r.of(&record(5716, 10, "d")), vec!["ops@x", "sec@x"]);
        // Rule 31101 at level 3: its route, whatever min_level; duplicates merged.
        assert_eq!(r.of(&record(31101, 3, "d")), vec!["ops@x", "web@x"]);
        // alert_by_email overrides min_level ...
        let mut a = record(5716, 3, "d");
        a.rule.options.alert_by_email = true;
        assert_eq!(r.of(&a), vec!["ops@x"]);
        // ... and no_email_alert wins over everything.
        let mut b = record(5716, 12, "d");
        b.rule.options.alert_by_email = true;
        b.rule.options.no_email_alert = true;
        assert!(r.of(&b).is_empty());
    }

    #[test]
    fn password_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        fs::write(&p, "secret\r\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_password(&p)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password(&p).unwrap(), "secret");
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert!(read_password(&l).is_err());
    }
}
