//! `http.smoke`: Hurl-style smoke tests against the DR site (log in, create, upload).

use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use reqwest::cookie::Jar;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::captures::{Capture, capture_value};
use super::checks::Asserts;
use super::send::{join_url, send_until};
use crate::duration::HumanDuration;
use crate::outcome::{Failure, FailureClass, Outputs};
use crate::playbook::template::Templates;
use crate::services::http;
use crate::steps::{
    ConfigIssue, Effect, OutputDoc, Preview, PreviewCtx, StepCtx, StepKind, output,
};

/// An ordered list of HTTP requests sharing one cookie jar, with captures and asserts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpSmoke {
    /// Base URL; request URLs are relative to it.
    pub base_url: String,
    /// Basic auth for every request (DR sites usually sit behind it).
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Follow redirects (default false: a 302 is a result you can assert on).
    #[serde(default)]
    pub follow_redirects: bool,
    /// CA certificate (PEM) to trust in addition to the system's.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Do not verify TLS certificates (a warning is shown).
    #[serde(default)]
    pub insecure: bool,
    /// Time limit per request (default `30s`).
    #[serde(default)]
    pub request_timeout: Option<HumanDuration>,
    /// Run the remaining requests after one fails (the step still fails).
    #[serde(default)]
    pub continue_on_failure: bool,
    /// The requests, in order.
    pub requests: Vec<Request>,
}

/// A user name and password.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BasicAuth {
    pub username: String,
    /// Use a secret: `{{ secrets.basic_auth_password }}`.
    pub password: String,
}

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Request {
    /// A name for reports (default: `METHOD url`).
    #[serde(default)]
    pub name: Option<String>,
    /// HTTP method (default GET).
    #[serde(default = "default_method")]
    pub method: String,
    /// URL relative to `base_url` (or absolute). Captures are available as `{{ captures.NAME }}`.
    pub url: String,
    /// Request headers.
    #[serde(default, deserialize_with = "crate::util::string_map")]
    #[schemars(with = "IndexMap<String, String>")]
    pub headers: IndexMap<String, String>,
    /// Query parameters.
    #[serde(default, deserialize_with = "crate::util::string_map")]
    #[schemars(with = "IndexMap<String, String>")]
    pub query: IndexMap<String, String>,
    /// URL-encoded form fields.
    #[serde(default, deserialize_with = "crate::util::string_map")]
    #[schemars(with = "IndexMap<String, String>")]
    pub form: IndexMap<String, String>,
    /// A multipart form: fields and files.
    #[serde(default)]
    pub multipart: Option<Multipart>,
    /// A JSON body.
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// A raw body.
    #[serde(default)]
    pub body: Option<String>,
    /// Basic auth for this request only (overrides the step's).
    #[serde(default)]
    pub auth: Option<BasicAuth>,
    /// Follow redirects for this request (default: the step's setting).
    #[serde(default)]
    pub follow_redirects: Option<bool>,
    /// Values to capture from the response, by name.
    #[serde(default)]
    pub capture: IndexMap<String, Capture>,
    /// Assertions on the response.
    #[serde(default, rename = "assert")]
    pub asserts: Option<Asserts>,
    /// Retry this request while the site is coming up.
    #[serde(default)]
    pub retry_until: Option<RetryUntil>,
}

fn default_method() -> String {
    "GET".into()
}

/// Multipart form content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Multipart {
    /// Text fields.
    #[serde(default, deserialize_with = "crate::util::string_map")]
    #[schemars(with = "IndexMap<String, String>")]
    pub fields: IndexMap<String, String>,
    /// Files.
    #[serde(default)]
    pub files: Vec<FilePart>,
}

/// A file in a multipart form: read from disk or generated.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePart {
    /// Form field name.
    pub field: String,
    /// File to send, relative to the playbook's directory.
    #[serde(default)]
    pub path: Option<String>,
    /// Generate the content instead: `png` (a small valid image) or `text`.
    #[serde(default)]
    pub generate: Option<Generate>,
    /// File name sent (default: the path's file name, or `drrun-smoke.<ext>`).
    #[serde(default)]
    pub filename: Option<String>,
    /// Content type (default: from the file name).
    #[serde(default)]
    pub content_type: Option<String>,
}

/// Generated upload content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Generate {
    Png,
    Text,
}

/// Retry while the site comes up: only connection errors, timeouts and 502/503/504
/// (and failed assertions only with `on_assert_failure`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryUntil {
    /// Give up after this long.
    pub deadline: HumanDuration,
    /// Pause between tries (default `1s`).
    #[serde(default)]
    pub interval: Option<HumanDuration>,
    /// Also retry when an assertion on a real response fails.
    #[serde(default)]
    pub on_assert_failure: bool,
}

impl StepKind for HttpSmoke {
    const NAME: &'static str = "http.smoke";
    const SUMMARY: &'static str = "Run ordered HTTP requests with one cookie jar: captures (CSRF tokens), asserts, uploads, wait-until-up.";
    const EFFECT: Effect = Effect::Destructive;
    const EXAMPLE: &'static str = r#"smoke:
  kind: http.smoke
  needs: [deploy]
  with:
    base_url: "https://{{ vars.dr_host }}"
    basic_auth: { username: dr, password: "{{ secrets.basic_auth_password }}" }
    requests:
      - name: site is up
        url: /
        retry_until: { deadline: 5m, interval: 5s }
        assert: { status: 200 }
      - name: login form
        url: /admin/login/
        capture: { csrf: { css: "input[name=csrfmiddlewaretoken]", attr: value } }
      - name: log in
        method: POST
        url: /admin/login/
        form: { csrfmiddlewaretoken: "{{ captures.csrf }}", username: admin, password: "{{ secrets.admin_password }}" }
        assert: { status: 302 }
      - name: upload an image
        method: POST
        url: /admin/images/multiple/add/
        multipart:
          fields: { csrfmiddlewaretoken: "{{ captures.csrf }}" }
          files: [{ field: "files[]", generate: png }]
        assert: { status: 200, jsonpath: [{ path: $.success, equals: true }] }
"#;
    const OUTPUTS: &'static [OutputDoc] = &[
        output("requests", "Per request: name, status, duration (ms)."),
        output("captures", "Captured values by name (secrets redacted)."),
        output("duration", "Total seconds."),
    ];

    const DEFERRED: &'static [&'static str] = &["captures"];

    fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.requests.is_empty() {
            issues.push(ConfigIssue::new("requests", "list at least one request"));
        }
        for (i, r) in self.requests.iter().enumerate() {
            let bodies = [
                !r.form.is_empty(),
                r.multipart.is_some(),
                r.json.is_some(),
                r.body.is_some(),
            ];
            if bodies.iter().filter(|b| **b).count() > 1 {
                issues.push(ConfigIssue::new(
                    format!("requests[{i}]"),
                    "give only one of `form`, `multipart`, `json`, `body`",
                ));
            }
            for (name, c) in &r.capture {
                if c.source_count() != 1 {
                    issues.push(ConfigIssue::new(
                        format!("requests[{i}].capture.{name}"),
                        "a capture needs exactly one of `regex`, `css`, `jsonpath`, `header`, `cookie`, `status`, `url`",
                    ));
                }
            }
            for (j, f) in r.multipart.iter().flat_map(|m| m.files.iter()).enumerate() {
                if f.path.is_some() == f.generate.is_some() {
                    issues.push(ConfigIssue::new(
                        format!("requests[{i}].multipart.files[{j}]"),
                        "give either `path` or `generate`",
                    ));
                }
            }
        }
        issues
    }

    async fn preview(&self, _ctx: &PreviewCtx) -> Preview {
        let base = self.base_url.trim_end_matches('/');
        Preview::lines(self.requests.iter().map(|r| {
            let url = if r.url.contains("://") {
                r.url.clone()
            } else {
                format!("{base}/{}", r.url.trim_start_matches('/'))
            };
            format!("{} {url}", r.method.to_uppercase())
        }))
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, Failure> {
        run(self, ctx).await
    }
}

async fn run(cfg: &HttpSmoke, ctx: &StepCtx) -> Result<Outputs, Failure> {
    let started = Instant::now();
    if cfg.insecure {
        ctx.note("warning: TLS certificates are not verified (insecure: true)");
    }
    let jar = Arc::new(Jar::default());
    let follow = client(cfg, ctx, &jar, true)?;
    let stay = client(cfg, ctx, &jar, false)?;
    let templates = Templates::new();
    let mut captures: IndexMap<String, String> = IndexMap::new();
    let mut results = Vec::new();
    let mut failure: Option<Failure> = None;
    let mut previous_url: Option<String> = None;
    for raw in &cfg.requests {
        let name = raw
            .name
            .clone()
            .unwrap_or_else(|| format!("{} {}", raw.method.to_uppercase(), raw.url));
        let req = render_request(raw, &captures, &templates)
            .map_err(|m| Failure::config(format!("request `{name}`: {m}")))?;
        let url = join_url(&cfg.base_url, &req.url);
        let client = if req.follow_redirects.unwrap_or(cfg.follow_redirects) {
            &follow
        } else {
            &stay
        };
        let auth = req.auth.as_ref().or(cfg.basic_auth.as_ref());
        let referer = previous_url.clone().unwrap_or_else(|| cfg.base_url.clone());
        let (outcome, attempts) = send_until(ctx, client, &req, &url, auth, &referer).await;
        let (ok, status, duration, error) = match outcome {
            Err(message) => (
                false,
                None,
                None,
                Some(Failure::new(
                    FailureClass::Connection,
                    format!(
                        "request `{name}` ({} {url}): {message}",
                        req.method.to_uppercase()
                    ),
                )),
            ),
            Ok((resp, failures)) => {
                previous_url = Some(resp.url.clone());
                let mut failures = failures;
                for (cap_name, capture) in &req.capture {
                    match capture_value(capture, &resp, &jar) {
                        Ok(v) => {
                            captures.insert(cap_name.clone(), v);
                        }
                        Err(m) => failures.push(format!("capture `{cap_name}`: {m}")),
                    }
                }
                let error = (!failures.is_empty()).then(|| {
                    Failure::new(
                        FailureClass::Assertion,
                        format!(
                            "request `{name}` ({} {url}): {}; got status {}, body: {}",
                            req.method.to_uppercase(),
                            failures.join("; "),
                            resp.status,
                            resp.excerpt()
                        ),
                    )
                });
                (
                    error.is_none(),
                    Some(resp.status),
                    Some(resp.duration),
                    error,
                )
            }
        };
        results.push(json!({
            "name": name,
            "method": req.method.to_uppercase(),
            "url": url,
            "status": status,
            "duration_ms": duration.map(|d| d.as_millis() as u64),
            "attempts": attempts,
            "ok": ok,
        }));
        if let Some(e) = error {
            ctx.note(format!("✘ {name}: {}", e.message));
            if failure.is_none() {
                failure = Some(e);
            }
            if !cfg.continue_on_failure {
                break;
            }
        } else {
            ctx.note(format!("✔ {name} ({})", status.unwrap_or(0)));
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut outputs = Outputs::new();
    outputs.insert("requests".into(), Value::Array(results));
    outputs.insert("captures".into(), json!(captures));
    outputs.insert(
        "duration".into(),
        json!((started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
    );
    Ok(outputs)
}

/// A client of the step's settings sharing `jar`.
fn client(
    cfg: &HttpSmoke,
    ctx: &StepCtx,
    jar: &Arc<Jar>,
    follow: bool,
) -> Result<reqwest::Client, Failure> {
    let ca = match &cfg.ca_file {
        Some(ca) => {
            let path = ctx.resolve_path(ca);
            let pem = std::fs::read(&path).map_err(|e| {
                Failure::config(format!("cannot read ca_file {}: {e}", path.display()))
            })?;
            Some((path, pem))
        }
        None => None,
    };
    http::client(&http::ClientOptions {
        jar,
        follow_redirects: follow,
        timeout: cfg.request_timeout.map_or(Duration::from_secs(30), |d| d.0),
        insecure: cfg.insecure,
        ca_pem: ca.as_ref().map(|(_, pem)| pem.as_slice()),
    })
    .map_err(|e| match &ca {
        Some((path, _)) => Failure::config(format!("ca_file {}: {e}", path.display())),
        None => Failure::config(e),
    })
}

/// Renders `{{ captures.NAME }}` left in the request by the engine.
fn render_request(
    req: &Request,
    captures: &IndexMap<String, String>,
    templates: &Templates,
) -> Result<Request, String> {
    let value = serde_json::to_value(req).map_err(|e| e.to_string())?;
    if !value.to_string().contains("{{") {
        return Ok(req.clone());
    }
    let ctx = crate::playbook::template::to_value(json!({ "captures": captures }));
    let rendered = templates.render_json(&value, &ctx).map_err(|e| {
        format!(
            "{} in `{}` (captured so far: {})",
            e.message,
            e.path,
            captures.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    serde_json::from_value(rendered).map_err(|e| e.to_string())
}
