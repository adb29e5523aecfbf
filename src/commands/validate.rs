use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::{compile_options, read_source};
use crate::cli::{Output, ValidateArgs};
use crate::diag::Diagnostics;
use crate::error::{EXIT_USAGE, Error};
use crate::plan::compile;
use crate::report::printer::{err, out};

pub(super) fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let opts = compile_options(&args.vars)?;
    let mut all_ok = true;
    let mut results = Vec::new();
    let mut text = String::new();
    for path in &args.playbooks {
        let outcome = read_source(path).and_then(|source| {
            compile(path, &source, &opts).map_err(|d| Error::Playbook(Diagnostics(d)))
        });
        match outcome {
            Ok(plan) => {
                let finally = plan.finally_levels.iter().flatten().count();
                text.push_str(&format!(
                    "{}: ok ({} steps, {} finally)\n",
                    path.display(),
                    plan.steps.len() - finally,
                    finally
                ));
                results.push(json!({"file": path.display().to_string(), "ok": true, "errors": []}));
            }
            Err(Error::Playbook(diags)) => {
                all_ok = false;
                text.push_str(&format!("{diags}\n"));
                results.push(
                    json!({"file": path.display().to_string(), "ok": false, "errors": diags.0}),
                );
            }
            Err(e) => {
                all_ok = false;
                text.push_str(&format!("error: {e}\n"));
                results.push(json!({"file": path.display().to_string(), "ok": false, "errors": [{"message": e.to_string()}]}));
            }
        }
    }
    match args.output {
        Output::Json => out(&serde_json::to_string_pretty(
            &json!({"ok": all_ok, "playbooks": results}),
        )?),
        Output::Human if all_ok => out(text.trim_end()),
        Output::Human => err(&text),
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_USAGE)
    })
}
