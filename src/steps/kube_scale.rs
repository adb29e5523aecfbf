//! `kube.scale`: scale workloads (usually the whole DR namespace to zero, in `finally`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ConfigIssue, Effect, OutputDoc, Outputs, Preview, PreviewCtx, StepCtx, StepError, StepKind,
    output,
};
use crate::duration::HumanDuration;

/// Workload kinds `kube.scale` can scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScaleKind {
    Deployments,
    Statefulsets,
}

/// Scales Deployments and/or StatefulSets in a namespace: all of them, by name, or by
/// label selector. Records the previous replica counts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeScale {
    /// Namespace (checked against `guards.kube_namespaces`).
    pub namespace: String,
    /// Scale every workload of the selected kinds in the namespace.
    #[serde(default)]
    pub all: bool,
    /// Scale these workloads by name.
    #[serde(default)]
    pub names: Vec<String>,
    /// Scale the workloads matching this label selector, e.g. `app.kubernetes.io/part-of=acme`.
    #[serde(default)]
    pub selector: Option<String>,
    /// Which workload kinds (default `[deployments]`).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<ScaleKind>,
    /// Target replica count.
    pub replicas: u32,
    /// Wait until the workloads report this many replicas (e.g. all pods gone), up to this long.
    #[serde(default)]
    pub wait: Option<HumanDuration>,
    /// kubeconfig context to use (default: the current context).
    #[serde(default)]
    pub context: Option<String>,
    /// Path of a kubeconfig file (default: `$KUBECONFIG` or `~/.kube/config`).
    #[serde(default)]
    pub kubeconfig: Option<String>,
}

fn default_kinds() -> Vec<ScaleKind> {
    vec![ScaleKind::Deployments]
}

impl StepKind for KubeScale {
    const NAME: &'static str = "kube.scale";
    const SUMMARY: &'static str = "Scale Deployments/StatefulSets (all, by name or selector) and record the previous replica counts.";
    const EFFECT: Effect = Effect::Idempotent;
    const OUTPUTS: &'static [OutputDoc] = &[
        output(
            "previous",
            "Map of `kind/name` to the replica count before scaling.",
        ),
        output("scaled", "List of `kind/name` that were changed."),
    ];

    fn check(&self) -> Vec<ConfigIssue> {
        let chosen = [self.all, !self.names.is_empty(), self.selector.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        let mut issues = Vec::new();
        if chosen != 1 {
            issues.push(ConfigIssue::new(
                "",
                "give exactly one of `all: true`, `names` or `selector`",
            ));
        }
        if self.kinds.is_empty() {
            issues.push(ConfigIssue::new(
                "kinds",
                "name at least one kind (deployments, statefulsets)",
            ));
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
