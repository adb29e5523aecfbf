//! `notify:` against real local receivers: an HTTP server standing in for healthchecks.io,
//! Slack and a JSON webhook records exactly what is sent for a passing drill, a failing
//! one, an interrupted one, and when the endpoints are down.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{drrun, run_cmd, wait_for};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    body: String,
}

/// Answers 200 to everything and records each request.
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                record.lock().unwrap().push(Request {
                    method,
                    path,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK",
                );
            }
        });
        Self { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

fn playbook(dir: &Path, step: &str) -> std::path::PathBuf {
    let path = dir.join("shop.yaml");
    std::fs::write(
        &path,
        format!(
            r#"version: 1
name: shop
objectives: {{ rto: 1h }}
secrets:
  hc: {{ env: HC_URL }}
  slack: {{ env: SLACK_URL }}
  hook: {{ env: HOOK_URL }}
notify:
  heartbeat: "{{{{ secrets.hc }}}}"
  slack: "{{{{ secrets.slack }}}}"
  webhook: "{{{{ secrets.hook }}}}"
  timeout: 2s
  retries: 1
steps:
  smoke:
    kind: exec
    with: {{ argv: [sh, -c, '{step}'] }}
"#
        ),
    )
    .unwrap();
    path
}

fn cmd(dir: &Path, hc: &str, slack: &str, hook: &str) -> std::process::Command {
    let mut c = drrun();
    c.current_dir(dir)
        .env("HC_URL", hc)
        .env("SLACK_URL", slack)
        .env("HOOK_URL", hook)
        .arg("shop.yaml");
    c
}

#[test]
fn pings_and_messages_say_exactly_how_each_drill_went() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let (hc, slack, hook) = (
        rx.url("/ping/5e1f-uuid"),
        rx.url("/services/T000/B000/slack-secret"),
        rx.url("/hooks/drills"),
    );

    // Passed: start, success, one Slack message, one webhook with the report.
    playbook(dir.path(), "true");
    let out = run_cmd(&mut cmd(dir.path(), &hc, &slack, &hook));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let seen = rx.take();
    let calls: Vec<(&str, &str)> = seen
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("POST", "/ping/5e1f-uuid/start"),
            ("POST", "/ping/5e1f-uuid"),
            ("POST", "/services/T000/B000/slack-secret"),
            ("POST", "/hooks/drills"),
        ]
    );
    let text: serde_json::Value = serde_json::from_str(&seen[2].body).unwrap();
    let text = text["text"].as_str().unwrap();
    assert!(
        text.starts_with("DR drill shop: PASSED") && text.contains("(objective 1h): met"),
        "{text}"
    );
    let hooked: serde_json::Value = serde_json::from_str(&seen[3].body).unwrap();
    assert_eq!(hooked["status"], "passed");
    assert_eq!(hooked["exit_code"], 0);
    assert_eq!(hooked["report"]["playbook"]["name"], "shop");
    // The URLs are secrets: nothing drrun printed or kept names them.
    assert!(!out.stderr.contains("slack-secret") && !out.stdout.contains("5e1f-uuid"));

    // Failed: the failure ping carries the exit code and the failed step's error.
    playbook(dir.path(), "echo broken >&2; exit 3");
    let out = run_cmd(&mut cmd(dir.path(), &hc, &slack, &hook));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let seen = rx.take();
    assert_eq!(seen[1].path, "/ping/5e1f-uuid/1");
    assert!(
        seen[1].body.contains("failed step `smoke`") && seen[1].body.contains("broken"),
        "{}",
        seen[1].body
    );
    assert!(seen[2].body.contains("FAILED"), "{}", seen[2].body);

    // A deliberate break (`--break`) says so in every message.
    playbook(dir.path(), "true");
    let out = run_cmd(cmd(dir.path(), &hc, &slack, &hook).args(["--break", "smoke"]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let seen = rx.take();
    assert_eq!(seen[1].path, "/ping/5e1f-uuid/1");
    for r in &seen[1..3] {
        assert!(r.body.contains("deliberate break of `smoke`"), "{}", r.body);
    }
    let hooked: serde_json::Value = serde_json::from_str(&seen[3].body).unwrap();
    assert_eq!(hooked["report"]["deliberate_break"], "smoke");

    // Interrupted (SIGTERM, as a pod's eviction): exit 143, and the ping says 143.
    playbook(dir.path(), "touch started; sleep 30");
    let child = cmd(dir.path(), &hc, &slack, &hook)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(30), || dir
        .path()
        .join("started")
        .exists()));
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    let seen = rx.take();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths[..2], ["/ping/5e1f-uuid/start", "/ping/5e1f-uuid/143"]);
    assert!(seen[1].body.contains("INTERRUPTED"), "{}", seen[1].body);

    // Every endpoint down: notes, the drill's result unchanged, no URL shown.
    std::fs::remove_file(dir.path().join("started")).ok();
    playbook(dir.path(), "true");
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = |p: &str| format!("http://127.0.0.1:{closed}{p}");
    let out = run_cmd(&mut cmd(
        dir.path(),
        &down("/ping/5e1f-uuid"),
        &down("/services/T000/B000/slack-secret"),
        &down("/hooks/drills"),
    ));
    assert_eq!(out.code, 0, "{}", out.stderr);
    for what in ["start ping", "success ping", "Slack message", "webhook"] {
        assert!(
            out.stderr.contains(&format!("could not send the {what}: cannot connect to http://127.0.0.1:{closed} (2 attempt(s))")),
            "{what}: {}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("slack-secret"), "{}", out.stderr);
}

#[test]
fn a_notification_url_written_in_the_playbook_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nname: p\nnotify:\n  slack: https://hooks.slack.com/services/T/B/XYZ\nsteps:\n  one: { kind: exec, with: { argv: [touch, ran] } }\n",
    )
    .unwrap();
    let out = run_cmd(drrun().current_dir(dir.path()).arg("p.yaml"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("p.yaml:4:")
            && out.stderr.contains("notify.slack")
            && out
                .stderr
                .contains("a notification URL is a credential: take it from `secrets`"),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("ran").exists());
}
