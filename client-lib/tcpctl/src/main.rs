//! `tcpctl` binary: parse the command line, run it on a single-threaded
//! runtime, and turn the outcome into the documented exit code.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tcpctl::cli::Cli;
use tcpctl::error::{EXIT_FAILURE, EXIT_OK};

fn main() -> ExitCode {
    // Usage errors exit here with code 2; --help/--version with 0.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tcpctl: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match runtime.block_on(tcpctl::commands::run(cli, &mut out)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        // The reader went away (`tcpctl ls | head`): not an error worth a word.
        Err(e) if e.is_broken_pipe() => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("tcpctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
