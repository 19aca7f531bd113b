//! Where each value of a YAML file sits: a map from document path to line and column.
//!
//! serde_yaml reports locations only for syntax and type errors, and its `Value` keeps none, so
//! checks that need the whole merged card (a stage that does not exist, a reduction too large for
//! its stage) would have nowhere to point. A second, event-level pass with yaml-rust2 (which
//! reports a marker for every event) records the position of every key and value once per file.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser};

/// One step of a document path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path into a YAML document, displayed as `attention[0].at[2]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocPath(pub Vec<Seg>);

impl DocPath {
    /// The path of a key below this one.
    pub fn key(&self, key: &str) -> DocPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        DocPath(segs)
    }

    /// The path of a sequence element below this one.
    pub fn index(&self, i: usize) -> DocPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(i));
        DocPath(segs)
    }

    /// Whether `self` starts with `prefix`.
    pub fn starts_with(&self, prefix: &DocPath) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// Parses serde_path_to_error's rendering (`backbone.conv1.conv.out`, `attention[0].at[1]`).
    pub fn parse(s: &str) -> DocPath {
        let mut segs = Vec::new();
        for part in s.split('.').filter(|p| !p.is_empty() && *p != "?") {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !key.is_empty() {
                segs.push(Seg::Key(key.to_string()));
            }
            while let Some(end) = rest.find(']') {
                if let Ok(i) = rest[1..end].parse() {
                    segs.push(Seg::Index(i));
                }
                rest = &rest[end + 1..];
            }
        }
        DocPath(segs)
    }
}

impl fmt::Display for DocPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// Where one value was written: its key (for mapping entries) and the value itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Position of the key, for a mapping entry.
    pub key: Option<LineCol>,
    /// Position of the value.
    pub value: LineCol,
}

impl Span {
    /// The key's position when there is one (an unknown or missing key), else the value's.
    pub fn key_or_value(&self) -> LineCol {
        self.key.unwrap_or(self.value)
    }
}

/// Positions of the keys and values of one YAML document, by path.
#[derive(Debug, Clone, Default)]
pub struct SpanIndex {
    spans: HashMap<DocPath, Span>,
}

enum Frame {
    Map {
        path: DocPath,
        pending_key: Option<String>,
    },
    Seq {
        path: DocPath,
        next: usize,
    },
}

impl SpanIndex {
    /// Indexes `text`. Returns an empty index for text that does not parse: serde_yaml reports
    /// syntax errors with their own location before this index is ever consulted.
    pub fn new(text: &str) -> SpanIndex {
        let mut spans: HashMap<DocPath, Span> = HashMap::new();
        let mut keys: HashMap<DocPath, LineCol> = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Ok((event, mark)) = parser.next_token() {
            // yaml-rust2 lines are 1-based, columns 0-based.
            let at = LineCol {
                line: mark.line(),
                col: mark.col() + 1,
            };
            match event {
                Event::StreamEnd => break,
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { pending_key, path }) = stack.last_mut() {
                        if pending_key.is_none() {
                            keys.insert(path.key(&value), at);
                            *pending_key = Some(value);
                            continue;
                        }
                    }
                    if let Some(path) = child_path(&mut stack) {
                        let key = keys.get(&path).copied();
                        spans.entry(path).or_insert(Span { key, value: at });
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = child_path(&mut stack).unwrap_or_default();
                    let key = keys.get(&path).copied();
                    spans.entry(path.clone()).or_insert(Span { key, value: at });
                    stack.push(match event {
                        Event::MappingStart(..) => Frame::Map {
                            path,
                            pending_key: None,
                        },
                        _ => Frame::Seq { path, next: 0 },
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        SpanIndex { spans }
    }

    /// The span of `path`, or of its nearest ancestor that has one.
    pub fn locate(&self, path: &DocPath) -> Option<Span> {
        let mut segs = path.0.clone();
        loop {
            if let Some(at) = self.spans.get(&DocPath(segs.clone())) {
                return Some(*at);
            }
            segs.pop()?;
        }
    }

    /// Every indexed path with its position.
    pub fn iter(&self) -> impl Iterator<Item = (&DocPath, &Span)> {
        self.spans.iter()
    }
}

/// The path of the value that the next event fills in, consuming the pending key or index.
fn child_path(stack: &mut [Frame]) -> Option<DocPath> {
    match stack.last_mut()? {
        Frame::Map { path, pending_key } => pending_key.take().map(|k| path.key(&k)),
        Frame::Seq { path, next } => {
            *next += 1;
            Some(path.index(*next - 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys_and_sequence_items() {
        let text = "name: x\nbackbone:\n  conv1:\n    conv: {out: 64, kernel: 5}\nattention:\n  - {type: se, at: [conv1, conv9]}\n";
        let idx = SpanIndex::new(text);
        let at = |p: &str| {
            idx.locate(&DocPath::parse(p))
                .map(|s| s.key_or_value())
                .map(|l| (l.line, l.col))
        };
        let value = |p: &str| {
            idx.locate(&DocPath::parse(p))
                .map(|s| (s.value.line, s.value.col))
        };
        assert_eq!(at("name"), Some((1, 1)));
        assert_eq!(value("name"), Some((1, 7)));
        assert_eq!(at("backbone.conv1"), Some((3, 3)));
        // `    conv: {out: 64, kernel: 5}`: key at column 21, value at 29.
        assert_eq!(at("backbone.conv1.conv.kernel"), Some((4, 21)));
        assert_eq!(value("backbone.conv1.conv.kernel"), Some((4, 29)));
        assert_eq!(at("attention[0].at[1]"), Some((6, 28)));
        // Unknown deeper paths fall back to the nearest ancestor.
        assert_eq!(at("backbone.conv1.conv.groups"), Some((4, 5)));
    }

    #[test]
    fn path_round_trip() {
        let p = DocPath::parse("attention[0].at[2]");
        assert_eq!(p.to_string(), "attention[0].at[2]");
        assert_eq!(
            p,
            DocPath::default()
                .key("attention")
                .index(0)
                .key("at")
                .index(2)
        );
    }
}
