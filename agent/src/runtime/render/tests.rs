//! Unit tests of the render rules: capabilities, rlimits, users, the entrypoint/cmd
//! matrix, env, mounts, sysctls and missing inputs.

use std::collections::BTreeSet;

use oci_spec::runtime::{Capability, PosixRlimitType, Spec};

use super::fixtures::{Scenario, busybox, image, minimal_toml};
use super::process::{self, DEFAULT_CAPABILITIES, clamp};
use super::{RenderError, render, to_json};

fn scenario(extra: &str) -> Scenario {
    Scenario::new(&minimal_toml("web", extra), "web", busybox())
}

fn rendered(extra: &str) -> Spec {
    render(&scenario(extra).input()).unwrap()
}

fn caps(spec: &Spec) -> [BTreeSet<String>; 5] {
    let c = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    let names = |s: &Option<std::collections::HashSet<Capability>>| -> BTreeSet<String> {
        s.iter().flatten().map(|c| c.to_string()).collect()
    };
    [
        names(c.bounding()),
        names(c.effective()),
        names(c.permitted()),
        names(c.inheritable()),
        names(c.ambient()),
    ]
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn drop_all_add_one_gives_exactly_that_one() {
    let spec = rendered(
        r#"cap_drop = ["ALL"]
cap_add = ["NET_BIND_SERVICE"]"#,
    );
    let [b, e, p, i, a] = caps(&spec);
    for s in [&b, &e, &p] {
        assert_eq!(s, &set(&["NET_BIND_SERVICE"]));
    }
    assert!(i.is_empty() && a.is_empty());
}

#[test]
fn default_capabilities_minus_drop_plus_add() {
    let [b, ..] = caps(&rendered(""));
    assert_eq!(b, set(&DEFAULT_CAPABILITIES));
    assert_eq!(b.len(), 14);

    let [b, ..] = caps(&rendered(
        r#"cap_drop = ["net_raw", "CAP_MKNOD"]
cap_add = ["cap_sys_time"]"#,
    ));
    let mut want = set(&DEFAULT_CAPABILITIES);
    want.remove("NET_RAW");
    want.remove("MKNOD");
    want.insert("SYS_TIME".into());
    assert_eq!(b, want);

    // Docker: adding ALL wins, minus what is dropped.
    let [b, ..] = caps(&rendered(
        r#"cap_add = ["ALL"]
cap_drop = ["SYS_ADMIN"]"#,
    ));
    assert_eq!(b.len(), berth_spec::CAPABILITIES.len() - 1);
    assert!(!b.contains("SYS_ADMIN"));
}

#[test]
fn privileged_gets_every_capability_no_seccomp_no_masks() {
    let spec = rendered("privileged = true");
    let [b, e, p, ..] = caps(&spec);
    assert_eq!(b.len(), berth_spec::CAPABILITIES.len());
    assert_eq!((e.len(), p.len()), (b.len(), b.len()));
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert!(linux.masked_paths().is_none() && linux.readonly_paths().is_none());
}

#[test]
fn every_known_capability_maps_to_oci() {
    for name in berth_spec::CAPABILITIES {
        assert!(name.parse::<Capability>().is_ok(), "{name}");
    }
}

#[test]
fn ulimit_clamp() {
    let host = Some(4096);
    assert_eq!(clamp(Some(1024), Some(8192), host), (1024, 4096));
    assert_eq!(clamp(Some(8192), Some(8192), host), (4096, 4096));
    assert_eq!(clamp(None, None, host), (4096, 4096));
    assert_eq!(clamp(Some(10), Some(20), None), (10, 20));
    assert_eq!(clamp(None, None, None), (u64::MAX, u64::MAX));

    // End to end: never above the host's hard limit (524288 in the fixture host).
    let spec =
        rendered(r#"ulimits = { nofile = "1024:1048576", nproc = "unlimited", core = "0" }"#);
    let limits = spec.process().as_ref().unwrap().rlimits().clone().unwrap();
    let get = |t| {
        let r = limits.iter().find(|r| r.typ() == t).unwrap();
        (r.soft(), r.hard())
    };
    assert_eq!(get(PosixRlimitType::RlimitNofile), (1024, 524_288));
    assert_eq!(get(PosixRlimitType::RlimitNproc), (63_536, 63_536));
    assert_eq!(get(PosixRlimitType::RlimitCore), (0, 0));
}

#[test]
fn user_resolution_and_errors() {
    let s = scenario(r#"user = "app""#);
    let u = super::process::resolve_user(&s.input()).unwrap();
    assert_eq!(
        (u.uid, u.gid, u.additional_gids),
        (10001, 10001, vec![29, 44])
    );

    // The image's User applies when the spec has none.
    let mut s = scenario("");
    s.image = image(r#"{"User":"daemon","Cmd":["sh"]}"#);
    let u = super::process::resolve_user(&s.input()).unwrap();
    assert_eq!((u.uid, u.gid), (1, 1));

    let s = scenario(r#"user = "nobody""#);
    let err = render(&s.input()).unwrap_err();
    assert!(matches!(err, RenderError::User { .. }));
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains("container `web`"), "{text}");
    assert!(
        text.contains("registry.example.com/shop/web@sha256:"),
        "{text}"
    );
    assert!(text.contains("user `nobody` not found"), "{text}");

    // Without /etc/passwd only numbers resolve.
    let mut s = scenario(r#"user = "app""#);
    s.passwd = None;
    assert!(render(&s.input()).is_err());
    let mut s = scenario(r#"user = "10001:10001""#);
    s.passwd = None;
    let spec = render(&s.input()).unwrap();
    let user = spec.process().as_ref().unwrap().user().clone();
    assert_eq!((user.uid(), user.gid()), (10001, 10001));
}

/// Docker's documented entrypoint/cmd matrix
/// (docs.docker.com "Understand how CMD and ENTRYPOINT interact"), plus spec overrides.
#[test]
fn entrypoint_cmd_matrix() {
    let cases: &[(&str, &str, &[&str])] = &[
        // image config, spec keys, expected argv
        (
            r#"{"Entrypoint":["/ep","-x"],"Cmd":["c1","c2"]}"#,
            "",
            &["/ep", "-x", "c1", "c2"],
        ),
        (r#"{"Cmd":["c1","c2"]}"#, "", &["c1", "c2"]),
        (r#"{"Entrypoint":["/ep"]}"#, "", &["/ep"]),
        // command replaces Cmd, keeps Entrypoint
        (
            r#"{"Entrypoint":["/ep"],"Cmd":["c1"]}"#,
            r#"command = ["a"]"#,
            &["/ep", "a"],
        ),
        (r#"{"Cmd":["c1"]}"#, r#"command = ["a", "b"]"#, &["a", "b"]),
        // entrypoint replaces Entrypoint AND drops the image's Cmd
        (
            r#"{"Entrypoint":["/ep"],"Cmd":["c1"]}"#,
            r#"entrypoint = ["/new"]"#,
            &["/new"],
        ),
        (r#"{"Cmd":["c1"]}"#, r#"entrypoint = ["/new"]"#, &["/new"]),
        // both given
        (
            r#"{"Entrypoint":["/ep"],"Cmd":["c1"]}"#,
            "entrypoint = [\"/new\"]\ncommand = [\"a\"]",
            &["/new", "a"],
        ),
        // an empty entrypoint clears the image's, like --entrypoint ""
        (
            r#"{"Entrypoint":["/ep"],"Cmd":["c1"]}"#,
            "entrypoint = []\ncommand = [\"a\"]",
            &["a"],
        ),
    ];
    for (cfg, keys, want) in cases {
        let s = Scenario::new(&minimal_toml("web", keys), "web", image(cfg));
        let spec = render(&s.input()).unwrap_or_else(|e| panic!("{cfg} {keys}: {e}"));
        let args = spec.process().as_ref().unwrap().args().clone().unwrap();
        assert_eq!(args, *want, "image {cfg}, spec {keys}");
    }
    // Nothing to run at all.
    for (cfg, keys) in [
        ("{}", ""),
        (r#"{"Entrypoint":["/ep"],"Cmd":["c1"]}"#, "entrypoint = []"),
    ] {
        let s = Scenario::new(&minimal_toml("web", keys), "web", image(cfg));
        let err = render(&s.input()).unwrap_err();
        assert!(matches!(err, RenderError::NoCommand { .. }), "{cfg} {keys}");
        assert!(
            err.to_string()
                .contains("image `registry.example.com/shop/web@")
        );
    }
}

#[test]
fn env_merge_and_workdir() {
    let mut s = scenario(
        r#"env = { LOG = "debug", B = "spec" }
hostname = "front""#,
    );
    s.image = image(r#"{"Env":["PATH=/opt/bin","B=image","A=1"],"Cmd":["sh"],"WorkingDir":"srv"}"#);
    let spec = render(&s.input()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.env().clone().unwrap(),
        vec![
            "PATH=/opt/bin",
            "HOSTNAME=front",
            "B=spec",
            "A=1",
            "LOG=debug"
        ]
    );
    assert_eq!(p.cwd().to_str(), Some("/srv"));
    assert_eq!(spec.hostname().as_deref(), Some("front"));

    // No PATH anywhere: Docker's default; no WorkingDir: `/`; spec workdir wins.
    let mut s = scenario("");
    s.image = image(r#"{"Cmd":["sh"]}"#);
    let p = render(&s.input()).unwrap().process().clone().unwrap();
    assert_eq!(
        p.env().clone().unwrap()[0],
        format!("PATH={}", process::DEFAULT_PATH)
    );
    assert_eq!(p.env().clone().unwrap()[1], "HOSTNAME=web");
    assert_eq!(p.cwd().to_str(), Some("/"));
    let p = rendered(r#"workdir = "/data""#).process().clone().unwrap();
    assert_eq!(p.cwd().to_str(), Some("/data"));
}

#[test]
fn mounts_order_and_override() {
    let spec = rendered(
        r#"[[container.web.mounts]]
tmpfs = "/data/cache"
[[container.web.mounts]]
volume = "web-data"
target = "/data"
[[container.web.mounts]]
tmpfs = "/dev/shm"
size = "1MiB""#,
    );
    let dests: Vec<String> = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().to_string_lossy().into_owned())
        .collect();
    let pos = |d: &str| dests.iter().position(|x| x == d).unwrap();
    assert!(pos("/data") < pos("/data/cache"));
    assert_eq!(dests.iter().filter(|d| *d == "/dev/shm").count(), 1);
    let shm = spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination().to_str() == Some("/dev/shm"))
        .unwrap();
    assert!(
        shm.options()
            .clone()
            .unwrap()
            .contains(&"size=1048576".to_string())
    );
}

#[test]
fn sysctls_must_be_namespaced() {
    let spec = rendered(
        r#"sysctls = { "net.ipv4.ip_unprivileged_port_start" = "0", "kernel.shmmax" = "65536" }"#,
    );
    let sysctl = spec.linux().as_ref().unwrap().sysctl().clone().unwrap();
    assert_eq!(sysctl.len(), 2);

    let s = scenario(r#"sysctls = { "kernel.panic" = "1" }"#);
    let err = render(&s.input()).unwrap_err().to_string();
    assert!(err.contains("`kernel.panic` is not namespaced"), "{err}");

    let s = scenario("network_mode = \"host\"\nsysctls = { \"net.ipv4.tcp_syncookies\" = \"1\" }");
    let err = render(&s.input()).unwrap_err().to_string();
    assert!(err.contains("network_mode = \"host\""), "{err}");
}

#[test]
fn network_modes() {
    use oci_spec::runtime::LinuxNamespaceType as T;
    let net = |spec: &Spec| {
        spec.linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .iter()
            .flatten()
            .find(|n| n.typ() == T::Network)
            .map(|n| n.path().clone())
    };
    let bridge = rendered("");
    assert_eq!(
        net(&bridge).flatten().unwrap().to_str(),
        Some("/run/berth/netns/web-4f3c2a1b")
    );
    assert_eq!(net(&rendered(r#"network_mode = "none""#)), Some(None));
    assert_eq!(net(&rendered(r#"network_mode = "host""#)), None);
}

#[test]
fn missing_inputs_are_named() {
    let mut s = scenario("");
    s.paths.netns = None;
    let err = render(&s.input()).unwrap_err().to_string();
    assert_eq!(
        err,
        "container `web`: the network namespace was not prepared"
    );

    let mut s = scenario("devices = [\"/dev/ttyACM0\"]");
    s.devices.clear();
    let err = render(&s.input()).unwrap_err().to_string();
    assert!(
        err.contains("device `/dev/ttyACM0` was not prepared"),
        "{err}"
    );

    let mut s = scenario("[[container.web.secrets]]\nname = \"db-password\"");
    s.paths.secrets_dir = None;
    assert!(
        render(&s.input())
            .unwrap_err()
            .to_string()
            .contains("secrets directory")
    );

    let s = scenario(r#"seccomp = "seccomp/strict.json""#);
    let err = render(&s.input()).unwrap_err().to_string();
    assert!(
        err.contains("seccomp profile `seccomp/strict.json` was not prepared"),
        "{err}"
    );
}

#[test]
fn seccomp_profile_file_and_unconfined() {
    let mut s = scenario(r#"seccomp = "seccomp/strict.json""#);
    s.seccomp_profile = Some(
        r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#
            .into(),
    );
    let spec = render(&s.input()).unwrap();
    let json = to_json(&spec).unwrap();
    assert!(json.contains("SCMP_ACT_KILL_PROCESS"));

    s.seccomp_profile = Some("{\"defaultAction\": 3}".into());
    let err = render(&s.input()).unwrap_err().to_string();
    assert!(
        err.starts_with("container `web`: seccomp profile `seccomp/strict.json`:"),
        "{err}"
    );

    let spec = rendered(r#"seccomp = "unconfined""#);
    assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
}

#[test]
fn json_is_deterministic() {
    let s = scenario("cap_add = [\"SYS_TIME\"]");
    let a = to_json(&render(&s.input()).unwrap()).unwrap();
    for _ in 0..5 {
        assert_eq!(a, to_json(&render(&s.input()).unwrap()).unwrap());
    }
}

#[test]
fn cgroup_paths_carry_the_state_directory_hash() {
    use std::path::Path;
    let a = super::cgroups_path(Path::new("/var/lib/berth"), "web-4f3c2a1b");
    assert_eq!(a, "/berth/5a2cdf17d6f6/web-4f3c2a1b");
    let b = super::cgroups_path(Path::new("/var/lib/berth-2"), "web-4f3c2a1b");
    assert_ne!(a, b);
    assert!(
        b.starts_with("/berth/") && b.ends_with("/web-4f3c2a1b"),
        "{b}"
    );
}
