//! Helpers for driving the real binary, and the services the tests run against:
//! PostgreSQL ([`pg`]), SeaweedFS ([`s3`]), the Kubernetes control plane ([`kube`]).

pub(crate) mod kube;
pub(crate) mod pg;
pub(crate) mod s3;
pub(crate) mod wagtail;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn drrun() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drrun"));
    cmd.current_dir(root())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

pub(crate) struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub(crate) fn run(args: &[&str]) -> Out {
    run_cmd(drrun().args(args))
}

pub(crate) fn run_in(dir: &Path, args: &[&str]) -> Out {
    run_cmd(drrun().current_dir(dir).args(args))
}

pub(crate) fn run_cmd(cmd: &mut Command) -> Out {
    let out = cmd.output().expect("drrun runs");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub(crate) fn spawn_in(dir: &Path, args: &[&str]) -> Child {
    drrun()
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("drrun starts")
}

/// Polls `check` every 10 ms until it holds or `limit` passes.
pub(crate) fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}

/// The records of the only run's journal in `state`.
pub(crate) fn journal(state: &Path) -> Vec<serde_json::Value> {
    let runs = state.join("runs");
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return Vec::new();
    };
    // A run still being created (or killed while it was) is hidden until its first
    // record is durable; drrun itself never lists it.
    let visible: Vec<_> = entries
        .filter_map(std::result::Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        visible.len() <= 1,
        "expected one run under {}, found {}",
        runs.display(),
        visible.len()
    );
    let Some(run) = visible.first() else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(run.path().join("journal.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Steps with a `step_succeeded` record.
pub(crate) fn succeeded(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["type"] == "step_succeeded")
        .map(|r| r["step"].as_str().unwrap().to_string())
        .collect()
}

/// Lines of a side-effect file.
pub(crate) fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}
