//! A strict reader over a parsed TOML table that records located diagnostics.
//!
//! This is the "raw" stage of the two-stage model: `toml` parses the text into spanned
//! tables, and a [`Reader`] extracts typed values key by key. Every problem — an unknown
//! key (with a suggestion), a wrong type, a bad value — becomes a [`Diagnostic`] naming
//! file, line, column, object and key, and reading goes on so that one run reports all
//! problems of a file.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostic, Kind, LineIndex, Location, suggest};

/// One source file being read, and the diagnostics found in it.
#[derive(Debug)]
pub(crate) struct Src<'a> {
    pub file: &'a str,
    pub text: &'a str,
    index: LineIndex,
    pub diags: RefCell<Vec<Diagnostic>>,
}

impl<'a> Src<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Src {
            file,
            text,
            index: LineIndex::new(text),
            diags: RefCell::new(Vec::new()),
        }
    }

    pub fn loc(&self, span: Range<usize>) -> Location {
        let (line, column) = self.index.position(self.text, span.start);
        Location {
            file: self.file.to_string(),
            line,
            column,
        }
    }

    pub fn push(&self, d: Diagnostic) {
        self.diags.borrow_mut().push(d);
    }
}

/// Which object a reader belongs to, and the key path prefix inside it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    pub kind: Option<Kind>,
    pub name: Option<String>,
    pub path: String,
}

impl Scope {
    pub fn object(kind: Kind, name: &str) -> Self {
        Scope {
            kind: Some(kind),
            name: Some(name.to_string()),
            path: String::new(),
        }
    }

    pub fn child(&self, segment: &str) -> Scope {
        let path = if self.path.is_empty() {
            segment.to_string()
        } else if segment.starts_with('[') {
            format!("{}{segment}", self.path)
        } else {
            format!("{}.{segment}", self.path)
        };
        Scope {
            path,
            ..self.clone()
        }
    }

    pub fn key(&self, key: &str) -> String {
        self.child(key).path
    }

    /// How the object is named in messages: "container `web`", or "" outside objects.
    pub fn describe(&self) -> String {
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => format!("{k} `{n}`"),
            _ => String::new(),
        }
    }
}

/// A string value with where it was written.
pub(crate) type Located<T> = (T, Location);

/// Reads the keys of one table.
#[derive(Debug)]
pub(crate) struct Reader<'s, 'a, 'i> {
    pub src: &'s Src<'a>,
    pub table: &'s DeTable<'i>,
    pub scope: Scope,
    /// Where the table itself was written (for "missing key" errors).
    pub at: Location,
    /// Keys suggested for unknown keys: a required key suggested for a typo is not
    /// reported missing as well.
    pub suggested: std::collections::BTreeSet<&'static str>,
}

pub(crate) fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl<'s, 'a, 'i> Reader<'s, 'a, 'i> {
    /// Starts reading `table`; reports every key not in `allowed` with a suggestion.
    pub fn new(
        src: &'s Src<'a>,
        table: &'s DeTable<'i>,
        scope: Scope,
        at: Location,
        allowed: &[&'static str],
    ) -> Self {
        let mut r = Reader {
            src,
            table,
            scope,
            at,
            suggested: std::collections::BTreeSet::new(),
        };
        for (key, _) in table.iter() {
            let name: &str = key.get_ref();
            if !allowed.contains(&name) {
                let loc = src.loc(key.span());
                let what = r.scope.describe();
                let mut msg = if what.is_empty() {
                    format!("unknown key `{}`", r.scope.key(name))
                } else {
                    format!("{what}: unknown key `{}`", r.scope.key(name))
                };
                if let Some(s) = suggest(name, allowed) {
                    r.suggested.insert(s);
                    msg.push_str(&format!(", did you mean `{s}`?"));
                } else {
                    msg.push_str(&format!(" (expected one of: {})", allowed.join(", ")));
                }
                r.error_at(&loc, name, msg);
            }
        }
        r
    }

    /// Records an error about `key` (relative to this reader's scope) at `loc`.
    pub fn error_at(&self, loc: &Location, key: &str, message: impl Into<String>) {
        let mut d = Diagnostic::new(loc, message);
        if let (Some(k), Some(n)) = (self.scope.kind, &self.scope.name) {
            d = d.object(k, n);
        }
        let full = self.scope.key(key);
        if !full.is_empty() {
            d = d.key(full);
        }
        self.src.push(d);
    }

    /// Records an error about `key` with the object prefix added to the message.
    pub fn error(&self, loc: &Location, key: &str, message: impl AsRef<str>) {
        let what = self.scope.describe();
        let msg = if what.is_empty() {
            message.as_ref().to_string()
        } else {
            format!("{what}: {}", message.as_ref())
        };
        self.error_at(loc, key, msg);
    }

    /// Records an error in the value of `key`: the message names the key's path first
    /// (`container `a`: stop_timeout: invalid duration …`), as a value parser's message
    /// does not know which key it read.
    pub fn value_error(&self, loc: &Location, key: &str, message: impl AsRef<str>) {
        let path = self.scope.key(key);
        self.error(loc, key, format!("{path}: {}", message.as_ref()));
    }

    fn entry(&self, key: &str) -> Option<&'s Spanned<DeValue<'i>>> {
        self.table
            .iter()
            .find(|(k, _)| {
                let k: &str = k.get_ref();
                k == key
            })
            .map(|(_, v)| v)
    }

    /// Location of a key's name, if present.
    pub fn key_loc(&self, key: &str) -> Option<Location> {
        self.table
            .iter()
            .find(|(k, _)| {
                let k: &str = k.get_ref();
                k == key
            })
            .map(|(k, _)| self.src.loc(k.span()))
    }

    /// The raw value and its location, if present.
    pub fn raw(&self, key: &str) -> Option<(&'s DeValue<'i>, Location)> {
        self.entry(key)
            .map(|v| (v.get_ref(), self.src.loc(v.span())))
    }

    fn wrong_type(&self, key: &str, want: &str, v: &DeValue<'_>, loc: &Location) {
        self.error(
            loc,
            key,
            format!(
                "`{}` must be {want}, found {}",
                self.scope.key(key),
                type_name(v)
            ),
        );
    }

    pub fn string(&self, key: &str) -> Option<Located<String>> {
        let (v, loc) = self.raw(key)?;
        match v {
            DeValue::String(s) => Some((s.to_string(), loc)),
            other => {
                self.wrong_type(key, "a string", other, &loc);
                None
            }
        }
    }

    /// A required string: reports its absence at the table's header.
    pub fn required_string(&self, key: &str) -> Option<Located<String>> {
        if self.entry(key).is_none() {
            if self.suggested.contains(key) {
                return None;
            }
            self.error(
                &self.at,
                key,
                format!("missing required key `{}`", self.scope.key(key)),
            );
            return None;
        }
        self.string(key)
    }

    pub fn bool(&self, key: &str) -> Option<Located<bool>> {
        let (v, loc) = self.raw(key)?;
        match v {
            DeValue::Boolean(b) => Some((*b, loc)),
            other => {
                self.wrong_type(key, "a boolean (true or false)", other, &loc);
                None
            }
        }
    }

    pub fn integer(&self, key: &str) -> Option<Located<i64>> {
        let (v, loc) = self.raw(key)?;
        match v {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some((n, loc)),
                Err(_) => {
                    self.error(
                        &loc,
                        key,
                        format!("`{}` is out of range", self.scope.key(key)),
                    );
                    None
                }
            },
            other => {
                self.wrong_type(key, "an integer", other, &loc);
                None
            }
        }
    }

    /// An integer or a float.
    pub fn number(&self, key: &str) -> Option<Located<f64>> {
        let (v, loc) = self.raw(key)?;
        match v {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| (n as f64, loc)),
            DeValue::Float(f) => f.as_str().parse::<f64>().ok().map(|n| (n, loc)),
            other => {
                self.wrong_type(key, "a number", other, &loc);
                None
            }
        }
    }

    /// An array of strings, each with its location.
    pub fn strings(&self, key: &str) -> Option<Located<Vec<Located<String>>>> {
        let (v, loc) = self.raw(key)?;
        let DeValue::Array(items) = v else {
            self.wrong_type(key, "an array of strings", v, &loc);
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let iloc = self.src.loc(item.span());
            match item.get_ref() {
                DeValue::String(s) => out.push((s.to_string(), iloc)),
                other => self.error(
                    &iloc,
                    &format!("{key}[{i}]"),
                    format!(
                        "`{}` must be an array of strings, found {} at index {i}",
                        self.scope.key(key),
                        type_name(other)
                    ),
                ),
            }
        }
        Some((out, loc))
    }

    /// A table of string values (`env`, `labels`, …). A non-string value is an error; when
    /// `quote_hint` is set the message tells the user to quote numbers and booleans.
    pub fn string_map(
        &self,
        key: &str,
        quote_hint: bool,
    ) -> Option<BTreeMap<String, Located<String>>> {
        let (v, loc) = self.raw(key)?;
        let DeValue::Table(t) = v else {
            self.wrong_type(key, "a table of strings", v, &loc);
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, val) in t.iter() {
            let name: &str = k.get_ref();
            let vloc = self.src.loc(val.span());
            match val.get_ref() {
                DeValue::String(s) => {
                    out.insert(name.to_string(), (s.to_string(), vloc));
                }
                other => {
                    let full = format!("{}.{name}", self.scope.key(key));
                    let hint = match other {
                        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_)
                            if quote_hint =>
                        {
                            let raw = self.src.text.get(val.span()).unwrap_or("");
                            format!(" (quote it: {name} = \"{raw}\")")
                        }
                        _ => String::new(),
                    };
                    self.error(
                        &vloc,
                        &format!("{key}.{name}"),
                        format!(
                            "`{full}` must be a string, found {}{hint}",
                            type_name(other)
                        ),
                    );
                }
            }
        }
        Some(out)
    }

    /// A sub-table (`[container.web.resources]` or an inline table).
    pub fn table(&self, key: &str) -> Option<(&'s DeTable<'i>, Location)> {
        let (v, loc) = self.raw(key)?;
        match v {
            DeValue::Table(t) => Some((t, loc)),
            other => {
                self.wrong_type(key, "a table", other, &loc);
                None
            }
        }
    }

    /// An array of tables (`[[container.web.mounts]]`).
    pub fn tables(&self, key: &str) -> Vec<(&'s DeTable<'i>, Location)> {
        let Some((v, loc)) = self.raw(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v else {
            self.wrong_type(key, "an array of tables", v, &loc);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let iloc = self.src.loc(item.span());
            match item.get_ref() {
                DeValue::Table(t) => out.push((t, iloc)),
                other => self.error(
                    &iloc,
                    &format!("{key}[{i}]"),
                    format!(
                        "`{}` must be an array of tables, found {} at index {i}",
                        self.scope.key(key),
                        type_name(other)
                    ),
                ),
            }
        }
        out
    }

    /// A child reader for a sub-table.
    pub fn child(
        &self,
        table: &'s DeTable<'i>,
        segment: &str,
        at: Location,
        allowed: &[&'static str],
    ) -> Reader<'s, 'a, 'i> {
        Reader::new(self.src, table, self.scope.child(segment), at, allowed)
    }
}

/// Records every key path of a table (recursively) with the location of its name, so
/// later stages (policy findings) can point at the line of any key.
pub(crate) fn collect_keys(
    src: &Src<'_>,
    table: &DeTable<'_>,
    prefix: &str,
    out: &mut BTreeMap<String, Location>,
) {
    for (k, v) in table.iter() {
        let name: &str = k.get_ref();
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        out.insert(path.clone(), src.loc(k.span()));
        match v.get_ref() {
            DeValue::Table(t) => collect_keys(src, t, &path, out),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let ipath = format!("{path}[{i}]");
                    out.insert(ipath.clone(), src.loc(item.span()));
                    if let DeValue::Table(t) = item.get_ref() {
                        collect_keys(src, t, &ipath, out);
                    }
                }
            }
            _ => {}
        }
    }
}
