//! The playbook's sections as written (format v1). These types are the single source of
//! the JSON schema in `schemas/` and of the loader's checks.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::outcome::FailureClass;

/// Where a secret's value comes from at run time. The value itself is never written to
/// state, logs, progress output or reports; templates see it only while a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum SecretRef {
    /// Read from this environment variable of the drrun process.
    Env(String),
    /// Read from this file (`~` expands to the home directory); one trailing newline is removed.
    File(String),
}

/// Recovery objectives the drill is measured against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Objectives {
    /// Recovery point objective: the newest usable backup may be at most this old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<HumanDuration>,
    /// Recovery time objective: the drill must have the service back within this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<HumanDuration>,
    /// How often a drill must pass: `drrun status --state` (the fleet view) calls the
    /// playbook overdue when its last passed drill started longer ago, e.g. `7d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<HumanDuration>,
    /// The step whose success ends the measured RTO (default: the last main step to succeed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_until: Option<String>,
    /// The step whose result dates the restored data, for RPO: an `s3.fetch` (its
    /// `backup_time`, else `last_modified`) or a `pg.sql` returning a timestamp as `scalar`
    /// (default: the first `s3.fetch` step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_from: Option<String>,
}

/// Things no step may ever touch, whatever a template renders to. Checked before any
/// request is sent. Entries may use `*` as a wildcard and may be templates over `vars`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Guards {
    /// Kubernetes namespaces that must never be written to (reading is allowed, e.g. the
    /// production image tag).
    #[serde(default)]
    pub kube_namespaces: Vec<String>,
    /// PostgreSQL hosts that must never be connected to.
    #[serde(default)]
    pub pg_hosts: Vec<String>,
    /// PostgreSQL database names that must never be connected to.
    #[serde(default)]
    pub pg_databases: Vec<String>,
}

/// Who hears about a drill. Every URL is a secret (a ping URL or webhook lets anyone post
/// as you): it must come from `secrets`, and is never shown, logged or stored. Delivery
/// has a timeout and bounded retries, and a failed notification is a note: it never
/// changes the drill's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Notify {
    /// A heartbeat check in the healthchecks.io style: `URL/start` when a run starts,
    /// `URL` when the drill passed, `URL/<exit code>` with a short log when it did not
    /// (failed, missed an objective, interrupted), so the check alerts when drills fail
    /// and when they stop arriving. E.g. `{{ secrets.healthcheck_url }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<String>,
    /// A Slack-compatible incoming webhook: one message when the drill ends (project,
    /// passed or failed, RTO/RPO against the objectives, the failed step and its error,
    /// where the report is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<String>,
    /// A generic JSON webhook: the drill's report (report.json) with its status and exit
    /// code, POSTed when the drill ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// How long one delivery may take (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Further attempts after a failed delivery (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// Defaults for every step that does not set its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Defaults {
    /// Per-attempt time limit (default `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Retry policy (default: a single attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

/// How a failed step is retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetrySpec {
    /// Total attempts, the first included (1 = no retry).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Delay before the second attempt; doubled for each further attempt.
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
    /// Upper bound for the delay between attempts (default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<HumanDuration>,
    /// Which failure classes are retried. Default: `connection`, `throttled`, `timeout`
    /// and `ambiguous`, except that a destructive step is not retried after an ambiguous
    /// failure or a timeout unless this list names that class explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<FailureClass>>,
}

fn default_attempts() -> u32 {
    1
}

fn default_backoff() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(2))
}

/// The fields every step has besides `kind` and `with`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepCommon {
    /// What this step is for, shown in plans and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Steps that must succeed before this one starts (ordering without data). A template
    /// reference to `steps.X.outputs` adds `X` automatically.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// A minijinja expression; the step is skipped (with the reason shown) when it is false,
    /// e.g. `vars.with_media` or `run.status == 'failed'`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Per-attempt time limit; overrides `defaults.timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Retry policy; overrides `defaults.retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

/// One step after loading: the kind's name, its still-unrendered `with` and the common fields.
#[derive(Debug, Clone)]
pub(crate) struct RawStep {
    pub kind: String,
    pub with: serde_json::Value,
    pub common: StepCommon,
}

/// A playbook after loading, before compiling.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawPlaybook {
    pub version: u32,
    pub name: String,
    pub description: Option<String>,
    pub vars: IndexMap<String, serde_json::Value>,
    pub secrets: IndexMap<String, SecretRef>,
    pub objectives: Objectives,
    /// Objectives written but invalid (already reported): what uses them stays quiet.
    pub invalid_objectives: Vec<String>,
    pub guards: Guards,
    pub notify: Notify,
    pub defaults: Defaults,
    pub steps: IndexMap<String, RawStep>,
    pub finally: IndexMap<String, RawStep>,
}

/// Top-level keys of a v1 playbook, in the order the schema documents them.
pub(crate) const TOP_LEVEL_KEYS: &[&str] = &[
    "version",
    "name",
    "description",
    "vars",
    "secrets",
    "objectives",
    "guards",
    "notify",
    "defaults",
    "steps",
    "finally",
];

/// Keys of a step, common and kind-specific.
pub(crate) const STEP_KEYS: &[&str] = &[
    "kind",
    "with",
    "description",
    "needs",
    "when",
    "timeout",
    "retry",
];
