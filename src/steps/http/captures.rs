//! Captures: values taken from a response (a CSRF token, an id, a cookie) for the
//! requests after it, as `{{ captures.NAME }}`.

use reqwest::cookie::Jar;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::services::http::{self, Response};

/// Where a captured value comes from. Give exactly one source.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Capture {
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
    pub(crate) fn source_count(&self) -> usize {
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

pub(super) fn capture_value(c: &Capture, resp: &Response, jar: &Jar) -> Result<String, String> {
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
        let doc: Value =
            serde_json::from_slice(&resp.body).map_err(|e| format!("the body is not JSON: {e}"))?;
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
        return http::cookie(jar, &resp.url, name).ok_or_else(|| format!("no cookie `{name}`"));
    }
    if c.status {
        return Ok(resp.status.to_string());
    }
    if c.url {
        return Ok(resp.url.clone());
    }
    Err("a capture needs a source".into())
}

pub(super) fn jsonpath_first(doc: &Value, path: &str) -> Result<Option<Value>, String> {
    let p = serde_json_path::JsonPath::parse(path)
        .map_err(|e| format!("invalid JSONPath `{path}`: {e}"))?;
    Ok(p.query(doc).first().cloned())
}
