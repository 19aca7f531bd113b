//! zoo-hf: the hf-hub plumbing shared by zoo's published weights (zoo-hub) and its datasets
//! (zoo-data), so both download, go offline and fail the same way.
//!
//! hf-hub reads `HF_ENDPOINT` (mirrors), `HF_TOKEN` (private repositories), `HF_HOME` and
//! `HF_HUB_CACHE` itself; it ignores `HF_HUB_OFFLINE`, which [`Client`] reads. The cache layout is
//! the Hugging Face one (`models--owner--name/` or `datasets--owner--name/`, each with
//! `{blobs,snapshots/COMMIT,refs}`), shared with Python.
//!
//! hf-hub 1.0.0 does not check the HTTP status of the file GET (only of the HEAD before it), so
//! an error page can land in the cache as the file, and a truncated body is kept as it came. It
//! cannot be told to fail there, so callers check every file [`Client::fetch`] gives them and
//! delete a bad one with [`remove_cached`] before it can be served again.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hf_hub::progress::{DownloadEvent, FileStatus, ProgressEvent, ProgressHandler};
use hf_hub::{HFClientSync, HFError, RepoTypeAny};

pub use hf_hub::{HFClient, HFClientBuilder};

/// The kind of repository a file lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// A model repository (`owner/name`).
    Model,
    /// A dataset repository (`datasets/owner/name` on the hub).
    Dataset,
}

impl RepoKind {
    fn any(self) -> RepoTypeAny {
        match self {
            RepoKind::Model => RepoTypeAny::Model,
            RepoKind::Dataset => RepoTypeAny::Dataset,
        }
    }

    /// The prefix of the repository's folder in the cache (`models`, `datasets`).
    fn cache_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }
}

/// One file of a repository at a revision.
#[derive(Debug, Clone, Copy)]
pub struct HubFile<'a> {
    /// Model or dataset repository.
    pub kind: RepoKind,
    /// `owner/name`.
    pub repo: &'a str,
    /// A commit or a branch.
    pub revision: &'a str,
    /// The file's path inside the repository.
    pub file: &'a str,
}

/// A file in the cache, as [`Client::fetch`] found or downloaded it (not yet checked).
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The file (a path inside the cache's `snapshots/COMMIT/`).
    pub path: PathBuf,
    /// The size the server announced, when bytes came over the network this time.
    pub announced_size: Option<u64>,
    /// Whether bytes came over the network this time (false: served from the cache).
    pub downloaded: bool,
}

/// Why a file could not be had, in terms a person can act on ([`FetchError::help`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The client could not be built (a malformed `HF_ENDPOINT`, say).
    #[error("{message}")]
    Setup {
        /// hf-hub's message.
        message: String,
        /// What to do.
        help: &'static str,
    },
    /// Not in the cache, and the hub cannot be used: offline, or unreachable.
    #[error("not in the cache {} and the hub cannot be used ({why})", .cache.display())]
    NotCached {
        /// The cache directory searched.
        cache: PathBuf,
        /// `HF_HUB_OFFLINE`, or the network error.
        why: String,
    },
    /// The repository (or the revision) does not exist, or is private.
    #[error("no such repository or revision at {endpoint}")]
    RepoNotFound {
        /// The hub endpoint asked.
        endpoint: String,
    },
    /// The repository exists but has no such file at that revision.
    #[error("no such file at that revision")]
    FileNotFound,
    /// The body stopped short of its length: hf-hub keeps only an `.incomplete` file, which it
    /// never serves.
    #[error("the download broke off ({message})")]
    BrokeOff {
        /// hf-hub's message.
        message: String,
    },
    /// The repository is private or gated.
    #[error("{message}")]
    Denied {
        /// hf-hub's message.
        message: String,
    },
    /// Anything else (a server error, say).
    #[error("{message}")]
    Other {
        /// hf-hub's message.
        message: String,
    },
}

impl FetchError {
    /// What the user can do about it.
    pub fn help(&self) -> &'static str {
        match self {
            FetchError::Setup { help, .. } => help,
            FetchError::NotCached { .. } => {
                "download it once with network access (HF_HUB_OFFLINE unset), or point HF_HOME / \
                 HF_HUB_CACHE at a cache that has it"
            }
            FetchError::RepoNotFound { .. } => {
                "check the repository and revision; for a private repository set HF_TOKEN; for \
                 a mirror set HF_ENDPOINT"
            }
            FetchError::FileNotFound => {
                "check the file name (the repository's \"Files\" tab lists them)"
            }
            FetchError::BrokeOff { .. } => "nothing was kept; try again",
            FetchError::Denied { .. } => {
                "the repository is private or gated: set HF_TOKEN to a token that may read it"
            }
            FetchError::Other { .. } => "try again later, or set HF_ENDPOINT to a mirror",
        }
    }
}

/// A connection to the hub (or a mirror) and the local cache.
pub struct Client {
    client: HFClientSync,
    endpoint: String,
    cache: PathBuf,
    offline: bool,
    progress: bool,
}

impl Client {
    /// Configured from the environment, as the Python `huggingface_hub` is.
    pub fn from_env() -> Result<Client, FetchError> {
        Client::new(HFClient::builder())
    }

    /// From an hf-hub builder (its unset settings come from the environment); offline when
    /// `HF_HUB_OFFLINE` is set to 1, true, yes or on.
    pub fn new(builder: HFClientBuilder) -> Result<Client, FetchError> {
        let client = builder.build().map_err(|e| FetchError::Setup {
            message: e.to_string(),
            help: "check HF_ENDPOINT: it must be a URL such as https://huggingface.co",
        })?;
        let (endpoint, cache) = (
            client.endpoint().to_string(),
            client.cache_dir().to_path_buf(),
        );
        let client = HFClientSync::from_inner(client).map_err(|e| FetchError::Setup {
            message: e.to_string(),
            help: "this is a bug in zoo or hf-hub; please report it",
        })?;
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        Ok(Client {
            client,
            endpoint,
            cache,
            offline,
            progress: false,
        })
    }

    /// Use only the cache (as `HF_HUB_OFFLINE=1`).
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline |= offline;
        self
    }

    /// Show a progress bar on stderr while downloading (when stderr is a terminal).
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Whether only the cache is used.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The hub endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The cache directory in use.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Finds `f` in the cache or downloads it there. A pinned commit already cached is served
    /// without touching the network; the caller checks the file's content.
    pub fn fetch(&self, f: &HubFile) -> Result<Fetched, FetchError> {
        let watch = Arc::new(Watch::new(self.progress));
        let (owner, name) = f.repo.split_once('/').unwrap_or(("", f.repo));
        let result = self
            .client
            .repository(f.kind.any(), owner, name)
            .download_file()
            .filename(f.file.to_string())
            .revision(f.revision.to_string())
            .local_files_only(self.offline)
            .progress(watch.clone())
            .send();
        watch.finish();
        let path = result.map_err(|e| self.classify(f, e))?;
        let (size, downloaded) = watch.state();
        Ok(Fetched {
            path,
            announced_size: size.filter(|_| downloaded),
            downloaded,
        })
    }

    fn classify(&self, f: &HubFile, e: HFError) -> FetchError {
        let not_cached = |why: String| FetchError::NotCached {
            cache: self.cache.clone(),
            why,
        };
        match e {
            HFError::LocalEntryNotFound { .. } => {
                not_cached("offline: HF_HUB_OFFLINE is set".into())
            }
            // hf-hub 1.0.0 maps every 404 of the file's HEAD to EntryNotFound, also for a
            // repository that does not exist. The hub names the commit (X-Repo-Commit) of a
            // repository it has, and hf-hub then leaves a `.no_exist` marker: that tells them apart.
            HFError::EntryNotFound { .. } if self.no_exist_marker(f) => FetchError::FileNotFound,
            HFError::EntryNotFound { .. }
            | HFError::RepoNotFound { .. }
            | HFError::RevisionNotFound { .. } => FetchError::RepoNotFound {
                endpoint: self.endpoint.clone(),
            },
            HFError::Request { ref source, .. } if source.is_connect() || source.is_timeout() => {
                not_cached(format!("cannot reach {}: {e}", self.endpoint))
            }
            HFError::Request { .. } => FetchError::BrokeOff {
                message: e.to_string(),
            },
            HFError::AuthRequired { .. } | HFError::Forbidden { .. } => FetchError::Denied {
                message: e.to_string(),
            },
            other => FetchError::Other {
                message: other.to_string(),
            },
        }
    }

    fn no_exist_marker(&self, f: &HubFile) -> bool {
        let dir = self
            .cache
            .join(format!(
                "{}--{}",
                f.kind.cache_prefix(),
                f.repo.replace('/', "--")
            ))
            .join(".no_exist");
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|commit| commit.path().join(f.file).exists())
        })
    }
}

/// Deletes a cached file: the snapshot link and the blob it points to. Returns whether
/// something was removed.
pub fn remove_cached(snapshot: &Path) -> bool {
    let blob = std::fs::read_link(snapshot).ok().map(|target| {
        snapshot
            .parent()
            .map_or_else(|| target.clone(), |dir| dir.join(&target))
    });
    let mut removed = std::fs::remove_file(snapshot).is_ok();
    if let Some(blob) = blob {
        removed |= std::fs::remove_file(blob).is_ok();
    }
    removed
}

/// The start of a file as one line of text, for saying what a bad download holds instead (an
/// error page, usually).
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Follows hf-hub's progress events: the announced size, whether bytes flowed, and a bar.
struct Watch {
    state: Mutex<(Option<u64>, bool)>,
    bar: Option<indicatif::ProgressBar>,
}

impl Watch {
    fn new(show: bool) -> Self {
        let bar = (show && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Watch {
            state: Mutex::new((None, false)),
            bar,
        }
    }

    fn state(&self) -> (Option<u64>, bool) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl ProgressHandler for Watch {
    fn on_progress(&self, event: &ProgressEvent) {
        let ProgressEvent::Download(event) = event else {
            return;
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            DownloadEvent::Start { total_bytes, .. } => {
                state.0 = (*total_bytes > 0).then_some(*total_bytes);
                if let Some(bar) = &self.bar {
                    bar.set_length(*total_bytes);
                }
            }
            DownloadEvent::Progress { files } => {
                for f in files {
                    if f.status != FileStatus::Complete {
                        state.1 = true;
                    }
                    if let Some(bar) = &self.bar {
                        bar.set_message(f.filename.clone());
                        bar.set_position(f.bytes_completed);
                    }
                }
            }
            DownloadEvent::AggregateProgress { .. } | DownloadEvent::Complete => {}
        }
    }
}
