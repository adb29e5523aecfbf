//! `kube.image`: read the image a Deployment's container runs (usually production's).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::kube_client::{Kube, KubeAccess, pick_container};
use super::{
    Effect, OutputDoc, Outputs, Preview, PreviewCtx, StepCtx, StepError, StepKind, output,
};

/// Reads the image of one container of a Deployment and splits it into repository, tag
/// and digest. Reading is allowed in guarded namespaces: reading production's tag is
/// what this kind is for.
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
    /// Which cluster and credentials.
    #[serde(flatten)]
    pub access: KubeAccess,
}

/// An image reference split the way registries read it: `[registry/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host with port, or empty (Docker Hub).
    pub registry: String,
    /// Registry plus path, without tag or digest.
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

impl ImageRef {
    pub fn parse(image: &str) -> Self {
        let (name, digest) = match image.split_once('@') {
            Some((n, d)) => (n, d.to_string()),
            None => (image, String::new()),
        };
        // A tag is a `:` after the last `/`; a `:` before it belongs to a registry port.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                name[last_slash + i + 1..].to_string(),
            ),
            None => (name, String::new()),
        };
        // The first component is a registry only if it looks like a host.
        let registry = match repository.split_once('/') {
            Some((first, _))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                first.to_string()
            }
            _ => String::new(),
        };
        Self {
            registry,
            repository: repository.to_string(),
            tag,
            digest,
        }
    }

    /// The same repository with another tag (any digest dropped: it named the old image).
    pub fn with_tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repository)
    }
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

    async fn preview(&self, ctx: &PreviewCtx) -> Preview {
        if ctx.offline {
            return Preview::offline();
        }
        let kube = match Kube::connect(&self.access, &ctx.base_dir).await {
            Ok(k) => k,
            Err(e) => return Preview::cannot(e.message),
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
            Err(e) => Preview::cannot(e.message),
        }
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, StepError> {
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
    async fn read(&self, kube: &Kube) -> Result<Outputs, StepError> {
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

#[cfg(test)]
mod tests {
    use super::ImageRef;

    #[test]
    fn image_references_split_like_registries_read_them() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let cases: &[(&str, &str, &str, &str, &str)] = &[
            // image, registry, repository, tag, digest
            ("nginx", "", "nginx", "", ""),
            ("nginx:1.25", "", "nginx", "1.25", ""),
            ("library/nginx:1.25", "", "library/nginx", "1.25", ""),
            ("reg:5000/app:1.2", "reg:5000", "reg:5000/app", "1.2", ""),
            ("reg:5000/app", "reg:5000", "reg:5000/app", "", ""),
            ("localhost/app:dev", "localhost", "localhost/app", "dev", ""),
            (
                "ghcr.io/caktus/site/web:2024.06.01-3",
                "ghcr.io",
                "ghcr.io/caktus/site/web",
                "2024.06.01-3",
                "",
            ),
            ("app@DIGEST", "", "app", "", "DIGEST"),
            (
                "reg.io:443/a/b:v1@DIGEST",
                "reg.io:443",
                "reg.io:443/a/b",
                "v1",
                "DIGEST",
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/site:main-abc123",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/site",
                "main-abc123",
                "",
            ),
        ];
        for (image, registry, repository, tag, dig) in cases {
            let image = image.replace("DIGEST", digest);
            let r = ImageRef::parse(&image);
            let want = ImageRef {
                registry: registry.to_string(),
                repository: repository.to_string(),
                tag: tag.to_string(),
                digest: dig.replace("DIGEST", digest),
            };
            assert_eq!(r, want, "{image}");
        }
        assert_eq!(
            ImageRef::parse("reg:5000/app:1.2@sha256:ab").with_tag("1.3"),
            "reg:5000/app:1.3"
        );
    }
}
