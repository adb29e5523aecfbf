//! Snapshots of what people read: the drill report (Markdown and JUnit XML), the graph
//! and the kind listing. Times, run ids, hosts and temporary paths are filtered out.

use crate::support::{drrun, root, run, run_cmd};

/// A drill with one of every step outcome: succeeded, failed, skipped after a failed
/// dependency, skipped on purpose (`when` false), and a `finally` step.
const MIXED: &str = r#"
version: 1
name: mixed
objectives: { rto: 1h }
steps:
  prepare:
    kind: exec
    with: { argv: [echo, ready] }
  migrate:
    kind: exec
    needs: [prepare]
    with: { argv: [sh, -c, "echo 'relation \"pages\" does not exist' >&2; exit 3"] }
  smoke:
    kind: exec
    needs: [migrate]
    with: { argv: [echo, smoke] }
  media:
    kind: exec
    when: "false"
    with: { argv: [echo, media] }
finally:
  cleanup:
    kind: exec
    with: { argv: [echo, "cleanup after {{ run.status }}"] }
"#;

fn filtered(name: &str, text: &str, dir: &std::path::Path) {
    let mut settings = insta::Settings::clone_current();
    let dir = dir.display().to_string();
    settings.add_filter(&regex::escape(&dir), "[TMP]");
    settings.add_filter(r"\d{8}T\d{6}Z-[0-9a-f]{4}", "[RUN]");
    settings.add_filter(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
        "[TIME]",
    );
    settings.add_filter(r"\b\d+(\.\d+)?(ms|s)\b", "[DUR]");
    settings.add_filter(r#"time="\d+\.\d+""#, r#"time="[SECS]""#);
    settings.add_filter(&regex::escape(&hostname()), "[HOST]");
    // The version names the commit it was built from.
    settings.add_filter(
        &format!(r"{} \([^)]*\)", regex::escape(env!("CARGO_PKG_VERSION"))),
        "[VERSION]",
    );
    settings.add_filter(r" by [^ ]+( \d+)? on ", " by [USER] on ");
    settings.bind(|| insta::assert_snapshot!(name, text));
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn report_md_and_junit_show_every_step_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("mixed.yaml");
    std::fs::write(&pb, MIXED).unwrap();
    let out = run_cmd(drrun().arg(&pb));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let run_dir = std::fs::read_dir(dir.path().join(".drrun/mixed/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("report.md").exists())
        .expect("the run wrote its report");
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    let junit = std::fs::read_to_string(run_dir.join("junit.xml")).unwrap();
    filtered("report_md_mixed", &md, dir.path());
    filtered("junit_mixed", &junit, dir.path());
}

#[test]
fn graph_in_every_format() {
    for format in ["text", "dot", "mermaid"] {
        let out = run(&["graph", "--format", format, "playbooks/caktus-wagtail.yaml"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        filtered(&format!("graph_caktus_{format}"), &out.stdout, &root());
    }
}

#[test]
fn kinds_listing() {
    let out = run(&["kinds"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    filtered("kinds", &out.stdout, &root());
}
