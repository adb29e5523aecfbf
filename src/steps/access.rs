//! What a step asks of the Kubernetes API, for `drrun rbac`: the verbs and resources its
//! requests use, in the namespace it names. Each kube kind lists its own, next to the
//! code that makes the requests; error paths that read more (the namespaces, to say
//! which exist) degrade to a plainer message when RBAC refuses them, and are not listed.

/// One resource in one namespace and the verbs used on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiRule {
    pub namespace: String,
    /// API group: `""` (core), `apps`, `batch`.
    pub group: &'static str,
    /// `deployments`, `deployments/scale`, `pods/log`, ...
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

pub(crate) fn rule(
    namespace: &str,
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> ApiRule {
    ApiRule {
        namespace: namespace.to_string(),
        group,
        resource,
        verbs,
    }
}

/// A Job run from a Deployment's pod template or a CronJob's job template (`kube.job`,
/// and `kube.deploy`'s `pre_jobs`): the template read, the Job created, polled and deleted, its pods' logs
/// kept, and admission refusals read from the events.
pub(crate) fn job_rules(namespace: &str, from_cronjob: bool) -> Vec<ApiRule> {
    vec![
        if from_cronjob {
            rule(namespace, "batch", "cronjobs", &["get"])
        } else {
            rule(namespace, "apps", "deployments", &["get"])
        },
        rule(namespace, "batch", "jobs", &["create", "get", "delete"]),
        rule(namespace, "", "pods", &["list"]),
        rule(namespace, "", "pods/log", &["get"]),
        rule(namespace, "", "events", &["list"]),
    ]
}
