//! The end of every `pg.restore`, however the archive was read: judge `pg_restore`'s
//! errors against `allow_errors`, analyze, and gather the outputs.

use std::time::Instant;

use serde_json::json;

use super::archive::restore_errors;
use super::restore::PgRestore;
use super::tuning::{Tuning, analyze};
use crate::outcome::{Failure, FailureClass, Outputs};
use crate::services::pg::{Conn, clean, connection_error, psql};
use crate::steps::StepCtx;
use crate::util::process::Finished;

/// How a restore ran: what its outputs say besides the database's figures.
pub(super) struct HowRestored<'a> {
    /// `custom`, `plain`, ...
    pub format: &'a str,
    /// `file`, `stream` or `download`.
    pub mode: &'a str,
    pub mode_reason: &'a str,
    pub started: Instant,
    pub tuning: &'a Tuning,
    /// How the archive was checked first: `blocks`, `full` or `off`.
    pub verified: &'a str,
    /// The table loaded through several sessions (`split_tables`), with how many.
    pub split: Option<(&'a str, u32)>,
}

/// Judges the restore's errors, analyzes, and gathers the outputs.
pub(super) async fn finish_restore(
    cfg: &PgRestore,
    ctx: &StepCtx,
    conn: &Conn,
    out: &Finished,
    how: HowRestored<'_>,
) -> Result<Outputs, Failure> {
    let HowRestored {
        format,
        mode,
        mode_reason,
        started,
        tuning,
        verified,
        split,
    } = how;
    let stderr = out.stderr_text();
    let errors = restore_errors(&stderr);
    if errors.is_empty() && out.code() != Some(0) {
        if let Some(e) = connection_error(conn, &stderr) {
            return Err(e);
        }
        return Err(Failure::new(
            FailureClass::Other,
            format!(
                "restore into {} failed: {}",
                conn.describe(),
                clean(&stderr)
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
        return Err(Failure::new(
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
        ctx.phase("analyzing (planner statistics for the restored tables)");
        analyze(conn, cfg.pg_bin.as_deref(), tuning, ctx).await?;
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
        psql(conn, cfg.pg_bin.as_deref(), &stats_sql, &ctx.cancel, false)
            .await?
            .trim(),
    )
    .map_err(|e| {
        Failure::new(
            FailureClass::Other,
            format!("reading restore statistics: {e}"),
        )
    })?;
    let mut outputs = Outputs::new();
    outputs.insert("database".into(), json!(conn.database));
    outputs.insert("format".into(), json!(format));
    outputs.insert("mode".into(), json!(mode));
    outputs.insert("mode_reason".into(), json!(mode_reason));
    outputs.insert("verified".into(), json!(verified));
    outputs.insert(
        "duration".into(),
        json!((duration * 1000.0).round() / 1000.0),
    );
    outputs.insert("jobs".into(), json!(tuning.jobs));
    outputs.insert("jobs_reason".into(), json!(tuning.why));
    outputs.insert("session_settings".into(), json!(tuning.all_settings()));
    outputs.insert(
        "split_table".into(),
        split.map_or(
            json!(null),
            |(table, sessions)| json!({ "table": table, "sessions": sessions }),
        ),
    );
    outputs.insert("errors_ignored".into(), json!(allowed.len()));
    outputs.insert("warnings".into(), json!(allowed));
    outputs.insert("tables".into(), stats["tables"].clone());
    outputs.insert("size_bytes".into(), stats["size_bytes"].clone());
    outputs.insert("largest_tables".into(), stats["largest_tables"].clone());
    Ok(outputs)
}
