//! `s3.fetch`: find the right backup object in S3 and download it, verified.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ConfigIssue, Effect, OutputDoc, Outputs, Preview, PreviewCtx, StepCtx, StepError, StepKind,
    output,
};
use crate::duration::HumanDuration;
use crate::util::ByteSize;

/// The default key timestamp: `daily-<project>-YYYYMMDDHHMM.pgdump`, read as UTC.
pub const DEFAULT_TIMESTAMP_PATTERN: &str = r"(?P<ts>\d{12})(?:\.[A-Za-z0-9]+)*$";
pub const DEFAULT_TIMESTAMP_FORMAT: &str = "%Y%m%d%H%M";

/// Downloads one object from S3 (or an S3-compatible store): an explicit `key`, or the
/// newest object under `prefix`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Fetch {
    /// Bucket name.
    pub bucket: String,
    /// Exact key to download. Give either `key` or `prefix`.
    #[serde(default)]
    pub key: Option<String>,
    /// Key prefix to choose the object from (listing is fully paginated).
    #[serde(default)]
    pub prefix: Option<String>,
    /// How to choose among the keys under `prefix` (default `newest-key-timestamp`).
    #[serde(default)]
    pub select: Select,
    /// Regular expression the key must match (searched, not anchored).
    #[serde(default, rename = "match")]
    pub key_match: Option<String>,
    /// Regular expression with a named group `ts` that extracts the timestamp from a key
    /// (default: the 12 digits before the extension, as in `daily-acme-202611240300.pgdump`).
    #[serde(default)]
    pub timestamp_pattern: Option<String>,
    /// strftime format of the `ts` group, read as UTC (default `%Y%m%d%H%M`).
    #[serde(default)]
    pub timestamp_format: Option<String>,
    /// A specific object version (versioned buckets).
    #[serde(default)]
    pub version_id: Option<String>,
    /// Refuse, before downloading, a backup older than this (usually `{{ objectives.rpo }}`).
    #[serde(default)]
    pub max_age: Option<HumanDuration>,
    /// Refuse an object smaller than this (an empty or truncated dump).
    #[serde(default)]
    pub min_size: Option<ByteSize>,
    /// Where to write the file: a file path, or a directory ending in `/` (default: the
    /// run's work directory, under the key's file name).
    #[serde(default)]
    pub dest: Option<String>,
    /// AWS region (default: from the profile or environment; `us-east-1` for custom endpoints).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible store, e.g. `http://127.0.0.1:8333`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Use path-style addressing (`endpoint/bucket/key`), as most S3-compatible stores need.
    #[serde(default)]
    pub path_style: bool,
    /// Shared-config profile to take credentials from (`~/.aws/config`).
    #[serde(default)]
    pub profile: Option<String>,
    /// Parallel ranged GETs in flight (default 8).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Size of each ranged GET (default `16MiB`).
    #[serde(default)]
    pub part_size: Option<ByteSize>,
}

/// How `s3.fetch` picks an object under `prefix`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Select {
    /// The newest timestamp parsed from the key (keys without one are ignored).
    #[default]
    NewestKeyTimestamp,
    /// The newest `LastModified` reported by the store.
    NewestLastModified,
}

impl StepKind for S3Fetch {
    const NAME: &'static str = "s3.fetch";
    const SUMMARY: &'static str = "Find the newest (or a named) backup object in S3 and download it with parallel ranged GETs, sha256-verified and resumable.";
    const EFFECT: Effect = Effect::Idempotent;
    const OUTPUTS: &'static [OutputDoc] = &[
        output("path", "Local path of the downloaded file."),
        output("bucket", "Bucket the object came from."),
        output("key", "Key of the chosen object."),
        output(
            "version_id",
            "Version id of the object, when the bucket is versioned.",
        ),
        output("size", "Size in bytes."),
        output("etag", "The object's ETag."),
        output(
            "sha256",
            "sha256 of the downloaded bytes, computed while streaming.",
        ),
        output(
            "last_modified",
            "LastModified reported by the store (RFC 3339).",
        ),
        output(
            "backup_time",
            "Timestamp parsed from the key (RFC 3339), when selected that way.",
        ),
        output(
            "age",
            "Age of the backup at selection time (e.g. `5h 12m`).",
        ),
    ];

    fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match (&self.key, &self.prefix) {
            (Some(_), Some(_)) => issues.push(ConfigIssue::new(
                "key",
                "give either `key` or `prefix`, not both",
            )),
            (None, None) => issues.push(ConfigIssue::new(
                "",
                "give `key` (one object) or `prefix` (choose the newest)",
            )),
            _ => {}
        }
        if let Some(m) = &self.key_match
            && let Err(e) = regex::Regex::new(m)
        {
            issues.push(ConfigIssue::new(
                "match",
                format!("invalid regular expression: {e}"),
            ));
        }
        if let Some(p) = &self.timestamp_pattern {
            match regex::Regex::new(p) {
                Ok(re) if re.capture_names().flatten().any(|n| n == "ts") => {}
                Ok(_) => issues.push(ConfigIssue::new(
                    "timestamp_pattern",
                    "the pattern needs a named group `ts`, e.g. `(?P<ts>\\d{12})`",
                )),
                Err(e) => issues.push(ConfigIssue::new(
                    "timestamp_pattern",
                    format!("invalid regular expression: {e}"),
                )),
            }
        }
        if self.concurrency == Some(0) {
            issues.push(ConfigIssue::new(
                "concurrency",
                "`concurrency` must be at least 1",
            ));
        }
        issues
    }

    async fn preview(&self, ctx: &PreviewCtx) -> Preview {
        if ctx.offline {
            return Preview::offline();
        }
        Preview::cannot("live S3 preview is not available in this build")
    }

    async fn run(&self, _ctx: &StepCtx) -> Result<Outputs, StepError> {
        Err(super::not_built(Self::NAME))
    }
}
