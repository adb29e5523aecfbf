//! A Prometheus Pushgateway client: replaces one group's metrics (HTTP PUT).

use std::time::Duration;

use super::webhook::{Delivery, send, shown};

/// PUTs `body` (text format) as the group `<label>/<value>/...` (`job/drrun/playbook/x`).
pub(crate) async fn push(url: &str, group: &[(&str, &str)], body: String) -> Result<(), String> {
    let mut target = url::Url::parse(url).map_err(|e| format!("{}: {e}", shown(url)))?;
    {
        let mut path = target
            .path_segments_mut()
            .map_err(|()| format!("{} cannot take a path", shown(url)))?;
        path.pop_if_empty().push("metrics");
        for (k, v) in group {
            path.push(k).push(v);
        }
    }
    send(Delivery {
        method: reqwest::Method::PUT,
        url: target,
        configured: url,
        content_type: "text/plain; version=0.0.4",
        body,
        timeout: Duration::from_secs(10),
        attempts: 3,
    })
    .await
}
