//! A Prometheus Pushgateway client: replaces one group's metrics (HTTP PUT), with a
//! timeout and bounded retries. The URL may carry credentials; messages name only its
//! scheme, host and port.

use std::time::Duration;

/// `https://pushgw.example:9091`, without credentials, path or query.
pub(crate) fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "the Pushgateway (an unreadable URL)".into(),
    }
}

/// PUTs `body` (text format) as the group `job/<job>/<label>/<value>...`.
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
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let mut problem = String::new();
    for attempt in 1..=3u64 {
        let sent = client
            .put(target.clone())
            .header("content-type", "text/plain; version=0.0.4")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            // A refusal of the metrics themselves is not retried.
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                return Err(format!(
                    "{} refused the metrics: {status} {}",
                    shown(url),
                    text.trim()
                ));
            }
            Ok(r) => problem = format!("{} answered {}", shown(url), r.status()),
            // reqwest's errors name the URL: say only where.
            Err(e) if e.is_timeout() => problem = format!("{} did not answer in 10s", shown(url)),
            Err(e) if e.is_connect() => problem = format!("cannot connect to {}", shown(url)),
            Err(_) => problem = format!("sending to {} failed", shown(url)),
        }
        if attempt < 3 {
            tokio::time::sleep(Duration::from_millis(300 * attempt)).await;
        }
    }
    Err(problem)
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_never_shown() {
        assert_eq!(
            super::shown("https://user:s3cret@push.example:9091/base?x=1"),
            "https://push.example:9091"
        );
    }
}
