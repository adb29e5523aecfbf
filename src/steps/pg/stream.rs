//! `pg.restore` from an `s3://` object, streamed straight into `pg_restore`.

use std::time::Instant;

use super::finish::{HowRestored, finish_restore};
use super::restore::{PgRestore, pg_restore_command};
use super::target::{left_behind, prepare_target};
use crate::outcome::{Failure, Outputs};
use crate::services::pg::{Conn, run_client_with};
use crate::steps::StepCtx;
use crate::util::process::Stdin;

/// Restores a custom-format archive by streaming `object` (the open response and its
/// size) into `pg_restore`'s standard input: no temporary file, and no parallel jobs
/// (those need a seekable file). `dbs` are the restore's database, the maintenance
/// connection and the target's name.
pub(super) async fn restore_streamed(
    cfg: &PgRestore,
    ctx: &StepCtx,
    object: (Box<dyn tokio::io::AsyncRead + Send + Unpin>, u64),
    why: &str,
    dbs: (&Conn, &Conn, &str),
) -> Result<Outputs, Failure> {
    let (stream, size) = object;
    let (conn, maintenance, target) = dbs;
    if matches!(cfg.jobs, super::tuning::Jobs::Fixed(n) if n > 1) {
        ctx.note("`jobs` does not apply: parallel restore needs a file");
    }
    let started = Instant::now();
    prepare_target(cfg, ctx, conn, maintenance, target).await?;
    let tuning = super::tuning::Tuning::for_restore(
        cfg.tune_session,
        1,
        "one job: a streamed archive is read once, in order".into(),
        conn,
        cfg.pg_bin.as_deref(),
        &ctx.cancel,
    )
    .await;
    ctx.note(tuning.describe());
    let cmd = pg_restore_command(cfg, conn, &tuning);
    let lines = super::progress::restore_lines(ctx, None);
    let progress_ctx = ctx.clone();
    let progress = Box::new(move |done: u64| progress_ctx.progress(done, Some(size)));
    let restored = async {
        ctx.phase("restoring (streamed from S3)");
        let ran = run_client_with(
            cmd,
            "pg_restore",
            Stdin::Stream(stream, progress),
            &ctx.cancel,
            Some(lines),
        )
        .await;
        let out = super::confirm_if_cancelled(ctx, maintenance, cfg.pg_bin.as_deref(), ran).await?;
        let how = HowRestored {
            format: "custom",
            mode: "stream",
            mode_reason: why,
            started,
            tuning: &tuning,
            // A stream is read once, by the restore itself.
            split: None,
            verified: "off",
        };
        finish_restore(cfg, ctx, conn, &out, how).await
    }
    .await;
    restored.map_err(|e| e.leaving(left_behind(cfg, &conn.database, target)))
}
