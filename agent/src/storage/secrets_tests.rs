//! Tests of `storage::secrets`: identity files, encryption round trips, errors that name
//! the file and never the content, interoperability with the Debian `age` CLI (binary
//! and armored, both directions), and — as root — the tmpfs delivery.
//!
//! Without `age`/`age-keygen` or root the concerned tests skip, or fail when `CI=true`.

use std::io::Write;
use std::process::{Command, Stdio};

use super::*;
use crate::testing;

fn have_age() -> bool {
    let ok = ["age", "age-keygen"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    testing::require(ok, "`age` and `age-keygen` (Debian package age)")
}

/// Runs a program with `input` on stdin; panics with its stderr on failure.
fn tool(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

const SECRET: &[u8] = b"hunter2-db-password\n";
const FILE: &str = "secrets/db-password.age";

fn recipient(id: &AgeIdentity) -> Recipient {
    parse_recipient(&id.recipients()[0]).unwrap()
}

#[test]
fn identity_file_round_trips_in_age_keygen_format() {
    let id = AgeIdentity::generate();
    let text = id.to_file_text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("# created: 20") && lines[0].ends_with('Z'),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], format!("# public key: {}", id.recipients()[0]));
    assert!(lines[2].starts_with("AGE-SECRET-KEY-1"));
    let back = AgeIdentity::parse(Path::new("k"), &text).unwrap();
    assert_eq!(back.recipients(), id.recipients());
}

#[test]
fn debug_output_shows_no_secret() {
    let id = AgeIdentity::generate();
    let shown = format!("{id:?}");
    assert!(
        shown.contains("age1") && !shown.contains("AGE-SECRET-KEY"),
        "{shown}"
    );
    let plain = decrypt(
        &id,
        Path::new(FILE),
        &encrypt(&[recipient(&id)], SECRET, false).unwrap(),
    )
    .unwrap();
    assert_eq!(format!("{plain:?}"), "Plaintext(..)");
}

#[test]
fn bad_identity_files_name_the_line_not_the_content() {
    let p = Path::new("/etc/berth/age.key");
    let err = AgeIdentity::parse(p, "# comment\n\nAGE-SECRET-KEY-1NOTVALID\n").unwrap_err();
    let msg = err.to_string();
    assert_eq!(
        msg,
        "identity file /etc/berth/age.key line 3: not an age X25519 identity (AGE-SECRET-KEY-1…)"
    );
    let err = AgeIdentity::parse(p, "# only a comment\n").unwrap_err();
    assert!(matches!(err, SecretError::NoIdentity { .. }));
}

#[test]
fn write_new_is_0600_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("age.key");
    let id = AgeIdentity::generate();
    id.write_new(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&path).unwrap();
    let err = AgeIdentity::generate().write_new(&path).unwrap_err();
    assert!(matches!(err, SecretError::IdentityExists { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(
        AgeIdentity::load(&path).unwrap().recipients(),
        id.recipients()
    );
}

#[test]
fn encrypt_then_decrypt_binary_and_armored() {
    let id = AgeIdentity::generate();
    let other = AgeIdentity::generate();
    for armor in [false, true] {
        let ct = encrypt(&[recipient(&other), recipient(&id)], SECRET, armor).unwrap();
        assert_eq!(ct.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"), armor);
        assert_eq!(
            decrypt(&id, Path::new(FILE), &ct).unwrap().as_bytes(),
            SECRET
        );
        assert_eq!(
            decrypt(&other, Path::new(FILE), &ct).unwrap().as_bytes(),
            SECRET
        );
    }
}

#[test]
fn wrong_identity_is_a_clear_error_naming_the_file() {
    let ct = encrypt(&[recipient(&AgeIdentity::generate())], SECRET, false).unwrap();
    let err = decrypt(&AgeIdentity::generate(), Path::new(FILE), &ct).unwrap_err();
    assert_eq!(
        err.to_string(),
        "secret file secrets/db-password.age: no identity matches (it is not encrypted to this node's recipient)"
    );
}

#[test]
fn plaintext_is_not_an_age_file() {
    let id = AgeIdentity::generate();
    for input in [&b"hunter2\n"[..], b"", b"age-encryption.org/v1\n-> junk\n"] {
        let err = decrypt(&id, Path::new(FILE), input).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(FILE) && !msg.contains("hunter2"), "{msg}");
        assert!(
            matches!(err, SecretError::NotAge { .. }),
            "{input:?}: {msg}"
        );
    }
}

#[test]
fn a_damaged_payload_is_reported_without_content() {
    let id = AgeIdentity::generate();
    let mut ct = encrypt(&[recipient(&id)], SECRET, false).unwrap();
    let last = ct.len() - 1;
    ct[last] ^= 1;
    let err = decrypt(&id, Path::new(FILE), &ct).unwrap_err();
    assert_eq!(
        err.to_string(),
        "secret file secrets/db-password.age: payload does not decrypt (damaged or truncated)"
    );
}

#[test]
fn bad_recipients_are_rejected() {
    let err = parse_recipient("age1nope").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid recipient `age1nope`: expected an age X25519 recipient (age1…)"
    );
    assert!(encrypt(&[], SECRET, false).is_err());
}

#[test]
fn age_cli_decrypts_what_berth_encrypts() {
    if !have_age() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    let id = AgeIdentity::generate();
    id.write_new(&key).unwrap();
    let key = key.to_str().unwrap();
    // age-keygen -y reads berth's identity file and derives the same recipient.
    let derived = tool("age-keygen", &["-y", key], b"");
    assert_eq!(
        String::from_utf8(derived).unwrap().trim(),
        id.recipients()[0]
    );
    for armor in [false, true] {
        let ct = encrypt(&[recipient(&id)], SECRET, armor).unwrap();
        assert_eq!(tool("age", &["-d", "-i", key], &ct), SECRET);
    }
}

#[test]
fn berth_decrypts_what_the_age_cli_encrypts() {
    if !have_age() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    let status = Command::new("age-keygen")
        .args(["-o", key.to_str().unwrap()])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let id = AgeIdentity::load(&key).unwrap();
    let r = id.recipients()[0].clone();
    for args in [vec!["-r", &r], vec!["-a", "-r", &r]] {
        let ct = tool("age", &args, SECRET);
        assert_eq!(
            decrypt(&id, Path::new(FILE), &ct).unwrap().as_bytes(),
            SECRET,
            "{args:?}"
        );
    }
    // Encrypted to someone else: the node's identity does not match.
    let ct = tool(
        "age",
        &["-r", &AgeIdentity::generate().recipients()[0]],
        SECRET,
    );
    let err = decrypt(&id, Path::new(FILE), &ct).unwrap_err();
    assert!(
        matches!(err, SecretError::NoMatchingIdentity { .. }),
        "{err}"
    );
}

/// The mountinfo line of a mount point, if mounted.
fn mountinfo(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_str().unwrap();
    text.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(dir))
        .map(str::to_string)
}

#[test]
fn secrets_are_delivered_on_a_private_tmpfs_as_root() {
    if !testing::have_root() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let dir = secrets_dir(base.path(), "web-1a2b3c4d");
    assert_eq!(dir, base.path().join("secrets/web-1a2b3c4d"));
    mount_secrets_dir(&dir, 64 * 1024).unwrap();
    let line = mountinfo(&dir).expect("tmpfs mounted");
    assert!(line.contains(" - tmpfs "), "{line}");
    for opt in ["nosuid", "nodev", "noexec"] {
        assert!(
            line.split(' ').nth(5).unwrap().contains(opt),
            "{opt}: {line}"
        );
    }
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
        0o700
    );

    let plain = Plaintext::new(Zeroizing::new(SECRET.to_vec()));
    let path = write_secret(&dir, "db-password", &plain, 10001, 10002).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o400);
    assert_eq!((meta.uid(), meta.gid()), (10001, 10002));
    assert_eq!(std::fs::read(&path).unwrap(), SECRET);

    // Never over an existing file, never outside the directory.
    assert!(matches!(
        write_secret(&dir, "db-password", &plain, 0, 0),
        Err(SecretError::WriteSecret { .. })
    ));
    for bad in ["", ".", "..", "../x", "a/b"] {
        assert!(matches!(
            write_secret(&dir, bad, &plain, 0, 0),
            Err(SecretError::BadTarget { .. })
        ));
    }

    // Mounting again (after a crash) starts empty.
    mount_secrets_dir(&dir, 64 * 1024).unwrap();
    assert!(!path.exists());
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .matches(dir.to_str().unwrap())
            .count(),
        1
    );

    unmount_secrets_dir(&dir).unwrap();
    assert!(mountinfo(&dir).is_none());
    assert!(!dir.exists());
    unmount_secrets_dir(&dir).unwrap(); // idempotent
}
