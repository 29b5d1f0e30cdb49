//! `meshbench images build`: the images the container engines run, built here from the
//! binaries of this build (no base image is pulled).

use super::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// `<prefix>/meshbench:<version>` from this executable and `<prefix>/meshgate:<version>`
    /// from the meshgate beside it, each with the shared libraries it links.
    Build {
        #[arg(long, default_value = "meshbench")]
        prefix: String,
    },
}

pub fn run(args: &Args) -> u8 {
    match &args.action {
        Action::Build { prefix } => match crate::images::build_all(prefix, &mut std::io::stdout()) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("error: {e}");
                exit::USAGE
            }
        },
    }
}
