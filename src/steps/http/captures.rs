//! Captures: values taken from a response (a CSRF token, an id, a cookie) for the
//! requests after it, as `{{ captures.NAME }}`.

use reqwest::cookie::Jar;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
#[cfg(test)]
use serde_json::json;

use crate::services::http::{self, Response};

/// Where a captured value comes from. Give exactly one source.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Capture {
    /// Regular expression on the body (or, with `header`, `cookie` or `url`, on that
    /// value); the first group (or the whole match).
    #[serde(default)]
    pub regex: Option<String>,
    /// CSS selector on an HTML body, e.g. `input[name=csrfmiddlewaretoken]`.
    #[serde(default)]
    pub css: Option<String>,
    /// With `css`: the attribute to read (default: the element's text). `value` reads as
    /// a browser would send it: `""` for an input without one, an option's text when it
    /// has none.
    #[serde(default)]
    pub attr: Option<String>,
    /// With `regex`, `css` or `jsonpath`: capture every match, as a list (default: the
    /// first). Zero matches give an empty list, not an error.
    #[serde(default)]
    pub all: bool,
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
        let on_value = self.header.is_some() || self.cookie.is_some() || self.url;
        [
            self.regex.is_some() && !on_value,
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

/// The captured value: a string, or with `all` a list of strings.
pub(super) fn capture_value(c: &Capture, resp: &Response, jar: &Jar) -> Result<Value, String> {
    let one = |mut found: Vec<String>, none: String| -> Result<Value, String> {
        if c.all {
            Ok(Value::from(found))
        } else if found.is_empty() {
            Err(none)
        } else {
            Ok(Value::String(found.swap_remove(0)))
        }
    };
    let on_value = c.header.is_some() || c.cookie.is_some() || c.url;
    if let Some(pattern) = c.regex.as_ref().filter(|_| !on_value) {
        let found = regex_all(pattern, &resp.text())?;
        return one(found, format!("regex /{pattern}/ matched nothing"));
    }
    if let Some(css) = &c.css {
        let doc = scraper::Html::parse_document(&resp.text());
        let sel = scraper::Selector::parse(css)
            .map_err(|e| format!("invalid CSS selector `{css}`: {e}"))?;
        let mut found = Vec::new();
        for el in doc.select(&sel) {
            match &c.attr {
                Some(attr) => match el.value().attr(attr) {
                    Some(v) => found.push(v.to_string()),
                    None if attr == "value" => found.push(match el.value().name() {
                        "option" => super::form::option_value(el),
                        _ => String::new(),
                    }),
                    None if !c.all => return Err(format!("`{css}` has no attribute `{attr}`")),
                    None => {}
                },
                None => found.push(el.text().collect::<String>().trim().to_string()),
            }
            if !c.all {
                break;
            }
        }
        return one(found, format!("no element matches `{css}`"));
    }
    if let Some(path) = &c.jsonpath {
        let doc: Value =
            serde_json::from_slice(&resp.body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let p = serde_json_path::JsonPath::parse(path)
            .map_err(|e| format!("invalid JSONPath `{path}`: {e}"))?;
        let found = p
            .query(&doc)
            .all()
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        return one(found, format!("JSONPath `{path}` found nothing"));
    }
    let text = if let Some(h) = &c.header {
        resp.headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| format!("no `{h}` header"))?
    } else if let Some(name) = &c.cookie {
        http::cookie(jar, &resp.url, name).ok_or_else(|| format!("no cookie `{name}`"))?
    } else if c.status {
        resp.status.to_string()
    } else if c.url {
        resp.url.clone()
    } else {
        return Err("a capture needs a source".into());
    };
    if let Some(pattern) = &c.regex {
        let found = regex_all(pattern, &text)?;
        return one(
            found,
            format!("regex /{pattern}/ matched nothing in `{text}`"),
        );
    }
    Ok(Value::String(text))
}

/// Every match of `pattern` in `text`: its first group, or the whole match.
fn regex_all(pattern: &str, text: &str) -> Result<Vec<String>, String> {
    let re = regex::Regex::new(pattern).map_err(|e| format!("invalid regex: {e}"))?;
    Ok(re
        .captures_iter(text)
        .map(|caps| {
            caps.get(1)
                .or_else(|| caps.get(0))
                .map(|m| m.as_str().to_string())
                .unwrap_or_default()
        })
        .collect())
}

pub(super) fn jsonpath_first(doc: &Value, path: &str) -> Result<Option<Value>, String> {
    let p = serde_json_path::JsonPath::parse(path)
        .map_err(|e| format!("invalid JSONPath `{path}`: {e}"))?;
    Ok(p.query(doc).first().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(body: &str) -> Response {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("location", "/admin/pages/42/edit/".parse().unwrap());
        Response {
            status: 302,
            headers,
            url: "https://h/".into(),
            body: body.as_bytes().to_vec(),
            duration: std::time::Duration::ZERO,
        }
    }

    fn css(sel: &str, attr: Option<&str>, all: bool) -> Capture {
        Capture {
            css: Some(sel.into()),
            attr: attr.map(str::to_string),
            all,
            ..Capture::default()
        }
    }

    #[test]
    fn values_read_as_a_browser_sends_them_and_all_takes_every_match() {
        let r = page(
            r#"<input name="a"><input name="b" value="x"><select><option>Text</option></select>"#,
        );
        let jar = Jar::default();
        let get = |c: &Capture| capture_value(c, &r, &jar);
        assert_eq!(
            get(&css("input[name=a]", Some("value"), false)),
            Ok(json!(""))
        );
        assert_eq!(get(&css("option", Some("value"), false)), Ok(json!("Text")));
        assert_eq!(
            get(&css("input", Some("value"), true)),
            Ok(json!(["", "x"]))
        );
        assert_eq!(get(&css("textarea", None, true)), Ok(json!([])));
        assert_eq!(
            get(&css("textarea", None, false)),
            Err("no element matches `textarea`".into())
        );
        assert_eq!(
            get(&css("input", Some("title"), false)),
            Err("`input` has no attribute `title`".into())
        );
        let id = Capture {
            header: Some("location".into()),
            regex: Some(r"/pages/(\d+)/".into()),
            ..Capture::default()
        };
        assert_eq!(id.source_count(), 1);
        assert_eq!(get(&id), Ok(json!("42")));
    }
}
