//! The `meshgate` binary: parses the command line and runs the gateway.

use clap::Parser;

#[cfg(not(feature = "count-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// With `count-alloc`: the same allocator, counting the bytes live in it (`meshgate::memory`).
#[cfg(feature = "count-alloc")]
#[global_allocator]
static ALLOC: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

fn main() -> std::process::ExitCode {
    let args = meshgate::Args::parse();
    #[cfg(feature = "count-alloc")]
    meshgate::memory::count_with(|| ALLOC.allocated());
    // The control plane (admin, config watch, signals); requests run on the workers' threads.
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshgate: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    std::process::ExitCode::from(rt.block_on(meshgate::run(args)))
}
