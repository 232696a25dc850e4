//! `berth network ls | inspect NAME`: the node's networks, read from the state
//! directory (so they work while the agent is down), as text or JSON.
//!
//! Hidden operator/test commands drive the same API the executor uses, one step at a
//! time: `create NAME [--subnet]`, `rm NAME`, `attach ID --container C --network N…
//! [--publish P…] [--add-host H:IP…]` and `detach ID`. They let the end-to-end tests
//! exercise real CNI plugins and namespaces without containers, and let an operator
//! clean up by hand after a crash.

use std::process::ExitCode;

use berth_spec::types::{ExtraHost, PortSpec, parse_cidr, parse_extra_host, parse_port_spec};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, Format, config};
use crate::network::exec::{DEFAULT_CNI_PATH, split_path};
use crate::network::{AttachRequest, NetworkError, NetworkInfo, Networks};
use crate::util::error_chain;

/// Inspect the node's networks.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    pub command: NetworkCommand,
    /// Where the CNI plugins are (`:`-separated)
    #[arg(long, global = true, env = "BERTH_CNI_PATH", default_value = DEFAULT_CNI_PATH, value_name = "DIRS")]
    pub cni_path: String,
    /// Output format
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// List networks: subnet, bridge, attached containers
    Ls,
    /// Show one network: subnet, gateway, bridge, attached containers and addresses
    Inspect { name: String },
    /// Create or update a network (what the agent does for `[network.*]`)
    #[command(hide = true)]
    Create {
        name: String,
        #[arg(long, value_parser = parse_cidr)]
        subnet: Option<berth_spec::types::Cidr>,
    },
    /// Remove a network with no attachments
    #[command(hide = true)]
    Rm { name: String },
    /// Give an instance a namespace attached to networks (what the agent does before start)
    #[command(hide = true)]
    Attach(AttachArgs),
    /// Detach an instance and delete its namespace
    #[command(hide = true)]
    Detach { instance_id: String },
    /// Count leaks: namespaces, records and bridge members that do not match (exit 1)
    #[command(hide = true)]
    Audit,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    pub instance_id: String,
    #[arg(long)]
    pub container: String,
    #[arg(long)]
    pub hostname: Option<String>,
    /// A network to join (repeatable, in order)
    #[arg(long = "network", required = true)]
    pub networks: Vec<String>,
    /// `[host_ip:]host_port:container_port[/proto]` (repeatable)
    #[arg(long = "publish", value_parser = parse_port_spec)]
    pub ports: Vec<PortSpec>,
    /// `name:ip` (repeatable)
    #[arg(long = "add-host", value_parser = parse_extra_host)]
    pub extra_hosts: Vec<ExtraHost>,
}

pub fn run(cli: &Cli, args: &NetworkArgs) -> ExitCode {
    let loaded = match config::load_or_report(cli) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let rt = &loaded.config.runtime;
    let nets = Networks::new(
        &rt.state_dir,
        &rt.run_dir,
        rt.default_subnet,
        split_path(&args.cni_path),
    );
    match dispatch(&nets, args) {
        Ok((out, clean)) => {
            print!("{out}");
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FINDINGS)
            }
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(match e {
                NetworkError::NotFound(_) | NetworkError::InUse { .. } => EXIT_FINDINGS,
                _ => EXIT_FAILED,
            })
        }
    }
}

fn dispatch(nets: &Networks, args: &NetworkArgs) -> Result<(String, bool), NetworkError> {
    if let NetworkCommand::Audit = args.command {
        let report = nets.audit()?;
        let text = if args.format == Format::Json {
            pretty(&serde_json::to_value(&report).unwrap_or_default())
        } else if report.is_clean() {
            "no leaks\n".to_string()
        } else {
            format!("{report:?}\n")
        };
        return Ok((text, report.is_clean()));
    }
    command(nets, args).map(|text| (text, true))
}

fn command(nets: &Networks, args: &NetworkArgs) -> Result<String, NetworkError> {
    let json = args.format == Format::Json;
    Ok(match &args.command {
        NetworkCommand::Ls => {
            let list = nets.list()?;
            if json {
                pretty(&Value::Array(list.iter().map(to_json).collect()))
            } else {
                ls_text(&list)
            }
        }
        NetworkCommand::Inspect { name } | NetworkCommand::Create { name, .. } => {
            let info = match &args.command {
                NetworkCommand::Create { subnet, .. } => nets.ensure_network(name, *subnet)?,
                _ => nets.inspect(name)?,
            };
            if json {
                pretty(&to_json(&info))
            } else {
                inspect_text(&info)
            }
        }
        NetworkCommand::Rm { name } => {
            let existed = nets.remove_network(name)?;
            if json {
                pretty(&json!({"kind": "network", "name": name, "removed": existed}))
            } else if existed {
                format!("removed network {name}\n")
            } else {
                format!("network {name} was not there\n")
            }
        }
        NetworkCommand::Attach(a) => {
            let req = AttachRequest {
                instance_id: &a.instance_id,
                container: &a.container,
                hostname: a.hostname.as_deref().unwrap_or(&a.container),
                networks: &a.networks,
                ports: &a.ports,
                extra_hosts: &a.extra_hosts,
            };
            let att = nets.attach(&req)?;
            if json {
                pretty(&serde_json::to_value(&att).unwrap_or_default())
            } else {
                let mut s = format!("netns {}\n", att.netns_path.display());
                for (n, ip) in &att.addresses {
                    s.push_str(&format!("{n} {ip}\n"));
                }
                s
            }
        }
        NetworkCommand::Audit => String::new(),
        NetworkCommand::Detach { instance_id } => {
            nets.detach(instance_id)?;
            if json {
                pretty(&json!({"instance_id": instance_id, "detached": true}))
            } else {
                format!("detached {instance_id}\n")
            }
        }
    })
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

fn to_json(info: &NetworkInfo) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), Value::from("network"));
    }
    v
}

fn ls_text(list: &[NetworkInfo]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "SUBNET".into(),
        "BRIDGE".into(),
        "CONTAINERS".into(),
    ]];
    for n in list {
        let names: Vec<&str> = n.containers.iter().map(|c| c.container.as_str()).collect();
        rows.push([
            n.name.clone(),
            n.subnet.clone(),
            format!("{}{}", n.bridge, if n.bridge_up { "" } else { " (down)" }),
            if names.is_empty() {
                "-".into()
            } else {
                names.join(",")
            },
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let line: Vec<String> = (0..4)
                .map(|i| format!("{:w$}", r[i], w = widths[i]))
                .collect();
            line.join("  ").trim_end().to_string() + "\n"
        })
        .collect()
}

fn inspect_text(n: &NetworkInfo) -> String {
    let mut s = format!(
        "name:     {}\nsubnet:   {}\ngateway:  {}\nbridge:   {} ({})\ncni name: {}\nconflist: {}\ncontainers:\n",
        n.name,
        n.subnet,
        n.gateway,
        n.bridge,
        if n.bridge_up { "up" } else { "not created yet" },
        n.cni_name,
        n.conflist.display(),
    );
    if n.containers.is_empty() {
        s.push_str("  (none)\n");
    }
    for c in &n.containers {
        s.push_str(&format!(
            "  {} ({}) {} {}\n",
            c.container,
            c.instance_id,
            c.interface,
            c.address.as_deref().unwrap_or("-")
        ));
    }
    s
}
