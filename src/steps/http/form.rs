//! Submitting a form from a fetched page as a browser would: its successful controls
//! (HTML's "constructing the entry list"), the pressed button, then the playbook's
//! overrides; the action, method and encoding from the form.

use scraper::{ElementRef, Html, Selector};

use super::settings::{FilePart, FormSubmit};

/// A form ready to send.
#[derive(Debug)]
pub(super) struct PreparedForm {
    /// Absolute URL (for GET, with the entries as its query).
    pub url: String,
    pub method: String,
    pub multipart: bool,
    /// Name/value pairs in document order; a name may repeat (checkboxes, multi-selects).
    pub entries: Vec<(String, String)>,
    pub files: Vec<FilePart>,
}

/// The form `submit.form` selects on the page at `page_url`, filled as `submit` says.
pub(super) fn prepare(
    submit: &FormSubmit,
    page: &str,
    page_url: &str,
) -> Result<PreparedForm, String> {
    let doc = Html::parse_document(page);
    let sel = selector(&submit.form)?;
    let Some(form) = doc.select(&sel).find(|e| !in_template(*e)) else {
        let count = doc.select(&selector("form")?).count();
        return Err(format!(
            "no form matches `{}` on {page_url} (the page has {count} form{})",
            submit.form,
            if count == 1 { "" } else { "s" }
        ));
    };
    if form.value().name() != "form" {
        return Err(format!(
            "`{}` matches a <{}>, not a <form>",
            submit.form,
            form.value().name()
        ));
    }
    let button = match &submit.button {
        Some(b) => Some(
            form.select(&selector(b)?)
                .next()
                .ok_or_else(|| format!("no button matches `{b}` in the form `{}`", submit.form))?,
        ),
        None => None,
    };
    let mut entries = controls(&doc, form, button);
    for name in &submit.remove {
        entries.retain(|(n, _)| n != name);
    }
    for (name, value) in &submit.fields {
        match entries.iter().position(|(n, _)| n == name) {
            Some(first) => {
                entries[first].1.clone_from(value);
                let mut i = 0;
                entries.retain(|(n, _)| {
                    i += 1;
                    i - 1 == first || n != name
                });
            }
            None => entries.push((name.clone(), value.clone())),
        }
    }
    let attr = |name: &str, over: &str| {
        button
            .and_then(|b| b.value().attr(over))
            .or_else(|| form.value().attr(name))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let base = url::Url::parse(page_url).map_err(|e| format!("page URL {page_url}: {e}"))?;
    let mut url = match attr("action", "formaction") {
        Some(action) => base
            .join(action)
            .map_err(|e| format!("form action `{action}`: {e}"))?,
        None => base,
    };
    let method = attr("method", "formmethod")
        .unwrap_or("get")
        .to_ascii_uppercase();
    let multipart = !submit.files.is_empty()
        || attr("enctype", "formenctype")
            .is_some_and(|e| e.eq_ignore_ascii_case("multipart/form-data"));
    if method == "GET" {
        url.set_fragment(None);
        url.query_pairs_mut().clear().extend_pairs(&entries);
        entries.clear();
    }
    Ok(PreparedForm {
        url: url.to_string(),
        method,
        multipart,
        entries,
        files: submit.files.clone(),
    })
}

fn selector(css: &str) -> Result<Selector, String> {
    Selector::parse(css).map_err(|e| format!("invalid CSS selector `{css}`: {e}"))
}

fn in_template(e: ElementRef<'_>) -> bool {
    e.ancestors()
        .filter_map(ElementRef::wrap)
        .any(|a| a.value().name() == "template")
}

fn disabled(e: ElementRef<'_>) -> bool {
    e.value().attr("disabled").is_some()
        || e.ancestors()
            .filter_map(ElementRef::wrap)
            .any(|a| a.value().name() == "fieldset" && a.value().attr("disabled").is_some())
}

/// The successful controls of `form`, in document order: its own (not those that name
/// another form) and those elsewhere that name it with `form="id"`.
fn controls(
    doc: &Html,
    form: ElementRef<'_>,
    button: Option<ElementRef<'_>>,
) -> Vec<(String, String)> {
    let id = form.value().attr("id");
    let all = Selector::parse("input, select, textarea, button").expect("a valid selector");
    let mut out = Vec::new();
    for el in doc.select(&all) {
        let owner = match el.value().attr("form") {
            Some(f) => id == Some(f),
            None => el.ancestors().any(|a| a.id() == form.id()),
        };
        if !owner || in_template(el) || disabled(el) {
            continue;
        }
        let Some(name) = el.value().attr("name").filter(|n| !n.is_empty()) else {
            continue;
        };
        let v = el.value();
        let value_attr = || v.attr("value").unwrap_or("").to_string();
        match v.name() {
            "button" => {
                let kind = v.attr("type").unwrap_or("submit").to_ascii_lowercase();
                if kind == "submit" && button.is_some_and(|b| b.id() == el.id()) {
                    out.push((name.to_string(), value_attr()));
                }
            }
            "textarea" => {
                let text: String = el.text().collect();
                // As the HTML parser does: one newline right after <textarea> is dropped.
                let text = text.strip_prefix('\n').unwrap_or(&text);
                out.push((name.to_string(), text.replace("\r\n", "\n")));
            }
            "select" => {
                let options = Selector::parse("option").expect("a valid selector");
                let opts: Vec<ElementRef<'_>> = el
                    .select(&options)
                    .filter(|o| o.value().attr("disabled").is_none())
                    .collect();
                let selected: Vec<_> = opts
                    .iter()
                    .filter(|o| o.value().attr("selected").is_some())
                    .collect();
                let chosen: Vec<&ElementRef<'_>> =
                    if selected.is_empty() && v.attr("multiple").is_none() {
                        // A single select shows (and sends) its first option.
                        opts.iter().take(1).collect()
                    } else {
                        selected
                    };
                for o in chosen {
                    out.push((name.to_string(), option_value(*o)));
                }
            }
            _ => {
                let kind = v.attr("type").unwrap_or("text").to_ascii_lowercase();
                match kind.as_str() {
                    "submit" | "image" => {
                        if button.is_some_and(|b| b.id() == el.id()) {
                            out.push((name.to_string(), value_attr()));
                        }
                    }
                    "button" | "reset" | "file" => {}
                    "checkbox" | "radio" => {
                        if v.attr("checked").is_some() {
                            out.push((
                                name.to_string(),
                                v.attr("value").unwrap_or("on").to_string(),
                            ));
                        }
                    }
                    _ => out.push((name.to_string(), value_attr())),
                }
            }
        }
    }
    out
}

/// An option's value: its `value` attribute, or else its text.
pub(super) fn option_value(o: ElementRef<'_>) -> String {
    o.value().attr("value").map_or_else(
        || o.text().collect::<String>().trim().to_string(),
        str::to_string,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(form: &str) -> FormSubmit {
        FormSubmit {
            form: form.into(),
            from: None,
            button: None,
            fields: indexmap::IndexMap::new(),
            remove: Vec::new(),
            files: Vec::new(),
        }
    }

    const PAGE: &str = r#"<html><body>
      <form id="other" action="/search/"><input name="q" value="x"></form>
      <form id="edit" action="../save/" method="post">
        <input type="hidden" name="csrfmiddlewaretoken" value="tok">
        <input type="text" name="title">
        <input type="text" name="slug" value="s" disabled>
        <fieldset disabled><input name="locked" value="1"></fieldset>
        <textarea name="intro">
Hello</textarea>
        <select name="kind"><option value="a">A</option><option selected>B</option></select>
        <select name="tags" multiple><option value="1" selected>1</option><option value="2" selected>2</option></select>
        <select name="first"><option>one</option><option>two</option></select>
        <input type="checkbox" name="notify" checked>
        <input type="checkbox" name="spam">
        <input type="radio" name="r" value="x"><input type="radio" name="r" value="y" checked>
        <template><input name="body-__prefix__-value" value="t"></template>
        <button type="submit" name="action-draft" value="d">Save</button>
        <button type="submit" name="action-publish" value="action-publish">Publish</button>
        <input type="file" name="upload">
      </form>
      <input name="outside" value="o" form="edit">
    </body></html>"#;

    #[test]
    fn sends_the_successful_controls_as_a_browser_would() {
        let mut s = submit("form#edit");
        s.button = Some("[name=action-publish]".into());
        let f = prepare(&s, PAGE, "https://dr.example.com/admin/pages/3/add/").unwrap();
        assert_eq!(f.url, "https://dr.example.com/admin/pages/3/save/");
        assert_eq!(f.method, "POST");
        assert!(!f.multipart);
        let want: Vec<(String, String)> = [
            ("csrfmiddlewaretoken", "tok"),
            ("title", ""),
            ("intro", "Hello"),
            ("kind", "B"),
            ("tags", "1"),
            ("tags", "2"),
            ("first", "one"),
            ("notify", "on"),
            ("r", "y"),
            ("action-publish", "action-publish"),
            ("outside", "o"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
        .collect();
        assert_eq!(f.entries, want);
    }

    #[test]
    fn fields_replace_every_value_of_a_name_or_add_one_and_remove_drops() {
        let mut s = submit("#edit");
        s.fields.insert("tags".into(), "9".into());
        s.fields.insert("title".into(), "New".into());
        s.fields.insert("body-count".into(), "0".into());
        s.remove = vec!["notify".into()];
        let f = prepare(&s, PAGE, "https://h/a/b/").unwrap();
        let get = |n: &str| {
            f.entries
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("tags"), ["9"]);
        assert_eq!(get("title"), ["New"]);
        assert_eq!(get("body-count"), ["0"]);
        assert!(get("notify").is_empty());
    }

    #[test]
    fn a_get_form_puts_its_entries_in_the_query() {
        let f = prepare(&submit("form"), PAGE, "https://h/p/?old=1").unwrap();
        assert_eq!(f.url, "https://h/search/?q=x");
        assert_eq!(f.method, "GET");
        assert!(f.entries.is_empty());
    }

    #[test]
    fn a_missing_form_says_how_many_the_page_has() {
        let e = prepare(&submit("form#nope"), PAGE, "https://h/").unwrap_err();
        assert_eq!(
            e,
            "no form matches `form#nope` on https://h/ (the page has 2 forms)"
        );
    }
}
