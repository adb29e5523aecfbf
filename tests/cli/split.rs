//! `pg.restore` loading the table that holds most of a dump through several sessions
//! (`split_tables`), against real pg_dump archives: every value COPY text escapes comes
//! back as it was, the indexes, constraints and sequences after it, a damaged block
//! fails the step, and an interrupted or killed load resumes into the same database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cancel::{signal, spawn};
use crate::support::pg::{Cluster, PASSWORD};
use crate::support::{drrun, journal, run_cmd, wait_for};

/// `big` holds nearly all the data, with the values COPY text escapes: newlines, tabs,
/// backslashes, a lone `\.`, NULLs, empty strings, non-ASCII, bytea, jsonb, xml, arrays.
/// Its CHECK pauses one row's insert while `drrun_test.pause` is on in the inserting
/// session (from `PGOPTIONS`), so a test can stop drrun in the middle of the load.
const SOURCE_SQL: &str = r#"
CREATE FUNCTION pause_at(i bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF i = 150000 AND current_setting('drrun_test.pause', true) = 'on' THEN PERFORM pg_sleep(120); END IF;
  RETURN true;
END $$;
CREATE TABLE big (id bigserial PRIMARY KEY CHECK (pause_at(id)), t text, b bytea, j jsonb, x xml, a int[], n numeric);
INSERT INTO big (t, b, j, x, a, n)
SELECT CASE WHEN g % 7 = 0 THEN E'line\nbreak\ttab\\back' WHEN g % 11 = 0 THEN NULL
            WHEN g % 13 = 0 THEN '' WHEN g % 17 = 0 THEN E'\\.' ELSE md5(g::text) || ' é😀' END,
       decode(md5(g::text), 'hex'), jsonb_build_object('g', g, 'q', E'\"\\'),
       CASE WHEN g % 5 = 0 THEN '<a>x &amp; y</a>'::xml END, ARRAY[g, g + 1], g / 7.0
FROM generate_series(1, 300000) g;
CREATE INDEX ON big (t);
CREATE TABLE owners (id int PRIMARY KEY, big_id bigint REFERENCES big (id));
INSERT INTO owners SELECT g, g FROM generate_series(1, 100) g;
"#;

/// What the restored database must equal: every row of `big`, its sequence, its
/// indexes and the constraint that points at it.
const DIGEST_SQL: &str = "SELECT (SELECT count(*) || ' ' || md5(string_agg(big::text, '|' ORDER BY id)) FROM big) \
   || ' seq ' || (SELECT last_value FROM big_id_seq) \
   || ' indexes ' || (SELECT count(*) FROM pg_indexes WHERE tablename = 'big') \
   || ' fk ' || (SELECT count(*) FROM pg_constraint WHERE conname = 'owners_big_id_fkey' AND convalidated)";

fn source(dir: &Path) -> (Cluster, PathBuf) {
    let c = Cluster::start();
    c.sql("postgres", "CREATE DATABASE src");
    c.sql("src", SOURCE_SQL);
    // The roles a managed server gives: an admin that is not a superuser, and the
    // application role that owns the DR database and runs the restore.
    c.sql(
        "postgres",
        &format!(
            "CREATE ROLE dradmin LOGIN CREATEDB NOSUPERUSER PASSWORD '{PASSWORD}';\
             CREATE ROLE drapp LOGIN NOSUPERUSER PASSWORD '{PASSWORD}';\
             GRANT drapp TO dradmin;"
        ),
    );
    c.sql("postgres", "CREATE DATABASE dr OWNER drapp");
    let archive = dir.join("daily.pgdump");
    let out = c
        .client("pg_dump")
        .args(["-Fc", "-d", "src", "-f"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (c, archive)
}

/// The restore's connections, as `drapp` (url) and `dradmin` (maintenance_url).
fn role_env(c: &Cluster) -> Vec<(&'static str, String)> {
    let as_role = |role: &str, db: &str| {
        c.url(db).replacen(
            "postgresql://postgres:",
            &format!("postgresql://{role}:"),
            1,
        )
    };
    vec![
        ("DRRUN_TEST_DB_URL", as_role("drapp", "dr")),
        ("DRRUN_TEST_ADMIN_URL", as_role("dradmin", "postgres")),
    ]
}

fn playbook(dir: &Path, c: &Cluster, archive: &Path, extra: &str) -> PathBuf {
    let pb = dir.join("restore.yaml");
    std::fs::write(
        &pb,
        format!(
            r#"version: 1
name: split
secrets:
  db_url: {{ env: DRRUN_TEST_DB_URL }}
  admin_url: {{ env: DRRUN_TEST_ADMIN_URL }}
steps:
  restore:
    kind: pg.restore
    with: {{ archive: {}, url: "{{{{ secrets.db_url }}}}", maintenance_url: "{{{{ secrets.admin_url }}}}", pg_bin: {}, recreate: true, no_owner: true, jobs: 2{extra} }}
"#,
            archive.display(),
            c.bin.display()
        ),
    )
    .unwrap();
    pb
}

fn run(
    dir: &Path,
    c: &Cluster,
    archive: &Path,
    extra: &str,
) -> (crate::support::Out, serde_json::Value) {
    let pb = playbook(dir, c, archive, extra);
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let out = run_cmd(
        drrun()
            .envs(role_env(c))
            .arg(&pb)
            .arg("--state-dir")
            .arg(&state),
    );
    let split = journal(&state)
        .into_iter()
        .find(|r| r["type"] == "step_succeeded")
        .map(|r| r["outputs"]["split_table"].clone())
        .unwrap_or_default();
    (out, split)
}

#[test]
fn the_table_holding_most_of_a_dump_is_loaded_through_several_sessions_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (c, archive) = source(dir.path());
    let want = c.sql("src", DIGEST_SQL);
    assert!(
        want.starts_with("300000 ") && want.ends_with("indexes 2 fk 1"),
        "{want}"
    );

    let (out, split) = run(dir.path(), &c, &archive, "");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(split["table"], "TABLE DATA public.big", "{}", out.stderr);
    assert_eq!(split["sessions"], 2);
    assert!(
        out.stderr.contains("loading TABLE DATA public.big")
            && out
                .stderr
                .contains("TABLE DATA public.big: 300000 rows loaded"),
        "{}",
        out.stderr
    );
    assert_eq!(c.sql("dr", DIGEST_SQL), want);

    // Turned off, pg_restore loads it with one job, to the same database.
    let (out, split) = run(dir.path(), &c, &archive, ", split_tables: false");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(split.is_null(), "{split}");
    assert!(!out.stderr.contains("rows loaded"), "{}", out.stderr);
    assert_eq!(c.sql("dr", DIGEST_SQL), want);

    // A byte flipped inside the table's compressed data: the framing is whole, so the
    // block check passes; the load fails the step, which says what it left.
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    let bad = dir.path().join("flipped.pgdump");
    std::fs::write(&bad, &bytes).unwrap();
    let (out, _) = run(dir.path(), &c, &bad, "");
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("archive whole")
            && out.stderr.contains("TABLE DATA public.big")
            && out.stderr.contains("partial restore")
            && !out.stderr.contains("rows loaded"),
        "{}",
        out.stderr
    );
}

/// drrun stopped while one session's COPY is paused in the middle of `big` (`signal`),
/// then resumed without the pause: the resumed restore is the whole database.
fn stopped_in_the_load_then_resumed(sig: i32) {
    let dir = tempfile::tempdir().unwrap();
    let (c, archive) = source(dir.path());
    let want = c.sql("src", DIGEST_SQL);
    let pb = playbook(dir.path(), &c, &archive, "");
    let mut paused = role_env(&c);
    paused.push(("PGOPTIONS", "-c drrun_test.pause=on".to_string()));
    let child = spawn(dir.path(), &pb, &paused);
    let pausing = || {
        c.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY public.big %' \
             AND wait_event = 'PgSleep' AND application_name LIKE 'drrun/%/restore'",
        ) == "1"
    };
    assert!(
        wait_for(Duration::from_secs(60), pausing),
        "no session of the load reached the paused row"
    );
    signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("rows loaded"), "{stderr}");
    if sig == libc::SIGINT {
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        // The paused COPY was cancelled on the server, not left to commit.
        assert!(!pausing(), "the paused COPY still runs");
        let cancelled = journal(&dir.path().join("state"))
            .into_iter()
            .find(|r| r["type"] == "step_cancelled")
            .expect("the restore is recorded cancelled");
        assert!(
            cancelled["left"]
                .as_str()
                .unwrap_or_default()
                .contains("partial restore"),
            "{cancelled}"
        );
    }
    let out = run_cmd(
        drrun()
            .envs(role_env(&c))
            .args(["resume", "--state-dir"])
            .arg(dir.path().join("state")),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("TABLE DATA public.big: 300000 rows loaded"),
        "{}",
        out.stderr
    );
    assert_eq!(c.sql("dr", DIGEST_SQL), want);
    assert!(!pausing());
}

#[test]
fn a_load_interrupted_in_the_middle_is_cancelled_on_the_server_and_resumes_whole() {
    stopped_in_the_load_then_resumed(libc::SIGINT);
}

#[test]
fn a_load_killed_in_the_middle_resumes_whole() {
    stopped_in_the_load_then_resumed(libc::SIGKILL);
}
