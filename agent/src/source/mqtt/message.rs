//! The messages berth sends and takes over MQTT, as data (pure): the revision message
//! a publisher sends (`{"ref": "refs/heads/main", "commit": "<sha>"}`) and how the agent
//! judges it, and the node status the agent sends after each pass.

use std::collections::BTreeMap;

use berth_spec::node::GitRef;
use serde::{Deserialize, Serialize};

/// The largest revision message read; a bigger one is ignored.
pub const MAX_REVISION_MESSAGE: usize = 4 * 1024;

/// A revision message: a ref moved, maybe to `commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    #[serde(rename = "ref")]
    pub git_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// What the agent does with a revision message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fetch: the followed ref moved (to `commit`, when the message says).
    Fetch { commit: Option<String> },
    /// Nothing: why, for the log.
    Ignore(String),
}

/// Judges `payload` for a node following `followed`; `fetched` is the commit the
/// node fetched last, which a message naming it does not fetch again (a retained
/// message comes back at every reconnection).
pub fn judge(payload: &[u8], followed: &GitRef, fetched: Option<&str>) -> Verdict {
    if payload.len() > MAX_REVISION_MESSAGE {
        return Verdict::Ignore(format!(
            "a message of {} bytes (at most {MAX_REVISION_MESSAGE} are read)",
            payload.len()
        ));
    }
    let rev: Revision = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            return Verdict::Ignore(format!(
                "not a revision message ({{\"ref\": …, \"commit\": …}}): {e}"
            ));
        }
    };
    if let Some(c) = &rev.commit
        && !is_object_id(c)
    {
        return Verdict::Ignore(format!(
            "`commit` is not a full commit id (40 or 64 hex digits): `{}`",
            shown(c)
        ));
    }
    let about = match followed {
        GitRef::Branch(b) => rev.git_ref == format!("refs/heads/{b}") || rev.git_ref == *b,
        GitRef::Tag(t) => rev.git_ref == format!("refs/tags/{t}"),
        // A node pinned to a commit fetches nothing a message says.
        GitRef::Commit(_) => {
            return Verdict::Ignore("the node follows a pinned commit".into());
        }
    };
    if !about {
        return Verdict::Ignore(format!(
            "about `{}`, not the followed ref",
            shown(&rev.git_ref)
        ));
    }
    if let (Some(c), Some(f)) = (&rev.commit, fetched)
        && c.eq_ignore_ascii_case(f)
    {
        return Verdict::Ignore(format!("{} is the commit fetched last", short(c)));
    }
    Verdict::Fetch { commit: rev.commit }
}

/// A full SHA-1 or SHA-256 object id.
fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A short form of a commit id, for the log.
pub fn short(c: &str) -> &str {
    c.get(..12).unwrap_or(c)
}

/// `s` for a log line: at most 100 characters, control characters escaped.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(100).collect();
    let more = if cut.len() < s.len() { "…" } else { "" };
    format!("{}{more}", cut.escape_debug())
}

/// The node's status, as published on `<topic>/nodes/<node name>` after each pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// When it was made, RFC 3339 UTC.
    pub time: String,
    /// `enforce` or `observe`.
    pub mode: String,
    /// How the last pass ended: `converged`, `not-converged`, `failed`, `observed`;
    /// none before the first.
    pub result: Option<String>,
    /// The revision the last pass worked on (applied, or planned in observe mode).
    pub commit: Option<String>,
    /// The revision applied on this node.
    pub applied: Option<String>,
    pub conditions: Vec<Condition>,
    /// Containers by the state `berth ps` shows.
    pub containers: BTreeMap<String, u32>,
    /// Error-level policy findings not waived, in the last pass's judgement.
    pub violations: u32,
    /// Observe mode: how many changes `apply` would make now (0: the host matches the
    /// revision); absent when the last pass applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<u32>,
}

/// A condition, as `berth status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: bool,
    pub reason: String,
}

/// `node` as one MQTT topic level and in a client id: `/`, the wildcards `+` and `#`,
/// and control characters become `_`.
pub fn level(node: &str) -> String {
    node.chars()
        .map(|c| {
            if matches!(c, '/' | '+' | '#') || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The topic of `node`'s status below `topic` (the name as one [`level`]).
pub fn status_topic(topic: &str, node: &str) -> String {
    format!("{}/nodes/{}", topic.trim_end_matches('/'), level(node))
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "0123456789abcdef0123456789abcdef01234567";

    fn main() -> GitRef {
        GitRef::Branch("main".into())
    }

    #[test]
    fn a_message_about_the_followed_ref_fetches() {
        let m = format!(r#"{{"ref": "refs/heads/main", "commit": "{C1}"}}"#);
        assert_eq!(
            judge(m.as_bytes(), &main(), None),
            Verdict::Fetch {
                commit: Some(C1.into())
            }
        );
        assert_eq!(
            judge(br#"{"ref": "main"}"#, &main(), Some(C1)),
            Verdict::Fetch { commit: None }
        );
        let tag = GitRef::Tag("v1".into());
        assert_eq!(
            judge(br#"{"ref": "refs/tags/v1"}"#, &tag, None),
            Verdict::Fetch { commit: None }
        );
        // Unknown fields are fine (a publisher may add its own).
        assert!(matches!(
            judge(
                br#"{"ref": "refs/heads/main", "pusher": "ci"}"#,
                &main(),
                None
            ),
            Verdict::Fetch { .. }
        ));
    }

    #[test]
    fn other_refs_bad_messages_and_the_commit_fetched_last_are_ignored() {
        let ignored = |p: &[u8], r: &GitRef, f: Option<&str>, why: &str| match judge(p, r, f) {
            Verdict::Ignore(w) => assert!(w.contains(why), "{w}"),
            v => panic!("{v:?} for {}", String::from_utf8_lossy(p)),
        };
        ignored(
            br#"{"ref": "refs/heads/dev"}"#,
            &main(),
            None,
            "not the followed ref",
        );
        ignored(
            br#"{"ref": "refs/tags/main"}"#,
            &main(),
            None,
            "not the followed ref",
        );
        ignored(
            br#"{"ref": "main"}"#,
            &GitRef::Tag("main".into()),
            None,
            "not the followed",
        );
        ignored(
            br#"{"ref": "refs/heads/main"}"#,
            &GitRef::Commit(C1.into()),
            None,
            "pinned",
        );
        ignored(b"not json", &main(), None, "not a revision message");
        ignored(
            br#"{"commit": "abc"}"#,
            &main(),
            None,
            "not a revision message",
        );
        ignored(
            br#"{"ref": "refs/heads/main", "commit": "HEAD~1"}"#,
            &main(),
            None,
            "not a full commit id",
        );
        let big = format!(
            r#"{{"ref": "refs/heads/main", "x": "{}"}}"#,
            "a".repeat(5000)
        );
        ignored(big.as_bytes(), &main(), None, "at most 4096");
        let m = format!(
            r#"{{"ref": "refs/heads/main", "commit": "{}"}}"#,
            C1.to_uppercase()
        );
        ignored(m.as_bytes(), &main(), Some(C1), "fetched last");
        // A hostile ref is shown escaped and cut.
        let m = format!(r#"{{"ref": "\u001b[31m{}"}}"#, "x".repeat(500));
        match judge(m.as_bytes(), &main(), None) {
            Verdict::Ignore(w) => assert!(!w.contains('\u{1b}') && w.len() < 300, "{w}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn the_status_topic_is_below_the_revision_topic() {
        assert_eq!(
            status_topic("fleet/main", "edge-1"),
            "fleet/main/nodes/edge-1"
        );
        assert_eq!(status_topic("fleet/", "n"), "fleet/nodes/n");
        // A node name is one level, never a wildcard.
        assert_eq!(status_topic("t", "a/b+#"), "t/nodes/a_b__");
        assert_eq!(level("edge\u{0}1\n"), "edge_1_");
    }
}
