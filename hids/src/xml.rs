//! The spanned loader for OSSEC's XML fragments, shared by the decoder and rule loaders.
//!
//! OSSEC's decoder and rule files are not XML documents: a file holds several top-level elements,
//! comments may contain `--`, element text may hold raw `&` (never decoded: `&lt;` stays as
//! written, as OSSEC reads it) and raw `<` where it cannot start a tag (`\<` escapes one anywhere,
//! and the backslash is kept as OSSEC keeps it), and `<var name="X">value</var>` defines `$X` for
//! the text and attribute values that follow it in the same file (the name ends at `$ . | ,` or a
//! space; an unknown name is an error). This module reads such a file with quick-xml into a small
//! tree of [`Element`]s, each with its position, and reports problems as [`Diagnostic`]s that
//! point at the fault.
//!
//! The API is deliberately small: [`Document::parse`] / [`Document::load`], the [`Element`] tree,
//! and [`Document::diag`] to report a semantic error at an element, attribute or text position.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use quick_xml::events::Event;

use crate::diag::Diagnostic;

/// Byte that stands in for a literal `<` while quick-xml reads the file (same length, so every
/// byte offset stays true).
const LT_PLACEHOLDER: u8 = 0x01;
/// The same for `&`, which OSSEC never decodes.
const AMP_PLACEHOLDER: u8 = 0x02;

/// Files larger than this are refused: decoder and rule files are small, and the loader keeps
/// the whole file in memory.
pub const MAX_FILE_SIZE: u64 = 16 << 20;

/// One parsed file.
#[derive(Debug, Clone)]
pub struct Document {
    pub path: PathBuf,
    /// The file's text, for diagnostics.
    pub source: String,
    /// The top-level elements in file order (`<var>` definitions are consumed, not listed).
    pub roots: Vec<Element>,
}

/// One element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<Attr>,
    /// The text directly inside the element, exactly as written (not trimmed, entities not
    /// decoded), with `$VAR`s substituted. Text split by child elements is concatenated.
    pub text: String,
    pub children: Vec<Element>,
    /// Byte offset of the element's `<` in the file.
    pub pos: usize,
    /// Byte offset where the element's text starts (just after the start tag).
    pub text_pos: usize,
    /// Whether a `$VAR` was substituted in the text, in which case offsets inside `text` no
    /// longer map onto the file.
    pub text_substituted: bool,
}

/// One attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub name: String,
    /// As written (not decoded), with `$VAR`s substituted.
    pub value: String,
    /// Byte offset of the attribute name in the file.
    pub pos: usize,
}

impl Element {
    /// The value of attribute `name` (names compare case-insensitively, as OSSEC does).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attr_full(name).map(|a| a.value.as_str())
    }

    /// The attribute `name` with its position.
    pub fn attr_full(&self, name: &str) -> Option<&Attr> {
        self.attrs
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The children named `name` (case-insensitive).
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children
            .iter()
            .filter(move |c| c.name.eq_ignore_ascii_case(name))
    }

    /// The texts of every child named `name` joined in order without a separator, as OSSEC joins
    /// repeated elements (several `<description>` or `<regex>` lines make one value).
    pub fn joined_text(&self, name: &str) -> Option<String> {
        let mut it = self.children_named(name).peekable();
        it.peek()?;
        Some(it.map(|c| c.text.as_str()).collect())
    }

    /// The byte offset in the file of byte `i` of this element's text, when it maps there.
    pub fn text_offset(&self, i: usize) -> usize {
        if self.text_substituted {
            self.text_pos
        } else {
            self.text_pos + i
        }
    }
}

impl Document {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Document, Vec<Diagnostic>> {
        let bytes = read_limited(path).map_err(|m| vec![Diagnostic::whole_file(path, m)])?;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let off = e.utf8_error().valid_up_to();
                let good = String::from_utf8_lossy(e.as_bytes()).into_owned();
                return Err(vec![Diagnostic::at(
                    path,
                    &good,
                    off..off,
                    "the file is not valid UTF-8 here",
                )]);
            }
        };
        Document::parse(path, text)
    }

    /// Parses `text` as the contents of `path`. Returns every error found (parsing stops at the
    /// first structural one; variable errors are all collected).
    pub fn parse(path: &Path, text: String) -> Result<Document, Vec<Diagnostic>> {
        let mut doc = Document {
            path: path.to_path_buf(),
            source: text,
            roots: Vec::new(),
        };
        if let Some(off) = doc
            .source
            .bytes()
            .position(|b| b == LT_PLACEHOLDER || b == AMP_PLACEHOLDER || b == 0)
        {
            return Err(vec![doc.diag(off, "control character in the file")]);
        }
        let prepared = prepare(&doc.source);
        let mut errors = Vec::new();
        match build_tree(&doc, &prepared, &mut errors) {
            Ok(roots) => doc.roots = roots,
            Err(d) => {
                errors.insert(0, d);
            }
        }
        if errors.is_empty() {
            Ok(doc)
        } else {
            Err(errors)
        }
    }

    /// A diagnostic at byte offset `offset` of this file.
    pub fn diag(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(&self.path, &self.source, offset..offset, message)
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut buf = Vec::new();
    f.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read: {e}"))?;
    if buf.len() as u64 > MAX_FILE_SIZE {
        return Err(format!("larger than {MAX_FILE_SIZE} bytes"));
    }
    Ok(buf)
}

/// Replaces every `<` that cannot start markup (after a backslash, or not followed by a name,
/// `/`, `!` or `?`) with a same-length placeholder.
fn prepare(src: &str) -> Vec<u8> {
    let mut b = src.as_bytes().to_vec();
    let mut in_comment = false;
    let mut i = 0;
    while i < b.len() {
        if in_comment {
            if b[i..].starts_with(b"-->") {
                in_comment = false;
                i += 3;
            } else {
                i += 1;
            }
            continue;
        }
        if b[i] == b'&' {
            b[i] = AMP_PLACEHOLDER;
        } else if b[i] == b'<' {
            if b[i..].starts_with(b"<!--") {
                in_comment = true;
                i += 4;
                continue;
            }
            let escaped = i > 0 && b[i - 1] == b'\\';
            let next = b.get(i + 1).copied().unwrap_or(b' ');
            let markup = next.is_ascii_alphabetic() || matches!(next, b'_' | b'/' | b'!' | b'?');
            if escaped || !markup {
                b[i] = LT_PLACEHOLDER;
            }
        }
        i += 1;
    }
    b
}

fn restore(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    if raw
        .iter()
        .any(|&b| b == LT_PLACEHOLDER || b == AMP_PLACEHOLDER)
    {
        s.replace(LT_PLACEHOLDER as char, "<")
            .replace(AMP_PLACEHOLDER as char, "&")
    } else {
        s.into_owned()
    }
}

struct Open {
    el: Element,
}

fn build_tree(
    doc: &Document,
    prepared: &[u8],
    errors: &mut Vec<Diagnostic>,
) -> Result<Vec<Element>, Diagnostic> {
    let mut reader = quick_xml::Reader::from_reader(prepared);
    {
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.check_comments = false;
        cfg.trim_text(false);
        cfg.expand_empty_elements = false;
    }
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut roots = Vec::new();
    let mut buf = Vec::new();
    loop {
        let start = reader.buffer_position() as usize;
        buf.clear();
        let ev = match reader.read_event_into(&mut buf) {
            Ok(ev) => ev,
            Err(e) => {
                let pos = reader.error_position() as usize;
                return Err(doc.diag(pos, xml_error_message(&e, &stack)));
            }
        };
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let self_closing = matches!(ev, Event::Empty(_));
                let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
                let mut attrs = Vec::new();
                for a in s.attributes().with_checks(true) {
                    match a {
                        Ok(a) => {
                            let an = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                            let raw = restore(&a.value);
                            let apos = find_attr_pos(doc, start, &an);
                            let (value, _) = substitute(&raw, &vars)
                                .map_err(|m| doc.diag(apos, m))
                                .unwrap_or_else(|d| {
                                    errors.push(d);
                                    (raw.clone(), false)
                                });
                            attrs.push(Attr {
                                name: an,
                                value,
                                pos: apos,
                            });
                        }
                        Err(e) => {
                            return Err(doc.diag(start, format!("bad attribute in <{name}>: {e}")));
                        }
                    }
                }
                let el = Element {
                    name,
                    attrs,
                    text: String::new(),
                    children: Vec::new(),
                    pos: start,
                    text_pos: reader.buffer_position() as usize,
                    text_substituted: false,
                };
                // Empty elements ("<x/>") close at once.
                if self_closing {
                    close(doc, el, &mut stack, &mut roots, &mut vars, errors);
                } else {
                    stack.push(Open { el });
                }
            }
            Event::End(_) => {
                let Some(open) = stack.pop() else {
                    return Err(doc.diag(start, "closing tag without an opening tag"));
                };
                close(doc, open.el, &mut stack, &mut roots, &mut vars, errors);
            }
            Event::Text(t) => {
                let raw = restore(t.as_ref());
                if let Some(top) = stack.last_mut() {
                    if top.el.text.is_empty() && top.el.children.is_empty() {
                        top.el.text_pos = start;
                    }
                    top.el.text.push_str(&raw);
                }
                // Text between top-level elements is ignored, as OSSEC ignores it (stock files
                // have comment text that leaks out after a nested "<!--").
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.el.text.push_str(&String::from_utf8_lossy(t.as_ref()));
                }
            }
            Event::GeneralRef(r) => {
                // '&name;' is kept as written: OSSEC does not decode entities.
                if let Some(top) = stack.last_mut() {
                    top.el.text.push('&');
                    top.el.text.push_str(&String::from_utf8_lossy(r.as_ref()));
                    top.el.text.push(';');
                }
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(doc.diag(
            open.el.pos,
            format!(
                "<{}> is not closed before the end of the file",
                open.el.name
            ),
        ));
    }
    Ok(roots)
}

fn close(
    doc: &Document,
    mut el: Element,
    stack: &mut [Open],
    roots: &mut Vec<Element>,
    vars: &mut HashMap<String, String>,
    errors: &mut Vec<Diagnostic>,
) {
    if el.name.eq_ignore_ascii_case("var") {
        match el.attr("name") {
            Some(n) if !n.is_empty() => {
                if let Some(a) = el
                    .attrs
                    .iter()
                    .find(|a| !a.name.eq_ignore_ascii_case("name"))
                {
                    errors.push(doc.diag(a.pos, "only \"name\" is allowed on <var>"));
                }
                let (value, _) = match substitute(&el.text, vars) {
                    Ok(v) => v,
                    Err(m) => {
                        errors.push(doc.diag(el.text_pos, m));
                        (el.text.clone(), false)
                    }
                };
                vars.insert(n.to_ascii_lowercase(), value);
            }
            _ => errors.push(doc.diag(el.pos, "<var> needs a name attribute")),
        }
        return;
    }
    match substitute(&el.text, vars) {
        Ok((t, changed)) => {
            el.text = t;
            el.text_substituted = changed;
        }
        Err(m) => errors.push(doc.diag(el.text_pos, m)),
    }
    match stack.last_mut() {
        Some(parent) => parent.el.children.push(el),
        None => roots.push(el),
    }
}

/// Where attribute `name` starts within the start tag at `tag_start`.
fn find_attr_pos(doc: &Document, tag_start: usize, name: &str) -> usize {
    let rest = &doc.source[tag_start..];
    let end = rest.find('>').unwrap_or(rest.len());
    rest[..end]
        .find(&format!("{name}="))
        .or_else(|| rest[..end].find(name))
        .map_or(tag_start, |i| tag_start + i)
}

fn xml_error_message(e: &quick_xml::Error, stack: &[Open]) -> String {
    use quick_xml::errors::IllFormedError;
    match e {
        quick_xml::Error::IllFormed(IllFormedError::MismatchedEndTag { expected, found }) => {
            format!("</{found}> closes <{expected}>, which is still open")
        }
        quick_xml::Error::IllFormed(IllFormedError::UnmatchedEndTag(n)) => {
            format!("</{n}> closes an element that is not open")
        }
        quick_xml::Error::Syntax(s) => match stack.last() {
            Some(o) => format!("{s} (inside <{}>)", o.el.name),
            None => s.to_string(),
        },
        other => other.to_string(),
    }
}

/// OSSEC's `$NAME` substitution. Returns the new text and whether anything was replaced.
fn substitute(text: &str, vars: &HashMap<String, String>) -> Result<(String, bool), String> {
    if !text.contains('$') || text.len() <= 2 {
        return Ok((text.to_string(), false));
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if after.starts_with('(') {
            // `$(field)`: a rule description's reference to an event field, expanded per alert.
            out.push('$');
            rest = after;
            continue;
        }
        let end = after.find(['$', '.', '|', ',', ' ']).unwrap_or(after.len());
        let name = &after[..end];
        if name.is_empty() {
            out.push('$');
        } else {
            match vars.get(&name.to_ascii_lowercase()) {
                Some(v) => {
                    out.push_str(v);
                    changed = true;
                }
                None => return Err(format!("unknown variable ${name} (no <var name=\"{name}\"> before this point in the file)")),
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    Ok((out, changed))
}

/// Expands decoder or rule paths into files: a directory gives its `*.xml` files in name order
/// (OSSEC's order for a directory); a file is kept as given.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut files: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.extension().is_some_and(|x| x == "xml") && f.is_file())
                        .collect();
                    files.sort();
                    out.extend(files);
                }
                Err(e) => errors.push(Diagnostic::whole_file(
                    p,
                    format!("cannot read directory: {e}"),
                )),
            }
        } else {
            out.push(p.clone());
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Document, Vec<Diagnostic>> {
        Document::parse(Path::new("t.xml"), s.to_string())
    }

    #[test]
    fn several_roots_and_comments_with_double_dash() {
        let d = parse(
            "<!-- a -- b -->\n<decoder name=\"a\">\n  <prematch>x</prematch>\n</decoder>\n<decoder name='b'><regex>y</regex></decoder>\n",
        )
        .unwrap();
        assert_eq!(d.roots.len(), 2);
        assert_eq!(d.roots[0].attr("name"), Some("a"));
        assert_eq!(d.roots[1].attr("NAME"), Some("b"));
        let pm = &d.roots[0].children[0];
        assert_eq!(pm.name, "prematch");
        assert_eq!(pm.text, "x");
        let (line, col, _) = crate::diag::line_col(&d.source, pm.pos);
        assert_eq!((line, col), (3, 3));
    }

    #[test]
    fn raw_ampersand_and_lt_are_text_and_entities_stay_as_written() {
        let d = parse("<r><p>a & b &lt; c \\<d <= e [<>]</p><q>x<1</q></r>").unwrap();
        let r = &d.roots[0];
        assert_eq!(r.children[0].text, "a & b &lt; c \\<d <= e [<>]");
        assert_eq!(r.children[1].text, "x<1");
    }

    #[test]
    fn escaped_lt_before_a_letter_is_text() {
        let d = parse("<p>\\<tag></p>").unwrap();
        assert_eq!(d.roots[0].text, "\\<tag>");
    }

    #[test]
    fn text_is_not_trimmed() {
        let d = parse("<p>^foo </p>").unwrap();
        assert_eq!(d.roots[0].text, "^foo ");
    }

    #[test]
    fn variables_apply_after_their_definition() {
        let d = parse(
            "<var name=\"USERS\">^root$|^admin$</var>\n<rule><user>$USERS</user><m>a$USERS.b</m><x>end$</x><y>$|$</y></rule>",
        )
        .unwrap();
        assert_eq!(d.roots.len(), 1);
        let r = &d.roots[0];
        assert_eq!(r.children[0].text, "^root$|^admin$");
        assert!(r.children[0].text_substituted);
        assert_eq!(r.children[1].text, "a^root$|^admin$.b");
        assert_eq!(r.children[2].text, "end$");
        assert_eq!(r.children[3].text, "$|$");
    }

    #[test]
    fn unknown_or_later_variable_is_an_error_at_its_place() {
        let e =
            parse("<rule>\n<user>$LATER</user>\n</rule>\n<var name=\"LATER\">x</var>").unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 2);
        assert!(e[0].message.contains("$LATER"), "{}", e[0].message);
    }

    #[test]
    fn variables_in_attributes() {
        let d = parse("<var name=\"FREQ\">8</var><rule frequency=\"$FREQ\"/>").unwrap();
        assert_eq!(d.roots[0].attr("frequency"), Some("8"));
    }

    #[test]
    fn joined_text_concatenates_repeated_elements() {
        let d = parse("<rule><description>a </description><description>b</description></rule>")
            .unwrap();
        assert_eq!(
            d.roots[0].joined_text("description").as_deref(),
            Some("a b")
        );
        assert_eq!(d.roots[0].joined_text("info"), None);
    }

    #[test]
    fn unclosed_tag_is_located() {
        let e = parse("<decoder name=\"x\">\n  <prematch>abc\n</decoder>\n").unwrap_err();
        assert_eq!(e[0].line, 3, "{}", e[0]);
        assert!(e[0].message.contains("prematch"), "{}", e[0]);
        let e = parse("<decoder name=\"x\">\n  <prematch>abc</prematch>\n").unwrap_err();
        assert_eq!(e[0].line, 1, "{}", e[0]);
        assert!(e[0].message.contains("not closed"), "{}", e[0]);
    }

    #[test]
    fn stray_closing_tag_is_an_error_and_text_outside_is_ignored() {
        assert!(parse("</a>").is_err());
        let d = parse("<!-- a <!-- b -->\nleaked text\n<a/>").unwrap();
        assert_eq!(d.roots.len(), 1);
    }

    #[test]
    fn every_stock_ossec_file_parses() {
        let dir = crate::testutil::ossec_ruleset();
        let mut files = vec![dir.join("decoder.xml")];
        for e in std::fs::read_dir(dir.join("rules")).unwrap() {
            files.push(e.unwrap().path());
        }
        let mut failures = Vec::new();
        for f in &files {
            if let Err(e) = Document::load(f) {
                failures.extend(e.iter().map(|d| d.to_string()));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(files.len() > 80);
    }

    #[test]
    fn group_wrappers_are_kept() {
        let d = parse("<group name=\"syslog,\">\n<rule id=\"1\" level=\"0\"/>\n<rule id=\"2\" level=\"3\"></rule></group>").unwrap();
        assert_eq!(d.roots[0].name, "group");
        assert_eq!(d.roots[0].children.len(), 2);
        assert_eq!(d.roots[0].children[1].attr("level"), Some("3"));
    }
}
