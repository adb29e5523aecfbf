//! Assertions on a response, each failure saying what was expected and what came.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::captures::jsonpath_first;
use crate::duration::HumanDuration;
use crate::services::http::Response;

/// Assertions on a response.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Asserts {
    /// Status code (`200`) or class (`2xx`, `3xx`).
    #[serde(default)]
    pub status: Option<serde_json::Value>,
    /// Headers that must equal (or, with `~` prefix, match the regular expression).
    #[serde(default, deserialize_with = "crate::util::string_map")]
    #[schemars(with = "IndexMap<String, String>")]
    pub header: IndexMap<String, String>,
    /// Strings the body must contain (one or a list).
    #[serde(default, deserialize_with = "crate::util::one_or_many")]
    #[schemars(with = "crate::util::OneOrMany<String>")]
    pub body_contains: Vec<String>,
    /// Regular expression the body must match.
    #[serde(default)]
    pub body_matches: Option<String>,
    /// JSONPath checks (one or a list).
    #[serde(default, deserialize_with = "crate::util::one_or_many")]
    #[schemars(with = "crate::util::OneOrMany<JsonPathAssert>")]
    pub jsonpath: Vec<JsonPathAssert>,
    /// CSS selector checks (one or a list).
    #[serde(default, deserialize_with = "crate::util::one_or_many")]
    #[schemars(with = "crate::util::OneOrMany<CssAssert>")]
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
pub(crate) struct JsonPathAssert {
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
pub(crate) struct CssAssert {
    pub selector: String,
    /// At least one element must (true) or no element may (false) match.
    #[serde(default)]
    pub exists: Option<bool>,
    /// The first element's text (or, with `attr`, that attribute) must contain this.
    #[serde(default)]
    pub text: Option<String>,
    /// With `text`: check this attribute instead of the text (`href` of a canonical link).
    #[serde(default)]
    pub attr: Option<String>,
}

/// Every failed assertion, as "expected X, got Y".
pub(super) fn check(asserts: Option<&Asserts>, resp: &Response) -> Vec<String> {
    let Some(a) = asserts else { return Vec::new() };
    let mut failures = Vec::new();
    if let Some(want) = &a.status {
        let ok = match want {
            Value::Number(n) => n.as_u64() == Some(u64::from(resp.status)),
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
                                failures
                                    .push(format!("expected `{}` == {want}, got {got}", j.path));
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
                        let got = match &c.attr {
                            Some(a) => first
                                .and_then(|e| e.value().attr(a))
                                .unwrap_or_default()
                                .to_string(),
                            None => first
                                .map(|e| e.text().collect::<String>())
                                .unwrap_or_default(),
                        };
                        if !got.contains(want.as_str()) {
                            failures.push(format!(
                                "expected `{}` {} to contain `{want}`, got `{}`",
                                c.selector,
                                c.attr.as_deref().unwrap_or("text"),
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
            crate::duration::human(resp.duration)
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
