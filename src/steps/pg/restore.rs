//! `pg.restore`: restore a dump into the DR database with the real `pg_restore`/`psql`.

use crate::steps::Evidence;
use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::archive::{Format, detect_format};
use super::finish::{HowRestored, finish_restore};
use super::progress::restore_lines;
use super::split;
use super::target::{
    PreSqlAs, RestoreInto, left_behind, prepare_target, swap_into_place, temporary_name,
};
use super::transfer::Transfer;
use super::tuning::{Jobs, Tuning, apply_settings, choose_jobs};
use super::verify::{Verify, VerifySetting, verify, walk_quietly};
use crate::outcome::{Failure, FailureClass, Outputs};
use crate::services::pg::{
    Conn, PgConnection, list_archive, local_version, major_version, parse_url, run_client_with,
};
use crate::services::s3::S3Access;
use crate::steps::guard::Touch;
use crate::steps::{
    ConfigIssue, Effect, OutputDoc, Preview, PreviewCtx, StepCtx, StepKind, output,
};
use crate::util::OneOrMany;

/// Restores a `pg_dump` archive (custom, directory, tar, plain SQL or gzip'd SQL,
/// detected from the file's header) into a database, optionally recreating it first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PgRestore {
    /// The archive: a local path (usually `{{ steps.backup.outputs.path }}`) or an
    /// `s3://bucket/key` object, read as `transfer` says.
    pub archive: String,
    /// How an `s3://` archive is read: `auto` (the default: downloaded first when the
    /// restore could run parallel jobs, the archive is over 16 MiB and the disk has room
    /// for a copy, else streamed; the choice and why are in the plan and the outputs),
    /// `stream` (straight into `pg_restore`, one job, custom format only) or `download`
    /// (to the run's work directory, deleted after the restore).
    #[serde(default)]
    pub transfer: Transfer,
    /// Target database connection.
    #[serde(flatten)]
    pub connection: PgConnection,
    /// Connection used to drop/create the target (default: the same server's `postgres`
    /// database with the same credentials).
    #[serde(default)]
    pub maintenance_url: Option<String>,
    /// Terminate other sessions, drop and create the target database before restoring.
    #[serde(default)]
    pub recreate: bool,
    /// Owner of the recreated database (default: its owner before, else the user of
    /// `url` when that is not the maintenance user).
    #[serde(default)]
    pub owner: Option<String>,
    /// SQL run in the new database before the restore, e.g. `CREATE EXTENSION IF NOT EXISTS citext`.
    #[serde(default)]
    pub pre_sql: Vec<String>,
    /// Who runs `pre_sql`: `maintenance` (default: the `maintenance_url` user, connected to
    /// the target database, as extensions need) or `target` (the restore's own user).
    #[serde(default)]
    pub pre_sql_as: PreSqlAs,
    /// Do not restore ownership (`--no-owner`).
    #[serde(default)]
    pub no_owner: bool,
    /// Do not restore grants (`--no-privileges`).
    #[serde(default)]
    pub no_privileges: bool,
    /// Restore only these schemas (`--schema`).
    #[serde(default)]
    pub schema: Option<OneOrMany<String>>,
    /// Drop objects before recreating them (`--clean`).
    #[serde(default)]
    pub clean: bool,
    /// With `clean`: `DROP ... IF EXISTS` (`--if-exists`).
    #[serde(default)]
    pub if_exists: bool,
    /// Parallel restore jobs for a custom or directory archive in a file: `auto` (the
    /// default: this machine's cores and the server's, no more than the archive's tables
    /// with data; the choice and why are in the outputs) or a number.
    #[serde(default)]
    pub jobs: Jobs,
    /// The server's cores, for `jobs: auto` where the server cannot say (a managed
    /// server's `max_worker_processes` is not its core count).
    #[serde(default)]
    pub server_cores: Option<u32>,
    /// Give the restore's sessions settings that are safe for a throwaway DR database
    /// and make it faster (`synchronous_commit=off`, a larger `maintenance_work_mem` for
    /// index builds), and analyze with `vacuumdb -j` (default true; listed in the outputs).
    #[serde(default = "yes")]
    pub tune_session: bool,
    /// Restore as one transaction (`--single-transaction`); not with `jobs`.
    #[serde(default)]
    pub single_transaction: bool,
    /// Regular expressions for `pg_restore` errors that are expected (shown as warnings).
    #[serde(default)]
    pub allow_errors: Vec<String>,
    /// Extra arguments for `pg_restore`.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Directory holding `pg_restore` and `psql` (default: found on PATH).
    #[serde(default)]
    pub pg_bin: Option<String>,
    /// How to reach S3 when `archive` is an `s3://` URL (endpoint, region, profile).
    #[serde(default)]
    pub s3: Option<S3Access>,
    /// How many of the largest tables to report row estimates for (default 10).
    #[serde(default)]
    pub top_tables: Option<u32>,
    /// Run `ANALYZE` after restoring (default true): pg_restore leaves no planner
    /// statistics, and the reported row estimates come from them.
    #[serde(default = "yes")]
    pub analyze: bool,
    /// Check the archive before anything is dropped, so a dump that is not whole never
    /// costs the existing DR database: `blocks` (every data block of a custom-format
    /// archive present and whole, read without decompressing; other formats are read
    /// in full), `full` (`pg_restore -f /dev/null`: everything decompressed, a fifth of
    /// a restore's time) or `off`. Default: `blocks` with `restore_into: target`, `off`
    /// with `temporary`, where nothing is dropped before the restore has passed.
    /// `true` is `full` and `false` is `off`.
    #[serde(default)]
    #[schemars(with = "Option<VerifySetting>")]
    pub verify_archive: Option<Verify>,
    /// Where the restore goes: `target` (default: straight into the database of `url`)
    /// or `temporary` (into a new `<database>_drrun_new`, renamed over the target only
    /// once the restore has passed its checks, so an interrupted or failed drill leaves
    /// the previous DR database intact).
    #[serde(default)]
    pub restore_into: RestoreInto,
    /// With parallel jobs, load a table that holds more than its share of a
    /// custom-format file's data through `jobs` sessions at once (default true):
    /// pg_restore gives each table's data to one job, so such a table is the whole
    /// restore's critical path. The restore then runs in pg_restore's three sections
    /// (schema, data, indexes and constraints); the table's rows are counted in and out,
    /// and any failure fails the step.
    #[serde(default = "yes")]
    pub split_tables: bool,
}

fn yes() -> bool {
    true
}

impl PgRestore {
    /// `verify_archive` as set, else what `restore_into` needs.
    pub(super) fn verify_mode(&self) -> Verify {
        self.verify_archive.unwrap_or(match self.restore_into {
            RestoreInto::Target => Verify::Blocks,
            RestoreInto::Temporary => Verify::Off,
        })
    }
}

impl StepKind for PgRestore {
    const NAME: &'static str = "pg.restore";
    const SUMMARY: &'static str = "Restore a pg_dump archive into a (recreated) database with pg_restore/psql; fails on unexpected restore errors.";
    const EFFECT: Effect = Effect::Destructive;
    const EXAMPLE: &'static str = r#"restore:
  kind: pg.restore
  with:
    archive: "{{ steps.backup.outputs.path }}"
    url: "{{ secrets.db_url }}"
    recreate: true
    pre_sql: ["CREATE EXTENSION IF NOT EXISTS citext"]
    no_owner: true
    no_privileges: true
    schema: public
    allow_errors: ['role "rdsadmin" does not exist']
"#;
    const OUTPUTS: &'static [OutputDoc] = &[
        output("database", "Name of the restored database."),
        output(
            "format",
            "Archive format detected: custom, directory, tar, plain or plain-gzip.",
        ),
        output(
            "mode",
            "How the archive was read: file, stream (from S3 into stdin) or download (from S3 to a file first).",
        ),
        output(
            "mode_reason",
            "Why it was read that way (what `transfer: auto` went by).",
        ),
        output(
            "verified",
            "How the archive was checked before anything was dropped: blocks, full or off.",
        ),
        output("duration", "Restore duration in seconds."),
        output(
            "errors_ignored",
            "Number of restore errors that matched `allow_errors`.",
        ),
        output("warnings", "The allowed errors, as text."),
        output("jobs", "Parallel jobs the restore ran with."),
        output(
            "jobs_reason",
            "Why that many: set by the playbook, or what `auto` went by.",
        ),
        output(
            "session_settings",
            "Settings the restore's sessions ran with (`synchronous_commit=off`, ...).",
        ),
        output("tables", "Number of tables in the restored schemas."),
        output("size_bytes", "Size of the restored database."),
        output(
            "largest_tables",
            "The largest tables with their estimated row counts.",
        ),
    ];

    const EVIDENCE: Evidence = Evidence {
        summary: Some(super::describe::summary),
        restores: true,
        ..Evidence::NONE
    };

    fn touches(&self) -> Vec<Touch> {
        let Ok(conn) = Conn::from_settings(&self.connection) else {
            return Vec::new();
        };
        let mut touches = vec![super::touch(&conn)];
        // The maintenance connection drops and creates the target database.
        if let Some(url) = &self.maintenance_url
            && let Ok(m) = parse_url(url)
        {
            touches.push(Touch::Pg {
                host: m.host_for_guard(),
                database: conn.database.clone(),
                fields: &["maintenance_url", "url", "database"],
            });
        }
        touches
    }

    fn check(&self) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = self
            .connection
            .problem()
            .map(|m| ConfigIssue::new("", m))
            .into_iter()
            .collect();
        if matches!(self.jobs, Jobs::Fixed(n) if n > 1) && self.single_transaction {
            issues.push(ConfigIssue::new(
                "jobs",
                "`jobs` and `single_transaction` cannot be combined",
            ));
        }
        if self.jobs == Jobs::Fixed(0) {
            issues.push(ConfigIssue::new("jobs", "`jobs` must be at least 1"));
        }
        if self.if_exists && !self.clean {
            issues.push(ConfigIssue::new(
                "if_exists",
                "`if_exists` only applies together with `clean`",
            ));
        }
        for (i, p) in self.allow_errors.iter().enumerate() {
            if let Err(e) = regex::Regex::new(p) {
                issues.push(ConfigIssue::new(
                    format!("allow_errors[{i}]"),
                    format!("invalid regular expression: {e}"),
                ));
            }
        }
        issues
    }

    async fn preview(&self, ctx: &PreviewCtx) -> Preview {
        super::describe::preview(self, ctx).await
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, Failure> {
        restore(self, ctx).await
    }
}

async fn restore(cfg: &PgRestore, ctx: &StepCtx) -> Result<Outputs, Failure> {
    let conn = super::as_step(&Conn::from_settings(&cfg.connection)?, ctx);
    ctx.guards
        .check_pg(&conn.host_for_guard(), &conn.database)?;
    let maintenance = match &cfg.maintenance_url {
        Some(url) => parse_url(url)?,
        None => conn.with_database("postgres"),
    };
    ctx.guards
        .check_pg(&maintenance.host_for_guard(), &conn.database)?;
    super::end_predecessors(ctx, &maintenance, cfg.pg_bin.as_deref()).await;
    let into = match cfg.restore_into {
        RestoreInto::Target => conn.clone(),
        RestoreInto::Temporary => {
            let into = conn.with_database(&temporary_name(&conn.database, "_drrun_new"));
            ctx.guards
                .check_pg(&into.host_for_guard(), &into.database)?;
            into
        }
    };
    let outputs = if cfg.archive.starts_with("s3://") {
        super::transfer::restore_from_s3(cfg, ctx, &into, &maintenance, &conn.database).await?
    } else {
        let path = ctx.resolve_path(&cfg.archive);
        let how = FileRead {
            path: &path,
            mode: "file",
            why: "a local file",
        };
        restore_file(cfg, ctx, how, &into, &maintenance, &conn.database).await?
    };
    if into.database != conn.database {
        ctx.phase(format!(
            "renaming the restored copy over `{}`",
            conn.database
        ));
        swap_into_place(cfg, ctx, &maintenance, &into.database, &conn.database).await?;
    }
    Ok(outputs)
}

/// The archive file a restore reads, and how it got there (for the outputs).
pub(super) struct FileRead<'a> {
    pub path: &'a std::path::Path,
    /// `file` (the playbook's) or `download` (a copy of an `s3://` archive).
    pub mode: &'static str,
    pub why: &'a str,
}

/// Restores an archive file into `conn`'s database (the target, or its temporary).
pub(super) async fn restore_file(
    cfg: &PgRestore,
    ctx: &StepCtx,
    read: FileRead<'_>,
    conn: &Conn,
    maintenance: &Conn,
    target: &str,
) -> Result<Outputs, Failure> {
    let path = read.path;
    let format = detect_format(path)?;
    let started = Instant::now();

    let mut entries = None;
    let mut data_items = 0;
    // `pg_restore -l`, read once: the checks below and a split restore's list use it.
    let mut listing = String::new();
    if format.uses_pg_restore() {
        ctx.phase("reading the archive's table of contents");
        let toc = list_archive(path, cfg.pg_bin.as_deref(), &ctx.cancel).await?;
        if let (Some(dump), Some(local)) = (
            toc.lines()
                .find(|l| l.contains("Dumped by pg_dump version"))
                .and_then(major_version),
            local_version(cfg.pg_bin.as_deref(), &ctx.cancel)
                .await
                .as_deref()
                .and_then(major_version),
        ) && dump > local
        {
            return Err(Failure::config(format!(
                "the archive was dumped by pg_dump {} but the local pg_restore is {}: use a client at least as new (`pg_bin`)",
                dump / 100,
                local / 100
            )));
        }
        let count = toc
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .count();
        entries = Some(count);
        data_items = toc.lines().filter(|l| l.contains(" TABLE DATA ")).count();
        ctx.note(format!(
            "archive: {} format, {count} TOC entries",
            format.as_str()
        ));
        listing = toc;
    }
    let (verified, walked) =
        verify(cfg.verify_mode(), format, path, cfg.pg_bin.as_deref(), ctx).await?;

    ctx.phase(format!("preparing the database `{}`", conn.database));
    prepare_target(cfg, ctx, conn, maintenance, target).await?;
    let parallel = matches!(format, Format::Custom | Format::Directory) && !cfg.single_transaction;
    let (jobs, why) = if parallel {
        let choice = choose_jobs(
            cfg.jobs,
            cfg.server_cores,
            data_items,
            conn,
            cfg.pg_bin.as_deref(),
            &ctx.cancel,
        )
        .await;
        (choice.jobs, choice.why)
    } else {
        (
            1,
            format!("one job: a {} archive restores serially", format.as_str()),
        )
    };
    let tuning = Tuning::for_restore(
        cfg.tune_session,
        jobs,
        why,
        conn,
        cfg.pg_bin.as_deref(),
        &ctx.cancel,
    )
    .await;
    ctx.note(tuning.describe());
    let split = if format == Format::Custom {
        let walked = match walked {
            Some(w) => Some(w),
            None if cfg.split_tables && tuning.jobs > 1 => walk_quietly(path).await,
            None => None,
        };
        walked.and_then(|w| split::plan(cfg, &w, tuning.jobs).map(|s| (w, s)))
    } else {
        None
    };
    // From here on the target holds whatever the restore got to: say so if it stops.
    let restored = async {
        let out = if format.uses_pg_restore() {
            let lines = restore_lines(ctx, entries);
            let ran = if let Some((walk, split)) = &split {
                let archive = (path, listing.as_str(), walk, split);
                split::restore(cfg, ctx, archive, conn, &tuning, &lines).await
            } else {
                let mut cmd = pg_restore_command(cfg, conn, &tuning);
                cmd.arg(path);
                ctx.phase("restoring");
                run_client_with(cmd, "pg_restore", None, &ctx.cancel, Some(lines)).await
            };
            super::confirm_if_cancelled(ctx, maintenance, cfg.pg_bin.as_deref(), ran).await?
        } else {
            let mut cmd = conn.command(cfg.pg_bin.as_deref(), "psql");
            apply_settings(&mut cmd, &tuning.settings);
            cmd.args(["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0"]);
            if cfg.single_transaction {
                cmd.arg("--single-transaction");
            }
            cmd.args(&cfg.extra_args);
            let input = if format == Format::PlainGzip {
                use std::io::Read;
                let file = std::fs::File::open(path)
                    .map_err(|e| Failure::config(format!("cannot open {}: {e}", path.display())))?;
                let mut sql = Vec::new();
                flate2::read::MultiGzDecoder::new(file)
                    .read_to_end(&mut sql)
                    .map_err(|e| {
                        Failure::new(
                            FailureClass::Assertion,
                            format!("archive {} is not valid gzip: {e}", path.display()),
                        )
                    })?;
                cmd.args(["-f", "-"]);
                Some(sql)
            } else {
                cmd.arg("-f").arg(path);
                None
            };
            ctx.phase("restoring (psql)");
            let lines = ctx.output_lines("psql", None);
            let ran = run_client_with(cmd, "psql", input, &ctx.cancel, Some(lines)).await;
            super::confirm_if_cancelled(ctx, maintenance, cfg.pg_bin.as_deref(), ran).await?
        };

        let how = HowRestored {
            format: format.as_str(),
            mode: read.mode,
            mode_reason: read.why,
            started,
            tuning: &tuning,
            verified: verified.as_str(),
            split: split
                .as_ref()
                .map(|(_, s)| (s.table.name.as_str(), s.streams)),
        };
        finish_restore(cfg, ctx, conn, &out, how).await
    }
    .await;
    restored.map_err(|e| e.leaving(left_behind(cfg, &conn.database, target)))
}

/// `pg_restore` into `conn`'s database with the playbook's options; the archive (or
/// standard input) is added by the caller.
pub(super) fn pg_restore_command(
    cfg: &PgRestore,
    conn: &Conn,
    tuning: &Tuning,
) -> tokio::process::Command {
    let mut cmd = conn.command(cfg.pg_bin.as_deref(), "pg_restore");
    apply_settings(&mut cmd, &tuning.settings);
    // --verbose names each TOC entry as it is restored: `progress::restore_lines` counts
    // them, and keeps those lines out of what the errors are judged by.
    cmd.arg("--verbose");
    cmd.args(["--no-password", "-d", &conn.database]);
    if cfg.no_owner {
        cmd.arg("--no-owner");
    }
    if cfg.no_privileges {
        cmd.arg("--no-privileges");
    }
    for schema in cfg
        .schema
        .as_ref()
        .map(OneOrMany::to_vec)
        .unwrap_or_default()
    {
        cmd.args(["--schema", &schema]);
    }
    if cfg.clean {
        cmd.arg("--clean");
    }
    if cfg.if_exists {
        cmd.arg("--if-exists");
    }
    if tuning.jobs > 1 {
        cmd.args(["--jobs", &tuning.jobs.to_string()]);
    }
    if cfg.single_transaction {
        cmd.arg("--single-transaction");
    }
    cmd.args(&cfg.extra_args);
    cmd
}
