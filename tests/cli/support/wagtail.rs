//! A real Wagtail site (`tests/wagtail-site`: Wagtail and Django from PyPI, served by
//! gunicorn behind basic auth) on the throwaway `PostgreSQL`. [`production`] seeds a
//! production site once per test process and dumps it with `pg_dump -Fc`; [`Site::serve`]
//! serves a (restored) copy. `scripts/test` installs the pinned versions
//! (`scripts/lib/services.sh`, `ensure_wagtail`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::pg::Cluster;
use super::{root, wait_for};

pub(crate) const ADMIN_USER: &str = "drrun-smoke";
/// The admin's password on the seeded site: template syntax, a percent sign, quotes, `&`,
/// `+` and non-ASCII, so a value substituted more than once, or parsed, shows.
pub(crate) const ADMIN_PASSWORD: &str = "Pw{{x}}9{#y#}{%z%}%\"q'&+é漢";
pub(crate) const BASIC_USER: &str = "dr";
pub(crate) const BASIC_PASSWORD: &str = "basic-{{pw}}";

/// The virtualenv holding Wagtail, gunicorn and psycopg; fails loudly when missing.
pub(crate) fn venv() -> PathBuf {
    let dir = std::env::var_os("DRRUN_TEST_WAGTAIL_VENV").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/drrun/wagtail-8.0.1")
        },
        PathBuf::from,
    );
    assert!(
        dir.join("bin/gunicorn").exists(),
        "the test Wagtail site needs Wagtail and gunicorn in {} (scripts/test installs them: \
         scripts/lib/services.sh ensure_wagtail)",
        dir.display()
    );
    dir
}

fn site_dir() -> PathBuf {
    root().join("tests/wagtail-site")
}

fn manage(db_url: &str, media: &Path) -> Command {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.current_dir(site_dir())
        .arg("manage.py")
        .env("DRSITE_DATABASE_URL", db_url)
        .env("DRSITE_MEDIA_ROOT", media)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

fn check(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The seeded production site: its `pg_dump -Fc` archive and its media (the assets
/// bucket's content).
pub(crate) struct Production {
    pub dump: PathBuf,
    pub media: PathBuf,
}

/// Seeds production once per test process (migrate, `seed_production`, `pg_dump -Fc`) in
/// a cluster of its own, which is gone once the dump is taken.
pub(crate) fn production() -> &'static Production {
    static PROD: OnceLock<Production> = OnceLock::new();
    PROD.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wagtail-production");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let media = dir.join("media");
        let dump = dir.join("production.pgdump");
        let pg = Cluster::start();
        pg.sql("postgres", "CREATE DATABASE acme_prod");
        let url = pg.url("acme_prod");
        check(manage(&url, &media).args(["migrate", "-v0"]), "migrate");
        check(
            manage(&url, &media)
                .args(["seed_production", "--admin", ADMIN_USER])
                .args(["--last-login-hours-ago", "3"])
                .env("DRSITE_ADMIN_PASSWORD", ADMIN_PASSWORD),
            "seed_production",
        );
        check(
            pg.client("pg_dump")
                .args(["-Fc", "-d", "acme_prod", "-f"])
                .arg(&dump),
            "pg_dump",
        );
        Production { dump, media }
    })
}

impl Production {
    /// Restores the dump into a new database `db` (as a DR drill's restore would).
    pub(crate) fn restore_into(&self, pg: &Cluster, db: &str) {
        pg.sql("postgres", &format!("CREATE DATABASE {db}"));
        check(
            pg.client("pg_restore")
                .args(["--no-owner", "--no-privileges", "-d", db])
                .arg(&self.dump),
            "pg_restore",
        );
    }

    /// A copy of production's media, as the replicated assets bucket holds it.
    pub(crate) fn copy_media(&self, to: &Path) {
        copy_tree(&self.media, to);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The site served by gunicorn (one worker, four threads) on a free port.
pub(crate) struct Site {
    child: Child,
    pub base: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Site {
    /// Serves the site on database `db_url` with media in `media`, behind basic auth.
    pub(crate) fn serve(db_url: &str, media: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("drrun-wagtail-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("gunicorn.log");
        let child = Command::new(venv().join("bin/gunicorn"))
            .current_dir(site_dir())
            .args(["--bind", "127.0.0.1:0", "--workers", "1", "--threads", "4"])
            .args([
                "--no-control-socket",
                "--timeout",
                "120",
                "--graceful-timeout",
                "5",
            ])
            .arg("drsite.wsgi:application")
            .env("DRSITE_DATABASE_URL", db_url)
            .env("DRSITE_MEDIA_ROOT", media)
            .env(
                "DRSITE_BASIC_AUTH",
                format!("{BASIC_USER}:{BASIC_PASSWORD}"),
            )
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("gunicorn starts");
        let mut site = Self {
            child,
            base: String::new(),
            log,
            _dir: dir,
        };
        let re = regex::Regex::new(r"Listening at: (http://127\.0\.0\.1:\d+)").unwrap();
        let listening = wait_for(Duration::from_secs(120), || {
            let text = std::fs::read_to_string(&site.log).unwrap_or_default();
            if let Some(c) = re.captures(&text) {
                site.base = c[1].to_string();
                return true;
            }
            false
        });
        assert!(
            listening,
            "gunicorn did not start: {}",
            std::fs::read_to_string(&site.log).unwrap_or_default()
        );
        site
    }

    /// What gunicorn and Django logged (tracebacks of 500s).
    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Site {
    fn drop(&mut self) {
        // SIGTERM: gunicorn stops its worker too (SIGKILL would orphan it).
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let _ = self.child.wait();
    }
}
