//! Sending to a URL that is a credential (a Pushgateway, a heartbeat check, a Slack or
//! JSON webhook): a timeout, bounded retries with backoff, and messages that name only the
//! URL's scheme, host and port (reqwest's own errors would show the whole URL).

use std::time::Duration;

/// `https://hooks.slack.com`, without credentials, path or query.
pub(crate) fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "an unreadable URL".into(),
    }
}

/// One request to deliver.
pub(crate) struct Delivery<'a> {
    pub method: reqwest::Method,
    pub url: url::Url,
    /// The URL as configured, for [`shown`].
    pub configured: &'a str,
    pub content_type: &'static str,
    pub body: String,
    pub timeout: Duration,
    /// Attempts in all (at least one).
    pub attempts: u32,
}

/// Sends `d`, retrying connection failures, timeouts and 5xx answers; a 4xx answer is a
/// refusal of what was sent and is not retried.
pub(crate) async fn send(d: Delivery<'_>) -> Result<(), String> {
    let where_ = shown(d.configured);
    let client = reqwest::Client::builder()
        .timeout(d.timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let mut problem = String::new();
    let attempts = d.attempts.max(1);
    for attempt in 1..=attempts {
        let sent = client
            .request(d.method.clone(), d.url.clone())
            .header("content-type", d.content_type)
            .body(d.body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let text: String = text.trim().chars().take(200).collect();
                return Err(format!("{where_} refused it: {status} {text}"));
            }
            Ok(r) => problem = format!("{where_} answered {}", r.status()),
            Err(e) if e.is_timeout() => {
                problem = format!(
                    "{where_} did not answer within {}",
                    crate::duration::format_duration(d.timeout)
                );
            }
            Err(e) if e.is_connect() => problem = format!("cannot connect to {where_}"),
            Err(_) => problem = format!("sending to {where_} failed"),
        }
        if attempt < attempts {
            tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
        }
    }
    Err(format!("{problem} ({attempts} attempt(s))"))
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
