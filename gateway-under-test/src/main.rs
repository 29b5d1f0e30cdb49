//! The `meshgate` binary: parses the command line and runs the gateway.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = meshgate::Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshgate: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    std::process::ExitCode::from(rt.block_on(meshgate::run(args)))
}
