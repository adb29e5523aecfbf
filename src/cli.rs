//! Command-line definitions (clap) and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `0.1.0 (abc1234 2026-12-02)`: the release and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DRRUN_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "drrun",
    version = VERSION,
    about = "Run disaster-recovery drills from YAML playbooks."
)]
#[command(after_help = "`drrun PLAYBOOK` is short for `drrun run PLAYBOOK`.\n\
Exit codes: 0 drill passed, 1 drill failed, 2 playbook or usage error, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM.")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a drill.
    #[command(after_help = "Examples:\n  \
        drrun playbooks/acme.yaml -e project=acme\n  \
        drrun run playbooks/acme.yaml --vars-file acme.yaml --report out/ --output json\n  \
        drrun run playbooks/acme.yaml --resume")]
    Run(RunArgs),
    /// Show what a drill would do, without changing anything (dry run).
    #[command(after_help = "Examples:\n  \
        drrun plan playbooks/acme.yaml -e project=acme      read-only checks against the services\n  \
        drrun plan playbooks/acme.yaml --offline --verbose  the rendered plan, every setting")]
    Plan(PlanArgs),
    /// Check playbooks and report every problem found.
    #[command(after_help = "Examples:\n  \
        drrun validate playbooks/*.yaml\n  \
        drrun validate playbooks/acme.yaml -e project=acme --output json")]
    Validate(ValidateArgs),
    /// Print the step dependency graph.
    #[command(after_help = "Examples:\n  \
        drrun graph playbooks/acme.yaml\n  \
        drrun graph playbooks/acme.yaml --format dot | dot -Tsvg > drill.svg")]
    Graph(GraphArgs),
    /// Print the Kubernetes Roles and RoleBindings a playbook's kube steps need.
    #[command(after_help = "Examples:\n  \
        drrun rbac playbooks/acme.yaml -e project=acme | kubectl apply -f -\n  \
        drrun rbac playbooks/acme.yaml --service-account drrun --service-account-namespace drrun")]
    Rbac(RbacArgs),
    /// Continue the newest unfinished run (or RUN_ID).
    #[command(after_help = "Examples:\n  \
        drrun resume                          the newest unfinished run under .drrun/\n  \
        drrun resume -p playbooks/acme.yaml\n  \
        drrun resume 20261202T031500Z-4f2a --state-dir /var/lib/drrun/acme")]
    Resume(ResumeArgs),
    /// Show runs and their steps.
    #[command(after_help = "Examples:\n  \
        drrun status                          every run in every state directory found here\n  \
        drrun status -p playbooks/acme.yaml\n  \
        drrun status RUN_ID --log restore     one run's steps, and a step's output")]
    Status(StatusArgs),
    /// List a playbook's drills with their RTO, restore time and backup age, and how the
    /// newest compares with the ones before.
    #[command(after_help = "Examples:\n  \
        drrun history playbooks/acme.yaml\n  \
        drrun history playbooks/acme.yaml --state s3://drills/fleet --output json")]
    History(HistoryArgs),
    /// Write an audit bundle of the drills in a period: results, measurements, who ran
    /// them, the reports and journals, and a manifest of sha256 sums.
    #[command(after_help = "Examples:\n  \
        drrun evidence --since 90d --out evidence-2026q4 --state s3://drills/fleet\n  \
        (cd evidence-2026q4 && sha256sum -c SHA256SUMS)")]
    Evidence(EvidenceArgs),
    /// Print a run's drill report (RTO/RPO, timeline) again.
    #[command(after_help = "Examples:\n  \
        drrun report                          the newest run's report.md\n  \
        drrun report RUN_ID --format junit > junit.xml")]
    Report(ReportArgs),
    /// List the step kinds, or document one.
    #[command(after_help = "Examples:\n  \
        drrun kinds\n  \
        drrun kinds pg.restore\n  \
        drrun kinds --all > docs/kinds.md")]
    Kinds(KindsArgs),
    /// Print the playbook JSON schema (point an editor at it: see the README).
    #[command(after_help = "Example:\n  \
        drrun schema > ~/.config/drrun/playbook.v1.json")]
    Schema,
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  \
        drrun completions bash > ~/.local/share/bash-completion/completions/drrun\n  \
        drrun completions zsh > ~/.zfunc/_drrun\n  \
        drrun completions fish > ~/.config/fish/completions/drrun.fish")]
    Completions(CompletionsArgs),
    /// Print the man page, or write one page per command into a directory.
    #[command(after_help = "Examples:\n  \
        drrun man | man -l -\n  \
        drrun man --dir /usr/local/share/man/man1")]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write `drrun.1` and `drrun-COMMAND.1` here instead of printing `drrun.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
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
    /// The playbook (YAML) to run.
    pub playbook: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    /// State directory (default: `.drrun/<playbook name>/` next to the playbook).
    #[arg(long, value_name = "DIR", conflicts_with = "state")]
    pub state_dir: Option<PathBuf>,
    /// A state store for many playbooks, each keeping its runs under its name: a
    /// directory (like `.drrun/`), or `s3://BUCKET/PREFIX` (optionally
    /// `?endpoint=URL&region=R&path_style=true&profile=P`): journals, leases and reports
    /// in the object store, so another machine or pod can resume.
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX", env = "DRRUN_STATE")]
    pub state: Option<String>,
    /// Continue the newest run if it was interrupted or cut off and its last record is
    /// younger than MAX_AGE (default 6h); otherwise start a new run. For scheduled runs:
    /// the next pod picks up where an evicted one stopped.
    #[arg(
        long,
        value_name = "MAX_AGE",
        num_args = 0..=1,
        default_missing_value = "6h",
        value_parser = parse_duration,
        conflicts_with = "resume"
    )]
    pub resume_interrupted: Option<std::time::Duration>,
    /// How many steps may run at once.
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
    /// Cancel the other running steps as soon as one fails (`finally` still runs).
    #[arg(long)]
    pub fail_fast: bool,
    /// A drill self-test: force STEP to fail as it starts, to show the rest reacts
    /// (dependents skipped, `finally` runs, exit 1); the report and notifications say the
    /// failure was deliberate.
    #[arg(long = "break", value_name = "STEP")]
    pub break_step: Option<String>,
    /// Continue the newest unfinished run of this playbook instead of starting a new one.
    #[arg(long)]
    pub resume: bool,
    /// Also write report.json, report.md and junit.xml here (they always go to the run's
    /// state directory).
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// With S3 state held by another run: wait up to this long for its lease to be
    /// released or to expire before giving up. A pod replacing one that was killed
    /// outright (OOM, a lost node) waits out its lease instead of failing.
    #[arg(long, value_name = "DURATION", env = "DRRUN_LEASE_WAIT", value_parser = parse_duration)]
    pub lease_wait: Option<std::time::Duration>,
    /// `human` for people; `json` for programs (JSON lines while a drill runs).
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    #[command(flatten)]
    pub show: ShowArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct MetricsArgs {
    /// Write the drill's Prometheus metrics to this file when the run ends (atomically,
    /// for node_exporter's textfile collector: a `.prom` file in its directory).
    #[arg(long, value_name = "FILE", env = "DRRUN_METRICS_TEXTFILE")]
    pub metrics_textfile: Option<PathBuf>,
    /// Push the drill's Prometheus metrics to this Pushgateway when the run ends, grouped
    /// by playbook (`/metrics/job/drrun/playbook/NAME`); credentials in the URL are never
    /// shown. A failed push is a warning: it never changes the drill's result.
    #[arg(long, value_name = "URL", env = "DRRUN_PUSHGATEWAY")]
    pub pushgateway: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct ShowArgs {
    /// Show what the steps' programs print, as they print it (secrets redacted); it is
    /// always kept in the run's `logs/STEP.log`.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Without a terminal (cron, CI, a pod), print a line per running step this often.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        env = "DRRUN_PROGRESS_EVERY",
        value_parser = parse_duration
    )]
    pub progress_every: std::time::Duration,
    /// After a stop signal, abort a run still going this long (`finally` included), so
    /// it ends before a scheduler's SIGKILL does (set it below the pod's
    /// `terminationGracePeriodSeconds`). Default: `finally` runs to its end.
    #[arg(long, value_name = "DURATION", env = "DRRUN_STOP_GRACE", value_parser = parse_duration)]
    pub stop_grace: Option<std::time::Duration>,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::duration::HumanDuration::parse(text).map(|d| d.0)
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The playbook (YAML) to plan.
    pub playbook: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    /// Do not contact any service: show the rendered plan only.
    #[arg(long)]
    pub offline: bool,
    /// Show every rendered setting of every step (default: one line a step with its
    /// short settings, then what it would do).
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// `human` for people; `json` for programs (JSON lines while a drill runs).
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The playbooks (YAML) to check.
    #[arg(required = true)]
    pub playbooks: Vec<PathBuf>,
    #[command(flatten)]
    pub vars: VarArgs,
    /// `human` for people; `json` for programs (JSON lines while a drill runs).
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
pub(crate) struct HistoryArgs {
    /// The playbook whose drills to list (default: every state directory found).
    pub playbook: Option<PathBuf>,
    /// State directory (default: the playbook's).
    #[arg(long, value_name = "DIR", conflicts_with = "state")]
    pub state_dir: Option<PathBuf>,
    /// A state store for many playbooks: a directory or `s3://BUCKET/PREFIX`.
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX", env = "DRRUN_STATE")]
    pub state: Option<String>,
    /// `human` for people; `json` for programs (JSON lines while a drill runs).
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct EvidenceArgs {
    /// Drills that started within this long before now (e.g. `90d`).
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_duration)]
    pub since: std::time::Duration,
    /// The bundle's directory (must not exist yet).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RbacArgs {
    /// The playbook (YAML) whose kube steps to grant.
    pub playbook: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    /// The ServiceAccount drrun runs as.
    #[arg(long, value_name = "NAME", default_value = "drrun")]
    pub service_account: String,
    /// The namespace of that ServiceAccount (where the CronJob runs).
    #[arg(long, value_name = "NAMESPACE", default_value = "drrun")]
    pub service_account_namespace: String,
}

#[derive(Debug, Args)]
pub(crate) struct GraphArgs {
    /// The playbook (YAML) whose steps to draw.
    pub playbook: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    /// `text` for a terminal, `dot` for Graphviz, `mermaid` for Markdown pages.
    #[arg(long, value_enum, default_value_t)]
    pub format: GraphFormat,
}

#[derive(Debug, Args)]
pub(crate) struct StateArgs {
    /// The playbook whose runs to use (its state directory).
    #[arg(long, short = 'p')]
    pub playbook: Option<PathBuf>,
    /// State directory (default: found from `--playbook`, or `.drrun/*` under the current directory).
    #[arg(long, value_name = "DIR", conflicts_with = "state")]
    pub state_dir: Option<PathBuf>,
    /// A state store for many playbooks: a directory (like `.drrun/`) or
    /// `s3://BUCKET/PREFIX` (see `drrun run --state`).
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX", env = "DRRUN_STATE")]
    pub state: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// The run to continue (default: the newest unfinished one).
    pub run_id: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub vars: VarArgs,
    /// How many steps may run at once.
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
    /// Cancel the other running steps as soon as one fails (`finally` still runs).
    #[arg(long)]
    pub fail_fast: bool,
    /// Also write report.json, report.md and junit.xml here.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// With S3 state held by another run: wait up to this long for its lease to be
    /// released or to expire (see `drrun run --lease-wait`).
    #[arg(long, value_name = "DURATION", env = "DRRUN_LEASE_WAIT", value_parser = parse_duration)]
    pub lease_wait: Option<std::time::Duration>,
    /// `human` for people; `json` for programs (JSON lines while a drill runs).
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    #[command(flatten)]
    pub show: ShowArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// The run (default: the newest).
    pub run_id: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
    /// Which report to print.
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
    /// The run to show step by step (default: list every run).
    pub run_id: Option<String>,
    /// Print what STEP's programs printed (its `logs/STEP.log`) in the run (default: the newest).
    #[arg(long, value_name = "STEP")]
    pub log: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
    /// The fleet view: one line a playbook (its last drill, RTO and RPO against the
    /// objectives, whether it is overdue); the default with `--state` and no run.
    /// Exits 1 when a playbook's last drill failed or it is overdue.
    #[arg(long)]
    pub fleet: bool,
    /// With the fleet view: how often each drill must pass, e.g. `7d` (instead of the
    /// playbooks' `objectives.every`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub every: Option<std::time::Duration>,
    /// `human` for people; `json` for programs (JSON lines while a drill runs).
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct KindsArgs {
    /// The kind to document, e.g. `pg.restore` (default: list them all).
    pub kind: Option<String>,
    /// Document every kind (Markdown; this is how docs/kinds.md is generated).
    #[arg(long, conflicts_with = "kind")]
    pub all: bool,
    /// `human` for people; `json` for programs (JSON lines while a drill runs).
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

const SUBCOMMANDS: &[&str] = &[
    "run",
    "plan",
    "validate",
    "graph",
    "rbac",
    "history",
    "evidence",
    "resume",
    "status",
    "report",
    "kinds",
    "schema",
    "completions",
    "man",
    "help",
];

/// `drrun stauts`: a first word that is no command and no file, but close to a command, is
/// a typo of the command, not a playbook to run.
pub(crate) fn misspelt_command(args: &[String]) -> Option<(String, &'static str)> {
    let first = args.get(1)?;
    if first.starts_with('-')
        || SUBCOMMANDS.contains(&first.as_str())
        || first.contains(['/', '.'])
        || std::path::Path::new(first).exists()
    {
        return None;
    }
    let best = SUBCOMMANDS
        .iter()
        .copied()
        .filter(|c| *c != "help")
        .min_by_key(|c| strsim::levenshtein(c, first))?;
    (strsim::levenshtein(best, first) <= 2.max(first.len() / 3)).then(|| (first.clone(), best))
}

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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `--help` and the man pages document every argument, and every command has examples.
    #[test]
    fn every_argument_is_documented_and_every_command_has_examples() {
        let cli = super::Cli::command();
        for sub in cli.get_subcommands() {
            let name = sub.get_name();
            assert!(sub.get_about().is_some(), "`{name}` has no summary");
            assert!(
                sub.get_after_help()
                    .is_some_and(|h| h.to_string().starts_with("Example")),
                "`drrun {name} --help` shows no examples"
            );
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "`drrun {name}`: `{id}` is not documented"
                );
            }
        }
    }
}
