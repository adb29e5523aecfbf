//! `http.smoke` against the Django-like stand-in in `tests/cli/support/webapp.py`, for fast
//! cases a real site cannot stage on demand (refusing connections, then 503s, while it comes
//! up). The real thing, a Wagtail site, is in `wagtail.rs` and `drill.rs`.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::{drrun, journal, root, run_cmd};

pub(crate) struct WebApp {
    child: Child,
    port: u16,
}

impl WebApp {
    pub(crate) fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, &[])
    }

    pub(crate) fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .arg(root().join("tests/cli/support/webapp.py"))
            .arg(port.to_string())
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs the test web app");
        Self { child, port }
    }

    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for WebApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smoke_playbook(dir: &Path, base: &str, login_assert: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
version: 1
name: smoke
secrets:
  basic: {{ env: SMOKE_BASIC }}
  admin: {{ env: SMOKE_ADMIN }}
steps:
  smoke:
    kind: http.smoke
    with:
      base_url: {base}
      basic_auth: {{ username: dr, password: "{{{{ secrets.basic }}}}" }}
      requests:
        - name: site is up
          url: /
          retry_until: {{ deadline: 30s, interval: 200ms }}
          assert: {{ status: 200, body_contains: [Welcome] }}
        - name: login form
          url: /admin/login/
          capture:
            csrf: {{ css: "input[name=csrfmiddlewaretoken]", attr: value }}
            cookie: {{ cookie: csrftoken }}
        - name: log in
          method: POST
          url: /admin/login/
          form: {{ csrfmiddlewaretoken: "{{{{ captures.csrf }}}}", username: admin, password: "{{{{ secrets.admin }}}}" }}
          assert: {login_assert}
        - name: dashboard
          url: /admin/
          assert: {{ status: 200, css: [{{ selector: h1, text: Site administration }}] }}
        - name: create page
          method: POST
          url: /admin/pages/add/
          form: {{ csrfmiddlewaretoken: "{{{{ captures.csrf }}}}", title: "DR drill {{{{ run.id }}}}" }}
          assert: {{ status: 302 }}
          capture: {{ page_url: {{ header: Location }} }}
        - name: upload image
          method: POST
          url: /admin/images/multiple/add/
          multipart:
            fields: {{ csrfmiddlewaretoken: "{{{{ captures.csrf }}}}" }}
            files: [{{ field: "files[]", generate: png }}]
          assert: {{ status: 200, content_type: application/json, jsonpath: [{{ path: $.success, equals: true }}] }}
          capture: {{ image_id: {{ jsonpath: $.image_id }} }}
        - name: existing media
          url: /media/original_images/existing.png
          assert: {{ status: 2xx, content_type: image/png }}
finally:
  after:
    kind: exec
    with: {{ argv: [touch, finally-ran] }}
"#
    );
    let path = dir.join("smoke.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(dir: &Path, pb: &Path, admin_pw: &str) -> crate::support::Out {
    run_cmd(
        drrun()
            .current_dir(dir)
            .env("SMOKE_BASIC", "basic-pw")
            .env("SMOKE_ADMIN", admin_pw)
            .arg(pb)
            .arg("--state-dir")
            .arg(dir.join("state")),
    )
}

#[test]
fn logs_in_through_csrf_creates_a_page_and_uploads_an_image() {
    // Connection refused for a second, then 503 for a while: `retry_until` waits it out.
    let app = WebApp::start(&["--refuse-for", "1", "--unavailable-for", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let pb = smoke_playbook(
        dir.path(),
        &app.base(),
        "{ status: 302, header: { Location: /admin/ } }",
    );
    let out = run(dir.path(), &pb, "admin-pw");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let records = journal(&dir.path().join("state"));
    let outputs = &records
        .iter()
        .find(|r| r["type"] == "step_succeeded" && r["step"] == "smoke")
        .unwrap()["outputs"];
    assert!(
        outputs["requests"][0]["attempts"].as_u64().unwrap() > 1,
        "waited for the site: {}",
        outputs["requests"][0]
    );
    assert_eq!(outputs["requests"].as_array().unwrap().len(), 7);
    assert_eq!(outputs["captures"]["csrf"], outputs["captures"]["cookie"]);
    assert_eq!(outputs["captures"]["page_url"], "/admin/pages/1/");
    assert_eq!(outputs["captures"]["image_id"], "1");
    let text = serde_json::to_string(&records).unwrap();
    assert!(
        !text.contains("admin-pw") && !text.contains("basic-pw"),
        "secrets reached the journal"
    );
}

#[test]
fn a_failed_assertion_says_expected_and_actual_and_never_retries_a_real_answer() {
    let app = WebApp::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let pb = smoke_playbook(dir.path(), &app.base(), "{ status: 302 }");
    let out = run(dir.path(), &pb, "wrong-admin-pw");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("request `log in` (POST"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("expected status 302, got 200"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("Please enter a correct username and password"),
        "body excerpt: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("wrong-admin-pw"));
    assert!(dir.path().join("finally-ran").exists());

    // A real response with a failed assertion is not retried by `retry_until`.
    let quick = dir.path().join("quick.yaml");
    std::fs::write(
        &quick,
        format!(
            r"
version: 1
name: quick
steps:
  smoke:
    kind: http.smoke
    with:
      base_url: {}
      requests:
        - url: /
          retry_until: {{ deadline: 30s }}
          assert: {{ status: 200 }}
",
            app.base()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = run_cmd(
        drrun()
            .current_dir(dir.path())
            .arg(&quick)
            .arg("--state-dir")
            .arg(dir.path().join("q")),
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("expected status 200, got 401"),
        "{}",
        out.stderr
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "did not wait for the deadline"
    );
}
