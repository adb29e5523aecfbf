//! How `pg.restore` reads an `s3://` archive: streamed into `pg_restore` (no local copy,
//! but one job, since a pipe cannot be seeked) or downloaded first (a file, so parallel
//! jobs). `transfer: auto` decides from the archive's format and size, the jobs the
//! restore could run, and the free disk; `plan` shows the same decision.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::restore::PgRestore;
use super::tuning::choose_jobs;
use crate::outcome::{Failure, FailureClass, Outputs};
use crate::services::pg::Conn;
use crate::services::s3::{S3Access, download_to, open_parallel, peek};
use crate::steps::StepCtx;
use crate::util::human_bytes;

/// How an `s3://` archive is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transfer {
    /// Download first when the restore could run parallel jobs and the disk has room
    /// for a copy; otherwise stream.
    #[default]
    Auto,
    /// Stream the object into `pg_restore` (custom format only; one job).
    Stream,
    /// Download to the run's work directory, restore from the file, then delete it.
    Download,
}

/// What was decided, and why (for the plan, the notes and the outputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    pub download: bool,
    pub why: String,
}

/// Below this size parallel jobs save less than writing and re-reading a copy costs:
/// such a restore takes a few seconds whichever way it goes.
const SMALL: u64 = 16 << 20;

/// Room a downloaded copy needs: its size and a margin for everything else on the disk.
pub(crate) fn room_needed(size: u64) -> u64 {
    size + (size / 20).max(64 << 20)
}

/// The decision, from what is known before anything is read past the header.
pub(crate) fn decide(
    asked: Transfer,
    custom: bool,
    size: u64,
    jobs: u32,
    free: Option<u64>,
    dir: &Path,
) -> Result<Choice, String> {
    let room = || {
        let need = room_needed(size);
        match free {
            Some(free) if free < need => Err(format!(
                "{} free in {}, {} needed for a copy of the {} archive",
                human_bytes(free),
                dir.display(),
                human_bytes(need),
                human_bytes(size)
            )),
            _ => Ok(()),
        }
    };
    let choice = |download, why: String| Ok(Choice { download, why });
    match asked {
        Transfer::Stream if !custom => Err(
            "only a custom-format (pg_dump -Fc) archive can be streamed: use `transfer: download` or `auto`".into(),
        ),
        Transfer::Stream => choice(false, "set by the playbook".into()),
        Transfer::Download => room().and_then(|()| choice(true, "set by the playbook".into())),
        Transfer::Auto if !custom => room()
            .map_err(|e| format!("only a custom-format archive can be streamed, and {e}"))
            .and_then(|()| {
                choice(
                    true,
                    "auto: not a custom-format archive, which only a file can restore".into(),
                )
            }),
        Transfer::Auto if jobs <= 1 => choice(
            false,
            "auto: one job possible, so a copy would only add its writing".into(),
        ),
        Transfer::Auto if size < SMALL => choice(
            false,
            format!(
                "auto: {} is too small for parallel jobs to repay a copy",
                human_bytes(size)
            ),
        ),
        Transfer::Auto => match room() {
            Err(e) => choice(false, format!("auto: {e}")),
            Ok(()) => choice(
                true,
                format!(
                    "auto: {jobs} jobs possible and {} free: a file lets pg_restore run them",
                    free.map_or_else(|| "the space".into(), human_bytes)
                ),
            ),
        },
    }
}

/// Where a downloaded copy goes: the run's work directory, under the step's name.
pub(crate) fn copy_path(ctx: &StepCtx) -> PathBuf {
    ctx.work_dir.join(format!("{}.archive", ctx.step_id))
}

/// Restores `cfg.archive` (an `s3://` URL) into `conn`'s database: a ranged GET of its
/// first bytes says the format, then the object is streamed in order into pg_restore or
/// downloaded to a file with parallel parts written where they belong.
pub(super) async fn restore_from_s3(
    cfg: &PgRestore,
    ctx: &StepCtx,
    conn: &Conn,
    maintenance: &Conn,
    target: &str,
) -> Result<Outputs, Failure> {
    let access = cfg.s3.clone().unwrap_or_default();
    ctx.phase(format!("opening {}", cfg.archive));
    // The header says the format; the archive is then streamed or downloaded whole.
    let (first, size) = peek(&access, &cfg.archive, 5).await?;
    let jobs = choose_jobs(
        cfg.jobs,
        cfg.server_cores,
        usize::MAX,
        maintenance,
        cfg.pg_bin.as_deref(),
        &ctx.cancel,
    )
    .await;
    let dir = &ctx.work_dir;
    let choice = decide(
        cfg.transfer,
        first == b"PGDMP",
        size,
        jobs.jobs,
        crate::util::fs::free_bytes(dir),
        dir,
    )
    .map_err(Failure::config)?;
    if !choice.download {
        ctx.note(format!(
            "streaming {} into pg_restore ({})",
            cfg.archive, choice.why
        ));
        let (stream, size) = open_parallel(&access, &cfg.archive).await?;
        return super::stream::restore_streamed(
            cfg,
            ctx,
            (stream, size),
            &choice.why,
            (conn, maintenance, target),
        )
        .await;
    }
    let path = copy_path(ctx);
    ctx.note(format!(
        "downloading {} to {} first ({})",
        cfg.archive,
        path.display(),
        choice.why
    ));
    let restored = async {
        write_copy(&access, &cfg.archive, size, &path, ctx).await?;
        let how = super::restore::FileRead {
            path: &path,
            mode: "download",
            why: &choice.why,
        };
        super::restore::restore_file(cfg, ctx, how, conn, maintenance, target).await
    }
    .await;
    // The copy is only ever a means: it goes whatever happened, and a retry downloads
    // afresh (an interrupted copy is never mistaken for a whole one).
    let _ = std::fs::remove_file(&path);
    restored
}

/// Downloads the archive (`size` bytes, as far as is known) to `path`, cancellable.
async fn write_copy(
    access: &S3Access,
    url: &str,
    size: u64,
    path: &Path,
    ctx: &StepCtx,
) -> Result<(), Failure> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::config(format!("writing {}: {e}", path.display())))?;
    }
    ctx.phase("downloading the archive");
    let progress = |done| ctx.progress(done, Some(size));
    tokio::select! {
        r = download_to(access, url, path, &progress) => r.map(|_| ()),
        () = ctx.cancel.cancelled() => {
            Err(Failure::new(FailureClass::Other, "download cancelled"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1 << 30;

    fn auto(custom: bool, size: u64, jobs: u32, free: Option<u64>) -> Result<Choice, String> {
        decide(Transfer::Auto, custom, size, jobs, free, Path::new("/w"))
    }

    #[test]
    fn auto_downloads_when_jobs_can_run_and_the_copy_fits() {
        let c = auto(true, GB, 2, Some(10 * GB)).unwrap();
        assert!(c.download, "{c:?}");
        assert!(c.why.contains("2 jobs possible"), "{}", c.why);
    }

    #[test]
    fn auto_streams_with_one_job_a_small_archive_or_too_little_disk() {
        let c = auto(true, GB, 1, Some(10 * GB)).unwrap();
        assert!(!c.download && c.why.contains("one job"), "{c:?}");
        let c = auto(true, 1 << 20, 4, Some(10 * GB)).unwrap();
        assert!(!c.download && c.why.contains("too small"), "{c:?}");
        let c = auto(true, 10 * GB, 4, Some(10 * GB)).unwrap();
        assert!(!c.download, "{c:?}");
        assert!(c.why.contains("needed for a copy"), "{}", c.why);
    }

    #[test]
    fn only_a_custom_archive_streams() {
        let c = auto(false, 1 << 20, 1, Some(GB)).unwrap();
        assert!(c.download, "{c:?}");
        let e = auto(false, 2 * GB, 1, Some(GB)).unwrap_err();
        assert!(e.contains("only a custom-format archive"), "{e}");
        let e = decide(Transfer::Stream, false, 1, 1, None, Path::new("/w")).unwrap_err();
        assert!(e.contains("transfer: download"), "{e}");
    }

    #[test]
    fn an_explicit_download_still_needs_the_room() {
        let e = decide(
            Transfer::Download,
            true,
            2 * GB,
            4,
            Some(GB),
            Path::new("/w"),
        )
        .unwrap_err();
        assert!(e.contains("free in /w"), "{e}");
        let c = decide(Transfer::Download, true, 1, 1, None, Path::new("/w")).unwrap();
        assert!(c.download);
    }
}
