//! What a bucket is set to: versioning, default encryption, public access block, object
//! ownership, replication rules. A store without one of these APIs (SeaweedFS has no
//! replication or public-access-block API) says so instead of failing.

use aws_sdk_s3::error::ProvideErrorMetadata;

use super::s3::{Client, classify};
use crate::outcome::Failure;

/// One setting as read: its value, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Setting<T> {
    Known(T),
    /// The bucket has none (e.g. no replication configuration).
    Unset,
    /// The store has no such API.
    Unsupported(String),
}

impl<T: std::fmt::Display> Setting<T> {
    pub(crate) fn text(&self) -> String {
        match self {
            Self::Known(v) => v.to_string(),
            Self::Unset => "not set".into(),
            Self::Unsupported(why) => format!("not readable ({why})"),
        }
    }
}

/// A replication rule, as far as the checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub id: String,
    pub enabled: bool,
    /// The destination bucket's name (from its ARN).
    pub destination: String,
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `Enabled`, `Suspended`, or unset (never enabled).
    pub versioning: Setting<String>,
    /// The default encryption's algorithm (`AES256`, `aws:kms`).
    pub encryption: Setting<String>,
    /// Whether all four public access block flags are on.
    pub public_access_blocked: Setting<bool>,
    /// `BucketOwnerEnforced`, `BucketOwnerPreferred`, `ObjectWriter`.
    pub ownership: Setting<String>,
    pub replication: Setting<Vec<Rule>>,
}

/// What an error means for a setting: unset (the bucket has none), or unsupported.
fn missing<T, E: ProvideErrorMetadata>(e: &E, unset_codes: &[&str]) -> Option<Setting<T>> {
    let code = e.code().unwrap_or_default();
    if unset_codes.contains(&code) {
        return Some(Setting::Unset);
    }
    if [
        "NotImplemented",
        "MethodNotAllowed",
        "InvalidRequest",
        "UnsupportedOperation",
    ]
    .contains(&code)
    {
        return Some(Setting::Unsupported(format!(
            "{code}: the store has no such API"
        )));
    }
    None
}

macro_rules! read {
    ($client:expr, $bucket:expr, $call:ident, $what:literal, $unset:expr, $ok:expr) => {
        match $client.s3.$call().bucket($bucket).send().await {
            Ok(out) => $ok(out),
            Err(e) => match e.as_service_error().and_then(|s| missing(s, $unset)) {
                Some(s) => s,
                // A 501 from a store that does not name the error.
                None if e.raw_response().is_some_and(|r| r.status().as_u16() == 501) => {
                    Setting::Unsupported("501: the store has no such API".into())
                }
                None => {
                    return Err(classify(
                        &e,
                        &format!("{} of s3://{}", $what, $bucket),
                        $client,
                        $bucket,
                    ))
                }
            },
        }
    };
}

/// A rule's prefix: its filter's, or (rules written before filters existed, V1) its own.
#[allow(deprecated)]
fn rule_prefix(r: &aws_sdk_s3::types::ReplicationRule) -> String {
    r.filter()
        .and_then(|f| f.prefix())
        .or(r.prefix())
        .unwrap_or_default()
        .to_string()
}

/// Reads every setting of `bucket`.
pub(crate) async fn settings(client: &Client, bucket: &str) -> Result<Settings, Failure> {
    let versioning = read!(
        client,
        bucket,
        get_bucket_versioning,
        "versioning",
        &[],
        |o: aws_sdk_s3::operation::get_bucket_versioning::GetBucketVersioningOutput| {
            o.status()
                .map_or(Setting::Unset, |s| Setting::Known(s.as_str().to_string()))
        }
    );
    let encryption = read!(
        client,
        bucket,
        get_bucket_encryption,
        "default encryption",
        &["ServerSideEncryptionConfigurationNotFoundError"],
        |o: aws_sdk_s3::operation::get_bucket_encryption::GetBucketEncryptionOutput| {
            o.server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .map_or(Setting::Unset, |d| {
                    Setting::Known(d.sse_algorithm().as_str().to_string())
                })
        }
    );
    let public_access_blocked = read!(
        client,
        bucket,
        get_public_access_block,
        "public access block",
        &["NoSuchPublicAccessBlockConfiguration"],
        |o: aws_sdk_s3::operation::get_public_access_block::GetPublicAccessBlockOutput| {
            o.public_access_block_configuration()
                .map_or(Setting::Unset, |c| {
                    Setting::Known(
                        c.block_public_acls() == Some(true)
                            && c.ignore_public_acls() == Some(true)
                            && c.block_public_policy() == Some(true)
                            && c.restrict_public_buckets() == Some(true),
                    )
                })
        }
    );
    let ownership = read!(
        client,
        bucket,
        get_bucket_ownership_controls,
        "object ownership",
        &["OwnershipControlsNotFoundError"],
        |o: aws_sdk_s3::operation::get_bucket_ownership_controls::GetBucketOwnershipControlsOutput| {
            o.ownership_controls()
                .and_then(|c| c.rules().first())
                .map_or(Setting::Unset, |r| Setting::Known(r.object_ownership().as_str().to_string()))
        }
    );
    let replication = read!(
        client,
        bucket,
        get_bucket_replication,
        "replication",
        &["ReplicationConfigurationNotFoundError"],
        |o: aws_sdk_s3::operation::get_bucket_replication::GetBucketReplicationOutput| {
            o.replication_configuration().map_or(Setting::Unset, |c| {
                Setting::Known(
                    c.rules()
                        .iter()
                        .map(|r| Rule {
                            id: r.id().unwrap_or_default().to_string(),
                            enabled: r.status().as_str() == "Enabled",
                            destination: r
                                .destination()
                                .map(aws_sdk_s3::types::Destination::bucket)
                                .unwrap_or_default()
                                .trim_start_matches("arn:aws:s3:::")
                                .to_string(),
                            prefix: rule_prefix(r),
                        })
                        .collect(),
                )
            })
        }
    );
    Ok(Settings {
        versioning,
        encryption,
        public_access_blocked,
        ownership,
        replication,
    })
}
