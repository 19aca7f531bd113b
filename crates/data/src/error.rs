//! The crate's error type: every variant names the file or folder it is about, because a data
//! problem is only fixable when the user knows where to look.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a dataset card and a batch of tensors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A dataset card could not be parsed: `file:line:column: message`.
    #[error("{}{}: {message}", .file.display(), location_suffix(*.line, *.column))]
    CardParse {
        /// The card file.
        file: PathBuf,
        /// One-based line, when the parser knows it.
        line: Option<usize>,
        /// One-based column, when the parser knows it.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },

    /// A dataset card parsed but its values are inconsistent: `file:line:column: field: message`.
    #[error("{}{}: `{field}`: {message}", .file.display(), location_suffix(*.line, *.column))]
    CardInvalid {
        /// The card file (or `<memory>` for cards parsed from a string).
        file: PathBuf,
        /// One-based line of the offending value, when known.
        line: Option<usize>,
        /// One-based column of the offending value, when known.
        column: Option<usize>,
        /// The offending field.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The requested split is not in the card's `splits`.
    #[error("dataset `{dataset}` has no split `{split}`; it has: {known}")]
    UnknownSplit {
        /// The dataset's name.
        dataset: String,
        /// The split asked for.
        split: String,
        /// The splits the card declares, comma-separated.
        known: String,
    },

    /// None of the card's sources was found; lists every place that was tried.
    #[error("{}", missing_data_message(.dataset, .split, .tried, .help))]
    DataNotFound {
        /// The dataset's name.
        dataset: String,
        /// The split asked for.
        split: String,
        /// Each place looked at, with why it did not qualify.
        tried: Vec<String>,
        /// How to fix it.
        help: Vec<String>,
    },

    /// A class folder is not one of the card's classes.
    #[error("{}: folder `{class}` is not a class of dataset `{dataset}` (classes: {known})\n  help: rename or remove the folder, or add `{class}` to `classes` in the card", .path.display())]
    UnknownClass {
        /// The class folder.
        path: PathBuf,
        /// Its name.
        class: String,
        /// The dataset's name.
        dataset: String,
        /// The card's classes (possibly abbreviated).
        known: String,
    },

    /// An image file could not be decoded or has an unexpected shape.
    #[error("{}: {message}", .path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A CIFAR binary batch file is malformed.
    #[error("{}: {message}", .path.display())]
    CifarBinary {
        /// The `.bin` file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A split folder holds no images.
    #[error("{}: no images (*.jpg, *.jpeg, *.png) in class folders", .path.display())]
    Empty {
        /// The split folder.
        path: PathBuf,
    },

    /// A hub source's file could not be downloaded (for a reason other than being offline or
    /// unable to reach the hub, which only makes the source absent).
    #[error("dataset repository `{repo}`, file `{file}` at revision {revision}: {message}\n  help: {help}")]
    Hub {
        /// `owner/name`.
        repo: String,
        /// The file in the repository.
        file: String,
        /// The card's revision.
        revision: String,
        /// What failed.
        message: String,
        /// What to do.
        help: &'static str,
    },

    /// A parquet file is not one, or does not hold what the card says.
    #[error("{}: {message}", .path.display())]
    Parquet {
        /// The parquet file.
        path: PathBuf,
        /// What is wrong (and whether the file was removed from the cache).
        message: String,
    },

    /// A filesystem operation failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The cache directory is unusable (e.g. inside the read-only data root).
    #[error("cache directory {}: {message}", .path.display())]
    Cache {
        /// The cache directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A loader option or augmentation setting is out of range.
    #[error("{0}")]
    Config(String),

    /// Building a tensor failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A background worker died without reporting an error (a panic).
    #[error("data loader worker stopped unexpectedly: {0}")]
    Worker(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

fn location_suffix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn missing_data_message(dataset: &str, split: &str, tried: &[String], help: &[String]) -> String {
    let mut s = format!("no data found for dataset `{dataset}`, split `{split}`; tried:");
    for t in tried {
        s.push_str("\n  - ");
        s.push_str(t);
    }
    for h in help {
        s.push_str("\n  help: ");
        s.push_str(h);
    }
    s
}
