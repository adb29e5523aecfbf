//! Archive formats, detected from the file (never its name), a table of contents in
//! one line, and the errors a restore printed.

use std::path::Path;

use crate::outcome::{Failure, FailureClass};

/// Archive formats, detected from the file's first bytes (never its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Custom,
    Directory,
    Tar,
    Plain,
    PlainGzip,
}

impl Format {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Custom => "custom",
            Self::Directory => "directory",
            Self::Tar => "tar",
            Self::Plain => "plain",
            Self::PlainGzip => "plain-gzip",
        }
    }

    pub(super) fn uses_pg_restore(self) -> bool {
        matches!(self, Self::Custom | Self::Directory | Self::Tar)
    }
}

pub(super) fn detect_format(path: &Path) -> Result<Format, Failure> {
    if path.is_dir() {
        return if path.join("toc.dat").exists() {
            Ok(Format::Directory)
        } else {
            Err(Failure::config(format!(
                "{} is a directory without toc.dat: not a pg_dump directory archive",
                path.display()
            )))
        };
    }
    let mut head = vec![0u8; 512];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path)
            .map_err(|e| Failure::config(format!("cannot open archive {}: {e}", path.display())))?;
        let mut total = 0;
        while total < head.len() {
            match f.read(&mut head[total..]) {
                Ok(0) => break,
                Ok(k) => total += k,
                Err(e) => {
                    return Err(Failure::config(format!(
                        "cannot read archive {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        total
    };
    let head = &head[..n];
    if n == 0 {
        return Err(Failure::new(
            FailureClass::Assertion,
            format!("archive {} is empty", path.display()),
        ));
    }
    Ok(if head.starts_with(b"PGDMP") {
        Format::Custom
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Format::PlainGzip
    } else if n >= 262 && &head[257..262] == b"ustar" {
        Format::Tar
    } else {
        Format::Plain
    })
}

/// Restore errors from stderr: pg_restore's `pg_restore: error: ...` and psql's
/// `psql:FILE:LINE: ERROR: ...`, each with its `Command was:` context when given.
///
/// Parallel jobs (`--jobs`) share one stderr, and pg_restore writes its `pg_restore: `
/// prefix, the level and the message in separate writes: another job's line can land in
/// the middle of an error (`pg_restore: error: pg_restore: processing data for table
/// "x"`, the error's text then alone on the next line). Lines are split where a prefix
/// begins, and an error cut off takes the next text that is not another job's chatter;
/// one whose text is lost still counts, so the drill fails closed. (pg_restore's own
/// `errors ignored on restore: N` is no check: with jobs it counts more than it prints.)
pub(super) fn restore_errors(stderr: &str) -> Vec<String> {
    let mut errors: Vec<String> = Vec::new();
    let mut pending = false;
    for raw in stderr.lines() {
        for line in segments(raw) {
            if let Some(rest) = line.strip_prefix("pg_restore: error: ") {
                let rest = rest.trim();
                pending = rest.is_empty();
                if !pending {
                    errors.push(rest.to_string());
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("pg_restore: ") {
                let context = ["warning:", "from TOC entry", "while PROCESSING", "error:"]
                    .iter()
                    .any(|c| rest.starts_with(c));
                if pending
                    && !rest.trim().is_empty()
                    && !context
                    && !super::progress::is_chatter(rest)
                {
                    errors.push(rest.trim().to_string());
                    pending = false;
                }
                continue;
            }
            if pending && !line.trim().is_empty() && !line.starts_with("Command was: ") {
                // The message of the error another job's line cut off.
                errors.push(line.trim().to_string());
                pending = false;
                continue;
            }
            parse_other(line, &mut errors);
        }
    }
    if pending {
        errors.push("an error whose text was lost in pg_restore's interleaved output".into());
    }
    errors
}

/// `line` cut before every `pg_restore: ` that does not begin it.
fn segments(line: &str) -> Vec<&str> {
    let mut cuts: Vec<usize> = line
        .match_indices("pg_restore: ")
        .map(|(i, _)| i)
        .filter(|i| *i > 0)
        .collect();
    cuts.insert(0, 0);
    cuts.push(line.len());
    cuts.windows(2)
        .map(|w| &line[w[0]..w[1]])
        .filter(|s| !s.is_empty())
        .collect()
}

/// psql's errors and the `Command was:` context of the last error.
fn parse_other(line: &str, errors: &mut Vec<String>) {
    if line.starts_with("psql:") && line.contains("ERROR:") {
        errors.push(
            line.splitn(4, ':')
                .nth(3)
                .unwrap_or(line)
                .trim()
                .to_string(),
        );
    } else if let Some(cmd) = line.strip_prefix("Command was: ")
        && let Some(last) = errors.last_mut()
    {
        last.push_str(&format!(" (command: {})", cmd.trim()));
    }
}

/// "12 tables, 12 table data, 20 indexes; dumped by pg_dump 15.18 from 15.18".
pub(super) fn toc_summary(toc: &str) -> String {
    let mut counts: indexmap::IndexMap<&str, usize> = indexmap::IndexMap::new();
    for line in toc
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
    {
        // "215; 1259 16386 TABLE public users postgres"
        let kind = [
            "TABLE DATA",
            "TABLE",
            "INDEX",
            "SEQUENCE",
            "CONSTRAINT",
            "FK CONSTRAINT",
            "EXTENSION",
            "VIEW",
            "FUNCTION",
        ]
        .into_iter()
        .find(|k| line.contains(&format!(" {k} ")));
        *counts.entry(kind.unwrap_or("other")).or_default() += 1;
    }
    let version = |label: &str| {
        toc.lines()
            .find(|l| l.contains(label))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
    };
    let parts: Vec<String> = counts
        .iter()
        .map(|(k, n)| format!("{n} {}", k.to_lowercase()))
        .collect();
    format!(
        "{}; dumped by pg_dump {} from server {}",
        parts.join(", "),
        version("Dumped by pg_dump version").unwrap_or_else(|| "?".into()),
        version("Dumped from database version").unwrap_or_else(|| "?".into())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_errors_with_their_commands() {
        let stderr = "pg_restore: while PROCESSING TOC:\n\
            pg_restore: from TOC entry 5; 1259 16385 TABLE t postgres\n\
            pg_restore: error: could not execute query: ERROR:  relation \"t\" already exists\n\
            Command was: CREATE TABLE public.t (id integer);\n\
            pg_restore: warning: errors ignored on restore: 1\n";
        assert_eq!(
            restore_errors(stderr),
            vec![
                "could not execute query: ERROR:  relation \"t\" already exists (command: CREATE TABLE public.t (id integer);)"
            ]
        );
        assert_eq!(
            restore_errors("psql:/x.sql:12: ERROR:  syntax error at or near \"x\"\n"),
            vec!["ERROR:  syntax error at or near \"x\""]
        );
    }

    /// Two jobs writing at once, as seen in a CI run: another job's line inside an error.
    #[test]
    fn an_error_cut_by_another_jobs_line_keeps_its_text() {
        let stderr = "pg_restore: error: pg_restore: processing data for table \"public.pages\"\n\
            could not execute query: ERROR:  relation \"pages\" already exists\n\
            Command was: CREATE TABLE public.pages ();\n\
            pg_restore: warning: errors ignored on restore: 1\n";
        assert_eq!(
            restore_errors(stderr),
            vec![
                "could not execute query: ERROR:  relation \"pages\" already exists (command: CREATE TABLE public.pages ();)"
            ]
        );
        // Another job's prefix before an error: the error is still read.
        let stderr = "pg_restore: pg_restore: error: could not execute query: ERROR:  x\n\
            processing data for table \"public.t\"\n\
            pg_restore: warning: errors ignored on restore: 1\n";
        assert_eq!(
            restore_errors(stderr),
            vec!["could not execute query: ERROR:  x"]
        );
        // An error whose text is lost entirely still counts.
        let errors = restore_errors("pg_restore: error: pg_restore: creating INDEX \"public.i\"\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("text was lost"), "{errors:?}");
    }
}
