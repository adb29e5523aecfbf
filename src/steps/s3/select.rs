//! Choosing the backup: an explicit key, or the newest under a prefix by the timestamp in
//! its key or by `LastModified`; then the refusals that come before any download.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::fetch::{S3Fetch, Select};
use crate::duration::format_duration;
use crate::outcome::{Failure, FailureClass};
use crate::services::s3::{self, Client};

/// The default key timestamp: `daily-<project>-YYYYMMDDHHMM.pgdump`, read as UTC.
pub(super) const DEFAULT_TIMESTAMP_PATTERN: &str = r"(?P<ts>\d{12})(?:\.[A-Za-z0-9]+)*$";
pub(super) const DEFAULT_TIMESTAMP_FORMAT: &str = "%Y%m%d%H%M";

/// The object chosen, with why.
#[derive(Debug, Clone)]
pub(super) struct Chosen {
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) last_modified: Option<DateTime<Utc>>,
    pub(super) backup_time: Option<DateTime<Utc>>,
    pub(super) considered: usize,
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
    }
}
