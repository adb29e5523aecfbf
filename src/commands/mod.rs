//! One module per command. This is the binary's edge: `anyhow` is used here only.

mod graph;
mod kinds;
mod plan;
mod report;
mod run;
mod status;
mod validate;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use indexmap::IndexMap;

use crate::cli::{Cli, Command, VarArgs};
use crate::diag::Diagnostics;
use crate::error::Error;
use crate::plan::{CompileOptions, Plan, compile};
use crate::playbook::Source;

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    crate::report::printer::init_colors();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Resume(args) => run::resume(args),
        Command::Plan(args) => plan::plan(args),
        Command::Validate(args) => validate::validate(args),
        Command::Graph(args) => graph::graph(args),
        Command::Status(args) => status::status(args),
        Command::Report(args) => report::report(args),
        Command::Kinds(args) => kinds::kinds(args),
        Command::Schema => {
            crate::report::printer::out(&crate::schema::playbook_schema_text());
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn read_source(path: &Path) -> Result<Source, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Source {
        name: path.display().to_string(),
        text,
    })
}

/// `--vars-file` files in order, then `-e` pairs; values from `-e` are strings.
pub fn compile_options(args: &VarArgs) -> Result<CompileOptions, Error> {
    let mut overrides: IndexMap<String, serde_json::Value> = IndexMap::new();
    for file in &args.vars_files {
        let text = std::fs::read_to_string(file).map_err(|source| Error::Read {
            path: file.display().to_string(),
            source,
        })?;
        let map: IndexMap<String, serde_json::Value> = serde_yaml_ng::from_str(&text)
            .map_err(|e| Error::Usage(format!("--vars-file {}: {e}", file.display())))?;
        overrides.extend(map);
    }
    for pair in &args.vars {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(Error::Usage(format!("-e expects KEY=VALUE, got `{pair}`")));
        };
        overrides.insert(
            k.trim().to_string(),
            serde_json::Value::String(v.to_string()),
        );
    }
    Ok(CompileOptions {
        var_overrides: overrides,
        env_allow: args.env_allow.clone(),
    })
}

/// Reads and compiles a playbook; on failure, the error carries every diagnostic.
pub fn load_plan(path: &Path, vars: &VarArgs) -> Result<Plan, Error> {
    let source = read_source(path)?;
    let opts = compile_options(vars)?;
    compile(path, &source, &opts).map_err(|d| Error::Playbook(Diagnostics(d)))
}
