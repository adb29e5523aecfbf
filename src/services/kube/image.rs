//! Image references, split the way registries read them.

/// An image reference split the way registries read it: `[registry/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// Registry host with port, or empty (Docker Hub).
    pub registry: String,
    /// Registry plus path, without tag or digest.
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

impl ImageRef {
    pub(crate) fn parse(image: &str) -> Self {
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
    pub(crate) fn with_tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repository)
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
