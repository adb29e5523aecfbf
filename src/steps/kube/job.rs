//! `kube.job`: run a one-off Job from a Deployment's pod template (`manage.py migrate`).

use crate::steps::Evidence;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::outcome::{Failure, Outputs};
use crate::services::kube::jobs::{JobSpec, preview_job, run_job};
use crate::services::kube::{Kube, KubeAccess};
use crate::steps::guard::Touch;
use crate::steps::{
    ConfigIssue, Effect, OutputDoc, Preview, PreviewCtx, StepCtx, StepKind, output,
};

/// Runs a one-off Job in `namespace` and waits for it to finish. A Job from a CronJob
/// (`from_cronjob`) runs where that CronJob is, often a hosting-services namespace rather
/// than the DR one: it is a write there, so guards apply to that namespace, and
/// `drrun rbac` grants Jobs there.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KubeJob {
    /// Namespace to run the Job in (checked against `guards.kube_namespaces`).
    pub namespace: String,
    /// The Job.
    #[serde(flatten)]
    pub job: JobSpec,
    /// Which cluster and credentials.
    #[serde(flatten)]
    pub access: KubeAccess,
}

impl StepKind for KubeJob {
    const NAME: &'static str = "kube.job";
    const SUMMARY: &'static str = "Run a one-off Job from a Deployment's pod template with a command override, or from a CronJob's job template (a backup taken now), wait, collect logs.";
    const EFFECT: Effect = Effect::Destructive;
    const EXAMPLE: &'static str = r#"reindex:
  kind: kube.job
  needs: [deploy]
  with:
    namespace: "{{ vars.dr_ns }}"
    from_deployment: app
    command: [python, manage.py, update_index]
    wait: 15m
"#;
    const OUTPUTS: &'static [OutputDoc] = &[
        output("job_name", "Name of the Job that ran."),
        output("succeeded", "Whether the Job completed successfully."),
        output("logs_tail", "The last lines of the Job's pod log."),
        output("duration", "Seconds from creation to completion."),
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
        crate::steps::access::job_rules(&self.namespace, self.job.from_cronjob.is_some())
    }

    fn check(&self) -> Vec<ConfigIssue> {
        self.job
            .problem()
            .map(|(field, message)| ConfigIssue::new(field, message))
            .into_iter()
            .collect()
    }

    async fn preview(&self, ctx: &PreviewCtx) -> Preview {
        if let Err(e) = ctx.guards.check_kube_namespace(&self.namespace) {
            return Preview::failure(e);
        }
        if ctx.offline {
            return Preview::offline();
        }
        let kube = match Kube::connect(&self.access, &ctx.base_dir).await {
            Ok(k) => k,
            Err(e) => return Preview::failure(e),
        };
        let lines = preview_job(&kube, &self.namespace, &self.job, None, !ctx.any_pending()).await;
        match lines {
            Ok(lines) => Preview::lines(lines),
            Err(e) => Preview::failure(e),
        }
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, Failure> {
        ctx.guards.check_kube_namespace(&self.namespace)?;
        let kube = Kube::connect(&self.access, &ctx.base_dir).await?;
        let run = super::job_run(ctx);
        let outcome = run_job(&kube, &self.namespace, &self.job, None, &run).await?;
        if outcome.succeeded {
            Ok(outcome.outputs())
        } else {
            Err(outcome.error())
        }
    }
}

/// The report's line: the Job and how it ended.
fn summary(o: &Outputs) -> Vec<String> {
    vec![format!(
        "job `{}` {}",
        o.get("job_name").and_then(|v| v.as_str()).unwrap_or("?"),
        if o.get("succeeded").and_then(serde_json::Value::as_bool) == Some(true) {
            "succeeded"
        } else {
            "failed"
        }
    )]
}
