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

    async fn run(&self, _ctx: &StepCtx) -> Result<Outputs, StepError> {
        Err(super::not_built(Self::NAME))
    }
}
