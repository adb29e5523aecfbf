//! `kube.*` against a real kube-apiserver and kube-controller-manager (tests/cli/support/kube.rs).

use std::path::{Path, PathBuf};

use crate::support::kube::{BUSYBOX, PAUSE_NEW_TAG, PAUSE_OLD, UNPULLABLE, cluster};
use crate::support::{Out, drrun, journal, run_cmd};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `drrun ARGS PLAYBOOK --state-dir DIR/state` with `kubeconfig` as KUBECONFIG.
fn drrun_kube(dir: &Path, kubeconfig: &Path, args: &[&str], pb: &Path) -> Out {
    let state = dir.join("state");
    run_cmd(
        drrun()
            .current_dir(dir)
            .env("KUBECONFIG", kubeconfig)
            .args(args)
            .arg(pb)
            .arg("--state-dir")
            .arg(&state),
    )
}

fn plan(dir: &Path, kubeconfig: &Path, pb: &Path) -> Out {
    run_cmd(
        drrun()
            .current_dir(dir)
            .env("KUBECONFIG", kubeconfig)
            .arg("plan")
            .arg(pb),
    )
}

fn outputs(dir: &Path, step: &str) -> serde_json::Value {
    journal(&dir.join("state"))
        .into_iter()
        .find(|r| r["type"] == "step_succeeded" && r["step"] == step)
        .map_or_else(|| panic!("no outputs for {step}"), |r| r["outputs"].clone())
}

#[test]
fn reads_the_production_tag_deploys_it_and_scales_everything_back_to_zero() {
    let c = cluster();
    let prod = c.namespace("prod");
    let dr = c.namespace("dr");
    let prod_image = format!("registry.k8s.io/pause:{PAUSE_NEW_TAG}");
    prod.create_deployment("app", &prod_image, 1, &[]);
    dr.create_deployment("app", PAUSE_OLD, 0, &[]);
    dr.create_deployment("worker", PAUSE_OLD, 2, &[]);
    dr.create_statefulset("cache", 1);
    dr.wait_ready("worker", 2);

    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "drill.yaml",
        &format!(
            r#"
version: 1
name: kube-drill
guards:
  kube_namespaces: ["{prod}"]
steps:
  prod_tag:
    kind: kube.image
    with: {{ namespace: "{prod}", deployment: app }}
  deploy:
    kind: kube.deploy
    with:
      namespace: "{dr}"
      deployments: [app]
      tag: "{{{{ steps.prod_tag.outputs.tag }}}}"
      replicas: 2
      wait: 60s
finally:
  scale_down:
    kind: kube.scale
    with: {{ namespace: "{dr}", all: true, kinds: [deployments, statefulsets], replicas: 0, wait: 60s }}
"#,
            prod = prod.name,
            dr = dr.name
        ),
    );

    // The live preview reads production's tag, then previews the deploy with it: the
    // real image change is shown and sent as a server-side dry run.
    let p = plan(dir.path(), &c.kubeconfig, &pb);
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    assert!(
        p.stdout
            .contains(&format!("runs {prod_image} (tag `{PAUSE_NEW_TAG}`)")),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains(&format!(" tag={PAUSE_NEW_TAG} ")),
        "the rendered setting shows the real tag: {}",
        p.stdout
    );
    assert!(
        p.stdout
            .contains(&format!("container app: {PAUSE_OLD} -> {prod_image}")),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains("server-side dry run: accepted"),
        "{}",
        p.stdout
    );
    assert!(p.stdout.contains("replicas 0 -> 2"), "{}", p.stdout);
    assert!(
        p.stdout.contains("deployment/worker in ") && p.stdout.contains("replicas 2 -> 0"),
        "{}",
        p.stdout
    );

    assert_eq!(
        dr.deployment_state("app").0,
        PAUSE_OLD,
        "plan changed nothing"
    );

    let out = drrun_kube(dir.path(), &c.kubeconfig, &[], &pb);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    let tag = outputs(dir.path(), "prod_tag");
    assert_eq!(tag["tag"], PAUSE_NEW_TAG);
    assert_eq!(tag["repository"], "registry.k8s.io/pause");
    assert_eq!(tag["registry"], "registry.k8s.io");
    assert_eq!(tag["container"], "app");

    let deploy = outputs(dir.path(), "deploy");
    assert_eq!(deploy["images_before"]["app/app"], PAUSE_OLD);
    assert_eq!(deploy["images_after"]["app/app"], prod_image.as_str());
    assert_eq!(deploy["image"], prod_image.as_str());
    // Ready replicas are measured when the rollout completed, before `finally`.
    assert_eq!(deploy["ready_replicas"]["app"], 2);

    let scale = outputs(dir.path(), "scale_down");
    assert_eq!(scale["previous"]["deployment/app"], 2);
    assert_eq!(scale["previous"]["deployment/worker"], 2);
    assert_eq!(scale["previous"]["statefulset/cache"], 1);
    assert_eq!(scale["scaled"].as_array().unwrap().len(), 3);

    // What the cluster now holds: the production image at zero replicas, everything at zero.
    let (image, replicas, ready) = dr.deployment_state("app");
    assert_eq!(
        (image.as_str(), replicas, ready),
        (prod_image.as_str(), 0, 0)
    );
    assert_eq!(dr.deployment_state("worker").1, 0);
    assert_eq!(dr.statefulset_replicas("cache"), (0, 0));
    // Production was only read.
    assert_eq!(prod.deployment_state("app").1, 1);
    let managers: Vec<String> = dr
        .deployment("app")
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"drrun".to_string()), "{managers:?}");
}

#[test]
fn a_stuck_rollout_names_the_pods_and_why() {
    let c = cluster();
    let ns = c.namespace("stuck");
    ns.create_deployment("app", PAUSE_OLD, 1, &[]);
    ns.create_deployment("doomed", PAUSE_OLD, 1, &[]);
    ns.wait_ready("app", 1);
    ns.wait_ready("doomed", 1);
    ns.set_progress_deadline("doomed", 2);
    let dir = tempfile::tempdir().unwrap();
    let playbook = |deployment: &str, wait: &str| {
        write(
            dir.path(),
            &format!("{deployment}.yaml"),
            &format!(
                r#"
version: 1
name: stuck
steps:
  deploy:
    kind: kube.deploy
    with: {{ namespace: "{}", deployments: [{deployment}], image: "{UNPULLABLE}", wait: {wait} }}
"#,
                ns.name
            ),
        )
    };

    // Our own wait runs out first.
    let out = drrun_kube(dir.path(), &c.kubeconfig, &[], &playbook("app", "6s"));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("did not finish within 6s"), "{all}");
    assert!(
        all.contains("1 old replicas are pending termination"),
        "{all}"
    );
    assert!(all.contains("pod app-"), "{all}");
    assert!(all.contains("ImagePull"), "{all}");
    assert!(all.contains(UNPULLABLE), "{all}");

    // The controller gives up first: ProgressDeadlineExceeded, also with the pod reasons.
    let dir2 = tempfile::tempdir().unwrap();
    let pb = playbook("doomed", "2m");
    let started = std::time::Instant::now();
    let out = drrun_kube(dir2.path(), &c.kubeconfig, &[], &pb);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("exceeded its progress deadline"), "{all}");
    assert!(
        all.contains("pod doomed-") && all.contains("ImagePull"),
        "{all}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(100),
        "gave up only at the wait limit"
    );
}

#[test]
fn guarded_namespaces_are_refused_before_any_request() {
    // A "cluster" that only counts connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write(
        dir.path(),
        "kubeconfig",
        &format!(
            r#"
apiVersion: v1
kind: Config
clusters: [{{ name: c, cluster: {{ server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true }} }}]
users: [{{ name: u, user: {{ token: not-a-real-token }} }}]
contexts: [{{ name: prod, context: {{ cluster: c, user: u }} }}]
current-context: prod
"#
        ),
    );
    for (kind, with) in [
        ("kube.scale", "all: true, replicas: 0"),
        ("kube.deploy", "deployments: [app], tag: v2"),
        ("kube.job", "from_deployment: app, command: [migrate]"),
    ] {
        let pb = write(
            dir.path(),
            "guarded.yaml",
            &format!(
                r#"
version: 1
name: guarded
guards: {{ kube_namespaces: ["prod-*"] }}
steps:
  touch:
    kind: {kind}
    with: {{ namespace: prod-site, {with} }}
"#
            ),
        );
        // Known before the run, so refused before step 1 with the setting's position
        // (exit 2), by `plan` and `run` alike.
        let p = plan(dir.path(), &kubeconfig, &pb);
        assert!(
            p.stderr
                .contains("refusing to touch Kubernetes namespace `prod-site`")
                && p.stderr
                    .contains("guarded.yaml:8:24 (steps.touch.with.namespace)"),
            "{kind}: {}{}",
            p.stdout,
            p.stderr
        );
        let out = drrun_kube(dir.path(), &kubeconfig, &["run"], &pb);
        assert_eq!(out.code, 2, "{kind}: {}{}", out.stdout, out.stderr);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            all.contains("refusing to touch Kubernetes namespace `prod-site`: it matches `prod-*` in guards.kube_namespaces; nothing was sent"),
            "{kind}: {all}"
        );
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a request reached the API server: {other:?}"),
    }
}

#[test]
fn jobs_run_from_a_deployment_template_and_report_success_and_failure() {
    let c = cluster();
    let ns = c.namespace("jobs");
    ns.create_deployment("app", BUSYBOX, 0, &["sleep", "3600"]);
    let dir = tempfile::tempdir().unwrap();
    let job = |name: &str, script: &str, extra: &str| {
        write(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                r#"
version: 1
name: {name}
steps:
  job:
    kind: kube.job
    with:
      namespace: "{}"
      from_deployment: app
      command: [sh, -c, "{script}"]
      wait: 60s
      {extra}
"#,
                ns.name
            ),
        )
    };

    let out = drrun_kube(
        dir.path(),
        &c.kubeconfig,
        &[],
        &job("ok", "echo migrating; echo 42 migrations applied", ""),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let o = outputs(dir.path(), "job");
    assert_eq!(o["succeeded"], true);
    assert_eq!(o["logs_tail"], "migrating\n42 migrations applied");
    assert!(o["job_name"].as_str().unwrap().starts_with("app-drrun-"));
    assert!(ns.jobs().is_empty(), "the job is deleted afterwards");

    let dir2 = tempfile::tempdir().unwrap();
    let pb = job(
        "bad",
        "echo applying 0042; echo relation wagtailcore_page does not exist; exit 3",
        "keep: true",
    );
    let out = drrun_kube(dir2.path(), &c.kubeconfig, &[], &pb);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("BackoffLimitExceeded"), "{all}");
    assert!(
        all.contains("relation wagtailcore_page does not exist"),
        "the log tail is in the error: {all}"
    );
    assert!(all.contains("exit code 3"), "{all}");
    let kept = ns.jobs();
    assert_eq!(kept.len(), 1, "keep: true keeps the failed job");
    assert_eq!(ns.job_image(&kept[0]), BUSYBOX);
}

#[test]
fn a_restricted_pod_security_namespace_admits_a_compliant_job_and_names_why_it_refuses_another() {
    let c = cluster();
    let ns = c.namespace_labelled(
        "psa",
        &serde_json::json!({ "pod-security.kubernetes.io/enforce": "restricted" }),
    );
    // As a hardened production template is written: non-root, no privilege escalation,
    // every capability dropped, the runtime's seccomp profile.
    let restricted_container = serde_json::json!({
        "name": "app", "image": BUSYBOX, "command": ["sleep", "3600"],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
        },
    });
    ns.create_deployment_with(
        "hardened",
        0,
        serde_json::json!({
            "securityContext": { "runAsNonRoot": true, "runAsUser": 10001, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [restricted_container],
            "terminationGracePeriodSeconds": 0,
        }),
    );
    // A Deployment object is admitted with a warning whatever its template says; its pods
    // would not be, nor would a Job's.
    ns.create_deployment("plain", BUSYBOX, 0, &["sleep", "3600"]);
    let dir = tempfile::tempdir().unwrap();
    let job = |from: &str| {
        write(
            dir.path(),
            &format!("{from}.yaml"),
            &format!(
                r#"
version: 1
name: psa-{from}
steps:
  job:
    kind: kube.job
    with:
      namespace: "{}"
      from_deployment: {from}
      command: [sh, -c, "echo migrated"]
      wait: 5m
"#,
                ns.name
            ),
        )
    };

    let out = drrun_kube(dir.path(), &c.kubeconfig, &[], &job("hardened"));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(outputs(dir.path(), "job")["logs_tail"], "migrated");

    let dir2 = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = drrun_kube(dir2.path(), &c.kubeconfig, &[], &job("plain"));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("could not create its pod"), "{all}");
    assert!(
        all.contains("violates PodSecurity \"restricted:latest\""),
        "the admission message itself: {all}"
    );
    // Failing with the admission message, not waiting out `wait: 5m`.
    assert!(!all.contains("did not finish within"), "{all}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(240),
        "{all}"
    );

    // A rollout there: the hardened template comes up, the plain one fails with the
    // admission message as soon as its ReplicaSet is refused pods.
    let deploy = |from: &str| {
        write(
            dir.path(),
            &format!("deploy-{from}.yaml"),
            &format!(
                "version: 1\nname: psa-deploy-{from}\nsteps:\n  deploy:\n    kind: kube.deploy\n    with: {{ namespace: \"{}\", deployments: [{from}], tag: \"1.37\", replicas: 1, wait: 5m }}\n",
                ns.name
            ),
        )
    };
    let dir3 = tempfile::tempdir().unwrap();
    let out = drrun_kube(dir3.path(), &c.kubeconfig, &[], &deploy("hardened"));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let dir4 = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = drrun_kube(dir4.path(), &c.kubeconfig, &[], &deploy("plain"));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("cannot create its pods") && all.contains("violates PodSecurity"),
        "{all}"
    );
    assert!(!all.contains("did not finish within"), "{all}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(240),
        "{all}"
    );
}

#[test]
fn a_service_account_token_from_token_request_is_enough_to_drill_its_namespace() {
    let c = cluster();
    let ns = c.namespace("sa");
    ns.create_deployment("app", PAUSE_OLD, 1, &[]);
    ns.wait_ready("app", 1);
    let dir = tempfile::tempdir().unwrap();
    let (kubeconfig, token) = ns.service_account_kubeconfig(dir.path(), "drrun");
    let pb = write(
        dir.path(),
        "sa.yaml",
        &format!(
            r#"
version: 1
name: service-account
steps:
  tag:
    kind: kube.image
    with: {{ namespace: "{ns}", deployment: app, container: app }}
  deploy:
    kind: kube.deploy
    with:
      namespace: "{ns}"
      deployments: [app]
      tag: "{{{{ steps.tag.outputs.tag }}}}"
      wait: 60s
finally:
  down:
    kind: kube.scale
    with: {{ namespace: "{ns}", all: true, replicas: 0 }}
"#,
            ns = ns.name
        ),
    );
    // `plan` sends its server-side dry runs with the same bound token.
    let out = plan(dir.path(), &kubeconfig, &pb);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = drrun_kube(dir.path(), &kubeconfig, &[], &pb);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(outputs(dir.path(), "tag")["tag"], "3.9");
    assert_eq!(ns.deployment_state("app").1, 0, "finally scaled it down");
    // The token is the pod's credential, not drrun's to keep: nothing under the state
    // directory holds it.
    for entry in walk(&dir.path().join("state")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "{} holds the token",
            entry.display()
        );
    }

    // The role is bound in this namespace only: another one is forbidden, and said so.
    let other = c.namespace("sa-other");
    other.create_deployment("app", PAUSE_OLD, 0, &[]);
    let pb = write(
        dir.path(),
        "other.yaml",
        &format!(
            "version: 1\nname: other\nsteps:\n  tag:\n    kind: kube.image\n    with: {{ namespace: \"{}\", deployment: app }}\n",
            other.name
        ),
    );
    let dir2 = tempfile::tempdir().unwrap();
    let out = drrun_kube(dir2.path(), &kubeconfig, &[], &pb);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("system:serviceaccount:"), "{all}");
    assert!(
        all.contains("forbidden") || all.contains("Forbidden"),
        "{all}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn pre_jobs_run_with_the_new_image_before_the_rollout() {
    let c = cluster();
    let ns = c.namespace("prejob");
    ns.create_deployment("app", BUSYBOX, 1, &["sleep", "3600"]);
    ns.wait_ready("app", 1);
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "deploy.yaml",
        &format!(
            r#"
version: 1
name: prejob
steps:
  deploy:
    kind: kube.deploy
    with:
      namespace: "{}"
      deployments: [app]
      tag: "1.37"
      wait: 60s
      pre_jobs:
        - {{ from_deployment: app, command: [sh, -c, "echo migrated"], name: migrate, keep: true }}
"#,
            ns.name
        ),
    );
    let out = drrun_kube(dir.path(), &c.kubeconfig, &[], &pb);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let o = outputs(dir.path(), "deploy");
    assert_eq!(o["pre_jobs"][0]["succeeded"], true);
    assert_eq!(o["pre_jobs"][0]["logs_tail"], "migrated");
    assert_eq!(o["images_after"]["app/app"], "busybox:1.37");
    let jobs = ns.jobs();
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].starts_with("migrate-"), "{jobs:?}");
    assert_eq!(
        ns.job_image(&jobs[0]),
        "busybox:1.37",
        "migrations run the new code"
    );
    assert_eq!(ns.deployment_state("app"), ("busybox:1.37".into(), 1, 1));
}

#[test]
fn plan_sends_writes_as_server_side_dry_runs_only() {
    let c = cluster();
    let ns = c.namespace("dryrun");
    ns.create_deployment("app", PAUSE_OLD, 1, &[]);
    ns.wait_ready("app", 1);
    let dir = tempfile::tempdir().unwrap();
    let playbook = |image: &str| {
        write(
            dir.path(),
            "plan.yaml",
            &format!(
                r#"
version: 1
name: dryrun
steps:
  deploy:
    kind: kube.deploy
    with: {{ namespace: "{ns}", deployments: [app], image: "{image}" }}
  scale:
    kind: kube.scale
    with: {{ namespace: "{ns}", names: [app], replicas: 0 }}
"#,
                ns = ns.name
            ),
        )
    };
    let p = plan(
        dir.path(),
        &c.kubeconfig,
        &playbook("registry.k8s.io/pause:3.10"),
    );
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    assert!(
        p.stdout.contains(&format!(
            "container app: {PAUSE_OLD} -> registry.k8s.io/pause:3.10"
        )),
        "{}",
        p.stdout
    );
    assert!(p.stdout.contains("deployment/app in "), "{}", p.stdout);
    assert_eq!(
        p.stdout.matches("server-side dry run: accepted").count(),
        2,
        "{}",
        p.stdout
    );

    // Admission/validation errors show up in the preview.
    let p = plan(dir.path(), &c.kubeconfig, &playbook(""));
    assert!(
        p.stdout.contains("preview: cannot patch deployment `app`")
            && p.stdout.contains("containers[0].image: Required value"),
        "{}{}",
        p.stdout,
        p.stderr
    );
    // Nothing changed.
    assert_eq!(ns.deployment_state("app"), (PAUSE_OLD.into(), 1, 1));
}

#[test]
fn errors_name_what_exists() {
    let c = cluster();
    let ns = c.namespace("errors");
    ns.create_deployment("web", PAUSE_OLD, 0, &[]);
    let dir = tempfile::tempdir().unwrap();
    let image = |namespace: &str, deployment: &str, extra: &str| {
        write(
            dir.path(),
            "image.yaml",
            &format!(
                r#"
version: 1
name: errors
steps:
  tag:
    kind: kube.image
    with: {{ namespace: "{namespace}", deployment: "{deployment}" {extra} }}
"#
            ),
        )
    };
    let run = |pb: &Path, kubeconfig: &Path| {
        let out = drrun_kube(dir.path(), kubeconfig, &["run"], pb);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        format!("{}{}", out.stdout, out.stderr)
    };

    let all = run(&image(&ns.name, "webb", ""), &c.kubeconfig);
    assert!(
        all.contains(&format!(
            "deployment `webb` not found in namespace `{}`; deployments there: web (did you mean `web`?)",
            ns.name
        )),
        "{all}"
    );
    let all = run(&image(&format!("{}x", ns.name), "web", ""), &c.kubeconfig);
    assert!(all.contains("not found on context"), "{all}");
    assert!(
        all.contains(&format!("(did you mean `{}`?)", ns.name)),
        "{all}"
    );

    let all = run(&image(&ns.name, "web", ", context: staging"), &c.kubeconfig);
    assert!(all.contains("context `staging` not found in"), "{all}");
    assert!(all.contains("contexts there: "), "{all}");

    let nobody = c.kubeconfig_as(dir.path(), "drrun-test-nobody");
    let all = run(&image(&ns.name, "web", ""), &nobody);
    assert!(all.contains("forbidden:"), "{all}");
    assert!(all.contains("cannot get resource \"deployments\""), "{all}");

    let bad = c.kubeconfig_with_bad_token(dir.path());
    let all = run(&image(&ns.name, "web", ""), &bad);
    assert!(all.contains("unauthorised:"), "{all}");
    assert!(
        !all.contains("drrun-not-a-valid-token"),
        "the token is never shown: {all}"
    );

    // Nothing listens here any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server line")
        .to_string();
    let gone = dir.path().join("gone.kubeconfig");
    std::fs::write(
        &gone,
        text.replace(&server, &format!("https://127.0.0.1:{port}")),
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let out = drrun_kube(fresh.path(), &gone, &["run"], &image(&ns.name, "web", ""));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);
    let records = journal(&fresh.path().join("state"));
    let failed = records
        .iter()
        .rev()
        .find(|r| r["type"] == "step_failed")
        .unwrap();
    assert_eq!(failed["class"], "connection", "{failed}");
}

/// `drrun rbac` grants exactly what the drill's kube steps use: with only its Roles, a
/// ServiceAccount's bound token runs the reference drill's kube steps (read production's
/// tag, deploy and migrate in DR, scale DR down) and is refused by RBAC anything else in
/// production, guards or not.
#[test]
fn drrun_rbac_grants_a_service_account_the_drill_and_nothing_more_in_production() {
    let c = cluster();
    let prod = c.namespace("rbac-prod");
    let dr = c.namespace("rbac-dr");
    let runner = c.namespace("rbac-runner");
    let prod_image = format!("registry.k8s.io/pause:{PAUSE_NEW_TAG}");
    prod.create_deployment("app", &prod_image, 1, &[]);
    dr.create_deployment("app", BUSYBOX, 0, &["sleep", "3600"]);
    let dir = tempfile::tempdir().unwrap();
    let pb = write(
        dir.path(),
        "rbac.yaml",
        &format!(
            r#"
version: 1
name: rbac-drill
vars: {{ dr_ns: "{dr}" }}
guards:
  kube_namespaces: ["{prod}"]
steps:
  prod_tag:
    kind: kube.image
    with: {{ namespace: "{prod}", deployment: app }}
  migrate:
    kind: kube.job
    with:
      namespace: "{{{{ vars.dr_ns }}}}"
      from_deployment: app
      command: [sh, -c, "echo migrated"]
      wait: 60s
  deploy:
    kind: kube.deploy
    needs: [migrate]
    with:
      namespace: "{{{{ vars.dr_ns }}}}"
      deployments: [app]
      image: "{prod_image}"
      wait: 60s
finally:
  down:
    kind: kube.scale
    with: {{ namespace: "{{{{ vars.dr_ns }}}}", all: true, replicas: 0 }}
"#,
            prod = prod.name,
            dr = dr.name
        ),
    );
    let rbac = run_cmd(drrun().arg("rbac").arg(&pb).args([
        "--service-account",
        "drrun",
        "--service-account-namespace",
        &runner.name,
    ]));
    assert_eq!(rbac.code, 0, "{}", rbac.stderr);
    // Production gets read access to Deployments and nothing else.
    let docs: Vec<&str> = rbac.stdout.split("\n---\n").collect();
    let prod_role = docs
        .iter()
        .find(|d| d.contains("kind: Role\n") && d.contains(&format!("namespace: {}\n", prod.name)))
        .expect("a Role in production");
    assert!(
        prod_role.contains("- deployments\n  verbs:\n  - get\n  - list")
            && !prod_role.contains("patch")
            && !prod_role.contains("create"),
        "{prod_role}"
    );
    crate::support::kube::apply_rbac(&rbac.stdout);

    let (kubeconfig, _) = runner.unbound_service_account(dir.path(), "drrun");
    let p = plan(dir.path(), &kubeconfig, &pb);
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    let out = drrun_kube(dir.path(), &kubeconfig, &[], &pb);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(dr.deployment_state("app").0, prod_image);

    // The same token in production, without guards to stop it first: RBAC refuses.
    let write_prod = write(
        dir.path(),
        "prod.yaml",
        &format!(
            "version: 1\nname: prod-write\nsteps:\n  down:\n    kind: kube.scale\n    with: {{ namespace: \"{}\", all: true, replicas: 0 }}\n",
            prod.name
        ),
    );
    let out = run_cmd(
        drrun()
            .current_dir(dir.path())
            .env("KUBECONFIG", &kubeconfig)
            .arg(&write_prod)
            .arg("--state-dir")
            .arg(dir.path().join("state-prod")),
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("forbidden")
            && out
                .stderr
                .contains(&format!("system:serviceaccount:{}:drrun", runner.name)),
        "{}",
        out.stderr
    );
    assert_eq!(prod.deployment_state("app").1, 1, "production untouched");
}

/// Every leaf of `want` is in `got` with the same value: the API server kept each field
/// the manifest sets (it drops fields it does not know, so a misspelt one shows here).
fn missing_fields(want: &serde_json::Value, got: &serde_json::Value, path: &str) -> Vec<String> {
    match (want, got) {
        (serde_json::Value::Object(w), serde_json::Value::Object(g)) => w
            .iter()
            .flat_map(|(k, v)| match g.get(k) {
                Some(gv) => missing_fields(v, gv, &format!("{path}.{k}")),
                None => vec![format!("{path}.{k}")],
            })
            .collect(),
        (serde_json::Value::Array(w), serde_json::Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .flat_map(|(i, (a, b))| missing_fields(a, b, &format!("{path}[{i}]")))
            .collect(),
        (w, g) if w == g => Vec::new(),
        // Quantities and the like come back normalised; numbers as numbers.
        (w, g) if w.to_string().trim_matches('"') == g.to_string().trim_matches('"') => Vec::new(),
        _ => vec![format!("{path}: {want} became {got}")],
    }
}

/// The manifests in deploy/kubernetes are accepted by the API server as written (server-
/// side dry runs in a namespace of the test's, every field kept), and the CronJob's pod
/// meets the restricted Pod Security Standard its namespace enforces.
#[test]
fn the_kubernetes_manifests_are_accepted_with_every_field_and_their_pods_are_restricted() {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
    let c = cluster();
    let ns = c.namespace_labelled(
        "manifests",
        &serde_json::json!({ "pod-security.kubernetes.io/enforce": "restricted" }),
    );
    let dir = crate::support::root().join("deploy/kubernetes");
    let mut docs = Vec::new();
    for file in [
        "namespace.yaml",
        "serviceaccount.yaml",
        "secret-acme.example.yaml",
        "cronjob-acme.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for d in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(d).unwrap();
            if !v.is_null() {
                docs.push((file, v));
            }
        }
    }
    let kinds: Vec<&str> = docs
        .iter()
        .map(|(_, d)| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["Namespace", "ServiceAccount", "Secret", "Secret", "CronJob"]
    );
    let ns_name = ns.name.clone();
    let problems = c.client(|client| async move {
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let mut problems = Vec::new();
        for (file, mut doc) in docs {
            let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (
                    String::new(),
                    doc["apiVersion"].as_str().unwrap().to_string(),
                ),
            };
            let kind = doc["kind"].as_str().unwrap().to_string();
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, &kind));
            let api: Api<DynamicObject> = if kind == "Namespace" {
                Api::all_with(client.clone(), &resource)
            } else {
                doc["metadata"]["namespace"] = serde_json::json!(ns_name);
                Api::namespaced_with(client.clone(), &ns_name, &resource)
            };
            let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
            match api.create(&dry, &obj).await {
                Ok(created) => {
                    let got = serde_json::to_value(&created).unwrap();
                    // The server keeps a Secret's stringData as base64 data.
                    if let Some(strings) = doc.as_object_mut().unwrap().remove("stringData") {
                        use base64::Engine as _;
                        let data: serde_json::Map<String, serde_json::Value> = strings
                            .as_object()
                            .unwrap()
                            .iter()
                            .map(|(k, v)| {
                                let b64 = base64::engine::general_purpose::STANDARD
                                    .encode(v.as_str().unwrap());
                                (k.clone(), serde_json::json!(b64))
                            })
                            .collect();
                        doc["data"] = serde_json::Value::Object(data);
                    }
                    for m in missing_fields(&doc, &got, "") {
                        problems.push(format!("{file} {kind}: {m}"));
                    }
                    if kind == "CronJob" {
                        // The pod it would create, admitted under `restricted`.
                        let template = &doc["spec"]["jobTemplate"]["spec"]["template"];
                        let pod = serde_json::json!({
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "metadata": { "name": "drrun-acme-check", "namespace": ns_name },
                            "spec": template["spec"],
                        });
                        let pods: Api<DynamicObject> = Api::namespaced_with(
                            client.clone(),
                            &ns_name,
                            &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Pod")),
                        );
                        if let Err(e) = pods
                            .create(&dry, &serde_json::from_value(pod).unwrap())
                            .await
                        {
                            problems.push(format!("{file}: its pod is refused: {e}"));
                        }
                    }
                }
                Err(e) => problems.push(format!("{file} {kind}: refused: {e}")),
            }
        }
        problems
    });
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A fresh backup on demand: `kube.job` with `from_cronjob` runs the backup CronJob's job
/// template now (as `kubectl create job --from=cronjob/...`), waits, keeps its log; the
/// namespace is a write, so guards refuse it before anything when they protect it.
#[test]
fn a_job_from_the_backup_cronjob_takes_a_backup_now_and_guards_still_apply() {
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    use kube::api::{Api, ListParams, PostParams};
    let c = cluster();
    let hosting = c.namespace("hosting");
    let cronjob: CronJob = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "backup-job-daily" },
        "spec": {
            "schedule": "0 3 * * *",
            // Only the drill starts it here.
            "suspend": true,
            "jobTemplate": { "spec": {
                "backoffLimit": 0,
                "template": { "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "backup",
                        "image": BUSYBOX,
                        "command": ["sh", "-c", "echo uploaded daily-acme-202612030300.pgdump"],
                    }],
                } },
            } },
        },
    }))
    .unwrap();
    let ns = hosting.name.clone();
    c.client(|client| async move {
        Api::<CronJob>::namespaced(client, &ns)
            .create(&PostParams::default(), &cronjob)
            .await
            .unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let body = |guards: &str| {
        format!(
            r#"
version: 1
name: fresh-backup
{guards}
steps:
  backup_now:
    kind: kube.job
    with: {{ namespace: "{}", from_cronjob: backup-job-daily, wait: 60s, keep: true }}
"#,
            hosting.name
        )
    };
    let pb = write(dir.path(), "fresh.yaml", &body(""));
    let p = plan(dir.path(), &c.kubeconfig, &pb);
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    assert!(
        p.stdout.contains("job from cronjob `backup-job-daily`")
            && p.stdout
                .contains("echo uploaded daily-acme-202612030300.pgdump")
            && p.stdout.contains("server-side dry run: accepted"),
        "{}",
        p.stdout
    );
    let out = drrun_kube(dir.path(), &c.kubeconfig, &[], &pb);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let o = outputs(dir.path(), "backup_now");
    assert_eq!(o["succeeded"], true);
    assert!(
        o["logs_tail"]
            .as_str()
            .unwrap()
            .contains("uploaded daily-acme-202612030300.pgdump"),
        "{o}"
    );
    // Made as kubectl makes it: owned by the CronJob, marked as started by hand.
    let ns = hosting.name.clone();
    let jobs = c.client(|client| async move {
        Api::<Job>::namespaced(client, &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
    });
    let job = &jobs.items[0];
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(
        job.metadata.owner_references.as_ref().unwrap()[0].kind,
        "CronJob"
    );

    // RBAC for it: read the CronJob, create Jobs, in that namespace.
    let rbac = run_cmd(drrun().arg("rbac").arg(&pb));
    assert!(
        rbac.stdout.contains("- cronjobs\n  verbs:\n  - get") && rbac.stdout.contains("- jobs\n"),
        "{}",
        rbac.stdout
    );

    // Guarded, it is refused before any request.
    let guarded = write(
        dir.path(),
        "guarded.yaml",
        &body(&format!(
            "guards: {{ kube_namespaces: [\"{}\"] }}",
            hosting.name
        )),
    );
    let out = run_cmd(
        drrun()
            .current_dir(dir.path())
            .env("KUBECONFIG", &c.kubeconfig)
            .arg(&guarded)
            .arg("--state-dir")
            .arg(dir.path().join("state-guarded")),
    );
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("refusing to touch Kubernetes namespace"),
        "{}",
        out.stderr
    );
}
