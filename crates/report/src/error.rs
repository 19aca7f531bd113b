//! The one error type of this crate: every variant names the file it is about, because a report
//! problem is almost always "this file on disk is wrong" and the user needs to know which one.

use std::path::PathBuf;

/// What can go wrong reading or writing results and references.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A results file is not valid JSON of the expected shape.
    #[error("{}: corrupt results file: {source} (fix or delete it; zoo never drops results silently)", path.display())]
    CorruptResults {
        /// The results.json file.
        path: PathBuf,
        /// What serde_json found wrong, with line and column.
        source: serde_json::Error,
    },
    /// A results file is well-formed but inconsistent (e.g. the same card twice).
    #[error("{}: {message}", path.display())]
    InvalidResults {
        /// The results.json file.
        path: PathBuf,
        /// What is inconsistent.
        message: String,
    },
    /// Results could not be serialised (a non-finite number, for instance).
    #[error("{}: cannot serialise results: {source}", path.display())]
    Serialize {
        /// The file that was being written.
        path: PathBuf,
        /// The serde_json error.
        source: serde_json::Error,
    },
    /// The references file is not valid YAML of the expected shape.
    #[error("{}: {source}", path.display())]
    ReferencesYaml {
        /// The references file.
        path: PathBuf,
        /// What serde_yaml found wrong, with line and column.
        source: serde_yaml::Error,
    },
    /// The references file parses but is inconsistent (an unknown source, a duplicate id...).
    #[error("{}: {message}", path.display())]
    InvalidReferences {
        /// The references file.
        path: PathBuf,
        /// What is inconsistent.
        message: String,
    },
    /// A plot could not be drawn.
    #[error("{file}: cannot draw the plot: {message}")]
    Plot {
        /// The SVG file the plot was for.
        file: String,
        /// What plotters reported.
        message: String,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
