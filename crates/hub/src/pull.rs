//! Pulling a card's published weights through hf-hub into the standard Hugging Face cache.
//!
//! hf-hub reads `HF_ENDPOINT` (mirrors), `HF_TOKEN` (private repositories), `HF_HOME` and
//! `HF_HUB_CACHE` itself; it ignores `HF_HUB_OFFLINE`, which zoo reads here. The cache layout is
//! the Hugging Face one (`models--owner--name/{blobs,snapshots/COMMIT,refs}`), shared with Python.
//!
//! hf-hub 1.0.0 does not check the HTTP status of the file GET (only of the HEAD before it), so
//! an error page can land in the cache as the file, and a truncated body is kept as it came. It
//! cannot be told to fail there, so zoo checks every fresh download itself (announced size,
//! SHA-256, safetensors header against the model) and deletes a bad one from the cache before
//! it can be served again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hf_hub::progress::{DownloadEvent, FileStatus, ProgressEvent, ProgressHandler};
use hf_hub::{HFClientBuilder, HFClientSync, HFError};
use zoo_card::{Card, HubWeights, ParamLayout};

use crate::error::{Error, Result};
use crate::verify::{self, Expectation};

/// A connection to the hub (or a mirror) and the local cache.
pub struct Hub {
    client: HFClientSync,
    endpoint: String,
    cache: PathBuf,
    offline: bool,
    progress: bool,
}

/// A verified weights file in the cache.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The file (a path inside the cache's `snapshots/COMMIT/`).
    pub path: PathBuf,
    /// Parameter names in the file.
    pub layout: ParamLayout,
    /// Whether bytes came over the network this time (false: served from the cache).
    pub downloaded: bool,
}

impl Hub {
    /// Configured from the environment, as the Python `huggingface_hub` is.
    pub fn from_env() -> Result<Hub> {
        Hub::new(hf_hub::HFClient::builder())
    }

    /// From an hf-hub builder (its unset settings come from the environment).
    pub fn new(builder: HFClientBuilder) -> Result<Hub> {
        let client = builder.build().map_err(|e| Error::Download {
            repo: String::new(),
            file: String::new(),
            endpoint: std::env::var("HF_ENDPOINT").unwrap_or_default(),
            message: e.to_string(),
            help: "check HF_ENDPOINT: it must be a URL such as https://huggingface.co".into(),
        })?;
        let (endpoint, cache) = (
            client.endpoint().to_string(),
            client.cache_dir().to_path_buf(),
        );
        let client = HFClientSync::from_inner(client).map_err(|e| Error::Download {
            repo: String::new(),
            file: String::new(),
            endpoint: endpoint.clone(),
            message: e.to_string(),
            help: "this is a bug in zoo or hf-hub; please report it".into(),
        })?;
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        Ok(Hub {
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

    /// The hub endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The cache directory in use.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Downloads (or finds in the cache) `card`'s weights and verifies them against the model
    /// the card builds; a file that fails is removed from the cache.
    pub fn pull(&self, card: &Card) -> Result<Pulled> {
        let w = card.weights.as_ref().ok_or_else(|| Error::NoWeights {
            card: card.name.clone(),
        })?;
        let params = verify::expected_params(card, w.layout)?;
        let watch = Arc::new(Watch::new(self.progress));
        let (owner, name) = w.repo.split_once('/').unwrap_or(("", w.repo.as_str()));
        let result = self
            .client
            .model(owner, name)
            .download_file()
            .filename(w.file.clone())
            .revision(w.revision.clone())
            .local_files_only(self.offline)
            .progress(watch.clone())
            .send();
        watch.finish();
        let path = result.map_err(|e| self.download_error(w, e))?;
        let (size, downloaded) = watch.state();
        let want = Expectation {
            params: &params,
            size: size.filter(|_| downloaded),
            sha256: w.sha256.as_deref(),
        };
        let problems = verify::check(&path, &want)?;
        if !problems.is_empty() {
            let removed = remove_cached(&path);
            return Err(Error::Verify {
                file: path,
                problems,
                removed: if removed {
                    " (removed from the cache)"
                } else {
                    ""
                }
                .into(),
                help: format!(
                    "the file at {}/{} revision {} is not the one card `{}` describes: check \
                     `weights.file`, `weights.layout` and `weights.sha256`, then pull again",
                    w.repo, w.file, w.revision, card.name
                ),
            });
        }
        Ok(Pulled {
            path,
            layout: w.layout,
            downloaded,
        })
    }

    fn download_error(&self, w: &HubWeights, e: HFError) -> Error {
        let not_cached = |why: String| Error::NotCached {
            repo: w.repo.clone(),
            file: w.file.clone(),
            revision: w.revision.clone(),
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
            HFError::EntryNotFound { .. } if self.no_exist_marker(w) => Error::FileNotFound {
                repo: w.repo.clone(),
                file: w.file.clone(),
                revision: w.revision.clone(),
            },
            HFError::EntryNotFound { .. }
            | HFError::RepoNotFound { .. }
            | HFError::RevisionNotFound { .. } => Error::RepoNotFound {
                repo: w.repo.clone(),
                revision: w.revision.clone(),
                endpoint: self.endpoint.clone(),
            },
            HFError::Request { ref source, .. } if source.is_connect() || source.is_timeout() => {
                not_cached(format!("cannot reach {}: {e}", self.endpoint))
            }
            // A body that stops short of its Content-Length: hf-hub keeps only a
            // `.incomplete` file, which it never serves.
            HFError::Request { .. } => Error::Download {
                repo: w.repo.clone(),
                file: w.file.clone(),
                endpoint: self.endpoint.clone(),
                message: format!("the download broke off ({e})"),
                help: "nothing was kept; pull again".into(),
            },
            HFError::AuthRequired { .. } | HFError::Forbidden { .. } => Error::Download {
                repo: w.repo.clone(),
                file: w.file.clone(),
                endpoint: self.endpoint.clone(),
                message: e.to_string(),
                help: "the repository is private or gated: set HF_TOKEN to a token that may \
                       read it"
                    .into(),
            },
            other => Error::Download {
                repo: w.repo.clone(),
                file: w.file.clone(),
                endpoint: self.endpoint.clone(),
                message: other.to_string(),
                help: "try again later, or set HF_ENDPOINT to a mirror".into(),
            },
        }
    }

    fn no_exist_marker(&self, w: &HubWeights) -> bool {
        let dir = self
            .cache
            .join(format!("models--{}", w.repo.replace('/', "--")))
            .join(".no_exist");
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|commit| commit.path().join(&w.file).exists())
        })
    }
}

/// Deletes a cached file: the snapshot link and the blob it points to. Returns whether
/// something was removed.
fn remove_cached(snapshot: &Path) -> bool {
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
