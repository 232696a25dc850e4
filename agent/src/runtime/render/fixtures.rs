//! Test fixtures: containers parsed from TOML through `berth_spec::check` (so defaults
//! are the real ones), image configs from JSON, and a fixed host.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci_spec::image::ImageConfiguration;

use berth_spec::{Container, SourceFile, Tree};

use super::{DeviceKind, HostDevice, HostInfo, InstancePaths, RenderInput};
use crate::runtime::spec_hash::SpecHash;

/// A fixed hash, so goldens do not move when the model's serialisation does.
pub const HASH: &str = "4f3c2a1b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a291807f6e5d4c3b2a19080";

pub const DIGEST: &str = "sha256:feb68abd8fd7ed21d80c52120090f661332bad0c2dbd2625851c6ee341e97c85";

/// Objects any fixture container may reference.
const SHARED: &str = r#"
[network.front]
subnet = "10.89.1.0/24"
[volume.web-data]
[secret.db-password]
file = "secrets/db-password.age"
[secret.api-token]
file = "secrets/api-token.age"
"#;

/// Parses `toml` (plus the shared objects) and returns container `name`.
pub fn container(toml: &str, name: &str) -> Container {
    let mut tree = Tree::from_sources(vec![SourceFile {
        path: "spec.toml".into(),
        text: format!("{SHARED}\n{toml}"),
    }]);
    tree.files.insert("secrets/db-password.age".into());
    tree.files.insert("secrets/api-token.age".into());
    tree.files.insert("seccomp/strict.json".into());
    let checked = berth_spec::check(&tree, None);
    assert!(
        checked.is_ok(),
        "fixture does not validate: {:?}",
        checked.errors
    );
    checked.state.containers[name].clone()
}

/// An image config with the given `config` object (JSON).
pub fn image(config: &str) -> ImageConfiguration {
    let json = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{config},
            "rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    );
    serde_json::from_str(&json).unwrap()
}

/// busybox's default config: `Cmd ["sh"]`, a PATH, no user.
pub fn busybox() -> ImageConfiguration {
    image(
        r#"{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]}"#,
    )
}

pub const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:10001:10001:app:/home/app:/bin/sh
";

pub const GROUP: &str = "\
root:x:0:
daemon:x:1:
audio:x:29:app
video:x:44:daemon,app
app:x:10001:
";

pub fn host() -> HostInfo {
    HostInfo {
        arch: "x86_64".into(),
        kernel: (6, 1),
        rlimit_hard: BTreeMap::from([("nofile".into(), 524_288), ("nproc".into(), 63_536)]),
        cgroup_v2: false,
        swap_limit: true,
        extra_masked_paths: vec!["/sys/devices/system/cpu/cpu0/thermal_throttle".into()],
        all_devices: vec![
            device("/dev/null", 1, 3),
            device("/dev/ttyUSB0", 188, 0),
            device("/dev/kmsg", 1, 11),
        ],
    }
}

pub fn device(path: &str, major: i64, minor: i64) -> HostDevice {
    HostDevice {
        path: path.into(),
        kind: DeviceKind::Char,
        major,
        minor,
        file_mode: 0o660,
        uid: 0,
        gid: 20,
    }
}

pub fn paths(instance: &str) -> InstancePaths {
    let run = PathBuf::from("/run/berth");
    let inst = PathBuf::from("/var/lib/berth/instances").join(instance);
    InstancePaths {
        rootfs: inst.join("rootfs"),
        volumes: BTreeMap::from([(
            "web-data".to_string(),
            PathBuf::from("/var/lib/berth/volumes/web-data"),
        )]),
        // The full scenario's bind is its second mount.
        binds: BTreeMap::from([(1, inst.join("binds/1"))]),
        secrets_dir: Some(run.join("secrets").join(instance)),
        hosts: Some(inst.join("hosts")),
        resolv_conf: Some(inst.join("resolv.conf")),
        hostname: Some(inst.join("hostname")),
        netns: Some(run.join("netns").join(instance)),
    }
}

/// Owns everything a [`RenderInput`] borrows.
pub struct Scenario {
    pub container: Container,
    pub image: ImageConfiguration,
    pub hash: SpecHash,
    pub paths: InstancePaths,
    pub host: HostInfo,
    pub passwd: Option<String>,
    pub group: Option<String>,
    pub seccomp_profile: Option<String>,
    pub devices: Vec<HostDevice>,
}

impl Scenario {
    pub fn new(toml: &str, name: &str, image: ImageConfiguration) -> Scenario {
        let hash = SpecHash::parse(HASH).unwrap();
        let paths = paths(&hash.instance_id(name));
        Scenario {
            container: container(toml, name),
            image,
            hash,
            paths,
            host: host(),
            passwd: Some(PASSWD.into()),
            group: Some(GROUP.into()),
            seccomp_profile: None,
            devices: vec![device("/dev/ttyUSB0", 188, 0)],
        }
    }

    pub fn input(&self) -> RenderInput<'_> {
        RenderInput {
            container: &self.container,
            image: &self.image,
            spec_hash: &self.hash,
            paths: &self.paths,
            state_dir: std::path::Path::new("/var/lib/berth"),
            host: &self.host,
            passwd: self.passwd.as_deref(),
            group: self.group.as_deref(),
            seccomp_profile: self.seccomp_profile.as_deref(),
            devices: &self.devices,
        }
    }
}

/// `[container.<name>]` with the image line filled in.
pub fn minimal_toml(name: &str, extra: &str) -> String {
    format!("[container.{name}]\nimage = \"registry.example.com/shop/{name}@{DIGEST}\"\n{extra}\n")
}
