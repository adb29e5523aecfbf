//! One step's attempts: time limit, retries with backoff, cancellation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::duration::HumanDuration;
use crate::plan::RetryPolicy;

use crate::events::{Event, Reporter};
use crate::outcome::{Failure, FailureClass, Outputs};
use crate::secrets::Redactor;
use crate::state::journal::{Journal, Record, now};
use crate::steps::guard::Guards;
use crate::steps::{Deferrals, Effect, StepConfig, StepCtx};

/// How long a cancelled step gets to clean up (kill its processes) before it is dropped.
const CLEANUP_GRACE: Duration = Duration::from_secs(10);

pub(super) enum TaskOutcome {
    Succeeded {
        outputs: Outputs,
        attempts: u32,
        duration: Duration,
        fingerprint: String,
    },
    Failed {
        error: Failure,
        attempts: u32,
        duration: Duration,
    },
    Cancelled {
        attempts: u32,
        duration: Duration,
        /// What the step said it leaves behind as it stopped.
        left: Option<String>,
    },
}

pub(super) struct Attempt {
    pub step_id: String,
    pub fingerprint: String,
    pub effect: Effect,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub config: StepConfig,
    pub run_id: String,
    pub journal: Arc<Journal>,
    pub reporter: Arc<dyn Reporter>,
    pub redactor: Arc<Redactor>,
    pub work_dir: PathBuf,
    pub base_dir: PathBuf,
    pub guards: Arc<Guards>,
    pub deferred: Arc<Deferrals>,
    pub earlier_attempt: bool,
}

impl Attempt {
    pub(super) async fn run(self, cancel: CancellationToken) -> TaskOutcome {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let token = cancel.child_token();
            let ctx = StepCtx {
                step_id: self.step_id.clone(),
                run_id: self.run_id.clone(),
                cancel: token.clone(),
                events: self.reporter.clone(),
                work_dir: self.work_dir.clone(),
                base_dir: self.base_dir.clone(),
                guards: self.guards.clone(),
                redactor: self.redactor.clone(),
                deferred: self.deferred.clone(),
                earlier_attempt: self.earlier_attempt,
            };
            // Test-only, and only in debug builds: make this step panic, to prove that a
            // panic fails its step alone and `finally` still runs.
            #[cfg(debug_assertions)]
            assert!(
                !std::env::var("DRRUN_TEST_PANIC_IN_STEP").is_ok_and(|s| s == self.step_id),
                "test-induced panic in step {}",
                self.step_id
            );
            let fut = self.config.run(&ctx);
            tokio::pin!(fut);
            let result = tokio::select! {
                r = &mut fut => r,
                () = tokio::time::sleep(self.timeout) => {
                    token.cancel();
                    let _ = tokio::time::timeout(CLEANUP_GRACE, &mut fut).await;
                    Err(Failure::new(FailureClass::Timeout, format!("step timed out after {}", HumanDuration(self.timeout))))
                }
                () = cancel.cancelled() => {
                    let stopped = tokio::time::timeout(CLEANUP_GRACE, &mut fut).await;
                    let left = match stopped {
                        Ok(Err(e)) => e.left.map(|l| self.redactor.redact(&l)),
                        _ => None,
                    };
                    return TaskOutcome::Cancelled { attempts: attempt, duration: started.elapsed(), left };
                }
            };
            match result {
                Ok(outputs) => {
                    let serde_json::Value::Object(outputs) = self
                        .redactor
                        .redact_json(&serde_json::Value::Object(outputs))
                    else {
                        unreachable!("an object stays an object")
                    };
                    return TaskOutcome::Succeeded {
                        outputs,
                        attempts: attempt,
                        duration: started.elapsed(),
                        fingerprint: self.fingerprint,
                    };
                }
                Err(e) if cancel.is_cancelled() => {
                    return TaskOutcome::Cancelled {
                        attempts: attempt,
                        duration: started.elapsed(),
                        left: e.left.map(|l| self.redactor.redact(&l)),
                    };
                }
                Err(e) => {
                    let error = Failure::new(e.class, self.redactor.redact(&e.message));
                    if attempt < self.retry.attempts && self.retry.retries(error.class, self.effect)
                    {
                        let delay = self.retry.delay_before(attempt + 1);
                        let record = Record::StepRetrying {
                            step: self.step_id.clone(),
                            attempt: attempt + 1,
                            class: error.class,
                            error: error.message.clone(),
                            delay_ms: delay.as_millis() as u64,
                            at: now(),
                        };
                        if let Err(e) = self.journal.append(&record) {
                            return self.failed(
                                Failure::new(FailureClass::Other, format!("journal: {e}")),
                                attempt,
                                started,
                            );
                        }
                        self.reporter.event(&Event::StepRetrying {
                            step: self.step_id.clone(),
                            attempt: attempt + 1,
                            delay_ms: delay.as_millis() as u64,
                            class: error.class,
                            error: error.message.clone(),
                        });
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = cancel.cancelled() => return TaskOutcome::Cancelled { attempts: attempt, duration: started.elapsed(), left: None },
                        }
                        attempt += 1;
                        continue;
                    }
                    return self.failed(error, attempt, started);
                }
            }
        }
    }

    fn failed(&self, error: Failure, attempts: u32, started: Instant) -> TaskOutcome {
        TaskOutcome::Failed {
            error,
            attempts,
            duration: started.elapsed(),
        }
    }
}
