//! Content changes of `report_changes` files: which files count as text, the compressed copies kept
//! in the baseline, and the unified diff shown in a change. Never used for `nodiff` paths: their
//! content is not stored, logged or shown anywhere.

use std::io::{Read, Write};

/// Files larger than this keep no copy (and get no diff).
pub const CONTENT_CAP: u64 = 1 << 20;
/// A diff longer than this is cut, with a note.
pub const DIFF_CAP: usize = 64 << 10;

/// Text: no NUL byte. Other control bytes are escaped when shown.
pub fn is_text(data: &[u8]) -> bool {
    !data.contains(&0)
}

/// Compresses a copy for storage.
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Decompresses a stored copy (None when it is corrupt or larger than a copy can be).
pub fn decompress(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .take(CONTENT_CAP + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 <= CONTENT_CAP).then_some(out)
}

/// A unified diff (3 lines of context) from `old` to `new`, labelled with `label`, cut at
/// [`DIFF_CAP`]. Control characters in the content are escaped so a diff cannot drive a terminal.
pub fn unified(label: &str, old: &[u8], new: &[u8]) -> String {
    let old = String::from_utf8_lossy(old);
    let new = String::from_utf8_lossy(new);
    let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("{label} (baseline)"), &format!("{label} (now)"))
        .to_string();
    let mut out = String::with_capacity(text.len().min(DIFF_CAP) + 64);
    for line in text.lines() {
        if out.len() + line.len() > DIFF_CAP {
            out.push_str("[diff cut: longer than 64 KiB]\n");
            break;
        }
        out.push_str(&escape_line(line));
        out.push('\n');
    }
    out
}

fn escape_line(line: &str) -> String {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return line.to_string();
    }
    line.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compress_round_trip() {
        let data = b"worker_processes 4;\n".repeat(100);
        let c = compress(&data);
        assert!(c.len() < data.len());
        assert_eq!(decompress(&c).unwrap(), data);
        assert!(decompress(b"not deflate at all \xff\xff").is_none());
    }

    #[test]
    fn small_edit_gives_a_small_unified_diff() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\n";
        let d = unified("/etc/x.conf", old.as_bytes(), new.as_bytes());
        assert!(
            d.starts_with("--- /etc/x.conf (baseline)\n+++ /etc/x.conf (now)\n"),
            "{d}"
        );
        assert!(d.contains("@@ -2,7 +2,7 @@\n"), "{d}");
        assert!(d.contains("\n-e\n+E\n"), "{d}");
        assert!(!d.contains(" a\n"), "context is 3 lines: {d}");
    }

    #[test]
    fn control_characters_are_escaped() {
        let d = unified("f", b"x\n", b"\x1b[31mred\n");
        assert!(d.contains("+\\u{1b}[31mred"), "{d}");
        assert!(!d.contains('\x1b'));
        assert!(is_text(b"plain"));
        assert!(!is_text(b"\x7fELF\0"));
    }
}
