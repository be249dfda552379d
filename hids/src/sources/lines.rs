//! Splitting a byte stream into lines, keeping track of the file offset just after each one.
//!
//! Lines end at `\n` (a `\r` before it is dropped). A line longer than the maximum is cut at the
//! maximum, marked, and the rest of it skipped up to its newline. A last line without its newline
//! waits in a buffer until the newline comes, or until [`LineSplitter::flush_partial`]. Bytes are
//! never lost to bad encoding: invalid UTF-8 is replaced (and the line marked), NUL bytes are kept.

/// One line found by the splitter.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// The bytes of the line, without its newline (and `\r`), at most the maximum length.
    pub bytes: &'a [u8],
    /// The file offset to resume at once this line is handed on.
    pub end: u64,
    /// The line was cut at the maximum length.
    pub truncated: bool,
    /// The same bytes as text, when they are already known to be valid UTF-8 (validated with
    /// the whole block they came in, which costs less than line by line).
    pub text: Option<&'a str>,
}

/// The line splitter of one file (one generation of it: a truncated file gets a new one).
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    buf: Vec<u8>,
    /// Skipping the rest of a line that was cut.
    discarding: bool,
    /// The file offset just after the last byte fed.
    read_offset: u64,
}

impl LineSplitter {
    /// A splitter for bytes that start at file offset `offset`.
    pub fn new(max_line: usize, offset: u64) -> LineSplitter {
        LineSplitter {
            max_line: max_line.max(1),
            buf: Vec::new(),
            discarding: false,
            read_offset: offset,
        }
    }

    /// The offset just after the last byte fed.
    pub fn read_offset(&self) -> u64 {
        self.read_offset
    }

    /// Bytes of an unfinished line are waiting.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Feeds the next bytes of the stream; `emit` is called for each complete (or cut) line.
    pub fn feed<F: FnMut(Line<'_>)>(&mut self, data: &[u8], mut emit: F) {
        let max = self.max_line;
        // The block's longest valid UTF-8 prefix: the lines in it need no validation of their own
        // (a `\n` never falls inside a character, so they are valid text each).
        let valid = valid_prefix(data);
        let newline = Newline::new();
        let mut rest = data;
        while !rest.is_empty() {
            match newline.find(rest) {
                Some(i) => {
                    let seg = &rest[..i];
                    self.read_offset += i as u64 + 1;
                    if self.discarding {
                        self.discarding = false;
                    } else if self.buf.is_empty() {
                        let cut = seg.len() > max;
                        let bytes = strip_cr(&seg[..seg.len().min(max)], cut);
                        let at = data.len() - rest.len();
                        emit(Line {
                            bytes,
                            end: self.read_offset,
                            truncated: cut,
                            // None where a cut fell inside a character: that line is made lossy.
                            text: valid.get(at..at + bytes.len()),
                        });
                    } else {
                        let room = max - self.buf.len();
                        let cut = seg.len() > room;
                        self.buf.extend_from_slice(&seg[..seg.len().min(room)]);
                        emit(Line {
                            bytes: strip_cr(&self.buf, cut),
                            end: self.read_offset,
                            truncated: cut,
                            text: None,
                        });
                        self.buf.clear();
                    }
                    rest = &rest[i + 1..];
                }
                None => {
                    let line_start = self.read_offset - self.buf.len() as u64;
                    self.read_offset += rest.len() as u64;
                    if !self.discarding {
                        if self.buf.len() + rest.len() > max {
                            let room = max - self.buf.len();
                            self.buf.extend_from_slice(&rest[..room]);
                            // Acknowledging this line must not move past its start: its end is
                            // not known yet, and a restart re-reads (and cuts) it again.
                            emit(Line {
                                bytes: &self.buf,
                                end: line_start,
                                truncated: true,
                                text: None,
                            });
                            self.buf.clear();
                            self.discarding = true;
                        } else {
                            self.buf.extend_from_slice(rest);
                        }
                    }
                    rest = &[];
                }
            }
        }
    }

    /// Hands on an unfinished last line as it is (the file has been quiet long enough, or it is
    /// no longer followed). What follows it later starts a new line.
    pub fn flush_partial<F: FnMut(Line<'_>)>(&mut self, mut emit: F) {
        if !self.buf.is_empty() {
            emit(Line {
                bytes: strip_cr(&self.buf, false),
                end: self.read_offset,
                truncated: false,
                text: None,
            });
            self.buf.clear();
        }
    }
}

/// Finds the next `\n`. With AVX2, memchr's searcher is built once per block and called directly:
/// `memchr::memchr` would dispatch (and build it) again for every line.
struct Newline {
    #[cfg(target_arch = "x86_64")]
    avx2: Option<memchr::arch::x86_64::avx2::memchr::One>,
}

impl Newline {
    fn new() -> Newline {
        Newline {
            #[cfg(target_arch = "x86_64")]
            avx2: memchr::arch::x86_64::avx2::memchr::One::new(b'\n'),
        }
    }

    #[inline]
    fn find(&self, haystack: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(one) = &self.avx2 {
            return one.find(haystack);
        }
        memchr::memchr(b'\n', haystack)
    }
}

/// The longest prefix of `data` that is valid UTF-8.
///
/// `simdutf8` checks a block of plain ASCII (most logs) several times faster than
/// `std::str::from_utf8`, which was an eighth of the instructions spent per line; only a block
/// with invalid bytes is looked at a second time, to find where they start.
fn valid_prefix(data: &[u8]) -> &str {
    if let Ok(s) = simdutf8::basic::from_utf8(data) {
        return s;
    }
    let up_to = match simdutf8::compat::from_utf8(data) {
        Ok(s) => return s,
        Err(e) => e.valid_up_to(),
    };
    simdutf8::basic::from_utf8(&data[..up_to]).unwrap_or_default()
}

#[inline]
fn strip_cr(b: &[u8], cut: bool) -> &[u8] {
    match b.split_last() {
        Some((b'\r', head)) if !cut => head,
        _ => b,
    }
}

/// The text of a line: valid UTF-8 as is, else with invalid bytes replaced by U+FFFD; the flag
/// says whether replacing was needed.
pub fn to_text(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), false),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
    }
}

/// Replaces the contents of `out` with the text of a line, as [`to_text`] makes it, reusing the
/// string's allocation; true when invalid UTF-8 had to be replaced.
#[inline]
pub fn set_text(out: &mut String, line: &Line<'_>) -> bool {
    out.clear();
    if let Some(t) = line.text {
        out.push_str(t);
        return false;
    }
    let bytes = line.bytes;
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            out.push_str(s);
            false
        }
        Err(_) => {
            out.push_str(&String::from_utf8_lossy(bytes));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(s: &mut LineSplitter, data: &[u8]) -> Vec<(Vec<u8>, u64, bool)> {
        let mut out = Vec::new();
        s.feed(data, |l| out.push((l.bytes.to_vec(), l.end, l.truncated)));
        out
    }

    #[test]
    fn splits_strips_cr_and_tracks_offsets() {
        let mut s = LineSplitter::new(100, 10);
        let out = collect(&mut s, b"a\r\nbc\n\nd");
        assert_eq!(
            out,
            vec![
                (b"a".to_vec(), 13, false),
                (b"bc".to_vec(), 16, false),
                (b"".to_vec(), 17, false)
            ]
        );
        assert!(s.has_partial());
        let out = collect(&mut s, b"ef\ng");
        assert_eq!(out, vec![(b"def".to_vec(), 21, false)]);
        let mut flushed = Vec::new();
        s.flush_partial(|l| flushed.push((l.bytes.to_vec(), l.end)));
        assert_eq!(flushed, vec![(b"g".to_vec(), 22)]);
        assert_eq!(s.read_offset(), 22);
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_skipped() {
        let mut s = LineSplitter::new(4, 0);
        assert_eq!(
            collect(&mut s, b"abcdefgh\nxy\n"),
            vec![(b"abcd".to_vec(), 9, true), (b"xy".to_vec(), 12, false)]
        );
        // Cut before its newline is seen: the position stays at the line's start.
        let mut s = LineSplitter::new(4, 0);
        assert_eq!(collect(&mut s, b"ab"), vec![]);
        assert_eq!(collect(&mut s, b"cdef"), vec![(b"abcd".to_vec(), 0, true)]);
        assert_eq!(collect(&mut s, b"ghij"), vec![]);
        assert_eq!(
            collect(&mut s, b"k\nok\n"),
            vec![(b"ok".to_vec(), 15, false)]
        );
        // Exactly the maximum is not cut.
        let mut s = LineSplitter::new(4, 0);
        assert_eq!(collect(&mut s, b"ab"), vec![]);
        assert_eq!(collect(&mut s, b"cd\n"), vec![(b"abcd".to_vec(), 5, false)]);
    }

    #[test]
    fn lines_of_a_valid_block_come_as_text_and_the_others_do_not() {
        let text = |s: &mut LineSplitter, data: &[u8]| {
            let mut out = Vec::new();
            s.feed(data, |l| out.push(l.text.map(str::to_owned)));
            out
        };
        let mut s = LineSplitter::new(100, 0);
        assert_eq!(
            text(&mut s, "caf\u{e9}\r\nok\n".as_bytes()),
            [Some("caf\u{e9}".to_string()), Some("ok".to_string())]
        );
        // After an invalid byte, the lines are validated by whoever takes them.
        assert_eq!(
            text(&mut s, b"a\nb\xff\nc\npar"),
            [Some("a".to_string()), None, None]
        );
        // A line continued from the previous block.
        assert_eq!(text(&mut s, b"tial\n"), [None]);
        // Cut inside a two-byte character: no text, so that it is made lossy.
        let mut s = LineSplitter::new(4, 0);
        assert_eq!(text(&mut s, "abc\u{e9}\n".as_bytes()), [None]);
        let mut s = LineSplitter::new(4, 0);
        assert_eq!(
            text(&mut s, "ab\u{e9}x\n".as_bytes()),
            [Some("ab\u{e9}".to_string())]
        );
    }

    #[test]
    fn valid_prefix_stops_at_the_first_invalid_or_unfinished_character() {
        assert_eq!(valid_prefix(b""), "");
        assert_eq!(valid_prefix("ok caf\u{e9}\n".as_bytes()), "ok caf\u{e9}\n");
        assert_eq!(valid_prefix(b"ab\xffcd"), "ab");
        // A character cut by the end of the block (its rest comes with the next read).
        assert_eq!(valid_prefix(b"caf\xc3"), "caf");
        // Past the width of one vector, both sides of the fault.
        let mut long = vec![b'x'; 200];
        long[150] = 0xc0;
        assert_eq!(valid_prefix(&long).len(), 150);
    }

    #[test]
    fn nul_bytes_and_invalid_utf8_are_kept() {
        let mut s = LineSplitter::new(100, 0);
        let out = collect(&mut s, b"a\0b\xffc\n");
        assert_eq!(out[0].0, b"a\0b\xffc".to_vec());
        let (text, lossy) = to_text(&out[0].0);
        assert!(lossy);
        assert_eq!(text, "a\0b\u{fffd}c");
        assert_eq!(to_text(b"caf\xc3\xa9"), ("caf\u{e9}".to_string(), false));
        let mut reused = String::from("a longer previous line");
        let line = |bytes| Line {
            bytes,
            end: 0,
            truncated: false,
            text: None,
        };
        assert!(set_text(&mut reused, &line(b"x\xffy")));
        assert_eq!(reused, "x\u{fffd}y");
        assert!(!set_text(&mut reused, &line(b"ok")));
        assert_eq!(reused, "ok");
    }
}
