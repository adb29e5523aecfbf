//! One-off Jobs from a Deployment's pod template (`manage.py migrate`): building the Job,
//! creating it, waiting for it, reading the end of its log, deleting it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec as K8sJobSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Kube, pause, pick_container};
use crate::duration::{HumanDuration, format_duration};
use crate::outcome::{Failure, FailureClass, Outputs};

const DEFAULT_WAIT: Duration = Duration::from_secs(600);
const LOG_LINES: i64 = 20;

/// A one-off Job built from a Deployment's pod template (same image, env, volumes and
/// secrets) with the command replaced, or from a CronJob's job template as it is (what
/// `kubectl create job --from=cronjob/NAME` makes: a backup taken now). From a Deployment
/// only the chosen container runs (sidecars would keep the Job from completing); probes
/// are dropped and the pod gets its own labels, so the Deployment's Services never route
/// to it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobSpec {
    /// Deployment whose pod template is copied (with `command`).
    #[serde(default)]
    pub from_deployment: Option<String>,
    /// CronJob whose job template is run now, e.g. the production backup
    /// (`backup-job-daily`); `command` optionally replaces its container's command.
    #[serde(default)]
    pub from_cronjob: Option<String>,
    /// Container to run the command in (default: the only container, or the first).
    #[serde(default)]
    pub container: Option<String>,
    /// Command (argv) replacing the container's entrypoint, e.g. `[python, manage.py, migrate, --noinput]`.
    #[serde(default)]
    pub command: Vec<String>,
    /// Job name prefix (default: `<deployment>-drrun`, `<cronjob>-drrun`); a unique suffix is added.
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
    /// The settings problem, if any, as (field, message).
    pub(crate) fn problem(&self) -> Option<(&'static str, &'static str)> {
        match (&self.from_deployment, &self.from_cronjob) {
            (Some(_), Some(_)) => Some((
                "from_cronjob",
                "a Job comes from `from_deployment` or `from_cronjob`, not both",
            )),
            (None, None) => Some((
                "from_deployment",
                "say where the Job comes from: `from_deployment` (with `command`) or `from_cronjob`",
            )),
            (Some(_), None) if self.command.is_empty() => Some((
                "command",
                "`command` must name a program (a Job from a Deployment runs it in place of the entrypoint)",
            )),
            _ => None,
        }
    }

    /// `deployment `app`` or `cronjob `backup-job-daily``, for messages.
    pub(crate) fn source(&self) -> String {
        match (&self.from_deployment, &self.from_cronjob) {
            (_, Some(c)) => format!("cronjob `{c}`"),
            (Some(d), _) => format!("deployment `{d}`"),
            _ => "nothing".into(),
        }
    }

    fn source_name(&self) -> &str {
        self.from_cronjob
            .as_deref()
            .or(self.from_deployment.as_deref())
            .unwrap_or("job")
    }

    fn wait(&self) -> Duration {
        self.wait.map(|w| w.0).unwrap_or(DEFAULT_WAIT)
    }

    /// The Job object: the Deployment's pod template with the command replaced and, for a
    /// Job that runs before an image change, the new image (`image`).
    pub(crate) fn build(
        &self,
        deployment: &Deployment,
        image: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Job, Failure> {
        let owner = self.source();
        let mut template = deployment
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut pod = template
            .spec
            .take()
            .ok_or_else(|| Failure::config(format!("{owner} has no pod template")))?;
        let mut container =
            pick_container(&pod.containers, self.container.as_deref(), &owner)?.clone();
        container.command = Some(self.command.clone());
        container.args = None;
        container.liveness_probe = None;
        container.readiness_probe = None;
        container.startup_probe = None;
        container.lifecycle = None;
        if let Some(image) = image {
            container.image = Some(image.to_string());
        }
        pod.containers = vec![container];
        pod.restart_policy = Some("Never".into());
        let mut meta = template.metadata.take().unwrap_or_default();
        meta.labels = Some(labels.clone());
        let prefix = self
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-drrun", self.source_name()));
        let wait_secs = self.wait().as_secs().max(1) as i64;
        Ok(Job {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", prefix.trim_end_matches('-'))),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(K8sJobSpec {
                backoff_limit: Some(self.backoff_limit.unwrap_or(0) as i32),
                // The server stops the Job too if drrun goes away while waiting.
                active_deadline_seconds: Some(wait_secs),
                template: k8s_openapi::api::core::v1::PodTemplateSpec {
                    metadata: Some(meta),
                    spec: Some(pod),
                },
                ..Default::default()
            }),
            status: None,
        })
    }
}

impl JobSpec {
    /// The Job a CronJob would start now, as `kubectl create job --from=cronjob/NAME`
    /// makes it: its job template as written (owned by the CronJob, marked as started by
    /// hand), `command` replacing the container's when given, drrun's labels added, and a
    /// deadline when the template has none.
    pub(crate) fn build_from_cronjob(
        &self,
        cronjob: &CronJob,
        labels: BTreeMap<String, String>,
    ) -> Result<Job, Failure> {
        let owner = self.source();
        let template = cronjob
            .spec
            .as_ref()
            .map(|s| s.job_template.clone())
            .ok_or_else(|| Failure::config(format!("{owner} has no job template")))?;
        let mut spec = template
            .spec
            .ok_or_else(|| Failure::config(format!("{owner} has no job spec")))?;
        if !self.command.is_empty() {
            let pod = spec
                .template
                .spec
                .as_mut()
                .ok_or_else(|| Failure::config(format!("{owner} has no pod template")))?;
            let name = pick_container(&pod.containers, self.container.as_deref(), &owner)?
                .name
                .clone();
            for c in &mut pod.containers {
                if c.name == name {
                    c.command = Some(self.command.clone());
                    c.args = None;
                }
            }
        }
        if let Some(limit) = self.backoff_limit {
            spec.backoff_limit = Some(limit as i32);
        }
        if spec.active_deadline_seconds.is_none() {
            spec.active_deadline_seconds = Some(self.wait().as_secs().max(1) as i64);
        }
        let mut meta = template.metadata.unwrap_or_default();
        let mut all_labels = meta.labels.take().unwrap_or_default();
        all_labels.extend(labels.clone());
        // The pods carry drrun's labels too: the logs are found by them.
        let pod_meta = spec.template.metadata.get_or_insert_with(Default::default);
        pod_meta
            .labels
            .get_or_insert_with(Default::default)
            .extend(labels);
        let mut annotations = meta.annotations.take().unwrap_or_default();
        annotations.insert("cronjob.kubernetes.io/instantiate".into(), "manual".into());
        let prefix = self
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-drrun", self.source_name()));
        let owner_ref = cronjob.metadata.uid.clone().map(|uid| {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name: cronjob.metadata.name.clone().unwrap_or_default(),
                uid,
                controller: Some(true),
                ..Default::default()
            }
        });
        Ok(Job {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", prefix.trim_end_matches('-'))),
                labels: Some(all_labels),
                annotations: Some(annotations),
                owner_references: owner_ref.map(|o| vec![o]),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        })
    }
}

/// The Job `spec` describes, read from its Deployment or CronJob in `namespace`.
async fn job_for(
    kube: &Kube,
    namespace: &str,
    spec: &JobSpec,
    image: Option<&str>,
    labels: BTreeMap<String, String>,
) -> Result<Job, Failure> {
    if let Some(name) = &spec.from_cronjob {
        let api: Api<CronJob> = kube.api(namespace);
        let cronjob = api
            .get_opt(name)
            .await
            .map_err(|e| {
                kube.error(
                    &format!("get cronjob `{name}` in namespace `{namespace}`"),
                    false,
                    e,
                )
            })?
            .ok_or_else(|| {
                Failure::config(format!(
                    "cronjob `{name}` not found in namespace `{namespace}`"
                ))
            })?;
        return spec.build_from_cronjob(&cronjob, labels);
    }
    let deployment = kube
        .deployment(
            namespace,
            spec.from_deployment.as_deref().unwrap_or_default(),
        )
        .await?;
    spec.build(&deployment, image, labels)
}

/// How a Job ended.
pub(crate) struct JobOutcome {
    pub name: String,
    pub succeeded: bool,
    pub logs_tail: String,
    pub duration: Duration,
    /// Why it failed (Job condition reason and message, pod state).
    pub failure: Option<String>,
}

impl JobOutcome {
    pub(crate) fn outputs(&self) -> Outputs {
        let mut out = Outputs::new();
        out.insert("job_name".into(), json!(self.name));
        out.insert("succeeded".into(), json!(self.succeeded));
        out.insert("logs_tail".into(), json!(self.logs_tail));
        out.insert(
            "duration".into(),
            json!((self.duration.as_secs_f64() * 1000.0).round() / 1000.0),
        );
        out
    }

    /// The step error for a failed Job, with the end of its log.
    pub(crate) fn error(&self) -> Failure {
        let mut msg = format!(
            "job `{}` failed: {}",
            self.name,
            self.failure.as_deref().unwrap_or("unknown reason")
        );
        if !self.logs_tail.trim().is_empty() {
            msg.push_str("\nlast log lines:\n");
            for line in self.logs_tail.lines() {
                msg.push_str("  ");
                msg.push_str(line);
                msg.push('\n');
            }
        }
        Failure::new(FailureClass::ExitCode, msg.trim_end().to_string())
    }
}

/// Labels on every Job drrun creates, so they can be found (and cleaned up) later.
pub(crate) fn job_labels(run_id: &str, step_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "drrun".to_string(),
        ),
        ("drrun.dev/run".to_string(), label_value(run_id)),
        ("drrun.dev/step".to_string(), label_value(step_id)),
    ])
}

/// What a Job run needs from its caller: labels, cancellation, where notes go.
pub(crate) struct JobRun<'a> {
    pub labels: BTreeMap<String, String>,
    pub cancel: &'a CancellationToken,
    pub note: Box<dyn Fn(String) + Send + Sync + 'a>,
}

fn label_value(text: &str) -> String {
    let v: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Creates the Job, waits for it, reads the end of its log, and deletes it (unless `keep`).
pub(crate) async fn run_job(
    kube: &Kube,
    namespace: &str,
    spec: &JobSpec,
    image: Option<&str>,
    run: &JobRun<'_>,
) -> Result<JobOutcome, Failure> {
    let job = job_for(kube, namespace, spec, image, run.labels.clone()).await?;
    let jobs: Api<Job> = kube.api(namespace);
    let started = Instant::now();
    let created = jobs
        .create(&PostParams::default(), &job)
        .await
        .map_err(|e| kube.error(&format!("create a job in namespace `{namespace}`"), true, e))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    (run.note)(format!(
        "job {namespace}/{name} started from {}{}",
        spec.source(),
        if spec.command.is_empty() {
            String::new()
        } else {
            format!(": {}", spec.command.join(" "))
        }
    ));
    let result = wait_job(kube, &jobs, namespace, &name, spec.wait(), run.cancel).await;
    let duration = started.elapsed();
    let logs_tail = match &result {
        Err(_) if run.cancel.is_cancelled() => String::new(),
        _ => logs_tail(kube, namespace, &name).await,
    };
    if !spec.keep {
        // Background propagation removes the pods with the Job.
        if let Err(e) = jobs.delete(&name, &DeleteParams::background()).await {
            (run.note)(format!("could not delete job {name}: {e}"));
        }
    }
    let failure = result?;
    Ok(JobOutcome {
        name,
        succeeded: failure.is_none(),
        logs_tail,
        duration,
        failure,
    })
}

/// Waits for the Job's Complete/Failed condition. `Ok(None)` is success, `Ok(Some(why))`
/// a failed Job; `Err` a timeout, cancellation or API error.
async fn wait_job(
    kube: &Kube,
    jobs: &Api<Job>,
    namespace: &str,
    name: &str,
    wait: Duration,
    cancel: &CancellationToken,
) -> Result<Option<String>, Failure> {
    let deadline = Instant::now() + wait;
    loop {
        let job = jobs
            .get(name)
            .await
            .map_err(|e| kube.error(&format!("get job `{name}`"), false, e))?;
        let status = job.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            if c.status != "True" {
                continue;
            }
            match c.type_.as_str() {
                "Complete" => return Ok(None),
                "Failed" => {
                    let mut why = c.reason.clone().unwrap_or_else(|| "Failed".into());
                    if let Some(m) = &c.message {
                        why = format!("{why}: {m}");
                    }
                    let pods = kube
                        .diagnose_pods(namespace, &format!("job-name={name}"))
                        .await;
                    if !pods.is_empty() {
                        why = format!("{why}; {}", pods.join("; "));
                    }
                    return Ok(Some(why));
                }
                _ => {}
            }
        }
        // A Job the namespace's admission refuses pods for (Pod Security `restricted`, a
        // quota) never gets one: say why now instead of waiting out `wait`.
        if status.active.unwrap_or(0) == 0
            && status.failed.unwrap_or(0) == 0
            && let Some(refusal) = kube.pod_refusal(namespace, name).await
        {
            return Err(Failure::new(
                FailureClass::Config,
                format!("job `{name}` could not create its pod: {refusal}"),
            ));
        }
        if Instant::now() >= deadline {
            let pods = kube
                .diagnose_pods(namespace, &format!("job-name={name}"))
                .await;
            let mut msg = format!(
                "job `{name}` did not finish within {}",
                format_duration(wait)
            );
            for p in pods {
                msg.push_str("\n  ");
                msg.push_str(&p);
            }
            return Err(Failure::new(FailureClass::Timeout, msg));
        }
        if !pause(cancel, Duration::from_millis(400)).await {
            return Err(Failure::new(
                FailureClass::Other,
                format!("job `{name}` was cancelled"),
            ));
        }
    }
}

/// The last lines of the newest pod's log; a log that cannot be read says why instead.
async fn logs_tail(kube: &Kube, namespace: &str, job: &str) -> String {
    let pods: Api<Pod> = kube.api(namespace);
    let list = match pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
    {
        Ok(l) => l.items,
        Err(e) => return format!("(logs unavailable: {e})"),
    };
    let Some(pod) = list
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
    else {
        return "(no pod was created)".into();
    };
    let params = LogParams {
        tail_lines: Some(LOG_LINES),
        ..Default::default()
    };
    match pods
        .logs(pod.metadata.name.as_deref().unwrap_or_default(), &params)
        .await
    {
        Ok(text) => text.trim_end().to_string(),
        Err(e) => format!("(logs unavailable: {e})"),
    }
}

/// What a Job would run, checked by the API server with a dry-run create unless
/// `server_dry_run` is false (its image or command is known only at run time).
pub(crate) async fn preview_job(
    kube: &Kube,
    namespace: &str,
    spec: &JobSpec,
    image: Option<&str>,
    server_dry_run: bool,
) -> Result<Vec<String>, Failure> {
    let labels = BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        "drrun".to_string(),
    )]);
    let job = job_for(kube, namespace, spec, image, labels).await?;
    let shown_image = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let command = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .map(|c| {
            let mut argv = c.command.clone().unwrap_or_default();
            argv.extend(c.args.clone().unwrap_or_default());
            argv.join(" ")
        })
        .unwrap_or_default();
    let mut lines = vec![format!(
        "job from {} in {namespace} (image {shown_image}): {command}",
        spec.source()
    )];
    if !server_dry_run {
        lines.push("server-side dry run skipped: the image is only known at run time".into());
        return Ok(lines);
    }
    let jobs: Api<Job> = kube.api(namespace);
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    jobs.create(&pp, &job).await.map_err(|e| {
        kube.error(
            &format!("create a job in namespace `{namespace}` (dry run)"),
            false,
            e,
        )
    })?;
    lines.push("server-side dry run: accepted".into());
    Ok(lines)
}
