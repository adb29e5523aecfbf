//! A restore whose archive is mostly one table: pg_restore gives each table's data to
//! one job, so with `jobs: N` that table's COPY is the whole restore's critical path
//! and N-1 cores wait through it. drrun restores such an archive in pg_restore's three
//! sections instead: the schema (`--section=pre-data`), then the data (`--section=data`
//! for every other table, beside drrun loading the big one through N sessions at once,
//! each a `COPY ... FROM STDIN` fed whole rows read straight from the archive), then the
//! indexes and constraints (`--section=post-data`), each pg_restore with N jobs.
//!
//! The big table is loaded whole or the step fails: the rows each session's COPY
//! reports are summed and must be the rows read, and a session's input never ends
//! before the archive's rows do (a failure cancels the sessions, which rolls their
//! COPY back, rather than ending their input, which would commit a part).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{Mutex, mpsc};

use super::restore::{PgRestore, pg_restore_command};
use super::tuning::{Tuning, apply_settings};
use crate::outcome::{Failure, FailureClass};
use crate::services::pg::dump::{TableData, Walk};
use crate::services::pg::{Conn, clean, copydata, ident, literal, run_client_with};
use crate::steps::StepCtx;
use crate::util::human_bytes;
use crate::util::process::{Finished, LineObserver, Stdin};

/// Below this a table's COPY takes about a second: not worth the sections' extra runs.
const MIN_BYTES: u64 = 8 << 20;

/// Rows are handed to the sessions this many bytes at a time (cut at a row's end).
const CHUNK: usize = 4 << 20;

/// The table to load in parallel, and through how many sessions.
#[derive(Debug, Clone)]
pub(super) struct Split {
    pub table: TableData,
    pub streams: u32,
}

/// The split of a restore of the custom-format file `walk` describes, with `jobs` jobs,
/// if it has one.
pub(super) fn plan(cfg: &PgRestore, walk: &Walk, jobs: u32) -> Option<Split> {
    // Options that select or reorder what pg_restore does leave its own run alone.
    let plain =
        cfg.schema.is_none() && !cfg.clean && !cfg.single_transaction && cfg.extra_args.is_empty();
    let readable = matches!(walk.compression, "gzip" | "none") && walk.encoding.is_some();
    let table = walk.tables.first()?;
    // Worth it only when the table alone is more than a fair share of the jobs' work:
    // otherwise pg_restore's jobs are already busy with the other tables.
    let big =
        table.bytes >= MIN_BYTES && table.bytes.saturating_mul(u64::from(jobs)) > walk.data_bytes;
    (cfg.split_tables && jobs > 1 && plain && readable && big).then(|| Split {
        table: table.clone(),
        streams: jobs,
    })
}

/// Restores `path` (whose `pg_restore -l` is `listing`) into `conn`'s database as the
/// module says; returns pg_restore's three runs as one (their kept output together, the
/// first failing status).
pub(super) async fn restore(
    cfg: &PgRestore,
    ctx: &StepCtx,
    (path, listing, walk, split): (&Path, &str, &Walk, &Split),
    conn: &Conn,
    tuning: &Tuning,
    lines: &LineObserver,
) -> Result<Finished, Failure> {
    let section = |name: &str, list: Option<&Path>| {
        let mut cmd = pg_restore_command(cfg, conn, tuning);
        cmd.arg(format!("--section={name}"));
        if let Some(list) = list {
            cmd.arg("-L").arg(list);
        }
        cmd.arg(path);
        cmd
    };
    let run = |cmd, cancel| run_client_with(cmd, "pg_restore", None, cancel, Some(lines.clone()));

    ctx.phase("restoring: the schema (pre-data)");
    let mut runs = vec![run(section("pre-data", None), &ctx.cancel).await?];

    // Every entry but the big table's, in a list pg_restore reads.
    let list_path = ctx.work_dir.join(format!("{}.list", ctx.step_id));
    let own = format!("{};", split.table.id);
    let list: String = listing
        .lines()
        .map(|l| {
            if l.starts_with(&own) {
                format!(";{l}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::create_dir_all(&ctx.work_dir)
        .and_then(|()| std::fs::write(&list_path, list))
        .map_err(|e| Failure::config(format!("writing {}: {e}", list_path.display())))?;
    ctx.note(format!(
        "loading {} ({}, {:.0}% of the data) through {} sessions beside pg_restore's other tables",
        split.table.name,
        human_bytes(split.table.bytes),
        100.0 * split.table.bytes as f64 / walk.data_bytes.max(1) as f64,
        split.streams
    ));
    ctx.phase(format!("restoring: the data ({})", split.table.name));
    let sub = ctx.cancel.child_token();
    let others = async {
        let r = run(section("data", Some(&list_path)), &sub).await;
        if r.is_err() {
            sub.cancel();
        }
        r
    };
    let big = async {
        let r = load(cfg, ctx, (path, walk, split), conn, tuning, &sub).await;
        if r.is_err() {
            sub.cancel();
        }
        r
    };
    let (others, big) = tokio::join!(others, big);
    let _ = std::fs::remove_file(&list_path);
    // The load's own failure says more than the cancelled pg_restore beside it.
    let rows = big?;
    runs.push(others?);
    ctx.note(format!("{}: {rows} rows loaded", split.table.name));

    ctx.phase("restoring: indexes and constraints (post-data)");
    runs.push(run(section("post-data", None), &ctx.cancel).await?);

    let status = runs
        .iter()
        .find(|r| r.code() != Some(0))
        .map_or(runs[0].status, |r| r.status);
    Ok(Finished {
        status,
        stdout: runs.iter().flat_map(|r| r.stdout.clone()).collect(),
        stdout_truncated: runs.iter().any(|r| r.stdout_truncated),
        stderr: runs.iter().flat_map(|r| r.stderr.clone()).collect(),
    })
}

/// Loads the big table through `split.streams` psql sessions; returns its rows.
async fn load(
    cfg: &PgRestore,
    ctx: &StepCtx,
    (path, walk, split): (&Path, &Walk, &Split),
    conn: &Conn,
    tuning: &Tuning,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<u64, Failure> {
    let table = &split.table;
    let damaged = |e: String| {
        Failure::new(
            FailureClass::Assertion,
            format!(
                "the data of {} in {} cannot be read: {e}",
                table.name,
                path.display()
            ),
        )
    };
    let consumed = Arc::new(AtomicU64::new(0));
    let reader = copydata::open(path, walk, table, consumed.clone())
        .map_err(|e| damaged(e.to_string()))?
        .ok_or_else(|| damaged(format!("{} compression", walk.compression)))?;
    let (tx, rx) = mpsc::channel::<Bytes>(split.streams as usize * 2);
    let whole = Arc::new(AtomicBool::new(false));
    let read = {
        let (whole, stop, handle) = (
            whole.clone(),
            cancel.clone(),
            tokio::runtime::Handle::current(),
        );
        tokio::task::spawn_blocking(move || {
            // A send waits for a session to take a chunk, or for the load to be stopped.
            let send = |chunk| {
                handle.block_on(async {
                    tokio::select! {
                        sent = tx.send(chunk) => sent.is_ok(),
                        () = stop.cancelled() => false,
                    }
                })
            };
            let rows = read_rows(reader, send)?;
            // Only now may the sessions see the end of their input.
            whole.store(true, Ordering::SeqCst);
            Ok::<u64, String>(rows)
        })
    };
    let rx = Arc::new(Mutex::new(rx));
    let encoding = walk.encoding.clone().unwrap_or_default();
    let sessions = (0..split.streams).map(|_| {
        let mut cmd = conn.command(cfg.pg_bin.as_deref(), "psql");
        apply_settings(&mut cmd, &tuning.settings);
        // What pg_restore sets for its own sessions before a COPY (`_doSetFixedOutputState`).
        cmd.args(["-X", "--no-password", "-v", "ON_ERROR_STOP=1"]);
        for set in [
            format!("SET client_encoding = {}", literal(&encoding)),
            "SET statement_timeout = 0".into(),
            "SET lock_timeout = 0".into(),
            "SET idle_in_transaction_session_timeout = 0".into(),
            "SET xmloption = content".into(),
            "SET row_security = off".into(),
            format!("SET search_path = {}, pg_catalog", ident(&table.namespace)),
            table.copy.trim_end_matches(';').to_string(),
        ] {
            cmd.arg("-c").arg(set);
        }
        let input = session_input(rx.clone(), whole.clone(), cancel.clone());
        let progress = {
            let (ctx, consumed, total) = (ctx.clone(), consumed.clone(), table.bytes);
            Box::new(move |_| ctx.progress(consumed.load(Ordering::Relaxed), Some(total)))
        };
        run_client_with(cmd, "psql", Stdin::Stream(input, progress), cancel, None)
    });
    let sessions = futures::future::join_all(sessions);
    let (read, sessions) = tokio::join!(
        async {
            let r = read.await.unwrap_or_else(|e| Err(e.to_string()));
            if r.is_err() {
                cancel.cancel();
            }
            r
        },
        sessions
    );
    let rows = read.map_err(damaged)?;
    let mut loaded = 0u64;
    for (i, s) in sessions.into_iter().enumerate() {
        let s = s?;
        let out = s.stdout_text();
        let copied = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("COPY "))
            .and_then(|n| n.trim().parse::<u64>().ok());
        match copied {
            Some(n) if s.code() == Some(0) => loaded += n,
            _ => {
                return Err(Failure::new(
                    FailureClass::Other,
                    format!(
                        "loading {}: session {} of {} failed: {}",
                        table.name,
                        i + 1,
                        split.streams,
                        clean(&s.stderr_text())
                    ),
                ));
            }
        }
    }
    if loaded != rows {
        return Err(Failure::new(
            FailureClass::Assertion,
            format!(
                "loading {}: {rows} rows were read from the archive but the sessions' COPY loaded {loaded}",
                table.name
            ),
        ));
    }
    Ok(rows)
}

/// One session's input: the next chunk any session has not taken. Its end comes only
/// once every row was read (`whole`): an end is what commits a COPY. If reading failed
/// the session is cancelled instead (its COPY rolled back), and its input is closed
/// only long after that.
fn session_input(
    rx: Arc<Mutex<mpsc::Receiver<Bytes>>>,
    whole: Arc<AtomicBool>,
    cancel: tokio_util::sync::CancellationToken,
) -> Box<dyn tokio::io::AsyncRead + Send + Unpin> {
    let state = (rx, whole, cancel);
    let chunks = futures::stream::unfold(state, |(rx, whole, cancel)| async move {
        let next = tokio::select! {
            next = async { rx.lock().await.recv().await } => Some(next),
            () = cancel.cancelled() => None,
        };
        match next {
            Some(Some(chunk)) => Some((Ok::<Bytes, std::io::Error>(chunk), (rx, whole, cancel))),
            Some(None) if whole.load(Ordering::SeqCst) => None,
            _ => {
                cancel.cancelled().await;
                // The session is signalled and then killed meanwhile; only then may
                // its input close (and this task end).
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                Some((
                    Err(std::io::Error::other("the load was stopped")),
                    (rx, whole, cancel),
                ))
            }
        }
    });
    Box::new(tokio_util::io::StreamReader::new(Box::pin(chunks)))
}

/// Reads the COPY text from `data` and sends it on in chunks of whole rows; returns
/// the rows sent.
// The counting loop vectorizes; a crate for it would add nothing here.
#[allow(clippy::naive_bytecount)]
fn read_rows(
    mut data: Box<dyn std::io::Read + Send>,
    mut send: impl FnMut(Bytes) -> bool,
) -> Result<u64, String> {
    let mut rows = 0u64;
    let mut pending: Vec<u8> = Vec::with_capacity(2 * CHUNK);
    loop {
        let start = pending.len();
        pending.resize(start + CHUNK, 0);
        let mut filled = start;
        let mut eof = false;
        while filled < pending.len() {
            match data.read(&mut pending[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        pending.truncate(filled);
        let whole_rows = pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let end = copydata::rows_end(&pending[..whole_rows]);
        let last = end < whole_rows || eof;
        if eof && end == whole_rows && whole_rows < pending.len() {
            return Err("the data ends inside a row".into());
        }
        let rest = if last {
            Vec::new()
        } else {
            pending.split_off(end)
        };
        pending.truncate(end);
        if !pending.is_empty() {
            rows += pending.iter().filter(|&&b| b == b'\n').count() as u64;
            let chunk = std::mem::replace(&mut pending, Vec::with_capacity(2 * CHUNK));
            if !send(Bytes::from(chunk)) {
                return Err("the sessions stopped".into());
            }
        }
        if last {
            return Ok(rows);
        }
        pending.extend_from_slice(&rest);
    }
}
