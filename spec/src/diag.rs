//! Diagnostics: one located, human-readable error per problem found in a tree.
//!
//! A diagnostic names the file (relative to the spec root), the 1-based line and column
//! (columns count characters), the object (kind and name) and the key, so both the text
//! form `FILE:LINE:COL: error: MESSAGE` and the JSON form carry everything a user needs.

use std::fmt;

use serde::Serialize;

/// The kinds of object a spec tree defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Container,
    Network,
    Volume,
    Secret,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Container, Kind::Network, Kind::Volume, Kind::Secret];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Network => "network",
            Kind::Volume => "volume",
            Kind::Secret => "secret",
        }
    }

    pub fn from_table_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A position in a source file: file relative to the spec root, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One error found in a spec tree or a node configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub kind: Option<Kind>,
    pub name: Option<String>,
    pub key: Option<String>,
    pub message: String,
}

impl Diagnostic {
    pub fn new(at: &Location, message: impl Into<String>) -> Self {
        Diagnostic {
            file: at.file.clone(),
            line: at.line,
            column: at.column,
            kind: None,
            name: None,
            key: None,
            message: message.into(),
        }
    }

    pub fn object(mut self, kind: Kind, name: &str) -> Self {
        self.kind = Some(kind);
        self.name = Some(name.to_string());
        self
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn location(&self) -> Location {
        Location {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
        }
    }

    /// Sort key: file, line, column, then message for a stable order.
    fn order(&self) -> (&str, usize, usize, &str) {
        (&self.file, self.line, self.column, &self.message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Sorts diagnostics by file and position and drops exact duplicates.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| a.order().cmp(&b.order()));
    diags.dedup();
}

/// Maps byte offsets of one text to 1-based line and character columns.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// Line and column (both 1-based, column in characters) of a byte offset.
    pub fn position(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, column)
    }
}

/// The closest candidate to a misspelt word, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1) + usize::from(word.len() > 5);
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent transpositions, so
/// `imgae` is one edit from `image`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.position(text, 0), (1, 1));
        assert_eq!(idx.position(text, 6), (2, 1));
        let x = text.find("\"x").unwrap_or(0);
        assert_eq!(idx.position(text, x), (2, 6));
    }

    #[test]
    fn suggestions() {
        let keys = ["image", "user", "entrypoint", "cap_drop", "cap_add"];
        assert_eq!(suggest("imgae", &keys), Some("image"));
        assert_eq!(suggest("cap_dorp", &keys), Some("cap_drop"));
        assert_eq!(suggest("usr", &keys), Some("user"));
        assert_eq!(suggest("zzzzzz", &keys), None);
    }
}
