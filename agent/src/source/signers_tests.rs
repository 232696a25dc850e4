#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use ssh_key::PrivateKey;
use ssh_key::private::Ed25519Keypair;

/// A fixed test key, `ssh-ed25519 AAAA…`.
fn key(seed: u8) -> String {
    let private = PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]));
    private.public_key().to_openssh().unwrap()
}

fn parse(text: &str) -> Result<AllowedSigners, Vec<LineError>> {
    AllowedSigners::parse("allowed_signers", text.as_bytes())
}

fn one(line: &str) -> AllowedSigner {
    let parsed = parse(line).unwrap_or_else(|e| panic!("{line}: {e:?}"));
    assert_eq!(parsed.signers().len(), 1);
    parsed.signers()[0].clone()
}

fn error_of(line: &str) -> LineErrorKind {
    let errors = parse(line).expect_err(line);
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors[0].kind.clone()
}

#[test]
fn signers_with_comments_blank_lines_and_key_comments() {
    let (a, b) = (key(1), key(2));
    let text = format!(
        "# the fleet's signers\n\n   \nalice@example.com {a} alice's laptop\n\t# indented comment\nbob@example.com,*@ops.example.com {b}\n"
    );
    let parsed = parse(&text).unwrap();
    let s = parsed.signers();
    assert_eq!(s.len(), 2);
    assert_eq!(
        (s[0].line, s[0].principals.as_str()),
        (4, "alice@example.com")
    );
    assert_eq!(s[0].key.to_openssh().unwrap(), a);
    assert_eq!(
        (s[1].line, s[1].principals.as_str()),
        (6, "bob@example.com,*@ops.example.com")
    );
    assert!(s[0].namespaces.is_none() && s[0].valid_after.is_none());
    assert!(s[0].allows_namespace("git") && s[0].allows_namespace("file"));
    assert!(s[0].fingerprint().starts_with("SHA256:"));
}

#[test]
fn principals_are_recorded_as_written_even_as_patterns() {
    let k = key(1);
    assert_eq!(one(&format!("* {k}")).principals, "*");
    assert_eq!(
        one(&format!("dev?@x,!eve@x {k}")).principals,
        "dev?@x,!eve@x"
    );
    assert_eq!(one(&format!("\"a b@x\" {k}")).principals, "a b@x");
}

#[test]
fn each_option_is_read() {
    let k = key(1);
    let s = one(&format!(
        "a@x namespaces=\"git,file\",valid-after=\"20260101\",valid-before=\"20270630123000Z\" {k}"
    ));
    assert_eq!(
        s.namespaces,
        Some(vec!["git".to_string(), "file".to_string()])
    );
    assert_eq!(s.valid_after, Some(1_767_225_600)); // 2026-01-01T00:00:00Z
    assert_eq!(s.valid_before, Some(1_814_358_600)); // 2027-06-30T12:30:00Z
    // Keywords are case-insensitive; HHMM without seconds; the `UTC` suffix.
    let s = one(&format!(
        "a@x NAMESPACES=\"git\",Valid-After=\"202601011230\",VALID-BEFORE=\"20260102UTC\" {k}"
    ));
    assert_eq!(s.valid_after, Some(1_767_270_600)); // 2026-01-01T12:30:00Z
    assert_eq!(s.valid_before, Some(1_767_312_000));
}

#[test]
fn namespaces_are_openssh_pattern_lists() {
    let k = key(1);
    let allows = |ns: &str| one(&format!("a@x namespaces=\"{ns}\" {k}")).allows_namespace("git");
    assert!(allows("git"));
    assert!(allows("file,git"));
    assert!(allows("g*"));
    assert!(allows("gi?"));
    assert!(allows("**t"));
    assert!(allows("*,!file"));
    assert!(!allows("file"));
    assert!(!allows("GIT"), "namespaces are case-sensitive");
    assert!(!allows("*,!git"), "a negated match wins");
    assert!(!allows("!git,*"), "whatever its place");
    assert!(!allows("!file"), "a negation alone allows nothing");
    assert!(!allows("gitx") && !allows("g?") && !allows("?git"));
}

#[test]
fn certificates_are_refused_on_their_line() {
    let k = key(1);
    assert_eq!(
        error_of(&format!("*@example.com cert-authority {k}")),
        LineErrorKind::CertAuthority
    );
    assert_eq!(
        error_of(&format!("*@x namespaces=\"git\",CERT-AUTHORITY {k}")),
        LineErrorKind::CertAuthority
    );
    assert!(matches!(
        error_of("a@x ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29t"),
        LineErrorKind::CertificateKey { keytype } if keytype == "ssh-ed25519-cert-v01@openssh.com"
    ));
}

#[test]
fn bad_lines_are_each_located_in_one_pass() {
    let k = key(1);
    let text = format!(
        "ok@x {k}\n\
         a@x namespaces=git {k}\n\
         a@x valid-after=\"2026\" {k}\n\
         a@x valid-after=\"20260101\",valid-before=\"20250101\" {k}\n\
         a@x foo=\"bar\" {k}\n\
         a@x namespaces=\"git\",namespaces=\"file\" {k}\n\
         a@x\n\
         a@x ssh-ed25519\n\
         a@x ssh-ed25519 AAAAnotakey\n\
         a@x ssh-dss AAAAB3NzaC1kc3M\n\
         a@x,,b@x {k}\n\
         a@x namespaces=\"git {k}\n\
         a@x namespaces=\"\" {k}\n\
         a@x valid-before=\"19700101\" {k}\n\
         a@x valid-after=\"20261301\" {k}\n\
         a@x namespaces=\"git\",, {k}\n"
    );
    let errors = parse(&text).unwrap_err();
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, (2..=16).collect::<Vec<_>>(), "{errors:#?}");
    let kind = |line: usize| &errors[line - 2].kind;
    assert_eq!(
        kind(2),
        &LineErrorKind::Unquoted {
            option: "namespaces".into()
        }
    );
    assert!(
        matches!(kind(3), LineErrorKind::BadTime { option, value } if option == "valid-after" && value == "2026")
    );
    assert_eq!(kind(4), &LineErrorKind::EmptyValidity);
    assert!(matches!(kind(5), LineErrorKind::UnknownOption { option } if option == "foo=\"bar\""));
    assert!(matches!(kind(6), LineErrorKind::DuplicateOption { option } if option == "namespaces"));
    assert_eq!(kind(7), &LineErrorKind::MissingKey);
    assert!(matches!(kind(8), LineErrorKind::MissingKeyData { .. }));
    assert!(matches!(kind(9), LineErrorKind::Key { .. }));
    assert!(
        matches!(kind(10), LineErrorKind::UnsupportedKeyType { keytype } if keytype == "ssh-dss")
    );
    assert!(matches!(kind(11), LineErrorKind::EmptyPrincipal { .. }));
    assert_eq!(kind(12), &LineErrorKind::UnclosedQuote);
    assert_eq!(kind(13), &LineErrorKind::EmptyNamespaces);
    assert!(
        matches!(kind(14), LineErrorKind::BadTime { .. }),
        "the epoch itself"
    );
    assert!(
        matches!(kind(15), LineErrorKind::BadTime { .. }),
        "month 13"
    );
    assert!(matches!(kind(16), LineErrorKind::EmptyOption { .. }));
    assert_eq!(
        errors[0].to_string(),
        "allowed_signers:2: error: `namespaces` takes a quoted value: namespaces=\"…\""
    );
}

#[test]
fn a_key_whose_blob_names_another_type_is_refused() {
    let k = key(1);
    let blob = k.split_whitespace().nth(1).unwrap();
    assert!(matches!(
        error_of(&format!("a@x ecdsa-sha2-nistp256 {blob}")),
        LineErrorKind::Key { .. }
    ));
}

#[test]
fn a_line_that_is_not_utf8_is_located() {
    let k = key(1);
    let mut text = format!("a@x {k}\n").into_bytes();
    text.extend_from_slice(b"b\xff@x ");
    text.extend_from_slice(k.as_bytes());
    let errors = AllowedSigners::parse("f", &text).unwrap_err();
    assert_eq!(
        (errors[0].line, &errors[0].kind),
        (2, &LineErrorKind::NotUtf8)
    );
}

#[test]
fn for_key_finds_every_line_of_a_key_in_order() {
    let (a, b) = (key(1), key(2));
    let text = format!("one@x namespaces=\"file\" {a}\nother@x {b}\ntwo@x {a}\n");
    let parsed = parse(&text).unwrap();
    let a_key = PublicKey::from_openssh(&a).unwrap();
    let lines: Vec<usize> = parsed.for_key(a_key.key_data()).map(|s| s.line).collect();
    assert_eq!(lines, vec![1, 3]);
}

#[test]
fn load_reads_a_regular_file_only_and_caps_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("allowed_signers");
    std::fs::write(&good, format!("a@x {}\n", key(1))).unwrap();
    assert_eq!(AllowedSigners::load(&good).unwrap().signers().len(), 1);

    // A FIFO is refused at once, never waited on.
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert!(matches!(
        AllowedSigners::load(&fifo),
        Err(SignersError::NotRegular { .. })
    ));
    assert!(matches!(
        AllowedSigners::load(dir.path()),
        Err(SignersError::NotRegular { .. })
    ));

    let big = dir.path().join("big");
    let line = format!("a@x {}\n", key(1));
    let copies = (MAX_FILE_BYTES as usize) / line.len() + 1;
    std::fs::write(&big, line.repeat(copies)).unwrap();
    assert!(matches!(
        AllowedSigners::load(&big),
        Err(SignersError::TooLarge { .. })
    ));

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "# nobody yet\n").unwrap();
    let e = AllowedSigners::load(&empty).unwrap_err();
    assert!(e.is_invalid());
    assert!(e.to_string().ends_with("lists no signer"), "{e}");

    let missing = AllowedSigners::load(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(missing, SignersError::Read { .. }) && !missing.is_invalid());

    let bad = dir.path().join("bad");
    std::fs::write(&bad, "a@x\nb@x\n").unwrap();
    let e = AllowedSigners::load(&bad).unwrap_err();
    assert!(e.is_invalid());
    assert!(
        e.to_string()
            .starts_with(&format!("{}:1: error: no key", bad.display())),
        "{e}"
    );
    assert!(e.to_string().ends_with("(and 1 more invalid line)"), "{e}");
}
