//! The engine through the real binary: outputs, failures, finally, retries, resume,
//! crash safety under SIGKILL, Ctrl-C, locking, secrets.

use std::path::Path;
use std::time::Duration;

use crate::support::{journal, lines, run_cmd, run_in, spawn_in, succeeded, wait_for};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn state(dir: &Path, playbook: &str) -> std::path::PathBuf {
    dir.join(".drrun").join(playbook.trim_end_matches(".yaml"))
}

#[test]
fn outputs_flow_failures_skip_dependents_and_finally_always_runs() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        r#"
version: 1
name: flow
steps:
  a:
    kind: exec
    with: { argv: [sh, -c, 'echo "{\"n\": 41}"'] }
  b:
    kind: exec
    with: { argv: [sh, -c, 'echo $(( {{ steps.a.outputs.json.n }} + 1 )) > b.out'] }
  broken:
    kind: exec
    with: { argv: [sh, -c, 'echo boom >&2; exit 3'] }
  after_broken:
    kind: exec
    needs: [broken]
    with: { argv: [touch, never] }
  skipped_by_when:
    kind: exec
    when: "false"
    with: { argv: [touch, never] }
finally:
  cleanup:
    kind: exec
    with: { argv: [sh, -c, 'echo {{ run.status }} > cleanup.out'] }
"#,
    );
    let out = run_in(dir.path(), &["p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("b.out"))
            .unwrap()
            .trim(),
        "42"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cleanup.out"))
            .unwrap()
            .trim(),
        "failed"
    );
    assert!(!dir.path().join("never").exists());
    assert!(
        out.stderr.contains("`sh` exited with code 3; stderr: boom"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("dependency `broken` failed"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("`when` is false"), "{}", out.stderr);
    assert!(out.stderr.contains("drill FAILED"), "{}", out.stderr);
}

#[test]
fn retries_only_the_classes_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        r"
version: 1
name: retry
steps:
  flaky:
    kind: exec
    retry: { attempts: 3, backoff: 10ms, on: [exit-code] }
    with: { argv: [sh, -c, 'echo x >> tries; test $(wc -l < tries) -ge 3'] }
  not_retried:
    kind: exec
    retry: { attempts: 3, backoff: 10ms }
    with: { argv: [sh, -c, 'echo x >> other; exit 1'] }
",
    );
    let out = run_in(dir.path(), &["p.yaml", "--output", "json"]);
    assert_eq!(out.code, 1);
    assert_eq!(lines(&dir.path().join("tries")).len(), 3);
    // A non-zero exit is not a transient failure unless the playbook says so.
    assert_eq!(lines(&dir.path().join("other")).len(), 1);
    let finished: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["event"] == "step_finished")
        .collect();
    let flaky = finished.iter().find(|e| e["step"] == "flaky").unwrap();
    assert_eq!(flaky["state"], "succeeded");
    assert_eq!(flaky["attempts"], 3);
}

#[test]
fn step_timeout_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        r"
version: 1
name: timeout
steps:
  slow:
    kind: exec
    timeout: 300ms
    with: { argv: [sh, -c, 'sleep 30 & echo $! > child.pid; wait'] }
",
    );
    let out = run_in(dir.path(), &["p.yaml"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("step timed out after 300ms"),
        "{}",
        out.stderr
    );
    let pid: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || !alive(pid)),
        "the grandchild must be killed with its group"
    );
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0); check /proc state instead.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn secrets_never_reach_the_journal_or_output() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        r#"
version: 1
name: secrets
secrets:
  token: { env: DRRUN_TEST_TOKEN }
steps:
  leak:
    kind: exec
    with:
      argv: [sh, -c, 'echo "token is $TOKEN"']
      env: { TOKEN: "{{ secrets.token }}" }
"#,
    );
    let out = crate::support::run_cmd(
        crate::support::drrun()
            .current_dir(dir.path())
            .env("DRRUN_TEST_TOKEN", "s3cr3t-value")
            .args(["p.yaml", "--output", "json"]),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("s3cr3t-value") && !out.stderr.contains("s3cr3t-value"));
    let records = journal(&state(dir.path(), "p.yaml"));
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains("s3cr3t-value"), "journal leaks the secret");
    assert!(
        text.contains("token is <secret:token>"),
        "outputs are redacted, not dropped"
    );
    assert!(
        text.contains("\"TOKEN\":\"<secret:token>\""),
        "inputs record the secret by name"
    );

    let missing = crate::support::run_in(dir.path(), &["p.yaml"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .contains("secret `token`: environment variable `DRRUN_TEST_TOKEN` is not set"),
        "{}",
        missing.stderr
    );
}

#[test]
fn changed_input_reruns_exactly_that_step_and_its_descendants() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        r#"
version: 1
name: changes
vars: { msg: first }
steps:
  a:
    kind: exec
    with: { argv: [sh, -c, 'echo a >> side; echo a'] }
  b:
    kind: exec
    with: { argv: [sh, -c, 'echo b >> side; echo "{{ steps.a.outputs.stdout | trim }}-{{ vars.msg }}"'] }
  c:
    kind: exec
    with: { argv: [sh, -c, 'echo c >> side; test -f ok && echo "{{ steps.b.outputs.stdout | trim }}"'] }
  d:
    kind: exec
    with: { argv: [sh, -c, 'echo d >> side'] }
"#,
    );
    let side = dir.path().join("side");
    let count = |step: &str| lines(&side).iter().filter(|l| *l == step).count();
    assert_eq!(
        run_in(dir.path(), &["p.yaml"]).code,
        1,
        "c fails the first time"
    );

    // Resume with nothing changed: only the failed step runs again.
    let out = run_in(dir.path(), &["run", "p.yaml", "--resume"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        (count("a"), count("b"), count("c"), count("d")),
        (1, 1, 2, 1)
    );

    // Change b's input: b and its descendant c re-run; a and d are reused.
    std::fs::write(dir.path().join("ok"), "").unwrap();
    let out = run_in(
        dir.path(),
        &["run", "p.yaml", "--resume", "-e", "msg=second"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (count("a"), count("b"), count("c"), count("d")),
        (1, 2, 3, 1)
    );
    let records = journal(&state(dir.path(), "p.yaml"));
    let c_out = records
        .iter()
        .rev()
        .find(|r| r["type"] == "step_succeeded" && r["step"] == "c")
        .unwrap();
    assert_eq!(c_out["outputs"]["stdout"], "a-second\n");

    // A passed run is not resumable.
    let again = run_in(dir.path(), &["resume"]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("nothing to resume"),
        "{}",
        again.stderr
    );
}

const CRASH_PLAYBOOK: &str = r#"
version: 1
name: crash
steps:
  s1: { kind: exec, with: { argv: [sh, -c, 'sleep 0.03; echo s1 >> side; echo one'] } }
  s2: { kind: exec, with: { argv: [sh, -c, 'sleep 0.03; echo s2 >> side; echo "{{ steps.s1.outputs.stdout | trim }}-two"'] } }
  s3: { kind: exec, with: { argv: [sh, -c, 'sleep 0.03; echo s3 >> side; echo three'] } }
  s4: { kind: exec, with: { argv: [sh, -c, 'sleep 0.03; echo s4 >> side; echo "{{ steps.s2.outputs.stdout | trim }}+{{ steps.s3.outputs.stdout | trim }}"'] } }
  s5: { kind: exec, needs: [s4], with: { argv: [sh, -c, 'sleep 0.03; echo s5 >> side; echo five'] } }
  s6: { kind: exec, with: { argv: [sh, -c, 'sleep 0.03; echo s6 >> side; echo "{{ steps.s5.outputs.stdout | trim }}{{ steps.s4.outputs.stdout | trim }}"'] } }
finally:
  f1: { kind: exec, with: { argv: [sh, -c, 'echo f1 >> side'] } }
"#;

/// Final outputs per step from a journal (last success or reuse wins).
fn final_outputs(
    records: &[serde_json::Value],
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut map = std::collections::BTreeMap::new();
    for r in records {
        if r["type"] == "step_succeeded" || r["type"] == "step_reused" {
            map.insert(
                r["step"].as_str().unwrap().to_string(),
                r["outputs"]["stdout"].clone(),
            );
        }
    }
    map
}

#[test]
fn sigkill_at_many_points_then_resume_runs_completed_steps_exactly_once() {
    // The uninterrupted reference.
    let reference = tempfile::tempdir().unwrap();
    write(reference.path(), "p.yaml", CRASH_PLAYBOOK);
    assert_eq!(run_in(reference.path(), &["p.yaml"]).code, 0);
    let expected = final_outputs(&journal(&state(reference.path(), "p.yaml")));
    assert_eq!(expected["s6"], "fiveone-two+three\n");

    let kills = 24;
    for k in 0..kills {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "p.yaml", CRASH_PLAYBOOK);
        let mut child = spawn_in(dir.path(), &["p.yaml"]);
        // Spread the kills over the whole run (about 250 ms) and a little beyond.
        std::thread::sleep(Duration::from_millis(5 + k * 12));
        let _ = child.kill();
        let _ = child.wait();
        let st = state(dir.path(), "p.yaml");
        let completed_before = succeeded(&journal(&st));
        // Orphaned children of the killed run may still be finishing their side effect.
        std::thread::sleep(Duration::from_millis(60));

        let out = if st.join("runs").exists() && !journal(&st).is_empty() {
            run_in(dir.path(), &["resume", "--playbook", "p.yaml"])
        } else {
            run_in(dir.path(), &["p.yaml"])
        };
        // A run killed after it finished has nothing to resume; that is fine too.
        if out.code == 2 && out.stderr.contains("nothing to resume") {
            assert_eq!(final_outputs(&journal(&st)), expected);
            continue;
        }
        assert_eq!(out.code, 0, "kill #{k}: resume failed:\n{}", out.stderr);
        let records = journal(&st);
        assert_eq!(
            final_outputs(&records),
            expected,
            "kill #{k}: final state differs from an uninterrupted run"
        );
        let side = lines(&dir.path().join("side"));
        for step in ["s1", "s2", "s3", "s4", "s5", "s6"] {
            let n = side.iter().filter(|l| *l == step).count();
            if completed_before.iter().any(|s| s == step) {
                assert_eq!(
                    n, 1,
                    "kill #{k}: {step} had completed before the kill but ran {n} times"
                );
            } else {
                assert!(n >= 1, "kill #{k}: {step} never ran");
            }
        }
    }
}

#[test]
fn ctrl_c_cancels_the_running_step_runs_finally_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        r"
version: 1
name: interrupt
steps:
  long:
    kind: exec
    with: { argv: [sh, -c, 'echo $$ > long.pid; sleep 30'] }
  after:
    kind: exec
    needs: [long]
    with: { argv: [touch, never] }
finally:
  cleanup:
    kind: exec
    with: { argv: [sh, -c, 'echo {{ run.status }} > cleanup.out'] }
",
    );
    let child = spawn_in(dir.path(), &["p.yaml"]);
    let pid_file = dir.path().join("long.pid");
    assert!(
        wait_for(Duration::from_secs(10), || pid_file.exists()),
        "the long step started"
    );
    // SAFETY: sending a signal to our own child process.
    unsafe { libc_kill(child.id() as i32, 2) };
    expect_exit_130(child);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cleanup.out"))
            .unwrap()
            .trim(),
        "interrupted"
    );
    assert!(!dir.path().join("never").exists());
    let sh = pid_in(&pid_file);
    assert!(
        wait_for(Duration::from_secs(5), || !alive(sh)),
        "the step's process was killed"
    );
    let records = journal(&state(dir.path(), "p.yaml"));
    assert!(records.iter().any(|r| r["type"] == "interrupted"));
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "step_cancelled" && r["step"] == "long")
    );
    assert_eq!(records.last().unwrap()["status"], "interrupted");
}

#[test]
fn a_second_ctrl_c_aborts_a_slow_finally_and_kills_its_processes() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        r"
version: 1
name: abort
steps:
  long:
    kind: exec
    with: { argv: [sh, -c, 'echo $$ > long.pid; sleep 30'] }
finally:
  slow_cleanup:
    kind: exec
    with: { argv: [sh, -c, 'echo $$ > cleanup.pid; sleep 30'] }
",
    );
    let child = spawn_in(dir.path(), &["p.yaml"]);
    assert!(
        wait_for(Duration::from_secs(10), || dir
            .path()
            .join("long.pid")
            .exists()),
        "the long step started"
    );
    // SAFETY: sending signals to our own child process.
    unsafe { libc_kill(child.id() as i32, 2) };
    let cleanup_pid = dir.path().join("cleanup.pid");
    assert!(
        wait_for(Duration::from_secs(10), || cleanup_pid.exists()),
        "finally started after the first Ctrl-C"
    );
    let started = std::time::Instant::now();
    unsafe { libc_kill(child.id() as i32, 2) };
    expect_exit_130(child);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the second Ctrl-C did not wait for finally"
    );
    let sh = pid_in(&cleanup_pid);
    assert!(
        wait_for(Duration::from_secs(5), || !alive(sh)),
        "the finally step's process was killed"
    );
}

/// What a pod gets: SIGTERM, then SIGKILL at the end of its grace period. `--stop-grace`
/// ends a `finally` that would outlast it, kills its processes and exits 143 itself.
#[test]
fn stop_grace_ends_a_slow_finally_after_sigterm_with_143() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        r"
version: 1
name: grace
steps:
  long:
    kind: exec
    with: { argv: [sh, -c, 'echo $$ > long.pid; sleep 30'] }
finally:
  slow_cleanup:
    kind: exec
    with: { argv: [sh, -c, 'echo $$ > cleanup.pid; sleep 60'] }
",
    );
    let child = spawn_in(dir.path(), &["p.yaml", "--stop-grace", "6s"]);
    assert!(
        wait_for(Duration::from_secs(10), || dir
            .path()
            .join("long.pid")
            .exists()),
        "the long step started"
    );
    // SAFETY: signalling our own child process.
    unsafe { libc_kill(child.id() as i32, 15) };
    let cleanup_pid = dir.path().join("cleanup.pid");
    assert!(
        wait_for(Duration::from_secs(10), || cleanup_pid.exists()),
        "finally started after SIGTERM"
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("(--stop-grace): aborting"), "{stderr}");
    let sh = pid_in(&cleanup_pid);
    assert!(
        wait_for(Duration::from_secs(5), || !alive(sh)),
        "the finally step's process was killed"
    );
}

/// Waits for an interrupted `drrun` and checks it exited with 130.
fn expect_exit_130(child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pid a step wrote into `path`.
fn pid_in(path: &std::path::Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn a_second_run_is_refused_and_a_stale_lock_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        r"
version: 1
name: lock
steps:
  hold:
    kind: exec
    with: { argv: [sh, -c, 'touch started; sleep 2'] }
",
    );
    let mut first = spawn_in(dir.path(), &["p.yaml"]);
    assert!(wait_for(Duration::from_secs(10), || dir
        .path()
        .join("started")
        .exists()));
    let second = run_in(dir.path(), &["p.yaml"]);
    assert_eq!(second.code, 2);
    assert!(
        second.stderr.contains("another drill is running"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())),
        "names the holder: {}",
        second.stderr
    );
    assert!(first.wait().unwrap().success());

    // A lock file naming a dead holder, with no flock held: taken over with a notice.
    let lock = state(dir.path(), "p.yaml").join("lock");
    std::fs::write(&lock, r#"{"pid":999999,"host":"gone","run_id":"old","started_at":"2026-01-01T00:00:00Z","playbook":"p.yaml"}"#).unwrap();
    let out = run_in(dir.path(), &["p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("took over a stale lock left by pid 999999 on gone"),
        "{}",
        out.stderr
    );
}

#[test]
fn status_lists_runs_and_steps() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        "version: 1\nname: st\nsteps:\n  one: { kind: exec, with: { argv: [true] } }\n",
    );
    assert_eq!(run_in(dir.path(), &["p.yaml"]).code, 0);
    let list = run_in(dir.path(), &["status"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.contains("passed"), "{}", list.stdout);
    let id = list
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let one = run_in(dir.path(), &["status", &id, "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&one.stdout).unwrap();
    assert_eq!(v["steps"]["one"]["state"], "succeeded");

    // A second playbook: `status` lists every state directory it read, each with its runs.
    write(
        dir.path(),
        "q.yaml",
        "version: 1\nname: other\nsteps:\n  two: { kind: exec, with: { argv: [true] } }\n",
    );
    assert_eq!(run_in(dir.path(), &["q.yaml"]).code, 0);
    let list = run_in(dir.path(), &["status"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stdout.contains("runs in ./.drrun/p:"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains("runs in ./.drrun/q:"),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains(&id), "{}", list.stdout);

    // An unknown run names where it looked and what is there.
    let missing = run_in(dir.path(), &["status", "20200101T000000Z-none"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .contains("no run `20200101T000000Z-none`: looked in ./.drrun/p (runs: "),
        "{}",
        missing.stderr
    );
    assert!(
        missing.stderr.contains(&format!("./.drrun/p (runs: {id})")),
        "{}",
        missing.stderr
    );
    let empty = tempfile::tempdir().unwrap();
    let none = run_in(empty.path(), &["status"]);
    assert_eq!(none.code, 2);
    assert!(
        none.stderr.contains("no state directory under"),
        "{}",
        none.stderr
    );
}

#[test]
fn a_misspelt_command_is_not_run_as_a_playbook_and_a_missing_playbook_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let typo = run_in(dir.path(), &["stauts"]);
    assert_eq!(typo.code, 2);
    assert_eq!(
        typo.stderr.trim(),
        "error: unknown command `stauts`: did you mean `status`? (to run a playbook, name its file)"
    );
    let missing = run_in(dir.path(), &["drills/acme.yaml"]);
    assert_eq!(missing.code, 2);
    assert_eq!(
        missing.stderr.matches("drills/acme.yaml").count(),
        1,
        "{}",
        missing.stderr
    );
    assert_eq!(
        missing.stderr.matches("No such file").count(),
        1,
        "{}",
        missing.stderr
    );
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    for (shell, needle) in [
        ("bash", "complete -F _drrun"),
        ("zsh", "#compdef drrun"),
        ("fish", "complete -c drrun"),
    ] {
        let out = run_in(Path::new("."), &["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(
            out.stdout.contains(needle),
            "{shell}: {}",
            &out.stdout[..out.stdout.len().min(300)]
        );
        assert!(
            out.stdout.contains("vars-file"),
            "{shell} completes the flags"
        );
    }
    let man = run_in(Path::new("."), &["man"]);
    assert_eq!(man.code, 0);
    assert!(man.stdout.contains(".TH drrun 1"), "{}", &man.stdout[..200]);
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(
        Path::new("."),
        &["man", "--dir", dir.path().to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run_page = std::fs::read_to_string(dir.path().join("drrun-run.1")).unwrap();
    assert!(
        run_page.contains("vars\\-file"),
        "the run page documents its flags"
    );
    assert!(run_page.contains("Examples"), "and shows examples");
    let version = run_in(Path::new("."), &["--version"]);
    let text = version.stdout.trim();
    assert!(text.starts_with("drrun 0."), "{text}");
    assert!(
        text.contains('(') && !text.contains("()"),
        "the commit it was built from: {text}"
    );
}

/// A kind that panics fails its own step (class `internal`, with the panic's message);
/// its dependents are skipped, the other steps and `finally` run, and the run finishes.
#[test]
fn a_panicking_step_fails_alone_and_finally_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "panic.yaml",
        "
version: 1
name: panic
steps:
  first:
    kind: exec
    with: { argv: [echo, one] }
  boom:
    kind: exec
    needs: [first]
    with: { argv: [echo, never] }
  after_boom:
    kind: exec
    needs: [boom]
    with: { argv: [touch, never] }
  beside:
    kind: exec
    with: { argv: [touch, beside.out] }
finally:
  cleanup:
    kind: exec
    with: { argv: [sh, -c, 'echo {{ run.status }} > cleanup.out'] }
",
    );
    let out = crate::support::run_cmd(
        crate::support::drrun()
            .current_dir(dir.path())
            .env("DRRUN_TEST_PANIC_IN_STEP", "boom")
            .arg("panic.yaml"),
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(lines(&dir.path().join("cleanup.out")), ["failed"]);
    assert!(dir.path().join("beside.out").exists());
    assert!(!dir.path().join("never").exists());
    let records = journal(&state(dir.path(), "panic"));
    let failed = records
        .iter()
        .find(|r| r["type"] == "step_failed" && r["step"] == "boom")
        .expect("boom failed");
    assert_eq!(failed["class"], "internal");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("panicked: test-induced panic in step boom"),
        "{failed}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "step_skipped" && r["step"] == "after_boom")
    );
    assert_eq!(records.last().unwrap()["type"], "run_finished");
}

/// A signal during `finally` lets it run to its end, but the run is interrupted (exit
/// 130, never PASSED), and the journal records which signal arrived.
#[test]
fn a_signal_during_finally_is_reported_as_an_interruption() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "late.yaml",
        "
version: 1
name: late
steps:
  quick:
    kind: exec
    with: { argv: [echo, done] }
finally:
  cleanup:
    kind: exec
    with: { argv: [sh, -c, 'touch cleanup.started; sleep 1; echo finished > cleanup.out'] }
",
    );
    let child = spawn_in(dir.path(), &["late.yaml"]);
    let started = wait_for(Duration::from_secs(30), || {
        dir.path().join("cleanup.started").exists()
    });
    assert!(started, "finally never started");
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("SIGTERM received during `finally`"),
        "{stderr}"
    );
    assert!(stderr.contains("drill INTERRUPTED"), "{stderr}");
    assert_eq!(lines(&dir.path().join("cleanup.out")), ["finished"]);
    let records = journal(&state(dir.path(), "late"));
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "interrupted" && r["signal"] == "SIGTERM"),
        "{records:?}"
    );
    assert_eq!(records.last().unwrap()["status"], "interrupted");
}

#[test]
fn verbose_shows_program_output_live_redacted_and_every_step_keeps_a_log() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "v.yaml",
        r#"version: 1
name: verbose
secrets:
  token: { env: DRRUN_TEST_TOKEN }
steps:
  talk:
    kind: exec
    with:
      argv: [sh, -c, 'echo "using $0"; echo "warning: slow disk" >&2', "{{ secrets.token }}"]
"#,
    );
    let token = "tok-3f9a1c7e5b";
    let drill = |args: &[&str]| {
        run_cmd(
            crate::support::drrun()
                .current_dir(dir.path())
                .env("DRRUN_TEST_TOKEN", token)
                .arg("v.yaml")
                .args(args),
        )
    };
    let out = drill(&["-v"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("  talk | using <secret:token>"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("  talk ! warning: slow disk"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(token));
    // Without -v the output is not shown, but the step's log keeps it, redacted.
    let quiet = drill(&[]);
    assert!(!quiet.stderr.contains("using "), "{}", quiet.stderr);
    let log = run_in(dir.path(), &["status", "--log", "talk"]);
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert!(
        log.stdout.contains("sh out| using <secret:token>"),
        "{}",
        log.stdout
    );
    assert!(
        log.stdout.contains("sh err| warning: slow disk"),
        "{}",
        log.stdout
    );
    assert!(!log.stdout.contains(token));
    let missing = run_in(dir.path(), &["status", "--log", "tlak"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("steps with logs: talk"),
        "{}",
        missing.stderr
    );
    // JSON lines say when, and carry the output only with -v.
    let json = drill(&["--output", "json", "-v"]);
    let events: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["ts"].as_str().is_some_and(|t| t.ends_with('Z')))
    );
    let output: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "step_output")
        .collect();
    assert_eq!(output.len(), 2, "{}", json.stdout);
    // stdout and stderr are read side by side: their order between them is not promised.
    assert!(
        output
            .iter()
            .any(|e| e["line"] == "using <secret:token>" && e["stream"] == "stdout")
    );
    assert!(!json.stdout.contains(token));
}

/// History: each report compares the drill with the playbook's earlier ones (failures in
/// a row are a warning, in the run's output and its report), and `drrun history` lists
/// them in the order they ran.
#[test]
fn history_lists_the_drills_and_warns_of_failures_in_a_row() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "h.yaml",
        "version: 1\nname: hist\nobjectives: { rto: 1h }\nsteps:\n  check: { kind: exec, with: { argv: [sh, -c, 'test ! -e fail'] } }\n",
    );
    for fail in [false, false, true, true] {
        if fail {
            write(dir.path(), "fail", "");
        }
        let out = run_in(dir.path(), &["h.yaml"]);
        assert_eq!(out.code, i32::from(fail), "{}", out.stderr);
        if fail && lines(&dir.path().join("seen")).is_empty() {
            write(dir.path(), "seen", "one failure\n");
        } else if fail {
            assert!(
                out.stderr
                    .contains("history: 2 drills in a row have not passed"),
                "{}",
                out.stderr
            );
        }
    }
    let runs = state(dir.path(), "h.yaml").join("runs");
    let newest = std::fs::read_dir(&runs)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("report.json"))
                .is_ok_and(|t| t.contains("\"consecutive_failures\": 2"))
        })
        .collect::<Vec<_>>();
    assert_eq!(
        newest.len(),
        1,
        "the last report counts two failures in a row"
    );
    let md = std::fs::read_to_string(newest[0].join("report.md")).unwrap();
    assert!(
        md.contains("## History")
            && md.contains("**Warning:** 2 drills in a row have not passed")
            && md.contains("3 earlier drill(s) of this playbook"),
        "{md}"
    );
    let out = run_in(dir.path(), &["history", "h.yaml", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let statuses: Vec<&str> = v[0]["drills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["passed", "passed", "failed", "failed"]);
    assert_eq!(v[0]["newest"]["consecutive_failures"], 2);
    assert_eq!(
        v[0]["newest"]["rto"],
        serde_json::Value::Null,
        "a failed drill measures no RTO"
    );
    let human = run_in(dir.path(), &["history", "h.yaml"]);
    assert!(
        human.stdout.contains("drills of hist")
            && human
                .stdout
                .contains("warning: 2 drills in a row have not passed"),
        "{}",
        human.stdout
    );
}

/// The audit bundle: every drill of the period with who ran it and what it measured, the
/// reports and journals, and a manifest `sha256sum -c` checks (and that catches a change).
#[test]
fn evidence_writes_a_bundle_that_sha256sum_verifies() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "e.yaml",
        "version: 1\nname: evid\nobjectives: { rto: 1h }\nsteps:\n  check: { kind: exec, with: { argv: [sh, -c, 'test ! -e fail'] } }\n",
    );
    assert_eq!(run_in(dir.path(), &["e.yaml"]).code, 0);
    write(dir.path(), "fail", "");
    assert_eq!(run_in(dir.path(), &["e.yaml"]).code, 1);
    let out = run_in(
        dir.path(),
        &[
            "evidence", "--since", "1d", "--out", "bundle", "-p", "e.yaml",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let bundle = dir.path().join("bundle");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("evidence.json")).unwrap())
            .unwrap();
    let drills = v["drills"].as_array().unwrap();
    let statuses: Vec<&str> = drills
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["passed", "failed"]);
    assert_eq!(drills[0]["rto_met"], true);
    assert_eq!(drills[0]["playbook_sha256"].as_str().unwrap().len(), 64);
    assert!(!drills[0]["user"].as_str().unwrap().is_empty());
    assert!(!drills[0]["drrun_version"].as_str().unwrap().is_empty());
    let md = std::fs::read_to_string(bundle.join("evidence.md")).unwrap();
    assert!(
        md.contains("| evid |") && md.contains("PASSED") && md.contains("FAILED"),
        "{md}"
    );
    let check = |dir: &Path| {
        std::process::Command::new("sha256sum")
            .args(["-c", "--quiet", "SHA256SUMS"])
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let ok = check(&bundle);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let listed = std::fs::read_to_string(bundle.join("SHA256SUMS")).unwrap();
    assert_eq!(
        listed.lines().count(),
        2 * 3 + 2,
        "3 files a drill, and the summaries: {listed}"
    );
    // A changed report no longer checks.
    let report = bundle.join(drills[0]["files"][1].as_str().unwrap());
    std::fs::write(&report, "edited\n").unwrap();
    assert!(!check(&bundle).status.success());
    // An existing directory is never written into; a period without drills says so.
    let again = run_in(dir.path(), &["evidence", "--out", "bundle", "-p", "e.yaml"]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    let none = run_in(
        dir.path(),
        &[
            "evidence", "--since", "1ms", "--out", "empty", "-p", "e.yaml",
        ],
    );
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert!(
        none.stderr.contains("no drills started since"),
        "{}",
        none.stderr
    );
    assert!(!dir.path().join("empty").exists());
}

/// `--break STEP`, a drill's self-test: the step fails as it starts, its dependents are
/// skipped, `finally` runs, the drill exits 1, and the report says it was deliberate. An
/// unknown step is refused before anything runs.
#[test]
fn break_makes_a_step_fail_on_purpose_and_the_drill_go_red() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "b.yaml",
        r"
version: 1
name: selftest
steps:
  fetch: { kind: exec, with: { argv: [touch, fetched] } }
  restore: { kind: exec, needs: [fetch], with: { argv: [touch, restored] } }
  smoke: { kind: exec, needs: [restore], with: { argv: [touch, smoked] } }
finally:
  cleanup: { kind: exec, with: { argv: [touch, cleaned] } }
",
    );
    let refused = run_in(dir.path(), &["b.yaml", "--break", "restroe"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("has no step `restroe`")
            && refused.stderr.contains("did you mean `restore`"),
        "{}",
        refused.stderr
    );
    assert!(!dir.path().join("fetched").exists(), "nothing ran");

    let out = run_in(dir.path(), &["b.yaml", "--break", "restore"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("deliberate break (--break restore)"),
        "{}",
        out.stderr
    );
    let exists = |f: &str| dir.path().join(f).exists();
    assert!(exists("fetched") && exists("cleaned"));
    assert!(!exists("restored"), "the broken step's command never ran");
    assert!(!exists("smoked"), "its dependent was skipped");
    let run = std::fs::read_dir(state(dir.path(), "b.yaml").join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["deliberate_break"], "restore");
    assert_eq!(report["status"], "failed");
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        md.starts_with("# DR drill `selftest`: FAILED (deliberate break of `restore`"),
        "{md}"
    );
}
