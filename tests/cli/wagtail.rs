//! `http.smoke` against a real Wagtail 8 site (`tests/wagtail-site`, gunicorn, basic auth)
//! on a restored copy of a seeded production database: the reference playbook's smoke
//! step as shipped, a refusal told in the page's own words, and secrets full of template
//! syntax substituted exactly once.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::pg::Cluster;
use crate::support::wagtail::{
    ADMIN_PASSWORD, ADMIN_USER, BASIC_PASSWORD, BASIC_USER, Site, production,
};
use crate::support::{Out, drrun, journal, root, run_cmd};

/// A restored DR copy of production, served.
struct Dr {
    pg: Cluster,
    site: Site,
    _media: tempfile::TempDir,
}

fn dr() -> Dr {
    let prod = production();
    let pg = Cluster::start();
    prod.restore_into(&pg, "acme_dr");
    let media = tempfile::tempdir().unwrap();
    prod.copy_media(media.path());
    let site = Site::serve(&pg.url("acme_dr"), media.path());
    Dr {
        pg,
        site,
        _media: media,
    }
}

/// The shipped reference playbook's `site`, `smoke` and `cleanup` steps, exactly as
/// written, with its vars; only the secrets come from the environment here, and the
/// steps before `site` (the restore, the deploy) are the test's own.
fn reference_steps(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("playbooks/caktus-wagtail.yaml")).unwrap();
    let shipped: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut steps = serde_json::Map::new();
    for id in ["site", "smoke", "cleanup"] {
        let mut step = shipped["steps"][id].clone();
        assert!(step.is_object(), "the reference playbook has a `{id}` step");
        let needs: Vec<Value> = step["needs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| ["site", "smoke"].contains(&n.as_str().unwrap()))
            .cloned()
            .collect();
        step["needs"] = Value::Array(needs);
        steps.insert(id.into(), step);
    }
    // `smoke` needs `deploy` in the shipped file; here the site is already up.
    steps["smoke"]["needs"] = json!(["site"]);
    let playbook = json!({
        "version": 1,
        "name": "wagtail-smoke",
        "vars": shipped["vars"],
        "secrets": {
            "db_url": { "env": "DR_DATABASE_URL" },
            "admin_password": { "env": "DR_ADMIN_PASSWORD" },
            "basic_auth_password": { "env": "DR_BASIC_AUTH_PASSWORD" },
        },
        "steps": steps,
    });
    let path = dir.join("reference.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(&playbook).unwrap()).unwrap();
    path
}

fn run(dir: &Path, dr: &Dr, pb: &Path, vars: &[&str]) -> Out {
    let mut cmd = drrun();
    cmd.current_dir(dir)
        .env("DR_DATABASE_URL", dr.pg.url("acme_dr"))
        .env("DR_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("DR_BASIC_AUTH_PASSWORD", BASIC_PASSWORD)
        .arg(pb)
        .args(["-e", "project=acme", "-e"])
        .arg(format!("dr_url={}", dr.site.base))
        .arg("--state-dir")
        .arg(dir.join("state"));
    for v in vars {
        cmd.args(["-e", v]);
    }
    run_cmd(&mut cmd)
}

/// Every file under `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else if let Ok(t) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&t));
        }
    }
    out
}

/// The password in every form it could leak in: as is, URL-encoded (form and path
/// style), JSON-escaped, and base64 with the user name (an Authorization header).
fn leaked(text: &str) -> Vec<&'static str> {
    use base64::Engine as _;
    let forms = [
        ("plain", ADMIN_PASSWORD.to_string()),
        (
            "urlencoded",
            url::form_urlencoded::byte_serialize(ADMIN_PASSWORD.as_bytes()).collect(),
        ),
        ("json", serde_json::to_string(ADMIN_PASSWORD).unwrap()),
        (
            "basic",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{BASIC_USER}:{BASIC_PASSWORD}")),
        ),
        ("basic password", BASIC_PASSWORD.to_string()),
    ];
    forms
        .into_iter()
        .filter(|(_, f)| text.contains(f.trim_matches('"')))
        .map(|(name, _)| name)
        .collect()
}

fn count(pg: &Cluster, sql: &str) -> i64 {
    pg.sql("acme_dr", sql).trim().parse().unwrap()
}

#[test]
fn the_reference_smoke_step_publishes_a_page_and_uploads_an_image_on_real_wagtail() {
    let dr = dr();
    let dir = tempfile::tempdir().unwrap();
    let pb = reference_steps(dir.path());
    let images_before = count(&dr.pg, "SELECT count(*) FROM wagtailimages_image");

    let out = run(dir.path(), &dr, &pb, &[]);
    assert_eq!(
        out.code,
        0,
        "{}\n{}\n{}",
        out.stdout,
        out.stderr,
        dr.site.logs()
    );
    let records = journal(&dir.path().join("state"));
    let smoke = records
        .iter()
        .find(|r| r["type"] == "step_succeeded" && r["step"] == "smoke")
        .expect("smoke succeeded");
    let captures = &smoke["outputs"]["captures"];
    let page_id: i64 = captures["page_id"].as_str().unwrap().parse().unwrap();
    let run_id = records[0]["run_id"].as_str().unwrap().to_string();

    // A new published page under the home page, live on the DR site with its title.
    let row = dr.pg.sql(
        "acme_dr",
        &format!(
            "SELECT p.title, p.live, parent.id = s.root_page_id FROM wagtailcore_page p \
             JOIN wagtailcore_page parent ON p.path LIKE parent.path || '____' AND parent.depth = p.depth - 1 \
             JOIN wagtailcore_site s ON s.is_default_site WHERE p.id = {page_id}"
        ),
    );
    assert_eq!(row.trim(), format!("DR drill {run_id}|t|t"));
    // A new image; the restored image and document were served from the assets copy.
    assert_eq!(
        count(&dr.pg, "SELECT count(*) FROM wagtailimages_image"),
        images_before + 1
    );
    assert!(
        captures["image"]
            .as_str()
            .unwrap()
            .starts_with("/media/images/team")
    );
    assert!(
        captures["document"]
            .as_str()
            .unwrap()
            .starts_with("/documents/")
    );
    // The cleanup is off unless asked for.
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "step_skipped" && r["step"] == "cleanup"),
        "cleanup is skipped: {records:?}"
    );

    // The admin password is full of template syntax: it logged in, so it was sent as
    // written, and it reached nothing drrun wrote.
    let written = all_text(&dir.path().join("state")) + &out.stdout + &out.stderr;
    assert_eq!(leaked(&written), Vec::<&str>::new(), "secrets leaked");

    // With cleanup on, a second drill deletes what it created.
    let out = run(dir.path(), &dr, &pb, &["cleanup=yes"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, dr.site.logs());
    assert_eq!(
        count(&dr.pg, "SELECT count(*) FROM wagtailimages_image"),
        images_before + 1,
        "the second drill's image is gone"
    );
    assert_eq!(
        count(
            &dr.pg,
            "SELECT count(*) FROM wagtailcore_page WHERE title LIKE 'DR drill %'"
        ),
        1,
        "the second drill's page is gone, the first one's stays"
    );
}

#[test]
fn a_refusal_is_told_in_the_page_s_own_words_and_the_response_is_kept() {
    let dr = dr();
    let dir = tempfile::tempdir().unwrap();
    let home = dr.pg.sql(
        "acme_dr",
        "SELECT root_page_id FROM wagtailcore_site WHERE is_default_site",
    );
    let pb = dir.path().join("refused.yaml");
    std::fs::write(
        &pb,
        format!(
            r#"
version: 1
name: refused
vars: {{ dr_url: "", project: "" }}
secrets:
  admin_password: {{ env: DR_ADMIN_PASSWORD }}
  basic_auth_password: {{ env: DR_BASIC_AUTH_PASSWORD }}
steps:
  smoke:
    kind: http.smoke
    with:
      base_url: "{{{{ vars.dr_url }}}}"
      basic_auth: {{ username: {BASIC_USER}, password: "{{{{ secrets.basic_auth_password }}}}" }}
      continue_on_failure: true
      requests:
        - name: login page
          url: /admin/login/
        - name: log in
          submit:
            form: form.login-form
            fields: {{ username: {ADMIN_USER}, password: "{{{{ secrets.admin_password }}}}" }}
          assert: {{ status: 302 }}
        - name: new page form
          url: /admin/pages/add/home/contentpage/{home}/
        - name: a page without a title
          submit: {{ form: form#page-edit-form, fields: {{ title: "", body-count: "0" }} }}
          assert: {{ status: 302 }}
        - name: forged token
          submit:
            form: form#page-edit-form
            from: new page form
            fields: {{ csrfmiddlewaretoken: forged, title: x, body-count: "0" }}
          assert: {{ status: 302 }}
"#,
            home = home.trim()
        ),
    )
    .unwrap();
    let out = run(dir.path(), &dr, &pb, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    // Wagtail's own words, with the field they are about, said once.
    let wagtail = "errors: The page could not be created due to validation errors.; title: This field is required.";
    assert_eq!(all.matches(wagtail).count(), 1, "{all}");
    assert!(
        all.contains("page title “New: Content page - Wagtail”"),
        "{all}"
    );
    // Django's CSRF refusal, by its visible text.
    assert!(
        all.contains("status 403: page title “403 Forbidden”; text: Forbidden (403) CSRF verification failed."),
        "{all}"
    );
    // The whole response is kept in the run directory, named in the message.
    let re =
        regex::Regex::new(r"the full response is in (\S+04-a-page-without-a-title\.txt)").unwrap();
    let saved = re.captures(&all).unwrap_or_else(|| panic!("{all}"))[1].to_string();
    let saved = std::fs::read_to_string(saved).unwrap();
    assert!(saved.starts_with("POST "), "{saved}");
    assert!(saved.contains("HTTP 200"));
    assert!(saved.contains("The page could not be created due to validation errors."));
    assert_eq!(
        leaked(&all_text(&dir.path().join("state"))),
        Vec::<&str>::new()
    );
}
