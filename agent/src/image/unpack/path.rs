//! Tar entry names to safe relative paths (pure, no I/O).
//!
//! Contract: a parsed [`EntryPath`] has only normal components (no empty, `.`, `..`,
//! `/` or NUL), so joining it under a root can never name anything outside that root
//! lexically; symlinks are the resolver's job (`root.rs`). Unlike containerd and umoci,
//! which clean `../x` to `x`, berth rejects `..` and absolute names outright: no tool
//! that builds images writes them, so seeing one means the archive is hostile.

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathReject {
    Absolute,
    DotDot,
    Nul,
}

impl PathReject {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            PathReject::Absolute => "absolute path",
            PathReject::DotDot => "'..' component",
            PathReject::Nul => "NUL byte in path",
        }
    }
}

/// A validated path relative to the layer root; no components means the root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryPath {
    comps: Vec<Vec<u8>>,
}

impl EntryPath {
    /// Parses a raw tar name (`./a/b/`, `a//b`, `.` …).
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, PathReject> {
        if raw.contains(&0) {
            return Err(PathReject::Nul);
        }
        if raw.first() == Some(&b'/') {
            return Err(PathReject::Absolute);
        }
        let mut comps = Vec::new();
        for c in raw.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => return Err(PathReject::DotDot),
                c => comps.push(c.to_vec()),
            }
        }
        Ok(EntryPath { comps })
    }

    pub(crate) fn from_comps(comps: Vec<Vec<u8>>) -> Self {
        EntryPath { comps }
    }

    pub(crate) fn comps(&self) -> &[Vec<u8>] {
        &self.comps
    }

    /// The components of the parent directory (empty for the root's children).
    pub(crate) fn parent(&self) -> &[Vec<u8>] {
        match self.comps.split_last() {
            Some((_, parent)) => parent,
            None => &[],
        }
    }

    /// The last component; `None` for the root.
    pub(crate) fn name(&self) -> Option<&[u8]> {
        self.comps.last().map(Vec::as_slice)
    }

    /// This path with `name` appended.
    pub(crate) fn child(&self, name: &[u8]) -> Self {
        let mut comps = self.comps.clone();
        comps.push(name.to_vec());
        EntryPath { comps }
    }

    /// The joined form (`a/b`), the key used to remember what a layer wrote.
    pub(crate) fn key(&self) -> Vec<u8> {
        self.comps.join(&b'/')
    }

    /// Every proper ancestor's key, outermost first (`a`, `a/b` for `a/b/c`).
    pub(crate) fn ancestor_keys(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        (1..self.comps.len()).map(|n| self.comps[..n].join(&b'/'))
    }

    /// For messages: `a/b/c`, or `.` for the root.
    pub(crate) fn display(&self) -> String {
        if self.comps.is_empty() {
            ".".to_owned()
        } else {
            String::from_utf8_lossy(&self.key()).into_owned()
        }
    }
}

/// What an entry's last component says about whiteouts (OCI image-spec layer.md).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// An ordinary name.
    None,
    /// `.wh.NAME`: delete NAME from lower layers.
    Delete(&'a [u8]),
    /// `.wh..wh..opq`: hide the lower layers' children of the parent directory.
    Opaque,
    /// Another `.wh..wh.*` name: AUFS bookkeeping, skipped as Docker does.
    AufsMeta,
    /// `.wh.` alone, or a target that is not a single normal component.
    Invalid,
}

const WH_PREFIX: &[u8] = b".wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
const WH_META_PREFIX: &[u8] = b".wh..wh.";

pub(crate) fn classify(name: &[u8]) -> Whiteout<'_> {
    if name == WH_OPAQUE {
        return Whiteout::Opaque;
    }
    if name.starts_with(WH_META_PREFIX) {
        return Whiteout::AufsMeta;
    }
    match name.strip_prefix(WH_PREFIX) {
        None => Whiteout::None,
        Some(b"" | b"." | b"..") => Whiteout::Invalid,
        Some(target) => Whiteout::Delete(target),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn comps(raw: &str) -> Vec<String> {
        EntryPath::parse(raw.as_bytes())
            .map(|p| {
                p.comps()
                    .iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect()
            })
            .unwrap_or_else(|e| vec![format!("ERR {e:?}")])
    }

    #[test]
    fn normalises_dot_and_slashes() {
        assert_eq!(comps("./a//b/./c/"), ["a", "b", "c"]);
        assert!(comps("./").is_empty());
        assert!(comps(".").is_empty());
    }

    #[test]
    fn rejects_escapes() {
        assert_eq!(comps("../x"), ["ERR DotDot"]);
        assert_eq!(comps("a/../../x"), ["ERR DotDot"]);
        assert_eq!(comps("a/.."), ["ERR DotDot"]);
        assert_eq!(comps("/etc/passwd"), ["ERR Absolute"]);
        assert_eq!(comps("a\0b"), ["ERR Nul"]);
        // `..x` and `x..` are ordinary names.
        assert_eq!(comps("..x/x.."), ["..x", "x.."]);
    }

    #[test]
    fn parent_name_and_keys() {
        let p = EntryPath::parse(b"a/b/c").unwrap();
        assert_eq!(p.parent(), [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(p.name(), Some(&b"c"[..]));
        assert_eq!(p.key(), b"a/b/c");
        let anc: Vec<_> = p.ancestor_keys().collect();
        assert_eq!(anc, [b"a".to_vec(), b"a/b".to_vec()]);
        assert_eq!(EntryPath::parse(b".").unwrap().display(), ".");
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(classify(b"file"), Whiteout::None);
        assert_eq!(classify(b".wh.file"), Whiteout::Delete(b"file"));
        assert_eq!(classify(b".wh..wh..opq"), Whiteout::Opaque);
        assert_eq!(classify(b".wh..wh.plnk"), Whiteout::AufsMeta);
        assert_eq!(classify(b".wh."), Whiteout::Invalid);
        assert_eq!(classify(b".wh.."), Whiteout::Invalid);
        assert_eq!(classify(b".wh...."), Whiteout::Delete(b"..."));
    }
}
