//! Choosing the backup: an explicit key, or the newest under a prefix by the timestamp in
//! its key or by `LastModified`; then the refusals that come before any download.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::fetch::{S3Fetch, Select};
use crate::duration::format_duration;
use crate::outcome::{Failure, FailureClass};
use crate::services::s3::{self, Client};

/// The default key timestamp: `daily-<project>-YYYYMMDDHHMM.pgdump`, read as UTC; the
/// timestamp must be followed by a dump extension and nothing else.
pub(super) const DEFAULT_TIMESTAMP_PATTERN: &str =
    r"(?P<ts>\d{12})\.(?:pgdump|dump|backup|custom|sql|tar)(?:\.(?:gz|zst|bz2|xz|lz4))?$";

/// The end of a key that is a whole dump (for `newest-last-modified` without `match`).
static DUMP_EXTENSION: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"\.(?:pgdump|dump|backup|custom|sql|tar)(?:\.(?:gz|zst|bz2|xz|lz4))?$")
        .unwrap()
});

/// A key that is not a candidate but looks like one (a timestamped name): reported as
/// ignored, so a near-miss is visible instead of silently skipped.
fn looks_like_a_backup(key: &str) -> bool {
    static STAMPED: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\d{8}").unwrap());
    STAMPED.is_match(key.rsplit('/').next().unwrap_or(key))
}
pub(super) const DEFAULT_TIMESTAMP_FORMAT: &str = "%Y%m%d%H%M";

/// The object chosen, with why.
#[derive(Debug, Clone)]
pub(super) struct Chosen {
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) last_modified: Option<DateTime<Utc>>,
    pub(super) backup_time: Option<DateTime<Utc>>,
    pub(super) considered: usize,
    /// How many keys were whole backups to choose among.
    pub(super) matched: usize,
    /// Keys that looked like backups but were not candidates (`….partial`).
    pub(super) ignored: Vec<String>,
}

impl Chosen {
    /// `among 3 listed (2 backups; ignored: a.partial)`, for notes and previews.
    pub(super) fn among(&self) -> String {
        let mut text = format!(
            "among {} listed ({} backup{}",
            self.considered,
            self.matched,
            if self.matched == 1 { "" } else { "s" }
        );
        if !self.ignored.is_empty() {
            let shown: Vec<&str> = self.ignored.iter().take(5).map(String::as_str).collect();
            let more = self.ignored.len().saturating_sub(shown.len());
            text.push_str(&format!("; ignored: {}", shown.join(", ")));
            if more > 0 {
                text.push_str(&format!(" and {more} more"));
            }
        }
        text.push(')');
        text
    }
}

/// The timestamp in a key, by the configured pattern and format (UTC).
pub(super) fn key_timestamp(cfg: &S3Fetch, key: &str) -> Option<DateTime<Utc>> {
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

pub(super) async fn choose(cfg: &S3Fetch, client: &Client) -> Result<Chosen, Failure> {
    if let Some(key) = &cfg.key {
        let h = s3::head(client, &cfg.bucket, key, cfg.version_id.as_deref()).await?;
        return Ok(Chosen {
            key: key.clone(),
            size: h.size,
            last_modified: h.last_modified,
            backup_time: key_timestamp(cfg, key),
            considered: 1,
            matched: 1,
            ignored: Vec::new(),
        });
    }
    let prefix = cfg.prefix.clone().unwrap_or_default();
    let key_match = cfg
        .key_match
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| Failure::config(e.to_string()))?;
    let all: Vec<(String, u64, Option<DateTime<Utc>>)> = s3::list(client, &cfg.bucket, &prefix)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size, o.last_modified))
        .collect();
    let total = all.len();
    // Candidates: keys that are whole backups. By default that is a timestamp followed by a
    // known dump extension at the very end, so an upload still being written
    // (`….pgdump.partial`), a checksum file or a manifest beside the dumps is never chosen.
    let mut ignored = Vec::new();
    let mut candidates = Vec::new();
    for (k, size, lm) in &all {
        if key_match.as_ref().is_some_and(|re| !re.is_match(k)) {
            continue;
        }
        let ts = key_timestamp(cfg, k);
        let whole = match cfg.select {
            Select::NewestKeyTimestamp => ts.is_some(),
            Select::NewestLastModified => {
                lm.is_some() && (cfg.key_match.is_some() || DUMP_EXTENSION.is_match(k))
            }
        };
        if whole {
            candidates.push((k, *size, *lm, ts));
        } else if looks_like_a_backup(k) {
            ignored.push(k.clone());
        }
    }
    let best = match cfg.select {
        Select::NewestKeyTimestamp => candidates.iter().max_by(|a, b| (a.3, a.0).cmp(&(b.3, b.0))),
        Select::NewestLastModified => candidates.iter().max_by(|a, b| (a.2, a.0).cmp(&(b.2, b.0))),
    }
    .map(|(k, size, lm, ts)| Chosen {
        key: (*k).clone(),
        size: *size,
        last_modified: *lm,
        backup_time: ts.filter(|_| cfg.select == Select::NewestKeyTimestamp),
        considered: total,
        matched: candidates.len(),
        ignored: ignored.clone(),
    });
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
        Failure::new(
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
pub(super) fn check_limits(cfg: &S3Fetch, chosen: &Chosen) -> Result<Option<Duration>, Failure> {
    let when = chosen.backup_time.or(chosen.last_modified);
    let age = when.and_then(|t| Utc::now().signed_duration_since(t).to_std().ok());
    if let (Some(max), Some(age)) = (cfg.max_age, age)
        && age > max.0
    {
        return Err(Failure::new(
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
        return Err(Failure::new(
            FailureClass::Assertion,
            format!(
                "s3://{}/{} is {} bytes, smaller than min_size ({} bytes)",
                cfg.bucket, chosen.key, chosen.size, min.0
            ),
        ));
    }
    Ok(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> S3Fetch {
        serde_json::from_value(serde_json::json!({"bucket": "b", "prefix": "acme/daily-"})).unwrap()
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
        assert!(
            key_timestamp(&c, "acme/daily-acme-202611240300.pgdump.partial").is_none(),
            "an upload still being written"
        );
        assert!(key_timestamp(&c, "acme/daily-acme-202611240300.sql.gz").is_some());
    }
}
