//! git's `allowed_signers` file (gpg.ssh.allowedSignersFile, `man ssh-keygen`, section
//! ALLOWED SIGNERS): who may sign the node's revisions.
//!
//! One signer a line: `principals [options] keytype base64-key [comment]`.
//! - `principals`: a comma-separated pattern list (`*`, `?`). It is recorded with what
//!   the key signs, never matched against the committer's address, as the agent trusts
//!   keys, not names.
//! - options, comma-separated, keywords case-insensitive, values quoted as OpenSSH
//!   requires: `namespaces="git,…"` (a pattern list; without it every namespace),
//!   `valid-after="…"` and `valid-before="…"` (`YYYYMMDD[Z]` or `YYYYMMDDHHMM[SS][Z]`;
//!   berth reads every time as UTC, with or without `Z`, where ssh-keygen reads one
//!   without `Z` in the verifier's time zone), and `cert-authority`, which is refused:
//!   berth does not verify SSH certificates.
//! - key types: `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa` and their `sk-` (FIDO)
//!   forms; any other is refused on its line rather than never matching.
//! - `#` comments and blank lines.
//!
//! Every bad line is a located error (`FILE:LINE: error: …`), all of them at once; a
//! file with an error, or without any signer, is refused whole. The file is read
//! without blocking on a FIFO, only when it is a regular file of at most
//! [`MAX_FILE_BYTES`].

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

/// How big an allowed signers file may be.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The key types berth verifies signatures of.
const SUPPORTED_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Why an allowed signers file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SignersError {
    #[error("cannot read the allowed signers file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the allowed signers file {} is not a regular file", .path.display())]
    NotRegular { path: PathBuf },
    #[error(
        "the allowed signers file {} is larger than {MAX_FILE_BYTES} bytes",
        .path.display()
    )]
    TooLarge { path: PathBuf },
    #[error("{}{}", .errors.first().map(ToString::to_string).unwrap_or_default(), more(.errors.len()))]
    Invalid { errors: Vec<LineError> },
    #[error("{}: error: the allowed signers file lists no signer", .path.display())]
    Empty { path: PathBuf },
}

impl SignersError {
    /// The file was read and judged invalid (its content is wanting), as opposed to not
    /// being readable at all.
    pub fn is_invalid(&self) -> bool {
        matches!(self, Self::Invalid { .. } | Self::Empty { .. })
    }
}

fn more(n: usize) -> String {
    match n {
        0 | 1 => String::new(),
        2 => " (and 1 more invalid line)".into(),
        n => format!(" (and {} more invalid lines)", n - 1),
    }
}

/// One bad line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: error: {kind}")]
pub struct LineError {
    /// The file as given.
    pub file: String,
    /// 1-based.
    pub line: usize,
    #[source]
    pub kind: LineErrorKind,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineErrorKind {
    #[error("the line is not UTF-8")]
    NotUtf8,
    #[error("a quote is not closed")]
    UnclosedQuote,
    #[error("an empty principal in `{principals}`")]
    EmptyPrincipal { principals: String },
    #[error("no key after the principals (expected `principals [options] keytype base64-key`)")]
    MissingKey,
    #[error("no base64 key after `{keytype}`")]
    MissingKeyData { keytype: String },
    #[error("an empty option in `{options}`")]
    EmptyOption { options: String },
    #[error("unknown option `{option}` (known: namespaces, valid-after, valid-before)")]
    UnknownOption { option: String },
    #[error("`{option}` is given twice")]
    DuplicateOption { option: String },
    #[error("`{option}` takes a quoted value: {option}=\"…\"")]
    Unquoted { option: String },
    #[error("`namespaces` lists no namespace")]
    EmptyNamespaces,
    #[error("{option}=\"{value}\" is not a time (YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z], after 1970)")]
    BadTime { option: String, value: String },
    #[error("valid-before is not after valid-after")]
    EmptyValidity,
    #[error(
        "`cert-authority`: berth does not verify SSH certificates; list each signer's key instead"
    )]
    CertAuthority,
    #[error(
        "`{keytype}` is an SSH certificate: berth does not verify SSH certificates; list the signer's key instead"
    )]
    CertificateKey { keytype: String },
    #[error("key type `{keytype}` is not supported (supported: {})", SUPPORTED_KEY_TYPES.join(", "))]
    UnsupportedKeyType { keytype: String },
    #[error("the `{keytype}` key cannot be read: {source}")]
    Key {
        keytype: String,
        #[source]
        source: ssh_key::Error,
    },
}

/// One line of the file: a key and what it may sign.
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    /// 1-based line in the file.
    pub line: usize,
    /// The principals field as written (`alice@example.com,*@ops.example.com`).
    pub principals: String,
    pub key: PublicKey,
    /// `namespaces=`: the pattern list, or `None` for every namespace.
    pub namespaces: Option<Vec<String>>,
    /// `valid-after=`, Unix seconds.
    pub valid_after: Option<i64>,
    /// `valid-before=`, Unix seconds.
    pub valid_before: Option<i64>,
}

impl AllowedSigner {
    /// Whether the line lets its key sign for `namespace` (OpenSSH's pattern lists:
    /// `*` and `?` wildcards, `!` negates and wins, case-sensitive).
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| pattern_list_matches(list, namespace))
    }

    /// `SHA256:…` of the key, as ssh-keygen prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }
}

/// A parsed allowed signers file.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    file: String,
    signers: Vec<AllowedSigner>,
}

impl AllowedSigners {
    /// Reads and parses the file at `path` (see the module documentation).
    pub fn load(path: &Path) -> Result<Self, SignersError> {
        let path_buf = || path.to_path_buf();
        let bytes = read_regular(path, MAX_FILE_BYTES).map_err(|e| match e {
            ReadError::Io(source) => SignersError::Read {
                path: path_buf(),
                source,
            },
            ReadError::NotRegular => SignersError::NotRegular { path: path_buf() },
            ReadError::TooLarge { .. } => SignersError::TooLarge { path: path_buf() },
        })?;
        let file = path.display().to_string();
        let signers =
            Self::parse(&file, &bytes).map_err(|errors| SignersError::Invalid { errors })?;
        if signers.signers.is_empty() {
            return Err(SignersError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(signers)
    }

    /// Parses the text of a file; errors name `file` as given.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self, Vec<LineError>> {
        let mut signers = Vec::new();
        let mut errors = Vec::new();
        for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let line = i + 1;
            let trimmed = raw.trim_ascii();
            if trimmed.is_empty() || trimmed.starts_with(b"#") {
                continue;
            }
            let parsed = std::str::from_utf8(trimmed)
                .map_err(|_| LineErrorKind::NotUtf8)
                .and_then(|text| parse_line(line, text));
            match parsed {
                Ok(signer) => signers.push(signer),
                Err(kind) => errors.push(LineError {
                    file: file.to_string(),
                    line,
                    kind,
                }),
            }
        }
        if errors.is_empty() {
            Ok(Self {
                file: file.to_string(),
                signers,
            })
        } else {
            Err(errors)
        }
    }

    /// The file as given.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Every line, in file order.
    #[cfg(test)]
    pub fn signers(&self) -> &[AllowedSigner] {
        &self.signers
    }

    /// The lines listing `key`, in file order (a key may be listed more than once, with
    /// other options).
    pub fn for_key<'a>(&'a self, key: &'a KeyData) -> impl Iterator<Item = &'a AllowedSigner> + 'a {
        self.signers.iter().filter(move |s| s.key.key_data() == key)
    }
}

/// Why [`read_regular`] could not read a file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than {max} bytes")]
    TooLarge { max: u64 },
}

/// Opens `path` without blocking (a FIFO planted there cannot hang the reader), checks
/// that it is a regular file (not a device such as `/dev/zero`), and reads at most
/// `max` bytes. The one reader of the node's small trusted files (allowed signers,
/// OpenPGP keys).
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(ReadError::NotRegular);
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge { max });
    }
    Ok(bytes)
}

/// `principals [options] keytype base64-key [comment]`, trimmed, not a comment.
fn parse_line(line: usize, text: &str) -> Result<AllowedSigner, LineErrorKind> {
    let (principals, rest) = field(text)?;
    let principals = dequote(principals);
    if principals.split(',').any(str::is_empty) {
        return Err(LineErrorKind::EmptyPrincipal { principals });
    }
    let (first, rest) = field(rest)?;
    if first.is_empty() {
        return Err(LineErrorKind::MissingKey);
    }
    // Key types all start so; options never do.
    let is_key_type = |t: &str| ["ssh-", "ecdsa-", "sk-"].iter().any(|p| t.starts_with(p));
    let (options, keytype, rest) = if is_key_type(first) {
        (Options::default(), first.to_string(), rest)
    } else {
        let options = parse_options(first)?;
        let (keytype, rest) = field(rest)?;
        if keytype.is_empty() {
            return Err(LineErrorKind::MissingKey);
        }
        (options, keytype.to_string(), rest)
    };
    if keytype.ends_with("-cert-v01@openssh.com") {
        return Err(LineErrorKind::CertificateKey { keytype });
    }
    if !SUPPORTED_KEY_TYPES.contains(&keytype.as_str()) {
        return Err(LineErrorKind::UnsupportedKeyType { keytype });
    }
    let (base64, _comment) = field(rest)?;
    if base64.is_empty() {
        return Err(LineErrorKind::MissingKeyData { keytype });
    }
    let key = PublicKey::from_openssh(&format!("{keytype} {base64}")).map_err(|source| {
        LineErrorKind::Key {
            keytype: keytype.clone(),
            source,
        }
    })?;
    if key.algorithm().as_str() != keytype {
        return Err(LineErrorKind::Key {
            keytype,
            source: ssh_key::Error::AlgorithmUnknown,
        });
    }
    Ok(AllowedSigner {
        line,
        principals,
        key,
        namespaces: options.namespaces,
        valid_after: options.valid_after,
        valid_before: options.valid_before,
    })
}

/// The next whitespace-separated field of `text` as written (whitespace inside quotes,
/// and `\"` inside them, belong to it), and what follows, leading whitespace skipped.
/// An empty field at the end of the text.
fn field(text: &str) -> Result<(&str, &str), LineErrorKind> {
    let text = text.trim_start();
    Ok(match unquoted(text, char::is_whitespace)?.first() {
        Some(&i) => (&text[..i], text[i..].trim_start()),
        None => (text, ""),
    })
}

/// The byte offsets of the characters `is_separator` accepts outside quotes (`\"`
/// inside quotes is a quote that does not end them).
fn unquoted(text: &str, is_separator: impl Fn(char) -> bool) -> Result<Vec<usize>, LineErrorKind> {
    let mut found = Vec::new();
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in text.char_indices() {
        match c {
            '\\' if quoted && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => quoted = !quoted,
            c if !quoted && is_separator(c) => found.push(i),
            _ => {}
        }
        escaped = false;
    }
    if quoted {
        return Err(LineErrorKind::UnclosedQuote);
    }
    Ok(found)
}

/// A field without its quotes (`\"` → `"`), as OpenSSH reads the principals.
fn dequote(field: &str) -> String {
    field
        .replace("\\\"", "\0")
        .replace('"', "")
        .replace('\0', "\"")
}

#[derive(Debug, Default)]
struct Options {
    namespaces: Option<Vec<String>>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
}

/// The options field, as written on the line (OpenSSH requires values to be quoted).
fn parse_options(options: &str) -> Result<Options, LineErrorKind> {
    let mut out = Options::default();
    for option in split_options(options)? {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v)),
            None => (option.to_ascii_lowercase(), None),
        };
        if option.is_empty() {
            return Err(LineErrorKind::EmptyOption {
                options: options.to_string(),
            });
        }
        match (name.as_str(), value) {
            ("cert-authority", None) => return Err(LineErrorKind::CertAuthority),
            ("namespaces" | "valid-after" | "valid-before", Some(v)) => {
                let v = unquote(v).ok_or_else(|| LineErrorKind::Unquoted {
                    option: name.clone(),
                })?;
                let twice = || LineErrorKind::DuplicateOption {
                    option: name.clone(),
                };
                match name.as_str() {
                    "namespaces" => {
                        if out.namespaces.is_some() {
                            return Err(twice());
                        }
                        let list: Vec<String> = v.split(',').map(str::to_string).collect();
                        if list.iter().any(String::is_empty) {
                            return Err(LineErrorKind::EmptyNamespaces);
                        }
                        out.namespaces = Some(list);
                    }
                    "valid-after" => {
                        if out.valid_after.is_some() {
                            return Err(twice());
                        }
                        out.valid_after = Some(parse_time(&name, &v)?);
                    }
                    _ => {
                        if out.valid_before.is_some() {
                            return Err(twice());
                        }
                        out.valid_before = Some(parse_time(&name, &v)?);
                    }
                }
            }
            _ => {
                return Err(LineErrorKind::UnknownOption {
                    option: option.to_string(),
                });
            }
        }
    }
    if let (Some(after), Some(before)) = (out.valid_after, out.valid_before)
        && before <= after
    {
        return Err(LineErrorKind::EmptyValidity);
    }
    Ok(out)
}

/// Splits the options at commas outside quotes, keeping the quotes.
fn split_options(options: &str) -> Result<Vec<&str>, LineErrorKind> {
    let mut parts = Vec::new();
    let mut start = 0;
    for i in unquoted(options, |c| c == ',')? {
        parts.push(&options[start..i]);
        start = i + 1;
    }
    parts.push(&options[start..]);
    Ok(parts)
}

/// `"value"` → `value` (with `\"` → `"`); `None` when not quoted.
fn unquote(v: &str) -> Option<String> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    Some(inner.replace("\\\"", "\""))
}

/// `YYYYMMDD[Z]` or `YYYYMMDDHHMM[SS][Z]` (also `…UTC`, as OpenSSH takes), as UTC Unix
/// seconds; after 1970, as OpenSSH requires.
fn parse_time(option: &str, value: &str) -> Result<i64, LineErrorKind> {
    let bad = || LineErrorKind::BadTime {
        option: option.to_string(),
        value: value.to_string(),
    };
    let upper = value.to_ascii_uppercase();
    let digits = upper
        .strip_suffix('Z')
        .or_else(|| upper.strip_suffix("UTC"))
        .unwrap_or(&upper);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let part = |r: std::ops::Range<usize>| digits.get(r).unwrap_or("00");
    let (hh, mm, ss) = match digits.len() {
        8 => ("00", "00", "00"),
        12 => (part(8..10), part(10..12), "00"),
        14 => (part(8..10), part(10..12), part(12..14)),
        _ => return Err(bad()),
    };
    let rfc3339 = format!(
        "{}-{}-{}T{hh}:{mm}:{ss}Z",
        part(0..4),
        part(4..6),
        part(6..8)
    );
    match crate::util::rfc3339::parse(&rfc3339) {
        Some((secs, _)) if secs > 0 => Ok(secs),
        _ => Err(bad()),
    }
}

/// OpenSSH's `match_pattern_list`: true when some pattern matches and no negated
/// (`!`) one does.
fn pattern_list_matches(patterns: &[String], s: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        match p.strip_prefix('!') {
            Some(negated) if wildcard(negated.as_bytes(), s.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= wildcard(p.as_bytes(), s.as_bytes()),
        }
    }
    matched
}

/// `*` (any run) and `?` (any one byte) wildcards, case-sensitive.
fn wildcard(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => {
            let rest = &rest[rest.iter().take_while(|b| **b == b'*').count()..];
            (0..=s.len()).any(|i| wildcard(rest, &s[i..]))
        }
        Some((p, rest)) => s
            .split_first()
            .is_some_and(|(c, s_rest)| (*p == b'?' || p == c) && wildcard(rest, s_rest)),
    }
}

#[cfg(test)]
#[path = "signers_tests.rs"]
mod tests;
