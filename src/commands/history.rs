//! `drrun history [PLAYBOOK]`: a playbook's drills, oldest first, with what history
//! compares (RTO, restore time, backup age), and the newest against the ones before.

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::cli::{HistoryArgs, Output, StateArgs};
use crate::duration::human_ms;
use crate::error::Error;
use crate::report::history::{History, all, compare};
use crate::report::printer::out;
use crate::state::runs::StateDir;

#[derive(Serialize)]
struct Drill {
    run_id: String,
    started_at: String,
    status: String,
    user: String,
    host: String,
    rto_ms: Option<u64>,
    restore_ms: Option<u64>,
    backup_age_ms: Option<u64>,
}

#[derive(Serialize)]
struct Playbook {
    playbook: String,
    state_dir: String,
    drills: Vec<Drill>,
    /// The newest drill against the ones before it.
    newest: Option<History>,
}

pub(super) fn history(args: &HistoryArgs) -> Result<ExitCode> {
    let looked = super::look(&StateArgs {
        playbook: args.playbook.clone(),
        state_dir: args.state_dir.clone(),
        state: args.state.clone(),
    })?;
    let mut found = Vec::new();
    for dir in &looked.dirs {
        let state = StateDir::new(dir);
        let all = all(&state);
        if all.is_empty() {
            continue;
        }
        let newest = all.last().map(|n| compare(n, &all[..all.len() - 1]));
        let shown = looked.store.as_ref().map_or_else(
            || dir.display().to_string(),
            |_| {
                dir.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().to_string())
            },
        );
        found.push(Playbook {
            playbook: all
                .last()
                .map_or_else(String::new, |r| r.playbook.name.clone()),
            state_dir: shown,
            drills: all
                .iter()
                .map(|r| Drill {
                    run_id: r.run_id.clone(),
                    started_at: r.started_at.clone(),
                    status: r.status.as_str().into(),
                    user: r.user.clone(),
                    host: r.host.clone(),
                    rto_ms: r.rto.measured_ms,
                    restore_ms: r.restore_ms,
                    backup_age_ms: r.rpo.measured_ms,
                })
                .collect(),
            newest,
        });
    }
    if found.is_empty() {
        return Err(Error::Usage(format!(
            "no drills found: {}",
            super::describe_dirs(&looked.dirs)
        ))
        .into());
    }
    match args.output {
        Output::Json => out(&serde_json::to_string_pretty(&found)?),
        Output::Human => {
            let ms = |v: Option<u64>| v.map_or_else(|| "-".into(), human_ms);
            let mut text = String::new();
            for p in &found {
                text.push_str(&format!(
                    "drills of {} ({}):\n{:22}  {:24}  {:11}  {:>9}  {:>9}  {:>10}  BY\n",
                    p.playbook,
                    p.state_dir,
                    "RUN",
                    "STARTED",
                    "STATUS",
                    "RTO",
                    "RESTORE",
                    "BACKUP AGE"
                ));
                for d in &p.drills {
                    text.push_str(&format!(
                        "{:22}  {:24}  {:11}  {:>9}  {:>9}  {:>10}  {} on {}\n",
                        d.run_id,
                        d.started_at,
                        d.status,
                        ms(d.rto_ms),
                        ms(d.restore_ms),
                        ms(d.backup_age_ms),
                        d.user,
                        d.host
                    ));
                }
                if let Some(h) = &p.newest {
                    for w in &h.warnings {
                        text.push_str(&format!("warning: {w}\n"));
                    }
                }
                text.push('\n');
            }
            out(text.trim_end());
        }
    }
    Ok(ExitCode::SUCCESS)
}
