//! Small OCI images built in Rust from the host's `busybox-static`, and pushed to a
//! test registry over the distribution API.
//!
//! An image has two gzip layers: `/bin/busybox` with applet symlinks, then `/etc`
//! (`passwd` and `group` with the non-root user `app`, uid/gid 10001), `/tmp` and
//! any extra files. Tar headers use fixed owners and times, and gzip writes no time,
//! so the same spec always gives the same digests. Configs carry correct `diff_ids`
//! (sha256 of each uncompressed tar) and history; manifests use OCI or Docker schema 2
//! media types; indexes (OCI) and manifest lists (Docker) tie platforms together.

use std::io::Write;

use sha2::{Digest as _, Sha256};

use crate::registry::TestRegistry;
use crate::registry::http;

/// Applets linked to `/bin/busybox`.
pub const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "id", "true", "false", "env", "wget", "touch", "mkdir",
    "rm", "ps", "hostname", "httpd", "grep", "stat", "nc", "head",
];
/// Fixed mtime of every entry (2023-11-14).
const MTIME: u64 = 1_700_000_000;

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub architecture: String,
    pub variant: Option<String>,
    /// Docker schema 2 media types instead of OCI.
    pub docker: bool,
    /// Config `User` (default `10001:10001`).
    pub user: String,
    pub cmd: Vec<String>,
    /// Extra files `(path without leading /, content)` in the second layer.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            architecture: host_arch().to_string(),
            variant: None,
            docker: false,
            user: "10001:10001".into(),
            cmd: vec!["/bin/sh".into()],
            files: Vec::new(),
        }
    }
}

/// The Go name of this host's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// One layer blob.
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
    pub media_type: String,
}

/// A built image, ready to push.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub media_type: String,
    pub platform: serde_json::Value,
}

/// `sha256:<hex>` of bytes.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn tar_layer(entries: &[(String, TarEntry)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        let result = match entry {
            TarEntry::Dir(mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                builder.append_data(&mut h, path, std::io::empty())
            }
            TarEntry::File(mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                builder.append_data(&mut h, path, data.as_slice())
            }
            TarEntry::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                builder.append_link(&mut h, path, target)
            }
        };
        result.unwrap_or_else(|e| panic!("tar {path}: {e}"));
    }
    builder.into_inner().unwrap_or_else(|e| panic!("tar: {e}"))
}

enum TarEntry {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(String),
}

fn gzip_layer(tar: Vec<u8>, docker: bool) -> Layer {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap_or_else(|e| panic!("gzip: {e}"));
    let blob = gz.finish().unwrap_or_else(|e| panic!("gzip: {e}"));
    Layer {
        digest: sha256(&blob),
        diff_id: sha256(&tar),
        blob,
        media_type: if docker {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        .into(),
    }
}

/// Builds the busybox image described by `spec`. Panics without `/bin/busybox`
/// (check [`have_busybox`] first).
pub fn busybox(spec: &ImageSpec) -> Image {
    let busybox =
        std::fs::read("/bin/busybox").unwrap_or_else(|e| panic!("read /bin/busybox: {e}"));
    let mut base = vec![
        ("bin".to_string(), TarEntry::Dir(0o755)),
        ("bin/busybox".into(), TarEntry::File(0o755, busybox)),
    ];
    for applet in APPLETS {
        base.push((format!("bin/{applet}"), TarEntry::Symlink("busybox".into())));
    }
    let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:10001:10001:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    let group = "root:x:0:\napp:x:10001:\nnogroup:x:65534:\n";
    let mut etc = vec![
        ("etc".to_string(), TarEntry::Dir(0o755)),
        ("etc/passwd".into(), TarEntry::File(0o644, passwd.into())),
        ("etc/group".into(), TarEntry::File(0o644, group.into())),
        ("home".into(), TarEntry::Dir(0o755)),
        ("tmp".into(), TarEntry::Dir(0o1777)),
        ("srv".into(), TarEntry::Dir(0o755)),
        (
            "srv/index.html".into(),
            TarEntry::File(0o644, b"hello from berth\n".to_vec()),
        ),
        ("data".into(), TarEntry::Dir(0o755)),
    ];
    for (path, data) in &spec.files {
        etc.push((path.clone(), TarEntry::File(0o644, data.clone())));
    }
    let layers = vec![
        gzip_layer(tar_layer(&base), spec.docker),
        gzip_layer(tar_layer(&etc), spec.docker),
    ];
    let mut platform = serde_json::json!({ "architecture": spec.architecture, "os": "linux" });
    if let Some(v) = &spec.variant {
        platform["variant"] = v.clone().into();
    }
    let mut config = serde_json::json!({
        "created": "2023-11-14T22:13:20Z",
        "architecture": spec.architecture,
        "os": "linux",
        "config": {
            "User": spec.user,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": spec.cmd,
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() },
        "history": [
            { "created": "2023-11-14T22:13:20Z", "created_by": "berth fixture: busybox and applets" },
            { "created": "2023-11-14T22:13:20Z", "created_by": "berth fixture: /etc, /tmp, extra files" },
            { "created": "2023-11-14T22:13:20Z", "created_by": "berth fixture: CMD", "empty_layer": true },
        ],
    });
    if let Some(v) = &spec.variant {
        config["variant"] = v.clone().into();
    }
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let (media_type, config_type) = if spec.docker {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
        )
    } else {
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
        )
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": { "mediaType": config_type, "digest": sha256(&config), "size": config.len() },
        "layers": layers.iter().map(|l| serde_json::json!({ "mediaType": l.media_type, "digest": l.digest, "size": l.blob.len() })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    Image {
        config_digest: sha256(&config),
        config,
        manifest_digest: sha256(&manifest),
        manifest,
        media_type: media_type.into(),
        layers,
        platform,
    }
}

/// True when `/bin/busybox` exists; see [`crate::missing`].
pub fn have_busybox() -> bool {
    std::path::Path::new("/bin/busybox").is_file()
        || crate::missing("/bin/busybox (busybox-static)")
}

fn auth_headers(reg: &TestRegistry) -> Vec<(&'static str, String)> {
    reg.auth_header()
        .map(|h| ("Authorization", h))
        .into_iter()
        .collect()
}

/// Pushes a blob (POST then PUT with `?digest=`), unless the registry has it.
pub fn push_blob(reg: &TestRegistry, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let auth = auth_headers(reg);
    let h: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let head = http::request(
        "HEAD",
        &reg.url(&format!("/v2/{repo}/blobs/{digest}")),
        &h,
        b"",
    )
    .unwrap_or_else(|e| panic!("HEAD blob: {e}"));
    if head.status == 200 {
        return digest;
    }
    let start = http::request(
        "POST",
        &reg.url(&format!("/v2/{repo}/blobs/uploads/")),
        &h,
        b"",
    )
    .unwrap_or_else(|e| panic!("POST upload: {e}"));
    assert_eq!(
        start.status,
        202,
        "start upload: {}",
        String::from_utf8_lossy(&start.body)
    );
    let location = start
        .header("location")
        .unwrap_or_else(|| panic!("upload without Location"));
    let location = if location.starts_with("http") {
        location.to_string()
    } else {
        reg.url(location)
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let url = format!("{location}{sep}digest={}", digest.replace(':', "%3A"));
    let mut hh = h.clone();
    hh.push(("Content-Type", "application/octet-stream"));
    let put = http::request("PUT", &url, &hh, data).unwrap_or_else(|e| panic!("PUT blob: {e}"));
    assert_eq!(
        put.status,
        201,
        "put blob: {}",
        String::from_utf8_lossy(&put.body)
    );
    digest
}

/// Pushes a manifest under `reference` (tag or digest); returns its digest.
pub fn push_manifest(
    reg: &TestRegistry,
    repo: &str,
    reference: &str,
    media_type: &str,
    data: &[u8],
) -> String {
    let auth = auth_headers(reg);
    let mut h: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.push(("Content-Type", media_type));
    let put = http::request(
        "PUT",
        &reg.url(&format!("/v2/{repo}/manifests/{reference}")),
        &h,
        data,
    )
    .unwrap_or_else(|e| panic!("PUT manifest: {e}"));
    assert_eq!(
        put.status,
        201,
        "put manifest: {}",
        String::from_utf8_lossy(&put.body)
    );
    sha256(data)
}

/// Pushes an image's blobs and manifest as `repo:tag`; returns the manifest digest.
pub fn push(reg: &TestRegistry, repo: &str, tag: &str, image: &Image) -> String {
    for layer in &image.layers {
        push_blob(reg, repo, &layer.blob);
    }
    push_blob(reg, repo, &image.config);
    push_manifest(reg, repo, tag, &image.media_type, &image.manifest)
}

/// Pushes images and an index (or Docker manifest list) over them as `repo:tag`;
/// returns the index digest.
pub fn push_index(
    reg: &TestRegistry,
    repo: &str,
    tag: &str,
    images: &[Image],
    docker: bool,
) -> String {
    let mut entries = Vec::new();
    for image in images {
        let d = push(reg, repo, &image.manifest_digest, image);
        entries.push(serde_json::json!({ "mediaType": image.media_type, "digest": d, "size": image.manifest.len(), "platform": image.platform }));
    }
    let media_type = if docker {
        "application/vnd.docker.distribution.manifest.list.v2+json"
    } else {
        "application/vnd.oci.image.index.v1+json"
    };
    let index =
        serde_json::json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": entries });
    push_manifest(
        reg,
        repo,
        tag,
        media_type,
        &serde_json::to_vec(&index).unwrap_or_default(),
    )
}
