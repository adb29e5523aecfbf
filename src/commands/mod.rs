//! One module per command. This is the binary's edge: `anyhow` is used here only.

mod evidence;
mod fleet;
mod graph;
mod help;
mod history;
mod kinds;
mod plan;
mod rbac;
mod report;
mod run;
mod state;
mod status;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use indexmap::IndexMap;

use crate::cli::{Cli, Command, StateArgs, VarArgs};
use crate::diag::Diagnostics;
use crate::error::Error;
use crate::plan::{CompileOptions, Plan, compile};
use crate::playbook::Source;
use crate::state::StateError;
use crate::state::runs::{StateDir, default_state_dir};

pub(crate) fn dispatch(cli: Cli) -> Result<ExitCode> {
    crate::report::printer::init_colors();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Resume(args) => run::resume(args),
        Command::Plan(args) => plan::plan(args),
        Command::Validate(args) => validate::validate(args),
        Command::Graph(args) => graph::graph(args),
        Command::Rbac(args) => rbac::rbac(&args),
        Command::History(args) => history::history(&args),
        Command::Evidence(args) => evidence::evidence(&args),
        Command::Status(args) => status::status(args),
        Command::Report(args) => report::report(args),
        Command::Kinds(args) => kinds::kinds(args),
        Command::Completions(args) => help::completions(&args),
        Command::Man(args) => help::man(&args),
        Command::Schema => {
            crate::report::printer::out(&crate::schema::playbook_schema_text());
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn read_source(path: &Path) -> Result<Source, Error> {
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
pub(crate) fn compile_options(args: &VarArgs) -> Result<CompileOptions, Error> {
    let mut overrides: IndexMap<String, serde_json::Value> = IndexMap::new();
    let mut origins: IndexMap<String, String> = IndexMap::new();
    for file in &args.vars_files {
        let text = std::fs::read_to_string(file).map_err(|source| Error::Read {
            path: file.display().to_string(),
            source,
        })?;
        let map: IndexMap<String, serde_json::Value> = serde_yaml_ng::from_str(&text)
            .map_err(|e| Error::Usage(format!("--vars-file {}: {e}", file.display())))?;
        for key in map.keys() {
            origins.insert(key.clone(), format!("--vars-file {}", file.display()));
        }
        overrides.extend(map);
    }
    for pair in &args.vars {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(Error::Usage(format!("-e expects KEY=VALUE, got `{pair}`")));
        };
        origins.insert(k.trim().to_string(), format!("-e {}=…", k.trim()));
        overrides.insert(
            k.trim().to_string(),
            serde_json::Value::String(v.to_string()),
        );
    }
    Ok(CompileOptions {
        var_overrides: overrides,
        var_origins: origins,
        env_allow: args.env_allow.clone(),
    })
}

/// Reads and compiles a playbook; on failure, the error carries every diagnostic.
pub(crate) fn load_plan(path: &Path, opts: &CompileOptions) -> Result<Plan, Error> {
    let source = read_source(path)?;
    compile(path, &source, opts).map_err(|d| Error::Playbook(Diagnostics(d)))
}

/// Finds the state directory and run: by `--state-dir`, by `--playbook`, or by looking
/// through `.drrun/*/` and `*/.drrun/*/` under the current directory.
pub(crate) fn find_run(
    looked: &Looked,
    run_id: Option<&str>,
    resumable: bool,
) -> Result<(PathBuf, String), Error> {
    let dirs = &looked.dirs;
    let mut best: Option<(String, PathBuf)> = None;
    for dir in dirs {
        let sd = StateDir::new(dir);
        if let Some(id) = run_id {
            if sd.journal_path(id).exists() {
                return Ok((dir.clone(), id.to_string()));
            }
            continue;
        }
        let found = if resumable {
            match sd.newest_resumable() {
                Ok(s) => Some(s.run_id),
                Err(StateError::NothingToResume(_)) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            sd.list()?.pop()
        };
        if let Some(id) = found
            && best.as_ref().is_none_or(|(b, _)| id > *b)
        {
            best = Some((id, dir.clone()));
        }
    }
    match (best, run_id) {
        (Some((id, dir)), _) => Ok((dir, id)),
        (None, Some(id)) => Err(Error::Usage(format!(
            "no run `{id}`: {}",
            describe_dirs(dirs)
        ))),
        (None, None) if resumable => Err(StateError::NothingToResume(format!(
            "no unfinished run in {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
        (None, None) => Err(Error::Usage(format!(
            "no runs found: {}; pass --playbook, --state or --state-dir",
            describe_dirs(dirs)
        ))),
    }
}

/// "DIR (runs: a, b)" for each directory looked in, or what was searched when none exists.
pub(crate) fn describe_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        let here = std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string());
        return format!("no state directory under {here} (looked for .drrun/*/ and */.drrun/*/)");
    }
    let listed: Vec<String> = dirs
        .iter()
        .map(|d| {
            let runs = StateDir::new(d).list().unwrap_or_default();
            if runs.is_empty() {
                format!("{} (no runs)", d.display())
            } else {
                format!("{} (runs: {})", d.display(), runs.join(", "))
            }
        })
        .collect();
    format!("looked in {}", listed.join("; "))
}

/// The state directories a command looks through, and the store they were read from.
pub(crate) struct Looked {
    pub dirs: Vec<PathBuf>,
    /// With `--state`: the store (for S3, its mirror, removed when this is dropped).
    pub store: Option<state::Readable>,
}

/// Where `status`, `report` and `resume` look: `--state-dir`, `--state` (every playbook
/// in the store, or `--playbook`'s), `--playbook`'s default directory, or `.drrun/*/`
/// here and one level down.
pub(crate) fn look(state: &StateArgs) -> Result<Looked, Error> {
    if let Some(store) = &state.state {
        let readable = state::readable(store, state.playbook.as_deref())?;
        let dirs = match &state.playbook {
            Some(p) => vec![readable.root.join(state::store_name(p))],
            None => {
                let mut dirs: Vec<PathBuf> = std::fs::read_dir(&readable.root)
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .map(|e| e.path())
                            .filter(|p| p.join("runs").is_dir())
                            .collect()
                    })
                    .unwrap_or_default();
                dirs.sort();
                dirs
            }
        };
        return Ok(Looked {
            dirs,
            store: Some(readable),
        });
    }
    Ok(Looked {
        dirs: candidate_dirs(state),
        store: None,
    })
}

fn candidate_dirs(state: &StateArgs) -> Vec<PathBuf> {
    if let Some(dir) = &state.state_dir {
        return vec![dir.clone()];
    }
    if let Some(playbook) = &state.playbook {
        return vec![default_state_dir(playbook)];
    }
    let mut dirs = Vec::new();
    let mut scan = |root: &Path| {
        if let Ok(entries) = std::fs::read_dir(root.join(".drrun")) {
            dirs.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.join("runs").is_dir()),
            );
        }
    };
    scan(Path::new("."));
    if let Ok(entries) = std::fs::read_dir(".") {
        for e in entries.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
            scan(&e.path());
        }
    }
    dirs.sort();
    dirs
}
