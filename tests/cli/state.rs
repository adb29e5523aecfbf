//! State in S3 (`--state s3://…`) against SeaweedFS: a drill killed on one machine is
//! resumed from another with nothing but the store; the lease refuses a second run,
//! names its holder, is renewed while the run lives and is taken over once expired; a
//! SIGTERM'd run (a pod's eviction) runs `finally`, exits 143 and is continued by the
//! next scheduled run; no object in the store holds a secret.

use std::path::Path;

use base64::Engine as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::s3::{S3Server, with_credentials};
use crate::support::{drrun, lines, run_cmd, wait_for};

const SECRET: &str = "s3-state-secret-Zq8v";

/// Steps that leave one line each in `side`, the third waiting for `go` (so a test can
/// kill or stop it there), and a `finally` that says it ran.
fn playbook(config: &Path, side: &Path) -> std::path::PathBuf {
    let path = config.join("fleet-a.yaml");
    let side = side.display();
    std::fs::write(
        &path,
        format!(
            r#"version: 1
name: fleet-a
objectives: {{ rto: 1h, every: 7d }}
secrets:
  token: {{ env: DRRUN_TEST_TOKEN }}
steps:
  s1:
    kind: exec
    with: {{ argv: [sh, -c, 'echo s1 >> {side}; echo one'] }}
  s2:
    kind: exec
    needs: [s1]
    with: {{ argv: [sh, -c, 'echo s2 >> {side}; echo "{{{{ secrets.token }}}}" | wc -c'] }}
  s3:
    kind: exec
    needs: [s2]
    with: {{ argv: [sh, -c, 'echo s3 >> {side}; touch {side}.waiting; while [ ! -e {side}.go ]; do sleep 0.05; done'] }}
  s4:
    kind: exec
    needs: [s3]
    with: {{ argv: [sh, -c, 'echo s4 >> {side}'] }}
finally:
  cleanup:
    kind: exec
    with: {{ argv: [sh, -c, 'echo cleanup >> {side}'] }}
"#
        ),
    )
    .unwrap();
    path
}

struct Fleet {
    server: S3Server,
    url: String,
}

impl Fleet {
    fn start() -> Self {
        let server = S3Server::start();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            server
                .client()
                .create_bucket()
                .bucket("drills")
                .send()
                .await
                .unwrap();
        });
        let url = format!(
            "s3://drills/fleet?endpoint={}&path_style=true&region=us-east-1",
            server.endpoint()
        );
        Self { server, url }
    }

    /// `drrun ARGS --state URL` from `workdir`, with its own cache there.
    fn cmd(&self, workdir: &Path, args: &[&str]) -> Command {
        let mut cmd = drrun();
        with_credentials(&mut cmd, workdir)
            .current_dir(workdir)
            .env("DRRUN_CACHE_DIR", workdir.join("cache"))
            .env("DRRUN_TEST_TOKEN", SECRET)
            .args(args)
            .args(["--state", &self.url]);
        cmd
    }

    /// Every object in the bucket, key and body.
    fn objects(&self) -> Vec<(String, Vec<u8>)> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let s3 = self.server.client();
        rt.block_on(async {
            let mut all = Vec::new();
            let listed = s3.list_objects_v2().bucket("drills").send().await.unwrap();
            for o in listed.contents() {
                let key = o.key().unwrap().to_string();
                let body = s3
                    .get_object()
                    .bucket("drills")
                    .key(&key)
                    .send()
                    .await
                    .unwrap()
                    .body
                    .collect()
                    .await
                    .unwrap()
                    .into_bytes()
                    .to_vec();
                all.push((key, body));
            }
            all
        })
    }

    fn lease(&self) -> Option<serde_json::Value> {
        self.objects()
            .into_iter()
            .find(|(k, _)| k == "fleet/fleet-a/lock")
            .map(|(_, b)| serde_json::from_slice(&b).unwrap())
    }

    fn put_lease(&self, body: &str) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            self.server
                .client()
                .put_object()
                .bucket("drills")
                .key("fleet/fleet-a/lock")
                .body(body.as_bytes().to_vec().into())
                .send()
                .await
                .unwrap();
        });
    }
}

fn spawn(mut cmd: Command) -> std::process::Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

#[test]
fn a_drill_killed_on_one_machine_resumes_on_another_from_the_store_alone() {
    let fleet = Fleet::start();
    // The playbook stays where it is (a ConfigMap in a pod); everything else goes.
    let config = tempfile::tempdir().unwrap();
    let side = config.path().join("side");
    let pb = playbook(config.path(), &side);
    let pb = pb.to_str().unwrap();

    let first = tempfile::tempdir().unwrap();
    let mut cmd = fleet.cmd(first.path(), &["run", pb]);
    cmd.env("DRRUN_LEASE_SECONDS", "3");
    let child = spawn(cmd);
    let waiting = side.with_extension("waiting");
    assert!(
        wait_for(Duration::from_secs(60), || waiting.exists()),
        "s3 never started"
    );
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    // The first machine is gone, its working directory and cache with it.
    drop(first);
    std::fs::remove_file(&waiting).unwrap();
    std::fs::write(side.with_extension("go"), "").unwrap();

    let second = tempfile::tempdir().unwrap();
    // The killed run's lease is still live: the next pod waits it out.
    let out = run_cmd(&mut fleet.cmd(
        second.path(),
        &["run", pb, "--resume-interrupted", "--lease-wait", "60s"],
    ));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("took over a stale lock") && out.stderr.contains("continuing run "),
        "{}",
        out.stderr
    );
    // Completed steps ran once; the one cut short ran again; finally once, at the end.
    assert_eq!(lines(&side), ["s1", "s2", "s3", "s3", "s4", "cleanup"]);

    // Any machine reads the store: the fleet view and the report from a third directory.
    let third = tempfile::tempdir().unwrap();
    let status = run_cmd(&mut fleet.cmd(third.path(), &["status"]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.contains("fleet-a   passed")
            && status.stdout.contains("ok (every 7d)")
            && status.stdout.contains("RTO ")
            && status.stdout.contains("(objective 1h): met"),
        "{}",
        status.stdout
    );
    // Another project in the same store, whose drill fails: the fleet view says so, and
    // exits 1 so it can be the alert.
    let other = config.path().join("fleet-b.yaml");
    std::fs::write(
        &other,
        "version: 1\nname: fleet-b\nsteps:\n  broken: { kind: exec, with: { argv: [sh, -c, 'exit 3'] } }\n",
    )
    .unwrap();
    let failed = run_cmd(&mut fleet.cmd(third.path(), &["run", other.to_str().unwrap()]));
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let status = run_cmd(&mut fleet.cmd(third.path(), &["status", "--output", "json"]));
    assert_eq!(status.code, 1, "{}", status.stderr);
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(rows[0]["playbook"], "fleet-a");
    assert_eq!(rows[0]["status"], "passed");
    assert_eq!(rows[0]["overdue"], false);
    assert_eq!(rows[0]["rto"]["met"], true);
    assert_eq!(rows[1]["playbook"], "fleet-b");
    assert_eq!(rows[1]["status"], "failed");
    assert_eq!(rows[1]["overdue_reason"], "never passed");
    // `--every` overrides the playbooks' `every`: by it, fleet-a's pass is too old.
    let strict = run_cmd(&mut fleet.cmd(
        third.path(),
        &["status", "--every", "1ms", "--output", "json"],
    ));
    let rows: serde_json::Value = serde_json::from_str(&strict.stdout).unwrap();
    assert_eq!(rows[0]["overdue"], true, "{}", strict.stdout);
    let report = run_cmd(&mut fleet.cmd(third.path(), &["report", "-p", pb]));
    assert_eq!(report.code, 0, "{}", report.stderr);
    assert!(report.stdout.contains("PASSED"), "{}", report.stdout);

    // The journal is one object a record, in order; the report and logs are there too;
    // no object holds the secret, plain or base64'd.
    let objects = fleet.objects();
    let keys: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("fleet/fleet-a/runs/") && k.ends_with("/journal/00000000.json")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.ends_with("/report.md")), "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("/logs/s2.log")), "{keys:?}");
    assert!(
        !keys.contains(&"fleet/fleet-a/lock"),
        "the lease was released: {keys:?}"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    for (key, body) in &objects {
        let text = String::from_utf8_lossy(body);
        assert!(
            !text.contains(SECRET) && !text.contains(&b64),
            "{key} holds the secret"
        );
    }
}

#[test]
fn the_lease_refuses_a_second_run_is_renewed_and_an_expired_one_is_taken_over() {
    let fleet = Fleet::start();
    let config = tempfile::tempdir().unwrap();
    let side = config.path().join("side");
    let pb = playbook(config.path(), &side);
    let pb = pb.to_str().unwrap();
    let here = tempfile::tempdir().unwrap();

    let mut cmd = fleet.cmd(here.path(), &["run", pb]);
    cmd.env("DRRUN_LEASE_SECONDS", "3");
    let child = spawn(cmd);
    let waiting = side.with_extension("waiting");
    assert!(
        wait_for(Duration::from_secs(60), || waiting.exists()),
        "s3 never started"
    );
    // Another machine is refused, and told who holds the state.
    let elsewhere = tempfile::tempdir().unwrap();
    let second = run_cmd(&mut fleet.cmd(elsewhere.path(), &["run", pb]));
    assert_eq!(second.code, 2, "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains("another drill is running with this state (s3://drills/fleet/fleet-a)")
            && second.stderr.contains(&format!("pid {}", child.id())),
        "{}",
        second.stderr
    );
    // The fleet view knows it is running (its lease is live), not cut off.
    let view = run_cmd(&mut fleet.cmd(elsewhere.path(), &["status", "--output", "json"]));
    let rows: serde_json::Value = serde_json::from_str(&view.stdout).unwrap();
    assert_eq!(rows[0]["status"], "running", "{}", view.stdout);
    // The holder renews its lease while it runs.
    let first_expiry = fleet.lease().unwrap()["expires_at"].clone();
    assert!(
        wait_for(Duration::from_secs(30), || fleet
            .lease()
            .is_some_and(|l| l["expires_at"] != first_expiry)),
        "the lease was never renewed"
    );

    // SIGTERM (an eviction): s4 never starts, finally runs, exit 143.
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert_eq!(lines(&side), ["s1", "s2", "s3", "cleanup"]);

    // The next scheduled run continues it, but not past the age limit.
    std::fs::write(side.with_extension("go"), "").unwrap();
    let stale =
        run_cmd(&mut fleet.cmd(elsewhere.path(), &["run", pb, "--resume-interrupted", "0s"]));
    assert_eq!(stale.code, 0, "{}", stale.stderr);
    assert!(!stale.stderr.contains("continuing run"), "{}", stale.stderr);
    assert_eq!(
        lines(&side)[4..],
        ["s1", "s2", "s3", "s4", "cleanup"],
        "a new run from the start"
    );
    // `drrun resume` continues the interrupted one from the store, anywhere.
    let interrupted = fleet
        .objects()
        .into_iter()
        .find(|(k, body)| {
            k.contains("/journal/")
                && String::from_utf8_lossy(body).contains("\"type\":\"interrupted\"")
        })
        .map(|(k, _)| k.split('/').nth(3).unwrap().to_string())
        .expect("the SIGTERM'd run is in the store");
    let third = tempfile::tempdir().unwrap();
    let resumed = run_cmd(&mut fleet.cmd(third.path(), &["resume", &interrupted]));
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(
        lines(&side)[9..],
        ["s3", "s4", "cleanup"],
        "only what was left"
    );

    // A lease whose holder stopped renewing (a pod killed outright) is taken over...
    fleet.put_lease(
        r#"{"pid":4242,"host":"drill-pod-gone","run_id":"old","started_at":"2026-01-01T00:00:00Z","playbook":"p.yaml","expires_at":"2026-01-01T00:01:00Z"}"#,
    );
    let out = run_cmd(&mut fleet.cmd(here.path(), &["run", pb]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("took over a stale lock left by pid 4242 on drill-pod-gone")
            && out.stderr.contains("it stopped renewing"),
        "{}",
        out.stderr
    );
    // ...but a live one is not.
    fleet.put_lease(
        r#"{"pid":4243,"host":"drill-pod-live","run_id":"now","started_at":"2026-01-01T00:00:00Z","playbook":"p.yaml","expires_at":"2099-01-01T00:00:00Z"}"#,
    );
    let out = run_cmd(&mut fleet.cmd(here.path(), &["run", pb]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("pid 4243 on drill-pod-live")
            && out.stderr.contains("its lease runs to 2099-01-01"),
        "{}",
        out.stderr
    );
}
