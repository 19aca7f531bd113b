//! Hub errors: each says what failed, where, and what to do about it.

use std::path::{Path, PathBuf};

/// Result of the hub crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong between a card and the hub.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The card names no weights on the hub.
    #[error("card `{card}` names no weights on the hub\n  help: add `weights: {{repo: owner/name, revision: COMMIT}}` to the card, or pass --weights FILE")]
    NoWeights {
        /// The card.
        card: String,
    },
    /// The repository (or the revision) does not exist, or is private.
    #[error("repository `{repo}` not found at {endpoint} (revision {revision})\n  help: check `weights.repo` and `weights.revision`; for a private repository set HF_TOKEN; for a mirror set HF_ENDPOINT")]
    RepoNotFound {
        /// Repository id.
        repo: String,
        /// Revision asked for.
        revision: String,
        /// Hub endpoint.
        endpoint: String,
    },
    /// The repository exists but has no such file at that revision.
    #[error("`{repo}` has no file `{file}` at revision {revision}\n  help: check `weights.file` (the repository's \"Files\" tab lists them)")]
    FileNotFound {
        /// Repository id.
        repo: String,
        /// File asked for.
        file: String,
        /// Revision asked for.
        revision: String,
    },
    /// Offline, and the file is not in the cache.
    #[error("`{repo}/{file}` at {revision} is not in the cache {cache} and the hub cannot be used ({why})\n  help: run `zoo pull` once with network access (HF_HUB_OFFLINE unset), or point HF_HOME / HF_HUB_CACHE at a cache that has it")]
    NotCached {
        /// Repository id.
        repo: String,
        /// File asked for.
        file: String,
        /// Revision asked for.
        revision: String,
        /// The cache directory searched.
        cache: PathBuf,
        /// Offline mode or the network error.
        why: String,
    },
    /// The download failed for another reason (network, authentication, server).
    #[error("downloading `{repo}/{file}` from {endpoint} failed: {message}\n  help: {help}")]
    Download {
        /// Repository id.
        repo: String,
        /// File asked for.
        file: String,
        /// Hub endpoint.
        endpoint: String,
        /// hf-hub's message.
        message: String,
        /// What to try.
        help: String,
    },
    /// The downloaded file is not what the card says (size, SHA-256, not safetensors, tensors).
    #[error("{file} failed verification{removed}:\n{}\n  help: {help}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Verify {
        /// The file checked.
        file: PathBuf,
        /// Every problem found.
        problems: Vec<String>,
        /// `" (removed from the cache)"` when it was a cached download.
        removed: String,
        /// What to do.
        help: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Tensor work failed (building the model to know its parameters, reading tensors).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The card could not be written as YAML or JSON.
    #[error("serialising {what}: {message}")]
    Serialize {
        /// What was being written.
        what: String,
        /// The cause.
        message: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the user can fix it (wrong card, no network, bad file) rather than a bug in zoo.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Error::Candle(_) | Error::Serialize { .. })
    }
}
