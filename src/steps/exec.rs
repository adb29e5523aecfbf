//! `exec`: run a program. The escape hatch for `inv`, `ansible-playbook`, `manage.py`.

use std::process::Stdio;
use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{
    ConfigIssue, Effect, OutputDoc, Outputs, Preview, PreviewCtx, StepCtx, StepError, StepKind,
    output,
};
use crate::duration::HumanDuration;
use crate::playbook::model::FailureClass;
use crate::process::{GroupGuard, terminate};

/// Runs a program directly (no shell) and captures its output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    /// Program and arguments. No shell is involved; write `["sh", "-c", "..."]` to get one.
    /// Never put secrets here (argv is visible to every user of the machine): use `env`.
    #[serde(deserialize_with = "crate::util::string_list")]
    pub argv: Vec<String>,
    /// Extra environment variables for the program, e.g. `PGPASSWORD: "{{ secrets.db_password }}"`.
    #[serde(default, deserialize_with = "crate::util::string_map")]
    #[schemars(with = "IndexMap<String, String>")]
    pub env: IndexMap<String, String>,
    /// Working directory, relative to the playbook's directory (default: that directory).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Text written to the program's standard input (default: no input).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Time limit for the program; the whole process group is terminated when it passes.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Exit codes that count as success (default `[0]`).
    #[serde(default = "default_ok_codes")]
    pub ok_exit_codes: Vec<i32>,
    /// At most this many bytes of standard output are kept in the outputs (default 1 MiB).
    #[serde(default)]
    pub max_stdout: Option<crate::util::ByteSize>,
}

fn default_ok_codes() -> Vec<i32> {
    vec![0]
}

const STDERR_TAIL: usize = 4096;
const DEFAULT_MAX_STDOUT: u64 = 1 << 20;
const KILL_GRACE: Duration = Duration::from_secs(5);

impl StepKind for Exec {
    const NAME: &'static str = "exec";
    const SUMMARY: &'static str =
        "Run a program (no shell) with env, cwd and stdin; capture its exit code and output.";
    const EFFECT: Effect = Effect::Destructive;
    const EXAMPLE: &'static str = r#"notify:
  kind: exec
  description: Tell the team a drill started; secrets go in `env`, never in `argv`.
  with:
    argv: [sh, -c, 'curl -fsS -H "Authorization: Bearer $TOKEN" --data-binary @- "$HOOK"']
    env: { TOKEN: "{{ secrets.chat_token }}", HOOK: https://chat.example.com/hooks/dr }
    stdin: "DR drill {{ run.id }} of {{ vars.project }} started"
    timeout: 30s
"#;
    const OUTPUTS: &'static [OutputDoc] = &[
        output("exit_code", "The program's exit code."),
        output(
            "stdout",
            "Standard output as text, at most `max_stdout` bytes.",
        ),
        output(
            "stdout_truncated",
            "Whether standard output was longer than `max_stdout`.",
        ),
        output(
            "json",
            "Standard output parsed as JSON, when it is JSON (otherwise null).",
        ),
        output("stderr_tail", "The last 4 KiB of standard error."),
    ];

    fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.argv.is_empty() || self.argv[0].is_empty() {
            issues.push(ConfigIssue::new("argv", "`argv` must name a program"));
        }
        if self.ok_exit_codes.is_empty() {
            issues.push(ConfigIssue::new(
                "ok_exit_codes",
                "`ok_exit_codes` must list at least one code",
            ));
        }
        issues
    }

    async fn preview(&self, _ctx: &PreviewCtx) -> Preview {
        let mut lines = vec![format!("would run: {}", shell_words(&self.argv))];
        if !self.env.is_empty() {
            lines.push(format!(
                "with env: {}",
                self.env.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Preview::lines(lines)
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, StepError> {
        let program = &self.argv[0];
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&self.argv[1..])
            .envs(&self.env)
            .current_dir(
                self.cwd
                    .as_deref()
                    .map(|c| ctx.resolve_path(c))
                    .unwrap_or_else(|| ctx.base_dir.clone()),
            )
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| StepError::config(format!("cannot start `{program}`: {e}")))?;
        let mut group = GroupGuard::register(child.id().unwrap_or(0) as i32);

        if let (Some(text), Some(mut stdin)) = (self.stdin.clone(), child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(text.as_bytes()).await;
            });
        }
        let limit = self.max_stdout.map(|b| b.0).unwrap_or(DEFAULT_MAX_STDOUT) as usize;
        let stdout = tokio::spawn(read_head(child.stdout.take().unwrap(), limit));
        let stderr = tokio::spawn(read_tail(child.stderr.take().unwrap(), STDERR_TAIL));

        let limit_time = self.timeout.map(|t| t.0).unwrap_or(Duration::MAX);
        let status = tokio::select! {
            status = child.wait() => status.map_err(|e| StepError::new(FailureClass::Other, format!("waiting for `{program}`: {e}")))?,
            _ = ctx.cancel.cancelled() => {
                terminate(&mut child, group.pgid(), KILL_GRACE).await;
                group.disarm();
                return Err(StepError::new(FailureClass::Other, format!("`{program}` was cancelled")));
            }
            _ = tokio::time::sleep(limit_time) => {
                terminate(&mut child, group.pgid(), KILL_GRACE).await;
                group.disarm();
                return Err(StepError::new(FailureClass::Timeout, format!("`{program}` ran longer than {}", HumanDuration(limit_time))));
            }
        };
        group.disarm();
        // A background grandchild may hold the pipes open; do not wait for it forever.
        let grace = Duration::from_secs(2);
        let (out, truncated) = tokio::time::timeout(grace, stdout)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let err_tail = tokio::time::timeout(grace, stderr)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();

        let stdout_text = String::from_utf8_lossy(&out).into_owned();
        let stderr_text = String::from_utf8_lossy(&err_tail).into_owned();
        let code = status.code();
        if !code.is_some_and(|c| self.ok_exit_codes.contains(&c)) {
            let how = match code {
                Some(c) => format!("exited with code {c}"),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    format!("was killed by signal {}", status.signal().unwrap_or(0))
                }
            };
            let tail = last_lines(&stderr_text, 5);
            let mut message = format!("`{program}` {how}");
            if !tail.is_empty() {
                message.push_str(&format!("; stderr: {tail}"));
            }
            return Err(StepError::new(FailureClass::ExitCode, message));
        }
        let parsed = if truncated {
            Value::Null
        } else {
            serde_json::from_str(stdout_text.trim()).unwrap_or(Value::Null)
        };
        let mut outputs = Outputs::new();
        outputs.insert("exit_code".into(), json!(code));
        outputs.insert("stdout".into(), json!(stdout_text));
        outputs.insert("stdout_truncated".into(), json!(truncated));
        outputs.insert("json".into(), parsed);
        outputs.insert("stderr_tail".into(), json!(stderr_text));
        Ok(outputs)
    }
}

async fn read_head(mut reader: impl AsyncRead + Unpin, limit: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > keep * 2 {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    tail
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Renders argv the way a shell user would type it (for previews only).
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
