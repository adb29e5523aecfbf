//! `http.smoke`: Hurl-style smoke tests against the DR site (log in, create, upload).

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ConfigIssue, Effect, OutputDoc, Outputs, Preview, PreviewCtx, StepCtx, StepError, StepKind,
    output,
};
use crate::duration::HumanDuration;

/// An ordered list of HTTP requests sharing one cookie jar, with captures and asserts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSmoke {
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
pub struct BasicAuth {
    pub username: String,
    /// Use a secret: `{{ secrets.basic_auth_password }}`.
    pub password: String,
}

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Request {
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
pub struct Multipart {
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
pub struct FilePart {
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
pub enum Generate {
    Png,
    Text,
}

/// Where a captured value comes from. Give exactly one source.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// Regular expression on the body; the first group (or the whole match).
    #[serde(default)]
    pub regex: Option<String>,
    /// CSS selector on an HTML body, e.g. `input[name=csrfmiddlewaretoken]`.
    #[serde(default)]
    pub css: Option<String>,
    /// With `css`: the attribute to read (default: the element's text).
    #[serde(default)]
    pub attr: Option<String>,
    /// JSONPath on a JSON body, e.g. `$.image_id`.
    #[serde(default)]
    pub jsonpath: Option<String>,
    /// A response header.
    #[serde(default)]
    pub header: Option<String>,
    /// A cookie from the jar, e.g. `csrftoken`.
    #[serde(default)]
    pub cookie: Option<String>,
    /// The status code.
    #[serde(default)]
    pub status: bool,
    /// The final URL (after redirects).
    #[serde(default)]
    pub url: bool,
}

impl Capture {
    pub fn source_count(&self) -> usize {
        [
            self.regex.is_some(),
            self.css.is_some(),
            self.jsonpath.is_some(),
            self.header.is_some(),
            self.cookie.is_some(),
            self.status,
            self.url,
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// Assertions on a response.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Asserts {
    /// Status code (`200`) or class (`2xx`, `3xx`).
    #[serde(default)]
    pub status: Option<serde_json::Value>,
    /// Headers that must equal (or, with `~` prefix, match the regular expression).
    #[serde(default, deserialize_with = "crate::util::string_map")]
    #[schemars(with = "IndexMap<String, String>")]
    pub header: IndexMap<String, String>,
    /// Strings the body must contain.
    #[serde(default)]
    pub body_contains: Vec<String>,
    /// Regular expression the body must match.
    #[serde(default)]
    pub body_matches: Option<String>,
    /// JSONPath checks.
    #[serde(default)]
    pub jsonpath: Vec<JsonPathAssert>,
    /// CSS selector checks.
    #[serde(default)]
    pub css: Vec<CssAssert>,
    /// The response must arrive within this time.
    #[serde(default)]
    pub duration_under: Option<HumanDuration>,
    /// Content type (prefix match, e.g. `text/html`).
    #[serde(default)]
    pub content_type: Option<String>,
}

/// A JSONPath assertion.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonPathAssert {
    pub path: String,
    /// The value must equal this.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// The path must (true) or must not (false) exist.
    #[serde(default)]
    pub exists: Option<bool>,
}

/// A CSS selector assertion.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CssAssert {
    pub selector: String,
    /// At least one element must (true) or no element may (false) match.
    #[serde(default)]
    pub exists: Option<bool>,
    /// The first element's text must contain this.
    #[serde(default)]
    pub text: Option<String>,
}

/// Retry while the site comes up: only connection errors, timeouts and 502/503/504
/// (and failed assertions only with `on_assert_failure`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryUntil {
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

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, StepError> {
        runtime::run(self, ctx).await
    }
}

mod runtime {
    //! Sending the requests: one cookie jar, captures, asserts, wait-until-up.

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use indexmap::IndexMap;
    use reqwest::cookie::{CookieStore, Jar};
    use serde_json::{Value, json};

    use super::{Asserts, BasicAuth, Capture, Generate, HttpSmoke, Request};
    use crate::playbook::model::FailureClass;
    use crate::playbook::template::Templates;
    use crate::steps::{Outputs, StepCtx, StepError};

    const MAX_BODY: usize = 16 << 20;

    struct Response {
        status: u16,
        headers: reqwest::header::HeaderMap,
        url: String,
        body: Vec<u8>,
        duration: Duration,
    }

    impl Response {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        fn excerpt(&self) -> String {
            let text: String = self.text().split_whitespace().collect::<Vec<_>>().join(" ");
            let cut: String = text.chars().take(300).collect();
            if cut.len() < text.len() {
                format!("{cut}…")
            } else {
                cut
            }
        }
    }

    enum SendError {
        /// Nothing (useful) came back: connection refused, reset, timed out.
        Transient(String),
        Fatal(String),
    }

    pub async fn run(cfg: &HttpSmoke, ctx: &StepCtx) -> Result<Outputs, StepError> {
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
        let mut failure: Option<StepError> = None;
        let mut previous_url: Option<String> = None;
        for raw in &cfg.requests {
            let name = raw
                .name
                .clone()
                .unwrap_or_else(|| format!("{} {}", raw.method.to_uppercase(), raw.url));
            let req = render_request(raw, &captures, &templates)
                .map_err(|m| StepError::config(format!("request `{name}`: {m}")))?;
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
                    Some(StepError::new(
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
                        StepError::new(
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

    fn client(
        cfg: &HttpSmoke,
        ctx: &StepCtx,
        jar: &Arc<Jar>,
        follow: bool,
    ) -> Result<reqwest::Client, StepError> {
        let mut b = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .timeout(
                cfg.request_timeout
                    .map(|d| d.0)
                    .unwrap_or(Duration::from_secs(30)),
            )
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("drrun/", env!("CARGO_PKG_VERSION")))
            .redirect(if follow {
                reqwest::redirect::Policy::limited(10)
            } else {
                reqwest::redirect::Policy::none()
            })
            .tls_danger_accept_invalid_certs(cfg.insecure);
        if let Some(ca) = &cfg.ca_file {
            let path = ctx.resolve_path(ca);
            let pem = std::fs::read(&path).map_err(|e| {
                StepError::config(format!("cannot read ca_file {}: {e}", path.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| StepError::config(format!("ca_file {}: {e}", path.display())))?;
            b = b.add_root_certificate(cert);
        }
        b.build()
            .map_err(|e| StepError::config(format!("cannot build the HTTP client: {e}")))
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

    pub fn join_url(base: &str, url: &str) -> String {
        if url.contains("://") {
            url.to_string()
        } else {
            format!(
                "{}/{}",
                base.trim_end_matches('/'),
                url.trim_start_matches('/')
            )
        }
    }

    /// Sends a request, retrying while the site comes up when `retry_until` says so.
    async fn send_until(
        ctx: &StepCtx,
        client: &reqwest::Client,
        req: &Request,
        url: &str,
        auth: Option<&BasicAuth>,
        referer: &str,
    ) -> (Result<(Response, Vec<String>), String>, u32) {
        let deadline = req
            .retry_until
            .as_ref()
            .map(|r| Instant::now() + r.deadline.0);
        let interval = req
            .retry_until
            .as_ref()
            .and_then(|r| r.interval)
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(1));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = tokio::select! {
                r = send(ctx, client, req, url, auth, referer) => r,
                _ = ctx.cancel.cancelled() => return (Err("cancelled".into()), attempts),
            };
            let (outcome, transient) = match sent {
                Err(SendError::Transient(m)) => (Err(m), true),
                Err(SendError::Fatal(m)) => (Err(m), false),
                Ok(resp) => {
                    let failures = check(req.asserts.as_ref(), &resp);
                    let unavailable = matches!(resp.status, 502..=504);
                    let retry_asserts = req
                        .retry_until
                        .as_ref()
                        .is_some_and(|r| r.on_assert_failure)
                        && !failures.is_empty();
                    ((Ok((resp, failures))), unavailable || retry_asserts)
                }
            };
            match deadline {
                Some(d) if transient && Instant::now() + interval < d => {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = ctx.cancel.cancelled() => return (Err("cancelled".into()), attempts),
                    }
                }
                Some(_) if transient => {
                    let waited = req
                        .retry_until
                        .as_ref()
                        .map(|r| r.deadline.to_string())
                        .unwrap_or_default();
                    return (
                        outcome.map_err(|m| {
                            format!("{m} (still failing after {waited}, {attempts} attempts)")
                        }),
                        attempts,
                    );
                }
                _ => return (outcome, attempts),
            }
        }
    }

    async fn send(
        ctx: &StepCtx,
        client: &reqwest::Client,
        req: &Request,
        url: &str,
        auth: Option<&BasicAuth>,
        referer: &str,
    ) -> Result<Response, SendError> {
        let method = reqwest::Method::from_bytes(req.method.to_uppercase().as_bytes())
            .map_err(|_| SendError::Fatal(format!("invalid method `{}`", req.method)))?;
        let unsafe_method = !matches!(
            method,
            reqwest::Method::GET | reqwest::Method::HEAD | reqwest::Method::OPTIONS
        );
        let mut b = client.request(method, url);
        let has = |h: &str| req.headers.keys().any(|k| k.eq_ignore_ascii_case(h));
        // Django's CSRF check wants a same-origin Referer (and Origin) on unsafe
        // requests, as a browser would send them.
        if unsafe_method {
            if !has("referer") {
                b = b.header("Referer", referer);
            }
            if !has("origin")
                && let Ok(u) = url::Url::parse(url)
            {
                b = b.header("Origin", u.origin().ascii_serialization());
            }
        }
        for (k, v) in &req.headers {
            b = b.header(k, v);
        }
        if !req.query.is_empty() {
            b = b.query(&req.query.iter().collect::<Vec<_>>());
        }
        if let Some(a) = auth {
            b = b.basic_auth(&a.username, Some(&a.password));
        }
        if !req.form.is_empty() {
            b = b.form(&req.form.iter().collect::<Vec<_>>());
        } else if let Some(j) = &req.json {
            b = b.json(j);
        } else if let Some(body) = &req.body {
            b = b.body(body.clone());
        } else if let Some(m) = &req.multipart {
            let mut form = reqwest::multipart::Form::new();
            for (k, v) in &m.fields {
                form = form.text(k.clone(), v.clone());
            }
            for f in &m.files {
                let (bytes, default_name) = match (&f.path, f.generate) {
                    (Some(p), _) => {
                        let path = ctx.resolve_path(p);
                        let bytes = std::fs::read(&path).map_err(|e| {
                            SendError::Fatal(format!("cannot read {}: {e}", path.display()))
                        })?;
                        let name = path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| "file".into());
                        (bytes, name)
                    }
                    (None, Some(Generate::Png)) => (png(), "drrun-smoke.png".to_string()),
                    (None, Some(Generate::Text)) => (
                        format!("drrun smoke test {}\n", chrono::Utc::now().to_rfc3339())
                            .into_bytes(),
                        "drrun-smoke.txt".to_string(),
                    ),
                    (None, None) => {
                        return Err(SendError::Fatal(
                            "a file part needs `path` or `generate`".into(),
                        ));
                    }
                };
                let filename = f.filename.clone().unwrap_or(default_name);
                let mime = f
                    .content_type
                    .clone()
                    .unwrap_or_else(|| guess_mime(&filename).to_string());
                let part = reqwest::multipart::Part::bytes(bytes)
                    .file_name(filename)
                    .mime_str(&mime)
                    .map_err(|e| SendError::Fatal(format!("content type `{mime}`: {e}")))?;
                form = form.part(f.field.clone(), part);
            }
            b = b.multipart(form);
        }
        let started = Instant::now();
        let resp = b.send().await.map_err(|e| {
            let text = error_chain(&e);
            if e.is_connect() || e.is_timeout() {
                SendError::Transient(text)
            } else {
                SendError::Fatal(text)
            }
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let final_url = resp.url().to_string();
        let mut body = Vec::new();
        let mut resp = resp;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_BODY.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(SendError::Transient(format!(
                        "reading the response: {}",
                        error_chain(&e)
                    )));
                }
            }
        }
        Ok(Response {
            status,
            headers,
            url: final_url,
            body,
            duration: started.elapsed(),
        })
    }

    fn error_chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    }

    fn guess_mime(name: &str) -> &'static str {
        match name
            .rsplit('.')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
            .as_str()
        {
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "gif" => "image/gif",
            "txt" => "text/plain",
            "json" => "application/json",
            "pdf" => "application/pdf",
            _ => "application/octet-stream",
        }
    }

    fn capture_value(c: &Capture, resp: &Response, jar: &Arc<Jar>) -> Result<String, String> {
        if let Some(pattern) = &c.regex {
            let re = regex::Regex::new(pattern).map_err(|e| format!("invalid regex: {e}"))?;
            let text = resp.text();
            let caps = re
                .captures(&text)
                .ok_or_else(|| format!("regex /{pattern}/ matched nothing"))?;
            return Ok(caps
                .get(1)
                .or_else(|| caps.get(0))
                .map(|m| m.as_str().to_string())
                .unwrap_or_default());
        }
        if let Some(css) = &c.css {
            let doc = scraper::Html::parse_document(&resp.text());
            let sel = scraper::Selector::parse(css)
                .map_err(|e| format!("invalid CSS selector `{css}`: {e}"))?;
            let el = doc
                .select(&sel)
                .next()
                .ok_or_else(|| format!("no element matches `{css}`"))?;
            return match &c.attr {
                Some(attr) => el
                    .value()
                    .attr(attr)
                    .map(str::to_string)
                    .ok_or_else(|| format!("`{css}` has no attribute `{attr}`")),
                None => Ok(el.text().collect::<String>().trim().to_string()),
            };
        }
        if let Some(path) = &c.jsonpath {
            let doc: Value = serde_json::from_slice(&resp.body)
                .map_err(|e| format!("the body is not JSON: {e}"))?;
            let found = jsonpath_first(&doc, path)?
                .ok_or_else(|| format!("JSONPath `{path}` found nothing"))?;
            return Ok(match found {
                Value::String(s) => s,
                other => other.to_string(),
            });
        }
        if let Some(h) = &c.header {
            return resp
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| format!("no `{h}` header"));
        }
        if let Some(name) = &c.cookie {
            let url = url::Url::parse(&resp.url).map_err(|e| e.to_string())?;
            let header = jar
                .cookies(&url)
                .and_then(|h| h.to_str().ok().map(str::to_string))
                .unwrap_or_default();
            return header
                .split(';')
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_string())
                .ok_or_else(|| format!("no cookie `{name}`"));
        }
        if c.status {
            return Ok(resp.status.to_string());
        }
        if c.url {
            return Ok(resp.url.clone());
        }
        Err("a capture needs a source".into())
    }

    fn jsonpath_first(doc: &Value, path: &str) -> Result<Option<Value>, String> {
        let p = serde_json_path::JsonPath::parse(path)
            .map_err(|e| format!("invalid JSONPath `{path}`: {e}"))?;
        Ok(p.query(doc).first().cloned())
    }

    /// Every failed assertion, as "expected X, got Y".
    fn check(asserts: Option<&Asserts>, resp: &Response) -> Vec<String> {
        let Some(a) = asserts else { return Vec::new() };
        let mut failures = Vec::new();
        if let Some(want) = &a.status {
            let ok = match want {
                Value::Number(n) => n.as_u64() == Some(resp.status as u64),
                Value::String(s) if s.len() == 3 && s.ends_with("xx") => {
                    s[..1] == resp.status.to_string()[..1]
                }
                Value::String(s) => s.parse::<u16>().ok() == Some(resp.status),
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "expected status {}, got {}",
                    want.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| want.to_string()),
                    resp.status
                ));
            }
        }
        for (name, want) in &a.header {
            let got = resp
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let ok = match want.strip_prefix('~') {
                Some(pattern) => regex::Regex::new(pattern).is_ok_and(|re| re.is_match(got)),
                None => got == want,
            };
            if !ok {
                failures.push(format!("expected header `{name}` {want}, got `{got}`"));
            }
        }
        let text = resp.text();
        for needle in &a.body_contains {
            if !text.contains(needle.as_str()) {
                failures.push(format!("expected the body to contain `{needle}`"));
            }
        }
        if let Some(pattern) = &a.body_matches
            && !regex::Regex::new(pattern).is_ok_and(|re| re.is_match(&text))
        {
            failures.push(format!("expected the body to match /{pattern}/"));
        }
        if !a.jsonpath.is_empty() {
            match serde_json::from_slice::<Value>(&resp.body) {
                Err(e) => failures.push(format!("expected a JSON body: {e}")),
                Ok(doc) => {
                    for j in &a.jsonpath {
                        match jsonpath_first(&doc, &j.path) {
                            Err(e) => failures.push(e),
                            Ok(found) => {
                                if let Some(exists) = j.exists
                                    && found.is_some() != exists
                                {
                                    failures.push(format!(
                                        "expected `{}` to {}exist",
                                        j.path,
                                        if exists { "" } else { "not " }
                                    ));
                                }
                                if let Some(want) = &j.equals
                                    && found.as_ref() != Some(want)
                                {
                                    let got = found
                                        .map(|v| v.to_string())
                                        .unwrap_or_else(|| "nothing".into());
                                    failures.push(format!(
                                        "expected `{}` == {want}, got {got}",
                                        j.path
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
        if !a.css.is_empty() {
            let doc = scraper::Html::parse_document(&text);
            for c in &a.css {
                match scraper::Selector::parse(&c.selector) {
                    Err(e) => failures.push(format!("invalid CSS selector `{}`: {e}", c.selector)),
                    Ok(sel) => {
                        let first = doc.select(&sel).next();
                        if let Some(exists) = c.exists
                            && first.is_some() != exists
                        {
                            failures.push(format!(
                                "expected `{}` to {}match",
                                c.selector,
                                if exists { "" } else { "not " }
                            ));
                        }
                        if let Some(want) = &c.text {
                            let got = first
                                .map(|e| e.text().collect::<String>())
                                .unwrap_or_default();
                            if !got.contains(want.as_str()) {
                                failures.push(format!(
                                    "expected `{}` text to contain `{want}`, got `{}`",
                                    c.selector,
                                    got.trim()
                                ));
                            }
                        }
                    }
                }
            }
        }
        if let Some(limit) = a.duration_under
            && resp.duration > limit.0
        {
            failures.push(format!(
                "expected a response within {limit}, took {}",
                crate::duration::format_short(resp.duration)
            ));
        }
        if let Some(ct) = &a.content_type {
            let got = resp
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !got.starts_with(ct.as_str()) {
                failures.push(format!("expected content type `{ct}`, got `{got}`"));
            }
        }
        failures
    }

    /// A small valid PNG (8x8, one colour that changes per run, so uploads are not
    /// deduplicated by content).
    pub fn png() -> Vec<u8> {
        use std::io::Write;
        let seed = chrono::Utc::now().timestamp_subsec_nanos();
        let (r, g, b) = ((seed >> 16) as u8, (seed >> 8) as u8, seed as u8);
        let (w, h) = (8u32, 8u32);
        // Each scanline: filter byte 0 (none), then RGB pixels.
        let mut row = vec![0u8];
        row.extend(std::iter::repeat_n([r, g, b], w as usize).flatten());
        let raw = row.repeat(h as usize);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw).unwrap();
        let idat = z.finish().unwrap();
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut crc_input = kind.to_vec();
            crc_input.extend_from_slice(data);
            out.extend_from_slice(&crc_input);
            out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
        };
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
        chunk(b"IHDR", &ihdr);
        chunk(b"IDAT", &idat);
        chunk(b"IEND", &[]);
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn generated_png_is_valid() {
            let png = png();
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
            // The IHDR CRC of the well-known chunk layout checks out.
            assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        }

        #[test]
        fn urls_join_like_a_browser_would_for_relative_paths() {
            assert_eq!(
                join_url("https://dr.example.com/", "/admin/"),
                "https://dr.example.com/admin/"
            );
            assert_eq!(
                join_url("https://dr.example.com", "admin/"),
                "https://dr.example.com/admin/"
            );
            assert_eq!(join_url("https://a", "http://b/c"), "http://b/c");
        }
    }
}
