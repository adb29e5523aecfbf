//! Command-line definitions (clap) and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "drrun",
    version,
    about = "Run disaster-recovery drills from YAML playbooks."
)]
#[command(after_help = "`drrun PLAYBOOK` is short for `drrun run PLAYBOOK`.\n\
Exit codes: 0 drill passed, 1 drill failed, 2 playbook or usage error, 130 interrupted.")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a drill.
    Run(RunArgs),
    /// Show what a drill would do, without changing anything (dry run).
    Plan(PlanArgs),
    /// Check playbooks and report every problem found.
    Validate(ValidateArgs),
    /// Print the step dependency graph.
    Graph(GraphArgs),
    /// Continue the newest unfinished run (or RUN_ID).
    Resume(ResumeArgs),
    /// Show runs and their steps.
    Status(StatusArgs),
    /// Print a run's drill report (RTO/RPO, timeline) again.
    Report(ReportArgs),
    /// List the step kinds, or document one.
    Kinds(KindsArgs),
    /// Print the playbook JSON schema.
    Schema,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum Output {
    /// Text for people.
    #[default]
    Human,
    /// JSON (JSON lines for `run`).
    Json,
}

#[derive(Debug, Args, Clone, Default)]
pub(crate) struct VarArgs {
    /// Override a var: `-e key=value` (repeatable).
    #[arg(short = 'e', long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Override vars from a YAML file (repeatable; later files win, `-e` wins over files).
    #[arg(long = "vars-file", value_name = "FILE")]
    pub vars_files: Vec<PathBuf>,
    /// Expose an environment variable to templates as `env.NAME` (repeatable).
    #[arg(long = "env-allow", value_name = "NAME")]
    pub env_allow: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    pub playbook: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    /// State directory (default: `.drrun/<playbook name>/` next to the playbook).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How many steps may run at once.
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
    /// Cancel the other running steps as soon as one fails (`finally` still runs).
    #[arg(long)]
    pub fail_fast: bool,
    /// Continue the newest unfinished run of this playbook instead of starting a new one.
    #[arg(long)]
    pub resume: bool,
    /// Also write report.json, report.md and junit.xml here (they always go to the run's
    /// state directory).
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    pub playbook: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    /// Do not contact any service: show the rendered plan only.
    #[arg(long)]
    pub offline: bool,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    #[arg(required = true)]
    pub playbooks: Vec<PathBuf>,
    #[command(flatten)]
    pub vars: VarArgs,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum GraphFormat {
    #[default]
    Text,
    Dot,
    Mermaid,
}

#[derive(Debug, Args)]
pub(crate) struct GraphArgs {
    pub playbook: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    #[arg(long, value_enum, default_value_t)]
    pub format: GraphFormat,
}

#[derive(Debug, Args)]
pub(crate) struct StateArgs {
    /// The playbook whose runs to use (its state directory).
    #[arg(long, short = 'p')]
    pub playbook: Option<PathBuf>,
    /// State directory (default: found from `--playbook`, or `.drrun/*` under the current directory).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    pub run_id: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub vars: VarArgs,
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
    #[arg(long)]
    pub fail_fast: bool,
    /// Also write report.json, report.md and junit.xml here.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// The run (default: the newest).
    pub run_id: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
    #[arg(long, value_enum, default_value_t)]
    pub format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum ReportFormat {
    /// Markdown, for people and tickets.
    #[default]
    Md,
    /// The full report as JSON.
    Json,
    /// JUnit XML, one test case per step and objective.
    Junit,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    pub run_id: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct KindsArgs {
    pub kind: Option<String>,
    /// Document every kind (Markdown; this is how docs/kinds.md is generated).
    #[arg(long, conflicts_with = "kind")]
    pub all: bool,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

const SUBCOMMANDS: &[&str] = &[
    "run", "plan", "validate", "graph", "resume", "status", "report", "kinds", "schema", "help",
];

/// `drrun PLAYBOOK ...` means `drrun run PLAYBOOK ...`.
pub(crate) fn normalize_args(mut args: Vec<String>) -> Vec<String> {
    if let Some(first) = args.get(1)
        && !first.starts_with('-')
        && !SUBCOMMANDS.contains(&first.as_str())
    {
        args.insert(1, "run".into());
    }
    args
}
