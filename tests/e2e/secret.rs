//! `berth secret` end to end against the Debian `age` tools: keygen writes a 0600
//! age-keygen-format file whose recipient `age-keygen -y` agrees with, never overwrites;
//! `recipient` reads `--identity` or the node config's `[secrets] identity`; `encrypt`
//! output (binary and armored, file and stdin) is decrypted by `age -d`.
//!
//! Decryption by berth of files `age` made is tested in the agent's unit tests
//! (`storage::secrets`), where the runtime's library call lives.
//!
//! Debian package: `age`.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use berth_e2e::{berth, have_tools, run_berth};

/// Runs a program; panics with its stderr when it fails; returns stdout.
fn tool(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SECRET: &[u8] = b"correct horse battery staple\n";

#[test]
fn secret_keygen_writes_a_0600_identity_that_age_keygen_reads() {
    if !have_tools(&["age-keygen"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node/age.key");
    let run = run_berth(
        dir.path(),
        &["secret", "keygen", "--output", path_str(&key)],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let recipient = run.stdout.trim().to_string();
    assert!(recipient.starts_with("age1"), "{run:?}");

    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(
        text.starts_with("# created: "),
        "{}",
        text.lines().next().unwrap()
    );
    assert!(text.contains(&format!("# public key: {recipient}\n")));
    assert!(!run.stdout.contains("AGE-SECRET-KEY") && !run.stderr.contains("AGE-SECRET-KEY"));

    let derived = tool("age-keygen", &["-y", path_str(&key)]);
    assert_eq!(String::from_utf8(derived).unwrap().trim(), recipient);

    // Never overwritten.
    let again = run_berth(
        dir.path(),
        &["secret", "keygen", "--output", path_str(&key)],
    );
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("refusing to overwrite"), "{again:?}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);

    // `recipient` agrees, from --identity and from the node config.
    let run = run_berth(
        dir.path(),
        &["secret", "recipient", "--identity", path_str(&key)],
    );
    assert_eq!(
        (run.code, run.stdout.trim()),
        (0, recipient.as_str()),
        "{run:?}"
    );
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!("[secrets]\nidentity = \"{}\"\n", key.display()),
    )
    .unwrap();
    let run = run_berth(
        dir.path(),
        &[
            "--config",
            path_str(&config),
            "secret",
            "recipient",
            "--format",
            "json",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["recipients"][0], recipient.as_str());
}

#[test]
fn secret_recipient_without_an_identity_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "").unwrap();
    let run = run_berth(
        dir.path(),
        &["--config", path_str(&config), "secret", "recipient"],
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("[secrets] identity"), "{run:?}");

    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "AGE-SECRET-KEY-1SOMETHINGSECRET\n").unwrap();
    let run = run_berth(
        dir.path(),
        &["secret", "recipient", "--identity", path_str(&bad)],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("line 1") && !run.stderr.contains("SOMETHINGSECRET"),
        "{run:?}"
    );
}

#[test]
fn secret_encrypt_output_decrypts_with_age() {
    if !have_tools(&["age", "age-keygen"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    tool("age-keygen", &["-o", path_str(&key)]);
    let recipient = String::from_utf8(tool("age-keygen", &["-y", path_str(&key)])).unwrap();
    let recipient = recipient.trim();
    let other = String::from_utf8(tool("age-keygen", &[])).unwrap();
    let other = other
        .lines()
        .find(|l| l.starts_with("# public key: "))
        .unwrap()[14..]
        .to_string();
    let plain = dir.path().join("db-password");
    std::fs::write(&plain, SECRET).unwrap();

    for armor in [false, true] {
        let out = dir.path().join(format!("db-password.{armor}.age"));
        let mut args = vec!["secret", "encrypt", "-r", recipient, "-r", &other];
        args.extend(["--output", path_str(&out), path_str(&plain)]);
        if armor {
            args.push("--armor");
        }
        let run = run_berth(dir.path(), &args);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.is_empty() && run.stderr.is_empty(), "{run:?}");
        let ct = std::fs::read(&out).unwrap();
        assert_eq!(
            ct.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----\n"),
            armor
        );
        assert_eq!(
            tool("age", &["-d", "-i", path_str(&key), path_str(&out)]),
            SECRET
        );
    }

    // From stdin to stdout.
    let mut child = berth()
        .args(["secret", "encrypt", "--armor", "-r", recipient, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(SECRET).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let ct = dir.path().join("stdin.age");
    std::fs::write(&ct, &out.stdout).unwrap();
    assert_eq!(
        tool("age", &["-d", "-i", path_str(&key), path_str(&ct)]),
        SECRET
    );
}

#[test]
fn secret_encrypt_rejects_a_bad_recipient_as_usage() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("p");
    std::fs::write(&plain, SECRET).unwrap();
    let run = run_berth(
        dir.path(),
        &["secret", "encrypt", "-r", "age1bogus", path_str(&plain)],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("invalid recipient `age1bogus`"),
        "{run:?}"
    );
    let run = run_berth(dir.path(), &["secret", "encrypt", path_str(&plain)]);
    assert_eq!(run.code, 2, "{run:?}");
}
