//! Publishing a finished drill's metrics (`--metrics-textfile`, `--pushgateway`). A
//! failure is a warning: it never changes the drill's result.

use super::MetricsOptions;
use crate::events::{Event, Reporter};
use crate::outcome::RunStatus;
use crate::report::metrics::{Past, render};
use crate::report::model::DrillReport;
use crate::state::runs::StateDir;

/// When the state's last passed drill finished, as Unix seconds.
fn past(state: &StateDir) -> Past {
    let last_success = state
        .list()
        .unwrap_or_default()
        .iter()
        .filter_map(|id| state.summary(id).ok())
        .filter(|s| s.status == RunStatus::Passed)
        .filter_map(|s| s.finished_at)
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
        .reduce(f64::max);
    Past { last_success }
}

pub(super) async fn publish(
    state: &StateDir,
    opts: &MetricsOptions,
    report: &DrillReport,
    reporter: &dyn Reporter,
) {
    if opts.textfile.is_none() && opts.pushgateway.is_none() {
        return;
    }
    let text = render(report, &past(state));
    let warn = |text: String| reporter.event(&Event::Notice { text });
    if let Some(path) = &opts.textfile {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        // The collector reads whatever is there: only a whole file may ever be.
        if let Err(e) = crate::util::fs::write_atomic(path, text.as_bytes(), true) {
            warn(format!(
                "could not write the metrics to {}: {e} (the drill's result stands)",
                path.display()
            ));
        }
    }
    if let Some(url) = &opts.pushgateway {
        let group = [
            ("job", "drrun"),
            ("playbook", report.playbook.name.as_str()),
        ];
        match crate::services::pushgateway::push(url, &group, text).await {
            Ok(()) => warn(format!(
                "metrics pushed to {}",
                crate::services::webhook::shown(url)
            )),
            Err(e) => warn(format!(
                "could not push the metrics: {e} (the drill's result stands)"
            )),
        }
    }
}
