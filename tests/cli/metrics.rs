//! Metrics against the real things: a Pushgateway (Debian's prometheus-pushgateway,
//! which refuses malformed exposition text) and Prometheus' own text parser
//! (prometheus-client from PyPI) reading the textfile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{drrun, run_cmd, wait_for};

struct Pushgateway {
    child: Child,
    url: String,
}

impl Pushgateway {
    fn start() -> Self {
        let bin = Command::new("sh")
            .args(["-c", "command -v prometheus-pushgateway"])
            .output()
            .unwrap();
        let bin = String::from_utf8_lossy(&bin.stdout).trim().to_string();
        assert!(
            !bin.is_empty(),
            "prometheus-pushgateway is required (Debian's package; scripts/test installs it)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let ready = wait_for(Duration::from_secs(60), || {
            get(&format!("{url}/-/ready")).is_some_and(|(code, _)| code == 200)
        });
        assert!(ready, "the Pushgateway did not become ready");
        Self { child, url }
    }

    fn metrics(&self) -> String {
        get(&format!("{}/metrics", self.url)).unwrap().1
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET with curl: (status, body).
fn get(url: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

/// The value of the sample `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The textfile as Prometheus' Python client parses it: {name: [[labels, value]]}.
fn parsed(path: &Path) -> serde_json::Value {
    let client = std::env::var_os("DRRUN_TEST_PROM_CLIENT")
        .expect("DRRUN_TEST_PROM_CLIENT names prometheus-client's install (scripts/test sets it)");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    assert fam.type == "gauge", fam.name
    for s in fam.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .env("PYTHONPATH", client)
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the textfile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn playbook(dir: &Path, fail: bool) -> PathBuf {
    let path = dir.join("shop.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\nname: shop\nobjectives: {{ rto: 1h }}\nsteps:\n  restore: {{ kind: exec, with: {{ argv: [\"true\"] }} }}\n  smoke: {{ kind: exec, needs: [restore], with: {{ argv: [sh, -c, 'exit {}'] }} }}\n",
            u8::from(fail) * 3
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_drill_pushes_its_metrics_and_writes_a_textfile_prometheus_parses() {
    let gw = Pushgateway::start();
    let dir = tempfile::tempdir().unwrap();
    let textfile = dir.path().join("textfile/drrun-shop.prom");
    let run = |fail: bool, pushgateway: &str| {
        run_cmd(
            drrun()
                .current_dir(dir.path())
                .arg(playbook(dir.path(), fail))
                .arg("--metrics-textfile")
                .arg(&textfile)
                .args(["--pushgateway", pushgateway]),
        )
    };
    let out = run(false, &gw.url);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("metrics pushed to"), "{}", out.stderr);
    let pushed = gw.metrics();
    let group = ["job=\"drrun\"", "playbook=\"shop\""];
    assert_eq!(
        sample(&pushed, "drrun_drill_success", &group),
        Some(1.0),
        "{pushed}"
    );
    assert_eq!(
        sample(&pushed, "drrun_drill_rto_objective_seconds", &group),
        Some(3600.0)
    );
    assert_eq!(
        sample(
            &pushed,
            "drrun_step_state",
            &["step=\"smoke\"", "state=\"succeeded\""]
        ),
        Some(1.0)
    );
    let first_success = sample(
        &pushed,
        "drrun_drill_last_success_timestamp_seconds",
        &group,
    )
    .expect("a last success");
    let files = parsed(&textfile);
    assert_eq!(files["drrun_drill_success"][0][1], 1.0, "{files}");
    assert_eq!(files["drrun_drill_success"][0][0]["playbook"], "shop");
    assert!(files["drrun_drill_rto_seconds"][0][1].as_f64().unwrap() >= 0.0);
    assert_eq!(
        files["drrun_step_duration_seconds"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A failing drill replaces the group: success 0, the failed step's state, and the
    // last success still the first drill's.
    let out = run(true, &gw.url);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let pushed = gw.metrics();
    assert_eq!(
        sample(&pushed, "drrun_drill_success", &group),
        Some(0.0),
        "{pushed}"
    );
    assert_eq!(
        sample(&pushed, "drrun_drill_status", &["status=\"failed\""]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &pushed,
            "drrun_step_state",
            &["step=\"smoke\"", "state=\"failed\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &pushed,
            "drrun_drill_last_success_timestamp_seconds",
            &group
        ),
        Some(first_success)
    );
    assert_eq!(parsed(&textfile)["drrun_drill_success"][0][1], 0.0);

    // A Pushgateway that is down is a note; the drill's result stands, and the textfile
    // is written all the same. Credentials in its URL are never shown.
    let down = format!(
        "http://drrun:pushgw-secret@127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let out = run(false, &down);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("could not push the metrics: cannot connect to http://127.0.0.1:"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("pushgw-secret"), "{}", out.stderr);
    assert_eq!(parsed(&textfile)["drrun_drill_success"][0][1], 1.0);
}
