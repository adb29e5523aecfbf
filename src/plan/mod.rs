//! A compiled playbook: every step typed, templates checked, dependencies ordered.

mod compile;
pub(crate) mod context;
mod graph;
mod refs;
mod templates;

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value as Json;

pub(crate) use compile::{CompileOptions, compile};

use crate::outcome::FailureClass;
use crate::playbook::model::{Objectives, RetrySpec, SecretRef};
use crate::steps::guard::Guards;
use crate::steps::{Effect, KindInfo};

pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    Main,
    Finally,
}

impl Phase {
    pub(crate) fn section(self) -> &'static str {
        match self {
            Self::Main => "steps",
            Self::Finally => "finally",
        }
    }
}

/// Retry policy after defaults are applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RetryPolicy {
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Explicit list of retried classes, or `None` for the defaults.
    pub on: Option<Vec<FailureClass>>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 1,
            backoff: Duration::from_secs(2),
            max_backoff: DEFAULT_MAX_BACKOFF,
            on: None,
        }
    }
}

impl RetryPolicy {
    pub(crate) fn from_spec(spec: &RetrySpec) -> Self {
        Self {
            attempts: spec.attempts.max(1),
            backoff: spec.backoff.0,
            max_backoff: spec.max_backoff.map(|d| d.0).unwrap_or(DEFAULT_MAX_BACKOFF),
            on: spec.on.clone(),
        }
    }

    /// Whether a failure of `class` is retried for a step with `effect`.
    pub(crate) fn retries(&self, class: FailureClass, effect: Effect) -> bool {
        match &self.on {
            Some(list) => list.contains(&class),
            None => match class {
                FailureClass::Connection | FailureClass::Throttled => true,
                // A destructive step may have done its damage before the failure.
                FailureClass::Timeout | FailureClass::Ambiguous => effect != Effect::Destructive,
                _ => false,
            },
        }
    }

    /// Delay before attempt `next` (2-based): backoff doubled per retry, capped.
    pub(crate) fn delay_before(&self, next: u32) -> Duration {
        let factor = 2u32.saturating_pow(next.saturating_sub(2));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PlanStep {
    pub id: String,
    pub phase: Phase,
    pub kind: &'static KindInfo,
    /// Settings as written (templates unrendered); rendered just before the step starts.
    pub with: Json,
    pub description: Option<String>,
    pub when: Option<String>,
    /// Steps (indices into [`Plan::steps`]) of the same phase that must succeed first.
    pub deps: Vec<usize>,
    /// Every step whose outputs this step's templates read (any phase).
    pub uses: Vec<usize>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// What running the step does (the kind's effect, or less as configured).
    pub effect: Effect,
    /// Line of the step's id in the playbook, for messages about the step.
    pub line: usize,
    /// Settings (paths under `with`) whose values are not known before the run, and what
    /// each waits for.
    pub unknown: Vec<(String, Unknown)>,
}

/// What a setting's value waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// A secret: known once secrets are read (a live `plan` reads them).
    Secret,
    /// A `run` field: known only while running.
    Run,
    /// The outputs of this step.
    Step(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub name: String,
    pub description: Option<String>,
    /// The playbook file as named by the user.
    pub file: PathBuf,
    /// Directory that relative paths in the playbook resolve against.
    pub base_dir: PathBuf,
    /// sha256 of the playbook text.
    pub source_hash: String,
    /// `vars` after overrides and templating.
    pub vars: IndexMap<String, Json>,
    pub secrets: IndexMap<String, SecretRef>,
    pub objectives: Objectives,
    pub guards: Guards,
    /// Who hears about the drill; its URLs are templates over secrets, rendered when the
    /// run starts.
    pub notify: crate::playbook::model::Notify,
    /// Environment variables exposed as `env` (`--env-allow`).
    pub env: IndexMap<String, String>,
    /// Main steps first, then finally steps, each in playbook order.
    pub steps: Vec<PlanStep>,
    /// Parallel levels (step indices) of the main phase, in topological order.
    pub main_levels: Vec<Vec<usize>>,
    pub finally_levels: Vec<Vec<usize>>,
}

impl Plan {
    pub(crate) fn levels(&self, phase: Phase) -> &[Vec<usize>] {
        match phase {
            Phase::Main => &self.main_levels,
            Phase::Finally => &self.finally_levels,
        }
    }

    /// Indices of the steps of `phase`, in topological order.
    pub(crate) fn order(&self, phase: Phase) -> impl Iterator<Item = usize> + '_ {
        self.levels(phase).iter().flatten().copied()
    }
}
