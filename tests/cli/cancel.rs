//! Cancellation that really stops the work (#20): a cancelled `pg.sql` is cancelled on
//! the server, and the children of a drrun killed with SIGKILL die with it.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::pg::Cluster;
use crate::support::{drrun, journal, wait_for};

pub(crate) fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

pub(crate) fn spawn(dir: &Path, pb: &Path, env: &[(&str, String)]) -> Child {
    drrun()
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg(pb)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_cancelled_pg_sql_is_cancelled_on_the_server_and_never_commits() {
    // Ctrl-C and a scheduler's stop alike.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        cancelled_pg_sql(sig);
    }
}

/// A cluster with `dr.t(v)` = 0, and a playbook whose one `pg.sql` step runs `sql`.
fn slow_sql(dir: &Path, c: &Cluster, sql: &str) -> std::path::PathBuf {
    let pb = dir.join("slow.yaml");
    std::fs::write(
        &pb,
        format!(
            r#"version: 1
name: slow
secrets: {{ db_url: {{ env: DRRUN_TEST_DB_URL }} }}
steps:
  slow:
    kind: pg.sql
    with:
      url: "{{{{ secrets.db_url }}}}"
      pg_bin: {bin}
      sql: {sql}
"#,
            bin = c.bin.display()
        ),
    )
    .unwrap();
    pb
}

fn dr_cluster() -> Cluster {
    let c = Cluster::start();
    c.sql("postgres", "CREATE DATABASE dr");
    c.sql("dr", "CREATE TABLE t (v int); INSERT INTO t VALUES (0)");
    c
}

/// Whether a statement starting with `prefix` is active on the server.
fn active(c: &Cluster, prefix: &str) -> bool {
    c.sql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '{prefix}%' AND state = 'active'"
        ),
    ) != "0"
}

fn cancelled_pg_sql(sig: i32) {
    let c = dr_cluster();
    let dir = tempfile::tempdir().unwrap();
    // One statement: it commits only when the 60 s sleep ends.
    let pb = slow_sql(
        dir.path(),
        &c,
        "UPDATE t SET v = 1 FROM (SELECT pg_sleep(60)) s",
    );
    let child = spawn(dir.path(), &pb, &[("DRRUN_TEST_DB_URL", c.url("dr"))]);
    let active = || active(&c, "UPDATE t SET v = 1");
    assert!(
        wait_for(Duration::from_secs(30), active),
        "the UPDATE never started"
    );
    signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 128 + the signal, as shells report it: 130 for Ctrl-C, 143 for a pod's SIGTERM.
    assert_eq!(out.status.code(), Some(128 + sig), "signal {sig}: {stderr}");
    // The step says whether the server confirmed it.
    assert!(stderr.contains("slow: cancel confirmed"), "{stderr}");
    // psql got SIGINT and cancelled the statement: it is gone long before its sleep ends.
    assert!(
        wait_for(Duration::from_secs(15), || !active()),
        "the UPDATE still runs on the server after drrun cancelled it"
    );
    assert_eq!(
        c.sql("dr", "SELECT v FROM t"),
        "0",
        "the cancelled UPDATE committed"
    );
}

#[test]
fn children_of_a_killed_drrun_die_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("long.yaml");
    std::fs::write(
        &pb,
        r#"version: 1
name: long
steps:
  long:
    kind: exec
    with:
      argv: [sh, -c, "echo $$ > child.pid; exec sleep 60"]
"#,
    )
    .unwrap();
    let child = spawn(dir.path(), &pb, &[]);
    let pid_file = dir.path().join("child.pid");
    let started = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    });
    assert!(started, "the exec step never started");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    assert!(
        journal(&dir.path().join("state"))
            .iter()
            .any(|r| r["type"] == "step_started")
    );
    signal(&child, libc::SIGKILL);
    let _ = child.wait_with_output();
    // The kernel kills the child when drrun dies (PR_SET_PDEATHSIG); it must not run on
    // beside the step a resume would start again.
    assert!(
        wait_for(Duration::from_secs(5), || !alive(pid) || zombie(pid)),
        "the exec child {pid} outlived the drrun that started it"
    );
}

/// A killed child not yet reaped by init still answers `kill(pid, 0)`.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn children_get_only_the_environment_their_step_declares() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("env.yaml");
    std::fs::write(
        &pb,
        r#"version: 1
name: env
secrets: { token: { env: DRRUN_TEST_TOKEN_SOURCE } }
steps:
  plain:
    kind: exec
    with:
      argv: [sh, -c, "env > plain.env"]
      env: { TOKEN: "{{ secrets.token }}" }
  inherits:
    kind: exec
    with:
      argv: [sh, -c, "env > inherits.env"]
      inherit_env: DRRUN_TEST_WANTED
"#,
    )
    .unwrap();
    let out = crate::support::run_cmd(
        drrun()
            .current_dir(dir.path())
            .env("DRRUN_TEST_TOKEN_SOURCE", "tok-secret-value")
            .env("DRRUN_TEST_UNRELATED", "x")
            .env("DRRUN_TEST_WANTED", "y")
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
            .arg(&pb)
            .arg("--state-dir")
            .arg(dir.path().join("state")),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plain = std::fs::read_to_string(dir.path().join("plain.env")).unwrap();
    assert!(
        plain.contains("TOKEN=tok-secret-value\n"),
        "declared: {plain}"
    );
    assert!(plain.lines().any(|l| l.starts_with("PATH=")), "{plain}");
    for absent in [
        "DRRUN_TEST_TOKEN_SOURCE",
        "DRRUN_TEST_UNRELATED",
        "AWS_SECRET_ACCESS_KEY",
        "DRRUN_TEST_WANTED",
    ] {
        assert!(
            !plain.contains(absent),
            "{absent} reached the child: {plain}"
        );
    }
    let inherits = std::fs::read_to_string(dir.path().join("inherits.env")).unwrap();
    assert!(inherits.contains("DRRUN_TEST_WANTED=y\n"), "{inherits}");
    assert!(!inherits.contains("tok-secret-value"), "{inherits}");
}

#[test]
fn an_interrupted_restore_says_what_it_left_behind() {
    let c = Cluster::start();
    c.sql("postgres", "CREATE DATABASE dr");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("daily.sql");
    std::fs::write(
        &archive,
        "CREATE TABLE a (x int);\nINSERT INTO a VALUES (1);\nSELECT pg_sleep(60);\nCREATE TABLE b (x int);\n",
    )
    .unwrap();
    let pb = dir.path().join("restore.yaml");
    std::fs::write(
        &pb,
        format!(
            r#"version: 1
name: restore
secrets: {{ db_url: {{ env: DRRUN_TEST_DB_URL }} }}
steps:
  restore:
    kind: pg.restore
    with: {{ archive: {archive}, url: "{{{{ secrets.db_url }}}}", recreate: true, pg_bin: {bin} }}
"#,
            archive = archive.display(),
            bin = c.bin.display()
        ),
    )
    .unwrap();
    let child = spawn(dir.path(), &pb, &[("DRRUN_TEST_DB_URL", c.url("dr"))]);
    let sleeping = || {
        c.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' \
             AND application_name LIKE 'drrun/%/restore'",
        ) != "0"
    };
    assert!(
        wait_for(Duration::from_secs(30), sleeping),
        "the restore never got to the sleep"
    );
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("restore: cancel confirmed"), "{stderr}");
    let records = journal(&dir.path().join("state"));
    let cancelled = records
        .iter()
        .find(|r| r["type"] == "step_cancelled")
        .expect("the restore is recorded cancelled");
    let left = cancelled["left"].as_str().unwrap_or_default();
    assert!(
        left.contains("the DR database `dr` was dropped and recreated: it holds a partial restore"),
        "{cancelled}"
    );
    // The report says it too.
    let report = crate::support::run_cmd(
        drrun()
            .args(["report", "--format", "json", "--state-dir"])
            .arg(dir.path().join("state")),
    );
    assert!(
        report.stdout.contains("holds a partial restore"),
        "{}",
        report.stdout
    );
    assert!(!sleeping(), "the restore's statement still runs");
}

#[test]
fn a_resume_ends_what_the_killed_attempt_left_on_the_server_before_running_again() {
    let c = dr_cluster();
    let dir = tempfile::tempdir().unwrap();
    let write = |sleep: u32| {
        slow_sql(
            dir.path(),
            &c,
            &format!("UPDATE t SET v = v + 1 FROM (SELECT pg_sleep({sleep})) s"),
        )
    };
    let pb = write(60);
    let env = [("DRRUN_TEST_DB_URL", c.url("dr"))];
    let child = spawn(dir.path(), &pb, &env);
    let active = || active(&c, "UPDATE t SET v = v + 1");
    assert!(
        wait_for(Duration::from_secs(30), active),
        "the UPDATE never started"
    );
    // drrun dies without a chance to cancel: psql dies with it, the statement runs on.
    signal(&child, libc::SIGKILL);
    let _ = child.wait_with_output();
    assert!(
        active(),
        "the killed attempt's statement runs on the server"
    );
    write(0);
    let out = crate::support::run_cmd(
        drrun()
            .current_dir(dir.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(["resume", "--state-dir"])
            .arg(dir.path().join("state")),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("ended 1 session(s) an earlier attempt of this step left"),
        "{}",
        out.stderr
    );
    // The killed attempt was rolled back; only the resumed one counted.
    assert_eq!(c.sql("dr", "SELECT v FROM t"), "1");
    assert!(!active());
}
