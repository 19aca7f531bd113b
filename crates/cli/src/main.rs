//! `zoo`: the command-line face of the zoo crates. Each verb loads, calls a library, renders.
//!
//! Exit codes: 0 success; 1 a user error (bad card, bad flag, missing file); 2 an internal error.

use std::process::ExitCode;

use clap::Parser;

mod allocator;
mod bench;
mod cli;
mod compute;
mod hub;
mod run_report;
mod speed;
mod train;
mod verbs;

fn main() -> ExitCode {
    allocator::tune();
    let cli = cli::Cli::parse();
    match verbs::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (`zoo list | head`) is not a failure.
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            if let Some(cards) = err.downcast_ref::<zoo_card::CardErrors>() {
                eprintln!("{cards}");
                return ExitCode::from(1);
            }
            eprintln!("error: {err:#}");
            let user = err.chain().any(|e| e.is::<verbs::UserError>());
            ExitCode::from(if user { 1 } else { 2 })
        }
    }
}
