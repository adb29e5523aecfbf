//! libpq's connection conventions: URLs, service files and the environment variables
//! libpq reads.

use std::path::PathBuf;

use super::Conn;
use crate::outcome::Failure;

pub(super) fn libpq_env(param: &str) -> Option<&'static str> {
    Some(match param {
        "sslmode" => "PGSSLMODE",
        "sslrootcert" => "PGSSLROOTCERT",
        "sslcert" => "PGSSLCERT",
        "sslkey" => "PGSSLKEY",
        "connect_timeout" => "PGCONNECT_TIMEOUT",
        "options" => "PGOPTIONS",
        "target_session_attrs" => "PGTARGETSESSIONATTRS",
        "passfile" => "PGPASSFILE",
        "sslcrl" => "PGSSLCRL",
        "sslnegotiation" => "PGSSLNEGOTIATION",
        "gssencmode" => "PGGSSENCMODE",
        "krbsrvname" => "PGKRBSRVNAME",
        "channel_binding" => "PGCHANNELBINDING",
        _ => return None,
    })
}

/// The entries of service `name` in the first pg_service.conf that defines it
/// (`PGSERVICEFILE`, `~/.pg_service.conf`, `PGSYSCONFDIR/pg_service.conf`, Debian's
/// `/etc/postgresql-common/pg_service.conf`).
pub(super) fn service_entries(name: &str) -> Result<(PathBuf, Vec<(String, String)>), Failure> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(f) = std::env::var_os("PGSERVICEFILE") {
        files.push(f.into());
    }
    files.push(crate::util::expand_home("~/.pg_service.conf"));
    if let Some(dir) = std::env::var_os("PGSYSCONFDIR") {
        files.push(PathBuf::from(dir).join("pg_service.conf"));
    }
    files.push("/etc/postgresql-common/pg_service.conf".into());
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let mut current = None::<String>;
        let mut entries = Vec::new();
        let mut found = false;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = Some(section.trim().to_string());
                found |= section.trim() == name;
                continue;
            }
            if current.as_deref() == Some(name)
                && let Some((k, v)) = line.split_once('=')
            {
                entries.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        if found {
            return Ok((file.clone(), entries));
        }
    }
    Err(Failure::config(format!(
        "definition of service `{name}` not found (looked in {})",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Parses `postgresql://user:password@host:port/db?host=/socket/dir&sslmode=require`.
pub(crate) fn parse_url(text: &str) -> Result<Conn, Failure> {
    // libpq allows an empty host (`postgresql://user:pw@/db?host=/socket`); the url crate
    // does not, so parse with a placeholder host and drop it again.
    const NO_HOST: &str = "drrun-no-host.invalid";
    let text = match text.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            let host_part = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if host_part.is_empty() || host_part.starts_with(':') {
                let userinfo = authority
                    .rsplit_once('@')
                    .map(|(u, _)| format!("{u}@"))
                    .unwrap_or_default();
                format!("{scheme}://{userinfo}{NO_HOST}{host_part}{tail}")
            } else {
                text.to_string()
            }
        }
        None => text.to_string(),
    };
    let url = url::Url::parse(&text)
        .map_err(|e| Failure::config(format!("invalid PostgreSQL URL: {e}")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(Failure::config(format!(
            "a PostgreSQL URL starts with postgresql://, not {}://",
            url.scheme()
        )));
    }
    let decode = |s: &str| percent_decode(s);
    let mut conn = Conn {
        host: url
            .host_str()
            .filter(|h| !h.is_empty() && *h != NO_HOST)
            .map(|h| decode(h.trim_matches(['[', ']']))),
        port: url.port(),
        user: (!url.username().is_empty()).then(|| decode(url.username())),
        password: url.password().map(decode),
        database: decode(url.path().trim_start_matches('/')),
        params: Vec::new(),
        origins: Vec::new(),
        app_name: None,
    };
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "host" => conn.host = Some(v.into_owned()),
            "port" => conn.port = v.parse().ok(),
            "user" => conn.user = Some(v.into_owned()),
            "password" => conn.password = Some(v.into_owned()),
            "dbname" => conn.database = v.into_owned(),
            _ => conn.params.push((k.into_owned(), v.into_owned())),
        }
    }
    Ok(conn)
}

/// The environment variables libpq reads (its documentation's "Environment Variables").
pub(super) const LIBPQ_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGSSLNEGOTIATION",
    "PGSSLCOMPRESSION",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLCERTMODE",
    "PGSSLROOTCERT",
    "PGSSLCRL",
    "PGSSLCRLDIR",
    "PGSSLSNI",
    "PGREQUIREPEER",
    "PGSSLMINPROTOCOLVERSION",
    "PGSSLMAXPROTOCOLVERSION",
    "PGGSSENCMODE",
    "PGKRBSRVNAME",
    "PGGSSLIB",
    "PGGSSDELEGATION",
    "PGCONNECT_TIMEOUT",
    "PGCLIENTENCODING",
    "PGREQUIREAUTH",
    "PGCHANNELBINDING",
    "PGTARGETSESSIONATTRS",
    "PGLOADBALANCEHOSTS",
    "PGDATESTYLE",
    "PGTZ",
    "PGGEQO",
    "PGLOCALEDIR",
];

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}
