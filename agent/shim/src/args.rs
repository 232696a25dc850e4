//! The shim's command line, parsed by hand (no clap in a per-container binary), and the
//! OCI runtime's `create` argv, rendered by a pure function so it is tested without runc.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Defaults match the node config's `runtime.log_max_size` / `log_max_files`.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub const DEFAULT_LOG_MAX_FILES: u32 = 3;

pub const USAGE: &str = "\
usage: berth-shim --id ID --bundle DIR --log FILE --exit-file FILE --pid-file FILE
                  [--runtime PATH] [--runtime-root DIR] [--runtime-arg ARG]...
                  [--log-max-size BYTES] [--log-max-files N] [--shim-pid-file FILE]
                  [--cgroup-procs FILE]...

The detached shim first moves itself into each --cgroup-procs file's cgroup (the
`cgroup.procs` of a cgroup outside its caller's), so that it and the container outlive
a service manager that kills every process of the caller's cgroup; one it cannot join
is a warning in the answer, never an error. Then it runs `RUNTIME [--root DIR] [ARG...] create --bundle DIR --pid-file FILE ID` with the
container's stdout/stderr on pipes, detaches, prints {\"shim_pid\":N,\"pid\":M} once the
container is created (or the runtime's error on stderr, exit 1), then pumps output
into the CRI log and writes the exit file when the container's init exits.
The caller runs `RUNTIME start ID` itself.";

/// Everything the shim needs, paths made absolute (the daemon runs from `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: Option<PathBuf>,
    pub runtime_args: Vec<OsString>,
    pub log: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    pub exit_file: PathBuf,
    pub pid_file: PathBuf,
    pub shim_pid_file: Option<PathBuf>,
    /// `cgroup.procs` files the daemon writes its pid into before anything else.
    pub cgroup_procs: Vec<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Box<Options>),
    Help,
    Version,
}

fn absolute(p: &OsStr) -> Result<PathBuf, String> {
    std::path::absolute(Path::new(p)).map_err(|e| format!("invalid path {}: {e}", p.display()))
}

fn number<T: std::str::FromStr>(flag: &str, v: &OsStr) -> Result<T, String> {
    v.to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{flag}: expected a positive integer, got `{}`", v.display()))
}

/// Parses the arguments after the program name. Errors are one line for stderr.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut id = None;
    let mut bundle = None;
    let mut runtime = PathBuf::from("runc");
    let mut runtime_root = None;
    let mut runtime_args = Vec::new();
    let mut log = None;
    let mut log_max_size = DEFAULT_LOG_MAX_SIZE;
    let mut log_max_files = DEFAULT_LOG_MAX_FILES;
    let mut exit_file = None;
    let mut pid_file = None;
    let mut shim_pid_file = None;
    let mut cgroup_procs = Vec::new();

    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy();
        // `--flag=value` or `--flag value`.
        let (flag, inline) = match text.split_once('=') {
            Some((f, _)) if f.starts_with("--") && f.is_ascii() => {
                let value = OsString::from_vec(arg.as_bytes()[f.len() + 1..].to_vec());
                (f.to_string(), Some(value))
            }
            _ => (text.to_string(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            _ => {}
        }
        let mut value = || -> Result<OsString, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().ok_or_else(|| format!("{flag}: missing value")),
            }
        };
        match flag.as_str() {
            "--id" => id = Some(value()?),
            "--bundle" => bundle = Some(absolute(&value()?)?),
            "--runtime" => runtime = PathBuf::from(value()?),
            "--runtime-root" => runtime_root = Some(absolute(&value()?)?),
            "--runtime-arg" => runtime_args.push(value()?),
            "--log" => log = Some(absolute(&value()?)?),
            "--log-max-size" => log_max_size = number(&flag, &value()?)?,
            "--log-max-files" => log_max_files = number(&flag, &value()?)?,
            "--exit-file" => exit_file = Some(absolute(&value()?)?),
            "--pid-file" => pid_file = Some(absolute(&value()?)?),
            "--shim-pid-file" => shim_pid_file = Some(absolute(&value()?)?),
            "--cgroup-procs" => cgroup_procs.push(absolute(&value()?)?),
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }

    let required = |v: Option<PathBuf>, flag: &str| v.ok_or_else(|| format!("{flag} is required"));
    let id = id.ok_or("--id is required")?;
    let id = id
        .to_str()
        .filter(|s| valid_id(s))
        .ok_or_else(|| {
            format!(
                "--id `{}`: expected 1-128 characters of [A-Za-z0-9_.-], not starting with `-` or `.`",
                id.display()
            )
        })?
        .to_string();
    if log_max_size == 0 || log_max_files == 0 {
        return Err("--log-max-size and --log-max-files must be at least 1".to_string());
    }
    Ok(Parsed::Run(Box::new(Options {
        id,
        bundle: required(bundle, "--bundle")?,
        runtime,
        runtime_root,
        runtime_args,
        log: required(log, "--log")?,
        log_max_size,
        log_max_files,
        exit_file: required(exit_file, "--exit-file")?,
        pid_file: required(pid_file, "--pid-file")?,
        shim_pid_file,
        cgroup_procs,
    })))
}

/// The characters runc accepts in a container id (it also rejects `/` and `..`).
fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The runtime's argv (without the program): `[--root R] [ARGS…] create --bundle B
/// --pid-file P ID`. Global flags come before the subcommand, as runc and crun require.
pub fn create_argv(o: &Options) -> Vec<OsString> {
    let mut argv = Vec::new();
    if let Some(root) = &o.runtime_root {
        argv.push("--root".into());
        argv.push(root.clone().into_os_string());
    }
    argv.extend(o.runtime_args.iter().cloned());
    argv.push("create".into());
    argv.push("--bundle".into());
    argv.push(o.bundle.clone().into_os_string());
    argv.push("--pid-file".into());
    argv.push(o.pid_file.clone().into_os_string());
    argv.push(o.id.clone().into());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn run(v: &[&str]) -> Options {
        match parse(os(v)).unwrap() {
            Parsed::Run(o) => *o,
            other => panic!("{other:?}"),
        }
    }

    const MIN: &[&str] = &[
        "--id",
        "web-1a2b3c4d",
        "--bundle",
        "/b",
        "--log",
        "/i/ctr.log",
        "--exit-file",
        "/i/exit.json",
        "--pid-file",
        "/i/pid",
    ];

    #[test]
    fn minimal_arguments_take_defaults() {
        let o = run(MIN);
        assert_eq!(o.id, "web-1a2b3c4d");
        assert_eq!(o.runtime, PathBuf::from("runc"));
        assert_eq!(o.log_max_size, DEFAULT_LOG_MAX_SIZE);
        assert_eq!(o.log_max_files, 3);
        assert_eq!(o.runtime_root, None);
        assert!(o.cgroup_procs.is_empty());
        assert_eq!(
            create_argv(&o),
            os(&[
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/i/pid",
                "web-1a2b3c4d"
            ])
        );
    }

    #[test]
    fn runtime_root_and_args_go_before_create() {
        let mut v = MIN.to_vec();
        v.extend([
            "--runtime=/usr/bin/crun",
            "--runtime-root",
            "/run/berth/runc",
            "--runtime-arg",
            "--systemd-cgroup",
            "--runtime-arg=--log=/x/runc.log",
            "--log-max-size=1024",
            "--log-max-files",
            "5",
            "--shim-pid-file",
            "/i/shim.pid",
        ]);
        let o = run(&v);
        assert_eq!(o.runtime, PathBuf::from("/usr/bin/crun"));
        assert_eq!(o.log_max_size, 1024);
        assert_eq!(o.log_max_files, 5);
        assert_eq!(o.shim_pid_file, Some(PathBuf::from("/i/shim.pid")));
        assert_eq!(
            create_argv(&o),
            os(&[
                "--root",
                "/run/berth/runc",
                "--systemd-cgroup",
                "--log=/x/runc.log",
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/i/pid",
                "web-1a2b3c4d",
            ])
        );
    }

    #[test]
    fn cgroup_procs_repeats_in_order_and_stays_out_of_the_runtime_argv() {
        let mut v = MIN.to_vec();
        v.extend([
            "--cgroup-procs",
            "/sys/fs/cgroup/memory/berth/shims/cgroup.procs",
            "--cgroup-procs=/sys/fs/cgroup/unified/berth/shims/cgroup.procs",
        ]);
        let o = run(&v);
        assert_eq!(
            o.cgroup_procs,
            [
                PathBuf::from("/sys/fs/cgroup/memory/berth/shims/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/unified/berth/shims/cgroup.procs"),
            ]
        );
        assert_eq!(create_argv(&o), create_argv(&run(MIN)));
        let err = parse(os(&[MIN, &["--cgroup-procs"]].concat())).unwrap_err();
        assert!(err.contains("--cgroup-procs: missing value"), "{err}");
    }

    #[test]
    fn relative_paths_become_absolute() {
        let mut v = MIN.to_vec();
        v[3] = "bundle";
        let o = run(&v);
        assert!(o.bundle.is_absolute());
        assert!(o.bundle.ends_with("bundle"));
    }

    #[test]
    fn errors_name_the_flag() {
        let err = |v: &[&str]| parse(os(v)).unwrap_err();
        assert_eq!(err(&MIN[2..]), "--id is required");
        assert!(err(&[MIN, &["--bogus"]].concat()).contains("`--bogus`"));
        assert!(err(&[MIN, &["--log-max-size", "ten"]].concat()).contains("--log-max-size"));
        assert!(err(&[MIN, &["--log-max-files", "0"]].concat()).contains("at least 1"));
        assert!(err(&[MIN, &["--pid-file"]].concat()).contains("missing value"));
        let mut bad_id = MIN.to_vec();
        bad_id[1] = "../x";
        assert!(err(&bad_id).contains("--id"));
        assert!(err(&MIN[..8]).contains("--pid-file is required"));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(os(&["--help"])).unwrap(), Parsed::Help);
        assert_eq!(parse(os(&["-V"])).unwrap(), Parsed::Version);
    }
}
