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
            printable(&self.file),
            self.line,
            self.column,
            printable(&self.message)
        )
    }
}

/// `s` with control characters (newlines, escape sequences, bells) and the invisible
/// direction controls (U+200E/F, U+202A–E, U+2066–9, which reorder what a reader sees)
/// written as Rust escapes (`\u{1b}`): messages quote what a committer wrote, and must
/// neither forge a second line, nor drive the reader's terminal, nor show text in an
/// order other than its own.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| {
                if hidden(c) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Sorts diagnostics by file and position and drops exact duplicates.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| a.order().cmp(&b.order()));
    diags.dedup();
}

/// Maps byte offsets of one text to 1-based line and character columns.
///
/// Every lookup is cheap whatever the text: besides the line starts, it keeps the number
/// of characters before every [`LineIndex::BLOCK`]-th byte, so a column costs at most two
/// partial blocks to count — not the whole line, which in a hostile file may be one line
/// of megabytes holding thousands of keys.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
    /// Characters in `text[..i * BLOCK]`, counted as bytes that start a character.
    chars_before_block: Vec<usize>,
}

impl LineIndex {
    const BLOCK: usize = 256;

    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut chars_before_block = Vec::with_capacity(text.len() / Self::BLOCK + 1);
        let mut n = 0;
        chars_before_block.push(0);
        for block in text.as_bytes().chunks(Self::BLOCK) {
            n += char_starts(block);
            chars_before_block.push(n);
        }
        LineIndex {
            starts,
            chars_before_block,
        }
    }

    /// Characters in `text[..offset]`.
    fn chars_before(&self, text: &str, offset: usize) -> usize {
        let block = offset / Self::BLOCK;
        let from = block * Self::BLOCK;
        let whole = self.chars_before_block.get(block).copied().unwrap_or(0);
        whole + char_starts(text.as_bytes().get(from..offset).unwrap_or(&[]))
    }

    /// Line and column (both 1-based, column in characters) of a byte offset.
    pub fn position(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self.chars_before(text, offset) - self.chars_before(text, start) + 1;
        (line, column)
    }
}

/// Bytes that begin a UTF-8 character (every byte but continuation bytes).
fn char_starts(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| (**b & 0xC0) != 0x80).count()
}

/// Where the first byte that is not UTF-8 sits in `bytes`, as line and column of a text
/// made of the valid part before it; `None` when all of `bytes` is UTF-8.
pub fn invalid_utf8_position(bytes: &[u8]) -> Option<(usize, usize, u8)> {
    let e = std::str::from_utf8(bytes).err()?;
    let at = e.valid_up_to();
    let valid = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
    let (line, column) = LineIndex::new(valid).position(valid, at);
    Some((line, column, bytes.get(at).copied().unwrap_or(0)))
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

    /// Columns stay exact across block boundaries and multi-byte characters, and a
    /// lookup on a megabyte-long line costs no more than on a short one.
    #[test]
    fn positions_on_long_lines() {
        let mut text = String::from("x\n");
        for i in 0..200_000 {
            text.push_str(if i % 7 == 0 { "é" } else { "a" });
        }
        text.push_str("\nend");
        let idx = LineIndex::new(&text);
        let naive = |offset: usize| {
            let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
            text[start..offset].chars().count() + 1
        };
        for offset in (2..text.len())
            .step_by(997)
            .filter(|o| text.is_char_boundary(*o))
        {
            assert_eq!(idx.position(&text, offset).1, naive(offset), "{offset}");
        }
        let end = text.len() - 3;
        assert_eq!(idx.position(&text, end), (3, 1));
        let started = std::time::Instant::now();
        for _ in 0..100_000 {
            idx.position(&text, text.len() - 4);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn invalid_utf8_is_located() {
        assert_eq!(invalid_utf8_position(b"a = 1\n"), None);
        assert_eq!(
            invalid_utf8_position(b"a = 1\n# caf\xc3\xa9 \xff\n"),
            Some((2, 8, 0xff))
        );
        assert_eq!(invalid_utf8_position(b"\x80"), Some((1, 1, 0x80)));
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

#[cfg(test)]
mod printable_tests {
    use super::printable;

    #[test]
    fn controls_and_direction_overrides_are_escaped() {
        assert_eq!(printable("plain"), "plain");
        assert_eq!(printable("a\nb"), "a\\u{a}b");
        assert_eq!(printable("\u{202e}MRETGIS"), "\\u{202e}MRETGIS");
        assert_eq!(printable("x\u{2066}y"), "x\\u{2066}y");
        assert_eq!(printable("héllo ✓"), "héllo ✓");
    }
}
