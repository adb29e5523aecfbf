//! The drill report: what a run proved, built from its journal alone, so `drrun report`
//! gives the same answer later as the run did at its end (also for a run that was killed).
//!
//! RTO = run start → the success of `objectives.rto_until` (default: the last main step to
//! succeed). RPO = run start − the time the restored data is from (`objectives.rpo_from`,
//! default: the first `s3.fetch` step's `backup_time`, else its `last_modified`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::duration::format_duration;
use crate::playbook::model::Objectives;
use crate::state::journal::{PlannedStep, Record};

pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    pub report_version: u32,
    pub run_id: String,
    pub playbook: PlaybookInfo,
    pub drrun_version: String,
    pub host: String,
    /// `passed`, `failed`, `interrupted`, or `incomplete` (the process died; resumable).
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Wall-clock time from start to finish, interruptions included.
    pub duration_ms: Option<u64>,
    /// How many times the run was resumed.
    pub resumed: u32,
    pub rto: Measure,
    pub rpo: Measure,
    pub failed_step: Option<FailedStep>,
    /// The backup the data came from (the RPO source's outputs), if an `s3.fetch` ran.
    pub backup: Option<Json>,
    /// The image deployed, if a `kube.deploy` ran.
    pub image: Option<ImageDeployed>,
    /// The run's phases and interruptions: started, interrupted, resumed, finally, finished.
    pub timeline: Vec<Mark>,
    pub steps: Vec<StepReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mark {
    pub what: String,
    pub at: String,
    pub offset_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaybookInfo {
    pub name: String,
    pub path: String,
    /// sha256 of the playbook file as run.
    pub hash: String,
}

/// A measured objective against its target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measure {
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedStep {
    pub step: String,
    pub kind: String,
    pub class: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageDeployed {
    pub step: String,
    pub image: String,
    pub before: Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    pub id: String,
    pub kind: String,
    /// `steps` or `finally`.
    pub phase: String,
    /// `passed`, `reused`, `failed`, `skipped`, `cancelled`, `running` (died), `pending`.
    pub state: String,
    pub attempts: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// Offset of `started_at` from the run start.
    pub offset_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Outputs as journaled (secrets were redacted before they were written).
    pub outputs: Json,
}

impl StepReport {
    fn new(id: &str, kind: &str, phase: &str) -> Self {
        Self {
            id: id.to_string(),
            kind: kind.to_string(),
            phase: phase.to_string(),
            state: "pending".into(),
            attempts: 0,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            offset_ms: None,
            class: None,
            error: None,
            outputs: Json::Null,
        }
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
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

impl DrillReport {
    /// Builds the report from a run's journal records. `now` stands in for the end of a
    /// run that has not finished (yet).
    pub fn from_records(records: &[Record]) -> Option<Self> {
        let Some(Record::RunStarted {
            run_id,
            playbook,
            playbook_name,
            playbook_hash,
            drrun_version,
            host,
            at,
            objectives,
            steps: planned,
            ..
        }) = records.first()
        else {
            return None;
        };
        let mut objectives: Objectives = objectives.clone();
        let mut planned: Vec<PlannedStep> = planned.clone();
        let mut hash = playbook_hash.clone();
        let start = parse_time(at)?;
        let mut steps: Vec<StepReport> = planned
            .iter()
            .map(|p| StepReport::new(&p.id, &p.kind, &p.phase))
            .collect();
        let mut phase = "steps".to_string();
        let mut status = "incomplete".to_string();
        let mut finished_at = None;
        let mut resumed = 0;
        // The time each step last succeeded (a reused step keeps its earlier success).
        let mut succeeded_at: std::collections::HashMap<String, String> = Default::default();
        let mut timeline = vec![Mark {
            what: "run started".into(),
            at: at.clone(),
            offset_ms: 0,
        }];
        let mut mark = |what: &str, when: &str| {
            timeline.push(Mark {
                what: what.to_string(),
                at: when.to_string(),
                offset_ms: parse_time(when).map_or(0, |t| ms_between(start, t).max(0) as u64),
            })
        };

        fn slot<'a>(steps: &'a mut Vec<StepReport>, id: &str, phase: &str) -> &'a mut StepReport {
            if let Some(i) = steps.iter().position(|s| s.id == id) {
                return &mut steps[i];
            }
            steps.push(StepReport::new(id, "", phase));
            steps.last_mut().unwrap()
        }

        for r in records {
            match r {
                Record::RunStarted { .. } => {}
                Record::Resumed {
                    playbook_hash,
                    objectives: o,
                    steps: p,
                    at: when,
                    ..
                } => {
                    mark("resumed", when);
                    resumed += 1;
                    phase = "steps".into();
                    hash = playbook_hash.clone();
                    if !p.is_empty() {
                        objectives = o.clone();
                        planned = p.clone();
                        for p in &planned {
                            slot(&mut steps, &p.id, &p.phase).kind = p.kind.clone();
                        }
                    }
                }
                Record::PhaseStarted { phase: p, at: when } => {
                    mark(&format!("{p} started"), when);
                    phase = p.clone();
                }
                Record::StepStarted {
                    step,
                    kind,
                    at,
                    attempt,
                    ..
                } => {
                    let s = slot(&mut steps, step, &phase);
                    s.kind = kind.clone();
                    s.state = "running".into();
                    s.attempts = *attempt;
                    if *attempt == 1 {
                        s.started_at = Some(at.clone());
                        s.offset_ms = parse_time(at).map(|t| ms_between(start, t).max(0) as u64);
                        s.finished_at = None;
                        s.error = None;
                        s.class = None;
                    }
                }
                Record::StepRetrying {
                    step, error, class, ..
                } => {
                    let s = slot(&mut steps, step, &phase);
                    s.error = Some(error.clone());
                    s.class = Some(class.as_str().into());
                }
                Record::StepSucceeded {
                    step,
                    outputs,
                    attempts,
                    duration_ms,
                    at,
                    ..
                } => {
                    let s = slot(&mut steps, step, &phase);
                    s.state = "passed".into();
                    s.attempts = *attempts;
                    s.duration_ms = Some(*duration_ms);
                    s.finished_at = Some(at.clone());
                    s.outputs = Json::Object(outputs.clone());
                    s.error = None;
                    s.class = None;
                    succeeded_at.insert(step.clone(), at.clone());
                }
                Record::StepReused { step, outputs, .. } => {
                    let s = slot(&mut steps, step, &phase);
                    s.state = "reused".into();
                    s.outputs = Json::Object(outputs.clone());
                }
                Record::StepFailed {
                    step,
                    class,
                    error,
                    attempts,
                    duration_ms,
                    at,
                } => {
                    let s = slot(&mut steps, step, &phase);
                    s.state = "failed".into();
                    s.attempts = *attempts;
                    s.duration_ms = Some(*duration_ms);
                    s.finished_at = Some(at.clone());
                    s.class = Some(class.as_str().into());
                    s.error = Some(error.clone());
                    succeeded_at.remove(step);
                }
                Record::StepSkipped {
                    step,
                    reason,
                    satisfied,
                    ..
                } => {
                    let s = slot(&mut steps, step, &phase);
                    s.state = if *satisfied { "not needed" } else { "skipped" }.into();
                    s.error = Some(reason.clone());
                }
                Record::StepCancelled {
                    step,
                    attempts,
                    duration_ms,
                    at,
                } => {
                    let s = slot(&mut steps, step, &phase);
                    s.state = "cancelled".into();
                    s.attempts = *attempts;
                    s.duration_ms = Some(*duration_ms);
                    s.finished_at = Some(at.clone());
                }
                Record::Interrupted { signal, at: when } => {
                    mark(&format!("interrupted ({signal})"), when)
                }
                Record::RunFinished { status: st, at, .. } => {
                    mark(&format!("run finished: {st}"), at);
                    status = st.clone();
                    finished_at = Some(at.clone());
                }
            }
        }

        // Steps whose `when` was false were not needed for the recovery.
        let main_ids: Vec<&str> = steps
            .iter()
            .filter(|s| s.phase == "steps" && s.state != "not needed")
            .map(|s| s.id.as_str())
            .collect();
        let rto = measure_rto(&objectives, start, &main_ids, &succeeded_at);
        let (rpo, backup) = measure_rpo(&objectives, start, &steps);
        let failed_step = steps
            .iter()
            .filter(|s| s.state == "failed")
            .min_by_key(|s| s.finished_at.clone())
            .map(|s| FailedStep {
                step: s.id.clone(),
                kind: s.kind.clone(),
                class: s.class.clone().unwrap_or_default(),
                error: s.error.clone().unwrap_or_default(),
            });
        let image = steps
            .iter()
            .filter(|s| s.kind == "kube.deploy" && matches!(s.state.as_str(), "passed" | "reused"))
            .find_map(|s| {
                Some(ImageDeployed {
                    step: s.id.clone(),
                    image: s.outputs.get("image")?.as_str()?.to_string(),
                    before: s
                        .outputs
                        .get("images_before")
                        .cloned()
                        .unwrap_or(Json::Null),
                })
            });
        let duration_ms = finished_at
            .as_deref()
            .and_then(parse_time)
            .map(|t| ms_between(start, t).max(0) as u64);
        Some(Self {
            report_version: REPORT_VERSION,
            run_id: run_id.clone(),
            playbook: PlaybookInfo {
                name: playbook_name.clone(),
                path: playbook.clone(),
                hash,
            },
            drrun_version: drrun_version.clone(),
            host: host.clone(),
            status,
            started_at: at.clone(),
            finished_at,
            duration_ms,
            resumed,
            rto,
            rpo,
            failed_step,
            backup,
            image,
            timeline,
            steps,
        })
    }

    /// Whether a measured objective was missed (which fails the drill).
    pub fn objective_missed(&self) -> bool {
        self.rto.met == Some(false) || self.rpo.met == Some(false)
    }

    /// The headline lines the terminal summary shows.
    pub fn headline(&self) -> Vec<String> {
        vec![headline("RTO", &self.rto), headline("RPO", &self.rpo)]
    }
}

/// A duration for people: milliseconds only below a minute.
pub fn human_ms(ms: u64) -> String {
    let ms = if ms >= 60_000 { ms / 1000 * 1000 } else { ms };
    format_duration(std::time::Duration::from_millis(ms))
}

fn headline(name: &str, m: &Measure) -> String {
    let measured = m.measured_ms.map(human_ms);
    let target = m.target_ms.map(human_ms);
    let verdict = match (m.met, m.margin_ms) {
        (Some(true), Some(margin)) => format!("met, {} to spare", human_ms(margin as u64)),
        (Some(false), Some(margin)) => format!("MISSED by {}", human_ms(margin.unsigned_abs())),
        (Some(false), None) => "MISSED".to_string(),
        _ => "no objective set".to_string(),
    };
    match (measured, target) {
        (Some(v), Some(t)) => format!("{name} {v} (objective {t}): {verdict}"),
        (Some(v), None) => format!("{name} {v} ({})", m.source),
        (None, Some(t)) => format!(
            "{name} not measured (objective {t}): {}",
            m.note.as_deref().unwrap_or("no measurement")
        ),
        (None, None) => format!(
            "{name} not measured: {}",
            m.note.as_deref().unwrap_or("no measurement")
        ),
    }
}

fn judge(target_ms: Option<u64>, measured_ms: Option<u64>) -> (Option<bool>, Option<i64>) {
    match (target_ms, measured_ms) {
        (Some(t), Some(m)) => (Some(m <= t), Some(t as i64 - m as i64)),
        _ => (None, None),
    }
}

fn measure_rto(
    objectives: &Objectives,
    start: DateTime<Utc>,
    main_ids: &[&str],
    succeeded_at: &std::collections::HashMap<String, String>,
) -> Measure {
    let target_ms = objectives.rto.map(|d| d.0.as_millis() as u64);
    let (source, end, note) = match &objectives.rto_until {
        Some(id) => (
            format!("until step {id} succeeded"),
            succeeded_at.get(id).and_then(|t| parse_time(t)),
            format!("step {id} did not succeed"),
        ),
        None => {
            let all_ok = main_ids.iter().all(|id| succeeded_at.contains_key(*id));
            let last = main_ids
                .iter()
                .filter_map(|id| succeeded_at.get(*id).and_then(|t| parse_time(t)))
                .max();
            let unfinished: Vec<&str> = main_ids
                .iter()
                .copied()
                .filter(|id| !succeeded_at.contains_key(*id))
                .collect();
            (
                "until the last step succeeded".to_string(),
                if all_ok { last } else { None },
                format!("not every step succeeded ({})", unfinished.join(", ")),
            )
        }
    };
    let measured_ms = end.map(|e| ms_between(start, e).max(0) as u64);
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

fn measure_rpo(
    objectives: &Objectives,
    start: DateTime<Utc>,
    steps: &[StepReport],
) -> (Measure, Option<Json>) {
    let target_ms = objectives.rpo.map(|d| d.0.as_millis() as u64);
    let source_step = match &objectives.rpo_from {
        Some(id) => steps.iter().find(|s| &s.id == id),
        None => steps.iter().find(|s| s.kind == "s3.fetch"),
    };
    let Some(step) = source_step else {
        return (
            Measure {
                target_ms,
                source: "no backup step".into(),
                note: Some("no s3.fetch step, and no `objectives.rpo_from`".into()),
                ..Default::default()
            },
            None,
        );
    };
    let ok = matches!(step.state.as_str(), "passed" | "reused");
    let (field, time) = if step.kind == "pg.sql" {
        ("scalar", step.outputs.get("scalar"))
    } else {
        match step.outputs.get("backup_time").filter(|v| !v.is_null()) {
            Some(v) => ("backup_time", Some(v)),
            None => ("last_modified", step.outputs.get("last_modified")),
        }
    };
    let source = format!("{field} of step {}", step.id);
    let dated = time.and_then(|v| v.as_str()).and_then(parse_time);
    let measured_ms = dated
        .filter(|_| ok)
        .map(|t| ms_between(t, start).max(0) as u64);
    let (met, margin_ms) = judge(target_ms, measured_ms);
    let note = match (ok, dated) {
        (false, _) => Some(format!("step {} did not succeed", step.id)),
        (true, None) => Some(format!("{field} of step {} is not a timestamp", step.id)),
        _ => None,
    };
    let backup = (step.kind == "s3.fetch" && ok).then(|| {
        let mut b = serde_json::Map::new();
        b.insert("step".into(), Json::from(step.id.clone()));
        for k in [
            "bucket",
            "key",
            "version_id",
            "size",
            "sha256",
            "etag",
            "backup_time",
            "last_modified",
            "age",
        ] {
            if let Some(v) = step.outputs.get(k) {
                b.insert(k.into(), v.clone());
            }
        }
        Json::Object(b)
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

impl DrillReport {
    /// Writes `report.json`, `report.md` and `junit.xml` into `dir`, each through a
    /// temporary file renamed into place, so a reader never sees half a report.
    pub fn write_files(&self, dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
        use std::io::Write;
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)? + "\n";
        let files = [
            ("report.json", json),
            ("report.md", super::markdown::render(self)),
            ("junit.xml", super::junit::render(self)),
        ];
        let mut written = Vec::new();
        for (name, text) in files {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            written.push(path);
        }
        Ok(written)
    }
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
