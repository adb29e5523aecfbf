//! `exec`: run a program. The escape hatch for `inv`, `ansible-playbook`, `manage.py`.

use crate::steps::Evidence;
use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ConfigIssue, Effect, OutputDoc, Preview, PreviewCtx, StepCtx, StepKind, output};
use crate::duration::HumanDuration;
use crate::outcome::{Failure, FailureClass, Outputs};
use crate::util::process::{self, Limits, RunError};

/// Runs a program directly (no shell) and captures its output.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Exec {
    /// Program and arguments. No shell is involved; write `["sh", "-c", "..."]` to get one.
    /// Never put secrets here (argv is visible to every user of the machine): use `env`.
    #[serde(deserialize_with = "crate::util::string_list")]
    pub argv: Vec<String>,
    /// Environment variables for the program, e.g. `PGPASSWORD: "{{ secrets.db_password }}"`.
    /// Besides these it gets only `PATH`, `HOME`, `USER`, the locale, `TZ`, `TMPDIR`, the
    /// proxy and CA variables, and `inherit_env`: never the variables drrun's secrets come from.
    #[serde(default, deserialize_with = "crate::util::string_map")]
    #[schemars(with = "IndexMap<String, String>")]
    pub env: IndexMap<String, String>,
    /// Names of drrun's environment variables the program also gets, e.g. `[KUBECONFIG]`.
    #[serde(default, deserialize_with = "crate::util::one_or_many")]
    #[schemars(with = "crate::util::OneOrMany<String>")]
    pub inherit_env: Vec<String>,
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

    const EVIDENCE: Evidence = Evidence {
        summary: Some(summary),
        ..Evidence::NONE
    };

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

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, Failure> {
        let program = &self.argv[0];
        let mut cmd = process::command(program, &|name| self.inherit_env.iter().any(|n| n == name));
        cmd.args(&self.argv[1..]).envs(&self.env).current_dir(
            self.cwd
                .as_deref()
                .map_or_else(|| ctx.base_dir.clone(), |c| ctx.resolve_path(c)),
        );
        let limits = Limits {
            stdout_head: self.max_stdout.map_or(DEFAULT_MAX_STDOUT, |b| b.0) as usize,
            stderr_tail: STDERR_TAIL,
            time: self.timeout.map(|t| t.0),
            grace: KILL_GRACE,
            lines: Some(ctx.output_lines(program, None)),
            ..Limits::default()
        };
        let stdin = self.stdin.clone().map(String::into_bytes);
        let out = match process::run(cmd, stdin.into(), &limits, &ctx.cancel).await {
            Ok(out) => out,
            Err(RunError::Spawn(e)) => {
                return Err(Failure::config(format!("cannot start `{program}`: {e}")));
            }
            Err(RunError::Wait(e)) => {
                return Err(Failure::new(
                    FailureClass::Other,
                    format!("waiting for `{program}`: {e}"),
                ));
            }
            Err(RunError::Cancelled | RunError::Input(_)) => {
                return Err(Failure::new(
                    FailureClass::Other,
                    format!("`{program}` was cancelled"),
                ));
            }
            Err(RunError::TimedOut(limit)) => {
                return Err(Failure::new(
                    FailureClass::Timeout,
                    format!("`{program}` ran longer than {}", HumanDuration(limit)),
                ));
            }
        };
        let stdout_text = out.stdout_text();
        let stderr_text = out.stderr_text();
        let code = out.code();
        if !code.is_some_and(|c| self.ok_exit_codes.contains(&c)) {
            let tail = last_lines(&stderr_text, 5);
            let mut message = format!("`{program}` {}", out.how());
            if !tail.is_empty() {
                message.push_str(&format!("; stderr: {tail}"));
            }
            return Err(Failure::new(FailureClass::ExitCode, message));
        }
        let parsed = if out.stdout_truncated {
            Value::Null
        } else {
            serde_json::from_str(stdout_text.trim()).unwrap_or(Value::Null)
        };
        let mut outputs = Outputs::new();
        outputs.insert("exit_code".into(), json!(code));
        outputs.insert("stdout".into(), json!(stdout_text));
        outputs.insert("stdout_truncated".into(), json!(out.stdout_truncated));
        outputs.insert("json".into(), parsed);
        outputs.insert("stderr_tail".into(), json!(stderr_text));
        Ok(outputs)
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Renders argv the way a shell user would type it (for previews only).
pub(super) fn shell_words(argv: &[String]) -> String {
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

/// The report's line: how the program ended.
fn summary(o: &Outputs) -> Vec<String> {
    o.get("exit_code")
        .and_then(serde_json::Value::as_i64)
        .map(|c| vec![format!("exited with code {c}")])
        .unwrap_or_default()
}
