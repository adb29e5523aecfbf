//! Where each field of a playbook sits in its file.
//!
//! serde's derive gives us types and unknown-field checks but forgets positions once a
//! value has been deserialized. Every error the compiler reports must still name
//! `file:line:col`, so we walk the YAML event stream once and remember the position of
//! every key and value by its field path (`steps.backup.with.bucket`, `steps.x.needs[1]`).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

pub(crate) use crate::diag::Pos;

#[derive(Debug, Default)]
pub(crate) struct SpanIndex {
    keys: HashMap<String, Pos>,
    values: HashMap<String, Pos>,
}

impl SpanIndex {
    /// Indexes `source`. Syntax errors are reported by the serde parser, so here they only
    /// end the walk early.
    pub(crate) fn build(source: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(source);
        let _ = parser.load(&mut walker, false);
        walker.index
    }

    /// Position of the key `path` (`steps.backup.kind` points at `kind`), falling back to
    /// its value and then to the closest ancestor that is known.
    pub(crate) fn key(&self, path: &str) -> Pos {
        self.lookup(path, true)
    }

    /// Position of the value at `path`, falling back to its key and then to ancestors.
    pub(crate) fn value(&self, path: &str) -> Pos {
        self.lookup(path, false)
    }

    fn lookup(&self, path: &str, key_first: bool) -> Pos {
        let mut current = path;
        let mut key_first = key_first;
        loop {
            let (first, second) = if key_first {
                (&self.keys, &self.values)
            } else {
                (&self.values, &self.keys)
            };
            if let Some(pos) = first.get(current).or_else(|| second.get(current)) {
                return *pos;
            }
            // For an ancestor, its key is the better anchor (`backup:` rather than the
            // first line of its block).
            key_first = true;
            match parent_path(current) {
                Some(parent) => current = parent,
                None => return Pos { line: 1, col: 1 },
            }
        }
    }
}

/// `a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> `` (the document root), `` -> none.
fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Walker {
    index: SpanIndex,
    stack: Vec<Frame>,
    done: bool,
}

impl Walker {
    /// Called for a node in value position; returns the node's path, or `None` when the
    /// node is a mapping key (recorded as such).
    fn place(&mut self, scalar_key: Option<&str>, pos: Pos) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let item = format!("{path}[{next}]");
                *next += 1;
                self.index.values.insert(item.clone(), pos);
                Some(item)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => {
                    let item = join(path, &k);
                    self.index.values.insert(item.clone(), pos);
                    Some(item)
                }
                None => {
                    // A key: complex (non-scalar) keys are not part of the format.
                    let k = scalar_key.unwrap_or("?").to_string();
                    self.index.keys.insert(join(path, &k), pos);
                    *key = Some(k);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        let pos = Pos {
            line: mark.line(),
            col: mark.col() + 1,
        };
        match ev {
            Event::Scalar(text, ..) => {
                self.place(Some(&text), pos);
            }
            Event::Alias(_) => {
                self.place(None, pos);
            }
            Event::MappingStart(..) => {
                let path = self.place(None, pos).unwrap_or_default();
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.place(None, pos).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keys_values_and_sequence_items() {
        let src = "version: 1\nsteps:\n  backup:\n    kind: s3.fetch\n    needs: [a, b]\n";
        let idx = SpanIndex::build(src);
        assert_eq!(idx.key("steps.backup.kind"), Pos { line: 4, col: 5 });
        assert_eq!(idx.value("steps.backup.kind"), Pos { line: 4, col: 11 });
        assert_eq!(idx.value("steps.backup.needs[1]"), Pos { line: 5, col: 16 });
        // Unknown paths fall back to the nearest known ancestor.
        assert_eq!(
            idx.value("steps.backup.with.bucket"),
            Pos { line: 3, col: 3 }
        );
    }
}
