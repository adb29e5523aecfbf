//! PostgreSQL: connection settings, URL parsing, and running the real client programs
//! (`psql`, `pg_restore`) safely: never through a shell, the connection (and above all
//! the password) passed by environment only. Knows nothing of step kinds.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::outcome::{Failure, FailureClass};
use crate::util::process::{self, Finished, Limits, RunError, Stdin};

mod conninfo;
pub(crate) mod copydata;
pub(crate) mod dump;
pub(crate) use conninfo::parse_url;
use conninfo::{LIBPQ_ENV, libpq_env, service_entries};

/// How to reach a PostgreSQL server: a URL, or libpq parts. Passwords reach the client
/// programs only through their environment, never their arguments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PgConnection {
    /// Connection URL, `postgresql://user:password@host:5432/dbname` (usually a secret).
    #[serde(default)]
    pub url: Option<String>,
    /// Host name, IP address or unix-socket directory.
    #[serde(default)]
    pub host: Option<String>,
    /// Port (default 5432).
    #[serde(default)]
    pub port: Option<u16>,
    /// User name.
    #[serde(default)]
    pub user: Option<String>,
    /// Password (use a secret).
    #[serde(default)]
    pub password: Option<String>,
    /// Database name.
    #[serde(default)]
    pub database: Option<String>,
}

impl PgConnection {
    /// The settings problem, if any: a connection needs `url` or at least `database`.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        (self.url.is_none() && self.database.is_none()).then_some(
            "give `url` or at least `database` (with `host`, `port`, `user`, `password` as needed)",
        )
    }
}

/// A resolved connection. `Debug` is hand-written so the password cannot leak into logs.
#[derive(Clone, Default)]
pub(crate) struct Conn {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: String,
    /// Extra libpq parameters from the URL query (`sslmode`, ...), passed as PG* variables.
    pub params: Vec<(String, String)>,
    /// The `application_name` the server shows for our sessions (default `drrun`); a
    /// step's own (`drrun/RUN/STEP`) lets it find its statements after a cancel.
    pub app_name: Option<String>,
    /// Where values that are not the playbook's came from (`host from PGHOST`), never
    /// the password itself.
    pub origins: Vec<String>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Conn {
    pub(crate) fn from_settings(c: &PgConnection) -> Result<Self, Failure> {
        let mut conn = match &c.url {
            Some(url) => parse_url(url)?,
            None => Conn::default(),
        };
        if c.host.is_some() {
            conn.host.clone_from(&c.host);
        }
        if c.port.is_some() {
            conn.port = c.port;
        }
        if c.user.is_some() {
            conn.user.clone_from(&c.user);
        }
        if c.password.is_some() {
            conn.password.clone_from(&c.password);
        }
        if let Some(db) = &c.database {
            conn.database.clone_from(db);
        }
        conn.fill_from_environment()?;
        if conn.database.is_empty() {
            return Err(Failure::config(
                "the connection names no database (add it to `url`, set `database`, PGDATABASE or a service's `dbname`)",
            ));
        }
        Ok(conn)
    }

    /// libpq's conventions for what the playbook leaves unset: a service (`?service=`,
    /// else PGSERVICE) from pg_service.conf first, then PGHOST, PGPORT, PGUSER, PGDATABASE.
    /// The playbook's settings always win. What is resolved here is what the client is
    /// given, so the guards judge the connection that is really made.
    fn fill_from_environment(&mut self) -> Result<(), Failure> {
        let service = self
            .params
            .iter()
            .position(|(k, _)| k == "service")
            .map(|i| self.params.remove(i).1)
            .or_else(|| std::env::var("PGSERVICE").ok().filter(|s| !s.is_empty()));
        if let Some(name) = service {
            let (file, entries) = service_entries(&name)?;
            let origin = format!("service `{name}` in {}", file.display());
            for (key, value) in entries {
                let set = match key.as_str() {
                    "host" | "hostaddr" if self.host.is_none() => {
                        self.host = Some(value);
                        true
                    }
                    "port" if self.port.is_none() => {
                        self.port = value.parse().ok();
                        true
                    }
                    "user" if self.user.is_none() => {
                        self.user = Some(value);
                        true
                    }
                    "dbname" if self.database.is_empty() => {
                        self.database = value;
                        true
                    }
                    "password" if self.password.is_none() => {
                        self.password = Some(value);
                        false
                    }
                    _ if libpq_env(&key).is_some()
                        && !self.params.iter().any(|(k, _)| *k == key) =>
                    {
                        self.params.push((key.clone(), value));
                        true
                    }
                    _ => false,
                };
                if set {
                    self.origins.push(format!("{key} from {origin}"));
                }
            }
        }
        let env = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        if self.host.is_none()
            && let Some(h) = env("PGHOST")
        {
            self.host = Some(h);
            self.origins.push("host from PGHOST".into());
        }
        if self.port.is_none()
            && let Some(p) = env("PGPORT")
        {
            self.port = p.parse().ok();
            self.origins.push("port from PGPORT".into());
        }
        if self.user.is_none()
            && let Some(u) = env("PGUSER")
        {
            self.user = Some(u);
            self.origins.push("user from PGUSER".into());
        }
        if self.database.is_empty()
            && let Some(d) = env("PGDATABASE")
        {
            self.database = d;
            self.origins.push("dbname from PGDATABASE".into());
        }
        Ok(())
    }

    /// `(host from PGHOST, user from service `dr` in ~/.pg_service.conf)`, or nothing.
    pub(crate) fn origins(&self) -> String {
        if self.origins.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.origins.join(", "))
        }
    }

    /// The same server and credentials, another database.
    pub(crate) fn with_database(&self, database: &str) -> Self {
        Self {
            database: database.to_string(),
            ..self.clone()
        }
    }

    /// `user@host:port/db` without the password, for messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user.as_deref().unwrap_or("(default user)"),
            self.host.as_deref().unwrap_or("(default host)"),
            self.port.unwrap_or(5432),
            self.database
        )
    }

    pub(crate) fn host_for_guard(&self) -> String {
        self.host.clone().unwrap_or_else(|| "localhost".into())
    }

    /// Makes the session of `cmd` refuse writes, keeping the options it already has (the
    /// URL's `options`, else the user's `PGOPTIONS`).
    pub(crate) fn make_read_only(&self, cmd: &mut tokio::process::Command) {
        let existing = self
            .params
            .iter()
            .find(|(k, _)| k == "options")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("PGOPTIONS").ok())
            .unwrap_or_default();
        let options = format!("{existing} -c default_transaction_read_only=on");
        cmd.env("PGOPTIONS", options.trim_start());
    }

    /// A command for `program` with this connection in its environment.
    pub(crate) fn command(&self, bin: Option<&str>, program: &str) -> tokio::process::Command {
        let path = match bin {
            Some(dir) => PathBuf::from(dir).join(program),
            None => PathBuf::from(program),
        };
        // The client gets the user's libpq environment (PGPASSFILE and .pgpass, PGSSLMODE,
        // PGSSLROOTCERT, ...), so it works as psql does, and nothing else of drrun's (not
        // the variables secrets come from). The service was resolved into the values
        // below: its file would otherwise win over them.
        let mut cmd = crate::util::process::command(path, &|name| {
            LIBPQ_ENV.contains(&name) && name != "PGSERVICE"
        });
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
        cmd.env("PGAPPNAME", self.app_name.as_deref().unwrap_or("drrun"));
        cmd.env("PGCONNECT_TIMEOUT", "10");
        for (k, v) in &self.params {
            if let Some(var) = libpq_env(k) {
                cmd.env(var, v);
            }
        }
        cmd
    }
}

/// Runs a PostgreSQL client program prepared by [`Conn::command`] to its end,
/// cancellable, with `stdin` fed from memory or a stream.
pub(crate) async fn run_client(
    cmd: tokio::process::Command,
    program: &str,
    stdin: impl Into<Stdin>,
    cancel: &CancellationToken,
) -> Result<Finished, Failure> {
    run_client_with(cmd, program, stdin, cancel, None).await
}

/// [`run_client`], with each line of output shown to `lines` as it comes.
pub(crate) async fn run_client_with(
    cmd: tokio::process::Command,
    program: &str,
    stdin: impl Into<Stdin>,
    cancel: &CancellationToken,
    lines: Option<process::LineObserver>,
) -> Result<Finished, Failure> {
    // psql cancels its statement on the server only on SIGINT (on SIGTERM it dies and
    // the server finishes, and commits, the statement); pg_restore cancels its workers'
    // statements on either.
    let limits = Limits {
        stop_signal: libc::SIGINT,
        lines,
        ..Limits::default()
    };
    match process::run(cmd, stdin.into(), &limits, cancel).await {
        Ok(out) => Ok(out),
        Err(RunError::Spawn(e)) => Err(Failure::config(format!(
            "cannot start `{program}`: {e} (install the PostgreSQL client or set `pg_bin`)"
        ))),
        Err(RunError::Wait(e)) => Err(Failure::new(
            FailureClass::Other,
            format!("waiting for `{program}`: {e}"),
        )),
        Err(RunError::Cancelled | RunError::TimedOut(_)) => Err(Failure::new(
            FailureClass::Other,
            format!("`{program}` was cancelled"),
        )),
        Err(RunError::Input(e)) => Err(Failure::new(
            FailureClass::Connection,
            format!("reading the input of `{program}`: {e}"),
        )),
    }
}

/// Runs SQL through psql, tuples only; `read_only` makes the session refuse writes.
pub(crate) async fn psql(
    conn: &Conn,
    bin: Option<&str>,
    sql: &str,
    cancel: &CancellationToken,
    read_only: bool,
) -> Result<String, Failure> {
    let mut cmd = conn.command(bin, "psql");
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
    if read_only {
        conn.make_read_only(&mut cmd);
    }
    let out = run_client(cmd, "psql", Some(sql.as_bytes().to_vec()), cancel).await?;
    if out.code() != Some(0) {
        let stderr = out.stderr_text();
        if let Some(e) = connection_error(conn, &stderr) {
            return Err(e);
        }
        return Err(Failure::new(
            FailureClass::Other,
            format!("psql on {}: {}", conn.describe(), clean(&stderr)),
        ));
    }
    Ok(out.stdout_text())
}

/// After a cancelled client: makes sure no statement of the sessions named `app_name` is
/// still running on the server. Those that are get `pg_cancel_backend`; then it waits up
/// to `wait` for them to end. `Ok(n)`: confirmed, `n` needed a cancel of their own;
/// `Err(why)`: not confirmed.
pub(crate) async fn confirm_cancelled(
    conn: &Conn,
    bin: Option<&str>,
    app_name: &str,
    wait: std::time::Duration,
) -> Result<usize, String> {
    end_sessions(conn, bin, app_name, false, wait).await
}

/// Before a step starts again (a resume after drrun was killed): ends every session a
/// previous attempt left under the same `app_name` (a `pg_restore -j` worker busy with an
/// index, a statement whose psql was killed), so the step never runs beside them.
/// `Ok(n)`: `n` sessions were ended.
pub(crate) async fn end_predecessors(
    conn: &Conn,
    bin: Option<&str>,
    app_name: &str,
    wait: std::time::Duration,
) -> Result<usize, String> {
    end_sessions(conn, bin, app_name, true, wait).await
}

/// Cancels the running statements (or, with `terminate`, ends the sessions) named
/// `app_name`, then waits up to `wait` until none is left.
async fn end_sessions(
    conn: &Conn,
    bin: Option<&str>,
    app_name: &str,
    terminate: bool,
    wait: std::time::Duration,
) -> Result<usize, String> {
    let check = Conn {
        app_name: Some("drrun-session-check".into()),
        ..conn.clone()
    };
    // The step's own token may be cancelled already: this check has its own.
    let cancel = CancellationToken::new();
    let state = if terminate { "" } else { "AND state <> 'idle'" };
    let sessions = format!(
        "FROM pg_stat_activity WHERE application_name = {} {state} AND pid <> pg_backend_pid()",
        literal(app_name)
    );
    let count = |sql: String| {
        let (check, cancel) = (&check, &cancel);
        async move {
            psql(check, bin, &sql, cancel, false)
                .await
                .map_err(|e| e.message)
                .map(|out| out.trim().parse::<usize>().unwrap_or(0))
        }
    };
    let end = if terminate {
        "pg_terminate_backend"
    } else {
        "pg_cancel_backend"
    };
    let ended = count(format!("SELECT count({end}(pid)) {sessions}")).await?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = count(format!("SELECT count(*) {sessions}")).await?;
        if left == 0 {
            return Ok(ended);
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("{left} session(s) still active on the server"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Major version of a `pg_restore --version` or "Dumped by pg_dump version: 15.4" text,
/// times 100 (9.6 is 906, 15 is 1500).
pub(crate) fn major_version(text: &str) -> Option<u32> {
    static VERSION: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"(\d+)(?:\.(\d+))?").unwrap());
    let caps = VERSION.captures(text)?;
    let major: u32 = caps[1].parse().ok()?;
    // Before 10, the major version was two numbers (9.6).
    Some(if major < 10 {
        major * 100
            + caps
                .get(2)
                .and_then(|m| m.as_str().parse().ok())
                .unwrap_or(0)
    } else {
        major * 100
    })
}

/// Lists an archive (`pg_restore --list`): validates it and reads the dump's version.
pub(crate) async fn list_archive(
    path: &Path,
    bin: Option<&str>,
    cancel: &CancellationToken,
) -> Result<String, Failure> {
    let mut cmd = Conn::default().command(bin, "pg_restore");
    cmd.arg("--list").arg(path);
    let out = run_client(cmd, "pg_restore", None, cancel).await?;
    if out.code() != Some(0) {
        let err = clean(&out.stderr_text());
        if err.contains("unsupported version") {
            let local = local_version(bin, cancel).await.unwrap_or_default();
            return Err(Failure::config(format!(
                "the archive was made by a newer pg_dump than this pg_restore ({}) can read: {err}; use a newer PostgreSQL client (`pg_bin`)",
                local.trim()
            )));
        }
        return Err(Failure::new(
            FailureClass::Assertion,
            format!("archive {} is truncated or corrupt: {err}", path.display()),
        ));
    }
    Ok(out.stdout_text())
}

/// `pg_restore --version`, when it runs.
pub(crate) async fn local_version(bin: Option<&str>, cancel: &CancellationToken) -> Option<String> {
    let mut cmd = Conn::default().command(bin, "pg_restore");
    cmd.arg("--version");
    run_client(cmd, "pg_restore", None, cancel)
        .await
        .ok()
        .map(|o| o.stdout_text())
}

/// Classifies a libpq connection failure from a client's stderr.
pub(crate) fn connection_error(conn: &Conn, stderr: &str) -> Option<Failure> {
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
    Some(Failure::new(
        class,
        format!("cannot connect to {}: {}", conn.describe(), clean(&text)),
    ))
}

/// Strips the program-name prefixes psql and pg_restore put on their messages.
pub(crate) fn clean(text: &str) -> String {
    text.replace("psql: error: ", "")
        .replace("pg_restore: error: ", "")
        .trim()
        .to_string()
}

/// Quotes an SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            major_version("pg_restore (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(1500)
        );
        assert_eq!(
            major_version("Dumped by pg_dump version: 9.6.24"),
            Some(906)
        );
    }

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
