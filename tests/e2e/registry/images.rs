//! Making images ready: `berth image unpack` against `umoci unpack`, snapshots at pull
//! time, `berth sign` + `berth image verify`, and the node's signature gate.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::fixture::{self, ImageSpec};
use berth_e2e::have_tools;

use super::{berth_in, json, setup};

fn sh(args: &[&str]) -> Vec<u8> {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One entry of a tree: type, mode, owner, size, content hash or link target.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                "dir".to_string()
            } else if ft.is_file() {
                format!(
                    "file {} {}",
                    m.len(),
                    fixture::sha256(&std::fs::read(&p).unwrap())
                )
            } else {
                format!("special rdev {}", m.rdev())
            };
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} owner {}:{}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid()
                ),
            );
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// An image built with umoci in two layers (the second deletes, replaces and adds),
/// copied into the registry with skopeo. Returns the layout path and image name.
fn umoci_image(work: &Path, host: &str) -> (PathBuf, String) {
    let layout = work.join("layout");
    let image = format!("{}:v1", layout.display());
    let rootfs = work.join("bundle/rootfs");
    sh(&["umoci", "init", "--layout", &layout.to_string_lossy()]);
    sh(&["umoci", "new", "--image", &image]);
    sh(&[
        "umoci",
        "unpack",
        "--image",
        &image,
        &work.join("bundle").to_string_lossy(),
    ]);
    let w = |p: &str, data: &str| {
        let path = rootfs.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    };
    w("etc/motd", "hello\n");
    w("etc/old.conf", "old\n");
    w("srv/data/a.txt", "a\n");
    w("srv/data/b.txt", "b\n");
    std::fs::copy("/bin/busybox", rootfs.join("bin-busybox")).unwrap();
    std::os::unix::fs::symlink("bin-busybox", rootfs.join("sh")).unwrap();
    std::fs::hard_link(rootfs.join("etc/motd"), rootfs.join("etc/motd.hard")).unwrap();
    std::os::unix::fs::chown(rootfs.join("srv/data/a.txt"), Some(1234), Some(4321)).unwrap();
    std::fs::set_permissions(
        rootfs.join("bin-busybox"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    let bundle = work.join("bundle").to_string_lossy().into_owned();
    sh(&["umoci", "repack", "--image", &image, &bundle]);
    // Second layer, from a fresh unpack of the first: a deletion (whiteout), a
    // directory replaced, and additions.
    let bundle = work.join("bundle2").to_string_lossy().into_owned();
    sh(&["umoci", "unpack", "--image", &image, &bundle]);
    let rootfs = work.join("bundle2/rootfs");
    let w = |p: &str, data: &str| {
        let path = rootfs.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    };
    std::fs::remove_file(rootfs.join("etc/old.conf")).unwrap();
    std::fs::remove_dir_all(rootfs.join("srv/data")).unwrap();
    w("srv/data/c.txt", "c\n");
    w("etc/new.conf", "new\n");
    sh(&["umoci", "repack", "--image", &image, &bundle]);
    sh(&["umoci", "config", "--image", &image, "--config.cmd", "/sh"]);
    let dest = format!("docker://{host}/umoci/layered:v1");
    sh(&[
        "skopeo",
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{image}"),
        &dest,
    ]);
    (layout, image)
}

#[test]
fn image_unpack_matches_umoci_unpack() {
    if !have_tools(&["umoci", "skopeo"]) {
        return;
    }
    let Some((reg, state)) = setup() else { return };
    let work = tempfile::tempdir().unwrap();
    let (_layout, image) = umoci_image(work.path(), &reg.host());
    let reference = format!("{}/umoci/layered:v1", reg.host());

    // Not pulled yet: a clear error that says to pull.
    let dest = work.path().join("berth-rootfs");
    let run = berth_in(
        state.path(),
        None,
        &["image", "unpack", &reference, &dest.to_string_lossy()],
    );
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("berth image pull"), "{}", run.stderr);

    let pulled = json(&berth_in(
        state.path(),
        None,
        &["image", "pull", &reference, "--format", "json"],
    ));
    assert_eq!(
        pulled["image"]["layers"].as_array().unwrap().len(),
        2,
        "{pulled}"
    );
    assert_eq!(pulled["snapshots"].as_array().unwrap().len(), 2);
    let run = berth_in(
        state.path(),
        None,
        &["image", "unpack", &reference, &dest.to_string_lossy()],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);

    let theirs = work.path().join("umoci-bundle");
    sh(&[
        "umoci",
        "unpack",
        "--image",
        &image,
        &theirs.to_string_lossy(),
    ]);
    let (ours, theirs) = (describe(&dest), describe(&theirs.join("rootfs")));
    assert_eq!(ours, theirs);
    assert!(!ours.contains_key("etc/old.conf") && !ours.contains_key("srv/data/a.txt"));
    assert!(
        ours["bin-busybox"].contains("mode 4755"),
        "{}",
        ours["bin-busybox"]
    );
    let ino = |p: &str| std::fs::metadata(dest.join(p)).unwrap().ino();
    assert_eq!(
        ino("etc/motd"),
        ino("etc/motd.hard"),
        "hard links stay hard links"
    );
}

/// Writes a node configuration trusting `keys` with the given mode.
fn node_config(dir: &Path, keys: &[&Path], mode: &str, host: &str) -> PathBuf {
    let keys: Vec<String> = keys
        .iter()
        .map(|k| format!("{:?}", k.display().to_string()))
        .collect();
    let path = dir.join(format!("node-{mode}.toml"));
    std::fs::write(
        &path,
        format!(
            "[policy]\nmode = \"{mode}\"\ntrusted_keys = [{}]\n[registries.\"{host}\"]\ninsecure = true\n",
            keys.join(", ")
        ),
    )
    .unwrap();
    path
}

#[test]
fn sign_verify_and_the_signature_gate() {
    let Some((reg, state)) = setup() else { return };
    let keys = tempfile::tempdir().unwrap();
    for name in ["release", "other"] {
        let prefix = keys.path().join(name);
        let run = berth_in(
            state.path(),
            None,
            &["key", "generate", &prefix.to_string_lossy()],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let (release_key, release_pub) = (
        keys.path().join("release.key"),
        keys.path().join("release.pub"),
    );
    let other_pub = keys.path().join("other.pub");
    let signed = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&reg, "shop/signed", "v1", &signed);
    let mut unsigned_spec = ImageSpec::default();
    unsigned_spec
        .files
        .push(("etc/unsigned".into(), b"1".to_vec()));
    let unsigned = fixture::busybox(&unsigned_spec);
    let unsigned_digest = fixture::push(&reg, "shop/unsigned", "v1", &unsigned);
    let reference = format!("{}/shop/signed:v1", reg.host());
    let unsigned_ref = format!("{}/shop/unsigned:v1", reg.host());

    let run = berth_in(
        state.path(),
        None,
        &["sign", &reference, "--key", &release_key.to_string_lossy()],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(&digest), "{}", run.stdout);

    // Enforce: the signed image pulls and verifies; the unsigned one is refused and
    // nothing of it is unpacked.
    let enforce = node_config(keys.path(), &[&release_pub], "enforce", &reg.host());
    let cfg = enforce.to_string_lossy().into_owned();
    let run = berth_in(
        state.path(),
        None,
        &["--config", &cfg, "image", "pull", &reference],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("verified: signature verified by"),
        "{}",
        run.stdout
    );
    let snapshots_before = std::fs::read_dir(state.path().join("snapshots"))
        .unwrap()
        .count();
    let run = berth_in(
        state.path(),
        None,
        &["--config", &cfg, "image", "pull", &unsigned_ref],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    for needle in [
        unsigned_ref.as_str(),
        unsigned_digest.as_str(),
        "release.pub",
        "not signed by a trusted key",
    ] {
        assert!(
            run.stderr.contains(needle),
            "missing {needle}: {}",
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read_dir(state.path().join("snapshots"))
            .unwrap()
            .count(),
        snapshots_before
    );

    // Verification from the store (offline) and from the registry; a wrong key fails.
    for extra in [&[][..], &["--remote"][..]] {
        let mut args = vec!["image", "verify", reference.as_str(), "--key"];
        let release = release_pub.to_string_lossy().into_owned();
        args.push(&release);
        args.extend_from_slice(extra);
        let run = berth_in(state.path(), None, &args);
        assert_eq!(run.code, 0, "{extra:?}: {}{}", run.stdout, run.stderr);
        let other = other_pub.to_string_lossy().into_owned();
        let mut args = vec!["image", "verify", reference.as_str(), "--key", &other];
        args.extend_from_slice(extra);
        let run = berth_in(state.path(), None, &args);
        assert_eq!(run.code, 1, "{extra:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("does not verify"), "{}", run.stdout);
    }

    // Audit mode: the unsigned image is pulled and unpacked, and the outcome reported.
    let audit = node_config(keys.path(), &[&release_pub], "audit", &reg.host());
    let run = berth_in(
        state.path(),
        None,
        &[
            "--config",
            &audit.to_string_lossy(),
            "image",
            "pull",
            &unsigned_ref,
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("signature does not verify"),
        "{}",
        run.stdout
    );
}

#[test]
fn rm_refuses_an_image_a_container_uses_and_prune_keeps_its_snapshots() {
    let Some((reg, state)) = setup() else { return };
    let image = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&reg, "shop/used", "v1", &image);
    let reference = format!("{}/shop/used:v1", reg.host());
    let pulled = json(&berth_in(
        state.path(),
        None,
        &["image", "pull", &reference, "--format", "json"],
    ));
    let snapshots = pulled["snapshots"].as_array().unwrap().len();
    assert_eq!(snapshots, 2);
    // A container record as the executor writes it (runtime/state.rs).
    let chain_ids: Vec<String> = {
        let mut chain: Vec<String> = Vec::new();
        for l in pulled["image"]["layers"].as_array().unwrap() {
            let diff = l["diff_id"].as_str().unwrap().to_string();
            let next = match chain.last() {
                None => diff,
                Some(p) => fixture::sha256(format!("{p} {diff}").as_bytes()),
            };
            chain.push(next);
        }
        chain
    };
    let record = serde_json::json!({
        "name": "web", "instance": "web-00000000", "spec_hash": "00",
        "spec": crate::ops::stored_spec("web"),
        "image": {"reference": reference, "digest": digest, "chain_ids": chain_ids},
        "runtime": "/usr/bin/runc", "runtime_root": "/run/berth/runc", "created_at": "2026-11-22T00:00:00Z",
        "cgroup_path": "/berth/web-00000000"
    });
    let dir = state.path().join("containers/web");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("state.json"), record.to_string()).unwrap();

    let run = berth_in(state.path(), None, &["image", "rm", &reference]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("used by container web"),
        "{}",
        run.stderr
    );
    let run = berth_in(state.path(), None, &["image", "prune"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("0 snapshots"), "{}", run.stdout);

    // Once the container is gone, rm removes the image and prune its snapshots.
    std::fs::remove_dir_all(&dir).unwrap();
    let run = berth_in(state.path(), None, &["image", "rm", &reference]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = berth_in(state.path(), None, &["image", "prune"]);
    assert!(run.stdout.contains("2 snapshots"), "{}", run.stdout);
}
