use std::collections::BTreeMap;

use super::record::chains;
use super::*;
use crate::source::applied::RevisionInfo;

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

/// A chain of `commit` running `digest`, checked at `at`.
fn chain(commit: &str, signer: CommitLink, digest: &str, image: ImageLink, at: &str) -> Chain {
    Chain {
        commit: Some(commit.into()),
        tag_object: None,
        commit_signer: signer,
        digest: digest.into(),
        image_signature: image,
        checked_at: Some(at.into()),
    }
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
    let c = Chain::unrecorded(None, "sha256:aa".into());
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
    let running = map(&[
        ("db", "sha256:old"),
        ("web", "sha256:new"),
        ("api", "sha256:new"),
    ]);
    let mut checked = Vec::new();
    let out = chains(
        &before,
        &containers,
        &running,
        &info("c1", None),
        "2026-12-04T10:00:05Z",
        &mut |d| {
            checked.push(d.to_string());
            ImageLink::NotRequired
        },
    );
    assert_eq!(out["db"], old);
    assert_eq!(out["web"].commit.as_deref(), Some("c1"));
    assert_eq!(out["web"].commit_signer, CommitLink::NotRequired);
    assert_eq!(out["api"].digest, "sha256:new");
    assert!(!out.contains_key("gone"));
    assert_eq!(checked, vec!["sha256:new".to_string()], "each image once");
}

#[test]
fn a_recorded_chain_is_shown_only_for_what_still_runs() {
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
    assert_eq!(
        chain_of(Some(&applied), "web", "sha256:aa".into()),
        recorded
    );
    // Another digest runs than the one recorded: the record does not describe it.
    let other = chain_of(Some(&applied), "web", "sha256:bb".into());
    assert_eq!(other.commit_signer, CommitLink::NotRecorded);
    assert_eq!(
        chain_of(None, "web", "sha256:aa".into()).commit_signer,
        CommitLink::AppliedFromDirectory
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
    let v = verify(state.path(), &cfg, Err("no clone"), &vouched);
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
    let v = verify(state.path(), &cfg, Err("no clone"), &never);
    assert!(v.flags.is_empty(), "{v:?}");
    assert_eq!(
        (v.commit_signer.as_str(), v.image_signature.as_str()),
        ("not required now", "not required now")
    );
    let dir = verify(
        state.path(),
        &cfg,
        Err("no clone"),
        &Chain::unrecorded(None, "sha256:aa".into()),
    );
    assert!(dir.flags.is_empty(), "{dir:?}");
    assert_eq!(
        dir.commit_signer,
        "applied from a directory (no commit to check)"
    );
}
