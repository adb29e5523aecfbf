//! `drrun evidence --since 90d --out DIR`: the audit bundle of restore tests (SOC 2 A1.3,
//! ISO 27001 A.8.13): every drill of the period in the state, with its result, objectives
//! and measurements, who ran it (user, host or pod, ServiceAccount), the drrun version,
//! the playbook's sha256 and the backup restored; each drill's report and journal; and
//! `SHA256SUMS` over every file, so `sha256sum -c SHA256SUMS` proves the bundle whole. It
//! is written beside DIR and renamed into place: never half a bundle.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;
use sha2::Digest;

use crate::cli::EvidenceArgs;
use crate::duration::human_days;
use crate::error::Error;
use crate::report::history::{all, compare};
use crate::report::model::DrillReport;
use crate::report::printer::out;
use crate::state::runs::StateDir;

#[derive(Serialize)]
struct Entry {
    playbook: String,
    run_id: String,
    started_at: String,
    finished_at: Option<String>,
    status: String,
    rto: String,
    rpo: String,
    rto_met: Option<bool>,
    rpo_met: Option<bool>,
    user: String,
    host: String,
    service_account: Option<String>,
    drrun_version: String,
    playbook_sha256: String,
    backup: Option<serde_json::Value>,
    /// The drill's files in the bundle.
    files: Vec<String>,
}

fn write(root: &Path, rel: &str, bytes: &[u8], sums: &mut Vec<(String, String)>) -> Result<()> {
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, bytes)?;
    sums.push((hex::encode(sha2::Sha256::digest(bytes)), rel.to_string()));
    Ok(())
}

pub(super) fn evidence(args: &EvidenceArgs) -> Result<ExitCode> {
    if args.out.exists() {
        return Err(Error::Usage(format!(
            "{} exists already: an evidence bundle is written to a new directory",
            args.out.display()
        ))
        .into());
    }
    let since = chrono::Utc::now() - chrono::Duration::from_std(args.since).unwrap_or_default();
    let since_text = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let looked = super::look(&args.state)?;
    let mut drills: Vec<(PathBuf, DrillReport)> = Vec::new();
    for dir in &looked.dirs {
        let state = StateDir::new(dir);
        let reports = all(&state);
        for (i, r) in reports.iter().enumerate() {
            let started = chrono::DateTime::parse_from_rfc3339(&r.started_at).ok();
            if started.is_some_and(|s| s >= since) {
                let mut r = r.clone();
                r.history = Some(compare(&r, &reports[..i]));
                drills.push((state.run_dir(&r.run_id), r));
            }
        }
    }
    if drills.is_empty() {
        return Err(Error::Usage(format!(
            "no drills started since {since_text}: {}",
            super::describe_dirs(&looked.dirs)
        ))
        .into());
    }
    let tmp = args.out.with_file_name(format!(
        ".{}.partial",
        args.out
            .file_name()
            .map_or_else(|| "evidence".into(), |n| n.to_string_lossy().to_string())
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let mut sums = Vec::new();
    let mut entries = Vec::new();
    for (run_dir, r) in &drills {
        // A name is the user's text: only safe characters make a path.
        let folder: String = r
            .playbook
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = format!("{folder}/{}", r.run_id);
        let mut files = Vec::new();
        for (name, bytes) in [
            ("report.json", serde_json::to_vec_pretty(r)?),
            ("report.md", crate::report::markdown::render(r).into_bytes()),
            (
                "journal.jsonl",
                std::fs::read(run_dir.join("journal.jsonl"))?,
            ),
        ] {
            let rel = format!("{base}/{name}");
            write(&tmp, &rel, &bytes, &mut sums)?;
            files.push(rel);
        }
        entries.push(Entry {
            playbook: r.playbook.name.clone(),
            run_id: r.run_id.clone(),
            started_at: r.started_at.clone(),
            finished_at: r.finished_at.clone(),
            status: r.status.as_str().into(),
            rto: r.rto.headline("RTO"),
            rpo: r.rpo.headline("RPO"),
            rto_met: r.rto.met,
            rpo_met: r.rpo.met,
            user: r.user.clone(),
            host: r.host.clone(),
            service_account: r.service_account.clone(),
            drrun_version: r.drrun_version.clone(),
            playbook_sha256: r.playbook.hash.clone(),
            backup: r.backup.as_ref().map(|b| {
                serde_json::json!({
                    "object": b.evidence.object,
                    "size": b.evidence.size,
                    "sha256": b.evidence.sha256,
                    "taken": b.evidence.taken,
                })
            }),
            files,
        });
    }
    let mut md = format!(
        "# DR drill evidence\n\n- **Period:** drills started since {since_text} (the last {})\n- **Drills:** {}, of which {} passed\n- **Generated:** {} by drrun {}\n- **Check:** `sha256sum -c SHA256SUMS` in this directory\n\n",
        human_days(args.since),
        entries.len(),
        entries.iter().filter(|e| e.status == "passed").count(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        env!("CARGO_PKG_VERSION"),
    );
    md.push_str("| Playbook | Run | Started | Result | RTO | RPO | Run by | Playbook sha256 | Backup |\n|---|---|---|---|---|---|---|---|---|\n");
    for e in &entries {
        let by = match &e.service_account {
            Some(sa) => format!("{} on {} (ServiceAccount {sa})", e.user, e.host),
            None => format!("{} on {}", e.user, e.host),
        };
        let backup = e.backup.as_ref().map_or_else(
            || "-".to_string(),
            |b| {
                format!(
                    "`{}` ({} bytes, sha256 `{}`)",
                    b["object"].as_str().unwrap_or("?"),
                    b["size"].as_u64().unwrap_or(0),
                    b["sha256"].as_str().map_or("?", |s| &s[..s.len().min(16)])
                )
            },
        );
        let _ = writeln!(
            md,
            "| {} | [`{}`]({}) | {} | {} | {} | {} | {by} | `{}` | {backup} |",
            e.playbook,
            e.run_id,
            e.files[1],
            e.started_at,
            e.status.to_uppercase(),
            e.rto.replace('|', "/"),
            e.rpo.replace('|', "/"),
            &e.playbook_sha256[..e.playbook_sha256.len().min(16)],
        );
    }
    write(&tmp, "evidence.md", md.as_bytes(), &mut sums)?;
    write(
        &tmp,
        "evidence.json",
        &serde_json::to_vec_pretty(&serde_json::json!({
            "since": since_text,
            "drills": entries,
        }))?,
        &mut sums,
    )?;
    sums.sort_by(|a, b| a.1.cmp(&b.1));
    let manifest = sums.iter().fold(String::new(), |mut m, (h, p)| {
        let _ = writeln!(m, "{h}  {p}");
        m
    });
    std::fs::write(tmp.join("SHA256SUMS"), manifest)?;
    std::fs::rename(&tmp, &args.out)?;
    out(&format!(
        "wrote {} drill(s) to {} (check: cd {} && sha256sum -c SHA256SUMS)",
        entries.len(),
        args.out.display(),
        args.out.display()
    ));
    Ok(ExitCode::SUCCESS)
}
