//! Playbook diagnostics: every problem the loader and compiler find, with the file,
//! line, column and field path it concerns. Rendered in exactly one place (here).

use std::fmt;

use serde::Serialize;

/// A 1-based line and column in a playbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Diagnostic {
    /// The playbook file as the user named it.
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted field path (`steps.restore.with.archive`); empty for the whole document.
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// The offending source line, for the caret display.
    #[serde(skip)]
    pub source_line: Option<String>,
}

impl Diagnostic {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: String::new(),
            line: 1,
            column: 1,
            path: path.into(),
            message: message.into(),
            help: None,
            source_line: None,
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub(crate) fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    pub(crate) fn at(mut self, pos: Pos) -> Self {
        self.line = pos.line;
        self.column = pos.col;
        self
    }

    /// Fills in the file name and source line once the position is known.
    pub(crate) fn locate(mut self, file: &str, source: &str) -> Self {
        self.file = file.to_string();
        self.source_line = source
            .lines()
            .nth(self.line.saturating_sub(1))
            .map(str::to_string);
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        let at = if self.path.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.path)
        };
        writeln!(f, "  --> {}:{}:{}{at}", self.file, self.line, self.column)?;
        if let Some(src) = &self.source_line {
            let gutter = self.line.to_string();
            let pad = " ".repeat(gutter.len());
            writeln!(f, "{pad} |")?;
            writeln!(f, "{gutter} | {src}")?;
            writeln!(f, "{pad} | {}^", " ".repeat(self.column.saturating_sub(1)))?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

/// All diagnostics of one playbook, in source order.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub(crate) fn sorted(mut self) -> Self {
        self.0
            .sort_by(|a, b| (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message)));
        self.0.dedup();
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        if let Some(first) = self.0.first() {
            let n = self.0.len();
            write!(
                f,
                "{}: {n} error{}",
                first.file,
                if n == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, if close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        let score = strsim::jaro_winkler(word, candidate);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// "did you mean `x`?" for the closest candidate, if any is close.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let kinds = ["s3.fetch", "pg.restore", "kube.scale"];
        assert_eq!(
            did_you_mean("s3.fetc", kinds).as_deref(),
            Some("did you mean `s3.fetch`?")
        );
        assert_eq!(
            did_you_mean("kube.scal", kinds).as_deref(),
            Some("did you mean `kube.scale`?")
        );
        assert_eq!(did_you_mean("zzz", kinds), None);
    }
}
