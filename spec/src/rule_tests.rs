//! One test per validation rule: bad input in, the exact `FILE:LINE:COL: error: MESSAGE`
//! out. Inputs are small in-memory trees; `IMG` is a valid pinned image.

use crate::{NodeIdentity, SourceFile, Tree, check};

const IMG: &str =
    "r.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn tree(files: &[(&str, &str)]) -> Tree {
    let mut t = Tree::from_sources(
        files
            .iter()
            .filter(|(p, _)| p.ends_with(".toml"))
            .map(|(p, t)| SourceFile {
                path: p.to_string(),
                text: t.replace("IMG", IMG),
            })
            .collect(),
    );
    t.files.extend(files.iter().map(|(p, _)| p.to_string()));
    t
}

fn errors_for(files: &[(&str, &str)], node: Option<&NodeIdentity>) -> Vec<String> {
    check(&tree(files), node)
        .errors
        .iter()
        .map(|d| d.to_string())
        .collect()
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    errors_for(files, None)
}

/// A single-file tree with one error expected.
fn one(text: &str, expected: &str) {
    assert_eq!(errors(&[("a.toml", text)]), vec![expected.to_string()]);
}

#[test]
fn valid_container_has_no_errors() {
    let c = check(
        &tree(&[("a.toml", "[container.web]\nimage = \"IMG\"\n")]),
        None,
    );
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let web = &c.state.containers["web"];
    assert_eq!(web.hostname, "web");
    assert_eq!(web.networks, vec!["default"]);
    assert!(web.no_new_privileges);
    assert_eq!(web.stop_timeout, std::time::Duration::from_secs(10));
    assert_eq!(web.update_timeout, std::time::Duration::from_secs(120));
}

#[test]
fn toml_syntax_error_is_located() {
    one(
        "[container.web]\nimage = \"abc\nuser = 1\n",
        "a.toml:2:13: error: TOML syntax error: invalid basic string, expected `\"`",
    );
}

#[test]
fn unknown_key_suggests_nearest() {
    one(
        "[container.web]\nimgae = \"IMG\"\n",
        "a.toml:2:1: error: container `web`: unknown key `imgae`, did you mean `image`?",
    );
    one(
        "[container.web]\nimage = \"IMG\"\n[container.web.resources]\nmemroy = \"1GiB\"\n",
        "a.toml:4:1: error: container `web`: unknown key `resources.memroy`, did you mean `memory`?",
    );
    one(
        "[volum.data]\n",
        "a.toml:1:2: error: unknown key `volum`, did you mean `volume`?",
    );
}

#[test]
fn wrong_type_is_reported() {
    one(
        "[container.web]\nimage = \"IMG\"\nread_only = \"yes\"\n",
        "a.toml:3:13: error: container `web`: `read_only` must be a boolean (true or false), found a string",
    );
    one(
        "[container.web]\nimage = \"IMG\"\ncap_drop = \"ALL\"\n",
        "a.toml:3:12: error: container `web`: `cap_drop` must be an array of strings, found a string",
    );
}

#[test]
fn missing_image() {
    one(
        "[container.web]\nuser = \"1000\"\n",
        "a.toml:1:12: error: container `web`: missing required key `image`",
    );
}

#[test]
fn invalid_names() {
    one(
        "[container.Web]\nimage = \"IMG\"\n",
        "a.toml:1:12: error: invalid container name `Web`: names use lowercase letters, digits, `_`, `.` and `-`, start with a letter or digit, and have at most 63 characters",
    );
    one(
        "[volume._x]\n",
        "a.toml:1:9: error: invalid volume name `_x`: names use lowercase letters, digits, `_`, `.` and `-`, start with a letter or digit, and have at most 63 characters",
    );
}

#[test]
fn undefined_references() {
    let text = "[network.front]\n[container.web]\nimage = \"IMG\"\nnetworks = [\"frnot\"]\ndepends_on = [\"db\"]\n[[container.web.mounts]]\nvolume = \"data\"\ntarget = \"/data\"\n[[container.web.secrets]]\nname = \"pw\"\n";
    assert_eq!(
        errors(&[("a.toml", text)]),
        vec![
            "a.toml:4:13: error: container `web`: network `frnot` is not defined, did you mean `front`?",
            "a.toml:5:15: error: container `web`: container `db` is not defined",
            "a.toml:7:1: error: container `web`: volume `data` is not defined",
            "a.toml:10:1: error: container `web`: secret `pw` is not defined",
        ]
    );
}

#[test]
fn dependency_cycle_is_reported_once_at_first_member() {
    let a = "[container.a]\nimage = \"IMG\"\ndepends_on = [\"b\"]\n";
    let b = "[container.b]\nimage = \"IMG\"\ndepends_on = [\"c\"]\n[container.c]\nimage = \"IMG\"\ndepends_on = [\"a\"]\n";
    assert_eq!(
        errors(&[("a.toml", a), ("b.toml", b)]),
        vec!["a.toml:3:1: error: container `a`: dependency cycle: a -> b -> c -> a"]
    );
    one(
        "[container.a]\nimage = \"IMG\"\ndepends_on = [\"a\"]\n",
        "a.toml:3:1: error: container `a`: dependency cycle: a -> a",
    );
}

#[test]
fn duplicate_definition_names_the_first() {
    let a = "[container.web]\nimage = \"IMG\"\n";
    let b = "# again\n[container.web]\nimage = \"IMG\"\n[volume.web]\n";
    assert_eq!(
        errors(&[("a.toml", a), ("b.toml", b)]),
        vec!["b.toml:2:12: error: container `web` is defined twice: first defined at a.toml:1"]
    );
}

#[test]
fn host_port_clashes() {
    let text = "[container.a]\nimage = \"IMG\"\nports = [\"8080:80\"]\n[container.b]\nimage = \"IMG\"\nports = [\"127.0.0.1:8080:81\", \"8080:80/udp\"]\n";
    assert_eq!(
        errors(&[("a.toml", text)]),
        vec![
            "a.toml:6:10: error: container `b`: host port 8080/tcp is already published by container `a` (8080:80/tcp, a.toml:3)"
        ]
    );
    // Different node selectors: no clash without a node; a clash on a node both target.
    let text = "[container.a]\nimage = \"IMG\"\nports = [\"8080:80\"]\nnodes = { names = [\"edge-*\"] }\n[container.b]\nimage = \"IMG\"\nports = [\"8080:80\"]\n";
    assert!(errors(&[("a.toml", text)]).is_empty());
    let node = NodeIdentity {
        name: Some("edge-1".into()),
        labels: Default::default(),
    };
    assert_eq!(
        errors_for(&[("a.toml", text)], Some(&node)),
        vec![
            "a.toml:7:10: error: container `b`: host port 8080/tcp is already published by container `a` (8080:80/tcp, a.toml:3)"
        ]
    );
}

#[test]
fn invalid_image_references() {
    one(
        "[container.web]\nimage = \"r.io/App:1\"\n",
        "a.toml:2:9: error: container `web`: image: invalid image reference `r.io/App:1`: invalid repository path component `App`: use lowercase letters, digits and single separators `.`, `_`, `__` or `-`",
    );
    one(
        "[container.web]\nimage = \"r.io/app@sha256:abc\"\n",
        "a.toml:2:9: error: container `web`: image: invalid image reference `r.io/app@sha256:abc`: invalid digest `sha256:abc`: expected `sha256:` followed by 64 lowercase hex digits",
    );
    one(
        "[container.web]\nimage = \"r.io/app:-x\"\n",
        "a.toml:2:9: error: container `web`: image: invalid image reference `r.io/app:-x`: invalid tag `-x`: up to 128 characters from letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
    );
}

#[test]
fn values_out_of_range() {
    let cases = [
        (
            "[container.web.resources]\nmemory = \"12 parsecs\"\n",
            "a.toml:4:10: error: container `web`: resources.memory: invalid size `12 parsecs`: use a number with a unit such as `512KiB`, `128MiB`, `1GiB`, `1GB` or `512m`",
        ),
        (
            "[container.web.resources]\nmemory = \"1MiB\"\n",
            "a.toml:4:10: error: container `web`: resources.memory: memory limit `1MiB` is below the 6MiB minimum the OCI runtimes accept",
        ),
        (
            "[container.web.resources]\ncpus = 0\n",
            "a.toml:4:8: error: container `web`: `resources.cpus` must be greater than 0 and at most 1024, found 0",
        ),
        (
            "[container.web.resources]\npids = 0\n",
            "a.toml:4:8: error: container `web`: `resources.pids` must be at least 1, found 0",
        ),
        (
            "stop_timeout = \"10 parsecs\"\n",
            "a.toml:3:16: error: container `web`: stop_timeout: invalid duration `10 parsecs`: use forms like `10s`, `2m`, `1m30s` or `500ms`",
        ),
        (
            "update_timeout = \"2h\"\n",
            "a.toml:3:18: error: container `web`: update_timeout: `2h` is longer than 30m: a pass waits for the update",
        ),
        (
            "health = { exec = [\"true\"], interval = \"0s\" }\n",
            "a.toml:3:40: error: container `web`: health.interval: `0s` is out of range: from 1s to 1h",
        ),
        (
            "health = { exec = [\"true\"], timeout = \"365d\" }\n",
            "a.toml:3:39: error: container `web`: health.timeout: `365d` is out of range: from 100ms to 2m",
        ),
        (
            "update_timeout = \"500ms\"\n",
            "a.toml:3:18: error: container `web`: update_timeout: `500ms` is shorter than 1s: an update needs time to start",
        ),
        (
            "stop_signal = \"SIGFOO\"\n",
            "a.toml:3:15: error: container `web`: stop_signal: invalid signal `SIGFOO`: use a name such as `SIGTERM`, `SIGINT`, `SIGQUIT` or a number from 1 to 64",
        ),
        (
            "ports = [\"80\"]\n",
            "a.toml:3:10: error: container `web`: ports[0]: port `80` has no host port: expected `[host_ip:]host_port:container_port[/tcp|udp]`",
        ),
        (
            "ports = [\"70000:80\"]\n",
            "a.toml:3:10: error: container `web`: ports[0]: host port in `70000:80` must be between 1 and 65535",
        ),
        (
            "devices = [\"/dev/ttyUSB0:/dev/ttyUSB0:rx\"]\n",
            "a.toml:3:12: error: container `web`: devices[0]: invalid device permissions `rx` in `/dev/ttyUSB0:/dev/ttyUSB0:rx`: use a combination of r, w and m",
        ),
        (
            "ulimits = { nofile = \"4096:1024\" }\n",
            "a.toml:3:22: error: container `web`: ulimits.nofile: invalid ulimit `4096:1024`: the soft limit is above the hard limit",
        ),
        (
            "ulimits = { nofiles = \"1024\" }\n",
            "a.toml:3:23: error: container `web`: unknown ulimit `nofiles`, did you mean `nofile`?",
        ),
        (
            "restart = \"alwyas\"\n",
            "a.toml:3:11: error: container `web`: restart: invalid restart policy `alwyas`: expected one of `no`, `on-failure`, `always`, did you mean `always`?",
        ),
        (
            "network_mode = \"bridged\"\n",
            "a.toml:3:16: error: container `web`: network_mode: invalid network_mode `bridged`: expected one of `bridge`, `host`, `none`, did you mean `bridge`?",
        ),
        (
            "update = \"rolling\"\n",
            "a.toml:3:10: error: container `web`: update: invalid update strategy `rolling`: expected one of `stop-first`, `start-first`",
        ),
        (
            "extra_hosts = [\"gw:10.0.0\"]\n",
            "a.toml:3:16: error: container `web`: extra_hosts[0]: invalid extra host `gw:10.0.0`: `10.0.0` is not an IP address",
        ),
        (
            "cap_add = [\"SYS_ADMN\"]\n",
            "a.toml:3:12: error: container `web`: cap_add[0]: unknown capability `SYS_ADMN`, did you mean `SYS_ADMIN`?",
        ),
        (
            "user = \"a b\"\n",
            "a.toml:3:8: error: container `web`: user: invalid user `a b`: expected `uid[:gid]` or a user name from the image",
        ),
    ];
    for (extra, expected) in cases {
        let text = format!("[container.web]\nimage = \"IMG\"\n{extra}");
        assert_eq!(
            errors(&[("a.toml", &text)]),
            vec![expected.to_string()],
            "input: {extra}"
        );
    }
}

/// Every error in a value starts with the key's path, nested keys included, and carries
/// it as the diagnostic's key.
#[test]
fn every_value_error_names_its_key() {
    let health = "[container.web.health]\nexec = [\"true\"]\n";
    let cases = [
        (
            format!("{health}interval = \"often\"\n"),
            "health.interval",
            "invalid duration `often`",
        ),
        (
            format!("{health}timeout = \"2 fortnights\"\n"),
            "health.timeout",
            "invalid duration",
        ),
        (
            format!("{health}start_period = \"x\"\n"),
            "health.start_period",
            "invalid duration",
        ),
        (
            "[[container.web.mounts]]\ntmpfs = \"/tmp\"\nsize = \"big\"\n".to_string(),
            "mounts[0].size",
            "invalid size `big`",
        ),
        (
            "stop_timeout = \"9999999days\"\n".to_string(),
            "stop_timeout",
            "is longer than",
        ),
        (
            "nodes = { names = [\"[\"] }\n".to_string(),
            "nodes.names",
            "invalid name glob",
        ),
        (
            "hostname = \"-x\"\n".to_string(),
            "hostname",
            "invalid hostname",
        ),
    ];
    for (extra, key, what) in cases {
        let text = format!("[container.web]\nimage = \"IMG\"\n{extra}");
        let c = check(&tree(&[("a.toml", &text)]), None);
        assert_eq!(c.errors.len(), 1, "{extra}: {:?}", c.errors);
        let d = &c.errors[0];
        assert_eq!(d.key.as_deref(), Some(key), "{d:?}");
        let prefix = format!("container `web`: {key}: ");
        assert!(d.message.starts_with(&prefix), "{extra}: {}", d.message);
        assert!(d.message.contains(what), "{}", d.message);
    }
}

#[test]
fn subnet_rules() {
    one(
        "[network.front]\nsubnet = \"10.89.1.5/24\"\n",
        "a.toml:2:10: error: network `front`: subnet: subnet `10.89.1.5/24` has host bits set: did you mean `10.89.1.0/24`?",
    );
    one(
        "[network.front]\nsubnet = \"10.89.1.0/31\"\n",
        "a.toml:2:10: error: network `front`: subnet: subnet `10.89.1.0/31` is too small for a bridge network: use a prefix of at most /30",
    );
    one(
        "[network.a]\nsubnet = \"10.89.0.0/16\"\n[network.b]\nsubnet = \"10.89.3.0/24\"\n",
        "a.toml:3:10: error: network `b`: subnet 10.89.3.0/24 overlaps network `a` (10.89.0.0/16)",
    );
}

#[test]
fn secret_target_must_be_one_component() {
    one_with(
        &[
            (
                "a.toml",
                "[secret.pw]\nfile = \"pw.age\"\n[container.web]\nimage = \"IMG\"\n[[container.web.secrets]]\nname = \"pw\"\ntarget = \"../etc/shadow\"\n",
            ),
            ("pw.age", ""),
        ],
        "a.toml:7:10: error: container `web`: secret target `../etc/shadow` must be a single file name (no `/`, not `.` or `..`); it is placed in /run/secrets/",
    );
}

/// Like [`one`], with extra (non-TOML) files in the tree.
fn one_with(files: &[(&str, &str)], expected: &str) {
    assert_eq!(errors(files), vec![expected.to_string()]);
}

#[test]
fn file_references_must_exist_inside_the_tree() {
    let text = "[secret.pw]\nfile = \"secrets/pw.age\"\n[secret.out]\nfile = \"../../etc/shadow\"\n[container.web]\nimage = \"IMG\"\nseccomp = \"profiles/none.json\"\n";
    assert_eq!(
        errors(&[("a.toml", text)]),
        vec![
            "a.toml:1:9: error: secret `pw`: file `secrets/pw.age` does not exist in the spec tree",
            "a.toml:3:9: error: secret `out`: file `../../etc/shadow` escapes the spec root",
            "a.toml:7:1: error: container `web`: seccomp profile `profiles/none.json` does not exist in the spec tree",
        ]
    );
    let ok = errors(&[
        (
            "a.toml",
            "[secret.pw]\nfile = \"./secrets/../secrets/pw.age\"\n",
        ),
        ("secrets/pw.age", ""),
    ]);
    assert!(ok.is_empty(), "{ok:?}");
}

#[test]
fn ports_need_bridge_mode_and_stop_first() {
    one(
        "[container.web]\nimage = \"IMG\"\nnetwork_mode = \"host\"\nports = [\"80:80\"]\n",
        "a.toml:4:1: error: container `web`: `ports` cannot be used with network_mode = \"host\": the container shares the host's network, so its ports are the host's already",
    );
    one(
        "[container.web]\nimage = \"IMG\"\nnetwork_mode = \"none\"\nports = [\"80:80\"]\n",
        "a.toml:4:1: error: container `web`: `ports` cannot be used with network_mode = \"none\": the container has only loopback, so there is nothing to publish",
    );
    one(
        "[container.web]\nimage = \"IMG\"\nupdate = \"start-first\"\nports = [\"80:80\"]\n",
        "a.toml:3:1: error: container `web`: update = \"start-first\" cannot be used with host `ports`: the old and new instances would need the same host port; use \"stop-first\"",
    );
}

#[test]
fn env_values_must_be_strings() {
    one(
        "[container.web]\nimage = \"IMG\"\nenv = { PORT = 8080, DEBUG = \"1\" }\n",
        "a.toml:3:16: error: container `web`: `env.PORT` must be a string, found an integer (quote it: PORT = \"8080\")",
    );
    one(
        "[container.web]\nimage = \"IMG\"\n[container.web.env]\nVERBOSE = true\n",
        "a.toml:4:11: error: container `web`: `env.VERBOSE` must be a string, found a boolean (quote it: VERBOSE = \"true\")",
    );
}

#[test]
fn mount_rules() {
    one(
        "[container.web]\nimage = \"IMG\"\n[[container.web.mounts]]\ntarget = \"/x\"\n",
        "a.toml:3:1: error: container `web`: a mount needs one of `volume`, `bind` or `tmpfs`",
    );
    one(
        "[container.web]\nimage = \"IMG\"\n[[container.web.mounts]]\nbind = \"srv\"\ntarget = \"/x\"\n",
        "a.toml:4:8: error: container `web`: `mounts[0].bind` must be an absolute path, found `srv`",
    );
    one(
        "[container.web]\nimage = \"IMG\"\n[[container.web.mounts]]\ntmpfs = \"/tmp\"\ntarget = \"/tmp\"\n",
        "a.toml:5:1: error: container `web`: a tmpfs mount takes its target as its value (`tmpfs = \"/tmp\"`); remove `target`",
    );
}

#[test]
fn health_needs_exactly_one_probe() {
    one(
        "[container.web]\nimage = \"IMG\"\n[container.web.health]\ninterval = \"5s\"\n",
        "a.toml:3:1: error: container `web`: `health` needs one of `exec`, `tcp` or `http`",
    );
    one(
        "[container.web]\nimage = \"IMG\"\nhealth = { tcp = 80, http = \"http://x/\" }\n",
        "a.toml:3:10: error: container `web`: `health` takes only one of `exec`, `tcp` or `http`",
    );
}

#[test]
fn node_targeting_reports_dependencies_elsewhere() {
    let text = "[container.db]\nimage = \"IMG\"\nnodes = { names = [\"core-*\"] }\n[container.web]\nimage = \"IMG\"\ndepends_on = [\"db\"]\n";
    let node = NodeIdentity {
        name: Some("edge-1".into()),
        labels: Default::default(),
    };
    assert_eq!(
        errors_for(&[("a.toml", text)], Some(&node)),
        vec![
            "a.toml:6:15: error: container `web`: depends on `db`, which does not target this node; `web` would not start here"
        ]
    );
    assert!(errors(&[("a.toml", text)]).is_empty());
}

#[test]
fn all_errors_of_several_files_in_order() {
    let a = "[container.web]\nimgae = \"IMG\"\n[container.web.resources]\nmemory = \"lots\"\n";
    let b = "[network.front]\nsubnet = \"10.0.0.1/8\"\n[container.db]\nimage = \"IMG\"\nrestart = \"sometimes\"\n";
    let c = "[container.cache\nimage = 1\n";
    let got = errors(&[("c.toml", c), ("b.toml", b), ("a.toml", a)]);
    assert_eq!(
        got,
        vec![
            "a.toml:2:1: error: container `web`: unknown key `imgae`, did you mean `image`?",
            "a.toml:4:10: error: container `web`: resources.memory: invalid size `lots`: use a number with a unit such as `512KiB`, `128MiB`, `1GiB`, `1GB` or `512m`",
            "b.toml:2:10: error: network `front`: subnet: subnet `10.0.0.1/8` has host bits set: did you mean `10.0.0.0/8`?",
            "b.toml:5:11: error: container `db`: restart: invalid restart policy `sometimes`: expected one of `no`, `on-failure`, `always`",
            "c.toml:1:17: error: TOML syntax error: unclosed table, expected `]`",
        ]
    );
}

/// The model round-trips through JSON (the agent stores each container's spec with its
/// instance and reads it back to name changes and to audit what runs).
#[test]
fn containers_round_trip_through_json() {
    let text = "[network.front]\n[volume.data]\n[secret.pw]\nfile = \"pw.age\"\n[container.web]\nimage = \"IMG\"\nuser = \"10001:10001\"\nenv = { A = \"1\" }\nports = [\"127.0.0.1:8080:80/udp\"]\nstop_signal = \"QUIT\"\nstop_timeout = \"1m30s\"\nseccomp = \"unconfined\"\nnetworks = [\"front\"]\nulimits = { nofile = \"1024:4096\" }\nextra_hosts = [\"gw:10.0.0.1\"]\ndevices = [\"/dev/null\"]\nnodes = { names = [\"edge-*\"], labels = { site = \"b\" } }\nhealth = { exec = [\"true\"], interval = \"3s\" }\n[container.web.resources]\nmemory = \"64MiB\"\ncpus = 0.5\npids = 10\n[[container.web.mounts]]\nvolume = \"data\"\ntarget = \"/data\"\n[[container.web.mounts]]\ntmpfs = \"/tmp\"\nsize = \"1MiB\"\n[[container.web.secrets]]\nname = \"pw\"\n";
    let c = check(&tree(&[("a.toml", text), ("pw.age", "")]), None);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let web = &c.state.containers["web"];
    let json = serde_json::to_value(web).unwrap();
    let back: crate::Container = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), json);
    assert_eq!(back.stop_timeout, std::time::Duration::from_secs(90));
}

#[test]
fn mount_targets_are_not_the_root_and_not_used_twice() {
    let m = |src: &str, target: &str| {
        format!("[[container.web.mounts]]\n{src}\ntarget = \"{target}\"\n")
    };
    let text = format!(
        "[volume.v]\n[container.web]\nimage = \"IMG\"\n{}{}{}[[container.web.mounts]]\ntmpfs = \"/data/./\"\n",
        m("bind = \"/srv/x\"", "/"),
        m("volume = \"v\"", "/data"),
        m("bind = \"/srv/y\"", "//data/sub/.."),
    );
    assert_eq!(
        errors(&[("a.toml", &text)]),
        vec![
            "a.toml:6:1: error: container `web`: a mount cannot replace the container's root filesystem (`/`); mount it on a directory such as `/data`",
            "a.toml:12:1: error: container `web`: mount target `/data` is used twice (also mounts[1]); the later mount would hide the earlier",
            "a.toml:14:1: error: container `web`: mount target `/data` is used twice (also mounts[1]); the later mount would hide the earlier",
        ]
    );
}

#[test]
fn quoted_input_cannot_forge_lines_or_drive_a_terminal() {
    let text =
        "[container.web]\nimage = \"IMG\"\nhostname = \"\\u001b]0;pwned\\u0007\\nFAKE: ok\"\n";
    let errs = errors(&[("a.toml", text)]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(!errs[0].chars().any(char::is_control), "{:?}", errs[0]);
    assert!(
        errs[0].contains("\\u{1b}]0;pwned\\u{7}\\u{a}FAKE: ok"),
        "{}",
        errs[0]
    );
}
