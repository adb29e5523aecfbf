//! Ctrl-C: the first SIGINT/SIGTERM asks the run to stop (start nothing new, cancel
//! running steps, run `finally`); the second aborts at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::events::{Event, Reporter};

/// The first signal received, for the journal's `interrupted` record.
static RECEIVED: OnceLock<&'static str> = OnceLock::new();
/// Whether the run is in `finally`, where no step is cancelled by the first signal.
static IN_FINALLY: AtomicBool = AtomicBool::new(false);

/// Which signal stopped the run, if one did (`SIGINT`, `SIGTERM`).
pub(crate) fn received() -> Option<&'static str> {
    RECEIVED.get().copied()
}

/// The run has reached `finally`: a first signal now only marks it interrupted.
pub(crate) fn entering_finally() {
    IN_FINALLY.store(true, Ordering::SeqCst);
}

/// The exit code of a run a signal stopped: 128 + its number, as shells report it (130
/// for Ctrl-C, 143 for the SIGTERM of a pod's eviction or `kubectl delete`).
pub(crate) fn exit_code() -> u8 {
    match received() {
        Some("SIGTERM") => 143,
        _ => 130,
    }
}

/// Installs the handlers; `stop` is cancelled on the first signal. With `grace`, a run
/// still going that long after the first signal (its `finally` included) is aborted as
/// by a second one: a pod's `terminationGracePeriodSeconds` ends in SIGKILL, and an
/// abort before it still kills the steps' processes and says so.
pub(crate) fn install(
    stop: CancellationToken,
    reporter: Arc<dyn Reporter>,
    grace: Option<std::time::Duration>,
) -> std::io::Result<()> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            let name = tokio::select! {
                _ = sigint.recv() => "SIGINT",
                _ = sigterm.recv() => "SIGTERM",
            };
            count += 1;
            if count == 1 {
                let _ = RECEIVED.set(name);
                let text = if IN_FINALLY.load(Ordering::SeqCst) {
                    format!(
                        "{name} received during `finally`: it runs to its end, and the run is interrupted (again to abort at once)"
                    )
                } else {
                    format!(
                        "{name} received: stopping; running steps are cancelled, then `finally` runs (again to abort at once)"
                    )
                };
                reporter.event(&Event::Notice { text });
                stop.cancel();
                if let Some(grace) = grace {
                    let reporter = reporter.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        reporter.event(&Event::Notice {
                            text: format!(
                                "still running {} after {name} (--stop-grace): aborting",
                                crate::duration::HumanDuration(grace)
                            ),
                        });
                        crate::util::process::kill_all_groups();
                        std::process::exit(i32::from(exit_code()));
                    });
                }
            } else {
                reporter.event(&Event::Notice {
                    text: format!("{name} received again: aborting"),
                });
                crate::util::process::kill_all_groups();
                std::process::exit(i32::from(exit_code()));
            }
        }
    });
    Ok(())
}
