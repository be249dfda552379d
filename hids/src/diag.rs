//! Diagnostics that point into a source file: `path:line:col: message`, the source line, and a caret.
//!
//! Shared by the configuration loader, the decoder loader and the rule loader so that every error an
//! operator sees about a file they wrote has the same shape.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in one file, located to a line and column (both 1-based; the column counts characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
    /// The text of the offending line, for the caret display. Empty when unknown.
    pub source_line: String,
}

impl Diagnostic {
    /// A diagnostic at byte offset `span.start` of `text`.
    pub fn at(file: &Path, text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let (line, col, source_line) = line_col(text, span.start);
        Diagnostic {
            file: file.to_path_buf(),
            line,
            col,
            message: message.into(),
            source_line,
        }
    }

    /// A diagnostic about a file as a whole (it could not be read, for instance).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            col: 0,
            message: message.into(),
            source_line: String::new(),
        }
    }

    /// The first line only: `path:line:col: message`.
    pub fn headline(&self) -> String {
        if self.line == 0 {
            format!("{}: {}", self.file.display(), escape_control(&self.message))
        } else {
            format!(
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.col,
                escape_control(&self.message)
            )
        }
    }
}

impl fmt::Display for Diagnostic {
    /// The headline, then the source line with a caret under the fault.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.headline())?;
        if self.line > 0 && !self.source_line.is_empty() {
            let gutter = self.line.to_string().len();
            let shown = escape_control(&self.source_line);
            // The caret sits under the same character once control characters are escaped.
            let before: String = self.source_line.chars().take(self.col - 1).collect();
            let pad = escape_control(&before).chars().count();
            write!(
                f,
                "\n{:gutter$} |\n{} | {}\n{:gutter$} | {:pad$}^",
                "", self.line, shown, "", ""
            )?;
        }
        Ok(())
    }
}

/// Line (1-based), column (1-based, in characters) and the line's text for a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize, String) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[..offset].matches('\n').count() + 1;
    let col = text[line_start..offset].chars().count() + 1;
    let source = text[line_start..line_end]
        .trim_end_matches('\r')
        .to_string();
    (line, col, source)
}

/// Escapes control characters (and DEL) so that text from a file cannot drive a terminal.
pub fn escape_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Like [`escape_control`] but keeps line breaks, for multi-line messages printed to a terminal.
pub fn escape_control_keep_newlines(s: &str) -> String {
    s.split('\n')
        .map(escape_control)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest candidate to `word`, if it is close enough to be a plausible typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1) + 1;
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_chars() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1, "a = 1".into()));
        let off = text.rfind('=').unwrap();
        assert_eq!(line_col(text, off).0, 2);
        assert_eq!(line_col(text, off).1, 4);
    }

    #[test]
    fn display_puts_caret_under_fault() {
        let d = Diagnostic::at(Path::new("x.toml"), "[fim]\nintervl = 3\n", 6..13, "bad");
        let s = d.to_string();
        assert!(s.starts_with("x.toml:2:1: bad"), "{s}");
        assert!(s.ends_with("  | ^"), "{s}");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("a\x1b[31mb\r\n"), "a\\u{1b}[31mb\\r\\n");
    }

    #[test]
    fn suggestions_pick_close_words_only() {
        let c = ["interval", "daily_time", "paths"];
        assert_eq!(suggest("intervl", c), Some("interval"));
        assert_eq!(suggest("zzzzzzzz", c), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
