//! The settings of one `http.smoke` request: what to send, how to submit a form, what to
//! capture and check. Every doc comment here is the user documentation (`drrun kinds`).

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::captures::Capture;
use super::checks::Asserts;
use crate::duration::HumanDuration;

/// A user name and password.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BasicAuth {
    pub username: String,
    /// Use a secret: `{{ secrets.basic_auth_password }}`.
    pub password: String,
}

/// One request. Give `url`, or `submit` to send a form from an earlier page.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Request {
    /// A name for reports and for `submit.from` (default: `METHOD url`).
    #[serde(default)]
    pub name: Option<String>,
    /// HTTP method (default GET; with `submit`, the form's method).
    #[serde(default)]
    pub method: Option<String>,
    /// URL relative to `base_url` (or absolute); with `submit`, the form's `action` unless
    /// given. Captures are available as `{{ captures.NAME }}`.
    #[serde(default)]
    pub url: Option<String>,
    /// Submit a form from an earlier response, as a browser would.
    #[serde(default)]
    pub submit: Option<FormSubmit>,
    /// Request headers. `Referer` and `Origin` are set as a browser would (the page the
    /// request follows, and the request's own origin); do not hard-code them.
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

impl Request {
    pub(crate) fn method(&self) -> String {
        self.method.as_deref().unwrap_or("GET").to_uppercase()
    }
}

/// Submitting a form found on an earlier response, as a browser would: every successful
/// control of the form is sent (hidden inputs such as the CSRF token, text inputs,
/// textareas, selected options, checked boxes and radios; not disabled controls, not
/// `<template>` content, not buttons other than the one pressed), then `fields` replace
/// or add values. The form's `action`, `method` and `enctype` are used unless the request
/// gives its own. Because the token is read from the form each time, a CSRF token
/// rotated at login needs no thought.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormSubmit {
    /// CSS selector of the form, e.g. `form#page-edit-form` (default `form`: the first).
    #[serde(default = "default_form")]
    pub form: String,
    /// The `name` of the earlier request whose response holds the form (default: the
    /// request just before).
    #[serde(default)]
    pub from: Option<String>,
    /// CSS selector (inside the form) of the submit button pressed; its `name=value` is
    /// sent, as a click would (e.g. `[name=action-publish]`).
    #[serde(default)]
    pub button: Option<String>,
    /// Fields to set: each replaces every value the form has under that name, or is added.
    #[serde(default, deserialize_with = "crate::util::string_map")]
    #[schemars(with = "IndexMap<String, String>")]
    pub fields: IndexMap<String, String>,
    /// Names of fields to leave out.
    #[serde(default, deserialize_with = "crate::util::one_or_many")]
    #[schemars(with = "crate::util::OneOrMany<String>")]
    pub remove: Vec<String>,
    /// Files for the form's file inputs (the form is sent as multipart).
    #[serde(default)]
    pub files: Vec<FilePart>,
}

fn default_form() -> String {
    "form".into()
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
    /// Generate the content instead: `png` (a small valid image, different each run) or
    /// `text`.
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
