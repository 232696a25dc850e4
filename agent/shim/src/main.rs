//! `berth-shim`: the per-container parent process once the OCI runtime exits.
//! Skeleton: the runtime issue gives it its job (log pump, exit status, subreaper).

fn main() {
    eprintln!(
        "berth-shim: not started by berth; it is launched by `berth apply` for each container"
    );
    std::process::exit(2);
}
