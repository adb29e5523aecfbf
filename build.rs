//! Stamps the commit drrun is built from into `--version` (DRRUN_COMMIT): `abc1234 2026-12-02`,
//! or `unknown commit` outside a git checkout. No `-dirty` mark: build scripts rerun only
//! when the files they name change, so it would be stale after the next edit.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    // Rerun when HEAD moves, not on every build. HEAD's reflog moves on every commit,
    // checkout and reset, whether the branch is a loose ref or packed (a fresh clone).
    // Only files that exist are named: a missing one would rerun this on every build.
    for path in [".git/HEAD", ".git/logs/HEAD"] {
        if std::path::Path::new(path).is_file() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = git(&["log", "-1", "--format=%h %cs"]).unwrap_or_else(|| "unknown commit".into());
    println!("cargo:rustc-env=DRRUN_COMMIT={commit}");
}
