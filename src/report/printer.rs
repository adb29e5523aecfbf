//! The only place that writes to the terminal.

// Everywhere else, printing is denied (Cargo.toml); this module is where it happens.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::duration::human;
use crate::events::{Event, Reporter, SummaryRow};
use crate::outcome::{RunStatus, StepState};
use crate::util::human_bytes;

/// Prints a command's result to standard output.
pub(crate) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = stdout.write_all(b"\n");
    }
    let _ = stdout.flush();
}

/// Prints diagnostics (text for people that is not a command's result) to standard error.
pub(crate) fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// Prints an error that ends the program.
pub(crate) fn error(err: &anyhow::Error) {
    let text = format!("{err:#}");
    if text.starts_with("error") {
        eprintln!("{text}");
    } else {
        eprintln!("error: {text}");
    }
}

/// Applies `NO_COLOR` (and non-terminal output) to everything printed.
pub(crate) fn init_colors() {
    let enabled = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stderr().is_terminal();
    console::set_colors_enabled(enabled);
    console::set_colors_enabled_stderr(enabled);
}

/// How run progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Live spinners (a terminal).
    Live,
    /// Timestamped lines (logs, CI).
    Plain,
    /// JSON lines on stdout.
    Json,
}

/// How the printer shows a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PrinterOptions {
    pub json: bool,
    /// Show the lines steps' programs print (`-v`).
    pub verbose: bool,
    /// Without a terminal, a line per running step this often.
    pub progress_every: Duration,
}

pub(crate) struct Printer {
    mode: Mode,
    verbose: bool,
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    running: Arc<Mutex<HashMap<String, Running>>>,
    ticker: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

/// What is known of a running step, for progress lines.
#[derive(Debug, Clone)]
struct Running {
    kind: String,
    started: Instant,
    phase: Option<String>,
    /// Bytes done and expected, and when the first bytes were reported.
    bytes: Option<(u64, Option<u64>, Instant)>,
}

impl Running {
    /// `restore (pg.restore): restoring: 312 of 508 TOC entries, 4m 10s so far`;
    /// `backup (s3.fetch): 120.0 MiB of 400.0 MiB (30%), 12.3 MiB/s, eta 23s, 9.8s so far`.
    fn line(&self, step: &str) -> String {
        let mut parts = Vec::new();
        if let Some(phase) = &self.phase {
            parts.push(phase.clone());
        }
        if let Some((done, total, since)) = self.bytes {
            let secs = since.elapsed().as_secs_f64().max(0.001);
            let rate = done as f64 / secs;
            let mut text = match total {
                Some(t) if t > 0 => format!(
                    "{} of {} ({}%)",
                    human_bytes(done),
                    human_bytes(t),
                    done.saturating_mul(100) / t
                ),
                _ => human_bytes(done),
            };
            text.push_str(&format!(", {}/s", human_bytes(rate as u64)));
            if let Some(t) = total
                && rate > 0.0
                && t > done
            {
                let eta = Duration::from_secs_f64((t - done) as f64 / rate);
                text.push_str(&format!(", eta {}", human(eta)));
            }
            parts.push(text);
        }
        if parts.is_empty() {
            parts.push("running".into());
        }
        format!(
            "  {step} ({}): {}, {} so far",
            self.kind,
            parts.join(", "),
            human(self.started.elapsed())
        )
    }
}

impl Printer {
    pub(crate) fn new(opts: PrinterOptions) -> Self {
        let mode = if opts.json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Live
        } else {
            Mode::Plain
        };
        let multi = MultiProgress::with_draw_target(if mode == Mode::Live {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let running: Arc<Mutex<HashMap<String, Running>>> = Arc::default();
        // Cron, CI and pods have no terminal to draw a spinner on: a long download or
        // restore still says what it is doing, at a steady interval.
        let ticker = (mode == Mode::Plain).then(|| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let running = running.clone();
            let every = opts.progress_every.max(Duration::from_millis(50));
            std::thread::spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    let mut steps: Vec<(String, Running)> = running
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    steps.sort_by_key(|(_, r)| r.started);
                    for (step, r) in steps {
                        if r.started.elapsed() >= every / 2 {
                            plain_line(&r.line(&step));
                        }
                    }
                }
            });
            tx
        });
        Self {
            mode,
            verbose: opts.verbose,
            multi,
            bars: Mutex::new(HashMap::new()),
            running,
            ticker: Mutex::new(ticker),
        }
    }

    fn line(&self, text: String) {
        match self.mode {
            Mode::Live => {
                let _ = self.multi.println(text);
            }
            Mode::Plain => plain_line(&text),
            Mode::Json => {}
        }
    }

    fn set_running(&self, step: &str, f: impl FnOnce(&mut Running)) {
        if let Some(r) = self.running.lock().unwrap().get_mut(step) {
            f(r);
        }
    }

    fn spinner(&self, step: &str, kind: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} {elapsed}").unwrap(),
        );
        bar.set_prefix(step.to_string());
        bar.set_message(format!("({kind})"));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}

fn symbol(state: StepState) -> String {
    match state {
        StepState::Succeeded => style("✔").green().to_string(),
        StepState::Reused => style("↺").cyan().to_string(),
        StepState::Failed => style("✘").red().to_string(),
        StepState::Cancelled => style("■").yellow().to_string(),
        StepState::Skipped => style("–").dim().to_string(),
        StepState::Pending | StepState::Running => "·".into(),
    }
}

/// A line without a terminal: time-stamped, so a log read later says when.
fn plain_line(text: &str) {
    let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    eprintln!("{ts} {text}");
}

impl Drop for Printer {
    fn drop(&mut self) {
        self.ticker.lock().unwrap().take();
    }
}

impl Reporter for Printer {
    fn event(&self, event: &Event) {
        self.track(event);
        if self.mode == Mode::Json {
            if matches!(event, Event::StepOutput { .. }) && !self.verbose {
                return;
            }
            // Every line says when (RFC 3339, UTC, milliseconds) before what.
            let mut value = serde_json::to_value(event).unwrap_or_default();
            if let Some(map) = value.as_object_mut() {
                let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                map.shift_insert(0, "ts".into(), ts.into());
            }
            let mut stdout = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut stdout, &value);
            let _ = stdout.write_all(b"\n");
            let _ = stdout.flush();
            return;
        }
        match event {
            Event::StepPhase { step, phase } => {
                if let Some(bar) = self.bars.lock().unwrap().get(step) {
                    bar.set_message(phase.clone());
                }
            }
            Event::StepOutput { step, stream, line } => {
                if self.verbose {
                    let mark = match stream {
                        crate::events::OutputStream::Stdout => "|",
                        crate::events::OutputStream::Stderr => "!",
                    };
                    self.line(format!("  {step} {mark} {line}"));
                }
            }
            Event::RunStarted {
                run_id,
                playbook,
                resumed,
                steps,
            } => {
                let verb = if *resumed { "resuming" } else { "starting" };
                self.line(format!("{verb} run {run_id} of {playbook} ({steps} steps)"));
            }
            Event::Notice { text } => self.line(format!("{} {text}", style("note:").yellow())),
            Event::PhaseStarted { phase } => self.line(format!("— {phase} —")),
            Event::StepStarted {
                step,
                kind,
                attempt,
            } => {
                if self.mode == Mode::Live {
                    let bar = self.spinner(step, kind);
                    self.bars.lock().unwrap().insert(step.clone(), bar);
                } else {
                    self.line(format!("{step} ({kind}) started, attempt {attempt}"));
                }
            }
            Event::StepProgress { step, done, total } => {
                if let Some(bar) = self.bars.lock().unwrap().get(step) {
                    if let Some(total) = total
                        && bar.length() != Some(*total)
                    {
                        {
                            bar.set_length(*total);
                            bar.set_style(
                                ProgressStyle::with_template(
                                    "{spinner} {prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                                )
                                .unwrap()
                                .progress_chars("=> "),
                            );
                        }
                    }
                    bar.set_position(*done);
                }
            }
            Event::StepNote { step, text } => self.line(format!("  {step}: {text}")),
            Event::StepRetrying {
                step,
                attempt,
                delay_ms,
                class,
                error,
            } => self.line(format!(
                "{} {step}: {error} ({}); attempt {attempt} in {}",
                style("retry").yellow(),
                class.as_str(),
                human(Duration::from_millis(*delay_ms))
            )),
            Event::StepFinished {
                step,
                state,
                duration_ms,
                reason,
                ..
            } => {
                if let Some(bar) = self.bars.lock().unwrap().remove(step) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                let why = reason
                    .as_deref()
                    .map(|r| format!(" — {r}"))
                    .unwrap_or_default();
                self.line(format!(
                    "{} {step} {} {}{why}",
                    symbol(*state),
                    state.as_str(),
                    human(Duration::from_millis(*duration_ms))
                ));
            }
            Event::RunFinished {
                run_id,
                status,
                duration_ms,
                summary,
                objectives,
                report,
            } => {
                let _ = self.multi.clear();
                let mut text = summary_table(summary);
                let headline = match status {
                    RunStatus::Passed => style("PASSED").green().bold(),
                    RunStatus::Interrupted => style("INTERRUPTED").yellow().bold(),
                    RunStatus::Failed | RunStatus::Unfinished => style("FAILED").red().bold(),
                };
                text.push_str(&format!(
                    "\ndrill {headline} in {} (run {run_id})\n",
                    human(Duration::from_millis(*duration_ms))
                ));
                if let Some(failed) = summary.iter().find(|r| r.state == StepState::Failed) {
                    // A recap: the step's failure line above has the whole story (a page's
                    // own error text, where its response was saved); it is not said twice.
                    let reason = failed.reason.as_deref().unwrap_or("");
                    let first = reason.split("; ").next().unwrap_or(reason);
                    let more = if first.len() < reason.len() {
                        " (more above)"
                    } else {
                        ""
                    };
                    text.push_str(&format!("failed step: {} — {first}{more}\n", failed.step));
                }
                for o in objectives {
                    let line = if o.verdict.missed() {
                        style(o.text.as_str()).red().to_string()
                    } else {
                        o.text.clone()
                    };
                    text.push_str(&format!("{line}\n"));
                }
                if let Some(path) = report {
                    text.push_str(&format!("report: {path}\n"));
                }
                eprint!("{text}");
            }
        }
    }
}

impl Printer {
    /// Keeps what the progress lines need: which steps run, their phase and bytes.
    fn track(&self, event: &Event) {
        match event {
            Event::StepStarted { step, kind, .. } => {
                self.running.lock().unwrap().insert(
                    step.clone(),
                    Running {
                        kind: kind.clone(),
                        started: Instant::now(),
                        phase: None,
                        bytes: None,
                    },
                );
            }
            Event::StepPhase { step, phase } => self.set_running(step, |r| {
                r.phase = Some(phase.clone());
                // A finished transfer says nothing more about the phases after it.
                if r.bytes
                    .is_some_and(|(done, total, _)| total.is_some_and(|t| done >= t))
                {
                    r.bytes = None;
                }
            }),
            Event::StepProgress { step, done, total } => self.set_running(step, |r| {
                let since = r.bytes.map_or_else(Instant::now, |(_, _, s)| s);
                r.bytes = Some((*done, *total, since));
            }),
            Event::StepFinished { step, .. } => {
                self.running.lock().unwrap().remove(step);
            }
            Event::RunFinished { .. } => {
                self.running.lock().unwrap().clear();
                self.ticker.lock().unwrap().take();
            }
            _ => {}
        }
    }
}

/// The final table: step, kind, state, attempts, duration.
pub(crate) fn summary_table(rows: &[SummaryRow]) -> String {
    let w = rows.iter().map(|r| r.step.len()).max().unwrap_or(4).max(4);
    let k = rows.iter().map(|r| r.kind.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:w$}  {:k$}  {:9}  {:>8}  {:>8}\n",
        "STEP", "KIND", "STATE", "ATTEMPTS", "TIME"
    );
    for r in rows {
        out.push_str(&format!(
            "{:w$}  {:k$}  {:9}  {:>8}  {:>8}\n",
            r.step,
            r.kind,
            r.state.as_str(),
            r.attempts,
            human(Duration::from_millis(r.duration_ms))
        ));
    }
    out
}
