//! `http.smoke`: Hurl-style smoke tests against the DR site (log in, create, upload).

use crate::steps::Evidence;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use reqwest::cookie::Jar;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::captures::capture_value;
use super::form;
use super::page;
use super::send::{join_url, send_until};
use super::settings::{BasicAuth, Request};
use crate::duration::HumanDuration;
use crate::outcome::{Failure, FailureClass, Outputs};
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
      - name: login page
        url: /admin/login/
      - name: log in
        submit:
          form: form.login-form
          fields: { username: drrun-smoke, password: "{{ secrets.admin_password }}" }
        assert: { status: 302 }
      - name: image upload page
        url: /admin/images/multiple/add/
      - name: upload an image
        submit:
          form: "form[action$='/multiple/add/']"
          files: [{ field: "files[]", generate: png }]
        assert: { status: 200, jsonpath: { path: $.success, equals: true } }
"#;
    const OUTPUTS: &'static [OutputDoc] = &[
        output("requests", "Per request: name, status, duration (ms)."),
        output("captures", "Captured values by name (secrets redacted)."),
        output("duration", "Total seconds."),
    ];

    const EVIDENCE: Evidence = Evidence {
        summary: Some(summary),
        ..Evidence::NONE
    };

    const DEFERRED: &'static [&'static str] = &["captures"];

    fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.requests.is_empty() {
            issues.push(ConfigIssue::new("requests", "list at least one request"));
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, r) in self.requests.iter().enumerate() {
            let bodies = [
                r.submit.is_some(),
                !r.form.is_empty(),
                r.multipart.is_some(),
                r.json.is_some(),
                r.body.is_some(),
            ];
            if bodies.iter().filter(|b| **b).count() > 1 {
                issues.push(ConfigIssue::new(
                    format!("requests[{i}]"),
                    "give only one of `submit`, `form`, `multipart`, `json`, `body`",
                ));
            }
            if r.url.is_none() && r.submit.is_none() {
                issues.push(ConfigIssue::new(
                    format!("requests[{i}]"),
                    "give `url`, or `submit` to send a form from an earlier page",
                ));
            }
            if let Some(sub) = &r.submit {
                if i == 0 && sub.from.is_none() {
                    issues.push(ConfigIssue::new(
                        format!("requests[{i}].submit"),
                        "the first request has no earlier page to take a form from: fetch the page first",
                    ));
                }
                if let Some(from) = &sub.from
                    && !names.contains(&from.as_str())
                {
                    issues.push(ConfigIssue::new(
                        format!("requests[{i}].submit.from"),
                        format!(
                            "no earlier request is named `{from}`{}",
                            crate::diag::did_you_mean(from, names.iter().copied())
                                .map(|d| format!(" ({d})"))
                                .unwrap_or_default()
                        ),
                    ));
                }
            }
            if let Some(n) = &r.name {
                names.push(n);
            }
            for (name, c) in &r.capture {
                if c.source_count() != 1 {
                    issues.push(ConfigIssue::new(
                        format!("requests[{i}].capture.{name}"),
                        "a capture needs exactly one of `regex`, `css`, `jsonpath`, `header`, `cookie`, `status`, `url` (`regex` may refine `header`, `cookie` or `url`)",
                    ));
                }
            }
            let files = r
                .multipart
                .iter()
                .flat_map(|m| {
                    m.files
                        .iter()
                        .enumerate()
                        .map(|(j, f)| (format!("multipart.files[{j}]"), f))
                })
                .chain(r.submit.iter().flat_map(|s| {
                    s.files
                        .iter()
                        .enumerate()
                        .map(|(j, f)| (format!("submit.files[{j}]"), f))
                }));
            for (at, f) in files {
                if f.path.is_some() == f.generate.is_some() {
                    issues.push(ConfigIssue::new(
                        format!("requests[{i}].{at}"),
                        "give either `path` or `generate`",
                    ));
                }
            }
        }
        issues
    }

    async fn preview(&self, _ctx: &PreviewCtx) -> Preview {
        Preview::lines(
            self.requests
                .iter()
                .enumerate()
                .map(|(i, r)| match (&r.url, &r.submit) {
                    (Some(url), _) => format!(
                        "{} {}",
                        r.method
                            .as_deref()
                            .unwrap_or(if r.submit.is_some() { "POST" } else { "GET" })
                            .to_uppercase(),
                        join_url(&self.base_url, url)
                    ),
                    (None, Some(sub)) => {
                        let from = sub
                            .from
                            .clone()
                            .unwrap_or_else(|| request_name(&self.requests[i - 1]));
                        format!("submit the form `{}` of `{from}`", sub.form)
                    }
                    (None, None) => "(no url)".into(),
                }),
        )
    }

    async fn run(&self, ctx: &StepCtx) -> Result<Outputs, Failure> {
        run(self, ctx).await
    }
}

fn request_name(r: &Request) -> String {
    r.name.clone().unwrap_or_else(|| match (&r.url, &r.submit) {
        (Some(url), _) => format!("{} {url}", r.method()),
        (None, Some(sub)) => format!("submit {}", sub.form),
        (None, None) => r.method(),
    })
}

/// A page fetched earlier: where it came from and what it said.
struct Page {
    url: String,
    body: String,
}

async fn run(cfg: &HttpSmoke, ctx: &StepCtx) -> Result<Outputs, Failure> {
    let started = Instant::now();
    if cfg.insecure {
        ctx.note("warning: TLS certificates are not verified (insecure: true)");
    }
    let jar = Arc::new(Jar::default());
    let follow = client(cfg, ctx, &jar, true)?;
    let stay = client(cfg, ctx, &jar, false)?;
    let mut captures: IndexMap<String, Value> = IndexMap::new();
    let mut pages: IndexMap<String, Page> = IndexMap::new();
    let mut last: Option<Page> = None;
    let mut results = Vec::new();
    let mut failure: Option<Failure> = None;
    for (i, raw) in cfg.requests.iter().enumerate() {
        let name = request_name(raw);
        let req = render_request(ctx, i, raw, &captures)
            .map_err(|m| Failure::config(format!("request `{name}`: {m}")))?;
        let page = match req.submit.as_ref().and_then(|s| s.from.as_ref()) {
            Some(from) => pages.get(from),
            None => last.as_ref(),
        };
        let prepared = match &req.submit {
            Some(sub) => Some(
                page.ok_or_else(|| "there is no earlier page".to_string())
                    .and_then(|p| form::prepare(sub, &p.body, &p.url))
                    .map_err(|m| {
                        Failure::new(FailureClass::Assertion, format!("request `{name}`: {m}"))
                    })?,
            ),
            None => None,
        };
        let (url, method) = match (&req.url, &prepared) {
            (Some(u), _) => (
                join_url(&cfg.base_url, u),
                req.method.clone().map(|m| m.to_uppercase()),
            ),
            (None, Some(f)) => (f.url.clone(), None),
            (None, None) => unreachable!("check() requires url or submit"),
        };
        let method = method
            .or_else(|| prepared.as_ref().map(|f| f.method.clone()))
            .unwrap_or_else(|| "GET".into());
        let client = if req.follow_redirects.unwrap_or(cfg.follow_redirects) {
            &follow
        } else {
            &stay
        };
        let auth = req.auth.as_ref().or(cfg.basic_auth.as_ref());
        // A browser sends the page the request was made from.
        let referer = page.map_or_else(|| cfg.base_url.clone(), |p| p.url.clone());
        let target = super::send::Target {
            url: &url,
            method: &method,
            auth,
            referer: &referer,
            form: prepared.as_ref(),
        };
        let (outcome, attempts) = send_until(ctx, client, &req, &target).await;
        let (status, duration, error) = match outcome {
            Err(message) => (
                None,
                None,
                Some(Failure::new(
                    FailureClass::Connection,
                    format!("request `{name}` ({method} {url}): {message}"),
                )),
            ),
            Ok((resp, mut failures)) => {
                for (cap_name, capture) in &req.capture {
                    match capture_value(capture, &resp, &jar) {
                        Ok(v) => {
                            captures.insert(cap_name.clone(), v);
                        }
                        Err(m) => failures.push(format!("capture `{cap_name}`: {m}")),
                    }
                }
                let error = (!failures.is_empty())
                    .then(|| refused(ctx, i, &name, &method, &url, &resp, &failures));
                let fetched = Page {
                    url: resp.url.clone(),
                    body: resp.text(),
                };
                if let Some(n) = &raw.name {
                    pages.insert(
                        n.clone(),
                        Page {
                            url: fetched.url.clone(),
                            body: fetched.body.clone(),
                        },
                    );
                }
                last = Some(fetched);
                (Some(resp.status), Some(resp.duration), error)
            }
        };
        results.push(json!({
            "name": name,
            "method": method,
            "url": url,
            "status": status,
            "duration_ms": duration.map(|d| d.as_millis() as u64),
            "attempts": attempts,
            "ok": error.is_none(),
        }));
        match error {
            // The step's failure says it in full; said once.
            Some(e) if failure.is_none() => {
                ctx.note(format!("✘ {name}"));
                failure = Some(e);
            }
            Some(e) => ctx.note(format!("✘ {name}: {}", e.message)),
            None => ctx.note(format!("✔ {name} ({})", status.unwrap_or(0))),
        }
        if failure.is_some() && !cfg.continue_on_failure {
            break;
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

/// A failed request in the page's own words, its whole response saved in the run
/// directory.
fn refused(
    ctx: &StepCtx,
    i: usize,
    name: &str,
    method: &str,
    url: &str,
    resp: &http::Response,
    failures: &[String],
) -> Failure {
    let dir = ctx.work_dir.join("http").join(&ctx.step_id);
    let saved = match page::save(&dir, i, name, method, url, resp, &ctx.redactor) {
        Ok(path) => format!("; the full response is in {}", path.display()),
        Err(e) => format!(
            "; the response could not be saved in {}: {e}",
            dir.display()
        ),
    };
    Failure::new(
        FailureClass::Assertion,
        format!(
            "request `{name}` ({method} {url}): {}; status {}: {}{saved}",
            failures.join("; "),
            resp.status,
            page::explain(resp),
        ),
    )
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

/// Renders, once, the settings of request `i` that read `{{ captures.NAME }}`: from the
/// text the playbook wrote, with captures, secrets and every other value as data.
fn render_request(
    ctx: &StepCtx,
    i: usize,
    req: &Request,
    captures: &IndexMap<String, Value>,
) -> Result<Request, String> {
    let value = serde_json::to_value(req).map_err(|e| e.to_string())?;
    let extra = vec![("captures", crate::playbook::template::to_value(captures))];
    let rendered = ctx
        .deferred
        .render(&format!("requests[{i}]"), &value, extra)
        .map_err(|e| {
            format!(
                "{} in `{}` (captured so far: {})",
                e.message,
                e.path,
                captures.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
    serde_json::from_value(rendered).map_err(|e| e.to_string())
}

/// The report's lines: each request with its status and time.
fn summary(o: &Outputs) -> Vec<String> {
    o.get("requests")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .map(|r| {
            let status = r["status"]
                .as_u64()
                .map_or_else(|| "no response".into(), |s| s.to_string());
            let took = r["duration_ms"]
                .as_u64()
                .map(crate::duration::human_ms)
                .unwrap_or_default();
            format!(
                "{} `{}` {} → {status}{}{}",
                if r["ok"].as_bool() == Some(true) {
                    "✔"
                } else {
                    "✘"
                },
                r["name"].as_str().unwrap_or("?"),
                r["method"].as_str().unwrap_or("GET"),
                if took.is_empty() {
                    String::new()
                } else {
                    format!(" in {took}")
                },
                match r["attempts"].as_u64() {
                    Some(n) if n > 1 => format!(" ({n} attempts)"),
                    _ => String::new(),
                }
            )
        })
        .collect()
}
