//! What `pg.restore` says before it runs (the read-only preview `drrun plan` shows) and
//! after (the evidence the report lists).

use super::archive::{detect_format, toc_summary};
use super::restore::PgRestore;
use super::transfer::{Transfer, decide};
use super::tuning::{Jobs, choose_jobs};
use crate::outcome::Outputs;
use crate::services::pg::{Conn, list_archive, literal, parse_url, psql};
use crate::steps::{Preview, PreviewCtx};

/// Read-only preview: the target (exists? how big?), what would happen to it, and the
/// archive's table of contents when the file is already there.
pub(super) async fn preview(cfg: &PgRestore, ctx: &PreviewCtx) -> Preview {
    // Offline, the URL is still a secret's marker: describe what is known.
    let conn = match Conn::from_settings(&cfg.connection) {
        _ if ["url", "host", "port", "user", "database"]
            .iter()
            .any(|f| ctx.is_pending(f)) =>
        {
            None
        }
        Ok(c) => Some(c),
        Err(e) => return Preview::failure(e),
    };
    if let Some(conn) = &conn
        && let Err(e) = ctx.guards.check_pg(&conn.host_for_guard(), &conn.database)
    {
        return Preview::failure(e);
    }
    let mut lines = vec![match &conn {
        Some(c) => format!("target database: {}{}", c.describe(), c.origins()),
        None => format!(
            "target database: {}",
            cfg.connection.url.as_deref().unwrap_or_default()
        ),
    }];
    if cfg.recreate {
        lines.push("would terminate other sessions, drop and recreate it".into());
    }
    let streamed = if cfg.archive.starts_with("s3://") && cfg.transfer != Transfer::Download {
        " (none if it is streamed from S3: the restore reads it once)"
    } else {
        ""
    };
    lines.push(format!(
        "archive check before anything is dropped: {}{streamed}",
        cfg.verify_mode().describe()
    ));
    lines.push(format!(
        "jobs: {}; session: {}",
        match cfg.jobs {
            Jobs::Auto =>
                "auto (chosen when it runs: local and server cores, tables with data)".to_string(),
            Jobs::Fixed(n) => n.to_string(),
        },
        if cfg.tune_session {
            super::tuning::settings_text(&super::tuning::session_settings(2)).replace(
                "512MB",
                "512MB (256MB each above 4 jobs; never less than the server's)",
            )
        } else {
            "server defaults".into()
        }
    ));
    if cfg.split_tables && cfg.jobs != Jobs::Fixed(1) {
        lines.push(
            "a table holding more than its share of a custom-format file's data: loaded through the jobs' sessions at once (split_tables)"
                .into(),
        );
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    if ctx.is_pending("archive") {
        lines.push(format!("archive: {} (known only at run time)", cfg.archive));
    } else if cfg.archive.starts_with("s3://") {
        if ctx.offline {
            lines.push(format!("archive: {} (not read offline)", cfg.archive));
        } else {
            lines.push(s3_archive(cfg, ctx, conn.as_ref(), &cancel).await);
        }
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
                match list_archive(&path, cfg.pg_bin.as_deref(), &cancel).await {
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
            Err(e) => return Preview::failure(e),
        },
        None => conn.with_database("postgres"),
    };
    let sql = format!(
        "SELECT coalesce((SELECT pg_size_pretty(pg_database_size(datname)) FROM pg_database WHERE datname = {}), 'absent')",
        literal(&conn.database)
    );
    match psql(&maintenance, cfg.pg_bin.as_deref(), &sql, &cancel, true).await {
        Ok(size) if size.trim() == "absent" => lines.push("target does not exist yet".into()),
        Ok(size) => lines.push(format!("target exists ({})", size.trim())),
        Err(e) => {
            return Preview::partial_failure(lines, e);
        }
    }
    Preview::lines(lines)
}

/// How an `s3://` archive would be read (`transfer`), decided as the run would decide:
/// from the object's header and size, the jobs possible and the free disk.
async fn s3_archive(
    cfg: &PgRestore,
    ctx: &PreviewCtx,
    conn: Option<&Conn>,
    cancel: &tokio_util::sync::CancellationToken,
) -> String {
    let access = cfg.s3.clone().unwrap_or_default();
    let (head, size) = match crate::services::s3::peek(&access, &cfg.archive, 5).await {
        Ok(got) => got,
        Err(e) => return format!("archive: {}", e.message),
    };
    let custom = head == b"PGDMP";
    let jobs = match conn {
        Some(conn) => {
            let maintenance = match &cfg.maintenance_url {
                Some(url) => parse_url(url).unwrap_or_else(|_| conn.with_database("postgres")),
                None => conn.with_database("postgres"),
            };
            let bin = cfg.pg_bin.as_deref();
            choose_jobs(
                cfg.jobs,
                cfg.server_cores,
                usize::MAX,
                &maintenance,
                bin,
                cancel,
            )
            .await
            .jobs
        }
        None => match cfg.jobs {
            Jobs::Fixed(n) => n,
            Jobs::Auto => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        },
    };
    let dir = &ctx.work_dir;
    let free = crate::util::fs::free_bytes(dir);
    let what = format!(
        "archive: {} ({}, {})",
        cfg.archive,
        crate::util::human_bytes(size),
        if custom {
            "custom format"
        } else {
            "not custom format"
        }
    );
    match decide(cfg.transfer, custom, size, jobs, free, dir) {
        Ok(c) if c.download => format!(
            "{what}: would be downloaded first, for up to {jobs} job(s) ({})",
            c.why
        ),
        Ok(c) => format!("{what}: would be streamed into pg_restore ({})", c.why),
        Err(e) => format!("{what}: cannot be restored as set: {e}"),
    }
}

/// The report's lines: where, how much, and the largest tables.
pub(super) fn summary(o: &Outputs) -> Vec<String> {
    let n = |k: &str| o.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let mut lines = vec![format!(
        "restored into `{}`: {} tables, {}, with {} job(s) ({})",
        o.get("database").and_then(|v| v.as_str()).unwrap_or("?"),
        n("tables"),
        crate::util::human_bytes(n("size_bytes")),
        n("jobs").max(1),
        o.get("jobs_reason").and_then(|v| v.as_str()).unwrap_or("")
    )];
    if let Some(settings) = o.get("session_settings").and_then(|v| v.as_array())
        && !settings.is_empty()
    {
        let list: Vec<&str> = settings.iter().filter_map(|v| v.as_str()).collect();
        lines.push(format!("session: {}", list.join(", ")));
    }
    if let Some(split) = o.get("split_table").filter(|v| !v.is_null()) {
        lines.push(format!(
            "{} loaded through {} sessions at once (split_tables)",
            split["table"].as_str().unwrap_or("?"),
            split["sessions"].as_u64().unwrap_or(0)
        ));
    }
    let largest: Vec<String> = o
        .get("largest_tables")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .take(5)
        .map(|t| {
            format!(
                "`{}` ({} rows, {})",
                t["table"].as_str().unwrap_or("?"),
                t["rows_estimate"].as_u64().unwrap_or(0),
                crate::util::human_bytes(t["bytes"].as_u64().unwrap_or(0))
            )
        })
        .collect();
    if !largest.is_empty() {
        lines.push(format!("largest tables: {}", largest.join(", ")));
    }
    lines
}
