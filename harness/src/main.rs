//! The `meshbench` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    meshbench::cli::quiet_on_closed_pipe();
    meshbench::cli::run(meshbench::cli::Cli::parse())
}
