//! A throwaway `PostgreSQL` cluster for one test process: `initdb` + `pg_ctl` from the
//! machine's server binaries, on a unix socket in a temp dir, password auth, stopped
//! and removed on drop. initdb refuses to run as root, so as root the server runs as
//! the `postgres` system user (created by Debian's postgresql packages).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) const PASSWORD: &str = "drrun-test-pw";

pub(crate) struct Cluster {
    pub dir: tempfile::TempDir,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub bin: PathBuf,
}

/// The directory holding `initdb` and friends; fails loudly when there is none.
pub(crate) fn server_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries are required: /usr/lib/postgresql is missing (scripts/test installs them)")
        .filter_map(std::result::Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect(
        "no /usr/lib/postgresql/*/bin/initdb: install the PostgreSQL server (scripts/test does)",
    )
}

fn as_server_user(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } == 0 {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Cluster {
    pub(crate) fn start() -> Self {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("drrun-pg-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir).unwrap();
        std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644)).unwrap();
        let status = as_server_user(&bin.join("initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        let port = free_port();
        let opts = format!(
            "-k {} -p {port} -c listen_addresses='' -c fsync=off",
            socket_dir.display()
        );
        let status = as_server_user(&bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-o", &opts, "-l"])
            .arg(dir.path().join("log"))
            .args(["-w", "start"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(
            status.success(),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        Self {
            dir,
            socket_dir,
            port,
            bin,
        }
    }

    /// `postgresql://postgres:PASSWORD@/DB?host=SOCKET&port=PORT`
    pub(crate) fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres:{PASSWORD}@/{db}?host={}&port={}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// Runs SQL with psql against `db`; panics on error; returns unaligned tuples.
    pub(crate) fn sql(&self, db: &str, sql: &str) -> String {
        let out = self
            .client("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A client program with the connection in its environment.
    pub(crate) fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.env("PGHOST", &self.socket_dir)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", PASSWORD);
        cmd
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.dir.path().join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
