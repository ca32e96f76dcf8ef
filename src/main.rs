//! The `sealpipe` binary: a thin shell over the library. Exit codes: 0 success, 1 some
//! objects failed, 2 usage or configuration error, 130 interrupted.
//!
//! Nothing here writes to stdout or stderr directly: `cli::output` does, so that a
//! closed stream never panics and no untrusted byte reaches a terminal raw.
#![deny(clippy::print_stdout, clippy::print_stderr)]
// As in the library: the job's nested futures outgrow rustc's default query depth in a
// clean build.
#![recursion_limit = "256"]

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::output::{is_stdout_closed, say};

fn main() -> ExitCode {
    // First, before any file is opened: see the function's comment.
    cli::output::reserve_standard_descriptors();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout, usage errors to stderr; clap ignores a
            // closed stream itself, and its exit code is 0 or 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cli::main(cli)) {
        Ok(cli::Outcome::Success) => ExitCode::SUCCESS,
        Ok(cli::Outcome::ObjectsFailed) => ExitCode::from(1),
        Ok(cli::Outcome::Interrupted) => ExitCode::from(130),
        // The reader of our output went away: like `rg ... | head`, stop quietly.
        Err(e) if is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            say!("error: {}", cli::output::causes(&e));
            ExitCode::from(2)
        }
    }
}
