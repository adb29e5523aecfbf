//! S3 (and S3-compatible stores): access settings, the client, SDK errors turned into
//! messages and failure classes, and the requests the kinds are made of (list, head,
//! ranged GET into a file, a streamed GET). Knows nothing of step kinds.

use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::ChecksumMode;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use bytes::Buf as _;
use futures::StreamExt as _;

use crate::outcome::{Failure, FailureClass};
use crate::util::error_chain;

/// Attempts per ranged GET before the step fails (the step's own retry comes on top).
const PART_ATTEMPTS: u32 = 3;

/// How to reach an S3 (or S3-compatible) store; credentials come from the standard AWS
/// chain (environment, shared profiles, SSO, web identity, instance metadata).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct S3Access {
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

/// A connected client plus who it acts as, for "access denied" messages.
pub(crate) struct Client {
    pub s3: aws_sdk_s3::Client,
    /// Who we are, for "access denied" messages (never the secret).
    pub principal: String,
}

/// Connects with the standard AWS credential chain, narrowed by `cfg`.
pub(crate) async fn client(cfg: &S3Access) -> Result<Client, Failure> {
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
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired);
    if shared.region().is_none() {
        b = b.region(aws_config::Region::new("us-east-1"));
    }
    if let Some(e) = &cfg.endpoint {
        b = b.endpoint_url(e);
    }
    if cfg.path_style {
        b = b.force_path_style(true);
    }
    let principal = principal(&shared, cfg).await?;
    Ok(Client {
        s3: aws_sdk_s3::Client::from_conf(b.build()),
        principal,
    })
}

/// Who the client acts as, resolved before the first request: missing or mistyped
/// credentials and profiles are a credential problem to fix, not an unreachable endpoint.
async fn principal(shared: &aws_config::SdkConfig, cfg: &S3Access) -> Result<String, Failure> {
    use aws_credential_types::provider::ProvideCredentials;
    let source = match &cfg.profile {
        Some(p) => format!("profile `{p}`"),
        None => "the default credential chain".into(),
    };
    let problem = match shared.credentials_provider() {
        Some(p) => match p.provide_credentials().await {
            Ok(c) => {
                let id = c.access_key_id();
                let shown = if id.len() > 8 {
                    format!("{}…{}", &id[..4], &id[id.len() - 4..])
                } else {
                    "…".into()
                };
                return Ok(format!("access key {shown} from {source}"));
            }
            Err(e) => error_chain(&e),
        },
        None => "no credentials provider".into(),
    };
    let profiles = profiles();
    let known = if profiles.is_empty() {
        "no profiles are defined in the shared config and credentials files".to_string()
    } else {
        let hint = cfg
            .profile
            .as_deref()
            .and_then(|p| crate::diag::did_you_mean(p, profiles.iter().map(String::as_str)))
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        format!("profiles that exist: {}{hint}", profiles.join(", "))
    };
    Err(Failure::config(format!(
        "no AWS credentials from {source}: {problem} ({known}; or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    )))
}

/// The profiles of the shared config and credentials files (`AWS_CONFIG_FILE`,
/// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/config` and `~/.aws/credentials`).
fn profiles() -> Vec<String> {
    let home = |name: &str| crate::util::expand_home(&format!("~/.aws/{name}"));
    let files = [
        std::env::var_os("AWS_CONFIG_FILE").map_or_else(|| home("config"), Into::into),
        std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map_or_else(|| home("credentials"), Into::into),
    ];
    let mut names: Vec<String> = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines() {
            let Some(section) = line
                .trim()
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
            else {
                continue;
            };
            let name = section
                .trim()
                .strip_prefix("profile ")
                .unwrap_or(section)
                .trim();
            if !name.starts_with("sso-session") && !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// Turns an SDK error into a message and the right retry class.
pub(crate) fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: &SdkError<E>,
    what: &str,
    client: &Client,
    bucket: &str,
) -> Failure {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default().to_string();
    match err {
        SdkError::DispatchFailure(e) => {
            let class = if e.is_timeout() {
                FailureClass::Timeout
            } else {
                FailureClass::Connection
            };
            Failure::new(
                class,
                format!("{what}: cannot reach the S3 endpoint: {}", error_chain(err)),
            )
        }
        SdkError::TimeoutError(_) => {
            Failure::new(FailureClass::Timeout, format!("{what}: timed out"))
        }
        SdkError::ResponseError(_) => Failure::new(
            FailureClass::Ambiguous,
            format!("{what}: the response was cut off: {}", error_chain(err)),
        ),
        _ => match (code.as_str(), status) {
            ("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "Forbidden", _)
            | (_, Some(403)) => Failure::new(
                FailureClass::Config,
                format!("{what}: access denied ({code}) for {}", client.principal),
            ),
            ("NoSuchBucket", _) => Failure::new(
                FailureClass::Config,
                format!("{what}: bucket `{bucket}` does not exist"),
            ),
            ("NoSuchKey" | "NotFound", _) | (_, Some(404)) => {
                Failure::new(FailureClass::Config, format!("{what}: no such object"))
            }
            ("PreconditionFailed", _) | (_, Some(412)) => Failure::new(
                FailureClass::Assertion,
                format!("{what}: the object changed during the download (ETag no longer matches)"),
            ),
            ("SlowDown" | "RequestLimitExceeded" | "ServiceUnavailable" | "InternalError", _) => {
                Failure::new(
                    FailureClass::Throttled,
                    format!("{what}: {code} (status {})", status.unwrap_or(0)),
                )
            }
            (_, Some(s)) if s == 429 || s >= 500 => Failure::new(
                FailureClass::Throttled,
                format!("{what}: {code} (status {s})"),
            ),
            _ => Failure::new(
                FailureClass::Other,
                format!("{what}: {} {}", code, error_chain(err)),
            ),
        },
    }
}

pub(crate) fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// One object of a listing.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
    /// Without quotes.
    pub etag: String,
}

/// Every object under `prefix` (the listing is fully paginated).
pub(crate) async fn list(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<Listed>, Failure> {
    let mut pages = client
        .s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut all = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            classify(
                &e,
                &format!("listing s3://{bucket}/{prefix}"),
                client,
                bucket,
            )
        })?;
        for o in page.contents() {
            if let Some(k) = o.key() {
                all.push(Listed {
                    key: k.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: o.last_modified().and_then(to_chrono),
                    etag: o.e_tag().unwrap_or_default().trim_matches('"').to_string(),
                });
            }
        }
    }
    Ok(all)
}

/// The replication status S3 reports for an object (`x-amz-replication-status`:
/// `COMPLETED`, `PENDING`, `FAILED`, `REPLICA`), `None` where the store reports none.
pub(crate) async fn replication_status(
    client: &Client,
    bucket: &str,
    key: &str,
) -> Result<Option<String>, Failure> {
    let h = client
        .s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| classify(&e, &format!("s3://{bucket}/{key}"), client, bucket))?;
    Ok(h.replication_status().map(|s| s.as_str().to_string()))
}

/// What a HEAD request says about one object version.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    /// `None` for unversioned buckets.
    pub version_id: Option<String>,
    pub last_modified: Option<DateTime<Utc>>,
    /// The base64 full-object sha256 the store keeps, when it keeps one.
    pub full_sha256: Option<String>,
}

pub(crate) async fn head(
    client: &Client,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<Head, Failure> {
    let mut req = client
        .s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled);
    if let Some(v) = version_id {
        req = req.version_id(v);
    }
    let h = req
        .send()
        .await
        .map_err(|e| classify(&e, &format!("s3://{bucket}/{key}"), client, bucket))?;
    Ok(Head {
        size: h.content_length().unwrap_or(0).max(0) as u64,
        etag: h.e_tag().unwrap_or_default().trim_matches('"').to_string(),
        version_id: h.version_id().map(str::to_string).filter(|v| v != "null"),
        last_modified: h.last_modified().and_then(to_chrono),
        // A composite (multipart) checksum is not one of the whole object.
        full_sha256: h
            .checksum_sha256()
            .filter(|_| {
                h.checksum_type()
                    .is_none_or(|t| t.as_str() == "FULL_OBJECT")
            })
            .filter(|c| !c.contains('-'))
            .map(str::to_string),
    })
}

/// `s3://bucket/key` split into its bucket and key.
pub(crate) fn split_url(url: &str) -> Result<(&str, &str), Failure> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| Failure::config(format!("not an s3:// URL: {url}")))?;
    rest.split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| Failure::config(format!("an S3 URL is s3://bucket/key, not {url}")))
}

/// The first `n` bytes of `s3://bucket/key` and the object's whole size, with one ranged
/// GET (what `plan` reads to say how an archive would be restored).
pub(crate) async fn peek(access: &S3Access, url: &str, n: u64) -> Result<(Vec<u8>, u64), Failure> {
    let (bucket, key) = split_url(url)?;
    let client = client(access).await?;
    let out = client
        .s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes=0-{}", n.max(1) - 1))
        .send()
        .await
        .map_err(|e| classify(&e, url, &client, bucket))?;
    // `bytes 0-4/12345`; a store that ignores the range sends the whole object.
    let total = out
        .content_range()
        .and_then(|r| r.rsplit('/').next())
        .and_then(|t| t.parse::<u64>().ok());
    let length = out.content_length().unwrap_or(0).max(0) as u64;
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| Failure::new(FailureClass::Connection, format!("reading {url}: {e}")))?
        .into_bytes();
    let mut head = bytes.to_vec();
    head.truncate(n as usize);
    Ok((head, total.unwrap_or(length)))
}

/// Parts read at once by [`open_parallel`], and their size: a single GET from a store
/// is limited by one connection's rate (SeaweedFS serves one at about a third of what
/// four give); four parts of 8 MiB keep at most 32 MiB in memory.
const STREAM_PARTS: usize = 4;
const STREAM_PART_SIZE: u64 = 8 << 20;

/// Opens `s3://bucket/key` as a byte stream read with parallel ranged GETs, delivered in
/// order (for restoring straight from S3, or copying it to a file), every part pinned to
/// the version the first request saw (`If-Match`). Small objects are one GET.
pub(crate) async fn open_parallel(
    access: &S3Access,
    url: &str,
) -> Result<(Box<dyn tokio::io::AsyncRead + Send + Unpin>, u64), Failure> {
    let (bucket, key) = split_url(url)?;
    let client = client(access).await?;
    let h = head(&client, bucket, key, None).await?;
    if h.size <= STREAM_PART_SIZE {
        return one_get(&client, bucket, key, url).await;
    }
    let object = ObjectVersion {
        bucket: bucket.to_string(),
        key: key.to_string(),
        etag: h.etag.clone(),
        version: h.version_id.clone(),
    };
    let ranges: Vec<(u64, u64)> = (0..h.size)
        .step_by(STREAM_PART_SIZE as usize)
        .map(|start| (start, (start + STREAM_PART_SIZE).min(h.size) - 1))
        .collect();
    let s3 = client.s3.clone();
    let url = url.to_string();
    let parts = futures::stream::iter(ranges)
        .map(move |(start, end)| {
            let (s3, object, url) = (s3.clone(), object.clone(), url.clone());
            async move {
                fetch_part(&s3, &object, start, end).await.map_err(|e| {
                    std::io::Error::other(format!("reading {url} bytes {start}-{end}: {e}"))
                })
            }
        })
        .buffered(STREAM_PARTS);
    Ok((Box::new(tokio_util::io::StreamReader::new(parts)), h.size))
}

/// Parts of [`download_to`] in flight at once: each is written where it belongs as its
/// bytes arrive, so none waits for the one before it and none is held in memory.
const DOWNLOAD_PARTS: usize = 8;

/// Downloads `s3://bucket/key` to `path` (created, or truncated) with ranged GETs of
/// [`STREAM_PART_SIZE`], [`DOWNLOAD_PARTS`] at once, every part pinned to the version the
/// HEAD saw; `progress` gets the bytes written so far. Returns the object's size. A copy
/// for one use: nothing is hashed or synced (a copy that was interrupted is deleted and
/// fetched again), unlike the `s3.download` kind's.
pub(crate) async fn download_to(
    access: &S3Access,
    url: &str,
    path: &std::path::Path,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<u64, Failure> {
    let (bucket, key) = split_url(url)?;
    let client = client(access).await?;
    let h = head(&client, bucket, key, None).await?;
    let object = ObjectVersion {
        bucket: bucket.to_string(),
        key: key.to_string(),
        etag: h.etag.clone(),
        version: h.version_id.clone(),
    };
    let write = |e: std::io::Error| Failure::config(format!("writing {}: {e}", path.display()));
    let file = std::fs::File::create(path).map_err(write)?;
    let ranges: Vec<(u64, u64)> = (0..h.size)
        .step_by(STREAM_PART_SIZE as usize)
        .map(|start| (start, (start + STREAM_PART_SIZE).min(h.size) - 1))
        .collect();
    let (s3, object, file) = (&client.s3, &object, &file);
    let mut parts = futures::stream::iter(ranges)
        .map(|(start, end)| async move {
            fetch_range(s3, object, start, end, file)
                .await
                .map(|()| end + 1 - start)
                .map_err(|e| (start, e))
        })
        .buffer_unordered(DOWNLOAD_PARTS);
    let mut done = 0u64;
    while let Some(part) = parts.next().await {
        match part {
            Ok(len) => {
                done += len;
                progress(done);
            }
            Err((start, e)) => {
                let at = format!("{url} (bytes {start}-)");
                return Err(match e {
                    RangeError::Sdk(e) => classify(&e, &at, &client, bucket),
                    RangeError::Body(m) => {
                        Failure::new(FailureClass::Ambiguous, format!("{at}: {m}"))
                    }
                    RangeError::Write(e) => write(e),
                });
            }
        }
    }
    Ok(h.size)
}

/// Bytes `start..=end` of one object version, in memory, retried as a part download is.
async fn fetch_part(
    s3: &aws_sdk_s3::Client,
    object: &ObjectVersion,
    start: u64,
    end: u64,
) -> Result<bytes::Bytes, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = s3
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .range(format!("bytes={start}-{end}"));
        if !object.etag.is_empty() {
            req = req.if_match(format!("\"{}\"", object.etag));
        }
        if let Some(v) = &object.version {
            req = req.version_id(v);
        }
        let problem = match req.send().await {
            Ok(out) => match out.body.collect().await {
                Ok(data) if data.remaining() as u64 == end - start + 1 => {
                    return Ok(data.into_bytes());
                }
                Ok(data) => format!("got {} of {} bytes", data.remaining(), end - start + 1),
                Err(e) => error_chain(&e),
            },
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                return Err("the object changed while it was read".into());
            }
            Err(e) => error_chain(&e),
        };
        if attempt >= PART_ATTEMPTS {
            return Err(problem);
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
}

/// The whole object as one GET's byte stream, and its size.
async fn one_get(
    client: &Client,
    bucket: &str,
    key: &str,
    url: &str,
) -> Result<(Box<dyn tokio::io::AsyncRead + Send + Unpin>, u64), Failure> {
    let out = client
        .s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| classify(&e, url, client, bucket))?;
    let size = out.content_length().unwrap_or(0).max(0) as u64;
    Ok((Box::new(out.body.into_async_read()), size))
}

pub(crate) enum RangeError {
    Sdk(Box<SdkError<aws_sdk_s3::operation::get_object::GetObjectError>>),
    /// The body ended early or broke off.
    Body(String),
    /// The part could not be written to the partial file.
    Write(std::io::Error),
}

/// The object version every part must come from.
#[derive(Debug, Clone)]
pub(crate) struct ObjectVersion {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub version: Option<String>,
}

/// Fetches bytes `start..=end`, writing each chunk at its offset as it arrives.
pub(crate) async fn fetch_range(
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
                            problem = Some(error_chain(&e));
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
                let transient = matches!(
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
        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    /// A HEAD response as S3 sends it for a source object whose replication failed (AWS's
    /// documented HeadObject example, with its `x-amz-replication-status`), replayed by a
    /// local socket: the status must come through the SDK's parsing as S3 says it.
    const RECORDED: &str = "HTTP/1.1 200 OK\r\n\
        x-amz-id-2: ef8yU9AS1ed4OpIszj7UDNEHGran\r\n\
        x-amz-request-id: 318BC8BC143432E5\r\n\
        x-amz-replication-status: FAILED\r\n\
        Date: Wed, 28 Oct 2009 22:32:00 GMT\r\n\
        Last-Modified: Sun, 01 Jan 2006 12:00:00 GMT\r\n\
        ETag: \"fba9dede5f27731c9771645a39863328\"\r\n\
        Content-Length: 434234\r\n\
        Content-Type: text/plain\r\n\
        Connection: close\r\n\
        Server: AmazonS3\r\n\r\n";

    #[tokio::test]
    async fn the_replication_status_of_a_recorded_head_response() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(RECORDED.as_bytes());
            }
        });
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "k", "s", None, None, "test",
            ))
            .build();
        let client = super::Client {
            s3: aws_sdk_s3::Client::from_conf(conf),
            principal: "test".into(),
        };
        let status = super::replication_status(&client, "assets", "media/a.jpg")
            .await
            .unwrap();
        assert_eq!(status.as_deref(), Some("FAILED"));
    }
}
