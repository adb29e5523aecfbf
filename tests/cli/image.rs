//! The container image's runtime layout (deploy/image/Containerfile), tested where no
//! image builder runs: scripts/image-rootfs builds the same Debian suite, packages and
//! non-root user as a directory tree, and drrun and pg_restore run in it, chrooted, as
//! that user.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::pg::Cluster;

const UID: &str = "10001";

fn rootfs() -> PathBuf {
    let root = std::env::var_os("DRRUN_TEST_IMAGE_ROOTFS").map(PathBuf::from).expect(
        "DRRUN_TEST_IMAGE_ROOTFS names the image's runtime tree: scripts/image-rootfs builds it (scripts/test does)",
    );
    assert!(
        root.join(".drrun-complete").exists(),
        "{} is not a finished tree from scripts/image-rootfs",
        root.display()
    );
    root
}

/// Runs `args` in the tree as the image's user, with the image's environment.
fn as_drrun_user(root: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("chroot")
        .arg(format!("--userspec={UID}:{UID}"))
        .arg(root)
        .args([
            "env",
            "-i",
            "HOME=/home/drrun",
            "DRRUN_CACHE_DIR=/var/cache/drrun",
            "PATH=/usr/lib/postgresql/17/bin:/usr/local/bin:/usr/bin:/bin",
            "NO_COLOR=1",
        ])
        .args(args)
        .output()
        .expect("chroot runs (the tests run as root)");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_image_layout_runs_drrun_and_a_newer_pg_restore_as_its_non_root_user() {
    let root = rootfs();
    let tag = format!("test-{}", std::process::id());
    let bin = root.join(format!("usr/local/bin/drrun-{tag}"));
    std::fs::copy(env!("CARGO_BIN_EXE_drrun"), &bin).unwrap();
    let work = root.join(format!("var/cache/drrun/{tag}"));
    std::fs::create_dir_all(&work).unwrap();
    // A dump from the machine's server (an older major than the image's client).
    let c = Cluster::start();
    c.sql("postgres", "CREATE DATABASE src");
    c.sql(
        "src",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);",
    );
    let dump = work.join("src.pgdump");
    let status = Command::new(c.bin.join("pg_dump"))
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg(c.url("src"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        work.join("p.yaml"),
        "version: 1\nname: image\nsteps:\n  one: { kind: exec, with: { argv: [id, -u] } }\n",
    )
    .unwrap();
    let chown = Command::new("chown")
        .args(["-R", &format!("{UID}:{UID}")])
        .arg(&work)
        .status()
        .unwrap();
    assert!(chown.success());
    let inside = |p: &str| format!("/var/cache/drrun/{tag}/{p}");
    let drrun = format!("/usr/local/bin/drrun-{tag}");

    let checks = || {
        let (code, text) = as_drrun_user(&root, &["id", "-u"]);
        assert_eq!(
            (code, text.trim()),
            (0, UID),
            "the image's user is not root"
        );
        let (code, text) = as_drrun_user(&root, &[&drrun, "--version"]);
        assert_eq!(code, 0, "{text}");
        assert!(text.starts_with("drrun "), "{text}");
        let (code, text) = as_drrun_user(&root, &["pg_restore", "--version"]);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("(PostgreSQL) 17."), "{text}");
        // The image's pg_restore reads the older server's dump.
        let (code, text) = as_drrun_user(&root, &["pg_restore", "-l", &inside("src.pgdump")]);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("TABLE DATA public t"), "{text}");
        // A drill runs there as that user, its state where the image keeps it.
        let (code, text) = as_drrun_user(
            &root,
            &[
                &drrun,
                "run",
                &inside("p.yaml"),
                "--state-dir",
                &inside("state"),
            ],
        );
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("drill PASSED"), "{text}");
        // Nothing outside its own directories is writable to it.
        let (code, _) = as_drrun_user(&root, &["touch", "/usr/local/bin/x"]);
        assert_ne!(code, 0, "the user can write to /usr/local/bin");
    };
    let result = std::panic::catch_unwind(checks);
    let _ = std::fs::remove_file(&bin);
    let _ = std::fs::remove_dir_all(&work);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
