//! A drill against the playbook's earlier drills in the same state: RTO and restore time
//! against the median of the last passed ones (a warning on a clear regression), the
//! backup age trend, and how many drills in a row have not passed.

use serde::{Deserialize, Serialize};

use super::model::DrillReport;
use crate::duration::human_ms;
use crate::outcome::RunStatus;

/// Earlier passed drills a measurement is compared with.
pub(crate) const LAST_N: usize = 5;

/// How much slower than the median is a clear regression: both half as long again and
/// ten seconds more (a 2 s drill taking 3 s is noise, not a regression).
const RATIO: f64 = 1.5;
const MARGIN_MS: u64 = 10_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct History {
    /// Earlier drills of the playbook in the state.
    pub earlier_drills: usize,
    /// Drills in a row, this one included, that did not pass (0 when this one passed).
    pub consecutive_failures: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto: Option<Trend>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<Trend>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_age: Option<Trend>,
    /// Clear regressions and failure streaks, in words.
    pub warnings: Vec<String>,
}

/// One measurement against the same one in the last passed drills.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Trend {
    pub current_ms: u64,
    /// The earlier values compared with, oldest first.
    pub earlier_ms: Vec<u64>,
    pub median_ms: u64,
    /// Current over median.
    pub ratio: f64,
}

fn median(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => u64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

fn trend(current: Option<u64>, earlier: Vec<u64>) -> Option<Trend> {
    let current = current?;
    if earlier.is_empty() {
        return None;
    }
    let median_ms = median(&earlier);
    Some(Trend {
        current_ms: current,
        ratio: if median_ms == 0 {
            1.0
        } else {
            current as f64 / median_ms as f64
        },
        earlier_ms: earlier,
        median_ms,
    })
}

/// Every drill's report in `state`, in the order they started (run ids sort by the
/// second only).
pub(crate) fn all(state: &crate::state::runs::StateDir) -> Vec<DrillReport> {
    let mut reports: Vec<DrillReport> = state
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| crate::state::journal::read(&state.journal_path(&id)).ok())
        .filter_map(|replay| DrillReport::from_records(&replay.records))
        .collect();
    reports.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    reports
}

/// The drills in `state` that started before `current`, oldest first.
pub(crate) fn earlier(
    state: &crate::state::runs::StateDir,
    current: &DrillReport,
) -> Vec<DrillReport> {
    all(state)
        .into_iter()
        .filter(|r| r.started_at < current.started_at && r.run_id != current.run_id)
        .collect()
}

/// `current` against `earlier` (the playbook's drills that started before it, oldest
/// first).
pub(crate) fn compare(current: &DrillReport, earlier: &[DrillReport]) -> History {
    let passed: Vec<&DrillReport> = earlier
        .iter()
        .filter(|r| r.status == RunStatus::Passed)
        .collect();
    let last = &passed[passed.len().saturating_sub(LAST_N)..];
    let rto = trend(
        current.rto.measured_ms,
        last.iter().filter_map(|r| r.rto.measured_ms).collect(),
    );
    let restore = trend(
        current.restore_ms,
        last.iter().filter_map(|r| r.restore_ms).collect(),
    );
    let backup_age = trend(
        current.rpo.measured_ms,
        last.iter().filter_map(|r| r.rpo.measured_ms).collect(),
    );
    let consecutive_failures = if current.status == RunStatus::Passed {
        0
    } else {
        1 + earlier
            .iter()
            .rev()
            .take_while(|r| r.status != RunStatus::Passed)
            .count()
    };
    let mut warnings = Vec::new();
    for (name, t) in [
        ("RTO", &rto),
        ("restore time", &restore),
        ("backup age", &backup_age),
    ] {
        if let Some(t) = t
            && t.ratio >= RATIO
            && t.current_ms >= t.median_ms + MARGIN_MS
        {
            warnings.push(format!(
                "{name} {} is {:.1}x the median of the last {} passed drill(s) ({})",
                human_ms(t.current_ms),
                t.ratio,
                t.earlier_ms.len(),
                human_ms(t.median_ms)
            ));
        }
    }
    if consecutive_failures >= 2 {
        warnings.push(format!(
            "{consecutive_failures} drills in a row have not passed"
        ));
    }
    History {
        earlier_drills: earlier.len(),
        consecutive_failures,
        rto,
        restore,
        backup_age,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drill(status: RunStatus, rto_ms: u64) -> DrillReport {
        let mut r: DrillReport = serde_json::from_value(serde_json::json!({
            "report_version": 1, "run_id": "r", "playbook": { "name": "p", "path": "p", "hash": "h" },
            "drrun_version": "0", "host": "h", "status": "passed", "started_at": "t",
            "finished_at": null, "duration_ms": null, "resumed": 0,
            "rto": { "target_ms": null, "measured_ms": rto_ms, "met": null, "margin_ms": null, "source": "" },
            "rpo": { "target_ms": null, "measured_ms": null, "met": null, "margin_ms": null, "source": "" },
            "failed_step": null, "backup": null, "image": null, "timeline": [], "steps": []
        }))
        .unwrap();
        r.status = status;
        r
    }

    #[test]
    fn a_clear_regression_warns_and_noise_does_not() {
        let earlier: Vec<DrillReport> = [60_000, 62_000, 58_000, 61_000]
            .iter()
            .map(|ms| drill(RunStatus::Passed, *ms))
            .collect();
        let h = compare(&drill(RunStatus::Passed, 150_000), &earlier);
        let t = h.rto.as_ref().unwrap();
        assert_eq!(t.median_ms, 60_500);
        assert!(
            h.warnings[0].starts_with("RTO 2m 30s is 2.5x the median of the last 4"),
            "{:?}",
            h.warnings
        );
        let h = compare(&drill(RunStatus::Passed, 66_000), &earlier);
        assert!(h.warnings.is_empty(), "{:?}", h.warnings);
        // Seconds-long drills: 1.5x but under the margin is noise.
        let quick: Vec<DrillReport> = [2_000, 2_000]
            .iter()
            .map(|ms| drill(RunStatus::Passed, *ms))
            .collect();
        assert!(
            compare(&drill(RunStatus::Passed, 4_000), &quick)
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn failures_in_a_row_are_counted_back_to_the_last_pass() {
        let earlier = vec![
            drill(RunStatus::Failed, 1),
            drill(RunStatus::Passed, 1),
            drill(RunStatus::Failed, 1),
            drill(RunStatus::Interrupted, 1),
        ];
        let h = compare(&drill(RunStatus::Failed, 1), &earlier);
        assert_eq!(h.consecutive_failures, 3);
        assert!(
            h.warnings
                .iter()
                .any(|w| w == "3 drills in a row have not passed")
        );
        assert_eq!(
            compare(&drill(RunStatus::Passed, 1), &earlier).consecutive_failures,
            0
        );
    }
}
