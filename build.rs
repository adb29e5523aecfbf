//! Stamps the commit drrun is built from into `--version` (DRRUN_COMMIT): `abc1234 2026-12-02`,
//! with `-dirty` when the tree had changes, or `unknown commit` outside a git checkout.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    // Rebuild when HEAD moves (a commit, a checkout), not on every build.
    for path in [".git/HEAD", ".git/index"] {
        println!("cargo:rerun-if-changed={path}");
    }
    if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo:rerun-if-changed=.git/{head}");
    }
    let commit = match git(&["log", "-1", "--format=%h %cs"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
            if dirty { format!("{c}-dirty") } else { c }
        }
        None => "unknown commit".to_string(),
    };
    println!("cargo:rustc-env=DRRUN_COMMIT={commit}");
}
