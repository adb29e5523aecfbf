//! `pg.restore`: restore a dump into the DR database with the real `pg_restore`/`psql`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ConfigIssue, Effect, OutputDoc, Outputs, Preview, PreviewCtx, StepCtx, StepError, StepKind,
    output,
};
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
    /// How many of the largest tables to report row estimates for (default 10).
    #[serde(default)]
    pub top_tables: Option<u32>,
}

impl StepKind for PgRestore {
    const NAME: &'static str = "pg.restore";
    const SUMMARY: &'static str = "Restore a pg_dump archive into a (recreated) database with pg_restore/psql; fails on unexpected restore errors.";
    const EFFECT: Effect = Effect::Destructive;
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
        if ctx.offline {
            return Preview::offline();
        }
        Preview::cannot("live PostgreSQL preview is not available in this build")
    }

    async fn run(&self, _ctx: &StepCtx) -> Result<Outputs, StepError> {
        Err(super::not_built(Self::NAME))
    }
}
