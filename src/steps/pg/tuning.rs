//! How fast a restore may go: how many parallel jobs (`jobs: auto`), and the session
//! settings that are safe for a throwaway DR database. The RTO is mostly the restore.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::outcome::{Failure, FailureClass};
use crate::services::pg::{Conn, clean, connection_error, psql, run_client_with};
use crate::steps::StepCtx;
use tokio_util::sync::CancellationToken;

/// Parallel restore jobs: `auto` (the default) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema, Default)]
#[serde(untagged)]
pub(crate) enum Jobs {
    /// As many as the restore can use: the cores of this machine and of the server (the
    /// server's `max_worker_processes`, or `server_cores` for a managed server), and no
    /// more than the archive has tables with data.
    #[default]
    #[schemars(with = "AutoWord")]
    Auto,
    /// Exactly this many (`pg_restore --jobs`).
    Fixed(u32),
}

/// The word `auto`, for the schema.
#[derive(JsonSchema)]
#[allow(dead_code)]
enum AutoWord {
    #[serde(rename = "auto")]
    Auto,
}

impl<'de> Deserialize<'de> for Jobs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Self::Fixed(n)),
            Raw::Text(t) if t == "auto" => Ok(Self::Auto),
            Raw::Text(t) => t.parse().map(Self::Fixed).map_err(|_| {
                serde::de::Error::custom(format!("`jobs` is `auto` or a whole number, not `{t}`"))
            }),
        }
    }
}

/// The jobs chosen and why, for the note, the outputs and the report.
#[derive(Debug, Clone)]
pub(crate) struct JobsChoice {
    pub jobs: u32,
    pub why: String,
}

/// Never more than this many, whatever the counts say: each job is a server backend
/// building indexes with `maintenance_work_mem`.
const MAX_AUTO_JOBS: u32 = 16;

/// Decides `jobs: auto` from this machine's cores, the server's, and the archive's tables
/// with data (`data_items`; each is restored by one job at a time).
pub(crate) async fn choose_jobs(
    jobs: Jobs,
    server_cores: Option<u32>,
    data_items: usize,
    conn: &Conn,
    bin: Option<&str>,
    cancel: &CancellationToken,
) -> JobsChoice {
    if let Jobs::Fixed(n) = jobs {
        return JobsChoice {
            jobs: n.max(1),
            why: "set by the playbook".into(),
        };
    }
    let local = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let (server, server_why) = match server_cores {
        Some(n) => (n, format!("server_cores {n}")),
        None => match psql(conn, bin, "SHOW max_worker_processes", cancel, true)
            .await
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            Some(n) => (n, format!("the server's max_worker_processes {n}")),
            None => (local, "the server's cores unknown".into()),
        },
    };
    let items = u32::try_from(data_items.max(1)).unwrap_or(u32::MAX);
    let chosen = local.min(server).min(items).clamp(1, MAX_AUTO_JOBS);
    JobsChoice {
        jobs: chosen,
        why: format!("auto: {local} local core(s), {server_why}, {data_items} table(s) with data"),
    }
}

/// How one restore runs: its jobs (and why) and its session settings.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    pub jobs: u32,
    pub why: String,
    /// What drrun sets (through `PGOPTIONS`).
    pub settings: Vec<(&'static str, String)>,
    /// What the sessions keep because the server (or the role or database) already has
    /// more: `maintenance_work_mem=2GB (the server's)`.
    pub kept: Vec<String>,
}

impl Tuning {
    pub(crate) fn new(tune_session: bool, jobs: u32, why: String) -> Self {
        Self {
            jobs,
            why,
            settings: if tune_session {
                session_settings(jobs)
            } else {
                Vec::new()
            },
            kept: Vec::new(),
        }
    }

    /// The tuning for a restore into `conn`, which never lowers what its sessions would
    /// have anyway: a DR server set up with more `maintenance_work_mem` keeps it.
    pub(crate) async fn for_restore(
        tune_session: bool,
        jobs: u32,
        why: String,
        conn: &Conn,
        bin: Option<&str>,
        cancel: &CancellationToken,
    ) -> Self {
        let mut tuning = Self::new(tune_session, jobs, why);
        if !tune_session {
            return tuning;
        }
        let sql = "SELECT setting FROM pg_settings WHERE name = 'maintenance_work_mem'";
        let current_kb = psql(conn, bin, sql, cancel, true)
            .await
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if let Some(kb) = current_kb
            && kb >= maintenance_mb(jobs) * 1024
        {
            tuning
                .settings
                .retain(|(name, _)| *name != "maintenance_work_mem");
            tuning.kept.push(format!(
                "maintenance_work_mem={} (the server's)",
                kb_text(kb)
            ));
        }
        tuning
    }

    /// Every setting the sessions run with by drrun's choice or the server's, as
    /// `name=value` for the outputs.
    pub(crate) fn all_settings(&self) -> Vec<String> {
        self.settings
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .chain(self.kept.iter().cloned())
            .collect()
    }

    /// `restoring with 2 jobs (auto: ...); session: synchronous_commit=off, ...`.
    pub(crate) fn describe(&self) -> String {
        let session = if self.settings.is_empty() && self.kept.is_empty() {
            "server defaults".to_string()
        } else {
            self.all_settings().join(", ")
        };
        format!(
            "restoring with {} job(s) ({}); session: {session}",
            self.jobs, self.why
        )
    }
}

/// `ANALYZE` of the restored database: with `vacuumdb --analyze-only --jobs N` when the
/// restore ran in parallel (one table per job), else one `ANALYZE`.
pub(crate) async fn analyze(
    conn: &Conn,
    bin: Option<&str>,
    tuning: &Tuning,
    ctx: &StepCtx,
) -> Result<(), Failure> {
    if tuning.jobs <= 1 {
        psql(conn, bin, "ANALYZE;", &ctx.cancel, false).await?;
        return Ok(());
    }
    let mut cmd = conn.command(bin, "vacuumdb");
    apply_settings(&mut cmd, &tuning.settings);
    cmd.args(["--no-password", "--analyze-only", "--jobs"])
        .arg(tuning.jobs.to_string())
        .args(["--dbname", &conn.database]);
    let lines = ctx.output_lines("vacuumdb", None);
    let out = run_client_with(cmd, "vacuumdb", None, &ctx.cancel, Some(lines)).await?;
    if out.code() == Some(0) {
        return Ok(());
    }
    let stderr = out.stderr_text();
    Err(connection_error(conn, &stderr).unwrap_or_else(|| {
        Failure::new(
            FailureClass::Other,
            format!(
                "vacuumdb --analyze-only on {}: {}",
                conn.describe(),
                clean(&stderr)
            ),
        )
    }))
}

/// Session settings for the restore's connections, safe for a database that is thrown
/// away when the drill is over: a crash mid-restore loses nothing that matters, since the
/// restore is rerun. Passed through `PGOPTIONS`, so every `pg_restore` job gets them.
pub(crate) fn session_settings(jobs: u32) -> Vec<(&'static str, String)> {
    vec![
        ("synchronous_commit", "off".into()),
        (
            "maintenance_work_mem",
            format!("{}MB", maintenance_mb(jobs)),
        ),
    ]
}

/// Index builds are the slow part after the data, and each job builds its own: 512MB
/// each up to 4 jobs, 256MB above. (At 5x bench-pg's database, 512MB against the
/// default 64MB; at 1x it makes no difference.)
fn maintenance_mb(jobs: u32) -> u64 {
    if jobs > 4 { 256 } else { 512 }
}

/// `1048576` kB as PostgreSQL shows it: `1GB`.
fn kb_text(kb: u64) -> String {
    if kb >= 1 << 20 && kb.is_multiple_of(1 << 20) {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 && kb.is_multiple_of(1 << 10) {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}kB")
    }
}

/// Adds `settings` to the `PGOPTIONS` the command already gets from the environment.
pub(crate) fn apply_settings(cmd: &mut tokio::process::Command, settings: &[(&str, String)]) {
    let mut options = std::env::var("PGOPTIONS").unwrap_or_default();
    for (name, value) in settings {
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c {name}={value}"));
    }
    cmd.env("PGOPTIONS", options);
}

/// `synchronous_commit=off, maintenance_work_mem=512MB`, for notes and the report.
pub(crate) fn settings_text(settings: &[(&str, String)]) -> String {
    settings
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_reads_auto_or_a_number() {
        let j: Jobs = serde_json::from_value(serde_json::json!("auto")).unwrap();
        assert_eq!(j, Jobs::Auto);
        let j: Jobs = serde_json::from_value(serde_json::json!(3)).unwrap();
        assert_eq!(j, Jobs::Fixed(3));
        let j: Jobs = serde_json::from_value(serde_json::json!("4")).unwrap();
        assert_eq!(j, Jobs::Fixed(4));
        let e = serde_json::from_value::<Jobs>(serde_json::json!("many")).unwrap_err();
        assert!(e.to_string().contains("`auto` or a whole number"), "{e}");
    }
}
