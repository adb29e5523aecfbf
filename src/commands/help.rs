//! `drrun completions SHELL` and `drrun man`: generated from the clap definitions, so they
//! never fall behind the flags.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::report::printer::out;

pub(super) fn completions(args: &CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "drrun", &mut buf);
    out(&String::from_utf8(buf).context("completions are UTF-8")?);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn man(args: &ManArgs) -> Result<ExitCode> {
    let cmd = Cli::command();
    let Some(dir) = &args.dir else {
        out(&render(cmd)?);
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut written = vec![write_page(dir, "drrun", cmd.clone())?];
    for sub in cmd.get_subcommands() {
        let name = format!("drrun-{}", sub.get_name());
        // clap names are static: a few bytes per page, once per process.
        let page = sub.clone().name(&*Box::leak(name.clone().into_boxed_str()));
        written.push(write_page(dir, &name, page)?);
    }
    out(&format!("wrote {}", written.join(", ")));
    Ok(ExitCode::SUCCESS)
}

fn render(cmd: clap::Command) -> Result<String> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    String::from_utf8(buf).context("the man page is UTF-8")
}

fn write_page(dir: &std::path::Path, name: &str, cmd: clap::Command) -> Result<String> {
    let path = dir.join(format!("{name}.1"));
    crate::util::fs::write_atomic(&path, render(cmd)?.as_bytes(), false)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path.display().to_string())
}
