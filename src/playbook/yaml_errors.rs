//! The YAML parser's complaints in the user's terms, on the line the mistake is on. The
//! scanner reports where it noticed a problem, which is often a line or more after the
//! cause (a missing `:`, an unclosed quote, a tab): these rules look back for the cause.

use super::spans::Pos;

/// What to tell the user about a YAML syntax error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Explained {
    pub message: String,
    pub help: Option<String>,
    pub pos: Pos,
}

/// Explains the parser's `message`, reported at `pos`, for the document `text`.
pub(crate) fn explain(text: &str, message: &str, pos: Pos) -> Explained {
    let lines: Vec<&str> = text.lines().collect();
    let upto = pos.line.clamp(1, lines.len().max(1));
    let plain = |message: String, help: Option<String>, pos: Pos| Explained { message, help, pos };
    // A tab in the indentation of any line up to the error: YAML allows spaces only.
    if let Some((i, col)) = lines[..upto.min(lines.len())]
        .iter()
        .enumerate()
        .find_map(|(i, l)| {
            let indent: String = l.chars().take_while(|c| c.is_whitespace()).collect();
            indent.find('\t').map(|c| (i, c + 1))
        })
    {
        return plain(
            "a tab in the indentation: YAML indents with spaces only".into(),
            Some("replace the tab with spaces (two per level, as in the rest of the file)".into()),
            Pos { line: i + 1, col },
        );
    }
    // A quoted value opened and not closed on its line: the parser read on past it.
    if let Some(i) = (0..upto.min(lines.len())).find(|&i| unclosed_quote(lines[i]).is_some()) {
        let col = unclosed_quote(lines[i]).unwrap_or(0) + 1;
        if i + 1 < pos.line {
            return plain(
                "this quoted value is not closed on its line".into(),
                Some(format!(
                    "add the closing quote; the parser read on to line {} looking for it",
                    pos.line
                )),
                Pos { line: i + 1, col },
            );
        }
    }
    // serde_yaml reports a duplicate key at the start of its mapping: point at the second one.
    if let Some(key) = message
        .split("duplicate entry with key \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
    {
        let col = pos.col.saturating_sub(1);
        let same_key = |l: &&str| {
            l.len() > col
                && l[..col].trim().is_empty()
                && l[col..]
                    .strip_prefix(key)
                    .is_some_and(|r| r.trim_start().starts_with(':'))
        };
        let mut seen = lines
            .iter()
            .enumerate()
            .skip(pos.line.saturating_sub(1))
            .filter(|(_, l)| same_key(l));
        if let (Some((first, _)), Some((second, _))) = (seen.next(), seen.next()) {
            return plain(
                format!("`{key}` is given twice in this mapping"),
                Some(format!("the first is on line {}; keep one", first + 1)),
                Pos {
                    line: second + 1,
                    col: pos.col,
                },
            );
        }
    }
    if message.starts_with("could not find expected ':'") {
        // The cause is the last line with content before the place it was noticed.
        if let Some(i) = last_content_line(&lines, upto) {
            let line = lines[i];
            let col = line.len() - line.trim_start().len() + 1;
            return plain(
                format!("expected `key: value`, found `{}`", line.trim()),
                Some("a mapping entry needs a `:` and a space after its key".into()),
                Pos { line: i + 1, col },
            );
        }
    }
    if message.starts_with("mapping values are not allowed") {
        let line = lines.get(pos.line.saturating_sub(1)).copied().unwrap_or("");
        let first_colon = line.find(": ").map(|c| c + 1);
        if let Some(first) = first_colon
            && pos.col > first + 1
            && !line.trim_start().starts_with('-')
        {
            return plain(
                "a value containing `: ` must be quoted".into(),
                Some(format!(
                    "write `{}: \"{}\"`",
                    line[..first - 1].trim(),
                    line[first + 1..].trim()
                )),
                pos,
            );
        }
        if let Some(prev) = last_content_line(&lines, pos.line.saturating_sub(1)) {
            let indent = |l: &str| l.len() - l.trim_start().len();
            let key = lines[prev]
                .trim()
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if indent(line) > indent(lines[prev]) {
                return plain(
                    format!(
                        "this line is indented more than `{key}` above it, which already has its value"
                    ),
                    Some(format!(
                        "indent it like `{key}` ({} spaces) to make it a sibling, or give `{key}` no value on its own line to nest under it",
                        indent(lines[prev])
                    )),
                    Pos {
                        line: pos.line,
                        col: indent(line) + 1,
                    },
                );
            }
        }
    }
    if message.starts_with("did not find expected key") {
        let line = lines.get(pos.line.saturating_sub(1)).copied().unwrap_or("");
        return plain(
            "this line's indentation does not match the entries around it".into(),
            Some("entries of one mapping start in the same column; a nested one is indented further than its key".into()),
            Pos { line: pos.line, col: line.len() - line.trim_start().len() + 1 },
        );
    }
    for (open, close) in [('{', '}'), ('[', ']')] {
        if message.contains(&format!("expected ',' or '{close}'"))
            && let Some((i, col)) = unbalanced(&lines[..upto.min(lines.len())], open, close)
        {
            return plain(
                format!("this `{open}` is not closed"),
                Some(format!("add the `{close}` at the end of the entry")),
                Pos {
                    line: i + 1,
                    col: col + 1,
                },
            );
        }
    }
    plain(message.to_string(), None, pos)
}

/// The index of the last line before line `before` (1-based) that is not blank or a comment.
fn last_content_line(lines: &[&str], before: usize) -> Option<usize> {
    (0..before.min(lines.len())).rev().find(|&i| {
        let t = lines[i].trim();
        !t.is_empty() && !t.starts_with('#')
    })
}

/// Where a double-quoted value opens without closing on the line, outside comments.
fn unclosed_quote(line: &str) -> Option<usize> {
    let mut open: Option<usize> = None;
    let mut single = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match (open, c) {
            (None, '#') if !single && (i == 0 || line[..i].ends_with(' ')) => break,
            (None, '\'') => single = !single,
            (None, '"') if !single => open = Some(i),
            (Some(_), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(_), '"') if !escaped => open = None,
            _ => {}
        }
        escaped = false;
    }
    open
}

/// The last `open` not closed within the lines, as (line index, column index).
fn unbalanced(lines: &[&str], open: char, close: char) -> Option<(usize, usize)> {
    let mut stack = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut quote: Option<char> = None;
        for (col, c) in line.char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '#') if col == 0 || line[..col].ends_with(' ') => break,
                (None, c) if c == open => stack.push((i, col)),
                (None, c) if c == close => {
                    stack.pop();
                }
                _ => {}
            }
        }
    }
    stack.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }

    #[test]
    fn a_missing_colon_is_reported_on_its_own_line() {
        let text = "vars:\n  a: 1\n  b 2\n  # note\n  c: 3\n";
        let e = explain(text, "could not find expected ':'", at(4, 3));
        assert_eq!(e.pos, at(3, 3));
        assert_eq!(e.message, "expected `key: value`, found `b 2`");
    }

    #[test]
    fn a_duplicate_key_points_at_the_second() {
        let text = "a:\n  b: 1\n  c: 2\n  b: 3\n";
        let e = explain(text, "a: duplicate entry with key \"b\"", at(2, 3));
        assert_eq!(e.pos, at(4, 3));
        assert_eq!(e.message, "`b` is given twice in this mapping");
    }

    #[test]
    fn a_tab_is_named() {
        let text = "vars:\n\ta: 1\n";
        let e = explain(
            text,
            "found character that cannot start any token",
            at(2, 1),
        );
        assert!(e.message.contains("tab"), "{e:?}");
        assert_eq!(e.pos, at(2, 1));
    }

    #[test]
    fn an_unclosed_quote_is_found_where_it_opens() {
        let text = "a:\n  b: \"x\n  c: 1\n  d: \"ok\"\n";
        let e = explain(text, "did not find expected key", at(4, 7));
        assert_eq!(e.pos, at(2, 6));
        assert!(e.message.contains("not closed"));
    }

    #[test]
    fn a_value_with_colon_space_needs_quotes() {
        let text = "description: Note: read this\n";
        let e = explain(
            text,
            "mapping values are not allowed in this context",
            at(1, 18),
        );
        assert_eq!(e.message, "a value containing `: ` must be quoted");
        assert_eq!(e.help.unwrap(), "write `description: \"Note: read this\"`");
    }

    #[test]
    fn an_over_indented_line_names_the_key_above() {
        let text = "vars:\n  a: 1\n   b: 2\n";
        let e = explain(
            text,
            "mapping values are not allowed in this context",
            at(3, 5),
        );
        assert_eq!(e.pos, at(3, 4));
        assert!(e.message.contains("more than `a`"), "{e:?}");
    }

    #[test]
    fn an_unclosed_flow_mapping_is_found_where_it_opens() {
        let text = "objectives: { rpo: 26h\nguards:\n  x: []\n";
        let e = explain(text, "did not find expected ',' or '}'", at(2, 7));
        assert_eq!(e.pos, at(1, 13));
    }
}
