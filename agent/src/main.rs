//! `berth`: the command line (the library's `cli`).

fn main() -> std::process::ExitCode {
    berth::set_umask();
    berth::cli::main()
}
