//! A real Kubernetes API for tests: the cluster named by `DRRUN_TEST_KUBECONFIG`, or else
//! one started here with `scripts/test-cluster run` (kube-apiserver, kube-controller-manager
//! and etcd of a current release built from Go modules, plus tests/cli/support/kubelet.py playing the kubelet).
//! One cluster serves the whole test process; every test works in its own namespace.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

/// Images that exist on real registries, so the tests mean the same on a real cluster.
pub(crate) const PAUSE_OLD: &str = "registry.k8s.io/pause:3.9";
pub(crate) const PAUSE_NEW_TAG: &str = "3.10";
pub(crate) const BUSYBOX: &str = "busybox:1.36";
/// An image no node can pull (the kubelet stand-in reports `ImagePullBackOff`, as a real one would).
pub(crate) const UNPULLABLE: &str = "registry.invalid/drrun/missing:1.0";

pub(crate) struct TestCluster {
    pub kubeconfig: PathBuf,
}

static CLUSTER: OnceLock<TestCluster> = OnceLock::new();

pub(crate) fn cluster() -> &'static TestCluster {
    CLUSTER.get_or_init(|| {
        if let Some(path) = std::env::var_os("DRRUN_TEST_KUBECONFIG") {
            return TestCluster {
                kubeconfig: PathBuf::from(path),
            };
        }
        start_local()
    })
}

fn start_local() -> TestCluster {
    let dir = tempfile::Builder::new()
        .prefix("drrun-kube-")
        .tempdir()
        .unwrap()
        .keep();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/test-cluster");
    let log = std::fs::File::create(dir.join("cluster.log")).unwrap();
    let thread_dir = dir.clone();
    // The cluster must go when this test process does, however it ends. PR_SET_PDEATHSIG
    // fires when the *thread* that spawned the child exits, so spawn it from a thread that
    // lives as long as the process.
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&script);
        cmd.arg("run")
            .arg(&thread_dir)
            .env("DRRUN_CLUSTER_CLEANUP", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("scripts/test-cluster starts");
        let _ = child.wait();
    });
    let start = Instant::now();
    while !dir.join("ready").exists() {
        let log = std::fs::read_to_string(dir.join("cluster.log")).unwrap_or_default();
        assert!(
            !log.contains("error:"),
            "the test Kubernetes cluster failed to start (build it once with `scripts/test-cluster build`, \
             or set DRRUN_TEST_KUBECONFIG):\n{log}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the test Kubernetes cluster was not ready after 300 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    TestCluster {
        kubeconfig: dir.join("kubeconfig"),
    }
}

/// Runs `f` with a fresh client on a runtime of its own (tests are synchronous).
pub(crate) fn with_client<T, F: Future<Output = T>>(
    kubeconfig: &Path,
    f: impl FnOnce(Client) -> F,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kc = Kubeconfig::read_from(kubeconfig).unwrap();
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        f(Client::try_from(config).unwrap()).await
    })
}

/// A namespace of one test's own, deleted when dropped.
pub(crate) struct TestNamespace {
    pub name: String,
    kubeconfig: PathBuf,
}

impl TestCluster {
    pub(crate) fn client<T, F: Future<Output = T>>(&self, f: impl FnOnce(Client) -> F) -> T {
        with_client(&self.kubeconfig, f)
    }

    pub(crate) fn namespace(&self, label: &str) -> TestNamespace {
        self.namespace_labelled(label, &json!({}))
    }

    /// A namespace with `labels` (Pod Security's `pod-security.kubernetes.io/enforce`...).
    pub(crate) fn namespace_labelled(
        &self,
        label: &str,
        labels: &serde_json::Value,
    ) -> TestNamespace {
        let name = format!("drrun-{label}-{:x}", rand_suffix());
        let ns: Namespace =
            serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } }))
                .unwrap();
        self.client(|c| async move {
            Api::<Namespace>::all(c)
                .create(&PostParams::default(), &ns)
                .await
                .unwrap()
        });
        TestNamespace {
            name,
            kubeconfig: self.kubeconfig.clone(),
        }
    }

    /// A kubeconfig for the same cluster acting as `user` (impersonation), who has no roles.
    pub(crate) fn kubeconfig_as(&self, dir: &Path, user: &str) -> PathBuf {
        let mut kc = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        for a in &mut kc.auth_infos {
            if let Some(info) = a.auth_info.as_mut() {
                info.impersonate = Some(user.to_string());
            }
        }
        let path = dir.join(format!("{user}.kubeconfig"));
        std::fs::write(&path, serde_yaml_ng::to_string(&kc).unwrap()).unwrap();
        path
    }
}

impl TestCluster {
    /// A kubeconfig for the same cluster whose credentials are a token it will reject.
    pub(crate) fn kubeconfig_with_bad_token(&self, dir: &Path) -> PathBuf {
        let kc = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let mut doc: serde_yaml_ng::Value = serde_yaml_ng::to_value(&kc).unwrap();
        for user in doc["users"].as_sequence_mut().unwrap() {
            user["user"] = serde_yaml_ng::from_str("{ token: drrun-not-a-valid-token }").unwrap();
        }
        let path = dir.join("bad-token.kubeconfig");
        std::fs::write(&path, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
        path
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() & 0xff_ffff
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        with_client(&self.kubeconfig, |c| async move {
            let _ = Api::<Namespace>::all(c)
                .delete(&name, &DeleteParams::default())
                .await;
        });
    }
}

/// Creates what a multi-document YAML holds (Roles and RoleBindings, as `drrun rbac`
/// prints), as `kubectl apply -f` would, each in its own namespace; the API server
/// validates them.
pub(crate) fn apply_rbac(yaml: &str) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use serde::Deserialize;
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    cluster().client(|c| async move {
        let pp = PostParams::default();
        for doc in docs {
            let ns = doc["metadata"]["namespace"].as_str().unwrap().to_string();
            match doc["kind"].as_str().unwrap() {
                "Role" => {
                    let role: Role = serde_json::from_value(doc).unwrap();
                    Api::<Role>::namespaced(c.clone(), &ns)
                        .create(&pp, &role)
                        .await
                        .unwrap();
                }
                "RoleBinding" => {
                    let b: RoleBinding = serde_json::from_value(doc).unwrap();
                    Api::<RoleBinding>::namespaced(c.clone(), &ns)
                        .create(&pp, &b)
                        .await
                        .unwrap();
                }
                other => panic!("drrun rbac printed a {other}"),
            }
        }
    });
}

impl TestNamespace {
    fn client<T, F: Future<Output = T>>(&self, f: impl FnOnce(Client) -> F) -> T {
        with_client(&self.kubeconfig, f)
    }

    /// A Deployment `name` (labels `app=name`, one container `app`).
    pub(crate) fn create_deployment(
        &self,
        name: &str,
        image: &str,
        replicas: i32,
        command: &[&str],
    ) {
        let mut container = json!({ "name": "app", "image": image });
        if !command.is_empty() {
            container["command"] = json!(command);
        }
        self.create_deployment_with(
            name,
            replicas,
            json!({
                "containers": [container],
                "terminationGracePeriodSeconds": 0,
                "enableServiceLinks": false,
            }),
        );
    }

    /// A Deployment `name` (labels `app=name`) with this pod spec.
    pub(crate) fn create_deployment_with(
        &self,
        name: &str,
        replicas: i32,
        pod_spec: serde_json::Value,
    ) {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "app": name } },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": name } },
                "template": {
                    "metadata": { "labels": { "app": name } },
                    "spec": pod_spec,
                }
            }
        }))
        .unwrap();
        let ns = self.name.clone();
        self.client(|c| async move {
            Api::<Deployment>::namespaced(c, &ns)
                .create(&PostParams::default(), &d)
                .await
                .unwrap()
        });
    }

    pub(crate) fn deployment(&self, name: &str) -> Deployment {
        let (ns, name) = (self.name.clone(), name.to_string());
        self.client(|c| async move {
            Api::<Deployment>::namespaced(c, &ns)
                .get(&name)
                .await
                .unwrap()
        })
    }

    /// `(image of container app, spec.replicas, ready replicas)`.
    pub(crate) fn deployment_state(&self, name: &str) -> (String, i32, i32) {
        let d = self.deployment(name);
        let spec = d.spec.unwrap();
        let image = spec.template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap();
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        (image, spec.replicas.unwrap_or(1), ready)
    }

    /// Waits until the Deployment has `replicas` ready pods of its current template.
    pub(crate) fn wait_ready(&self, name: &str, replicas: i32) {
        let start = Instant::now();
        loop {
            let d = self.deployment(name);
            let s = d.status.clone().unwrap_or_default();
            if s.observed_generation >= d.metadata.generation
                && s.updated_replicas.unwrap_or(0) == replicas
                && s.ready_replicas.unwrap_or(0) == replicas
                && s.replicas.unwrap_or(0) == replicas
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "deployment {name} not ready: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Names of the Jobs in the namespace.
    pub(crate) fn jobs(&self) -> Vec<String> {
        let ns = self.name.clone();
        self.client(|c| async move {
            Api::<Job>::namespaced(c, &ns)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|j| j.metadata.deletion_timestamp.is_none())
                .filter_map(|j| j.metadata.name)
                .collect()
        })
    }
}

impl TestNamespace {
    /// A kubeconfig whose credential is a token the TokenRequest API issued for a new
    /// ServiceAccount `name` of this namespace, bound to the built-in `edit` role here only:
    /// what a pod (a CronJob running drrun) holds. Returns the path and the token.
    pub(crate) fn service_account_kubeconfig(&self, dir: &Path, name: &str) -> (PathBuf, String) {
        self.service_account_with(dir, name, true)
    }

    /// A ServiceAccount `name` bound to nothing (its grants are the test's to make), and
    /// a kubeconfig with a TokenRequest token for it.
    pub(crate) fn unbound_service_account(&self, dir: &Path, name: &str) -> (PathBuf, String) {
        self.service_account_with(dir, name, false)
    }

    fn service_account_with(&self, dir: &Path, name: &str, edit: bool) -> (PathBuf, String) {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::ServiceAccount;
        use k8s_openapi::api::rbac::v1::RoleBinding;
        let (ns, sa) = (self.name.clone(), name.to_string());
        let token = self.client(|c| async move {
            let pp = PostParams::default();
            let account: ServiceAccount =
                serde_json::from_value(json!({ "metadata": { "name": sa } })).unwrap();
            Api::<ServiceAccount>::namespaced(c.clone(), &ns)
                .create(&pp, &account)
                .await
                .unwrap();
            if edit {
            let binding: RoleBinding = serde_json::from_value(json!({
                "metadata": { "name": format!("{sa}-edit") },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit" },
                "subjects": [{ "kind": "ServiceAccount", "name": sa, "namespace": ns }],
            }))
            .unwrap();
            Api::<RoleBinding>::namespaced(c.clone(), &ns)
                .create(&pp, &binding)
                .await
                .unwrap();
            }
            let request: TokenRequest = serde_json::from_value(json!({
                "spec": { "audiences": [], "expirationSeconds": 3600 }
            }))
            .unwrap();
            let issued: TokenRequest = Api::<ServiceAccount>::namespaced(c, &ns)
                .create_subresource(
                    "token",
                    &sa,
                    &pp,
                    &request,
                )
                .await
                .unwrap();
            issued.status.unwrap().token
        });
        let kc = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let mut doc: serde_yaml_ng::Value = serde_yaml_ng::to_value(&kc).unwrap();
        for user in doc["users"].as_sequence_mut().unwrap() {
            user["user"] = serde_yaml_ng::Value::Mapping(
                [("token".into(), token.clone().into())]
                    .into_iter()
                    .collect(),
            );
        }
        let path = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
        (path, token)
    }
}

impl TestNamespace {
    /// A `StatefulSet` `name` with the pause image.
    pub(crate) fn create_statefulset(&self, name: &str, replicas: i32) {
        let s: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "selector": { "matchLabels": { "app": name } },
                "template": {
                    "metadata": { "labels": { "app": name } },
                    "spec": {
                        "containers": [{ "name": "app", "image": PAUSE_OLD }],
                        "terminationGracePeriodSeconds": 0,
                    }
                }
            }
        }))
        .unwrap();
        let ns = self.name.clone();
        self.client(|c| async move {
            Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(c, &ns)
                .create(&PostParams::default(), &s)
                .await
                .unwrap()
        });
    }

    /// `(spec.replicas, status.replicas)` of a `StatefulSet`.
    pub(crate) fn statefulset_replicas(&self, name: &str) -> (i32, i32) {
        let (ns, name) = (self.name.clone(), name.to_string());
        let s = self.client(|c| async move {
            Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(c, &ns)
                .get(&name)
                .await
                .unwrap()
        });
        (
            s.spec.unwrap().replicas.unwrap_or(1),
            s.status.map_or(0, |s| s.replicas),
        )
    }

    /// Sets `spec.progressDeadlineSeconds` of a Deployment.
    pub(crate) fn set_progress_deadline(&self, name: &str, seconds: i32) {
        let (ns, name) = (self.name.clone(), name.to_string());
        self.client(|c| async move {
            Api::<Deployment>::namespaced(c, &ns)
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(
                        json!({ "spec": { "progressDeadlineSeconds": seconds } }),
                    ),
                )
                .await
                .unwrap()
        });
    }

    /// The image of a Job's container.
    pub(crate) fn job_image(&self, name: &str) -> String {
        let (ns, name) = (self.name.clone(), name.to_string());
        let j = self
            .client(|c| async move { Api::<Job>::namespaced(c, &ns).get(&name).await.unwrap() });
        j.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    }
}
