//! `berth-agentd`: the long-running half of `berth agent` (the library's `daemon`),
//! which `berth agent` execs once it has checked the node configuration. It links only
//! the controller and the API, and runs each pass as `berth agent --pass-worker`.

fn main() -> std::process::ExitCode {
    berth::daemon::agentd_main()
}
