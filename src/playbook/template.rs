//! Templating: minijinja with strict undefined.
//!
//! A string that is exactly one expression (`"{{ vars.replicas }}"`) keeps the native
//! type of its value (a number stays a number, a list a list), so typed settings can be
//! templated; any other template renders to a string.

use std::fmt;
use std::sync::{Arc, LazyLock};

use minijinja::value::{Object, ObjectRepr};
use minijinja::{Environment, UndefinedBehavior, Value};
use regex::Regex;
use serde_json::Value as Json;

/// Names a template may use besides the context roots: minijinja's global functions.
pub(crate) const GLOBAL_FUNCTIONS: &[&str] = &["range", "dict", "namespace", "debug", "loop"];

pub(crate) fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

static SINGLE_EXPR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*\{\{-?(?P<expr>(?s:.)*?)-?\}\}\s*$").unwrap());

/// The expression inside `{{ ... }}` when `text` is exactly one expression.
fn single_expression(text: &str) -> Option<&str> {
    let caps = SINGLE_EXPR.captures(text)?;
    let expr = caps.name("expr")?.as_str();
    (!expr.contains("{{") && !expr.contains("}}")).then_some(expr)
}

/// A template error with the field it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RenderError {
    /// Field path relative to the rendered value (`bucket`, `requests[0].url`).
    pub path: String,
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The shared template environment.
pub(crate) struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub(crate) fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("userinfo", userinfo);
        Self { env }
    }

    /// Every variable path a template reads (`steps.backup.outputs.path`), or the syntax error.
    pub(crate) fn references(&self, text: &str) -> Result<Vec<String>, String> {
        let tmpl = self.env.template_from_str(text).map_err(|e| describe(&e))?;
        let mut refs: Vec<String> = tmpl.undeclared_variables(true).into_iter().collect();
        refs.sort();
        Ok(refs)
    }

    /// Every variable path a `when` expression reads.
    pub(crate) fn expression_references(&self, expr: &str) -> Result<Vec<String>, String> {
        let expr = self
            .env
            .compile_expression(strip_braces(expr))
            .map_err(|e| describe(&e))?;
        let mut refs: Vec<String> = expr.undeclared_variables(true).into_iter().collect();
        refs.sort();
        Ok(refs)
    }

    /// Renders every template string inside `value`. A string that reads a root the
    /// context defers (`captures`, which `http.smoke` fills as it runs) is kept exactly as
    /// written: the kind renders it once, with every value in place, so nothing already
    /// substituted (a secret with `{{` in it) is ever parsed as a template again.
    pub(crate) fn render_json(&self, value: &Json, ctx: &Value) -> Result<Json, RenderError> {
        self.render_at(value, ctx, String::new(), &|_| true)
    }

    /// Paths (`requests[2].form.csrfmiddlewaretoken`) of the strings in `value` that
    /// [`render_json`](Self::render_json) keeps for the kind to render.
    pub(crate) fn deferred_paths(&self, value: &Json, ctx: &Value) -> Vec<String> {
        let mut found = Vec::new();
        walk_strings(value, String::new(), &mut |path, text| {
            if self.reads_deferred(text, ctx) {
                found.push(path);
            }
        });
        found
    }

    /// Renders only the strings at `paths` (as [`deferred_paths`](Self::deferred_paths)
    /// named them), in `value` found at `at`; everything else is data and stays as it is.
    pub(crate) fn render_paths(
        &self,
        value: &Json,
        ctx: &Value,
        at: &str,
        paths: &[String],
    ) -> Result<Json, RenderError> {
        self.render_at(value, ctx, at.to_string(), &|p| {
            paths.iter().any(|k| k == p)
        })
    }

    fn reads_deferred(&self, text: &str, ctx: &Value) -> bool {
        is_template(text)
            && self.references(text).is_ok_and(|refs| {
                refs.iter().any(|r| {
                    let root = r.split('.').next().unwrap_or(r);
                    ctx.get_attr(root)
                        .is_ok_and(|v| v.downcast_object_ref::<Deferred>().is_some())
                })
            })
    }

    fn render_at(
        &self,
        value: &Json,
        ctx: &Value,
        path: String,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Json, RenderError> {
        Ok(match value {
            Json::String(text) if is_template(text) && wanted(&path) => {
                if self.reads_deferred(text, ctx) {
                    return Ok(value.clone());
                }
                self.render_str(text, ctx)
                    .map_err(|message| RenderError { path, message })?
            }
            Json::Array(items) => Json::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.render_at(v, ctx, format!("{path}[{i}]"), wanted))
                    .collect::<Result<_, _>>()?,
            ),
            Json::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            self.render_at(v, ctx, crate::playbook::spans::join(&path, k), wanted)?,
                        ))
                    })
                    .collect::<Result<_, RenderError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Renders one string; a lone `{{ expr }}` keeps its value's type.
    pub(crate) fn render_str(&self, text: &str, ctx: &Value) -> Result<Json, String> {
        if let Some(expr) = single_expression(text) {
            let compiled = self
                .env
                .compile_expression(expr)
                .map_err(|e| describe(&e))?;
            let value = compiled.eval(ctx.clone()).map_err(|e| describe(&e))?;
            if value.is_undefined() {
                return Err(format!("undefined value: `{}` is undefined", expr.trim()));
            }
            return Ok(to_json(&value));
        }
        let rendered = self
            .env
            .render_str(text, ctx.clone())
            .map_err(|e| describe(&e))?;
        Ok(Json::String(rendered))
    }

    /// Evaluates a `when` condition (an expression, optionally wrapped in `{{ }}`).
    pub(crate) fn condition(&self, expr: &str, ctx: &Value) -> Result<bool, String> {
        let compiled = self
            .env
            .compile_expression(strip_braces(expr))
            .map_err(|e| describe(&e))?;
        let value = compiled.eval(ctx.clone()).map_err(|e| describe(&e))?;
        if value.downcast_object_ref::<Placeholder>().is_some() {
            return Err("depends on values known only at run time".into());
        }
        Ok(value.is_true())
    }
}

/// Calls `f` with the path (`requests[0].url`) and text of every string in `value`.
pub(crate) fn walk_strings<'a>(value: &'a Json, path: String, f: &mut dyn FnMut(String, &'a str)) {
    match value {
        Json::String(text) => f(path, text),
        Json::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk_strings(v, format!("{path}[{i}]"), f);
            }
        }
        Json::Object(map) => {
            for (k, v) in map {
                walk_strings(v, crate::playbook::spans::join(&path, k), f);
            }
        }
        _ => {}
    }
}

/// `{{ secrets.pw | userinfo }}`: a value encoded for a URL's user or password part.
/// minijinja's `urlencode` leaves `/` (and `:`, `@` in some forms) as they are, which
/// breaks `postgresql://app:{{ pw }}@host/db` for a password holding them.
fn userinfo(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn strip_braces(expr: &str) -> &str {
    single_expression(expr).unwrap_or(expr)
}

/// minijinja's message plus its detail, without its debug dump.
fn describe(err: &minijinja::Error) -> String {
    let mut text = match err.kind() {
        minijinja::ErrorKind::UndefinedError => "undefined value".to_string(),
        _ => err.kind().to_string(),
    };
    if let Some(detail) = err.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    text
}

/// Any serializable value as a template value.
pub(crate) fn to_value<T: serde::Serialize>(value: T) -> Value {
    Value::from(minijinja::value::Serde(value))
}

/// Converts a template value back to JSON; placeholders become their `<path>` text.
pub(crate) fn to_json(value: &Value) -> Json {
    if let Some(p) = value.downcast_object_ref::<Placeholder>() {
        return Json::String(p.to_string());
    }
    if let Some(d) = value.downcast_object_ref::<Deferred>() {
        return Json::String(format!("{{{{ {} }}}}", d.0));
    }
    serde_json::to_value(value).unwrap_or(Json::Null)
}

/// A reference a kind resolves itself while it runs (`{{ captures.csrf }}` inside
/// `http.smoke`): rendering leaves the expression in place for the kind to render later.
#[derive(Debug, Clone)]
pub(crate) struct Deferred(pub Arc<str>);

impl Deferred {
    pub(crate) fn value(path: impl Into<Arc<str>>) -> Value {
        Value::from_object(Deferred(path.into()))
    }
}

impl Object for Deferred {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(Deferred::value(format!("{}.{}", self.0, key)))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{{ {} }}}}", self.0)
    }
}

/// A value known only at run time, shown as `<steps.backup.outputs.path>` in previews.
/// Attribute access yields a deeper placeholder, so `steps.x.outputs.json.a.b` previews too.
#[derive(Debug, Clone)]
pub(crate) struct Placeholder(pub Arc<str>);

impl Placeholder {
    pub(crate) fn value(path: impl Into<Arc<str>>) -> Value {
        Value::from_object(Placeholder(path.into()))
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

impl Object for Placeholder {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(Placeholder::value(format!("{}.{}", self.0, key)))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        to_value(json!({"vars": {"n": 3, "project": "acme", "list": ["a", "b"]}}))
    }

    #[test]
    fn single_expression_keeps_native_type() {
        let t = Templates::new();
        assert_eq!(t.render_str("{{ vars.n }}", &ctx()).unwrap(), json!(3));
        assert_eq!(
            t.render_str(" {{ vars.list }} ", &ctx()).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            t.render_str("{{ vars.project }}-x", &ctx()).unwrap(),
            json!("acme-x")
        );
        assert_eq!(
            t.render_str("{{ vars.n }}{{ vars.n }}", &ctx()).unwrap(),
            json!("33")
        );
    }

    #[test]
    fn strict_undefined_is_an_error() {
        let t = Templates::new();
        let err = t.render_str("{{ vars.nope }}", &ctx()).unwrap_err();
        assert!(err.starts_with("undefined value"), "{err}");
    }

    #[test]
    fn references_are_nested_paths() {
        let t = Templates::new();
        let refs = t
            .references("{{ steps.backup.outputs.path }}/{{ vars.project }}")
            .unwrap();
        assert_eq!(refs, vec!["steps.backup.outputs.path", "vars.project"]);
        assert!(t.references("{{ oops").is_err());
    }

    #[test]
    fn placeholders_render_their_path() {
        let t = Templates::new();
        let c = Value::from_pairs([("x", Placeholder::value("steps.x.outputs.json"))]);
        assert_eq!(
            t.render_str("{{ x.a.b }}!", &c).unwrap(),
            json!("<steps.x.outputs.json.a.b>!")
        );
        assert_eq!(
            t.render_str("{{ x.a }}", &c).unwrap(),
            json!("<steps.x.outputs.json.a>")
        );
    }

    #[test]
    fn values_are_substituted_once_whatever_they_contain() {
        let t = Templates::new();
        let pw = "Pw{{x}}9{#y#}{%z%}%\"q'é";
        let engine = Value::from_pairs([
            ("secrets", to_value(json!({ "pw": pw }))),
            ("captures", Deferred::value("captures")),
        ]);
        let with = json!({ "form": {
            "password": "{{ secrets.pw }}",
            "token": "{{ captures.csrf }}",
            "both": "{{ secrets.pw }}/{{ captures.csrf }}",
        }});
        // The engine fills what it knows and keeps what reads a deferred root as written.
        let rendered = t.render_json(&with, &engine).unwrap();
        assert_eq!(rendered["form"]["password"], pw);
        assert_eq!(rendered["form"]["token"], "{{ captures.csrf }}");
        assert_eq!(
            rendered["form"]["both"],
            "{{ secrets.pw }}/{{ captures.csrf }}"
        );
        let mut paths = t.deferred_paths(&with, &engine);
        paths.sort();
        assert_eq!(paths, ["form.both", "form.token"]);
        // The kind renders only those, once, with a captured value that looks like a template.
        let kind = Value::from_pairs([
            ("secrets", to_value(json!({ "pw": pw }))),
            ("captures", to_value(json!({ "csrf": "{{tok}}" }))),
        ]);
        let done = t.render_paths(&rendered, &kind, "", &paths).unwrap();
        assert_eq!(done["form"]["password"], pw, "never parsed again");
        assert_eq!(done["form"]["token"], "{{tok}}");
        assert_eq!(done["form"]["both"], format!("{pw}/{{{{tok}}}}"));
    }

    #[test]
    fn userinfo_encodes_what_a_url_user_or_password_cannot_hold() {
        let t = Templates::new();
        let c = to_value(json!({ "pw": "p/w:@ #%é+" }));
        let url = t
            .render_str("postgresql://app:{{ pw | userinfo }}@db/x", &c)
            .unwrap();
        assert_eq!(
            url,
            json!("postgresql://app:p%2Fw%3A%40%20%23%25%C3%A9%2B@db/x")
        );
        let parsed = url::Url::parse(url.as_str().unwrap()).unwrap();
        assert_eq!(parsed.host_str(), Some("db"));
        assert_eq!(parsed.path(), "/x");
    }
}
