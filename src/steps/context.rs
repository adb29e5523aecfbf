//! What a kind gets to work with, and what it hands back.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::guard::Guards;
use crate::playbook::model::FailureClass;
use crate::report::{Event, Reporter};
use crate::state::redact::Redactor;

/// A step's outputs: `steps.<id>.outputs.<name>`.
pub type Outputs = serde_json::Map<String, serde_json::Value>;

/// Why an attempt failed, classified so the engine knows whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub class: FailureClass,
    pub message: String,
}

impl StepError {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(FailureClass::Config, message)
    }
}

/// Everything a running step may use. Kinds never print: they report through `events`.
#[derive(Clone)]
pub struct StepCtx {
    pub step_id: String,
    pub attempt: u32,
    pub run_id: String,
    /// Cancelled on Ctrl-C or timeout: stop promptly and clean up.
    pub cancel: CancellationToken,
    pub events: Arc<dyn Reporter>,
    /// Scratch space for this run (downloads default here).
    pub work_dir: PathBuf,
    /// Directory of the playbook; relative paths in settings resolve against it.
    pub base_dir: PathBuf,
    pub guards: Arc<Guards>,
    pub redactor: Arc<Redactor>,
}

impl StepCtx {
    /// Byte (or item) progress for the progress display.
    pub fn progress(&self, done: u64, total: Option<u64>) {
        self.events.event(&Event::StepProgress {
            step: self.step_id.clone(),
            done,
            total,
        });
    }

    /// A line of information about the step (redacted).
    pub fn note(&self, text: impl AsRef<str>) {
        self.events.event(&Event::StepNote {
            step: self.step_id.clone(),
            text: self.redactor.redact(text.as_ref()),
        });
    }

    /// Resolves a path from the playbook against the playbook's directory.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        let p = crate::util::expand_home(path);
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }
}

/// What `plan` may look at: whether it may reach services, and the guards.
#[derive(Clone)]
pub struct PreviewCtx {
    pub offline: bool,
    pub guards: Arc<Guards>,
    pub base_dir: PathBuf,
}

/// A step's preview: what it would do, or why that cannot be known without running it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Preview {
    pub lines: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cannot_preview: Option<String>,
    /// The step's real outputs, when a read-only kind could read them all: later steps'
    /// previews then render with them instead of placeholders.
    #[serde(skip)]
    pub outputs: Option<Outputs>,
}

impl Preview {
    pub fn lines(lines: impl IntoIterator<Item = String>) -> Self {
        Self {
            lines: lines.into_iter().collect(),
            cannot_preview: None,
            outputs: None,
        }
    }

    pub fn cannot(reason: impl Into<String>) -> Self {
        Self {
            lines: Vec::new(),
            cannot_preview: Some(reason.into()),
            outputs: None,
        }
    }

    /// What is known so far, and why the rest cannot be previewed.
    pub fn partial(lines: Vec<String>, reason: impl Into<String>) -> Self {
        Self {
            lines,
            cannot_preview: Some(reason.into()),
            outputs: None,
        }
    }

    /// The usual answer of a kind that needs a live service when `plan --offline` is used.
    pub fn offline() -> Self {
        Self::cannot("cannot preview offline (needs live reads)")
    }
}
