//! Hostile and oversized trees: each limit gives one located error and bounded work,
//! deep graphs are walked without recursion, and bytes that are not UTF-8 are a located
//! error like any other. The tests run on the test harness's threads (2 MiB stacks), so
//! a recursive walk over the long chains below would overflow and fail them.

use crate::limits::{MAX_DEPENDENCY_DEPTH, MAX_FILE_BYTES, MAX_KEYS, MAX_OBJECTS};
use crate::{SourceFile, Tree, check};

const IMG: &str =
    "r.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn source(path: &str, text: String) -> SourceFile {
    SourceFile {
        path: path.to_string(),
        text,
    }
}

fn errors(tree: &Tree) -> Vec<String> {
    check(tree, None)
        .errors
        .iter()
        .map(|d| d.to_string())
        .collect()
}

/// Containers `c0`…`c{n-1}`, `per_file` to a file, each depending on what `deps` says.
fn containers(n: usize, per_file: usize, deps: impl Fn(usize) -> Option<usize>) -> Tree {
    let mut files: Vec<SourceFile> = Vec::new();
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("[container.c{i}]\nimage = \"{IMG}\"\n"));
        if let Some(d) = deps(i) {
            text.push_str(&format!("depends_on = [\"c{d}\"]\n"));
        }
        if (i + 1) % per_file == 0 || i + 1 == n {
            let path = format!("f{:05}.toml", files.len());
            files.push(source(&path, std::mem::take(&mut text)));
        }
    }
    Tree::from_sources(files)
}

#[test]
fn file_over_the_size_limit_is_not_read() {
    let big = format!("# {}\n", "x".repeat(MAX_FILE_BYTES));
    let mut tree = Tree::from_sources(vec![source("big.toml", big.clone())]);
    let expected =
        "big.toml:1:1: error: spec file is larger than 4 MiB, the limit per file; it is not read";
    assert_eq!(errors(&tree), vec![expected]);
    // The same through the reader's path (bytes, as the loader reads them).
    tree = Tree::default();
    tree.add_source("big.toml".into(), big.into_bytes());
    assert!(tree.sources.is_empty());
    assert_eq!(errors(&tree), vec![expected]);
}

#[test]
fn tree_over_the_size_limit_stops_at_the_first_file_over() {
    let chunk = format!("# {}\n", "x".repeat(MAX_FILE_BYTES - 100));
    let files = (0..5)
        .map(|i| source(&format!("f{i}.toml"), chunk.clone()))
        .collect();
    assert_eq!(
        errors(&Tree::from_sources(files)),
        vec![
            "f4.toml:1:1: error: the spec files add up to more than 16 MiB, the limit per tree; this file and those after it are not read"
        ]
    );
}

#[test]
fn containers_over_the_limit() {
    let n = MAX_OBJECTS + 5;
    let tree = containers(n, 1000, |i| i.checked_sub(1));
    let checked = check(&tree, None);
    let found: Vec<String> = checked.errors.iter().map(|d| d.to_string()).collect();
    // c10000 is the first over the limit, in file and line order: f00010.toml, line 1.
    assert_eq!(
        found,
        vec![format!(
            "f00010.toml:1:12: error: the tree defines {n} containers, over the limit of {MAX_OBJECTS}; containers from here on are not read"
        )]
    );
    assert_eq!(checked.state.containers.len(), MAX_OBJECTS);
    assert!(!checked.state.containers.contains_key("c10000"));
}

#[test]
fn one_file_over_the_object_limit() {
    let mut text = String::new();
    for i in 0..=MAX_OBJECTS {
        text.push_str(&format!("volume.v{i} = {{}}\n"));
    }
    let found = errors(&Tree::from_sources(vec![source("a.toml", text)]));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].ends_with(&format!(
            "error: the file defines {} volumes, over the limit of {MAX_OBJECTS} per tree",
            MAX_OBJECTS + 1
        )),
        "{found:?}"
    );
    assert!(found[0].starts_with("a.toml:1:1:"), "{found:?}");
}

#[test]
fn keys_per_table_and_items_per_array() {
    let mut env = String::new();
    for i in 0..=MAX_KEYS {
        env.push_str(&format!("K{i} = \"v\", "));
    }
    let ports: Vec<String> = (0..=MAX_KEYS)
        .map(|i| format!("\"{}:80\"", i + 1))
        .collect();
    let text = format!(
        "[container.web]\nimage = \"{IMG}\"\nenv = {{ {} }}\nports = [{}]\n",
        env.trim_end_matches(", "),
        ports.join(", ")
    );
    let checked = check(&Tree::from_sources(vec![source("a.toml", text)]), None);
    let found: Vec<String> = checked.errors.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        found,
        vec![
            "a.toml:3:7: error: `container.web.env` has 1025 keys, over the limit of 1024 keys per table",
            "a.toml:4:9: error: `container.web.ports` has 1025 items, over the limit of 1024 items per array",
        ]
    );
    let d = &checked.errors[0];
    assert_eq!(
        (d.name.as_deref(), d.key.as_deref()),
        (Some("web"), Some("env"))
    );
    // Later stages see no more than the limit.
    let web = &checked.state.containers["web"];
    assert_eq!((web.env.len(), web.ports.len()), (MAX_KEYS, MAX_KEYS));
}

#[test]
fn a_chain_at_the_depth_limit_is_valid_and_one_link_more_is_not() {
    let ok = containers(MAX_DEPENDENCY_DEPTH + 1, 100, |i| i.checked_sub(1));
    assert_eq!(errors(&ok), Vec::<String>::new());
    let deep = containers(MAX_DEPENDENCY_DEPTH + 2, 100, |i| i.checked_sub(1));
    assert_eq!(
        errors(&deep),
        vec![
            "f00000.toml:197:1: error: container `c65`: its `depends_on` chain is 65 links deep, over the limit of 64: c65 -> c64 -> c63 -> c62 -> c61 -> c60 -> c59 -> c58 -> … (57 more) -> c0"
        ]
    );
}

#[test]
fn the_longest_chain_the_limits_allow_is_one_error_without_recursion() {
    let chain = containers(MAX_OBJECTS, 1000, |i| i.checked_sub(1));
    let found = errors(&chain);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("container `c65`: its `depends_on` chain is 65 links deep"));
}

#[test]
fn the_longest_cycle_the_limits_allow_is_one_error_without_recursion() {
    let n = MAX_OBJECTS;
    let cycle = containers(n, 1000, |i| Some((i + 1) % n));
    assert_eq!(
        errors(&cycle),
        vec![
            "f00000.toml:3:1: error: container `c0`: dependency cycle of 10000 containers: c0 -> c1 -> c2 -> c3 -> c4 -> c5 -> c6 -> c7 -> … (9992 more) -> c0"
        ]
    );
    // A cycle is reported once; a container depending on one is not reported for depth.
    let tangle = containers(5, 10, |i| match i {
        0 => Some(1),
        1 => Some(0),
        2 => Some(0),
        _ => None,
    });
    assert_eq!(
        errors(&tangle),
        vec!["f00000.toml:3:1: error: container `c0`: dependency cycle: c0 -> c1 -> c0"]
    );
}

#[test]
fn many_clashing_ports_give_one_error_each() {
    let mut text = String::new();
    for i in 0..3000 {
        let ip = if i % 2 == 0 { "" } else { "127.0.0.1:" };
        text.push_str(&format!(
            "[container.c{i}]\nimage = \"{IMG}\"\nports = [\"{ip}8080:80\"]\n"
        ));
    }
    let found = errors(&Tree::from_sources(vec![source("a.toml", text)]));
    assert_eq!(found.len(), 2999);
    assert!(
        found
            .iter()
            .all(|e| e.contains("already published by container `c0`"))
    );
}

#[test]
fn overlapping_subnets_name_the_first_network_defined() {
    let text = "[network.a]\nsubnet = \"10.1.0.0/24\"\n\
                [network.b]\nsubnet = \"10.0.0.0/8\"\n\
                [network.c]\nsubnet = \"10.1.0.0/24\"\n\
                [network.d]\nsubnet = \"10.2.0.0/16\"\n\
                [network.e]\nsubnet = \"192.168.0.0/16\"\n\
                [network.f]\nsubnet = \"fd00::/64\"\n\
                [network.g]\nsubnet = \"fd00::/48\"\n";
    assert_eq!(
        errors(&Tree::from_sources(vec![source("a.toml", text.into())])),
        vec![
            "a.toml:3:10: error: network `b`: subnet 10.0.0.0/8 overlaps network `a` (10.1.0.0/24)",
            "a.toml:5:10: error: network `c`: subnet 10.1.0.0/24 overlaps network `a` (10.1.0.0/24)",
            "a.toml:7:10: error: network `d`: subnet 10.2.0.0/16 overlaps network `b` (10.0.0.0/8)",
            "a.toml:13:10: error: network `g`: subnet fd00::/48 overlaps network `f` (fd00::/64)",
        ]
    );
}

#[test]
fn bytes_that_are_not_utf8_are_located() {
    let mut tree = Tree::default();
    tree.add_source(
        "a.toml".into(),
        b"[container.web]\n# caf\xc3\xa9 \xff\nimage = \"x\"\n".to_vec(),
    );
    assert!(tree.files.contains("a.toml"));
    let checked = check(&tree, None);
    let found: Vec<String> = checked.errors.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        found,
        vec![
            "a.toml:2:8: error: byte 0xff is not UTF-8: spec files must be UTF-8 text (in comments too)"
        ]
    );
    let json = serde_json::to_value(&checked.errors).unwrap_or_default();
    assert_eq!(json[0]["file"], "a.toml");
    assert_eq!(
        (json[0]["line"].as_u64(), json[0]["column"].as_u64()),
        (Some(2), Some(8))
    );
}

#[test]
fn the_loader_reports_bad_bytes_and_big_files_as_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), b"\xfe = 1\n").unwrap();
    std::fs::write(dir.path().join("b.toml"), vec![b'#'; MAX_FILE_BYTES + 10]).unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        format!("[container.web]\nimage = \"{IMG}\"\n"),
    )
    .unwrap();
    let tree = crate::loader::load_tree(dir.path()).unwrap();
    assert_eq!(tree.sources.len(), 1);
    let found = errors(&tree);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("a.toml:1:1: error: byte 0xfe is not UTF-8"));
    assert!(found[1].starts_with("b.toml:1:1: error: spec file is larger than 4 MiB"));
    // One file given directly.
    let tree = crate::loader::load_tree(&dir.path().join("a.toml")).unwrap();
    assert_eq!(errors(&tree).len(), 1);
}
