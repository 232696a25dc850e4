//! `berth validate [PATH] [--node NAME] [--label K=V]… [--format text|json]`: parse and
//! validate a spec tree, print every error located, exit 1 if there are any.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_spec::{Checked, NodeIdentity, check, loader};
use clap::Args;
use serde_json::json;

use super::{EXIT_FAILED, EXIT_FINDINGS, Format};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The spec tree (a directory, or one file)
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Count only the containers that target this node name
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// A node label (repeatable), for targeting
    #[arg(long = "label", value_name = "K=V", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Parses `KEY=VALUE` (the value may be empty, or hold `=`): the value parser of
/// `--label` and of `berth exec --env`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}`: expected KEY=VALUE")),
    }
}

/// The node identity given by `--node`/`--label`, if any.
pub fn node_identity(node: &Option<String>, labels: &[(String, String)]) -> Option<NodeIdentity> {
    if node.is_none() && labels.is_empty() {
        return None;
    }
    Some(NodeIdentity {
        name: node.clone(),
        labels: labels.iter().cloned().collect(),
    })
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The containers counted for the summary: all, or those targeting the node.
pub fn selected<'a>(checked: &'a Checked, node: Option<&NodeIdentity>) -> Vec<&'a str> {
    checked
        .state
        .containers
        .values()
        .filter(|c| node.is_none_or(|n| c.targets(n)))
        .map(|c| c.name.as_str())
        .collect()
}

pub fn run(args: &ValidateArgs) -> ExitCode {
    let tree = match loader::load_tree(&args.path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let node = node_identity(&args.node, &args.labels);
    let checked = check(&tree, node.as_ref());
    let containers = selected(&checked, node.as_ref());
    let st = &checked.state;
    match args.format {
        Format::Json => {
            let out = json!({
                "ok": checked.is_ok(),
                "errors": checked.errors,
                "containers": containers,
                "networks": st.networks.keys().collect::<Vec<_>>(),
                "volumes": st.volumes.keys().collect::<Vec<_>>(),
                "secrets": st.secrets.keys().collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Text => {
            for e in &checked.errors {
                println!("{e}");
            }
            if checked.is_ok() {
                println!(
                    "ok: {}, {}, {}, {} in {}",
                    plural(containers.len(), "container"),
                    plural(st.networks.len(), "network"),
                    plural(st.volumes.len(), "volume"),
                    plural(st.secrets.len(), "secret"),
                    plural(st.files.len(), "file"),
                );
                if node.is_some() {
                    for c in &containers {
                        println!("  container {c}");
                    }
                }
            } else {
                let files: std::collections::BTreeSet<&str> =
                    checked.errors.iter().map(|e| e.file.as_str()).collect();
                eprintln!(
                    "{} in {}",
                    plural(checked.errors.len(), "error"),
                    plural(files.len(), "file")
                );
            }
        }
    }
    if checked.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_pairs() {
        let kv = |k: &str, v: &str| Ok((k.to_string(), v.to_string()));
        assert_eq!(parse_key_value("zone=eu-1"), kv("zone", "eu-1"));
        assert_eq!(parse_key_value("EMPTY="), kv("EMPTY", ""));
        assert_eq!(parse_key_value("URL=a=b"), kv("URL", "a=b"));
        for bad in ["=v", "novalue", ""] {
            assert_eq!(
                parse_key_value(bad),
                Err(format!("`{bad}`: expected KEY=VALUE"))
            );
        }
    }
}
