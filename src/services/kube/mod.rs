//! Kubernetes: which cluster and credentials (kubeconfig inference), API errors turned
//! into messages and failure classes, "not found" answers that list what exists, and the
//! diagnosis of pods that do not become ready; image references ([`image`]) and one-off
//! Jobs ([`jobs`]). Knows nothing of step kinds.

pub(crate) mod image;
pub(crate) mod jobs;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Event, Namespace, Pod};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::outcome::{Failure, FailureClass};
use crate::util::error_chain;

/// The field manager drrun's writes are recorded under (`kubectl get -o yaml --show-managed-fields`).
pub(crate) const FIELD_MANAGER: &str = "drrun";

/// Which cluster and credentials: the standard kubeconfig inference (`$KUBECONFIG`,
/// `~/.kube/config`, then the in-cluster service account) unless narrowed here.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KubeAccess {
    /// kubeconfig context to use (default: the current context).
    #[serde(default)]
    pub context: Option<String>,
    /// Path of a kubeconfig file (default: `$KUBECONFIG` or `~/.kube/config`).
    #[serde(default)]
    pub kubeconfig: Option<String>,
}

/// A connected client plus what error messages need to say where it points.
#[derive(Clone)]
pub(crate) struct Kube {
    pub client: Client,
    /// `context `x` (https://host:port)`, for messages.
    pub target: String,
}

impl Kube {
    pub(crate) async fn connect(access: &KubeAccess, base_dir: &Path) -> Result<Self, Failure> {
        let options = KubeConfigOptions {
            context: access.context.clone(),
            ..Default::default()
        };
        let (config, context) = match (&access.kubeconfig, &access.context) {
            (None, None) => {
                let config = Config::infer().await.map_err(|e| {
                    Failure::config(format!(
                        "no Kubernetes configuration: {e} (set KUBECONFIG, `kubeconfig:` or run in a pod)"
                    ))
                })?;
                (config, current_context())
            }
            (path, context) => {
                let (kubeconfig, source) = match path {
                    Some(p) => {
                        let p = crate::util::resolve_path(base_dir, p);
                        let kc = Kubeconfig::read_from(&p).map_err(|e| {
                            Failure::config(format!("cannot read kubeconfig {}: {e}", p.display()))
                        })?;
                        (kc, p.display().to_string())
                    }
                    None => {
                        let kc = Kubeconfig::read().map_err(|e| {
                            Failure::config(format!("cannot read the kubeconfig: {e}"))
                        })?;
                        (kc, kubeconfig_source())
                    }
                };
                if let Some(name) = context {
                    check_context(&kubeconfig, name, &source)?;
                }
                let used = context
                    .clone()
                    .or_else(|| kubeconfig.current_context.clone());
                let config = Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| Failure::config(format!("kubeconfig {source}: {e}")))?;
                (config, used)
            }
        };
        let target = match context {
            Some(c) => format!("context `{c}` ({})", config.cluster_url),
            None => config.cluster_url.to_string(),
        };
        let mut config = config;
        config.connect_timeout = Some(Duration::from_secs(10));
        let client = Client::try_from(config)
            .map_err(|e| Failure::config(format!("Kubernetes client for {target}: {e}")))?;
        Ok(Self { client, target })
    }

    pub(crate) fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Turns an API error into a step error: `doing` says what was attempted
    /// ("get deployment `web` in namespace `dr`"); `write` marks requests whose outcome is
    /// unknown when the connection breaks.
    pub(crate) fn error(&self, doing: &str, write: bool, e: kube::Error) -> Failure {
        match e {
            kube::Error::Api(status) => {
                let msg = status.message.trim();
                let (class, text) = match status.code {
                    401 => (
                        FailureClass::Config,
                        format!(
                            "unauthorised: {} rejected the credentials (to {doing}): {msg}",
                            self.target
                        ),
                    ),
                    403 => (FailureClass::Config, format!("forbidden: {msg}")),
                    409 if status.reason == "Conflict" => (
                        FailureClass::Throttled,
                        format!("conflict while trying to {doing} (retried): {msg}"),
                    ),
                    429 | 500..=599 => (
                        FailureClass::Throttled,
                        format!(
                            "the API server could not {doing} (HTTP {}): {msg}",
                            status.code
                        ),
                    ),
                    code => (
                        FailureClass::Config,
                        format!("cannot {doing}: {msg} (HTTP {code})"),
                    ),
                };
                Failure::new(class, text)
            }
            e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => {
                let chain = error_chain(&e);
                let never_sent = chain.contains("onnect") || chain.contains("dns error");
                let class = if write && !never_sent {
                    FailureClass::Ambiguous
                } else {
                    FailureClass::Connection
                };
                Failure::new(
                    class,
                    format!(
                        "Kubernetes API at {} unreachable (to {doing}): {chain}",
                        self.target
                    ),
                )
            }
            e => Failure::new(
                FailureClass::Other,
                format!("cannot {doing}: {}", error_chain(&e)),
            ),
        }
    }

    /// Reads a Deployment; when it is missing, the error lists what the namespace holds (or,
    /// when the namespace itself is missing, the namespaces).
    pub(crate) async fn deployment(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Deployment, Failure> {
        let api: Api<Deployment> = self.api(namespace);
        let doing = format!("get deployment `{name}` in namespace `{namespace}`");
        match api.get_opt(name).await {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(self.missing_deployment(namespace, name).await),
            Err(e) => Err(self.error(&doing, false, e)),
        }
    }

    /// The "not found" error for a Deployment, listing those that exist (or, when the
    /// namespace itself is missing, the namespaces).
    async fn missing_deployment(&self, namespace: &str, name: &str) -> Failure {
        if let Some(err) = self.missing_namespace(namespace).await {
            return err;
        }
        let names = self.names::<Deployment>(namespace).await;
        Failure::config(format!(
            "deployment `{name}` not found in namespace `{namespace}`; {}",
            listing("deployments there", name, &names)
        ))
    }

    /// `Some(error)` when `namespace` does not exist.
    pub(crate) async fn missing_namespace(&self, namespace: &str) -> Option<Failure> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.get_opt(namespace).await {
            Ok(Some(_)) | Err(_) => None,
            Ok(None) => {
                let names = match api.list(&ListParams::default()).await {
                    Ok(list) => list
                        .items
                        .into_iter()
                        .filter_map(|n| n.metadata.name)
                        .collect(),
                    Err(_) => Vec::new(),
                };
                Some(Failure::config(format!(
                    "namespace `{namespace}` not found on {}; {}",
                    self.target,
                    listing("namespaces", namespace, &names)
                )))
            }
        }
    }

    async fn names<K>(&self, namespace: &str) -> Vec<String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        match self.api::<K>(namespace).list(&ListParams::default()).await {
            Ok(list) => list
                .items
                .iter()
                .map(|d| d.meta().name.clone().unwrap_or_default())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// One line per pod of `selector` that is not ready, with its reason and its recent
    /// Warning events (what `kubectl describe` would make you look for).
    pub(crate) async fn diagnose_pods(&self, namespace: &str, selector: &str) -> Vec<String> {
        let pods: Api<Pod> = self.api(namespace);
        let Ok(list) = pods.list(&ListParams::default().labels(selector)).await else {
            return Vec::new();
        };
        let events: Api<Event> = self.api(namespace);
        let mut lines = Vec::new();
        for pod in list.items {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(reason) = pod_problem(&pod) else {
                continue;
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            lines.push(format!("pod {name}: {reason}"));
            let field = format!("involvedObject.name={name},type=Warning");
            if let Ok(evs) = events.list(&ListParams::default().fields(&field)).await {
                let mut evs = evs.items;
                evs.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
                for e in evs.iter().rev().take(3) {
                    lines.push(format!(
                        "  event {}: {}",
                        e.reason.as_deref().unwrap_or("?"),
                        e.message.as_deref().unwrap_or("").trim()
                    ));
                }
            }
        }
        lines
    }
}

impl Kube {
    /// What admission said when a controller's pod creation for `owner` was refused for good:
    /// a `FailedCreate` event whose message is Pod Security's (`violates PodSecurity`) or a
    /// webhook's denial. A quota or a missing ServiceAccount may clear up, so those wait.
    pub(crate) async fn pod_refusal(&self, namespace: &str, owner: &str) -> Option<String> {
        let field = format!("involvedObject.name={owner},reason=FailedCreate");
        self.refusal(namespace, &field).await
    }

    /// The ReplicaSet of a Deployment's current revision (the one its rollout waits
    /// for), by the `deployment.kubernetes.io/revision` annotation both carry.
    pub(crate) async fn current_replicaset(
        &self,
        namespace: &str,
        d: &Deployment,
    ) -> Option<String> {
        const REVISION: &str = "deployment.kubernetes.io/revision";
        let revision = d.metadata.annotations.as_ref()?.get(REVISION)?.clone();
        let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> = self.api(namespace);
        let list = sets
            .list(&ListParams::default().labels(&selector_string(d)))
            .await
            .ok()?;
        list.items.into_iter().find_map(|rs| {
            let owned = rs
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Deployment" && Some(&o.name) == d.metadata.name.as_ref());
            let same = rs.metadata.annotations.as_ref()?.get(REVISION) == Some(&revision);
            (owned && same).then_some(rs.metadata.name?)
        })
    }

    async fn refusal(&self, namespace: &str, field: &str) -> Option<String> {
        let events: Api<Event> = self.api(namespace);
        let list = events
            .list(&ListParams::default().fields(field))
            .await
            .ok()?;
        list.items.into_iter().find_map(|e| {
            let message = e.message.unwrap_or_default();
            let permanent = message.contains("violates PodSecurity")
                || message.contains("admission webhook") && message.contains("denied");
            permanent.then(|| message.trim().to_string())
        })
    }
}

/// Why a pod is not ready, from its status, or `None` when it is ready or finished.
pub(crate) fn pod_problem(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if phase == "Succeeded" {
        return None;
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        return None;
    }
    for cs in status.container_statuses.iter().flatten() {
        let Some(state) = &cs.state else { continue };
        if let Some(w) = &state.waiting {
            let reason = w.reason.as_deref().unwrap_or("Waiting");
            return Some(match w.message.as_deref() {
                Some(m) if !m.is_empty() => format!("{reason} ({}: {m})", cs.name),
                _ => format!("{reason} ({})", cs.name),
            });
        }
        if let Some(t) = &state.terminated {
            return Some(format!(
                "{} ({}: exit code {})",
                t.reason.as_deref().unwrap_or("Terminated"),
                cs.name,
                t.exit_code
            ));
        }
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled" && c.status == "False" {
            return Some(format!(
                "Pending: {}",
                c.message
                    .as_deref()
                    .or(c.reason.as_deref())
                    .unwrap_or("not scheduled")
            ));
        }
    }
    Some(format!("{phase}, not ready"))
}

/// Picks a container: the named one, else the only or first one.
pub(crate) fn pick_container<'a>(
    containers: &'a [Container],
    wanted: Option<&str>,
    owner: &str,
) -> Result<&'a Container, Failure> {
    match wanted {
        Some(name) => containers.iter().find(|c| c.name == name).ok_or_else(|| {
            let names: Vec<String> = containers.iter().map(|c| c.name.clone()).collect();
            Failure::config(format!(
                "{owner} has no container `{name}`; {}",
                listing("its containers", name, &names)
            ))
        }),
        None => containers
            .first()
            .ok_or_else(|| Failure::config(format!("{owner} has no containers"))),
    }
}

/// `label=value,...` from a Deployment's `matchLabels` (the form list calls accept).
pub(crate) fn selector_string(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// "what there: a, b, c (did you mean `b`?)", or "there are none".
pub(crate) fn listing(what: &str, wanted: &str, names: &[String]) -> String {
    if names.is_empty() {
        return format!("there are no {}", what.trim_end_matches(" there"));
    }
    let shown: Vec<&str> = names.iter().take(20).map(String::as_str).collect();
    let more = if names.len() > shown.len() {
        format!(" and {} more", names.len() - shown.len())
    } else {
        String::new()
    };
    let hint = crate::diag::did_you_mean(wanted, names.iter().map(String::as_str))
        .map(|h| format!(" ({h})"))
        .unwrap_or_default();
    format!("{what}: {}{more}{hint}", shown.join(", "))
}

fn check_context(kc: &Kubeconfig, name: &str, source: &str) -> Result<(), Failure> {
    if kc.contexts.iter().any(|c| c.name == name) {
        return Ok(());
    }
    let names: Vec<String> = kc.contexts.iter().map(|c| c.name.clone()).collect();
    Err(Failure::config(format!(
        "context `{name}` not found in {source}; {}",
        listing("contexts there", name, &names)
    )))
}

fn kubeconfig_source() -> String {
    std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".to_string())
}

fn current_context() -> Option<String> {
    Kubeconfig::read().ok().and_then(|kc| kc.current_context)
}

/// Waits `period` unless the step is cancelled first.
pub(crate) async fn pause(cancel: &tokio_util::sync::CancellationToken, period: Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(period) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::listing;

    #[test]
    fn listing_names_what_exists_and_suggests() {
        let names = vec!["web".to_string(), "worker".to_string()];
        assert_eq!(
            listing("deployments there", "webb", &names),
            "deployments there: web, worker (did you mean `web`?)"
        );
        assert_eq!(
            listing("deployments there", "x", &[]),
            "there are no deployments"
        );
    }
}
