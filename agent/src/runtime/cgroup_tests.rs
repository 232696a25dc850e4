use std::path::{Path, PathBuf};

use super::*;

fn testdata(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/runtime/testdata/cgroup")
        .join(version)
}

/// The recorded tree's layout, as `Layout::host` would find it on that machine.
fn layout(version: &str) -> Layout {
    let root = testdata(version);
    let mountinfo = std::fs::read_to_string(root.join("mountinfo")).unwrap();
    let v = detect_version(&root.join("sys/fs/cgroup"));
    Layout::from_mounts(v, &parse_mountinfo(&mountinfo), Path::new(CGROUP_ROOT)).rebased(&root)
}

#[test]
fn detects_the_version_by_cgroup_controllers() {
    assert_eq!(
        detect_version(&testdata("v1").join("sys/fs/cgroup")),
        Version::V1
    );
    assert_eq!(
        detect_version(&testdata("v2").join("sys/fs/cgroup")),
        Version::V2
    );
}

#[test]
fn mountinfo_lists_cgroup_mounts_and_their_controllers() {
    let text = std::fs::read_to_string(testdata("v1").join("mountinfo")).unwrap();
    let mounts = parse_mountinfo(&text);
    let cpu = mounts
        .iter()
        .find(|m| m.controllers.contains(&"cpuacct".to_string()))
        .unwrap();
    assert_eq!(cpu.mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
    assert_eq!(cpu.controllers, ["cpu", "cpuacct"]);
    assert_eq!(cpu.root, "/");
    let systemd = mounts
        .iter()
        .find(|m| m.mount_point.ends_with("systemd"))
        .unwrap();
    assert!(!systemd.controllers.iter().any(|c| c.contains("name")));
    // The hybrid host's unified mount is listed as v2, with no controllers.
    assert!(mounts.iter().any(|m| m.version == Version::V2));
    // sysfs, proc, ext4 are not cgroups.
    assert_eq!(mounts.len(), 9);
}

#[test]
fn mountinfo_unescapes_and_keeps_subtree_roots() {
    let line = "40 31 0:35 /docker/abc /sys/fs/cgroup/my\\040mem rw - cgroup cgroup rw,memory\n";
    let m = &parse_mountinfo(line)[0];
    assert_eq!(m.mount_point, Path::new("/sys/fs/cgroup/my mem"));
    assert_eq!(m.root, "/docker/abc");
}

#[test]
fn locate_joins_the_cgroup_path_under_each_mount() {
    let l = Layout::from_mounts(
        Version::V1,
        &parse_mountinfo(&std::fs::read_to_string(testdata("v1").join("mountinfo")).unwrap()),
        Path::new(CGROUP_ROOT),
    );
    assert_eq!(
        l.locate("/berth/web-0123abcd"),
        CgroupDirs::V1 {
            memory: Some("/sys/fs/cgroup/memory/berth/web-0123abcd".into()),
            cpuacct: Some("/sys/fs/cgroup/cpu,cpuacct/berth/web-0123abcd".into()),
            pids: Some("/sys/fs/cgroup/pids/berth/web-0123abcd".into()),
        }
    );
    // A mount of a subtree (cgroup namespace): the subtree prefix is dropped.
    assert_eq!(
        join(
            Path::new("/sys/fs/cgroup/memory"),
            "/docker/abc",
            "/docker/abc/berth/x"
        ),
        Path::new("/sys/fs/cgroup/memory/berth/x")
    );
    assert_eq!(
        join(
            Path::new("/sys/fs/cgroup/memory"),
            "/docker/abc",
            "/docker/abcd/x"
        ),
        Path::new("/sys/fs/cgroup/memory/docker/abcd/x")
    );
    let v2 = Layout::from_mounts(Version::V2, &[], Path::new(CGROUP_ROOT));
    assert_eq!(
        v2.locate("berth/web-0123abcd"),
        CgroupDirs::V2("/sys/fs/cgroup/berth/web-0123abcd".into())
    );
    // Without a pids mount, no pids directory.
    let no_pids = Layout::from_mounts(
        Version::V1,
        &parse_mountinfo("1 1 0:1 / /m rw - cgroup cgroup rw,memory\n"),
        Path::new(CGROUP_ROOT),
    );
    let CgroupDirs::V1 { pids, cpuacct, .. } = no_pids.locate("/x") else {
        panic!("v1")
    };
    assert_eq!((pids, cpuacct), (None, None));
}

#[test]
fn v1_sample_from_a_recorded_tree() {
    let l = layout("v1");
    let s = read_sample(&l.locate("/berth/web-0123abcd")).unwrap();
    assert_eq!(s.cpu_ns, Some(5_123_456_789));
    assert_eq!(
        s.memory,
        Some(Memory {
            usage: 26_214_400 - 5_242_880,
            limit: Some(64 << 20)
        })
    );
    assert_eq!(
        s.pids,
        Some(Pids {
            current: 4,
            limit: Some(100)
        })
    );

    let db = read_sample(&l.locate("/berth/db-89abcdef")).unwrap();
    assert_eq!(
        db.memory.unwrap().limit,
        None,
        "PAGE_COUNTER_MAX is no limit"
    );
    assert_eq!(db.pids.unwrap().limit, None, "pids.max max");
}

#[test]
fn v2_sample_from_a_recorded_tree() {
    let l = layout("v2");
    let s = read_sample(&l.locate("/berth/web-0123abcd")).unwrap();
    assert_eq!(s.cpu_ns, Some(2_871_133_000));
    assert_eq!(
        s.memory,
        Some(Memory {
            usage: 17_539_072 - 8_192_000,
            limit: Some(128 << 20)
        })
    );
    assert_eq!(
        s.pids,
        Some(Pids {
            current: 3,
            limit: Some(256)
        })
    );
    let db = read_sample(&l.locate("/berth/db-89abcdef")).unwrap();
    assert_eq!(db.memory.unwrap().limit, None);
    assert_eq!(db.pids.unwrap().limit, None);
}

#[test]
fn a_missing_cgroup_is_named() {
    for v in ["v1", "v2"] {
        let err = read_sample(&layout(v).locate("/berth/gone")).unwrap_err();
        assert!(matches!(err, CgroupError::Missing { .. }), "{v}: {err}");
        assert!(err.to_string().contains("berth/gone"), "{err}");
    }
}

#[test]
fn parsers() {
    assert_eq!(parse_u64("42\n"), Some(42));
    assert_eq!(parse_u64("-1"), None);
    assert_eq!(parse_max("max\n"), Some(None));
    assert_eq!(parse_max("256\n"), Some(Some(256)));
    assert_eq!(parse_max("lots"), None);
    let m = parse_keyed("usage_usec 10\nuser_usec 7\n\n").unwrap();
    assert_eq!(m.get("usage_usec"), Some(&10));
    assert!(
        parse_keyed("usage_usec ten\n")
            .unwrap_err()
            .to_string()
            .contains("usage_usec")
    );
    assert!(parse_keyed("a 1 2\n").is_err());
}

#[test]
fn a_corrupt_file_names_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let cg = dir.path().join("c");
    std::fs::create_dir(&cg).unwrap();
    std::fs::write(cg.join("cpu.stat"), "user_usec 1\n").unwrap();
    let err = read_sample(&CgroupDirs::V2(cg.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cpu.stat") && err.contains("usage_usec"),
        "{err}"
    );
}

#[test]
fn cpu_percent_is_relative_to_one_cpu() {
    let s = Duration::from_secs(1);
    assert!((cpu_percent(0, 500_000_000, s) - 50.0).abs() < 1e-9);
    assert!((cpu_percent(0, 2_000_000_000, s) - 200.0).abs() < 1e-9);
    assert_eq!(cpu_percent(10, 5, s), 0.0, "a reset counter");
    assert_eq!(cpu_percent(0, 5, Duration::ZERO), 0.0);
}

#[test]
fn an_empty_state_directory_parent_goes_and_one_in_use_stays() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // v1-like: two controllers; `a` is empty after its instance went, `b` holds one.
    for ctl in ["pids", "memory"] {
        std::fs::create_dir_all(r.join(ctl).join("berth/aaaaaaaaaaaa")).unwrap();
        std::fs::create_dir_all(r.join(ctl).join("berth/bbbbbbbbbbbb/web-1")).unwrap();
    }
    let mut gone = remove_empty_parent(r, "/berth/aaaaaaaaaaaa/web-1");
    gone.sort();
    assert_eq!(
        gone,
        vec![
            r.join("memory/berth/aaaaaaaaaaaa"),
            r.join("pids/berth/aaaaaaaaaaaa")
        ]
    );
    assert!(remove_empty_parent(r, "/berth/bbbbbbbbbbbb/web-1").is_empty());
    assert!(r.join("pids/berth/bbbbbbbbbbbb/web-1").is_dir());
    // An earlier release's path has no per-directory parent: `/berth` stays.
    assert!(remove_empty_parent(r, "/berth/web-1").is_empty());
    assert!(r.join("pids/berth").is_dir());
}
