//! Deserialise leniently: every mistake serde finds in one pass, not only
//! the first.
//!
//! The `Raw*` structs stay the one definition of what a config file may
//! hold (`deny_unknown_fields` and all). When serde stops at a mistake (an
//! unknown key, a wrong type, an unknown value), the mistake is reported at
//! its span, the key or array element it points at is cut out of the parsed
//! document (whose spans stay those of the original text), and serde runs
//! again, until the rest deserialises. What was cut is remembered, so a
//! consequence of the cut (a required key now missing) is not reported as a
//! second mistake.
//!
//! Why not an all-optional twin of every struct: two definitions to keep in
//! step for each option. Why not `serde_ignored`: it collects unknown keys
//! only; a wrong type or value still stops serde.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml_edit::{DocumentMut, ImDocument, Item, Key, Table, TableLike, Value};

use super::Source;

/// At most this many mistakes are cut out (each costs one more pass over
/// the document); a file with more is not worth reading further.
const MAX_CUTS: usize = 100;

/// A key or array element cut out because serde refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cut {
    /// The table the key was in, or the array's own path for an element.
    pub parent: Vec<String>,
    /// The key, or `None` for an array element.
    pub name: Option<String>,
    /// The known name one edit away from what was written, if any.
    pub meant: Option<String>,
}

/// What deserialised, and how.
pub(super) struct Read<T> {
    pub value: T,
    /// What was cut out to get it.
    pub cuts: Vec<Cut>,
    /// The document as written (nothing cut), with its spans.
    pub doc: Table,
}

/// Deserialise `src.text` into `T`, reporting every mistake serde finds
/// into `src`. `None` when the text is not TOML, or a mistake could not be
/// cut out (reported too).
pub(super) fn deserialize<T: DeserializeOwned>(src: &Source) -> Option<Read<T>> {
    let doc = match ImDocument::parse(src.text) {
        Ok(doc) => doc,
        Err(e) => {
            let message = e.message().trim_end().to_owned();
            src.report(match e.span() {
                Some(span) => src.at(span, message),
                None => src.whole(message),
            });
            return None;
        }
    };
    let doc = doc.into_table();
    let mut table = doc.clone();
    let mut cuts = Vec::new();
    let mut cut_spans: Vec<Range<usize>> = Vec::new();
    while cuts.len() < MAX_CUTS {
        let error = match toml_edit::de::from_document::<T>(DocumentMut::from(table.clone())) {
            Ok(value) => return Some(Read { value, cuts, doc }),
            Err(error) => error,
        };
        let message = error.message().trim_end();
        let Some(span) = error.span() else {
            src.report(src.whole(message));
            return None;
        };
        let mut path = Vec::new();
        let Some(cut) = cut_in_table(&mut table, &span, &mut path) else {
            src.report(src.at(span, message));
            return None;
        };
        let (text, meant) = explain(message, &cut, src.text.get(span.clone()).unwrap_or(""));
        if !is_consequence(message, &cut, &span, &cuts, &cut_spans) {
            src.report(src.at(span.clone(), text));
        }
        cuts.push(Cut {
            parent: cut.parent,
            name: cut.name,
            meant,
        });
        cut_spans.push(span);
    }
    src.report(src.whole(format!(
        "more than {MAX_CUTS} mistakes; fix these and check again"
    )));
    None
}

/// Where a cut was, before the message is made.
struct Located {
    parent: Vec<String>,
    name: Option<String>,
    /// The TOML type of what was cut ("integer", "table", …).
    kind: &'static str,
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// Cut the entry of `table` (or below it) whose key or value is at `span`.
fn cut_in_table(
    table: &mut dyn TableLike,
    span: &Range<usize>,
    path: &mut Vec<String>,
) -> Option<Located> {
    let keys: Vec<String> = table.iter().map(|(key, _)| key.to_owned()).collect();
    for key in keys {
        let key_span = table.key(&key).and_then(Key::span);
        let item_span = table.get(&key).and_then(Item::span);
        if key_span.as_ref() == Some(span) || item_span.as_ref() == Some(span) {
            let kind = table.remove(&key).map_or("value", |item| item.type_name());
            return Some(Located {
                parent: path.clone(),
                name: Some(key),
                kind,
            });
        }
        // Implicit tables (`[a.b]` makes `a`) have no span of their own.
        if item_span.as_ref().is_none_or(|s| contains(s, span)) {
            path.push(key.clone());
            let found = table
                .get_mut(&key)
                .and_then(|item| cut_in_item(item, span, path));
            path.pop();
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

fn cut_in_item(item: &mut Item, span: &Range<usize>, path: &mut Vec<String>) -> Option<Located> {
    match item {
        Item::Table(table) => cut_in_table(table, span, path),
        Item::Value(value) => cut_in_value(value, span, path),
        Item::ArrayOfTables(tables) => {
            for i in 0..tables.len() {
                let table: &mut Table = tables.get_mut(i)?;
                let table_span = table.span();
                if table_span.as_ref() == Some(span) {
                    tables.remove(i);
                    return Some(Located {
                        parent: path.clone(),
                        name: None,
                        kind: "table",
                    });
                }
                if table_span.as_ref().is_none_or(|s| contains(s, span)) {
                    if let Some(found) = cut_in_table(table, span, path) {
                        return Some(found);
                    }
                }
            }
            None
        }
        Item::None => None,
    }
}

fn cut_in_value(value: &mut Value, span: &Range<usize>, path: &mut Vec<String>) -> Option<Located> {
    match value {
        Value::InlineTable(table) => cut_in_table(table, span, path),
        Value::Array(array) => {
            for i in 0..array.len() {
                let element_span = array.get(i).and_then(Value::span);
                let Some(element_span) = element_span.filter(|s| contains(s, span)) else {
                    continue;
                };
                if element_span != *span {
                    let inner = array.get_mut(i).and_then(|v| cut_in_value(v, span, path));
                    if inner.is_some() {
                        return inner;
                    }
                }
                // The element itself, or something inside it that could
                // not be cut on its own: the element goes.
                let kind = array.remove(i).type_name();
                return Some(Located {
                    parent: path.clone(),
                    name: None,
                    kind,
                });
            }
            None
        }
        _ => None,
    }
}

/// Whether serde's `message` only follows from an earlier cut: a required
/// key that was cut (or misspelt), or a value that held what was cut.
fn is_consequence(
    message: &str,
    cut: &Located,
    span: &Range<usize>,
    cuts: &[Cut],
    cut_spans: &[Range<usize>],
) -> bool {
    if let Some(field) = backticked(message.strip_prefix("missing field ").unwrap_or("")).first() {
        let mut table = cut.parent.clone();
        table.extend(cut.name.clone());
        return cuts.iter().any(|c| {
            c.parent == table
                && (c.name.as_deref() == Some(field) || c.meant.as_deref() == Some(field))
        });
    }
    cut_spans.iter().any(|s| s != span && contains(span, s))
}

/// The names between backticks in a serde message part.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// `a.b` for messages; the top-level table has no name.
fn dotted(path: &[String]) -> String {
    path.join(".")
}

/// Where a key is: "at the top level" or "in [ports]".
pub(super) fn table_place<S: AsRef<str>>(path: &[S]) -> String {
    if path.is_empty() {
        "at the top level".to_owned()
    } else {
        let names: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
        format!("in [{}]", names.join("."))
    }
}

/// serde's message in an installer's words: what was found, what is
/// expected, and the known name one edit away. Also that name.
fn explain(message: &str, cut: &Located, written: &str) -> (String, Option<String>) {
    let setting = {
        let mut path = cut.parent.clone();
        path.extend(cut.name.clone());
        dotted(&path)
    };
    let (head, expected) = message
        .split_once(", expected ")
        .map_or((message, ""), |(h, e)| (h, e));
    let known = backticked(expected);
    if let Some(rest) = head.strip_prefix("unknown field ") {
        let found = backticked(rest).first().copied().unwrap_or(written);
        let meant = did_you_mean(found, &known).map(str::to_owned);
        let place = table_place(&cut.parent);
        let text = match (&meant, known.is_empty()) {
            (Some(name), _) => {
                format!("unknown key `{found}` {place}; did you mean `{name}`?")
            }
            (None, false) => format!(
                "unknown key `{found}` {place}; expected one of {}",
                listed(&known)
            ),
            (None, true) => format!("unknown key `{found}` {place}; it takes no keys"),
        };
        return (text, meant);
    }
    if let Some(rest) = head.strip_prefix("unknown variant ") {
        let found = backticked(rest).first().copied().unwrap_or(written);
        let meant = did_you_mean(found, &known).map(str::to_owned);
        let mut text = format!(
            "{setting}: unknown value \"{found}\"; expected one of {}",
            quoted(&known)
        );
        if let Some(name) = &meant {
            text.push_str(&format!("; did you mean \"{name}\"?"));
        }
        return (text, meant);
    }
    if let Some(field) = head.strip_prefix("missing field ") {
        let mut table = cut.parent.clone();
        table.extend(cut.name.clone());
        let field = backticked(field).first().copied().unwrap_or(field);
        return (
            format!("missing key `{field}` {}", table_place(&table)),
            None,
        );
    }
    let found = head
        .strip_prefix("invalid type: ")
        .or_else(|| head.strip_prefix("invalid value: "))
        .or_else(|| head.strip_prefix("invalid length "));
    let text = match found {
        Some(found) => format!(
            "{setting}: found {found}, expected {}",
            expected_in_words(expected)
        ),
        None if head == "wanted string or table" => {
            let short = written.len() <= 40 && !written.contains('\n');
            let found = match short {
                true => format!("{} `{written}`", cut.kind),
                false => cut.kind.to_owned(),
            };
            format!("{setting}: found {found}, expected a name in quotes")
        }
        None => format!("{setting}: {message}"),
    };
    (text, None)
}

/// serde's (Rust's) name of what is expected, as an installer would say it.
fn expected_in_words(expected: &str) -> String {
    let whole = |max: u64| format!("a whole number from 0 to {max}");
    match expected {
        "u8" => whole(u8::MAX.into()),
        "u16" => whole(u16::MAX.into()),
        "u32" => whole(u32::MAX.into()),
        "u64" | "usize" => "a whole number, 0 or more".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a string" | "a borrowed string" | "path string" | "a character" => {
            "text in quotes".to_owned()
        }
        "a sequence" => "a list in brackets, e.g. [\"a\", \"b\"]".to_owned(),
        "a map" => "a table".to_owned(),
        other if other.starts_with("struct ") => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// Values as they are written in TOML.
fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keys as they are named in messages.
fn listed(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The known name nearest to `found` when it is one edit away (an
/// insertion, deletion, substitution, or two letters swapped; case aside)
/// and no other name is as near.
pub(super) fn did_you_mean<'a>(found: &str, known: &[&'a str]) -> Option<&'a str> {
    let found = found.to_lowercase();
    let distance = |name: &str| strsim::osa_distance(&found, &name.to_lowercase());
    let nearest = known.iter().map(|name| distance(name)).min()?;
    let mut at_nearest = known.iter().filter(|name| distance(name) == nearest);
    let first = at_nearest.next()?;
    // Two names equally near: a suggestion would be a guess.
    (nearest <= 1 && at_nearest.next().is_none()).then_some(*first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_one_edit_away_and_unambiguous() {
        let keys = ["station_id", "database", "trust_file"];
        assert_eq!(did_you_mean("databse", &keys), Some("database"));
        assert_eq!(did_you_mean("dtaabase", &keys), Some("database"));
        assert_eq!(did_you_mean("trust-file", &keys), Some("trust_file"));
        assert_eq!(did_you_mean("Database", &keys), Some("database"));
        assert_eq!(did_you_mean("dbase", &keys), None);
        assert_eq!(did_you_mean("cr", &["cr", "lf", "crlf"]), Some("cr"));
        assert_eq!(did_you_mean("cx", &["cr", "cf"]), None, "two at one edit");
    }

    #[test]
    fn rust_type_names_become_words() {
        assert_eq!(
            expected_in_words("u32"),
            "a whole number from 0 to 4294967295"
        );
        assert_eq!(expected_in_words("struct RawPlan"), "a table");
        assert_eq!(
            expected_in_words("a number of seconds, e.g. 5 or 0.5"),
            "a number of seconds, e.g. 5 or 0.5"
        );
    }
}
