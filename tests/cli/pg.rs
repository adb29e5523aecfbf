//! `pg.restore` and `pg.sql` against a real `PostgreSQL` cluster started for the test.

use std::path::Path;

use crate::support::pg::{Cluster, PASSWORD};
use crate::support::{drrun, journal, run_cmd};

const SOURCE_SQL: &str = r"
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TABLE users (id serial PRIMARY KEY, email citext UNIQUE NOT NULL, last_login timestamptz);
INSERT INTO users (email, last_login)
  SELECT 'user' || g || '@example.com', now() - (g || ' minutes')::interval FROM generate_series(1, 3000) g;
CREATE TABLE pages (id serial PRIMARY KEY, title text NOT NULL, body text, owner_id int REFERENCES users(id));
INSERT INTO pages (title, body, owner_id)
  SELECT 'Page ' || g, repeat('lorem ipsum ', g % 50), 1 + g % 3000 FROM generate_series(1, 2000) g;
CREATE TABLE wagtailcore_site (id serial PRIMARY KEY, hostname text, port int, is_default_site bool);
INSERT INTO wagtailcore_site (hostname, port, is_default_site) VALUES ('www.acme.example.com', 443, true), ('old.acme.example.com', 80, false);
";

/// Row count and content checksum of every table, to compare source and restore.
fn fingerprint(c: &Cluster, db: &str) -> String {
    ["users", "pages", "wagtailcore_site"]
        .iter()
        .map(|t| c.sql(db, &format!("SELECT count(*) || ':' || md5(coalesce(string_agg(x::text, ',' ORDER BY id), '')) FROM {t} x")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn dump(c: &Cluster, dir: &Path, format: &str) -> std::path::PathBuf {
    let path = dir.join(format!("daily-acme-202611240300.{format}"));
    let flag = match format {
        "custom" => "-Fc",
        "directory" => "-Fd",
        "tar" => "-Ft",
        _ => "-Fp",
    };
    let out = c
        .client("pg_dump")
        .args([flag, "-d", "src", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if format == "plain-gzip" {
        let gz = dir.join("daily-acme.sql.gz");
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -c '{}' > '{}'", path.display(), gz.display()))
            .status()
            .unwrap();
        assert!(status.success());
        return gz;
    }
    path
}

fn playbook(dir: &Path, c: &Cluster, body: &str) -> std::path::PathBuf {
    let path = dir.join("restore.yaml");
    let text = format!(
        "version: 1\nname: pg\nvars:\n  pg_bin: {}\nsecrets:\n  db_url: {{ env: DRRUN_TEST_DB_URL }}\n{body}",
        c.bin.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run_playbook(dir: &Path, url: &str, path: &Path) -> crate::support::Out {
    run_cmd(
        drrun()
            .current_dir(dir)
            .env("DRRUN_TEST_DB_URL", url)
            .arg(path)
            .arg("--state-dir")
            .arg(dir.join("state")),
    )
}

fn outputs(dir: &Path, step: &str) -> serde_json::Value {
    journal(&dir.join("state"))
        .into_iter()
        .rev()
        .find(|r| r["type"] == "step_succeeded" && r["step"] == step)
        .map(|r| r["outputs"].clone())
        .unwrap_or_default()
}

#[test]
fn restores_every_archive_format_and_proves_the_data() {
    let c = Cluster::start();
    c.sql("postgres", "CREATE DATABASE src");
    c.sql("src", SOURCE_SQL);
    let expected = fingerprint(&c, "src");
    let dir = tempfile::tempdir().unwrap();
    for format in ["custom", "directory", "tar", "plain", "plain-gzip"] {
        let archive = dump(&c, dir.path(), format);
        let db = format!("dr_{}", format.replace('-', "_"));
        let jobs = if format == "directory" {
            "jobs: 2"
        } else {
            "single_transaction: false"
        };
        let schema = if format == "custom" {
            "schema: public"
        } else {
            "no_privileges: true"
        };
        let pb = playbook(
            dir.path(),
            &c,
            &format!(
                r#"
steps:
  restore:
    kind: pg.restore
    with:
      archive: {archive}
      url: "{{{{ secrets.db_url }}}}"
      pg_bin: "{{{{ vars.pg_bin }}}}"
      recreate: true
      pre_sql: ["CREATE EXTENSION IF NOT EXISTS citext"]
      no_owner: true
      {schema}
      {jobs}
  site:
    kind: pg.sql
    needs: [restore]
    with:
      url: "{{{{ secrets.db_url }}}}"
      pg_bin: "{{{{ vars.pg_bin }}}}"
      sql: UPDATE wagtailcore_site SET hostname = 'dr.acme.example.com' WHERE is_default_site RETURNING id, hostname
      expect: {{ rows: 1 }}
  users:
    kind: pg.sql
    needs: [restore]
    with:
      url: "{{{{ secrets.db_url }}}}"
      pg_bin: "{{{{ vars.pg_bin }}}}"
      sql: SELECT count(*) FROM users
      expect: {{ scalar: {{ at_least: 1000 }} }}
  fresh:
    kind: pg.sql
    needs: [restore]
    with:
      url: "{{{{ secrets.db_url }}}}"
      pg_bin: "{{{{ vars.pg_bin }}}}"
      sql: SELECT max(last_login) FROM users
      expect: {{ scalar: {{ newer_than: 26h }} }}
"#,
                archive = archive.display()
            ),
        );
        let out = run_playbook(dir.path(), &c.url(&db), &pb);
        assert_eq!(out.code, 0, "{format}: {}", out.stderr);
        let restored = outputs(dir.path(), "restore");
        assert_eq!(
            restored["format"], format,
            "{format}: detected from the header"
        );
        assert_eq!(restored["tables"], 3);
        assert_eq!(restored["largest_tables"][0]["table"], "public.pages");
        assert_eq!(restored["largest_tables"][0]["rows_estimate"], 2000);
        assert!(restored["size_bytes"].as_u64().unwrap() > 1_000_000);
        // `jobs: auto` is the default: bounded by the cores and the 3 tables with data.
        let (jobs, why) = (
            restored["jobs"].as_u64().unwrap(),
            restored["jobs_reason"].as_str().unwrap().to_string(),
        );
        match format {
            "custom" => {
                assert!(
                    why.starts_with("auto: ") && why.contains("3 table(s) with data"),
                    "{why}"
                );
                assert!((1..=3).contains(&jobs), "{jobs}");
            }
            "directory" => assert_eq!((jobs, why.as_str()), (2, "set by the playbook")),
            _ => assert_eq!(jobs, 1, "{format}: {why}"),
        }
        assert!(
            restored["session_settings"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("synchronous_commit=off")),
            "{restored}"
        );
        let site = outputs(dir.path(), "site");
        assert_eq!(site["row_count"], 1);
        assert_eq!(site["rows"][0]["hostname"], "dr.acme.example.com");
        // The data matches the source, except the site row the drill just changed.
        c.sql(
            &db,
            "UPDATE wagtailcore_site SET hostname = 'www.acme.example.com' WHERE is_default_site",
        );
        assert_eq!(
            fingerprint(&c, &db),
            expected,
            "{format}: restored data differs from the source"
        );
        let text = std::fs::read_to_string(
            dir.path()
                .join("state")
                .join("runs")
                .read_dir()
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path()
                .join("journal.jsonl"),
        )
        .unwrap();
        assert!(!text.contains(PASSWORD), "the password reached the journal");
        std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    }
}

#[test]
fn the_restore_sessions_run_with_the_settings_the_outputs_list() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    // A plain SQL archive that reports the settings its own session has.
    let archive = dir.path().join("settings.sql");
    std::fs::write(
        &archive,
        "-- settings probe\nSELECT 'probe sc=' || current_setting('synchronous_commit') || ' mwm=' || current_setting('maintenance_work_mem');\n",
    )
    .unwrap();
    let body = |tune: bool| {
        format!(
            "steps:\n  restore:\n    kind: pg.restore\n    with:\n      archive: {}\n      url: \"{{{{ secrets.db_url }}}}\"\n      pg_bin: \"{{{{ vars.pg_bin }}}}\"\n      recreate: true\n      tune_session: {tune}\n",
            archive.display()
        )
    };
    let pb = playbook(dir.path(), &c, &body(true));
    let out = run_playbook(dir.path(), &c.url("dr_probe"), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let log = run_cmd(
        drrun()
            .args(["status", "--log", "restore", "--state-dir"])
            .arg(dir.path().join("state")),
    );
    assert!(
        log.stdout.contains("probe sc=off mwm=512MB"),
        "{}",
        log.stdout
    );
    // Off, the server's defaults stay, and the outputs say so.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let pb = playbook(dir.path(), &c, &body(false));
    let out = run_playbook(dir.path(), &c.url("dr_probe"), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        outputs(dir.path(), "restore")["session_settings"],
        serde_json::json!([])
    );
    let log = std::fs::read_to_string(
        std::fs::read_dir(dir.path().join("state/runs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("logs/restore.log"),
    )
    .unwrap();
    assert!(log.contains("probe sc=on"), "{log}");

    // A DR server (here its role) set up with more maintenance_work_mem keeps it: the
    // tuning never lowers what the sessions would have anyway.
    c.sql(
        "postgres",
        "ALTER ROLE postgres SET maintenance_work_mem = '1GB'",
    );
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let pb = playbook(dir.path(), &c, &body(true));
    let out = run_playbook(dir.path(), &c.url("dr_probe"), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        outputs(dir.path(), "restore")["session_settings"],
        serde_json::json!([
            "synchronous_commit=off",
            "maintenance_work_mem=1GB (the server's)"
        ])
    );
    let log = run_cmd(
        drrun()
            .args(["status", "--log", "restore", "--state-dir"])
            .arg(dir.path().join("state")),
    );
    assert!(
        log.stdout.contains("probe sc=off mwm=1GB"),
        "{}",
        log.stdout
    );
}

#[test]
fn recreate_terminates_sessions_and_restore_errors_are_honest() {
    let c = Cluster::start();
    c.sql("postgres", "CREATE DATABASE src");
    c.sql("src", SOURCE_SQL);
    let dir = tempfile::tempdir().unwrap();
    let archive = dump(&c, dir.path(), "custom");

    // An open session on the target does not stop `recreate`.
    c.sql("postgres", "CREATE DATABASE busy");
    let mut holder = c
        .client("psql")
        .args(["-X", "-d", "busy", "-c", "SELECT pg_sleep(60)"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let restore = |extra: &str, recreate: bool| {
        format!(
            r#"
steps:
  restore:
    kind: pg.restore
    with:
      archive: {}
      url: "{{{{ secrets.db_url }}}}"
      pg_bin: "{{{{ vars.pg_bin }}}}"
      recreate: {recreate}
      no_owner: true
      {extra}
"#,
            archive.display()
        )
    };
    let pb = playbook(dir.path(), &c, &restore("", true));

    // `plan` previews read-only: the target, what would happen to it, the archive's TOC.
    let plan = run_cmd(
        drrun()
            .current_dir(dir.path())
            .env("DRRUN_TEST_DB_URL", c.url("busy"))
            .arg("plan")
            .arg(&pb),
    );
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(plan.stdout.contains("target exists ("), "{}", plan.stdout);
    assert!(
        plan.stdout
            .contains("would terminate other sessions, drop and recreate it"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("archive: custom format;") && plan.stdout.contains(" 3 table, "),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("url=<secret:db_url>") && !plan.stdout.contains(PASSWORD),
        "{}",
        plan.stdout
    );
    let offline = run_cmd(
        drrun()
            .current_dir(dir.path())
            .args(["plan", "--offline"])
            .arg(&pb),
    );
    assert!(
        offline
            .stdout
            .contains("--offline: no service was contacted")
            && !offline.stdout.contains("target exists"),
        "{}",
        offline.stdout
    );

    let out = run_playbook(dir.path(), &c.url("busy"), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let _ = holder.wait();
    assert_eq!(c.sql("busy", "SELECT count(*) FROM users"), "3000");

    // Restoring again over existing tables: every CREATE fails. Not allowed -> failure.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let pb = playbook(dir.path(), &c, &restore("", false));
    let out = run_playbook(dir.path(), &c.url("busy"), &pb);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("not matched by `allow_errors`")
            && out.stderr.contains("already exists"),
        "{}",
        out.stderr
    );

    // The same errors, allowed: counted and passed as warnings.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let pb = playbook(
        dir.path(),
        &c,
        &restore(
            r#"allow_errors: ["already exists", "duplicate key", "multiple primary keys"]"#,
            false,
        ),
    );
    let out = run_playbook(dir.path(), &c.url("busy"), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        outputs(dir.path(), "restore")["errors_ignored"]
            .as_u64()
            .unwrap()
            >= 3
    );

    // A truncated archive: a clear error before anything is dropped.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let bytes = std::fs::read(&archive).unwrap();
    let truncated = dir.path().join("truncated.pgdump");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let pb = playbook(
        dir.path(),
        &c,
        &restore("", true).replace(
            &archive.display().to_string(),
            &truncated.display().to_string(),
        ),
    );
    let out = run_playbook(dir.path(), &c.url("busy"), &pb);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("is truncated or corrupt"),
        "{}",
        out.stderr
    );
    assert_eq!(
        c.sql("busy", "SELECT count(*) FROM users"),
        "3000",
        "nothing was dropped"
    );

    // A wrong password: a clear error, and the password appears nowhere.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let pb = playbook(dir.path(), &c, &restore("", true));
    let wrong = c.url("busy").replace(PASSWORD, "Wr0ngPassw0rd");
    let out = run_playbook(dir.path(), &wrong, &pb);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("password authentication failed"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Wr0ngPassw0rd") && !out.stdout.contains("Wr0ngPassw0rd"));
    let journal_text = serde_json::to_string(&journal(&dir.path().join("state"))).unwrap();
    assert!(!journal_text.contains("Wr0ngPassw0rd"));

    // Guards: refused before connecting; the guarded database is untouched.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let guarded = playbook(
        dir.path(),
        &c,
        &format!("guards: {{ pg_databases: [busy] }}\n{}", restore("", true)),
    );
    // The URL is a secret: refused when the run starts, before step 1 (exit 2).
    let out = run_playbook(dir.path(), &c.url("busy"), &guarded);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("refusing to touch PostgreSQL database `busy`"),
        "{}",
        out.stderr
    );
    assert_eq!(c.sql("busy", "SELECT count(*) FROM users"), "3000");
}

/// An `s3://` archive is streamed into pg_restore or downloaded first, as `transfer`
/// says (`auto` decides, and the plan shows the same decision); a downloaded copy never
/// outlives the step, and only a custom-format archive can stream.
#[test]
fn restores_from_s3_streamed_or_downloaded_as_transfer_says() {
    let c = Cluster::start();
    c.sql("postgres", "CREATE DATABASE src");
    c.sql("src", SOURCE_SQL);
    let expected = fingerprint(&c, "src");
    let dir = tempfile::tempdir().unwrap();
    let archive = dump(&c, dir.path(), "custom");
    let server = crate::support::s3::S3Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s3 = server.client();
    rt.block_on(async {
        s3.create_bucket().bucket("dumps").send().await.unwrap();
        let body = std::fs::read(&archive).unwrap();
        s3.put_object()
            .bucket("dumps")
            .key("acme/daily-acme.pgdump")
            .body(body.into())
            .send()
            .await
            .unwrap();
        s3.put_object()
            .bucket("dumps")
            .key("acme/plain.sql")
            .body(
                b"CREATE TABLE from_sql (id int); INSERT INTO from_sql VALUES (7);"
                    .to_vec()
                    .into(),
            )
            .send()
            .await
            .unwrap();
    });
    let body = |key: &str, extra: &str| {
        format!(
            r#"
steps:
  restore:
    kind: pg.restore
    with:
      archive: s3://dumps/{key}
      s3: {{ endpoint: "{}", path_style: true, region: us-east-1 }}
      url: "{{{{ secrets.db_url }}}}"
      pg_bin: "{{{{ vars.pg_bin }}}}"
      recreate: true
      no_owner: true
      {extra}
"#,
            server.endpoint()
        )
    };
    let state = dir.path().join("state");
    let drrun_with = |args: &[&str], pb: &Path| {
        let mut cmd = drrun();
        crate::support::s3::with_credentials(&mut cmd, dir.path())
            .current_dir(dir.path())
            .env("DRRUN_TEST_DB_URL", c.url("dr_stream"))
            .args(args)
            .arg(pb);
        run_cmd(&mut cmd)
    };
    let restore_from = |pb: &Path| {
        let _ = std::fs::remove_dir_all(&state);
        let state = state.to_str().unwrap();
        drrun_with(&["run", "--state-dir", state], pb)
    };
    let work_files = || {
        let run = std::fs::read_dir(state.join("runs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::read_dir(run.join("work")).map_or(0, Iterator::count)
    };

    // Streamed: one job whatever `jobs` says, and no file.
    let pb = playbook(
        dir.path(),
        &c,
        &body("acme/daily-acme.pgdump", "transfer: stream\n      jobs: 2"),
    );
    let out = restore_from(&pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("`jobs` does not apply: parallel restore needs a file"),
        "{}",
        out.stderr
    );
    let restored = outputs(dir.path(), "restore");
    assert_eq!(restored["mode"], "stream");
    assert_eq!(restored["jobs"], 1);
    assert_eq!(fingerprint(&c, "dr_stream"), expected);
    assert_eq!(work_files(), 0, "no temporary file");

    // Downloaded: restored from a file with parallel jobs; the copy is gone afterwards.
    let pb = playbook(
        dir.path(),
        &c,
        &body(
            "acme/daily-acme.pgdump",
            "transfer: download\n      jobs: 2",
        ),
    );
    let out = restore_from(&pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let restored = outputs(dir.path(), "restore");
    assert_eq!(restored["mode"], "download", "{restored}");
    assert_eq!(restored["jobs"], 2, "{restored}");
    assert_eq!(fingerprint(&c, "dr_stream"), expected);
    assert_eq!(work_files(), 0, "the downloaded copy was removed");

    // `auto` (the default) streams a small archive, and says why, in the plan as in the run.
    let pb = playbook(dir.path(), &c, &body("acme/daily-acme.pgdump", ""));
    let plan = drrun_with(&["plan"], &pb);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout
            .contains("custom format): would be streamed into pg_restore (auto: ")
            && plan
                .stdout
                .contains("too small for parallel jobs to repay a copy"),
        "{}",
        plan.stdout
    );
    let out = restore_from(&pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let restored = outputs(dir.path(), "restore");
    assert_eq!(restored["mode"], "stream");
    assert!(
        restored["mode_reason"]
            .as_str()
            .unwrap()
            .contains("too small"),
        "{restored}"
    );

    // A plain SQL script cannot stream: `auto` downloads it and restores it with psql...
    let pb = playbook(dir.path(), &c, &body("acme/plain.sql", ""));
    let out = restore_from(&pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let restored = outputs(dir.path(), "restore");
    assert_eq!(restored["mode"], "download");
    assert_eq!(restored["format"], "plain");
    assert_eq!(c.sql("dr_stream", "SELECT id FROM from_sql"), "7");
    // ...and `transfer: stream` refuses it before the target is touched.
    let pb = playbook(dir.path(), &c, &body("acme/plain.sql", "transfer: stream"));
    let out = restore_from(&pb);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("only a custom-format (pg_dump -Fc) archive can be streamed"),
        "{}",
        out.stderr
    );
    assert_eq!(
        c.sql("dr_stream", "SELECT id FROM from_sql"),
        "7",
        "the target was not touched"
    );
}

/// Managed PostgreSQL: the DR database is recreated by an admin that is not a superuser
/// (CREATEDB, member of the application's role) and restored into by the application's
/// role, which owns nothing else. The database keeps its owner, `pre_sql` (an extension)
/// runs as the admin in the target, and the restored tables belong to the app.
#[test]
fn role_split_restore_with_a_non_superuser_admin_and_an_app_role() {
    let c = Cluster::start();
    c.sql("postgres", "CREATE DATABASE src");
    c.sql("src", SOURCE_SQL);
    let expected = fingerprint(&c, "src");
    c.sql(
        "postgres",
        &format!(
            "CREATE ROLE dradmin LOGIN CREATEDB NOSUPERUSER PASSWORD '{PASSWORD}';\
             CREATE ROLE drapp LOGIN NOSUPERUSER PASSWORD '{PASSWORD}';\
             GRANT drapp TO dradmin;"
        ),
    );
    c.sql("postgres", "CREATE DATABASE acme_dr OWNER drapp");
    assert_eq!(
        c.sql(
            "postgres",
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'dradmin'"
        ),
        "f"
    );
    let dir = tempfile::tempdir().unwrap();
    let archive = dump(&c, dir.path(), "custom");
    let as_role = |role: &str, db: &str| {
        c.url(db).replacen(
            "postgresql://postgres:",
            &format!("postgresql://{role}:"),
            1,
        )
    };
    let pb = dir.path().join("split.yaml");
    std::fs::write(
        &pb,
        format!(
            r#"version: 1
name: split
secrets:
  db_url: {{ env: APP_URL }}
  admin_url: {{ env: ADMIN_URL }}
steps:
  restore:
    kind: pg.restore
    with:
      archive: {archive}
      url: "{{{{ secrets.db_url }}}}"
      maintenance_url: "{{{{ secrets.admin_url }}}}"
      recreate: true
      pre_sql: ["CREATE EXTENSION IF NOT EXISTS citext"]
      no_owner: true
      no_privileges: true
      schema: public
      pg_bin: {bin}
"#,
            archive = archive.display(),
            bin = c.bin.display()
        ),
    )
    .unwrap();
    // The drill as the roles a managed server gives: an application role, and an
    // admin that is not a superuser.
    let run_split = || {
        run_cmd(
            drrun()
                .current_dir(dir.path())
                .env("APP_URL", as_role("drapp", "acme_dr"))
                .env("ADMIN_URL", as_role("dradmin", "postgres"))
                .arg(&pb)
                .arg("--state-dir")
                .arg(dir.path().join("state")),
        )
    };
    let out = run_split();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("(owner drapp)"), "{}", out.stderr);
    assert_eq!(fingerprint(&c, "acme_dr"), expected);
    assert_eq!(
        c.sql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'acme_dr'"
        ),
        "drapp"
    );
    assert_eq!(
        c.sql(
            "acme_dr",
            "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'public'"
        ),
        "drapp"
    );
    assert_eq!(
        c.sql(
            "acme_dr",
            "SELECT count(*) FROM pg_extension WHERE extname = 'citext'"
        ),
        "1"
    );

    // The same split with `restore_into: temporary`: the admin creates the temporary
    // database for the app role, and renames it over the target, without superuser.
    let text = std::fs::read_to_string(&pb).unwrap();
    std::fs::write(
        &pb,
        text.replace("      recreate: true\n", "      restore_into: temporary\n"),
    )
    .unwrap();
    let out = run_split();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("acme_dr_drrun_new is now acme_dr"),
        "{}",
        out.stderr
    );
    assert_eq!(fingerprint(&c, "acme_dr"), expected);
    assert_eq!(
        c.sql(
            "postgres",
            "SELECT string_agg(datname || ':' || pg_get_userbyid(datdba), ',') FROM pg_database WHERE datname LIKE 'acme_dr%'"
        ),
        "acme_dr:drapp"
    );
}

/// libpq's conventions work as they do for psql: the host, port, user and database from
/// a `PGSERVICE` entry of pg_service.conf, the password from a `.pgpass` named by
/// `PGPASSFILE`, `PGSSLMODE` from the environment; the playbook's settings win; and the
/// guards judge the database the service really names.
#[test]
fn pgservice_pgpass_and_pgsslmode_are_honoured() {
    let c = Cluster::start();
    c.sql("postgres", "CREATE DATABASE acme_dr");
    c.sql("postgres", "CREATE DATABASE acme_prod");
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("pg_service.conf");
    std::fs::write(
        &services,
        format!(
            "[dr]\nhost={}\nport={}\nuser=postgres\ndbname=acme_dr\n\n[prod]\nhost={}\nport={}\nuser=postgres\ndbname=acme_prod\n",
            c.socket_dir.display(),
            c.port,
            c.socket_dir.display(),
            c.port
        ),
    )
    .unwrap();
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, format!("*:*:*:postgres:{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let pb = dir.path().join("svc.yaml");
    std::fs::write(
        &pb,
        format!(
            "version: 1\nname: svc\nguards: {{ pg_databases: [acme_prod] }}\nsteps:\n  who:\n    kind: pg.sql\n    with: {{ url: \"postgresql://\", pg_bin: {}, sql: \"SELECT current_database() || ' ' || current_user\" }}\n",
            c.bin.display()
        ),
    )
    .unwrap();
    let drill = |service: &str, sslmode: Option<&str>| {
        let mut cmd = drrun();
        cmd.current_dir(dir.path())
            .env("PGSERVICEFILE", &services)
            .env("PGSERVICE", service)
            .env("PGPASSFILE", &pgpass)
            .env_remove("PGPASSWORD")
            .arg(&pb)
            .arg("--state-dir")
            .arg(dir.path().join(format!("state-{service}")));
        if let Some(mode) = sslmode {
            cmd.env("PGSSLMODE", mode);
        }
        run_cmd(&mut cmd)
    };
    let out = drill("dr", None);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let scalar = journal(&dir.path().join("state-dr"))
        .into_iter()
        .find(|r| r["type"] == "step_succeeded")
        .unwrap()["outputs"]["scalar"]
        .clone();
    assert_eq!(scalar, "acme_dr postgres");

    // PGSSLMODE reaches the client (an invalid value is libpq's own error).
    let out = drill("dr", Some("not-a-mode"));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("sslmode"), "{}", out.stderr);

    // A read-only step (one SELECT) keeps the user's PGOPTIONS beside its own.
    let options = dir.path().join("options.yaml");
    std::fs::write(
        &options,
        format!(
            "version: 1\nname: options\nsteps:\n  path:\n    kind: pg.sql\n    with: {{ url: \"postgresql://\", pg_bin: {}, sql: \"SELECT current_setting('search_path') || ' ' || current_setting('transaction_read_only')\" }}\n",
            c.bin.display()
        ),
    )
    .unwrap();
    let out = run_cmd(
        drrun()
            .current_dir(dir.path())
            .env("PGSERVICEFILE", &services)
            .env("PGSERVICE", "dr")
            .env("PGPASSFILE", &pgpass)
            .env("PGOPTIONS", "-c search_path=acme_custom")
            .env_remove("PGPASSWORD")
            .arg(&options)
            .arg("--state-dir")
            .arg(dir.path().join("state-options")),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let scalar = journal(&dir.path().join("state-options"))
        .into_iter()
        .find(|r| r["type"] == "step_succeeded")
        .unwrap()["outputs"]["scalar"]
        .clone();
    assert_eq!(scalar, "acme_custom on");

    // The guard sees the database the service names, and refuses before step 1.
    let out = drill("prod", None);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("refusing to touch PostgreSQL database `acme_prod`"),
        "{}",
        out.stderr
    );
}

#[test]
fn plan_before_the_restore_neither_fails_on_the_database_it_creates_nor_previews_skipped_steps() {
    let c = Cluster::start();
    c.sql("postgres", "CREATE DATABASE src");
    c.sql("src", "CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
    let dir = tempfile::tempdir().unwrap();
    let archive = dump(&c, dir.path(), "custom");
    let pb = playbook(
        dir.path(),
        &c,
        &format!(
            r#"vars: {{ kube: "no", pg_bin: {bin} }}
steps:
  restore:
    kind: pg.restore
    with: {{ archive: {archive}, url: "{{{{ secrets.db_url }}}}", recreate: true, pg_bin: "{{{{ vars.pg_bin }}}}" }}
  check:
    kind: pg.sql
    needs: [restore]
    with: {{ url: "{{{{ secrets.db_url }}}}", sql: SELECT count(*) FROM t, pg_bin: "{{{{ vars.pg_bin }}}}" }}
  tag:
    kind: kube.image
    when: vars.kube == "yes"
    with: {{ namespace: acme-production, deployment: app }}
"#,
            bin = c.bin.display(),
            archive = archive.display()
        ),
    );
    // `playbook` wrote its own vars first; the test's replace them.
    let text = std::fs::read_to_string(&pb).unwrap();
    let text = text.replacen(&format!("vars:\n  pg_bin: {}\n", c.bin.display()), "", 1);
    std::fs::write(&pb, text).unwrap();
    let out = run_cmd(
        drrun()
            .current_dir(dir.path())
            .env("DRRUN_TEST_DB_URL", c.url("dr_new"))
            .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
            .arg("plan")
            .arg(&pb),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("cannot preview before `restore` runs")
            && out.stdout.contains("dr_new"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("skipped: `when` is false (vars.kube == \"yes\")"),
        "{}",
        out.stdout
    );
}

#[test]
fn restore_into_temporary_keeps_the_previous_dr_database_until_the_restore_passed() {
    let c = Cluster::start();
    c.sql("postgres", "CREATE DATABASE dr");
    c.sql(
        "dr",
        "CREATE TABLE previous (x int); INSERT INTO previous VALUES (42)",
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.sql");
    std::fs::write(
        &bad,
        "CREATE TABLE fresh (x int);\nINSERT INTO nowhere VALUES (1);\n",
    )
    .unwrap();
    let good = dir.path().join("good.sql");
    std::fs::write(
        &good,
        "CREATE TABLE fresh (x int);\nINSERT INTO fresh VALUES (7);\n",
    )
    .unwrap();
    let step = |archive: &Path| {
        format!(
            "steps:\n  restore:\n    kind: pg.restore\n    with: {{ archive: {}, url: \"{{{{ secrets.db_url }}}}\", pg_bin: \"{{{{ vars.pg_bin }}}}\", restore_into: temporary }}\n",
            archive.display()
        )
    };
    let databases = || {
        c.sql("postgres", "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'dr%'")
    };

    // A restore that fails its checks leaves the previous DR database as it was.
    let pb = playbook(dir.path(), &c, &step(&bad));
    let out = run_playbook(dir.path(), &c.url("dr"), &pb);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "the DR database `dr` is as it was; the partial restore is in `dr_drrun_new`"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(c.sql("dr", "SELECT x FROM previous"), "42");
    assert_eq!(databases(), "dr,dr_drrun_new");

    // One that passes replaces it, and nothing else is left.
    let pb = playbook(dir.path(), &c, &step(&good));
    let out = run_playbook(dir.path(), &c.url("dr"), &pb);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(c.sql("dr", "SELECT x FROM fresh"), "7");
    assert_eq!(
        c.sql(
            "dr",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'previous'"
        ),
        "0"
    );
    assert_eq!(databases(), "dr");
}
