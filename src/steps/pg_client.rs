//! Running PostgreSQL's client programs (`psql`, `pg_restore`) safely: never through a
//! shell, the connection (and above all the password) passed by environment only.

use std::path::PathBuf;
use std::process::Stdio;

use super::StepError;
use super::pg_restore::PgConnection;
use crate::playbook::model::FailureClass;

/// A resolved connection. `Debug` is hand-written so the password cannot leak into logs.
#[derive(Clone, Default)]
pub struct Conn {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: String,
    /// Extra libpq parameters from the URL query (`sslmode`, ...), passed as PG* variables.
    pub params: Vec<(String, String)>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Conn {
    pub fn from_settings(c: &PgConnection) -> Result<Self, StepError> {
        let mut conn = match &c.url {
            Some(url) => parse_url(url)?,
            None => Conn::default(),
        };
        if c.host.is_some() {
            conn.host = c.host.clone();
        }
        if c.port.is_some() {
            conn.port = c.port;
        }
        if c.user.is_some() {
            conn.user = c.user.clone();
        }
        if c.password.is_some() {
            conn.password = c.password.clone();
        }
        if let Some(db) = &c.database {
            conn.database = db.clone();
        }
        if conn.database.is_empty() {
            return Err(StepError::config(
                "the connection names no database (add it to `url` or set `database`)",
            ));
        }
        Ok(conn)
    }

    /// The same server and credentials, another database.
    pub fn with_database(&self, database: &str) -> Self {
        Self {
            database: database.to_string(),
            ..self.clone()
        }
    }

    /// `user@host:port/db` without the password, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user.as_deref().unwrap_or("(default user)"),
            self.host.as_deref().unwrap_or("(default host)"),
            self.port.unwrap_or(5432),
            self.database
        )
    }

    pub fn host_for_guard(&self) -> String {
        self.host.clone().unwrap_or_else(|| "localhost".into())
    }

    /// A command for `program` with this connection in its environment.
    pub fn command(&self, bin: &Option<String>, program: &str) -> tokio::process::Command {
        let path = match bin {
            Some(dir) => PathBuf::from(dir).join(program),
            None => PathBuf::from(program),
        };
        let mut cmd = tokio::process::Command::new(path);
        // Start from a clean libpq environment so nothing inherited redirects us.
        for var in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE",
            "PGSERVICE",
            "PGPASSFILE",
        ] {
            cmd.env_remove(var);
        }
        if let Some(h) = &self.host {
            cmd.env("PGHOST", h);
        }
        if let Some(p) = self.port {
            cmd.env("PGPORT", p.to_string());
        }
        if let Some(u) = &self.user {
            cmd.env("PGUSER", u);
        }
        if let Some(pw) = &self.password {
            cmd.env("PGPASSWORD", pw);
        }
        cmd.env("PGDATABASE", &self.database);
        cmd.env("PGAPPNAME", "drrun");
        cmd.env("PGCONNECT_TIMEOUT", "10");
        for (k, v) in &self.params {
            if let Some(var) = libpq_env(k) {
                cmd.env(var, v);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }
}

fn libpq_env(param: &str) -> Option<&'static str> {
    Some(match param {
        "sslmode" => "PGSSLMODE",
        "sslrootcert" => "PGSSLROOTCERT",
        "sslcert" => "PGSSLCERT",
        "sslkey" => "PGSSLKEY",
        "connect_timeout" => "PGCONNECT_TIMEOUT",
        "options" => "PGOPTIONS",
        "target_session_attrs" => "PGTARGETSESSIONATTRS",
        _ => return None,
    })
}

/// Parses `postgresql://user:password@host:port/db?host=/socket/dir&sslmode=require`.
pub fn parse_url(text: &str) -> Result<Conn, StepError> {
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
        .map_err(|e| StepError::config(format!("invalid PostgreSQL URL: {e}")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(StepError::config(format!(
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

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// What a client program printed and how it ended.
pub struct ClientOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// What a client program reads on its standard input.
pub enum Input {
    None,
    Bytes(Vec<u8>),
    /// An S3 object streamed through, reporting bytes copied.
    Stream(
        aws_sdk_s3::primitives::ByteStream,
        Box<dyn Fn(u64) + Send + Sync>,
    ),
}

impl From<Option<Vec<u8>>> for Input {
    fn from(bytes: Option<Vec<u8>>) -> Self {
        bytes.map_or(Input::None, Input::Bytes)
    }
}

/// Runs a prepared command to the end, cancellable, with `stdin` fed from memory or a stream.
pub async fn run_client(
    mut cmd: tokio::process::Command,
    program: &str,
    stdin: impl Into<Input>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<ClientOutput, StepError> {
    use tokio::io::AsyncWriteExt;
    let stdin = stdin.into();
    if !matches!(stdin, Input::None) {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| {
        StepError::config(format!(
            "cannot start `{program}`: {e} (install the PostgreSQL client or set `pg_bin`)"
        ))
    })?;
    let mut group = crate::process::GroupGuard::register(child.id().unwrap_or(0) as i32);
    let input_error = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let feeder = match (stdin, child.stdin.take()) {
        (Input::Bytes(data), Some(mut pipe)) => Some(tokio::spawn(async move {
            let _ = pipe.write_all(&data).await;
        })),
        (Input::Stream(mut stream, progress), Some(mut pipe)) => {
            let error = input_error.clone();
            Some(tokio::spawn(async move {
                let mut copied = 0u64;
                loop {
                    match stream.next().await {
                        None => break,
                        Some(Ok(chunk)) => {
                            // The reader exiting early is reported through its own exit code.
                            if pipe.write_all(&chunk).await.is_err() {
                                break;
                            }
                            copied += chunk.len() as u64;
                            progress(copied);
                        }
                        Some(Err(e)) => {
                            *error.lock().unwrap() = Some(format!("reading the S3 object: {e}"));
                            break;
                        }
                    }
                }
                // Dropping the pipe closes the reader's stdin.
            }))
        }
        _ => None,
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let read = |pipe: Option<tokio::process::ChildStdout>| async move {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut p, &mut buf).await;
        }
        buf
    };
    let read_err = |pipe: Option<tokio::process::ChildStderr>| async move {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut p, &mut buf).await;
        }
        buf
    };
    let out_task = tokio::spawn(read(stdout));
    let err_task = tokio::spawn(read_err(stderr));
    let status = tokio::select! {
        s = child.wait() => s.map_err(|e| StepError::new(FailureClass::Other, format!("waiting for `{program}`: {e}")))?,
        _ = cancel.cancelled() => {
            crate::process::terminate(&mut child, group.pgid(), std::time::Duration::from_secs(5)).await;
            group.disarm();
            return Err(StepError::new(FailureClass::Other, format!("`{program}` was cancelled")));
        }
    };
    group.disarm();
    if let Some(f) = feeder {
        let _ = f.await;
    }
    let stdout = String::from_utf8_lossy(&out_task.await.unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_task.await.unwrap_or_default()).into_owned();
    if let Some(e) = input_error.lock().unwrap().take() {
        return Err(StepError::new(FailureClass::Connection, e));
    }
    Ok(ClientOutput {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// Classifies a libpq connection failure from a client's stderr.
pub fn connection_error(conn: &Conn, stderr: &str) -> Option<StepError> {
    stderr.lines().find(|l| {
        l.contains("connection to server") || l.contains("FATAL") || l.contains("could not connect")
    })?;
    let text = stderr.trim().replace('\n', " ");
    let class = if text.contains("password authentication failed")
        || text.contains("no password supplied")
        || text.contains("does not exist")
    {
        FailureClass::Config
    } else {
        FailureClass::Connection
    };
    Some(StepError::new(
        class,
        format!("cannot connect to {}: {}", conn.describe(), clean(&text)),
    ))
}

/// Strips the program-name prefixes psql and pg_restore put on their messages.
pub fn clean(text: &str) -> String {
    text.replace("psql: error: ", "")
        .replace("pg_restore: error: ", "")
        .trim()
        .to_string()
}

/// Quotes an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_with_sockets_and_encoded_passwords() {
        let c =
            parse_url("postgresql://app:p%40ss%2Fw@db.internal:6432/acme?sslmode=require").unwrap();
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.password.as_deref(), Some("p@ss/w"));
        assert_eq!(c.host.as_deref(), Some("db.internal"));
        assert_eq!(c.port, Some(6432));
        assert_eq!(c.database, "acme");
        assert_eq!(
            c.params,
            vec![("sslmode".to_string(), "require".to_string())]
        );
        let s = parse_url("postgresql://postgres:pw@/dr?host=/tmp/sock&port=5555").unwrap();
        assert_eq!(s.host.as_deref(), Some("/tmp/sock"));
        assert_eq!(s.port, Some(5555));
        assert!(
            !format!("{s:?}").contains("pw"),
            "Debug never shows the password"
        );
    }
}
