//! Pulling a card's published weights through hf-hub (by way of [`zoo_hf`], which reads the
//! environment and says why a download failed) into the standard Hugging Face cache.
//!
//! hf-hub 1.0.0 can leave an error page or a truncated body in the cache as the file, so zoo
//! checks every file itself (announced size, SHA-256, safetensors header against the model) and
//! deletes a bad one from the cache before it can be served again.

use std::path::{Path, PathBuf};

use zoo_card::{Card, HubWeights, ParamLayout};
use zoo_hf::{FetchError, HFClientBuilder, HubFile, RepoKind};

use crate::error::{Error, Result};
use crate::verify::{self, Expectation};

/// A connection to the hub (or a mirror) and the local cache.
pub struct Hub {
    client: zoo_hf::Client,
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
        Hub::new(zoo_hf::HFClient::builder())
    }

    /// From an hf-hub builder (its unset settings come from the environment).
    pub fn new(builder: HFClientBuilder) -> Result<Hub> {
        let client = zoo_hf::Client::new(builder).map_err(|e| Error::Download {
            repo: String::new(),
            file: String::new(),
            endpoint: std::env::var("HF_ENDPOINT").unwrap_or_default(),
            message: e.to_string(),
            help: e.help().into(),
        })?;
        Ok(Hub { client })
    }

    /// Use only the cache (as `HF_HUB_OFFLINE=1`).
    pub fn offline(self, offline: bool) -> Self {
        Hub {
            client: self.client.offline(offline),
        }
    }

    /// Show a progress bar on stderr while downloading (when stderr is a terminal).
    pub fn progress(self, on: bool) -> Self {
        Hub {
            client: self.client.progress(on),
        }
    }

    /// The hub endpoint in use.
    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    /// The cache directory in use.
    pub fn cache_dir(&self) -> &Path {
        self.client.cache_dir()
    }

    /// Downloads (or finds in the cache) `card`'s weights and verifies them against the model
    /// the card builds; a file that fails is removed from the cache.
    pub fn pull(&self, card: &Card) -> Result<Pulled> {
        let w = card.weights.as_ref().ok_or_else(|| Error::NoWeights {
            card: card.name.clone(),
        })?;
        let params = verify::expected_params(card, w.layout)?;
        let fetched = self
            .client
            .fetch(&HubFile {
                kind: RepoKind::Model,
                repo: &w.repo,
                revision: &w.revision,
                file: &w.file,
            })
            .map_err(|e| self.download_error(w, e))?;
        let path = fetched.path;
        let want = Expectation {
            params: &params,
            size: fetched.announced_size,
            sha256: w.sha256.as_deref(),
        };
        let problems = verify::check(&path, &want)?;
        if !problems.is_empty() {
            let removed = zoo_hf::remove_cached(&path);
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
            downloaded: fetched.downloaded,
        })
    }

    fn download_error(&self, w: &HubWeights, e: FetchError) -> Error {
        match e {
            FetchError::NotCached { cache, why } => Error::NotCached {
                repo: w.repo.clone(),
                file: w.file.clone(),
                revision: w.revision.clone(),
                cache,
                why,
            },
            FetchError::FileNotFound => Error::FileNotFound {
                repo: w.repo.clone(),
                file: w.file.clone(),
                revision: w.revision.clone(),
            },
            FetchError::RepoNotFound { endpoint } => Error::RepoNotFound {
                repo: w.repo.clone(),
                revision: w.revision.clone(),
                endpoint,
            },
            other => Error::Download {
                repo: w.repo.clone(),
                file: w.file.clone(),
                endpoint: self.endpoint().to_string(),
                message: other.to_string(),
                help: other.help().into(),
            },
        }
    }
}
