//! `pg.restore` from an `s3://` object, streamed straight into `pg_restore`.

use std::time::Instant;

use super::restore::{HowRestored, PgRestore, finish_restore, pg_restore_command};
use super::target::{left_behind, prepare_target};
use crate::outcome::{Failure, FailureClass, Outputs};
use crate::services::pg::{Conn, run_client_with};
use crate::services::s3::open_object;
use crate::steps::StepCtx;
use crate::util::process::Stdin;

/// Restores an `s3://` custom-format archive by streaming the object into `pg_restore`'s
/// standard input: no temporary file, and no parallel jobs (those need a seekable file).
pub(super) async fn restore_streamed(
    cfg: &PgRestore,
    ctx: &StepCtx,
    conn: &Conn,
    maintenance: &Conn,
    target: &str,
) -> Result<Outputs, Failure> {
    let access = cfg.s3.clone().unwrap_or_default();
    // Peek at the header first, so a wrong format fails before anything is dropped. The
    // bytes read are put back in front of the same stream: one GET, nothing buffered.
    let (mut stream, size) = open_object(&access, &cfg.archive).await?;
    let mut first = [0u8; 5];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut first)
        .await
        .map_err(|e| {
            Failure::new(
                FailureClass::Connection,
                format!("reading {}: {e}", cfg.archive),
            )
        })?;
    if &first != b"PGDMP" {
        return Err(Failure::config(format!(
            "{} is not a custom-format (pg_dump -Fc) archive; only those can be streamed: fetch it with s3.fetch first",
            cfg.archive
        )));
    }
    let stream = tokio::io::AsyncReadExt::chain(std::io::Cursor::new(first), stream);
    let note = if matches!(cfg.jobs, super::tuning::Jobs::Fixed(n) if n > 1) {
        " (`jobs` ignored: parallel restore needs a file)"
    } else {
        ""
    };
    ctx.note(format!(
        "streaming {} into pg_restore{note}; archive verification is skipped in this mode",
        cfg.archive
    ));
    let started = Instant::now();
    prepare_target(cfg, ctx, conn, maintenance, target).await?;
    let tuning = super::tuning::Tuning::new(
        cfg.tune_session,
        1,
        "one job: a streamed archive is read once, in order".into(),
    );
    ctx.note(tuning.describe());
    let cmd = pg_restore_command(cfg, conn, &tuning);
    let lines = super::progress::restore_lines(ctx, None);
    let progress_ctx = ctx.clone();
    let progress = Box::new(move |done: u64| progress_ctx.progress(done, Some(size)));
    let restored = async {
        let ran = run_client_with(
            cmd,
            "pg_restore",
            Stdin::Stream(Box::new(stream), progress),
            &ctx.cancel,
            Some(lines),
        )
        .await;
        let out = super::confirm_if_cancelled(ctx, maintenance, cfg.pg_bin.as_deref(), ran).await?;
        let how = HowRestored {
            format: "custom",
            mode: "stream",
            started,
            tuning: &tuning,
        };
        finish_restore(cfg, ctx, conn, &out, how).await
    }
    .await;
    restored.map_err(|e| e.leaving(left_behind(cfg, &conn.database, target)))
}
