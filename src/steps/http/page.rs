//! Why a page refused: its own words (the `<title>`, error lists, field errors, or else
//! its visible text), and the whole response saved for reading later.

use std::path::{Path, PathBuf};

use scraper::{ElementRef, Html, Node, Selector};

use crate::secrets::Redactor;
use crate::services::http::Response;

/// What most sites mark errors with: Django's `errorlist`, Wagtail's `error-message` and
/// message list, and ARIA alerts.
const ERROR_SELECTORS: &str =
    ".errorlist li, .error-message, .messages .error, .help-critical, [role=alert]";

/// Up to this many characters of visible text when a page names no error.
const TEXT_LIMIT: usize = 300;

/// A short account of a response in the page's own words.
pub(super) fn explain(resp: &Response) -> String {
    let ct = resp
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = resp.text();
    let looks_html = ct.contains("html") || text.trim_start().starts_with('<');
    if !looks_html {
        return format!("body: {}", cut(&collapse(&text), TEXT_LIMIT));
    }
    let doc = Html::parse_document(&text);
    let mut parts = Vec::new();
    let title = first_text(&doc, "title");
    if !title.is_empty() {
        parts.push(format!("page title “{title}”"));
    }
    let errors = errors(&doc);
    if errors.is_empty() {
        let visible = visible_text(&doc);
        let visible = visible
            .strip_prefix(title.as_str())
            .unwrap_or(&visible)
            .trim();
        if !visible.is_empty() {
            parts.push(format!("text: {}", cut(visible, TEXT_LIMIT)));
        }
    } else {
        parts.push(format!("errors: {}", errors.join("; ")));
    }
    if parts.is_empty() {
        "an empty page".into()
    } else {
        parts.join("; ")
    }
}

fn first_text(doc: &Html, css: &str) -> String {
    let sel = Selector::parse(css).expect("a valid selector");
    doc.select(&sel)
        .next()
        .map(|e| collapse(&e.text().collect::<String>()))
        .unwrap_or_default()
}

/// Error texts, each with the field it belongs to when the page says (`title: This field
/// is required.`), without repeats and without `<template>` placeholders.
fn errors(doc: &Html) -> Vec<String> {
    let sel = Selector::parse(ERROR_SELECTORS).expect("a valid selector");
    let mut out: Vec<String> = Vec::new();
    for e in doc.select(&sel) {
        if e.ancestors()
            .filter_map(ElementRef::wrap)
            .any(|a| a.value().name() == "template")
        {
            continue;
        }
        // The words, not the controls inside them ("Go to the first error").
        let text: String =
            e.descendants()
                .filter_map(|n| match n.value() {
                    Node::Text(t)
                        if !n.ancestors().filter_map(ElementRef::wrap).any(|a| {
                            matches!(a.value().name(), "button" | "script" | "template")
                        }) =>
                    {
                        Some(&**t)
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(" ");
        let text = collapse(&text);
        if text.is_empty() {
            continue;
        }
        let field = e
            .ancestors()
            .filter_map(ElementRef::wrap)
            .find_map(|a| a.value().attr("data-contentpath"));
        let line = match field {
            Some(f) if !f.is_empty() => format!("{f}: {text}"),
            _ => text,
        };
        if !out.contains(&line) {
            out.push(line);
        }
        if out.len() == 10 {
            break;
        }
    }
    out
}

/// The text a reader sees: no scripts, styles, templates or inline SVG.
fn visible_text(doc: &Html) -> String {
    let mut out = String::new();
    for node in doc.root_element().descendants() {
        let Node::Text(t) = node.value() else {
            continue;
        };
        let hidden = node.ancestors().filter_map(ElementRef::wrap).any(|a| {
            matches!(
                a.value().name(),
                "script" | "style" | "template" | "svg" | "noscript" | "head"
            )
        });
        if !hidden {
            out.push_str(t);
            out.push(' ');
        }
    }
    collapse(&out)
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cut(text: &str, limit: usize) -> String {
    let c: String = text.chars().take(limit).collect();
    if c.len() < text.len() {
        format!("{c}…")
    } else {
        c
    }
}

/// Saves the whole response (status, headers, body), redacted, as
/// `dir/NN-<request>.txt`, and returns its path.
pub(super) fn save(
    dir: &Path,
    index: usize,
    name: &str,
    method: &str,
    url: &str,
    resp: &Response,
    redactor: &Redactor,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let path = dir.join(format!("{:02}-{}.txt", index + 1, cut(&slug, 60)));
    let mut text = format!("{method} {url}\n\nHTTP {}\n", resp.status);
    for (k, v) in &resp.headers {
        text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("<binary>")));
    }
    text.push('\n');
    text.push_str(&resp.text());
    crate::util::fs::write_atomic(&path, redactor.redact(&text).as_bytes(), false)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(status: u16, body: &str) -> Response {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("content-type", "text/html; charset=utf-8".parse().unwrap());
        Response {
            status,
            headers,
            url: "https://h/".into(),
            body: body.as_bytes().to_vec(),
            duration: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn django_csrf_failure_is_told_by_its_visible_text() {
        let r = html(
            403,
            "<html><head><title>403 Forbidden</title><style>h1{}</style></head><body><h1>Forbidden <span>(403)</span></h1><p>CSRF verification failed. Request aborted.</p></body></html>",
        );
        assert_eq!(
            explain(&r),
            "page title “403 Forbidden”; text: Forbidden (403) CSRF verification failed. Request aborted."
        );
    }

    #[test]
    fn wagtail_validation_errors_name_their_fields_once() {
        let r = html(
            200,
            r#"<title>New: Content page - Wagtail</title>
            <ul class="messages"><li class="error">The page could not be created due to validation errors.</li>
            <template><li class="error"><span></span></li></template></ul>
            <div data-contentpath="title"><p class="error-message"> This field is required. </p></div>
            <div data-contentpath="slug"><p class="error-message">This slug is already in use</p></div>
            <div data-contentpath="slug"><p class="error-message">This slug is already in use</p></div>"#,
        );
        assert_eq!(
            explain(&r),
            "page title “New: Content page - Wagtail”; errors: The page could not be created due to validation errors.; title: This field is required.; slug: This slug is already in use"
        );
    }
}
