//! `pg.restore`: restore a dump into the DR database with the real `pg_restore`/`psql`.

use std::path::Path;
use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::pg_client::{Conn, clean, connection_error, ident, literal, parse_url, run_client};
use super::{
    ConfigIssue, Effect, OutputDoc, Outputs, Preview, PreviewCtx, StepCtx, StepError, StepKind,
    output,
};
use crate::playbook::model::FailureClass;
use crate::util::OneOrMany;

/// How to reach a PostgreSQL server: a URL, or libpq parts. Passwords reach the client
/// programs only through their environment, never their arguments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgConnection {
    /// Connection URL, `postgresql://user:password@host:5432/dbname` (usually a secret).
    #[serde(default)]
    pub url: Option<String>,
    /// Host name, IP address or unix-socket directory.
    #[serde(default)]
    pub host: Option<String>,
    /// Port (default 5432).
    #[serde(default)]
    pub port: Option<u16>,
    /// User name.
    #[serde(default)]
    pub user: Option<String>,
    /// Password (use a secret).
    #[serde(default)]
    pub password: Option<String>,
    /// Database name.
    #[serde(default)]
    pub database: Option<String>,
}

impl PgConnection {
    pub fn check(&self) -> Vec<ConfigIssue> {
        if self.url.is_none() && self.database.is_none() {
            vec![ConfigIssue::new(
                "",
                "give `url` or at least `database` (with `host`, `port`, `user`, `password` as needed)",
            )]
        } else {
            Vec::new()
        }
    }
}

/// Restores a `pg_dump` archive (custom, directory, tar, plain SQL or gzip'd SQL,
/// detected from the file's header) into a database, optionally recreating it first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgRestore {
    /// The archive: a local path (usually `{{ steps.backup.outputs.path }}`) or an
    /// `s3://bucket/key` object streamed straight into `pg_restore`.
    pub archive: String,
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
    /// Owner of the recreated database.
    #[serde(default)]
    pub owner: Option<String>,
    /// SQL run in the new database before the restore, e.g. `CREATE EXTENSION IF NOT EXISTS citext`.
    #[serde(default)]
    pub pre_sql: Vec<String>,
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
    /// Parallel restore jobs (custom or directory format from a file).
    #[serde(default)]
    pub jobs: Option<u32>,
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
    pub s3: Option<super::s3_fetch::S3Access>,
    /// How many of the largest tables to report row estimates for (default 10).
    #[serde(default)]
    pub top_tables: Option<u32>,
    /// Run `ANALYZE` after restoring (default true): pg_restore leaves no planner
    /// statistics, and the reported row estimates come from them.
    #[serde(default = "yes")]
    pub analyze: bool,
    /// Read the whole archive once (`pg_restore -f /dev/null`) before anything is
    /// dropped, so a truncated or corrupt dump never costs the existing DR database
    /// (default true; costs one extra read of the archive).
    #[serde(default = "yes")]
    pub verify_archive: bool,
}

fn yes() -> bool {
    true
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
    jobs: 2
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
            "How the archive was read: file, or stream (from S3 into stdin).",
        ),
        output("duration", "Restore duration in seconds."),
        output(
            "errors_ignored",
            "Number of restore errors that matched `allow_errors`.",
        ),
        output("warnings", "The allowed errors, as text."),
        output("tables", "Number of tables in the restored schemas."),
        output("size_bytes", "Size of the restored database."),
        output(
            "largest_tables",
            "The largest tables with their estimated row counts.",
        ),
    ];

    fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = self.connection.check();
        if self.jobs.is_some() && self.single_transaction {
            issues.push(ConfigIssue::new(
                "jobs",
                "`jobs` and `single_transaction` cannot be combined",
            ));
        }
        if self.jobs == Some(0) {
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
        preview(self, ctx).await
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, StepError> {
        restore(self, ctx).await
    }
}

/// Archive formats, detected from the file's first bytes (never its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Custom,
    Directory,
    Tar,
    Plain,
    PlainGzip,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Custom => "custom",
            Self::Directory => "directory",
            Self::Tar => "tar",
            Self::Plain => "plain",
            Self::PlainGzip => "plain-gzip",
        }
    }

    fn uses_pg_restore(self) -> bool {
        matches!(self, Self::Custom | Self::Directory | Self::Tar)
    }
}

pub fn detect_format(path: &Path) -> Result<Format, StepError> {
    if path.is_dir() {
        return if path.join("toc.dat").exists() {
            Ok(Format::Directory)
        } else {
            Err(StepError::config(format!(
                "{} is a directory without toc.dat: not a pg_dump directory archive",
                path.display()
            )))
        };
    }
    let mut head = vec![0u8; 512];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| {
            StepError::config(format!("cannot open archive {}: {e}", path.display()))
        })?;
        let mut total = 0;
        while total < head.len() {
            match f.read(&mut head[total..]) {
                Ok(0) => break,
                Ok(k) => total += k,
                Err(e) => {
                    return Err(StepError::config(format!(
                        "cannot read archive {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        total
    };
    let head = &head[..n];
    if n == 0 {
        return Err(StepError::new(
            FailureClass::Assertion,
            format!("archive {} is empty", path.display()),
        ));
    }
    Ok(if head.starts_with(b"PGDMP") {
        Format::Custom
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Format::PlainGzip
    } else if n >= 262 && &head[257..262] == b"ustar" {
        Format::Tar
    } else {
        Format::Plain
    })
}

async fn psql(
    conn: &Conn,
    bin: &Option<String>,
    sql: &str,
    ctx: &StepCtx,
) -> Result<String, StepError> {
    psql_with(conn, bin, sql, &ctx.cancel, false).await
}

/// Runs SQL through psql, tuples only; `read_only` makes the session refuse writes.
pub(crate) async fn psql_with(
    conn: &Conn,
    bin: &Option<String>,
    sql: &str,
    cancel: &tokio_util::sync::CancellationToken,
    read_only: bool,
) -> Result<String, StepError> {
    let mut cmd = conn.command(bin, "psql");
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
    if read_only {
        cmd.env("PGOPTIONS", "-c default_transaction_read_only=on");
    }
    let out = run_client(cmd, "psql", Some(sql.as_bytes().to_vec()), cancel).await?;
    if out.code != Some(0) {
        if let Some(e) = connection_error(conn, &out.stderr) {
            return Err(e);
        }
        return Err(StepError::new(
            FailureClass::Other,
            format!("psql on {}: {}", conn.describe(), clean(&out.stderr)),
        ));
    }
    Ok(out.stdout)
}

/// Major version of a `pg_restore --version` or "Dumped by pg_dump version: 15.4" text.
fn major_version(text: &str) -> Option<u32> {
    let re = regex::Regex::new(r"(\d+)(?:\.(\d+))?").unwrap();
    let caps = re.captures(text)?;
    let major: u32 = caps[1].parse().ok()?;
    // Before 10, the major version was two numbers (9.6).
    Some(if major < 10 {
        major * 100
            + caps
                .get(2)
                .and_then(|m| m.as_str().parse().ok())
                .unwrap_or(0)
    } else {
        major * 100
    })
}

/// Lists the archive (`pg_restore --list`): validates it, reads the dump's version.
async fn list_archive(
    path: &Path,
    bin: &Option<String>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<String, StepError> {
    let mut cmd = Conn::default().command(bin, "pg_restore");
    cmd.arg("--list").arg(path);
    let out = run_client(cmd, "pg_restore", None, cancel).await?;
    if out.code != Some(0) {
        let err = clean(&out.stderr);
        if err.contains("unsupported version") {
            let local = local_version(bin, cancel).await.unwrap_or_default();
            return Err(StepError::config(format!(
                "the archive was made by a newer pg_dump than this pg_restore ({}) can read: {err}; use a newer PostgreSQL client (`pg_bin`)",
                local.trim()
            )));
        }
        return Err(StepError::new(
            FailureClass::Assertion,
            format!("archive {} is truncated or corrupt: {err}", path.display()),
        ));
    }
    Ok(out.stdout)
}

async fn local_version(
    bin: &Option<String>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Option<String> {
    let mut cmd = Conn::default().command(bin, "pg_restore");
    cmd.arg("--version");
    run_client(cmd, "pg_restore", None, cancel)
        .await
        .ok()
        .map(|o| o.stdout)
}

/// Restore errors from stderr: pg_restore's `pg_restore: error: ...` and psql's
/// `psql:FILE:LINE: ERROR: ...`, each with its `Command was:` context when given.
fn restore_errors(stderr: &str) -> Vec<String> {
    let mut errors: Vec<String> = Vec::new();
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("pg_restore: error: ") {
            errors.push(rest.trim().to_string());
        } else if line.starts_with("psql:") && line.contains("ERROR:") {
            errors.push(
                line.splitn(4, ':')
                    .nth(3)
                    .unwrap_or(line)
                    .trim()
                    .to_string(),
            );
        } else if let Some(cmd) = line.strip_prefix("Command was: ")
            && let Some(last) = errors.last_mut()
        {
            last.push_str(&format!(" (command: {})", cmd.trim()));
        }
    }
    errors
}

async fn restore(cfg: &PgRestore, ctx: &StepCtx) -> Result<Outputs, StepError> {
    let conn = Conn::from_settings(&cfg.connection)?;
    ctx.guards
        .check_pg(&conn.host_for_guard(), &conn.database)?;
    let maintenance = match &cfg.maintenance_url {
        Some(url) => parse_url(url)?,
        None => conn.with_database("postgres"),
    };
    ctx.guards
        .check_pg(&maintenance.host_for_guard(), &conn.database)?;
    if cfg.archive.starts_with("s3://") {
        return restore_streamed(cfg, ctx, &conn, &maintenance).await;
    }
    let path = ctx.resolve_path(&cfg.archive);
    let format = detect_format(&path)?;
    let started = Instant::now();

    if format.uses_pg_restore() {
        let toc = list_archive(&path, &cfg.pg_bin, &ctx.cancel).await?;
        if let (Some(dump), Some(local)) = (
            toc.lines()
                .find(|l| l.contains("Dumped by pg_dump version"))
                .and_then(major_version),
            local_version(&cfg.pg_bin, &ctx.cancel)
                .await
                .as_deref()
                .and_then(major_version),
        ) && dump > local
        {
            return Err(StepError::config(format!(
                "the archive was dumped by pg_dump {} but the local pg_restore is {}: use a client at least as new (`pg_bin`)",
                dump / 100,
                local / 100
            )));
        }
        ctx.note(format!(
            "archive: {} format, {} TOC entries",
            format.as_str(),
            toc.lines()
                .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
                .count()
        ));
        if cfg.verify_archive {
            let mut cmd = Conn::default().command(&cfg.pg_bin, "pg_restore");
            cmd.args(["-f", "/dev/null"]).arg(&path);
            let out = run_client(cmd, "pg_restore", None, &ctx.cancel).await?;
            if out.code != Some(0) {
                return Err(StepError::new(
                    FailureClass::Assertion,
                    format!(
                        "archive {} is truncated or corrupt: {}",
                        path.display(),
                        clean(&out.stderr)
                    ),
                ));
            }
        }
    }

    prepare_target(cfg, ctx, &conn, &maintenance).await?;

    let jobs_allowed = matches!(format, Format::Custom | Format::Directory);
    let out = if format.uses_pg_restore() {
        let jobs = cfg.jobs.filter(|_| jobs_allowed);
        let mut cmd = pg_restore_command(cfg, &conn, jobs);
        cmd.arg(&path);
        run_client(cmd, "pg_restore", None, &ctx.cancel).await?
    } else {
        let mut cmd = conn.command(&cfg.pg_bin, "psql");
        cmd.args(["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0"]);
        if cfg.single_transaction {
            cmd.arg("--single-transaction");
        }
        cmd.args(&cfg.extra_args);
        let input = if format == Format::PlainGzip {
            use std::io::Read;
            let file = std::fs::File::open(&path)
                .map_err(|e| StepError::config(format!("cannot open {}: {e}", path.display())))?;
            let mut sql = Vec::new();
            flate2::read::MultiGzDecoder::new(file)
                .read_to_end(&mut sql)
                .map_err(|e| {
                    StepError::new(
                        FailureClass::Assertion,
                        format!("archive {} is not valid gzip: {e}", path.display()),
                    )
                })?;
            cmd.args(["-f", "-"]);
            Some(sql)
        } else {
            cmd.arg("-f").arg(&path);
            None
        };
        run_client(cmd, "psql", input, &ctx.cancel).await?
    };

    finish_restore(cfg, ctx, &conn, &out, format.as_str(), "file", started).await
}

/// Read-only preview: the target (exists? how big?), what would happen to it, and the
/// archive's table of contents when the file is already there.
async fn preview(cfg: &PgRestore, ctx: &PreviewCtx) -> Preview {
    // Offline, the URL is still a `<secret:...>` marker: describe what is known.
    let conn = match Conn::from_settings(&cfg.connection) {
        Ok(c) => Some(c),
        Err(_)
            if cfg
                .connection
                .url
                .as_deref()
                .is_some_and(|u| u.starts_with('<')) =>
        {
            None
        }
        Err(e) => return Preview::cannot(e.message),
    };
    if let Some(conn) = &conn
        && let Err(e) = ctx.guards.check_pg(&conn.host_for_guard(), &conn.database)
    {
        return Preview::cannot(e.message);
    }
    let mut lines = vec![match &conn {
        Some(c) => format!("target database: {}", c.describe()),
        None => format!(
            "target database: {}",
            cfg.connection.url.as_deref().unwrap_or_default()
        ),
    }];
    if cfg.recreate {
        lines.push("would terminate other sessions, drop and recreate it".into());
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    if cfg.archive.starts_with('<') {
        lines.push(format!("archive: {} (known only at run time)", cfg.archive));
    } else {
        let path = {
            let p = crate::util::expand_home(&cfg.archive);
            if p.is_absolute() {
                p
            } else {
                ctx.base_dir.join(p)
            }
        };
        match detect_format(&path) {
            Ok(format) if format.uses_pg_restore() => {
                match list_archive(&path, &cfg.pg_bin, &cancel).await {
                    Ok(toc) => lines.push(format!(
                        "archive: {} format; {}",
                        format.as_str(),
                        toc_summary(&toc)
                    )),
                    Err(e) => lines.push(format!("archive: {}", e.message)),
                }
            }
            Ok(format) => lines.push(format!(
                "archive: {} format (SQL script, restored with psql)",
                format.as_str()
            )),
            Err(e) => lines.push(format!("archive: {}", e.message)),
        }
    }
    if ctx.offline {
        return Preview::partial(lines, "target not inspected (--offline)");
    }
    let Some(conn) = conn else {
        return Preview::partial(lines, "the connection is known only at run time");
    };
    let maintenance = match &cfg.maintenance_url {
        Some(url) => match parse_url(url) {
            Ok(c) => c,
            Err(e) => return Preview::cannot(e.message),
        },
        None => conn.with_database("postgres"),
    };
    let sql = format!(
        "SELECT coalesce((SELECT pg_size_pretty(pg_database_size(datname)) FROM pg_database WHERE datname = {}), 'absent')",
        literal(&conn.database)
    );
    match psql_with(&maintenance, &cfg.pg_bin, &sql, &cancel, true).await {
        Ok(size) if size.trim() == "absent" => lines.push("target does not exist yet".into()),
        Ok(size) => lines.push(format!("target exists ({})", size.trim())),
        Err(e) => {
            return Preview::partial(lines, format!("cannot inspect the target: {}", e.message));
        }
    }
    Preview::lines(lines)
}

/// "12 tables, 12 table data, 20 indexes; dumped by pg_dump 15.18 from 15.18".
fn toc_summary(toc: &str) -> String {
    let mut counts: indexmap::IndexMap<&str, usize> = indexmap::IndexMap::new();
    for line in toc
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
    {
        // "215; 1259 16386 TABLE public users postgres"
        let kind = [
            "TABLE DATA",
            "TABLE",
            "INDEX",
            "SEQUENCE",
            "CONSTRAINT",
            "FK CONSTRAINT",
            "EXTENSION",
            "VIEW",
            "FUNCTION",
        ]
        .into_iter()
        .find(|k| line.contains(&format!(" {k} ")));
        *counts.entry(kind.unwrap_or("other")).or_default() += 1;
    }
    let version = |label: &str| {
        toc.lines()
            .find(|l| l.contains(label))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
    };
    let parts: Vec<String> = counts
        .iter()
        .map(|(k, n)| format!("{n} {}", k.to_lowercase()))
        .collect();
    format!(
        "{}; dumped by pg_dump {} from server {}",
        parts.join(", "),
        version("Dumped by pg_dump version").unwrap_or_else(|| "?".into()),
        version("Dumped from database version").unwrap_or_else(|| "?".into())
    )
}

/// `pg_restore` into `conn`'s database with the playbook's options; the archive (or
/// standard input) is added by the caller.
fn pg_restore_command(cfg: &PgRestore, conn: &Conn, jobs: Option<u32>) -> tokio::process::Command {
    let mut cmd = conn.command(&cfg.pg_bin, "pg_restore");
    cmd.args(["--no-password", "-d", &conn.database]);
    if cfg.no_owner {
        cmd.arg("--no-owner");
    }
    if cfg.no_privileges {
        cmd.arg("--no-privileges");
    }
    for schema in cfg.schema.as_ref().map(|s| s.to_vec()).unwrap_or_default() {
        cmd.args(["--schema", &schema]);
    }
    if cfg.clean {
        cmd.arg("--clean");
    }
    if cfg.if_exists {
        cmd.arg("--if-exists");
    }
    if let Some(j) = jobs {
        cmd.args(["--jobs", &j.to_string()]);
    }
    if cfg.single_transaction {
        cmd.arg("--single-transaction");
    }
    cmd.args(&cfg.extra_args);
    cmd
}

/// Recreates the target when asked, then runs `pre_sql` in it.
async fn prepare_target(
    cfg: &PgRestore,
    ctx: &StepCtx,
    conn: &Conn,
    maintenance: &Conn,
) -> Result<(), StepError> {
    if cfg.recreate {
        let db = &conn.database;
        let owner = cfg
            .owner
            .as_ref()
            .map(|o| format!(" OWNER {}", ident(o)))
            .unwrap_or_default();
        let sql = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid();\n\
             DROP DATABASE IF EXISTS {};\nCREATE DATABASE {}{owner};\n",
            literal(db),
            ident(db),
            ident(db)
        );
        psql(maintenance, &cfg.pg_bin, &sql, ctx).await?;
        ctx.note(format!("recreated database {db}"));
    }
    for sql in &cfg.pre_sql {
        psql(conn, &cfg.pg_bin, sql, ctx).await?;
    }

    Ok(())
}

/// Judges the restore's errors, analyzes, and gathers the outputs.
async fn finish_restore(
    cfg: &PgRestore,
    ctx: &StepCtx,
    conn: &Conn,
    out: &super::pg_client::ClientOutput,
    format: &str,
    mode: &str,
    started: Instant,
) -> Result<Outputs, StepError> {
    let errors = restore_errors(&out.stderr);
    if errors.is_empty() && out.code != Some(0) {
        if let Some(e) = connection_error(conn, &out.stderr) {
            return Err(e);
        }
        return Err(StepError::new(
            FailureClass::Other,
            format!(
                "restore into {} failed: {}",
                conn.describe(),
                clean(&out.stderr)
            ),
        ));
    }
    let allow: Vec<regex::Regex> = cfg
        .allow_errors
        .iter()
        .filter_map(|p| regex::Regex::new(p).ok())
        .collect();
    let (allowed, unexpected): (Vec<String>, Vec<String>) = errors
        .into_iter()
        .partition(|e| allow.iter().any(|re| re.is_match(e)));
    if !unexpected.is_empty() {
        let shown: Vec<&str> = unexpected.iter().take(5).map(String::as_str).collect();
        return Err(StepError::new(
            FailureClass::Assertion,
            format!(
                "{} restore error(s) not matched by `allow_errors` ({} allowed): {}",
                unexpected.len(),
                allowed.len(),
                shown.join(" | ")
            ),
        ));
    }
    for w in &allowed {
        ctx.note(format!("allowed restore error: {w}"));
    }
    let duration = started.elapsed().as_secs_f64();
    if cfg.analyze {
        psql(conn, &cfg.pg_bin, "ANALYZE;", ctx).await?;
    }
    let top = cfg.top_tables.unwrap_or(10);
    let stats_sql = format!(
        "SELECT json_build_object(\
           'tables', (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                      WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%'),\
           'size_bytes', pg_database_size(current_database()),\
           'largest_tables', (SELECT coalesce(json_agg(t), '[]'::json) FROM (\
               SELECT n.nspname || '.' || c.relname AS table, greatest(c.reltuples, 0)::bigint AS rows_estimate, pg_total_relation_size(c.oid) AS bytes \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
               ORDER BY pg_total_relation_size(c.oid) DESC, 1 LIMIT {top}) t))"
    );
    let stats: serde_json::Value = serde_json::from_str(
        psql(conn, &cfg.pg_bin, &stats_sql, ctx).await?.trim(),
    )
    .map_err(|e| {
        StepError::new(
            FailureClass::Other,
            format!("reading restore statistics: {e}"),
        )
    })?;
    let mut outputs = Outputs::new();
    outputs.insert("database".into(), json!(conn.database));
    outputs.insert("format".into(), json!(format));
    outputs.insert("mode".into(), json!(mode));
    outputs.insert(
        "duration".into(),
        json!((duration * 1000.0).round() / 1000.0),
    );
    outputs.insert("errors_ignored".into(), json!(allowed.len()));
    outputs.insert("warnings".into(), json!(allowed));
    outputs.insert("tables".into(), stats["tables"].clone());
    outputs.insert("size_bytes".into(), stats["size_bytes"].clone());
    outputs.insert("largest_tables".into(), stats["largest_tables"].clone());
    Ok(outputs)
}

/// Restores an `s3://` custom-format archive by streaming the object into `pg_restore`'s
/// standard input: no temporary file, and no parallel jobs (those need a seekable file).
async fn restore_streamed(
    cfg: &PgRestore,
    ctx: &StepCtx,
    conn: &Conn,
    maintenance: &Conn,
) -> Result<Outputs, StepError> {
    let access = cfg.s3.clone().unwrap_or_default();
    // Peek at the header first, so a wrong format fails before anything is dropped.
    let (head, _) = super::s3_fetch::open_object(&access, &cfg.archive).await?;
    let first = head.collect().await.map(|d| d.into_bytes()).map_err(|e| {
        StepError::new(
            FailureClass::Connection,
            format!("reading {}: {e}", cfg.archive),
        )
    })?;
    if !first.starts_with(b"PGDMP") {
        return Err(StepError::config(format!(
            "{} is not a custom-format (pg_dump -Fc) archive; only those can be streamed: fetch it with s3.fetch first",
            cfg.archive
        )));
    }
    drop(first);
    let note = if cfg.jobs.is_some_and(|j| j > 1) {
        " (`jobs` ignored: parallel restore needs a file)"
    } else {
        ""
    };
    ctx.note(format!(
        "streaming {} into pg_restore{note}; archive verification is skipped in this mode",
        cfg.archive
    ));
    let started = Instant::now();
    prepare_target(cfg, ctx, conn, maintenance).await?;
    let (stream, size) = super::s3_fetch::open_object(&access, &cfg.archive).await?;
    let cmd = pg_restore_command(cfg, conn, None);
    let progress_ctx = ctx.clone();
    let progress = Box::new(move |done: u64| progress_ctx.progress(done, Some(size)));
    let out = run_client(
        cmd,
        "pg_restore",
        super::pg_client::Input::Stream(stream, progress),
        &ctx.cancel,
    )
    .await?;
    finish_restore(cfg, ctx, conn, &out, "custom", "stream", started).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_errors_with_their_commands() {
        let stderr = "pg_restore: while PROCESSING TOC:\n\
            pg_restore: from TOC entry 5; 1259 16385 TABLE t postgres\n\
            pg_restore: error: could not execute query: ERROR:  relation \"t\" already exists\n\
            Command was: CREATE TABLE public.t (id integer);\n\
            pg_restore: warning: errors ignored on restore: 1\n";
        assert_eq!(
            restore_errors(stderr),
            vec![
                "could not execute query: ERROR:  relation \"t\" already exists (command: CREATE TABLE public.t (id integer);)"
            ]
        );
        assert_eq!(
            restore_errors("psql:/x.sql:12: ERROR:  syntax error at or near \"x\"\n"),
            vec!["ERROR:  syntax error at or near \"x\""]
        );
    }

    #[test]
    fn versions() {
        assert_eq!(
            major_version("pg_restore (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(1500)
        );
        assert_eq!(
            major_version("Dumped by pg_dump version: 9.6.24"),
            Some(906)
        );
    }
}
