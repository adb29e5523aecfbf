//! `kube.image`: read the image a Deployment's container runs (usually production's).

use crate::steps::Evidence;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::outcome::{Failure, Outputs};
use crate::services::kube::image::ImageRef;
use crate::services::kube::{Kube, KubeAccess, pick_container};
use crate::steps::{Effect, OutputDoc, Preview, PreviewCtx, StepCtx, StepKind, output};

/// Reads the image of one container of a Deployment and splits it into repository, tag
/// and digest. Reading is allowed in guarded namespaces: reading production's tag is
/// what this kind is for.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KubeImage {
    /// Namespace of the Deployment.
    pub namespace: String,
    /// Deployment name.
    pub deployment: String,
    /// Container name (default: the only container, or the first).
    #[serde(default)]
    pub container: Option<String>,
    /// Which cluster and credentials.
    #[serde(flatten)]
    pub access: KubeAccess,
}

impl StepKind for KubeImage {
    const NAME: &'static str = "kube.image";
    const SUMMARY: &'static str =
        "Read the image (repository, tag, digest) a Deployment's container runs.";
    const EFFECT: Effect = Effect::Read;
    const EXAMPLE: &'static str = r#"prod_tag:
  kind: kube.image
  description: Reading production is allowed; writing to it is what guards forbid.
  with: { namespace: "{{ vars.prod_ns }}", deployment: app, container: app }
"#;
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
        output("container", "The container that was read."),
    ];

    const EVIDENCE: Evidence = Evidence {
        summary: Some(summary),
        ..Evidence::NONE
    };

    fn api_rules(&self) -> Vec<crate::steps::access::ApiRule> {
        // Read only, as production should be: the Deployment, and the list of them to
        // name the right one when it is missing.
        vec![crate::steps::access::rule(
            &self.namespace,
            "apps",
            "deployments",
            &["get", "list"],
        )]
    }

    async fn preview(&self, ctx: &PreviewCtx) -> Preview {
        if ctx.offline {
            return Preview::offline();
        }
        let kube = match Kube::connect(&self.access, &ctx.base_dir).await {
            Ok(k) => k,
            Err(e) => return Preview::failure(e),
        };
        match self.read(&kube).await {
            Ok(out) => {
                let get = |k: &str| out[k].as_str().unwrap_or_default().to_string();
                let mut preview = Preview::lines([format!(
                    "deployment {}/{} container {} runs {} (tag `{}`)",
                    self.namespace,
                    self.deployment,
                    get("container"),
                    get("image"),
                    get("tag")
                )]);
                // A read is what the run would do too: later previews may use it.
                preview.outputs = Some(out);
                preview
            }
            Err(e) => Preview::failure(e),
        }
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, Failure> {
        let kube = Kube::connect(&self.access, &ctx.base_dir).await?;
        let out = self.read(&kube).await?;
        ctx.note(format!(
            "{}/{} runs {}",
            self.namespace,
            self.deployment,
            out["image"].as_str().unwrap_or_default()
        ));
        Ok(out)
    }
}

impl KubeImage {
    async fn read(&self, kube: &Kube) -> Result<Outputs, Failure> {
        let d = kube.deployment(&self.namespace, &self.deployment).await?;
        let containers = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|s| s.containers.as_slice())
            .unwrap_or_default();
        let owner = format!("deployment `{}/{}`", self.namespace, self.deployment);
        let c = pick_container(containers, self.container.as_deref(), &owner)?;
        let image = c.image.clone().unwrap_or_default();
        let r = ImageRef::parse(&image);
        let mut out = Outputs::new();
        out.insert("image".into(), json!(image));
        out.insert("registry".into(), json!(r.registry));
        out.insert("repository".into(), json!(r.repository));
        out.insert("tag".into(), json!(r.tag));
        out.insert("digest".into(), json!(r.digest));
        out.insert("container".into(), json!(c.name));
        Ok(out)
    }
}

/// The report's line: what production runs.
fn summary(o: &Outputs) -> Vec<String> {
    vec![format!(
        "`{}` runs `{}`",
        o.get("container").and_then(|v| v.as_str()).unwrap_or("?"),
        o.get("image").and_then(|v| v.as_str()).unwrap_or("?")
    )]
}
