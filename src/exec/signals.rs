//! Ctrl-C: the first SIGINT/SIGTERM asks the run to stop (start nothing new, cancel
//! running steps, run `finally`); the second aborts at once.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::events::{Event, Reporter};

/// Installs the handlers; `stop` is cancelled on the first signal.
pub(crate) fn install(stop: CancellationToken, reporter: Arc<dyn Reporter>) -> std::io::Result<()> {
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
                reporter.event(&Event::Notice {
                    text: format!("{name} received: stopping; running steps are cancelled, then `finally` runs (again to abort at once)"),
                });
                stop.cancel();
            } else {
                reporter.event(&Event::Notice {
                    text: format!("{name} received again: aborting"),
                });
                crate::util::process::kill_all_groups();
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
