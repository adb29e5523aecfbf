//! `validate`, `plan`, `graph`, `kinds`, `schema` on fixture and example playbooks.

use crate::support::{root, run};

fn fixture_names(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("tests/fixtures").join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            std::path::Path::new(n)
                .extension()
                .is_some_and(|e| e == "yaml")
        })
        .collect();
    names.sort();
    names
}

#[test]
fn invalid_fixtures_report_every_error_with_position() {
    for name in fixture_names("invalid") {
        let path = format!("tests/fixtures/invalid/{name}");
        let out = run(&["validate", &path]);
        assert_eq!(
            out.code, 2,
            "{path} must fail validation:\n{}{}",
            out.stdout, out.stderr
        );
        insta::assert_snapshot!(
            format!("invalid_{}", name.trim_end_matches(".yaml")),
            out.stderr
        );
    }
}

#[test]
fn valid_fixtures_and_every_example_playbook_validate() {
    let mut paths: Vec<String> = fixture_names("valid")
        .into_iter()
        .map(|n| format!("tests/fixtures/valid/{n}"))
        .collect();
    let mut examples: Vec<String> = std::fs::read_dir(root().join("playbooks"))
        .unwrap()
        .map(|e| {
            format!(
                "playbooks/{}",
                e.unwrap().file_name().into_string().unwrap()
            )
        })
        .filter(|p| {
            std::path::Path::new(p)
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml")
        })
        .collect();
    examples.sort();
    assert!(examples.len() >= 2, "playbooks/ holds the examples");
    paths.extend(examples);
    for path in paths {
        let out = run(&["validate", &path]);
        assert_eq!(out.code, 0, "{path}:\n{}", out.stderr);
        assert!(
            out.stdout.contains(&format!("{path}: ok")),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn validate_json_lists_errors_with_positions() {
    let out = run(&[
        "validate",
        "--output",
        "json",
        "tests/fixtures/invalid/unknown_kind.yaml",
    ]);
    assert_eq!(out.code, 2);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let first = &v["playbooks"][0]["errors"][0];
    assert_eq!(first["line"], 5);
    assert_eq!(first["path"], "steps.backup.kind");
    assert_eq!(first["help"], "did you mean `s3.fetch`?");
}

#[test]
fn plan_offline_renders_levels_placeholders_and_secret_markers() {
    let out = run(&[
        "plan",
        "--offline",
        "--verbose",
        "playbooks/caktus-wagtail.yaml",
        "-e",
        "project=acme",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("plan_caktus_offline", out.stdout);
    // By default a step is one line of its short settings, then what it would do.
    let short = run(&[
        "plan",
        "--offline",
        "playbooks/caktus-wagtail.yaml",
        "-e",
        "project=acme",
    ]);
    assert_eq!(short.code, 0, "{}", short.stderr);
    insta::assert_snapshot!("plan_caktus_offline_short", short.stdout);
    let json = run(&[
        "plan",
        "--offline",
        "--output",
        "json",
        "playbooks/caktus-wagtail.yaml",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let level2 = &v["phases"]["steps"][1];
    let restore = level2
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "restore")
        .unwrap();
    assert_eq!(restore["with"]["archive"], "<steps.backup.outputs.path>");
    assert_eq!(restore["with"]["url"], "<secret:db_url>");
}

#[test]
fn plan_keeps_native_types_and_vars_files_override() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.yaml");
    std::fs::write(&vars, "replicas: 3\n").unwrap();
    let out = run(&[
        "plan",
        "--offline",
        "--output",
        "json",
        "tests/fixtures/valid/parallel.yaml",
        "--vars-file",
        vars.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let scale = &v["phases"]["steps"][2][0];
    assert_eq!(scale["id"], "scale");
    assert_eq!(
        scale["with"]["replicas"], 3,
        "a lone expression keeps its number type"
    );
}

#[test]
fn graph_formats() {
    for (format, needle) in [
        ("text", "joined (exec) <- a, b"),
        ("dot", "\"a\" -> \"joined\";"),
        ("mermaid", "a --> joined"),
    ] {
        let out = run(&[
            "graph",
            "--format",
            format,
            "tests/fixtures/valid/parallel.yaml",
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.contains(needle), "{format}:\n{}", out.stdout);
    }
}

#[test]
fn committed_schema_is_current() {
    let out = run(&["schema"]);
    assert_eq!(out.code, 0);
    let committed = std::fs::read_to_string(root().join("schemas/playbook.v1.json")).unwrap();
    assert!(
        out.stdout == committed,
        "schemas/playbook.v1.json is stale: run `cargo run -- schema > schemas/playbook.v1.json`"
    );
}

#[test]
fn kinds_are_documented_from_the_code() {
    let out = run(&["kinds"]);
    for kind in [
        "exec",
        "s3.fetch",
        "pg.restore",
        "pg.sql",
        "kube.image",
        "kube.deploy",
        "kube.job",
        "kube.scale",
        "http.smoke",
    ] {
        assert!(
            out.stdout.contains(kind),
            "{kind} missing from `drrun kinds`"
        );
        let doc = run(&["kinds", kind]);
        assert_eq!(doc.code, 0);
        assert!(
            doc.stdout.contains("| setting |") && doc.stdout.contains("| output |"),
            "{}",
            doc.stdout
        );
    }
    let typo = run(&["kinds", "pg.restor"]);
    assert_eq!(typo.code, 2);
    assert!(
        typo.stderr.contains("did you mean `pg.restore`?"),
        "{}",
        typo.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["validate"]).code, 2);
    assert_eq!(run(&["no-such-playbook.yaml"]).code, 2);
    let out = run(&["run", "tests/fixtures/valid/parallel.yaml", "-e", "novalue"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("-e expects KEY=VALUE"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_override_of_a_var_the_playbook_does_not_declare_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("acme.yaml");
    std::fs::write(&vars, "project: acme\ndr_hots: dr.acme.example.com\n").unwrap();
    let out = run(&[
        "plan",
        "playbooks/caktus-wagtail.yaml",
        "--offline",
        "-e",
        "projet=acme",
        "--vars-file",
        vars.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.is_empty(), "nothing is planned: {}", out.stdout);
    let stderr = out.stderr.replace(vars.to_str().unwrap(), "[VARS_FILE]");
    insta::assert_snapshot!("unknown_var_overrides", stderr);
}

#[test]
fn every_example_playbook_passes_the_schema_and_a_misspelt_step_field_does_not() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/playbook.v1.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft7::new(&schema).expect("the schema is valid draft 7");
    let as_json = |text: &str| -> serde_json::Value { serde_yaml_ng::from_str(text).unwrap() };
    let mut checked = 0;
    for dir in ["playbooks", "tests/fixtures/valid"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let doc = as_json(&std::fs::read_to_string(&path).unwrap());
            let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 4);
    let base = "version: 1\nname: x\nsteps:\n  a:\n    kind: kube.scale\n";
    for (mistake, body) in [
        (
            "a misspelt step field",
            "    need: [b]\n    with: { namespace: dr, all: true, replicas: 0 }\n",
        ),
        (
            "an unknown kind setting",
            "    with: { namespace: dr, all: true, replicas: 0, replica: 1 }\n",
        ),
        (
            "a word for a number",
            "    with: { namespace: dr, all: true, replicas: one }\n",
        ),
        (
            "a duration without a unit",
            "    timeout: 30\n    with: { namespace: dr, all: true, replicas: 0 }\n",
        ),
    ] {
        let doc = as_json(&format!("{base}{body}"));
        assert!(!validator.is_valid(&doc), "the schema lets {mistake} pass");
    }
    assert!(validator.is_valid(&as_json(&format!(
        "{base}    timeout: 1h 30m\n    with: {{ namespace: dr, all: true, replicas: 0 }}\n"
    ))));
}

#[test]
fn committed_kind_docs_are_current() {
    let out = run(&["kinds", "--all"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let committed = std::fs::read_to_string(root().join("docs/kinds.md")).unwrap();
    assert!(
        out.stdout == committed,
        "docs/kinds.md is stale: run `cargo run -- kinds --all > docs/kinds.md`"
    );
}

#[test]
fn every_kind_example_validates_as_part_of_one_drill() {
    let out = run(&["kinds", "--output", "json", "--all"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let kinds: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let mut text = String::from(
        "version: 1\nname: examples\n\
         vars: { project: acme, prod_ns: acme-production, dr_ns: acme-dr, dr_host: dr.acme.example.com }\n\
         secrets:\n  db_url: { env: DB_URL }\n  basic_auth_password: { env: BASIC }\n  \
         admin_password: { env: ADMIN }\n  chat_token: { env: CHAT }\n\
         objectives: { rpo: 26h, rto: 1h }\nsteps:\n",
    );
    for kind in &kinds {
        let example = kind["example"].as_str().unwrap();
        assert!(
            example.contains(&format!("kind: {}", kind["name"].as_str().unwrap())),
            "the example of {} shows another kind",
            kind["name"]
        );
        for line in example.lines() {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("examples.yaml");
    std::fs::write(&pb, &text).unwrap();
    let out = run(&["validate", pb.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}\n{text}", out.stderr);
    assert!(
        out.stdout.contains(&format!("ok ({} steps", kinds.len())),
        "{}",
        out.stdout
    );
}

/// A guarded namespace reached through `-e` is refused by `validate`, `plan` and `run`
/// alike, at the line of the setting, before anything runs.
#[test]
fn a_guarded_namespace_through_a_var_override_is_refused_before_step_one() {
    for cmd in ["validate", "plan", "run"] {
        let out = run(&[
            cmd,
            "playbooks/caktus-wagtail.yaml",
            "-e",
            "project=acme",
            "-e",
            "dr_ns=acme-production",
        ]);
        assert_eq!(out.code, 2, "{cmd}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(
                "refusing to touch Kubernetes namespace `acme-production`: it matches `acme-production` in guards.kube_namespaces"
            ),
            "{cmd}: {}",
            out.stderr
        );
        // Every step that writes to the namespace is named, each at its own line.
        for line in ["caktus-wagtail.yaml:124:", "(steps.deploy.with.namespace)"] {
            assert!(out.stderr.contains(line), "{cmd}: {line}: {}", out.stderr);
        }
        assert!(
            out.stderr.contains("(finally.scale_down.with.namespace)"),
            "{cmd}: {}",
            out.stderr
        );
    }
    assert!(
        !root().join("playbooks/.drrun/caktus-wagtail").exists(),
        "no run was started"
    );
}

/// A guarded database reached through a secret (the DR URL pointing at production) is
/// known once secrets are read: `plan` reports it with exit 2, and `run` refuses before
/// its first step, naming the file and line, with every refusal at once.
#[test]
fn a_guarded_database_behind_a_secret_is_refused_before_step_one() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("guarded.yaml");
    std::fs::write(
        &pb,
        r#"version: 1
name: guarded
secrets:
  db_url: { env: GUARDED_DB_URL }
guards:
  pg_hosts: ["prod-db.*"]
  pg_databases: [acme_production]
steps:
  first:
    kind: exec
    with: { argv: [touch, first.out] }
  site:
    kind: pg.sql
    needs: [first]
    with: { url: "{{ secrets.db_url }}", sql: "UPDATE wagtailcore_site SET hostname = 'dr'" }
  check:
    kind: pg.sql
    needs: [first]
    with: { url: "{{ secrets.db_url }}", sql: "SELECT 1" }
"#,
    )
    .unwrap();
    let url = "postgresql://app:s3cret@prod-db.internal:5432/acme_production";
    let validate = crate::support::run_cmd(
        crate::support::drrun()
            .current_dir(dir.path())
            .args(["validate", "guarded.yaml"]),
    );
    assert_eq!(
        validate.code, 0,
        "validate cannot know a secret: {}",
        validate.stderr
    );

    let plan = crate::support::run_cmd(
        crate::support::drrun()
            .current_dir(dir.path())
            .env("GUARDED_DB_URL", url)
            .args(["plan", "guarded.yaml"]),
    );
    assert_eq!(plan.code, 2, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stderr
            .contains("step `site` (guard): refusing to touch PostgreSQL host `prod-db.internal`"),
        "{}",
        plan.stderr
    );

    let run = crate::support::run_cmd(
        crate::support::drrun()
            .current_dir(dir.path())
            .env("GUARDED_DB_URL", url)
            .arg("guarded.yaml"),
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    for step in [
        "guarded.yaml:12: step `site`",
        "guarded.yaml:16: step `check`",
    ] {
        assert!(run.stderr.contains(step), "{step}: {}", run.stderr);
    }
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
    assert!(
        !dir.path().join("first.out").exists(),
        "nothing ran before the refusal"
    );
    assert!(
        !dir.path().join(".drrun/guarded/runs").exists()
            || std::fs::read_dir(dir.path().join(".drrun/guarded/runs"))
                .unwrap()
                .next()
                .is_none(),
        "no run was created"
    );
}

/// Every missing secret is reported at once, before anything runs (exit 2).
#[test]
fn missing_secrets_are_reported_together_before_step_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("secrets.yaml"),
        r#"version: 1
name: secrets
secrets:
  db_url: { env: DRRUN_TEST_UNSET_DB_URL }
  admin_password: { file: no-such-password-file }
steps:
  first:
    kind: exec
    with: { argv: [touch, first.out], env: { A: "{{ secrets.db_url }}", B: "{{ secrets.admin_password }}" } }
"#,
    )
    .unwrap();
    let out = crate::support::run_cmd(
        crate::support::drrun()
            .current_dir(dir.path())
            .env_remove("DRRUN_TEST_UNSET_DB_URL")
            .arg("secrets.yaml"),
    );
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    for text in [
        "secret `db_url`: environment variable `DRRUN_TEST_UNSET_DB_URL` is not set",
        "secret `admin_password`: cannot read",
    ] {
        assert!(out.stderr.contains(text), "{text}: {}", out.stderr);
    }
    assert!(!dir.path().join("first.out").exists());
}
