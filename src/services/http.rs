//! HTTP: the client (one cookie jar, TLS, time limits, redirects or not), sending a
//! request and reading its response up to a limit, with send errors classified as
//! transient (nothing useful came back) or fatal. Knows nothing of step kinds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::cookie::{CookieStore, Jar};

use crate::util::error_chain;

/// Responses are kept up to this size.
const MAX_BODY: usize = 16 << 20;

/// How to build a client.
pub(crate) struct ClientOptions<'a> {
    pub jar: &'a Arc<Jar>,
    pub follow_redirects: bool,
    pub timeout: Duration,
    pub insecure: bool,
    /// PEM certificates to trust besides the system's.
    pub ca_pem: Option<&'a [u8]>,
}

pub(crate) fn client(opts: &ClientOptions<'_>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .cookie_provider(opts.jar.clone())
        .timeout(opts.timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("drrun/", env!("CARGO_PKG_VERSION")))
        .redirect(if opts.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        })
        .tls_danger_accept_invalid_certs(opts.insecure);
    if let Some(pem) = opts.ca_pem {
        let cert = reqwest::Certificate::from_pem(pem).map_err(|e| e.to_string())?;
        b = b.add_root_certificate(cert);
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// A response, read.
pub(crate) struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The final URL (after redirects).
    pub url: String,
    pub body: Vec<u8>,
    pub duration: Duration,
}

impl Response {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request got no response.
pub(crate) enum SendError {
    /// Nothing (useful) came back: connection refused, reset, timed out.
    Transient(String),
    /// Anything else: a bad request, a TLS failure, too many redirects.
    Fatal(String),
}

/// Sends a prepared request and reads its response (up to 16 MiB of body).
pub(crate) async fn execute(b: reqwest::RequestBuilder) -> Result<Response, SendError> {
    let started = Instant::now();
    let resp = b.send().await.map_err(|e| {
        let text = error_chain(&e);
        if e.is_connect() || e.is_timeout() {
            SendError::Transient(text)
        } else {
            SendError::Fatal(text)
        }
    })?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let final_url = resp.url().to_string();
    let mut body = Vec::new();
    let mut resp = resp;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_BODY.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(SendError::Transient(format!(
                    "reading the response: {}",
                    error_chain(&e)
                )));
            }
        }
    }
    Ok(Response {
        status,
        headers,
        url: final_url,
        body,
        duration: started.elapsed(),
    })
}

/// The value of cookie `name` the jar would send to `url`.
pub(crate) fn cookie(jar: &Jar, url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let header = jar.cookies(&url)?;
    let header = header.to_str().ok()?.to_string();
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A content type from a file name.
pub(crate) fn guess_mime(name: &str) -> &'static str {
    match name
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
        .as_str()
    {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "txt" => "text/plain",
        "json" => "application/json",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}
