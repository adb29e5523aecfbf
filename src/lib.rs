//! drrun: disaster-recovery drills from YAML playbooks.
//!
//! `ARCHITECTURE.md` describes the layers and what each may import.

mod cli;
mod commands;
mod diag;
mod duration;
mod error;
mod events;
mod exec;
mod outcome;
mod plan;
mod playbook;
mod report;
mod schema;
mod secrets;
mod services;
mod state;
mod steps;
mod util;

use std::process::ExitCode;

/// The whole program: parse arguments, run the command, map the outcome to an exit code.
pub fn run(args: Vec<String>) -> ExitCode {
    use clap::Parser;
    if let Some((typed, command)) = cli::misspelt_command(&args) {
        report::printer::error(&anyhow::anyhow!(
            "unknown command `{typed}`: did you mean `{command}`? (to run a playbook, name its file)"
        ));
        return ExitCode::from(error::EXIT_USAGE);
    }
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
                .map_or(error::EXIT_FAILED, error::Error::exit_code);
            report::printer::error(&err);
            ExitCode::from(code)
        }
    }
}
