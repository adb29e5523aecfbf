//! `kube.scale`: scale workloads (usually the whole DR namespace to zero, in `finally`).

use crate::steps::Evidence;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{ListParams, Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::duration::{HumanDuration, format_duration};
use crate::outcome::{Failure, FailureClass, Outputs};
use crate::services::kube::{FIELD_MANAGER, Kube, KubeAccess, listing, pause};
use crate::steps::guard::Touch;
use crate::steps::{
    ConfigIssue, Effect, OutputDoc, Preview, PreviewCtx, StepCtx, StepKind, output,
};

/// Workload kinds `kube.scale` can scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ScaleKind {
    Deployments,
    Statefulsets,
}

impl ScaleKind {
    fn singular(self) -> &'static str {
        match self {
            Self::Deployments => "deployment",
            Self::Statefulsets => "statefulset",
        }
    }
}

/// Scales Deployments and/or StatefulSets in a namespace: all of them, by name, or by
/// label selector. Records the previous replica counts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KubeScale {
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
    /// Which cluster and credentials.
    #[serde(flatten)]
    pub access: KubeAccess,
}

fn default_kinds() -> Vec<ScaleKind> {
    vec![ScaleKind::Deployments]
}

/// A workload's replica counts as read.
#[derive(Debug, Clone)]
struct Workload {
    kind: ScaleKind,
    name: String,
    /// `spec.replicas`.
    replicas: i32,
    /// `status.replicas` (pods that exist).
    current: i32,
    ready: i32,
    settled: bool,
}

impl Workload {
    fn key(&self) -> String {
        format!("{}/{}", self.kind.singular(), self.name)
    }

    fn from_deployment(d: &Deployment) -> Self {
        let status = d.status.clone().unwrap_or_default();
        Self {
            kind: ScaleKind::Deployments,
            name: d.metadata.name.clone().unwrap_or_default(),
            replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            current: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            settled: status.observed_generation >= d.metadata.generation,
        }
    }

    fn from_statefulset(s: &StatefulSet) -> Self {
        let status = s.status.clone().unwrap_or_default();
        Self {
            kind: ScaleKind::Statefulsets,
            name: s.metadata.name.clone().unwrap_or_default(),
            replicas: s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            current: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            settled: status.observed_generation >= s.metadata.generation,
        }
    }

    fn reached(&self, target: i32) -> bool {
        self.settled && self.current == target && self.ready == target
    }
}

impl KubeScale {
    fn list_params(&self) -> ListParams {
        match &self.selector {
            Some(s) => ListParams::default().labels(s),
            None => ListParams::default(),
        }
    }

    async fn list(&self, kube: &Kube, kind: ScaleKind) -> Result<Vec<Workload>, Failure> {
        let doing = format!("list {kind:?} in namespace `{}`", self.namespace).to_lowercase();
        let lp = self.list_params();
        Ok(match kind {
            ScaleKind::Deployments => kube
                .api::<Deployment>(&self.namespace)
                .list(&lp)
                .await
                .map_err(|e| kube.error(&doing, false, e))?
                .items
                .iter()
                .map(Workload::from_deployment)
                .collect(),
            ScaleKind::Statefulsets => kube
                .api::<StatefulSet>(&self.namespace)
                .list(&lp)
                .await
                .map_err(|e| kube.error(&doing, false, e))?
                .items
                .iter()
                .map(Workload::from_statefulset)
                .collect(),
        })
    }

    /// The workloads this step scales, read before any write.
    async fn select(&self, kube: &Kube) -> Result<Vec<Workload>, Failure> {
        let mut found = Vec::new();
        for kind in &self.kinds {
            found.extend(self.list(kube, *kind).await?);
        }
        if self.names.is_empty() {
            if found.is_empty()
                && let Some(err) = kube.missing_namespace(&self.namespace).await
            {
                return Err(err);
            }
            return Ok(found);
        }
        let mut chosen = Vec::new();
        for name in &self.names {
            let matching: Vec<_> = found.iter().filter(|w| &w.name == name).cloned().collect();
            if matching.is_empty() {
                if let Some(err) = kube.missing_namespace(&self.namespace).await {
                    return Err(err);
                }
                let names: Vec<String> = found.iter().map(|w| w.name.clone()).collect();
                let kinds: Vec<&str> = self.kinds.iter().map(|k| k.singular()).collect();
                return Err(Failure::config(format!(
                    "no {} named `{name}` in namespace `{}`; {}",
                    kinds.join(" or "),
                    self.namespace,
                    listing("workloads there", name, &names)
                )));
            }
            chosen.extend(matching);
        }
        Ok(chosen)
    }

    async fn patch(&self, kube: &Kube, w: &Workload, dry_run: bool) -> Result<(), Failure> {
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            dry_run,
            ..Default::default()
        };
        let body = Patch::Merge(json!({ "spec": { "replicas": self.replicas } }));
        let doing = format!("scale {} in namespace `{}`", w.key(), self.namespace);
        let result = match w.kind {
            ScaleKind::Deployments => kube
                .api::<Deployment>(&self.namespace)
                .patch_scale(&w.name, &pp, &body)
                .await
                .map(drop),
            ScaleKind::Statefulsets => kube
                .api::<StatefulSet>(&self.namespace)
                .patch_scale(&w.name, &pp, &body)
                .await
                .map(drop),
        };
        result.map_err(|e| kube.error(&doing, !dry_run, e))
    }
}

impl StepKind for KubeScale {
    const NAME: &'static str = "kube.scale";
    const SUMMARY: &'static str = "Scale Deployments/StatefulSets (all, by name or selector) and record the previous replica counts.";
    const EFFECT: Effect = Effect::Idempotent;
    const EXAMPLE: &'static str = r#"scale_down:
  kind: kube.scale
  description: Usually under `finally`, so DR goes back to zero whatever happened.
  with: { namespace: "{{ vars.dr_ns }}", all: true, kinds: [deployments, statefulsets], replicas: 0, wait: 5m }
"#;
    const OUTPUTS: &'static [OutputDoc] = &[
        output(
            "previous",
            "Map of `kind/name` to the replica count before scaling.",
        ),
        output("scaled", "List of `kind/name` that were changed."),
    ];

    const EVIDENCE: Evidence = Evidence {
        summary: Some(summary),
        ..Evidence::NONE
    };

    fn touches(&self) -> Vec<Touch> {
        vec![Touch::KubeNamespace {
            namespace: self.namespace.clone(),
            field: "namespace",
        }]
    }

    fn api_rules(&self) -> Vec<crate::steps::access::ApiRule> {
        use crate::steps::access::rule;
        // The workloads listed (and polled while waiting), and their scale subresource.
        self.kinds
            .iter()
            .flat_map(|k| match k {
                ScaleKind::Deployments => [
                    rule(&self.namespace, "apps", "deployments", &["list"]),
                    rule(&self.namespace, "apps", "deployments/scale", &["patch"]),
                ],
                ScaleKind::Statefulsets => [
                    rule(&self.namespace, "apps", "statefulsets", &["list"]),
                    rule(&self.namespace, "apps", "statefulsets/scale", &["patch"]),
                ],
            })
            .collect()
    }

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
            return Preview::failure(e);
        }
        if ctx.offline {
            return Preview::offline();
        }
        let result = async {
            let kube = Kube::connect(&self.access, &ctx.base_dir).await?;
            let workloads = self.select(&kube).await?;
            let mut lines = Vec::new();
            for w in &workloads {
                lines.push(format!(
                    "{} in {}: replicas {} -> {}",
                    w.key(),
                    self.namespace,
                    w.replicas,
                    self.replicas
                ));
                if w.replicas != self.replicas as i32 {
                    self.patch(&kube, w, true).await?;
                }
            }
            if workloads.is_empty() {
                lines.push(format!("nothing to scale in {}", self.namespace));
            } else {
                lines.push("server-side dry run: accepted".into());
            }
            Ok::<_, Failure>(lines)
        };
        match result.await {
            Ok(lines) => Preview::lines(lines),
            Err(e) => Preview::failure(e),
        }
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, Failure> {
        ctx.guards.check_kube_namespace(&self.namespace)?;
        let kube = Kube::connect(&self.access, &ctx.base_dir).await?;
        let workloads = self.select(&kube).await?;
        let target = self.replicas as i32;
        let mut previous = serde_json::Map::new();
        let mut scaled = Vec::new();
        for w in &workloads {
            previous.insert(w.key(), json!(w.replicas));
            if w.replicas != target {
                self.patch(&kube, w, false).await?;
                ctx.note(format!("{}: {} -> {target}", w.key(), w.replicas));
                scaled.push(json!(w.key()));
            }
        }
        if let Some(wait) = self.wait {
            let deadline = Instant::now() + wait.0;
            loop {
                let mut pending = Vec::new();
                for kind in &self.kinds {
                    for w in self.list(&kube, *kind).await? {
                        if previous.contains_key(&w.key()) && !w.reached(target) {
                            pending.push(format!("{} ({} of {target})", w.key(), w.current));
                        }
                    }
                }
                if pending.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Failure::new(
                        FailureClass::Timeout,
                        format!(
                            "not at {target} replicas after {}: {}",
                            format_duration(wait.0),
                            pending.join(", ")
                        ),
                    ));
                }
                if !pause(&ctx.cancel, Duration::from_millis(500)).await {
                    return Err(Failure::new(FailureClass::Other, "scaling was cancelled"));
                }
            }
        }
        let mut out = Outputs::new();
        out.insert("previous".into(), previous.into());
        out.insert("scaled".into(), scaled.into());
        Ok(out)
    }
}

/// The report's line: what was scaled, and from how many.
fn summary(o: &Outputs) -> Vec<String> {
    let previous = o.get("previous").and_then(|v| v.as_object());
    let scaled: Vec<String> = o
        .get("scaled")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .map(|name| match previous.and_then(|p| p.get(name)) {
            Some(n) => format!("`{name}` (was {n})"),
            None => format!("`{name}`"),
        })
        .collect();
    if scaled.is_empty() {
        vec!["nothing needed scaling".into()]
    } else {
        vec![format!("scaled {}", scaled.join(", "))]
    }
}
