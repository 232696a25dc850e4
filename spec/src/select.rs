//! Node targeting: which containers a node runs.
//!
//! `nodes = { names = [globs], labels = {k = v} }`: any name glob matches AND all labels
//! match; either may be omitted; no `nodes` key means every node.

use std::collections::BTreeMap;

use crate::model::{Container, NodeSelector};

/// The identity a node is matched by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIdentity {
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl NodeSelector {
    /// Whether this selector picks the node.
    pub fn matches(&self, node: &NodeIdentity) -> bool {
        let name_ok = self.names.is_empty()
            || node.name.as_deref().is_some_and(|n| {
                self.names
                    .iter()
                    .any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches(n)))
            });
        let labels_ok = self
            .labels
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v));
        name_ok && labels_ok
    }
}

impl Container {
    /// Whether the container targets the node.
    pub fn targets(&self, node: &NodeIdentity) -> bool {
        self.nodes.as_ref().is_none_or(|s| s.matches(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)]) -> NodeIdentity {
        NodeIdentity {
            name: Some(name.to_string()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn names_any_and_labels_all() {
        let s = NodeSelector {
            names: vec!["edge-*".into(), "lab-1".into()],
            labels: [("site".to_string(), "berlin".to_string())].into(),
        };
        assert!(s.matches(&node("edge-042", &[("site", "berlin"), ("arch", "arm64")])));
        assert!(s.matches(&node("lab-1", &[("site", "berlin")])));
        assert!(!s.matches(&node("edge-042", &[("site", "paris")])));
        assert!(!s.matches(&node("core-1", &[("site", "berlin")])));
        let labels_only = NodeSelector {
            names: vec![],
            labels: [("arch".to_string(), "arm64".to_string())].into(),
        };
        assert!(labels_only.matches(&node("anything", &[("arch", "arm64")])));
        assert!(!labels_only.matches(&node("anything", &[])));
        assert!(NodeSelector::default().matches(&NodeIdentity::default()));
    }
}
