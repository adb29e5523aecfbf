//! State in an object store (`--state s3://BUCKET/PREFIX`). S3 objects cannot be
//! appended to, so each journal record is an object of its own,
//! `<root>/runs/<run>/journal/<seq>.json`, written create-only (`If-None-Match: *`) in
//! order and before the change it records is acted on; a journal is replayed by listing
//! them. A local directory mirrors the store for the code that reads journals (`pull`
//! rebuilds it), so `status`, `report` and `resume` read S3 state as they read a local
//! one. The run lock is a lease object (`lease.rs`).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use futures::StreamExt;

use super::{StateError, io_err};
use crate::services::s3::{S3Access, client};
use crate::util::fs::write_atomic;

/// Where an S3 state store is: `s3://bucket/prefix`, with how to reach it given as query
/// parameters (`?endpoint=URL&region=R&path_style=true&profile=P`) or by the standard
/// AWS environment.
#[derive(Debug, Clone)]
pub(crate) struct S3Location {
    pub bucket: String,
    /// Without leading or trailing slashes; may be empty.
    pub prefix: String,
    pub access: S3Access,
}

impl S3Location {
    /// Whether `text` names an S3 store rather than a directory.
    pub(crate) fn is_s3(text: &str) -> bool {
        text.starts_with("s3://")
    }

    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("not an s3:// URL: {text}"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(format!("`{text}` names no bucket: use s3://BUCKET/PREFIX"));
        }
        let mut access = S3Access {
            endpoint: std::env::var("AWS_ENDPOINT_URL_S3")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .ok(),
            ..S3Access::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = url::form_urlencoded::parse(v.as_bytes())
                .next()
                .map(|(a, b)| format!("{a}{b}"))
                .unwrap_or_default();
            match k {
                "endpoint" => access.endpoint = Some(v),
                "region" => access.region = Some(v),
                "profile" => access.profile = Some(v),
                "path_style" => access.path_style = v != "false",
                other => {
                    let hint = crate::diag::did_you_mean(
                        other,
                        ["endpoint", "region", "profile", "path_style"],
                    )
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                    return Err(format!(
                        "`{other}` is not a setting of an S3 state store (endpoint, region, profile, path_style){hint}"
                    ));
                }
            }
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            access,
        })
    }

    /// The store of one playbook inside a fleet's store.
    pub(crate) fn join(&self, name: &str) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        };
        Self {
            prefix,
            ..self.clone()
        }
    }

    /// `s3://bucket/prefix`, without the query: what messages and the cache name use.
    pub(crate) fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }
}

/// Calls of the store run on a runtime of their own, entered from a scoped thread, so
/// the synchronous journal can wait for a PUT from anywhere, inside the engine's runtime
/// or not (a runtime cannot be entered from one of its own threads).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("drrun-state")
            .enable_all()
            .build()
            .expect("the state store's runtime starts")
    })
}

fn block<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| runtime().block_on(f))
            .join()
            .expect("the state store's thread does not panic")
    })
}

/// How a write is conditioned.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Condition<'a> {
    /// Create only (`If-None-Match: *`).
    Absent,
    /// Replace only this version (`If-Match`).
    Matches(&'a str),
}

/// What a conditional write met.
#[derive(Debug)]
pub(crate) enum PutError {
    /// The condition did not hold: the object exists (create-only), or is another
    /// version, or is gone (SeaweedFS answers 412 where AWS answers 404).
    Precondition,
    Other(StateError),
}

/// A connected store rooted at one playbook's prefix.
pub(crate) struct S3State {
    pub loc: S3Location,
    s3: aws_sdk_s3::Client,
    /// Set when the lease was taken by another holder: nothing more may be written.
    pub(crate) lost: Arc<AtomicBool>,
}

impl std::fmt::Debug for S3State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3State({})", self.loc.url())
    }
}

impl S3State {
    pub(crate) fn connect(loc: &S3Location) -> Result<Self, StateError> {
        let c = block(client(&loc.access)).map_err(|e| StateError::Store {
            url: loc.url(),
            message: e.message,
        })?;
        Ok(Self {
            loc: loc.clone(),
            s3: c.s3,
            lost: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The store of one playbook inside this one, on the same connection.
    pub(crate) fn join(&self, name: &str) -> Self {
        Self {
            loc: self.loc.join(name),
            s3: self.s3.clone(),
            lost: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn url(&self) -> String {
        self.loc.url()
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> StateError {
        StateError::Store {
            url: self.url(),
            message: format!("{what}: {e}"),
        }
    }

    /// Writes `rel` under the root as `cond` says; returns the new ETag. A 409 (a
    /// concurrent conditional write, which AWS asks to retry) is retried.
    pub(crate) fn put(
        &self,
        rel: &str,
        body: Vec<u8>,
        cond: Option<Condition<'_>>,
    ) -> Result<String, PutError> {
        let key = self.loc.key(rel);
        block(async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut req = self
                    .s3
                    .put_object()
                    .bucket(&self.loc.bucket)
                    .key(&key)
                    .content_type("application/json")
                    .body(body.clone().into());
                req = match cond {
                    Some(Condition::Absent) => req.if_none_match("*"),
                    Some(Condition::Matches(etag)) => req.if_match(format!("\"{etag}\"")),
                    None => req,
                };
                match req.send().await {
                    Ok(out) => {
                        return Ok(out
                            .e_tag()
                            .unwrap_or_default()
                            .trim_matches('"')
                            .to_string());
                    }
                    Err(e) => {
                        let status = e.raw_response().map(|r| r.status().as_u16());
                        match status {
                            Some(412) => return Err(PutError::Precondition),
                            // `If-Match` on a missing key: AWS's answer.
                            Some(404) if matches!(cond, Some(Condition::Matches(_))) => {
                                return Err(PutError::Precondition);
                            }
                            Some(409 | 500 | 503) if attempt < 6 => {
                                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                            }
                            _ => {
                                return Err(PutError::Other(
                                    self.err(&format!("writing {key}"), describe(&e)),
                                ));
                            }
                        }
                    }
                }
            }
        })
    }

    /// The object `rel` and its ETag, or `None` when there is none.
    pub(crate) fn get(&self, rel: &str) -> Result<Option<(Vec<u8>, String)>, StateError> {
        let key = self.loc.key(rel);
        block(async {
            match self
                .s3
                .get_object()
                .bucket(&self.loc.bucket)
                .key(&key)
                .send()
                .await
            {
                Ok(out) => {
                    let etag = out
                        .e_tag()
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string();
                    let body = out
                        .body
                        .collect()
                        .await
                        .map_err(|e| self.err(&format!("reading {key}"), e))?;
                    Ok(Some((body.into_bytes().to_vec(), etag)))
                }
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
                Err(e) => Err(self.err(&format!("reading {key}"), describe(&e))),
            }
        })
    }

    pub(crate) fn delete(&self, rel: &str) -> Result<(), StateError> {
        let key = self.loc.key(rel);
        block(async {
            self.s3
                .delete_object()
                .bucket(&self.loc.bucket)
                .key(&key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err(&format!("deleting {key}"), describe(&e)))
        })
    }

    /// Keys under `rel` (relative to the root), every page.
    pub(crate) fn list(&self, rel: &str) -> Result<Vec<String>, StateError> {
        let prefix = self.loc.key(rel);
        let strip = self.loc.key("");
        block(async {
            let mut pages = self
                .s3
                .list_objects_v2()
                .bucket(&self.loc.bucket)
                .prefix(&prefix)
                .into_paginator()
                .send();
            let mut keys = Vec::new();
            while let Some(page) = pages.next().await {
                let page =
                    page.map_err(|e| self.err(&format!("listing {prefix}"), describe(&e)))?;
                for o in page.contents() {
                    if let Some(k) = o.key() {
                        keys.push(k.strip_prefix(&strip).unwrap_or(k).to_string());
                    }
                }
            }
            Ok(keys)
        })
    }

    /// The names directly under the root that hold a `runs/` folder: the playbooks of a
    /// fleet's store.
    /// One delimited listing of the root's folders, then one small listing each: never
    /// every record of every run.
    pub(crate) fn playbooks(&self) -> Result<Vec<String>, StateError> {
        let root = self.loc.key("");
        let folders: Vec<String> = block(async {
            let mut pages = self
                .s3
                .list_objects_v2()
                .bucket(&self.loc.bucket)
                .prefix(&root)
                .delimiter("/")
                .into_paginator()
                .send();
            let mut names = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.err(&format!("listing {root}"), describe(&e)))?;
                for p in page.common_prefixes() {
                    if let Some(name) = p
                        .prefix()
                        .and_then(|p| p.strip_prefix(&root))
                        .map(|p| p.trim_end_matches('/'))
                        .filter(|p| !p.is_empty())
                    {
                        names.push(name.to_string());
                    }
                }
            }
            Ok::<_, StateError>(names)
        })?;
        let mut names = Vec::new();
        for name in folders {
            let one = self.join(&name);
            let has_runs = block(async {
                one.s3
                    .list_objects_v2()
                    .bucket(&one.loc.bucket)
                    .prefix(one.loc.key("runs/"))
                    .max_keys(1)
                    .send()
                    .await
                    .map(|o| o.key_count().unwrap_or(0) > 0)
                    .map_err(|e| one.err("listing runs/", describe(&e)))
            })?;
            if has_runs {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Appends record `seq` of `run` create-only: a record that exists already means
    /// another process writes this run, and nothing more is written.
    pub(crate) fn put_record(&self, run: &str, seq: u64, line: &str) -> Result<(), StateError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(StateError::LeaseLost { url: self.url() });
        }
        let rel = record_key(run, seq);
        match self.put(&rel, line.as_bytes().to_vec(), Some(Condition::Absent)) {
            Ok(_) => Ok(()),
            Err(PutError::Precondition) => Err(StateError::Store {
                url: self.url(),
                message: format!(
                    "journal record {rel} exists already: another process is writing this run"
                ),
            }),
            Err(PutError::Other(e)) => Err(e),
        }
    }

    /// Rebuilds `local` (a state directory) from the store: every run's journal, from
    /// its record objects in order. Records already there locally are kept (a local
    /// journal is only ever a prefix of the store's); runs the store does not have go.
    pub(crate) fn pull(&self, local: &Path) -> Result<(), StateError> {
        let mut runs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for key in self.list("runs/")? {
            let mut parts = key.split('/');
            if let (Some("runs"), Some(run), Some("journal"), Some(file), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) && let Some(seq) = file.strip_suffix(".json").and_then(|s| s.parse().ok())
            {
                runs.entry(run.to_string()).or_default().push(seq);
            }
        }
        let dir = local.join("runs");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().to_string();
                if !runs.contains_key(&name) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        for (run, mut seqs) in runs {
            seqs.sort_unstable();
            if let Some(gap) = seqs.iter().enumerate().find(|(i, s)| **s != *i as u64) {
                return Err(StateError::Store {
                    url: self.url(),
                    message: format!(
                        "the journal of run {run} lacks record {} (it has {}): the store lost an object",
                        gap.0, gap.1
                    ),
                });
            }
            let run_dir = dir.join(&run);
            std::fs::create_dir_all(&run_dir).map_err(io_err(&run_dir))?;
            let path = run_dir.join("journal.jsonl");
            let mut text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut have = text.lines().count() as u64;
            if have > seqs.len() as u64 || !text.is_empty() && !text.ends_with('\n') {
                text.clear();
                have = 0;
            }
            let missing: Vec<u64> = (have..seqs.len() as u64).collect();
            if missing.is_empty() {
                continue;
            }
            let keys: Vec<String> = missing.iter().map(|seq| record_key(&run, *seq)).collect();
            let fetched: Vec<Result<String, StateError>> = block(async {
                futures::stream::iter(keys.into_iter().map(|rel| self.get_owned(rel)))
                    .buffered(16)
                    .collect()
                    .await
            });
            for line in fetched {
                text.push_str(line?.trim_end());
                text.push('\n');
            }
            write_atomic(&path, text.as_bytes(), false).map_err(io_err(&path))?;
        }
        Ok(())
    }

    async fn get_owned(&self, rel: String) -> Result<String, StateError> {
        let key = self.loc.key(&rel);
        let out = self
            .s3
            .get_object()
            .bucket(&self.loc.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.err(&format!("reading {key}"), describe(&e)))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| self.err(&format!("reading {key}"), e))?;
        String::from_utf8(body.into_bytes().to_vec())
            .map_err(|e| self.err(&format!("reading {key}"), e))
    }

    /// Uploads what a finished run leaves besides its journal, the report files, under
    /// `runs/<run>/`; returns what failed.
    pub(crate) fn upload_run_files(&self, run: &str, run_dir: &Path) -> Vec<String> {
        ["report.json", "report.md", "junit.xml"]
            .iter()
            .filter_map(|name| {
                self.upload_file(&run_dir.join(name), &format!("runs/{run}/{name}"))
                    .err()
            })
            .map(|e| e.to_string())
            .collect()
    }

    /// Uploads `path` (when it exists) as `rel`, replacing what is there: a step's log
    /// once the step has ended, so a run continued elsewhere keeps the earlier logs.
    pub(crate) fn upload_file(&self, path: &Path, rel: &str) -> Result<(), StateError> {
        let Ok(bytes) = std::fs::read(path) else {
            return Ok(());
        };
        match self.put(rel, bytes, None) {
            Ok(_) | Err(PutError::Precondition) => Ok(()),
            Err(PutError::Other(e)) => Err(e),
        }
    }
}

fn record_key(run: &str, seq: u64) -> String {
    format!("runs/{run}/journal/{seq:08}.json")
}

/// An SDK error in the store's words (the code and message, not the Rust type).
fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(s) => {
            let inner = s.err();
            format!(
                "{} {}",
                inner.code().unwrap_or("error"),
                inner.message().unwrap_or_default()
            )
            .trim()
            .to_string()
        }
        other => crate::util::error_chain(other),
    }
}

/// One journal's mirror: the run's next record number.
pub(crate) struct Mirror {
    pub store: Arc<S3State>,
    pub run: String,
    pub next: Mutex<u64>,
}

impl Mirror {
    /// Makes `line` durable in the store as the run's next record.
    pub(crate) fn put(&self, line: &str) -> Result<(), StateError> {
        let mut next = self.next.lock().unwrap();
        self.store.put_record(&self.run, *next, line)?;
        *next += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_reads_bucket_prefix_and_settings() {
        let l = S3Location::parse(
            "s3://drills/fleet/?endpoint=http%3A%2F%2F127.0.0.1%3A8333&path_style=true&region=eu-west-1",
        )
        .unwrap();
        assert_eq!(l.bucket, "drills");
        assert_eq!(l.prefix, "fleet");
        assert_eq!(l.access.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert!(l.access.path_style);
        assert_eq!(l.join("acme").url(), "s3://drills/fleet/acme");
        assert_eq!(l.join("acme").key("lock"), "fleet/acme/lock");
        let bare = S3Location::parse("s3://drills").unwrap();
        assert_eq!(bare.join("acme").key("lock"), "acme/lock");
        let e = S3Location::parse("s3://drills/x?endpont=http://h").unwrap_err();
        assert!(e.contains("did you mean `endpoint`"), "{e}");
        assert!(S3Location::parse("s3:///x").is_err());
    }
}
