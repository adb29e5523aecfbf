//! drrun: disaster-recovery drills from YAML playbooks.

pub mod cli;
pub mod commands;
pub mod diag;
pub mod duration;
pub mod error;
pub mod exec;
pub mod plan;
pub mod playbook;
pub mod process;
pub mod report;
pub mod schema;
pub mod state;
pub mod steps;
pub mod util;

use std::process::ExitCode;

/// The whole program: parse arguments, run the command, map the outcome to an exit code.
pub fn run(args: Vec<String>) -> ExitCode {
    use clap::Parser;
    let cli = match cli::Cli::try_parse_from(cli::normalize_args(args)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { error::EXIT_USAGE } else { 0 });
        }
    };
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            let code = err
                .downcast_ref::<error::Error>()
                .map(error::Error::exit_code)
                .unwrap_or(error::EXIT_FAILED);
            report::printer::error(&err);
            ExitCode::from(code)
        }
    }
}
