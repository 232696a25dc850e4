use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::runtime::record::{ImageRef, write_record};
use crate::runtime::state::write_atomic;
use crate::util::rfc3339;

pub(crate) fn record(name: &str) -> ContainerRecord {
    ContainerRecord {
        schema_version: crate::runtime::record::SCHEMA_VERSION,
        name: name.into(),
        instance: format!("{name}-0123abcd"),
        spec_hash: "0123abcd".into(),
        spec: crate::runtime::record::sample(name).spec,
        image: ImageRef {
            reference: "registry.example.com/shop/web:1.0".into(),
            digest: "sha256:00".into(),
            chain_ids: vec![],
        },
        runtime: "/usr/bin/runc".into(),
        runtime_root: "/run/berth/runc".into(),
        created_at: "2026-11-22T10:00:00Z".into(),
        started_at: Some("2026-11-22T10:00:01Z".into()),
        restarts: 0,
        operator_stopped: false,
        addresses: BTreeMap::new(),
        ports: vec![],
        cgroup_path: format!("/berth/{name}-0123abcd"),
        uid: None,
        gid: None,
    }
}

fn exit(code: i32) -> ExitStatus {
    ExitStatus {
        exit_code: code,
        signal: None,
        finished_at: "2026-11-22T10:05:00.000000001Z".into(),
    }
}

fn obs(exit: Option<ExitStatus>, pid: Option<i32>, alive: bool) -> Observation {
    Observation { exit, pid, alive }
}

#[test]
fn derive_covers_every_state() {
    let r = record("web");
    let running = derive(&r, &obs(None, Some(42), true));
    assert_eq!((running.state, running.pid), (State::Running, Some(42)));
    assert_eq!(running.describe(), "running");

    let exited = derive(&r, &obs(Some(exit(1)), Some(42), false));
    assert_eq!((exited.state, exited.pid), (State::Exited, None));
    assert_eq!(exited.describe(), "exited (1)");

    // A recorded pid that is gone without an exit status: the shim died.
    let lost = derive(&r, &obs(None, Some(42), false));
    assert_eq!(lost.describe(), "exited (unknown)");

    // No pid file yet: the runtime has not created the process.
    assert_eq!(derive(&r, &obs(None, None, false)).state, State::Created);
    let mut never_started = r.clone();
    never_started.started_at = None;
    let created = derive(&never_started, &obs(None, Some(7), true));
    assert_eq!((created.state, created.pid), (State::Created, Some(7)));
}

#[test]
fn operator_stop_shows_once_the_init_is_gone() {
    let mut r = record("web");
    r.operator_stopped = true;
    let s = derive(&r, &obs(Some(exit(143)), None, false));
    assert_eq!(s.state, State::Stopped);
    assert_eq!(s.describe(), "stopped by operator");
    assert_eq!(s.exit.map(|e| e.exit_code), Some(143));
    // Still stopping: it runs until the init is reaped.
    assert_eq!(derive(&r, &obs(None, Some(1), true)).state, State::Running);
}

#[test]
fn stat_parsing_skips_odd_command_names() {
    let text = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                288758 3133440 394 18446744073709551615 0 0\n";
    assert_eq!(
        parse_stat(text),
        Some(ProcStat {
            state: 'S',
            start_ticks: 288_758
        })
    );
    assert_eq!(parse_stat("12 (x) Z 1").map(|s| s.state), None);
    assert_eq!(parse_stat("garbage"), None);
}

#[test]
fn cgroup_membership_v1_v2_and_namespaced() {
    let v1 = "9:name=systemd:/\n8:pids:/berth/web-0123abcd\n4:memory:/berth/web-0123abcd\n0::/\n";
    assert!(in_cgroup(v1, "/berth/web-0123abcd"));
    assert!(in_cgroup(v1, "berth/web-0123abcd/"));
    assert!(!in_cgroup(v1, "/berth/web-ffffffff"));
    assert!(!in_cgroup(v1, "/berth/web"), "a prefix is not membership");
    assert!(in_cgroup("0::/berth/web-0123abcd\n", "/berth/web-0123abcd"));
    // Seen from inside a cgroup namespace rooted elsewhere.
    assert!(in_cgroup(
        "0::/../../berth/web-0123abcd\n",
        "/berth/web-0123abcd"
    ));
    // The root cgroup holds every process: never evidence.
    assert!(!in_cgroup(v1, "/"));
    assert!(!in_cgroup(v1, ""));
}

#[test]
fn start_time_bounds_recycled_pids() {
    let r = record("web"); // started 2026-11-22T10:00:01Z
    let started = rfc3339::parse("2026-11-22T10:00:01Z").unwrap().0 as u64;
    assert!(started_in_time(started - 1, &r));
    assert!(started_in_time(started + 2, &r), "whole-second slack");
    assert!(!started_in_time(started + 60, &r), "a recycled pid");
    let mut created = r.clone();
    created.started_at = None; // bound by created_at, 1 s earlier
    assert!(!started_in_time(started + 2, &created));
}

/// A fake /proc: `btime`, and one process with a stat line and a cgroup file.
fn fake_proc(root: &Path, pid: i32, state: char, start_ticks: u64, cgroup: &str) {
    let btime = rfc3339::parse("2026-11-22T09:00:00Z").unwrap().0;
    std::fs::write(root.join("stat"), format!("cpu  1 2 3\nbtime {btime}\n")).unwrap();
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let stat = format!(
        "{pid} (sleep) {state} 1 {pid} {pid} 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
         {start_ticks} 3133440 394 18446744073709551615 0 0\n"
    );
    std::fs::write(dir.join("stat"), stat).unwrap();
    std::fs::write(dir.join("cgroup"), cgroup).unwrap();
}

#[test]
fn proc_identity_checks() {
    let dir = tempfile::tempdir().unwrap();
    let proc = ProcFs::at(dir.path());
    let r = record("web");
    // In the cgroup, started long after the record: the cgroup wins (clock steps).
    fake_proc(
        dir.path(),
        10,
        'S',
        360_000 * 100,
        "4:memory:/berth/web-0123abcd\n",
    );
    assert!(proc.is_container_init(10, &r));
    // Zombies are dead whatever their cgroup says.
    fake_proc(dir.path(), 11, 'Z', 100, "4:memory:/berth/web-0123abcd\n");
    assert!(!proc.is_container_init(11, &r));
    // Elsewhere, started an hour after boot = 10:00:00, before the record's start.
    fake_proc(dir.path(), 12, 'S', 3600 * 100, "0::/\n");
    assert!(proc.is_container_init(12, &r));
    // Elsewhere, started at 11:00: a recycled pid.
    fake_proc(dir.path(), 13, 'S', 7200 * 100, "0::/\n");
    assert!(!proc.is_container_init(13, &r));
    // No such process.
    assert!(!proc.is_container_init(99, &r));
}

#[test]
fn observe_reads_exit_and_pid_files() {
    let state = tempfile::tempdir().unwrap();
    let proc_dir = tempfile::tempdir().unwrap();
    let proc = ProcFs::at(proc_dir.path());
    let r = record("web");
    write_record(state.path(), &r).unwrap();
    let dirs = InstanceDirs::new(state.path(), &r.instance);
    std::fs::create_dir_all(&dirs.root).unwrap();
    assert_eq!(
        observe(state.path(), &r, &proc).unwrap(),
        Observation::default()
    );

    std::fs::write(dirs.pid_file(), "10\n").unwrap();
    fake_proc(proc_dir.path(), 10, 'S', 1, "1:pids:/berth/web-0123abcd\n");
    let o = observe(state.path(), &r, &proc).unwrap();
    assert_eq!((o.pid, o.alive), (Some(10), true));

    let exit_json =
        r#"{"exit_code": 137, "signal": 9, "finished_at": "2026-11-22T10:05:00.000000001Z"}"#;
    write_atomic(&dirs.exit_file(), exit_json.as_bytes()).unwrap();
    let o = observe(state.path(), &r, &proc).unwrap();
    assert_eq!(o.exit.as_ref().map(|e| e.signal), Some(Some(9)));
    assert!(!o.alive, "an exit status is final");

    write_atomic(&dirs.exit_file(), b"{not json").unwrap();
    let err = observe(state.path(), &r, &proc).unwrap_err().to_string();
    assert!(
        err.contains("container web") && err.contains("exit.json"),
        "{err}"
    );
}

#[test]
fn load_record_names_the_state_dir() {
    let state = tempfile::tempdir().unwrap();
    let err = load_record(state.path(), "nope").unwrap_err();
    assert!(matches!(err, StatusError::Unknown { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "no container nope in state directory {}",
            state.path().display()
        )
    );
    write_record(state.path(), &record("web")).unwrap();
    assert_eq!(load_record(state.path(), "web").unwrap().name, "web");
    assert_eq!(load_records(state.path()).unwrap().len(), 1);
}

#[test]
fn human_durations_match_docker() {
    let cases = [
        (0, "Less than a second"),
        (1, "1 second"),
        (45, "45 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (300, "5 minutes"),
        (3599, "59 minutes"),
        (3600, "About an hour"),
        (5399, "About an hour"),
        (5400, "2 hours"),
        (47 * 3600, "47 hours"),
        (3 * 86_400, "3 days"),
        (15 * 86_400, "2 weeks"),
        (90 * 86_400, "3 months"),
        (800 * 86_400, "2 years"),
    ];
    for (secs, want) in cases {
        assert_eq!(human_duration(secs), want, "{secs}");
    }
}

#[test]
fn uptime_texts() {
    let r = record("web"); // started 10:00:01
    let now = rfc3339::parse("2026-11-22T10:05:01Z").unwrap().0;
    let running = derive(&r, &obs(None, Some(1), true));
    assert_eq!(uptime(&r, &running, now), "Up 5 minutes");
    let exited = derive(&r, &obs(Some(exit(1)), None, false)); // finished 10:05:00
    assert_eq!(uptime(&r, &exited, now + 119), "Exited (1) 2 minutes ago");
    let lost = derive(&r, &obs(None, Some(1), false));
    assert_eq!(uptime(&r, &lost, now), "-");
    assert_eq!(uptime(&r, &derive(&r, &obs(None, None, false)), now), "-");
}
