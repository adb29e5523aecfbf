//! `kube.deploy`: set the image (or tag) of DR Deployments and wait for the rollout.

use std::time::{Duration, Instant};

use indexmap::IndexMap;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::duration::{HumanDuration, format_duration};
use crate::outcome::{Failure, FailureClass, Outputs};
use crate::services::kube::image::ImageRef;
use crate::services::kube::jobs::{JobSpec, preview_job, run_job};
use crate::services::kube::{
    FIELD_MANAGER, Kube, KubeAccess, pause, pick_container, selector_string,
};
use crate::steps::guard::Touch;
use crate::steps::{
    ConfigIssue, Effect, Evidence, OutputDoc, Preview, PreviewCtx, StepCtx, StepKind, output,
};

const DEFAULT_WAIT: Duration = Duration::from_secs(600);

/// Sets the image (or only the tag) of the named Deployments' containers and waits for
/// the rollout as `kubectl rollout status` does.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KubeDeploy {
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
    /// Also set the replica count (DR namespaces usually sit at zero between drills).
    #[serde(default)]
    pub replicas: Option<u32>,
    /// How long to wait for the rollout (default `10m`).
    #[serde(default)]
    pub wait: Option<HumanDuration>,
    /// Jobs (e.g. `migrate`) run to completion before the image change, with the new image.
    #[serde(default)]
    pub pre_jobs: Vec<JobSpec>,
    /// Which cluster and credentials.
    #[serde(flatten)]
    pub access: KubeAccess,
}

/// One Deployment's planned change.
struct Change {
    name: String,
    /// `container -> (before, after)`.
    images: IndexMap<String, (String, String)>,
    replicas_before: i32,
}

impl KubeDeploy {
    fn new_image(&self, current: &str) -> String {
        match (&self.image, &self.tag) {
            (Some(image), _) => image.clone(),
            (None, Some(tag)) => ImageRef::parse(current).with_tag(tag),
            (None, None) => current.to_string(),
        }
    }

    /// Reads every Deployment and works out the image changes (before any write).
    async fn changes(&self, kube: &Kube) -> Result<Vec<Change>, Failure> {
        let mut changes = Vec::new();
        for name in &self.deployments {
            let d = kube.deployment(&self.namespace, name).await?;
            let spec = d.spec.as_ref();
            let containers = spec
                .and_then(|s| s.template.spec.as_ref())
                .map(|p| p.containers.clone())
                .unwrap_or_default();
            let owner = format!("deployment `{}/{name}`", self.namespace);
            let chosen: Vec<_> = match &self.container {
                Some(c) => {
                    vec![pick_container(&containers, Some(c), &owner)?.clone()]
                }
                None => containers,
            };
            let images = chosen
                .into_iter()
                .map(|c| {
                    let before = c.image.unwrap_or_default();
                    let after = self.new_image(&before);
                    (c.name, (before, after))
                })
                .collect();
            changes.push(Change {
                name: name.clone(),
                images,
                replicas_before: spec.and_then(|s| s.replicas).unwrap_or(1),
            });
        }
        Ok(changes)
    }

    fn patch_body(&self, change: &Change) -> serde_json::Value {
        let containers: Vec<_> = change
            .images
            .iter()
            .map(|(name, (_, after))| json!({ "name": name, "image": after }))
            .collect();
        let mut spec = json!({ "template": { "spec": { "containers": containers } } });
        if let Some(r) = self.replicas {
            spec["replicas"] = json!(r);
        }
        json!({ "spec": spec })
    }

    fn patch_params(dry_run: bool) -> PatchParams {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            dry_run,
            ..Default::default()
        }
    }

    /// The image a pre-job from `deployment` should run: the new one, when that Deployment
    /// is being changed.
    fn job_image<'a>(&self, changes: &'a [Change], job: &JobSpec) -> Option<&'a str> {
        let change = changes
            .iter()
            .find(|c| Some(c.name.as_str()) == job.from_deployment.as_deref())?;
        let (_, (_, after)) = match &job.container {
            Some(name) => change.images.iter().find(|(c, _)| *c == name)?,
            None => change.images.first()?,
        };
        Some(after.as_str())
    }
}

impl StepKind for KubeDeploy {
    const NAME: &'static str = "kube.deploy";
    const SUMMARY: &'static str = "Set the image or tag of Deployments (field manager `drrun`), run pre-jobs, wait for the rollout.";
    const EFFECT: Effect = Effect::Idempotent;
    const EXAMPLE: &'static str = r#"deploy:
  kind: kube.deploy
  needs: [site]
  with:
    namespace: "{{ vars.dr_ns }}"
    deployments: [app, worker]
    tag: "{{ steps.prod_tag.outputs.tag }}"
    replicas: 1
    wait: 10m
    pre_jobs:
      - { from_deployment: app, command: [python, manage.py, migrate, --noinput] }
"#;
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
            "image",
            "The image deployed (of the first Deployment's first changed container).",
        ),
        output(
            "ready_replicas",
            "Map of deployment to ready replicas after the rollout.",
        ),
        output(
            "pre_jobs",
            "Outputs of each pre-job (`job_name`, `succeeded`, `logs_tail`, `duration`).",
        ),
        output("duration", "Seconds the change and rollout took."),
    ];

    const EVIDENCE: Evidence = Evidence {
        deployed_image: Some(deployed_image),
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
        let ns = &self.namespace;
        // The image patch (and its server-side dry run in `plan`), the rollout read from
        // the Deployment and its current ReplicaSet, and why pods fail from their events.
        let mut rules = vec![
            rule(ns, "apps", "deployments", &["get", "list", "patch"]),
            rule(ns, "apps", "replicasets", &["list"]),
            rule(ns, "", "pods", &["list"]),
            rule(ns, "", "events", &["list"]),
        ];
        for job in &self.pre_jobs {
            rules.extend(crate::steps::access::job_rules(
                ns,
                job.from_cronjob.is_some(),
            ));
        }
        rules
    }

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
            if let Some((field, message)) = job.problem() {
                issues.push(ConfigIssue::new(format!("pre_jobs[{i}].{field}"), message));
            }
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
        match self.preview_lines(ctx).await {
            Ok(lines) => Preview::lines(lines),
            Err(e) => Preview::failure(e),
        }
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, Failure> {
        ctx.guards.check_kube_namespace(&self.namespace)?;
        let started = Instant::now();
        let kube = Kube::connect(&self.access, &ctx.base_dir).await?;
        let changes = self.changes(&kube).await?;

        let mut job_outputs = Vec::new();
        let run = super::job_run(ctx);
        for job in &self.pre_jobs {
            let image = self.job_image(&changes, job);
            let outcome = run_job(&kube, &self.namespace, job, image, &run).await?;
            if !outcome.succeeded {
                return Err(outcome.error());
            }
            job_outputs.push(serde_json::Value::Object(outcome.outputs()));
        }

        let api: Api<Deployment> = kube.api(&self.namespace);
        for change in &changes {
            for (container, (before, after)) in &change.images {
                if before != after {
                    ctx.note(format!("{}/{container}: {before} -> {after}", change.name));
                }
            }
            api.patch(
                &change.name,
                &Self::patch_params(false),
                &Patch::Strategic(self.patch_body(change)),
            )
            .await
            .map_err(|e| {
                kube.error(
                    &format!(
                        "patch deployment `{}` in namespace `{}`",
                        change.name, self.namespace
                    ),
                    true,
                    e,
                )
            })?;
        }

        let wait = self.wait.map(|w| w.0).unwrap_or(DEFAULT_WAIT);
        let deadline = Instant::now() + wait;
        let mut ready = serde_json::Map::new();
        for change in &changes {
            let r = wait_rollout(&kube, &self.namespace, &change.name, deadline, wait, ctx).await?;
            ready.insert(change.name.clone(), json!(r));
        }

        let mut before = serde_json::Map::new();
        let mut after = serde_json::Map::new();
        for change in &changes {
            for (container, (b, a)) in &change.images {
                let key = format!("{}/{container}", change.name);
                before.insert(key.clone(), json!(b));
                after.insert(key, json!(a));
            }
        }
        let image = changes
            .first()
            .and_then(|c| c.images.first())
            .map(|(_, (_, a))| a.clone())
            .unwrap_or_default();
        let mut out = Outputs::new();
        out.insert("images_before".into(), before.into());
        out.insert("images_after".into(), after.into());
        out.insert("image".into(), json!(image));
        out.insert("ready_replicas".into(), ready.into());
        out.insert("pre_jobs".into(), job_outputs.into());
        out.insert(
            "duration".into(),
            json!((started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
        );
        Ok(out)
    }
}

impl KubeDeploy {
    async fn preview_lines(&self, ctx: &PreviewCtx) -> Result<Vec<String>, Failure> {
        let kube = Kube::connect(&self.access, &ctx.base_dir).await?;
        let changes = self.changes(&kube).await?;
        let mut lines = Vec::new();
        // A server-side dry run of a placeholder would only test the placeholder.
        let image_pending = ctx.is_pending("image") || ctx.is_pending("tag");
        for (i, job) in self.pre_jobs.iter().enumerate() {
            let image = self.job_image(&changes, job);
            let known = !image_pending && !ctx.is_pending(&format!("pre_jobs[{i}]"));
            for line in preview_job(&kube, &self.namespace, job, image, known).await? {
                lines.push(format!("pre-job: {line}"));
            }
        }
        let api: Api<Deployment> = kube.api(&self.namespace);
        for change in &changes {
            for (container, (before, after)) in &change.images {
                let verb = if before == after { "stays" } else { "->" };
                lines.push(format!(
                    "deployment {}/{} container {container}: {before} {verb} {after}",
                    self.namespace, change.name
                ));
            }
            if let Some(r) = self.replicas {
                lines.push(format!(
                    "deployment {}/{}: replicas {} -> {r}",
                    self.namespace, change.name, change.replicas_before
                ));
            }
        }
        if image_pending {
            lines.push("server-side dry run skipped: the image is only known at run time".into());
            return Ok(lines);
        }
        for change in &changes {
            api.patch(
                &change.name,
                &Self::patch_params(true),
                &Patch::Strategic(self.patch_body(change)),
            )
            .await
            .map_err(|e| {
                kube.error(
                    &format!(
                        "patch deployment `{}` in namespace `{}` (dry run)",
                        change.name, self.namespace
                    ),
                    false,
                    e,
                )
            })?;
        }
        lines.push("server-side dry run: accepted".into());
        Ok(lines)
    }
}

/// The image deployed and what ran before, from the outputs.
fn deployed_image(outputs: &Outputs) -> Option<(String, serde_json::Value)> {
    let image = outputs.get("image")?.as_str()?.to_string();
    let before = outputs
        .get("images_before")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    Some((image, before))
}

/// What `kubectl rollout status` says about a Deployment: `Ok(None)` when the rollout is
/// complete, `Ok(Some(waiting for ...))` while it goes on, `Err` when it failed.
pub(super) fn rollout_status(d: &Deployment) -> Result<Option<String>, String> {
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    if generation > status.observed_generation.unwrap_or(0) {
        return Ok(Some(
            "waiting for the deployment spec update to be observed".into(),
        ));
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Err(format!(
                "exceeded its progress deadline ({})",
                c.message.as_deref().unwrap_or("ProgressDeadlineExceeded")
            ));
        }
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        return Ok(Some(format!(
            "{updated} out of {want} new replicas have been updated"
        )));
    }
    if total > updated {
        return Ok(Some(format!(
            "{} old replicas are pending termination",
            total - updated
        )));
    }
    if available < updated {
        return Ok(Some(format!(
            "{available} of {updated} updated replicas are available"
        )));
    }
    Ok(None)
}

/// Polls the Deployment until its rollout completes; on failure or at the deadline the
/// error names the pods that are not ready and why. Returns the ready replicas.
async fn wait_rollout(
    kube: &Kube,
    namespace: &str,
    name: &str,
    deadline: Instant,
    wait: Duration,
    ctx: &StepCtx,
) -> Result<i32, Failure> {
    let api: Api<Deployment> = kube.api(namespace);
    let mut last = String::new();
    loop {
        let d = api.get(name).await.map_err(|e| {
            kube.error(
                &format!("get deployment `{name}` in namespace `{namespace}`"),
                false,
                e,
            )
        })?;
        let failure = match rollout_status(&d) {
            Ok(None) => {
                let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                ctx.note(format!(
                    "deployment {namespace}/{name} rolled out ({ready} ready)"
                ));
                return Ok(ready);
            }
            Ok(Some(waiting)) => {
                if waiting != last {
                    ctx.note(format!("{name}: {waiting}"));
                    // kubectl's words carry the replica counts ("2 of 3 updated replicas
                    // are available"): the progress line and spinner show them.
                    ctx.phase(format!("rollout of {name}: {waiting}"));
                    last = waiting;
                }
                // Pods the namespace's admission refuses (Pod Security) never come:
                // say so now rather than at the deadline.
                let refusal = match kube.current_replicaset(namespace, &d).await {
                    Some(rs) => kube.pod_refusal(namespace, &rs).await,
                    None => None,
                };
                if let Some(refusal) = refusal {
                    Some((
                        FailureClass::Config,
                        format!("cannot create its pods: {refusal}"),
                    ))
                } else if Instant::now() < deadline {
                    None
                } else {
                    Some((
                        FailureClass::Timeout,
                        format!("did not finish within {}: {last}", format_duration(wait)),
                    ))
                }
            }
            Err(why) => Some((FailureClass::Assertion, why)),
        };
        if let Some((class, why)) = failure {
            let mut msg =
                format!("rollout of deployment `{name}` in namespace `{namespace}` {why}");
            let pods = kube.diagnose_pods(namespace, &selector_string(&d)).await;
            if pods.is_empty() {
                msg.push_str("\n  (no pod reports a problem)");
            }
            for p in pods {
                msg.push_str("\n  ");
                msg.push_str(&p);
            }
            return Err(Failure::new(class, msg));
        }
        if !pause(&ctx.cancel, Duration::from_millis(500)).await {
            return Err(Failure::new(
                FailureClass::Other,
                format!("waiting for deployment `{name}` was cancelled"),
            ));
        }
    }
}

/// The report's lines: each deployment's image and its ready replicas.
fn summary(o: &Outputs) -> Vec<String> {
    let ready = o.get("ready_replicas").and_then(|v| v.as_object());
    o.get("images_after")
        .and_then(|v| v.as_object())
        .into_iter()
        .flatten()
        .map(|(container, image)| {
            let deployment = container.split('/').next().unwrap_or(container);
            let replicas = ready
                .and_then(|r| r.get(deployment))
                .map_or_else(String::new, |n| format!(", {n} ready"));
            format!(
                "`{container}` runs `{}`{replicas}",
                image.as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    use super::rollout_status;

    fn deployment(generation: i64, replicas: i32, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "app", "generation": generation },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": "app" } },
                "template": { "spec": { "containers": [{ "name": "app", "image": "x" }] } }
            },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn rollout_status_reads_like_kubectl() {
        let waiting = |d: &Deployment| rollout_status(d).unwrap().unwrap();
        let d = deployment(3, 2, json!({ "observedGeneration": 2 }));
        assert_eq!(
            waiting(&d),
            "waiting for the deployment spec update to be observed"
        );
        let d = deployment(
            3,
            2,
            json!({ "observedGeneration": 3, "replicas": 2, "updatedReplicas": 1 }),
        );
        assert_eq!(waiting(&d), "1 out of 2 new replicas have been updated");
        let d = deployment(
            3,
            2,
            json!({ "observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2 }),
        );
        assert_eq!(waiting(&d), "1 old replicas are pending termination");
        let d = deployment(
            3,
            2,
            json!({ "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1 }),
        );
        assert_eq!(waiting(&d), "1 of 2 updated replicas are available");
        let d = deployment(
            3,
            2,
            json!({ "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2 }),
        );
        assert_eq!(rollout_status(&d), Ok(None));
        // Scaled to zero: complete at once.
        let d = deployment(4, 0, json!({ "observedGeneration": 4 }));
        assert_eq!(rollout_status(&d), Ok(None));
        let d = deployment(
            3,
            2,
            json!({
                "observedGeneration": 3, "replicas": 2, "updatedReplicas": 1,
                "conditions": [{ "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                 "message": "ReplicaSet \"app-1\" has timed out progressing." }]
            }),
        );
        let err = rollout_status(&d).unwrap_err();
        assert!(err.contains("exceeded its progress deadline"), "{err}");
        assert!(err.contains("timed out progressing"), "{err}");
    }
}
