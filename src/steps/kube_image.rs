//! `kube.image`: read the image a Deployment's container runs (usually production's).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Effect, OutputDoc, Outputs, Preview, PreviewCtx, StepCtx, StepError, StepKind, output,
};

/// Reads the image of one container of a Deployment and splits it into repository, tag
/// and digest. Reading is allowed in guarded namespaces.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeImage {
    /// Namespace of the Deployment.
    pub namespace: String,
    /// Deployment name.
    pub deployment: String,
    /// Container name (default: the only container, or the first).
    #[serde(default)]
    pub container: Option<String>,
    /// kubeconfig context to use (default: the current context).
    #[serde(default)]
    pub context: Option<String>,
    /// Path of a kubeconfig file (default: `$KUBECONFIG` or `~/.kube/config`).
    #[serde(default)]
    pub kubeconfig: Option<String>,
}

impl StepKind for KubeImage {
    const NAME: &'static str = "kube.image";
    const SUMMARY: &'static str =
        "Read the image (repository, tag, digest) a Deployment's container runs.";
    const EFFECT: Effect = Effect::Read;
    const OUTPUTS: &'static [OutputDoc] = &[
        output("image", "The full image reference."),
        output(
            "registry",
            "Registry host (with port), or empty for Docker Hub.",
        ),
        output(
            "repository",
            "Repository including the registry, without tag or digest.",
        ),
        output(
            "tag",
            "The tag (text after the last `:` of the name part), or empty.",
        ),
        output("digest", "The `sha256:...` digest, or empty."),
    ];

    async fn preview(&self, ctx: &PreviewCtx) -> Preview {
        if ctx.offline {
            return Preview::offline();
        }
        Preview::cannot("live Kubernetes preview is not available in this build")
    }

    async fn run(&self, _ctx: &StepCtx) -> Result<Outputs, StepError> {
        Err(super::not_built(Self::NAME))
    }
}
