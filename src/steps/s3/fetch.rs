//! `s3.fetch`: find the right backup object in S3 and download it, verified.

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::download::{download, io};
use super::select::{check_limits, choose};
use crate::duration::{HumanDuration, format_duration};
use crate::outcome::{Failure, Outputs};
use crate::services::s3::{self, S3Access};
use crate::steps::{
    BackupEvidence, ConfigIssue, Effect, Evidence, OutputDoc, Preview, PreviewCtx, StepCtx,
    StepKind, output,
};
use crate::util::ByteSize;
use crate::util::fs::{sidecar, write_atomic};

/// Downloads one object from S3 (or an S3-compatible store): an explicit `key`, or the
/// newest object under `prefix`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct S3Fetch {
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
    /// (default: 12 digits followed by a dump extension at the end of the key, as in
    /// `daily-acme-202611240300.pgdump`; `.dump`, `.backup`, `.sql`, `.tar`, optionally
    /// compressed, also count, and `….pgdump.partial` does not).
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

/// How `s3.fetch` picks an object under `prefix`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Select {
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
    const STILL_HOLDS: Option<crate::steps::StillHolds> = Some(file_still_holds);
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
        output(
            "listed",
            "How many keys the listing under `prefix` returned.",
        ),
        output(
            "matched",
            "How many of them were whole backups to choose among.",
        ),
        output(
            "ignored",
            "Keys that looked like backups but were not candidates (an upload still being written, `….partial`), at most all of them.",
        ),
    ];

    const EVIDENCE: Evidence = Evidence {
        data_time: Some(backup_time),
        default_rpo_source: true,
        backup: Some(backup_evidence),
        deployed_image: None,
        summary: Some(summary),
        ..Evidence::NONE
    };

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
        preview(self).await
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, Failure> {
        run(self, ctx).await
    }
}

async fn run(cfg: &S3Fetch, ctx: &StepCtx) -> Result<Outputs, Failure> {
    let client = s3::client(&cfg.access).await?;
    ctx.phase(format!(
        "listing s3://{}/{}",
        cfg.bucket,
        cfg.prefix.as_deref().or(cfg.key.as_deref()).unwrap_or("")
    ));
    let chosen = choose(cfg, &client).await?;
    let age = check_limits(cfg, &chosen)?;
    ctx.note(format!(
        "chose s3://{}/{} ({} bytes) {}",
        cfg.bucket,
        chosen.key,
        chosen.size,
        chosen.among()
    ));

    let head = s3::head(&client, &cfg.bucket, &chosen.key, cfg.version_id.as_deref()).await?;
    let (size, etag, version_id) = (head.size, head.etag.clone(), head.version_id.clone());

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
            ctx.phase(format!("downloading s3://{}/{}", cfg.bucket, chosen.key));
            let sha = download(cfg, ctx, &client, &chosen.key, &head, &dest).await?;
            let done = Done {
                bucket: cfg.bucket.clone(),
                key: chosen.key.clone(),
                etag: etag.clone(),
                version_id: version_id.clone(),
                size,
                sha256: sha.clone(),
            };
            write_atomic(&done_path, &serde_json::to_vec(&done).unwrap(), false)
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
    out.insert("listed".into(), json!(chosen.considered));
    out.insert("matched".into(), json!(chosen.matched));
    out.insert("ignored".into(), json!(chosen.ignored));
    out.insert(
        "age".into(),
        json!(age.map(|a| HumanDuration(Duration::from_secs(a.as_secs())).to_string())),
    );
    Ok(out)
}

async fn preview(cfg: &S3Fetch) -> Preview {
    let client = match s3::client(&cfg.access).await {
        Ok(c) => c,
        Err(e) => return Preview::failure(e),
    };
    match choose(cfg, &client).await {
        Err(e) => Preview::failure(e),
        Ok(chosen) => {
            let mut lines = vec![format!(
                "would download s3://{}/{} ({} bytes; chosen {})",
                cfg.bucket,
                chosen.key,
                chosen.size,
                chosen.among()
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

/// The backup's time: the timestamp in its key, else the store's `LastModified`.
fn backup_time(outputs: &Outputs) -> Option<(&'static str, String)> {
    ["backup_time", "last_modified"]
        .into_iter()
        .find_map(|field| {
            let time = outputs.get(field)?.as_str()?;
            Some((field, time.to_string()))
        })
}

fn backup_evidence(outputs: &Outputs) -> BackupEvidence {
    let text = |k: &str| outputs.get(k).and_then(|v| v.as_str()).map(str::to_string);
    BackupEvidence {
        object: format!(
            "s3://{}/{}",
            text("bucket").unwrap_or_default(),
            text("key").unwrap_or_default()
        ),
        size: outputs.get("size").and_then(serde_json::Value::as_u64),
        sha256: text("sha256"),
        taken: backup_time(outputs).map(|(_, t)| t),
        age: text("age"),
        details: outputs.clone(),
    }
}

/// A fetched file is reused on resume only if it is still there with the size and sha256
/// it had (a pod's emptyDir may have gone with the pod).
fn file_still_holds(outputs: &Outputs) -> Result<(), String> {
    use sha2::Digest;
    let Some(path) = outputs.get("path").and_then(|v| v.as_str()) else {
        // Streamed into a consumer: nothing on disk to check.
        return Ok(());
    };
    let meta = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    if let Some(size) = outputs.get("size").and_then(serde_json::Value::as_u64)
        && meta.len() != size
    {
        return Err(format!("{path} is {} bytes, was {size}", meta.len()));
    }
    if let Some(want) = outputs.get("sha256").and_then(|v| v.as_str()) {
        let mut file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)
                .map_err(|e| format!("reading {path}: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let got = hex::encode(hasher.finalize());
        if got != want {
            return Err(format!("{path} changed: sha256 {got}, was {want}"));
        }
    }
    Ok(())
}

/// The report's line: the object, its size and digest.
fn summary(o: &Outputs) -> Vec<String> {
    let size = o
        .get("size")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let sha = o.get("sha256").and_then(|v| v.as_str()).unwrap_or("");
    vec![format!(
        "fetched `s3://{}/{}`, {}, sha256 `{}`",
        o.get("bucket").and_then(|v| v.as_str()).unwrap_or(""),
        o.get("key").and_then(|v| v.as_str()).unwrap_or(""),
        crate::util::human_bytes(size),
        &sha[..sha.len().min(16)]
    )]
}
