//! Sending one request as a browser would (same-origin `Referer`/`Origin` on unsafe
//! methods, forms, JSON, multipart uploads), retrying while the site comes up.

use std::time::{Duration, Instant};

use super::checks::check;
use super::form::PreparedForm;
use super::settings::{BasicAuth, FilePart, Generate, Request};
use crate::services::http::{self, Response, SendError, guess_mime};
use crate::steps::StepCtx;

pub(super) fn join_url(base: &str, url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            url.trim_start_matches('/')
        )
    }
}

/// Where a request goes and with what, once its settings are rendered.
pub(super) struct Target<'a> {
    pub url: &'a str,
    pub method: &'a str,
    pub auth: Option<&'a BasicAuth>,
    /// The page the request is made from.
    pub referer: &'a str,
    /// A form taken from that page (`submit`).
    pub form: Option<&'a PreparedForm>,
}

/// Sends a request, retrying while the site comes up when `retry_until` says so.
pub(super) async fn send_until(
    ctx: &StepCtx,
    client: &reqwest::Client,
    req: &Request,
    target: &Target<'_>,
) -> (Result<(Response, Vec<String>), String>, u32) {
    let deadline = req
        .retry_until
        .as_ref()
        .map(|r| Instant::now() + r.deadline.0);
    let interval = req
        .retry_until
        .as_ref()
        .and_then(|r| r.interval)
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(1));
    let mut attempts = 0;
    loop {
        attempts += 1;
        let sent = tokio::select! {
            r = send(ctx, client, req, target) => r,
            () = ctx.cancel.cancelled() => return (Err("cancelled".into()), attempts),
        };
        let (outcome, transient) = match sent {
            Err(SendError::Transient(m)) => (Err(m), true),
            Err(SendError::Fatal(m)) => (Err(m), false),
            Ok(resp) => {
                let failures = check(req.asserts.as_ref(), &resp);
                let unavailable = matches!(resp.status, 502..=504);
                let retry_asserts = req
                    .retry_until
                    .as_ref()
                    .is_some_and(|r| r.on_assert_failure)
                    && !failures.is_empty();
                ((Ok((resp, failures))), unavailable || retry_asserts)
            }
        };
        match deadline {
            Some(d) if transient && Instant::now() + interval < d => {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = ctx.cancel.cancelled() => return (Err("cancelled".into()), attempts),
                }
            }
            Some(_) if transient => {
                let waited = req
                    .retry_until
                    .as_ref()
                    .map(|r| r.deadline.to_string())
                    .unwrap_or_default();
                return (
                    outcome.map_err(|m| {
                        format!("{m} (still failing after {waited}, {attempts} attempts)")
                    }),
                    attempts,
                );
            }
            _ => return (outcome, attempts),
        }
    }
}

async fn send(
    ctx: &StepCtx,
    client: &reqwest::Client,
    req: &Request,
    target: &Target<'_>,
) -> Result<Response, SendError> {
    let method = reqwest::Method::from_bytes(target.method.as_bytes())
        .map_err(|_| SendError::Fatal(format!("invalid method `{}`", target.method)))?;
    let unsafe_method = !matches!(
        method,
        reqwest::Method::GET | reqwest::Method::HEAD | reqwest::Method::OPTIONS
    );
    let url = target.url;
    let mut b = client.request(method, url);
    let has = |h: &str| req.headers.keys().any(|k| k.eq_ignore_ascii_case(h));
    // Django's CSRF check wants a same-origin Referer (and Origin) on unsafe
    // requests, as a browser would send them.
    if unsafe_method {
        if !has("referer") {
            b = b.header("Referer", target.referer);
        }
        if !has("origin")
            && let Ok(u) = url::Url::parse(url)
        {
            b = b.header("Origin", u.origin().ascii_serialization());
        }
    }
    for (k, v) in &req.headers {
        b = b.header(k, v);
    }
    if !req.query.is_empty() {
        b = b.query(&req.query.iter().collect::<Vec<_>>());
    }
    if let Some(a) = target.auth {
        b = b.basic_auth(&a.username, Some(&a.password));
    }
    if let Some(f) = target.form {
        if f.multipart {
            let mut form = reqwest::multipart::Form::new();
            for (k, v) in &f.entries {
                form = form.text(k.clone(), v.clone());
            }
            for file in &f.files {
                form = form.part(file.field.clone(), file_part(ctx, file)?);
            }
            b = b.multipart(form);
        } else if !f.entries.is_empty() {
            b = b.form(&f.entries);
        }
    } else if !req.form.is_empty() {
        b = b.form(&req.form.iter().collect::<Vec<_>>());
    } else if let Some(j) = &req.json {
        b = b.json(j);
    } else if let Some(body) = &req.body {
        b = b.body(body.clone());
    } else if let Some(m) = &req.multipart {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in &m.fields {
            form = form.text(k.clone(), v.clone());
        }
        for f in &m.files {
            form = form.part(f.field.clone(), file_part(ctx, f)?);
        }
        b = b.multipart(form);
    }
    http::execute(b).await
}

/// One file of a multipart body, read or generated.
fn file_part(ctx: &StepCtx, f: &FilePart) -> Result<reqwest::multipart::Part, SendError> {
    let (bytes, default_name) = match (&f.path, f.generate) {
        (Some(p), _) => {
            let path = ctx.resolve_path(p);
            let bytes = std::fs::read(&path)
                .map_err(|e| SendError::Fatal(format!("cannot read {}: {e}", path.display())))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            (bytes, name)
        }
        (None, Some(Generate::Png)) => (png(), "drrun-smoke.png".to_string()),
        (None, Some(Generate::Text)) => (
            format!("drrun smoke test {}\n", chrono::Utc::now().to_rfc3339()).into_bytes(),
            "drrun-smoke.txt".to_string(),
        ),
        (None, None) => {
            return Err(SendError::Fatal(
                "a file part needs `path` or `generate`".into(),
            ));
        }
    };
    let filename = f.filename.clone().unwrap_or(default_name);
    let mime = f
        .content_type
        .clone()
        .unwrap_or_else(|| guess_mime(&filename).to_string());
    reqwest::multipart::Part::bytes(bytes)
        .file_name(filename)
        .mime_str(&mime)
        .map_err(|e| SendError::Fatal(format!("content type `{mime}`: {e}")))
}

/// A small valid PNG (8x8, one colour that changes per run, so uploads are not
/// deduplicated by content).
pub(super) fn png() -> Vec<u8> {
    use std::io::Write;
    let seed = chrono::Utc::now().timestamp_subsec_nanos();
    let (r, g, b) = ((seed >> 16) as u8, (seed >> 8) as u8, seed as u8);
    let (w, h) = (8u32, 8u32);
    // Each scanline: filter byte 0 (none), then RGB pixels.
    let mut row = vec![0u8];
    row.extend(std::iter::repeat_n([r, g, b], w as usize).flatten());
    let raw = row.repeat(h as usize);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).unwrap();
    let idat = z.finish().unwrap();
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &idat);
    chunk(b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_png_is_valid() {
        let png = png();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        // The IEND chunk of the well-known layout ends with its well-known CRC.
        assert!(png.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]));
    }

    #[test]
    fn urls_join_like_a_browser_would_for_relative_paths() {
        assert_eq!(
            join_url("https://dr.example.com/", "/admin/"),
            "https://dr.example.com/admin/"
        );
        assert_eq!(
            join_url("https://dr.example.com", "admin/"),
            "https://dr.example.com/admin/"
        );
        assert_eq!(join_url("https://a", "http://b/c"), "http://b/c");
    }
}
