//! Test doubles for the network module's two side-effect traits: a CNI executor that
//! records every call and answers like the real plugins would (the bridge plugin hands
//! out addresses from the subnet in its config, meta plugins echo `prevResult`), and a
//! host that keeps namespaces and links in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::cni::{CniArgs, CniCommand, CniExec, ExecFailure};
use super::host::{NetHost, NetHostError};

/// One recorded plugin call.
#[derive(Debug, Clone)]
pub struct Call {
    pub plugin: String,
    pub command: CniCommand,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub config: Value,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    /// (plugin, command) that fails with a CNI error body.
    fail: Option<(String, CniCommand)>,
    /// Next host number per subnet, and the live allocations (cni name, id, ifname).
    next: BTreeMap<String, u32>,
    live: BTreeSet<(String, String, String)>,
}

/// A recording [`CniExec`].
#[derive(Debug, Default)]
pub struct FakeCni {
    state: Mutex<State>,
}

impl FakeCni {
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Makes `plugin` fail on `command` from now on.
    pub fn fail(&self, plugin: &str, command: CniCommand) {
        self.state.lock().unwrap().fail = Some((plugin.to_string(), command));
    }

    pub fn heal(&self) {
        self.state.lock().unwrap().fail = None;
    }

    /// Bridge allocations not yet released by a DEL.
    pub fn live(&self) -> usize {
        self.state.lock().unwrap().live.len()
    }

    /// `(plugin, command, ifname)` of every call, in order.
    pub fn trace(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{} {} {}", c.command, c.plugin, c.ifname))
            .collect()
    }
}

fn bridge_result(st: &mut State, config: &Value, args: &CniArgs<'_>) -> Value {
    let subnet = config
        .pointer("/ipam/ranges/0/0/subnet")
        .and_then(Value::as_str)
        .unwrap_or("10.0.0.0/24")
        .to_string();
    let base = subnet.split('/').next().unwrap_or("10.0.0.0");
    let mut octets: Vec<u32> = base.split('.').map(|o| o.parse().unwrap()).collect();
    let n = st.next.entry(subnet.clone()).or_insert(2);
    octets[3] += *n;
    *n += 1;
    let name = config["name"].as_str().unwrap_or("").to_string();
    st.live
        .insert((name, args.container_id.to_string(), args.ifname.to_string()));
    let prefix = subnet.split('/').nth(1).unwrap_or("24");
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": config["bridge"], "mac": "02:00:00:00:00:01"},
            {"name": "veth0001", "mac": "02:00:00:00:00:02"},
            {"name": args.ifname, "mac": "02:00:00:00:00:03",
             "sandbox": args.netns.map(|p| p.display().to_string())},
        ],
        "ips": [{
            "address": format!("{}.{}.{}.{}/{prefix}", octets[0], octets[1], octets[2], octets[3]),
            "gateway": format!("{}.{}.{}.{}", octets[0], octets[1], octets[2], 1),
            "interface": 2,
        }],
    })
}

impl CniExec for FakeCni {
    fn exec(&self, plugin: &str, args: &CniArgs<'_>, stdin: &[u8]) -> Result<Vec<u8>, ExecFailure> {
        let config: Value = serde_json::from_slice(stdin).unwrap();
        let mut st = self.state.lock().unwrap();
        st.calls.push(Call {
            plugin: plugin.to_string(),
            command: args.command,
            container_id: args.container_id.to_string(),
            netns: args.netns.map(Path::to_path_buf),
            ifname: args.ifname.to_string(),
            config: config.clone(),
        });
        if st.fail.as_ref() == Some(&(plugin.to_string(), args.command)) {
            return Err(ExecFailure::Failed {
                status: Some(1),
                stdout: br#"{"cniVersion":"1.0.0","code":11,"msg":"injected failure","details":"by the test"}"#.to_vec(),
                stderr: String::new(),
            });
        }
        let out = match (args.command, plugin) {
            (CniCommand::Del, "bridge") => {
                let name = config["name"].as_str().unwrap_or("").to_string();
                st.live
                    .remove(&(name, args.container_id.to_string(), args.ifname.to_string()));
                Value::Null
            }
            (CniCommand::Del, _) => Value::Null,
            (CniCommand::Add, "bridge") => bridge_result(&mut st, &config, args),
            (CniCommand::Add, "loopback") => json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "lo", "sandbox": args.netns.map(|p| p.display().to_string())}],
                "ips": [{"address": "127.0.0.1/8", "interface": 0}],
            }),
            (CniCommand::Add, _) => config.get("prevResult").cloned().unwrap_or(Value::Null),
        };
        Ok(if out.is_null() {
            Vec::new()
        } else {
            out.to_string().into_bytes()
        })
    }
}

/// An in-memory [`NetHost`].
#[derive(Debug, Default)]
pub struct FakeHost {
    pub netns: Mutex<BTreeSet<PathBuf>>,
    pub links: Mutex<BTreeSet<String>>,
    pub deleted_links: Mutex<Vec<String>>,
    pub members: Mutex<BTreeMap<String, usize>>,
}

impl NetHost for FakeHost {
    fn create_netns(&self, path: &Path) -> Result<(), NetHostError> {
        self.netns.lock().unwrap().insert(path.to_path_buf());
        Ok(())
    }

    fn delete_netns(&self, path: &Path) -> Result<(), NetHostError> {
        self.netns.lock().unwrap().remove(path);
        Ok(())
    }

    fn netns_exists(&self, path: &Path) -> bool {
        self.netns.lock().unwrap().contains(path)
    }

    fn link_exists(&self, name: &str) -> bool {
        self.links.lock().unwrap().contains(name)
    }

    fn bridge_members(&self, name: &str) -> usize {
        self.members.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    fn delete_link(&self, name: &str) -> Result<bool, NetHostError> {
        self.deleted_links.lock().unwrap().push(name.to_string());
        Ok(self.links.lock().unwrap().remove(name))
    }
}
