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
    /// Where the store is and which credentials to use.
    #[serde(flatten)]
    pub access: S3Access,
    /// Ranged GETs in flight at once (default 4). Each part goes straight from the socket
    /// to the file, so memory use depends neither on this, nor on `part_size`, nor on the
    /// object's size.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Size of each ranged GET (default `8MiB`).
    #[serde(default)]
    pub part_size: Option<ByteSize>,
}

/// How to reach an S3 (or S3-compatible) store; credentials come from the standard AWS
/// chain (environment, shared profiles, SSO, web identity, instance metadata).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Access {
    /// AWS region (default: from the profile or environment; `us-east-1` otherwise).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible store, e.g. `http://127.0.0.1:8333`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Use path-style addressing, as most S3-compatible stores need.
    #[serde(default)]
    pub path_style: bool,
    /// Shared-config profile to take credentials from.
    #[serde(default)]
    pub profile: Option<String>,
}

pub use runtime::open_object;

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
    const EXAMPLE: &'static str = r#"backup:
  kind: s3.fetch
  with:
    bucket: "{{ vars.project }}-hosting-services"
    prefix: "{{ vars.project }}/daily-"
    select: newest-key-timestamp      # daily-<project>-YYYYMMDDHHMM.pgdump, UTC
    max_age: "{{ objectives.rpo }}"   # refused before a byte is downloaded
    min_size: 1MiB
    concurrency: 4
    part_size: 8MiB
"#;
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
        runtime::preview(self).await
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, StepError> {
        runtime::run(self, ctx).await
    }
}

mod runtime {
    //! Talking to S3: selection, verification, the resumable parallel download.

    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_s3::types::ChecksumMode;
    use chrono::{DateTime, NaiveDateTime, Utc};
    use md5::Digest as _;
    use serde::{Deserialize, Serialize};
    use serde_json::json;
    use sha2::Sha256;

    use super::{DEFAULT_TIMESTAMP_FORMAT, DEFAULT_TIMESTAMP_PATTERN, S3Access, S3Fetch, Select};
    use crate::duration::{HumanDuration, format_duration};
    use crate::playbook::model::FailureClass;
    use crate::steps::{Outputs, Preview, StepCtx, StepError};

    const DEFAULT_CONCURRENCY: usize = 4;
    /// At most this much is hashed between durability points (fsync + progress record)
    /// unless one part is larger; smaller objects get one every eighth of their size
    /// (`sync_interval`).
    const SYNC_EVERY: u64 = 256 << 20;
    /// Hashing reads the written file back in windows of this size.
    const HASH_WINDOW: u64 = 4 << 20;

    const DEFAULT_PART: u64 = 8 << 20;
    /// Attempts per ranged GET before the step fails (the step's own retry comes on top).
    const PART_ATTEMPTS: u32 = 3;

    /// The object chosen, with why.
    #[derive(Debug, Clone)]
    struct Chosen {
        key: String,
        size: u64,
        last_modified: Option<DateTime<Utc>>,
        backup_time: Option<DateTime<Utc>>,
        considered: usize,
    }

    struct Client {
        s3: aws_sdk_s3::Client,
        /// Who we are, for "access denied" messages (never the secret).
        principal: String,
    }

    async fn client(cfg: &S3Access) -> Result<Client, StepError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &cfg.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            // Ranged GETs cannot be checked against a whole-object checksum; drrun
            // verifies the whole file itself.
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
        if shared.region().is_none() {
            b = b.region(aws_config::Region::new("us-east-1"));
        }
        if let Some(e) = &cfg.endpoint {
            b = b.endpoint_url(e);
        }
        if cfg.path_style {
            b = b.force_path_style(true);
        }
        let principal = principal(&shared, cfg).await;
        Ok(Client {
            s3: aws_sdk_s3::Client::from_conf(b.build()),
            principal,
        })
    }

    async fn principal(shared: &aws_config::SdkConfig, cfg: &S3Access) -> String {
        use aws_credential_types::provider::ProvideCredentials;
        let source = match &cfg.profile {
            Some(p) => format!("profile `{p}`"),
            None => "the default credential chain".into(),
        };
        match shared.credentials_provider() {
            Some(p) => match p.provide_credentials().await {
                Ok(c) => {
                    let id = c.access_key_id();
                    let shown = if id.len() > 8 {
                        format!("{}…{}", &id[..4], &id[id.len() - 4..])
                    } else {
                        "…".into()
                    };
                    format!("access key {shown} from {source}")
                }
                Err(e) => format!("no credentials from {source} ({e})"),
            },
            None => format!("no credentials from {source}"),
        }
    }

    /// Turns an SDK error into a message and the right retry class.
    fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
        err: &SdkError<E>,
        what: &str,
        client: &Client,
        bucket: &str,
    ) -> StepError {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().unwrap_or_default().to_string();
        match err {
            SdkError::DispatchFailure(e) => {
                let class = if e.is_timeout() {
                    FailureClass::Timeout
                } else {
                    FailureClass::Connection
                };
                StepError::new(
                    class,
                    format!("{what}: cannot reach the S3 endpoint: {}", chain(err)),
                )
            }
            SdkError::TimeoutError(_) => {
                StepError::new(FailureClass::Timeout, format!("{what}: timed out"))
            }
            SdkError::ResponseError(_) => StepError::new(
                FailureClass::Ambiguous,
                format!("{what}: the response was cut off: {}", chain(err)),
            ),
            _ => match (code.as_str(), status) {
                (
                    "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "Forbidden",
                    _,
                )
                | (_, Some(403)) => StepError::new(
                    FailureClass::Config,
                    format!("{what}: access denied ({code}) for {}", client.principal),
                ),
                ("NoSuchBucket", _) => StepError::new(
                    FailureClass::Config,
                    format!("{what}: bucket `{bucket}` does not exist"),
                ),
                ("NoSuchKey" | "NotFound", _) | (_, Some(404)) => {
                    StepError::new(FailureClass::Config, format!("{what}: no such object"))
                }
                ("PreconditionFailed", _) | (_, Some(412)) => StepError::new(
                    FailureClass::Assertion,
                    format!(
                        "{what}: the object changed during the download (ETag no longer matches)"
                    ),
                ),
                (
                    "SlowDown" | "RequestLimitExceeded" | "ServiceUnavailable" | "InternalError",
                    _,
                ) => StepError::new(
                    FailureClass::Throttled,
                    format!("{what}: {code} (status {})", status.unwrap_or(0)),
                ),
                (_, Some(s)) if s == 429 || s >= 500 => StepError::new(
                    FailureClass::Throttled,
                    format!("{what}: {code} (status {s})"),
                ),
                _ => StepError::new(
                    FailureClass::Other,
                    format!("{what}: {} {}", code, chain(err)),
                ),
            },
        }
    }

    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let next = s.to_string();
            if !text.contains(&next) {
                text.push_str(&format!(": {next}"));
            }
            source = s.source();
        }
        text
    }

    fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(t.secs(), t.subsec_nanos())
    }

    /// The timestamp in a key, by the configured pattern and format (UTC).
    pub fn key_timestamp(cfg: &S3Fetch, key: &str) -> Option<DateTime<Utc>> {
        let pattern = cfg
            .timestamp_pattern
            .as_deref()
            .unwrap_or(DEFAULT_TIMESTAMP_PATTERN);
        let format = cfg
            .timestamp_format
            .as_deref()
            .unwrap_or(DEFAULT_TIMESTAMP_FORMAT);
        let re = regex::Regex::new(pattern).ok()?;
        let ts = re.captures(key)?.name("ts")?.as_str().to_string();
        NaiveDateTime::parse_from_str(&ts, format)
            .ok()
            .or_else(|| {
                chrono::NaiveDate::parse_from_str(&ts, format)
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
            })
            .map(|n| n.and_utc())
    }

    async fn choose(cfg: &S3Fetch, client: &Client) -> Result<Chosen, StepError> {
        if let Some(key) = &cfg.key {
            let mut head = client.s3.head_object().bucket(&cfg.bucket).key(key);
            if let Some(v) = &cfg.version_id {
                head = head.version_id(v);
            }
            let h = head.send().await.map_err(|e| {
                classify(
                    &e,
                    &format!("s3://{}/{key}", cfg.bucket),
                    client,
                    &cfg.bucket,
                )
            })?;
            return Ok(Chosen {
                key: key.clone(),
                size: h.content_length().unwrap_or(0).max(0) as u64,
                last_modified: h.last_modified().and_then(to_chrono),
                backup_time: key_timestamp(cfg, key),
                considered: 1,
            });
        }
        let prefix = cfg.prefix.clone().unwrap_or_default();
        let key_match = cfg
            .key_match
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| StepError::config(e.to_string()))?;
        let mut pages = client
            .s3
            .list_objects_v2()
            .bucket(&cfg.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        let mut all = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                classify(
                    &e,
                    &format!("listing s3://{}/{prefix}", cfg.bucket),
                    client,
                    &cfg.bucket,
                )
            })?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    all.push((
                        k.to_string(),
                        o.size().unwrap_or(0).max(0) as u64,
                        o.last_modified().and_then(to_chrono),
                    ));
                }
            }
        }
        let total = all.len();
        let matching: Vec<_> = all
            .iter()
            .filter(|(k, ..)| key_match.as_ref().is_none_or(|re| re.is_match(k)))
            .collect();
        let best = match cfg.select {
            Select::NewestKeyTimestamp => matching
                .iter()
                .filter_map(|(k, size, lm)| key_timestamp(cfg, k).map(|ts| (ts, k, *size, *lm)))
                .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
                .map(|(ts, k, size, lm)| Chosen {
                    key: k.clone(),
                    size,
                    last_modified: lm,
                    backup_time: Some(ts),
                    considered: total,
                }),
            Select::NewestLastModified => matching
                .iter()
                .filter(|(_, _, lm)| lm.is_some())
                .max_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)))
                .map(|(k, size, lm)| Chosen {
                    key: k.clone(),
                    size: *size,
                    last_modified: *lm,
                    backup_time: None,
                    considered: total,
                }),
        };
        best.ok_or_else(|| {
            let shown: Vec<&str> = all
                .iter()
                .rev()
                .take(10)
                .map(|(k, ..)| k.as_str())
                .collect();
            let why = match cfg.select {
                Select::NewestKeyTimestamp => "with a timestamp the pattern can read",
                Select::NewestLastModified => "",
            };
            StepError::new(
                FailureClass::Assertion,
                format!(
                    "no object under s3://{}/{prefix} matches{}{} ({total} listed{})",
                    cfg.bucket,
                    cfg.key_match
                        .as_deref()
                        .map(|m| format!(" /{m}/"))
                        .unwrap_or_default(),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" {why}")
                    },
                    if shown.is_empty() {
                        String::new()
                    } else {
                        format!("; found e.g. {}", shown.join(", "))
                    }
                ),
            )
        })
    }

    /// Refuses a backup that is too old or too small, before any byte is downloaded.
    fn check_limits(cfg: &S3Fetch, chosen: &Chosen) -> Result<Option<Duration>, StepError> {
        let when = chosen.backup_time.or(chosen.last_modified);
        let age = when.and_then(|t| Utc::now().signed_duration_since(t).to_std().ok());
        if let (Some(max), Some(age)) = (cfg.max_age, age)
            && age > max.0
        {
            return Err(StepError::new(
                FailureClass::Assertion,
                format!(
                    "the newest backup s3://{}/{} is {} old, older than max_age {max} (backup time {})",
                    cfg.bucket,
                    chosen.key,
                    format_duration(Duration::from_secs(age.as_secs())),
                    when.map(|w| w.to_rfc3339()).unwrap_or_default()
                ),
            ));
        }
        if let Some(min) = cfg.min_size
            && chosen.size < min.0
        {
            return Err(StepError::new(
                FailureClass::Assertion,
                format!(
                    "s3://{}/{} is {} bytes, smaller than min_size ({} bytes)",
                    cfg.bucket, chosen.key, chosen.size, min.0
                ),
            ));
        }
        Ok(age)
    }

    pub async fn preview(cfg: &S3Fetch) -> Preview {
        let client = match client(&cfg.access).await {
            Ok(c) => c,
            Err(e) => return Preview::cannot(e.message),
        };
        match choose(cfg, &client).await {
            Err(e) => Preview::cannot(e.message),
            Ok(chosen) => {
                let mut lines = vec![format!(
                    "would download s3://{}/{} ({} bytes; chosen among {} listed)",
                    cfg.bucket, chosen.key, chosen.size, chosen.considered
                )];
                match check_limits(cfg, &chosen) {
                    Ok(age) => lines.push(format!(
                        "age {}{}",
                        age.map(|a| format_duration(Duration::from_secs(a.as_secs())))
                            .unwrap_or_else(|| "unknown".into()),
                        cfg.max_age
                            .map(|m| format!(" (max_age {m}: ok)"))
                            .unwrap_or_default()
                    )),
                    Err(e) => lines.push(format!("would refuse: {}", e.message)),
                }
                Preview::lines(lines)
            }
        }
    }

    /// Progress of an interrupted download, next to the partial file.
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Partial {
        bucket: String,
        key: String,
        etag: String,
        version_id: Option<String>,
        size: u64,
        /// Bytes from the start that are on disk, fsync'd and hashed in order.
        verified: u64,
    }

    /// Written next to a finished download so a re-run can skip it.
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Done {
        bucket: String,
        key: String,
        etag: String,
        version_id: Option<String>,
        size: u64,
        sha256: String,
    }

    /// The digests computed while the parts stream through.
    struct Digests {
        sha: Sha256,
        md5: Option<md5::Md5>,
    }

    impl Digests {
        fn update(&mut self, data: &[u8]) {
            self.sha.update(data);
            if let Some(m) = self.md5.as_mut() {
                m.update(data);
            }
        }
    }

    /// Replaces the partial-download record atomically.
    fn write_meta(path: &Path, partial: &Partial) -> Result<(), StepError> {
        let tmp = sidecar(path, ".tmp");
        std::fs::write(&tmp, serde_json::to_vec(partial).unwrap()).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    }

    fn sidecar(path: &Path, suffix: &str) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    }

    fn dest_path(cfg: &S3Fetch, ctx: &StepCtx, key: &str) -> PathBuf {
        let name = key
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("object");
        match &cfg.dest {
            Some(d) if d.ends_with('/') => ctx.resolve_path(d).join(name),
            Some(d) => {
                let p = ctx.resolve_path(d);
                if p.is_dir() { p.join(name) } else { p }
            }
            None => ctx.work_dir.join(name),
        }
    }

    fn io(path: &Path, e: std::io::Error) -> StepError {
        StepError::new(FailureClass::Other, format!("{}: {e}", path.display()))
    }

    pub async fn run(cfg: &S3Fetch, ctx: &StepCtx) -> Result<Outputs, StepError> {
        let client = client(&cfg.access).await?;
        let chosen = choose(cfg, &client).await?;
        let age = check_limits(cfg, &chosen)?;
        ctx.note(format!(
            "chose s3://{}/{} ({} bytes) among {} listed",
            cfg.bucket, chosen.key, chosen.size, chosen.considered
        ));

        let mut head = client
            .s3
            .head_object()
            .bucket(&cfg.bucket)
            .key(&chosen.key)
            .checksum_mode(ChecksumMode::Enabled);
        if let Some(v) = &cfg.version_id {
            head = head.version_id(v);
        }
        let where_ = format!("s3://{}/{}", cfg.bucket, chosen.key);
        let h = head
            .send()
            .await
            .map_err(|e| classify(&e, &where_, &client, &cfg.bucket))?;
        let size = h.content_length().unwrap_or(0).max(0) as u64;
        let etag = h.e_tag().unwrap_or_default().trim_matches('"').to_string();
        let version_id = h.version_id().map(str::to_string).filter(|v| v != "null");
        let full_sha256 = h
            .checksum_sha256()
            .filter(|_| {
                h.checksum_type()
                    .is_none_or(|t| t.as_str() == "FULL_OBJECT")
            })
            .filter(|c| !c.contains('-'))
            .map(str::to_string);

        let dest = dest_path(cfg, ctx, &chosen.key);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let done_path = sidecar(&dest, ".drrun.json");
        let sha256 = match reuse_finished(&dest, &done_path, cfg, &chosen.key, &etag, size) {
            Some(sha) => {
                ctx.note(format!(
                    "{} is already downloaded and verified",
                    dest.display()
                ));
                sha
            }
            None => {
                let sha = download(
                    cfg,
                    ctx,
                    &client,
                    &chosen.key,
                    &etag,
                    version_id.as_deref(),
                    size,
                    &dest,
                    full_sha256.as_deref(),
                )
                .await?;
                let done = Done {
                    bucket: cfg.bucket.clone(),
                    key: chosen.key.clone(),
                    etag: etag.clone(),
                    version_id: version_id.clone(),
                    size,
                    sha256: sha.clone(),
                };
                std::fs::write(&done_path, serde_json::to_vec(&done).unwrap())
                    .map_err(|e| io(&done_path, e))?;
                sha
            }
        };

        let mut out = Outputs::new();
        out.insert("path".into(), json!(dest.display().to_string()));
        out.insert("bucket".into(), json!(cfg.bucket));
        out.insert("key".into(), json!(chosen.key));
        out.insert("version_id".into(), json!(version_id));
        out.insert("size".into(), json!(size));
        out.insert("etag".into(), json!(etag));
        out.insert("sha256".into(), json!(sha256));
        out.insert(
            "last_modified".into(),
            json!(chosen.last_modified.map(|t| t.to_rfc3339())),
        );
        out.insert(
            "backup_time".into(),
            json!(chosen.backup_time.map(|t| t.to_rfc3339())),
        );
        out.insert(
            "age".into(),
            json!(age.map(|a| HumanDuration(Duration::from_secs(a.as_secs())).to_string())),
        );
        Ok(out)
    }

    fn reuse_finished(
        dest: &Path,
        done_path: &Path,
        cfg: &S3Fetch,
        key: &str,
        etag: &str,
        size: u64,
    ) -> Option<String> {
        let done: Done = serde_json::from_slice(&std::fs::read(done_path).ok()?).ok()?;
        let on_disk = std::fs::metadata(dest).ok()?.len();
        (done.bucket == cfg.bucket
            && done.key == key
            && done.etag == etag
            && done.size == size
            && on_disk == size)
            .then_some(done.sha256)
    }

    /// Downloads into `<dest>.drrun-part`, verifies, renames. Parts are fetched in
    /// parallel but hashed in order, so at most `concurrency` parts are in memory.
    #[allow(clippy::too_many_arguments)]
    async fn download(
        cfg: &S3Fetch,
        ctx: &StepCtx,
        client: &Client,
        key: &str,
        etag: &str,
        version_id: Option<&str>,
        size: u64,
        dest: &Path,
        full_sha256: Option<&str>,
    ) -> Result<String, StepError> {
        let part_path = sidecar(dest, ".drrun-part");
        let meta_path = sidecar(dest, ".drrun-part.json");
        let part_size = cfg
            .part_size
            .map(|p| p.0.max(1 << 20))
            .unwrap_or(DEFAULT_PART);
        let concurrency = cfg
            .concurrency
            .map(|c| c as usize)
            .unwrap_or(DEFAULT_CONCURRENCY)
            .max(1);

        // Resume only when the partial download is of this very object version.
        let previous: Option<Partial> = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        // A single-part upload's ETag is the md5 of the content; a multipart one is not,
        // and then md5 (the slowest part of hashing) is not computed at all; nor is it
        // when the store keeps a full-object sha256, which is checked instead.
        let etag_is_md5 = etag.len() == 32 && etag.chars().all(|c| c.is_ascii_hexdigit());
        let check_md5 = etag_is_md5 && full_sha256.is_none();
        let mut digests = Digests {
            sha: Sha256::new(),
            md5: check_md5.then(md5::Md5::new),
        };
        let mut verified = 0u64;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&part_path)
            .map_err(|e| io(&part_path, e))?;
        if let Some(p) = previous
            && p.bucket == cfg.bucket
            && p.key == key
            && p.etag == etag
            && p.size == size
            && p.version_id.as_deref() == version_id
        {
            // Re-hash the verified prefix from disk (local, fast) to continue the digest.
            let prefix = p
                .verified
                .min(file.metadata().map(|m| m.len()).unwrap_or(0));
            read_mapped(&file, 0, prefix, |b| digests.update(b)).map_err(|e| io(&part_path, e))?;
            verified = prefix;
            if verified > 0 {
                ctx.note(format!(
                    "resuming the download at {verified} of {size} bytes"
                ));
            }
        }
        file.set_len(size).map_err(|e| io(&part_path, e))?;
        let partial = Partial {
            bucket: cfg.bucket.clone(),
            key: key.to_string(),
            etag: etag.to_string(),
            version_id: version_id.map(str::to_string),
            size,
            verified,
        };
        write_meta(&meta_path, &partial)?;

        // Each ranged GET writes its bytes at their offsets as they arrive and keeps none:
        // the data goes from the socket to the page cache, nowhere else. Beside the
        // downloads, so that no one waits for another:
        // - the hasher reads the file back in order through a read-only mapping of the
        //   page cache (no copy; sha256 cannot be parallel), and md5 (only for
        //   single-part ETags) does the same on a core of its own. What is hashed is
        //   what was written, so the check covers the file, not just the network;
        // - the durability thread makes the hashed prefix durable and records it every
        //   `sync_every` bytes (a resume re-fetches at most that much), so the hasher
        //   never waits for the disk.
        let file = Arc::new(file);
        let sync_every = sync_interval(size, part_size);
        // Hashed ranges `(start, len)`, in order, for the durability thread.
        let (sync_tx, sync_rx) = std::sync::mpsc::channel::<(u64, u64)>();
        let durability = {
            let file = file.clone();
            let (path, meta) = (part_path.clone(), meta_path.clone());
            let mut partial = partial;
            tokio::task::spawn_blocking(move || -> (u64, Option<StepError>) {
                let durable = |partial: &mut Partial, upto: u64| {
                    file.sync_data().map_err(|e| io(&path, e))?;
                    partial.verified = upto;
                    write_meta(&meta, partial)
                };
                let mut hashed = partial.verified;
                while let Ok((start, len)) = sync_rx.recv() {
                    let mut end = start + len;
                    // The ranges come in order: take all that are waiting as one.
                    while let Ok((s, l)) = sync_rx.try_recv() {
                        end = s + l;
                    }
                    // Start writing these pages to disk now, so that the next
                    // durability point (and the last one) has little left to wait for.
                    start_writeback(&file, hashed, end - hashed);
                    hashed = end;
                    if hashed - partial.verified >= sync_every
                        && let Err(e) = durable(&mut partial, hashed)
                    {
                        return (partial.verified, Some(e));
                    }
                }
                // The hashers are done, whatever ended them: the whole file on success,
                // the prefix to resume from if not.
                if hashed > partial.verified
                    && let Err(e) = durable(&mut partial, hashed)
                {
                    return (partial.verified, Some(e));
                }
                (partial.verified, None)
            })
        };
        // Ranges `(start, len)` that are written, in order.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
        // How far the hasher has got: the downloads may not run too far ahead of it.
        let (hashed_tx, mut hashed_rx) = tokio::sync::watch::channel(verified);
        let hasher = {
            let (file, path, ctx) = (file.clone(), part_path.clone(), ctx.clone());
            tokio::task::spawn_blocking(move || -> Result<Digests, StepError> {
                let md5_worker = digests.md5.take().map(|mut md5| {
                    let (tx, rx) = std::sync::mpsc::channel::<(u64, u64)>();
                    let file = file.clone();
                    let worker = std::thread::spawn(move || -> std::io::Result<md5::Md5> {
                        for (start, len) in rx {
                            read_mapped(&file, start, len, |b| md5.update(b))?;
                        }
                        Ok(md5)
                    });
                    (tx, worker)
                });
                let mut result = Ok(());
                while let Some((start, len)) = rx.blocking_recv() {
                    if let Err(e) = read_mapped(&file, start, len, |b| digests.sha.update(b)) {
                        result = Err(io(&path, e));
                        break;
                    }
                    if let Some((tx, _)) = &md5_worker {
                        let _ = tx.send((start, len));
                    }
                    let _ = sync_tx.send((start, len));
                    let _ = hashed_tx.send(start + len);
                    ctx.progress(start + len, Some(size));
                }
                drop(sync_tx);
                if let Some((tx, worker)) = md5_worker {
                    drop(tx);
                    match worker.join().expect("md5 thread") {
                        Ok(md5) => digests.md5 = Some(md5),
                        Err(e) => result = Err(io(&path, e)),
                    }
                }
                result.map(|()| digests)
            })
        };

        let s3 = Arc::new(client.s3.clone());
        let object = Arc::new(ObjectVersion {
            bucket: cfg.bucket.clone(),
            key: key.to_string(),
            etag: etag.to_string(),
            version: version_id.map(str::to_string),
        });
        let mut next_start = verified;
        let mut next_send = verified;
        let mut in_flight = tokio::task::JoinSet::new();
        // Parts written but not yet next in order: start -> length.
        let mut ready: BTreeMap<u64, u64> = BTreeMap::new();
        let mut failure: Option<StepError> = None;
        let mut cancelled = false;
        ctx.progress(verified, Some(size));
        // Parts may start at most this far ahead of the hashed prefix: when hashing is the
        // slower side (md5, a slow core) the downloads wait for it rather than leave a
        // long stretch that is on disk but not yet verified, to re-fetch after a crash.
        let ahead = part_size * 2 * concurrency as u64;
        while next_send < size && failure.is_none() {
            while let Some(len) = ready.remove(&next_send) {
                let _ = tx.send((next_send, len));
                next_send += len;
            }
            if next_send >= size {
                break;
            }
            let window_end = *hashed_rx.borrow_and_update() + ahead;
            while next_start < size && in_flight.len() < concurrency && next_start < window_end {
                let start = next_start;
                let end = (start + part_size).min(size) - 1;
                next_start = end + 1;
                let (s3, object, file) = (s3.clone(), object.clone(), file.clone());
                in_flight.spawn(async move {
                    let result = fetch_range(&s3, &object, start, end, &file).await;
                    (start, end + 1 - start, result)
                });
            }
            tokio::select! {
                joined = in_flight.join_next(), if !in_flight.is_empty() => {
                    let Some(joined) = joined else { break };
                    let (start, len, result) = joined.expect("range task");
                    let at = || format!("s3://{}/{key} (bytes {start}-)", cfg.bucket);
                    match result {
                        Ok(()) => { ready.insert(start, len); }
                        Err(RangeError::Sdk(e)) => {
                            failure = Some(classify(&e, &at(), client, &cfg.bucket));
                        }
                        Err(RangeError::Body(m)) => {
                            failure = Some(StepError::new(FailureClass::Ambiguous, format!("{}: {m}", at())));
                        }
                        Err(RangeError::Write(e)) => {
                            failure = Some(io(&part_path, e));
                        }
                    }
                }
                // Only the hasher's progress can open the window again; if the hasher
                // stopped, its error is reported below.
                changed = hashed_rx.changed(), if next_start < size && next_start >= window_end => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = ctx.cancel.cancelled() => {
                    cancelled = true;
                    break;
                }
            }
        }
        in_flight.abort_all();
        drop(tx);
        let hashing = hasher.await.expect("hasher thread");
        let (kept, sync_failure) = durability.await.expect("durability thread");
        if cancelled {
            return Err(StepError::new(FailureClass::Other, "download cancelled"));
        }
        let digests = match (failure.or(sync_failure), hashing) {
            (None, Ok(digests)) if next_send == size => digests,
            (None, Ok(_)) => {
                return Err(StepError::new(
                    FailureClass::Other,
                    format!("the download stopped at {next_send} of {size} bytes"),
                ));
            }
            (Some(e), _) | (None, Err(e)) => {
                return Err(StepError::new(
                    e.class,
                    format!("{} ({kept} of {size} bytes kept for resuming)", e.message),
                ));
            }
        };
        let sha_hex = hex::encode(digests.sha.finalize());
        let md5_hex = digests
            .md5
            .map(|m| hex::encode(m.finalize()))
            .unwrap_or_default();
        let mismatch = if let Some(expected) = full_sha256 {
            use base64_helper::encode;
            let ours = encode(&hex::decode(&sha_hex).unwrap());
            (ours != expected)
                .then(|| format!("sha256 {ours} does not match the stored checksum {expected}"))
        } else if check_md5 && etag != md5_hex {
            Some(format!("md5 {md5_hex} does not match the ETag {etag}"))
        } else {
            None
        };
        if let Some(m) = mismatch {
            let _ = std::fs::remove_file(&part_path);
            let _ = std::fs::remove_file(&meta_path);
            return Err(StepError::new(
                FailureClass::Assertion,
                format!(
                    "checksum mismatch for s3://{}/{key}: {m}; the partial file was removed",
                    cfg.bucket
                ),
            ));
        }
        std::fs::rename(&part_path, dest).map_err(|e| io(dest, e))?;
        if let Some(dir) = dest.parent() {
            crate::state::journal::sync_dir(dir);
        }
        let _ = std::fs::remove_file(&meta_path);
        Ok(sha_hex)
    }

    /// Opens `s3://bucket/key` as a byte stream (for restoring straight from S3).
    pub async fn open_object(
        access: &S3Access,
        url: &str,
    ) -> Result<(aws_sdk_s3::primitives::ByteStream, u64), StepError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| StepError::config(format!("not an s3:// URL: {url}")))?;
        let (bucket, key) = rest
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .ok_or_else(|| StepError::config(format!("an S3 URL is s3://bucket/key, not {url}")))?;
        let client = client(access).await?;
        let out = client
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(&e, url, &client, bucket))?;
        let size = out.content_length().unwrap_or(0).max(0) as u64;
        Ok((out.body, size))
    }

    enum RangeError {
        Sdk(Box<SdkError<aws_sdk_s3::operation::get_object::GetObjectError>>),
        /// The body ended early or broke off.
        Body(String),
        /// The part could not be written to the partial file.
        Write(std::io::Error),
    }

    /// The object version every part must come from.
    struct ObjectVersion {
        bucket: String,
        key: String,
        etag: String,
        version: Option<String>,
    }

    /// Fetches bytes `start..=end`, writing each chunk at its offset as it arrives.
    async fn fetch_range(
        s3: &aws_sdk_s3::Client,
        object: &ObjectVersion,
        start: u64,
        end: u64,
        file: &std::fs::File,
    ) -> Result<(), RangeError> {
        use std::os::unix::fs::FileExt;
        let ObjectVersion {
            bucket,
            key,
            etag,
            version,
        } = object;
        let expected = end - start + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .range(format!("bytes={start}-{end}"));
            if !etag.is_empty() {
                // Every part must come from the same object version.
                req = req.if_match(format!("\"{etag}\""));
            }
            if let Some(v) = version {
                req = req.version_id(v);
            }
            let error = match req.send().await {
                Ok(out) => {
                    let mut got = 0u64;
                    let mut body = out.body;
                    let mut problem = None;
                    while let Some(chunk) = body.next().await {
                        match chunk {
                            Ok(c) if got + c.len() as u64 <= expected => {
                                // A page-cache write of one network read (at most a few
                                // hundred KiB) is shorter than a hand-off to another
                                // thread would be.
                                file.write_all_at(&c, start + got)
                                    .map_err(RangeError::Write)?;
                                got += c.len() as u64;
                            }
                            Ok(_) => {
                                problem = Some(format!("more than the {expected} bytes asked for"));
                                break;
                            }
                            Err(e) => {
                                problem = Some(chain(&e));
                                break;
                            }
                        }
                    }
                    match problem {
                        None if got == expected => return Ok(()),
                        None => RangeError::Body(format!("expected {expected} bytes, got {got}")),
                        Some(p) => RangeError::Body(p),
                    }
                }
                Err(e) => {
                    let transient =
                        matches!(
                            e,
                            SdkError::DispatchFailure(_)
                                | SdkError::TimeoutError(_)
                                | SdkError::ResponseError(_)
                        ) || e.raw_response().is_some_and(|r| r.status().as_u16() >= 500);
                    if !transient {
                        return Err(RangeError::Sdk(Box::new(e)));
                    }
                    RangeError::Sdk(Box::new(e))
                }
            };
            if attempt >= PART_ATTEMPTS {
                return Err(error);
            }
            tokio::time::sleep(Duration::from_millis(250 * attempt as u64)).await;
        }
    }

    /// Bytes between durability points: an eighth of the object, at most SYNC_EVERY, and
    /// never less than a part (the unit a resume re-fetches anyway).
    fn sync_interval(size: u64, part_size: u64) -> u64 {
        (size / 8).min(SYNC_EVERY).max(part_size)
    }

    /// Asks the kernel to start writing a range of the file to disk, without waiting.
    #[cfg(target_os = "linux")]
    fn start_writeback(file: &std::fs::File, start: u64, len: u64) {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a valid descriptor; a failure only means the pages
        // are written back later (the fdatasync that follows is what counts).
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                start as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn start_writeback(_file: &std::fs::File, _start: u64, _len: u64) {}

    /// Feeds `len` bytes of `file` from `start` to `f`, through read-only mappings of the
    /// page cache (the bytes were just written, so no disk read and no copy).
    fn read_mapped(
        file: &std::fs::File,
        start: u64,
        len: u64,
        mut f: impl FnMut(&[u8]),
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        let end = start + len;
        let mut at = start;
        while at < end {
            let until = (at + HASH_WINDOW).min(end);
            let base = at - at % page;
            let map_len = (until - base) as usize;
            // SAFETY: a fresh read-only shared mapping of a range of our own partial file,
            // which was sized to the object before any part was fetched and is only
            // written (never truncated) while we hash; the slice does not outlive the
            // mapping.
            unsafe {
                let ptr = libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    file.as_raw_fd(),
                    base as libc::off_t,
                );
                if ptr == libc::MAP_FAILED {
                    return Err(std::io::Error::last_os_error());
                }
                let bytes = std::slice::from_raw_parts(ptr as *const u8, map_len);
                f(&bytes[(at - base) as usize..]);
                libc::munmap(ptr, map_len);
            }
            at = until;
        }
        Ok(())
    }

    mod base64_helper {
        const TABLE: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

        pub fn encode(data: &[u8]) -> String {
            let mut out = String::new();
            for chunk in data.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
                for i in 0..4 {
                    if i <= chunk.len() {
                        out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
                    } else {
                        out.push('=');
                    }
                }
            }
            out
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn cfg() -> S3Fetch {
            serde_json::from_value(json!({"bucket": "b", "prefix": "acme/daily-"})).unwrap()
        }

        #[test]
        fn key_timestamps_default_pattern() {
            let c = cfg();
            let t = key_timestamp(&c, "acme/daily-acme-202611240300.pgdump").unwrap();
            assert_eq!(t.to_rfc3339(), "2026-11-24T03:00:00+00:00");
            assert!(
                key_timestamp(&c, "acme/daily-acme-202613240300.pgdump").is_none(),
                "month 13"
            );
            assert!(key_timestamp(&c, "acme/daily-acme-latest.pgdump").is_none());
            assert!(
                key_timestamp(&c, "acme/daily-acme-20261124030.pgdump").is_none(),
                "11 digits"
            );
        }

        #[test]
        fn durability_points_come_every_eighth_within_bounds() {
            const MIB: u64 = 1 << 20;
            assert_eq!(sync_interval(1024 * MIB, 8 * MIB), 128 * MIB);
            assert_eq!(sync_interval(16 * 1024 * MIB, 8 * MIB), SYNC_EVERY);
            assert_eq!(sync_interval(10 * MIB, 8 * MIB), 8 * MIB, "at least a part");
            // Parts larger than SYNC_EVERY (this used to panic in clamp).
            assert_eq!(sync_interval(4096 * MIB, 512 * MIB), 512 * MIB);
        }

        #[test]
        fn base64_matches_the_standard() {
            assert_eq!(base64_helper::encode(b"hello"), "aGVsbG8=");
            assert_eq!(base64_helper::encode(b"hell"), "aGVsbA==");
            assert_eq!(base64_helper::encode(b"hel"), "aGVs");
        }
    }
}
