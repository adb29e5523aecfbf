//! What a kind gets to work with, and what it hands back.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::guard::Guards;
use crate::events::{Event, OutputStream, Reporter};
use crate::outcome::{Failure, FailureClass, Outputs};
use crate::playbook::template::{RenderError, Templates};
use crate::secrets::Redactor;
use crate::util::process::{LineObserver, Stream};

/// Everything a running step may use. Kinds never print: they report through `events`.
#[derive(Clone)]
pub(crate) struct StepCtx {
    pub step_id: String,
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
    /// Settings the kind renders itself (they read `captures`).
    pub deferred: Arc<Deferrals>,
    /// An earlier session of this run started this step and died or was cancelled before
    /// it finished: what it ran may still run (a statement on the server).
    pub earlier_attempt: bool,
}

/// The settings a kind renders itself, because they read values only it knows (an
/// `http.smoke` capture), and the run's template context (secrets real) to render them
/// with: each is rendered once, from the text the playbook wrote.
pub(crate) struct Deferrals {
    templates: Templates,
    context: minijinja::Value,
    /// Paths under `with` (`requests[2].url`).
    paths: Vec<String>,
}

impl Deferrals {
    pub(crate) fn new(context: minijinja::Value, paths: Vec<String>) -> Self {
        Self {
            templates: Templates::new(),
            context,
            paths,
        }
    }

    /// Renders the deferred strings inside `value`, the setting at `at` (`requests[2]`),
    /// with the roots in `extra` (`captures`) added to the run's context. Values go in as
    /// data: whatever they contain is never parsed as a template.
    pub(crate) fn render(
        &self,
        at: &str,
        value: &serde_json::Value,
        extra: Vec<(&str, minijinja::Value)>,
    ) -> Result<serde_json::Value, RenderError> {
        let mut pairs: Vec<(String, minijinja::Value)> = Vec::new();
        if let Ok(keys) = self.context.try_iter() {
            for key in keys {
                let Some(name) = key.as_str() else { continue };
                if extra.iter().any(|(n, _)| *n == name) {
                    continue;
                }
                if let Ok(v) = self.context.get_item(&key) {
                    pairs.push((name.to_string(), v));
                }
            }
        }
        pairs.extend(extra.into_iter().map(|(n, v)| (n.to_string(), v)));
        let ctx = minijinja::Value::from_pairs(pairs);
        self.templates.render_paths(value, &ctx, at, &self.paths)
    }
}

impl StepCtx {
    /// Byte (or item) progress for the progress display.
    pub(crate) fn progress(&self, done: u64, total: Option<u64>) {
        self.events.event(&Event::StepProgress {
            step: self.step_id.clone(),
            done,
            total,
        });
    }

    /// What the step is doing now, for progress lines and spinners (redacted).
    pub(crate) fn phase(&self, text: impl AsRef<str>) {
        self.events.event(&Event::StepPhase {
            step: self.step_id.clone(),
            phase: self.redactor.redact(text.as_ref()),
        });
    }

    /// The step's log file in the run directory: every line its programs printed.
    pub(crate) fn log_path(&self) -> PathBuf {
        step_log_path(&self.work_dir, &self.step_id)
    }

    /// An observer for the output of `program`: each line is redacted, appended to the
    /// step's log file and sent as a [`Event::StepOutput`]; `keep` (default: every line)
    /// decides which standard-error lines the step keeps to judge the result by.
    pub(crate) fn output_lines(&self, program: &str, keep: Option<LineObserver>) -> LineObserver {
        let path = self.log_path();
        let file = path.parent().and_then(|dir| {
            std::fs::create_dir_all(dir).ok()?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ok()
        });
        let file = Arc::new(std::sync::Mutex::new(file));
        let (events, redactor, step) = (
            self.events.clone(),
            self.redactor.clone(),
            self.step_id.clone(),
        );
        let program = program.to_string();
        Arc::new(move |stream: Stream, line: &str| {
            let shown = redactor.redact(line);
            let (tag, which) = match stream {
                Stream::Stdout => ("out", OutputStream::Stdout),
                Stream::Stderr => ("err", OutputStream::Stderr),
            };
            if let Some(f) = file.lock().unwrap().as_mut() {
                use std::io::Write;
                let ts = chrono::Utc::now().format("%H:%M:%S%.3f");
                let _ = writeln!(f, "{ts} {program} {tag}| {shown}");
            }
            events.event(&Event::StepOutput {
                step: step.clone(),
                stream: which,
                line: shown,
            });
            keep.as_ref().is_none_or(|k| k(stream, line))
        })
    }

    /// A line of information about the step (redacted).
    pub(crate) fn note(&self, text: impl AsRef<str>) {
        self.events.event(&Event::StepNote {
            step: self.step_id.clone(),
            text: self.redactor.redact(text.as_ref()),
        });
    }

    /// Resolves a path from the playbook against the playbook's directory.
    pub(crate) fn resolve_path(&self, path: &str) -> PathBuf {
        crate::util::resolve_path(&self.base_dir, path)
    }
}

/// `<run dir>/logs/<step>.log`, from the run's `work` directory.
pub(crate) fn step_log_path(work_dir: &std::path::Path, step: &str) -> PathBuf {
    work_dir
        .parent()
        .unwrap_or(work_dir)
        .join("logs")
        .join(format!("{step}.log"))
}

/// What `plan` may look at: whether it may reach services, the guards, and which
/// settings hold values that are not known yet (they render as placeholders).
#[derive(Clone)]
pub(crate) struct PreviewCtx {
    pub offline: bool,
    pub guards: Arc<Guards>,
    pub base_dir: PathBuf,
    /// Where a run would keep its working files (the playbook's default state
    /// directory): what a preview measures free disk on.
    pub work_dir: PathBuf,
    /// Setting paths under `with` (`archive`, `requests[0].url`) whose values are known
    /// only later: at run time, or (offline) once secrets are read.
    pub pending: Vec<String>,
}

impl PreviewCtx {
    /// Whether the setting `field` (or anything inside it) is not known yet.
    pub(crate) fn is_pending(&self, field: &str) -> bool {
        self.pending
            .iter()
            .any(|p| crate::util::paths_overlap(p, field))
    }

    /// Whether any setting is not known yet.
    pub(crate) fn any_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// A step's preview: what it would do, or why that cannot be known without running it.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Preview {
    pub lines: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cannot_preview: Option<String>,
    /// Set when the preview found a problem the run would meet (a guard refuses, a
    /// service answers with an error), not merely something it cannot know yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<FailureClass>,
    /// The step's real outputs, when a read-only kind could read them all: later steps'
    /// previews then render with them instead of placeholders.
    #[serde(skip)]
    pub outputs: Option<Outputs>,
}

impl Preview {
    pub(crate) fn lines(lines: impl IntoIterator<Item = String>) -> Self {
        Self {
            lines: lines.into_iter().collect(),
            cannot_preview: None,
            failed: None,
            outputs: None,
        }
    }

    pub(crate) fn cannot(reason: impl Into<String>) -> Self {
        Self {
            lines: Vec::new(),
            cannot_preview: Some(reason.into()),
            failed: None,
            outputs: None,
        }
    }

    /// What is known so far, and why the rest cannot be previewed.
    pub(crate) fn partial(lines: Vec<String>, reason: impl Into<String>) -> Self {
        Self {
            lines,
            cannot_preview: Some(reason.into()),
            failed: None,
            outputs: None,
        }
    }

    /// The run would fail here: a guard refuses, or a service answered with an error.
    pub(crate) fn failure(e: Failure) -> Self {
        Self::partial_failure(Vec::new(), e)
    }

    /// What is known so far, and the problem the run would meet.
    pub(crate) fn partial_failure(lines: Vec<String>, e: Failure) -> Self {
        Self {
            lines,
            cannot_preview: Some(e.message),
            failed: Some(e.class),
            outputs: None,
        }
    }

    /// The usual answer of a kind that needs a live service when `plan --offline` is used.
    pub(crate) fn offline() -> Self {
        Self::cannot("cannot preview offline (needs live reads)")
    }
}
