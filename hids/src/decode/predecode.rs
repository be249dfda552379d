//! OSSEC's pre-decoding (its phase 1): split the syslog header off a line.
//!
//! The header forms are the ones OSSEC's pre-decoder recognises, checked the same way (fixed
//! positions of separators, not a full date parser) so that the same lines get the same
//! `program_name` and message as in OSSEC:
//!
//! - `Nov 21 10:00:00 host prog[pid]: msg` (RFC 3164), also without a host (`Nov 21 10:00:00 prog: msg`
//!   as Solaris writes it), with `prog:` or `prog[pid]:` or `prog[pid] `, the AIX
//!   `host auth|security:info prog: msg` form, and a leading `[ID nnn facility.severity]` removed;
//! - `2015-04-16 21:51:02,805 host ...`, ISO 8601 / RFC 3339 (`2007-06-14T15:48:55-04:00`, with up to six
//!   fraction digits), `2015 Dec 29 10:00:01 host ...`, `2019:11:06-00:08:03 host ...`;
//! - date-only prefixes that OSSEC strips without a host: xferlog (`Mon Apr 17 18:27:14 2006`), snort
//!   (`01/28-09:13:16.240702`), suricata (`01/28/1979-09:13:16.240702`), apache error log
//!   (`[Fri Feb 11 18:06:35 2004] `), squid (`1140804070.368  11623 ...`);
//! - the macOS ASL form (`[Time ...] [Facility auth] [Sender sshd] ... [Message ...] [Host h]`).
//!
//! Anything else (apache/nginx access logs, JSON, audit records) is handed on whole, as OSSEC does.

use crate::event::{FieldValue, LogFormat, Predecoded};

/// Characters OSSEC accepts in a host or program name.
fn valid_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'(' | b')' | b'-' | b'.' | b'/' | b'@' | b'_')
}

/// Splits `line` as OSSEC's pre-decoder does. JSON input is never split.
pub fn predecode(line: &str, format: LogFormat) -> Predecoded {
    if format == LogFormat::Json {
        return whole(line);
    }
    predecode_syslog(line)
}

fn whole(line: &str) -> Predecoded {
    Predecoded {
        message: line.to_string(),
        ..Predecoded::default()
    }
}

fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

fn digit(b: &[u8], i: usize) -> bool {
    at(b, i).is_ascii_digit()
}

/// Where the message starts after a date prefix, for the forms followed by a host name.
fn dated_header_len(p: &[u8], loglen: usize) -> Option<usize> {
    // Dec 29 10:00:01
    if loglen > 17
        && at(p, 3) == b' '
        && at(p, 6) == b' '
        && at(p, 9) == b':'
        && at(p, 12) == b':'
        && at(p, 15) == b' '
    {
        return Some(16);
    }
    // 2015-04-16 21:51:02,805
    if loglen > 24
        && at(p, 4) == b'-'
        && at(p, 7) == b'-'
        && at(p, 10) == b' '
        && at(p, 13) == b':'
        && at(p, 16) == b':'
        && at(p, 19) == b','
    {
        return Some(23);
    }
    // 2007-06-14T15:48:55-04:00 and with a fraction of a second
    if loglen > 33
        && at(p, 4) == b'-'
        && at(p, 7) == b'-'
        && at(p, 10) == b'T'
        && at(p, 13) == b':'
        && at(p, 16) == b':'
    {
        if at(p, 22) == b':' && at(p, 25) == b' ' {
            return Some(26);
        }
        if at(p, 19) == b'.' || at(p, 19) == b',' {
            for (colon, skip) in [(24, 27), (25, 28), (26, 29), (27, 30), (28, 31), (29, 32)] {
                if at(p, colon) == b':' {
                    return Some(skip);
                }
            }
        }
    }
    // 2015 Dec 29 10:00:01
    if loglen > 21
        && digit(p, 0)
        && at(p, 4) == b' '
        && at(p, 8) == b' '
        && at(p, 11) == b' '
        && at(p, 14) == b':'
        && at(p, 17) == b':'
        && at(p, 20) == b' '
    {
        return Some(21);
    }
    // 2019:11:06-00:08:03
    if loglen > 20
        && digit(p, 0)
        && at(p, 4) == b':'
        && at(p, 7) == b':'
        && at(p, 10) == b'-'
        && at(p, 13) == b':'
        && at(p, 16) == b':'
    {
        return Some(20);
    }
    None
}

fn predecode_syslog(line: &str) -> Predecoded {
    // A header whose fixed positions fall inside a multi-byte character is not a header.
    split_syslog(line).unwrap_or_else(|| whole(line))
}

/// `line[a..b]`, or `None` when that is not on character boundaries.
fn sub(line: &str, a: usize, b: usize) -> Option<FieldValue> {
    line.get(a..b).map(FieldValue::from)
}

fn split_syslog(line: &str) -> Option<Predecoded> {
    let full = line.as_bytes();
    // OSSEC compares lengths including its terminating NUL.
    let loglen = full.len() + 1;
    // "Mär" (UTF-8 umlaut) is read as "Mar" so the positions line up, as OSSEC repairs it.
    let shift = usize::from(at(full, 1) == 0xC3 && at(full, 2) == 0xA4);
    let p = &full[shift..];

    if let Some(skip) = dated_header_len(p, loglen) {
        let mut log = shift + skip;
        let timestamp = line.get(..log).map(|s| FieldValue::from(s.trim_end()));
        if at(full, log) == b' ' {
            log += 1;
        }
        let mut out = Predecoded {
            timestamp,
            ..Predecoded::default()
        };
        let host_start = log;
        let mut i = host_start;
        while valid_char(at(full, i)) {
            i += 1;
        }
        let mut msg_start = Some(log);
        if at(full, i) == b':' && at(full, i + 1) == b' ' {
            // No host name (Solaris): what we read is the program name.
            out.program_name = Some(sub(line, host_start, i)?);
            msg_start = Some(i + 2);
        } else if at(full, i) != b' ' {
            // Not a host name: the message starts after the date.
        } else {
            out.hostname = Some(sub(line, host_start, i)?);
            i += 1;
            msg_start = Some(i);
            let prog_start = i;
            while valid_char(at(full, i)) {
                i += 1;
            }
            let prog = sub(line, prog_start, i)?;
            if at(full, i) == b':' && at(full, i + 1) == b' ' {
                out.program_name = Some(prog);
                msg_start = Some(i + 2);
            } else if at(full, i) == b'[' && digit(full, i + 1) {
                let pid_start = i + 1;
                let mut j = i + 2;
                while digit(full, j) {
                    j += 1;
                }
                if at(full, j) == b']' && at(full, j + 1) == b':' && at(full, j + 2) == b' ' {
                    out.program_name = Some(prog);
                    out.pid = Some(sub(line, pid_start, j)?);
                    msg_start = Some(j + 3);
                } else if at(full, j) == b']' && at(full, j + 1) == b' ' {
                    out.program_name = Some(prog);
                    out.pid = Some(sub(line, pid_start, j)?);
                    msg_start = Some(j + 2);
                }
                // Otherwise OSSEC gives up on the program name; the message starts after the host.
            } else if at(full, i) == b'|' && at(full, i + 1).is_ascii_lowercase() {
                // AIX: "auth|security:info prog: msg"
                let mut j = i + 2;
                while at(full, j).is_ascii_alphanumeric() {
                    j += 1;
                }
                if at(full, j) == b':' {
                    j += 1;
                    while at(full, j).is_ascii_alphanumeric() {
                        j += 1;
                    }
                    if at(full, j) == b' ' {
                        j += 1;
                        let ps = j;
                        while valid_char(at(full, j)) {
                            j += 1;
                        }
                        if at(full, j) == b':' && at(full, j + 1) == b' ' {
                            out.program_name = Some(sub(line, ps, j)?);
                            msg_start = Some(j + 2);
                        } else if at(full, j) == b'[' && digit(full, j + 1) {
                            let pid_start = j + 1;
                            let mut k = j + 2;
                            while digit(full, k) {
                                k += 1;
                            }
                            out.program_name = Some(sub(line, ps, j)?);
                            if at(full, k) == b']'
                                && at(full, k + 1) == b':'
                                && at(full, k + 2) == b' '
                            {
                                out.pid = Some(sub(line, pid_start, k)?);
                                msg_start = Some(k + 3);
                            }
                        } else {
                            // OSSEC keeps the program name start as the message start here.
                            out.program_name = Some(sub(line, ps, j)?);
                            msg_start = Some(ps);
                        }
                    }
                }
            }
        }
        let mut start = msg_start.unwrap_or(log);
        // Remove "[ID nnn facility.severity] "
        if out.program_name.is_some() || out.hostname.is_some() {
            let rest = &full[start.min(full.len())..];
            if rest.starts_with(b"[ID ") {
                if let Some(k) = find(&rest[4..], b"] ") {
                    start += 4 + k + 2;
                }
            }
        }
        out.message = line.get(start.min(line.len())..)?.to_string();
        return Some(out);
    }

    let p = full;
    // xferlog: Mon Apr 17 18:27:14 2006 1 64.160.42.130
    if loglen > 28
        && at(p, 3) == b' '
        && at(p, 7) == b' '
        && at(p, 10) == b' '
        && at(p, 13) == b':'
        && at(p, 16) == b':'
        && at(p, 19) == b' '
        && at(p, 24) == b' '
        && at(p, 26) == b' '
    {
        return Some(dated_only(line, 24));
    }
    // snort: 01/28-09:13:16.240702  [**]
    if loglen > 24
        && at(p, 2) == b'/'
        && at(p, 5) == b'-'
        && at(p, 8) == b':'
        && at(p, 11) == b':'
        && at(p, 14) == b'.'
        && at(p, 21) == b' '
    {
        return Some(dated_only(line, 23));
    }
    // suricata: 01/28/1979-09:13:16.240702  [**]
    if loglen > 26
        && at(p, 2) == b'/'
        && at(p, 5) == b'/'
        && at(p, 10) == b'-'
        && at(p, 13) == b':'
        && at(p, 16) == b':'
        && at(p, 19) == b'.'
        && at(p, 26) == b' '
    {
        return Some(dated_only(line, 28));
    }
    // apache error log: [Fri Feb 11 18:06:35 2004] [warn]
    if loglen > 27
        && at(p, 0) == b'['
        && at(p, 4) == b' '
        && at(p, 8) == b' '
        && at(p, 11) == b' '
        && at(p, 14) == b':'
        && at(p, 17) == b':'
        && at(p, 20) == b' '
        && at(p, 25) == b']'
    {
        return Some(dated_only(line, 27));
    }
    // macOS ASL: [Time 2006.12.28 15:53:55 UTC] [Facility auth] [Sender sshd] ...
    if loglen > 26
        && at(p, 0) == b'['
        && at(p, 1) == b'T'
        && at(p, 5) == b' '
        && at(p, 10) == b'.'
        && at(p, 13) == b'.'
        && at(p, 16) == b' '
        && at(p, 19) == b':'
    {
        return Some(asl(line));
    }
    // squid: 1140804070.368  11623 ...
    if loglen > 32
        && at(p, 0) == b'1'
        && digit(p, 1)
        && digit(p, 2)
        && digit(p, 3)
        && at(p, 10) == b'.'
        && digit(p, 13)
        && at(p, 14) == b' '
        && (at(p, 21) == b' ' || at(p, 22) == b' ')
    {
        let mut start = 14;
        while at(p, start) == b' ' {
            start += 1;
        }
        let mut out = dated_only(line, start);
        out.timestamp = line.get(..14).map(FieldValue::from);
        return Some(out);
    }
    Some(whole(line))
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn dated_only(line: &str, skip: usize) -> Predecoded {
    let skip = skip.min(line.len());
    let (ts, msg) = match (line.get(..skip), line.get(skip..)) {
        (Some(a), Some(b)) => (a, b),
        // A cut inside a multi-byte character: hand the line on whole.
        _ => return whole(line),
    };
    Predecoded {
        timestamp: Some(ts.trim_end().into()),
        message: msg.to_string(),
        ..Predecoded::default()
    }
}

fn asl(line: &str) -> Predecoded {
    let mut out = Predecoded {
        timestamp: line.get(6..24).map(|s| s.trim().into()),
        message: line.get(25..).unwrap_or("").to_string(),
        ..Predecoded::default()
    };
    let mut rest = line.get(25..).unwrap_or("");
    let mut done_message = false;
    while let Some(i) = rest.find('[') {
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix("Sender ") {
            if out.program_name.is_none() {
                match r.find(']') {
                    Some(e) => {
                        out.program_name = Some(r[..e].into());
                        rest = &r[e + 1..];
                    }
                    None => break,
                }
            }
        } else if let Some(r) = rest.strip_prefix("Message ") {
            if !done_message {
                done_message = true;
                match r.find(']') {
                    Some(e) => {
                        out.message = r[..e].to_string();
                        rest = &r[e + 1..];
                    }
                    None => {
                        out.message = r.to_string();
                        break;
                    }
                }
            }
        } else if let Some(r) = rest.strip_prefix("Host ") {
            if let Some(e) = r.find(']') {
                out.hostname = Some(r[..e].into());
            }
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pd(s: &str) -> Predecoded {
        predecode(s, LogFormat::Syslog)
    }

    #[test]
    fn rfc3164_with_pid() {
        let p = pd("Nov 21 10:00:00 web1 sshd[1234]: Accepted password for root");
        assert_eq!(p.timestamp.as_deref(), Some("Nov 21 10:00:00"));
        assert_eq!(p.hostname.as_deref(), Some("web1"));
        assert_eq!(p.program_name.as_deref(), Some("sshd"));
        assert_eq!(p.pid.as_deref(), Some("1234"));
        assert_eq!(p.message, "Accepted password for root");
    }

    #[test]
    fn rfc3164_single_digit_day_and_no_pid() {
        let p = pd("Feb  9 11:44:56 someserver sudo:     dcid : TTY=pts/4");
        assert_eq!(p.hostname.as_deref(), Some("someserver"));
        assert_eq!(p.program_name.as_deref(), Some("sudo"));
        assert_eq!(p.message, "    dcid : TTY=pts/4");
    }

    #[test]
    fn program_name_with_parentheses_and_pid_without_colon() {
        let p = pd("Nov 21 10:00:00 h su(pam_unix)[23164]: authentication failure");
        assert_eq!(p.program_name.as_deref(), Some("su(pam_unix)"));
        let p = pd("Nov 21 10:00:00 h prog[12] message");
        assert_eq!(p.program_name.as_deref(), Some("prog"));
        assert_eq!(p.message, "message");
    }

    #[test]
    fn no_program_name_when_the_form_is_unknown() {
        let p = pd("Nov 21 10:00:00 h kernel some text");
        assert_eq!(p.hostname.as_deref(), Some("h"));
        assert_eq!(p.program_name, None);
        assert_eq!(p.message, "kernel some text");
        let p = pd("Nov 21 10:00:00 h prog[12x: text");
        assert_eq!(p.program_name, None);
        assert_eq!(p.message, "prog[12x: text");
    }

    #[test]
    fn solaris_without_host_and_id_tag() {
        let p = pd("Nov 21 10:00:00 sshd: [ID 800047 auth.info] Accepted");
        assert_eq!(p.hostname, None);
        assert_eq!(p.program_name.as_deref(), Some("sshd"));
        let p = pd("Nov 21 10:00:00 h sshd[1]: [ID 800047 auth.info] Accepted x");
        assert_eq!(p.message, "Accepted x");
    }

    #[test]
    fn iso8601_and_other_dated_headers() {
        let p = pd("2007-06-14T15:48:55-04:00 host sshd[1]: m");
        assert_eq!(p.timestamp.as_deref(), Some("2007-06-14T15:48:55-04:00"));
        assert_eq!(p.program_name.as_deref(), Some("sshd"));
        let p = pd("2009-05-22T09:36:46.214994-07:00 host sshd[1]: m");
        assert_eq!(p.hostname.as_deref(), Some("host"));
        assert_eq!(p.message, "m");
        let p = pd("2015 Dec 29 10:00:01 host prog: m");
        assert_eq!(p.program_name.as_deref(), Some("prog"));
        let p = pd("2015-04-16 21:51:02,805 host proftpd[1]: m");
        assert_eq!(p.program_name.as_deref(), Some("proftpd"));
        let p = pd("2019:11:06-00:08:03 host prog: m");
        assert_eq!(p.program_name.as_deref(), Some("prog"));
    }

    #[test]
    fn aix_form() {
        let p = pd("Nov 21 10:00:00 h auth|security:info sshd[2]: m");
        assert_eq!(p.program_name.as_deref(), Some("sshd"));
        assert_eq!(p.message, "m");
    }

    #[test]
    fn date_only_prefixes() {
        let p = pd("[Fri Feb 11 18:06:35 2004] [warn] x");
        assert_eq!(p.message, "[warn] x");
        assert_eq!(p.program_name, None);
        let p = pd("01/28-09:13:16.240702  [**] x");
        assert_eq!(p.message, "[**] x");
        let p = pd("Mon Apr 17 18:27:14 2006 1 64.160.42.130 5 /f b _ o r u ftp 0 * c");
        // OSSEC keeps the space after the xferlog date.
        assert_eq!(p.message, " 1 64.160.42.130 5 /f b _ o r u ftp 0 * c");
    }

    #[test]
    fn asl_form() {
        let p = pd("[Time 2006.12.28 15:53:55 UTC] [Facility auth] [Sender sshd] [PID 483] [Message error: PAM: x] [Level 3] [Host h1]");
        assert_eq!(p.program_name.as_deref(), Some("sshd"));
        assert_eq!(p.message, "error: PAM: x");
        assert_eq!(p.hostname.as_deref(), Some("h1"));
    }

    #[test]
    fn lines_without_header_are_whole() {
        for l in [
            "192.168.1.1 - - [21/Nov/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 200 1",
            "{\"a\":1}",
            "type=USER_AUTH msg=audit(1.2:3): x",
            "",
            "é",
        ] {
            let p = pd(l);
            assert_eq!(p.message, l);
            assert_eq!(p.program_name, None);
        }
    }

    #[test]
    fn umlaut_month() {
        let p = pd("Mär 02 17:30:52 host prog: m");
        assert_eq!(p.program_name.as_deref(), Some("prog"));
        assert_eq!(p.message, "m");
    }

    #[test]
    fn multibyte_text_at_cut_points_does_not_panic() {
        for l in [
            "Nov 21 10:00:00 é",
            "Nov 21 10:00:00 hé sshé[1]: m",
            "[éééééééééééééééé]",
        ] {
            let _ = pd(l);
        }
    }
}
