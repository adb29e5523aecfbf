//! `kube.job`: run a one-off Job from a Deployment's pod template (`manage.py migrate`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ConfigIssue, Effect, OutputDoc, Outputs, Preview, PreviewCtx, StepCtx, StepError, StepKind,
    output,
};
use crate::duration::HumanDuration;

/// A one-off Job built from a Deployment's pod template (same image, env and secrets)
/// with the command replaced.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Deployment whose pod template is copied.
    pub from_deployment: String,
    /// Container to run the command in (default: the only container, or the first).
    #[serde(default)]
    pub container: Option<String>,
    /// Command (argv) replacing the container's entrypoint, e.g. `[python, manage.py, migrate, --noinput]`.
    pub command: Vec<String>,
    /// Job name prefix (default: `<deployment>-drrun`); a unique suffix is added.
    #[serde(default)]
    pub name: Option<String>,
    /// How long to wait for completion (default `10m`).
    #[serde(default)]
    pub wait: Option<HumanDuration>,
    /// Pod retries before the Job counts as failed (default 0).
    #[serde(default)]
    pub backoff_limit: Option<u32>,
    /// Keep the Job (and its pods) afterwards instead of deleting them.
    #[serde(default)]
    pub keep: bool,
}

impl JobSpec {
    pub fn check(&self, prefix: &str) -> Vec<ConfigIssue> {
        if self.command.is_empty() {
            vec![ConfigIssue::new(
                format!("{prefix}command"),
                "`command` must name a program",
            )]
        } else {
            Vec::new()
        }
    }
}

/// Runs a one-off Job in `namespace` and waits for it to finish.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeJob {
    /// Namespace to run the Job in (checked against `guards.kube_namespaces`).
    pub namespace: String,
    /// The Job.
    #[serde(flatten)]
    pub job: JobSpec,
    /// kubeconfig context to use (default: the current context).
    #[serde(default)]
    pub context: Option<String>,
    /// Path of a kubeconfig file (default: `$KUBECONFIG` or `~/.kube/config`).
    #[serde(default)]
    pub kubeconfig: Option<String>,
}

impl StepKind for KubeJob {
    const NAME: &'static str = "kube.job";
    const SUMMARY: &'static str = "Run a one-off Job from a Deployment's pod template with a command override, wait, collect logs.";
    const EFFECT: Effect = Effect::Destructive;
    const OUTPUTS: &'static [OutputDoc] = &[
        output("job_name", "Name of the Job that ran."),
        output("succeeded", "Whether the Job completed successfully."),
        output("logs_tail", "The last lines of the Job's pod log."),
        output("duration", "Seconds from creation to completion."),
    ];

    fn check(&self) -> Vec<ConfigIssue> {
        self.job.check("")
    }

    async fn preview(&self, ctx: &PreviewCtx) -> Preview {
        if let Err(e) = ctx.guards.check_kube_namespace(&self.namespace) {
            return Preview::cannot(e.message);
        }
        if ctx.offline {
            return Preview::offline();
        }
        Preview::cannot("live Kubernetes preview is not available in this build")
    }

    async fn run(&self, _ctx: &StepCtx) -> Result<Outputs, StepError> {
        Err(super::not_built(Self::NAME))
    }
}
