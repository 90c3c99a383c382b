//! The `dcvd` binary: everything lives in the library ([`dcvd::cli`]).

fn main() -> std::process::ExitCode {
    dcvd::cli::main()
}
