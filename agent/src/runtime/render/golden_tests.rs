//! Golden tests: scenarios rendered to pretty JSON and compared with
//! `testdata/<scenario>.json`. Run with `UPDATE_GOLDEN=1` to rewrite the files, then
//! review the diff: it is exactly what changes in the configs runc runs.

use std::path::PathBuf;

use super::fixtures::{Scenario, busybox, image, minimal_toml};
use super::{render, to_json};

fn golden(name: &str, scenario: &Scenario) {
    let spec = render(&scenario.input()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let actual = to_json(&spec).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/runtime/render/testdata")
        .join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name}: rendered config differs from {} at line {} \
             (run with UPDATE_GOLDEN=1 and review the diff):\n  expected: {}\n  actual:   {}",
            path.display(),
            line + 1,
            expected.lines().nth(line).unwrap_or("<end>"),
            actual.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

#[test]
fn minimal() {
    let s = Scenario::new(&minimal_toml("hello", ""), "hello", busybox());
    golden("minimal", &s);
}

/// Every key of the spec, as in DESIGN.md §3.
#[test]
fn full() {
    let toml = r#"
[container.db]
image = "registry.example.com/shop/db@sha256:feb68abd8fd7ed21d80c52120090f661332bad0c2dbd2625851c6ee341e97c85"

[container.web]
image = "registry.example.com/shop/web@sha256:feb68abd8fd7ed21d80c52120090f661332bad0c2dbd2625851c6ee341e97c85"
user = "10001:10001"
entrypoint = ["/bin/httpd"]
command = ["-f", "-p", "8080"]
workdir = "/srv"
env = { LOG_LEVEL = "info", PATH = "/srv/bin:/usr/bin:/bin" }
hostname = "web"
restart = "always"
read_only = true
cap_drop = ["ALL"]
cap_add = ["NET_BIND_SERVICE"]
no_new_privileges = true
privileged = false
seccomp = "default"
network_mode = "bridge"
networks = ["front"]
ports = ["8080:8080/tcp"]
depends_on = ["db"]
stop_signal = "SIGTERM"
stop_timeout = "10s"
labels = { team = "shop" }
nodes = { names = ["edge-*"], labels = { site = "berlin" } }
update = "stop-first"
devices = ["/dev/ttyUSB0:/dev/ttyUSB0:rw"]
ulimits = { nofile = "1024:1048576", nproc = "512:1024" }
sysctls = { "net.ipv4.ip_unprivileged_port_start" = "0" }
extra_hosts = ["gateway:10.0.0.1"]

[container.web.resources]
memory = "128MiB"
cpus = 0.5
pids = 256

[container.web.health]
exec = ["/bin/wget", "-q", "-O-", "http://127.0.0.1:8080/"]
interval = "10s"

[[container.web.mounts]]
volume = "web-data"
target = "/data"

[[container.web.mounts]]
bind = "/srv/media"
target = "/media"
read_only = true

[[container.web.mounts]]
tmpfs = "/tmp"
size = "16MiB"

[[container.web.secrets]]
name = "db-password"
target = "db-password"
"#;
    let s = Scenario::new(
        toml,
        "web",
        image(
            r#"{"User":"root","Env":["PATH=/usr/bin:/bin","TZ=UTC"],"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["httpd"],"WorkingDir":"/var/www"}"#,
        ),
    );
    golden("full", &s);
}

#[test]
fn privileged() {
    let s = Scenario::new(
        &minimal_toml("tool", "privileged = true\nnetwork_mode = \"host\""),
        "tool",
        busybox(),
    );
    golden("privileged", &s);
}

#[test]
fn read_only_with_tmpfs() {
    let extra = r#"user = "10001"
read_only = true
cap_drop = ["ALL"]
[[container.cache.mounts]]
tmpfs = "/tmp"
size = "64MiB"
[[container.cache.mounts]]
tmpfs = "/var/cache/app"
read_only = true"#;
    let s = Scenario::new(&minimal_toml("cache", extra), "cache", busybox());
    golden("read_only_tmpfs", &s);
}

#[test]
fn user_by_name_with_supplementary_groups() {
    let s = Scenario::new(
        &minimal_toml("player", "user = \"app\"\nnetwork_mode = \"none\""),
        "player",
        busybox(),
    );
    golden("user_by_name", &s);
}

/// The spec's entrypoint replaces the image's and drops the image's Cmd.
#[test]
fn entrypoint_override() {
    let s = Scenario::new(
        &minimal_toml(
            "job",
            "entrypoint = [\"/bin/sh\", \"-c\"]\nseccomp = \"unconfined\"",
        ),
        "job",
        image(r#"{"Entrypoint":["/entrypoint.sh"],"Cmd":["--serve"],"User":"daemon"}"#),
    );
    golden("entrypoint_override", &s);
}

/// The image's Entrypoint stays; the spec's command replaces Cmd.
#[test]
fn command_override() {
    let s = Scenario::new(
        &minimal_toml("cli", "command = [\"--version\"]"),
        "cli",
        image(r#"{"Entrypoint":["/usr/bin/tool"],"Cmd":["--serve"]}"#),
    );
    golden("command_override", &s);
}

/// `network_mode = "none"` and `"host"` as the host prepares them: no namespace of
/// berth's to join, and the hosts, resolv.conf and hostname files bound all the same.
#[test]
fn network_modes_none_and_host() {
    for mode in ["none", "host"] {
        let name = format!("net{mode}");
        let mut s = Scenario::new(
            &minimal_toml(&name, &format!("network_mode = \"{mode}\"")),
            &name,
            busybox(),
        );
        s.paths.netns = None;
        golden(&format!("network_{mode}"), &s);
    }
}
