//! The drill report: what a run proved, built from its journal alone (through the one
//! replay, [`RunHistory`]), so `drrun report` gives the same answer later as the run did
//! at its end, also for a run that was killed.
//!
//! RTO = run start → the success of `objectives.rto_until` (default: the last main step to
//! succeed). RPO = run start − the time the restored data is from (`objectives.rpo_from`,
//! default: the first step of a kind that is a default RPO source, i.e. the backup).
//! Which kinds date data, describe a backup or deploy an image is each kind's
//! [`Evidence`]; nothing here names a kind.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::duration::{format_duration, human_ms};
use crate::outcome::{FailureClass, ObjectiveResult, Outputs, RunStatus, StepState, Verdict};
use crate::playbook::model::Objectives;
use crate::state::history::{RunHistory, StepHistory};
use crate::state::journal::Record;
use crate::steps::{BackupEvidence, Evidence, find_kind};

/// Version 2: states in the one vocabulary (`succeeded`, not `passed`; `unfinished`, not
/// `incomplete`; a skipped step is `skipped`, with `skipped_on_purpose`).
pub(crate) const REPORT_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DrillReport {
    pub report_version: u32,
    pub run_id: String,
    pub playbook: PlaybookInfo,
    pub drrun_version: String,
    pub host: String,
    /// Who started the run (empty for journals written before drrun recorded it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The Kubernetes ServiceAccount it ran as (`namespace/name`), inside a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// The step this drill failed on purpose (`--break`): a self-test, not a finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliberate_break: Option<String>,
    /// The vars the drill ran with (secrets redacted), and which of them the command line set.
    #[serde(default)]
    pub vars: serde_json::Map<String, Json>,
    #[serde(default)]
    pub overrides: serde_json::Map<String, Json>,
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Wall-clock time from start to finish, interruptions included.
    pub duration_ms: Option<u64>,
    /// How many times the run was resumed.
    pub resumed: u32,
    pub rto: Measure,
    pub rpo: Measure,
    pub failed_step: Option<FailedStep>,
    /// The backup the data came from (the RPO source's evidence), if one was restored.
    pub backup: Option<Backup>,
    /// The image deployed, if a step deployed one.
    pub image: Option<ImageDeployed>,
    /// The run's phases and interruptions: started, interrupted, resumed, finally, finished.
    pub timeline: Vec<Mark>,
    pub steps: Vec<StepReport>,
    /// How long the restore took (the first successful step of a restoring kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_ms: Option<u64>,
    /// This drill against the playbook's earlier ones in the same state (set when the
    /// report is written; `None` for a report rebuilt from one journal alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<super::history::History>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Mark {
    pub what: String,
    pub at: String,
    pub offset_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PlaybookInfo {
    pub name: String,
    pub path: String,
    /// sha256 of the playbook file as run.
    pub hash: String,
}

/// A measured objective against its target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Measure {
    pub target_ms: Option<u64>,
    pub measured_ms: Option<u64>,
    /// `None` when there is no target, or nothing to measure yet.
    pub met: Option<bool>,
    /// Target minus measured: how much room was left (negative: missed by that much).
    pub margin_ms: Option<i64>,
    /// Where the measurement comes from (`until step smoke`, `backup_time of step backup`).
    pub source: String,
    /// Why it could not be measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Measure {
    pub(crate) fn verdict(&self) -> Verdict {
        match (self.met, self.margin_ms) {
            (Some(true), margin) => Verdict::Met {
                spare_ms: margin.unwrap_or(0).max(0).unsigned_abs(),
            },
            (Some(false), margin) => Verdict::Missed {
                by_ms: margin.map(i64::unsigned_abs),
            },
            (None, _) => Verdict::NoObjective,
        }
    }

    /// `RTO 2m 5s (objective 1h): met, 57m 55s to spare`, and the other cases.
    pub(crate) fn headline(&self, name: &str) -> String {
        let note = || self.note.as_deref().unwrap_or("no measurement");
        match (self.measured_ms, self.target_ms) {
            (Some(v), Some(t)) => format!(
                "{name} {} (objective {}): {}",
                human_ms(v),
                target_text(t),
                self.verdict()
            ),
            (Some(v), None) => format!("{name} {} ({})", human_ms(v), self.source),
            (None, Some(t)) => format!(
                "{name} not measured (objective {}): {}",
                target_text(t),
                note()
            ),
            (None, None) => format!("{name} not measured: {}", note()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FailedStep {
    pub step: String,
    pub kind: String,
    pub class: FailureClass,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Backup {
    /// The step that fetched it.
    pub step: String,
    #[serde(flatten)]
    pub evidence: BackupEvidence,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageDeployed {
    pub step: String,
    pub image: String,
    pub before: Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StepReport {
    pub id: String,
    pub kind: String,
    /// `steps` or `finally`.
    pub phase: String,
    pub state: StepState,
    /// Skipped because its `when` was false: on purpose, so it held nothing back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped_on_purpose: bool,
    pub attempts: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// Offset of `started_at` from the run start.
    pub offset_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// The error of a failure, or why the step was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the step proved, in the kind's words (from its outputs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// Outputs as journaled (secrets were redacted before they were written).
    pub outputs: Json,
}

/// An objective as the playbook writes it (`26h`, `15m`).
pub(crate) fn target_text(ms: u64) -> String {
    format_duration(std::time::Duration::from_millis(ms))
}

pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    // PostgreSQL's text form: `2026-11-24 10:00:00.123+00` (or without zone: UTC).
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

fn offset(start: DateTime<Utc>, at: &str) -> Option<u64> {
    parse_time(at).map(|t| ms_between(start, t).max(0).unsigned_abs())
}

/// The evidence hooks of a step's kind (none for a kind this build does not know).
fn evidence(step: &StepHistory) -> Evidence {
    find_kind(&step.kind).map_or(Evidence::NONE, |k| k.evidence)
}

impl DrillReport {
    /// Builds the report from a run's journal records.
    pub(crate) fn from_records(records: &[Record]) -> Option<Self> {
        let h = RunHistory::replay(records)?;
        let start = parse_time(&h.started_at)?;
        let timeline = h
            .timeline
            .iter()
            .map(|(what, at)| Mark {
                what: what.clone(),
                at: at.clone(),
                offset_ms: offset(start, at).unwrap_or(0),
            })
            .collect();
        let rto = measure_rto(&h, start);
        let (mut rpo, backup) = measure_rpo(&h, start);
        // The data's age is the RPO only of data that was brought back: a drill that
        // never completed its recovery measured nothing, whatever its backup's age.
        if rto.measured_ms.is_none() && rpo.measured_ms.is_some() {
            rpo.note = Some(format!(
                "the recovery did not complete ({})",
                rto.note.as_deref().unwrap_or("no RTO")
            ));
            rpo.measured_ms = None;
            rpo.met = None;
            rpo.margin_ms = None;
        }
        let failed_step = h
            .steps
            .iter()
            .filter(|(_, s)| s.state == StepState::Failed)
            .min_by_key(|(_, s)| s.finished_at.clone())
            .map(|(id, s)| FailedStep {
                step: id.clone(),
                kind: s.kind.clone(),
                class: s.class.unwrap_or(FailureClass::Other),
                error: s.reason.clone().unwrap_or_default(),
            });
        let image = h
            .steps
            .iter()
            .filter(|(_, s)| s.state.is_success())
            .find_map(|(id, s)| {
                let (image, before) = (evidence(s).deployed_image?)(s.outputs.as_ref()?)?;
                Some(ImageDeployed {
                    step: id.clone(),
                    image,
                    before,
                })
            });
        let duration_ms = h.finished_at.as_deref().and_then(|at| offset(start, at));
        let steps = h
            .steps
            .iter()
            .map(|(id, s)| StepReport {
                id: id.clone(),
                kind: s.kind.clone(),
                phase: s.phase.clone(),
                state: s.state,
                skipped_on_purpose: s.skipped_on_purpose,
                attempts: s.attempts,
                started_at: s.started_at.clone(),
                finished_at: s.finished_at.clone(),
                duration_ms: s.duration_ms,
                offset_ms: s.started_at.as_deref().and_then(|at| offset(start, at)),
                class: s.class,
                error: s.reason.clone(),
                evidence: match (evidence(s).summary, &s.outputs) {
                    (Some(f), Some(o)) => f(o),
                    _ => Vec::new(),
                },
                outputs: s.outputs.clone().map_or(Json::Null, Json::Object),
            })
            .collect();
        let restore_ms = h
            .steps
            .values()
            .filter(|s| s.state.is_success() && evidence(s).restores)
            .find_map(|s| s.duration_ms);
        Some(Self {
            report_version: REPORT_VERSION,
            run_id: h.run_id.clone(),
            playbook: PlaybookInfo {
                name: h.playbook_name.clone(),
                path: h.playbook.clone(),
                hash: h.playbook_hash.clone(),
            },
            drrun_version: h.drrun_version.clone(),
            host: h.host.clone(),
            user: h.user.clone(),
            service_account: h.service_account.clone(),
            deliberate_break: h.break_step.clone(),
            vars: h.vars.clone(),
            overrides: h.overrides.clone(),
            status: h.status,
            started_at: h.started_at.clone(),
            finished_at: h.finished_at.clone(),
            duration_ms,
            resumed: h.resumed,
            rto,
            rpo,
            failed_step,
            backup,
            image,
            timeline,
            steps,
            restore_ms,
            history: None,
        })
    }

    /// Whether a measured objective was missed (which fails the drill).
    pub(crate) fn objective_missed(&self) -> bool {
        self.rto.verdict().missed() || self.rpo.verdict().missed()
    }

    /// The objectives' results, for the run's last event and the terminal summary.
    pub(crate) fn verdicts(&self) -> Vec<ObjectiveResult> {
        [("RTO", &self.rto), ("RPO", &self.rpo)]
            .into_iter()
            .map(|(name, m)| ObjectiveResult {
                name: name.into(),
                target_ms: m.target_ms,
                measured_ms: m.measured_ms,
                verdict: m.verdict(),
                text: m.headline(name),
            })
            .collect()
    }
}

fn judge(target_ms: Option<u64>, measured_ms: Option<u64>) -> (Option<bool>, Option<i64>) {
    match (target_ms, measured_ms) {
        (Some(t), Some(m)) => (Some(m <= t), Some(t as i64 - m as i64)),
        _ => (None, None),
    }
}

fn target(d: Option<crate::duration::HumanDuration>) -> Option<u64> {
    d.map(|d| d.0.as_millis() as u64)
}

fn measure_rto(h: &RunHistory, start: DateTime<Utc>) -> Measure {
    let objectives: &Objectives = &h.objectives;
    let target_ms = target(objectives.rto);
    let succeeded = |id: &str| {
        h.steps
            .get(id)
            .and_then(|s| s.succeeded_at.as_deref())
            .and_then(parse_time)
    };
    let (source, end, note) = match &objectives.rto_until {
        Some(id) => (
            format!("until step {id} succeeded"),
            succeeded(id),
            format!("step {id} did not succeed"),
        ),
        None => {
            // Steps whose `when` was false were not needed for the recovery.
            let needed: Vec<&str> = h
                .steps
                .iter()
                .filter(|(_, s)| s.phase == "steps" && !s.skipped_on_purpose)
                .map(|(id, _)| id.as_str())
                .collect();
            let unfinished: Vec<&str> = needed
                .iter()
                .copied()
                .filter(|id| succeeded(id).is_none())
                .collect();
            let last = needed.iter().filter_map(|id| succeeded(id)).max();
            (
                "until the last step succeeded".to_string(),
                last.filter(|_| unfinished.is_empty()),
                format!("not every step succeeded ({})", unfinished.join(", ")),
            )
        }
    };
    let measured_ms = end.map(|e| ms_between(start, e).max(0).unsigned_abs());
    let (mut met, margin_ms) = judge(target_ms, measured_ms);
    if measured_ms.is_none() && target_ms.is_some() {
        // The service never came back in this run: the objective was not shown to hold.
        met = Some(false);
    }
    Measure {
        target_ms,
        measured_ms,
        met,
        margin_ms,
        source,
        note: measured_ms.is_none().then_some(note),
    }
}

fn measure_rpo(h: &RunHistory, start: DateTime<Utc>) -> (Measure, Option<Backup>) {
    let target_ms = target(h.objectives.rpo);
    let source_step = match &h.objectives.rpo_from {
        Some(id) => h.steps.get_full(id).map(|(_, id, s)| (id, s)),
        None => h.steps.iter().find(|(_, s)| evidence(s).default_rpo_source),
    };
    let Some((id, step)) = source_step else {
        return (
            Measure {
                target_ms,
                source: "no backup step".into(),
                note: Some("no step dates the data, and no `objectives.rpo_from`".into()),
                ..Default::default()
            },
            None,
        );
    };
    let ok = step.state.is_success();
    let ev = evidence(step);
    let empty = Outputs::new();
    let outputs = step.outputs.as_ref().unwrap_or(&empty);
    let dated = ev.data_time.and_then(|f| f(outputs));
    let field = dated.as_ref().map_or("its data time", |(f, _)| *f);
    let source = format!("{field} of step {id}");
    let time = dated.as_ref().and_then(|(_, t)| parse_time(t));
    let measured_ms = time
        .filter(|_| ok)
        .map(|t| ms_between(t, start).max(0).unsigned_abs());
    let (met, margin_ms) = judge(target_ms, measured_ms);
    let note = match (ok, time) {
        (false, _) => Some(format!("step {id} did not succeed")),
        (true, None) => Some(format!("{field} of step {id} is not a timestamp")),
        _ => None,
    };
    let backup = ev.backup.filter(|_| ok).map(|f| Backup {
        step: id.clone(),
        evidence: f(outputs),
    });
    (
        Measure {
            target_ms,
            measured_ms,
            met,
            margin_ms,
            source,
            note,
        },
        backup,
    )
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn timestamps_from_s3_outputs_and_postgres_both_parse() {
        let want = "2026-11-24T10:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap();
        for text in [
            "2026-11-24T10:00:00Z",
            "2026-11-24T11:00:00+01:00",
            "2026-11-24 10:00:00+00",
            "2026-11-24 10:00:00.000+00",
            "2026-11-24 10:00:00",
        ] {
            assert_eq!(parse_time(text), Some(want), "{text}");
        }
        assert_eq!(parse_time("yesterday"), None);
    }
}
