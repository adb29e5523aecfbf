//! `pg.sql`: run SQL against the restored database and assert on the result.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pg_restore::PgConnection;
use super::{
    ConfigIssue, Effect, OutputDoc, Outputs, Preview, PreviewCtx, StepCtx, StepError, StepKind,
    output,
};
use crate::duration::HumanDuration;

/// Runs SQL (`sql` or `file`) through `psql` and checks the result with `expect`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgSql {
    /// Database connection.
    #[serde(flatten)]
    pub connection: PgConnection,
    /// SQL text. The result of the last statement is captured.
    #[serde(default)]
    pub sql: Option<String>,
    /// A file of SQL, relative to the playbook's directory.
    #[serde(default)]
    pub file: Option<String>,
    /// Assertions on the result; the step fails when one does not hold.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Directory holding `psql` (default: found on PATH).
    #[serde(default)]
    pub pg_bin: Option<String>,
}

/// Assertions on a query result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Exact number of rows returned (or affected, for UPDATE/DELETE).
    #[serde(default)]
    pub rows: Option<u64>,
    /// At least this many rows.
    #[serde(default)]
    pub min_rows: Option<u64>,
    /// Checks on the first column of the first row.
    #[serde(default)]
    pub scalar: Option<ScalarExpect>,
}

/// Checks on a single value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScalarExpect {
    /// Equal to this value (compared as text).
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// A number at least this large, e.g. a row count.
    #[serde(default)]
    pub at_least: Option<f64>,
    /// A number at most this large.
    #[serde(default)]
    pub at_most: Option<f64>,
    /// Matches this regular expression.
    #[serde(default)]
    pub matches: Option<String>,
    /// A timestamp newer than this age, e.g. `max(created_at)` within `26h` (data-level RPO).
    #[serde(default)]
    pub newer_than: Option<HumanDuration>,
}

impl StepKind for PgSql {
    const NAME: &'static str = "pg.sql";
    const SUMMARY: &'static str =
        "Run SQL through psql and assert on rows or a scalar (row counts, data freshness).";
    const EFFECT: Effect = Effect::Destructive;
    const OUTPUTS: &'static [OutputDoc] = &[
        output("rows", "The result rows, as a JSON list of objects."),
        output("row_count", "Number of rows returned or affected."),
        output("scalar", "First column of the first row, or null."),
    ];

    fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = self.connection.check();
        match (&self.sql, &self.file) {
            (Some(_), Some(_)) => issues.push(ConfigIssue::new(
                "sql",
                "give either `sql` or `file`, not both",
            )),
            (None, None) => issues.push(ConfigIssue::new("", "give `sql` or `file`")),
            _ => {}
        }
        if let Some(m) = self
            .expect
            .as_ref()
            .and_then(|e| e.scalar.as_ref())
            .and_then(|s| s.matches.as_ref())
            && let Err(e) = regex::Regex::new(m)
        {
            issues.push(ConfigIssue::new(
                "expect.scalar.matches",
                format!("invalid regular expression: {e}"),
            ));
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
