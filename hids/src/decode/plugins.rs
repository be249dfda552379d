//! OSSEC's decoders written in C (`<plugin_decoder>`), implemented natively where done.
//!
//! - `SonicWall_Decoder`: SonicWall firewall key=value lines: severity (`pri`) as status, message
//!   id (`m`) as id, addresses and ports, protocol, and from the id an action and a decoder type
//!   (firewall pass/drop/close, IDS for category 32, squid for proxy lines with their URL).
//!
//! - `SymantecWS_Decoder`: Symantec Web Security's numbered key=value lines: `10=` user,
//!   `11=` source address, `60=` URL (first of each), and OSSEC's id: the first `2=`/`3=` entry
//!   taken as nine characters from its key on, as OSSEC takes it.
//!
//! The others (PF, OSSECAlert) are not implemented; see [`super::Plugin`].

use std::sync::OnceLock;

use regex::bytes::Regex;

use super::json::set;

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).unwrap_or_else(|e| panic!("built-in pattern: {e}")))
}

/// Decodes a SonicWall line; returns the decoder type the line turns out to be.
pub fn sonicwall(log: &[u8], fields: &mut Vec<crate::event::DecodedField>) -> &'static str {
    static IDS: OnceLock<Regex> = OnceLock::new();
    static ADDR: OnceLock<Regex> = OnceLock::new();
    static PROXY: OnceLock<Regex> = OnceLock::new();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let ids = re(&IDS, r"(?i-u)pri=([0-9]) c=([0-9]+) m=([0-9]+) ");
    let Some(c) = ids.captures(log) else {
        return "syslog";
    };
    let (status, category, id) = (text(&c[1]), text(&c[2]), text(&c[3]));
    set(fields, "status", status);
    set(fields, "id", id.clone());
    let rest = &log[c.get(0).map_or(0, |m| m.end())..];
    let addr = re(
        &ADDR,
        r"(?i-u)src=([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+):([0-9]+):[^ ]+ dst=([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+):([0-9]+):",
    );
    let Some(a) = addr.captures(rest) else {
        return "syslog";
    };
    set(fields, "srcip", text(&a[1]));
    set(fields, "srcport", text(&a[2]));
    set(fields, "dstip", text(&a[3]));
    set(fields, "dstport", text(&a[4]));
    let after = &rest[a.get(0).map_or(0, |m| m.end())..];
    if let Some(sp) = after.iter().position(|&b| b == b' ') {
        if let Some(p) = after[sp + 1..].strip_prefix(b"proto=") {
            let proto: Vec<u8> = p
                .iter()
                .copied()
                .take_while(|&b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'-' | b'.' | b'_' | b'@' | b'(' | b')')
                })
                .take(6)
                .collect();
            set(fields, "protocol", text(&proto));
        }
    }
    if category == "32" {
        return "ids";
    }
    let action = match id.as_str() {
        "98" | "597" | "598" => "pass",
        "38" | "36" | "173" | "174" | "37" => "drop",
        "537" => "close",
        "97" => {
            let proxy = re(
                &PROXY,
                r"(?i-u)result=([0-9]+) dstname=([^ ]+) arg=([^ ]+)$",
            );
            if let Some(p) = proxy.captures(after) {
                set(fields, "id", text(&p[1]));
                set(fields, "url", format!("{}{}", text(&p[2]), text(&p[3])));
            }
            return "squid";
        }
        _ => return "syslog",
    };
    set(fields, "action", action.to_string());
    "firewall"
}

/// Decodes a Symantec Web Security line (`20070717,73613,1=5,11=10.1.1.3,10=userc,3=1,2=1`).
pub fn symantec_ws(log: &[u8], fields: &mut Vec<crate::event::DecodedField>) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    // Entries start after the first comma (the date and time are skipped).
    let Some(first) = log.iter().position(|&b| b == b',') else {
        return;
    };
    let mut rest = &log[first + 1..];
    let mut seen = [false; 4];
    loop {
        let value = |r: &[u8], key: usize, max: usize| {
            let v = &r[key..];
            let end = v
                .iter()
                .position(|&b| b == b',')
                .unwrap_or(v.len())
                .min(max);
            text(&v[..end])
        };
        if rest.starts_with(b"10=") && !seen[0] {
            seen[0] = true;
            set(fields, "dstuser", value(rest, 3, 128));
        } else if rest.starts_with(b"11=") && !seen[1] {
            seen[1] = true;
            set(fields, "srcip", value(rest, 3, 128));
        } else if rest.starts_with(b"60=") && !seen[2] {
            seen[2] = true;
            set(fields, "url", value(rest, 3, 1024));
        } else if (rest.starts_with(b"3=") || rest.starts_with(b"2=")) && !seen[3] {
            seen[3] = true;
            set(fields, "id", text(&rest[..rest.len().min(9)]));
        }
        match rest.iter().position(|&b| b == b',') {
            Some(i) => rest = &rest[i + 1..],
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> (&'static str, Vec<crate::event::DecodedField>) {
        let mut f = Vec::new();
        let t = sonicwall(line.as_bytes(), &mut f);
        (t, f)
    }

    fn get<'a>(f: &'a [crate::event::DecodedField], k: &str) -> Option<&'a str> {
        f.iter().find(|(n, _)| &**n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn connection_opened_is_a_firewall_pass() {
        let (t, f) = run("id=firewall sn=000SERIAL time=\"2007-01-03 14:48:06\" fw=1.1.1.1 pri=6 c=262144 m=98 msg=\"Connection Opened\" n=23419 src=2.2.2.2:36701:WAN dst=1.1.1.1:50000:WAN proto=tcp/50000");
        assert_eq!(t, "firewall");
        assert_eq!(get(&f, "action"), Some("pass"));
        assert_eq!(get(&f, "srcip"), Some("2.2.2.2"));
        assert_eq!(get(&f, "dstport"), Some("50000"));
        assert_eq!(get(&f, "protocol"), Some("tcp"));
        assert_eq!(get(&f, "status"), Some("6"));
    }

    #[test]
    fn category_32_is_ids_and_unknown_ids_stay_syslog() {
        let (t, f) = run("id=firewall sn=1 time=\"x y\" fw=1.1.1.1 pri=1 c=32 m=30 msg=\"Administrator login denied due to bad credentials\" n=7 src=2.2.2.2:36701:WAN dst=1.1.1.1:50000:WAN");
        assert_eq!(t, "ids");
        assert_eq!(get(&f, "id"), Some("30"));
        let (t, f) = run("id=firewall pri=5 c=64 m=999 src=1.2.3.4:1:X dst=5.6.7.8:2:Y");
        assert_eq!(t, "syslog");
        assert_eq!(get(&f, "action"), None);
        let (t, f) = run("no fields here");
        assert_eq!(t, "syslog");
        assert!(f.is_empty());
    }

    #[test]
    fn symantec_web_security_fields() {
        let mut f = Vec::new();
        symantec_ws(b"20070717,73614,1=5,11=1.2.3.4,1106=News,60=http://news.bbc.co.uk/,10=userX,1000=212.58.240.42,2=27", &mut f);
        assert_eq!(get(&f, "srcip"), Some("1.2.3.4"));
        assert_eq!(get(&f, "url"), Some("http://news.bbc.co.uk/"));
        assert_eq!(get(&f, "dstuser"), Some("userX"));
        assert_eq!(get(&f, "id"), Some("2=27"));
        let mut f = Vec::new();
        symantec_ws(b"20070717,73613,1=5,11=10.1.1.3,10=userc,3=1,2=1", &mut f);
        assert_eq!(get(&f, "id"), Some("3=1,2=1"));
        let mut f = Vec::new();
        symantec_ws(b"no commas", &mut f);
        assert!(f.is_empty());
    }

    #[test]
    fn proxy_lines_get_the_url() {
        let (t, f) = run("id=firewall pri=6 c=1024 m=97 src=10.0.0.2:51000:LAN dst=93.184.216.34:80:WAN proto=tcp/http op=1 result=200 dstname=example.com arg=/index.html");
        assert_eq!(t, "squid");
        assert_eq!(get(&f, "id"), Some("200"));
        assert_eq!(get(&f, "url"), Some("example.com/index.html"));
    }
}
