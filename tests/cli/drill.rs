//! The reference drill end to end, every kind against real services: `SeaweedFS` (S3),
//! `PostgreSQL`, the kube-apiserver test cluster and a real Wagtail site serving the
//! restored database. Then the same drill with a failing smoke step, and one killed with
//! SIGKILL in the middle and resumed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::kube::{PAUSE_NEW_TAG, PAUSE_OLD, TestNamespace, cluster};
use crate::support::pg::Cluster;
use crate::support::s3::{S3Server, SECRET_KEY, with_credentials};
use crate::support::wagtail::{ADMIN_PASSWORD, ADMIN_USER, BASIC_PASSWORD, Site, production};
use crate::support::{Out, drrun, journal, run_cmd, wait_for};

struct Services {
    pg: Cluster,
    s3: S3Server,
    web: Site,
    _media: tempfile::TempDir,
    prod: TestNamespace,
    dr: TestNamespace,
    /// The backup's timestamp, three hours ago.
    stamp: chrono::DateTime<chrono::Utc>,
}

fn services() -> Services {
    // Production: a seeded Wagtail site, dumped with pg_dump -Fc.
    let production = production();
    let pg = Cluster::start();
    let dump = production.dump.clone();

    let s3 = S3Server::start();
    let client = s3.client();
    let stamp = chrono::Utc::now() - chrono::Duration::hours(3);
    let key = format!("acme/daily-acme-{}.pgdump", stamp.format("%Y%m%d%H%M"));
    let older = format!(
        "acme/daily-acme-{}.pgdump",
        (stamp - chrono::Duration::days(1)).format("%Y%m%d%H%M")
    );
    let body = std::fs::read(&dump).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        client
            .create_bucket()
            .bucket("acme-hosting-services")
            .send()
            .await
            .unwrap();
        for (k, b) in [(older, b"not the newest".to_vec()), (key, body)] {
            client
                .put_object()
                .bucket("acme-hosting-services")
                .key(k)
                .body(b.into())
                .send()
                .await
                .unwrap();
        }
    });

    let c = cluster();
    let prod = c.namespace("acme-prod");
    let dr = c.namespace("acme-dr");
    prod.create_deployment(
        "app",
        &format!("registry.k8s.io/pause:{PAUSE_NEW_TAG}"),
        1,
        &[],
    );
    dr.create_deployment("app", PAUSE_OLD, 0, &[]);

    // The DR site: the same code on the DR database (restored by the drill) with a copy
    // of the assets bucket.
    let media = tempfile::tempdir().unwrap();
    production.copy_media(media.path());
    // The assets and their replicated DR copy hold the same media (one bucket, two
    // prefixes: a SeaweedFS test server has room for the volumes of two buckets).
    rt.block_on(async {
        client
            .create_bucket()
            .bucket("acme-assets")
            .send()
            .await
            .unwrap();
        for copy in ["prod", "dr"] {
            let mut dirs = vec![media.path().to_path_buf()];
            while let Some(dir) = dirs.pop() {
                for e in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
                    let path = e.path();
                    if path.is_dir() {
                        dirs.push(path);
                        continue;
                    }
                    let key = path
                        .strip_prefix(media.path())
                        .unwrap()
                        .to_string_lossy()
                        .to_string();
                    client
                        .put_object()
                        .bucket("acme-assets")
                        .key(format!("{copy}/{key}"))
                        .body(std::fs::read(&path).unwrap().into())
                        .send()
                        .await
                        .unwrap();
                }
            }
        }
    });
    let web = Site::serve(&pg.url("acme_dr"), media.path());
    Services {
        pg,
        s3,
        web,
        _media: media,
        prod,
        dr,
        stamp,
    }
}

/// The reference drill; `expect_site` is what the smoke test expects the home page to show.
fn playbook(dir: &Path, s: &Services, expect_site: &str) -> PathBuf {
    let text = format!(
        r#"
version: 1
name: acme-dr
vars:
  project: acme
  prod_ns: {prod}
  dr_ns: {dr}
  dr_host: dr.acme.example.com
  pg_bin: {pg_bin}
secrets:
  db_url: {{ env: ACME_DR_DB_URL }}
  basic_auth_password: {{ env: ACME_BASIC }}
  admin_password: {{ env: ACME_ADMIN }}
objectives: {{ rpo: 26h, rto: 15m }}
guards:
  kube_namespaces: ["{{{{ vars.prod_ns }}}}"]
  pg_databases: [prod]
steps:
  backup:
    kind: s3.fetch
    with:
      endpoint: {endpoint}
      path_style: true
      region: us-east-1
      bucket: "{{{{ vars.project }}}}-hosting-services"
      prefix: "{{{{ vars.project }}}}/daily-"
      select: newest-key-timestamp
      max_age: "{{{{ objectives.rpo }}}}"
  restore:
    kind: pg.restore
    with:
      archive: "{{{{ steps.backup.outputs.path }}}}"
      url: "{{{{ secrets.db_url }}}}"
      recreate: true
      no_owner: true
      no_privileges: true
      pg_bin: "{{{{ vars.pg_bin }}}}"
  site:
    kind: pg.sql
    with:
      url: "{{{{ secrets.db_url }}}}"
      pg_bin: "{{{{ vars.pg_bin }}}}"
      sql: UPDATE wagtailcore_site SET hostname = '{{{{ vars.dr_host }}}}' WHERE is_default_site RETURNING id
      expect: {{ rows: 1 }}
    needs: [restore]
  data_fresh:
    kind: pg.sql
    needs: [restore]
    with:
      url: "{{{{ secrets.db_url }}}}"
      pg_bin: "{{{{ vars.pg_bin }}}}"
      sql: SELECT max(last_login) FROM auth_user
      expect: {{ scalar: {{ newer_than: "{{{{ objectives.rpo }}}}" }} }}
  image_file:
    kind: pg.sql
    needs: [restore]
    with:
      url: "{{{{ secrets.db_url }}}}"
      pg_bin: "{{{{ vars.pg_bin }}}}"
      sql: SELECT file FROM wagtailimages_image ORDER BY id LIMIT 1
      expect: {{ rows: 1 }}
  media:
    kind: s3.compare
    needs: [image_file]
    with:
      endpoint: {endpoint}
      path_style: true
      region: us-east-1
      bucket: "{{{{ vars.project }}}}-assets"
      prefix: prod/
      copy: {{ bucket: "{{{{ vars.project }}}}-assets", prefix: dr/ }}
      # SeaweedFS has no API for most bucket settings (tests/cli/compare.rs checks them on moto).
      settings: false
      keys: ["dr/{{{{ steps.image_file.outputs.scalar }}}}"]
  prod_tag:
    kind: kube.image
    with: {{ namespace: "{{{{ vars.prod_ns }}}}", deployment: app }}
  deploy:
    kind: kube.deploy
    needs: [site]
    with:
      namespace: "{{{{ vars.dr_ns }}}}"
      deployments: [app]
      tag: "{{{{ steps.prod_tag.outputs.tag }}}}"
      replicas: 1
      wait: 60s
  smoke:
    kind: http.smoke
    needs: [deploy, data_fresh]
    with:
      base_url: {web}
      basic_auth: {{ username: dr, password: "{{{{ secrets.basic_auth_password }}}}" }}
      requests:
        - name: site is up on the restored data
          url: /
          retry_until: {{ deadline: 20s, interval: 200ms }}
          assert: {{ status: 200, css: {{ selector: "link[rel=canonical]", attr: href, text: "https://{expect_site}/" }} }}
        - name: login page
          url: /admin/login/
        - name: log in
          submit:
            form: form.login-form
            fields: {{ username: {ADMIN_USER}, password: "{{{{ secrets.admin_password }}}}" }}
          assert: {{ status: 302 }}
        - name: image upload page
          url: /admin/images/multiple/add/
        - name: upload an image
          submit:
            form: "form[action$='/multiple/add/']"
            files: [{{ field: "files[]", generate: png }}]
          assert: {{ status: 200, jsonpath: {{ path: $.success, equals: true }} }}
finally:
  scale_down:
    kind: kube.scale
    with: {{ namespace: "{{{{ vars.dr_ns }}}}", all: true, replicas: 0 }}
"#,
        prod = s.prod.name,
        dr = s.dr.name,
        pg_bin = s.pg.bin.display(),
        endpoint = s.s3.endpoint(),
        web = s.web.base,
    );
    let path = dir.join("acme.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn drrun_drill(dir: &Path, s: &Services) -> std::process::Command {
    let mut cmd = drrun();
    cmd.current_dir(dir)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env("ACME_DR_DB_URL", s.pg.url("acme_dr"))
        .env("ACME_BASIC", BASIC_PASSWORD)
        .env("ACME_ADMIN", ADMIN_PASSWORD)
        // No terminal here, as under cron: long steps print progress lines this often.
        .env("DRRUN_PROGRESS_EVERY", "100ms");
    with_credentials(&mut cmd, dir);
    cmd
}

fn run_drill(dir: &Path, s: &Services, pb: &Path, extra: &[&str]) -> Out {
    run_cmd(
        drrun_drill(dir, s)
            .arg("run")
            .arg(pb)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra),
    )
}

/// `drrun report --format json` for the newest run in `state`.
fn report_json(state: &Path) -> serde_json::Value {
    let out = run_cmd(
        drrun()
            .args(["report", "--format", "json", "--state-dir"])
            .arg(state),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn the_reference_drill_passes_fails_honestly_and_resumes_after_sigkill() {
    let s = services();

    // 1. The whole drill passes, with evidence.
    let dir = tempfile::tempdir().unwrap();
    let pb = playbook(dir.path(), &s, "dr.acme.example.com");
    let reports = dir.path().join("reports");
    let out = run_drill(
        dir.path(),
        &s,
        &pb,
        &["--report", reports.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("drill PASSED"), "{}", out.stderr);
    // The restore said where it was while it ran: the TOC entry it was at, out of all.
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("restore (pg.restore): restoring: ")
                && l.contains(" TOC entries (")
                && l.contains(" so far")),
        "{}",
        out.stderr
    );
    // Its programs' output is kept per step, redacted, and `status --log` shows it.
    let log = run_cmd(
        drrun()
            .args(["status", "--log", "restore", "--state-dir"])
            .arg(dir.path().join("state")),
    );
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert!(
        log.stdout
            .contains("pg_restore err| pg_restore: creating TABLE"),
        "{}",
        log.stdout
    );
    assert!(!log.stdout.contains(ADMIN_PASSWORD) && !log.stdout.contains(BASIC_PASSWORD));
    assert!(
        out.stderr.contains("RTO ") && out.stderr.contains("(objective 15m): met"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("(objective 26h): met"),
        "{}",
        out.stderr
    );

    let r = report_json(&dir.path().join("state"));
    assert_eq!(r["status"], "passed");
    assert_eq!(r["playbook"]["name"], "acme-dr");
    assert_eq!(r["rto"]["met"], true);
    assert_eq!(r["rpo"]["met"], true);
    assert_eq!(r["rpo"]["source"], "backup_time of step backup");
    // RPO = run start - the backup's key timestamp (3 h ago, to the minute).
    let rpo_ms = r["rpo"]["measured_ms"].as_u64().unwrap();
    let expected = (chrono::Utc::now() - s.stamp).num_milliseconds() as u64;
    assert!(
        rpo_ms.abs_diff(expected) < 120_000,
        "rpo {rpo_ms} ms, expected about {expected} ms"
    );
    assert!(r["backup"]["object"].as_str().unwrap().ends_with(".pgdump"));
    assert_eq!(r["backup"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        r["image"]["image"],
        format!("registry.k8s.io/pause:{PAUSE_NEW_TAG}").as_str()
    );
    let states: Vec<(&str, &str)> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| (st["id"].as_str().unwrap(), st["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states.len(), 10, "{states:?}");
    assert!(
        states.iter().all(|(_, state)| *state == "succeeded"),
        "{states:?}"
    );
    // No secret reaches the report, in any format.
    for name in ["report.json", "report.md", "junit.xml"] {
        let text = std::fs::read_to_string(reports.join(name)).unwrap();
        for secret in [
            crate::support::pg::PASSWORD,
            BASIC_PASSWORD,
            ADMIN_PASSWORD,
            SECRET_KEY,
        ] {
            assert!(!text.contains(secret), "{name} leaks a secret");
        }
    }
    let md = std::fs::read_to_string(reports.join("report.md")).unwrap();
    assert!(md.starts_with("# DR drill `acme-dr`: PASSED"), "{md}");
    assert!(md.contains("| RTO | 15m |"), "{md}");
    // The evidence a ticket needs, from the real restore, smoke test and cleanup.
    assert!(!md.contains("| | |"), "no empty header row: {md}");
    for needle in [
        "- `restore` (pg.restore): succeeded in ",
        " tables, ",
        "largest tables: `public.",
        "- `smoke` (http.smoke): succeeded in ",
        // The DR assets copy holds the image the restored database names.
        "- `media` (s3.compare): succeeded in ",
        "compared with the copy: 0 missing, 0 differing",
        " → 200",
        "## Cleanup (finally)",
        " (kube.scale): succeeded in ",
        "scaled `deployment/",
        "## Vars",
        " KiB (",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert_eq!(
        junit.matches("<testcase ").count(),
        12,
        "10 steps + 2 objectives"
    );
    assert!(junit.contains("failures=\"0\""));
    // The restored database has the DR hostname; DR is back at zero replicas.
    assert_eq!(
        s.pg.sql(
            "acme_dr",
            "SELECT hostname FROM wagtailcore_site WHERE is_default_site"
        ),
        "dr.acme.example.com"
    );
    // The smoke test uploaded an image into the restored Wagtail (3 came with the data).
    assert_eq!(
        s.pg.sql("acme_dr", "SELECT count(*) FROM wagtailimages_image"),
        "4"
    );
    let (image, replicas, _) = s.dr.deployment_state("app");
    assert_eq!(image, format!("registry.k8s.io/pause:{PAUSE_NEW_TAG}"));
    assert_eq!(replicas, 0);

    // 2. The smoke step fails: finally still scales to zero; the report says which assertion.
    let dir = tempfile::tempdir().unwrap();
    let pb = playbook(dir.path(), &s, "www.acme.example.com");
    let out = run_drill(dir.path(), &s, &pb, &[]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("drill FAILED"), "{}", out.stderr);
    let r = report_json(&dir.path().join("state"));
    assert_eq!(r["status"], "failed");
    assert_eq!(r["failed_step"]["step"], "smoke");
    assert_eq!(r["failed_step"]["class"], "assertion");
    let error = r["failed_step"]["error"].as_str().unwrap();
    assert!(
        error.contains("www.acme.example.com") && error.contains("dr.acme.example.com"),
        "expected and actual: {error}"
    );
    assert_eq!(
        r["rto"]["met"], false,
        "the service was not shown to be back"
    );
    let scale = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["id"] == "scale_down")
        .unwrap();
    assert_eq!(scale["state"], "succeeded");
    assert_eq!(scale["outputs"]["previous"]["deployment/app"], 1);
    assert_eq!(s.dr.deployment_state("app").1, 0);
    let junit = run_cmd(
        drrun()
            .args(["report", "--format", "junit", "--state-dir"])
            .arg(dir.path().join("state")),
    )
    .stdout;
    assert!(junit.contains("<failure type=\"assertion\""), "{junit}");

    // 3. SIGKILL while the deployment rolls out, then resume to success.
    let dir = tempfile::tempdir().unwrap();
    let pb = playbook(dir.path(), &s, "dr.acme.example.com");
    let state = dir.path().join("state");
    let mut child = drrun_drill(dir.path(), &s)
        .arg("run")
        .arg(&pb)
        .arg("--state-dir")
        .arg(&state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the deployment is rolling out and everything before it has finished
    // (`data_fresh` runs beside `site`, so it may end after `deploy` starts).
    let before_deploy = ["backup", "restore", "site", "data_fresh", "prod_tag"];
    let started_deploy = wait_for(Duration::from_secs(60), || {
        let records = journal(&state);
        records
            .iter()
            .any(|r| r["type"] == "step_started" && r["step"] == "deploy")
            && before_deploy.iter().all(|step| {
                records
                    .iter()
                    .any(|r| r["type"] == "step_succeeded" && r["step"] == *step)
            })
    });
    assert!(started_deploy, "deploy never started");
    child.kill().unwrap();
    child.wait().unwrap();
    let r = report_json(&dir.path().join("state"));
    assert_eq!(r["status"], "unfinished");

    let out = run_cmd(
        drrun_drill(dir.path(), &s)
            .arg("resume")
            .arg("--state-dir")
            .arg(&state),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let records = journal(&state);
    let reused: Vec<&str> = records
        .iter()
        .filter(|r| r["type"] == "step_reused")
        .map(|r| r["step"].as_str().unwrap())
        .collect();
    for step in before_deploy {
        assert!(reused.contains(&step), "{step} ran again: {reused:?}");
    }
    let r = report_json(&dir.path().join("state"));
    assert_eq!(r["status"], "passed");
    assert_eq!(r["resumed"], 1);
    assert_eq!(r["rto"]["met"], true);
    assert_eq!(s.dr.deployment_state("app").1, 0);
}

#[test]
fn a_missed_objective_fails_an_otherwise_green_drill() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("slow.yaml");
    std::fs::write(
        &pb,
        r#"
version: 1
name: slow
objectives: { rto: 1s, rto_until: restored }
steps:
  restored:
    kind: exec
    with: { argv: [sleep, "1.5"] }
  after:
    kind: exec
    needs: [restored]
    with: { argv: ["true"] }
"#,
    )
    .unwrap();
    let out = run_cmd(
        drrun()
            .arg(&pb)
            .arg("--state-dir")
            .arg(dir.path().join("state")),
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("drill FAILED"), "{}", out.stderr);
    assert!(
        out.stderr.contains("(objective 1s): MISSED by"),
        "{}",
        out.stderr
    );
    let r = report_json(&dir.path().join("state"));
    assert_eq!(r["rto"]["met"], false);
    assert_eq!(r["rto"]["source"], "until step restored succeeded");
    assert!(r["rto"]["margin_ms"].as_i64().unwrap() < 0);
    assert!(
        r["failed_step"].is_null(),
        "no step failed, an objective did"
    );
}

#[test]
fn rpo_can_come_from_the_restored_data_itself() {
    let pg = Cluster::start();
    pg.sql("postgres", "CREATE DATABASE dr");
    pg.sql(
        "dr",
        "CREATE TABLE auth_user (last_login timestamptz); \
         INSERT INTO auth_user VALUES (now() - interval '5 hours'), (now() - interval '9 hours')",
    );
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("rpo.yaml");
    let write = |rpo: &str| {
        std::fs::write(
            &pb,
            format!(
                r#"
version: 1
name: rpo
secrets: {{ db_url: {{ env: DR_DB_URL }} }}
objectives: {{ rpo: {rpo}, rpo_from: newest_login }}
steps:
  newest_login:
    kind: pg.sql
    with: {{ url: "{{{{ secrets.db_url }}}}", pg_bin: {}, sql: SELECT max(last_login) FROM auth_user }}
"#,
                pg.bin.display()
            ),
        )
        .unwrap();
    };
    let run = |state: &str| {
        run_cmd(
            drrun()
                .env("DR_DB_URL", pg.url("dr"))
                .arg(&pb)
                .arg("--state-dir")
                .arg(dir.path().join(state)),
        )
    };

    write("6h");
    let out = run("ok");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let r = report_json(&dir.path().join("ok"));
    assert_eq!(r["rpo"]["source"], "scalar of step newest_login");
    let rpo_h = r["rpo"]["measured_ms"].as_u64().unwrap() as f64 / 3_600_000.0;
    assert!((4.9..5.2).contains(&rpo_h), "rpo {rpo_h} h");
    assert_eq!(r["rpo"]["met"], true);

    write("4h");
    let out = run("missed");
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("RPO 5h"), "{}", out.stderr);
    assert!(
        out.stderr.contains("(objective 4h): MISSED by 1h"),
        "{}",
        out.stderr
    );
}

/// Ctrl-C during the restore stops cleanly (`finally` runs, exit 130) and the report
/// measures nothing it did not see; the resume then restores, deploys and smoke-tests,
/// and its own `finally` runs again (never reused from the interrupted session), so the
/// DR environment ends scaled to zero and the report's PASSED is true.
#[test]
fn sigint_then_resume_runs_finally_again_and_leaves_dr_scaled_down() {
    let s = services();
    let dir = tempfile::tempdir().unwrap();
    let pb = playbook(dir.path(), &s, "dr.acme.example.com");
    // A restore slow enough to be interrupted in the middle.
    let text = std::fs::read_to_string(&pb).unwrap().replace(
        "      recreate: true\n",
        "      recreate: true\n      pre_sql: [\"SELECT pg_sleep(3)\"]\n",
    );
    std::fs::write(&pb, text).unwrap();
    let state = dir.path().join("state");
    let child = drrun_drill(dir.path(), &s)
        .arg("run")
        .arg(&pb)
        .arg("--state-dir")
        .arg(&state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let restoring = wait_for(Duration::from_secs(60), || {
        journal(&state)
            .iter()
            .any(|r| r["type"] == "step_started" && r["step"] == "restore")
    });
    assert!(restoring, "restore never started");
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let r = report_json(&state);
    assert_eq!(r["status"], "interrupted", "{r:#}");
    assert_eq!(
        r["rpo"]["measured_ms"],
        serde_json::Value::Null,
        "nothing was restored, so no RPO was measured: {:#}",
        r["rpo"]
    );
    assert!(
        r["rpo"]["note"]
            .as_str()
            .unwrap()
            .contains("recovery did not complete"),
        "{:#}",
        r["rpo"]
    );
    let finally_runs = |records: &[serde_json::Value]| {
        records
            .iter()
            .filter(|r| r["type"] == "step_succeeded" && r["step"] == "scale_down")
            .count()
    };
    assert_eq!(finally_runs(&journal(&state)), 1, "finally ran on Ctrl-C");

    let out = run_cmd(
        drrun_drill(dir.path(), &s)
            .arg("resume")
            .arg("--state-dir")
            .arg(&state),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let records = journal(&state);
    assert_eq!(
        finally_runs(&records),
        2,
        "the resumed session ran its own finally"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["type"] == "step_reused" && r["step"] == "scale_down"),
        "finally is never reused from a checkpoint"
    );
    assert_eq!(
        s.dr.deployment_state("app").1,
        0,
        "DR is scaled down after the resumed drill deployed it"
    );
    let r = report_json(&state);
    assert_eq!(r["status"], "passed");
    assert_eq!(r["rpo"]["met"], true, "{:#}", r["rpo"]);
}
