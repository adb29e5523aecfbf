//! `pg.restore`'s archive check (`verify_archive`) against real pg_dump archives: written
//! to a file (the TOC holds each block's offset) and through a pipe (it does not), with
//! large objects, cut short, and with a byte flipped inside compressed data.

use std::path::{Path, PathBuf};

use crate::support::pg::Cluster;
use crate::support::{drrun, journal, run_cmd};

const SOURCE_SQL: &str = r"
CREATE TABLE events (id int PRIMARY KEY, kind text, payload text);
INSERT INTO events SELECT g, 'k' || (g % 7), md5(g::text) || repeat('x', 40) FROM generate_series(1, 40000) g;
CREATE TABLE pages (id int PRIMARY KEY, title text);
INSERT INTO pages SELECT g, 'Page ' || g FROM generate_series(1, 500) g;
SELECT lo_from_bytea(0, convert_to(repeat('image bytes ', 100), 'UTF8'));
";

fn run(dir: &Path, c: &Cluster, archive: &Path, extra: &str) -> (crate::support::Out, PathBuf) {
    let pb = dir.join("restore.yaml");
    std::fs::write(
        &pb,
        format!(
            r#"version: 1
name: archive-check
secrets:
  db_url: {{ env: DRRUN_TEST_DB_URL }}
steps:
  restore:
    kind: pg.restore
    with:
      archive: {}
      url: "{{{{ secrets.db_url }}}}"
      pg_bin: {}
      recreate: true
      no_owner: true
      {extra}
"#,
            archive.display(),
            c.bin.display()
        ),
    )
    .unwrap();
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let out = run_cmd(
        drrun()
            .current_dir(dir)
            .env("DRRUN_TEST_DB_URL", c.url("dr"))
            .arg(&pb)
            .arg("--state-dir")
            .arg(&state),
    );
    (out, state)
}

fn verified(state: &Path) -> String {
    journal(state)
        .into_iter()
        .find(|r| r["type"] == "step_succeeded" && r["step"] == "restore")
        .map(|r| r["outputs"]["verified"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// The DR database as the last good drill left it: a marker that a drop would lose.
fn mark(c: &Cluster) {
    c.sql("dr", "CREATE TABLE IF NOT EXISTS marker (note text); DELETE FROM marker; INSERT INTO marker VALUES ('previous drill')");
}

fn marker_kept(c: &Cluster) -> bool {
    c.sql("dr", "SELECT note FROM marker") == "previous drill"
}

#[test]
fn a_dump_that_is_not_whole_is_refused_before_anything_is_dropped_without_decompressing_it() {
    let c = Cluster::start();
    c.sql("postgres", "CREATE DATABASE src");
    c.sql("src", SOURCE_SQL);
    c.sql("postgres", "CREATE DATABASE dr");
    let dir = tempfile::tempdir().unwrap();
    let seekable = dir.path().join("seekable.pgdump");
    let out = c
        .client("pg_dump")
        .args(["-Fc", "-d", "src", "-f"])
        .arg(&seekable)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Through a pipe, pg_dump cannot go back to write the blocks' offsets into the TOC.
    let piped = dir.path().join("piped.pgdump");
    let out = c
        .client("pg_dump")
        .args(["-Fc", "-d", "src"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&piped, &out.stdout).unwrap();

    // Whole archives of both kinds pass the block check, large objects included.
    for archive in [&seekable, &piped] {
        let (out, state) = run(dir.path(), &c, archive, "");
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        assert_eq!(verified(&state), "blocks");
        assert!(
            out.stderr.contains("archive whole: 3 data block(s)")
                && out
                    .stderr
                    .contains("the largest is TABLE DATA public.events"),
            "{}\n{}",
            out.stdout,
            out.stderr
        );
        assert_eq!(c.sql("dr", "SELECT count(*) FROM events"), "40000");
        assert_eq!(
            c.sql("dr", "SELECT count(*) FROM pg_largeobject_metadata"),
            "1"
        );
    }

    // Cut short anywhere, in the middle of a table's data or at a block's boundary (the
    // large objects, the last block, are gone): refused, and the DR database is intact.
    let whole = std::fs::read(&seekable).unwrap();
    let piped_whole = std::fs::read(&piped).unwrap();
    let cuts = [
        (
            "half.pgdump",
            whole[..whole.len() / 2].to_vec(),
            "inside the data of TABLE DATA public.events",
        ),
        (
            "tail.pgdump",
            piped_whole[..piped_whole.len() - 3].to_vec(),
            "the large objects",
        ),
    ];
    for (name, bytes, says) in cuts {
        mark(&c);
        let cut = dir.path().join(name);
        std::fs::write(&cut, bytes).unwrap();
        let (out, _) = run(dir.path(), &c, &cut, "");
        assert_eq!(out.code, 1, "{name}: {}", out.stdout);
        assert!(
            out.stderr.contains("is truncated or corrupt") && out.stderr.contains(says),
            "{name}: {}",
            out.stderr
        );
        assert!(marker_kept(&c), "{name}: nothing was dropped");
    }

    // A byte flipped inside the compressed data of a table: the framing is whole, so the
    // block check passes and the restore itself fails, saying what it left behind ...
    let mut flipped = whole.clone();
    let at = whole.len() / 2;
    flipped[at] ^= 0x55;
    let bad = dir.path().join("flipped.pgdump");
    std::fs::write(&bad, &flipped).unwrap();
    mark(&c);
    let (out, _) = run(dir.path(), &c, &bad, "");
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("archive whole") && !out.stderr.contains("is truncated or corrupt"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.contains("partial restore"), "{}", out.stderr);
    // ... while `full` decompresses everything first and refuses it with the DR database kept.
    mark(&c);
    let (out, _) = run(dir.path(), &c, &bad, "verify_archive: full");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("is truncated or corrupt"),
        "{}",
        out.stderr
    );
    assert!(marker_kept(&c), "full: nothing was dropped");

    // `true` is the full read it always was; a misspelt mode is refused before anything runs.
    let (out, state) = run(dir.path(), &c, &seekable, "verify_archive: true");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(verified(&state), "full");
    let (out, _) = run(dir.path(), &c, &seekable, "verify_archive: blocs");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("restore.yaml:")
            && out
                .stderr
                .contains("`verify_archive` is `blocks`, `full`, `off`"),
        "{}",
        out.stderr
    );
}
