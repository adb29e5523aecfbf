//! `pg.sql`: run SQL against the restored database and assert on the result.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use serde_json::{Value, json};

use crate::duration::HumanDuration;
use crate::outcome::{Failure, FailureClass, Outputs};
use crate::services::pg::{Conn, PgConnection, clean, connection_error, psql, run_client_with};
use crate::steps::guard::Touch;
use crate::steps::{
    ConfigIssue, Effect, Evidence, OutputDoc, Preview, PreviewCtx, StepCtx, StepKind, output,
};

/// Runs SQL (`sql` or `file`) through `psql` and checks the result with `expect`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PgSql {
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
pub(crate) struct Expect {
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
pub(crate) struct ScalarExpect {
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
    const EXAMPLE: &'static str = r#"site:
  kind: pg.sql
  description: Point the restored Wagtail site at the DR hostname.
  needs: [restore]
  with:
    url: "{{ secrets.db_url }}"
    sql: >-
      UPDATE wagtailcore_site SET hostname = '{{ vars.dr_host }}'
      WHERE is_default_site RETURNING id
    expect: { rows: 1 }
"#;
    const OUTPUTS: &'static [OutputDoc] = &[
        output("rows", "The result rows, as a JSON list of objects."),
        output("row_count", "Number of rows returned or affected."),
        output("scalar", "First column of the first row, or null."),
    ];

    const EVIDENCE: Evidence = Evidence {
        data_time: Some(scalar_time),
        summary: Some(summary),
        ..Evidence::NONE
    };

    fn effect(&self) -> Effect {
        if self.sql.as_deref().is_some_and(is_read_only) {
            Effect::Read
        } else {
            Effect::Destructive
        }
    }

    fn touches(&self) -> Vec<Touch> {
        Conn::from_settings(&self.connection)
            .map(|c| vec![super::touch(&c)])
            .unwrap_or_default()
    }

    fn check(&self) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = self
            .connection
            .problem()
            .map(|m| ConfigIssue::new("", m))
            .into_iter()
            .collect();
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
        let conn = match Conn::from_settings(&self.connection) {
            Ok(c) => c,
            Err(_) if ctx.offline => return Preview::offline(),
            Err(e) => return Preview::failure(e),
        };
        if let Err(e) = ctx.guards.check_pg(&conn.host_for_guard(), &conn.database) {
            return Preview::failure(e);
        }
        let what = match (&self.sql, &self.file) {
            (Some(sql), _) => sql.lines().next().unwrap_or("").to_string(),
            (_, Some(file)) => format!("SQL from {file}"),
            _ => String::new(),
        };
        let lines = vec![format!(
            "would run on {}{}: {what}",
            conn.describe(),
            conn.origins()
        )];
        if ctx.offline {
            return Preview::partial(lines, "database not inspected (--offline)");
        }
        // The SQL itself is not run (it may write); only reachability is checked.
        let cancel = tokio_util::sync::CancellationToken::new();
        match psql(&conn, self.pg_bin.as_deref(), "SELECT 1", &cancel, true).await {
            Ok(_) => Preview::lines(lines),
            Err(e) => Preview::partial_failure(lines, e),
        }
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, Failure> {
        let conn = super::as_step(&Conn::from_settings(&self.connection)?, ctx);
        ctx.guards
            .check_pg(&conn.host_for_guard(), &conn.database)?;
        super::end_predecessors(ctx, &conn, self.pg_bin.as_deref()).await;
        let sql = match (&self.sql, &self.file) {
            (Some(sql), _) => sql.clone(),
            (None, Some(file)) => {
                let path = ctx.resolve_path(file);
                std::fs::read_to_string(&path)
                    .map_err(|e| Failure::config(format!("cannot read {}: {e}", path.display())))?
            }
            (None, None) => unreachable!("checked at compile time"),
        };
        // The SQL goes through stdin: it may carry rendered secrets, and argv is public.
        let mut cmd = conn.command(self.pg_bin.as_deref(), "psql");
        if self.effect() == Effect::Read {
            conn.make_read_only(&mut cmd);
        }
        cmd.args([
            "-X",
            "--no-password",
            "--csv",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "-",
        ]);
        let lines = ctx.output_lines("psql", None);
        let ran = run_client_with(
            cmd,
            "psql",
            Some(sql.into_bytes()),
            &ctx.cancel,
            Some(lines),
        )
        .await;
        let out = super::confirm_if_cancelled(ctx, &conn, self.pg_bin.as_deref(), ran).await?;
        if out.code() != Some(0) {
            let stderr = out.stderr_text();
            if let Some(e) = connection_error(&conn, &stderr) {
                return Err(e);
            }
            return Err(Failure::new(
                FailureClass::Other,
                format!("SQL failed on {}: {}", conn.describe(), clean(&stderr)),
            ));
        }
        let result = last_result(&out.stdout_text());
        let rows: Vec<Value> = result
            .rows
            .iter()
            .map(|r| {
                Value::Object(
                    result
                        .columns
                        .iter()
                        .cloned()
                        .zip(
                            r.iter()
                                .map(|v| v.clone().map_or(Value::Null, Value::String)),
                        )
                        .collect(),
                )
            })
            .collect();
        let row_count = if result.columns.is_empty() {
            result.tag_count.unwrap_or(0)
        } else {
            rows.len() as u64
        };
        let scalar = result
            .rows
            .first()
            .and_then(|r| r.first().cloned())
            .flatten();
        if let Some(expect) = &self.expect {
            check(expect, row_count, scalar.as_deref())?;
        }
        let mut outputs = Outputs::new();
        outputs.insert("rows".into(), Value::Array(rows));
        outputs.insert("row_count".into(), json!(row_count));
        outputs.insert("scalar".into(), scalar.map_or(Value::Null, Value::String));
        Ok(outputs)
    }
}

/// Whether `sql` is one statement that only reads (`SELECT ...`, `SHOW ...`): such a step
/// is `read`, and runs in a read-only transaction, so the label cannot lie.
fn is_read_only(sql: &str) -> bool {
    let body = sql.trim().trim_end_matches(';').trim();
    let first = body
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let upper = body.to_ascii_uppercase();
    matches!(first.as_str(), "select" | "show" | "values" | "table")
        && !body.contains(';')
        && !upper.contains(" INTO ")
}

/// A query whose `scalar` is a timestamp dates the data (`max(last_login)`).
fn scalar_time(outputs: &Outputs) -> Option<(&'static str, String)> {
    Some(("scalar", outputs.get("scalar")?.as_str()?.to_string()))
}

/// The last result psql printed: a CSV table and/or a command tag (`UPDATE 3`).
#[derive(Debug, Default, PartialEq)]
struct QueryResult {
    columns: Vec<String>,
    /// `None` is SQL NULL (an unquoted empty field in psql's CSV).
    rows: Vec<Vec<Option<String>>>,
    tag_count: Option<u64>,
}

fn is_tag(record: &[(String, bool)]) -> bool {
    static TAG: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"^[A-Z][A-Z ]*[A-Z](?: \d+)*$").unwrap());
    record.len() == 1 && !record[0].1 && TAG.is_match(&record[0].0)
}

fn last_result(text: &str) -> QueryResult {
    let mut result = QueryResult::default();
    let mut current: Option<QueryResult> = None;
    for record in csv_records(text) {
        if is_tag(&record) {
            let count = record[0].0.rsplit(' ').next().and_then(|n| n.parse().ok());
            let mut done = current.take().unwrap_or_default();
            done.tag_count = count;
            result = done;
        } else if let Some(cur) = current.as_mut() {
            cur.rows.push(
                record
                    .into_iter()
                    .map(|(v, quoted)| (quoted || !v.is_empty()).then_some(v))
                    .collect(),
            );
        } else {
            current = Some(QueryResult {
                columns: record.into_iter().map(|(v, _)| v).collect(),
                ..Default::default()
            });
        }
    }
    current.unwrap_or(result)
}

/// RFC 4180 records, each field with whether it was quoted.
fn csv_records(text: &str) -> Vec<Vec<(String, bool)>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if in_quotes => in_quotes = false,
            '"' if field.is_empty() => {
                in_quotes = true;
                quoted = true;
            }
            ',' if !in_quotes => record.push((
                std::mem::take(&mut field),
                std::mem::replace(&mut quoted, false),
            )),
            '\n' if !in_quotes => {
                record.push((
                    std::mem::take(&mut field),
                    std::mem::replace(&mut quoted, false),
                ));
                records.push(std::mem::take(&mut record));
                any = false;
            }
            '\r' if !in_quotes => {}
            c => field.push(c),
        }
    }
    if any {
        record.push((field, quoted));
        records.push(record);
    }
    records
}

fn check(expect: &Expect, row_count: u64, scalar: Option<&str>) -> Result<(), Failure> {
    let fail = |m: String| Err(Failure::new(FailureClass::Assertion, m));
    if let Some(n) = expect.rows
        && row_count != n
    {
        return fail(format!("expected {n} row(s), got {row_count}"));
    }
    if let Some(n) = expect.min_rows
        && row_count < n
    {
        return fail(format!("expected at least {n} row(s), got {row_count}"));
    }
    let Some(s) = &expect.scalar else {
        return Ok(());
    };
    let shown = scalar.unwrap_or("NULL");
    if let Some(want) = &s.equals {
        let want_text = match want {
            Value::String(t) => t.clone(),
            Value::Null => "NULL".into(),
            other => other.to_string(),
        };
        let equal = match (want, scalar) {
            (Value::Number(n), Some(v)) => v.parse::<f64>().ok() == n.as_f64(),
            (Value::Bool(b), Some(v)) => {
                matches!((b, v), (true, "t" | "true") | (false, "f" | "false"))
            }
            (Value::Null, None) => true,
            (_, Some(v)) => v == want_text,
            _ => false,
        };
        if !equal {
            return fail(format!(
                "expected the value to equal {want_text}, got {shown}"
            ));
        }
    }
    let number = || scalar.and_then(|v| v.parse::<f64>().ok());
    if let Some(min) = s.at_least
        && number().is_none_or(|v| v < min)
    {
        return fail(format!("expected a value of at least {min}, got {shown}"));
    }
    if let Some(max) = s.at_most
        && number().is_none_or(|v| v > max)
    {
        return fail(format!("expected a value of at most {max}, got {shown}"));
    }
    if let Some(pattern) = &s.matches
        && !regex::Regex::new(pattern).is_ok_and(|re| re.is_match(scalar.unwrap_or("")))
    {
        return fail(format!(
            "expected the value to match /{pattern}/, got {shown}"
        ));
    }
    if let Some(age) = s.newer_than {
        let Some(ts) = scalar.and_then(parse_timestamp) else {
            return fail(format!(
                "expected a timestamp newer than {age}, got {shown}"
            ));
        };
        let old = chrono::Utc::now().signed_duration_since(ts);
        if old.to_std().is_ok_and(|d| d > age.0) {
            let age_text = crate::duration::format_duration(old.to_std().unwrap_or_default());
            return fail(format!(
                "the newest data is {age_text} old ({shown}), more than {age}"
            ));
        }
    }
    Ok(())
}

/// PostgreSQL's text forms of timestamp and timestamptz (no zone means UTC).
fn parse_timestamp(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = text.trim();
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(dt) = chrono::DateTime::parse_from_str(t, fmt) {
            return Some(dt.with_timezone(&chrono::Utc));
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d"] {
        if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(t, fmt) {
            return Some(dt.and_utc());
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(t, fmt) {
            return d.and_hms_opt(0, 0, 0).map(|dt| dt.and_utc());
        }
    }
    None
}

/// The report's line: how many rows, and the scalar when there is one.
fn summary(o: &Outputs) -> Vec<String> {
    let rows = o
        .get("row_count")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    match o.get("scalar").filter(|v| !v.is_null()) {
        Some(v) => vec![format!(
            "{rows} row(s); first value `{}`",
            v.as_str().map_or_else(|| v.to_string(), str::to_string)
        )],
        None => vec![format!("{rows} row(s)")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_keeps_null_apart_from_empty_and_reads_tags() {
        let r = last_result("id,name\n1,\"a, \"\"b\"\"\"\n2,\n3,\"\"\nUPDATE 3\n");
        assert_eq!(r.columns, vec!["id", "name"]);
        assert_eq!(r.rows[0], vec![Some("1".into()), Some("a, \"b\"".into())]);
        assert_eq!(r.rows[1][1], None);
        assert_eq!(r.rows[2][1], Some(String::new()));
        assert_eq!(r.tag_count, Some(3));
        let u = last_result("SET\nUPDATE 2\n");
        assert!(u.columns.is_empty());
        assert_eq!(u.tag_count, Some(2));
        let s = last_result("CREATE TABLE\ncount\n42\n");
        assert_eq!(s.rows, vec![vec![Some("42".to_string())]]);
    }

    #[test]
    fn only_single_reading_statements_are_read_only() {
        assert!(is_read_only("SELECT max(last_login) FROM auth_user"));
        assert!(is_read_only("  select 1;  "));
        assert!(is_read_only("SHOW server_version"));
        assert!(!is_read_only("UPDATE wagtailcore_site SET hostname = 'dr'"));
        assert!(!is_read_only("SELECT 1; DELETE FROM t"));
        assert!(!is_read_only("SELECT * INTO copy FROM t"));
        assert!(!is_read_only(
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"
        ));
    }

    #[test]
    fn assertions_say_expected_and_actual() {
        let e = |rows, min_rows, scalar: ScalarExpect| Expect {
            rows,
            min_rows,
            scalar: Some(scalar),
        };
        assert!(check(&e(Some(1), None, ScalarExpect::default()), 1, None).is_ok());
        let err = check(&e(None, Some(1000), ScalarExpect::default()), 12, None).unwrap_err();
        assert_eq!(err.message, "expected at least 1000 row(s), got 12");
        let at_least = ScalarExpect {
            at_least: Some(10.0),
            ..Default::default()
        };
        assert!(check(&e(None, None, at_least.clone()), 1, Some("12")).is_ok());
        assert!(check(&e(None, None, at_least), 1, Some("9")).is_err());
        let fresh = ScalarExpect {
            newer_than: Some(crate::duration::HumanDuration::parse("26h").unwrap()),
            ..Default::default()
        };
        let recent = (chrono::Utc::now() - chrono::Duration::hours(2))
            .format("%Y-%m-%d %H:%M:%S%.6f+00")
            .to_string();
        assert!(check(&e(None, None, fresh.clone()), 1, Some(&recent)).is_ok());
        let err = check(&e(None, None, fresh), 1, Some("2020-01-01 00:00:00+00")).unwrap_err();
        assert!(err.message.contains("more than 26h"), "{}", err.message);
    }
}
