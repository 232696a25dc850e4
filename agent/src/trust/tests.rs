use std::collections::BTreeMap;

use super::record::{ImageCheck, Wanted, chains};
use super::verify::{CommitCheck, commit_verdict, image_verdict, same_voucher};
use super::*;
use crate::source::applied::RevisionInfo;
use berth_policy::report::FlagLevel;

fn signer() -> Signer {
    Signer {
        principal: "ops@example.com".into(),
        key: "SHA256:abc".into(),
        object: "commit".into(),
        kind: "ssh".into(),
        primary_key: None,
    }
}

fn info(commit: &str, signer: Option<Signer>) -> RevisionInfo {
    RevisionInfo {
        commit: commit.into(),
        url: "file:///repo".into(),
        follows: "branch main".into(),
        path: "fleet".into(),
        author: "Ops <ops@example.com>".into(),
        time: "2026-12-04T10:00:00Z".into(),
        subject: "web".into(),
        signer,
        tag_object: None,
    }
}

fn key() -> Voucher {
    Voucher::Key {
        name: "/etc/berth/keys/release.pub".into(),
        fingerprint: "sha256:0f0f".into(),
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The instance `web-<hash>` running `digest`.
fn running(hash: &str, digest: &str) -> Running {
    Running {
        instance: format!("web-{hash}"),
        spec_hash: hash.into(),
        digest: digest.into(),
    }
}

/// A chain of `commit` running `digest` (spec hash `h1`), checked at `at`.
fn chain(commit: &str, signer: CommitLink, digest: &str, image: ImageLink, at: &str) -> Chain {
    Chain {
        commit: Some(commit.into()),
        tag_object: None,
        commit_signer: signer,
        digest: digest.into(),
        image_signature: image,
        instance: Some("web-h1".into()),
        spec_hash: Some("h1".into()),
        checked_at: Some(at.into()),
    }
}

/// A `[source]` without signer keys.
fn source_section() -> berth_spec::node::SourceSection {
    let cfg = berth_spec::node::NodeConfig::parse(
        "node.toml",
        "[source]\nurl = \"https://git.example.com/fleet.git\"\n",
    )
    .expect("config");
    cfg.source.expect("source")
}

fn verified() -> ImageLink {
    ImageLink::Verified {
        vouchers: vec![key()],
    }
}

#[test]
fn links_the_node_does_not_require_read_not_required() {
    let c = chain(
        "c1",
        CommitLink::NotRequired,
        "sha256:aa",
        ImageLink::NotRequired,
        "2026-12-04T10:00:05Z",
    );
    let words: BTreeMap<&str, String> = c.words().into_iter().collect();
    assert_eq!(
        words["signer"],
        "not required (no source.allowed_signers or trusted_pgp_keys)"
    );
    assert_eq!(
        words["image signer"],
        "not required (no policy.trusted_keys or trusted_identities)"
    );
    assert_eq!(words["checked"], "2026-12-04T10:00:05Z");
    assert_eq!(c.words().len(), 5, "every link is shown");
    let json = serde_json::to_value(&c).expect("json");
    assert_eq!(json["commit_signer"]["status"], "not-required");
    assert_eq!(json["image_signature"]["status"], "not-required");
}

#[test]
fn a_container_applied_from_a_directory_says_so() {
    let c = Chain::unrecorded(None, &running("h1", "sha256:aa"));
    let words: BTreeMap<&str, String> = c.words().into_iter().collect();
    assert_eq!(words["commit"], "none (applied from a directory)");
    assert_eq!(words["signer"], "none (applied from a directory)");
    assert!(
        words["image signer"].starts_with("not recorded"),
        "{words:?}"
    );
    let json = serde_json::to_value(&c).expect("json");
    assert_eq!(json["commit_signer"]["status"], "applied-from-directory");
}

#[test]
fn a_verified_chain_round_trips_and_names_its_signers() {
    let c = chain(
        "c1",
        CommitLink::Verified(signer()),
        "sha256:aa",
        verified(),
        "2026-12-04T10:00:05Z",
    );
    let json = serde_json::to_string(&c).expect("json");
    assert_eq!(serde_json::from_str::<Chain>(&json).expect("back"), c);
    let words: BTreeMap<&str, String> = c.words().into_iter().collect();
    assert_eq!(
        words["signer"],
        "ops@example.com (SHA256:abc, commit signature)"
    );
    assert_eq!(
        words["image signer"],
        "key /etc/berth/keys/release.pub (sha256:0f0f)"
    );
}

#[test]
fn new_chains_for_the_revision_and_the_last_known_good_keeps_its_own() {
    let old = chain(
        "c0",
        CommitLink::Verified(signer()),
        "sha256:old",
        verified(),
        "2026-12-03T00:00:00Z",
    );
    let before = BTreeMap::from([("db".to_string(), old.clone()), ("web".into(), old.clone())]);
    // db stays on c0 (its update was blocked); web runs c1 now; api is new; gone is
    // recorded but not running.
    let containers = map(&[("db", "c0"), ("web", "c1"), ("api", "c1"), ("gone", "c1")]);
    let run = BTreeMap::from([
        ("db".to_string(), running("h1", "sha256:old")),
        ("web".to_string(), running("h2", "sha256:new")),
        ("api".to_string(), running("h3", "sha256:new")),
    ]);
    let desired = map(&[("db", "h9"), ("web", "h2"), ("api", "h3")]);
    let mut checked = Vec::new();
    let out = chains(
        &before,
        &containers,
        &run,
        &Wanted {
            commit: "c1",
            tag_object: None,
            signer: &CommitLink::NotRequired,
            desired: &desired,
        },
        "2026-12-04T10:00:05Z",
        &mut |d| {
            checked.push(d.to_string());
            ImageLink::NotRequired
        },
    );
    assert_eq!(out["db"], old);
    assert_eq!(out["web"].commit.as_deref(), Some("c1"));
    assert_eq!(out["web"].commit_signer, CommitLink::NotRequired);
    assert_eq!(out["web"].spec_hash.as_deref(), Some("h2"));
    assert_eq!(out["api"].digest, "sha256:new");
    assert!(!out.contains_key("gone"));
    assert_eq!(checked, vec!["sha256:new".to_string()], "each image once");
}

/// Finding: a container left unchanged was never vouched for again, so a rotated
/// key, a record written before chains or a failed image link stayed as it was.
#[test]
fn an_unchanged_container_at_the_revision_is_vouched_for_anew() {
    let stale = chain(
        "c1",
        CommitLink::Verified(signer()),
        "sha256:aa",
        ImageLink::failed("no key verified it"),
        "2026-12-03T00:00:00Z",
    );
    let before = BTreeMap::from([("web".to_string(), stale)]);
    let out = chains(
        &before,
        &map(&[("web", "c1")]),
        &BTreeMap::from([("web".to_string(), running("h1", "sha256:aa"))]),
        &Wanted {
            commit: "c1",
            tag_object: None,
            signer: &CommitLink::Verified(signer()),
            desired: &map(&[("web", "h1")]),
        },
        "2026-12-04T10:00:05Z",
        &mut |_| verified(),
    );
    assert_eq!(out["web"].image_signature, verified());
    assert_eq!(
        out["web"].checked_at.as_deref(),
        Some("2026-12-04T10:00:05Z")
    );
}

/// Finding: a chain was tied to (commit, digest) only. An instance the pass did not
/// want (another writer replaced it after the pass) gets no chain; one recorded for
/// another instance of the same commit and digest is not kept.
#[test]
fn a_chain_is_made_and_kept_only_for_the_instance_it_describes() {
    let recorded = chain(
        "c1",
        CommitLink::Verified(signer()),
        "sha256:aa",
        verified(),
        "t",
    );
    let before = BTreeMap::from([("web".to_string(), recorded)]);
    let other = BTreeMap::from([("web".to_string(), running("h2", "sha256:aa"))]);
    let out = chains(
        &before,
        &map(&[("web", "c1")]),
        &other,
        &Wanted {
            commit: "c2",
            tag_object: None,
            signer: &CommitLink::NotRequired,
            desired: &map(&[("web", "h3")]),
        },
        "t2",
        &mut |_| ImageLink::NotRequired,
    );
    assert!(out.is_empty(), "{out:?}");
    let out = chains(
        &BTreeMap::new(),
        &map(&[("web", "c2")]),
        &other,
        &Wanted {
            commit: "c2",
            tag_object: None,
            signer: &CommitLink::NotRequired,
            desired: &map(&[("web", "h3")]),
        },
        "t2",
        &mut |_| ImageLink::NotRequired,
    );
    assert!(out.is_empty(), "the pass wanted h3, h2 runs: {out:?}");
}

#[test]
fn a_recorded_chain_is_shown_only_for_the_instance_it_describes() {
    let recorded = chain(
        "c1",
        CommitLink::Verified(signer()),
        "sha256:aa",
        ImageLink::NotRequired,
        "t",
    );
    let applied = Applied {
        schema_version: crate::source::applied::SCHEMA_VERSION,
        revision: info("c1", Some(signer())),
        applied_at: "t".into(),
        applied: true,
        containers: map(&[("web", "c1")]),
        chains: BTreeMap::from([("web".to_string(), recorded.clone())]),
    };
    let ok = Ok(Some(&applied));
    assert_eq!(chain_of(ok, "web", &running("h1", "sha256:aa")), recorded);
    // Another digest runs than the one recorded: the record does not describe it.
    let other = chain_of(ok, "web", &running("h1", "sha256:bb"));
    assert!(
        matches!(other.commit_signer, CommitLink::Unknown { .. }),
        "{other:?}"
    );
    // Another instance of the same commit and digest (a pass not recorded yet).
    let other = chain_of(ok, "web", &running("h2", "sha256:aa"));
    assert_eq!(other.commit, None);
    let words: BTreeMap<&str, String> = other.words().into_iter().collect();
    assert!(
        words["commit"].starts_with(
            "not known (the chain recorded is of instance web-h1, not of the running web-h2"
        ),
        "{words:?}"
    );
    assert_eq!(
        chain_of(Ok(None), "web", &running("h1", "sha256:aa")).commit_signer,
        CommitLink::AppliedFromDirectory
    );
}

/// Finding: an unreadable `applied.json` made every container read "applied from a
/// directory", and `--verify` pass.
#[test]
fn an_unreadable_record_is_not_known_and_cannot_be_checked() {
    let why = "state/applied.json: expected value at line 1 column 1".to_string();
    let c = chain_of(Err(&why), "web", &running("h1", "sha256:aa"));
    assert!(
        matches!(&c.commit_signer, CommitLink::Unknown { reason } if reason.contains("expected value")),
        "{c:?}"
    );
    let words: BTreeMap<&str, String> = c.words().into_iter().collect();
    assert!(!words["commit"].contains(FROM_DIRECTORY), "{words:?}");
    let mut flags = Vec::new();
    let w = commit_verdict(&c, CommitCheck::NotRequired, &mut flags);
    assert_eq!(w, "cannot be checked");
    assert_eq!(flags[0].level, FlagLevel::CannotCheck, "{flags:?}");
}

#[test]
fn the_unreadable_record_reaches_every_running_container() {
    let state = tempfile::tempdir().expect("tempdir");
    let dir = state.path().join("state");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("applied.json"), "{not json").expect("write");
    let applied = Applied::load(state.path()).map_err(|e| crate::util::error_chain(&e));
    assert!(applied.is_err(), "a corrupt record is an error");
    // A FIFO in its place is refused without blocking on it.
    std::fs::remove_file(dir.join("applied.json")).expect("rm");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("applied.json"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    let err = Applied::load(state.path()).expect_err("a fifo");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    // And one over the cap.
    std::fs::remove_file(dir.join("applied.json")).expect("rm");
    std::fs::write(dir.join("applied.json"), vec![b' '; 4 * 1024 * 1024 + 1]).expect("write");
    let err = Applied::load(state.path()).expect_err("too big");
    assert!(err.to_string().contains("larger than"), "{err}");
}

/// Finding: a container applied from a directory on a node that requires signed
/// commits was not flagged.
#[test]
fn a_directory_container_on_a_node_requiring_signed_commits_is_flagged() {
    let c = Chain::unrecorded(None, &running("h1", "sha256:aa"));
    let mut flags = Vec::new();
    let w = commit_verdict(&c, CommitCheck::Refused("no commit".into()), &mut flags);
    assert_eq!(w, "not vouched for: applied from a directory");
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0].level, FlagLevel::Error);
    assert!(
        flags[0].message.contains("requires signed commits"),
        "{flags:?}"
    );
    let mut flags = Vec::new();
    commit_verdict(&c, CommitCheck::NotRequired, &mut flags);
    assert!(flags.is_empty(), "not required: {flags:?}");
}

/// Finding: a check that could not run (a key file, the clone, a commit a shallow
/// clone lacks) was a flag (exit 1) rather than "cannot check" (exit 3).
#[test]
fn a_commit_check_that_cannot_run_is_not_a_flag() {
    let c = chain(
        "0123456789abcdef0123456789abcdef01234567",
        CommitLink::Verified(signer()),
        "sha256:aa",
        verified(),
        "t",
    );
    let mut flags = Vec::new();
    let w = commit_verdict(
        &c,
        CommitCheck::CannotCheck("the clone cannot be read".into()),
        &mut flags,
    );
    assert_eq!(w, "cannot be checked");
    assert_eq!(flags[0].level, FlagLevel::CannotCheck);

    // The real check: a commit the clone does not hold, and a key file that cannot
    // be read.
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = git2::Repository::init_bare(dir.path().join("repo.git")).expect("init");
    let mut cfg = berth_spec::node::NodeConfig::default();
    let mut section = source_section();
    section.allowed_signers = Some(dir.path().join("allowed_signers"));
    std::fs::write(
        dir.path().join("allowed_signers"),
        "ops@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHBuQ2j8hgg47GQH+hHskf2F9yMzkstg3HhEPKMSr3Aa\n",
    )
    .expect("write");
    cfg.source = Some(section.clone());
    let v = super::verify::verify(dir.path(), &cfg, Ok(&repo), &c, &mut BTreeMap::new());
    let commit = &v.flags[0];
    assert_eq!(commit.level, FlagLevel::CannotCheck, "{v:?}");
    assert!(commit.message.contains("`source.depth = 0`"), "{v:?}");
    section.allowed_signers = Some(dir.path().join("missing"));
    cfg.source = Some(section);
    let v = super::verify::verify(dir.path(), &cfg, Ok(&repo), &c, &mut BTreeMap::new());
    assert_eq!(v.flags[0].level, FlagLevel::CannotCheck, "{v:?}");
    assert!(v.flags[0].message.contains("missing"), "{v:?}");
}

/// Finding: a link never vouched for (an audit-mode failure recorded) was said to be
/// "no longer vouched for", and a voucher now was "still" one.
#[test]
fn a_link_never_vouched_for_is_a_warning_and_never_still() {
    let audit_mode = chain(
        "c1",
        CommitLink::NotRequired,
        "sha256:aa",
        ImageLink::failed("no signature"),
        "t",
    );
    let mut flags = Vec::new();
    let w = image_verdict(
        &audit_mode,
        ImageCheck::Link(ImageLink::failed("no signature")),
        &mut flags,
    );
    assert_eq!(w, "never vouched for: no signature");
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0].level, FlagLevel::Warning);
    assert!(flags[0].message.contains("never vouched for"), "{flags:?}");
    let mut flags = Vec::new();
    let w = image_verdict(&audit_mode, ImageCheck::Link(verified()), &mut flags);
    assert!(w.starts_with("vouched for by key"), "{w}");
    assert!(!w.contains("still"), "{w}");
    assert!(flags.is_empty());
    let mut flags = Vec::new();
    let w = commit_verdict(&audit_mode, CommitCheck::Verified(signer()), &mut flags);
    assert!(w.starts_with("signed by ops@example.com"), "{w}");
    let w = commit_verdict(
        &audit_mode,
        CommitCheck::Refused("unsigned".into()),
        &mut flags,
    );
    assert_eq!(w, "never vouched for: unsigned");
    assert_eq!(flags[0].level, FlagLevel::Warning);
}

/// Finding: keys were compared by path: a renamed key file read as a removed key, and
/// another key at the same path as the same one.
#[test]
fn keys_are_compared_by_fingerprint() {
    let c = chain("c1", CommitLink::NotRequired, "sha256:aa", verified(), "t");
    let moved = ImageLink::Verified {
        vouchers: vec![Voucher::Key {
            name: "/etc/berth/keys/renamed.pub".into(),
            fingerprint: "sha256:0f0f".into(),
        }],
    };
    let mut flags = Vec::new();
    let w = image_verdict(&c, ImageCheck::Link(moved), &mut flags);
    assert!(!w.contains("no longer"), "{w}");
    let other = Voucher::Key {
        name: "/etc/berth/keys/release.pub".into(),
        fingerprint: "sha256:1e1e".into(),
    };
    assert!(!same_voucher(&key(), &other));
    let w = image_verdict(
        &c,
        ImageCheck::Link(ImageLink::Verified {
            vouchers: vec![other],
        }),
        &mut flags,
    );
    assert!(
        w.ends_with("no longer by key /etc/berth/keys/release.pub (sha256:0f0f)"),
        "{w}"
    );
    // A key a rotation took away is flagged, as a warning since another still vouches,
    // so that SARIF and JUnit show it too; the renamed key above was not.
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0].level, FlagLevel::Warning);
    assert_eq!(
        flags[0].gone,
        ["key /etc/berth/keys/release.pub (sha256:0f0f)"]
    );
}

/// Finding: `--verify` said "not found in the registry" when it checked the local
/// image store only.
#[test]
fn the_image_check_says_it_reads_the_local_store() {
    let state = tempfile::tempdir().expect("tempdir");
    let key = state.path().join("release.pub");
    let pem = crate::image::signature::SigningKey::generate("release")
        .and_then(|k| k.public_key())
        .and_then(|k| k.to_pem())
        .expect("key");
    std::fs::write(&key, pem).expect("write");
    let policy = berth_spec::node::PolicySection {
        trusted_keys: vec![key],
        ..Default::default()
    };
    let store = crate::image::store::Store::open(state.path()).expect("store");
    match super::record::image_check(state.path(), &policy, "sha256:aa") {
        ImageCheck::CannotCheck(why) => {
            assert!(why.contains("not in the local image store"), "{why}");
            assert!(why.contains("the registry is not asked"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // In the store, with no signature kept.
    let blob = |data: &[u8]| {
        let d = crate::image::digest::Digest::of(data);
        store
            .write_blob(
                &d,
                data,
                &crate::image::registry::Target::new("r", "a", d.as_str()),
            )
            .expect("blob");
        crate::image::store::records::BlobRef {
            digest: d,
            size: data.len() as u64,
            media_type: "x".into(),
        }
    };
    let record = crate::image::store::records::sample(
        "r/a:1",
        blob(b"image manifest"),
        blob(b"image config"),
        vec![],
    );
    store.put_record(&record).expect("record");
    let digest = record.digest.as_str().to_string();
    match super::record::image_check(state.path(), &policy, &digest) {
        ImageCheck::Link(ImageLink::Failed { reason }) => {
            assert!(
                reason.starts_with(&format!(
                    "the local image store keeps no signature for image {digest}"
                )),
                "{reason}"
            );
            assert!(!reason.contains("found in the registry"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failure_reason_is_capped() {
    let long = "é".repeat(2000);
    let ImageLink::Failed { reason } = ImageLink::failed(&long) else {
        panic!("failed");
    };
    assert!(reason.len() <= MAX_REASON + 40, "{}", reason.len());
    assert!(reason.ends_with("(cut at 1024 bytes)"));
    assert_eq!(
        ImageLink::failed("short"),
        ImageLink::Failed {
            reason: "short".into()
        }
    );
}

/// Finding: a signer recorded for a revision applied again when the node no longer
/// requires signatures (a fallback, a node without `[source]`) read as verified now.
#[test]
fn a_stale_signer_is_not_required_when_the_node_requires_none() {
    let mut section = source_section();
    assert_eq!(
        super::record::commit_link(Some(&section), Some(&signer())),
        CommitLink::NotRequired
    );
    assert_eq!(
        super::record::commit_link(None, Some(&signer())),
        CommitLink::NotRequired
    );
    section.allowed_signers = Some("/etc/berth/allowed_signers".into());
    assert_eq!(
        super::record::commit_link(Some(&section), Some(&signer())),
        CommitLink::Verified(signer())
    );
}

#[test]
fn the_status_line_is_one_line_per_container() {
    let c = chain(
        "0123456789abcdef0123456789abcdef01234567",
        CommitLink::Verified(signer()),
        "sha256:aaaaaaaaaaaaaaaaaaaaaaaa",
        verified(),
        "t",
    );
    let text = text(&shown(BTreeMap::from([("web".to_string(), c)])));
    assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 2, "{text}");
    assert!(
        text.contains("  web: commit 0123456789ab signed by ops@example.com; image sha256:aaaaaaaaaaaa signed by /etc/berth/keys/release.pub"),
        "{text}"
    );
}

/// `--verify` on a node that trusts nothing now: what was vouched for is flagged per
/// link, naming who is gone; what was never required is not.
#[test]
fn verify_flags_what_a_removed_key_no_longer_vouches_for() {
    use super::verify::{COMMIT_LINK, IMAGE_LINK, verify};
    let state = tempfile::tempdir().expect("tempdir");
    let cfg = berth_spec::node::NodeConfig::default();
    let vouched = chain(
        "c1",
        CommitLink::Verified(signer()),
        "sha256:aa",
        verified(),
        "t",
    );
    let v = verify(
        state.path(),
        &cfg,
        Err("no clone"),
        &vouched,
        &mut BTreeMap::new(),
    );
    let links: Vec<&str> = v.flags.iter().map(|f| f.link).collect();
    assert_eq!(links, vec![COMMIT_LINK, IMAGE_LINK], "{v:?}");
    assert_eq!(
        v.flags[0].gone,
        vec!["ops@example.com (SHA256:abc, commit signature)".to_string()]
    );
    assert_eq!(
        v.flags[1].gone,
        vec!["key /etc/berth/keys/release.pub (sha256:0f0f)".to_string()]
    );
    assert!(
        v.flags[1]
            .message
            .contains("no longer vouches for image sha256:aa"),
        "{v:?}"
    );

    let never = chain(
        "c1",
        CommitLink::NotRequired,
        "sha256:aa",
        ImageLink::NotRequired,
        "t",
    );
    let v = verify(
        state.path(),
        &cfg,
        Err("no clone"),
        &never,
        &mut BTreeMap::new(),
    );
    assert!(v.flags.is_empty(), "{v:?}");
    assert_eq!(
        (v.commit_signer.as_str(), v.image_signature.as_str()),
        ("not required now", "not required now")
    );
    let dir = verify(
        state.path(),
        &cfg,
        Err("no clone"),
        &Chain::unrecorded(None, &running("h1", "sha256:aa")),
        &mut BTreeMap::new(),
    );
    assert!(dir.flags.is_empty(), "{dir:?}");
    assert_eq!(
        dir.commit_signer,
        "applied from a directory (no commit to check)"
    );
}
