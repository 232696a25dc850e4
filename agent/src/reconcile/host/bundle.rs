//! The instance's OCI bundle: its hostname file, what the render reads from the host
//! and the repository (the seccomp profile file, the devices asked for), and the
//! rendered `config.json` (`runtime::render`, pure).

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use crate::reconcile::images::ReadyImage;
use crate::reconcile::model::DesiredContainer;
use crate::runtime::render::{self, DeviceKind, HostDevice, InstancePaths, RenderInput};
use crate::runtime::state::{self, InstanceDirs};
use crate::storage::treefile;

use super::error::at;
use super::network::NetFiles;
use super::{ContainerHost, StepError, failpoint};

/// What the bundle of one instance is made from, besides the host.
pub(super) struct BundleInput<'a> {
    pub dc: &'a DesiredContainer,
    pub image: &'a ReadyImage,
    pub dirs: &'a InstanceDirs,
    pub volumes: BTreeMap<String, PathBuf>,
    pub binds: BTreeMap<usize, PathBuf>,
    pub secrets_dir: Option<PathBuf>,
    pub net: &'a NetFiles,
}

impl ContainerHost<'_> {
    /// Writes the hostname file and the rendered `bundle/config.json`.
    pub(super) fn write_bundle(&self, b: &BundleInput<'_>) -> Result<(), StepError> {
        let (c, dirs, image) = (&b.dc.spec, b.dirs, b.image);
        state::write_atomic_mode(
            &dirs.hostname(),
            format!("{}\n", c.hostname).as_bytes(),
            state::CONTAINER_FILE,
        )
        .map_err(at("write hostname"))?;

        let seccomp = match &c.seccomp {
            berth_spec::Seccomp::Profile(f) => Some(
                String::from_utf8_lossy(
                    &treefile::read(&self.root, f, treefile::MAX_SECCOMP_PROFILE)
                        .map_err(at("seccomp profile"))?,
                )
                .into_owned(),
            ),
            _ => None,
        };
        let devices = stat_devices(c).map_err(at("device"))?;
        let paths = InstancePaths {
            rootfs: dirs.rootfs(),
            volumes: b.volumes.clone(),
            binds: b.binds.clone(),
            secrets_dir: b.secrets_dir.clone(),
            hosts: b.net.hosts.clone(),
            resolv_conf: b.net.resolv_conf.clone(),
            hostname: Some(dirs.hostname()),
            netns: b.net.netns.clone(),
        };
        let input = RenderInput {
            container: c,
            image: &image.config,
            spec_hash: &b.dc.hash,
            paths: &paths,
            state_dir: &self.state_dir,
            host: self.host,
            passwd: image.passwd.as_deref(),
            group: image.group.as_deref(),
            seccomp_profile: seccomp.as_deref(),
            devices: &devices,
        };
        let config = render::render(&input).map_err(at("render"))?;
        let json = render::to_json(&config).map_err(at("render"))?;
        state::write_atomic(&dirs.config(), json.as_bytes()).map_err(at("write the bundle"))?;
        failpoint("after-bundle");
        Ok(())
    }
}

/// Stats the host devices a container asks for.
fn stat_devices(c: &berth_spec::Container) -> std::io::Result<Vec<HostDevice>> {
    c.devices
        .iter()
        .map(|d| {
            let m = std::fs::metadata(&d.host)?;
            let kind = if m.file_type().is_block_device() {
                DeviceKind::Block
            } else {
                DeviceKind::Char
            };
            let rdev = m.rdev();
            Ok(HostDevice {
                path: d.host.clone(),
                kind,
                major: i64::from(nix::sys::stat::major(rdev) as u32),
                minor: i64::from(nix::sys::stat::minor(rdev) as u32),
                file_mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            })
        })
        .collect()
}
