//! Card errors: every one names a file, a line and a column, and says how to fix it.

use std::fmt;
use std::path::PathBuf;

use crate::span::{DocPath, LineCol};

/// What went wrong, by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// Not valid YAML.
    Syntax,
    /// A key the schema does not have.
    UnknownKey,
    /// A value of the wrong type, or a name outside a closed vocabulary.
    WrongType,
    /// A required field is absent after composition.
    Missing,
    /// `extends` names a card that does not exist.
    MissingBase,
    /// `extends` loops back on itself.
    Cycle,
    /// A value out of range or inconsistent with the rest of the card.
    Invalid,
    /// `at:` names a stage that does not exist.
    UnknownStage,
    /// The feature map shrinks to nothing.
    Shrinks,
}

/// One located error in one card file.
#[derive(Debug, Clone, PartialEq)]
pub struct CardError {
    /// The class of the error.
    pub kind: ErrorKind,
    /// The file the offending value was written in (after `extends`, possibly a base card).
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub at: Option<LineCol>,
    /// Path of the offending value inside the document (`attention[0].at[2]`).
    pub path: DocPath,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl CardError {
    /// A new error without a help line.
    pub fn new(
        kind: ErrorKind,
        file: PathBuf,
        at: Option<LineCol>,
        path: DocPath,
        msg: String,
    ) -> Self {
        CardError {
            kind,
            file,
            at,
            path,
            message: msg,
            help: None,
        }
    }

    /// Adds a "help:" line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for CardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(at) = self.at {
            write!(f, ":{}:{}", at.line, at.col)?;
        }
        write!(f, ": ")?;
        if !self.path.0.is_empty() {
            write!(f, "`{}`: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CardError {}

/// All errors found in one or more cards; never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct CardErrors(pub Vec<CardError>);

impl fmt::Display for CardErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CardErrors {}

impl From<CardError> for CardErrors {
    fn from(e: CardError) -> Self {
        CardErrors(vec![e])
    }
}

/// Suggests the closest of `candidates` to `got`, for "did you mean" hints.
pub fn closest<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // A typo is a few edits away; allow more edits for longer words.
    let limit = (got.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(got, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
