//! The append-only journal of one run: one JSON record per line, each fsync'd before
//! the change it records is acted on. A torn last line (the process died mid-write) is
//! ignored on reading and cut off before appending.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{StateError, io_err};
use crate::outcome::{FailureClass, Outputs, RunStatus};
use crate::playbook::model::Objectives;
use crate::util::fs::sync_dir;

// Records are written and read once each; their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Record {
    RunStarted {
        run_id: String,
        playbook: String,
        playbook_name: String,
        playbook_hash: String,
        drrun_version: String,
        host: String,
        /// Who ran it (the login name, or `uid N`); absent in older journals.
        #[serde(default)]
        user: String,
        /// The Kubernetes ServiceAccount it ran as (`namespace/name`), inside a pod.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service_account: Option<String>,
        /// `--break STEP`: the step this run fails on purpose.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        break_step: Option<String>,
        pid: u32,
        at: String,
        vars: serde_json::Map<String, serde_json::Value>,
        /// `-e`/`--vars-file` overrides, reused by `drrun resume`.
        #[serde(default)]
        overrides: serde_json::Map<String, serde_json::Value>,
        /// What the drill is measured against (the report is built from the journal alone).
        #[serde(default)]
        objectives: Objectives,
        /// Every step of the plan, so the report lists those that never started too.
        #[serde(default)]
        steps: Vec<PlannedStep>,
    },
    Resumed {
        pid: u32,
        at: String,
        playbook_hash: String,
        #[serde(default)]
        objectives: Objectives,
        #[serde(default)]
        steps: Vec<PlannedStep>,
    },
    PhaseStarted {
        phase: String,
        at: String,
    },
    StepStarted {
        step: String,
        kind: String,
        attempt: u32,
        fingerprint: String,
        inputs: serde_json::Value,
        at: String,
    },
    StepRetrying {
        step: String,
        attempt: u32,
        class: FailureClass,
        error: String,
        delay_ms: u64,
        at: String,
    },
    StepSucceeded {
        step: String,
        fingerprint: String,
        outputs: Outputs,
        attempts: u32,
        duration_ms: u64,
        at: String,
    },
    StepReused {
        step: String,
        fingerprint: String,
        outputs: Outputs,
        at: String,
    },
    StepFailed {
        step: String,
        class: FailureClass,
        error: String,
        attempts: u32,
        duration_ms: u64,
        at: String,
    },
    StepSkipped {
        step: String,
        reason: String,
        /// Skipped on purpose (`when` was false), so it does not hold the drill back.
        #[serde(default)]
        satisfied: bool,
        at: String,
    },
    StepCancelled {
        step: String,
        attempts: u32,
        duration_ms: u64,
        /// What the step left behind as it stopped (a partly restored database).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        left: Option<String>,
        at: String,
    },
    Interrupted {
        signal: String,
        at: String,
    },
    RunFinished {
        status: RunStatus,
        duration_ms: u64,
        at: String,
    },
}

/// A step of the plan as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlannedStep {
    pub id: String,
    pub kind: String,
    /// `steps` or `finally`.
    pub phase: String,
}

impl Record {
    /// When the record was written (every record says).
    pub(crate) fn at(&self) -> &str {
        match self {
            Self::RunStarted { at, .. }
            | Self::Resumed { at, .. }
            | Self::PhaseStarted { at, .. }
            | Self::StepStarted { at, .. }
            | Self::StepRetrying { at, .. }
            | Self::StepSucceeded { at, .. }
            | Self::StepFailed { at, .. }
            | Self::StepSkipped { at, .. }
            | Self::StepReused { at, .. }
            | Self::StepCancelled { at, .. }
            | Self::Interrupted { at, .. }
            | Self::RunFinished { at, .. } => at,
        }
    }
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What reading a journal found.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub records: Vec<Record>,
    /// A torn last line was found (and will be cut off before the next append).
    pub torn_tail: bool,
}

pub(crate) fn read(path: &Path) -> Result<Replay, StateError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let scan = scan(&bytes);
    if let Some((line, message)) = scan.corrupt {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            line,
            message,
        });
    }
    Ok(Replay {
        records: scan.records,
        torn_tail: scan.valid_len < bytes.len(),
    })
}

/// What a journal's bytes hold: the records, how many bytes of them are whole records,
/// and the first corrupt line before the end (if any).
struct Scan {
    records: Vec<Record>,
    /// Bytes up to the end of the last whole, parseable record.
    valid_len: usize,
    corrupt: Option<(usize, String)>,
}

/// The one reading of a journal's bytes. A torn last line (no newline: the process died
/// mid-write) is not a record. Nor is a last complete line that does not parse: the
/// kernel may have persisted a partial page. Anything unparseable earlier is corruption.
fn scan(bytes: &[u8]) -> Scan {
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut records = Vec::new();
    let mut valid_len = 0;
    let mut offset = 0;
    let lines: Vec<&[u8]> = bytes[..complete].split_inclusive(|b| *b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let start = offset;
        offset += line.len();
        let text = String::from_utf8_lossy(line);
        if text.trim().is_empty() {
            valid_len = offset;
            continue;
        }
        match serde_json::from_str::<Record>(text.trim()) {
            Ok(r) => {
                records.push(r);
                valid_len = offset;
            }
            Err(_) if i + 1 == lines.len() => valid_len = start,
            Err(e) => {
                return Scan {
                    records,
                    valid_len,
                    corrupt: Some((i + 1, e.to_string())),
                };
            }
        }
    }
    Scan {
        records,
        valid_len,
        corrupt: None,
    }
}

pub(crate) struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    /// With S3 state: the store, where each record is made durable first.
    mirror: Option<super::s3::Mirror>,
}

impl Journal {
    /// Creates a new journal (the run directory must exist).
    pub(crate) fn create(path: &Path) -> Result<Self, StateError> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir);
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            mirror: None,
        })
    }

    /// Makes every record durable in the store before it is written here.
    pub(crate) fn mirrored(mut self, mirror: super::s3::Mirror) -> Self {
        self.mirror = Some(mirror);
        self
    }

    /// How many whole records the journal holds (the next record's number).
    pub(crate) fn count(path: &Path) -> Result<u64, StateError> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        Ok(scan(&bytes).records.len() as u64)
    }

    /// Opens an existing journal for appending, cutting off a torn last line.
    pub(crate) fn reopen(path: &Path) -> Result<Self, StateError> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let keep = scan(&bytes).valid_len;
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        if keep < bytes.len() {
            file.set_len(keep as u64).map_err(io_err(path))?;
            file.sync_all().map_err(io_err(path))?;
        }
        drop(file);
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            mirror: None,
        })
    }

    /// Appends one record and makes it durable before returning.
    pub(crate) fn append(&self, record: &Record) -> Result<(), StateError> {
        self.write(record, true)
    }

    /// Appends a record that nothing outside drrun acts on (a reused checkpoint, a skip):
    /// it becomes durable with the next [`Journal::append`], and if the process dies
    /// before that, resuming derives it again. Saves an fsync per reused step.
    pub(crate) fn append_lazy(&self, record: &Record) -> Result<(), StateError> {
        self.write(record, false)
    }

    fn write(&self, record: &Record, sync: bool) -> Result<(), StateError> {
        let mut line = serde_json::to_string(record).expect("records serialize");
        line.push('\n');
        let mut file = self.file.lock().unwrap();
        // In the store, every record is durable before it is acted on (lazy ones too: a
        // record is one object, and their order is the journal's). The local copy is
        // then only a cache, rebuilt from the store by the next `pull`.
        if let Some(mirror) = &self.mirror {
            mirror.put(&line)?;
        }
        file.write_all(line.as_bytes())
            .map_err(io_err(&self.path))?;
        if sync && self.mirror.is_none() {
            file.sync_data().map_err(io_err(&self.path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(step: &str) -> Record {
        Record::StepSkipped {
            step: step.into(),
            reason: "r".into(),
            satisfied: false,
            at: "t".into(),
        }
    }

    #[test]
    fn torn_tail_is_ignored_and_cut_before_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let j = Journal::create(&path).unwrap();
        j.append(&skipped("a")).unwrap();
        drop(j);
        // Simulate a crash in the middle of writing the second record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"type":"step_skipped","st"#).unwrap();
        let replay = read(&path).unwrap();
        assert!(replay.torn_tail);
        assert_eq!(replay.records, vec![skipped("a")]);

        let j = Journal::reopen(&path).unwrap();
        j.append(&skipped("b")).unwrap();
        let replay = read(&path).unwrap();
        assert!(!replay.torn_tail);
        assert_eq!(replay.records, vec![skipped("a"), skipped("b")]);
    }

    #[test]
    fn corruption_before_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        std::fs::write(
            &path,
            "garbage\n{\"type\":\"step_skipped\",\"step\":\"a\",\"reason\":\"r\",\"at\":\"t\"}\n",
        )
        .unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains("journal.jsonl:1: corrupt journal record"),
            "{err}"
        );
    }
}
