//! Driving CNI plugins as libcni does, over the small [`CniExec`] trait.
//!
//! Plugins never read conflists: for each plugin of a list the runtime builds its
//! config — the plugin object plus the list's `name` and `cniVersion`, the previous
//! plugin's result as `prevResult` (ADD), and `runtimeConfig` holding the values of the
//! capabilities the plugin declares (`portMappings`) — and pipes it to the plugin's
//! executable with `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and
//! `CNI_PATH` set. ADD runs the plugins in order and returns the last result; DEL runs
//! them in reverse with the stored ADD result as `prevResult` (the plugins need it to
//! find what to tear down, e.g. the firewall plugin's per-address rules).
//!
//! DEL keeps going after a failing plugin and reports the first failure: every plugin
//! tolerates deleting what is already gone, so a retry is safe, and one broken plugin
//! does not strand the others' state. Errors from a plugin's `{"code","msg","details"}`
//! are parsed into [`CniError::Plugin`].

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use serde_json::{Map, Value};

/// The CNI operations berth uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
}

impl fmt::Display for CniCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
        })
    }
}

/// The per-call `CNI_*` variables (`CNI_PATH` belongs to the executor).
#[derive(Debug, Clone, Copy)]
pub struct CniArgs<'a> {
    pub command: CniCommand,
    pub container_id: &'a str,
    /// `None` on DEL when the namespace is already gone (the spec allows it).
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
}

/// Why running a plugin executable did not give a result.
#[derive(Debug, thiserror::Error)]
pub enum ExecFailure {
    #[error("is not installed (searched {searched})")]
    NotFound { searched: String },
    #[error("cannot be run")]
    Spawn(#[source] std::io::Error),
    #[error("exited with status {status:?}: {}", stderr.trim())]
    Failed {
        status: Option<i32>,
        stdout: Vec<u8>,
        stderr: String,
    },
}

/// Runs one CNI plugin: the only side effect of this module.
pub trait CniExec: fmt::Debug + Send + Sync {
    /// Runs the plugin of type `plugin` with `args` in its environment and `stdin` as
    /// its config; returns its stdout when it exits 0.
    fn exec(&self, plugin: &str, args: &CniArgs<'_>, stdin: &[u8]) -> Result<Vec<u8>, ExecFailure>;
}

/// A failed CNI call, naming the network, container and plugin.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("plugin `{plugin}` {command} on network `{network}` for `{container}`")]
    Exec {
        command: CniCommand,
        network: String,
        container: String,
        plugin: String,
        #[source]
        source: ExecFailure,
    },
    #[error(
        "plugin `{plugin}` {command} on network `{network}` for `{container}` failed (code {code}): {msg}{}",
        if details.is_empty() { String::new() } else { format!(": {details}") }
    )]
    Plugin {
        command: CniCommand,
        network: String,
        container: String,
        plugin: String,
        code: u64,
        msg: String,
        details: String,
    },
    #[error(
        "plugin `{plugin}` {command} on network `{network}` for `{container}` returned an invalid result: {reason}"
    )]
    BadResult {
        command: CniCommand,
        network: String,
        container: String,
        plugin: String,
        reason: String,
    },
    #[error("network `{network}` has an invalid CNI configuration list: {reason}")]
    BadConfig { network: String, reason: String },
}

/// CNI's error code for "try again later": the plugin saw a condition that clears up.
const CNI_TRY_AGAIN_LATER: u64 = 11;

/// Whether a plugin's text says it timed out: plugins report a timeout only in words
/// (the `dhcp` IPAM waiting for a lease, a netlink call past its deadline).
fn says_timed_out(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("timed out") || t.contains("timeout") || t.contains("deadline exceeded")
}

impl ExecFailure {
    /// Whether running the plugin again later may work: it timed out, or could not be
    /// started for want of a resource. A plugin that is not installed stays missing.
    pub fn is_transient(&self) -> bool {
        match self {
            ExecFailure::NotFound { .. } => false,
            ExecFailure::Spawn(e) => crate::runtime::state::io_is_transient(e),
            ExecFailure::Failed { stderr, .. } => says_timed_out(stderr),
        }
    }
}

impl CniError {
    /// Whether the same call may work later: a plugin that timed out or said "try
    /// again later" (code 11). A bad configuration or result stays until it changes.
    pub fn is_transient(&self) -> bool {
        match self {
            CniError::Exec { source, .. } => source.is_transient(),
            CniError::Plugin {
                code, msg, details, ..
            } => *code == CNI_TRY_AGAIN_LATER || says_timed_out(msg) || says_timed_out(details),
            CniError::BadResult { .. } | CniError::BadConfig { .. } => false,
        }
    }
}

/// CNI errors are boxed: they carry a call's whole context and travel far.
pub type CniResult<T> = Result<T, Box<CniError>>;

/// One run of a configuration list.
#[derive(Debug, Clone, Copy)]
pub struct ListCall<'a> {
    /// The berth network, for messages.
    pub network: &'a str,
    pub list: &'a Value,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    /// Capability values (`{"portMappings": [...]}`), given to the plugins declaring them.
    pub runtime: &'a Value,
}

struct ListParts<'a> {
    name: &'a str,
    version: &'a str,
    plugins: &'a [Value],
}

fn parts<'a>(call: &ListCall<'a>) -> CniResult<ListParts<'a>> {
    let bad = |reason: &str| {
        Box::new(CniError::BadConfig {
            network: call.network.to_string(),
            reason: reason.to_string(),
        })
    };
    let name = call
        .list
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no `name`"))?;
    let version = call
        .list
        .get("cniVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no `cniVersion`"))?;
    let plugins = call
        .list
        .get("plugins")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad("no plugins"))?;
    if plugins.iter().any(|p| plugin_type(p).is_none()) {
        return Err(bad("a plugin has no `type`"));
    }
    Ok(ListParts {
        name,
        version,
        plugins,
    })
}

fn plugin_type(plugin: &Value) -> Option<&str> {
    plugin.get("type").and_then(Value::as_str)
}

/// The config piped to one plugin (libcni's `buildOneConfig` + `injectRuntimeConfig`).
pub fn plugin_config(
    plugin: &Value,
    name: &str,
    version: &str,
    prev: Option<&Value>,
    runtime: &Value,
) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("name".into(), Value::from(name));
    conf.insert("cniVersion".into(), Value::from(version));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let mut rc = Map::new();
    if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
        for (cap, on) in caps {
            if on.as_bool() == Some(true)
                && let Some(v) = runtime.get(cap)
            {
                rc.insert(cap.clone(), v.clone());
            }
        }
    }
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(conf)
}

fn run(
    exec: &dyn CniExec,
    call: &ListCall<'_>,
    command: CniCommand,
    plugin: &str,
    conf: &Value,
) -> CniResult<Vec<u8>> {
    let args = CniArgs {
        command,
        container_id: call.container_id,
        netns: call.netns,
        ifname: call.ifname,
    };
    let stdin = conf.to_string();
    let started = std::time::Instant::now();
    let out = exec.exec(plugin, &args, stdin.as_bytes());
    tracing::debug!(
        plugin,
        %command,
        network = call.network,
        container = call.container_id,
        ifname = call.ifname,
        ms = started.elapsed().as_secs_f64() * 1000.0,
        ok = out.is_ok(),
        "CNI plugin call"
    );
    out.map_err(|source| {
        let (network, container, plugin) = (
            call.network.to_string(),
            call.container_id.to_string(),
            plugin.to_string(),
        );
        let body = match &source {
            ExecFailure::Failed { stdout, .. } => parse_error(stdout),
            _ => None,
        };
        Box::new(match body {
            Some(e) => CniError::Plugin {
                command,
                network,
                container,
                plugin,
                code: e.code,
                msg: e.msg,
                details: e.details,
            },
            None => CniError::Exec {
                command,
                network,
                container,
                plugin,
                source,
            },
        })
    })
}

/// ADD: runs the plugins in order, threading each result into the next; returns the
/// last result.
pub fn add(exec: &dyn CniExec, call: &ListCall<'_>) -> CniResult<Value> {
    let p = parts(call)?;
    let mut prev: Option<Value> = None;
    for plugin in p.plugins {
        let ty = plugin_type(plugin).unwrap_or_default();
        let conf = plugin_config(plugin, p.name, p.version, prev.as_ref(), call.runtime);
        let out = run(exec, call, CniCommand::Add, ty, &conf)?;
        let result = parse_result(&out).map_err(|e| CniError::BadResult {
            command: CniCommand::Add,
            network: call.network.to_string(),
            container: call.container_id.to_string(),
            plugin: ty.to_string(),
            reason: e.to_string(),
        })?;
        prev = Some(result);
    }
    prev.ok_or_else(|| {
        Box::new(CniError::BadConfig {
            network: call.network.to_string(),
            reason: "no plugins".into(),
        })
    })
}

/// DEL: runs the plugins in reverse order with `prev` (the stored ADD result) as
/// `prevResult`; every plugin runs, and the first failure is returned.
pub fn del(exec: &dyn CniExec, call: &ListCall<'_>, prev: Option<&Value>) -> CniResult<()> {
    let p = parts(call)?;
    let mut first = None;
    for plugin in p.plugins.iter().rev() {
        let ty = plugin_type(plugin).unwrap_or_default();
        let conf = plugin_config(plugin, p.name, p.version, prev, call.runtime);
        if let Err(e) = run(exec, call, CniCommand::Del, ty, &conf) {
            tracing::warn!(error = %e, "CNI DEL failed; continuing with the other plugins");
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// A plugin's error body (CNI spec "Error").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub code: u64,
    pub msg: String,
    pub details: String,
}

/// Parses `{"code", "msg", "details"}` from a failed plugin's stdout.
pub fn parse_error(stdout: &[u8]) -> Option<PluginError> {
    let v: Value = serde_json::from_slice(stdout).ok()?;
    Some(PluginError {
        code: v.get("code")?.as_u64()?,
        msg: v
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        details: v
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    })
}

/// Why a plugin's success output is not a result.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("empty output")]
    Empty,
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("not a JSON object")]
    NotObject,
}

/// Parses a plugin's success output: a JSON object.
pub fn parse_result(stdout: &[u8]) -> Result<Value, ResultError> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Err(ResultError::Empty);
    }
    let v: Value = serde_json::from_slice(stdout).map_err(ResultError::NotJson)?;
    if !v.is_object() {
        return Err(ResultError::NotObject);
    }
    Ok(v)
}

/// The address a result gives the container's interface `ifname`, with its prefix
/// length: the first IP on the sandboxed interface of that name, else the first IP.
pub fn address(result: &Value, ifname: &str) -> Option<(IpAddr, u8)> {
    let ips = result.get("ips")?.as_array()?;
    let idx = result
        .get("interfaces")
        .and_then(Value::as_array)
        .and_then(|ifs| {
            ifs.iter().position(|i| {
                i.get("name").and_then(Value::as_str) == Some(ifname)
                    && i.get("sandbox")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
            })
        });
    let on_if = idx.and_then(|idx| {
        ips.iter()
            .find(|ip| ip.get("interface").and_then(Value::as_u64) == Some(idx as u64))
    });
    let ip = on_if.or_else(|| ips.first())?;
    let (addr, prefix) = ip.get("address")?.as_str()?.split_once('/')?;
    Some((addr.parse().ok()?, prefix.parse().ok()?))
}

#[cfg(test)]
#[path = "cni_tests.rs"]
mod tests;
