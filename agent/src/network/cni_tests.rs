//! CNI sequencing against the recording fake: ADD order and `prevResult` threading,
//! capabilities, DEL in reverse with the stored result, error propagation, and the
//! parsing of plugin results and error bodies.

use std::path::Path;

use serde_json::{Value, json};

use super::*;
use crate::network::conflist::{self, NetworkDef};
use crate::network::fake::FakeCni;

fn list() -> Value {
    let def = NetworkDef {
        name: "front".into(),
        bridge: "bthabcdefabcdef".into(),
        subnet: berth_spec::types::parse_cidr("10.250.1.0/24").unwrap(),
    };
    conflist::render(&def, Path::new("/s/cni/ipam"))
}

fn call<'a>(list: &'a Value, runtime: &'a Value) -> ListCall<'a> {
    ListCall {
        network: "front",
        list,
        container_id: "web-0123abcd",
        netns: Some(Path::new("/run/berth/netns/web-0123abcd")),
        ifname: "eth0",
        runtime,
    }
}

fn ports() -> Value {
    json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]})
}

#[test]
fn add_runs_plugins_in_order_threading_prev_result() {
    let fake = FakeCni::default();
    let (l, rt) = (list(), ports());
    let result = add(&fake, &call(&l, &rt)).unwrap();
    let calls = fake.calls();
    assert_eq!(
        fake.trace(),
        ["ADD bridge eth0", "ADD portmap eth0", "ADD firewall eth0"]
    );
    for c in &calls {
        assert_eq!(c.config["name"], "bthabcdefabcdef");
        assert_eq!(c.config["cniVersion"], "1.0.0");
        assert_eq!(c.container_id, "web-0123abcd");
        assert_eq!(
            c.netns.as_deref(),
            Some(Path::new("/run/berth/netns/web-0123abcd"))
        );
    }
    assert!(
        calls[0].config.get("prevResult").is_none(),
        "first plugin has none"
    );
    let bridge_result = &calls[1].config["prevResult"];
    assert_eq!(bridge_result["ips"][0]["address"], "10.250.1.2/24");
    assert_eq!(&calls[2].config["prevResult"], bridge_result);
    assert_eq!(
        &result, bridge_result,
        "meta plugins pass the result through"
    );
    assert_eq!(
        address(&result, "eth0").unwrap().0.to_string(),
        "10.250.1.2"
    );
}

#[test]
fn runtime_config_goes_only_to_plugins_declaring_the_capability() {
    let fake = FakeCni::default();
    let (l, rt) = (list(), ports());
    add(&fake, &call(&l, &rt)).unwrap();
    let calls = fake.calls();
    assert!(calls[0].config.get("runtimeConfig").is_none());
    assert_eq!(calls[1].config["runtimeConfig"], ports());
    assert!(calls[2].config.get("runtimeConfig").is_none());
    // Without ports, portmap gets no runtimeConfig at all.
    let fake = FakeCni::default();
    let empty = json!({});
    add(&fake, &call(&l, &empty)).unwrap();
    assert!(fake.calls()[1].config.get("runtimeConfig").is_none());
}

#[test]
fn del_runs_in_reverse_with_the_stored_result() {
    let fake = FakeCni::default();
    let (l, rt) = (list(), ports());
    let result = add(&fake, &call(&l, &rt)).unwrap();
    del(&fake, &call(&l, &rt), Some(&result)).unwrap();
    let calls = fake.calls();
    assert_eq!(
        fake.trace()[3..],
        ["DEL firewall eth0", "DEL portmap eth0", "DEL bridge eth0"]
    );
    for c in &calls[3..] {
        assert_eq!(c.config["prevResult"], result);
    }
    assert_eq!(
        calls[4].config["runtimeConfig"],
        ports(),
        "portmap needs its mappings on DEL"
    );
    assert_eq!(fake.live(), 0);
}

#[test]
fn add_stops_at_the_first_failing_plugin_with_its_error() {
    let fake = FakeCni::default();
    fake.fail("portmap", CniCommand::Add);
    let (l, rt) = (list(), ports());
    let err = add(&fake, &call(&l, &rt)).unwrap_err();
    assert_eq!(fake.trace(), ["ADD bridge eth0", "ADD portmap eth0"]);
    assert_eq!(
        err.to_string(),
        "plugin `portmap` ADD on network `front` for `web-0123abcd` failed (code 11): injected failure: by the test"
    );
}

#[test]
fn del_runs_every_plugin_and_reports_the_first_failure() {
    let fake = FakeCni::default();
    fake.fail("firewall", CniCommand::Del);
    let (l, rt) = (list(), ports());
    let err = del(&fake, &call(&l, &rt), None).unwrap_err();
    assert_eq!(
        fake.trace(),
        ["DEL firewall eth0", "DEL portmap eth0", "DEL bridge eth0"]
    );
    assert!(matches!(*err, CniError::Plugin { ref plugin, code: 11, .. } if plugin == "firewall"));
    assert!(fake.calls()[0].config.get("prevResult").is_none());
}

#[test]
fn a_plugin_that_cannot_run_is_named() {
    #[derive(Debug)]
    struct Missing;
    impl CniExec for Missing {
        fn exec(&self, _: &str, _: &CniArgs<'_>, _: &[u8]) -> Result<Vec<u8>, ExecFailure> {
            Err(ExecFailure::NotFound {
                searched: "/usr/lib/cni:/opt/cni/bin".into(),
            })
        }
    }
    let (l, rt) = (list(), ports());
    let err = add(&Missing, &call(&l, &rt)).unwrap_err();
    assert_eq!(
        crate::util::error_chain(&err),
        "plugin `bridge` ADD on network `front` for `web-0123abcd`: is not installed (searched /usr/lib/cni:/opt/cni/bin)"
    );
}

#[test]
fn a_failure_without_an_error_body_keeps_stderr() {
    #[derive(Debug)]
    struct Crash;
    impl CniExec for Crash {
        fn exec(&self, _: &str, _: &CniArgs<'_>, _: &[u8]) -> Result<Vec<u8>, ExecFailure> {
            Err(ExecFailure::Failed {
                status: Some(2),
                stdout: b"panic".to_vec(),
                stderr: "goroutine 1 [running]\n".into(),
            })
        }
    }
    let (l, rt) = (list(), ports());
    let err = add(&Crash, &call(&l, &rt)).unwrap_err();
    assert!(
        crate::util::error_chain(&err)
            .ends_with("exited with status Some(2): goroutine 1 [running]"),
        "{err}"
    );
}

#[test]
fn bad_lists_and_results_are_errors() {
    let fake = FakeCni::default();
    let rt = json!({});
    let empty = json!({"cniVersion": "1.0.0", "name": "x", "plugins": []});
    let err = add(&fake, &call(&empty, &rt)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "network `front` has an invalid CNI configuration list: no plugins"
    );

    #[derive(Debug)]
    struct Silent;
    impl CniExec for Silent {
        fn exec(&self, _: &str, _: &CniArgs<'_>, _: &[u8]) -> Result<Vec<u8>, ExecFailure> {
            Ok(Vec::new())
        }
    }
    let l = list();
    let err = add(&Silent, &call(&l, &rt)).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("returned an invalid result: empty output"),
        "{err}"
    );
}

#[test]
fn parses_plugin_error_bodies() {
    let e = parse_error(
        br#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network config","details":"x"}"#,
    )
    .unwrap();
    assert_eq!(
        (e.code, e.msg.as_str(), e.details.as_str()),
        (7, "invalid network config", "x")
    );
    let e = parse_error(br#"{"code":999,"msg":"m"}"#).unwrap();
    assert_eq!(e.details, "");
    assert!(parse_error(b"not json").is_none());
    assert!(parse_error(br#"{"msg":"no code"}"#).is_none());
}

#[test]
fn address_prefers_the_sandboxed_interface() {
    // A real bridge plugin result (containernetworking-plugins 1.1.1).
    let r: Value = serde_json::from_str(
        r#"{"cniVersion":"1.0.0",
            "interfaces":[{"name":"bth1","mac":"aa"},{"name":"veth1","mac":"bb"},
                          {"name":"eth1","mac":"cc","sandbox":"/run/berth/netns/x"}],
            "ips":[{"interface":2,"address":"10.250.3.7/24","gateway":"10.250.3.1"}],
            "routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#,
    )
    .unwrap();
    assert_eq!(
        address(&r, "eth1").unwrap(),
        ("10.250.3.7".parse().unwrap(), 24)
    );
    // No interface list: the first IP.
    let r = json!({"ips": [{"address": "fd00::5/64"}]});
    assert_eq!(
        address(&r, "eth0").unwrap(),
        ("fd00::5".parse().unwrap(), 64)
    );
    assert!(address(&json!({}), "eth0").is_none());
    assert!(parse_result(b"[1]").is_err());
}
