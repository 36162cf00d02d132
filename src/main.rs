//! `tollgate`: the Diameter Ro online-charging gateway and OCS, daemon and CLI.
//!
//! Layout: `main.rs` parses the command line (clap derive) and dispatches; each subcommand
//! lives in its own module. Errors reach `main` as `anyhow::Error` and are printed as one
//! line that says what to fix; the process then exits non-zero.

mod decode;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Diameter Ro online-charging gateway and OCS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a Diameter message (hex or raw bytes) as a tree of named AVPs.
    Decode(decode::DecodeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(args) => decode::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
