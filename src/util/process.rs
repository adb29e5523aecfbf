//! Child processes: the one runner every kind and service uses.
//!
//! Each child gets its own process group, so a cancelled step takes its whole process
//! tree down with it and a second Ctrl-C can kill every group at once. Standard input
//! comes from bytes or a stream; standard output is kept up to a limit (its head),
//! standard error up to a limit (its tail).

use std::collections::HashSet;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

static GROUPS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// What every child keeps of drrun's environment: what a program needs to find its files,
/// speak the locale and reach the network. The rest (the secrets' source variables
/// among it) a child gets only when its step declares it or its tool needs it.
const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "AWS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// A command for `program` whose environment is [`BASE_ENV`], `LC_*`, and the variables
/// of drrun's environment that `inherit` accepts; add the step's own with `.env`.
pub(crate) fn command(
    program: impl AsRef<std::ffi::OsStr>,
    inherit: &dyn Fn(&str) -> bool,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.env_clear();
    for (key, value) in std::env::vars_os() {
        let Some(name) = key.to_str() else { continue };
        if BASE_ENV.contains(&name) || name.starts_with("LC_") || inherit(name) {
            cmd.env(&key, &value);
        }
    }
    cmd
}

/// Registration of a running child's process group. Dropping it while armed kills the group.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl GroupGuard {
    fn register(pgid: i32) -> Self {
        GROUPS
            .lock()
            .unwrap()
            .get_or_insert_with(HashSet::new)
            .insert(pgid);
        Self { pgid, armed: true }
    }

    /// The child finished normally; leave its group alone.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(set) = GROUPS.lock().unwrap().as_mut() {
            set.remove(&self.pgid);
        }
        if self.armed {
            signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: killpg has no memory-safety preconditions; errors (ESRCH) are expected.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

/// Kills every registered group at once (second Ctrl-C).
pub(crate) fn kill_all_groups() {
    if let Some(set) = GROUPS.lock().unwrap().as_ref() {
        for pgid in set {
            signal_group(*pgid, libc::SIGKILL);
        }
    }
}

/// Whether any process of the group is still alive.
fn group_alive(pgid: i32) -> bool {
    // SAFETY: killpg with signal 0 only checks for existence.
    pgid > 0 && unsafe { libc::killpg(pgid, 0) } == 0
}

/// Signals the group, gives it `grace` to exit, then SIGKILLs what is left. The grace
/// covers the whole group, not only its leader: `pg_restore -j`'s workers are still
/// sending their cancel requests to the server when the leader has exited.
async fn terminate(child: &mut tokio::process::Child, pgid: i32, signal: i32, grace: Duration) {
    signal_group(pgid, signal);
    let deadline = tokio::time::Instant::now() + grace;
    if tokio::time::timeout_at(deadline, child.wait())
        .await
        .is_err()
    {
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    }
    while group_alive(pgid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stragglers that ignored the signal and outlived the grace.
    signal_group(pgid, libc::SIGKILL);
}

/// What the child reads on its standard input.
pub(crate) enum Stdin {
    Null,
    Bytes(Vec<u8>),
    /// A stream copied through (an S3 object into `pg_restore`); `progress` gets the
    /// bytes copied so far.
    Stream(
        Box<dyn AsyncRead + Send + Unpin>,
        Box<dyn Fn(u64) + Send + Sync>,
    ),
}

impl From<Option<Vec<u8>>> for Stdin {
    fn from(bytes: Option<Vec<u8>>) -> Self {
        bytes.map_or(Stdin::Null, Stdin::Bytes)
    }
}

/// Which of a child's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Sees each line of a child's output as it comes (live output, step logs, a restore's
/// progress). For standard error it also decides whether the line is kept in
/// [`Finished::stderr`] (false drops chatter such as `pg_restore -v`'s).
pub(crate) type LineObserver = Arc<dyn Fn(Stream, &str) -> bool + Send + Sync>;

/// How to run a child and how much of its output to keep.
#[derive(Clone)]
pub(crate) struct Limits {
    /// Keep at most this many bytes of standard output (its beginning).
    pub(crate) stdout_head: usize,
    /// Keep at most this many bytes of standard error (its end).
    pub(crate) stderr_tail: usize,
    /// Kill the child when it runs longer.
    pub(crate) time: Option<Duration>,
    /// How long the group gets between the stop signal and SIGKILL.
    pub(crate) grace: Duration,
    /// The signal that asks the child to stop: SIGTERM, or SIGINT for PostgreSQL's
    /// clients, which cancel their statement on the server only on SIGINT (psql).
    pub(crate) stop_signal: i32,
    /// Called for every line of output, when set.
    pub(crate) lines: Option<LineObserver>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("stdout_head", &self.stdout_head)
            .field("stderr_tail", &self.stderr_tail)
            .field("time", &self.time)
            .field("lines", &self.lines.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            stdout_head: usize::MAX,
            stderr_tail: usize::MAX,
            time: None,
            grace: Duration::from_secs(5),
            stop_signal: libc::SIGTERM,
            lines: None,
        }
    }
}

/// A child that ran to its end.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stdout_truncated: bool,
    pub(crate) stderr: Vec<u8>,
}

impl Finished {
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// `exited with code 3` or `was killed by signal 9`.
    pub(crate) fn how(&self) -> String {
        use std::os::unix::process::ExitStatusExt;
        match self.status.code() {
            Some(c) => format!("exited with code {c}"),
            None => format!("was killed by signal {}", self.status.signal().unwrap_or(0)),
        }
    }
}

/// Why a child did not run to its end.
#[derive(Debug)]
pub(crate) enum RunError {
    Spawn(std::io::Error),
    Wait(std::io::Error),
    /// Cancelled; the process group was terminated.
    Cancelled,
    /// Ran past `Limits::time`; the process group was terminated.
    TimedOut(Duration),
    /// The input stream broke off.
    Input(String),
}

/// Runs `cmd` (in a process group of its own) to its end, feeding `stdin`. On
/// cancellation or timeout the group gets `limits.stop_signal`, `limits.grace`, then
/// SIGKILL. The child dies with drrun: if drrun is killed (SIGKILL leaves no chance to
/// clean up), the kernel sends the child SIGKILL (`PR_SET_PDEATHSIG`), so a resume never
/// runs a step beside its predecessor's processes.
pub(crate) async fn run(
    mut cmd: tokio::process::Command,
    stdin: Stdin,
    limits: &Limits,
    cancel: &CancellationToken,
) -> Result<Finished, RunError> {
    cmd.stdin(if matches!(stdin, Stdin::Null) {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let parent = std::process::id() as i32;
    // SAFETY: between fork and exec only async-signal-safe calls: prctl, getppid, _exit.
    unsafe {
        cmd.pre_exec(move || {
            // Delivered when the thread that forked the child exits: spawns happen on
            // the runtime's worker threads, which live as long as drrun does.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // drrun died between fork and prctl: do not outlive it.
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let pgid = child.id().map_or(0, |id| id as i32);
    let mut group = GroupGuard::register(pgid);
    let input_error = Arc::new(Mutex::new(None::<String>));
    let feeder = child.stdin.take().map(|pipe| {
        let error = input_error.clone();
        tokio::spawn(feed(pipe, stdin, error))
    });
    let stdout = tokio::spawn(read_head(
        child.stdout.take(),
        limits.stdout_head,
        limits.lines.clone(),
    ));
    let stderr = tokio::spawn(read_tail(
        child.stderr.take(),
        limits.stderr_tail,
        limits.lines.clone(),
    ));
    let time = limits.time.unwrap_or(Duration::MAX);
    let status = tokio::select! {
        status = child.wait() => status.map_err(RunError::Wait)?,
        () = cancel.cancelled() => {
            terminate(&mut child, pgid, limits.stop_signal, limits.grace).await;
            group.disarm();
            return Err(RunError::Cancelled);
        }
        () = tokio::time::sleep(time) => {
            terminate(&mut child, pgid, limits.stop_signal, limits.grace).await;
            group.disarm();
            return Err(RunError::TimedOut(time));
        }
    };
    group.disarm();
    // A background grandchild may hold the pipes open; do not wait for it forever.
    let grace = Duration::from_secs(2);
    if let Some(f) = feeder {
        let _ = tokio::time::timeout(grace, f).await;
    }
    let (stdout, stdout_truncated) = tokio::time::timeout(grace, stdout)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let stderr = tokio::time::timeout(grace, stderr)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    if let Some(e) = input_error.lock().unwrap().take() {
        return Err(RunError::Input(e));
    }
    Ok(Finished {
        status,
        stdout,
        stdout_truncated,
        stderr,
    })
}

async fn feed(
    mut pipe: tokio::process::ChildStdin,
    stdin: Stdin,
    error: Arc<Mutex<Option<String>>>,
) {
    match stdin {
        Stdin::Null => {}
        // The reader exiting early is reported through its own exit code.
        Stdin::Bytes(data) => {
            let _ = pipe.write_all(&data).await;
        }
        Stdin::Stream(mut reader, progress) => {
            let mut buf = vec![0u8; 256 << 10];
            let mut copied = 0u64;
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if pipe.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        copied += n as u64;
                        progress(copied);
                    }
                    Err(e) => {
                        *error.lock().unwrap() = Some(super::error_chain(&e));
                        break;
                    }
                }
            }
        }
    }
    // Dropping the pipe closes the reader's stdin.
}

/// Splits a stream into lines for an observer; what the observer keeps is returned.
struct LineSplitter {
    observer: LineObserver,
    stream: Stream,
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `bytes`, appending what is kept to `kept`.
    fn feed(&mut self, bytes: &[u8], kept: &mut Vec<u8>) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.emit(&line, kept);
        }
    }

    fn finish(&mut self, kept: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line, kept);
        }
    }

    fn emit(&self, line: &[u8], kept: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(line);
        if (self.observer)(self.stream, text.trim_end_matches(['\n', '\r'])) {
            kept.extend_from_slice(line);
        }
    }
}

async fn read_head(
    reader: Option<impl AsyncRead + Unpin>,
    limit: usize,
    lines: Option<LineObserver>,
) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let Some(mut reader) = reader else {
        return (kept, truncated);
    };
    let mut splitter = lines.map(|observer| LineSplitter {
        observer,
        stream: Stream::Stdout,
        partial: Vec::new(),
    });
    let mut sink = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Standard output is kept whole (outputs parse it); the observer only sees it.
                if let Some(s) = splitter.as_mut() {
                    s.feed(&buf[..n], &mut sink);
                    sink.clear();
                }
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    if let Some(s) = splitter.as_mut() {
        s.finish(&mut sink);
    }
    (kept, truncated)
}

async fn read_tail(
    reader: Option<impl AsyncRead + Unpin>,
    keep: usize,
    lines: Option<LineObserver>,
) -> Vec<u8> {
    let mut tail = Vec::new();
    let Some(mut reader) = reader else {
        return tail;
    };
    let mut splitter = lines.map(|observer| LineSplitter {
        observer,
        stream: Stream::Stderr,
        partial: Vec::new(),
    });
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                match splitter.as_mut() {
                    Some(s) => s.feed(&buf[..n], &mut tail),
                    None => tail.extend_from_slice(&buf[..n]),
                }
                if tail.len() > keep.saturating_mul(2) {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
    if let Some(s) = splitter.as_mut() {
        s.finish(&mut tail);
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[tokio::test]
    async fn keeps_the_head_of_stdout_and_the_tail_of_stderr() {
        let limits = Limits {
            stdout_head: 4,
            stderr_tail: 3,
            ..Limits::default()
        };
        let cancel = CancellationToken::new();
        let out = run(
            sh("cat; echo abcdef >&2"),
            Stdin::Bytes(b"123456".to_vec()),
            &limits,
            &cancel,
        )
        .await
        .unwrap();
        assert_eq!(out.stdout, b"1234");
        assert!(out.stdout_truncated);
        assert_eq!(out.stderr, b"ef\n");
        assert_eq!(out.code(), Some(0));
    }

    #[tokio::test]
    async fn a_time_limit_kills_the_whole_group() {
        let limits = Limits {
            time: Some(Duration::from_millis(200)),
            grace: Duration::from_millis(100),
            ..Limits::default()
        };
        let cancel = CancellationToken::new();
        let err = run(sh("sleep 30 & sleep 30"), Stdin::Null, &limits, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, RunError::TimedOut(_)), "{err:?}");
    }
}
