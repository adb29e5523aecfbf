//! `kube.deploy`: set the image (or tag) of DR Deployments and wait for the rollout.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::kube_job::JobSpec;
use super::{
    ConfigIssue, Effect, OutputDoc, Outputs, Preview, PreviewCtx, StepCtx, StepError, StepKind,
    output,
};
use crate::duration::HumanDuration;

/// Sets the image (or only the tag) of the named Deployments' containers and waits for
/// the rollout as `kubectl rollout status` does.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeDeploy {
    /// Namespace of the Deployments (checked against `guards.kube_namespaces`).
    pub namespace: String,
    /// Deployment names.
    pub deployments: Vec<String>,
    /// Only change this container (default: every container of each Deployment).
    #[serde(default)]
    pub container: Option<String>,
    /// Full image reference to set. Give either `image` or `tag`.
    #[serde(default)]
    pub image: Option<String>,
    /// Keep each container's repository and set only this tag (usually `{{ steps.prod_tag.outputs.tag }}`).
    #[serde(default)]
    pub tag: Option<String>,
    /// How long to wait for the rollout (default `10m`).
    #[serde(default)]
    pub wait: Option<HumanDuration>,
    /// Jobs (e.g. `migrate`) run to completion before the image change.
    #[serde(default)]
    pub pre_jobs: Vec<JobSpec>,
    /// kubeconfig context to use (default: the current context).
    #[serde(default)]
    pub context: Option<String>,
    /// Path of a kubeconfig file (default: `$KUBECONFIG` or `~/.kube/config`).
    #[serde(default)]
    pub kubeconfig: Option<String>,
}

impl StepKind for KubeDeploy {
    const NAME: &'static str = "kube.deploy";
    const SUMMARY: &'static str = "Set the image or tag of Deployments (field manager `drrun`), run pre-jobs, wait for the rollout.";
    const EFFECT: Effect = Effect::Idempotent;
    const OUTPUTS: &'static [OutputDoc] = &[
        output(
            "images_before",
            "Map of `deployment/container` to the image before the change.",
        ),
        output(
            "images_after",
            "Map of `deployment/container` to the image after the change.",
        ),
        output(
            "ready_replicas",
            "Map of deployment to ready replicas after the rollout.",
        ),
        output("duration", "Seconds the change and rollout took."),
    ];

    fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match (&self.image, &self.tag) {
            (Some(_), Some(_)) => issues.push(ConfigIssue::new(
                "image",
                "give either `image` or `tag`, not both",
            )),
            (None, None) => issues.push(ConfigIssue::new(
                "",
                "give `image` (full reference) or `tag`",
            )),
            _ => {}
        }
        if self.deployments.is_empty() {
            issues.push(ConfigIssue::new(
                "deployments",
                "name at least one Deployment",
            ));
        }
        for (i, job) in self.pre_jobs.iter().enumerate() {
            issues.extend(job.check(&format!("pre_jobs[{i}].")));
        }
        issues
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
