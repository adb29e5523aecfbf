//! The Kubernetes kinds, each thin over `services::kube`.

mod deploy;
mod image;
mod job;
mod scale;

pub(crate) use deploy::KubeDeploy;
pub(crate) use image::KubeImage;
pub(crate) use job::KubeJob;
pub(crate) use scale::KubeScale;

use crate::services::kube::jobs::{JobRun, job_labels};
use crate::steps::StepCtx;

/// What the Job runner needs from a step: its labels, its cancellation, its notes.
fn job_run(ctx: &StepCtx) -> JobRun<'_> {
    JobRun {
        labels: job_labels(&ctx.run_id, &ctx.step_id),
        cancel: &ctx.cancel,
        note: Box::new(move |text| ctx.note(text)),
    }
}
