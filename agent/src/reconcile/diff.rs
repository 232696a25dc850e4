//! Words for "why is this container replaced": the fields that differ between the spec
//! an instance was created from (its `state.json`) and the desired one.
//!
//! The spec hash decides *whether* to replace; this only explains it. Both sides are the
//! `Container`'s serde JSON, compared key by key; maps (`env`, `labels`, …) are compared
//! entry by entry so a reason can say `env LOG_LEVEL changed`. Values are never printed:
//! an env value may be a secret. When no field differs, something the hash also covers
//! changed (a referenced network, volume, secret or seccomp profile).

use std::collections::BTreeSet;

use serde_json::Value;

/// How many changes a reason names before "and N more".
const MAX_NAMED: usize = 4;

/// Keys whose value is a map compared entry by entry.
const MAP_KEYS: &[&str] = &["env", "labels", "sysctls", "ulimits", "resources"];

/// The reason an instance created from `old` (spec JSON, image digest) is replaced by
/// one of `new`. `referenced` names changes outside the spec the caller knows of (a
/// network's subnet); they replace the generic fallback.
pub fn describe(
    old: Option<&Value>,
    old_digest: Option<&str>,
    new: &Value,
    new_digest: &str,
    referenced: &[String],
) -> String {
    let mut changes = Vec::new();
    if old_digest.is_some_and(|d| d != new_digest) {
        changes.push(format!(
            "image digest changed ({} → {})",
            short_digest(old_digest.unwrap_or_default()),
            short_digest(new_digest)
        ));
    }
    match (old, new) {
        (Some(Value::Object(o)), Value::Object(n)) => {
            let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
            for key in keys {
                let (a, b) = (o.get(key.as_str()), n.get(key.as_str()));
                if a == b || (key == "image" && same_image_name(a, b)) {
                    continue;
                }
                match (a, b) {
                    (Some(Value::Object(a)), Some(Value::Object(b)))
                        if MAP_KEYS.contains(&key.as_str()) =>
                    {
                        map_changes(key, a, b, &mut changes)
                    }
                    (None, _) => changes.push(format!("{key} added")),
                    (_, None) => changes.push(format!("{key} removed")),
                    _ => changes.push(format!("{key} changed")),
                }
            }
            changes.extend(referenced.iter().cloned());
            if changes.is_empty() {
                changes.push(
                    "spec hash changed (a referenced network, volume, secret or seccomp profile)"
                        .into(),
                );
            }
        }
        _ if changes.is_empty() && referenced.is_empty() => {
            changes.push("spec hash changed".into())
        }
        _ if changes.is_empty() => changes.extend(referenced.iter().cloned()),
        _ => {}
    }
    join(changes)
}

fn map_changes(
    key: &str,
    a: &serde_json::Map<String, Value>,
    b: &serde_json::Map<String, Value>,
    out: &mut Vec<String>,
) {
    let entries: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for e in entries {
        let sep = if key == "resources" { "." } else { " " };
        match (a.get(e.as_str()), b.get(e.as_str())) {
            (x, y) if x == y => {}
            (None | Some(Value::Null), Some(_)) => out.push(format!("{key}{sep}{e} added")),
            (Some(_), None | Some(Value::Null)) => out.push(format!("{key}{sep}{e} removed")),
            _ => out.push(format!("{key}{sep}{e} changed")),
        }
    }
}

/// Whether two image references differ only in their digest (reported on its own).
fn same_image_name(a: Option<&Value>, b: Option<&Value>) -> bool {
    let name = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(|s| s.split('@').next().unwrap_or(s).to_string())
    };
    name(a).is_some() && name(a) == name(b)
}

/// `sha256:` and the first 12 hex digits, as `docker images` shows them.
pub fn short_digest(d: &str) -> String {
    match d.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", &hex[..hex.len().min(12)]),
        None => d.to_string(),
    }
}

fn join(mut changes: Vec<String>) -> String {
    if changes.len() > MAX_NAMED {
        let more = changes.len() - (MAX_NAMED - 1);
        changes.truncate(MAX_NAMED - 1);
        changes.push(format!("and {more} more"));
    }
    changes.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn spec(env: Value, image: &str) -> Value {
        json!({ "name": "web", "image": image, "env": env, "ports": [], "resources": { "memory": null } })
    }

    #[test]
    fn names_env_keys_never_values() {
        let old = spec(json!({"LOG_LEVEL": "info", "GONE": "x"}), "r/web");
        let new = spec(json!({"LOG_LEVEL": "debug", "NEW": "y"}), "r/web");
        assert_eq!(
            describe(Some(&old), Some(D1), &new, D1, &[]),
            "env GONE removed, env LOG_LEVEL changed, env NEW added"
        );
    }

    #[test]
    fn a_digest_change_is_named_once() {
        let old = spec(json!({}), &format!("r/web@{D1}"));
        let new = spec(json!({}), &format!("r/web@{D2}"));
        assert_eq!(
            describe(Some(&old), Some(D1), &new, D2, &[]),
            "image digest changed (sha256:111111111111 → sha256:222222222222)"
        );
        let moved = spec(json!({}), &format!("r/other@{D2}"));
        assert_eq!(
            describe(Some(&old), Some(D1), &moved, D2, &[]),
            "image digest changed (sha256:111111111111 → sha256:222222222222), image changed"
        );
    }

    #[test]
    fn nested_resources_and_many_changes() {
        let old =
            json!({"resources": {"memory": null, "pids": 10}, "a": 1, "b": 1, "c": 1, "d": 1});
        let new = json!({"resources": {"memory": 5, "pids": 10}, "a": 2, "b": 2, "c": 2, "d": 2});
        assert_eq!(
            describe(Some(&old), None, &new, D1, &[]),
            "a changed, b changed, c changed, and 2 more"
        );
        let old = json!({"resources": {"memory": 4}});
        let new = json!({"resources": {"memory": 5}});
        assert_eq!(
            describe(Some(&old), None, &new, D1, &[]),
            "resources.memory changed"
        );
    }

    #[test]
    fn falls_back_to_the_hash() {
        let s = spec(json!({}), "r/web");
        assert_eq!(describe(None, None, &s, D1, &[]), "spec hash changed");
        let net = ["network front subnet changed".to_string()];
        assert_eq!(describe(Some(&s), Some(D1), &s, D1, &net), net[0]);
        assert!(
            describe(Some(&s), Some(D1), &s, D1, &[])
                .starts_with("spec hash changed (a referenced")
        );
    }
}
