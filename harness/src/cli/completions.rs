//! `meshbench completions bash|zsh|fish|elvish|powershell`: a completion script for the shell.

use clap::CommandFactory;

use super::{exit, Cli};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(args: &Args) -> u8 {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "meshbench", &mut std::io::stdout());
    exit::OK
}
