//! `berth logs`: streams split to stdout/stderr, `P` records joined across rotated
//! files, `--tail`, `--timestamps`, `--format json`, and `-f` following appends and
//! rotations until `exit.json` appears.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_e2e::berth;
use serde_json::Value;

use super::{Node, Reap, now, rfc3339};

const TS: &str = "2026-11-22T10:00:00.000000001Z";

fn rec(stream: &str, tag: &str, text: &str) -> String {
    format!("{TS} {stream} {tag} {text}\n")
}

/// A log rotated twice, with a line split across files and a malformed line:
/// stdout a1 a2 a3 a4-joined a5; stderr e1 e2.
fn rotated_log(instance: &Path) {
    let w =
        |name: &str, recs: &[String]| std::fs::write(instance.join(name), recs.concat()).unwrap();
    w(
        "ctr.log.2",
        &[rec("stdout", "F", "a1"), rec("stderr", "F", "e1")],
    );
    w(
        "ctr.log.1",
        &[
            rec("stdout", "F", "a2"),
            "not a record\n".to_string(),
            rec("stdout", "P", "a3 is "),
        ],
    );
    w(
        "ctr.log",
        &[
            rec("stdout", "F", "long"),
            rec("stderr", "F", "e2"),
            rec("stdout", "F", "a4"),
            rec("stdout", "F", "a5"),
        ],
    );
}

/// Container stderr lines, without berth's own log lines (warnings).
fn container_stderr(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.contains("WARN") && !l.contains("skipping"))
        .collect()
}

#[test]
fn logs_split_streams_join_partials_and_tail() {
    let node = Node::new();
    node.record("db", |_| {});
    node.exit("db", 0, 5);
    rotated_log(&node.instance("db"));

    let run = node.berth(&["logs", "db"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "a1\na2\na3 is long\na4\na5\n");
    assert_eq!(container_stderr(&run.stderr), ["e1", "e2"]);
    assert!(
        run.stderr.contains("skipping"),
        "a warning names the malformed line: {run:?}"
    );

    let run = node.berth(&["logs", "--tail", "3", "db"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "a4\na5\n");
    assert_eq!(container_stderr(&run.stderr), ["e2"]);
    let run = node.berth(&["logs", "--tail", "4", "db"]);
    assert_eq!(
        run.stdout, "a3 is long\na4\na5\n",
        "joined across rotated files"
    );

    let run = node.berth(&["logs", "--timestamps", "--tail", "1", "db"]);
    assert_eq!(run.stdout, format!("{TS} a5\n"));

    let run = node.berth(&["logs", "--format", "json", "-n", "2", "db"]);
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["text"], "a4");
    assert_eq!(lines[0]["stream"], "stdout");
    assert_eq!(lines[0]["time"], TS);

    let run = node.berth(&["logs", "nope"]);
    assert_eq!(run.code, 1, "{run:?}");
}

#[test]
fn logs_follow_reads_appends_and_rotations_and_ends_on_exit() {
    let node = Node::new();
    // Created, no pid yet: follow waits for output and for exit.json.
    node.record("job", |r| r["started_at"] = Value::Null);
    let inst = node.instance("job");
    let log = inst.join("ctr.log");
    std::fs::write(&log, rec("stdout", "F", "0")).unwrap();

    let config = node.dir.path().join("berth.toml");
    let mut child = Reap(
        berth()
            .args(["--config", config.to_str().unwrap(), "--state-dir"])
            .arg(node.state())
            .args(["logs", "-f", "job"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            s
        })
    };
    // Stdout line by line: the writer starts once berth has printed the first line,
    // so a slow start cannot let a rotation drop a file berth never saw.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = {
        let out = std::io::BufReader::new(child.0.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut all = String::new();
            for line in std::io::BufRead::lines(out) {
                let line = line.unwrap();
                let _ = tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        })
    };
    let stderr = drain(Box::new(child.0.stderr.take().unwrap()));
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "0");

    let append = |text: &str| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    for i in 1..=30 {
        append(&rec("stdout", "F", &i.to_string()));
        if i % 10 == 0 {
            // The shim's rotation: ctr.log.N → N+1, ctr.log → ctr.log.1, a new ctr.log
            // on the next write (four files: nothing is dropped here).
            let _ = std::fs::rename(inst.join("ctr.log.2"), inst.join("ctr.log.3"));
            let _ = std::fs::rename(inst.join("ctr.log.1"), inst.join("ctr.log.2"));
            std::fs::rename(&log, inst.join("ctr.log.1")).unwrap();
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    append(&rec("stderr", "F", "bye"));
    let exit = format!(
        "{{\"exit_code\": 0, \"signal\": null, \"finished_at\": \"{}\"}}\n",
        rfc3339(now())
    );
    std::fs::write(inst.join("exit.json"), exit).unwrap();

    // It must end by itself.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "logs -f did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(status.success(), "{status:?}: {stderr}");
    let want: String = (0..=30).map(|i| format!("{i}\n")).collect();
    assert_eq!(stdout, want);
    assert_eq!(container_stderr(&stderr), ["bye"]);
}
