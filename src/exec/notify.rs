//! Telling people (`notify:`): a heartbeat ping when a run starts and when it ends, a
//! Slack-compatible message and a JSON webhook when it ends. The URLs are rendered from
//! secrets when the run starts and never leave this module except as a host name. A
//! notification that cannot be delivered is a note: it never changes the drill's result.

use std::time::Duration;

use indexmap::IndexMap;
use serde_json::json;

use crate::events::{Event, Reporter};
use crate::outcome::RunStatus;
use crate::plan::Plan;
use crate::plan::context::SecretValues;
use crate::playbook::template::Templates;
use crate::report::model::DrillReport;
use crate::services::webhook::{Delivery, send, shown};

pub(super) struct Notifier {
    heartbeat: Option<String>,
    slack: Option<String>,
    webhook: Option<String>,
    timeout: Duration,
    attempts: u32,
}

/// What the end of a run says.
pub(super) struct Ending<'a> {
    pub status: RunStatus,
    pub exit_code: u8,
    pub report: Option<&'a DrillReport>,
    /// Where the report is (a path, or its object in the state store).
    pub report_at: String,
}

impl Notifier {
    /// The playbook's `notify:` with its secrets filled in (`None` when it has none).
    pub(super) fn new(plan: &Plan, secrets: &IndexMap<String, String>) -> Option<Self> {
        let n = &plan.notify;
        if n.heartbeat.is_none() && n.slack.is_none() && n.webhook.is_none() {
            return None;
        }
        let ctx = plan.preview_context_with(SecretValues::Real(secrets), &IndexMap::new());
        let templates = Templates::new();
        let render = |t: &Option<String>| {
            t.as_ref().and_then(|t| {
                match templates.render_json(&serde_json::Value::String(t.clone()), &ctx) {
                    Ok(serde_json::Value::String(s)) if !s.trim().is_empty() => {
                        Some(s.trim().to_string())
                    }
                    _ => None,
                }
            })
        };
        Some(Self {
            heartbeat: render(&n.heartbeat),
            slack: render(&n.slack),
            webhook: render(&n.webhook),
            timeout: n.timeout.map_or(Duration::from_secs(10), |t| t.0),
            attempts: n.retries.unwrap_or(2) + 1,
        })
    }

    async fn deliver(
        &self,
        what: &str,
        url: &str,
        path: Option<&str>,
        content_type: &'static str,
        body: String,
        reporter: &dyn Reporter,
    ) {
        let target = url::Url::parse(url)
            .map_err(|_| format!("{what}: not a URL"))
            .and_then(|mut u| {
                if let Some(p) = path {
                    u.path_segments_mut()
                        .map_err(|()| format!("{} cannot take a path", shown(url)))?
                        .pop_if_empty()
                        .push(p);
                }
                Ok(u)
            });
        let result = match target {
            Ok(u) => {
                send(Delivery {
                    method: reqwest::Method::POST,
                    url: u,
                    configured: url,
                    content_type,
                    body,
                    timeout: self.timeout,
                    attempts: self.attempts,
                })
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            reporter.event(&Event::Notice {
                text: format!("could not send the {what}: {e} (the drill's result stands)"),
            });
        }
    }

    /// The heartbeat's start ping.
    pub(super) async fn started(&self, reporter: &dyn Reporter) {
        if let Some(url) = &self.heartbeat {
            self.deliver(
                "start ping",
                url,
                Some("start"),
                "text/plain",
                String::new(),
                reporter,
            )
            .await;
        }
    }

    pub(super) async fn ended(&self, end: &Ending<'_>, reporter: &dyn Reporter) {
        let text = summary(end);
        if let Some(url) = &self.heartbeat {
            // healthchecks.io: `URL` is success, `URL/<exit status>` a failure (non-zero).
            let code = end.exit_code.to_string();
            let path = (end.exit_code != 0).then_some(code.as_str());
            let what = if end.exit_code == 0 {
                "success ping"
            } else {
                "failure ping"
            };
            self.deliver(what, url, path, "text/plain", text.clone(), reporter)
                .await;
        }
        if let Some(url) = &self.slack {
            let body = json!({ "text": text }).to_string();
            self.deliver(
                "Slack message",
                url,
                None,
                "application/json",
                body,
                reporter,
            )
            .await;
        }
        if let Some(url) = &self.webhook {
            let body = json!({
                "event": "drill_finished",
                "status": end.status.as_str(),
                "exit_code": end.exit_code,
                "report_at": end.report_at,
                "report": end.report,
            })
            .to_string();
            self.deliver("webhook", url, None, "application/json", body, reporter)
                .await;
        }
    }
}

/// The message: headline, objectives, the failed step, where the report is.
fn summary(end: &Ending<'_>) -> String {
    let Some(r) = end.report else {
        return format!("DR drill: {} (exit {})", end.status.as_str(), end.exit_code);
    };
    let mut lines = vec![format!(
        "DR drill {}: {}{} (run {}, exit {})",
        r.playbook.name,
        end.status.as_str().to_uppercase(),
        r.deliberate_break
            .as_deref()
            .map_or_else(String::new, |s| format!(
                " (deliberate break of `{s}`, a self-test)"
            )),
        r.run_id,
        end.exit_code
    )];
    lines.push(format!(
        "{}; {}",
        r.rto.headline("RTO"),
        r.rpo.headline("RPO")
    ));
    if let Some(f) = &r.failed_step {
        let error: String = f.error.chars().take(500).collect();
        lines.push(format!(
            "failed step `{}` ({}, {}): {error}",
            f.step,
            f.kind,
            f.class.as_str()
        ));
    }
    if end.status == RunStatus::Interrupted {
        lines.push(
            "interrupted: `drrun resume` (or the next --resume-interrupted run) continues it"
                .into(),
        );
    }
    lines.push(format!("report: {}", end.report_at));
    lines.join("\n")
}
