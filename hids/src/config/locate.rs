//! Finding where a key or value sits in the TOML text, so that every configuration error, whether
//! found by serde or by validation, names its line and column.

use std::ops::Range;
use toml_edit::{ImDocument, Item, Table, Value};

/// One step of a path into the document: a key, or an index into an array (of tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// Builds a path: `path!["fim", "paths", 2, "path"]`.
macro_rules! keypath {
    ($($seg:expr),* $(,)?) => { vec![$($crate::config::locate::Seg::from($seg)),*] };
}
pub(crate) use keypath as path;

/// A parsed document kept for locating spans.
pub struct Located {
    doc: ImDocument<String>,
}

/// What sits at a location: the span of its key (if any) and of its value, and the table it is in.
#[derive(Debug, Clone)]
pub struct Found {
    pub key: Option<Range<usize>>,
    /// Where the whole entry ends (for a table, the end of its last entry).
    pub end: usize,
    /// The dotted names of the tables leading to it, e.g. ["fim", "paths"].
    pub table: Vec<String>,
    /// The key's own name.
    pub name: Option<String>,
    /// Whether the containing table is an array of tables (`[[...]]`).
    pub in_array_of_tables: bool,
}

impl Located {
    pub fn parse(text: &str) -> Result<Self, toml_edit::TomlError> {
        Ok(Located {
            doc: ImDocument::parse(text.to_string())?,
        })
    }

    /// The best span for a path: the value's if known, else the key's, else the nearest ancestor's.
    pub fn span_of(&self, path: &[Seg]) -> Option<Range<usize>> {
        self.continue_in_table(self.doc.as_table(), path, None)
    }

    fn continue_in_table(
        &self,
        t: &Table,
        rest: &[Seg],
        best: Option<Range<usize>>,
    ) -> Option<Range<usize>> {
        let mut best = best;
        let Some((first, rest)) = rest.split_first() else {
            return best;
        };
        let Seg::Key(k) = first else { return best };
        let Some((key, it)) = t.get_key_value(k) else {
            return best;
        };
        best = it.span().or_else(|| key.span()).or(best);
        match it {
            Item::Value(v) => {
                let mut v = v;
                for seg in rest {
                    match (v, seg) {
                        (Value::Array(a), Seg::Index(i)) => match a.get(*i) {
                            Some(x) => {
                                best = x.span().or(best);
                                v = x;
                            }
                            None => break,
                        },
                        (Value::InlineTable(t), Seg::Key(k)) => match t.get(k) {
                            Some(x) => {
                                best = x.span().or(best);
                                v = x;
                            }
                            None => break,
                        },
                        _ => break,
                    }
                }
                best
            }
            Item::Table(t2) => self.continue_in_table(t2, rest, key.span().or(best)),
            Item::ArrayOfTables(a) => match rest.split_first() {
                Some((Seg::Index(i), r)) => match a.get(*i) {
                    Some(t3) => self.continue_in_table(t3, r, t3.span().or(best)),
                    None => best,
                },
                _ => key.span().or(best),
            },
            Item::None => best,
        }
    }

    /// The innermost entry whose key or value covers byte `offset`.
    pub fn entry_at(&self, offset: usize) -> Option<Found> {
        let mut found = None;
        walk_table(
            self.doc.as_table(),
            &mut Vec::new(),
            false,
            offset,
            &mut found,
        );
        found
    }
}

fn covers(r: &Option<Range<usize>>, offset: usize) -> bool {
    r.as_ref()
        .is_some_and(|r| r.start <= offset && offset < r.end.max(r.start + 1))
}

/// The end of the last byte belonging to an item, descending into tables.
fn item_end(item: &Item) -> usize {
    match item {
        Item::None => 0,
        Item::Value(v) => v.span().map_or(0, |r| r.end),
        Item::Table(t) => table_end(t),
        Item::ArrayOfTables(a) => a.iter().map(table_end).max().unwrap_or(0),
    }
}

fn table_end(t: &Table) -> usize {
    let own = t.span().map_or(0, |r| r.end);
    t.iter()
        .map(|(k, it)| {
            let ke = t.key(k).and_then(|k| k.span()).map_or(0, |r| r.end);
            ke.max(item_end(it))
        })
        .max()
        .unwrap_or(0)
        .max(own)
}

fn walk_table(
    t: &Table,
    names: &mut Vec<String>,
    aot: bool,
    offset: usize,
    found: &mut Option<Found>,
) {
    for (k, item) in t.iter() {
        let key_span = t.key(k).and_then(|k| k.span());
        let value_span = item.span();
        let entry = |_value: Option<Range<usize>>| Found {
            key: key_span.clone(),
            end: item_end(item).max(key_span.as_ref().map_or(0, |r| r.end)),
            table: names.clone(),
            name: Some(k.to_string()),
            in_array_of_tables: aot,
        };
        match item {
            Item::Table(sub) => {
                if covers(&key_span, offset) || covers(&sub.span(), offset) {
                    *found = Some(entry(sub.span()));
                }
                names.push(k.to_string());
                walk_table(sub, names, false, offset, found);
                names.pop();
            }
            Item::ArrayOfTables(a) => {
                if covers(&key_span, offset) {
                    *found = Some(entry(None));
                }
                names.push(k.to_string());
                for sub in a.iter() {
                    if covers(&sub.span(), offset) {
                        *found = Some(Found {
                            key: sub.span(),
                            end: table_end(sub),
                            table: names.clone(),
                            name: None,
                            in_array_of_tables: true,
                        });
                    }
                    walk_table(sub, names, true, offset, found);
                }
                names.pop();
            }
            Item::Value(v) => {
                if covers(&key_span, offset) || covers(&value_span, offset) {
                    *found = Some(entry(v.span()));
                }
                if let Value::InlineTable(it) = v {
                    names.push(k.to_string());
                    for (ik, iv) in it.iter() {
                        let iks = it.key(ik).and_then(|k| k.span());
                        if covers(&iks, offset) || covers(&iv.span(), offset) {
                            *found = Some(Found {
                                key: iks.clone(),
                                end: iv.span().map_or(0, |r| r.end),
                                table: names.clone(),
                                name: Some(ik.to_string()),
                                in_array_of_tables: false,
                            });
                        }
                    }
                    names.pop();
                }
            }
            Item::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "[agent]\nlog_level = \"info\"\n\n[fim]\ninterval = \"12h\"\n\n[[fim.paths]]\npath = \"/etc\"\n\n[[fim.paths]]\npath = \"rel\"\nignore = [\"a\", \"b[\"]\n";

    #[test]
    #[allow(clippy::useless_vec)]
    fn finds_values_inside_arrays_of_tables() {
        let l = Located::parse(DOC).unwrap();
        let r = l.span_of(&path!["fim", "paths", 1, "path"]).unwrap();
        assert_eq!(&DOC[r], "\"rel\"");
        let r = l.span_of(&path!["fim", "paths", 1, "ignore", 1]).unwrap();
        assert_eq!(&DOC[r], "\"b[\"");
        let r = l.span_of(&path!["agent", "log_level"]).unwrap();
        assert_eq!(&DOC[r], "\"info\"");
    }

    #[test]
    fn entry_at_reports_the_table() {
        let l = Located::parse(DOC).unwrap();
        let off = DOC.find("interval").unwrap();
        let f = l.entry_at(off).unwrap();
        assert_eq!(f.table, vec!["fim".to_string()]);
        assert_eq!(f.name.as_deref(), Some("interval"));
        assert_eq!(&DOC[off..f.end], "interval = \"12h\"");
    }
}
