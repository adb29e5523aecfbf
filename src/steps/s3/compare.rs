//! `s3.compare`: a bucket against its DR copy (or against expectations), as the DR guide
//! sets them up once in a console: settings parity (versioning, default encryption,
//! public access block, object ownership, and a replication rule to the copy), coverage
//! (keys missing in the copy, size/ETag mismatches, how far replication lags, the
//! per-object replication status the store reports) and keys that must be there. Read
//! only, so `plan` runs it too.

use std::collections::HashMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::duration::{HumanDuration, human};
use crate::outcome::{Failure, FailureClass, Outputs};
use crate::services::buckets::{Setting, Settings, settings};
use crate::services::s3::{self, Client, Listed, S3Access};
use crate::steps::{
    ConfigIssue, Effect, Evidence, OutputDoc, Preview, PreviewCtx, StepCtx, StepKind, output,
};

/// Compares a bucket (and prefix) with its DR copy, or checks it against expectations.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct S3Compare {
    /// The bucket checked (e.g. the production assets bucket).
    pub bucket: String,
    /// Only keys under this prefix.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Its DR copy: settings must match, a replication rule must lead there, and the
    /// listing must be there.
    #[serde(default)]
    pub copy: Option<CopyOf>,
    /// Expectations instead of (or besides) a copy, e.g. for the hosting-services
    /// bucket: `{ versioning: true, encryption: true, public_access_blocked: true }`.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Compare the buckets' settings (default true).
    #[serde(default = "yes")]
    pub settings: bool,
    /// Keys that must be in the copy (or, without one, in the bucket), e.g. an image the
    /// restored database names.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Keys missing from the copy (or differing in size or ETag) tolerated (default 0).
    #[serde(default)]
    pub max_missing: u64,
    /// How long replication may take: a missing key younger than this is pending, not
    /// missing, and a replica this much newer than its source fails (default: none).
    #[serde(default)]
    pub max_lag: Option<HumanDuration>,
    /// How many examples of each problem to show, and how many of the newest objects to
    /// ask for their replication status (default 5).
    #[serde(default)]
    pub examples: Option<u32>,
    /// Where the bucket's store is and which credentials to use.
    #[serde(flatten)]
    pub access: S3Access,
}

/// The DR copy of the bucket.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CopyOf {
    /// The copy's bucket.
    pub bucket: String,
    /// The copy's prefix for the source's (default: the same).
    #[serde(default)]
    pub prefix: Option<String>,
    /// How to reach the copy's store (default: the source's settings).
    #[serde(default)]
    pub s3: Option<S3Access>,
}

/// What the bucket must be set to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expect {
    /// Versioning enabled.
    #[serde(default)]
    pub versioning: Option<bool>,
    /// A default encryption configured.
    #[serde(default)]
    pub encryption: Option<bool>,
    /// All four public access block settings on.
    #[serde(default)]
    pub public_access_blocked: Option<bool>,
    /// Object ownership, e.g. `BucketOwnerEnforced`.
    #[serde(default)]
    pub ownership: Option<String>,
}

fn yes() -> bool {
    true
}

/// What a comparison found: the lines it says, the problems, the outputs.
struct Found {
    lines: Vec<String>,
    problems: Vec<String>,
    outputs: Outputs,
}

impl StepKind for S3Compare {
    const NAME: &'static str = "s3.compare";
    const SUMMARY: &'static str = "Check a bucket against its DR copy (settings parity, replication rule, missing or differing keys, replication lag and status) or against expectations; read only.";
    const EFFECT: Effect = Effect::Read;
    const EXAMPLE: &'static str = r"assets_dr:
  kind: s3.compare
  with:
    bucket: acme-assets
    prefix: media/
    copy: { bucket: acme-assets-dr, s3: { region: eu-west-1 } }
    max_lag: 1h
    keys: [media/original_images/logo.png]
";
    const OUTPUTS: &'static [OutputDoc] = &[
        output("source_objects", "Objects under the prefix in the bucket."),
        output("copy_objects", "Objects under the copy's prefix."),
        output("missing", "Keys missing from the copy (past `max_lag`)."),
        output("mismatched", "Keys whose size or ETag differ in the copy."),
        output(
            "pending",
            "Missing keys younger than `max_lag` (replication in flight).",
        ),
        output("extra", "Keys only in the copy."),
        output(
            "max_lag_seconds",
            "The largest replication lag seen among the newest objects.",
        ),
        output("examples", "Examples of each problem, by kind."),
        output(
            "settings",
            "Each setting of the bucket (and the copy) as read.",
        ),
        output("problems", "What failed the step, in words."),
    ];
    const EVIDENCE: Evidence = Evidence {
        summary: Some(summary),
        ..Evidence::NONE
    };

    fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.copy.is_none() && self.expect.is_none() && self.keys.is_empty() {
            issues.push(ConfigIssue::new(
                "",
                "give `copy` (the DR copy to compare with), `expect` (settings the bucket must have) or `keys`",
            ));
        }
        if self.copy.is_none() && (self.max_lag.is_some() || self.max_missing > 0) {
            issues.push(ConfigIssue::new(
                if self.max_lag.is_some() {
                    "max_lag"
                } else {
                    "max_missing"
                },
                "`max_lag` and `max_missing` apply to a `copy`",
            ));
        }
        issues
    }

    async fn preview(&self, ctx: &PreviewCtx) -> Preview {
        if ctx.offline {
            return Preview::offline();
        }
        match compare(self).await {
            Ok(f) if f.problems.is_empty() => Preview::lines(f.lines),
            Ok(f) => Preview::partial_failure(f.lines, problems(&f.problems)),
            Err(e) => Preview::failure(e),
        }
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, Failure> {
        ctx.phase(format!("comparing s3://{}", self.bucket));
        let f = compare(self).await?;
        for l in &f.lines {
            ctx.note(l);
        }
        if f.problems.is_empty() {
            Ok(f.outputs)
        } else {
            Err(problems(&f.problems))
        }
    }
}

fn problems(list: &[String]) -> Failure {
    Failure::new(
        FailureClass::Assertion,
        format!("{} problem(s): {}", list.len(), list.join("; ")),
    )
}

fn examples_n(cfg: &S3Compare) -> usize {
    cfg.examples.unwrap_or(5) as usize
}

async fn compare(cfg: &S3Compare) -> Result<Found, Failure> {
    let client = s3::client(&cfg.access).await?;
    let mut f = Found {
        lines: Vec::new(),
        problems: Vec::new(),
        outputs: Outputs::new(),
    };
    let mut settings_out = serde_json::Map::new();
    if (cfg.settings && cfg.copy.is_some()) || cfg.expect.is_some() {
        let mine = settings(&client, &cfg.bucket).await?;
        settings_out.insert(cfg.bucket.clone(), settings_json(&mine));
        if let Some(expect) = &cfg.expect {
            expectations(cfg, &mine, expect, &mut f);
        }
        if let (Some(copy), true) = (&cfg.copy, cfg.settings) {
            let copy_client = s3::client(copy.s3.as_ref().unwrap_or(&cfg.access)).await?;
            let theirs = settings(&copy_client, &copy.bucket).await?;
            settings_out.insert(copy.bucket.clone(), settings_json(&theirs));
            parity(cfg, copy, &mine, &theirs, &mut f);
        }
    }
    f.outputs
        .insert("settings".into(), serde_json::Value::Object(settings_out));
    if let Some(copy) = &cfg.copy {
        coverage(cfg, copy, &client, &mut f).await?;
    }
    if !cfg.keys.is_empty() {
        let (bucket, access) = match &cfg.copy {
            Some(c) => (c.bucket.as_str(), c.s3.as_ref().unwrap_or(&cfg.access)),
            None => (cfg.bucket.as_str(), &cfg.access),
        };
        let keys_client = s3::client(access).await?;
        for key in &cfg.keys {
            match s3::head(&keys_client, bucket, key, None).await {
                Ok(h) => f
                    .lines
                    .push(format!("s3://{bucket}/{key} is there ({} bytes)", h.size)),
                Err(_) => f.problems.push(format!("s3://{bucket}/{key} is missing")),
            }
        }
    }
    f.outputs.insert("problems".into(), json!(f.problems));
    Ok(f)
}

fn settings_json(s: &Settings) -> serde_json::Value {
    json!({
        "versioning": s.versioning.text(),
        "encryption": s.encryption.text(),
        "public_access_blocked": s.public_access_blocked.text(),
        "ownership": s.ownership.text(),
        "replication": match &s.replication {
            Setting::Known(rules) => json!(rules.iter().map(|r| json!({
                "id": r.id, "enabled": r.enabled, "destination": r.destination, "prefix": r.prefix,
            })).collect::<Vec<_>>()),
            Setting::Unset => json!("not set"),
            Setting::Unsupported(why) => json!(format!("not readable ({why})")),
        },
    })
}

fn expectations(cfg: &S3Compare, s: &Settings, e: &Expect, f: &mut Found) {
    let b = &cfg.bucket;
    let mut want = |name: &str, ok: Option<bool>, got: String| match ok {
        Some(true) => f.lines.push(format!("{b}: {name} {got}, as expected")),
        Some(false) => f.problems.push(format!("{b}: {name} is {got}")),
        None => f.lines.push(format!("{b}: {name} not checked: {got}")),
    };
    let judge = |known: Option<bool>, unsupported: bool| if unsupported { None } else { known };
    if e.versioning == Some(true) {
        let ok = matches!(&s.versioning, Setting::Known(v) if v == "Enabled");
        want(
            "versioning",
            judge(Some(ok), matches!(s.versioning, Setting::Unsupported(_))),
            s.versioning.text(),
        );
    }
    if e.encryption == Some(true) {
        let ok = matches!(s.encryption, Setting::Known(_));
        want(
            "default encryption",
            judge(Some(ok), matches!(s.encryption, Setting::Unsupported(_))),
            s.encryption.text(),
        );
    }
    if e.public_access_blocked == Some(true) {
        let ok = matches!(s.public_access_blocked, Setting::Known(true));
        let got = match &s.public_access_blocked {
            Setting::Known(true) => "all blocked".to_string(),
            Setting::Known(false) => "not all blocked".to_string(),
            other => other.text(),
        };
        want(
            "public access",
            judge(
                Some(ok),
                matches!(s.public_access_blocked, Setting::Unsupported(_)),
            ),
            got,
        );
    }
    if let Some(own) = &e.ownership {
        let ok = matches!(&s.ownership, Setting::Known(o) if o == own);
        want(
            "object ownership",
            judge(Some(ok), matches!(s.ownership, Setting::Unsupported(_))),
            s.ownership.text(),
        );
    }
}

fn parity(cfg: &S3Compare, copy: &CopyOf, a: &Settings, b: &Settings, f: &mut Found) {
    let (src, dst) = (&cfg.bucket, &copy.bucket);
    let mut same = |name: &str, x: String, y: String, checkable: bool| {
        if !checkable {
            f.lines
                .push(format!("{name} not compared: {src} {x}, {dst} {y}"));
        } else if x == y {
            f.lines.push(format!("{name} the same: {x}"));
        } else {
            f.problems
                .push(format!("{name} differs: {src} {x}, {dst} {y}"));
        }
    };
    let can = |x: bool, y: bool| !x && !y;
    let u = |s: &Setting<String>| matches!(s, Setting::Unsupported(_));
    same(
        "versioning",
        a.versioning.text(),
        b.versioning.text(),
        can(u(&a.versioning), u(&b.versioning)),
    );
    same(
        "default encryption",
        a.encryption.text(),
        b.encryption.text(),
        can(u(&a.encryption), u(&b.encryption)),
    );
    same(
        "public access block",
        a.public_access_blocked.text(),
        b.public_access_blocked.text(),
        can(
            matches!(a.public_access_blocked, Setting::Unsupported(_)),
            matches!(b.public_access_blocked, Setting::Unsupported(_)),
        ),
    );
    same(
        "object ownership",
        a.ownership.text(),
        b.ownership.text(),
        can(u(&a.ownership), u(&b.ownership)),
    );
    match &a.replication {
        Setting::Known(rules) => match rules.iter().find(|r| &r.destination == dst) {
            Some(r) if r.enabled => f.lines.push(format!(
                "replication rule `{}` copies {src} to {dst}, enabled",
                r.id
            )),
            Some(r) => f
                .problems
                .push(format!("replication rule `{}` to {dst} is disabled", r.id)),
            None => f
                .problems
                .push(format!("no replication rule of {src} leads to {dst}")),
        },
        Setting::Unset => f
            .problems
            .push(format!("{src} has no replication configuration")),
        Setting::Unsupported(why) => f.lines.push(format!("replication not checked: {why}")),
    }
}

async fn coverage(
    cfg: &S3Compare,
    copy: &CopyOf,
    client: &Client,
    f: &mut Found,
) -> Result<(), Failure> {
    let prefix = cfg.prefix.clone().unwrap_or_default();
    let copy_prefix = copy.prefix.clone().unwrap_or_else(|| prefix.clone());
    let copy_client = s3::client(copy.s3.as_ref().unwrap_or(&cfg.access)).await?;
    let source = s3::list(client, &cfg.bucket, &prefix).await?;
    let replica = s3::list(&copy_client, &copy.bucket, &copy_prefix).await?;
    let by_key: HashMap<String, &Listed> = replica
        .iter()
        .map(|o| (o.key[copy_prefix.len()..].to_string(), o))
        .collect();
    let now = chrono::Utc::now();
    let lag = cfg.max_lag.map(|l| l.0);
    let (mut missing, mut pending, mut mismatched) = (Vec::new(), Vec::new(), Vec::new());
    let mut max_lag = Duration::ZERO;
    for o in &source {
        let rel = &o.key[prefix.len()..];
        match by_key.get(rel) {
            None => {
                let age = o
                    .last_modified
                    .and_then(|t| (now - t).to_std().ok())
                    .unwrap_or(Duration::MAX);
                if lag.is_some_and(|l| age < l) {
                    pending.push(o.key.clone());
                } else {
                    missing.push(o.key.clone());
                }
            }
            Some(r)
                if r.size != o.size
                    || (!r.etag.is_empty() && !o.etag.is_empty() && r.etag != o.etag) =>
            {
                mismatched.push(format!(
                    "{} ({} bytes, copy {} bytes)",
                    o.key, o.size, r.size
                ));
            }
            Some(r) => {
                if let (Some(a), Some(b)) = (o.last_modified, r.last_modified)
                    && let Ok(d) = (b - a).to_std()
                {
                    max_lag = max_lag.max(d);
                }
            }
        }
    }
    let extra = replica.len() - (source.len() - missing.len() - pending.len());
    let n = examples_n(cfg);
    f.lines.push(format!(
        "{} object(s) under s3://{}/{prefix}, {} in the copy s3://{}/{copy_prefix}: {} missing, {} differing, {} pending, {} only in the copy",
        source.len(),
        cfg.bucket,
        replica.len(),
        copy.bucket,
        missing.len(),
        mismatched.len(),
        pending.len(),
        extra
    ));
    let bad = (missing.len() + mismatched.len()) as u64;
    if bad > cfg.max_missing {
        let mut shown: Vec<String> = missing
            .iter()
            .take(n)
            .map(|k| format!("{k} missing"))
            .collect();
        shown.extend(mismatched.iter().take(n).map(|k| format!("{k} differs")));
        f.problems.push(format!(
            "{bad} key(s) missing or differing in the copy (at most {} allowed), e.g. {}",
            cfg.max_missing,
            shown.join(", ")
        ));
    }
    if let Some(l) = lag
        && max_lag > l
    {
        f.problems.push(format!(
            "replication lags {} (at most {} allowed)",
            human(max_lag),
            human(l)
        ));
    }
    // What the store says of the newest objects' replication (AWS: x-amz-replication-status).
    let mut newest: Vec<&Listed> = source.iter().collect();
    newest.sort_by_key(|o| std::cmp::Reverse(o.last_modified));
    for o in newest.into_iter().take(n) {
        if let Ok(status) = s3::replication_status(client, &cfg.bucket, &o.key).await
            && let Some(problem) = replication_problem(&o.key, status.as_deref())
        {
            f.problems.push(problem);
        }
    }
    f.outputs
        .insert("source_objects".into(), json!(source.len()));
    f.outputs
        .insert("copy_objects".into(), json!(replica.len()));
    f.outputs.insert("missing".into(), json!(missing.len()));
    f.outputs
        .insert("mismatched".into(), json!(mismatched.len()));
    f.outputs.insert("pending".into(), json!(pending.len()));
    f.outputs.insert("extra".into(), json!(extra));
    f.outputs
        .insert("max_lag_seconds".into(), json!(max_lag.as_secs()));
    f.outputs.insert(
        "examples".into(),
        json!({
            "missing": missing.iter().take(n).collect::<Vec<_>>(),
            "mismatched": mismatched.iter().take(n).collect::<Vec<_>>(),
            "pending": pending.iter().take(n).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}

/// A per-object replication status (`x-amz-replication-status`) that is a problem:
/// `FAILED`; `PENDING`, `COMPLETED`, `REPLICA` and none are not.
pub(crate) fn replication_problem(key: &str, status: Option<&str>) -> Option<String> {
    match status {
        Some("FAILED") => Some(format!("the store reports replication FAILED for {key}")),
        _ => None,
    }
}

fn summary(o: &Outputs) -> Vec<String> {
    let n = |k: &str| o.get(k).and_then(serde_json::Value::as_u64);
    match n("source_objects") {
        Some(src) => vec![format!(
            "{src} object(s) compared with the copy: {} missing, {} differing, {} pending; replication lag up to {}s",
            n("missing").unwrap_or(0),
            n("mismatched").unwrap_or(0),
            n("pending").unwrap_or(0),
            n("max_lag_seconds").unwrap_or(0)
        )],
        None => vec!["bucket settings checked".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statuses as S3 returns them in `x-amz-replication-status` (recorded from AWS's
    /// documentation of HeadObject on a source and a replica).
    #[test]
    fn only_a_failed_replication_is_a_problem() {
        assert!(
            replication_problem("k", Some("FAILED"))
                .unwrap()
                .contains("FAILED for k")
        );
        for ok in [Some("COMPLETED"), Some("PENDING"), Some("REPLICA"), None] {
            assert_eq!(replication_problem("k", ok), None);
        }
    }
}
